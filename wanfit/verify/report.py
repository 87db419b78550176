"""The verify report: its file format (JSON) and what every view of it says, in the vocabulary of the
user's own benchmark reports. The views that lay it out (Markdown, rich tables, a PNG of device memory
over time) are wanfit.views.verify_report.

Stage names as the user's reports spell them: Model_Initialization, T5_Encoding, Step_N_Loading /
Step_N_Inference, Expert_Switch, VAE_Decoding, Total_Execution. Step_N_Loading is *derived* (that
step's time minus the steady-state step time) and labelled so; extrapolated figures of reduced-step
runs are marked wherever they appear.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wanfit import __version__
from wanfit.measure.cap import MemoryCap
from wanfit.verify.compare import STAGE_ORDER, StageComparison, Tolerances, Verdict, compare, exit_code
from wanfit.verify.measured import step_loading_s
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement, StageRecord, switch_step
from wanfit.vocabulary.plan_report import SCHEMA_VERSION, Candidate
from wanfit.vocabulary.workload import Plan, Workload

# A step's loading row is shown where it exceeds this share of a steady-state step (else it is noise).
LOADING_SHOWN_SHARE = 0.05

# Each comparison row (the stages of wanfit.vocabulary.stages, then the total) as the user's reports
# spell it; a stage added there without its words here fails at import.
_USER_WORDS = {
    "init": "Model_Initialization",
    "text_encode": "T5_Encoding",
    "prepare": "Pipeline_Prepare",
    "denoise": "Denoising (all steps)",
    "expert_switch": "Expert_Switch",
    "vae_decode": "VAE_Decoding",
    "total": "Total_Execution",
}
STAGE_LABELS = {name: _USER_WORDS[name] for name in STAGE_ORDER}

EXTRAPOLATED_MARK = "*"
DERIVED_MARK = "†"


class VerifyReport(BaseModel):
    """Everything one `wanfit verify` run produced: the inputs, the measurement, the prediction,
    the per-stage comparison and the verdict. Memory in GiB, time in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = SCHEMA_VERSION  # reports written before it had none: they load as version 1
    wanfit: str = __version__
    workload: Workload
    plan: Plan
    target_gpu: str
    target_memory_gib: float | None
    local_gpu: str | None = None  # profile key of the GPU the run was measured on, when known
    environment: Environment
    cap: MemoryCap | None = None
    measurement: Measurement
    prediction: Candidate  # for the target GPU
    local_prediction: Candidate | None = None  # the same plan for the local GPU (time is scored against it)
    same_gpu: bool
    rows: list[StageComparison]
    verdict: Verdict
    verdict_line: str
    within_tolerance: bool
    notes: list[str] = Field(default_factory=list)
    steps_run: int
    steps_requested: int
    extrapolated: bool
    extrapolated_figures: list[str] = Field(default_factory=list)  # "<stage> time" for each extrapolated figure
    steady_step_s: float | None = None
    # The host-to-device rate from pageable memory the time prediction used for an offloading plan
    # ("measured" on this host before the run, or "given" with --host-pageable-gbps); None: the
    # calibration host's rate, scaled to the target's host link.
    host_pageable_gbps: float | None = None
    # Model offload: the device-to-host rate into fresh pageable memory (measured on this host before
    # the run, or given), at which its moves down were predicted; None: the calibration host's, as fitted.
    host_d2h_gbps: float | None = None
    tolerances: Tolerances
    exit_code: int
    created_at: str


def _host_rate_notes(h2d_gbps: float | None, h2d_source: str | None, d2h_gbps: float | None,
                     d2h_source: str) -> list[str]:
    """Which host rates an offloading plan's time was predicted at, and where they came from."""
    notes = []
    if h2d_source == "not measured":
        notes.append("offloading plan: this host's pageable host-to-device rate could not be measured; time "
                     "predicted at the calibration host's")
    elif h2d_gbps is not None:
        how = "measured on this host before the run" if h2d_source == "measured" else "as given"
        notes.append(f"offloading plan: time predicted at {h2d_gbps:.2f} GB/s host-to-device from pageable memory "
                     f"({how})")
    if d2h_gbps is not None:
        how = "measured on this host before the run" if d2h_source == "measured" else "as given"
        notes.append(f"model offload: moves to host memory predicted at {d2h_gbps:.2f} GB/s device-to-host into "
                     f"fresh pageable memory ({how})")
    return notes


def build_report(
    measurement: Measurement,
    prediction: Candidate,
    *,
    target_gpu: str,
    target_memory_gib: float | None,
    cap: MemoryCap | None = None,
    tolerances: Tolerances | None = None,
    same_gpu: bool = True,
    local_gpu: str | None = None,
    local_prediction: Candidate | None = None,
    host_pageable_gbps: float | None = None,
    host_rate_source: str | None = None,
    host_d2h_gbps: float | None = None,
    host_d2h_source: str = "measured",
) -> VerifyReport:
    """Compare and wrap everything in a VerifyReport (`host_rate_source`: "measured", "given" or "not
    measured", for an offloading plan's note; `host_d2h_source`: "measured" or "given")."""
    c = compare(measurement, prediction, tolerances=tolerances, target_memory_gib=target_memory_gib, cap=cap,
                same_gpu=same_gpu, local_prediction=local_prediction)
    notes = [*c.notes, *_host_rate_notes(host_pageable_gbps, host_rate_source, host_d2h_gbps, host_d2h_source)]
    return VerifyReport(
        workload=measurement.workload, plan=measurement.plan, target_gpu=target_gpu,
        target_memory_gib=target_memory_gib, local_gpu=local_gpu, environment=measurement.environment, cap=cap,
        measurement=measurement, prediction=prediction, local_prediction=local_prediction, same_gpu=same_gpu,
        rows=c.rows, verdict=c.verdict, verdict_line=c.verdict_line, within_tolerance=c.within_tolerance,
        notes=notes, steps_run=c.steps_run, steps_requested=c.steps_requested, extrapolated=c.extrapolated,
        extrapolated_figures=[f"{r.stage} time" for r in c.rows if r.extrapolated], steady_step_s=c.steady_step_s,
        host_pageable_gbps=host_pageable_gbps, host_d2h_gbps=host_d2h_gbps, tolerances=c.tolerances,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), exit_code=exit_code(c),
    )


def report_stem(report: VerifyReport) -> str:
    """File name stem for a report's JSON / Markdown / PNG: what was run, for which GPU, how many steps."""
    w, p = report.workload, report.plan
    tiling = "tiled" if p.vae_tiling else "untiled"
    alloc = "" if p.expandable_segments else "-noexp"
    steps = f"{report.steps_run}of{w.steps}st" if report.extrapolated else f"{w.steps}st"
    where = report.target_gpu + ("-capped" if report.cap is not None else "")
    layout = p.layout_label().strip().replace(" ", "-").replace("=", "")
    stem = (f"{w.model}_{w.width}x{w.height}x{w.frames}f_{steps}_{p.offload}-te{p.text_encoder}-{p.dit_dtype}-"
            f"{tiling}{alloc}{'-' + layout if layout else ''}_{where}")
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in stem)


# ---- JSON ----------------------------------------------------------------------------------


def write_json(report: VerifyReport, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.model_dump_json(indent=1) + "\n")
    return path


def load_report(path: Path) -> VerifyReport:
    """Read a verify report JSON; a missing or invalid file is a one-line error."""
    path = Path(path)
    try:
        return VerifyReport.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise WanfitError(f"no verify report at {path}: run `wanfit verify` to make one") from None
    except (json.JSONDecodeError, ValidationError) as e:
        raise WanfitError(f"{path} is not a valid wanfit verify report ({type(e).__name__}); "
                          f"re-run `wanfit verify` to write it again") from None


# ---- what every view says ------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".2f") -> str:
    """A figure for a table cell or a sentence; a dash where there is none."""
    return "—" if value is None else format(value, spec)


def cap_line(r: VerifyReport) -> str:
    env = r.environment
    if r.cap is None:
        if r.same_gpu:
            return f"measured on the target itself ({env.gpu_name}, {env.gpu_total_gib:.1f} GiB), uncapped"
        return (f"measured uncapped on {env.gpu_name} ({env.gpu_total_gib:.1f} GiB): the target has about the same "
                f"memory, nothing to emulate")
    cap = r.cap
    return (f"emulated on {env.gpu_name} ({cap.local_total_gib:.1f} GiB) by capping the torch allocator to "
            f"{cap.torch_budget_gib:.2f} GiB (fraction {cap.fraction:.4f} = ({cap.target_memory_gib:.2f} GiB usable "
            f"- {cap.outside_torch_gib:.2f} GiB CUDA context + driver baseline, measured locally) / "
            f"{cap.local_total_gib:.2f} GiB)")


def honesty_statements(r: VerifyReport) -> list[str]:
    """What this run is and is not, in plain words (shown in every view)."""
    m = r.measurement
    out = []
    if m.source == "random":
        out.append("Weights are random with the real architecture, shapes and dtypes: memory and time depend on "
                   "those, not on weight values; the video itself is noise.")
    else:
        out.append("Weights were loaded from a local checkpoint.")
    if r.extrapolated:
        missing = r.steps_requested - r.steps_run
        out.append(f"Only {r.steps_run} of {r.steps_requested} denoising steps were run: "
                   f"{', '.join(r.extrapolated_figures)} add {missing} x the steady-state step "
                   f"({fmt(r.steady_step_s, '.3f')} s) and are marked {EXTRAPOLATED_MARK}; peaks are measured "
                   f"(every step has the same shapes).")
    if r.cap is not None:
        out.append(f"Capped run: {cap_line(r)}. The outside-torch memory of the target is assumed equal to the "
                   f"one measured here.")
    if not r.same_gpu:
        if r.local_prediction is not None:
            out.append(f"Time was measured on {r.environment.gpu_name} and scored against the same plan predicted "
                       f"for it ({r.local_gpu}); the {r.target_gpu} time is the transferred prediction, shown "
                       f"beside it, unscored.")
        else:
            out.append(f"Time was measured on {r.environment.gpu_name}, not on {r.target_gpu}: the predicted "
                       f"{r.target_gpu} time is shown beside it, unscored.")
    if any(rw.memory_basis == "need" for rw in r.rows):
        out.append("Rows with memory basis 'need' compare torch's allocated peak plus the outside-torch memory "
                   "with the predicted need: under the cap the allocator released its cache, so the device peak "
                   "no longer measures the uncapped prediction.")
    if any(rw.derived for rw in r.rows):
        out.append(f"{DERIVED_MARK} derived figures: Expert_Switch and Step_N_Loading are a step's time minus the "
                   f"steady-state step time, not separately timed stages.")
    if m.activity_source:
        out.append(f"SM activity source: {m.activity_source}.")
    if m.ranks:
        out.append(_ranks_statement(m))
    return out


def _ranks_statement(m: Measurement) -> str:
    d = m.distributed
    how = f"{d.backend}" + (f", NCCL {d.nccl_version}" if d and d.nccl_version else "") if d else "?"
    decode = (" The official code decodes on rank 0 only: the other ranks' VAE_Decoding is their wait at its "
              "barrier." if m.plan.runtime == "wan" else " Every rank decodes (diffusers' pipeline on each rank).")
    return (f"{len(m.ranks)} GPUs, one rank each ({how}): stage times are rank 0's; every memory figure compared is "
            f"the worst rank's, as the prediction is the worst rank's.{decode} Collective times are CUDA-event times "
            f"on the stream that issued each call and include waiting for a slower rank.")


class BreakdownRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    label: str
    time_s: float | None
    peak_gib: float | None = None
    cpu_pct: float | None = None
    host_gib: float | None = None
    sm_pct: float | None = None
    compute_load: float | None = None
    step: int | None = None  # a plain, unsplit Step_N_Inference row (the console may merge runs of them)


def _from_record(label: str, rec: StageRecord, time_s: float | None = None) -> BreakdownRow:
    return BreakdownRow(label=label, time_s=rec.time_s if time_s is None else time_s,
                         peak_gib=rec.device_used_peak_gib, cpu_pct=rec.cpu_pct, host_gib=rec.host_rss_peak_gib,
                         sm_pct=rec.sm_activity_pct, compute_load=rec.compute_load)


def _collapse_steady(rows: list[BreakdownRow]) -> list[BreakdownRow]:
    """Merge runs of 3+ consecutive plain Step_N_Inference rows into one range row (for the console)."""
    out: list[BreakdownRow] = []
    run: list[tuple[int, BreakdownRow]] = []

    def flush():
        if len(run) >= 3:
            first, last = run[0][0], run[-1][0]
            n = len(run)
            rs = [b for _, b in run]
            sms = [b.sm_pct for b in rs if b.sm_pct is not None]
            out.append(BreakdownRow(
                label=f"Step_{first}..{last}_Inference (mean of {n})", time_s=sum(b.time_s or 0 for b in rs) / n,
                peak_gib=max((b.peak_gib for b in rs if b.peak_gib is not None), default=None),
                cpu_pct=None, host_gib=max((b.host_gib for b in rs if b.host_gib is not None), default=None),
                sm_pct=sum(sms) / len(sms) if sms else None,
                compute_load=sum(b.compute_load or 0 for b in rs) / n))
        else:
            out.extend(b for _, b in run)
        run.clear()

    for b in rows:
        if b.step is not None and (not run or run[-1][0] == b.step - 1):
            run.append((b.step, b))
            continue
        flush()
        if b.step is not None:
            run.append((b.step, b))
        else:
            out.append(b)
    flush()
    return out


def breakdown_rows(r: VerifyReport, collapse: bool = False) -> list[BreakdownRow]:
    """The measured stage breakdown in the user's vocabulary (derived and extrapolated rows marked).
    `collapse` merges runs of steady steps into one mean row (the console view; Markdown lists each)."""
    rows = _breakdown_rows(r)
    return _collapse_steady(rows) if collapse else rows


def _step_rows(r: VerifyReport) -> list[BreakdownRow]:
    """Step_N_Inference per step run; a step far above steady state split into its derived loading (or
    expert switch) and the rest; the steps not run, extrapolated, as one row."""
    rows: list[BreakdownRow] = []
    steps = r.measurement.steps()
    steady = r.steady_step_s
    switch = switch_step(steps)
    for s in steps:
        loading = step_loading_s(s, steady)
        shown = steady is not None and s.index is not None and s.index > 0 and loading > LOADING_SHOWN_SHARE * steady
        if s is switch:
            rows.append(BreakdownRow(label=f"Expert_Switch (in step {s.index}) {DERIVED_MARK}", time_s=loading))
        elif shown:
            rows.append(BreakdownRow(label=f"Step_{s.index}_Loading {DERIVED_MARK}", time_s=loading))
        split = s is switch or shown
        expert = f" [expert {s.expert}]" if s.expert is not None else ""
        row = _from_record(f"Step_{s.index}_Inference{expert}", s, s.time_s - loading if split else None)
        rows.append(row if split else row.model_copy(update={"step": s.index}))
    if r.extrapolated and steady is not None:
        first, last = r.steps_run + 1, r.steps_requested
        rows.append(BreakdownRow(label=f"Step_{first}..{last}_Inference {EXTRAPOLATED_MARK}",
                                 time_s=(last - first + 1) * steady))
    return rows


def _total_rows(r: VerifyReport, total: StageRecord) -> list[BreakdownRow]:
    """Total_Execution as run; a reduced-step run's also extrapolated to every step requested."""
    label = STAGE_LABELS["total"]
    if not r.extrapolated:
        return [_from_record(label, total)]
    t = next((rw.measured_time_s for rw in r.rows if rw.stage == "total"), None)
    return [_from_record(f"{label} (as run, {r.steps_run} steps)", total),
            BreakdownRow(label=f"{label} ({r.steps_requested} steps) {EXTRAPOLATED_MARK}", time_s=t,
                         peak_gib=total.device_used_peak_gib, host_gib=total.host_rss_peak_gib)]


def _breakdown_rows(r: VerifyReport) -> list[BreakdownRow]:
    m = r.measurement
    rows = [_from_record(STAGE_LABELS[name], rec) for name in ("init", "text_encode", "prepare")
            if (rec := m.stage(name)) is not None]
    rows += _step_rows(r)
    if (rec := m.stage("vae_decode")) is not None:
        rows.append(_from_record(STAGE_LABELS["vae_decode"], rec))
    if (total := m.stage("total")) is not None:
        rows += _total_rows(r, total)
    return rows


def row_label(rw: StageComparison) -> str:
    label = STAGE_LABELS.get(rw.stage, rw.stage)
    if rw.extrapolated:
        label += f" {EXTRAPOLATED_MARK}"
    if rw.derived:
        label += f" {DERIVED_MARK}"
    return label


def title(r: VerifyReport) -> str:
    return f"wanfit verify: {r.workload.label()} for {r.target_gpu}"


__all__ = [
    "DERIVED_MARK",
    "EXTRAPOLATED_MARK",
    "STAGE_LABELS",
    "BreakdownRow",
    "VerifyReport",
    "breakdown_rows",
    "build_report",
    "cap_line",
    "fmt",
    "honesty_statements",
    "load_report",
    "report_stem",
    "row_label",
    "title",
    "write_json",
]
