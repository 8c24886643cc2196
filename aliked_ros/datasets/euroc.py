"""EuRoC MAV folders: ``mav0/cam0/data.csv`` (timestamp ns, file name), ``mav0/cam0/data/*.png``,
``mav0/cam0/sensor.yaml`` (intrinsics, radtan/equidistant distortion, resolution, T_BS body<-sensor) and ground
truth of the body in ``mav0/state_groundtruth_estimate0/`` (EuRoC ``data.csv`` or a TUM-format ``*.txt``).
Ground truth is converted to the camera: T_world_cam = T_world_body T_BS."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from aliked_ros.datasets.base import DatasetError, Sequence
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.geometry.transforms import from_tum
from aliked_ros.image_io import read_image
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import Trajectory, read_tum


def _load_yaml(path: Path) -> dict:
    text = path.read_text()
    return yaml.safe_load(text.replace("%YAML:1.0", "", 1))


class EurocSequence(Sequence):
    def __init__(self, root: str | Path, camera: str = "cam0", camera_info: str | Path | None = None) -> None:
        root = Path(root)
        self.mav = root / "mav0" if (root / "mav0").is_dir() else root
        self.name = root.name
        cam_dir = self.mav / camera
        if not (cam_dir / "data.csv").is_file():
            raise DatasetError(f"EuRoC folder {self.mav} has no {camera}/data.csv")
        rows = [line.split(",") for line in (cam_dir / "data.csv").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        self.entries = [(int(r[0]) * 1e-9, cam_dir / "data" / r[1].strip()) for r in rows]
        sensor = _load_yaml(cam_dir / "sensor.yaml") if (cam_dir / "sensor.yaml").is_file() else None
        if camera_info:
            self.camera = CameraModel.from_yaml(camera_info)
        elif sensor is None:
            raise CalibrationError(f"no calibration: {cam_dir / 'sensor.yaml'} missing; pass --camera-info FILE")
        else:
            fu, fv, cu, cv = sensor["intrinsics"]
            model = {"radial-tangential": "plumb_bob", "equidistant": "equidistant"}.get(sensor.get("distortion_model"))
            if model is None:
                raise CalibrationError(f"{cam_dir / 'sensor.yaml'}: unsupported distortion model {sensor.get('distortion_model')!r}")
            self.camera = CameraModel(int(sensor["resolution"][0]), int(sensor["resolution"][1]), fu, fv, cu, cv, model,
                                      tuple(float(c) for c in sensor["distortion_coefficients"]))
        T_BS = np.array(sensor["T_BS"]["data"], float).reshape(4, 4) if sensor else np.eye(4)
        self.groundtruth = self._groundtruth(T_BS)

    def _groundtruth(self, T_BS: np.ndarray) -> Trajectory | None:
        folder = self.mav / "state_groundtruth_estimate0"
        body = None
        if (folder / "data.csv").is_file():
            rows = np.loadtxt(folder / "data.csv", delimiter=",", comments="#", ndmin=2)
            # timestamp, p x y z, q w x y z, ...
            tum = np.column_stack([rows[:, 1:4], rows[:, 5:8], rows[:, 4]])
            body = Trajectory(rows[:, 0] * 1e-9, np.array([from_tum(r) for r in tum]))
        else:
            candidates = sorted(folder.glob("*.txt"))
            if candidates:
                body = read_tum(candidates[0])
        if body is None:
            return None
        return Trajectory(body.stamps, body.poses @ T_BS)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Frame]:
        for stamp, path in self.entries:
            yield Frame(image=read_image(path), stamp=stamp, camera=self.camera)
