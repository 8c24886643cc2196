"""``aliked-vo replay SOURCE``: publish a dataset folder or a bag (anything ``aliked-vo eval`` reads) onto
image / camera_info / depth topics with the original stamps.

``--rate 1`` plays in real time, ``--rate 0`` as fast as possible; ``--wait-for STATUS_TOPIC`` publishes each
frame only after the aliked_vo node reported the previous one (lock-step: nothing is dropped, whatever the
processing speed). ``--clock`` publishes /clock from the frame stamps for nodes with use_sim_time. Ctrl-C stops
cleanly. Depth goes out as 32FC1 (metres; or 16UC1 millimetres on ``<depth>/compressedDepth`` with
``--compressed-depth png|rvl``), images as rgb8/mono8 (or PNG with ``--compressed``).

A stereo source (KITTI with image_1, EuRoC with cam1 — rectified on reading —, a stereo bag; ``--no-stereo``:
the left camera alone) goes out as ``<ns>/left/image_rect``, ``<ns>/left/camera_info``, ``<ns>/right/image_rect``,
``<ns>/right/camera_info``, both images of a pair with the same stamp; the camera_infos describe the rectified
pair (no distortion, P of the right camera with Tx = -fx B).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

from tqdm import tqdm

from aliked_ros.datasets import Prefetched, Sequence, open_sequence
from aliked_ros.tools.options import non_negative_float, non_negative_int, positive_float, positive_int

LOOP_GAP_S = 0.1  # stamp gap between the end of one loop and the start of the next


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="TUM/KITTI/EuRoC folder or rosbag (ROS 1 .bag, ROS 2 folder/.mcap/.db3)")
    parser.add_argument("--rate", type=non_negative_float, default=1.0, help="playback speed: 1 real time, 0 as fast as possible")
    parser.add_argument("--namespace", default="/camera", help="topics: <ns>/image, <ns>/camera_info, <ns>/depth")
    parser.add_argument("--image-topic", default=None, help="override <ns>/image")
    parser.add_argument("--camera-info-topic", default=None, help="override <ns>/camera_info")
    parser.add_argument("--depth-topic", default=None, help="override <ns>/depth")
    parser.add_argument("--stereo", action=argparse.BooleanOptionalAction, default=None,
                        help="publish both cameras of a stereo source (default: when the source has two)")
    parser.add_argument("--right-image-topic", default=None, help="stereo: override <ns>/right/image_rect")
    parser.add_argument("--right-camera-info-topic", default=None, help="stereo: override <ns>/right/camera_info")
    parser.add_argument("--no-depth", action="store_true", help="do not publish depth")
    parser.add_argument("--compressed", action="store_true", help="publish <image>/compressed (PNG) instead")
    parser.add_argument("--compressed-depth", choices=("png", "rvl"), default=None,
                        help="publish depth on <depth>/compressedDepth (16UC1 mm, compressed_depth_image_transport's "
                             "png or rvl) instead of 32FC1 metres on <depth>")
    parser.add_argument("--frame-id", default="camera_optical_frame")
    parser.add_argument("--clock", action="store_true", help="publish /clock from the frame stamps")
    parser.add_argument("--qos", choices=["reliable", "sensor_data"], default="reliable")
    parser.add_argument("--loop", action="store_true", help="start over at the end (stamps keep increasing)")
    parser.add_argument("--wait-for", default=None, metavar="STATUS_TOPIC",
                        help="lock-step: wait for an aliked_ros/TrackingStatus with each frame's stamp")
    parser.add_argument("--wait-timeout", type=positive_float, default=60.0, help="s per frame in lock-step")
    parser.add_argument("--wait-subscribers", type=non_negative_float, default=30.0,
                        help="s to wait for an image subscriber before starting (0: do not wait)")
    parser.add_argument("--camera-info", default=None, help="camera_info YAML overriding the source's calibration")
    parser.add_argument("--bag-image-topic", default=None, help="image topic to read from a bag (default: found)")
    parser.add_argument("--bag-camera-info-topic", default=None, help="camera_info topic to read from a bag")
    parser.add_argument("--bag-depth-topic", default=None,
                        help="depth topic to read from a bag: an Image or a .../compressedDepth (default: found)")
    parser.add_argument("--max-frames", type=positive_int, default=None)
    parser.add_argument("--start", type=non_negative_int, default=0, metavar="N",
                        help="skip the first N frames of the source (e.g. to continue an earlier replay)")
    parser.add_argument("--loopback", action="store_true", help="keep DDS on this machine")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class ReplaySummary:
    frames_published: int
    depth_published: int
    duration_s: float
    first_stamp: float | None
    last_stamp: float | None
    status_missed: int  # lock-step frames whose status did not arrive in time
    right_published: int = 0  # stereo: right images published (a left image without its right one: none)


class Replayer:
    """Publishes frames of a sequence; owns one rclpy node (the caller owns rclpy.init). ``stereo``: publish the
    left and right cameras (topics in the module docstring); ``depth``: the sequence has depth images (a depth
    topic is advertised, and waited for, only then)."""

    def __init__(self, node, args: argparse.Namespace, stereo: bool = False, depth: bool = True) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self.node, self.args = node, args
        ns = args.namespace.rstrip("/")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE) if args.qos == "reliable" else qos_profile_sensor_data
        image_topic = args.image_topic or (f"{ns}/left/image_rect" if stereo else f"{ns}/image")

        def image_publisher(topic: str):
            if args.compressed:
                return node.create_publisher(CompressedImage, f"{topic}/compressed", qos)
            return node.create_publisher(Image, topic, qos)

        self.pub_image = image_publisher(image_topic)
        self.pub_info = node.create_publisher(CameraInfo, args.camera_info_topic or
                                              (f"{ns}/left/camera_info" if stereo else f"{ns}/camera_info"), qos)
        self.depth_codec = getattr(args, "compressed_depth", None)  # callers may build args without it
        depth_topic = args.depth_topic or f"{ns}/depth"
        self.pub_depth = None if args.no_depth or stereo or not depth else \
            node.create_publisher(CompressedImage, f"{depth_topic}/compressedDepth", qos) if self.depth_codec else \
            node.create_publisher(Image, depth_topic, qos)
        self.pub_right_image = self.pub_right_info = None
        if stereo:
            self.pub_right_image = image_publisher(getattr(args, "right_image_topic", None) or f"{ns}/right/image_rect")
            self.pub_right_info = node.create_publisher(
                CameraInfo, getattr(args, "right_camera_info_topic", None) or f"{ns}/right/camera_info", qos)
        self.pub_clock = node.create_publisher(Clock, "/clock", 10) if args.clock else None
        self._status_stamps: set[tuple[int, int]] = set()
        self.published_at: dict[tuple[int, int], float] = {}  # stamp (sec, nanosec) -> monotonic publish time
        self.status_subscription = None
        if args.wait_for:
            from aliked_ros.msg import TrackingStatus

            self.status_subscription = node.create_subscription(TrackingStatus, args.wait_for,
                                     lambda m: self._status_stamps.add((m.header.stamp.sec, m.header.stamp.nanosec)),
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def _spin(self, seconds: float, until=lambda: False) -> bool:
        import rclpy

        deadline = time.monotonic() + seconds
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            rclpy.spin_once(self.node, timeout_sec=min(remaining, 0.02))
        return True

    def subscribed(self) -> bool:
        """Every input we publish (image, camera_info, depth if any) has a subscriber: a frame sent earlier
        could lose its depth or camera_info to a subscription that is still being matched."""
        return not self.unsubscribed()

    def wait_for_subscribers(self, timeout: float) -> bool:
        return self._spin(timeout, self.subscribed)

    def unsubscribed(self) -> list[str]:
        """The topics we publish that nobody subscribes to (yet)."""
        publishers = [self.pub_image, self.pub_info, self.pub_depth, self.pub_right_image, self.pub_right_info]
        return [p.topic_name for p in publishers if p is not None and p.get_subscription_count() == 0]

    def play(self, sequence: Sequence, progress: bool = True, on_frame=None) -> ReplaySummary:
        """Publish the sequence (see the module docstring); ``on_frame(index, frame)`` is called after each frame
        is published."""
        from rosgraph_msgs.msg import Clock

        from aliked_ros.ros.publishing import (camera_info_message, compressed_depth_message, compressed_message,
                                               image_message, make_header)

        args = self.args
        published = depth_published = right_published = missed = 0
        first = last = None
        offset = 0.0  # added to stamps on each loop so that time never goes backwards
        sequence_start = None
        start_wall = time.monotonic()
        start = getattr(args, "start", 0) or 0  # callers may build args without it
        available = max(0, len(sequence) - start)
        total = min(available, args.max_frames) if args.max_frames else available
        bar = tqdm(total=total, desc="replay", unit="frame", file=sys.stderr, disable=not progress, leave=False)
        while True:
            count = 0
            for index, frame in enumerate(sequence):
                if index < start:
                    continue
                if count == total:
                    break
                sequence_start = frame.stamp if sequence_start is None else sequence_start
                stamp = frame.stamp + offset
                if first is None:  # the clock starts with the first frame sent (not before --start's skipping)
                    first, start_wall = stamp, time.monotonic()
                if args.rate > 0 and last is not None:
                    due = start_wall + (stamp - first) / args.rate
                    self._spin(max(0.0, due - time.monotonic()))
                header = make_header(stamp, args.frame_id)
                if self.pub_clock is not None:
                    self.pub_clock.publish(Clock(clock=header.stamp))
                self.pub_info.publish(camera_info_message(frame.camera, header))
                if self.pub_right_image is not None and frame.right_image is not None:
                    info = camera_info_message(frame.stereo.right, header)
                    info.p = frame.stereo.projections()[1].reshape(-1).tolist()  # Tx = -fx B
                    self.pub_right_info.publish(info)
                    self.pub_right_image.publish(compressed_message(frame.right_image, header) if args.compressed
                                                 else image_message(frame.right_image, header))
                    right_published += 1
                if self.pub_depth is not None and frame.depth is not None:
                    self.pub_depth.publish(compressed_depth_message(frame.depth, header, self.depth_codec)
                                           if self.depth_codec
                                           else image_message(frame.depth, header))
                    depth_published += 1
                self.pub_image.publish(compressed_message(frame.image, header) if args.compressed
                                       else image_message(frame.image, header))
                self.published_at[(header.stamp.sec, header.stamp.nanosec)] = time.monotonic()
                if on_frame is not None:
                    on_frame(count, frame)
                published += 1
                count += 1
                last = stamp
                bar.update(1)
                key = (header.stamp.sec, header.stamp.nanosec)
                if args.wait_for and not self._spin(args.wait_timeout, lambda: key in self._status_stamps):
                    missed += 1
                else:
                    self._spin(0.0)
            if not args.loop:
                break
            if last is None:
                break  # an empty sequence
            offset = last - sequence_start + LOOP_GAP_S
        bar.close()
        return ReplaySummary(published, depth_published, time.monotonic() - start_wall, first, last, missed,
                             right_published)


def run(args: argparse.Namespace) -> int:
    import rclpy

    from aliked_ros.ros.dds import apply_loopback_environment

    if args.loopback:
        apply_loopback_environment()
    sequence = open_sequence(args.source, camera_info=args.camera_info, use_depth=not args.no_depth,
                             image_topic=args.bag_image_topic, camera_info_topic=args.bag_camera_info_topic,
                             depth_topic=args.bag_depth_topic, stereo=args.stereo)
    rclpy.init()
    node = rclpy.create_node("aliked_replay")
    try:
        replayer = Replayer(node, args, stereo=sequence.has_stereo, depth=sequence.has_depth)
        if args.wait_subscribers > 0 and not replayer.wait_for_subscribers(args.wait_subscribers):
            print(f"replay: no subscriber on {', '.join(replayer.unsubscribed())} after {args.wait_subscribers:.0f} s; "
                  "publishing anyway", file=sys.stderr)
        status = replayer.status_subscription
        if status is not None and not replayer._spin(max(args.wait_subscribers, 5.0),
                                                     lambda: status.get_publisher_count() > 0):
            print(f"replay: error: nobody publishes {status.topic_name} (--wait-for) after "
                  f"{max(args.wait_subscribers, 5.0):.0f} s: is the node running, is the topic right (the node's "
                  "is <its namespace>/aliked_vo/status)?", file=sys.stderr)
            return 1
        summary = replayer.play(Prefetched(sequence), progress=not args.quiet)  # read ahead while publishing
        replayer._spin(0.5)  # let reliable publishers deliver the tail
    except KeyboardInterrupt:
        print("replay: interrupted", file=sys.stderr)
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if summary.status_missed:
        print(f"replay: warning: {summary.status_missed} of {summary.published} frames got no status on "
              f"{args.wait_for} within {args.wait_timeout:g} s", file=sys.stderr)
    print(json.dumps({"source": str(args.source), **summary.__dict__}))
    return 0
