"""Test side of a real ROS graph around the aliked_vo node: publishes frames (image, camera_info, depth; or a
rectified stereo pair: left/right image_rect and camera_info) and collects the node's outputs, all from the pytest
process; the node runs in its own process."""
from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from aliked_ros.msg import FrameKeypoints, TrackingStatus


def camera_info_msg(camera, header) -> CameraInfo:
    msg = CameraInfo(header=header, width=camera.width, height=camera.height, distortion_model=camera.distortion_model)
    msg.k = camera.K.reshape(-1).tolist()
    msg.d = list(camera.distortion)
    msg.p = np.hstack([camera.K, np.zeros((3, 1))]).reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    return msg


def stereo_camera_info_msgs(stereo, header) -> tuple[CameraInfo, CameraInfo]:
    """(left, right) camera_info of a rectified pair as a stereo driver publishes them: no distortion, R = I,
    P of the right camera with Tx = -fx B."""
    left, right = camera_info_msg(stereo.left, header), camera_info_msg(stereo.right, header)
    left.p, right.p = (P.reshape(-1).tolist() for P in stereo.projections())
    return left, right


def image_msg(image: np.ndarray, header, encoding: str = "rgb8") -> Image:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return Image(header=header, height=image.shape[0], width=image.shape[1], encoding=encoding, is_bigendian=0,
                 step=image.shape[1] * channels * image.dtype.itemsize, data=np.ascontiguousarray(image).tobytes())


def stamp_of(seconds: float):
    from builtin_interfaces.msg import Time

    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class VoGraph:
    """Publishers to the node's inputs and subscribers to its outputs, on one test node."""

    def __init__(self, context, namespace: str = "/cam", node_ns: str = "/aliked_vo", reliable: bool = False,
                 compressed: bool = False, stereo: bool = False, compressed_depth: bool = False) -> None:
        """``stereo``: publish <namespace>/left/image_rect, left/camera_info, right/image_rect, right/camera_info
        (the node with stereo:=true and those remapped) instead of image and camera_info. ``compressed_depth``:
        depth as compressed_depth_image_transport's messages on <namespace>/depth/compressedDepth (``publish``'s
        ``depth_encoding`` is then the codec, png or rvl)."""
        self.node = rclpy.create_node("vo_test_client", context=context)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        out_qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.compressed, self.stereo, self.node_ns = compressed, stereo, node_ns
        image_type, suffix = (CompressedImage, "/compressed") if compressed else (Image, "")
        image_topic, info_topic = (f"{namespace}/left/image_rect", f"{namespace}/left/camera_info") if stereo else \
            (f"{namespace}/image", f"{namespace}/camera_info")
        self.pub_image = self.node.create_publisher(image_type, image_topic + suffix, qos)
        self.pub_info = self.node.create_publisher(CameraInfo, info_topic, qos)
        self.compressed_depth = compressed_depth
        self.pub_depth = self.node.create_publisher(CompressedImage, f"{namespace}/depth/compressedDepth", qos) \
            if compressed_depth else self.node.create_publisher(Image, f"{namespace}/depth", qos)
        self.pub_right_image = self.pub_right_info = None
        if stereo:
            self.pub_right_image = self.node.create_publisher(image_type, f"{namespace}/right/image_rect{suffix}", qos)
            self.pub_right_info = self.node.create_publisher(CameraInfo, f"{namespace}/right/camera_info", qos)
        self.keypoints: list[FrameKeypoints] = []
        self.status: list[TrackingStatus] = []
        self.odometry: list[Odometry] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.outputs = [
            self.node.create_subscription(FrameKeypoints, f"{node_ns}/keypoints", self.keypoints.append, out_qos),
            self.node.create_subscription(TrackingStatus, f"{node_ns}/status", self.status.append, out_qos),
            self.node.create_subscription(Odometry, f"{node_ns}/odometry", self.odometry.append, out_qos),
        ]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, out_qos)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.published = 0

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def wait_for_node(self, process, timeout: float = 120.0, depth: bool = False) -> None:
        """Until the node (model loaded) subscribes to our inputs and its outputs are matched."""
        inputs = [self.pub_image, self.pub_info] + ([self.pub_depth] if depth else []) + \
            ([self.pub_right_image, self.pub_right_info] if self.stereo else [])
        ok = self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in inputs) or not process.running,
                             timeout)
        assert ok and process.running, f"node did not come up:\n{process.output()}"
        # our subscriptions to its outputs must be matched too, or the first outputs are lost (volatile QoS)
        assert self.spin_until(lambda: all(sub.get_publisher_count() > 0 for sub in self.outputs), 30)

    def publish(self, frame, depth_encoding: str | None = None, stamp: float | None = None, camera=None,
                image: np.ndarray | None = None, right: bool = True, right_info: CameraInfo | None = None,
                right_image: np.ndarray | None = None) -> float:
        """One frame. Stereo graphs: the right camera_info (``right_info``, else the frame's pair) and image
        (``right_image``, else the frame's) too, unless ``right`` is False (a right stream that stopped)."""
        stamp = frame.stamp if stamp is None else stamp
        self.publish_messages(self.messages(frame, depth_encoding, stamp, camera, image, right, right_info,
                                            right_image))
        return stamp

    def messages(self, frame, depth_encoding: str | None = None, stamp: float | None = None, camera=None,
                 image: np.ndarray | None = None, right: bool = True, right_info: CameraInfo | None = None,
                 right_image: np.ndarray | None = None) -> list[tuple]:
        """``publish``'s (publisher, message) pairs for one frame, built ahead (the image last)."""
        stamp = frame.stamp if stamp is None else stamp
        from std_msgs.msg import Header

        header = Header(stamp=stamp_of(stamp), frame_id="camera_rgb_optical_frame")
        out = []
        if self.stereo:
            left_info, default_right_info = stereo_camera_info_msgs(frame.stereo, header)
            out.append((self.pub_info, left_info))
            if right:
                if right_info is not None:
                    right_info.header = header
                out.append((self.pub_right_info, right_info or default_right_info))
                out.append((self.pub_right_image, self._image_message(
                    frame.right_image if right_image is None else right_image, header)))
        else:
            out.append((self.pub_info, camera_info_msg(camera or frame.camera, header)))
        if depth_encoding is not None and frame.depth is not None and self.compressed_depth:
            from aliked_ros.ros.publishing import compressed_depth_message

            out.append((self.pub_depth, compressed_depth_message(frame.depth, header, depth_encoding)))
        elif depth_encoding is not None and frame.depth is not None:
            depth = frame.depth.astype(np.float32) if depth_encoding == "32FC1" else \
                np.nan_to_num(frame.depth * 1000, nan=0).round().astype(np.uint16)
            out.append((self.pub_depth, image_msg(depth, header, depth_encoding)))
        out.append((self.pub_image, self._image_message(frame.image if image is None else image, header)))
        return out

    def publish_messages(self, messages: list[tuple]) -> None:
        """Publish one frame's ``messages`` (counted as one published frame)."""
        for publisher, message in messages:
            publisher.publish(message)
        self.published += 1

    def _image_message(self, image: np.ndarray, header):
        if self.compressed:
            bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            ok, png = cv2.imencode(".png", bgr)
            return CompressedImage(header=header, format="png", data=png.tobytes())
        return image_msg(image, header, "rgb8" if image.ndim == 3 else "mono8")

    def publish_and_wait(self, frame, timeout: float = 60.0, **kwargs) -> TrackingStatus:
        """Lock-step: publish one frame, wait for the node's status for its stamp (republish once if the frame
        was lost in transport)."""
        for attempt in range(2):
            stamp = self.publish(frame, **kwargs)
            key = stamp_of(stamp)
            if self.spin_until(lambda: any(s.header.stamp == key for s in self.status), timeout / 2):
                return next(s for s in self.status if s.header.stamp == key)
        raise AssertionError(f"no status for the frame stamped {stamp}")

    def latest_diagnostics(self) -> dict[str, str]:
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name.startswith(f"{self.node_ns.lstrip('/')}:"):  # this node's, not another's
                    return {kv.key: kv.value for kv in status.values} | {"_level": status.level, "_message": status.message}
        return {}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def node_command(*ros_args: str) -> list[str]:
    return [sys.executable, "-m", "aliked_ros.cli", "run", "--ros-args", *ros_args]
