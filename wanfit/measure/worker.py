"""Run measured points in fresh worker processes.

The parent side (`run_jobs`, `run_in_subprocess`) imports no torch: it writes a job file, starts
`python -m wanfit.measure.worker JOBS OUT`, and reads the measurements the worker appends to OUT.
A worker handles consecutive points of one model+plan in one process (the pipeline is built once;
the allocator is emptied and its peaks reset between points) and exits after any failed point,
so the next point starts in a fresh process. A worker that dies without writing (killed, segfault)
is recorded as an error point for the job it was on: nothing is lost and nothing loops.

A job whose plan runs on several GPUs (plan.gpus > 1) gets a worker of its own, which creates no CUDA context: it
launches one process per rank (wanfit.measure.distributed.launch), merges their records into the one measurement
it appends, and exits.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from wanfit import __version__
from wanfit.vocabulary.catalog import ModelSpec
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.measurement import Measurement, point_id
from wanfit.vocabulary.measurements_file import append_measurement, load_measurements
from wanfit.vocabulary.workload import Plan, Workload

FAILED_POINT_EXIT = 3
WATCH_INTERVAL_S = 0.5  # how often the parent reads the points a worker appended
# What a dead worker's error record keeps of its stderr: the last lines, then the last characters.
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 1500


class Job(BaseModel):
    """One point to measure."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    workload: Workload
    plan: Plan
    steps: int | None = None  # denoising steps actually run (None: the workload's)
    decode: bool = True
    tag: str = ""
    checkpoint: str | None = None
    memory_cap_gib: float | None = None
    spec: ModelSpec | None = None  # architecture override (tests: tiny variants)
    device: str | None = None
    wan_repo: str | None = None  # runtime wan: the user's Wan2.2 checkout (else the installed wan22)
    arch: dict | None = None  # runtime wan: OfficialArch overrides (tests: tiny_arch()), like `spec` for diffusers

    @property
    def id(self) -> str:
        source = "checkpoint" if self.checkpoint else "random"
        return point_id(self.workload, self.plan, self.steps or self.workload.steps, source, self.tag,
                        self.decode, self.memory_cap_gib)


def allocator_env(plan: Plan) -> str:
    """PYTORCH_CUDA_ALLOC_CONF for a plan: expandable segments on unless the plan turns them off."""
    return "expandable_segments:True" if plan.expandable_segments else ""


def _died(job: Job, returncode: int, stderr_tail: str) -> Measurement:
    env = Environment(gpu_name="unknown (worker died)", gpu_total_gib=0.0, torch="unknown",
                      python=platform.python_version(), platform=platform.platform(), wanfit=__version__)
    return Measurement(id=job.id, workload=job.workload, plan=job.plan, status="error",
                       failed_stage="worker", error=f"worker process died (exit code {returncode}): {stderr_tail}",
                       steps_run=0, tag=job.tag, decoded=job.decode, environment=env,
                       created_at=datetime.now(UTC).isoformat(timespec="seconds"))


def run_jobs(jobs: list[Job], out_path: Path, on_result: Callable[[Measurement], None] | None = None,
             timeout_s: float | None = None) -> list[Measurement]:
    """Measure every job not already in `out_path` (finished or OOM), appending as they finish.
    Returns the measurements of `jobs` found in the file afterwards (in job order)."""
    out_path = Path(out_path)
    attempted: set[str] = set()
    while True:
        finished = {m.id for m in load_measurements(out_path) if m.status in ("ok", "oom")}
        remaining = [j for j in jobs if j.id not in finished and j.id not in attempted]
        if not remaining:
            break
        # One worker per run of jobs sharing the allocator setting (it must be set before CUDA starts).
        batch = _next_batch(remaining)
        seen_lines = len(load_measurements(out_path))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([j.model_dump(mode="json") for j in batch], f)
            job_file = f.name
        env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": allocator_env(batch[0].plan), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "wanfit.measure.worker", job_file, str(out_path)],
                                env=env, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        while proc.poll() is None:
            time.sleep(WATCH_INTERVAL_S)
            seen_lines = _report_new(out_path, seen_lines, on_result)
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                proc.kill()
        _, err = proc.communicate()
        stderr_lines = (err or "").strip().splitlines()[-STDERR_TAIL_LINES:]
        seen_lines = _report_new(out_path, seen_lines, on_result)
        os.unlink(job_file)
        recorded = {m.id for m in load_measurements(out_path)}
        for j in batch:
            if j.id in recorded:
                attempted.add(j.id)
        if proc.returncode not in (0, FAILED_POINT_EXIT):
            victim = next((j for j in batch if j.id not in recorded), None)
            if victim is not None:
                m = _died(victim, proc.returncode, " | ".join(stderr_lines)[-STDERR_TAIL_CHARS:])
                append_measurement(out_path, m)
                attempted.add(victim.id)
                if on_result:
                    on_result(m)
    by_id = {m.id: m for m in load_measurements(out_path)}
    return [by_id[j.id] for j in jobs if j.id in by_id]


def _next_batch(remaining: list[Job]) -> list[Job]:
    """The jobs one worker runs: consecutive jobs sharing the allocator setting (it must be set before CUDA
    starts), or a several-GPU job alone (its worker only launches the ranks)."""
    if remaining[0].plan.gpus > 1:
        return remaining[:1]
    conf = allocator_env(remaining[0].plan)
    batch = []
    for j in remaining:
        if allocator_env(j.plan) != conf or j.plan.gpus > 1:
            break
        batch.append(j)
    return batch


def _report_new(out_path: Path, seen: int, on_result) -> int:
    ms = load_measurements(out_path)
    if on_result:
        for m in ms[seen:]:
            on_result(m)
    return len(ms)


def run_in_subprocess(workload: Workload, plan: Plan, *, steps: int | None = None, memory_cap_gib: float | None = None,
                      checkpoint: Path | None = None, decode: bool = True, spec: ModelSpec | None = None,
                      device: str | None = None, wan_repo: Path | None = None, arch: dict | None = None) -> Measurement:
    """Measure one point in a fresh process (verify uses this, so a cap applies before any allocation); a
    several-GPU plan in one process per rank."""
    job = Job(workload=workload, plan=plan, steps=steps, decode=decode, memory_cap_gib=memory_cap_gib,
              checkpoint=str(checkpoint) if checkpoint else None, spec=spec, device=device,
              wan_repo=str(wan_repo) if wan_repo else None, arch=arch)
    with tempfile.TemporaryDirectory() as tmp:
        out = run_jobs([job], Path(tmp) / "m.jsonl")
    return out[0]


def run_job(job: Job, cache) -> Measurement:
    """One point (one rank's, on several GPUs) through the runner of its plan's runtime (diffusers' pipeline, or
    the official code)."""
    checkpoint = Path(job.checkpoint) if job.checkpoint else None
    if job.plan.runtime == "wan":
        from wanfit.measure.official.knobs import knobs_for
        from wanfit.measure.official.runner import run_official_point
        from wanfit.measure.official.tiny import OfficialArch

        return run_official_point(job.workload, knobs_for(job.plan), steps=job.steps, checkpoint=checkpoint,
                                  wan_repo=Path(job.wan_repo) if job.wan_repo else None, device=job.device,
                                  memory_cap_gib=job.memory_cap_gib, plan=job.plan, tag=job.tag,
                                  arch=OfficialArch(**job.arch) if job.arch else None)
    from wanfit.measure.runner import run_point

    return run_point(job.workload, job.plan, steps=job.steps, checkpoint=checkpoint, device=job.device,
                     memory_cap_gib=job.memory_cap_gib, cache=cache, spec=job.spec, decode=job.decode, tag=job.tag)


def _worker_main(job_file: str, out_file: str) -> int:
    jobs = [Job.model_validate(j) for j in json.loads(Path(job_file).read_text())]
    out = Path(out_file)
    if jobs and jobs[0].plan.gpus > 1:
        from wanfit.measure.distributed.launch import run_distributed

        m = run_distributed(jobs[0])
        append_measurement(out, m)
        return 0 if m.status == "ok" else FAILED_POINT_EXIT
    from wanfit.measure.runner import PipelineCache

    cache = PipelineCache()
    for job in jobs:
        m = run_job(job, cache)
        append_measurement(out, m)
        if m.status != "ok":
            return FAILED_POINT_EXIT  # the next point starts in a fresh process
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1], sys.argv[2]))
