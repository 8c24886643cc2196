"""Numpy frames -> sensor_msgs (Image, CameraInfo, CompressedImage); used by replay and the demo.
Arrays go in as ``bytes`` (assigning ndarrays to message fields is ~100x slower)."""
from __future__ import annotations

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from aliked_ros.geometry.camera import CameraModel


def ros_time(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def make_header(seconds: float, frame_id: str) -> Header:
    return Header(stamp=ros_time(seconds), frame_id=frame_id)


def image_message(image: np.ndarray, header: Header) -> Image:
    """rgb8 for (H,W,3) uint8, mono8 for (H,W) uint8, 32FC1 for float32 depth in metres."""
    if image.dtype == np.float32 and image.ndim == 2:
        encoding, channels = "32FC1", 1
    elif image.dtype == np.uint8:
        encoding, channels = ("rgb8", 3) if image.ndim == 3 else ("mono8", 1)
    else:
        raise ValueError(f"no ROS encoding for {image.dtype} {image.shape}")
    data = np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<")).tobytes()
    return Image(header=header, height=image.shape[0], width=image.shape[1], encoding=encoding, is_bigendian=0,
                 step=image.shape[1] * channels * image.dtype.itemsize, data=data)


def compressed_message(image: np.ndarray, header: Header, fmt: str = "png") -> CompressedImage:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(f".{fmt}", bgr)
    if not ok:
        raise ValueError(f"cannot encode image as {fmt}")
    return CompressedImage(header=header, format=fmt, data=encoded.tobytes())


def camera_info_message(camera: CameraModel, header: Header) -> CameraInfo:
    msg = CameraInfo(header=header, width=camera.width, height=camera.height, distortion_model=camera.distortion_model)
    msg.k = camera.K.reshape(-1).tolist()
    msg.d = [float(c) for c in camera.distortion]
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = np.hstack([camera.K, np.zeros((3, 1))]).reshape(-1).tolist()
    return msg
