"""The verify report's views: Markdown, rich tables on a console, and a PNG of device memory over time.

What they say is wanfit.verify.report's (rows, labels, statements); these lay it out. matplotlib is
imported inside `plot_memory` only, rich inside `render_rich`. `report_stem` and `write_json` are here
too, so this module alone writes every file of a report.
"""

from __future__ import annotations

from pathlib import Path

from wanfit.verify.measured import SINGLE_RECORD_STAGES, RankFigures, rank_figures
from wanfit.verify.report import (
    DERIVED_MARK,
    EXTRAPOLATED_MARK,
    LOADING_SHOWN_SHARE,
    STAGE_LABELS,
    VerifyReport,
    breakdown_rows,
    cap_line,
    fmt,
    honesty_statements,
    report_stem,
    row_label,
    title,
    write_json,
)
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.measurement import Measurement, switch_step


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f} %"


def _ok(flag: bool | None) -> str:
    return {True: "yes", False: "NO", None: "not scored"}[flag]


# ---- Markdown ------------------------------------------------------------------------------


def _gpu_limits(env: Environment) -> str:
    """' (power limit 700 W, SM clock up to 1980 MHz)' where NVML gave them (older reports: nothing)."""
    parts = []
    if env.gpu_power_limit_w is not None:
        parts.append(f"power limit {env.gpu_power_limit_w:g} W")
    if env.gpu_max_sm_clock_mhz is not None:
        parts.append(f"SM clock up to {env.gpu_max_sm_clock_mhz} MHz")
    return f" ({', '.join(parts)})" if parts else ""


def _md_header(r: VerifyReport) -> list[str]:
    env, tol = r.environment, r.tolerances
    return [
        f"# {title(r)}", "", f"**{r.verdict_line}** (exit code {r.exit_code})", "",
        f"- Workload: {r.workload.label()}, guidance {r.workload.guidance:g}, batch {r.workload.batch}",
        f"- Plan: {r.plan.label()}",
        f"- Target GPU: {r.target_gpu}"
        + (f" ({r.target_memory_gib:.2f} GiB usable)" if r.target_memory_gib is not None else "")
        + f"; {cap_line(r)}",
        f"- Steps: {r.steps_run} of {r.steps_requested} run"
        + (f"; extrapolated figures are marked {EXTRAPOLATED_MARK}" if r.extrapolated else ""),
        f"- Tolerances: memory {tol.memory * 100:g} % (differences under {tol.memory_floor_gib:g} GiB pass), "
        f"time {tol.time * 100:g} % (differences under {tol.time_floor_s:g} s pass)",
        f"- Environment: {env.gpu_name}{_gpu_limits(env)}, driver {env.driver or '?'}, CUDA {env.cuda or '?'}, "
        f"torch {env.torch}, "
        f"diffusers {env.diffusers or '?'}, PYTORCH_CUDA_ALLOC_CONF='{env.allocator_conf}', wanfit {r.wanfit}",
        f"- Measured {r.measurement.created_at} (id {r.measurement.id}); report {r.created_at}",
    ]


def _md_breakdown(r: VerifyReport) -> list[str]:
    lines = [
        "## Stage breakdown (measured)",
        "",
        "| Stage | Time (s) | Peak device memory (GiB) | CPU % | Host memory (GiB) | SM activity (%) | Compute load (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in breakdown_rows(r):
        lines.append(f"| {b.label} | {fmt(b.time_s)} | {fmt(b.peak_gib)} | {fmt(b.cpu_pct, '.0f')} | "
                     f"{fmt(b.host_gib)} | {fmt(b.sm_pct, '.0f')} | {fmt(b.compute_load)} |")
    return [*lines, "",
            f"Compute load = duration x SM activity. Step_N_Loading {DERIVED_MARK} is derived: that step's time minus "
            f"the steady-state step time ({fmt(r.steady_step_s, '.3f')} s, the median of the later steps), shown where "
            f"it exceeds {LOADING_SHOWN_SHARE * 100:g} % of a step; a split step's other columns cover the whole step."]


def _md_comparison(r: VerifyReport) -> list[str]:
    """Predicted vs measured per stage; a column for the target's transferred time when measured elsewhere."""
    target_col = not r.same_gpu
    head = "| Stage | Predicted time (s) | Measured time (s) | Error | Within |"
    sep = "|---|---:|---:|---:|---|"
    if target_col:
        head += f" Predicted on {r.target_gpu} (s) |"
        sep += "---:|"
    head += " Predicted peak (GiB) | Measured peak (GiB) | Error | Within | Basis |"
    sep += "---:|---:|---:|---|---|"
    lines = ["## Predicted vs measured", "", head, sep]
    for rw in r.rows:
        line = (f"| {row_label(rw)} | {fmt(rw.predicted_time_s)} | {fmt(rw.measured_time_s)} | "
                f"{_pct(rw.time_error_pct)} | {_ok(rw.time_within)} |")
        if target_col:
            line += f" {fmt(rw.target_time_s)} |"
        line += (f" {fmt(rw.predicted_peak_gib)} | {fmt(rw.measured_peak_gib)} | {_pct(rw.memory_error_pct)} | "
                 f"{_ok(rw.memory_within)} | {rw.memory_basis} |")
        lines.append(line)
    lines += ["", "Error = (predicted - measured) / measured: positive means the prediction was higher."]
    row_notes = [f"- {row_label(rw)}: {rw.note}" for rw in r.rows if rw.note]
    return [*lines, "", *row_notes] if row_notes else lines


def _md_verdict(r: VerifyReport) -> list[str]:
    p = r.prediction
    lines = [
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
        + f", peak device memory {fmt(r.measurement.peak_device_used_gib)} GiB.",
    ]
    for rw in r.rows:
        what = []
        if rw.time_within is False:
            what.append(f"time {_pct(rw.time_error_pct)}")
        if rw.memory_within is False:
            what.append(f"memory {_pct(rw.memory_error_pct)}")
        if what:
            lines.append(f"- Outside tolerance: {row_label(rw)} ({', '.join(what)})")
    return lines


# ---- several GPUs: each rank ------------------------------------------------------------------

RANK_COLUMNS = ("Rank", "Status", "Peak device GiB", "Peak allocated GiB", "Peak reserved GiB", "Need GiB",
                "All-to-all s", "All-gather s", "Other collectives s", "Collectives in a steady step s")


def _rank_cells(f: RankFigures) -> list[str]:
    other = sum(t for kind, t in f.collective_s.items() if kind not in ("all_to_all", "all_gather"))
    share = (f" ({f.steady_step_collective_s / f.steady_step_s * 100:.0f} %)"
             if f.steady_step_collective_s is not None and f.steady_step_s else "")
    return [str(f.rank), f.status, fmt(f.device_peak_gib), fmt(f.allocated_peak_gib), fmt(f.reserved_peak_gib),
            fmt(f.need_gib), fmt(f.collective_s.get("all_to_all"), ".3f"), fmt(f.collective_s.get("all_gather"), ".3f"),
            fmt(other, ".3f"), fmt(f.steady_step_collective_s, ".3f") + share]


RANKS_FOOTNOTE = ("All-to-all: Ulysses' q, k, v and output; all-gather: FSDP's weight gathers; other: the output's "
                  "sequence gather, ring attention's K/V, broadcasts and barriers (a rank that waits for rank 0's "
                  "decode waits in a barrier). Times over the whole run; the last column is the median steady step's.")


def _md_ranks(r: VerifyReport) -> list[str]:
    figures = rank_figures(r.measurement)
    if not figures:
        return []
    lines = ["## Per rank (measured)", "", "| " + " | ".join(RANK_COLUMNS) + " |",
             "|---|---|" + "---:|" * (len(RANK_COLUMNS) - 2)]
    lines += ["| " + " | ".join(_rank_cells(f)) + " |" for f in figures]
    return [*lines, "", RANKS_FOOTNOTE, ""]


def render_markdown(report: VerifyReport) -> str:
    r = report
    lines = [*_md_header(r), "", *_md_breakdown(r), "", *_md_ranks(r), *_md_comparison(r), "", *_md_verdict(r)]
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
    console.print(f"[bold]{title(r)}[/bold]")
    console.print(f"Plan: {r.plan.label()}")
    console.print(f"Target: {r.target_gpu}; {cap_line(r)}")
    console.print(f"Steps: {r.steps_run} of {r.steps_requested} run"
                  + (f" (extrapolated figures marked {EXTRAPOLATED_MARK})" if r.extrapolated else ""))

    bd = Table(title="Stage breakdown (measured)")
    for col in ("Stage", "Time (s)", "Peak device GiB", "CPU %", "Host GiB", "SM %", "Compute load (s)"):
        bd.add_column(col, justify="left" if col == "Stage" else "right")
    for b in breakdown_rows(r, collapse=True):
        bd.add_row(b.label, fmt(b.time_s), fmt(b.peak_gib), fmt(b.cpu_pct, ".0f"), fmt(b.host_gib), fmt(b.sm_pct, ".0f"),
                   fmt(b.compute_load))
    console.print(bd)
    if figures := rank_figures(r.measurement):
        ranks = Table(title="Per rank (measured)")
        for col in RANK_COLUMNS:
            ranks.add_column(col, justify="left" if col in ("Rank", "Status") else "right")
        for f in figures:
            ranks.add_row(*_rank_cells(f))
        console.print(ranks)
        console.print(f"[dim]{RANKS_FOOTNOTE}[/dim]")

    cmp_table = Table(title="Predicted vs measured (error = (predicted - measured) / measured)")
    cols = ["Stage", "Pred. time (s)", "Meas. time (s)", "Error", "Within"]
    if not r.same_gpu:
        cols.append(f"On {r.target_gpu} (s)")
    cols += ["Pred. peak GiB", "Meas. peak GiB", "Error", "Within", "Basis"]
    for col in cols:
        cmp_table.add_column(col, justify="left" if col in ("Stage", "Within", "Basis") else "right")
    for rw in r.rows:
        cells = [row_label(rw), fmt(rw.predicted_time_s), fmt(rw.measured_time_s), _pct(rw.time_error_pct),
                 _ok(rw.time_within)]
        if not r.same_gpu:
            cells.append(fmt(rw.target_time_s))
        cells += [fmt(rw.predicted_peak_gib), fmt(rw.measured_peak_gib), _pct(rw.memory_error_pct),
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
    for name in SINGLE_RECORD_STAGES:
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


class _Legend:
    """Each legend label once, however many artists draw that kind of line."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def once(self, label: str) -> str | None:
        if label in self.seen:
            return None
        self.seen.add(label)
        return label


def _plot_measured(ax, m: Measurement) -> None:
    """The NVML timeline; without one (no NVML), each stage's measured peak over its span."""
    if m.timeline:
        ax.plot([p.t_s for p in m.timeline], [p.used_gib for p in m.timeline], color="tab:blue", lw=1.2,
                label="measured device memory (NVML used)")
        return
    for rec in m.stages:
        if rec.name != "total" and rec.device_used_peak_gib is not None:
            ax.hlines(rec.device_used_peak_gib, rec.start_s, rec.start_s + rec.time_s, color="tab:blue")
    ax.plot([], [], color="tab:blue", label="measured stage peaks (no NVML timeline)")


def _plot_predicted(ax, r: VerifyReport, legend: _Legend) -> float:
    """Each stage's span, named, with its predicted peak (and, capped, its need) over it; a stage the run
    never reached as a cross at the run's end. Returns that end (run seconds)."""
    m = r.measurement
    spans = _stage_spans(m)
    predicted = {s.name: s for s in r.prediction.stages}
    for name, (start, end) in spans.items():
        ax.axvspan(start, end, alpha=0.06, color="grey")
        ax.text((start + end) / 2, 0.01, STAGE_LABELS.get(name, name).split(" ")[0], rotation=90, fontsize=7,
                ha="center", va="bottom", transform=ax.get_xaxis_transform())
        if name in predicted:
            sp = predicted[name]
            ax.hlines(sp.peak_vram_gib, start, end, colors="tab:orange", linestyles="--", lw=2,
                      label=legend.once("predicted stage peak (uncapped)"))
            if r.cap is not None and sp.need_gib is not None:
                ax.hlines(sp.need_gib, start, end, colors="tab:green", linestyles=":", lw=2,
                          label=legend.once("predicted stage need (decides the fit)"))
    end_s = max((rec.start_s + rec.time_s for rec in m.stages if rec.name != "total"), default=0.0)
    for name, sp in predicted.items():
        if name not in spans and m.status != "ok":
            ax.plot([end_s], [sp.peak_vram_gib], marker="x", ms=9, color="tab:orange", ls="none",
                    label=legend.once("predicted peak of a stage not reached"))
    return end_s


def _plot_limits(ax, r: VerifyReport, end_s: float) -> None:
    """The target's usable memory, the allocator cap, and where a failed run stopped."""
    if r.target_memory_gib is not None:
        ax.axhline(r.target_memory_gib, color="tab:red", lw=1.2,
                   label=f"{r.target_gpu} usable memory ({r.target_memory_gib:.2f} GiB)")
    if r.cap is not None:
        ax.axhline(r.cap.torch_budget_gib, color="tab:red", lw=0.8, ls=":",
                   label=f"torch allocator cap ({r.cap.torch_budget_gib:.1f} GiB)")
    m = r.measurement
    if m.status != "ok":
        ax.axvline(end_s, color="black", lw=1, ls="-.", label=f"{m.status.upper()} at {m.failed_stage}")


def plot_memory(report: VerifyReport, path: Path) -> Path:
    """PNG of device memory over time (the measured NVML timeline), the predicted peak of each stage
    drawn over the span where that stage ran, and the target's usable memory as a line."""
    from wanfit.views.output import pyplot

    plt = pyplot()
    r = report
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    try:
        _plot_measured(ax, r.measurement)
        _plot_limits(ax, r, _plot_predicted(ax, r, _Legend()))
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


__all__ = ["plot_memory", "render_markdown", "render_rich", "report_stem", "write_json"]
