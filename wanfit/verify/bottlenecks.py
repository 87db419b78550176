"""Bottleneck notes of a verify run: observations drawn from the measured data, most actionable first
(a failure, a slow first step, a step the GPU waited through, a dominant stage, a long stage on which
the GPU sat idle, thin headroom). Pure; the thresholds are what a reader would notice at a glance.
"""

from __future__ import annotations

import statistics

from wanfit.measure.cap import MemoryCap
from wanfit.verify.measured import SINGLE_RECORD_STAGES, MeasuredStage
from wanfit.vocabulary.measurement import Measurement, median_steady_step_s
from wanfit.vocabulary.plan_report import Candidate

# Why these: a "well below" SM activity is one a reader would notice at a glance; a stage over half the
# run is where time should be saved first; 5 % headroom is the line; a first step 25 % and 0.2 s
# above steady state is more than timer noise; a stage over a tenth of the run at under 30 % SM activity
# is host-side work worth naming.
LOW_SM_RATIO = 0.7
LOW_SM_POINTS = 15.0
DOMINANT_SHARE = 0.5
HEADROOM_SHARE = 0.05
SLOW_FIRST_RATIO = 1.25
SLOW_FIRST_ABS_S = 0.2
IDLE_GPU_SM_PCT = 30.0
IDLE_GPU_SHARE = 0.10
ERROR_NOTE_CHARS = 200  # a failure's first line, as much as a note shows


def _failure(m: Measurement) -> list[str]:
    if m.status == "ok":
        return []
    first = (m.error or "").splitlines()[0][:ERROR_NOTE_CHARS] if m.error else ""
    return [f"{m.status.upper()} at {m.failed_stage}: {first}".rstrip(": ")]


def _slow_first_step(m: Measurement) -> list[str]:
    """First step much slower than steady state: weight upload (offload hooks) or warm-up."""
    steps = m.steps()
    steady = median_steady_step_s(steps)
    if len(steps) < 2 or not steady:
        return []
    first = steps[0]
    extra = first.time_s - steady
    if not (first.time_s > SLOW_FIRST_RATIO * steady and extra > SLOW_FIRST_ABS_S):
        return []
    why = ("weights uploaded by the offload hooks plus warm-up" if m.plan.offload != "none"
           else "warm-up (kernel selection, allocator growth)")
    return [f"Step 1 took {first.time_s:.2f} s vs {steady:.2f} s steady state: +{extra:.2f} s of {why}"]


def _waiting_steps(m: Measurement) -> list[str]:
    """A step whose SM activity is well below the other steps'."""
    acts = [(s, s.sm_activity_pct) for s in m.steps() if s.sm_activity_pct is not None]
    if len(acts) < 2:
        return []
    notes = []
    for s, a in acts:
        ref = statistics.median(b for t, b in acts if t is not s)
        if a < LOW_SM_RATIO * ref and ref - a >= LOW_SM_POINTS:
            notes.append(f"Step {s.index}: SM activity {a:.0f} % vs {ref:.0f} % on the other steps: the GPU "
                         f"waited ({s.time_s:.2f} s; host work or weight transfer)")
    return notes


def _time_shares(m: Measurement, measured: dict[str, MeasuredStage]) -> list[str]:
    """A stage that dominates total time; a long stage on which the GPU mostly sat idle."""
    total = measured.get("total")
    if total is None or not total.time_s:
        return []
    notes = []
    shares = {k: v.time_s / total.time_s for k, v in measured.items()
              if k not in ("total", "expert_switch") and v.time_s is not None}
    if shares:
        top, share = max(shares.items(), key=lambda kv: kv[1])
        if share > DOMINANT_SHARE:
            ex = " (extrapolated)" if measured[top].extrapolated else ""
            notes.append(f"{top} dominates: {share * 100:.0f} % of total time{ex}")
    for name in SINGLE_RECORD_STAGES:
        rec = m.stage(name)
        if (rec is not None and rec.sm_activity_pct is not None and rec.sm_activity_pct < IDLE_GPU_SM_PCT
                and rec.time_s > IDLE_GPU_SHARE * total.time_s):
            cpu = f", CPU {rec.cpu_pct:.0f} %" if rec.cpu_pct is not None else ""
            notes.append(f"{name}: GPU mostly idle (SM {rec.sm_activity_pct:.0f} %{cpu}) for {rec.time_s:.1f} s, "
                         f"{rec.time_s / total.time_s * 100:.0f} % of the run: host-side work")
    return notes


def _headroom(m: Measurement, c: Candidate, target_memory_gib: float | None, cap: MemoryCap | None) -> list[str]:
    """Headroom under HEADROOM_SHARE of the target's memory, measured and predicted."""
    if not target_memory_gib:
        return []
    notes = []
    line = f"{HEADROOM_SHARE * 100:g} %"
    peak = m.peak_device_used_gib
    if peak is not None and m.status == "ok":
        room = target_memory_gib - peak
        if room < HEADROOM_SHARE * target_memory_gib:
            capped = " (capped run: the allocator holds itself under the cap by releasing its cache)" \
                if cap is not None else ""
            notes.append(f"Measured peak {peak:.1f} GiB leaves {room:.1f} GiB of {target_memory_gib:.2f} GiB "
                         f"({room / target_memory_gib * 100:.1f} %, under {line}){capped}")
    if c.fits and c.headroom_gib < HEADROOM_SHARE * target_memory_gib:
        notes.append(f"Predicted headroom {c.headroom_gib:.1f} GiB is under {line} of {target_memory_gib:.2f} GiB: "
                     f"binding stage {c.binding_stage}")
    return notes


def bottleneck_notes(m: Measurement, c: Candidate, measured: dict[str, MeasuredStage],
                     target_memory_gib: float | None, cap: MemoryCap | None) -> list[str]:
    """Observations drawn from the measured data, most actionable first."""
    return [*_failure(m), *_slow_first_step(m), *_waiting_steps(m), *_time_shares(m, measured),
            *_headroom(m, c, target_memory_gib, cap)]
