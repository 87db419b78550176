"""The ranks' own records, merged into the one Measurement of a several-GPU point. Pure (pydantic, no torch).

The point's stages are rank 0's (its clock is the job's: it starts first, decodes in the official code and
returns the video); every rank's record goes into `ranks` with its own per-stage peaks and collectives, so the
per-GPU peak is the worst rank's (Measurement.peak_device_used_gib). The point is ok only when every rank is: a
rank out of memory makes it an oom point at that rank's stage, any other failure an error point; the ranks the
launcher had to kill (waiting in a collective for a failed rank, or past the timeout) keep the stages they had
closed, streamed as they closed.
"""

from __future__ import annotations

import contextlib
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from wanfit import __version__
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.measurement import Distributed, Measurement, RankRecord, StageRecord
from wanfit.vocabulary.workload import Plan, Workload

ERROR_LINE_CHARS = 300


class RankOutput(BaseModel):
    """What one rank process writes when it ends (rank<r>.json): its measurement, or why it has none."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rank: int
    local_rank: int
    device: str
    backend: str
    nccl_version: str | None = None
    process_group_init_s: float | None = None
    measurement: Measurement | None = None
    error: str | None = None  # a failure outside the measured point (the process group, loading the code)


@dataclass(frozen=True)
class RankResult:
    """One rank as the launcher saw it end."""

    rank: int
    returncode: int | None
    killed: bool
    output: RankOutput | None
    streamed: list[StageRecord]  # the stage records it closed, as it closed them
    log_tail: str = ""


@dataclass(frozen=True)
class PointKey:
    """The point the ranks measured (the job's id and what the Measurement records)."""

    id: str
    workload: Workload
    plan: Plan
    source: str = "random"
    tag: str = ""
    decode: bool = True


def rank_files(rank_dir: Path, rank: int) -> tuple[Path, Path, Path]:
    """(final output, streamed stages, log) of a rank under the launcher's directory."""
    return rank_dir / f"rank{rank}.json", rank_dir / f"rank{rank}.stages.jsonl", rank_dir / f"rank{rank}.log"


def read_rank(rank_dir: Path, rank: int, returncode: int | None, killed: bool, tail_chars: int) -> RankResult:
    """A rank's files: its output if it wrote a valid one, the stages it streamed, its log's tail."""
    final, stream, log = rank_files(rank_dir, rank)
    output = None
    with contextlib.suppress(OSError, ValidationError, ValueError):  # none, or cut: the rank wrote no record
        output = RankOutput.model_validate_json(final.read_text())
    streamed = []
    if stream.exists():
        for line in stream.read_text().splitlines():
            try:
                streamed.append(StageRecord.model_validate(json.loads(line)))
            except (ValueError, ValidationError):
                break  # a line cut by a kill: what came before it stands
    tail = log.read_text(errors="replace")[-tail_chars:] if log.exists() else ""
    return RankResult(rank, returncode, killed, output, streamed, tail)


def _total(stages: list[StageRecord]) -> list[StageRecord]:
    """Streamed stages with a total record (their span and highest peaks), as the runner adds one."""
    if not stages:
        return []
    start = stages[0].start_s
    end = max(s.start_s + s.time_s for s in stages)

    def top(name: str) -> float | None:
        values = [getattr(s, name) for s in stages if getattr(s, name) is not None]
        return max(values) if values else None

    return [*stages, StageRecord(name="total", start_s=start, time_s=end - start,
                                 torch_peak_allocated_gib=top("torch_peak_allocated_gib"),
                                 torch_peak_reserved_gib=top("torch_peak_reserved_gib"),
                                 device_used_peak_gib=top("device_used_peak_gib"),
                                 host_rss_peak_gib=top("host_rss_peak_gib"))]


def _next_stage(stages: list[StageRecord]) -> str:
    """Where a rank that closed `stages` was when it stopped."""
    if not stages:
        return "init"
    last = stages[-1]
    if last.name == "step":
        return f"step {(last.index or 0) + 1}"
    return {"init": "text_encode", "text_encode": "prepare", "prepare": "step 1"}.get(last.name, "vae_decode")


def _first_line(text: str | None) -> str:
    return (text or "no message").strip().splitlines()[0][:ERROR_LINE_CHARS] if (text or "").strip() else "no message"


def rank_record(result: RankResult) -> RankRecord:
    """One rank's record: its measurement's figures, or what it streamed before it was killed or died."""
    out = result.output
    m = out.measurement if out is not None else None
    local = out.local_rank if out is not None else result.rank
    device = out.device if out is not None else "unknown"
    if m is not None:
        return RankRecord(rank=result.rank, local_rank=local, device=device, status=m.status,
                          failed_stage=m.failed_stage, error=m.error, steps_run=m.steps_run, stages=m.stages,
                          context_gib=m.context_gib, idle_device_used_gib=m.idle_device_used_gib,
                          resident_weights_gib=m.resident_weights_gib, extra=m.extra)
    stages = _total(result.streamed)
    steps = sum(1 for s in result.streamed if s.name == "step")
    if result.killed:
        status = "killed"
        error = "killed by the launcher while it waited (in a collective whose peer had failed, or past the timeout)"
    elif out is not None and out.error:
        status, error = "error", out.error
    else:
        status = "no_record"
        error = f"rank process ended (exit code {result.returncode}) without a record: {result.log_tail.strip()}"
    return RankRecord(rank=result.rank, local_rank=local, device=device, status=status,
                      failed_stage=_next_stage(result.streamed), error=error, steps_run=steps, stages=stages)


def _verdict(records: list[RankRecord]) -> tuple[str, str | None, str | None]:
    """(status, failed stage, error) of the point: oom if any rank ran out of memory (at the first such rank's
    stage), else error if any rank did not end ok; the error names every rank that did not."""
    bad = [r for r in records if r.status != "ok"]
    if not bad:
        return "ok", None, None
    oom = [r for r in bad if r.status == "oom"]
    first = (oom or [r for r in bad if r.status == "error"] or bad)[0]
    error = "; ".join(f"rank {r.rank}: {r.status} at {r.failed_stage}: {_first_line(r.error)}" for r in bad)
    return ("oom" if oom else "error"), first.failed_stage, error


def _unknown_environment(world: int) -> Environment:
    return Environment(gpu_name="unknown (no rank recorded one)", gpu_total_gib=0.0, gpu_count=world, torch="unknown",
                       python=platform.python_version(), platform=platform.platform(), wanfit=__version__)


def merge_ranks(key: PointKey, results: list[RankResult], setup: Distributed) -> Measurement:
    """The point's one Measurement (module docstring)."""
    results = sorted(results, key=lambda r: r.rank)
    records = [rank_record(r) for r in results]
    status, failed, error = _verdict(records)
    outputs = [r.output for r in results if r.output is not None]
    measured = [o.measurement for o in outputs if o.measurement is not None]
    main = next((o.measurement for o in outputs if o.rank == 0 and o.measurement is not None), None)
    rank0 = records[0]
    env = (main or (measured[0] if measured else None))
    environment = env.environment if env is not None else _unknown_environment(len(results))
    nccl = next((o.nccl_version for o in outputs if o.nccl_version), None)
    backend = next((o.backend for o in outputs), setup.backend)
    base = dict(id=key.id, workload=key.workload, plan=key.plan, status=status, failed_stage=failed, error=error,
                source=key.source, tag=key.tag, decoded=key.decode, ranks=records,
                distributed=setup.model_copy(update={"backend": backend, "nccl_version": nccl}),
                environment=environment.model_copy(update={"gpu_count": len(results)}))
    extra = {f"rank_{o.rank}_process_group_init_s": o.process_group_init_s for o in outputs
             if o.process_group_init_s is not None}
    if main is not None:
        return main.model_copy(update={**base, "extra": {**main.extra, **extra}})
    return Measurement(**base, steps_run=rank0.steps_run, stages=rank0.stages, context_gib=rank0.context_gib,
                       idle_device_used_gib=rank0.idle_device_used_gib, extra=extra,
                       created_at=datetime.now(UTC).isoformat(timespec="seconds"))
