"""Memory-cap arithmetic: emulate a smaller target GPU on a larger local one.

`torch.cuda.set_per_process_memory_fraction(f)` limits what the caching allocator may *reserve*
to f x the local device's total memory (torch's `total_memory`). On the target, the process also
carries memory the allocator never sees: the CUDA context (~0.6 GiB on an H100 with torch 2.11)
and the driver's idle baseline. Those count against the target's usable memory just the same, so
the allocator's budget is the target's usable memory minus that outside-torch memory:

    torch budget = target usable - outside torch
    fraction     = torch budget / local total

The outside-torch figure is measured locally (same torch / CUDA build) and assumed to match the
target's; the report says so. Pure arithmetic, GiB throughout. It sits on the measuring side because
the runner applies the fraction in the capped process; verify builds its report's cap record from it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from wanfit.vocabulary.errors import WanfitError

# Within this fraction of the local GPU's memory the target is "the same size": nothing to emulate.
# It also absorbs the small difference between NVML's total and torch's total_memory.
SAME_SIZE_TOLERANCE = 0.01


class MemoryCap(BaseModel):
    """How a verify run was capped (all GiB)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    target_gpu: str
    target_memory_gib: float  # the target's usable memory (its GPU profile)
    local_total_gib: float  # the local GPU's total memory (what the fraction multiplies)
    outside_torch_gib: float  # CUDA context + driver baseline: device memory the allocator does not see
    torch_budget_gib: float  # what the caching allocator may reserve
    fraction: float  # the argument to torch.cuda.set_per_process_memory_fraction


def needs_cap(target_memory_gib: float, local_total_gib: float) -> bool:
    """Whether the target is smaller than the local GPU (so a cap is needed to emulate it).

    A target larger than the local GPU cannot be emulated: one-line error."""
    if target_memory_gib <= 0 or local_total_gib <= 0:
        raise WanfitError(f"memory sizes must be positive (target {target_memory_gib} GiB, local "
                          f"{local_total_gib} GiB): check the GPU profile")
    if target_memory_gib > local_total_gib * (1 + SAME_SIZE_TOLERANCE):
        raise WanfitError(f"the target has {target_memory_gib:.1f} GiB but this GPU only {local_total_gib:.1f} GiB: "
                          f"a larger GPU cannot be emulated; verify on a GPU at least that large")
    return target_memory_gib < local_total_gib * (1 - SAME_SIZE_TOLERANCE)


def memory_fraction(target_memory_gib: float, local_total_gib: float, outside_torch_gib: float) -> float:
    """The fraction for torch.cuda.set_per_process_memory_fraction that leaves the torch allocator
    exactly the target's usable memory minus the outside-torch memory. 1.0 when no cap is needed.

    `local_total_gib` must be torch's total_memory of the device (what torch multiplies the
    fraction with); `outside_torch_gib` the CUDA context plus the device memory used before the
    process started, both measured in the capped process before its first allocation."""
    if not needs_cap(target_memory_gib, local_total_gib):
        return 1.0
    return make_cap("target", target_memory_gib, local_total_gib, outside_torch_gib).fraction


def make_cap(target_gpu: str, target_memory_gib: float, local_total_gib: float, outside_torch_gib: float) -> MemoryCap:
    """The cap record for emulating `target_gpu` (always built: the caller decided a cap applies)."""
    needs_cap(target_memory_gib, local_total_gib)  # validates the sizes; raises when the target is larger
    if outside_torch_gib < 0:
        raise WanfitError(f"outside-torch memory cannot be negative ({outside_torch_gib:.2f} GiB)")
    budget = target_memory_gib - outside_torch_gib
    if budget <= 0:
        raise WanfitError(f"the CUDA context and driver baseline ({outside_torch_gib:.2f} GiB) already exceed the "
                          f"target's {target_memory_gib:.2f} GiB: nothing would fit; check the GPU profile")
    fraction = min(1.0, budget / local_total_gib)
    return MemoryCap(target_gpu=target_gpu, target_memory_gib=target_memory_gib, local_total_gib=local_total_gib,
                     outside_torch_gib=outside_torch_gib, torch_budget_gib=fraction * local_total_gib,
                     fraction=fraction)
