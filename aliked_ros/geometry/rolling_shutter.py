"""Rolling shutter: the rows of an image exposed one after the other.

Convention: the rows are read out top to bottom over ``readout_s`` seconds at a constant rate and the frame's
stamp (and pose) is the **centre row's** time, so pixel row y was exposed ``row_time(y) = (y / (H - 1) - 0.5) x
readout_s`` seconds from the stamp (negative above the centre). Over one readout the camera moves at a constant
angular velocity ``omega`` (rad/s) and linear velocity ``velocity`` (m/s, or map units/s), both in the camera
frame at the stamp: the camera at row time t is at ``velocity t`` turned by ``exp(omega t)``, so a point p of the
camera frame at the stamp is seen at row time t at ``exp(-omega t) (p - velocity t)``; a point measured at row time
t (a registered depth image read out with the colour rows) is at ``exp(omega t) p_t + velocity t`` at the stamp.
A ray alone (no depth) turns with ``exp(omega t)`` (its translation needs the depth). Global shutter:
``readout_s`` 0 (nothing changes).
"""
from __future__ import annotations

import numpy as np

from aliked_ros.geometry.transforms import exp_so3


def row_times(rows: np.ndarray, height: int, readout_s: float) -> np.ndarray:
    """Exposure time (s, relative to the stamp) of pixel rows ``rows`` (N,) of an image ``height`` rows high."""
    return (np.asarray(rows, float) / max(height - 1, 1) - 0.5) * readout_s


def _turns(times: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """exp(omega t) (N,3,3) for each time t of ``times`` (N,)."""
    return exp_so3(times[:, None] * np.asarray(omega, float)[None, :])


def to_stamp(normalized: np.ndarray, times: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Normalised coordinates (N,2) observed at ``times`` (N,) (s from the stamp), turned into the camera frame at
    the stamp for the angular velocity ``omega`` (3,) rad/s: the rays ``exp(omega t) b`` re-normalised (rays
    without depth: the camera's translation during the readout is not corrected)."""
    if not len(normalized) or not np.any(omega):
        return np.array(normalized, float, copy=True)
    turned = np.einsum("nij,nj->ni", _turns(times, omega), np.column_stack([normalized, np.ones(len(normalized))]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return turned[:, :2] / turned[:, 2:3]


def points_to_stamp(points: np.ndarray, times: np.ndarray, omega: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """3-D points (N,3) measured in the camera frame at their row times, in the camera frame at the stamp:
    ``exp(omega t) p + velocity t`` (NaN rows stay NaN)."""
    points = np.array(points, float, copy=True)
    if not len(points):
        return points
    if np.any(omega):
        points = np.einsum("nij,nj->ni", _turns(times, omega), points)
    return points + times[:, None] * np.asarray(velocity, float)[None, :]
