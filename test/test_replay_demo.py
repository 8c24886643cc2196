"""Replay (folders and bags onto a live graph), /clock, synthetic sequences, and the one-command demo."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from aliked_ros.datasets import open_sequence
from aliked_ros.evaluation import evaluate
from aliked_ros.odometry import Frame, VisualOdometry
from aliked_ros.synth import SynthConfig, SyntheticSequence
from aliked_ros.tools.eval import run_offline
from test_node import _Frames, camera_poses, start_node
from vo_graph import VoGraph


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aliked_ros.cli", *args]


class Listener:
    """Counts what a replay publishes (pytest process)."""

    def __init__(self, context, namespace="/camera", use_sim_time=False, compressed_depth=False):
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import CompressedImage

        self.node = rclpy.create_node("replay_listener", context=context,
                                      parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.images, self.infos, self.depths = [], [], []
        self.node.create_subscription(Image, f"{namespace}/image", self.images.append, qos)
        self.node.create_subscription(CameraInfo, f"{namespace}/camera_info", self.infos.append, qos)
        if compressed_depth:
            self.node.create_subscription(CompressedImage, f"{namespace}/depth/compressedDepth", self.depths.append, qos)
        else:
            self.node.create_subscription(Image, f"{namespace}/depth", self.depths.append, qos)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def test_synth_is_accurate_for_the_vo_core(extractor_cache):
    sequence = SyntheticSequence(SynthConfig())  # the default sequence (the demo's)
    frames = list(sequence)
    path = np.sum(np.linalg.norm(np.diff(sequence.groundtruth.poses[:, :3, 3], axis=0), axis=1))
    mono = _Frames([Frame(f.image, f.stamp, f.camera) for f in frames], sequence)
    run = run_offline(mono, VisualOdometry(extractor_cache("aliked-t16")), progress=False)
    metrics = evaluate(run.trajectory, sequence.groundtruth, "sim3", 0.02, run.map_ids, run.initialized)
    assert metrics.ate_rmse_m <= 0.01 * path and metrics.initializing <= 3
    run = run_offline(_Frames(frames, sequence), VisualOdometry(extractor_cache("aliked-t16")), progress=False)
    assert evaluate(run.trajectory, sequence.groundtruth, "se3").ate_rmse_m <= 0.005
    # deterministic: the same seed renders the same pixels, another seed a different scene
    again = SyntheticSequence(SynthConfig()).render(5)[0]
    assert np.array_equal(again, frames[5].image)
    assert not np.array_equal(SyntheticSequence(SynthConfig(seed=1)).render(5)[0], again)


def test_synth_pixel_area_is_the_mean_of_its_samples():
    """``pixel_samples`` 2: each pixel the mean of 2 x 2 samples, i.e. exactly the same scene rendered at twice the
    resolution (its pixels are the samples) and averaged over 2 x 2 blocks; depth where the samples agree equals
    the one-sample render's (to the curvature of 1/z across a pixel), NaN only at depth steps."""
    config = SynthConfig(frames=3, rate_hz=30.0, width=160, height=120, seed=4)
    area, area_depth = SyntheticSequence(replace(config, pixel_samples=2)).render(2)
    fine = SyntheticSequence(replace(config, width=320, height=240)).render(2)[0]
    mean = cv2.resize(fine.astype(np.float32), (160, 120), interpolation=cv2.INTER_AREA)
    assert np.array_equal(area, np.round(mean).astype(np.uint8))
    point, point_depth = SyntheticSequence(config).render(2)
    assert 0 < np.abs(area.astype(int) - point).mean() < 8  # the same view, not the same pixels
    both = np.isfinite(area_depth) & np.isfinite(point_depth)
    assert np.median(np.abs(area_depth[both] / point_depth[both] - 1)) < 1e-4
    assert np.isnan(area_depth).mean() < 0.05
    # the rolling shutter's bands and the samples together: each band is still read at its own time
    shutter = SyntheticSequence(replace(config, pixel_samples=2, rolling_shutter_s=0.02)).render(2)[0]
    assert shutter.shape == area.shape and not np.array_equal(shutter, area)
    with pytest.raises(ValueError, match="pixel_samples"):
        SynthConfig(pixel_samples=0)


def test_synth_movers_walk_across_the_scene_and_leave_the_rest_as_it_was():
    """``movers``: people-sized panels walking to and fro in front of the scene. They occlude it (nearer than
    what they cover, in the depth image too), they move from frame to frame while the camera stands still, and
    everything they do not cover is the scene as rendered without them (their own random stream)."""
    config = SynthConfig(frames=20, rate_hz=10.0, width=320, height=240, speed_m_s=0.0, seed=3)
    plain = SyntheticSequence(config)
    walked = SyntheticSequence(replace(config, movers=3))
    covered = []
    for index in (0, 5):
        image, depth = walked.render(index)
        plain_image, plain_depth = plain.render(index)
        mask = ~np.isclose(np.nan_to_num(depth), np.nan_to_num(plain_depth), atol=1e-6)
        assert 0.01 < mask.mean() < 0.6, mask.mean()  # someone is in view, not all of it
        assert np.all(depth[mask] < np.nan_to_num(plain_depth[mask], nan=np.inf))  # in front of what they cover
        assert 1.2 < np.nanmin(depth[mask]) and np.nanmax(depth[mask]) < 4.3  # at 1.4, 2.7 and 4.0 m
        unchanged = ~cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # (edges blend)
        assert np.array_equal(image[unchanged], plain_image[unchanged])
        covered.append(mask)
    assert (covered[0] != covered[1]).mean() > 0.005  # they walked on: 0.5 s at 1.2 m/s
    assert np.array_equal(plain.groundtruth.poses, walked.groundtruth.poses)  # the camera's path is the same
    with pytest.raises(ValueError, match="movers"):
        SynthConfig(movers=-1)


def test_synth_pixel_area_keeps_tracked_points_on_the_true_flow():
    """Why the option exists: at 120 Hz the view moves by a fraction of a pixel per frame, and with one sample per
    pixel a distant texture (minified: 2 texels per pixel at 4 m) aliases, so a patch tracked by Lucas-Kanade from
    the first frame leaves the true flow (ground truth poses and depth) by more than with the pixel's area."""
    def jitter(pixel_samples: int) -> float:
        sequence = SyntheticSequence(SynthConfig(frames=12, rate_hz=120.0, seed=1, pixel_samples=pixel_samples))
        first, depth = sequence.render(0)
        gray0 = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY)
        corners = cv2.goodFeaturesToTrack(gray0, 400, 0.01, 8).reshape(-1, 2).astype(np.float64)
        z = depth[np.round(corners[:, 1]).astype(int), np.round(corners[:, 0]).astype(int)]
        corners, z = corners[np.isfinite(z)], z[np.isfinite(z)]
        K = sequence.camera
        points = np.column_stack([(corners[:, 0] - K.cx) / K.fx * z, (corners[:, 1] - K.cy) / K.fy * z, z])
        errors = []  # (frames, points, 2): tracked - true position, NaN where the tracker gave up
        for index in range(1, 12):
            T = np.linalg.inv(sequence.groundtruth.poses[index]) @ sequence.groundtruth.poses[0]
            seen = points @ T[:3, :3].T + T[:3, 3]
            truth = np.column_stack([K.fx * seen[:, 0] / seen[:, 2] + K.cx, K.fy * seen[:, 1] / seen[:, 2] + K.cy])
            gray = cv2.cvtColor(sequence.render(index)[0], cv2.COLOR_RGB2GRAY)
            tracked, status, _ = cv2.calcOpticalFlowPyrLK(gray0, gray, corners.astype(np.float32).reshape(-1, 1, 2),
                                                          truth.astype(np.float32).reshape(-1, 1, 2).copy(),
                                                          winSize=(9, 9), maxLevel=0,
                                                          flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
            error = tracked.reshape(-1, 2) - truth
            error[(status.reshape(-1) != 1) | (np.linalg.norm(error, axis=1) > 2)] = np.nan
            errors.append(error)
        # the error's change from frame to frame is the jitter (its constant part is the depth's rounding)
        change = np.linalg.norm(np.diff(np.stack(errors), axis=0), axis=2)
        return float(np.median(change[np.isfinite(change)]))

    assert jitter(2) < 0.8 * jitter(1)


def test_synth_cli_folder_and_bags_read_back(tmp_path):
    for fmt, name in (("tum", "folder"), ("bag", "bag2"), ("mcap", "mcap")):
        result = subprocess.run(cli("synth", str(tmp_path / name), "--frames", "5", "--format", fmt, "--noise", "2",
                                    "--distortion", "0.05,-0.01,0,0,0"), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        sequence = open_sequence(tmp_path / name)
        frames = list(sequence)
        assert len(frames) == 5 and frames[0].depth is not None and sequence.camera.distortion[0] == 0.05
        assert sequence.groundtruth is not None or fmt != "tum"


def test_replay_tum_folder_into_node_equals_eval(shared_dir, weights_dir, ros_process, ros_context, ros_env,
                                                  extractor_cache):
    sequence = open_sequence(shared_dir / "data/tum_fr2_desk")
    node = start_node(ros_process, weights_dir, "-p", "qos:=reliable")
    graph = VoGraph(ros_context, reliable=True)
    graph.wait_for_node(node)
    replay = ros_process(cli("replay", str(shared_dir / "data/tum_fr2_desk"), "--namespace", "/cam", "--rate", "0",
                             "--wait-for", "/aliked_vo/status", "--max-frames", "8", "--quiet"), name="replay")
    assert graph.spin_until(lambda: not replay.running, 120), replay.output()
    assert replay.wait(5) == 0, replay.output()
    lines = [line for line in replay.output().splitlines() if line.startswith("{")]
    assert lines, replay.output()
    summary = json.loads(lines[-1])
    assert summary["frames_published"] == 8 and summary["status_missed"] == 0
    graph.spin_until(lambda: len(graph.odometry) >= 8, 10)
    assert len(graph.status) == 8 and graph.status[-1].frames_dropped == 0
    frames = list(sequence)[:8]
    offline = run_offline(_Frames(frames, sequence), VisualOdometry(extractor_cache("aliked-t16")), progress=False)
    np.testing.assert_allclose(camera_poses(graph), offline.trajectory.poses, atol=1e-6)
    graph.close()


@pytest.mark.parametrize("ros1, depth_codec", [(True, None), (False, None), (False, "rvl")],
                         ids=["ros1-bag", "ros2-bag", "ros2-bag-compressed-depth"])
def test_replay_bags_with_clock(ros1, depth_codec, tmp_path, ros_process, ros_context):
    """``depth_codec``: the bag's depth in compressedDepth (rvl), replayed with ``--compressed-depth png``."""
    from aliked_ros.compressed_depth import decode_compressed_depth
    from aliked_ros.datasets.bag_writer import write_bag

    sequence = SyntheticSequence(SynthConfig(frames=6))
    bag = write_bag(sequence, tmp_path / ("synth.bag" if ros1 else "synth"), ros1=ros1, compressed_depth=depth_codec)
    listener = Listener(ros_context, use_sim_time=True, compressed_depth=depth_codec is not None)
    replay = ros_process(cli("replay", str(bag), "--rate", "0", "--clock", "--quiet", "--wait-subscribers", "30",
                             *(["--compressed-depth", "png"] if depth_codec else [])), name="replay")
    assert listener.spin_until(lambda: len(listener.images) == 6 and len(listener.depths) == 6, 60), replay.output()
    assert replay.wait(30) == 0, replay.output()
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in listener.images]
    np.testing.assert_allclose(stamps, sequence.stamps, atol=1e-6)
    assert listener.images[0].encoding == "rgb8"
    if depth_codec:
        assert listener.depths[0].format == "16UC1; compressedDepth png"
        for message, frame in zip(listener.depths, sequence):
            depth = decode_compressed_depth(message.format, message.data)
            assert np.nanmax(np.abs(depth - frame.depth)) <= 0.0005 + 1e-6
    else:
        assert listener.depths[0].encoding == "32FC1"
    assert listener.infos[0].k[0] == pytest.approx(sequence.camera.fx)
    # the use_sim_time node's clock follows /clock: it ends at the last frame's stamp
    listener.spin_until(lambda: abs(listener.node.get_clock().now().nanoseconds * 1e-9 - sequence.stamps[-1]) < 1e-6, 5)
    assert listener.node.get_clock().now().nanoseconds * 1e-9 == pytest.approx(sequence.stamps[-1], abs=1e-6)
    listener.close()


def test_replay_of_a_source_without_depth_waits_for_its_own_topics_only(shared_dir, ros_process, ros_context):
    """A monocular source: the replay advertises no depth topic, so a monocular node's image and camera_info
    subscriptions are all it waits for (it waited the whole --wait-subscribers for a depth subscriber)."""
    node = rclpy.create_node("image_only", context=ros_context)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    images = []
    node.create_subscription(Image, "/camera/image", images.append, qos)
    node.create_subscription(CameraInfo, "/camera/camera_info", lambda message: None, qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        replay = ros_process(cli("replay", str(shared_dir / "data/tum_fr2_desk"), "--rate", "0", "--max-frames", "3",
                                 "--wait-subscribers", "120", "--quiet"), name="replay_mono")
        deadline = time.monotonic() + 90
        while len(images) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert len(images) == 3, replay.output()
        assert replay.wait(30) == 0 and "no subscriber" not in replay.output(), replay.output()
    finally:
        executor.shutdown()
        node.destroy_node()


def test_replay_errors_and_ctrl_c(tmp_path, shared_dir, ros_process, ros_context):
    garbage = tmp_path / "broken.bag"
    garbage.write_bytes(b"#ROSBAG V2.0\n" + bytes(500))
    result = subprocess.run(cli("replay", str(garbage)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "cannot read bag" in result.stderr and "Traceback" not in result.stderr
    folder = tmp_path / "nocalib"
    (folder / "rgb").mkdir(parents=True)
    (folder / "rgb.txt").write_text("1.0 rgb/a.png\n")
    result = subprocess.run(cli("replay", str(folder)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no camera calibration" in result.stderr
    from aliked_ros.datasets.bag_writer import write_bag

    bag = write_bag(open_sequence(shared_dir / "data/tum_fr2_desk"), tmp_path / "two.bag", ros1=True,
                    topics={"image": "/a/image", "camera_info": "/a/camera_info"})
    result = subprocess.run(cli("replay", str(bag), "--bag-image-topic", "/missing"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "topic /missing is not in the bag" in result.stderr
    # Ctrl-C in the middle of a real-time replay: prompt, clean exit
    listener = Listener(ros_context)
    replay = ros_process(cli("replay", str(bag), "--rate", "0.5", "--wait-subscribers", "30", "--quiet"),
                         name="replay")
    assert listener.spin_until(lambda: listener.images, 60), replay.output()  # publishing: mid-replay from here
    listener.close()
    assert replay.running
    import os

    os.killpg(replay.popen.pid, signal.SIGINT)
    assert replay.wait(10) == 130 and "interrupted" in replay.output()


@pytest.mark.parametrize("extractor,frames,depth", [("aliked-t16", 10, False), ("sift", 6, True)])
def test_demo_short_run(extractor, frames, depth, weights_dir, tmp_path, ros_env):
    env = dict(ros_env, ALIKED_WEIGHTS_DIR=str(weights_dir))
    result = subprocess.run(cli("demo", "--frames", str(frames), "--output-dir", str(tmp_path), "--json", "--device",
                                "cpu", "--extractor", extractor, "--depth" if depth else "--no-depth"),
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frames_published"] == report["frames_processed"] == report["odometry_received"] == frames
    assert report["frames_dropped"] == 0 and report["node_exit_code"] == 0
    assert report["alignment"] == ("se3" if depth else "sim3")
    # measured 2026-11-30: aliked-t16 monocular 0.82 mm, SIFT RGB-D 1.17 mm, rotation medians 0.015 deg
    assert report["ate_rmse_m"] < 0.003 and report["rot_err_deg"]["median"] < 0.05
    for path in report["files"].values():
        assert path and (tmp_path / path.split("/")[-1]).is_file()


def test_demo_on_a_source_calibrated_by_a_file(shared_dir, tmp_path, ros_env):
    """A TUM folder without camera_info.yaml: the demo refuses it clearly, and runs it with --camera-info."""
    import shutil

    folder = tmp_path / "uncalibrated"
    shutil.copytree(shared_dir / "data/tum_fr2_desk", folder)
    (folder / "camera_info.yaml").unlink()
    base = cli("demo", "--source", str(folder), "--frames", "4", "--extractor", "orb", "--output-dir",
               str(tmp_path / "out"), "--json")
    refused = subprocess.run(base, capture_output=True, text=True, timeout=300, env=ros_env)
    assert refused.returncode != 0 and "calibration" in refused.stderr and "Traceback" not in refused.stderr
    result = subprocess.run(base + ["--camera-info", str(shared_dir / "data/tum_fr2_desk/camera_info.yaml")],
                            capture_output=True, text=True, timeout=300, env=ros_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frames_processed"] == report["odometry_received"] == 4


def test_demo_with_a_missing_weights_file_fails_clearly(tmp_path, ros_env):
    env = {k: v for k, v in ros_env.items() if k != "ALIKED_WEIGHTS_DIR"}
    env["TORCH_HOME"] = str(tmp_path / "torch")
    result = subprocess.run(cli("demo", "--frames", "3", "--output-dir", str(tmp_path), "--weights", str(tmp_path / "none.pth")),
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1 and "weights file not found" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_during_demo_leaves_no_process(weights_dir, tmp_path, ros_process):
    import os

    from conftest import leftover_test_processes

    demo = ros_process(cli("demo", "--frames", "120", "--output-dir", str(tmp_path), "--extractor", "orb"),
                       name="demo", extra_env={"ALIKED_WEIGHTS_DIR": str(weights_dir)})
    assert demo.wait_for_output("replaying", 120), demo.output()
    time.sleep(1.0)  # (120 lock-step frames: several seconds on any machine measured)
    os.killpg(demo.popen.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert demo.wait(30) == 130, demo.output()
    assert "interrupted" in demo.output()
    deadline = time.monotonic() + 10
    while leftover_test_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftover_test_processes(), "the node outlived the demo"
