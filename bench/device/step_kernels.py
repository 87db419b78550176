"""Where a DiT step's time goes on this GPU, by kind of kernel: run on two GPUs, the ratios say how
each part of the step carries over (the cross-GPU transfer's question).

Builds the real diffusers WanTransformer3DModel of a catalog model at its real width with a few
blocks (random bf16 weights), runs forwards at a verify run's token count under torch.profiler and
sums the CUDA kernel time by kind: matmul (GEMM kernels), attention (flash / cuDNN SDPA kernels)
and everything else (norms, modulation, RoPE, GELU, residuals, casts, copies). Also times the
block's elementwise chain alone (wanfit.measure.ceilings.elementwise_gbps, the ceiling `calibrate`
records) at the 5B's and the 14B's hidden state.

Run 2026-11-23 on a lent H100 and a lent H200: bench/results/step-kernels-{h100,h200}.json (that run
named the chain's rate `hidden_state_passes_per_s`, the chain inline here; the same ops and timing).

    python bench/device/step_kernels.py OUT.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")  # the checkout's wanfit (run from the repository root)
from wanfit.measure.build import _keep_fp32, build_module
from wanfit.measure.ceilings import elementwise_gbps
from wanfit.vocabulary.catalog import get_model

# (model, width, height, frames): the verify runs repeated on an H100 and an H200.
CASES = [("wan2.2-ti2v-5b", 960, 544, 121), ("wan2.2-ti2v-5b", 1280, 704, 121), ("wan2.1-t2v-14b", 960, 544, 81)]
BLOCKS = 4
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run of this script only
GEMM = ("gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90_", "sm80_")
ATTENTION = ("flash", "fmha", "attention", "attn", "cudnn")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def kind_of(name: str) -> str:
    low = name.lower()
    if any(k in low for k in ATTENTION):
        return "attention"
    if any(k in low for k in GEMM):
        return "matmul"
    return "other"


def dit_inputs(spec, width: int, height: int, frames: int):
    t = spec.transformer
    lat_f = (frames - 1) // spec.vae_temporal + 1
    lat_h, lat_w = height // spec.vae_spatial, width // spec.vae_spatial
    latents = torch.randn(1, t["in_channels"], lat_f, lat_h, lat_w, device=DEVICE, dtype=torch.bfloat16)
    p = t["patch_size"]
    tokens = lat_f // p[0] * (lat_h // p[1]) * (lat_w // p[2])
    timestep = torch.full((1, tokens) if spec.expand_timesteps else (1,), 500.0, device=DEVICE)
    text = torch.randn(1, 512, t["text_dim"], device=DEVICE, dtype=torch.bfloat16)
    return dict(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False), tokens


def profile_case(model: str, width: int, height: int, frames: int) -> dict:
    from diffusers import WanTransformer3DModel

    spec = get_model(model)
    config = {**spec.transformer, "num_layers": BLOCKS}
    dit = build_module(lambda: WanTransformer3DModel(**config), torch.bfloat16, DEVICE)
    _keep_fp32(dit)
    inputs, tokens = dit_inputs(spec, width, height, frames)
    with torch.no_grad():
        for _ in range(2):
            dit(**inputs)
        sync()
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            dit(**inputs)
            sync()
            walls.append(time.perf_counter() - t0)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA if DEVICE == "cuda" else ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                dit(**inputs)
            sync()
    by_kind: dict[str, float] = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    names: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if us <= 0 or ev.key.startswith("ProfilerStep"):
            continue
        by_kind[kind_of(ev.key)] += us / 3 / 1e6
        names[ev.key[:90]] = names.get(ev.key[:90], 0.0) + us / 3 / 1e6
    del dit
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    top = sorted(names.items(), key=lambda kv: -kv[1])[:25]
    return {"model": model, "size": f"{width}x{height}x{frames}", "tokens": tokens, "blocks": BLOCKS,
            "forward_wall_s": statistics.median(walls), "kernel_s": by_kind,
            "top_kernels": [{"name": n, "s": s, "kind": kind_of(n)} for n, s in top]}


def main() -> None:
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    out = {"gpu": gpu, "torch": torch.__version__, "cases": [], "elementwise": []}
    for case in CASES:
        out["cases"].append(profile_case(*case))
        print(json.dumps({k: v for k, v in out["cases"][-1].items() if k != "top_kernels"}), flush=True)
    for tokens, dim, ffn in [(15810, 3072, 14336), (42840, 5120, 13824)]:
        out["elementwise"].append({"tokens": tokens, "dim": dim, "ffn_dim": ffn,
                                   "hidden_state_gbps": elementwise_gbps(tokens, dim, ffn)})
        print(json.dumps(out["elementwise"][-1]), flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
