"""Verify reports: JSON round trip, Markdown in the user's vocabulary, rich tables, the PNG memory
plot, the accuracy summary, plan files and the no-GPU refusal.

Measurements and predictions here are constructed objects (tests/verify_fixtures.py), not runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from verify_fixtures import A14B, WORKLOAD, candidate, measurement
from wanfit.measure.cap import make_cap
from wanfit.verify.compare import EXIT_OOM_UNEXPECTED
from wanfit.verify.report import VerifyReport, build_report, load_report, report_stem, write_json
from wanfit.verify.run import load_plan_file, run_verify
from wanfit.verify.summary import accuracy_markdown
from wanfit.views.verify_report import plot_memory, render_markdown, render_rich
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import Plan

FULL = [3.4] + [2.46] * 49
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def full_report(**kw) -> VerifyReport:
    m = measurement(step_times=FULL, plan=Plan(offload="model"))
    return build_report(m, candidate(plan=Plan(offload="model")), target_gpu="h100", target_memory_gib=79.19,
                        local_gpu="h100", **kw)


def reduced_capped_report() -> VerifyReport:
    m = measurement(step_times=[3.4, 2.46, 2.45], plan=Plan(offload="model"), vae=(10.3, 44.2),
                    memory_cap_gib=44.99, source="random")
    cap = make_cap("l40s", 44.99, 79.19, 1.1)
    p = candidate(plan=Plan(offload="model"), vae=(25.0, 52.0), denoise=(400.0, 20.5),
                  need={"vae_decode": 34.4, "total": 34.4})
    local = candidate(plan=Plan(offload="model"))
    return build_report(m, p, target_gpu="l40s", target_memory_gib=44.99, cap=cap, same_gpu=False, local_gpu="h100",
                        local_prediction=local)


def oom_report() -> VerifyReport:
    m = measurement(step_times=[3.4, 2.46], status="oom", failed_stage="vae_decode", vae=None, memory_cap_gib=22.0)
    return build_report(m, candidate(fits=True), target_gpu="l4", target_memory_gib=22.0,
                        cap=make_cap("l4", 22.0, 79.19, 1.1), same_gpu=False)


# ---- JSON ----


def test_json_round_trips_through_the_model(tmp_path):
    for report in (full_report(), reduced_capped_report(), oom_report()):
        path = write_json(report, tmp_path / f"{report_stem(report)}.json")
        back = load_report(path)
        assert back == report
        data = json.loads(path.read_text())
        assert {"workload", "plan", "target_gpu", "environment", "cap", "measurement", "prediction", "rows",
                "verdict", "notes", "steps_run", "steps_requested", "extrapolated", "tolerances",
                "created_at"} <= set(data)


def test_report_is_frozen_and_rejects_unknown_fields(tmp_path):
    report = full_report()
    data = json.loads(report.model_dump_json())
    data["surprise"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(WanfitError, match="not a valid wanfit verify report"):
        load_report(path)
    with pytest.raises(WanfitError, match="no verify report"):
        load_report(tmp_path / "missing.json")


def test_report_records_steps_extrapolation_and_exit_code():
    r = reduced_capped_report()
    assert (r.steps_run, r.steps_requested, r.extrapolated) == (3, 50, True)
    assert r.extrapolated_figures == ["denoise time", "total time"]
    assert r.cap is not None and r.cap.target_gpu == "l40s"
    assert oom_report().exit_code == EXIT_OOM_UNEXPECTED
    assert full_report().exit_code == 0


def test_report_stem_is_a_safe_descriptive_file_name():
    assert report_stem(full_report()) == "wan2.2-ti2v-5b_1280x704x121f_50st_model-tegpu-bf16-untiled_h100"
    assert report_stem(reduced_capped_report()).endswith("_3of50st_model-tegpu-bf16-untiled_l40s-capped")


# ---- Markdown ----


def test_markdown_uses_the_users_stage_names():
    md = render_markdown(full_report())
    for name in ("Model_Initialization", "T5_Encoding", "Step_1_Loading", "Step_1_Inference", "Step_2_Inference",
                 "Step_50_Inference", "VAE_Decoding", "Total_Execution"):
        assert name in md, name
    assert "Step_2_Loading" not in md  # steady steps have no loading row
    for col in ("Time (s)", "Peak device memory (GiB)", "CPU %", "Host memory (GiB)", "SM activity (%)",
                "Compute load (s)"):
        assert col in md
    assert "## Predicted vs measured" in md and "## Verdict" in md and "## Bottleneck notes" in md
    assert "PASS" in md
    # Step 1 loading is derived (3.40 - 2.46 s) and labelled so
    assert "| Step_1_Loading † | 0.94 |" in md
    assert "derived" in md
    assert "denoise dominates" in md


def test_markdown_names_the_gpus_power_limit_and_clock_where_recorded():
    """Lent GPUs of one kind differ in speed: the report says how the card was set (older reports,
    without the fields, say nothing)."""
    report = full_report()
    env = report.environment.model_copy(update={"gpu_power_limit_w": 700.0, "gpu_max_sm_clock_mhz": 1980})
    md = render_markdown(report.model_copy(update={"environment": env}))
    assert "NVIDIA H100 80GB HBM3 (power limit 700 W, SM clock up to 1980 MHz), driver 580.159.04" in md
    assert "power limit" not in render_markdown(report)


def test_markdown_marks_extrapolation_and_the_cap_honestly():
    md = render_markdown(reduced_capped_report())
    assert "Step_4..50_Inference *" in md
    assert "Only 3 of 50 denoising steps were run" in md
    assert "denoise time, total time" in md
    assert "Total_Execution (as run, 3 steps)" in md and "Total_Execution (50 steps) *" in md
    assert "Denoising (all steps) *" in md
    assert "capping the torch allocator to 43.89 GiB" in md
    assert "Predicted on l40s (s)" in md  # the transferred time beside the local one
    assert "basis 'need'" in md and "| need |" in md
    assert "Random" in md or "random" in md


def test_markdown_of_an_oom_names_the_failure():
    md = render_markdown(oom_report())
    assert "FAILED: predicted to fit" in md and "vae_decode" in md
    assert "exit code 3" in md
    assert "not scored" in md  # the partial total


def test_markdown_of_a_two_expert_run_has_the_expert_switch():
    steps = [5.0, 4.0, 4.0, 6.5, 4.0, 4.0]
    m = measurement(workload=A14B, step_times=steps, experts=[1, 1, 1, 2, 2, 2], plan=Plan(offload="model"))
    r = build_report(m, candidate(steps=6, step_s=4.0, denoise=(21.0, 20.5), expert_switch=(2.5, 20.5)),
                     target_gpu="h100", target_memory_gib=79.19)
    md = render_markdown(r)
    assert "Expert_Switch (in step 4) † | 2.50 |" in md
    assert "Step_4_Inference [expert 2] | 4.00 |" in md
    assert "| Expert_Switch † |" in md  # in the predicted-vs-measured table


# ---- rich ----


def test_rich_tables_render():
    console = Console(record=True, width=220)
    render_rich(reduced_capped_report(), console)
    text = console.export_text()
    for piece in ("Stage breakdown", "Predicted vs measured", "Model_Initialization", "VAE_Decoding",
                  "Total_Execution", "On l40s (s)", "Step_4..50_Inference *"):
        assert piece in text, piece
    # a long run's steady steps are merged on the console; the split first step stays on its own
    console = Console(record=True, width=220)
    render_rich(full_report(), console)
    text = console.export_text()
    assert "Step_2..50_Inference (mean of 49)" in text and "Step_1_Inference" in text
    assert "Step_7_Inference" not in text


# ---- PNG ----


@pytest.mark.parametrize("make", [full_report, reduced_capped_report, oom_report])
def test_memory_plot_is_written(tmp_path, make):
    path = plot_memory(make(), tmp_path / "plots" / "memory.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_memory_plot_without_a_timeline(tmp_path):
    m = measurement(step_times=FULL, timeline=False)
    r = build_report(m, candidate(), target_gpu="h100", target_memory_gib=79.19)
    data = plot_memory(r, tmp_path / "m.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


# ---- accuracy summary ----


def test_accuracy_markdown_from_committed_reports(tmp_path):
    d = tmp_path / "verify-reports"
    for r in (full_report(), reduced_capped_report(), oom_report()):
        write_json(r, d / f"{report_stem(r)}.json")
    # one run with a known 10 % over-prediction of the VAE decode peak (49.5 vs 45.0)
    off = build_report(measurement(step_times=FULL), candidate(vae=(10.3, 49.5)), target_gpu="h100",
                       target_memory_gib=79.19)
    write_json(off, d / "zz-off.json")
    md = accuracy_markdown(d)
    assert "From 4 verify report(s)" in md
    # runs are numbered in file-name order: #1 the l4 OOM, #2 the capped l40s, #3 the full h100, #4 zz-off
    assert "| vae_decode peak | 3 | 3.5 % | +3.5 % | 10.0 % (#4) | 2 of 3 |" in md  # 10 % > the 5 % tolerance
    assert "| 4 | vae_decode peak (GiB) | 49.50 | 45.00 | +10.0 % | yes |  |" in md
    assert "| 2 | denoise time (s) | 123.94 | 123.70 | +0.2 % | yes | * extrapolated |" in md
    assert "| 2 | vae_decode peak (GiB) | 34.40 | 34.20 | +0.6 % | yes | basis need (capped) |" in md
    assert "Capped to a smaller target's memory" in md
    assert "local ones): #1, #2." in md
    assert "peaks measured: #1, #2." in md
    assert "Runs that did not finish (OOM or error; only completed stages compared): #1." in md
    assert "Predicted to fit but ran out of memory (prediction FAILED): #1." in md
    assert "| step time | 3 |" in md
    assert "prepare time" not in md  # measured only: no accuracy figure
    assert "`zz-off.json`" in md


def test_repredicted_uses_the_host_rate_a_report_or_the_caller_gives_for_offloading_runs_only():
    """The committed sequential run on the machine measured at 6.40 GB/s (by the calibrate session of
    the same device call): re-predicted at that rate, and at the calibration host's without it."""
    from wanfit.verify.summary import load_reports, repredicted

    root = Path(__file__).resolve().parents[1] / "verify-reports"
    names = ["wan2.2-ti2v-5b_1280x704x81f_2of50st_sequential-tegpu-bf16-untiled_h100.json",
             "wan2.2-ti2v-5b_960x544x121f_4of50st_none-tegpu-bf16-untiled_h100.json"]
    reports = [(p, r) for p, r in load_reports(root) if p.name in names]
    rates = dict.fromkeys(names, 6.4)
    (seq_at_rate, resident), (seq_default, _) = repredicted(reports, rates), repredicted(reports)
    assert seq_at_rate[1].host_pageable_gbps == 6.4 and resident[1].host_pageable_gbps is None
    assert seq_default[1].host_pageable_gbps is None
    assert seq_at_rate[1].prediction.step_s > 1.1 * seq_default[1].prediction.step_s
    assert seq_at_rate[1].prediction.step_s == pytest.approx(seq_at_rate[1].steady_step_s, rel=0.05)


def test_a_tiny_figure_inside_its_absolute_floor_counts_as_within_tolerance():
    """A resident A14B's expert switch: 0.03 s measured, 0 predicted is -100 % of itself but inside the
    0.5 s floor, and the summary's per-kind table says so."""
    from wanfit.verify.summary import _error_table, figures

    steps = [5.0, 4.0, 4.0, 4.03, 4.0, 4.0]
    m = measurement(workload=A14B, step_times=steps, experts=[1, 1, 1, 2, 2, 2])
    r = build_report(m, candidate(steps=6, step_s=4.0, denoise=(20.0, 20.5), expert_switch=(0.0, 20.5)),
                     target_gpu="h100", target_memory_gib=79.19)
    switch = next(f for f in figures(1, r) if f.kind == "expert_switch time")
    assert switch.error_pct == pytest.approx(-100.0) and switch.within is True
    row = next(line for line in _error_table(figures(1, r)) if line.startswith("| expert_switch time |"))
    assert row.endswith("| 1 of 1 |")


def test_accuracy_markdown_without_reports(tmp_path):
    assert "No verify reports" in accuracy_markdown(tmp_path)


# ---- plan files ----


def _plan_json(results) -> dict:
    return {"workload": WORKLOAD.model_dump(mode="json"), "safety_margin_gib": 1.0, "results": results}


def _result(gpu, plan):
    rec = None if plan is None else candidate(plan=Plan(**plan)).model_dump(mode="json")
    return {"gpu": gpu, "memory_gib": 44.99, "recommended": rec, "reason": "r", "candidates": []}


def test_load_plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_plan_json([_result("l40s", {"offload": "model", "text_encoder": "cpu",
                                                           "dit_dtype": "fp8", "vae_tiling": True})])))
    wl, plan = load_plan_file(path)
    assert wl == WORKLOAD
    assert plan == Plan(offload="model", text_encoder="cpu", dit_dtype="fp8", vae_tiling=True)


def test_load_plan_file_errors(tmp_path):
    path = tmp_path / "plan.json"
    two = _plan_json([_result("l40s", {"offload": "model"}), _result("h100", None)])
    path.write_text(json.dumps(two))
    with pytest.raises(WanfitError, match="several GPUs"):
        load_plan_file(path)
    assert load_plan_file(path, gpu="l40s")[1].offload == "model"
    with pytest.raises(WanfitError, match="recommends no plan for h100"):
        load_plan_file(path, gpu="h100")
    with pytest.raises(WanfitError, match="no result for GPU 'a100'"):
        load_plan_file(path, gpu="a100")
    path.write_text("{not json")
    with pytest.raises(WanfitError, match="is not JSON"):
        load_plan_file(path)
    path.write_text(json.dumps({"workload": {}}))
    with pytest.raises(WanfitError, match="not a `wanfit plan --format json`"):
        load_plan_file(path)
    with pytest.raises(WanfitError, match="no plan file"):
        load_plan_file(tmp_path / "missing.json")


# ---- execution guards ----


def test_run_verify_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the refusal is for machines without one")
    with pytest.raises(WanfitError) as err:
        run_verify(WORKLOAD, Plan(), "h100")
    assert "needs a CUDA GPU" in str(err.value) and "\n" not in str(err.value)


def test_run_verify_checks_the_step_count_first():
    with pytest.raises(WanfitError, match="between 1 and the job's 50 steps"):
        run_verify(WORKLOAD, Plan(), "h100", steps=60)


def test_verify_modules_import_no_heavy_libraries():
    code = ("import sys, wanfit.planner.scenarios, wanfit.verify, wanfit.measure.cap, wanfit.verify.compare, "
            "wanfit.verify.report, wanfit.verify.summary, wanfit.verify.run, wanfit.views.verify_report\n"
            "bad = [m for m in ('torch', 'matplotlib', 'diffusers', 'pynvml', 'sklearn') if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- run_verify orchestration (GPU, worker and planner replaced by stand-ins) ----


@pytest.fixture
def fake_gpu(monkeypatch):
    """An 'H100' as nvidia-smi would describe it, a planner that returns fixture candidates per GPU, and a
    worker that returns a fixture measurement: checks what run_verify asks for and builds, not a run."""
    import types

    import wanfit.measure.worker as worker
    import wanfit.verify.run as run_mod

    calls: dict = {"predict": [], "run": [], "host_rates": [], "measured_host": 0}
    monkeypatch.setattr(run_mod, "require_cuda", lambda command: None)
    monkeypatch.setattr(run_mod, "local_gpu", lambda: ("NVIDIA H100 80GB HBM3", 79.647))

    def measure_host_rates():
        from wanfit.measure.host_rate import HostRates

        calls["measured_host"] += 1
        return HostRates(calls.get("host_rate", 7.0), calls.get("d2h_rate", 1.2))

    monkeypatch.setattr(run_mod, "measure_host_rates", measure_host_rates)

    def predict_one(workload, plan, gpu, host_pageable_gbps=None, host_d2h_gbps=None):
        calls["host_rates"].append(host_pageable_gbps)
        calls.setdefault("d2h_rates", []).append(host_d2h_gbps)
        if gpu not in calls["predict"]:  # an offloading plan is predicted again at this host's rate
            calls["predict"].append(gpu)
        slow = {"h100": 1.0, "l40s": 2.5, "l4": 6.0}[gpu]
        return candidate(plan=plan, denoise=((3.4 + 49 * 2.46) * slow, 20.5), fits=gpu != "l4")

    def run_in_subprocess(workload, plan, *, steps=None, memory_cap_gib=None, checkpoint=None, wan_repo=None):
        calls["run"].append({"steps": steps, "memory_cap_gib": memory_cap_gib, "checkpoint": checkpoint})
        times = FULL if steps is None else [3.4] + [2.46] * (steps - 1)
        return measurement(workload=workload, plan=plan, step_times=times, memory_cap_gib=memory_cap_gib)

    monkeypatch.setitem(sys.modules, "wanfit.planner.api", types.SimpleNamespace(predict_one=predict_one))
    monkeypatch.setattr(worker, "run_in_subprocess", run_in_subprocess)
    return calls


def test_run_verify_on_the_target_itself_runs_uncapped(fake_gpu):
    r = run_verify(WORKLOAD, Plan(offload="model"), "h100")
    assert fake_gpu["run"] == [{"steps": None, "memory_cap_gib": None, "checkpoint": None}]
    assert fake_gpu["predict"] == ["h100"]
    assert r.same_gpu and r.cap is None and r.local_gpu == "h100"
    assert r.verdict == "pass" and r.exit_code == 0


def test_run_verify_caps_a_smaller_target_and_scores_time_locally(fake_gpu):
    r = run_verify(WORKLOAD, Plan(offload="model"), "L40S", steps=3, tolerance_memory=0.04)
    # the worker gets the target's usable memory; the cap record subtracts the run's context + baseline
    assert fake_gpu["run"] == [{"steps": 3, "memory_cap_gib": 44.988, "checkpoint": None}]
    assert fake_gpu["predict"] == ["l40s", "h100"]
    assert r.target_gpu == "l40s" and not r.same_gpu and r.local_gpu == "h100"
    assert r.cap is not None
    assert r.cap.outside_torch_gib == pytest.approx(0.6 + 0.5)
    assert r.cap.torch_budget_gib == pytest.approx(44.988 - 1.1)
    assert r.cap.local_total_gib == 79.19  # torch's total, as the run recorded it
    assert r.tolerances.memory == 0.04
    d = next(rw for rw in r.rows if rw.stage == "denoise")
    assert d.extrapolated and d.time_within is True  # scored against the h100 prediction
    assert d.target_time_s == pytest.approx((3.4 + 49 * 2.46) * 2.5)


def test_an_offloading_plans_time_is_predicted_at_this_hosts_measured_rate(fake_gpu):
    r = run_verify(WORKLOAD, Plan(offload="sequential"), "h100", steps=2)
    assert fake_gpu["measured_host"] == 1 and fake_gpu["host_rates"] == [None, 7.0]  # before and after measuring
    assert r.host_pageable_gbps == 7.0
    assert any("7.00 GB/s" in n and "measured on this host" in n for n in r.notes)


def test_the_host_rates_are_medians_of_fresh_processes_and_none_when_every_one_fails(monkeypatch):
    import types

    import wanfit.measure.host_rate as host_rate

    outputs = iter(['noise\n{"h2d_pageable_gbps": 5.2, "d2h_fresh_gbps": 1.1}\n', "not json",
                    '{"h2d_pageable_gbps": 9.9, "d2h_fresh_gbps": 1.4}', '{"h2d_pageable_gbps": 7.1}',
                    '{"h2d_pageable_gbps": 6.0, "d2h_fresh_gbps": 1.2}', '{"h2d_pageable_gbps": 8.0}'])

    def fake_run(cmd, **kwargs):
        assert cmd[1:] == ["-m", "wanfit.measure.ceilings", "--host-pageable"]
        return types.SimpleNamespace(stdout=next(outputs))

    monkeypatch.setattr(host_rate.subprocess, "run", fake_run)
    # medians of 5.2, 9.9, 7.1 and of 1.1, 1.4 (a draw without d2h, the unreadable one skipped)
    assert host_rate.measure_host_rates(4) == host_rate.HostRates(7.1, 1.25)
    assert host_rate.measure_host_rates(3, first_h2d=9.5) == host_rate.HostRates(8.0, 1.2)  # counted among them

    def failing(cmd, **kwargs):
        raise host_rate.subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(host_rate.subprocess, "run", failing)
    assert host_rate.measure_host_rates() == host_rate.HostRates(None, None)
    assert host_rate.measure_host_rates(first_h2d=6.5) == host_rate.HostRates(6.5, None)


def test_model_offloads_moves_down_are_predicted_at_this_hosts_measured_rate(fake_gpu):
    r = run_verify(WORKLOAD, Plan(offload="model"), "h100", steps=2)
    assert r.host_d2h_gbps == 1.2 and fake_gpu["d2h_rates"] == [None, 1.2]
    assert any("1.20 GB/s device-to-host" in n for n in r.notes)
    group = run_verify(WORKLOAD, Plan(offload="group"), "h100", steps=2)  # moves nothing down
    assert group.host_d2h_gbps is None


def test_a_resident_plan_measures_no_host_rate_and_a_given_rate_is_used_as_is(fake_gpu):
    resident = run_verify(WORKLOAD, Plan(), "h100", steps=2)
    assert fake_gpu["measured_host"] == 0 and resident.host_pageable_gbps is None
    given = run_verify(WORKLOAD, Plan(offload="sequential"), "h100", steps=2, host_pageable_gbps=5.5)
    assert fake_gpu["measured_host"] == 0 and given.host_pageable_gbps == 5.5 and given.host_d2h_gbps is None
    assert any("5.50 GB/s" in n and "as given" in n for n in given.notes)
    both = run_verify(WORKLOAD, Plan(offload="model"), "h100", steps=2, host_pageable_gbps=5.5, host_d2h_gbps=1.4)
    assert fake_gpu["measured_host"] == 0 and (both.host_pageable_gbps, both.host_d2h_gbps) == (5.5, 1.4)
    assert any("1.40 GB/s device-to-host" in n and "as given" in n for n in both.notes)


def test_a_given_host_to_device_rate_still_measures_model_offloads_way_down(fake_gpu):
    r = run_verify(WORKLOAD, Plan(offload="model"), "h100", steps=2, host_pageable_gbps=5.5)
    assert fake_gpu["measured_host"] == 1
    assert (r.host_pageable_gbps, r.host_d2h_gbps) == (5.5, 1.2)  # the given rate up wins; the way down measured
    assert any("1.20 GB/s device-to-host" in n and "measured on this host" in n for n in r.notes)


def test_a_host_rate_that_cannot_be_measured_keeps_the_calibration_hosts_and_says_so(fake_gpu):
    fake_gpu["host_rate"] = None
    r = run_verify(WORKLOAD, Plan(offload="group"), "h100", steps=2)
    assert r.host_pageable_gbps is None and fake_gpu["host_rates"] == [None]
    assert any("could not be measured" in n for n in r.notes)


def test_run_verify_refuses_a_larger_target_before_running(fake_gpu):
    with pytest.raises(WanfitError, match="cannot be emulated"):
        run_verify(WORKLOAD, Plan(), "h200")
    assert fake_gpu["run"] == []


def test_reports_of_different_runs_get_their_own_files(tmp_path):
    """Model keys hold dots (wan2.2-...): the written names must keep them, not cut at the first."""
    from wanfit.cli import write_verify_outputs
    from wanfit.views import verify_report

    written = [p for r in (full_report(), reduced_capped_report())
               for p in write_verify_outputs(r, tmp_path, verify_report)]
    assert len({p.name for p in written}) == 6
    assert all(p.name.startswith("wan2.2-ti2v-5b_") and p.stat().st_size > 0 for p in written)
    assert sorted(p.suffix for p in written) == [".json", ".json", ".md", ".md", ".png", ".png"]


def test_the_repredicted_runs_are_split_by_runtime_with_their_verdicts():
    """One table per runtime, headed by how many fit / out-of-memory verdicts the runs bore out: a run predicted
    to fit that ran out of memory counts against its runtime only."""
    from wanfit.verify.summary import _by_runtime

    ok = build_report(measurement(step_times=FULL), candidate(), target_gpu="h100", target_memory_gib=79.19)
    oom = oom_report()
    official = ok.model_copy(update={"plan": ok.plan.model_copy(update={"runtime": "wan"})})
    lines = _by_runtime([(Path("a.json"), ok), (Path("b.json"), oom), (Path("c.json"), official)])
    assert "#### Runtime diffusers: 2 runs, 1 of 2 fit / out-of-memory verdicts right" in lines
    assert "#### Runtime wan (the official Wan2.2 code): 1 runs, 1 of 1 fit / out-of-memory verdicts right" in lines
    wan_table = lines[lines.index("#### Runtime wan (the official Wan2.2 code): 1 runs, 1 of 1 fit / "
                                  "out-of-memory verdicts right"):]
    assert any(line.startswith("| step time | 1 |") for line in wan_table)
