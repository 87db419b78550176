"""Rich rendering of what the CLI prints: plan reports, the GPU profile list and the model catalog.

Pure presentation: takes the pydantic objects the API returns and builds rich renderables. No heavy
imports (this runs on the `wanfit plan` path, which must start fast and work without torch).
Memory is printed in GiB (2**30 bytes), times in seconds (or minutes past two minutes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.text import Span, Text

from wanfit.prediction import Candidate, GpuResult, PlanReport

if TYPE_CHECKING:  # rich.table is imported where a Table is built: the plan table does not need it
    from rich.table import Table

# Stage names the planner emits, in pipeline order; unknown names are appended as they come.
STAGE_ORDER = ("init", "text_encode", "prepare", "denoise", "expert_switch", "vae_decode")
STAGE_TITLES = {"init": "init", "text_encode": "text enc", "prepare": "prepare", "denoise": "denoise",
                "expert_switch": "expert sw", "vae_decode": "VAE decode"}


def fmt_gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_seconds(value: float | None) -> str:
    """Seconds for short times, minutes and seconds for long ones (a 361-frame job runs for an hour)."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def plan_label(plan: Mapping[str, Any]) -> str:
    """The four knobs in one short line, e.g. 'offload=model te=cpu dit=bf16 vae=tiled'."""
    tiling = "tiled" if plan.get("vae_tiling") else "untiled"
    return f"offload={plan.get('offload')} te={plan.get('text_encoder')} dit={plan.get('dit_dtype')} vae={tiling}"


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
    known = [s for s in STAGE_ORDER if s in seen]
    return known + [s for s in seen if s not in STAGE_ORDER]


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


class FastTable:
    """A rich renderable for tables with many rows (72 candidates per GPU): each row is drawn as one
    pre-aligned Text line, about 15x faster than rich.table.Table, which measures and wraps every
    cell and would make `wanfit plan` take a quarter second longer. When the console is narrower
    than the table it shows `narrow` (the same rows with fewer columns) or, lacking one, a rich Table,
    which shrinks and wraps columns to fit."""

    def __init__(self, title: str, caption: str, columns: Sequence[tuple[str, str]],
                 rows: Sequence[tuple[Sequence[str | Text], str | None]], narrow: FastTable | None = None):
        self.title = title
        self.caption = caption
        self.columns = list(columns)  # (header, "left" | "right")
        self.rows = [(list(cells), style) for cells, style in rows]  # plain str cells stay str (fast path)
        self.narrow = narrow

    def widths(self) -> list[int]:
        return [max([cell_len(header)] + [_cell_len(r[0][i]) for r in self.rows])
                for i, (header, _) in enumerate(self.columns)]

    def as_rich_table(self) -> Table:
        from rich.table import Table

        table = Table(title=Text(self.title), title_justify="left", caption=Text(self.caption), caption_justify="left")
        for header, justify in self.columns:
            table.add_column(Text(header), justify=justify)
        for cells, style in self.rows:
            table.add_row(*(c if isinstance(c, Text) else Text(c) for c in cells), style=style)
        return table

    def __rich_console__(self, console, options):
        widths = self.widths()
        if sum(widths) + 3 * len(widths) + 1 > options.max_width:
            yield self.narrow if self.narrow is not None else self.as_rich_table()
            return

        def rule(left: str, fill: str, cross: str, right: str) -> Text:
            return Text(left + cross.join(fill * (w + 2) for w in widths) + right, no_wrap=True)

        def line(cells: Sequence[str | Text], style: str | None, edge: str) -> Text:
            # One string and its style spans per line: assembling a Text per cell was most of the
            # table's render time. Spans are character offsets; padding counts terminal cells.
            parts, spans, pos = [edge], [], len(edge)
            for cell, width, (_, justify) in zip(cells, widths, self.columns, strict=True):
                pad = " " * (width - _cell_len(cell))
                before, after = (" " + pad, " ") if justify == "right" else (" ", pad + " ")
                plain = cell if isinstance(cell, str) else cell.plain
                piece_len = len(before) + len(plain) + len(after)
                if style:  # the row's style under the cell's own (rich's stylize_before)
                    spans.append(Span(pos, pos + piece_len, style))
                start = pos + len(before)
                if isinstance(cell, Text):
                    if cell.style:
                        spans.append(Span(start, start + len(plain), cell.style))
                    spans.extend(Span(start + sp.start, start + sp.end, sp.style) for sp in cell.spans)
                parts += [before, plain, after, edge]
                pos += piece_len + len(edge)
            return Text("".join(parts), no_wrap=True, spans=spans)

        yield Text(self.title, style="table.title", no_wrap=True)
        yield rule("┏", "━", "┳", "┓")
        yield line([Text(h, style="table.header") for h, _ in self.columns], None, "┃")
        yield rule("┡", "━", "╇", "┩")
        for cells, style in self.rows:
            yield line(cells, style, "│")
        yield rule("└", "─", "┴", "┘")
        if self.caption:
            yield Text(self.caption, style="table.caption")


def _cell_len(cell: str | Text) -> int:
    return cell_len(cell) if isinstance(cell, str) else cell.cell_len


def candidates_table(result: GpuResult) -> FastTable:
    """Every candidate plan for one GPU: peak VRAM, headroom, per-stage and total time, fits.
    On a narrow console the per-stage times are left out and the four knobs share one column."""
    stages = stage_names(result.candidates)
    memory = [("peak GiB", "right"), ("need GiB", "right"), ("headroom GiB", "right"), ("binding", "left")]
    times = [("step", "right"), ("total", "right"), ("fits", "left")]
    columns = [("", "left"), ("offload", "left"), ("text enc", "left"), ("DiT", "left"), ("VAE tiling", "left"),
               *memory, *[(STAGE_TITLES.get(name, name), "right") for name in stages], *times]
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
                      Text("yes", style="green") if cand.fits else Text("no", style="red")]
        stage_cells = [fmt_seconds(by_stage[name].time_s) if name in by_stage else "-" for name in stages]
        rows.append(([mark, *knobs, *memory_cells, *stage_cells, *time_cells], style))
        narrow_rows.append(([mark, compact_plan(cand.plan), *memory_cells[:3], *time_cells[1:]], style))
    title = f"{result.gpu}: {result.memory_gib:.1f} GiB usable"
    narrow = FastTable(title + " (peak, need, headroom in GiB)", _provenance(result), narrow_columns, narrow_rows)
    return FastTable(title, _provenance(result), columns, rows, narrow=narrow)


def recommendation_line(result: GpuResult) -> Text:
    """'Recommended on l40s: offload=model ... — <reason>' or why nothing fits."""
    if result.recommended is None:
        return Text.assemble(("No plan fits ", "bold red"), (result.gpu, "bold"), " — ", result.reason)
    cand = result.recommended
    text = Text.assemble(("Recommended on ", "bold"), (result.gpu, "bold"), ": ",
                         (plan_label(cand.plan), "bold green"),
                         f" ({fmt_seconds(cand.duration_s)}, peak {fmt_gib(cand.peak_vram_gib)} GiB) — ", result.reason)
    if cand.duration_interval_s is not None:
        low, high = cand.duration_interval_s
        text.append(f" [time {fmt_seconds(low)}–{fmt_seconds(high)}]", style="dim")
    return text


def _notes(result: GpuResult) -> list[str]:
    seen: list[str] = []
    for cand in result.candidates:
        for note in cand.notes:
            if note not in seen:
                seen.append(note)
    return seen


def comparison_table(report: PlanReport) -> FastTable:
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
            none = Text("none fits", style="red")
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
    return FastTable(title, "", columns, rows, narrow=FastTable(title + " (peak in GiB)", "", narrow_columns,
                                                                 narrow_rows))


def render_plan_report(report: PlanReport) -> RenderableType:
    """The whole `wanfit plan` table output."""
    w = report.workload
    cfg = f"CFG {w.guidance:g}" if w.guidance > 1.0 else "no CFG"
    header = Text.assemble(("Workload: ", "bold"),
                           f"{w.model} {w.width}x{w.height} (WxH), {w.frames} frames, {w.steps} steps, {cfg}, "
                           f"batch {w.batch}; safety margin {report.safety_margin_gib:g} GiB. "
                           "Memory in GiB (2^30 bytes); peak = device-level (nvidia-smi), need = what decides OOM.")
    parts: list[RenderableType] = [header]
    for result in report.results:
        parts.append(Text(""))
        parts.append(candidates_table(result))
        if any(c.extrapolated for c in result.candidates):
            parts.append(Text("* extrapolated: outside the calibrated range", style="dim"))
        for note in _notes(result):
            parts.append(Text(f"note: {note}", style="dim"))
        parts.append(recommendation_line(result))
    if len(report.results) > 1:
        parts.append(Text(""))
        parts.append(comparison_table(report))
    return Group(*parts)


def rows_table(rows: Sequence[Mapping[str, Any]], title: str) -> Table:
    """A plain table from a list of flat dicts (column order = first row's keys); numeric columns right-aligned."""
    from rich.table import Table

    table = Table(title=Text(title), title_justify="left")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    right = {col for col in columns
             if all(isinstance(row.get(col), int | float | None) and not isinstance(row.get(col), bool) for row in rows)}
    for col in columns:
        table.add_column(Text(col), justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*_plain(*[_cell(row.get(col)) for col in columns]))
    return table


def _plain(*cells: str) -> list[Text]:
    """Cells as Text: a plain str in a rich Table is parsed as markup, and '[...]' in data would break it."""
    return [Text(c) for c in cells]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"  # parameter counts
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "-"
    return str(value)


def calibrations_on_disk(model: str, calibration_dir=None) -> list[str]:
    """Calibration files usable for `model`, as '<gpu>/<calibrated model>': its own and those of models
    with the same DiT (e.g. wan2.1-t2v-14b's covers the Wan2.2 A14B experts). User directories first."""
    from wanfit.catalog import MODELS
    from wanfit.paths import calibration_dirs

    family = MODELS[model].dit_family
    found: list[str] = []
    for directory in calibration_dirs(calibration_dir):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*/*.json")):
            other = MODELS.get(path.stem)
            label = f"{path.parent.name}/{path.stem}"
            if other is not None and other.dit_family == family and label not in found:
                found.append(label)
    return found


def model_rows(calibration_dir=None) -> list[dict[str, Any]]:
    """One flat row per catalog model (also the `wanfit models --format json` output)."""
    from wanfit.catalog import MODELS

    rows = []
    for spec in MODELS.values():
        d = spec.defaults
        rows.append({
            "key": spec.key,
            "dit_params": spec.params.dit_per_expert,
            "experts": spec.experts,
            "vae": f"{'2.2' if spec.vae_spatial == 16 else '2.1'} (x{spec.vae_spatial}, z={spec.vae['z_dim']})",
            "size": f"{d.width}x{d.height}",
            "frames": d.frames,
            "steps": d.steps,
            "stride": spec.spatial_stride,
            "dit_family": spec.dit_family,
            "calibrations": calibrations_on_disk(spec.key, calibration_dir),
        })
    return rows
