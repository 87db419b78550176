"""What `wanfit calibrate --gpus N` measures: the one-GPU grid's baseline sizes (wanfit.model.calibration_grid) under
the several-GPU layouts each runtime has, so that the collectives' bus bandwidth at Wan's message sizes, the
overlap each engine achieves and every rank's memory are measured where the planner assumed them
(wanfit.model.sharding).

Layouts, each skipped where the model's heads or the runtime forbid it (Plan's check_layout, check_layout_for):
* official code: the READMEs' `--dit_fsdp --t5_fsdp --ulysses_size N` at every baseline size; Ulysses without FSDP
  (`--convert_model_dtype`: FSDP off) and FSDP without Ulysses at the smallest and largest;
* diffusers: context parallelism (baseline: Ulysses as far as the heads divide, ring for the rest) at every
  baseline size; with FSDP2 of the blocks, and pure ring attention, at the smallest and largest.
diffusers' context parallelism splits the sequence in equal shares (its EquipartitionSharder asserts it): a size
whose tokens do not divide by N is left out for that runtime.
"""

from __future__ import annotations

from wanfit.model.calibration_grid import GRIDS, OFFICIAL_GRIDS
from wanfit.model.geometry import geometry
from wanfit.vocabulary.catalog import get_model
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import Plan, Runtime, Workload, baseline, check_layout_for

Size = tuple[int, int, int, int, bool]  # (height, width, frames, steps, decode), as the one-GPU grids


def layouts(runtime: Runtime, gpus: int, heads: int) -> list[tuple[Plan, str]]:
    """(plan, which sizes: "all" or "ends") for every several-GPU layout of the runtime on `gpus` GPUs."""
    if runtime == "wan":
        wanted = [(dict(dit_dtype="fp32", ulysses=gpus, dit_fsdp=True, t5_fsdp=True), "all"),
                  (dict(dit_dtype="bf16", ulysses=gpus), "ends"),
                  (dict(dit_dtype="fp32", ulysses=1, dit_fsdp=True, t5_fsdp=True), "ends")]
        base = dict(runtime="wan", offload="none", gpus=gpus)
    else:
        cp = baseline("diffusers", gpus, heads)
        wanted = [(dict(ulysses=cp.ulysses, ring=cp.ring), "all"),
                  (dict(ulysses=cp.ulysses, ring=cp.ring, dit_fsdp=True), "ends"),
                  (dict(ulysses=1, ring=gpus), "ends")]
        base = dict(gpus=gpus)
    out, seen = [], set()
    for knobs, sizes in wanted:
        try:
            plan = Plan(**base, **knobs)
        except (WanfitError, ValueError):
            continue
        if heads % plan.ulysses or plan in seen:
            continue
        seen.add(plan)
        out.append((plan, sizes))
    return out


def _splits(workload: Workload, plan: Plan) -> bool:
    """diffusers' context parallelism needs the sequence to split in equal shares (module docstring)."""
    return plan.runtime == "wan" or geometry(workload).tokens % plan.sequence_parallel == 0


def distributed_points(model: str, runtime: Runtime, gpus: int, quick: bool = False) -> list[tuple[Workload, Plan, Size]]:
    """(workload, plan, size) of every point `calibrate --gpus N` measures for the model (module docstring)."""
    spec = get_model(model)
    grids = GRIDS if runtime == "diffusers" else OFFICIAL_GRIDS
    if model not in grids:
        raise WanfitError(f"no {runtime} calibration grid for {model}: calibrate one of {', '.join(grids)}")
    sizes = grids[model][0][1]
    d = spec.defaults
    out = []
    for plan, which in layouts(runtime, gpus, spec.transformer["num_attention_heads"]):
        check_layout_for(spec, plan)
        chosen = sizes if which == "all" else [sizes[0], sizes[-1]]
        for size in (chosen[:2] if quick and which == "all" else chosen[:1] if quick else chosen):
            h, w, f, _steps, _decode = size
            wl = Workload(model=model, height=h, width=w, frames=f, steps=size[3], guidance=d.guidance,
                          guidance_2=d.guidance_2)
            if _splits(wl, plan):
                out.append((wl, plan, size))
    return out
