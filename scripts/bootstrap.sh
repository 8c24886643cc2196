#!/usr/bin/env bash
# Set up (or refresh) the virtual environment .venv/ in this checkout and install aliked_ros into it.
#   scripts/bootstrap.sh          runtime only (for aliked-vo)
#   scripts/bootstrap.sh --test   plus the test tools (pytest, colcon, catkin_pkg, kornia for the benchmark), the
#                                 ROS 2 command-line kit from $ALIKED_ROS_SHARED/ros-python when it is there (ros2,
#                                 launch, launch_ros, message_filters), and tf2_msgs (no wheel exists) generated
#                                 from test/tf2_msgs into the venv, so that tests can observe the node's TF output
# Reuses .venv when present; reinstalls the package every time (the CMake message build takes ~15 s).
# Dependencies at the versions in scripts/constraints.txt (tested; ALIKED_ROS_UNPINNED=1: the newest allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
# A parent process of the ROS wheels' bootstrapper may have left these behind; let the venv set its own.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE PYTHONPATH AMENT_PREFIX_PATH || true

extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  python3 -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
constraints=(-c scripts/constraints.txt)
if [ "${ALIKED_ROS_UNPINNED:-0}" = "1" ]; then constraints=(); echo "bootstrap: unpinned (newest allowed)" >&2; fi

# torch first: a request for any other torch version pulls GBs of CUDA packages on a CPU-only machine.
# A torch already in the venv (e.g. a CUDA build on a GPU robot) is kept.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0" >&2
  pip install torch==2.13.0
fi
# The build requirements of pyproject.toml, installed once into the venv so that rebuilds need no isolation.
build_requires=$(.venv/bin/python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['build-system']['requires']))")
# shellcheck disable=SC2086
pip install "${constraints[@]}" $build_requires
echo "bootstrap: installing aliked_ros$extras (builds the ROS 2 messages)" >&2
pip install "${constraints[@]}" --no-build-isolation ".$extras"

if [ "${1:-}" = "--test" ]; then
  kit="${ALIKED_ROS_SHARED:-../shared}/ros-python"
  if [ -x "$kit/install.sh" ]; then
    echo "bootstrap: installing the ROS 2 tool kit from $kit" >&2
    PY=.venv/bin/python "$kit/install.sh" >&2
  else
    echo "bootstrap: no ROS 2 tool kit at $kit: the tests that drive ros2 launch/topic/param/service will skip" >&2
  fi
  if ! .venv/bin/python -c "import tf2_msgs.msg" 2>/dev/null; then
    echo "bootstrap: generating tf2_msgs (test only) into .venv" >&2
    venv="$(cd .venv && pwd)"
    mkdir -p build
    cmake -S test/tf2_msgs -B build/tf2_msgs -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$venv/bin/python" \
      -DBUILD_TESTING=OFF >build/tf2_msgs.log 2>&1 \
      && cmake --build build/tf2_msgs --parallel "$(nproc)" >>build/tf2_msgs.log 2>&1 \
      && cmake --install build/tf2_msgs >>build/tf2_msgs.log 2>&1 \
      || { echo "bootstrap: tf2_msgs build failed, see build/tf2_msgs.log" >&2; exit 1; }
  fi
fi
echo "bootstrap: ready: $(.venv/bin/aliked-vo --version)" >&2
