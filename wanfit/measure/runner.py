"""Run one Workload + Plan through the real diffusers Wan pipeline and measure every stage.

An OOM (or any other failure) is caught and recorded with the stage where it happened; stages
completed before it are kept (wanfit.measure.point: what every runner shares around its stages). The
pipeline can be reused across points of the same model and plan (`PipelineCache`): the caller resets
allocator state between points.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import torch

from wanfit.measure.build import NUM_TRAIN_TIMESTEPS, Components, build_components, gpu_bytes
from wanfit.measure.distributed.diffusers_cp import dit_in_host_memory
from wanfit.measure.monitor import StageClock
from wanfit.measure.placement import apply_plan
from wanfit.measure.point import (
    PROMPT,
    PointRequest,
    PointRun,
    Progress,
    input_image,
    measure_point,
    resolve_device,
    timed_decode,
)
from wanfit.vocabulary.catalog import TEXT_LEN, ModelSpec
from wanfit.vocabulary.measurement import Measurement
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan, Workload

NEGATIVE = "blurry, low quality, distorted"


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


def _built(spec: ModelSpec, plan: Plan, checkpoint: Path | None, device: str, cache: PipelineCache | None,
           clock: StageClock, prog: Progress) -> Components:
    """The components, built and placed per plan (the init stage) or reused from `cache`: a reused
    pipeline has no init stage, so text_encode starts at the clock's last begin()."""
    key = (spec.model_dump_json(), plan.model_dump_json(), str(checkpoint), device)
    if cache is not None and cache.key == key:
        return cache.comp
    if cache is not None:
        cache.clear()
    with dit_in_host_memory(plan):
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


def _stage_hooks(prog: Progress, clock: StageClock, spec: ModelSpec, steps_run: int, decode: bool):
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
        call["image"] = input_image(workload)
    return call


def _generate(comp: Components, spec: ModelSpec, run: PointRun) -> None:
    """text_encode, then the pipeline call: prepare, each step and (with `decode`) vae_decode."""
    pipe, clock, prog = comp.pipe, run.clock, run.prog
    workload, steps_run, decode = run.request.workload, run.request.steps_run, run.request.decode
    prog.stage = "text_encode"
    exec_device = pipe._execution_device if run.request.cuda else torch.device("cpu")
    te_device = torch.device("cpu") if run.request.plan.text_encoder == "cpu" else exec_device
    embeds, negative = encode_prompts(comp, workload.cfg, te_device, exec_device, workload.batch)
    prog.stages.append(clock.end("text_encode"))

    prog.stage = "prepare"
    first_forward, on_step_end = _stage_hooks(prog, clock, spec, steps_run, decode)
    pipe.vae.decode = timed_decode(pipe.vae.decode, clock, run.extra)
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
    request = PointRequest(workload, plan, steps or workload.steps, resolve_device(device),
                           "checkpoint" if checkpoint else "random", memory_cap_gib, tag, decode, keep_timeline)

    def stages(run: PointRun) -> None:
        run.clock.begin()
        try:
            comp = _built(spec, plan, checkpoint, request.device, cache, run.clock, run.prog)
            run.resident.update(_resident_weights_gib(comp))
            _generate(comp, spec, run)
        except Exception:
            if cache is not None:  # a failed build or run leaves nothing worth reusing
                cache.clear()
            raise

    return measure_point(request, stages)
