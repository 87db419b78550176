"""The command line's options, declared once and shared by the commands that take them (huggingface_hub CLI
style: one alias per option). Every workload/plan option defaults to None = "not given": the model's default
applies and the knob is free. No `from __future__ import annotations`: typer reads these at run time.
"""

from pathlib import Path
from typing import Annotated, Literal

import typer

from wanfit.planner.inputs import DEFAULT_MODEL

Format = Literal["table", "json"]
TOLERANCE_MEMORY, TOLERANCE_TIME = 0.05, 0.10  # verify's default allowed relative errors, as wanfit.verify.run's

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
FromRunOpt = Annotated[Path | None, typer.Option(
    "--from-run", help="Correct this GPU's predicted times from one run you already have: a `wanfit verify` "
    "report JSON, or {gpu, workload, plan, runtime, step_s, decode_s, peak_allocated_gib}; needs no GPU.",
    exists=True, dir_okay=False, show_default=False)]
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



# The several-GPU layout (issue: several GPUs for one video).
GpuCountsOpt = Annotated[str | None, typer.Option(
    "--gpus", help="GPUs of one host for one video: a count, or counts to compare, e.g. 1,2,4,8 (torchrun "
    "--nproc_per_node). (default: 1)", show_default=False)]
GpuCountOpt = Annotated[int | None, typer.Option(
    "--gpus", help="GPUs of this host to run one video on (ranks launched like torchrun). (default: 1)",
    show_default=False)]
UlyssesOpt = Annotated[int | None, typer.Option(
    "--ulysses", help="Pin the Ulysses sequence-parallel degree (official: --ulysses_size, N or 1). (default: free)",
    show_default=False)]
RingOpt = Annotated[int | None, typer.Option(
    "--ring", help="Pin the ring-attention degree (diffusers; ulysses x ring = gpus). (default: free)",
    show_default=False)]
DitFsdpOpt = Annotated[bool | None, typer.Option(
    "--dit-fsdp/--no-dit-fsdp", help="Pin FSDP sharding of the DiT over the GPUs. (default: free)",
    show_default=False)]
T5FsdpOpt = Annotated[bool | None, typer.Option(
    "--t5-fsdp/--no-t5-fsdp", help="Pin FSDP sharding of the T5 encoder (official code). (default: free)",
    show_default=False)]
