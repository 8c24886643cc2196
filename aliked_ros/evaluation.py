"""Scoring an estimated trajectory against ground truth (evo for association, alignment and ATE).

Definitions (used by ``aliked-vo eval`` and ``aliked-vo demo``):
  - association: each estimated pose to the ground-truth pose nearest in time, within ``max_difference`` s;
  - ``ate_rmse_m``: RMSE of position differences after aligning the estimate to the ground truth (Umeyama):
    ``sim3`` (rotation, translation, scale: monocular) or ``se3`` (RGB-D);
  - ``rot_err_deg``: per consecutive pair of associated frames, the geodesic angle between the estimated and the
    true relative rotation T_i_j = inv(T_w_i) T_w_j;
  - ``tdir_err_deg``: per pair, the angle between estimated and true relative translation directions, pairs
    with < 5 mm true translation (or no estimated translation) skipped;
  - ``path_length_m``: the length of the aligned estimated path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aliked_ros.geometry.transforms import invert, rotation_angle
from aliked_ros.trajectory import Trajectory

MIN_TRUE_TRANSLATION_M = 0.005


@dataclass(frozen=True)
class Metrics:
    associated: int
    alignment: str
    ate_rmse_m: float
    rot_err_deg: dict[str, float]
    tdir_err_deg: dict[str, float]
    path_length_m: float
    scale: float  # the sim3 scale applied to the estimate (1 for se3)
    stamps: np.ndarray  # (M,) stamps of the associated estimated poses
    aligned_positions: np.ndarray  # (M,3) estimated positions after alignment, in the ground-truth world frame
    true_positions: np.ndarray  # (M,3) associated ground-truth positions

    def describe(self) -> str:
        """One line for people."""
        return (f"{self.alignment} ATE {self.ate_rmse_m * 1000:.2f} mm, rotation error median "
                f"{self.rot_err_deg['median']:.3f} deg, translation direction error median "
                f"{self.tdir_err_deg['median']:.2f} deg, path {self.path_length_m:.3f} m")


def report_fields(metrics: Metrics | None, alignment: str) -> dict:
    """The metric keys of the ``eval`` and ``demo`` JSON reports (None values when there are no metrics)."""
    return {
        "alignment": alignment,
        "ate_rmse_m": metrics.ate_rmse_m if metrics else None,
        "rot_err_deg": {k: metrics.rot_err_deg[k] for k in ("median", "mean")} if metrics else None,
        "tdir_err_deg": {k: metrics.tdir_err_deg[k] for k in ("median", "mean")} if metrics else None,
        "path_length_m": metrics.path_length_m if metrics else None,
        "sim3_scale": metrics.scale if metrics else None,
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "mean": float("nan"), "count": 0}
    return {"median": float(np.median(values)), "mean": float(np.mean(values)), "count": len(values)}


def relative_errors(est: np.ndarray, gt: np.ndarray) -> tuple[list[float], list[float]]:
    """Rotation and translation-direction errors (degrees) over consecutive pairs of (N,4,4) poses."""
    rot, tdir = [], []
    for i in range(len(est) - 1):
        rel_est = invert(est[i]) @ est[i + 1]
        rel_gt = invert(gt[i]) @ gt[i + 1]
        rot.append(np.degrees(rotation_angle(rel_est[:3, :3].T @ rel_gt[:3, :3])))
        t_est, t_gt = rel_est[:3, 3], rel_gt[:3, 3]
        if np.linalg.norm(t_gt) >= MIN_TRUE_TRANSLATION_M and np.linalg.norm(t_est) > 1e-12:
            cosine = t_est @ t_gt / (np.linalg.norm(t_est) * np.linalg.norm(t_gt))
            tdir.append(float(np.degrees(np.arccos(np.clip(cosine, -1, 1)))))
    return rot, tdir


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """R, t, s minimising |target - (s R source + t)|^2 (evo's implementation); a motionless source gets s = 1."""
    from evo.core.geometry import GeometryException, umeyama_alignment

    if np.allclose(source, source[0], atol=1e-12):
        return np.eye(3), target.mean(axis=0) - source[0], 1.0
    try:
        R, t, s = umeyama_alignment(source.T, target.T, with_scale)
    except GeometryException:
        return np.eye(3), target.mean(axis=0) - source.mean(axis=0), 1.0
    return R, t, float(s)


def evaluate(estimate: Trajectory, groundtruth: Trajectory, alignment: str = "sim3",
             max_difference: float = 0.02) -> Metrics | None:
    """Metrics of ``estimate`` against ``groundtruth``; None when fewer than 2 poses can be associated."""
    index = groundtruth.nearest(estimate.stamps, max_difference)
    ok = index >= 0
    if ok.sum() < 2:
        return None
    est, gt = estimate.poses[ok], groundtruth.poses[index[ok]]
    R, t, s = umeyama(est[:, :3, 3], gt[:, :3, 3], with_scale=alignment == "sim3")
    aligned = (s * est[:, :3, 3] @ R.T) + t
    ate = float(np.sqrt(np.mean(np.sum((aligned - gt[:, :3, 3]) ** 2, axis=1))))
    rot, tdir = relative_errors(est, gt)
    path = float(np.sum(np.linalg.norm(np.diff(aligned, axis=0), axis=1)))
    return Metrics(int(ok.sum()), alignment, ate, _summary(rot), _summary(tdir), path, s, estimate.stamps[ok], aligned,
                   gt[:, :3, 3])
