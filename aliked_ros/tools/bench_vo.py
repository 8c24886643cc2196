"""``aliked-vo bench vo SOURCE...``: the VO core's own cost and accuracy, per bundle-adjustment solver.

Features are extracted once per frame and replayed to one pipeline per solver, so that every solver sees the same
input and the network's time is not counted: ``tracking_ms`` is matching + pose (per frame, median),
``ba_ms`` one local bundle adjustment (per keyframe, median; inline), ``ate_rmse_m`` as in ``aliked-vo eval``.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from aliked_ros.datasets import open_sequence
from aliked_ros.evaluation import evaluate
from aliked_ros.features import create_extractor
from aliked_ros.odometry import OdometryConfig, VisualOdometry
from aliked_ros.odometry.optimizer import BA_SOLVERS, gtsam_available
from aliked_ros.tools.eval import run_offline
from aliked_ros.tools.extract import add_extractor_arguments, extractor_config


class _Replayed:
    """An extractor that hands out precomputed features, looked up by the image they were extracted from (a
    frame the pipeline refuses before extraction must not shift the rest), with the original's name, device,
    descriptor kind and size, and ``short_tracks``."""

    def __init__(self, extractor, features: dict[int, object]) -> None:
        self.name, self.device, self._features = extractor.name, extractor.device, features
        self.descriptor_kind, self.descriptor_dim = extractor.descriptor_kind, extractor.descriptor_dim
        self.short_tracks = extractor.short_tracks

    def extract(self, image):
        return self._features[id(image)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", help="dataset folders or bags (see aliked-vo eval)")
    add_extractor_arguments(parser)
    parser.add_argument("--solvers", default="lm", help="comma-separated: lm (the default solver), gtsam, scipy")
    parser.add_argument("--depth", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    extractor = create_extractor(args.extractor, extractor_config(args))
    unknown = [s for s in args.solvers.split(",") if s not in BA_SOLVERS]
    if unknown:
        print(f"bench vo: error: unknown solver {', '.join(unknown)} (choose from {', '.join(BA_SOLVERS)})", file=sys.stderr)
        return 2
    solvers = [s for s in args.solvers.split(",") if s != "gtsam" or gtsam_available()]
    if len(solvers) < len(args.solvers.split(",")):
        print("bench vo: gtsam is not installed (pip install gtsam): skipped", file=sys.stderr)
    rows = []
    for source in args.sources:
        sequence = open_sequence(source, use_depth=args.depth)
        frames = list(sequence)  # (kept: the features are keyed by the identity of these images)
        features = {id(image): extractor.extract(image) for frame in frames
                    for image in (frame.image, frame.right_image) if image is not None}
        alignment = "se3" if sequence.has_depth and args.depth else "sim3"
        for solver in solvers:
            vo = VisualOdometry(_Replayed(extractor, features), OdometryConfig(ba_solver=solver))
            class _Frames(list):
                name = sequence.name

            run_ = run_offline(_Frames(frames), vo, progress=False)
            metrics = evaluate(run_.trajectory, sequence.groundtruth, alignment, 0.02, run_.map_ids,
                               run_.initialized) if sequence.groundtruth is not None else None
            rows.append({
                "source": source, "extractor": extractor.name, "solver": solver, "frames": run_.frames,
                "keyframes_adjusted": vo.mapper.runs,
                "tracking_ms_median": float(np.median(run_.tracking_ms)) if run_.tracking_ms else None,
                "ba_ms_median": float(np.median(vo.mapper.durations_ms)) if vo.mapper.durations_ms else None,
                "ba_ms_max": float(np.max(vo.mapper.durations_ms)) if vo.mapper.durations_ms else None,
                "ate_rmse_m": metrics.ate_rmse_m if metrics else None, "alignment": alignment,
            })
    if args.json:
        print(json.dumps(rows))
    else:
        print("| source | extractor | solver | frames | BA runs | tracking ms (median) | BA ms (median / max) | ATE |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            ate = f"{r['ate_rmse_m'] * 1000:.2f} mm ({r['alignment']})" if r["ate_rmse_m"] is not None else "-"
            ba = f"{r['ba_ms_median']:.0f} / {r['ba_ms_max']:.0f}" if r["ba_ms_median"] is not None else "-"
            print(f"| {r['source']} | {r['extractor']} | {r['solver']} | {r['frames']} | {r['keyframes_adjusted']} | "
                  f"{r['tracking_ms_median']:.1f} | {ba} | {ate} |")
    return 0
