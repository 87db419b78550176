#!/usr/bin/env bash
# Runs on a lent multi-GPU machine (nvidia-h100-x2/-x4/-x8, nvidia-h200-x2/-x4/-x8; issue 19), with .whl carried
# (run's carry: [".whl"]). One phase per call (a call has at most 10 minutes; every phase resumes where the last
# call on this warm machine stopped, and returns what it has so far under $OUT after every point or run):
#
#   bash bench/device/multi_gpu_verify.sh check                  # tiny configs on 2 GPUs over NCCL: every
#        several-GPU path the CPU tests cannot run (ring attention, NCCL collectives, FSDP1 sync_module_states,
#        per-rank NVML peaks, a capped rank); about 2 minutes
#   bash bench/device/multi_gpu_verify.sh calibrate N [SECONDS] [MODEL ...]
#        `wanfit calibrate --gpus N` for both runtimes (default model wan2.2-ti2v-5b): measurements under
#        calibration/<gpu>/gpus-N/ and calibration/<gpu>/wan/gpus-N/, returned as $OUT/calibration-gpus-N.tgz
#   bash bench/device/multi_gpu_verify.sh verify N [SECONDS_PER_RUN] [RUN ...]
#        issue 19's verify runs for N GPUs (RUN: their names below; default: every run for N), reports returned
#        as $OUT/verify-reports-gpus-N.tgz
#
# Prelude: /work/shared/device/prelude.sh's two lines (that folder does not travel), then NVLink multicast off in
# NCCL, PyTorch and NVSHMEM, as the device docs require for every program started on these machines (KINDS.md).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True} PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$OUT"
phase=${1:?phase: check | calibrate N | verify N}; shift
gpu_key=$(python3 -c "
from wanfit.measure.local_gpu import local_gpu
from wanfit.vocabulary.profiles import match_local_gpu
local = local_gpu(); p = match_local_gpu(*local) if local else None
print(p.key if p else 'h100')")
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
nvidia-smi topo -m > "$OUT/topology.txt" 2>&1
# What an earlier call on this (still warm) machine measured, if the tree lacks it.
[ -d /tmp/wanfit-mgpu ] && cp -rn /tmp/wanfit-mgpu/. calibration/

check() {
  timeout 540 python3 - <<'PY' 2>&1 | tee "$OUT/check.log"
import dataclasses
from wanfit.measure.official.tiny import tiny_arch
from wanfit.measure.tiny import tiny_spec
from wanfit.measure.worker import run_in_subprocess
from wanfit.vocabulary.catalog import MODELS
from wanfit.vocabulary.workload import Plan, Workload

def wl(key, rows=2):
    s = MODELS[key].spatial_stride
    return Workload(model=key, height=rows * s, width=2 * s, frames=5, steps=3, guidance=5.0,
                    guidance_2=MODELS[key].defaults.guidance_2)

runs = [("official u2 dit+t5 fsdp", "wan2.2-ti2v-5b", Plan(runtime="wan", dit_dtype="fp32", gpus=2, ulysses=2,
                                                            dit_fsdp=True, t5_fsdp=True), None),
        ("official u2 no fsdp", "wan2.2-t2v-a14b", Plan(runtime="wan", dit_dtype="bf16", gpus=2, ulysses=2), None),
        ("diffusers u2 fsdp2", "wan2.2-ti2v-5b", Plan(gpus=2, ulysses=2, dit_fsdp=True), None),
        ("diffusers ring2 (cuDNN)", "wan2.2-ti2v-5b", Plan(gpus=2, ring=2), None),
        ("diffusers u2 capped 8 GiB", "wan2.1-t2v-1.3b", Plan(gpus=2, ulysses=2), 8.0)]
def spec(key, ring):
    # cuDNN attention (the ring's backend under `auto`) takes head dims in multiples of 8: 16, not tiny_spec's 12
    s = tiny_spec(key)
    return s.model_copy(update={"transformer": {**s.transformer, "attention_head_dim": 16}}) if ring else s

for label, key, plan, cap in runs:
    extra = (dict(arch=dataclasses.asdict(tiny_arch())) if plan.runtime == "wan"
             else dict(spec=spec(key, plan.ring > 1)))
    m = run_in_subprocess(wl(key), plan, device="cuda", memory_cap_gib=cap, **extra)
    print(f"{label}: {m.status} {m.failed_stage or ''} {(m.error or '')[:300]} | {m.distributed and m.distributed.nccl_version}")
    for r in m.ranks:
        comm = {k: (c.calls, round(c.time_s, 4)) for k, c in r.collectives().items()}
        print(f"  rank {r.rank} {r.device} {r.status} peak {r.peak_device_used_gib} context {r.context_gib} {comm}")
PY
}

calibrate() {
  local n=$1 budget=${2:-540}; shift 2 2>/dev/null || shift $#
  local models=("$@"); [ ${#models[@]} -eq 0 ] && models=(wan2.2-ti2v-5b)
  local list; list=$(printf "'%s'," "${models[@]}")
  local start; start=$(date +%s)
  for runtime in wan diffusers; do
    local left=$(( budget - ($(date +%s) - start) ))
    [ $left -le 30 ] && break
    # fit=False: the several-GPU points are measured, not fitted (run_calibration says so for gpus > 1)
    timeout "$left" python3 -c "
import wanfit.measure.calibrate as c
c.run_calibration('$gpu_key', [$list], runtime='$runtime', gpus=$n, fit=False)" >> "$OUT/calibrate-gpus-$n.log" 2>&1
    echo "calibrate --runtime $runtime --gpus $n: exit $?"
  done
  python3 - "$gpu_key" "$n" <<'PY'
import glob, json, sys
gpu, n = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(f"calibration/{gpu}/**/gpus-{n}/*.measurements.jsonl", recursive=True)):
    for line in open(path):
        r = json.loads(line)
        w, ranks = r["workload"], r.get("ranks", [])
        steps = [round(s["time_s"], 2) for s in r["stages"] if s["name"] == "step"]
        peaks = [round(max((s.get("device_used_peak_gib") or 0) for s in k["stages"]), 1) for k in ranks if k["stages"]]
        comm = {}
        for k in ranks[:1]:
            for s in k["stages"]:
                for kind, c in s.get("collectives", {}).items():
                    comm[kind] = round(comm.get(kind, 0) + c["time_s"], 2)
        p = r["plan"]
        print(path.split("/")[-3], f"{w['height']}x{w['width']}x{w['frames']}", p.get("ulysses"), p.get("ring"),
              p.get("dit_fsdp"), r["status"], r.get("failed_stage") or "", "steps", steps, "rank peaks", peaks, comm)
PY
  mkdir -p /tmp/wanfit-mgpu && cp -r calibration/. /tmp/wanfit-mgpu/
  tar czf "$OUT/calibration-gpus-$n.tgz" $(find calibration -type d -name "gpus-$n")
}

# Issue 19's verify runs: Ulysses 2 and 4 on the 5B at 1280x704x121 and at 361 frames (the official README layout,
# FSDP on), FSDP + Ulysses 4 on A14B at 1280x720x81, one with FSDP off, diffusers' context parallelism, one capped
# to a smaller card (L40S, 48 GB) predicted to fit and one (RTX 4090, 24 GB) predicted not to: check both with
# `wanfit plan ... --gpus N --gpu l40s|rtx4090` before the session and swap the sizes if the verdicts differ.
run_flags() {
  local n=$1 name=$2
  local wan5b="--runtime wan --model wan2.2-ti2v-5b --width 1280 --height 704 --gpus $n --ulysses $n"
  local fsdp="--dit-fsdp --t5-fsdp --dit-dtype fp32 --offload none"
  case "$name" in
    u-121) echo "$wan5b --frames 121 $fsdp --gpu $gpu_key --run-steps 4";;
    u-361) echo "$wan5b --frames 361 $fsdp --gpu $gpu_key --run-steps 3";;
    fsdp-off) echo "$wan5b --frames 121 --no-dit-fsdp --no-t5-fsdp --dit-dtype bf16 --offload none --gpu $gpu_key --run-steps 4";;
    a14b-u4) echo "--runtime wan --model wan2.2-t2v-a14b --width 1280 --height 720 --frames 81 --gpus $n --ulysses $n $fsdp --gpu $gpu_key --run-steps 3";;
    diffusers-cp) echo "--model wan2.2-ti2v-5b --width 1280 --height 704 --frames 121 --gpus $n --ulysses $n --offload none --gpu $gpu_key --run-steps 4";;
    capped-fits) echo "$wan5b --frames 121 $fsdp --gpu l40s --run-steps 3";;
    capped-oom) echo "$wan5b --frames 361 $fsdp --gpu rtx4090 --run-steps 2";;
  esac
}

verify() {
  local n=$1 per_run=${2:-540}; shift 2 2>/dev/null || shift $#
  local runs=("$@")
  if [ ${#runs[@]} -eq 0 ]; then
    runs=(u-121 u-361 fsdp-off diffusers-cp capped-fits capped-oom)
    [ "$n" -ge 4 ] && runs+=(a14b-u4)
  fi
  mkdir -p verify-reports
  [ -d /tmp/wanfit-verify ] && cp -rn /tmp/wanfit-verify/. verify-reports/
  for name in "${runs[@]}"; do
    local flags; flags=$(run_flags "$n" "$name")
    [ -z "$flags" ] && { echo "unknown run $name"; continue; }
    local start; start=$(date +%s)
    # shellcheck disable=SC2086
    timeout "$per_run" python3 -m wanfit.cli verify $flags --out "verify-reports/gpus-$n/$name" \
      > "$OUT/verify-$name.log" 2>&1
    local rc=$?
    echo "$name (gpus $n): exit $rc in $(( $(date +%s) - start )) s: $flags"
    grep -E "PASS|FAILED|CONFIRMED|RAN although|OUTSIDE TOLERANCE|ERROR" "$OUT/verify-$name.log" | head -2
    mkdir -p /tmp/wanfit-verify && cp -r verify-reports/. /tmp/wanfit-verify/
    tar czf "$OUT/verify-reports-gpus-$n.tgz" verify-reports
  done
}

case "$phase" in
  check) check;;
  calibrate) calibrate "$@";;
  verify) verify "$@";;
  *) echo "unknown phase $phase: check | calibrate N [SECONDS] [MODEL ...] | verify N [SECONDS_PER_RUN] [RUN ...]"; exit 2;;
esac
