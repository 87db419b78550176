"""The several-GPU layouts the planner searches for N GPUs of one host, per runtime.

The official code (Wan2.2 generate.py): Ulysses of degree N or off, DiT FSDP and T5 FSDP each on or off,
no offload; N ranks with neither Ulysses nor FSDP would run the same job N times and are left out. diffusers:
context parallelism with Ulysses x ring = N (every factorisation whose Ulysses degree divides the heads),
FSDP of the transformer's blocks on or off. Classifier-free-guidance parallelism exists only in xDiT, which
is not a wanfit runtime: it is not offered. Each layout is checked by wanfit.vocabulary.workload.check_layout
when its Plan is built, so a pinned combination that no runtime has fails there in one line.
"""

from __future__ import annotations

import itertools

from wanfit.vocabulary.workload import GPU_COUNTS, LAYOUT_KNOBS, Runtime


def layouts(runtime: Runtime, gpus: int, heads: int, pinned: dict) -> list[dict]:
    """Every layout of `gpus` GPUs the runtime has for a DiT of `heads` attention heads, with the layout knobs
    in `pinned` fixed (a pinned value the runtime does not have is kept, so that building its Plan says why)."""
    if gpus == 1:
        found = [{"gpus": 1, "ulysses": 1, "ring": 1, "dit_fsdp": False, "t5_fsdp": False}]
    elif runtime == "wan":
        ulysses = (gpus, 1) if heads % gpus == 0 else (1,)
        found = [{"gpus": gpus, "ulysses": u, "ring": 1, "dit_fsdp": dit, "t5_fsdp": t5}
                 for u, dit, t5 in itertools.product(ulysses, (False, True), (False, True)) if u > 1 or dit or t5]
    else:
        degrees = [(u, gpus // u) for u in GPU_COUNTS if gpus % u == 0 and heads % u == 0]
        found = [{"gpus": gpus, "ulysses": u, "ring": r, "dit_fsdp": dit, "t5_fsdp": False}
                 for (u, r), dit in itertools.product(degrees, (False, True))]
    pins = {k: v for k, v in pinned.items() if k in LAYOUT_KNOBS}
    kept = [layout for layout in found if all(layout[k] == v for k, v in pins.items())]
    neutral = {"gpus": gpus, "ulysses": 1, "ring": 1, "dit_fsdp": False, "t5_fsdp": False}
    return kept or [{**neutral, **pins}]
