#!/usr/bin/env bash
# The CUDA checks in one command, for a GPU machine that has only Python 3.12 + torch + numpy + OpenCV (no
# network, no ROS): CUDA parity tests, extraction benchmark against kornia on the same GPU (plain and CUDA
# graph), a profile of the extraction and its numeric variants (scripts/profile_cuda.py), the offline eval
# pipeline's ms/frame, the node's worker without ROS fed at 200 Hz (bench pipeline); one JSON summary on stdout
# (and in $OUT/gpu_check.json).
#
#   scripts/gpu_check.sh prepare        here, with network: Python 3.12 wheels of what the checks import and
#                                       that machine lacks, plus weights, reference outputs and one sequence,
#                                       into .gpu/ (git-ignored; ~45 MB, under the device tool's 64 MiB carry)
#   scripts/gpu_check.sh run            there: installs the wheels into a temporary folder (no network), runs
#                                       the checks (90-220 s on an H200); device tool: run(command=
#                                       "STEP_TIMEOUT=150 scripts/gpu_check.sh run", carry=[".gpu"], timeout_s=400)
#   scripts/gpu_check.sh run --cpu      the same steps on the CPU (a dry run of this script where no GPU is)
#
# Environment: PYTHON (default python3), GPU_DIR (default .gpu), SHARED (default ../shared), PY_VERSION
# (wheels' Python, default 3.12), STEP_TIMEOUT (seconds per step, default 300). The run step skips the wheel install when PYTHON already imports them all.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=${GPU_DIR:-.gpu}
PYTHON=${PYTHON:-python3}
SHARED=${SHARED:-../shared}
PY_VERSION=${PY_VERSION:-3.12}
# what the ROS-free core, its tests and the benchmark import beyond torch/numpy/scipy/OpenCV/matplotlib/pandas/
# seaborn/pillow/pytest (present on the GPU machines, ../shared/gpu/README.md)
WHEELS="poselib kornia==0.9.0 kornia_rs evo natsort numexpr argcomplete colorama pygments rosbags apsw lz4
        backports.zstd ruamel.yaml typing_extensions pyyaml tqdm packaging"

mode=${1:-}
shift || true

prepare() {
  mkdir -p "$GPU_DIR/whl" "$GPU_DIR/shared/models" "$GPU_DIR/shared/data"
  local pip="${PIP:-.venv/bin/python -m pip}"
  # shellcheck disable=SC2086
  if ! $pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$GPU_DIR/whl" $WHEELS; then
    if [ -d "$SHARED/gpu/wheels-cp312" ]; then
      echo "gpu_check: pip download failed; using $SHARED/gpu/wheels-cp312" >&2
      cp "$SHARED"/gpu/wheels-cp312/*.whl "$GPU_DIR/whl/"
    else
      echo "gpu_check: pip download failed and no $SHARED/gpu/wheels-cp312" >&2
      exit 1
    fi
  fi
  cp "$SHARED"/models/aliked-t16.pth "$SHARED"/models/aliked-n16.pth "$GPU_DIR/shared/models/"
  rm -rf "$GPU_DIR/shared/reference" "$GPU_DIR/shared/data/tum_fr2_desk"
  cp -r "$SHARED/reference" "$GPU_DIR/shared/"
  cp -r "$SHARED/data/tum_fr2_desk" "$GPU_DIR/shared/data/"
  # the images the reference outputs were made from (paths relative to shared/), wherever they live
  "${PREP_PYTHON:-python3}" - "$SHARED" "$GPU_DIR/shared" <<'PY'
import json, shutil, sys
from pathlib import Path
shared, target = Path(sys.argv[1]), Path(sys.argv[2])
for entry in json.loads((shared / "reference/aliked/manifest.json").read_text()).values():
    (target / entry["image"]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared / entry["image"], target / entry["image"])
PY
  echo "gpu_check: prepared $GPU_DIR: $(ls "$GPU_DIR/whl" | wc -l) wheels, $(du -sh "$GPU_DIR" | cut -f1) in all" >&2
}

run() {
  local device=cuda
  if [ "${1:-}" = "--cpu" ]; then device=cpu; fi
  local work site
  work=$(mktemp -d)
  site="$work/site"
  if ! "$PYTHON" -c "import poselib, kornia, evo, rosbags, yaml, tqdm" 2>/dev/null; then
    "$PYTHON" -m pip install --disable-pip-version-check -q --no-index --no-deps --target "$site" "$GPU_DIR"/whl/*.whl
  fi
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export ALIKED_ROS_SHARED="$PWD/$GPU_DIR/shared" ALIKED_WEIGHTS_DIR="$PWD/$GPU_DIR/shared/models"
  local images=("$GPU_DIR"/shared/data/tum_fr2_desk/rgb/*.png)
  local tests repeat warmup
  if [ "$device" = cuda ]; then
    tests="cuda"
    repeat=10 warmup=5
  else  # the same steps on the CPU: the CPU parity tests and fewer timed runs
    tests="reference_cpu or static_shape"
    images=("${images[@]:0:4}")
    repeat=1 warmup=1
  fi
  set +e
  echo "gpu_check: $(date -u +%T) pytest" >&2
  timeout "${STEP_TIMEOUT:-300}" "$PYTHON" -m pytest -q -p no:cacheprovider test/test_features.py test/test_extraction_paths.py -k "$tests" \
    --junitxml="$work/pytest.xml" > "$work/pytest.log" 2>&1
  local pytest_rc=$?
  tail -n 15 "$work/pytest.log" >&2
  if [ -n "${OUT:-}" ]; then cp "$work/pytest.log" "$OUT/pytest.log"; fi
  echo "gpu_check: $(date -u +%T) bench extract" >&2
  timeout "${STEP_TIMEOUT:-300}" "$PYTHON" -m aliked_ros.cli bench extract "${images[@]}" --extractors aliked-t16 --device "$device" --no-cuda-graph \
    --repeat "$repeat" --warmup "$warmup" --json > "$work/bench.json" 2> "$work/bench.err"
  local bench_rc=$?
  local graph_rc=0
  if [ "$device" = cuda ]; then
    echo "gpu_check: $(date -u +%T) bench extract (CUDA graph)" >&2
    timeout "${STEP_TIMEOUT:-300}" "$PYTHON" -m aliked_ros.cli bench extract "${images[@]}" --extractors aliked-t16 --device cuda \
      --repeat "$repeat" --warmup "$warmup" --json > "$work/bench_graph.json" 2> "$work/bench_graph.err"
    graph_rc=$?
    echo "gpu_check: $(date -u +%T) profile" >&2
    timeout "${STEP_TIMEOUT:-300}" "$PYTHON" scripts/profile_cuda.py "$GPU_DIR/shared" --json "$work/profile.json" \
      > "$work/profile.txt" 2>&1 || echo "gpu_check: profile failed" >&2
    if [ -n "${OUT:-}" ]; then cp "$work/profile.txt" "$OUT/profile.txt"; fi
  fi
  echo "gpu_check: $(date -u +%T) eval" >&2
  timeout "${STEP_TIMEOUT:-300}" "$PYTHON" -m aliked_ros.cli eval "$GPU_DIR/shared/data/tum_fr2_desk" --extractor aliked-t16 --device "$device" \
    --json > "$work/eval.json" 2> "$work/eval.err"
  local eval_rc=$?
  if [ -n "${OUT:-}" ]; then cp "$work/eval.json" "$OUT/eval.json" 2>/dev/null || true; fi
  # the node's worker without ROS, fed at 200 Hz (2 s of a synthetic 200 Hz camera; 0.3 s in the CPU dry run)
  local synth_frames=400
  if [ "$device" = cpu ]; then synth_frames=60; fi
  echo "gpu_check: $(date -u +%T) bench pipeline at 200 Hz" >&2
  timeout "${STEP_TIMEOUT:-300}" "$PYTHON" -m aliked_ros.cli synth "$work/synth200" --rate 200 --frames "$synth_frames" \
    > /dev/null 2> "$work/pipeline.err" &&
  timeout "${STEP_TIMEOUT:-300}" "$PYTHON" -m aliked_ros.cli bench pipeline "$work/synth200" --rate 200 \
    --extractors aliked-t16 --device "$device" --json > "$work/pipeline.json" 2>> "$work/pipeline.err"
  local pipeline_rc=$?
  set -e
  "$PYTHON" - "$work" "$device" "$pytest_rc" "$bench_rc" "$graph_rc" "$eval_rc" "$pipeline_rc" <<'EOF'
import json, os, sys, xml.etree.ElementTree as ET
from pathlib import Path

work, device = Path(sys.argv[1]), sys.argv[2]
rcs = dict(zip(("pytest", "bench", "bench_graph", "eval", "pipeline"), map(int, sys.argv[3:8])))

def load(name):
    try:
        return json.loads((work / name).read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        err = work / name.replace(".json", ".err")
        return {"error": (err.read_text()[-800:] if err.exists() else "no output")}

summary = {"device": device, "exit_codes": rcs}
try:
    import torch
    summary["torch"] = torch.__version__
    summary["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
except Exception as error:  # report, do not fail the summary
    summary["torch"] = f"import failed: {error}"
try:
    suite = ET.parse(work / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = suite.findall("testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    summary["pytest"] = {"passed": len(cases) - len(failed) - len(skipped), "failed": failed, "skipped": len(skipped)}
except (OSError, ET.ParseError, AttributeError) as error:
    summary["pytest"] = {"error": str(error)}
for key, name in (("extract", "bench.json"), ("extract_cuda_graph", "bench_graph.json")):
    if key == "extract_cuda_graph" and device != "cuda":
        continue
    report = load(name)
    entry = report.get("extractors", {}).get("aliked-t16", report)
    summary[key] = {k: entry.get(k) for k in ("total", "dense_map", "detect", "describe", "graph", "match",
                                                "keypoints", "kornia", "ratio_total_vs_kornia") if k in entry}
eval_report = load("eval.json")
summary["eval"] = {k: v for k, v in eval_report.items()
                   if k in ("frames", "frames_posed", "frame_ms_median", "ate_mm", "alignment", "error")
                   or k.endswith("_ms_median") or k.startswith("ate")}
pipeline_report = load("pipeline.json")
summary["pipeline_200hz"] = [{k: run.get(k) for k in ("mode", "frames_fed", "frames_processed", "frames_dropped",
                                                    "frames_rejected", "in_flight_at_end", "worker_errors",
                                                    "throughput_hz", "latency_ms", "extract_ms_median", "error")}
                             for run in pipeline_report.get("runs", [pipeline_report])]
extract_ms = min(filter(None, [summary.get("extract", {}).get("total"),
                               summary.get("extract_cuda_graph", {}).get("total")]), default=None)
ratio = min(filter(None, [summary.get("extract", {}).get("ratio_total_vs_kornia"),
                          summary.get("extract_cuda_graph", {}).get("ratio_total_vs_kornia")]), default=None)
summary["targets"] = {
    "extract_ms_median_le_1.5": extract_ms is not None and extract_ms <= 1.5,
    "speedup_vs_kornia_ge_3": ratio is not None and ratio <= 1 / 3,
    "eval_ms_per_frame_le_5": (eval_report.get("frame_ms_median") or 1e9) <= 5,
}
# keeps up: the pipelined worker drops nothing of a 200 Hz camera (no DDS in this measure)
pipelined = [r for r in summary["pipeline_200hz"] if r.get("mode") == "pipelined"]
summary["targets"]["pipeline_keeps_up_200hz_no_ros"] = bool(pipelined) and \
    pipelined[0].get("frames_processed") == pipelined[0].get("frames_fed")
text = json.dumps(summary)
print(text)
if os.environ.get("OUT"):
    Path(os.environ["OUT"], "gpu_check.json").write_text(text + "\n")
sys.exit(1 if any(rcs.values()) else 0)
EOF
}

case "$mode" in
  prepare) prepare ;;
  run) run "$@" ;;
  *) echo "usage: scripts/gpu_check.sh prepare | run [--cpu]" >&2; exit 2 ;;
esac
