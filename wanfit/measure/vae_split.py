"""Where a VAE decode's kernel time goes on this GPU: the convolutions' implicit GEMMs (TF32 tensor
cores, which scale with matmul throughput between GPUs) against everything else (RMS norms, SiLU,
upsampling, the causal caches' pads, cats and copies, cuDNN's layout transforms), which scaled like
the Wan block's elementwise chain from an H100 to an H200 (1.18-1.20x where the chain ran 1.22x).

`calibrate` records the non-GEMM share per Wan VAE with the session's ceilings; the planner splits
the decode's time by it when it carries a calibration to another GPU. bench/device/vae_kernels.py
runs the same profile at verify-run sizes and keeps the top kernels.
"""

from __future__ import annotations

import statistics
import time

import torch

from wanfit.vocabulary.catalog import MODELS, get_model

# cuDNN's implicit-GEMM convolutions (xmma) and cuBLAS GEMMs; the mid-block's fp32 attention (a cutlass
# memory-efficient kernel, 1 % of the decode) counts with the rest.
GEMM = ("gemm", "xmma", "nvjet")
# One model per Wan VAE, and the size each is profiled at in a calibrate session. At 41 frames the
# split came out within 0.002 of the 81- and 121-frame decodes' on a lent H100 (0.497 / 0.463 against
# 0.498 / 0.465), at a third to half their time (bench/results/vae-kernels-h100-split.json).
SESSION_CASES = {"wan2.1-vae": ("wan2.1-t2v-14b", 960, 544, 41), "wan2.2-vae": ("wan2.2-ti2v-5b", 960, 544, 41)}


US_PER_S = 1e6  # the profiler's times are microseconds


def is_gemm(kernel_name: str) -> bool:
    low = kernel_name.lower()
    return any(k in low for k in GEMM)


def profile_decode(model: str, width: int, height: int, frames: int, device: str = "cuda") -> dict:
    """Decode random latents of this size with the model's VAE (fp32, random weights, as the pipeline
    runs it): wall time (median of three after a warm-up) and the CUDA kernel time by kind."""
    from diffusers import AutoencoderKLWan
    from torch.profiler import ProfilerActivity, profile

    from wanfit.measure.build import build_module

    spec = get_model(model)
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    vae = build_module(lambda: AutoencoderKLWan(**spec.vae), torch.float32, device)
    lat = torch.randn(1, spec.vae["z_dim"], (frames - 1) // spec.vae_temporal + 1, height // spec.vae_spatial,
                      width // spec.vae_spatial, device=device)
    with torch.no_grad():
        vae.decode(lat)
        sync()
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            vae.decode(lat)
            sync()
            walls.append(time.perf_counter() - t0)
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            vae.decode(lat)
            sync()
    kernels: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if us > 0 and not ev.key.startswith("ProfilerStep"):
            kernels[ev.key] = kernels.get(ev.key, 0.0) + us / US_PER_S
    del vae, lat
    if cuda:
        torch.cuda.empty_cache()
    gemm = sum(s for name, s in kernels.items() if is_gemm(name))
    total = sum(kernels.values())
    return {"model": model, "vae": spec.vae_family, "size": f"{width}x{height}x{frames}",
            "decode_wall_s": statistics.median(walls), "gemm_s": gemm, "other_s": total - gemm,
            "non_gemm_share": (total - gemm) / total if total else None, "kernels_s": kernels}


def non_gemm_shares(cases: dict[str, tuple[str, int, int, int]] = SESSION_CASES) -> dict[str, float]:
    """{Wan VAE: share of its decode's kernel time outside the implicit GEMMs} on this GPU."""
    assert set(cases) <= {get_model(m).vae_family for m in MODELS}
    out = {}
    for family, case in cases.items():
        share = profile_decode(*case)["non_gemm_share"]
        if share is not None:
            out[family] = share
    return out
