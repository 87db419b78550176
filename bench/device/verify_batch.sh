#!/usr/bin/env bash
# Runs on the lent GPU machine: `wanfit verify` for each line of a runs file (the flags of one
# verify run per line, `#` comments), reports into verify-reports/, and the whole folder returned
# as $OUT/verify-reports.tgz after every run (a run cut off by the call's limit loses only itself).
#   bash bench/device/verify_batch.sh RUNS_FILE [SECONDS_PER_RUN]
set -u
runs=$1; per_run=${2:-200}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT" verify-reports
# A calibration made by an earlier call on this (still warm) machine, if the tree lacks it.
[ -d /tmp/wanfit-cal ] && cp -rn /tmp/wanfit-cal/. calibration/
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue;; esac
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "$per_run" python3 -m wanfit.cli verify $line --out verify-reports > "$OUT/last-verify.log" 2>&1
  rc=$?
  echo "exit $rc in $(( $(date +%s) - start )) s: $line"
  [ $rc -ne 0 ] && [ $rc -ne 1 ] && [ $rc -ne 3 ] && tail -5 "$OUT/last-verify.log"
  tar czf "$OUT/verify-reports.tgz" verify-reports
done < "$runs"
