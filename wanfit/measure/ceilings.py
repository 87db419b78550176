"""Measure the calibrated GPU's throughput ceilings: the measured side of every cross-GPU ratio.

bf16 matmul (8192^3), SDPA at a Wan-like attention shape, device-to-device copy (bytes read +
written), host-to-device from pinned and from pageable memory, the Wan block's elementwise chain,
and how each Wan VAE's decode splits between GEMM and the rest (wanfit.measure.vae_split). Random
inputs, warm-up first, device-synchronised timing, median of repeats.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.units import GB, GIB, TFLOP


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    return 2 * n**3 / _median_time(lambda: a @ b, 20) / TFLOP


def _attention_tflops(tokens: int, heads: int, head_dim: int) -> float:
    q = torch.randn(1, heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    return 4 * tokens**2 * head_dim * heads / _median_time(lambda: F.scaled_dot_product_attention(q, k, v), 5) / TFLOP


def host_pageable_gbps(size: int = GIB) -> float:
    """Host-to-device GB/s from pageable (ordinary) memory: the rate accelerate's offload hooks copy
    weights at, and what sets a sequential-offload step on this host."""
    x = torch.empty(size, dtype=torch.uint8, device="cuda")
    pageable = torch.randint(0, 255, (size,), dtype=torch.uint8)
    return size / _median_time(lambda: x.copy_(pageable), 5) / GB


def host_d2h_fresh_gbps(size: int = GIB) -> float:
    """Device-to-host GB/s into freshly allocated pageable memory: what `module.to("cpu")` does when
    model offload sends a model down (every large tensor lands in newly mapped pages, so the host's
    page faulting bounds it, not the link: 1.15-1.37 GB/s on lent H100 hosts)."""
    x = torch.randint(0, 255, (size,), dtype=torch.uint8, device="cuda")
    return size / _median_time(lambda: x.to("cpu"), 5) / GB


def _copy_gbps(size: int = GIB) -> tuple[float, float, float]:
    x = torch.randint(0, 255, (size,), dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    d2d = 2 * size / _median_time(lambda: y.copy_(x), 10) / GB
    pinned = torch.randint(0, 255, (size,), dtype=torch.uint8).pin_memory()
    h2d_pinned = size / _median_time(lambda: x.copy_(pinned, non_blocking=True), 5) / GB
    return d2d, h2d_pinned, host_pageable_gbps(size)


BF16_BYTES = 2
# The chain's shape: the TI2V-5B's hidden state at 960x544x121 (15,810 tokens x 3,072; FFN 14,336).
CHAIN_SHAPE = (15810, 3072, 14336)


def elementwise_chain(tokens: int, dim: int, ffn_dim: int):
    """WanTransformerBlock.forward's ops outside its linears and attention (diffusers 0.42), on
    random tensors: per-token modulation (Wan2.2-TI2V), three fp32 layer norms, the gated residuals
    and the FFN's tanh GELU. Returns the callable."""
    x = torch.randn(1, tokens, dim, device="cuda", dtype=torch.bfloat16)
    mod = torch.randn(1, tokens, 6, dim, device="cuda", dtype=torch.bfloat16)
    table = torch.randn(1, 1, 6, dim, device="cuda")
    h = torch.randn(1, tokens, ffn_dim, device="cuda", dtype=torch.bfloat16)

    def chain():
        shift, scale, gate, c_shift, c_scale, c_gate = (table + mod.float()).chunk(6, dim=2)
        n = (F.layer_norm(x.float(), (dim,), eps=1e-6) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(x)
        y = (x.float() + n * gate.squeeze(2)).type_as(x)
        y = y + F.layer_norm(y.float(), (dim,), eps=1e-6).type_as(x)
        n3 = (F.layer_norm(y.float(), (dim,), eps=1e-6) * (1 + c_scale.squeeze(2)) + c_shift.squeeze(2)).type_as(x)
        return (y.float() + n3.float() * c_gate.squeeze(2)).type_as(x), F.gelu(h, approximate="tanh")

    return chain


def elementwise_gbps(tokens: int, dim: int, ffn_dim: int) -> float:
    """GB of one bf16 hidden state per second of the chain: a rate to compare between GPUs (the
    chain moves many times those bytes)."""
    return tokens * dim * BF16_BYTES / _median_time(elementwise_chain(tokens, dim, ffn_dim), 10, warmup=3) / GB


def measure_ceilings(attention_tokens: int = 27280, heads: int = 24, head_dim: int = 128) -> Ceilings:
    matmul = _matmul_tflops()
    attn = _attention_tflops(attention_tokens, heads, head_dim)
    d2d, h2d_pinned, h2d_pageable = _copy_gbps()
    torch.cuda.empty_cache()
    elementwise = elementwise_gbps(*CHAIN_SHAPE)
    torch.cuda.empty_cache()
    from wanfit.measure.vae_split import non_gemm_shares

    return Ceilings(matmul_tflops=matmul, attention_tflops=attn, device_copy_gbps=d2d,
                    h2d_pinned_gbps=h2d_pinned, h2d_pageable_gbps=h2d_pageable, elementwise_gbps=elementwise,
                    vae_decode_non_gemm_share=non_gemm_shares())


if __name__ == "__main__":
    if sys.argv[1:] == ["--host-pageable"]:  # `wanfit verify` of an offloading plan: this host's rates only
        print(json.dumps({"h2d_pageable_gbps": host_pageable_gbps(), "d2h_fresh_gbps": host_d2h_fresh_gbps()}))
        sys.exit(0)
    from wanfit.measure.environment import collect_environment
    from wanfit.measure.monitor import Nvml

    c = measure_ceilings()
    env = collect_environment(torch, Nvml())
    out = {"ceilings": c.model_dump(), "environment": env.model_dump()}
    text = json.dumps(out, indent=1)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    print(text)
