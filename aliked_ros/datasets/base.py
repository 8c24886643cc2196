"""The sequence interface shared by all readers."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros.errors import AlikedRosError
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import Trajectory


class DatasetError(AlikedRosError):
    """A dataset that cannot be read: missing files, unknown layout, corrupt bag, unknown topic."""


def read_table(path: Path, columns: int | None = None, min_columns: int = 1, delimiter: str | None = None
               ) -> np.ndarray:
    """A numeric table (``#`` comments and blank lines skipped) as an (N, C) float array: every row ``columns``
    values (or, without ``columns``, at least ``min_columns`` and as many as the first row). A row that breaks
    that or holds a value that is not a number raises a DatasetError naming the file and line. (NaN and inf are
    numbers here: a pose file's gaps; callers decide what they mean.)"""
    rows: list[list[float]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            row = [float(field) for field in text.split(delimiter)]
        except ValueError:
            raise DatasetError(f"{path}:{number}: not a number in {text[:80]!r}") from None
        expected = columns if columns is not None else len(rows[0]) if rows else None
        if (expected is not None and len(row) != expected) or len(row) < min_columns:
            wanted = expected if expected is not None else f"at least {min_columns}"
            raise DatasetError(f"{path}:{number}: {len(row)} columns, expected {wanted}: {text[:80]!r}")
        rows.append(row)
    return np.array(rows, float).reshape(len(rows), len(rows[0]) if rows else columns or min_columns)


class Sequence(ABC):
    """Frames in time order with a camera model; ``groundtruth`` (T_world_camera) or None. ``has_stereo``:
    its frames are stereo frames (right image + ``StereoCamera``; ``camera`` and the ground truth are then the
    rectified left camera's)."""

    name: str
    camera: CameraModel
    groundtruth: Trajectory | None = None
    has_depth: bool = False
    has_stereo: bool = False

    @abstractmethod
    def __len__(self) -> int:
        ...

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        ...


def camera_from_file_or(default: Path | None, override: str | Path | None, what: str) -> CameraModel:
    """The camera from ``override`` (a camera_info YAML) if given, else from ``default`` if it exists."""
    if override and not Path(override).is_file():
        raise CalibrationError(f"--camera-info {override}: no such file")
    path = Path(override) if override else default
    if path is None or not Path(path).is_file():
        raise CalibrationError(
            f"no camera calibration for {what}: expected {default} or pass --camera-info FILE (ROS camera_info YAML)")
    return CameraModel.from_yaml(path)


class Prefetched(Sequence):
    """Another sequence's frames, read ahead by a background thread into a queue of ``size`` frames, so that
    reading, decoding or rendering overlaps with whatever consumes them. Errors of the reader are raised in the
    consumer, at the frame where they happened. ``start()`` begins reading before the first iteration (e.g.
    while a node starts); each later iteration reads the sequence again."""

    def __init__(self, sequence: Sequence, size: int = 16) -> None:
        self.sequence, self.size = sequence, max(1, size)
        self.name, self.camera = sequence.name, sequence.camera
        self.groundtruth, self.has_depth = sequence.groundtruth, sequence.has_depth
        self.has_stereo = sequence.has_stereo
        self._started: Iterator[Frame] | None = None

    def __len__(self) -> int:
        return len(self.sequence)

    def start(self) -> "Prefetched":
        if self._started is None:
            self._started = self._read_ahead()
        return self

    def __iter__(self) -> Iterator[Frame]:
        started, self._started = self._started, None
        return started if started is not None else self._read_ahead()

    def _read_ahead(self) -> Iterator[Frame]:
        import queue
        import threading

        items: queue.Queue = queue.Queue(self.size)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        def read() -> None:
            try:
                for frame in self.sequence:
                    if not put(("frame", frame)):
                        return
                put(("end", None))
            except BaseException as error:  # handed to the consumer
                put(("error", error))

        threading.Thread(target=read, name=f"prefetch {self.name}", daemon=True).start()

        def drain() -> Iterator[Frame]:
            try:
                while True:
                    kind, item = items.get()
                    if kind == "end":
                        return
                    if kind == "error":
                        raise item
                    yield item
            finally:
                stop.set()  # the consumer stopped early: let the reader thread end

        return drain()
