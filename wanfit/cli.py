"""The `wanfit` command line: wiring only.

Each command turns its flags into the objects the Python API takes (Workload, pinned plan knobs,
GPU keys), calls the API and prints the result as a table (plan's drawn by wanfit.views.render, the
others by rich) or as JSON. Known problems
(WanfitError) become one line on stderr and exit code 2; set WANFIT_DEBUG=1 for the traceback.

Heavy modules are imported inside the commands that need them: `wanfit plan` must start fast and
run without torch, so nothing here (or in what `plan` imports) pulls torch, diffusers, sklearn,
scipy or matplotlib. No `from __future__ import annotations` here: typer reads every command's
annotations on each run, and evaluating them from strings took 10 ms of plan's start.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

# pydantic scans installed entry points for plugins at first import (~20 ms); wanfit uses none.
# Set before typer imports pydantic; a caller's own setting wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer

from wanfit.vocabulary.errors import WanfitError

if TYPE_CHECKING:
    from wanfit.vocabulary.plan_report import PlanReport
    from wanfit.vocabulary.workload import Plan, Workload

app = typer.Typer(
    name="wanfit",
    help="Will this Wan video job fit on that GPU, how long will it take, and which memory settings make it "
         "fit fastest? Memory in GiB (2^30 bytes), times in seconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Format = Literal["table", "json"]
PLAN_KNOBS = ("offload", "text_encoder", "dit_dtype", "vae_tiling")

# Shared options (huggingface_hub CLI style): one alias per option, reused by every command that takes it.
# Every workload/plan option defaults to None = "not given": the model's default applies and the knob is free.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model key (`wanfit models`). (default: wan2.2-ti2v-5b)",
                                              show_default=False)]
GpusOpt = Annotated[list[str] | None, typer.Option(
    "--gpu", "-g", help="GPU profile key or alias (`wanfit gpus`); repeat to compare GPUs. (default: the local GPU)",
    show_default=False)]
HeightOpt = Annotated[int | None, typer.Option("--height", help="Height in pixels. (default: the model's)",
                                               show_default=False)]
WidthOpt = Annotated[int | None, typer.Option("--width", help="Width in pixels. (default: the model's)",
                                              show_default=False)]
SizeOpt = Annotated[str | None, typer.Option("--size", help="WIDTHxHEIGHT in pixels, e.g. 1280x704 (instead of "
                                             "--width/--height).", show_default=False)]
FramesOpt = Annotated[int | None, typer.Option("--frames", "-f", help="Frame count, 4k+1. (default: the model's)",
                                               show_default=False)]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Denoising steps. (default: the model's)",
                                              show_default=False)]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Guidance scale; > 1 runs classifier-free "
                                                   "guidance (two DiT forwards per step). (default: the model's)",
                                                   show_default=False)]
OffloadOpt = Annotated[Literal["none", "model", "group", "sequential"] | None, typer.Option(
    "--offload", help="Pin CPU offload: none | model | group | sequential. (default: free)", show_default=False)]
TextEncoderOpt = Annotated[Literal["gpu", "cpu", "int8"] | None, typer.Option(
    "--text-encoder", help="Pin the text encoder: gpu | cpu | int8. (default: free)", show_default=False)]
DitDtypeOpt = Annotated[Literal["bf16", "fp8", "fp32"] | None, typer.Option(
    "--dit-dtype", help="Pin the DiT weight dtype: bf16 | fp8 | fp32. (default: free)", show_default=False)]
VaeTilingOpt = Annotated[bool | None, typer.Option(
    "--vae-tiling/--no-vae-tiling", help="Pin VAE tiled decoding on or off. (default: free)", show_default=False)]
ScenarioOpt = Annotated[str | None, typer.Option(
    "--scenario", help="Preset: speed-preview | efficiency | max-quality | long-duration (explicit flags win).",
    show_default=False)]
MarginOpt = Annotated[float | None, typer.Option("--margin", help="Safety margin in GiB kept free on the GPU. "
                                                 "(default: 1)", show_default=False)]
HostRamOpt = Annotated[float | None, typer.Option("--host-ram", help="System memory in GiB available for offloaded "
                                                  "weights. (default: unlimited)", show_default=False)]
HostPageableOpt = Annotated[float | None, typer.Option(
    "--host-pageable-gbps", help="This host's host-to-device rate from pageable memory in GB/s, where measured: "
    "offloading plans copy at it (lent H100 hosts ranged 6.4 to 9.2). (default: the calibration host's, scaled "
    "to the GPU's host link)", show_default=False)]
HostD2hOpt = Annotated[float | None, typer.Option(
    "--host-d2h-gbps", help="This host's device-to-host rate into fresh pageable memory in GB/s, where measured "
    "(`wanfit verify` of a model-offload plan records it): model offload sends models down at it (lent H100 hosts "
    "1.15 to 1.37). (default: the calibration host's)", show_default=False)]
ReusedPipelineOpt = Annotated[bool, typer.Option(
    "--reused-pipeline", help="Predict one more video from a process that keeps its pipeline built (a server, a "
    "batch script): no init, no first-call setup. (default: a one-video job in a fresh process)")]
CalibrationDirOpt = Annotated[Path | None, typer.Option(
    "--calibration-dir", help="Extra directory of calibrations (<dir>/<gpu>/<model>.json), searched before the "
    "shipped ones.", show_default=False, file_okay=False)]
FormatOpt = Annotated[Format, typer.Option("--format", help="Output: a rich table or JSON.")]


def _debug() -> bool:
    return os.environ.get("WANFIT_DEBUG", "") not in ("", "0")


def _one_line(error: BaseException) -> str:
    """The message a user sees for a known error: one line, no traceback."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        problems = error.errors()
        for problem in problems:  # a WanfitError raised inside a validator: its own message is the line
            inner = (problem.get("ctx") or {}).get("error")
            if isinstance(inner, WanfitError):
                return str(inner)
        first = problems[0] if problems else {"loc": (), "msg": str(error)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"invalid {error.title}{' ' + where if where else ''}: {first['msg']}{more}"
    return " ".join(str(error).split())


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Known errors -> one line on stderr and exit code 2 (a traceback only with WANFIT_DEBUG=1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            return command(*args, **kwargs)
        except (WanfitError, ValidationError) as error:
            if _debug():
                raise
            typer.echo(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(2) from None

    return wrapper


# ----------------------------------------------------------------------------------------------
# Flags -> API objects
# ----------------------------------------------------------------------------------------------

def parse_size(size: str) -> tuple[int, int]:
    """'1280x704' (WIDTHxHEIGHT) -> (height, width)."""
    parts = size.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise WanfitError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 1280x704, not '{size}'")
    width, height = (int(p) for p in parts)
    return height, width


def build_workload(model: str | None, height: int | None, width: int | None, size: str | None, frames: int | None,
                   steps: int | None, guidance: float | None, scenario: str | None) -> tuple["Workload", dict]:
    """The workload the flags describe and the plan knobs a scenario pins (explicit flags win)."""
    from wanfit.vocabulary.workload import Workload

    if size is not None:
        if height is not None or width is not None:
            raise WanfitError("give either --size WIDTHxHEIGHT or --height/--width, not both")
        height, width = parse_size(size)
    overrides = {"height": height, "width": width, "frames": frames, "steps": steps, "guidance": guidance}
    if scenario is not None:
        from wanfit.planner.scenarios import get_scenario

        preset = get_scenario(scenario)
        if model is not None and model != preset.model:
            overrides["model"] = model
        return preset.workload(**overrides), preset.pinned_plan()
    return Workload.for_model(model or "wan2.2-ti2v-5b", **overrides), {}


def pinned_knobs(scenario_pins: dict, offload: str | None, text_encoder: str | None, dit_dtype: str | None,
                 vae_tiling: bool | None) -> dict:
    """Plan knobs the user fixed: a scenario's pins, overridden by explicit flags. Unset = free."""
    given = {"offload": offload, "text_encoder": text_encoder, "dit_dtype": dit_dtype, "vae_tiling": vae_tiling}
    return {**scenario_pins, **{k: v for k, v in given.items() if v is not None}}


def detect_local_gpu() -> str | None:
    """The profile key of the local GPU, found through nvidia-smi (never torch: `plan` must not import it).
    None when there is no nvidia-smi, no GPU, or no profile matches."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    from wanfit.vocabulary.profiles import match_local_gpu

    for line in out.splitlines():
        name, _, mib = line.rpartition(",")
        try:
            total_gib = float(mib) / 1024
        except ValueError:
            continue
        profile = match_local_gpu(name.strip(), total_gib)
        if profile is not None:
            return profile.key
    return None


def resolve_gpus(gpus: list[str] | None) -> list[str]:
    if gpus:
        return list(gpus)
    local = detect_local_gpu()
    if local is None:
        raise WanfitError("no local GPU detected (or none that wanfit has a profile for): name one with --gpu, "
                          "e.g. --gpu l40s (`wanfit gpus` lists them)")
    return [local]


def make_plan_report(workload: "Workload", gpus: list[str], pinned: dict, margin: float | None, host_ram: float | None,
                     calibration_dir: Path | None, host_pageable: float | None = None,
                     host_d2h: float | None = None, reused_pipeline: bool = False) -> "PlanReport":
    from wanfit.planner.api import plan_report

    return plan_report(workload, gpus, pinned, reused_pipeline=reused_pipeline,
                       **planner_options(margin, host_ram, calibration_dir, host_pageable, host_d2h))


def planner_options(margin: float | None, host_ram: float | None, calibration_dir: Path | None,
                    host_pageable: float | None = None, host_d2h: float | None = None) -> dict[str, Any]:
    """The planner's keyword options the user gave (the API's defaults apply to the rest)."""
    options: dict[str, Any] = {"calibration_dir": calibration_dir}
    if margin is not None:
        options["safety_margin_gib"] = margin
    if host_ram is not None:
        options["host_ram_gib"] = host_ram
    if host_pageable is not None:
        options["host_pageable_gbps"] = host_pageable
    if host_d2h is not None:
        options["host_d2h_gbps"] = host_d2h
    return options


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

def console():
    """A rich console on stdout; wide enough for the candidate tables when piped to a file."""
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(width=width)


def print_json(data: Any) -> None:
    """JSON with a two-space indent; pydantic objects through their own serializer (the same text as
    json.dumps of model_dump, several times faster: 72 candidates took 13 ms in json.dumps)."""
    text = data.model_dump_json(indent=2) if hasattr(data, "model_dump_json") else json.dumps(data, indent=2)
    sys.stdout.write(text + "\n")


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------

@app.command()
@user_errors
def plan(
    model: ModelOpt = None,
    gpu: GpusOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    size: SizeOpt = None,
    frames: FramesOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    offload: OffloadOpt = None,
    text_encoder: TextEncoderOpt = None,
    dit_dtype: DitDtypeOpt = None,
    vae_tiling: VaeTilingOpt = None,
    scenario: ScenarioOpt = None,
    margin: MarginOpt = None,
    host_ram: HostRamOpt = None,
    host_pageable: HostPageableOpt = None,
    host_d2h: HostD2hOpt = None,
    reused_pipeline: ReusedPipelineOpt = False,
    calibration_dir: CalibrationDirOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Predict peak VRAM and time of every plan on each GPU and recommend the fastest that fits."""
    workload, scenario_pins = build_workload(model, height, width, size, frames, steps, guidance, scenario)
    pinned = pinned_knobs(scenario_pins, offload, text_encoder, dit_dtype, vae_tiling)
    report = make_plan_report(workload, resolve_gpus(gpu), pinned, margin, host_ram, calibration_dir, host_pageable,
                              host_d2h, reused_pipeline)
    if format == "json":
        print_json(report)
        return
    from wanfit.views.render import render_plan_report
    from wanfit.views.terminal import Terminal

    sys.stdout.write(render_plan_report(report, Terminal.detect()))


@app.command()
@user_errors
def calibrate(
    gpu: Annotated[str, typer.Option("--gpu", "-g", help="Profile key of the local GPU (`wanfit gpus`); the "
                                     "calibration is filed under it.")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to calibrate; repeatable. "
                                                    "(default: wan2.2-ti2v-5b)", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Calibration directory (<out>/<gpu>/<model>.json).",
                                      file_okay=False)] = Path("calibration"),
    quick: Annotated[bool, typer.Option("--quick", help="A smaller grid (smoke test, not for shipping).")] = False,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Keep points already measured.")] = True,
    fit_only: Annotated[bool, typer.Option("--fit-only", help="Refit the measurements already in --out; "
                                           "needs no GPU.")] = False,
) -> None:
    """Measure models on the local GPU over a small grid, fit, and write calibration files (needs CUDA)."""
    models = list(model) if model else ["wan2.2-ti2v-5b"]
    try:
        from wanfit.measure import calibrate as calibration
    except ModuleNotFoundError as missing:
        raise WanfitError(f"`wanfit calibrate` needs the GPU extras ({missing.name} is missing): "
                          "pip install 'wanfit[gpu]'") from None
    try:
        if fit_only:
            from wanfit.vocabulary.profiles import get_profile

            key = get_profile(gpu).key
            written = [calibration.fit_model(key, m, out) for m in models]
        else:
            written = calibration.run_calibration(gpu, models, out, resume=resume, quick=quick)
    except ModuleNotFoundError as missing:
        extra = "fit" if fit_only else "gpu"
        raise WanfitError(f"`wanfit calibrate` needs the {extra} extras ({missing.name} is missing): "
                          f"pip install 'wanfit[{extra}]'") from None
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
@user_errors
def verify(
    model: ModelOpt = None,
    gpu: Annotated[str | None, typer.Option("--gpu", "-g", help="Target GPU to verify for; a smaller target than "
                                            "the local GPU caps this process to its memory. (default: the local GPU)",
                                            show_default=False)] = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    size: SizeOpt = None,
    frames: FramesOpt = None,
    workload_steps: Annotated[int | None, typer.Option(
        "--workload-steps", help="Denoising steps of the job being verified. (default: the model's/scenario's)",
        show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Steps to actually run; fewer than the job's are extrapolated per step and marked so. "
        "(default: all)", show_default=False)] = None,
    guidance: GuidanceOpt = None,
    offload: OffloadOpt = None,
    text_encoder: TextEncoderOpt = None,
    dit_dtype: DitDtypeOpt = None,
    vae_tiling: VaeTilingOpt = None,
    scenario: ScenarioOpt = None,
    recommended: Annotated[bool, typer.Option("--recommended", help="Verify the plan `wanfit plan` recommends for "
                                              "--gpu (flags given pin knobs as in plan).")] = False,
    plan_file: Annotated[Path | None, typer.Option("--plan-file", help="A saved `wanfit plan --format json`: verify "
                                                   "its workload and its recommended plan for --gpu.",
                                                   exists=True, dir_okay=False, show_default=False)] = None,
    tolerance_memory: Annotated[float, typer.Option("--tolerance-memory", help="Allowed relative error of peak "
                                                    "memory.")] = 0.05,
    tolerance_time: Annotated[float, typer.Option("--tolerance-time", help="Allowed relative error of "
                                                  "time.")] = 0.10,
    out: Annotated[Path, typer.Option("--out", help="Directory for the JSON, Markdown and PNG reports.",
                                      file_okay=False)] = Path("verify-reports"),
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Local diffusers checkpoint directory "
                                                    "(default: the catalog architecture with random weights).",
                                                    exists=True, file_okay=False, show_default=False)] = None,
    margin: MarginOpt = None,
    host_ram: HostRamOpt = None,
    host_pageable: Annotated[float | None, typer.Option(
        "--host-pageable-gbps", help="This host's host-to-device rate from pageable memory in GB/s, for an "
        "offloading plan's predicted time. (default: measured here before the run)", show_default=False)] = None,
    host_d2h: Annotated[float | None, typer.Option(
        "--host-d2h-gbps", help="This host's device-to-host rate into fresh pageable memory in GB/s, for a model "
        "offload plan's moves down. (default: measured here before the run)", show_default=False)] = None,
    calibration_dir: CalibrationDirOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Run one workload + plan on the local GPU, compare with the prediction, and report (needs CUDA).
    Exit code 1: a measured figure is outside tolerance; 3: a plan predicted to fit ran out of memory;
    4: the run failed; 2: bad input."""
    if recommended and plan_file is not None:
        raise WanfitError("give either --recommended or --plan-file, not both")
    if plan_file is not None:
        given = [height, width, size, frames, workload_steps, guidance, scenario, model]
        if any(v is not None for v in given):
            raise WanfitError("--plan-file fixes the workload: drop the workload flags (or drop --plan-file)")
        workload, chosen, target = plan_from_file(plan_file, gpu)
        chosen = chosen.model_copy(update=pinned_knobs({}, offload, text_encoder, dit_dtype, vae_tiling))
    else:
        workload, scenario_pins = build_workload(model, height, width, size, frames, workload_steps, guidance,
                                                 scenario)
        pinned = pinned_knobs(scenario_pins, offload, text_encoder, dit_dtype, vae_tiling)
        target = resolve_gpus([gpu] if gpu else None)[0]
        if recommended:
            chosen = recommended_plan(make_plan_report(workload, [target], pinned, margin, host_ram,
                                                       calibration_dir))
        else:
            from wanfit.vocabulary.workload import Plan

            chosen = Plan(**pinned)
    try:
        from wanfit.verify import report as verify_report
        from wanfit.verify.compare import exit_code
        from wanfit.verify.run import run_verify
    except ModuleNotFoundError as missing:
        raise WanfitError(f"`wanfit verify` needs the GPU extras ({missing.name} is missing): "
                          "pip install 'wanfit[gpu]'") from None
    result = run_verify(workload, chosen, target, steps, tolerance_memory, tolerance_time, checkpoint,
                        host_pageable, host_d2h, **planner_options(margin, host_ram, calibration_dir))
    written = write_verify_outputs(result, out, verify_report)
    if format == "json":
        print_json(result)
    else:
        verify_report.render_rich(result, console())
        for path in written:
            typer.echo(f"wrote {path}", err=True)
    raise typer.Exit(exit_code(result))


def plan_from_file(path: Path, gpu: str | None) -> tuple["Workload", "Plan", str]:
    """Workload, recommended plan and target GPU key from a saved `wanfit plan --format json`."""
    from wanfit.verify.run import load_plan_file

    if gpu is not None:
        from wanfit.vocabulary.profiles import get_profile

        key = get_profile(gpu).key
        return (*load_plan_file(path, key), key)
    workload, chosen = load_plan_file(path)  # checks the file holds exactly one GPU's result
    return workload, chosen, json.loads(path.read_text())["results"][0]["gpu"]


def recommended_plan(report: "PlanReport") -> "Plan":
    result = report.results[0]
    if result.recommended is None:
        raise WanfitError(f"no plan is predicted to fit {result.gpu}: {result.reason}")
    return result.recommended.as_plan()


def write_verify_outputs(result: Any, out: Path, verify_report: Any) -> list[Path]:
    """The verify report as JSON, Markdown and a PNG memory plot under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    # Not Path.with_suffix: the stem holds dots (wan2.2-...), which it would cut at.
    stem = verify_report.report_stem(result)
    json_path, md_path, png_path = (out / f"{stem}{ext}" for ext in (".json", ".md", ".png"))
    verify_report.write_json(result, json_path)
    md_path.write_text(verify_report.render_markdown(result))
    verify_report.plot_memory(result, png_path)
    return [json_path, md_path, png_path]


@app.command()
@user_errors
def gpus(format: FormatOpt = "table") -> None:
    """List the GPU profiles: usable memory, throughput, bandwidth and their sources."""
    from wanfit.vocabulary.profiles import load_profiles, profile_table_rows

    profiles = load_profiles()
    if format == "json":
        print_json([p.model_dump(mode="json") for p in profiles.values()])
        return
    from wanfit.views.listing import rows_table

    rows = profile_table_rows(profiles)
    console().print(rows_table(rows, "GPU profiles (memory in GiB = 2^30 bytes; TFLOP/s; GB/s; W)"))


@app.command()
@user_errors
def models(format: FormatOpt = "table", calibration_dir: CalibrationDirOpt = None) -> None:
    """List the Wan models wanfit knows, their defaults, and which calibrations exist for them."""
    from wanfit.views.listing import model_rows, rows_table

    rows = model_rows(calibration_dir)
    if format == "json":
        print_json(rows)
        return
    console().print(rows_table(rows, "Wan models (size WxH in pixels; calibrations: GPUs with a calibration file)"))


def main() -> None:
    """Console-script entry point (`wanfit = "wanfit.cli:main"`)."""
    app()


if __name__ == "__main__":
    main()
