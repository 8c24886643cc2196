"""Deterministic synthetic sequences with exact ground truth: a textured 3-D scene rendered by ray casting.

Scene (world frame: x right, y down, z forward = the optical frame of the camera at rest): a back wall, a floor,
a left wall and three boxes at different depths, each face a textured rectangle. Textures are generated from the
seed (smoothed noise, random discs, rectangles and lines: corners and blobs for any detector); nothing is
downloaded. The camera moves along a smooth path (translation and rotation) looking into the scene.

Rendering: for every pixel, the ray through it (undistorted with the camera model, so lens distortion is
rendered exactly) is intersected with every face; the nearest hit wins (z-buffer) and its texture is sampled
bilinearly (without distortion, each face's texture is warped into the image by its homography, ~20x faster). Depth is the hit's z in the camera frame, metres. Optional Gaussian noise and blur.

Rolling shutter (``rolling_shutter_s`` > 0): the rows are exposed one after the other, top to bottom, over that
long; each band of 8 rows is rendered from the camera's pose at its own time (on the continuous path), and the
frame's stamp and ground truth are those of the centre row (``aliked_ros.geometry.rolling_shutter``'s
convention). Depth is rendered with the same per-row poses (a registered depth image read out with the colour
rows). 0: global shutter (every row at the stamp).

Pixel area (``pixel_samples`` N > 1): each pixel is the mean of N x N point samples spread evenly over its area,
as a camera's pixel integrates the light that falls on it; its depth the samples' mean, NaN where they straddle
a depth step (spread above 1 %). With one sample at each pixel's centre (N = 1, the default) a texture seen from
afar (250 texels per metre are 2 per pixel at 4 m) aliases, and its keypoints then move by up to tenths of a
pixel as the view shifts by fractions of a pixel: in the 120 Hz sequence of ``scripts/measure_vo.sh``, 2 x 2
samples take the frame-to-frame jitter of a keypoint aligned to its keyframe's patch from 0.113 to 0.066 px
(median) and of an ALIKED detection from 0.30 to 0.25 px (DEVELOPERS.md).

Stereo (``stereo_baseline_m`` > 0): a rectified pair. The right camera is rendered the same way from the pose
T_world_left @ T_left_right, T_left_right = translation (B, 0, 0) (B metres along the left camera's +x, same
orientation and intrinsics, no distortion), with its own pixel noise; frames then carry the right image and the
``StereoCamera`` (right P: Tx = -fx B) instead of depth. Ground truth is the left camera's.

Motion (``SynthConfig``): ``path`` "arc" (a smooth arc into the scene; its length is speed x duration, so keep it
short) or "loop" (an ellipse of 1.6 m x 1.2 m in front of the boxes, travelled round and round: any duration).
The camera moves at ``speed_m_s`` except: it accelerates smoothly from rest over ``ramp_s`` seconds at the
start, and it halts ``stops`` times for ``stop_s`` seconds and ``rotations`` times for ``rotation_s`` seconds
while turning on the spot (yaw out to +-``rotation_deg`` and back, about the optical centre: no parallax at
all). The events are spread evenly over the run, each with a smooth 0.5 s slow-down and speed-up.

Moving objects (``movers`` > 0): people-sized panels (0.5 m x 1.7 m, textured like the scene, facing the camera
at rest) standing on the floor at depths of 1.4, 4.0 and 2.7 m (``make_movers``), each walking to and fro across
the scene (x from -1.8 to 1.8 m) at ``mover_speed_m_s``: what a robot's camera sees while someone walks past.
They are positioned at each row band's own time (rolling shutter), occlude the scene and are in the depth image;
the ground truth is the camera's alone. Their textures and paths come from their own random stream, so a sequence without movers is the
same as before they existed.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from aliked_ros.datasets.base import Sequence
from aliked_ros.geometry.camera import CameraModel
from aliked_ros.geometry.transforms import make_transform
from aliked_ros.odometry import Frame
from aliked_ros.trajectory import Trajectory


@dataclass(frozen=True)
class SynthConfig:
    frames: int = 40
    rate_hz: float = 10.0
    width: int = 640
    height: int = 480
    seed: int = 0
    noise_sigma: float = 0.0  # Gaussian pixel noise, grey levels
    blur_sigma: float = 0.0  # Gaussian blur, px
    distortion: tuple[float, ...] = ()  # plumb_bob k1 k2 p1 p2 k3; empty = none
    speed_m_s: float = 0.25  # camera speed when cruising
    texture_px_per_m: float = 250.0
    path: str = "arc"  # "arc" or "loop"
    ramp_s: float = 0.0  # smooth start from rest over this long
    stops: int = 0  # halts of stop_s seconds
    stop_s: float = 1.0
    rotations: int = 0  # turns on the spot of rotation_s seconds
    rotation_s: float = 1.5
    rotation_deg: float = 25.0
    stereo_baseline_m: float = 0.0  # > 0: render a rectified right camera this far along +x (stereo frames)
    rolling_shutter_s: float = 0.0  # > 0: rows exposed top to bottom over this long (readout time); 0: global
    pixel_samples: int = 1  # each pixel the mean of this many x this many samples over its area; 1: its centre
    movers: int = 0  # people-sized panels walking across the scene (moving objects; not in the ground truth)
    mover_speed_m_s: float = 1.2

    def __post_init__(self) -> None:
        if self.path not in ("arc", "loop"):
            raise ValueError(f"unknown synthetic path {self.path!r}: arc or loop")
        if self.frames < 1 or self.rate_hz <= 0 or self.speed_m_s < 0:
            raise ValueError("frames >= 1, rate > 0 and speed >= 0 are required")
        if self.stereo_baseline_m < 0:
            raise ValueError(f"stereo baseline must be >= 0 m, got {self.stereo_baseline_m}")
        if self.rolling_shutter_s < 0 or self.rolling_shutter_s >= 1.0 / self.rate_hz:
            raise ValueError(f"rolling shutter readout must be in [0, frame period), got {self.rolling_shutter_s} s")
        if self.pixel_samples < 1:
            raise ValueError(f"pixel_samples must be >= 1, got {self.pixel_samples}")
        if self.movers < 0 or self.mover_speed_m_s < 0:
            raise ValueError(f"movers >= 0 and mover speed >= 0 are required, got {self.movers}, {self.mover_speed_m_s}")
        if self.stereo_baseline_m > 0 and any(self.distortion):
            raise ValueError("a stereo pair is rendered rectified: no lens distortion with a stereo baseline")


@dataclass(frozen=True)
class Face:
    """A textured rectangle: corner ``origin``, edge vectors ``u`` and ``v`` (metres), texture (H,W,3) uint8
    spanning it (texture x along u, y along v)."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: np.ndarray = field(repr=False)


def make_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base = rng.uniform(40, 215, (max(height // 40, 2), max(width // 40, 2), 3)).astype(np.float32)
    texture = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.uniform(-30, 30, (height, width)).astype(np.float32), (0, 0), 1.5)[:, :, None]
    texture = np.clip(texture + fine, 0, 255).astype(np.uint8)
    for _ in range(width * height // 2500):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        kind = rng.integers(0, 3)
        size = int(rng.integers(4, 24))
        if kind == 0:
            cv2.circle(texture, (x, y), size, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(texture, (x, y), (x + size, y + int(rng.integers(4, 24))), colour, -1)
        else:
            cv2.line(texture, (x, y), (x + int(rng.integers(-30, 30)), y + int(rng.integers(-30, 30))), colour, 2, cv2.LINE_AA)
    return texture


def make_scene(rng: np.random.Generator, px_per_m: float) -> list[Face]:
    def face(origin, u, v) -> Face:
        origin, u, v = (np.asarray(a, float) for a in (origin, u, v))
        size = (max(int(np.linalg.norm(u) * px_per_m), 8), max(int(np.linalg.norm(v) * px_per_m), 8))
        return Face(origin, u, v, make_texture(rng, *size))

    faces = [
        face([-3, -2.5, 4.5], [6, 0, 0], [0, 4, 0]),  # back wall, z = 4.5
        face([-3, 1.5, -0.5], [6, 0, 0], [0, 0, 5]),  # floor, y = 1.5 (y down)
        face([-2.0, -2.5, -0.5], [0, 0, 5], [0, 4, 0]),  # left wall, x = -2
    ]
    for cx, cz, w, h, d in ((-0.7, 2.4, 0.7, 1.0, 0.5), (0.8, 3.2, 0.9, 1.6, 0.7), (0.2, 1.9, 0.4, 0.5, 0.4)):
        top = 1.5 - h
        faces.append(face([cx - w / 2, top, cz - d / 2], [w, 0, 0], [0, h, 0]))  # front
        faces.append(face([cx - w / 2, top, cz - d / 2], [0, 0, d], [0, h, 0]))  # left side
        faces.append(face([cx + w / 2, top, cz - d / 2], [0, 0, d], [0, h, 0]))  # right side
        faces.append(face([cx - w / 2, top, cz - d / 2], [w, 0, 0], [0, 0, d]))  # top
    return faces


@dataclass(frozen=True)
class Mover:
    """A panel ``width`` x ``height`` m standing on the floor at depth ``z`` (world frame), its centre walking to
    and fro along x over [-``reach``, ``reach``] at ``speed`` m/s, at ``phase`` m along that walk at time 0."""

    z: float
    phase: float
    speed: float
    texture: np.ndarray = field(repr=False)
    width: float = 0.5
    height: float = 1.7
    reach: float = 1.8

    def face_at(self, time: float) -> Face:
        """The panel at ``time`` (s from the first frame) as a ``Face`` (facing -z, towards the camera)."""
        walk = (self.phase + self.speed * time) % (4 * self.reach)  # a triangle wave: out and back
        x = -self.reach + (walk if walk <= 2 * self.reach else 4 * self.reach - walk)
        return Face(np.array([x - self.width / 2, 1.5 - self.height, self.z]), np.array([self.width, 0.0, 0.0]),
                    np.array([0.0, self.height, 0.0]), self.texture)


def make_movers(config: SynthConfig) -> list[Mover]:
    """``config.movers`` walkers, from their own random stream: the first at 1.4 m (in front of the boxes), the
    second at 4.0 m (behind them), the third at 2.7 m (between them), then again 0.1 m further each round."""
    rng = np.random.default_rng([config.seed, 7])
    return [Mover((1.4, 4.0, 2.7)[k % 3] + 0.1 * (k // 3), float(rng.uniform(0, 7.2)), config.mover_speed_m_s,
                  make_texture(rng, int(0.5 * config.texture_px_per_m), int(1.7 * config.texture_px_per_m)))
            for k in range(config.movers)]


def _smooth_step(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def motion_profile(config: SynthConfig, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance travelled along the path (m), extra yaw of turns on the spot (rad)) at ``times`` (s from start)."""
    duration = config.frames / config.rate_hz
    kinds = []  # alternating while both remain: stop, rotation, stop, ...
    for k in range(max(config.stops, config.rotations)):
        kinds += (["stop"] if k < config.stops else []) + (["rotation"] if k < config.rotations else [])
    fine = np.linspace(0.0, duration, max(int(duration * 1000), 2))
    gain = _smooth_step(fine / config.ramp_s) if config.ramp_s > 0 else np.ones_like(fine)
    yaw = np.zeros_like(fine)
    for k, kind in enumerate(kinds):
        length = config.stop_s if kind == "stop" else config.rotation_s
        start = duration * (k + 1) / (len(kinds) + 1) - length / 2
        end = start + length
        gain *= 1 - _smooth_step((fine - (start - 0.5)) / 0.5) * (1 - _smooth_step((fine - end) / 0.5))
        if kind == "rotation":
            inside = (fine >= start) & (fine <= end)
            yaw[inside] = np.deg2rad(config.rotation_deg) * np.sin(2 * np.pi * (fine[inside] - start) / length)
    distance = np.concatenate([[0.0], np.cumsum(np.diff(fine) * config.speed_m_s * 0.5 * (gain[1:] + gain[:-1]))])
    return np.interp(times, fine, distance), np.interp(times, fine, yaw)


def camera_path(config: SynthConfig, times: np.ndarray | None = None) -> np.ndarray:
    """(N,4,4) T_world_camera, looking into the scene (see the module docstring), at the frames' times or at
    ``times`` (s from the first frame; the path is continuous)."""
    n = config.frames
    times = np.arange(n) / config.rate_hz if times is None else np.atleast_1d(np.asarray(times, float))
    if config.path == "arc" and not (config.ramp_s or config.stops or config.rotations):
        distance = config.speed_m_s * times * n / max(n - 1, 1)  # the original arc: s from 0 to 1 exactly
        extra_yaw = np.zeros(len(times))
    else:
        distance, extra_yaw = motion_profile(config, times)
    if config.path == "arc":
        length = config.speed_m_s * n / config.rate_hz
        s = distance / length if length > 0 else np.zeros(len(times))
        angle = s * np.pi
        positions = np.column_stack([
            0.45 * length * np.sin(angle) - 0.2 * length * s,
            -0.08 * length * np.sin(2 * angle),
            0.5 * length * s,
        ])
        euler = np.column_stack([0.12 * np.sin(2 * angle), -0.15 * np.sin(angle + 0.3), 0.05 * np.sin(3 * angle)])
    else:
        theta_table = np.linspace(0, 2 * np.pi, 4001)
        ellipse = np.column_stack([0.8 * np.sin(theta_table), 0.6 - 0.6 * np.cos(theta_table)])
        arc_length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ellipse, axis=0), axis=1))])
        theta = np.interp(distance % arc_length[-1], arc_length, theta_table) + 2 * np.pi * (distance // arc_length[-1])
        positions = np.column_stack([0.8 * np.sin(theta), 0.05 * np.sin(3 * theta), -0.3 + 0.6 - 0.6 * np.cos(theta)])
        euler = np.column_stack([0.2 * np.sin(theta), -0.06 * np.sin(2 * theta + 0.3), 0.03 * np.sin(3 * theta)])
    euler[:, 0] += extra_yaw
    rotations = Rotation.from_euler("yxz", euler).as_matrix()
    return np.array([make_transform(R, p) for R, p in zip(rotations, positions)])


def _bilinear(texture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Texture (H,W,3) sampled at float pixel positions, bilinear."""
    h, w = texture.shape[:2]
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    def at(rows, cols):
        return texture[rows, cols].astype(np.float32)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


class SyntheticSequence(Sequence):
    """Frames rendered on demand (deterministic for a config); ground truth and camera are exact."""

    def __init__(self, config: SynthConfig | None = None) -> None:
        self.config = config or SynthConfig()
        cfg = self.config
        self.name = f"synth-seed{cfg.seed}"
        f = 0.8 * cfg.width
        self.camera = CameraModel(cfg.width, cfg.height, f, f, (cfg.width - 1) / 2, (cfg.height - 1) / 2,
                                  "plumb_bob", tuple(cfg.distortion))
        self.faces = make_scene(np.random.default_rng(cfg.seed), cfg.texture_px_per_m)
        self.movers = make_movers(cfg)
        self.stamps = 1000.0 + np.arange(cfg.frames) / cfg.rate_hz
        self.groundtruth = Trajectory(self.stamps, camera_path(cfg))
        self.stereo = None
        if cfg.stereo_baseline_m > 0:
            from aliked_ros.geometry.stereo import StereoCamera

            self.stereo = StereoCamera(self.camera, cfg.stereo_baseline_m)
        self.has_stereo = self.stereo is not None
        self.has_depth = not self.has_stereo
        n = cfg.pixel_samples
        self._samples_size = (cfg.width * n, cfg.height * n)  # the sample grid, (width, height)
        cols, rows = np.meshgrid(np.arange(cfg.width * n, dtype=float), np.arange(cfg.height * n, dtype=float))
        if n > 1:  # sample (u, v) lies at image pixel ((u + 0.5) / n - 0.5, (v + 0.5) / n - 0.5)
            cols, rows = (cols + 0.5) / n - 0.5, (rows + 0.5) / n - 0.5
        # image pixel -> sample grid (a homography's last step)
        self._to_samples = np.array([[n, 0.0, (n - 1) / 2], [0.0, n, (n - 1) / 2], [0.0, 0.0, 1.0]])
        normalized = self.camera.undistort(np.column_stack([cols.ravel(), rows.ravel()]))
        self._rays = np.column_stack([normalized, np.ones(len(normalized))])  # camera frame, z = 1
        self._rays_t = np.ascontiguousarray(self._rays.T)
        # textures with an opaque alpha channel: warped alpha >= 128 marks the pixels inside a face
        self._rgba = [np.dstack([f.texture, np.full(f.texture.shape[:2], 255, np.uint8)])
                      for f in [*self.faces, *self.movers]]

    def __len__(self) -> int:
        return self.config.frames

    def render(self, index: int, right: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 (H,W,3), depth float32 metres (H,W), NaN where nothing is hit) of frame ``index``; ``right``:
        seen by the right camera of the stereo pair (its own noise)."""
        cfg = self.config
        T = self.groundtruth.poses[index]
        offset = make_transform(np.eye(3), np.array([cfg.stereo_baseline_m, 0.0, 0.0]))
        if right:
            T = T @ offset
        n = cfg.pixel_samples
        sample_width, sample_height = self._samples_size
        if cfg.rolling_shutter_s > 0:
            band = 8 * n  # sample rows: 8 image rows
            starts = np.arange(0, sample_height, band)
            # each band at its centre row's time (in image rows)
            middle = np.minimum((starts + band / 2) / n - 0.5, cfg.height - 1)
            times = index / cfg.rate_hz + (middle / (cfg.height - 1) - 0.5) * cfg.rolling_shutter_s
            poses = camera_path(cfg, times) @ (offset if right else np.eye(4))
            colour, depth = zip(*(self._render_rows(pose, row, min(row + band, sample_height), time)
                                  for pose, row, time in zip(poses, starts, times)))
            colour, depth = np.concatenate(colour), np.concatenate(depth)
        else:
            colour, depth = self._render_rows(T, 0, sample_height, index / cfg.rate_hz)
        image = colour.reshape(sample_height, sample_width, 3)
        if n > 1:  # each pixel the mean of its samples; depth where they agree
            image = cv2.resize(image, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
            blocks = depth.reshape(cfg.height, n, cfg.width, n)
            with np.errstate(invalid="ignore"):
                mean, low, high = blocks.mean(axis=(1, 3)), blocks.min(axis=(1, 3)), blocks.max(axis=(1, 3))
                depth = np.where(high - low <= 0.01 * mean, mean, np.inf)
        rng = np.random.default_rng([cfg.seed, index, 1] if right else cfg.seed * 100003 + index)
        if cfg.blur_sigma > 0:
            image = cv2.GaussianBlur(image, (0, 0), cfg.blur_sigma)
        if cfg.noise_sigma > 0:
            image = image + rng.normal(0, cfg.noise_sigma, image.shape).astype(np.float32)
        depth = depth.reshape(cfg.height, cfg.width).astype(np.float32)
        depth[~np.isfinite(depth)] = np.nan
        return np.clip(np.round(image), 0, 255).astype(np.uint8), depth

    def _render_rows(self, T: np.ndarray, row0: int, row1: int, time: float) -> tuple[np.ndarray, np.ndarray]:
        """(colour (P,3) float32, depth (P,) with inf where nothing is hit) of sample rows [row0, row1) (image
        rows with one sample per pixel) seen from the camera pose ``T`` (T_world_camera) at ``time`` (s from the
        first frame: where the movers are)."""
        faces = [*self.faces, *(mover.face_at(time) for mover in self.movers)]
        width = self._samples_size[0]
        rays = self._rays[row0 * width:row1 * width]
        rays_t = self._rays_t[:, row0 * width:row1 * width]
        R, centre = T[:3, :3], T[:3, 3]
        depth = np.full(len(rays), np.inf)
        colour = np.zeros((len(rays), 3), np.float32)
        R_cw, t_cw = R.T, -R.T @ centre
        normals = np.array([np.cross(face.u, face.v) for face in faces])
        offsets = np.einsum("fi,fi->f", np.array([face.origin for face in faces]) - centre, normals)
        with np.errstate(divide="ignore", invalid="ignore"):
            # n . (R ray) = (R' n) . ray: the normals turn into the camera frame, not the rays into the world
            depths = offsets[:, None] / ((normals @ R) @ rays_t)  # (faces, pixels): ray parameter = camera z
        for face, rgba, z in zip(faces, self._rgba, depths):
            hit = np.isfinite(z) & (z > 0.05) & (z < depth)
            if not hit.any():
                continue
            if not self.camera.is_distorted:  # texture pixel (x, y, 1) -> image pixel: a homography
                th, tw = face.texture.shape[:2]
                H = self.camera.K @ np.column_stack([R_cw @ face.u / (tw - 1), R_cw @ face.v / (th - 1),
                                                     R_cw @ face.origin + t_cw])
                if self.config.pixel_samples > 1:
                    H = self._to_samples @ H
                H = np.array([[1.0, 0, 0], [0, 1, -row0], [0, 0, 1]]) @ H  # rows from row0 on
                warped = cv2.warpPerspective(rgba, H, (width, row1 - row0), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(-1, 4)
                idx = np.flatnonzero(hit & (warped[:, 3] >= 128))
                colour[idx] = warped[idx, :3]
                depth[idx] = z[idx]
                continue
            points = centre + (rays[hit] @ R.T) * z[hit, None] - face.origin
            a = points @ face.u / (face.u @ face.u)
            b = points @ face.v / (face.v @ face.v)
            inside = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
            idx = np.flatnonzero(hit)[inside]
            th, tw = face.texture.shape[:2]
            colour[idx] = _bilinear(face.texture, a[inside] * (tw - 1), b[inside] * (th - 1))
            depth[idx] = z[idx]
        return colour, depth

    def __iter__(self) -> Iterator[Frame]:
        for index, stamp in enumerate(self.stamps):
            image, depth = self.render(index)
            if self.stereo is not None:
                yield Frame(image=image, stamp=float(stamp), camera=self.camera, right_image=self.render(index, True)[0],
                            stereo=self.stereo)
            else:
                yield Frame(image=image, stamp=float(stamp), camera=self.camera, depth=depth)
