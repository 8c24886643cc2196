"""The extractor interface: one image in, a typed ``Features`` result out.

Conventions:
  - images: numpy uint8 (H,W) gray or (H,W,3) RGB (or (H,W,4) RGBA, alpha ignored); ALIKED also takes a float
    torch tensor (3,H,W) or (1,3,H,W), RGB in [0,1], already on its device.
  - keypoints: (N,2) float32 pixel (x, y) in the input image, x = column, y = row, centre of the top-left pixel
    at (0, 0). Sorted by nothing in particular.
  - scores: (N,) float32, extractor-specific scale (ALIKED: score map in (0,1); SIFT/ORB: detector response).
  - descriptors: (N,D) float32 L2-normalised rows (ALIKED, SIFT) or (N,32) uint8 packed bits (ORB, Hamming).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Literal

import cv2
import numpy as np

from aliked_ros.errors import AlikedRosError
from aliked_ros.features.contrast import keypoint_contrast, kept

DescriptorKind = Literal["float", "binary"]


class ImageError(AlikedRosError):
    """An image the extractors cannot take (empty, wrong shape or type)."""


@dataclass(frozen=True)
class ExtractorConfig:
    """Options shared by all extractors.

    ``max_keypoints``: keypoint budget; in top-k mode (``threshold`` None) the strongest ``max_keypoints``,
    in threshold mode at most that many of those scoring above ``threshold``.
    ``nms_radius``: non-maximum suppression radius in px (ALIKED; SIFT/ORB use their own suppression).
    ``border``: no keypoint closer than this many px to the image edge.
    ``min_score``: ALIKED maxima scoring below this are dropped in both modes. A uniform image scores
    0.013-0.018 everywhere with aliked-t16/n16 and yields hundreds of meaningless maxima; a dark one with the
    sensor's noise (black plus 2 grey levels sigma, clipped) 0.024 (median keypoint score), up to 0.043: at 0.02
    all 1024 maxima were kept, at 0.03 at most 46 (fewer than a map needs, ``OdometryConfig.init_min_landmarks``).
    The weakest of the official top-1024 keypoints on the shared real frames score 0.035-0.14 (measured); at 0.03
    no keypoint of the shared sequences' frames is dropped (DEVELOPERS.md "A dark frame"). 0 disables it.
    ``min_contrast``: a frame whose keypoints' median contrast (the spread of the 15 x 15 px around each at 5 px
    resolution over the image's noise level: ``aliked_ros.features.contrast``) is below this is noise and keeps
    only the keypoints of three times this contrast (none on pure noise), for every extractor. Frames of pure
    noise measure 0.23-0.82 (grey or colour, 2-10 grey levels sigma, raw or JPEG 60-90), real frames 4.1 and
    more, a real scene dimmed to a twentieth 1.24-1.92; ``min_score`` alone let ALIKED keep ~1000 keypoints on a
    grey frame of noise. Numpy images only (not an ALIKED torch tensor). 0 disables it.
    ``device``: "auto" (CUDA when available, else CPU), "cuda", "cuda:N" or "cpu" (torch-based stages).
    ``weights``: ALIKED weights file; None resolves as in ``aliked_ros.features.weights``.
    ``cuda_graph``: ALIKED on CUDA, top-k mode: capture each image size's whole extraction as a CUDA graph on
    first use and replay it (on by default; no effect on the CPU or in threshold mode).
    ``tf32``: ALIKED on CUDA: allow TF32 in cuDNN convolutions (torch's process-wide default is on). Off by
    default: with it on, the score map differs from the official fp32 outputs by up to 3.6e-3 (H200, measured
    with ``scripts/gpu_check.sh``), above the parity tests' 1e-4. Applied around each frame only.
    ``compile``: ALIKED on CUDA with ``cuda_graph``: the captured frame through ``torch.compile`` (inductor, fused
    kernels), compiled on the first frame of each image size (51-56 s on an H200 host), with cuDNN's benchmark mode (the
    configuration measured); a compiler that fails falls back to the plain path with one warning; asked for
    where it does not apply (CPU, no CUDA graph, threshold mode), one warning. Off by default (BENCHMARKS.md).
    """

    max_keypoints: int = 1024
    threshold: float | None = None
    nms_radius: int = 2
    border: int = 0
    min_score: float = 0.03
    min_contrast: float = 1.0
    device: str = "auto"
    weights: str | None = None
    cuda_graph: bool = True
    tf32: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.max_keypoints < 1:
            raise ValueError(f"max_keypoints must be >= 1, got {self.max_keypoints}")
        if self.nms_radius < 1:
            raise ValueError(f"nms_radius must be >= 1, got {self.nms_radius}")
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")
        if self.min_contrast < 0:
            raise ValueError(f"min_contrast must be >= 0, got {self.min_contrast}")


@dataclass(frozen=True)
class Features:
    """Keypoints, scores and descriptors of one image (see the module docstring for conventions)."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]  # (width, height) in px
    extractor: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    # the descriptors as a tensor on the extractor's device, when it has one (saves a copy when matching there)
    device_descriptors: object | None = field(default=None, repr=False, compare=False)
    # the extractor found the frame to be noise (ExtractorConfig.min_contrast) and kept only these keypoints
    noise_frame: bool = False

    def __len__(self) -> int:
        return len(self.keypoints)

    def select(self, rows: np.ndarray) -> "Features":
        """These keypoints (a bool mask or indices) with their scores and descriptors, as new ``Features``."""
        index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        device = self.device_descriptors
        if device is not None:  # a torch tensor on the extractor's device
            import torch

            device = device[torch.as_tensor(index, device=device.device)]
        return replace(self, keypoints=self.keypoints[index], scores=self.scores[index],
                       descriptors=self.descriptors[index], device_descriptors=device)

    @property
    def descriptor_kind(self) -> DescriptorKind:
        return "binary" if self.descriptors.dtype == np.uint8 else "float"


def as_uint8_image(image: np.ndarray) -> np.ndarray:
    """Validate a numpy image; returns it as (H,W) or (H,W,3) uint8 (alpha dropped)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy image, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageError(f"expected an (H,W) or (H,W,3) image, got shape {image.shape}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageError(f"image of {image.shape[1]}x{image.shape[0]} px is too small (or empty) for extraction")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype} (scale 16-bit images to 8 bits first)")
    return image


def as_grey_image(image: np.ndarray) -> np.ndarray:
    """(H,W) uint8 grey (OpenCV's RGB2GRAY) of any image ``as_uint8_image`` takes; a grey input is returned as
    it is (a view of the caller's buffer)."""
    image = as_uint8_image(image)
    return image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


class Extractor(ABC):
    """Base class: subclasses implement ``_extract`` and set ``name``, ``descriptor_kind``, ``descriptor_dim``."""

    name: str
    descriptor_kind: DescriptorKind
    descriptor_dim: int
    short_tracks: bool = False  # its tracks end within a few frames (handcrafted descriptors: ORB, SIFT), so
    #                             the odometry re-attaches them to the keyframe (OdometryConfig.keyframe_reattach)

    def __init__(self, config: ExtractorConfig) -> None:
        self.config = config

    @property
    def device(self) -> str:
        """Where the extractor runs ("cpu" for OpenCV extractors)."""
        return "cpu"

    def extract(self, image) -> Features:
        start = time.perf_counter()
        features = self._extract(image)
        if self.config.min_contrast > 0 and len(features) and isinstance(image, np.ndarray):
            features = self._unless_noise(image, features)
        features.timings_ms["total"] = (time.perf_counter() - start) * 1e3
        return features

    def _unless_noise(self, image: np.ndarray, features: Features) -> Features:
        """``features``, or of a frame of noise those that stand clear of it (``ExtractorConfig.min_contrast``)."""
        start = time.perf_counter()
        contrast = keypoint_contrast(as_grey_image(image), features.keypoints)
        keep = kept(contrast, self.config.min_contrast)
        if not keep.all():  # a frame of noise (kept() keeps all keypoints of any other)
            features = replace(features.select(keep), noise_frame=True)
        features.timings_ms["noise_test"] = (time.perf_counter() - start) * 1e3
        return features

    @abstractmethod
    def _extract(self, image) -> Features:
        ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, device={self.device}, {self.config})"
