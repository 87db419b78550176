"""The golden outputs recorded before the planner core was restructured (bench/golden.py): every predicted
figure of 46 `wanfit plan --format json` reports and of a `--fit-only` refit of every shipped calibration
must stay within 0.1 % (or one unit of the last rounded digit) until a change says why a figure moved and
records them again with `python bench/golden.py --write`."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _golden():
    spec = importlib.util.spec_from_file_location("golden", ROOT / "bench" / "golden.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["golden"] = module
    spec.loader.exec_module(module)
    return module


golden = _golden()
PLANS, REFITS = golden.load_golden()


def test_the_golden_set_spans_models_gpus_pins_and_scenarios():
    lines = list(PLANS)
    assert len(lines) >= 40
    assert {m for m in golden.MODELS if any(f"--model {m} " in line for line in lines)} == set(golden.MODELS)
    gpus = {r["gpu"] for report in PLANS.values() for r in report["results"]}
    assert gpus == set(golden.ALL_GPUS)
    assert sum("--scenario" in line for line in lines) == 4
    assert any(c["extrapolated"] for report in PLANS.values() for r in report["results"] for c in r["candidates"])


@pytest.mark.parametrize("line", sorted(PLANS))
def test_plan_report_matches_the_golden_file(line):
    assert golden.differences(PLANS[line], golden.run_plan(line.split())) == []


def test_refit_of_every_shipped_calibration_matches_the_golden_file():
    refits = golden.refit_all()
    assert set(refits) == set(REFITS)
    for name, recorded in REFITS.items():
        assert golden.differences(recorded, refits[name]) == [], name


def test_differences_catch_a_moved_figure_and_allow_rounding():
    recorded = {"a": [{"x": 1.000, "s": "yes"}], "created_at": "then"}
    assert golden.differences(recorded, {"a": [{"x": 1.0009, "s": "yes"}], "created_at": "now"}) == []
    assert golden.differences(recorded, {"a": [{"x": 1.003, "s": "yes"}]}) != []
    assert golden.differences(recorded, {"a": [{"x": 1.0, "s": "no"}]}) != []
    assert golden.differences(recorded, {"a": []}) != []
    assert golden.differences({"y": 0.031}, {"y": 0.032}) == []  # one unit of the third decimal
    assert golden.differences({"y": 0.031}, {"y": 0.034}) != []
