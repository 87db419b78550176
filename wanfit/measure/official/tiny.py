"""Architecture overrides of the official builders: `OfficialArch()` is the real model; `tiny_arch()` scales
it down (two layers, toy widths) so the official pipelines run on a CPU in seconds. Structure is kept: the
TI2V-5B's Wan2.2 VAE with z_dim 48 and its 2x2 patchify, the A14B's two experts and their swap, I2V's 36
input channels, 512 text tokens. Used by tests and GPU smoke runs; never for predictions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OfficialArch:
    """Keyword overrides for the official builders; empty = the real architecture.

    dit: WanModel constructor arguments over the task config's (dim, ffn_dim, num_heads, num_layers, freq_dim,
    text_dim). t5: umt5_xxl arguments (dim, dim_attn, dim_ffn, num_heads, encoder_layers, num_buckets,
    vocab_size). vae: the VAE builders' arguments (dim; dec_dim for the Wan2.2 VAE), z_dim never changes."""

    dit: dict = field(default_factory=dict)
    t5: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)

    @property
    def t5_vocab(self) -> int:
        return self.t5.get("vocab_size", 256384)  # umt5-xxl's vocabulary

    @property
    def text_dim(self) -> int:
        return self.dit.get("text_dim", 4096)  # umt5-xxl's width


# The text width stays umt5-xxl's 4096: WanModel leaves text_dim out of the config.json it saves
# (ignore_for_config), so a checkpoint's DiT always loads with 4096 and the tiny T5 must match it.
_TEXT_DIM = 4096


def tiny_arch() -> OfficialArch:
    """The tiny variant: head dim 16 keeps the official RoPE split (t, h, w) = (4, 2, 2) complex pairs even."""
    return OfficialArch(
        dit={"dim": 32, "ffn_dim": 48, "num_heads": 2, "num_layers": 2, "freq_dim": 32},
        t5={"dim": _TEXT_DIM, "dim_attn": 32, "dim_ffn": 48, "num_heads": 4, "encoder_layers": 2,
            "num_buckets": 8, "vocab_size": 512},
        vae={"dim": 8, "dec_dim": 8},
    )
