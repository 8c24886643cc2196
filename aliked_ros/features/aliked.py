"""ALIKED behind the extractor interface: weights resolution, device choice, preprocessing, timed stages.

On CUDA a frame runs without waiting for the device until its results are copied back (one synchronisation
per frame): the image goes up from pinned memory without blocking, top-k detection keeps a static shape (all
``max_keypoints`` rows and a validity mask, filtered on the host), and stage times come from CUDA events.
``ExtractorConfig.cuda_graph`` additionally captures the whole frame (upload to descriptors) as one CUDA graph
per image size and replays it (top-k mode only). cuDNN's TF32 convolutions are off for the frame
(``ExtractorConfig.tf32``), so that CUDA gives the official network's fp32 outputs.
"""
from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch

from aliked_ros.errors import AlikedRosError
from aliked_ros.features.aliked_net import CONFIGS, AlikedNet
from aliked_ros.features.base import Extractor, ExtractorConfig, Features, ImageError, as_uint8_image
from aliked_ros.features.weights import load_weights, resolve_weights

LOG = logging.getLogger(__name__)


class DeviceError(AlikedRosError, ValueError):
    """A device that does not exist here (e.g. ``cuda`` without CUDA)."""


def select_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without CUDA is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if chosen.type not in ("cpu", "cuda"):
        raise DeviceError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available (use 'auto' or 'cpu')")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s)")
    return chosen


class AlikedExtractor(Extractor):
    descriptor_kind = "float"

    def __init__(self, model_name: str, config: ExtractorConfig) -> None:
        super().__init__(config)
        if model_name not in CONFIGS:
            raise ValueError(f"unknown ALIKED model {model_name!r}; choose one of {', '.join(CONFIGS)}")
        self.name = model_name
        self._device = select_device(config.device)
        net = AlikedNet(model_name)
        self.weights_path = resolve_weights(model_name, config.weights)
        load_weights(net, self.weights_path, model_name)
        self.net = net.eval().to(self._device)
        self.descriptor_dim = net.descriptor_dim
        self._cuda = self._device.type == "cuda"
        self._pinned: dict[tuple, torch.Tensor] = {}
        self._graphs: dict[tuple, _CudaGraph] = {}
        self._compiled = self._compile() if config.compile else None
        if not self._cuda:
            self._prepare_cpu_kernels()

    def _compile(self):
        """``torch.compile`` of ``_frame`` where it applies (CUDA, the CUDA graph, top-k mode), else None with
        one warning; a torch that refuses to compile at all also gives None and a warning."""
        config = self.config
        if not (self._cuda and config.cuda_graph and config.threshold is None):
            LOG.warning("%s: compile applies to ALIKED on CUDA with the CUDA graph in top-k mode only; ignored here",
                        self.name)
            return None
        try:
            return torch.compile(self._frame, dynamic=False)
        except Exception as error:  # noqa: BLE001 - e.g. a torch without inductor for this Python
            LOG.warning("%s: torch.compile unavailable (%s: %s); running without it", self.name,
                        type(error).__name__, error)
            return None

    @contextlib.contextmanager
    def numerics(self, cudnn_benchmark: bool | None = None):
        """The settings the network runs under on CUDA (process-wide torch flags, set for the frame and restored
        after it): TF32 in cuDNN's convolutions and in matrix products as ``config.tf32`` says (torch's own
        default allows it in convolutions); cuDNN's benchmark mode as given, or on with ``config.compile`` (the
        configuration measured, BENCHMARKS.md), else as it is (it gained nothing for the plain path on an H200
        and slows the first frame)."""
        if not self._cuda:
            yield
            return
        if cudnn_benchmark is None and self.config.compile:
            cudnn_benchmark = True
        cudnn = torch.backends.cudnn
        precision = "tf32" if self.config.tf32 else "ieee"
        new_api = hasattr(getattr(cudnn, "conv", None), "fp32_precision")  # torch >= 2.9: mixing the two raises
        conv, matmul = cudnn.conv if new_api else cudnn, torch.backends.cuda.matmul
        attribute = "fp32_precision" if new_api else "allow_tf32"
        value = precision if new_api else self.config.tf32
        before = getattr(conv, attribute), getattr(matmul, attribute), cudnn.benchmark
        setattr(conv, attribute, value)
        setattr(matmul, attribute, value)
        if cudnn_benchmark is not None:
            cudnn.benchmark = cudnn_benchmark
        try:
            yield
        finally:
            setattr(conv, attribute, before[0])
            setattr(matmul, attribute, before[1])
            cudnn.benchmark = before[2]

    def _prepare_cpu_kernels(self) -> None:
        """Build the fused CPU kernels now (``cpu_kernels``: compiled on a machine's first use, ~30 s, then
        loaded from the disk cache in ~1 s), so that the first camera frame does not wait."""
        started = time.perf_counter()
        if self.net.inference_path().fused_cpu_forward() is not None:
            LOG.info("%s: fused CPU kernels ready in %.1f s", self.name, time.perf_counter() - started)

    @property
    def device(self) -> str:
        return str(self._device)

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """uint8 image to the device; on CUDA through a pinned buffer (reused per shape), without blocking."""
        source = torch.from_numpy(np.ascontiguousarray(array))
        if not self._cuda:
            return source
        pinned = self._pinned.get(source.shape)
        if pinned is None:
            pinned = self._pinned[source.shape] = torch.empty(source.shape, dtype=torch.uint8, pin_memory=True)
        pinned.copy_(source)  # the previous frame's upload from this buffer finished at its end-of-frame sync
        return pinned.to(self._device, non_blocking=True)

    @staticmethod
    def _as_float(tensor: torch.Tensor) -> torch.Tensor:
        """(H,W) or (H,W,3) uint8 on the device -> (1,3,H,W) float RGB in [0,1] (channels-last strides)."""
        tensor = tensor[None, None].expand(1, 3, *tensor.shape) if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]
        return tensor.float() / 255.0

    def _to_tensor(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            tensor = image if image.dim() == 4 else image[None]
            if tensor.shape[0] != 1 or tensor.shape[1] != 3 or not tensor.is_floating_point():
                raise ImageError(f"expected a float (3,H,W) or (1,3,H,W) RGB tensor in [0,1], got {tuple(image.shape)} {image.dtype}")
            return tensor.to(self._device, torch.float32)
        return self._as_float(self._upload(as_uint8_image(np.asarray(image))))

    def _detect(self, score_map: torch.Tensor, static_shape: bool):
        cfg = self.config
        return self.net.detect(score_map[0], radius=cfg.nms_radius, top_k=cfg.max_keypoints, threshold=cfg.threshold,
                               max_keypoints=cfg.max_keypoints, border=cfg.border, min_score=cfg.min_score,
                               static_shape=static_shape)

    def _frame(self, tensor: torch.Tensor):
        """The whole extraction on the device, static shapes in top-k mode: (keypoints, scores, valid | None,
        descriptors). Captured as a CUDA graph when ``cuda_graph`` is set."""
        feature_map, score_map = self.net.sparse_maps(tensor)
        detections = self._detect(score_map, static_shape=True)
        return (detections.keypoints, detections.scores, detections.valid,
                self.net.describe(feature_map, detections.keypoints))

    def _device_frame(self, tensor: torch.Tensor):
        """``_frame`` on CUDA: compiled when ``config.compile`` asks and the compiler works, else as written.
        The choice is made in the CUDA graph's warm-up runs (the first call compiles); during the capture the
        chosen function runs without a fallback, so that a graph never holds parts of both."""
        if self._compiled is None:
            return self._frame(tensor)
        if tensor.is_cuda and torch.cuda.is_current_stream_capturing():
            return self._compiled(tensor)
        try:
            return self._compiled(tensor)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - any compiler failure: the plain path still works
            LOG.warning("%s: torch.compile failed (%s: %s); running without it", self.name,
                        type(error).__name__, _first_line(error))
            self._compiled = None
        return self._frame(tensor)

    def _capture(self, array: np.ndarray) -> "_CudaGraph":
        """The frame for ``array``'s size as a CUDA graph; a compiled frame whose capture fails is captured again
        without torch.compile (one warning), so that the size does not fail on every later frame."""
        capture = lambda: _CudaGraph(lambda t: self._device_frame(self._as_float(t)), self._upload(array))  # noqa: E731
        try:
            return capture()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001
            if self._compiled is None:
                raise
            LOG.warning("%s: capturing the compiled frame failed (%s: %s); capturing it without torch.compile",
                        self.name, type(error).__name__, _first_line(error))
            self._compiled = None
            return capture()

    @torch.inference_mode()
    def _extract(self, image) -> Features:
        if self._cuda:
            return self._extract_cuda(image)
        clock = time.perf_counter
        t0 = clock()
        tensor = self._to_tensor(image)
        height, width = tensor.shape[-2:]
        feature_map, score_map = self.net.sparse_maps(tensor)  # the feature map is evaluated at keypoints only
        t1 = clock()
        detections = self._detect(score_map, static_shape=False)
        t2 = clock()
        descriptors = self.net.describe(feature_map, detections.keypoints)
        t3 = clock()
        return Features(
            keypoints=detections.keypoints.numpy(), scores=detections.scores.numpy(),
            descriptors=descriptors.numpy(), image_size=(int(width), int(height)), extractor=self.name,
            timings_ms={"dense_map": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "describe": (t3 - t2) * 1e3},
            device_descriptors=descriptors,
        )

    def _extract_cuda(self, image) -> Features:
        with self.numerics():
            return self._extract_cuda_frame(image)

    def _extract_cuda_frame(self, image) -> Features:
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        events[0].record()
        use_graph = self.config.cuda_graph and self.config.threshold is None and not isinstance(image, torch.Tensor)
        if use_graph:
            array = as_uint8_image(np.asarray(image))
            key = array.shape
            if key not in self._graphs:
                self._graphs[key] = self._capture(array)
            keypoints, scores, valid, descriptors = self._graphs[key](self._upload(array))
            height, width = array.shape[:2]
            events[1].record()
            stages = ("graph",)
        else:
            tensor = self._to_tensor(image)
            height, width = tensor.shape[-2:]
            feature_map, score_map = self.net.sparse_maps(tensor)
            events[1].record()
            detections = self._detect(score_map, static_shape=self.config.threshold is None)
            events[2].record()
            descriptors = self.net.describe(feature_map, detections.keypoints)
            events[3].record()
            keypoints, scores, valid = detections.keypoints, detections.scores, detections.valid
            stages = ("dense_map", "detect", "describe")
        # the frame's one synchronisation: results to the host
        host = [t.to("cpu", non_blocking=True) for t in (keypoints, scores, descriptors)]
        host_valid = valid.to("cpu", non_blocking=True) if valid is not None else None
        torch.cuda.current_stream(self._device).synchronize()
        keypoints_np, scores_np, descriptors_np = (t.numpy() for t in host)
        if host_valid is not None and not bool(host_valid.all()):
            keep = host_valid.numpy()
            keypoints_np, scores_np, descriptors_np = keypoints_np[keep], scores_np[keep], descriptors_np[keep]
            descriptors = descriptors[torch.from_numpy(np.flatnonzero(keep)).to(self._device)]
        elif use_graph:
            descriptors = descriptors.clone()  # the graph's output buffer is overwritten by the next replay
        timings = {name: events[i].elapsed_time(events[i + 1]) for i, name in enumerate(stages)}
        return Features(
            keypoints=keypoints_np, scores=scores_np, descriptors=descriptors_np,
            image_size=(int(width), int(height)), extractor=self.name, timings_ms=timings,
            device_descriptors=descriptors,
        )


def _first_line(error: Exception) -> str:
    """The first line of an error's message (compiler errors run to pages), at most 200 characters."""
    return str(error).splitlines()[0][:200] if str(error) else ""


class _CudaGraph:
    """``fn(static input) -> tuple of tensors`` captured once as a CUDA graph; calling it copies the input into
    the captured buffer and replays. Warm-up runs on a side stream first (as torch.cuda.graphs requires), which
    also builds every cached tensor the function uses (prepared weights, upsampling taps)."""

    def __init__(self, fn, example: torch.Tensor) -> None:
        self.input = example.clone()
        stream = torch.cuda.Stream(example.device)
        stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn(self.input)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA work during the capture (the node's pose stage matching on the
        # GPU while a new image size is captured) is not an error
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = fn(self.input)

    def __call__(self, tensor: torch.Tensor):
        self.input.copy_(tensor, non_blocking=True)
        self.graph.replay()
        return self.outputs
