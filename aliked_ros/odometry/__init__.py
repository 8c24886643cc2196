"""Visual odometry: frames in, poses against a local map out (see ``pipeline`` for the method).

``types``: Frame, FrameResult, TrackingState, OdometryConfig, errors; ``map``: keyframes and landmarks;
``optimizer``: motion-only refinement and local bundle adjustment; ``mapping``: when bundle adjustment runs;
``rest``: whether the camera is at rest, and where its centre is then held;
``pipeline``: VisualOdometry, the data path from image to pose.
"""
from aliked_ros.odometry.pipeline import VisualOdometry, depth_points
from aliked_ros.odometry.types import (DuplicateFrameError, Frame, FrameError, FrameResult, OdometryConfig,
                                       StereoFrameError, TrackingState)

__all__ = ["VisualOdometry", "Frame", "FrameResult", "FrameError", "DuplicateFrameError", "OdometryConfig",
           "StereoFrameError", "TrackingState", "depth_points"]
