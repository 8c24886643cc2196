"""TF output of the node: odom -> base on ``/tf``, base -> camera on ``/tf_static`` (latched).

With tf2_ros (every ROS install) its broadcasters are used. Without it (the PyPI wheels have no tf2_ros) but with
``tf2_msgs`` importable, the same messages go out on the same topics with the same QoS as tf2_ros's broadcasters
(``/tf``: reliable, volatile, depth 100; ``/tf_static``: reliable, transient local, depth 1), so any TF listener or
``ros2 topic echo /tf`` sees no difference. With neither, ``kind`` is None and nothing is sent.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TransformStamped
from scipy.spatial.transform import Rotation

TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"


def transform_message(T_parent_child: np.ndarray, stamp, parent: str, child: str) -> TransformStamped:
    """``child`` in ``parent`` (T_parent_child maps points from child to parent)."""
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, parent, child
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in T_parent_child[:3, 3])
    q.x, q.y, q.z, q.w = (float(v) for v in Rotation.from_matrix(T_parent_child[:3, :3]).as_quat())
    return msg


class TfOutput:
    def __init__(self, node) -> None:
        self.kind: str | None = None
        self._broadcaster = self._static_broadcaster = None
        self._pub = self._pub_static = None
        self._node = node
        try:
            from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster
        except ImportError:
            pass
        else:
            self._broadcaster, self._static_broadcaster = TransformBroadcaster(node), None
            self._static_class = StaticTransformBroadcaster
            self.kind = "tf2_ros"
            return
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            return
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self._message = TFMessage
        self._pub = node.create_publisher(TFMessage, TF_TOPIC, QoSProfile(
            depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE))
        self._static_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.kind = "tf2_msgs"

    def send(self, transform: TransformStamped) -> None:
        if self._broadcaster is not None:
            self._broadcaster.sendTransform(transform)
        elif self._pub is not None:
            self._pub.publish(self._message(transforms=[transform]))

    def send_static(self, transform: TransformStamped) -> None:
        """Latched: late subscribers get it too. Created on first use, so a node that publishes no static
        transform does not appear as a /tf_static publisher."""
        if self.kind == "tf2_ros":
            if self._static_broadcaster is None:
                self._static_broadcaster = self._static_class(self._node)
            self._static_broadcaster.sendTransform(transform)
        elif self.kind == "tf2_msgs":
            if self._pub_static is None:
                self._pub_static = self._node.create_publisher(self._message, TF_STATIC_TOPIC, self._static_qos)
            self._pub_static.publish(self._message(transforms=[transform]))
