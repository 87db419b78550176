"""Pick the int8 weight-only backend for the text encoder by measurement (run on a GPU).

Builds the real UMT5-XXL encoder (random weights, bf16) on the GPU, then for bf16 and each
int8 backend: resident GiB, encode time for prompt + negative prompt (512 tokens each, median of
5 after warm-up) and the encode's torch peak. Prints a table and writes JSON to argv[1].
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time

import torch
from transformers import UMT5Config, UMT5EncoderModel

from wanfit.measure.placement import quantize_int8
from wanfit.vocabulary.catalog import TEXT_LEN, UMT5_XXL
from wanfit.vocabulary.units import GIB


def measure(backend: str | None) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        te = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).eval()
    torch.set_default_dtype(torch.float32)
    row = {"backend": backend or "bf16"}
    try:
        if backend:
            quantize_int8(te, backend)
        gc.collect()
        torch.cuda.empty_cache()
        row["weights_gib"] = (torch.cuda.memory_allocated() - base) / GIB
        ids = torch.randint(0, UMT5_XXL["vocab_size"], (1, TEXT_LEN), device="cuda")
        mask = torch.ones_like(ids)
        with torch.no_grad():
            for _ in range(2):
                te(ids, mask)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(5):
                t = time.perf_counter()
                te(ids, mask)
                te(ids, mask)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        row["encode_s"] = statistics.median(times)
        row["encode_peak_above_weights_gib"] = (torch.cuda.max_memory_allocated() - base) / GIB - row["weights_gib"]
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"[:300]
    del te
    return row


if __name__ == "__main__":
    rows = [measure(b) for b in (None, "torchao", "quanto")]
    print(f"{'backend':10} {'weights GiB':>12} {'encode s':>10} {'peak+ GiB':>10}")
    for r in rows:
        print(f"{r['backend']:10} {r.get('weights_gib', float('nan')):12.2f} {r.get('encode_s', float('nan')):10.3f} "
              f"{r.get('encode_peak_above_weights_gib', float('nan')):10.2f} {r.get('error', '')}")
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}, f, indent=1)
