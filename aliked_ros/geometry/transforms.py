"""Rigid transforms as 4x4 numpy arrays (T_a_b: frame b -> frame a) and conversions to TUM quaternions."""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = np.asarray(translation).reshape(3)
    return transform


def invert(transform: np.ndarray) -> np.ndarray:
    rotation, translation = transform[:3, :3], transform[:3, 3]
    return make_transform(rotation.T, -rotation.T @ translation)


def rotation_angle(rotation: np.ndarray) -> float:
    """Geodesic angle of a rotation matrix, radians."""
    return float(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)))


def from_tum(values: np.ndarray) -> np.ndarray:
    """TUM row values (tx ty tz qx qy qz qw) -> 4x4."""
    values = np.asarray(values, dtype=float)
    return make_transform(Rotation.from_quat(values[3:7]).as_matrix(), values[:3])


def to_tum(transform: np.ndarray) -> np.ndarray:
    """4x4 -> (tx ty tz qx qy qz qw)."""
    return np.concatenate([transform[:3, 3], Rotation.from_matrix(transform[:3, :3]).as_quat()])


def skew(vector: np.ndarray) -> np.ndarray:
    """[v]x (3,3) for one vector, or (N,3,3) for (N,3) vectors: [v]x w = v x w."""
    v = np.asarray(vector, dtype=float)
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2], out[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    return out - np.swapaxes(out, -1, -2)


def exp_so3(rotation_vectors: np.ndarray) -> np.ndarray:
    """Rotation matrices (...,3,3) from rotation vectors (...,3) (axis x angle, radians). One vector (the
    per-iteration pose updates) by Rodrigues' formula in plain floats, ~5x faster than scipy's Rotation."""
    v = np.asarray(rotation_vectors, dtype=float)
    if v.shape != (3,):
        return Rotation.from_rotvec(v.reshape(-1, 3)).as_matrix().reshape(v.shape[:-1] + (3, 3))
    x, y, z = float(v[0]), float(v[1]), float(v[2])
    theta2 = x * x + y * y + z * z
    if theta2 < 1e-8:  # Taylor series: the closed form loses precision
        a, b = 1.0 - theta2 / 6.0, 0.5 - theta2 / 24.0
    else:
        theta = math.sqrt(theta2)
        a, b = math.sin(theta) / theta, (1.0 - math.cos(theta)) / theta2
    # I + a [v]x + b [v]x^2, with [v]x^2 = v v' - theta^2 I
    return np.array([[1.0 + b * (x * x - theta2), b * x * y - a * z, b * x * z + a * y],
                     [b * x * y + a * z, 1.0 + b * (y * y - theta2), b * y * z - a * x],
                     [b * x * z - a * y, b * y * z + a * x, 1.0 + b * (z * z - theta2)]])


def perturb_left(transform: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """exp(xi) T for a 6-vector xi = (rotation vector, translation), both in T's output frame (first order in
    the translation part: R' = exp(w) R, t' = exp(w) t + v)."""
    R = exp_so3(xi[:3])
    return make_transform(R @ transform[:3, :3], R @ transform[:3, 3] + xi[3:])


def perturbation(transform: np.ndarray) -> np.ndarray:
    """The 6-vector xi = (rotation vector, translation) with ``perturb_left(I, xi) == transform``: a pose error
    in the convention of the covariances (the inverse of :func:`perturb_left` at the identity)."""
    return np.concatenate([Rotation.from_matrix(transform[:3, :3]).as_rotvec(), transform[:3, 3]])


def adjoint(transform: np.ndarray) -> np.ndarray:
    """6x6 Ad_T for xi = (rotation vector, translation): T exp(xi) T^-1 = exp(Ad_T xi) to first order, in the
    perturbation of :func:`perturb_left`. Moves a perturbation (or its covariance, Ad S Ad^T) from T's input
    frame to its output frame."""
    R, t = transform[:3, :3], transform[:3, 3]
    out = np.zeros((6, 6))
    out[:3, :3] = out[3:, 3:] = R
    out[3:, :3] = skew(t) @ R
    return out
