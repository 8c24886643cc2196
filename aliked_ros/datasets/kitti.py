"""KITTI odometry sequences: ``image_0/*.png`` (left gray, rectified), ``calib.txt`` (P0: 3x4 projection),
``times.txt`` (seconds), ground truth from ``poses.txt`` in the folder or ``../../poses/<sequence>.txt``
(rows of 12 values: T_world_cam0, 3x4 row-major)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros.datasets.base import DatasetError, Sequence
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.image_io import read_image
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import Trajectory


class KittiSequence(Sequence):
    def __init__(self, root: str | Path, camera_info: str | Path | None = None) -> None:
        self.root = Path(root)
        self.name = self.root.name
        self.images = sorted((self.root / "image_0").glob("*.png"))
        if not self.images:
            raise DatasetError(f"KITTI folder {self.root} has no image_0/*.png")
        times = self.root / "times.txt"
        self.stamps = np.loadtxt(times, ndmin=1) if times.is_file() else np.arange(len(self.images)) * 0.1
        if len(self.stamps) != len(self.images):
            raise DatasetError(f"{times}: {len(self.stamps)} stamps for {len(self.images)} images")
        first = read_image(self.images[0])
        if camera_info:
            self.camera = CameraModel.from_yaml(camera_info)
        else:
            calib = {}
            for line in (self.root / "calib.txt").read_text().splitlines():
                if ":" in line:
                    key, values = line.split(":", 1)
                    calib[key.strip()] = np.array(values.split(), float)
            if "P0" not in calib or calib["P0"].size != 12:
                raise CalibrationError(f"{self.root / 'calib.txt'} has no 12-value P0 line")
            P = calib["P0"].reshape(3, 4)
            self.camera = CameraModel(first.shape[1], first.shape[0], P[0, 0], P[1, 1], P[0, 2], P[1, 2])
        poses_file = next((p for p in (self.root / "poses.txt", self.root.parent.parent / "poses" / f"{self.name}.txt")
                           if p.is_file()), None)
        self.groundtruth = None
        if poses_file is not None:
            rows = np.loadtxt(poses_file, ndmin=2)
            poses = np.tile(np.eye(4), (len(rows), 1, 1))
            poses[:, :3, :] = rows.reshape(-1, 3, 4)
            self.groundtruth = Trajectory(self.stamps[: len(rows)], poses)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Frame]:
        for stamp, path in zip(self.stamps, self.images):
            yield Frame(image=read_image(path), stamp=float(stamp), camera=self.camera)
