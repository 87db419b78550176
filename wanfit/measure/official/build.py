"""Build an official Wan pipeline (WanTI2V, WanT2V, WanI2V) through its own constructor.

From a checkpoint directory the constructor runs unchanged. With random weights (nothing can be downloaded)
it runs too, with its three loaders swapped for builders of the same modules while it runs: `WanModel.
from_pretrained` -> a WanModel from the task config (fp32 parameters, as from_pretrained gives them; bf16
straight away under convert_model_dtype, which the constructor's own `_configure_model` would cast to),
`T5EncoderModel` -> the official umt5_xxl encoder in the config's t5_dtype (bf16) with a stand-in tokenizer,
and the VAE's `_video_vae` -> the same WanVAE_ built with real storage instead of meta + checkpoint. So every
attribute, dtype and placement is the constructor's own: T5 and the DiTs in host memory (init_on_cpu), the
VAE in fp32 on the device. Random values go in as wanfit.measure.build does it: torch's and the modules'
init fills skipped, uniform values drawn on the GPU chunk by chunk.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from wanfit.measure import patching
from wanfit.measure.build import fill_random, init_skipped
from wanfit.measure.distributed.official import OfficialLayout, cpu_distributed_build, t5_sharded
from wanfit.measure.official.loader import LoadedWan
from wanfit.measure.official.tiny import OfficialArch
from wanfit.vocabulary.catalog import ModelSpec

# Per task: the pipeline class, its module, its VAE wrapper, and the WanModel's model_type. in_dim / out_dim
# come from the catalog (48/48 TI2V, 16/16 T2V, 36/16 I2V), as the checkpoints' config.json files hold them.
PIPELINES = {"ti2v-5B": ("WanTI2V", "wan.textimage2video", "Wan2_2_VAE", "ti2v"),
             "t2v-A14B": ("WanT2V", "wan.text2video", "Wan2_1_VAE", "t2v"),
             "i2v-A14B": ("WanI2V", "wan.image2video", "Wan2_1_VAE", "i2v")}
VAE_MODULES = {"Wan2_1_VAE": "wan.modules.vae2_1", "Wan2_2_VAE": "wan.modules.vae2_2"}


class RandomIdsTokenizer:
    """Stands in for the official HuggingfaceTokenizer (the umt5-xxl tokenizer is a hub download): every text
    becomes `seq_len` random ids with a full mask. The encoder does the same work either way (it runs on all
    padded 512 tokens), and the DiT pads the context to text_len whatever its length."""

    def __init__(self, seq_len: int, vocab_size: int) -> None:
        self.seq_len, self.vocab_size = seq_len, vocab_size
        self._gen = torch.Generator().manual_seed(0)

    def __call__(self, sequence, return_mask: bool = False, **_kwargs):
        batch = 1 if isinstance(sequence, str) else len(sequence)
        ids = torch.randint(0, self.vocab_size, (batch, self.seq_len), generator=self._gen)
        mask = torch.ones_like(ids)
        return (ids, mask) if return_mask else ids


def _filled(module: torch.nn.Module, fill_device: str) -> torch.nn.Module:
    fill_random(module, fill_device)
    return module


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _random_t5_factory(wan: LoadedWan, arch: OfficialArch, fill_device: str):
    """What the pipeline constructor calls instead of T5EncoderModel(...): the official encoder module, built
    where the constructor asks (the CPU) in its dtype, and the official wrapper around it (its attributes)."""
    t5_mod = wan["wan.modules.t5"]

    def build(text_len, dtype=torch.bfloat16, device=torch.device("cpu"), checkpoint_path=None, tokenizer_path=None,
              shard_fn=None):
        with init_skipped(), _default_dtype(dtype):
            model = t5_mod.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=dtype, device=device, **arch.t5)
        encoder = object.__new__(t5_mod.T5EncoderModel)
        encoder.text_len, encoder.dtype, encoder.device = text_len, dtype, device
        encoder.checkpoint_path, encoder.tokenizer_path = checkpoint_path, tokenizer_path
        encoder.model = t5_sharded(_filled(model.eval().requires_grad_(False), fill_device), shard_fn, device)
        encoder.tokenizer = RandomIdsTokenizer(text_len, arch.t5_vocab)
        return encoder

    return build


def _vae_cfg(vae_class: str, z_dim: int, dim: int | None, kwargs: dict) -> dict:
    """The WanVAE_ arguments of the official `_video_vae` (wan.modules.vae2_1 / vae2_2: same defaults)."""
    default_dim, default_down = (96, [False, True, True]) if vae_class == "Wan2_1_VAE" else (160, [True, True, True])
    cfg = dict(dim=dim or default_dim, z_dim=z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=default_down, dropout=0.0)
    cfg.update(kwargs)
    return cfg


def _arch_vae(arch: OfficialArch, vae_class: str) -> dict:
    """The arch's VAE overrides that this VAE takes (the Wan2.1 VAE has no separate decoder width)."""
    return {k: v for k, v in arch.vae.items() if vae_class == "Wan2_2_VAE" or k != "dec_dim"}


def _random_video_vae(wan: LoadedWan, vae_class: str, arch: OfficialArch, fill_device: str):
    """Replaces `_video_vae(pretrained_path, z_dim, ...)`: the same WanVAE_, random instead of loaded."""
    vae_mod = wan[VAE_MODULES[vae_class]]

    def build(pretrained_path=None, z_dim=16, dim=None, device="cpu", **kwargs):
        cfg = _vae_cfg(vae_class, z_dim, dim, {**kwargs, **_arch_vae(arch, vae_class)})
        with init_skipped():
            model = vae_mod.WanVAE_(**cfg)
        return _filled(model, fill_device)

    return build


def _arch_video_vae(wan: LoadedWan, vae_class: str, arch: OfficialArch):
    """The official `_video_vae` with the arch's widths (a tiny checkpoint's VAE loads into a tiny WanVAE_)."""
    original = wan[VAE_MODULES[vae_class]]._video_vae
    overrides = _arch_vae(arch, vae_class)

    def build(pretrained_path=None, z_dim=16, **kwargs):
        return original(pretrained_path=pretrained_path, z_dim=z_dim, **{**kwargs, **overrides})

    return build


def _arch_t5(wan: LoadedWan, arch: OfficialArch):
    original = wan["wan.modules.t5"].umt5_xxl

    def build(**kwargs):
        return original(**{**kwargs, **arch.t5})

    return build


class _RandomDiT:
    """Stands in for WanModel in the constructor: from_pretrained builds a random one from the task config."""

    def __init__(self, wan: LoadedWan, config, spec: ModelSpec, model_type: str, arch: OfficialArch,
                 convert_model_dtype: bool, fill_device: str) -> None:
        self.cls = wan["wan.modules.model"].WanModel
        self.kwargs = dict(model_type=model_type, patch_size=tuple(config.patch_size), text_len=config.text_len,
                           in_dim=spec.transformer["in_channels"], out_dim=spec.transformer["out_channels"],
                           dim=config.dim, ffn_dim=config.ffn_dim, freq_dim=config.freq_dim, num_heads=config.num_heads,
                           num_layers=config.num_layers, window_size=tuple(config.window_size), qk_norm=config.qk_norm,
                           cross_attn_norm=config.cross_attn_norm, eps=config.eps)
        self.kwargs.update(arch.dit)
        # fp32 as from_pretrained loads the checkpoints; bf16 at once when the constructor will cast to it
        # anyway (a 14B expert never exists twice in host memory).
        self.dtype = config.param_dtype if convert_model_dtype else torch.float32
        self.fill_device = fill_device

    def from_pretrained(self, checkpoint_dir, subfolder=None, **_kwargs):
        with init_skipped(), _default_dtype(self.dtype):
            model = self.cls(**self.kwargs)
        return _filled(model, self.fill_device)


def _with_device(factory, device: torch.device):
    """The VAE wrapper built on `device`: the constructor asks for cuda:<device_id>, which a CPU run has not."""

    def build(*args, **kwargs):
        kwargs["device"] = device
        return factory(*args, **kwargs)

    return build


def _constructor_kwargs(cls, knobs_t5_cpu: bool, convert_model_dtype: bool, layout: OfficialLayout | None) -> dict:
    """generate.py's constructor arguments: one GPU (device 0, rank 0), or a rank of a several-GPU run (its
    device, rank, t5_fsdp, dit_fsdp, use_sp; the constructor then builds on the device, not init_on_cpu)."""
    kwargs = dict(device_id=0, rank=0, t5_cpu=knobs_t5_cpu, init_on_cpu=True, convert_model_dtype=convert_model_dtype)
    kwargs.update(layout.constructor_kwargs() if layout is not None else {})
    # wan22 2.2.11 on PyPI adds `lightning=True` to WanT2V / WanI2V (not in Wan-Video/Wan2.2): it loads the DiTs
    # from /mnt/engines/wan22/... and skips classifier-free guidance's second forward. The upstream behaviour
    # is asked for.
    if "lightning" in inspect.signature(cls.__init__).parameters:
        kwargs["lightning"] = False
    return kwargs


def build_official(wan: LoadedWan, task: str, spec: ModelSpec, device: str, *, t5_cpu: bool,
                   convert_model_dtype: bool, checkpoint: Path | None = None, arch: OfficialArch | None = None,
                   layout: OfficialLayout | None = None):
    """The official pipeline object of `task` on `device`: through its constructor from `checkpoint` (loaders
    unchanged, the arch's widths only), or with random weights (module docstring). `layout`: this rank's
    several-GPU constructor arguments (wanfit.measure.distributed.official), None on one GPU."""
    arch = arch or OfficialArch()
    cls_name, module_name, vae_class, model_type = PIPELINES[task]
    pipe_mod, vae_mod = wan[module_name], wan[VAE_MODULES[vae_class]]
    cls = getattr(pipe_mod, cls_name)
    config = wan["wan.configs"].WAN_CONFIGS[task]
    if arch.dit:  # the config the constructor and generate() read, with the arch's widths
        config = type(config)({**config, **{k: v for k, v in arch.dit.items() if k in config}})
    target = torch.device(device if device != "cuda" else "cuda:0")
    fill_device = "cuda" if target.type == "cuda" else "cpu"
    with ExitStack() as patches:
        def patch(module, name, value):
            patching.patch(patches, module, name, value)

        patch(pipe_mod, vae_class, _with_device(getattr(pipe_mod, vae_class), target))
        if checkpoint is None:
            patch(pipe_mod, "T5EncoderModel", _random_t5_factory(wan, arch, fill_device))
            patch(pipe_mod, "WanModel", _RandomDiT(wan, config, spec, model_type, arch, convert_model_dtype, fill_device))
            patch(vae_mod, "_video_vae", _random_video_vae(wan, vae_class, arch, fill_device))
        else:
            patch(wan["wan.modules.t5"], "umt5_xxl", _arch_t5(wan, arch))
            patch(vae_mod, "_video_vae", _arch_video_vae(wan, vae_class, arch))
        patches.enter_context(cpu_distributed_build(pipe_mod, cls, layout, target))
        kwargs = _constructor_kwargs(cls, t5_cpu, convert_model_dtype, layout)
        pipe = cls(config, str(checkpoint or "random-weights"), **kwargs)
    pipe.device = target
    return pipe


def official_dits(pipe) -> dict[str, torch.nn.Module]:
    """The pipeline's DiTs under wanfit's names: `transformer` the (high-noise) first, `transformer_2` the
    low-noise expert of an A14B model."""
    if hasattr(pipe, "high_noise_model"):
        return {"transformer": pipe.high_noise_model, "transformer_2": pipe.low_noise_model}
    return {"transformer": pipe.model}


def save_official_checkpoint(wan: LoadedWan, task: str, spec: ModelSpec, path: Path, arch: OfficialArch | None = None,
                             tokenizer=None) -> Path:
    """A random-weight build saved in the official layout (the loaders' file names): WanModel.save_pretrained
    per DiT, torch.save of the T5 and VAE state dicts, and a tokenizer under config.t5_tokenizer (wanfit's
    word-level one unless given: the umt5-xxl one is a download). Tests load it; on a GPU it measures a real
    checkpoint init."""
    from wanfit.measure.tiny import tiny_tokenizer

    arch = arch or OfficialArch()
    pipe = build_official(wan, task, spec, "cpu", t5_cpu=True, convert_model_dtype=False, arch=arch)
    config = pipe.config
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dits = official_dits(pipe)
    if "transformer_2" in dits:
        dits["transformer"].save_pretrained(path / config.high_noise_checkpoint)
        dits["transformer_2"].save_pretrained(path / config.low_noise_checkpoint)
    else:
        dits["transformer"].save_pretrained(path)
    torch.save(pipe.text_encoder.model.state_dict(), path / config.t5_checkpoint)
    torch.save(pipe.vae.model.state_dict(), path / config.vae_checkpoint)
    (tokenizer or tiny_tokenizer()).save_pretrained(path / config.t5_tokenizer)
    return path
