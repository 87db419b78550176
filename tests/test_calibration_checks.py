"""A calibration is validated on load: finite numbers, well-shaped fits, the required models, physically
possible figures, content matching its path. Each bad file is refused through `wanfit plan` (and `wanfit
models` does not list it) in one line naming the file, what is wrong and the refit to run."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from wanfit import cli
from wanfit.model.stages.denoise import ACTIVATION, STEP
from wanfit.vocabulary.paths import shipped_calibration_dir

runner = CliRunner()
GPU, MODEL = "h100", "wan2.2-ti2v-5b"
SHIPPED = shipped_calibration_dir() / GPU / f"{MODEL}.json"


def _nan(d):
    d["models"][STEP]["coefficients"][0] = float("nan")


def _inf_intercept(d):
    d["models"][ACTIVATION]["intercept"] = float("inf")


def _inf_held_out(d):
    d["models"][STEP]["held_out"]["worst_abs_pct"] = float("-inf")


def _nan_weight(d):
    d["weights_gib"]["transformer"]["bf16"]["gib"] = float("nan")


def _short_coefficients(d):
    d["models"][STEP]["coefficients"].pop()


def _short_bounds(d):
    d["models"][STEP]["lower_bounds"].pop()


def _no_step(d):
    del d["models"][STEP]


def _no_activation(d):
    del d["models"][ACTIVATION]


def _negative_step(d):
    d["models"][STEP]["coefficients"][2] = -163.3


def _zero_weight(d):
    d["weights_gib"]["transformer"]["bf16"]["gib"] = 0.0


def _negative_context(d):
    d["context_gib"] = -0.6


def _other_gpu(d):
    d["gpu"] = "l40s"


def _other_model(d):
    d["model"] = "wan2.1-t2v-14b"


def _other_runtime(d):
    d["runtime"] = "wan"


BAD = {  # what is broken -> (how, a word the one-line reason must hold)
    "nan coefficient": (_nan, "nan"),
    "inf intercept": (_inf_intercept, "inf"),
    "inf held-out error": (_inf_held_out, "inf"),
    "nan weights": (_nan_weight, "nan"),
    "coefficients shorter than features": (_short_coefficients, "coefficients for"),
    "lower bounds shorter than features": (_short_bounds, "lower bounds for"),
    "no step-time model": (_no_step, STEP),
    "no activation model": (_no_activation, ACTIVATION),
    "negative step coefficient": (_negative_step, "below its physical bound"),
    "zero weights": (_zero_weight, "not > 0"),
    "negative context": (_negative_context, "context_gib"),
    "another gpu than its folder": (_other_gpu, "path says 'h100'"),
    "another model than its file": (_other_model, f"path says '{MODEL}'"),
    "another runtime than its folder": (_other_runtime, "path says 'diffusers'"),
}


def _broken_dir(tmp_path, how, gpu: str = GPU) -> str:
    data = {**json.loads(SHIPPED.read_text()), "gpu": gpu}
    how(data)
    (tmp_path / gpu).mkdir(parents=True)
    (tmp_path / gpu / f"{MODEL}.json").write_text(json.dumps(data))  # json writes NaN / Infinity as Python reads them
    return str(tmp_path)


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_calibration_is_refused_in_one_line_naming_the_file_and_the_refit(tmp_path, case):
    how, why = BAD[case]
    directory = _broken_dir(tmp_path, how)
    line = _one_line(runner.invoke(cli.app, ["plan", "--gpu", GPU, "--calibration-dir", directory,
                                             "--format", "json"]))
    assert f"{GPU}/{MODEL}.json" in line and why.lower() in line.lower(), line
    assert f"wanfit calibrate --fit-only --gpu {GPU} --model {MODEL} --out {directory}" in line


@pytest.mark.parametrize("case", ["nan coefficient", "no step-time model", "another gpu than its folder"])
def test_models_does_not_list_a_bad_calibration_as_available(tmp_path, case):
    def listed(how) -> list[str]:
        directory = _broken_dir(tmp_path / how.__name__, how, gpu="my-gpu")
        result = runner.invoke(cli.app, ["models", "--format", "json", "--calibration-dir", directory])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        rows = data["models"] if isinstance(data, dict) else data  # with or without a schema_version wrapper
        return {r["key"]: r for r in rows}[MODEL]["calibrations"]

    assert f"my-gpu/{MODEL}" in listed(lambda d: None)
    assert f"my-gpu/{MODEL}" not in listed(BAD[case][0])


def test_a_calibration_of_the_official_runtime_lives_in_its_runtime_folder(tmp_path):
    data = json.loads(SHIPPED.read_text())
    folder = tmp_path / GPU / "wan"
    folder.mkdir(parents=True)
    (folder / f"{MODEL}.json").write_text(json.dumps(data))  # says diffusers, sits in wan/
    line = _one_line(runner.invoke(cli.app, ["plan", "--gpu", GPU, "--runtime", "wan", "--calibration-dir",
                                             str(tmp_path), "--format", "json"]))
    assert "path says 'wan'" in line and f"--model {MODEL} --runtime wan --out {tmp_path}" in line
    (folder / f"{MODEL}.json").write_text(json.dumps({**data, "runtime": "wan"}))
    ok = runner.invoke(cli.app, ["plan", "--gpu", GPU, "--runtime", "wan", "--calibration-dir", str(tmp_path),
                                 "--format", "json"])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("command", [["plan", "--gpu", GPU, "--format", "json"], ["models", "--format", "json"]])
def test_a_calibration_dir_that_does_not_exist_is_an_error(tmp_path, monkeypatch, command):
    missing = tmp_path / "nonexistent"
    line = _one_line(runner.invoke(cli.app, [*command, "--calibration-dir", str(missing)]))
    assert f"--calibration-dir {missing} does not exist" in line
    monkeypatch.setenv("WANFIT_CALIBRATION_DIR", str(missing))
    line = _one_line(runner.invoke(cli.app, command))
    assert f"WANFIT_CALIBRATION_DIR {missing} does not exist" in line
    monkeypatch.setenv("WANFIT_CALIBRATION_DIR", str(tmp_path))
    assert runner.invoke(cli.app, command).exit_code == 0


def test_the_shipped_calibrations_pass_every_check(tmp_path):
    from wanfit.model.calibration import load_calibration

    files = [p for p in shipped_calibration_dir().glob("*/*.json") if p.name != "ceilings.json"]
    assert files
    for path in files:
        load_calibration(path)
    shutil.copy(SHIPPED, tmp_path / "renamed.json")  # content is h100/wan2.2-ti2v-5b, path is not
    with pytest.raises(Exception, match="path says"):
        load_calibration(tmp_path / "renamed.json")
