"""At rest: whether a frame's camera stands still (or turns on the spot), and where its centre is then held.

A camera standing still or turning on the spot should keep one position instead of adding its pose noise to the
path every frame (60 Hz runs with stops and turns: DEVELOPERS.md "At rest, monocular too"), and a monocular one
should not follow people walking past (DEVELOPERS.md "Moving objects"). ``RestDetector`` decides it, frame by
frame, from two tests (README "At rest"):

- the pose test: the frame's centre lies within its uncertainty of the centres of the last
  ``stationary_window_s`` of tracked frames (metric frames, RGB-D and stereo: or of its keyframe's centre);
- the image test (monocular): its keypoints moved by a median of less than ``stationary_image_px`` since the
  newest tracked frame at least ``stationary_window_s`` back.

Conventions: centres are camera centres in odom, in the map's unit. A point the detector keeps across frames (the
recent frames' centres, the point the camera is held at) is stored as (keyframe index, point in that keyframe's
camera frame, as the frame was posed against it), so that bundle adjustment's corrections of the keyframe move
it with the keyframe (``in_map``). The pipeline (``VisualOdometry``) owns the detector: ``centre_for`` only reads
its state while a frame is posed; ``commit`` and ``lost`` change it once the frame is committed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aliked_ros.geometry.multiview import transform_points
from aliked_ros.geometry.transforms import invert
from aliked_ros.odometry.map import NO_TRACK, Keyframe, LocalMap
from aliked_ros.odometry.optimizer import PoseRefinement, refine_pose
from aliked_ros.odometry.types import OdometryConfig

@dataclass(frozen=True)
class RecentFrame:
    """A tracked frame of the last 1.5 ``stationary_window_s``, for the rest tests."""

    stamp: float  # s
    keyframe_index: int  # the keyframe it was posed against
    centre: np.ndarray  # (3,) its camera centre in that keyframe's camera frame, as the frame was posed against it
    track_ids: np.ndarray  # (N,) of its keypoints
    keypoints: np.ndarray  # (N,2) px, as tracked (aligned to the keyframe when keyframe_alignment_px > 0)


def in_map(local_map: LocalMap, keyframe_index: int, point: np.ndarray) -> np.ndarray | None:
    """A point kept in a keyframe's camera frame, in odom with the keyframe's current pose; None when that
    keyframe has left the map."""
    keyframe = local_map.keyframe(keyframe_index)
    return keyframe.T_odom_cam[:3, :3] @ point + keyframe.T_odom_cam[:3, 3] if keyframe is not None else None


def median_shift_px(earlier: RecentFrame, track_ids: np.ndarray, keypoints: np.ndarray,
                    min_shared: int = 20) -> float | None:
    """Median image distance (px) a keypoint moved since ``earlier`` over the tracks both frames carry; None when
    they share fewer than ``min_shared``."""
    tracked = track_ids != NO_TRACK
    _, rows_then, rows_now = np.intersect1d(earlier.track_ids, track_ids[tracked], return_indices=True)
    if len(rows_then) < min_shared:
        return None
    moved = earlier.keypoints[rows_then] - keypoints[np.flatnonzero(tracked)[rows_now]]
    return float(np.median(np.linalg.norm(moved, axis=1)))


def pose_held_at(centre: np.ndarray, T_odom_cam: np.ndarray, refined: PoseRefinement, points_odom: np.ndarray,
                 normalized: np.ndarray, focal_px: float, threshold_px: float) -> tuple[np.ndarray, np.ndarray]:
    """The pose and covariance of a frame held at ``centre`` (odom; the camera at rest): the rotation
    re-estimated with the centre there (the jointly refined rotation carries the part of the translation's
    error it is correlated with, and kept beside a held centre it made the motion's NEES 10-100 on turns in
    place); the covariance's rotation block from that, its translation block the refinement's, no cross
    terms."""
    T_odom_cam = T_odom_cam.copy()
    T_odom_cam[:3, 3] = centre
    held = refine_pose(invert(T_odom_cam), points_odom, normalized, focal_px, threshold_px, hold_centre=True)
    if held.covariance is None:
        return T_odom_cam, refined.covariance
    T_odom_cam = invert(held.T_cam_odom)
    T_odom_cam[:3, 3] = centre  # exactly (the left rotation keeps it to rounding)
    covariance = held.covariance.copy()
    covariance[3:, 3:] = refined.covariance[3:, 3:]
    return T_odom_cam, covariance


class RestDetector:
    """The rest tests and their state: the recent tracked frames, the point the camera is held at, the frame
    whose image a monocular camera at rest still shows. One per map (``clear`` when a new map starts)."""

    def __init__(self, config: OdometryConfig) -> None:
        self.config = config
        self.clear()

    def clear(self) -> None:
        """A new map: nothing recent, not at rest."""
        self._recent_frames: list[RecentFrame] = []  # the tracked frames of the last 1.5 stationary_window_s,
        #                                              oldest first
        self._rest_point: tuple[int, np.ndarray] | None = None  # where the camera is held while at rest
        self._rest_image: RecentFrame | None = None  # the frame whose image a monocular camera at rest still shows
        self._image_rest_ended = -np.inf  # stamp of the frame that ended the last rest on an image

    def lost(self) -> None:
        """A LOST frame: the rest ends and the window starts over (at rest only where every frame says so)."""
        self._rest_point, self._rest_image, self._recent_frames = None, None, []

    def centre_for(self, local_map: LocalMap, refined: PoseRefinement, T_odom_cam: np.ndarray, keyframe: Keyframe,
                   metric: bool, stamp: float, track_ids: np.ndarray, keypoints: np.ndarray
                   ) -> tuple[np.ndarray | None, RecentFrame | None]:
        """Where to hold a frame (pose ``T_odom_cam`` from ``refined``, posed against ``keyframe``; ``metric``:
        RGB-D or stereo) that is at rest or turning on the spot, or None when it moves; and, when its image is why
        (monocular), the earlier frame whose image it still shows. Its pose first (``_centre_by_pose``). A
        monocular frame that its pose finds moving is at rest all the same when its image has not moved: the
        median distance its keypoints moved since the newest tracked frame at least ``stationary_window_s``
        back, over the tracks both carry, is below ``stationary_image_px``. It is then held at that frame's
        centre, and stays there while its keypoints stay within ``stationary_image_hold_px`` of where they were
        in that frame; after that the pose test decides, and the next rest on an image starts from a frame after
        this one (a camera creeping slower than the bound moves by steps of at most that hold bound, instead of
        being held at one place). For landmarks on people walking past, which drag a monocular pose while the
        camera stands: the static scene keeps the image's median still, and the walkers never let the pose test
        start a rest. The values the median takes at rest and moving: README "At rest"."""
        cfg = self.config
        centre = self._centre_by_pose(local_map, refined, T_odom_cam, keyframe, metric, stamp)
        if metric or cfg.stationary_image_px <= 0:
            return centre, None
        held = in_map(local_map, *self._rest_point) if self._rest_point is not None else None
        if self._rest_image is not None and held is not None:
            shift = median_shift_px(self._rest_image, track_ids, keypoints)
            if shift is not None and shift < cfg.stationary_image_hold_px:
                return (held if centre is None else centre), self._rest_image
            return centre, None  # the image moved on: the pose test decides (commit marks the end)
        if centre is not None:
            return centre, None
        earlier = next((frame for frame in reversed(self._recent_frames)
                        if stamp - frame.stamp >= cfg.stationary_window_s - 1e-3), None)  # the newest such
        if earlier is None or earlier.stamp < self._image_rest_ended:
            return None, None
        shift = median_shift_px(earlier, track_ids, keypoints)
        if shift is None or shift >= cfg.stationary_image_px:
            return None, None
        start = in_map(local_map, earlier.keyframe_index, earlier.centre)
        return (start, earlier) if start is not None else (None, None)

    def _centre_by_pose(self, local_map: LocalMap, refined: PoseRefinement, T_odom_cam: np.ndarray,
                        keyframe: Keyframe, metric: bool, stamp: float) -> np.ndarray | None:
        """The pose test of ``centre_for``: where to hold the frame, or None when it moves. A frame's camera
        centre "is at" a point when their difference is within the frame's uncertainty: its Mahalanobis distance
        (squared) under the refinement's translation covariance is below ``stationary_chi2`` (99 % of 3 dof). The
        camera comes to rest when the frame is at the centre of every tracked frame of the last
        ``stationary_window_s`` (it has not moved by more than its noise for that long; held at the mean of those
        centres and its own), or, metric frames (RGB-D, stereo), at its keyframe's centre; it stays at rest while
        each frame is within ``stationary_release_chi2`` of that point. A moving camera leaves the test within a
        few frames, posed against the map as always (nothing is lost, only delayed). The window is long enough
        that a slow camera moves by more than its noise in it: 2 cm/s for 0.2 s is 4 mm, 2.5-4 times the noise of
        a monocular pose at 4 m in the synthetic runs (a camera creeping slower moves by steps of about
        sqrt(``stationary_release_chi2``) sigma). The window counts only when frames cover it (its oldest at
        least 3/4 of it back, no gap over half of it)."""
        cfg = self.config
        if cfg.stationary_chi2 <= 0 or refined.covariance is None:
            return None
        try:
            information = np.linalg.inv(refined.covariance[3:, 3:])
        except np.linalg.LinAlgError:
            return None

        def at(centres: np.ndarray, bound: float = cfg.stationary_chi2) -> np.ndarray:
            offsets = transform_points(refined.T_cam_odom, centres.reshape(-1, 3))  # 0 where the centres coincide
            return np.einsum("ij,jk,ik->i", offsets, information, offsets) < bound

        rest_centre = in_map(local_map, *self._rest_point) if self._rest_point is not None else None
        if rest_centre is not None and at(rest_centre, cfg.stationary_release_chi2)[0]:
            return rest_centre
        if metric and at(keyframe.T_odom_cam[:3, 3])[0]:
            return keyframe.T_odom_cam[:3, 3].copy()
        if cfg.stationary_window_s <= 0:
            return None
        recent = [(frame.stamp, in_map(local_map, frame.keyframe_index, frame.centre))
                  for frame in self._recent_frames if stamp - frame.stamp <= cfg.stationary_window_s + 1e-3]
        recent = [(s, c) for s, c in recent if c is not None]  # not those whose keyframe has left the map
        stamps = np.array([s for s, _ in recent] + [stamp])
        if len(recent) < 2 or stamp - stamps[0] < 0.75 * cfg.stationary_window_s \
                or np.diff(stamps).max() > 0.5 * cfg.stationary_window_s:
            return None  # the window is not covered by tracked frames (the map just started, or frames lost)
        centres = np.array([c for _, c in recent])
        if not at(centres).all():
            return None
        return np.vstack([centres, T_odom_cam[:3, 3]]).mean(axis=0)

    def commit(self, local_map: LocalMap, stamp: float, reference: tuple[int, np.ndarray] | None,
               rest_centre: np.ndarray | None, rest_image: RecentFrame | None, tracked_centre: np.ndarray | None,
               track_ids: np.ndarray, keypoints: np.ndarray) -> None:
        """A posed frame is committed: ``rest_centre`` and ``rest_image`` as ``centre_for`` gave them for it,
        ``reference`` (keyframe index, T_odom_cam of that keyframe as the frame was posed against it; None before
        any keyframe), ``tracked_centre`` (odom) its centre when it was tracked (None for a rotation-only frame,
        whose centre is not measured), its keypoints' track ids and positions (px)."""
        index, T_odom_reference = reference if reference is not None else (-1, np.eye(4))
        T_reference_odom = invert(T_odom_reference)

        def relative(centre: np.ndarray) -> np.ndarray:
            return T_reference_odom[:3, :3] @ centre + T_reference_odom[:3, 3]

        held_on = self._rest_point is not None and rest_centre is not None \
            and np.array_equal(rest_centre, in_map(local_map, *self._rest_point))
        if not held_on:  # (a point held on is kept as it is, not moved by the round trip's rounding)
            self._rest_point = (index, relative(rest_centre)) if rest_centre is not None else None
        rest_image = rest_image if rest_centre is not None else None
        if self._rest_image is not None and rest_image is None:
            self._image_rest_ended = stamp
        self._rest_image = rest_image
        window = self.config.stationary_window_s
        self._recent_frames = [frame for frame in self._recent_frames if stamp - frame.stamp <= 1.5 * window]
        if tracked_centre is not None:
            self._recent_frames.append(RecentFrame(stamp, index, relative(tracked_centre), track_ids, keypoints))
