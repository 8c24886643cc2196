"""``aliked-vo demo``: the whole product in one command, on a live ROS 2 graph kept on this machine.

synthetic sequence (or ``--source``) -> the aliked_vo node in its own process -> replay into it over DDS
(loopback profile, a private ROS_DOMAIN_ID, lock-step so nothing is dropped) -> record its odometry and
keypoints -> stop the node cleanly -> ATE / relative errors against the ground truth, the TUM trajectory, a
trajectory plot and a picture of the keypoint tracks on one frame.

``--depth``: RGB-D (the node with use_depth); ``--stereo [BASELINE]``: a rectified synthetic stereo pair with
that baseline (default 0.12 m; with ``--source``: the source's two cameras), the node with stereo:=true on
``<ns>/left|right/image_rect`` and ``camera_info``. Both are metric: scored with SE(3) alignment (no scale fitted).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aliked_ros.datasets import Prefetched, open_sequence
from aliked_ros.evaluation import evaluate, json_safe, report_fields
from aliked_ros.features import ALIKED_MODELS, EXTRACTORS
from aliked_ros.features.weights import resolve_weights
from aliked_ros.synth import SynthConfig, SyntheticSequence
from aliked_ros.tools.options import domain_id, positive_float, positive_int
from aliked_ros.trajectory import Trajectory, write_tum


DEFAULT_BASELINE_M = 0.12


def _baseline(text: str) -> float:
    value = float(text)
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"stereo baseline {value} m: it takes a number of metres in (0, 10)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None, help="replayable source instead of the synthetic sequence")
    parser.add_argument("--camera-info", default=None, metavar="FILE",
                        help="camera_info YAML for a --source without its own calibration (as for eval and replay)")
    parser.add_argument("--frames", type=positive_int, default=40, help="frames of the synthetic sequence (or max of --source)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic sequence seed")
    parser.add_argument("--output-dir", default="aliked_demo", help="where the trajectory and pictures go")
    parser.add_argument("--extractor", choices=EXTRACTORS, default="aliked-t16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default=None, help="ALIKED weights file (default: $ALIKED_WEIGHTS_DIR, cache, download)")
    parser.add_argument("--depth", action=argparse.BooleanOptionalAction, default=False,
                        help="feed depth too (metric RGB-D odometry, se3 alignment)")
    parser.add_argument("--stereo", type=_baseline, nargs="?", const=DEFAULT_BASELINE_M, default=None,
                        metavar="BASELINE",
                        help=f"a rectified stereo pair, BASELINE metres apart (default {DEFAULT_BASELINE_M}; with "
                             "--source: its two cameras): the node with stereo:=true, metric, se3 alignment")
    parser.add_argument("--domain-id", type=domain_id, default=None,
                        help="ROS_DOMAIN_ID for the demo graph, 0..232 (default: random in 1..101)")
    parser.add_argument("--timeout", type=positive_float, default=120.0, help="s to wait for the node to start")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT, then SIGTERM, then SIGKILL to the process group."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue
    return process.wait()


def draw_tracks_picture(frame, keypoint_msgs, index: int, path: Path) -> None:
    import cv2

    from aliked_ros.ros.messages import read_frame_keypoints
    from aliked_ros.ros.visualization import TrackHistory, draw_tracks

    history = TrackHistory(tail_length=10)
    for msg in keypoint_msgs[: index + 1]:
        arrays = read_frame_keypoints(msg)
        history.update(arrays.track_ids, arrays.pixel_xy)
    arrays = read_frame_keypoints(keypoint_msgs[index])
    caption = f"{keypoint_msgs[index].extractor}: {len(arrays.pixel_xy)} keypoints, {int(arrays.inliers.sum())} inliers"
    canvas = draw_tracks(frame.image, arrays.pixel_xy, arrays.track_ids, arrays.track_ages, arrays.inliers, history, caption)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))


def run(args: argparse.Namespace) -> int:
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from aliked_ros.msg import FrameKeypoints, TrackingStatus
    from aliked_ros.ros.dds import apply_loopback_environment, loopback_environment
    from aliked_ros.ros.frames import camera_from_base_odometry, mount_transform
    from aliked_ros.geometry.transforms import make_transform
    from aliked_ros.tools.eval import plot_trajectory
    from aliked_ros.tools.replay import Replayer
    from scipy.spatial.transform import Rotation

    stereo = args.stereo is not None
    if stereo and args.depth:
        raise SystemExit("aliked-vo demo: --stereo and --depth exclude each other (metric depth from one of them)")
    if args.camera_info and not args.source:
        raise SystemExit("aliked-vo demo: --camera-info calibrates a --source; the synthetic sequence has its own")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if args.source:
        sequence = open_sequence(args.source, camera_info=args.camera_info, use_depth=args.depth, stereo=stereo)
        if stereo and not sequence.has_stereo:
            raise SystemExit(f"aliked-vo demo: --stereo: {args.source} has no second camera")
        if args.depth and not sequence.has_depth:  # the node would wait for depth that never comes
            raise SystemExit(f"aliked-vo demo: --depth: {args.source} has no depth images (use --no-depth)")
        stereo = sequence.has_stereo
    else:
        sequence = SyntheticSequence(SynthConfig(frames=args.frames, seed=args.seed,
                                                 stereo_baseline_m=args.stereo if stereo else 0.0))
    baseline = sequence.stereo.baseline_m if stereo and getattr(sequence, "stereo", None) is not None else None
    weights = str(resolve_weights(args.extractor, args.weights)) if args.extractor in ALIKED_MODELS else ""
    domain = args.domain_id if args.domain_id is not None else random.randint(1, 101)
    env = loopback_environment(domain)
    ns = "/aliked_demo/camera"
    topics = [f"{side}/{topic}" for side in ("left", "right") for topic in ("image_rect", "camera_info")] \
        if stereo else ["image", "camera_info", "depth"]
    node_cmd = [sys.executable, "-m", "aliked_ros.cli", "run", "--ros-args",
                *(a for topic in topics for a in ("-r", f"{topic}:={ns}/{topic}")),
                "-p", f"extractor:={args.extractor}", "-p", f"device:={args.device}",
                "-p", f"use_depth:={'true' if args.depth else 'false'}",
                "-p", f"stereo:={'true' if stereo else 'false'}", "-p", "qos:=reliable"]
    if weights:  # an empty value would not parse as a string parameter
        node_cmd += ["-p", f"weights:={weights}"]
    log_path = output / "node.log"
    print(f"demo: starting the aliked_vo node (ROS_DOMAIN_ID={domain}, loopback DDS; log {log_path})", file=sys.stderr)
    with open(log_path, "wb") as log:
        node_process = subprocess.Popen(node_cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
    client = None
    try:  # (from here on the node process is stopped whatever fails)
        # read (or render) the frames while the node loads its model; at most --frames of them are played
        sequence = Prefetched(sequence, size=min(len(sequence), args.frames)).start()
        apply_loopback_environment(domain)
        rclpy.init(domain_id=domain)
        client = rclpy.create_node("aliked_demo")
        odometry, keypoints, status = [], [], []
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        outputs = [
            client.create_subscription(Odometry, "/aliked_vo/odometry", odometry.append, reliable),
            client.create_subscription(FrameKeypoints, "/aliked_vo/keypoints", keypoints.append, reliable),
            client.create_subscription(TrackingStatus, "/aliked_vo/status", status.append, reliable),
        ]
        replay_args = argparse.Namespace(
            namespace=ns, image_topic=None, camera_info_topic=None, depth_topic=None, no_depth=not args.depth,
            compressed=False, frame_id="camera_optical_frame", clock=False, qos="reliable", loop=False,
            wait_for="/aliked_vo/status", wait_timeout=60.0, rate=0.0, max_frames=args.frames)
        replayer = Replayer(client, replay_args, stereo=stereo, depth=sequence.has_depth)
        deadline = time.monotonic() + args.timeout
        while not (replayer.subscribed() and all(sub.get_publisher_count() > 0 for sub in outputs)):
            if node_process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo: the node did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")
            rclpy.spin_once(client, timeout_sec=0.1)
        print(f"demo: replaying {min(len(sequence), args.frames)} frames of {sequence.name} (lock-step)", file=sys.stderr)
        picture_index = min(len(sequence), args.frames) // 2
        picture = {}  # the frame drawn in tracks.png, kept while it is published
        summary = replayer.play(sequence, on_frame=lambda i, f: picture.update(frame=f) if i == picture_index else None)
        # the replayer's own status subscription saw each frame's status; this client's subscriptions may still
        # hold the last ones (each callback runs in its own spin): wait for every answered frame's messages here too
        # (odometry for each frame that was not LOST: the node publishes none while lost, by default)
        answered = summary.frames_published - summary.status_missed
        replayer._spin(5.0, lambda: len(status) >= answered and len(keypoints) >= len(status)
                       and len(odometry) >= sum(s.state != s.STATE_LOST for s in status))
    finally:
        if client is not None:
            client.destroy_node()
        rclpy.try_shutdown()
        node_code = stop_process(node_process)
    T_base_cam = mount_transform([0.0, 0.0, 0.0])

    def pose(msg):
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        return camera_from_base_odometry(make_transform(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(),
                                                        [p.x, p.y, p.z]), T_base_cam)

    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in odometry])
    estimate = Trajectory(stamps, np.array([pose(m) for m in odometry]).reshape(-1, 4, 4))
    trajectory_path = output / "trajectory.txt"
    write_tum(trajectory_path, estimate)
    alignment = "se3" if args.depth or stereo else "sim3"
    # the status of each odometry message's frame: its map, and whether it came before the map's initialisation
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in status}
    frame_status = [by_stamp.get((m.header.stamp.sec, m.header.stamp.nanosec)) for m in odometry]
    map_ids = [s.map_id if s is not None else 0 for s in frame_status]
    initialized = [s is None or not (s.state == s.STATE_INITIALIZING and s.pose_source == "rotation_only")
                   for s in frame_status]
    metrics = evaluate(estimate, sequence.groundtruth, alignment, 0.02, map_ids, initialized) \
        if sequence.groundtruth is not None else None
    plot_path = tracks_path = None
    if metrics is not None:
        plot_path = output / "trajectory.png"
        plot_trajectory(metrics, plot_path, f"aliked_vo demo ({sequence.name})")
    drawn = [i for i, msg in enumerate(keypoints) if "frame" in picture and
             abs(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - picture["frame"].stamp) < 1e-6]
    if drawn:
        tracks_path = output / "tracks.png"
        draw_tracks_picture(picture["frame"], keypoints, drawn[0], tracks_path)
    report = {
        "source": args.source or f"synthetic (seed {args.seed})", "extractor": args.extractor, "ros_domain_id": domain,
        "input": "stereo" if stereo else "rgbd" if args.depth else "mono",
        **({"stereo_baseline_m": baseline} if baseline is not None else {}),
        "frames_published": summary.frames_published, "frames_processed": len(status),
        "frames_dropped": status[-1].frames_dropped if status else 0, "odometry_received": len(odometry),
        **report_fields(metrics, alignment),
        "node_exit_code": node_code,
        "files": {"trajectory": str(trajectory_path), "trajectory_plot": plot_path and str(plot_path),
                  "tracks_image": tracks_path and str(tracks_path), "node_log": str(log_path)},
    }
    if args.json:
        print(json.dumps(json_safe(report), allow_nan=False))
    else:
        print(f"demo: {report['frames_published']} frames published, {report['frames_processed']} processed, "
              f"{report['frames_dropped']} dropped, {report['odometry_received']} odometry messages")
        if metrics:
            print(f"demo: {metrics.describe()}")
        print(f"demo: wrote {trajectory_path}, {plot_path}, {tracks_path}")
    return 0 if node_code in (0, -signal.SIGINT) else 1
