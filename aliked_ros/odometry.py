"""The visual-odometry pipeline: frames in -> per-frame results (pose, tracks, state, timings).

Per frame: extract features -> undistort keypoints -> match against the reference frame (the last frame that
got a pose) -> estimate the motion T_cur_ref -> verify matches (epipolar inliers) -> carry track ids -> chain
the pose T_odom_cur = T_odom_ref * inv(T_cur_ref) -> at keyframes, triangulate landmarks.

Motion:
  - RGB-D (a depth image is given and enough matched reference keypoints have valid depth): PnP-RANSAC of the
    reference frame's depth-backed 3-D points against the new observations, refined by poselib: metric.
  - Monocular: essential matrix (poselib LO-RANSAC) -> rotation and translation direction. The length of the
    step comes from landmarks (tracks triangulated at keyframes, between their first observation and the
    keyframe): for each landmark seen now, the step length that puts it on its observed ray; the median is
    used. Without landmarks (right after start or reset) the step keeps the last known length (1 at start):
    the trajectory has one unknown global scale.
  - Degenerate cases are reported, not guessed: too few matches/inliers -> state LOST and no pose for the
    frame (the reference is kept, so the next good frame recovers); too little rotation-compensated parallax
    (no motion, or pure rotation) -> rotation only, zero translation ("rotation_only").
  - After ``max_lost_frames`` consecutive lost frames the map is reset; the odometry pose continues from the
    last pose (REP 105: odom is continuous).

Keyframes: a frame becomes a keyframe when it moved (not rotation only) and fewer than ``min_landmarks``
landmarks are tracked, when the median
rotation-compensated parallax of the tracks shared with the last keyframe exceeds ``keyframe_parallax_px``, or
when less than ``keyframe_min_tracked`` of the last keyframe's keypoints are still tracked.

Frames: T_odom_camera is the pose of the camera optical frame in the odometry frame, which is the optical frame
of the first frame (z forward). Covariance: not estimated (``None`` = unknown).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import numpy as np

from aliked_ros.errors import AlikedRosError
from aliked_ros.features import Extractor, Features
from aliked_ros.geometry.camera import CameraModel
from aliked_ros.geometry.pose import PoseEstimate, absolute_pose, relative_pose, rotation_compensated_parallax, triangulate
from aliked_ros.geometry.transforms import invert, make_transform
from aliked_ros.matching import Matches
from aliked_ros.tracking import TrackedKeypoints, Tracker, TrackerConfig


class TrackingState(enum.IntEnum):
    """Same values as the TrackingStatus message constants."""

    INITIALIZING = 0
    TRACKING = 1
    LOST = 2


class FrameError(AlikedRosError):
    """A frame the pipeline cannot take (depth of the wrong size or type, ...)."""


class DuplicateFrameError(FrameError):
    """A frame stamped exactly like the previous one (a driver or bag that repeats a frame, a republish): it
    carries no new motion, and a second pose with the same stamp would repeat TF data, so it is refused before
    it changes any state."""


@dataclass(frozen=True)
class OdometryConfig:
    ransac_threshold_px: float = 1.0  # epipolar error bound for essential-matrix inliers
    pnp_threshold_px: float = 2.0  # reprojection error bound for PnP inliers
    min_inliers: int = 15
    min_parallax_px: float = 1.0  # median rotation-compensated parallax below which no translation is estimated
    min_landmarks: int = 8  # landmarks needed to measure the step length (monocular)
    triangulation_min_angle_deg: float = 1.0
    keyframe_parallax_px: float = 20.0
    keyframe_min_tracked: float = 0.5
    max_lost_frames: int = 10
    depth_min_m: float = 0.1
    depth_max_m: float = 10.0
    depth_max_edge: float = 0.05  # reject depth where the 3x3 neighbourhood varies more than this fraction
    min_depth_points: int = 20
    max_direction_disagreement_deg: float = 30.0  # essential vs landmark translation; beyond: landmark PnP
    min_landmarks_pnp: int = 30
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass(frozen=True)
class Frame:
    """One camera frame. ``stamp`` in seconds; ``depth`` in metres (float32), registered to the image and of
    the same size, NaN or 0 where invalid."""

    image: np.ndarray
    stamp: float
    camera: CameraModel
    depth: np.ndarray | None = None


@dataclass(frozen=True)
class FrameResult:
    stamp: float
    frame_index: int  # frames processed since the last reset
    state: TrackingState
    pose_source: str  # "essential", "pnp", "rotation_only", "none"
    is_keyframe: bool
    T_odom_camera: np.ndarray | None  # None when the frame got no pose (LOST)
    motion: np.ndarray | None  # T_ref_cur: this frame's pose in the reference frame (None when LOST)
    features: Features
    normalized: np.ndarray  # (N,2) undistorted normalised coordinates
    track_ids: np.ndarray  # (N,) uint64; on LOST frames ids are provisional (the frame is not committed)
    track_ages: np.ndarray  # (N,) uint32
    inliers: np.ndarray  # (N,) bool: keypoint's match is an inlier of this frame's motion
    num_matches: int
    num_inliers: int
    timings_ms: dict[str, float]
    covariance: np.ndarray | None = None  # 6x6 (x y z roll pitch yaw) or None = unknown
    reset_reason: str | None = None
    map_id: int = 0  # grows by one at every reset; monocular scale is per map
    relocalized: bool = False  # tracking recovered against a keyframe of the same map after LOST frames
    num_landmarks: int = 0  # keypoints observing a landmark of the map

    @property
    def num_tracks(self) -> int:
        """Keypoints continuing a track from an earlier frame."""
        return int(np.count_nonzero(self.track_ages))


@dataclass
class _Reference:
    """The last frame with a pose, and per-keypoint track data aligned with its features."""

    features: Features
    normalized: np.ndarray
    points_cam: np.ndarray | None  # (N,3) depth-backed points in its camera frame, NaN where unknown
    T_odom_cam: np.ndarray
    anchor_pose: np.ndarray  # (N,) index into _poses of the track's first observation
    anchor_norm: np.ndarray  # (N,2) normalised coordinates at that observation
    landmark: np.ndarray  # (N,3) landmark in the odom frame, NaN if not triangulated


def depth_points(depth: np.ndarray, pixels: np.ndarray, normalized: np.ndarray, config: OdometryConfig) -> np.ndarray:
    """3-D points (N,3) in the camera frame from a metric depth image at keypoint pixels; NaN where depth is
    missing, out of range or on a depth edge."""
    h, w = depth.shape
    cols = np.clip(np.round(pixels[:, 0]).astype(int), 1, w - 2)
    rows = np.clip(np.round(pixels[:, 1]).astype(int), 1, h - 2)
    patch = np.stack([depth[rows + dr, cols + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)], axis=1)
    with np.errstate(invalid="ignore"):
        z = patch[:, 4]
        valid = np.isfinite(patch).all(axis=1) & (z >= config.depth_min_m) & (z <= config.depth_max_m)
        valid &= (patch.max(axis=1) - patch.min(axis=1)) <= config.depth_max_edge * z
    points = np.full((len(pixels), 3), np.nan)
    points[valid] = np.column_stack([normalized[valid], np.ones(valid.sum())]) * z[valid, None]
    return points


def epipolar_inliers(norm_a: np.ndarray, norm_b: np.ndarray, T_b_a: np.ndarray, threshold: float) -> np.ndarray:
    """Matches consistent with motion T_b_a: Sampson error (normalised units) below ``threshold``; for a
    motion without translation, the angle between the rotated ray and the observed one."""
    R, t = T_b_a[:3, :3], T_b_a[:3, 3]
    if np.linalg.norm(t) < 1e-12:
        return rotation_compensated_parallax(norm_a, norm_b, R) < threshold
    t = t / np.linalg.norm(t)
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ R
    xa = np.column_stack([norm_a, np.ones(len(norm_a))])
    xb = np.column_stack([norm_b, np.ones(len(norm_b))])
    Ex, Etx = xa @ E.T, xb @ E
    numerator = np.sum(xb * Ex, axis=1) ** 2
    denominator = Ex[:, 0] ** 2 + Ex[:, 1] ** 2 + Etx[:, 0] ** 2 + Etx[:, 1] ** 2
    return numerator / np.maximum(denominator, 1e-18) < threshold**2


def translation_from_landmarks(points_ref: np.ndarray, norm_cur: np.ndarray, R: np.ndarray,
                               threshold: float, min_count: int) -> np.ndarray | None:
    """Translation t (known rotation R) that puts landmarks X_ref on their observed rays, x_cur ~ R X_ref + t:
    linear least squares on [b]x (R X + t) = 0 (b the unit bearing), iteratively reweighted (Huber, scale
    ``threshold`` in normalised units x depth) so that mismatched or badly triangulated landmarks count little."""
    if len(points_ref) < min_count:
        return None
    bearings = np.column_stack([norm_cur, np.ones(len(norm_cur))])
    bearings /= np.linalg.norm(bearings, axis=1, keepdims=True)
    rotated = points_ref @ R.T
    skew = np.zeros((len(bearings), 3, 3))
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -bearings[:, 2], bearings[:, 1], -bearings[:, 0]
    skew -= skew.transpose(0, 2, 1)
    A = skew.reshape(-1, 3)
    y = -np.einsum("nij,nj->ni", skew, rotated).reshape(-1)
    depth = np.maximum(np.linalg.norm(rotated, axis=1), 1e-9)
    weights = np.repeat(1.0 / depth, 3)  # residuals ~ angle x depth: normalise to angles
    t = np.zeros(3)
    for _ in range(10):
        Aw = A * weights[:, None]
        t = np.linalg.lstsq(Aw, y * weights, rcond=None)[0]
        residual = np.linalg.norm(((A @ t - y) * np.repeat(1.0 / depth, 3)).reshape(-1, 3), axis=1)
        huber = np.where(residual <= threshold, 1.0, threshold / np.maximum(residual, 1e-12))
        weights = np.repeat(huber / depth, 3)
    inliers = residual <= 3 * threshold
    return t if inliers.sum() >= min_count else None


class VisualOdometry:
    """Feed ``Frame``s to ``process`` in time order; see the module docstring for the method."""

    def __init__(self, extractor: Extractor, config: OdometryConfig | None = None) -> None:
        self.extractor = extractor
        self.config = config or OdometryConfig()
        self.tracker = Tracker(self.config.tracker)
        self._T_odom_last = np.eye(4)  # odom continuity across resets
        self.resets = 0
        self._pending_reset_reason: str | None = None
        self._clear()

    def reset(self, reason: str = "requested") -> None:
        """Forget the map and tracks; the next frame starts a new segment at the last odometry pose. The next
        result carries ``reason`` in ``reset_reason``."""
        self._clear()
        self._pending_reset_reason = reason
        self.resets += 1

    def _clear(self) -> None:
        self.tracker.reset()
        self._reference: _Reference | None = None
        self._poses: list[np.ndarray] = []
        self._keyframe_ids: np.ndarray | None = None
        self._keyframe_norm: dict[int, np.ndarray] = {}
        self._T_odom_keyframe: np.ndarray | None = None
        self._last_step = 1.0
        self._last_stamp: float | None = None
        self._frame_index = 0
        self._lost_in_a_row = 0

    def process(self, frame: Frame) -> FrameResult:
        """Track and pose one frame. Stamps must increase: a stamp equal to the previous frame's raises
        :class:`DuplicateFrameError` (nothing changes); an earlier one resets the pipeline first (time went
        backwards, e.g. a bag replayed from its start). Other bad frames raise :class:`FrameError` or
        :class:`~aliked_ros.geometry.camera.CalibrationError` before the tracks change."""
        start = time.perf_counter()
        reset_reason = None
        if self._last_stamp is not None and frame.stamp == self._last_stamp:
            raise DuplicateFrameError(f"frame stamped {frame.stamp:.9f} s like the previous one")
        if self._last_stamp is not None and frame.stamp < self._last_stamp:
            reset_reason = f"time went backwards ({frame.stamp:.6f} < {self._last_stamp:.6f})"
            self.reset(reset_reason)
        reset_reason = reset_reason or self._pending_reset_reason
        self._pending_reset_reason = None
        camera = frame.camera
        height, width = frame.image.shape[:2]
        camera.check_image_size(width, height)
        if frame.depth is not None and frame.depth.shape != (height, width):
            raise FrameError(f"depth image is {frame.depth.shape[1]}x{frame.depth.shape[0]} px, colour image {width}x{height}")
        if frame.depth is not None and frame.depth.dtype != np.float32:
            raise FrameError(f"depth must be float32 metres, got {frame.depth.dtype}")

        features = self.extractor.extract(frame.image)
        t_extract = time.perf_counter()
        normalized = camera.undistort(features.keypoints)
        points_cam = depth_points(frame.depth, features.keypoints, normalized, self.config) if frame.depth is not None else None
        matches = self.tracker.match(features)
        t_match = time.perf_counter()

        ref = self._reference
        estimate, inliers = None, np.zeros(len(matches), bool)
        if ref is not None and len(features):
            estimate = self._estimate_motion(ref, normalized, matches, camera)
        pose_source = "none"
        if ref is None:
            state, T_ref_cur, T_odom_cur = TrackingState.INITIALIZING, np.eye(4), self._T_odom_last.copy()
        elif estimate is None:
            state, T_ref_cur, T_odom_cur = TrackingState.LOST, None, None
        else:
            T_cur_ref, pose_source = estimate
            norm_ref = ref.normalized[matches.indices[:, 0]]
            norm_cur = normalized[matches.indices[:, 1]]
            threshold = (self.config.pnp_threshold_px if pose_source == "pnp" else self.config.ransac_threshold_px) / camera.focal
            inliers = epipolar_inliers(norm_ref, norm_cur, T_cur_ref, threshold)
            T_ref_cur = invert(T_cur_ref)
            T_odom_cur = ref.T_odom_cam @ T_ref_cur
            state = TrackingState.TRACKING
        t_pose = time.perf_counter()

        keypoint_inliers = np.zeros(len(features), bool)
        keypoint_inliers[matches.indices[inliers, 1]] = True
        is_keyframe = False
        if state == TrackingState.LOST:
            self._lost_in_a_row += 1
            tracks = self._provisional_tracks(features, matches)
            if self._lost_in_a_row >= self.config.max_lost_frames:
                self.reset(f"lost for {self._lost_in_a_row} frames")
        else:
            self._lost_in_a_row = 0
            tracks = self.tracker.commit(features, matches, inliers if ref is not None else None)
            is_keyframe = self._commit(features, normalized, points_cam, T_odom_cur, matches, inliers, camera.focal,
                                       translated=pose_source != "rotation_only")
            self._T_odom_last = T_odom_cur
        self._last_stamp = frame.stamp
        end = time.perf_counter()
        result = FrameResult(
            stamp=frame.stamp, frame_index=self._frame_index, state=state, pose_source=pose_source,
            is_keyframe=is_keyframe, T_odom_camera=T_odom_cur, motion=T_ref_cur, features=features,
            normalized=normalized, track_ids=tracks.track_ids, track_ages=tracks.track_ages,
            inliers=keypoint_inliers, num_matches=len(matches), num_inliers=int(inliers.sum()),
            timings_ms={"extract": (t_extract - start) * 1e3, "match": (t_match - t_extract) * 1e3,
                        "pose": (t_pose - t_match) * 1e3, "total": (end - start) * 1e3},
            reset_reason=reset_reason,
        )
        self._frame_index += 1
        return result

    # --- motion -------------------------------------------------------------------------------------------------

    def _estimate_motion(self, ref: _Reference, normalized: np.ndarray, matches: Matches,
                         camera: CameraModel) -> tuple[np.ndarray, str] | None:
        """T_cur_ref and its source, or None when the motion cannot be determined."""
        cfg = self.config
        if len(matches) < cfg.min_inliers:
            return None
        idx_ref, idx_cur = matches.indices[:, 0], matches.indices[:, 1]
        if ref.points_cam is not None:
            has_depth = np.isfinite(ref.points_cam[idx_ref, 0])
            if has_depth.sum() >= cfg.min_depth_points:
                pnp = absolute_pose(ref.points_cam[idx_ref[has_depth]], normalized[idx_cur[has_depth]], camera.focal,
                                    cfg.pnp_threshold_px, cfg.min_inliers)
                if pnp is not None:
                    return pnp.transform, "pnp"
        estimate: PoseEstimate | None = relative_pose(
            ref.normalized[idx_ref], normalized[idx_cur], camera.focal, cfg.ransac_threshold_px, cfg.min_inliers,
            cfg.min_parallax_px)
        if estimate is None:
            return None
        if estimate.kind == "rotation_only":
            return estimate.transform, "rotation_only"
        R, t_dir = estimate.transform[:3, :3], estimate.transform[:3, 3]
        with_landmark = estimate.inliers & np.isfinite(ref.landmark[idx_ref, 0])
        points_ref = (ref.landmark[idx_ref[with_landmark]] - ref.T_odom_cam[:3, 3]) @ ref.T_odom_cam[:3, :3]
        t_landmarks = translation_from_landmarks(points_ref, normalized[idx_cur[with_landmark]], R,
                                                 cfg.ransac_threshold_px / camera.focal, cfg.min_landmarks)
        if t_landmarks is None:
            length = self._last_step
        else:
            # the step along the essential-matrix direction that the landmarks support; its sign overrules the
            # two-view cheirality test, which is unreliable at low parallax
            length = float(t_landmarks @ t_dir)
            agreement = abs(length) / max(float(np.linalg.norm(t_landmarks)), 1e-12)
            if agreement < np.cos(np.deg2rad(cfg.max_direction_disagreement_deg)) and len(points_ref) >= cfg.min_landmarks_pnp:
                # the two-view direction disagrees with the landmarks: trust the landmarks (PnP) for this frame
                pnp = absolute_pose(points_ref, normalized[idx_cur[with_landmark]], camera.focal,
                                    cfg.pnp_threshold_px, cfg.min_inliers)
                if pnp is not None:
                    self._last_step = float(np.linalg.norm(pnp.transform[:3, 3]))
                    return pnp.transform, "pnp"
            if length < 0:
                length, t_dir = -length, -t_dir
            self._last_step = length
        return make_transform(R, length * t_dir), "essential"

    # --- bookkeeping after a posed frame ------------------------------------------------------------------------

    def _provisional_tracks(self, features: Features, matches: Matches) -> TrackedKeypoints:
        """Ids for a LOST frame's keypoints without committing it: matched keypoints show their reference track."""
        ids = np.full(len(features), np.iinfo(np.uint64).max, np.uint64)  # max = no track
        ages = np.zeros(len(features), np.uint32)
        ref_tracks = self.tracker.reference_tracks
        if ref_tracks is not None and len(matches):
            ids[matches.indices[:, 1]] = ref_tracks.track_ids[matches.indices[:, 0]]
            ages[matches.indices[:, 1]] = ref_tracks.track_ages[matches.indices[:, 0]] + 1
        return TrackedKeypoints(ids, ages)

    def _commit(self, features: Features, normalized: np.ndarray, points_cam: np.ndarray | None,
                T_odom_cur: np.ndarray, matches: Matches, inliers: np.ndarray, focal_px: float,
                translated: bool) -> bool:
        """Make this frame the reference: carry anchors and landmarks along verified matches, decide whether it
        is a keyframe, and if so triangulate. Returns is_keyframe."""
        n = len(features)
        pose_index = len(self._poses)
        self._poses.append(T_odom_cur)
        anchor_pose = np.full(n, pose_index)
        anchor_norm = normalized.copy()
        landmark = np.full((n, 3), np.nan)
        ref = self._reference
        if ref is not None and len(matches):
            keep = matches.indices[inliers]
            anchor_pose[keep[:, 1]] = ref.anchor_pose[keep[:, 0]]
            anchor_norm[keep[:, 1]] = ref.anchor_norm[keep[:, 0]]
            landmark[keep[:, 1]] = ref.landmark[keep[:, 0]]
        if points_cam is not None:
            has_depth = np.isfinite(points_cam[:, 0])
            landmark[has_depth] = points_cam[has_depth] @ T_odom_cur[:3, :3].T + T_odom_cur[:3, 3]
        self._reference = _Reference(features, normalized, points_cam, T_odom_cur, anchor_pose, anchor_norm, landmark)
        track_ids = self.tracker.reference_tracks.track_ids
        is_keyframe = self._is_keyframe(track_ids, normalized, T_odom_cur, landmark, focal_px, translated)
        if is_keyframe:
            self._triangulate(T_odom_cur, normalized)
            self._keyframe_ids = track_ids.copy()
            self._keyframe_norm = dict(zip(track_ids.tolist(), normalized))
            self._T_odom_keyframe = T_odom_cur
        return is_keyframe

    def _is_keyframe(self, track_ids: np.ndarray, normalized: np.ndarray, T_odom_cur: np.ndarray,
                     landmark: np.ndarray, focal_px: float, translated: bool) -> bool:
        cfg = self.config
        if self._keyframe_ids is None:
            return True
        if translated and np.isfinite(landmark[:, 0]).sum() < cfg.min_landmarks:
            return True  # a baseline to triangulate from, and landmarks are needed
        shared = [i for i, track in enumerate(track_ids.tolist()) if track in self._keyframe_norm]
        if len(shared) < cfg.keyframe_min_tracked * len(self._keyframe_ids):
            return True
        if not shared:
            return True
        R_cur_kf = (invert(T_odom_cur) @ self._T_odom_keyframe)[:3, :3]
        kf_norm = np.array([self._keyframe_norm[int(track_ids[i])] for i in shared])
        parallax = rotation_compensated_parallax(kf_norm, normalized[shared], R_cur_kf)
        return bool(np.median(parallax) * focal_px > cfg.keyframe_parallax_px)

    def _triangulate(self, T_odom_cur: np.ndarray, normalized: np.ndarray) -> None:
        """Landmarks for tracks whose first observation and this keyframe see them under enough parallax."""
        ref = self._reference
        min_angle = np.deg2rad(self.config.triangulation_min_angle_deg)
        T_cur_odom = invert(T_odom_cur)
        for pose_index in np.unique(ref.anchor_pose):
            if pose_index == len(self._poses) - 1:
                continue  # first seen now: no baseline yet
            members = np.flatnonzero(ref.anchor_pose == pose_index)
            T_odom_anchor = self._poses[pose_index]
            T_cur_anchor = T_cur_odom @ T_odom_anchor
            if np.linalg.norm(T_cur_anchor[:3, 3]) < 1e-9:
                continue
            angle = rotation_compensated_parallax(ref.anchor_norm[members], normalized[members], T_cur_anchor[:3, :3])
            members = members[angle >= min_angle]
            if not len(members):
                continue
            points, valid = triangulate(ref.anchor_norm[members], normalized[members], T_cur_anchor)
            members, points = members[valid], points[valid]
            ref.landmark[members] = points @ T_odom_anchor[:3, :3].T + T_odom_anchor[:3, 3]
