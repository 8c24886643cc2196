"""The visual-odometry pipeline: ``Frame`` in -> ``FrameResult`` out, posing every frame against a local map.

Per frame (``VisualOdometry.process``), top to bottom:
  1. check the frame (stamp, sizes, depth type) — a bad frame raises before anything changes;
  2. extract features;
  3. match against the previous posed frame (mutual nearest neighbours): matched keypoints continue its tracks,
     so a keypoint knows its track id, and through it its keyframe observations and its landmark; with
     ``keyframe_alignment_px`` > 0 the last keyframe's tracks move to where its image patches align; then
     undistort the keypoints, read depth at them (RGB-D), or extract the right image's features and triangulate
     the left keypoints they match (stereo: ``aliked_ros.geometry.stereo``; from here on a stereo frame is an
     RGB-D frame whose depth noise is sigma_z = z^2 sigma_d / (fx B));
  4. pose the frame against the map (``_estimate``, no state change):
       - first frame of a map: it becomes keyframe 0 (RGB-D: its depth gives the first landmarks);
       - monocular, before initialisation: rotation only (translation is not observable yet); once the
         essential matrix between keyframe 0 and the frame (their shared tracks; descriptor matches too when
         few tracks survive) shows ``init_parallax_px`` and no single rotation explains the correspondences,
         the inliers are triangulated, the map's unit is set to their median depth, and tracking starts;
       - tracking: the essential matrix between the last *keyframe* and the frame (the tracks give the
         correspondences, so parallax accumulates however slowly the camera moves) gives the rotation, the
         keyframe's landmarks give the translation, and a robust motion-only refinement against all tracked
         landmarks gives the pose and its covariance (PnP-RANSAC when that prior fails); then the map's
         landmarks that no track carries any more are searched for around their projections and the pose
         refined again with those found (``_search_landmarks``); monocular, for extractors whose tracks end
         soon (ORB, SIFT: ``keyframe_reattach``), the keypoints that continue no track take up the last
         keyframe's ended tracks that have no landmark, by descriptor within an epipolar band
         (``_reattach_to_keyframe``), anchored where the keyframe saw them;
       - at rest (its centre within its uncertainty of where the last ``stationary_window_s`` of frames were,
         or, metric frames, of its keyframe's; monocular: or its image has not moved): the centre is held there and
         only the rotation estimated, so that a camera standing still or turning on the spot does not walk by its
         pose noise, nor follow people walking past (``rest.RestDetector``);
       - rolling shutter (RGB-D, ``rolling_shutter_readout_s`` > 0): keypoints and their depth points are first
         moved to the stamp with the previous frame's velocities; once posed, the frame's own angular and linear
         velocity during the readout are refined with its pose on the landmarks (priors: the frame-to-frame
         motion), the keypoints moved again with them and the frame posed once more
         (``_rolling_shutter_pass``). Monocular and stereo frames are taken as global shutter (a monocular map
         absorbs a constant error of the rate: DEVELOPERS.md);
       - failure: relocalisation against the newest keyframes (descriptor matching + PnP on their landmarks),
         else LOST; after LOST frames only relocalisation poses a frame (the last pose is stale); after
         ``max_lost_frames`` LOST frames with features (relocalisation tried on them and failed) a new map
         starts (``map_id`` + 1, new scale) — black frames and frames of noise do not count, so a covered or
         dark camera keeps its map however long and its first lit frames relocalise in it — at
         once while the map is young (``young_map_keyframes``) and the frame has features to start one on;
  5. commit (``_commit``): tracks, and at keyframes the map — new keyframe, triangulated or depth landmarks (no
     depth point that moved since the previous frame: ``_still_since_previous``), local bundle adjustment
     (``optimizer``) — all or nothing.

Keyframes: a frame becomes one when its parallax to the last keyframe reaches ``keyframe_parallax_px``, or when
it tracks too few of the keyframe's landmarks and has enough parallax to triangulate new ones (with depth: or
rotated far, or it tracks few landmarks while many of its keypoints have depth and none). Rotation-only frames
never replace a keyframe. Bundle adjustment runs inline (deterministic: ``eval``) or in a worker thread
(``background_mapping``: the node); tracking never waits for it.

Pose sources: ``essential`` (essential-matrix prior, refined on landmarks), ``pnp`` (refined on landmarks from the
previous pose or a PnP RANSAC: frames with depth, or the essential prior failed, or relocalisation),
``rotation_only`` (monocular initialisation), ``none`` (first frame of a map, LOST). Covariance
(``FrameResult.covariance``): 6x6 of the camera pose against the map, perturbation T_odom_cam <- T_odom_cam exp(-xi)
with xi = (rotation vector, translation) in the camera frame, in the map's unit; it does not include the map's own
uncertainty. None when not estimated (initialisation, LOST).
``FrameResult.motion_covariance``: 6x6 of ``motion`` (T_prev_cur) in the same convention, the error xi of
inv(motion) <- exp(xi) inv(motion) in this camera's frame: this frame's covariance plus the previous posed frame's
moved into this frame, times the part of their residual variance the two frames do not share
(``independent_error_fraction``: the map's error is common to both and cancels in the motion, their pixel noise
does not), plus how bundle adjustment moved the map under the previous frame. None when either is unknown.
``aliked-vo eval`` checks it against ground truth (``nees_ratio``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial import cKDTree

from aliked_ros.features import Extractor, Features
from aliked_ros.geometry.camera import CameraModel
from aliked_ros.geometry.multiview import (project, reprojection_errors, rotation_compensated_parallax, sampson_error,
                                           transform_points, translation_from_points, triangulate)
from aliked_ros.geometry.pose import absolute_pose, relative_pose, rotation_only
from aliked_ros.geometry.rolling_shutter import points_to_stamp, row_times, to_stamp
from aliked_ros.geometry.stereo import stereo_depth
from aliked_ros.geometry.transforms import adjoint, invert, make_transform, perturbation, rotation_angle
from aliked_ros.matching import Matches, hamming_distances, match_mutual_nearest
from aliked_ros.matching import prepare_kernels as prepare_matching_kernels
from aliked_ros.odometry.map import NO_TRACK, Keyframe, LocalMap
from aliked_ros.odometry.mapping import LocalMapper
from aliked_ros.odometry.optimizer import (EpipolarTerms, PoseRefinement, independent_error_fraction, refine_pose,
                                          refine_pose_and_velocity)
from aliked_ros.odometry.optimizer import prepare_kernels as prepare_refinement_kernels
from aliked_ros.odometry.rest import RecentFrame, RestDetector, pose_held_at
from aliked_ros.odometry.types import (DuplicateFrameError, Frame, FrameError, FrameResult, OdometryConfig,
                                       StereoFrameError, TrackingState)
from aliked_ros.tracking import TrackedKeypoints, Tracker, align_to_reference, grey_image


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


@dataclass
class _Observed:
    """One frame's measurements, ready for posing."""

    features: Features
    normalized: np.ndarray
    points_cam: np.ndarray | None
    matches: Matches
    track_ids: np.ndarray  # (N,) provisional: the previous frame's track for matched keypoints, NO_TRACK else
    camera: CameraModel
    stamp: float  # s
    depth_sigma_per_m2: float = 0.0  # depth noise of points_cam: sigma_z = this x z^2 (bundle adjustment)
    stereo_matches: int = 0
    stereo: bool = False  # points_cam from a right image, not a depth image
    grey: np.ndarray | None = None  # the image, grey (H,W) uint8, when tracks are aligned to keyframes


def _median_parallax_px(norm_a: np.ndarray, norm_b: np.ndarray, R_b_a: np.ndarray, focal_px: float) -> float:
    """Median rotation-compensated parallax of the correspondences, in pixels (the angle times the focal)."""
    return float(np.median(rotation_compensated_parallax(norm_a, norm_b, R_b_a))) * focal_px


@dataclass
class _Estimate:
    """The outcome of posing one frame (nothing committed yet)."""

    state: TrackingState
    source: str
    T_odom_cam: np.ndarray | None
    verified: np.ndarray  # (M,) bool over the matches
    covariance: np.ndarray | None = None
    num_landmarks: int = 0
    keyframe: bool = False
    restart_initialization: bool = False  # monocular: replace keyframe 0 (its tracks died before initialising)
    new_landmarks: tuple[np.ndarray, np.ndarray] | None = None  # (track ids, odom positions) from initialisation
    revived: tuple[np.ndarray, np.ndarray] | None = None  # (keypoint indices, track ids) that take up an earlier
    #                                                       track: relocalisation, landmarks found by projection
    relocalized: bool = False
    rejected: np.ndarray | None = None  # track ids of landmarks that were outliers of the pose refinement
    residuals: tuple[np.ndarray, np.ndarray] | None = None  # (track ids, (n,2) px) of the refinement's inlier
    #                                                         landmarks at the final pose (motion covariance)
    rest_centre: np.ndarray | None = None  # (3,) odom: the camera is at rest there (its centre is held there)
    rest_image: RecentFrame | None = None  # held because its image still shows this earlier frame's (monocular)
    reattached: tuple[np.ndarray, np.ndarray, np.ndarray, Keyframe] | None = None  # (keypoint indices, track
    #                                    ids, keyframe rows, the keyframe): ended tracks of the keyframe taken up again


@dataclass
class _Previous:
    """The last posed frame (the tracker holds its features and tracks), and for each of its keypoints where its
    track was first seen: ``anchor_norm`` there, ``anchor_frame`` a key of ``anchor_poses`` (T_odom_cam of
    the frames that still anchor a track): the longest baseline to triangulate the track from."""

    normalized: np.ndarray
    T_odom_cam: np.ndarray
    anchor_norm: np.ndarray
    anchor_frame: np.ndarray
    anchor_poses: dict[int, np.ndarray] = field(default_factory=dict)
    covariance: np.ndarray | None = None  # of T_odom_cam against the map
    reference: tuple[int, np.ndarray] | None = None  # (index, T_odom_cam) of the newest keyframe as this frame
    #                                                  was posed against it (before that keyframe's own BA)
    residuals: tuple[np.ndarray, np.ndarray] | None = None  # ``_Estimate.residuals`` of this frame


@dataclass(frozen=True)
class ExtractedFrame:
    """A frame with its features (``VisualOdometry.extract``), ready for ``process_extracted``."""

    frame: Frame
    features: Features  # of frame.image
    right: Features | None  # of frame.right_image (stereo), else None
    extract_ms: float  # wall time of the extraction


def _describe(camera: CameraModel) -> str:
    return f"{camera.width}x{camera.height} fx {camera.fx:g}"


class VisualOdometry:
    """Feed ``Frame``s to ``process`` in time order; see the module docstring for the method."""

    def __init__(self, extractor: Extractor, config: OdometryConfig | None = None) -> None:
        self.extractor = extractor
        self.config = config or OdometryConfig()
        self.tracker = Tracker(self.config.tracker)
        self.mapper = LocalMapper(self.config)
        # monocular frames re-attach the keyframe's ended tracks (configured, else as the extractor's tracks need)
        self.reattaches = self.config.keyframe_reattach if self.config.keyframe_reattach is not None \
            else getattr(extractor, "short_tracks", False)  # (an extractor not derived from Extractor: off)
        self._T_odom_last = np.eye(4)  # odom continuity across resets
        self.resets = 0
        self.relocalizations = 0
        self._map_id = -1
        self._pending_reset_reason: str | None = None
        self.rest = RestDetector(self.config)  # at rest or turning on the spot: where to hold the centre
        self._clear()
        # the numba kernels of matching and refinement, compiled or loaded now instead of on the first frame
        prepare_matching_kernels(extractor.descriptor_kind)
        prepare_refinement_kernels()

    @property
    def map_id(self) -> int:
        return self._map_id

    def reset(self, reason: str = "requested") -> None:
        """Forget the map and tracks; the next frame starts a new map (``map_id`` + 1) at the last odometry
        pose. The next result carries ``reason`` in ``reset_reason``. The stamp checks go on across it: the frame
        after a reset is refused or starts the next map like any other (a duplicate stamp raises, an earlier one
        resets again)."""
        last_stamp = self._last_stamp
        self._clear()
        self._last_stamp = last_stamp
        self._pending_reset_reason = reason
        self.resets += 1

    def _clear(self) -> None:
        self.tracker.reset()
        self._map_id += 1
        self.map = LocalMap(self._map_id, self.config.max_keyframes)
        self.mapper.forget()
        self._previous: _Previous | None = None
        self._posed_frames = 0
        self._last_stamp: float | None = None
        self._frame_index = 0
        self._camera: tuple | None = None  # (camera, stereo) of the last frame taken
        self._lost_in_a_row = 0  # LOST frames since the last posed one
        self._lost_seeing = 0  # ... of them, those with min_landmarks keypoints (relocalisation had a chance)
        self.rest.clear()
        self._readout_motion: tuple[np.ndarray, np.ndarray] | None = None  # rolling shutter: the last posed
        #                                   frame's (angular velocity rad/s, linear velocity map units/s)

    # --- 1. checks ----------------------------------------------------------------------------------------------

    def _check_stamp(self, frame: Frame) -> None:
        """The check that reads pipeline state: a frame stamped like the previous one is refused."""
        if self._last_stamp is not None and frame.stamp == self._last_stamp:
            raise DuplicateFrameError(f"frame stamped {frame.stamp:.9f} s like the previous one")

    def _check_frame(self, frame: Frame) -> None:
        """The checks that read no pipeline state (sizes, depth type, stereo pairing)."""
        height, width = frame.image.shape[:2]
        frame.camera.check_image_size(width, height)
        if frame.depth is not None and frame.depth.shape != (height, width):
            raise FrameError(f"depth image is {frame.depth.shape[1]}x{frame.depth.shape[0]} px, colour image {width}x{height}")
        if frame.depth is not None and frame.depth.dtype != np.float32:
            raise FrameError(f"depth must be float32 metres, got {frame.depth.dtype}")
        if (frame.right_image is None) != (frame.stereo is None):
            raise StereoFrameError("a stereo frame needs both its right image and its stereo camera")
        if frame.right_image is None and self.config.require_stereo:
            raise StereoFrameError(f"frame at {frame.stamp:.6f} s has no right image (require_stereo)")
        if frame.right_image is not None:
            if frame.right_image.shape[:2] != (height, width):
                raise StereoFrameError(f"right image is {frame.right_image.shape[1]}x{frame.right_image.shape[0]} px, "
                                       f"left image {width}x{height}")
            if frame.depth is not None:
                raise StereoFrameError("a frame carries depth or a right image, not both")
            if frame.camera != frame.stereo.left:
                raise StereoFrameError("a stereo frame's camera must be its stereo camera's rectified left camera")

    def process(self, frame: Frame) -> FrameResult:
        """Track and pose one frame. Stamps must increase: a stamp equal to the previous frame's raises
        :class:`DuplicateFrameError`; an earlier one resets the pipeline first (time went backwards, e.g. a bag
        replayed from its start). Bad frames raise :class:`FrameError` or
        :class:`~aliked_ros.geometry.camera.CalibrationError`. A frame that raises changes nothing.
        The same as ``process_extracted(extract(frame))``, a duplicate stamp refused before extraction."""
        self._check_stamp(frame)
        return self.process_extracted(self.extract(frame))

    def extract(self, frame: Frame) -> ExtractedFrame:
        """Step 2's extraction, separable from the rest: the checks that need no state, then the features of the
        image (and of the right image). Reads and changes no pipeline state, so it may run on another thread while
        ``process_extracted`` runs (the node's extraction stage); the extractor has this one caller. Raises
        like ``process``."""
        start = time.perf_counter()
        self._check_frame(frame)
        features = self.extractor.extract(frame.image)
        right = self.extractor.extract(frame.right_image) if frame.right_image is not None else None
        return ExtractedFrame(frame, features, right, (time.perf_counter() - start) * 1e3)

    def process_extracted(self, extracted: ExtractedFrame) -> FrameResult:
        """Everything after extraction (steps 1 and 3-5) for a frame from ``extract``, in time order; raises
        and changes nothing like ``process``."""
        start = time.perf_counter() - extracted.extract_ms * 1e-3  # timings as if extracted here
        frame, features, right = extracted.frame, extracted.features, extracted.right
        self._check_stamp(frame)  # extract checked the rest
        grey = grey_image(frame.image) if self.config.keyframe_alignment_px > 0 else None  # before any reset
        self.mapper.apply_finished(self.map)
        # time went backwards: reset, but only for a frame that got this far (one the extractor refuses changes nothing)
        if self._last_stamp is not None and frame.stamp < self._last_stamp:
            self.reset(f"time went backwards ({frame.stamp:.6f} < {self._last_stamp:.6f})")
        elif self._camera_changed(frame):
            # a new resolution or calibration (a driver reconfigured): the map's pixels and rays no longer apply
            self.reset(f"camera changed ({_describe(self._camera[0])} -> {_describe(frame.camera)})")
        t_extract = time.perf_counter()
        # keypoints the camera model cannot undistort (beyond a fisheye model's 90 degrees) have no ray: dropped
        normalized = frame.camera.undistort(features.keypoints)
        undistortable = np.isfinite(normalized[:, 0])
        if not undistortable.all():
            features, normalized = features.select(undistortable), normalized[undistortable]
        # 3. tracks (and where the last keyframe's tracks lie in this image)
        matches = self.tracker.match(features)
        track_ids = np.full(len(features), NO_TRACK, np.uint64)
        if len(matches):
            track_ids[matches.indices[:, 1]] = self.tracker.reference_tracks.track_ids[matches.indices[:, 0]]
        if grey is not None:
            aligned = self._aligned_to_keyframe(features, track_ids, grey)
            if aligned is not features:  # (a point aligned to where the model has no ray stays where it was detected)
                moved = frame.camera.undistort(aligned.keypoints)
                kept = np.isfinite(moved[:, :1])
                features = replace(features, keypoints=np.where(kept, aligned.keypoints, features.keypoints))
                normalized = np.where(kept, moved, normalized)
        points_cam, depth_sigma, stereo_matches = None, self.config.depth_sigma_per_m2, 0
        row_times_s = None
        if frame.depth is not None:
            points_cam = depth_points(frame.depth, features.keypoints, normalized, self.config)
            if self.config.rolling_shutter_readout_s > 0:  # keypoints and points as exposed, row by row
                row_times_s = row_times(features.keypoints[:, 1], frame.camera.height,
                                        self.config.rolling_shutter_readout_s)
                as_read, points_as_read = normalized, points_cam
                if self._readout_motion is not None:  # constant velocities until this frame's own are known
                    omega, velocity = self._readout_motion
                    points_cam = points_to_stamp(points_as_read, row_times_s, omega, velocity)
                    normalized = self._normalized_at_stamp(to_stamp(as_read, row_times_s, omega), points_cam)
        elif right is not None:
            points_cam, depth_sigma, stereo_matches = self._stereo_points(features, right, normalized, frame)
        observed = _Observed(features, normalized, points_cam, matches, track_ids, frame.camera, frame.stamp,
                             depth_sigma, stereo_matches, right is not None, grey)
        t_match = time.perf_counter()
        # 4. pose
        estimate = self._estimate(observed)
        readout_motion = None
        if row_times_s is not None and estimate.state == TrackingState.TRACKING:
            observed, estimate, readout_motion = self._rolling_shutter_pass(frame, observed, estimate, as_read,
                                                                            points_as_read, row_times_s)
        t_pose = time.perf_counter()
        # 5. commit
        frame_index, map_id = self._frame_index, self._map_id
        previous_pose = self._previous.T_odom_cam if self._previous is not None else None
        previous_covariance = self._previous.covariance if self._previous is not None else None
        previous_residuals = self._previous.residuals if self._previous is not None else None
        lost_before = self._lost_in_a_row > 0
        map_moved = self._map_moved(self._previous) if self._previous is not None else None
        reset_reason, resets_before = self._pending_reset_reason, self.resets
        tracks, map_ms = self._commit(observed, estimate, frame.stamp)  # raising, it leaves the reason pending
        if self.resets == resets_before:  # (a reset in the commit leaves its own reason for the next frame)
            self._pending_reset_reason = None
        self._camera = (frame.camera, frame.stereo)
        self._readout_motion = readout_motion
        end = time.perf_counter()

        keypoint_inliers = np.zeros(len(features), bool)
        keypoint_inliers[matches.indices[estimate.verified, 1]] = True
        if estimate.revived is not None:
            keypoint_inliers[estimate.revived[0]] = True
        motion = invert(previous_pose) @ estimate.T_odom_cam \
            if estimate.T_odom_cam is not None and previous_pose is not None else None
        motion_covariance = None
        if motion is not None and estimate.covariance is not None and previous_covariance is not None:
            Ad = adjoint(invert(motion))  # the previous pose's error, moved into this camera's frame
            # (whole when the map moved under the previous frame or frames were lost in between)
            fraction = independent_error_fraction(estimate.residuals, previous_residuals) \
                if map_moved is None and not lost_before else 1.0
            motion_covariance = fraction * (estimate.covariance + Ad @ previous_covariance @ Ad.T)
            if map_moved is not None:  # the map moved under the previous frame: this motion contains that move
                moved = Ad @ -perturbation(map_moved)
                motion_covariance = motion_covariance + np.outer(moved, moved)
        return FrameResult(
            stamp=frame.stamp, frame_index=frame_index, state=estimate.state, pose_source=estimate.source,
            is_keyframe=estimate.keyframe, T_odom_camera=estimate.T_odom_cam, motion=motion, features=features,
            normalized=normalized, track_ids=tracks.track_ids, track_ages=tracks.track_ages,
            inliers=keypoint_inliers, num_matches=len(matches), num_inliers=int(keypoint_inliers.sum()),
            timings_ms={"extract": (t_extract - start) * 1e3, "match": (t_match - t_extract) * 1e3,
                        "pose": (t_pose - t_match) * 1e3, "map": map_ms, "total": (end - start) * 1e3},
            covariance=estimate.covariance, motion_covariance=motion_covariance, reset_reason=reset_reason,
            map_id=map_id,
            relocalized=estimate.relocalized, num_landmarks=estimate.num_landmarks, stereo_matches=stereo_matches)

    def _rolling_shutter_pass(self, frame: Frame, observed: _Observed, estimate: _Estimate, as_read: np.ndarray,
                              points_as_read: np.ndarray, row_times_s: np.ndarray
                              ) -> tuple[_Observed, _Estimate, tuple[np.ndarray, np.ndarray] | None]:
        """A rolling-shutter RGB-D frame posed once more: its angular and linear velocity during the readout
        refined with its pose on the landmarks (``refine_pose_and_velocity``; priors: the motion from the previous
        posed frame to this estimate, or the previous frame's velocities), its keypoints (``as_read``: undistorted,
        as exposed) and their depth points (``points_as_read``) moved to the stamp with them, and the frame posed
        again. Returns the
        observation, estimate and (angular, linear) velocity to commit; the first ones and None when the
        refinement or the second pose fails. Reads no state it changes (as ``_estimate``)."""
        cfg = self.config
        omega, velocity = self._readout_motion if self._readout_motion is not None else (np.zeros(3), np.zeros(3))
        if self._previous is not None and self._lost_in_a_row == 0 and self._last_stamp is not None \
                and frame.stamp > self._last_stamp:
            dt = frame.stamp - self._last_stamp
            motion = invert(self._previous.T_odom_cam) @ estimate.T_odom_cam  # T_prev_cur
            omega, velocity = perturbation(motion)[:3] / dt, -invert(motion)[:3, 3] / dt
        ids = observed.track_ids.copy()
        if estimate.revived is not None:
            ids[estimate.revived[0]] = estimate.revived[1]
        landmarks, has_landmark = self.map.lookup(ids)
        if has_landmark.sum() < cfg.min_landmarks:
            return observed, estimate, None
        refined = refine_pose_and_velocity(
            invert(estimate.T_odom_cam), landmarks[has_landmark], as_read[has_landmark], row_times_s[has_landmark],
            omega, cfg.rolling_shutter_omega_sigma, velocity, cfg.rolling_shutter_velocity_sigma,
            observed.camera.focal, cfg.reprojection_threshold_px)
        if refined is None:
            return observed, estimate, None
        points_cam = points_to_stamp(points_as_read, row_times_s, refined.omega, refined.velocity)
        normalized = self._normalized_at_stamp(to_stamp(as_read, row_times_s, refined.omega), points_cam)
        again = replace(observed, normalized=normalized, points_cam=points_cam)
        second = self._estimate(again)
        if second.state != TrackingState.TRACKING:
            return observed, estimate, None
        if second.covariance is not None and refined.velocity_covariance is not None:
            second.covariance = second.covariance + refined.velocity_covariance  # the velocities are estimates too
        return again, second, (refined.omega, refined.velocity)

    @staticmethod
    def _normalized_at_stamp(turned: np.ndarray, points_cam: np.ndarray) -> np.ndarray:
        """Keypoints at the stamp: where a depth point is known its projection (the camera's translation during
        the readout included), else the ray turned by the angular velocity alone (``turned``)."""
        normalized = turned.copy()
        known = np.isfinite(points_cam[:, 2]) & (points_cam[:, 2] > 0)
        normalized[known] = points_cam[known, :2] / points_cam[known, 2:3]
        return normalized

    def _stereo_points(self, features: Features, right: Features, normalized: np.ndarray, frame: Frame
                       ) -> tuple[np.ndarray, float, int]:
        """Stereo depth of the left keypoints: (points (N,3) in the left camera frame, NaN where unmatched; depth
        noise per m^2; number matched)."""
        cfg = self.config
        depth = stereo_depth(features.keypoints, features.descriptors, right.keypoints, right.descriptors, normalized,
                             frame.stereo, cfg.stereo_row_band_px, cfg.stereo_min_disparity_px,
                             cfg.stereo_max_disparity_px,
                             images=(frame.image, frame.right_image) if cfg.stereo_subpixel else None)
        return depth.points, frame.stereo.depth_sigma_per_m2(cfg.stereo_disparity_sigma_px), depth.matched

    # --- 4. pose ------------------------------------------------------------------------------------------------

    def _estimate(self, obs: _Observed) -> _Estimate:
        none = np.zeros(len(obs.matches), bool)
        if self.map.last_keyframe is None:
            if len(obs.features) < self.config.init_min_landmarks:  # nothing to start a map on (a black frame)
                return _Estimate(TrackingState.INITIALIZING, "none", None, none)
            return _Estimate(TrackingState.INITIALIZING, "none", self._T_odom_last.copy(), none, keyframe=True)
        if not self.map.initialized:
            return self._initialize(obs)
        # after LOST frames the last pose is stale (the camera moved meanwhile, unseen): only relocalisation, which
        # finds the frame by its descriptors alone, poses it (ORB-SLAM's LOST state)
        estimate = self._track(obs) if self._lost_in_a_row == 0 else None
        if estimate is None:
            estimate = self._relocalize(obs)
        if estimate is None:
            return _Estimate(TrackingState.LOST, "none", None, none)
        return estimate

    def _threshold(self, obs: _Observed, px: float) -> float:
        return px / obs.camera.focal

    def _epipolar_verified(self, obs: _Observed, T_odom_cam: np.ndarray) -> np.ndarray:
        """Matches consistent with the motion from the previous frame (Sampson error)."""
        if not len(obs.matches):
            return np.zeros(0, bool)
        T_cur_prev = invert(T_odom_cam) @ self._previous.T_odom_cam
        error = sampson_error(self._previous.normalized[obs.matches.indices[:, 0]],
                              obs.normalized[obs.matches.indices[:, 1]], T_cur_prev)
        return error < self._threshold(obs, self.config.ransac_threshold_px)

    def _initialize(self, obs: _Observed) -> _Estimate:
        """Monocular, before the map has landmarks: rotation only from the previous frame, until keyframe 0 and
        this frame show enough parallax to triangulate."""
        cfg = self.config
        idx_prev, idx_cur = obs.matches.indices[:, 0], obs.matches.indices[:, 1]
        step = relative_pose(self._previous.normalized[idx_prev], obs.normalized[idx_cur], obs.camera.focal,
                             cfg.ransac_threshold_px, cfg.min_inliers, cfg.min_parallax_px,
                             min_inlier_fraction=cfg.min_inlier_fraction)
        if step is None:
            return _Estimate(TrackingState.LOST, "none", None, np.zeros(len(obs.matches), bool))
        R_cur_prev = step.transform[:3, :3]
        if step.kind == "essential":
            # the frame is posed as a turn: its rotation is the one that explains the correspondences without
            # translation, unless none does within the epipolar noise bound. On a turn on the spot ORB's noise
            # reads 1-3.6 px of "parallax", and the essential matrix's rotation erred by 0.1-0.4 deg per frame,
            # 2.4 deg after 90 frames (test_a_turn_on_the_spot_before_initialisation_starts_no_map; now 0.12 deg,
            # 0.06 with keyframe alignment)
            inl = step.inliers
            turn = self._turn(self._previous.normalized[idx_prev[inl]], obs.normalized[idx_cur[inl]], obs.camera)
            R_cur_prev = turn if turn is not None else R_cur_prev
        R_prev_cur = R_cur_prev.T
        T_rotated = self._previous.T_odom_cam @ make_transform(R_prev_cur, np.zeros(3))
        turned = _Estimate(TrackingState.INITIALIZING, "rotation_only", T_rotated, step.inliers)

        keyframe = self.map.last_keyframe
        kf_rows, shared = self._keyframe_correspondences(obs, keyframe)
        if len(shared) < cfg.init_min_landmarks:
            turned.keyframe = turned.restart_initialization = True  # start over from this frame
            return turned
        norm_kf, norm_cur = keyframe.normalized[kf_rows], obs.normalized[shared]
        pair = relative_pose(norm_kf, norm_cur, obs.camera.focal, cfg.ransac_threshold_px, cfg.init_min_landmarks,
                             cfg.init_parallax_px, min_inlier_fraction=cfg.min_inlier_fraction)
        if pair is None or pair.kind != "essential":
            return turned
        T_cur_kf = pair.transform
        inl = np.flatnonzero(pair.inliers)
        # a turn on the spot: an essential matrix fitted to the narrow band of correspondences that a wide turn
        # leaves can put its own error into "parallax" (12.7 px; ORB-SLAM chooses between a homography and a
        # fundamental matrix for this): no initialisation while one rotation explains the correspondences
        # within the epipolar noise bound
        if self._turn(norm_kf[inl], norm_cur[inl], obs.camera) is not None:
            return turned
        points_kf, valid = triangulate(norm_kf[inl], norm_cur[inl], T_cur_kf)
        angle = rotation_compensated_parallax(norm_kf[inl], norm_cur[inl], T_cur_kf[:3, :3])
        valid &= angle >= np.deg2rad(cfg.init_min_angle_deg)
        threshold = self._threshold(obs, cfg.reprojection_threshold_px)
        valid &= reprojection_errors(np.eye(4), np.nan_to_num(points_kf), norm_kf[inl]) < threshold
        valid &= reprojection_errors(T_cur_kf, np.nan_to_num(points_kf), norm_cur[inl]) < threshold
        if valid.sum() < cfg.init_min_landmarks:
            return turned
        scale = 1.0 / float(np.median(points_kf[valid, 2]))  # the map's unit: median depth at initialisation
        T_cur_kf = make_transform(T_cur_kf[:3, :3], T_cur_kf[:3, 3] * scale)
        points_odom = transform_points(keyframe.T_odom_cam, points_kf[valid] * scale)
        ids = keyframe.track_ids[kf_rows[inl[valid]]]
        T_cur_odom = T_cur_kf @ keyframe.T_cam_odom
        cur_rows = shared[inl[valid]]
        refined = refine_pose(T_cur_odom, points_odom, obs.normalized[cur_rows], obs.camera.focal,
                              cfg.reprojection_threshold_px)
        T_odom_cam = invert(refined.T_cam_odom)
        # the tracks that go on: the matches consistent with the step from the previous frame (its pose is
        # rotation-only, so an epipolar test against the new pose would end most tracks) and the new landmarks'
        verified = step.inliers | np.isin(idx_cur, cur_rows[refined.inliers])
        # keypoints matched to keyframe 0 directly (their track had ended) take up its track again
        again = refined.inliers & (obs.track_ids[cur_rows] != ids)
        revived = (cur_rows[again], ids[again]) if again.any() else None
        return _Estimate(TrackingState.TRACKING, "essential", T_odom_cam, verified, refined.covariance,
                         int(refined.inliers.sum()), keyframe=True, new_landmarks=(ids, points_odom),
                         revived=revived)

    def _turn(self, norm_a: np.ndarray, norm_b: np.ndarray, camera: CameraModel) -> np.ndarray | None:
        """R_b_a of a turn that explains the correspondences without translation, their median angle to it within
        the epipolar noise bound (``ransac_threshold_px``); None when none does."""
        R_b_a = rotation_only(norm_a, norm_b)
        explained = _median_parallax_px(norm_a, norm_b, R_b_a, camera.focal) < self.config.ransac_threshold_px
        return R_b_a if explained else None

    def _keyframe_correspondences(self, obs: _Observed, keyframe: Keyframe) -> tuple[np.ndarray, np.ndarray]:
        """(keyframe rows, frame rows) of the points both see: the keyframe's tracks this frame carries; when
        fewer than ``init_min_landmarks`` survive, also descriptor matches (mutual nearest neighbours) between
        the keypoints of either that these do not pair (ORB-SLAM's initialiser matches the first frame to the
        current one). A track ends when its keypoint is missed once, and at high frame rates few tracks survive
        the many frames that slow motion needs to show parallax: ORB and SIFT never initialised on the
        synthetic 120 Hz sequence. The direct matches pass the landmark search's similarity and ratio tests
        (without them, matches to a view the camera had turned away from started maps); tracks come first
        (with the direct matches always added, aliked-t16's maps started sooner on weaker points:
        DEVELOPERS.md)."""
        cfg = self.config
        own = keyframe.rows_of(obs.track_ids)
        cur_rows = np.flatnonzero(own >= 0)
        kf_rows = own[cur_rows]
        if len(cur_rows) >= cfg.init_min_landmarks:
            return kf_rows, cur_rows
        free_kf = ~np.isin(keyframe.track_ids, obs.track_ids)  # the keyframe's tracks that ended
        free_cur = own < 0
        if free_kf.sum() >= 2 and free_cur.sum() >= 2:
            direct_kf, direct_cur = self._descriptor_matches(keyframe, free_kf, obs, free_cur)
            kf_rows, cur_rows = np.concatenate([kf_rows, direct_kf]), np.concatenate([cur_rows, direct_cur])
        return kf_rows, cur_rows

    def _descriptor_matches(self, keyframe: Keyframe, kf_mask: np.ndarray, obs: _Observed, cur_mask: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(keyframe rows, frame rows): mutual nearest neighbours by descriptor between the keyframe's keypoints
        in ``kf_mask`` and the frame's in ``cur_mask``, with the landmark search's similarity and ratio tests."""
        a, b = np.flatnonzero(kf_mask), np.flatnonzero(cur_mask)
        cfg = self.config
        direct = match_mutual_nearest(
            keyframe.features.descriptors[a], obs.features.descriptors[b], ratio=cfg.landmark_search_ratio,
            min_similarity=cfg.landmark_min_similarity(obs.features.descriptors.dtype == np.uint8))
        return a[direct.indices[:, 0]], b[direct.indices[:, 1]]

    def _track(self, obs: _Observed) -> _Estimate | None:
        """Pose against the map: monocular, an essential-matrix prior from the last keyframe refined on the
        landmarks and the keyframe's epipolar constraints; with depth, the previous pose refined on the landmarks
        (PnP RANSAC where that fails); then again with the landmarks found by projection."""
        cfg = self.config
        idx_cur = obs.matches.indices[:, 1]
        if len(idx_cur) < cfg.min_inliers:
            return None
        landmarks, has_landmark = self.map.lookup(obs.track_ids[idx_cur])
        if has_landmark.sum() < cfg.min_landmarks:
            return None
        keyframe = self.map.last_keyframe
        prior, epipolar = None, None
        if obs.points_cam is None:
            # with depth the landmarks fix the whole pose from the previous one; the essential matrix (rotation
            # and direction) moved results only within their spread there and costs a RANSAC per frame
            # (DEVELOPERS.md)
            prior, epipolar = self._keyframe_prior(obs, keyframe, landmarks, has_landmark)
        source = "essential"
        if prior is None:
            prior, source = invert(self._previous.T_odom_cam), "pnp"
        lm_rows = idx_cur[has_landmark]
        start, start_inliers = prior, None
        refined = refine_pose(prior, landmarks[has_landmark], obs.normalized[lm_rows], obs.camera.focal,
                              cfg.reprojection_threshold_px, epipolar=epipolar)
        # PnP-RANSAC on the same landmarks when the refinement failed, or, started from the previous pose (frames
        # with depth), kept fewer than min_inlier_fraction of them: on a fast turn that start is far off and half
        # the matches wrong, and the refinement slid into a pose that a few of them explain. PnP's pose replaces
        # it then when its own refinement keeps more; that one starts from PnP's inliers (over all the landmarks
        # it slid too: 36 kept of PnP's 348 on one such frame; DEVELOPERS.md "A fast turn with depth")
        failed = refined.inliers.sum() < cfg.min_landmarks
        slid = source == "pnp" and refined.inliers.sum() < cfg.min_inlier_fraction * len(lm_rows)
        if failed or slid:
            pnp = absolute_pose(landmarks[has_landmark], obs.normalized[lm_rows], obs.camera.focal,
                                cfg.reprojection_threshold_px, cfg.min_landmarks)
            if pnp is not None:
                from_inliers = None if failed else pnp.inliers
                again = refine_pose(pnp.transform, landmarks[has_landmark], obs.normalized[lm_rows],
                                    obs.camera.focal, cfg.reprojection_threshold_px, start_inliers=from_inliers)
                if failed or again.inliers.sum() > refined.inliers.sum():
                    start, start_inliers, epipolar, refined, source = pnp.transform, from_inliers, None, again, "pnp"
            if refined.inliers.sum() < cfg.min_landmarks:
                return None
        points, rows, point_ids = landmarks[has_landmark], lm_rows, obs.track_ids[lm_rows]
        revived = self._search_landmarks(obs, refined)
        if revived is not None:  # the landmarks found again join the refinement, from the same start (so that
            #                      a pose depends on the landmarks used, not on the order they were found in)
            found_rows, found_ids, found_points = revived
            points, rows = np.concatenate([points, found_points]), np.concatenate([lm_rows, found_rows])
            point_ids = np.concatenate([point_ids, found_ids])
            again = refine_pose(start, points, obs.normalized[rows], obs.camera.focal,
                                cfg.reprojection_threshold_px, epipolar=epipolar,
                                start_inliers=None if start_inliers is None else
                                np.concatenate([start_inliers, np.ones(len(found_rows), bool)]))
            if again.covariance is not None and again.inliers.sum() >= refined.inliers.sum():
                refined = again
                kept = refined.inliers[len(lm_rows):]
                revived = (found_rows[kept], found_ids[kept]) if kept.any() else None
            else:
                points, rows, point_ids, revived = landmarks[has_landmark], lm_rows, obs.track_ids[lm_rows], None
        T_odom_cam, covariance = invert(refined.T_cam_odom), refined.covariance
        rest_centre, rest_image = self.rest.centre_for(self.map, refined, T_odom_cam, keyframe,
                                                       obs.points_cam is not None, obs.stamp, obs.track_ids,
                                                       obs.features.keypoints)
        held = rest_centre is not None
        if held:
            T_odom_cam, covariance = pose_held_at(rest_centre, T_odom_cam, refined, points, obs.normalized[rows],
                                                  obs.camera.focal, cfg.reprojection_threshold_px)
        verified = self._epipolar_verified(obs, T_odom_cam)
        verified[np.flatnonzero(has_landmark)] = refined.inliers[:len(lm_rows)]
        rejected = obs.track_ids[lm_rows[~refined.inliers[:len(lm_rows)]]]
        # a held position is no measurement of this motion: its error is the refinement's whole
        residuals = None if held else (point_ids[refined.inliers], refined.residuals_px[refined.inliers])
        estimate = _Estimate(TrackingState.TRACKING, source, T_odom_cam, verified, covariance,
                             int(refined.inliers.sum()), revived=revived, rejected=rejected, residuals=residuals,
                             rest_centre=rest_centre, rest_image=rest_image)
        estimate.keyframe = self._is_keyframe(obs, keyframe, T_odom_cam, verified, int(refined.inliers.sum()))
        if obs.points_cam is None and self.reattaches:
            taken = revived[0] if revived is not None else np.zeros(0, np.int64)
            estimate.reattached = self._reattach_to_keyframe(obs, keyframe, T_odom_cam, taken)
        return estimate

    def _reattach_to_keyframe(self, obs: _Observed, keyframe: Keyframe, T_odom_cam: np.ndarray, taken: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Keyframe] | None:
        """Monocular (``reattaches``): the last keyframe's ended tracks without a landmark, taken up again by this
        frame's unmatched keypoints. A pair is a mutual nearest neighbour by descriptor (the landmark search's
        similarity and ratio tests) within ``keyframe_reattach_radius_px`` of the keyframe's keypoint once the
        rotation is compensated, with a Sampson error to the keyframe under the frame's pose within
        ``ransac_threshold_px``; nothing is re-attached while the parallax to the keyframe is below
        ``epipolar_min_parallax_px`` (at rest, or a turn on the spot: the epipolar line fixes nothing). A
        track ends when its keypoint is missed once; ORB's and SIFT's tracks live a few frames (ORB: two,
        median, on KITTI), too short to reach the triangulation angle, so slow motion starved their maps.
        Re-attached, a track is anchored where the keyframe saw it (its longest baseline). Returns (keypoint
        rows, track ids, keyframe rows, the keyframe) or None; measured per extractor in DEVELOPERS.md."""
        cfg = self.config
        own = keyframe.rows_of(obs.track_ids)
        continued = own >= 0
        if continued.sum() < 2:
            return None
        T_cur_kf = invert(T_odom_cam) @ keyframe.T_odom_cam
        R = T_cur_kf[:3, :3]
        if _median_parallax_px(keyframe.normalized[own[continued]], obs.normalized[continued], R,
                               obs.camera.focal) < cfg.epipolar_min_parallax_px:
            return None
        _, has_landmark = self.map.lookup(keyframe.track_ids)
        free_kf = ~np.isin(keyframe.track_ids, obs.track_ids) & ~has_landmark
        free_cur = obs.track_ids == NO_TRACK
        free_cur[taken] = False
        if free_kf.sum() < 1 or free_cur.sum() < 1:
            return None
        kf_rows, rows = self._descriptor_matches(keyframe, free_kf, obs, free_cur)
        if not len(rows):
            return None
        norm_kf, norm_cur = keyframe.normalized[kf_rows], obs.normalized[rows]
        near = rotation_compensated_parallax(norm_kf, norm_cur, R) * obs.camera.focal \
            <= cfg.keyframe_reattach_radius_px  # (an angle; times the focal length, about the pixels it spans)
        on_line = sampson_error(norm_kf, norm_cur, T_cur_kf) < self._threshold(obs, cfg.ransac_threshold_px)
        keep = near & on_line
        if not keep.any():
            return None
        return rows[keep], keyframe.track_ids[kf_rows[keep]], kf_rows[keep], keyframe

    def _search_landmarks(self, obs: _Observed, refined: PoseRefinement,
                          taken: tuple[np.ndarray, np.ndarray] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The map's landmarks that no track of this frame carries, found again by projection (ORB-SLAM's "search
        local points"): a landmark projected with the refined pose takes the unmatched keypoint within
        ``landmark_search_radius_px`` whose descriptor is most like the landmark's (from the newest keyframe that
        observes it), when that similarity reaches ``landmark_search_min_similarity`` (binary descriptors:
        ``..._binary``) and the runner-up's distance is not within ``landmark_search_ratio`` of it; one landmark
        per keypoint. A track ends when its keypoint is missed once; without this its landmark was lost for good.
        Landmarks that a frame's refinement once rejected as outliers are not searched for (found again, such
        landmarks went in and out of the refinement from frame to frame: synthetic 120 Hz ATE 1.4 -> 4.0 mm).
        With depth only landmarks that ``landmark_search_min_keyframes_depth`` keyframes observe (bundle
        adjustment has fitted them across views): every keyframe maps its keypoints from depth, and a landmark of
        one keyframe carries its single-view depth error, px-sized from another viewpoint (DEVELOPERS.md).
        ``taken``: (keypoint rows, landmark ids) already paired (relocalisation), searched for no further.
        Returns (keypoint rows, track ids, landmark positions) or None."""
        cfg = self.config
        if cfg.landmark_search_radius_px <= 0 or not len(obs.features):
            return None
        ids, positions = self.map.searchable()
        ids_in_frame = obs.track_ids[obs.track_ids != NO_TRACK]
        if taken is not None:
            ids_in_frame = np.concatenate([ids_in_frame, taken[1]])
        open_ = ~np.isin(ids, ids_in_frame)
        ids, positions = ids[open_], positions[open_]
        if not len(ids):
            return None
        pc = transform_points(refined.T_cam_odom, positions)
        front = pc[:, 2] > 1e-6
        ids, positions, pc = ids[front], positions[front], pc[front]
        free = np.ones(len(obs.features), bool)
        free[obs.matches.indices[:, 1]] = False  # a matched keypoint keeps its track
        if taken is not None:
            free[taken[0]] = False
        free_rows = np.flatnonzero(free)
        if not len(ids) or len(free_rows) < 2:
            return None
        radius = cfg.landmark_search_radius_px / obs.camera.focal
        distance, nearest = cKDTree(obs.normalized[free_rows]).query(pc[:, :2] / pc[:, 2:3], k=2,
                                                                     distance_upper_bound=radius)
        near = np.isfinite(distance[:, 0])
        if not near.any():
            return None
        ids, positions, nearest = ids[near], positions[near], nearest[near]
        descriptors, observed_by = self.map.descriptors_of(ids)
        described = observed_by >= (cfg.landmark_search_min_keyframes_depth if obs.points_cam is not None else 1)
        if not described.any():
            return None
        ids, positions, nearest, descriptors = ids[described], positions[described], nearest[described], \
            descriptors[described]
        current = obs.features.descriptors
        binary = current.dtype == np.uint8

        def similarity(column: np.ndarray) -> np.ndarray:
            valid = column < len(free_rows)
            sim = np.full(len(column), -np.inf)
            cand = current[free_rows[column[valid]]]
            if binary:
                bits = 8 * current.shape[1]
                sim[valid] = 1.0 - hamming_distances(descriptors[valid], cand) / bits
            else:
                sim[valid] = np.einsum("ij,ij->i", descriptors[valid].astype(np.float32), cand.astype(np.float32))
            return sim

        first, second = similarity(nearest[:, 0]), similarity(nearest[:, 1])
        best = np.where(second > first, 1, 0)
        best_sim, other_sim = np.maximum(first, second), np.minimum(first, second)
        best_row = nearest[np.arange(len(ids)), best]
        threshold = cfg.landmark_min_similarity(binary)
        # ratio test on descriptor distance (binary: Hamming fraction; float: sqrt(2 - 2 cos))
        dist = (lambda s: 1.0 - s) if binary else (lambda s: np.sqrt(np.clip(2.0 - 2.0 * s, 0.0, None)))
        with np.errstate(invalid="ignore"):
            distinct = ~np.isfinite(other_sim) | (dist(best_sim) < cfg.landmark_search_ratio * dist(other_sim))
        accept = (best_sim >= threshold) & distinct
        if not accept.any():
            return None
        ids, positions, best_row, best_sim = ids[accept], positions[accept], best_row[accept], best_sim[accept]
        order = np.argsort(-best_sim, kind="stable")  # one landmark per keypoint: the most similar
        _, first_of = np.unique(best_row[order], return_index=True)
        chosen = order[first_of]
        return free_rows[best_row[chosen]], ids[chosen], positions[chosen]

    def _aligned_to_keyframe(self, features: Features, track_ids: np.ndarray, grey: np.ndarray) -> Features:
        """``features`` with the keypoints of the last keyframe's tracks moved to where they align with the
        keyframe's image (``aliked_ros.tracking.align_to_reference``); the same object when nothing moved. Frames
        posed against one keyframe then see its tracks where it saw them, up to the alignment's error, not anew
        at each detection."""
        keyframe = self.map.last_keyframe
        if keyframe is None or keyframe.image is None or keyframe.image.shape != grey.shape:
            return features
        rows = keyframe.rows_of(track_ids)
        cur = np.flatnonzero((rows >= 0) & (track_ids != NO_TRACK))
        if not len(cur):
            return features
        pixels, aligned = align_to_reference(keyframe.image, keyframe.features.keypoints[rows[cur]], grey,
                                             features.keypoints[cur], self.config.keyframe_alignment_px,
                                             self.config.keyframe_alignment_window_px)
        if not aligned.any():
            return features
        keypoints = features.keypoints.copy()
        keypoints[cur] = pixels
        return replace(features, keypoints=keypoints)

    def _camera_changed(self, frame: Frame) -> bool:
        """Another resolution or calibration than the last frame's (a stereo pair's baseline included; a stereo
        frame without its right image is the same camera)."""
        if self._camera is None:
            return False
        camera, stereo = self._camera
        return frame.camera != camera or (stereo is not None and frame.stereo is not None and frame.stereo != stereo)

    def _keyframe_prior(self, obs: _Observed, keyframe: Keyframe, landmarks: np.ndarray, has_landmark: np.ndarray
                        ) -> tuple[np.ndarray | None, EpipolarTerms | None]:
        """T_cur_odom from the essential matrix keyframe -> frame (rotation, direction) and the landmarks (step
        length), and the essential matrix's inliers as epipolar terms for the refinement."""
        cfg = self.config
        idx_cur = obs.matches.indices[:, 1]
        kf_rows = keyframe.rows_of(obs.track_ids[idx_cur])
        shared = kf_rows >= 0
        if shared.sum() < cfg.min_inliers:
            return None, None
        norm_kf, norm_cur = keyframe.normalized[kf_rows[shared]], obs.normalized[idx_cur[shared]]
        # a prior that the refinement on the landmarks corrects: RANSAC's own stopping rule with a floor of 20
        # draws, not the 100 of the essential matrix a map starts from (3-7 ms less per frame, the same accuracy:
        # DEVELOPERS.md)
        pair = relative_pose(norm_kf, norm_cur, obs.camera.focal, cfg.ransac_threshold_px, cfg.min_inliers,
                             cfg.min_parallax_px, min_iterations=20, min_inlier_fraction=cfg.min_inlier_fraction)
        if pair is None:
            return None, None
        R_cur_kf, direction = pair.transform[:3, :3], pair.transform[:3, 3]
        use = np.zeros(len(idx_cur), bool)
        use[np.flatnonzero(shared)[pair.inliers]] = True
        use &= has_landmark
        points_kf = transform_points(keyframe.T_cam_odom, landmarks[use])
        t = translation_from_points(points_kf, obs.normalized[idx_cur[use]], R_cur_kf,
                                    self._threshold(obs, cfg.reprojection_threshold_px), cfg.min_landmarks)
        if t is None:
            return None, None
        epipolar = None
        if pair.kind == "essential" and pair.parallax_px >= cfg.epipolar_min_parallax_px:
            length = float(t @ direction)  # the landmarks' step along the essential direction; its sign
            t = length * direction  #        overrules the two-view cheirality test (unreliable at low parallax)
            no_landmark = ~has_landmark[shared][pair.inliers]
            epipolar = EpipolarTerms(keyframe.T_odom_cam, norm_kf[pair.inliers][no_landmark],
                                     norm_cur[pair.inliers][no_landmark])
        return make_transform(R_cur_kf, t) @ keyframe.T_cam_odom, epipolar

    def _is_keyframe(self, obs: _Observed, keyframe: Keyframe, T_odom_cam: np.ndarray, verified: np.ndarray,
                     tracked_landmarks: int) -> bool:
        cfg = self.config
        idx_cur = obs.matches.indices[verified, 1]
        kf_rows = keyframe.rows_of(obs.track_ids[idx_cur])
        shared = kf_rows >= 0
        T_cur_kf = invert(T_odom_cam) @ keyframe.T_odom_cam
        parallax_px = _median_parallax_px(keyframe.normalized[kf_rows[shared]], obs.normalized[idx_cur[shared]],
                                          T_cur_kf[:3, :3], obs.camera.focal) if shared.any() else 0.0
        few_tracked = tracked_landmarks < cfg.keyframe_min_tracked * keyframe.tracked_landmarks
        if parallax_px >= cfg.keyframe_parallax_px:
            return True
        if obs.points_cam is not None:
            rotated = np.degrees(rotation_angle(T_cur_kf[:3, :3])) >= cfg.keyframe_max_rotation_deg
            # RGB-D: ORB-SLAM's "insert close points": few landmarks tracked while many keypoints have depth and
            # none (not for stereo, where it made keyframes too often: DEVELOPERS.md)
            unmapped = int(np.isfinite(obs.points_cam[:, 2]).sum()) - tracked_landmarks
            depth_points_waiting = not obs.stereo and tracked_landmarks < cfg.keyframe_min_depth_landmarks \
                and unmapped > cfg.keyframe_unmapped_depth_points
            return few_tracked or rotated or depth_points_waiting
        urgent = tracked_landmarks < 2 * cfg.min_landmarks
        return (few_tracked or urgent) and parallax_px >= cfg.keyframe_min_parallax_px

    def _relocalize(self, obs: _Observed) -> _Estimate | None:
        """ORB-SLAM's relocalisation: descriptor matches against the newest keyframes, PnP-RANSAC on their
        landmarks, the pose refined from PnP's inliers; then the map's other landmarks searched for by projection
        (``_search_landmarks``) and the pose refined again with them. Accepted with ``relocalization_min_inliers``
        landmarks. (Refined from all the matched landmarks, a pose slid away from PnP's: 29 kept of PnP's 96 and
        1.2 m off on a synthetic turn; PnP's inliers alone passed a pose 11 deg off that 29 of 65 landmarks
        explained and the search by projection does not confirm. DEVELOPERS.md "Relocalisation, and a dark spell
        that keeps the map".)"""
        cfg = self.config
        if not len(obs.features):
            return None
        for keyframe in reversed(self.map.keyframes[-cfg.relocalization_keyframes:]):
            if len(keyframe.features) == 0:
                continue
            a = keyframe.features.device_descriptors if keyframe.features.device_descriptors is not None \
                else keyframe.features.descriptors
            b = obs.features.device_descriptors if obs.features.device_descriptors is not None \
                else obs.features.descriptors
            matches = match_mutual_nearest(a, b, min_similarity=cfg.tracker.min_similarity, ratio=cfg.tracker.ratio)
            landmarks, found = self.map.lookup(keyframe.track_ids[matches.indices[:, 0]])
            if found.sum() < 2 * cfg.min_landmarks:
                continue
            cur_rows, ids, points = matches.indices[found, 1], keyframe.track_ids[matches.indices[found, 0]], \
                landmarks[found]
            pnp = absolute_pose(points, obs.normalized[cur_rows], obs.camera.focal, cfg.reprojection_threshold_px,
                                2 * cfg.min_landmarks)
            if pnp is None:
                continue
            refined: PoseRefinement = refine_pose(pnp.transform, points, obs.normalized[cur_rows], obs.camera.focal,
                                                  cfg.reprojection_threshold_px, start_inliers=pnp.inliers)
            if refined.inliers.sum() < cfg.min_landmarks:
                continue
            rows, ids, points = cur_rows[refined.inliers], ids[refined.inliers], points[refined.inliers]
            inliers = np.ones(len(rows), bool)
            more = self._search_landmarks(obs, refined, taken=(rows, ids))
            if more is not None:
                rows, ids = np.concatenate([rows, more[0]]), np.concatenate([ids, more[1]])
                points = np.concatenate([points, more[2]])
                refined = refine_pose(refined.T_cam_odom, points, obs.normalized[rows], obs.camera.focal,
                                      cfg.reprojection_threshold_px)
                inliers = refined.inliers
            if refined.covariance is None or inliers.sum() < self._relocalization_min_inliers():
                continue
            T_odom_cam = invert(refined.T_cam_odom)
            revived = (rows[inliers], ids[inliers])
            verified = np.zeros(len(obs.matches), bool)
            if len(obs.matches):  # matches to the previous frame of a track that is not revived, on a keypoint
                #                   that is not reviving one (a track id is carried by one keypoint only)
                current = obs.matches.indices[:, 1]
                verified = self._epipolar_verified(obs, T_odom_cam) & ~np.isin(current, revived[0]) \
                    & ~np.isin(obs.track_ids[current], revived[1])
            return _Estimate(TrackingState.TRACKING, "pnp", T_odom_cam, verified, refined.covariance,
                             int(inliers.sum()), keyframe=False, revived=revived, relocalized=True)
        return None

    def _relocalization_min_inliers(self) -> int:
        """``relocalization_min_inliers``, or half the map's landmarks for a map of fewer than twice that (a young
        monocular map holds a few dozen), never fewer than ``2 * min_landmarks``."""
        cfg = self.config
        return max(2 * cfg.min_landmarks, min(cfg.relocalization_min_inliers, len(self.map) // 2))

    # --- 5. commit ----------------------------------------------------------------------------------------------

    def _commit(self, obs: _Observed, estimate: _Estimate, stamp: float) -> tuple[TrackedKeypoints, float]:
        """Apply the estimate: tracks, keyframe, landmarks, bundle adjustment. All or nothing: the map is restored
        if any step raises. Returns the frame's tracks and the time spent on the map (ms)."""
        if estimate.T_odom_cam is None and estimate.state == TrackingState.INITIALIZING:
            self._last_stamp = stamp  # no map to start from this frame: nothing else changes but the count
            self._frame_index += 1
            return self._provisional_tracks(obs), 0.0
        if estimate.state == TrackingState.LOST:
            tracks = self._provisional_tracks(obs)  # (before any reset below restarts the ids)
            self._lost_in_a_row += 1
            self._lost_seeing += int(len(obs.features) >= self.config.min_landmarks)
            self.rest.lost()
            self._frame_index += 1
            self._last_stamp = stamp
            if self._lost_seeing >= self.config.max_lost_frames:
                self.reset(f"lost for {self._lost_in_a_row} frames")
            elif len(self.map.keyframes) <= self.config.young_map_keyframes \
                    and len(obs.features) >= self.config.init_min_landmarks:
                self.reset(f"lost with a young map ({len(self.map.keyframes)} keyframes)")
            return tracks, 0.0
        revived = estimate.revived
        if estimate.reattached is not None:
            rows, ids = estimate.reattached[:2]
            revived = (np.concatenate([revived[0], rows]), np.concatenate([revived[1], ids])) \
                if revived is not None else (rows, ids)
        tracks, next_id = self.tracker.assign(obs.features, obs.matches, estimate.verified, revived)
        anchors = self._anchored(obs, estimate)
        start = time.perf_counter()
        triangulating = self.map.initialized and estimate.state == TrackingState.TRACKING and obs.points_cam is None
        if estimate.keyframe or triangulating:
            snapshot = self.map.snapshot()
            try:
                if estimate.keyframe:
                    self._add_keyframe(obs, estimate, tracks, anchors, stamp)
                elif triangulating:  # tracks that now see their landmark under enough parallax become landmarks at once
                    self._triangulate(estimate.T_odom_cam, tracks.track_ids, obs.normalized, anchors, obs.camera.focal)
            except Exception:
                self.map.restore(snapshot)
                raise
        map_ms = (time.perf_counter() - start) * 1e3
        # nothing below can fail: the frame is committed
        if estimate.rejected is not None:
            self.map.reject(estimate.rejected)
        keyframe = self.map.last_keyframe
        if keyframe is not None:
            anchors.reference = (keyframe.index, estimate.T_odom_cam if estimate.keyframe else keyframe.T_odom_cam)
        self.tracker.commit(obs.features, tracks, next_id)
        self._previous, self._posed_frames = anchors, self._posed_frames + 1
        self.rest.commit(self.map, stamp, anchors.reference, estimate.rest_centre, estimate.rest_image,
                         estimate.T_odom_cam[:3, 3] if estimate.state == TrackingState.TRACKING else None,
                         tracks.track_ids, obs.features.keypoints)
        self._T_odom_last = estimate.T_odom_cam
        self._last_stamp = stamp
        self._frame_index += 1
        if estimate.relocalized:
            self.relocalizations += 1
        self._lost_in_a_row = self._lost_seeing = 0
        return tracks, map_ms

    def _map_moved(self, previous: _Previous) -> np.ndarray | None:
        """How bundle adjustment moved the map under ``previous`` since it was posed, as a transform D in its
        camera frame (its pose in the current map is T_odom_cam D), from the move of the keyframe it was posed
        against; None when that keyframe has left the map or did not move."""
        if previous.reference is None:
            return None
        index, T_then = previous.reference
        keyframe = self.map.keyframe(index)
        if keyframe is None or np.array_equal(keyframe.T_odom_cam, T_then):
            return None
        correction = keyframe.T_odom_cam @ invert(T_then)
        return invert(previous.T_odom_cam) @ correction @ previous.T_odom_cam

    def _anchored(self, obs: _Observed, estimate: _Estimate) -> _Previous:
        """This frame as the next previous frame: anchors carried along the verified matches (no state change)."""
        number = self._posed_frames + 1
        anchor_norm, anchor_frame = obs.normalized.copy(), np.full(len(obs.normalized), number)
        poses = {number: estimate.T_odom_cam}
        if estimate.new_landmarks is not None:
            # initialisation: the frames before it were posed rotation-only (their positions are unknown), so a
            # track is anchored where keyframe 0 saw it, or here
            keyframe = self.map.last_keyframe
            kept = obs.matches.indices[estimate.verified, 1]
            rows = keyframe.rows_of(obs.track_ids[kept])
            seen = rows >= 0
            anchor_norm[kept[seen]] = keyframe.normalized[rows[seen]]
            anchor_frame[kept[seen]] = -1
            poses[-1] = keyframe.T_odom_cam
        elif self._previous is not None and len(obs.matches):
            keep = obs.matches.indices[estimate.verified]
            anchor_norm[keep[:, 1]] = self._previous.anchor_norm[keep[:, 0]]
            anchor_frame[keep[:, 1]] = self._previous.anchor_frame[keep[:, 0]]
            for frame in np.unique(anchor_frame).tolist():
                poses.setdefault(frame, self._previous.anchor_poses.get(frame))
        if estimate.reattached is not None:  # anchored where the keyframe saw them (keys below -1: keyframes)
            rows, _, kf_rows, keyframe = estimate.reattached
            key = -2 - keyframe.index
            anchor_norm[rows], anchor_frame[rows] = keyframe.normalized[kf_rows], key
            poses[key] = keyframe.T_odom_cam
        return _Previous(obs.normalized, estimate.T_odom_cam, anchor_norm, anchor_frame, poses, estimate.covariance,
                         residuals=estimate.residuals)

    def _provisional_tracks(self, obs: _Observed) -> TrackedKeypoints:
        """Ids for the keypoints of a frame that is not committed (LOST, or no map to start): matched keypoints
        show their track, the others take spare ids (``Tracker.spare_ids``)."""
        ids = obs.track_ids.copy()
        unmatched = ids == NO_TRACK
        ids[unmatched] = self.tracker.spare_ids(int(unmatched.sum()))  # one id per keypoint, as on any frame
        ages = np.zeros(len(obs.features), np.uint32)
        ref_tracks = self.tracker.reference_tracks
        if ref_tracks is not None and len(obs.matches):
            ages[obs.matches.indices[:, 1]] = ref_tracks.track_ages[obs.matches.indices[:, 0]] + 1
        return TrackedKeypoints(ids, ages)

    def _add_keyframe(self, obs: _Observed, estimate: _Estimate, tracks: TrackedKeypoints, anchors: _Previous,
                      stamp: float) -> None:
        if estimate.restart_initialization:
            self.map.keyframes.clear()
        previous = self.map.last_keyframe
        keyframe = Keyframe(previous.index + 1 if previous else 0, stamp, estimate.T_odom_cam, tracks.track_ids,
                            obs.normalized, obs.points_cam, obs.features, image=obs.grey)
        self.map.add_keyframe(keyframe)
        if estimate.new_landmarks is not None:
            self.map.add_landmarks(*estimate.new_landmarks, metric=False)
        if obs.points_cam is not None:
            has_depth = np.isfinite(obs.points_cam[:, 0]) & self._still_since_previous(obs, keyframe.T_odom_cam)
            self.map.add_landmarks(tracks.track_ids[has_depth],
                                   transform_points(keyframe.T_odom_cam, obs.points_cam[has_depth]), metric=True)
        if self.map.initialized and len(self.map.keyframes) >= 2:
            self._triangulate(keyframe.T_odom_cam, keyframe.track_ids, keyframe.normalized, anchors, obs.camera.focal)
            self.mapper.run(self.map, obs.camera.focal, obs.depth_sigma_per_m2)
        keyframe.tracked_landmarks = estimate.num_landmarks or int(self.map.lookup(keyframe.track_ids)[1].sum())

    def _still_since_previous(self, obs: _Observed, T_odom_cam: np.ndarray) -> np.ndarray:
        """(N,) bool: False for the keypoints whose depth point, seen from the previous frame, lies farther than
        ``2 x reprojection_threshold_px`` (its depth's 3-sigma range along the ray allowed) from the keypoint it
        matched there: a point that moved between the two frames (someone walking past) or a wrong match. Such
        a point is no landmark: mapped, it would pull the next frames' poses with it. True for keypoints without
        depth or without a match in the previous frame."""
        still = np.ones(len(obs.normalized), bool)
        if self._previous is None or not len(obs.matches):
            return still
        prev_rows, rows = obs.matches.indices[:, 0], obs.matches.indices[:, 1]
        depth_ok = np.isfinite(obs.points_cam[rows, 0])
        prev_rows, rows = prev_rows[depth_ok], rows[depth_ok]
        T_prev_cam = invert(self._previous.T_odom_cam) @ T_odom_cam
        points = obs.points_cam[rows]
        spread = 3 * obs.depth_sigma_per_m2 * points[:, 2]  # 3 sigma_z / z
        a, b = (project(transform_points(T_prev_cam, points * factor[:, None]))  # the depth's range along the ray
                for factor in (np.maximum(1.0 - spread, 0.05), 1.0 + spread))
        ab = b - a
        seen = self._previous.normalized[prev_rows]
        t = np.clip(np.einsum("mi,mi->m", seen - a, ab) / np.maximum(np.einsum("mi,mi->m", ab, ab), 1e-18), 0, 1)
        distance_px = np.linalg.norm(a + t[:, None] * ab - seen, axis=1) * obs.camera.focal
        still[rows] = ~(distance_px > 2 * self.config.reprojection_threshold_px)  # (NaN, behind it: kept)
        return still

    def _triangulate(self, T_odom_cam: np.ndarray, track_ids: np.ndarray, normalized: np.ndarray, anchors: _Previous,
                     focal_px: float) -> None:
        """Landmarks for a posed frame's tracks that have none, between the frame that first saw the track and
        this one, where the rays meet at ``triangulation_min_angle_deg`` or more."""
        cfg = self.config
        _, has_landmark = self.map.lookup(track_ids)
        members = np.flatnonzero(~has_landmark)
        if not len(members):
            return
        threshold = cfg.reprojection_threshold_px / focal_px
        # all tracks at once, each with the pose of the frame that first saw it
        frames, which = np.unique(anchors.anchor_frame[members], return_inverse=True)
        T_odom_anchor = np.stack([anchors.anchor_poses[frame] for frame in frames.tolist()])[which.reshape(-1)]
        T_b_a = invert(T_odom_cam) @ T_odom_anchor  # (M,4,4)
        norm_a, norm_b = anchors.anchor_norm[members], normalized[members]
        wide = (np.linalg.norm(T_b_a[:, :3, 3], axis=1) >= 1e-12) & (rotation_compensated_parallax(
            norm_a, norm_b, T_b_a[:, :3, :3]) >= np.deg2rad(cfg.triangulation_min_angle_deg))
        members, norm_a, norm_b, T_b_a, T_odom_anchor = (x[wide] for x in (members, norm_a, norm_b, T_b_a,
                                                                             T_odom_anchor))
        points_a, valid = triangulate(norm_a, norm_b, T_b_a)
        points_a = np.nan_to_num(points_a)
        valid &= reprojection_errors(np.eye(4), points_a, norm_a) < threshold
        valid &= reprojection_errors(T_b_a, points_a, norm_b) < threshold
        self.map.add_landmarks(track_ids[members[valid]], transform_points(T_odom_anchor[valid], points_a[valid]),
                               metric=False)
