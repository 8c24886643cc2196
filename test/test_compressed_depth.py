"""Depth in compressed_depth_image_transport's ``compressedDepth`` format (png and rvl): the wire format against
messages built by hand from the plugin's definition, real depth through both codecs, malformed messages, and a
RealSense-style bag (colour raw, depth compressed) read as RGB-D. The node's side: test_node.py."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from aliked_ros.compressed_depth import (_rvl_kernel, compressed_depth_size, decode_compressed_depth,
                                         encode_compressed_depth, parse_format, rvl_decode, rvl_decode_numpy,
                                         rvl_encode)
from aliked_ros.datasets import open_sequence
from aliked_ros.datasets.bag_writer import write_bag
from aliked_ros.image_encoding import EncodingError
from aliked_ros.odometry import Frame, VisualOdometry
from aliked_ros.tools.eval import run_offline

def _rvl_compress_reference(pixels) -> bytes:
    """RvlCodec::CompressRVL, statement by statement (32-bit ints), as the oracle for the vectorised encoder."""
    words, state = [], {"word": 0, "nibbles": 0}

    def encode_vle(value: int) -> None:
        while True:
            nibble = value & 0x7
            value >>= 3
            if value:
                nibble |= 0x8
            state["word"] = ((state["word"] << 4) | nibble) & 0xFFFFFFFF
            state["nibbles"] += 1
            if state["nibbles"] == 8:
                words.append(state["word"])
                state["word"] = state["nibbles"] = 0
            if not value:
                break

    i, previous, n = 0, 0, len(pixels)
    while i != n:
        zeros = 0
        while i != n and not pixels[i]:
            i, zeros = i + 1, zeros + 1
        encode_vle(zeros)
        nonzeros = 0
        while i + nonzeros != n and pixels[i + nonzeros]:
            nonzeros += 1
        encode_vle(nonzeros)
        for _ in range(nonzeros):
            current = int(pixels[i])
            i += 1
            delta = current - previous
            encode_vle(((delta << 1) ^ (delta >> 31)) & 0xFFFFFFFF)
            previous = current
    if state["nibbles"]:
        words.append((state["word"] << 4 * (8 - state["nibbles"])) & 0xFFFFFFFF)
    return struct.pack(f"<{len(words)}I", *words)


# RvlCodec on [0, 0, 5, 7, 0], worked by hand: zeros 2 -> nibble 2; non-zeros 2 -> 2; 5 - 0 zig-zags to 10 =
# 0b1_010 -> nibbles 0xA (010, more follows), 0x1; 7 - 5 -> 4; zeros 1 -> 1; non-zeros 0 -> 0. Seven nibbles
# 2 2 A 1 4 1 0, first in the top of the word, the last word shifted up: 0x22A14100, little-endian.
RVL_EXAMPLE = ([0, 0, 5, 7, 0], bytes.fromhex("0041a122"))


def _header(quant_a: float = 0.0, quant_b: float = 0.0) -> bytes:
    return struct.pack("<iff", 0, quant_a, quant_b)  # ConfigHeader {INV_DEPTH, depthParam[2]}


def test_rvl_matches_the_plugins_codec():
    pixels, stream = RVL_EXAMPLE
    assert rvl_encode(np.array(pixels, np.uint16)) == stream
    assert rvl_decode(stream, len(pixels)).tolist() == pixels
    assert _rvl_compress_reference(pixels) == stream
    rng = np.random.default_rng(3)
    for size in (1, 2, 9, 1000):  # runs of every kind, negative deltas, deltas across the whole 16-bit range
        for _ in range(20):
            pixels = rng.integers(0, 65536, size).astype(np.uint16)
            pixels[rng.random(size) < 0.4] = 0
            stream = rvl_encode(pixels)
            assert stream == _rvl_compress_reference(pixels.tolist())
            assert np.array_equal(rvl_decode(stream, size), pixels)


def test_rvl_kernel_and_numpy_decode_alike():
    """The numba kernel (the default) and the numpy path (without numba) give the same pixels, and refuse the
    same streams with the same reason: valid ones, and corrupt ones (a byte changed, cut short, random bytes)."""
    assert _rvl_kernel() is not None, "numba is a dependency: its RVL kernel must compile"
    rng = np.random.default_rng(7)
    for trial in range(3000):
        pixels = rng.integers(0, 65536, 50).astype(np.uint16)
        pixels[rng.random(50) < 0.4] = 0
        stream = bytearray(rvl_encode(pixels))
        kind = trial % 4
        if kind == 1:
            stream[rng.integers(len(stream))] = rng.integers(256)
        elif kind == 2:
            stream = stream[:rng.integers(len(stream) + 1)]
        elif kind == 3:
            stream = bytearray(rng.integers(0, 256, rng.integers(0, 64)).astype(np.uint8).tobytes())
        size = 50 if kind == 0 else int(rng.integers(1, 80))
        outcomes = []
        for decode in (rvl_decode, rvl_decode_numpy):
            try:
                outcomes.append(decode(bytes(stream), size).tolist())
            except EncodingError as error:
                outcomes.append(str(error))
        assert outcomes[0] == outcomes[1], (trial, bytes(stream).hex(), size)
        if kind == 0:
            assert outcomes[0] == pixels.tolist()


def test_hand_built_messages_decode_as_the_plugin_defines():
    millimetres = np.array([[0, 500, 1234], [65535, 1, 0]], np.uint16)
    ok, png = cv2.imencode(".png", millimetres)
    for format_ in ("16UC1; compressedDepth png", "16UC1; compressedDepth"):  # the ROS 1 / older ROS 2 format
        depth = decode_compressed_depth(format_, _header() + png.tobytes())
        expected = np.where(millimetres > 0, millimetres / 1000.0, np.nan).astype(np.float32)
        np.testing.assert_array_equal(depth, expected)
    rvl = _header() + struct.pack("<II", 3, 2) + rvl_encode(millimetres.ravel())
    assert compressed_depth_size("16UC1; compressedDepth rvl", rvl) == (3, 2)
    np.testing.assert_array_equal(decode_compressed_depth("16UC1; compressedDepth rvl", rvl), expected)
    # 32FC1: quantised inverse depth with the plugin's defaults (depth_max 10 m, depth_quantization 100)
    quant_a = 100.0 * 101.0
    quant_b = 1.0 - quant_a / 10.0
    inverse = np.array([[0, 1, 19191], [10100, 2000, 0]], np.uint16)
    ok, png = cv2.imencode(".png", inverse)
    depth = decode_compressed_depth("32FC1; compressedDepth png", _header(quant_a, quant_b) + png.tobytes())
    expected = np.where(inverse > 0, np.float32(quant_a) / (inverse.astype(np.float32) - np.float32(quant_b)), np.nan)
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    assert depth[0, 1] == pytest.approx(10.0) and depth[0, 2] == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("codec", ["png", "rvl"])
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_real_depth_through_each_codec(shared_dir, codec, encoding):
    depth = next(iter(open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd"))).depth
    format_, data = encode_compressed_depth(depth, codec, encoding)
    assert format_ == f"{encoding}; compressedDepth {codec}" and len(data) < depth.size
    decoded = decode_compressed_depth(format_, data)
    assert decoded.shape == depth.shape and decoded.dtype == np.float32
    dropped = np.round(depth * 1000) > 10000 if encoding == "16UC1" else depth >= 10.0  # beyond depth_max
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(depth) | dropped)
    # millimetres: half a millimetre; inverse depth: its quantum at 10 m is 1 cm, finer nearer
    bound = 0.0005 if encoding == "16UC1" else np.nanmax(depth) ** 2 / (100 * 101)
    assert np.nanmax(np.abs(decoded - depth)) <= bound * 1.0001


def test_malformed_messages_are_refused_with_a_reason():
    format_, data = encode_compressed_depth(np.full((4, 6), 1.5, np.float32), "rvl")
    cases = [
        ("16UC1; compressedDepth jpeg", data, "unsupported compressed depth format"),
        ("rgb8; compressedDepth png", data, "expected 16UC1"),
        (format_, data[:12], "not even its 12-byte header"),
        (format_, data[:15], "ends inside its size"),
        (format_, data[:20], "the stream ends after"),
        (format_, data[:12] + struct.pack("<II", 1 << 16, 1 << 16) + data[20:], "declares 65536x65536 px"),
        (format_, data[:12] + struct.pack("<II", 3, 4) + data[20:], "runs beyond the image"),
        ("16UC1; compressedDepth png", data, "holds no PNG"),
        ("32FC1; compressedDepth rvl", _header(float("nan"), 1.0) + data[12:], "unusable quantisation"),
    ]
    ok, eight_bit = cv2.imencode(".png", np.zeros((4, 6), np.uint8))
    cases.append(("16UC1; compressedDepth png", _header() + eight_bit.tobytes(), "not a readable 16-bit"))
    for format_case, data_case, message in cases:
        with pytest.raises(EncodingError, match=message):
            decode_compressed_depth(format_case, data_case)
    with pytest.raises(EncodingError):
        parse_format("png")
    rng = np.random.default_rng(0)  # corrupt streams: an EncodingError or an image, never another exception
    for _ in range(300):
        corrupt = bytearray(data)
        corrupt[20 + rng.integers(len(data) - 20)] = rng.integers(256)
        try:
            assert decode_compressed_depth(format_, bytes(corrupt)).shape == (4, 6)
        except EncodingError:
            pass


class _MillimetreDepth:
    """The sequence's frames with their depth rounded to millimetres (what a 16UC1 depth camera sends)."""

    def __init__(self, sequence, count: int) -> None:
        self.frames = [Frame(f.image, f.stamp, f.camera, np.where(np.round(f.depth * 1000) <= 10000,
                                                                    np.round(f.depth * 1000) / 1000,
                                                                    np.nan).astype(np.float32))
                       for f, _ in zip(sequence, range(count))]
        self.name = getattr(sequence, "name", "frames")

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)


@pytest.mark.parametrize("codec, ros1", [("rvl", False), ("png", True)], ids=["rvl-ros2", "png-ros1"])
def test_realsense_style_bag_with_compressed_depth(shared_dir, tmp_path, extractor_cache, codec, ros1):
    """Colour raw, depth on .../aligned_depth_to_color/image_raw/compressedDepth (as a RealSense bag recorded
    with image_transport's topics): found as the depth topic, decoded, and posed as the same frames with
    millimetre depth."""
    folder = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    topics = {"image": "/camera/color/image_raw", "camera_info": "/camera/color/camera_info",
              "depth": "/camera/aligned_depth_to_color/image_raw"}
    bag = open_sequence(write_bag(folder, tmp_path / ("rs.bag" if ros1 else "rs"), ros1=ros1, topics=topics,
                                  compressed_depth=codec))
    assert bag.has_depth and bag.depth_topic == "/camera/aligned_depth_to_color/image_raw/compressedDepth"
    expected = _MillimetreDepth(folder, 10)
    for got, want in zip(bag, expected.frames):
        np.testing.assert_array_equal(got.depth, want.depth)
    extractor = extractor_cache("orb")
    from_bag = run_offline(bag, VisualOdometry(extractor), max_frames=10, progress=False)
    reference = run_offline(expected, VisualOdometry(extractor), progress=False)
    np.testing.assert_allclose(from_bag.trajectory.poses, reference.trajectory.poses, atol=1e-9)
    assert np.linalg.norm(from_bag.trajectory.poses[-1][:3, 3]) > 0.005  # metric motion, not a standstill


def _write_realsense_bag(path, frames, raw: bool, empty: tuple[str, ...] = ()):
    """A bag as ``ros2 bag record -a`` keeps a RealSense (realsense-ros 4.x names): each image raw and as
    image_transport's compressed and compressedDepth topics, and three camera_infos; the depth camera's own
    camera_info differs from the colour one. ``raw``: with the raw image topics; ``empty``: topics recorded
    without a message."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from aliked_ros.datasets.bag_writer import camera_info_message

    store = get_typestore(Stores.ROS2_KILTED)
    Image, Compressed = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CompressedImage"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    colour, depth, aligned = ("/camera/camera/color/image_raw", "/camera/camera/depth/image_rect_raw",
                              "/camera/camera/aligned_depth_to_color/image_raw")
    topics = {f"{colour}/compressed": Compressed, f"{colour}/compressedDepth": Compressed,
              f"{depth}/compressed": Compressed, f"{depth}/compressedDepth": Compressed,
              f"{aligned}/compressed": Compressed, f"{aligned}/compressedDepth": Compressed,
              **({colour: Image, depth: Image, aligned: Image} if raw else {}),
              **{f"/camera/camera/{name}/camera_info": store.types["sensor_msgs/msg/CameraInfo"]
                 for name in ("color", "depth", "aligned_depth_to_color")}}
    with Writer(path, version=9) as writer:
        connections = {topic: writer.add_connection(topic, kind.__msgtype__, typestore=store)
                       for topic, kind in topics.items()}
        for frame in frames:
            ns = int(round(frame.stamp * 1e9))
            header = Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id="camera")
            millimetres = np.where(np.isfinite(frame.depth), np.round(frame.depth * 1000), 0).astype("<u2")
            depth_format, depth_data = encode_compressed_depth(frame.depth, "rvl")
            png = cv2.imencode(".png", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))[1].reshape(-1)
            messages = {
                colour: Image(header=header, height=480, width=640, encoding="rgb8", is_bigendian=0, step=1920,
                              data=frame.image.reshape(-1)),
                f"{colour}/compressed": Compressed(header=header, format="rgb8; png compressed bgr8", data=png),
                f"{depth}/compressedDepth": Compressed(header=header, format=depth_format,
                                                       data=np.frombuffer(depth_data, np.uint8)),
                f"{aligned}/compressedDepth": Compressed(header=header, format=depth_format,
                                                         data=np.frombuffer(depth_data, np.uint8))}
            for topic in (depth, aligned):
                messages[topic] = Image(header=header, height=480, width=640, encoding="16UC1", is_bigendian=0,
                                        step=1280, data=millimetres.view(np.uint8).reshape(-1))
            for name in ("color", "depth", "aligned_depth_to_color"):
                camera = frame.camera if name != "depth" else type(frame.camera)(
                    frame.camera.width, frame.camera.height, 0.9 * frame.camera.fx, 0.9 * frame.camera.fy,
                    frame.camera.cx, frame.camera.cy)
                messages[f"/camera/camera/{name}/camera_info"] = camera_info_message(store, camera, header, False)
            for topic, message in messages.items():
                if topic in connections and topic not in empty:
                    writer.write(connections[topic], ns, store.serialize_cdr(message, message.__msgtype__))
    return path


def test_realsense_bag_recorded_with_all_topics(shared_dir, tmp_path):
    """``ros2 bag record -a`` of a RealSense: the raw colour image and the colour camera's camera_info, the
    depth registered to it; recorded with compressed topics only: the colour camera's compressed image (its
    camera_info still the colour one) and the registered compressedDepth, also when its raw topic was recorded
    empty."""
    folder = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    frames = [frame for frame, _ in zip(folder, range(3))]
    everything = open_sequence(_write_realsense_bag(tmp_path / "all", frames, raw=True))
    assert (everything.image_topic, everything.camera_info_topic, everything.depth_topic) == (
        "/camera/camera/color/image_raw", "/camera/camera/color/camera_info",
        "/camera/camera/aligned_depth_to_color/image_raw")
    compressed = open_sequence(_write_realsense_bag(tmp_path / "compressed", frames, raw=False))
    empty_raw = open_sequence(_write_realsense_bag(tmp_path / "empty_raw", frames, raw=True,
                                                   empty=("/camera/camera/color/image_raw",
                                                          "/camera/camera/aligned_depth_to_color/image_raw")))
    for bag in (compressed, empty_raw):
        assert (bag.image_topic, bag.camera_info_topic, bag.depth_topic) == (
            "/camera/camera/color/image_raw/compressed", "/camera/camera/color/camera_info",
            "/camera/camera/aligned_depth_to_color/image_raw/compressedDepth")
        assert bag.camera == folder.camera and len(bag) == 3
    expected = _MillimetreDepth(frames, 3).frames
    for bag in (everything, compressed):
        for got, want in zip(bag, expected, strict=True):
            np.testing.assert_array_equal(got.image, want.image)
            np.testing.assert_array_equal(got.depth, want.depth)


def test_a_compressed_depth_of_another_size_is_skipped_before_decoding(shared_dir, tmp_path, capsys):
    """A bag's compressedDepth message that declares another size than the camera (a few bytes can declare
    millions of pixels) is skipped and counted, not decoded."""
    from aliked_ros.datasets.rosbag import decode_depth_message

    format_, data = encode_compressed_depth(np.zeros((2, 2), np.float32), "rvl")  # all invalid: a tiny stream
    huge = data[:12] + struct.pack("<II", 8192, 8192) + data[20:]
    message = type("Message", (), {"format": format_, "data": huge})()
    with pytest.raises(EncodingError, match="8192x8192 px, expected 640x480"):
        decode_depth_message(message, "sensor_msgs/msg/CompressedImage", (640, 480))


def test_which_bag_topics_are_depth():
    """image_transport advertises every plugin's topic beside every image: the colour camera's compressedDepth
    and the depth camera's JPEG-compressed topic are not depth."""
    from aliked_ros.datasets.rosbag import is_depth_topic

    compressed, raw = "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image"
    assert is_depth_topic("/camera/aligned_depth_to_color/image_raw/compressedDepth", compressed)
    assert is_depth_topic("/camera/depth/image_rect_raw", raw)
    assert not is_depth_topic("/camera/color/image_raw/compressedDepth", compressed)
    assert not is_depth_topic("/camera/depth/image_rect_raw/compressed", compressed)
    assert not is_depth_topic("/camera/depth/image_rect_raw/compressedDepth/extra", compressed)
