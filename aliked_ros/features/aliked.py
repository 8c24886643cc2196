"""ALIKED behind the extractor interface: weights resolution, device choice, preprocessing, timed stages."""
from __future__ import annotations

import time

import numpy as np
import torch

from aliked_ros.features.aliked_net import CONFIGS, AlikedNet
from aliked_ros.features.base import Extractor, ExtractorConfig, Features, ImageError, as_uint8_image
from aliked_ros.features.weights import load_weights, resolve_weights


def select_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without CUDA is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    return chosen


class AlikedExtractor(Extractor):
    descriptor_kind = "float"

    def __init__(self, model_name: str, config: ExtractorConfig) -> None:
        super().__init__(config)
        if model_name not in CONFIGS:
            raise ValueError(f"unknown ALIKED model {model_name!r}; choose one of {', '.join(CONFIGS)}")
        self.name = model_name
        self._device = select_device(config.device)
        net = AlikedNet(model_name)
        self.weights_path = resolve_weights(model_name, config.weights)
        load_weights(net, self.weights_path, model_name)
        self.net = net.eval().to(self._device)
        self.descriptor_dim = net.descriptor_dim

    @property
    def device(self) -> str:
        return str(self._device)

    def _to_tensor(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            tensor = image if image.dim() == 4 else image[None]
            if tensor.shape[0] != 1 or tensor.shape[1] != 3 or not tensor.is_floating_point():
                raise ImageError(f"expected a float (3,H,W) or (1,3,H,W) RGB tensor in [0,1], got {tuple(image.shape)} {image.dtype}")
            return tensor.to(self._device, torch.float32)
        array = as_uint8_image(np.asarray(image))
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self._device)
        tensor = tensor[None, None].expand(1, 3, *array.shape) if array.ndim == 2 else tensor.permute(2, 0, 1)[None]
        return tensor.float() / 255.0

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    @torch.inference_mode()
    def _extract(self, image) -> Features:
        cfg = self.config
        clock = time.perf_counter
        t0 = clock()
        tensor = self._to_tensor(image)
        height, width = tensor.shape[-2:]
        feature_map, score_map = self.net.sparse_maps(tensor)  # the feature map is evaluated at keypoints only
        self._sync()
        t1 = clock()
        detections = self.net.detect(score_map[0], radius=cfg.nms_radius, top_k=cfg.max_keypoints,
                                     threshold=cfg.threshold, max_keypoints=cfg.max_keypoints, border=cfg.border,
                                     min_score=cfg.min_score)
        self._sync()
        t2 = clock()
        descriptors = self.net.describe(feature_map, detections.keypoints)
        self._sync()
        t3 = clock()
        result = Features(
            keypoints=detections.keypoints.cpu().numpy(), scores=detections.scores.cpu().numpy(),
            descriptors=descriptors.cpu().numpy(), image_size=(int(width), int(height)), extractor=self.name,
            timings_ms={"dense_map": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "describe": (t3 - t2) * 1e3},
            device_descriptors=descriptors,
        )
        return result
