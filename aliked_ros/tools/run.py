"""``aliked-vo run``: start the ``aliked_vo`` node (the same as ``ros2 run aliked_ros vo_node``).

Everything after ``--ros-args`` goes to ROS (remappings ``-r image:=/camera/image_raw``, parameters
``-p extractor:=sift``, ``--params-file``); ``--params-file FILE`` before it is a shortcut for a params file
given first (ROS takes the last value of a parameter: the ``-p`` after it win)."""
from __future__ import annotations

import argparse

PASSTHROUGH = "--ros-args"  # aliked-vo's dispatcher hands everything from here on to ROS untouched


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params-file", default=None, help="ROS 2 parameters YAML (e.g. config/params.yaml)")
    parser.add_argument("--loopback", action="store_true",
                        help="keep DDS on this machine (loopback Fast DDS profile, localhost discovery)")
    parser.epilog = "Anything after --ros-args is passed to ROS."


def run(args: argparse.Namespace) -> int:
    from aliked_ros.ros.dds import apply_loopback_environment

    if args.loopback:
        apply_loopback_environment()
    from aliked_ros.ros.node import main

    ros_args = list(args.passthrough) or [PASSTHROUGH]
    if args.params_file:  # first, so that the user's own -p and --params-file after it override the file
        ros_args[1:1] = ["--params-file", args.params_file]
    return main(["aliked-vo"] + (ros_args if len(ros_args) > 1 else []))
