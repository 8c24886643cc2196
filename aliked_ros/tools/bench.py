"""``aliked-vo bench extract IMAGE...``: median milliseconds per stage for each extractor and the matcher, with
kornia's ALIKED on the same input in the same run as the reference (ratio = ours / kornia).

Timing: each extractor runs ``--warmup`` times untimed, then ``--repeat`` times per image; medians over all
timed runs. Matching: mutual NN between the features of consecutive images (or an image with itself).
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["extract"], help="what to benchmark")
    parser.add_argument("images", nargs="+", help="image files (e.g. ../shared/data/tum_fr2_desk/rgb/*.png)")
    parser.add_argument("--extractors", default="aliked-t16,sift,orb",
                        help=f"comma-separated, from {','.join(EXTRACTORS)}")
    parser.add_argument("--max-keypoints", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights-dir", default=None, help="folder with <model>.pth (default: $ALIKED_WEIGHTS_DIR/cache)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per image")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-kornia", action="store_true", help="skip the kornia reference")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


def _kornia_reference(model: str, images, args, weights: str | None, device: str) -> dict[str, float]:
    """kornia 0.9's ALIKED on the same tensors: dense map and full forward (DKD + SDDH included)."""
    from kornia.feature.aliked import ALIKED

    net = ALIKED(model, max_num_keypoints=args.max_keypoints, detection_threshold=0.0).eval().to(device)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=False)  # kornia adds a DKD buffer the official checkpoints lack
    tensors = [torch.from_numpy(im).permute(2, 0, 1)[None].float().div(255).to(device) for im in images]
    dense, total = [], []
    with torch.inference_mode():
        for _ in range(args.warmup):
            net(tensors[0])
        for tensor in tensors:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                net.extract_dense_map(tensor)
                _sync(device)
                t1 = time.perf_counter()
                net(tensor)
                _sync(device)
                total.append((time.perf_counter() - t1) * 1e3)
                dense.append((t1 - t0) * 1e3)
    return {"dense_map": _median_ms(dense), "total": _median_ms(total)}


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> int:
    images = [read_image(p) for p in args.images]
    images = [im if im.ndim == 3 else im[:, :, None].repeat(3, axis=2) for im in images]
    results: dict[str, dict] = {}
    for name in args.extractors.split(","):
        weights = f"{args.weights_dir}/{name}.pth" if args.weights_dir and name in ALIKED_MODELS else None
        extractor = create_extractor(name, ExtractorConfig(max_keypoints=args.max_keypoints, device=args.device,
                                                           weights=weights))
        for _ in range(args.warmup):
            extractor.extract(images[0])
        stages: dict[str, list[float]] = {}
        features = []
        for image in images:
            for _ in range(args.repeat):
                result = extractor.extract(image)
                for stage, ms in result.timings_ms.items():
                    stages.setdefault(stage, []).append(ms)
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
        if name in ALIKED_MODELS and not args.no_kornia:
            try:
                reference = _kornia_reference(name, images, args, str(extractor.weights_path), extractor.device)
            except ImportError:
                entry["kornia"] = "kornia not installed (pip install kornia==0.9.0)"
            else:
                entry["kornia"] = reference
                entry["ratio_total_vs_kornia"] = round(entry["total"] / reference["total"], 3)
                entry["ratio_dense_map_vs_kornia"] = round(entry["dense_map"] / reference["dense_map"], 3)
        results[name] = entry
    report = {"images": len(images), "image_size": list(images[0].shape[1::-1]), "repeat": args.repeat,
              "torch_threads": torch.get_num_threads(), "extractors": results}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{len(images)} image(s) {images[0].shape[1]}x{images[0].shape[0]}, {args.repeat} runs each, "
          f"torch threads {torch.get_num_threads()}; median ms")
    for name, entry in results.items():
        stages = ", ".join(f"{k} {v}" for k, v in entry.items() if isinstance(v, float) and not k.startswith("ratio"))
        line = f"  {name:<14} [{entry['device']}] {stages}"
        if "ratio_total_vs_kornia" in entry:
            line += (f" | kornia total {entry['kornia']['total']} dense {entry['kornia']['dense_map']}"
                     f" -> ratio total {entry['ratio_total_vs_kornia']}, dense {entry['ratio_dense_map_vs_kornia']}")
        print(line)
    return 0
