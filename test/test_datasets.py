"""Dataset readers: TUM, EuRoC and KITTI layouts, and rosbags (ROS 1 and ROS 2, written here from the shared
TUM frames) giving the same frames and the same odometry as the folders; corrupt bags and unknown topics."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from aliked_ros.datasets import DatasetError, open_sequence
from aliked_ros.datasets.bag_writer import write_bag
from aliked_ros.datasets.euroc import EurocSequence
from aliked_ros.datasets.kitti import KittiSequence
from aliked_ros.datasets.rosbag import BagSequence
from aliked_ros.datasets.tum import TumSequence
from aliked_ros.odometry import VisualOdometry
from aliked_ros.tools.eval import run_offline


def test_tum_and_euroc_readers(shared_dir):
    tum = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    assert isinstance(tum, TumSequence) and len(tum) == 40 and tum.has_depth
    frame = next(iter(tum))
    assert frame.image.shape == (480, 640, 3) and frame.depth.dtype == np.float32
    assert 0.3 < np.nanmedian(frame.depth) < 5 and np.isnan(frame.depth).any()
    euroc = open_sequence(shared_dir / "data/euroc_v101_static_stereo")
    assert isinstance(euroc, EurocSequence) and len(euroc) == 30
    assert euroc.camera.width == 752 and euroc.camera.distortion_model == "plumb_bob"
    assert next(iter(euroc)).image.shape == (480, 752)
    # ground truth is the camera's (body pose composed with T_BS), stamps in seconds
    assert len(euroc.groundtruth) > 0 and 1.4e9 < euroc.groundtruth.stamps[0] < 1.5e9


def test_kitti_layout(shared_dir, tmp_path):
    source = open_sequence(shared_dir / "data/tum_fr2_desk")
    (tmp_path / "00" / "image_0").mkdir(parents=True)
    gt = source.groundtruth
    stamps, poses = [], []
    for i, frame in zip(range(5), source):
        cv2.imwrite(str(tmp_path / "00" / "image_0" / f"{i:06d}.png"), cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY))
        stamps.append(frame.stamp - 1311868169.0)
        poses.append(gt.poses[gt.nearest(np.array([frame.stamp]), 0.02)[0]][:3].reshape(-1))
    K = source.camera.K
    (tmp_path / "00" / "calib.txt").write_text("P0: " + " ".join(map(str, np.hstack([K, np.zeros((3, 1))]).ravel())) + "\n")
    np.savetxt(tmp_path / "00" / "times.txt", stamps)
    np.savetxt(tmp_path / "00" / "poses.txt", poses)
    kitti = open_sequence(tmp_path / "00")
    assert isinstance(kitti, KittiSequence) and len(kitti) == 5 and kitti.camera.fx == K[0, 0]
    frames = list(kitti)
    assert frames[0].image.ndim == 2 and frames[1].stamp == pytest.approx(stamps[1])
    np.testing.assert_allclose(kitti.groundtruth.poses[2][:3].ravel(), poses[2])


@pytest.mark.parametrize("ros1", [False, True], ids=["ros2-sqlite3", "ros1"])
def test_bag_round_trip_gives_same_odometry(shared_dir, tmp_path, extractor_cache, ros1):
    folder = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    bag_path = write_bag(folder, tmp_path / ("seq.bag" if ros1 else "seq"), ros1=ros1)
    bag = open_sequence(bag_path)
    assert isinstance(bag, BagSequence) and len(bag) == 40 and bag.has_depth and bag.camera == folder.camera
    if ros1:  # one file: its ground truth is the caller's (a groundtruth.txt beside it is read back)
        assert bag.groundtruth is None
    else:  # written into the bag's folder: eval scores a bag as it scores the folder
        np.testing.assert_array_equal(bag.groundtruth.stamps, folder.groundtruth.stamps)
        np.testing.assert_allclose(bag.groundtruth.poses, folder.groundtruth.poses, atol=1e-9)
    extractor = extractor_cache("orb")
    from_folder = run_offline(folder, VisualOdometry(extractor), max_frames=10, progress=False)
    from_bag = run_offline(bag, VisualOdometry(extractor), max_frames=10, progress=False)
    np.testing.assert_allclose(from_bag.trajectory.stamps, from_folder.trajectory.stamps, atol=1e-6)
    np.testing.assert_allclose(from_bag.trajectory.poses, from_folder.trajectory.poses, atol=1e-9)


def test_mcap_bag_and_topic_errors(shared_dir, tmp_path):
    folder = open_sequence(shared_dir / "data/tum_fr2_desk")
    bag_path = write_bag(folder, tmp_path / "mono", storage="mcap",
                         topics={"image": "/cam/image_raw", "camera_info": "/cam/camera_info"})
    bag = open_sequence(bag_path)
    assert (bag.image_topic, bag.camera_info_topic, bag.depth_topic) == ("/cam/image_raw", "/cam/camera_info", None)
    assert len(list(bag)) == 20
    with pytest.raises(DatasetError, match="topic /nope is not in the bag; it has: /cam/camera_info"):
        open_sequence(bag_path, image_topic="/nope")
    with pytest.raises(DatasetError, match="is sensor_msgs/msg/CameraInfo, expected"):
        open_sequence(bag_path, image_topic="/cam/camera_info")


def test_corrupt_and_truncated_bags(shared_dir, tmp_path):
    garbage = tmp_path / "garbage.bag"
    garbage.write_bytes(b"#ROSBAG V2.0\n" + bytes(1000))
    with pytest.raises(DatasetError, match="cannot read bag"):
        open_sequence(garbage)
    folder = open_sequence(shared_dir / "data/tum_fr2_desk")
    good = write_bag(folder, tmp_path / "good.bag", ros1=True)
    truncated = tmp_path / "truncated.bag"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DatasetError):
        list(open_sequence(truncated))
    with pytest.raises(DatasetError, match="no such dataset"):
        open_sequence(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="is not a TUM, KITTI or EuRoC folder"):
        open_sequence(tmp_path / "empty")


def test_prefetched_reads_ahead_and_passes_errors_on(shared_dir, tmp_path):
    """Read-ahead (used by replay and the demo): the same frames in the same order; a reader error reaches the
    consumer after the frames read before it; a consumer that stops early leaves no reader thread behind."""
    import threading
    import time

    from aliked_ros.datasets import Prefetched

    folder = open_sequence(shared_dir / "data/tum_fr2_desk")
    ahead = Prefetched(folder, size=4).start()
    assert len(ahead) == len(folder) and ahead.name == folder.name and ahead.groundtruth is folder.groundtruth
    for direct, read_ahead in zip(folder, ahead, strict=True):
        assert direct.stamp == read_ahead.stamp and np.array_equal(direct.image, read_ahead.image)
    assert len(list(ahead)) == len(folder)  # a second pass reads the sequence again

    good = write_bag(folder, tmp_path / "good.bag", ros1=True)
    truncated = tmp_path / "truncated.bag"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    received = []
    with pytest.raises(DatasetError):
        for frame in Prefetched(open_sequence(truncated), size=2):
            received.append(frame.stamp)
    assert len(received) < len(folder) and received == sorted(received)

    for frame in Prefetched(folder, size=2):
        break
    deadline = time.monotonic() + 5
    while any(t.name.startswith("prefetch") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("prefetch") for t in threading.enumerate())


def test_bag_with_a_corrupt_image_two_depth_topics_and_its_own_groundtruth(shared_dir, tmp_path, capsys):
    """A RealSense-like ROS 2 bag: JPEG colour images (one corrupt), two depth topics, groundtruth.txt inside the
    bag's folder. The corrupt image is skipped, counted and named; the depth registered to the colour camera is
    chosen; the ground truth is found; with the other depth topic named, it is used."""
    import shutil

    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from aliked_ros.datasets.bag_writer import _header, camera_info_message

    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:6]
    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, Compressed = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CompressedImage"]
    path = tmp_path / "realsense"
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        colour = writer.add_connection("/cam/color/image_raw/compressed", Compressed.__msgtype__, typestore=store)
        info = writer.add_connection("/cam/color/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        depths = [writer.add_connection(t, Image.__msgtype__, typestore=store)
                  for t in ("/cam/depth/image_rect_raw", "/cam/aligned_depth_to_color/image_raw")]
        for i, frame in enumerate(frames):
            header, t_ns = _header(store, frame.stamp, "cam", False), int(round(frame.stamp * 1e9))
            jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))[1].reshape(-1)
            if i == 3:
                jpeg = jpeg[:200]  # cut short in transport
            writer.write(colour, t_ns, store.serialize_cdr(Compressed(header=header, format="jpeg", data=jpeg),
                                                            Compressed.__msgtype__))
            message = camera_info_message(store, frame.camera, header, False)
            writer.write(info, t_ns, store.serialize_cdr(message, message.__msgtype__))
            for k, connection in enumerate(depths):
                depth = np.full(frame.image.shape[:2], 1000 * (k + 1), np.uint16)
                writer.write(connection, t_ns, store.serialize_cdr(Image(
                    header=header, height=depth.shape[0], width=depth.shape[1], encoding="16UC1", is_bigendian=0,
                    step=depth.shape[1] * 2, data=depth.view(np.uint8).reshape(-1)), Image.__msgtype__))
    shutil.copy(shared_dir / "data/tum_fr2_desk/groundtruth.txt", path / "groundtruth.txt")
    bag = open_sequence(path)
    assert bag.depth_topic == "/cam/aligned_depth_to_color/image_raw" and bag.groundtruth is not None
    read = list(bag)
    assert [f.stamp for f in read] == pytest.approx([f.stamp for f in frames[:3] + frames[4:]])
    assert bag.skipped_messages == 1 and np.allclose(read[0].depth, 2.0)  # 16UC1: millimetres
    assert "/cam/color/image_raw/compressed message stamped" in capsys.readouterr().err
    other = open_sequence(path, depth_topic="/cam/depth/image_rect_raw")
    assert np.allclose(next(iter(other)).depth, 1.0)


def test_kitti_folder_with_some_of_the_frames_takes_their_numbered_rows(shared_dir, tmp_path, capsys):
    """Every second image of the KITTI clip, with the clip's full times.txt and poses.txt (rows per frame number):
    each image gets its own stamp and pose; without times.txt, 0.1 s per frame number, said on stderr."""
    import shutil

    source = shared_dir / "data/kitti01_000_050"
    full = KittiSequence(source)
    folder = tmp_path / "every_second"
    (folder / "image_0").mkdir(parents=True)
    for image in sorted((source / "image_0").glob("*.png"))[::2]:
        shutil.copy(image, folder / "image_0" / image.name)
    for name in ("calib.txt", "times.txt", "poses.txt"):
        shutil.copy(source / name, folder / name)
    subset = KittiSequence(folder)
    assert len(subset) == 26
    np.testing.assert_array_equal(subset.stamps, full.stamps[::2])
    np.testing.assert_array_equal(subset.groundtruth.poses, full.groundtruth.poses[::2])
    (folder / "times.txt").unlink()
    untimed = KittiSequence(folder)
    np.testing.assert_allclose(untimed.stamps, np.arange(0, 51, 2) * 0.1)
    np.testing.assert_array_equal(untimed.groundtruth.poses, full.groundtruth.poses[::2])
    assert "has no times.txt" in capsys.readouterr().err


def test_tum_lists_depth_first_associations_and_bad_lines(shared_dir, tmp_path):
    """associations.txt with depth listed first (ICL-NUIM's order) reads as colour + depth; a list line without
    a path or with a non-numeric stamp is a DatasetError naming the line, not a traceback."""
    import shutil

    source = shared_dir / "data/tum_fr1_rpy_rgbd"
    folder = tmp_path / "depth_first"
    shutil.copytree(source, folder)
    rows = [line.split() for line in (source / "associations.txt").read_text().splitlines()[:5]]
    (folder / "associations.txt").write_text("".join(f"{d} {dp} {c} {cp}\n" for c, cp, d, dp in rows))
    frames = list(TumSequence(folder))
    expected = list(TumSequence(source))[:5]
    assert len(frames) == 5
    for got, want in zip(frames, expected):
        assert got.stamp == want.stamp and np.array_equal(got.image, want.image)
        assert np.array_equal(got.depth, want.depth, equal_nan=True)
    (folder / "associations.txt").write_text("  # a comment, indented\n1305031235.993673\n")
    with pytest.raises(DatasetError, match=r"associations.txt:2: expected 'timestamp path'"):
        TumSequence(folder)


def test_a_bag_recorded_before_iron_without_message_definitions_is_read(shared_dir, tmp_path):
    """ROS 2 Humble's sqlite3 bags (schema 3) store no message definitions: read with Humble's (rosbags would
    refuse them: "Bag contains no type definitions")."""
    import sqlite3

    folder = open_sequence(shared_dir / "data/tum_fr2_desk")
    bag_path = write_bag(folder, tmp_path / "humble", topics={"image": "/cam/image_raw", "camera_info": "/cam/camera_info"})
    database = next(bag_path.glob("*.db3"))
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM message_definitions")
        connection.execute("UPDATE schema SET schema_version = 3")
    connection.close()
    bag = open_sequence(bag_path)
    frames = list(bag)
    assert len(bag) == 20 and len(frames) == 20 and bag.camera == folder.camera
    np.testing.assert_array_equal(frames[3].image, list(folder)[3].image)


class _DepthUntil:
    """A sequence whose depth stops after ``frames`` frames (the depth topic is in the bag either way)."""

    def __init__(self, sequence, frames: int) -> None:
        self._sequence, self._frames = sequence, frames
        self.name, self.camera, self.groundtruth = sequence.name, sequence.camera, sequence.groundtruth
        self.has_depth, self.has_stereo = True, False

    def __len__(self) -> int:
        return len(self._sequence)

    def __iter__(self):
        import dataclasses

        for index, frame in enumerate(self._sequence):
            yield frame if index < self._frames else dataclasses.replace(frame, depth=None)


def test_a_depth_topic_that_is_silent_or_stops(shared_dir, tmp_path, capsys, monkeypatch):
    """A recorded depth topic without messages: read as monocular (said), not RGB-D waiting for depth; a depth
    stream that stops: the images after it come without depth, each as soon as the image stream is DEPTH_WAIT_S
    past it (0.3 s here, the clip being 1.3 s), not all at the end of the bag."""
    from aliked_ros.datasets import rosbag

    monkeypatch.setattr(rosbag, "DEPTH_WAIT_S", 0.3)
    folder = open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd")
    silent = open_sequence(write_bag(_DepthUntil(folder, 0), tmp_path / "silent"))
    assert not silent.has_depth and silent.depth_topic is None and "has no messages" in capsys.readouterr().err
    assert len(list(silent)) == 40
    stopping = open_sequence(write_bag(_DepthUntil(folder, 10), tmp_path / "stopping"))
    assert stopping.has_depth
    read = []  # the stamps of the image messages read so far
    decoded = stopping._decoded

    def recording(connection, msg):
        if connection.topic == stopping.image_topic:
            read.append(rosbag.stamp_of(msg))
        return decoded(connection, msg)

    stopping._decoded = recording
    frames, ahead = [], []
    for frame in stopping:
        frames.append(frame)
        ahead.append(max(read) - frame.stamp)  # how far the reader was past the frame when it came
    assert max(ahead[10:-12]) <= 0.3 + 0.05, ahead  # (the last ~0.3 s come at the end of the bag)
    assert len(frames) == 40 and all(f.depth is not None for f in frames[:10])
    assert all(f.depth is None for f in frames[10:])


def test_colour_images_recorded_late_still_find_their_depth(shared_dir, tmp_path):
    """A bag whose colour images were recorded 0.35 s after their stamp (transport latency) and depth at once: the
    reader kept the last 8 depth images (0.27 s at 30 Hz), so 22 of 30 frames came without depth, silently, and
    eval scored them as metric. Depth is now kept for the images still to come (up to DEPTH_WAIT_S)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from aliked_ros.datasets.bag_writer import _header, camera_info_message

    store = get_typestore(Stores.ROS2_KILTED)
    Image = store.types["sensor_msgs/msg/Image"]

    def image(array, header, encoding):
        array = np.ascontiguousarray(array)
        channels = 1 if array.ndim == 2 else array.shape[2]
        return store.serialize_cdr(Image(header=header, height=array.shape[0], width=array.shape[1],
                                         encoding=encoding, is_bigendian=0,
                                         step=array.shape[1] * channels * array.itemsize,
                                         data=array.view(np.uint8).reshape(-1)), Image.__msgtype__)

    frames = list(open_sequence(shared_dir / "data/tum_fr1_rpy_rgbd"))[:30]
    with Writer(tmp_path / "late", version=9) as writer:
        colour = writer.add_connection("/camera/rgb/image_color", Image.__msgtype__, typestore=store)
        info = writer.add_connection("/camera/rgb/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        depth = writer.add_connection("/camera/depth/image", Image.__msgtype__, typestore=store)
        for frame in frames:
            header, ns = _header(store, frame.stamp, "cam", False), int(round(frame.stamp * 1e9))
            writer.write(depth, ns, image(frame.depth.astype("<f4"), header, "32FC1"))
            message = camera_info_message(store, frame.camera, header, False)
            writer.write(info, ns + 350_000_000, store.serialize_cdr(message, message.__msgtype__))
            writer.write(colour, ns + 350_000_000, image(frame.image, header, "rgb8"))
    read = list(open_sequence(tmp_path / "late"))
    assert len(read) == 30 and all(f.depth is not None for f in read)
    for mine, original in zip(read, frames):
        np.testing.assert_array_equal(mine.depth, original.depth.astype(np.float32))


def test_bad_lines_in_euroc_and_kitti_files_are_named(shared_dir, tmp_path, capsys):
    """A malformed line in a camera list, times.txt, poses.txt or ground-truth csv: a DatasetError naming the
    file and line (numpy's or int()'s traceback before). A pose row of NaN (a gap) is left out, said; KITTI
    poses that neither match the images one to one nor reach their frame numbers are refused, not paired
    with the wrong images (frame 10 took frame 5's pose)."""
    import shutil

    euroc = tmp_path / "euroc"
    shutil.copytree(shared_dir / "data/euroc_v101_static_stereo", euroc)
    csv = euroc / "mav0/cam0/data.csv"
    lines = csv.read_text().splitlines()
    data_rows = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    lines[data_rows[1]] = lines[data_rows[1]].replace(",", ";")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"data.csv:{data_rows[1] + 1}: expected 'timestamp_ns,filename'"):
        open_sequence(euroc)
    source = shared_dir / "data/kitti01_000_050"
    for name, line, text, message in (("times.txt", 2, "0.20x", "not a number"),
                                      ("poses.txt", 2, "1 0 0 0 0 1 0 0 0 0 1", "11 columns, expected 12")):
        kitti = tmp_path / f"kitti_{name}"
        shutil.copytree(source, kitti)
        rows = (kitti / name).read_text().splitlines()
        rows[line] = text
        (kitti / name).write_text("\n".join(rows) + "\n")
        with pytest.raises(DatasetError, match=rf"{name}:{line + 1}: {message}"):
            open_sequence(kitti)
    gap = tmp_path / "kitti_gap"
    shutil.copytree(source, gap)
    rows = (gap / "poses.txt").read_text().splitlines()
    rows[7] = " ".join(["nan"] * 12)
    (gap / "poses.txt").write_text("\n".join(rows) + "\n")
    sequence = open_sequence(gap)
    assert len(sequence.groundtruth.stamps) == 50 and np.isfinite(sequence.groundtruth.poses).all()
    assert "1 of 51 poses are not finite" in capsys.readouterr().err
    subset = tmp_path / "kitti_subset"
    (subset / "image_0").mkdir(parents=True)
    for image in sorted((source / "image_0").glob("*.png"))[::2]:
        shutil.copy(image, subset / "image_0" / image.name)
    shutil.copy(source / "calib.txt", subset / "calib.txt")
    (subset / "poses.txt").write_text("\n".join((source / "poses.txt").read_text().splitlines()[:40]) + "\n")
    with pytest.raises(DatasetError, match="40 poses for 26 images numbered up to 50"):
        open_sequence(subset)
