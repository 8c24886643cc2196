#!/usr/bin/env python3
"""Side-by-side timing of the ways to run ALIKED's dense stage on the CPU, in one process, interleaved
(round-robin, so that a busy machine slows every candidate alike), each as a whole top-k extraction
(dense maps + detection + descriptors) and against kornia 0.9's ALIKED on the same tensors.

    ALIKED_WEIGHTS_DIR=../shared/models .venv/bin/python scripts/bench_candidates.py \
        ../shared/data/tum_fr2_desk/rgb/131186816*.png [--threads 1] [--rounds 5] [--only eager,compile,...] [--json]

Candidates (those whose package is missing are reported and skipped):
  fused           the extractor's path on the CPU: eager below with the fused numba kernels (cpu_kernels.py)
  eager           torch alone: BatchNorm folded, channels-last, 1x1 convolutions as matrix products
  eager-nchw      the same in NCHW memory format
  published       the network as published (dense 64-channel feature map), no fast path
  compile         torch.compile (inductor, CPU) of the eager dense stage; compile time reported
  onnxruntime     the eager dense stage exported to ONNX (torch.onnx, opset 18) and run by ONNX Runtime
  openvino        the eager dense stage converted by openvino.convert_model and compiled for the CPU
  kornia          kornia 0.9's ALIKED forward (the reference of ``aliked-vo bench extract``)
  previous        with --previous COMMIT: that commit's aliked_net.py (its sparse_maps, detect, describe)
Each candidate's keypoints are compared with the eager path's (fraction within 0.01 px).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aliked_ros.features.aliked_net import AlikedNet, InferencePath, SparseFeatureMap, _padding  # noqa: E402
from aliked_ros.features.weights import load_weights, resolve_weights  # noqa: E402
from aliked_ros.image_io import read_image  # noqa: E402

ALL = ("fused", "eager", "eager-nchw", "published", "compile", "onnxruntime", "openvino", "kornia")


class DenseStage(nn.Module):
    """InferencePath as a module with tensor outputs (for exporters): image -> 4 scales, table, score map."""

    def __init__(self, path: InferencePath, pads) -> None:
        super().__init__()
        self.path, self.pads = path, pads

    def forward(self, image):
        scales, table, score = self.path(image, self.pads)
        return (*[s.contiguous() for s in scales], table, score)


def _why(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"


def extraction(net: AlikedNet, dense_fn, top_k: int, kernels=None):
    """A whole extraction with ``dense_fn(image) -> (scales, table, padded score map)`` as the dense stage
    (``kernels``: the fused CPU kernels for the descriptor head's samples, as the extractor's path has them)."""
    def run(image: torch.Tensor):
        h, w = image.shape[-2:]
        pads = _padding(h, w)
        scales, table, score = dense_fn(image)
        features = SparseFeatureMap(tuple(scales), (pads[2], pads[0]), (h, w), table, kernels=kernels)
        score = net._crop(score, pads, h, w)
        detections = net.detect(score[0], top_k=top_k, min_score=0.02)
        return detections.keypoints, net.describe(features, detections.keypoints)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", default="aliked-t16")
    parser.add_argument("--max-keypoints", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over all images per candidate")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--previous", default=None, metavar="COMMIT",
                        help="also time aliked_ros/features/aliked_net.py as it was at this git commit")
    parser.add_argument("--threads", type=int, default=None, help="torch (and runtime) CPU threads for every candidate")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = args.only.split(",")
    images = [torch.from_numpy(read_image(p)).permute(2, 0, 1)[None].float().div(255) for p in args.images]
    h, w = images[0].shape[-2:]
    pads = _padding(h, w)
    weights = resolve_weights(args.model, download=False)
    net = AlikedNet(args.model)
    load_weights(net, weights, args.model)
    net.eval().requires_grad_(False)
    threads = torch.get_num_threads()
    candidates, notes = {}, {}

    def eager_dense(path):
        return lambda image: path(image, pads)

    with torch.inference_mode():
        path = InferencePath(net, cpu_kernels=False)
        eager = extraction(net, eager_dense(path), args.max_keypoints)
        candidates["eager"] = eager
        fused = net.inference_path().fused_cpu_forward()
        if "fused" in wanted and fused is None:
            notes["fused"] = "skipped: the fused CPU kernels are unavailable (no numba?)"
        elif "fused" in wanted:
            start = time.perf_counter()
            candidates["fused"] = extraction(net, eager_dense(net.inference_path()), args.max_keypoints,
                                             fused.kernels)
            candidates["fused"](images[0])
            notes["fused"] = f"kernels built or loaded in {time.perf_counter() - start:.1f} s"
        if "eager-nchw" in wanted:
            nchw = InferencePath(net, channels_last=False, cpu_kernels=False)
            candidates["eager-nchw"] = extraction(net, eager_dense(nchw), args.max_keypoints)
        if "published" in wanted:
            def published(image):
                feature_map, score = net.dense_maps(image)
                detections = net.detect(score[0], top_k=args.max_keypoints, min_score=0.02)
                return detections.keypoints, net.describe(feature_map, detections.keypoints)
            candidates["published"] = published
    if "compile" in wanted:
        try:
            start = time.perf_counter()
            compiled = torch.compile(path.__call__, dynamic=False)
            with torch.inference_mode():
                compiled(images[0], pads)
            notes["compile"] = f"compile {time.perf_counter() - start:.1f} s"
            candidates["compile"] = extraction(net, lambda image: compiled(image, pads), args.max_keypoints)
        except Exception as error:  # no C++ compiler, inductor bug, ...
            notes["compile"] = f"failed: {_why(error)}"
    stage = DenseStage(InferencePath(net, cpu_kernels=False), pads).eval()  # outside inference mode: exporters trace it
    if "onnxruntime" in wanted:
        try:
            import onnxruntime as ort

            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                onnx_path = os.path.join(tmp, "dense.onnx")
                with torch.no_grad():
                    torch.onnx.export(stage, (images[0],), onnx_path, opset_version=18, dynamo=True, verbose=False)
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
            notes["onnxruntime"] = f"onnxruntime {ort.__version__}, export + session {time.perf_counter() - start:.1f} s"
            input_name = session.get_inputs()[0].name

            def ort_dense(image):
                out = [torch.from_numpy(o) for o in session.run(None, {input_name: image.numpy()})]
                return out[:4], out[4], out[5]
            candidates["onnxruntime"] = extraction(net, ort_dense, args.max_keypoints)
        except Exception as error:
            notes["onnxruntime"] = f"skipped: {_why(error)}"
    if "openvino" in wanted:
        try:
            import openvino as ov

            start = time.perf_counter()
            with torch.no_grad():
                model = ov.convert_model(stage, example_input=(images[0],))
            compiled_ov = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                 "PERFORMANCE_HINT": "LATENCY",
                                                                 "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled_ov.create_infer_request()
            notes["openvino"] = f"openvino {ov.__version__}, convert + compile {time.perf_counter() - start:.1f} s"

            def ov_dense(image):
                request.infer({0: image.numpy()})
                out = [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(6)]
                return out[:4], out[4], out[5]
            candidates["openvino"] = extraction(net, ov_dense, args.max_keypoints)
        except Exception as error:
            notes["openvino"] = f"skipped: {_why(error)}"
    if args.previous:
        import importlib.util
        import subprocess

        source = subprocess.run(["git", "show", f"{args.previous}:aliked_ros/features/aliked_net.py"],
                                capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
            file.write(source)
        spec = importlib.util.spec_from_file_location("previous_aliked_net", file.name)
        previous_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(previous_module)
        previous_net = previous_module.AlikedNet(args.model)
        load_weights(previous_net, weights, args.model)
        previous_net.eval()

        def previous(image):
            feature_map, score = previous_net.sparse_maps(image)
            detections = previous_net.detect(score[0], top_k=args.max_keypoints, min_score=0.02)
            return detections.keypoints, previous_net.describe(feature_map, detections.keypoints)
        candidates["previous"] = previous
        notes["previous"] = f"aliked_net.py at {args.previous}"
        wanted.append("previous")
    if "kornia" in wanted:
        try:
            from kornia.feature.aliked import ALIKED

            reference = ALIKED(args.model, max_num_keypoints=args.max_keypoints, detection_threshold=0.0).eval()
            reference.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
            notes["kornia"] = "kornia 0.9 ALIKED forward (reference)"
            candidates["kornia"] = lambda image: (None, reference(image))
        except ImportError as error:
            notes["kornia"] = f"skipped: {error}"
    candidates = {k: v for k, v in candidates.items() if k in wanted}
    times: dict[str, list[float]] = {k: [] for k in candidates}
    agreement = {}
    with torch.inference_mode():
        reference_keypoints = [eager(image)[0] for image in images]
        for name, fn in candidates.items():  # warm-up, and agreement with the eager path
            outputs = [fn(image)[0] for image in images]
            if outputs[0] is not None:
                agreement[name] = round(float(np.mean([
                    (torch.cdist(o.double(), r.double()).min(dim=1).values < 0.01).float().mean() for o, r in zip(outputs, reference_keypoints)])), 4)
        for _ in range(args.rounds):
            for image in images:
                for name, fn in candidates.items():
                    start = time.perf_counter()
                    fn(image)
                    times[name].append((time.perf_counter() - start) * 1e3)
    kornia_ms = statistics.median(times["kornia"]) if "kornia" in times else None
    report = {"images": len(images), "image_size": [w, h], "rounds": args.rounds, "torch": torch.__version__,
              "torch_threads": threads, "candidates": {}}
    for name, samples in times.items():
        median = statistics.median(samples)
        report["candidates"][name] = {
            "median_ms": round(median, 1), "min_ms": round(min(samples), 1),
            "ratio_vs_kornia": round(median / kornia_ms, 3) if kornia_ms else None,
            "keypoints_as_eager": agreement.get(name), "note": notes.get(name, "")}
    for name, note in notes.items():
        if name not in report["candidates"]:
            report["candidates"][name] = {"note": note}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{len(images)} image(s) {w}x{h}, {args.rounds} rounds, torch {torch.__version__}, {threads} threads; "
          f"whole top-{args.max_keypoints} extraction, ms")
    for name, entry in report["candidates"].items():
        if "median_ms" in entry:
            print(f"  {name:<14} median {entry['median_ms']:7.1f}  min {entry['min_ms']:7.1f}  ratio vs kornia "
                  f"{entry['ratio_vs_kornia']}  same keypoints {entry['keypoints_as_eager']}  {entry['note']}")
        else:
            print(f"  {name:<14} {entry['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
