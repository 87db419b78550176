"""One rank of a several-GPU point: `python -m wanfit.measure.distributed.rank JOB_FILE RANK_DIR`, with torchrun's
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment (wanfit.measure.distributed.launch
sets them).

Like generate.py it brings the process group up first (NCCL on GPUs, gloo on the CPU; env:// rendezvous), then
runs the job's point through its runtime's own runner on its own device (cuda:LOCAL_RANK) with a fixed seed, so
every rank draws the same random weights and inputs. Its monitor is its own: its GPU's NVML readings (the
LOCAL_RANK-th), torch's peaks of its device, its stage clock, its collectives timed per stage
(wanfit.measure.distributed.collectives). Each stage record is streamed to RANK_DIR/rank<r>.stages.jsonl as it
closes (a rank killed while it waits for a failed peer keeps them); at the end it writes RANK_DIR/rank<r>.json
(RankOutput) and exits 0, or FAILED_POINT_EXIT after a failed point, 1 when the point could not start.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from wanfit.measure.distributed.merge import RankOutput, rank_files

SEED = 0
# Long enough for the slowest rank to reach the rendezvous after its imports, short enough that a rank whose peers
# never came does not wait NCCL's default 10 minutes before it says so.
PROCESS_GROUP_TIMEOUT_S = 600.0
ERROR_CHARS = 3000


def _write_output(path: Path, output: RankOutput) -> None:
    """Written whole or not at all: the launcher never reads half a record."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(output.model_dump_json())
    os.replace(tmp, path)


def _streamer(path: Path):
    def write(record) -> None:
        with path.open("a") as f:
            f.write(record.model_dump_json() + "\n")

    return write


def _nccl_version(device: str) -> str | None:
    import torch

    if not device.startswith("cuda"):
        return None
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # a torch built without NCCL
        return None
    return ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)


def _wan_modules(job):
    if job.plan.runtime != "wan":
        return None
    from wanfit.measure.official.loader import load_wan

    return load_wan(Path(job.wan_repo) if job.wan_repo else None).modules


def run_rank(job_file: str, rank_dir: str) -> int:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from wanfit.measure.distributed.collectives import CollectiveMeter, metered
    from wanfit.measure.distributed.context import collective_backend, rank_device, rank_from_environ
    from wanfit.measure.point import RankContext, set_rank_context
    from wanfit.measure.worker import FAILED_POINT_EXIT, Job, run_job

    info = rank_from_environ()
    final, stream, _ = rank_files(Path(rank_dir), info.rank)
    job = Job.model_validate_json(Path(job_file).read_text())
    device = rank_device(job.device, info.local_rank)
    backend = collective_backend(device)
    output = RankOutput(rank=info.rank, local_rank=info.local_rank, device=device, backend=backend,
                        nccl_version=_nccl_version(device))
    try:
        t0 = time.perf_counter()
        dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size,
                                timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))
        output = output.model_copy(update={"process_group_init_s": time.perf_counter() - t0})
        wan_modules = _wan_modules(job)
    except Exception as error:  # the point never started: said in the record, the launcher merges it
        message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"[-ERROR_CHARS:]
        _write_output(final, output.model_copy(update={"error": message}))
        return 1
    torch.manual_seed(SEED)
    meter = CollectiveMeter(cuda=device.startswith("cuda"))
    set_rank_context(RankContext(meter=meter, on_record=_streamer(stream),
                                 environment={"gpu_count": info.world_size}))
    with metered(meter, job.plan.runtime, wan_modules):
        m = run_job(job.model_copy(update={"device": device}), None)
    _write_output(final, output.model_copy(update={"measurement": m}))
    if m.status == "ok":
        dist.destroy_process_group()  # a failed point's peers may never reach it: the launcher ends them
    return 0 if m.status == "ok" else FAILED_POINT_EXIT


if __name__ == "__main__":
    sys.exit(run_rank(sys.argv[1], sys.argv[2]))
