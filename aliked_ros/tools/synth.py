"""``aliked-vo synth OUT``: render a deterministic synthetic sequence with exact ground truth (see
``aliked_ros.synth``) as a TUM-style folder or a ROS 2 bag (sqlite3 or mcap). ``--stereo BASELINE``: a rectified
stereo pair, as a KITTI folder (image_0/, image_1/, calib.txt P0/P1; the default) or a bag with left/right
image_rect and camera_info topics; ``aliked-vo eval`` reads either as stereo."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from aliked_ros.datasets import DatasetError
from aliked_ros.datasets.bag_writer import write_bag
from aliked_ros.datasets.kitti import write_kitti_folder
from aliked_ros.datasets.tum import write_tum_folder
from aliked_ros.synth import SynthConfig, SyntheticSequence


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthConfig()
    parser.add_argument("--frames", type=int, default=defaults.frames)
    parser.add_argument("--duration", type=float, default=None, help="seconds (sets --frames to duration x rate)")
    parser.add_argument("--rate", type=float, default=defaults.rate_hz, help="frame rate, Hz")
    parser.add_argument("--speed", type=float, default=defaults.speed_m_s, help="cruising speed, m/s")
    parser.add_argument("--path", choices=["arc", "loop"], default=defaults.path,
                        help="arc: a short arc into the scene; loop: round an ellipse in front of it (long runs)")
    parser.add_argument("--ramp", type=float, default=0.0, help="smooth start from rest over this many seconds")
    parser.add_argument("--stops", type=int, default=0, help="halts of --stop-seconds each")
    parser.add_argument("--stop-seconds", type=float, default=defaults.stop_s)
    parser.add_argument("--rotations", type=int, default=0, help="turns on the spot (pure rotation, no parallax)")
    parser.add_argument("--rotation-seconds", type=float, default=defaults.rotation_s)
    parser.add_argument("--rotation-deg", type=float, default=defaults.rotation_deg, help="yaw amplitude of a turn")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian pixel noise sigma, grey levels")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma, px")
    parser.add_argument("--distortion", default="",
                        help="plumb_bob k1,k2,p1,p2,k3 (rendered exactly); write --distortion=-0.1,... when k1 < 0")
    parser.add_argument("--stereo", type=float, default=0.0, metavar="BASELINE",
                        help="also render a rectified right camera BASELINE metres to the right (stereo frames)")
    parser.add_argument("--rolling-shutter", type=float, default=0.0, metavar="SECONDS",
                        help="rolling shutter: rows read out top to bottom over SECONDS (stamp = the centre row's)")
    parser.add_argument("--pixel-samples", type=int, default=defaults.pixel_samples, metavar="N",
                        help="each pixel the mean of N x N samples over its area, as a camera integrates the light "
                             "(1: one sample at its centre, which aliases distant textures; 2 takes 4x as long)")
    parser.add_argument("--movers", type=int, default=defaults.movers, metavar="N",
                        help="N people-sized panels walking to and fro across the scene (moving objects)")
    parser.add_argument("--mover-speed", type=float, default=defaults.mover_speed_m_s, help="their speed, m/s")


def synth_config(args: argparse.Namespace) -> SynthConfig:
    distortion = tuple(float(v) for v in args.distortion.split(",")) if args.distortion else ()
    frames = round(args.duration * args.rate) if args.duration else args.frames
    return SynthConfig(frames=frames, rate_hz=args.rate, seed=args.seed, noise_sigma=args.noise,
                       blur_sigma=args.blur, distortion=distortion, speed_m_s=args.speed, path=args.path,
                       ramp_s=args.ramp, stops=args.stops, stop_s=args.stop_seconds, rotations=args.rotations,
                       rotation_s=args.rotation_seconds, rotation_deg=args.rotation_deg,
                       stereo_baseline_m=getattr(args, "stereo", 0.0) or 0.0,
                       rolling_shutter_s=getattr(args, "rolling_shutter", 0.0) or 0.0,
                       pixel_samples=getattr(args, "pixel_samples", 1), movers=getattr(args, "movers", 0),
                       mover_speed_m_s=getattr(args, "mover_speed", SynthConfig.mover_speed_m_s))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="folder to create (TUM layout, or a ROS 2 bag folder)")
    parser.add_argument("--format", choices=["tum", "kitti", "bag", "mcap"], default=None,
                        help="tum: TUM RGB-D folder (default; not for stereo); kitti: KITTI odometry folder (the "
                             "default with --stereo); bag: ROS 2 sqlite3 bag; mcap: ROS 2 mcap bag")
    add_synth_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        sequence = SyntheticSequence(synth_config(args))
    except ValueError as error:
        raise DatasetError(f"invalid synthetic sequence: {error}") from None
    output = Path(args.output)
    fmt = args.format or ("kitti" if sequence.has_stereo else "tum")
    if fmt == "tum":
        if sequence.has_stereo:
            raise DatasetError("a TUM folder holds one camera: write a stereo sequence with --format kitti, bag or mcap")
        write_tum_folder(sequence, output)
    elif fmt == "kitti":
        write_kitti_folder(sequence, output)
    else:
        write_bag(sequence, output, storage="mcap" if fmt == "mcap" else "sqlite3")
    print(json.dumps({"output": str(output), "format": fmt, "frames": len(sequence),
                      "stereo_baseline_m": sequence.config.stereo_baseline_m or None,
                      "path_length_m": float(sum(
                          ((b[:3, 3] - a[:3, 3]) ** 2).sum() ** 0.5
                          for a, b in zip(sequence.groundtruth.poses, sequence.groundtruth.poses[1:])))}))
    return 0
