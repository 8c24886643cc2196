"""The rest tests (``aliked_ros.odometry.rest``) on frames whose poses and uncertainties are given: when a camera
comes to rest, where it is held, what releases it, and that the held point moves with its keyframe."""
from __future__ import annotations

import numpy as np
import pytest

from aliked_ros.features import Features
from aliked_ros.geometry.transforms import invert, make_transform
from aliked_ros.odometry import OdometryConfig
from aliked_ros.odometry.map import Keyframe, LocalMap
from aliked_ros.odometry.optimizer import PoseRefinement
from aliked_ros.odometry.rest import RestDetector

RATE_HZ = 60.0
SIGMA_M = 1e-3  # each frame's translation uncertainty (1 mm per axis)
TRACKS = np.arange(100, dtype=np.uint64)


def _map_with_keyframe(T_odom_cam: np.ndarray) -> tuple[LocalMap, Keyframe]:
    local_map = LocalMap(0, 10)
    empty = Features(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 32), np.uint8), (640, 480),
                     "test")
    keyframe = Keyframe(0, 0.0, T_odom_cam.copy(), np.zeros(0, np.uint64), np.zeros((0, 2)), None, empty)
    local_map.add_keyframe(keyframe)
    return local_map, keyframe


def _refined(centre: np.ndarray) -> PoseRefinement:
    covariance = np.diag([1e-6] * 3 + [SIGMA_M**2] * 3)
    return PoseRefinement(invert(make_transform(np.eye(3), centre)), np.ones(0, bool), covariance, 3, np.zeros((0, 2)))


class _Camera:
    """Frames fed to a detector as the pipeline feeds them: ``centre_for`` while posing, ``commit`` after."""

    def __init__(self, metric: bool = False, **config) -> None:
        self.rest = RestDetector(OdometryConfig(**config))
        self.map, self.keyframe = _map_with_keyframe(np.eye(4))
        self.metric, self.index = metric, 0

    def frame(self, centre, keypoints: np.ndarray | None = None) -> tuple[np.ndarray | None, bool]:
        """(where the frame is held or None, whether by its image)."""
        centre = np.asarray(centre, float)
        stamp = 1.0 + self.index / RATE_HZ
        self.index += 1
        keypoints = np.zeros((len(TRACKS), 2)) if keypoints is None else keypoints
        held, image = self.rest.centre_for(self.map, _refined(centre), make_transform(np.eye(3), centre),
                                           self.keyframe, self.metric, stamp, TRACKS, keypoints)
        self.rest.commit(self.map, stamp, (self.keyframe.index, self.keyframe.T_odom_cam.copy()), held, image,
                         centre, TRACKS, keypoints)
        return held, image is not None


def _jitter(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.3 * SIGMA_M, (n, 3))


def test_a_camera_standing_still_comes_to_rest_after_the_window_and_is_held_at_one_point():
    camera = _Camera(stationary_image_px=0.0)  # the pose test alone
    window_frames = int(np.ceil(0.75 * camera.rest.config.stationary_window_s * RATE_HZ))
    outcomes = [camera.frame(c)[0] for c in _jitter(40)]
    first = next(i for i, held in enumerate(outcomes) if held is not None)
    assert first == window_frames  # not before the window is covered (its oldest frame 3/4 of it back)
    held = outcomes[first]
    assert np.linalg.norm(held) < SIGMA_M  # the mean of the centres: about the true one
    assert all(np.array_equal(h, held) for h in outcomes[first:])  # one point, not one per frame
    # a step well beyond stationary_release_chi2 (45: 6.7 sigma) releases it; the frame is posed where it is
    assert camera.frame([10 * SIGMA_M, 0, 0])[0] is None


def test_a_moving_camera_is_never_held_and_a_creeping_one_is_held_within_the_release_bound():
    camera = _Camera(stationary_image_px=0.0)
    step = 0.04 / RATE_HZ  # 4 cm/s: 6 mm (6 sigma) over 3/4 of the 0.2 s window
    assert all(camera.frame([step * i, 0, 0])[0] is None for i in range(60))
    # 1 cm/s moves by less than the noise in the window: held, in steps of at most the release bound (45: 6.7
    # sigma), so the held point follows the camera instead of staying behind
    camera = _Camera(stationary_image_px=0.0)
    step = 0.01 / RATE_HZ
    outcomes = [(step * i, camera.frame([step * i, 0, 0])[0]) for i in range(240)]
    held = [(x, h) for x, h in outcomes if h is not None]
    assert len(held) > 120
    assert max(abs(h[0] - x) for x, h in held) < np.sqrt(45.0) * SIGMA_M
    assert len({tuple(h) for _, h in held}) > 3  # it moved on several times


def test_the_held_point_moves_with_its_keyframe_when_bundle_adjustment_corrects_it():
    camera = _Camera(stationary_image_px=0.0)
    for c in _jitter(20):
        held, _ = camera.frame(c)
    assert held is not None
    shift = np.array([0.05, -0.02, 0.01])
    camera.keyframe.T_odom_cam = make_transform(np.eye(3), shift)  # bundle adjustment moved the keyframe
    moved, _ = camera.frame(held + shift)  # the frame, posed against the moved keyframe, is where it was
    np.testing.assert_allclose(moved, held + shift, atol=1e-12)


def test_a_lost_frame_ends_the_rest_and_the_window_starts_over():
    camera = _Camera(stationary_image_px=0.0)
    for c in _jitter(20):
        held, _ = camera.frame(c)
    assert held is not None
    camera.rest.lost()
    camera.index += 1  # (the lost frame's stamp)
    again = [camera.frame(c)[0] for c in _jitter(15, seed=1)]
    assert again[0] is None and again[-1] is not None


def test_a_metric_frame_at_its_keyframe_is_held_there_at_once():
    camera = _Camera(metric=True)
    held, by_image = camera.frame([0.3 * SIGMA_M, 0, 0])
    np.testing.assert_array_equal(held, np.zeros(3))
    assert not by_image


@pytest.mark.parametrize("drift", [3e-3, 0.0])
def test_a_monocular_image_that_stands_still_holds_a_pose_that_drifts(drift):
    """The image test: people walking past drag a monocular pose (here 3 mm per frame) while the camera and the
    static scene stand still; the keypoints' median shift keeps the camera held at the earlier frame's centre
    until they move by stationary_image_hold_px."""
    camera = _Camera()
    keypoints = np.random.default_rng(2).uniform(0, 640, (len(TRACKS), 2))
    outcomes = [camera.frame([drift * i, 0, 0], keypoints) for i in range(30)]
    held = [h for h, _ in outcomes if h is not None]
    assert held and np.linalg.norm(held[-1]) < 0.02 + 1e-9
    if drift:
        assert all(by_image for h, by_image in outcomes if h is not None)
        assert all(np.array_equal(h, held[0]) for h in held)
    released, _ = camera.frame([drift * 30 + 0.05, 0, 0], keypoints + 2.0)  # the image moved by 2 px
    assert released is None
