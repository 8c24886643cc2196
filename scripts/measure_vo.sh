#!/usr/bin/env bash
# Regenerate the README's VO tables: the shared real sequences, and synthetic runs at full camera rate, in slow
# motion and through stops and turns on the spot (exact ground truth). Prints Markdown tables; JSON reports and
# the synthetic sequences stay in OUT (default /tmp/aliked_vo_measure).
#   scripts/measure_vo.sh [--quick | --synthetic | --models]
#     --quick: the shared sequences only (~12 min here); --synthetic: the synthetic runs only;
#     --models: the four ALIKED models, and aliked-t16 with 512 and 2048 keypoints, on the shared real sequences
#               (README "Which ALIKED model, and how many keypoints"; ~5 min here)
# Needs the venv (scripts/bootstrap.sh) and $ALIKED_WEIGHTS_DIR (e.g. ../shared/models).
set -euo pipefail
cd "$(dirname "$0")/.."
VO=".venv/bin/python -m aliked_ros.cli"
OUT="${OUT:-/tmp/aliked_vo_measure}"
SHARED="${ALIKED_ROS_SHARED:-../shared}"
mkdir -p "$OUT"
runs=()
if [ "${1:-}" = "--models" ]; then
for seq in tum_fr2_desk:--no-depth tum_fr1_rpy_rgbd:--depth tum_fr1_rpy_rgbd:--no-depth kitti01_000_050:--no-stereo; do
  name=${seq%%:*}; mode=${seq#*:}
  for extractor in aliked-t16 aliked-n16 aliked-n16rot aliked-n32; do
    $VO eval "$SHARED/data/$name" --extractor "$extractor" $mode --json --quiet > "$OUT/$name$mode.$extractor.json"
    runs+=("$OUT/$name$mode.$extractor.json")
  done
  for budget in 512 2048; do  # the keypoint budget (default 1024)
    $VO eval "$SHARED/data/$name" --max-keypoints $budget $mode --json --quiet > "$OUT/$name$mode.k$budget.json"
    runs+=("$OUT/$name$mode.k$budget.json")
  done
done
elif [ "${1:-}" != "--synthetic" ]; then
for seq in tum_fr2_desk:--no-depth tum_fr1_rpy_rgbd:--depth euroc_v101_static_stereo:--no-stereo \
           euroc_v101_static_stereo:--stereo kitti01_000_050:--no-stereo; do
  name=${seq%%:*}; mode=${seq#*:}
  for extractor in aliked-t16 sift orb; do
    $VO eval "$SHARED/data/$name" --extractor "$extractor" $mode --json --quiet > "$OUT/$name$mode.$extractor.json"
    runs+=("$OUT/$name$mode.$extractor.json")
  done
done
# rolling shutter (RGB-D): TUM fr1's Kinect reads its colour rows out over a time nobody published: three values
for readout in 0.01 0.02 0.03; do
  for extractor in aliked-t16 sift orb; do
    $VO eval "$SHARED/data/tum_fr1_rpy_rgbd" --extractor "$extractor" --depth --rolling-shutter "$readout" --json \
      --quiet > "$OUT/tum_fr1_rpy_rgbd--rs$readout.$extractor.json"
    runs+=("$OUT/tum_fr1_rpy_rgbd--rs$readout.$extractor.json")
  done
done
fi
if [ "${1:-}" != "--quick" ] && [ "${1:-}" != "--models" ]; then
  # a turn on the spot seen through a rolling shutter of 20 ms, and the same motion with a global shutter (RGB-D)
  for readout in 0.02 0; do
    name="synth_rolling_$readout"
    [ -d "$OUT/$name" ] || $VO synth "$OUT/$name" --noise 2 --blur 0.5 --rate 30 --frames 150 --path loop --speed 0.3 \
      --rotations 1 --rotation-seconds 1.5 --seed 12 --rolling-shutter "$readout" > /dev/null
    for declared in 0 0.02; do
      [ "$readout" = 0 ] && [ "$declared" != 0 ] && continue
      for extractor in aliked-t16 sift orb; do
        $VO eval "$OUT/$name" --extractor "$extractor" --depth --rolling-shutter "$declared" --json --quiet \
          > "$OUT/$name--rs$declared.$extractor.json"
        runs+=("$OUT/$name--rs$declared.$extractor.json")
      done
    done
  done
  while read -r name args; do
    [ -d "$OUT/$name" ] || $VO synth "$OUT/$name" --noise 2 --blur 0.5 $args > /dev/null
    $VO eval "$OUT/$name" --extractor aliked-t16 --no-depth --json --quiet > "$OUT/$name.aliked-t16.json"
    runs+=("$OUT/$name.aliked-t16.json")
  done <<'SEQ'
synth_30hz --rate 30 --frames 300
synth_120hz --rate 120 --frames 120 --seed 1
synth_120hz_area --rate 120 --frames 120 --seed 1 --pixel-samples 2
synth_long --rate 30 --frames 1200 --path loop --ramp 2 --stops 2 --rotations 2
synth_stereo --rate 30 --frames 300 --stereo 0.12
synth_60hz_stops --rate 60 --frames 1200 --path loop --speed 0.15 --stops 3 --rotations 3 --seed 22
SEQ
  # the same 60 Hz run with stops and turns on the spot as RGB-D (metric; the folder linked under another name)
  ln -sfn synth_60hz_stops "$OUT/synth_60hz_stops_rgbd"
  $VO eval "$OUT/synth_60hz_stops_rgbd" --extractor aliked-t16 --depth --json --quiet \
    > "$OUT/synth_60hz_stops_rgbd.aliked-t16.json"
  runs+=("$OUT/synth_60hz_stops_rgbd.aliked-t16.json")
fi
.venv/bin/python - "${runs[@]}" <<'PY'
import json, sys
print("| sequence | extractor | posed / frames | maps | alignment | ATE | ATE / path | path est / true | rot err median (deg) | t-dir err median (deg) | missed motion | drift | NEES / dof | ms/frame |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for path in sys.argv[1:]:
    r = json.load(open(path))
    name = r["source"].rstrip("/").split("/")[-1] + (" (stereo)" if r.get("stereo") else "")
    if r.get("rolling_shutter_s"):
        name += f" (rolling shutter {r['rolling_shutter_s'] * 1000:g} ms)"
    ate, true = r["ate_rmse_m"], r["true_path_length_m"]  # null: nothing scored (a map that never started)
    ratio = f"{r['path_length_m'] / true:.3f}" if true and true > 1e-3 else "-"
    share = f"{100 * ate / true:.2f} %" if ate is not None and true and true > 1e-3 else "-"
    drift = "-" if r["rpe_trans_pct"] is None else f"{r['rpe_trans_pct']:.2f} % / {r['rpe_segment_m']:.2g} m"
    rot, tdir = r["rot_err_deg"]["median"], r["tdir_err_deg"]["median"]
    nees = "-" if r.get("nees_ratio") is None else f"{r['nees_ratio']:.2f}"
    budget = r.get("max_keypoints")  # shown when not the default
    extractor = r["extractor"] + (f" ({budget} keypoints)" if budget not in (None, 1024) else "")
    print(f"| {name} | {extractor} | {r['poses']} / {r['frames']} | {len(r['segments'])} | {r['alignment']} | "
          f"{'-' if ate is None else f'{ate * 1000:.2f} mm'} | {share} | {ratio} | "
          f"{'-' if rot is None else f'{rot:.3f}'} | "
          f"{'-' if tdir is None else f'{tdir:.2f}'} | {r['missed_motion_pairs']} | {drift} | "
          f"{nees} | {r['frame_ms_median']:.0f} |")
PY
