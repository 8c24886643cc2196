"""Extractors on real frames: parity of ALIKED with the official implementation's outputs (shared reference
files), SIFT/ORB behind the same interface, the extract CLI and the benchmark's reduced form."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aliked_ros.features import ExtractorConfig, Features, ImageError, create_extractor
from aliked_ros.image_io import read_image

REFERENCE_FILES = sorted(
    f"{image}__{model}__{mode}" for image in ("fr2_desk_000", "fr2_desk_019", "fr1_rpy_000")
    for model in ("aliked-t16", "aliked-n16") for mode in ("top1024", "th0.2"))


def load_reference(shared_dir: Path, name: str):
    manifest = json.loads((shared_dir / "reference/aliked/manifest.json").read_text())[f"{name}.npz"]
    reference = np.load(shared_dir / "reference/aliked" / f"{name}.npz")
    return manifest, reference


def parity(features: Features, reference) -> tuple[float, float, int]:
    """(fraction of our keypoints within 0.05 px of a reference keypoint, fraction of those whose descriptor
    has cosine >= 0.999 with the reference's, number of such common keypoints)."""
    distance = np.linalg.norm(features.keypoints[:, None] - reference["keypoints"][None], axis=2)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(nearest)), nearest] < 0.05
    cosine = np.sum(features.descriptors[close] * reference["descriptors"][nearest[close]], axis=1)
    return float(close.mean()), float((cosine >= 0.999).mean()), int(close.sum())


def extractor_for(extractor_cache, manifest, device="cpu", **options):
    if manifest["top_k"] > 0:
        return extractor_cache(manifest["model"], max_keypoints=manifest["top_k"], device=device, **options)
    return extractor_cache(manifest["model"], threshold=manifest["scores_th"], max_keypoints=manifest["n_limit"],
                           device=device, **options)


def check_parity(extractor, manifest, reference, shared_dir):
    image = read_image(shared_dir / manifest["image"])
    features = extractor.extract(image)
    with torch.inference_mode(), extractor.numerics():
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(extractor.device)
        _, dense_score_map = extractor.net.dense_maps(tensor)  # the published network
        _, score_map = extractor.net.sparse_maps(tensor)  # the extractor's fast path
    dense_error = np.abs(dense_score_map[0, 0].cpu().numpy() - reference["score_map"]).max()
    fast_error = np.abs(score_map[0, 0].cpu().numpy() - reference["score_map"]).max()
    near, same_descriptor, common = parity(features, reference)
    assert dense_error <= 1e-4 and fast_error <= 1e-4, (
        f"score map off by {dense_error:.2e} (network) / {fast_error:.2e} (fast path); keypoints {near:.3%}, "
        f"descriptors {same_descriptor:.3%}")
    assert near >= 0.99, f"only {near:.3%} of keypoints match the official ones"
    assert same_descriptor >= 0.99, f"only {same_descriptor:.3%} of common descriptors have cosine >= 0.999"
    if manifest["top_k"] > 0:
        assert len(features) == manifest["top_k"]
    else:
        assert abs(len(features) - manifest["n_keypoints"]) <= 0.1 * manifest["n_keypoints"]
    return features


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_aliked_matches_official_reference_cpu(name, shared_dir, extractor_cache):
    manifest, reference = load_reference(shared_dir, name)
    check_parity(extractor_for(extractor_cache, manifest), manifest, reference, shared_dir)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (GPU parity needs one)")
@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_aliked_matches_official_reference_cuda(name, shared_dir, extractor_cache):
    """The launched CUDA path (the CUDA graph, the default, has its own parity test in test_extraction_paths)."""
    manifest, reference = load_reference(shared_dir, name)
    check_parity(extractor_for(extractor_cache, manifest, device="cuda", cuda_graph=False), manifest, reference,
                 shared_dir)


@pytest.mark.parametrize("crop", [None, (470, 630)], ids=["640x480", "padded"])
def test_sparse_feature_map_equals_dense(crop, shared_dir, extractor_cache):
    """The fast path (score head on the small maps, features evaluated at the sampled pixels only) gives the
    published network's feature map, score map and descriptors up to float rounding; also when padding is needed,
    and also in the CUDA path's form (the map built densely, looked up by rows)."""
    from aliked_ros.features.aliked_net import SparseFeatureMap, max_filter

    image = read_image(sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[5])
    if crop is not None:
        image = np.ascontiguousarray(image[:crop[0], :crop[1]])
    net = extractor_cache("aliked-t16").net
    with torch.inference_mode():
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
        feature_map, score_map = net.dense_maps(tensor)
        sparse, sparse_score_map = net.sparse_maps(tensor)
        assert (sparse_score_map - score_map).abs().max() < 1e-5
        rows, cols = torch.meshgrid(torch.arange(image.shape[0]), torch.arange(image.shape[1]), indexing="ij")
        dense_features = feature_map[0].permute(1, 2, 0)
        every_7th = (slice(None, None, 7), slice(None, None, 7))
        torch.testing.assert_close(sparse.at(rows[every_7th], cols[every_7th]), dense_features[every_7th],
                                   atol=1e-5, rtol=0)
        keypoints = net.detect(score_map[0]).keypoints
        cosine = (net.describe(sparse, keypoints) * net.describe(feature_map, keypoints)).sum(dim=1)
        assert len(keypoints) == 1024 and cosine.min() > 0.99999
        # the CUDA form (``dense``: the whole map as rows, built from the same scales, normalised as read)
        dense_form = SparseFeatureMap(sparse.scales, sparse.pad, sparse.size, dense=True)
        torch.testing.assert_close(dense_form.at(rows[every_7th], cols[every_7th]), dense_features[every_7th],
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(net.describe(dense_form, keypoints), net.describe(feature_map, keypoints),
                                   atol=1e-5, rtol=0)
        scores = torch.rand(1, 1, 61, 83)
        for radius in (1, 2, 4):
            assert torch.equal(max_filter(scores, radius),
                               torch.nn.functional.max_pool2d(scores, 2 * radius + 1, stride=1, padding=radius))


@pytest.mark.parametrize("name", ["aliked-t16", "sift", "orb"])
def test_extractors_share_one_interface(name, shared_dir, extractor_cache):
    paths = sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[:2]
    extractor = extractor_cache(name, max_keypoints=500)
    for path in paths:
        rgb = read_image(path)
        for image in (rgb, rgb.mean(axis=2).astype(np.uint8)):  # colour and gray
            f = extractor.extract(image)
            assert 100 < len(f) <= 500
            assert f.keypoints.shape == (len(f), 2) and f.keypoints.dtype == np.float32
            assert f.scores.shape == (len(f),) and f.scores.dtype == np.float32
            assert f.image_size == (640, 480)
            assert np.all((f.keypoints >= 0) & (f.keypoints <= [639, 479]))
            assert f.descriptors.shape == (len(f), extractor.descriptor_dim)
            assert f.timings_ms["total"] > 0
            if extractor.descriptor_kind == "float":
                assert f.descriptors.dtype == np.float32
                np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
            else:
                assert f.descriptors.dtype == np.uint8 and extractor.descriptor_dim == 32


def test_threshold_mode_and_border(shared_dir, extractor_cache):
    image = read_image(sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[0])
    for name in ("aliked-t16", "sift"):
        f = extractor_cache(name, max_keypoints=300, border=40).extract(image)
        assert len(f) <= 300
        assert np.all((f.keypoints >= 40) & (f.keypoints <= [639 - 40, 479 - 40]))
    strong = extractor_cache("aliked-t16", threshold=0.5, max_keypoints=5000).extract(image)
    weak = extractor_cache("aliked-t16", threshold=0.2, max_keypoints=5000).extract(image)
    # the threshold applies to the peak; the reported score is read at the refined position, mostly near it
    assert 0 < len(strong) < len(weak) and np.median(strong.scores) > 0.5


def test_uniform_and_bad_images(extractor_cache):
    extractor = extractor_cache("aliked-t16")
    for value in (0, 128, 255):
        assert len(extractor.extract(np.full((480, 640), value, np.uint8))) == 0
    for bad in (np.zeros((0, 0), np.uint8), np.zeros((480, 640, 2), np.uint8), np.zeros((480, 640), np.float64)):
        with pytest.raises(ImageError):
            extractor.extract(bad)
    assert len(extractor_cache("orb").extract(np.zeros((480, 640), np.uint8))) == 0


@pytest.mark.parametrize("name", ["aliked-t16", "orb", "sift"])
def test_a_frame_of_noise_keeps_only_the_keypoints_that_stand_clear_of_it(name, shared_dir, extractor_cache):
    """``min_contrast``: real frames lose no keypoint (their median contrast measured 4.1 and more, the bound is
    1), nor does a scene dimmed to a twentieth; a frame that is 90 % dark keeps the keypoints of its textured
    tenth, not ALIKED's ~900 maxima of noise (``aliked_ros.features.contrast``; DEVELOPERS.md "A frame of
    noise")."""
    from aliked_ros.datasets import open_sequence

    extractor, unfiltered = extractor_cache(name), extractor_cache(name, min_contrast=0.0)
    for sequence in ("tum_fr2_desk", "tum_fr1_rpy_rgbd", "kitti01_000_050", "euroc_v101_static_stereo"):
        image = next(iter(open_sequence(shared_dir / "data" / sequence, use_depth=False))).image
        np.testing.assert_array_equal(extractor.extract(image).keypoints, unfiltered.extract(image).keypoints)
    image = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[5].image
    grey = np.ascontiguousarray(image.mean(axis=2).astype(np.uint8))
    edge = int(0.9 * grey.shape[1])
    grey[:, :edge] = np.clip(np.round(np.random.default_rng(0).normal(0, 2, (grey.shape[0], edge))), 0, 255)
    kept, every = extractor.extract(grey), unfiltered.extract(grey)
    in_texture = every.keypoints[:, 0] >= edge - 8
    assert len(kept) >= 30 and np.all(kept.keypoints[:, 0] >= edge - 8), (len(kept), kept.keypoints[:, 0].min())
    assert len(kept) >= 0.5 * in_texture.sum(), (len(kept), in_texture.sum())
    if name == "aliked-t16":  # ORB and SIFT find nothing in noise of 2 grey levels sigma, nor in the dim scene
        assert (~in_texture).sum() > 500
        # the scene dimmed to a twentieth under the same noise is a scene (aliked-t16 tracks it: 12.7 mm on fr2_desk)
        dim = np.clip(np.round(image * 0.05 + np.random.default_rng(1).normal(0, 2, image.shape)), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(extractor.extract(dim).keypoints, unfiltered.extract(dim).keypoints)


def test_unknown_names_and_bad_config():
    with pytest.raises(ValueError, match="unknown extractor"):
        create_extractor("superpoint")
    with pytest.raises(ValueError, match="max_keypoints"):
        ExtractorConfig(max_keypoints=0)
    with pytest.raises(ValueError, match="min_contrast"):
        ExtractorConfig(min_contrast=-1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_extractor("aliked-t16", device="cuda")


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "aliked_ros.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_extract_cli_writes_official_keypoints(shared_dir, weights_dir, tmp_path):
    manifest, reference = load_reference(shared_dir, "fr2_desk_000__aliked-t16__top1024")
    output = tmp_path / "kp.npz"
    result = run_cli("extract", str(shared_dir / manifest["image"]), "--output", str(output), "--json",
                     "--weights", str(weights_dir / "aliked-t16.pth"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["keypoints"] == 1024 and summary["descriptor_shape"] == [1024, 64]
    assert set(summary["timings_ms"]) >= {"dense_map", "detect", "describe", "total"}
    saved = np.load(output)
    features = Features(saved["keypoints"], saved["scores"], saved["descriptors"], (640, 480), "aliked-t16")
    near, same, _ = parity(features, reference)
    assert near >= 0.99 and same >= 0.99
    missing = run_cli("extract", str(tmp_path / "none.png"))
    assert missing.returncode == 1 and "cannot read image" in missing.stderr and "Traceback" not in missing.stderr


def test_bench_extract_reduced(shared_dir, weights_dir):
    image = sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[0]
    result = run_cli("bench", "extract", str(image), str(image), "--extractors", "aliked-t16,orb", "--repeat", "1",
                     "--warmup", "0", "--weights-dir", str(weights_dir), "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    aliked = report["extractors"]["aliked-t16"]
    assert {"dense_map", "detect", "describe", "total", "match"} <= aliked.keys()
    assert aliked["kornia"]["total"] > 0 and aliked["ratio_total_vs_kornia"] > 0
    assert aliked["cpu_kernels"] is True  # the report says which CPU path ran
    assert report["extractors"]["orb"]["keypoints"] > 100 and "cpu_kernels" not in report["extractors"]["orb"]


@pytest.mark.parametrize("model", ["aliked-n16rot", "aliked-n32"])
def test_other_aliked_models_load_and_run(model, shared_dir, extractor_cache):
    image = read_image(sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[0])
    f = extractor_cache(model, max_keypoints=512).extract(image)
    assert len(f) == 512 and f.descriptors.shape == (512, 128)
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
