"""Host copies the offload hooks make, timed in this (fresh) process: host-to-device from pageable
memory (what sequential offload streams and model offload uploads at), and device-to-host into
fresh pageable memory (what `module.to("cpu")` does when model offload sends a model down: every
large tensor lands in newly mapped pages) beside device-to-host into memory already touched.

Prints one JSON line. Run it in a few fresh processes: the rates vary process to process.

    python bench/device/host_copies.py
"""

from __future__ import annotations

import json
import statistics
import time

import torch

SIZE = 2**30  # 1 GiB: above glibc's largest mmap threshold, so every fresh copy maps new pages


def timed(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    gpu = torch.randint(0, 255, (SIZE,), dtype=torch.uint8, device="cuda")
    pageable = torch.randint(0, 255, (SIZE,), dtype=torch.uint8)
    h2d = SIZE / timed(lambda: gpu.copy_(pageable)) / 1e9
    d2h_fresh = SIZE / timed(lambda: gpu.to("cpu")) / 1e9  # a new host tensor each time, freed after
    touched = torch.empty(SIZE, dtype=torch.uint8)
    touched.fill_(0)
    d2h_touched = SIZE / timed(lambda: touched.copy_(gpu)) / 1e9
    print(json.dumps({"h2d_pageable_gbps": h2d, "d2h_fresh_pageable_gbps": d2h_fresh,
                      "d2h_touched_pageable_gbps": d2h_touched}), flush=True)


if __name__ == "__main__":
    main()
