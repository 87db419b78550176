"""Measure a GPU's kernel-class rates (profiles' class_rates) on the local GPU -- for a session with a lent GPU.

    python bench/transfer_device_rates.py bench/results/class-rates-<gpu>.json

What a profile's `class_rates` holds, measured the way the shipped H100/H200 figures were: bf16 GEMM (8192^3),
attention per backend at a Wan sequence (27,280 tokens, 24 heads x 128, bf16, non-causal: SDPA's flash, cuDNN
and memory-efficient backends, flash-attn 2's flash_attn_func, FlashAttention-3's flash_attn_interface and
FlashAttention-4's flash_attn.cute where they import), the VAE decode's implicit-GEMM time over its convolution
FLOPs (bench/transfer_vae_flops.py counts them), the Wan block's elementwise chain, the official code's float64
RoPE (wan/modules/model.py rope_apply on q at the same shape: FP64 work per second), pinned h2d and the device
copy. Prints and writes one JSON object {gpu, torch, rates: {class: value}}; copy a figure into the profile with
basis "measured" and this file as its source, then `python bench/transfer_rates.py`. Needs CUDA and the gpu
extra (torch, diffusers); nothing here runs without a GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from wanfit.measure import ceilings, vae_split  # noqa: E402
from wanfit.model.kernel_classes import FP64_FLOPS_PER_ELEMENT  # noqa: E402
from wanfit.vocabulary.units import TFLOP  # noqa: E402

TOKENS, HEADS, HEAD_DIM = 27280, 24, 128
VAE_CASES = {"wan2.1-vae": ("wan2.1-t2v-14b", 960, 544, 81), "wan2.2-vae": ("wan2.2-ti2v-5b", 960, 544, 121)}


def _attention_rates() -> dict[str, float]:
    flops = 4 * TOKENS**2 * HEAD_DIM * HEADS
    q, k, v = (torch.randn(1, HEADS, TOKENS, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    rates = {}
    for name, backend in (("attention_fa2", SDPBackend.FLASH_ATTENTION), ("attention_cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                rates[name] = flops / ceilings._median_time(lambda: F.scaled_dot_product_attention(q, k, v), 5) / TFLOP
        except RuntimeError as exc:  # the backend does not run here
            print(f"{name}: {str(exc).splitlines()[0]}", file=sys.stderr)
    qs, ks, vs = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # flash-attn layout: batch, seq, heads, dim
    for name, module, attr in (("flash_attn_2", "flash_attn", "flash_attn_func"),
                               ("attention_fa3", "flash_attn_interface", "flash_attn_func"),
                               ("attention_fa4", "flash_attn.cute", "flash_attn_func")):
        try:
            fn = getattr(__import__(module, fromlist=[attr]), attr)
            rates[name] = flops / ceilings._median_time(lambda fn=fn: fn(qs, ks, vs), 5) / TFLOP
        except (ImportError, AttributeError, RuntimeError) as exc:
            print(f"{name}: not measured ({str(exc).splitlines()[0]})", file=sys.stderr)
    return rates


def _rope_fp64_tflops() -> float:
    """The official rope_apply's FP64 work per second on one block's q (the memory traffic is in the rate too)."""
    from wan.modules.model import rope_apply, rope_params

    f, h, w = 31, 22, 40  # 27,280 tokens
    x = torch.randn(1, f * h * w, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    d = HEAD_DIM
    freqs = torch.cat([rope_params(1024, d - 4 * (d // 6)), rope_params(1024, 2 * (d // 6)),
                       rope_params(1024, 2 * (d // 6))], dim=1).cuda()
    grid = torch.tensor([[f, h, w]], dtype=torch.long)
    seconds = ceilings._median_time(lambda: rope_apply(x, grid, freqs), 5)
    return FP64_FLOPS_PER_ELEMENT * x.numel() / seconds / TFLOP


def _conv3d_tflops() -> float:
    from transfer_vae_flops import decode_flops

    flops = sum(decode_flops(*case)["aten.convolution"] for case in VAE_CASES.values())  # TFLOP
    gemm_s = sum(vae_split.profile_decode(*case)["gemm_s"] for case in VAE_CASES.values())
    return flops / gemm_s


def main(out: Path) -> int:
    d2d, h2d, _ = ceilings._copy_gbps()
    rates = {"gemm_bf16": ceilings._matmul_tflops(), **_attention_rates(),
             "elementwise": ceilings.elementwise_gbps(*ceilings.CHAIN_SHAPE), "h2d_pinned": h2d, "d2d_copy": d2d}
    for name, measure in (("conv3d_vae", _conv3d_tflops), ("rope_fp64_tflops", _rope_fp64_tflops)):
        try:
            rates[name] = measure()
        except Exception as exc:  # a missing extra (diffusers, wan22) leaves that class out
            print(f"{name}: not measured ({exc})", file=sys.stderr)
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": [TOKENS, HEADS, HEAD_DIM],
              "rates": {k: round(v, 3) for k, v in rates.items()}}
    print(json.dumps(result, indent=1))
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or not torch.cuda.is_available():
        sys.exit("usage: python bench/transfer_device_rates.py OUT.json (on a machine with a CUDA GPU)")
    sys.exit(main(Path(sys.argv[1])))
