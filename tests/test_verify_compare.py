"""Comparison logic of `wanfit verify`: errors, tolerances, verdicts, exit codes, extrapolation, notes.

Measurements and predictions here are constructed objects (tests/verify_fixtures.py), not runs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verify_fixtures import A14B, candidate, measurement
from wanfit.measure.cap import make_cap
from wanfit.verify.compare import (
    EXIT_OK,
    EXIT_OOM_UNEXPECTED,
    EXIT_OUTSIDE_TOLERANCE,
    EXIT_RUN_ERROR,
    Tolerances,
    compare,
    error_pct,
    exit_code,
    within,
)
from wanfit.verify.measured import measured_stages
from wanfit.vocabulary.measurement import median_steady_step_s
from wanfit.vocabulary.workload import Plan

FULL = [3.4] + [2.46] * 49


def row(c, stage):
    return next(r for r in c.rows if r.stage == stage)


def test_exact_prediction_passes_with_every_figure_scored():
    c = compare(measurement(step_times=FULL), candidate(), target_memory_gib=79.19)
    assert c.verdict == "pass"
    assert c.within_tolerance
    assert exit_code(c) == EXIT_OK
    assert [r.stage for r in c.rows] == ["init", "text_encode", "prepare", "denoise", "vae_decode", "total"]
    for stage in ("init", "text_encode", "denoise", "vae_decode", "total"):
        r = row(c, stage)
        assert r.time_within is True and r.memory_within is True
        assert r.time_error_pct == pytest.approx(0.0, abs=1e-9)
        assert r.memory_error_pct == pytest.approx(0.0, abs=1e-9)
    assert row(c, "denoise").measured_time_s == pytest.approx(3.4 + 49 * 2.46)
    assert row(c, "total").measured_peak_gib == 45.0
    # prepare has no predicted counterpart: shown, not scored
    assert row(c, "prepare").time_within is None and row(c, "prepare").memory_within is None
    assert not c.extrapolated and c.steps_run == 50


def test_signed_error_is_predicted_minus_measured_over_measured():
    assert error_pct(110.0, 100.0) == pytest.approx(10.0)
    assert error_pct(90.0, 100.0) == pytest.approx(-10.0)
    assert error_pct(None, 1.0) is None and error_pct(1.0, 0.0) is None


def test_memory_over_tolerance_fails_with_exit_code_1():
    c = compare(measurement(step_times=FULL), candidate(vae=(10.3, 48.0)))  # +6.7 % at VAE decode
    r = row(c, "vae_decode")
    assert r.memory_error_pct == pytest.approx(3.0 / 45.0 * 100)
    assert r.memory_within is False
    assert row(c, "total").memory_within is False  # the run's peak is the decode peak
    assert c.verdict == "outside_tolerance" and not c.within_tolerance
    assert exit_code(c) == EXIT_OUTSIDE_TOLERANCE


def test_memory_tolerance_is_configurable():
    m, p = measurement(step_times=FULL), candidate(vae=(10.3, 48.0))
    assert exit_code(compare(m, p, tolerances=Tolerances(memory=0.08))) == EXIT_OK


def test_time_tolerance_boundary_and_floor():
    # denoise measured 123.94 s: 9 % over passes at 10 %, 12 % over fails
    measured = 3.4 + 49 * 2.46
    ok = compare(measurement(step_times=FULL), candidate(denoise=(measured * 1.09, 20.5)))
    bad = compare(measurement(step_times=FULL), candidate(denoise=(measured * 1.12, 20.5)))
    assert row(ok, "denoise").time_within is True
    assert row(bad, "denoise").time_within is False
    assert exit_code(bad) == EXIT_OUTSIDE_TOLERANCE
    # a 0.5 s text encode predicted at 0.9 s is +80 % but under the 0.5 s floor: passes
    tiny = compare(measurement(step_times=FULL), candidate(text=(0.9, 23.5)))
    assert row(tiny, "text_encode").time_error_pct == pytest.approx(80.0)
    assert row(tiny, "text_encode").time_within is True
    strict = compare(measurement(step_times=FULL), candidate(text=(0.9, 23.5)),
                     tolerances=Tolerances(time_floor_s=0.0))
    assert row(strict, "text_encode").time_within is False


def test_within_uses_the_larger_of_relative_and_floor():
    assert within(10.5, 10.0, 0.05, 0.0) is True
    assert within(10.6, 10.0, 0.05, 0.0) is False
    assert within(10.6, 10.0, 0.05, 0.7) is True
    assert within(None, 10.0, 0.05, 0.0) is None


def test_reduced_steps_are_extrapolated_from_the_steady_state_median_and_marked():
    m = measurement(step_times=[3.4, 2.46, 2.45, 2.50])  # 4 of 50 steps
    c = compare(m, candidate())
    steady = 2.46  # median of 2.46, 2.45, 2.50 (the first step is warm-up)
    assert c.steady_step_s == pytest.approx(steady)
    d = row(c, "denoise")
    assert d.extrapolated and c.extrapolated
    assert d.measured_time_s == pytest.approx(3.4 + 2.46 + 2.45 + 2.50 + 46 * steady)
    assert "4 of 50 steps run" in d.note
    total = m.stage("total").time_s
    assert row(c, "total").measured_time_s == pytest.approx(total + 46 * steady)
    assert row(c, "total").extrapolated
    assert not row(c, "vae_decode").extrapolated and not row(c, "init").extrapolated
    assert c.steps_run == 4 and c.steps_requested == 50
    # the peak of the steps run is the step peak: measured, not extrapolated
    assert d.measured_peak_gib == 20.5


def test_single_step_run_falls_back_to_the_first_step():
    c = compare(measurement(step_times=[3.4]), candidate())
    assert c.steady_step_s == 3.4
    assert row(c, "denoise").measured_time_s == pytest.approx(50 * 3.4)


def test_oom_of_a_plan_predicted_to_fit_is_a_failed_verdict():
    m = measurement(step_times=[3.4, 2.46], status="oom", failed_stage="vae_decode", vae=None)
    c = compare(m, candidate(fits=True), target_memory_gib=44.99)
    assert c.verdict == "oom_unexpected"
    assert "predicted to fit" in c.verdict_line and "vae_decode" in c.verdict_line
    assert exit_code(c) == EXIT_OOM_UNEXPECTED
    assert any(n.startswith("OOM at vae_decode") for n in c.notes)


def test_oom_of_a_plan_predicted_not_to_fit_is_confirmed_and_exits_zero():
    m = measurement(step_times=[3.4, 2.46], status="oom", failed_stage="vae_decode", vae=None)
    c = compare(m, candidate(fits=False, headroom_gib=-4.0), target_memory_gib=44.99)
    assert c.verdict == "oom_confirmed"
    assert exit_code(c) == EXIT_OK
    total = row(c, "total")
    # a failed run's total is partial: neither time nor memory scored
    assert total.measured_time_s is None and total.measured_peak_gib is None
    assert total.time_within is None and total.memory_within is None
    vae = row(c, "vae_decode")
    assert vae.measured_time_s is None and vae.memory_within is None
    # it failed after the loop: the 2 steps it meant to run are complete and extrapolate to 50
    d = row(c, "denoise")
    assert d.measured_peak_gib == 20.5 and d.extrapolated
    assert d.measured_time_s == pytest.approx(3.4 + 49 * 2.46)


def test_oom_during_denoise_leaves_denoise_time_unscored():
    m = measurement(step_times=[3.4, 2.46], status="oom", failed_stage="step 3", vae=None)
    c = compare(m, candidate(fits=False))
    d = row(c, "denoise")
    assert d.measured_time_s is None and d.time_within is None
    assert "step 3" in d.note


def test_random_weight_runs_do_not_score_init():
    """Random weights are built on the GPU before placement, by random-number generation: neither the
    init peak nor the init time is what a checkpoint load gives, so both are shown with a note and
    left out of the scores (the total memory too); a checkpoint run's init is scored."""
    m = measurement(step_times=FULL, source="random", init=(60.0, 70.0))  # init 3x the predicted 20 s
    c = compare(m, candidate(), target_memory_gib=79.19)
    init = row(c, "init")
    assert init.memory_within is None and init.time_within is None
    assert init.time_error_pct == pytest.approx(-66.7, abs=0.1)  # shown, not scored
    assert "not scored" in init.note
    total, predicted = row(c, "total"), candidate()
    assert total.measured_peak_gib == 45.0
    # the total's time leaves the init out on both sides
    assert total.measured_time_s == pytest.approx(m.stage("total").time_s - 60.0)
    assert total.predicted_time_s == pytest.approx(predicted.duration_s - predicted.stages[0].time_s)
    assert "without init" in total.note and total.time_within is True
    assert c.verdict == "pass"
    loaded = compare(measurement(step_times=FULL, source="checkpoint", init=(60.0, 12.0)), candidate(),
                     target_memory_gib=79.19)
    assert row(loaded, "init").time_within is False and loaded.verdict == "outside_tolerance"


def test_confirmed_oom_with_a_completed_stage_outside_tolerance_still_fails():
    m = measurement(step_times=[3.4, 2.46], status="oom", failed_stage="vae_decode", vae=None)
    c = compare(m, candidate(fits=False, init=(20.0, 15.0)))  # init peak 15.0 vs 12.5
    assert c.verdict == "oom_confirmed"
    assert exit_code(c) == EXIT_OUTSIDE_TOLERANCE


def test_a_run_error_is_not_a_verification():
    m = measurement(step_times=[3.4], status="error", failed_stage="init", vae=None)
    c = compare(m, candidate())
    assert c.verdict == "error" and exit_code(c) == EXIT_RUN_ERROR
    assert "RuntimeError: boom" in c.verdict_line


def test_ran_although_predicted_not_to_fit_is_reported_but_not_a_failure_by_itself():
    c = compare(measurement(step_times=FULL), candidate(fits=False, headroom_gib=-0.5), target_memory_gib=44.99)
    assert c.verdict == "ran_despite_no_fit"
    assert "RAN although predicted not to fit" in c.verdict_line
    assert exit_code(c) == EXIT_OK


def test_expert_switch_is_derived_and_taken_out_of_denoise():
    steps = [5.0, 4.0, 4.0, 6.5, 4.0, 4.0]
    m = measurement(workload=A14B, step_times=steps, experts=[1, 1, 1, 2, 2, 2], plan=Plan(offload="model"))
    c = compare(m, candidate(steps=6, step_s=4.0, denoise=(21.0, 20.5), expert_switch=(2.5, 20.5)))
    sw = row(c, "expert_switch")
    assert sw.derived and sw.measured_time_s == pytest.approx(2.5)
    assert sw.time_within is True
    assert row(c, "denoise").measured_time_s == pytest.approx(sum(steps) - 2.5)
    assert c.steady_step_s == 4.0  # step 1 and the switch step are left out of the median


def test_expert_switch_without_predicted_stage_still_reported():
    steps = [5.0, 4.0, 6.5, 4.0]
    m = measurement(workload=A14B.model_copy(update={"steps": 4}), step_times=steps, experts=[1, 1, 2, 2])
    got = measured_stages(m)
    assert got["expert_switch"].time_s == pytest.approx(2.5)
    c = compare(m, candidate(steps=4, step_s=4.0))
    sw = row(c, "expert_switch")
    assert sw.predicted_time_s is None and sw.time_within is None


def test_capped_run_over_the_cap_is_compared_on_need_basis():
    # target 44.99 GiB (L40S); predicted uncapped decode peak 52 GiB > target: the allocator must drop
    # its cache, so the device peak (capped near 44 GiB) no longer measures the prediction.
    m = measurement(step_times=FULL, vae=(10.3, 44.2), vae_alloc=33.1, memory_cap_gib=44.99)
    cap = make_cap("l40s", 44.99, 79.19, 1.1)
    p = candidate(vae=(10.3, 52.0), need={"vae_decode": 34.4, "total": 34.4})
    c = compare(m, p, cap=cap, target_memory_gib=44.99)
    r = row(c, "vae_decode")
    assert r.memory_basis == "need"
    assert r.measured_peak_gib == pytest.approx(33.1 + 0.6 + 0.5)  # allocated + context + baseline
    assert r.predicted_peak_gib == 34.4
    assert r.memory_within is True
    assert row(c, "denoise").memory_basis == "device"  # under the cap: device peak is comparable


def test_time_on_another_gpu_is_shown_beside_and_not_scored_without_a_local_prediction():
    p = candidate(denoise=(300.0, 20.5))  # L40S is slower: transferred prediction
    c = compare(measurement(step_times=FULL), p, same_gpu=False)
    d = row(c, "denoise")
    assert d.target_time_s == 300.0
    assert d.predicted_time_s is None and d.time_within is None
    assert d.memory_within is True  # memory carries over and is still scored
    assert exit_code(c) == EXIT_OK


def test_time_on_another_gpu_is_scored_against_the_local_prediction():
    target = candidate(denoise=(300.0, 20.5))
    local = candidate(denoise=(200.0, 20.5))  # wrong for the local GPU
    c = compare(measurement(step_times=FULL), target, same_gpu=False, local_prediction=local)
    d = row(c, "denoise")
    assert d.predicted_time_s == 200.0 and d.target_time_s == 300.0
    assert d.time_within is False
    assert exit_code(c) == EXIT_OUTSIDE_TOLERANCE


def test_steady_step_median_excludes_the_first_step():
    m = measurement(step_times=[9.0, 2.0, 3.0, 100.0])
    assert median_steady_step_s(m.steps()) == 3.0


# ---- bottleneck notes ----


def test_note_first_step_much_slower_than_steady_state():
    c = compare(measurement(step_times=FULL, plan=Plan(offload="model")), candidate())
    note = next(n for n in c.notes if n.startswith("Step 1 took"))
    assert "3.40 s vs 2.46 s" in note and "+0.94 s" in note and "offload" in note


def test_no_first_step_note_when_it_is_steady():
    c = compare(measurement(step_times=[2.5] + [2.46] * 49), candidate())
    assert not any(n.startswith("Step 1 took") for n in c.notes)


def test_note_step_with_low_sm_activity():
    sm = [90.0] * 50
    sm[6] = 30.0
    c = compare(measurement(step_times=FULL, step_sm=sm), candidate())
    assert any(n.startswith("Step 7: SM activity 30 % vs 90 %") for n in c.notes)
    assert sum("SM activity" in n and n.startswith("Step ") for n in c.notes) == 1


def test_note_dominant_stage():
    c = compare(measurement(step_times=FULL), candidate())
    assert any(n.startswith("denoise dominates:") for n in c.notes)
    c2 = compare(measurement(step_times=[3.4, 2.46, 2.46]), candidate())
    assert any(n.startswith("denoise dominates:") and n.endswith("(extrapolated)") for n in c2.notes)


def test_note_headroom_under_five_percent_of_target():
    m = measurement(step_times=FULL, vae=(10.3, 43.5))  # 44.99 - 43.5 = 1.5 GiB = 3.3 %
    c = compare(m, candidate(vae=(10.3, 43.5), headroom_gib=1.0), target_memory_gib=44.99)
    assert any(n.startswith("Measured peak 43.5 GiB leaves 1.5 GiB") for n in c.notes)
    assert any(n.startswith("Predicted headroom 1.0 GiB") for n in c.notes)
    roomy = compare(measurement(step_times=FULL), candidate(), target_memory_gib=79.19)
    assert not any("under 5 %" in n for n in roomy.notes)


def test_note_idle_gpu_during_a_long_host_stage():
    m = measurement(step_times=[3.4, 2.46, 2.46], text=(30.0, 1.5))  # text encoder on the CPU, SM 60 % in fixture
    c = compare(m, candidate())
    assert not any(n.startswith("text_encode: GPU mostly idle") for n in c.notes)
    c2 = compare(measurement(step_times=[3.4, 2.46, 2.46], init=(60.0, 12.5)), candidate())
    assert any(n.startswith("init: GPU mostly idle (SM 5 %") for n in c2.notes)


@given(pred=st.floats(0.1, 1e4), meas=st.floats(0.1, 1e4), rel=st.floats(0.001, 0.5))
def test_within_agrees_with_error_pct(pred, meas, rel):
    inside = within(pred, meas, rel, 0.0)
    assert inside == (abs(error_pct(pred, meas)) <= rel * 100 + 1e-6) or abs(abs(pred - meas) - rel * meas) < 1e-9


def test_reduced_two_expert_run_that_missed_the_switch_says_so():
    wl = A14B.model_copy(update={"steps": 40})
    m = measurement(workload=wl, step_times=[5.0, 4.0, 4.0], experts=[1, 1, 1])
    d = row(compare(m, candidate(steps=40, step_s=4.0)), "denoise")
    assert d.extrapolated and "expert switch was not among the steps run" in d.note
