"""Pairing images with other streams by stamp (a small replacement for message_filters' ApproximateTime, which is
not installable from PyPI, and which cannot say which images it left unpaired). ROS-free: items are
(stamp, payload); stamps are numbers in one unit (the node uses integer nanoseconds, the wrapper seconds).

``StampPairing`` pairs each image with one message of every named stream (depth, a stereo right image):
an image waits until every stream has a message stamped at or after it, then takes each stream's nearest message
within that stream's tolerance, or is dropped and counted against the first stream that had none. Streams
arrive in stamp order, so once a later message is known no nearer one can come. Images also drop (counted
against the stream that is late) when more than ``queue_size`` wait (a stream that stopped), or when the owner
``expire``s them (the node's input stage: after ``pairing_wait`` seconds). A stream keeps its messages by time,
not by count: those that no waiting or later image can take (older than the oldest waiting image, or the last
image, by more than the tolerance) are dropped, at most ``STREAM_BUFFER`` kept (a 90 Hz depth stream ahead of
colour images that arrive 150 ms late holds ~15). Time going back (``ros2 bag play --loop``, a restarted driver):
a stream that goes back first keeps its new timeline apart until the images go back too (a single glitched stamp
ends that when the stream passes its old last stamp again); images that go back drop those still waiting.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable


STREAM_BUFFER = 100  # messages a paired stream keeps at most


class StampPairing:
    """Not thread-safe on purpose: the owner (the node's input stage) holds one lock around it."""

    def __init__(self, tolerances: dict[str, float], queue_size: int = 10) -> None:
        if not tolerances:
            raise ValueError("StampPairing needs at least one paired stream")
        self.tolerances = dict(tolerances)
        self.queue_size = queue_size
        self._images: deque[tuple[float, Any]] = deque()
        self._streams: dict[str, deque[tuple[float, Any]]] = {name: deque(maxlen=max(queue_size, STREAM_BUFFER))
                                                               for name in tolerances}
        self.unmatched: dict[str, int] = {name: 0 for name in tolerances}
        self._last_image: float | None = None  # the newest image's stamp (images come in stamp order)
        self._stream_last: dict[str, float] = {}  # each stream's newest stamp on the images' timeline
        # a stream whose stamps went back (a bag played in a loop, a restarted driver) while the images have not
        # yet: its messages of the new timeline, kept apart until the images go back too
        self._ahead: dict[str, deque[tuple[float, Any]]] = {}

    @property
    def waiting(self) -> int:
        """Images received but not decided yet."""
        return len(self._images)

    def add_image(self, stamp: float, image: Any) -> list[tuple[Any, dict[str, Any]]]:
        """Queue an image; the (image, {stream: message}) pairs decided now."""
        if self._last_image is not None and stamp < self._last_image:
            # the images went back in time: those waiting belong to the old timeline and no message of it is
            # coming; each stream continues with what it sent of the new timeline (nothing if it has not gone
            # back yet: its buffer holds only old messages, which would pair wrongly)
            while self._images:
                self.unmatched[self._late_stream(self._images.popleft()[0])] += 1
            for name, buffer in self._streams.items():
                buffer.clear()
                buffer.extend(self._ahead.pop(name, ()))
                if buffer:
                    self._stream_last[name] = buffer[-1][0]
                else:
                    self._stream_last.pop(name, None)
        self._images.append((stamp, image))
        self._last_image = stamp
        while len(self._images) > self.queue_size:
            self._images.popleft()
            self.unmatched[self._late_stream(stamp)] += 1
        return self._collect()

    def add(self, stream: str, stamp: float, message: Any) -> list[tuple[Any, dict[str, Any]]]:
        """Queue a message of ``stream``; the pairs decided now. A message stamped before the stream's last
        starts a new timeline, kept apart until the images go back too; a later one back on the old timeline
        (past its last stamp) ends it: what went back was a glitch, dropped."""
        last, ahead = self._stream_last.get(stream), self._ahead.get(stream)
        if ahead is not None:
            if stamp < last:
                ahead.append((stamp, message))
                return []
            del self._ahead[stream]
        elif last is not None and stamp < last:
            self._ahead[stream] = deque([(stamp, message)], maxlen=max(self.queue_size, STREAM_BUFFER))
            return []
        self._stream_last[stream] = stamp
        self._streams[stream].append((stamp, message))
        return self._collect()

    def _prune(self) -> None:
        """Drop the messages no image can take any more: older than the oldest waiting image (else the newest
        image) by more than their stream's tolerance."""
        oldest = self._images[0][0] if self._images else self._last_image
        if oldest is None:
            return
        for name, buffer in self._streams.items():
            while buffer and buffer[0][0] < oldest - self.tolerances[name]:
                buffer.popleft()

    def _late_stream(self, stamp: float) -> str:
        return next((name for name, buffer in self._streams.items() if not buffer or buffer[-1][0] < stamp),
                    next(iter(self._streams)))

    def _collect(self) -> list[tuple[Any, dict[str, Any]]]:
        ready = []
        while self._images and all(buffer and buffer[-1][0] >= self._images[0][0] for buffer in self._streams.values()):
            stamp, image = self._images.popleft()
            paired: dict[str, Any] = {}
            for name, buffer in self._streams.items():
                best = min(buffer, key=lambda item: abs(item[0] - stamp))
                if abs(best[0] - stamp) > self.tolerances[name]:
                    self.unmatched[name] += 1
                    break
                paired[name] = best[1]
            else:
                ready.append((image, paired))
        self._prune()
        return ready

    def expire(self, stale: Callable[[Any], bool]) -> int:
        """Decide the waiting images, oldest first, for which ``stale(image)`` holds (e.g. waited too long: a
        stream that stopped) as unmatched, each counted against the stream that is late for it; how many."""
        expired = 0
        while self._images and stale(self._images[0][1]):
            stamp, _ = self._images.popleft()
            self.unmatched[self._late_stream(stamp)] += 1
            expired += 1
        return expired

    def clear(self) -> None:
        self._images.clear()
        self._last_image = None
        self._stream_last.clear()
        self._ahead.clear()
        for buffer in self._streams.values():
            buffer.clear()


class StampSynchronizer:
    """Calls ``on_pair(image, depth)`` once for each image whose nearest depth (within ``tolerance`` s) is known
    (``StampPairing`` with one stream, stamps in seconds). Images without one count in ``unmatched``.
    Thread-safe; ``on_pair`` runs outside the lock."""

    def __init__(self, tolerance: float, on_pair: Callable[[Any, Any], None], queue_size: int = 10) -> None:
        self.tolerance = tolerance
        self.on_pair = on_pair
        self._pairing = StampPairing({"depth": tolerance}, queue_size)
        self._lock = threading.Lock()

    @property
    def unmatched(self) -> int:
        return self._pairing.unmatched["depth"]

    def add_image(self, stamp: float, image: Any) -> None:
        with self._lock:
            ready = self._pairing.add_image(stamp, image)
        for image_msg, paired in ready:
            self.on_pair(image_msg, paired["depth"])

    def add_depth(self, stamp: float, depth: Any) -> None:
        with self._lock:
            ready = self._pairing.add("depth", stamp, depth)
        for image_msg, paired in ready:
            self.on_pair(image_msg, paired["depth"])

    def clear(self) -> None:
        with self._lock:
            self._pairing.clear()
