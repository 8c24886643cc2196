"""Where ALIKED weights come from, and loading them with errors a user can act on.

Resolution order for model ``<name>`` (e.g. ``aliked-t16``):
  1. an explicit file path (parameter ``weights`` / ``--weights``);
  2. ``$ALIKED_WEIGHTS_DIR/<name>.pth``;
  3. the cache: ``<torch hub dir>/checkpoints/<name>.pth`` (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``);
  4. a download from the official URL into that cache, with a progress bar.
"""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch

from aliked_ros.errors import AlikedRosError

OFFICIAL_URL = "https://github.com/Shiaoming/ALIKED/raw/main/models/{name}.pth"
WEIGHTS_DIR_ENV = "ALIKED_WEIGHTS_DIR"


class WeightsError(AlikedRosError):
    """Weights missing, unreadable or not those of the requested model."""


def cache_path(model_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{model_name}.pth"


def resolve_weights(model_name: str, weights: str | os.PathLike | None = None, download: bool = True,
                    url_template: str = OFFICIAL_URL) -> Path:
    """The weights file to use for ``model_name`` (see the module docstring for the order)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path} (given as the weights parameter)")
        return path
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if env_dir and (Path(env_dir) / f"{model_name}.pth").is_file():
        return Path(env_dir) / f"{model_name}.pth"
    cached = cache_path(model_name)
    if cached.is_file():
        return cached
    url = url_template.format(name=model_name)
    if download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=True)
            return cached
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = f"download failed ({error})"
    else:
        reason = "downloads are disabled"
    looked = f"${WEIGHTS_DIR_ENV}={env_dir}" if env_dir else f"${WEIGHTS_DIR_ENV} (not set)"
    raise WeightsError(
        f"no weights for {model_name}: {reason}. Looked in {looked} and the cache {cached}. Get {url} and either "
        f"put it at {cached}, or set {WEIGHTS_DIR_ENV} to the folder holding {model_name}.pth, or pass the file "
        f"with the weights parameter (--weights)."
    )


def load_weights(model: torch.nn.Module, path: Path, model_name: str) -> None:
    """Load a state dict into ``model``; a truncated, foreign or mismatched file raises WeightsError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file (pickle, zip, EOF, ...)
        raise WeightsError(f"cannot read weights file {path}: it is corrupt or not a PyTorch state dict ({error})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong_shape = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        details = "; ".join(filter(None, [
            f"missing {len(missing)} tensors (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong_shape)} of another shape (e.g. {wrong_shape[0]})" if wrong_shape else "",
        ]))
        raise WeightsError(f"weights file {path} does not hold {model_name} weights: {details}")
    model.load_state_dict(state)
