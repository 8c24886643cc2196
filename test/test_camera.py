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


def test_binning_and_region_of_interest_describe_the_published_image(shared_dir):
    """REP 104: K and D are given on the full-resolution sensor; a driver that bins and crops publishes smaller
    images. A pixel of the binned, cropped image has the same ray as the full-resolution pixel it covers, with
    fr1's real distortion (image_geometry's convention: u_full = 2 u + x_offset)."""
    full = CameraModel.from_yaml(shared_dir / "data/tum_fr1_rpy_rgbd/camera_info.yaml")
    assert full.is_distorted
    info = {"width": 640, "height": 480, "k": full.K.reshape(-1).tolist(), "d": list(full.distortion),
            "distortion_model": full.distortion_model, "binning_x": 2, "binning_y": 2,
            "roi": {"x_offset": 100, "y_offset": 60, "width": 400, "height": 300}}
    binned = CameraModel.from_camera_info(info)
    assert (binned.width, binned.height) == (200, 150)
    pixels = np.random.default_rng(0).uniform([0, 0], [200, 150], (50, 2))
    np.testing.assert_allclose(binned.undistort(pixels), full.undistort(2 * pixels + [100, 60]), atol=1e-9)
    unbinned = CameraModel.from_camera_info({**info, "binning_x": 0, "binning_y": 0,
                                             "roi": {"x_offset": 0, "y_offset": 0, "width": 0, "height": 0}})
    assert unbinned == full  # 0 = no binning, an all-zero ROI = the whole sensor


def test_rectified_images_take_the_projection_matrix():
    """image_rect: its intrinsics are P's and it has no distortion (K and D describe the raw image); a message
    without P cannot describe a rectified image."""
    info = {"width": 640, "height": 480, "k": [520.0, 0, 320.0, 0, 521.0, 240.0, 0, 0, 1],
            "d": [0.2, -0.5, 0.001, 0.002, 0.4], "distortion_model": "plumb_bob",
            "p": [500.0, 0, 318.0, 0, 0, 500.0, 242.0, 0, 0, 0, 1, 0]}
    raw, rectified = CameraModel.from_camera_info(info), CameraModel.from_camera_info(info, rectified=True)
    assert raw.is_distorted and (raw.fx, raw.cx) == (520.0, 320.0)
    assert not rectified.is_distorted and (rectified.fx, rectified.fy, rectified.cx, rectified.cy) == (500, 500, 318, 242)
    with pytest.raises(CalibrationError, match="p must have 12 elements"):
        CameraModel.from_camera_info({**info, "p": []}, rectified=True)


def test_camera_info_messages_with_binning_roi_and_rectification():
    """The node's path: sensor_msgs/CameraInfo messages (fields as attributes, roi a RegionOfInterest) through
    its CameraCache, raw and rectified."""
    from sensor_msgs.msg import CameraInfo

    from aliked_ros.ros.decoding import CameraCache

    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", d=[0.1, -0.2, 0.0, 0.0, 0.0],
                      k=[520.0, 0, 320.0, 0, 521.0, 240.0, 0, 0, 1], p=[500.0, 0, 318.0, 0, 0, 500.0, 242.0, 0, 0, 0, 1, 0],
                      binning_x=2, binning_y=2)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 40, 20, 600, 400
    raw = CameraCache().model(info)
    assert (raw.width, raw.height, raw.fx, raw.cx, raw.cy) == (300, 200, 260.0, 140.0, 110.0) and raw.is_distorted
    rectified = CameraCache(rectified=True).model(info)
    assert (rectified.fx, rectified.cx, rectified.cy) == (250.0, 139.0, 111.0) and not rectified.is_distorted


def test_pixels_a_fisheye_model_cannot_undistort_are_nan_and_the_pipeline_drops_them(extractor_cache):
    """OpenCV's fisheye model answers -1e6 for a pixel beyond its 90 degrees (a strongly negative k1 reaches them
    inside the image): NaN here, and such keypoints have no ray, so the pipeline leaves them out (they were
    landmarks at ~1e6 x their depth, and NaN rays poisoned the pose refinement)."""
    from aliked_ros.odometry import Frame, VisualOdometry
    from aliked_ros.synth import SynthConfig, SyntheticSequence

    fisheye = CameraModel(320, 240, 150.0, 150.0, 160.0, 120.0, "equidistant", (-0.3, 0.0, 0.0, 0.0))
    corners = np.array([[0.0, 0.0], [319.0, 239.0], [160.0, 120.0], [200.0, 130.0]])
    normalized = fisheye.undistort(corners)
    assert np.isnan(normalized[:2]).all() and np.isfinite(normalized[2:]).all()
    assert np.allclose(normalized[2], 0.0)
    sequence = SyntheticSequence(SynthConfig(frames=12, rate_hz=15.0, width=320, height=240))
    vo = VisualOdometry(extractor_cache("orb"))
    results = [vo.process(Frame(frame.image, frame.stamp, fisheye, depth=frame.depth)) for frame in sequence]
    kept = [len(r.features) for r in results]
    raw = [len(extractor_cache("orb").extract(frame.image)) for frame in sequence]
    assert all(k < n for k, n in zip(kept, raw)), (kept, raw)  # the image's outer ring has no ray
    assert all(np.isfinite(r.normalized).all() for r in results)
    assert all(r.T_odom_camera is None or np.isfinite(r.T_odom_camera).all() for r in results)
    assert sum(r.T_odom_camera is not None for r in results) >= 10
    # finite points, none at the sentinel's -1e6 x their depth (2-5 m here; rays near the model's 90 degrees are
    # legitimately far: up to UNDISTORTABLE x depth)
    _, positions, _ = vo.map.landmarks()
    assert len(positions) and np.isfinite(positions).all() and np.abs(positions).max() < 1e6
