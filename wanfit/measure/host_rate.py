"""This host's copy rates between host and device, measured in fresh processes.

Host-to-device from pageable memory is the rate accelerate's offload hooks copy weights at, so what
sets a sequential-offload step (and model offload's uploads) on a host. It varies from process to
process: on one lent H100 (one NUMA node), seven back-to-back fresh processes measured 5.2 to 10.0
GB/s, so one draw says little about the process that runs the workload and the median of a few does
better. Device-to-host into freshly allocated pageable memory is what model offload's moves down run
at (page faulting bound: 1.15-1.37 GB/s on lent H100 hosts). `verify` (offloading plans) and
`calibrate` (every session) take them. No torch here: the measuring processes import it, this module
only starts them, so the caller keeps no CUDA context.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass

HOST_RATE_PROCESSES = 3
# One draw copies 1 GiB a few times each way in seconds; a wedged process must not stall verify.
DRAW_TIMEOUT_S = 120


@dataclass(frozen=True)
class HostRates:
    h2d_pageable_gbps: float | None  # host-to-device from pageable memory
    d2h_fresh_gbps: float | None  # device-to-host into freshly allocated pageable memory


def rates_draw() -> dict[str, float] | None:
    """One fresh process's measurement (wanfit.measure.ceilings --host-pageable), None when it fails."""
    try:
        done = subprocess.run([sys.executable, "-m", "wanfit.measure.ceilings", "--host-pageable"],
                              capture_output=True, text=True, timeout=DRAW_TIMEOUT_S, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        return {k: float(v) for k, v in row.items() if k in ("h2d_pageable_gbps", "d2h_fresh_gbps")} or None
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError, AttributeError, TypeError):
        return None


def measure_host_rates(processes: int = HOST_RATE_PROCESSES, first_h2d: float | None = None) -> HostRates:
    """The median of each rate over `processes` draws (`first_h2d`: one host-to-device draw already
    measured, counted among them); None for a rate no draw measured."""
    draws = [d for d in (rates_draw() for _ in range(processes - (first_h2d is not None))) if d is not None]
    h2d = ([] if first_h2d is None else [first_h2d]) + [d["h2d_pageable_gbps"] for d in draws
                                                       if "h2d_pageable_gbps" in d]
    d2h = [d["d2h_fresh_gbps"] for d in draws if "d2h_fresh_gbps" in d]
    return HostRates(statistics.median(h2d) if h2d else None, statistics.median(d2h) if d2h else None)
