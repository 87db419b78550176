"""The runtime knob: the official Wan2.2 code's plan space, placement and moves, and predictions for it."""

import json

import pytest
from typer.testing import CliRunner

from wanfit.cli import app
from wanfit.model.weights import Moves, Weights, host_ram_gib, resident_gib, weight_moves
from wanfit.planner.advise import describe, plan_space
from wanfit.planner.api import plan_report, predict_one
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.stages import STAGES
from wanfit.vocabulary.workload import Plan, PlanPins, Workload, baseline

W = Weights(dit=10.0, text_encoder=6.0, text_encoder_host=0.0, vae=2.0, image_encoder=0.0, experts=1, dit_layers=30)
W_CPU_TE = Weights(dit=10.0, text_encoder=0.0, text_encoder_host=6.0, vae=2.0, image_encoder=0.0, experts=2,
                   dit_layers=40)


@pytest.mark.parametrize(("knobs", "words"), [
    ({"offload": "group"}, "no offload group"), ({"offload": "sequential"}, "no offload sequential"),
    ({"text_encoder": "int8"}, "no text_encoder int8"), ({"dit_dtype": "fp8"}, "no dit_dtype fp8"),
    ({"vae_tiling": True}, "no vae_tiling true"),
])
def test_the_official_runtime_refuses_knobs_it_does_not_have(knobs, words):
    with pytest.raises(WanfitError, match=words) as err:
        Plan(runtime="wan", **knobs)
    assert "\n" not in str(err.value) and "use " in str(err.value)


def test_official_plans_run_without_expandable_segments_and_start_from_generate_py_defaults():
    assert Plan(runtime="wan").expandable_segments is False
    assert Plan().expandable_segments is True
    assert baseline("wan") == Plan(runtime="wan", offload="model", text_encoder="gpu", dit_dtype="fp32")
    space = plan_space(PlanPins(runtime="wan"))
    assert len(space) == 8 and all(p.runtime == "wan" for p in space)
    assert {(p.offload, p.text_encoder, p.dit_dtype) for p in space} == {
        (o, t, d) for o in ("none", "model") for t in ("gpu", "cpu") for d in ("fp32", "bf16")}
    assert len(plan_space()) == 72 and all(p.runtime == "diffusers" for p in plan_space())
    assert describe(Plan(runtime="wan", offload="none", text_encoder="cpu", dit_dtype="bf16")) == \
        "--offload_model False --t5_cpu --convert_model_dtype"


def test_official_placement_per_stage():
    keep = Plan(runtime="wan", offload="none", dit_dtype="bf16")
    assert [resident_gib(s, keep, W) for s in STAGES] == [2.0, 8.0, 8.0, 18.0, 18.0, 18.0]
    off = Plan(runtime="wan", offload="model")
    assert [resident_gib(s, off, W) for s in STAGES] == [2.0, 8.0, 2.0, 12.0, 12.0, 2.0]
    t5_cpu = Plan(runtime="wan", offload="none", text_encoder="cpu")
    assert [resident_gib(s, t5_cpu, W_CPU_TE) for s in STAGES] == [2.0, 2.0, 2.0, 12.0, 12.0, 12.0]


def test_official_moves_and_host_memory():
    off, keep = Plan(runtime="wan", offload="model"), Plan(runtime="wan", offload="none")
    assert weight_moves("text_encode", off, W) == Moves(h2d=6.0, d2h=6.0)
    assert weight_moves("text_encode", keep, W) == Moves(h2d=6.0)
    # The DiT was built in host memory: it comes up before the first step whatever the plan says.
    assert weight_moves("denoise", keep, W) == Moves(h2d=10.0)
    assert weight_moves("vae_decode", off, W) == Moves(d2h=10.0)
    assert weight_moves("vae_decode", keep, W) == Moves()
    assert weight_moves("expert_switch", keep, W_CPU_TE) == Moves(h2d=10.0, d2h=10.0)
    # Every expert and T5 sit in host memory at init.
    assert host_ram_gib(keep, W) == 16.0 and host_ram_gib(keep, W_CPU_TE) == 26.0


def test_the_official_runtime_covers_only_wan2_2_tasks():
    with pytest.raises(WanfitError, match=r"no task for wan2\.1-t2v-1\.3b"):
        plan_report(Workload.for_model("wan2.1-t2v-1.3b"), ["l40s"], PlanPins(runtime="wan"))
    with pytest.raises(WanfitError, match=r"no task for wan2\.1-t2v-14b"):
        predict_one(Workload.for_model("wan2.1-t2v-14b"), Plan(runtime="wan"), "h100")


def test_official_plans_from_a_diffusers_calibration_say_so_and_widen(tmp_path):
    import shutil
    from pathlib import Path

    from wanfit.model.calibration import find_calibration
    from wanfit.model.predict import predict
    from wanfit.vocabulary.profiles import get_profile

    diffusers_only = tmp_path / "h100"
    diffusers_only.mkdir()
    for path in (Path(__file__).resolve().parents[1] / "calibration" / "h100").glob("*.json"):
        shutil.copy(path, diffusers_only)
    wl = Workload.for_model("wan2.2-ti2v-5b", frames=121)
    same_knobs = {"offload": "model", "text_encoder": "gpu", "dit_dtype": "bf16"}
    cal, _ = find_calibration("h100", wl.model, [tmp_path], runtime="wan")
    assert cal.runtime == "diffusers"
    h100 = get_profile("h100")
    official = predict(wl, Plan(runtime="wan", **same_knobs), cal, h100).candidate(h100.memory_gib)
    diffusers = predict(wl, Plan(**same_knobs), cal, h100).candidate(h100.memory_gib)
    assert any("wan runtime is not calibrated" in n for n in official.notes)
    assert not any("runtime is not calibrated" in n for n in diffusers.notes)

    def width(c):
        return c.duration_interval_s[1] - c.duration_interval_s[0]

    assert width(official) / official.duration_s > width(diffusers) / diffusers.duration_s + 0.5
    # The official code keeps the VAE on the GPU all run: it holds there at init; diffusers' model offload does not.
    assert official.stages[0].peak_vram_gib > diffusers.stages[0].peak_vram_gib


def test_plan_runtime_through_the_entry_point():
    result = CliRunner().invoke(app, ["plan", "--runtime", "wan", "--gpu", "l40s", "--format", "json"])
    assert result.exit_code == 0, result.output
    cands = json.loads(result.output)["results"][0]["candidates"]
    assert len(cands) == 8 and {c["plan"]["runtime"] for c in cands} == {"wan"}
    table = CliRunner().invoke(app, ["plan", "--runtime", "wan", "--gpu", "l40s"], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "generate.py --offload_model" in table.output
    bad = CliRunner().invoke(app, ["plan", "--runtime", "wan", "--dit-dtype", "fp8", "--gpu", "l40s"])
    assert bad.exit_code == 2 and "wan runtime has no dit_dtype fp8" in bad.output


def test_the_official_calibration_grid_measures_the_official_knobs_only():
    from wanfit.measure.calibrate import grid_jobs

    jobs = grid_jobs("wan2.2-ti2v-5b", runtime="wan", wan_repo=None)
    assert all(j.plan.runtime == "wan" and j.decode for j in jobs)  # generate() always decodes
    knobs = {(j.plan.offload, j.plan.text_encoder, j.plan.dit_dtype, j.plan.attention) for j in jobs}
    assert ("none", "gpu", "bf16", "auto") in knobs and ("none", "gpu", "fp32", "auto") in knobs
    assert ("model", "gpu", "bf16", "auto") in knobs and ("none", "cpu", "bf16", "auto") in knobs
    assert ("none", "gpu", "bf16", "cudnn") in knobs
    assert len({j.id for j in jobs}) == len(jobs)
    with pytest.raises(WanfitError, match=r"no wan calibration grid for wan2\.1-t2v-14b"):
        grid_jobs("wan2.1-t2v-14b", runtime="wan")


def test_official_plans_use_the_official_calibration_and_carry_it_to_other_dits():
    from wanfit.model.calibration import find_calibration

    cal, how = find_calibration("h100", "wan2.2-ti2v-5b", runtime="wan")
    assert (cal.runtime, cal.model, how) == ("wan", "wan2.2-ti2v-5b", "exact")
    cal, how = find_calibration("h100", "wan2.2-t2v-a14b", runtime="wan")
    assert (cal.runtime, cal.model, how) == ("wan", "wan2.2-t2v-a14b", "exact")
    cal, how = find_calibration("h100", "wan2.2-i2v-a14b", runtime="wan")
    assert (cal.runtime, cal.model, how) == ("wan", "wan2.2-t2v-a14b", "dit-family")
    i2v = predict_one(Workload.for_model("wan2.2-i2v-a14b"), Plan(runtime="wan"), "h100")
    assert not any("no calibration of the wan runtime" in n for n in i2v.notes)
    assert find_calibration("h100", "wan2.2-ti2v-5b")[0].runtime == "diffusers"
    c = predict_one(Workload.for_model("wan2.2-ti2v-5b"), Plan(runtime="wan"), "h100")
    assert not any("not calibrated for this DiT" in n for n in c.notes)


REPORTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "verify-reports"


def _measured(name: str):
    from wanfit.vocabulary.measurement import Measurement

    return Measurement.model_validate(json.loads((REPORTS / name).read_text())["measurement"])


def test_the_official_calibration_predicts_runs_it_never_saw():
    """Two verify runs of the official code on the H100, off the calibration grid: 161 frames (beyond the grid's
    121) without offload, and the users' long-duration case (361 frames, generate.py's defaults) capped to an
    L40S, which ran out of memory at its first step."""
    from wanfit.vocabulary.measurement import median_steady_step_s

    m = _measured("wan2.2-ti2v-5b_1280x704x161f_3of50st_none-tegpu-bf16-untiled-noexp_h100.json")
    c = predict_one(m.workload, m.plan, "h100")
    assert c.step_s == pytest.approx(median_steady_step_s(m.steps()), rel=0.05)
    stages = {s.name: s for s in c.stages}
    assert stages["vae_decode"].time_s == pytest.approx(m.stage("vae_decode").time_s, rel=0.05)
    assert stages["vae_decode"].peak_vram_gib == pytest.approx(m.stage("vae_decode").device_used_peak_gib, rel=0.03)
    assert stages["denoise"].peak_vram_gib == pytest.approx(max(s.device_used_peak_gib for s in m.steps()), rel=0.03)
    assert stages["text_encode"].peak_vram_gib == pytest.approx(m.stage("text_encode").device_used_peak_gib, rel=0.03)
    long = _measured("wan2.2-ti2v-5b_1280x704x361f_50st_model-tegpu-fp32-untiled-noexp_l40s-capped.json")
    assert long.status == "oom" and (long.failed_stage or "").startswith("step")
    assert not predict_one(long.workload, long.plan, "l40s").fits


def test_official_fp32_weights_and_capped_decodes_it_never_saw():
    """Three more official runs off the grid (2026-12-08, an H100): fp32 weights (generate.py's default) at 161
    frames, and no offload with T5 on the GPU capped to an L40S at 121 and 41 frames, both predicted short at the
    decode (45.6 and 44.7 GiB against 45.0 usable) and both out of memory there."""
    from wanfit.vocabulary.measurement import median_steady_step_s

    m = _measured("wan2.2-ti2v-5b_1280x704x161f_3of50st_none-tegpu-fp32-untiled-noexp_h100.json")
    c = predict_one(m.workload, m.plan, "h100")
    assert c.fits and c.step_s == pytest.approx(median_steady_step_s(m.steps()), rel=0.05)
    assert c.peak_vram_gib == pytest.approx(max(s.device_used_peak_gib for s in m.stages), rel=0.03)
    for frames in (121, 41):
        capped = _measured(f"wan2.2-ti2v-5b_1280x704x{frames}f_2of50st_none-tegpu-bf16-untiled-noexp_l40s-capped.json")
        assert (capped.status, capped.failed_stage) == ("oom", "vae_decode")
        verdict = predict_one(capped.workload, capped.plan, "l40s")
        assert not verdict.fits and verdict.binding_stage == "vae_decode"


def test_a_first_encode_never_saves_time():
    """The official calibration's points ran in one process: its first-encode setup fitted below zero
    (-0.17 s), which a prediction must not subtract."""
    from wanfit.model.calibration import find_calibration

    cal, _ = find_calibration("h100", "wan2.2-ti2v-5b", runtime="wan")
    assert cal.models["text_encode_first_s"].intercept < 0
    wl = Workload.for_model("wan2.2-ti2v-5b")
    plan = Plan(runtime="wan", offload="none", dit_dtype="bf16")
    first = predict_one(wl, plan, "h100")
    reused = predict_one(wl, plan, "h100", reused_pipeline=True)
    def encode_s(c):
        return next(s.time_s for s in c.stages if s.name == "text_encode")

    assert encode_s(first) == pytest.approx(encode_s(reused))


def test_the_official_code_runs_both_cfg_forwards_whatever_the_guidance():
    no_cfg = Workload.for_model("wan2.2-ti2v-5b", guidance=1.0)
    cfg = Workload.for_model("wan2.2-ti2v-5b")
    official = Plan(runtime="wan", offload="none", dit_dtype="bf16")
    assert predict_one(no_cfg, official, "h100").step_s == pytest.approx(predict_one(cfg, official, "h100").step_s)
    # diffusers skips the unconditional forward without guidance
    assert predict_one(no_cfg, Plan(), "h100").step_s < 0.6 * predict_one(cfg, Plan(), "h100").step_s


def test_a_pinned_attention_kernel_is_timed_from_the_profiles_kernel_rates():
    """The diffusers calibrations ran SDPA's own pick on the H100 (cuDNN); pinning the FA2 class there costs the
    attention work 640 / 366 times as long (the profile's measured kernel rates); pinning cuDNN costs nothing."""
    from wanfit.vocabulary.profiles import get_profile

    wl = Workload.for_model("wan2.2-ti2v-5b")
    auto, fa2, cudnn = (predict_one(wl, Plan(attention=a), "h100") for a in ("auto", "fa2", "cudnn"))
    rates = {kernel: get_profile("h100").rate(f"attention_{kernel}").value for kernel in ("fa2", "fa3", "cudnn")}
    assert cudnn.step_s == pytest.approx(auto.step_s)
    from wanfit.model.calibration import find_calibration
    from wanfit.model.features import size_features

    cal, _ = find_calibration("h100", wl.model)
    attention = cal.models["step_time"].terms(size_features(wl, cal.feature_ceilings))["attention_s"]
    assert fa2.step_s - auto.step_s == pytest.approx(attention * (rates["cudnn"] / rates["fa2"] - 1), rel=1e-3)
    assert any("measured kernel rates" in n for n in fa2.notes)
    # The official calibration measured cuDNN itself: its fit wins over the profile's rates.
    official = Plan(runtime="wan", offload="none", dit_dtype="bf16")
    pinned = predict_one(wl, official.model_copy(update={"attention": "cudnn"}), "h100")
    assert pinned.step_s < predict_one(wl, official, "h100").step_s
    assert not any("measured kernel rates" in n for n in pinned.notes)
    # A published rate (FA3 on the H100) times the kernel as a measured one does, and says so.
    fa3 = predict_one(wl, Plan(attention="fa3"), "h100")
    assert fa3.step_s == pytest.approx(auto.step_s + attention * (rates["cudnn"] / rates["fa3"] - 1), rel=1e-3)
    assert any("measured and published kernel rates" in n for n in fa3.notes)
    # A kernel the GPU does not run (FA3 outside Hopper): the runtime's own kernel, said so.
    no_fa3 = predict_one(wl, Plan(attention="fa3"), "l40s")
    assert any("fa3 does not run on l40s" in n for n in no_fa3.notes)
    assert rates["cudnn"] / rates["fa2"] > 1.7
