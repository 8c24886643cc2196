"""Writing a ``Sequence`` as a rosbag (ROS 2 sqlite3/mcap, or ROS 1 .bag) with the ``rosbags`` library.

Topics (TUM's names by default): rgb8 images, their camera_info, and with depth 32FC1 images in metres (NaN where
unknown, as TUM's own bags; with ``compressed_depth`` = "png" or "rvl", 16UC1 millimetres as
compressed_depth_image_transport writes them, on ``<depth topic>/compressedDepth``). A stereo sequence: the rectified left and right images and their camera_infos on
``/stereo/left/image_rect``, ``/stereo/left/camera_info``, ``/stereo/right/image_rect``,
``/stereo/right/camera_info`` (P of the right one with Tx = -fx B), which ``BagSequence`` reads back as stereo.
Message stamps are the frames' stamps; so are the bag's receive times. A ROS 2 bag's folder also gets the
sequence's ground truth as ``groundtruth.txt`` (TUM format), where ``BagSequence`` reads it back; a ROS 1 .bag is
one file: its ground truth is left to the caller (a ``groundtruth.txt`` beside the bag is read back).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aliked_ros.compressed_depth import encode_compressed_depth
from aliked_ros.datasets.base import DatasetError, Sequence
from aliked_ros.geometry.camera import CameraModel
from aliked_ros.trajectory import write_tum

DEFAULT_TOPICS = {"image": "/camera/rgb/image_color", "camera_info": "/camera/rgb/camera_info",
                  "depth": "/camera/depth/image"}
DEFAULT_STEREO_TOPICS = {"image": "/stereo/left/image_rect", "camera_info": "/stereo/left/camera_info",
                         "right_image": "/stereo/right/image_rect", "right_camera_info": "/stereo/right/camera_info"}


def _stamp(typestore, seconds: float):
    Time = typestore.types["builtin_interfaces/msg/Time"]
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def _header(typestore, seconds: float, frame_id: str, ros1: bool):
    Header = typestore.types["std_msgs/msg/Header"]
    return Header(seq=0, stamp=_stamp(typestore, seconds), frame_id=frame_id) if ros1 else \
        Header(stamp=_stamp(typestore, seconds), frame_id=frame_id)


def camera_info_message(typestore, camera: CameraModel, header, ros1: bool, projection: np.ndarray | None = None):
    """``projection``: P (3x4) when it is not [K | 0] (the right camera of a rectified pair)."""
    CameraInfo = typestore.types["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = typestore.types["sensor_msgs/msg/RegionOfInterest"]
    K = camera.K
    P = np.hstack([K, np.zeros((3, 1))]) if projection is None else np.asarray(projection, float)
    matrices = {"d": np.array(camera.distortion, float), "k": K.reshape(-1), "r": np.eye(3).reshape(-1),
                "p": P.reshape(-1)}
    if ros1:  # ROS 1 names them D, K, R, P
        matrices = {name.upper(): value for name, value in matrices.items()}
    return CameraInfo(header=header, height=camera.height, width=camera.width,
                      distortion_model=camera.distortion_model, binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False), **matrices)


def write_bag(sequence: Sequence, path: str | Path, ros1: bool = False, storage: str = "sqlite3",
              frame_id: str = "camera_rgb_optical_frame", topics: dict[str, str] | None = None,
              compressed_depth: str | None = None) -> Path:
    """Write ``sequence`` to ``path`` (a folder for ROS 2, a .bag file for ROS 1); returns the path."""
    from rosbags.typesys import Stores, get_typestore

    topics = {**(DEFAULT_STEREO_TOPICS if sequence.has_stereo else DEFAULT_TOPICS), **(topics or {})}
    path = Path(path)
    if path.exists():
        raise DatasetError(f"{path} exists; rosbag writers do not overwrite")
    typestore = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_KILTED)
    Image = typestore.types["sensor_msgs/msg/Image"]
    if ros1:
        from rosbags.rosbag1 import Writer

        writer, serialize = Writer(path), typestore.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer, serialize = Writer(path, version=9, storage_plugin=plugin), typestore.serialize_cdr
    with writer:
        image_conn = writer.add_connection(topics["image"], Image.__msgtype__, typestore=typestore)
        info_conn = writer.add_connection(topics["camera_info"], "sensor_msgs/msg/CameraInfo", typestore=typestore)
        CompressedImage = typestore.types["sensor_msgs/msg/CompressedImage"]
        depth_type = CompressedImage if compressed_depth else Image
        depth_conn = None
        if sequence.has_depth and not sequence.has_stereo:
            depth_topic = f"{topics['depth']}/compressedDepth" if compressed_depth else topics["depth"]
            depth_conn = writer.add_connection(depth_topic, depth_type.__msgtype__, typestore=typestore)
        right_conn = right_info_conn = None
        if sequence.has_stereo:
            right_conn = writer.add_connection(topics["right_image"], Image.__msgtype__, typestore=typestore)
            right_info_conn = writer.add_connection(topics["right_camera_info"], "sensor_msgs/msg/CameraInfo",
                                                    typestore=typestore)

        def image_message(image: np.ndarray, header):
            rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
            return Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                         step=rgb.shape[1] * 3, data=np.ascontiguousarray(rgb).reshape(-1))
        for frame in sequence:
            header = _header(typestore, frame.stamp, frame_id, ros1)
            time_ns = int(round(frame.stamp * 1e9))
            writer.write(image_conn, time_ns, serialize(image_message(frame.image, header), Image.__msgtype__))
            info = camera_info_message(typestore, frame.camera, header, ros1)
            writer.write(info_conn, time_ns, serialize(info, info.__msgtype__))
            if right_conn is not None and frame.right_image is not None:
                writer.write(right_conn, time_ns, serialize(image_message(frame.right_image, header), Image.__msgtype__))
                info = camera_info_message(typestore, frame.stereo.right, header, ros1, frame.stereo.projections()[1])
                writer.write(right_info_conn, time_ns, serialize(info, info.__msgtype__))
            if depth_conn is not None and frame.depth is not None and compressed_depth:
                format_, data = encode_compressed_depth(frame.depth, compressed_depth, "16UC1")
                depth = CompressedImage(header=header, format=format_, data=np.frombuffer(data, np.uint8))
                writer.write(depth_conn, time_ns, serialize(depth, CompressedImage.__msgtype__))
            elif depth_conn is not None and frame.depth is not None:
                metres = np.ascontiguousarray(frame.depth, dtype="<f4")
                depth = Image(header=header, height=metres.shape[0], width=metres.shape[1], encoding="32FC1",
                              is_bigendian=0, step=metres.shape[1] * 4, data=metres.view(np.uint8).reshape(-1))
                writer.write(depth_conn, time_ns, serialize(depth, Image.__msgtype__))
    if not ros1 and sequence.groundtruth is not None:  # where BagSequence looks (rosbag2 reads only its own files)
        write_tum(path / "groundtruth.txt", sequence.groundtruth)
    return path
