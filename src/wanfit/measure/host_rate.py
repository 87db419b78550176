"""This host's host-to-device rate from pageable memory, measured in fresh processes.

The rate accelerate's offload hooks copy weights at, so what sets a sequential-offload step (and
much of model offload) on a host. It varies from process to process: on one lent H100 (one NUMA
node), seven back-to-back fresh processes measured 5.2 to 10.0 GB/s, so one draw says little about
the process that runs the workload and the median of a few does better. `verify` (offloading plans)
and `calibrate` (every session) take it. No torch here: the measuring processes import it, this
module only starts them, so the caller keeps no CUDA context.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

HOST_RATE_PROCESSES = 3


def pageable_rate_draw() -> float | None:
    """One fresh process's measurement (wanfit.measure.ceilings --host-pageable), None when it fails."""
    try:
        done = subprocess.run([sys.executable, "-m", "wanfit.measure.ceilings", "--host-pageable"],
                              capture_output=True, text=True, timeout=120, check=True)
        return float(json.loads(done.stdout.strip().splitlines()[-1])["h2d_pageable_gbps"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return None


def measure_host_pageable_gbps(processes: int = HOST_RATE_PROCESSES, first: float | None = None) -> float | None:
    """The median over `processes` draws (`first`: one already measured, counted among them); None
    when every draw fails."""
    rates = [] if first is None else [first]
    rates += [r for r in (pageable_rate_draw() for _ in range(processes - len(rates))) if r is not None]
    return statistics.median(rates) if rates else None
