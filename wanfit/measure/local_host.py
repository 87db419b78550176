"""The local host's memory: what `wanfit plan` checks offloaded weights against when it plans for the local
GPU (their host RAM lands here). Standard library only: `plan` must start fast, and psutil belongs to the
measuring side's extras.
"""

from __future__ import annotations

import os
from pathlib import Path

GIB = 2**30
MEMINFO = Path("/proc/meminfo")


def local_host_ram_gib() -> float | None:
    """This machine's physical memory in GiB (os.sysconf, else /proc/meminfo's MemTotal); None when neither
    tells."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):  # a platform without these names
        pass
    try:
        line = next(x for x in MEMINFO.read_text().splitlines() if x.startswith("MemTotal:"))
        return int(line.split()[1]) * 1024 / GIB  # kB
    except (OSError, StopIteration, ValueError, IndexError):
        return None
