"""Apply a Plan to built components: DiT storage dtype, text-encoder placement, offload mode,
VAE tiling. Each knob uses the maintained library path a user would use (diffusers hooks,
torchao), so what is measured is what users run."""

from __future__ import annotations

import importlib.util
import os

import torch

from wanfit.measure.build import Components
from wanfit.vocabulary.workload import Plan

INT8_BACKENDS = ("torchao", "quanto")


def _transformers(pipe) -> list[torch.nn.Module]:
    return [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]


def wrap_autocast(module: torch.nn.Module, device_type: str) -> None:
    """fp32 weights under bf16 autocast, as the official Wan code runs its DiT without
    --convert_model_dtype. Only the DiT forward is autocast, not the VAE."""
    module.forward = torch.autocast(device_type=device_type, dtype=torch.bfloat16)(module.forward)


def quantize_int8(module: torch.nn.Module, backend: str | None = None) -> str:
    """Weight-only int8 of the text encoder's Linear layers. Returns the backend used."""
    backend = backend or os.environ.get("WANFIT_INT8_BACKEND", "torchao")
    if backend == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(module, Int8WeightOnlyConfig())
    elif backend == "quanto":
        from optimum.quanto import freeze, qint8, quantize

        quantize(module, weights=qint8)
        freeze(module)
    else:
        raise ValueError(f"unknown int8 backend {backend!r}; use one of {INT8_BACKENDS}")
    return backend


def _offload_with_pipeline_hooks(pipe, dits, te, plan: Plan, enable, device: str) -> None:
    """Model or sequential CPU offload through diffusers' pipeline hooks. Every component starts
    on the CPU; a GPU-placed text encoder is registered with the pipeline so the offload chain
    (text_encoder -> transformer -> transformer_2 -> vae) moves it as diffusers does."""
    for m in [*dits, pipe.vae, getattr(pipe, "image_encoder", None)]:
        if m is not None:
            m.to("cpu")
    if plan.text_encoder == "gpu":
        te.to("cpu")
        pipe.text_encoder = te
    torch.cuda.empty_cache()
    enable(device=device)


# The plan's attention kernel class through diffusers' attention dispatcher (diffusers 0.42.1
# models/attention_dispatch.py AttentionBackendName): the flash-attn packages where installed, else torch
# SDPA's backend of the same kernel class (flash = the FA2 kernel; cuDNN = the FA3 class on Hopper).
DIFFUSERS_ATTENTION_BACKENDS = {"fa2": ("flash", "_native_flash"), "fa3": ("_flash_3", "_native_cudnn"),
                                "cudnn": ("_native_cudnn", "_native_cudnn")}


def attention_backend(kernel: str) -> str | None:
    """The diffusers backend name for a plan's attention kernel class (None: `auto`, diffusers' default SDPA)."""
    if kernel == "auto":
        return None
    package, sdpa = DIFFUSERS_ATTENTION_BACKENDS[kernel]
    module = "flash_attn_interface" if package == "_flash_3" else "flash_attn"
    return package if importlib.util.find_spec(module) is not None and package != sdpa else sdpa


def apply_plan(comp: Components, plan: Plan, device: str) -> None:
    pipe = comp.pipe
    cuda = device.startswith("cuda")
    dits = _transformers(pipe)
    if (backend := attention_backend(plan.attention)) is not None:
        for dit in dits:
            dit.set_attention_backend(backend)
    if plan.dit_dtype == "fp8":
        for dit in dits:
            dit.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if plan.dit_dtype == "fp32":
        for dit in dits:
            wrap_autocast(dit, "cuda" if cuda else "cpu")
    if plan.gpus > 1:  # context parallelism (and FSDP2 of the blocks) before anything moves to the device
        from wanfit.measure.distributed.diffusers_cp import apply_layout

        apply_layout(dits, plan, device)

    # Text encoder: the runner calls it directly; only `gpu` hands it to the offload mode.
    te = comp.text_encoder
    if plan.text_encoder == "cpu":
        te.to("cpu")
    elif plan.text_encoder == "int8":
        te.to(device)
        quantize_int8(te)
    if plan.offload != "none" and not cuda:
        raise RuntimeError(f"offload={plan.offload} needs a CUDA device (diffusers offload hooks onload to it)")

    if plan.offload == "none":
        pipe.to(device)
        if plan.text_encoder == "gpu":
            te.to(device)
    elif plan.offload == "model":
        _offload_with_pipeline_hooks(pipe, dits, te, plan, pipe.enable_model_cpu_offload, device)
    elif plan.offload == "group":
        from diffusers.hooks import apply_group_offloading

        for dit in dits:
            dit.to("cpu")
        torch.cuda.empty_cache()
        onload = torch.device(device)
        for dit in dits:
            apply_group_offloading(dit, onload_device=onload, offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1, use_stream=True)
        if plan.text_encoder == "gpu":
            # Leaf level: UMT5's blocks sit under `encoder.block`, not at its top level, so
            # block-level grouping put the whole encoder in one group (10.8 GiB measured at encode).
            te.to("cpu")
            apply_group_offloading(te, onload_device=onload, offload_device=torch.device("cpu"),
                                   offload_type="leaf_level", use_stream=True)
        pipe.vae.to(device)
        if getattr(pipe, "image_encoder", None) is not None:
            pipe.image_encoder.to(device)
    elif plan.offload == "sequential":
        _offload_with_pipeline_hooks(pipe, dits, te, plan, pipe.enable_sequential_cpu_offload, device)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
    if cuda:
        torch.cuda.empty_cache()
