"""How long `wanfit plan` takes to start and answer, for bench/accuracy.py: wall time as subprocesses,
and instructions counted by valgrind, each beside the floor (bench/plan_floor.py: the same stack
without wanfit)."""

from __future__ import annotations

import compileall
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import wanfit
from wanfit.model.calibration import save_calibration
from wanfit.model.fit import fit_calibration
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.measurement import Measurement

PLAN_REPEATS = 11  # wall-time runs of each command; the table shows their median and best
FORMATS = ("json", "table")  # `wanfit plan --format`, one column each
FLOOR_APP = Path(__file__).with_name("plan_floor.py")
FLOOR_GPU = "h100"  # the floor only parses --gpu: any key does
MILLION = 1e6
CALLGRIND_TOTAL = re.compile(r"Collected : (\d+)")  # callgrind's instruction total, on stderr


@dataclass
class PlanTiming:
    """`wanfit plan --gpu GPU` and the floor, timed on this machine."""

    gpu: str
    wall_s: dict[str, list[float]]  # "plan json", "floor json", "plan table", "floor table" -> each run's seconds
    instructions_m: dict[str, tuple[float, float]] | None  # format -> (plan, floor) millions; None: no valgrind


def time_plan(gpu: str, calibration_dir: Path | None) -> PlanTiming:
    return PlanTiming(gpu, plan_wall_times(gpu, calibration_dir), plan_instructions(gpu, calibration_dir))


def plan_wall_times(gpu: str, calibration_dir: Path | None, repeats: int = PLAN_REPEATS) -> dict[str, list[float]]:
    """Wall times (s) of `wanfit plan --gpu GPU` and of the floor, JSON and table output, as
    subprocesses run in turn (plan JSON, floor JSON, plan table, floor table, repeated): a shared VM's
    noise then falls on all four alike, and the difference is wanfit's own.

    wanfit's modules are byte-compiled first, as `pip install .` does: a checkout run with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run (about 40 ms here)."""
    compileall.compile_dir(Path(wanfit.__file__).parent, quiet=1)
    commands = {f"{who} {fmt}": (plan_command(gpu, calibration_dir, fmt) if who == "plan" else floor_command(fmt))
                for fmt in FORMATS for who in ("plan", "floor")}
    times: dict[str, list[float]] = {key: [] for key in commands}
    for _ in range(repeats):
        for key, command in commands.items():
            times[key].append(_wall_time_s(command))
    return times


def plan_instructions(gpu: str, calibration_dir: Path | None) -> dict[str, tuple[float, float]] | None:
    """{format: (wanfit plan, floor)} in millions of instructions, where valgrind is installed: unlike wall
    time on a shared VM, the count repeats from run to run, so it shows what a change to wanfit gained."""
    if shutil.which("valgrind") is None:
        return None
    return {fmt: (_instructions_m(plan_command(gpu, calibration_dir, fmt)), _instructions_m(floor_command(fmt)))
            for fmt in FORMATS}


def plan_command(gpu: str, calibration_dir: Path | None, fmt: str) -> list[str]:
    """`wanfit plan` as a user runs it: the installed console script (else the module)."""
    exe = Path(sys.executable).parent / "wanfit"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "wanfit.cli"]
    extra = ["--calibration-dir", str(calibration_dir)] if calibration_dir else []
    return [*command, "plan", "--gpu", gpu, "--format", fmt, *extra]


def floor_command(fmt: str) -> list[str]:
    return [sys.executable, str(FLOOR_APP), "plan", "--gpu", FLOOR_GPU, "--format", fmt]


def _wall_time_s(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def _instructions_m(command: list[str]) -> float:
    """Millions of instructions one run executes, counted by valgrind's callgrind."""
    run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
                         check=True, capture_output=True, text=True)
    return int(CALLGRIND_TOTAL.search(run.stderr).group(1)) / MILLION


def fitted_calibration_dir(gpu: str, model: str, ms: list[Measurement], ceilings: Ceilings | None) -> Path:
    """A temporary calibration directory, for a GPU whose calibration itself is not committed yet."""
    root = Path(tempfile.mkdtemp(prefix="wanfit-accuracy-"))
    save_calibration(fit_calibration(ms, gpu, model, ceilings, gpu_minutes=0.0), root / gpu / f"{model}.json")
    return root
