"""KITTI odometry sequences: ``image_0/*.png`` (left gray, rectified), ``calib.txt`` (P0: 3x4 projection),
``times.txt`` (seconds), ground truth from ``poses.txt`` in the folder or ``../../poses/<sequence>.txt``
(rows of 12 values: T_world_cam0, 3x4 row-major).

Stereo: ``image_1/*.png`` (right camera, same names) and ``P1`` in ``calib.txt`` (rectified: P1[0,3] = -fx B).
``stereo=True`` uses them (``None``: when both are there; ``False``, the default: monocular); frames then carry the right image and the ``StereoCamera`` of
P0/P1, and cam0 (left) is the posed camera, as in the ground truth. A left image without its right one is
yielded without it (a stereo pipeline refuses it: ``require_stereo``).
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros.datasets.base import DatasetError, Sequence, read_table
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.geometry.stereo import StereoCamera
from aliked_ros.image_io import read_image
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import Trajectory


def read_calib(path: Path) -> dict[str, np.ndarray]:
    calib = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, values = line.split(":", 1)
            try:
                calib[key.strip()] = np.array(values.split(), float)
            except ValueError:
                raise CalibrationError(f"{path}: line {key.strip()} is not numeric") from None
    return calib


class KittiSequence(Sequence):
    def __init__(self, root: str | Path, camera_info: str | Path | None = None, stereo: bool | None = False) -> None:
        self.root = Path(root)
        self.name = self.root.name
        self.images = sorted((self.root / "image_0").glob("*.png"))
        if not self.images:
            raise DatasetError(f"KITTI folder {self.root} has no image_0/*.png")
        # times.txt and poses.txt have a row per frame number; a folder may hold only some of the frames (every
        # second one, a clip from 000100 on): rows are then taken by the number in each image's name
        numbers = [int(p.stem) if p.stem.isdigit() else -1 for p in self.images]
        self._numbers = np.array(numbers) if min(numbers) >= 0 else None
        times = self.root / "times.txt"
        if times.is_file():
            self.stamps = self._rows_of(read_table(times, columns=1)[:, 0], times, "stamps")
        else:
            self.stamps = (self._numbers if self._numbers is not None else np.arange(len(self.images))) * 0.1
            print(f"warning: {self.root} has no times.txt: frames stamped 0.1 s apart by frame number",
                  file=sys.stderr)
        first = read_image(self.images[0])
        calib = read_calib(self.root / "calib.txt")
        has_right = (self.root / "image_1").is_dir() and "P1" in calib
        if stereo and not has_right:
            raise DatasetError(f"KITTI folder {self.root} has no right camera (image_1/ and P1 in calib.txt) for stereo")
        if stereo and camera_info:
            raise DatasetError("--camera-info replaces a monocular calibration; stereo takes P0/P1 of calib.txt")
        self.has_stereo = has_right and stereo is not False and not camera_info
        self.stereo: StereoCamera | None = None
        if camera_info:
            self.camera = CameraModel.from_yaml(camera_info)
        else:
            if "P0" not in calib or calib["P0"].size != 12:
                raise CalibrationError(f"{self.root / 'calib.txt'} has no 12-value P0 line")
            P = calib["P0"].reshape(3, 4)
            self.camera = CameraModel(first.shape[1], first.shape[0], P[0, 0], P[1, 1], P[0, 2], P[1, 2])
        if self.has_stereo:
            right_first = self.root / "image_1" / self.images[0].name
            if not right_first.is_file():
                raise DatasetError(f"KITTI folder {self.root}: no right image {right_first} for {self.images[0].name}")
            size = (first.shape[1], first.shape[0])
            right = read_image(right_first)
            try:
                self.stereo = StereoCamera.from_projections(size, calib["P0"], (right.shape[1], right.shape[0]),
                                                           calib["P1"])
            except CalibrationError as error:
                raise CalibrationError(f"{self.root / 'calib.txt'}: {error}") from None
            self.camera = self.stereo.left
        poses_file = next((p for p in (self.root / "poses.txt", self.root.parent.parent / "poses" / f"{self.name}.txt")
                           if p.is_file()), None)
        self.groundtruth = None
        if poses_file is not None:
            rows = read_table(poses_file, columns=12)
            if len(rows) > len(self.images):  # the full sequence's poses: those of the frames this folder holds
                rows = self._rows_of(rows, poses_file, "poses")
            elif len(rows) < len(self.images) and self._numbers is not None and \
                    not np.array_equal(self._numbers, np.arange(len(self.images))):
                # fewer rows than images, and the images are not frames 0, 1, 2, ...: which row is whose is unknown
                raise DatasetError(f"{poses_file}: {len(rows)} poses for {len(self.images)} images numbered "
                                   f"{self._numbers.min()}..{self._numbers.max()}: cannot tell which pose is whose")
            poses = np.tile(np.eye(4), (len(rows), 1, 1))
            poses[:, :3, :] = rows.reshape(-1, 3, 4)
            usable = np.isfinite(poses).all(axis=(1, 2))
            if not usable.all():  # a gap in the ground truth: no pose (as read_tum)
                print(f"warning: {poses_file}: {int((~usable).sum())} of {len(rows)} poses are not finite: left out",
                      file=sys.stderr)
            stamps = self.stamps[: len(rows)]
            poses = poses[: len(self.stamps)]
            self.groundtruth = Trajectory(stamps[usable[: len(stamps)]], poses[usable[: len(poses)]])

    def _rows_of(self, rows: np.ndarray, path: Path, what: str) -> np.ndarray:
        """One row per image: all of them when there are as many rows as images, else the rows numbered like the
        images (a folder holding some of the sequence's frames)."""
        if len(rows) == len(self.images):
            return rows
        if (numbered := self._numbered(rows)) is not None:
            return numbered
        raise DatasetError(f"{path}: {len(rows)} {what} for {len(self.images)} images"
                           + ("" if self._numbers is None else f" numbered up to {self._numbers.max()}"))

    def _numbered(self, rows: np.ndarray) -> np.ndarray | None:
        """The rows numbered like the images (row n for image n), or None when the images are not numbered or the
        rows do not reach the highest number."""
        if self._numbers is None or len(rows) <= self._numbers.max():
            return None
        return rows[self._numbers]

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Frame]:
        for stamp, path in zip(self.stamps, self.images):
            image = read_image(path)
            right_path = self.root / "image_1" / path.name
            if self.stereo is not None and right_path.is_file():
                yield Frame(image=image, stamp=float(stamp), camera=self.camera, right_image=read_image(right_path),
                            stereo=self.stereo)
            else:
                yield Frame(image=image, stamp=float(stamp), camera=self.camera)


def write_kitti_folder(sequence: Sequence, root: str | Path) -> Path:
    """Write a sequence as a KITTI odometry folder that ``KittiSequence`` reads back: ``image_0/`` (and for a
    stereo sequence ``image_1/``) PNGs named by frame number, ``calib.txt`` (P0, and P1 with Tx = -fx B),
    ``times.txt`` and, with ground truth, ``poses.txt`` (T_world_cam0 at each frame's stamp). A pinhole camera
    without distortion only (KITTI images are rectified)."""
    import cv2

    if sequence.camera.is_distorted:
        raise DatasetError("a KITTI folder holds rectified images: the camera must have no distortion")
    root = Path(root)
    folders = ["image_0"] + (["image_1"] if sequence.has_stereo else [])
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    stamps, projections = [], None
    for index, frame in enumerate(sequence):
        name = f"{index:06d}.png"
        images = [frame.image] + ([frame.right_image] if sequence.has_stereo else [])
        for folder, image in zip(folders, images):
            if image is None:
                continue  # a left image without its right one
            out = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(root / folder / name), out):
                raise DatasetError(f"cannot write {root / folder / name}")
        if frame.stereo is not None and projections is None:
            projections = frame.stereo.projections()
        stamps.append(frame.stamp)
    P0 = np.hstack([sequence.camera.K, np.zeros((3, 1))])
    lines = [f"P0: {' '.join(f'{v:.12e}' for v in P0.ravel())}"]
    if projections is not None:
        lines.append(f"P1: {' '.join(f'{v:.12e}' for v in projections[1].ravel())}")
    (root / "calib.txt").write_text("\n".join(lines) + "\n")
    np.savetxt(root / "times.txt", np.array(stamps), fmt="%.9f")
    if sequence.groundtruth is not None:
        index = sequence.groundtruth.nearest(np.array(stamps), 1e-6)
        if (index >= 0).all():
            np.savetxt(root / "poses.txt", sequence.groundtruth.poses[index, :3, :].reshape(len(stamps), 12), fmt="%.12e")
    return root
