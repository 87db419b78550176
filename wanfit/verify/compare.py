"""Put a Measurement beside a Candidate prediction: per stage, predicted vs measured time and peak
device memory, the signed error, tolerance flags, the verdict and bottleneck notes.

Pure (pydantic + statistics). Conventions:
- signed error % = (predicted - measured) / measured x 100: positive means the prediction was
  higher than the measurement (for memory, the safe side).
- A figure is within tolerance when |predicted - measured| <= max(tolerance x measured, floor):
  the absolute floors keep timer and 10 ms poller noise on tiny stages (a 0.04 s text encode)
  from failing a verify. Both are configurable and recorded in the report.
- Reduced-step runs (`--steps 3` on a 50-step workload): the denoise and total times are the
  measured steps plus (requested - run) x the steady-state step time (median of the steps after
  the first, the expert-switch step left out), and are marked `extrapolated`. Peaks are not
  extrapolated: every step of a run has the same shapes, so a few steps show the step peak.
- Expert switch (two-expert A14B models): the runner records it inside the first step of the
  second expert; its time is *derived* as that step's time minus the steady-state step time, and
  the denoise time excludes it so that denoise + expert_switch = the sum of the steps.
- Memory is compared at the device level (NVML used, what nvidia-smi shows) against the
  predicted `peak_vram_gib`. Under a cap whose target memory is below the predicted uncapped peak,
  the allocator must release its cache to stay under the cap, so the device peak stops measuring
  the prediction; there the basis is "need": torch's allocated peak plus the memory outside torch
  (CUDA context + driver baseline), against the predicted `need_gib`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wanfit.measure.cap import MemoryCap
from wanfit.model.geometry import high_noise_steps
from wanfit.vocabulary.measurement import Measurement, StageRecord, median_steady_step_s, switch_step
from wanfit.vocabulary.plan_report import Candidate
from wanfit.vocabulary.stages import STAGES

Verdict = Literal["pass", "outside_tolerance", "oom_unexpected", "oom_confirmed", "ran_despite_no_fit", "error"]
MemoryBasis = Literal["device", "need"]

# The rows of a comparison, in pipeline order. `prepare` (pipeline call up to the first DiT
# forward) is measured but has no predicted counterpart unless the planner adds one.
STAGE_ORDER = (*STAGES, "total")

EXIT_OK = 0
EXIT_OUTSIDE_TOLERANCE = 1
EXIT_OOM_UNEXPECTED = 3  # 2 is click's usage-error code
EXIT_RUN_ERROR = 4

# Bottleneck thresholds (why these: a "well below" SM activity is one a reader would notice at a
# glance; a stage over half the run is where time should be saved first; 5 % headroom is the
# issue's line; a first step 25 % and 0.2 s above steady state is more than timer noise).
LOW_SM_RATIO = 0.7
LOW_SM_POINTS = 15.0
DOMINANT_SHARE = 0.5
HEADROOM_SHARE = 0.05
SLOW_FIRST_RATIO = 1.25
SLOW_FIRST_ABS_S = 0.2
IDLE_GPU_SM_PCT = 30.0
IDLE_GPU_SHARE = 0.10


class Tolerances(BaseModel):
    """Relative tolerances (fractions) and absolute floors below which a difference always passes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    memory: float = Field(0.05, gt=0)
    time: float = Field(0.10, gt=0)
    memory_floor_gib: float = Field(0.25, ge=0)
    time_floor_s: float = Field(0.5, ge=0)


class StageComparison(BaseModel):
    """One stage: predicted vs measured. `None` where a side has no figure; `*_within` is None when
    the figure is not scored (no prediction, no measurement, or time predicted for another GPU)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    stage: str
    predicted_time_s: float | None = None  # for the GPU the run was measured on
    measured_time_s: float | None = None
    time_error_pct: float | None = None
    time_within: bool | None = None
    target_time_s: float | None = None  # predicted for the target GPU, when that is not the local one
    predicted_peak_gib: float | None = None
    measured_peak_gib: float | None = None
    memory_basis: MemoryBasis = "device"
    memory_error_pct: float | None = None
    memory_within: bool | None = None
    extrapolated: bool = False  # measured time extrapolated from fewer steps than requested
    derived: bool = False  # measured time derived from other figures (expert switch)
    note: str | None = None


class Comparison(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rows: list[StageComparison]
    verdict: Verdict
    verdict_line: str
    within_tolerance: bool  # every scored figure within tolerance
    notes: list[str]
    steps_run: int
    steps_requested: int
    extrapolated: bool
    steady_step_s: float | None
    tolerances: Tolerances


# ---- measured figures ----------------------------------------------------------------------


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


@dataclass(frozen=True)
class _Measured:
    """One stage's measured figures, before comparison (internal, never written to a file)."""

    time_s: float | None = None
    device_peak_gib: float | None = None
    allocated_peak_gib: float | None = None
    extrapolated: bool = False
    derived: bool = False
    note: str | None = None
    time_scored: bool = True
    without_init: bool = False  # a total whose time leaves the (unscored) init out, on both sides


def measured_stages(m: Measurement) -> dict[str, _Measured]:
    """Measured figures per comparison stage (see the module docstring for the rules)."""
    out: dict[str, _Measured] = {}
    for name in ("init", "text_encode", "prepare", "vae_decode"):
        rec = m.stage(name)
        if rec is not None:
            out[name] = _Measured(time_s=rec.time_s, device_peak_gib=rec.device_used_peak_gib,
                                  allocated_peak_gib=rec.torch_peak_allocated_gib)
    if m.source == "random" and "init" in out:
        # Random weights are drawn by random-number generation on the GPU (components the plan
        # converts or keeps on the host are built in host memory and filled from it, as a load places
        # them; an int8 text encoder is built on the GPU); a checkpoint load (what a user runs, and
        # what the prediction models where the calibration measured one) reads and places each.
        out["init"] = _Measured(time_s=out["init"].time_s, time_scored=False,
                                note="random weights generated, not a checkpoint load: init time and memory "
                                     "not scored")
    run_stages = [s for s in m.stages if s.name != "total" and not (m.source == "random" and s.name == "init")]
    steps = m.steps()
    requested = m.workload.steps
    steady = median_steady_step_s(steps)
    finished = m.status == "ok"
    # A run that failed inside the denoising loop has a partial step list; one that failed later
    # (at VAE decode) ran every step it meant to run, so its step figures extrapolate like a finished run's.
    partial = not finished and (m.failed_stage or "").startswith("step")
    missing = max(0, requested - len(steps)) if steps and not partial else 0
    switch = switch_step(steps)
    switch_excess = step_loading_s(switch, steady) if switch is not None else 0.0
    if switch is not None:
        out["expert_switch"] = _Measured(time_s=switch_excess, device_peak_gib=switch.device_used_peak_gib,
                                         allocated_peak_gib=switch.torch_peak_allocated_gib, derived=True,
                                         note=f"step {switch.index} minus the steady-state step time")
    if steps:
        denoise_time = sum(s.time_s for s in steps) - switch_excess + missing * (steady or 0.0)
        note = None
        if missing:
            note = f"{len(steps)} of {requested} steps run; {missing} x {steady:.3f} s steady-state step added"
            spec = m.workload.spec
            if spec.experts == 2 and switch is None and 0 < high_noise_steps(spec, requested) < requested:
                note += "; the full run's expert switch was not among the steps run (not measured)"
        if partial:
            note = f"run stopped at {m.failed_stage}: {len(steps)} steps completed"
        out["denoise"] = _Measured(
            time_s=None if partial else denoise_time,
            device_peak_gib=_max(s.device_used_peak_gib for s in steps),
            allocated_peak_gib=_max(s.torch_peak_allocated_gib for s in steps),
            extrapolated=bool(missing), note=note)
    total = m.stage("total")
    if total is not None:
        # A failed run's total covers only the stages before the failure: not a figure to score.
        # A random-weight run's total leaves its init out (compared without the predicted init).
        random_init = m.stage("init") if m.source == "random" else None
        time_s = total.time_s + missing * (steady or 0.0) - (random_init.time_s if random_init else 0.0)
        note = None if finished else f"partial run ({m.status} at {m.failed_stage}): total not compared"
        if finished and random_init is not None:
            note = "without init (random weights: not a checkpoint load)"
        out["total"] = _Measured(
            time_s=time_s if finished else None,
            device_peak_gib=_max(s.device_used_peak_gib for s in run_stages) if finished else None,
            allocated_peak_gib=_max(s.torch_peak_allocated_gib for s in run_stages) if finished else None,
            extrapolated=bool(missing), without_init=random_init is not None, note=note)
    return out


# ---- comparison ----------------------------------------------------------------------------


def error_pct(predicted: float | None, measured: float | None) -> float | None:
    """(predicted - measured) / measured x 100; None when either is missing or measured is 0."""
    if predicted is None or measured is None or measured == 0:
        return None
    return (predicted - measured) / measured * 100.0


def within(predicted: float | None, measured: float | None, rel: float, floor: float) -> bool | None:
    if predicted is None or measured is None:
        return None
    return abs(predicted - measured) <= max(rel * abs(measured), floor) + 1e-12


def _predicted(c: Candidate | None, stage: str) -> tuple[float | None, float | None, float | None]:
    """(time_s, peak_vram_gib, need_gib) the candidate predicts for a comparison stage."""
    if c is None:
        return None, None, None
    if stage == "total":
        return c.duration_s, c.peak_vram_gib, c.need_gib
    for s in c.stages:
        if s.name == stage:
            return s.time_s, s.peak_vram_gib, s.need_gib
    return None, None, None


def compare(
    measurement: Measurement,
    prediction: Candidate,
    *,
    tolerances: Tolerances | None = None,
    target_memory_gib: float | None = None,
    cap: MemoryCap | None = None,
    same_gpu: bool = True,
    local_prediction: Candidate | None = None,
) -> Comparison:
    """Compare one run with its prediction.

    `prediction` is for the target GPU (memory, fit verdict). When the run was measured on another
    GPU (`same_gpu=False`), time is scored against `local_prediction` (the same plan predicted for
    the local GPU) if given; the target's transferred time is shown beside it, unscored."""
    tol = tolerances or Tolerances()
    m = measurement
    measured = measured_stages(m)
    time_source = prediction if same_gpu else local_prediction
    outside = outside_torch_gib(m)
    rows: list[StageComparison] = []
    for stage in STAGE_ORDER:
        got = measured.get(stage)
        p_time, p_peak, p_need = _predicted(prediction, stage)
        t_time = None if same_gpu else p_time
        s_time = _predicted(time_source, stage)[0]
        if got is None and p_time is None and p_peak is None:
            continue
        got = got or _Measured()
        if got.without_init:
            init_s = _predicted(time_source, "init")[0] or 0.0
            s_time = s_time - init_s if s_time is not None else None
            t_time = t_time - (_predicted(prediction, "init")[0] or 0.0) if t_time is not None else None
        basis: MemoryBasis = "device"
        pred_mem, meas_mem = p_peak, got.device_peak_gib
        if cap is not None and p_peak is not None and p_peak > cap.target_memory_gib:
            basis = "need"
            pred_mem = p_need
            meas_mem = got.allocated_peak_gib + outside if got.allocated_peak_gib is not None else None
        rows.append(StageComparison(
            stage=stage, predicted_time_s=s_time, measured_time_s=got.time_s,
            time_error_pct=error_pct(s_time, got.time_s),
            time_within=within(s_time, got.time_s, tol.time, tol.time_floor_s) if got.time_scored else None,
            target_time_s=t_time, predicted_peak_gib=pred_mem, measured_peak_gib=meas_mem, memory_basis=basis,
            memory_error_pct=error_pct(pred_mem, meas_mem),
            memory_within=within(pred_mem, meas_mem, tol.memory, tol.memory_floor_gib),
            extrapolated=got.extrapolated, derived=got.derived, note=got.note,
        ))
    ok = all(r.time_within is not False and r.memory_within is not False for r in rows)
    verdict, line = _verdict(m, prediction, ok, target_memory_gib)
    steps = m.steps()
    extrapolated = any(r.extrapolated for r in rows)
    return Comparison(
        rows=rows, verdict=verdict, verdict_line=line, within_tolerance=ok,
        notes=bottleneck_notes(m, prediction, measured, target_memory_gib, cap),
        steps_run=m.steps_run, steps_requested=m.workload.steps, extrapolated=extrapolated,
        steady_step_s=median_steady_step_s(steps), tolerances=tol,
    )


def _verdict(m: Measurement, c: Candidate, ok: bool, target_memory_gib: float | None) -> tuple[Verdict, str]:
    where = m.failed_stage or "an unknown stage"
    need = f"predicted need {c.need_gib:.1f} GiB"
    usable = f" of {target_memory_gib:.1f} GiB usable" if target_memory_gib is not None else ""
    if m.status == "error":
        first = (m.error or "").splitlines()[0] if m.error else "no message"
        return "error", f"ERROR: the run failed at {where} for a reason other than memory ({first}); nothing verified"
    if m.status == "oom":
        if c.fits:
            return "oom_unexpected", f"FAILED: predicted to fit ({need}{usable}) but ran out of memory at {where}"
        return "oom_confirmed", f"CONFIRMED: predicted not to fit ({need}{usable}) and ran out of memory at {where}"
    tol_part = "every scored figure within tolerance" if ok else "some figures outside tolerance"
    if not c.fits:
        return ("ran_despite_no_fit",
                f"RAN although predicted not to fit ({need}{usable}, headroom {c.headroom_gib:.1f} GiB after the "
                f"safety margin); {tol_part}")
    if ok:
        return "pass", f"PASS: fits as predicted; {tol_part}"
    return "outside_tolerance", f"OUTSIDE TOLERANCE: fits as predicted, but {tol_part}"


def exit_code(report) -> int:
    """Process exit code for a verify: non-zero when a predicted-fit plan ran out of memory, the
    run failed, or a scored figure is outside tolerance. Takes a VerifyReport or a Comparison."""
    if report.verdict == "error":
        return EXIT_RUN_ERROR
    if report.verdict == "oom_unexpected":
        return EXIT_OOM_UNEXPECTED
    if any(r.time_within is False or r.memory_within is False for r in report.rows):
        return EXIT_OUTSIDE_TOLERANCE
    return EXIT_OK


# ---- bottleneck notes ----------------------------------------------------------------------


def bottleneck_notes(m: Measurement, c: Candidate, measured: dict[str, _Measured],
                     target_memory_gib: float | None, cap: MemoryCap | None) -> list[str]:
    """Observations drawn from the measured data, most actionable first."""
    notes: list[str] = []
    steps = m.steps()
    steady = median_steady_step_s(steps)
    if m.status != "ok":
        first = (m.error or "").splitlines()[0][:200] if m.error else ""
        notes.append(f"{m.status.upper()} at {m.failed_stage}: {first}".rstrip(": "))

    # First step much slower than steady state: weight upload (offload hooks) or warm-up.
    if len(steps) >= 2 and steady:
        first = steps[0]
        extra = first.time_s - steady
        if first.time_s > SLOW_FIRST_RATIO * steady and extra > SLOW_FIRST_ABS_S:
            why = ("weights uploaded by the offload hooks plus warm-up" if m.plan.offload != "none"
                   else "warm-up (kernel selection, allocator growth)")
            notes.append(f"Step 1 took {first.time_s:.2f} s vs {steady:.2f} s steady state: +{extra:.2f} s of {why}")

    # A step whose SM activity is well below the other steps'.
    acts = [(s, s.sm_activity_pct) for s in steps if s.sm_activity_pct is not None]
    if len(acts) >= 2:
        for s, a in acts:
            others = [b for t, b in acts if t is not s]
            ref = statistics.median(others)
            if a < LOW_SM_RATIO * ref and ref - a >= LOW_SM_POINTS:
                notes.append(f"Step {s.index}: SM activity {a:.0f} % vs {ref:.0f} % on the other steps: the GPU "
                             f"waited ({s.time_s:.2f} s; host work or weight transfer)")

    # A stage that dominates total time.
    total = measured.get("total")
    if total is not None and total.time_s:
        shares = {k: v.time_s / total.time_s for k, v in measured.items()
                  if k not in ("total", "expert_switch") and v.time_s is not None}
        if shares:
            top, share = max(shares.items(), key=lambda kv: kv[1])
            if share > DOMINANT_SHARE:
                ex = " (extrapolated)" if measured[top].extrapolated else ""
                notes.append(f"{top} dominates: {share * 100:.0f} % of total time{ex}")
        # A long stage on which the GPU mostly sat idle.
        for name in ("init", "text_encode", "prepare", "vae_decode"):
            rec = m.stage(name)
            if (rec is not None and rec.sm_activity_pct is not None and rec.sm_activity_pct < IDLE_GPU_SM_PCT
                    and rec.time_s > IDLE_GPU_SHARE * total.time_s):
                cpu = f", CPU {rec.cpu_pct:.0f} %" if rec.cpu_pct is not None else ""
                notes.append(f"{name}: GPU mostly idle (SM {rec.sm_activity_pct:.0f} %{cpu}) for {rec.time_s:.1f} s, "
                             f"{rec.time_s / total.time_s * 100:.0f} % of the run: host-side work")

    # Headroom under 5 % of the target's memory, measured and predicted.
    if target_memory_gib:
        peak = m.peak_device_used_gib
        if peak is not None and m.status == "ok":
            room = target_memory_gib - peak
            if room < HEADROOM_SHARE * target_memory_gib:
                capped = " (capped run: the allocator holds itself under the cap by releasing its cache)" \
                    if cap is not None else ""
                notes.append(f"Measured peak {peak:.1f} GiB leaves {room:.1f} GiB of {target_memory_gib:.2f} GiB "
                             f"({room / target_memory_gib * 100:.1f} %, under 5 %){capped}")
        if c.fits and c.headroom_gib < HEADROOM_SHARE * target_memory_gib:
            notes.append(f"Predicted headroom {c.headroom_gib:.1f} GiB is under 5 % of {target_memory_gib:.2f} GiB: "
                         f"binding stage {c.binding_stage}")
    return notes
