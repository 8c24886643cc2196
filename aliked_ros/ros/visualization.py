"""The debug image: keypoints and track tails drawn on the frame, coloured by track age (ROS-free, OpenCV)."""
from __future__ import annotations

from collections import deque

import cv2
import numpy as np


class TrackHistory:
    """Recent pixel positions of each live track (for drawing tails)."""

    def __init__(self, tail_length: int = 10) -> None:
        self.tail_length = tail_length
        self._tails: dict[int, deque] = {}

    def update(self, track_ids: np.ndarray, pixels: np.ndarray) -> None:
        alive = {}
        for track, xy in zip(track_ids.tolist(), pixels):
            tail = self._tails.get(track) or deque(maxlen=self.tail_length)
            tail.append((float(xy[0]), float(xy[1])))
            alive[track] = tail
        self._tails = alive

    def clear(self) -> None:
        self._tails.clear()

    def tail(self, track: int):
        return self._tails.get(track, ())


def age_colour(age: int, max_age: int = 30) -> tuple[int, int, int]:
    """RGB: new tracks red, then yellow, old tracks green."""
    f = min(age, max_age) / max_age
    return (int(255 * min(1.0, 2 * (1 - f))), int(255 * min(1.0, 2 * f)), 0)


def draw_tracks(image: np.ndarray, pixels: np.ndarray, track_ids: np.ndarray, track_ages: np.ndarray,
                inliers: np.ndarray, history: TrackHistory, caption: str = "") -> np.ndarray:
    """An RGB copy of ``image`` with keypoints (filled = inlier) and their tails."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    for xy, track, age, inlier in zip(pixels, track_ids.tolist(), track_ages.tolist(), inliers.tolist()):
        colour = age_colour(age)
        tail = history.tail(track)
        if len(tail) > 1:
            cv2.polylines(canvas, [np.round(np.array(tail)).astype(np.int32)], False, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, (int(round(xy[0])), int(round(xy[1]))), 3, colour, -1 if inlier else 1, cv2.LINE_AA)
    if caption:
        (width, height), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
        cv2.rectangle(canvas, (0, 0), (width + 16, height + 14), (0, 0, 0), -1)
        cv2.putText(canvas, caption, (8, height + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas
