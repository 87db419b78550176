"""The `wanfit plan` table output: terminal detection, styled wrapping and the box tables, without rich."""

from __future__ import annotations

import io
import re

import pytest

from wanfit.planner.api import plan_report
from wanfit.views.render import BoxTable, render_plan_report
from wanfit.views.terminal import PIPED_WIDTH, Terminal, sgr
from wanfit.vocabulary.workload import Workload

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def plain(text: str) -> str:
    return ANSI.sub("", text)


# ---- terminal ----

def test_piped_output_is_wide_and_plain():
    term = Terminal.detect(io.StringIO(), environ={})
    assert term == Terminal(width=PIPED_WIDTH, color=False)


def test_columns_variable_sets_the_width():
    assert Terminal.detect(io.StringIO(), environ={"COLUMNS": "93"}).width == 93
    assert Terminal.detect(io.StringIO(), environ={"COLUMNS": "wide"}).width == PIPED_WIDTH


@pytest.mark.parametrize(("env", "color"), [({}, True), ({"NO_COLOR": ""}, False), ({"TERM": "dumb"}, False),
                                            ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True)])
def test_color_on_a_terminal_follows_the_conventions(env, color):
    assert Terminal.detect(FakeTty(), environ={"COLUMNS": "80", **env}).color is color


def test_force_color_colors_a_pipe():
    assert Terminal.detect(io.StringIO(), environ={"FORCE_COLOR": "1"}).color


def test_styles_become_sgr_codes_and_unknown_words_are_refused():
    assert sgr("bold green") == "1;32"
    assert sgr(None) == ""
    assert Terminal(80, color=True).paint("x", "dim") == "\x1b[2mx\x1b[0m"
    assert Terminal(80, color=False).paint("x", "dim") == "x"
    with pytest.raises(ValueError, match="blink"):
        sgr("blink")


def test_wrap_keeps_every_word_in_order_within_the_width():
    words = [f"word{i}" * (1 + i % 3) for i in range(60)]
    segments = [(" ".join(words[:20]) + " ", "bold"), (" ".join(words[20:]), None)]
    for width in (10, 37, 80, 500):
        lines = Terminal(width, color=False).wrap(segments)
        assert " ".join(lines).split() == words
        assert all(len(line) <= width or " " not in line for line in lines)


def test_wrap_keeps_each_segments_style_across_a_break():
    lines = Terminal(12, color=True).wrap([("aaaa bbbb cccc dddd", "bold"), (" eeee", None)])
    assert [plain(line) for line in lines] == ["aaaa bbbb", "cccc dddd", "eeee"]
    assert lines[0] == "\x1b[1maaaa bbbb\x1b[0m"
    assert lines[2] == "eeee"


def test_a_word_longer_than_the_line_stands_alone():
    assert Terminal(5, color=False).wrap([("ab averyverylongword cd", None)]) == ["ab", "averyverylongword", "cd"]


# ---- tables ----

def small_table(narrow: BoxTable | None = None) -> BoxTable:
    rows = [(["none", "12.5", ("yes", "green")], "bold"), (["sequential", "7.25", ("no", "red")], None)]
    return BoxTable("title", "caption", [("offload", "left"), ("GiB", "right"), ("fits", "left")], rows, narrow)


def test_box_table_lines_are_aligned():
    lines = small_table().lines(Terminal(80, color=False))
    body = lines[1:-1]
    assert len({len(line) for line in body}) == 1
    assert "│ sequential │ 7.25 │ no   │" in body
    assert lines[0] == "title" and lines[-1] == "caption"


def test_box_table_colors_rows_under_their_cells():
    lines = small_table().lines(Terminal(80, color=True))
    assert "\x1b[1;32m yes  \x1b[0m" in lines[4]  # the row's bold under the cell's green
    assert [plain(line) for line in lines] == small_table().lines(Terminal(80, color=False))


def test_narrow_terminal_gets_the_narrow_table_then_shrinks_it():
    narrow = BoxTable("narrow", "", [("offload", "left"), ("fits", "left")],
                      [(["none", "yes"], None), (["sequential", "no"], None)])
    table = small_table(narrow)
    assert table.lines(Terminal(80, color=False))[0] == "title"
    assert table.lines(Terminal(26, color=False))[0] == "narrow"
    squeezed = table.lines(Terminal(18, color=False))
    assert all(len(line) <= 18 for line in squeezed)
    assert "│ sequen… │ no   │" in squeezed


# ---- the whole report, on the shipped calibration ----

@pytest.fixture(scope="module")
def two_gpu_report():
    return plan_report(Workload.for_model("wan2.2-ti2v-5b", frames=81), ["l40s", "h100"])


@pytest.mark.parametrize("width", [200, 120, 80, 60])
def test_report_fits_the_terminal(two_gpu_report, width):
    text = render_plan_report(two_gpu_report, Terminal(width, color=False))
    assert text.endswith("\n")
    assert all(len(line) <= width for line in text.splitlines())
    for piece in ("Workload: wan2.2-ti2v-5b", "l40s: ", "h100: ", "Recommended on l40s", "GPU comparison", "★"):
        assert piece in text, piece


def test_colored_report_is_the_plain_one_with_styles(two_gpu_report):
    colored = render_plan_report(two_gpu_report, Terminal(200, color=True))
    assert "\x1b[1;32m" in colored  # the recommended row
    assert plain(colored) == render_plan_report(two_gpu_report, Terminal(200, color=False))
