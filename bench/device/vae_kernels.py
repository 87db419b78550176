"""Where a VAE decode's time goes on this GPU, by kind of kernel: run on two GPUs, the ratios say
how the decode carries over between them (the cross-GPU transfer's question for the VAE stage).

Builds the real diffusers AutoencoderKLWan of both Wan VAEs from their catalog configs (random fp32
weights, as the pipeline runs them), decodes latents of a verify run's size under torch.profiler and
sums the CUDA kernel time by kind: convolution (cuDNN / implicit-GEMM / tensor-core kernels) and
everything else (RMS norms, SiLU, upsampling, the causal caches' pads, cats and copies). Also records
the decode's wall time (median of three, after a warm-up).

    python bench/device/vae_kernels.py OUT.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

sys.path.insert(0, "src")
from wanfit.catalog import get_model
from wanfit.measure.build import _build

# (model whose VAE, width, height, frames): sizes of verify runs made on an H100 and an H200.
CASES = [("wan2.1-t2v-14b", 960, 544, 81), ("wan2.2-ti2v-5b", 960, 544, 121)]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run of this script only
CONV = ("conv", "cudnn", "implicit", "gemm", "xmma", "sm90_", "sm80_", "cutlass", "nvjet", "winograd", "fft")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def kind_of(name: str) -> str:
    return "conv" if any(k in name.lower() for k in CONV) else "other"


def profile_case(model: str, width: int, height: int, frames: int) -> dict:
    from diffusers import AutoencoderKLWan

    spec = get_model(model)
    vae = _build(lambda: AutoencoderKLWan(**spec.vae), torch.float32, DEVICE)
    lat = torch.randn(1, spec.vae["z_dim"], (frames - 1) // spec.vae_temporal + 1, height // spec.vae_spatial,
                      width // spec.vae_spatial, device=DEVICE)
    with torch.no_grad():
        vae.decode(lat)
        sync()
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            vae.decode(lat)
            sync()
            walls.append(time.perf_counter() - t0)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA if DEVICE == "cuda" else ProfilerActivity.CPU]) as prof:
            vae.decode(lat)
            sync()
    by_kind = {"conv": 0.0, "other": 0.0}
    names: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if us <= 0 or ev.key.startswith("ProfilerStep"):
            continue
        by_kind[kind_of(ev.key)] += us / 1e6
        names[ev.key[:90]] = names.get(ev.key[:90], 0.0) + us / 1e6
    del vae
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    top = sorted(names.items(), key=lambda kv: -kv[1])[:30]
    return {"model": model, "size": f"{width}x{height}x{frames}", "decode_wall_s": statistics.median(walls),
            "kernel_s": by_kind, "top_kernels": [{"name": n, "s": s, "kind": kind_of(n)} for n, s in top]}


def main() -> None:
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    out = {"gpu": gpu, "torch": torch.__version__, "tf32_conv": torch.backends.cudnn.allow_tf32, "cases": []}
    for case in CASES:
        out["cases"].append(profile_case(*case))
        print(json.dumps({k: v for k, v in out["cases"][-1].items() if k != "top_kernels"}), flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
