#!/usr/bin/env bash
# Runs on the lent GPU machine (see docs/calibrating.md): installs the carried wheels (.whl), runs
# `wanfit calibrate` for the models given, and returns what it wrote as $OUT/calibration-GPU.tgz
# (one archive: the device returns at most 8 files).
#   [RUNTIME=wan] bash bench/device/calibrate.sh GPU_KEY SECONDS MODEL [MODEL ...]
set -u
gpu=$1; budget=$2; shift 2
runtime=${RUNTIME:-diffusers}
sub=$([ "$runtime" = diffusers ] || echo "$runtime/")
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# A calibration an earlier call on this (still warm) machine wrote, if the tree lacks it: resumed.
[ -d /tmp/wanfit-cal ] && cp -rn /tmp/wanfit-cal/. calibration/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# run_calibration is what `wanfit calibrate` calls; fit=False: fitting needs no GPU and is done
# afterwards with `wanfit calibrate --fit-only` on the committed measurements. The progress bar
# goes to a log; each point's outcome is printed from the measurements files below.
models=$(printf "'%s'," "$@")
mkdir -p "$OUT"
timeout "$budget" python3 -c "
import wanfit.measure.calibrate as c
c.run_calibration('$gpu', [$models], fit=False, runtime='$runtime')" > "$OUT/calibrate.log" 2>&1
echo "calibrate exit $?"
python3 - "$gpu" "$sub" "$@" <<'PY'
import json, sys
gpu, sub, models = sys.argv[1], sys.argv[2], sys.argv[3:]
for model in models:
    try:
        rows = [json.loads(l) for l in open(f"calibration/{gpu}/{sub}{model}.measurements.jsonl") if l.strip()]
    except FileNotFoundError:
        print(model, "no measurements"); continue
    for r in rows:
        w, p = r["workload"], r["plan"]
        step = [s["time_s"] for s in r["stages"] if s["name"] == "step"]
        peak = max((s.get("device_used_peak_gib") or 0) for s in r["stages"]) if r["stages"] else 0
        print(f"{model} {w['height']}x{w['width']}x{w['frames']} {p['offload']}/{p['text_encoder']}/{p['dit_dtype']}"
              f"/{'tiled' if p['vae_tiling'] else 'untiled'} {r['status']} {r.get('failed_stage') or ''} "
              f"steps={[round(s, 2) for s in step]} peak={peak:.1f}")
PY
tar czf "$OUT/calibration-$gpu.tgz" -C calibration "$gpu"
mkdir -p /tmp/wanfit-cal && cp -r calibration/"$gpu" /tmp/wanfit-cal/
