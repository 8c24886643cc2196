"""Decoding sensor_msgs/Image data (every supported encoding, row padding, big-endian), and the stamp
synchroniser that pairs images with depth."""
import cv2
import numpy as np
import pytest

from aliked_ros.image_encoding import EncodingError, SixteenBitScale, decode_compressed, decode_depth, decode_image
from aliked_ros.ros.sync import StampSynchronizer

RGB = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)


def padded(pixels: np.ndarray, pad: int = 7) -> tuple[bytes, int]:
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    step = rows.shape[1] + pad
    out = np.zeros((rows.shape[0], step), np.uint8)
    out[:, : rows.shape[1]] = rows
    return out.tobytes(), step


@pytest.mark.parametrize("encoding,pixels,expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[:, :, ::-1].copy(), RGB),
    ("rgba8", np.dstack([RGB, np.full((6, 5), 9, np.uint8)]), RGB),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full((6, 5), 9, np.uint8)]), RGB),
    ("mono8", RGB[:, :, 0].copy(), RGB[:, :, 0]),
    ("mono16", RGB[:, :, 0].astype(np.uint16) * 256 + 7, RGB[:, :, 0]),
])
def test_decode_every_encoding_with_row_padding(encoding, pixels, expected):
    data, step = padded(pixels)
    np.testing.assert_array_equal(decode_image(encoding, 6, 5, step, data), expected)


@pytest.mark.parametrize("encoding, pattern", [("bayer_rggb8", "RGGB"), ("bayer_bggr8", "BGGR"),
                                               ("bayer_gbrg8", "GBRG"), ("bayer_grbg8", "GRBG")])
def test_bayer_mosaics_are_demosaiced_in_their_own_pattern(encoding, pattern):
    """A raw camera (Spinnaker, Arena): a flat colour mosaicked by the pattern the encoding names (its top-left
    2x2 block) comes back as that colour, with row padding."""
    colour = np.array([200, 120, 40], np.uint8)  # R, G, B
    channel = {"R": 0, "G": 1, "B": 2}
    mosaic = np.zeros((8, 10), np.uint8)
    for k, letter in enumerate(pattern):
        mosaic[k // 2::2, k % 2::2] = colour[channel[letter]]
    data, step = padded(mosaic)
    decoded = decode_image(encoding, 8, 10, step, data)
    assert decoded.shape == (8, 10, 3)
    np.testing.assert_array_equal(decoded[2:-2, 2:-2], np.broadcast_to(colour, (4, 6, 3)))


@pytest.mark.parametrize("encoding, order", [("yuv422", "UYVY"), ("yuv422_yuy2", "YUYV")])
def test_yuv422_is_decoded_in_its_byte_order(encoding, order):
    """usb_cam's yuv422 (UYVY) and yuv422_yuy2 (YUYV): 2 bytes per pixel, chroma shared by pixel pairs. Without
    chroma (U = V = 128) every pixel is grey at its own luma (BT.601 video range: Y 16..235 -> 0..255); read in
    the other byte order, the lumas would become chroma and the 128s the lumas."""
    luma = np.random.default_rng(1).integers(16, 236, (6, 8)).astype(np.uint8)
    chroma = np.full((6, 8), 128, np.uint8)
    packed = np.dstack([chroma, luma] if order == "UYVY" else [luma, chroma])
    data, step = padded(packed)
    decoded = decode_image(encoding, 6, 8, step, data).astype(int)
    assert decoded.shape == (6, 8, 3)
    expected = (luma.astype(float) - 16) * 255 / 219
    assert np.abs(decoded - expected[..., None]).max() <= 1.0


def test_mono16_from_a_12_bit_sensor_keeps_its_contrast():
    """A 12-bit camera publishes mono16 with values 0..4095: its top 8 bits, not a nearly black image."""
    twelve_bit = RGB[:, :, 0].astype(np.uint16) * 16 + 5  # 0..4085
    twelve_bit[0, 0] = 4095
    data, step = padded(twelve_bit)
    decoded = decode_image("mono16", 6, 5, step, data)
    np.testing.assert_array_equal(decoded[1:], RGB[1:, :, 0])
    assert decoded[0, 0] == 255


def test_mono16_scale_of_a_camera_does_not_follow_each_images_brightest_pixel():
    """One camera, one scale: a 12-bit frame whose brightest pixel is 4095, then one whose brightest is 2047
    (the highlight gone) keep one gain (each image's own halved or doubled it); a stereo pair shares it."""
    scale = SixteenBitScale()
    bright = RGB[:, :, 0].astype(np.uint16) * 8  # 0..2040
    bright[0, 0] = 4095  # a highlight: 12 bits in use
    data, step = padded(bright)
    first = decode_image("mono16", 6, 5, step, data, scale=scale)
    without = bright.copy()
    without[0, 0] = 2047  # 11 bits would do for this image alone
    data, step = padded(without)
    second = decode_image("mono16", 6, 5, step, data, scale=scale)
    np.testing.assert_array_equal(second[1:], first[1:])
    alone = decode_image("mono16", 6, 5, step, data)  # (each image its own: twice as bright)
    assert (alone[1:].astype(int) - 2 * second[1:].astype(int)).max() <= 1 and alone[1:].max() > second[1:].max()
    assert scale.bits == 12


def test_mono16_scale_ignores_hot_pixels_and_a_single_glitched_frame():
    """A 12-bit camera (0..4095): a hot pixel at 65535 clips at 255 instead of darkening the image 16x; one frame of
    garbage (all 0xFFFF) does not change the scale of the frames after it; a brighter scene that lasts
    (GROW_AFTER images in a row needing 16 bits) does."""
    scale = SixteenBitScale()
    image = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)
    hot = image.copy()
    hot[3, 3] = 65535
    first = scale(hot)
    expected = (image >> 4).astype(np.uint8)
    expected[3, 3] = 255
    assert scale.bits == 12
    np.testing.assert_array_equal(first, expected)
    scale(np.full((64, 64), 65535, np.uint16))  # one garbage frame: clipped white, the scale kept
    assert scale.bits == 12
    np.testing.assert_array_equal(scale(image), (image >> 4).astype(np.uint8))
    brighter = image * 16
    for _ in range(SixteenBitScale.GROW_AFTER):
        out = scale(brighter)
    assert scale.bits == 16
    np.testing.assert_array_equal(out, (brighter >> 8).astype(np.uint8))


def test_mono16_scale_survives_a_glitched_first_frame_and_follows_the_brighter_camera_of_a_pair():
    """A first frame of garbage (all 0xFFFF) set 16 bits for good: the later 12-bit frames came out 16x dark. Now
    the first GROW_AFTER images may lower it. A stereo pair whose right camera is a bit brighter (13 bits) than
    the left (12): both images take 13 bits (one gain, the right one not clipped), where the left camera's images
    had kept resetting the right's count (and the right clipped for good)."""
    image = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)
    scale = SixteenBitScale()
    scale(np.full((64, 64), 65535, np.uint16))
    assert scale.bits == 16
    np.testing.assert_array_equal(scale(image), (image >> 4).astype(np.uint8))
    assert scale.bits == 12
    pair, right = SixteenBitScale(), image * 2  # 0..8190: 13 bits
    for _ in range(5):
        left_8, right_8 = pair(image), pair.for_camera("right")(right)
    assert pair.bits == 13
    np.testing.assert_array_equal(left_8, (image >> 5).astype(np.uint8))
    np.testing.assert_array_equal(right_8, (right >> 5).astype(np.uint8))


def test_big_endian_mono16_and_depth():
    mono = RGB[:, :, 0].astype(np.uint16) * 256
    np.testing.assert_array_equal(decode_image("mono16", 6, 5, 10, mono.astype(">u2").tobytes(), True), RGB[:, :, 0])
    millimetres = np.array([[0, 1500], [65535, 250]], np.uint16)
    depth = decode_depth("16UC1", 2, 2, 4, millimetres.tobytes())
    assert np.isnan(depth[0, 0]) and depth[0, 1] == pytest.approx(1.5) and depth.dtype == np.float32
    metres = np.array([[np.nan, 2.0], [-1.0, np.inf]], np.float32)
    depth = decode_depth("32FC1", 2, 2, 8, metres.tobytes())
    assert depth[0, 1] == 2.0 and np.isnan(depth[[0, 1, 1], [0, 0, 1]]).all()


@pytest.mark.parametrize("args,message", [
    (("yuv420", 6, 5, 10, bytes(60)), "unsupported image encoding"),
    (("rgb8", 6, 5, 10, bytes(90)), "step 10 is smaller"),
    (("rgb8", 6, 5, 15, bytes(40)), "40 bytes of data"),
    (("rgb8", 0, 5, 15, b""), "empty image"),
    (("yuv422", 6, 5, 10, bytes(60)), "an even width"),  # OpenCV would raise its own error (a crash before)
    (("bayer_rggb8", 1, 5, 5, bytes(5)), "2x2 px at least"),
])
def test_bad_image_data(args, message):
    with pytest.raises(EncodingError, match=message):
        decode_image(*args)
    with pytest.raises(EncodingError, match="expected 16UC1"):
        decode_depth("rgb8", 6, 5, 15, bytes(90))


def test_compressed_png_round_trip_and_garbage():
    ok, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_compressed("png", png.tobytes()), RGB)
    with pytest.raises(EncodingError, match="cannot decode"):
        decode_compressed("jpeg", b"not an image")


def test_stamp_synchronizer_pairs_nearest_and_counts_unmatched():
    pairs = []
    sync = StampSynchronizer(0.02, lambda image, depth: pairs.append((image, depth)), queue_size=3)
    sync.add_image(1.000, "i1")
    assert pairs == []  # waits: a nearer depth may still come
    sync.add_depth(0.990, "d0")
    sync.add_depth(1.005, "d1")
    assert pairs == [("i1", "d1")]
    sync.add_depth(1.040, "d2")
    sync.add_image(1.100, "i2")  # no depth near 1.100 yet
    sync.add_depth(1.200, "d3")  # ... and none will come: dropped
    assert pairs == [("i1", "d1")] and sync.unmatched == 1
    for k in range(5):  # a depth stream that stopped: images overflow the queue
        sync.add_image(2.0 + k, f"x{k}")
    assert sync.unmatched == 3
