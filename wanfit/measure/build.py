"""Build the real diffusers Wan pipeline: from a local checkpoint directory (`from_pretrained`,
local files only) or from the catalog architecture with random weights (no download anywhere).

Random weights are initialised on the GPU when there is one (fast), in the dtypes a
`from_pretrained(..., dtype=bf16)` load gives: DiT and text encoder bf16 with the DiT's
`_keep_in_fp32_modules` kept fp32, VAE fp32 (as the diffusers docs load it). A component the plan
keeps in host memory is moved to the CPU as soon as it is built, so the init stage never holds
every weight at once: a run capped to a smaller GPU must not fail where a checkpoint load (which
places each component straight where the plan wants it) would not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from wanfit.vocabulary.catalog import ModelSpec
from wanfit.vocabulary.workload import Plan

DIT_DTYPES = {"bf16": torch.bfloat16, "fp8": torch.bfloat16, "fp32": torch.float32}
# The Wan schedulers' training timesteps (a two-expert model's boundary_ratio is a share of them).
NUM_TRAIN_TIMESTEPS = 1000


@dataclass
class Components:
    """The pipeline plus the text encoder / tokenizer, which the runner drives itself so that
    text encoding is its own stage and can run on the CPU or quantised."""

    pipe: object
    text_encoder: torch.nn.Module
    tokenizer: object | None
    source: str  # "random" | "checkpoint"


def _keep_fp32(model: torch.nn.Module) -> None:
    """Cast the modules diffusers keeps in fp32 on a bf16 load back to fp32 (same rule as
    diffusers' loader: a pattern equal to one segment of the parameter name)."""
    patterns = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, param in model.named_parameters():
        if any(p in name.split(".") for p in patterns):
            param.data = param.data.float()


def build_module(factory, dtype: torch.dtype, device: str):
    """`factory()`'s module built straight on `device` with `dtype` parameters, in eval mode."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return factory().eval()
    finally:
        torch.set_default_dtype(previous)


# torch.nn.init's in-place fills: the layers' reset_parameters call them while a module is constructed.
_INIT_FILLS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
               "xavier_normal_", "zeros_", "ones_", "constant_")
# Random values go in at this many elements at a time (bounds the fill device's transient memory).
FILL_CHUNK = 2**26
# Random weights lie in +-this (about the scale of a trained layer's): values do not change memory or time,
# only overflow would, and small ones keep every activation finite.
RANDOM_WEIGHT_BOUND = 0.02


def _transformers_init_skipped():
    """transformers' own weight initialisation switched off (its models initialise through their
    `init_weights`, not torch.nn.init: a UMT5-XXL initialised on the CPU took minutes). The context
    manager moved between transformers versions; without either, a no-op."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return nullcontext()
    return no_init_weights()


@contextmanager
def init_skipped() -> Iterator[None]:
    """torch.nn.init's fills are no-ops while a module is constructed (it is filled afterwards), and
    so is transformers' initialisation."""
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FILLS}
    for name in saved:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        with _transformers_init_skipped():
            yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def fill_random(module: torch.nn.Module, fill_device: str) -> None:
    """Uniform random values in every parameter, drawn on `fill_device` chunk by chunk and copied in
    place (the GPU draws them in seconds where the CPU's generator takes minutes for a 14B DiT)."""
    with torch.no_grad():
        for param in module.parameters():
            flat = param.data.view(-1)
            for start in range(0, flat.numel(), FILL_CHUNK):
                part = flat[start:start + FILL_CHUNK]
                drawn = torch.empty(part.shape, dtype=part.dtype, device=fill_device)
                part.copy_(drawn.uniform_(-RANDOM_WEIGHT_BOUND, RANDOM_WEIGHT_BOUND))


def _build_in_host_memory(factory, dtype: torch.dtype, fill_device: str) -> torch.nn.Module:
    """A component built in host memory (see built_in_host_memory), as a checkpoint load places it.
    Built on the GPU and moved, a 14B DiT (26.6 GiB) would not fit the 24 GiB card it is offloaded
    for: a verify run capped to an RTX 4090 ran out of memory at init that way."""
    with init_skipped():
        module = build_module(factory, dtype, "cpu")
    if hasattr(module, "tie_weights"):
        # transformers ties shared embeddings at the end of its initialisation, which init_skipped() skips: a
        # UMT5 encoder built this way held its 1.96 GiB token embedding twice (`shared` and `embed_tokens`),
        # and a model-offload verify run's text encode measured that much over a checkpoint load's.
        module.tie_weights()
    fill_random(module, fill_device)
    return module


def host_at_start(plan: Plan) -> set[str]:
    """Components the plan holds in host memory before its offload hooks move anything: model and
    sequential offload start with every component on the CPU; group offload with the DiTs (and a
    bf16 text encoder it streams); a CPU text encoder always. An int8 text encoder is quantised on
    the GPU, where it stays."""
    te_host = plan.text_encoder == "cpu" or (plan.offload != "none" and plan.text_encoder == "gpu")
    out = {"text_encoder"} if te_host else set()
    if plan.offload in ("model", "sequential"):
        out |= {"transformer", "vae", "image_encoder"}
    elif plan.offload == "group":
        out.add("transformer")
    return out


def built_in_host_memory(plan: Plan) -> set[str]:
    """Components a random build makes in host memory, as `from_pretrained` loads a checkpoint there
    before the plan places it: those the plan keeps on the host, a DiT stored in fp8 (its bf16 weights
    are cast before the move, so the GPU never holds them) and, with an int8 text encoder, everything
    but that encoder (it is quantised on the GPU before the pipeline moves there: a GPU holding the
    DiT and VAE as well ran out of memory at init capped to an RTX 4080's 16 GB). The encoder itself is
    built on the GPU (faster, and no different at init: while it was quantised the GPU held 12.5 GiB
    allocated built there and 12.8 built in host memory, for its 10.6 GiB of bf16 weights)."""
    out = host_at_start(plan)
    if plan.dit_dtype == "fp8":
        out.add("transformer")
    if plan.text_encoder == "int8":
        out |= {"transformer", "vae", "image_encoder"}
    return out


def build_random(spec: ModelSpec, plan: Plan, device: str) -> Components:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    dit_dtype = DIT_DTYPES[plan.dit_dtype]
    on_host = built_in_host_memory(plan) if device.startswith("cuda") else set()

    def built(factory, dtype: torch.dtype, name: str) -> torch.nn.Module:
        """On the GPU (fast) unless the component starts in host memory (filled from the GPU, chunk by
        chunk): the GPU then holds at init what a checkpoint load would put there."""
        return _build_in_host_memory(factory, dtype, device) if name in on_host else build_module(factory, dtype, device)

    experts = []
    for _ in range(spec.experts):
        dit = built(lambda: WanTransformer3DModel(**spec.transformer), dit_dtype, "transformer")
        if dit_dtype != torch.float32:
            _keep_fp32(dit)
        experts.append(dit)
    vae = built(lambda: AutoencoderKLWan(**spec.vae), torch.float32, "vae")
    text_encoder = built(lambda: UMT5EncoderModel(UMT5Config(**spec.text_encoder)), torch.bfloat16, "text_encoder")
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=NUM_TRAIN_TIMESTEPS, flow_shift=spec.defaults.flow_shift)
    kwargs = dict(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=experts[0],
                  transformer_2=experts[1] if spec.experts == 2 else None, boundary_ratio=spec.boundary_ratio,
                  expand_timesteps=spec.expand_timesteps)
    if spec.is_i2v:
        from diffusers import WanImageToVideoPipeline

        image_encoder = image_processor = None
        if spec.image_encoder:
            from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

            image_encoder = built(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**spec.image_encoder)),
                                  torch.bfloat16, "image_encoder")
            image_processor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
        pipe = WanImageToVideoPipeline(image_encoder=image_encoder, image_processor=image_processor, **kwargs)
    else:
        from diffusers import WanPipeline

        pipe = WanPipeline(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return Components(pipe=pipe, text_encoder=text_encoder, tokenizer=None, source="random")


def save_random_checkpoint(spec: ModelSpec, path: Path, device: str) -> Path:
    """Save a random-weight build as a diffusers-format checkpoint directory (with a word-level
    tokenizer): the loading path is tested on it, and on a GPU it measures a real `from_pretrained`
    init, which a random build (random-number generation on the GPU) is not."""
    from wanfit.measure.tiny import tiny_tokenizer

    comp = build_random(spec, Plan(), device)
    comp.pipe.register_modules(tokenizer=tiny_tokenizer(), text_encoder=comp.text_encoder)
    comp.pipe.save_pretrained(path)
    return Path(path)


def build_from_checkpoint(spec: ModelSpec, plan: Plan, checkpoint: Path) -> Components:
    """Load a diffusers-format Wan checkpoint from a local directory (never the hub)."""
    from diffusers import DiffusionPipeline

    dit_dtype = DIT_DTYPES[plan.dit_dtype]
    dtype = {"default": torch.bfloat16, "vae": torch.float32, "transformer": dit_dtype, "transformer_2": dit_dtype}
    pipe = DiffusionPipeline.from_pretrained(str(checkpoint), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    text_encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
    # The runner drives the text encoder itself (its own stage; CPU / int8 placement).
    pipe.text_encoder = None
    pipe.tokenizer = None
    return Components(pipe=pipe, text_encoder=text_encoder, tokenizer=tokenizer, source="checkpoint")


def build_components(spec: ModelSpec, plan: Plan, device: str, checkpoint: Path | None = None) -> Components:
    if checkpoint is not None:
        return build_from_checkpoint(spec, plan, Path(checkpoint))
    return build_random(spec, plan, device)


def _storage_bytes(t: torch.Tensor) -> int:
    """Real bytes of a tensor. Quantised tensor subclasses (torchao) report their logical dtype's
    size from element_size(); their inner tensors hold the real storage."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_storage_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def gpu_bytes(module: torch.nn.Module | None) -> int:
    """Bytes of a module's parameters and buffers that sit on a CUDA device right now."""
    if module is None:
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(_storage_bytes(t) for t in tensors if t.is_cuda)
