"""The VO core on the shared real sequences, scored against ground truth (the targets of the VO issue), plus
tracking behaviour and bad input."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from aliked_ros.datasets import DatasetError, open_sequence
from aliked_ros.evaluation import evaluate
from aliked_ros.geometry.camera import CalibrationError
from aliked_ros.odometry import DuplicateFrameError, Frame, OdometryConfig, TrackingState, VisualOdometry
from aliked_ros.tools.bench_vo import _Replayed
from aliked_ros.tools.eval import run_offline


@pytest.fixture(scope="session")
def aliked_runs(shared_dir, extractor_cache):
    """One offline ALIKED-t16 run per shared sequence, shared by the tests below."""
    runs = {}
    for name, depth in (("tum_fr2_desk", False), ("tum_fr1_rpy_rgbd", True), ("euroc_v101_static_stereo", False)):
        sequence = open_sequence(shared_dir / "data" / name, use_depth=depth)
        runs[name] = (sequence, run_offline(sequence, VisualOdometry(extractor_cache("aliked-t16")), progress=False))
    return runs


def test_fr2_desk_monocular_targets(aliked_runs):
    sequence, run = aliked_runs["tum_fr2_desk"]
    assert run.frames == 20 and len(run.trajectory) == 20 and run.lost == 0
    # scored as `aliked-vo eval` scores it (the README's figure): the frame posed before the map's initialisation
    # (rotation only) is not aligned with the others
    assert run.initialized.tolist() == [True, False] + [True] * 18
    metrics = evaluate(run.trajectory, sequence.groundtruth, "sim3", 0.02, run.map_ids, run.initialized)
    assert metrics.rot_err_deg["median"] <= 0.30
    assert metrics.tdir_err_deg["median"] <= 8.0
    assert metrics.ate_rmse_m <= 0.0045  # measured 4.05 mm (README "Results"); the target 3.5 mm


def test_fr1_rpy_rgbd_metric_targets(aliked_runs):
    sequence, run = aliked_runs["tum_fr1_rpy_rgbd"]
    assert len(run.trajectory) == 40
    metrics = evaluate(run.trajectory, sequence.groundtruth, "se3")
    assert metrics.ate_rmse_m <= 0.0085  # 7.5 mm (9.0 mm before the close-points keyframe rule)
    assert metrics.rot_err_deg["median"] <= 0.5


def test_fr1_rpy_rgbd_with_orb_keeps_its_depth_landmarks(shared_dir, extractor_cache):
    """A fast turn thins the tracked landmarks within a few frames; the keyframe that brings new depth points must
    come then (ORB-SLAM's "insert close points"), not when few of the landmarks tracked into the last keyframe are
    left: 14.2 mm before that rule, 7.3 mm with it."""
    sequence = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd", use_depth=True)
    run = run_offline(sequence, VisualOdometry(extractor_cache("orb")), progress=False)
    assert len(run.trajectory) == 40 and run.lost == 0
    assert evaluate(run.trajectory, sequence.groundtruth, "se3").ate_rmse_m <= 0.010


class _Window:
    """Frames ``a:b`` of a sequence, as a sequence for ``run_offline``."""

    def __init__(self, sequence, frames: list, window: slice) -> None:
        self.frames, self.name = frames[window], f"{sequence.name}[{window.start}:{window.stop}]"

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)


def test_kitti_holds_its_scale_across_settings_and_windows(shared_dir, extractor_cache):
    """Monocular KITTI 01 (highway, 51.8 m) with the default ``ba_single_view_prior`` (0.2): within the issue's
    0.25 m on the whole clip, under two nearby settings and on two windows of it. Without the priors (0) the same
    runs gave 0.21 / 1.38 / 0.66 m and 0.47 / 0.38 m (2026-11-30, DEVELOPERS.md "Single-view landmarks"): the
    adjustment moved a keyframe from under the landmarks only it observes."""
    sequence = open_sequence(shared_dir / "data/kitti01_000_050")
    frames = list(sequence)
    extractor = extractor_cache("aliked-t16")
    features = {id(frame.image): extractor.extract(frame.image) for frame in frames}  # once, replayed to each run
    whole = slice(0, len(frames))
    for setting, window in (({}, whole), ({"reprojection_threshold_px": 1.98}, whole),
                            ({"keyframe_parallax_px": 19.5}, whole), ({}, slice(15, 51)), ({}, slice(7, 43))):
        vo = VisualOdometry(_Replayed(extractor, features), OdometryConfig(**setting))
        assert vo.config.ba_single_view_prior == 0.2
        run = run_offline(_Window(sequence, frames, window), vo, progress=False)
        metrics = evaluate(run.trajectory, sequence.groundtruth, "sim3", 0.02, run.map_ids, run.initialized)
        assert run.resets == 0 and len(run.trajectory) == window.stop - window.start, (setting, window)
        assert metrics.ate_rmse_m <= 0.25, (setting, window, metrics.ate_rmse_m)


def test_euroc_static_camera_does_not_drift(aliked_runs):
    sequence, run = aliked_runs["euroc_v101_static_stereo"]
    assert len(run.trajectory) == 30
    metrics = evaluate(run.trajectory, sequence.groundtruth, "sim3")
    assert metrics.path_length_m <= 0.005
    # no invented translation at all: every pose stays at the origin
    assert np.abs(run.trajectory.poses[:, :3, 3]).max() == 0.0


def test_track_ids_persist_on_real_frames(shared_dir, extractor_cache):
    sequence = open_sequence(shared_dir / "data/tum_fr2_desk")
    vo = VisualOdometry(extractor_cache("aliked-t16"))
    results = [vo.process(frame) for _, frame in zip(range(4), sequence)]
    seen: set[int] = set()
    for previous, current in zip(results, results[1:]):
        continued = current.track_ages > 0
        assert continued.sum() > 300  # most features survive 10 Hz motion
        # a continued track's id existed in the previous frame, with age one less; or an earlier frame's, with
        # age 1: its landmark found again by projection (a track that was missed)
        prev_age = dict(zip(previous.track_ids.tolist(), previous.track_ages.tolist()))
        for track, age in zip(current.track_ids[continued].tolist(), current.track_ages[continued].tolist()):
            if track in prev_age:
                assert prev_age[track] == age - 1
            else:
                assert age == 1 and track in seen
        assert np.all(current.inliers[continued])  # only verified matches continue tracks
        new_ids = set(current.track_ids[~continued].tolist())
        assert not new_ids & seen and not new_ids & set(prev_age)
        seen |= set(previous.track_ids.tolist())
    assert len(set(results[-1].track_ids.tolist())) == len(results[-1].track_ids)


def test_black_frame_is_lost_then_recovers(shared_dir, extractor_cache):
    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:4]
    vo = VisualOdometry(extractor_cache("aliked-t16"))
    vo.process(frames[0]), vo.process(frames[1])
    black = Frame(np.zeros_like(frames[2].image), frames[2].stamp, frames[2].camera)
    lost = vo.process(black)
    assert lost.state == TrackingState.LOST and lost.T_odom_camera is None and len(lost.features) == 0
    recovered = vo.process(frames[3])
    assert recovered.state == TrackingState.TRACKING and recovered.T_odom_camera is not None
    assert recovered.num_inliers > 100
    # the LOST frame changed nothing the pose depends on: the same pose as a run that never saw it
    unbroken = VisualOdometry(extractor_cache("aliked-t16"))
    for frame in (frames[0], frames[1], frames[3]):
        expected = unbroken.process(frame)
    np.testing.assert_allclose(recovered.T_odom_camera, expected.T_odom_camera, atol=1e-9)


def _dark_frame(rng: np.random.Generator, shape: tuple, kind: str) -> np.ndarray:
    """Black plus a sensor's noise: (black level, sigma) in grey levels, clipped; grey or colour; raw or JPEG."""
    level, sigma, colour, quality = {"colour 2": (0, 2, True, 0), "grey 2": (0, 2, False, 0),
                                     "grey 6 on 16": (16, 6, False, 0), "colour 6 on 16, JPEG 60": (16, 6, True, 60)}[kind]
    dark = np.clip(np.round(rng.normal(level, sigma, shape if colour else shape[:2])), 0, 255).astype(np.uint8)
    if quality:
        dark = cv2.imdecode(cv2.imencode(".jpg", dark, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)
    return dark


@pytest.mark.parametrize("extractor", ["aliked-t16", "orb"])
@pytest.mark.parametrize("kind", ["colour 2", "grey 2", "grey 6 on 16", "colour 6 on 16, JPEG 60"])
def test_a_dark_frame_with_sensor_noise_is_a_black_frame(shared_dir, extractor_cache, extractor, kind):
    """A dark scene (lights off, a lens cap, the camera turned to an empty room) is black plus the sensor's noise,
    in which every detector finds maxima: ALIKED-t16 kept ~1000 on a grey frame of 2 grey levels sigma (only
    colour noise of that level stayed below ``min_score``), ORB hundreds at 6. Such frames started maps, and the
    network's response to noise, matched from frame to frame, tracked a camera that saw nothing (a synthetic turn
    towards the scene's open side: 24 maps, path 9.4 times the true one; DEVELOPERS.md "A dark frame", "A frame
    of noise"). Now the extractor finds its keypoints no higher than the frame's own noise
    (``ExtractorConfig.min_contrast``) and keeps none: the frame is LOST, and the next real frame tracks the map
    as if it had not been there."""
    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:4]
    vo = VisualOdometry(extractor_cache(extractor))
    vo.process(frames[0]), vo.process(frames[1])
    rng = np.random.default_rng(0)
    for k in range(5):
        dark = _dark_frame(rng, frames[2].image.shape, kind)
        result = vo.process(Frame(dark, frames[2].stamp + 1e-3 * k, frames[2].camera))
        assert result.state == TrackingState.LOST and result.T_odom_camera is None
        assert len(result.features) == 0
    recovered = vo.process(frames[3])
    assert recovered.state == TrackingState.TRACKING and vo.resets == 0 and recovered.map_id == 0


def test_a_first_frame_of_another_scene_neither_rotates_the_odometry_nor_holds_tracking(shared_dir, extractor_cache):
    """The first frame is noise (a driver's garbage frame), once with valid depth (a one-keyframe map of noise),
    once without (a keyframe and no landmarks), then real RGB-D frames. The real frames match the noise at random
    (~300 mutual matches, an essential matrix with 20 of them inside its band): no motion may come of that (it
    gave a 63 deg rotation), and the young map starts over at once instead of holding the camera LOST for
    ``max_lost_frames`` frames. The extractor now finds such a frame to be noise and keeps none of its keypoints
    (``ExtractorConfig.min_contrast``); the odometry's own defence is tested with that test off."""
    import cv2

    frames = list(open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd"))[:4]
    noise = np.random.default_rng(3).integers(0, 256, frames[0].image.shape, np.uint8)
    assert len(extractor_cache("orb").extract(noise)) == 0
    assert len(extractor_cache("orb", min_contrast=0.0).extract(noise)) > 500
    for depth_m in (1.2, np.nan):
        vo = VisualOdometry(extractor_cache("orb", min_contrast=0.0))
        depth = np.full(frames[0].depth.shape, depth_m, np.float32)
        first = vo.process(Frame(noise, frames[0].stamp - 1.0, frames[0].camera, depth))
        assert first.is_keyframe and first.state == TrackingState.INITIALIZING
        results = [vo.process(frame) for frame in frames]
        assert results[0].state == TrackingState.LOST and results[0].T_odom_camera is None
        assert vo.resets == 1 and results[1].map_id == 1
        assert results[1].reset_reason == "lost with a young map (1 keyframes)"
        assert [r.state for r in results[2:]] == [TrackingState.TRACKING] * 2
        for result in results[1:]:  # fr1_rpy turns ~1 deg per frame
            assert result.motion is None or np.degrees(np.linalg.norm(cv2.Rodrigues(result.motion[:3, :3])[0])) < 3


def test_time_going_backwards_resets(shared_dir, extractor_cache):
    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:3]
    vo = VisualOdometry(extractor_cache("orb"))
    for frame in frames:
        vo.process(frame)
    result = vo.process(frames[0])
    assert result.reset_reason.startswith("time went backwards") and result.state == TrackingState.INITIALIZING
    assert result.frame_index == 0 and vo.resets == 1 and result.track_ages.max() == 0


def test_duplicate_stamp_is_refused_without_changing_state(shared_dir, extractor_cache):
    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:3]
    reference = run_offline(_List(frames), VisualOdometry(extractor_cache("orb")), progress=False)
    vo = VisualOdometry(extractor_cache("orb"))
    vo.process(frames[0])
    second = vo.process(frames[1])
    with pytest.raises(DuplicateFrameError, match="like the previous one"):
        vo.process(frames[1])
    third = vo.process(frames[2])  # as if the duplicate never came
    assert (second.frame_index, third.frame_index) == (1, 2) and vo.resets == 0
    np.testing.assert_allclose(third.T_odom_camera, reference.trajectory.poses[2], atol=1e-9)
    # offline, a repeated frame (e.g. in a bag) is counted and skipped, not fatal
    run = run_offline(_List([frames[0], frames[1], frames[1], frames[2]]), VisualOdometry(extractor_cache("orb")),
                      progress=False)
    assert (run.frames, run.rejected, len(run.trajectory)) == (4, 1, 3)
    np.testing.assert_allclose(run.trajectory.poses, reference.trajectory.poses, atol=1e-9)


def test_a_new_camera_calibration_starts_a_new_map(shared_dir, extractor_cache):
    """A driver reconfigured to another resolution: the map's rays no longer apply, so the first frame of the new
    size resets the pipeline (not LOST for max_lost_frames frames) and tracking starts again on the new camera."""
    import cv2

    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:6]
    vo = VisualOdometry(extractor_cache("orb"))
    for frame in frames[:3]:
        assert vo.process(frame).reset_reason is None
    half = dataclasses.replace(frames[3].camera, width=320, height=240, fx=frames[3].camera.fx / 2,
                               fy=frames[3].camera.fy / 2, cx=frames[3].camera.cx / 2, cy=frames[3].camera.cy / 2)
    small = [Frame(cv2.resize(f.image, (320, 240), interpolation=cv2.INTER_AREA), f.stamp, half) for f in frames[3:]]
    first = vo.process(small[0])
    assert first.reset_reason == "camera changed (640x480 fx 520.9 -> 320x240 fx 260.45)", first.reset_reason
    assert first.map_id == 1 and vo.resets == 1
    assert [vo.process(f).reset_reason for f in small[1:]] == [None, None]  # the same new camera: no more resets


class _List(list):
    """Frames as a sequence for run_offline."""

    name = "frames"


def test_bad_frames_raise_clear_errors(shared_dir, extractor_cache):
    frame = next(iter(open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")))
    vo = VisualOdometry(extractor_cache("orb"))
    with pytest.raises(CalibrationError, match="calibration is for 640x480"):
        vo.process(Frame(frame.image[:, :600], frame.stamp, frame.camera))
    with pytest.raises(Exception, match="depth image is 320x240 px"):
        vo.process(Frame(frame.image, frame.stamp, frame.camera, frame.depth[::2, ::2]))
    nan_depth = np.full_like(frame.depth, np.nan)
    assert vo.process(Frame(frame.image, frame.stamp, frame.camera, nan_depth)).state == TrackingState.INITIALIZING


def run_eval(*args):
    result = subprocess.run([sys.executable, "-m", "aliked_ros.cli", "eval", *args, "--json", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    return result


def test_eval_says_when_no_frame_had_usable_depth_and_scores_it_as_monocular(shared_dir, tmp_path):
    """An RGB-D folder whose depth images hold no valid pixel (all 0): the frames are posed without depth, and eval
    said nothing and scored them with SE(3) as if metric. Now it warns, counts them (``frames_without_depth``)
    and scores Sim(3); with the real depth, the count is 0 and the alignment SE(3)."""
    import shutil

    folder = tmp_path / "no_depth"
    shutil.copytree(shared_dir / "data/tum_fr1_rpy_rgbd", folder)
    for png in (folder / "depth").glob("*.png"):
        cv2.imwrite(str(png), np.zeros(cv2.imread(str(png), cv2.IMREAD_UNCHANGED).shape, np.uint16))
    result = run_eval(str(folder), "--extractor", "orb", "--depth", "--max-frames", "12")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames_without_depth"] == 12 and report["alignment"] == "sim3", report
    assert "12 of 12 frames had no depth image or none with a valid pixel" in result.stderr
    assert "scored as monocular" in report["note"]
    result = run_eval(str(shared_dir / "data/tum_fr1_rpy_rgbd"), "--extractor", "orb", "--depth", "--max-frames", "12")
    report = json.loads(result.stdout)
    assert report["frames_without_depth"] == 0 and report["alignment"] == "se3" and report["note"] is None


def test_eval_cli_json_trajectory_and_plot(shared_dir, tmp_path):
    trajectory, plot = tmp_path / "est.txt", tmp_path / "plot.png"
    result = run_eval(str(shared_dir / "data/tum_fr2_desk"), "--extractor", "sift", "--max-keypoints", "800",
                      "--output-trajectory", str(trajectory), "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("frames", "poses", "alignment", "ate_rmse_m", "rot_err_deg", "tdir_err_deg", "path_length_m",
                "frame_ms_median", "extractor"):
        assert key in report
    assert report["extractor"] == "sift" and report["max_keypoints"] == 800  # the row's setting, in the report
    assert report["keyframe_reattach"] is True  # auto: on for SIFT
    assert report["frames"] == report["poses"] == 20 and report["alignment"] == "sim3"
    assert set(report["rot_err_deg"]) == {"median", "mean"} and report["ate_rmse_m"] < 0.05
    assert len(trajectory.read_text().splitlines()) == 21 and plot.read_bytes()[:4] == b"\x89PNG"


def test_bench_vo_replays_the_features_to_the_same_result_as_eval(shared_dir):
    """`aliked-vo bench-vo` (features extracted once, replayed per solver) gives the ATE `eval` gives for the same
    extractor and solver, and reports the tracking and bundle-adjustment times it is for."""
    source = str(shared_dir / "data/tum_fr2_desk")
    bench = subprocess.run([sys.executable, "-m", "aliked_ros.cli", "bench-vo", source, "--extractor", "orb",
                            "--solvers", "lm", "--json"], capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr[-3000:]
    (row,) = json.loads(bench.stdout)
    assert row["solver"] == "lm" and row["frames"] == 20 and row["keyframes_adjusted"] >= 1
    assert 0 < row["tracking_ms_median"] < 1000 and 0 < row["ba_ms_median"] <= row["ba_ms_max"]
    evaluated = run_eval(source, "--extractor", "orb")
    assert evaluated.returncode == 0, evaluated.stderr
    assert row["ate_rmse_m"] == pytest.approx(json.loads(evaluated.stdout)["ate_rmse_m"], rel=1e-6)


def test_eval_json_is_strict_when_a_metric_has_nothing_to_measure(shared_dir):
    """A camera at rest has no motion direction to score: null in the JSON (strict JSON has no NaN)."""
    result = run_eval(str(shared_dir / "data/euroc_v101_static_stereo"), "--extractor", "orb", "--no-stereo",
                      "--max-frames", "10")
    assert result.returncode == 0, result.stderr

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    report = json.loads(result.stdout, parse_constant=refuse)
    assert report["tdir_err_deg"] == {"median": None, "mean": None} and report["frames"] == 10
    # monocular at rest: no map starts, no pose is scored: the path lengths are unknown (were 0.0, "no motion")
    assert report["segments"] == [] and report["path_length_m"] is None and report["true_path_length_m"] is None


def test_eval_scores_another_systems_trajectory(shared_dir, tmp_path):
    """ORB-SLAM2's estimate of fr2_desk (shared/) scored on our 20 frames, as our runs are: its 3.5 mm over all its
    frames is the VO issue's reference; 19 of the 20 stamps have one of its poses within 20 ms."""
    source = shared_dir / "data/tum_fr2_desk"
    result = run_eval(str(source), "--score", str(source / "orbslam2_estimate.txt"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 20 and report["poses"] == 19 and report["lost"] == 1 and report["extractor"] is None
    assert report["alignment"] == "sim3"
    # the same score from evo itself (an independent implementation): its poses nearest to our frames' stamps,
    # associated with the ground truth, Sim(3)-aligned, translation APE
    from evo.core import metrics, sync
    from evo.core.trajectory import PoseTrajectory3D
    from evo.tools import file_interface

    groundtruth = file_interface.read_tum_trajectory_file(str(source / "groundtruth.txt"))
    estimate = file_interface.read_tum_trajectory_file(str(source / "orbslam2_estimate.txt"))
    stamps = [float(line.split()[0]) for line in (source / "rgb.txt").read_text().splitlines() if line[:1] != "#"]
    nearest = [int(np.argmin(np.abs(estimate.timestamps - t))) for t in stamps]
    kept = sorted({i for i, t in zip(nearest, stamps) if abs(estimate.timestamps[i] - t) <= 0.02})
    ours = PoseTrajectory3D(poses_se3=[estimate.poses_se3[i] for i in kept], timestamps=estimate.timestamps[kept])
    reference, ours = sync.associate_trajectories(groundtruth, ours, max_diff=0.02)
    ours.align(reference, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((reference, ours))
    assert len(kept) == 19
    assert report["ate_rmse_m"] == pytest.approx(ape.get_statistic(metrics.StatisticsType.rmse), rel=1e-9)
    metric = json.loads(run_eval(str(source), "--score", str(source / "orbslam2_estimate.txt"), "--alignment",
                                 "se3").stdout)  # without the scale: never closer than the sim3 fit
    assert metric["alignment"] == "se3" and metric["ate_rmse_m"] > report["ate_rmse_m"]
    lines = (source / "orbslam2_estimate.txt").read_text().splitlines()
    lost = tmp_path / "with_lost_rows.txt"  # a tracker that wrote NaN while lost, and a zero quaternion
    lost.write_text("\n".join(lines[:5] + [lines[5].split()[0] + " nan nan nan 0 0 0 1",
                                          lines[6].split()[0] + " 1 2 3 0 0 0 0"] + lines[7:]) + "\n")
    result = run_eval(str(source), "--score", str(lost))
    assert result.returncode == 0 and "2 of" in result.stderr and "left out" in result.stderr, result.stderr
    assert json.loads(result.stdout)["ate_rmse_m"] > 0
    broken = tmp_path / "broken.txt"
    broken.write_text("1311868169.16 1 2 3\n")
    result = run_eval(str(source), "--score", str(broken))
    assert result.returncode == 1 and "8 columns" in result.stderr


def test_eval_without_groundtruth_and_without_calibration(shared_dir, tmp_path):
    folder = tmp_path / "tum"
    (folder / "rgb").mkdir(parents=True)
    source = shared_dir / "data/tum_fr2_desk"
    lines = (source / "rgb.txt").read_text().splitlines()[3:6]
    for line in lines:
        name = line.split()[1]
        (folder / name).write_bytes((source / name).read_bytes())
    (folder / "rgb.txt").write_text("\n".join(lines) + "\n")
    result = run_eval(str(folder), "--extractor", "orb")
    assert result.returncode == 1 and "no camera calibration" in result.stderr and "--camera-info" in result.stderr
    out = tmp_path / "est.txt"
    result = run_eval(str(folder), "--extractor", "orb", "--camera-info", str(source / "camera_info.yaml"),
                      "--output-trajectory", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ate_rmse_m"] is None and "no ground truth" in report["note"] and out.is_file()
    (folder / lines[1].split()[1]).write_bytes(b"not a png")
    result = run_eval(str(folder), "--extractor", "orb", "--camera-info", str(source / "camera_info.yaml"))
    assert result.returncode == 1 and f"cannot read image {folder / lines[1].split()[1]}" in result.stderr


def test_depth_size_mismatch_names_the_file(shared_dir, tmp_path):
    import cv2

    source = shared_dir / "data/tum_fr1_rpy_rgbd"
    folder = tmp_path / "rgbd"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    row = (source / "associations.txt").read_text().splitlines()[0].split()
    (folder / row[1]).write_bytes((source / row[1]).read_bytes())
    cv2.imwrite(str(folder / row[3]), cv2.imread(str(source / row[3]), cv2.IMREAD_UNCHANGED)[::2, ::2])
    (folder / "associations.txt").write_text(" ".join(row) + "\n")
    (folder / "camera_info.yaml").write_bytes((source / "camera_info.yaml").read_bytes())
    with pytest.raises(DatasetError, match=f"depth {folder / row[3]} is 320x240"):
        list(open_sequence(folder))


def test_eval_fails_when_nothing_associates_with_the_ground_truth(shared_dir, tmp_path):
    """Ground truth whose stamps miss the frames' (here: 1000 s later, as a wrong time base would): the report
    and the trajectory are still written, the note says why, and the exit status is 1, so that a script does not
    take a missing score for a result."""
    import shutil

    source = shared_dir / "data/tum_fr2_desk"
    folder = tmp_path / "shifted"
    shutil.copytree(source, folder)
    rows = []
    for line in (source / "groundtruth.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            rows.append(line)
            continue
        stamp, *rest = line.split()
        rows.append(" ".join([f"{float(stamp) + 1000.0:.6f}", *rest]))
    (folder / "groundtruth.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "est.txt"
    result = run_eval(str(folder), "--extractor", "orb", "--max-frames", "6", "--output-trajectory", str(out))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ate_rmse_m"] is None and "fewer than 2 poses match ground-truth stamps" in report["note"]
    assert "both in seconds?" in report["note"] and out.is_file() and len(out.read_text().splitlines()) >= 2


@pytest.mark.parametrize("args, code, message", [
    (["eval", "{fr2}", "--extractor", "orb", "--max-frames", "0"], 2, "argument --max-frames: 0 is not >= 1"),
    (["eval", "{fr2}", "--extractor", "orb", "--max-keypoints", "-5"], 2, "argument --max-keypoints: -5 is not >= 1"),
    (["eval", "{fr2}", "--extractor", "orb", "--camera-info", "/nonexistent.yaml"], 1,
     "--camera-info /nonexistent.yaml: no such file"),
    (["demo", "--frames", "-3"], 2, "argument --frames: -3 is not >= 1"),
    (["replay", "{fr2}", "--rate", "-1"], 2, "argument --rate: -1 is not >= 0"),
    (["bench-vo", "{fr2}", "--extractor", "orb", "--solvers", "lmm"], 2, "unknown solver lmm"),
    (["extract", "{image}", "--extractor", "orb", "-o", "/nonexistent/x.npz"], 1, "No such file or directory"),
    (["demo", "--domain-id", "233"], 2, "argument --domain-id: 233 is not a ROS_DOMAIN_ID (0..232)"),
    (["bench", "soak", "--domain-id", "-1"], 2, "argument --domain-id: -1 is not a ROS_DOMAIN_ID (0..232)"),
], ids=["max_frames_0", "max_keypoints_negative", "camera_info_missing", "demo_frames_negative", "replay_rate_negative",
        "unknown_solver", "output_folder_missing", "demo_domain_id", "soak_domain_id"])
def test_tool_options_out_of_range_are_one_line_errors(args, code, message, shared_dir):
    """A user's mistake in a tool's options: one line and a non-zero exit, not a traceback, and never taken as "no
    limit" (--max-frames 0 ran every frame, --frames -3 replayed them all, --rate -1 played at full speed)."""
    fr2 = shared_dir / "data/tum_fr2_desk"
    image = sorted((fr2 / "rgb").glob("*.png"))[0]
    argv = [a.format(fr2=fr2, image=image) for a in args]
    result = subprocess.run([sys.executable, "-m", "aliked_ros.cli", *argv], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == code and message in result.stderr, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
