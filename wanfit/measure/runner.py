"""Run one Workload + Plan through the real diffusers Wan pipeline and measure every stage.

An OOM (or any other failure) is caught and recorded with the stage where it happened; stages
completed before it are kept. The pipeline can be reused across points of the same model and
plan (`PipelineCache`): the caller resets allocator state between points.
"""

from __future__ import annotations

import gc
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from wanfit.measure.build import NUM_TRAIN_TIMESTEPS, Components, build_components, gpu_bytes
from wanfit.measure.cap import memory_fraction
from wanfit.measure.environment import collect_environment
from wanfit.measure.monitor import Nvml, Poller, StageClock
from wanfit.measure.placement import apply_plan
from wanfit.vocabulary.catalog import TEXT_LEN, ModelSpec
from wanfit.vocabulary.measurement import Measurement, StageRecord, point_id
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan, Workload

PROMPT = "A red fox runs through fresh snow at dawn, cinematic, shallow depth of field"
NEGATIVE = "blurry, low quality, distorted"
# How much of a failed point's message the measurement keeps (an OOM's first line names the sizes; an
# error's traceback tail shows where it happened).
OOM_MESSAGE_CHARS = 500
ERROR_MESSAGE_CHARS = 2000
TRACEBACK_CHARS = 3000


_PROCESS_BASELINE: dict[str, float | None] = {}
_POINTS_RUN = [0]  # points this process has run (the first pays one-time CUDA and library setup)


@dataclass
class PipelineCache:
    """Keeps the last built pipeline so several sizes of one model+plan share one build."""

    key: tuple | None = None
    comp: Components | None = None

    def clear(self) -> None:
        self.key, self.comp = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class _Progress:
    stage: str = "init"
    steps_done: int = 0
    stages: list[StageRecord] = field(default_factory=list)


def encode_prompts(comp: Components, cfg: bool, run_device: torch.device, out_device: torch.device, batch: int = 1):
    """T5 embeddings for the prompt and (with CFG) the negative prompt, padded to TEXT_LEN like
    diffusers' _get_t5_prompt_embeds. Without a tokenizer, random token ids of full length.
    `run_device` is where the encoder computes (offload hooks onload it there)."""
    te = comp.text_encoder
    out = []
    for text in [PROMPT, NEGATIVE][: 2 if cfg else 1]:
        if comp.tokenizer is not None:
            tok = comp.tokenizer([text] * batch, padding="max_length", max_length=TEXT_LEN, truncation=True,
                                 add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
            ids, mask = tok.input_ids, tok.attention_mask
        else:
            ids = torch.randint(0, te.config.vocab_size, (batch, TEXT_LEN))
            mask = torch.ones_like(ids)
        with torch.no_grad():
            hidden = te(ids.to(run_device), mask.to(run_device)).last_hidden_state
        seq_lens = mask.gt(0).sum(dim=1)
        hidden = torch.stack([torch.cat([u[:v], u.new_zeros(TEXT_LEN - v, u.size(1))])
                              for u, v in zip(hidden, seq_lens, strict=True)])
        out.append(hidden.to(out_device))
    return out[0], (out[1] if cfg else None)


def _input_image(workload: Workload):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (workload.height, workload.width, 3), dtype=np.uint8))


def _process_baseline(nvml: Nvml, device: str, cuda: bool) -> tuple[float | None, float | None]:
    """(idle, context) GiB: the device memory in use before this process, then what its CUDA context adds.
    Measured once per process, before its first CUDA allocation; later points reuse the figures."""
    if cuda and "idle" not in _PROCESS_BASELINE:
        idle = nvml.used_gib()
        torch.cuda.init()
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        used = nvml.used_gib()
        context = used - idle if used is not None and idle is not None else None
        _PROCESS_BASELINE.update(idle=idle, context=context)
    return _PROCESS_BASELINE.get("idle"), _PROCESS_BASELINE.get("context")


def _cap_allocator(memory_cap_gib: float, outside_torch_gib: float) -> None:
    """Cap the torch allocator to emulate a GPU of `memory_cap_gib` usable memory. The cap limits only the
    allocator; the context and the pre-existing use (`outside_torch_gib`) sit outside it."""
    total = torch.cuda.get_device_properties(0).total_memory / GIB
    torch.cuda.set_per_process_memory_fraction(memory_fraction(memory_cap_gib, total, outside_torch_gib))


def _release_cache() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def _built(spec: ModelSpec, plan: Plan, checkpoint: Path | None, device: str, cache: PipelineCache | None,
           clock: StageClock, prog: _Progress) -> Components:
    """The components, built and placed per plan (the init stage) or reused from `cache`: a reused
    pipeline has no init stage, so text_encode starts at the clock's last begin()."""
    key = (spec.model_dump_json(), plan.model_dump_json(), str(checkpoint), device)
    if cache is not None and cache.key == key:
        return cache.comp
    if cache is not None:
        cache.clear()
    comp = build_components(spec, plan, device, checkpoint)
    apply_plan(comp, plan, device)
    if cache is not None:
        cache.key, cache.comp = key, comp
    prog.stages.append(clock.end("init"))
    return comp


def _resident_weights_gib(comp: Components) -> dict[str, float]:
    """GiB of each component's weights on the GPU after the plan placed them."""
    resident = {}
    for name in ("transformer", "transformer_2", "vae", "image_encoder"):
        module = getattr(comp.pipe, name, None)
        if module is not None:
            resident[name] = gpu_bytes(module) / GIB
    resident["text_encoder"] = gpu_bytes(comp.text_encoder) / GIB
    return resident


def _stage_hooks(prog: _Progress, clock: StageClock, spec: ModelSpec, steps_run: int, decode: bool):
    """(forward pre-hook, callback_on_step_end): the first DiT forward closes `prepare`; each step's end
    closes that step (with its expert on a two-expert model) and opens the next stage."""
    boundary = spec.boundary_ratio * NUM_TRAIN_TIMESTEPS if spec.boundary_ratio else None

    def first_forward(_module, _args):
        if prog.stage == "prepare":
            prog.stages.append(clock.end("prepare"))
            prog.stage = "step"

    def on_step_end(_pipe, i, t, kwargs):
        expert = None if boundary is None else (1 if float(t) >= boundary else 2)
        prog.stages.append(clock.end("step", index=i + 1, expert=expert))
        prog.steps_done = i + 1
        prog.stage = ("vae_decode" if decode else "done") if i + 1 == steps_run else "step"
        return kwargs

    return first_forward, on_step_end


def _timed_decode(vae_decode, clock: StageClock, extra: dict[str, float]):
    """The VAE's decode, timed alone (the vae_decode stage also holds the pipeline's postprocessing);
    its time and the allocated peak above its start go into `extra`."""

    def timed(*args, **kwargs):
        clock.sync()
        t0 = time.perf_counter()
        alloc0 = torch.cuda.memory_allocated() if clock.cuda else 0
        result = vae_decode(*args, **kwargs)
        clock.sync()
        extra["vae_decode_call_s"] = time.perf_counter() - t0
        if clock.cuda:
            extra["vae_decode_call_peak_above_start_gib"] = (torch.cuda.max_memory_allocated() - alloc0) / GIB
        return result

    return timed


def _pipeline_call(workload: Workload, spec: ModelSpec, steps_run: int, decode: bool, embeds, negative,
                   on_step_end) -> dict:
    """The pipeline's keyword arguments: precomputed prompt embeddings, a fixed seed."""
    call = dict(prompt_embeds=embeds, negative_prompt_embeds=negative, height=workload.height,
                width=workload.width, num_frames=workload.frames, num_inference_steps=steps_run,
                guidance_scale=workload.guidance, output_type="np" if decode else "latent",
                callback_on_step_end=on_step_end, num_videos_per_prompt=1,
                generator=torch.Generator("cpu").manual_seed(0))
    if spec.boundary_ratio is not None and workload.guidance_2 is not None:
        call["guidance_scale_2"] = workload.guidance_2
    if spec.is_i2v:
        call["image"] = _input_image(workload)
    return call


def _generate(comp: Components, workload: Workload, plan: Plan, spec: ModelSpec, steps_run: int, decode: bool,
              cuda: bool, clock: StageClock, prog: _Progress, extra: dict[str, float]) -> None:
    """text_encode, then the pipeline call: prepare, each step and (with `decode`) vae_decode."""
    pipe = comp.pipe
    prog.stage = "text_encode"
    exec_device = pipe._execution_device if cuda else torch.device("cpu")
    te_device = torch.device("cpu") if plan.text_encoder == "cpu" else exec_device
    embeds, negative = encode_prompts(comp, workload.cfg, te_device, exec_device, workload.batch)
    prog.stages.append(clock.end("text_encode"))

    prog.stage = "prepare"
    first_forward, on_step_end = _stage_hooks(prog, clock, spec, steps_run, decode)
    pipe.vae.decode = _timed_decode(pipe.vae.decode, clock, extra)
    handles = [m.register_forward_pre_hook(first_forward) for m in
               (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
    try:
        with torch.no_grad():
            video = pipe(**_pipeline_call(workload, spec, steps_run, decode, embeds, negative, on_step_end)).frames
    finally:
        for h in handles:
            h.remove()
        del pipe.vae.decode  # drop the instance attribute: the class method is back
    if decode:
        prog.stages.append(clock.end("vae_decode"))
    del video


def _failure(error: Exception) -> tuple[str, str]:
    """(status, error text) of a failed point: an OOM's first line, or any other error with its traceback."""
    if isinstance(error, torch.OutOfMemoryError):
        return "oom", str(error).splitlines()[0][:OOM_MESSAGE_CHARS]
    return "error", (f"{type(error).__name__}: {error}"[:ERROR_MESSAGE_CHARS] + "\n"
                     + traceback.format_exc()[-TRACEBACK_CHARS:])


def _total_record(stages: list[StageRecord], t_start: float, end_t: float, t0: float) -> StageRecord:
    """The whole point as one record: its wall time and the highest peak of every stage."""
    peaks = [s.device_used_peak_gib for s in stages if s.device_used_peak_gib is not None]
    return StageRecord(
        name="total", start_s=round(t_start - t0, 6), time_s=end_t - t_start,
        torch_peak_allocated_gib=max((s.torch_peak_allocated_gib or 0) for s in stages) if stages else None,
        torch_peak_reserved_gib=max((s.torch_peak_reserved_gib or 0) for s in stages) if stages else None,
        device_used_peak_gib=max(peaks) if peaks else None,
        host_rss_peak_gib=max((s.host_rss_peak_gib or 0) for s in stages) if stages else None,
    )


def run_point(
    workload: Workload,
    plan: Plan,
    *,
    steps: int | None = None,
    checkpoint: Path | None = None,
    device: str | None = None,
    memory_cap_gib: float | None = None,
    cache: PipelineCache | None = None,
    keep_timeline: bool = True,
    spec: ModelSpec | None = None,
    decode: bool = True,
    tag: str = "",
) -> Measurement:
    """Run and measure. `steps` overrides the number of denoising steps actually run (the
    Measurement keeps the requested workload and says `steps_run`). `memory_cap_gib` caps the torch
    allocator (set_per_process_memory_fraction) to emulate a smaller GPU. `spec` overrides the
    catalog architecture (tests use tiny variants of each model)."""
    spec = spec or workload.spec
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    steps_run = steps or workload.steps
    nvml = Nvml(enabled=cuda)
    first_in_process = _POINTS_RUN[0] == 0
    _POINTS_RUN[0] += 1
    idle, context = _process_baseline(nvml, device, cuda)
    if cuda and memory_cap_gib is not None:
        _cap_allocator(memory_cap_gib, (context or 0) + (idle or 0))
    if cuda:
        _release_cache()
    env = collect_environment(torch, nvml, memory_cap_gib)
    poller = Poller(nvml).start()
    clock = StageClock(poller, torch, device)
    prog = _Progress()
    resident: dict[str, float] = {}
    extra: dict[str, float] = {}
    status, error, failed = "ok", None, None
    t_start = time.perf_counter()
    try:
        clock.begin()
        comp = _built(spec, plan, checkpoint, device, cache, clock, prog)
        resident = _resident_weights_gib(comp)
        _generate(comp, workload, plan, spec, steps_run, decode, cuda, clock, prog, extra)
    except Exception as e:  # recorded, not raised: a calibration keeps going and keeps what it has
        status, error = _failure(e)
        failed = prog.stage if prog.stage != "step" else f"step {prog.steps_done + 1}"
        if cache is not None:
            cache.clear()
    else:
        clock.sync()
    total = _total_record(prog.stages, t_start, poller.sample().t, poller.t0)
    poller.stop()
    source = "checkpoint" if checkpoint else "random"
    m = Measurement(
        id=point_id(workload, plan, steps_run, source, tag, decode, memory_cap_gib), workload=workload, plan=plan,
        status=status, tag=tag, decoded=decode,
        failed_stage=failed, error=error, source=source, steps_run=prog.steps_done,
        stages=[*prog.stages, total], resident_weights_gib=resident, context_gib=context,
        idle_device_used_gib=idle, first_in_process=first_in_process, activity_source=nvml.activity_source, extra=extra,
        timeline=poller.timeline() if keep_timeline else [], environment=env,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if cuda:
        _release_cache()
    return m
