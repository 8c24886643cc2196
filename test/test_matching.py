"""Mutual-nearest-neighbour matcher: known permutations, filters, binary descriptors, empty inputs."""
import numpy as np
import pytest

from aliked_ros.matching import hamming_distances, match_mutual_nearest


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recovers_known_permutation_with_extra_points():
    rng = np.random.default_rng(1)
    a = unit_rows(rng, 800, 64)
    perm = rng.permutation(800)
    b = np.concatenate([a[perm] + 0.02 * rng.standard_normal((800, 64)).astype(np.float32), unit_rows(rng, 200, 64)])
    matches = match_mutual_nearest(a, b)
    assert len(matches) == 800
    np.testing.assert_array_equal(perm[matches.indices[:, 1]], matches.indices[:, 0])
    assert matches.similarity.min() > 0.9 and matches.indices.dtype == np.int64


def test_min_similarity_and_ratio_filters():
    rng = np.random.default_rng(2)
    a = unit_rows(rng, 300, 32)
    b = a.copy()
    b[:100] = unit_rows(rng, 100, 32)  # the first 100 have no true partner
    strict = match_mutual_nearest(a, b, min_similarity=0.99)
    assert set(strict.indices[:, 0]) == set(range(100, 300))
    ratio = match_mutual_nearest(a, b, ratio=0.8)
    assert set(range(100, 300)) <= set(ratio.indices[:, 0]) and len(ratio) < 300


def test_binary_descriptors_hamming():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    perm = rng.permutation(400)
    b = a[perm].copy()
    b[:, 0] ^= 1  # one bit of 256 differs
    matches = match_mutual_nearest(a, b)
    assert len(matches) == 400
    np.testing.assert_array_equal(perm[matches.indices[:, 1]], matches.indices[:, 0])
    np.testing.assert_allclose(matches.similarity, 1 - 1 / 256)


@pytest.mark.parametrize("na,nb", [(0, 5), (5, 0), (0, 0)])
def test_empty_inputs(na, nb):
    rng = np.random.default_rng(4)
    matches = match_mutual_nearest(unit_rows(rng, na, 16), unit_rows(rng, nb, 16))
    assert matches.indices.shape == (0, 2) and matches.similarity.shape == (0,)


def test_mismatched_descriptors_rejected():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="sizes differ"):
        match_mutual_nearest(unit_rows(rng, 3, 16), unit_rows(rng, 3, 32))
    with pytest.raises(ValueError, match="types differ"):
        match_mutual_nearest(unit_rows(rng, 3, 32), rng.integers(0, 255, (3, 32), dtype=np.uint8))


def test_float_matches_unchanged_by_the_cpu_fast_path():
    """numpy's row-wise argmax over the matrix and its transposed copy = torch's argmax over both dimensions."""
    import torch

    rng = np.random.default_rng(6)
    a, b = unit_rows(rng, 500, 64), unit_rows(rng, 700, 64)
    b[:300] = a[:300] + 0.1 * unit_rows(rng, 300, 64)
    sim = torch.from_numpy(a) @ torch.from_numpy(b).T
    best_ab, best_ba = sim.argmax(1), sim.argmax(0)
    rows = torch.arange(500)
    expected = rows[best_ba[best_ab] == rows]
    matches = match_mutual_nearest(a, b)
    np.testing.assert_array_equal(matches.indices[:, 0], expected.numpy())
    np.testing.assert_array_equal(matches.indices[:, 1], best_ab[expected].numpy())


@pytest.mark.parametrize("width", [32, 13, 8])
def test_binary_matches_are_opencvs_cross_checked_ones(shared_dir, width):
    """Binary descriptors (the numba Hamming kernel) give OpenCV's cross-checked brute-force pairs and distances:
    real ORB descriptors of consecutive frames, other widths, and descriptors that differ in every bit (distance
    256)."""
    import cv2

    from aliked_ros.features import create_extractor
    from aliked_ros.matching import _match_binary_opencv

    extractor = create_extractor("orb")
    paths = sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[:2]
    a, b = (extractor.extract(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)).descriptors[:, :width]
            for p in paths)
    for x, y in ((a, b), (b, a), (a[:70], b), (np.zeros((3, width), np.uint8), np.full((5, width), 255, np.uint8))):
        x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
        ours, (pairs, distance) = match_mutual_nearest(x, y), _match_binary_opencv(x, y)
        assert len(pairs) > 0
        np.testing.assert_array_equal(ours.indices, pairs)
        np.testing.assert_allclose(ours.similarity, 1 - distance / (8 * width), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(hamming_distances(x[pairs[:, 0]], y[pairs[:, 1]]), distance)


def test_binary_matching_and_distances_without_numba_or_numpy_2(monkeypatch):
    """Without the numba kernel binary descriptors go to OpenCV's matcher, and row-wise Hamming distances work
    without numpy 2's bitwise_count: the same results."""
    from aliked_ros import jit, matching

    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 256, (300, 32), dtype=np.uint8), rng.integers(0, 256, (280, 32), dtype=np.uint8)
    b[:100] = a[:100] ^ (rng.random((100, 32)) < 0.05).astype(np.uint8)  # 100 near copies
    with_kernel, distances = match_mutual_nearest(a, b), hamming_distances(a[:280], b)
    assert matching._hamming_kernel() is not None and len(with_kernel) >= 100
    monkeypatch.setitem(jit._compiled, matching._mutual_hamming, False)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    without = match_mutual_nearest(a, b)
    np.testing.assert_array_equal(without.indices, with_kernel.indices)
    np.testing.assert_array_equal(without.similarity, with_kernel.similarity)
    np.testing.assert_array_equal(hamming_distances(a[:280], b), distances)
