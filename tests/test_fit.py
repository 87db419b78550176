"""Fitting a calibration from real H100 measurements: what is fitted, how it is scored, what it keeps."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from planner_fixtures import GPU, MODEL, SHIPPED_H100, calibration, ceilings, measurements
from wanfit.model.calibration import Calibration, load_calibration, save_calibration
from wanfit.model.fit import fit_calibration
from wanfit.model.fitting import Row, fit_constant, fit_linear
from wanfit.model.predict import predict
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import Plan, Workload


def test_measured_weights_come_from_the_allocator():
    w = calibration().weights_gib
    # bf16 DiT of 4,999,787,712 params with its fp32-kept modules; fp8 storage; fp32 weights.
    assert w["transformer"]["bf16"].gib == pytest.approx(9.334, abs=0.01)
    assert w["transformer"]["fp8"].gib == pytest.approx(4.763, abs=0.01)
    assert w["transformer"]["fp32"].gib == pytest.approx(18.627, abs=0.01)
    assert w["vae"]["fp32"].gib == pytest.approx(2.625, abs=0.01)
    assert all(x.source == "measured" for x in (w["transformer"]["fp8"], w["vae"]["fp32"]))
    # int8 text encoder: resident_weights_gib reports the quantised tensors' logical bf16 size
    # (10.58 GiB); the allocator shows 6.3 GiB (Linear weights int8, embedding bf16).
    assert w["text_encoder"]["int8"].gib == pytest.approx(6.306, abs=0.05)
    assert w["text_encoder"]["bf16"].gib == pytest.approx(10.6, abs=0.06)


def test_outside_memory_from_points_that_started_a_process():
    cal = calibration()
    # A reused process sees context 0 and its own pipeline as "idle": only fresh points count.
    assert cal.context_gib == pytest.approx(0.603, abs=0.01)
    assert cal.idle_gib == pytest.approx(0.472, abs=0.01)
    assert 0.0 < cal.non_torch_gib < 0.4


def test_held_out_errors_are_reported_and_small_where_the_physics_is_simple():
    models = calibration().models
    for name in ("denoise_activation", "step_time", "decode_transient:untiled", "decode_s:untiled"):
        ho = models[name].held_out
        assert ho is not None and ho.folds >= 5
        assert "leave-one-group-out" in ho.method
    # Activation memory is linear in the hidden-state size; decode memory in frame pixels + video bytes.
    assert models["denoise_activation"].held_out.worst_abs_pct < 1.0
    assert models["decode_transient:untiled"].held_out.worst_abs < 0.1  # GiB
    assert models["step_time"].held_out.worst_abs_pct < 5.0
    assert models["decode_s:untiled"].held_out.mean_abs_pct < 5.0


def test_step_time_coefficients_are_physical():
    m = calibration().models["step_time"]
    coef = dict(zip(m.features, m.coefficients, strict=True))
    # Matmul and attention cannot beat the ceilings measured on this GPU.
    assert coef["matmul_s"] >= 1.0 and coef["attention_s"] >= 1.0
    assert all(c >= 0 for c in m.coefficients)
    assert m.intercept == 0.0


def test_held_out_is_not_training_error():
    """Four points on a line and one far off it: training error would hide the outlier's effect,
    leave-one-group-out does not."""
    rows = [Row({"x": float(x)}, 2.0 * x + 1.0, (x,)) for x in range(1, 5)] + [Row({"x": 5.0}, 20.0, (5,))]
    m = fit_linear(rows, ["x"], target="y", unit="s")
    training = max(abs(m.predict(r.x) - r.y) for r in rows)
    assert m.held_out.worst_abs > training
    assert m.held_out.folds == 5
    # One group: nothing can be held out, so no error is claimed.
    assert fit_linear(rows[:1], ["x"], target="y", unit="s").held_out is None


def test_fit_respects_lower_bounds():
    rows = [Row({"a": float(x)}, 0.5 * x, (x,)) for x in range(1, 6)]
    m = fit_linear(rows, ["a"], intercept=False, lower=[1.0], target="y", unit="s")
    assert m.coefficients[0] == pytest.approx(1.0)
    assert fit_constant([Row({}, v, (i,)) for i, v in enumerate([1.0, 2.0, 9.0])], target="y", unit="s").intercept == 2.0


def test_knob_never_measured_falls_back_and_says_so():
    without_fp8 = [m for m in measurements() if m.plan.dit_dtype != "fp8"]
    cal = fit_calibration(without_fp8, GPU, MODEL, ceilings(), 0.0, held_out=False)
    assert "step_extra:fp8" not in cal.models
    assert cal.weights_gib["transformer"]["fp8"].source == "analytic"
    assert any("step_extra:fp8" in n for n in cal.notes)
    full = predict(_wl(), Plan(dit_dtype="fp8"), calibration())
    fallback = predict(_wl(), Plan(dit_dtype="fp8"), cal)
    assert any("not calibrated" in n for n in fallback.notes)
    assert any("not measured" in n for n in fallback.notes)
    assert not any("not calibrated" in n for n in full.notes if "fp8" in n)
    # The analytic estimate is close to what was measured (1 byte per parameter vs 4.76 GiB measured).
    assert fallback.stage("denoise").allocated_gib == pytest.approx(full.stage("denoise").allocated_gib, rel=0.03)


def test_oom_points_are_kept_and_checked():
    base = next(m for m in measurements() if m.workload.frames == 121 and m.plan == Plan() and m.stage("vae_decode"))
    env = Environment(**{**base.environment.model_dump(), "memory_cap_gib": 40.0})
    stages = [s for s in base.stages if s.name in ("text_encode", "prepare", "step")]
    oom = base.model_copy(update={"id": "oom-decode", "status": "oom", "failed_stage": "vae_decode",
                                  "stages": stages, "environment": env})
    cal = fit_calibration([*measurements(), oom], GPU, MODEL, ceilings(), 0.0, held_out=False)
    assert len(cal.oom_points) == 1
    point = cal.oom_points[0]
    assert point.failed_stage == "vae_decode" and point.available_gib == 40.0
    assert point.predicted_need_gib > 40.0 and point.consistent is True


def test_no_successful_measurement_is_one_line_error():
    failed = [m.model_copy(update={"status": "error"}) for m in measurements()[:3]]
    with pytest.raises(WanfitError) as err:
        fit_calibration(failed, GPU, MODEL, ceilings(), 0.0)
    assert "\n" not in str(err.value) and "wanfit calibrate" in str(err.value)


def test_calibration_round_trips_as_plain_json(tmp_path):
    cal = calibration()
    path = tmp_path / "h100" / "wan2.2-ti2v-5b.json"
    save_calibration(cal, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["gpu"] == "h100" and data["dit_family"] == "dit-5b"
    assert data["measurements_file"] == "wan2.2-ti2v-5b.measurements.jsonl"
    step = data["models"]["step_time"]
    assert {"features", "coefficients", "intercept", "training_range", "n_points", "held_out"} <= set(step)
    assert load_calibration(path) == Calibration.model_validate(data)


@pytest.mark.parametrize("content", ['{"gpu": "h100", "models": [', '[]', '{"schema_version": 1, "gpu": "h100"}'])
def test_corrupt_calibration_is_one_line_error(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(WanfitError) as err:
        load_calibration(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "wanfit calibrate" in message


def test_plan_path_does_not_import_sklearn():
    code = ("import sys; from wanfit.planner import api, advise; from wanfit.model import predict, calibration, transfer; "
            "print(','.join(m for m in ('sklearn', 'scipy', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def _wl():
    from wanfit.vocabulary.workload import Workload

    return Workload.for_model(MODEL, frames=121, steps=50)


def test_calibrate_fits_one_step_model_over_every_dit_of_the_gpu(tmp_path):
    """`wanfit calibrate --fit-only` fits a model's step time on the baseline steps of every DiT
    measured on that GPU: the step model is shared, the rest of the calibration is the model's own."""
    from wanfit.measure.calibrate import fit_model

    alone = shipped_gpu_dir_with(tmp_path, "wan2.1-t2v-1.3b", "wan2.1-t2v-14b")
    pooled = load_calibration(fit_model("h100", "wan2.1-t2v-1.3b", tmp_path))
    assert pooled.models["step_time"].n_points > alone.models["step_time"].n_points
    assert any("wan2.1-t2v-14b" in n for n in pooled.notes)
    assert pooled.weights_gib == alone.weights_gib and pooled.n_measurements == alone.n_measurements
    other = load_calibration(fit_model("h100", "wan2.1-t2v-14b", tmp_path))
    assert other.models["step_time"].coefficients == pytest.approx(pooled.models["step_time"].coefficients)


def shipped_gpu_dir_with(tmp_path, model: str, *others: str) -> Calibration:
    """<tmp_path>/h100 holding the shipped H100 ceilings and the measurements of `model` and
    `others`; returns `model` fitted from its own measurements alone."""
    import shutil

    from wanfit.vocabulary.measurements_file import load_measurements

    gpu_dir = tmp_path / "h100"
    gpu_dir.mkdir()
    for name in ("ceilings.json", *(f"{m}.measurements.jsonl" for m in (model, *others))):
        shutil.copy(SHIPPED_H100 / name, gpu_dir / name)
    return fit_calibration(load_measurements(gpu_dir / f"{model}.measurements.jsonl"), "h100", model, None, 0.0)


def test_text_encoder_placements_not_measured_for_a_model_come_from_the_same_gpus_others(tmp_path):
    """Every Wan model has the same UMT5-XXL: the 1.3B grid measures no int8 or CPU text encoder,
    so its calibration takes them from the 5B's points on the same GPU, and says so."""
    from wanfit.measure.calibrate import fit_model

    alone = shipped_gpu_dir_with(tmp_path, "wan2.1-t2v-1.3b", "wan2.2-ti2v-5b")
    assert "text_encode_s:int8" not in alone.models and alone.weights_gib["text_encoder"]["int8"].source == "analytic"
    five = load_calibration(fit_model("h100", "wan2.2-ti2v-5b", tmp_path))
    small = load_calibration(fit_model("h100", "wan2.1-t2v-1.3b", tmp_path))
    for name in ("text_encode_s:int8", "text_encode_s:cpu", "text_encode_transient:int8"):
        assert small.models[name].intercept == pytest.approx(five.models[name].intercept)
    assert small.weights_gib["text_encoder"]["int8"] == five.weights_gib["text_encoder"]["int8"]
    assert small.models["text_encode_s:gpu"] == alone.models["text_encode_s:gpu"]  # its own placement stays its own
    assert any("UMT5-XXL" in n and "wan2.2-ti2v-5b" in n for n in small.notes)


def test_checkpoint_loads_give_the_init_time_at_the_hosts_load_rate():
    """Checkpoint-load points (one per model, every model of the GPU pooled: the load rate is the
    host's) fit init = a + b x GiB loaded; predictions then use it, random builds' init not."""
    base = next(m for m in measurements() if m.plan == Plan() and m.stage("init") is not None
                and m.resident_weights_gib)
    loaded_gib = sum(base.resident_weights_gib.values())
    stages = [s.model_copy(update={"time_s": 0.75 * loaded_gib}) if s.name == "init" else s for s in base.stages]
    point = base.model_copy(update={"id": "checkpoint-load", "source": "checkpoint", "stages": stages})
    sibling_stages = [s.model_copy(update={"time_s": 0.75 * 10.0}) if s.name == "init" else s for s in base.stages]
    sibling = base.model_copy(update={"id": "sibling-load", "source": "checkpoint", "stages": sibling_stages,
                                      "workload": base.workload.model_copy(update={"model": "wan2.1-t2v-1.3b"}),
                                      "resident_weights_gib": {"transformer": 10.0}})
    cal = fit_calibration([*measurements(), point], GPU, MODEL, ceilings(), 0.0, step_siblings=[sibling])
    model = cal.models["init_s:checkpoint"]
    assert model.n_points == 2 and model.coefficients[0] == pytest.approx(0.75, rel=1e-3)
    p = predict(base.workload, Plan(), cal)
    assert p.stage("init").time_s == pytest.approx(0.75 * loaded_gib, rel=0.02)
    assert any("a checkpoint load as measured" in n for n in p.notes)
    # the random builds' init fit leaves the checkpoint point out
    assert "init_s:checkpoint" not in calibration().models
    assert calibration().models["init_s"].n_points == cal.models["init_s"].n_points


def test_a_checkpoint_load_reads_the_stored_weights_whatever_the_plan_casts():
    """fp8 storage and an int8 text encoder are conversions after the load: the load reads the bf16
    checkpoint either way, so its predicted time does not shrink with them."""
    cal = calibration().model_copy(update={"models": {**calibration().models, "init_s:checkpoint": fit_linear(
        [Row({"weights_gib": 10.0}, 8.0, ("a",)), Row({"weights_gib": 30.0}, 12.0, ("b",))], ["weights_gib"],
        target="init", unit="s", held_out=False)}})
    wl = measurements()[0].workload
    plain = predict(wl, Plan(), cal).stage("init").time_s
    assert plain == pytest.approx(6.0 + 0.2 * (9.334 + 10.58 + 2.625), abs=0.05)
    for plan in (Plan(dit_dtype="fp8"), Plan(text_encoder="int8"), Plan(offload="model")):
        assert predict(wl, plan, cal).stage("init").time_s == pytest.approx(plain), plan.label()


def test_a_dit_without_tiled_points_borrows_the_tiled_decode_of_a_dit_with_the_same_vae():
    """Wan2.1's 1.3B and 14B share one VAE: the 1.3B's calibration (no tiled point of its own) takes the
    time and transient of the 14B's tiled decodes on the same GPU, so VAE tiling lowers its decode's
    need; the 5B's other VAE lends nothing."""
    from wanfit.vocabulary.measurements_file import load_measurements

    small, big, other = (load_measurements(SHIPPED_H100 / f"{m}.measurements.jsonl")
                         for m in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b"))
    assert not any(m.plan.vae_tiling for m in small) and any(m.plan.vae_tiling for m in big)
    alone = fit_calibration(small, GPU, "wan2.1-t2v-1.3b", ceilings(), 0.0, held_out=False, step_siblings=other)
    pooled = fit_calibration(small, GPU, "wan2.1-t2v-1.3b", ceilings(), 0.0, held_out=False,
                             step_siblings=[*big, *other])
    tiled_models = ("decode_transient:tiled", "decode_s:tiled")
    assert not any(k in alone.models for k in tiled_models)
    assert all(k in pooled.models for k in tiled_models)
    # not the reservation slack: the 14B's steps left more cached above its decode than the 1.3B's do
    assert "reserved_slack:vae_decode_tiled" not in pooled.models
    assert any("VAE tiling not measured here" in n and "wan2.1-t2v-14b" in n for n in pooled.notes)
    # only the tiled decode is borrowed: the 1.3B's own fits are the same with or without the 14B's points
    for name in ("decode_transient:untiled", "reserved_slack:vae_decode", "reserved_slack:denoise",
                 "denoise_activation"):
        assert pooled.models[name] == alone.models[name], name
    w = Workload.for_model("wan2.1-t2v-1.3b", height=720, width=1280, frames=81)
    tiled, untiled = (predict(w, Plan(vae_tiling=t), pooled).stage("vae_decode") for t in (True, False))
    assert tiled.need_gib < 0.8 * untiled.need_gib and tiled.time_s > untiled.time_s
