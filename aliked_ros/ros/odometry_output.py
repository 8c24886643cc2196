"""What the node publishes as odometry of the robot base, from the core's camera results (ROS-free).

Poses: the core gives T_camodom_cam (camera optical frame in the optical frame of the first frame); the node
publishes T_odom_base = T_base_cam * C * T_camodom_cam * inv(T_base_cam), where T_base_cam is ``camera_mount``
and C is identity until ``reset_to_pose`` sets it so that the new map's poses continue from the requested pose.

Covariances (``nav_msgs/Odometry``, ROS order x y z roll pitch yaw = translation then rotation):
  - pose.covariance: the core's 6x6 of the camera pose against its map (``FrameResult.covariance``; rotation
    vector then translation, a right perturbation in the camera frame) moved to the base through the mount
    (Ad(T_base_cam)) and expressed along the axes of ``odom_frame`` (the header's frame; the rotation block
    is small angles about the odom axes).
  - twist.covariance: the covariance of the frame-to-frame motion (``FrameResult.motion_covariance``, the
    core's pose covariance of this frame plus the previous posed frame's moved into this frame, times the part
    of their error that the two frames do not share) moved to the
    base the same way, propagated to first order through twist = (translation of the motion in the body
    frame, its rotation vector) / dt; expressed in ``base_frame`` (the child frame), as the twist itself.
  - Unknown (the core gives None: initialisation, a frame whose pose is not refined, the first frame of a map,
    no previous frame for the twist; or a non-finite matrix): the diagonal is ``UNKNOWN_VARIANCE`` (1e6 m^2
    and rad^2: an EKF gives such a measurement no weight), never -1 and never small.
  - After a reset (any cause, incl. the reset services), a relocalisation, or the first pose after LOST frames,
    both covariances are multiplied by a factor that starts at ``recovery_factor`` and falls geometrically to
    1 over ``recovery_frames`` posed frames: factor_i = recovery_factor ** (1 - i / recovery_frames),
    i = 0 .. recovery_frames (defaults 100 and 10: 100, 63, 40, ..., 1.6, 1). The factor is never below 1,
    so no published covariance is smaller than what the core gives.
  - Units: RGB-D in metres; monocular in the unit of the current map (``map_id``), the median scene depth at its
    initialisation, so translation variances are in (map unit)^2 and change meaning when ``map_id`` changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aliked_ros.geometry.transforms import invert
from aliked_ros.ros.frames import base_odometry, camera_from_base_odometry, twist

UNKNOWN_VARIANCE = 1.0e6
UNKNOWN_COVARIANCE = np.diag(np.full(6, UNKNOWN_VARIANCE))
# (rotation, translation) -> ROS (translation, rotation)
_ROS_ORDER = np.block([[np.zeros((3, 3)), np.eye(3)], [np.eye(3), np.zeros((3, 3))]])


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def adjoint(T: np.ndarray) -> np.ndarray:
    """Ad_T for xi = (rotation vector, translation): T exp(xi) inv(T) = exp(Ad_T xi) to first order."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.zeros((6, 6))
    out[:3, :3] = out[3:, 3:] = R
    out[3:, :3] = skew(t) @ R
    return out


def usable(covariance: np.ndarray | None) -> bool:
    return covariance is not None and np.shape(covariance) == (6, 6) and bool(np.all(np.isfinite(covariance)))


def pose_covariance(cov_cam: np.ndarray | None, T_odom_base: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """ROS-ordered 6x6 of the base pose along the odom axes, from the core's camera-frame covariance."""
    if not usable(cov_cam):
        return UNKNOWN_COVARIANCE.copy()
    R = T_odom_base[:3, :3]
    J = _ROS_ORDER @ np.kron(np.eye(2), R) @ adjoint(T_base_cam)
    out = J @ cov_cam @ J.T
    return 0.5 * (out + out.T)


def twist_covariance(motion_cov_cam: np.ndarray | None, motion_base: np.ndarray, T_base_cam: np.ndarray,
                     dt: float) -> np.ndarray:
    """ROS-ordered 6x6 of (linear, angular) velocity in the base frame from the core's motion covariance."""
    if not usable(motion_cov_cam) or dt <= 0:
        return UNKNOWN_COVARIANCE.copy()
    u = motion_base[:3, :3].T @ motion_base[:3, 3]  # the step in the current body frame (linear * dt)
    # d(linear * dt) = v + [u]x w, d(angular * dt) = w, for the right perturbation (w, v) of the motion
    J_step = np.block([[skew(u), np.eye(3)], [np.eye(3), np.zeros((3, 3))]])
    J = J_step @ adjoint(T_base_cam) / dt
    out = J @ motion_cov_cam @ J.T
    return 0.5 * (out + out.T)


@dataclass(frozen=True)
class BaseOdometry:
    """One odometry message's content. ``null``: the "lost" message (last pose held, zero twist, both
    covariances unknown)."""

    stamp_ns: int
    T_odom_base: np.ndarray
    pose_covariance: np.ndarray  # 6x6, ROS order, odom axes
    linear: np.ndarray  # base frame
    angular: np.ndarray
    twist_covariance: np.ndarray  # 6x6, ROS order, base frame
    inflation: float = 1.0
    null: bool = False


class OdometryOutput:
    """Turns core results into base odometry; owned by the worker thread (not thread-safe)."""

    def __init__(self, T_base_cam: np.ndarray, recovery_factor: float = 100.0, recovery_frames: int = 10) -> None:
        self.T_base_cam = T_base_cam
        self.recovery_factor = max(1.0, recovery_factor)
        self.recovery_frames = max(0, recovery_frames)
        self._correction = np.eye(4)  # C: reset_to_pose
        self._last_core_pose = np.eye(4)  # the core's last T_odom_camera: where its next map starts
        self._previous: tuple[int, np.ndarray, np.ndarray, np.ndarray | None] | None = None  # stamp, base, core, cov
        self._last_published: np.ndarray | None = None
        self._recovery_step: int | None = 0  # frames since the last recovery event; None = none pending
        self._lost = False

    def reset(self, T_odom_base: np.ndarray | None = None) -> None:
        """Before the core's reset: forget the twist's previous frame; with a pose, the new map starts there."""
        if T_odom_base is not None:
            target_cam = camera_from_base_odometry(T_odom_base, self.T_base_cam)
            self._correction = target_cam @ invert(self._last_core_pose)
        self._previous = None
        self._recovery_step = 0

    def inflation(self) -> float:
        if self._recovery_step is None or self.recovery_frames == 0:
            return 1.0
        return float(self.recovery_factor ** max(0.0, 1.0 - self._recovery_step / self.recovery_frames))

    def update(self, result, stamp_ns: int) -> BaseOdometry | None:
        """The odometry for a result, None when it has no pose (see ``null``)."""
        if result.reset_reason:
            self._previous, self._recovery_step = None, 0
        if result.T_odom_camera is None:
            self._lost = True
            return None
        if result.relocalized or self._lost:
            self._recovery_step = 0
        self._lost = False
        self._last_core_pose = result.T_odom_camera
        T_odom_cam = self._correction @ result.T_odom_camera
        T_odom_base = base_odometry(T_odom_cam, self.T_base_cam)
        factor = self.inflation()
        pose_cov = pose_covariance(result.covariance, T_odom_base, self.T_base_cam)
        pose_cov = pose_cov * factor if usable(result.covariance) else pose_cov
        linear, angular, twist_cov = np.zeros(3), np.zeros(3), UNKNOWN_COVARIANCE.copy()
        previous = self._previous
        if previous is not None and stamp_ns > previous[0]:
            dt = (stamp_ns - previous[0]) * 1e-9
            linear, angular = twist(previous[1], T_odom_base, dt)
            if hasattr(result, "motion_covariance"):
                motion_cov = result.motion_covariance
            elif usable(result.covariance) and usable(previous[3]):  # the same, for a core without the field
                Ad = adjoint(invert(invert(previous[2]) @ result.T_odom_camera))
                motion_cov = result.covariance + Ad @ previous[3] @ Ad.T
            else:
                motion_cov = None
            twist_cov = twist_covariance(motion_cov, invert(previous[1]) @ T_odom_base, self.T_base_cam, dt)
            twist_cov = twist_cov * factor if usable(motion_cov) else twist_cov
        self._previous = (stamp_ns, T_odom_base, result.T_odom_camera, result.covariance)
        self._last_published = T_odom_base
        if self._recovery_step is not None:
            self._recovery_step += 1
            if self._recovery_step > self.recovery_frames:
                self._recovery_step = None
        return BaseOdometry(stamp_ns, T_odom_base, pose_cov, linear, angular,
                            twist_cov, factor)

    def null(self, stamp_ns: int) -> BaseOdometry:
        """The "lost" odometry: the last published pose held (identity before any), zero twist, unknown
        covariances."""
        pose = self._last_published if self._last_published is not None else np.eye(4)
        return BaseOdometry(stamp_ns, pose, UNKNOWN_COVARIANCE.copy(), np.zeros(3), np.zeros(3),
                            UNKNOWN_COVARIANCE.copy(), null=True)
