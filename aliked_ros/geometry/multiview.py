"""Multi-view geometry on normalised image coordinates (undistorted x/z, y/z) — pure numpy, no estimation loops.

Conventions: ``T_b_a`` maps points of frame a into frame b (p_b = R p_a + t). Normalised coordinates are unitless;
a threshold of ``p`` pixels is ``p / focal_px`` in these units. Angles in radians. Where a function says so, a
transform (4,4) or rotation (3,3) may also be one per point, (N,4,4) or (N,3,3).
"""
from __future__ import annotations

import numpy as np

from aliked_ros.geometry.transforms import skew


def bearings(normalized: np.ndarray) -> np.ndarray:
    """Unit rays (N,3) through normalised coordinates (N,2)."""
    rays = np.column_stack([normalized, np.ones(len(normalized))])
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def transform_points(T_b_a: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Points (N,3) of frame a expressed in frame b; T_b_a (4,4) or one per point (N,4,4)."""
    if T_b_a.ndim == 3:
        return np.einsum("nij,nj->ni", T_b_a[:, :3, :3], points_a) + T_b_a[:, :3, 3]
    return points_a @ T_b_a[:3, :3].T + T_b_a[:3, 3]


def project(points_cam: np.ndarray) -> np.ndarray:
    """Normalised coordinates (N,2) of camera-frame points (N,3); NaN for points at or behind the camera."""
    z = points_cam[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z > 1e-9, points_cam[:, :2] / z, np.nan)


def reprojection_errors(T_cam_world: np.ndarray, points_world: np.ndarray, normalized: np.ndarray) -> np.ndarray:
    """|project(T X) - x| (N,) in normalised units; inf for points behind the camera. T (4,4) or (N,4,4)."""
    error = np.linalg.norm(project(transform_points(T_cam_world, points_world)) - normalized, axis=1)
    return np.where(np.isfinite(error), error, np.inf)


def rotation_compensated_parallax(norm_a: np.ndarray, norm_b: np.ndarray, R_b_a: np.ndarray) -> np.ndarray:
    """Angle (N,) between each bearing in b and the bearing from a rotated into b: the part of the image motion
    that only translation can explain. R_b_a (3,3) or one per correspondence (N,3,3)."""
    rays_a = bearings(norm_a)
    rotated = np.einsum("nij,nj->ni", R_b_a, rays_a) if R_b_a.ndim == 3 else rays_a @ R_b_a.T
    cosine = np.sum(rotated * bearings(norm_b), axis=1)
    return np.arccos(np.clip(cosine, -1.0, 1.0))


def signed_sampson(norm_a: np.ndarray, norm_b: np.ndarray, T_b_a: np.ndarray) -> np.ndarray:
    """Signed first-order geometric epipolar error (N,) of correspondences a -> b under motion T_b_a (which must
    translate), normalised units: x_b' E x_a / sqrt(|E x_a|_12^2 + |E' x_b|_12^2), E = [t]x R. Invariant to the
    length of t."""
    R, t = T_b_a[:3, :3], T_b_a[:3, 3]
    E = skew(t / np.linalg.norm(t)) @ R
    xa = np.column_stack([norm_a, np.ones(len(norm_a))])
    xb = np.column_stack([norm_b, np.ones(len(norm_b))])
    Ex, Etx = xa @ E.T, xb @ E
    denominator = Ex[:, 0] ** 2 + Ex[:, 1] ** 2 + Etx[:, 0] ** 2 + Etx[:, 1] ** 2
    return np.sum(xb * Ex, axis=1) / np.sqrt(np.maximum(denominator, 1e-18))


def sampson_error(norm_a: np.ndarray, norm_b: np.ndarray, T_b_a: np.ndarray) -> np.ndarray:
    """First-order geometric epipolar error (N,) of correspondences a -> b under motion T_b_a, normalised units.
    For a motion without translation, the rotation-compensated angle (the epipolar constraint is empty)."""
    if np.linalg.norm(T_b_a[:3, 3]) < 1e-12:
        return rotation_compensated_parallax(norm_a, norm_b, T_b_a[:3, :3])
    return np.abs(signed_sampson(norm_a, norm_b, T_b_a))


def triangulate(norm_a: np.ndarray, norm_b: np.ndarray, T_b_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (N,3) in frame a from normalised observations in a and b (linear DLT per point), and a mask of
    finite points in front of both cameras. T_b_a (4,4) or one per correspondence (N,4,4)."""
    P_a = np.hstack([np.eye(3), np.zeros((3, 1))])
    P_b = T_b_a[..., :3, :]  # (3,4) or (N,3,4)
    rows = np.stack([
        norm_a[:, 0:1] * P_a[2] - P_a[0], norm_a[:, 1:2] * P_a[2] - P_a[1],
        norm_b[:, 0:1] * P_b[..., 2, :] - P_b[..., 0, :], norm_b[:, 1:2] * P_b[..., 2, :] - P_b[..., 1, :],
    ], axis=1)  # (N, 4, 4)
    if len(rows) == 0:
        return np.zeros((0, 3)), np.zeros(0, bool)
    _, _, vt = np.linalg.svd(rows)
    homogeneous = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        points = homogeneous[:, :3] / homogeneous[:, 3:4]
        depth_b = transform_points(T_b_a, points)[:, 2]
        valid = np.isfinite(points).all(axis=1) & (points[:, 2] > 0) & (depth_b > 0)
    return points, valid


def translation_from_points(points_a: np.ndarray, norm_b: np.ndarray, R_b_a: np.ndarray, threshold: float,
                            min_count: int) -> np.ndarray | None:
    """Translation t of T_b_a (rotation known) that puts points X_a (N,3) on their observed rays in b:
    least squares on [b]x (R X + t) = 0 (b the unit bearing), iteratively reweighted (Huber with scale
    ``threshold`` in normalised units) so that mismatched or badly triangulated points count little. None when
    fewer than ``min_count`` points agree (residual <= 3 x threshold)."""
    if len(points_a) < min_count:
        return None
    rotated = points_a @ R_b_a.T
    S = skew(bearings(norm_b))
    A = S.reshape(-1, 3)
    y = -np.einsum("nij,nj->ni", S, rotated).reshape(-1)
    inverse_depth = np.repeat(1.0 / np.maximum(np.linalg.norm(rotated, axis=1), 1e-9), 3)  # residuals -> angles
    weights = inverse_depth
    t = np.zeros(3)
    residual = np.zeros(len(points_a))
    for _ in range(10):
        t = np.linalg.lstsq(A * weights[:, None], y * weights, rcond=None)[0]
        residual = np.linalg.norm(((A @ t - y) * inverse_depth).reshape(-1, 3), axis=1)
        huber = np.where(residual <= threshold, 1.0, threshold / np.maximum(residual, 1e-12))
        weights = np.repeat(huber, 3) * inverse_depth
    return t if np.count_nonzero(residual <= 3 * threshold) >= min_count else None
