"""The ``aliked_vo`` node: camera topics in, keypoints / odometry / status / diagnostics out.

Structure (each part testable on its own):
  - ``InputStage`` (aliked_ros.ros.input_stage, ROS-free): subscription callbacks only store there; it pairs
    images with camera_info and depth by stamp, keeps the newest complete frame in a one-frame slot (older ones
    are replaced and counted as dropped) and counts everything under one lock; readers take snapshots.
  - the worker: takes the newest frame, decodes it (aliked_ros.ros.decoding: every bad input is one
    module-specific error, counted by kind), runs the VO core, turns its result into base odometry
    (aliked_ros.ros.odometry_output: mount, covariances, reset_to_pose, lost behaviour) and publishes it.
    ``pipelined:=true``: two threads, so that extraction of frame k+1 overlaps matching, pose and publishing
    of frame k (torch and OpenCV release the GIL): the extraction stage takes the newest frame, decodes it and
    extracts its features (``VisualOdometry.extract``: left and right image for stereo); the pose stage takes the
    newest extracted frame through the input stage's hand-over slot (one item: a superseded one would be counted
    as dropped; the extraction stage takes its next frame only when that slot is empty and the pose stage is about
    to finish, so the frame is as fresh as it can be and no extraction is thrown away), runs
    ``VisualOdometry.process_extracted`` and publishes. Only the pose stage changes the VO state and applies reset
    requests; frames reach it in the order they were taken, i.e. in stamp order.
    ``pipelined:=false``: one thread does both, back to back. Pipelined (the default) is faster where extraction
    takes longer than pose estimation: aliked-t16 on this 2-core CPU since its fused kernels (10.0-10.4 against
    7.9-9.6 Hz), SIFT, and any extractor on a GPU; ORB, whose pose stage is the longer, is as fast or faster on one
    worker, at lower latency (BENCHMARKS.md "The node at 30 Hz"). A worker that was busy and finds only an image
    that has waited takes the camera's next one instead when it is due within ``next_frame_wait`` of a frame
    period (``InputStage``; a node that keeps up never waits there).
  - ``OutputSet`` (aliked_ros.ros.publishing): the publishers; TF never repeats a stamp, a new run (time went
    backwards) empties the path.
  - diagnostics (aliked_ros.ros.diagnostics): built from one snapshot on the executor thread.

Topics (relative names, remap or namespace them):
  in   ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage, parameter ``compressed``),
       ``camera_info``, optional ``depth`` (registered depth, 16UC1 mm or 32FC1 m; parameter ``use_depth``) or
       ``depth/compressedDepth`` (compressed_depth_image_transport's png or rvl; parameter ``compressed_depth``);
       with ``stereo`` instead: ``left/image_rect`` (the camera tracked and posed), ``left/camera_info``,
       ``right/image_rect``, ``right/camera_info`` (``.../image_rect/compressed`` with ``compressed``): a
       rectified pair, left and right paired by stamp (``stereo_sync_tolerance``, 0 = exact), the metric scale
       from the two camera_infos' P (right Tx = -fx B; see aliked_ros.geometry.stereo)
  out  ``~/keypoints`` (aliked_ros/FrameKeypoints), ``~/status`` (aliked_ros/TrackingStatus),
       ``~/odometry`` (nav_msgs/Odometry), ``~/pose`` (geometry_msgs/PoseStamped), ``~/path`` (nav_msgs/Path),
       ``~/debug_image`` (only drawn while subscribed), ``/diagnostics``, ``/tf`` odom -> base and ``/tf_static``
       base -> ``camera_frame`` (tf2_ros, else tf2_msgs; see aliked_ros.ros.tf)
  srv  ``~/reset`` (std_srvs/Trigger), ``~/reset_to_pose`` (aliked_ros/ResetToPose)
All outputs carry the source image's stamp. Poses: REP 105 ``odom_frame`` -> ``base_frame``, the camera mounted
at ``camera_mount`` (see aliked_ros.ros.frames). Covariances: see aliked_ros.ros.odometry_output (the core's,
through the mount; 1e6 on the diagonal when unknown; inflated after resets, relocalisation and LOST spells).
While LOST nothing is published on odometry, pose, path and TF, unless ``publish_null_when_lost`` (then a null
odometry: the last pose, zero twist, unknown covariances, on ``~/odometry`` only).

Bad configuration (unknown extractor, out-of-range or mistyped parameter) stops the node at start with one line
and exit code 2 (``ConfigurationError``); parameters the node does not declare (a typo in a params file) are
warned about once and ignored. No input and no callback can raise out of ``rclpy.spin``: callbacks count and log
what fails (``callback_error``).
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
import torch
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from aliked_ros.errors import AlikedRosError
from aliked_ros.compressed_depth import prepare_kernels as prepare_compressed_depth_kernels
from aliked_ros.features import EXTRACTORS, ExtractorConfig, create_extractor
from aliked_ros.geometry.transforms import make_transform
from aliked_ros.image_encoding import SixteenBitScale
from aliked_ros.odometry import OdometryConfig, TrackingState, VisualOdometry
from aliked_ros.odometry.optimizer import BA_SOLVERS, gtsam_available
from aliked_ros.odometry.types import KEYFRAME_REATTACH
from aliked_ros.ros.decoding import (CameraCache, StereoCameraCache, frame_from_messages, rejection,
                                     stereo_frame_from_messages)
from aliked_ros.ros.diagnostics import diagnostic_values
from aliked_ros.ros.entry import exit_without_teardown
from aliked_ros.ros.frames import mount_transform
from aliked_ros.ros.input_stage import (NS, InputFrame, InputStage, ResetRequest, Work, run_extraction_stage,
                                       run_pose_stage, run_single_stage)
from aliked_ros.ros.odometry_output import OdometryOutput
from aliked_ros.ros.publishing import OutputSet
from aliked_ros.srv import ResetToPose

RUNTIME_PARAMETERS = {"path_max_length", "publish_tf", "diagnostics_period", "publish_null_when_lost",
                      "next_frame_wait"}
READ_ONLY_HINT = "read-only: restart the node to change it"
DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
PAIRING_WAIT_S = 1.0  # an image waits this long for its depth / right image; then it counts as unpaired
SHUTDOWN_WAIT_S = 4.0  # the stages get this long to finish at shutdown (ros2 launch: SIGTERM 5 s after SIGINT)
UNPAIRED = {  # stream -> why an image left without it is not posed (logged once)
    "depth": "images without a depth image stamped within depth_sync_tolerance of them are not posed",
    "right": "left images without a right image stamped within stereo_sync_tolerance of them are not posed (the "
             "right stream stopped, or the two cameras are stamped differently)",
}


class ConfigurationError(AlikedRosError):
    """A parameter value the node cannot start with (the message names the parameter and what it accepts)."""


def stamp_ns(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _log_failure(node, callback, error: Exception) -> None:
    """Count a callback's failure (``callback_error``) and log it, the first with its traceback."""
    if node.inputs.count("callback_error"):
        node.get_logger().error(f"{callback.__name__} failed: {error!r}\n{traceback.format_exc()}")
    else:
        node.get_logger().debug(f"{callback.__name__} failed: {error!r}")


def guarded(callback):
    """A subscription or timer callback that never raises into the executor: a failure is counted and logged."""
    @functools.wraps(callback)
    def run(self, *args):
        try:
            return callback(self, *args)
        except Exception as error:  # noqa: BLE001 - the executor must keep spinning
            _log_failure(self, callback, error)
            return None
    return run


def guarded_service(callback):
    """A service callback (request, response with ``success`` and ``message``) that never raises into the
    executor: a failure is counted and logged like ``guarded``'s and answered (success false, the error in
    message). Returning None instead would make rclpy's executor raise in ``send_response``."""
    @functools.wraps(callback)
    def run(self, request, response):
        try:
            return callback(self, request, response)
        except Exception as error:  # noqa: BLE001 - the executor must keep spinning
            _log_failure(self, callback, error)
            response.success, response.message = False, f"failed: {error!r}"
            return response
    return run


class VoNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("aliked_vo", **kwargs)
        self._declare_parameters()
        p = self._param
        self.stereo = bool(p("stereo"))
        paired = {"right": p("stereo_sync_tolerance")} if self.stereo else \
            {"depth": p("depth_sync_tolerance")} if p("use_depth") else None
        # the one place shared between threads: callbacks store, the worker takes, diagnostics read snapshots
        self.inputs = InputStage(paired, camera_info_wait=p("camera_info_wait"), pairing_wait=PAIRING_WAIT_S,
                                 next_frame_wait=p("next_frame_wait"),
                                 camera_info_streams=("image", "right") if self.stereo else ("image",))
        self._unpaired_logged: set[str] = set()  # executor thread only (the diagnostics timer)

        extractor = create_extractor(p("extractor"), ExtractorConfig(
            max_keypoints=p("max_keypoints"), threshold=None if p("threshold") <= 0 else p("threshold"),
            nms_radius=p("nms_radius"), min_contrast=p("min_contrast"), device=p("device"),
            weights=p("weights") or None, compile=p("torch_compile")))
        self.vo = VisualOdometry(extractor, OdometryConfig(background_mapping=p("background_mapping"),
                                                           require_stereo=self.stereo,
                                                           rolling_shutter_readout_s=p("rolling_shutter_readout"),
                                                           ba_single_view_prior=p("ba_single_view_prior"),
                                                           keyframe_alignment_px=p("keyframe_alignment"),
                                                           keyframe_reattach=KEYFRAME_REATTACH[p("keyframe_reattach")],
                                                           ba_solver=p("ba_solver")))
        if p("rolling_shutter_readout") > 0 and not p("use_depth"):
            self.get_logger().warning("rolling_shutter_readout applies to RGB-D (use_depth:=true) only: monocular and "
                                      "stereo frames are processed as global shutter")
        self.get_logger().info(f"extractor {extractor.name} on {extractor.device}" + (", stereo" if self.stereo else ""))
        self.cameras = CameraCache(rectified=p("rectified"))
        self.stereo_cameras = StereoCameraCache()
        self.odometry = OdometryOutput(self.T_base_cam, p("covariance_recovery_factor"), p("covariance_recovery_frames"))

        qos = qos_profile_sensor_data if p("qos") == "sensor_data" else QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        image_type, suffix = (CompressedImage, "/compressed") if p("compressed") else (Image, "")
        if self.stereo:
            self.create_subscription(image_type, "left/image_rect" + suffix, self._on_image, qos)
            self.create_subscription(CameraInfo, "left/camera_info", self._on_camera_info, qos)
            self.create_subscription(image_type, "right/image_rect" + suffix, self._on_right_image, qos)
            self.create_subscription(CameraInfo, "right/camera_info", self._on_right_camera_info, qos)
        else:
            self.create_subscription(image_type, "image" + suffix, self._on_image, qos)
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos)
        if p("use_depth"):
            if p("compressed_depth"):
                prepare_compressed_depth_kernels()
                self.create_subscription(CompressedImage, "depth/compressedDepth", self._on_depth, qos)
            else:
                self.create_subscription(Image, "depth", self._on_depth, qos)
        elif p("compressed_depth"):
            self.get_logger().warning("compressed_depth applies with use_depth:=true only: no depth is subscribed")

        self.outputs = OutputSet(self, self._param)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(ResetToPose, "~/reset_to_pose", self._on_reset_to_pose)
        if self.outputs.tf.kind is None:
            self.get_logger().warning("neither tf2_ros nor tf2_msgs is installed: no TF output (odometry, pose and "
                                      "path are published; navigation stacks need TF: install tf2_msgs)")
        if p("camera_frame"):
            self.outputs.send_static(self.T_base_cam, p("base_frame"), p("camera_frame"))
        self._diagnostics_timer = self.create_timer(p("diagnostics_period"), self._on_diagnostics_timer)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._warn_unknown_parameters()
        self.pipelined = bool(p("pipelined"))
        self._sixteen_bit = SixteenBitScale()  # the camera's 16-bit to 8-bit scale (both images of a stereo pair)
        # torch's CPU threads for extraction (set in the thread that extracts: the setting is per thread); with
        # pipelining the pose stage needs a core beside it (automatic: one torch thread per core but one)
        self._torch_threads = p("torch_threads") or (max(1, (os.cpu_count() or 1) - 1) if self.pipelined else 0)
        stages = ((self._extract_stage, "aliked_vo_extract"), (self._pose_stage, "aliked_vo_pose")) if self.pipelined \
            else ((self._work, "aliked_vo_worker"),)
        self._closed = False  # set by shutdown once the stages' time is up: a stage still busy publishes nothing
        self._workers = [threading.Thread(target=target, name=name, daemon=True) for target, name in stages]
        for worker in self._workers:
            worker.start()

    # --- parameters ---------------------------------------------------------------------------------------------

    def _whole_numbers_as_floats(self, name: str, default) -> None:
        """A float parameter given as a whole number (``-p next_frame_wait:=0``, ``camera_mount: [0, 0, 0.1]``,
        a launch argument ``0``: ROS types them INTEGER / INTEGER_ARRAY) is taken as that float."""
        override = self._parameter_overrides.get(name)
        if override is None:
            return
        value = override.value
        if isinstance(default, float) and override.type_ == Parameter.Type.INTEGER:
            self._parameter_overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(value))
        elif isinstance(default, list) and default and all(isinstance(v, float) for v in default) \
                and override.type_ == Parameter.Type.INTEGER_ARRAY:
            self._parameter_overrides[name] = Parameter(name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in value])

    def _declare_parameters(self) -> None:
        def declare(name, default, description, read_only=True, **ranges):
            if read_only:
                description = f"{description} ({READ_ONLY_HINT})"
            # not ParameterDescriptor.read_only: rclpy would refuse a change with its own generic message before the
            # node could say why; _on_set_parameters refuses it with the node's (the description says so too)
            descriptor = ParameterDescriptor(description=description)
            if "integer" in ranges:
                descriptor.integer_range = [IntegerRange(from_value=ranges["integer"][0], to_value=ranges["integer"][1], step=1)]
            if "floating" in ranges:
                descriptor.floating_point_range = [FloatingPointRange(from_value=ranges["floating"][0], to_value=ranges["floating"][1], step=0.0)]
            self._whole_numbers_as_floats(name, default)
            try:
                self.declare_parameter(name, default, descriptor)
            except ParameterException as error:  # out of range, wrong type: one line, no traceback
                value = self._parameter_overrides[name].value if name in self._parameter_overrides else default
                accepted = (f"an integer in {ranges['integer'][0]}..{ranges['integer'][1]}" if "integer" in ranges
                            else f"a number in {ranges['floating'][0]}..{ranges['floating'][1]}" if "floating" in ranges
                            else f"a {type(default).__name__}")
                raise ConfigurationError(f"parameter {name} = {value!r} is invalid: it takes {accepted} "
                                         f"({description.split(' (')[0]})") from error

        declare("extractor", "aliked-t16", f"feature extractor: {', '.join(EXTRACTORS)}")
        declare("device", "auto", "torch device: auto (CUDA if available), cuda, cuda:N, cpu")
        declare("weights", "", "ALIKED weights file; empty = $ALIKED_WEIGHTS_DIR, torch hub cache, download")
        declare("torch_compile", False, "ALIKED on CUDA: torch.compile the frame (compiled on the first frame, "
                "about a minute; then 1.3-1.75 ms instead of 2.0 ms per 640x480 frame on an H200)")
        declare("max_keypoints", 1024, "keypoint budget per frame", integer=(16, 20000))
        declare("threshold", 0.0, "ALIKED score threshold; <= 0 selects top-k mode", floating=(0.0, 1.0))
        declare("nms_radius", 2, "non-maximum suppression radius, px", integer=(1, 8))
        declare("min_contrast", 1.0, "a frame whose keypoints' median contrast over the image's noise is below this "
                "keeps only keypoints of 3 times it (none on a dark frame of noise: LOST, not tracked on noise); 0 = off",
                floating=(0.0, 20.0))
        declare("compressed", False, "subscribe to image/compressed (sensor_msgs/CompressedImage)")
        declare("rectified", False, "the image is rectified (image_proc's image_rect): intrinsics from camera_info's "
                "P, no distortion; false: the raw image, K and D (monocular and RGB-D; stereo always reads P)")
        declare("use_depth", False, "subscribe to a registered depth image (16UC1 mm or 32FC1 m) for metric pose")
        declare("compressed_depth", False, "with use_depth: subscribe to depth/compressedDepth (CompressedImage "
                "of compressed_depth_image_transport, png or rvl) instead of depth")
        declare("depth_sync_tolerance", 0.02, "max stamp difference between image and depth, s", floating=(0.0, 1.0))
        declare("rolling_shutter_readout", 0.0, "RGB-D: the colour camera's rolling shutter reads its rows out over "
                "this long, s (top to bottom, image stamp = centre row); 0 = global shutter", floating=(0.0, 0.1))
        declare("stereo", False, "a rectified stereo pair: subscribe to left/image_rect, left/camera_info, "
                "right/image_rect, right/camera_info (metric pose; the left camera is posed)")
        declare("stereo_sync_tolerance", 0.0, "max stamp difference between left and right images, s (0: the same "
                "stamp, as stereo drivers publish)", floating=(0.0, 1.0))
        declare("camera_info_wait", 0.1, "longest wait for the camera_info stamped like an image, s",
                floating=(0.0, 2.0))
        declare("qos", "sensor_data", "input QoS: sensor_data (best effort) or reliable")
        declare("odom_frame", "odom", "odometry frame (REP 105)")
        declare("base_frame", "base_link", "robot base frame: child frame of the odometry")
        declare("camera_mount", [0.0, 0.0, 0.0],
                "camera optical frame in base_frame: x y z [qx qy qz qw]; 3 values = REP 103 optical rotation")
        declare("camera_frame", "", "camera optical frame: when set, base_frame -> camera_frame (camera_mount) is "
                "published once on /tf_static (latched); empty = the robot description publishes it")
        declare("ba_single_view_prior", OdometryConfig.ba_single_view_prior,
                "monocular: landmarks only the newest keyframe observes join its bundle adjustment with a prior of "
                "this fraction of their depth (0 = left out); no effect with use_depth or stereo", floating=(0.0, 1.0))
        declare("keyframe_alignment", OdometryConfig.keyframe_alignment_px,
                "> 0: tracked keypoints move to where their keyframe's patch aligns (Lucas-Kanade), when within this "
                "many px of the detection (1.5 measured); 0 = off (README \"Keyframe alignment\")",
                floating=(0.0, 10.0))
        declare("keyframe_reattach", "auto", "auto, always or never: monocular, unmatched keypoints take up the last "
                "keyframe's ended tracks; auto = always for orb and sift, never for aliked")
        declare("ba_solver", "lm", "local bundle adjustment solver: lm (own Levenberg-Marquardt, numpy), gtsam "
                "(pip install gtsam), scipy (slow; for comparison)")
        declare("background_mapping", True, "local bundle adjustment in a worker thread (poses never wait for it); "
                "false: inline, deterministic (the same poses as aliked-vo eval)")
        declare("pipelined", True, "two worker threads: extraction of the next frame overlaps pose estimation and "
                "publishing of the current one (faster when extraction is the longer stage: ALIKED, SIFT, a GPU); "
                "false: one worker does both, back to back (as fast for ORB, at lower latency)")
        declare("next_frame_wait", 0.4, "a worker that was busy and finds only an image that has waited takes the "
                "camera's next one instead when it is due within this fraction of the frame period (lower latency "
                "for ~f^2/2 of a period idle per frame; only when the node cannot keep up); 0: off",
                read_only=False, floating=(0.0, 1.0))
        declare("torch_threads", 0, "torch CPU threads for extraction; 0 = automatic (pipelined: CPU cores - 1, "
                "at least 1; else torch's default)", integer=(0, 256))
        declare("publish_tf", True, "broadcast odom -> base on /tf", read_only=False)
        declare("path_max_length", 1000, "poses kept in ~/path", read_only=False, integer=(1, 1000000))
        declare("diagnostics_period", 1.0, "seconds between /diagnostics messages", read_only=False,
                floating=(0.05, 60.0))
        declare("publish_null_when_lost", False, "while LOST: false = publish no odometry (and no pose, path, TF); "
                "true = a null odometry on ~/odometry (the last pose, zero twist, covariance diagonal 1e6)",
                read_only=False)
        declare("covariance_recovery_factor", 100.0, "covariances are multiplied by this on the first pose after a "
                "reset, a relocalisation or LOST frames, falling geometrically to 1", floating=(1.0, 1.0e6))
        declare("covariance_recovery_frames", 10, "posed frames over which that factor falls to 1",
                integer=(0, 1000))
        self._check_choice("qos", ("sensor_data", "reliable"))
        self._check_choice("extractor", EXTRACTORS)
        self._check_choice("ba_solver", BA_SOLVERS)
        self._check_choice("keyframe_reattach", tuple(KEYFRAME_REATTACH))
        if self._param("ba_solver") == "gtsam" and not gtsam_available():
            raise ConfigurationError("parameter ba_solver = 'gtsam' but gtsam is not installed (pip install gtsam; or "
                                     "ba_solver lm)")
        device = self._param("device")
        if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ConfigurationError(f"parameter device = {device!r} is invalid: it takes auto, cpu, cuda or cuda:N")
        try:
            self.T_base_cam = mount_transform(list(self._param("camera_mount")))
        except ValueError as error:
            raise ConfigurationError(f"parameter camera_mount = {list(self._param('camera_mount'))}: {error}") from error
        for name in ("odom_frame", "base_frame", "camera_frame"):
            if self._param(name).startswith("/"):  # tf2 refuses frame ids with a leading slash
                raise ConfigurationError(f"parameter {name} = {self._param(name)!r}: a TF frame id has no leading '/'")
            if name != "camera_frame" and not self._param(name):
                raise ConfigurationError(f"parameter {name} is empty: it names a TF frame")
        frames = [self._param(n) for n in ("odom_frame", "base_frame", "camera_frame") if self._param(n)]
        if len(set(frames)) < len(frames):
            raise ConfigurationError(f"parameters odom_frame, base_frame and camera_frame name the same frame "
                                     f"({', '.join(frames)}): each transform needs two different frames")
        if self._param("stereo") and self._param("use_depth"):
            raise ConfigurationError("parameters stereo and use_depth are both true: a frame takes its metric depth "
                                     "from a stereo pair or from a depth image, not both")

    def _check_choice(self, name: str, choices) -> None:
        if self._param(name) not in choices:
            raise ConfigurationError(f"parameter {name} = {self._param(name)!r} is invalid: it takes one of "
                                     f"{', '.join(choices)}")

    def _warn_unknown_parameters(self) -> None:
        """One warning for overrides (params file, -p) of parameters this node does not declare: a typo would
        otherwise be ignored silently."""
        unknown = sorted(name for name in self._parameter_overrides if not self.has_parameter(name))
        if unknown:
            self.get_logger().warning(f"ignoring {len(unknown)} unknown parameter(s): {', '.join(unknown)} "
                                      f"(not declared by {self.get_name()}; see config/params.yaml)")

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Only the run-time parameters change while the node runs; every other one (the node reads it at start, as
        use_sim_time and rclpy's own) is refused with one message that says what to do."""
        for parameter in parameters:
            if parameter.name not in RUNTIME_PARAMETERS:
                return SetParametersResult(successful=False, reason=f"{parameter.name} is {READ_ONLY_HINT}")
        for parameter in parameters:
            if parameter.name == "diagnostics_period":
                old, self._diagnostics_timer = self._diagnostics_timer, self.create_timer(parameter.value,
                                                                                         self._on_diagnostics_timer)
                self.destroy_timer(old)  # cancel() alone leaves it in the executor's wait set
            elif parameter.name == "next_frame_wait":
                self.inputs.set_next_frame_wait(parameter.value)
        return SetParametersResult(successful=True)

    # --- inputs (executor thread: store only) -------------------------------------------------------------------

    @guarded
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.inputs.add_camera_info(stamp_ns(msg.header.stamp), msg)

    @guarded
    def _on_image(self, msg) -> None:
        self.inputs.add_image(stamp_ns(msg.header.stamp), msg)

    @guarded
    def _on_depth(self, msg: Image | CompressedImage) -> None:
        self.inputs.add_paired("depth", stamp_ns(msg.header.stamp), msg)

    @guarded
    def _on_right_image(self, msg) -> None:
        self.inputs.add_paired("right", stamp_ns(msg.header.stamp), msg)

    @guarded
    def _on_right_camera_info(self, msg: CameraInfo) -> None:
        self.inputs.add_camera_info(stamp_ns(msg.header.stamp), msg, "right")

    @guarded_service
    def _on_reset(self, request, response):
        self.inputs.request_reset(ResetRequest("requested (reset service)"))
        response.success, response.message = True, "the pipeline resets before the next frame"
        return response

    @guarded_service
    def _on_reset_to_pose(self, request, response):
        p, q = request.pose.position, request.pose.orientation
        position, quaternion = np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])
        norm = float(np.linalg.norm(quaternion)) if np.isfinite(quaternion).all() else 0.0
        if not np.isfinite(position).all() or norm < 1e-6:
            response.success = False
            response.message = "refused: the pose needs a finite position and a non-zero finite quaternion"
            return response
        from scipy.spatial.transform import Rotation

        T_odom_base = make_transform(Rotation.from_quat(quaternion / norm).as_matrix(), position)
        self.inputs.request_reset(ResetRequest("requested (reset_to_pose service)", T_odom_base))
        response.success = True
        response.message = "the pipeline resets before the next frame; the new map starts at the given pose"
        return response

    @guarded
    def _on_diagnostics_timer(self) -> None:
        snapshot = self.inputs.snapshot()
        for stream, count in snapshot.unmatched.items():  # images the input stage left unpaired: log the first
            if count and stream not in self._unpaired_logged:
                self._unpaired_logged.add(stream)
                self._log_first(f"no_{stream}", UNPAIRED.get(stream, f"images without {stream} are not posed"))
        self.outputs.publish_diagnostics(*diagnostic_values(snapshot))

    def publish_diagnostics(self) -> None:
        self._on_diagnostics_timer()

    # --- worker ---------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        """``pipelined:=false``: one thread, each frame decoded, processed and published back to back."""
        self._set_torch_threads()
        run_single_stage(self.inputs, self._process_work)

    def _process_work(self, work: Work) -> None:
        if self._guard(self._apply_reset, work.reset) and (vo_frame := self._guard(self._decode, work)):
            if (result := self._guard(self.vo.process, vo_frame)) is not None:
                self._processed(work.frame, vo_frame.image, result)

    def _extract_stage(self) -> None:
        """Pipelined, stage 1: the newest frame, decoded and extracted, handed to the pose stage; the next one
        taken just in time for the pose stage (``InputStage.wait_to_extract``)."""
        self._set_torch_threads()
        run_extraction_stage(self.inputs, self._extract_work)

    def _extract_work(self, work: Work):
        vo_frame = self._guard(self._decode, work)
        return self._guard(self.vo.extract, vo_frame) if vo_frame is not None else None

    def _pose_stage(self) -> None:
        """Pipelined, stage 2: the newest extracted frame posed (``process_extracted``) and published."""
        self._set_torch_threads()  # matching runs torch ops too
        run_pose_stage(self.inputs, self._pose_work)

    def _pose_work(self, frame: InputFrame, extracted, reset: ResetRequest | None) -> None:
        if self._guard(self._apply_reset, reset):
            if (result := self._guard(self.vo.process_extracted, extracted)) is not None:
                self._processed(frame, extracted.frame.image, result)

    def _set_torch_threads(self) -> None:
        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)

    def _apply_reset(self, reset: ResetRequest | None) -> bool:
        if reset is not None:
            self.odometry.reset(reset.T_odom_base)
            self.vo.reset(reset.reason)
            self.outputs.clear_tracks()
        return True

    def _decode(self, work: Work):
        """The frame's messages -> a VO ``Frame`` (bad input raises a module error)."""
        frame = work.frame
        if self.stereo:
            stereo = self.stereo_cameras.model(work.camera_info, work.camera_infos.get("right"))
            return stereo_frame_from_messages(frame.image, frame.paired["right"], stereo, frame.stamp_ns / NS,
                                              self._sixteen_bit)
        camera = self.cameras.model(work.camera_info)
        vo_frame, warnings = frame_from_messages(frame.image, frame.depth, camera, frame.stamp_ns / NS,
                                                 self._sixteen_bit)
        for kind in warnings:
            if self.inputs.warn(kind):
                self._log_first(kind, "depth image without one valid pixel: this frame is posed without depth")
        return vo_frame

    def _guard(self, step, *args):
        """``step(*args)``, or None after counting the frame as rejected by the error's kind (exactly once; the frame
        is then finished)."""
        try:
            return step(*args)
        except AlikedRosError as error:
            kind, message = rejection(error)
            self._reject(kind, message)
        except Exception as error:  # noqa: BLE001 - a defect: never let one frame kill the worker
            self._reject("processing_error", f"frame failed: {error!r}\n{traceback.format_exc()}")
        return None

    def _processed(self, frame: InputFrame, image: np.ndarray, result) -> None:
        """The last step of a frame the VO processed: counted as processed, its result published."""
        self.inputs.finish_processed(frame)
        if self._closed:  # finished after shutdown gave up on it: the publishers are (being) destroyed
            return
        try:
            self._publish(frame.image.header, frame.stamp_ns, result, image)
        except Exception as error:  # noqa: BLE001
            if self._closed or not self.context.ok():  # shut down under the worker: a normal stop, not an error
                return
            if self.inputs.count("publish_error"):
                self.get_logger().error(f"publishing failed: {error!r}\n{traceback.format_exc()}")

    def _reject(self, kind: str, message: str) -> None:
        """Count a bad input that was dropped; log the first of each kind as a warning, later ones at debug level."""
        if self.inputs.finish_rejected(kind):
            self._log_first(kind, message)
        else:
            self.get_logger().debug(message)

    def _log_first(self, kind: str, message: str) -> None:
        self.get_logger().warning(f"{message} (counted as '{kind}' in /diagnostics; further ones not logged)")

    # --- outputs --------------------------------------------------------------------------------------------------

    def _publish(self, header, stamp: int, result, image: np.ndarray) -> None:
        if result.reset_reason:
            self.get_logger().warning(f"pipeline reset: {result.reset_reason}")
            self.inputs.count("resets")
            self.outputs.clear_tracks()
        if result.features.noise_frame and self.inputs.count("noise_frames"):
            self.get_logger().warning("a frame of noise: its keypoints stand no higher than the image's own noise (a "
                                      "dark or covered camera?); it keeps only clear ones, none on pure noise (counted "
                                      "as 'noise_frames' in /diagnostics; further ones not logged)")
        self.inputs.set_tracking(state=result.state, inliers=result.num_inliers, keypoints=len(result.features),
                                 map_id=result.map_id, noise_frame=result.features.noise_frame,
                                 **({"stereo_matches": result.stereo_matches} if self.stereo else {}))
        self.outputs.publish_keypoints(header, result)
        odometry = self.odometry.update(result, stamp)
        if odometry is None and result.state == TrackingState.LOST and self._param("publish_null_when_lost"):
            odometry = self.odometry.null(stamp)
            self.inputs.count("odometry_null")
        if odometry is not None and not self.outputs.publish_odometry(header, odometry):
            if self.inputs.count("tf_stamps_skipped"):
                self.get_logger().warning("a transform stamped like the last one sent on /tf was not sent "
                                          "(counted as 'tf_stamps_skipped' in /diagnostics)")
        self.outputs.publish_debug(header, result, image)
        self.outputs.publish_status(header, result, self.inputs.snapshot().dropped)

    def shutdown(self) -> bool:
        """Stop taking frames and wait for the stages to finish theirs, ``SHUTDOWN_WAIT_S`` in all: within the
        time ``ros2 launch`` gives a node after Ctrl-C before it escalates to SIGTERM. A stage still busy then
        (a first frame's kernel compilation) is left behind, said once: the threads are daemons, and what it
        finishes is not published (the node's handles are destroyed next). Returns whether every stage finished."""
        self.inputs.close()
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        try:
            for worker in self._workers:
                worker.join(timeout=max(deadline - time.monotonic(), 0.0))
        finally:  # a second Ctrl-C ends the wait (and main says so), not the clean-up
            self._closed = True
        busy = [worker.name for worker in self._workers if worker.is_alive()]
        if busy:
            self.get_logger().warning(f"shutting down with {', '.join(busy)} still busy (its frame is dropped)")
        return not busy


def main(args: list[str] | None = None) -> int:
    try:
        rclpy.init(args=args)
    except KeyboardInterrupt:  # (between the imports, which entry.py covers, and the node)
        print("aliked_vo: interrupted while starting", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 130
    except RuntimeError as error:  # rcl cannot parse the arguments, e.g. "-p camera_mount:=[0.1, 0, 0.3]" (a list
        #                            mixing integers and floats: write 0.0)
        print(f"aliked_vo: error: {str(error).split(', at ')[0]}", file=sys.stderr, flush=True)
        return 2
    node, code = None, 0
    try:
        node = VoNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # SIGINT/SIGTERM: rclpy's deferred signal handler shuts the context down on its own thread; when that
        # lands between spin_once's checks, creating the next wait set raises RCLError ("the given context is
        # not valid") instead of ExternalShutdownException (a known race: ros2/rclpy#398, ros2/ros2cli#854)
        if rclpy.ok():
            raise
    except (ConfigurationError, ParameterException) as error:  # (ParameterException: one of rclpy's own parameters,
        #                                                             e.g. use_sim_time:=maybe)
        print(f"aliked_vo: error: {error}", file=sys.stderr, flush=True)
        code = 2
    except AlikedRosError as error:
        print(f"aliked_vo: error: {error}", file=sys.stderr, flush=True)
        code = 1
    finally:
        stages_finished = _clean_up(node)
    if not stages_finished:
        exit_without_teardown(code)  # a stage still runs compiled code (torch, numba)
    return code


def _clean_up(node: VoNode | None) -> bool:
    """Stop the stages, destroy the node, shut rclpy down; whether the stages finished. A second Ctrl-C (pressed
    twice, or the terminal's and ``ros2 launch``'s own both reaching the node) ends the wait for the stages, said in
    one line, not the clean-up. Ctrl-C is ignored from then on: the process is exiting, and Python's own exit
    restores the default action, which would kill it with SIGINT halfway through (SIGTERM still stops it)."""
    stages_finished = True
    try:
        if node is not None:
            stages_finished = node.shutdown()
    except KeyboardInterrupt:
        print("aliked_vo: interrupted again: not waiting for the stages", file=sys.stderr, flush=True)
        stages_finished = False
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
    return stages_finished


if __name__ == "__main__":  # python -m aliked_ros.ros.node (the pip install's lib/aliked_ros/vo_node)
    sys.exit(main())
