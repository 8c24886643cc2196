"""A short soak (``aliked-vo bench soak``) in CI: 500 synthetic frames into the live node over loopback DDS.

The full run (10,000 frames, figures in RELIABILITY.md) checks the issue's targets as stated. What 500 frames can
check with meaning, and what they cannot:
- frame accounting, exceptions, the node's exit code: exact at any length (asserted as in the full run);
- threads and open file descriptors: a leak of one per frame or per reset (the loop resets the map about once per
  lap of 300 frames) shows at once (asserted: no growth beyond the background-mapping thread coming and going);
- RSS slope: over the ~400 frames after warm-up the fit follows the map filling up (max_keyframes) and the
  resets of the loop (a CI run under load 6 measured 6.7 MB / 1000 frames: 3 MB over 400 frames, with two
  resets; the full run's 10,000 frames give 0.13), so the 1 MB target cannot be told apart from warm-up here.
  Asserted: below 20 MB / 1000 frames, which a leak of anything per frame bigger than ~20 kB (an image is
  230 kB, a keypoints message ~70 kB) exceeds, and less than 10 MB of growth in all;
- latency drift: 50 frames per window on a shared 2-core machine make a p99 (the 1-2 largest samples) swing by
  more than 20 % between windows without any drift, and a median moves with the load other jobs put on the
  machine: no timed assertion (the benchmarks measure latency). Asserted: the node keeps up (more than 90 % of
  the frames processed: the node drops the older of two waiting frames, so a node that fell behind would drop
  every other one) and reports its latency in both windows.
"""
from __future__ import annotations

from aliked_ros.tools.soak import SoakConfig, run_soak

FRAMES = 500
RATE_HZ = 12.0


def test_short_soak(ros_domain, tmp_path):
    report = run_soak(SoakConfig(frames=FRAMES, rate_hz=RATE_HZ, domain_id=ros_domain,
                                 log_path=tmp_path / "node.log"))
    summary = f"{report}\nnode log:\n{(tmp_path / 'node.log').read_text(errors='replace')[-3000:]}"
    # every frame accounted: reliable QoS loses nothing in transport; the node's own identity holds once idle
    assert report.frames_published == FRAMES and report.transport_lost == 0, summary
    assert report.frames_unaccounted == 0, summary
    assert report.frames_processed + report.frames_dropped + report.frames_rejected == FRAMES, summary
    assert report.frames_rejected == 0 and report.frames_processed > 0.9 * FRAMES, summary
    # every processed frame's keypoints and status arrived (reliable outputs)
    assert report.outputs_received["keypoints"] == report.outputs_received["status"] == report.frames_processed
    assert "TRACKING" in report.tracking_states, summary
    assert report.exceptions == 0 and report.node_exit_code == 0, summary
    assert report.threads["end"] <= report.threads["start"] + 1, summary  # + the BA thread, if it runs then
    assert report.open_files["end"] <= report.open_files["start"], summary
    assert report.rss_slope_mb_per_1000_frames is not None and report.rss_slope_mb_per_1000_frames < 20.0, summary
    assert report.rss_mb["end"] - report.rss_mb["start"] < 10.0, summary
    assert report.latency_median_ms["start"] is not None and report.latency_median_ms["end"] is not None
    assert report.latency_p99_ms["start"] is not None and report.latency_p99_ms["end"] is not None
