"""Sequential offload's step over a token ladder the calibrations never saw (for bench/accuracy.py).

bench/device/sequential_tokens.py timed single DiT forwards on a lent H100 (one process, one host):
sequentially offloaded, the same with torch.cuda.empty_cache made a no-op, and resident. Here the
shipped calibration predicts each size's step above the resident step for a one-forward step (no
CFG), at the pageable rates measured before and after the offloaded forwards (they moved between
the two draws), beside what was measured. Nothing here was fitted on.

    python bench/sequential_ladder.py [bench/results/sequential-tokens-h100.jsonl]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from wanfit.model.calibration import find_calibration
from wanfit.model.predict import predict
from wanfit.vocabulary.workload import Plan, Workload

LADDER = Path(__file__).resolve().parent / "results" / "sequential-tokens-h100.jsonl"
SEQUENTIAL = Plan(offload="sequential")


def _fastest(rows: list[dict], variant: str) -> dict[tuple[str, int], float]:
    return {(r["model"], r["tokens"]): min(r["forward_s"]) for r in rows if r["variant"] == variant}


def ladder_rows(path: Path = LADDER) -> list[dict]:
    """One row per offloaded size: measured step above resident, its split, and the predictions."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    resident, no_empty = _fastest(rows, "resident"), _fastest(rows, "sequential-no-empty-cache")
    rate_after = {r["model"]: r["h2d_pageable_gbps"] for r in rows if r["variant"] == "resident"}
    out = []
    for r in rows:
        if r["variant"] != "sequential":
            continue
        key = (r["model"], r["tokens"])
        cal, _ = find_calibration("h100", r["model"])
        w = Workload.for_model(r["model"], width=r["width"], height=r["height"], frames=r["frames"], guidance=1.0)
        base = predict(w, Plan(), cal).step_s
        rates = (r["h2d_pageable_gbps"], rate_after[r["model"]])
        predicted = [predict(w, SEQUENTIAL, cal, host_pageable_gbps=rate).step_s - base for rate in rates]
        measured = min(r["forward_s"])
        out.append({"model": r["model"], "size": f"{r['width']}x{r['height']}x{r['frames']}", "tokens": r["tokens"],
                    "resident_s": resident[key], "resident_predicted_s": base,
                    "extra_s": measured - resident[key], "stream_s": no_empty[key] - resident[key],
                    "empty_cache_s": measured - no_empty[key], "rates_gbps": rates,
                    "predicted_extra_s": predicted})
    return out


def ladder_section(path: Path = LADDER) -> list[str]:
    if not path.exists():
        return []
    rows = ladder_rows(path)
    lines = ["Sequential offload over a token ladder no calibration saw (`bench/device/sequential_tokens.py` on a "
             "lent H100, one forward per step, `bench/results/sequential-tokens-h100.jsonl`): the step above the "
             "resident one, measured and split (the weights' stream and hooks with accelerate's per-weight "
             "`empty_cache` made a no-op; what the emptied cache adds), and predicted by the shipped calibration at "
             "the host's pageable rate measured before and after the offloaded forwards.", "",
             "| model | size (tokens) | resident: measured / predicted | above resident: measured | of which stream "
             "/ emptied cache | predicted at the rate before / after | error at the rate after |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        before, after = r["predicted_extra_s"]
        rate_before, rate_after = r["rates_gbps"]
        error = 100 * (after - r["extra_s"]) / r["extra_s"]
        lines.append(f"| {r['model']} | {r['size']} ({r['tokens']}) | {r['resident_s']:.3f} / "
                     f"{r['resident_predicted_s']:.3f} s | {r['extra_s']:.2f} s | {r['stream_s']:.2f} / "
                     f"{r['empty_cache_s']:.2f} s | {before:.2f} s ({rate_before:.2f} GB/s) / {after:.2f} s "
                     f"({rate_after:.2f} GB/s) | {error:+.1f} % |")
    return lines


if __name__ == "__main__":
    print("\n".join(ladder_section(Path(sys.argv[1]) if len(sys.argv) > 1 else LADDER)))
