"""The `wanfit` command line: wiring only.

Each command turns its flags into the objects the Python API takes (Workload, PlanPins, GPU keys),
calls the API and prints the result through wanfit.views: a rich table or JSON (every JSON output carries
a `schema_version`). Known problems (WanfitError) become one line on stderr and exit code 2;
set WANFIT_DEBUG=1 for the traceback.

Heavy modules are imported inside the commands that need them: `wanfit plan` must start fast and
run without torch, so nothing here (or in what `plan` imports) pulls torch, diffusers, sklearn,
scipy or matplotlib (that last only for --plot); rich only for the table, not for --format json.
No `from __future__ import annotations` here: typer reads every command's annotations on each run, and
evaluating them from strings took 10 ms of plan's start.
"""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

# pydantic scans installed entry points for plugins at first import (~20 ms); wanfit uses none.
# Set before typer imports pydantic; a caller's own setting wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer

from wanfit.planner.inputs import (
    DEFAULT_MODEL,
    build_workload,
    deprecated_steps,
    host_ram_source,
    plan_pins,
    planner_options,
)
from wanfit.views.output import console, missing_extras, print_json, user_errors, write_verify_outputs
from wanfit.vocabulary.errors import WanfitError

if TYPE_CHECKING:
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
TOLERANCE_MEMORY, TOLERANCE_TIME = 0.05, 0.10  # verify's default allowed relative errors, as wanfit.verify.run's

# Shared options (huggingface_hub CLI style): one alias per option, reused by every command that takes it.
# Every workload/plan option defaults to None = "not given": the model's default applies and the knob is free.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help=f"Model key (`wanfit models`). (default: "
                                              f"{DEFAULT_MODEL})", show_default=False)]
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
RuntimeOpt = Annotated[Literal["diffusers", "wan"] | None, typer.Option("--runtime", show_default=False, help=(
    "diffusers | wan: the official Wan2.2 generate.py (--offload model = --offload_model True, --text-encoder cpu "
    "= --t5_cpu, --dit-dtype bf16 = --convert_model_dtype). (default: diffusers)"))]
AttentionOpt = Annotated[Literal["auto", "fa2", "fa3", "cudnn"] | None, typer.Option("--attention", help=(
    "Pin the attention kernel: fa2 | fa3 (Hopper) | cudnn | auto (the runtime's pick). (default: auto)"),
    show_default=False)]
WanRepoOpt = Annotated[Path | None, typer.Option(
    "--wan-repo", help="Runtime wan: your Wan2.2 checkout or fork (`wan` imported from it). (default: the "
    "installed wan22)", exists=True, file_okay=False, show_default=False)]
ScenarioOpt = Annotated[str | None, typer.Option(
    "--scenario", help="Preset: speed-preview | efficiency | max-quality | long-duration (explicit flags win).",
    show_default=False)]
MarginOpt = Annotated[float | None, typer.Option("--margin", help="Safety margin in GiB kept free on the GPU. "
                                                 "(default: 1)", show_default=False)]
HostRamOpt = Annotated[float | None, typer.Option("--host-ram", help="System memory in GiB available for offloaded "
                                                  "weights. (default: this machine's when planning for the local "
                                                  "GPU, else unlimited)", show_default=False)]
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
ShowAllOpt = Annotated[bool, typer.Option("--all", help="Table: every candidate plan. (default: the fitting ones, "
                                          "at most 12, and the one closest to fitting)")]
PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", help="Also write a PNG: each GPU's best plan's need and time over frame count and resolution, its "
    "usable memory as a line (needs the plot extra).", dir_okay=False, show_default=False)]

# `wanfit calibrate`'s own options.
CalibrateGpuOpt = Annotated[str, typer.Option("--gpu", "-g", help="Profile key of the local GPU (`wanfit gpus`); "
                                              "the calibration is filed under it.")]
CalibrateModelsOpt = Annotated[list[str] | None, typer.Option(
    "--model", "-m", help=f"Model to calibrate; repeatable. (default: {DEFAULT_MODEL})", show_default=False)]
CalibrationOutOpt = Annotated[Path, typer.Option("--out", help="Calibration directory (<out>/<gpu>/<model>.json).",
                                                 file_okay=False)]
QuickOpt = Annotated[bool, typer.Option("--quick", help="A smaller grid (smoke test, not for shipping).")]
ResumeOpt = Annotated[bool, typer.Option("--resume/--no-resume", help="Keep points already measured.")]
FitOnlyOpt = Annotated[bool, typer.Option("--fit-only", help="Refit the measurements already in --out; needs no GPU.")]

# `wanfit verify`'s own options.
VerifyGpuOpt = Annotated[str | None, typer.Option(
    "--gpu", "-g", help="Target GPU to verify for; a smaller target than the local GPU caps this process to its "
    "memory. (default: the local GPU)", show_default=False)]
WorkloadStepsOpt = Annotated[int | None, typer.Option(
    "--workload-steps", help="Denoising steps of the job being verified. (default: the model's/scenario's)",
    show_default=False)]
RunStepsOpt = Annotated[int | None, typer.Option(
    "--run-steps", help="Steps to actually run; fewer than the job's are extrapolated per step and marked so. "
    "(default: all)", show_default=False)]
# `verify --steps` meant --run-steps before plan's --steps (the job's steps) made the two words clash.
DeprecatedStepsOpt = Annotated[int | None, typer.Option("--steps", hidden=True, show_default=False)]
RecommendedOpt = Annotated[bool, typer.Option("--recommended", help="Verify the plan `wanfit plan` recommends for "
                                              "--gpu (flags given pin knobs as in plan).")]
PlanFileOpt = Annotated[Path | None, typer.Option(
    "--plan-file", help="A saved `wanfit plan --format json`: verify its workload and its recommended plan for "
    "--gpu.", exists=True, dir_okay=False, show_default=False)]
ToleranceMemoryOpt = Annotated[float, typer.Option("--tolerance-memory",
                                                   help="Allowed relative error of peak memory.")]
ToleranceTimeOpt = Annotated[float, typer.Option("--tolerance-time", help="Allowed relative error of time.")]
VerifyOutOpt = Annotated[Path, typer.Option("--out", help="Directory for the JSON, Markdown and PNG reports.",
                                            file_okay=False)]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", help="Local diffusers checkpoint directory (default: the catalog architecture with random "
    "weights).", exists=True, file_okay=False, show_default=False)]
VerifyHostPageableOpt = Annotated[float | None, typer.Option(
    "--host-pageable-gbps", help="This host's host-to-device rate from pageable memory in GB/s, for an offloading "
    "plan's predicted time. (default: measured here before the run)", show_default=False)]
VerifyHostD2hOpt = Annotated[float | None, typer.Option(
    "--host-d2h-gbps", help="This host's device-to-host rate into fresh pageable memory in GB/s, for a model "
    "offload plan's moves down. (default: measured here before the run)", show_default=False)]


# Flags -> API objects

def _local_host_ram_gib() -> float | None:
    """This machine's memory, read only when planning for the local GPU (the import waits until then)."""
    from wanfit.measure.local_host import local_host_ram_gib

    return local_host_ram_gib()


def resolve_gpus(gpus: list[str] | None) -> list[str]:
    """The GPUs named, else the local one's profile key (through nvidia-smi, never torch: `plan` must not
    import it)."""
    if gpus:
        return list(gpus)
    from wanfit.measure.local_gpu import local_gpu
    from wanfit.vocabulary.profiles import match_local_gpu

    found = local_gpu()
    profile = match_local_gpu(*found) if found is not None else None
    if profile is None:
        raise WanfitError("no local GPU detected (or none that wanfit has a profile for): name one with --gpu, "
                          "e.g. --gpu l40s (`wanfit gpus` lists them)")
    return [profile.key]


def plan_from_file(path: Path, gpu: str | None) -> tuple["Workload", "Plan", str]:
    """Workload, recommended plan and target GPU key from a saved `wanfit plan --format json`."""
    from wanfit.verify.run import load_plan_file

    if gpu is not None:
        from wanfit.vocabulary.profiles import get_profile

        key = get_profile(gpu).key
        return (*load_plan_file(path, key), key)
    workload, chosen = load_plan_file(path)  # checks the file holds exactly one GPU's result
    return workload, chosen, json.loads(path.read_text())["results"][0]["gpu"]


# Commands

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
    runtime: RuntimeOpt = None,
    attention: AttentionOpt = None,
    scenario: ScenarioOpt = None,
    margin: MarginOpt = None,
    host_ram: HostRamOpt = None,
    host_pageable: HostPageableOpt = None,
    host_d2h: HostD2hOpt = None,
    reused_pipeline: ReusedPipelineOpt = False,
    calibration_dir: CalibrationDirOpt = None,
    format: FormatOpt = "table",
    show_all: ShowAllOpt = False,
    plot: PlotOpt = None,
) -> None:
    """Predict peak VRAM and time of every plan on each GPU and recommend the fastest that fits."""
    from wanfit.planner.api import plan_report

    workload, scenario_pins = build_workload(model, height, width, size, frames, steps, guidance, scenario)
    pins = plan_pins(scenario_pins, offload, text_encoder, dit_dtype, vae_tiling, runtime, attention)
    if plot is not None:  # refused before any planning: a missing extra, not a PNG, no such directory
        from wanfit.views.plan_plot import check_plot_path, write_plot
        check_plot_path(plot)
    host = host_ram_source(host_ram, gpu, _local_host_ram_gib)
    options = {"reused_pipeline": reused_pipeline,
               **planner_options(margin, host.gib, calibration_dir, host_pageable, host_d2h)}
    gpus = resolve_gpus(gpu)
    report = plan_report(workload, gpus, pins, **options)
    if format == "json":
        print_json(report)
    else:
        from wanfit.views.render import render_plan_report

        render_plan_report(report, console(), host, show_all=show_all)
    if plot is not None:
        typer.echo(f"wrote {write_plot(workload, gpus, pins, options, plot)}", err=True)


@app.command()
@user_errors
def calibrate(
    gpu: CalibrateGpuOpt,
    model: CalibrateModelsOpt = None,
    out: CalibrationOutOpt = Path("calibration"),
    quick: QuickOpt = False,
    resume: ResumeOpt = True,
    fit_only: FitOnlyOpt = False,
    runtime: RuntimeOpt = None,
    wan_repo: WanRepoOpt = None,
) -> None:
    """Measure models on the local GPU over a small grid, fit, and write calibration files (needs CUDA)."""
    models = list(model) if model else [DEFAULT_MODEL]
    try:
        from wanfit.measure import calibrate as calibration
    except ModuleNotFoundError as missing:
        raise missing_extras("calibrate", "gpu", missing) from None
    try:
        if fit_only:
            from wanfit.vocabulary.profiles import get_profile

            key = get_profile(gpu).key
            written = [calibration.fit_model(key, m, out, runtime or "diffusers") for m in models]
        else:
            written = calibration.run_calibration(gpu, models, out, resume=resume, quick=quick,
                                                  runtime=runtime or "diffusers", wan_repo=wan_repo)
    except ModuleNotFoundError as missing:
        raise missing_extras("calibrate", "fit" if fit_only else "gpu", missing) from None
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
@user_errors
def verify(
    model: ModelOpt = None,
    gpu: VerifyGpuOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    size: SizeOpt = None,
    frames: FramesOpt = None,
    workload_steps: WorkloadStepsOpt = None,
    run_steps: RunStepsOpt = None,
    steps: DeprecatedStepsOpt = None,
    guidance: GuidanceOpt = None,
    offload: OffloadOpt = None,
    text_encoder: TextEncoderOpt = None,
    dit_dtype: DitDtypeOpt = None,
    vae_tiling: VaeTilingOpt = None,
    runtime: RuntimeOpt = None,
    attention: AttentionOpt = None,
    wan_repo: WanRepoOpt = None,
    scenario: ScenarioOpt = None,
    recommended: RecommendedOpt = False,
    plan_file: PlanFileOpt = None,
    tolerance_memory: ToleranceMemoryOpt = TOLERANCE_MEMORY,
    tolerance_time: ToleranceTimeOpt = TOLERANCE_TIME,
    out: VerifyOutOpt = Path("verify-reports"),
    checkpoint: CheckpointOpt = None,
    margin: MarginOpt = None,
    host_ram: HostRamOpt = None,
    host_pageable: VerifyHostPageableOpt = None,
    host_d2h: VerifyHostD2hOpt = None,
    calibration_dir: CalibrationDirOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Run one workload + plan on the local GPU, compare with the prediction, and report (needs CUDA).
    Exit code 1: a measured figure is outside tolerance; 3: a plan predicted to fit ran out of memory;
    4: the run failed; 2: bad input."""
    from wanfit.vocabulary.workload import PlanPins

    if recommended and plan_file is not None:
        raise WanfitError("give either --recommended or --plan-file, not both")
    run_steps = deprecated_steps(steps, run_steps)
    options = planner_options(margin, host_ram, calibration_dir)
    if plan_file is not None:
        if any(v is not None for v in (height, width, size, frames, workload_steps, guidance, scenario, model)):
            raise WanfitError("--plan-file fixes the workload: drop the workload flags (or drop --plan-file)")
        workload, chosen, target = plan_from_file(plan_file, gpu)
        chosen = plan_pins(PlanPins(), offload, text_encoder, dit_dtype, vae_tiling, runtime, attention).apply(chosen)
    else:
        workload, scenario_pins = build_workload(model, height, width, size, frames, workload_steps, guidance,
                                                 scenario)
        pins = plan_pins(scenario_pins, offload, text_encoder, dit_dtype, vae_tiling, runtime, attention)
        target = resolve_gpus([gpu] if gpu else None)[0]
        if recommended:
            from wanfit.planner.api import plan_report

            chosen = plan_report(workload, [target], pins, **options).results[0].recommended_plan()
        else:
            chosen = pins.apply()
    try:
        from wanfit.verify.compare import exit_code
        from wanfit.verify.run import run_verify
        from wanfit.views import verify_report
    except ModuleNotFoundError as missing:
        raise missing_extras("verify", "gpu", missing) from None
    result = run_verify(workload, chosen, target, run_steps, tolerance_memory, tolerance_time, checkpoint,
                        host_pageable, host_d2h, wan_repo, out=out, **options)
    written = write_verify_outputs(result, out, verify_report)
    if format == "json":
        print_json(result)
    else:
        verify_report.render_rich(result, console())
        for path in written:
            typer.echo(f"wrote {path}", err=True)
    raise typer.Exit(exit_code(result))


@app.command()
@user_errors
def gpus(format: FormatOpt = "table") -> None:
    """List the GPU profiles: usable memory, throughput, bandwidth and their sources."""
    from wanfit.vocabulary.plan_report import SCHEMA_VERSION
    from wanfit.vocabulary.profiles import load_profiles, profile_table_rows

    profiles = load_profiles()
    if format == "json":
        print_json({"schema_version": SCHEMA_VERSION, "gpus": [p.model_dump(mode="json") for p in profiles.values()]})
        return
    from wanfit.views.listing import rows_table

    rows = profile_table_rows(profiles)
    console().print(rows_table(rows, "GPU profiles (memory in GiB = 2^30 bytes; TFLOP/s; GB/s; W)"))


@app.command()
@user_errors
def models(format: FormatOpt = "table", calibration_dir: CalibrationDirOpt = None) -> None:
    """List the Wan models wanfit knows, their defaults, and which calibrations exist for them."""
    from wanfit.views.listing import model_rows, rows_table
    from wanfit.vocabulary.plan_report import SCHEMA_VERSION

    rows = model_rows(calibration_dir)
    if format == "json":
        print_json({"schema_version": SCHEMA_VERSION, "models": rows})
        return
    console().print(rows_table(rows, "Wan models (size WxH in pixels; calibrations: GPUs with a calibration file)"))


def main() -> None:
    """Console-script entry point (`wanfit = "wanfit.cli:main"`)."""
    app()


if __name__ == "__main__":
    main()
