"""Custom messages over a real DDS graph on loopback: published by one process, received by another."""
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.qos import QoSProfile, ReliabilityPolicy

from aliked_ros.msg import FrameKeypoints, TrackingStatus
from aliked_ros.ros.messages import read_frame_keypoints

sys.path.insert(0, str(Path(__file__).parent / "nodes"))
from publish_keypoints import make_arrays  # noqa: E402

NODES = Path(__file__).parent / "nodes"


def test_frame_keypoints_cross_process(ros_context, ros_process):
    count, n, dim, seed = 5, 1000, 64, 7
    received: list[FrameKeypoints] = []
    node = rclpy.create_node("keypoint_test_subscriber", context=ros_context)
    qos = QoSProfile(depth=count, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(FrameKeypoints, "/camera/keypoints", received.append, qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    publisher = ros_process(
        [sys.executable, str(NODES / "publish_keypoints.py"), "/camera/keypoints", str(count), str(n), str(dim),
         str(seed)], name="publisher")
    deadline = time.monotonic() + 60
    while len(received) < count and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    assert publisher.running, publisher.output()
    assert len(received) == count, f"received {len(received)} of {count}\n{publisher.output()}"
    for i, msg in enumerate(received):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1000 + i, 123, "camera_optical")
        assert (msg.extractor, msg.image_width, msg.image_height) == ("aliked-t16", 640, 480)
        assert msg.descriptor_type == FrameKeypoints.DESCRIPTOR_FLOAT32 and msg.descriptor_size == dim
        got, expected = read_frame_keypoints(msg), make_arrays(n, dim, seed + i)
        assert got.descriptors.shape == (1000, 64) and got.descriptors.dtype == np.float32
        for field in expected.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
    assert publisher.stop() in (0, -2), publisher.output()
    executor.shutdown()
    node.destroy_node()


def test_status_message_constants_and_fields():
    msg = TrackingStatus(state=TrackingStatus.STATE_LOST, pose_source="none", num_keypoints=3, total_ms=1.5)
    assert (TrackingStatus.STATE_INITIALIZING, TrackingStatus.STATE_TRACKING, TrackingStatus.STATE_LOST) == (0, 1, 2)
    restored = deserialize_message(serialize_message(msg), TrackingStatus)
    assert restored == msg
