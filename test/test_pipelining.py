"""The VO core split in two stages (``VisualOdometry.extract`` / ``process_extracted``), as the node's pipelined
worker runs it: the same results as ``process`` bit for bit, with extraction on another thread too, and a
frame refused by either stage changes nothing."""
from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from aliked_ros.datasets import open_sequence
from aliked_ros.features import ImageError
from aliked_ros.odometry import DuplicateFrameError, Frame, OdometryConfig, VisualOdometry
from aliked_ros.ros.input_stage import NS, InputStage, ResetRequest

FIELDS_EXCEPT_TIMINGS = ("stamp", "frame_index", "state", "pose_source", "is_keyframe", "T_odom_camera", "motion",
                         "normalized", "track_ids", "track_ages", "inliers", "num_matches", "num_inliers",
                         "covariance", "motion_covariance", "reset_reason", "map_id", "relocalized", "num_landmarks",
                         "stereo_matches")


def assert_same_result(a, b) -> None:
    """Every field of two FrameResults equal bit for bit (timings aside)."""
    for name in FIELDS_EXCEPT_TIMINGS:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x is not None and y is not None and np.array_equal(x, y), name
        else:
            assert x == y, name
    for name in ("keypoints", "scores", "descriptors"):
        assert np.array_equal(getattr(a.features, name), getattr(b.features, name)), name


def pipelined(vo: VisualOdometry, frames) -> list:
    """``extract`` on a second thread while ``process_extracted`` runs here (every frame, in order)."""
    handover: queue.Queue = queue.Queue(maxsize=1)

    def extract_all() -> None:
        for frame in frames:
            handover.put(vo.extract(frame))
        handover.put(None)

    thread = threading.Thread(target=extract_all)
    thread.start()
    results = []
    while (extracted := handover.get()) is not None:
        results.append(vo.process_extracted(extracted))
    thread.join()
    return results


@pytest.mark.parametrize("source, options", [("tum_fr1_rpy_rgbd", {}), ("tum_fr2_desk", {}),
                                             ("euroc_v101_static_stereo", {"stereo": True})],
                         ids=["rgbd", "monocular", "stereo"])
def test_process_equals_process_extracted_of_extract(source, options, shared_dir, extractor_cache):
    frames = list(open_sequence(shared_dir / "data" / source, **options))[:20]
    extractor = extractor_cache("orb")
    config = OdometryConfig(background_mapping=False)
    whole = [r for r in map(VisualOdometry(extractor, config).process, frames)]
    split_vo = VisualOdometry(extractor, config)
    split = [split_vo.process_extracted(split_vo.extract(f)) for f in frames]
    threaded = pipelined(VisualOdometry(extractor, config), frames)
    assert len(whole) == len(split) == len(threaded) == len(frames)
    assert sum(r.T_odom_camera is not None for r in whole) >= len(frames) - 2
    if "stereo" in options:
        assert min(r.stereo_matches for r in whole) > 50
    for a, b, c in zip(whole, split, threaded):
        assert_same_result(a, b)
        assert_same_result(a, c)
        assert b.timings_ms["total"] >= b.timings_ms["extract"] > 0


def test_refused_frames_change_nothing_in_either_stage(shared_dir, extractor_cache):
    """A duplicate stamp is refused by ``process_extracted`` (after extraction) without a change; a frame stamped
    backwards that the extractor refuses does not reset the pipeline; one that it takes does."""
    frames = list(open_sequence(shared_dir / "data/tum_fr2_desk"))[:6]
    vo = VisualOdometry(extractor_cache("orb"), OdometryConfig(background_mapping=False))
    reference = VisualOdometry(extractor_cache("orb"), OdometryConfig(background_mapping=False))
    for frame in frames[:4]:
        vo.process_extracted(vo.extract(frame))
        reference.process(frame)
    extracted_again = vo.extract(frames[3])  # extraction itself reads no state: it takes any frame
    with pytest.raises(DuplicateFrameError):
        vo.process_extracted(extracted_again)
    backwards_and_broken = Frame(frames[0].image.astype(np.float32), frames[0].stamp, frames[0].camera)
    with pytest.raises(ImageError):
        vo.extract(backwards_and_broken)
    assert (vo.map_id, vo.resets) == (reference.map_id, reference.resets) == (0, 0)
    # the next frame gives what it gives without the refused ones
    assert_same_result(vo.process_extracted(vo.extract(frames[4])), reference.process(frames[4]))
    result = vo.process_extracted(vo.extract(frames[0]))  # backwards, extracted: a new map
    assert result.map_id == 1 and "time went backwards" in result.reset_reason


def test_hand_over_slot_keeps_the_newest_counts_the_superseded_and_passes_resets_on():
    """The node's pipelined worker through its input stage (ROS-free): the second slot keeps the newest extracted
    frame, a superseded one is dropped (received = processed + dropped + rejected + in_flight throughout), a reset
    request survives its frame being superseded or refused, frames come out in the order they were taken."""
    stage = InputStage(camera_info_wait=0.0)
    stage.add_camera_info(1 * NS, "info")

    def extract(k: int, reset: ResetRequest | None = None) -> None:
        if reset is not None:
            stage.request_reset(reset)
        stage.add_image(k * NS, f"image{k}")
        work = stage.take(timeout=1)
        assert work.frame.stamp_ns == k * NS and work.reset == reset
        stage.hand_over(work.frame, f"features{k}", work.reset)
        assert stage.snapshot().balanced

    first = ResetRequest("first")
    extract(1, first)
    extract(2)  # supersedes 1 before the pose stage took it: dropped, its reset passes on to 2
    frame, item, reset = stage.take_handed_over(timeout=1)
    assert (frame.stamp_ns, item, reset) == (2 * NS, "features2", first)
    snapshot = stage.snapshot()
    assert (snapshot.received, snapshot.dropped, snapshot.in_flight) == (2, 1, 1) and snapshot.balanced
    stage.finish_processed(frame)
    # a frame refused by the extraction stage gives its reset back to the next frame, unless a newer one waits
    second = ResetRequest("second")
    stage.request_reset(second)
    stage.add_image(3 * NS, "image3")
    work = stage.take(timeout=1)
    stage.finish_rejected("bad_image")
    stage.restore_reset(work.reset)
    stage.add_image(4 * NS, "image4")
    work = stage.take(timeout=1)
    assert work.reset == second
    stage.finish_rejected("bad_image")
    stage.request_reset(third := ResetRequest("third"))
    stage.restore_reset(work.reset)  # a newer request is pending: it stays
    extract(5, third)  # (request_reset again: the same request)
    frame, item, reset = stage.take_handed_over(timeout=1)
    assert (frame.stamp_ns, item, reset) == (5 * NS, "features5", third)
    stage.finish_processed(frame)
    snapshot = stage.snapshot()
    assert (snapshot.received, snapshot.processed, snapshot.dropped, snapshot.frames_rejected, snapshot.in_flight) \
        == (5, 2, 1, 2, 0) and snapshot.balanced
    assert stage.take_handed_over(timeout=0.05) is None
    stage.close()
    assert stage.take_handed_over() is None


@pytest.mark.parametrize("rate, mode", [(5.0, "pipelined"), (5.0, "single"), (1000.0, "pipelined")])
def test_bench_pipeline_runs_the_nodes_worker_without_ros(rate, mode, shared_dir, tmp_path):
    """``aliked-vo bench pipeline``: the node's worker loops (``run_single_stage``; ``run_extraction_stage`` +
    ``run_pose_stage``) and input stage around the VO core, fed from memory without ROS. Fed slower than ORB
    takes per frame, (nearly) every frame is processed; fed far faster, the newest-frame slots drop frames; either
    way each frame is processed, dropped or rejected exactly once and none is left in flight. The slow case allows
    drops on a machine 5x slower than this one, so that the load of other jobs cannot fail it."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "aliked_ros.cli", "bench", "pipeline",
                             str(shared_dir / "data/tum_fr2_desk"), "--rate", str(rate), "--extractors", "orb",
                             "--modes", mode, "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = json.loads(result.stdout.strip().splitlines()[-1])["runs"]
    assert run["frames_fed"] == 20 and run["in_flight_at_end"] == 0 and run["frames_rejected"] == {}
    assert run["worker_errors"] == []
    assert run["frames_processed"] + run["frames_dropped"] == 20
    assert run["pipelined"] is (mode == "pipelined") and run["latency_ms"]["p50"] > 0
    if rate == 5.0:  # 200 ms between frames, ORB's frame ~40 ms here (60 ms p50 latency measured, 2026-12-01)
        assert run["frames_processed"] >= 15
    else:  # 1 ms between frames: the slots keep only the newest
        assert run["frames_dropped"] > 0 and run["frames_processed"] >= 2
