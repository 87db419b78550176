"""Where a VAE decode's time goes on this GPU, by kind of kernel: run on two GPUs, the ratios say
how the decode carries over between them (the cross-GPU transfer's question for the VAE stage).

Decodes latents of verify-run sizes with both Wan VAEs (wanfit.measure.vae_split.profile_decode: the
real diffusers AutoencoderKLWan from the catalog configs, random fp32 weights) under torch.profiler,
and keeps the kernel time split into the convolutions' implicit GEMMs and everything else, the top
kernels and the wall time.

Run 2026-11-24 on a lent H100 and a lent H200: bench/results/vae-kernels-{h100,h200}.json (that run
split "conv" kernels by name, cuDNN's layout transforms among them, beside its top 30 kernels; the
split the profiles record is GEMM against the rest, computed from those kernels). This version, with
the calibrate session's 41-frame cases, ran on a lent H100 the same day:
bench/results/vae-kernels-h100-split.json (beside the ceilings run that records the split,
bench/results/ceilings-h100-vae-split-session.json).

    python bench/device/vae_kernels.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch

sys.path.insert(0, ".")  # the checkout's wanfit (run from the repository root)
from wanfit.measure.vae_split import SESSION_CASES, is_gemm, profile_decode

# (model whose VAE, width, height, frames): verify runs made on an H100 and an H200.
CASES = [("wan2.1-t2v-14b", 960, 544, 81), ("wan2.2-ti2v-5b", 960, 544, 121), *SESSION_CASES.values()]


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run of this script only
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    out = {"gpu": gpu, "torch": torch.__version__, "tf32_conv": torch.backends.cudnn.allow_tf32, "cases": []}
    for case in CASES:
        r = profile_decode(*case, device=device)
        top = sorted(r.pop("kernels_s").items(), key=lambda kv: -kv[1])[:30]
        r["top_kernels"] = [{"name": n[:90], "s": s, "gemm": is_gemm(n)} for n, s in top]
        out["cases"].append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "top_kernels"}), flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
