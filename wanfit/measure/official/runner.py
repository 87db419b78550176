"""Run one Workload through the official Wan2.2 `generate()` and measure every stage, as the diffusers runner
(wanfit.measure.runner) does: the same StageRecords (init, text_encode, prepare, step 1..n, vae_decode,
total), torch allocated / reserved peaks, NVML device peaks from the poller, resident weights, environment.

The official knobs are generate.py's (OfficialKnobs); `knobs_for(plan)` maps a wanfit Plan onto them. The
measurement records which `wan` ran (Environment.wan) and the attention kernel that ran
(Environment.attention_kernel). The official code sets no allocator option: the environment records the
PYTORCH_CUDA_ALLOC_CONF this process ran with. A failure (OOM included) is recorded with its stage, like
the diffusers runner; a configuration error (no `wan`, a model the official code does not cover) raises a
one-line WanfitError before anything runs.
"""

from __future__ import annotations

from pathlib import Path

from wanfit.measure.build import gpu_bytes
from wanfit.measure.distributed.context import current_rank
from wanfit.measure.distributed.official import init_sequence_parallel, official_layout
from wanfit.measure.official.attention import resolve_kernel, routed_attention
from wanfit.measure.official.build import PIPELINES, build_official, official_dits
from wanfit.measure.official.cpu_emulation import cpu_emulation
from wanfit.measure.official.knobs import OfficialKnobs, plan_for
from wanfit.measure.official.loader import LoadedWan, load_wan
from wanfit.measure.official.stages import OfficialProgress, StageHooks
from wanfit.measure.official.tiny import OfficialArch
from wanfit.measure.point import PROMPT, PointRequest, PointRun, input_image, measure_point, resolve_device
from wanfit.vocabulary.catalog import official_task
from wanfit.vocabulary.measurement import Measurement
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan, Workload

SEED = 0
# The I2V pipeline derives its size from max_area and the image's aspect ratio through a float square root
# floored to the VAE stride: at exactly height x width the root can fall a hair short (32x64 at 1536 px^2:
# 31.999999999999996 -> a stride less). A relative nudge far below one stride gives the workload's size.
MAX_AREA_NUDGE = 1e-9


def official_shift(wan: LoadedWan, task: str) -> float:
    """generate.py's default shift: the task config's sample_shift (T2V-A14B 12.0, I2V-A14B and TI2V-5B 5.0;
    diffusers' hub schedulers use 3.0 for the A14B models, so the expert switch falls at another step)."""
    return float(wan["wan.configs"].WAN_CONFIGS[task].sample_shift)


def generate_kwargs(task: str, workload: Workload, steps_run: int, shift: float, knobs: OfficialKnobs) -> dict:
    """generate()'s arguments for a workload: generate.py's, with the negative prompt left to the config."""
    kwargs = dict(input_prompt=PROMPT, frame_num=workload.frames, shift=shift, sample_solver="unipc",
                  sampling_steps=steps_run, n_prompt="", seed=SEED, offload_model=knobs.offload_model)
    high = float(workload.guidance)
    low = float(workload.guidance_2 if workload.guidance_2 is not None else workload.guidance)
    if task == "ti2v-5B":  # text only: generate() takes its t2v path (img None)
        kwargs.update(size=(workload.width, workload.height), guide_scale=high)
    elif task == "t2v-A14B":  # the official tuple is (low noise, high noise)
        kwargs.update(size=(workload.width, workload.height), guide_scale=(low, high))
    else:
        kwargs.update(img=input_image(workload), max_area=workload.height * workload.width * (1 + MAX_AREA_NUDGE),
                      guide_scale=(low, high))
    return kwargs


def _resident_weights_gib(pipe) -> dict[str, float]:
    """GiB of each component's weights on the GPU after the constructor placed them (the official code keeps
    T5 and the DiTs in host memory until generate() moves them: init_on_cpu)."""
    resident = {name: gpu_bytes(dit) / GIB for name, dit in official_dits(pipe).items()}
    resident["vae"] = gpu_bytes(pipe.vae.model) / GIB
    resident["text_encoder"] = gpu_bytes(pipe.text_encoder.model) / GIB
    return resident


def _weights_extra(pipe) -> dict[str, float]:
    """Each component's weights wherever they sit (GiB): the official DiT is fp32 unless converted."""
    def gib(module) -> float:
        return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]) / GIB

    out = {f"weights_gib.{name}": gib(dit) for name, dit in official_dits(pipe).items()}
    out["weights_gib.text_encoder"] = gib(pipe.text_encoder.model)
    out["weights_gib.vae"] = gib(pipe.vae.model)
    return out


def _generate(pipe, wan: LoadedWan, task: str, knobs: OfficialKnobs, shift: float, run: PointRun) -> None:
    """text_encode, prepare, each step and vae_decode: the official generate() with the stage hooks."""
    run.prog.stage = "text_encode"
    steps_run = run.request.steps_run
    hooks = StageHooks(pipe, wan[PIPELINES[task][1]], knobs, run.clock, run.prog, steps_run, run.extra)
    cpu = pipe.device.type == "cpu"
    with hooks.installed(), cpu_emulation(cpu):
        video = pipe.generate(**generate_kwargs(task, run.request.workload, steps_run, shift, knobs))
    run.prog.stages.append(run.clock.end("vae_decode"))
    del video


def run_official_point(
    workload: Workload,
    knobs: OfficialKnobs,
    *,
    steps: int | None = None,
    checkpoint: Path | None = None,
    wan_repo: Path | None = None,
    device: str | None = None,
    memory_cap_gib: float | None = None,
    arch: OfficialArch | None = None,
    shift: float | None = None,
    plan: Plan | None = None,
    keep_timeline: bool = True,
    tag: str = "",
) -> Measurement:
    """Run and measure one point through the official code. `steps`: the denoising steps actually run
    (the official sampling_steps; the Measurement keeps the requested workload). `wan_repo`: a directory
    from which `wan` imports (a Wan2.2 checkout or fork), else the installed wan22. `arch` overrides the
    architecture (tests: tiny_arch()). `shift`: the official sample_shift unless given. `plan`: what the
    measurement records (default: the Plan these knobs come from); a several-GPU plan runs as this rank of the
    process group that is up (wanfit.measure.distributed.rank starts it as generate.py does)."""
    task = official_task(workload.model)
    wan = load_wan(wan_repo)
    device = resolve_device(device)
    kernel = resolve_kernel(knobs.attention, device.startswith("cuda"))
    shift = official_shift(wan, task) if shift is None else shift
    request = PointRequest(workload, plan or plan_for(knobs), steps or workload.steps, device,
                           "checkpoint" if checkpoint else "random", memory_cap_gib, tag, keep_timeline=keep_timeline)
    layout = official_layout(request.plan, current_rank())
    if layout is not None:
        init_sequence_parallel(wan.modules, request.plan)

    def stages(run: PointRun) -> None:
        route = None
        try:
            with routed_attention(wan.modules, knobs.attention, request.cuda) as route:
                run.clock.begin()
                pipe = build_official(wan, task, workload.spec, device, t5_cpu=knobs.t5_cpu,
                                      convert_model_dtype=knobs.convert_model_dtype, checkpoint=checkpoint,
                                      arch=arch, layout=layout)
                run.prog.stages.append(run.clock.end("init"))
                run.resident.update(_resident_weights_gib(pipe))
                run.extra.update(_weights_extra(pipe))
                _generate(pipe, wan, task, knobs, shift, run)
        finally:  # counted whether or not the run got through
            run.extra["attention_calls"] = float(route.calls) if route is not None else 0.0

    return measure_point(request, stages, prog=OfficialProgress(), extra={"shift": shift},
                         environment={"wan": wan.code, "attention_kernel": kernel})
