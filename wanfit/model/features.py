"""Physics-shaped features of a workload and plan, shared by the fitter and the predictor.

Pure Python on top of wanfit.model.geometry (no numpy, no sklearn: this runs on the `plan` path).
Time features are seconds of work at the calibrated GPU's throughput ceilings, so every fitted
coefficient is an inverse efficiency (1.0 = the kernel runs at the measured ceiling) and carries
over to another model (other shapes) and, term by term, to another GPU (other ceilings).
Memory features are GiB (2**30 bytes).

Which weights a plan places where is wanfit.model.weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

from wanfit.model.geometry import BYTES, geometry
from wanfit.vocabulary.catalog import ModelSpec
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.units import GB, GIB, TFLOP
from wanfit.vocabulary.workload import Workload

# diffusers AutoencoderKLWan tiled decoding (0.42.1 defaults): 256-pixel tiles every 192 pixels.
VAE_TILE_PIXELS = 256
VAE_TILE_STRIDE_PIXELS = 192


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


@lru_cache(maxsize=256)
def size_features(workload: Workload, ceilings: Ceilings, cfg_always: bool = False) -> Mapping[str, float]:
    """Per-step and per-decode features of one workload (time features in seconds at `ceilings`; `cfg_always`:
    the runtime's steps run both CFG forwards whatever the guidance). Read-only and cached: `plan` predicts
    every plan of a workload from the same features (72 a GPU)."""
    return MappingProxyType(_size_features(workload, ceilings, cfg_always))


def _size_features(workload: Workload, ceilings: Ceilings, cfg_always: bool) -> dict[str, float]:
    spec = workload.spec
    g = geometry(workload, cfg_always)
    layers = spec.transformer["num_layers"]
    pixel_frames = float(g.pixels_per_frame) * g.frames * workload.batch
    tiles, tile_pixels = vae_tiles(spec, workload.height, workload.width)
    return {
        # One denoising step (CFG: two forwards).
        "matmul_s": g.per_step(g.linear_flops) / (ceilings.matmul_tflops * TFLOP),
        "attention_s": g.per_step(g.attention_flops) / (ceilings.attention_tflops * TFLOP),
        # One bf16 pass over every token x hidden element of every block (norms, RoPE, modulation,
        # activations, residual adds are a number of such passes: the fitted coefficient).
        "elementwise_s": g.per_step(g.token_elements) * BYTES["bf16"] / (ceilings.device_copy_gbps * GB),
        # Per-token timestep modulation (Wan2.2-TI2V-5B): counted traffic at the copy bandwidth.
        "modulation_s": g.per_step(g.modulation_bytes) / (ceilings.device_copy_gbps * GB),
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
