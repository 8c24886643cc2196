"""Dataset readers behind one interface: ``open_sequence(path)`` -> a ``Sequence`` of odometry ``Frame``s with
its camera model and (when present) ground truth. Formats: TUM RGB-D folders, KITTI odometry sequences, EuRoC
``mav0`` folders, and rosbags (ROS 1 .bag, ROS 2 sqlite3/mcap)."""
from __future__ import annotations

from pathlib import Path

from aliked_ros.datasets.base import DatasetError, Prefetched, Sequence


def open_sequence(path: str | Path, camera_info: str | Path | None = None, use_depth: bool = True,
                  image_topic: str | None = None, camera_info_topic: str | None = None,
                  depth_topic: str | None = None, stereo: bool | None = False, right_image_topic: str | None = None,
                  right_camera_info_topic: str | None = None) -> Sequence:
    """Open a dataset by looking at what ``path`` holds (see each reader for its layout). ``stereo``: False
    (the default) reads the left camera only, True requires a second camera (KITTI ``image_1``, EuRoC ``cam1``,
    a bag's right image topic; a TUM folder has none), None uses it when the source has one."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"no such dataset: {path}")
    from aliked_ros.datasets import euroc, kitti, rosbag, tum

    if rosbag.is_bag(path):
        return rosbag.BagSequence(path, camera_info=camera_info, use_depth=use_depth, image_topic=image_topic,
                                  camera_info_topic=camera_info_topic, depth_topic=depth_topic, stereo=stereo,
                                  right_image_topic=right_image_topic, right_camera_info_topic=right_camera_info_topic)
    if (path / "rgb.txt").is_file() or (path / "associations.txt").is_file():
        if stereo:
            raise DatasetError(f"{path} is a TUM folder: it has no second camera for stereo")
        return tum.TumSequence(path, camera_info=camera_info, use_depth=use_depth)
    if (path / "mav0").is_dir() or (path / "cam0" / "data.csv").is_file():
        return euroc.EurocSequence(path, camera_info=camera_info, stereo=stereo)
    if (path / "calib.txt").is_file() and (path / "image_0").is_dir():
        return kitti.KittiSequence(path, camera_info=camera_info, stereo=stereo)
    raise DatasetError(f"{path} is not a TUM, KITTI or EuRoC folder nor a rosbag (see aliked-vo eval --help)")


__all__ = ["DatasetError", "Prefetched", "Sequence", "open_sequence"]
