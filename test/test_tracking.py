"""Track alignment to a reference image (``aliked_ros.tracking.align_to_reference``) on a real frame."""
import cv2
import numpy as np

from aliked_ros.tracking import align_to_reference, grey_image


def _shifted_pair(shared_dir, shift):
    path = sorted((shared_dir / "data" / "tum_fr2_desk" / "rgb").glob("*.png"))[0]
    reference = grey_image(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    moved = cv2.warpAffine(reference, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]),
                           reference.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    corners = cv2.goodFeaturesToTrack(reference, 300, 0.01, 8, blockSize=5).reshape(-1, 2)
    inside = ((corners > 20) & (corners < np.array(reference.shape[::-1]) - 20)).all(axis=1)
    return reference, moved, corners[inside].astype(np.float32)


def test_alignment_finds_a_subpixel_shift_that_detections_miss(shared_dir):
    shift = np.array([0.37, -0.61])
    reference, moved, points = _shifted_pair(shared_dir, shift)
    truth = points + shift
    rng = np.random.default_rng(0)
    detected = (truth + rng.normal(0, 0.4, truth.shape)).astype(np.float32)  # a detector's per-image error
    pixels, aligned = align_to_reference(reference, points, moved, detected, max_shift_px=1.5)
    assert pixels.dtype == np.float32 and pixels.shape == detected.shape
    assert aligned.mean() > 0.95
    error = np.linalg.norm(pixels[aligned] - truth[aligned], axis=1)
    detected_error = np.linalg.norm(detected[aligned] - truth[aligned], axis=1)
    assert np.median(error) < 0.05 < 0.3 < np.median(detected_error)


def test_alignment_beyond_the_bound_keeps_the_detection(shared_dir):
    """A patch that aligns farther from the detection than ``max_shift_px`` (another corner, a wrong match) leaves
    the detection as it was; so do points without a detection to start from (empty input)."""
    reference, moved, points = _shifted_pair(shared_dir, (0.0, 0.0))
    detected = points + np.float32([2.5, 0.0])  # the true position is 2.5 px away
    pixels, aligned = align_to_reference(reference, points, moved, detected, max_shift_px=1.0)
    converged_far = ~aligned
    assert converged_far.mean() > 0.9
    assert np.array_equal(pixels[converged_far], detected[converged_far])
    empty, none = align_to_reference(reference, points[:0], moved, detected[:0], max_shift_px=1.0)
    assert empty.shape == (0, 2) and none.shape == (0,)
