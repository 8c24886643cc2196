"""Scoring an estimated trajectory against ground truth (evo for alignment and ATE).

Definitions (used by ``aliked-vo eval`` and ``aliked-vo demo``):
  - association: each estimated pose to the ground-truth pose nearest in time, within ``max_difference`` s;
  - segments: poses of one map (``map_id``; a reset starts a new map with its own monocular scale) are aligned
    on their own, never with one transform across maps;
  - scored poses: a segment's poses from its initialisation on (monocular frames before it carry rotation only
    and are counted in ``initializing``); a segment that never initialised (a camera at rest) is scored whole;
    a segment with fewer than ``MIN_SEGMENT_POSES`` such poses is not scored at all (an alignment fits one or
    two poses exactly: a run that reset every frame or two would score 0): its poses count in ``unscored``;
  - a segment whose ground truth stays within ``MIN_SCALE_EXTENT_M`` of its mean (a camera at rest) is aligned
    without fitting a scale even under ``sim3`` (the scale that fits such a segment best shrinks any drift to
    nothing): it takes the scale of the run's longest segment that fixes one, so that its drift is in metres
    like the rest (monocular: a map's unit is its own; the run's is the best guess there is); a run with no such
    segment keeps scale 1, and its ATE is in the estimate's unit;
  - ``ate_rmse_m``: RMSE of position differences over the scored poses after aligning each segment to the ground
    truth (Umeyama): ``sim3`` (rotation, translation, scale: monocular) or ``se3`` (metric: RGB-D, stereo);
  - relative metrics (``rot_err_deg``, ``tdir_err_deg``, ``rpe_trans_pct``, ``nees_ratio``) compare motions of a
    frame or a few: their true motion is the ground truth interpolated at the estimate's stamps (slerp; the nearest
    pose where the ground truth has a gap), since the nearest pose's time offset (up to 5 ms at 100 Hz motion
    capture) would carry into them: on fr1_rpy a perfect estimate scored 0.12 deg / 0.39 deg / 1.65 % with the
    nearest poses;
  - ``rot_err_deg``: per consecutive pair of associated poses in one segment, the geodesic angle between the
    estimated and the true relative rotation T_i_j = inv(T_w_i) T_w_j;
  - ``tdir_err_deg``: per pair with >= 5 mm true translation, the angle between estimated and true relative
    translation directions; a pair whose estimate has no translation counts as 90 deg (no direction known) and
    in ``missed_motion_pairs``, so that lost motion cannot hide;
  - ``rpe_trans_pct``: drift per distance travelled (KITTI-style): from every scored pose, the first later pose of
    the same segment at least ``rpe_segment_m`` further along the true path; the error of the estimated
    relative translation (scaled by the segment's alignment) in percent of that distance, averaged. The segment
    length is 100 m for runs of >= 200 m, else 1 m for runs of >= 2 m, else 10 % of the path, and none (null)
    below 5 cm of path (a camera at rest: its "drift" would be the ground truth's noise);
  - ``nees_ratio``: the honesty of the motion covariance. Per consecutive pair of estimated poses in one segment
    that carries a covariance of its relative motion (``FrameResult.motion_covariance``), the normalised
    estimation error squared e^T S^-1 e of the error e = (rotation vector, translation) of
    inv(estimated motion) against the true one (monocular: the estimate scaled by the segment's alignment and S
    with it), the true motion from the ground truth interpolated at the two stamps (slerp), as a motion of a few
    ms must not carry the association's time error; ``nees_ratio`` is the mean NEES divided by its 6 degrees of
    freedom: 1 for an honest covariance, > 1 when it claims more certainty than the estimate has
    (``nees_ratio_median`` beside it);
  - ``path_length_m``: the length of the aligned estimated path over the scored poses, ``true_path_length_m`` the
    true one over the same poses (their ratio shows a scale error or lost motion); NaN (JSON null) when no pose
    was scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aliked_ros.geometry.transforms import invert, perturbation, rotation_angle
from aliked_ros.trajectory import Trajectory

MIN_TRUE_TRANSLATION_M = 0.005
MIN_SEGMENT_POSES = 3  # scored poses a segment needs to be in the ATE
MIN_SCALE_EXTENT_M = 0.01  # a segment's ground truth must leave its mean by this much for a sim3 scale
MISSED_MOTION_ERROR_DEG = 90.0


@dataclass(frozen=True)
class Segment:
    map_id: int
    poses: int
    scored: int
    ate_rmse_m: float
    scale: float
    path_length_m: float  # aligned estimate over the scored poses
    true_path_length_m: float  # ground truth over the same poses


@dataclass(frozen=True)
class Metrics:
    associated: int
    alignment: str
    ate_rmse_m: float
    rot_err_deg: dict[str, float]
    tdir_err_deg: dict[str, float]
    path_length_m: float
    scale: float  # the sim3 scale of the longest segment (1 for se3)
    stamps: np.ndarray  # (M,) stamps of the associated estimated poses
    aligned_positions: np.ndarray  # (M,3) estimated positions after alignment, in the ground-truth world frame
    true_positions: np.ndarray  # (M,3) associated ground-truth positions
    missed_motion_pairs: int = 0
    rpe_trans_pct: float = float("nan")
    rpe_segment_m: float = float("nan")
    initializing: int = 0  # associated poses before their segment's initialisation (not in the ATE)
    segments: list[Segment] = field(default_factory=list)
    true_path_length_m: float = float("nan")
    nees: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) NEES of the motions with a covariance
    unscored: int = 0  # associated poses of segments too short to score (fewer than MIN_SEGMENT_POSES)

    def describe(self) -> str:
        """One line for people."""
        return (f"{self.alignment} ATE {self.ate_rmse_m * 1000:.2f} mm, rotation error median "
                f"{self.rot_err_deg['median']:.3f} deg, translation direction error median "
                f"{self.tdir_err_deg['median']:.2f} deg, drift {self.rpe_trans_pct:.2f} % per "
                f"{self.rpe_segment_m:g} m, path {self.path_length_m:.3f} m, {len(self.segments)} segment(s), "
                f"{self.missed_motion_pairs} missed-motion pair(s), {self.associated} pose(s) associated"
                + (f", {self.unscored} in segments too short to score" if self.unscored else ""))


def json_safe(value):
    """``value`` for strict JSON: NaN and infinities (a metric with nothing to measure, e.g. the direction error of
    a camera at rest) become None (null), numpy scalars and arrays Python numbers and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def report_fields(metrics: Metrics | None, alignment: str) -> dict:
    """The metric keys of the ``eval`` and ``demo`` JSON reports (None values when there are no metrics; NaN for a
    metric with nothing to measure, which ``json_safe`` turns into null where the report is written)."""
    return {
        "alignment": alignment,
        "ate_rmse_m": metrics.ate_rmse_m if metrics else None,
        "rot_err_deg": {k: metrics.rot_err_deg[k] for k in ("median", "mean")} if metrics else None,
        "tdir_err_deg": {k: metrics.tdir_err_deg[k] for k in ("median", "mean")} if metrics else None,
        "missed_motion_pairs": metrics.missed_motion_pairs if metrics else None,
        "rpe_trans_pct": metrics.rpe_trans_pct if metrics else None,
        "rpe_segment_m": metrics.rpe_segment_m if metrics else None,
        "path_length_m": metrics.path_length_m if metrics else None,
        "true_path_length_m": metrics.true_path_length_m if metrics else None,
        "sim3_scale": metrics.scale if metrics else None,
        "associated_poses": metrics.associated if metrics else None,
        "initializing_poses": metrics.initializing if metrics else None,
        "unscored_poses": metrics.unscored if metrics else None,
        "segments": [vars(s) for s in metrics.segments] if metrics else None,
        "nees_ratio": float(np.mean(metrics.nees)) / 6.0 if metrics and len(metrics.nees) else None,
        "nees_ratio_median": float(np.median(metrics.nees)) / 6.0 if metrics and len(metrics.nees) else None,
        "nees_pairs": len(metrics.nees) if metrics else None,
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "mean": float("nan"), "count": 0}
    return {"median": float(np.median(values)), "mean": float(np.mean(values)), "count": len(values)}


def relative_errors(est: np.ndarray, gt: np.ndarray) -> tuple[list[float], list[float], int]:
    """Rotation and translation-direction errors (degrees) over consecutive pairs of (N,4,4) poses, and the
    number of pairs whose true translation is >= 5 mm but whose estimate has none (counted as 90 deg)."""
    rot, tdir, missed = [], [], 0
    for i in range(len(est) - 1):
        rel_est = invert(est[i]) @ est[i + 1]
        rel_gt = invert(gt[i]) @ gt[i + 1]
        rot.append(np.degrees(rotation_angle(rel_est[:3, :3].T @ rel_gt[:3, :3])))
        t_est, t_gt = rel_est[:3, 3], rel_gt[:3, 3]
        if np.linalg.norm(t_gt) < MIN_TRUE_TRANSLATION_M:
            continue
        if np.linalg.norm(t_est) <= 1e-12:
            missed += 1
            tdir.append(MISSED_MOTION_ERROR_DEG)
            continue
        cosine = t_est @ t_gt / (np.linalg.norm(t_est) * np.linalg.norm(t_gt))
        tdir.append(float(np.degrees(np.arccos(np.clip(cosine, -1, 1)))))
    return rot, tdir, missed


def motion_nees(est: np.ndarray, gt: np.ndarray, covariances: np.ndarray, scale: float) -> list[float]:
    """NEES of consecutive relative motions of (N,4,4) poses whose (N,6,6) motion covariance (of pose i against
    pose i-1; NaN when unknown) is given, with the estimated translations multiplied by ``scale``."""
    S = np.diag([1.0, 1.0, 1.0, scale, scale, scale])
    values = []
    for i in range(1, len(est)):
        if not (np.isfinite(covariances[i]).all() and np.isfinite(gt[i - 1]).all() and np.isfinite(gt[i]).all()):
            continue
        rel_est, rel_gt = invert(est[i - 1]) @ est[i], invert(gt[i - 1]) @ gt[i]
        rel_est[:3, 3] *= scale
        error = invert(rel_est) @ rel_gt  # exp(e) inv(true motion) = inv(estimated motion)
        e = perturbation(error)
        try:
            values.append(float(e @ np.linalg.solve(S @ covariances[i] @ S, e)))
        except np.linalg.LinAlgError:
            continue
    return values


MIN_DRIFT_PATH_M = 0.05  # shorter true paths (a camera at rest: ground-truth noise) have no drift to measure


def drift_segment_length(path_m: float) -> float:
    """0 (no drift measured) below ``MIN_DRIFT_PATH_M``."""
    return 100.0 if path_m >= 200.0 else 1.0 if path_m >= 2.0 else 0.1 * path_m if path_m >= MIN_DRIFT_PATH_M \
        else 0.0


def drift_errors(est: np.ndarray, gt: np.ndarray, scale: float, length_m: float) -> list[float]:
    """Relative translation errors in % of ``length_m`` (see the module docstring)."""
    if len(gt) < 2 or length_m <= 0:
        return []
    travelled = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1))])
    errors = []
    for i in range(len(gt)):
        j = int(np.searchsorted(travelled, travelled[i] + length_m))
        if j >= len(gt):
            break
        rel_gt = invert(gt[i]) @ gt[j]
        rel_est = invert(est[i]) @ est[j]
        errors.append(100.0 * float(np.linalg.norm(scale * rel_est[:3, 3] - rel_gt[:3, 3])) / length_m)
    return errors


def _turn_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation that turns direction ``a`` onto direction ``b``."""
    from scipy.spatial.transform import Rotation

    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis, cos = np.cross(a, b), float(np.clip(a @ b, -1.0, 1.0))
    if np.linalg.norm(axis) < 1e-12:  # parallel or opposite: any axis across a
        if cos > 0:
            return np.eye(3)
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.arccos(cos)).as_matrix()


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """R, t, s minimising |target - (s R source + t)|^2 (evo's implementation); a motionless source gets s = 1;
    points on one line (two poses, a straight drive) are aligned along it: the scale and the turn that map the
    source's end-to-end displacement onto the target's (the roll about the line stays unknown: none)."""
    from evo.core.geometry import GeometryException, umeyama_alignment

    if np.ptp(source, axis=0).max() <= 1e-12:  # (absolute: georeferenced positions of 1e5 m still move)
        return np.eye(3), target.mean(axis=0) - source[0], 1.0
    try:
        R, t, s = umeyama_alignment(source.T, target.T, with_scale)
    except GeometryException:
        a, b = source[-1] - source[0], target[-1] - target[0]
        if np.linalg.norm(a) > 1e-12 and np.linalg.norm(b) > 1e-12:
            R = _turn_onto(a, b)
            s = float(np.linalg.norm(b) / np.linalg.norm(a)) if with_scale else 1.0
            return R, target.mean(axis=0) - s * R @ source.mean(axis=0), s
        return np.eye(3), target.mean(axis=0) - source.mean(axis=0), 1.0
    return R, t, float(s)


def evaluate(estimate: Trajectory, groundtruth: Trajectory, alignment: str = "sim3", max_difference: float = 0.02,
             map_ids: np.ndarray | None = None, initialized: np.ndarray | None = None,
             motion_covariances: np.ndarray | None = None) -> Metrics | None:
    """Metrics of ``estimate`` against ``groundtruth``; None when fewer than 2 poses can be associated.
    ``map_ids`` (N,): the map of each estimated pose (default: one map); ``initialized`` (N,) bool: False for
    poses before their map's initialisation (default: all initialised); ``motion_covariances`` (N,6,6): of each
    pose's motion from the previous estimated pose, NaN where unknown (default: no NEES)."""
    index = groundtruth.nearest(estimate.stamps, max_difference)
    ok = index >= 0
    if ok.sum() < 2:
        return None
    est, gt = estimate.poses[ok], groundtruth.poses[index[ok]]
    maps = np.zeros(len(estimate), int) if map_ids is None else np.asarray(map_ids)
    maps = maps[ok]
    init = np.ones(len(estimate), bool) if initialized is None else np.asarray(initialized, bool)
    init = init[ok]
    # relative metrics compare motions of a few frames: the ground truth interpolated at the estimate's stamps
    gt_at_stamps = groundtruth.interpolate(estimate.stamps[ok], max_difference)
    gap = ~np.isfinite(gt_at_stamps[:, 0, 0])
    gt_at_stamps[gap] = gt[gap]
    if motion_covariances is not None:  # a motion is scored only against the pose just before it in the estimate
        covs = np.asarray(motion_covariances, float)[ok].copy()
        covs[~np.concatenate([[False], ok[:-1]])[ok]] = np.nan
    aligned = np.full((len(est), 3), np.nan)
    scored = np.zeros(len(est), bool)
    segments, rot, tdir, drift, nees, missed = [], [], [], [], [], 0
    scales = []
    total_path = float(np.sum(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)))
    length_m = drift_segment_length(total_path)
    short = np.zeros(len(est), bool)  # poses of segments too short to score
    plans = []  # (map_id, members, score, scaled): the segments to score, those that fix a sim3 scale first
    for map_id in np.unique(maps):
        members = np.flatnonzero(maps == map_id)
        score = members[init[members]] if init[members].any() else members
        if len(score) < MIN_SEGMENT_POSES:
            short[members] = True
            continue
        true = gt[score, :3, 3]
        scaled = alignment == "sim3" and np.linalg.norm(true - true.mean(axis=0), axis=1).max() >= MIN_SCALE_EXTENT_M
        plans.append((map_id, members, score, scaled))
    plans.sort(key=lambda plan: not plan[3])
    # sim3: the scale of the segment with the most scored poses that fixes one, for those at rest
    run_scale, run_scale_poses = None, 0
    for map_id, members, score, scaled in plans:
        scored[score] = True
        R, t, s = umeyama(est[score, :3, 3], gt[score, :3, 3], with_scale=scaled)
        if not scaled and alignment == "sim3" and run_scale is not None:  # refit R, t with the run's unit
            R, t, _ = umeyama(run_scale * est[score, :3, 3], gt[score, :3, 3], with_scale=False)
            s = run_scale
        moved = np.ptp(est[score, :3, 3], axis=0).max() > 1e-12  # (a motionless estimate's s = 1 means nothing)
        if scaled and moved and (run_scale is None or len(score) > run_scale_poses):
            run_scale, run_scale_poses = s, len(score)
        aligned[members] = s * est[members, :3, 3] @ R.T + t
        errors = np.linalg.norm(aligned[score] - gt[score, :3, 3], axis=1)
        r, d, m = relative_errors(est[members], gt_at_stamps[members])
        rot += r
        tdir += d
        missed += m
        drift += drift_errors(est[score], gt_at_stamps[score], s, length_m)
        if motion_covariances is not None:
            nees += motion_nees(est[members], gt_at_stamps[members], covs[members], s)
        path = float(np.sum(np.linalg.norm(np.diff(aligned[score], axis=0), axis=1)))
        true_path = float(np.sum(np.linalg.norm(np.diff(gt[score, :3, 3], axis=0), axis=1)))
        segments.append(Segment(int(map_id), len(members), len(score), float(np.sqrt(np.mean(errors ** 2))), s, path,
                                true_path))
        scales.append((len(members), s))
    segments.sort(key=lambda segment: segment.map_id)
    ate = float(np.sqrt(np.mean(np.sum((aligned[scored] - gt[scored, :3, 3]) ** 2, axis=1)))) if scored.any() \
        else float("nan")
    # no pose scored (e.g. a monocular map that never started): the path lengths are unknown, not 0
    path_m = float(sum(seg.path_length_m for seg in segments)) if segments else float("nan")
    true_path_m = float(sum(seg.true_path_length_m for seg in segments)) if segments else float("nan")
    return Metrics(int(ok.sum()), alignment, ate, _summary(rot), _summary(tdir),
                   path_m, max(scales)[1] if scales else float("nan"),
                   estimate.stamps[ok], aligned, gt[:, :3, 3], missed, float(np.mean(drift)) if drift else float("nan"),
                   length_m or float("nan"), int((~init & ~scored & ~short).sum()), segments,
                   true_path_m, np.array(nees), int(short.sum()))
