"""From received messages to a ``Frame`` for the VO core (ROS-free: the messages are read by their fields, so
plain objects with the same fields work too).

Every way a message can be wrong ends in one module-specific error, each a kind the node counts
(``REJECTIONS``): the checks that need no decoding (camera_info, declared sizes) run first, so a wrong-sized or
huge image is refused before its pixels are touched.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from aliked_ros.compressed_depth import DepthSizeError, decode_compressed_depth
from aliked_ros.errors import AlikedRosError
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.geometry.stereo import StereoCamera
from aliked_ros.image_encoding import (EncodingError, ScaleTo8Bit, SixteenBitScale, SizeMismatchError,
                                       decode_compressed, decode_depth, decode_image)
from aliked_ros.odometry import DuplicateFrameError, Frame, FrameError, StereoFrameError


class NoCameraInfoError(AlikedRosError):
    """An image arrived before any camera_info."""


class NoRightCameraInfoError(NoCameraInfoError):
    """Stereo: a pair arrived before any camera_info of the right camera."""


class CameraInfoError(CalibrationError):
    """A camera_info the node cannot use (K all zero, NaN, unknown distortion model, ...)."""


class StereoCalibrationError(CameraInfoError):
    """The left and right camera_infos do not describe a rectified pair with a positive baseline (right P with
    Tx = 0 or Tx > 0, images of different sizes, different fx/fy/cy, no P): a metric scale from them would be
    wrong, so no frame is posed with them."""


# bad input -> (counter in /diagnostics: rejected_<kind>, what the log says); the first matching type wins
REJECTIONS: tuple[tuple[type[Exception], str, str], ...] = (
    (NoRightCameraInfoError, "no_right_camera_info",
     "no right camera_info received yet: stereo pairs are not processed until one is"),
    (NoCameraInfoError, "no_camera_info", "no camera_info received yet: frames are not processed until one is"),
    (StereoCalibrationError, "bad_stereo_calibration", "unusable stereo calibration (left/right camera_info)"),
    (CameraInfoError, "bad_camera_info", "unusable camera_info"),
    (EncodingError, "bad_encoding", "bad image"),
    (CalibrationError, "size_mismatch", "image does not fit camera_info"),
    (DuplicateFrameError, "duplicate_stamp", "duplicate frame"),
    (StereoFrameError, "bad_stereo_pair", "bad stereo pair"),
    (FrameError, "bad_depth", "bad depth image"),
    (AlikedRosError, "bad_input", "frame rejected"),
)


def rejection(error: AlikedRosError) -> tuple[str, str]:
    """(kind, log text) for a bad-input error."""
    kind, what = next((k, w) for t, k, w in REJECTIONS if isinstance(error, t))
    return kind, f"{what}: {error}"


def is_compressed(message: Any) -> bool:
    return hasattr(message, "format")


class CameraCache:
    """The CameraModel of the camera_info message last used (rebuilt only when another message comes)."""

    def __init__(self, rectified: bool = False) -> None:
        self.rectified = rectified  # the images are rectified: intrinsics from P, no distortion
        self._message: Any = None
        self._model: CameraModel | None = None
        self._error: CameraInfoError | None = None

    def model(self, message: Any | None) -> CameraModel:
        if message is None:
            raise NoCameraInfoError("no camera_info received yet")
        if message is not self._message:
            self._message = message
            try:
                self._model, self._error = CameraModel.from_camera_info(message, self.rectified), None
            except CalibrationError as error:
                self._model, self._error = None, CameraInfoError(str(error))
            except (TypeError, ValueError, OverflowError) as error:
                self._model, self._error = None, CameraInfoError(f"camera_info fields unreadable: {error!r}")
        if self._error is not None:
            raise self._error
        return self._model


class StereoCameraCache:
    """The StereoCamera of the (left, right) camera_info messages last used (rebuilt only when either changes).
    Only their P matrices and sizes are read (``StereoCamera.from_camera_infos``): the images are rectified."""

    def __init__(self) -> None:
        self._messages: tuple[Any, Any] = (None, None)
        self._stereo: StereoCamera | None = None
        self._error: StereoCalibrationError | None = None

    def model(self, left: Any | None, right: Any | None) -> StereoCamera:
        if left is None:
            raise NoCameraInfoError("no left camera_info received yet")
        if right is None:
            raise NoRightCameraInfoError("no right camera_info received yet")
        if left is not self._messages[0] or right is not self._messages[1]:
            self._messages = (left, right)
            try:
                self._stereo, self._error = StereoCamera.from_camera_infos(left, right), None
            except CalibrationError as error:
                self._stereo, self._error = None, StereoCalibrationError(str(error))
            except (TypeError, ValueError, OverflowError) as error:
                self._stereo, self._error = None, StereoCalibrationError(f"camera_info fields unreadable: {error!r}")
        if self._error is not None:
            raise self._error
        return self._stereo


def image_from_message(message: Any, camera: CameraModel | None = None, scale: ScaleTo8Bit | None = None
                       ) -> np.ndarray:
    """RGB (H,W,3) or gray (H,W) uint8 from a sensor_msgs/Image or CompressedImage; with ``camera``, an image of
    another size is refused (SizeMismatchError) before it is decoded; 16-bit images through ``scale`` (the
    camera's, ``aliked_ros.image_encoding.SixteenBitScale``)."""
    expected = (camera.width, camera.height) if camera is not None else None
    if is_compressed(message):
        return decode_compressed(message.format, message.data, expected, scale)
    if expected is not None and (message.width, message.height) != expected:
        raise SizeMismatchError(f"image is {message.width}x{message.height} px but the camera calibration is for "
                                f"{expected[0]}x{expected[1]}")
    return decode_image(message.encoding, message.height, message.width, message.step, message.data,
                        bool(message.is_bigendian), scale)


def depth_from_message(message: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """Depth in metres (H,W) float32, NaN where invalid, from a sensor_msgs/Image (16UC1 mm, 32FC1 m) or a
    CompressedImage in compressedDepth format (``aliked_ros.compressed_depth``); with ``size`` = (width, height)
    of the colour image, a depth image of another size is refused (FrameError) before it is decoded."""
    if is_compressed(message):
        try:
            return decode_compressed_depth(message.format, message.data, size)
        except DepthSizeError as error:
            raise FrameError(f"{error} (the colour image's)") from None
    if size is not None and (message.width, message.height) != tuple(size):
        raise FrameError(f"depth image is {message.width}x{message.height} px, colour image {size[0]}x{size[1]}")
    return decode_depth(message.encoding, message.height, message.width, message.step, message.data,
                        bool(message.is_bigendian))


def frame_from_messages(image_message: Any, depth_message: Any | None, camera: CameraModel, stamp: float,
                        scale: ScaleTo8Bit | None = None) -> tuple[Frame, list[str]]:
    """The Frame, and warnings (kinds) about inputs that are still used (``depth_all_invalid``: posed without
    depth)."""
    image = image_from_message(image_message, camera, scale)
    warnings = []
    depth = None
    if depth_message is not None:
        depth = depth_from_message(depth_message, (image.shape[1], image.shape[0]))
        if not np.isfinite(depth).any():
            warnings.append("depth_all_invalid")
    return Frame(image, stamp, camera, depth), warnings


def stereo_frame_from_messages(left_message: Any, right_message: Any, stereo: StereoCamera, stamp: float,
                               scale: SixteenBitScale | None = None) -> Frame:
    """The stereo Frame of a rectified pair: the left image (tracked and posed) must fit ``stereo.left``
    (``SizeMismatchError``), the right one the same size (``StereoFrameError``: left and right differ); 16-bit
    images of both through one ``scale``."""
    left = image_from_message(left_message, stereo.left, scale)
    try:
        right = image_from_message(right_message, stereo.right, scale.for_camera("right") if scale else None)
    except SizeMismatchError as error:
        raise StereoFrameError(f"right image does not fit the stereo pair: {error}") from error
    return Frame(left, stamp, stereo.left, right_image=right, stereo=stereo)
