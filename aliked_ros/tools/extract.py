"""``aliked-vo extract IMAGE``: one extractor on one image; keypoints, scores, descriptors to .npz."""
from __future__ import annotations

import argparse
import json

import numpy as np

from aliked_ros.features import DEFAULT_EXTRACTOR, EXTRACTORS, ExtractorConfig, create_extractor
from aliked_ros.image_io import read_image
from aliked_ros.tools.options import non_negative_float, positive_int


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every tool that creates an extractor."""
    parser.add_argument("--extractor", choices=EXTRACTORS, default=DEFAULT_EXTRACTOR)
    parser.add_argument("--max-keypoints", type=positive_int, default=1024, help="keypoint budget (top-k mode)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score threshold: threshold mode, at most --max-keypoints keypoints")
    parser.add_argument("--min-contrast", type=non_negative_float, default=ExtractorConfig.min_contrast,
                        help="a frame whose keypoints' median contrast over the image's noise is below this keeps "
                             "only keypoints of 3 times it (none on a dark frame of noise); 0 = off")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:N or cpu")
    parser.add_argument("--weights", default=None, help="ALIKED weights file (default: $ALIKED_WEIGHTS_DIR, cache, download)")
    parser.add_argument("--compile", action="store_true",
                        help="ALIKED on CUDA: torch.compile the frame (compiled on the first frame, about a minute)")


def extractor_config(args: argparse.Namespace) -> ExtractorConfig:
    return ExtractorConfig(max_keypoints=args.max_keypoints, threshold=args.threshold, device=args.device,
                           weights=args.weights, compile=args.compile, min_contrast=args.min_contrast)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file (PNG, JPEG, ...)")
    parser.add_argument("--output", "-o", default=None, help="write keypoints (N,2 px x,y), scores, descriptors to this .npz")
    add_extractor_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary (count, timings)")


def run(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    extractor = create_extractor(args.extractor, extractor_config(args))
    features = extractor.extract(image)
    if args.output:
        np.savez(args.output, keypoints=features.keypoints, scores=features.scores, descriptors=features.descriptors)
    summary = {
        "image": args.image, "extractor": features.extractor, "device": extractor.device,
        "image_size": list(features.image_size), "keypoints": len(features),
        "descriptor_shape": list(features.descriptors.shape), "descriptor_dtype": str(features.descriptors.dtype),
        "timings_ms": {k: round(v, 3) for k, v in features.timings_ms.items()}, "output": args.output,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{len(features)} keypoints ({features.extractor} on {extractor.device}) in "
              f"{features.timings_ms['total']:.1f} ms" + (f" -> {args.output}" if args.output else ""))
    return 0
