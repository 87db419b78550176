"""Count the convolution FLOPs of a Wan VAE decode (what the profiles' conv3d_vae rates divide by).

    python bench/transfer_vae_flops.py

Builds diffusers' AutoencoderKLWan from the catalog's exact config on the meta device (no weights, no GPU) and
counts the decode under torch's FlopCounterMode: the same cases bench/device/vae_kernels.py timed on the H100 and
H200 (Wan2.1 VAE at 960x544x81, Wan2.2 VAE at 960x544x121). Printed in TFLOP (a multiply-add is 2 FLOPs).
Needs torch and diffusers (the measure extra); runs on a CPU in seconds.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from torch.utils.flop_counter import FlopCounterMode

from wanfit.vocabulary.catalog import get_model

CASES = {"wan2.1-vae": ("wan2.1-t2v-14b", 544, 960, 81), "wan2.2-vae": ("wan2.2-ti2v-5b", 544, 960, 121)}


def decode_flops(model: str, height: int, width: int, frames: int) -> dict[str, float]:
    """FLOPs per aten op of one decode, TFLOP."""
    spec = get_model(model)
    with torch.device("meta"):
        vae = AutoencoderKLWan(**spec.vae)
    latent = torch.zeros(1, spec.vae["z_dim"], (frames - 1) // spec.vae_temporal + 1, height // spec.vae_spatial,
                         width // spec.vae_spatial, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vae.decode(latent)
    return {str(op): n / 1e12 for op, n in counter.get_flop_counts()["Global"].items()}


if __name__ == "__main__":
    for family, case in CASES.items():
        print(family, case, {op: round(t, 2) for op, t in decode_flops(*case).items()})
