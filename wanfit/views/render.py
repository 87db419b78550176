"""The `wanfit plan` table output: the plan report printed on a rich console.

Pure presentation over the pydantic objects the API returns; the tables themselves are
wanfit.views.plan_table's. By default each GPU shows its fitting plans (the recommended one first, at most
MAX_FITTING_SHOWN) and the one that comes closest to fitting; `--all` shows every candidate. Notes are those
of the plans shown, each said once. Memory is printed in GiB (2**30 bytes).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from wanfit.planner.inputs import HostRam
from wanfit.views.plan_table import candidates_table, comparison_table, fmt_gib, gpu_title, hardware_table
from wanfit.vocabulary.plan_report import Candidate, GpuResult, PlanReport
from wanfit.vocabulary.units import fmt_seconds
from wanfit.vocabulary.workload import Plan

MAX_FITTING_SHOWN = 12  # enough to compare the close alternatives; `--all` shows the rest
# Notes the table says otherwise: the peak cell says "(limit)", the host RAM column and the host RAM line
# say what a plan needs and what there is.
SAID_IN_THE_TABLE = (re.compile(r"^device-level peak held at "), re.compile(r"^needs .* GiB of host RAM "))
# The range note of each extrapolated plan (wanfit.model.predict): merged into one line per calibration.
OUTSIDE_RANGE = re.compile(r"^outside the calibrated range of (\S+) \((.*)\): extrapolated, wider interval$")


def plan_label(plan: Mapping[str, Any]) -> str:
    """The knobs in one short line, e.g. 'offload=model te=cpu dit=bf16 vae=tiled'; an official-code plan in
    its own flags, e.g. 'generate.py --offload_model True --t5_cpu'."""
    attention = "" if plan.get("attention", "auto") == "auto" else f" attention={plan['attention']}"
    if plan.get("runtime") == "wan":
        return f"generate.py {' '.join(Plan(**plan).official_flags())}{attention}"
    tiling = "tiled" if plan.get("vae_tiling") else "untiled"
    return (f"offload={plan.get('offload')} te={plan.get('text_encoder')} dit={plan.get('dit_dtype')} "
            f"vae={tiling}{attention}{Plan(**plan).layout_label() if plan.get('gpus', 1) > 1 else ''}")


def shown_candidates(result: GpuResult, show_all: bool) -> list[Candidate]:
    """The candidates a GPU's table shows: every one with `show_all`, else the fitting ones (fastest first, at
    most MAX_FITTING_SHOWN) and the first that does not fit (the ranking puts the smallest need first)."""
    if show_all:
        return list(result.candidates)
    fitting = [c for c in result.candidates if c.fits][:MAX_FITTING_SHOWN]
    closest = next((c for c in result.candidates if not c.fits), None)
    return fitting + ([closest] if closest is not None else [])


def _provenance(result: GpuResult) -> str:
    """Which calibration the predictions came from (a transfer to another GPU is one of the notes)."""
    where = "" if any(c.transferred_from for c in result.candidates) else " (measured on this GPU)"
    return f"calibration: {result.calibration or 'none'}{where}"


def note_lines(cands: Sequence[Candidate]) -> tuple[list[str], list[str]]:
    """(the extrapolation legend, the other notes) of the plans shown: each note once, the range notes merged
    per calibration, the notes the table already says left out."""
    ranges: dict[str, list[str]] = {}
    notes: list[str] = []
    for note in (n for c in cands for n in c.notes):
        if (outside := OUTSIDE_RANGE.match(note)) is not None:
            features = ranges.setdefault(outside[1], [])
            features += [f for f in outside[2].split(", ") if f not in features]
        elif note not in notes and not any(p.match(note) for p in SAID_IN_THE_TABLE):
            notes.append(note)
    extrapolated = sum(c.extrapolated for c in cands)
    legend = [f"* extrapolated ({extrapolated}/{len(cands)} shown): outside the calibrated range of {label} "
              f"({', '.join(features)}), wider interval" for label, features in ranges.items()]
    if extrapolated and not legend:
        legend = ["* extrapolated: outside the calibrated range, wider interval"]
    return legend, notes


def host_ram_line(host_ram: HostRam, report: PlanReport) -> Text:
    """What host RAM the offloading plans were checked against, or that none was."""
    if host_ram.gib is None:
        return Text("host RAM assumed unlimited: give --host-ram GIB (offloaded weights live in it)", style="yellow")
    short = sum(not c.host_ram_fits for r in report.results for c in r.candidates)
    more = f"; {short} plan(s) need more" if short else ""
    return Text(f"host RAM: {host_ram.gib:.1f} GiB ({host_ram.source}){more}")


def recommendation_line(result: GpuResult) -> Text:
    """'Recommended on l40s: offload=model ... — <reason>' or why nothing fits."""
    if result.recommended is None:
        return Text.assemble(("No plan fits ", "bold red"), (gpu_title(result), "bold"), " — ", result.reason)
    cand = result.recommended
    line = Text.assemble(("Recommended on ", "bold"), (gpu_title(result), "bold"), ": ",
                         (plan_label(cand.plan), "bold green"),
                         f" ({fmt_seconds(cand.duration_s)}, peak {fmt_gib(cand.peak_vram_gib)} GiB) — ", result.reason)
    if cand.duration_interval_s is not None:
        low, high = cand.duration_interval_s
        line.append(f" [time {fmt_seconds(low)}–{fmt_seconds(high)}]", style="dim")
    return line


def command_lines(result: GpuResult, width: int) -> list[Text]:
    """The recommended plan's command (dim) under the recommendation line, each of its lines wrapped to
    `width` (a continuation indented); nothing when none is recommended or it has no command."""
    if result.recommended is None or not result.recommended.command:
        return []
    lines = [Text("Run it:", style="dim")]
    for raw in result.recommended.command.splitlines():
        pieces = textwrap.wrap(raw, max(width, 20), subsequent_indent="    ", break_on_hyphens=False) or [""]
        lines += [Text(piece, style="dim") for piece in pieces]
    return lines


def _workload_line(report: PlanReport) -> Text:
    w = report.workload
    cfg = f"CFG {w.guidance:g}" if w.guidance > 1.0 else "no CFG"
    reused = "; a reused pipeline (no init)" if report.reused_pipeline else ""
    return Text.assemble(("Workload: ", "bold"),
                         f"{w.model} {w.width}x{w.height} (WxH), {w.frames} frames, {w.steps} steps, {cfg}, batch "
                         f"{w.batch}; safety margin {report.safety_margin_gib:g} GiB{reused}. Memory in GiB (2^30 "
                         "bytes); peak = device-level (nvidia-smi), need = what decides OOM; (limit): held at the "
                         "card's limit, the allocator giving cached memory back.")


def _print_gpu(console: Console, result: GpuResult, show_all: bool) -> None:
    cands = shown_candidates(result, show_all)
    console.print()
    console.print(candidates_table(console, result, cands))
    left_out = len(result.candidates) - len(cands)
    if left_out:
        console.print(Text(f"{left_out} of {len(result.candidates)} candidates left out (the slower fitting ones and "
                           "those that do not fit): --all shows every one", style="dim"))
    legend, notes = note_lines(cands)
    for line in [_provenance(result), *legend, *(f"note: {n}" for n in notes)]:
        console.print(Text(line, style="dim"))
    console.print(recommendation_line(result))
    for line in command_lines(result, console.width):
        console.print(line, no_wrap=True, crop=False)


def render_plan_report(report: PlanReport, console: Console, host_ram: HostRam, show_all: bool = False) -> None:
    """The whole `wanfit plan` table output, printed on `console`."""
    console.print(_workload_line(report))
    if any(c.plan.get("runtime") == "wan" for r in report.results for c in r.candidates):
        console.print(Text.assemble(("Runtime: ", "bold"), "the official Wan2.2 code (generate.py): offload model = "
                                    "--offload_model True, te cpu = --t5_cpu, DiT bf16 = --convert_model_dtype (fp32 "
                                    "without it)"))
    console.print(host_ram_line(host_ram, report))
    for result in report.results:
        _print_gpu(console, result, show_all)
    if len(report.results) > 1:
        console.print()
        console.print(comparison_table(console, report))
    if any(r.gpu_count > 1 for r in report.results) and report.hardware:
        console.print()
        console.print(hardware_table(console, report))
