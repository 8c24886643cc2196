"""ALIKED extraction on CUDA looked at closely, for ``scripts/gpu_check.sh``: where a frame's GPU time goes
(torch.profiler: the costliest operators, kernels launched per frame) and, for each numeric variant (fp32,
TF32; fp16 / bf16 autocast were measured on 2026-12-01 with a branch since removed, BENCHMARKS.md), layout (dense or sparse feature map, channels-last or NCHW) and
CUDA graph or not, the median wall time of
``extract()`` (upload to host arrays) and the parity with the official outputs (the measures of
``test/test_features.py``: keypoints within 0.05 px, their descriptors' cosine >= 0.999).

    python scripts/profile_cuda.py SHARED_DIR [--model aliked-t16] [--frames 50] [--json OUT.json]

SHARED_DIR holds ``reference/aliked`` and the images it names. Prints a report; ``--json`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aliked_ros.features import ExtractorConfig, create_extractor
from aliked_ros.image_io import read_image

VARIANTS = {  # name: (ExtractorConfig fields, change or None)
    "default": ({}, None),  # CUDA graph, dense feature map, channels-last, fp32 (no TF32)
    "no_graph": ({"cuda_graph": False}, None),
    "cudnn_benchmark": ({}, "cudnn_benchmark"),
    "sparse_features": ({}, "sparse"),
    "nchw": ({}, "nchw"),
    "tf32": ({"tf32": True}, None),
    "compiled": ({"compile": True}, None),  # last: its compilation takes the longest
}


def change(extractor, change: str | None) -> None:
    """A setting the package does not choose on CUDA, for comparison: the CPU's sparse feature map, the
    network's inference path in NCHW instead of channels-last, cuDNN's algorithms chosen by timing."""
    from aliked_ros.features.aliked_net import InferencePath
    net = extractor.net
    if change == "cudnn_benchmark":
        numerics = extractor.numerics
        extractor.numerics = lambda: numerics(cudnn_benchmark=True)
    elif change == "sparse":
        net.dense_features = False
    elif change == "nchw":
        net.inference_path()  # keyed to the weights: the replacement below is kept while they do not change
        net._inference = InferencePath(net, channels_last=False)


def parity(features, reference) -> tuple[float, float]:
    distance = np.linalg.norm(features.keypoints[:, None] - reference["keypoints"][None], axis=2)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(nearest)), nearest] < 0.05
    cosine = np.sum(features.descriptors[close] * reference["descriptors"][nearest[close]], axis=1)
    return float(close.mean()), float((cosine >= 0.999).mean()) if close.any() else 0.0


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile(extractor, image, frames: int = 5) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    for _ in range(3):
        extractor.extract(image)
    synchronize()
    cuda = torch.cuda.is_available()
    with torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(frames):
            extractor.extract(image)
        synchronize()
    kernels = sum(1 for event in prof.events() if event.device_type.name == "CUDA")
    averages = prof.key_averages()
    table = ""
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            table = averages.table(sort_by=key, row_limit=30, max_name_column_width=60)
            break
        except (AttributeError, KeyError, ValueError, RuntimeError):
            continue
    return {"kernels_per_frame": kernels / frames, "table": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shared", type=Path)
    parser.add_argument("--model", default="aliked-t16")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script where no GPU is")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("profile_cuda: no CUDA device here", file=sys.stderr)
        return 2
    manifest = json.loads((args.shared / "reference/aliked/manifest.json").read_text())
    references = [(np.load(args.shared / "reference/aliked" / name), read_image(args.shared / entry["image"]))
                  for name, entry in sorted(manifest.items())
                  if entry["model"] == args.model and entry["top_k"] == 1024]
    report: dict = {"gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
                    "torch": torch.__version__, "model": args.model, "variants": {}}
    for name, (fields, setting) in VARIANTS.items():
        try:
            started = time.perf_counter()
            extractor = create_extractor(args.model, ExtractorConfig(max_keypoints=1024, device=args.device, **fields))
            change(extractor, setting)
            found = [parity(extractor.extract(image), reference) for reference, image in references]
            first_frames_s = time.perf_counter() - started  # creation, capture (and compilation)
            image = references[0][1]
            for _ in range(10):
                extractor.extract(image)
            synchronize()
            wall = []
            for index in range(args.frames):
                start = time.perf_counter()
                extractor.extract(references[index % len(references)][1])
                wall.append((time.perf_counter() - start) * 1e3)
            entry = {"wall_ms_median": statistics.median(wall), "wall_ms_p90": float(np.percentile(wall, 90)),
                     "keypoints_near": min(f[0] for f in found), "descriptors_same": min(f[1] for f in found),
                     "first_frames_s": first_frames_s}
            if name in ("default", "compiled"):
                profiled = profile(extractor, image)
                entry["kernels_per_frame"] = profiled["kernels_per_frame"]
                report[f"profile_table_{name}"] = profiled["table"]
        except Exception as error:  # noqa: BLE001 - a variant that fails is reported, the others still run
            entry = {"error": repr(error)[:400]}
        report["variants"][name] = entry
        print(f"{name:11s} {json.dumps(entry)}", flush=True)
    for name in ("default", "compiled"):
        print(f"profile of {name}:\n{report.get(f'profile_table_{name}', 'none')}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
