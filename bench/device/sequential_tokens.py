"""How a sequentially offloaded DiT step grows with the token count, on this GPU and host.

The shipped H100 calibration's 5B sequential points spend 4.3-4.8 s per step above the resident
step at up to 39k tokens and 5.3-5.6 s at 74k, at host rates of 6.4-8.0 GB/s measured in their
sessions: the held-out fit misses the largest size by 11-12 %. This script separates what grows:
one process, one host, the real diffusers WanTransformer3DModel at its full depth (random bf16
weights in host memory), offloaded as `enable_sequential_cpu_offload` does it (accelerate's
cpu_offload: every leaf's weights copied from pageable memory before it runs), timed forward by
forward over a ladder of token counts; then the same forwards with torch.cuda.empty_cache made a
no-op (accelerate empties the cache at every weight it places); then resident on the GPU (the
base). One forward per size runs under torch.profiler for the CUDA API time by call.

    python bench/device/sequential_tokens.py OUT.jsonl [MODEL ...]
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, ".")  # the checkout's wanfit (run from the repository root)
sys.path.insert(0, "bench/device")
from step_kernels import dit_inputs

from wanfit.measure.build import _build_in_host_memory, _keep_fp32
from wanfit.measure.ceilings import host_pageable_gbps
from wanfit.vocabulary.catalog import get_model

# (width, height, frames) from 16k to 109k tokens for the 5B (x16 VAE), 8k to 76k for Wan2.1 (x8).
SIZES = {"wan2.2-ti2v-5b": [(832, 480, 41), (832, 480, 81), (1280, 704, 41), (1280, 704, 61), (1280, 704, 81),
                            (1280, 704, 121)],
         "wan2.1-t2v-1.3b": [(832, 480, 21), (832, 480, 41), (832, 480, 81), (1280, 720, 41), (1280, 720, 81)]}
TIMED = 2


def forward_times(dit, inputs, repeats: int = TIMED) -> list[float]:
    out = []
    with torch.no_grad():
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            dit(**inputs)
            torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return out


def cuda_api_seconds(dit, inputs) -> dict[str, float]:
    """CPU-side seconds per CUDA runtime call (and per aten op of interest) over one forward."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        dit(**inputs)
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    kernels = 0.0
    for e in prof.key_averages():
        if e.key.startswith(("cuda", "cu")) or e.key in ("aten::copy_", "aten::empty", "aten::empty_strided"):
            totals[e.key] += e.self_cpu_time_total / 1e6
        kernels += getattr(e, "self_device_time_total", 0.0) / 1e6
    top = dict(sorted(totals.items(), key=lambda kv: -kv[1])[:12])
    return {**{k: round(v, 4) for k, v in top.items()}, "kernel_s": round(kernels, 4)}


def run_model(model: str, out) -> None:
    from accelerate import cpu_offload
    from accelerate.hooks import remove_hook_from_submodules
    from diffusers import WanTransformer3DModel

    spec = get_model(model)
    t0 = time.perf_counter()
    dit = _build_in_host_memory(lambda: WanTransformer3DModel(**spec.transformer), torch.bfloat16, "cuda")
    _keep_fp32(dit)
    dit_gib = sum(p.numel() * p.element_size() for p in dit.parameters()) / 2**30
    print(f"{model}: built {dit_gib:.2f} GiB in {time.perf_counter() - t0:.0f} s", flush=True)
    # as DiffusionPipeline.enable_sequential_cpu_offload calls it
    cpu_offload(dit, execution_device=torch.device("cuda"), offload_buffers=len(dit._parameters) > 0)
    rate = host_pageable_gbps()
    empty_calls = [0]
    real_empty = torch.cuda.empty_cache

    def counting_empty() -> None:
        empty_calls[0] += 1
        real_empty()

    for variant in ("sequential", "sequential-no-empty-cache"):
        torch.cuda.empty_cache = counting_empty if variant == "sequential" else (lambda: None)
        for width, height, frames in SIZES[model]:
            inputs, tokens = dit_inputs(spec, width, height, frames)
            forward_times(dit, inputs, repeats=1)  # warm: kernels chosen, host pages of the weights touched
            empty_calls[0] = 0
            walls = forward_times(dit, inputs)
            row = {"model": model, "variant": variant, "width": width, "height": height, "frames": frames,
                   "tokens": tokens, "forward_s": walls, "dit_gib": dit_gib, "h2d_pageable_gbps": rate,
                   "empty_cache_calls_per_forward": empty_calls[0] / TIMED,
                   "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}
            if variant == "sequential" and (width, height, frames) in (SIZES[model][0], SIZES[model][-1]):
                row["cuda_api_s"] = cuda_api_seconds(dit, inputs)
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")
            out.flush()
            del inputs
            real_empty()
            torch.cuda.reset_peak_memory_stats()
    torch.cuda.empty_cache = real_empty
    rate_after = host_pageable_gbps()
    remove_hook_from_submodules(dit)
    dit.to("cuda")
    for width, height, frames in SIZES[model]:
        inputs, tokens = dit_inputs(spec, width, height, frames)
        forward_times(dit, inputs, repeats=1)
        row = {"model": model, "variant": "resident", "width": width, "height": height, "frames": frames,
               "tokens": tokens, "forward_s": forward_times(dit, inputs, repeats=3), "dit_gib": dit_gib,
               "h2d_pageable_gbps": rate_after}
        print(json.dumps(row), flush=True)
        out.write(json.dumps(row) + "\n")
        del inputs
    del dit
    torch.cuda.empty_cache()


def main() -> None:
    path, models = sys.argv[1], sys.argv[2:] or list(SIZES)
    with open(path, "w") as out:
        for model in models:
            run_model(model, out)


if __name__ == "__main__":
    main()
