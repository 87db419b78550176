"""The `wanfit` command line through its real entry points.

Most tests run the installed console script (`wanfit` beside this Python) in a subprocess, as a user
would; a few use typer's CliRunner on `wanfit.cli.app` for speed. JSON output is parsed back and
checked field by field; bad input must give one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wanfit import cli
from wanfit.measure.local_host import local_host_ram_gib
from wanfit.planner import inputs
from wanfit.vocabulary.catalog import MODELS
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.paths import shipped_calibration_dir
from wanfit.vocabulary.workload import PlanPins

WANFIT = Path(sys.executable).parent / "wanfit"
HEAVY = ("torch", "diffusers", "transformers", "sklearn", "scipy", "matplotlib", "pynvml")
# Modules `wanfit plan` has no use for and that cost start-up time (the measurement records, the fitter); rich
# draws the table but has no business on the JSON path, which tools call in loops.
NOT_ON_PLAN_PATH = ("wanfit.vocabulary.measurement", "wanfit.model.fit")
CANDIDATE_FIELDS = {"plan", "fits", "peak_vram_gib", "headroom_gib", "step_s", "duration_s", "stages", "extrapolated",
                    "transferred_from"}
PLAN_FIELDS = {"runtime", "offload", "text_encoder", "dit_dtype", "vae_tiling", "attention", "gpus", "ulysses", "ring",
               "dit_fsdp", "t5_fsdp"}
STAGE_FIELDS = {"name", "time_s", "peak_vram_gib"}
# The GPU the shipped TI2V-5B calibration was measured on, and one it transfers to.
CALIBRATED_GPU = "h100"
SHIPPED_5B = shipped_calibration_dir() / CALIBRATED_GPU / "wan2.2-ti2v-5b.json"

runner = CliRunner()


def wanfit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script, without a GPU in sight (no nvidia-smi on PATH for it)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("WANFIT_DEBUG", "WANFIT_CALIBRATION_DIR")}
    full_env.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run([str(WANFIT), *args], capture_output=True, text=True, env=full_env, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)
    return line




@pytest.fixture(scope="module")
def cal_args(tmp_path_factory) -> list[str]:
    """No flags when the shipped H100 calibration exists (the goal: tests run against it); until it
    is committed, a calibration fitted by the planner's own code from real H100 measurements."""
    if SHIPPED_5B.is_file():
        return []
    from planner_fixtures import calibration_dir

    return ["--calibration-dir", str(calibration_dir(tmp_path_factory.mktemp("calibration")))]


# ---------------------------------------------------------------------------------------------
# Flag parsing (unit level)
# ---------------------------------------------------------------------------------------------

def test_parse_size_is_width_by_height():
    assert inputs.parse_size("1280x704") == (704, 1280)
    assert inputs.parse_size("832X480") == (480, 832)


@pytest.mark.parametrize("bad", ["1280", "1280x", "x704", "1280x704x3", "wide", "-1x5"])
def test_parse_size_rejects_garbage(bad):
    with pytest.raises(WanfitError, match="WIDTHxHEIGHT"):
        inputs.parse_size(bad)


def test_workload_defaults_are_the_models_own():
    workload, pins = inputs.build_workload(None, None, None, None, None, None, None, None)
    assert (workload.model, workload.width, workload.height, workload.frames, workload.steps) == (
        "wan2.2-ti2v-5b", 1280, 704, 121, 50)
    assert pins == PlanPins()
    a14b, _ = inputs.build_workload("wan2.2-t2v-a14b", None, None, None, None, None, None, None)
    assert (a14b.frames, a14b.steps) == (81, 40)


def test_size_and_flags_override_defaults():
    workload, _ = inputs.build_workload(None, None, None, "832x480", 361, 5, 1.0, None)
    assert (workload.width, workload.height, workload.frames, workload.steps, workload.guidance) == (
        832, 480, 361, 5, 1.0)
    with pytest.raises(WanfitError, match="not both"):
        inputs.build_workload(None, 704, None, "1280x704", None, None, None, None)


def test_scenario_sets_workload_and_pins_offload_but_flags_win():
    workload, pins = inputs.build_workload(None, None, None, None, None, None, None, "long-duration")
    assert (workload.frames, workload.steps, workload.width, workload.height) == (361, 50, 1280, 704)
    assert pins == PlanPins(offload="model")
    workload, pins = inputs.build_workload(None, None, None, None, 121, 10, None, "long-duration")
    assert (workload.frames, workload.steps) == (121, 10)
    assert inputs.plan_pins(pins, "none", None, "fp8", None) == PlanPins(offload="none", dit_dtype="fp8")
    assert inputs.plan_pins(PlanPins(), None, None, None, False).given() == {"vae_tiling": False}
    assert inputs.plan_pins(PlanPins(), None, None, None, None) == PlanPins()
    a14b, _ = inputs.build_workload("wan2.1-t2v-14b", None, None, None, None, None, None, "max-quality")
    assert (a14b.model, a14b.width, a14b.steps) == ("wan2.1-t2v-14b", 1280, 50)  # --model over the scenario's


# ---------------------------------------------------------------------------------------------
# Commands through the console script
# ---------------------------------------------------------------------------------------------

def test_help_lists_every_command():
    result = wanfit("--help")
    assert result.returncode == 0, result.stderr
    for command in ("plan", "calibrate", "verify", "gpus", "models"):
        assert command in result.stdout


def test_models_json_lists_the_catalog():
    result = wanfit("models", "--format", "json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["schema_version"] == 1
    rows = listing["models"]
    assert [r["key"] for r in rows] == list(MODELS)
    by_key = {r["key"]: r for r in rows}
    assert by_key["wan2.2-ti2v-5b"]["dit_params"] == 4_999_787_712
    assert by_key["wan2.2-ti2v-5b"]["stride"] == 32
    assert by_key["wan2.2-ti2v-5b"]["size"] == "1280x704"
    assert by_key["wan2.1-t2v-1.3b"]["stride"] == 16
    assert by_key["wan2.2-t2v-a14b"]["experts"] == 2
    for row in rows:
        assert isinstance(row["calibrations"], list)


def test_models_table_and_calibrations_column(tmp_path):
    from wanfit.model.calibration import load_calibration, save_calibration

    shipped = load_calibration(shipped_calibration_dir() / CALIBRATED_GPU / "wan2.1-t2v-1.3b.json")
    save_calibration(shipped.model_copy(update={"gpu": "my-gpu"}), tmp_path / "my-gpu" / "wan2.1-t2v-1.3b.json")
    result = wanfit("models", "--calibration-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "wan2.1-i2v-14b" in result.stdout
    assert "my-gpu" in result.stdout
    rows = json.loads(wanfit("models", "--format", "json", "--calibration-dir", str(tmp_path)).stdout)["models"]
    by_key = {r["key"]: r for r in rows}
    assert "my-gpu/wan2.1-t2v-1.3b" in by_key["wan2.1-t2v-1.3b"]["calibrations"]
    assert not any(c.startswith("my-gpu/") for c in by_key["wan2.1-t2v-14b"]["calibrations"])


def test_gpus_json_and_table():
    result = wanfit("gpus", "--format", "json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["schema_version"] == 1
    profiles = listing["gpus"]
    keys = {p["key"] for p in profiles}
    assert {"l40s", "h100", "rtx4090", "rtx6000"} <= keys
    for p in profiles:
        assert 0 < p["memory_gib"] < 200, p
    table = wanfit("gpus")
    assert table.returncode == 0, table.stderr
    assert "l40s" in table.stdout and "h100" in table.stdout


def test_plan_json_contract(cal_args):
    result = wanfit("plan", "--gpu", "l40s", "--frames", "361", "--format", "json", *cal_args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"workload", "results"} <= set(report)
    assert report["workload"]["frames"] == 361
    assert report["workload"]["model"] == "wan2.2-ti2v-5b"
    assert len(report["results"]) == 1
    gpu = report["results"][0]
    assert {"gpu", "memory_gib", "recommended", "candidates"} <= set(gpu)
    assert gpu["gpu"] == "l40s"
    assert 40 < gpu["memory_gib"] < 48  # 48 GB card, usable GiB as the driver reports it
    assert len(gpu["candidates"]) > 1
    for cand in gpu["candidates"]:
        assert set(cand) >= CANDIDATE_FIELDS
        assert set(cand["plan"]) == PLAN_FIELDS
        assert cand["peak_vram_gib"] > 0 and cand["duration_s"] > 0 and cand["step_s"] > 0
        assert isinstance(cand["fits"], bool)
        assert cand["fits"] == (cand["headroom_gib"] >= 0)
        assert cand["duration_s"] >= cand["step_s"] * report["workload"]["steps"] * 0.99
        for stage in cand["stages"]:
            assert set(stage) >= STAGE_FIELDS
    recommended = gpu["recommended"]
    assert recommended is None or recommended in gpu["candidates"]
    if recommended is not None:
        assert recommended["fits"]
        fitting = [c["duration_s"] for c in gpu["candidates"] if c["fits"]]
        assert recommended["duration_s"] == min(fitting)


def test_plan_pins_knobs_and_compares_gpus(cal_args):
    result = wanfit("plan", "--gpu", "l40s", "--gpu", CALIBRATED_GPU, "--offload", "model", "--no-vae-tiling",
                    "--size", "832x480", "--frames", "81", "--steps", "10", "--format", "json", *cal_args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["workload"]["width"], report["workload"]["height"], report["workload"]["steps"]) == (832, 480, 10)
    assert [r["gpu"] for r in report["results"]] == ["l40s", CALIBRATED_GPU]
    for gpu in report["results"]:
        assert gpu["candidates"]
        for cand in gpu["candidates"]:
            assert cand["plan"]["offload"] == "model" and cand["plan"]["vae_tiling"] is False
    # Time is transferred to the L40S, measured on the calibrated GPU.
    assert all(c["transferred_from"] for c in report["results"][0]["candidates"])
    assert not any(c["transferred_from"] for c in report["results"][1]["candidates"])

    table = wanfit("plan", "--gpu", "l40s", "--gpu", CALIBRATED_GPU, "--size", "832x480", "--frames", "81", *cal_args)
    assert table.returncode == 0, table.stderr
    assert "GPU comparison" in table.stdout
    assert "calibration:" in table.stdout
    assert "Recommended on" in table.stdout or "No plan fits" in table.stdout


def test_plan_table_highlights_the_recommendation(cal_args):
    result = wanfit("plan", "--gpu", CALIBRATED_GPU, "--scenario", "speed-preview", *cal_args)
    assert result.returncode == 0, result.stderr
    assert "★" in result.stdout
    assert "Recommended on h100" in result.stdout
    assert "GPU comparison" not in result.stdout


@pytest.mark.parametrize("command", [["plan", "--gpu", "l40s", "--format", "json"], ["plan", "--gpu", "l40s"],
                                     ["gpus"], ["models", "--format", "json"]])
def test_planner_commands_do_not_import_heavy_modules(command, cal_args):
    """`wanfit plan` (and gpus, models) must run without torch: nothing heavy may be imported on their path."""
    args = [*command, *cal_args] if command[0] == "plan" else command
    script = (
        "import sys\n"
        "from wanfit.cli import main\n"
        f"sys.argv = ['wanfit', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "else:\n"
        "    code = 0\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + ' CODE=' + str(code) + '\\n')\n"
    )
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", script], capture_output=True, text=True,
                            timeout=120)
    marker = [line for line in result.stderr.splitlines() if line.startswith("HEAVY=")]
    assert marker, result.stderr[-2000:]
    assert marker[0].startswith("HEAVY= "), marker[0]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}
    assert marker[0].endswith("CODE=0"), result.stderr[-2000:]
    if command[0] == "plan":
        assert not {m for m in imported if m in NOT_ON_PLAN_PATH}
    if command[:1] == ["plan"] and "json" in command:
        assert not {m for m in imported if m.split(".")[0] == "rich"}


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2
# ---------------------------------------------------------------------------------------------

def test_unknown_gpu_lists_close_names():
    line = assert_one_line_error(wanfit("plan", "--gpu", "l40"), "l40")
    assert "l40s" in line


def test_unknown_model_lists_close_names():
    line = assert_one_line_error(wanfit("plan", "--gpu", "l40s", "--model", "wan2.2-ti2v-5"), "unknown model")
    assert "wan2.2-ti2v-5b" in line


def test_frames_must_be_4k_plus_1():
    line = assert_one_line_error(wanfit("plan", "--gpu", "l40s", "--frames", "360"), "4k+1")
    assert "357" in line and "361" in line


def test_size_must_be_a_multiple_of_the_stride():
    line = assert_one_line_error(wanfit("plan", "--gpu", "l40s", "--size", "1280x700"), "multiple of 32")
    assert "704" in line
    assert_one_line_error(wanfit("plan", "--gpu", "l40s", "--size", "big"), "WIDTHxHEIGHT")


def test_unknown_scenario():
    assert_one_line_error(wanfit("plan", "--gpu", "l40s", "--scenario", "speed"), "unknown scenario", "speed-preview")


def test_no_gpu_given_and_none_detected():
    result = wanfit("plan", env={"PATH": str(Path(sys.executable).parent)})  # no nvidia-smi on this PATH
    assert_one_line_error(result, "--gpu")


def test_no_calibration_usable(tmp_path):
    """With no calibration anywhere (an install without its shipped data; every shipped model is
    covered, directly or through another DiT), `plan` refuses in one line that says how to get one."""
    (tmp_path / "sitecustomize.py").write_text(
        "import wanfit.vocabulary.paths as p\n"
        f"p.shipped_calibration_dir = lambda: __import__('pathlib').Path({str(tmp_path / 'none')!r})\n")
    result = wanfit("plan", "--gpu", "l40s", "--model", "wan2.1-t2v-1.3b", env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(result, "no calibration covers wan2.1-t2v-1.3b",
                          "wanfit calibrate --gpu l40s --model wan2.1-t2v-1.3b")


def test_corrupt_calibration_file(tmp_path):
    (tmp_path / CALIBRATED_GPU).mkdir()
    (tmp_path / CALIBRATED_GPU / "wan2.2-ti2v-5b.json").write_text('{"format": 1, "fits": [')
    line = assert_one_line_error(wanfit("plan", "--gpu", CALIBRATED_GPU, "--calibration-dir", str(tmp_path)))
    assert "wan2.2-ti2v-5b.json" in line


def test_calibrate_without_a_cuda_gpu(tmp_path):
    line = assert_one_line_error(wanfit("calibrate", "--gpu", "h100", "--out", str(tmp_path)))
    assert "gpu" in line.lower()
    assert not any(tmp_path.rglob("*.json"))


def test_verify_without_a_cuda_gpu(tmp_path):
    result = wanfit("verify", "--gpu", "l40s", "--run-steps", "1", "--offload", "model", "--out", str(tmp_path))
    assert_one_line_error(result)


def test_debug_variable_shows_the_traceback():
    result = wanfit("plan", "--gpu", "l40s", "--frames", "360", env={"WANFIT_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "WanfitError" in result.stderr


# ---------------------------------------------------------------------------------------------
# In-process (CliRunner): quick checks of the wiring
# ---------------------------------------------------------------------------------------------

def test_cli_runner_models_and_errors():
    ok = runner.invoke(cli.app, ["models", "--format", "json"])
    assert ok.exit_code == 0
    assert len(json.loads(ok.stdout)["models"]) == len(MODELS)
    bad = runner.invoke(cli.app, ["plan", "--gpu", "l40s", "--frames", "8"])
    assert bad.exit_code == 2
    assert "4k+1" in bad.stderr


def test_plan_file_round_trip_is_validated(tmp_path):
    broken = tmp_path / "plan.json"
    broken.write_text('{"workload": {}}')
    result = runner.invoke(cli.app, ["verify", "--plan-file", str(broken), "--gpu", "l40s"])
    assert result.exit_code == 2
    assert "wanfit plan --format json" in result.stderr


# ---------------------------------------------------------------------------------------------
# verify wiring (the run itself needs a GPU: run_verify is replaced by one returning a built report)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_verify(monkeypatch):
    """Replace run_verify; record its arguments and return a report built from constructed objects."""
    import wanfit.verify.run as verify_run
    from verify_fixtures import candidate, measurement
    from wanfit.verify.report import build_report

    calls = []

    def run_verify(workload, plan, target_gpu, steps=None, tolerance_memory=0.05, tolerance_time=0.10,
                   checkpoint=None, host_pageable_gbps=None, host_d2h_gbps=None, wan_repo=None, **options):
        calls.append({"workload": workload, "plan": plan, "target_gpu": target_gpu, "steps": steps,
                      "tolerance_memory": tolerance_memory, "tolerance_time": tolerance_time,
                      "host_pageable_gbps": host_pageable_gbps, "host_d2h_gbps": host_d2h_gbps,
                      "wan_repo": wan_repo, **options})
        step_times = [3.4] + [2.46] * (steps - 1 if steps else workload.steps - 1)
        m = measurement(workload=workload, plan=plan, step_times=step_times)
        return build_report(m, candidate(plan=plan, steps=workload.steps), target_gpu=target_gpu,
                            target_memory_gib=79.19, local_gpu=target_gpu)

    monkeypatch.setattr(verify_run, "run_verify", run_verify)
    return calls


def test_verify_writes_reports_and_exits_with_the_verdict(fake_verify, tmp_path):
    out = tmp_path / "reports"
    result = runner.invoke(cli.app, ["verify", "--gpu", "h100", "--offload", "model", "--run-steps", "3",
                                     "--tolerance-time", "0.2", "--out", str(out)])
    from wanfit.verify.report import load_report

    written = sorted(p.suffix for p in out.iterdir())
    assert written == [".json", ".md", ".png"], result.output
    report = load_report(next(out.glob("*.json")))
    assert result.exit_code == report.exit_code, result.output
    (call,) = fake_verify
    assert call["target_gpu"] == "h100" and call["steps"] == 3 and call["tolerance_time"] == 0.2
    assert call["out"] == out  # checked writable by run_verify before the GPU run
    assert call["plan"].offload == "model" and call["plan"].dit_dtype == "bf16"  # unpinned knobs: Plan defaults
    assert call["workload"].steps == 50  # the job's steps; --run-steps is how many run
    assert call["host_pageable_gbps"] is None  # measured by run_verify itself for an offloading plan
    assert next(out.glob("*.png")).read_bytes()[:4] == b"\x89PNG"
    fake_verify.clear()
    runner.invoke(cli.app, ["verify", "--gpu", "h100", "--offload", "sequential", "--run-steps", "2",
                            "--host-pageable-gbps", "6.4", "--out", str(out)])
    (call,) = fake_verify
    assert call["host_pageable_gbps"] == 6.4 and call["host_d2h_gbps"] is None
    fake_verify.clear()
    runner.invoke(cli.app, ["verify", "--gpu", "h100", "--offload", "model", "--run-steps", "2",
                            "--host-pageable-gbps", "6.4", "--host-d2h-gbps", "1.3", "--out", str(out)])
    (call,) = fake_verify
    assert (call["host_pageable_gbps"], call["host_d2h_gbps"]) == (6.4, 1.3)


def test_verify_steps_is_the_deprecated_name_of_run_steps(fake_verify, tmp_path):
    """verify's --steps (the steps run, while plan's --steps is the job's) still works, saying so in one line."""
    old = runner.invoke(cli.app, ["verify", "--gpu", "h100", "--offload", "model", "--steps", "2", "--out",
                                  str(tmp_path)])
    (call,) = fake_verify
    assert call["steps"] == 2 and call["workload"].steps == 50
    warnings = [line for line in old.stderr.splitlines() if "deprecated" in line]
    assert len(warnings) == 1 and "--run-steps" in warnings[0]
    both = runner.invoke(cli.app, ["verify", "--gpu", "h100", "--steps", "2", "--run-steps", "2"])
    assert both.exit_code == 2 and "--run-steps only" in both.stderr
    assert "--steps" not in runner.invoke(cli.app, ["verify", "--help"]).output  # hidden: --run-steps is its name


def test_verify_runs_the_official_runtime_with_its_own_baseline(fake_verify, tmp_path):
    runner.invoke(cli.app, ["verify", "--gpu", "h100", "--runtime", "wan", "--wan-repo", str(tmp_path), "--run-steps",
                            "2", "--out", str(tmp_path / "r")])
    (call,) = fake_verify
    plan = call["plan"]  # generate.py's defaults on one GPU: --offload_model True, fp32 DiT, no expandable segments
    assert (plan.runtime, plan.offload, plan.dit_dtype, plan.expandable_segments) == ("wan", "model", "fp32", False)
    assert call["wan_repo"] == tmp_path
    bad = runner.invoke(cli.app, ["verify", "--gpu", "h100", "--runtime", "wan", "--offload", "group"])
    assert bad.exit_code == 2 and "wan runtime has no offload group" in bad.output


def test_verify_recommended_runs_the_plan_plan_recommends(fake_verify, tmp_path, cal_args):
    planned = json.loads(wanfit("plan", "--gpu", "l40s", "--frames", "81", "--format", "json", *cal_args).stdout)
    recommended = planned["results"][0]["recommended"]["plan"]
    runner.invoke(cli.app, ["verify", "--gpu", "l40s", "--frames", "81", "--recommended", "--run-steps", "2",
                            "--out", str(tmp_path), *cal_args])
    (call,) = fake_verify
    assert call["plan"].knobs() == recommended
    assert call["workload"].frames == 81

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(planned))
    fake_verify.clear()
    runner.invoke(cli.app, ["verify", "--plan-file", str(plan_file), "--run-steps", "2", "--out", str(tmp_path),
                            *cal_args])
    (call,) = fake_verify
    assert call["plan"].knobs() == recommended and call["target_gpu"] == "l40s"
    assert call["workload"].model_dump() == planned["workload"]


def test_verify_flag_conflicts_are_one_line(tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text("{}")
    both = runner.invoke(cli.app, ["verify", "--recommended", "--plan-file", str(plan_file), "--gpu", "l40s"])
    assert both.exit_code == 2 and "not both" in both.stderr
    workload = runner.invoke(cli.app, ["verify", "--plan-file", str(plan_file), "--frames", "81", "--gpu", "l40s"])
    assert workload.exit_code == 2 and "--plan-file fixes the workload" in workload.stderr


def test_default_gpu_is_the_local_one_found_through_nvidia_smi(tmp_path, cal_args):
    """Without --gpu, plan asks nvidia-smi (never torch) and matches the answer to a profile."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA L40S, 46068'\n")
    fake.chmod(0o755)
    result = wanfit("plan", "--format", "json", "--frames", "81", *cal_args,
                    env={"PATH": f"{tmp_path}{os.pathsep}{Path(sys.executable).parent}"})
    assert result.returncode == 0, result.stderr
    assert [r["gpu"] for r in json.loads(result.stdout)["results"]] == ["l40s"]

    fake.write_text("#!/bin/sh\necho 'NVIDIA Mystery GPU, 12345'\n")
    unknown = wanfit("plan", *cal_args, env={"PATH": f"{tmp_path}{os.pathsep}{Path(sys.executable).parent}"})
    assert_one_line_error(unknown, "--gpu")


def test_host_ram_defaults_to_this_machines_for_the_local_gpu_only(tmp_path, cal_args):
    """Planning for the local GPU checks offloaded weights against this machine's memory; for a named GPU the
    table says host RAM was assumed unlimited."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA L40S, 46068'\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{Path(sys.executable).parent}"}
    local = wanfit("plan", "--frames", "81", *cal_args, env=env)
    assert local.returncode == 0, local.stderr
    machine = local_host_ram_gib()
    assert machine is not None and machine > 0
    assert f"host RAM: {round(machine, 1):.1f} GiB (this machine's" in local.stdout
    named = wanfit("plan", "--frames", "81", "--gpu", "l40s", *cal_args)
    assert "host RAM assumed unlimited: give --host-ram" in named.stdout
    given = wanfit("plan", "--frames", "81", "--gpu", "l40s", "--host-ram", "8", *cal_args)
    assert "host RAM: 8.0 GiB (--host-ram)" in given.stdout
    assert inputs.host_ram_source(None, ["l40s"], local_host_ram_gib) == inputs.HostRam(None)
    assert inputs.host_ram_source(None, None, local_host_ram_gib).gib == round(machine, 1)
    assert inputs.host_ram_source(None, None, lambda: None) == inputs.HostRam(None)  # nothing to read: unlimited


def test_every_json_output_has_a_schema_version(cal_args):
    plan = json.loads(wanfit("plan", "--gpu", "l40s", "--frames", "81", "--format", "json", *cal_args).stdout)
    assert plan["schema_version"] == 1
    for command in ("gpus", "models"):
        assert json.loads(wanfit(command, "--format", "json").stdout)["schema_version"] == 1


@pytest.mark.parametrize("width", ["60", "100", "200"])
def test_plan_table_at_each_width_without_color(width, cal_args):
    result = wanfit("plan", "--gpu", "l40s", "--frames", "361", *cal_args, env={"COLUMNS": width, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    assert all(len(line) <= int(width) for line in result.stdout.splitlines())
    assert "(limit)" in result.stdout and "left out" in result.stdout
    every = wanfit("plan", "--gpu", "l40s", "--frames", "361", "--all", *cal_args, env={"COLUMNS": width})
    assert "left out" not in every.stdout and every.stdout.count("│") > result.stdout.count("│")


def test_json_contract_doc_names_every_field():
    """docs/json-contract.md documents every field `plan --format json` prints (and no field that is gone)."""
    import re

    from wanfit.vocabulary.plan_report import Candidate, GpuResult, HardwareOption, PlanReport, StagePrediction
    from wanfit.vocabulary.workload import Workload

    doc = (Path(__file__).parents[1] / "docs" / "json-contract.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)`", doc, flags=re.MULTILINE))
    documented |= {name for cell in re.findall(r"^\| `(\w+)`, `(\w+)`", doc, flags=re.MULTILINE) for name in cell}
    fields = set()
    for model in (PlanReport, GpuResult, Candidate, StagePrediction, Workload, HardwareOption):
        fields |= set(model.model_fields)
    assert fields - documented == set()
    assert documented - fields == set()


def test_calibrate_fit_only_refits_stored_measurements(tmp_path):
    """--fit-only needs no GPU: it fits the measurements already in --out and writes the calibration."""
    from planner_fixtures import CEILINGS, MEASUREMENTS
    from wanfit.model.calibration import load_calibration

    gpu_dir = tmp_path / "h100"
    gpu_dir.mkdir()
    (gpu_dir / "wan2.2-ti2v-5b.measurements.jsonl").write_text(MEASUREMENTS.read_text())
    (gpu_dir / "ceilings.json").write_text(CEILINGS.read_text())
    result = wanfit("calibrate", "--gpu", "H100", "--fit-only", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = gpu_dir / "wan2.2-ti2v-5b.json"
    assert result.stdout.strip() == f"wrote {written}"
    cal = load_calibration(written)
    assert (cal.gpu, cal.model) == ("h100", "wan2.2-ti2v-5b")
    assert cal.n_measurements > 10

    missing = wanfit("calibrate", "--gpu", "h100", "--fit-only", "--model", "wan2.1-t2v-1.3b", "--out", str(tmp_path))
    assert_one_line_error(missing, "no measurements")


def test_plan_for_a_reused_pipeline_drops_init_from_every_candidate(cal_args):
    args = ["plan", "--gpu", "l40s", "--frames", "81", "--format", "json", *cal_args]
    fresh, served = (json.loads(wanfit(*a).stdout) for a in (args, [*args, "--reused-pipeline"]))
    assert fresh["reused_pipeline"] is False and served["reused_pipeline"] is True
    by_plan = {json.dumps(c["plan"], sort_keys=True): c for c in fresh["results"][0]["candidates"]}
    for cand in served["results"][0]["candidates"]:
        init = next(s for s in cand["stages"] if s["name"] == "init")
        assert init["time_s"] == 0.0
        assert cand["duration_s"] < by_plan[json.dumps(cand["plan"], sort_keys=True)]["duration_s"]
    table = wanfit("plan", "--gpu", "l40s", "--frames", "81", "--reused-pipeline", *cal_args)
    assert table.returncode == 0 and "a reused pipeline (no init)" in table.stdout


def test_plan_host_pageable_rate_times_the_offloading_plans(cal_args):
    """--host-pageable-gbps: the user's measured host rate replaces the calibration host's. A slower
    host makes every offloading plan's step slower (sequential most: it streams the DiT every
    forward) and leaves the no-offload plan as it was; the rate used is stated."""
    def steps(*extra: str) -> dict[str, float]:
        result = wanfit("plan", "--gpu", CALIBRATED_GPU, "--size", "832x480", "--frames", "41", "--text-encoder",
                        "gpu", "--dit-dtype", "bf16", "--no-vae-tiling", "--format", "json", *extra, *cal_args)
        assert result.returncode == 0, result.stderr
        cands = json.loads(result.stdout)["results"][0]["candidates"]
        return {c["plan"]["offload"]: c for c in cands}

    default, slow = steps(), steps("--host-pageable-gbps", "3")
    assert slow["none"]["step_s"] == default["none"]["step_s"]
    assert slow["sequential"]["step_s"] > 1.5 * default["sequential"]["step_s"]
    assert slow["model"]["duration_s"] > default["model"]["duration_s"]
    assert any("3.0 GB/s" in n for n in slow["sequential"]["notes"])
    assert_one_line_error(wanfit("plan", "--gpu", CALIBRATED_GPU, "--host-pageable-gbps", "0", *cal_args),
                          "positive number", "GB/s")


def test_plan_host_d2h_rate_times_model_offloads_moves_down(cal_args):
    """--host-d2h-gbps (what verify measured): model offload's moves to host memory take their bytes at
    it; plans that send nothing down are unchanged, and the rate used is stated."""
    def by_offload(*extra: str) -> dict[str, dict]:
        result = wanfit("plan", "--gpu", CALIBRATED_GPU, "--size", "832x480", "--frames", "41", "--text-encoder",
                        "gpu", "--dit-dtype", "bf16", "--no-vae-tiling", "--format", "json", *extra, *cal_args)
        assert result.returncode == 0, result.stderr
        return {c["plan"]["offload"]: c for c in json.loads(result.stdout)["results"][0]["candidates"]}

    fast, slow = by_offload("--host-d2h-gbps", "2"), by_offload("--host-d2h-gbps", "0.5")
    assert slow["model"]["duration_s"] > fast["model"]["duration_s"]
    for offload in ("none", "group", "sequential"):
        assert slow[offload]["duration_s"] == fast[offload]["duration_s"], offload
    assert any("0.50 GB/s" in n for n in slow["model"]["notes"])
    assert_one_line_error(wanfit("plan", "--gpu", CALIBRATED_GPU, "--host-d2h-gbps", "-1", *cal_args),
                          "positive number", "GB/s")


def test_the_readme_example_is_what_the_command_prints(cal_args):
    """The README's `COLUMNS=200 wanfit plan --frames 361 --gpu l40s` block, line for line (trailing spaces aside:
    rich pads a table's title to its width)."""
    if cal_args:
        pytest.skip("the example is the shipped calibration's")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    command = "$ COLUMNS=200 wanfit plan --frames 361 --gpu l40s\n"
    block = readme[readme.index(command) + len(command):]
    shown = block[:block.index("```")].splitlines()
    printed = wanfit("plan", "--frames", "361", "--gpu", "l40s", env={"COLUMNS": "200"})
    assert printed.returncode == 0, printed.stderr
    assert shown == [line.rstrip() for line in printed.stdout.splitlines()]


def test_calibrate_from_run_corrects_the_gpu_through_the_entry_point(tmp_path):
    """`calibrate --from-run` (no GPU) writes a light correction that `plan --calibration-dir` then applies and
    names; a run file without its step time is a one-line error."""
    run = {"gpu": "l40s", "workload": {"model": "wan2.2-ti2v-5b", "height": 704, "width": 1280, "frames": 121,
                                       "steps": 50},
           "plan": {"offload": "none", "text_encoder": "cpu", "dit_dtype": "bf16"}, "runtime": "diffusers",
           "step_s": 9.0, "decode_s": 120.0, "peak_allocated_gib": 40.0}
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(run))
    out = tmp_path / "cal"
    out.mkdir()
    written = wanfit("calibrate", "--gpu", "l40s", "--from-run", str(run_file), "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert (out / "l40s" / "corrections" / "wan2.2-ti2v-5b.json").is_file()
    planned = wanfit("plan", "--gpu", "l40s", "--frames", "121", "--offload", "none", "--text-encoder", "cpu",
                     "--dit-dtype", "bf16", "--no-vae-tiling", "--calibration-dir", str(out), "--format", "json")
    cand = json.loads(planned.stdout)["results"][0]["candidates"][0]
    assert cand["step_s"] == pytest.approx(9.0, rel=0.01)
    assert any("corrected by a run measured on l40s" in n for n in cand["notes"])
    del run["step_s"]
    run_file.write_text(json.dumps(run))
    assert_one_line_error(wanfit("calibrate", "--gpu", "l40s", "--from-run", str(run_file), "--out", str(out)))


def test_several_gpu_flags_of_calibrate_and_verify_through_the_entry_point(tmp_path):
    """`--gpus` on calibrate and verify: a layout no runtime has, or a refit of several-GPU points, is one line
    before anything runs; a valid layout reaches the GPU check (no CUDA here)."""
    line = assert_one_line_error(wanfit("calibrate", "--gpu", "h100", "--gpus", "2", "--fit-only", "--out",
                                        str(tmp_path)))
    assert "--fit-only" in line and "--gpus" in line
    line = assert_one_line_error(wanfit("verify", "--gpu", "h100", "--gpus", "2", "--ulysses", "3"))
    assert "ulysses x ring = gpus" in line
    line = assert_one_line_error(wanfit("verify", "--gpu", "h100", "--gpus", "2", "--frames", "41"))
    assert "cuda gpu" in line.lower()
    assert not any(tmp_path.rglob("*.json"))


def test_gpus_table_fits_the_terminal_and_says_what_it_left_out():
    narrow = wanfit("gpus", env={"COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines())
    assert "columns left out at this width" in narrow.stdout and "h100" in narrow.stdout
    wide = wanfit("gpus", env={"COLUMNS": "400"})
    assert "left out" not in wide.stdout and "all2all" in wide.stdout
