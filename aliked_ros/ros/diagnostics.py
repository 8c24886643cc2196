"""The node's ``/diagnostics`` content, built from one input-stage snapshot (ROS-free: levels are the
``diagnostic_msgs/DiagnosticStatus`` values OK 0, WARN 1, ERROR 2).

Keys: ``frames_received`` = ``frames_processed`` + ``frames_dropped`` + ``frames_rejected`` +
``frames_in_flight`` (0 once idle); ``frames_rejected`` = the sum of every ``rejected_<kind>`` (images left
without depth are ``rejected_no_depth``, also shown as ``images_without_depth``; stereo left images without their
right image ``rejected_no_right`` / ``images_without_right``); ``stereo_matches``: the last stereo frame's
keypoints with a right match; ``camera_infos_right``: right camera_infos received; ``warning_<kind>``: frames
processed despite a problem; ``resets``, ``tf_stamps_skipped`` (transforms not sent because their stamp was
that of the last one sent), ``odometry_null`` (null odometry sent while lost), the tracking state of the
last frame and its ``map_id``, input rate and latency.
"""
from __future__ import annotations

from aliked_ros.odometry import TrackingState
from aliked_ros.ros.input_stage import InputSnapshot

OK, WARN, ERROR = 0, 1, 2


def diagnostic_values(snapshot: InputSnapshot) -> tuple[int, str, dict[str, str]]:
    """(level, message, key -> value)."""
    tracking = snapshot.tracking
    state = tracking.get("state")
    if snapshot.camera_infos == 0 or (snapshot.processed == 0 and snapshot.rejected.get("bad_camera_info")):
        level, message = ERROR, "no usable camera_info"
    elif state == TrackingState.LOST:
        level, message = WARN, "tracking lost" + (" on a frame of noise (a dark or covered camera?)"
                                                  if tracking.get("noise_frame") else "")
    elif snapshot.rejected or snapshot.warnings:
        problems = {**snapshot.rejected, **snapshot.warnings}
        level, message = WARN, "bad inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(problems.items()))
    else:
        level, message = OK, "tracking" if state is not None else "waiting for images"
    values = {
        "input_rate_hz": f"{snapshot.input_rate_hz:.2f}", "processing_latency_ms": f"{snapshot.latency_ms:.1f}",
        "frames_received": snapshot.received, "frames_processed": snapshot.processed,
        "frames_dropped": snapshot.dropped, "frames_rejected": snapshot.frames_rejected,
        "frames_in_flight": snapshot.in_flight, "resets": snapshot.resets,
        "tracking_state": TrackingState(state).name if state is not None else "none",
        "map_id": tracking.get("map_id", 0),
        "inliers": tracking.get("inliers", 0), "keypoints": tracking.get("keypoints", 0),
        **({"stereo_matches": tracking["stereo_matches"]} if "stereo_matches" in tracking else {}),
        **{f"rejected_{k}": v for k, v in sorted(snapshot.rejected.items())},
        **{f"warning_{k}": v for k, v in sorted(snapshot.warnings.items())},
        **{k: v for k, v in sorted(snapshot.counters.items())},
    }
    for stream, count in snapshot.unmatched.items():
        values[f"images_without_{stream}"] = count
    return level, message, {k: str(v) for k, v in values.items()}
