"""Camera models: calibration parsing and validation, undistortion round trips for each distortion model."""
import numpy as np
import pytest

from aliked_ros.geometry.camera import CalibrationError, CameraModel

GRID = np.stack(np.meshgrid(np.linspace(20, 620, 7), np.linspace(20, 460, 5)), axis=-1).reshape(-1, 2)


def test_tum_yaml_round_trip(shared_dir):
    camera = CameraModel.from_yaml(shared_dir / "data/tum_fr2_desk/camera_info.yaml")
    assert (camera.width, camera.height, camera.fx, camera.cy) == (640, 480, 520.9, 249.7)
    assert camera.distortion_model == "plumb_bob" and len(camera.distortion) == 5
    normalized = camera.undistort(GRID)
    np.testing.assert_allclose(camera.project(np.column_stack([normalized, np.ones(len(GRID))])), GRID, atol=1e-6)


@pytest.mark.parametrize("model,coefficients", [
    ("rational_polynomial", (0.1, -0.05, 0.001, -0.001, 0.01, 0.05, -0.02, 0.005)),
    ("equidistant", (-0.01, 0.02, -0.005, 0.001)),
    ("plumb_bob", ()),
])
def test_other_models_round_trip(model, coefficients):
    camera = CameraModel.from_camera_info({"width": 640, "height": 480, "k": [500, 0, 320, 0, 505, 240, 0, 0, 1],
                                           "d": list(coefficients), "distortion_model": model})
    normalized = camera.undistort(GRID)
    np.testing.assert_allclose(camera.project(np.column_stack([normalized, np.ones(len(GRID))])), GRID, atol=1e-4)


@pytest.mark.parametrize("info,message", [
    ({"width": 640, "height": 480, "k": [0] * 9, "d": []}, "K all zero"),
    ({"width": 640, "height": 480, "k": [500, 0, 320, 0, float("nan"), 240, 0, 0, 1], "d": []}, "NaN"),
    ({"width": 0, "height": 480, "k": [500, 0, 320, 0, 500, 240, 0, 0, 1], "d": []}, "image size"),
    ({"width": 640, "height": 480, "k": [500, 0, 320, 0, 500, 240], "d": []}, "9 elements"),
    ({"width": 640, "height": 480, "k": [500, 0, 320, 0, 500, 240, 0, 0, 1], "d": [0.1, 0.2, 0.3],
      "distortion_model": "plumb_bob"}, "coefficients"),
    ({"width": 640, "height": 480, "k": [500, 0, 320, 0, 500, 240, 0, 0, 1], "d": [],
      "distortion_model": "unified"}, "unsupported distortion model"),
])
def test_invalid_calibration(info, message):
    with pytest.raises(CalibrationError, match=message):
        CameraModel.from_camera_info(info)


def test_size_mismatch_and_bad_yaml(tmp_path, shared_dir):
    camera = CameraModel.from_yaml(shared_dir / "data/tum_fr2_desk/camera_info.yaml")
    with pytest.raises(CalibrationError, match="752x480 px but the camera calibration is for 640x480"):
        camera.check_image_size(752, 480)
    bad = tmp_path / "camera_info.yaml"
    bad.write_text("image_width: 640\n")
    with pytest.raises(CalibrationError, match="cannot read camera_info YAML"):
        CameraModel.from_yaml(bad)


def test_equidistant_with_zero_coefficients_is_still_a_fisheye():
    """r = f * theta, not f * tan(theta): a ray 45 deg off axis lands at f * pi/4 from the centre, and undistorting
    that pixel gives back tan(45 deg) = 1, not pi/4."""
    camera = CameraModel(640, 480, 300.0, 300.0, 320.0, 240.0, "equidistant", (0.0, 0.0, 0.0, 0.0))
    assert camera.is_distorted
    pixel = np.array([[320.0 + 300.0 * np.pi / 4, 240.0]])
    assert np.allclose(camera.undistort(pixel), [[1.0, 0.0]], atol=1e-6)
    assert np.allclose(camera.project(np.array([[1.0, 0.0, 1.0]])), pixel, atol=1e-6)
    fisheye = CameraModel.from_camera_info({"width": 640, "height": 480, "k": [300, 0, 320, 0, 300, 240, 0, 0, 1],
                                            "d": [0, 0, 0, 0], "distortion_model": "equidistant"})
    assert fisheye.is_distorted and np.allclose(fisheye.undistort(pixel), [[1.0, 0.0]], atol=1e-6)
