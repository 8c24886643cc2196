"""Where the package's installed data files (config/, launch/) are found.

Order: the source checkout this module runs from (development), the ament index (colcon install or a sourced
workspace), then ``<sys.prefix>/share/aliked_ros`` (pip install into a venv, where AMENT_PREFIX_PATH is unset).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "aliked_ros"


def share_directory() -> Path:
    """The directory holding ``config/`` and ``launch/`` of this package."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "package.xml").is_file() and (checkout / "config").is_dir():
        return checkout
    candidates = []
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / PACKAGE)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    for candidate in candidates:
        if (candidate / "config").is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the share directory of {PACKAGE} (looked in {', '.join(map(str, candidates))}); "
        "is the package installed (pip install . / colcon build)?"
    )


def config_file(name: str) -> Path:
    """Path of a file shipped in ``config/``."""
    path = share_directory() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} config file not found: {path}")
    return path
