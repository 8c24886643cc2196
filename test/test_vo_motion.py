"""The VO at full camera rate, in slow motion, through stops and turns on the spot, with a frozen camera, lost
and relocalised, with a bounded memory — on synthetic sequences with exact ground truth (``aliked_ros.synth``),
ALIKED-t16 at 640x480 (the default camera); a short, bounded-cost version of the README's measurement runs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aliked_ros.evaluation import evaluate, umeyama
from aliked_ros.geometry.transforms import invert, make_transform, rotation_angle
from aliked_ros.odometry import DuplicateFrameError, Frame, OdometryConfig, TrackingState, VisualOdometry
from aliked_ros.synth import SynthConfig, SyntheticSequence
from aliked_ros.trajectory import Trajectory

_frames_cache: dict = {}


class _Frames(list):
    """Frames as a sequence for run_offline, without depth (monocular)."""

    name = "synth"


def rendered(config: SynthConfig) -> tuple[_Frames, SyntheticSequence]:
    """Monocular frames of a synthetic sequence, rendered once per test session."""
    if config not in _frames_cache:
        sequence = SyntheticSequence(config)
        _frames_cache[config] = (_Frames(dataclasses.replace(f, depth=None) for f in sequence), sequence)
    return _frames_cache[config]


def true_path(sequence: SyntheticSequence) -> float:
    return float(np.sum(np.linalg.norm(np.diff(sequence.groundtruth.poses[:, :3, 3], axis=0), axis=1)))


def check_tracked_run(frames, sequence, extractor, max_ate_fraction=0.01, path_tolerance=0.05):
    vo = VisualOdometry(extractor)
    results = [vo.process(frame) for frame in frames]
    states = [r.state for r in results]
    first = states.index(TrackingState.TRACKING)
    assert all(s == TrackingState.TRACKING for s in states[first:]), "every frame after initialisation is posed"
    assert vo.resets == 0 and {r.map_id for r in results} == {0}
    posed = [r for r in results if r.T_odom_camera is not None]
    trajectory = Trajectory(np.array([r.stamp for r in posed]), np.array([r.T_odom_camera for r in posed]))
    initialized = [not (r.state == TrackingState.INITIALIZING and r.pose_source == "rotation_only") for r in posed]
    metrics = evaluate(trajectory, sequence.groundtruth, "sim3", 0.001, [r.map_id for r in posed], initialized)
    scored_true = sequence.groundtruth.poses[first:, :3, 3]
    scored_path = float(np.sum(np.linalg.norm(np.diff(scored_true, axis=0), axis=1)))
    assert metrics.ate_rmse_m <= max_ate_fraction * scored_path, (metrics.ate_rmse_m, scored_path)
    estimated_path = float(np.sum(np.linalg.norm(np.diff(metrics.aligned_positions[first:], axis=0), axis=1)))
    assert abs(estimated_path / scored_path - 1) <= path_tolerance, (estimated_path, scored_path)
    return vo, results, metrics


def test_full_camera_rate_30hz(extractor_cache):
    frames, sequence = rendered(SynthConfig(frames=90, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    vo, results, metrics = check_tracked_run(frames, sequence, extractor_cache("aliked-t16"))
    assert sum(r.is_keyframe for r in results) >= 3 and vo.mapper.runs >= 1  # the map grows and is adjusted
    assert metrics.missed_motion_pairs <= metrics.initializing  # motion is missed only before initialisation


def test_landmarks_found_again_hold_a_monocular_orb_map(extractor_cache):
    """ORB keypoints are missed often (a track ends at the first miss): the map's landmarks that no track carries
    are searched for around their projections. With that, the 30 Hz run keeps one map and tracks about twice
    the landmarks per frame (without it, measured: 29 landmarks per frame and a reset)."""
    frames, sequence = rendered(SynthConfig(frames=90, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    tracked = {}
    for radius in (0.0, OdometryConfig().landmark_search_radius_px):
        vo = VisualOdometry(extractor_cache("orb"), OdometryConfig(landmark_search_radius_px=radius))
        results = [vo.process(frame) for frame in frames]
        states = [r.state for r in results]
        first = states.index(TrackingState.TRACKING)
        tracked[radius] = np.median([r.num_landmarks for r in results[first:] if r.state == TrackingState.TRACKING])
    assert radius > 0
    assert vo.resets == 0 and all(s == TrackingState.TRACKING for s in states[first:])
    assert tracked[radius] >= 1.5 * tracked[0.0], tracked
    # tracks came back: ids of earlier frames, not in the frame before
    came_back = 0
    for previous, current in zip(results[first:], results[first + 1:]):
        came_back += len(set(current.track_ids[current.track_ages == 1].tolist()) - set(previous.track_ids.tolist()))
    assert came_back > 0
    posed = [r for r in results if r.T_odom_camera is not None]
    trajectory = Trajectory(np.array([r.stamp for r in posed]), np.array([r.T_odom_camera for r in posed]))
    initialized = [not (r.state == TrackingState.INITIALIZING and r.pose_source == "rotation_only") for r in posed]
    metrics = evaluate(trajectory, sequence.groundtruth, "sim3", 0.001, [r.map_id for r in posed], initialized)
    assert metrics.ate_rmse_m <= 0.02 * metrics.true_path_length_m, (metrics.ate_rmse_m, metrics.true_path_length_m)


def test_orb_takes_up_the_keyframes_ended_tracks(extractor_cache):
    """ORB's tracks end within a few frames, too soon for their rays to part by the 2 deg a landmark needs, and
    in slow motion the map runs dry. Its unmatched keypoints take up the last keyframe's ended tracks
    (``keyframe_reattach``, on by default for ORB and SIFT, off for ALIKED), anchored where the keyframe saw them.
    On the run with a stop and a turn on the spot, measured: landmarks per frame median 51 -> 127 (10th
    percentile 23 -> 71), ATE 10.1 -> 7.7 mm, path 1.39 -> 1.20 times the true one."""
    config = SynthConfig(frames=240, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5, path="loop", ramp_s=0.5,
                         stops=1, rotations=1)  # (test_stops_and_turns_on_the_spot's frames, rendered once)
    frames, sequence = rendered(config)
    assert VisualOdometry(extractor_cache("orb")).reattaches and VisualOdometry(extractor_cache("sift")).reattaches
    assert not VisualOdometry(extractor_cache("aliked-t16")).reattaches
    outcome = {}
    for reattach in (False, None):
        vo = VisualOdometry(extractor_cache("orb"), OdometryConfig(keyframe_reattach=reattach))
        results = [vo.process(frame) for frame in frames]
        states = [r.state for r in results]
        first = states.index(TrackingState.TRACKING)
        assert vo.resets == 0 and all(s == TrackingState.TRACKING for s in states[first:]), reattach
        landmarks = [r.num_landmarks for r in results[first:]]
        posed = [r for r in results if r.T_odom_camera is not None]
        initialized = [not (r.state == TrackingState.INITIALIZING and r.pose_source == "rotation_only")
                       for r in posed]
        metrics = evaluate(Trajectory(np.array([r.stamp for r in posed]), np.array([r.T_odom_camera for r in posed])),
                           sequence.groundtruth, "sim3", 0.001, [r.map_id for r in posed], initialized)
        outcome[reattach] = (np.median(landmarks), np.percentile(landmarks, 10), metrics.ate_rmse_m,
                             metrics.path_length_m / metrics.true_path_length_m)
    (median_off, low_off, ate_off, path_off), (median_on, low_on, ate_on, path_on) = outcome[False], outcome[None]
    assert median_on >= 1.5 * median_off and low_on >= 2 * low_off, outcome
    assert ate_on < ate_off and abs(path_on - 1) < 0.7 * abs(path_off - 1), outcome
    print(f"ORB: landmarks per frame {median_off:.0f} -> {median_on:.0f}, ATE {ate_off * 1e3:.2f} -> "
          f"{ate_on * 1e3:.2f} mm, path {path_off:.3f} -> {path_on:.3f}")


def test_slow_motion_120hz(extractor_cache):
    """2 mm per frame, far below 1 px of parallax between consecutive frames: the motion is not lost (the old
    frame-to-frame VO read 0 m here). ATE within the VO issue's 1 %; the path within 20 %, not yet its 5 %: the
    pose jitters by about 1 mm per frame on 2 mm steps (README "Results"; 14.2 % long, 9.8 % with the keyframe
    alignment: ``test_keyframe_alignment_steadies_slow_motion``). The tracks go on through
    initialisation (the frames before it are posed rotation-only: testing their matches against the new pose
    ended 40 % of the tracks and orphaned new landmarks, 1.55 % ATE)."""
    frames, sequence = rendered(SynthConfig(frames=120, rate_hz=120.0, noise_sigma=2.0, blur_sigma=0.5, seed=1))
    _, results, _ = check_tracked_run(frames, sequence, extractor_cache("aliked-t16"), max_ate_fraction=0.01,
                                      path_tolerance=0.2)
    initialised = next(r for r in results if r.state == TrackingState.TRACKING)
    assert initialised.num_inliers >= 0.9 * initialised.num_matches, (initialised.num_inliers,
                                                                       initialised.num_matches)
    # the motion covariance is honest in slow motion too, where consecutive frames share the map's error (counted
    # as pixel noise, it made NEES / dof 0.33 here, median 0.30; a chi-square's median is 0.89)
    posed = [r for r in results if r.T_odom_camera is not None]
    covariances = np.array([r.motion_covariance if r.motion_covariance is not None else np.full((6, 6), np.nan)
                            for r in posed])
    initialized = [not (r.state == TrackingState.INITIALIZING and r.pose_source == "rotation_only") for r in posed]
    metrics = evaluate(Trajectory(np.array([r.stamp for r in posed]), np.array([r.T_odom_camera for r in posed])),
                       sequence.groundtruth, "sim3", 0.001, None, initialized, covariances)
    tracked = sum(r.state == TrackingState.TRACKING for r in posed)
    assert len(metrics.nees) >= 0.9 * (tracked - 1), (len(metrics.nees), tracked)
    # a slow camera is never held at rest (not for two frames in a row: 0.2 s at 0.28 m/s is 56 mm, the pose's
    # noise ~1 mm)
    centres = np.array([r.T_odom_camera[:3, 3] for r in posed if r.state == TrackingState.TRACKING])
    assert np.linalg.norm(np.diff(centres, axis=0), axis=1).min() > 0
    assert 0.5 <= np.mean(metrics.nees) / 6 <= 2.0 and 0.5 <= np.median(metrics.nees) / 6 <= 1.5, (
        np.mean(metrics.nees) / 6, np.median(metrics.nees) / 6)


def test_keyframe_alignment_steadies_slow_motion(extractor_cache):
    """The same 120 Hz features posed with the tracks aligned to their keyframe's patches (``keyframe_alignment_px``
    1.5) and without (the default): aligned, the pose jitters less, so the path is shorter (closer to the true
    one) and the ATE lower (measured: path 1.098 against 1.142 times the true one, ATE 1.11 against 1.60 mm), and
    the published keypoints are the aligned ones. (Off by default: on real frames it did not help; README.)"""
    frames, sequence = rendered(SynthConfig(frames=120, rate_hz=120.0, noise_sigma=2.0, blur_sigma=0.5, seed=1))
    extractor = extractor_cache("aliked-t16")
    extracted = [VisualOdometry(extractor).extract(frame) for frame in frames]
    scores = {}
    for px in (1.5, 0.0):
        vo = VisualOdometry(extractor, OdometryConfig(keyframe_alignment_px=px))
        results = [vo.process_extracted(e) for e in extracted]
        shifts = [np.linalg.norm(r.features.keypoints - e.features.keypoints, axis=1) for r, e in zip(results, extracted)]
        assert any(shift.any() for shift in shifts) == (px > 0)
        assert all(shift.max() <= px + 1e-4 for shift in shifts if len(shift))  # never farther than the bound
        # only keypoints matched to the previous frame move (a track continued or ended by the pose's verification)
        assert all(r.num_matches >= np.count_nonzero(shift) for shift, r in zip(shifts, results))
        posed = [r for r in results if r.state == TrackingState.TRACKING]
        metrics = evaluate(Trajectory(np.array([r.stamp for r in posed]), np.array([r.T_odom_camera for r in posed])),
                           sequence.groundtruth, "sim3", 0.001)
        scores[px] = (metrics.path_length_m / metrics.true_path_length_m, metrics.ate_rmse_m)
    (path_aligned, ate_aligned), (path_detected, ate_detected) = scores[1.5], scores[0.0]
    assert path_aligned - 1 < 0.8 * (path_detected - 1) and ate_aligned < 0.8 * ate_detected, scores


def test_slow_motion_120hz_initialises_with_orb(extractor_cache):
    """ORB's tracks end far sooner than ALIKED's (a keypoint missed once ends its track), and slow motion needs
    25+ frames for the parallax of initialisation: fewer than ``init_min_landmarks`` tracks of keyframe 0 were
    left by then, keyframe 0 started over, and the map never started (path 0 m). Keyframe 0 is now matched to
    the frame by descriptor once its tracks run short: ORB initialises (frame 26) and then tracks every frame.
    ATE measured 2.6 % of the path from there (ORB's pose jitters more than ALIKED's on 2 mm steps)."""
    frames, sequence = rendered(SynthConfig(frames=120, rate_hz=120.0, noise_sigma=2.0, blur_sigma=0.5, seed=1))
    vo = VisualOdometry(extractor_cache("orb"))
    results = [vo.process(frame) for frame in frames]
    states = [r.state for r in results]
    assert TrackingState.TRACKING in states, "the map never started"
    first = states.index(TrackingState.TRACKING)
    assert first <= 60 and all(s == TrackingState.TRACKING for s in states[first:]), (first, states[first:])
    assert vo.resets == 0
    posed = results[first:]
    trajectory = Trajectory(np.array([r.stamp for r in posed]), np.array([r.T_odom_camera for r in posed]))
    metrics = evaluate(trajectory, sequence.groundtruth, "sim3", 0.001)
    scored_path = float(np.sum(np.linalg.norm(np.diff(sequence.groundtruth.poses[first:, :3, 3], axis=0), axis=1)))
    assert metrics.ate_rmse_m <= 0.05 * scored_path, (metrics.ate_rmse_m, scored_path)
    print(f"ORB 120 Hz: initialised at frame {first}, ATE {metrics.ate_rmse_m / scored_path:.2%} of the path")


def test_a_turn_on_the_spot_before_initialisation_starts_no_map(extractor_cache):
    """A camera that only turns (45 deg out and back, both ways, no translation at all) must not start a map:
    nothing shows its depth. With ORB an essential matrix fitted to the narrow band of correspondences a wide
    turn leaves read 12.7 px of "parallax" into its own error: a map started at frame 9 on invented depths,
    tracked a translating camera and was lost at frame 57. Every frame is posed rotation-only, following the
    turn: measured at most 0.12 deg with ORB, 0.02 with SIFT over 180 deg of turning (2.4 deg with ORB while an
    essential matrix's rotation posed the frames whose noise it read as parallax). ORB again with the keyframe
    alignment, which made its correspondences consistent enough that one least-squares rotation, pulled by a few
    matches far along their epipolar lines, no longer explained them: a map started at frame 23 (measured 0.06
    deg now)."""
    frames, sequence = rendered(SynthConfig(frames=90, rate_hz=30.0, speed_m_s=0.0, rotations=1, rotation_deg=45.0,
                                            rotation_s=3.0, noise_sigma=2.0, blur_sigma=0.5))
    assert np.ptp(sequence.groundtruth.poses[:, :3, 3], axis=0).max() == 0.0
    start = sequence.groundtruth.poses[0]
    for name, config in (("orb", OdometryConfig()), ("sift", OdometryConfig()),
                         ("orb", OdometryConfig(keyframe_alignment_px=1.5))):
        vo = VisualOdometry(extractor_cache(name), config)
        results = [vo.process(frame) for frame in frames]
        assert {r.state for r in results} == {TrackingState.INITIALIZING} and vo.resets == 0, (
            name, [(r.frame_index, r.state.name) for r in results if r.state != TrackingState.INITIALIZING][:3])
        assert all(np.array_equal(r.T_odom_camera[:3, 3], np.zeros(3)) for r in results), name
        errors = [np.degrees(rotation_angle(r.T_odom_camera[:3, :3].T @ (invert(start) @ truth)[:3, :3]))
                  for r, truth in zip(results, sequence.groundtruth.poses)]
        assert max(errors) < 0.5, (name, max(errors))
        print(f"{name}: a 45 deg turn on the spot, rotation error max {max(errors):.2f} deg")


def test_stops_and_turns_on_the_spot(extractor_cache):
    config = SynthConfig(frames=240, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5, path="loop", ramp_s=0.5,
                         stops=1, rotations=1)
    frames, sequence = rendered(config)
    # path within the 5 % (measured 1-3 %): standing still, the camera is held where it rests instead of
    # adding its pose noise to the path every frame (before the monocular rest test: within 25 %)
    vo, results, _ = check_tracked_run(frames, sequence, extractor_cache("aliked-t16"), path_tolerance=0.05)
    steps = np.linalg.norm(np.diff(sequence.groundtruth.poses[:, :3, 3], axis=0), axis=1)
    still = steps == 0  # the stop and the turn: the camera centre does not move
    assert still.sum() > 60
    positions = np.array([r.T_odom_camera[:3, 3] for r in results])
    step = np.median(np.linalg.norm(np.diff(positions, axis=0), axis=1)[~still])  # map units, like the positions
    edges = np.flatnonzero(np.diff(np.concatenate([[0], still.astype(int), [0]])))
    for start, end in zip(edges[::2], edges[1::2]):  # each spell of standing still: frames start..end
        spell = positions[start:end + 1]
        # it reads as standing still: no drift, and the jitter stays within one moving step's length
        assert np.linalg.norm(spell[-1] - spell[0]) < step, (start, end)
        assert np.linalg.norm(spell - spell.mean(axis=0), axis=1).max() < step, (start, end)
        # held at one position once the rest test's window (stationary_window_s) has seen it: measured 26 of 28
        # steps of the stop and 26-33 of 44 of the turn (seeds 0-3 of this config, OpenCV 5.0 and 5.1: a grey level
        # of rendering moves it by a few frames)
        held = np.linalg.norm(np.diff(spell, axis=0), axis=1) < 1e-12
        assert held.mean() >= 0.5, (start, end, held.sum(), len(held))


def test_a_fast_turn_with_depth_jumps_nowhere(extractor_cache):
    """A turn on the spot of 120 deg out and back in 1.5 s (up to 8.8 rad/s, 17 deg a frame at 30 Hz), RGB-D with
    ORB. Half of the frame-to-frame matches are wrong on such a turn. Before, the pose refinement, started from the
    previous pose 17 deg away, slid into poses that a few of its landmarks explained (17-28 of 200-700): the camera
    jumped by metres while it stood (the worst step 4.0 m), and the keyframe made there mapped its depth points on
    the wrong pose, so the jump stayed (ATE 739 mm). A refinement from the previous pose that keeps fewer than
    ``min_inlier_fraction`` of its landmarks is now replaced by PnP-RANSAC's pose, refined from its inliers, when
    that keeps more. The camera loses the scene for a while at the far end of the turn (a new map, said as such);
    every step posed within a map errs by less than 2 cm (measured 12 mm; seeds 2 and 3 of this config: 19 and
    175 mm, before and after: seed 3's second map starts in the middle of the turn, DEVELOPERS.md)."""
    config = SynthConfig(frames=150, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5, path="loop", speed_m_s=0.3,
                         rotations=1, rotation_deg=120.0, seed=1)
    sequence = SyntheticSequence(config)
    vo = VisualOdometry(extractor_cache("orb"))
    results = [vo.process(frame) for frame in sequence]
    truth = sequence.groundtruth.poses
    errors = []
    for i in range(1, len(results)):
        before, now = results[i - 1], results[i]
        if before.T_odom_camera is None or now.T_odom_camera is None or before.map_id != now.map_id:
            continue
        estimated = invert(before.T_odom_camera) @ now.T_odom_camera
        true = invert(truth[i - 1]) @ truth[i]
        errors.append(np.linalg.norm(estimated[:3, 3] - true[:3, 3]))
    assert len(errors) > 100
    assert max(errors) < 0.02, max(errors)


def test_relocalisation_after_a_dark_spell_lands_where_the_camera_is(extractor_cache):
    """ORB RGB-D on a fast turn (the config above, seed 3): the image goes black at the turn's far end (frames
    56-71) while the camera turns on; black frames do not count towards ``max_lost_frames``, so the map is kept
    over the spell and the first lit frame is posed by relocalisation alone. Before, the pose refined from all of its 210 matched landmarks
    slid from PnP-RANSAC's (96 inliers) into one that 29 of them explained, 1.2 m and 14 deg from the truth; now it
    is refined from PnP's inliers and confirmed by the landmarks found again by projection (measured: 15.1 mm)."""
    config = SynthConfig(frames=150, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5, path="loop", speed_m_s=0.3,
                         rotations=1, rotation_deg=120.0, seed=3)
    sequence = SyntheticSequence(config)
    vo = VisualOdometry(extractor_cache("orb"))
    results = []
    for frame in sequence:
        results.append(vo.process(frame))
        if results[-1].relocalized or len(results) == 80:
            break
    dark = [i for i, r in enumerate(results) if r.state == TrackingState.LOST]
    assert len(dark) >= 10 and vo.resets == 0, (dark, vo.resets)
    back = len(results) - 1
    assert results[back].relocalized and results[back].map_id == 0 and back == dark[-1] + 1
    assert results[back].num_landmarks >= vo.config.relocalization_min_inliers  # (a map of hundreds)
    last = dark[0] - 1  # the last frame tracked before the spell
    truth = sequence.groundtruth.poses
    estimated = invert(results[last].T_odom_camera) @ results[back].T_odom_camera
    true = invert(truth[last]) @ truth[back]
    assert np.linalg.norm(estimated[:3, 3] - true[:3, 3]) < 0.03
    assert np.degrees(rotation_angle(true[:3, :3].T @ estimated[:3, :3])) < 1.0


def test_frozen_camera_invents_no_motion(extractor_cache):
    """The same image again and again with new stamps (a frozen driver): no motion, no new keyframe, no growth."""
    frames, _ = rendered(SynthConfig(frames=90, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    vo = VisualOdometry(extractor_cache("aliked-t16"))
    for frame in frames[:45]:
        last = vo.process(frame)
    assert last.state == TrackingState.TRACKING
    keyframes, landmarks = len(vo.map.keyframes), len(vo.map)
    frozen = [vo.process(Frame(frames[44].image, frames[44].stamp + 0.033 * (k + 1), frames[44].camera))
              for k in range(15)]
    assert all(r.state == TrackingState.TRACKING and not r.is_keyframe for r in frozen)
    # the first repeat tracks the landmarks the last frame ended with (some found by projection there), and its
    # keyframe prior sees those tracks too: its pose may move once, within its own uncertainty (measured: 0.5
    # sigma); from then on once more at most, by less, when the rest test holds it at the mean of the frames of
    # its window (stationary_window_s)
    step = frozen[0].T_odom_camera[:3, 3] - last.T_odom_camera[:3, 3]
    t_cov = frozen[0].covariance[3:, 3:]
    R = frozen[0].T_odom_camera[:3, :3]  # the covariance is in the camera frame
    assert float(step @ R @ np.linalg.solve(t_cov, R.T @ step)) < 1.0
    moves = np.linalg.norm(np.diff([r.T_odom_camera[:3, 3] for r in frozen], axis=0), axis=1)
    assert np.count_nonzero(moves > 1e-12) <= 1 and moves.max() < np.linalg.norm(step), (moves, np.linalg.norm(step))
    assert (len(vo.map.keyframes), len(vo.map)) == (keyframes, landmarks)


def test_lost_then_relocalised_then_reset(extractor_cache):
    frames, sequence = rendered(SynthConfig(frames=90, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    # (its map has 3 keyframes when it is lost for good: not young here, so that max_lost_frames is what ends it)
    vo = VisualOdometry(extractor_cache("aliked-t16"), OdometryConfig(max_lost_frames=8, young_map_keyframes=2))
    posed = [vo.process(frame) for frame in frames[:50]]
    black = lambda frame: Frame(np.zeros_like(frame.image), frame.stamp, frame.camera)  # noqa: E731
    lost = [vo.process(black(frame)) for frame in frames[50:54]]
    assert all(r.state == TrackingState.LOST and r.T_odom_camera is None for r in lost)
    # the camera moved on meanwhile, unseen: after LOST frames only relocalisation poses a frame (descriptors
    # against the newest keyframes, PnP on their landmarks), not tracking from the stale last pose
    back = vo.process(frames[60])
    assert back.state == TrackingState.TRACKING and back.map_id == 0 and back.relocalized
    assert back.num_landmarks >= 2 * vo.config.min_landmarks and vo.relocalizations == 1 and vo.resets == 0
    # its matches to the last posed frame continue tracks too, but never one that a keypoint revives: one
    # keypoint per track id
    assert len(np.unique(back.track_ids)) == len(back.track_ids)
    # where the ground truth has it: the map's frame and scale from the frames tracked before, then frame 60
    # (measured: 1.6 mm from the truth, as when it is tracked normally)
    tracked = [i for i, r in enumerate(posed) if r.state == TrackingState.TRACKING]
    est = np.array([posed[i].T_odom_camera for i in tracked])
    R, t, s = umeyama(est[:, :3, 3], sequence.groundtruth.poses[tracked, :3, 3], with_scale=True)
    true = sequence.groundtruth.poses
    assert np.linalg.norm(s * R @ back.T_odom_camera[:3, 3] + t - true[60, :3, 3]) < 0.005
    turned = invert(posed[49].T_odom_camera) @ back.T_odom_camera  # the turn since the last tracked frame
    assert np.degrees(rotation_angle((invert(true[49]) @ true[60])[:3, :3].T @ turned[:3, :3])) < 0.1
    after = vo.process(frames[61])  # tracking goes on from the relocalised frame
    assert after.state == TrackingState.TRACKING and not after.relocalized
    # a covered camera keeps its map however long: black frames are no failure of relocalisation (nothing to try
    # it on) and do not count towards max_lost_frames; the first lit frame relocalises in the same map
    covered = [vo.process(black(frame)) for frame in frames[62:72]]
    assert all(r.state == TrackingState.LOST and r.map_id == 0 for r in covered) and vo.resets == 0
    uncovered = vo.process(frames[72])
    assert uncovered.relocalized and uncovered.map_id == 0 and vo.relocalizations == 2
    assert np.linalg.norm(s * R @ uncovered.T_odom_camera[:3, 3] + t - true[72, :3, 3]) < 0.01
    # lost for good: frames of another scene, on which relocalisation tries and fails, start a new map with its
    # own id and scale after max_lost_frames of them
    other_scene, _ = rendered(SynthConfig(frames=20, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5, seed=5))
    elsewhere = lambda k: Frame(other_scene[k - 73].image, frames[k].stamp, frames[k].camera)  # noqa: E731
    results = [vo.process(elsewhere(k)) for k in range(73, 81)]
    assert vo.resets == 1 and all(r.state == TrackingState.LOST and r.map_id == 0 for r in results)
    with pytest.raises(DuplicateFrameError):  # the frame that reset, again: refused as before the reset
        vo.process(elsewhere(80))
    still_black = vo.process(black(frames[81]))  # nothing to start a map on: no pose, no keyframe
    assert still_black.state == TrackingState.INITIALIZING and still_black.T_odom_camera is None
    assert still_black.frame_index == 0
    assert still_black.map_id == 1 and still_black.reset_reason == "lost for 8 frames"
    after = vo.process(frames[82])
    assert after.map_id == 1 and after.state == TrackingState.INITIALIZING and after.is_keyframe
    assert after.frame_index == 1 and after.T_odom_camera is not None  # the second frame of the new map


def test_a_failing_keyframe_commit_changes_nothing(extractor_cache, monkeypatch):
    frames, _ = rendered(SynthConfig(frames=90, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    extractor = extractor_cache("aliked-t16")
    clean = VisualOdometry(extractor)
    expected = [clean.process(frame) for frame in frames[:40]]
    keyframe = next(i for i, r in enumerate(expected) if i > 20 and r.is_keyframe)

    vo = VisualOdometry(extractor)
    for frame in frames[:keyframe]:
        vo.process(frame)
    import aliked_ros.odometry.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline.VisualOdometry, "_triangulate", broken)
        with pytest.raises(RuntimeError, match="injected"):
            vo.process(frames[keyframe])
    for i in range(keyframe, 40):  # as if the failed attempt had never happened
        result = vo.process(frames[i])
        np.testing.assert_allclose(result.T_odom_camera, expected[i].T_odom_camera, atol=1e-9)
        assert np.array_equal(result.track_ids, expected[i].track_ids)


def test_a_lost_frame_shows_one_id_per_keypoint(extractor_cache, monkeypatch):
    """A frame that is not posed is not committed, but its keypoints are published: the matched ones show their
    tracks' ids, the others ids that no later track takes (not one shared 'no track' value)."""
    frames, _ = rendered(SynthConfig(frames=30, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    vo = VisualOdometry(extractor_cache("orb"), OdometryConfig(young_map_keyframes=0))  # (no reset at LOST)
    for frame in frames[:20]:
        vo.process(frame)
    with monkeypatch.context() as patch:
        patch.setattr(VisualOdometry, "_track", lambda self, obs: None)
        patch.setattr(VisualOdometry, "_relocalize", lambda self, obs: None)
        unposed = vo.process(frames[20])
    assert unposed.state == TrackingState.LOST and len(unposed.track_ids) > 300
    assert len(np.unique(unposed.track_ids)) == len(unposed.track_ids)
    assert np.count_nonzero(unposed.track_ages) > 100  # the matched ones show their tracks
    after = vo.process(frames[21])
    assert after.state == TrackingState.TRACKING and after.map_id == unposed.map_id
    assert not set(after.track_ids[after.track_ages == 0].tolist()) & set(unposed.track_ids.tolist())


def test_a_reset_reason_outlives_a_frame_that_raises(extractor_cache, monkeypatch):
    """The frame after a reset says so (``reset_reason``: the node's output restarts its twist there); a frame
    that raises in between changes nothing, so the next one still says it."""
    frames, _ = rendered(SynthConfig(frames=20, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    vo = VisualOdometry(extractor_cache("orb"))
    for frame in frames[:10]:
        vo.process(frame)
    vo.reset("requested")
    import aliked_ros.odometry.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    with monkeypatch.context() as patch:  # the new map's first keyframe fails to commit
        patch.setattr(pipeline.VisualOdometry, "_add_keyframe", broken)
        with pytest.raises(RuntimeError, match="injected"):
            vo.process(frames[10])
    first = vo.process(frames[11])
    assert first.reset_reason == "requested" and first.map_id == vo.map_id and first.is_keyframe
    assert vo.process(frames[12]).reset_reason is None


def test_memory_is_bounded_on_a_long_run(extractor_cache):
    """ORB at 320x240 round the loop for 400 frames: keyframes, landmarks and track anchors stay bounded."""
    config = SynthConfig(frames=400, rate_hz=15.0, width=320, height=240, path="loop", speed_m_s=0.3)
    sequence = SyntheticSequence(config)
    vo = VisualOdometry(extractor_cache("orb"), OdometryConfig(init_parallax_px=4.0, keyframe_parallax_px=10.0,
                                                              keyframe_min_parallax_px=2.0))
    sizes, states = [], []
    for index, frame in enumerate(sequence):
        states.append(vo.process(dataclasses.replace(frame, depth=None)).state)
        if index % 50 == 49:
            sizes.append((len(vo.map.keyframes), len(vo.map), len(vo._previous.anchor_poses) if vo._previous else 0))
    keyframes, landmarks, anchors = np.array(sizes).T
    # one map, tracked all the way round (a pipeline that kept resetting would hold a small map too)
    assert vo.resets == 0 and TrackingState.LOST not in states
    assert states[-300:] == [TrackingState.TRACKING] * 300
    assert keyframes.max() == vo.config.max_keyframes
    assert landmarks.max() <= vo.config.max_keyframes * 500  # at most every keypoint of every kept keyframe
    assert anchors.max() <= 500  # frames still anchoring a live track
    assert landmarks[-1] <= 2 * np.median(landmarks[2:]) + 100  # flat, not growing with the run's length


def test_relative_metrics_take_the_ground_truth_at_the_estimates_stamps(shared_dir):
    """fr1_rpy's ground truth (100 Hz) interpolated at the image stamps is a perfect estimate: no rotation,
    direction or drift error (with the nearest ground-truth poses it scored 0.12 deg, 0.39 deg and 1.65 %); its
    ATE is the nearest pose's time offset, as evo's association has it."""
    from aliked_ros.datasets import open_sequence

    sequence = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    stamps = np.array([frame.stamp for frame in sequence])
    perfect = Trajectory(stamps, sequence.groundtruth.interpolate(stamps, 0.02))
    metrics = evaluate(perfect, sequence.groundtruth, "se3")
    assert metrics.rot_err_deg["median"] < 1e-6 and metrics.tdir_err_deg["median"] < 1e-6
    assert metrics.rpe_trans_pct < 1e-6 and metrics.rot_err_deg["count"] == 39
    assert 0 < metrics.ate_rmse_m < 0.001


def test_segments_on_one_line_are_aligned_along_it_and_a_camera_at_rest_has_no_drift():
    """evo's Umeyama is degenerate for points on one line (a 2-pose segment, a straight drive): such a segment at
    half scale, turned, is still aligned exactly. A camera at rest (ground truth: 1 mm of noise) gets no drift
    figure instead of one relative to its noise."""
    from scipy.spatial.transform import Rotation

    stamps = np.arange(6) * 0.1
    truth = np.tile(np.eye(4), (6, 1, 1))
    truth[:, :3, 3] = np.outer(np.arange(6), [0.1, 0.05, 0.0])  # a straight line
    turn = make_transform(Rotation.from_euler("z", 40, degrees=True).as_matrix(), [2.0, -1.0, 0.5])
    estimate = np.array([turn @ pose for pose in truth])
    estimate[:, :3, 3] *= 0.5
    for count in (3, 6):
        metrics = evaluate(Trajectory(stamps[:count], estimate[:count]), Trajectory(stamps, truth), "sim3")
        assert metrics.ate_rmse_m < 1e-9 and metrics.scale == pytest.approx(2.0)
    noise = np.random.default_rng(3).normal(0, 0.001, (6, 3))
    resting = np.tile(np.eye(4), (6, 1, 1))
    resting[:, :3, 3] = noise
    metrics = evaluate(Trajectory(stamps, np.tile(np.eye(4), (6, 1, 1))), Trajectory(stamps, resting), "se3")
    assert np.isnan(metrics.rpe_trans_pct) and np.isnan(metrics.rpe_segment_m)


def test_segments_too_short_or_at_rest_cannot_hide_errors():
    """An alignment fits one or two poses exactly: a run that resets every other frame is not scored (not an ATE of
    0), its poses counted as unscored. A camera at rest gets no sim3 scale: the best-fitting one would shrink
    a drift of half a metre to a fraction of a millimetre."""
    rng = np.random.default_rng(5)
    stamps = np.arange(20) * 0.1
    truth = np.tile(np.eye(4), (20, 1, 1))
    truth[:, :3, 3] = np.cumsum(rng.normal(0, 0.05, (20, 3)), axis=0)
    wild = np.tile(np.eye(4), (20, 1, 1))
    wild[:, :3, 3] = rng.normal(0, 1.0, (20, 3))
    for alignment in ("sim3", "se3"):
        metrics = evaluate(Trajectory(stamps, wild), Trajectory(stamps, truth), alignment, map_ids=np.arange(20) // 2)
        assert np.isnan(metrics.ate_rmse_m) and metrics.unscored == 20 and metrics.associated == 20
        one_map = evaluate(Trajectory(stamps, wild), Trajectory(stamps, truth), alignment)
        assert one_map.ate_rmse_m > 0.1 and one_map.unscored == 0
    resting = np.tile(np.eye(4), (20, 1, 1))
    resting[:, :3, 3] = rng.normal(0, 0.0001, (20, 3))  # at rest: 0.1 mm of motion-capture noise
    drifting = np.tile(np.eye(4), (20, 1, 1))
    drifting[:, 0, 3] = np.linspace(0, 0.5, 20)  # the estimate walks 0.5 m
    metrics = evaluate(Trajectory(stamps, drifting), Trajectory(stamps, resting), "sim3")
    assert metrics.scale == 1.0 and metrics.ate_rmse_m > 0.1


def test_a_stop_between_two_drives_is_scored_in_the_runs_unit_and_uninitialised_poses_stay_out():
    """Monocular, three maps: a drive (map 0, 14 poses in units of 4 m), a stop (map 1, at rest: no sim3 scale of
    its own), a shorter drive (map 2, 10 poses in units of 2 m). The stop's 0.05-unit drift is 0.2 m in the unit of
    the longest scaled segment, not 0.05 "m" of scale 1. A map with one initialised pose is too short to score:
    its uninitialised poses are not scored in its place."""
    stamps = np.arange(36) * 0.1
    maps = np.repeat([0, 1, 2], [14, 12, 10])
    truth = np.tile(np.eye(4), (36, 1, 1))
    drive = np.stack([0.1 * np.arange(14), 0.2 * np.sin(np.arange(14) / 3), np.zeros(14)], axis=1)
    truth[maps == 0, :3, 3] = drive
    truth[maps == 1, :3, 3] = drive[-1]
    truth[maps == 2, :3, 3] = drive[-1] + drive[:10]
    estimate = truth.copy()
    estimate[:, :3, 3] /= np.where(maps == 2, 2.0, 4.0)[:, None]
    estimate[maps == 1, 0, 3] += np.linspace(0, 0.05, 12)  # the estimate drifts 0.05 units while the camera stands
    metrics = evaluate(Trajectory(stamps, estimate), Trajectory(stamps, truth), "sim3", map_ids=maps)
    assert [s.map_id for s in metrics.segments] == [0, 1, 2]
    assert [s.scale for s in metrics.segments] == pytest.approx([4.0, 4.0, 2.0])
    assert 0.05 < metrics.segments[1].ate_rmse_m < 0.1  # 0.2 m end to end about the mean: ~0.06 m RMS
    assert metrics.segments[0].ate_rmse_m < 1e-9 and metrics.segments[2].ate_rmse_m < 1e-9
    initialized = np.ones(36, bool)
    initialized[26:35] = False  # map 2 initialised on its last pose only
    wrong = estimate.copy()
    wrong[26:35, :3, 3] = 100.0  # what an uninitialised map holds does not count
    metrics = evaluate(Trajectory(stamps, wrong), Trajectory(stamps, truth), "sim3", map_ids=maps,
                       initialized=initialized)
    assert [s.map_id for s in metrics.segments] == [0, 1] and metrics.unscored == 10


def test_eval_aligns_each_map_alone_and_counts_missed_motion():
    """Two maps with different monocular scales: each is aligned on its own; a frame without translation while the
    camera moves is counted, not hidden."""
    t = np.arange(40) * 0.1
    truth = np.array([np.eye(4) for _ in t])
    truth[:, 0, 3] = 0.05 * np.arange(40)  # 5 cm per frame along x, on a curve (not collinear: Sim(3) is defined)
    truth[:, 1, 3] = 0.2 * np.sin(np.arange(40) / 4)
    est = truth.copy()
    est[:20, :3, 3] *= 3.0  # map 0 in its own unit
    est[20:, :3, 3] = (truth[20:, :3, 3] - truth[20, :3, 3]) * 0.5 + 7.0  # map 1: another unit and origin
    est[25, :3, 3] = est[24, :3, 3]  # one missed step
    metrics = evaluate(Trajectory(t, est), Trajectory(t, truth), "sim3", 0.01, np.repeat([0, 1], 20))
    assert len(metrics.segments) == 2 and {s.map_id for s in metrics.segments} == {0, 1}
    assert metrics.segments[0].ate_rmse_m < 1e-9 and metrics.segments[1].ate_rmse_m < 0.02
    assert metrics.missed_motion_pairs == 1 and metrics.tdir_err_deg["count"] == 38  # 39 pairs, one across maps
    single = evaluate(Trajectory(t, est), Trajectory(t, truth), "sim3", 0.01)  # one alignment across both: wrong
    assert single.ate_rmse_m > 10 * metrics.ate_rmse_m


def test_background_mapping_applies_a_finished_result_before_the_next_job(extractor_cache):
    """A bundle adjustment that finished after the frame began (so after its ``apply_finished``) is applied when
    that frame, a keyframe, starts the next one: built without it, the next job would write the poses from before
    it back over the map."""
    frames, _ = rendered(SynthConfig(frames=60, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5))
    vo = VisualOdometry(extractor_cache("orb"), OdometryConfig(background_mapping=True))
    for frame in frames[:45]:
        vo.process(frame)
    vo.mapper.wait()
    vo.mapper.apply_finished(vo.map)
    assert len(vo.map.keyframes) >= 3
    focal = frames[0].camera.focal
    vo.mapper.run(vo.map, focal)  # a job on the map as it is ...
    vo.mapper.wait()  # ... finished, its result waiting for the next frame
    before = [kf.T_odom_cam.copy() for kf in vo.map.keyframes]
    vo.mapper.run(vo.map, focal)  # a keyframe before that frame: the waiting result goes in first
    applied = [kf.T_odom_cam for kf in vo.map.keyframes]
    assert any(not np.array_equal(a, b) for a, b in zip(applied, before))
    vo.mapper.wait()
    assert vo.mapper.failures == 0 and vo.mapper.runs >= 2


def test_people_walking_past_neither_move_nor_drag_the_odometry(extractor_cache):
    """Moving objects (``SynthConfig.movers``: people-sized panels walking at 1.2 m/s at 1.4, 2.7 and 4.0 m). A
    camera at rest stays where it is, monocular and RGB-D. A moving RGB-D camera is not dragged along: a keyframe
    maps no depth point that moved since the previous frame. Without that check (measured on this run) the
    keyframe made while the camera turned on the spot towards the open side of the scene mapped the walkers,
    and the next frames followed them: ATE 335 mm with ORB (aliked-t16: 189 mm); 3.2 mm without walkers."""
    orb = extractor_cache("orb")
    at_rest = SyntheticSequence(SynthConfig(frames=30, rate_hz=10.0, speed_m_s=0.0, movers=3, noise_sigma=2.0,
                                            blur_sigma=0.5))
    for depth in (False, True):
        vo = VisualOdometry(orb)
        results = [vo.process(frame if depth else dataclasses.replace(frame, depth=None)) for frame in at_rest]
        positions = np.array([r.T_odom_camera[:3, 3] for r in results if r.T_odom_camera is not None])
        assert len(positions) == len(results) and vo.resets == 0
        assert np.sum(np.linalg.norm(np.diff(positions, axis=0), axis=1)) <= 0.001, depth  # measured 0-0.4 mm
    config = SynthConfig(frames=300, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5, path="loop", ramp_s=1.0,
                         stops=1, rotations=1, seed=4)
    sequence = SyntheticSequence(dataclasses.replace(config, movers=3))
    vo = VisualOdometry(orb)
    results = [vo.process(frame) for frame in sequence]
    assert vo.resets == 0 and all(r.state == TrackingState.TRACKING for r in results[1:])
    trajectory = Trajectory(np.array([r.stamp for r in results]), np.array([r.T_odom_camera for r in results]))
    ate = evaluate(trajectory, sequence.groundtruth, "se3", 0.001).ate_rmse_m
    assert ate <= 0.01 * true_path(sequence), ate  # the bound, 15 mm; measured 8.0 mm (335 mm before)


def test_a_monocular_camera_standing_among_walkers_is_held_by_its_image(extractor_cache):
    """The walker run of the test above, monocular, up to the end of its stop (frames 85-114 stand still). The
    landmarks triangulated on the walkers drag a monocular pose on through the stop (measured ~5 mm a frame, after
    the Sim(3) of the moving frames 40-60) and keep the pose test from ever starting a rest; the image does not
    move (its keypoints' median), so the camera is held once it has stood for ``stationary_window_s`` and stays
    there while its keypoints stay put. With the image test off, the same features: dragged."""
    config = SynthConfig(frames=300, rate_hz=30.0, noise_sigma=2.0, blur_sigma=0.5, path="loop", ramp_s=1.0,
                         stops=1, rotations=1, seed=4, movers=3)
    sequence = SyntheticSequence(config)
    true = sequence.groundtruth.poses[:120, :3, 3]
    assert np.linalg.norm(np.diff(true[85:115], axis=0), axis=1).max() < 1e-9  # the stop
    odometries = {px: VisualOdometry(extractor_cache("aliked-t16"), OdometryConfig(stationary_image_px=px))
                  for px in (OdometryConfig().stationary_image_px, 0.0)}
    centres = {px: [] for px in odometries}
    for index, frame in enumerate(sequence):
        if index == len(true):
            break
        extracted = odometries[0.0].extract(dataclasses.replace(frame, depth=None))
        for px, vo in odometries.items():
            result = vo.process_extracted(extracted)
            assert result.state == TrackingState.TRACKING or index < 40, (px, index, result.state)
            centres[px].append(result.T_odom_camera[:3, 3])
    for px, vo in odometries.items():
        c = np.array(centres[px])
        metres = np.linalg.norm(true[60] - true[40]) / np.linalg.norm(c[60] - c[40])  # the map's unit, moving
        standing = metres * np.linalg.norm(np.diff(c[95:115], axis=0), axis=1).sum()  # frames 95-114, in metres
        if px > 0:
            assert standing <= 0.001, standing  # measured 0
        else:
            assert standing >= 0.05, standing  # measured ~0.12 m: dragged
        assert vo.resets == 0
