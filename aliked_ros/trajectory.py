"""Trajectories (stamped poses T_world_camera) and the TUM text format: ``timestamp tx ty tz qx qy qz qw``."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aliked_ros.errors import AlikedRosError
from aliked_ros.geometry.transforms import from_tum, to_tum


class TrajectoryError(AlikedRosError):
    """A trajectory file that cannot be read."""


@dataclass(frozen=True)
class Trajectory:
    stamps: np.ndarray  # (N,) seconds, increasing
    poses: np.ndarray  # (N,4,4) T_world_camera

    def __len__(self) -> int:
        return len(self.stamps)

    def nearest(self, stamps: np.ndarray, max_difference: float) -> np.ndarray:
        """Index of the nearest pose for each stamp, -1 where none is within ``max_difference`` s."""
        if len(self.stamps) == 0:
            return np.full(len(stamps), -1)
        pos = np.clip(np.searchsorted(self.stamps, stamps), 1, len(self.stamps) - 1) if len(self.stamps) > 1 else np.zeros(len(stamps), int)
        left = np.maximum(pos - 1, 0)
        choose = np.where(np.abs(self.stamps[left] - stamps) <= np.abs(self.stamps[pos] - stamps), left, pos)
        return np.where(np.abs(self.stamps[choose] - stamps) <= max_difference, choose, -1)

    def interpolate(self, stamps: np.ndarray, max_difference: float) -> np.ndarray:
        """Poses (M,4,4) at ``stamps``: positions linear, rotations by slerp between the poses just before and
        just after; a stamp equal to a pose's takes it. NaN where a stamp is not bracketed by poses at most
        ``max_difference`` s away on each side."""
        from scipy.spatial.transform import Rotation, Slerp

        stamps = np.asarray(stamps, float)
        out = np.full((len(stamps), 4, 4), np.nan)
        if len(self.stamps) == 0:
            return out
        after = np.clip(np.searchsorted(self.stamps, stamps), 0, len(self.stamps) - 1)
        before = np.clip(np.searchsorted(self.stamps, stamps, side="right") - 1, 0, len(self.stamps) - 1)
        for k, (i, j, t) in enumerate(zip(before, after, stamps)):
            t0, t1 = self.stamps[i], self.stamps[j]
            if not (t0 <= t <= t1) or t - t0 > max_difference or t1 - t > max_difference:
                continue
            if j == i or t1 == t0:
                out[k] = self.poses[i]
                continue
            a = (t - t0) / (t1 - t0)
            out[k] = np.eye(4)
            out[k, :3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(self.poses[[i, j], :3, :3]))(a).as_matrix()
            out[k, :3, 3] = (1 - a) * self.poses[i, :3, 3] + a * self.poses[j, :3, 3]
        return out


def read_tum(path: str | Path) -> Trajectory:
    try:
        rows = np.loadtxt(path, comments="#", ndmin=2, delimiter=None, dtype=float)
    except (OSError, ValueError) as error:
        raise TrajectoryError(f"cannot read TUM trajectory {path}: {error}") from None
    if rows.size and rows.shape[1] != 8:
        raise TrajectoryError(f"{path}: TUM rows need 8 columns (timestamp tx ty tz qx qy qz qw), got {rows.shape[1]}")
    rows = rows[np.argsort(rows[:, 0], kind="stable")] if rows.size else np.zeros((0, 8))
    unusable = ~np.isfinite(rows).all(axis=1) | (np.linalg.norm(rows[:, 4:8], axis=1) < 1e-9)
    if unusable.any():  # NaN or inf (a tracker's "lost", a gap in motion capture), or a zero quaternion: no pose
        first = int(np.flatnonzero(unusable)[0])
        warnings.warn(f"{path}: {int(unusable.sum())} of {len(rows)} rows have no pose (NaN / inf or a zero quaternion; "
                      f"the first at {rows[first, 0]!r} s): left out", stacklevel=2)
        rows = rows[~unusable]
    return Trajectory(rows[:, 0], np.array([from_tum(r[1:]) for r in rows]).reshape(-1, 4, 4))


def write_tum(path: str | Path, trajectory: Trajectory) -> None:
    lines = ["# timestamp tx ty tz qx qy qz qw  (pose of the camera optical frame in the world/odom frame; aliked_ros)"]
    for stamp, pose in zip(trajectory.stamps, trajectory.poses):
        lines.append(f"{stamp:.6f} " + " ".join(f"{v:.9f}" for v in to_tum(pose)))
    Path(path).write_text("\n".join(lines) + "\n")
