"""The node's input stage (ROS-free, no rclpy): what arrives, how it is paired, which frame the worker takes next,
and the count of everything. One lock guards all of it; readers (diagnostics) get an immutable snapshot.

Flow: subscription callbacks call ``add_image`` / ``add_paired(stream, ...)`` / ``add_camera_info`` (they only
store, never block on the worker). An image with paired streams (``paired_tolerances``: ``{"depth": 0.02}``, a
stereo right camera ``{"right": 0.0}``) waits in ``StampPairing`` until it is paired or dropped (no message of a
stream stamped near it, more than ``queue_size`` images waiting, or waiting longer than ``pairing_wait`` s: a
stream that stopped); a complete frame goes into the latest-frame slot, replacing (and counting as dropped) one
the worker has not taken. The worker calls ``take`` (blocks; returns the frame, its camera_info, the paired
cameras' camera_infos (``camera_info_streams``: ``("image", "right")`` for stereo) and any pending reset
request), then exactly one of ``finish_processed`` / ``finish_rejected``. A pipelined worker (two stages: extraction,
then pose and publishing) passes a taken frame from its first stage to its second through ``hand_over`` /
``take_handed_over``, a second one-item slot: an item the second stage has not taken is superseded by a newer one
and counted as dropped, and a reset request it carried passes on to the newer item. The first stage paces itself
with ``wait_to_extract``: it takes the next frame when the hand-over slot is empty and the second stage is about to
finish (just in time: the freshest frame, no work thrown away), so at most one frame is ever extracted ahead.

Accounting: ``received = processed + dropped + rejected + in_flight`` at every snapshot, where ``rejected``
counts every kind (``rejected[kind]``, unpaired images as ``no_<stream>``) and ``in_flight`` the images waiting
for pairing, in the slot, in the hand-over slot or being processed (0 once idle). Stamps are integer nanoseconds.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from aliked_ros.ros.sync import StampPairing

NS = 1_000_000_000
PACING_WEIGHT = 0.2  # weight of the newest sample in the pipelined stages' moving-average times
CAMERA_INFO_MISSES = 2  # images in a row that found a newer camera_info than theirs: the stamps do not match


def moving_average(average: float | None, sample: float) -> float:
    """The pipelined stages' time per item: exponential moving average (``PACING_WEIGHT``), the first sample as is."""
    return sample if average is None else average + PACING_WEIGHT * (sample - average)


# --- the worker's loops (the node runs them on its threads; ``aliked-vo bench pipeline`` without ROS) ---------------

def run_single_stage(inputs: "InputStage", process: Callable[["Work"], None]) -> None:
    """One worker: each frame taken and handed to ``process``, which finishes it (processed or rejected)."""
    while (work := inputs.take()) is not None:
        process(work)


def run_extraction_stage(inputs: "InputStage", extract: Callable[["Work"], Any | None]) -> None:
    """Pipelined, stage 1: the newest frame taken just in time for the second stage (``wait_to_extract``),
    ``extract(work)`` -> the item handed over, or None for a frame it refused (and finished); a reset request the
    refused frame carried applies to the next one."""
    extract_s = None  # time per frame here (moving average)
    while inputs.wait_to_extract(extract_s or 0.0) and (work := inputs.take()) is not None:
        start = time.monotonic()
        extracted = extract(work)
        if extracted is None:
            inputs.restore_reset(work.reset)
        else:
            inputs.hand_over(work.frame, extracted, work.reset)
        extract_s = moving_average(extract_s, time.monotonic() - start)


def run_pose_stage(inputs: "InputStage", pose: Callable[["InputFrame", Any, "ResetRequest | None"], None]) -> None:
    """Pipelined, stage 2: the newest handed-over item to ``pose(frame, item, reset)``, which finishes the frame."""
    while (handed := inputs.take_handed_over()) is not None:
        pose(*handed)
        inputs.stage2_finished()


@dataclass(frozen=True)
class InputFrame:
    image: Any  # the image message (sensor_msgs/Image or CompressedImage)
    stamp_ns: int
    paired: dict[str, Any]  # stream name -> its message paired with the image ("depth")
    received: float  # monotonic time the image arrived

    @property
    def depth(self) -> Any | None:
        return self.paired.get("depth")


@dataclass(frozen=True)
class ResetRequest:
    reason: str
    T_odom_base: np.ndarray | None = None  # reset_to_pose: where the base is in odom after the reset


@dataclass(frozen=True)
class Work:
    """What the worker processes next: a frame, the camera_info for it (None: none received), a reset to
    apply before it (None: none requested) and the camera_infos of its paired cameras by stream (``"right"``;
    absent: none received)."""

    frame: InputFrame
    camera_info: Any | None
    reset: ResetRequest | None
    camera_infos: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSnapshot:
    received: int
    processed: int
    dropped: int
    in_flight: int
    resets: int
    rejected: dict[str, int]  # by kind, including no_<stream> for images left unpaired
    warnings: dict[str, int]  # processed despite a problem, by kind
    unmatched: dict[str, int]  # images left without a message of a paired stream
    camera_infos: int  # camera_info messages received (of the image's camera; others in counters)
    input_rate_hz: float
    latency_ms: float  # mean arrival -> processed, last 100 frames
    counters: dict[str, int] = field(default_factory=dict)  # other counts reported by the node (e.g. TF)
    tracking: dict[str, Any] = field(default_factory=dict)  # the last processed frame's state (set_tracking)

    @property
    def frames_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def balanced(self) -> bool:
        return self.received == self.processed + self.dropped + self.frames_rejected + self.in_flight


class InputStage:
    def __init__(self, paired_tolerances: dict[str, float] | None = None, camera_info_wait: float = 0.1,
                 queue_size: int = 10, pairing_wait: float | None = None,
                 camera_info_streams: tuple[str, ...] = ("image",), next_frame_wait: float = 0.0) -> None:
        """``paired_tolerances``: stream -> largest stamp difference to the image, s; ``pairing_wait``: longest an
        image waits for its paired messages, s (None: until ``queue_size`` newer images wait);
        ``camera_info_streams``: the cameras whose camera_info each frame takes (``"image"`` first);
        ``next_frame_wait``: fraction of the camera's frame period that ``take`` waits for an image about to
        arrive instead of taking one that has waited (0: never; ``_wait_for_due_frame``)."""
        self._lock = threading.Condition()
        self._pairing = StampPairing({k: int(round(v * NS)) for k, v in paired_tolerances.items()}, queue_size) \
            if paired_tolerances else None
        self.camera_info_wait = camera_info_wait
        self.next_frame_wait = next_frame_wait
        self.pairing_wait = pairing_wait
        self._slot: InputFrame | None = None
        self._handed_over: tuple[InputFrame, Any, ResetRequest | None] | None = None  # pipelined: stage 1 -> 2
        self._stage2_since: float | None = None  # pipelined: when the second stage took its current item
        self._stage2_s: float | None = None  # pipelined: the second stage's time per item (moving average), s
        self._processing = 0
        self._closed = False
        self._reset: ResetRequest | None = None
        self._camera_infos: dict[str, deque[tuple[int, Any]]] = {s: deque(maxlen=30) for s in camera_info_streams}
        self._camera_info_count = 0
        self._camera_info_stamped = dict.fromkeys(camera_info_streams, True)  # stamps have matched the images' so far
        self._camera_info_misses = dict.fromkeys(camera_info_streams, 0)  # images in a row whose own never came
        self._counts: Counter = Counter()  # received, processed, dropped, resets
        self._rejected: Counter = Counter()
        self._warnings: Counter = Counter()
        self._counters: Counter = Counter()
        self._arrivals: deque[float] = deque(maxlen=100)
        self._latencies: deque[float] = deque(maxlen=100)
        self._tracking: dict[str, Any] = {}

    # --- producers (subscription callbacks) ------------------------------------------------------------------

    def add_image(self, stamp_ns: int, message: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts["received"] += 1
            self._arrivals.append(now)
            self._expire_unpaired()
            if self._pairing is None:
                self._offer(InputFrame(message, stamp_ns, {}, now))
            else:
                for (image, stamp, received), paired in self._pairing.add_image(stamp_ns, (message, stamp_ns, now)):
                    self._offer(InputFrame(image, stamp, paired, received))

    def add_paired(self, stream: str, stamp_ns: int, message: Any) -> None:
        with self._lock:
            if self._pairing is None or stream not in self._pairing.tolerances:
                raise KeyError(f"{stream!r} is not a paired stream of this input stage")
            self._expire_unpaired()
            for (image, stamp, received), paired in self._pairing.add(stream, stamp_ns, message):
                self._offer(InputFrame(image, stamp, paired, received))

    def add_camera_info(self, stamp_ns: int, message: Any, stream: str = "image") -> None:
        """A camera_info of the image's camera (``stream`` "image") or of a paired camera (``"right"``)."""
        with self._lock:
            if stream not in self._camera_infos:
                raise KeyError(f"{stream!r} is not a camera_info stream of this input stage")
            self._camera_infos[stream].append((stamp_ns, message))
            if stream == "image":
                self._camera_info_count += 1
            else:
                self._counters[f"camera_infos_{stream}"] += 1
            self._lock.notify_all()

    def _expire_unpaired(self) -> None:
        """Images that waited longer than ``pairing_wait`` for a paired stream are unpaired (``no_<stream>``)."""
        if self._pairing is not None and self.pairing_wait is not None:
            cutoff = time.monotonic() - self.pairing_wait
            self._pairing.expire(lambda item: item[2] < cutoff)

    def set_next_frame_wait(self, fraction: float) -> None:
        """Change ``next_frame_wait`` (a run-time parameter of the node); the next ``take`` uses it."""
        with self._lock:
            self.next_frame_wait = fraction

    def request_reset(self, request: ResetRequest) -> None:
        """Applied before the next frame the worker takes (a later request replaces an earlier one)."""
        with self._lock:
            self._reset = request

    def _offer(self, frame: InputFrame) -> None:
        if self._slot is not None:
            self._counts["dropped"] += 1  # superseded before the worker took it
        self._slot = frame
        self._lock.notify_all()

    # --- the worker ----------------------------------------------------------------------------------------------

    def take(self, timeout: float | None = None) -> Work | None:
        """The newest complete frame (waits for one; None after ``close`` or ``timeout``), with its camera_info:
        the one stamped like the image, waiting up to ``camera_info_wait`` s for it while none has arrived or the
        stamps have matched so far (drivers publish both together, callbacks run in either order) and none stamped
        after the image has come (then the image's own was lost), else the newest. The frame counts as in flight
        until ``finish_processed`` / ``finish_rejected``."""
        with self._lock:
            if not self._wait_for(lambda: self._slot is not None, timeout) or not self._wait_for_due_frame():
                return None
            frame, self._slot = self._slot, None
            self._processing += 1
            reset, self._reset = self._reset, None
            deadline = time.monotonic() + self.camera_info_wait
            infos = {stream: self._camera_info_for(stream, frame.stamp_ns, deadline) for stream in self._camera_infos}
            camera_info = infos.pop("image", None)
            return Work(frame, camera_info, reset, {k: v for k, v in infos.items() if v is not None})

    def _wait_for_due_frame(self) -> bool:
        """With the lock held and a frame in the slot: when the camera's next image is due within
        ``next_frame_wait`` of its frame period (the median interval between the last arrivals), wait up to that
        long for it, so that a worker that was busy starts on an image that has just arrived rather than one that
        waited most of a period. With a fraction f, a saturated worker's median wait drops from half a period to
        (1/2 - f) of one, and it idles f^2/2 of a period per frame on average (f 0.4 at 30 Hz: 16.7 -> 3.3 ms,
        2.7 ms idle); a worker that keeps up takes each image as it arrives and never waits here. False after
        ``close``."""
        if self.next_frame_wait <= 0 or len(self._arrivals) < 5:
            return not self._closed
        recent = np.array([self._arrivals[k] for k in range(-min(9, len(self._arrivals)), 0)])
        period = float(np.median(np.diff(recent)))
        if recent[-1] + period - time.monotonic() <= self.next_frame_wait * period:
            waiting = self._slot
            self._wait_for(lambda: self._slot is not waiting, self.next_frame_wait * period)
        return not self._closed

    def _wait_for(self, ready, timeout: float | None) -> bool:
        """With the lock held: wait until ``ready()``; False after ``close`` or ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready() and not self._closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._lock.wait(remaining)
        return not self._closed

    def _camera_info_for(self, stream: str, stamp_ns: int, deadline: float) -> Any | None:
        infos = self._camera_infos[stream]
        while True:
            match = next((m for s, m in reversed(infos) if s == stamp_ns), None)
            if match is not None:
                self._camera_info_stamped[stream], self._camera_info_misses[stream] = True, 0
                return match
            remaining = deadline - time.monotonic()
            lost = bool(infos) and infos[-1][0] > stamp_ns  # a newer one came: this image's was lost (best effort)
            if self._closed or remaining <= 0 or lost or (infos and not self._camera_info_stamped[stream]):
                break
            self._lock.wait(remaining)
        if infos:
            self._camera_info_misses[stream] += 1
            # stamps that do not match the images' (none came in time, or a newer one came for a second image in a
            # row: a driver stamping its camera_info apart from the image; one alone is a message lost to best
            # effort): from now on the newest, without waiting
            if not lost or self._camera_info_misses[stream] >= CAMERA_INFO_MISSES:
                self._camera_info_stamped[stream] = False
            return infos[-1][1]
        return None

    def hand_over(self, frame: InputFrame, item: Any, reset: ResetRequest | None) -> None:
        """Pipelined worker, first stage: ``item`` (made from the taken ``frame``) for the second stage, with the
        reset request to apply before it. An item still waiting is superseded: counted as dropped; its reset
        request passes on unless the new item carries its own (a later request replaces an earlier one)."""
        with self._lock:
            if self._handed_over is not None:
                _, _, waiting_reset = self._handed_over
                reset = reset or waiting_reset
                self._processing -= 1
                self._counts["dropped"] += 1
            self._handed_over = (frame, item, reset)
            self._lock.notify_all()

    def restore_reset(self, reset: ResetRequest | None) -> None:
        """A reset request taken with a frame that was refused before it was handed over: it applies before the
        next frame instead, unless a newer request is pending."""
        with self._lock:
            if reset is not None and self._reset is None:
                self._reset = reset

    def take_handed_over(self, timeout: float | None = None) -> tuple[InputFrame, Any, ResetRequest | None] | None:
        """Pipelined worker, second stage: the newest handed-over (frame, item, reset); waits for one; None after
        ``close`` or ``timeout``. The frame stays in flight until ``finish_processed`` / ``finish_rejected``."""
        with self._lock:
            if not self._wait_for(lambda: self._handed_over is not None, timeout):
                return None
            handed, self._handed_over = self._handed_over, None
            self._stage2_since = time.monotonic()
            self._lock.notify_all()
            return handed

    def stage2_finished(self) -> None:
        """Pipelined worker, second stage: done with the item it took (processed, rejected or published)."""
        with self._lock:
            if self._stage2_since is not None:
                self._stage2_s = moving_average(self._stage2_s, time.monotonic() - self._stage2_since)
                self._stage2_since = None
            self._lock.notify_all()

    def wait_to_extract(self, extract_s: float) -> bool:
        """Pipelined worker, first stage, before ``take``: wait until the hand-over slot is empty and the second
        stage is expected to finish within ``extract_s`` (the first stage's time per frame), so that the frame
        it takes next is extracted just when the second stage can take it. False after ``close``."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                ready_at = now if self._stage2_since is None or self._stage2_s is None \
                    else self._stage2_since + self._stage2_s - extract_s
                if self._handed_over is None and now >= ready_at:
                    return True
                self._lock.wait(None if self._handed_over is not None else max(ready_at - now, 1e-4))
            return False

    def finish_processed(self, frame: InputFrame) -> None:
        with self._lock:
            self._processing -= 1
            self._counts["processed"] += 1
            self._latencies.append(time.monotonic() - frame.received)

    def finish_rejected(self, kind: str) -> bool:
        """Count a taken frame as rejected; True for the first of its kind (log it)."""
        with self._lock:
            self._processing -= 1
            self._rejected[kind] += 1
            return self._rejected[kind] == 1

    def warn(self, kind: str) -> bool:
        """Count a problem with a frame that is still processed; True for the first of its kind."""
        with self._lock:
            self._warnings[kind] += 1
            return self._warnings[kind] == 1

    def count(self, name: str, amount: int = 1) -> bool:
        """Another count shown in diagnostics (e.g. ``resets``, ``tf_stamps_skipped``); True the first time."""
        with self._lock:
            self._counters[name] += amount
            return self._counters[name] == amount

    def set_tracking(self, **summary: Any) -> None:
        """The last processed frame's tracking summary (state, inliers, ...) for the diagnostics."""
        with self._lock:
            self._tracking = summary

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    # --- readers -------------------------------------------------------------------------------------------------

    def snapshot(self) -> InputSnapshot:
        """The counts now (images that waited longer than ``pairing_wait`` are decided unpaired first)."""
        with self._lock:
            self._expire_unpaired()
            arrivals, latencies = list(self._arrivals), list(self._latencies)
            unmatched = dict(self._pairing.unmatched) if self._pairing else {}
            waiting = self._pairing.waiting if self._pairing else 0
            rejected = dict(self._rejected) | {f"no_{k}": v for k, v in unmatched.items() if v}
            counts = dict(self._counts)
            snapshot = dict(
                received=counts.get("received", 0), processed=counts.get("processed", 0),
                dropped=counts.get("dropped", 0), in_flight=waiting + (self._slot is not None) + self._processing,
                resets=self._counters.get("resets", 0), rejected=rejected, warnings=dict(self._warnings),
                unmatched=unmatched, camera_infos=self._camera_info_count,
                counters={k: v for k, v in self._counters.items() if k != "resets"}, tracking=dict(self._tracking))
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
        return InputSnapshot(**snapshot, input_rate_hz=(len(arrivals) - 1) / span if span > 0 else 0.0,
                             latency_ms=float(np.mean(latencies)) * 1e3 if latencies else 0.0)

