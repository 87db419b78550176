"""One measured point, whichever code generates the video: what the diffusers runner (wanfit.measure.runner)
and the official runner (wanfit.measure.official.runner) share around their own stages.

`measure_point` takes the process's memory baseline, caps the allocator, runs the NVML poller and the stage
clock, calls the runner's own stages, records a failure (OOM included) with the stage where it happened, adds
the total record and returns the Measurement. The runner's stages append their StageRecords to the point's
Progress and their sub-stage figures to its `extra`.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

from wanfit.measure.cap import memory_fraction
from wanfit.measure.environment import collect_environment
from wanfit.measure.monitor import Nvml, Poller, StageClock
from wanfit.vocabulary.measurement import Measurement, StageRecord, point_id
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan, Workload

PROMPT = "A red fox runs through fresh snow at dawn, cinematic, shallow depth of field"
# How much of a failed point's message the measurement keeps (an OOM's first line names the sizes; an
# error's traceback tail shows where it happened).
OOM_MESSAGE_CHARS = 500
ERROR_MESSAGE_CHARS = 2000
TRACEBACK_CHARS = 3000

_PROCESS_BASELINE: dict[str, float | None] = {}
_POINTS_RUN = [0]  # points this process has run (the first pays one-time CUDA and library setup)


@dataclass(frozen=True)
class RankContext:
    """What a rank of a several-GPU point adds to its measurement (set by wanfit.measure.distributed.rank before
    the point runs): the meter of its collectives (see StageClock), where each stage record goes as it closes,
    and the environment fields it sets (the GPU count)."""

    meter: object | None = None
    on_record: Callable[[StageRecord], None] | None = None
    environment: dict = field(default_factory=dict)


_RANK_CONTEXT: list[RankContext | None] = [None]


def set_rank_context(context: RankContext | None) -> None:
    _RANK_CONTEXT[0] = context


@dataclass
class Progress:
    """Where a point is: the stage in progress, the steps done, the stages recorded so far."""

    stage: str = "init"
    steps_done: int = 0
    stages: list[StageRecord] = field(default_factory=list)

    def failed_stage(self) -> str:
        """The stage in progress, as a failure names it (a step by its number)."""
        return self.stage if self.stage != "step" else f"step {self.steps_done + 1}"


@dataclass(frozen=True)
class PointRequest:
    """What point is measured and how: `steps_run` the denoising steps actually run (the Measurement keeps
    the requested workload), `source` random or checkpoint weights, `decode` False when the run stops at
    latents, `memory_cap_gib` the usable memory the allocator is capped to (None: the whole GPU)."""

    workload: Workload
    plan: Plan
    steps_run: int
    device: str
    source: str = "random"
    memory_cap_gib: float | None = None
    tag: str = ""
    decode: bool = True
    keep_timeline: bool = True

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class PointRun:
    """A point being measured, as the runner's stages see it: they record into `prog`, `extra` and
    `resident` (each component's weights on the GPU after placement, GiB)."""

    request: PointRequest
    clock: StageClock
    prog: Progress
    extra: dict[str, float]
    resident: dict[str, float] = field(default_factory=dict)


def resolve_device(device: str | None) -> str:
    """The device a point runs on: the one given, else the GPU when there is one."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def input_image(workload: Workload):
    """The conditioning image of an image-to-video point: fixed random pixels of the workload's size."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (workload.height, workload.width, 3), dtype=np.uint8))


def process_baseline(nvml: Nvml, device: str, cuda: bool) -> tuple[float | None, float | None]:
    """(idle, context) GiB: the device memory in use before this process, then what its CUDA context adds.
    Measured once per process, before its first CUDA allocation; later points reuse the figures."""
    if cuda and "idle" not in _PROCESS_BASELINE:
        idle = nvml.used_gib()
        index = torch.device(device).index
        if index is not None:  # a rank's GPU, made current before anything touches CUDA (torchrun's set_device)
            torch.cuda.set_device(index)
        torch.cuda.init()
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        used = nvml.used_gib()
        context = used - idle if used is not None and idle is not None else None
        _PROCESS_BASELINE.update(idle=idle, context=context)
    return _PROCESS_BASELINE.get("idle"), _PROCESS_BASELINE.get("context")


def cap_allocator(memory_cap_gib: float, outside_torch_gib: float) -> None:
    """Cap the torch allocator to emulate a GPU of `memory_cap_gib` usable memory. The cap limits only the
    allocator; the context and the pre-existing use (`outside_torch_gib`) sit outside it."""
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
    torch.cuda.set_per_process_memory_fraction(memory_fraction(memory_cap_gib, total, outside_torch_gib))


def release_cache() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def failure(error: Exception) -> tuple[str, str]:
    """(status, error text) of a failed point: an OOM's first line, or any other error with its traceback."""
    if isinstance(error, torch.OutOfMemoryError):
        return "oom", str(error).splitlines()[0][:OOM_MESSAGE_CHARS]
    return "error", (f"{type(error).__name__}: {error}"[:ERROR_MESSAGE_CHARS] + "\n"
                     + traceback.format_exc()[-TRACEBACK_CHARS:])


def total_record(stages: list[StageRecord], t_start: float, end_t: float, t0: float) -> StageRecord:
    """The whole point as one record: its wall time and the highest peak of every stage."""
    peaks = [s.device_used_peak_gib for s in stages if s.device_used_peak_gib is not None]
    return StageRecord(
        name="total", start_s=round(t_start - t0, 6), time_s=end_t - t_start,
        torch_peak_allocated_gib=max((s.torch_peak_allocated_gib or 0) for s in stages) if stages else None,
        torch_peak_reserved_gib=max((s.torch_peak_reserved_gib or 0) for s in stages) if stages else None,
        device_used_peak_gib=max(peaks) if peaks else None,
        host_rss_peak_gib=max((s.host_rss_peak_gib or 0) for s in stages) if stages else None,
    )


def timed_decode(vae_decode, clock: StageClock, extra: dict[str, float]):
    """The VAE's decode, timed alone (the vae_decode stage also holds the pipeline's postprocessing);
    its time and the allocated peak above its start go into `extra`."""

    def timed(*args, **kwargs):
        clock.sync()
        t0 = time.perf_counter()
        alloc0 = torch.cuda.memory_allocated() if clock.cuda else 0
        result = vae_decode(*args, **kwargs)
        clock.sync()
        extra["vae_decode_call_s"] = time.perf_counter() - t0
        if clock.cuda:
            extra["vae_decode_call_peak_above_start_gib"] = (torch.cuda.max_memory_allocated() - alloc0) / GIB
        return result

    return timed


def measure_point(request: PointRequest, stages: Callable[[PointRun], None], prog: Progress | None = None,
                  extra: dict[str, float] | None = None, environment: dict | None = None) -> Measurement:
    """Measure one point: `stages(run)` begins the clock (after any setup the init stage does not hold),
    builds and generates, recording each stage. A failure it raises is recorded, not raised: a calibration
    keeps going and keeps what it has. `prog` and `extra`: the runner's own (a Progress subclass, figures
    known before the run); `environment`: fields the runner adds to the collected Environment."""
    req = request
    nvml = Nvml(enabled=req.cuda)
    first_in_process = _POINTS_RUN[0] == 0
    _POINTS_RUN[0] += 1
    idle, context = process_baseline(nvml, req.device, req.cuda)
    if req.cuda and req.memory_cap_gib is not None:
        cap_allocator(req.memory_cap_gib, (context or 0) + (idle or 0))
    if req.cuda:
        release_cache()
    rank = _RANK_CONTEXT[0] or RankContext()
    env = collect_environment(torch, nvml, req.memory_cap_gib).model_copy(
        update={**(environment or {}), **rank.environment})
    poller = Poller(nvml).start()
    clock = StageClock(poller, torch, req.device, meter=rank.meter, on_record=rank.on_record)
    run = PointRun(req, clock, prog or Progress(), {} if extra is None else extra)
    status, error, failed = "ok", None, None
    t_start = time.perf_counter()
    try:
        stages(run)
    except Exception as e:  # recorded, not raised: a calibration keeps going and keeps what it has
        status, error = failure(e)
        failed = run.prog.failed_stage()
    else:
        clock.sync()
    total = total_record(run.prog.stages, t_start, poller.sample().t, poller.t0)
    poller.stop()
    m = Measurement(
        id=point_id(req.workload, req.plan, req.steps_run, req.source, req.tag, req.decode, req.memory_cap_gib),
        workload=req.workload, plan=req.plan, status=status, tag=req.tag, decoded=req.decode, failed_stage=failed,
        error=error, source=req.source, steps_run=run.prog.steps_done, stages=[*run.prog.stages, total],
        resident_weights_gib=run.resident, context_gib=context, idle_device_used_gib=idle,
        first_in_process=first_in_process, activity_source=nvml.activity_source, extra=run.extra,
        timeline=poller.timeline() if req.keep_timeline else [], environment=env,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if req.cuda:
        release_cache()
    return m
