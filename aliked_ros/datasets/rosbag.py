"""Rosbags (ROS 1 ``.bag``; ROS 2 sqlite3 or mcap folders/files), read with the pure-Python ``rosbags`` library.

Topics: ``image_topic`` (sensor_msgs/Image or CompressedImage), ``camera_info_topic`` and, with ``use_depth``,
``depth_topic`` (Image, 16UC1 mm or 32FC1 m; or a CompressedImage ``.../compressedDepth`` topic of
compressed_depth_image_transport, png or rvl). Left as None they are found: TUM's names
(/camera/rgb/image_color, /camera/rgb/camera_info, /camera/depth/image) when present, else the only image
topic, the camera_info beside it and the only depth topic (an image topic with "depth" in its name; a
RealSense's aligned_depth_to_color before the others). A bag recorded with ``ros2 bag record -a`` holds each
image once per image_transport plugin (``.../compressed``, ``.../compressedDepth``): topics without messages are
passed over, a raw topic is taken before its own compressed ones, and the camera_info is the one beside the
raw topic's name. Frames carry the
images' header stamps; each image is paired with the depth image nearest in stamp (within 20 ms).
Ground truth: a TUM-format ``groundtruth.txt`` in a ROS 2 bag's folder or beside the bag, if present.

Stereo (``stereo=True``, or ``None``: when the bag has one): two image topics, the left one and the same name
with "left" replaced by "right" (``image_topic`` / ``right_image_topic`` name them), each with the camera_info
beside it. Topics named ``*rect*`` (or whose camera_infos have no distortion and R = I) hold rectified images,
described by the two camera_infos' P (the right one with Tx = -fx B); other pairs are rectified with their K, D,
R, P, as image_proc does (ground truth beside such a bag is taken as the raw left camera's and turned into the
rectified left camera's). Left and right are paired by equal header stamps; a left image whose right one never
comes (the right stream has moved on by two images, or the bag ends) is yielded without a right image (a stereo
pipeline refuses it: ``require_stereo``) and counted in ``unpaired``; right images without a left one are
dropped and counted in ``unpaired_right``.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros.compressed_depth import decode_compressed_depth
from aliked_ros.datasets.base import DatasetError, Sequence
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.geometry.stereo import (StereoCamera, StereoRectification, is_rectified_camera_info,
                                        rectify_from_camera_infos)
from aliked_ros.image_encoding import (EncodingError, ScaleTo8Bit, SixteenBitScale, decode_compressed, decode_depth,
                                       decode_image)
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import read_tum

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TUM_TOPICS = ("/camera/rgb/image_color", "/camera/rgb/camera_info", "/camera/depth/image")
DEPTH_TOLERANCE_S = 0.02
DEPTH_WAIT_S = 1.0  # an image waits for its depth until the image stream is this far past it (a depth stream
#                     that stopped: the frame goes on without depth instead of every later image waiting in memory)


def is_bag(path: Path) -> bool:
    return path.suffix in (".bag", ".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file())


def bag_paths(path: Path) -> Path:
    """The path rosbags' AnyReader takes: a ROS 1 .bag file or a ROS 2 bag folder."""
    if path.suffix in (".mcap", ".db3") and (path.parent / "metadata.yaml").is_file():
        return path.parent
    return path


def stamp_of(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _right_of(topic: str) -> str | None:
    """The right camera's topic for a left camera's topic (the last "left" in the name -> "right")."""
    head, sep, tail = topic.rpartition("left")
    return head + "right" + tail if sep else None


def decode_image_message(msg, msgtype: str, scale: ScaleTo8Bit | None = None) -> np.ndarray:
    """``scale``: the camera's 16-bit to 8-bit scale (``SixteenBitScale``; None: each image's own)."""
    if msgtype.endswith("CompressedImage"):
        return decode_compressed(msg.format, msg.data, scale=scale)
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian), scale)


def decode_depth_message(msg, msgtype: str = IMAGE_TYPES[0], size: tuple[int, int] | None = None) -> np.ndarray:
    """Depth in metres; a compressedDepth message that declares another ``size`` (width, height) than the colour
    camera's is refused (EncodingError) before it is decoded (its few bytes could declare millions of pixels)."""
    if msgtype.endswith("CompressedImage"):
        return decode_compressed_depth(msg.format, msg.data, size)
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))


TRANSPORT_SUFFIXES = ("/compressed", "/compressedDepth", "/zstd")  # image_transport's topics beside an image


def transport_base(topic: str) -> str:
    """The raw image topic that an image_transport topic (``<base>/compressed`` ...) carries."""
    return next((topic.removesuffix(s) for s in TRANSPORT_SUFFIXES if topic.endswith(s)), topic)


def _candidates(topics: list[str], counts: dict[str, int]) -> list[str]:
    """``topics`` without those that hold no message (when others do) and without a transport topic whose raw
    topic is among them too."""
    topics = [t for t in topics if counts.get(t, 0) > 0] or topics
    return [t for t in topics if transport_base(t) == t or transport_base(t) not in topics]


def is_depth_topic(topic: str, msgtype: str) -> bool:
    """An image topic that holds depth: a raw one with "depth" in its name, or the compressedDepth topic of one
    (image_transport advertises a compressedDepth topic beside a colour image too: that one is not depth)."""
    if msgtype == IMAGE_TYPES[1]:
        base, sep, _ = topic.rpartition("/compressedDepth")
        return bool(sep) and not _ and "depth" in base.lower()
    return msgtype == IMAGE_TYPES[0] and "depth" in topic.lower()


class BagSequence(Sequence):
    def __init__(self, path: str | Path, camera_info: str | Path | None = None, use_depth: bool = True,
                 image_topic: str | None = None, camera_info_topic: str | None = None,
                 depth_topic: str | None = None, stereo: bool | None = False, right_image_topic: str | None = None,
                 right_camera_info_topic: str | None = None) -> None:
        self.path = bag_paths(Path(path))
        self.name = self.path.stem
        try:
            with self._open() as reader:
                topics = {c.topic: c.msgtype for c in reader.connections}
                counts: dict[str, int] = {}
                for c in reader.connections:  # a topic has one connection per publisher (ROS 1) or QoS
                    counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        except Exception as error:  # rosbags raises several types for unreadable bags
            raise DatasetError(f"cannot read bag {path}: {error}") from None
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items()))
        images = [t for t, m in topics.items() if m in IMAGE_TYPES]
        colour = _candidates([t for t in images if "depth" not in t.lower()], counts)
        self.right_image_topic = None
        pairs = [(t, _right_of(t)) for t in colour if _right_of(t) in colour]
        if stereo or (stereo is None and camera_info is None):  # None: stereo when the bag has a pair
            if right_image_topic is not None:
                self.right_image_topic = self._choose(right_image_topic, None, [], "right_image", listing, topics, IMAGE_TYPES)
            elif image_topic is not None:
                self.right_image_topic = _right_of(image_topic) if _right_of(image_topic) in colour else None
            elif len(pairs) == 1:
                image_topic, self.right_image_topic = pairs[0]
            elif len(pairs) > 1 and stereo:
                raise DatasetError(f"several stereo pairs in the bag ({pairs}); name one (--image-topic)")
            if stereo and self.right_image_topic is None:
                raise DatasetError(f"no stereo pair of image topics (.../left/... and .../right/...; or name them "
                                   f"with --image-topic and --right-image-topic). The bag has: {listing}")
            if self.right_image_topic is not None and camera_info is not None:
                raise DatasetError("--camera-info replaces a monocular calibration; stereo takes both camera_infos")
        self.has_stereo = self.right_image_topic is not None
        if not self.has_stereo and image_topic is None and len(pairs) == 1 and len(colour) == 2:
            image_topic = pairs[0][0]  # a stereo bag read monocular: its left camera
        if self.has_stereo:
            use_depth = False
        self.image_topic = self._choose(image_topic, TUM_TOPICS[0], colour, "image", listing, topics, IMAGE_TYPES)
        default_info = transport_base(self.image_topic).rsplit("/", 1)[0] + "/camera_info"
        infos = [t for t, m in topics.items() if m == CAMERA_INFO_TYPE]
        self.camera_info_topic = None
        if camera_info is None:
            self.camera_info_topic = self._choose(camera_info_topic, default_info, infos, "camera_info", listing, topics, (CAMERA_INFO_TYPE,))
        self.depth_topic = None
        if use_depth:
            depth_candidates = _candidates([t for t in images if is_depth_topic(t, topics[t])], counts)
            if depth_topic is not None or TUM_TOPICS[2] in topics or depth_candidates:
                # a RealSense bag has several: the one registered to the colour camera, else the caller names one
                registered = next((t for t in depth_candidates if "aligned_depth_to_color" in t), TUM_TOPICS[2])
                preferred = TUM_TOPICS[2] if TUM_TOPICS[2] in topics else registered
                self.depth_topic = self._choose(depth_topic, preferred, depth_candidates, "depth", listing, topics,
                                                IMAGE_TYPES)
        if self.depth_topic is not None and counts.get(self.depth_topic, 0) == 0:
            print(f"warning: {self.path}: depth topic {self.depth_topic} has no messages: read as monocular",
                  file=sys.stderr)
            self.depth_topic = None
        self.has_depth = self.depth_topic is not None
        self.image_type = topics[self.image_topic]
        self._count = counts[self.image_topic]
        self.stereo: StereoCamera | None = None
        self.rectification: StereoRectification | None = None
        self.unpaired = self.unpaired_right = 0
        self.skipped_messages = 0  # image or depth messages that could not be decoded (named on stderr)
        self._sixteen_bit = SixteenBitScale()  # one 16-bit to 8-bit scale for the camera (both of a stereo pair)
        # ground truth beside the bag: in a ROS 2 bag's folder, else in the folder that holds the bag
        gt = next((p for p in (self.path / "groundtruth.txt", self.path.parent / "groundtruth.txt") if p.is_file()),
                  None)
        self.groundtruth = read_tum(gt) if gt is not None else None
        if self.has_stereo:
            default_right_info = self.right_image_topic.rsplit("/", 1)[0] + "/camera_info"
            self.right_camera_info_topic = self._choose(right_camera_info_topic, default_right_info, [],
                                                        "right_camera_info", listing, topics, (CAMERA_INFO_TYPE,))
            left_info, right_info = self._first_message(self.camera_info_topic), \
                self._first_message(self.right_camera_info_topic)
            rectified = "rect" in self.image_topic and "rect" in self.right_image_topic
            if rectified or (is_rectified_camera_info(left_info) and is_rectified_camera_info(right_info)):
                self.stereo = StereoCamera.from_camera_infos(left_info, right_info)
            else:
                self.rectification = rectify_from_camera_infos(left_info, right_info)
                self.stereo = self.rectification.stereo
                if self.groundtruth is not None:
                    self.groundtruth = type(self.groundtruth)(self.groundtruth.stamps,
                                                              self.groundtruth.poses @ self.rectification.T_raw_rect)
            self.camera = self.stereo.left
        else:
            self.camera = CameraModel.from_yaml(camera_info) if camera_info else self._camera_from_bag()

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
        calibration = " or give the calibration as a file (--camera-info FILE)" if what == "camera_info" else ""
        raise DatasetError(f"cannot tell which topic is the {what} topic (candidates: {candidates or 'none'}); "
                           f"name it (--{what.replace('_', '-')}-topic){calibration}. The bag has: {listing}")

    def _first_message(self, topic: str):
        with self._open() as reader:
            connections = [c for c in reader.connections if c.topic == topic]
            for connection, _, raw in reader.messages(connections=connections):
                return reader.deserialize(raw, connection.msgtype)
        raise CalibrationError(f"no message on {topic} in {self.path}; pass --camera-info FILE")

    def _camera_from_bag(self) -> CameraModel:
        return CameraModel.from_camera_info(self._first_message(self.camera_info_topic))

    def _open(self):
        """rosbags' reader; ROS 2 bags recorded before Iron (sqlite3 schema < 4) store no message definitions:
        those of ROS 2 Humble are taken for them (the sensor_msgs the pipeline reads are the same since Foxy)."""
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        return AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))

    @contextlib.contextmanager
    def _reading(self):
        """The open reader; anything but a bad image or calibration raised while reading (a corrupt or truncated
        bag) becomes a DatasetError naming the bag."""
        try:
            with self._open() as reader:
                yield reader
        except (EncodingError, CalibrationError, DatasetError):
            raise
        except Exception as error:
            raise DatasetError(f"error while reading {self.path}: {error!r} (corrupt or truncated bag?)") from None

    def __len__(self) -> int:
        return self._count

    def _decoded(self, connection, msg) -> np.ndarray | None:
        """The image (or, on the depth topic, the depth) of a message; None for one that cannot be decoded (a
        corrupt JPEG): skipped, counted in ``skipped_messages`` and named on stderr."""
        try:
            if connection.topic == self.depth_topic:
                return decode_depth_message(msg, connection.msgtype, (self.camera.width, self.camera.height))
            scale = self._sixteen_bit.for_camera("right") if connection.topic == self.right_image_topic \
                else self._sixteen_bit
            return decode_image_message(msg, connection.msgtype, scale)
        except EncodingError as error:
            self.skipped_messages += 1
            print(f"warning: {self.path}: {connection.topic} message stamped {stamp_of(msg):.6f} s skipped: {error}",
                  file=sys.stderr)
            return None

    def __iter__(self) -> Iterator[Frame]:
        self._sixteen_bit = SixteenBitScale()  # each pass decodes its frames alike
        if self.has_stereo:
            yield from self._stereo_frames()
            return
        wanted = {self.image_topic, self.depth_topic} - {None}
        pending: list[tuple[float, np.ndarray]] = []  # images waiting for their depth
        depths: list[tuple[float, np.ndarray]] = []  # recent depth images
        last_image: float | None = None  # the newest image's stamp
        with self._reading() as reader:
            connections = [c for c in reader.connections if c.topic in wanted]
            for connection, _, raw in reader.messages(connections=connections):
                msg = reader.deserialize(raw, connection.msgtype)
                decoded = self._decoded(connection, msg)
                if decoded is None:
                    continue
                if connection.topic == self.image_topic:
                    image, last_image = decoded, stamp_of(msg)
                    if self.depth_topic is None:
                        yield Frame(image=image, stamp=stamp_of(msg), camera=self.camera)
                    else:
                        pending.append((stamp_of(msg), image))
                        while pending and pending[0][0] + DEPTH_WAIT_S < pending[-1][0]:
                            yield self._pair(*pending.pop(0), depths)
                else:
                    depths.append((stamp_of(msg), decoded))
                    while pending and pending[0][0] + DEPTH_TOLERANCE_S < depths[-1][0]:
                        yield self._pair(*pending.pop(0), depths)
                if depths:  # kept for the images still to come (recorded up to DEPTH_WAIT_S after their depth)
                    oldest = pending[0][0] if pending else last_image
                    depths = [d for d in depths if d[0] >= depths[-1][0] - DEPTH_WAIT_S
                              and (oldest is None or d[0] >= oldest - DEPTH_TOLERANCE_S)]
            while pending:
                yield self._pair(*pending.pop(0), depths)

    def _stereo_frames(self) -> Iterator[Frame]:
        """Left and right images paired by equal stamps (see the module docstring)."""
        lefts: dict[int, tuple[float, np.ndarray]] = {}  # waiting for their right image, in arrival order
        rights: dict[int, np.ndarray] = {}
        self.unpaired = self.unpaired_right = 0

        def frame(stamp: float, left: np.ndarray, right: np.ndarray | None) -> Frame:
            if self.rectification is not None:
                left, right = self.rectification.rectify(left, right)
            if right is None:
                self.unpaired += 1
                return Frame(image=left, stamp=stamp, camera=self.camera)
            return Frame(image=left, stamp=stamp, camera=self.camera, right_image=right, stereo=self.stereo)

        def ready(final: bool) -> Iterator[Frame]:
            while lefts:
                key = next(iter(lefts))
                if key in rights:
                    yield frame(*lefts.pop(key), rights.pop(key))
                elif final or sum(k > key for k in rights) >= 2:  # the right stream has moved on
                    yield frame(*lefts.pop(key), None)
                else:
                    return
            for key in [k for k in rights if k < (min(lefts) if lefts else 1 << 62) and (final or lefts)]:
                del rights[key]  # older than every left image still waiting: no left image will take it
                self.unpaired_right += 1
            while len(rights) > 16:  # the left stream stopped: keep the newest only
                del rights[min(rights)]
                self.unpaired_right += 1

        with self._reading() as reader:
            connections = [c for c in reader.connections if c.topic in (self.image_topic, self.right_image_topic)]
            for connection, _, raw in reader.messages(connections=connections):
                msg = reader.deserialize(raw, connection.msgtype)
                image = self._decoded(connection, msg)
                if image is None:
                    continue
                if connection.topic == self.image_topic:
                    lefts[stamp_ns(msg)] = (stamp_of(msg), image)
                else:
                    rights[stamp_ns(msg)] = image
                yield from ready(False)
            yield from ready(True)
            self.unpaired_right += len(rights)

    def _pair(self, stamp: float, image: np.ndarray, depths: list[tuple[float, np.ndarray]]) -> Frame:
        best = min(depths, key=lambda d: abs(d[0] - stamp), default=None)
        depth = best[1] if best is not None and abs(best[0] - stamp) <= DEPTH_TOLERANCE_S else None
        return Frame(image=image, stamp=stamp, camera=self.camera, depth=depth)
