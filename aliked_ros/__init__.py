"""aliked_ros: a ROS 2 visual-odometry frontend built on ALIKED keypoints.

Data path, one module per stage: image in -> ``features`` (extractors, weights) -> ``matching`` -> ``tracking``
-> ``geometry`` (cameras, pose) -> ``odometry`` (the pipeline) -> ``ros`` (node, messages) / ``tools`` (CLI).
Only ``aliked_ros.ros`` imports rclpy at import time (the replay, demo and bench tools import it when they run).

The generated message modules (``aliked_ros.msg``) are installed beside this package by the CMake build. The
``extend_path`` below lets a source checkout find them in the installed copy, so that tests and tools run from
the checkout without a reinstall after every Python edit.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
