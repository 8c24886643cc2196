"""Where ALIKED weights come from, and loading them with errors a user can act on.

Resolution order for model ``<name>`` (e.g. ``aliked-t16``):
  1. an explicit file path (parameter ``weights`` / ``--weights``);
  2. ``$ALIKED_WEIGHTS_DIR/<name>.pth``;
  3. the cache: ``<torch hub dir>/checkpoints/<name>.pth`` (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``);
  4. a download from the official URL into that cache, with a progress bar.

The official files are pinned: the URL names the ALIKED commit that released them, and their SHA-256 is
checked, on download (torch keeps a file that fails the check out of the cache) and on every use of a cached
copy (one that fails, e.g. cut short by a dropped connection, is refused and replaced by a download that
passes; it is never deleted otherwise: offline it may be all the user has). A file given
by path or in ``$ALIKED_WEIGHTS_DIR`` is the user's: it is not checked here (``load_weights`` still refuses a
corrupt or mismatched one).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
from pathlib import Path

import torch

from aliked_ros.errors import AlikedRosError

# Shiaoming/ALIKED at the commit that released the models (unchanged since; the same files as on main)
OFFICIAL_URL = "https://github.com/Shiaoming/ALIKED/raw/ef4a438ea85cd8c46283c5beb5817fa23db6f692/models/{name}.pth"
OFFICIAL_SHA256 = {
    "aliked-t16": "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085",
    "aliked-n16": "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
    "aliked-n16rot": "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332",
    "aliked-n32": "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890",
}
WEIGHTS_DIR_ENV = "ALIKED_WEIGHTS_DIR"


class WeightsError(AlikedRosError):
    """Weights missing, unreadable or not those of the requested model."""


def cache_path(model_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{model_name}.pth"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(model_name: str, weights: str | os.PathLike | None = None, download: bool = True,
                    url_template: str = OFFICIAL_URL, sha256: str | None = None) -> Path:
    """The weights file to use for ``model_name`` (see the module docstring for the order). ``sha256``: what the
    cached or downloaded file must hash to (default: the official file's, for the official URL; None for another
    URL without one)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path} (given as the weights parameter)")
        return path
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if env_dir and (Path(env_dir) / f"{model_name}.pth").is_file():
        return Path(env_dir) / f"{model_name}.pth"
    if sha256 is None and url_template == OFFICIAL_URL:
        sha256 = OFFICIAL_SHA256.get(model_name)
    cached = cache_path(model_name)
    reason = ""
    if cached.is_file():
        if sha256 is None or sha256_of(cached) == sha256:
            return cached
        # cut short, or another file put there: left as it is (offline it may be all the user has) and replaced
        # only by a download that hashes right
        reason = (f"the cached copy {cached} is not the official file (SHA-256 {sha256[:12]}...; to use it anyway, "
                  f"pass it with the weights parameter); ")
    url = url_template.format(name=model_name)
    if download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            # torch downloads to a temporary file, checks the hash, and only then moves it into the cache
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=sha256, progress=True)
            return cached
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, RuntimeError) as error:
            reason += f"download failed ({error})"  # (RuntimeError: torch's "invalid hash value")
    else:
        reason += "downloads are disabled"
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
