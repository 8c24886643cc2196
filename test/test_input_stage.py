"""The node's input stage without ROS: pairing, the latest-frame slot, camera_info pairing, reset requests, and
the accounting identity received = processed + dropped + rejected + in_flight under concurrent writers and
readers. Also the node's odometry output rules (covariance through the mount, inflation, reset_to_pose, null)."""
from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from aliked_ros.geometry.transforms import invert, make_transform
from aliked_ros.odometry import TrackingState
from aliked_ros.ros.diagnostics import diagnostic_values
from aliked_ros.ros.frames import base_odometry, mount_transform
from aliked_ros.ros.input_stage import NS, InputStage, ResetRequest
from aliked_ros.ros.odometry_output import UNKNOWN_VARIANCE, OdometryOutput, adjoint, pose_covariance
from aliked_ros.ros.sync import StampPairing
from scipy.spatial.transform import Rotation


def test_slot_keeps_the_newest_frame_and_counts_the_replaced_one():
    stage = InputStage(camera_info_wait=0.0)
    stage.add_camera_info(1 * NS, "info1")
    for k in range(1, 4):
        stage.add_image(k * NS, f"image{k}")
    snapshot = stage.snapshot()
    assert (snapshot.received, snapshot.dropped, snapshot.in_flight) == (3, 2, 1) and snapshot.balanced
    work = stage.take(timeout=1)
    assert work.frame.image == "image3" and work.frame.stamp_ns == 3 * NS
    assert work.camera_info == "info1"  # none stamped like the image: the newest
    assert stage.snapshot().in_flight == 1  # being processed
    stage.finish_processed(work.frame)
    snapshot = stage.snapshot()
    assert (snapshot.processed, snapshot.in_flight) == (1, 0) and snapshot.balanced
    assert stage.take(timeout=0.05) is None


def test_camera_info_stamped_like_the_image_is_waited_for():
    """An image's camera_info that arrives after it is waited for (woken by its arrival, long before the 10 s
    ``camera_info_wait``); one that was lost (a newer one has arrived: best-effort QoS) is not."""
    stage = InputStage(camera_info_wait=10.0)
    stage.add_camera_info(1 * NS, "info1")
    stage.add_image(1 * NS, "a")
    assert stage.take(timeout=1).camera_info == "info1"
    stage.finish_processed(SimpleNamespace(received=time.monotonic()))
    stage.add_image(2 * NS, "b")
    threading.Timer(0.2, stage.add_camera_info, (2 * NS, "info2")).start()  # arrives after its image
    start = time.monotonic()
    work = stage.take(timeout=20)
    assert work.camera_info == "info2" and 0.1 < time.monotonic() - start < 10.0
    stage.finish_processed(work.frame)
    stage.add_camera_info(4 * NS, "info4")  # image 3's camera_info was lost, image 4's came first
    stage.add_image(3 * NS, "c")
    start = time.monotonic()
    work = stage.take(timeout=20)
    assert work.camera_info == "info4" and time.monotonic() - start < 10.0
    stage.finish_processed(work.frame)
    stage.add_image(4 * NS, "d")  # the stamps still match: the next image takes its own at once
    assert stage.take(timeout=1).camera_info == "info4"


def test_camera_info_stamped_apart_from_its_image_is_not_waited_for_each_frame():
    """A driver that stamps camera_info 1 ms before the image: no image ever finds its own; after two
    in a row that found a newer one, the newest is taken at once instead of each image waiting a frame period
    for the next camera_info."""
    stage = InputStage(camera_info_wait=10.0)
    period = 0.2
    waits = []
    # a slow driver (0.2 s) so that the decision, a wait of a period or none, stands well apart from thread wake-up
    # delays on a loaded machine (the bound is half a period either way)
    for k in range(1, 6):
        stamp = k * NS
        stage.add_camera_info(stamp - 1_000_000, f"info{k}")
        stage.add_image(stamp, f"image{k}")
        # the next camera_info comes a period later, as a driver sends it with the next frame
        threading.Timer(period, stage.add_camera_info, ((k + 1) * NS - 1_000_000, f"info{k + 1}")).start()
        start = time.monotonic()
        work = stage.take(timeout=5)
        waits.append(time.monotonic() - start)
        stage.finish_processed(work.frame)
        time.sleep(1.5 * period)  # (the timer's camera_info has come)
    assert all(w > 0.5 * period for w in waits[:2]) and all(w < 0.5 * period for w in waits[2:]), waits


def test_paired_stream_decides_each_image_and_counts_unpaired_ones_as_rejected():
    stage = InputStage({"depth": 0.02}, camera_info_wait=0.0)
    stage.add_image(1_000_000_000, "i1")
    assert stage.snapshot().in_flight == 1  # waiting for depth
    stage.add_paired("depth", 990_000_000, "d0")
    stage.add_paired("depth", 1_005_000_000, "d1")
    work = stage.take(timeout=1)
    assert (work.frame.image, work.frame.depth) == ("i1", "d1")
    stage.finish_rejected("bad_depth")
    stage.add_image(1_100_000_000, "i2")
    stage.add_paired("depth", 1_200_000_000, "d2")  # none near 1.100: i2 is dropped as no_depth
    snapshot = stage.snapshot()
    assert snapshot.rejected == {"bad_depth": 1, "no_depth": 1} and snapshot.unmatched == {"depth": 1}
    assert snapshot.balanced and snapshot.in_flight == 0
    with pytest.raises(KeyError):
        stage.add_paired("right", 0, "r")


def test_a_second_paired_stream_needs_no_new_code():
    """A stereo right camera: another entry in the tolerances (exact stamps within 1 ms)."""
    pairing = StampPairing({"depth": 20_000_000, "right": 1_000_000})
    assert pairing.add_image(100, "i") == []
    assert pairing.add("depth", 100, "d") == []  # still waiting for right
    assert pairing.add("right", 100, "r") == [("i", {"depth": "d", "right": "r"})]
    pairing.add_image(200_000_000, "j")
    pairing.add("depth", 200_000_000, "d2")
    assert pairing.add("right", 205_000_000, "r2") == []  # 5 ms apart: not a stereo pair
    assert pairing.unmatched == {"depth": 0, "right": 1}


def test_a_fast_depth_stream_ahead_of_late_images_still_pairs():
    """Depth at 90 Hz delivered 150 ms before the 30 Hz colour images (compressed transport): the depth messages
    an image needs are kept by time, not the last ten by count (which held 111 ms and paired nothing)."""
    pairing = StampPairing({"depth": 5_000_000}, queue_size=10)
    depth_period, image_period = NS // 90, NS // 30
    paired, depth_stamps = [], iter(NS + j * depth_period for j in range(1000))
    depth_stamp = next(depth_stamps)
    for k in range(30):
        image_stamp = NS + k * image_period
        while depth_stamp <= image_stamp + 150_000_000:  # the depth has arrived 150 ms ahead of this image
            paired += pairing.add("depth", depth_stamp, f"d{depth_stamp}")
            depth_stamp = next(depth_stamps)
        paired += pairing.add_image(image_stamp, f"i{k}")
    assert len(paired) == 30 and pairing.unmatched == {"depth": 0}, (len(paired), pairing.unmatched)
    assert len(pairing._streams["depth"]) <= 20  # and no more than the ~150 ms ahead


def test_a_bag_played_in_a_loop_pairs_again_after_the_wrap():
    """``ros2 bag play --loop``: depth 150 ms ahead of the colour images, and both go back to the bag's start. Here
    the first pass's depth ends early, so its last four images still wait when the second pass's depth arrives:
    pruned against them, that depth was lost and the second pass's images waited behind them, unpaired. Now the
    four are counted unpaired and every image of the second pass pairs with depth of the second pass."""
    pairing = StampPairing({"depth": 5_000_000}, queue_size=10)
    depth_period, image_period = NS // 90, NS // 30
    paired = []
    for loop in range(2):
        depth_stamps = iter(NS + j * depth_period for j in range(1000))
        depth_stamp = next(depth_stamps)
        for k in range(30):
            image_stamp = NS + k * image_period
            while depth_stamp <= image_stamp + 150_000_000 and (loop or depth_stamp <= NS + 25 * image_period):
                paired += pairing.add("depth", depth_stamp, f"d{loop}.{depth_stamp}")
                depth_stamp = next(depth_stamps)
            paired += pairing.add_image(image_stamp, f"i{loop}.{k}")
    names = [image for image, _ in paired]
    assert names == [f"i0.{k}" for k in range(26)] + [f"i1.{k}" for k in range(30)], names
    assert all(depth.startswith(f"d{image[1]}.") for image, pair in paired for depth in pair.values())
    assert pairing.unmatched["depth"] == 4 and pairing.waiting == 0


def test_an_image_that_jumps_back_pairs_with_depth_that_comes_after_it():
    """Stamps jump back (a restarted driver; CI saw this in test_node's bad-input run): the image's callback ran
    before its depth's. The old timeline's depth must not be taken as "a later message is known" (it was: the
    image was decided unpaired against a depth 100 ms away); the image waits and pairs with its own depth."""
    tolerance, stamps = 20_000_000, [NS + k * 33_000_000 for k in range(5)]
    for image_first in (True, False):
        pairing, paired = StampPairing({"depth": tolerance}), []
        for stamp in stamps[3:] + stamps[4:]:  # the last frame twice, as a driver that repeats one
            paired += pairing.add("depth", stamp, f"d{stamp}") + pairing.add_image(stamp, f"i{stamp}")
        back = stamps[1]
        if image_first:
            paired += pairing.add_image(back, "back") + pairing.add("depth", back, "back depth")
        else:
            paired += pairing.add("depth", back, "back depth") + pairing.add_image(back, "back")
        assert paired[-1] == ("back", {"depth": "back depth"}) and len(paired) == 4, (image_first, paired)
        assert pairing.unmatched["depth"] == 0 and pairing.waiting == 0


def test_a_depth_message_with_a_glitched_stamp_loses_nothing_and_a_small_jump_back_pairs():
    """A driver's one bogus stamp (0) in a 90 Hz depth stream 150 ms ahead of 30 Hz images: every image still
    pairs (a stream that goes back is kept apart until the images go back too, and that ends when the stream is
    past its old last stamp again). Then both go back by less than a frame (a restarted driver): the image that
    went back pairs with the depth that went back before it."""
    pairing, paired = StampPairing({"depth": 5_000_000}), []
    depth_period, image_period = NS // 90, NS // 30
    depth_stamps = iter(NS + j * depth_period for j in range(1000))
    depth_stamp = next(depth_stamps)
    for k in range(60):
        image_stamp = NS + k * image_period
        while depth_stamp <= image_stamp + 150_000_000:
            paired += pairing.add("depth", depth_stamp, f"d{depth_stamp}")
            depth_stamp = next(depth_stamps)
        if k == 30:
            paired += pairing.add("depth", 0, "bogus")
        paired += pairing.add_image(image_stamp, f"i{k}")
    assert [image for image, _ in paired] == [f"i{k}" for k in range(60)] and pairing.unmatched["depth"] == 0
    pairing, paired = StampPairing({"depth": 20_000_000}), []
    for stamp in (100, 133):
        paired += pairing.add("depth", stamp * 1_000_000, "d") + pairing.add_image(stamp * 1_000_000, "i")
    paired += pairing.add("depth", 166_000_000, "d166")
    paired += pairing.add("depth", 120_000_000, "d120") + pairing.add_image(120_000_000, "i120")
    paired += pairing.add("depth", 153_000_000, "d153") + pairing.add_image(153_000_000, "i153")
    assert paired[-2:] == [("i120", {"depth": "d120"}), ("i153", {"depth": "d153"})], paired
    assert pairing.unmatched["depth"] == 0


def test_stereo_right_camera_pairs_by_exact_stamp_with_its_camera_info_and_a_stopped_stream_expires():
    """Stereo: "right" is a paired stream (tolerance 0: the same stamp) with a camera_info of its own; left images
    whose right image never comes are decided unpaired after ``pairing_wait`` (no_right), not left in flight."""
    stage = InputStage({"right": 0.0}, camera_info_wait=0.0, pairing_wait=0.3, camera_info_streams=("image", "right"))
    stage.add_camera_info(NS, "left_info1")
    stage.add_image(NS, "left1")
    stage.add_paired("right", NS, "right1")
    work = stage.take(timeout=1)
    assert work.frame.paired == {"right": "right1"} and work.camera_info == "left_info1" and work.camera_infos == {}
    stage.finish_rejected("no_right_camera_info")  # what the node does without a right camera_info
    stage.add_camera_info(2 * NS, "right_info2", "right")
    stage.add_image(2 * NS, "left2")
    stage.add_paired("right", 2 * NS + 1, "right2")  # 1 ns apart: not a pair
    stage.add_image(3 * NS, "left3")
    stage.add_paired("right", 3 * NS, "right3")
    work = stage.take(timeout=1)
    assert work.frame.image == "left3" and work.camera_infos == {"right": "right_info2"}
    stage.finish_processed(work.frame)
    for k in range(4, 7):  # the right stream stops
        stage.add_image(k * NS, f"left{k}")
    assert stage.snapshot().in_flight == 3
    time.sleep(0.4)
    snapshot = stage.snapshot()
    assert snapshot.in_flight == 0 and snapshot.balanced and stage.take(timeout=0.05) is None
    assert snapshot.rejected == {"no_right_camera_info": 1, "no_right": 4} and snapshot.unmatched == {"right": 4}
    assert snapshot.camera_infos == 1 and snapshot.counters == {"camera_infos_right": 1}
    level, message, values = diagnostic_values(snapshot)
    assert values["images_without_right"] == "4" and values["rejected_no_right"] == "4" and "no_right 4" in message
    with pytest.raises(KeyError):
        stage.add_camera_info(NS, "info", "depth")


def test_a_worker_that_was_busy_takes_the_image_about_to_arrive():
    """A 10 Hz camera (real arrival times): a take just before the next image is due waits for it (and the image
    that waited is dropped); a take just after an arrival does not wait; with next_frame_wait 0 it never waits.
    (A slow camera, 0.5 s: the waits, up to 200 ms, stand well apart from thread wake-up delays on a loaded
    machine; the bounds are the decisions, not speeds.)"""
    period = 0.5
    for fraction in (0.4, 0.0):
        stage = InputStage(camera_info_wait=0.0, next_frame_wait=fraction)
        for k in range(6):  # the camera's rhythm
            stage.add_image(k * NS, f"image{k}")
            time.sleep(period)
        # now image5 has waited a whole period and image6 is due: a busy worker comes back
        threading.Timer(0.08, stage.add_image, (6 * NS, "image6")).start()
        start = time.monotonic()
        work = stage.take(timeout=1)
        waited = time.monotonic() - start
        if fraction:  # (image6 may also have come before the take, late on a loaded machine: the same decision)
            assert work.frame.image == "image6" and waited < fraction * period, waited
            assert stage.snapshot().dropped == 6  # image0-5: image5 superseded while the worker waited
        else:
            assert work.frame.image == "image5"  # at once: image6 came 80 ms later
        stage.finish_processed(work.frame)
        time.sleep(0.08)
        stage.add_image(7 * NS, "image7")  # taken as it arrives: the next is a period away
        start = time.monotonic()
        assert stage.take(timeout=1).frame.image == "image7" and time.monotonic() - start < 0.15  # (a wait: 200 ms)


def test_reset_request_travels_with_the_next_frame():
    stage = InputStage(camera_info_wait=0.0)
    pose = make_transform(np.eye(3), [1.0, 2.0, 0.0])
    stage.request_reset(ResetRequest("requested"))
    stage.request_reset(ResetRequest("to pose", pose))  # the later one wins
    stage.add_image(NS, "a")
    work = stage.take(timeout=1)
    assert work.reset.reason == "to pose" and np.array_equal(work.reset.T_odom_base, pose)
    stage.finish_processed(work.frame)
    stage.add_image(2 * NS, "b")
    assert stage.take(timeout=1).reset is None


def test_close_wakes_the_worker():
    stage = InputStage()
    result = []
    worker = threading.Thread(target=lambda: result.append(stage.take()))
    worker.start()
    time.sleep(0.1)
    stage.close()
    worker.join(2)
    assert not worker.is_alive() and result == [None]


@pytest.mark.parametrize("paired", [None, {"depth": 0.005}], ids=["image_only", "with_depth"])
def test_concurrent_writers_and_readers_keep_the_accounts(paired):
    """Writers (images, depth, camera_info, resets) hammer the stage from four threads while a worker takes and
    finishes frames and two readers take snapshots and diagnostics: no exception, every snapshot balanced,
    and once idle every image is processed, dropped or rejected."""
    stage = InputStage(paired, camera_info_wait=0.0)
    images, errors, snapshots = 3000, [], []
    stop = threading.Event()
    rng_kinds = ["bad_encoding", "size_mismatch", "no_camera_info", "duplicate_stamp"]

    def guard(function):
        def run():
            try:
                function()
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(repr(error))
        return run

    def write_images(offset):
        for k in range(images // 2):
            stamp = (2 * k + offset) * 10_000_000  # two writers, interleaved stamps 10 ms apart
            stage.add_image(stamp, ("image", stamp))
            if paired:
                stage.add_paired("depth", stamp + 1_000_000, ("depth", stamp))

    def write_others():
        rng = random.Random(1)
        while not stop.is_set():
            stage.add_camera_info(rng.randrange(images) * 10_000_000, "info")
            if rng.random() < 0.01:
                stage.request_reset(ResetRequest("requested"))
            stage.count("tf_stamps_skipped") if rng.random() < 0.01 else None

    def work():
        rng = random.Random(2)
        while (item := stage.take(timeout=0.5)) is not None:
            if rng.random() < 0.3:
                stage.finish_rejected(rng.choice(rng_kinds))
            else:
                stage.warn("depth_all_invalid") if rng.random() < 0.05 else None
                stage.set_tracking(state=TrackingState.TRACKING, inliers=rng.randrange(100), map_id=0)
                stage.finish_processed(item.frame)

    def read():
        while not stop.is_set():
            snapshot = stage.snapshot()
            snapshots.append(snapshot.balanced)
            diagnostic_values(snapshot)

    writers = [threading.Thread(target=guard(lambda o=o: write_images(o))) for o in (0, 1)]
    others = [threading.Thread(target=guard(write_others)) for _ in range(2)]
    worker = threading.Thread(target=guard(work))
    readers = [threading.Thread(target=guard(read)) for _ in range(2)]
    for thread in others + readers + [worker] + writers:
        thread.start()
    for thread in writers:
        thread.join(60)
    deadline = time.monotonic() + 30
    while stage.snapshot().in_flight and time.monotonic() < deadline:
        if paired and stage.snapshot().in_flight == stage._pairing.waiting:  # the last images wait for depth
            stage.add_paired("depth", 10 * images * 10_000_000, "end")
        time.sleep(0.01)
    stop.set()
    stage.close()
    for thread in others + readers + [worker]:
        thread.join(10)
    assert not errors, errors
    snapshot = stage.snapshot()
    assert snapshot.received == images and snapshot.in_flight == 0
    assert snapshot.processed + snapshot.dropped + snapshot.frames_rejected == images
    assert snapshot.processed > 0 and all(snapshots) and len(snapshots) > 10
    level, message, values = diagnostic_values(snapshot)
    assert int(values["frames_received"]) == sum(int(values[f"frames_{k}"]) for k in ("processed", "dropped", "rejected"))
    assert int(values["frames_rejected"]) == sum(int(v) for k, v in values.items() if k.startswith("rejected_"))


# --- odometry output: covariance through the mount, inflation, reset_to_pose, null ---------------------------


def _result(T, covariance=None, motion_covariance=None, reset_reason=None, relocalized=False,
            state=TrackingState.TRACKING):
    return SimpleNamespace(T_odom_camera=T, covariance=covariance, motion_covariance=motion_covariance,
                           reset_reason=reset_reason, relocalized=relocalized, state=state)


def test_pose_covariance_through_a_pure_rotation_mount_keeps_its_eigenvalues():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    cov = A @ A.T * 1e-4
    T_base_cam = mount_transform([0.0, 0.0, 0.0])
    T_odom_base = make_transform(Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix(), [1, 2, 3])
    ros = pose_covariance(cov, T_odom_base, T_base_cam)
    np.testing.assert_allclose(np.linalg.eigvalsh(ros), np.linalg.eigvalsh(cov), rtol=1e-9, atol=1e-15)
    # a camera-z (optical axis) translation variance shows up along the base's x (forward) in odom axes
    only_z = np.zeros((6, 6))
    only_z[5, 5] = 4.0  # translation z of the camera
    ros = pose_covariance(only_z, np.eye(4), T_base_cam)
    assert ros[0, 0] == pytest.approx(4.0) and np.isclose(ros, 0).sum() == 35


def test_pose_covariance_matches_sampled_poses_through_an_offset_mount():
    """Monte Carlo: perturb the camera pose with the core's covariance, map it to the base, and compare the
    spread of the base pose (position in odom axes, small rotation in odom axes) with the published matrix."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 6))
    cov = A @ A.T * 1e-5
    T_base_cam = mount_transform([0.2, -0.1, 0.5, *Rotation.from_euler("xyz", [-90, 5, -90], degrees=True).as_quat()])
    T_cam = make_transform(Rotation.from_rotvec([0.05, 0.3, -0.1]).as_matrix(), [0.5, -0.2, 1.0])
    T_base = base_odometry(T_cam, T_base_cam)
    samples = []
    for xi in rng.multivariate_normal(np.zeros(6), cov, size=4000):
        perturbed = T_cam @ _exp(xi)
        B = base_odometry(perturbed, T_base_cam)
        dR = Rotation.from_matrix(B[:3, :3] @ T_base[:3, :3].T).as_rotvec()
        samples.append(np.concatenate([B[:3, 3] - T_base[:3, 3], dR]))
    empirical = np.cov(np.array(samples).T)
    np.testing.assert_allclose(pose_covariance(cov, T_base, T_base_cam), empirical, atol=0.08 * np.abs(empirical).max())


def _exp(xi: np.ndarray) -> np.ndarray:
    """exp of (rotation vector, translation) to first order in the translation coupling (small xi)."""
    return make_transform(Rotation.from_rotvec(xi[:3]).as_matrix(), xi[3:])


def test_inflation_after_reset_relocalisation_and_lost_and_unknown_when_none():
    T_base_cam = mount_transform([0.0, 0.0, 0.0])
    out = OdometryOutput(T_base_cam, recovery_factor=100.0, recovery_frames=4)
    cov = np.eye(6) * 1e-4
    poses = [make_transform(np.eye(3), [0, 0, 0.01 * k]) for k in range(40)]
    factors = []
    stamp = 0
    for k, T in enumerate(poses[:8]):
        stamp += NS // 10
        odom = out.update(_result(T, cov if k else None, cov * 2 if k > 1 else None), stamp)
        factors.append(odom.inflation)
        if k == 0:
            assert np.allclose(np.diag(odom.pose_covariance), UNKNOWN_VARIANCE)
            assert np.allclose(np.diag(odom.twist_covariance), UNKNOWN_VARIANCE)
    assert factors[:6] == pytest.approx([100, 100 ** 0.75, 10, 100 ** 0.25, 1, 1])
    assert np.allclose(np.diag(odom.pose_covariance), 1e-4) and odom.twist_covariance[0, 0] < 1
    # a LOST spell: nothing, then the first pose comes inflated
    assert out.update(_result(None, state=TrackingState.LOST), stamp + 1) is None
    assert out.update(_result(poses[9], cov), stamp + 2).inflation == 100
    # relocalised, reset: inflated again; never below the core's
    for _ in range(6):
        stamp += NS // 10
        out.update(_result(poses[10], cov), stamp)
    assert out.update(_result(poses[11], cov, relocalized=True), stamp + 1).inflation == 100
    for _ in range(6):
        stamp += NS // 10
        assert out.update(_result(poses[12], cov), stamp).inflation >= 1
    odom = out.update(_result(poses[13], cov, reset_reason="lost for 15 frames"), stamp + NS)
    assert odom.inflation == 100 and np.allclose(np.diag(odom.twist_covariance), UNKNOWN_VARIANCE)
    # the null odometry: the last pose, zero twist, unknown covariances
    null = out.null(stamp + 2 * NS)
    assert null.null and np.array_equal(null.T_odom_base, odom.T_odom_base)
    assert np.allclose(np.diag(null.pose_covariance), UNKNOWN_VARIANCE) and not null.linear.any()


def test_reset_to_pose_continues_the_new_map_from_the_pose():
    T_base_cam = mount_transform([0.1, 0.0, 0.3])
    out = OdometryOutput(T_base_cam)
    T_core = make_transform(Rotation.from_rotvec([0, 0.2, 0]).as_matrix(), [0.3, 0.0, 1.2])
    out.update(_result(T_core, np.eye(6)), NS)
    target = make_transform(Rotation.from_euler("z", 90, degrees=True).as_matrix(), [5.0, -2.0, 0.0])
    out.reset(target)
    # the core's new map starts at its last pose and moves on from there
    first = out.update(_result(T_core, None, reset_reason="requested"), 2 * NS)
    np.testing.assert_allclose(first.T_odom_base, target, atol=1e-12)
    step = make_transform(np.eye(3), [0.0, 0.0, 0.5])  # 0.5 forward along the optical axis
    second = out.update(_result(T_core @ step, np.eye(6) * 1e-4), 3 * NS)
    np.testing.assert_allclose(invert(first.T_odom_base) @ second.T_odom_base,
                               base_odometry(step, T_base_cam), atol=1e-12)
    assert second.linear[0] == pytest.approx(0.5)  # forward in the base frame, 1 s apart


def test_adjoint_moves_a_right_perturbation():
    rng = np.random.default_rng(2)
    T = make_transform(Rotation.from_rotvec(rng.normal(size=3)).as_matrix(), rng.normal(size=3))
    xi = rng.normal(size=6) * 1e-6
    lhs = T @ _exp(xi) @ invert(T)
    rhs = _exp(adjoint(T) @ xi)
    np.testing.assert_allclose(lhs, rhs, atol=1e-11)
