"""Mutual-nearest-neighbour descriptor matching, on the extractor's device (torch).

Float descriptors (L2-normalised rows) are compared by cosine similarity; binary descriptors (uint8 packed bits)
by Hamming distance, reported as similarity = 1 - distance / bits. A pair (i, j) is a match when j is i's nearest
neighbour in B and i is j's nearest neighbour in A (ties: the lowest index wins, as OpenCV's cross-checked
brute-force matcher); optional filters: ``min_similarity`` and Lowe's ratio test (nearest / second-nearest
*distance* < ``ratio``; for float descriptors the distance is sqrt(2 - 2 cos)).

On the CPU float descriptors' nearest neighbours are found by numpy's row-wise argmax over the similarity matrix
and over its transposed copy (torch's column-wise argmax is ~4x slower there); binary descriptors by a numba
kernel (Hamming distances by vectorised popcount, row and column minima in one pass, the matrix never stored),
or without numba by OpenCV's cross-checked brute-force matcher, with the same pairs. README "Local bundle
adjustment: the solver" has the measurements.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aliked_ros.jit import compiled


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


def _words(descriptors: np.ndarray) -> np.ndarray:
    """Packed bits (N, D) uint8 -> (N, ceil(D / 8)) uint64 words (zero-padded)."""
    pad = (-descriptors.shape[1]) % 8
    if pad:
        descriptors = np.pad(descriptors, ((0, 0), (0, pad)))
    return np.ascontiguousarray(descriptors).view(np.uint64)


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distances (N,) between packed-bit descriptors a and b (N, D) uint8."""
    x = _words(a) ^ _words(b)
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x).sum(axis=1).astype(np.int64)
    return np.unpackbits(x.view(np.uint8), axis=1).sum(axis=1).astype(np.int64)


def _mutual_hamming(words_a, words_bt, best_ab, row_min, best_ba):  # compiled by numba: _hamming_kernel()
    """For words_a (N_a, W) and words_bt (W, N_b) uint64: each row's nearest column (best_ab, its distance in
    row_min) and each column's nearest row (best_ba); ties to the lowest index, as OpenCV's cross-check."""
    n_a, n_words = words_a.shape
    n_b = words_bt.shape[1]
    distance = np.empty(n_b, np.int64)
    column_min = np.full(n_b, 1 << 30, np.int64)
    m1, m2, m4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(0x0F0F0F0F0F0F0F0F)
    h01, one, two, four, top = np.uint64(0x0101010101010101), np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56)
    for i in range(n_a):
        for j in range(n_b):
            distance[j] = 0
        for w in range(n_words):
            word = words_a[i, w]
            column = words_bt[w]
            for j in range(n_b):  # popcount(word ^ column[j]), which LLVM turns into the CPU's vector popcount
                x = word ^ column[j]
                x = x - ((x >> one) & m1)
                x = (x & m2) + ((x >> two) & m2)
                x = (x + (x >> four)) & m4
                distance[j] += np.int64((x * h01) >> top)
        nearest, smallest = 0, 1 << 30
        for j in range(n_b):
            d = distance[j]
            if d < smallest:
                nearest, smallest = j, d
            if d < column_min[j]:
                column_min[j] = d
                best_ba[j] = i
        best_ab[i] = nearest
        row_min[i] = smallest


def prepare_kernels(descriptor_kind: str) -> None:
    """Compile (or load) the kernel that matches ``descriptor_kind`` descriptors now rather than on the first
    frame ("binary": the Hamming kernel, ~0.5 s the first time on a machine; "float" has none)."""
    if descriptor_kind == "binary":
        _hamming_kernel()


def _hamming_kernel():
    """``_mutual_hamming`` compiled by numba, or None (OpenCV's matcher runs instead)."""
    words = np.zeros((1, 1), np.uint64)
    return compiled(_mutual_hamming, (words, words, np.empty(1, np.int64), np.empty(1, np.int64),
                                      np.empty(1, np.int64)), "binary descriptors are matched by OpenCV", fastmath=True)


def _match_binary_numba(desc_a: np.ndarray, desc_b: np.ndarray, kernel) -> tuple[np.ndarray, np.ndarray]:
    """``_match_binary_opencv`` (the same pairs and distances) by ``_mutual_hamming``: 1024 x 1024 ORB
    descriptors 1.3 ms on one core, against 5.0 ms for numpy's ``bitwise_count`` by blocks and 14.7 ms for
    OpenCV 5's cross-checked matcher on one thread (README "Local bundle adjustment: the solver")."""
    words_a, words_b = _words(desc_a), _words(desc_b)
    n_a, n_b = len(words_a), len(words_b)
    best_ab, row_min, best_ba = np.empty(n_a, np.int64), np.empty(n_a, np.int64), np.empty(n_b, np.int64)
    kernel(words_a, np.ascontiguousarray(words_b.T), best_ab, row_min, best_ba)
    rows = np.flatnonzero(best_ba[best_ab] == np.arange(n_a))
    return np.column_stack([rows, best_ab[rows]]).astype(np.int64), row_min[rows].astype(np.float32)


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
        a, b = np.ascontiguousarray(desc_a), np.ascontiguousarray(desc_b)
        kernel = _hamming_kernel()
        indices, distance = _match_binary_numba(a, b, kernel) if kernel is not None else _match_binary_opencv(a, b)
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
