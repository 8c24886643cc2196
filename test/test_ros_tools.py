"""The node driven the way users drive it: ``ros2 launch``, ``ros2 topic hz/echo``, ``ros2 node info``,
``ros2 param set/get/describe/dump``, ``ros2 service call``, TF on /tf and /tf_static, the rviz view, and the
stamp synchroniser against message_filters. Everything runs on a real DDS graph on loopback (``ros_env``).

Needs the ROS 2 command-line kit (launch_ros, ros2cli, message_filters; ``scripts/bootstrap.sh --test`` installs it
from ``$ALIKED_ROS_SHARED/ros-python``, a ROS install has it) and tf2_msgs (generated into the test venv by the
same bootstrap from test/tf2_msgs; a ROS install has it). Node start-ups are few: one launched node serves most
checks; the node runs ORB on short replays.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

try:
    import launch_ros  # noqa: F401
    import message_filters  # noqa: F401
    import ros2cli  # noqa: F401
except ImportError as error:  # the test set-up always installs them: their absence is a broken set-up, not a skip
    pytest.fail(f"ROS 2 tool kit not importable ({error}): scripts/bootstrap.sh --test installs launch_ros, ros2cli "
                "and message_filters from $ALIKED_ROS_SHARED/ros-python", pytrace=False)

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from aliked_ros.datasets import open_sequence  # noqa: E402
from aliked_ros.geometry.transforms import make_transform  # noqa: E402
from aliked_ros.msg import TrackingStatus  # noqa: E402
from aliked_ros.ros.frames import R_BASE_OPTICAL, camera_from_base_odometry, mount_transform  # noqa: E402
from vo_graph import VoGraph, stamp_of  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
ROS2 = str(Path(sys.executable).with_name("ros2")) if Path(sys.executable).with_name("ros2").exists() else shutil.which("ros2")
NODE = "/aliked_vo"
# What the README documents (node section), as `ros2 node info` prints it; /tf_static only with camera_frame set.
DOCUMENTED = {
    "Subscribers": {"/cam/image": "sensor_msgs/msg/Image", "/cam/camera_info": "sensor_msgs/msg/CameraInfo"},
    "Publishers": {
        f"{NODE}/keypoints": "aliked_ros/msg/FrameKeypoints", f"{NODE}/status": "aliked_ros/msg/TrackingStatus",
        f"{NODE}/odometry": "nav_msgs/msg/Odometry", f"{NODE}/pose": "geometry_msgs/msg/PoseStamped",
        f"{NODE}/path": "nav_msgs/msg/Path", f"{NODE}/debug_image": "sensor_msgs/msg/Image",
        "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray", "/tf": "tf2_msgs/msg/TFMessage",
        "/tf_static": "tf2_msgs/msg/TFMessage",
    },
    "Service Servers": {f"{NODE}/reset": "std_srvs/srv/Trigger", f"{NODE}/reset_to_pose": "aliked_ros/srv/ResetToPose"},
}
# rviz display class -> the message type it subscribes to
RVIZ_DISPLAY_TYPES = {
    "rviz_default_plugins/Path": "nav_msgs/msg/Path", "rviz_default_plugins/Odometry": "nav_msgs/msg/Odometry",
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image", "rviz_default_plugins/PoseStamped": "geometry_msgs/msg/PoseStamped",
}
SHUTDOWN_S = 10.0


@pytest.fixture
def tools_env(tmp_path: Path) -> dict[str, str]:
    """What the ros2 tools need beside the loopback settings: the ament index of this venv (pip install) and of
    any workspace already on AMENT_PREFIX_PATH, logs under the test's folder, plain (uncoloured) output."""
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return {"AMENT_PREFIX_PATH": os.pathsep.join(dict.fromkeys(prefixes)), "ROS_HOME": str(tmp_path / "ros_home"),
            "RCUTILS_COLORIZED_OUTPUT": "0"}


@pytest.fixture
def ros2(ros_command, tools_env):
    """``ros2(*args, timeout=60)`` -> CompletedProcess; the ros2 daemon of the test's domain is stopped at the end."""

    def run(*args: str, timeout: float = 60.0):
        return ros_command([ROS2, *args], timeout=timeout, extra_env=tools_env)

    yield run
    run("daemon", "stop", timeout=30)


def launch(ros_process, tools_env, *arguments: str, name: str = "launch"):
    return ros_process([ROS2, "launch", "aliked_ros", "aliked_vo.launch.py", *arguments], name=name,
                       extra_env=tools_env)


def replay(ros_process, graph: VoGraph, source: Path, *options: str, name: str = "replay") -> dict:
    """aliked-vo replay in lock-step with the node (each frame waits for its status), while ``graph`` receives the
    outputs as they come; the replay's JSON summary."""
    process = ros_process([sys.executable, "-m", "aliked_ros.cli", "replay", str(source), "--namespace", "/cam",
                           "--no-depth", "--quiet", "--wait-for", f"{NODE}/status", "--wait-timeout", "30", *options],
                          name=name)
    graph.spin_until(lambda: not process.running, 180)
    assert process.wait(5) == 0, process.output()
    return json.loads(process.output().strip().splitlines()[-1])


def until(predicate, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def node_pid(launch_process) -> int:
    match = re.search(r"\[vo_node-1\]: process started with pid \[(\d+)\]", launch_process.output())
    assert match, launch_process.output()
    return int(match.group(1))


def stop_launch_with_sigint(launch_process, pid: int) -> None:
    """SIGINT to the `ros2 launch` process only (not its group): it must stop the node; all gone in 10 s, code 0."""
    start = time.monotonic()
    os.kill(launch_process.popen.pid, signal.SIGINT)
    code = launch_process.wait(SHUTDOWN_S + 5)
    elapsed = time.monotonic() - start
    output = launch_process.output()
    assert code == 0 and elapsed < SHUTDOWN_S, (code, elapsed, output[-3000:])
    assert "process has finished cleanly" in output, output[-3000:]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), \
        f"node {pid} still running after ros2 launch exited"


def parse_node_info(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if re.fullmatch(r"  [A-Z][A-Za-z ]*:", line):
            current = sections.setdefault(line.strip()[:-1], {})
        elif current is not None and line.startswith("    ") and ": " in line:
            name, kind = line.strip().split(": ", 1)
            current[name] = kind
    return sections


def transform_matrix(t) -> np.ndarray:
    r, p = t.rotation, t.translation
    return make_transform(Rotation.from_quat([r.x, r.y, r.z, r.w]).as_matrix(), [p.x, p.y, p.z])


def odometry_matrix(msg) -> np.ndarray:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return make_transform(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), [p.x, p.y, p.z])


def check_rviz_config(info: dict[str, dict[str, str]], odom_frame: str) -> None:
    """config/aliked_vo.rviz against the running node: every display's topic is published with the display's
    type; the TF display has /tf; the fixed frame is the node's odometry frame."""
    rviz = yaml.safe_load((REPO_ROOT / "config/aliked_vo.rviz").read_text())["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == odom_frame
    checked = 0
    for display in rviz["Displays"]:
        topic = (display.get("Topic") or {}).get("Value")
        if display["Class"] == "rviz_default_plugins/TF":
            assert info["Publishers"].get("/tf") == "tf2_msgs/msg/TFMessage", display
        elif topic:
            assert info["Publishers"].get(topic) == RVIZ_DISPLAY_TYPES[display["Class"]], (display, info["Publishers"])
            checked += 1
    assert checked >= 3


def test_ros2_launch_replay_tools_tf_params_reset_and_sigint(shared_dir, ros_process, ros2, tools_env, ros_context,
                                                             extractor_cache, tmp_path):
    """One launched node, driven with the ros2 tools; then a second launch from its `ros2 param dump`."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError as error:  # not a skip: the test venv always has it
        pytest.fail(f"tf2_msgs is not importable ({error}): scripts/bootstrap.sh --test generates it into the venv")
    from aliked_ros.odometry import VisualOdometry
    from aliked_ros.tools.eval import run_offline

    source = shared_dir / "data/tum_fr2_desk"
    first, second = 14, 6  # frames before and after `publish_tf false` + reset
    mount_rotation = Rotation.from_matrix(R_BASE_OPTICAL) * Rotation.from_euler("x", 10, degrees=True)
    mount = [0.2, -0.05, 0.4, *(float(v) for v in mount_rotation.as_quat())]
    params = tmp_path / "params.yaml"
    text = (REPO_ROOT / "config/params.yaml").read_text()
    text = text.replace("base_frame: base_link", "base_frame: robot_base").replace("qos: sensor_data", "qos: reliable")
    text = text.replace('camera_frame: ""', "camera_frame: camera_optical")
    text = text.replace("background_mapping: true", "background_mapping: false")  # poses compared with eval's
    text = text.replace("camera_mount: [0.0, 0.0, 0.0]", f"camera_mount: {mount}")
    params.write_text(text + "    max_keypoint: 500   # a typo: warned once, ignored\n")
    # path_max_length: a node parameter that is not a declared launch argument, passed on all the same
    launched = launch(ros_process, tools_env, "extractor:=orb", "camera:=/cam", "image:=image", f"params_file:={params}",
                      "path_max_length:=500")

    g = VoGraph(ros_context, namespace="/cam", node_ns=NODE, reliable=True)  # qos: reliable, like the replay
    try:
        tf, tf_static, arrivals = [], [], []
        g.node.create_subscription(TFMessage, "/tf", tf.append, QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
        g.node.create_subscription(TFMessage, "/tf_static", tf_static.append, QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        from nav_msgs.msg import Odometry

        g.node.create_subscription(Odometry, f"{NODE}/odometry", lambda m: arrivals.append(time.monotonic()),
                                   QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
        g.wait_for_node(launched)
        pid = node_pid(launched)
        launched.wait_for_output("unknown parameter", 10)  # logged at the end of the node's start-up
        output = launched.output()
        assert output.count("unknown parameter") == 1 and "max_keypoint" in output, output

        # --- replay with `ros2 topic hz` and `ros2 topic echo --once` listening ---------------------------------
        hz = ros_process([ROS2, "topic", "hz", "--window", "10000", f"{NODE}/odometry"], name="hz",
                         extra_env=tools_env)
        echo = ros_process([ROS2, "topic", "echo", "--once", "--no-daemon", f"{NODE}/odometry", "nav_msgs/msg/Odometry"],
                           name="echo",
                           extra_env=tools_env)
        assert g.spin_until(lambda: g.node.count_subscribers(f"{NODE}/odometry") >= 4, 60), \
            (g.node.count_subscribers(f"{NODE}/odometry"), hz.output(), echo.output())
        summary = replay(ros_process, g, source, "--rate", "1", "--max-frames", str(first), name="replay_1")
        assert summary["frames_published"] == first and summary["status_missed"] == 0, summary
        assert g.spin_until(lambda: len(g.odometry) == first and len(tf) == first, 20), (len(g.odometry), len(tf))
        assert echo.wait(30) == 0, echo.output()
        time.sleep(1.2)  # hz prints once a second
        hz.stop()
        rates = [float(v) for v in re.findall(r"average rate: ([0-9.]+)", hz.output())]
        windows = [int(v) for v in re.findall(r"window: ([0-9]+)", hz.output())]
        # `ros2 topic hz` (a window larger than the stream) averages over every message it had when it last printed
        # (once a second): our rate over the same first messages (the stream is not steady: on 2 cores the replay
        # and the node's two workers take turns)
        n = min(windows[-1], len(arrivals)) if windows else len(arrivals)
        received_rate = (n - 1) / (arrivals[n - 1] - arrivals[0])
        assert rates and abs(rates[-1] / received_rate - 1) < 0.3, (rates, received_rate, hz.output())

        echoed = yaml.safe_load(echo.output().split("\n---")[0])
        assert echoed["header"]["frame_id"] == "odom" and echoed["child_frame_id"] == "robot_base"
        covariance = echoed["pose"]["covariance"]  # never -1 ("unknown" is a large positive diagonal)
        assert len(covariance) == 36 and all(covariance[7 * i] > 0 for i in range(6)), covariance
        echoed_stamp = (echoed["header"]["stamp"]["sec"], echoed["header"]["stamp"]["nanosec"])
        assert echoed_stamp in {(m.header.stamp.sec, m.header.stamp.nanosec) for m in g.odometry}
        assert all(isinstance(echoed["pose"]["pose"]["position"][k], float) for k in "xyz")

        # --- TF: one transform per posed frame, increasing stamps, named frames, the mount applied --------------
        transforms = [t for message in tf for t in message.transforms]
        assert len(transforms) == len(tf) == first
        stamps = [t.header.stamp.sec * 10**9 + t.header.stamp.nanosec for t in transforms]
        assert stamps == sorted(set(stamps)), "TF stamps must increase strictly"
        assert [t.header.stamp for t in transforms] == [m.header.stamp for m in g.odometry]
        assert {(t.header.frame_id, t.child_frame_id) for t in transforms} == {("odom", "robot_base")}
        for t, odometry in zip(transforms, g.odometry):
            np.testing.assert_allclose(transform_matrix(t.transform), odometry_matrix(odometry), atol=1e-9)
        assert len(tf_static) == 1 and len(tf_static[0].transforms) == 1  # once, and latched: we joined late
        static = tf_static[0].transforms[0]
        assert (static.header.frame_id, static.child_frame_id) == ("robot_base", "camera_optical")
        T_base_cam = mount_transform(mount)
        np.testing.assert_allclose(transform_matrix(static.transform), T_base_cam, atol=1e-9)
        offline = run_offline(open_sequence(source), VisualOdometry(extractor_cache("orb")), max_frames=first,
                              progress=False)
        camera_poses = [camera_from_base_odometry(transform_matrix(t.transform), T_base_cam) for t in transforms]
        assert not np.allclose(camera_poses[-1], np.eye(4), atol=1e-3)  # the camera moved
        np.testing.assert_allclose(np.array(camera_poses), offline.trajectory.poses, atol=1e-5)

        # --- ros2 node info: the documented interface; the rviz view against it ---------------------------------
        def documented_missing(text: str) -> list[str]:
            info = parse_node_info(text)
            return [name for section, entries in DOCUMENTED.items() for name in entries if name not in info.get(section, {})]

        # the daemon may not have discovered every endpoint yet: ask again until all are listed
        info_text = until(lambda: (r := ros2("node", "info", NODE)).returncode == 0 and not documented_missing(r.stdout)
                          and r.stdout, 60, step=1.0)
        assert info_text, ("ros2 node info did not list the documented interface", ros2("node", "info", NODE))
        info = parse_node_info(info_text)
        for section, entries in DOCUMENTED.items():
            for name, kind in entries.items():
                assert info[section].get(name) == kind, (section, name, kind, info_text)
        odom_frame = ros2("param", "get", NODE, "odom_frame", "--timeout", "20").stdout
        assert odom_frame.strip() == "String value is: odom", odom_frame
        check_rviz_config(info, "odom")

        # --- parameters at run time ------------------------------------------------------------------------------
        result = ros2("param", "set", NODE, "publish_tf", "false", "--timeout", "20")
        assert "Set parameter successful" in result.stdout, result
        result = ros2("param", "set", NODE, "diagnostics_period", "0.2", "--timeout", "20")  # was 1.0: a new timer
        assert "Set parameter successful" in result.stdout, result
        g.spin_until(lambda: False, 0.5)
        count = len(g.diagnostics)
        assert g.spin_until(lambda: len(g.diagnostics) - count >= 5, 30)
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in g.diagnostics[count:]]
        assert np.median(np.diff(stamps)) < 0.5, stamps  # the node's clock: 0.2 s apart, not the old 1.0 s
        refused = ros2("param", "set", NODE, "extractor", "sift", "--timeout", "20")  # refused with the node's message
        assert "Setting parameter failed: extractor is read-only: restart the node to change it" in refused.stderr, \
            refused
        refused = ros2("param", "set", NODE, "use_sim_time", "true", "--timeout", "20")  # refused by the node itself
        assert "Setting parameter failed: use_sim_time is read-only: restart the node to change it" in refused.stderr, \
            refused
        assert ros2("param", "get", NODE, "extractor", "--timeout", "20").stdout.strip() == "String value is: orb"
        described = ros2("param", "describe", NODE, "max_keypoints", "--timeout", "20").stdout
        assert "read-only: restart the node to change it" in described and "Min value: 16" in described
        dump = ros2("param", "dump", NODE, "--timeout", "20")
        assert dump.returncode == 0, dump
        dumped = tmp_path / "dumped.yaml"
        dumped.write_text(dump.stdout)
        assert yaml.safe_load(dump.stdout)[NODE]["ros__parameters"]["publish_tf"] is False
        assert yaml.safe_load(dump.stdout)[NODE]["ros__parameters"]["path_max_length"] == 500  # (the file: 1000)

        # --- reset service; then more frames: odometry goes on, TF stays off, status shows the new map ----------
        map_before = g.status[-1].map_id
        reset = ros2("service", "call", f"{NODE}/reset", "std_srvs/srv/Trigger")
        assert reset.returncode == 0 and "success=True" in reset.stdout, reset
        summary = replay(ros_process, g, source, "--rate", "0", "--start", str(first), "--max-frames", str(second),
                         name="replay_2")
        assert summary["frames_published"] == second and summary["status_missed"] == 0, summary
        assert g.spin_until(lambda: len(g.odometry) == first + second, 20)
        after = g.status[first]
        assert after.frame_index == 0 and after.map_id == map_before + 1 and "requested" in after.reset_reason, after
        assert after.state == TrackingStatus.STATE_INITIALIZING
        g.spin_until(lambda: False, 0.5)
        assert len(tf) == first, "publish_tf false: no TF after it was set"

        stop_launch_with_sigint(launched, pid)
    finally:
        g.close()

    # --- the dumped parameters, back through --params-file (launch's params_file), are accepted as they are; launch
    # arguments given override them (compressed, use_depth, compressed_depth), the others keep the file's values ----
    relaunched = launch(ros_process, tools_env, "camera:=/cam", "image:=image", f"params_file:={dumped}",
                        "compressed:=true", "use_depth:=true", "compressed_depth:=true", "depth:=depth",
                        name="launch_dumped")
    got = until(lambda: (r := ros2("param", "get", NODE, "publish_tf", "--timeout", "5")).returncode == 0
                and "value is" in r.stdout and r.stdout, 90, step=1.0)
    assert got and got.strip() == "Boolean value is: False", (got, relaunched.output()[-3000:])
    assert ros2("param", "get", NODE, "extractor", "--timeout", "20").stdout.strip() == "String value is: orb"
    assert ros2("param", "get", NODE, "base_frame", "--timeout", "20").stdout.strip() == "String value is: robot_base"
    subscribers = {"/cam/image/compressed": "sensor_msgs/msg/CompressedImage",
                   "/cam/depth/compressedDepth": "sensor_msgs/msg/CompressedImage",
                   "/cam/camera_info": "sensor_msgs/msg/CameraInfo"}
    info_text = until(lambda: (r := ros2("node", "info", NODE)).returncode == 0
                      and parse_node_info(r.stdout).get("Subscribers") == subscribers and r.stdout, 60, step=1.0)
    assert info_text, ros2("node", "info", NODE)
    assert "unknown parameter" not in relaunched.output(), relaunched.output()
    stop_launch_with_sigint(relaunched, node_pid(relaunched))


@pytest.mark.parametrize("argument, message", [
    ("extractor:=superpoint", "parameter extractor = 'superpoint' is invalid: it takes one of aliked-t16"),
    ("max_keypoints:=-5", "parameter max_keypoints = -5 is invalid: it takes an integer in 16..20000"),
], ids=["unknown_extractor", "negative_max_keypoints"])
def test_ros2_launch_refuses_bad_argument(argument, message, ros_process, tools_env):
    """The node refuses at start with one line (no traceback) and exit code 2; `ros2 launch` shows it and exits 1."""
    launched = launch(ros_process, tools_env, "camera:=/cam", argument)
    code = launched.wait(120)
    output = launched.output()
    errors = [line for line in output.splitlines() if "aliked_vo: error:" in line]
    assert len(errors) == 1 and message in errors[0], output
    assert "Traceback" not in output and re.search(r"process has died \[pid \d+, exit code 2", output), output
    assert code == 1, output


@pytest.mark.parametrize("seed", [12, 13, 14])
def test_stamp_synchronizer_pairs_like_message_filters(seed, ros_context):
    """The node pairs image and depth with its own StampSynchronizer (it counts the images left without depth,
    which message_filters cannot). Here the same streams, received over DDS, go through both it and
    message_filters.ApproximateTimeSynchronizer (fed from the same message_filters.Subscriber callbacks, so both see
    the same arrival order): jittered stamps, dropped images and depths, depth arriving up to two frames before or
    after its image. The pairs are the same; the synchroniser also counts the unmatched images."""
    import rclpy
    from message_filters import ApproximateTimeSynchronizer, Subscriber
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from aliked_ros.ros.sync import StampSynchronizer

    tolerance, period, frames = 0.02, 1 / 30, 90
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    node = rclpy.create_node("sync_compare", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        pub_image = node.create_publisher(Image, "/sync/image", qos)
        pub_depth = node.create_publisher(Image, "/sync/depth", qos)
        sub_image = Subscriber(node, Image, "/sync/image", qos_profile=qos)
        sub_depth = Subscriber(node, Image, "/sync/depth", qos_profile=qos)
        def ns(msg) -> int:
            return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

        theirs, ours, received = [], [], []
        ApproximateTimeSynchronizer([sub_image, sub_depth], queue_size=10, slop=tolerance).registerCallback(
            lambda image, depth: theirs.append((ns(image), ns(depth))))
        sync = StampSynchronizer(tolerance, lambda image, depth: ours.append((ns(image), ns(depth))))
        sub_image.registerCallback(lambda m: (received.append(m), sync.add_image(ns(m) * 1e-9, m)))
        sub_depth.registerCallback(lambda m: (received.append(m), sync.add_depth(ns(m) * 1e-9, m)))

        def spin(predicate, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while not predicate() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            return bool(predicate())

        assert spin(lambda: pub_image.get_subscription_count() and pub_depth.get_subscription_count(), 30)

        rng = random.Random(seed)
        t0 = 1700000000.0
        events = []  # (position in the send order, stamp, topic)
        depth_position = -10.0
        expected_pairs = set()
        for k in range(frames):
            image_stamp = t0 + k * period + rng.uniform(-0.002, 0.002)
            depth_stamp = image_stamp + rng.uniform(-0.005, 0.005)
            send_image, send_depth = rng.random() > 0.07, rng.random() > 0.12  # drops
            depth_position = max(depth_position + 0.01, k + rng.uniform(-2.0, 2.0))  # early or late, in order
            if send_image:
                events.append((k + 0.5, image_stamp, "image"))
            if send_depth:
                events.append((depth_position, depth_stamp, "depth"))
            if send_image and send_depth:
                expected_pairs.add((ns(Image(header=Header(stamp=stamp_of(image_stamp)))),
                                   ns(Image(header=Header(stamp=stamp_of(depth_stamp))))))
        events.append((frames + 5.0, t0 + (frames + 30) * period, "depth"))  # a later depth decides the last image
        events.sort()
        for _, stamp, topic in events:
            (pub_image if topic == "image" else pub_depth).publish(Image(header=Header(stamp=stamp_of(stamp))))
        assert spin(lambda: len(received) == len(events), 30), (len(received), len(events))

        images = sum(topic == "image" for _, _, topic in events)
        assert len(expected_pairs) > 60 and images - len(expected_pairs) >= 5  # the streams do test drops
        assert sorted(theirs) == sorted(expected_pairs)  # message_filters pairs every image with its own depth
        assert sorted(ours) == sorted(theirs)
        assert sync.unmatched == images - len(ours)  # what message_filters cannot tell
    finally:
        executor.shutdown()
        node.destroy_node()



def _launch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("aliked_vo_launch", REPO_ROOT / "launch/aliked_vo.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rviz_fixed_frame_follows_the_odometry_frame(tmp_path):
    """rviz starts with the node's odom_frame as its fixed frame: the launch argument, else the params file's."""
    from launch import LaunchContext

    module = _launch_module()
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    odom_frame: vo_odom\n")
    context = LaunchContext()
    context.launch_configurations.update({"params_file": str(REPO_ROOT / "config/params.yaml"), "odom_frame": ""})
    assert module._odom_frame(context) == "odom"
    context.launch_configurations["params_file"] = str(params)
    assert module._odom_frame(context) == "vo_odom"
    context.launch_configurations["odom_frame"] = "map_odom"
    assert module._odom_frame(context) == "map_odom"


def test_rviz_shows_the_namespaced_nodes_topics(tools_env, monkeypatch):
    """With namespace:=front the node is /front/aliked_vo, and rviz's view shows its topics, not /aliked_vo's."""
    from launch import LaunchContext

    monkeypatch.setenv("AMENT_PREFIX_PATH", tools_env["AMENT_PREFIX_PATH"])  # the package's share directory

    module = _launch_module()
    context = LaunchContext()
    assert module._rviz_config(context).endswith("aliked_ros/config/aliked_vo.rviz")  # the package's own
    context.launch_configurations["namespace"] = "front"
    context.launch_configurations["ros_namespace"] = "robot1"  # this launch file included under PushRosNamespace
    text = Path(module._rviz_config(context)).read_text()
    topics = set(re.findall(r"Value: (/\S+)", text))
    assert topics == {"/robot1/front/aliked_vo/path", "/robot1/front/aliked_vo/odometry",
                      "/robot1/front/aliked_vo/debug_image"}, topics
    context.launch_configurations.update({"namespace": "/", "ros_namespace": ""})
    assert module._node_path(context) == "/aliked_vo"


def test_two_cameras_two_launched_nodes(shared_dir, ros_process, ros2, tools_env, ros_context):
    """One launch per camera with namespace:= and camera:=: two nodes, /front/aliked_vo and /rear/aliked_vo, each
    on its own camera's topics with its own outputs and TF frames; a bad namespace is refused before any start."""
    refused = ros2("launch", "aliked_ros", "aliked_vo.launch.py", "namespace:=9front", timeout=60)
    assert refused.returncode == 1 and "namespace:=9front is not a ROS namespace: namespace must not have a token " \
        "that starts with a number" in refused.stdout + refused.stderr, refused
    launches = {side: launch(ros_process, tools_env, f"namespace:={side}", f"camera:=/{side}_cam", "image:=image",
                             "extractor:=orb", f"odom_frame:={side}_odom", f"base_frame:={side}_base",
                             name=f"launch_{side}")
                for side in ("front", "rear")}
    graphs = {side: VoGraph(ros_context, namespace=f"/{side}_cam", node_ns=f"/{side}/aliked_vo")
              for side in ("front", "rear")}
    try:
        for side, g in graphs.items():
            g.wait_for_node(launches[side])
        frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:3]
        for frame in frames:
            graphs["front"].publish_and_wait(frame)
        graphs["rear"].publish_and_wait(frames[0])
        for g in graphs.values():
            g.spin_until(lambda: False, 0.5)
        assert len(graphs["front"].status) == 3 and len(graphs["rear"].status) == 1
        for side, processed in (("front", "3"), ("rear", "1")):  # each node's own /diagnostics status
            assert graphs[side].spin_until(
                lambda: graphs[side].latest_diagnostics().get("frames_processed") == processed, 10), side
        assert {m.header.frame_id for m in graphs["front"].odometry} == {"front_odom"}
        assert {m.child_frame_id for m in graphs["rear"].odometry} == {"rear_base"}
        names = until(lambda: (r := ros2("node", "list")).returncode == 0 and
                      {"/front/aliked_vo", "/rear/aliked_vo"} <= set(r.stdout.split()) and r.stdout, 30, step=1.0)
        assert names, ros2("node", "list").stdout
        for side, process in launches.items():
            stop_launch_with_sigint(process, node_pid(process))
    finally:
        for g in graphs.values():
            g.close()


@pytest.mark.parametrize("argument, message", [
    ("extractr:=orb", "unknown launch argument 'extractr': did you mean 'extractor'?"),
    ("use_depth:=ture", "launch argument use_depth:=ture is not true or false"),
    ("max_keypoints:=abc", "launch argument max_keypoints:=abc is not a number"),
    ("params_file:=/nonexistent/params.yaml", "params_file /nonexistent/params.yaml: no such file"),
    ("rviz:=yes", "launch argument rviz:=yes is not true or false"),
    ("next_frame_wait:=soon", "launch argument next_frame_wait:=soon is not a number"),  # a parameter, undeclared
    ("camera_mount:=0.1", "launch argument camera_mount:=0.1 is not a list ([a, b, ...])"),
    ("publis_tf:=false", "unknown launch argument 'publis_tf': did you mean 'publish_tf'?"),
], ids=["misspelt", "bool_typo", "not_a_number", "no_params_file", "rviz_yes", "parameter_not_a_number",
        "parameter_not_a_list", "parameter_misspelt"])
def test_ros2_launch_refuses_what_the_node_would_silently_ignore(argument, message, ros_process, tools_env):
    """Launch drops an undeclared argument, rcl keeps the params file's value when an override's type differs and
    starts on defaults without the params file, and rviz:=yes failed after the node had started (left running):
    each is refused before the node starts, in one line, exit code 1."""
    launched = launch(ros_process, tools_env, "camera:=/cam", "extractor:=orb", argument)
    code = launched.wait(60)
    output = launched.output()
    assert code == 1 and message in output, output
    assert "process started" not in output and "Traceback" not in output, output


def test_replay_waiting_for_a_status_topic_nobody_publishes_says_so(shared_dir, ros_process, tools_env):
    """A typo in --wait-for (/aliked_vo/statuss) waited --wait-timeout per frame (60 s each by default), then
    exited 0 with only a count in its JSON: now it stops at once with one line, exit 1. (No node here: the
    inputs have no subscriber either, said and published anyway, as before.)"""
    process = ros_process([sys.executable, "-m", "aliked_ros.cli", "replay", str(shared_dir / "data/tum_fr2_desk"),
                           "--no-depth", "--quiet", "--wait-for", "/aliked_vo/statuss", "--wait-subscribers", "1",
                           "--max-frames", "3"], name="replay", extra_env=tools_env)
    code = process.wait(60)
    output = process.output()
    assert code == 1 and "replay: error: nobody publishes /aliked_vo/statuss (--wait-for)" in output, output
    assert "Traceback" not in output
