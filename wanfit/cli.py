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
from typing import TYPE_CHECKING

# pydantic scans installed entry points for plugins at first import (~20 ms); wanfit uses none.
# Set before typer imports pydantic; a caller's own setting wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer

from wanfit.planner.inputs import (
    DEFAULT_MODEL,
    build_workload,
    deprecated_steps,
    host_ram_source,
    parse_gpu_counts,
    plan_pins,
    planner_options,
)
from wanfit.views.options import (  # the option declarations the commands below take
    TOLERANCE_MEMORY,
    TOLERANCE_TIME,
    AttentionOpt,
    CalibrateGpuOpt,
    CalibrateModelsOpt,
    CalibrationDirOpt,
    CalibrationOutOpt,
    CheckpointOpt,
    DeprecatedStepsOpt,
    DitDtypeOpt,
    DitFsdpOpt,
    FitOnlyOpt,
    FormatOpt,
    FramesOpt,
    FromRunOpt,
    GpuCountOpt,
    GpuCountsOpt,
    GpusOpt,
    GuidanceOpt,
    HeightOpt,
    HostD2hOpt,
    HostPageableOpt,
    HostRamOpt,
    MarginOpt,
    ModelOpt,
    OffloadOpt,
    PlanFileOpt,
    PlotOpt,
    QuickOpt,
    RecommendedOpt,
    ResumeOpt,
    ReusedPipelineOpt,
    RingOpt,
    RunStepsOpt,
    RuntimeOpt,
    ScenarioOpt,
    ShowAllOpt,
    SizeOpt,
    StepsOpt,
    T5FsdpOpt,
    TextEncoderOpt,
    ToleranceMemoryOpt,
    ToleranceTimeOpt,
    UlyssesOpt,
    VaeTilingOpt,
    VerifyGpuOpt,
    VerifyHostD2hOpt,
    VerifyHostPageableOpt,
    VerifyOutOpt,
    WanRepoOpt,
    WidthOpt,
    WorkloadStepsOpt,
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
    gpu_counts: GpuCountsOpt = None,
    ulysses: UlyssesOpt = None,
    ring: RingOpt = None,
    dit_fsdp: DitFsdpOpt = None,
    t5_fsdp: T5FsdpOpt = None,
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
    counts = parse_gpu_counts(gpu_counts)
    layout = {"ulysses": ulysses, "ring": ring, "dit_fsdp": dit_fsdp, "t5_fsdp": t5_fsdp}
    pins = plan_pins(scenario_pins, offload, text_encoder, dit_dtype, vae_tiling, runtime, attention,
                     gpus=counts[0] if counts and len(counts) == 1 else None, **layout)
    if plot is not None:  # refused before any planning: a missing extra, not a PNG, no such directory
        from wanfit.views.plan_plot import check_plot_path, write_plot
        check_plot_path(plot)
    host = host_ram_source(host_ram, gpu, _local_host_ram_gib)
    options = {"reused_pipeline": reused_pipeline,
               **planner_options(margin, host.gib, calibration_dir, host_pageable, host_d2h)}
    gpus = resolve_gpus(gpu)
    report = plan_report(workload, gpus, pins, gpu_counts=counts, **options)
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
    from_run: FromRunOpt = None,
    runtime: RuntimeOpt = None,
    wan_repo: WanRepoOpt = None,
    gpu_count: GpuCountOpt = None,
) -> None:
    """Measure models on the local GPU over a small grid, fit, and write calibration files (needs CUDA); or
    correct a GPU from one run you have (--from-run, no GPU)."""
    if from_run is not None:
        from wanfit.model.run_correction import calibrate_from_run

        path, correction = calibrate_from_run(gpu, from_run, out)
        typer.echo(f"wrote {path}: step x{correction.step_factor:.3g}, decode x{correction.decode_factor}; "
                   f"`wanfit plan` reads it with --calibration-dir {out} (or WANFIT_CALIBRATION_DIR={out})")
        return
    models = list(model) if model else [DEFAULT_MODEL]
    gpus = gpu_count or 1
    if gpus > 1 and fit_only:
        raise WanfitError("--fit-only refits one GPU's stage models: several-GPU points (--gpus N) are measured, "
                          "not fitted; drop one of the two")
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
                                                  runtime=runtime or "diffusers", wan_repo=wan_repo, gpus=gpus)
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
    gpu_count: GpuCountOpt = None,
    ulysses: UlyssesOpt = None,
    ring: RingOpt = None,
    dit_fsdp: DitFsdpOpt = None,
    t5_fsdp: T5FsdpOpt = None,
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
    layout = {"gpus": gpu_count, "ulysses": ulysses, "ring": ring, "dit_fsdp": dit_fsdp, "t5_fsdp": t5_fsdp}
    if plan_file is not None:
        if any(v is not None for v in (height, width, size, frames, workload_steps, guidance, scenario, model)):
            raise WanfitError("--plan-file fixes the workload: drop the workload flags (or drop --plan-file)")
        workload, chosen, target = plan_from_file(plan_file, gpu)
        chosen = plan_pins(PlanPins(), offload, text_encoder, dit_dtype, vae_tiling, runtime, attention,
                           **layout).apply(chosen)
    else:
        workload, scenario_pins = build_workload(model, height, width, size, frames, workload_steps, guidance,
                                                 scenario)
        pins = plan_pins(scenario_pins, offload, text_encoder, dit_dtype, vae_tiling, runtime, attention, **layout)
        target = resolve_gpus([gpu] if gpu else None)[0]
        if recommended:
            from wanfit.planner.api import plan_report

            chosen = plan_report(workload, [target], pins, **options).results[0].recommended_plan()
        else:
            chosen = pins.apply(heads=workload.spec.transformer["num_attention_heads"])
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
    from rich.text import Text

    from wanfit.vocabulary.plan_report import SCHEMA_VERSION
    from wanfit.vocabulary.profiles import load_profiles, profile_table_rows

    profiles = load_profiles()
    if format == "json":
        print_json({"schema_version": SCHEMA_VERSION, "gpus": [p.model_dump(mode="json") for p in profiles.values()]})
        return
    from wanfit.views.listing import columns_that_fit, rows_table

    out = console()
    rows, left_out = columns_that_fit(profile_table_rows(profiles), out.width)
    out.print(rows_table(rows, "GPU profiles (memory in GiB = 2^30 bytes; TFLOP/s; GB/s; rates: m measured, p "
                               "public, d derived)"))
    if left_out:
        out.print(Text(f"{len(left_out)} columns left out at this width ({', '.join(left_out)}): widen the terminal "
                       f"(COLUMNS) or use --format json", style="dim"))


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
