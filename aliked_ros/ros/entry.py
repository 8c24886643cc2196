"""The ``vo_node`` executable (``ros2 run aliked_ros vo_node``): the node, with a quiet exit for a Ctrl-C that
comes while its imports load (torch, rclpy: ~2 s), where Python would print a traceback and ``ros2 launch`` report
a failed node. Exit code 130 then (interrupted), else the node's own.

A KeyboardInterrupt raised inside a compiled extension's initialisation does not reach here as one: pybind11 turns
it into ``ImportError: initialization failed`` (scipy.optimize, poselib), which a package may wrap again
(RuntimeError). So the SIGINT itself is recorded, and any failure of the imports after one is the interruption."""
from __future__ import annotations

import os
import signal
import sys


def exit_without_teardown(code: int) -> None:
    """Flush stdout and stderr and end the process now, without the interpreter's exit: for when compiled code may
    still run (a stage's thread in torch or numba) or be half-initialised (an import interrupted), where tearing the
    extension modules down would abort the process (std::terminate) instead of exiting with ``code``."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> int:
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        from aliked_ros.ros.node import main as node_main
    except BaseException:
        if not interrupted:
            raise
        node_main = None
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:  # also one that an import swallowed
        print("aliked_vo: interrupted while starting", file=sys.stderr, flush=True)
        exit_without_teardown(130)
    return node_main()


if __name__ == "__main__":
    sys.exit(main())
