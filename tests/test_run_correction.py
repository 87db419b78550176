"""One measured run corrects a GPU (wanfit.model.run_correction.calibrate_from_run): the factors against the pure
transfer, the file it writes, predictions that use it first and say so, and every bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import wanfit.model.calibration as calibration_module
from wanfit.model.run_correction import calibrate_from_run
from wanfit.planner.api import predict_one
from wanfit.vocabulary.corrections import RunCorrection, correction_path
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import Plan, Workload

REPO = Path(__file__).resolve().parents[1]
H200_REPORT = REPO / "verify-reports" / "wan2.2-ti2v-5b_1280x704x121f_2of50st_none-tegpu-bf16-untiled_h200.json"
SIZE = {"model": "wan2.2-ti2v-5b", "width": 1280, "height": 704, "frames": 121, "steps": 50}
PLAN = {"offload": "none", "text_encoder": "gpu", "dit_dtype": "bf16", "vae_tiling": False}


@pytest.fixture(autouse=True)
def _fresh_searched_dirs():
    calibration_module._SEARCHED.clear()
    yield
    calibration_module._SEARCHED.clear()


def _small(tmp_path: Path, **fields) -> Path:
    run = {"gpu": "l40s", "workload": SIZE, "plan": PLAN, "runtime": "diffusers", "step_s": 9.0, "decode_s": 40.0,
           "peak_allocated_gib": 40.0, **fields}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    return path


def _workload() -> Workload:
    fields = dict(SIZE)
    return Workload.for_model(fields.pop("model"), **fields)


def test_a_small_run_file_corrects_the_step_and_decode_of_that_gpu(tmp_path):
    pure = predict_one(_workload(), Plan(**PLAN), "l40s", calibration_dir=tmp_path, reused_pipeline=True)
    path, correction = calibrate_from_run("l40s", _small(tmp_path), tmp_path)
    assert path == correction_path(tmp_path, "l40s", "wan2.2-ti2v-5b") and path.is_file()
    assert RunCorrection.model_validate_json(path.read_text()) == correction
    decode = next(s.time_s for s in pure.stages if s.name == "vae_decode")
    assert correction.step_factor == pytest.approx(9.0 / pure.step_s, rel=1e-3)
    assert correction.decode_factor == pytest.approx(40.0 / decode, rel=1e-3)
    assert correction.figures.predicted_step_s == pytest.approx(pure.step_s, rel=1e-4)
    assert correction.class_factors["gemm_bf16"] == correction.step_factor
    assert correction.class_factors["conv3d_vae"] == correction.decode_factor
    low, high = sorted((correction.step_factor, correction.decode_factor))
    assert low < correction.class_factors["elementwise"] < high  # its seconds in the step and in the decode
    corrected = predict_one(_workload(), Plan(**PLAN), "l40s", calibration_dir=tmp_path, reused_pipeline=True)
    assert corrected.step_s == pytest.approx(9.0, rel=1e-3)
    assert next(s.time_s for s in corrected.stages if s.name == "vae_decode") == pytest.approx(40.0, rel=1e-3)
    assert any(str(path) in n and "corrected by a run measured on l40s" in n for n in corrected.notes)
    width = corrected.duration_interval_s[1] - corrected.duration_interval_s[0]
    assert width / corrected.duration_s < (pure.duration_interval_s[1] - pure.duration_interval_s[0]) / pure.duration_s


def test_the_correction_is_solved_against_the_pure_transfer_not_compounded(tmp_path):
    first = calibrate_from_run("l40s", _small(tmp_path), tmp_path)[1]
    again = calibrate_from_run("l40s", _small(tmp_path), tmp_path)[1]
    assert (again.step_factor, again.decode_factor) == (first.step_factor, first.decode_factor)


def test_the_correction_serves_other_models_and_not_another_runtime(tmp_path):
    _, correction = calibrate_from_run("l40s", _small(tmp_path), tmp_path)
    other = Workload.for_model("wan2.1-t2v-1.3b")
    pure = predict_one(other, Plan(), "l40s", reused_pipeline=True)
    corrected = predict_one(other, Plan(), "l40s", calibration_dir=tmp_path, reused_pipeline=True)
    assert corrected.step_s == pytest.approx(pure.step_s * correction.step_factor, rel=1e-4)
    official = Plan(runtime="wan", offload="none", dit_dtype="bf16")
    assert predict_one(_workload(), official, "l40s", calibration_dir=tmp_path).step_s == pytest.approx(
        predict_one(_workload(), official, "l40s").step_s)


def test_a_verify_report_corrects_the_gpu_it_ran_on(tmp_path):
    report = json.loads(H200_REPORT.read_text())
    _, correction = calibrate_from_run("h200", H200_REPORT, tmp_path)
    assert correction.gpu == "h200" and correction.runtime == "diffusers" and correction.calibration.startswith("h100/")
    assert correction.figures.step_s == report["steady_step_s"]
    assert correction.environment["gpu_name"] == "NVIDIA H200"
    assert correction.step_factor == pytest.approx(report["steady_step_s"] / correction.figures.predicted_step_s,
                                                   rel=1e-3)
    assert 0.9 < correction.step_factor < 1.1  # the transfer was within 5 % there already


@pytest.mark.parametrize(("gpu", "make", "words"), [
    ("l40s", lambda d: d / "missing.json", "cannot read run file"),
    ("l40s", lambda d: (d / "x.json").write_text("{ not json") and d / "x.json", "is not JSON"),
    ("l40s", lambda d: (d / "x.json").write_text("[1, 2]") and d / "x.json", "holds no JSON object"),
    ("l40s", lambda d: _small(d, step_s=None), "no steady step time"),
    ("l40s", lambda d: _small(d, step_s=-3), "step_s = -3 is not a positive number"),
    ("l40s", lambda d: _small(d, workload={"model": "wan9"}), "unknown model"),
    ("l40s", lambda d: _small(d, plan={"offload": "sometimes"}), "offload"),
    ("rtx4090", lambda d: _small(d), "was measured on l40s, not rtx4090: give --gpu l40s"),
    ("h100", lambda d: _small(d, gpu="h100"), "has its own calibration"),
    ("l40s", lambda d: _small(d, step_s=900.0), "not a rate correction"),
    ("l40x", lambda d: _small(d), "unknown GPU"),
])
def test_bad_input_is_one_line_that_says_what_to_do(tmp_path, gpu, make, words):
    with pytest.raises(WanfitError) as err:
        calibrate_from_run(gpu, make(tmp_path), tmp_path)
    message = str(err.value)
    assert "\n" not in message and words in message, message


def test_a_corrupt_correction_file_is_one_line(tmp_path):
    path, _ = calibrate_from_run("l40s", _small(tmp_path), tmp_path)
    path.write_text("{}")
    with pytest.raises(WanfitError) as err:
        predict_one(_workload(), Plan(**PLAN), "l40s", calibration_dir=tmp_path)
    assert "corrupt run correction" in str(err.value) and "\n" not in str(err.value)
