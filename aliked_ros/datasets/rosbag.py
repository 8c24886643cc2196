"""Rosbags (ROS 1 ``.bag``; ROS 2 sqlite3 or mcap folders/files), read with the pure-Python ``rosbags`` library.

Topics: ``image_topic`` (sensor_msgs/Image or CompressedImage), ``camera_info_topic`` and, with ``use_depth``,
``depth_topic`` (Image, 16UC1 mm or 32FC1 m). Left as None they are found: TUM's names
(/camera/rgb/image_color, /camera/rgb/camera_info, /camera/depth/image) when present, else the only image
topic, the camera_info beside it and the only image topic with "depth" in its name. Frames carry the
images' header stamps; each image is paired with the depth image nearest in stamp (within 20 ms).
Ground truth: a TUM-format ``groundtruth.txt`` beside the bag, if present.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros.datasets.base import DatasetError, Sequence
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.image_encoding import EncodingError, decode_compressed, decode_depth, decode_image
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import read_tum

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TUM_TOPICS = ("/camera/rgb/image_color", "/camera/rgb/camera_info", "/camera/depth/image")
DEPTH_TOLERANCE_S = 0.02


def is_bag(path: Path) -> bool:
    return path.suffix in (".bag", ".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file())


def bag_paths(path: Path) -> Path:
    """The path rosbags' AnyReader takes: a ROS 1 .bag file or a ROS 2 bag folder."""
    if path.suffix in (".mcap", ".db3") and (path.parent / "metadata.yaml").is_file():
        return path.parent
    return path


def stamp_of(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def decode_image_message(msg, msgtype: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        return decode_compressed(msg.format, msg.data)
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))


def decode_depth_message(msg) -> np.ndarray:
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))


class BagSequence(Sequence):
    def __init__(self, path: str | Path, camera_info: str | Path | None = None, use_depth: bool = True,
                 image_topic: str | None = None, camera_info_topic: str | None = None,
                 depth_topic: str | None = None) -> None:
        from rosbags.highlevel import AnyReader

        self.path = bag_paths(Path(path))
        self.name = self.path.stem
        try:
            with AnyReader([self.path]) as reader:
                topics = {c.topic: c.msgtype for c in reader.connections}
                counts = {c.topic: c.msgcount for c in reader.connections}
        except Exception as error:  # rosbags raises several types for unreadable bags
            raise DatasetError(f"cannot read bag {path}: {error}") from None
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items()))
        images = [t for t, m in topics.items() if m in IMAGE_TYPES]
        self.image_topic = self._choose(image_topic, TUM_TOPICS[0], [t for t in images if "depth" not in t], "image", listing, topics, IMAGE_TYPES)
        default_info = self.image_topic.rsplit("/", 1)[0] + "/camera_info"
        infos = [t for t, m in topics.items() if m == CAMERA_INFO_TYPE]
        self.camera_info_topic = None
        if camera_info is None:
            self.camera_info_topic = self._choose(camera_info_topic, default_info, infos, "camera_info", listing, topics, (CAMERA_INFO_TYPE,))
        self.depth_topic = None
        if use_depth:
            depth_candidates = [t for t in images if "depth" in t and topics[t] == IMAGE_TYPES[0]]
            if depth_topic is not None or TUM_TOPICS[2] in topics or len(depth_candidates) == 1:
                self.depth_topic = self._choose(depth_topic, TUM_TOPICS[2], depth_candidates, "depth", listing, topics, IMAGE_TYPES[:1])
        self.has_depth = self.depth_topic is not None
        self.image_type = topics[self.image_topic]
        self._count = counts[self.image_topic]
        self.camera = CameraModel.from_yaml(camera_info) if camera_info else self._camera_from_bag()
        gt = self.path.parent / "groundtruth.txt"
        self.groundtruth = read_tum(gt) if gt.is_file() else None

    @staticmethod
    def _choose(requested, preferred, candidates, what, listing, topics, types) -> str:
        if requested is not None:
            if requested not in topics:
                raise DatasetError(f"topic {requested} is not in the bag; it has: {listing}")
            if topics[requested] not in types:
                raise DatasetError(f"topic {requested} is {topics[requested]}, expected {' or '.join(types)}")
            return requested
        if preferred in topics and topics[preferred] in types:
            return preferred
        if len(candidates) == 1:
            return candidates[0]
        raise DatasetError(f"cannot tell which topic is the {what} topic (candidates: {candidates or 'none'}); "
                           f"name it (--{what.replace('_', '-')}-topic). The bag has: {listing}")

    def _camera_from_bag(self) -> CameraModel:
        with self._open() as reader:
            connections = [c for c in reader.connections if c.topic == self.camera_info_topic]
            for connection, _, raw in reader.messages(connections=connections):
                return CameraModel.from_camera_info(reader.deserialize(raw, connection.msgtype))
        raise CalibrationError(f"no message on {self.camera_info_topic} in {self.path}; pass --camera-info FILE")

    def _open(self):
        from rosbags.highlevel import AnyReader

        return AnyReader([self.path])

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Frame]:
        wanted = {self.image_topic, self.depth_topic} - {None}
        pending: list[tuple[float, np.ndarray]] = []  # images waiting for their depth
        depths: list[tuple[float, np.ndarray]] = []  # recent depth images
        try:
            with self._open() as reader:
                connections = [c for c in reader.connections if c.topic in wanted]
                for connection, _, raw in reader.messages(connections=connections):
                    msg = reader.deserialize(raw, connection.msgtype)
                    if connection.topic == self.image_topic:
                        image = decode_image_message(msg, connection.msgtype)
                        if self.depth_topic is None:
                            yield Frame(image=image, stamp=stamp_of(msg), camera=self.camera)
                        else:
                            pending.append((stamp_of(msg), image))
                    else:
                        depths.append((stamp_of(msg), decode_depth_message(msg)))
                        depths = depths[-8:]
                        while pending and pending[0][0] + DEPTH_TOLERANCE_S < depths[-1][0]:
                            yield self._pair(*pending.pop(0), depths)
                while pending:
                    yield self._pair(*pending.pop(0), depths)
        except (EncodingError, CalibrationError):
            raise
        except Exception as error:
            if isinstance(error, DatasetError):
                raise
            raise DatasetError(f"error while reading {self.path}: {error!r} (corrupt or truncated bag?)") from None

    def _pair(self, stamp: float, image: np.ndarray, depths: list[tuple[float, np.ndarray]]) -> Frame:
        best = min(depths, key=lambda d: abs(d[0] - stamp), default=None)
        depth = best[1] if best is not None and abs(best[0] - stamp) <= DEPTH_TOLERANCE_S else None
        return Frame(image=image, stamp=stamp, camera=self.camera, depth=depth)
