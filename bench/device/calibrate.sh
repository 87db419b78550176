#!/usr/bin/env bash
# Runs on the lent GPU machine (see docs/calibrating.md): installs the carried wheels (.whl), runs
# `wanfit calibrate` for the models given, and copies what it wrote into $OUT.
#   bash bench/device/calibrate.sh GPU_KEY SECONDS MODEL [MODEL ...]
set -u
gpu=$1; budget=$2; shift 2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# run_calibration is what `wanfit calibrate` calls; fit=False: fitting needs no GPU and is done
# afterwards with `wanfit calibrate --fit-only` on the committed measurements.
models=$(printf "'%s'," "$@")
timeout "$budget" python3 -c "
import wanfit.calibrate as c
c.run_calibration('$gpu', [$models], fit=False)" 2>&1 | tail -40
mkdir -p "$OUT" && cp calibration/"$gpu"/* "$OUT"/ 2>/dev/null
ls -la "$OUT"
