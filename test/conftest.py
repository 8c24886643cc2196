"""Shared test fixtures: the shared test-data location, one loaded model per session, and a real ROS 2 graph
on loopback (every ROS test goes through ``ros_env``/``ros_process``; no test talks DDS off this machine)."""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pytest

# Tests exercise the checkout's Python code (with the generated messages of the installed build, found through
# aliked_ros.__path__), in this process and in every process they start.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(Path(__file__).parent)]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))

from aliked_ros.ros.dds import apply_loopback_environment, loopback_environment  # noqa: E402
from ros_processes import RosProcess, RosProcessRegistry  # noqa: E402

SHARED_ENV = "ALIKED_ROS_SHARED"

# The pytest process itself joins ROS graphs: confine it to loopback before any participant exists.
apply_loopback_environment()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared test data (weights, sequences, reference outputs): $ALIKED_ROS_SHARED, default ../shared."""
    path = Path(os.environ.get(SHARED_ENV, REPO_ROOT.parent / "shared")).resolve()
    if not (path / "models").is_dir() or not (path / "data").is_dir():
        pytest.fail(f"shared test data not found at {path}: set {SHARED_ENV} to the folder holding models/ and data/")
    return path


@pytest.fixture(scope="session")
def weights_dir(shared_dir: Path) -> Path:
    return shared_dir / "models"


_used_domains: set[int] = set()


@pytest.fixture
def ros_domain() -> int:
    """A ROS_DOMAIN_ID of its own for each test, so tests never see each other's topics."""
    rng = random.Random(os.getpid())
    while True:
        domain = rng.randint(1, 101)
        if domain not in _used_domains or len(_used_domains) > 90:
            _used_domains.add(domain)
            return domain


@pytest.fixture
def ros_env(ros_domain: int) -> dict[str, str]:
    """Environment for ROS processes of this test: loopback DDS, the test's domain."""
    return loopback_environment(ros_domain)


@pytest.fixture
def ros_context(ros_domain: int):
    """An rclpy context in this (pytest) process on the test's domain."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    try:
        yield context
    finally:
        context.try_shutdown()


_registry = RosProcessRegistry()


@pytest.fixture
def ros_process(ros_env: dict[str, str], tmp_path: Path):
    """Factory: ``ros_process([args...], name=...)`` starts a process on the test's graph; stopped at teardown."""

    def start(args: list[str], name: str, extra_env: dict[str, str] | None = None) -> RosProcess:
        env = dict(ros_env, **(extra_env or {}))
        return _registry.start(args, name=name, env=env, log_dir=tmp_path)

    yield start
    _registry.stop_all()


@pytest.fixture
def ros_command(ros_env: dict[str, str]):
    """Run a short command on the test's graph to completion: ``ros_command([args...], timeout=60, extra_env={})``
    -> CompletedProcess (text output)."""

    def run(args: list[str], timeout: float = 60.0, extra_env: dict[str, str] | None = None):
        return _registry.run(args, env=dict(ros_env, **(extra_env or {})), timeout=timeout)

    return run


def leftover_test_processes() -> list[int]:
    """Processes started by this test session (and their children) that are still alive."""
    return _registry.leftover_pids()


@pytest.fixture(scope="session", autouse=True)
def _no_orphan_processes():
    yield
    _registry.stop_all()
    deadline = time.monotonic() + 10  # a process told to stop (e.g. `ros2 daemon stop`) may take a moment
    while (leftovers := _registry.leftover_pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers, f"processes started by the tests still run after the suite: pids {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def _fused_cpu_kernels_built():
    """ALIKED-t16's fused CPU kernels compiled (or loaded from the disk cache) before any test starts a node: on a
    machine's first run that takes ~30 s, which would otherwise fall inside the first node's start-up timeout.
    (An extractor builds them at construction; without the shared weights there is nothing to start.)"""
    weights = Path(os.environ.get(SHARED_ENV, REPO_ROOT.parent / "shared")) / "models" / "aliked-t16.pth"
    if weights.is_file():
        from aliked_ros.features import ExtractorConfig, create_extractor

        create_extractor("aliked-t16", ExtractorConfig(weights=str(weights), device="cpu"))


@pytest.fixture(scope="session")
def extractor_cache(weights_dir: Path):
    """Loaded extractors shared by the whole session: ``extractor_cache(name, **config)``."""
    from aliked_ros.features import ExtractorConfig, create_extractor

    cache: dict = {}

    def get(name: str = "aliked-t16", **options):
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            if name.startswith("aliked") and "weights" not in options:
                options["weights"] = str(weights_dir / f"{name}.pth")
            cache[key] = create_extractor(name, ExtractorConfig(**options))
        return cache[key]

    return get
