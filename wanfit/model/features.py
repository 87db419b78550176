"""Physics-shaped features of a workload and plan, shared by the fitter and the predictor.

Pure Python on top of wanfit.model.geometry (no numpy, no sklearn: this runs on the `plan` path).
Time features are seconds of work at the calibrated GPU's throughput ceilings, so every fitted
coefficient is an inverse efficiency (1.0 = the kernel runs at the measured ceiling) and carries
over to another model (other shapes) and, term by term, to another GPU (other ceilings).
Memory features are GiB (2**30 bytes).

The plan semantics here mirror how the runner applies a Plan (wanfit/measure/placement.py):
which component sits on the GPU in which stage, and which bytes cross the host link.
"""

from __future__ import annotations

from dataclasses import dataclass

from wanfit.model.geometry import BYTES, geometry
from wanfit.vocabulary.catalog import ModelSpec
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan, Workload

# diffusers AutoencoderKLWan tiled decoding (0.42.1 defaults): 256-pixel tiles every 192 pixels.
VAE_TILE_PIXELS = 256
VAE_TILE_STRIDE_PIXELS = 192

COMPONENTS = ("transformer", "vae", "text_encoder", "image_encoder")


def vae_tiles(spec: ModelSpec, height: int, width: int) -> tuple[int, float]:
    """(tiles, output pixels summed over the tiles, overlaps included) of one frame under VAE
    tiling: the latent is cut into tiles of 256/s latent pixels every 192/s (s = VAE spatial
    factor), clipped at the edges, and every tile is decoded on its own, latent frame by latent
    frame, and kept until the tiles are blended."""
    s = spec.vae_spatial
    tile, stride = VAE_TILE_PIXELS // s, VAE_TILE_STRIDE_PIXELS // s
    lh, lw = height // s, width // s
    rows = [min(tile, lh - i) for i in range(0, lh, stride)]
    cols = [min(tile, lw - j) for j in range(0, lw, stride)]
    return len(rows) * len(cols), float(sum(rows) * sum(cols) * s * s)


def size_features(workload: Workload, ceilings: Ceilings) -> dict[str, float]:
    """Per-step and per-decode features of one workload (time features in seconds at `ceilings`)."""
    spec = workload.spec
    g = geometry(workload)
    layers = spec.transformer["num_layers"]
    pixel_frames = float(g.pixels_per_frame) * g.frames * workload.batch
    tiles, tile_pixels = vae_tiles(spec, workload.height, workload.width)
    return {
        # One denoising step (CFG: two forwards).
        "matmul_s": g.step_linear_flops / (ceilings.matmul_tflops * 1e12),
        "attention_s": g.step_attention_flops / (ceilings.attention_tflops * 1e12),
        # One bf16 pass over every token x hidden element of every block (norms, RoPE, modulation,
        # activations, residual adds are a number of such passes: the fitted coefficient).
        "elementwise_s": g.step_token_elements * BYTES["bf16"] / (ceilings.device_copy_gbps * 1e9),
        # Per-token timestep modulation (Wan2.2-TI2V-5B): counted traffic at the copy bandwidth.
        "modulation_s": g.step_modulation_bytes / (ceilings.device_copy_gbps * 1e9),
        # Per block-forward overhead that does not scale with tokens (launches, small kernels).
        "layer_forwards": float(layers * g.forwards_per_step),
        # Memory: one bf16 hidden state of the DiT sequence (activations are a number of these).
        "hidden_state_gib": float(g.tokens) * spec.inner_dim * BYTES["bf16"] * workload.batch / GIB,
        # VAE decode: output pixels per frame (decoder feature maps) and the decoded video in fp32.
        "frame_mpix": g.pixels_per_frame * workload.batch / 1e6,
        "video_fp32_gib": g.video_bytes_fp32 / GIB,
        "pixel_gframes": pixel_frames / 1e9,  # decode work: output pixels x frames (giga)
        # Tiled decode: one decoder call per tile per latent frame; every decoded tile kept in fp32.
        "tile_calls_k": tiles * g.latent_frames * workload.batch / 1e3,
        "tiles_fp32_gib": tile_pixels * 3 * 4 * g.frames * workload.batch / GIB,
        "tokens": float(g.tokens),
        "latent_frames": float(g.latent_frames),
        "frames": float(g.frames),
        "forwards_per_step": float(g.forwards_per_step),
    }


# ---- weights ---------------------------------------------------------------------------------


def dit_variant(plan: Plan) -> str:
    return plan.dit_dtype


def text_encoder_variant(plan: Plan) -> str | None:
    """Weight variant of the text encoder on the GPU (None: it computes on the CPU)."""
    return {"gpu": "bf16", "int8": "int8", "cpu": None}[plan.text_encoder]


def analytic_weights_gib(spec: ModelSpec, component: str, variant: str) -> float:
    """Weights from parameter counts and dtype sizes: the fallback when a variant was not measured.

    int8 text encoder: weight-only int8 quantises the Linear layers; the token embedding
    (vocab x d_model) stays bf16. fp8 DiT storage: every parameter in one byte (layerwise casting
    keeps a few small norm / embedding layers in bf16, which this ignores)."""
    p = spec.params
    if component == "transformer":
        return p.dit_per_expert * BYTES[variant] / GIB
    if component == "vae":
        return p.vae * BYTES[variant] / GIB
    if component == "image_encoder":
        return p.image_encoder * BYTES[variant] / GIB
    if component == "text_encoder":
        if variant == "int8":
            embedding = spec.text_encoder["vocab_size"] * spec.text_encoder["d_model"]
            return ((p.text_encoder - embedding) * BYTES["int8"] + embedding * BYTES["bf16"]) / GIB
        return p.text_encoder * BYTES[variant] / GIB
    raise ValueError(f"unknown component {component}")


@dataclass(frozen=True)
class Weights:
    """GiB of each component's weights in the variant a plan uses (per DiT expert)."""

    dit: float  # one expert, in the plan's storage dtype
    text_encoder: float  # on the GPU (0 when it computes on the CPU)
    text_encoder_host: float  # bf16 copy in host RAM when it computes on the CPU
    vae: float
    image_encoder: float
    experts: int
    dit_layers: int

    @property
    def block(self) -> float:
        """One transformer block of one expert (block-level group offloading moves these)."""
        return self.dit / self.dit_layers


def resident_gib(stage: str, plan: Plan, w: Weights) -> float:
    """Weights on the GPU during `stage` (GiB), as the runner places them for `plan`.

    none: everything resident all run. model: one component at a time in the pipeline's chain
    (text_encoder -> transformer -> transformer_2 -> vae). group: DiT blocks stream per forward
    (counted in the stage's transient), VAE / image encoder resident. sequential: every leaf
    streams. A weight-only int8 text encoder is placed on the GPU outside the offload chain, so it
    stays resident under every offload mode."""
    te_int8 = w.text_encoder if plan.text_encoder == "int8" else 0.0
    te = w.text_encoder if plan.text_encoder != "cpu" else 0.0
    if plan.offload == "none":
        return w.dit * w.experts + te + w.vae + w.image_encoder
    if plan.offload == "model":
        te_chain = w.text_encoder if plan.text_encoder == "gpu" else 0.0
        in_chain = {"init": 0.0, "text_encode": te_chain, "prepare": w.image_encoder or te_chain,
                    "denoise": w.dit, "expert_switch": w.dit, "vae_decode": w.vae}[stage]
        return in_chain + te_int8
    if plan.offload == "group":
        return w.vae + w.image_encoder + te_int8
    return te_int8  # sequential


def host_ram_gib(plan: Plan, w: Weights) -> float:
    """System memory the plan needs for weights kept off the GPU (GiB)."""
    dits = w.dit * w.experts
    te_host = w.text_encoder_host if plan.text_encoder == "cpu" else 0.0
    te_offloaded = w.text_encoder if plan.text_encoder == "gpu" else 0.0
    if plan.offload == "none":
        return te_host
    if plan.offload == "group":
        return dits + te_host + te_offloaded
    # model / sequential: every component handed to the offload chain lives in host RAM.
    return dits + w.vae + w.image_encoder + te_host + te_offloaded


# DiT blocks in flight under group offloading when not calibrated: the current one and the one
# prefetched on the transfer stream.
GROUPS_IN_FLIGHT = 2


@dataclass(frozen=True)
class Moves:
    """Bytes (GiB) crossing the host link in one stage: host->device and device->host (pageable)."""

    h2d: float = 0.0
    d2h: float = 0.0


def model_offload_moves(stage: str, plan: Plan, w: Weights) -> Moves:
    """Whole-model moves of diffusers model CPU offload (accelerate hooks, pageable memory).

    text_encode: the text encoder is uploaded (only when it is in the chain, i.e. `gpu`).
    denoise (step 1): the previous model goes down, the DiT comes up.
    expert_switch: expert 1 down, expert 2 up.
    vae_decode: the last DiT goes down, the VAE up, and at the end of the call the pipeline moves
    the VAE back (maybe_free_model_hooks)."""
    if plan.offload != "model":
        return Moves()
    te = w.text_encoder if plan.text_encoder == "gpu" else 0.0
    if stage == "text_encode":
        return Moves(h2d=te)
    if stage == "prepare":  # I2V with a CLIP image encoder: it replaces the text encoder
        return Moves(h2d=w.image_encoder, d2h=te) if w.image_encoder else Moves()
    if stage == "denoise":
        return Moves(h2d=w.dit, d2h=w.image_encoder or te)
    if stage == "expert_switch":
        return Moves(h2d=w.dit, d2h=w.dit) if w.experts == 2 else Moves()
    if stage == "vae_decode":
        return Moves(h2d=w.vae, d2h=w.dit + w.vae)
    return Moves()
