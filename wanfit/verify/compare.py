"""Put a Measurement beside a Candidate prediction: per stage, predicted vs measured time and peak
device memory, the signed error, tolerance flags, the verdict and bottleneck notes.

Pure (pydantic); the measured side is wanfit.verify.measured, the notes wanfit.verify.bottlenecks. Conventions:
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
- Several GPUs: the prediction is one rank's, the worst; the measured memory is the worst rank's (each stage's
  highest device peak over the ranks; the need of the rank with the highest allocated peak + outside memory),
  the times rank 0's, whose clock is the point's.
"""

from __future__ import annotations

from math import isfinite
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wanfit.measure.cap import MemoryCap
from wanfit.verify.bottlenecks import bottleneck_notes
from wanfit.verify.measured import MeasuredStage, measured_stages
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement, median_steady_step_s
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

# A difference exactly at the tolerance passes despite float rounding (0.1 + 0.2 - 0.3 is 5.6e-17).
FLOAT_SLACK = 1e-12
# A relative error above 100 % is no longer a comparison: the largest tolerance verify accepts.
MAX_TOLERANCE = 1.0


class Tolerances(BaseModel):
    """Relative tolerances (fractions) and absolute floors below which a difference always passes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    memory: float = 0.05
    time: float = 0.10
    memory_floor_gib: float = Field(0.25, ge=0, allow_inf_nan=False)
    time_floor_s: float = Field(0.5, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _fractions(self) -> Tolerances:
        # A NaN tolerance fails every comparison and an infinite one passes all: neither is a check.
        for name in ("memory", "time"):
            value = getattr(self, name)
            if not (isfinite(value) and 0 < value <= MAX_TOLERANCE):
                raise WanfitError(f"--tolerance-{name} must be a fraction above 0 and at most {MAX_TOLERANCE:g} "
                                  f"(0.05 = 5 %), not {value:g}")
        return self


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


# ---- comparison ----------------------------------------------------------------------------


def error_pct(predicted: float | None, measured: float | None) -> float | None:
    """(predicted - measured) / measured x 100; None when either is missing or measured is 0."""
    if predicted is None or measured is None or measured == 0:
        return None
    return (predicted - measured) / measured * 100.0


def within(predicted: float | None, measured: float | None, rel: float, floor: float) -> bool | None:
    if predicted is None or measured is None:
        return None
    return abs(predicted - measured) <= max(rel * abs(measured), floor) + FLOAT_SLACK


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
    rows: list[StageComparison] = []
    for stage in STAGE_ORDER:
        got = measured.get(stage)
        p_time, p_peak, p_need = _predicted(prediction, stage)
        t_time = None if same_gpu else p_time
        s_time = _predicted(time_source, stage)[0]
        if got is None and p_time is None and p_peak is None:
            continue
        got = got or MeasuredStage()
        if got.without_init:
            init_s = _predicted(time_source, "init")[0] or 0.0
            s_time = s_time - init_s if s_time is not None else None
            t_time = t_time - (_predicted(prediction, "init")[0] or 0.0) if t_time is not None else None
        basis: MemoryBasis = "device"
        pred_mem, meas_mem = p_peak, got.device_peak_gib
        if cap is not None and p_peak is not None and p_peak > cap.target_memory_gib:
            basis = "need"
            pred_mem = p_need
            meas_mem = got.need_gib
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
