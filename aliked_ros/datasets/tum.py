"""TUM RGB-D folders: ``rgb.txt`` (and ``depth.txt``) or ``associations.txt`` (rgb_stamp rgb_file depth_stamp
depth_file), ``groundtruth.txt`` (TUM format, T_world_camera), calibration from ``camera_info.yaml`` beside them
or ``camera_info=``. Depth PNGs are uint16 with 5000 = 1 m."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aliked_ros.datasets.base import DatasetError, Sequence, camera_from_file_or
from aliked_ros.image_io import read_depth, read_image
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import read_tum

TUM_DEPTH_SCALE = 5000.0  # depth PNG units per metre


def _read_list(path: Path, columns: int = 2) -> list[list[str]]:
    """The rows of a TUM list (``timestamp path ...``; ``#`` comments, blank lines), each checked: at least
    ``columns`` columns and a numeric stamp, else a DatasetError naming the line."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        row = line.split()
        if not row or row[0].startswith("#"):
            continue
        try:
            float(row[0])
        except ValueError:
            row = []
        if len(row) < columns:
            raise DatasetError(f"{path}:{number}: expected 'timestamp path' ({columns} columns), got {line.strip()!r}")
        rows.append(row)
    return rows


def _colour_first(row: list[str]) -> list[str]:
    """An associations row as ``rgb_stamp rgb_path depth_stamp depth_path``: TUM's associate.py writes the files in
    the order it was given, and some datasets (ICL-NUIM) list depth first; told apart by the folder names."""
    if len(row) >= 4 and "depth" in Path(row[1]).parts[0] and "depth" not in Path(row[3]).parts[0]:
        return [row[2], row[3], row[0], row[1], *row[4:]]
    return row


class TumSequence(Sequence):
    def __init__(self, root: str | Path, camera_info: str | Path | None = None, use_depth: bool = True,
                 max_depth_difference: float = 0.02) -> None:
        self.root = Path(root)
        self.name = self.root.name
        self.camera = camera_from_file_or(self.root / "camera_info.yaml", camera_info, f"TUM folder {self.root}")
        self.entries: list[tuple[float, Path, Path | None]] = []
        associations = self.root / "associations.txt"
        if associations.is_file():
            for row in _read_list(associations):
                row = _colour_first(row)
                depth = self.root / row[3] if use_depth and len(row) >= 4 else None
                self.entries.append((float(row[0]), self.root / row[1], depth))
        else:
            rgb = [(float(r[0]), self.root / r[1]) for r in _read_list(self.root / "rgb.txt")]
            depth_list = self.root / "depth.txt"
            depths = [(float(r[0]), self.root / r[1]) for r in _read_list(depth_list)] if use_depth and depth_list.is_file() else []
            depth_stamps = np.array([d[0] for d in depths])
            for stamp, path in rgb:
                match = None
                if len(depths):
                    j = int(np.argmin(np.abs(depth_stamps - stamp)))
                    match = depths[j][1] if abs(depth_stamps[j] - stamp) <= max_depth_difference else None
                self.entries.append((stamp, path, match))
        if not self.entries:
            raise DatasetError(f"TUM folder {self.root} lists no images")
        self.has_depth = any(e[2] is not None for e in self.entries)
        gt = self.root / "groundtruth.txt"
        self.groundtruth = read_tum(gt) if gt.is_file() else None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Frame]:
        for stamp, image_path, depth_path in self.entries:
            image = read_image(image_path)
            depth = None
            if depth_path is not None:
                raw = read_depth(depth_path)
                depth = (raw.astype(np.float32) / TUM_DEPTH_SCALE) if raw.dtype == np.uint16 else raw.copy()
                depth[~(depth > 0)] = np.nan  # 0 = no measurement
                if depth.shape != image.shape[:2]:
                    raise DatasetError(f"depth {depth_path} is {depth.shape[1]}x{depth.shape[0]} px but image "
                                       f"{image_path} is {image.shape[1]}x{image.shape[0]}")
            yield Frame(image=image, stamp=stamp, camera=self.camera, depth=depth)


def write_tum_folder(sequence, root: str | Path) -> Path:
    """Write a sequence as a TUM RGB-D folder (rgb/, depth/ uint16 5000 = 1 m, lists, camera_info.yaml,
    groundtruth.txt when the sequence has one) that ``TumSequence`` reads back."""
    import cv2

    from aliked_ros.trajectory import write_tum

    root = Path(root)
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    rgb_lines, depth_lines, associations = [], [], []
    for frame in sequence:
        name = f"{frame.stamp:.6f}.png"
        image = frame.image if frame.image.ndim == 2 else cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(root / "rgb" / name), image):
            raise DatasetError(f"cannot write {root / 'rgb' / name}")
        rgb_lines.append(f"{frame.stamp:.6f} rgb/{name}")
        if frame.depth is not None:
            (root / "depth").mkdir(exist_ok=True)
            scaled = np.nan_to_num(frame.depth * TUM_DEPTH_SCALE, nan=0.0).round().clip(0, 65535).astype(np.uint16)
            cv2.imwrite(str(root / "depth" / name), scaled)
            depth_lines.append(f"{frame.stamp:.6f} depth/{name}")
            associations.append(f"{frame.stamp:.6f} rgb/{name} {frame.stamp:.6f} depth/{name}")
    header = "# written by aliked_ros\n# timestamp filename\n"
    (root / "rgb.txt").write_text(header + "\n".join(rgb_lines) + "\n")
    if depth_lines:
        (root / "depth.txt").write_text(header + "\n".join(depth_lines) + "\n")
        (root / "associations.txt").write_text("\n".join(associations) + "\n")
    sequence.camera.to_yaml(root / "camera_info.yaml", sequence.name)
    if sequence.groundtruth is not None:
        write_tum(root / "groundtruth.txt", sequence.groundtruth)
    return root
