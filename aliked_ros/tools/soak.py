"""``aliked-vo bench soak``: many frames into the live node over loopback DDS; memory, threads, open files,
latency drift, exceptions and frame accounting over the whole run.

What runs: the ``aliked_vo`` node in its own process (``python -m aliked_ros.cli run``, log to a file), this
process publishing a synthetic sequence (``aliked_ros.synth``, ``path=loop``) on ``/soak/camera/image`` and
``camera_info`` at ``--rate`` Hz, both with reliable QoS (the node with ``qos:=reliable``), and receiving the node's
``~/keypoints``, ``~/odometry``, ``~/status`` and ``/diagnostics``.

The frames: ``--loop-frames`` frames are rendered once and published round and round. The camera speed is chosen
so that one lap of the ellipse takes exactly ``--loop-frames`` frames: the frame after the last is the first one's
view, so the VO sees one seamless endless trajectory (no scene jump, no reset from the loop). Stamps are the wall
clock at publication (strictly increasing), so latency = receipt time - image stamp, one clock. (Monocular ORB at
320x240 goes LOST on the far side of this lap and starts a new map after ``max_lost_frames``: the soak runs the
LOST / reset / new-map paths over and over, which is part of what it checks; ``resets`` and ``map_ids`` say how
often.)

Sampled every second (``SoakConfig.sample_period_s``): the node process's RSS, thread count, open file descriptors (psutil when
installed, else /proc) and any input queue sizes the node reports in /diagnostics (keys with ``queue``,
``pending`` or ``in_flight``). After the last frame the soak waits until the node is idle (its ``frames_received``
stops changing and equals processed + dropped + rejected), reads the final counts, stops the node with SIGINT and counts
tracebacks and ERROR/FATAL lines in its log.

Figures (``SoakReport``): ``rss_slope_mb_per_1000_frames`` is the least-squares slope of RSS over frames published,
after ``--warmup`` (fraction of the frames; the node's ``~/path`` grows to ``path_max_length`` poses and the map to
``max_keyframes`` keyframes during it); ``latency_p99_ms`` {start, end} over the first and the last 10 % of the
frames that were processed. Targets (issue 10): slope <= 1 MB / 1000 frames, end p99 within 20 % of start,
0 exceptions, published = processed + dropped + rejected (+ transport loss, reported separately).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from aliked_ros.errors import AlikedRosError
from aliked_ros.tools.demo import stop_process
from aliked_ros.tools.options import domain_id, positive_int

NAMESPACE = "/soak/camera"
NODE_NAME = "/aliked_vo"
QUEUE_KEY = re.compile(r"queue|pending|in_flight", re.IGNORECASE)
ERROR_LINE = re.compile(r"Traceback \(most recent call last\)|\[(ERROR|FATAL)\]")
TARGET_SLOPE_MB_PER_1000 = 1.0
TARGET_LATENCY_DRIFT = 0.20


class SoakError(AlikedRosError):
    """The soak could not run (the node did not start, did not subscribe, or died)."""


@dataclass(frozen=True)
class SoakConfig:
    frames: int = 10_000
    extractor: str = "orb"
    rate_hz: float = 12.0
    width: int = 320
    height: int = 240
    loop_frames: int = 300  # rendered once, published round and round (one lap of the ellipse)
    warmup: float = 0.2  # fraction of the frames before the RSS slope is fitted
    max_keypoints: int = 1024
    device: str = "cpu"
    sample_period_s: float = 1.0
    noise_sigma: float = 2.0
    domain_id: int | None = None  # None: a random one in 1..101
    log_path: Path | None = None  # node log; None: a temporary file, kept and named in the report
    node_parameters: tuple[str, ...] = ()  # extra "name:=value" for the node


@dataclass
class Sample:
    elapsed_s: float
    frames_published: int
    rss_mb: float
    threads: int
    open_files: int


@dataclass
class SoakReport:
    extractor: str
    image_size: list[int]
    rate_hz: float
    loop_frames: int
    duration_s: float
    frames_published: int
    frames_received: int  # by the node (/diagnostics)
    frames_processed: int
    frames_dropped: int
    frames_rejected: int
    rejected_by_kind: dict[str, int]
    transport_lost: int  # published - received (reliable QoS: expected 0)
    frames_unaccounted: int  # received - (processed + dropped + rejected): must be 0
    outputs_received: dict[str, int]  # messages this process received per output topic
    resets: int
    map_ids: list[int]
    tracking_states: dict[str, int]
    rss_mb: dict[str, float]  # start (end of warm-up), end, max
    rss_slope_mb_per_1000_frames: float | None
    threads: dict[str, int]  # start (end of warm-up), end, max
    open_files: dict[str, int]  # file descriptors: start, end, max
    queues: dict[str, int]  # max of each queue size the node reports in /diagnostics ({} when it reports none)
    latency_p99_ms: dict[str, float | None]  # first / last 10 % of processed frames
    latency_median_ms: dict[str, float | None]
    exceptions: int  # tracebacks and ERROR/FATAL lines in the node's log
    node_exit_code: int | None
    node_log: str
    samples: int
    probe: str  # psutil or /proc
    targets: dict[str, bool] = field(default_factory=dict)

    def evaluate_targets(self) -> None:
        drift = self.latency_drift
        self.targets = {
            "rss_slope": self.rss_slope_mb_per_1000_frames is not None
            and self.rss_slope_mb_per_1000_frames <= TARGET_SLOPE_MB_PER_1000,
            "latency_drift": drift is not None and drift <= TARGET_LATENCY_DRIFT,
            "exceptions": self.exceptions == 0,
            "accounting": self.frames_unaccounted == 0 and self.frames_published
            == self.frames_processed + self.frames_dropped + self.frames_rejected + self.transport_lost,
        }

    @property
    def latency_drift(self) -> float | None:
        """end p99 / start p99 - 1 (0.2 = 20 % slower at the end)."""
        start, end = self.latency_p99_ms["start"], self.latency_p99_ms["end"]
        return None if not start or end is None else end / start - 1.0


# --- the frames ---------------------------------------------------------------------------------------------------

def lap_sequence(config: SoakConfig):
    """The synthetic sequence of one seamless lap (``loop_frames`` frames; frame ``loop_frames`` would equal
    frame 0): the loop path at the speed that makes one lap of its ellipse take exactly that many frames."""
    from aliked_ros.synth import SynthConfig, SyntheticSequence

    theta = np.linspace(0, 2 * np.pi, 4001)  # the loop path's ellipse (aliked_ros.synth.camera_path)
    lap_m = float(np.linalg.norm(np.diff(np.column_stack([0.8 * np.sin(theta), 0.6 - 0.6 * np.cos(theta)]), axis=0),
                                 axis=1).sum())
    return SyntheticSequence(SynthConfig(frames=config.loop_frames, rate_hz=config.rate_hz, width=config.width,
                                         height=config.height, path="loop",
                                         speed_m_s=lap_m * config.rate_hz / config.loop_frames,
                                         noise_sigma=config.noise_sigma))


def render_loop(config: SoakConfig):
    """(images (list of RGB uint8), camera) of one seamless lap (``lap_sequence``)."""
    sequence = lap_sequence(config)
    return [sequence.render(i)[0] for i in range(len(sequence))], sequence.camera


# --- the node process -----------------------------------------------------------------------------------------------

class ProcessProbe:
    """RSS (MB), threads and open file descriptors of one process: psutil when installed, else /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            import psutil

            self._process = psutil.Process(pid)
            self.kind = "psutil"
        except ImportError:
            self._process = None
            self.kind = "/proc"

    def sample(self) -> tuple[float, int, int]:
        if self._process is not None:
            with self._process.oneshot():
                return (self._process.memory_info().rss / 2**20, self._process.num_threads(),
                        self._process.num_fds())
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss_kb = int(fields["VmRSS"].split()[0])
        return rss_kb / 1024, int(fields["Threads"]), len(os.listdir(f"/proc/{self.pid}/fd"))


def node_command(config: SoakConfig) -> list[str]:
    ns = NAMESPACE
    parameters = [f"extractor:={config.extractor}", f"device:={config.device}", "qos:=reliable",
                  f"max_keypoints:={config.max_keypoints}", "diagnostics_period:=0.5", *config.node_parameters]
    args = [sys.executable, "-m", "aliked_ros.cli", "run", "--ros-args", "-r", f"image:={ns}/image",
            "-r", f"camera_info:={ns}/camera_info"]
    for parameter in parameters:
        args += ["-p", parameter]
    return args


def count_exceptions(log_text: str) -> int:
    return sum(1 for line in log_text.splitlines() if ERROR_LINE.search(line))


# --- statistics -----------------------------------------------------------------------------------------------------

def slope_per_1000(samples: list[Sample], start_frame: int) -> float | None:
    """Least-squares slope of RSS (MB) over frames published, per 1000 frames, from ``start_frame`` on."""
    points = [(s.frames_published, s.rss_mb) for s in samples if s.frames_published >= start_frame]
    if len(points) < 3 or points[-1][0] == points[0][0]:
        return None
    x, y = np.array(points, float).T
    return float(np.polyfit(x, y, 1)[0] * 1000)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


# --- the soak -------------------------------------------------------------------------------------------------------

def run_soak(config: SoakConfig, progress=None) -> SoakReport:
    """Run the soak (see the module docstring); ``progress(frames_published)`` is called once per sample."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from aliked_ros.msg import FrameKeypoints, TrackingStatus
    from aliked_ros.odometry import TrackingState
    from aliked_ros.ros.dds import loopback_environment
    from aliked_ros.ros.publishing import camera_info_message, image_message, make_header

    images, camera = render_loop(config)
    domain = config.domain_id if config.domain_id is not None else random.randint(1, 101)
    log_path = config.log_path
    if log_path is None:
        descriptor, name = tempfile.mkstemp(prefix="aliked_soak_node_", suffix=".log")
        os.close(descriptor)
        log_path = Path(name)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)  # the caller's environment must be loopback too (see run())
    client = rclpy.create_node("aliked_soak", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)

    published_at: list[float] = []  # wall-clock stamp of frame i (seconds)
    received_at: dict[int, float] = {}  # stamp in ns -> first receipt (keypoints or odometry), wall clock
    outputs = {"keypoints": 0, "odometry": 0, "status": 0, "diagnostics": 0}
    statuses: list[tuple[int, int]] = []  # (state, map_id)
    diagnostics: dict[str, str] = {}
    queues: dict[str, int] = {}

    def stamp_ns(msg) -> int:
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    def on_output(kind):
        def callback(msg) -> None:
            outputs[kind] += 1
            received_at.setdefault(stamp_ns(msg), time.time())
        return callback

    def on_status(msg) -> None:
        outputs["status"] += 1
        statuses.append((msg.state, msg.map_id))

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name.startswith("aliked_vo"):
                outputs["diagnostics"] += 1
                diagnostics.clear()
                diagnostics.update({kv.key: kv.value for kv in status.values})
                for key, value in diagnostics.items():
                    if QUEUE_KEY.search(key) and value.lstrip("-").isdigit():
                        queues[key] = max(queues.get(key, 0), int(value))

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    out_qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    pub_image = client.create_publisher(type(image_message(images[0], make_header(0.0, ""))), f"{NAMESPACE}/image",
                                        reliable)
    pub_info = client.create_publisher(type(camera_info_message(camera, make_header(0.0, ""))),
                                       f"{NAMESPACE}/camera_info", reliable)
    subscriptions = [
        client.create_subscription(FrameKeypoints, f"{NODE_NAME}/keypoints", on_output("keypoints"), out_qos),
        client.create_subscription(Odometry, f"{NODE_NAME}/odometry", on_output("odometry"), out_qos),
        client.create_subscription(TrackingStatus, f"{NODE_NAME}/status", on_status, out_qos),
    ]
    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, out_qos)

    def spin_until(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if node.poll() is not None:
                raise SoakError(f"the node exited with code {node.returncode}; its log: {log_path}")
            executor.spin_once(timeout_sec=min(0.02, max(0.0, deadline - time.monotonic())))
        return predicate()

    samples: list[Sample] = []
    log = open(log_path, "wb")
    # the node starts last, right before the try whose finally stops it (nothing between can leave it running)
    node = subprocess.Popen(node_command(config), env=loopback_environment(domain), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    start_wall = time.monotonic()
    try:
        probe = ProcessProbe(node.pid)
        if not spin_until(lambda: pub_image.get_subscription_count() > 0 and pub_info.get_subscription_count() > 0
                          and all(s.get_publisher_count() > 0 for s in subscriptions), 120):
            raise SoakError(f"the node did not subscribe within 120 s; its log: {log_path}")
        spin_until(lambda: False, 0.5)  # let discovery settle both ways
        info_template = camera_info_message(camera, make_header(0.0, "soak_camera"))
        t0 = time.monotonic()
        next_sample = t0
        last_stamp = 0.0
        for i in range(config.frames):
            if time.monotonic() >= next_sample:
                samples.append(Sample(time.monotonic() - start_wall, i, *probe.sample()))
                next_sample += config.sample_period_s
                if progress is not None:
                    progress(i)
            due = t0 + i / config.rate_hz
            spin_until(lambda: time.monotonic() >= due, max(0.0, due - time.monotonic()))
            stamp = max(time.time(), last_stamp + 1e-6)  # wall clock, strictly increasing
            last_stamp = stamp
            header = make_header(stamp, "soak_camera")
            info_template.header = header
            pub_info.publish(info_template)
            pub_image.publish(image_message(images[i % len(images)], header))
            published_at.append(stamp)
            executor.spin_once(timeout_sec=0.0)
        samples.append(Sample(time.monotonic() - start_wall, config.frames, *probe.sample()))

        # idle: frames_received stable, and equal to processed + dropped + rejected
        def idle() -> bool:
            if not diagnostics:
                return False
            counts = [int(diagnostics.get(f"frames_{k}", 0)) for k in ("received", "processed", "dropped", "rejected")]
            return counts[0] == config.frames and counts[0] == sum(counts[1:])

        if not spin_until(idle, 30):  # transport loss or an unaccounted frame: take what the node says, stable
            before = dict(diagnostics)
            spin_until(lambda: False, 3)
            deadline = time.monotonic() + 60
            while diagnostics != before and time.monotonic() < deadline:
                before = dict(diagnostics)
                spin_until(lambda: False, 3)
        final = dict(diagnostics)
        samples.append(Sample(time.monotonic() - start_wall, config.frames, *probe.sample()))
    finally:
        executor.shutdown()
        client.destroy_node()
        context.try_shutdown()
        exit_code = stop_process(node, timeout=15.0)
        log.close()
    duration = time.monotonic() - start_wall

    counts = {k: int(final.get(f"frames_{k}", 0)) for k in ("received", "processed", "dropped", "rejected")}
    rejected = {k[len("rejected_"):]: int(v) for k, v in final.items() if k.startswith("rejected_")}
    latencies = [((received_at[ns] - stamp) * 1e3, index) for index, stamp in enumerate(published_at)
                 if (ns := int(round(stamp * 1e9))) in received_at]
    tenth = max(1, len(latencies) // 10)
    first, last = [ms for ms, _ in latencies[:tenth]], [ms for ms, _ in latencies[-tenth:]]
    warm = int(config.frames * config.warmup)
    after = [s for s in samples if s.frames_published >= warm] or samples[-1:]
    states: dict[str, int] = {}
    for state, _ in statuses:
        name = TrackingState(state).name
        states[name] = states.get(name, 0) + 1
    report = SoakReport(
        extractor=config.extractor, image_size=[config.width, config.height], rate_hz=config.rate_hz,
        loop_frames=config.loop_frames, duration_s=round(duration, 1),
        frames_published=len(published_at), frames_received=counts["received"], frames_processed=counts["processed"],
        frames_dropped=counts["dropped"], frames_rejected=counts["rejected"], rejected_by_kind=rejected,
        transport_lost=len(published_at) - counts["received"],
        frames_unaccounted=counts["received"] - counts["processed"] - counts["dropped"] - counts["rejected"],
        outputs_received=outputs, resets=int(final.get("resets", 0)), map_ids=sorted({m for _, m in statuses}),
        tracking_states=states,
        rss_mb={"start": round(after[0].rss_mb, 1), "end": round(samples[-1].rss_mb, 1),
                "max": round(max(s.rss_mb for s in samples), 1)},
        rss_slope_mb_per_1000_frames=None if (slope := slope_per_1000(samples, warm)) is None else round(slope, 3),
        threads={"start": after[0].threads, "end": samples[-1].threads, "max": max(s.threads for s in samples)},
        open_files={"start": after[0].open_files, "end": samples[-1].open_files,
                    "max": max(s.open_files for s in samples)},
        queues=queues,
        latency_p99_ms={"start": percentile(first, 99), "end": percentile(last, 99)},
        latency_median_ms={"start": percentile(first, 50), "end": percentile(last, 50)},
        exceptions=count_exceptions(Path(log_path).read_text(errors="replace")), node_exit_code=exit_code,
        node_log=str(log_path), samples=len(samples), probe=probe.kind)
    report.evaluate_targets()
    return report


# --- the command line -----------------------------------------------------------------------------------------------

def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``aliked-vo bench soak`` (``--rate``, ``--device``, ``--max-keypoints``, ``--json`` are
    bench's own)."""
    defaults = SoakConfig()
    parser.add_argument("--frames", type=positive_int, default=defaults.frames, help="soak: frames to publish")
    parser.add_argument("--extractor", default=None,
                        help=f"soak: the node's extractor (default {defaults.extractor}); extract/node: = --extractors X")
    parser.add_argument("--size", default=f"{defaults.width}x{defaults.height}", help="soak: image size WxH")
    parser.add_argument("--loop-frames", type=positive_int, default=defaults.loop_frames,
                        help="soak: frames rendered for one seamless lap, published round and round")
    parser.add_argument("--warmup-fraction", type=float, default=defaults.warmup,
                        help="soak: fraction of the frames before the RSS slope is fitted")
    parser.add_argument("--node-log", default=None, help="soak: write the node's log here (default: a temp file)")
    parser.add_argument("--domain-id", type=domain_id, default=None,
                        help="soak: ROS_DOMAIN_ID, 0..232 (default: random 1..101)")


def run(args: argparse.Namespace) -> int:
    from aliked_ros.ros.dds import apply_loopback_environment

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SoakError(f"--size {args.size!r}: expected WxH, e.g. 320x240") from None
    if args.frames < 10:
        raise SoakError("--frames: at least 10")
    rate = args.rate if args.rate is not None else SoakConfig.rate_hz
    if rate <= 0:
        raise SoakError("--rate: frames per second, > 0")
    config = SoakConfig(frames=args.frames, extractor=args.extractor or SoakConfig.extractor, rate_hz=rate, width=width, height=height,
                        loop_frames=args.loop_frames, warmup=args.warmup_fraction, max_keypoints=args.max_keypoints,
                        device="cpu" if args.device == "auto" else args.device, domain_id=args.domain_id,
                        log_path=Path(args.node_log) if args.node_log else None)
    apply_loopback_environment(config.domain_id)

    def progress(frames: int) -> None:
        if not args.json:
            print(f"\rsoak: {frames}/{config.frames} frames", end="", file=sys.stderr, flush=True)

    report = run_soak(config, progress)
    if args.json:
        print(json.dumps(asdict(report) | {"latency_drift": report.latency_drift}))
        return 0
    print(file=sys.stderr)
    print(f"soak ({report.extractor}, {width}x{height}, {rate} Hz, {report.duration_s} s): published "
          f"{report.frames_published}, received {report.frames_received}, processed {report.frames_processed}, "
          f"dropped {report.frames_dropped}, rejected {report.frames_rejected}, unaccounted "
          f"{report.frames_unaccounted}, resets {report.resets}")
    print(f"  RSS {report.rss_mb} MB, slope {report.rss_slope_mb_per_1000_frames} MB/1000 frames; threads "
          f"{report.threads}; open files {report.open_files}; queues {report.queues or 'not reported'}")
    print(f"  latency p99 {report.latency_p99_ms} ms, median {report.latency_median_ms} ms; exceptions "
          f"{report.exceptions}; node exit code {report.node_exit_code}; log {report.node_log}")
    verdicts = [f"{name} {'ok' if met else 'MISSED'}" for name, met in report.targets.items()]
    print(f"  targets: {', '.join(verdicts)}")
    return 0
