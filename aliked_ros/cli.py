"""``aliked-vo``: one entry point, one subcommand per tool.

Each subcommand lives in ``aliked_ros.tools.<module>`` with ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their subcommand runs, so ``--help`` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from aliked_ros import __version__
from aliked_ros.errors import AlikedRosError

# name -> (module under aliked_ros.tools, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "synthetic sequence -> node -> replay over loopback DDS -> ATE, trajectory and pictures"),
    "run": ("run", "start the aliked_vo ROS 2 node (same as ros2 run aliked_ros vo_node)"),
    "replay": ("replay", "publish a dataset folder or bag onto ROS topics with the original stamps"),
    "extract": ("extract", "detect and describe keypoints in one image, write them to .npz"),
    "eval": ("eval", "run the VO offline on a dataset folder or bag and score it against ground truth"),
    "synth": ("synth", "render a synthetic RGB-D sequence with exact ground truth (TUM folder or ROS 2 bag)"),
    "bench": ("bench", "benchmark extractors and matcher side by side (median ms per stage); the node live (node); a long run (soak)"),
    "bench-vo": ("bench_vo", "the VO core's cost (tracking, bundle adjustment) and accuracy per solver, network excluded"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aliked-vo",
        description="aliked_ros: ALIKED visual-odometry frontend for ROS 2. Run 'aliked-vo COMMAND --help'.",
    )
    parser.add_argument("--version", action="version", version=f"aliked_ros {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known, rest = parser.parse_known_args(argv[:1] if argv and argv[0] in SUBCOMMANDS else argv)
    if known.command is None:
        parser.print_help()
        return 0 if not argv else 2
    module_name, help_text = SUBCOMMANDS[known.command]
    module = importlib.import_module(f"aliked_ros.tools.{module_name}")
    sub = argparse.ArgumentParser(prog=f"aliked-vo {known.command}", description=help_text)
    module.add_arguments(sub)
    rest, passthrough = argv[1:], []
    marker = getattr(module, "PASSTHROUGH", None)  # e.g. "--ros-args": the rest belongs to ROS
    if marker and marker in rest:
        index = rest.index(marker)
        rest, passthrough = rest[:index], rest[index:]
    args = sub.parse_args(rest)
    if marker:
        args.passthrough = passthrough
    interrupted = []

    def on_sigint(signum, frame):  # Ctrl-C: noted, then Python's KeyboardInterrupt
        interrupted.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
    try:
        return int(module.run(args) or 0)
    except (AlikedRosError, OSError) as error:  # (OSError: a file that cannot be read or written: said, not traced)
        print(f"aliked-vo {known.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # a KeyboardInterrupt raised inside rclpy's C++ code (e.g. while it converts a message) comes out as
        # another error: after Ctrl-C that is the interruption, not a defect; SIGTERM shuts rclpy down under the
        # tool (ExternalShutdownException): a stop, not a defect either
        if interrupted:
            print("interrupted", file=sys.stderr)
            return 130
        if type(error).__name__ == "ExternalShutdownException":
            print("terminated", file=sys.stderr)
            return 143
        raise


if __name__ == "__main__":
    sys.exit(main())
