"""``aliked-vo bench pipeline SOURCE --rate R``: the node's worker without ROS, fed at ``R`` Hz.

The same input stage (``aliked_ros.ros.input_stage.InputStage``: newest-frame slot, drops counted) and the same
worker loops as the node (``run_single_stage``, or ``run_extraction_stage`` + ``run_pose_stage`` on two threads
for ``pipelined``) around ``VisualOdometry``, with the node's defaults from the package's ``config/params.yaml``
(``background_mapping``, ``ba_solver``, ``ba_single_view_prior``, ``next_frame_wait``) and the frames decoded
beforehand and handed over in memory: what is left out is DDS (serialisation, transport) and the node's
publishing. It runs where ROS does not (the GPU
machines of ``scripts/gpu_check.sh``), so that the node's scheduling is measured at rates a 2-core CPU cannot
reach. Per run: frames fed / processed / dropped / rejected, throughput (processed frames / s from the first
arrival to the last finish), latency (arrival -> processed: p50, p99, max) and the extraction's median time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter

import numpy as np
import torch

from aliked_ros.errors import AlikedRosError
from aliked_ros.features import ALIKED_MODELS, ExtractorConfig, create_extractor

NS = 1_000_000_000
DRAIN_TIMEOUT_S = 60.0  # after the last frame: how long the worker may take to finish what it holds


def node_defaults() -> dict:
    """The node's parameters as the package ships them (``config/params.yaml``)."""
    import yaml

    from aliked_ros.resources import config_file

    return yaml.safe_load(config_file("params.yaml").read_text())["/**"]["ros__parameters"]


def run_pipeline_benchmark(args: argparse.Namespace) -> int:
    """Every extractor of ``--extractors`` in every mode of ``--modes`` (pipelined, single), ``--rounds`` times,
    alternating; one JSON object with ``--json``, else a line per run."""
    from aliked_ros.datasets import open_sequence

    if args.rate <= 0:
        raise SystemExit(f"aliked-vo bench pipeline: --rate must be > 0 frames per second, got {args.rate}")
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = list(open_sequence(args.images[0], use_depth=False))  # decoded now: not part of the measurement
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in ("pipelined", "single"):
            raise SystemExit(f"aliked-vo bench pipeline: unknown mode {mode!r} (pipelined or single)")
    runs = []
    for round_index in range(args.rounds):
        for name in args.extractors.split(","):
            for mode in modes:
                report = pipeline_run(frames, name, mode == "pipelined", args)
                report.update(round=round_index, mode=mode, source=args.images[0])
                runs.append(report)
                if not args.json:
                    _print(report)
    if args.json:
        print(json.dumps({"source": args.images[0], "rate": args.rate, "ros": False, "runs": runs}))
    failed = [r for r in runs if r["worker_errors"] or r["in_flight_at_end"]]
    for r in failed:
        print(f"bench pipeline: {r['extractor']} {r['mode']}: {r['in_flight_at_end']} frames left in flight, "
              f"worker errors: {r['worker_errors']}", file=sys.stderr)
    return 1 if failed else 0


def pipeline_run(frames: list, extractor_name: str, pipelined: bool, args: argparse.Namespace) -> dict:
    """One fresh pipeline fed ``frames`` at ``args.rate`` Hz (wall clock); returns the run's figures."""
    from aliked_ros.odometry import OdometryConfig, VisualOdometry
    from aliked_ros.odometry.types import KEYFRAME_REATTACH
    from aliked_ros.ros.input_stage import InputStage, run_extraction_stage, run_pose_stage, run_single_stage

    weights = f"{args.weights_dir}/{extractor_name}.pth" if args.weights_dir and extractor_name in ALIKED_MODELS \
        else None
    extractor = create_extractor(extractor_name, ExtractorConfig(
        max_keypoints=args.max_keypoints, device=args.device, weights=weights, compile=args.compile))
    for _ in range(max(args.warmup, 1)):  # model, kernels, CUDA graph (and compilation) before the clock starts
        extractor.extract(frames[0].image)
    node = node_defaults()
    vo = VisualOdometry(extractor, OdometryConfig(background_mapping=node["background_mapping"],
                                                  ba_solver=node["ba_solver"],
                                                  ba_single_view_prior=node["ba_single_view_prior"],
                                                  keyframe_reattach=KEYFRAME_REATTACH[node["keyframe_reattach"]]))
    # the frames carry their camera: no camera_info to wait for
    inputs = InputStage(camera_info_wait=0.0, next_frame_wait=node["next_frame_wait"])
    lock = threading.Lock()
    worker_errors: list[str] = []
    finished: dict[int, float] = {}
    extract_ms: list[float] = []
    rejected: Counter = Counter()

    def reject(error: Exception) -> None:
        kind = type(error).__name__ if isinstance(error, AlikedRosError) else "processing_error"
        if inputs.finish_rejected(kind):
            print(f"bench pipeline: a frame was rejected ({kind}: {error})", file=sys.stderr)
        with lock:
            rejected[kind] += 1

    def done(frame, result) -> None:
        inputs.finish_processed(frame)
        with lock:
            finished[frame.stamp_ns] = time.monotonic()
            extract_ms.append(result.timings_ms["extract"])

    def process(work) -> None:  # single
        try:
            result = vo.process(work.frame.image)
        except Exception as error:  # noqa: BLE001 - counted like the node's guard, the run goes on
            reject(error)
            return
        done(work.frame, result)

    def extract(work):  # pipelined, stage 1
        try:
            return vo.extract(work.frame.image)
        except Exception as error:  # noqa: BLE001
            reject(error)
            return None

    def pose(frame, extracted, reset) -> None:  # pipelined, stage 2
        try:
            result = vo.process_extracted(extracted)
        except Exception as error:  # noqa: BLE001
            reject(error)
            return
        done(frame, result)

    def guarded(loop, step) -> None:  # a worker that dies is reported, and the drain below stops waiting for it
        try:
            loop(inputs, step)
        except Exception as error:  # noqa: BLE001
            with lock:
                worker_errors.append(repr(error))

    loops = [(run_extraction_stage, extract), (run_pose_stage, pose)] if pipelined else [(run_single_stage, process)]
    workers = [threading.Thread(target=guarded, args=(loop, step), daemon=True) for loop, step in loops]
    for worker in workers:
        worker.start()
    arrived: dict[int, float] = {}
    start = time.monotonic()
    for index, frame in enumerate(frames):
        delay = start + index / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp_ns = int(round(frame.stamp * NS))
        arrived[stamp_ns] = time.monotonic()
        inputs.add_image(stamp_ns, frame)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while inputs.snapshot().in_flight and time.monotonic() < deadline and all(w.is_alive() for w in workers):
        time.sleep(0.005)
    feeding_s = max(arrived.values()) - start if arrived else 0.0
    inputs.close()
    for worker in workers:
        worker.join(5.0)
    snapshot = inputs.snapshot()
    with lock:
        finished = dict(finished)
        errors = list(worker_errors)
    latencies = [(finished[k] - arrived[k]) * 1e3 for k in finished if k in arrived]
    span = max(finished.values()) - start if finished else 0.0
    return {
        "extractor": extractor_name, "device": extractor.device, "pipelined": pipelined, "rate": args.rate,
        "frames_fed": len(frames), "input_hz": round((len(frames) - 1) / feeding_s, 1) if feeding_s > 0 else None,
        "frames_processed": snapshot.processed, "frames_dropped": snapshot.dropped,
        "frames_rejected": dict(rejected), "in_flight_at_end": snapshot.in_flight, "worker_errors": errors,
        "throughput_hz": round(snapshot.processed / span, 1) if span > 0 else None,
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 2),
                       "p99": round(float(np.percentile(latencies, 99)), 2),
                       "max": round(max(latencies), 2)} if latencies else None,
        "extract_ms_median": round(statistics.median(extract_ms), 2) if extract_ms else None,
    }


def _print(r: dict) -> None:
    latency = r["latency_ms"] or {}
    print(f"{r['extractor']:<11} {r['mode']:<9} on {r['device']}, fed at {r['input_hz']} Hz (no ROS): processed "
          f"{r['frames_processed']} of {r['frames_fed']} ({r['frames_dropped']} dropped, rejected "
          f"{r['frames_rejected'] or 0}), throughput {r['throughput_hz']} Hz, latency p50 {latency.get('p50', '-')} "
          f"p99 {latency.get('p99', '-')} ms, extract {r['extract_ms_median']} ms", flush=True)
