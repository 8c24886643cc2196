"""Mutual-nearest-neighbour descriptor matching, on the extractor's device (torch).

Float descriptors (L2-normalised rows) are compared by cosine similarity; binary descriptors (uint8 packed bits)
by Hamming distance, reported as similarity = 1 - distance / bits. A pair (i, j) is a match when j is i's nearest
neighbour in B and i is j's nearest neighbour in A (ties: the lowest index wins, as OpenCV's cross-checked
brute-force matcher); optional filters: ``min_similarity`` and Lowe's ratio test (nearest / second-nearest
*distance* < ``ratio``; for float descriptors the distance is sqrt(2 - 2 cos)).

On the CPU float descriptors' nearest neighbours are found by numpy's row-wise argmax over the similarity matrix
and over its transposed copy (torch's column-wise argmax is ~4x slower there); binary descriptors of up to 32
bytes by numpy's ``bitwise_count`` (numpy >= 2), otherwise by OpenCV's cross-checked brute-force matcher, with
the same pairs. README "Local bundle adjustment: the solver" has the measurements.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Matches:
    """``indices`` (M,2) int64: row i of A matched to row j of B; ``similarity`` (M,) float32 in [-1, 1]."""

    indices: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def _as_tensor(descriptors, device: torch.device | str | None) -> torch.Tensor:
    tensor = descriptors if isinstance(descriptors, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(descriptors))
    return tensor.to(device) if device is not None else tensor


def _unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    return ((packed[..., None] >> shifts) & 1).reshape(packed.shape[0], -1).float()


def similarity_matrix(desc_a, desc_b, device: torch.device | str | None = None) -> torch.Tensor:
    """(N_a, N_b) similarity: cosine for float descriptors, 1 - hamming/bits for uint8 binary descriptors."""
    a, b = _as_tensor(desc_a, device), _as_tensor(desc_b, device)
    if a.dtype != b.dtype:
        raise ValueError(f"descriptor types differ: {a.dtype} vs {b.dtype}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if a.dtype == torch.uint8:
        bits_a, bits_b = _unpack_bits(a), _unpack_bits(b)
        hamming = bits_a @ (1 - bits_b).T + (1 - bits_a) @ bits_b.T
        return 1.0 - hamming / bits_a.shape[1]
    return a.float() @ b.float().T


def _match_binary_opencv(desc_a: np.ndarray, desc_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours by OpenCV's cross-checked brute-force Hamming matcher: (indices, Hamming); ~20x
    faster on the CPU than unpacked bits in a float product. (An exact int8 product of +-1 bits, `torch._int_mm`,
    was 2x faster still but grew the process by ~2 MB per matrix shape in oneDNN's kernel cache: DEVELOPERS.md.)"""
    import cv2

    pairs = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(desc_a, desc_b)
    indices = np.array([(m.queryIdx, m.trainIdx) for m in pairs], np.int64).reshape(-1, 2)
    distance = np.array([m.distance for m in pairs], np.float32)
    order = np.argsort(indices[:, 0], kind="stable")
    return indices[order], distance[order]


_HAMMING_ROWS = 64  # rows of A per block: the block's (64, N_b) XOR words stay in the L2 cache


def _match_binary_numpy(desc_a: np.ndarray, desc_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_match_binary_opencv`` (the same pairs and distances; ties go to the lowest index) with numpy >= 2's
    ``bitwise_count``, for descriptors of up to 32 bytes: Hamming distances 64 bits at a time (XOR, popcount, sum
    in uint8, the fourth word's sum saturated at 255), a block of rows of A at a time, each block's row and column
    minima kept, the matrix itself never stored. 1024 x 1024 ORB descriptors: ~5 ms on one core against ~7.5 ms
    (two threads) to 13.7 ms (one) for OpenCV 5's cross-checked matcher (DEVELOPERS.md). A distance of 256 reads
    255 while searching (only a descriptor whose every bit differs from all others' would notice); the distances
    returned are exact."""
    pad = (-desc_a.shape[1]) % 8
    if pad:
        desc_a, desc_b = (np.pad(d, ((0, 0), (0, pad))) for d in (desc_a, desc_b))
    words_a = np.ascontiguousarray(desc_a).view(np.uint64)  # (N_a, W)
    words_b = np.ascontiguousarray(np.ascontiguousarray(desc_b).view(np.uint64).T)  # (W, N_b)
    (n_a, n_words), n_b = words_a.shape, words_b.shape[1]
    best_ab, best_ba = np.empty(n_a, np.int64), np.zeros(n_b, np.int64)
    column_min = np.full(n_b, 256, np.uint16)
    xor = np.empty((_HAMMING_ROWS, n_b), np.uint64)
    bits, distance = np.empty((2, _HAMMING_ROWS, n_b), np.uint8)
    for start in range(0, n_a, _HAMMING_ROWS):
        stop = min(start + _HAMMING_ROWS, n_a)
        x, b, d = xor[:stop - start], bits[:stop - start], distance[:stop - start]
        for w in range(n_words):
            np.bitwise_xor(words_a[start:stop, w, None], words_b[w], out=x)
            np.bitwise_count(x, out=b if w else d)
            if w == 3:  # three words differ in <= 192 bits; four in up to 256: saturate at 255
                np.minimum(d, 255 - b, out=d)
            if w:
                d += b
        best_ab[start:stop] = d.argmin(axis=1)
        block_min = d.min(axis=0)
        better = block_min < column_min  # strictly: a column keeps its first (lowest) row on ties
        if better.any():
            best_ba[better] = start + d[:, better].argmin(axis=0)
            column_min[better] = block_min[better]
    rows = np.flatnonzero(best_ba[best_ab] == np.arange(n_a))
    cols = best_ab[rows]
    exact = np.bitwise_count(words_a[rows] ^ words_b.T[cols]).sum(axis=1)
    return np.column_stack([rows, cols]).astype(np.int64), exact.astype(np.float32)


def _mutual_rows(scores: np.ndarray, scores_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows i and columns j (ascending i) that are each other's highest score, from the (N_a,N_b) matrix and its
    transposed copy (C-contiguous both: numpy's row-wise argmax is fast, its column-wise one is not)."""
    best_ab, best_ba = scores.argmax(axis=1), scores_t.argmax(axis=1)
    rows = np.flatnonzero(best_ba[best_ab] == np.arange(len(best_ab)))
    return rows, best_ab[rows]


def _filtered(rows: np.ndarray, cols: np.ndarray, similarity: np.ndarray, min_similarity: float | None) -> Matches:
    indices, similarity = np.column_stack([rows, cols]).astype(np.int64), similarity.astype(np.float32)
    if min_similarity is not None:
        keep = similarity >= min_similarity
        indices, similarity = indices[keep], similarity[keep]
    return Matches(indices, similarity)


def match_mutual_nearest(desc_a, desc_b, min_similarity: float | None = None, ratio: float | None = None,
                         device: torch.device | str | None = None) -> Matches:
    """Mutual nearest neighbours between descriptor sets A (N_a,D) and B (N_b,D); numpy arrays or tensors."""
    if len(desc_a) == 0 or len(desc_b) == 0:
        return Matches(np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    if (isinstance(desc_a, np.ndarray) and isinstance(desc_b, np.ndarray) and desc_a.dtype == desc_b.dtype == np.uint8
            and desc_a.shape[1] == desc_b.shape[1] and ratio is None and device in (None, "cpu")):
        binary = _match_binary_numpy if hasattr(np, "bitwise_count") and desc_a.shape[1] <= 32 \
            else _match_binary_opencv
        indices, distance = binary(np.ascontiguousarray(desc_a), np.ascontiguousarray(desc_b))
        return _filtered(indices[:, 0], indices[:, 1], 1.0 - distance / (8 * desc_a.shape[1]), min_similarity)
    sim = similarity_matrix(desc_a, desc_b, device)
    if sim.device.type == "cpu" and ratio is None:
        rows, cols = _mutual_rows(sim.numpy(), sim.T.contiguous().numpy())
        return _filtered(rows, cols, sim.numpy()[rows, cols], min_similarity)
    best_ab = sim.argmax(dim=1)
    best_ba = sim.argmax(dim=0)
    rows = torch.arange(sim.shape[0], device=sim.device)
    keep = best_ba[best_ab] == rows
    score = sim[rows, best_ab]
    if min_similarity is not None:
        keep &= score >= min_similarity
    if ratio is not None and sim.shape[1] >= 2:
        top2 = sim.topk(2, dim=1).values
        binary = desc_a.dtype in (np.uint8, torch.uint8)
        distance = 1 - top2 if binary else torch.sqrt(torch.clamp(2 - 2 * top2, min=0))
        keep &= distance[:, 0] < ratio * distance[:, 1]
    idx_a = rows[keep]
    pairs = torch.stack((idx_a, best_ab[keep]), dim=1)
    return Matches(pairs.cpu().numpy().astype(np.int64), score[keep].float().cpu().numpy())
