"""The two install paths, exercised for real: colcon build in a temp workspace, pip install into a fresh venv.
Also package.xml: format 3, parsed by catkin_pkg, dependencies matching what the code imports."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def clean_env() -> dict[str, str]:
    """This environment without the test session's PYTHONPATH and the ROS wheels' bootstrap markers, so that a
    child interpreter sets up its own library path like a user's shell would."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "AMENT_PREFIX_PATH",
                "VIRTUAL_ENV", "CMAKE_PREFIX_PATH"):
        env.pop(key, None)
    return env


def copy_sources(destination: Path) -> None:
    """The files git would check out (tracked and untracked-not-ignored): what a clean clone holds."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, destination / name)


def run_shell(script: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    return result


def test_colcon_build_in_temp_workspace(tmp_path: Path):
    source = tmp_path / "ws" / "src" / "aliked_ros"
    copy_sources(source)
    workspace = tmp_path / "ws"
    activate = f". {VENV}/bin/activate"
    run_shell(f"{activate} && colcon build", workspace, clean_env(), 600)
    install = workspace / "install" / "aliked_ros"
    assert (install / "share" / "aliked_ros" / "package.xml").is_file()
    assert (install / "share" / "aliked_ros" / "config" / "fastdds_loopback.xml").is_file()
    assert (install / "lib" / "libaliked_ros__rosidl_typesupport_c.so").is_file()
    probe = (
        "import aliked_ros, aliked_ros.msg as m; from rclpy.serialization import serialize_message; "
        "print(m.__file__); print(len(serialize_message(m.FrameKeypoints(num_keypoints=3))))"
    )
    result = run_shell(f"{activate} && . install/setup.sh && cd / && python -c '{probe}' && aliked-vo --version",
                       workspace, clean_env(), 120)
    msg_file, size, version = result.stdout.split()[:3]
    assert Path(msg_file).is_relative_to(install), msg_file
    assert int(size) > 0 and version == "aliked_ros"
    assert os.access(install / "lib" / "aliked_ros" / "vo_node", os.X_OK)
    # the ROS 2 tool kit (scripts/bootstrap.sh --test installs it): ros2 launch finds the installed node
    assert (VENV / "bin" / "ros2").exists(), "ros2 missing: run scripts/bootstrap.sh --test"
    launched = refused_launch(f"{activate} && . install/setup.sh && cd /", workspace)
    assert f"cmd '{install}/lib/aliked_ros/vo_node" in launched, launched


def refused_launch(setup: str, cwd: Path) -> str:
    """`ros2 launch aliked_ros aliked_vo.launch.py` with an argument the node refuses: it starts the installed
    vo_node, which exits at once with its one-line error (no DDS traffic, no model); the launch's output."""
    result = subprocess.run(["bash", "-c", f"{setup} && ros2 launch aliked_ros aliked_vo.launch.py extractor:=nope"],
                            cwd=cwd, env=dict(clean_env(), ROS_HOME=str(cwd / "ros_home"), RCUTILS_COLORIZED_OUTPUT="0"),
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "aliked_vo: error: parameter extractor = 'nope'" in output, output
    assert "exit code 2" in output, output
    return output


def test_pip_install_into_fresh_venv(tmp_path: Path):
    """What a user does: a new venv, torch first (a CPU wheel here), then `pip install .` with build isolation."""
    venv = tmp_path / "venv"
    source = tmp_path / "src"
    copy_sources(source)
    env = clean_env()
    run_shell(f"{sys.executable} -m venv {venv}", tmp_path, env, 120)
    run_shell(f"{venv}/bin/pip install -q torch==2.13.0 && {venv}/bin/pip install -q {source}", tmp_path, env, 900)
    result = run_shell(
        f"{venv}/bin/aliked-vo --help && {venv}/bin/python -c 'import aliked_ros.msg as m; print(m.__file__)'",
        Path("/"), env, 120)
    assert "usage: aliked-vo" in result.stdout
    assert Path(result.stdout.split()[-1]).is_relative_to(venv)
    assert list((venv / "lib").glob("libaliked_ros__rosidl_typesupport_c.so"))
    # the executable `ros2 run` / `ros2 launch` look for (<prefix>/lib/<package>/), running this venv's interpreter
    # from outside it (no PATH, no activation): it starts and refuses a bad parameter with its one line
    node = venv / "lib" / "aliked_ros" / "vo_node"
    assert os.access(node, os.X_OK)
    result = subprocess.run([str(node), "--ros-args", "-p", "max_keypoints:=-5"], cwd="/", env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "aliked_vo: error: parameter max_keypoints = -5" in result.stderr, result


# package.xml dependency (rosdep key) -> the top-level Python module it provides
ROSDEP_MODULES = {
    "rclpy": "rclpy", "std_msgs": None, "sensor_msgs": "sensor_msgs", "geometry_msgs": "geometry_msgs",
    "nav_msgs": "nav_msgs", "visualization_msgs": "visualization_msgs", "diagnostic_msgs": "diagnostic_msgs",
    "std_srvs": "std_srvs", "tf2_ros": "tf2_ros", "builtin_interfaces": "builtin_interfaces",
    "rosgraph_msgs": "rosgraph_msgs", "launch": "launch", "launch_ros": "launch_ros",
    "rcl_interfaces": "rcl_interfaces", "ament_index_python": "ament_index_python",
    "python3-numpy": "numpy", "python3-opencv": "cv2", "python3-yaml": "yaml", "python3-torch": "torch",
    "python3-scipy": "scipy", "python3-tqdm": "tqdm", "python3-matplotlib": "matplotlib", "python3-numba": "numba",
    "python3-rosbags-pip": "rosbags",
    "python3-kornia-pip": "kornia", "python3-pytest": None, "python3-catkin-pkg": None,
    "rosidl_default_runtime": None, "tf2_msgs": "tf2_msgs", "message_filters": "message_filters",
    "ros2cli": "ros2cli", "ros2launch": None, "ros2topic": None, "ros2node": None, "ros2param": None,
    "ros2service": None,
}

# imported at run time but without a rosdep key (ros/rosdistro rosdep/python.yaml): pip only, from pyproject.toml
PIP_ONLY = {"poselib", "evo"}


def imported_modules(root: Path) -> set[str]:
    modules = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_package_xml_format3_and_dependencies_match_imports():
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO_ROOT / "package.xml"))
    assert package.package_format == 3
    assert package.name == "aliked_ros"
    import aliked_ros

    assert package.version == aliked_ros.__version__
    assert package.get_build_type() == "ament_cmake"
    run_keys = {d.name for d in package.exec_depends + package.build_export_depends}
    test_keys = {d.name for d in package.test_depends}
    unknown = (run_keys | test_keys) - ROSDEP_MODULES.keys()
    assert not unknown, f"add these dependencies to ROSDEP_MODULES: {unknown}"
    declared = {ROSDEP_MODULES[k] for k in run_keys} - {None}
    optional = {ROSDEP_MODULES[k] for k in test_keys} - {None}  # e.g. kornia, the benchmark's reference
    code = imported_modules(REPO_ROOT / "aliked_ros") | imported_modules(REPO_ROOT / "launch")
    third_party = {m for m in code if m in set(ROSDEP_MODULES.values())}
    # every third-party import is declared, and every declared runtime dependency is imported somewhere
    assert third_party - declared - optional == set(), f"imported but not in package.xml: {third_party - declared - optional}"
    assert declared - third_party == set(), f"in package.xml but never imported: {declared - third_party}"
    # the imports without a rosdep key: imported, and pip's dependencies (pyproject.toml) carry them
    assert PIP_ONLY <= code, f"PIP_ONLY lists modules the code no longer imports: {PIP_ONLY - code}"
    import tomllib

    pip_names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower()
                 for d in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert PIP_ONLY <= pip_names, f"not in pyproject.toml's dependencies: {PIP_ONLY - pip_names}"
