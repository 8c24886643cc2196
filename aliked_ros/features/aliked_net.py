"""The ALIKED network (Zhao et al., "ALIKED: A Lighter Keypoint and Descriptor Extraction Network via Deformable
Transformation", IEEE TIM 2023), in plain PyTorch (no torchvision), with the parameter names of the official
checkpoints (Shiaoming/ALIKED) so that they load unchanged.

Three stages, each callable on its own (the extractor times them separately):
  ``sparse_maps(image)`` backbone + score head -> (SparseFeatureMap, score_map (1,1,H,W)); the full-resolution
                         feature map is never built (see below). ``dense_maps(image)`` is the network as published,
                         -> (feature_map (B,dim,H,W) L2-normalised, score_map), kept as the reference.
  ``detect(score_map)``  DKD: official ``simple_nms`` + border removal + top-k or threshold + soft-argmax refinement
  ``describe(...)``      SDDH: deformable sparse descriptors at the keypoints, L2-normalised

Why the sparse path gives the same result: the aggregated feature map is the concatenation of four per-scale
maps upsampled bilinearly (align_corners) to full resolution. The score head's first layer is a 1x1 convolution,
which commutes with that upsampling, so it runs on the small maps; and SDDH reads the normalised feature map
only at a few thousand pixels (a KxK patch and the corners of M bilinear samples per keypoint), where the
upsampling is a bilinear lookup into each small map. Results differ from ``dense_maps`` by float rounding only
(score map < 1e-5 on the shared reference frames).

How it is fast on a CPU (``InferencePath``, measured with scripts/bench_candidates.py, see BENCHMARKS.md):
BatchNorm folded into the convolutions; channels-last memory format (oneDNN's fast layout for these few-channel
convolutions); 1x1 convolutions as matrix products on channels-last rows; the two smallest maps' upsampling as
matrix products (the row interpolation banded, by blocks of 32 rows) added into the score head's input; SDDH as matrix products and fused gathers
(``embedding_bag`` with per-sample weights: the four taps of each small map's upsampling, the four corners of
each bilinear sample, the L2 normalisation folded into the corner weights); NMS with doubling window maxima and
boolean dilation. On CUDA the same code runs without a host synchronisation inside a frame (static top-k). On
the CPU most of it runs as fused numba kernels instead (``cpu_kernels.py``: 1.7x faster again), this code being
their fallback and reference.

Conventions: input RGB in [0, 1], (B, 3, H, W), any H, W (replicate-padded to multiples of 32 around the centre
and cropped back). Keypoints are pixel coordinates (x, y), centre of the top-left pixel at (0, 0).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_kernels import FusedCpuForward, load_kernels

LOG = logging.getLogger(__name__)

# c1, c2, c3, c4, dim, K (descriptor patch size), M (deformable sample positions)
CONFIGS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "aliked-t16": (8, 16, 32, 64, 64, 3, 16),
    "aliked-n16": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n16rot": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n32": (16, 32, 64, 128, 128, 3, 32),
}


UPSAMPLING = (2, 8, 32)  # factors from scales 2..4 to full resolution


def _padding(h: int, w: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) replicate padding to multiples of 32, split around the centre."""
    pad_h, pad_w = (-h) % 32, (-w) % 32
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _version(t: torch.Tensor) -> int:
    """The in-place modification counter of a tensor (inference tensors have none: -1)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def _upsample(t: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=True)


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Deformable convolution (DCNv1, stride 1, one offset group), as ``torchvision.ops.deform_conv2d``.

    ``offset`` is (B, 2*k*k, H, W) with (dy, dx) interleaved per kernel tap. Each tap samples ``x`` bilinearly
    with zero padding outside the image (grid_sample with align_corners=True and zeros padding has exactly the
    per-corner validity of torchvision's kernel), then one einsum applies the kernel.
    """
    b, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    k = kh * kw
    offset = offset.view(b, k, 2, h, w)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1) - padding
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w) - padding
    tap_r = torch.arange(kh, device=x.device, dtype=x.dtype).repeat_interleave(kw).view(1, k, 1, 1)
    tap_c = torch.arange(kw, device=x.device, dtype=x.dtype).repeat(kh).view(1, k, 1, 1)
    sample_y = rows + tap_r + offset[:, :, 0]
    sample_x = cols + tap_c + offset[:, :, 1]
    grid = torch.stack((sample_x * (2.0 / max(w - 1, 1)) - 1.0, sample_y * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    sampled = F.grid_sample(x, grid.view(b, k * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
    return torch.einsum("bckn,ock->bon", sampled.view(b, c, k, h * w), weight.view(c_out, c, k)).view(b, c_out, h, w)


class DeformableConv2d(nn.Module):
    """3x3 deformable convolution whose offsets come from a plain convolution of the same input."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.offset_conv = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size, padding=padding)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        max_offset = max(x.shape[2:]) / 4.0
        offset = self.offset_conv(x).clamp(-max_offset, max_offset)
        return deform_conv2d(x, offset, self.regular_conv.weight, self.padding)


def _conv3x3(c_in: int, c_out: int, deformable: bool) -> nn.Module:
    return DeformableConv2d(c_in, c_out) if deformable else nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate
        self.conv1, self.bn1 = _conv3x3(c_in, c_out, False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = _conv3x3(c_out, c_out, False), nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.bn2(self.conv2(self.gate(self.bn1(self.conv1(x))))))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, gate: nn.Module, deformable: bool) -> None:
        super().__init__()
        self.gate = gate
        self.conv1, self.bn1 = _conv3x3(c_in, c_out, deformable), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = _conv3x3(c_out, c_out, deformable), nn.BatchNorm2d(c_out)
        self.downsample = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.gate(self.bn1(self.conv1(x)))))
        return self.gate(out + self.downsample(x))


@dataclass(frozen=True)
class Detections:
    """Keypoints of one image: pixel (x, y) (N,2) and score-map value there (N,), on the model's device.
    ``valid`` (N,) bool, only from ``detect(..., static_shape=True)``: which of the N = top_k rows are keypoints."""

    keypoints: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor | None = None


def _window_max(t: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Maximum (logical or for bool) over windows of 2r+1 along ``dim``, centred, the outside counting as
    -inf (False). Window maxima by doubling: windows of 1, 2, 4, ... then two overlapping ones cover 2r+1, so
    r=2 takes 3 elementwise ops instead of 4."""
    n, k = t.shape[dim], 2 * radius + 1
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [radius, radius]
    current = F.pad(t, pad, value=False if t.dtype == torch.bool else float("-inf"))
    combine = torch.logical_or if t.dtype == torch.bool else torch.maximum
    size = 1  # current[i] = max of the padded input over [i, i + size)
    while 2 * size <= k:
        length = current.shape[dim] - size
        current = combine(current.narrow(dim, 0, length), current.narrow(dim, size, length))
        size *= 2
    if size == k:
        return current.narrow(dim, 0, n)
    return combine(current.narrow(dim, 0, n), current.narrow(dim, k - size, n))


def max_filter(t: torch.Tensor, radius: int) -> torch.Tensor:
    """The maximum over each (2r+1)^2 window of (B,C,H,W), as ``max_pool2d(t, 2r+1, stride=1, padding=r)``
    (exactly: max is exact), but separable and without indices: ~10x faster on CPU. A bool tensor gives the
    dilation (any True in the window)."""
    return _window_max(_window_max(t, radius, -1), radius, -2)


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """The official ALIKED/SuperPoint NMS: local maxima in a (2r+1)^2 window (ties kept), then two rounds that
    add maxima of what is left outside the suppressed windows. Returns a boolean mask. (The official code
    max-pools the mask as floats; a boolean dilation is the same.)"""
    max_mask = scores == max_filter(scores, radius)
    for _ in range(2):
        suppressed = max_filter(max_mask, radius)
        remaining = scores.masked_fill(suppressed, 0.0)
        max_mask = max_mask | ((remaining == max_filter(remaining, radius)) & ~suppressed)
    return max_mask


class SparseFeatureMap:
    """The L2-normalised feature map (dim,H,W) of ``dense_maps``, evaluated only at the pixels asked for.

    ``scales``: the four per-scale maps (1, dim/4, h_i, w_i) of the padded image (full resolution first), each
    already through its 1x1 conv and gate; ``pad``: (top, left) padding; ``size``: (H, W) of the input image.
    ``small_table``: optional, the three small maps as rows (h_2*w_2 + h_3*w_3 + h_4*w_4, dim/4) in that order
    (the fast path writes them there directly); built from ``scales`` when absent.

    A pixel's feature is the full-resolution map's value there and, for each small map, its bilinear
    (align_corners) upsampling at that pixel: four rows of the small map with the weights upsample_bilinear2d
    gives them, summed by one ``embedding_bag`` over the three maps' rows.
    """

    def __init__(self, scales: tuple[torch.Tensor, ...], pad: tuple[int, int], size: tuple[int, int],
                 small_table: torch.Tensor | None = None, kernels=None, dense: bool = False) -> None:
        self.scales, self.pad, self.size, self.kernels = scales, pad, size, kernels
        self.padded_size = tuple(scales[0].shape[-2:])
        self.dim = sum(f.shape[1] for f in scales)
        # ``dense``: the whole map built once as (Hp*Wp, dim) rows before normalisation (``dense_rows``), each
        # lookup one row normalised as it is read: the CUDA path, where the sparse form's per-pixel gathers of
        # 48 small rows cost more than building the map (measured on an H200: BENCHMARKS.md)
        self.dense_table = dense_rows(scales) if dense else None
        self.full_table = scales[0][0].permute(1, 2, 0).reshape(-1, scales[0].shape[1])  # a view if channels-last
        if small_table is None:
            small_table = torch.cat([f[0].permute(1, 2, 0).reshape(-1, f.shape[1]) for f in scales[1:]])
        self.small_table = small_table
        self.taps = _upsampling_taps(self.padded_size, tuple(tuple(f.shape[-2:]) for f in scales[1:]),
                                     scales[0].device, scales[0].dtype)

    def at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Normalised features (..., dim) at integer pixels (rows, cols) of the input image (same shapes)."""
        features, norms = self.unnormalised_at(rows, cols)
        return (features / norms[:, None]).view(*rows.shape, self.dim)

    def unnormalised_at(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (P, dim) before the L2 normalisation at P = rows.numel() pixels, and their norms (P,)
        (clamped to 1e-12 as F.normalize does)."""
        r = (rows.reshape(-1) + self.pad[0]).long()
        c = (cols.reshape(-1) + self.pad[1]).long()
        if self.dense_table is not None:
            features = self.dense_table.index_select(0, r * self.padded_size[1] + c)
            return features, torch.linalg.vector_norm(features, dim=1).clamp_min_(1e-12)
        n = len(r)
        row_index, row_weight, col_index, col_weight = self.taps
        # per pixel (3 maps, 2 rows, 2 cols): rows of the small-map table and their bilinear weights
        index = row_index.index_select(0, r) + col_index.index_select(0, c)
        weight = row_weight.index_select(0, r) * col_weight.index_select(0, c)
        small = _weighted_rows(self.small_table, index.view(n * 3, 4), weight.view(n * 3, 4)).view(n, -1)
        full = self.full_table.index_select(0, r * self.padded_size[1] + c)
        features = torch.cat((full, small), dim=1)
        return features, torch.linalg.vector_norm(features, dim=1).clamp_min_(1e-12)

    def sample(self, positions: torch.Tensor) -> torch.Tensor:
        """Bilinear samples (..., dim) of the normalised map at pixel positions (..., 2) as (x, y), zero outside
        the image: ``bilinear_at`` over ``unnormalised_at``, or, with the fused CPU kernels (``kernels``), one
        kernel that never stores the corners' features."""
        if self.kernels is None or positions.device.type != "cpu" or positions.dtype != torch.float32 or \
                _tracing():
            return bilinear_at(self.unnormalised_at, positions, self.size)
        shape = positions.shape[:-1]
        flat = positions.reshape(-1, 2).contiguous()
        out = torch.empty((flat.shape[0], self.dim))
        sampler = getattr(self.kernels, f"sample_features{self.full_table.shape[1]}")
        sampler(self.full_table.numpy(), self.small_table.numpy(), *(t.numpy() for t in self.taps), flat.numpy(),
                self.size[0], self.size[1], self.pad[0], self.pad[1], out.numpy())
        return out.view(*shape, self.dim)


def dense_rows(scales: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The four scales (1, dim/4, h_i, w_i) of a padded image -> its feature map before the L2 normalisation
    as rows (Hp*Wp, dim), row-major over pixels (the published network's ``x1234``, uncropped): a view of one
    channels-last tensor when the scales are channels-last."""
    x = torch.cat([scales[0]] + [_upsample(t, f) for t, f in zip(scales[1:], UPSAMPLING)], dim=1)
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _weighted_rows(table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                   fused: bool | None = None) -> torch.Tensor:
    """sum_j weight[i, j] * table[index[i, j]] -> (N, C). ``fused`` (default: on the CPU): one embedding_bag,
    which never materialises the (N, J, C) gather; otherwise (CUDA) a plain gather and sum, which has no host
    synchronisation and is capturable in a CUDA graph."""
    if fused is None:
        fused = not table.is_cuda
    if fused:
        return F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
    return (table[index] * weight[:, :, None]).sum(dim=1)


def _tracing() -> bool:
    """Inside torch.jit.trace, torch.compile or torch.export: tensors made now are not real (fake, proxies),
    so nothing made now may go into a cache."""
    compiler = getattr(torch, "compiler", None)
    return bool(torch.jit.is_tracing() or (compiler and (compiler.is_compiling()
                                                         or getattr(compiler, "is_exporting", lambda: False)())))


def _cached(function):
    """functools.lru_cache that steps aside while tracing/compiling/exporting (see ``_tracing``)."""
    cached = functools.lru_cache(maxsize=16)(function)

    @functools.wraps(function)
    def wrapper(*args):
        return function(*args) if _tracing() else cached(*args)
    return wrapper


def align_corners_taps(n_out: int, n_in: int, device: torch.device | None = None,
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear align_corners taps along one axis, as upsample_bilinear2d computes them: for each of n_out output
    indices the two input indices (n_out, 2) and their weights (n_out, 2)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = torch.arange(n_out, device=device, dtype=dtype) * scale
    i0 = src.floor().long().clamp(0, n_in - 1)
    frac = src - i0.to(dtype)
    return torch.stack((i0, (i0 + 1).clamp(max=n_in - 1)), dim=1), torch.stack((1 - frac, frac), dim=1)


@_cached
def _upsampling_taps(full: tuple[int, int], smalls: tuple[tuple[int, int], ...], device: torch.device,
                     dtype: torch.dtype):
    """How ``F.interpolate(x, size=full, mode="bilinear", align_corners=True)`` reads each small map, as rows of
    the stacked small-map table: per full-resolution row (H, maps, 2, 2) row offsets (map start + y * width) and
    weights, per column (W, maps, 2, 2) column indices and weights, laid out (map, row tap, column tap) so that
    one row entry plus one column entry gives the four table rows of a pixel and one product their weights."""
    rows, cols, start = [], [], 0
    for h, w in smalls:
        row_index, row_weight = align_corners_taps(full[0], h, device, dtype)
        rows.append((row_index * w + start, row_weight))
        cols.append(align_corners_taps(full[1], w, device, dtype))
        start += h * w
    def by_row(parts):  # (n, maps, 2) -> (n, maps, 2, 2), repeated over the column tap
        return torch.stack(parts, dim=1)[:, :, :, None].expand(-1, -1, -1, 2).contiguous()

    def by_col(parts):  # repeated over the row tap
        return torch.stack(parts, dim=1)[:, :, None, :].expand(-1, -1, 2, -1).contiguous()

    return (by_row([i for i, _ in rows]), by_row([wt for _, wt in rows]), by_col([i for i, _ in cols]),
            by_col([wt for _, wt in cols]))


ROW_BLOCK = 32  # padded heights are multiples of 32


@_cached
def _row_blocks(n_out: int, n_in: int, block: int, device: torch.device, dtype: torch.dtype):
    """The align_corners interpolation matrix (n_out, n_in) of ``_interpolation_matrices`` cut into row blocks
    (n_out a multiple of ``block``) with the fewest columns that hold their non-zeros: (n_out / block, block, K)
    blocks and (n_out / block, K) the columns each uses. The column ranges come from host arithmetic (one row of
    margin for rounding), so nothing here reads a device value."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    firsts, lasts = [], []
    for b in range(n_out // block):
        firsts.append(max(int(b * block * scale) - 1, 0))
        lasts.append(min(int(((b + 1) * block - 1) * scale) + 2, n_in - 1))
    width = max(last - first + 1 for first, last in zip(firsts, lasts))
    starts = [min(first, n_in - width) for first in firsts]
    index = torch.tensor([[s + k for k in range(width)] for s in starts], device=device)
    rows, _ = _interpolation_matrices((n_out, 2), (n_in, 2), device, dtype)
    blocks = torch.gather(rows.view(n_out // block, block, n_in), 2, index[:, None, :].expand(-1, block, -1))
    return blocks, index


@_cached
def _interpolation_matrices(full: tuple[int, int], small: tuple[int, int], device: torch.device, dtype: torch.dtype):
    """R_h (H, h) and R_w (W, w) with ``F.interpolate(x, size=full, mode="bilinear", align_corners=True)`` =
    R_h x R_w^T for each channel of x (h, w): two non-zeros per row, upsample_bilinear2d's weights."""
    def matrix(n_out: int, n_in: int) -> torch.Tensor:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = torch.arange(n_out, device=device, dtype=dtype) * scale
        i0 = src.floor().long().clamp(0, n_in - 1)
        frac = src - i0.to(dtype)
        out = torch.zeros(n_out, n_in, device=device, dtype=dtype)
        rows = torch.arange(n_out, device=device)
        out.index_put_((rows, i0), 1 - frac, accumulate=True)
        out.index_put_((rows, (i0 + 1).clamp(max=n_in - 1)), frac, accumulate=True)
        return out

    return matrix(full[0], small[0]), matrix(full[1], small[1])


def dense_lookup(feature_map: torch.Tensor):
    """``at(rows, cols)`` for a dense (C,H,W) feature map, as SparseFeatureMap.at."""
    return lambda rows, cols: feature_map[:, rows, cols].movedim(0, -1)


def bilinear_at(at, positions: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples (..., C) of a map given by ``at(rows, cols)`` at pixel positions (..., 2) as (x, y);
    zero outside the map (grid_sample with align_corners=True and zeros padding). ``at`` may also return
    (unnormalised features (P, C), norms (P,)) for P pixels: the normalisation then goes into the weights."""
    h, w = size
    shape = positions.shape[:-1]
    positions = positions.reshape(-1, 2)
    x0, y0 = positions[:, 0].floor(), positions[:, 1].floor()
    fx, fy = positions[:, 0] - x0, positions[:, 1] - y0
    # the four corners stacked on a new last axis: (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1)
    corner = torch.arange(4, device=positions.device)
    x = x0.long()[:, None] + corner % 2
    y = y0.long()[:, None] + torch.div(corner, 2, rounding_mode="floor")
    weights = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy), dim=-1)
    weights = weights * ((x >= 0) & (x < w) & (y >= 0) & (y < h))
    values = at(y.clamp(0, h - 1), x.clamp(0, w - 1))  # (P, 4, C), or ((4P, C), (4P,))
    if isinstance(values, tuple):
        values, norms = values
        weights = weights / norms.view(-1, 4)
    values = values.reshape(-1, values.shape[-1])
    # the weighted sum of each sample's four corners in one fused gather
    corners = torch.arange(values.shape[0], device=positions.device).view(-1, 4)
    samples = _weighted_rows(values, corners, weights)
    return samples.view(*shape, values.shape[-1])


class SDDH(nn.Module):
    """Sparse deformable descriptor head: M sampling positions per keypoint, offsets predicted from a KxK patch."""

    def __init__(self, dim: int, kernel_size: int, n_pos: int, gate: nn.Module) -> None:
        super().__init__()
        self.kernel_size, self.n_pos = kernel_size, n_pos
        self.offset_conv = nn.Sequential(
            nn.Conv2d(dim, 2 * n_pos, kernel_size), gate, nn.Conv2d(2 * n_pos, 2 * n_pos, 1))
        self.sf_conv = nn.Conv2d(dim, dim, 1, bias=False)
        self.agg_weights = nn.Parameter(torch.zeros(n_pos, dim, dim))

    def forward(self, feature_map: torch.Tensor | SparseFeatureMap, keypoints: torch.Tensor) -> torch.Tensor:
        """feature_map (C,H,W) L2-normalised, or the same as a SparseFeatureMap; keypoints (N,2) pixel (x, y)
        -> descriptors (N, C), L2-normalised.

        The convolutions on per-keypoint patches and samples are matrix products: the KxK offset convolution
        on (N, K*K*C) patches, the 1x1 convolutions on (N*M, C) rows, and the aggregation over the M samples one
        (N, M*C) x (M*C, C) product."""
        if isinstance(feature_map, SparseFeatureMap):
            (h, w), c, at = feature_map.size, feature_map.dim, feature_map.at
        else:
            (c, h, w), at = feature_map.shape, dense_lookup(feature_map)
        n, ps, m = len(keypoints), self.kernel_size, self.n_pos
        if n == 0:
            return keypoints.new_zeros((0, c))
        max_offset = max(h, w) / 4.0
        # the official patch: top-left corner at trunc(trunc(kpt) - ps/2 + 1), kept inside the map
        corner = (keypoints.long() - ps / 2 + 1).long()
        corner[:, 0].clamp_(0, w - 1 - ps)
        corner[:, 1].clamp_(0, h - 1 - ps)
        steps = torch.arange(ps, device=keypoints.device)
        rows = (corner[:, 1, None] + steps)[:, :, None].expand(n, ps, ps)
        cols = (corner[:, 0, None] + steps)[:, None, :].expand(n, ps, ps)
        patches = at(rows, cols).reshape(n, ps * ps * c)  # (N, ps*ps*C) in (row, col, channel) order
        conv1, conv2 = self.offset_conv[0], self.offset_conv[2]
        offset = F.linear(patches, conv1.weight.permute(0, 2, 3, 1).reshape(2 * m, -1), conv1.bias)
        offset = F.linear(F.selu(offset), conv2.weight.view(2 * m, 2 * m), conv2.bias).clamp(-max_offset, max_offset)
        offset = offset.view(n, 2, m).permute(0, 2, 1)  # (N, M, 2) as (dx, dy)
        positions = keypoints[:, None, :] + offset
        if isinstance(feature_map, SparseFeatureMap):
            samples = feature_map.sample(positions)  # (N, M, C)
        else:
            samples = bilinear_at(at, positions, (h, w))
        samples = F.selu(F.linear(samples.reshape(n * m, c), self.sf_conv.weight.view(c, c)))
        descriptors = samples.view(n, m * c) @ self.agg_weights.reshape(m * c, -1)
        return F.normalize(descriptors, p=2, dim=1)


def _fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    """(weight, bias) of a convolution followed by an eval-mode BatchNorm, as one convolution."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded_bias = bn.bias - bn.running_mean * scale
    if bias is not None:
        folded_bias = folded_bias + bias * scale
    return weight * scale.view(-1, 1, 1, 1), folded_bias


class InferencePath:
    """``AlikedNet.sparse_maps`` as it runs: the network's weights prepared once for inference.

    - BatchNorm folded into the convolution before it (a deformable convolution is linear in its weight, so its
      BatchNorm folds the same way);
    - full- and half-resolution maps in channels-last memory format (oneDNN's fast layout for convolutions with
      few channels: 2-3x faster than NCHW for the 3->8, 8->8 and 8->4 full-resolution layers on CPU);
    - the 1x1 projections of the four scales as matrix products on channels-last rows, the three small ones
      written straight into the table that ``SparseFeatureMap`` gathers from, the full-resolution one read in
      place (a channels-last map is already a (H*W, C) table).
    Built from the parameters as they are; ``AlikedNet.inference_path()`` rebuilds it when they change.
    """

    def __init__(self, net: "AlikedNet", channels_last: bool = True, cpu_kernels: bool = True) -> None:
        cl = self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        with torch.no_grad():
            def conv_bn(conv, bn, bias=None):
                w, b = _fold_batch_norm(conv.weight, bias, bn)
                return w.contiguous(memory_format=cl), b

            self.block1 = (conv_bn(net.block1.conv1, net.block1.bn1), conv_bn(net.block1.conv2, net.block1.bn2))
            b2 = net.block2
            self.block2 = (conv_bn(b2.conv1, b2.bn1), conv_bn(b2.conv2, b2.bn2),
                           (b2.downsample.weight.contiguous(memory_format=cl), b2.downsample.bias.clone()))
            self.deformable = []
            for block in (net.block3, net.block4):
                self.deformable.append((
                    (block.conv1, _fold_batch_norm(block.conv1.regular_conv.weight, None, block.bn1)),
                    (block.conv2, _fold_batch_norm(block.conv2.regular_conv.weight, None, block.bn2)),
                    (block.downsample.weight.clone(), block.downsample.bias.clone())))
            # 1x1 projections as (C_in, C_out) matrices for rows @ matrix
            self.projections = [conv.weight[:, :, 0, 0].t().contiguous()
                                for conv in (net.conv1, net.conv2, net.conv3, net.conv4)]
            first = net.score_head[0].weight[:, :, 0, 0]
            self.score_first = [w.t().contiguous() for w in first.split([p.shape[1] for p in self.projections], dim=1)]
            self.score_convs = [net.score_head[i].weight.contiguous(memory_format=cl) for i in (2, 4, 6)]
        self.dim = net.descriptor_dim
        self.cpu_kernels = cpu_kernels
        self._fused: FusedCpuForward | None | bool = None  # built on the first CPU image; False: unavailable

    def fused_cpu_forward(self) -> FusedCpuForward | None:
        """The fused-kernel forward for CPU images (``cpu_kernels.FusedCpuForward``), or None where it is off
        or unavailable (no numba, ``ALIKED_ROS_CPU_KERNELS=0``, a build or compile failure: torch runs). The
        first call compiles every kernel on a small image (or loads them from numba's disk cache)."""
        if self._fused is None:
            self._fused = False
            if self.cpu_kernels:
                (w1, _), _ = self.block1
                kernels = load_kernels(w1.shape[0], self.block2[0][0].shape[0], self.projections[0].shape[1],
                                       self.score_first[0].shape[1], tuple(w.shape[0] for w in self.score_convs))
                if kernels is not None:
                    try:
                        fused = FusedCpuForward(self, kernels)
                        with torch.inference_mode():
                            scales, table, _ = fused(torch.rand(1, 3, 64, 64), (0, 0, 0, 0))
                            SparseFeatureMap(scales, (0, 0), (64, 64), table, kernels).sample(torch.rand(8, 2) * 60)
                        self._fused = fused
                    except Exception as error:  # a kernel numba cannot compile here
                        LOG.warning("fused CPU kernels failed to compile (%s: %s); ALIKED runs on torch alone",
                                    type(error).__name__, error)
        return self._fused or None

    @staticmethod
    def _deformable_block(x: torch.Tensor, spec) -> torch.Tensor:
        (m1, (w1, b1)), (m2, (w2, b2)), (wd, bd) = spec

        def conv(module, t, weight, bias):
            max_offset = max(t.shape[2:]) / 4.0
            offset = module.offset_conv(t).clamp(-max_offset, max_offset)
            return deform_conv2d(t, offset, weight, module.padding) + bias.view(1, -1, 1, 1)

        out = conv(m2, torch.selu_(conv(m1, x, w1, b1)), w2, b2)
        out += F.conv2d(x, wd, bd)
        return torch.selu_(out)

    def __call__(self, image: torch.Tensor, pads: tuple[int, int, int, int]):
        """Padded image (1,3,Hp,Wp) -> (the four scales (1, dim/4, h_i, w_i), small-map table, score map
        (1,1,Hp,Wp)), padding not yet cropped. A CPU float32 image goes through the fused kernels when they
        are available (``fused_cpu_forward``)."""
        if FusedCpuForward.applies(image) and not _tracing():
            fused = self.fused_cpu_forward()
            if fused is not None:
                return fused(image, pads)
        image = image.contiguous(memory_format=self.memory_format)
        (w1, b1), (w2, b2) = self.block1
        x1 = torch.selu_(F.conv2d(torch.selu_(F.conv2d(image, w1, b1, padding=1)), w2, b2, padding=1))
        (w1, b1), (w2, b2), (wd, bd) = self.block2
        pooled = F.avg_pool2d(x1, 2)
        x2 = F.conv2d(torch.selu_(F.conv2d(pooled, w1, b1, padding=1)), w2, b2, padding=1)
        x2 += F.conv2d(pooled, wd, bd)
        x2 = torch.selu_(x2)
        x3 = self._deformable_block(F.avg_pool2d(x2, 4).contiguous(), self.deformable[0])
        x4 = self._deformable_block(F.avg_pool2d(x3, 4), self.deformable[1])
        maps = (x1, x2, x3, x4)

        def rows(t: torch.Tensor) -> torch.Tensor:  # (1,C,h,w) -> (h*w, C), a view when channels-last
            return t[0].permute(1, 2, 0).reshape(-1, t.shape[1])

        def as_map(table: torch.Tensor, like: torch.Tensor) -> torch.Tensor:  # (h*w, C) -> (1,C,h,w) channels-last
            return table.view(1, *like.shape[-2:], table.shape[1]).permute(0, 3, 1, 2).contiguous(
                memory_format=self.memory_format)

        c = self.projections[0].shape[1]
        sizes = [m.shape[-2] * m.shape[-1] for m in maps[1:]]
        full = torch.selu_(rows(x1) @ self.projections[0])
        if torch.jit.is_tracing():  # exporters that trace (OpenVINO) have no matmul with out=
            small_table = torch.cat([rows(m) @ p for m, p in zip(maps[1:], self.projections[1:])])
        else:
            small_table = image.new_empty((sum(sizes), c))
            for part, m, projection in zip(small_table.split(sizes), maps[1:], self.projections[1:]):
                torch.matmul(rows(m), projection, out=part)
        torch.selu_(small_table)
        scales = (as_map(full, x1),) + tuple(as_map(part, m) for part, m in zip(small_table.split(sizes), maps[1:]))
        # score head: its first 1x1 conv on each scale before upsampling (they commute), summed at full resolution
        parts = small_table.split(sizes)
        pre = as_map(full @ self.score_first[0], x1)
        pre += _upsample(as_map(parts[0] @ self.score_first[1], x2), UPSAMPLING[0])
        if self.memory_format == torch.channels_last:
            # the two smallest maps upsampled and added as matrix products: up(X) = R_h X R_w^T per channel; with
            # channels last, pre is an (H, W*C) matrix. R_h is banded (two taps per row), so it goes in by blocks
            # of 32 output rows, each reading only the few rows of X R_w^T it needs: one batched product
            hp, wp = pre.shape[-2:]
            windows, blocks = [], []
            for part, m, weight in zip(parts[1:], maps[2:], self.score_first[2:]):
                h, w = m.shape[-2:]
                rows_up, cols_up = _interpolation_matrices((hp, wp), (h, w), pre.device, pre.dtype)
                row_blocks, row_index = _row_blocks(hp, h, ROW_BLOCK, pre.device, pre.dtype)
                columns_done = torch.matmul(cols_up, (part @ weight).view(h, w, -1)).view(h, -1)  # (h, W*C)
                windows.append(columns_done[row_index])  # (blocks, K, W*C)
                blocks.append(row_blocks)  # (blocks, ROW_BLOCK, K)
            added = torch.cat(blocks, dim=2), torch.cat(windows, dim=1)
            if torch.jit.is_tracing():  # tracing exporters (OpenVINO) mishandle an in-place product into a view
                pre = pre + torch.bmm(*added).view(1, hp, wp, -1).permute(0, 3, 1, 2)
            else:
                pre.permute(0, 2, 3, 1).reshape(hp // ROW_BLOCK, ROW_BLOCK, -1).baddbmm_(*added)
        else:
            for part, m, weight, factor in zip(parts[1:], maps[2:], self.score_first[2:], UPSAMPLING[1:]):
                pre += _upsample(as_map(part @ weight, m), factor)
        y = torch.selu_(pre)
        y = torch.selu_(F.conv2d(y, self.score_convs[0], padding=1))
        y = torch.selu_(F.conv2d(y, self.score_convs[1], padding=1))
        return scales, small_table, torch.sigmoid(F.conv2d(y, self.score_convs[2], padding=1))


class AlikedNet(nn.Module):
    """The ALIKED network for one of the configurations in CONFIGS (weights loaded separately)."""

    def __init__(self, model_name: str = "aliked-t16") -> None:
        super().__init__()
        if model_name not in CONFIGS:
            raise ValueError(f"unknown ALIKED model {model_name!r}; choose one of {', '.join(CONFIGS)}")
        self.model_name = model_name
        c1, c2, c3, c4, dim, k, m = CONFIGS[model_name]
        self.descriptor_dim = dim
        # sparse_maps: build the dense feature map for the descriptor head (True) or evaluate it at the sampled
        # pixels only (False); None: dense on CUDA, sparse on the CPU (each the faster there)
        self.dense_features: bool | None = None
        self.gate = nn.SELU(inplace=True)
        self.block1 = ConvBlock(3, c1, self.gate)
        self.block2 = ResBlock(c1, c2, self.gate, deformable=False)
        self.block3 = ResBlock(c2, c3, self.gate, deformable=True)
        self.block4 = ResBlock(c3, c4, self.gate, deformable=True)
        self.conv1 = nn.Conv2d(c1, dim // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c2, dim // 4, 1, bias=False)
        self.conv3 = nn.Conv2d(c3, dim // 4, 1, bias=False)
        self.conv4 = nn.Conv2d(dim, dim // 4, 1, bias=False)
        self.score_head = nn.Sequential(
            nn.Conv2d(dim, 8, 1, bias=False), self.gate,
            nn.Conv2d(8, 4, 3, padding=1, bias=False), self.gate,
            nn.Conv2d(4, 4, 3, padding=1, bias=False), self.gate,
            nn.Conv2d(4, 1, 3, padding=1, bias=False),
        )
        self.desc_head = SDDH(dim, k, m, self.gate)

    def _scales(self, image: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[int, int, int, int]]:
        """Backbone: the four per-scale maps (B, dim/4, H/s, W/s), s = 1, 2, 8, 32, of the image replicate-padded
        to multiples of 32, and the padding (left, right, top, bottom)."""
        pads = _padding(*image.shape[-2:])
        if any(pads):
            image = F.pad(image, pads, mode="replicate")
        x1 = self.block1(image)
        x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self.block3(F.avg_pool2d(x2, 4))
        x4 = self.block4(F.avg_pool2d(x3, 4))
        scales = (self.gate(self.conv1(x1)), self.gate(self.conv2(x2)), self.gate(self.conv3(x3)),
                  self.gate(self.conv4(x4)))
        return scales, pads

    @staticmethod
    def _crop(t: torch.Tensor, pads: tuple[int, int, int, int], h: int, w: int) -> torch.Tensor:
        return t[:, :, pads[2]:pads[2] + h, pads[0]:pads[0] + w]

    def dense_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The published network: image (B,3,H,W) RGB in [0,1] -> feature_map (B,dim,H,W) L2-normalised,
        score_map (B,1,H,W) in (0,1)."""
        h, w = image.shape[-2:]
        scales, pads = self._scales(image)
        x1234 = torch.cat([scales[0]] + [_upsample(t, f) for t, f in zip(scales[1:], UPSAMPLING)], dim=1)
        score_map = torch.sigmoid(self.score_head(x1234))
        feature_map = F.normalize(x1234, p=2, dim=1)
        return self._crop(feature_map, pads, h, w), self._crop(score_map, pads, h, w)

    def inference_path(self) -> InferencePath:
        """The prepared inference weights (``InferencePath``), rebuilt when a parameter or buffer has changed
        (loaded, moved to another device, modified in place)."""
        key = tuple((t.data_ptr(), t.device, _version(t)) for t in (*self.parameters(), *self.buffers()))
        if getattr(self, "_inference_key", None) != key:
            self._inference = InferencePath(self)
            self._inference_key = key
        return self._inference

    def sparse_maps(self, image: torch.Tensor) -> tuple[SparseFeatureMap, torch.Tensor]:
        """Fast path of ``dense_maps`` for one image (1,3,H,W): (SparseFeatureMap, score_map (1,1,H,W))."""
        if image.shape[0] != 1:
            raise ValueError(f"sparse_maps takes one image, got a batch of {image.shape[0]}")
        h, w = image.shape[-2:]
        pads = _padding(h, w)
        if any(pads):
            image = F.pad(image, pads, mode="replicate")
        path = self.inference_path()
        scales, small_table, score_map = path(image, pads)
        fused = path.fused_cpu_forward() if FusedCpuForward.applies(image) else None
        return (SparseFeatureMap(scales, (pads[2], pads[0]), (int(h), int(w)), small_table,
                                 kernels=fused.kernels if fused is not None else None,
                                 dense=self.dense_features if self.dense_features is not None else image.is_cuda),
                self._crop(score_map, pads, h, w))

    @staticmethod
    def detect(score_map: torch.Tensor, radius: int = 2, top_k: int = 1024, threshold: float | None = None,
               max_keypoints: int = 5000, border: int = 0, min_score: float = 0.0,
               static_shape: bool = False) -> Detections:
        """DKD on one score map (1,H,W) or (H,W).

        Top-k mode (``threshold`` None): the ``top_k`` highest NMS maxima. Threshold mode: maxima with score
        > ``threshold`` (if none, those above the map's mean, as the official code), at most ``max_keypoints``
        (highest first). Maxima within ``radius + border`` px of the image edge (so refined keypoints lie >= ``border`` px
        inside), and maxima scoring below
        ``min_score``, are never keypoints (the official code has no ``min_score``: 0 reproduces it).
        Each maximum moves by a soft-argmax (temperature 0.1) over its (2r+1)^2 window; its score is the score
        map read bilinearly at the refined position.
        ``static_shape`` (top-k mode only): always ``top_k`` rows and a ``valid`` mask instead of dropping the
        rows that are no maxima, so that nothing waits for the device (no data-dependent shape): the CUDA path.
        """
        scores = score_map.reshape(score_map.shape[-2:])
        h, w = scores.shape
        is_max = simple_nms(scores[None, None], radius)[0, 0]
        margin = radius + border  # refinement moves a maximum by at most `radius` px
        is_max[:margin, :] = False
        is_max[:, :margin] = False
        is_max[h - margin:, :] = False
        is_max[:, w - margin:] = False
        if min_score > 0:
            is_max &= scores >= min_score
        flat = scores.reshape(-1)
        if threshold is None:
            candidates = torch.where(is_max.reshape(-1), flat, torch.zeros_like(flat))
            values, indices = torch.topk(candidates, min(top_k, flat.numel()))
            if static_shape:
                valid = values > 0
            else:
                indices = indices[values > 0]
        else:
            mask = is_max & (scores > threshold)
            if not bool(mask.any()):
                mask = is_max & (scores > scores.mean())
            indices = mask.reshape(-1).nonzero()[:, 0]
            if len(indices) > max_keypoints:
                indices = indices[flat[indices].argsort(descending=True)[:max_keypoints]]
        # soft-argmax over the (2r+1)^2 window around each maximum (zero outside the map, as the official unfold);
        # gathered at the maxima only instead of unfolding the whole map
        col, row = indices % w, torch.div(indices, w, rounding_mode="floor")
        steps = torch.arange(-radius, radius + 1, device=scores.device)
        win_rows = (row[:, None, None] + steps[None, :, None]).expand(-1, -1, len(steps))
        win_cols = (col[:, None, None] + steps[None, None, :]).expand(-1, len(steps), -1)
        inside = (win_rows >= 0) & (win_rows < h) & (win_cols >= 0) & (win_cols < w)
        window = torch.where(inside, scores[win_rows.clamp(0, h - 1), win_cols.clamp(0, w - 1)], 0.0).flatten(1)
        offsets = steps.to(scores.dtype)
        grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij")[::-1], dim=-1).reshape(-1, 2)  # (dx, dy)
        weights = torch.exp((window - window.max(dim=1, keepdim=True).values) / 0.1)
        residual = weights @ grid / weights.sum(dim=1, keepdim=True)
        xy = torch.stack((col, row), dim=1).to(scores.dtype)
        keypoints = xy + residual
        # grid_sample coordinates (no host-made tensors here: the CUDA graph capture forbids host-to-device copies)
        sample_grid = torch.stack((keypoints[:, 0] * (2.0 / (w - 1)) - 1.0, keypoints[:, 1] * (2.0 / (h - 1)) - 1.0),
                                  dim=-1).view(1, 1, -1, 2)
        kp_scores = F.grid_sample(scores[None, None], sample_grid, mode="bilinear", align_corners=True)[0, 0, 0]
        return Detections(keypoints=keypoints, scores=kp_scores,
                          valid=valid if threshold is None and static_shape else None)

    def describe(self, feature_map: torch.Tensor | SparseFeatureMap, keypoints: torch.Tensor) -> torch.Tensor:
        """SDDH descriptors (N, dim) at pixel keypoints (N,2), for one feature map (dim,H,W) or (1,dim,H,W), or
        a SparseFeatureMap."""
        if isinstance(feature_map, torch.Tensor):
            feature_map = feature_map.reshape(feature_map.shape[-3:])
        return self.desc_head(feature_map, keypoints)
