"""Feature extraction: ``create_extractor(name, ...)`` -> an ``Extractor`` whose ``extract(image)`` returns
``Features``. Names: aliked-t16 (default), aliked-n16, aliked-n16rot, aliked-n32, sift, orb."""
from __future__ import annotations

from aliked_ros.features.base import Extractor, ExtractorConfig, Features, ImageError

ALIKED_MODELS = ("aliked-t16", "aliked-n16", "aliked-n16rot", "aliked-n32")
EXTRACTORS = ALIKED_MODELS + ("sift", "orb")
DEFAULT_EXTRACTOR = "aliked-t16"


def create_extractor(name: str = DEFAULT_EXTRACTOR, config: ExtractorConfig | None = None, **options) -> Extractor:
    """An extractor by name; ``options`` are ExtractorConfig fields (max_keypoints, threshold, device, ...)."""
    config = config or ExtractorConfig(**options)
    if name in ALIKED_MODELS:
        from aliked_ros.features.aliked import AlikedExtractor

        return AlikedExtractor(name, config)
    if name in ("sift", "orb"):
        from aliked_ros.features.opencv import OrbExtractor, SiftExtractor

        return (SiftExtractor if name == "sift" else OrbExtractor)(config)
    raise ValueError(f"unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


__all__ = ["ALIKED_MODELS", "DEFAULT_EXTRACTOR", "EXTRACTORS", "Extractor", "ExtractorConfig", "Features",
           "ImageError", "create_extractor"]
