"""Launch the aliked_vo node, optionally with rviz.

ros2 launch aliked_ros aliked_vo.launch.py camera:=/camera image:=image_raw extractor:=aliked-t16 rviz:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("aliked_ros")
    arguments = [
        DeclareLaunchArgument("camera", default_value="/camera", description="camera namespace"),
        DeclareLaunchArgument("image", default_value="image_raw", description="image topic in the camera namespace"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="camera_info topic"),
        DeclareLaunchArgument("depth", default_value="depth/image_raw", description="registered depth topic"),
        DeclareLaunchArgument("use_depth", default_value="false", description="use the depth topic"),
        DeclareLaunchArgument("compressed", default_value="false", description="subscribe to <image>/compressed"),
        DeclareLaunchArgument("extractor", default_value="aliked-t16", description="aliked-t16|aliked-n16|aliked-n16rot|aliked-n32|sift|orb"),
        DeclareLaunchArgument("device", default_value="auto", description="auto|cuda|cpu"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "params.yaml"),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with the package's view"),
    ]
    camera = LaunchConfiguration("camera")
    node = Node(
        package="aliked_ros",
        executable="vo_node",
        name="aliked_vo",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "extractor": LaunchConfiguration("extractor"),
                "device": LaunchConfiguration("device"),
                "use_depth": LaunchConfiguration("use_depth"),
                "compressed": LaunchConfiguration("compressed"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[
            ("image", PathJoinSubstitution([camera, LaunchConfiguration("image")])),
            ("image/compressed", PathJoinSubstitution([camera, LaunchConfiguration("image"), "compressed"])),
            ("camera_info", PathJoinSubstitution([camera, LaunchConfiguration("camera_info")])),
            ("depth", PathJoinSubstitution([camera, LaunchConfiguration("depth")])),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "config", "aliked_vo.rviz")],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(arguments + [node, rviz])
