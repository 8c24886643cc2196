#!/usr/bin/env bash
# Set up (or refresh) the virtual environment .venv/ in this checkout and install aliked_ros into it.
#   scripts/bootstrap.sh          runtime only (for aliked-vo)
#   scripts/bootstrap.sh --test   plus the test tools (pytest, colcon, catkin_pkg, kornia for the benchmark)
# Reuses .venv when present; reinstalls the package every time (the CMake message build takes ~15 s).
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

# torch first: a request for any other torch version pulls GBs of CUDA packages on a CPU-only machine.
# A torch already in the venv (e.g. a CUDA build on a GPU robot) is kept.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0" >&2
  pip install torch==2.13.0
fi
# The build requirements of pyproject.toml, installed once into the venv so that rebuilds need no isolation.
build_requires=$(.venv/bin/python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['build-system']['requires']))")
# shellcheck disable=SC2086
pip install $build_requires
echo "bootstrap: installing aliked_ros$extras (builds the ROS 2 messages)" >&2
pip install --no-build-isolation ".$extras"
echo "bootstrap: ready: $(.venv/bin/aliked-vo --version)" >&2
