"""The `wanfit plan` table output: the plan report as lines of text for a terminal.

Pure presentation over the pydantic objects the API returns, without rich (see wanfit.views.terminal:
this runs on plan's path, which must start fast and work without torch). Memory is printed in GiB
(2**30 bytes), times in seconds (or minutes past two minutes).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wanfit.views.terminal import Segment, Terminal, combine
from wanfit.vocabulary.plan_report import Candidate, GpuResult, PlanReport
from wanfit.vocabulary.stages import STAGE_SHORT_TITLES, STAGES


def fmt_gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# Times: hundredths of a second below TENTHS_FROM_S, tenths below MINUTES_FROM_S, then minutes and
# seconds, then hours and minutes.
TENTHS_FROM_S = 10
MINUTES_FROM_S = 120


def fmt_seconds(value: float | None) -> str:
    """Seconds for short times, minutes and seconds for long ones (a 361-frame job runs for an hour)."""
    if value is None:
        return "-"
    if value < TENTHS_FROM_S:
        return f"{value:.2f} s"
    if value < MINUTES_FROM_S:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def plan_label(plan: Mapping[str, Any]) -> str:
    """The knobs in one short line, e.g. 'offload=model te=cpu dit=bf16 vae=tiled'; an official-code plan in
    its own flags, e.g. 'generate.py --offload_model True --t5_cpu'."""
    attention = "" if plan.get("attention", "auto") == "auto" else f" attention={plan['attention']}"
    if plan.get("runtime") == "wan":
        flags = f"--offload_model {plan.get('offload') == 'model'}"
        flags += " --t5_cpu" if plan.get("text_encoder") == "cpu" else ""
        flags += " --convert_model_dtype" if plan.get("dit_dtype") == "bf16" else ""
        return f"generate.py {flags}{attention}"
    tiling = "tiled" if plan.get("vae_tiling") else "untiled"
    return (f"offload={plan.get('offload')} te={plan.get('text_encoder')} dit={plan.get('dit_dtype')} "
            f"vae={tiling}{attention}")


def compact_plan(plan: Mapping[str, Any]) -> str:
    """'model/int8/fp8/tiled': the knobs in the narrow table's order."""
    knobs = f"{plan.get('offload')}/{plan.get('text_encoder')}/{plan.get('dit_dtype')}"
    return knobs + ("/tiled" if plan.get("vae_tiling") else "")


def stage_names(candidates: Iterable[Candidate]) -> list[str]:
    """Every stage any candidate has, in pipeline order."""
    seen: list[str] = []
    for cand in candidates:
        for stage in cand.stages:
            if stage.name not in seen:
                seen.append(stage.name)
    known = [s for s in STAGES if s in seen]
    return known + [s for s in seen if s not in STAGES]


def _is_recommended(cand: Candidate, result: GpuResult) -> bool:
    return result.recommended is not None and cand.plan == result.recommended.plan


def _provenance(result: GpuResult) -> str:
    """Which calibration the predictions came from and whether they transfer or extrapolate."""
    calibration = result.calibration or "none"
    sources = {c.transferred_from for c in result.candidates if c.transferred_from}
    extrapolated = sum(c.extrapolated for c in result.candidates)
    parts = [f"calibration: {calibration}"]
    if sources:
        parts.append(f"time transferred from {', '.join(sorted(sources))} to {result.gpu} (wider interval)")
    else:
        parts.append("measured on this GPU")
    if extrapolated:
        parts.append(f"{extrapolated}/{len(result.candidates)} candidates outside the calibrated range (extrapolated)")
    return "; ".join(parts)


Cell = str | tuple[str, str]  # plain text, or (text, style) such as ("yes", "green")


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def _cell_style(cell: Cell) -> str | None:
    return None if isinstance(cell, str) else cell[1]


@dataclass
class BoxTable:
    """A table drawn with box characters, one pre-aligned line per row. When the terminal is narrower
    than the table it shows `narrow` (the same rows with fewer columns) where there is one."""

    title: str
    caption: str
    columns: Sequence[tuple[str, str]]  # (header, "left" | "right")
    rows: Sequence[tuple[Sequence[Cell], str | None]]  # (cells, the row's style)
    narrow: BoxTable | None = None

    def widths(self) -> list[int]:
        return [max([len(header)] + [len(_text(cells[i])) for cells, _ in self.rows])
                for i, (header, _) in enumerate(self.columns)]

    def lines(self, term: Terminal) -> list[str]:
        widths = self.widths()
        if _table_width(widths) > term.width and self.narrow is not None:
            return self.narrow.lines(term)
        widths = _shrunk(widths, term.width)

        def rule(left: str, fill: str, cross: str, right: str) -> str:
            return left + cross.join(fill * (w + 2) for w in widths) + right

        def line(cells: Sequence[Cell], style: str | None, edge: str) -> str:
            parts = [edge]
            for cell, width, (_, justify) in zip(cells, widths, self.columns, strict=True):
                text = _text(cell)
                if len(text) > width:  # a column shrunk to fit the terminal
                    text = text[:width - 1] + "…"
                pad = " " * (width - len(text))
                padded = f" {pad}{text} " if justify == "right" else f" {text}{pad} "
                parts += [term.paint(padded, combine(style, _cell_style(cell))), edge]
            return "".join(parts)

        out = [term.paint(self.title[:term.width], "italic"), rule("┏", "━", "┳", "┓"),
               line([(h, "bold") for h, _ in self.columns], None, "┃"), rule("┡", "━", "╇", "┩")]
        out += [line(cells, style, "│") for cells, style in self.rows]
        out.append(rule("└", "─", "┴", "┘"))
        if self.caption:
            out += term.wrap([(self.caption, "dim italic")])
        return out


def _table_width(widths: Sequence[int]) -> int:
    return sum(widths) + 3 * len(widths) + 1  # a space each side of every cell, a border between


def _shrunk(widths: Sequence[int], room: int, narrowest: int = 4) -> list[int]:
    """Column widths cut down to fit `room` terminal cells, the widest column first (its cells end in
    '…'); columns no wider than `narrowest` are left whole, so a very narrow terminal still overflows."""
    widths = list(widths)
    while _table_width(widths) > room:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= narrowest:
            break
        widths[widest] -= 1
    return widths


def candidates_table(result: GpuResult) -> BoxTable:
    """Every candidate plan for one GPU: peak VRAM, headroom, per-stage and total time, fits.
    On a narrow console the per-stage times are left out and the four knobs share one column."""
    stages = stage_names(result.candidates)
    memory = [("peak GiB", "right"), ("need GiB", "right"), ("headroom GiB", "right"), ("binding", "left")]
    times = [("step", "right"), ("total", "right"), ("fits", "left")]
    columns = [("", "left"), ("offload", "left"), ("text enc", "left"), ("DiT", "left"), ("VAE tiling", "left"),
               *memory, *[(STAGE_SHORT_TITLES.get(name, name), "right") for name in stages], *times]
    # Narrow: one plan column, no per-stage times, no binding stage (the recommendation line names it).
    narrow_columns = [("", "left"), ("offload/te/DiT[/tiled]", "left"), ("peak", "right"), ("need", "right"),
                      ("headroom", "right"), ("total", "right"), ("fits", "left")]
    rows, narrow_rows = [], []
    for cand in result.candidates:
        recommended = _is_recommended(cand, result)
        style = "bold green" if recommended else ("dim" if not cand.fits else None)
        by_stage = {s.name: s for s in cand.stages}
        knobs = [str(cand.plan.get("offload")), str(cand.plan.get("text_encoder")), str(cand.plan.get("dit_dtype")),
                 "on" if cand.plan.get("vae_tiling") else "off"]
        mark = "★" if recommended else ""
        memory_cells = [fmt_gib(cand.peak_vram_gib), fmt_gib(cand.need_gib), fmt_gib(cand.headroom_gib),
                        cand.binding_stage]
        time_cells = [fmt_seconds(cand.step_s), fmt_seconds(cand.duration_s) + ("*" if cand.extrapolated else ""),
                      ("yes", "green") if cand.fits else ("no", "red")]
        stage_cells = [fmt_seconds(by_stage[name].time_s) if name in by_stage else "-" for name in stages]
        rows.append(([mark, *knobs, *memory_cells, *stage_cells, *time_cells], style))
        narrow_rows.append(([mark, compact_plan(cand.plan), *memory_cells[:3], *time_cells[1:]], style))
    title = f"{result.gpu}: {result.memory_gib:.1f} GiB usable"
    narrow = BoxTable(title + " (peak, need, headroom in GiB)", _provenance(result), narrow_columns, narrow_rows)
    return BoxTable(title, _provenance(result), columns, rows, narrow=narrow)


def recommendation_line(result: GpuResult) -> list[Segment]:
    """'Recommended on l40s: offload=model ... — <reason>' or why nothing fits."""
    if result.recommended is None:
        return [("No plan fits ", "bold red"), (result.gpu, "bold"), (" — ", None), (result.reason, None)]
    cand = result.recommended
    line: list[Segment] = [("Recommended on ", "bold"), (result.gpu, "bold"), (": ", None),
                           (plan_label(cand.plan), "bold green"),
                           (f" ({fmt_seconds(cand.duration_s)}, peak {fmt_gib(cand.peak_vram_gib)} GiB) — ", None),
                           (result.reason, None)]
    if cand.duration_interval_s is not None:
        low, high = cand.duration_interval_s
        line.append((f" [time {fmt_seconds(low)}–{fmt_seconds(high)}]", "dim"))
    return line


def command_lines(result: GpuResult, term: Terminal) -> list[str]:
    """The recommended plan's command (dim) under the recommendation line, each of its lines wrapped to the
    terminal (a continuation indented); nothing when none is recommended or it has no command."""
    if result.recommended is None or not result.recommended.command:
        return []
    lines = [term.paint("Run it:", "dim")]
    for raw in result.recommended.command.splitlines():
        pieces = textwrap.wrap(raw, max(term.width, 20), subsequent_indent="    ", break_on_hyphens=False) or [""]
        lines += [term.paint(piece, "dim") for piece in pieces]
    return lines


def _notes(result: GpuResult) -> list[str]:
    seen: list[str] = []
    for cand in result.candidates:
        for note in cand.notes:
            if note not in seen:
                seen.append(note)
    return seen


def comparison_table(report: PlanReport) -> BoxTable:
    """Side by side: the best plan per GPU, its time and peak (hardware choice), fastest first."""
    columns = [("GPU", "left"), ("usable GiB", "right"), ("best: offload/te/DiT[/tiled]", "left"),
               ("peak GiB", "right"), ("headroom GiB", "right"), ("step", "right"), ("total", "right"),
               ("fitting plans", "right"), ("time", "left")]
    narrow_columns = [("GPU", "left"), ("best plan", "left"), ("peak", "right"), ("total", "right"),
                      ("fitting", "right")]
    ranked = sorted(report.results,
                    key=lambda r: (r.recommended is None, r.recommended.duration_s if r.recommended else 0.0))
    rows, narrow_rows = [], []
    for result in ranked:
        cand = result.recommended
        fitting = f"{sum(c.fits for c in result.candidates)}/{len(result.candidates)}"
        style = "bold" if result is ranked[0] and cand is not None else None
        if cand is None:
            none = ("none fits", "red")
            rows.append(([result.gpu, fmt_gib(result.memory_gib), none, "-", "-", "-", "-", fitting, "-"], None))
            narrow_rows.append(([result.gpu, none, "-", "-", fitting], None))
            continue
        source = f"from {cand.transferred_from}" if cand.transferred_from else "measured here"
        rows.append(([result.gpu, fmt_gib(result.memory_gib), compact_plan(cand.plan), fmt_gib(cand.peak_vram_gib),
                      fmt_gib(cand.headroom_gib), fmt_seconds(cand.step_s), fmt_seconds(cand.duration_s), fitting,
                      source], style))
        narrow_rows.append(([result.gpu, compact_plan(cand.plan), fmt_gib(cand.peak_vram_gib),
                             fmt_seconds(cand.duration_s), fitting], style))
    title = "GPU comparison (best plan per GPU)"
    return BoxTable(title, "", columns, rows, narrow=BoxTable(title + " (peak in GiB)", "", narrow_columns,
                                                              narrow_rows))


def render_plan_report(report: PlanReport, term: Terminal) -> str:
    """The whole `wanfit plan` table output, ending in a newline."""
    w = report.workload
    cfg = f"CFG {w.guidance:g}" if w.guidance > 1.0 else "no CFG"
    lines = term.wrap([("Workload: ", "bold"),
                       (f"{w.model} {w.width}x{w.height} (WxH), {w.frames} frames, {w.steps} steps, {cfg}, "
                        f"batch {w.batch}; safety margin {report.safety_margin_gib:g} GiB"
                        f"{'; a reused pipeline (no init)' if report.reused_pipeline else ''}. "
                        "Memory in GiB (2^30 bytes); peak = device-level (nvidia-smi), need = what decides OOM.",
                        None)])
    if any(c.plan.get("runtime") == "wan" for r in report.results for c in r.candidates):
        lines += term.wrap([("Runtime: ", "bold"), ("the official Wan2.2 code (generate.py): offload model = "
                                                     "--offload_model True, te cpu = --t5_cpu, DiT bf16 = "
                                                     "--convert_model_dtype (fp32 without it)", None)])
    for result in report.results:
        lines.append("")
        lines += candidates_table(result).lines(term)
        if any(c.extrapolated for c in result.candidates):
            lines += term.wrap([("* extrapolated: outside the calibrated range", "dim")])
        for note in _notes(result):
            lines += term.wrap([(f"note: {note}", "dim")])
        lines += term.wrap(recommendation_line(result))
        lines += command_lines(result, term)
    if len(report.results) > 1:
        lines.append("")
        lines += comparison_table(report).lines(term)
    return "\n".join(lines) + "\n"


