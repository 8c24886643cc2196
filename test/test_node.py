"""The aliked_vo node in its own process on a real DDS graph (loopback): inputs published from the test,
outputs received and compared with the offline pipeline."""
from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pytest

from aliked_ros.datasets import open_sequence
from aliked_ros.odometry import OdometryConfig, VisualOdometry
from aliked_ros.ros.frames import camera_from_base_odometry, mount_transform
from aliked_ros.geometry.transforms import make_transform
from aliked_ros.msg import TrackingStatus
from aliked_ros.tools.eval import run_offline
from scipy.spatial.transform import Rotation
from vo_graph import VoGraph, node_command, stamp_of

REPO_ROOT = Path(__file__).resolve().parents[1]


def odometry_pose(msg) -> np.ndarray:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return make_transform(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), [p.x, p.y, p.z])


def camera_poses(graph: VoGraph) -> np.ndarray:
    T_base_cam = mount_transform([0.0, 0.0, 0.0])
    return np.array([camera_from_base_odometry(odometry_pose(m), T_base_cam) for m in graph.odometry])


def frame_counts(diagnostics: dict[str, str]) -> tuple[int, int, int]:
    """(processed, dropped, rejected) from the node's /diagnostics."""
    return tuple(int(diagnostics[f"frames_{k}"]) for k in ("processed", "dropped", "rejected"))


def start_node(ros_process, weights_dir, *extra, name="vo_node"):
    """The node on /cam; bundle adjustment inline unless ``extra`` says otherwise, so that its poses equal
    ``aliked-vo eval``'s bit for bit (in the background they depend on timing)."""
    args = ["-r", "image:=/cam/image", "-r", "image/compressed:=/cam/image/compressed", "-r", "camera_info:=/cam/camera_info",
            "-r", "depth:=/cam/depth", "-p", f"weights:={weights_dir / 'aliked-t16.pth'}", "-p", "device:=cpu",
            "-p", "diagnostics_period:=0.2", "-p", "background_mapping:=false", *extra]
    return ros_process(node_command(*args), name=name)


@pytest.fixture
def graph(ros_context):
    graphs = []

    def make(**kwargs) -> VoGraph:
        graphs.append(VoGraph(ros_context, **kwargs))
        return graphs[-1]

    yield make
    for g in graphs:
        g.close()


@pytest.mark.parametrize("reliable, pipelined", [(False, True), (True, True), (True, False)],
                         ids=["best_effort", "reliable", "reliable_one_worker"])
def test_node_poses_equal_offline_eval(reliable, pipelined, shared_dir, weights_dir, ros_process, graph,
                                       extractor_cache):
    """Lock-step replay: the node's poses equal the offline pipeline's, with extraction and pose in two threads
    (``pipelined``, the default) and on one worker."""
    sequence = open_sequence(shared_dir / "data/tum_fr2_desk")
    frames = list(sequence)[: 20 if reliable else 8]
    node = start_node(ros_process, weights_dir, "-p", f"qos:={'reliable' if reliable else 'sensor_data'}",
                      "-p", f"pipelined:={str(pipelined).lower()}")
    g = graph(reliable=reliable)
    g.wait_for_node(node)
    for frame in frames:
        g.publish_and_wait(frame)
    g.spin_until(lambda: len(g.odometry) >= len(frames) and len(g.keypoints) >= len(frames), 10)
    assert len(g.status) == len(g.keypoints) == len(g.odometry) == len(frames)
    assert [s.frame_index for s in g.status] == list(range(len(frames)))
    for kp, status in zip(g.keypoints, g.status):
        assert kp.header.stamp == status.header.stamp and kp.num_keypoints == status.num_keypoints > 500
        assert len(kp.track_ids) == kp.num_keypoints and len(kp.descriptors) == kp.num_keypoints * 64 * 4
    assert g.odometry[0].header.frame_id == "odom" and g.odometry[0].child_frame_id == "base_link"
    g.spin_until(lambda: g.latest_diagnostics().get("frames_processed") == str(len(frames)), 5)
    diagnostics = g.latest_diagnostics()
    # every frame the node received is accounted for; none was rejected (camera_info is paired by stamp, even
    # when its callback runs after the image's). Best effort may lose a message in transport; the frame is then
    # republished: a lost image is not received, a lost first camera_info rejects that copy (no_camera_info)
    # and a frame that arrives twice is refused as a duplicate stamp
    processed, dropped, rejected = frame_counts(diagnostics)
    assert (processed, dropped) == (len(frames), 0) and int(diagnostics["frames_received"]) == processed + rejected
    if reliable:
        assert rejected == 0 and int(diagnostics["frames_received"]) == g.published
    else:
        assert rejected <= g.published - len(frames) <= 1
    # the same frames through the offline pipeline, same extractor settings
    offline = run_offline(_Frames(frames, sequence), VisualOdometry(extractor_cache("aliked-t16")), progress=False)
    np.testing.assert_allclose(camera_poses(g), offline.trajectory.poses, atol=1e-6)
    assert node.running


class _Frames:
    """A list of frames as a sequence (for run_offline)."""

    def __init__(self, frames, sequence):
        self.frames, self.name = frames, sequence.name

    def __len__(self):
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)


def test_node_compressed_and_depth(shared_dir, weights_dir, ros_process, graph, extractor_cache):
    """RGB-D from compressed images, with the Kinect's rolling shutter declared (``rolling_shutter_readout``):
    the node's poses are the offline pipeline's with the same readout."""
    sequence = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    frames = list(sequence)[:10]
    node = start_node(ros_process, weights_dir, "-p", "compressed:=true", "-p", "use_depth:=true",
                      "-p", "rolling_shutter_readout:=0.02")
    g = graph(compressed=True)
    g.wait_for_node(node, depth=True)
    for frame in frames:
        status = g.publish_and_wait(frame, depth_encoding="32FC1")
    assert status.pose_source == "pnp" and status.state == TrackingStatus.STATE_TRACKING
    g.spin_until(lambda: len(g.odometry) >= len(frames), 10)
    offline = run_offline(_Frames(frames, sequence), VisualOdometry(
        extractor_cache("aliked-t16"), OdometryConfig(rolling_shutter_readout_s=0.02)), progress=False)
    np.testing.assert_allclose(camera_poses(g), offline.trajectory.poses, atol=1e-6)
    global_shutter = run_offline(_Frames(frames, sequence), VisualOdometry(extractor_cache("aliked-t16")),
                                 progress=False)
    assert np.abs(global_shutter.trajectory.poses - offline.trajectory.poses).max() > 1e-4  # the readout was used
    # 16UC1 millimetres works too (no equality: millimetre rounding)
    frame = frames[-1]
    status = g.publish_and_wait(type(frame)(frame.image, frame.stamp + 0.033, frame.camera, frame.depth),
                                depth_encoding="16UC1")
    assert status.pose_source == "pnp"


def test_node_compressed_depth(shared_dir, weights_dir, ros_process, graph, extractor_cache):
    """Depth from compressed_depth_image_transport (``compressed_depth``: depth/compressedDepth; png and rvl in
    one stream, as each message's format says): the poses are the offline pipeline's on the same millimetre
    depth; a corrupt message and one of the wrong size are counted, and the node poses the next frame."""
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header
    from vo_graph import camera_info_msg, image_msg

    from aliked_ros.compressed_depth import decode_compressed_depth, encode_compressed_depth
    from aliked_ros.odometry import Frame

    sequence = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    frames = list(sequence)[:8]
    node = start_node(ros_process, weights_dir, "-p", "extractor:=orb", "-p", "use_depth:=true", "-p", "qos:=reliable",
                      "-p", "compressed_depth:=true", "-r", "depth/compressedDepth:=/cam/depth/compressedDepth")
    g = graph(reliable=True, compressed_depth=True)
    g.wait_for_node(node, depth=True)
    for i, frame in enumerate(frames[:5]):
        status = g.publish_and_wait(frame, depth_encoding="rvl" if i % 2 else "png")
    assert status.pose_source == "pnp" and status.state == TrackingStatus.STATE_TRACKING

    def send_bad_depth(stamp, format_, data, received):
        header = Header(stamp=stamp_of(stamp), frame_id="cam")
        g.pub_info.publish(camera_info_msg(frames[5].camera, header))
        g.pub_depth.publish(CompressedImage(header=header, format=format_, data=data))
        g.pub_image.publish(image_msg(frames[5].image, header))
        # received and decided (a frame still waiting for its pair would count as dropped once the next came)
        assert g.spin_until(lambda: (d := g.latest_diagnostics()) and int(d.get("frames_received", 0)) == received
                            and sum(frame_counts(d)) == received, 20)

    format_, data = encode_compressed_depth(frames[5].depth, "rvl")
    send_bad_depth(frames[4].stamp + 0.01, format_, data[:len(data) // 2], 6)  # cut short
    small_format, small = encode_compressed_depth(frames[5].depth[::2, ::2], "png")
    send_bad_depth(frames[4].stamp + 0.02, small_format, small, 7)
    for frame in frames[5:]:
        status = g.publish_and_wait(frame, depth_encoding="rvl")
    assert status.pose_source == "pnp" and status.state == TrackingStatus.STATE_TRACKING
    assert g.spin_until(lambda: frame_counts(g.latest_diagnostics()) == (8, 0, 2), 10), g.latest_diagnostics()
    diagnostics = g.latest_diagnostics()
    assert int(diagnostics["rejected_bad_encoding"]) == 1 and int(diagnostics["rejected_bad_depth"]) == 1, diagnostics
    millimetres = [Frame(f.image, f.stamp, f.camera, decode_compressed_depth(*encode_compressed_depth(f.depth)))
                   for f in frames]
    offline = run_offline(_Frames(millimetres, sequence), VisualOdometry(extractor_cache("orb")), progress=False)
    g.spin_until(lambda: len(g.odometry) >= len(frames), 10)
    np.testing.assert_allclose(camera_poses(g), offline.trajectory.poses, atol=1e-6)


def test_params_file_namespace_and_remap(shared_dir, weights_dir, ros_process, graph, tmp_path):
    """``aliked-vo run --params-file FILE --ros-args ...``: the file's values, and a ``-p`` given after it wins
    over the file (as with ``ros2 run ... --ros-args --params-file FILE -p ...``)."""
    params = tmp_path / "params.yaml"
    text = (REPO_ROOT / "config/params.yaml").read_text().replace("extractor: aliked-t16", "extractor: orb")
    params.write_text(text.replace("odom_frame: odom", "odom_frame: robot1/odom_from_file"))
    command = node_command("-r", "__ns:=/robot1", "-r", "image:=/cam/image", "-r", "camera_info:=/cam/camera_info",
                           "-p", "odom_frame:=robot1/odom")
    command[command.index("--ros-args"):command.index("--ros-args")] = ["--params-file", str(params)]
    node = ros_process(command, name="vo_node_ns")
    g = graph(node_ns="/robot1/aliked_vo")
    g.wait_for_node(node)
    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:3]
    for frame in frames:
        g.publish_and_wait(frame)
    assert g.keypoints[-1].extractor == "orb" and g.keypoints[-1].descriptor_type == 2
    g.spin_until(lambda: len(g.odometry) >= 3, 5)
    assert g.odometry[-1].header.frame_id == "robot1/odom"


def test_bad_inputs_are_counted_and_survived(shared_dir, weights_dir, ros_process, graph):
    frames = list(open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd"))[:6]
    node = start_node(ros_process, weights_dir, "-p", "extractor:=orb", "-p", "use_depth:=true", "-p", "qos:=reliable")
    g = graph(reliable=True)
    g.wait_for_node(node, depth=True)
    from std_msgs.msg import Header
    from vo_graph import camera_info_msg, image_msg, stamp_of

    camera = frames[0].camera
    g.publish_and_wait(frames[0], depth_encoding="32FC1")

    sent = []

    def send(image_message, info=None, stamp=None, depth=None):
        stamp = stamp or frames[1].stamp + 1e-3 * len(sent)  # each bad frame its own stamp, as from a camera
        sent.append(stamp)
        header = Header(stamp=stamp_of(stamp), frame_id="cam")
        g.pub_info.publish(info or camera_info_msg(camera, header))
        g.pub_depth.publish(depth if depth is not None else image_msg(frames[1].depth.astype(np.float32), header, "32FC1"))
        image_message.header = header
        g.pub_image.publish(image_message)
        received = 1 + len(sent)  # frames[0] and these: each decided before the next is sent (none superseded)
        assert g.spin_until(lambda: (d := g.latest_diagnostics()) and int(d.get("frames_received", 0)) == received
                            and sum(frame_counts(d)) == received, 20), g.latest_diagnostics()

    wrong_encoding = image_msg(frames[1].image, Header(), "rgb8")
    wrong_encoding.encoding = "yuv422_weird"
    send(wrong_encoding)
    short_step = image_msg(frames[1].image, Header(), "rgb8")
    short_step.step = 100
    send(short_step)
    send(image_msg(np.ascontiguousarray(frames[1].image[:240, :320]), Header()))  # size != camera_info
    zero_k = camera_info_msg(camera, Header())
    zero_k.k = [0.0] * 9
    send(image_msg(frames[1].image, Header()), info=zero_k)
    nan_depth = image_msg(np.full((480, 640), np.nan, np.float32), Header(stamp=stamp_of(frames[2].stamp)), "32FC1")
    send(image_msg(frames[2].image, Header()), stamp=frames[2].stamp, depth=nan_depth)
    # a dark camera: black plus its noise (ORB finds ~230 corners in it), processed, LOST, counted
    dark = np.clip(np.round(np.random.default_rng(0).normal(16, 6, frames[2].image.shape)), 0, 255).astype(np.uint8)
    dark_stamp = stamp_of((frames[2].stamp + frames[3].stamp) / 2)
    send(image_msg(dark, Header()), stamp=(frames[2].stamp + frames[3].stamp) / 2)
    assert g.spin_until(lambda: any(m.header.stamp == dark_stamp for m in g.keypoints)
                        and any(m.header.stamp == dark_stamp for m in g.status), 5)
    assert next(m for m in g.status if m.header.stamp == dark_stamp).state == TrackingStatus.STATE_LOST
    assert next(m for m in g.keypoints if m.header.stamp == dark_stamp).num_keypoints == 0
    assert g.spin_until(lambda: "frame of noise" in g.latest_diagnostics().get("_message", ""), 5)
    status = g.publish_and_wait(frames[3], depth_encoding="32FC1")
    # frames[4] twice (a driver or bag that repeats a frame; a frame resent after a loss in transport): one pose,
    # the copy is refused and counted, and TF gets no repeated stamp
    g.publish_and_wait(frames[4], depth_encoding="32FC1")
    g.publish(frames[4], depth_encoding="32FC1")
    assert g.spin_until(lambda: g.latest_diagnostics().get("rejected_duplicate_stamp") == "1", 10)
    key = stamp_of(frames[4].stamp)
    assert sum(s.header.stamp == key for s in g.status) == 1 and sum(m.header.stamp == key for m in g.odometry) == 1
    back = g.publish_and_wait(frames[1], depth_encoding="32FC1")  # stamp jumps back
    assert back.state == TrackingStatus.STATE_INITIALIZING and back.frame_index == 0
    g.spin_until(lambda: int(g.latest_diagnostics().get("resets", 0)) >= 1, 5)
    diagnostics = g.latest_diagnostics()
    # reliable QoS, one frame at a time: the counts are exact (unknown encoding and short step are bad encodings)
    expected = {"rejected_bad_encoding": 2, "rejected_size_mismatch": 1, "rejected_bad_camera_info": 1,
                "rejected_duplicate_stamp": 1, "warning_depth_all_invalid": 1, "noise_frames": 1}
    assert {kind: int(diagnostics.get(kind, 0)) for kind in expected} == expected, diagnostics
    assert frame_counts(diagnostics) == (len(g.status), 0, 5), diagnostics
    from diagnostic_msgs.msg import DiagnosticStatus

    assert diagnostics["_level"] == DiagnosticStatus.WARN and "bad inputs" in diagnostics["_message"]
    assert node.running and status.state in (TrackingStatus.STATE_TRACKING, TrackingStatus.STATE_INITIALIZING)
    assert "unusable camera_info" in node.output() and "time went backwards" in node.output()
    assert "a frame of noise" in node.output()


def test_camera_info_is_paired_with_the_image_by_stamp(shared_dir, weights_dir, ros_process, graph):
    """camera_info arriving after its image (callbacks run in either order) still pairs with it; an image with
    no camera_info at all is rejected and counted after ``camera_info_wait``; one without its own camera_info
    uses the newest."""
    from std_msgs.msg import Header
    from vo_graph import camera_info_msg, image_msg, stamp_of

    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:3]
    node = start_node(ros_process, weights_dir, "-p", "extractor:=orb", "-p", "qos:=reliable",
                      "-p", "camera_info_wait:=1.5")
    g = graph(reliable=True)
    g.wait_for_node(node)

    def header(frame):
        return Header(stamp=stamp_of(frame.stamp), frame_id="camera_rgb_optical_frame")

    g.pub_image.publish(image_msg(frames[0].image, header(frames[0])))  # never gets a camera_info
    assert g.spin_until(lambda: g.latest_diagnostics().get("rejected_no_camera_info") == "1", 20)
    g.pub_image.publish(image_msg(frames[1].image, header(frames[1])))
    g.spin_until(lambda: False, 0.2)  # the worker is waiting for this frame's camera_info
    g.pub_info.publish(camera_info_msg(frames[1].camera, header(frames[1])))
    assert g.spin_until(lambda: len(g.status) == 1, 10)
    g.pub_image.publish(image_msg(frames[2].image, header(frames[2])))  # no camera_info: the newest is used
    assert g.spin_until(lambda: len(g.status) == 2, 10)
    assert [s.header.stamp for s in g.status] == [stamp_of(f.stamp) for f in frames[1:]]
    assert g.spin_until(lambda: g.latest_diagnostics().get("frames_processed") == "2", 5)
    diagnostics = g.latest_diagnostics()
    assert frame_counts(diagnostics) == (2, 0, 1) and diagnostics["rejected_no_camera_info"] == "1"
    assert diagnostics["frames_received"] == "3" and "no camera_info received yet" in node.output()


def test_slow_processing_drops_old_frames(shared_dir, weights_dir, ros_process, graph):
    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))
    node = start_node(ros_process, weights_dir, "-p", "qos:=reliable")
    g = graph(reliable=True)
    g.wait_for_node(node)
    messages = [g.messages(frame) for frame in frames]  # built ahead: publishing alone sets the input rate
    started = time.monotonic()
    for i, frame_messages in enumerate(messages):  # 20 frames at 100 Hz, faster than aliked-t16 on these CPUs
        time.sleep(max(0.0, started + 0.01 * i - time.monotonic()))
        g.publish_messages(frame_messages)
    publishing_s = time.monotonic() - started
    g.spin_until(lambda: (d := g.latest_diagnostics()) and int(d["frames_received"]) == 20
                 and sum(frame_counts(d)) == 20, 60)
    diagnostics = g.latest_diagnostics()
    processed, dropped, rejected = frame_counts(diagnostics)
    assert int(diagnostics["frames_received"]) == g.published == 20
    assert processed + dropped == 20 and rejected == 0 and dropped > 0, diagnostics
    # a frame is counted when processed, then published: the last status may still be on its way
    assert g.spin_until(lambda: len(g.status) == processed, 10), (len(g.status), processed)
    # no backlog, whatever the machine's speed: while frames came in, the extractor started at most one frame per
    # (fastest) extraction; after the last one came, only the one being extracted and the newest were left (+ 1:
    # the node's own arrival window may be an extraction longer than the publishing, on a loaded machine)
    fastest_s = min(s.extract_ms for s in g.status) / 1000.0
    assert processed <= publishing_s / fastest_s + 3, (processed, publishing_s, fastest_s)
    assert g.status[-1].frames_dropped == dropped
    # the newest frame is never dropped: it was processed, last, and the statuses came in time order
    assert g.status[-1].header.stamp == g.keypoints[-1].header.stamp == stamp_of(frames[-1].stamp)
    stamps = [s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s in g.status]
    assert stamps == sorted(stamps)


def test_reset_service_and_runtime_parameters(shared_dir, weights_dir, ros_process, graph, ros_context):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_srvs.srv import Trigger

    from rcl_interfaces.srv import GetParameters
    from rclpy.event_handler import SubscriptionEventCallbacks

    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:7]
    # float parameters given as whole numbers (ROS types them INTEGER / INTEGER_ARRAY) are taken as floats
    node = start_node(ros_process, weights_dir, "-p", "extractor:=orb", "-p", "qos:=reliable",
                      "-p", "next_frame_wait:=0", "-p", "camera_mount:=[0, 0, 1]")
    g = graph(reliable=True)
    g.wait_for_node(node)
    getter = g.node.create_client(GetParameters, "/aliked_vo/get_parameters")
    assert getter.wait_for_service(timeout_sec=10)
    future = getter.call_async(GetParameters.Request(names=["next_frame_wait", "camera_mount"]))
    assert g.spin_until(future.done, 10)
    wait, mount = future.result().values
    assert (wait.type, wait.double_value) == (ParameterType.PARAMETER_DOUBLE, 0.0)
    assert (mount.type, list(mount.double_array_value)) == (ParameterType.PARAMETER_DOUBLE_ARRAY, [0.0, 0.0, 1.0])
    g.publish_and_wait(frames[0])
    from sensor_msgs.msg import Image

    debug_images, matched = [], []  # drawn only while the node sees a subscriber: subscribe, wait for the match
    g.node.create_subscription(Image, "/aliked_vo/debug_image", debug_images.append, 5, event_callbacks=
                               SubscriptionEventCallbacks(matched=lambda info: matched.append(info.current_count)))
    assert g.spin_until(lambda: matched and matched[-1] > 0, 10)
    g.spin_until(lambda: False, 0.5)  # the node's side of the match (its discovery may take longer: frames 2-4)
    for frame in frames[1:5]:
        g.publish_and_wait(frame)
        if g.spin_until(lambda: debug_images, 2):
            break
    assert debug_images
    assert (debug_images[0].encoding, debug_images[0].width, debug_images[0].height) == ("rgb8", 640, 480)
    assert debug_images[0].header.stamp == g.status[-1].header.stamp
    reset = g.node.create_client(Trigger, "/aliked_vo/reset")
    assert reset.wait_for_service(timeout_sec=10)
    future = reset.call_async(Trigger.Request())
    g.spin_until(future.done, 10)
    assert future.result().success
    assert g.publish_and_wait(frames[5]).frame_index == 0
    setter = g.node.create_client(SetParameters, "/aliked_vo/set_parameters")
    assert setter.wait_for_service(timeout_sec=10)

    def set_parameter(name, value):
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value) \
            if isinstance(value, int) else ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value) \
            if isinstance(value, float) else ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        future = setter.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=parameter_value)]))
        g.spin_until(future.done, 10)
        return future.result().results[0]

    assert set_parameter("path_max_length", 10).successful
    rejected = set_parameter("extractor", "sift")
    assert not rejected.successful and "read-only" in rejected.reason
    out_of_range = set_parameter("path_max_length", 0)
    assert not out_of_range.successful
    assert set_parameter("next_frame_wait", 0.2).successful and not set_parameter("next_frame_wait", 1.5).successful
    assert g.publish_and_wait(frames[6]).frame_index == 1  # frames still go through
    assert node.running


@pytest.mark.parametrize("argument, message", [
    ("camera_mount:=[0.1, 0, 0.3]", "camera_mount"),  # rcl cannot parse a list mixing integers and floats
    ("odom_frame:=base_link", "name the same frame"),
    ("base_frame:=/base_link", "no leading '/'"),
    ("ba_solver:=ceres", "ba_solver = 'ceres' is invalid: it takes one of lm, gtsam, scipy"),
    # (yes / on read as a boolean: the line names the words it takes)
    ("keyframe_reattach:=yes", "keyframe_reattach = True is invalid: it takes a str (auto, always or never:"),
    ("keyframe_reattach:=sometimes", "keyframe_reattach = 'sometimes' is invalid: it takes one of auto, always, never"),
], ids=["mixed_list", "same_frames", "leading_slash", "unknown_solver", "reattach_boolean", "unknown_reattach"])
def test_bad_arguments_stop_the_node_with_one_line(argument, message, ros_process):
    """Refused at start, before the model loads: one line naming the problem, exit code 2, no traceback."""
    node = ros_process(node_command("-p", argument), name="vo_node_bad_argument")
    assert node.wait(60) == 2
    output = node.output()
    errors = [line for line in output.splitlines() if line.startswith("aliked_vo: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in output, output


def test_ctrl_c_while_the_node_starts_is_a_quiet_exit(ros_process):
    """SIGINT while vo_node's imports load (torch, rclpy: the first ~2 s): exit 130 (interrupted) or, past them, 0,
    never a KeyboardInterrupt traceback (``ros2 launch`` printed it and reported a failed node)."""
    import os
    import signal
    import sys
    import time

    node = ros_process([sys.executable, "-m", "aliked_ros.ros.entry"], name="vo_node_interrupted")
    time.sleep(0.3)
    os.killpg(node.popen.pid, signal.SIGINT)
    assert node.wait(60) in (0, 130), node.output()
    assert "Traceback" not in node.output(), node.output()


def test_ctrl_c_twice_while_processing_is_a_clean_exit(shared_dir, weights_dir, ros_process, graph):
    """Two SIGINTs 20 ms apart while a frame is being processed (Ctrl-C in the terminal of ``ros2 launch``
    reaches the node, and launch passes its own on): the second ends the wait for the stages, said in one line;
    exit 0, no traceback."""
    import os
    import signal
    import time

    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))
    node = start_node(ros_process, weights_dir, "-p", "qos:=reliable")
    g = graph(reliable=True)
    g.wait_for_node(node)
    for frame in frames[:3]:
        g.publish_and_wait(frame)
    for frame in frames[3:6]:  # three more queued: the worker is busy with one when the signals come
        g.publish(frame)
    g.spin_until(lambda: len(g.status) > 3, 10)
    os.killpg(node.popen.pid, signal.SIGINT)
    time.sleep(0.02)
    os.killpg(node.popen.pid, signal.SIGINT)
    assert node.wait(15) == 0, node.output()[-3000:]
    assert "Traceback" not in node.output() and "[ERROR]" not in node.output(), node.output()[-3000:]


def test_launch_file_is_consistent():
    """Without launch_ros too: parse the launch file and check what it names exists and is installed (the launch
    itself is run by test_ros_tools.py)."""
    source = (REPO_ROOT / "launch/aliked_vo.launch.py").read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"vo_node", "aliked_ros", "params.yaml", "aliked_vo.rviz"} <= strings
    for name in ("params.yaml", "aliked_vo.rviz"):
        assert (REPO_ROOT / "config" / name).is_file()
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert "install(DIRECTORY config launch" in cmake and '"vo_node:aliked_ros.ros.entry:main"' in cmake
    import yaml

    params = yaml.safe_load((REPO_ROOT / "config/params.yaml").read_text())["/**"]["ros__parameters"]
    node_source = (REPO_ROOT / "aliked_ros/ros/node.py").read_text()
    for name in params:
        assert f'declare("{name}"' in node_source, f"params.yaml sets {name}, which the node does not declare"
    arguments = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", "") == "DeclareLaunchArgument" and isinstance(n.args[0], ast.Constant)}
    passed = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PARAMETER_ARGUMENTS")
    parameter_arguments = {k.value for k in passed.keys}  # declared in a loop, passed to the node when given
    for name in parameter_arguments:
        assert name in params, f"launch argument {name} is not a node parameter"
    assert {"camera", "image", "params_file", "use_sim_time", "rviz"} <= arguments
    assert {"extractor", "device", "max_keypoints", "use_depth", "compressed"} <= parameter_arguments


def _odometry_arrays(msg):
    return (odometry_pose(msg), np.array(msg.pose.covariance).reshape(6, 6), np.array(msg.twist.covariance).reshape(6, 6))


def test_covariance_lost_tracking_reset_to_pose_and_tf(shared_dir, weights_dir, ros_process, graph):
    """Monocular ORB on tum_fr2_desk with three black frames (LOST), a reset_to_pose, a null odometry while LOST
    and a stamp going backwards. What the node publishes equals the documented rules (OdometryOutput) applied to
    the offline pipeline's results for the same frames: no -1, 1e6 where the core has none, never below the core's
    covariance, inflated after LOST and reset; nothing (or, when asked, a null odometry) while LOST; the new map
    continues from the requested pose; TF stamps strictly increase."""
    from nav_msgs.msg import Path
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from aliked_ros.odometry import Frame, OdometryConfig
    from aliked_ros.ros.odometry_output import UNKNOWN_VARIANCE, OdometryOutput
    from aliked_ros.srv import ResetToPose
    from vo_graph import stamp_of

    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))
    black = [Frame(np.zeros_like(frames[0].image), frames[7].stamp + 0.01 * (k + 1), frames[0].camera) for k in range(3)]
    target = make_transform(Rotation.from_euler("z", 90, degrees=True).as_matrix(), [1.0, 2.0, 0.0])
    plan = frames[:8] + black + frames[8:12] + ["reset"] + frames[12:16]
    node = start_node(ros_process, weights_dir, "-p", "extractor:=orb", "-p", "qos:=reliable")
    g = graph(reliable=True)
    tf = []
    g.node.create_subscription(TFMessage, "/tf", tf.append, QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
    paths = []
    g.node.create_subscription(Path, "/aliked_vo/path", paths.append,
                               QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
    g.wait_for_node(node)
    client = g.node.create_client(ResetToPose, "/aliked_vo/reset_to_pose")
    assert client.wait_for_service(timeout_sec=10)

    def call(pose_matrix=None, quaternion=None):
        request = ResetToPose.Request()
        if pose_matrix is not None:
            p, q = pose_matrix[:3, 3], Rotation.from_matrix(pose_matrix[:3, :3]).as_quat()
            request.pose.position.x, request.pose.position.y, request.pose.position.z = (float(v) for v in p)
            q = q if quaternion is None else quaternion
            request.pose.orientation.x, request.pose.orientation.y, request.pose.orientation.z, \
                request.pose.orientation.w = (float(v) for v in q)
        future = client.call_async(request)
        assert g.spin_until(future.done, 10)
        return future.result()

    refused = call(target, quaternion=[0.0, 0.0, 0.0, 0.0])
    assert not refused.success and "quaternion" in refused.message
    statuses = []
    for item in plan:
        if item == "reset":
            assert call(target).success
            continue
        statuses.append(g.publish_and_wait(item))
    assert [s.state for s in statuses[8:11]] == [TrackingStatus.STATE_LOST] * 3
    after_reset = statuses[15]
    assert after_reset.reset_reason == "requested (reset_to_pose service)" and after_reset.map_id == statuses[14].map_id + 1
    posed = [s for s in statuses if s.state != TrackingStatus.STATE_LOST]
    assert g.spin_until(lambda: len(g.odometry) == len(posed) and len(tf) == len(posed), 10), (len(g.odometry), len(tf))
    assert [m.header.stamp for m in g.odometry] == [s.header.stamp for s in posed]  # nothing while LOST (default)

    # the same frames offline, through the same rules
    vo = VisualOdometry(create_orb(), OdometryConfig(background_mapping=False))
    out = OdometryOutput(mount_transform([0.0, 0.0, 0.0]))
    expected, core = [], []
    for item in plan:
        if item == "reset":
            out.reset(target)
            vo.reset("requested (reset_to_pose service)")
            continue
        result = vo.process(item)
        odom = out.update(result, int(round(item.stamp * 1e9)))
        if odom is not None:
            expected.append(odom)
            core.append(result.covariance)
    assert len(expected) == len(g.odometry)
    for msg, odom, core_covariance in zip(g.odometry, expected, core):
        pose, pose_cov, twist_cov = _odometry_arrays(msg)
        np.testing.assert_allclose(pose, odom.T_odom_base, atol=1e-6)
        np.testing.assert_allclose(pose_cov, odom.pose_covariance, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(twist_cov, odom.twist_covariance, rtol=1e-6, atol=1e-12)
        assert (np.diag(pose_cov) > 0).all() and (np.diag(twist_cov) > 0).all()
        if core_covariance is None:
            assert np.allclose(np.diag(pose_cov), UNKNOWN_VARIANCE)
        else:  # the camera mount is a rotation here: the eigenvalues compare directly
            assert (np.linalg.eigvalsh(pose_cov) >= np.linalg.eigvalsh(core_covariance) * (1 - 1e-9)).all()
    first_after_lost = next(i for i, m in enumerate(g.odometry) if m.header.stamp == stamp_of(frames[8].stamp))
    assert expected[first_after_lost].inflation == 100
    first_of_new_map = next(i for i, m in enumerate(g.odometry) if m.header.stamp == after_reset.header.stamp)
    np.testing.assert_allclose(odometry_pose(g.odometry[first_of_new_map]), target, atol=1e-6)
    assert any(np.diag(np.array(m.pose.covariance).reshape(6, 6)).max() < 1 for m in g.odometry[:first_after_lost])

    # publish_null_when_lost (changeable at run time): a null odometry per LOST frame, the last pose held; no TF
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    setter = g.node.create_client(SetParameters, "/aliked_vo/set_parameters")
    assert setter.wait_for_service(timeout_sec=10)
    future = setter.call_async(SetParameters.Request(parameters=[Parameter(
        name="publish_null_when_lost", value=ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True))]))
    assert g.spin_until(future.done, 10) and future.result().results[0].successful
    sent = len(g.odometry)
    last_pose = odometry_pose(g.odometry[-1])
    for k in range(2):
        lost = Frame(black[0].image, frames[15].stamp + 0.01 * (k + 1), frames[0].camera)
        assert g.publish_and_wait(lost).state == TrackingStatus.STATE_LOST
    assert g.spin_until(lambda: len(g.odometry) == sent + 2, 10)
    for msg in g.odometry[sent:]:
        pose, pose_cov, twist_cov = _odometry_arrays(msg)
        np.testing.assert_allclose(pose, last_pose, atol=1e-9)
        assert np.allclose(np.diag(pose_cov), UNKNOWN_VARIANCE) and np.allclose(np.diag(twist_cov), UNKNOWN_VARIANCE)
        assert msg.twist.twist.linear.x == 0.0

    # time going backwards (a bag played again): the pipeline resets, odometry goes on, and a new run begins: its
    # path starts empty and its transforms are sent from its first stamp on (tf2 listeners on sim time drop their
    # buffers when the clock jumps back); within a run TF stamps strictly increase
    assert g.spin_until(lambda: len(paths) == len(posed), 10) and len(paths[-1].poses) == len(posed)
    count = len(g.status)
    g.publish(frames[10])  # its stamp was seen before: wait for a new status, not by stamp
    assert g.spin_until(lambda: len(g.status) > count, 30)
    back = g.status[-1]
    assert back.frame_index == 0 and "time went backwards" in back.reset_reason
    assert g.spin_until(lambda: len(tf) == len(posed) + 1 and len(paths) == len(posed) + 1, 10), (len(tf), len(paths))
    assert [p.header.stamp for p in paths[-1].poses] == [back.header.stamp]
    stamps = [t.header.stamp.sec * 10**9 + t.header.stamp.nanosec for m in tf for t in m.transforms]
    assert stamps[:-1] == sorted(set(stamps[:-1])) and stamps[-1] == stamp_of(frames[10].stamp).sec * 10**9 \
        + stamp_of(frames[10].stamp).nanosec
    assert g.spin_until(lambda: g.latest_diagnostics().get("resets") == "2"
                        and g.latest_diagnostics().get("frames_processed") == str(len(statuses) + 3), 10)
    diagnostics = g.latest_diagnostics()
    assert diagnostics["odometry_null"] == "2" and int(diagnostics["resets"]) == 2
    assert frame_counts(diagnostics) == (len(statuses) + 3, 0, 0) and diagnostics["frames_in_flight"] == "0"
    assert "tf_stamps_skipped" not in diagnostics
    assert "callback_error" not in diagnostics and node.running


def create_orb():
    from aliked_ros.features import ExtractorConfig, create_extractor

    return create_extractor("orb", ExtractorConfig(device="cpu"))


def test_a_frame_finished_after_shutdown_gave_up_on_it_is_not_published(shared_dir, weights_dir, ros_domain,
                                                                         monkeypatch):
    """A stage still busy when shutdown's time is up (a first frame's kernel compilation on a slow machine) finishes
    its frame after the node's publishers are destroyed: it publishes nothing and logs no error (it published on
    the destroyed handles, counted 'publish_error' and logged a traceback). The node is real and in this process;
    only the frame's processing is held until the node is destroyed."""
    import threading

    import rclpy
    from std_msgs.msg import Header
    from aliked_ros.ros import node as node_module
    from vo_graph import camera_info_msg, image_msg

    frame = next(iter(open_sequence(shared_dir / "data/tum_fr2_desk")))
    monkeypatch.setattr(node_module, "SHUTDOWN_WAIT_S", 0.2)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain, args=[
        "--ros-args", "-p", "extractor:=orb", "-p", f"weights:={weights_dir / 'aliked-t16.pth'}", "-p", "device:=cpu",
        "-p", "pipelined:=false", "-p", "background_mapping:=false"])
    try:
        node = node_module.VoNode(context=context)
        started, release, errors = threading.Event(), threading.Event(), []
        process = node.vo.process

        def held_process(vo_frame):
            started.set()
            release.wait(30)
            return process(vo_frame)

        node.vo.process = held_process
        logger = node.get_logger()
        monkeypatch.setattr(type(logger), "error", lambda self, message, **kw: errors.append(message))
        header, stamp_ns = Header(stamp=stamp_of(frame.stamp), frame_id="cam"), int(round(frame.stamp * 1e9))
        node.inputs.add_camera_info(stamp_ns, camera_info_msg(frame.camera, header))  # what the callbacks do
        node.inputs.add_image(stamp_ns, image_msg(frame.image, header))
        assert started.wait(30)
        node.shutdown()  # gives up after 0.2 s: the worker is held
        node.destroy_node()
        release.set()
        for worker in node._workers:
            worker.join(30)
        snapshot = node.inputs.snapshot()
        assert snapshot.processed == 1 and "publish_error" not in snapshot.counters and not errors, (snapshot, errors)
    finally:
        rclpy.try_shutdown(context=context)
