"""The pure helpers of bench/accuracy.py's modules (no refit, no subprocess; a second or so)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from accuracy_held_out import Errors, fell_back  # noqa: E402
from accuracy_reading import READING, READING_RUNS  # noqa: E402
from accuracy_render import _wall_cells  # noqa: E402
from accuracy_verify import run_numbers  # noqa: E402


def test_errors_summary_in_percent_and_in_the_figures_unit():
    errors = Errors()
    errors.add(1.1, 1.0)
    errors.add(0.7, 1.0)
    errors.add(5.0, None)  # not measured: not scored
    errors.add(None, 1.0)  # not predicted: not scored
    assert errors.summary() == "20.0 / 30.0 % (n=2)"
    assert errors.summary("s") == "0.20 / 0.30 s (n=2)"
    assert Errors().summary() == "-"


def test_fell_back_reads_the_predictions_notes():
    assert fell_back(SimpleNamespace(notes=["group offload step cost not calibrated: max(compute, transfers)"]))
    assert fell_back(SimpleNamespace(notes=["VAE tiling not measured here: fitted on wan2.1-t2v-14b's"]))
    assert not fell_back(SimpleNamespace(notes=["text encoder on the CPU"]))


def test_wall_cells_show_median_and_best_per_format():
    wall_s = {"plan json": [0.3, 0.1, 0.2], "plan table": [0.4, 0.5, 0.6]}
    assert _wall_cells(wall_s, "plan") == "0.20 s (best 0.10) | 0.50 s (best 0.40)"


def test_every_remark_names_exactly_one_committed_report():
    numbers = run_numbers(BENCH.parent / "verify-reports")
    assert set(numbers) == set(READING_RUNS)
    for line in READING:
        line.format(**numbers)  # every {name} in the remarks has a run
