#!/usr/bin/env bash
# Runs on the lent GPU machine: saves a random-weight build of MODEL as a diffusers checkpoint on the
# local disk (wanfit.measure.calibrate.save_checkpoint_dir, as calibrate does), then `wanfit verify --checkpoint` on it
# twice: with the page cache dropped (a cold load from disk) and again (a warm load from the page
# cache). The reports go to verify-reports/ and come back as $OUT/verify-reports.tgz.
#   bash bench/device/checkpoint_verify.sh MODEL VERIFY_FLAGS...
set -u
model=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT" verify-reports
ckpt=/tmp/checkpoint-$model
start=$(date +%s)
# The same save as `wanfit calibrate`'s checkpoint-load point.
python3 -c "import sys; from wanfit.measure.calibrate import save_checkpoint_dir; save_checkpoint_dir(*sys.argv[1:])" \
  "$model" "$ckpt" || exit 1
echo "saved $(du -sh "$ckpt" | cut -f1) in $(( $(date +%s) - start )) s"
for label in cold warm; do
  if [ "$label" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "page cache not dropped"; fi
  start=$(date +%s)
  python3 -m wanfit.cli verify --model "$model" --checkpoint "$ckpt" "$@" --out "verify-reports/$label" \
    > "$OUT/verify-$label.log" 2>&1
  echo "$label: exit $? in $(( $(date +%s) - start )) s"
  grep -E "Model_Initialization" "$OUT/verify-$label.log" | head -2
done
tar czf "$OUT/verify-reports.tgz" verify-reports
