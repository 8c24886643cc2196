"""Local mapping: bundle adjustment of the newest keyframes and their landmarks, inline or in a worker thread.

``LocalMapper.run(map)`` builds the problem from the map's last ``ba_window`` keyframes (the oldest one — two
for monocular, where they also fix the scale — held constant) and the landmarks they observe at least twice. Inline (``background_mapping`` False, used offline) it solves and applies at
once: results are deterministic. In the background (the node) it hands a copy of the problem to a worker thread
and returns; ``apply_finished(map)`` (called by the pipeline at the start of each frame and by ``run`` before
it builds the next job, on the pipeline's thread) writes a finished result into the map — keyframe poses and landmark positions, for the keyframes and
landmarks that still exist — so that only the pipeline's thread ever changes the map. A keyframe that arrives
while the worker is busy is not adjusted on its own; the next run includes it (``skipped`` counts them).
After a solve, landmarks whose reprojection error in any window keyframe exceeds 3 x ``ba_huber_px`` are removed.

Single-view landmarks (``ba_single_view_prior`` > 0, monocular): a landmark that only the newest keyframe observes
was triangulated on the frames before it, posed by tracking; left out of the adjustment, it stays where it was
while the adjustment moves its keyframe, and the next frames find it off (on KITTI by 3.7-15 px after a keyframe
moved by half a step: half of the next frame's landmarks became outliers and the scale changed by half). With the
option such landmarks join the adjustment with a Gaussian prior at their position (``ba_single_view_prior`` x their
depth along the keyframe's ray, ``ba_single_view_prior_across_px`` across it), so that the keyframe moves only as
far as the other landmarks outweigh them, and they move with it. Measured (README, DEVELOPERS.md): it makes
monocular KITTI robust to small changes of other settings and on windows of the clip, at some cost on the
synthetic loops: on by default (0.2) since 2026-11-30.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from aliked_ros.odometry.map import LocalMap
from aliked_ros.odometry.optimizer import BundleProblem, BundleResult, bundle_adjust
from aliked_ros.odometry.types import OdometryConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    map_id: int
    keyframe_indices: tuple[int, ...]  # Keyframe.index of each problem pose
    landmark_ids: np.ndarray
    problem: BundleProblem


class LocalMapper:
    def __init__(self, config: OdometryConfig) -> None:
        self.config = config
        self.runs = 0
        self.skipped = 0
        self.failures = 0
        self.durations_ms: list[float] = []  # the newest 1000 solves
        self._lock = threading.Lock()
        self._finished: tuple[_Job, BundleResult] | None = None
        self._busy = False

    def forget(self) -> None:
        """Drop a result that belongs to a map that no longer exists (reset)."""
        with self._lock:
            self._finished = None

    def run(self, local_map: LocalMap, focal_px: float, depth_sigma_per_m2: float | None = None) -> None:
        """``depth_sigma_per_m2``: depth noise of the keyframes' depth (None: the config's RGB-D value). A result
        that finished since the frame began is applied first: a job built without it would later write back
        poses and points from before it (its held keyframes keeping the correction: a step in the map)."""
        self.apply_finished(local_map)
        job = self._build(local_map, focal_px, depth_sigma_per_m2)
        if job is None:
            return
        if not self.config.background_mapping:
            result = self._solve(job)
            if result is not None:
                self._apply(local_map, job, result)
            return
        with self._lock:
            if self._busy:
                self.skipped += 1
                return
            self._busy = True
        try:
            threading.Thread(target=self._work, args=(job,), name="aliked_vo_mapping", daemon=True).start()
        except RuntimeError as error:  # no thread to be had (a process limit): skipped, the next keyframe tries again
            with self._lock:
                self._busy = False
                self.skipped += 1
            log.warning("local bundle adjustment skipped: no worker thread (%s)", error)

    def apply_finished(self, local_map: LocalMap) -> None:
        with self._lock:
            finished, self._finished = self._finished, None
        if finished is not None and finished[0].map_id == local_map.map_id:
            self._apply(local_map, *finished)

    def wait(self, timeout: float = 10.0) -> None:
        """Block until the worker is idle (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._busy:
                    return
            time.sleep(0.005)

    def _work(self, job: _Job) -> None:
        try:
            result = self._solve(job)
            with self._lock:
                if result is not None:
                    self._finished = (job, result)
        finally:
            with self._lock:
                self._busy = False

    def _solve(self, job: _Job) -> BundleResult | None:
        start = time.perf_counter()
        try:
            result = bundle_adjust(job.problem, self.config.ba_solver, self.config.ba_max_iterations)
        except (ValueError, np.linalg.LinAlgError, RuntimeError) as error:  # keep the map as it was
            self.failures += 1
            log.warning("local bundle adjustment failed (map kept as it was): %s", error)
            return None
        self.runs += 1
        self.durations_ms = self.durations_ms[-999:] + [(time.perf_counter() - start) * 1e3]
        return result

    def _build(self, local_map: LocalMap, focal_px: float, depth_sigma_per_m2: float | None = None) -> _Job | None:
        cfg = self.config
        window = local_map.keyframes[-cfg.ba_window:]
        if len(window) < 2:
            return None
        fixed = 1 if any(kf.points_cam is not None for kf in window) else 2  # monocular: two fix the scale too
        ids, positions, _ = local_map.landmarks()
        if not len(ids):
            return None
        obs_pose, obs_point, obs_xy, obs_depth = [], [], [], []
        for k, keyframe in enumerate(window):
            pos = np.clip(np.searchsorted(ids, keyframe.track_ids), 0, len(ids) - 1)
            found = np.flatnonzero(ids[pos] == keyframe.track_ids)
            obs_pose.append(np.full(len(found), k))
            obs_point.append(pos[found])
            obs_xy.append(keyframe.normalized[found])
            obs_depth.append(keyframe.points_cam[found, 2] if keyframe.points_cam is not None
                             else np.full(len(found), np.nan))
        obs_pose, obs_point = np.concatenate(obs_pose), np.concatenate(obs_point)
        obs_xy, obs_depth = np.concatenate(obs_xy), np.concatenate(obs_depth)
        seen = np.bincount(obs_point, minlength=len(ids))
        used = seen >= 2  # seen once, a landmark says nothing of poses
        priors = None
        if cfg.ba_single_view_prior > 0 and fixed == 2:
            single = self._single_view(local_map, ids, seen, window[-1])
            if single.any():
                used |= single
                priors = self._single_view_priors(positions[used], single[used], window[-1], focal_px)
        keep = used[obs_point]
        if keep.sum() < 3 * cfg.min_landmarks:
            return None
        point_index = np.cumsum(used) - 1
        problem = BundleProblem(
            poses=np.array([kf.T_cam_odom for kf in window]), points=positions[used], obs_pose=obs_pose[keep],
            obs_point=point_index[obs_point[keep]], obs_xy=obs_xy[keep], obs_depth=obs_depth[keep], fixed=fixed,
            focal_px=focal_px, huber_px=cfg.ba_huber_px,
            depth_sigma_per_m2=cfg.depth_sigma_per_m2 if depth_sigma_per_m2 is None else depth_sigma_per_m2,
            point_priors=priors)
        return _Job(local_map.map_id, tuple(kf.index for kf in window), ids[used], problem)

    @staticmethod
    def _single_view(local_map: LocalMap, ids: np.ndarray, seen: np.ndarray, newest) -> np.ndarray:
        """Landmarks that only ``newest`` observes, of the whole map (triangulated on the frames before it)."""
        observers = np.zeros(len(ids), int)
        for keyframe in local_map.keyframes:
            observers += np.isin(ids, keyframe.track_ids)
        return (seen == 1) & (observers == 1) & np.isin(ids, newest.track_ids)

    def _single_view_priors(self, points: np.ndarray, single: np.ndarray, newest, focal_px: float
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, information (P,3,3)) of the priors: ``ba_single_view_prior`` x depth along the ray from the
        newest keyframe, ``ba_single_view_prior_across_px`` across it; zero information for the other points."""
        cfg = self.config
        ray = points - newest.T_odom_cam[:3, 3]
        depth = np.linalg.norm(ray, axis=1)
        u = ray / np.maximum(depth, 1e-12)[:, None]
        along = np.einsum("pi,pj->pij", u, u)
        across = np.eye(3)[None] - along
        sigma_along = cfg.ba_single_view_prior * depth
        sigma_across = cfg.ba_single_view_prior_across_px * depth / focal_px
        information = along / sigma_along[:, None, None] ** 2 + across / sigma_across[:, None, None] ** 2
        information[~single] = 0.0
        return points.copy(), information

    def _apply(self, local_map: LocalMap, job: _Job, result: BundleResult) -> None:
        by_index = {kf.index: kf for kf in local_map.keyframes}
        for index, T_cam_odom in zip(job.keyframe_indices[job.problem.fixed:], result.poses[job.problem.fixed:]):
            if index in by_index:
                by_index[index].T_odom_cam = np.linalg.inv(T_cam_odom)
        local_map.set_positions(job.landmark_ids, result.points)
        bad = result.errors_px > 3 * self.config.ba_huber_px
        local_map.remove_landmarks(job.landmark_ids[np.unique(job.problem.obs_point[bad])])
