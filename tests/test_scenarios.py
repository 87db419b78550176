"""The user's four standard scenarios as presets."""

from __future__ import annotations

import pytest

from wanfit.planner.scenarios import SCENARIOS, get_scenario
from wanfit.vocabulary.catalog import get_model
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import PlanPins, Workload


def test_the_four_scenarios_exist():
    assert set(SCENARIOS) == {"speed-preview", "efficiency", "max-quality", "long-duration"}


@pytest.mark.parametrize(("name", "steps", "frames", "offload"), [
    ("speed-preview", 5, 121, "model"),
    ("efficiency", 30, 121, "model"),
    ("max-quality", 50, 121, "none"),
    ("long-duration", 50, 361, "model"),
])
def test_scenario_workloads_and_pins(name, steps, frames, offload):
    s = get_scenario(name)
    wl = s.workload()
    assert isinstance(wl, Workload)
    assert (wl.model, wl.height, wl.width, wl.steps, wl.frames) == ("wan2.2-ti2v-5b", 704, 1280, steps, frames)
    assert wl.guidance == get_model("wan2.2-ti2v-5b").defaults.guidance
    assert s.pins() == PlanPins(offload=offload)
    assert s.pins().apply().offload == offload


def test_workload_overrides_only_name_what_the_scenario_fixes():
    assert get_scenario("speed-preview").workload_overrides() == {
        "model": "wan2.2-ti2v-5b", "height": 704, "width": 1280, "steps": 5}
    assert get_scenario("long-duration").workload_overrides()["frames"] == 361
    # usable directly with Workload.for_model
    ov = dict(get_scenario("efficiency").workload_overrides())
    assert Workload.for_model(ov.pop("model"), **ov).steps == 30


def test_explicit_flags_win_over_the_scenario():
    wl = get_scenario("long-duration").workload(frames=241, steps=None)
    assert wl.frames == 241 and wl.steps == 50


def test_lookup_is_case_insensitive_and_unknown_names_are_one_line_errors():
    assert get_scenario("Max-Quality").name == "max-quality"
    with pytest.raises(WanfitError) as err:
        get_scenario("speed")
    msg = str(err.value)
    assert "\n" not in msg and "unknown scenario 'speed'" in msg and "speed-preview" in msg
