"""Several-GPU predictions against the published Wan tables: speed-up ratios and absolute times.

Reads bench/reference/published_multi_gpu.json and published_single_gpu.json (the official Wan2.1 / Wan2.2
README efficiency tables, transcribed from their images with the README's own notes on flags; see those
files' sources), predicts each row's plan with `wanfit` (runtime wan, the row's --offload_model / --t5_cpu /
--convert_model_dtype / --dit_fsdp / --t5_fsdp / --ulysses_size; FlashAttention-3 on Hopper for the Wan2.2
rows, as its README says) on the row's GPU profile for a warm pipeline (the READMEs average samples taken
after the warm-up: no load, no first-call setup), and prints, group by group (source, GPU, model, size):
published and predicted seconds and the speed-up against the group's smallest GPU count. The issue's target
is the speed-up ratio within 15 %. Run: `python bench/multi_gpu_published.py [--all]` (`--all`: also rows
whose layout the table leaves unstated).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from wanfit.planner.api import predict_one
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.profiles import get_profile
from wanfit.vocabulary.workload import Plan, Workload

REFERENCE = Path(__file__).resolve().parent / "reference"
GPU_KEYS = {"H800/H100": "h100", "H100/H800": "h100", "A800/A100": "a100-80g", "A100/A800": "a100-80g",
            "H20": "h20", "RTX 4090": "rtx4090"}


def _rows() -> list[dict]:
    multi = json.loads((REFERENCE / "published_multi_gpu.json").read_text())["figures"]
    single = json.loads((REFERENCE / "published_single_gpu.json").read_text())["figures"]
    readme = [f for f in multi + single if f["id"].startswith(("wan21-readme", "wan22-readme"))]
    return [f for f in readme if f.get("total_time_s") and f.get("gpu_model") in GPU_KEYS]


def _plan(row: dict, hopper: bool) -> Plan | None:
    """The row's flags as a wanfit plan; None where the table leaves the layout unstated."""
    n, par = row["gpu_count"], row["parallel"] or {}
    if n > 1 and (not par.get("ulysses") or (par.get("ring") or 1) > 1):  # Wan2.1's xDiT ring: not the Wan2.2 code
        return None
    attention = "fa3" if hopper and row["id"].startswith("wan22") else "auto"
    dtype = "bf16" if row.get("convert_model_dtype") and not par.get("dit_fsdp") else "fp32"
    return Plan(runtime="wan", offload="model" if row.get("offload_model") else "none",
                text_encoder="cpu" if row.get("t5_cpu") else "gpu", dit_dtype=dtype, attention=attention,
                gpus=n, ulysses=par.get("ulysses") or 1, dit_fsdp=bool(par.get("dit_fsdp")) and n > 1,
                t5_fsdp=bool(par.get("t5_fsdp")) and n > 1)


def _model(row: dict) -> str:
    model = row["model"]
    return "wan2.1-i2v-14b" if model.startswith("wan2.1-i2v-14b") else model


def predict_row(row: dict) -> tuple[float | None, tuple[float, float] | None, str, bool | None]:
    """Predicted seconds, (device-level peak, torch-allocated peak) per GPU in GiB, the plan's layout, and
    whether the published time is inside the printed interval."""
    gpu = GPU_KEYS[row["gpu_model"]]
    try:
        plan = _plan(row, get_profile(gpu).architecture == "Hopper")
        if plan is None:
            return None, None, "layout not stated", None
        wl = Workload.for_model(_model(row), height=row["height"], width=row["width"], frames=row["frames"],
                                steps=row["steps"])
        # The READMEs report "the average of multiple samples taken after the warm-up phase": a built, warm
        # pipeline, no load.
        cand = predict_one(wl, plan, gpu, reused_pipeline=True)
        low, high = cand.duration_interval_s
        allocated = max(stage.allocated_gib for stage in cand.stages)
        return (cand.duration_s, (cand.peak_vram_gib, allocated), plan.layout_label().strip() or "1 GPU",
                low <= row["total_time_s"] <= high)
    except WanfitError as error:
        return None, None, str(error)[:70], None


def main() -> None:
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    within_interval: list[bool] = []
    for row in _rows():
        predicted, peak, what, inside = predict_row(row)
        if inside is not None:
            within_interval.append(inside)
        key = (row["id"].split("-readme")[0], row["gpu_model"], row["model"], f"{row['width']}x{row['height']}")
        groups[key].append((row["gpu_count"], row["total_time_s"], predicted, what, row.get("peak_memory"), peak))
    errors, absolute, memory = [], [], []
    print("Published: the README's seconds and its per-GPU 'peak GPU memory (GB)' (kind not stated); predicted:\n"
          "wanfit's seconds and per-GPU peaks in GiB, device-level (nvidia-smi) and torch-allocated\n"
          "(torch.cuda.max_memory_allocated, which the published figures follow).\n")
    print(f"{'source':6} {'GPU':10} {'model':22} {'size':9} {'N':>2} {'published s':>11} {'predicted s':>11} "
          f"{'pub. x':>7} {'pred. x':>7} {'x err':>6} {'pub. GB':>7} {'device':>7} {'alloc.':>7}  plan")
    for key, rows in sorted(groups.items()):
        rows.sort()
        base = next(((n, pub, pred) for n, pub, pred, *_ in rows if pred is not None), None)
        for n, pub, pred, what, pub_peak, peak in rows:
            speed = speed_pred = err = ""
            if base and pred is not None and n != base[0]:
                s_pub, s_pred = base[1] / pub, base[2] / pred
                e = s_pred / s_pub - 1
                errors.append((abs(e), key, n))
                speed, speed_pred, err = f"{s_pub:.2f}", f"{s_pred:.2f}", f"{100 * e:+.0f}%"
            if pred is not None:
                absolute.append((abs(pred / pub - 1), n))
            shown = f"{pred:.1f}" if pred is not None else "-"
            mem = f"{'-':>7} {'-':>7} {'-':>7}"
            if pub_peak and peak:
                mem = f"{pub_peak:>7.1f} {peak[0]:>7.1f} {peak[1]:>7.1f}"
                memory.append((abs(peak[1] / pub_peak - 1), n, key))
            print(f"{key[0]:6} {key[1]:10} {key[2]:22} {key[3]:9} {n:>2} {pub:>11.1f} {shown:>11} {speed:>7} "
                  f"{speed_pred:>7} {err:>6} {mem}  {what}")
    if within_interval:
        print(f"\npublished time inside the printed interval: {sum(within_interval)} of {len(within_interval)}")
    if absolute:
        several = [e for e, n in absolute if n > 1]
        print(f"absolute time error: median {100 * statistics.median(e for e, _ in absolute):.0f} %, worst "
              f"{100 * max(e for e, _ in absolute):.0f} %; on several GPUs median "
              f"{100 * statistics.median(several):.0f} %, worst {100 * max(several):.0f} %")
    if memory:
        worst_mem = max(memory)
        print(f"published peak vs predicted allocated peak: median {100 * statistics.median(e for e, *_ in memory):.1f} %, "
              f"worst {100 * worst_mem[0]:.1f} % ({' '.join(worst_mem[2])} N={worst_mem[1]}); "
              f"{sum(e <= 0.05 for e, *_ in memory)} of {len(memory)} within 5 %")
    if errors:
        worst = max(errors)
        within = sum(e <= 0.15 for e, _, _ in errors)
        print(f"speed-up ratio error: median {100 * statistics.median(e for e, _, _ in errors):.0f} %, worst "
              f"{100 * worst[0]:.0f} % ({' '.join(worst[1])} N={worst[2]}); {within} of {len(errors)} within 15 %")


if __name__ == "__main__":
    sys.exit(main())
