"""Host copies the offload hooks make, timed in this (fresh) process: host-to-device from pageable
memory (what sequential offload streams and model offload uploads at), and device-to-host into
fresh pageable memory (what `module.to("cpu")` does when model offload sends a model down: every
large tensor lands in newly mapped pages) beside device-to-host into memory already touched.

Prints one JSON line. Run it in a few fresh processes: the rates vary process to process. The first
two rates are wanfit.measure.ceilings' (what verify and calibrate measure); the runs of 2026-11-24
(bench/results/host-copies-h100*.jsonl) timed the same copies inline, before those moved there.

    python bench/device/host_copies.py
"""

from __future__ import annotations

import json
import sys

import torch

sys.path.insert(0, ".")  # the checkout's wanfit (run from the repository root)
from wanfit.measure.ceilings import _median_time, host_d2h_fresh_gbps, host_pageable_gbps
from wanfit.vocabulary.units import GB

SIZE = 2**30  # 1 GiB: above glibc's largest mmap threshold, so every fresh copy maps new pages


def d2h_touched_gbps() -> float:
    """Device-to-host into host memory already touched (the same copy without the page faults)."""
    gpu = torch.randint(0, 255, (SIZE,), dtype=torch.uint8, device="cuda")
    touched = torch.zeros(SIZE, dtype=torch.uint8)
    return SIZE / _median_time(lambda: touched.copy_(gpu), 5) / GB


def main() -> None:
    print(json.dumps({"h2d_pageable_gbps": host_pageable_gbps(SIZE), "d2h_fresh_pageable_gbps": host_d2h_fresh_gbps(SIZE),
                      "d2h_touched_pageable_gbps": d2h_touched_gbps()}), flush=True)


if __name__ == "__main__":
    main()
