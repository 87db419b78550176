"""Advice through the public API: plan space, fit verdicts, ranking, the recommendation's reason."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from planner_fixtures import MODEL, calibration, calibration_dir
from wanfit.planner.advise import baseline_plan, describe, plan_space
from wanfit.planner.api import plan_report, predict_one
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.plan_report import Candidate, PlanReport
from wanfit.vocabulary.profiles import get_profile
from wanfit.vocabulary.workload import Plan, PlanPins, Workload

CONTRACT = {"plan", "fits", "peak_vram_gib", "headroom_gib", "step_s", "duration_s", "stages", "extrapolated",
            "transferred_from"}


@pytest.fixture(scope="module")
def cal_dir(tmp_path_factory):
    return calibration_dir(tmp_path_factory.mktemp("cal"))


def wl(**kw) -> Workload:
    return Workload.for_model(MODEL, **kw)


def test_plan_space_and_pins():
    assert len(plan_space()) == 4 * 3 * 3 * 2
    pinned = plan_space(PlanPins(offload="model", vae_tiling=False))
    assert len(pinned) == 9 and all(p.offload == "model" and not p.vae_tiling for p in pinned)
    assert plan_space(PlanPins(expandable_segments=False))[0] == Plan(expandable_segments=False)
    assert baseline_plan(PlanPins(text_encoder="cpu")) == Plan(text_encoder="cpu")
    assert baseline_plan() == Plan()


def test_bad_pins_are_one_line_errors_where_built():
    with pytest.raises(WanfitError, match=re.escape("offload cannot be 'disk': use none | model | group | sequential")):
        PlanPins(offload="disk")
    with pytest.raises(WanfitError, match="unknown plan knob"):
        PlanPins(**{"precision": "fp8"})
    with pytest.raises(WanfitError, match=re.escape("vae_tiling cannot be 'yes': use false | true")):
        PlanPins(vae_tiling="yes")
    with pytest.raises(WanfitError, match="PlanPins"):
        plan_report(wl(frames=121), ["l40s"], {"offload": "model"})


def test_pins_merge_and_apply():
    scenario = PlanPins(offload="model", dit_dtype="fp8")
    merged = scenario.overridden_by(PlanPins(offload="none", vae_tiling=False))
    assert merged.given() == {"offload": "none", "dit_dtype": "fp8", "vae_tiling": False}
    assert merged.apply(Plan(text_encoder="int8", vae_tiling=True)) == Plan(
        offload="none", text_encoder="int8", dit_dtype="fp8", vae_tiling=False)
    with pytest.raises(ValidationError):
        scenario.offload = "none"  # frozen


def test_report_on_the_calibrated_gpu(cal_dir):
    report = plan_report(wl(frames=121, steps=50), ["h100"], calibration_dir=cal_dir)
    result = report.results[0]
    assert result.gpu == "h100" and result.memory_gib == get_profile("h100").memory_gib
    assert result.calibration == "h100/wan2.2-ti2v-5b"
    assert len(result.candidates) == 72
    rec = result.recommended
    # Everything fits an 80 GB card except nothing; the plain plan is the fastest.
    assert rec is not None and rec.plan == Plan().knobs()
    assert result.reason.startswith("no offload fits") and "VAE decode" in result.reason
    fitting = [c for c in result.candidates if c.fits]
    assert rec.duration_s == min(c.duration_s for c in fitting)
    assert [c.duration_s for c in fitting] == sorted(c.duration_s for c in fitting)
    for c in result.candidates:
        assert set(c.model_dump()) >= CONTRACT
        assert c.fits == (c.headroom_gib >= 0)
        assert c.transferred_from is None


def test_l40s_recommendation_names_the_binding_stage(cal_dir):
    report = plan_report(wl(frames=121, steps=50), ["l40s"], calibration_dir=cal_dir)
    result = report.results[0]
    plain = next(c for c in result.candidates if c.plan == Plan().knobs())
    # The plain plan needs more than a 48 GB card at VAE decode (measured on the H100: 43.8 GiB
    # allocated + context + margin), so something else is recommended, and the reason says why.
    assert not plain.fits and plain.binding_stage == "vae_decode"
    assert result.recommended is not None and result.recommended.plan != plain.plan
    assert result.reason.startswith(f"no offload needs {plain.need_gib:.1f} GiB at VAE decode > ")
    assert "usable on l40s" in result.reason and f"{result.recommended.need_gib:.1f} GiB" in result.reason
    assert all(c.transferred_from == "h100/wan2.2-ti2v-5b" for c in result.candidates)


def test_pins_restrict_and_host_ram_is_respected(cal_dir):
    pinned = plan_report(wl(frames=121), ["l40s"], PlanPins(offload="model"), calibration_dir=cal_dir).results[0]
    assert {c.plan["offload"] for c in pinned.candidates} == {"model"}
    # 4 GiB of host RAM holds no offloaded DiT (fp8: 4.8 GiB) and no text encoder on the CPU.
    limited = plan_report(wl(frames=121), ["l40s"], host_ram_gib=4.0, calibration_dir=cal_dir).results[0]
    offloading = [c for c in limited.candidates if c.plan["offload"] != "none" or c.plan["text_encoder"] == "cpu"]
    assert offloading and not any(c.fits for c in offloading)
    assert all(not c.host_ram_fits and c.host_ram_gib > 4.0 for c in offloading)
    assert any("host RAM" in n for n in offloading[0].notes)
    assert limited.recommended is None or limited.recommended.plan["offload"] == "none"


def test_nothing_fits_says_so(cal_dir):
    huge = wl(height=1280, width=1280, frames=1001, steps=2)
    result = plan_report(huge, ["l4"], calibration_dir=cal_dir).results[0]
    assert result.recommended is None
    assert result.reason.startswith("nothing fits: the smallest need is ")
    assert "usable on l4" in result.reason


def test_margin_moves_the_verdict(cal_dir):
    one_plan = PlanPins(offload="none", text_encoder="int8", dit_dtype="bf16", vae_tiling=False)
    small = plan_report(wl(frames=121), ["l40s"], one_plan, safety_margin_gib=0.0,
                        calibration_dir=cal_dir).results[0].candidates[0]
    big = plan_report(wl(frames=121), ["l40s"], one_plan, safety_margin_gib=5.0,
                      calibration_dir=cal_dir).results[0].candidates[0]
    assert small.headroom_gib - big.headroom_gib == pytest.approx(5.0, abs=1e-3)
    with pytest.raises(WanfitError):
        plan_report(wl(frames=121), ["l40s"], safety_margin_gib=-1, calibration_dir=cal_dir)


def test_several_gpus_and_json_round_trip(cal_dir):
    report = plan_report(wl(frames=81, steps=10), ["l40s", "h100", "l40s"], calibration_dir=cal_dir)
    assert [r.gpu for r in report.results] == ["l40s", "h100"]
    again = PlanReport.model_validate_json(report.model_dump_json())
    assert again == report
    data = report.model_dump(mode="json")
    assert set(data) >= {"workload", "results"}
    assert set(data["results"][0]) >= {"gpu", "memory_gib", "recommended", "candidates"}


def test_predict_one(cal_dir):
    cand = predict_one(wl(frames=121), Plan(offload="model"), "h100", calibration_dir=cal_dir)
    assert isinstance(cand, Candidate) and cand.plan["offload"] == "model"
    assert [s.name for s in cand.stages] == ["init", "text_encode", "prepare", "denoise", "vae_decode"]
    assert cand.fits and cand.need_gib < cand.peak_vram_gib + 5
    with pytest.raises(WanfitError, match="unknown GPU"):
        predict_one(wl(), Plan(), "l40", calibration_dir=cal_dir)


def test_describe():
    assert describe(Plan()) == "no offload"
    assert describe(Plan(offload="model", text_encoder="cpu", dit_dtype="fp8", vae_tiling=True)) == \
        "model offload + text encoder on the CPU + fp8 DiT + VAE tiling"
    assert calibration().model == MODEL
