"""The extraction paths around the network: device errors, the static-shape detection the CUDA path uses, the
prepared inference weights, the fused CPU kernels against the torch path and their fallback, and, on a CUDA
machine, a frame without host synchronisation, CUDA-graph replay and GPU parity with the official reference
files (these skip without CUDA, saying so)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from aliked_ros.features import ExtractorConfig, create_extractor
from aliked_ros.features.aliked import DeviceError, select_device
import torch.nn.functional as F

from aliked_ros.features import cpu_kernels
from aliked_ros.features.aliked_net import (AlikedNet, InferencePath, SparseFeatureMap, _padding, max_filter,
                                            simple_nms)
from aliked_ros.image_io import read_image
from test_features import REFERENCE_FILES, check_parity, load_reference

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def first_frame(shared_dir):
    return read_image(sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[0])


def test_cuda_without_cuda_is_one_clear_error(shared_dir, weights_dir):
    """Where CUDA is missing (here, or hidden from the tools by CUDA_VISIBLE_DEVICES on a GPU machine)."""
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            select_device("cuda")
    for bad in ("tpu", "cuda:x", "meta"):
        with pytest.raises(DeviceError, match="device"):
            select_device(bad)
    image = sorted((shared_dir / "data/tum_fr2_desk/rgb").glob("*.png"))[0]
    for tool in (["extract", str(image)], ["bench", "extract", str(image), "--extractors", "aliked-t16"]):
        result = subprocess.run([sys.executable, "-m", "aliked_ros.cli", *tool, "--device", "cuda",
                                 "--weights" if tool[0] == "extract" else "--weights-dir",
                                 str(weights_dir / "aliked-t16.pth") if tool[0] == "extract" else str(weights_dir)],
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            f"aliked-vo {tool[0]}: error: device 'cuda' requested but CUDA is not available (use 'auto' or 'cpu')"]


def test_static_shape_detection_keeps_the_same_keypoints(shared_dir, extractor_cache):
    """detect(static_shape=True) (the CUDA path: no data-dependent shapes) returns top_k rows whose valid ones
    are exactly the keypoints of the dynamic path, in the same order; a blank image gives no valid row."""
    net = extractor_cache("aliked-t16").net
    with torch.inference_mode():
        tensor = torch.from_numpy(first_frame(shared_dir)).permute(2, 0, 1)[None].float().div(255)
        _, score_map = net.sparse_maps(tensor)
        for top_k in (1024, 200000):  # 200000: more than the maxima, so some rows are invalid
            dynamic = net.detect(score_map[0], top_k=top_k)
            static = net.detect(score_map[0], top_k=top_k, static_shape=True)
            assert len(static.keypoints) == min(top_k, score_map.numel()) and static.valid is not None
            assert torch.equal(static.keypoints[static.valid], dynamic.keypoints)
            assert torch.equal(static.scores[static.valid], dynamic.scores)
        assert (top_k > int(static.valid.sum())) and dynamic.valid is None
        _, blank = net.sparse_maps(torch.full((1, 3, 480, 640), 0.5))
        assert not net.detect(blank[0], min_score=0.02, static_shape=True).valid.any()


def test_max_filter_and_dilation_equal_max_pool():
    scores = torch.rand(1, 1, 61, 83)
    scores[..., 10:14, 10:14] = 0.5  # ties
    for radius in (1, 2, 3, 4):
        pooled = torch.nn.functional.max_pool2d(scores, 2 * radius + 1, stride=1, padding=radius)
        assert torch.equal(max_filter(scores, radius), pooled)
        mask = scores > 0.95
        assert torch.equal(max_filter(mask, radius),
                           torch.nn.functional.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0)
        nms = simple_nms(scores, radius)
        assert nms.dtype == torch.bool and bool(nms[scores == pooled].all())


def test_inference_weights_follow_the_parameters(weights_dir, shared_dir):
    """The folded inference weights are rebuilt when the network's weights change (load, in-place edit)."""
    from aliked_ros.features.weights import load_weights

    net = AlikedNet("aliked-t16").eval()
    tensor = torch.from_numpy(first_frame(shared_dir)).permute(2, 0, 1)[None].float().div(255)
    with torch.inference_mode():
        untrained = net.sparse_maps(tensor)[1]
    load_weights(net, weights_dir / "aliked-t16.pth", "aliked-t16")
    with torch.inference_mode():
        _, dense = net.dense_maps(tensor)
        path = net.inference_path()
        loaded = net.sparse_maps(tensor)[1]
        assert net.inference_path() is path  # cached while nothing changes
    assert (loaded - dense).abs().max() < 1e-5 and (untrained - dense).abs().max() > 1e-2
    with torch.no_grad():
        net.block1.bn1.running_mean += 0.5
    with torch.inference_mode():
        assert net.inference_path() is not path
        torch.testing.assert_close(net.sparse_maps(tensor)[1], net.dense_maps(tensor)[1], atol=1e-5, rtol=0)


def test_export_leaves_the_eager_path_intact(weights_dir):
    """torch.export (fake tensors, as the ONNX exporter uses) of the inference path must not leave traced
    tensors in the path's caches: the eager path still equals the published network afterwards."""
    net = AlikedNet("aliked-t16").eval().requires_grad_(False)
    load_weights_for(net, weights_dir)
    image = torch.rand(1, 3, 64, 96)
    path = net.inference_path()

    class Stage(torch.nn.Module):
        def forward(self, x):
            return path(x, (0, 0, 0, 0))[2]

    torch.export.export(Stage(), (image,), strict=False)
    with torch.inference_mode():
        torch.testing.assert_close(net.sparse_maps(image)[1], net.dense_maps(image)[1], atol=1e-5, rtol=0)
    # the traced form (what OpenVINO converts: no matmul with out=, no in-place product into a view) is the same
    with torch.no_grad():
        traced = torch.jit.trace(Stage(), (image,), check_trace=False)
        torch.testing.assert_close(traced(image), net.dense_maps(image)[1], atol=1e-5, rtol=0)


def padded_tensor(image):
    pads = _padding(*image.shape[:2])
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
    return F.pad(tensor, pads, mode="replicate"), pads


@pytest.mark.parametrize("model", ["aliked-t16", "aliked-n16"])
def test_fused_cpu_kernels_equal_the_torch_path(model, shared_dir, extractor_cache):
    """The fused CPU kernels (blocks 1 and 2, the deformable convolutions' sampling, the full-resolution
    projections, the score head, the descriptor head's bilinear samples: numba) give the torch path's maps and
    descriptors to float rounding, on a padded image too, and detect the keypoints the torch path detects as
    often as the torch path detects the published network's (top-k near-ties at the tail swap either way: ~92 %
    identical); both network widths, since the kernels are generated per channel count."""
    net = extractor_cache(model).net
    fused = net.inference_path()
    assert fused.fused_cpu_forward() is not None, "numba is a dependency: the fused kernels must load here"
    unfused = InferencePath(net, cpu_kernels=False)
    assert unfused.fused_cpu_forward() is None

    def same(a, b, tolerance=0.05):  # fraction of keypoints a within tolerance px of one of b
        return float((torch.cdist(a, b).min(dim=1).values < tolerance).float().mean())

    for crop in (None, (470, 630)):
        image = first_frame(shared_dir)
        if crop is not None:
            image = np.ascontiguousarray(image[:crop[0], :crop[1]])
        tensor, pads = padded_tensor(image)
        size = image.shape[:2]
        with torch.inference_mode():
            (scales, table, score), (scales_ref, table_ref, score_ref) = fused(tensor, pads), unfused(tensor, pads)
            for ours, theirs in zip(scales, scales_ref):
                torch.testing.assert_close(ours, theirs, atol=5e-5, rtol=0)
            torch.testing.assert_close(table, table_ref, atol=5e-5, rtol=0)
            torch.testing.assert_close(score, score_ref, atol=1e-5, rtol=0)
            crop_map = (slice(None), slice(None), slice(pads[2], pads[2] + size[0]), slice(pads[0], pads[0] + size[1]))
            ours, theirs = net.detect(score[crop_map][0]), net.detect(score_ref[crop_map][0])
            unpadded = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
            published = net.detect(net.dense_maps(unpadded)[1][0])
            assert len(ours.keypoints) == 1024
            assert same(ours.keypoints, theirs.keypoints) >= same(theirs.keypoints, published.keypoints) - 0.01
            maps = [SparseFeatureMap(s, (pads[2], pads[0]), size, t, kernels=k) for s, t, k in
                    ((scales, table, fused.fused_cpu_forward().kernels), (scales_ref, table_ref, None))]
            descriptors = [net.describe(m, theirs.keypoints) for m in maps]
            assert float((descriptors[0] * descriptors[1]).sum(dim=1).min()) > 0.9999


def test_fused_cpu_kernels_fall_back_to_torch(monkeypatch, caplog, tmp_path, weights_dir, shared_dir):
    """Switched off (ALIKED_ROS_CPU_KERNELS=0), without numba, or when the kernels cannot be built (here: a
    cache directory that cannot be created) or compiled, the torch path runs: the same outputs, one warning."""
    net = AlikedNet("aliked-t16").eval()
    load_weights_for(net, weights_dir)
    tensor, pads = padded_tensor(first_frame(shared_dir))
    with torch.inference_mode():
        reference = InferencePath(net, cpu_kernels=False)(tensor, pads)[2]
    monkeypatch.setattr(cpu_kernels, "_modules", {})
    monkeypatch.setenv("ALIKED_ROS_CPU_KERNELS", "0")
    path = InferencePath(net)
    with torch.inference_mode():
        assert path.fused_cpu_forward() is None and torch.equal(path(tensor, pads)[2], reference)
    monkeypatch.delenv("ALIKED_ROS_CPU_KERNELS")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    def no_kernel(*args):
        raise RuntimeError("a kernel that does not compile")

    for breakage in ("cache", "numba", "compile"):
        monkeypatch.setattr(cpu_kernels, "_modules", {})
        monkeypatch.setattr(cpu_kernels, "_warned", False)
        with monkeypatch.context() as patch:
            if breakage == "cache":
                patch.setenv("XDG_CACHE_HOME", str(blocker))
            elif breakage == "numba":
                patch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
            else:
                patch.setattr(cpu_kernels.FusedCpuForward, "__call__", no_kernel)
            caplog.clear()
            with caplog.at_level(logging.WARNING), torch.inference_mode():
                path = InferencePath(net)
                assert path.fused_cpu_forward() is None and torch.equal(path(tensor, pads)[2], reference)
                path(tensor, pads)
            expected = "fused CPU kernels " + ("failed to compile" if breakage == "compile" else "unavailable")
            assert [r.message.split(" (")[0] for r in caplog.records] == [expected], breakage


def load_weights_for(net, weights_dir):
    from aliked_ros.features.weights import load_weights

    load_weights(net, weights_dir / f"{net.model_name}.pth", net.model_name)


@needs_cuda
def test_cuda_frame_has_no_host_synchronisation(shared_dir, extractor_cache):
    """Upload (pinned, non-blocking), dense maps, static top-k detection and descriptors run without one
    host synchronisation: torch's sync debug mode turns any into an error."""
    extractor = extractor_cache("aliked-t16", device="cuda")
    image = first_frame(shared_dir)
    extractor.extract(image)  # warm-up: prepared weights, cached taps, pinned buffer
    with torch.inference_mode():
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            outputs = extractor._frame(extractor._to_tensor(image))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert outputs[0].shape == (1024, 2) and outputs[3].shape == (1024, 64)


@needs_cuda
@pytest.mark.parametrize("name", [n for n in REFERENCE_FILES if "top1024" in n])
def test_cuda_graph_matches_official_reference(name, shared_dir, extractor_cache):
    manifest, reference = load_reference(shared_dir, name)
    extractor = extractor_cache(manifest["model"], max_keypoints=manifest["top_k"], device="cuda", cuda_graph=True)
    first = check_parity(extractor, manifest, reference, shared_dir)
    again = extractor.extract(read_image(shared_dir / manifest["image"]))  # a replay, not a capture
    np.testing.assert_array_equal(first.keypoints, again.keypoints)
    np.testing.assert_allclose(first.descriptors, again.descriptors, atol=1e-6)
    assert set(again.timings_ms) == {"graph", "total"}


@needs_cuda
def test_cuda_and_cpu_agree(shared_dir, extractor_cache):
    image = first_frame(shared_dir)
    cpu = extractor_cache("aliked-t16").extract(image)
    cuda = extractor_cache("aliked-t16", device="cuda").extract(image)
    distance = np.linalg.norm(cuda.keypoints[:, None] - cpu.keypoints[None], axis=2)
    assert (distance.min(axis=1) < 0.05).mean() >= 0.99
    assert isinstance(cuda.device_descriptors, torch.Tensor) and cuda.device_descriptors.is_cuda


def test_extractor_config_defaults():
    config = ExtractorConfig()
    assert config.cuda_graph is True and config.tf32 is False
    assert create_extractor("orb", config).device == "cpu"


def test_weighted_rows_both_ways():
    """The CPU's fused gather (embedding_bag) and the CUDA path's plain gather give the same weighted sums."""
    from aliked_ros.features.aliked_net import _weighted_rows

    generator = torch.Generator().manual_seed(0)
    table = torch.randn(500, 16, generator=generator)
    index = torch.randint(0, 500, (1000, 4), generator=generator)
    weight = torch.rand(1000, 4, generator=generator)
    expected = (table[index] * weight[:, :, None]).sum(dim=1)
    for fused in (True, False):
        torch.testing.assert_close(_weighted_rows(table, index, weight, fused=fused), expected)


def test_a_failing_compiler_falls_back_with_one_warning(shared_dir, weights_dir, caplog):
    """``compile`` (CUDA, CUDA graph, top-k) runs the frame through torch.compile; asked for where it does not
    apply, one warning says so; when the compiler fails (no triton, no C compiler, an unsupported operator), the
    frame runs as written and one warning says why. The failure is forced here, where no CUDA is: the same
    fallback code."""
    weights = str(weights_dir / "aliked-t16.pth")
    with caplog.at_level(logging.WARNING):
        create_extractor("aliked-t16", ExtractorConfig(device="cpu", weights=weights, compile=True))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "aliked-t16: compile applies to ALIKED on CUDA with the CUDA graph in top-k mode only; ignored here"]
    caplog.clear()
    extractor = create_extractor("aliked-t16", ExtractorConfig(device="cpu", weights=weights))
    tensor = extractor._to_tensor(first_frame(shared_dir))
    calls = []

    def broken(t):
        calls.append(t)
        raise RuntimeError("InductorError: no working C++ compiler\nsecond line")

    extractor._compiled = broken
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        first = extractor._device_frame(tensor)
        second = extractor._device_frame(tensor)
        plain = extractor._frame(tensor)
    assert len(calls) == 1 and extractor._compiled is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "aliked-t16: torch.compile failed (RuntimeError: InductorError: no working C++ compiler); running without it"]
    for a, b, c in zip(first, second, plain):
        assert (a is None and c is None) or (torch.equal(a, c) and torch.equal(b, c))


@pytest.mark.parametrize("tf32", [False, True])
def test_numerics_sets_the_tf32_flags_for_the_frame_and_restores_them(tf32, weights_dir):
    """The CUDA frame's numerics (``AlikedExtractor.numerics``): TF32 for convolutions and matrix products as
    configured, through torch's ``fp32_precision`` flags, restored after the frame, and the legacy getter still
    readable (torch raises once the two APIs disagree). The flags are process-wide Python settings, checked here
    without a GPU by marking the extractor as a CUDA one."""
    extractor = create_extractor("aliked-t16", ExtractorConfig(device="cpu", tf32=tf32,
                                                               weights=str(weights_dir / "aliked-t16.pth")))
    extractor._cuda = True
    conv, matmul, cudnn = torch.backends.cudnn.conv, torch.backends.cuda.matmul, torch.backends.cudnn
    before = conv.fp32_precision, matmul.fp32_precision, cudnn.benchmark
    with extractor.numerics():
        assert conv.fp32_precision == matmul.fp32_precision == ("tf32" if tf32 else "ieee")
        assert cudnn.benchmark == before[2]  # left as it is (benchmark mode only with compile)
    assert (conv.fp32_precision, matmul.fp32_precision, cudnn.benchmark) == before
    assert isinstance(cudnn.allow_tf32, bool)
