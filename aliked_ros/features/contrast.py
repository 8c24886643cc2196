"""A frame of noise: keypoints against the image's own noise level.

A dark frame (lights off, a lens cap, the camera turned to an empty room) is black plus the sensor's noise, and
every detector finds maxima in noise: ALIKED-t16 keeps ~1000 of them on a grey frame of 2 grey levels sigma, ORB
hundreds at 4-6 (DEVELOPERS.md "A frame of noise"). Matched from frame to frame they started maps and tracked a
camera that saw nothing. A frame whose keypoints stand no higher than its noise keeps only those that stand
clear of it: none on noise, the textured part of a frame that is mostly dark.

Conventions:
  - the grey image (``base.as_grey_image``) is cut into ``TILE`` x ``TILE`` px tiles (a remainder of fewer than
    ``TILE`` rows or columns at the bottom and right is left out); each tile has a grey-level mean and std.
  - noise level: the ``NOISE_PERCENTILE``-th percentile of the tiles' standard deviations, leaving out tiles
    flatter than ``FLAT_STD`` (saturated or clipped areas), floored at ``FLAT_STD``. It measures the flattest
    parts of the image, so it holds for noise that JPEG has smeared over 8 x 8 blocks, where a Laplacian estimate
    (Immerkaer's) reads a quarter of it.
  - contrast of a keypoint: the standard deviation of the means of the 3 x 3 tiles (15 x 15 px) centred on the
    keypoint's tile, divided by the noise level: structure at 5 px and coarser against the noise within a
    tile. Noise averages out over a tile (iid noise: about a fifth of the noise level), a scene does not.
  - a frame is noise when the median contrast of its keypoints is below a bound (``ExtractorConfig.min_contrast``);
    it keeps only the keypoints that stand clear of the bound (``CLEAR_FACTOR`` times it), none on pure noise.
    Measured (DEVELOPERS.md "A frame of noise"): frames of pure noise (grey or colour, 2-10 grey levels sigma,
    raw or JPEG quality 60-90) have medians of 0.23-0.82, real frames 4.1 and more on every frame of the shared
    and synthetic sequences, and fr2_desk dimmed to a twentieth (with 2 grey levels of noise: ALIKED tracks it)
    1.24-1.92; the bound is 1.0. Dimmer scenes are taken for noise (fr2_desk at a thirtieth: 0.62-1.11).
    Single keypoints of other frames are not judged.
  - cost: ~1.4 ms on a 640 x 480 frame (two area resizes of the image; no per-pixel window sums).
"""
from __future__ import annotations

import cv2
import numpy as np

TILE = 5
NOISE_PERCENTILE = 10.0
FLAT_STD = 0.5
CLEAR_FACTOR = 3.0


def keypoint_contrast(grey: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Each keypoint's contrast (N,), as in the module docstring.
    ``grey``: (H,W) uint8, H and W at least ``TILE``; ``keypoints``: (N,2) px (x, y)."""
    rows, cols = grey.shape[0] // TILE, grey.shape[1] // TILE
    pixels = grey[: rows * TILE, : cols * TILE].astype(np.float32)
    mean = cv2.resize(pixels, (cols, rows), interpolation=cv2.INTER_AREA)  # exact tile means (integer factor)
    square = cv2.resize(pixels * pixels, (cols, rows), interpolation=cv2.INTER_AREA)
    tiles = np.sqrt(np.maximum(square - mean * mean, 0.0)).ravel()
    tiles = tiles[tiles >= FLAT_STD]
    noise = max(float(np.percentile(tiles, NOISE_PERCENTILE)) if tiles.size else 0.0, FLAT_STD)
    # the 3 x 3 tiles around each keypoint's tile (edge tiles repeated): the spread of their means
    spread = cv2.blur(mean * mean, (3, 3), borderType=cv2.BORDER_REPLICATE)
    mean = cv2.blur(mean, (3, 3), borderType=cv2.BORDER_REPLICATE)
    xy = np.asarray(keypoints, np.float64).reshape(-1, 2)
    col = np.clip((xy[:, 0] + 0.5) // TILE, 0, cols - 1).astype(np.int64)
    row = np.clip((xy[:, 1] + 0.5) // TILE, 0, rows - 1).astype(np.int64)
    m, q = mean[row, col].astype(np.float64), spread[row, col].astype(np.float64)
    return np.sqrt(np.maximum(q - m * m, 0.0)) / noise


def kept(contrast: np.ndarray, min_contrast: float) -> np.ndarray:
    """The keypoints kept (bool mask) of a frame with these contrasts (N,): all of them, unless their median is
    below ``min_contrast`` (a frame of noise); then only those that stand clear of it (``CLEAR_FACTOR`` times the
    bound: the textured part of a frame that is mostly dark)."""
    if len(contrast) == 0 or float(np.median(contrast)) >= min_contrast:
        return np.ones(len(contrast), bool)
    return contrast >= CLEAR_FACTOR * min_contrast
