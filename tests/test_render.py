"""The `wanfit plan` table output drawn with rich: the layout per terminal width, the default view and --all,
the peak cell at the card's limit, one time format per column, notes said once, the host RAM line."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from wanfit.planner.api import plan_report
from wanfit.planner.inputs import HostRam
from wanfit.views.plan_table import TIME_FORMATS, held_at_limit, time_column, time_format
from wanfit.views.render import MAX_FITTING_SHOWN, note_lines, render_plan_report, shown_candidates
from wanfit.vocabulary.workload import Workload

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROW = re.compile(r"^│(.*)│$")


def draw(report, width: int, color: bool = False, show_all: bool = False, host_ram: HostRam | None = None) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system="standard" if color else None, force_terminal=color)
    render_plan_report(report, console, host_ram or HostRam(None), show_all=show_all)
    return out.getvalue()


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first candidate table: each row's cells (continuation lines of a wrapped cell
    left out: they start with an empty first cell and are not a new row)."""
    rows = []
    for line in text.splitlines():
        if (m := ROW.match(line)) is not None:
            rows.append([c.strip() for c in m[1].split("│")])
        elif rows and line.startswith("└"):
            break
    return rows


@pytest.fixture(scope="module")
def long_job():
    """361 frames on an L40S: the recommended plan is held at the card's limit, most plans are extrapolated."""
    return plan_report(Workload.for_model("wan2.2-ti2v-5b", frames=361), ["l40s"])


@pytest.fixture(scope="module")
def two_gpu_report():
    return plan_report(Workload.for_model("wan2.2-ti2v-5b", frames=81), ["l40s", "rtx4090"])


# ---- time columns ----

@pytest.mark.parametrize(("values", "unit", "cells"), [
    ([0.031, 9.6], "s", ["0.03", "9.60"]),
    ([3.7, 115.4], "s", ["3.7", "115.4"]),
    ([9.62, 125.0, 1918.4], "m:ss", ["0:10", "2:05", "31:58"]),
    ([50.0, 5000.0], "h:mm:ss", ["0:00:50", "1:23:20"]),
])
def test_a_time_column_has_one_format_named_in_its_header(values, unit, cells):
    assert time_format(values)[0] == unit
    column = time_column("total", values)
    assert column.header == f"total\n{unit}"
    assert [str(c) for c in column.cells] == cells


def test_time_formats_cover_every_value():
    assert TIME_FORMATS[-1][0] == float("inf")


# ---- the layout at each width ----

@pytest.mark.parametrize("width", [60, 100, 200])
def test_every_width_keeps_the_plan_whole_and_the_rows_apart(long_job, width):
    text = draw(long_job, width)
    assert all(len(line) <= width for line in text.splitlines())
    rows = table_rows(text)
    assert len(rows) == len(shown_candidates(long_job.results[0], False))
    plans = [" ".join(cells[:6]) for cells in rows]  # the knob cells (or the one plan cell)
    assert len(set(plans)) == len(plans), plans
    assert "…" not in "".join(plans)
    assert "★" in rows[0][0] or rows[0][0].startswith("★")  # the recommended plan first


def test_narrow_terminals_drop_columns_not_the_plan(long_job):
    wide, mid, narrow = (draw(long_job, w) for w in (200, 100, 60))
    assert "VAE decode" in wide and "denoise" in wide  # binding stage and per-stage times
    assert "binding" not in mid and "offload" in mid
    assert "none/int8/bf16" in narrow and "fits" in narrow


def test_peak_held_at_the_cards_limit_says_so_in_the_cell(long_job):
    result = long_job.results[0]
    rec = result.recommended
    assert held_at_limit(rec, result.memory_gib)
    first = table_rows(draw(long_job, 200))[0]
    assert "45.0 (limit)" in first
    assert not any("peak held at" in line for line in draw(long_job, 200).splitlines())


# ---- what is shown ----

def test_default_view_is_the_fitting_plans_and_the_closest_miss(long_job):
    result = long_job.results[0]
    shown = shown_candidates(result, show_all=False)
    fitting = [c for c in result.candidates if c.fits]
    assert shown[:-1] == fitting[:MAX_FITTING_SHOWN]
    assert not shown[-1].fits and shown[-1] == next(c for c in result.candidates if not c.fits)
    assert shown[0] == result.recommended
    text = draw(long_job, 200)
    assert f"{len(result.candidates) - len(shown)} of {len(result.candidates)} candidates left out" in text
    assert "--all" in text
    everything = draw(long_job, 200, show_all=True)
    assert len(table_rows(everything)) == len(result.candidates)
    assert "left out" not in everything


def test_notes_are_said_once_and_the_range_notes_merged(long_job):
    shown = shown_candidates(long_job.results[0], show_all=True)
    legend, notes = note_lines(shown)
    assert len(legend) == 1 and legend[0].startswith("* extrapolated")
    assert "video_fp32_gib" in legend[0] and "tiles_fp32_gib" in legend[0]  # untiled and tiled plans' features
    assert len(notes) == len(set(notes))
    assert not any(n.startswith(("outside the calibrated range", "device-level peak held")) for n in notes)


@pytest.mark.parametrize(("host_ram", "line"), [
    (HostRam(None), "host RAM assumed unlimited: give --host-ram"),
    (HostRam(62.5, "this machine's; --host-ram to change"), "host RAM: 62.5 GiB (this machine's"),
])
def test_the_host_ram_line_says_what_plans_were_checked_against(long_job, host_ram, line):
    assert line in draw(long_job, 200, host_ram=host_ram)


def test_host_ram_is_a_column_and_a_short_host_fails_the_fit():
    report = plan_report(Workload.for_model("wan2.1-t2v-14b", frames=81), ["rtx4090"], host_ram_gib=16)
    text = draw(report, 200, host_ram=HostRam(16, "--host-ram"))
    assert "host RAM" in text and "GiB" in text
    assert "plan(s) need more" in text
    assert "no (RAM)" in draw(report, 200, show_all=True, host_ram=HostRam(16, "--host-ram"))


# ---- several GPUs, color ----

@pytest.mark.parametrize("width", [60, 100, 200])
def test_two_gpus_get_a_comparison_that_fits(two_gpu_report, width):
    text = draw(two_gpu_report, width)
    assert all(len(line) <= width for line in text.splitlines())
    for piece in ("Workload: wan2.2-ti2v-5b", "l40s: ", "rtx4090: ", "Recommended on l40s", "GPU comparison", "★",
                  "Run it:"):
        assert piece in text, piece


def test_colored_report_is_the_plain_one_with_styles(two_gpu_report):
    colored = draw(two_gpu_report, 200, color=True)
    assert "\x1b[" in colored
    assert ANSI.sub("", colored) == draw(two_gpu_report, 200)
