"""The tables of `wanfit plan`, drawn with rich: a GPU's candidate plans and the GPU comparison.

Each table comes in layouts from the richest to the leanest; the richest whose natural width fits the console
is drawn, so a narrow terminal loses the less important columns (per-stage times first, the knobs' own columns
last) while the plan column is never cut: rows that cannot be told apart are worse than fewer columns.
Every time column has one format, chosen by its largest value and named in its header.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from wanfit.vocabulary.plan_report import Candidate, GpuResult, PlanReport
from wanfit.vocabulary.stages import STAGE_SHORT_TITLES, STAGES

UNBOUNDED = 10_000  # columns: wider than any table


@dataclass(frozen=True)
class Column:
    header: str
    cells: Sequence[Text]
    justify: str = "right"
    keep_whole: bool = False  # never wrapped nor cut (the plan: it tells the rows apart)


def fmt_gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _m_ss(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}:{seconds:02d}"


def _h_mm_ss(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


# A time column's format by its largest value: hundredths of a second below 10 s, tenths below 2 min (a
# column of seconds stays comparable by eye), then m:ss below an hour, then h:mm:ss.
TIME_FORMATS: tuple[tuple[float, str, Callable[[float], str]], ...] = (
    (10.0, "s", lambda v: f"{v:.2f}"),
    (120.0, "s", lambda v: f"{v:.1f}"),
    (3600.0, "m:ss", _m_ss),
    (float("inf"), "h:mm:ss", _h_mm_ss),
)


def time_format(values: Sequence[float]) -> tuple[str, Callable[[float], str]]:
    """The unit and formatter of a time column holding `values`."""
    top = max(values, default=0.0)
    return next((unit, fmt) for below, unit, fmt in TIME_FORMATS if top < below)


def time_column(title: str, values: Sequence[float | None], marks: Sequence[str] | None = None) -> Column:
    unit, fmt = time_format([v for v in values if v is not None])
    marks = marks or [""] * len(values)
    return Column(f"{title}\n{unit}", [Text("-" if v is None else fmt(v) + mark) for v, mark in zip(values, marks,
                                                                                                   strict=True)])


def compact_plan(plan: dict) -> str:
    """'model/int8/fp8/tiled': the knobs in one short cell, a pinned attention kernel, then a several-GPU
    layout ('/u4/fsdp') last."""
    knobs = f"{plan.get('offload')}/{plan.get('text_encoder')}/{plan.get('dit_dtype')}"
    knobs += "/tiled" if plan.get("vae_tiling") else ""
    knobs += f"/{plan['attention']}" if plan.get("attention", "auto") != "auto" else ""
    return knobs + ("/" + layout_cell(plan) if plan.get("gpus", 1) > 1 else "")


def layout_cell(plan: dict) -> str:
    """A several-GPU layout in a few characters: 'u4', 'u2r2 fsdp', 'u8 fsdp t5'."""
    degrees = "".join(f"{k[0]}{plan[k]}" for k in ("ulysses", "ring") if plan.get(k, 1) > 1) or "no-sp"
    return " ".join([degrees] + [w for k, w in (("dit_fsdp", "fsdp"), ("t5_fsdp", "t5")) if plan.get(k)])


def held_at_limit(cand: Candidate, memory_gib: float) -> bool:
    """The device-level peak is shown at the card's usable memory: the allocator would grow its cache past it
    but gives cached memory back under pressure (the plan's need fits)."""
    return cand.headroom_gib >= 0 and cand.peak_vram_gib >= round(memory_gib, 3)


def _fits_cell(cand: Candidate) -> Text:
    if cand.fits:
        return Text("yes", style="green")
    return Text("no (RAM)" if cand.headroom_gib >= 0 and not cand.host_ram_fits else "no", style="red")


def _stage_names(candidates: Sequence[Candidate]) -> list[str]:
    """Every stage any candidate has, in pipeline order."""
    seen = {s.name for c in candidates for s in c.stages}
    return [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))


def _candidate_columns(result: GpuResult, cands: Sequence[Candidate]) -> dict[str, list[Column]]:
    """The candidate table's columns by role: knobs, plan (the knobs in one cell), memory, stages, times."""
    rec = result.recommended.plan if result.recommended else None
    marks = ["★" if c.plan == rec else "" for c in cands]

    def text_column(header: str, values: Sequence[str], justify: str = "left") -> Column:
        return Column(header, [Text(v) for v in values], justify)

    knobs = [Column("", [Text(m) for m in marks], "left"),
             text_column("offload", [str(c.plan.get("offload")) for c in cands]),
             text_column("text enc", [str(c.plan.get("text_encoder")) for c in cands]),
             text_column("DiT", [str(c.plan.get("dit_dtype")) for c in cands]),
             text_column("VAE tiling", ["on" if c.plan.get("vae_tiling") else "off" for c in cands])]
    if any(c.plan.get("attention", "auto") != "auto" for c in cands):
        knobs.append(text_column("attention", [str(c.plan.get("attention")) for c in cands]))
    if result.gpu_count > 1:
        knobs.append(text_column("layout", [layout_cell(c.plan) for c in cands]))
    plan = Column("plan (offload/te/DiT)", [Text(f"{m or ' '} {compact_plan(c.plan)}") for m, c in zip(
        marks, cands, strict=True)], "left", keep_whole=True)
    peaks = [fmt_gib(c.peak_vram_gib) + (" (limit)" if held_at_limit(c, result.memory_gib) else "") for c in cands]
    stages = _stage_names(cands)
    by_stage = [{s.name: s.time_s for s in c.stages} for c in cands]
    return {
        "knobs": knobs, "plan": [plan],
        "peak": [text_column("peak\nGiB", peaks, "right")],
        "need": [text_column("need\nGiB", [fmt_gib(c.need_gib) for c in cands], "right")],
        "headroom": [text_column("headroom\nGiB", [fmt_gib(c.headroom_gib) for c in cands], "right")],
        "host": [text_column("host RAM\nGiB", [fmt_gib(c.host_ram_gib) for c in cands], "right")],
        "binding": [text_column("binding", [STAGE_SHORT_TITLES.get(c.binding_stage, c.binding_stage)
                                            for c in cands])],
        "stages": [time_column(STAGE_SHORT_TITLES.get(n, n), [b.get(n) for b in by_stage]) for n in stages],
        "step": [time_column("step", [c.step_s for c in cands])],
        "total": [time_column("total", [c.duration_s for c in cands], ["*" if c.extrapolated else "" for c in cands])],
        "fits": [Column("fits", [_fits_cell(c) for c in cands], "left")],
    }


# The candidate table's layouts, richest first: what a narrower console gives up, in order.
CANDIDATE_LAYOUTS = (
    ("knobs", "peak", "need", "headroom", "host", "binding", "stages", "step", "total", "fits"),
    ("knobs", "peak", "need", "headroom", "host", "binding", "step", "total", "fits"),
    ("knobs", "peak", "need", "host", "total", "fits"),
    ("plan", "peak", "need", "host", "total", "fits"),
    ("plan", "peak", "total", "fits"),
)


def _table(title: str, columns: Sequence[Column], row_styles: Sequence[str | None]) -> Table:
    table = Table(title=Text(title, style="italic"), title_justify="left")
    for col in columns:
        table.add_column(Text(col.header), justify=col.justify, no_wrap=col.keep_whole,
                         min_width=max((len(c) for c in col.cells), default=0) if col.keep_whole else None)
    for i, style in enumerate(row_styles):
        table.add_row(*[col.cells[i] for col in columns], style=style)
    return table


def fitted_table(console: Console, title: str, layouts: Sequence[Sequence[Column]],
                 row_styles: Sequence[str | None]) -> Table:
    """The first layout whose natural width fits the console, else the leanest (rich wraps its cells)."""
    for columns in layouts:
        table = _table(title, columns, row_styles)
        # Measured with room to spare: measured within the console, a table reports at most its width.
        if Measurement.get(console, console.options.update_width(UNBOUNDED), table).maximum <= console.width:
            return table
    return table


def candidates_table(console: Console, result: GpuResult, cands: Sequence[Candidate]) -> Table:
    """The candidate plans `cands` of one GPU: memory, host RAM, per-stage and total time, fits."""
    by_role = _candidate_columns(result, cands)
    layouts = [[col for role in layout for col in by_role[role]] for layout in CANDIDATE_LAYOUTS]
    rec = result.recommended.plan if result.recommended else None
    styles = ["bold green" if c.plan == rec else ("dim" if not c.fits else None) for c in cands]
    per = " per GPU" if result.gpu_count > 1 else ""
    return fitted_table(console, f"{gpu_title(result)}: {result.memory_gib:.1f} GiB usable{per}", layouts, styles)


def gpu_title(result: GpuResult) -> str:
    """'l40s', or '4 x l40s' for a several-GPU result."""
    return f"{result.gpu_count} x {result.gpu}" if result.gpu_count > 1 else result.gpu


def hardware_table(console: Console, report: PlanReport) -> Table:
    """Each GPU kind x count with its best plan (the cell that may wrap): per-GPU need, time, GPU-hours, speed-up,
    both ranks. Each option's one-line summary is in the JSON (`hardware[].summary`)."""
    options = report.hardware
    plans = {(r.gpu, r.gpu_count): r.recommended for r in report.results}

    def column(header: str, values: Sequence[str], justify: str = "right") -> Column:
        return Column(header, [Text(v) for v in values], justify)

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    hardware = Column("GPUs", [Text(f"{o.gpu_count} x {o.gpu}" if o.gpu_count > 1 else o.gpu) for o in options],
                      "left", keep_whole=True)
    best = column("best plan", [compact_plan(plans[o.gpu, o.gpu_count].plan) if o.fits else "none fits"
                                for o in options], "left")
    need = column("need GiB\nper GPU", [fmt_gib(o.need_gib) for o in options])
    hours = column("GPU-\nhours", [number(o.gpu_hours, ".3f") for o in options])
    speedup = column("speed-\nup", [number(o.speedup, ".2f") for o in options])
    ranks = column("rank\ntime", [number(o.rank_by_time, "d") for o in options])
    cost = column("rank\nGPU-h", [number(o.rank_by_gpu_hours, "d") for o in options])
    total = time_column("total", [o.duration_s for o in options])
    styles = ["bold" if o.rank_by_time == 1 else None for o in options]
    return fitted_table(console, "Hardware options (need per GPU; speed-up against one GPU of the kind)",
                        [[hardware, best, need, total, hours, speedup, ranks, cost],
                         [hardware, need, total, hours, ranks, cost], [hardware, need, total]], styles)


def comparison_table(console: Console, report: PlanReport) -> Table:
    """Side by side: the best plan per GPU, its time and peak (hardware choice), fastest first."""
    ranked = sorted(report.results,
                    key=lambda r: (r.recommended is None, r.recommended.duration_s if r.recommended else 0.0))
    best = [r.recommended for r in ranked]

    def column(header: str, values: Sequence[str], justify: str = "right") -> Column:
        return Column(header, [Text(v) for v in values], justify)

    plans = Column("best plan", [Text(compact_plan(c.plan)) if c else Text("none fits", style="red") for c in best],
                   "left", keep_whole=True)
    gpu = column("GPU", [gpu_title(r) for r in ranked], "left")
    peak = column("peak\nGiB", [fmt_gib(c.peak_vram_gib) if c else "-" for c in best])
    total = time_column("total", [c.duration_s if c else None for c in best])
    fitting = column("fitting\nplans", [f"{sum(c.fits for c in r.candidates)}/{len(r.candidates)}" for r in ranked])
    wide = [gpu, column("usable\nGiB", [fmt_gib(r.memory_gib) for r in ranked]), plans, peak,
            column("headroom\nGiB", [fmt_gib(c.headroom_gib) if c else "-" for c in best]),
            column("host RAM\nGiB", [fmt_gib(c.host_ram_gib) if c else "-" for c in best]),
            time_column("step", [c.step_s if c else None for c in best]), total, fitting,
            column("time", [("from " + c.transferred_from if c.transferred_from else "measured here") if c else "-"
                            for c in best], "left")]
    styles = ["bold" if i == 0 and c is not None else None for i, c in enumerate(best)]
    return fitted_table(console, "GPU comparison (best plan per GPU)", [wide, [gpu, plans, peak, total, fitting]],
                        styles)
