"""Test process: publishes deterministic FrameKeypoints messages (seeded) once a subscriber is matched.

usage: publish_keypoints.py TOPIC COUNT NUM_KEYPOINTS DIM SEED
"""
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from aliked_ros.msg import FrameKeypoints
from aliked_ros.ros.messages import KeypointArrays, fill_frame_keypoints


def make_arrays(n: int, dim: int, seed: int) -> KeypointArrays:
    rng = np.random.default_rng(seed)
    desc = rng.standard_normal((n, dim)).astype(np.float32)
    return KeypointArrays(
        pixel_xy=(rng.random((n, 2)) * [639, 479]).astype(np.float32),
        normalized_xy=rng.standard_normal((n, 2)).astype(np.float32),
        scores=rng.random(n).astype(np.float32),
        track_ids=rng.integers(0, 2**63, n, dtype=np.uint64),
        track_ages=rng.integers(0, 1000, n, dtype=np.uint32),
        inliers=rng.random(n) > 0.3,
        descriptors=desc / np.linalg.norm(desc, axis=1, keepdims=True),
    )


def main() -> int:
    topic, count, n, dim, seed = sys.argv[1], *map(int, sys.argv[2:6])
    rclpy.init()
    node = rclpy.create_node("keypoint_test_publisher")
    pub = node.create_publisher(FrameKeypoints, topic, QoSProfile(depth=count, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    print("subscriber matched", flush=True)
    for i in range(count):
        msg = fill_frame_keypoints(FrameKeypoints(), make_arrays(n, dim, seed + i))
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + i, 123
        msg.header.frame_id = "camera_optical"
        msg.extractor, msg.image_width, msg.image_height = "aliked-t16", 640, 480
        pub.publish(msg)
        time.sleep(0.02)
    print("published", count, flush=True)
    try:
        rclpy.spin(node)  # keep serving (reliable delivery) until the test stops this process
    except KeyboardInterrupt:
        pass
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
