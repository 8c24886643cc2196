"""The ``vo_node`` executable (``ros2 run aliked_ros vo_node``): the node, with a quiet exit for a Ctrl-C that
comes while its imports load (torch, rclpy: ~2 s), where Python would print a KeyboardInterrupt traceback and
``ros2 launch`` report a failed node. Exit code 130 then (interrupted), else the node's own."""
from __future__ import annotations

import sys


def main() -> int:
    try:
        from aliked_ros.ros.node import main as node_main
    except KeyboardInterrupt:
        print("aliked_vo: interrupted while starting", file=sys.stderr)
        return 130
    return node_main()


if __name__ == "__main__":
    sys.exit(main())
