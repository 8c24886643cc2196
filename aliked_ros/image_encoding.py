"""Decoding ``sensor_msgs/Image``-shaped data (encoding, size, row step, bytes) into numpy, without ROS.

Colour images come out RGB (H,W,3) uint8, gray (H,W) uint8; mono16 is scaled to 8 bits. Depth comes out float32
metres: 16UC1/mono16 in millimetres (REP 118), 32FC1 in metres; 0 and non-finite values mean "no depth".
Rows may be padded (``step`` > width * bytes per pixel).

Nothing is allocated for a declared size before the data is known to hold it: raw images are checked against
their byte count, compressed ones (PNG, JPEG) by the size in their header, and no image beyond ``MAX_PIXELS``
is decoded.
"""
from __future__ import annotations

import functools
from typing import Callable

import cv2
import numpy as np

from aliked_ros.errors import AlikedRosError
from aliked_ros.geometry.camera import CalibrationError


class EncodingError(AlikedRosError):
    """Image data that does not match its declared encoding or size."""


class SizeMismatchError(CalibrationError):
    """An image whose size is not the camera calibration's (found before decoding it)."""


_COLOUR = {"rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgba8": (4, np.uint8), "bgra8": (4, np.uint8),
           "mono8": (1, np.uint8), "8uc1": (1, np.uint8), "mono16": (1, np.uint16), "16uc1": (1, np.uint16),
           "8uc3": (3, np.uint8), "bayer_rggb8": (1, np.uint8), "bayer_bggr8": (1, np.uint8),
           "bayer_gbrg8": (1, np.uint8), "bayer_grbg8": (1, np.uint8), "yuv422": (2, np.uint8),
           "yuv422_yuy2": (2, np.uint8)}
# to RGB: ROS names a Bayer pattern by its top-left 2x2 block, OpenCV by the block one pixel down and right
# (cv_bridge's table); ROS "yuv422" is UYVY, "yuv422_yuy2" YUYV
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "8uc3": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
           "bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
           "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
           "yuv422": cv2.COLOR_YUV2RGB_UYVY, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2}
_DEPTH = {"16uc1": np.uint16, "mono16": np.uint16, "32fc1": np.float32}
MAX_PIXELS = 64 * 1024 * 1024  # 64 Mpx: refused before decoding (an 8K camera has 33 Mpx)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def _view(encoding: str, height: int, width: int, step: int, data, channels: int, dtype, big_endian: bool) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if height <= 0 or width <= 0:
        raise EncodingError(f"empty image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise EncodingError(f"{width}x{height} px is more than the {MAX_PIXELS} px this node decodes")
    if step < row_bytes:
        raise EncodingError(f"step {step} is smaller than a {encoding} row of {width} px ({row_bytes} bytes)")
    buffer = np.frombuffer(data, np.uint8)
    if buffer.size < step * (height - 1) + row_bytes:
        raise EncodingError(f"{buffer.size} bytes of data for a {width}x{height} {encoding} image with step {step} "
                            f"(needs {step * height})")
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1))
    pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(">" if big_endian else "<"))
    pixels = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=False)


class SixteenBitScale:
    """16-bit intensities to 8 bits for one camera (a stereo pair shares one): the top 8 of the bits in use (a 10-
    or 12-bit sensor's mono16 fills the low bits: >> 8 alone made it nearly black; full-range data, values >=
    32768, is shifted by 8). The bits in use are those all but ``OUTLIER_SHARE`` of an image's pixels fit in (hot
    pixels and small highlights clip at 255 instead of darkening the image). Each camera of a pair (``camera``
    "left" / "right", see ``for_camera``) keeps its own: set by its first image, lowered when one of its first
    ``GROW_AFTER`` images needs ``SETTLE_DROP`` bits fewer or more (the first was a glitched frame full of
    0xFFFF, which would darken all later ones 16x; a highlight leaving the view, one bit, keeps the gain), then
    only grown, once ``GROW_AFTER`` of its images in a row need more. Both cameras are converted with the larger
    of the two: one gain for the pair (it differs between the two images of a pair only where it changes: the
    first pair, a growth). Taken from each image alone, an image's brightness halved or doubled whenever its
    brightest pixel crossed a power of two (a specular highlight, auto-exposure), and a pair's two images differed."""

    OUTLIER_SHARE = 1e-3
    GROW_AFTER = 3
    SETTLE_DROP = 2

    def __init__(self) -> None:
        self._cameras: dict[str, list[int]] = {}  # camera -> [bits, images seen, images in a row wanting more]

    @property
    def bits(self) -> int:
        """The bits in use (0: no image yet)."""
        return max((state[0] for state in self._cameras.values()), default=0)

    def for_camera(self, camera: str) -> Callable[[np.ndarray], np.ndarray]:
        """This scale as a converter of ``camera``'s images (a stereo pair's "right")."""
        return functools.partial(self, camera=camera)

    def bits_needed(self, pixels: np.ndarray) -> int:
        """The fewest bits (8..16) that all but OUTLIER_SHARE of ``pixels`` fit in."""
        high = np.bincount((pixels >> 8).ravel(), minlength=256)  # pixels per high byte
        above = np.cumsum(high[::-1])[::-1]  # above[k]: pixels >= k * 256
        allowed = int(self.OUTLIER_SHARE * pixels.size)
        for bits in range(8, 16):
            if above[1 << (bits - 8)] <= allowed:
                return bits
        return 16

    def __call__(self, pixels: np.ndarray, camera: str = "left") -> np.ndarray:
        needed = self.bits_needed(pixels) if pixels.size else 8
        state = self._cameras.setdefault(camera, [needed, 0, 0])
        bits, seen, wanting = state
        seen += 1
        if seen <= self.GROW_AFTER and needed <= bits - self.SETTLE_DROP:  # the first image was not the camera's
            bits = needed
        if needed > bits:
            wanting += 1
            if wanting >= self.GROW_AFTER:
                bits, wanting = needed, 0
        else:
            wanting = 0
        state[:] = bits, seen, wanting
        return np.minimum(pixels >> (self.bits - 8), 255).astype(np.uint8)


ScaleTo8Bit = Callable[[np.ndarray], np.ndarray]  # a SixteenBitScale, or its ``for_camera(...)``


def to_8_bit(pixels: np.ndarray, scale: ScaleTo8Bit | None = None) -> np.ndarray:
    """16-bit intensities to 8 bits with ``scale`` (the camera's, or ``scale.for_camera("right")``), or with the
    bits this image uses alone."""
    return (scale or SixteenBitScale())(pixels)


def decode_image(encoding: str, height: int, width: int, step: int, data, big_endian: bool = False,
                 scale: ScaleTo8Bit | None = None) -> np.ndarray:
    """An 8-bit RGB (H,W,3) or gray (H,W) image from raw Image fields; 16-bit ones through ``scale`` (the
    camera's ``SixteenBitScale``; None: this image's own bits)."""
    key = encoding.lower()
    if key not in _COLOUR:
        raise EncodingError(f"unsupported image encoding {encoding!r}; supported: {', '.join(sorted(_COLOUR))}")
    channels, dtype = _COLOUR[key]
    pixels = _view(encoding, height, width, step, data, channels, dtype, big_endian)
    if dtype == np.uint16:
        return to_8_bit(pixels, scale)
    if key in _TO_RGB:
        if key.startswith("yuv422") and width % 2:
            raise EncodingError(f"{encoding} image {width} px wide: its pixels come in pairs (an even width)")
        if key.startswith("bayer") and (width < 2 or height < 2):
            raise EncodingError(f"{encoding} image of {width}x{height} px: a Bayer mosaic needs 2x2 px at least")
        try:
            return cv2.cvtColor(pixels, _TO_RGB[key])
        except cv2.error as error:  # anything else OpenCV refuses: the image's fault, not a crash
            raise EncodingError(f"cannot convert {encoding} {width}x{height} px: {error.err}") from None
    if key == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    return pixels


def decode_depth(encoding: str, height: int, width: int, step: int, data, big_endian: bool = False) -> np.ndarray:
    """Depth in metres (H,W) float32 from raw Image fields; invalid pixels become NaN."""
    key = encoding.lower()
    if key not in _DEPTH:
        raise EncodingError(f"unsupported depth encoding {encoding!r}; expected 16UC1 (mm) or 32FC1 (m)")
    pixels = _view(encoding, height, width, step, data, 1, _DEPTH[key], big_endian)
    depth = pixels.astype(np.float32) / (1000.0 if pixels.dtype == np.uint16 else 1.0)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None when ``data`` is neither (or has no
    frame header)."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in JPEG_SOF:
            if i + 9 > len(data):
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def decode_compressed(format_: str, data, expected_size: tuple[int, int] | None = None,
                      scale: ScaleTo8Bit | None = None) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG/PNG) as RGB or gray uint8 (a 16-bit PNG through ``scale``, as
    ``decode_image``). Its header is read first: other formats, sizes beyond ``MAX_PIXELS`` and (with
    ``expected_size`` = (width, height)) any other size are refused before anything is decoded."""
    data = bytes(data)
    size = compressed_size(data)
    if size is None:
        raise EncodingError(f"cannot decode compressed image (format {format_!r}, {len(data)} bytes): not a PNG or "
                            "JPEG with a readable header")
    if size[0] * size[1] == 0 or size[0] * size[1] > MAX_PIXELS:
        raise EncodingError(f"compressed image declares {size[0]}x{size[1]} px (decoded: 1..{MAX_PIXELS} px)")
    if expected_size is not None and tuple(size) != tuple(expected_size):
        raise SizeMismatchError(f"image is {size[0]}x{size[1]} px but the camera calibration is for "
                                f"{expected_size[0]}x{expected_size[1]}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim not in (2, 3) or image.shape[1::-1] != size:
        raise EncodingError(f"cannot decode compressed image (format {format_!r}, {len(data)} bytes)")
    if image.dtype == np.uint16:
        image = to_8_bit(image, scale)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image
