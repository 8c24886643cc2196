"""Feature tracks with persistent ids.

Each frame's keypoints are matched (mutual nearest neighbours) against the reference frame, normally the
previous frame. ``Tracker.match`` proposes the matches; the pose stage verifies them geometrically; ``Tracker.commit``
then carries the id of every verified match over to the new keypoint (age + 1) and gives every other keypoint a
new id (age 0). A track ends when its keypoint is not matched, or its match is a geometric outlier; the pose stage
may give its id back to a later keypoint (``revived``: relocalisation, or its landmark found again by projection;
age 1, or one more than the previous frame's when the track was there).
Ids are unique, increasing, and restart at 0 after ``reset``.

``align_to_reference`` refines where a track's keypoint lies in a new image by aligning the image patch around it
with the patch where a reference image (the pipeline's last keyframe) saw the same track (Lucas-Kanade, pixels,
x right / y down, origin at the first pixel's centre like ``Features.keypoints``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from aliked_ros.features import Features
from aliked_ros.features.base import as_grey_image
from aliked_ros.matching import Matches, match_mutual_nearest


@dataclass(frozen=True)
class TrackerConfig:
    """``min_similarity``: cosine (float descriptors) or 1 - hamming/bits (binary) below which matches are
    dropped; ``ratio``: Lowe ratio on descriptor distance, None disables."""

    min_similarity: float | None = None
    ratio: float | None = None


@dataclass(frozen=True)
class TrackedKeypoints:
    """Track ids and ages for one frame's keypoints (N,), aligned with its Features."""

    track_ids: np.ndarray  # uint64
    track_ages: np.ndarray  # uint32, number of earlier frames the track was seen in


class Tracker:
    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self._next_id = 0
        self.reference: Features | None = None
        self.reference_tracks: TrackedKeypoints | None = None

    def match(self, features: Features) -> Matches:
        """Candidate matches (reference index, new index) between the reference frame and ``features``."""
        if self.reference is None:
            return Matches(np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
        ref, new = self.reference, features
        if ref.descriptors.shape[1:] != new.descriptors.shape[1:] or ref.descriptors.dtype != new.descriptors.dtype:
            raise ValueError("the reference and the new frame come from different extractors")
        a = ref.device_descriptors if ref.device_descriptors is not None else ref.descriptors
        b = new.device_descriptors if new.device_descriptors is not None else new.descriptors
        return match_mutual_nearest(a, b, min_similarity=self.config.min_similarity, ratio=self.config.ratio)

    def assign(self, features: Features, matches: Matches, verified: np.ndarray | None,
               revived: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[TrackedKeypoints, int]:
        """Track ids for ``features`` without changing the tracker: verified matches continue their track, the
        ``revived`` keypoints (indices, ids) take up an earlier track again (relocalisation), every other keypoint
        starts a new one. Returns the tracks and the next free id, for ``commit``."""
        n = len(features)
        ids = np.zeros(n, np.uint64)
        ages = np.zeros(n, np.uint32)
        continued = np.zeros(n, bool)
        if self.reference_tracks is not None and len(matches):
            keep = matches.indices if verified is None else matches.indices[verified]
            ids[keep[:, 1]] = self.reference_tracks.track_ids[keep[:, 0]]
            ages[keep[:, 1]] = self.reference_tracks.track_ages[keep[:, 0]] + 1
            continued[keep[:, 1]] = True
        if revived is not None and len(revived[0]):
            ids[revived[0]] = revived[1]
            ages[revived[0]] = 1  # seen before, how often is not kept; one more than the reference's if it has it
            if self.reference_tracks is not None and len(self.reference_tracks.track_ids):
                ref_ids = self.reference_tracks.track_ids
                order = np.argsort(ref_ids)
                pos = np.clip(np.searchsorted(ref_ids[order], revived[1]), 0, len(ref_ids) - 1)
                there = ref_ids[order][pos] == revived[1]
                ages[revived[0][there]] = self.reference_tracks.track_ages[order][pos[there]] + 1
            continued[revived[0]] = True
        fresh = np.flatnonzero(~continued)
        ids[fresh] = np.arange(self._next_id, self._next_id + len(fresh), dtype=np.uint64)
        return TrackedKeypoints(ids, ages), self._next_id + len(fresh)

    def spare_ids(self, count: int) -> np.ndarray:
        """``count`` ids that no track will take (for the keypoints of a frame that is not committed: they are
        published, so they must not name a later track)."""
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.uint64)
        self._next_id += count
        return ids

    def commit(self, features: Features, tracks: TrackedKeypoints, next_id: int) -> None:
        """Make ``features`` with ``tracks`` (from ``assign``) the reference of the next match."""
        self.reference, self.reference_tracks, self._next_id = features, tracks, next_id


def grey_image(image: np.ndarray) -> np.ndarray:
    """A new (H,W) uint8 array: the grey of any image the extractors take ((H,W), (H,W,1), RGB, RGBA uint8;
    ``ImageError`` otherwise), never a view of the caller's buffer (a reference keeps it)."""
    grey = as_grey_image(image)
    return grey.copy() if np.shares_memory(grey, image) else grey


def align_to_reference(reference: np.ndarray, reference_px: np.ndarray, image: np.ndarray, detected_px: np.ndarray,
                       max_shift_px: float, window_px: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Where the points at ``reference_px`` (N,2) of the grey ``reference`` image lie in the grey ``image``,
    starting from ``detected_px`` (N,2), the same tracks' keypoints there: pyramidal Lucas-Kanade on
    ``window_px`` square patches (translation only; two pyramid levels). Returns (pixels (N,2) float32, aligned (N,)
    bool): a point is aligned when OpenCV found it (its status), within ``max_shift_px`` of its detection and
    inside the image; else its detection is returned.

    A detector places a keypoint anew in every image (aliked-t16 on the synthetic 120 Hz sequence: median 0.35 px
    from the true projection, white from frame to frame); aligned to one reference, a track's positions err by
    0.1-0.2 px and the error changes slowly, so poses posed against one keyframe jitter less (DEVELOPERS.md)."""
    if window_px < 3:
        raise ValueError(f"window_px must be >= 3, got {window_px}")
    detected_px = np.asarray(detected_px, np.float32).reshape(-1, 2)
    aligned = np.zeros(len(detected_px), bool)
    if not len(detected_px):
        return detected_px, aligned
    guess = detected_px.reshape(-1, 1, 2).copy()
    found, status, _ = cv2.calcOpticalFlowPyrLK(
        reference, image, np.asarray(reference_px, np.float32).reshape(-1, 1, 2), guess,
        winSize=(window_px, window_px), maxLevel=1, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01))
    found = found.reshape(-1, 2)
    height, width = image.shape[:2]
    aligned = status.reshape(-1).astype(bool) & np.isfinite(found).all(axis=1) \
        & (np.linalg.norm(found - detected_px, axis=1) <= max_shift_px) \
        & (found >= 0).all(axis=1) & (found[:, 0] <= width - 1) & (found[:, 1] <= height - 1)
    return np.where(aligned[:, None], found, detected_px).astype(np.float32), aligned
