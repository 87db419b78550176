"""Analytic quantities of a workload on a model: latent shape, tokens, FLOPs, bytes.

Pure arithmetic from the architecture config (no torch): these are the physics-shaped features
the fitted models use, so a fit carries over to sizes, frame counts and models it never saw.
FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from wanfit.vocabulary.catalog import TEXT_LEN, ModelSpec
from wanfit.vocabulary.workload import Workload

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
# Extra memory traffic, in bytes per token per hidden element per block, of a DiT whose timestep
# modulation is per token (`expand_timesteps`, Wan2.2-TI2V-5B) instead of one vector broadcast over
# the sequence. Counted from diffusers' WanTransformerBlock.forward: the (tokens, 6, dim) modulation
# cast bf16 -> fp32 (read 12, write 24) and added to scale_shift_table (read 24, write 24); `1 + scale`
# for attention and FFN (read 4, write 4, twice); shift, scale and gate read per token by the two
# modulated norms and the two gated residual adds (4 each: 24). Total 124.
PER_TOKEN_MODULATION_BYTES = 12 + 24 + 24 + 24 + 2 * 8 + 24


@dataclass(frozen=True)
class Geometry:
    """Shapes and work of one workload. Per-forward quantities are for one transformer forward
    (batch included); `forwards_per_step` is 2 with classifier-free guidance."""

    latent_frames: int
    latent_height: int
    latent_width: int
    latent_channels: int
    tokens: int  # DiT sequence length per sample
    context_tokens: int
    linear_flops: float  # per forward
    attention_flops: float  # per forward (self + cross attention score and value products)
    token_elements: float  # tokens x inner_dim x layers x batch: the memory-bound elementwise work
    modulation_bytes: float  # per forward: extra traffic of per-token timestep modulation (0 if broadcast)
    forwards_per_step: int
    pixels_per_frame: int
    frames: int
    video_bytes_fp32: float  # decoded video [B,3,F,H,W] in fp32
    latent_bytes_fp32: float

    def per_step(self, per_forward: float) -> float:
        """A per-forward quantity (FLOPs, elements, bytes) over one denoising step: every forward it runs."""
        return per_forward * self.forwards_per_step


def latent_shape(spec: ModelSpec, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(channels, frames, height, width) of the latent, as diffusers' prepare_latents makes it."""
    t = (frames - 1) // spec.vae_temporal + 1
    return spec.vae["z_dim"], t, height // spec.vae_spatial, width // spec.vae_spatial


def geometry(wl: Workload, cfg_always: bool = False) -> Geometry:
    """`cfg_always`: the runtime runs the unconditional forward whatever the guidance (the official Wan2.2
    pipelines compute both predictions at every step)."""
    spec = wl.spec
    c, t, h, w = latent_shape(spec, wl.frames, wl.height, wl.width)
    p_t, p_h, p_w = spec.transformer["patch_size"]
    tokens = (t // p_t) * (h // p_h) * (w // p_w)
    d = spec.inner_dim
    ffn = spec.transformer["ffn_dim"]
    layers = spec.transformer["num_layers"]
    ctx = spec.context_tokens
    b = wl.batch
    # Per block: self-attn q,k,v,o (4 d^2 per token), cross-attn q,o over video tokens (2 d^2) and
    # k,v over the context (2 d^2 per context token), FFN up+down (2 d ffn).
    macs_per_layer = tokens * (6 * d * d + 2 * d * ffn) + ctx * 2 * d * d
    linear = 2.0 * macs_per_layer * layers * b
    # Self-attention QK^T and PV: 2 matmuls of tokens x tokens x d; cross: tokens x ctx x d.
    attention = 2.0 * 2 * (tokens * tokens + tokens * ctx) * d * layers * b
    pixels = wl.height * wl.width
    return Geometry(
        latent_frames=t, latent_height=h, latent_width=w, latent_channels=c, tokens=tokens,
        context_tokens=ctx, linear_flops=linear, attention_flops=attention,
        token_elements=float(tokens) * d * layers * b,
        modulation_bytes=float(tokens) * d * layers * b * PER_TOKEN_MODULATION_BYTES if spec.expand_timesteps else 0.0,
        forwards_per_step=2 if wl.cfg or cfg_always else 1,
        pixels_per_frame=pixels, frames=wl.frames, video_bytes_fp32=4.0 * 3 * wl.frames * pixels * b,
        latent_bytes_fp32=4.0 * c * t * h * w * b,
    )


def text_encoder_flops(spec: ModelSpec, prompts: int = 2) -> float:
    """UMT5 encoder forward FLOPs for `prompts` prompts of TEXT_LEN tokens (linear layers only)."""
    te = spec.text_encoder
    d, dff, layers = te["d_model"], te["d_ff"], te["num_layers"]
    inner = te["num_heads"] * te["d_kv"]
    macs = TEXT_LEN * layers * (4 * d * inner + 3 * d * dff)  # q,k,v,o + gated FFN (wi_0, wi_1, wo)
    return 2.0 * macs * prompts


def flow_timesteps(steps: int, flow_shift: float, num_train_timesteps: int = 1000) -> list[float]:
    """Timesteps of diffusers' UniPCMultistepScheduler with use_flow_sigmas (Wan's scheduler)."""
    out = []
    for i in range(steps):
        s = 1.0 + (1.0 / num_train_timesteps - 1.0) * i / steps  # linspace(1, 1/N, steps+1)[:-1]
        s = flow_shift * s / (1.0 + (flow_shift - 1.0) * s)
        out.append(s * num_train_timesteps)
    return out


def high_noise_steps(spec: ModelSpec, steps: int, flow_shift: float | None = None) -> int:
    """How many steps the high-noise expert (`transformer`) runs in a two-expert (A14B) model."""
    if spec.experts == 1 or spec.boundary_ratio is None:
        return steps
    shift = spec.defaults.flow_shift if flow_shift is None else flow_shift
    boundary = spec.boundary_ratio * 1000
    return sum(1 for t in flow_timesteps(steps, shift) if t >= boundary)


def crosses_expert_switch(spec: ModelSpec, steps: int) -> bool:
    """Whether a job of `steps` steps runs both experts of a two-expert model (its schedule crosses the boundary)."""
    return spec.experts == 2 and 0 < high_noise_steps(spec, steps) < steps
