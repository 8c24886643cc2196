"""``aliked-vo bench extract IMAGE...``: median milliseconds per stage for each extractor and the matcher, with
kornia's ALIKED on the same input in the same run as the reference (ratio = ours / kornia).

``aliked-vo bench node SOURCE``: the node in its own process, fed by replay at ``--rate`` over loopback DDS, for
each extractor and worker mode (``--modes pipelined,single``: ``pipelined:=true`` / ``false``, each optionally with
node parameters: ``pipelined+next_frame_wait=0.0``), alternating, a fresh node per run; prints latency (frame
published -> its status received, wall clock; p50, p99), throughput (processed frames / s), how many frames
the node dropped to keep up, its median extraction time, and the load average before and after the run
(``--threads N``: the node's ``torch_threads``).

``aliked-vo bench pipeline SOURCE --rate R``: the node's worker (input stage, worker loops, ``VisualOdometry``)
without ROS, fed at R frames per second (``aliked_ros.tools.bench_pipeline``): runs where ROS does not.

``aliked-vo bench soak [--frames N]``: N synthetic frames into the live node; memory, threads, open files, latency
drift, exceptions and frame accounting (``aliked_ros.tools.soak``).

Timing: each extractor runs ``--warmup`` times untimed, then ``--repeat`` times per image; medians over all
timed runs. kornia runs right after each of our runs on the same image (interleaved), so that the ratio holds
on a machine whose load changes during the run. Matching: mutual NN between the features of consecutive images (or an image with itself).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from aliked_ros.features import ALIKED_MODELS, EXTRACTORS, ExtractorConfig, create_extractor
from aliked_ros.image_io import read_image
from aliked_ros.matching import match_mutual_nearest
from aliked_ros.tools.options import non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from aliked_ros.tools.soak import add_soak_arguments

    parser.add_argument("what", choices=["extract", "node", "pipeline", "soak"], help="what to benchmark")
    parser.add_argument("images", nargs="*", help="extract: image files (e.g. ../shared/data/tum_fr2_desk/rgb/*.png); "
                        "node, pipeline: one source; soak: none (synthetic)")
    parser.add_argument("--rate", type=positive_float, default=None,
                        help="node: replay speed (default 1 = real time); pipeline: frames per second fed (default "
                             "30); soak: frames per second (default 12)")
    parser.add_argument("--extractors", default="aliked-t16,sift,orb",
                        help=f"comma-separated, from {','.join(EXTRACTORS)}")
    parser.add_argument("--max-keypoints", type=positive_int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights-dir", default=None, help="folder with <model>.pth (default: $ALIKED_WEIGHTS_DIR/cache)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed runs per image")
    parser.add_argument("--warmup", type=non_negative_int, default=1)
    parser.add_argument("--no-kornia", action="store_true", help="skip the kornia reference")
    parser.add_argument("--compile", action="store_true",
                        help="extract, pipeline: ALIKED on CUDA through torch.compile (compiled during the warm-up)")
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="extract: ALIKED on CUDA launches each kernel (default: replays one CUDA graph per frame)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--modes", default="pipelined,single",
                        help="node: worker modes to compare, alternating (pipelined: pipelined:=true; single: false), "
                             "each optionally with node parameters: pipelined+next_frame_wait=0.0; pipeline: "
                             "pipelined, single")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="node, pipeline: how many times to run every extractor and mode")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_soak_arguments(parser)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


class _KorniaReference:
    """kornia 0.9's ALIKED on the same tensors: ``time(image)`` -> (dense map ms, full forward ms, DKD + SDDH
    included). Called between our runs (interleaved), so that a busy machine slows both alike."""

    def __init__(self, model: str, args, weights: str, device: str) -> None:
        from kornia.feature.aliked import ALIKED

        self.net = ALIKED(model, max_num_keypoints=args.max_keypoints, detection_threshold=0.0).eval().to(device)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=False)  # kornia adds a DKD buffer the official checkpoints lack
        self.device = device
        self.tensors: dict[int, torch.Tensor] = {}

    @torch.inference_mode()
    def time(self, index: int, image) -> tuple[float, float]:
        if index not in self.tensors:
            self.tensors[index] = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(self.device)
        tensor = self.tensors[index]
        t0 = time.perf_counter()
        self.net.extract_dense_map(tensor)
        _sync(self.device)
        t1 = time.perf_counter()
        self.net(tensor)
        _sync(self.device)
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> int:
    if args.what == "soak":
        from aliked_ros.tools.soak import run as run_soak

        return run_soak(args)
    if not args.images:
        raise SystemExit(f"aliked-vo bench {args.what}: give {'image files' if args.what == 'extract' else 'a source'}")
    if args.extractor:
        args.extractors = args.extractor
    unknown = [name for name in args.extractors.split(",") if name not in EXTRACTORS]
    if unknown:
        raise SystemExit(f"aliked-vo bench {args.what}: error: unknown extractor {', '.join(unknown)} (choose from "
                         f"{', '.join(EXTRACTORS)})")
    if args.rate is None:
        args.rate = 30.0 if args.what == "pipeline" else 1.0
    if args.what == "pipeline":
        from aliked_ros.tools.bench_pipeline import run_pipeline_benchmark

        return run_pipeline_benchmark(args)
    if args.what == "node":
        return run_node_benchmark(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = [read_image(p) for p in args.images]
    images = [im if im.ndim == 3 else im[:, :, None].repeat(3, axis=2) for im in images]
    results: dict[str, dict] = {}
    for name in args.extractors.split(","):
        weights = f"{args.weights_dir}/{name}.pth" if args.weights_dir and name in ALIKED_MODELS else None
        extractor = create_extractor(name, ExtractorConfig(max_keypoints=args.max_keypoints, device=args.device,
                                                           weights=weights, cuda_graph=not args.no_cuda_graph,
                                                           compile=args.compile))
        reference, reference_note = None, None
        if name in ALIKED_MODELS and not args.no_kornia:
            try:
                reference = _KorniaReference(name, args, str(extractor.weights_path), extractor.device)
            except ImportError:
                reference_note = "kornia not installed (pip install kornia==0.9.0)"
        for _ in range(args.warmup):
            extractor.extract(images[0])
            if reference:
                reference.time(0, images[0])
        stages: dict[str, list[float]] = {}
        reference_ms: dict[str, list[float]] = {"dense_map": [], "total": []}
        features = []
        for index, image in enumerate(images):
            for _ in range(args.repeat):
                result = extractor.extract(image)
                for stage, ms in result.timings_ms.items():
                    stages.setdefault(stage, []).append(ms)
                if reference:  # interleaved with ours, image by image
                    dense_ms, total_ms = reference.time(index, image)
                    reference_ms["dense_map"].append(dense_ms)
                    reference_ms["total"].append(total_ms)
            features.append(result)
        match_ms = []
        pairs = list(zip(features, features[1:])) or [(features[0], features[0])]
        for a, b in pairs:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                match_mutual_nearest(a.device_descriptors if a.device_descriptors is not None else a.descriptors,
                                     b.device_descriptors if b.device_descriptors is not None else b.descriptors)
                match_ms.append((time.perf_counter() - t0) * 1e3)
        entry = {stage: _median_ms(ms) for stage, ms in stages.items()}
        entry["match"] = _median_ms(match_ms)
        entry["keypoints"] = round(float(statistics.mean(len(f) for f in features)), 1)
        entry["device"] = extractor.device
        net = getattr(extractor, "net", None)
        if net is not None and entry["device"] == "cpu":  # which CPU path ran: the fused kernels or torch alone
            entry["cpu_kernels"] = net.inference_path().fused_cpu_forward() is not None
        if reference_note:
            entry["kornia"] = reference_note
        elif reference:
            entry["kornia"] = {stage: _median_ms(ms) for stage, ms in reference_ms.items()}
            entry["ratio_total_vs_kornia"] = round(entry["total"] / entry["kornia"]["total"], 3)
            if "dense_map" in entry:  # a CUDA graph times the frame as a whole
                entry["ratio_dense_map_vs_kornia"] = round(entry["dense_map"] / entry["kornia"]["dense_map"], 3)
        results[name] = entry
    report = {"images": len(images), "image_size": list(images[0].shape[1::-1]), "repeat": args.repeat,
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "extractors": results}
    if any(str(e.get("device", "")).startswith("cuda") for e in results.values()):
        report["gpu"] = torch.cuda.get_device_name()
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{len(images)} image(s) {images[0].shape[1]}x{images[0].shape[0]}, {args.repeat} runs each, "
          f"torch threads {torch.get_num_threads()}; median ms")
    for name, entry in results.items():
        stages = ", ".join(f"{k} {v}" for k, v in entry.items() if isinstance(v, float) and not k.startswith("ratio"))
        path = {True: ", fused kernels", False: ", torch alone"}.get(entry.get("cpu_kernels"), "")
        line = f"  {name:<14} [{entry['device']}{path}] {stages}"
        if "ratio_total_vs_kornia" in entry:
            line += (f" | kornia total {entry['kornia']['total']} dense {entry['kornia']['dense_map']}"
                     f" -> ratio total {entry['ratio_total_vs_kornia']}, dense {entry.get('ratio_dense_map_vs_kornia', '-')}")
        print(line)
    return 0


def run_node_benchmark(args: argparse.Namespace) -> int:
    """Latency and throughput of the node on a live loopback graph: every extractor of ``--extractors`` in every
    worker mode of ``--modes``, one node per run, alternating (extractor by extractor, mode by mode, ``--rounds``
    times), so that ratios between modes hold on a machine whose load changes."""
    import os

    runs = []
    modes = {}  # mode as given -> (pipelined, extra node parameters)
    for mode in args.modes.split(","):
        worker, *parameters = mode.split("+")
        if worker not in ("pipelined", "single") or not all("=" in p for p in parameters):
            raise SystemExit(f"aliked-vo bench node: unknown mode {mode!r} (pipelined or single, each optionally "
                             "followed by +name=value node parameters)")
        modes[mode] = (worker == "pipelined", dict(p.split("=", 1) for p in parameters))
    for round_index in range(args.rounds):
        for extractor in args.extractors.split(","):
            for mode, (pipelined, extra) in modes.items():
                load_before = os.getloadavg()[0]
                report = _node_run(args, extractor, pipelined, extra)
                report.update(round=round_index, mode=mode,
                              load_avg=[round(load_before, 2), round(os.getloadavg()[0], 2)])
                runs.append(report)
                if not args.json:
                    _print_node_run(report)
    if args.json:
        print(json.dumps({"source": args.images[0], "rate": args.rate, "torch_threads": args.threads or 0,
                          "runs": runs}))
    return 0


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(values, q)), 1)


def _node_run(args: argparse.Namespace, extractor: str, pipelined: bool, extra: dict[str, str]) -> dict:
    """One node process fed by one replay; latency = image published -> its status received (the status is the
    last of a frame's outputs), wall clock."""
    import random
    import subprocess
    import sys

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from aliked_ros.datasets import open_sequence
    from aliked_ros.msg import TrackingStatus
    from aliked_ros.ros.dds import apply_loopback_environment, loopback_environment
    from aliked_ros.tools.demo import stop_process
    from aliked_ros.tools.replay import Replayer

    weights = f"{args.weights_dir}/{extractor}.pth" if args.weights_dir and extractor in ALIKED_MODELS else ""
    sequence = open_sequence(args.images[0], use_depth=False)
    domain = random.randint(1, 101)
    ns = "/bench/camera"
    parameters = {"extractor": extractor, "device": args.device, "max_keypoints": args.max_keypoints,
                  "pipelined": str(pipelined).lower()} | extra
    if weights:
        parameters["weights"] = weights
    if args.threads:
        parameters["torch_threads"] = args.threads
    command = [sys.executable, "-m", "aliked_ros.cli", "run", "--ros-args", "-r", f"image:={ns}/image",
               "-r", f"camera_info:={ns}/camera_info"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    node = subprocess.Popen(command, env=loopback_environment(domain), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    status: list = []
    status_at: dict[tuple[int, int], float] = {}

    def on_status(message) -> None:
        status_at.setdefault((message.header.stamp.sec, message.header.stamp.nanosec), time.monotonic())
        status.append(message)

    client = None
    try:  # (from here on the node process is stopped whatever fails)
        apply_loopback_environment(domain)
        rclpy.init(domain_id=domain)
        client = rclpy.create_node("aliked_bench")
        client.create_subscription(TrackingStatus, "/aliked_vo/status", on_status,
                                   QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        replay_args = argparse.Namespace(
            namespace=ns, image_topic=None, camera_info_topic=None, depth_topic=None, no_depth=True,
            compressed=False, frame_id="camera", clock=False, qos="sensor_data", loop=False, wait_for=None,
            wait_timeout=0.0, rate=args.rate, max_frames=None)
        replayer = Replayer(client, replay_args)
        if not replayer.wait_for_subscribers(120):
            raise SystemExit("bench node: the node did not subscribe within 120 s")
        replayer._spin(0.5)
        start = time.monotonic()
        summary = replayer.play(sequence, progress=False)
        replayer._spin(10.0, lambda: status and status[-1].header.stamp == replayer_last(replayer))
        elapsed = time.monotonic() - start
    finally:
        if client is not None:
            client.destroy_node()
        rclpy.try_shutdown()
        stop_process(node)
    latencies = [(status_at[k] - t) * 1e3 for k, t in replayer.published_at.items() if k in status_at]
    arrivals = sorted(status_at.values())
    return {
        "source": args.images[0], "extractor": extractor, "pipelined": pipelined, "rate": args.rate,
        "frames_published": summary.frames_published, "frames_processed": len(status),
        "frames_dropped": status[-1].frames_dropped if status else None,
        "input_hz": round(summary.frames_published / max(summary.duration_s, 1e-9), 2),
        "throughput_hz": round(len(status) / elapsed, 2),  # processed / (first publish -> last status)
        "steady_hz": round((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 2) if len(arrivals) > 2 else None,
        "latency_ms": {"p50": _percentile(latencies, 50), "p99": _percentile(latencies, 99),
                       "max": round(max(latencies), 1)} if latencies else None,
        "extract_ms_median": round(statistics.median(s.extract_ms for s in status), 1) if status else None,
        "processing_ms_median": round(statistics.median(s.total_ms for s in status), 1) if status else None,
    }


def _print_node_run(r: dict) -> None:
    latency = r["latency_ms"] or {}
    print(f"{r['extractor']:<11} {r['mode']:<9} fed at {r['input_hz']} Hz: processed {r['frames_processed']} of "
          f"{r['frames_published']} ({r['frames_dropped']} dropped), throughput {r['throughput_hz']} Hz "
          f"(steady {r['steady_hz']}), latency p50 {latency.get('p50', '-')} p99 {latency.get('p99', '-')} ms, "
          f"extract {r['extract_ms_median']} ms, processing {r['processing_ms_median']} ms, load {r['load_avg']}",
          flush=True)


def replayer_last(replayer) -> tuple[int, int] | None:
    """The stamp of the last published frame, as a builtin_interfaces Time for comparison."""
    from builtin_interfaces.msg import Time

    if not replayer.published_at:
        return None
    sec, nanosec = max(replayer.published_at)
    return Time(sec=sec, nanosec=nanosec)
