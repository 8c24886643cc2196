"""Held-out-style variants of the shared real sequences, and `aliked-vo eval` on each of them.

The shared clips are short (20-51 frames); a setting tuned on them can fit their one start and their one
direction of travel. Played backwards, cut into windows (another start, another initialisation) or with every
second frame (twice the motion per frame), the same real images make other sequences with exact ground truth:

    python scripts/real_variants.py OUT                       # build OUT/<variant>/ (TUM folders), then eval
    python scripts/real_variants.py OUT --eval-args "--single-view-prior 0" --label without_priors

Prints one row per variant (and per mode: monocular; RGB-D where the source has depth) as a markdown table; with
``--json FILE`` writes the rows too. Variants: ``<name>_rev`` (reversed: stamps t' = t_first + t_last - t),
windows ``_w<a>_<b>`` (frames a..b-1) of the original and of the reversed clip, and for the 30 Hz / driving clips
``_s2`` / ``_s2o`` (even / odd frames).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from aliked_ros.datasets import open_sequence
from aliked_ros.datasets.tum import write_tum_folder
from aliked_ros.trajectory import Trajectory

SHARED = Path(os.environ.get("ALIKED_ROS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SOURCES = {"kitti": ("data/kitti01_000_050", False, True), "fr2": ("data/tum_fr2_desk", False, False),
           "rpy": ("data/tum_fr1_rpy_rgbd", True, True)}  # name: (path, has depth, strided variants)


class _View:
    """Frames of a sequence with its camera and ground truth (what ``write_tum_folder`` reads)."""

    def __init__(self, sequence, frames: list, groundtruth: Trajectory, name: str) -> None:
        self.frames, self.camera, self.groundtruth, self.name = frames, sequence.camera, groundtruth, name

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)


def variants(sequence, tag: str, strided: bool) -> dict[str, _View]:
    frames, groundtruth = list(sequence), sequence.groundtruth
    first_plus_last = frames[0].stamp + frames[-1].stamp
    backwards = [dataclasses.replace(f, stamp=first_plus_last - f.stamp) for f in frames[::-1]]
    backwards_gt = Trajectory(first_plus_last - groundtruth.stamps[::-1], groundtruth.poses[::-1].copy())
    out = {f"{tag}_rev": _View(sequence, backwards, backwards_gt, f"{tag}_rev")}
    n = len(frames)
    for a, b in ((0, int(n * 0.7)), (int(n * 0.3), n), (int(n * 0.15), int(n * 0.85))):
        out[f"{tag}_w{a}_{b}"] = _View(sequence, frames[a:b], groundtruth, f"{tag}_w{a}_{b}")
        out[f"{tag}_rev_w{a}_{b}"] = _View(sequence, backwards[a:b], backwards_gt, f"{tag}_rev_w{a}_{b}")
    if strided:
        out[f"{tag}_s2"] = _View(sequence, frames[::2], groundtruth, f"{tag}_s2")
        out[f"{tag}_s2o"] = _View(sequence, frames[1::2], groundtruth, f"{tag}_s2o")
    return out


def build(root: Path) -> list[tuple[str, Path, bool]]:
    """(variant, folder, has depth) for every variant, written under ``root`` once."""
    built = []
    for tag, (path, depth, strided) in SOURCES.items():
        sequence = open_sequence(SHARED / path, use_depth=depth)
        for name, view in variants(sequence, tag, strided).items():
            folder = root / name
            if not (folder / "rgb.txt").is_file():
                write_tum_folder(view, folder)
            built.append((name, folder, depth))
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder for the variants (built once)")
    parser.add_argument("--eval-args", default="", help="extra arguments for every `aliked-vo eval`")
    parser.add_argument("--label", default="", help="a name for this setting in the table")
    parser.add_argument("--only", default="", help="comma-separated variant name prefixes (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    print(f"| variant | mode | {args.label or 'setting'}: ATE (mm) | path est / true | posed / frames | maps |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, folder, depth in build(args.root):
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        for mode in (["--no-depth", "--depth"] if depth else ["--no-depth"]):
            command = [sys.executable, "-m", "aliked_ros.cli", "eval", str(folder), mode, "--json",
                       *shlex.split(args.eval_args)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"| {name} | {mode[2:]} | failed: {result.stderr.strip().splitlines()[-1:]} | | | |", flush=True)
                continue
            report = json.loads(result.stdout)
            row = {"variant": name, "mode": "rgbd" if mode == "--depth" else "mono", "ate_mm": report["ate_rmse_m"] * 1e3,
                   "path_ratio": report["path_length_m"] / report["true_path_length_m"],
                   "poses": report["poses"], "frames": report["frames"], "maps": len(report["segments"])}
            rows.append(row)
            print(f"| {name} | {row['mode']} | {row['ate_mm']:.2f} | {row['path_ratio']:.3f} | {row['poses']} / "
                  f"{row['frames']} | {row['maps']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
