"""Non-linear refinement: the pose of one frame against fixed landmarks (motion-only), and local bundle
adjustment of a window of keyframes and their landmarks.

Parameterisation: a camera pose is T_cam_odom, updated on the left, T <- exp(xi) T with xi = (rotation vector,
translation) in the camera frame. Reprojection residuals are in pixels (normalised error x focal), robustified with
Huber; depth residuals (RGB-D) are (z_predicted - z_measured) / sigma_z, sigma_z = ``depth_sigma_per_m2`` z^2,
so one unit of either is one standard deviation of the measurement (1 px for reprojection).

Solvers of the bundle adjustment (``solver``): ``lm`` (the default: Levenberg-Marquardt with the points
eliminated by the Schur complement, numpy only), ``gtsam`` (Levenberg-Marquardt on gtsam's projection and range
factors, when the optional ``gtsam`` wheel is installed) and ``scipy`` (``scipy.optimize.least_squares``,
trust-region reflective with an analytic sparse Jacobian and LSMR). README "Local bundle adjustment" has the
measured comparison that chose ``lm``.

The motion-only refinement's Gauss-Newton normal equations are summed by numba kernels
(``_reprojection_normal_equations``, ``_epipolar_normal_equations``; ``aliked_ros.jit``), the numpy Jacobians
of the same sums where numba is missing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.optimize import least_squares

from aliked_ros.geometry.multiview import transform_points
from aliked_ros.geometry.transforms import exp_so3, invert, perturb_left, skew
from aliked_ros.jit import compiled


@dataclass(frozen=True)
class PoseRefinement:
    T_cam_odom: np.ndarray
    inliers: np.ndarray  # (N,) bool: reprojection error below the threshold after refinement
    covariance: np.ndarray | None  # 6x6 of xi (rotation, translation; camera frame), None if not observable
    iterations: int
    residuals_px: np.ndarray  # (N,2) projection - observation at the final pose, px; inf behind the camera


def _projection_jacobian(points_cam: np.ndarray) -> np.ndarray:
    """d(x/z, y/z)/d(point) (N,2,3)."""
    x, y, z = points_cam.T
    inv_z = 1.0 / z
    J = np.zeros((len(points_cam), 2, 3))
    J[:, 0, 0] = inv_z
    J[:, 1, 1] = inv_z
    J[:, 0, 2] = -x * inv_z**2
    J[:, 1, 2] = -y * inv_z**2
    return J


@dataclass(frozen=True)
class EpipolarTerms:
    """Correspondences between a posed keyframe and the frame being refined, without landmarks: their epipolar
    errors constrain the rotation and the direction of translation, the landmarks the rest (the scale)."""

    T_odom_keyframe: np.ndarray
    norm_keyframe: np.ndarray  # (N,2)
    norm_frame: np.ndarray  # (N,2)


class _EpipolarResiduals:
    """Signed Sampson errors (px) of ``EpipolarTerms`` for one candidate pose and for its six forward
    perturbations at once (the numerical Jacobian of the refinement, in one batched evaluation)."""

    STEP = 1e-7
    ROTATIONS = np.stack([np.eye(3), *exp_so3(STEP * np.eye(3)), np.eye(3), np.eye(3), np.eye(3)])

    def __init__(self, terms: EpipolarTerms, focal_px: float):
        self.T_odom_keyframe, self.focal_px = terms.T_odom_keyframe, focal_px
        self.x_kf = np.column_stack([terms.norm_keyframe, np.ones(len(terms.norm_keyframe))])
        self.x_cur = np.column_stack([terms.norm_frame, np.ones(len(terms.norm_frame))])

    def _essentials(self, T_cam_odom: np.ndarray) -> np.ndarray | None:
        """E (7,3,3) of the pose and of its six perturbations, or None without translation."""
        T = T_cam_odom @ self.T_odom_keyframe  # T_cur_kf
        R, t = T[:3, :3], T[:3, 3]
        if np.linalg.norm(t) < 1e-9:
            return None
        # T and exp(STEP e_i) T for i = 0..5: R' = exp(w) R, t' = exp(w) t + v
        Rs, ts = self.ROTATIONS @ R, self.ROTATIONS @ t
        ts[4:] += self.STEP * np.eye(3)
        return skew(ts / np.linalg.norm(ts, axis=1, keepdims=True)) @ Rs

    def __call__(self, T_cam_odom: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(residuals (N,), Jacobian (N,6) d residual / d xi of ``perturb_left``), or None when the frame does
        not translate from the keyframe (no epipolar constraint)."""
        E = self._essentials(T_cam_odom)
        if E is None:
            return None
        Ex, Etx = self.x_kf @ np.swapaxes(E, 1, 2), self.x_cur @ E  # (K,N,3): E x_kf and E' x_cur
        denominator = Ex[..., 0] ** 2 + Ex[..., 1] ** 2 + Etx[..., 0] ** 2 + Etx[..., 1] ** 2
        residuals = np.sum(self.x_cur * Ex, axis=2) / np.sqrt(np.maximum(denominator, 1e-18)) * self.focal_px
        return residuals[0], ((residuals[1:] - residuals[0]) / self.STEP).T

    def add_normal_equations(self, T_cam_odom: np.ndarray, huber: float, H: np.ndarray, g: np.ndarray) -> None:
        """H += sum w J'J, g += sum w J'r over the terms (Huber weights, scale ``huber`` px): by the numba kernel
        when it is available, else from ``__call__``'s arrays."""
        kernel = _epipolar_kernel()
        if kernel is not None:
            E = self._essentials(T_cam_odom)
            if E is not None:
                kernel(E, self.x_kf, self.x_cur, self.focal_px, self.STEP, huber, H, g)
            return
        evaluated = self(T_cam_odom)
        if evaluated is not None:
            r, J = evaluated
            w = _huber_weights(np.abs(r), huber)
            H += J.T @ (J * w[:, None])
            g += J.T @ (w * r)


def _epipolar_normal_equations(E, x_kf, x_cur, focal, step, huber, H, g):  # numba: compiled()
    """``_EpipolarResiduals.add_normal_equations``: for each correspondence the signed Sampson error (px) under
    the essential matrices E[0] (the pose) and E[1..6] (its perturbations by ``step``), the forward-difference
    Jacobian, Huber-weighted sums added into H (6,6) and g (6,); the same arithmetic as ``__call__``."""
    r = np.empty(7)
    J = np.empty(6)
    for i in range(x_kf.shape[0]):
        a0, a1, a2 = x_kf[i, 0], x_kf[i, 1], x_kf[i, 2]
        b0, b1, b2 = x_cur[i, 0], x_cur[i, 1], x_cur[i, 2]
        for k in range(7):
            e = E[k]
            ex0 = e[0, 0] * a0 + e[0, 1] * a1 + e[0, 2] * a2
            ex1 = e[1, 0] * a0 + e[1, 1] * a1 + e[1, 2] * a2
            ex2 = e[2, 0] * a0 + e[2, 1] * a1 + e[2, 2] * a2
            et0 = e[0, 0] * b0 + e[1, 0] * b1 + e[2, 0] * b2
            et1 = e[0, 1] * b0 + e[1, 1] * b1 + e[2, 1] * b2
            denominator = ex0 * ex0 + ex1 * ex1 + et0 * et0 + et1 * et1
            r[k] = (b0 * ex0 + b1 * ex1 + b2 * ex2) / np.sqrt(max(denominator, 1e-18)) * focal
        magnitude = abs(r[0])
        w = 1.0 if magnitude <= huber else huber / max(magnitude, 1e-12)
        for k in range(6):
            J[k] = (r[k + 1] - r[0]) / step
        for a in range(6):
            g[a] += w * J[a] * r[0]
            for b in range(6):
                H[a, b] += w * J[a] * J[b]


def _epipolar_kernel():
    """``_epipolar_normal_equations`` compiled by numba, or None (numpy arrays instead)."""
    return compiled(_epipolar_normal_equations,
                    (np.tile(skew(np.array([1.0, 0.0, 0.0])), (7, 1, 1)), np.ones((1, 3)), np.ones((1, 3)), 1.0, 1e-7,
                     1.0, np.zeros((6, 6)), np.zeros(6)), "epipolar terms by numpy arrays")


def _reprojection_normal_equations(R, t, points, normalized, active, focal, huber, H, g):  # numba: compiled()
    """Gauss-Newton normal equations of the Huber-weighted reprojection errors (px) of the ``active`` landmarks
    ``points`` (N,3) observed at ``normalized`` (N,2), for the pose (R, t) = T_cam_odom perturbed on the left
    (xi = rotation, translation): writes H = sum w J'J (6,6) and g = sum w J'r (6,); returns the number of landmarks
    in front of the camera (the others are left out). The same sums as ``refine_pose``'s numpy path, without its
    per-landmark (N,2,6) Jacobian arrays: 17 us against ~100 us for 500 landmarks."""
    for a in range(6):
        g[a] = 0.0
        for b in range(6):
            H[a, b] = 0.0
    count = 0
    J0, J1 = np.empty(6), np.empty(6)
    for i in range(points.shape[0]):
        if not active[i]:
            continue
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + t[2]
        if not z > 1e-6:
            continue
        x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + t[0]
        y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + t[1]
        iz = 1.0 / z
        u, v = x * iz, y * iz
        rx, ry = (u - normalized[i, 0]) * focal, (v - normalized[i, 1]) * focal
        norm = np.sqrt(rx * rx + ry * ry)
        w = 1.0 if norm <= huber else huber / max(norm, 1e-12)
        # d(u, v) / d(rotation, translation) of the point p' = p + w x p + v: (d(u,v)/dp) [-skew(p), I]
        J0[0], J0[1], J0[2] = -u * v * focal, (1.0 + u * u) * focal, -v * focal
        J0[3], J0[4], J0[5] = iz * focal, 0.0, -u * iz * focal
        J1[0], J1[1], J1[2] = -(1.0 + v * v) * focal, u * v * focal, u * focal
        J1[3], J1[4], J1[5] = 0.0, iz * focal, -v * iz * focal
        for a in range(6):
            g[a] += w * (J0[a] * rx + J1[a] * ry)
            for b in range(a, 6):
                H[a, b] += w * (J0[a] * J0[b] + J1[a] * J1[b])
        count += 1
    for a in range(6):
        for b in range(a):
            H[a, b] = H[b, a]
    return count


def _normal_equations_kernel():
    """``_reprojection_normal_equations`` compiled by numba, or None (numpy Jacobians instead)."""
    eye, zeros = np.eye(3), np.zeros(3)
    return compiled(_reprojection_normal_equations,
                    (eye, zeros, np.ones((1, 3)), np.zeros((1, 2)), np.ones(1, bool), 1.0, 1.0, np.empty((6, 6)),
                     np.empty(6)), "pose refinement by numpy Jacobians")


def prepare_kernels() -> None:
    """Compile (or load from numba's disk cache) the refinement's kernels now: ~1.5 s the first time on a machine,
    then ~0.4 s, which a node would otherwise spend on its first frame."""
    _normal_equations_kernel()
    _epipolar_kernel()


def _huber_weights(norm: np.ndarray, k: float) -> np.ndarray:
    return np.where(norm <= k, 1.0, k / np.maximum(norm, 1e-12))


MIN_DEPTH_FRACTION = 0.05  # refine_pose leaves out landmarks nearer than this fraction of the median depth


def _not_too_close(T_cam_odom: np.ndarray, points_odom: np.ndarray) -> np.ndarray:
    """Landmarks in front of the camera at no less than ``MIN_DEPTH_FRACTION`` of the landmarks' median depth."""
    z = transform_points(T_cam_odom, points_odom)[:, 2]
    front = z > 0
    if not front.any():
        return front
    return z >= MIN_DEPTH_FRACTION * float(np.median(z[front]))


def refine_pose(T_cam_odom: np.ndarray, points_odom: np.ndarray, normalized: np.ndarray, focal_px: float,
                threshold_px: float, iterations: int = 6, epipolar: EpipolarTerms | None = None,
                hold_centre: bool = False, start_inliers: np.ndarray | None = None) -> PoseRefinement:
    """Gauss-Newton with Huber weights (scale ``threshold_px``/2) on the reprojection error of fixed landmarks,
    plus the epipolar errors of ``epipolar`` when given. Three rounds, as ORB-SLAM's pose optimisation: after
    each round, landmarks whose error exceeds 4x, 2x, then 1x ``threshold_px`` are left out of the next, so that
    a few wrong landmarks (a close one moves the pose a lot) cannot pull the pose away. The covariance is the
    inverse of the weighted normal matrix scaled by the landmark inliers' residual variance.

    Landmarks behind the camera or nearer than ``MIN_DEPTH_FRACTION`` of the median depth at the start pose are
    left out (outliers): a wrong triangulation near the camera's path moves hundreds of px for a mm of pose, and
    one such landmark dragged a synthetic 30 Hz run's pose by 10 mm.

    ``hold_centre``: the camera centre stays where ``T_cam_odom`` puts it and only the rotation is estimated
    (a rotation on the left keeps the centre); the covariance then has the rotation block only (zeros else).
    ``start_inliers``: (N,) bool, the landmarks the first round uses (a RANSAC's inliers at ``T_cam_odom``; the
    later rounds take back any within their bound); None: all."""
    dims = slice(0, 3) if hold_centre else slice(0, 6)
    T = T_cam_odom.copy()
    huber = 0.5 * threshold_px
    done = 0
    epipolar_residuals = _EpipolarResiduals(epipolar, focal_px) if epipolar is not None and len(epipolar.norm_frame) \
        else None

    def residuals_px(T):
        pc = transform_points(T, points_odom)
        with np.errstate(divide="ignore", invalid="ignore"):
            projected = np.where(pc[:, 2:3] > 1e-6, pc[:, :2] / pc[:, 2:3], np.inf)
        return (projected - normalized) * focal_px

    def errors_px(T):
        return np.linalg.norm(residuals_px(T), axis=1)

    kernel = _normal_equations_kernel()
    if kernel is not None:
        points_odom, normalized = np.ascontiguousarray(points_odom, float), np.ascontiguousarray(normalized, float)

    def normal_equations(T, active):
        """(H (6,6), g (6,)) of the Huber-weighted reprojection errors of the ``active`` landmarks and the
        epipolar terms, and the number of those landmarks in front of the camera."""
        if kernel is not None:
            H, g = np.empty((6, 6)), np.empty(6)
            count = kernel(np.ascontiguousarray(T[:3, :3]), np.ascontiguousarray(T[:3, 3]), points_odom, normalized,
                           active, focal_px, huber, H, g)
        else:
            pc = transform_points(T, points_odom[active])
            front = pc[:, 2] > 1e-6
            pc = pc[front]
            r = (pc[:, :2] / pc[:, 2:3] - normalized[active][front]) * focal_px
            Jp = _projection_jacobian(pc) * focal_px
            J = np.concatenate([Jp @ -skew(pc), Jp], axis=2).reshape(-1, 6)
            w = np.repeat(_huber_weights(np.linalg.norm(r, axis=1), huber), 2)
            H, g, count = J.T @ (J * w[:, None]), J.T @ (w * r.reshape(-1)), int(front.sum())
        if epipolar_residuals is not None:
            epipolar_residuals.add_normal_equations(T, huber, H, g)
        return H, g, count

    usable = _not_too_close(T, points_odom)
    active = usable.copy() if start_inliers is None else usable & start_inliers
    for bound in (4.0, 2.0, 1.0):
        for _ in range(iterations):
            done += 1
            H, g, count = normal_equations(T, active)
            if count < 3:
                break
            H, g = H[dims, dims], g[dims]
            try:
                step = np.zeros(6)
                step[dims] = -np.linalg.solve(H + 1e-9 * np.eye(len(H)), g)
            except np.linalg.LinAlgError:
                break
            T = perturb_left(T, step)
            if np.linalg.norm(step) < 1e-6:  # 1e-6 rad and map units: ~1e-3 px, far below what the pixels resolve
                break
        active = usable & (errors_px(T) <= bound * threshold_px)
        if active.sum() < 6:
            break
    residuals = residuals_px(T)
    errors = np.linalg.norm(residuals, axis=1)
    inliers = usable & (errors <= threshold_px)
    covariance = None
    if inliers.sum() >= 6:
        information = normal_equations(T, inliers)[0][dims, dims]
        dof = max(2 * int(inliers.sum()) - len(information), 1)
        sigma2 = float(np.sum(errors[inliers] ** 2) / dof)
        if np.linalg.cond(information) < 1e12:
            covariance = np.zeros((6, 6))
            covariance[dims, dims] = np.linalg.inv(information) * max(sigma2, 1e-4)
    return PoseRefinement(T, inliers, covariance, done, residuals)


@dataclass(frozen=True)
class RollingShutterRefinement:
    T_cam_odom: np.ndarray  # the pose at the stamp (the centre row's time)
    omega: np.ndarray  # (3,) angular velocity during the readout, rad/s, camera frame
    velocity: np.ndarray  # (3,) linear velocity during the readout, map units/s, camera frame
    inliers: np.ndarray  # (N,) bool
    velocity_covariance: np.ndarray | None = None  # 6x6: what the velocities' uncertainty adds to the pose's
    #                                                (refine_pose's convention), None when not observable


def refine_pose_and_velocity(T_cam_odom: np.ndarray, points_odom: np.ndarray, normalized: np.ndarray,
                             times: np.ndarray, omega_prior: np.ndarray, omega_sigma: float,
                             velocity_prior: np.ndarray, velocity_sigma: float, focal_px: float,
                             threshold_px: float, iterations: int = 5) -> RollingShutterRefinement | None:
    """Gauss-Newton on the pose at the stamp and the camera's angular and linear velocity during the readout
    (``aliked_ros.geometry.rolling_shutter``): a landmark observed at row time t (``times``, s) projects from
    ``exp(-omega t) (T p - velocity t)``; ``normalized`` are the observations as read (not moved to the stamp).
    Gaussian priors (``..._prior`` +- ``..._sigma``, against 1 px of pixel noise) hold the velocities where the
    landmarks say little of them (few landmarks, rows close together, rotation about the optical axis). Huber and
    three rounds of outlier bounds as :func:`refine_pose`. None with fewer than 6 usable landmarks."""
    T = T_cam_odom.copy()
    omega, velocity = np.asarray(omega_prior, float).copy(), np.asarray(velocity_prior, float).copy()
    huber = 0.5 * threshold_px
    prior_information = np.diag([max(omega_sigma, 1e-9) ** -2] * 3 + [max(velocity_sigma, 1e-9) ** -2] * 3)
    usable = _not_too_close(T, points_odom)
    active = usable.copy()

    def at_rows(T, omega, velocity):
        """(exp(-omega t) (N,3,3), the points at the stamp T p, as seen at their row times, residuals px)."""
        turn = exp_so3(-times[:, None] * omega[None, :])
        points_cam = transform_points(T, points_odom)
        seen = np.einsum("nij,nj->ni", turn, points_cam - times[:, None] * velocity[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            projected = np.where(seen[:, 2:3] > 1e-6, seen[:, :2] / seen[:, 2:3], np.inf)
        return turn, points_cam, seen, (projected - normalized) * focal_px

    def residuals_px(T, omega, velocity):
        return at_rows(T, omega, velocity)[3]

    for bound in (4.0, 2.0, 1.0):
        for _ in range(iterations):
            turn, points_cam, seen, r = at_rows(T, omega, velocity)
            use = np.flatnonzero(active & (seen[:, 2] > 1e-6))
            if len(use) < 6:
                return None
            turn, points_cam, seen = turn[use], points_cam[use], seen[use]
            projection = _projection_jacobian(seen) * focal_px
            eye = np.broadcast_to(np.eye(3), (len(use), 3, 3))
            J = np.concatenate([projection @ turn @ np.concatenate([-skew(points_cam), eye], axis=2),  # pose
                                projection @ skew(seen) * times[use, None, None],  # omega
                                projection @ turn * -times[use, None, None]], axis=2).reshape(-1, 12)  # velocity
            w = np.repeat(_huber_weights(np.linalg.norm(r[use], axis=1), huber), 2)
            H = J.T @ (J * w[:, None])
            g = J.T @ (w * r[use].reshape(-1))
            H[6:, 6:] += prior_information
            g[6:] += prior_information @ np.concatenate([omega - omega_prior, velocity - velocity_prior])
            try:
                step = -np.linalg.solve(H + 1e-9 * np.eye(12), g)
            except np.linalg.LinAlgError:
                return None
            T, omega, velocity = perturb_left(T, step[:6]), omega + step[6:9], velocity + step[9:]
            if np.linalg.norm(step) < 1e-6:
                break
        active = usable & (np.linalg.norm(residuals_px(T, omega, velocity), axis=1) <= bound * threshold_px)
        if active.sum() < 6:
            return None
    # the pose's marginal covariance minus its covariance with the velocities known (both x the residual variance)
    errors = np.linalg.norm(residuals_px(T, omega, velocity)[active], axis=1)
    sigma2 = max(float(np.sum(errors ** 2)) / max(2 * int(active.sum()) - 12, 1), 1e-4)
    added = None
    if np.linalg.cond(H) < 1e12 and np.linalg.cond(H[:6, :6]) < 1e12:
        added = (np.linalg.inv(H)[:6, :6] - np.linalg.inv(H[:6, :6])) * sigma2
        added = 0.5 * (added + added.T)
    return RollingShutterRefinement(T, omega, velocity, active, added)


MIN_SHARED_LANDMARKS = 20  # fewer landmarks in common: ``independent_error_fraction`` is 1
MIN_INDEPENDENT_FRACTION = 0.05


def independent_error_fraction(current: tuple[np.ndarray, np.ndarray] | None,
                               previous: tuple[np.ndarray, np.ndarray] | None) -> float:
    """The part of two poses' residual variance that is not common to both, each frame given as (track ids, (n,2)
    residuals in px at its final pose) of the landmarks its refinement kept: (sum over the landmarks both kept of
    |r_c - r_p|^2, plus sum |r|^2 over those only one kept) / (sum |r_c|^2 + sum |r_p|^2) over all.

    ``refine_pose``'s covariance counts all of a frame's residual variance as pixel noise. Part of it is the map's
    own error (a landmark triangulated a little off), which consecutive frames, seeing the same landmarks from
    nearly the same place, share: it moves both poses alike and cancels in the motion between them. The motion's
    covariance is therefore the two poses' covariances times this fraction (medians measured: 0.3 at 120 Hz, 0.44 at
    30 Hz, 0.5 on KITTI's 1 m steps: the further apart the views, the less alike the map error projects). Clipped to
    [``MIN_INDEPENDENT_FRACTION``, 1]; 1 when either is unknown or fewer than ``MIN_SHARED_LANDMARKS`` are shared."""
    if current is None or previous is None:
        return 1.0
    ids, at_current, at_previous = np.intersect1d(current[0], previous[0], return_indices=True)
    if len(ids) < MIN_SHARED_LANDMARKS:
        return 1.0
    r_c, r_p = current[1][at_current], previous[1][at_previous]
    total = float(np.sum(current[1] ** 2) + np.sum(previous[1] ** 2))
    if not total > 0:
        return 1.0
    # landmarks only one of the two frames used: all their error is independent
    independent = total - float(np.sum(r_c ** 2) + np.sum(r_p ** 2)) + float(np.sum((r_c - r_p) ** 2))
    return float(np.clip(independent / total, MIN_INDEPENDENT_FRACTION, 1.0))


# --- local bundle adjustment ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleProblem:
    """Observations of ``points`` by ``poses``: pose index, point index, normalised coordinates, and measured
    depth (NaN where none). The first ``fixed`` poses are held constant (gauge; scale too, for monocular)."""

    poses: np.ndarray  # (K,4,4) T_cam_odom
    points: np.ndarray  # (P,3) odom frame
    obs_pose: np.ndarray  # (M,)
    obs_point: np.ndarray  # (M,)
    obs_xy: np.ndarray  # (M,2)
    obs_depth: np.ndarray  # (M,)
    fixed: int
    focal_px: float
    huber_px: float
    depth_sigma_per_m2: float
    point_priors: tuple[np.ndarray, np.ndarray] | None = None  # (positions (P,3), information (P,3,3)): a Gaussian
    #                                 prior on each point, cost 0.5 dp' I dp (zero information: none); scipy's
    #                                 solver robustifies these rows with the same Huber loss as the others


@dataclass(frozen=True)
class BundleResult:
    poses: np.ndarray  # (K,4,4) T_cam_odom
    points: np.ndarray  # (P,3)
    errors_px: np.ndarray  # (M,) reprojection error per observation after optimisation
    cost_before: float  # robust cost (reprojection and depth terms) as ``lm`` minimises it (``_total_cost``); the
    #                     others minimise close variants: ``gtsam`` a range (not z) term without Huber, ``scipy``
    #                     Huber on each residual row (x, y apart) at ``huber_px``, the depth rows too
    cost_after: float
    solver: str


def _reprojection(problem: BundleProblem, poses: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pc = np.einsum("mij,mj->mi", poses[problem.obs_pose, :3, :3], points[problem.obs_point]) \
        + poses[problem.obs_pose, :3, 3]
    z = np.where(pc[:, 2] > 1e-6, pc[:, 2], 1e-6)
    return (pc[:, :2] / z[:, None] - problem.obs_xy) * problem.focal_px, pc


def _prior_points(problem: BundleProblem) -> np.ndarray:
    """Indices of the points with a prior (non-zero information)."""
    if problem.point_priors is None:
        return np.zeros(0, int)
    return np.flatnonzero(np.abs(problem.point_priors[1]).reshape(len(problem.points), 9).max(axis=1) > 0)


def _solve_scipy(problem: BundleProblem, max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    K, P = len(problem.poses), len(problem.points)
    free = K - problem.fixed
    n_pose = 6 * free
    has_depth = np.isfinite(problem.obs_depth)
    depth_rows = np.flatnonzero(has_depth)
    M = len(problem.obs_pose)

    def unpack(x):
        poses = problem.poses.copy()
        for k in range(free):
            poses[problem.fixed + k] = perturb_left(problem.poses[problem.fixed + k], x[6 * k: 6 * k + 6])
        return poses, x[n_pose:].reshape(P, 3)

    # priors as residual rows L' (p - p0), information = L L'
    prior_points = _prior_points(problem)
    if len(prior_points):
        p0, information = problem.point_priors
        prior_L = np.linalg.cholesky(information[prior_points]).transpose(0, 2, 1)  # (Q,3,3) = L'

    def residuals(x):
        poses, points = unpack(x)
        r, pc = _reprojection(problem, poses, points)
        sigma = problem.depth_sigma_per_m2 * problem.obs_depth[depth_rows] ** 2
        rd = (pc[depth_rows, 2] - problem.obs_depth[depth_rows]) / sigma
        rows = [r.reshape(-1), rd]
        if len(prior_points):
            rows.append(np.einsum("qij,qj->qi", prior_L, points[prior_points] - p0[prior_points]).reshape(-1))
        return np.concatenate(rows)

    pose_col = problem.obs_pose - problem.fixed  # < 0: fixed pose
    point_col = n_pose + 3 * problem.obs_point
    point_col_of = n_pose + 3 * np.arange(P)  # each point's first column
    rows_r = np.arange(2 * M).reshape(M, 2)

    def jacobian(x):
        poses, points = unpack(x)
        _, pc = _reprojection(problem, poses, points)
        pc[:, 2] = np.maximum(pc[:, 2], 1e-6)
        Jp = _projection_jacobian(pc) * problem.focal_px  # (M,2,3)
        R = poses[problem.obs_pose, :3, :3]
        J_point = Jp @ R  # (M,2,3)
        J_pose = np.concatenate([Jp @ -skew(pc), Jp], axis=2)  # (M,2,6)
        data, rows, cols = [], [], []
        # points
        data.append(J_point.reshape(-1))
        rows.append(np.repeat(rows_r, 3, axis=1).reshape(-1))
        cols.append((point_col[:, None, None] + np.arange(3)[None, None, :]).repeat(2, axis=1).reshape(-1))
        moving = pose_col >= 0
        data.append(J_pose[moving].reshape(-1))
        rows.append(np.repeat(rows_r[moving], 6, axis=1).reshape(-1))
        cols.append((6 * pose_col[moving][:, None, None] + np.arange(6)[None, None, :]).repeat(2, axis=1).reshape(-1))
        if len(depth_rows):
            sigma = problem.depth_sigma_per_m2 * problem.obs_depth[depth_rows] ** 2
            r_idx = 2 * M + np.arange(len(depth_rows))
            d_point = R[depth_rows, 2, :] / sigma[:, None]  # dz/dX = row 3 of R
            data.append(d_point.reshape(-1))
            rows.append(np.repeat(r_idx, 3))
            cols.append((point_col[depth_rows][:, None] + np.arange(3)).reshape(-1))
            dm = moving[depth_rows]
            dz_dxi = np.concatenate([-skew(pc[depth_rows])[:, 2, :], np.tile([0.0, 0.0, 1.0], (len(depth_rows), 1))],
                                    axis=1) / sigma[:, None]
            data.append(dz_dxi[dm].reshape(-1))
            rows.append(np.repeat(r_idx[dm], 6))
            cols.append((6 * pose_col[depth_rows][dm][:, None] + np.arange(6)).reshape(-1))
        if len(prior_points):
            r_idx = 2 * M + len(depth_rows) + 3 * np.arange(len(prior_points))
            data.append(prior_L.reshape(-1))
            rows.append(np.repeat(r_idx[:, None] + np.arange(3), 3, axis=1).reshape(-1))
            cols.append(np.tile(point_col_of[prior_points][:, None] + np.arange(3), (1, 3)).reshape(-1))
        return scipy.sparse.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                                       shape=(2 * M + len(depth_rows) + 3 * len(prior_points), n_pose + 3 * P))

    x0 = np.concatenate([np.zeros(n_pose), problem.points.reshape(-1)])
    # ftol 1e-12: max_iterations bounds the work. With 1e-6 a metric problem stopped after ~20 evaluations at 88 %
    # of its initial cost, its poses not moved (LSMR's small steps each lower the cost by less than that)
    solution = least_squares(residuals, x0, jac=jacobian, loss="huber", f_scale=problem.huber_px, method="trf",
                             x_scale="jac", tr_solver="lsmr", max_nfev=max_iterations, xtol=1e-10, ftol=1e-12)
    return unpack(solution.x)


def _blocks(problem: BundleProblem, poses: np.ndarray, points: np.ndarray):
    """Per observation: residual rows (M,3) (x, y in px; depth in sigmas, 0 without depth), Jacobians w.r.t. the
    pose (M,3,6) and the point (M,3,3), and IRLS weights (M,3) of the robust cost."""
    r_xy, pc = _reprojection(problem, poses, points)
    pc[:, 2] = np.maximum(pc[:, 2], 1e-6)
    Jp = _projection_jacobian(pc) * problem.focal_px  # (M,2,3)
    R = poses[problem.obs_pose, :3, :3]
    has_depth = np.isfinite(problem.obs_depth)
    sigma = problem.depth_sigma_per_m2 * np.where(has_depth, problem.obs_depth, 1.0) ** 2
    r = np.zeros((len(pc), 3))
    r[:, :2] = r_xy
    r[:, 2] = np.where(has_depth, (pc[:, 2] - np.nan_to_num(problem.obs_depth)) / sigma, 0.0)
    J_pose = np.zeros((len(pc), 3, 6))
    J_pose[:, :2] = np.concatenate([Jp @ -skew(pc), Jp], axis=2)
    J_pose[:, 2, :3] = -skew(pc)[:, 2, :] / sigma[:, None]
    J_pose[:, 2, 5] = 1.0 / sigma
    J_point = np.zeros((len(pc), 3, 3))
    J_point[:, :2] = Jp @ R
    J_point[:, 2] = R[:, 2, :] / sigma[:, None]
    w = np.empty((len(pc), 3))
    w[:, :2] = _huber_weights(np.linalg.norm(r_xy, axis=1), problem.huber_px)[:, None]
    w[:, 2] = np.where(has_depth, _huber_weights(np.abs(r[:, 2]), 3.0), 0.0)
    J_pose[:, 2] *= has_depth[:, None]
    J_point[:, 2] *= has_depth[:, None]
    return r, J_pose, J_point, w


def _total_cost(problem: BundleProblem, poses: np.ndarray, points: np.ndarray) -> float:
    """The robust cost the solvers minimise: Huber on reprojection (px) and on depth (sigmas, k = 3)."""
    r_xy, pc = _reprojection(problem, poses, points)
    e = np.linalg.norm(r_xy, axis=1)
    k = problem.huber_px
    cost = np.where(e <= k, 0.5 * e**2, k * (e - 0.5 * k)).sum()
    has_depth = np.isfinite(problem.obs_depth)
    z = problem.obs_depth[has_depth]
    d = np.abs(pc[has_depth, 2] - z) / (problem.depth_sigma_per_m2 * z**2)
    cost = cost + np.where(d <= 3.0, 0.5 * d**2, 3.0 * (d - 1.5)).sum()
    if problem.point_priors is not None:
        p0, info = problem.point_priors
        dp = points - p0
        cost = cost + 0.5 * float(np.einsum("pi,pij,pj->", dp, info, dp))
    return float(cost)


def _summing(index: np.ndarray, count: int) -> scipy.sparse.csr_matrix:
    """(count, len(index)) 0/1 matrix S with S @ values = the rows of ``values`` summed by ``index`` (np.add.at's
    result, built once per problem and ~20x faster than it)."""
    return scipy.sparse.csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))), shape=(count, len(index)))


def _summed(summing: scipy.sparse.csr_matrix, values: np.ndarray) -> np.ndarray:
    return np.asarray(summing @ values.reshape(len(values), -1)).reshape((summing.shape[0],) + values.shape[1:])


def _solve_lm(problem: BundleProblem, max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on the robust (IRLS) cost with the points eliminated by the Schur complement: one dense
    6F x 6F solve per iteration (F free poses), the points then in closed form, 3x3 each."""
    K, P = len(problem.poses), len(problem.points)
    F = K - problem.fixed
    poses, points = problem.poses.copy(), problem.points.copy()
    pose_of = problem.obs_pose - problem.fixed  # < 0: a fixed pose
    free = pose_of >= 0
    # pairs of observations of one point by two free poses (for the Schur complement)
    fo = np.flatnonzero(free)
    order = fo[np.argsort(problem.obs_point[fo], kind="stable")]
    sorted_points = problem.obs_point[order]
    starts = np.searchsorted(sorted_points, sorted_points, "left")
    counts = np.searchsorted(sorted_points, sorted_points, "right") - starts
    first = np.repeat(np.arange(len(order)), counts)
    second = starts[first] + np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_a, pair_b = order[first], order[second]
    by_point = _summing(problem.obs_point, P)
    if F > 0:
        by_pose = _summing(pose_of[free], F)
        by_pose_pair = _summing(pose_of[pair_a] * F + pose_of[pair_b], F * F)
        by_free_point = _summing(problem.obs_point[free], P)
    point_free = problem.obs_point[free]
    cost = _total_cost(problem, poses, points)
    lam = 1e-3
    for _ in range(max_iterations):
        r, Jc, Jl, w = _blocks(problem, poses, points)
        WJl = Jl * w[:, :, None]
        WJc = Jc * w[:, :, None]
        V = _summed(by_point, np.matmul(Jl.transpose(0, 2, 1), WJl))
        gl = _summed(by_point, np.matmul(WJl.transpose(0, 2, 1), r[:, :, None])[:, :, 0])
        if problem.point_priors is not None:
            p0, info = problem.point_priors
            V = V + info
            gl = gl + np.einsum("pij,pj->pi", info, points - p0)
        U = np.zeros((max(F, 0), 6, 6))
        gc = np.zeros((max(F, 0), 6))
        Wm = np.matmul(WJc.transpose(0, 2, 1), Jl)  # (M,6,3) pose-point coupling
        if F > 0:
            U = _summed(by_pose, np.matmul(Jc[free].transpose(0, 2, 1), WJc[free]))
            gc = _summed(by_pose, np.matmul(WJc[free].transpose(0, 2, 1), r[free][:, :, None])[:, :, 0])
        improved = False
        for _ in range(6):
            Vd = V + (lam * np.einsum("pii->pi", V)[:, :, None] * np.eye(3) + 1e-9 * np.eye(3))
            V_inv = np.linalg.inv(Vd)
            dc = np.zeros((max(F, 0), 6))
            if F > 0:
                Ud = U + lam * np.einsum("kii->ki", U)[:, :, None] * np.eye(6) + 1e-9 * np.eye(6)
                WV = np.matmul(Wm, V_inv[problem.obs_point])  # (M,6,3): W V^-1 per observation
                coupling = np.matmul(WV[pair_a], Wm[pair_b].transpose(0, 2, 1))
                S = -_summed(by_pose_pair, coupling).reshape(F, F, 6, 6)
                S[np.arange(F), np.arange(F)] += Ud
                b = gc - _summed(by_pose, np.matmul(WV[free], gl[point_free][:, :, None])[:, :, 0])
                dc = -np.linalg.solve(S.transpose(0, 2, 1, 3).reshape(6 * F, 6 * F), b.reshape(-1)).reshape(F, 6)
            rhs = gl.copy()
            if F > 0:
                moved = np.matmul(Wm[free].transpose(0, 2, 1), dc[pose_of[free]][:, :, None])[:, :, 0]
                rhs += _summed(by_free_point, moved)
            dl = -np.matmul(V_inv, rhs[:, :, None])[:, :, 0]
            new_poses = poses.copy()
            for k in range(F):
                new_poses[problem.fixed + k] = perturb_left(poses[problem.fixed + k], dc[k])
            new_points = points + dl
            new_cost = _total_cost(problem, new_poses, new_points)
            if new_cost < cost:
                improved = cost - new_cost > 1e-6 * cost
                poses, points, cost = new_poses, new_points, new_cost
                lam = max(lam / 3, 1e-7)
                break
            lam *= 4
        if not improved:
            break
    return poses, points


def _solve_gtsam(problem: BundleProblem, max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    import gtsam

    graph = gtsam.NonlinearFactorGraph()
    values = gtsam.Values()
    calibration = gtsam.Cal3_S2(problem.focal_px, problem.focal_px, 0.0, 0.0, 0.0)
    pixel_noise = gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Huber.Create(problem.huber_px),
                                                 gtsam.noiseModel.Isotropic.Sigma(2, 1.0))
    X = lambda k: gtsam.symbol("x", k)  # noqa: E731
    L = lambda p: gtsam.symbol("l", p)  # noqa: E731
    for k, T_cam_odom in enumerate(problem.poses):
        pose = gtsam.Pose3(invert(T_cam_odom))  # gtsam: T_odom_cam
        values.insert(X(k), pose)
        if k < problem.fixed:
            graph.add(gtsam.NonlinearEqualityPose3(X(k), pose))
    for p, point in enumerate(problem.points):
        values.insert(L(p), gtsam.Point3(*point))
    measured = problem.obs_xy * problem.focal_px
    for m in range(len(problem.obs_pose)):
        graph.add(gtsam.GenericProjectionFactorCal3_S2(gtsam.Point2(*measured[m]), pixel_noise, X(int(problem.obs_pose[m])),
                                                        L(int(problem.obs_point[m])), calibration))
    depth = np.flatnonzero(np.isfinite(problem.obs_depth))
    for m in depth:
        z = float(problem.obs_depth[m])
        ray = float(np.linalg.norm(np.append(problem.obs_xy[m], 1.0)))  # range = z x |(x, y, 1)|: its sigma too
        noise = gtsam.noiseModel.Isotropic.Sigma(1, problem.depth_sigma_per_m2 * z * z * ray)
        graph.add(gtsam.RangeFactor3D(X(int(problem.obs_pose[m])), L(int(problem.obs_point[m])), z * ray, noise))
    if problem.point_priors is not None:
        p0, information = problem.point_priors
        for p in _prior_points(problem):
            graph.add(gtsam.PriorFactorPoint3(L(int(p)), gtsam.Point3(*p0[p]),
                                              gtsam.noiseModel.Gaussian.Information(information[p])))
    params = gtsam.LevenbergMarquardtParams()
    params.setMaxIterations(max_iterations)
    result = gtsam.LevenbergMarquardtOptimizer(graph, values, params).optimize()
    poses = np.array([invert(result.atPose3(X(k)).matrix()) for k in range(len(problem.poses))])
    poses[:problem.fixed] = problem.poses[:problem.fixed]  # held constant (bit for bit, not through gtsam)
    points = np.array([result.atPoint3(L(p)) for p in range(len(problem.points))]).reshape(-1, 3)
    return poses, points


def gtsam_available() -> bool:
    try:
        import gtsam  # noqa: F401
    except ImportError:
        return False
    return True


BA_SOLVERS = ("lm", "gtsam", "scipy")  # bundle_adjust's solvers ("auto" = "lm")


def bundle_adjust(problem: BundleProblem, solver: str = "auto", max_iterations: int = 15) -> BundleResult:
    """Optimise the free poses and all points of ``problem``; returns the new values and per-observation errors."""
    if solver == "auto":
        solver = "lm"
    before = _total_cost(problem, problem.poses, problem.points)
    if solver == "gtsam":
        poses, points = _solve_gtsam(problem, max_iterations)
    elif solver == "scipy":
        poses, points = _solve_scipy(problem, max_iterations)
    elif solver == "lm":
        poses, points = _solve_lm(problem, max_iterations)
    else:
        raise ValueError(f"unknown bundle adjustment solver {solver!r}: auto, {', '.join(BA_SOLVERS)}")
    r, _ = _reprojection(problem, poses, points)
    return BundleResult(poses, points, np.linalg.norm(r, axis=1), before, _total_cost(problem, poses, points), solver)
