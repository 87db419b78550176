"""A run's measured figures per comparison stage, before they meet a prediction (wanfit.verify.compare).

Pure (pydantic models in, a dataclass per stage out). The rules, which compare.py's docstring explains:
reduced-step runs add the missing steps at the steady-state step time (marked extrapolated); the expert
switch is the excess of its step over steady state (derived) and the denoise time leaves it out; a
random-weight build's init is shown, not scored, and the total leaves it out on both sides.

Several GPUs: the times are rank 0's (the point's clock); each memory figure is the worst rank's, as the
prediction is one rank's (the worst): the highest device peak of that stage on any rank, and the need of the
rank whose torch-allocated peak plus its own memory outside torch is highest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wanfit.model.geometry import crosses_expert_switch
from wanfit.vocabulary.measurement import Measurement, StageRecord, median_steady_step_s, steady_steps, switch_step

# The stages the runner records as one StageRecord each (denoise is a record per step; the expert switch
# is derived from one of them).
SINGLE_RECORD_STAGES = ("init", "text_encode", "prepare", "vae_decode")


def step_loading_s(step: StageRecord, steady: float | None) -> float:
    """The part of a step above steady state (upload by offload hooks, warm-up): derived, >= 0."""
    if steady is None:
        return 0.0
    return max(0.0, step.time_s - steady)


def _max(values) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def outside_torch_gib(m: Measurement) -> float:
    """Device memory the torch allocator does not see: CUDA context plus the driver's baseline."""
    return (m.context_gib or 0.0) + (m.idle_device_used_gib or 0.0)


def _rank_views(m: Measurement) -> list[tuple[list[StageRecord], float]]:
    """(stages, memory outside torch) of each GPU the point ran on: its ranks, or the one GPU."""
    if m.ranks:
        return [(r.stages, (r.context_gib or 0.0) + (r.idle_device_used_gib or 0.0)) for r in m.ranks]
    return [(m.stages, outside_torch_gib(m))]


@dataclass(frozen=True)
class Peaks:
    """A stage's memory on the worst GPU: device peak, torch-allocated peak, and the need (allocated + outside)."""

    device_gib: float | None = None
    allocated_gib: float | None = None
    need_gib: float | None = None


def worst_rank_peaks(m: Measurement, pick: Callable[[list[StageRecord]], list[StageRecord]]) -> Peaks:
    """The worst GPU's figures over the records `pick` chooses from each GPU's stages."""
    device, allocated, need = [], [], []
    for stages, outside in _rank_views(m):
        records = pick(stages)
        device.append(_max(r.device_used_peak_gib for r in records))
        alloc = _max(r.torch_peak_allocated_gib for r in records)
        allocated.append(alloc)
        need.append(alloc + outside if alloc is not None else None)
    return Peaks(_max(device), _max(allocated), _max(need))


def _named(name: str, index: int | None = None) -> Callable[[list[StageRecord]], list[StageRecord]]:
    return lambda stages: [s for s in stages if s.name == name and (index is None or s.index == index)]


@dataclass(frozen=True)
class MeasuredStage:
    """One stage's measured figures, before comparison (internal, never written to a file). Memory: the worst
    GPU's (one GPU, or the worst rank)."""

    time_s: float | None = None
    device_peak_gib: float | None = None
    allocated_peak_gib: float | None = None
    need_gib: float | None = None  # allocated peak + memory outside torch (CUDA context, driver baseline)
    extrapolated: bool = False
    derived: bool = False
    note: str | None = None
    time_scored: bool = True
    without_init: bool = False  # a total whose time leaves the (unscored) init out, on both sides


@dataclass(frozen=True)
class _Steps:
    """What the step records say about the steps of the full job."""

    records: list[StageRecord]
    steady: float | None  # the steady-state step time
    missing: int  # requested steps not run, added at the steady-state time
    partial: bool  # the run stopped inside the denoising loop
    switch: StageRecord | None  # the step the expert switch happened in
    switch_excess: float  # that step's time above steady state


def _steps(m: Measurement) -> _Steps:
    steps = m.steps()
    steady = median_steady_step_s(steps)
    # A run that failed inside the denoising loop has a partial step list; one that failed later
    # (at VAE decode) ran every step it meant to run, so its step figures extrapolate like a finished run's.
    partial = m.status != "ok" and (m.failed_stage or "").startswith("step")
    missing = max(0, m.workload.steps - len(steps)) if steps and not partial else 0
    switch = switch_step(steps)
    excess = step_loading_s(switch, steady) if switch is not None else 0.0
    return _Steps(steps, steady, missing, partial, switch, excess)


def _denoise(m: Measurement, s: _Steps) -> MeasuredStage:
    requested = m.workload.steps
    denoise_time = sum(r.time_s for r in s.records) - s.switch_excess + s.missing * (s.steady or 0.0)
    note = None
    if s.missing:
        note = f"{len(s.records)} of {requested} steps run; {s.missing} x {s.steady:.3f} s steady-state step added"
        spec = m.workload.spec
        if s.switch is None and crosses_expert_switch(spec, requested):
            note += "; the full run's expert switch was not among the steps run (not measured)"
    if s.partial:
        note = f"run stopped at {m.failed_stage}: {len(s.records)} steps completed"
    peaks = worst_rank_peaks(m, _named("step"))
    return MeasuredStage(
        time_s=None if s.partial else denoise_time, device_peak_gib=peaks.device_gib,
        allocated_peak_gib=peaks.allocated_gib, need_gib=peaks.need_gib, extrapolated=bool(s.missing), note=note)


def _total(m: Measurement, total: StageRecord, s: _Steps) -> MeasuredStage:
    """A failed run's total covers only the stages before the failure: not a figure to score. A
    random-weight run's total leaves its init out (compared without the predicted init)."""
    finished = m.status == "ok"
    peaks = worst_rank_peaks(m, lambda stages: [r for r in stages if r.name != "total"
                                                and not (m.source == "random" and r.name == "init")])
    random_init = m.stage("init") if m.source == "random" else None
    time_s = total.time_s + s.missing * (s.steady or 0.0) - (random_init.time_s if random_init else 0.0)
    note = None if finished else f"partial run ({m.status} at {m.failed_stage}): total not compared"
    if finished and random_init is not None:
        note = "without init (random weights: not a checkpoint load)"
    return MeasuredStage(
        time_s=time_s if finished else None, device_peak_gib=peaks.device_gib if finished else None,
        allocated_peak_gib=peaks.allocated_gib if finished else None, need_gib=peaks.need_gib if finished else None,
        extrapolated=bool(s.missing), without_init=random_init is not None, note=note)


def measured_stages(m: Measurement) -> dict[str, MeasuredStage]:
    """Measured figures per comparison stage (see the module docstring for the rules)."""
    out: dict[str, MeasuredStage] = {}
    for name in SINGLE_RECORD_STAGES:
        rec = m.stage(name)
        if rec is not None:
            peaks = worst_rank_peaks(m, _named(name))
            out[name] = MeasuredStage(time_s=rec.time_s, device_peak_gib=peaks.device_gib,
                                      allocated_peak_gib=peaks.allocated_gib, need_gib=peaks.need_gib)
    if m.source == "random" and "init" in out:
        # Random weights are drawn by random-number generation on the GPU (components the plan
        # converts or keeps on the host are built in host memory and filled from it, as a load places
        # them; an int8 text encoder is built on the GPU); a checkpoint load (what a user runs, and
        # what the prediction models where the calibration measured one) reads and places each.
        out["init"] = MeasuredStage(time_s=out["init"].time_s, time_scored=False,
                                    note="random weights generated, not a checkpoint load: init time and memory "
                                         "not scored")
    s = _steps(m)
    if s.switch is not None:
        peaks = worst_rank_peaks(m, _named("step", s.switch.index))
        out["expert_switch"] = MeasuredStage(
            time_s=s.switch_excess, device_peak_gib=peaks.device_gib, allocated_peak_gib=peaks.allocated_gib,
            need_gib=peaks.need_gib, derived=True,
            note=f"step {s.switch.index} minus the steady-state step time")
    if s.records:
        out["denoise"] = _denoise(m, s)
    total = m.stage("total")
    if total is not None:
        out["total"] = _total(m, total, s)
    return out


@dataclass(frozen=True)
class RankFigures:
    """One rank of a several-GPU run as the report shows it: its peaks over the run, its need (allocated peak +
    its memory outside torch), its time in each kind of collective, and the collectives' time in its median
    steady step."""

    rank: int
    status: str
    device_peak_gib: float | None
    allocated_peak_gib: float | None
    reserved_peak_gib: float | None
    need_gib: float | None
    collective_s: dict[str, float]
    steady_step_collective_s: float | None
    steady_step_s: float | None


def rank_figures(m: Measurement) -> list[RankFigures]:
    """Every rank's figures (none for a one-GPU run)."""
    out = []
    for r in m.ranks:
        stages = [s for s in r.stages if s.name != "total"]
        alloc = _max(s.torch_peak_allocated_gib for s in stages)
        outside = (r.context_gib or 0.0) + (r.idle_device_used_gib or 0.0)
        steady = sorted(steady_steps([s for s in stages if s.name == "step"]), key=lambda s: s.time_s)
        middle = steady[(len(steady) - 1) // 2] if steady else None
        out.append(RankFigures(
            rank=r.rank, status=r.status, device_peak_gib=_max(s.device_used_peak_gib for s in stages),
            allocated_peak_gib=alloc, reserved_peak_gib=_max(s.torch_peak_reserved_gib for s in stages),
            need_gib=alloc + outside if alloc is not None else None,
            collective_s={kind: c.time_s for kind, c in sorted(r.collectives().items())},
            steady_step_collective_s=sum(c.time_s for c in middle.collectives.values()) if middle else None,
            steady_step_s=middle.time_s if middle else None))
    return out
