"""Stereo: rectified pairs (StereoCamera from P / camera_info, Tx = -fx B), rectification of a raw calibrated pair
(EuRoC), stereo depth at keypoints against exact rendered depth, metric odometry on a synthetic stereo sequence
with exact ground truth (no scale fitted), the shared EuRoC static stereo window (no drift), the KITTI / EuRoC /
bag readers' left-right pairing, ``aliked-vo replay`` publishing both cameras over DDS, and bad input (sizes,
baseline sign, missing right images): a clear error, never a wrong metric scale."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from aliked_ros.datasets import DatasetError, open_sequence
from aliked_ros.datasets.bag_writer import write_bag
from aliked_ros.datasets.kitti import write_kitti_folder
from aliked_ros.evaluation import evaluate
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.geometry.stereo import StereoCamera, stereo_depth
from aliked_ros.odometry import Frame, OdometryConfig, StereoFrameError, VisualOdometry
from aliked_ros.synth import SynthConfig, SyntheticSequence
from aliked_ros.tools.eval import run_offline
from test_node import _Frames

BASELINE = 0.12
STEREO_SYNTH = SynthConfig(frames=40, rate_hz=30, noise_sigma=2, blur_sigma=0.5, stereo_baseline_m=BASELINE)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aliked_ros.cli", *args]


@pytest.fixture(scope="module")
def synth_stereo():
    sequence = SyntheticSequence(STEREO_SYNTH)
    return sequence, list(sequence)


# --- the rectified stereo camera and its bad inputs ------------------------------------------------------------

def test_stereo_camera_from_projections_and_bad_baselines():
    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    P0 = np.hstack([K, np.zeros((3, 1))])
    P1 = P0.copy()
    P1[0, 3] = -700.0 * 0.54
    stereo = StereoCamera.from_projections((1200, 370), P0, (1200, 370), P1)
    assert stereo.baseline_m == pytest.approx(0.54) and stereo.left.fx == 700 and not stereo.left.is_distorted
    np.testing.assert_allclose(stereo.projections()[1], P1)
    assert stereo.depth_sigma_per_m2(0.5) == pytest.approx(0.5 / (700 * 0.54))
    same = StereoCamera.from_camera_infos({"width": 1200, "height": 370, "p": P0.ravel()},
                                          {"width": 1200, "height": 370, "p": P1.ravel()})
    assert same == stereo
    no_baseline = P0.copy()
    with pytest.raises(CalibrationError, match="Tx = 0"):
        StereoCamera.from_projections((1200, 370), P0, (1200, 370), no_baseline)
    swapped = P0.copy()
    swapped[0, 3] = +700.0 * 0.54
    with pytest.raises(CalibrationError, match="swapped"):
        StereoCamera.from_projections((1200, 370), P0, (1200, 370), swapped)
    with pytest.raises(CalibrationError, match="differ in size"):
        StereoCamera.from_projections((1200, 370), P0, (1240, 376), P1)
    unrectified = P1.copy()
    unrectified[1, 2] += 5
    with pytest.raises(CalibrationError, match="not a rectified"):
        StereoCamera.from_projections((1200, 370), P0, (1200, 370), unrectified)
    with pytest.raises(CalibrationError, match="no projection matrix"):
        StereoCamera.from_camera_infos({"width": 1200, "height": 370, "p": np.zeros(12)},
                                       {"width": 1200, "height": 370, "p": P1.ravel()})
    with pytest.raises(CalibrationError, match="distortion"):
        StereoCamera(CameraModel(640, 480, 500, 500, 320, 240, "plumb_bob", (0.1, 0, 0, 0)), 0.1)


def test_pipeline_refuses_bad_stereo_frames_and_keeps_its_state(synth_stereo, extractor_cache):
    sequence, frames = synth_stereo
    vo = VisualOdometry(extractor_cache("orb"), OdometryConfig(require_stereo=True))
    first = vo.process(frames[0])
    assert first.stereo_matches > 300
    bad = [
        Frame(frames[1].image, frames[1].stamp, frames[1].camera, right_image=frames[1].right_image[:-8],
              stereo=frames[1].stereo),  # right image of another size
        Frame(frames[1].image, frames[1].stamp, frames[1].camera),  # the right stream stopped: no right image
        Frame(frames[1].image, frames[1].stamp, frames[1].camera, right_image=frames[1].right_image),  # no stereo
    ]
    for frame in bad:
        with pytest.raises(StereoFrameError):
            vo.process(frame)
    # nothing changed: the good frame continues the map as if the bad ones never came
    result = vo.process(frames[1])
    assert result.frame_index == 1 and result.T_odom_camera is not None and result.map_id == first.map_id
    # without require_stereo a frame lacking its right image is tracked against the metric map (no new scale)
    free = VisualOdometry(extractor_cache("orb"))
    free.process(frames[0])
    mono = free.process(Frame(frames[1].image, frames[1].stamp, frames[1].camera))
    assert mono.map_id == 0 and mono.stereo_matches == 0 and mono.T_odom_camera is not None


# --- depth and odometry against exact ground truth ------------------------------------------------------------

def test_stereo_depth_matches_rendered_depth(synth_stereo, extractor_cache):
    sequence, frames = synth_stereo
    left, depth = sequence.render(10)
    right = frames[10].right_image
    orb = extractor_cache("orb")
    fl, fr = orb.extract(left), orb.extract(right)
    normalized = sequence.camera.undistort(fl.keypoints)
    result = stereo_depth(fl.keypoints, fl.descriptors, fr.keypoints, fr.descriptors, normalized, sequence.stereo,
                          2.0, 1.0, 256.0, images=(left, right))
    matched = result.right_index >= 0
    assert matched.sum() >= 0.5 * len(fl)
    pixels = np.round(fl.keypoints[matched]).astype(int)
    true_z = depth[pixels[:, 1], pixels[:, 0]]
    hit = np.isfinite(true_z)  # (a keypoint on the image border may see no surface at its rounded pixel)
    assert hit.mean() > 0.95
    relative = np.abs(result.points[matched, 2][hit] - true_z[hit]) / true_z[hit]
    assert np.median(relative) < 0.01 and np.percentile(relative, 80) < 0.03
    assert np.isnan(result.points[~matched]).all()
    # the same pair as grey images with a channel axis (H,W,1), which the extractors take too: the same depths
    grey = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (left, right)]
    as_grey = stereo_depth(fl.keypoints, fl.descriptors, fr.keypoints, fr.descriptors, normalized, sequence.stereo,
                           2.0, 1.0, 256.0, images=tuple(g[:, :, None] for g in grey))
    flat = stereo_depth(fl.keypoints, fl.descriptors, fr.keypoints, fr.descriptors, normalized, sequence.stereo,
                        2.0, 1.0, 256.0, images=tuple(grey))
    np.testing.assert_array_equal(as_grey.points, flat.points)
    assert np.isfinite(as_grey.points[matched]).mean() > 0.9


def test_synthetic_stereo_is_metric(synth_stereo, extractor_cache):
    sequence, frames = synth_stereo
    run = run_offline(_Frames(frames, sequence), VisualOdometry(extractor_cache("orb"),
                                                                OdometryConfig(require_stereo=True)), progress=False)
    assert len(run.trajectory) == len(frames) and run.lost == run.resets == run.rejected == 0
    assert np.median(run.stereo_matches) > 300
    se3 = evaluate(run.trajectory, sequence.groundtruth, "se3", 0.02, run.map_ids, run.initialized)
    sim3 = evaluate(run.trajectory, sequence.groundtruth, "sim3", 0.02, run.map_ids, run.initialized)
    path = se3.true_path_length_m
    assert se3.ate_rmse_m <= 0.015 * path  # no scale fitted
    assert abs(se3.path_length_m / path - 1) <= 0.05
    assert abs(sim3.scale - 1) <= 0.02  # the metric scale is right: a fitted scale would change nothing


def test_euroc_static_stereo_does_not_drift(shared_dir, extractor_cache):
    sequence = open_sequence(shared_dir / "data/euroc_v101_static_stereo", stereo=None)
    assert sequence.has_stereo and sequence.unpaired == 0
    assert 0.105 < sequence.rectification.stereo.baseline_m < 0.115  # EuRoC's ~11 cm baseline, from T_BS
    # ORB keeps the test short (its keypoints jitter more than aliked-t16's: the at-rest rule holds it less often)
    run = run_offline(sequence, VisualOdometry(extractor_cache("orb"), OdometryConfig(require_stereo=True)),
                      progress=False)
    assert len(run.trajectory) == 30 and run.lost == run.resets == run.rejected == 0
    assert np.median(run.stereo_matches) > 300
    positions = run.trajectory.poses[:, :3, 3]
    assert np.linalg.norm(positions - positions[0], axis=1).max() <= 0.004  # no drift: millimetres at 3-5 m
    metrics = evaluate(run.trajectory, sequence.groundtruth, "se3", 0.02, run.map_ids, run.initialized)
    assert metrics.path_length_m <= 0.015 and metrics.ate_rmse_m <= 0.002


def test_euroc_static_stereo_path_within_a_millimetre(shared_dir, extractor_cache):
    """Issue target, with the default extractor: a stereo camera at rest (30 frames) adds no noise walk to the
    path (the at-rest rule: each frame's centre is within its uncertainty of the keyframe's)."""
    sequence = open_sequence(shared_dir / "data/euroc_v101_static_stereo", stereo=True)
    run = run_offline(sequence, VisualOdometry(extractor_cache("aliked-t16"), OdometryConfig(require_stereo=True)),
                      progress=False)
    assert len(run.trajectory) == 30 and run.lost == run.resets == 0
    metrics = evaluate(run.trajectory, sequence.groundtruth, "se3", 0.02, run.map_ids, run.initialized)
    assert metrics.path_length_m <= 0.001 and metrics.ate_rmse_m <= 0.001, (metrics.path_length_m, metrics.ate_rmse_m)


# --- readers: pairing left and right ---------------------------------------------------------------------------

def test_euroc_rectification_puts_matches_on_one_row(shared_dir, extractor_cache):
    sequence = open_sequence(shared_dir / "data/euroc_v101_static_stereo", stereo=True)
    frame = next(iter(sequence))
    assert frame.right_image.shape == frame.image.shape == (480, 752) and frame.stereo.left == sequence.camera
    orb = extractor_cache("orb")
    fl, fr = orb.extract(frame.image), orb.extract(frame.right_image)
    wide = stereo_depth(fl.keypoints, fl.descriptors, fr.keypoints, fr.descriptors,
                        sequence.camera.undistort(fl.keypoints), frame.stereo, 8.0, 1.0, 256.0)
    rows = fl.keypoints[wide.right_index >= 0, 1] - fr.keypoints[wide.right_index[wide.right_index >= 0], 1]
    assert np.median(np.abs(rows)) < 0.7  # rectified: a point's two images lie on one row
    # the ground truth is the rectified left camera's: cam0's centre, rotated by the rectification
    raw = open_sequence(shared_dir / "data/euroc_v101_static_stereo")
    assert not raw.has_stereo and raw.camera.is_distorted
    np.testing.assert_allclose(sequence.groundtruth.poses[:, :3, 3], raw.groundtruth.poses[:, :3, 3], atol=1e-12)
    R = raw.groundtruth.poses[0, :3, :3].T @ sequence.groundtruth.poses[0, :3, :3]
    np.testing.assert_allclose(R, sequence.rectification.T_raw_rect[:3, :3], atol=1e-9)


def test_kitti_and_bag_stereo_pairing(synth_stereo, tmp_path, shared_dir):
    sequence, frames = synth_stereo
    short = _Stereo(frames[:4], sequence)
    folder = write_kitti_folder(short, tmp_path / "kitti")
    kitti = open_sequence(folder, stereo=None)
    assert kitti.has_stereo and kitti.stereo.baseline_m == pytest.approx(BASELINE)
    read = list(kitti)
    assert len(read) == 4 and all(np.array_equal(a.right_image, b.right_image) for a, b in zip(read, frames))
    assert not open_sequence(folder).has_stereo  # the library reads the left camera unless asked
    # a left image without its right one is yielded alone; the stereo pipeline refuses it (counted)
    (folder / "image_1" / "000002.png").unlink()
    assert [f.right_image is None for f in open_sequence(folder, stereo=True)] == [False, False, True, False]
    result = subprocess.run(cli("eval", str(folder), "--extractor", "orb", "--json", "--quiet"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stereo"] and report["alignment"] == "se3" and report["rejected"] == 1 and report["poses"] == 3
    assert report["stereo_matches"] > 300 and "no right image" in result.stderr
    # a bag: left/right image_rect + camera_info; the right P carries the baseline
    bag = open_sequence(write_bag(short, tmp_path / "bag"), stereo=None)
    assert bag.has_stereo and bag.stereo == sequence.stereo and bag.image_topic == "/stereo/left/image_rect"
    assert all(np.array_equal(a.right_image, b.right_image) and a.stamp == pytest.approx(b.stamp)
               for a, b in zip(bag, frames))
    assert bag.unpaired == bag.unpaired_right == 0
    mono = open_sequence(tmp_path / "bag", stereo=False)
    assert not mono.has_stereo and mono.image_topic == "/stereo/left/image_rect"
    with pytest.raises(DatasetError, match="second camera"):
        open_sequence(shared_dir / "data/tum_fr2_desk", stereo=True)


def test_bad_stereo_calibration_is_a_clear_error(synth_stereo, tmp_path):
    sequence, frames = synth_stereo
    folder = write_kitti_folder(_Stereo(frames[:2], sequence), tmp_path / "kitti")
    calib = (folder / "calib.txt").read_text().splitlines()
    P1 = np.array(calib[1].split()[1:], float)
    for tx, message in ((0.0, "Tx = 0"), (-P1[3], "swapped")):
        P1[3] = tx
        (folder / "calib.txt").write_text(calib[0] + "\nP1: " + " ".join(map(str, P1)) + "\n")
        result = subprocess.run(cli("eval", str(folder), "--extractor", "orb", "--quiet"), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


# --- replay: both cameras over DDS ------------------------------------------------------------------------------

def test_replay_publishes_both_cameras(synth_stereo, tmp_path, ros_process, ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    sequence, frames = synth_stereo
    folder = write_kitti_folder(_Stereo(frames[:5], sequence), tmp_path / "kitti")
    node = rclpy.create_node("stereo_listener", context=ros_context)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[str, list] = {name: [] for name in ("left/image_rect", "left/camera_info", "right/image_rect",
                                                       "right/camera_info")}
    for name, received_list in received.items():
        node.create_subscription(Image if name.endswith("rect") else CameraInfo, f"/stereo/{name}",
                                 received_list.append, qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    replay = ros_process(cli("replay", str(folder), "--namespace", "/stereo", "--rate", "0", "--quiet"), name="replay")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(len(v) == 5 for v in received.values()):
        executor.spin_once(timeout_sec=0.05)
    assert all(len(v) == 5 for v in received.values()), (replay.output(), {k: len(v) for k, v in received.items()})
    assert replay.wait(30) == 0, replay.output()
    summary = json.loads([line for line in replay.output().splitlines() if line.startswith("{")][-1])
    assert summary["frames_published"] == summary["right_published"] == 5
    stamps = {name: [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs]
              for name, msgs in received.items()}
    for name in received:
        np.testing.assert_allclose(stamps[name], sequence.stamps[:5], atol=1e-6)
    stereo = StereoCamera.from_camera_infos(received["left/camera_info"][0], received["right/camera_info"][0])
    assert stereo.baseline_m == pytest.approx(BASELINE) and received["right/camera_info"][0].p[3] < 0
    right = np.frombuffer(bytes(received["right/image_rect"][2].data), np.uint8).reshape(frames[2].right_image.shape)
    assert np.array_equal(right, frames[2].right_image)
    executor.shutdown()
    node.destroy_node()


class _Stereo(_Frames):
    """Frames of a stereo sequence as a sequence (for the writers)."""

    def __init__(self, frames, sequence):
        super().__init__(frames, sequence)
        self.camera, self.groundtruth = sequence.camera, sequence.groundtruth
        self.has_stereo, self.has_depth = True, False

