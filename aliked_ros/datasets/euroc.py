"""EuRoC MAV folders: ``mav0/cam0/data.csv`` (timestamp ns, file name), ``mav0/cam0/data/*.png``,
``mav0/cam0/sensor.yaml`` (intrinsics, radtan/equidistant distortion, resolution, T_BS body<-sensor) and ground
truth of the body in ``mav0/state_groundtruth_estimate0/`` (EuRoC ``data.csv`` or a TUM-format ``*.txt``).
Ground truth is converted to the camera: T_world_cam = T_world_body T_BS.

Stereo (``mav0/cam1`` beside cam0, each with its ``sensor.yaml``; ``stereo=True``, or ``None``: when it is there;
``False``, the default: monocular cam0):
the raw pair is rectified once (``aliked_ros.geometry.stereo.rectify_stereo``, extrinsics
T_cam1_cam0 = inv(T_BS cam1) T_BS cam0) and every image pair is remapped. The posed camera is then the
rectified cam0 (cam0's optical centre, rotated by the rectification), and the ground truth is of that camera:
T_world_rect = T_world_body T_BS(cam0) T_cam0_rect. Left and right images are paired by equal timestamp; a cam0
image without a cam1 image of its stamp is yielded without a right image (a stereo pipeline refuses it:
``require_stereo``), and counted in ``unpaired``.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from aliked_ros.datasets.base import DatasetError, Sequence, read_table
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.geometry.stereo import StereoRectification, rectify_stereo
from aliked_ros.geometry.transforms import from_tum, invert
from aliked_ros.image_io import read_image
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import Trajectory, read_tum


def _load_yaml(path: Path) -> dict:
    text = path.read_text()
    return yaml.safe_load(text.replace("%YAML:1.0", "", 1))


def _entries(cam_dir: Path) -> list[tuple[int, Path]]:
    if not (cam_dir / "data.csv").is_file():
        raise DatasetError(f"EuRoC folder {cam_dir.parent} has no {cam_dir.name}/data.csv")
    path, entries = cam_dir / "data.csv", []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        row = line.split(",")
        if len(row) < 2 or not row[0].strip().isdigit() or not row[1].strip():
            raise DatasetError(f"{path}:{number}: expected 'timestamp_ns,filename', got {line.strip()[:80]!r}")
        entries.append((int(row[0]), cam_dir / "data" / row[1].strip()))
    return entries


def _camera(sensor: dict, where: Path) -> CameraModel:
    fu, fv, cu, cv = sensor["intrinsics"]
    model = {"radial-tangential": "plumb_bob", "equidistant": "equidistant"}.get(sensor.get("distortion_model"))
    if model is None:
        raise CalibrationError(f"{where}: unsupported distortion model {sensor.get('distortion_model')!r}")
    return CameraModel(int(sensor["resolution"][0]), int(sensor["resolution"][1]), fu, fv, cu, cv, model,
                       tuple(float(c) for c in sensor["distortion_coefficients"]))


def _T_BS(sensor: dict) -> np.ndarray:
    return np.array(sensor["T_BS"]["data"], float).reshape(4, 4)


class EurocSequence(Sequence):
    def __init__(self, root: str | Path, camera: str = "cam0", camera_info: str | Path | None = None,
                 stereo: bool | None = False, right_camera: str = "cam1") -> None:
        root = Path(root)
        self.mav = root / "mav0" if (root / "mav0").is_dir() else root
        self.name = root.name
        cam_dir = self.mav / camera
        left_entries = _entries(cam_dir)
        self.entries = [(ns * 1e-9, path) for ns, path in left_entries]
        sensor = _load_yaml(cam_dir / "sensor.yaml") if (cam_dir / "sensor.yaml").is_file() else None
        right_dir = self.mav / right_camera
        has_right = (right_dir / "data.csv").is_file() and (right_dir / "sensor.yaml").is_file() and sensor is not None
        if stereo and not has_right:
            raise DatasetError(f"EuRoC folder {self.mav} has no {right_camera}/data.csv and sensor.yaml (and "
                               f"{camera}/sensor.yaml) for stereo")
        if stereo and camera_info:
            raise DatasetError("--camera-info replaces a monocular calibration; stereo takes both sensor.yaml files")
        self.has_stereo = has_right and stereo is not False and not camera_info
        self.rectification: StereoRectification | None = None
        self.unpaired = 0
        if camera_info:
            self.camera = CameraModel.from_yaml(camera_info)
        elif sensor is None:
            raise CalibrationError(f"no calibration: {cam_dir / 'sensor.yaml'} missing; pass --camera-info FILE")
        else:
            self.camera = _camera(sensor, cam_dir / "sensor.yaml")
        T_BS = _T_BS(sensor) if sensor else np.eye(4)
        if self.has_stereo:
            right_sensor = _load_yaml(right_dir / "sensor.yaml")
            right_model = _camera(right_sensor, right_dir / "sensor.yaml")
            try:
                self.rectification = rectify_stereo(self.camera, right_model, invert(_T_BS(right_sensor)) @ T_BS)
            except CalibrationError as error:
                raise CalibrationError(f"{self.mav}: {camera}/{right_camera}: {error}") from None
            self.camera = self.rectification.stereo.left
            T_BS = T_BS @ self.rectification.T_raw_rect
            rights = {ns: path for ns, path in _entries(right_dir)}
            self.right_paths = [rights.get(ns) for ns, _ in left_entries]
            self.unpaired = sum(path is None for path in self.right_paths)
        self.groundtruth = self._groundtruth(T_BS)

    def _groundtruth(self, T_BS: np.ndarray) -> Trajectory | None:
        folder = self.mav / "state_groundtruth_estimate0"
        body = None
        if (folder / "data.csv").is_file():
            rows = read_table(folder / "data.csv", min_columns=8, delimiter=",")
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
        if self.rectification is None:
            for stamp, path in self.entries:
                yield Frame(image=read_image(path), stamp=stamp, camera=self.camera)
            return
        for (stamp, path), right_path in zip(self.entries, self.right_paths):
            left, right = self.rectification.rectify(read_image(path),
                                                     read_image(right_path) if right_path is not None else None)
            if right is None:
                yield Frame(image=left, stamp=stamp, camera=self.camera)
            else:
                yield Frame(image=left, stamp=stamp, camera=self.camera, right_image=right,
                            stereo=self.rectification.stereo)
