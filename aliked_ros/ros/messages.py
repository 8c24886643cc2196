"""Conversions between numpy arrays and the package's messages (``aliked_ros.msg``).

Arrays go into messages as ``bytes``/``array.array`` (assigning an ndarray to a message field is ~100x slower);
reading is zero-copy through ``np.frombuffer``. Conventions are those documented in ``msg/FrameKeypoints.msg``.
"""
from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np

from aliked_ros.msg import FrameKeypoints


@dataclass(frozen=True)
class KeypointArrays:
    """The per-keypoint content of a FrameKeypoints message as numpy arrays (N keypoints)."""

    pixel_xy: np.ndarray  # (N, 2) float32, px in the image the node subscribes to (raw, or rectified)
    normalized_xy: np.ndarray  # (N, 2) float32, undistorted normalised coordinates (x/z, y/z), finite
    scores: np.ndarray  # (N,) float32, extractor-specific scale
    track_ids: np.ndarray  # (N,) uint64
    track_ages: np.ndarray  # (N,) uint32
    inliers: np.ndarray  # (N,) bool
    descriptors: np.ndarray  # (N, D) float32 (L2-normalised) or uint8 (packed bits)


def _float32(values: np.ndarray) -> array.array:
    return array.array("f", np.ascontiguousarray(values, dtype=np.float32).tobytes())


def fill_frame_keypoints(msg: FrameKeypoints, arrays: KeypointArrays) -> FrameKeypoints:
    """Write ``arrays`` into ``msg`` (header, extractor and image size are left to the caller)."""
    n = len(arrays.pixel_xy)
    for name in ("normalized_xy", "scores", "track_ids", "track_ages", "inliers", "descriptors"):
        if len(getattr(arrays, name)) != n:
            raise ValueError(f"{name} has {len(getattr(arrays, name))} rows, pixel_xy has {n}")
    descriptors = np.ascontiguousarray(arrays.descriptors)
    if descriptors.dtype == np.float32:
        msg.descriptor_type = FrameKeypoints.DESCRIPTOR_FLOAT32
    elif descriptors.dtype == np.uint8:
        msg.descriptor_type = FrameKeypoints.DESCRIPTOR_BINARY
    else:
        raise ValueError(f"descriptors must be float32 or uint8, got {descriptors.dtype}")
    msg.num_keypoints = n
    msg.pixel_xy = _float32(arrays.pixel_xy)
    msg.normalized_xy = _float32(arrays.normalized_xy)
    msg.scores = _float32(arrays.scores)
    msg.track_ids = array.array("Q", np.ascontiguousarray(arrays.track_ids, dtype=np.uint64).tobytes())
    msg.track_ages = array.array("I", np.ascontiguousarray(arrays.track_ages, dtype=np.uint32).tobytes())
    msg.inliers = array.array("B", np.ascontiguousarray(arrays.inliers, dtype=np.uint8).tobytes())
    msg.descriptor_size = descriptors.shape[1] if descriptors.ndim == 2 else 0
    msg.descriptors = array.array("B", descriptors.astype(descriptors.dtype.newbyteorder("<"), copy=False).tobytes())
    return msg


def read_frame_keypoints(msg: FrameKeypoints) -> KeypointArrays:
    """The arrays of a received message (views on its buffers where possible)."""
    n, d = msg.num_keypoints, msg.descriptor_size
    dtype = {FrameKeypoints.DESCRIPTOR_FLOAT32: np.dtype("<f4"), FrameKeypoints.DESCRIPTOR_BINARY: np.dtype("u1")}
    if msg.descriptor_type not in dtype:
        raise ValueError(f"unknown descriptor_type {msg.descriptor_type}")
    return KeypointArrays(
        pixel_xy=np.frombuffer(msg.pixel_xy, np.float32).reshape(n, 2),
        normalized_xy=np.frombuffer(msg.normalized_xy, np.float32).reshape(n, 2),
        scores=np.frombuffer(msg.scores, np.float32),
        track_ids=np.frombuffer(msg.track_ids, np.uint64),
        track_ages=np.frombuffer(msg.track_ages, np.uint32),
        inliers=np.frombuffer(msg.inliers, np.uint8).astype(bool),
        descriptors=np.frombuffer(msg.descriptors, dtype[msg.descriptor_type]).reshape(n, d),
    )
