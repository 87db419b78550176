"""A stand-in rank for the launcher tests (`python -m distributed_stub_rank JOB_FILE RANK_DIR`, tests/ on
PYTHONPATH): it writes what a rank writes (streamed stage records, a RankOutput) from made-up figures, or fails the
way real ranks fail, as WANFIT_STUB_MODE says. No torch: the launcher and the merge are tested in a second."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from wanfit.measure.distributed.merge import RankOutput, rank_files
from wanfit.measure.worker import FAILED_POINT_EXIT, Job
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.measurement import CollectiveStat, Measurement, StageRecord

MODE = os.environ.get("WANFIT_STUB_MODE", "ok")


def stage(name: str, start: float, peak: float, index: int | None = None, a2a: float = 0.0) -> StageRecord:
    collectives = {"all_to_all": CollectiveStat(calls=4, time_s=a2a, bytes=1024.0)} if a2a else {}
    return StageRecord(name=name, index=index, start_s=start, time_s=1.0, device_used_peak_gib=peak,
                       torch_peak_allocated_gib=peak - 1, collectives=collectives)


def main(job_file: str, rank_dir: str) -> int:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    job = Job.model_validate_json(Path(job_file).read_text())
    final, stream, _ = rank_files(Path(rank_dir), rank)
    init = stage("init", 0.0, 10.0 + rank)
    stream.write_text(init.model_dump_json() + "\n")
    if MODE == "hang" or (MODE == "oom_hang" and rank == 0):
        time.sleep(120)  # as a rank waits in a collective for a peer that is gone
    if MODE == "die" and rank == 1:
        print("rank 1: segmentation fault in a collective", file=sys.stderr)
        os._exit(7)
    failed = MODE == "oom_hang" and rank == 1
    steps = [] if failed else [stage("step", 1.0, 20.0 + 5 * rank, index=1, a2a=0.1 * (rank + 1))]
    stages = [init, *steps]
    stages.append(StageRecord(name="total", start_s=0.0, time_s=float(len(stages)),
                              device_used_peak_gib=max(s.device_used_peak_gib for s in stages)))
    env = {k: float(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "OMP_NUM_THREADS")}
    m = Measurement(id=job.id, workload=job.workload, plan=job.plan, status="oom" if failed else "ok",
                    failed_stage="step 1" if failed else None,
                    error="CUDA out of memory. Tried to allocate 2.00 GiB" if failed else None, steps_run=len(steps),
                    stages=stages, context_gib=0.5, idle_device_used_gib=0.25 * rank, extra=env,
                    environment=Environment(gpu_name="stub", gpu_total_gib=80.0, gpu_count=world, torch="none",
                                            python="3", platform="stub", wanfit="stub"),
                    created_at="2026-01-01T00:00:00+00:00")
    final.write_text(RankOutput(rank=rank, local_rank=int(os.environ["LOCAL_RANK"]), device=f"stub:{rank}",
                                backend="stub", measurement=m).model_dump_json())
    return FAILED_POINT_EXIT if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
