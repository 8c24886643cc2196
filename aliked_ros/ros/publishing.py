"""Numpy frames -> sensor_msgs (Image, CameraInfo, CompressedImage), used by replay and the demo; and the
node's publisher set (``OutputSet``).
Arrays go in as ``bytes`` (assigning ndarrays to message fields is ~100x slower)."""
from __future__ import annotations

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from aliked_ros.compressed_depth import encode_compressed_depth
from aliked_ros.geometry.camera import CameraModel
from aliked_ros.msg import FrameKeypoints, TrackingStatus
from aliked_ros.ros.frames import quaternion
from aliked_ros.ros.messages import KeypointArrays, fill_frame_keypoints
from aliked_ros.ros.tf import TfOutput, transform_message
from aliked_ros.ros.visualization import TrackHistory, draw_tracks


def ros_time(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def make_header(seconds: float, frame_id: str) -> Header:
    return Header(stamp=ros_time(seconds), frame_id=frame_id)


def image_message(image: np.ndarray, header: Header) -> Image:
    """rgb8 for (H,W,3) uint8, mono8 for (H,W) uint8, 32FC1 for float32 depth in metres."""
    if image.dtype == np.float32 and image.ndim == 2:
        encoding, channels = "32FC1", 1
    elif image.dtype == np.uint8:
        encoding, channels = ("rgb8", 3) if image.ndim == 3 else ("mono8", 1)
    else:
        raise ValueError(f"no ROS encoding for {image.dtype} {image.shape}")
    data = np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<")).tobytes()
    return Image(header=header, height=image.shape[0], width=image.shape[1], encoding=encoding, is_bigendian=0,
                 step=image.shape[1] * channels * image.dtype.itemsize, data=data)


def compressed_message(image: np.ndarray, header: Header, fmt: str = "png") -> CompressedImage:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(f".{fmt}", bgr)
    if not ok:
        raise ValueError(f"cannot encode image as {fmt}")
    return CompressedImage(header=header, format=fmt, data=encoded.tobytes())


def compressed_depth_message(depth: np.ndarray, header: Header, codec: str = "png") -> CompressedImage:
    """Depth in metres as compressed_depth_image_transport publishes a 16UC1 (millimetre) depth image."""
    format_, data = encode_compressed_depth(depth, codec, "16UC1")
    return CompressedImage(header=header, format=format_, data=data)


def camera_info_message(camera: CameraModel, header: Header) -> CameraInfo:
    msg = CameraInfo(header=header, width=camera.width, height=camera.height, distortion_model=camera.distortion_model)
    msg.k = camera.K.reshape(-1).tolist()
    msg.d = [float(c) for c in camera.distortion]
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = np.hstack([camera.K, np.zeros((3, 1))]).reshape(-1).tolist()
    return msg


class OutputSet:
    """The node's publishers and what goes out on them, per processed frame (called from the worker thread only):
    ``~/keypoints``, ``~/status``, ``~/odometry``, ``~/pose``, ``~/path``, ``/tf`` (odom -> base), ``/tf_static``
    (base -> camera, once), ``~/debug_image`` (drawn only while subscribed), ``/diagnostics``.

    Within a run TF stamps strictly increase: a transform not stamped after the last one sent is not sent
    (``publish_odometry`` returns False; the node counts it). A pose stamped before the last one starts a new run
    (time went backwards: a bag played again): ``~/path`` is emptied and TF starts again from that stamp.
    Parameters that change at run time (``publish_tf``, ``path_max_length``) are read through ``param`` at each
    use.
    """

    def __init__(self, node, param) -> None:


        self._node, self._param = node, param
        self.keypoints = node.create_publisher(FrameKeypoints, "~/keypoints", 10)
        self.status = node.create_publisher(TrackingStatus, "~/status", 10)
        self.odometry = node.create_publisher(Odometry, "~/odometry", 10)
        self.pose = node.create_publisher(PoseStamped, "~/pose", 10)
        self.path_pub = node.create_publisher(Path, "~/path", 10)
        self.debug = node.create_publisher(Image, "~/debug_image", 2)
        self.diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.path = Path()
        self.history = TrackHistory()
        self.tf = TfOutput(node)
        self._last_tf_ns: int | None = None
        self._last_pose_ns: int | None = None  # the newest ~/pose stamp: one before it starts a new run

    def send_static(self, T_base_cam, base_frame: str, camera_frame: str) -> None:

        self.tf.send_static(transform_message(T_base_cam, self._node.get_clock().now().to_msg(), base_frame,
                                              camera_frame))

    def clear_tracks(self) -> None:
        self.history.clear()

    def publish_keypoints(self, header, result) -> None:

        features = result.features
        msg = FrameKeypoints(header=header, extractor=features.extractor, image_width=features.image_size[0],
                             image_height=features.image_size[1])
        self.keypoints.publish(fill_frame_keypoints(msg, KeypointArrays(
            pixel_xy=features.keypoints, normalized_xy=result.normalized, scores=features.scores,
            track_ids=result.track_ids, track_ages=result.track_ages, inliers=result.inliers,
            descriptors=features.descriptors)))

    def publish_status(self, header, result, frames_dropped: int) -> None:
        """Last of a frame's outputs: a consumer that waits for the status has everything else already."""

        t = result.timings_ms
        self.status.publish(TrackingStatus(
            header=header, state=int(result.state), pose_source=result.pose_source, frame_index=result.frame_index,
            is_keyframe=result.is_keyframe, num_keypoints=len(result.features), num_matches=result.num_matches,
            num_inliers=result.num_inliers, num_tracks=result.num_tracks, num_landmarks=result.num_landmarks,
            map_id=result.map_id, reset_reason=result.reset_reason or "", relocalized=result.relocalized,
            frames_dropped=frames_dropped, extract_ms=t["extract"], match_ms=t["match"], pose_ms=t["pose"],
            total_ms=t["total"]))

    def publish_debug(self, header, result, image) -> None:

        if self.debug.get_subscription_count() == 0:
            return
        features = result.features
        self.history.update(result.track_ids, features.keypoints)
        caption = f"{features.extractor} {result.state.name.lower()} {result.num_inliers}/{result.num_matches}"
        drawn = draw_tracks(image, features.keypoints, result.track_ids, result.track_ages, result.inliers,
                            self.history, caption)
        self.debug.publish(Image(header=header, height=drawn.shape[0], width=drawn.shape[1], encoding="rgb8",
                                 is_bigendian=0, step=drawn.shape[1] * 3, data=drawn.tobytes()))

    def publish_odometry(self, header, odom) -> bool:
        """``~/odometry`` always; unless ``odom.null``: ``~/pose``, ``~/path`` and TF. False when TF was due but
        not sent (stamp not after the last one sent)."""


        odom_frame, base_frame = self._param("odom_frame"), self._param("base_frame")
        msg = Odometry()
        msg.header.stamp, msg.header.frame_id, msg.child_frame_id = header.stamp, odom_frame, base_frame
        pose = msg.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in odom.T_odom_base[:3, 3])
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
            float(v) for v in quaternion(odom.T_odom_base[:3, :3]))
        msg.pose.covariance = [float(v) for v in odom.pose_covariance.reshape(-1)]
        tw = msg.twist.twist
        tw.linear.x, tw.linear.y, tw.linear.z = (float(v) for v in odom.linear)
        tw.angular.x, tw.angular.y, tw.angular.z = (float(v) for v in odom.angular)
        msg.twist.covariance = [float(v) for v in odom.twist_covariance.reshape(-1)]
        self.odometry.publish(msg)
        if odom.null:
            return True

        if self._last_pose_ns is not None and odom.stamp_ns < self._last_pose_ns:
            # time went backwards (a bag played again, /clock restarted; the core has reset): a new run, whose
            # path starts empty and whose transforms are sent from its first stamp on (tf2 listeners drop their
            # buffers when sim time jumps back)
            self.path.poses.clear()
            self._last_tf_ns = None
        self._last_pose_ns = odom.stamp_ns
        pose_stamped = PoseStamped()
        pose_stamped.header.stamp, pose_stamped.header.frame_id = header.stamp, odom_frame
        pose_stamped.pose = pose
        self.pose.publish(pose_stamped)
        self.path.header.stamp, self.path.header.frame_id = header.stamp, odom_frame
        self.path.poses.append(pose_stamped)
        del self.path.poses[: max(0, len(self.path.poses) - self._param("path_max_length"))]
        self.path_pub.publish(self.path)
        if not self._param("publish_tf"):
            return True
        if self._last_tf_ns is not None and odom.stamp_ns <= self._last_tf_ns:
            return False
        self._last_tf_ns = odom.stamp_ns
        self.tf.send(transform_message(odom.T_odom_base, header.stamp, odom_frame, base_frame))
        return True

    def publish_diagnostics(self, level: int, message: str, values: dict[str, str]) -> None:

        # named by the node (aliked_vo, or front/aliked_vo under a namespace): aggregators key on the name
        status = DiagnosticStatus(name=f"{self._node.get_fully_qualified_name().lstrip('/')}: visual odometry frontend",
                                  level=bytes([level]), message=message,
                                  hardware_id=self._node.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self.diagnostics.publish(DiagnosticArray(header=Header(stamp=self._node.get_clock().now().to_msg()),
                                                 status=[status]))
