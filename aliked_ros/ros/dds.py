"""DDS settings that keep ROS 2 traffic on this machine (tests, demo, replay).

``loopback_environment`` returns an environment for a ROS 2 process: discovery limited to localhost
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``; Kilted ignores ``ROS_LOCALHOST_ONLY``), Fast DDS with the shipped
profile (shared memory with 32 MiB segments + UDP on 127.0.0.1 only) and a chosen ``ROS_DOMAIN_ID``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from aliked_ros.resources import config_file

PROFILE_NAME = "fastdds_loopback.xml"
MAX_DOMAIN_ID = 232  # the largest whose ports fit the default port mapping (7400 + 250 x domain + ...)


def loopback_environment(domain_id: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: ``os.environ``) with DDS confined to loopback.

    ``domain_id`` (0..232; 0..101 stay clear of Linux's ephemeral ports) sets ``ROS_DOMAIN_ID``; None keeps the
    base's.
    """
    env = dict(os.environ if base is None else base)
    profile = str(config_file(PROFILE_NAME))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    env.pop("ROS_LOCALHOST_ONLY", None)
    if domain_id is not None:
        if not 0 <= domain_id <= MAX_DOMAIN_ID:
            raise ValueError(f"ROS_DOMAIN_ID must be in 0..{MAX_DOMAIN_ID}, got {domain_id}")
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def apply_loopback_environment(domain_id: int | None = None) -> None:
    """Set the loopback settings in this process's environment; call before ``rclpy.init``."""
    os.environ.update(loopback_environment(domain_id))
