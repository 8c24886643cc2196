"""From the VO core's camera poses to REP 105 odometry of the robot base (ROS-free).

The core reports T_camodom_cam: the camera optical frame in the optical frame of the first camera frame.
With the camera mounted at T_base_cam (``base_frame`` <- camera optical frame, a parameter), the odometry of the
base, starting at the origin of ``odom_frame``, is T_odom_base = T_base_cam * T_camodom_cam * inv(T_base_cam).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from aliked_ros.geometry.transforms import invert, make_transform

# REP 103: base x forward, y left, z up; optical z forward, x right, y down
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def mount_transform(values: list[float]) -> np.ndarray:
    """T_base_cam from [x, y, z, qx, qy, qz, qw] (7 values) or [x, y, z] (the optical rotation of REP 103)."""
    if len(values) == 3:
        return make_transform(R_BASE_OPTICAL, values)
    if len(values) == 7:
        return make_transform(Rotation.from_quat(values[3:]).as_matrix(), values[:3])
    raise ValueError(f"camera mount needs 3 or 7 values (x y z [qx qy qz qw]), got {len(values)}")


def base_odometry(T_camodom_cam: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    return T_base_cam @ T_camodom_cam @ invert(T_base_cam)


def camera_from_base_odometry(T_odom_base: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """The inverse of ``base_odometry``: the core's camera pose from a published base pose."""
    return invert(T_base_cam) @ T_odom_base @ T_base_cam


def twist(T_odom_prev: np.ndarray, T_odom_cur: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear (m/s) and angular (rad/s) velocity of the body, expressed in the body frame at the current pose."""
    delta = invert(T_odom_prev) @ T_odom_cur
    linear = (T_odom_cur[:3, :3].T @ (T_odom_cur[:3, 3] - T_odom_prev[:3, 3])) / dt
    angular = Rotation.from_matrix(delta[:3, :3]).as_rotvec() / dt
    return linear, angular


def quaternion(rotation: np.ndarray) -> np.ndarray:
    """(x, y, z, w)."""
    return Rotation.from_matrix(rotation).as_quat()
