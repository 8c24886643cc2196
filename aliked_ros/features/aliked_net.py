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
(score map < 1e-6 on the shared reference frames).

Conventions: input RGB in [0, 1], (B, 3, H, W), any H, W (replicate-padded to multiples of 32 around the centre
and cropped back). Keypoints are pixel coordinates (x, y), centre of the top-left pixel at (0, 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# c1, c2, c3, c4, dim, K (descriptor patch size), M (deformable sample positions)
CONFIGS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "aliked-t16": (8, 16, 32, 64, 64, 3, 16),
    "aliked-n16": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n16rot": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n32": (16, 32, 64, 128, 128, 3, 32),
}


UPSAMPLING = (2, 8, 32)  # factors from scales 2..4 to full resolution


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
    """Keypoints of one image: pixel (x, y) (N,2) and score-map value there (N,), on the model's device."""

    keypoints: torch.Tensor
    scores: torch.Tensor


def max_filter(t: torch.Tensor, radius: int) -> torch.Tensor:
    """The maximum over each (2r+1)^2 window of (B,C,H,W), as ``max_pool2d(t, 2r+1, stride=1, padding=r)``
    (exactly: max is exact), but separable and without indices: ~10x faster on CPU."""
    h, w = t.shape[-2:]
    padded = F.pad(t, (radius, radius, 0, 0), value=float("-inf"))
    rows = padded[..., 0:w]
    for i in range(1, 2 * radius + 1):
        rows = torch.maximum(rows, padded[..., i:i + w])
    padded = F.pad(rows, (0, 0, radius, radius), value=float("-inf"))
    out = padded[..., 0:h, :]
    for i in range(1, 2 * radius + 1):
        out = torch.maximum(out, padded[..., i:i + h, :])
    return out


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """The official ALIKED/SuperPoint NMS: local maxima in a (2r+1)^2 window (ties kept), then two rounds that
    add maxima of what is left outside the suppressed windows. Returns a boolean mask."""
    def max_pool(t: torch.Tensor) -> torch.Tensor:
        return max_filter(t, radius)

    max_mask = scores == max_pool(scores)
    for _ in range(2):
        suppressed = max_pool(max_mask.to(scores.dtype)) > 0
        remaining = torch.where(suppressed, torch.zeros_like(scores), scores)
        max_mask = max_mask | ((remaining == max_pool(remaining)) & ~suppressed)
    return max_mask


class SparseFeatureMap:
    """The L2-normalised feature map (dim,H,W) of ``dense_maps``, evaluated only at the pixels asked for.

    ``scales``: the four per-scale maps (1, dim/4, h_i, w_i) of the padded image (full resolution first), each
    already through its 1x1 conv and gate; ``pad``: (top, left) padding; ``size``: (H, W) of the input image.
    """

    def __init__(self, scales: tuple[torch.Tensor, ...], pad: tuple[int, int], size: tuple[int, int]) -> None:
        self.scales, self.pad, self.size = scales, pad, size
        self.padded_size = tuple(scales[0].shape[-2:])
        self.dim = sum(f.shape[1] for f in scales)

    def at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Normalised features (..., dim) at integer pixels (rows, cols) of the input image (same shapes)."""
        shape = rows.shape
        hp, wp = self.padded_size
        linear = ((rows + self.pad[0]) * wp + cols + self.pad[1]).reshape(-1)
        unique, inverse = torch.unique(linear, return_inverse=True)  # samples of neighbouring keypoints overlap
        r, c = torch.div(unique, wp, rounding_mode="floor"), unique % wp
        full = self.scales[0][0]
        parts = [full.reshape(full.shape[0], -1).index_select(1, unique)]
        # the position of pixel (r, c) in each small map under align_corners upsampling, as grid_sample coordinates
        grid = torch.stack((c * (2.0 / (wp - 1)) - 1.0, r * (2.0 / (hp - 1)) - 1.0), dim=-1).to(self.scales[0].dtype)
        for small in self.scales[1:]:
            parts.append(F.grid_sample(small, grid.view(1, -1, 1, 2), mode="bilinear", align_corners=True)[0, :, :, 0])
        features = F.normalize(torch.cat(parts, dim=0).t().contiguous(), p=2, dim=1)  # (U, dim)
        return features.index_select(0, inverse).view(*shape, self.dim)


def dense_lookup(feature_map: torch.Tensor):
    """``at(rows, cols)`` for a dense (C,H,W) feature map, as SparseFeatureMap.at."""
    return lambda rows, cols: feature_map[:, rows, cols].movedim(0, -1)


def bilinear_at(at, positions: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples (..., C) of a map given by ``at(rows, cols)`` at pixel positions (..., 2) as (x, y);
    zero outside the map (grid_sample with align_corners=True and zeros padding)."""
    h, w = size
    x0, y0 = positions[..., 0].floor(), positions[..., 1].floor()
    fx, fy = positions[..., 0] - x0, positions[..., 1] - y0
    # the four corners stacked on a new last axis: (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1)
    x = x0.long()[..., None] + positions.new_tensor([0, 1, 0, 1], dtype=torch.long)
    y = y0.long()[..., None] + positions.new_tensor([0, 0, 1, 1], dtype=torch.long)
    weights = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy), dim=-1)
    weights = weights * ((x >= 0) & (x < w) & (y >= 0) & (y < h))
    values = at(y.clamp(0, h - 1), x.clamp(0, w - 1))  # (..., 4, C)
    return (values * weights[..., None]).sum(dim=-2)


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
        -> descriptors (N, C), L2-normalised."""
        if isinstance(feature_map, SparseFeatureMap):
            (h, w), c, at = feature_map.size, feature_map.dim, feature_map.at
        else:
            (c, h, w), at = feature_map.shape, dense_lookup(feature_map)
        n, ps = len(keypoints), self.kernel_size
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
        patches = at(rows, cols).permute(0, 3, 1, 2)  # (N, C, ps, ps)
        offset = self.offset_conv(patches).clamp(-max_offset, max_offset)  # (N, 2M, 1, 1)
        offset = offset[:, :, 0, 0].view(n, 2, self.n_pos).permute(0, 2, 1)  # (N, M, 2) as (dx, dy)
        positions = keypoints[:, None, :] + offset
        samples = bilinear_at(at, positions, (h, w)).permute(0, 2, 1)[..., None]  # (N, C, M, 1)
        samples = F.selu(self.sf_conv(samples))[..., 0]  # (N, C, M)
        descriptors = torch.einsum("ncp,pcd->nd", samples, self.agg_weights)
        return F.normalize(descriptors, p=2, dim=1)


class AlikedNet(nn.Module):
    """The ALIKED network for one of the configurations in CONFIGS (weights loaded separately)."""

    def __init__(self, model_name: str = "aliked-t16") -> None:
        super().__init__()
        if model_name not in CONFIGS:
            raise ValueError(f"unknown ALIKED model {model_name!r}; choose one of {', '.join(CONFIGS)}")
        self.model_name = model_name
        c1, c2, c3, c4, dim, k, m = CONFIGS[model_name]
        self.descriptor_dim = dim
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
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % 32, (-w) % 32
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        if pad_h or pad_w:
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

    def sparse_maps(self, image: torch.Tensor) -> tuple[SparseFeatureMap, torch.Tensor]:
        """Fast path of ``dense_maps`` for one image (1,3,H,W): (SparseFeatureMap, score_map (1,1,H,W))."""
        if image.shape[0] != 1:
            raise ValueError(f"sparse_maps takes one image, got a batch of {image.shape[0]}")
        h, w = image.shape[-2:]
        scales, pads = self._scales(image)
        first = self.score_head[0].weight.split([t.shape[1] for t in scales], dim=1)
        pre = F.conv2d(scales[0], first[0])
        for t, weight, factor in zip(scales[1:], first[1:], UPSAMPLING):
            pre = pre + _upsample(F.conv2d(t, weight), factor)
        score_map = torch.sigmoid(self.score_head[1:](pre))
        return SparseFeatureMap(scales, (pads[2], pads[0]), (int(h), int(w))), self._crop(score_map, pads, h, w)

    @staticmethod
    def detect(score_map: torch.Tensor, radius: int = 2, top_k: int = 1024, threshold: float | None = None,
               max_keypoints: int = 5000, border: int = 0, min_score: float = 0.0) -> Detections:
        """DKD on one score map (1,H,W) or (H,W).

        Top-k mode (``threshold`` None): the ``top_k`` highest NMS maxima. Threshold mode: maxima with score
        > ``threshold`` (if none, those above the map's mean, as the official code), at most ``max_keypoints``
        (highest first). Maxima within ``radius + border`` px of the image edge (so refined keypoints lie >= ``border`` px
        inside), and maxima scoring below
        ``min_score``, are never keypoints (the official code has no ``min_score``: 0 reproduces it).
        Each maximum moves by a soft-argmax (temperature 0.1) over its (2r+1)^2 window; its score is the score
        map read bilinearly at the refined position.
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
        scale = keypoints.new_tensor([2.0 / (w - 1), 2.0 / (h - 1)])
        sample_grid = (keypoints * scale - 1.0).view(1, 1, -1, 2)
        kp_scores = F.grid_sample(scores[None, None], sample_grid, mode="bilinear", align_corners=True)[0, 0, 0]
        return Detections(keypoints=keypoints, scores=kp_scores)

    def describe(self, feature_map: torch.Tensor | SparseFeatureMap, keypoints: torch.Tensor) -> torch.Tensor:
        """SDDH descriptors (N, dim) at pixel keypoints (N,2), for one feature map (dim,H,W) or (1,dim,H,W), or
        a SparseFeatureMap."""
        if isinstance(feature_map, torch.Tensor):
            feature_map = feature_map.reshape(feature_map.shape[-3:])
        return self.desc_head(feature_map, keypoints)
