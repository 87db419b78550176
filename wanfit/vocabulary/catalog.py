"""The Wan models wanfit knows: exact diffusers/transformers configs, defaults and sources.

Pure data (no torch). The runner builds each architecture from these configs with random
weights; memory and time depend on shapes and dtypes, not on weight values. Sources are the
ones collected in the project's reference notes (diffusers 0.42.1 convert script, hub configs,
official Wan repositories); each spec names its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from wanfit.vocabulary.errors import WanfitError, unknown_name_error

TEXT_LEN = 512  # T5 tokens the pipeline pads prompts to (diffusers __call__ max_sequence_length)
CLIP_IMAGE_TOKENS = 257  # CLIP ViT-H/14 hidden_states[-2] tokens (Wan2.1 I2V only)

_DIT_COMMON = {
    "patch_size": [1, 2, 2],
    "attention_head_dim": 128,
    "text_dim": 4096,
    "freq_dim": 256,
    "qk_norm": "rms_norm_across_heads",
    "cross_attn_norm": True,
    "eps": 1e-06,
    "rope_max_seq_len": 1024,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "pos_embed_seq_len": None,
}


def _dit(layers: int, heads: int, ffn: int, in_ch: int, out_ch: int, **extra) -> dict:
    return {**_DIT_COMMON, "num_layers": layers, "num_attention_heads": heads, "ffn_dim": ffn,
            "in_channels": in_ch, "out_channels": out_ch, **extra}


VAE21 = {
    "base_dim": 96, "decoder_base_dim": None, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
    "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0, "is_residual": False,
    "in_channels": 3, "out_channels": 3, "patch_size": None, "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
                     0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652,
                    1.5579, 1.6382, 1.1253, 2.8251, 1.916],
}

VAE22 = {
    "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
    "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0, "is_residual": True,
    "in_channels": 12, "out_channels": 12, "patch_size": 2, "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    "latents_mean": [-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542,
                     0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109,
                     0.2665, -0.2108, -0.2158, 0.2502, -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899,
                     -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
                     0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667],
    "latents_std": [0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894,
                    1.0901, 0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146,
                    0.8986, 0.5659, 0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709,
                    0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537,
                    0.5444, 0.4089, 0.7468, 0.7744],
}

UMT5_XXL = {
    "vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
    "num_decoder_layers": 24, "num_heads": 64, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
    "layer_norm_epsilon": 1e-06, "tie_word_embeddings": False,
}

CLIP_VIT_H14 = {
    "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
    "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
}

_SCHEDULER_SRC = "diffusers scripts/convert_wan_to_diffusers.py (flow_shift 5.0 for TI2V, 3.0 otherwise)"


class GenerationSettings(BaseModel):
    """What one generation asks for (height x width in pixels): a model's defaults and every Workload."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    height: int
    width: int
    frames: int
    steps: int
    guidance: float
    guidance_2: float | None = None


class Defaults(GenerationSettings):
    """What the model's own usage defaults to."""

    flow_shift: float
    fps: int


class ParamCounts(BaseModel):
    """Parameter counts of each component (exact; checked against the built modules in tests)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    dit_per_expert: int
    vae: int
    text_encoder: int
    image_encoder: int = 0


class ModelSpec(BaseModel):
    """One Wan checkpoint: architecture, pipeline wiring, defaults and where each value came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str
    hf_repo: str
    pipeline: Literal["WanPipeline", "WanImageToVideoPipeline"]
    transformer: dict
    experts: Literal[1, 2] = 1
    boundary_ratio: float | None = None  # the step share of the high-noise expert (two-expert models)
    expand_timesteps: bool = False
    vae: dict
    text_encoder: dict = UMT5_XXL  # every Wan checkpoint encodes text with UMT5-XXL
    image_encoder: dict | None = None
    text_encoder_stored_dtype: Literal["bf16", "fp32"]
    defaults: Defaults
    params: ParamCounts
    dit_family: str  # models whose DiT has the same shape share step-time calibrations
    sources: dict[str, str]

    @property
    def inner_dim(self) -> int:
        return self.transformer["num_attention_heads"] * self.transformer["attention_head_dim"]

    @property
    def vae_spatial(self) -> int:
        return self.vae["scale_factor_spatial"]

    @property
    def vae_temporal(self) -> int:
        return self.vae["scale_factor_temporal"]

    @property
    def vae_family(self) -> str:
        """Which Wan VAE decodes this model's latents (profiles record a decode's kernel split per VAE)."""
        return "wan2.2-vae" if self.vae.get("z_dim") == VAE22["z_dim"] else "wan2.1-vae"

    @property
    def spatial_stride(self) -> int:
        """Pixel multiple a height/width must be: VAE downsampling x DiT patch."""
        return self.vae_spatial * self.transformer["patch_size"][1]

    @property
    def is_i2v(self) -> bool:
        return self.pipeline == "WanImageToVideoPipeline"

    @property
    def context_tokens(self) -> int:
        """Cross-attention context length: text tokens (+ CLIP image tokens for Wan2.1 I2V)."""
        return TEXT_LEN + (CLIP_IMAGE_TOKENS if self.image_encoder else 0)


_DIT_SRC = "diffusers 0.42.1 scripts/convert_wan_to_diffusers.py diffusers_config"
_TE_PARAMS = 5_680_910_336
_VAE22_PARAMS = 704_688_668
_VAE21_PARAMS = 126_892_531
_CLIP_PARAMS = 632_076_800

_WAN21_TE_SRC = "hub text_encoder/ of the Wan2.1 repos is fp32 (22.7 GB)"


def _wan22_a14b(task: str, pipeline: str, in_channels: int, boundary_ratio: float, dit_params: int,
                guidance: tuple[float, float], sources: dict[str, str]) -> ModelSpec:
    """A Wan2.2 A14B checkpoint: two 14B experts (high noise, then low noise) on the Wan2.1 VAE."""
    return ModelSpec(
        key=f"wan2.2-{task.lower()}-a14b", hf_repo=f"Wan-AI/Wan2.2-{task}-A14B-Diffusers", pipeline=pipeline,
        transformer=_dit(40, 40, 13824, in_channels, 16), experts=2, boundary_ratio=boundary_ratio, vae=VAE21,
        text_encoder_stored_dtype="bf16",
        defaults=Defaults(height=720, width=1280, frames=81, steps=40, guidance=guidance[0], guidance_2=guidance[1],
                          flow_shift=3.0, fps=16),
        params=ParamCounts(dit_per_expert=dit_params, vae=_VAE21_PARAMS, text_encoder=_TE_PARAMS),
        dit_family="dit-14b", sources={**sources, "vae": "Wan2.1 VAE (AutoencoderKLWan defaults)",
                                       "scheduler": _SCHEDULER_SRC})


def _wan21_t2v(size: str, transformer: dict, dit_params: int, family: str, defaults: Defaults,
               defaults_source: str) -> ModelSpec:
    """A Wan2.1 text-to-video checkpoint (the 1.3B and the 14B differ only in their DiT and defaults)."""
    return ModelSpec(
        key=f"wan2.1-t2v-{size.lower()}", hf_repo=f"Wan-AI/Wan2.1-T2V-{size}-Diffusers", pipeline="WanPipeline",
        transformer=transformer, vae=VAE21, text_encoder_stored_dtype="fp32", defaults=defaults,
        params=ParamCounts(dit_per_expert=dit_params, vae=_VAE21_PARAMS, text_encoder=_TE_PARAMS), dit_family=family,
        sources={"transformer": f"{_DIT_SRC} 'Wan-T2V-{size}'", "defaults": defaults_source,
                 "text_encoder": _WAN21_TE_SRC, "scheduler": _SCHEDULER_SRC})


MODELS: dict[str, ModelSpec] = {
    m.key: m
    for m in [
        ModelSpec(
            key="wan2.2-ti2v-5b", hf_repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers", pipeline="WanPipeline",
            transformer=_dit(30, 24, 14336, 48, 48), boundary_ratio=None, expand_timesteps=True,
            vae=VAE22, text_encoder_stored_dtype="bf16",
            defaults=Defaults(height=704, width=1280, frames=121, steps=50, guidance=5.0, flow_shift=5.0, fps=24),
            params=ParamCounts(dit_per_expert=4_999_787_712, vae=_VAE22_PARAMS, text_encoder=_TE_PARAMS),
            dit_family="dit-5b",
            sources={"transformer": f"{_DIT_SRC} 'Wan2.2-TI2V-5B'; official wan/configs/wan_ti2v_5B.py",
                     "vae": "convert script vae22_diffusers_config",
                     "defaults": "official wan/configs/wan_ti2v_5B.py (1280x704, 121 f, 50 steps, shift 5, guide 5, 24 fps)",
                     "pipeline": "hub model_index.json: WanPipeline, expand_timesteps=true, boundary_ratio=null",
                     "scheduler": _SCHEDULER_SRC},
        ),
        _wan22_a14b("T2V", "WanPipeline", 16, 0.875, 14_288_491_584, (4.0, 3.0), {
            "transformer": "hub Wan2.2-T2V-A14B-Diffusers transformer_2/config.json (refs/pr/2)",
            "defaults": "official wan/configs/wan_t2v_A14B.py (81 f, 40 steps, guide 4.0/3.0); "
                        "flow_shift 3.0 from the diffusers scheduler_config (official code samples 12.0)",
            "pipeline": "convert script: WanPipeline(transformer_2=..., boundary_ratio=0.875)"}),
        _wan22_a14b("I2V", "WanImageToVideoPipeline", 36, 0.9, 14_288_901_184, (3.5, 3.5), {
            "transformer": f"{_DIT_SRC} 'Wan2.2-I2V-14B-720p' (in_channels 36, no image_dim)",
            "defaults": "official wan/configs/wan_i2v_A14B.py (81 f, 40 steps, guide 3.5/3.5); "
                        "flow_shift 3.0 from the diffusers scheduler_config (official code 5.0)",
            "pipeline": "convert script: WanImageToVideoPipeline(boundary_ratio=0.9), no image encoder"}),
        _wan21_t2v("1.3B", _dit(30, 12, 8960, 16, 16), 1_418_996_800, "dit-1.3b",
                   Defaults(height=480, width=832, frames=81, steps=50, guidance=5.0, flow_shift=3.0, fps=16),
                   "official Wan2.1 generate.py (t2v-1.3B sizes 480*832 / 832*480, 50 steps, guide 5.0)"),
        _wan21_t2v("14B", _dit(40, 40, 13824, 16, 16), 14_288_491_584, "dit-14b",
                   Defaults(height=720, width=1280, frames=81, steps=50, guidance=5.0, flow_shift=3.0, fps=16),
                   "official Wan2.1 generate.py (t2v-14B default 1280*720, 50 steps, guide 5.0)"),
        ModelSpec(
            key="wan2.1-i2v-14b", hf_repo="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", pipeline="WanImageToVideoPipeline",
            transformer=_dit(40, 40, 13824, 36, 16, image_dim=1280, added_kv_proj_dim=5120),
            vae=VAE21, image_encoder=CLIP_VIT_H14, text_encoder_stored_dtype="fp32",
            defaults=Defaults(height=720, width=1280, frames=81, steps=40, guidance=5.0, flow_shift=3.0, fps=16),
            params=ParamCounts(dit_per_expert=16_394_878_784, vae=_VAE21_PARAMS, text_encoder=_TE_PARAMS,
                               image_encoder=_CLIP_PARAMS),
            dit_family="dit-14b-i2v",
            sources={"transformer": f"{_DIT_SRC} 'Wan-I2V-14B-720p' (in 36, image_dim 1280, added_kv_proj_dim 5120)",
                     "image_encoder": "CLIP ViT-H/14 vision tower config (Wan2.1-I2V-14B-720P-Diffusers/image_encoder)",
                     "defaults": "official Wan2.1 generate.py (i2v-14B: 40 steps, guide 5.0); 480P and 720P "
                                 "checkpoints share this architecture",
                     "scheduler": _SCHEDULER_SRC},
        ),
    ]
}


# The official Wan2.2 code's task for each model it covers (wan.configs.WAN_CONFIGS); the Wan2.1 models are
# not tasks of the Wan2.2 package.
OFFICIAL_TASKS = {"wan2.2-ti2v-5b": "ti2v-5B", "wan2.2-t2v-a14b": "t2v-A14B", "wan2.2-i2v-a14b": "i2v-A14B"}


def official_task(model_key: str) -> str:
    """The official Wan2.2 task of a model, or a one-line error naming the models it covers."""
    key = get_model(model_key).key
    if key not in OFFICIAL_TASKS:
        raise WanfitError(f"the official Wan2.2 code (runtime wan) has no task for {key}: use --runtime diffusers, "
                          f"or one of {', '.join(OFFICIAL_TASKS)}")
    return OFFICIAL_TASKS[key]


def get_model(key: str) -> ModelSpec:
    """The spec for `key`, or a one-line error naming the closest known models."""
    try:
        return MODELS[key.lower()]
    except KeyError:
        raise unknown_name_error("model", key, MODELS, "wanfit models") from None
