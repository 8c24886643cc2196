"""Camera models: pinhole intrinsics with plumb_bob / rational_polynomial (OpenCV radtan) or equidistant (fisheye)
distortion, built from a ``sensor_msgs/CameraInfo``-shaped description or a ROS camera_info YAML file.

Pixels: (x, y) = (column, row), centre of the top-left pixel at (0, 0). Normalised coordinates: undistorted
(X/Z, Y/Z) in the camera optical frame.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from aliked_ros.errors import AlikedRosError

UNDISTORTABLE = 1e5  # |normalised coordinate| at or beyond this: not a direction (OpenCV's -1e6 sentinel)

DISTORTION_MODELS = {"plumb_bob": (4, 5), "rational_polynomial": (8, 8, 12, 14), "equidistant": (4, 4)}
ALIASES = {"radtan": "plumb_bob", "radial-tangential": "plumb_bob", "fisheye": "equidistant",
           "none": "plumb_bob", "": "plumb_bob"}


class CalibrationError(AlikedRosError):
    """Camera calibration missing, malformed or inconsistent with the images."""


@dataclass(frozen=True)
class CameraModel:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        values = np.array([self.fx, self.fy, self.cx, self.cy, *self.distortion], dtype=float)
        if not np.all(np.isfinite(values)):
            raise CalibrationError(f"camera intrinsics/distortion contain NaN or inf: {values.tolist()}")
        if self.fx <= 0 or self.fy <= 0:
            raise CalibrationError(f"focal lengths must be positive (K all zero = uncalibrated camera), got fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(f"image size must be positive, got {self.width}x{self.height}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise CalibrationError(f"unsupported distortion model {self.distortion_model!r}; supported: {', '.join(DISTORTION_MODELS)}")
        if self.distortion and len(self.distortion) not in DISTORTION_MODELS[self.distortion_model]:
            raise CalibrationError(f"{self.distortion_model} takes {DISTORTION_MODELS[self.distortion_model]} coefficients, got {len(self.distortion)}")

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    @property
    def is_distorted(self) -> bool:
        """False only for a pinhole without distortion. An equidistant (fisheye) lens is distorted even with all
        coefficients zero: its image radius is f * theta, not f * tan(theta)."""
        return self.distortion_model == "equidistant" or any(c != 0 for c in self.distortion)

    @property
    def focal(self) -> float:
        """Mean focal length in px (converts pixel thresholds to normalised units)."""
        return 0.5 * (self.fx + self.fy)

    @classmethod
    def from_camera_info(cls, info, rectified: bool = False) -> "CameraModel":
        """From a sensor_msgs/CameraInfo message or a mapping with its fields (width, height, k, d, distortion_model;
        p, binning_x, binning_y, roi where present): the model of the image as published.

        ``rectified``: the image is the rectified one (image_proc's ``image_rect``): the intrinsics are P's, without
        distortion (K and D describe the raw image). Binning and a region of interest (REP 104: both given on the
        full-resolution sensor, the ROI applied first) are applied as image_geometry does: fx / binning,
        (cx - roi.x_offset) / binning, the image roi.width / binning wide (all-zero ROI: the whole sensor)."""
        def get(key: str, default=None, source=info):
            for name in (key, key.upper()):  # ROS 2 (k, d) and ROS 1 (K, D) field names
                value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
                if value is not None:
                    return value
            return default

        def matrix(key: str, size: int, purpose: str = "") -> np.ndarray:
            try:
                values = np.asarray(get(key, []), dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise CalibrationError(f"camera_info {key} is not numeric") from None
            if values.size != size:
                raise CalibrationError(f"camera_info {key} must have {size} elements{purpose}, got {values.size}")
            return values

        k = matrix("k", 9)
        model = ALIASES.get(str(get("distortion_model", "")).strip(), str(get("distortion_model", "")).strip())
        d = [float(x) for x in np.asarray(get("d", []), dtype=float).reshape(-1)]
        if model != "equidistant" and d and not any(d):
            d = []
        fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
        if rectified:
            p = matrix("p", 12, " for a rectified image")
            fx, fy, cx, cy, model, d = float(p[0]), float(p[5]), float(p[2]), float(p[6]), "plumb_bob", []
        width, height = int(get("width", 0)), int(get("height", 0))
        roi = get("roi")
        if roi is not None and int(get("width", 0, roi) or 0) > 0 and int(get("height", 0, roi) or 0) > 0:
            x0, y0 = int(get("x_offset", 0, roi) or 0), int(get("y_offset", 0, roi) or 0)
            width, height, cx, cy = int(get("width", 0, roi)), int(get("height", 0, roi)), cx - x0, cy - y0
        bx, by = max(int(get("binning_x", 0) or 0), 1), max(int(get("binning_y", 0) or 0), 1)
        fx, cx, width = fx / bx, cx / bx, width // bx
        fy, cy, height = fy / by, cy / by, height // by
        return cls(width, height, fx, fy, cx, cy, model, tuple(d))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "CameraModel":
        """From a ROS camera_info YAML file (camera_calibration_parsers format)."""
        try:
            data = yaml.safe_load(Path(path).read_text())
            return cls.from_camera_info({
                "width": data["image_width"], "height": data["image_height"], "k": data["camera_matrix"]["data"],
                "d": data.get("distortion_coefficients", {}).get("data", []),
                "distortion_model": data.get("distortion_model", "plumb_bob"),
            })
        except CalibrationError as error:
            raise CalibrationError(f"{path}: {error}") from None
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
            raise CalibrationError(f"cannot read camera_info YAML {path}: {error!r}") from None

    def to_yaml(self, path: str | Path, camera_name: str = "camera") -> None:
        """Write a ROS camera_info YAML (camera_calibration_parsers format) that ``from_yaml`` reads back."""
        K = self.K.reshape(-1).tolist()
        data = {
            "image_width": self.width, "image_height": self.height, "camera_name": camera_name,
            "camera_matrix": {"rows": 3, "cols": 3, "data": K},
            "distortion_model": self.distortion_model,
            "distortion_coefficients": {"rows": 1, "cols": len(self.distortion), "data": list(self.distortion)},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).reshape(-1).tolist()},
            "projection_matrix": {"rows": 3, "cols": 4, "data": np.hstack([self.K, np.zeros((3, 1))]).reshape(-1).tolist()},
        }
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False))

    def check_image_size(self, width: int, height: int) -> None:
        if (width, height) != (self.width, self.height):
            raise CalibrationError(f"image is {width}x{height} px but the camera calibration is for {self.width}x{self.height}")

    def undistort(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (N,2) of the raw image -> undistorted normalised coordinates (N,2) float64; NaN rows where the
        model cannot undistort a pixel (OpenCV's fisheye model answers -1e6 there: beyond 90 degrees of its
        angle)."""
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        if len(pixels) == 0:
            return np.zeros((0, 2))
        if not self.is_distorted:
            return ((pixels.reshape(-1, 2) - [self.cx, self.cy]) / [self.fx, self.fy])
        d = np.asarray(self.distortion, dtype=np.float64)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(pixels, self.K, d if d.size == 4 else np.zeros(4))
        else:
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
            out = cv2.undistortPoints(pixels, self.K, d, R=None, P=None, criteria=criteria)
        out = out.reshape(-1, 2).astype(np.float64)
        out[~(np.abs(out) < UNDISTORTABLE).all(axis=1)] = np.nan
        return out

    def project(self, points: np.ndarray) -> np.ndarray:
        """3-D points (N,3) in the optical frame (Z > 0) -> distorted pixels (N,2)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
        d = np.asarray(self.distortion or [0.0] * 4, dtype=np.float64)
        zero = np.zeros(3)
        if self.distortion_model == "equidistant":
            return cv2.fisheye.projectPoints(points, zero, zero, self.K, d)[0].reshape(-1, 2)
        return cv2.projectPoints(points, zero, zero, self.K, d)[0].reshape(-1, 2)
