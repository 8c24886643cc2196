"""Helpers of the fault tests (test_faults.py): small synthetic frames, the node with ORB on /cam, a /clock
publisher, a /tf recorder, and the node's frame accounting read from /diagnostics."""
from __future__ import annotations

import functools
import os
import signal
import time

from aliked_ros.odometry import Frame
from vo_graph import VoGraph, node_command, stamp_of

WIDTH, HEIGHT = 320, 240
RATE_HZ = 15.0
START_STAMP = 1000.0


@functools.lru_cache(maxsize=4)
def lap(width: int = WIDTH, height: int = HEIGHT, frames: int = 120) -> tuple[Frame, ...]:
    """The first ``frames`` frames of the soak's seamless lap (aliked_ros.tools.soak; ORB tracks them at 320x240),
    with depth (metres), stamped START_STAMP + i / RATE_HZ (to the microsecond)."""
    from aliked_ros.tools.soak import SoakConfig, lap_sequence

    sequence = lap_sequence(SoakConfig(width=width, height=height, rate_hz=RATE_HZ))
    rendered = (sequence.render(i) for i in range(frames))
    return tuple(Frame(image, round(START_STAMP + i / RATE_HZ, 6), sequence.camera, depth)  # TUM files: µs
                 for i, (image, depth) in enumerate(rendered))


def start_orb_node(ros_process, *extra: str, name: str = "vo_node"):
    """The node on /cam with ORB, reliable input QoS and diagnostics every 0.2 s."""
    args = ["-r", "image:=/cam/image", "-r", "camera_info:=/cam/camera_info", "-r", "depth:=/cam/depth",
            "-p", "extractor:=orb", "-p", "device:=cpu", "-p", "qos:=reliable", "-p", "diagnostics_period:=0.2", *extra]
    return ros_process(node_command(*args), name=name)


def counts(diagnostics: dict[str, str]) -> dict[str, int]:
    return {k: int(diagnostics.get(f"frames_{k}", 0)) for k in ("received", "processed", "dropped", "rejected")}


def accounted(diagnostics: dict[str, str], expected_received: int | None = None) -> bool:
    """The node's identity once idle: received = processed + dropped + rejected (and = expected, when given)."""
    if not diagnostics:
        return False
    c = counts(diagnostics)
    ok = c["received"] == c["processed"] + c["dropped"] + c["rejected"]
    return ok and (expected_received is None or c["received"] == expected_received)


def wait_accounted(graph: VoGraph, expected_received: int | None, timeout: float = 20.0) -> dict[str, str]:
    """Spin until the newest /diagnostics shows every frame accounted; that dict (asserted by the caller)."""
    graph.spin_until(lambda: accounted(graph.latest_diagnostics(), expected_received), timeout)
    return graph.latest_diagnostics()


class TfRecorder:
    """Every odom -> base transform the node sends on /tf: (stamp seconds, arrival order)."""

    def __init__(self, graph: VoGraph) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        self.stamps: list[float] = []
        self.subscription = graph.node.create_subscription(
            TFMessage, "/tf", self._on_tf, QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE))

    def _on_tf(self, msg) -> None:
        for transform in msg.transforms:
            if transform.child_frame_id == "base_link":
                self.stamps.append(transform.header.stamp.sec + transform.header.stamp.nanosec * 1e-9)

    def backward_steps(self) -> list[tuple[float, float]]:
        """(previous, next) for every transform not stamped strictly after the one before it."""
        return [(a, b) for a, b in zip(self.stamps, self.stamps[1:]) if b <= a]


class ClockPublisher:
    """/clock for a node with use_sim_time, as ``ros2 bag play --clock`` does: sim time runs at real-time speed
    from the last ``set`` (a frame's stamp), published every 20 ms from the graph's executor while ``running``."""

    def __init__(self, graph: VoGraph) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self._clock = Clock
        self.pub = graph.node.create_publisher(Clock, "/clock", QoSProfile(depth=10,
                                                                             reliability=ReliabilityPolicy.RELIABLE))
        self.running = False  # from the first set() on
        self._base, self._since = START_STAMP, time.monotonic()
        self.timer = graph.node.create_timer(0.02, self._tick)

    def now(self) -> float:
        return self._base + time.monotonic() - self._since

    def set(self, seconds: float, backwards: bool = False) -> None:
        """Sim time = ``seconds`` now, published at once; earlier than now only with ``backwards`` (a bag loop),
        else ignored (the clock has run past a frame's stamp while the node processed the one before)."""
        if self.running and seconds < self.now() and not backwards:
            return
        self._base, self._since, self.running = seconds, time.monotonic(), True
        if self.running:
            self.pub.publish(self._clock(clock=stamp_of(seconds)))

    def _tick(self) -> None:
        if self.running:
            self.pub.publish(self._clock(clock=stamp_of(self.now())))


def publish_and_wait_next(graph: VoGraph, frame, timeout: float = 20.0, **kwargs):
    """Lock-step on the count of statuses (not the stamp: after a bag loop the stamps of the first lap come
    again): publish one frame, wait for one more status (reliable QoS: nothing to republish)."""
    before = len(graph.status)
    graph.publish(frame, **kwargs)
    assert graph.spin_until(lambda: len(graph.status) > before, timeout), f"no status for the frame at {frame.stamp}"
    return graph.status[-1]


def process_group_alive(pgid: int) -> bool:
    """Whether any process of the group (the node and anything it started) still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def zombie_or_alive_threads(pid: int) -> list[str]:
    """Threads of ``pid`` still listed in /proc (empty once the process is gone and reaped)."""
    task = f"/proc/{pid}/task"
    try:
        return [open(f"{task}/{t}/comm").read().strip() for t in os.listdir(task)]
    except (FileNotFoundError, ProcessLookupError):
        return []


def send_signal(process, sig: signal.Signals) -> None:
    os.kill(process.popen.pid, sig)


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
