"""Pairing images with depth images by stamp (a small replacement for message_filters' ApproximateTime,
which is not installable from PyPI). ROS-free: items are (stamp_seconds, payload)."""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable


class StampSynchronizer:
    """Calls ``on_pair(image, depth)`` once for each image whose nearest depth (within ``tolerance`` s) is known.

    An image waits until a depth stamped at or after it arrives; it is then paired with the nearest buffered
    depth, or dropped (counted in ``unmatched``) when none is within tolerance. Images also drop when more than
    ``queue_size`` wait (no depth stream). Thread-safe.
    """

    def __init__(self, tolerance: float, on_pair: Callable[[Any, Any], None], queue_size: int = 10) -> None:
        self.tolerance = tolerance
        self.on_pair = on_pair
        self._images: deque[tuple[float, Any]] = deque()
        self._depths: deque[tuple[float, Any]] = deque(maxlen=queue_size)
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self.unmatched = 0

    def add_image(self, stamp: float, image: Any) -> None:
        with self._lock:
            self._images.append((stamp, image))
            while len(self._images) > self._queue_size:
                self._images.popleft()
                self.unmatched += 1
            ready = self._collect()
        for pair in ready:
            self.on_pair(*pair)

    def add_depth(self, stamp: float, depth: Any) -> None:
        with self._lock:
            self._depths.append((stamp, depth))
            ready = self._collect()
        for pair in ready:
            self.on_pair(*pair)

    def _collect(self) -> list[tuple[Any, Any]]:
        """Depths arrive in stamp order: once one at or after an image's stamp is known, no later depth can be
        nearer to it, so the image is decided (paired within tolerance, or dropped)."""
        ready = []
        while self._images and self._depths and self._depths[-1][0] >= self._images[0][0]:
            stamp, image = self._images.popleft()
            best = min(self._depths, key=lambda d: abs(d[0] - stamp))
            if abs(best[0] - stamp) <= self.tolerance:
                ready.append((image, best[1]))
            else:
                self.unmatched += 1
        return ready

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._depths.clear()
