"""Depth images in the ``compressedDepth`` wire format of ROS's ``compressed_depth_image_transport`` (what a
depth camera's ``.../image_raw/compressedDepth`` topic and a bag recorded from it carry), without ROS.

A ``sensor_msgs/CompressedImage`` whose ``format`` is ``"<encoding>; compressedDepth <codec>"`` (ROS 1 and
older ROS 2 drivers write ``"<encoding>; compressedDepth"``: PNG). Its ``data`` is a 12-byte little-endian
header (int32 format, float32 quantisation A, B) followed by the image in the codec:

- ``png``: a 16-bit one-channel PNG;
- ``rvl``: uint32 width, uint32 height, then the pixels run-length / variable-length coded (Wilson's RVL, the
  plugin's ``RvlCodec``): counts of zeros and of non-zeros alternate, each non-zero pixel is the zig-zag coded
  difference to the previous non-zero one, and every number is written 3 bits at a time (lowest first) in
  4-bit nibbles whose top bit says "more follows", eight nibbles to a 32-bit word, first nibble highest.

The pixels are, by ``encoding``: 16UC1 / mono16 depth in millimetres (0: no depth), or, for 32FC1, quantised
inverse depth q (0: no depth) with depth = A / (q - B) metres. Out comes float32 metres, NaN where invalid, as
``aliked_ros.image_encoding.decode_depth``.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

from aliked_ros.image_encoding import MAX_PIXELS, EncodingError, compressed_size
from aliked_ros.jit import compiled

HEADER = struct.Struct("<iff")  # compressionFormat (INV_DEPTH = 0), depthParam[0] (A), depthParam[1] (B)
RVL_SIZE = struct.Struct("<II")  # width (cols), height (rows)
_MILLIMETRES = ("16uc1", "mono16")


class DepthSizeError(EncodingError):
    """A compressedDepth message that declares another size than the one expected (found before decoding)."""


_INVERSE_DEPTH = ("32fc1",)


def parse_format(format_: str) -> tuple[str, str]:
    """(encoding lower-cased, codec "png" or "rvl") of a compressedDepth ``format`` string, read as the plugin's
    decoder reads it; EncodingError for any other."""
    encoding, sep, rest = format_.partition(";")
    encoding = encoding.strip().lower()
    rest = rest.strip()
    if not sep or rest == "compressedDepth" or rest.startswith("compressedDepth png"):
        codec = "png"
    elif rest.startswith("compressedDepth rvl"):
        codec = "rvl"
    else:
        raise EncodingError(f"unsupported compressed depth format {format_!r}: expected '<encoding>; compressedDepth' "
                            "with png or rvl (compressed_depth_image_transport)")
    if encoding not in _MILLIMETRES + _INVERSE_DEPTH:
        raise EncodingError(f"compressed depth of encoding {encoding!r}: expected 16UC1 (mm) or 32FC1 (m)")
    return encoding, codec


def compressed_depth_size(format_: str, data) -> tuple[int, int]:
    """(width, height) declared by a compressedDepth message, read from its PNG or RVL header only."""
    _, codec = parse_format(format_)
    if len(data) <= HEADER.size:
        raise EncodingError(f"compressed depth of {len(data)} bytes: not even its {HEADER.size}-byte header and an image")
    image = bytes(data[HEADER.size:HEADER.size + 32])
    if codec == "png":
        size = compressed_size(image) if image[:4] == b"\x89PNG" else None
        if size is None:
            raise EncodingError("compressed depth (png) holds no PNG after its header")
    else:
        if len(image) < RVL_SIZE.size:
            raise EncodingError("compressed depth (rvl) ends inside its size")
        size = RVL_SIZE.unpack_from(image)
    if not 0 < size[0] * size[1] <= MAX_PIXELS:
        raise EncodingError(f"compressed depth declares {size[0]}x{size[1]} px (decoded: 1..{MAX_PIXELS} px)")
    return int(size[0]), int(size[1])


def decode_compressed_depth(format_: str, data, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Depth in metres (H,W) float32, NaN where invalid, from a compressedDepth message's ``format`` and ``data``
    (EncodingError for anything malformed; DepthSizeError, before decoding, for another size than
    ``expected_size`` = (width, height): a few bytes can declare millions of pixels)."""
    encoding, codec = parse_format(format_)
    data = bytes(data)
    width, height = compressed_depth_size(format_, data)
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise DepthSizeError(f"depth image is {width}x{height} px, expected {expected_size[0]}x{expected_size[1]}")
    _, quant_a, quant_b = HEADER.unpack_from(data)
    payload = data[HEADER.size:]
    if codec == "png":
        pixels = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 2 or pixels.shape != (height, width):
            raise EncodingError(f"compressed depth (png, {len(payload)} bytes): not a readable 16-bit one-channel "
                                f"{width}x{height} PNG")
    else:
        pixels = rvl_decode(payload[RVL_SIZE.size:], width * height).reshape(height, width)
    if encoding in _MILLIMETRES:
        depth = pixels.astype(np.float32) / 1000.0
    else:
        if not (np.isfinite(quant_a) and np.isfinite(quant_b) and quant_a > 0):
            raise EncodingError(f"compressed depth (32FC1) with unusable quantisation A={quant_a}, B={quant_b}")
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = (np.float32(quant_a) / (pixels.astype(np.float32) - np.float32(quant_b))).astype(np.float32)
        depth[pixels == 0] = np.nan
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def encode_compressed_depth(depth: np.ndarray, codec: str = "png", encoding: str = "16UC1",
                            depth_max: float = 10.0, quantization: float = 100.0) -> tuple[str, bytes]:
    """(format, data) of a compressedDepth message for ``depth`` in metres (NaN, 0 or negative: none), as the
    plugin's publisher writes it with its parameters ``depth_max`` and ``depth_quantization``. 16UC1: millimetres,
    rounded (the plugin takes a 16UC1 image as it is), those above ``depth_max`` dropped; 32FC1: quantised inverse
    depth, depths at or beyond ``depth_max`` dropped, as there, and those too near for 16 bits too (instead of
    wrapping)."""
    if codec not in ("png", "rvl"):
        raise ValueError(f"codec {codec!r}: png or rvl")
    depth = np.asarray(depth, np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    quant_a = quant_b = 0.0
    if encoding.lower() in _MILLIMETRES:
        millimetres = np.round(np.where(valid, depth, 0) * 1000.0)
        valid &= millimetres <= min(int(depth_max * 1000.0), 65535)
        pixels = np.where(valid, millimetres, 0).astype(np.uint16)
    elif encoding.lower() in _INVERSE_DEPTH:
        valid &= depth < depth_max
        quant_a = np.float32(quantization * (quantization + 1.0))
        quant_b = np.float32(1.0 - quant_a / np.float32(depth_max))
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = quant_a / np.where(valid, depth, 1.0) + quant_b  # the plugin's float -> ushort truncates
        valid &= inverse < 65536
        pixels = np.where(valid, inverse, 0).astype(np.uint16)
    else:
        raise ValueError(f"encoding {encoding!r}: 16UC1 or 32FC1")
    if codec == "png":
        ok, png = cv2.imencode(".png", pixels)
        if not ok:
            raise EncodingError("PNG encoding failed")
        body = png.tobytes()
    else:
        body = RVL_SIZE.pack(pixels.shape[1], pixels.shape[0]) + rvl_encode(pixels.ravel())
    return f"{encoding}; compressedDepth {codec}", HEADER.pack(0, quant_a, quant_b) + body


# --- RVL ---------------------------------------------------------------------------------------------------------

def _nibbles(stream: bytes) -> np.ndarray:
    """The stream's nibbles in the order they were written: each little-endian 32-bit word from its top nibble."""
    words = np.frombuffer(stream, np.uint8, count=len(stream) // 4 * 4).reshape(-1, 4)[:, ::-1].ravel()
    return np.stack((words >> 4, words & 0xF), axis=1).ravel()


def _vle_values(stream: bytes) -> tuple[np.ndarray, bool]:
    """The numbers of an RVL stream, in order, up to the first that is cut off by the stream's end or longer than
    11 nibbles (33 bits: no count or zig-zag delta of 16-bit pixels is that long); and whether such a long one
    ended them (the stream is corrupt from there; a decoder that needs no more numbers never reads it)."""
    nibbles = _nibbles(stream)
    last = np.flatnonzero(nibbles < 8)  # a value's last nibble has no "more follows" bit
    if last.size == 0:
        return np.zeros(0, np.int64), nibbles.size > 10
    first = np.concatenate(([0], last[:-1] + 1))
    too_long = np.flatnonzero(last - first > 10)
    if too_long.size:
        last, first = last[:too_long[0]], first[:too_long[0]]
    elif nibbles.size - last[-1] - 1 > 10:  # the cut-off tail is too long already
        too_long = np.array([last.size])
    if last.size == 0:
        return np.zeros(0, np.int64), bool(too_long.size)
    nibbles = nibbles[:last[-1] + 1]
    index = np.arange(nibbles.size, dtype=np.int32)
    starts = np.zeros(nibbles.size, np.int32)
    starts[first] = first
    place = index - np.maximum.accumulate(starts)  # the nibble's place in its number (0: lowest 3 bits)
    return np.add.reduceat((nibbles & 7).astype(np.int64) << (3 * place), first), bool(too_long.size)


_RVL_ENDS, _RVL_BEYOND, _RVL_TOO_LONG = 1, 2, 3  # the kernel's statuses (0: the image is complete)


def _rvl_decompress(words, out):  # numba: compiled()
    """``RvlCodec::DecompressRVL`` into ``out`` (uint16, zeros) from the stream's 32-bit ``words``, in one pass
    with every bound checked: (status, pixels decoded), status 0 once ``out`` is complete, else _RVL_ENDS,
    _RVL_BEYOND or _RVL_TOO_LONG."""
    num = out.shape[0]
    pixel = 0
    previous = 0
    expecting = 0  # 0: a count of zeros, 1: a count of non-zeros, 2: a pixel's zig-zag delta
    remaining = 0  # pixels left in the current non-zero run
    value = 0
    shift = 0
    for i in range(words.shape[0]):
        word = np.int64(words[i])
        for k in range(8):
            nibble = (word >> (28 - 4 * k)) & 0xF
            value |= (nibble & 7) << shift
            if nibble & 8:  # more follows
                shift += 3
                if shift > 30:
                    return _RVL_TOO_LONG, pixel
                continue
            if expecting == 0:
                if pixel + value > num:
                    return _RVL_BEYOND, pixel
                pixel += value
                expecting = 1
            elif expecting == 1:
                if pixel + value > num:
                    return _RVL_BEYOND, pixel
                remaining = value
                if value > 0:
                    expecting = 2
                else:
                    expecting = 0
                    if pixel == num:
                        return 0, pixel
            else:
                delta = (value >> 1) ^ -(value & 1)
                previous = (previous + delta) & 0xFFFF
                out[pixel] = previous
                pixel += 1
                remaining -= 1
                if remaining == 0:
                    expecting = 0
                    if pixel == num:
                        return 0, pixel
            value = 0
            shift = 0
    return _RVL_ENDS, pixel


def _rvl_kernel():
    """``_rvl_decompress`` compiled by numba, or None (numpy instead: ~15 ms for a 640 x 480 depth image)."""
    # the words as rvl_decode passes them: a read-only view of the message's bytes (numba types it apart from a
    # writable array: compiled for the other, the first depth image would compile again)
    return compiled(_rvl_decompress, (np.frombuffer(bytes(4), "<u4"), np.zeros(2, np.uint16)),
                    "RVL depth is decoded by numpy")


def prepare_kernels() -> None:
    """Compile (or load) the RVL kernel now rather than on the first depth image (~1 s the first time on a
    machine)."""
    _rvl_kernel()


def rvl_decode(stream: bytes, num_pixels: int) -> np.ndarray:
    """``num_pixels`` uint16 pixels from an RVL stream (EncodingError where it does not hold exactly that)."""
    kernel = _rvl_kernel()
    if kernel is not None:
        out = np.zeros(num_pixels, np.uint16)
        status, pixel = kernel(np.frombuffer(stream, "<u4", count=len(stream) // 4), out)
        if status == 0:
            return out
        raise EncodingError({_RVL_ENDS: f"compressed depth (rvl): the stream ends after {pixel} of {num_pixels} pixels",
                             _RVL_BEYOND: f"compressed depth (rvl): runs beyond the image's {num_pixels} pixels",
                             _RVL_TOO_LONG: "compressed depth (rvl): a number longer than 32 bits; the stream is "
                                            "corrupt"}[status])
    return rvl_decode_numpy(stream, num_pixels)


def rvl_decode_numpy(stream: bytes, num_pixels: int) -> np.ndarray:
    """``rvl_decode`` without numba (the same pixels and errors)."""
    numbers, too_long = _vle_values(stream)
    values = numbers.tolist()  # the run loop below reads a list (numpy scalars are slow one at a time)
    runs_at, runs_from, runs_length = [], [], []  # per non-zero run: its first pixel, first value, length

    def ended(pixel: int) -> EncodingError:
        if too_long:
            return EncodingError("compressed depth (rvl): a number longer than 32 bits; the stream is corrupt")
        return EncodingError(f"compressed depth (rvl): the stream ends after {pixel} of {num_pixels} pixels")

    pixel = index = 0
    while pixel < num_pixels:
        if index + 1 > len(values):
            raise ended(pixel)
        pixel += values[index]  # zeros
        if pixel > num_pixels:
            raise EncodingError(f"compressed depth (rvl): runs beyond the image's {num_pixels} pixels")
        if index + 2 > len(values):
            raise ended(pixel)
        nonzeros = values[index + 1]
        index += 2
        if pixel + nonzeros > num_pixels:
            raise EncodingError(f"compressed depth (rvl): runs beyond the image's {num_pixels} pixels")
        if index + nonzeros > len(values):
            raise ended(pixel + len(values) - index)  # the run's pixels the stream still held
        if nonzeros:
            runs_at.append(pixel)
            runs_from.append(index)
            runs_length.append(nonzeros)
        pixel += nonzeros
        index += nonzeros
    out = np.zeros(num_pixels, np.uint16)
    if runs_length:
        lengths = np.asarray(runs_length)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        zigzag = numbers[np.repeat(runs_from, lengths) + offsets]
        deltas = (zigzag >> 1) ^ -(zigzag & 1)
        out[np.repeat(runs_at, lengths) + offsets] = (np.cumsum(deltas) & 0xFFFF).astype(np.uint16)
    return out


def rvl_encode(pixels: np.ndarray) -> bytes:
    """The RVL stream of uint16 ``pixels`` (1-D), as ``RvlCodec::CompressRVL`` writes it."""
    pixels = np.asarray(pixels, np.uint16).ravel()
    nonzero = pixels != 0
    edges = np.flatnonzero(np.diff(nonzero.astype(np.int8))) + 1
    starts = np.concatenate(([0], edges))
    lengths = np.diff(np.concatenate((starts, [pixels.size])))
    if pixels.size and nonzero[0]:  # runs alternate zeros, non-zeros, starting with zeros
        lengths = np.concatenate(([0], lengths))
    if lengths.size % 2:
        lengths = np.concatenate((lengths, [0]))
    zeros, nonzeros = lengths[0::2], lengths[1::2]
    values_nonzero = pixels[nonzero].astype(np.int64)
    deltas = np.diff(np.concatenate(([0], values_nonzero)))
    zigzag = (deltas << 1) ^ (deltas >> 31)
    # the stream: per pair, zeros, nonzeros, then that run's zig-zag deltas
    heads = 2 * np.arange(zeros.size) + np.concatenate(([0], np.cumsum(nonzeros)[:-1]))
    values = np.empty(2 * zeros.size + zigzag.size, np.int64)
    is_head = np.zeros(values.size, bool)
    is_head[heads] = is_head[heads + 1] = True
    values[heads], values[heads + 1] = zeros, nonzeros
    values[~is_head] = zigzag
    # each value: 3 bits per nibble, lowest first, top bit set on all but its last nibble
    bits = np.ones(values.size, np.int64)
    for place in range(1, 12):
        bits += (values >> (3 * place)) > 0
    value_of = np.repeat(np.arange(values.size), bits)
    place = np.arange(value_of.size) - np.repeat(np.cumsum(bits) - bits, bits)
    nibbles = (values[value_of] >> (3 * place)) & 7
    nibbles |= np.where(place < bits[value_of] - 1, 8, 0)
    nibbles = np.concatenate((nibbles, np.zeros(-nibbles.size % 8, np.int64))).reshape(-1, 8)
    words = (nibbles << np.arange(28, -1, -4)).sum(axis=1).astype("<u4")
    return words.tobytes()
