"""Stereo cameras: a rectified pair described as ROS describes it, rectification of a calibrated raw pair, and
metric depth at keypoints from left-right matches.

Rectified pair (:class:`StereoCamera`): both images are undistorted and rectified so that a point's two
projections lie on the same image row. As in ``sensor_msgs/CameraInfo`` (REP 104), the left camera's projection
is P_l = [fx 0 cx 0; 0 fy cy 0; 0 0 1 0] and the right one's P_r has the same fx, fy, cy and
P_r[0, 3] = Tx = -fx * B: the right camera sits B metres along the left camera's +x axis (B > 0, so Tx < 0).
A point at depth z in the left optical frame has disparity d = (x_l - cx_l) - (x_r - cx_r) = fx B / z (px).
The left camera is the one tracked and posed: ``T_odom_camera`` of a stereo frame is the rectified left optical
frame.

Raw pair with known extrinsics (:func:`rectify_stereo`): ``cv2.stereoRectify`` (zero disparity at infinity,
``alpha`` 0: only valid pixels) gives the rotations R_l, R_r from each raw optical frame to its rectified one
(p_rect = R p_raw) and the rectified projections; ``cv2.initUndistortRectifyMap`` gives pixel maps, computed once
and applied to every image pair (``StereoRectification.rectify``). The rectified left camera keeps the raw left
camera's optical centre and is rotated by R_l, so ground truth of the raw left camera T_world_raw becomes
T_world_raw @ ``T_raw_rect`` (T_raw_rect = [R_l^T | 0]) for evaluation.

Depth (:func:`stereo_depth`): left and right keypoints of the same extractor are matched by mutual nearest
neighbours among the pairs that are within ``row_band_px`` rows and have a disparity in
[``min_disparity_px``, ``max_disparity_px``]; z = fx B / d. Its noise for bundle adjustment:
sigma_z = z^2 sigma_d / (fx B) (``StereoCamera.depth_sigma_per_m2``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from aliked_ros.geometry.camera import CalibrationError, CameraModel

_RECTIFIED_TOLERANCE = 1e-4  # relative: fx, fy, cy of the left and right projections must agree this well


@dataclass(frozen=True)
class StereoCamera:
    """A rectified stereo pair: ``left`` (pinhole, no distortion; the camera that is posed), the baseline in
    metres (> 0: the right camera sits at +x of the left one) and the right camera's principal point column
    (``right_cx``; None = the left's, the usual zero-disparity rectification)."""

    left: CameraModel
    baseline_m: float
    right_cx: float | None = None

    def __post_init__(self) -> None:
        if self.left.is_distorted:
            raise CalibrationError("a rectified stereo camera has no lens distortion: rectify the pair first "
                                   "(aliked_ros.geometry.stereo.rectify_stereo)")
        if not np.isfinite(self.baseline_m) or self.baseline_m <= 0:
            raise CalibrationError(f"stereo baseline must be a positive number of metres, got {self.baseline_m}")
        if self.right_cx is not None and not np.isfinite(self.right_cx):
            raise CalibrationError(f"right principal point is not finite: {self.right_cx}")

    @property
    def fx_baseline(self) -> float:
        """fx * B (px m): depth z = fx B / disparity."""
        return self.left.fx * self.baseline_m

    @property
    def disparity_offset(self) -> float:
        """cx_left - cx_right (px): d = x_l - x_r - this."""
        return 0.0 if self.right_cx is None else self.left.cx - self.right_cx

    @property
    def right(self) -> CameraModel:
        """The rectified right camera's intrinsics (its pose: B along the left camera's +x)."""
        c = self.left
        return CameraModel(c.width, c.height, c.fx, c.fy, c.cx if self.right_cx is None else self.right_cx, c.cy)

    def projections(self) -> tuple[np.ndarray, np.ndarray]:
        """(P_left, P_right), 3x4 each, as ``sensor_msgs/CameraInfo`` P of a rectified pair (Tx = -fx B)."""
        P_left = np.hstack([self.left.K, np.zeros((3, 1))])
        P_right = np.hstack([self.right.K, np.zeros((3, 1))])
        P_right[0, 3] = -self.fx_baseline
        return P_left, P_right

    def depth_sigma_per_m2(self, disparity_sigma_px: float) -> float:
        """Stereo depth noise: sigma_z = this x z^2 for a disparity noise of ``disparity_sigma_px``."""
        return disparity_sigma_px / self.fx_baseline

    @classmethod
    def from_projections(cls, left_size: tuple[int, int], P_left, right_size: tuple[int, int], P_right
                         ) -> "StereoCamera":
        """From the image sizes (width, height) and 3x4 projection matrices of a rectified pair (``CameraInfo.p``
        or KITTI ``calib.txt`` P0/P1). Raises :class:`CalibrationError` for images of different sizes, projections
        that are not a horizontally rectified pair, and a right camera with Tx = 0 or Tx > 0 (no baseline or a
        negative one: left and right swapped)."""
        if tuple(left_size) != tuple(right_size):
            raise CalibrationError(f"stereo images differ in size: left {left_size[0]}x{left_size[1]}, right "
                                   f"{right_size[0]}x{right_size[1]} px (a rectified pair has one size)")
        try:
            P_l = np.asarray(P_left, float).reshape(3, 4)
            P_r = np.asarray(P_right, float).reshape(3, 4)
        except ValueError:
            raise CalibrationError("stereo projection matrices must have 12 elements (3x4)") from None
        if not (np.isfinite(P_l).all() and np.isfinite(P_r).all()):
            raise CalibrationError("stereo projection matrices contain NaN or inf")
        if P_l[0, 0] <= 0 or P_r[0, 0] <= 0:
            raise CalibrationError("stereo projection P has fx <= 0 (all zero: no rectified calibration)")
        fx = P_l[0, 0]
        for name, (i, j) in (("fx", (0, 0)), ("fy", (1, 1)), ("cy", (1, 2))):
            if abs(P_l[i, j] - P_r[i, j]) > _RECTIFIED_TOLERANCE * fx:
                raise CalibrationError(f"left and right projections differ in {name} ({P_l[i, j]} vs {P_r[i, j]}): "
                                       f"not a rectified stereo pair")
        if abs(P_r[1, 3] - P_l[1, 3]) > _RECTIFIED_TOLERANCE * fx or abs(P_r[2, 3] - P_l[2, 3]) > _RECTIFIED_TOLERANCE:
            raise CalibrationError("right projection has a vertical or depth offset (P[1,3], P[2,3]): only "
                                   "horizontally rectified pairs are supported")
        tx = P_r[0, 3] - P_l[0, 3]
        if tx == 0:
            raise CalibrationError("right camera projection has Tx = 0: no baseline (a rectified right camera has "
                                   "P[0,3] = Tx = -fx * B)")
        baseline = -tx / fx
        if baseline < 0:
            raise CalibrationError(f"right camera projection has Tx = {P_r[0, 3]:g} > 0: the baseline would be "
                                   f"negative ({baseline:g} m); Tx = -fx * B < 0 for the right camera. Are left "
                                   f"and right swapped?")
        left = CameraModel(int(left_size[0]), int(left_size[1]), fx, P_l[1, 1], P_l[0, 2], P_l[1, 2])
        right_cx = None if P_r[0, 2] == P_l[0, 2] else float(P_r[0, 2])
        return cls(left, float(baseline), right_cx)

    @classmethod
    def from_camera_infos(cls, left_info, right_info) -> "StereoCamera":
        """From the two ``sensor_msgs/CameraInfo`` of a rectified pair (messages or mappings with ``width``,
        ``height`` and ``p``; ROS 1 ``P``). Only P describes the rectified images (K and D are the raw camera's)."""
        def size_and_p(info, side: str):
            p = np.asarray(_field(info, "p", []), float).reshape(-1)
            if p.size != 12 or not p.any():
                raise CalibrationError(f"{side} camera_info has no projection matrix P (12 values, not all zero)")
            return (int(_field(info, "width", 0)), int(_field(info, "height", 0))), p

        left_size, P_left = size_and_p(left_info, "left")
        right_size, P_right = size_and_p(right_info, "right")
        return cls.from_projections(left_size, P_left, right_size, P_right)


def _field(info, key: str, default=None):
    """A CameraInfo field from a message or a mapping (ROS 2 ``k``, ROS 1 ``K``)."""
    for name in (key, key.upper()):
        value = info.get(name) if isinstance(info, Mapping) else getattr(info, name, None)
        if value is not None:
            return value
    return default


@dataclass(frozen=True, eq=False)
class StereoRectification:
    """A raw calibrated pair, rectified: ``stereo`` (the rectified pair), ``T_raw_rect`` (4x4: the rectified
    left optical frame in the raw left optical frame, a pure rotation) and the pixel maps of both cameras."""

    stereo: StereoCamera
    T_raw_rect: np.ndarray
    _maps: tuple = ()

    def rectify(self, left: np.ndarray, right: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The rectified (left, right) images (``right`` None: only the left one)."""
        (lx, ly), (rx, ry) = self._maps
        size = (self.stereo.left.width, self.stereo.left.height)
        for image in (left, right):
            if image is not None and image.shape[1::-1] != size:
                raise CalibrationError(f"image is {image.shape[1]}x{image.shape[0]} px but the stereo calibration is "
                                       f"for {size[0]}x{size[1]}")
        out_left = cv2.remap(left, lx, ly, cv2.INTER_LINEAR)
        out_right = cv2.remap(right, rx, ry, cv2.INTER_LINEAR) if right is not None else None
        return out_left, out_right


def rectify_stereo(left: CameraModel, right: CameraModel, T_right_left: np.ndarray) -> StereoRectification:
    """Rectify a raw pair once: ``left`` and ``right`` raw camera models (plumb_bob / rational_polynomial or
    equidistant), ``T_right_left`` the left optical frame in the right one (x_right = R x_left + t; EuRoC:
    inv(T_BS cam1) @ T_BS cam0). Output images keep the input size."""
    if (left.width, left.height) != (right.width, right.height):
        raise CalibrationError(f"stereo cameras differ in size: left {left.width}x{left.height}, right "
                               f"{right.width}x{right.height} px")
    if (left.distortion_model == "equidistant") != (right.distortion_model == "equidistant"):
        raise CalibrationError("stereo cameras must share a lens model family (both pinhole or both fisheye)")
    T = np.asarray(T_right_left, float)
    R, t = T[:3, :3], T[:3, 3].reshape(3, 1)
    size = (left.width, left.height)
    D1 = np.asarray(left.distortion or [0.0] * 4, float)
    D2 = np.asarray(right.distortion or [0.0] * 4, float)
    if left.distortion_model == "equidistant":
        R1, R2, P1, P2, _ = cv2.fisheye.stereoRectify(left.K, D1, right.K, D2, size, R, t, cv2.CALIB_ZERO_DISPARITY,
                                                       size, 0.0, 1.0)
        maps = [cv2.fisheye.initUndistortRectifyMap(cam.K, D, Rr, P, size, cv2.CV_16SC2)
                for cam, D, Rr, P in ((left, D1, R1, P1), (right, D2, R2, P2))]
    else:
        R1, R2, P1, P2, *_ = cv2.stereoRectify(left.K, D1, right.K, D2, size, R, t, flags=cv2.CALIB_ZERO_DISPARITY,
                                               alpha=0)
        maps = [cv2.initUndistortRectifyMap(cam.K, D, Rr, P, size, cv2.CV_16SC2)
                for cam, D, Rr, P in ((left, D1, R1, P1), (right, D2, R2, P2))]
    stereo = StereoCamera.from_projections(size, P1, size, P2)
    T_raw_rect = np.eye(4)
    T_raw_rect[:3, :3] = R1.T
    return StereoRectification(stereo, T_raw_rect, tuple(maps))


def rectify_from_camera_infos(left_info, right_info) -> StereoRectification:
    """Raw images of a calibrated pair with their ``CameraInfo`` (K, D, R, P each, as ROS camera_calibration
    writes them): the maps image_proc's rectification applies, ``initUndistortRectifyMap(K, D, R, P)`` per
    camera; the rectified pair is described by the two P (:meth:`StereoCamera.from_camera_infos`)."""
    stereo = StereoCamera.from_camera_infos(left_info, right_info)
    size = (stereo.left.width, stereo.left.height)
    maps, rotations = [], []
    for info, side in ((left_info, "left"), (right_info, "right")):
        raw = CameraModel.from_camera_info(info)
        R = np.asarray(_field(info, "r", []), float).reshape(-1)
        R = R.reshape(3, 3) if R.size == 9 and R.any() else np.eye(3)
        P = np.asarray(_field(info, "p"), float).reshape(3, 4)[:, :3]
        D = np.asarray(raw.distortion or [0.0] * 4, float)
        if raw.distortion_model == "equidistant":
            maps.append(cv2.fisheye.initUndistortRectifyMap(raw.K, D, R, P, size, cv2.CV_16SC2))
        else:
            maps.append(cv2.initUndistortRectifyMap(raw.K, D, R, P, size, cv2.CV_16SC2))
        rotations.append(R)
    T_raw_rect = np.eye(4)
    T_raw_rect[:3, :3] = rotations[0].T
    return StereoRectification(stereo, T_raw_rect, tuple(maps))


def is_rectified_camera_info(info) -> bool:
    """No distortion and R = identity (or unset): images of this camera need no rectification."""
    d = np.asarray(_field(info, "d", []), float)
    R = np.asarray(_field(info, "r", []), float).reshape(-1)
    model = str(_field(info, "distortion_model", "") or "")
    return model != "equidistant" and not d.any() and (R.size != 9 or not R.any() or np.allclose(R, np.eye(3).ravel()))


@dataclass(frozen=True)
class StereoDepth:
    """Depth of the left keypoints from their right matches: ``points`` (N,3) in the left optical frame
    (metres, NaN where unmatched), ``disparity`` (N,) px (NaN where unmatched), ``right_index`` (N,) (-1)."""

    points: np.ndarray
    disparity: np.ndarray
    right_index: np.ndarray

    @property
    def matched(self) -> int:
        return int(np.count_nonzero(self.right_index >= 0))


_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], np.uint8)


def _pair_distances(left_descriptors: np.ndarray, right_descriptors: np.ndarray, i: np.ndarray, j: np.ndarray
                    ) -> np.ndarray:
    """Descriptor distance of the pairs (i[k], j[k]): Hamming bits / bits for uint8 packed bits, 1 - cosine for
    float rows."""
    a, b = np.asarray(left_descriptors), np.asarray(right_descriptors)
    if a.dtype != b.dtype or a.shape[1] != b.shape[1]:
        raise ValueError(f"left and right descriptors differ: {a.dtype} {a.shape} vs {b.dtype} {b.shape}")
    if a.dtype == np.uint8:
        return _POPCOUNT[a[i] ^ b[j]].sum(axis=1, dtype=np.float64) / (8.0 * a.shape[1])
    return 1.0 - np.einsum("kd,kd->k", a[i].astype(np.float64), b[j].astype(np.float64))


def _first_per_group(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of the smallest ``key`` within each value of ``group`` (one per group)."""
    order = np.lexsort((key, group))
    first = np.ones(len(order), bool)
    first[1:] = group[order][1:] != group[order][:-1]
    return order[first]


def _gray(image: np.ndarray) -> np.ndarray:
    """float32 grey of an (H,W), (H,W,1), RGB or RGBA image (the images the extractors take)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    return image.astype(np.float32)


def refine_disparity(left_image: np.ndarray, right_image: np.ndarray, left_keypoints: np.ndarray,
                     disparity: np.ndarray, stereo: StereoCamera, search_px: int = 3, radius: int = 5) -> np.ndarray:
    """Sub-pixel disparities: for each left keypoint (x, y) with a disparity d from keypoint matching, the
    (2 ``radius`` + 1)^2 patch at (x, y) in the left image is compared (sum of absolute differences of
    zero-mean patches, bilinear sampling) with the right image's patches at (x - d + k, y), k = -``search_px``
    .. ``search_px``, on the same row (rectified); a parabola through the best k and its neighbours gives the
    sub-pixel offset. NaN where the best k is at the edge of the search (the match is not where the keypoints
    said) or a patch leaves the image."""
    n = len(left_keypoints)
    if n > 4096:  # cv2.remap takes maps of fewer than 32767 rows
        return np.concatenate([refine_disparity(left_image, right_image, left_keypoints[k:k + 4096],
                                                disparity[k:k + 4096], stereo, search_px, radius)
                               for k in range(0, n, 4096)])
    if n == 0:
        return np.zeros(0)
    left, right = _gray(left_image), _gray(right_image)
    h, w = left.shape
    u = np.arange(-radius, radius + 1, dtype=np.float32)
    du, dv = np.meshgrid(u, u)
    du, dv = du.ravel(), dv.ravel()  # (P,) patch offsets
    x, y = (np.asarray(left_keypoints, np.float32)[:, k] for k in (0, 1))
    xr0 = (x - disparity - stereo.disparity_offset).astype(np.float32)
    ks = np.arange(-search_px, search_px + 1, dtype=np.float32)
    map_lx, map_ly = x[:, None] + du[None], y[:, None] + dv[None]  # (N,P)
    patch_l = cv2.remap(left, map_lx, map_ly, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    map_rx = (xr0[:, None, None] + ks[None, :, None] + du[None, None]).reshape(n * len(ks), -1)
    map_ry = np.broadcast_to((y[:, None] + dv[None])[:, None], (n, len(ks), len(du))).reshape(n * len(ks), -1)
    patch_r = cv2.remap(right, map_rx, np.ascontiguousarray(map_ry), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).reshape(n, len(ks), -1)
    patch_l = patch_l - patch_l.mean(axis=1, keepdims=True)
    patch_r = patch_r - patch_r.mean(axis=2, keepdims=True)
    cost = np.abs(patch_r - patch_l[:, None]).sum(axis=2)  # (N, K)
    best = cost.argmin(axis=1)
    inner = (best > 0) & (best < len(ks) - 1)
    rows = np.arange(n)
    c0 = cost[rows, best]
    cm = cost[rows, np.clip(best - 1, 0, len(ks) - 1)]
    cp = cost[rows, np.clip(best + 1, 0, len(ks) - 1)]
    curvature = cm - 2 * c0 + cp
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(curvature > 0, 0.5 * (cm - cp) / curvature, np.nan)
    inside = (map_lx.min(1) >= 0) & (map_lx.max(1) <= w - 1) & (map_ly.min(1) >= 0) & (map_ly.max(1) <= h - 1)
    inside &= (xr0 - search_px - radius >= 0) & (xr0 + search_px + radius <= w - 1)
    refined = disparity - ks[best] - delta
    return np.where(inner & inside & (np.abs(delta) <= 1.0), refined, np.nan)


def stereo_depth(left_keypoints: np.ndarray, left_descriptors: np.ndarray, right_keypoints: np.ndarray,
                 right_descriptors: np.ndarray, left_normalized: np.ndarray, stereo: StereoCamera,
                 row_band_px: float, min_disparity_px: float, max_disparity_px: float,
                 max_distance: float | None = None, images: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> StereoDepth:
    """Match left to right keypoints (mutual nearest neighbours by descriptor distance among the geometrically
    possible pairs: |y_l - y_r| <= ``row_band_px``, ``min_disparity_px`` <= d <= ``max_disparity_px``; float
    descriptors: 1 - cosine, uint8 packed bits: Hamming / bits; optionally at most ``max_distance``), refine
    each disparity to sub-pixel on ``images`` (left, right) when given (:func:`refine_disparity`; a match that
    does not refine is dropped) and triangulate: z = fx B / d, point = (x_n, y_n, 1) z with ``left_normalized``
    the left keypoints' normalised coordinates."""
    n = len(left_keypoints)
    points = np.full((n, 3), np.nan)
    disparity = np.full(n, np.nan)
    right_index = np.full(n, -1, np.int64)
    if n == 0 or len(right_keypoints) == 0:
        return StereoDepth(points, disparity, right_index)
    xl, yl = (np.asarray(left_keypoints, np.float64)[:, k] for k in (0, 1))
    xr, yr = (np.asarray(right_keypoints, np.float64)[:, k] for k in (0, 1))
    d = xl[:, None] - xr[None, :] - stereo.disparity_offset
    possible = (np.abs(yl[:, None] - yr[None, :]) <= row_band_px) & (d >= min_disparity_px) & (d <= max_disparity_px)
    if not possible.any():
        return StereoDepth(points, disparity, right_index)
    pi, pj = np.nonzero(possible)  # candidate pairs (a narrow band: few per keypoint)
    distance = _pair_distances(left_descriptors, right_descriptors, pi, pj)
    best_left = _first_per_group(pi, distance)  # each left keypoint's nearest right candidate
    best_right = _first_per_group(pj, distance)
    mutual = np.intersect1d(best_left, best_right)
    if max_distance is not None:
        mutual = mutual[distance[mutual] <= max_distance]
    i, j = pi[mutual], pj[mutual]
    matched = d[i, j]
    if images is not None:
        matched = refine_disparity(images[0], images[1], left_keypoints[i], matched, stereo)
        ok = np.isfinite(matched) & (matched >= min_disparity_px) & (matched <= max_disparity_px)
        i, j, matched = i[ok], j[ok], matched[ok]
    disparity[i] = matched
    right_index[i] = j
    z = stereo.fx_baseline / matched
    points[i] = np.column_stack([left_normalized[i], np.ones(len(i))]) * z[:, None]
    return StereoDepth(points, disparity, right_index)
