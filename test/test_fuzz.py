"""Fuzzing the node's inputs: property-based tests (hypothesis, bounded and derandomised) of every conversion from a
ROS message and of ``VisualOdometry.process`` on random and corrupt frames: each either gives a valid result or
raises the module's own error (an ``AlikedRosError``), never another exception, and huge declared sizes are
refused before anything is allocated. Then over the wire: 2,000 malformed messages (fixed seed) into the live
node: it survives, accounts for every image in /diagnostics, and still tracks a good sequence afterwards."""
from __future__ import annotations

import random
import struct
import tracemalloc
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from aliked_ros.compressed_depth import decode_compressed_depth, encode_compressed_depth
from aliked_ros.errors import AlikedRosError
from aliked_ros.features import ExtractorConfig, create_extractor
from aliked_ros.geometry.camera import DISTORTION_MODELS, CameraModel
from aliked_ros.image_encoding import EncodingError, decode_compressed, decode_depth, decode_image
from aliked_ros.odometry import Frame, FrameResult, OdometryConfig, VisualOdometry
from aliked_ros.ros.decoding import (CameraCache, CameraInfoError, depth_from_message, frame_from_messages,
                                     image_from_message, rejection)

BOUNDED = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3", "16UC1", "32FC1", "yuv422",
             "bayer_rggb8", "", "RGB8", "64FC1", "rgb16"]
SIZES = st.one_of(st.integers(0, 40), st.sampled_from([2**16, 2**31 - 1, 2**32 - 1]))
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


def _row_bytes(encoding: str, width: int) -> int:
    per_pixel = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono16": 2, "16uc1": 2, "32fc1": 4, "8uc3": 3}
    return width * per_pixel.get(encoding.lower(), 1)


@st.composite
def image_fields(draw, encodings=ENCODINGS):
    encoding = draw(st.sampled_from(encodings))
    height, width = draw(SIZES), draw(SIZES)
    row = _row_bytes(encoding, width)
    step = draw(st.one_of(st.just(row), st.integers(0, max(0, row - 1)), st.integers(row, row + 16),
                          st.sampled_from([0, 2**32 - 1])))
    needed = step * max(0, height - 1) + row
    length = draw(st.one_of(st.just(min(needed, 100_000)), st.integers(0, min(needed + 8, 100_000))))
    data = draw(st.binary(min_size=min(length, 4096), max_size=min(length, 4096)))
    data = data * (length // max(1, len(data))) + data[: length % max(1, len(data))] if data else bytes(length)
    return encoding, height, width, step, data, draw(st.booleans())


@BOUNDED
@given(image_fields())
def test_decode_image_gives_an_image_or_an_encoding_error(fields):
    encoding, height, width, step, data, big_endian = fields
    try:
        image = decode_image(encoding, height, width, step, data, big_endian)
    except EncodingError:
        return
    assert image.dtype == np.uint8 and image.shape[:2] == (height, width) and image.ndim in (2, 3)
    assert image.ndim == 2 or image.shape[2] == 3


@BOUNDED
@given(image_fields(["16UC1", "32FC1", "mono16", "rgb8", "32FC2"]))
def test_decode_depth_gives_metres_or_an_encoding_error(fields):
    encoding, height, width, step, data, big_endian = fields
    try:
        depth = decode_depth(encoding, height, width, step, data, big_endian)
    except EncodingError:
        return
    assert depth.dtype == np.float32 and depth.shape == (height, width)
    valid = ~np.isnan(depth)
    assert np.isfinite(depth[valid]).all() and (depth[valid] > 0).all()  # NaN, inf, 0, negative -> NaN


@BOUNDED
@given(st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e-30, 1.5, 3e38]), min_size=1, max_size=64),
       st.booleans())
def test_depth_32fc1_non_finite_values_become_nan(values, big_endian):
    metres = np.array(values, np.float32).reshape(1, -1)
    depth = decode_depth("32FC1", 1, metres.shape[1], metres.nbytes,
                         metres.astype(">f4" if big_endian else "<f4").tobytes(), big_endian)
    expected = np.where(np.isfinite(metres) & (metres > 0), metres, np.nan)
    np.testing.assert_array_equal(depth, expected)


def test_huge_declared_sizes_are_refused_before_allocating():
    tracemalloc.start()
    try:
        for encoding in ("rgb8", "mono16", "32FC1"):
            with pytest.raises(EncodingError):
                decode_image(encoding, 2**32 - 1, 2**32 - 1, 2**32 - 1, b"\0" * 64)
            with pytest.raises(EncodingError):
                decode_image(encoding, 100_000, 100_000, 400_000, b"\0" * 64)
        with pytest.raises(EncodingError):
            decode_depth("32FC1", 2**31, 4, 16, b"\0" * 64)
        png = _png(np.zeros((4, 4), np.uint8))  # a real PNG whose header claims 100000 x 100000 px
        huge = png[:16] + (100_000).to_bytes(4, "big") * 2 + png[24:]
        with pytest.raises(EncodingError, match="declares 100000x100000"):
            decode_compressed("png", huge)
        format_, rvl = encode_compressed_depth(np.ones((2, 2), np.float32), "rvl")  # compressedDepth, RVL
        with pytest.raises(EncodingError, match="declares 100000x100000"):
            decode_compressed_depth(format_, rvl[:12] + struct.pack("<II", 100_000, 100_000) + rvl[20:])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


VALID_COMPRESSED = [_png(np.full((6, 5, 3), 7, np.uint8)), _jpeg(np.full((16, 12, 3), 200, np.uint8)),
                    _png(np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000), _png(np.zeros((3, 3, 4), np.uint8))]


@st.composite
def compressed_data(draw):
    kind = draw(st.sampled_from(["random", "mutated", "truncated", "header"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(VALID_COMPRESSED)))
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "header" and data[:4] == b"\x89PNG":  # another size in the header
        data[16:24] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big") + draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
        return bytes(data)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@BOUNDED
@given(compressed_data(), st.sampled_from(["png", "jpeg", "", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth"]),
       st.one_of(st.none(), st.tuples(st.integers(0, 20), st.integers(0, 20))))
def test_decode_compressed_gives_an_image_or_an_error(data, fmt, expected_size):
    msg = CompressedImage(format=fmt, data=data)
    camera = None if expected_size is None or 0 in expected_size else SimpleNamespace(width=expected_size[0],
                                                                                      height=expected_size[1])
    try:
        image = image_from_message(msg, camera)
    except AlikedRosError as error:
        assert rejection(error)[0] in ("bad_encoding", "size_mismatch")
        return
    assert image.dtype == np.uint8 and image.ndim in (2, 3) and image.size > 0
    if camera is not None:
        assert image.shape[1::-1][:2] == (camera.width, camera.height)


VALID_COMPRESSED_DEPTH = [encode_compressed_depth(np.linspace(0.4, 12, 30, dtype=np.float32).reshape(5, 6), codec,
                                                  encoding)
                          for codec in ("png", "rvl") for encoding in ("16UC1", "32FC1")]


@st.composite
def compressed_depth_messages(draw):
    format_, data = draw(st.sampled_from(VALID_COMPRESSED_DEPTH))
    data = bytearray(data)
    kind = draw(st.sampled_from(["random", "mutated", "truncated", "size", "format"]))
    if kind == "random":
        data = bytearray(draw(st.binary(max_size=256)))
    elif kind == "truncated":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "size" and "rvl" in format_:  # another size in the RVL header
        data[12:20] = struct.pack("<II", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
    elif kind == "format":
        format_ = draw(st.sampled_from(["16UC1; compressedDepth", "32FC1; compressedDepth rvl", "png", "",
                                        "8UC3; compressedDepth png", "16UC1; compressedDepth jpeg"]))
    else:
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return CompressedImage(format=format_, data=bytes(data))


@BOUNDED
@given(compressed_depth_messages(), st.sampled_from([None, (6, 5), (5, 6)]))
def test_compressed_depth_gives_metres_or_a_counted_kind(msg, size):
    try:
        depth = depth_from_message(msg, size)
    except AlikedRosError as error:
        assert rejection(error)[0] in ("bad_encoding", "bad_depth")
        return
    assert depth.dtype == np.float32 and depth.ndim == 2 and depth.size > 0
    assert not (depth <= 0).any() and not np.isinf(depth).any()
    if size is not None:
        assert depth.shape[::-1] == size


@st.composite
def camera_infos(draw):
    model = draw(st.sampled_from([*DISTORTION_MODELS, "radtan", "fisheye", "none", "", "unknown", "equidistant "]))
    msg = CameraInfo(width=draw(st.integers(0, 2**32 - 1)), height=draw(st.integers(0, 2**32 - 1)),
                     distortion_model=model)
    k = draw(st.one_of(st.lists(FLOATS, min_size=9, max_size=9),
                       st.just([0.0] * 9),
                       st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)).map(
                           lambda f: [f[0], 0, 320, 0, f[1], 240, 0, 0, 1])))
    msg.k = [float(v) for v in k]
    msg.d = draw(st.lists(FLOATS, max_size=14))
    return msg


@BOUNDED
@given(camera_infos())
def test_camera_info_gives_a_valid_model_or_a_calibration_error(msg):
    try:
        camera = CameraCache().model(msg)
    except CameraInfoError:
        return
    assert isinstance(camera, CameraModel) and camera.fx > 0 and camera.fy > 0 and camera.width > 0
    assert np.isfinite([camera.fx, camera.fy, camera.cx, camera.cy, *camera.distortion]).all()
    pixels = np.array([[0.0, 0.0], [camera.cx, camera.cy], [camera.width - 1.0, camera.height - 1.0]])
    assert camera.undistort(pixels).shape == (3, 2)  # may hold NaN for wild distortion, but does not raise


@BOUNDED
@given(st.builds(lambda e, h, w, bigendian, step, n: Image(encoding=e, height=h, width=w, is_bigendian=bigendian,
                                                         step=step, data=bytes(n)),
                 st.sampled_from(ENCODINGS), SIZES, SIZES, st.integers(0, 1), st.integers(0, 2**32 - 1),
                 st.integers(0, 4096)),
       st.one_of(st.none(), st.builds(lambda e, h, w, n: Image(encoding=e, height=h, width=w, step=w * 4,
                                                               data=bytes(n)),
                                      st.sampled_from(["32FC1", "16UC1", "bgr8"]), st.integers(0, 12),
                                      st.integers(0, 12), st.integers(0, 600))))
def test_frame_from_messages_gives_a_frame_or_a_counted_kind(image, depth):
    camera = CameraModel(12, 10, 10.0, 10.0, 6.0, 5.0)
    try:
        frame, warnings = frame_from_messages(image, depth, camera, 1.0)
    except AlikedRosError as error:
        assert rejection(error)[0] in ("bad_encoding", "size_mismatch", "bad_depth")
        return
    assert frame.image.shape[:2] == (10, 12) and set(warnings) <= {"depth_all_invalid"}
    assert frame.depth is None or frame.depth.shape == (10, 12)


# --- VisualOdometry.process on random and corrupt frames ---------------------------------------------------------

_ORB = {}


def orb():
    if "orb" not in _ORB:
        _ORB["orb"] = create_extractor("orb", ExtractorConfig(device="cpu", max_keypoints=300))
    return _ORB["orb"]


def _scene(shared_dir_path) -> list[Frame]:
    from aliked_ros.datasets import open_sequence

    frames = []
    for frame in list(open_sequence(shared_dir_path / "data/tum_fr2_desk"))[:6]:
        small = cv2.resize(frame.image, (160, 120), interpolation=cv2.INTER_AREA)
        c = frame.camera
        camera = CameraModel(160, 120, c.fx / 4, c.fy / 4, c.cx / 4, c.cy / 4)
        frames.append(Frame(small, frame.stamp, camera))
    return frames


@st.composite
def frame_sequences(draw, scene):
    """1..6 frames: real ones (160x120) in order, or corrupt ones (odd sizes, 1x1, empty, wrong dtype or channels,
    noise, NaN/inf or mis-sized depth, camera of another size, repeated or backwards stamps)."""
    frames, stamp = [], 100.0
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["real", "real", "noise", "odd", "tiny", "empty", "dtype", "channels", "depth",
                                     "camera", "repeat", "backwards"]))
        base = scene[draw(st.integers(0, len(scene) - 1))]
        stamp += draw(st.sampled_from([0.05, 0.1, 1.0]))
        image, camera, depth, at = base.image, base.camera, None, stamp
        if kind == "noise":
            image = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 256, image.shape, np.uint8)
        elif kind in ("odd", "tiny", "empty"):
            h, w = {"odd": (draw(st.integers(1, 37)), draw(st.integers(1, 37))), "tiny": (1, 1), "empty": (0, 0)}[kind]
            image = np.zeros((h, w, 3), np.uint8)
            camera = CameraModel(max(w, 1), max(h, 1), 10.0, 10.0, w / 2, h / 2) if draw(st.booleans()) else camera
        elif kind == "dtype":
            image = image.astype(draw(st.sampled_from([np.float32, np.uint16, np.int8, np.float64])))
        elif kind == "channels":
            image = np.zeros((120, 160, draw(st.sampled_from([2, 4, 5]))), np.uint8)
        elif kind == "depth":
            shape = draw(st.sampled_from([(120, 160), (60, 80), (120, 160, 1)]))
            fill = draw(st.sampled_from([np.nan, np.inf, -1.0, 0.0, 1.5]))
            depth = np.full(shape, fill, draw(st.sampled_from([np.float32, np.float64, np.uint16])))
        elif kind == "camera":
            camera = CameraModel(320, 240, base.camera.fx, base.camera.fy, 160, 120)
        elif kind == "repeat":
            at = frames[-1].stamp if frames else stamp
        elif kind == "backwards":
            at = stamp - 50.0
        frames.append(Frame(image, at, camera, depth))
    return frames


@pytest.fixture(scope="module")
def scene(shared_dir):
    return _scene(shared_dir)


def test_process_gives_a_result_or_a_module_error(scene):
    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(frame_sequences(scene))
    def run(frames):
        vo = VisualOdometry(orb(), OdometryConfig())
        for frame in frames:
            map_id, resets = vo.map_id, vo.resets
            try:
                result = vo.process(frame)
            except AlikedRosError:
                assert (vo.map_id, vo.resets) == (map_id, resets), "a refused frame reset the pipeline"
                continue
            assert isinstance(result, FrameResult)
            assert result.T_odom_camera is None or np.isfinite(result.T_odom_camera).all()

    run()


def test_a_bad_frame_stamped_backwards_does_not_reset_the_pipeline(scene):
    """The issue's case: time going backwards resets the pipeline, but only for a frame that is processed."""
    vo = VisualOdometry(orb(), OdometryConfig())
    for frame in scene[:3]:
        vo.process(frame)
    tiny = Frame(np.zeros((4, 4, 3), np.uint8), scene[0].stamp - 1.0, CameraModel(4, 4, 4.0, 4.0, 2.0, 2.0))
    with pytest.raises(AlikedRosError):
        vo.process(tiny)
    assert vo.resets == 0 and vo.map_id == 0


# --- over the wire ---------------------------------------------------------------------------------------------------


def malformed_messages(count: int, seed: int, camera: CameraModel, base_stamp: float):
    """``count`` (topic, message) pairs, in groups of camera_info, depth, image with one stamp (drivers publish
    them together; the depth lets the image past the pairing so that its own fields are what is tested):
    images of every encoding with wrong, odd, huge or short sizes and steps, big-endian flags; depth of every
    encoding with NaN/inf/negative values and wrong sizes; camera_info with NaN/inf/negative/zero K, every
    distortion model with wrong coefficient counts, zero or huge sizes; stamps repeated, backwards or zero;
    sometimes a message of the group is left out. About 1 image in 15 is a well-formed 640x480 noise frame, so
    that frames reach the depth checks and the VO too."""
    from std_msgs.msg import Header
    from vo_graph import camera_info_msg, stamp_of

    rng = random.Random(seed)
    stamp, emitted = base_stamp, 0
    while emitted < count:
        stamp += rng.choice([0.0, 0.001, 0.033, 0.033, 0.1, -0.5, -100.0])
        at = 0.0 if rng.random() < 0.02 else max(0.0, stamp)
        header = Header(stamp=stamp_of(at), frame_id=rng.choice(["cam", "cam", "", "x" * 300]))
        group = []
        info = camera_info_msg(camera, header)
        if rng.random() < 0.3:
            choice = rng.randrange(4)
            if choice == 0:
                info.k = [rng.choice([np.nan, np.inf, -np.inf, -500.0, 0.0, 500.0, 1e300]) for _ in range(9)]
            elif choice == 1:
                info.k = [0.0] * 9
            elif choice == 2:
                info.distortion_model = rng.choice([*DISTORTION_MODELS, "fisheye", "weird", ""])
                info.d = [rng.choice([np.nan, 0.1, -3.0, 1e9]) for _ in range(rng.randrange(16))]
            else:
                info.width, info.height = rng.choice([(0, 0), (1, 1), (2**32 - 1, 2**32 - 1), (320, 240)])
        group.append(("camera_info", info))
        well_formed = rng.random() < 1 / 15
        if well_formed:
            encoding = rng.choice(["32FC1", "32FC1", "16UC1", "rgb8"])
            width, height = rng.choice([(640, 480), (640, 480), (320, 240)])
            values = np.array(rng.choices([np.nan, np.inf, -np.inf, -1.0, 0.0, 1.2, 1e30], k=64), np.float32)
            itemsize = 4 if encoding == "32FC1" else 2 if encoding == "16UC1" else 3
            data = np.resize(values, width * height).astype("<f4").tobytes() if encoding == "32FC1" \
                else bytes(width * height * itemsize)
            depth = Image(header=header, height=height, width=width, encoding=encoding, step=width * itemsize,
                          is_bigendian=rng.randrange(2), data=data)
        else:  # small: lets the image be paired; the image's own checks come first
            depth = Image(header=header, height=1, width=1, encoding=rng.choice(["16UC1", "32FC1", "yuv422"]),
                          step=4, data=bytes(rng.choice([0, 4])))
        group.append(("depth", depth))
        if well_formed:
            data = np.random.default_rng(rng.randrange(1000)).integers(0, 256, (480, 640, 3), np.uint8).tobytes()
            image = Image(header=header, height=480, width=640, encoding="rgb8", step=1920, data=data)
        else:
            encoding = rng.choice(ENCODINGS)
            width, height = rng.choice([(640, 480), (640, 480), (0, 0), (1, 1), (639, 480), (640, 481), (8, 8),
                                        (2**31, 2), (65535, 65535), (3, 100000), (rng.randrange(2000), rng.randrange(2000))])
            row = _row_bytes(encoding, width)
            step = rng.choice([row, row, max(0, row - 1), row + 3, 0, 2**32 - 1, rng.randrange(4000)])
            length = rng.choice([0, 1, 100, rng.randrange(5000), min(step * height, 1_228_800), 921_599])
            image = Image(header=header, height=height, width=width, encoding=encoding, step=step,
                          is_bigendian=rng.randrange(2), data=bytes(length))
        group.append(("image", image))
        if rng.random() < 0.05:
            del group[rng.randrange(2)]  # camera_info or depth missing
        for item in group[: count - emitted]:
            yield item
        emitted += len(group)


def test_malformed_messages_over_the_wire(shared_dir, weights_dir, ros_process, ros_context):
    """2,000 malformed messages (seed 7) into the live node (ORB, depth on): no crash, every image accounted in
    /diagnostics (received = processed + dropped + rejected, rejected = the sum of its kinds), and afterwards a
    good RGB-D sequence tracks (state TRACKING, metric PnP)."""
    from aliked_ros.datasets import open_sequence
    from test_node import frame_counts, start_node
    from vo_graph import VoGraph

    frames = list(open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd"))[:8]
    node = start_node(ros_process, weights_dir, "-p", "extractor:=orb", "-p", "use_depth:=true", "-p", "qos:=reliable",
                      "-p", "camera_info_wait:=0.0")
    g = VoGraph(ros_context, reliable=True)
    try:
        _campaign(g, node, frames, frame_counts)
    finally:
        g.close()


def _campaign(g, node, frames, frame_counts) -> None:
    import time

    g.wait_for_node(node, depth=True)
    publishers = {"image": g.pub_image, "depth": g.pub_depth, "camera_info": g.pub_info}
    sent = {"image": 0, "depth": 0, "camera_info": 0}
    start = time.monotonic()
    for k, (topic, msg) in enumerate(malformed_messages(2000, 7, frames[0].camera, frames[0].stamp - 1000.0)):
        publishers[topic].publish(msg)
        sent[topic] += 1
        if k % 20 == 19:
            g.spin_until(lambda: False, 0.02)  # let the node keep up (its inputs keep the last 10 of each topic)
    campaign_s = time.monotonic() - start
    assert node.running, node.output()[-3000:]
    campaign_statuses = len(g.status)
    statuses = [g.publish_and_wait(frame, depth_encoding="32FC1") for frame in frames]
    # TRACKING, metric: a map the campaign's noise frames started (they have depth) starts over at the first
    # frame that cannot track it (young map), it does not hold the camera LOST for max_lost_frames frames
    assert statuses[-1].state == 1 and statuses[-1].pose_source == "pnp", [
        (s.frame_index, s.state, s.pose_source, s.map_id, s.reset_reason, s.num_keypoints, s.num_matches,
         s.num_inliers, s.num_landmarks) for s in g.status[max(campaign_statuses - 3, 0):]]
    assert g.spin_until(lambda: (d := g.latest_diagnostics()) and d.get("frames_in_flight") == "0"
                        and int(d["frames_processed"]) >= len(frames)
                        and int(d["frames_received"]) == sum(frame_counts(d)), 20), g.latest_diagnostics()
    diagnostics = g.latest_diagnostics()
    processed, dropped, rejected = frame_counts(diagnostics)
    kinds = {k: int(v) for k, v in diagnostics.items() if k.startswith("rejected_")}
    assert rejected == sum(kinds.values()), diagnostics
    assert "rejected_processing_error" not in kinds and "callback_error" not in diagnostics, node.output()[-5000:]
    received = int(diagnostics["frames_received"])
    assert received <= sent["image"] + g.published and received > 0.5 * sent["image"], (received, sent)
    assert {"rejected_bad_encoding", "rejected_size_mismatch", "rejected_bad_camera_info"} <= kinds.keys(), kinds
    assert "Traceback" not in node.output() and node.running
    print(f"campaign: {sum(sent.values())} messages {sent} in {campaign_s:.1f} s; node received {received} images: "
          f"{processed} processed, {dropped} dropped, {rejected} rejected {kinds}")
