"""The verify report: one file format (JSON) and three views of it (Markdown, rich tables, a PNG of
device memory over time), in the vocabulary of the user's own benchmark reports.

Stage names as the user's reports spell them: Model_Initialization, T5_Encoding, Step_N_Loading /
Step_N_Inference, Expert_Switch, VAE_Decoding, Total_Execution. Step_N_Loading is *derived* (that
step's time minus the steady-state step time) and labelled so; extrapolated figures of reduced-step
runs are marked wherever they appear. matplotlib is imported inside `plot_memory` only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wanfit import __version__
from wanfit.measure.cap import MemoryCap
from wanfit.verify.compare import (
    StageComparison,
    Tolerances,
    Verdict,
    compare,
    exit_code,
)
from wanfit.verify.measured import step_loading_s
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement, StageRecord, switch_step
from wanfit.vocabulary.plan_report import Candidate
from wanfit.vocabulary.workload import Plan, Workload

# A step's loading row is shown where it exceeds this share of a steady-state step (else it is noise).
LOADING_SHOWN_SHARE = 0.05

STAGE_LABELS = {
    "init": "Model_Initialization",
    "text_encode": "T5_Encoding",
    "prepare": "Pipeline_Prepare",
    "denoise": "Denoising (all steps)",
    "expert_switch": "Expert_Switch",
    "vae_decode": "VAE_Decoding",
    "total": "Total_Execution",
}

EXTRAPOLATED_MARK = "*"
DERIVED_MARK = "†"


class VerifyReport(BaseModel):
    """Everything one `wanfit verify` run produced: the inputs, the measurement, the prediction,
    the per-stage comparison and the verdict. Memory in GiB, time in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")
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
    fields = dict(
        workload=measurement.workload, plan=measurement.plan, target_gpu=target_gpu,
        target_memory_gib=target_memory_gib, local_gpu=local_gpu, environment=measurement.environment, cap=cap,
        measurement=measurement, prediction=prediction, local_prediction=local_prediction, same_gpu=same_gpu,
        rows=c.rows, verdict=c.verdict, verdict_line=c.verdict_line, within_tolerance=c.within_tolerance,
        notes=c.notes, steps_run=c.steps_run, steps_requested=c.steps_requested, extrapolated=c.extrapolated,
        extrapolated_figures=[f"{r.stage} time" for r in c.rows if r.extrapolated], steady_step_s=c.steady_step_s,
        host_pageable_gbps=host_pageable_gbps, host_d2h_gbps=host_d2h_gbps, tolerances=c.tolerances,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if host_rate_source == "not measured":
        fields["notes"] = [*fields["notes"], "offloading plan: this host's pageable host-to-device rate could not be "
                           "measured; time predicted at the calibration host's"]
    elif host_pageable_gbps is not None:
        how = "measured on this host before the run" if host_rate_source == "measured" else "as given"
        fields["notes"] = [*fields["notes"], f"offloading plan: time predicted at {host_pageable_gbps:.2f} GB/s "
                           f"host-to-device from pageable memory ({how})"]
    if host_d2h_gbps is not None:
        how = "measured on this host before the run" if host_d2h_source == "measured" else "as given"
        fields["notes"] = [*fields["notes"], f"model offload: moves to host memory predicted at {host_d2h_gbps:.2f} "
                           f"GB/s device-to-host into fresh pageable memory ({how})"]
    return VerifyReport(**fields, exit_code=exit_code(c))


def report_stem(report: VerifyReport) -> str:
    """File name stem for a report's JSON / Markdown / PNG: what was run, for which GPU, how many steps."""
    w, p = report.workload, report.plan
    tiling = "tiled" if p.vae_tiling else "untiled"
    alloc = "" if p.expandable_segments else "-noexp"
    steps = f"{report.steps_run}of{w.steps}st" if report.extrapolated else f"{w.steps}st"
    where = report.target_gpu + ("-capped" if report.cap is not None else "")
    stem = (f"{w.model}_{w.width}x{w.height}x{w.frames}f_{steps}_{p.offload}-te{p.text_encoder}-{p.dit_dtype}-"
            f"{tiling}{alloc}_{where}")
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


# ---- shared helpers ------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f} %"


def _ok(flag: bool | None) -> str:
    return {True: "yes", False: "NO", None: "not scored"}[flag]


def _cap_line(r: VerifyReport) -> str:
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
                   f"({_f(r.steady_step_s, '.3f')} s) and are marked {EXTRAPOLATED_MARK}; peaks are measured "
                   f"(every step has the same shapes).")
    if r.cap is not None:
        out.append(f"Capped run: {_cap_line(r)}. The outside-torch memory of the target is assumed equal to the "
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
    return out


class _BreakdownRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    label: str
    time_s: float | None
    peak_gib: float | None = None
    cpu_pct: float | None = None
    host_gib: float | None = None
    sm_pct: float | None = None
    compute_load: float | None = None
    step: int | None = None  # a plain, unsplit Step_N_Inference row (the console may merge runs of them)


def _from_record(label: str, rec: StageRecord, time_s: float | None = None) -> _BreakdownRow:
    return _BreakdownRow(label=label, time_s=rec.time_s if time_s is None else time_s,
                         peak_gib=rec.device_used_peak_gib, cpu_pct=rec.cpu_pct, host_gib=rec.host_rss_peak_gib,
                         sm_pct=rec.sm_activity_pct, compute_load=rec.compute_load)


def _collapse_steady(rows: list[_BreakdownRow]) -> list[_BreakdownRow]:
    """Merge runs of 3+ consecutive plain Step_N_Inference rows into one range row (for the console)."""
    out: list[_BreakdownRow] = []
    run: list[tuple[int, _BreakdownRow]] = []

    def flush():
        if len(run) >= 3:
            first, last = run[0][0], run[-1][0]
            n = len(run)
            rs = [b for _, b in run]
            sms = [b.sm_pct for b in rs if b.sm_pct is not None]
            out.append(_BreakdownRow(
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


def breakdown_rows(r: VerifyReport, collapse: bool = False) -> list[_BreakdownRow]:
    """The measured stage breakdown in the user's vocabulary (derived and extrapolated rows marked).
    `collapse` merges runs of steady steps into one mean row (the console view; Markdown lists each)."""
    rows = _breakdown_rows(r)
    return _collapse_steady(rows) if collapse else rows


def _breakdown_rows(r: VerifyReport) -> list[_BreakdownRow]:
    m = r.measurement
    rows: list[_BreakdownRow] = []
    for name in ("init", "text_encode", "prepare"):
        rec = m.stage(name)
        if rec is not None:
            rows.append(_from_record(STAGE_LABELS[name], rec))
    steps = m.steps()
    steady = r.steady_step_s
    switch = switch_step(steps)
    for s in steps:
        loading = step_loading_s(s, steady)
        shown = steady is not None and s.index is not None and s.index > 0 and loading > LOADING_SHOWN_SHARE * steady
        if s is switch:
            rows.append(_BreakdownRow(label=f"Expert_Switch (in step {s.index}) {DERIVED_MARK}", time_s=loading))
        elif shown:
            rows.append(_BreakdownRow(label=f"Step_{s.index}_Loading {DERIVED_MARK}", time_s=loading))
        split = s is switch or shown
        expert = f" [expert {s.expert}]" if s.expert is not None else ""
        row = _from_record(f"Step_{s.index}_Inference{expert}", s, s.time_s - loading if split else None)
        rows.append(row if split else row.model_copy(update={"step": s.index}))
    if r.extrapolated and steady is not None:
        first, last = r.steps_run + 1, r.steps_requested
        rows.append(_BreakdownRow(label=f"Step_{first}..{last}_Inference {EXTRAPOLATED_MARK}",
                                  time_s=(last - first + 1) * steady))
    rec = m.stage("vae_decode")
    if rec is not None:
        rows.append(_from_record(STAGE_LABELS["vae_decode"], rec))
    total = m.stage("total")
    if total is not None:
        if r.extrapolated:
            rows.append(_from_record(f"Total_Execution (as run, {r.steps_run} steps)", total))
            t = next((rw.measured_time_s for rw in r.rows if rw.stage == "total"), None)
            rows.append(_BreakdownRow(label=f"Total_Execution ({r.steps_requested} steps) {EXTRAPOLATED_MARK}",
                                      time_s=t, peak_gib=total.device_used_peak_gib,
                                      host_gib=total.host_rss_peak_gib))
        else:
            rows.append(_from_record(STAGE_LABELS["total"], total))
    return rows


def _row_label(rw: StageComparison) -> str:
    label = STAGE_LABELS.get(rw.stage, rw.stage)
    if rw.extrapolated:
        label += f" {EXTRAPOLATED_MARK}"
    if rw.derived:
        label += f" {DERIVED_MARK}"
    return label


def _title(r: VerifyReport) -> str:
    return f"wanfit verify: {r.workload.label()} for {r.target_gpu}"


# ---- Markdown ------------------------------------------------------------------------------


def _gpu_limits(env: Environment) -> str:
    """' (power limit 700 W, SM clock up to 1980 MHz)' where NVML gave them (older reports: nothing)."""
    parts = []
    if env.gpu_power_limit_w is not None:
        parts.append(f"power limit {env.gpu_power_limit_w:g} W")
    if env.gpu_max_sm_clock_mhz is not None:
        parts.append(f"SM clock up to {env.gpu_max_sm_clock_mhz} MHz")
    return f" ({', '.join(parts)})" if parts else ""


def render_markdown(report: VerifyReport) -> str:
    r = report
    env = r.environment
    tol = r.tolerances
    lines = [f"# {_title(r)}", "", f"**{r.verdict_line}** (exit code {r.exit_code})", ""]
    lines += [
        f"- Workload: {r.workload.label()}, guidance {r.workload.guidance:g}, batch {r.workload.batch}",
        f"- Plan: {r.plan.label()}",
        f"- Target GPU: {r.target_gpu}"
        + (f" ({r.target_memory_gib:.2f} GiB usable)" if r.target_memory_gib is not None else "")
        + f"; {_cap_line(r)}",
        f"- Steps: {r.steps_run} of {r.steps_requested} run"
        + (f"; extrapolated figures are marked {EXTRAPOLATED_MARK}" if r.extrapolated else ""),
        f"- Tolerances: memory {tol.memory * 100:g} % (differences under {tol.memory_floor_gib:g} GiB pass), "
        f"time {tol.time * 100:g} % (differences under {tol.time_floor_s:g} s pass)",
        f"- Environment: {env.gpu_name}{_gpu_limits(env)}, driver {env.driver or '?'}, CUDA {env.cuda or '?'}, "
        f"torch {env.torch}, "
        f"diffusers {env.diffusers or '?'}, PYTORCH_CUDA_ALLOC_CONF='{env.allocator_conf}', wanfit {r.wanfit}",
        f"- Measured {r.measurement.created_at} (id {r.measurement.id}); report {r.created_at}",
        "",
        "## Stage breakdown (measured)",
        "",
        "| Stage | Time (s) | Peak device memory (GiB) | CPU % | Host memory (GiB) | SM activity (%) | Compute load (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in breakdown_rows(r):
        lines.append(f"| {b.label} | {_f(b.time_s)} | {_f(b.peak_gib)} | {_f(b.cpu_pct, '.0f')} | {_f(b.host_gib)} | "
                     f"{_f(b.sm_pct, '.0f')} | {_f(b.compute_load)} |")
    lines += [
        "",
        f"Compute load = duration x SM activity. Step_N_Loading {DERIVED_MARK} is derived: that step's time minus the "
        f"steady-state step time ({_f(r.steady_step_s, '.3f')} s, the median of the later steps), shown where it "
        f"exceeds {LOADING_SHOWN_SHARE * 100:g} % of a step; a split step's other columns cover the whole step.",
        "",
        "## Predicted vs measured",
        "",
    ]
    target_col = not r.same_gpu
    head = "| Stage | Predicted time (s) | Measured time (s) | Error | Within |"
    sep = "|---|---:|---:|---:|---|"
    if target_col:
        head += f" Predicted on {r.target_gpu} (s) |"
        sep += "---:|"
    head += " Predicted peak (GiB) | Measured peak (GiB) | Error | Within | Basis |"
    sep += "---:|---:|---:|---|---|"
    lines += [head, sep]
    for rw in r.rows:
        line = (f"| {_row_label(rw)} | {_f(rw.predicted_time_s)} | {_f(rw.measured_time_s)} | "
                f"{_pct(rw.time_error_pct)} | {_ok(rw.time_within)} |")
        if target_col:
            line += f" {_f(rw.target_time_s)} |"
        line += (f" {_f(rw.predicted_peak_gib)} | {_f(rw.measured_peak_gib)} | {_pct(rw.memory_error_pct)} | "
                 f"{_ok(rw.memory_within)} | {rw.memory_basis} |")
        lines.append(line)
    lines += ["", "Error = (predicted - measured) / measured: positive means the prediction was higher."]
    row_notes = [f"- {_row_label(rw)}: {rw.note}" for rw in r.rows if rw.note]
    if row_notes:
        lines += ["", *row_notes]
    p = r.prediction
    lines += [
        "",
        "## Verdict",
        "",
        f"{r.verdict_line}.",
        "",
        f"Prediction for {r.target_gpu}: {'fits' if p.fits else 'does not fit'}, peak {p.peak_vram_gib:.2f} GiB, "
        f"need {p.need_gib:.2f} GiB, headroom {p.headroom_gib:.2f} GiB, binding stage {p.binding_stage}, "
        f"{p.duration_s:.1f} s" + (f" (transferred from {p.transferred_from})" if p.transferred_from else "")
        + (" (extrapolated beyond the calibrated range)" if p.extrapolated else "") + ".",
        f"Measured: status {r.measurement.status}"
        + (f" at {r.measurement.failed_stage}" if r.measurement.failed_stage else "")
        + f", peak device memory {_f(r.measurement.peak_device_used_gib)} GiB.",
    ]
    outside = [rw for rw in r.rows if rw.time_within is False or rw.memory_within is False]
    for rw in outside:
        what = []
        if rw.time_within is False:
            what.append(f"time {_pct(rw.time_error_pct)}")
        if rw.memory_within is False:
            what.append(f"memory {_pct(rw.memory_error_pct)}")
        lines.append(f"- Outside tolerance: {_row_label(rw)} ({', '.join(what)})")
    lines += ["", "## Bottleneck notes", ""]
    lines += [f"- {n}" for n in r.notes] or ["- none: no stage stood out"]
    lines += ["", "## What this run is (and is not)", ""]
    lines += [f"- {s}" for s in honesty_statements(r)]
    return "\n".join(lines) + "\n"


# ---- rich ----------------------------------------------------------------------------------


def render_rich(report: VerifyReport, console) -> None:
    """Print the report as rich tables on `console` (a rich.console.Console)."""
    from rich.table import Table

    r = report
    style = "green" if r.exit_code == 0 else "red"
    console.print(f"[bold]{_title(r)}[/bold]")
    console.print(f"Plan: {r.plan.label()}")
    console.print(f"Target: {r.target_gpu}; {_cap_line(r)}")
    console.print(f"Steps: {r.steps_run} of {r.steps_requested} run"
                  + (f" (extrapolated figures marked {EXTRAPOLATED_MARK})" if r.extrapolated else ""))

    bd = Table(title="Stage breakdown (measured)")
    for col in ("Stage", "Time (s)", "Peak device GiB", "CPU %", "Host GiB", "SM %", "Compute load (s)"):
        bd.add_column(col, justify="left" if col == "Stage" else "right")
    for b in breakdown_rows(r, collapse=True):
        bd.add_row(b.label, _f(b.time_s), _f(b.peak_gib), _f(b.cpu_pct, ".0f"), _f(b.host_gib), _f(b.sm_pct, ".0f"),
                   _f(b.compute_load))
    console.print(bd)

    cmp_table = Table(title="Predicted vs measured (error = (predicted - measured) / measured)")
    cols = ["Stage", "Pred. time (s)", "Meas. time (s)", "Error", "Within"]
    if not r.same_gpu:
        cols.append(f"On {r.target_gpu} (s)")
    cols += ["Pred. peak GiB", "Meas. peak GiB", "Error", "Within", "Basis"]
    for col in cols:
        cmp_table.add_column(col, justify="left" if col in ("Stage", "Within", "Basis") else "right")
    for rw in r.rows:
        cells = [_row_label(rw), _f(rw.predicted_time_s), _f(rw.measured_time_s), _pct(rw.time_error_pct),
                 _ok(rw.time_within)]
        if not r.same_gpu:
            cells.append(_f(rw.target_time_s))
        cells += [_f(rw.predicted_peak_gib), _f(rw.measured_peak_gib), _pct(rw.memory_error_pct),
                  _ok(rw.memory_within), rw.memory_basis]
        cmp_table.add_row(*cells)
    console.print(cmp_table)
    console.print(f"[bold {style}]{r.verdict_line}[/bold {style}]")
    for n in r.notes:
        console.print(f"  • {n}")
    for s in honesty_statements(r):
        console.print(f"  [dim]{s}[/dim]")


# ---- PNG -----------------------------------------------------------------------------------


def _stage_spans(m: Measurement) -> dict[str, tuple[float, float]]:
    """(start, end) in run seconds of each comparison stage, from the measured records."""
    spans = {}
    for name in ("init", "text_encode", "prepare", "vae_decode"):
        rec = m.stage(name)
        if rec is not None:
            spans[name] = (rec.start_s, rec.start_s + rec.time_s)
    steps = m.steps()
    if steps:
        spans["denoise"] = (steps[0].start_s, steps[-1].start_s + steps[-1].time_s)
    switch = switch_step(steps)
    if switch is not None:
        spans["expert_switch"] = (switch.start_s, switch.start_s + switch.time_s)
    return spans


def plot_memory(report: VerifyReport, path: Path) -> Path:
    """PNG of device memory over time (the measured NVML timeline), the predicted peak of each stage
    drawn over the span where that stage ran, and the target's usable memory as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = report
    m = r.measurement
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    try:
        if m.timeline:
            ax.plot([p.t_s for p in m.timeline], [p.used_gib for p in m.timeline], color="tab:blue", lw=1.2,
                    label="measured device memory (NVML used)")
        else:  # no poller samples (no NVML): draw each stage's measured peak instead
            for rec in m.stages:
                if rec.name != "total" and rec.device_used_peak_gib is not None:
                    ax.hlines(rec.device_used_peak_gib, rec.start_s, rec.start_s + rec.time_s, color="tab:blue")
            ax.plot([], [], color="tab:blue", label="measured stage peaks (no NVML timeline)")
        spans = _stage_spans(m)
        predicted = {s.name: s for s in r.prediction.stages}
        labelled: set[str] = set()

        def once(label: str) -> str | None:
            if label in labelled:
                return None
            labelled.add(label)
            return label

        for name, (start, end) in spans.items():
            ax.axvspan(start, end, alpha=0.06, color="grey")
            ax.text((start + end) / 2, 0.01, STAGE_LABELS.get(name, name).split(" ")[0], rotation=90, fontsize=7,
                    ha="center", va="bottom", transform=ax.get_xaxis_transform())
            if name in predicted:
                sp = predicted[name]
                ax.hlines(sp.peak_vram_gib, start, end, colors="tab:orange", linestyles="--", lw=2,
                          label=once("predicted stage peak (uncapped)"))
                if r.cap is not None and sp.need_gib is not None:
                    ax.hlines(sp.need_gib, start, end, colors="tab:green", linestyles=":", lw=2,
                              label=once("predicted stage need (decides the fit)"))
        end_s = max((rec.start_s + rec.time_s for rec in m.stages if rec.name != "total"), default=0.0)
        for name, sp in predicted.items():
            if name not in spans and m.status != "ok":  # the stage the run never reached
                ax.plot([end_s], [sp.peak_vram_gib], marker="x", ms=9, color="tab:orange", ls="none",
                        label=once("predicted peak of a stage not reached"))
        if r.target_memory_gib is not None:
            ax.axhline(r.target_memory_gib, color="tab:red", lw=1.2,
                       label=f"{r.target_gpu} usable memory ({r.target_memory_gib:.2f} GiB)")
        if r.cap is not None:
            ax.axhline(r.cap.torch_budget_gib, color="tab:red", lw=0.8, ls=":",
                       label=f"torch allocator cap ({r.cap.torch_budget_gib:.1f} GiB)")
        if m.status != "ok":
            ax.axvline(end_s, color="black", lw=1, ls="-.", label=f"{m.status.upper()} at {m.failed_stage}")
        ax.set_xlabel("time since the run started (s)")
        ax.set_ylabel("device memory (GiB)")
        steps_note = f", {r.steps_run} of {r.steps_requested} steps run" if r.extrapolated else ""
        ax.set_title(f"{r.workload.label()} | {r.plan.label()}\n{r.environment.gpu_name}"
                     f"{' capped to ' + r.target_gpu if r.cap else ''}{steps_note} | {r.verdict}", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


__all__ = [
    "VerifyReport",
    "build_report",
    "load_report",
    "plot_memory",
    "render_markdown",
    "render_rich",
    "report_stem",
    "write_json",
]
