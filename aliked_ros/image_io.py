"""Reading images from files. Colour images come back RGB (OpenCV reads BGR), gray ones (H,W); depth images
keep their dtype (uint16 or float32). Unreadable files raise ImageError naming the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from aliked_ros.features.base import ImageError


def read_image(path: str | Path) -> np.ndarray:
    """An 8-bit image as (H,W) gray or (H,W,3) RGB; 16-bit images are scaled to 8 bits."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError(f"cannot read image {path}: missing, empty or not an image file")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageError(f"image {path} has unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def read_depth(path: str | Path) -> np.ndarray:
    """A depth image as stored: uint16 (TUM: 5000 = 1 m; ROS 16UC1: mm) or float32 metres."""
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.size == 0:
        raise ImageError(f"cannot read depth image {path}: missing, empty or not an image file")
    if depth.ndim != 2 or depth.dtype not in (np.uint16, np.float32):
        raise ImageError(f"depth image {path} must be single-channel uint16 or float32, got {depth.dtype} {depth.shape}")
    return depth
