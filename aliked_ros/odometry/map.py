"""The local map: a bounded window of keyframes and the landmarks they observe.

Landmarks are identified by the id of the feature track that observes them (``aliked_ros.tracking``): a
keyframe observes landmark ``i`` when one of its keypoints carries track id ``i``. Positions are in the odom
frame, in the map's unit (metres with depth). Only keyframes store observations, so memory is bounded by
``max_keyframes`` x keypoints per frame, whatever the run's length. The map owns its keyframes and landmarks;
the pipeline changes them only in ``VisualOdometry._commit`` (one place, after everything that can fail).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aliked_ros.features import Features
from aliked_ros.geometry.transforms import invert

NO_TRACK = np.iinfo(np.uint64).max  # the provisional track id of a keypoint that continues no track


@dataclass
class Keyframe:
    index: int  # keyframe number within its map, increasing
    stamp: float
    T_odom_cam: np.ndarray  # refined by bundle adjustment
    track_ids: np.ndarray  # (N,) uint64, aligned with features
    normalized: np.ndarray  # (N,2)
    points_cam: np.ndarray | None  # (N,3) depth-backed points in this camera frame, NaN where unknown
    features: Features  # descriptors, for relocalisation
    image: np.ndarray | None = None  # grey (H,W) uint8, that later frames align its tracks with (None: not kept)
    tracked_landmarks: int = 0  # landmarks the frame tracked when it became a keyframe (all it had, for the first)

    @property
    def T_cam_odom(self) -> np.ndarray:
        return invert(self.T_odom_cam)

    def __post_init__(self) -> None:
        self._order = np.argsort(self.track_ids)  # track ids never change: sorted once, looked up every frame
        self._sorted_ids = self.track_ids[self._order]

    def rows_of(self, track_ids: np.ndarray) -> np.ndarray:
        """Row of each track id in this keyframe, -1 where it does not observe it."""
        order, sorted_ids = self._order, self._sorted_ids
        pos = np.clip(np.searchsorted(sorted_ids, track_ids), 0, max(len(sorted_ids) - 1, 0))
        found = (sorted_ids[pos] == track_ids) if len(sorted_ids) else np.zeros(len(track_ids), bool)
        return np.where(found, order[pos] if len(sorted_ids) else -1, -1)


class LocalMap:
    """Keyframes (oldest first) and landmarks (track id -> position, and whether depth measured it)."""

    def __init__(self, map_id: int, max_keyframes: int) -> None:
        self.map_id = map_id
        self.max_keyframes = max_keyframes
        self.keyframes: list[Keyframe] = []
        self._ids = np.zeros(0, np.uint64)  # sorted landmark ids
        self._positions = np.zeros((0, 3))
        self._metric = np.zeros(0, bool)
        self._rejected = np.zeros(0, bool)  # an outlier of a frame's pose refinement once: never searched for

    # --- landmarks --------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def initialized(self) -> bool:
        return len(self._ids) > 0

    def lookup(self, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions (N,3) with NaN rows where there is no landmark, found mask (N,))."""
        track_ids = np.asarray(track_ids, np.uint64)
        if not len(self._ids) or not len(track_ids):
            return np.full((len(track_ids), 3), np.nan), np.zeros(len(track_ids), bool)
        pos = np.clip(np.searchsorted(self._ids, track_ids), 0, len(self._ids) - 1)
        found = self._ids[pos] == track_ids
        positions = np.where(found[:, None], self._positions[pos], np.nan)
        return positions, found

    def landmarks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, positions, metric) — copies."""
        return self._ids.copy(), self._positions.copy(), self._metric.copy()

    def add_landmarks(self, track_ids: np.ndarray, positions: np.ndarray, metric: bool) -> None:
        """Add landmarks for ids that have none (existing ids keep theirs)."""
        _, found = self.lookup(track_ids)
        new = ~found & np.isfinite(positions).all(axis=1)
        if not new.any():
            return
        ids = np.concatenate([self._ids, np.asarray(track_ids, np.uint64)[new]])
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._positions = np.concatenate([self._positions, positions[new]])[order]
        self._metric = np.concatenate([self._metric, np.full(int(new.sum()), metric)])[order]
        self._rejected = np.concatenate([self._rejected, np.zeros(int(new.sum()), bool)])[order]

    def set_positions(self, track_ids: np.ndarray, positions: np.ndarray) -> None:
        pos = np.searchsorted(self._ids, track_ids)
        ok = (pos < len(self._ids))
        ok[ok] &= self._ids[pos[ok]] == track_ids[ok]
        self._positions[pos[ok]] = positions[ok]

    def remove_landmarks(self, track_ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, track_ids)
        self._ids, self._positions, self._metric = self._ids[keep], self._positions[keep], self._metric[keep]
        self._rejected = self._rejected[keep]

    def reject(self, track_ids: np.ndarray) -> None:
        """Mark landmarks that a frame's pose refinement found inconsistent (outliers): they stay in the map
        (bundle adjustment judges them on the keyframes' observations) but are not searched for again."""
        pos = np.clip(np.searchsorted(self._ids, track_ids), 0, max(len(self._ids) - 1, 0))
        if len(self._ids):
            self._rejected[pos[self._ids[pos] == track_ids]] = True

    def searchable(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, positions) of the landmarks no frame has rejected — copies."""
        keep = ~self._rejected
        return self._ids[keep], self._positions[keep]

    def descriptors_of(self, track_ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Each track's descriptor in the newest keyframe that observes it, and how many keyframes observe it:
        (descriptors (N,D), counts (N,)); descriptors None when no keyframe observes any."""
        observed_by = np.zeros(len(track_ids), int)
        descriptors = None
        for keyframe in reversed(self.keyframes):
            rows = keyframe.rows_of(track_ids)
            hit = rows >= 0
            newest = np.flatnonzero(hit & (observed_by == 0))
            if len(newest):
                source = keyframe.features.descriptors
                if descriptors is None:
                    descriptors = np.zeros((len(track_ids),) + source.shape[1:], source.dtype)
                descriptors[newest] = source[rows[newest]]
            observed_by += hit
        return descriptors, observed_by

    # --- keyframes --------------------------------------------------------------------------------------------

    def add_keyframe(self, keyframe: Keyframe) -> None:
        """Append a keyframe; drop the oldest beyond ``max_keyframes`` and the landmarks no keyframe observes."""
        self.keyframes.append(keyframe)
        if len(self.keyframes) > self.max_keyframes:
            del self.keyframes[: len(self.keyframes) - self.max_keyframes]
            observed = np.unique(np.concatenate([kf.track_ids for kf in self.keyframes]))
            self.remove_landmarks(self._ids[~np.isin(self._ids, observed)])

    @property
    def last_keyframe(self) -> Keyframe | None:
        return self.keyframes[-1] if self.keyframes else None

    def keyframe(self, index: int) -> Keyframe | None:
        """The keyframe numbered ``index`` (``Keyframe.index``), None when it has left the window."""
        for keyframe in reversed(self.keyframes):
            if keyframe.index == index:
                return keyframe
        return None

    def first_observation(self, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each track id, the oldest keyframe (index into ``keyframes``) that observes it and the row there;
        (-1, -1) where none does."""
        kf_of = np.full(len(track_ids), -1)
        row_of = np.full(len(track_ids), -1)
        for k, keyframe in enumerate(self.keyframes):
            open_ = kf_of < 0
            if not open_.any():
                break
            rows = keyframe.rows_of(track_ids[open_])
            hit = rows >= 0
            idx = np.flatnonzero(open_)[hit]
            kf_of[idx], row_of[idx] = k, rows[hit]
        return kf_of, row_of

    # --- all-or-nothing updates -------------------------------------------------------------------------------

    def snapshot(self) -> tuple:
        """Everything a keyframe commit may change, to ``restore`` if it fails."""
        return (list(self.keyframes), [kf.T_odom_cam.copy() for kf in self.keyframes], self._ids.copy(),
                self._positions.copy(), self._metric.copy(), self._rejected.copy())

    def restore(self, snapshot: tuple) -> None:
        keyframes, poses, self._ids, self._positions, self._metric, self._rejected = snapshot
        self.keyframes = keyframes
        for keyframe, pose in zip(keyframes, poses):
            keyframe.T_odom_cam = pose
