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

from wanfit.measure.build import Components, build_components, gpu_bytes
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
    idle, context = _PROCESS_BASELINE.get("idle"), _PROCESS_BASELINE.get("context")
    if cuda and "idle" not in _PROCESS_BASELINE:
        # Measured once per process, before the first CUDA allocation: the device memory in use
        # before this process, then what its CUDA context adds.
        idle = nvml.used_gib()
        torch.cuda.init()
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        used = nvml.used_gib()
        context = used - idle if used is not None and idle is not None else None
        _PROCESS_BASELINE.update(idle=idle, context=context)
    if cuda and memory_cap_gib is not None:
        # The cap limits only the torch allocator; the context and the pre-existing use sit outside it.
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(memory_fraction(memory_cap_gib, total, (context or 0) + (idle or 0)))
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
    env = collect_environment(torch, nvml, memory_cap_gib)
    poller = Poller(nvml).start()
    clock = StageClock(poller, torch, device)
    prog = _Progress()
    resident: dict[str, float] = {}
    extra: dict[str, float] = {}
    status, error, failed = "ok", None, None
    t_start = time.perf_counter()
    source = "checkpoint" if checkpoint else "random"
    try:
        clock.begin()
        key = (spec.model_dump_json(), plan.model_dump_json(), str(checkpoint), device)
        if cache is not None and cache.key == key:
            comp = cache.comp  # a reused pipeline has no init stage: text_encode starts at the begin() above
        else:
            if cache is not None:
                cache.clear()
            comp = build_components(spec, plan, device, checkpoint)
            apply_plan(comp, plan, device)
            if cache is not None:
                cache.key, cache.comp = key, comp
            prog.stages.append(clock.end("init"))
        pipe = comp.pipe
        for name in ("transformer", "transformer_2", "vae", "image_encoder"):
            module = getattr(pipe, name, None)
            if module is not None:
                resident[name] = gpu_bytes(module) / GIB
        resident["text_encoder"] = gpu_bytes(comp.text_encoder) / GIB

        prog.stage = "text_encode"
        exec_device = pipe._execution_device if cuda else torch.device("cpu")
        te_device = torch.device("cpu") if plan.text_encoder == "cpu" else exec_device
        embeds, negative = encode_prompts(comp, workload.cfg, te_device, exec_device, workload.batch)
        prog.stages.append(clock.end("text_encode"))

        prog.stage = "prepare"
        boundary = spec.boundary_ratio * 1000 if spec.boundary_ratio else None

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

        vae_decode = pipe.vae.decode

        def timed_decode(*args, **kwargs):
            clock.sync()
            t0 = time.perf_counter()
            alloc0 = torch.cuda.memory_allocated() if clock.cuda else 0
            result = vae_decode(*args, **kwargs)
            clock.sync()
            extra["vae_decode_call_s"] = time.perf_counter() - t0
            if clock.cuda:
                extra["vae_decode_call_peak_above_start_gib"] = (torch.cuda.max_memory_allocated() - alloc0) / GIB
            return result

        pipe.vae.decode = timed_decode
        handles = [m.register_forward_pre_hook(first_forward) for m in
                   (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
        call = dict(prompt_embeds=embeds, negative_prompt_embeds=negative, height=workload.height,
                    width=workload.width, num_frames=workload.frames, num_inference_steps=steps_run,
                    guidance_scale=workload.guidance, output_type="np" if decode else "latent",
                    callback_on_step_end=on_step_end, num_videos_per_prompt=1,
                    generator=torch.Generator("cpu").manual_seed(0))
        if spec.boundary_ratio is not None and workload.guidance_2 is not None:
            call["guidance_scale_2"] = workload.guidance_2
        if spec.is_i2v:
            call["image"] = _input_image(workload)
        try:
            with torch.no_grad():
                video = pipe(**call).frames
        finally:
            for h in handles:
                h.remove()
            del pipe.vae.decode  # drop the instance attribute: the class method is back
        if decode:
            prog.stages.append(clock.end("vae_decode"))
        del video
    except torch.OutOfMemoryError as e:
        status, error = "oom", str(e).splitlines()[0][:500]
    except Exception as e:  # recorded, not raised: a calibration keeps going and keeps what it has
        status, error = "error", f"{type(e).__name__}: {e}"[:2000] + "\n" + traceback.format_exc()[-3000:]
    if status != "ok":
        failed = prog.stage if prog.stage != "step" else f"step {prog.steps_done + 1}"
        if cache is not None:
            cache.clear()
    if status == "ok":
        clock.sync()
    end = poller.sample()
    peaks = [s.device_used_peak_gib for s in prog.stages if s.device_used_peak_gib is not None]
    total = StageRecord(
        name="total", start_s=round(t_start - poller.t0, 6), time_s=end.t - t_start,
        torch_peak_allocated_gib=max((s.torch_peak_allocated_gib or 0) for s in prog.stages) if prog.stages else None,
        torch_peak_reserved_gib=max((s.torch_peak_reserved_gib or 0) for s in prog.stages) if prog.stages else None,
        device_used_peak_gib=max(peaks) if peaks else None,
        host_rss_peak_gib=max((s.host_rss_peak_gib or 0) for s in prog.stages) if prog.stages else None,
    )
    poller.stop()
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
        gc.collect()
        torch.cuda.empty_cache()
    return m
