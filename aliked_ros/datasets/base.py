"""The sequence interface shared by all readers."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from aliked_ros.errors import AlikedRosError
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import Trajectory


class DatasetError(AlikedRosError):
    """A dataset that cannot be read: missing files, unknown layout, corrupt bag, unknown topic."""


class Sequence(ABC):
    """Frames in time order with a camera model; ``groundtruth`` (T_world_camera) or None."""

    name: str
    camera: CameraModel
    groundtruth: Trajectory | None = None
    has_depth: bool = False

    @abstractmethod
    def __len__(self) -> int:
        ...

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        ...


def camera_from_file_or(default: Path | None, override: str | Path | None, what: str) -> CameraModel:
    """The camera from ``override`` (a camera_info YAML) if given, else from ``default`` if it exists."""
    path = Path(override) if override else default
    if path is None or not Path(path).is_file():
        raise CalibrationError(
            f"no camera calibration for {what}: expected {default} or pass --camera-info FILE (ROS camera_info YAML)")
    return CameraModel.from_yaml(path)
