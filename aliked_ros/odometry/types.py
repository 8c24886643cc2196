"""Inputs, outputs, states, errors and configuration of the VO pipeline.

Frames: ``T_odom_camera`` is the pose of the camera optical frame (REP 103) in the odometry frame, which is the
optical frame of the first frame (z forward). Monocular poses are in the unit of their map (``map_id``): each
map's unit is the median scene depth seen at its initialisation; RGB-D and stereo poses are metric (metres).
Stereo frames are posed in the rectified left camera's optical frame (``aliked_ros.geometry.stereo``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from aliked_ros.errors import AlikedRosError
from aliked_ros.features import Features
from aliked_ros.geometry.camera import CameraModel
from aliked_ros.geometry.stereo import StereoCamera
from aliked_ros.tracking import TrackerConfig


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


class StereoFrameError(FrameError):
    """A stereo frame the pipeline cannot take: left and right images of different sizes, a right image without
    its stereo camera (or the other way round), or no right image where ``OdometryConfig.require_stereo`` asks
    for one (the right stream stopped, or a left image found no right one): refused, never posed monocular
    inside a metric map."""


KEYFRAME_REATTACH = {"auto": None, "always": True, "never": False}  # OdometryConfig.keyframe_reattach by name
#   (CLI, node; not on / off, which YAML and ROS parameter parsing read as booleans)


@dataclass(frozen=True)
class OdometryConfig:
    """Thresholds in pixels are converted to normalised units with the camera's focal length."""

    # frame tracking
    ransac_threshold_px: float = 1.0  # epipolar error bound for essential-matrix inliers (and the median
    #                                   residual within which one rotation explains an initial pair: no map)
    reprojection_threshold_px: float = 2.0  # landmark reprojection error bound (PnP, motion-only refinement)
    min_inliers: int = 15  # correspondences needed for any pose
    min_inlier_fraction: float = 0.25  # ... and this fraction of the matches an essential matrix is fitted to
    #                                    (and of its landmarks a refinement from the previous pose keeps, else
    #                                    PnP-RANSAC is tried: frames with depth on fast turns)
    min_parallax_px: float = 1.0  # median rotation-compensated parallax (keyframe -> frame) below which the
    #                               essential matrix gives no translation direction
    keyframe_alignment_px: float = 0.0  # > 0: a keypoint of a track the last keyframe saw moves to where the
    #                                     keyframe's patch aligns (Lucas-Kanade) when that is within this many px
    #                                     (1.5 measured); off by default: it steadies synthetic frames, not the
    #                                     real ones measured (README "Keyframe alignment")
    keyframe_alignment_window_px: int = 9  # ... the patch's side (px, odd, >= 3)
    min_landmarks: int = 12  # landmark observations needed to pose a frame against the map
    landmark_search_radius_px: float = 4.0  # a posed frame looks for the map's untracked landmarks within this
    #                                         distance of their projection (0: off); see VisualOdometry
    landmark_search_min_similarity: float = 0.85  # ... the keypoint's descriptor this similar (float: cosine)
    landmark_search_min_similarity_binary: float = 0.80  # ... (binary: 1 - Hamming / bits; ORB-SLAM's 50 of 256)
    landmark_search_ratio: float = 0.8  # ... and clearly closer than the other candidate (descriptor distance);
    #                                     the same two tests for keyframe 0's direct matches at initialisation
    landmark_search_min_keyframes_depth: int = 3  # with depth: only landmarks that this many keyframes observe
    epipolar_min_parallax_px: float = 5.0  # below this parallax to the keyframe, its epipolar constraints are
    #                                        noise (any direction fits): the landmarks alone pose the frame
    keyframe_reattach: bool | None = None  # monocular: a frame's unmatched keypoints take up the last keyframe's
    #                                        ended tracks (``VisualOdometry._reattach_to_keyframe``); None: the
    #                                        extractor's ``short_tracks`` (ORB, SIFT on; ALIKED off: measured)
    keyframe_reattach_radius_px: float = 40.0  # ... within this distance of the keyframe's keypoint (rotation
    #                                            compensated)
    # monocular initialisation: the first keyframe and a later frame with enough parallax
    init_parallax_px: float = 8.0
    init_min_landmarks: int = 50
    init_min_angle_deg: float = 1.0  # rays of an initial landmark meet at this angle or more
    triangulation_min_angle_deg: float = 2.0  # ... of a landmark added later
    stationary_chi2: float = 11.3  # a camera comes to rest (its centre held there, only its rotation estimated)
    #                                when its centre is within this Mahalanobis distance (squared, 3 dof: 11.3 =
    #                                99 %) of those of every tracked frame of the last stationary_window_s s, or
    #                                (metric frames) of its keyframe's (odometry/rest.py); 0: off
    stationary_window_s: float = 0.2  # 0: only the keyframe test (metric frames)
    stationary_release_chi2: float = 45.0  # ... and moves on when beyond this distance from where it rests (4x
    #                                        the entry bound: on turns on the spot the map's error, which the
    #                                        pose covariance leaves out, moves the centre past the entry bound)
    stationary_image_px: float = 0.25  # monocular: a frame is at rest too when its keypoints moved by less than
    #                                    this (median over the tracks it shares with the tracked frame
    #                                    stationary_window_s back), whatever its pose says; 0: off
    stationary_image_hold_px: float = 1.0  # ... and stays at rest while they stay within this of where they were
    # keyframes
    keyframe_parallax_px: float = 20.0  # median parallax to the last keyframe that makes a new keyframe
    keyframe_min_tracked: float = 0.6  # new keyframe when fewer than this fraction of its landmarks are tracked
    keyframe_min_parallax_px: float = 4.0  # ... and the parallax is at least this (monocular: to triangulate)
    keyframe_max_rotation_deg: float = 20.0  # new keyframe after this much rotation (RGB-D)
    keyframe_min_depth_landmarks: int = 200  # with depth: new keyframe when fewer landmarks are tracked ...
    keyframe_unmapped_depth_points: int = 70  # ... and more keypoints than this have depth but no landmark
    max_keyframes: int = 12  # keyframes kept (relocalisation, landmark lifetime): bounds the memory
    # local bundle adjustment
    ba_window: int = 6  # keyframes optimised on each new keyframe
    ba_max_iterations: int = 15
    ba_huber_px: float = 1.5
    ba_solver: str = "auto"  # "auto" (= "lm"), "lm", "gtsam" or "scipy" (see aliked_ros.odometry.optimizer)
    ba_single_view_prior: float = 0.2  # monocular: the landmarks only the newest keyframe observes join its bundle
    #                                    adjustment with a Gaussian prior at their position, this fraction of their
    #                                    depth along their ray (0: left out; see LocalMapper). No effect on metric
    #                                    (RGB-D, stereo) maps
    ba_single_view_prior_across_px: float = 5.0  # ... and this many px across it
    background_mapping: bool = False  # bundle adjustment in a worker thread (the node) or inline (offline)
    # lost tracking
    max_lost_frames: int = 15  # LOST frames in a row with features (relocalisation tried and failed) before a
    #                            new map; black frames and frames of noise (fewer than min_landmarks keypoints)
    #                            do not count: a covered camera keeps its map
    young_map_keyframes: int = 5  # a map of this many keyframes or fewer starts over at its first LOST frame
    #                               that has features to start one on (ORB-SLAM's "track lost soon after
    #                               initialisation"): a first keyframe on a frame the camera never sees again
    #                               must not hold tracking for max_lost_frames; a black frame keeps the map
    relocalization_keyframes: int = 3  # newest keyframes tried for relocalisation
    relocalization_min_inliers: int = 50  # landmark inliers a relocalised pose needs, after the search by
    #                                       projection (ORB-SLAM's 50; half the map's landmarks in a map of
    #                                       fewer than twice as many, never fewer than 2 x min_landmarks)
    # depth (RGB-D)
    depth_min_m: float = 0.1
    depth_max_m: float = 10.0
    depth_max_edge: float = 0.05  # reject depth where the 3x3 neighbourhood varies more than this fraction
    depth_sigma_per_m2: float = 0.005  # depth noise sigma = this x z^2 (structured light), for bundle adjustment
    rolling_shutter_readout_s: float = 0.0  # RGB-D: the colour camera's rows are read out over this long (s, top
    #                                         to bottom, stamp = centre row; 0 = global shutter); each frame's
    #                                         velocities are estimated with its pose and its keypoints moved to
    #                                         the stamp (aliked_ros.geometry.rolling_shutter; VisualOdometry)
    rolling_shutter_omega_sigma: float = 0.3  # rad/s: prior on the angular velocity (the frame-to-frame one)
    rolling_shutter_velocity_sigma: float = 0.3  # m/s: prior on the linear velocity (the frame-to-frame one)
    # stereo (rectified pairs; see aliked_ros.geometry.stereo)
    stereo_row_band_px: float = 2.0  # a left-right match lies within this many rows
    stereo_min_disparity_px: float = 1.0  # and has a disparity in [min, max] px (depth fx B / d)
    stereo_max_disparity_px: float = 256.0
    stereo_subpixel: bool = True  # refine each match's disparity by patch comparison along its row
    stereo_disparity_sigma_px: float = 0.5  # depth noise sigma = z^2 sigma_d / (fx B), for bundle adjustment
    require_stereo: bool = False  # every frame must be a stereo frame (else StereoFrameError): set for stereo
    #                               input, so that a missing right image is refused, never posed monocular
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def landmark_min_similarity(self, binary: bool) -> float:
        """The landmark search's descriptor similarity bound for binary or float descriptors."""
        return self.landmark_search_min_similarity_binary if binary else self.landmark_search_min_similarity


@dataclass(frozen=True)
class Frame:
    """One camera frame. ``stamp`` in seconds; ``depth`` in metres (float32), registered to the image and of
    the same size, NaN or 0 where invalid. Stereo: ``image`` is the rectified left image (the one tracked and
    posed), ``right_image`` the rectified right one of the same size and stamp, ``stereo`` the pair's
    calibration, whose ``left`` is ``camera``; a frame carries depth or a right image, not both."""

    image: np.ndarray
    stamp: float
    camera: CameraModel
    depth: np.ndarray | None = None
    right_image: np.ndarray | None = None
    stereo: StereoCamera | None = None


@dataclass(frozen=True)
class FrameResult:
    stamp: float
    frame_index: int  # frames processed since the last reset
    state: TrackingState
    pose_source: str  # "essential", "pnp", "rotation_only", "none" (see VisualOdometry)
    is_keyframe: bool
    T_odom_camera: np.ndarray | None  # None when the frame got no pose (LOST)
    motion: np.ndarray | None  # T_prev_cur: this frame's pose in the previous posed frame (None when LOST)
    features: Features
    normalized: np.ndarray  # (N,2) undistorted normalised coordinates
    track_ids: np.ndarray  # (N,) uint64, unique; on frames not committed (LOST, or no map to start) a matched
    #                        keypoint shows its track's id, the others ids that no track takes
    track_ages: np.ndarray  # (N,) uint32
    inliers: np.ndarray  # (N,) bool: keypoint's match is an inlier of this frame's motion
    num_matches: int
    num_inliers: int
    timings_ms: dict[str, float]
    covariance: np.ndarray | None = None  # 6x6 of the pose against the map (see VisualOdometry), None = unknown
    motion_covariance: np.ndarray | None = None  # 6x6 of ``motion`` (see VisualOdometry), None = unknown
    reset_reason: str | None = None
    map_id: int = 0  # grows by one at every reset; monocular scale is per map
    relocalized: bool = False  # tracking recovered against a keyframe of the same map after LOST frames
    num_landmarks: int = 0  # keypoints observing a landmark of the map (inliers)
    stereo_matches: int = 0  # keypoints with a right-image match (stereo depth); 0 for other frames

    @property
    def num_tracks(self) -> int:
        """Keypoints continuing a track from an earlier frame."""
        return int(np.count_nonzero(self.track_ages))
