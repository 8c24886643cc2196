"""Start and stop ROS 2 processes for tests: own process group, output to a log file, clean shutdown.

Stopping sends SIGINT (rclpy shuts down cleanly), then SIGTERM, then SIGKILL to the whole process group, each
after a timeout, so no test leaves a process behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

# Every process started here carries this variable (inherited by its children), so that any leftover can be
# found in /proc, whoever its parent is.
SESSION_MARKER = "ALIKED_ROS_TEST_SESSION"


class RosProcess:
    def __init__(self, args: list[str], name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        if not self._log.closed:  # still readable after stop()
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.running:
                return text in self.output()
            time.sleep(0.05)
        return False

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its return code."""
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGTERM, then SIGKILL to the process group; returns the exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        code = self.popen.wait()
        try:  # children that outlived their parent
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
        return code

    def __repr__(self) -> str:
        return f"RosProcess({self.name}, pid={self.popen.pid}, running={self.running})"


class RosProcessRegistry:
    """Every process the tests started, so that none outlives the suite."""

    def __init__(self) -> None:
        self._processes: list[RosProcess] = []
        self.session = uuid.uuid4().hex

    def start(self, args: list[str], name: str, env: dict[str, str], log_dir: Path) -> RosProcess:
        process = RosProcess(args, name, dict(env, **{SESSION_MARKER: self.session}), log_dir)
        self._processes.append(process)
        return process

    def run(self, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """A short command (e.g. ``ros2 param get``) to completion; output captured as text. It carries the session
        marker too, so that anything it leaves running (a ``ros2`` daemon) is found at the end."""
        return subprocess.run(args, env=dict(env, **{SESSION_MARKER: self.session}), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def stop_all(self) -> list[str]:
        """Stop every process still running; the names of those that had to be stopped here."""
        stopped = [repr(p) for p in self._processes if p.running]
        for process in self._processes:
            if not process._log.closed or process.running:
                process.stop()
        self._processes.clear()
        return stopped

    def leftover_pids(self) -> list[int]:
        """Processes anywhere on this machine that carry this session's marker (Linux /proc)."""
        needle = f"{SESSION_MARKER}={self.session}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if needle in (entry / "environ").read_bytes().split(b"\0"):
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids
