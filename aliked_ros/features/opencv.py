"""Classical extractors from OpenCV behind the same interface: SIFT (float descriptors, L2-normalised) and ORB
(binary descriptors, 32 bytes, Hamming distance). Both run on the CPU; colour images are converted to gray.
Top-k mode keeps the ``max_keypoints`` strongest detector responses; threshold mode keeps responses above
``threshold`` (in OpenCV's response units), at most ``max_keypoints``."""
from __future__ import annotations

import time

import cv2
import numpy as np

from aliked_ros.features.base import Extractor, ExtractorConfig, Features, as_grey_image


class OpenCVExtractor(Extractor):
    short_tracks = True  # (measured: DEVELOPERS.md "Tracks re-attached to the keyframe")

    def _detector(self):
        """The OpenCV Feature2D object for this config."""
        raise NotImplementedError

    def __init__(self, config: ExtractorConfig) -> None:
        super().__init__(config)
        self._cv = self._detector()

    def _extract(self, image) -> Features:
        gray = as_grey_image(np.asarray(image))
        height, width = gray.shape
        start = time.perf_counter()
        cv_keypoints, descriptors = self._cv.detectAndCompute(gray, None)
        detect_ms = (time.perf_counter() - start) * 1e3
        keypoints = np.array([k.pt for k in cv_keypoints], np.float32).reshape(-1, 2)
        scores = np.array([k.response for k in cv_keypoints], np.float32)
        if descriptors is None:
            descriptors = np.zeros((0, self.descriptor_dim), np.uint8 if self.descriptor_kind == "binary" else np.float32)
        keep = self._select(keypoints, scores, width, height)
        descriptors = descriptors[keep]
        if self.descriptor_kind == "float":
            descriptors = descriptors.astype(np.float32)
            descriptors /= np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
        return Features(keypoints=keypoints[keep], scores=scores[keep], descriptors=np.ascontiguousarray(descriptors),
                        image_size=(width, height), extractor=self.name, timings_ms={"detect_describe": detect_ms})

    def _select(self, keypoints: np.ndarray, scores: np.ndarray, width: int, height: int) -> np.ndarray:
        """Indices kept: inside the border, above the threshold, strongest first, at most max_keypoints."""
        b = self.config.border
        ok = (keypoints[:, 0] >= b) & (keypoints[:, 0] <= width - 1 - b) & (keypoints[:, 1] >= b) & (keypoints[:, 1] <= height - 1 - b)
        if self.config.threshold is not None:
            ok &= scores > self.config.threshold
        candidates = np.flatnonzero(ok)
        order = np.argsort(-scores[candidates], kind="stable")
        return candidates[order[: self.config.max_keypoints]]


class SiftExtractor(OpenCVExtractor):
    name, descriptor_kind, descriptor_dim = "sift", "float", 128

    def _detector(self):
        return cv2.SIFT_create(nfeatures=self.config.max_keypoints)


class OrbExtractor(OpenCVExtractor):
    name, descriptor_kind, descriptor_dim = "orb", "binary", 32

    def _detector(self):
        return cv2.ORB_create(nfeatures=self.config.max_keypoints, edgeThreshold=max(31, self.config.border),
                              patchSize=31, fastThreshold=10)
