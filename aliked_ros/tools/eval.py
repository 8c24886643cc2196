"""``aliked-vo eval SOURCE``: run the VO pipeline offline on a dataset folder or bag, write the trajectory
(TUM format) and score it against the ground truth (definitions in ``aliked_ros.evaluation``). A source with a
second camera runs stereo by default (``--no-stereo``: the left camera alone): metric poses of the rectified
left camera, scored with an SE(3) alignment (no scale fitted); ``stereo_matches`` is the median number of left
keypoints per frame with a right-image match. ``--score FILE`` scores another system's TUM trajectory instead,
at the source's frame stamps and under the same definitions (e.g. ORB-SLAM2's estimate of the same frames).
Exit status 1 when the source has ground truth but fewer than two poses associate with it (the report says why)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aliked_ros.datasets import Sequence, open_sequence
from aliked_ros.evaluation import Metrics, evaluate, json_safe, report_fields
from aliked_ros.features import create_extractor
from aliked_ros.odometry import FrameError, FrameResult, OdometryConfig, TrackingState, VisualOdometry
from aliked_ros.odometry.types import KEYFRAME_REATTACH
from aliked_ros.tools.extract import add_extractor_arguments, extractor_config
from aliked_ros.tools.options import positive_float, positive_int
from aliked_ros.trajectory import Trajectory, TrajectoryError, read_tum, write_tum


@dataclass(frozen=True)
class OfflineRun:
    trajectory: Trajectory  # the posed frames, T_odom_camera
    map_ids: np.ndarray  # (len(trajectory),) the map each pose belongs to (a reset starts a new one)
    initialized: np.ndarray  # (len(trajectory),) bool: False for monocular poses before initialisation
    frames: int
    lost: int
    resets: int
    rejected: int  # frames the pipeline refused (duplicate stamp, bad depth), each warned about on stderr
    # per processed frame: ``FrameResult.timings_ms`` (extract, match, pose, map, total; extract includes the frame
    # checks and the mapping results taken up) and extractor (the extractor's own total); empty for a scored file
    stage_ms: dict[str, list[float]]
    last_result: FrameResult | None
    motion_covariances: np.ndarray | None = None  # (len(trajectory),6,6) of each pose's motion, NaN if unknown
    stereo_matches: np.ndarray | None = None  # (processed frames,) left keypoints with a right match (stereo)
    without_depth: int = 0  # frames read without a depth image or with one without a valid pixel (RGB-D sources)

    @property
    def frame_ms(self) -> list[float]:
        return self.stage_ms.get("total", [])

    @property
    def tracking_ms(self) -> list[float]:
        """Matching + pose, per frame (the VO core without the network and the map)."""
        return [m + p for m, p in zip(self.stage_ms.get("match", []), self.stage_ms.get("pose", []))]


def run_offline(sequence: Sequence, vo: VisualOdometry, max_frames: int | None = None,
                progress: bool = True) -> OfflineRun:
    """Feed every frame of ``sequence`` to ``vo``; collect the poses. A frame the pipeline refuses
    (:class:`FrameError`) is counted, reported on stderr and skipped; other errors stop the run."""
    stamps, poses, map_ids, initialized = [], [], [], []
    motion_covariances = []
    stereo_matches = []
    stage_ms: dict[str, list[float]] = {}
    lost = frames = rejected = without_depth = 0
    result = None
    total = min(len(sequence), max_frames) if max_frames else len(sequence)
    for frame in tqdm(sequence, total=total, desc=f"VO {sequence.name}", unit="frame", file=sys.stderr,
                      disable=not progress, leave=False):
        if frames == total:
            break
        frames += 1
        if frame.depth is None or not np.isfinite(frame.depth).any():
            without_depth += 1
        try:
            result = vo.process(frame)
        except FrameError as error:
            rejected += 1
            print(f"warning: frame at {frame.stamp:.6f} s skipped: {error}", file=sys.stderr)
            continue
        if result.reset_reason:  # a new map with its own scale: said, not only counted
            print(f"warning: frame at {frame.stamp:.6f} s: pipeline reset ({result.reset_reason})", file=sys.stderr)
        stereo_matches.append(result.stereo_matches)
        for stage, ms in {**result.timings_ms, "extractor": result.features.timings_ms["total"]}.items():
            stage_ms.setdefault(stage, []).append(ms)
        if result.state == TrackingState.LOST:
            lost += 1
        if result.T_odom_camera is not None:
            stamps.append(result.stamp)
            poses.append(result.T_odom_camera)
            map_ids.append(result.map_id)
            motion_covariances.append(result.motion_covariance if result.motion_covariance is not None
                                      else np.full((6, 6), np.nan))
            initialized.append(not (result.state == TrackingState.INITIALIZING and result.pose_source == "rotation_only"))
    trajectory = Trajectory(np.array(stamps), np.array(poses).reshape(-1, 4, 4))
    return OfflineRun(trajectory, np.array(map_ids, int), np.array(initialized, bool), frames, lost, vo.resets,
                      rejected, stage_ms, result, np.array(motion_covariances).reshape(-1, 6, 6),
                      stereo_matches=np.array(stereo_matches, int), without_depth=without_depth)


def plot_trajectory(metrics: Metrics, path: str | Path, title: str) -> None:
    """Estimated (aligned) vs true trajectory: the plane of largest motion and each axis over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est, gt = metrics.aligned_positions, metrics.true_positions
    t = metrics.stamps - metrics.stamps[0]
    figure = plt.figure(figsize=(11, 5))
    top = figure.add_subplot(1, 2, 1)
    a, b = sorted(np.argsort(np.ptp(gt, axis=0))[-2:])  # the plane of largest motion (a top view for most datasets)
    top.plot(gt[:, a], gt[:, b], "k-", label="ground truth")
    top.plot(est[:, a], est[:, b], "r.-", label=f"estimate ({metrics.alignment}-aligned)")
    top.set_xlabel(f"{'xyz'[a]} [m]")
    top.set_ylabel(f"{'xyz'[b]} [m]")
    top.set_aspect("equal", adjustable="datalim")
    top.legend()
    top.set_title(f"{title}: ATE {metrics.ate_rmse_m * 1000:.1f} mm")
    for axis in range(3):
        ax = figure.add_subplot(3, 2, 2 * axis + 2)
        ax.plot(t, gt[:, axis], "k-")
        ax.plot(t, est[:, axis], "r.-")
        ax.set_ylabel("xyz"[axis] + " [m]")
    ax.set_xlabel("time [s]")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="TUM/KITTI/EuRoC folder or rosbag (ROS 1 .bag, ROS 2 folder/.mcap/.db3)")
    add_extractor_arguments(parser)
    parser.add_argument("--depth", action=argparse.BooleanOptionalAction, default=True,
                        help="use depth when the source has it (metric RGB-D odometry, se3 alignment)")
    parser.add_argument("--stereo", action=argparse.BooleanOptionalAction, default=None,
                        help="use the second camera (KITTI image_1, EuRoC cam1, a bag's right image topic): metric "
                             "stereo odometry, se3 alignment (default: when the source has one)")
    parser.add_argument("--rolling-shutter", type=float, default=0.0, metavar="SECONDS",
                        help="RGB-D: the colour camera's rows are read out over SECONDS (rolling shutter, stamp = "
                             "centre row; the node's rolling_shutter_readout); 0 = global shutter")
    parser.add_argument("--single-view-prior", type=float, default=OdometryConfig.ba_single_view_prior,
                        metavar="FRACTION",
                        help="monocular: landmarks only the newest keyframe observes join its bundle adjustment with "
                             "a prior of FRACTION of their depth (the node's ba_single_view_prior; default "
                             f"{OdometryConfig.ba_single_view_prior}); 0 = left out; no effect on RGB-D or stereo")
    parser.add_argument("--keyframe-alignment", type=float, default=OdometryConfig.keyframe_alignment_px, metavar="PX",
                        help="> 0: tracked keypoints aligned (Lucas-Kanade) to their keyframe's patches when within "
                             "PX of the detection (the node's keyframe_alignment; README \"Keyframe alignment\"); "
                             f"default {OdometryConfig.keyframe_alignment_px} = off")
    parser.add_argument("--keyframe-reattach", choices=tuple(KEYFRAME_REATTACH), default="auto",
                        help="monocular: unmatched keypoints take up the last keyframe's ended tracks (the node's "
                             "keyframe_reattach); auto (default) = always for ORB and SIFT, never for ALIKED")
    parser.add_argument("--camera-info", default=None, help="camera_info YAML overriding the source's calibration")
    parser.add_argument("--image-topic", default=None, help="bag: the image topic (default: found)")
    parser.add_argument("--camera-info-topic", default=None, help="bag: the camera_info topic (default: found)")
    parser.add_argument("--depth-topic", default=None,
                        help="bag: the depth topic, an Image (16UC1 mm, 32FC1 m) or a .../compressedDepth "
                             "(default: found)")
    parser.add_argument("--right-image-topic", default=None, help="stereo bag: the right camera's image topic")
    parser.add_argument("--right-camera-info-topic", default=None)
    parser.add_argument("--max-frames", type=positive_int, default=None)
    parser.add_argument("--output-trajectory", default=None, help="write the estimate here (TUM format)")
    parser.add_argument("--plot", default=None, help="write a PNG of estimate vs ground truth")
    parser.add_argument("--max-time-difference", type=positive_float, default=0.02,
                        help="association tolerance to the ground truth, s")
    parser.add_argument("--alignment", choices=("auto", "sim3", "se3"), default="auto",
                        help="how the estimate is aligned to the ground truth (auto: se3 with depth or stereo, else "
                             "sim3; a monocular TRAJECTORY given to --score on an RGB-D source needs sim3)")
    parser.add_argument("--score", default=None, metavar="TRAJECTORY",
                        help="score this TUM trajectory (another system's estimate) at the source's frame stamps "
                             "instead of running the VO; aligned as a run on the source would be, or by --alignment")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def scored_run(sequence: Sequence, path: str, max_difference: float,
               max_frames: int | None = None) -> OfflineRun:
    """Another system's trajectory as an offline run: for each frame of ``sequence``, its pose nearest in time
    (within ``max_difference`` s; frames without one count as lost), one map, no covariance."""
    estimate = read_tum(path)
    stamps = []
    for index, frame in enumerate(sequence):
        if max_frames and index == max_frames:
            break
        stamps.append(frame.stamp)
    nearest = estimate.nearest(np.array(stamps), max_difference)
    found = nearest[nearest >= 0]
    trajectory = Trajectory(estimate.stamps[found], estimate.poses[found])
    n = len(found)
    return OfflineRun(trajectory, np.zeros(n, int), np.ones(n, bool), len(stamps), int((nearest < 0).sum()), 0, 0,
                      {}, None, None)


def run(args: argparse.Namespace) -> int:
    for option, path in (("--output-trajectory", args.output_trajectory), ("--plot", args.plot)):
        if path and not Path(path).resolve().parent.is_dir():  # said now, not after the whole run
            print(f"error: {option} {path}: the folder {Path(path).resolve().parent} does not exist", file=sys.stderr)
            return 2
    sequence = open_sequence(args.source, camera_info=args.camera_info, use_depth=args.depth,
                             image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                             depth_topic=args.depth_topic,
                             stereo=args.stereo,
                             right_image_topic=args.right_image_topic,
                             right_camera_info_topic=args.right_camera_info_topic)
    if args.score:
        try:
            outcome = scored_run(sequence, args.score, args.max_time_difference, args.max_frames)
        except (OSError, TrajectoryError) as error:
            print(f"error: cannot score {args.score}: {error}", file=sys.stderr)
            return 1
        extractor_name, device = None, None
    else:
        extractor = create_extractor(args.extractor, extractor_config(args))
        extractor_name, device = extractor.name, extractor.device
        if args.rolling_shutter < 0:
            print(f"error: --rolling-shutter must be >= 0 s, got {args.rolling_shutter}", file=sys.stderr)
            return 2
        if not 0 <= args.single_view_prior <= 1:
            print(f"error: --single-view-prior must be in [0, 1], got {args.single_view_prior}", file=sys.stderr)
            return 2
        if not 0 <= args.keyframe_alignment <= 10:
            print(f"error: --keyframe-alignment must be in [0, 10] px, got {args.keyframe_alignment}", file=sys.stderr)
            return 2
        if args.rolling_shutter > 0 and not (sequence.has_depth and args.depth):
            print("warning: --rolling-shutter applies to RGB-D only: monocular and stereo frames are processed as "
                  "global shutter", file=sys.stderr)
        vo = VisualOdometry(extractor, OdometryConfig(require_stereo=sequence.has_stereo,
                                                      rolling_shutter_readout_s=args.rolling_shutter,
                                                      ba_single_view_prior=args.single_view_prior,
                                                      keyframe_alignment_px=args.keyframe_alignment,
                                                      keyframe_reattach=KEYFRAME_REATTACH[args.keyframe_reattach]))
        outcome = run_offline(sequence, vo, args.max_frames, progress=not args.quiet)
    if args.output_trajectory:
        write_tum(args.output_trajectory, outcome.trajectory)
    uses_depth = sequence.has_depth and args.depth and not args.score
    depthless = outcome.without_depth if uses_depth else 0
    if depthless:  # (the node counts these as warning_depth_all_invalid)
        print(f"warning: {depthless} of {outcome.frames} frames had no depth image or none with a valid pixel: posed "
              "without depth", file=sys.stderr)
    metric = sequence.has_stereo or (sequence.has_depth and args.depth and (args.score or depthless < outcome.frames))
    alignment = args.alignment if args.alignment != "auto" else "se3" if metric else "sim3"
    metrics = None
    note = None
    if uses_depth and outcome.frames and depthless == outcome.frames and args.alignment == "auto":
        note = "no frame had usable depth: scored as monocular (sim3)"
    if sequence.groundtruth is None:
        note = "no ground truth in the source: metrics unavailable"
    else:
        metrics = evaluate(outcome.trajectory, sequence.groundtruth, alignment, args.max_time_difference,
                           outcome.map_ids, outcome.initialized, outcome.motion_covariances)
        if metrics is None:
            note = "fewer than 2 poses match ground-truth stamps: metrics unavailable"
            if len(outcome.trajectory) and len(sequence.groundtruth):
                note += (f" (poses stamped {outcome.trajectory.stamps[0]:.6f}..{outcome.trajectory.stamps[-1]:.6f} s, "
                         f"ground truth {sequence.groundtruth.stamps[0]:.6f}..{sequence.groundtruth.stamps[-1]:.6f} s: "
                         "both in seconds?)")
            print(f"warning: {note}", file=sys.stderr)
    if metrics is not None and args.plot:
        plot_trajectory(metrics, args.plot, sequence.name)
    report = {
        "source": str(args.source), "extractor": extractor_name, "device": device, "scored": args.score,
        "max_keypoints": None if args.score else args.max_keypoints,
        "frames": outcome.frames, "poses": len(outcome.trajectory), "lost": outcome.lost, "resets": outcome.resets,
        "rejected": outcome.rejected, "skipped_messages": getattr(sequence, "skipped_messages", 0),
        "frames_without_depth": depthless if uses_depth else None,
        "stereo": sequence.has_stereo,
        "rolling_shutter_s": None if args.score else args.rolling_shutter,
        "single_view_prior": None if args.score else args.single_view_prior,
        "keyframe_alignment_px": None if args.score else args.keyframe_alignment,
        "keyframe_reattach": None if args.score else vo.reattaches,
        "stereo_matches": float(np.median(outcome.stereo_matches)) if sequence.has_stereo and
        outcome.stereo_matches is not None and len(outcome.stereo_matches) else None,
        **report_fields(metrics, alignment),
        "frame_ms_median": float(np.median(outcome.frame_ms)) if outcome.frame_ms else None,
        "stage_ms_median": {stage: float(np.median(samples)) for stage, samples in outcome.stage_ms.items()
                            if stage != "total"},
        "output_trajectory": args.output_trajectory, "plot": args.plot if metrics else None,
        "note": note,
    }
    if args.json:
        print(json.dumps(json_safe(report), allow_nan=False))
    else:
        what = f"scored {args.score}" if args.score else \
            f"{extractor_name} on {device}, median {report['frame_ms_median'] or 0:.0f} ms/frame"
        print(f"{report['source']}: {outcome.frames} frames, {report['poses']} posed, {outcome.lost} lost, "
              f"{outcome.rejected} rejected ({what})")
        if metrics:
            print(f"  {metrics.describe()}")
        else:
            print(f"  {note}")
    # ground truth given but nothing to score against it: the report (and any trajectory) is written, the exit
    # status says the evaluation failed, so that scripts do not take a missing score for a result
    return 1 if sequence.groundtruth is not None and metrics is None else 0
