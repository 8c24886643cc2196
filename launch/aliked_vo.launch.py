"""Launch the aliked_vo node, optionally with rviz.

ros2 launch aliked_ros aliked_vo.launch.py camera:=/camera image:=image_raw extractor:=aliked-t16 rviz:=true
ros2 launch aliked_ros aliked_vo.launch.py camera:=/stereo stereo:=true    # <camera>/left/image_rect, ...
ros2 launch aliked_ros aliked_vo.launch.py namespace:=front camera:=/front_camera odom_frame:=front_odom \
    base_frame:=front_base    # one of several cameras: /front/aliked_vo/odometry, ... (rviz follows the namespace)

Node parameters come from ``params_file`` (default: the package's config/params.yaml); the launch arguments
extractor, device, max_keypoints, use_depth, compressed_depth, rolling_shutter_readout, stereo, compressed,
pipelined, odom_frame, base_frame and camera_frame override
it only when given (empty = the file's value), and so does any other node parameter given as ``name:=value``
(``rectified:=true``, ``next_frame_wait:=0.2``: every key of config/params.yaml, checked against that file's
type). With stereo:=true the node reads the rectified pair on
<camera>/<left_image>, <left_camera_info>, <right_image>, <right_camera_info> (image, camera_info and depth are
then unused). The launch ends when the node exits: with code 0 after Ctrl-C, with
code 1 when the node failed (e.g. a parameter it refuses at start: its one-line reason is printed above). A
misspelt argument, an override of the wrong type, a missing params_file or a true/false that is neither stop the
launch before the node starts (code 1, one line).
"""
import atexit
import functools
import os
import signal
import tempfile

import yaml

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.utilities import make_namespace_absolute, prefix_namespace

# launch argument -> (help); passed to the node as the parameter of the same name when not empty
PARAMETER_ARGUMENTS = {
    "extractor": "aliked-t16|aliked-n16|aliked-n16rot|aliked-n32|sift|orb",
    "device": "auto|cuda|cuda:N|cpu",
    "max_keypoints": "keypoint budget per frame (16..20000)",
    "use_depth": "true: subscribe to the registered depth topic (metric pose)",
    "compressed_depth": "true (with use_depth): subscribe to <depth>/compressedDepth (compressed_depth_image_transport)",
    "rolling_shutter_readout": "RGB-D: the colour camera's row readout time, s (rolling shutter); 0 = global shutter",
    "stereo": "true: subscribe to a rectified stereo pair (left_image, left_camera_info, right_image, "
              "right_camera_info; metric pose)",
    "compressed": "true: subscribe to <image>/compressed",
    "pipelined": "true (default): extraction and pose overlapped in two threads; false: one worker (ORB: lower latency)",
    "odom_frame": "odometry frame (TF parent)",
    "base_frame": "robot base frame (TF child)",
    "camera_frame": "camera optical frame: set it to publish base_frame -> camera_frame (camera_mount) on /tf_static",
}


BOOLEAN_ARGUMENTS = ("use_sim_time", "rviz")


@functools.cache
def _node_parameters() -> dict:
    """Every node parameter and its default (the package's config/params.yaml lists them all)."""
    path = os.path.join(get_package_share_directory("aliked_ros"), "config", "params.yaml")
    with open(path) as file:
        return yaml.safe_load(file)["/**"]["ros__parameters"]


def _parameters_given(context) -> list[str]:
    """Node parameters given as undeclared launch arguments (``rectified:=true``): passed on like the declared
    ones. (Other undeclared names are left alone: an including launch file's own configurations are seen here.)"""
    return [name for name in context.launch_configurations
            if name not in PARAMETER_ARGUMENTS and name in _node_parameters()]


def _type_error(text: str, default) -> str | None:
    """Why ``text`` (a launch argument, parsed as YAML as launch_ros does) cannot set a parameter whose default is
    ``default``, or None: a float parameter takes a whole number too, a list one a list. (rcl would keep the params
    file's value without a word when an override's type differs: use_depth:=ture, max_keypoints:=abc.)"""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if type(value) is int else "a number (a whole one)"
    if isinstance(default, float):
        return None if type(value) in (int, float) else "a number"
    if isinstance(default, list):
        return None if isinstance(value, list) else "a list ([a, b, ...])"
    return None


def _check_arguments(context):
    """Refuse, with one line, what the node would otherwise start without: a misspelt argument (launch ignores an
    undeclared one), an override of the wrong type, a params_file that is not there, a true/false that is neither."""
    import difflib

    parameters = _node_parameters()
    declared = [*PARAMETER_ARGUMENTS, *BOOLEAN_ARGUMENTS, "namespace", "camera", "image", "camera_info", "depth",
                "left_image", "left_camera_info", "right_image", "right_camera_info", "params_file", *parameters]
    given = context.launch_configurations
    for name in given:
        if name not in declared and (close := difflib.get_close_matches(name, declared, n=1, cutoff=0.85)):
            raise RuntimeError(f"unknown launch argument {name!r}: did you mean {close[0]!r}?")
    for name in [*PARAMETER_ARGUMENTS, *_parameters_given(context)]:
        if given.get(name, "") != "" and (expected := _type_error(given[name], parameters[name])):
            raise RuntimeError(f"launch argument {name}:={given[name]} is not {expected}")
    for name in BOOLEAN_ARGUMENTS:
        if given.get(name, "false").lower() not in ("true", "false", "1", "0"):
            raise RuntimeError(f"launch argument {name}:={given[name]} is not true or false")
    namespace = given.get("namespace", "")
    if namespace:
        from rclpy.exceptions import InvalidNamespaceException
        from rclpy.validate_namespace import validate_namespace

        try:
            validate_namespace("/" + namespace.removeprefix("/"))
        except InvalidNamespaceException as error:
            reason = str(error).splitlines()[0].removeprefix("Invalid namespace: ").rstrip(":")
            raise RuntimeError(f"launch argument namespace:={namespace} is not a ROS namespace: {reason}") from None
    params_file = LaunchConfiguration("params_file").perform(context)
    if not os.path.isfile(params_file):
        raise RuntimeError(f"params_file {params_file}: no such file")
    return []


def _odom_frame(context) -> str:
    """rviz's fixed frame: the odom_frame launch argument, else the params file's, else odom."""
    given = context.launch_configurations.get("odom_frame", "")
    if given:
        return given
    try:
        with open(LaunchConfiguration("params_file").perform(context)) as file:
            for section in (yaml.safe_load(file) or {}).values():
                value = ((section or {}).get("ros__parameters") or {}).get("odom_frame")
                if value:
                    return str(value)
    except (OSError, yaml.YAMLError, AttributeError):
        pass  # the node reports an unreadable params file
    return "odom"


def _node_path(context) -> str:
    """The node's full name: /aliked_vo, or /<namespace>/aliked_vo, under any namespace this launch file is
    included in (PushRosNamespace)."""
    namespace = make_namespace_absolute(prefix_namespace(context.launch_configurations.get("ros_namespace"),
                                                         context.launch_configurations.get("namespace") or None))
    return f"{(namespace or '/').rstrip('/')}/aliked_vo"


def _rviz_config(context) -> str:
    """The package's rviz view; with a namespace, a copy whose topics are the namespaced node's."""
    config = os.path.join(get_package_share_directory("aliked_ros"), "config", "aliked_vo.rviz")
    if _node_path(context) == "/aliked_vo":
        return config
    with open(config) as file:
        text = file.read().replace("Value: /aliked_vo/", f"Value: {_node_path(context)}/")
    handle, path = tempfile.mkstemp(prefix="aliked_vo_", suffix=".rviz")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    atexit.register(os.remove, path)  # rviz has read it by then
    return path


def _rviz(context):
    if context.launch_configurations.get("rviz", "false").lower() not in ("true", "1"):
        return []
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=LaunchConfiguration("namespace"),
        arguments=["-d", _rviz_config(context), "-f", _odom_frame(context)],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
    )]


def _node(context):
    camera = LaunchConfiguration("camera")
    given = [*PARAMETER_ARGUMENTS, *_parameters_given(context)]
    overrides = {name: LaunchConfiguration(name) for name in given if context.launch_configurations.get(name, "") != ""}
    overrides["use_sim_time"] = LaunchConfiguration("use_sim_time")
    return [Node(
        package="aliked_ros",
        executable="vo_node",
        name="aliked_vo",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[
            ("image", PathJoinSubstitution([camera, LaunchConfiguration("image")])),
            ("image/compressed", PathJoinSubstitution([camera, LaunchConfiguration("image"), "compressed"])),
            ("camera_info", PathJoinSubstitution([camera, LaunchConfiguration("camera_info")])),
            ("depth", PathJoinSubstitution([camera, LaunchConfiguration("depth")])),
            ("depth/compressedDepth", PathJoinSubstitution([camera, LaunchConfiguration("depth"), "compressedDepth"])),
        ] + [remapping for side in ("left", "right") for remapping in (
            (f"{side}/image_rect", PathJoinSubstitution([camera, LaunchConfiguration(f"{side}_image")])),
            (f"{side}/image_rect/compressed",
             PathJoinSubstitution([camera, LaunchConfiguration(f"{side}_image"), "compressed"])),
            (f"{side}/camera_info", PathJoinSubstitution([camera, LaunchConfiguration(f"{side}_camera_info")])),
        )],
        on_exit=_on_node_exit,
    )]


def _on_node_exit(event, context):
    """The launch ends with the node; a node that refused to start (or failed) makes `ros2 launch` exit non-zero."""
    # stopped by a signal (Ctrl-C; 130: interrupted while it started): no failure
    if event.returncode not in (0, 130, -signal.SIGINT, -signal.SIGTERM):
        raise RuntimeError(f"aliked_vo exited with code {event.returncode} (its error is printed above)")
    return [Shutdown(reason="aliked_vo exited")]


def generate_launch_description():
    share = get_package_share_directory("aliked_ros")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="the node's namespace (one node per camera: front -> /front/aliked_vo/...)"),
        DeclareLaunchArgument("camera", default_value="/camera",
                              description="camera namespace (a relative one is inside the node's namespace)"),
        DeclareLaunchArgument("image", default_value="image_raw", description="image topic in the camera namespace"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="camera_info topic"),
        DeclareLaunchArgument("depth", default_value="depth/image_raw", description="registered depth topic"),
        DeclareLaunchArgument("left_image", default_value="left/image_rect",
                              description="stereo: rectified left image topic in the camera namespace (posed)"),
        DeclareLaunchArgument("left_camera_info", default_value="left/camera_info", description="stereo: left camera_info"),
        DeclareLaunchArgument("right_image", default_value="right/image_rect",
                              description="stereo: rectified right image topic in the camera namespace"),
        DeclareLaunchArgument("right_camera_info", default_value="right/camera_info",
                              description="stereo: right camera_info (P with Tx = -fx * baseline)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "params.yaml"),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with the package's view"),
    ] + [DeclareLaunchArgument(name, default_value="", description=f"{text} (empty: from params_file)")
         for name, text in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_check_arguments), OpaqueFunction(function=_node),
                                          OpaqueFunction(function=_rviz)])
