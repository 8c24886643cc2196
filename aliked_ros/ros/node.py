"""The ``aliked_vo`` node: camera topics in, keypoints / odometry / status / diagnostics out.

Threads: subscription callbacks only store the newest input (never block, never process); one worker thread
takes the newest complete frame, runs the VO pipeline, and publishes. When processing is slower than the
camera, older frames are replaced before they are processed and counted as dropped.

Topics (relative names, remap or namespace them):
  in   ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage, parameter ``compressed``),
       ``camera_info``, optional ``depth`` (registered depth, 16UC1 mm or 32FC1 m; parameter ``use_depth``)
  out  ``~/keypoints`` (aliked_ros/FrameKeypoints), ``~/status`` (aliked_ros/TrackingStatus),
       ``~/odometry`` (nav_msgs/Odometry), ``~/pose`` (geometry_msgs/PoseStamped), ``~/path`` (nav_msgs/Path),
       ``~/debug_image`` (only drawn while subscribed), ``/diagnostics``, ``/tf`` odom -> base and ``/tf_static``
       base -> ``camera_frame`` (tf2_ros, else tf2_msgs; see aliked_ros.ros.tf)
  srv  ``~/reset`` (std_srvs/Trigger)
All outputs carry the source image's stamp. Poses: REP 105 ``odom_frame`` -> ``base_frame``, the camera mounted
at ``camera_mount`` (see aliked_ros.ros.frames). Covariances are not estimated: their diagonal is -1.

Bad configuration (unknown extractor, out-of-range or mistyped parameter) stops the node at start with one line
and exit code 2 (``ConfigurationError``); parameters the node does not declare (a typo in a params file) are
warned about once and ignored.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from aliked_ros.errors import AlikedRosError
from aliked_ros.features import EXTRACTORS, ExtractorConfig, create_extractor
from aliked_ros.geometry.camera import CalibrationError, CameraModel
from aliked_ros.image_encoding import EncodingError, decode_compressed, decode_depth, decode_image
from aliked_ros.msg import FrameKeypoints, TrackingStatus
from aliked_ros.odometry import (DuplicateFrameError, Frame, FrameError, OdometryConfig, TrackingState,
                                 VisualOdometry)
from aliked_ros.ros.frames import base_odometry, mount_transform, quaternion, twist
from aliked_ros.ros.messages import KeypointArrays, fill_frame_keypoints
from aliked_ros.ros.sync import StampSynchronizer
from aliked_ros.ros.tf import TfOutput, transform_message
from aliked_ros.ros.visualization import TrackHistory, draw_tracks

UNKNOWN_COVARIANCE = [-1.0 if i % 7 == 0 else 0.0 for i in range(36)]
RUNTIME_PARAMETERS = {"path_max_length", "publish_tf", "diagnostics_period"}
READ_ONLY_HINT = "read-only: restart the node to change it"
DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
# bad input -> (counter in /diagnostics, log text); the first matching type wins
REJECTIONS = (
    (EncodingError, "bad_encoding", "bad image"),
    (CalibrationError, "size_mismatch", "image does not fit camera_info"),
    (DuplicateFrameError, "duplicate_stamp", "duplicate frame"),
    (FrameError, "bad_depth", "bad depth image"),
    (AlikedRosError, "bad_input", "frame rejected"),
)


class ConfigurationError(AlikedRosError):
    """A parameter value the node cannot start with (the message names the parameter and what it accepts)."""


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@dataclass
class _Input:
    image_msg: object
    depth_msg: object | None
    received: float  # monotonic time of arrival


class VoNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("aliked_vo", **kwargs)
        self._declare_parameters()
        p = self._param
        self.counts: Counter = Counter()  # received, processed, dropped, resets, and one key per rejected-input kind
        self.notes: Counter = Counter()  # inputs processed despite a problem, one key per kind
        self._lock = threading.Condition()
        self._pending: _Input | None = None
        self._stop = False
        self._reset_requested = False
        self._camera_msgs: deque[CameraInfo] = deque(maxlen=30)  # newest last
        self._camera_info_stamped = True  # camera_info stamps have matched the images' so far
        self._camera: CameraModel | None = None
        self._camera_msg_used: CameraInfo | None = None  # the camera_info message _camera was built from
        self._warned: set[str] = set()
        self._latencies: deque[float] = deque(maxlen=100)
        self._arrivals: deque[float] = deque(maxlen=100)
        self._last_status: TrackingStatus | None = None
        self._last_odom_base: tuple[float, np.ndarray] | None = None

        extractor = create_extractor(p("extractor"), ExtractorConfig(
            max_keypoints=p("max_keypoints"), threshold=None if p("threshold") <= 0 else p("threshold"),
            nms_radius=p("nms_radius"), device=p("device"), weights=p("weights") or None))
        self.vo = VisualOdometry(extractor, OdometryConfig(background_mapping=p("background_mapping")))
        self.get_logger().info(f"extractor {extractor.name} on {extractor.device}")
        self.history = TrackHistory()

        qos = qos_profile_sensor_data if p("qos") == "sensor_data" else QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self._sync = StampSynchronizer(p("depth_sync_tolerance"), self._on_frame) if p("use_depth") else None
        if p("compressed"):
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos)
        else:
            self.create_subscription(Image, "image", self._on_image, qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos)
        if self._sync is not None:
            self.create_subscription(Image, "depth", self._on_depth, qos)

        self.pub_keypoints = self.create_publisher(FrameKeypoints, "~/keypoints", 10)
        self.pub_status = self.create_publisher(TrackingStatus, "~/status", 10)
        self.pub_odometry = self.create_publisher(Odometry, "~/odometry", 10)
        self.pub_pose = self.create_publisher(PoseStamped, "~/pose", 10)
        self.pub_path = self.create_publisher(Path, "~/path", 10)
        self.pub_debug = self.create_publisher(Image, "~/debug_image", 2)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.path = Path()
        self.tf = TfOutput(self)
        if self.tf.kind is None:
            self.get_logger().info("neither tf2_ros nor tf2_msgs is installed: no TF output (odometry, pose and "
                                   "path are published)")
        if p("camera_frame"):
            self.tf.send_static(transform_message(self.T_base_cam, self.get_clock().now().to_msg(),
                                                  p("base_frame"), p("camera_frame")))
        self._diagnostics_timer = self.create_timer(p("diagnostics_period"), self.publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._warn_unknown_parameters()
        self._worker = threading.Thread(target=self._work, name="aliked_vo_worker", daemon=True)
        self._worker.start()

    # --- parameters ---------------------------------------------------------------------------------------------

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
        declare("max_keypoints", 1024, "keypoint budget per frame", integer=(16, 20000))
        declare("threshold", 0.0, "ALIKED score threshold; <= 0 selects top-k mode", floating=(0.0, 1.0))
        declare("nms_radius", 2, "non-maximum suppression radius, px", integer=(1, 8))
        declare("compressed", False, "subscribe to image/compressed (sensor_msgs/CompressedImage)")
        declare("use_depth", False, "subscribe to a registered depth image (16UC1 mm or 32FC1 m) for metric pose")
        declare("depth_sync_tolerance", 0.02, "max stamp difference between image and depth, s", floating=(0.0, 1.0))
        declare("camera_info_wait", 0.1, "longest wait for the camera_info stamped like an image, s",
                floating=(0.0, 2.0))
        declare("qos", "sensor_data", "input QoS: sensor_data (best effort) or reliable")
        declare("odom_frame", "odom", "odometry frame (REP 105)")
        declare("base_frame", "base_link", "robot base frame: child frame of the odometry")
        declare("camera_mount", [0.0, 0.0, 0.0],
                "camera optical frame in base_frame: x y z [qx qy qz qw]; 3 values = REP 103 optical rotation")
        declare("camera_frame", "", "camera optical frame: when set, base_frame -> camera_frame (camera_mount) is "
                "published once on /tf_static (latched); empty = the robot description publishes it")
        declare("background_mapping", True, "local bundle adjustment in a worker thread (poses never wait for it); "
                "false: inline, deterministic (the same poses as aliked-vo eval)")
        declare("publish_tf", True, "broadcast odom -> base on /tf", read_only=False)
        declare("path_max_length", 1000, "poses kept in ~/path", read_only=False, integer=(1, 1000000))
        declare("diagnostics_period", 1.0, "seconds between /diagnostics messages", read_only=False,
                floating=(0.05, 60.0))
        self._check_choice("qos", ("sensor_data", "reliable"))
        self._check_choice("extractor", EXTRACTORS)
        device = self._param("device")
        if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ConfigurationError(f"parameter device = {device!r} is invalid: it takes auto, cpu, cuda or cuda:N")
        try:
            self.T_base_cam = mount_transform(list(self._param("camera_mount")))
        except ValueError as error:
            raise ConfigurationError(f"parameter camera_mount = {list(self._param('camera_mount'))}: {error}") from error
        for name in ("odom_frame", "base_frame"):
            if not self._param(name):
                raise ConfigurationError(f"parameter {name} is empty: it names a TF frame")

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
                                                                                         self.publish_diagnostics)
                self.destroy_timer(old)  # cancel() alone leaves it in the executor's wait set
        return SetParametersResult(successful=True)

    # --- inputs (executor thread: store only) -------------------------------------------------------------------

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._camera_msgs.append(msg)
            self._lock.notify_all()

    def _on_image(self, msg) -> None:
        with self._lock:
            self.counts["received"] += 1
            self._arrivals.append(time.monotonic())
        if self._sync is not None:
            self._sync.add_image(stamp_seconds(msg.header.stamp), msg)
        else:
            self._on_frame(msg, None)

    def _on_depth(self, msg: Image) -> None:
        self._sync.add_depth(stamp_seconds(msg.header.stamp), msg)

    def _on_frame(self, image_msg, depth_msg) -> None:
        with self._lock:
            if self._pending is not None:
                self.counts["dropped"] += 1  # superseded before the worker took it
            self._pending = _Input(image_msg, depth_msg, time.monotonic())
            self._lock.notify_all()

    def _on_reset(self, request, response):
        with self._lock:
            self._reset_requested = True
        response.success, response.message = True, "the pipeline resets before the next frame"
        return response

    # --- worker ---------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                item, self._pending = self._pending, None
                camera_msg = self._camera_info_for(item.image_msg.header.stamp)
                if self._reset_requested:
                    self._reset_requested = False
                    self._reset("requested (reset service)")
            try:
                self._process(item, camera_msg)
            except Exception as error:  # never let one frame kill the worker; log and count
                self._reject("processing_error", f"frame failed: {error!r}")

    def _camera_info_for(self, stamp) -> CameraInfo | None:
        """The camera_info for an image (call with the lock held): the one with the image's stamp, else the newest.

        Drivers publish an image and its camera_info together, but their callbacks run in either order, so the
        worker waits up to ``camera_info_wait`` s for the matching one while none has arrived yet or while the
        stamps have matched so far; a stream whose camera_info stamps never match the images' never waits.
        """
        deadline = time.monotonic() + self._param("camera_info_wait")
        while True:
            match = next((m for m in reversed(self._camera_msgs) if m.header.stamp == stamp), None)
            if match is not None:
                self._camera_info_stamped = True
                return match
            remaining = deadline - time.monotonic()
            if self._stop or remaining <= 0 or (self._camera_msgs and not self._camera_info_stamped):
                break
            self._lock.wait(remaining)
        if self._camera_msgs:
            self._camera_info_stamped = False
            return self._camera_msgs[-1]
        return None

    def _reset(self, reason: str) -> None:
        """Reset before the next frame; its result carries ``reason`` (logged and counted in _process)."""
        self.vo.reset(reason)
        self.history.clear()
        self._last_odom_base = None

    def _reject(self, kind: str, message: str) -> None:
        """Count a bad input that was dropped; log the first of each kind as a warning, later ones at debug level."""
        self._count(self.counts, kind)
        self._log_once(kind, message)

    def _note(self, kind: str, message: str) -> None:
        """Count a problem with an input that was still processed (e.g. depth without valid pixels)."""
        self._count(self.notes, kind)
        self._log_once(kind, message)

    def _count(self, counter: Counter, kind: str) -> None:
        """Count from the worker thread (under the lock: the diagnostics timer copies the counters)."""
        with self._lock:
            counter[kind] += 1

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self.get_logger().warning(f"{message} (counted as '{kind}' in /diagnostics; further ones not logged)")
        else:
            self.get_logger().debug(message)

    def _camera_model(self, msg: CameraInfo | None) -> CameraModel | None:
        if msg is None:
            self._reject("no_camera_info", "no camera_info received yet: frames are not processed until one is")
            return None
        if msg is not self._camera_msg_used:
            self._camera_msg_used = msg
            try:
                self._camera = CameraModel.from_camera_info(msg)
            except CalibrationError as error:
                self._camera = None
                self._reject("bad_camera_info", f"unusable camera_info: {error}")
        elif self._camera is None:
            self._count(self.counts, "bad_camera_info")
        return self._camera

    def _process(self, item: _Input, camera_msg: CameraInfo | None) -> None:
        msg = item.image_msg
        camera = self._camera_model(camera_msg)
        if camera is None:
            return
        try:
            if isinstance(msg, CompressedImage):
                image = decode_compressed(msg.format, bytes(msg.data))
            else:
                image = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
            depth = None
            if item.depth_msg is not None:
                d = item.depth_msg
                depth = decode_depth(d.encoding, d.height, d.width, d.step, d.data, bool(d.is_bigendian))
                if not np.isfinite(depth).any():
                    self._note("depth_all_invalid", "depth image without one valid pixel: this frame is posed "
                               "without depth")
            result = self.vo.process(Frame(image, stamp_seconds(msg.header.stamp), camera, depth))
        except AlikedRosError as error:
            kind, what = next((k, w) for t, k, w in REJECTIONS if isinstance(error, t))
            self._reject(kind, f"{what}: {error}")
            return
        if result.reset_reason:
            self.get_logger().warning(f"pipeline reset: {result.reset_reason}")
            self._count(self.counts, "resets")
            self.history.clear()
            self._last_odom_base = None
        self._count(self.counts, "processed")
        self._publish(msg.header, result, image)
        with self._lock:
            self._latencies.append(time.monotonic() - item.received)

    # --- outputs --------------------------------------------------------------------------------------------------

    def _publish(self, header, result, image) -> None:
        features = result.features
        keypoints = FrameKeypoints(header=header, extractor=features.extractor, image_width=features.image_size[0],
                                   image_height=features.image_size[1])
        fill_frame_keypoints(keypoints, KeypointArrays(
            pixel_xy=features.keypoints, normalized_xy=result.normalized, scores=features.scores,
            track_ids=result.track_ids, track_ages=result.track_ages, inliers=result.inliers,
            descriptors=features.descriptors))
        self.pub_keypoints.publish(keypoints)

        t = result.timings_ms
        status = TrackingStatus(
            header=header, state=int(result.state), pose_source=result.pose_source, frame_index=result.frame_index,
            is_keyframe=result.is_keyframe, num_keypoints=len(features), num_matches=result.num_matches,
            num_inliers=result.num_inliers, num_tracks=result.num_tracks, num_landmarks=result.num_landmarks,
            map_id=result.map_id, reset_reason=result.reset_reason or "", relocalized=result.relocalized,
            frames_dropped=self.counts["dropped"],
            extract_ms=t["extract"], match_ms=t["match"], pose_ms=t["pose"], total_ms=t["total"])
        self._last_status = status

        if result.T_odom_camera is not None:
            self._publish_pose(header, base_odometry(result.T_odom_camera, self.T_base_cam))
        if self.pub_debug.get_subscription_count() > 0:
            self.history.update(result.track_ids, features.keypoints)
            caption = f"{features.extractor} {result.state.name.lower()} {result.num_inliers}/{result.num_matches}"
            drawn = draw_tracks(image, features.keypoints, result.track_ids, result.track_ages, result.inliers,
                                self.history, caption)
            self.pub_debug.publish(Image(header=header, height=drawn.shape[0], width=drawn.shape[1], encoding="rgb8",
                                         is_bigendian=0, step=drawn.shape[1] * 3, data=drawn.tobytes()))
        self.pub_status.publish(status)  # last: a consumer that waits for status has everything else already

    def _publish_pose(self, header, T_odom_base: np.ndarray) -> None:
        odom_frame, base_frame = self._param("odom_frame"), self._param("base_frame")
        position, orientation = T_odom_base[:3, 3], quaternion(T_odom_base[:3, :3])
        odometry = Odometry()
        odometry.header.stamp, odometry.header.frame_id, odometry.child_frame_id = header.stamp, odom_frame, base_frame
        pose = odometry.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in orientation)
        odometry.pose.covariance = UNKNOWN_COVARIANCE
        stamp = stamp_seconds(header.stamp)
        if self._last_odom_base is not None and stamp > self._last_odom_base[0]:
            linear, angular = twist(self._last_odom_base[1], T_odom_base, stamp - self._last_odom_base[0])
            tw = odometry.twist.twist
            tw.linear.x, tw.linear.y, tw.linear.z = (float(v) for v in linear)
            tw.angular.x, tw.angular.y, tw.angular.z = (float(v) for v in angular)
        odometry.twist.covariance = UNKNOWN_COVARIANCE
        self._last_odom_base = (stamp, T_odom_base)
        self.pub_odometry.publish(odometry)

        pose_stamped = PoseStamped()
        pose_stamped.header.stamp, pose_stamped.header.frame_id = header.stamp, odom_frame
        pose_stamped.pose = pose
        self.pub_pose.publish(pose_stamped)
        self.path.header.stamp, self.path.header.frame_id = header.stamp, odom_frame
        self.path.poses.append(pose_stamped)
        del self.path.poses[: max(0, len(self.path.poses) - self._param("path_max_length"))]
        self.pub_path.publish(self.path)

        # one transform per posed frame; stamps increase (a repeated stamp is refused before this, and time going
        # backwards, e.g. a bag loop with use_sim_time, resets the pipeline)
        if self._param("publish_tf"):
            self.tf.send(transform_message(T_odom_base, header.stamp, odom_frame, base_frame))

    def publish_diagnostics(self) -> None:
        with self._lock:  # the worker inserts keys into these while the executor thread reads them
            counts, notes = Counter(self.counts), Counter(self.notes)
            arrivals, latencies = list(self._arrivals), list(self._latencies)
        rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 and arrivals[-1] > arrivals[0] else 0.0
        latency = float(np.mean(latencies)) * 1e3 if latencies else 0.0
        status = self._last_status
        diag = DiagnosticStatus(name="aliked_vo: visual odometry frontend", hardware_id=self.get_fully_qualified_name())
        bad = {k: v for k, v in counts.items() if k not in ("received", "processed", "dropped", "resets")}
        if not self._camera_msgs or (self._camera is None and counts["processed"] == 0):
            diag.level, diag.message = DiagnosticStatus.ERROR, "no usable camera_info"
        elif status is not None and status.state == TrackingStatus.STATE_LOST:
            diag.level, diag.message = DiagnosticStatus.WARN, "tracking lost"
        elif bad or notes:
            problems = {**bad, **notes}
            diag.level, diag.message = DiagnosticStatus.WARN, "bad inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(problems.items()))
        else:
            diag.level, diag.message = DiagnosticStatus.OK, "tracking" if status is not None else "waiting for images"
        values = {
            "input_rate_hz": f"{rate:.2f}", "processing_latency_ms": f"{latency:.1f}",
            "frames_received": counts["received"], "frames_processed": counts["processed"],
            "frames_dropped": counts["dropped"], "frames_rejected": sum(bad.values()) + (self._sync.unmatched if self._sync else 0),
            "resets": counts["resets"],
            "tracking_state": TrackingState(status.state).name if status else "none",
            "inliers": status.num_inliers if status else 0, "keypoints": status.num_keypoints if status else 0,
            **{f"rejected_{k}": v for k, v in sorted(bad.items())},
            **{f"warning_{k}": v for k, v in sorted(notes.items())},
        }
        if self._sync is not None:
            values["images_without_depth"] = self._sync.unmatched
        diag.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        self.pub_diagnostics.publish(DiagnosticArray(header=self._diagnostics_header(), status=[diag]))

    def _diagnostics_header(self):
        from std_msgs.msg import Header

        return Header(stamp=self.get_clock().now().to_msg())

    def shutdown(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._worker.join(timeout=10)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = VoNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigurationError as error:
        print(f"aliked_vo: error: {error}", file=sys.stderr, flush=True)
        return 2
    except AlikedRosError as error:
        print(f"aliked_vo: error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":  # python -m aliked_ros.ros.node (the pip install's lib/aliked_ros/vo_node)
    sys.exit(main())
