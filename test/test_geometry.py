"""Pure geometry and the optimisers on synthetic data with exact answers: the T_a_b conventions
(p_a = T_a_b p_b), triangulation, epipolar errors, translation from known points, motion-only refinement and local
bundle adjustment (both solvers)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aliked_ros.geometry.multiview import (bearings, project, reprojection_errors, rotation_compensated_parallax,
                                           sampson_error, signed_sampson, transform_points, translation_from_points,
                                           triangulate)
from aliked_ros.geometry.transforms import exp_so3, invert, make_transform, perturb_left, skew
from aliked_ros.odometry.optimizer import (BundleProblem, EpipolarTerms, _EpipolarResiduals, _total_cost,
                                          bundle_adjust, gtsam_available, refine_pose)

FOCAL = 500.0


@pytest.fixture
def scene():
    """Points in frame a, and T_b_a: camera b is 0.3 m right of and 0.1 m ahead of a, turned 5 deg."""
    rng = np.random.default_rng(1)
    points_a = rng.uniform([-2, -1.5, 2], [2, 1.5, 8], (300, 3))
    T_b_a = invert(make_transform(exp_so3(np.array([0.02, np.deg2rad(5), -0.01])), [0.3, 0.0, 0.1]))
    return points_a, T_b_a, rng


def test_transform_conventions():
    T_a_b = make_transform(exp_so3(np.array([0, 0, np.pi / 2])), [1.0, 0, 0])  # b turned 90 deg about z, 1 m along x
    assert np.allclose(transform_points(T_a_b, np.array([[1.0, 0, 0]])), [[1, 1, 0]])
    assert np.allclose(invert(T_a_b) @ T_a_b, np.eye(4))
    v, w = np.array([1.0, 2, 3]), np.array([-1.0, 0.5, 2])
    assert np.allclose(skew(v) @ w, np.cross(v, w))
    xi = np.array([0.01, -0.02, 0.03, 0.1, 0.2, -0.3])
    moved = perturb_left(T_a_b, xi)
    assert np.allclose(moved[:3, :3], exp_so3(xi[:3]) @ T_a_b[:3, :3])
    assert np.allclose(moved[:3, 3], exp_so3(xi[:3]) @ T_a_b[:3, 3] + xi[3:])


@pytest.mark.parametrize("scale", [0.0, 1e-9, 1e-5, 1e-3, 0.5, 3.0])
def test_exp_so3_matches_scipy_from_zero_to_large_angles(scale):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(7)
    for v in rng.standard_normal((50, 3)) * scale:
        assert np.abs(exp_so3(v) - Rotation.from_rotvec(v).as_matrix()).max() < 1e-14
    batch = rng.standard_normal((2, 5, 3)) * scale
    assert np.allclose(exp_so3(batch), Rotation.from_rotvec(batch.reshape(-1, 3)).as_matrix().reshape(2, 5, 3, 3))


def test_batched_epipolar_residuals_and_jacobian(scene):
    """The refinement's epipolar terms: residuals equal ``signed_sampson`` in pixels, and the batched forward
    differences equal central differences of it under ``perturb_left``."""
    points_a, T_b_a, rng = scene
    T_odom_kf = make_transform(exp_so3(np.array([0.1, -0.2, 0.05])), [0.5, -0.2, 1.0])
    T_cam_odom = T_b_a @ invert(T_odom_kf)  # the frame is b, the keyframe a
    norm_kf = project(points_a)
    norm_cur = project(transform_points(T_b_a, points_a)) + rng.normal(0, 1 / FOCAL, (len(points_a), 2))
    residuals, jacobian = _EpipolarResiduals(EpipolarTerms(T_odom_kf, norm_kf, norm_cur), FOCAL)(T_cam_odom)
    assert np.allclose(residuals, signed_sampson(norm_kf, norm_cur, T_b_a) * FOCAL, atol=1e-9)
    for i in range(6):
        step = np.zeros(6)
        step[i] = 1e-6
        central = (signed_sampson(norm_kf, norm_cur, perturb_left(T_cam_odom, step) @ T_odom_kf)
                   - signed_sampson(norm_kf, norm_cur, perturb_left(T_cam_odom, -step) @ T_odom_kf)) * FOCAL / 2e-6
        assert np.allclose(jacobian[:, i], central, atol=1e-3 * np.abs(central).max() + 1e-6)
    assert _EpipolarResiduals(EpipolarTerms(T_odom_kf, norm_kf, norm_cur), FOCAL)(invert(T_odom_kf)) is None


def test_triangulation_and_epipolar_error_are_exact_without_noise(scene):
    points_a, T_b_a, _ = scene
    norm_a, norm_b = project(points_a), project(transform_points(T_b_a, points_a))
    points, valid = triangulate(norm_a, norm_b, T_b_a)
    assert valid.all() and np.allclose(points, points_a, atol=1e-9)
    assert np.abs(sampson_error(norm_a, norm_b, T_b_a)).max() < 1e-12
    # the error is invariant to the length of the translation, and a shifted point breaks it
    T_long = make_transform(T_b_a[:3, :3], 7.0 * T_b_a[:3, 3])
    assert np.abs(signed_sampson(norm_a, norm_b + [3 / FOCAL, 0], T_b_a)
                  - signed_sampson(norm_a, norm_b + [3 / FOCAL, 0], T_long)).max() < 1e-12
    # moved across the (nearly horizontal) epipolar lines of a sideways motion: about half the shift each side
    assert np.median(sampson_error(norm_a, norm_b + [0, 3 / FOCAL], T_b_a)) > 1.0 / FOCAL
    # a point behind camera b is reported invalid
    _, valid = triangulate(norm_a[:1], -norm_b[:1], T_b_a)
    assert not valid[0]


def test_one_transform_per_point_is_the_same_as_one_call_per_point(scene):
    """transform_points, reprojection_errors, rotation_compensated_parallax and triangulate take (N,4,4) / (N,3,3):
    each point with its own camera pair (the map triangulates every track from the frame that first saw it)."""
    points_a, _, rng = scene
    points_a = points_a[:40]
    T_b_a = np.stack([invert(make_transform(exp_so3(rng.normal(scale=0.05, size=3)), rng.normal(scale=0.3, size=3)))
                      for _ in range(len(points_a))])
    norm_a = project(points_a)
    norm_b = project(transform_points(T_b_a, points_a)) + rng.normal(scale=1 / FOCAL, size=(len(points_a), 2))
    points, valid = triangulate(norm_a, norm_b, T_b_a)
    parallax = rotation_compensated_parallax(norm_a, norm_b, T_b_a[:, :3, :3])
    errors = reprojection_errors(T_b_a, points, norm_b)
    for i in range(len(points_a)):
        one, one_valid = triangulate(norm_a[i:i + 1], norm_b[i:i + 1], T_b_a[i])
        np.testing.assert_allclose(points[i], one[0], rtol=1e-9)
        assert valid[i] == one_valid[0]
        np.testing.assert_allclose(transform_points(T_b_a, points_a)[i],
                                   transform_points(T_b_a[i], points_a[i:i + 1])[0])
        assert parallax[i] == pytest.approx(rotation_compensated_parallax(norm_a[i:i + 1], norm_b[i:i + 1],
                                                                          T_b_a[i, :3, :3])[0], rel=1e-9)
        assert errors[i] == pytest.approx(reprojection_errors(T_b_a[i], points[i:i + 1], norm_b[i:i + 1])[0],
                                          rel=1e-9)


def test_pure_rotation_has_no_parallax(scene):
    points_a, _, _ = scene
    R = exp_so3(np.array([0.05, -0.1, 0.02]))
    norm_a, norm_b = project(points_a), project(points_a @ R.T)
    assert rotation_compensated_parallax(norm_a, norm_b, R).max() < 1e-7  # arccos near 1: ~1e-8 resolution
    assert np.allclose(np.linalg.norm(bearings(norm_a), axis=1), 1.0)
    T = make_transform(R, np.zeros(3))
    assert sampson_error(norm_a, norm_b, T).max() < 1e-7  # no translation: the rotation-compensated angle


def test_relative_pose_refuses_correspondences_that_are_mostly_wrong(scene):
    """Wrong matches (another scene): the best essential matrix of 10,000 draws still has some inside its band, so
    a count alone does not tell them from a true pose; the inlier fraction does (true pairs: 70-98 %)."""
    from aliked_ros.geometry.pose import relative_pose

    points_a, T_b_a, rng = scene
    points_a = np.vstack([points_a, rng.uniform([-2, -1.5, 2], [2, 1.5, 8], (300, 3))])
    norm_a = project(points_a)
    norm_b = project(transform_points(T_b_a, points_a)) + rng.normal(0, 0.3 / FOCAL, (len(points_a), 2))
    wrong = norm_b[rng.permutation(len(norm_b))]
    assert relative_pose(norm_a, wrong, FOCAL) is None
    counts = []
    for true_fraction in (0.4, 1.0):
        mixed = np.where((rng.random(len(norm_b)) < true_fraction)[:, None], norm_b, wrong)
        estimate = relative_pose(norm_a, mixed, FOCAL)
        assert estimate is not None and estimate.kind == "essential"
        assert np.degrees(np.arccos(np.clip(estimate.transform[:3, 3] @ T_b_a[:3, 3] / np.linalg.norm(T_b_a[:3, 3]),
                                            -1, 1))) < 3
        counts.append(estimate.inliers.sum())
    assert relative_pose(norm_a, wrong, FOCAL, min_inlier_fraction=0.0).inliers.sum() < counts[0] / 4


def test_translation_from_points_recovers_the_step_despite_outliers(scene):
    points_a, T_b_a, rng = scene
    norm_b = project(transform_points(T_b_a, points_a)) + rng.normal(0, 0.5 / FOCAL, (len(points_a), 2))
    norm_b[:30] += rng.uniform(-0.05, 0.05, (30, 2))  # 10 % gross mismatches
    t = translation_from_points(points_a, norm_b, T_b_a[:3, :3], 1.0 / FOCAL, 20)
    assert np.linalg.norm(t - T_b_a[:3, 3]) < 0.01 * np.linalg.norm(T_b_a[:3, 3]) + 2e-3
    assert translation_from_points(points_a[:5], norm_b[:5], T_b_a[:3, :3], 1.0 / FOCAL, 20) is None


def test_refine_pose_converges_rejects_outliers_and_reports_covariance(scene):
    points_a, T_b_a, rng = scene
    norm_b = project(transform_points(T_b_a, points_a)) + rng.normal(0, 0.5 / FOCAL, (len(points_a), 2))
    norm_b[:20] += 0.05  # outliers
    prior = perturb_left(T_b_a, np.array([0.01, -0.01, 0.005, 0.05, -0.03, 0.04]))
    refined = refine_pose(prior, points_a, norm_b, FOCAL, 2.0)
    assert np.abs(refined.T_cam_odom - T_b_a).max() < 5e-3
    assert not refined.inliers[:20].any() and refined.inliers[20:].mean() > 0.95
    sigma = np.sqrt(np.diag(refined.covariance))
    assert refined.covariance.shape == (6, 6) and np.all(sigma > 0) and sigma[3:].max() < 0.05
    # with epipolar terms of points that have no landmark, the same answer
    T_odom_kf = np.eye(4)
    terms = EpipolarTerms(T_odom_kf, project(points_a[20:]), norm_b[20:])
    with_terms = refine_pose(prior, points_a[20:100], norm_b[20:100], FOCAL, 2.0, epipolar=terms)
    assert np.abs(with_terms.T_cam_odom - T_b_a).max() < 5e-3


@pytest.mark.parametrize("variant", ["plain", "epipolar", "hold_centre"])
def test_refine_pose_kernel_and_numpy_paths_agree(scene, monkeypatch, variant):
    """The numba normal equations (reprojection and epipolar terms) against the numpy Jacobians (the path without
    numba): the same pose, inliers and covariance to rounding, with outliers and a landmark behind the camera."""
    from aliked_ros import jit
    from aliked_ros.odometry import optimizer

    points_a, T_b_a, rng = scene
    norm_b = project(transform_points(T_b_a, points_a)) + rng.normal(0, 0.5 / FOCAL, (len(points_a), 2))
    norm_b[:20] += 0.05
    points = np.vstack([points_a, -points_a[:1]])  # behind camera b
    norm_b = np.vstack([norm_b, norm_b[:1]])
    prior = perturb_left(T_b_a, np.array([0.01, -0.01, 0.005, 0.05, -0.03, 0.04]))
    kwargs = {"epipolar": EpipolarTerms(np.eye(4), project(points_a[20:]), norm_b[20:-1])} if variant == "epipolar" \
        else {"hold_centre": True} if variant == "hold_centre" else {}
    assert optimizer._normal_equations_kernel() is not None and optimizer._epipolar_kernel() is not None
    with_kernel = refine_pose(prior, points, norm_b, FOCAL, 2.0, **kwargs)
    monkeypatch.setitem(jit._compiled, optimizer._reprojection_normal_equations, False)
    monkeypatch.setitem(jit._compiled, optimizer._epipolar_normal_equations, False)
    assert optimizer._normal_equations_kernel() is None and optimizer._epipolar_kernel() is None
    numpy_path = refine_pose(prior, points, norm_b, FOCAL, 2.0, **kwargs)
    np.testing.assert_allclose(with_kernel.T_cam_odom, numpy_path.T_cam_odom, atol=1e-12)
    np.testing.assert_array_equal(with_kernel.inliers, numpy_path.inliers)
    np.testing.assert_allclose(with_kernel.covariance, numpy_path.covariance, rtol=1e-6,
                               atol=1e-6 * np.abs(numpy_path.covariance).max())  # near-zero terms: cancellation
    assert with_kernel.iterations == numpy_path.iterations and with_kernel.inliers.sum() > 100


def test_refine_pose_ignores_a_landmark_on_the_cameras_path(scene):
    """A wrong triangulation a few mm in front of the camera (a synthetic 30 Hz run had one at 0.3 % of the
    median depth): its projection moves hundreds of px per mm of pose, so fitted it drags the pose. It is left
    out (an outlier) and the pose is that of the other landmarks."""
    points_a, T_b_a, rng = scene
    norm_b = project(transform_points(T_b_a, points_a)) + rng.normal(0, 0.5 / FOCAL, (len(points_a), 2))
    centre = -T_b_a[:3, :3].T @ T_b_a[:3, 3]
    near = centre + T_b_a[:3, :3].T @ np.array([0.0, 0.0, 0.015])  # 1.5 cm ahead of camera b
    shifted = perturb_left(T_b_a, np.array([0, 0, 0, 0.01, 0, 0]))  # ... observed as a 1 cm shifted camera sees it
    points = np.vstack([points_a, near])
    observed = np.vstack([norm_b, project(transform_points(shifted, near[None]))])
    refined = refine_pose(T_b_a, points, observed, FOCAL, 2.0)
    assert not refined.inliers[-1] and refined.inliers[:-1].mean() > 0.95
    assert np.linalg.norm(refined.T_cam_odom[:3, 3] - T_b_a[:3, 3]) < 2e-3


def test_refine_pose_holding_the_centre_estimates_the_rotation_only(scene):
    """A camera turning on the spot: the centre is held where the prior puts it, the rotation recovered, and the
    covariance has no translation or cross terms (what the pipeline uses for a frame held at its keyframe)."""
    points_a, T_b_a, rng = scene
    norm_b = project(transform_points(T_b_a, points_a)) + rng.normal(0, 0.5 / FOCAL, (len(points_a), 2))
    centre = -T_b_a[:3, :3].T @ T_b_a[:3, 3]
    prior = perturb_left(T_b_a, np.array([0.01, -0.02, 0.005, 0, 0, 0]))  # rotation off by ~1.3 deg, centre right
    held = refine_pose(prior, points_a, norm_b, FOCAL, 2.0, hold_centre=True)
    assert np.allclose(-held.T_cam_odom[:3, :3].T @ held.T_cam_odom[:3, 3], centre, atol=1e-12)
    assert np.abs(held.T_cam_odom[:3, :3] - T_b_a[:3, :3]).max() < 2e-4 and held.inliers.mean() > 0.95
    assert np.all(np.diag(held.covariance)[:3] > 0)
    assert not held.covariance[3:].any() and not held.covariance[:, 3:].any()
    free = refine_pose(prior, points_a, norm_b, FOCAL, 2.0)
    assert np.all(np.diag(held.covariance)[:3] <= np.diag(free.covariance)[:3])  # the centre known: rotation surer


def _bundle(scene, metric: bool):
    points_a, T_b_a, rng = scene
    poses = np.array([np.eye(4), T_b_a, T_b_a @ T_b_a, T_b_a @ T_b_a @ T_b_a])  # T_cam_odom, odom = frame a
    obs_pose, obs_point, obs_xy, obs_depth = [], [], [], []
    for k, T in enumerate(poses):
        pc = transform_points(T, points_a)
        visible = pc[:, 2] > 0.5
        idx = np.flatnonzero(visible)
        obs_pose.append(np.full(len(idx), k))
        obs_point.append(idx)
        obs_xy.append(project(pc[idx]) + rng.normal(0, 0.5 / FOCAL, (len(idx), 2)))
        obs_depth.append(pc[idx, 2] * (1 + rng.normal(0, 0.003, len(idx))) if metric else np.full(len(idx), np.nan))
    noisy_poses = poses.copy()
    noisy_poses[2] = perturb_left(poses[2], np.array([0.003, -0.002, 0.001, 0.02, -0.01, 0.015]))
    noisy_poses[3] = perturb_left(poses[3], np.array([-0.002, 0.003, 0.0, -0.02, 0.02, 0.01]))
    noisy_points = points_a * (1 + rng.normal(0, 0.02, points_a.shape))
    problem = BundleProblem(noisy_poses, noisy_points, np.concatenate(obs_pose), np.concatenate(obs_point),
                            np.concatenate(obs_xy), np.concatenate(obs_depth), fixed=1 if metric else 2,
                            focal_px=FOCAL, huber_px=1.5, depth_sigma_per_m2=0.005)
    return problem, poses, points_a


@pytest.mark.parametrize("solver", ["lm", "scipy", "gtsam"])
def test_bundle_adjustment_point_priors(scene, solver):
    """Points that only the newest keyframe sees (``LocalMapper``'s single-view landmarks) join with a Gaussian prior
    at their position: every solver keeps them within their prior's reach while the other points fix the poses,
    counts the prior in its cost, and without the priors such points (one view, free depth) could go anywhere
    along their ray."""
    if solver == "gtsam":
        assert gtsam_available(), "the test extra installs gtsam (pip install '.[test]')"
    problem, poses, points = _bundle(scene, False)
    rng = np.random.default_rng(5)
    newest = len(poses) - 1
    # 30 points in front of the newest camera, observed by it only, placed (as tracking triangulated them) 3 %
    # off along their ray; priors of 20 % along the ray and 5 px across it
    T_odom_new = invert(poses[newest])
    in_cam = np.column_stack([rng.uniform(-1, 1, 30), rng.uniform(-0.7, 0.7, 30), rng.uniform(3, 6, 30)])
    truth = transform_points(T_odom_new, in_cam)
    ray = truth - T_odom_new[:3, 3]
    placed = T_odom_new[:3, 3] + ray * (1 + rng.normal(0, 0.03, (30, 1)))
    depth = np.linalg.norm(ray, axis=1)
    u = ray / depth[:, None]
    along = np.einsum("pi,pj->pij", u, u)
    information = np.zeros((len(points) + 30, 3, 3))
    information[len(points):] = along / (0.2 * depth[:, None, None]) ** 2 + \
        (np.eye(3) - along) / (5.0 * depth[:, None, None] / FOCAL) ** 2
    all_points = np.vstack([problem.points, placed])
    observed = project(in_cam) + rng.normal(0, 0.5 / FOCAL, (30, 2))
    with_priors = dataclasses.replace(
        problem, points=all_points, obs_pose=np.concatenate([problem.obs_pose, np.full(30, newest)]),
        obs_point=np.concatenate([problem.obs_point, len(points) + np.arange(30)]),
        obs_xy=np.vstack([problem.obs_xy, observed]), obs_depth=np.concatenate([problem.obs_depth, np.full(30, np.nan)]),
        point_priors=(all_points.copy(), information))
    result = bundle_adjust(with_priors, solver, 300 if solver == "scipy" else 20)  # scipy: slow (README)
    assert result.cost_after < result.cost_before
    moved = np.linalg.norm(result.points[len(points):] - placed, axis=1)
    assert np.all(moved < 3 * 0.2 * depth)  # within the prior's reach along the ray
    assert np.linalg.norm(invert(result.poses[newest])[:3, 3] - T_odom_new[:3, 3]) < 0.01
    # the prior's cost is counted: at the true poses, a point moved along its ray by one sigma from its prior
    # (its projection unchanged) costs exactly 0.5 more
    shifted = all_points.copy()
    shifted[len(points)] += 0.2 * depth[0] * u[0]
    extra = _total_cost(with_priors, poses, shifted) - _total_cost(with_priors, poses, all_points)
    assert extra == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("solver", ["lm", "scipy", "gtsam"])
@pytest.mark.parametrize("metric", [False, True])
def test_bundle_adjustment_recovers_poses_and_points(scene, solver, metric):
    if solver == "gtsam":
        assert gtsam_available(), "the test extra installs gtsam (pip install '.[test]')"
    problem, poses, points = _bundle(scene, metric)
    # scipy's trust region with LSMR converges slowly (README: ~15 % lower cost in 20 evaluations where lm and
    # gtsam reach the minimum); given 300 it gets there too
    result = bundle_adjust(problem, solver, 300 if solver == "scipy" else 20)
    assert result.solver == solver
    assert np.array_equal(result.poses[:problem.fixed], problem.poses[:problem.fixed])  # the gauge stays put
    assert result.cost_after < 0.2 * result.cost_before
    for k in (2, 3):
        assert np.linalg.norm(invert(result.poses[k])[:3, 3] - invert(poses[k])[:3, 3]) < 0.01
    assert np.median(np.linalg.norm(result.points - points, axis=1)) < 0.02
    assert np.median(result.errors_px) < 1.0


def test_rotation_only_is_not_pulled_by_matches_along_their_epipolar_lines():
    """A pure rotation with a fifth of the matches pushed tens of px off (as essential-matrix inliers can be,
    along their epipolar lines): the refitted rotation is the true one, where one least-squares fit to all is not."""
    from aliked_ros.geometry.pose import rotation_only

    rng = np.random.default_rng(3)
    R = exp_so3(np.array([0.02, 0.3, -0.01]))
    norm_a = rng.uniform(-0.5, 0.5, (300, 2))
    rays_b = bearings(norm_a) @ R.T
    norm_b = rays_b[:, :2] / rays_b[:, 2:] + rng.normal(0, 0.3 / 500, (300, 2))  # 0.3 px at f = 500 px
    off = rng.random(300) < 0.2
    norm_b[off] += np.array([1.0, 0.3]) * rng.uniform(20, 80, (off.sum(), 1)) / 500  # along one direction
    error_deg = {refits: np.degrees(np.arccos(np.clip((np.trace(rotation_only(norm_a, norm_b, refits).T @ R) - 1) / 2,
                                                      -1, 1))) for refits in (0, 3)}
    assert error_deg[3] < 0.02 < 0.2 < error_deg[0], error_deg
