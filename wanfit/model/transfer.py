"""Cross-GPU transfer: carry a calibration measured on one GPU over to another.

Memory carries over unchanged (same shapes, same dtypes, same allocator), except the CUDA
context, which comes from the target's profile when it records one. Time is scaled term by term:
the matmul-bound part of a step by bf16 dense throughput, the attention part by attention
throughput (by matmul throughput when the target has no attention figure), the step's elementwise
part by the measured rate of the Wan block's elementwise chain where both GPUs have one (by HBM
bandwidth otherwise), other memory-bound work by HBM bandwidth, host transfers by the host link;
fixed per-launch overheads stay as measured. The VAE decode is split by the kernel share measured
on the calibrated GPU (wanfit.measure.vae_split): its convolutions' implicit GEMMs by matmul
throughput, the rest like the step's elementwise part. Model offload's moves down to host memory
stay as measured: they are bound by mapping fresh host pages, not by the link.

Why the elementwise chain and not the copy: its kernels (fp32 layer norms, modulation, GELU,
casts) are only partly bandwidth-bound. An H200 copies 1.40x as fast as an H100 but ran the chain
1.22x as fast, and the non-GEMM, non-attention kernels of real Wan forwards 1.17-1.19x
(bench/results/step-kernels-*.json); scaled by the copy, the H200's steps came out 6-11 % short.

The calibrated side of each ratio is the ceiling measured on the calibrated GPU. The target side
is the profile's recorded *achieved* figure when there is one; otherwise its datasheet figure
times the calibrated GPU's achieved/datasheet efficiency (so a datasheet is never compared with a
measurement). Pure Python; no heavy imports (this runs on the `plan` path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from wanfit.vocabulary.environment import Ceilings

if TYPE_CHECKING:
    from wanfit.model.calibration import Calibration

# What each fitted time term is bound by (how it scales to another GPU).
TERM_BOUND = {
    "matmul_s": "matmul",
    "attention_s": "attention",
    "elementwise_s": "elementwise",
    "modulation_s": "elementwise",
    "layer_forwards": "overhead",
}


@dataclass(frozen=True)
class TimeScale:
    """Time on the target / time on the calibrated GPU, per kind of work (1.0: same GPU)."""

    matmul: float = 1.0
    attention: float = 1.0
    bandwidth: float = 1.0
    elementwise: float = 1.0
    host_pinned: float = 1.0
    host_pageable: float = 1.0
    overhead: float = 1.0
    transferred_from: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def of(self, bound: str) -> float:
        return getattr(self, bound)


@lru_cache(maxsize=64)
def profile_or_none(key: str) -> Any | None:
    try:
        from wanfit.vocabulary.profiles import get_profile

        return get_profile(key)
    except Exception:  # no profile for the calibrated GPU: handled by the caller
        return None


def _opt(obj: Any, name: str) -> float | None:
    value = getattr(obj, name, None)
    return float(value) if value else None


def target_throughputs(cal_ceilings: Ceilings, cal_profile: Any | None, target: Any) -> tuple[Ceilings, list[str]]:
    """The target's throughputs, on the same footing as the calibrated GPU's measured ceilings."""
    notes = []

    def efficiency(measured: float, datasheet: float | None) -> float:
        if datasheet:
            return measured / datasheet
        return 1.0

    if cal_profile is None:
        notes.append("the calibrated GPU has no profile: target datasheet figures used as if achieved")
    dm = _opt(cal_profile, "bf16_dense_tflops")
    db = _opt(cal_profile, "memory_bandwidth_gbps")
    dh = _opt(cal_profile, "host_link_gbps")
    bandwidth = float(target.memory_bandwidth_gbps) * efficiency(cal_ceilings.device_copy_gbps, db)
    matmul = _opt(target, "achieved_matmul_tflops")
    if matmul is None and _opt(target, "bf16_dense_tflops") is not None:
        matmul = float(target.bf16_dense_tflops) * efficiency(cal_ceilings.matmul_tflops, dm)
    if matmul is None:  # no throughput figure at all: compute scaled like memory bandwidth
        notes.append(f"{target.key} has no bf16 throughput figure: compute time scaled by memory bandwidth")
        matmul = cal_ceilings.matmul_tflops * bandwidth / cal_ceilings.device_copy_gbps
    attention = _measured_sdpa(target)
    if attention is None:  # scale attention like matmul (keep the calibrated GPU's attention/matmul ratio)
        attention = matmul * cal_ceilings.attention_tflops / cal_ceilings.matmul_tflops
    host = _opt(target, "host_link_gbps")
    if host is None:
        notes.append(f"{target.key} has no host-link figure: host transfers as on the calibrated GPU")
        pinned, pageable = cal_ceilings.h2d_pinned_gbps, cal_ceilings.h2d_pageable_gbps
    else:
        pinned = _opt(target, "achieved_h2d_gbps") or host * efficiency(cal_ceilings.h2d_pinned_gbps, dh)
        pageable = host * efficiency(cal_ceilings.h2d_pageable_gbps, dh)
    if _opt(target, "achieved_d2d_gbps"):
        bandwidth = float(target.achieved_d2d_gbps)
    return Ceilings(matmul_tflops=matmul, attention_tflops=attention, device_copy_gbps=bandwidth,
                    h2d_pinned_gbps=pinned, h2d_pageable_gbps=pageable), notes


def _measured_sdpa(profile: Any) -> float | None:
    """The SDPA rate wanfit measured on this GPU (its own pick there), else None."""
    rates = getattr(profile, "class_rates", None)
    if rates is None:  # a duck-typed profile (tests) with the pre-class_rates field
        return _opt(profile, "achieved_attention_tflops")
    rate = rates.get(f"attention_{profile.default_attention['diffusers']}")
    return rate.value if rate is not None and rate.basis == "measured" else None


def elementwise_rates(cal_ceilings: Ceilings, cal_profile: Any | None, target: Any) -> tuple[float, float] | None:
    """(calibrated, target) rates of the elementwise chain when both are measured: the calibration's
    own ceilings, else its GPU's profile (calibrations made before the chain was measured)."""
    cal = cal_ceilings.elementwise_gbps or _opt(cal_profile, "achieved_elementwise_gbps")
    target_rate = _opt(target, "achieved_elementwise_gbps")
    return (cal, target_rate) if cal and target_rate else None


def vae_non_gemm_share(cal: Calibration, vae_family: str) -> float | None:
    """The share of a VAE decode's kernel time outside its convolutions' GEMMs on the calibrated GPU:
    the calibration's own ceilings, else its GPU's profile (calibrations made before it was measured)."""
    measured = (cal.ceilings.vae_decode_non_gemm_share if cal.ceilings else None) or {}
    profiled = getattr(profile_or_none(cal.gpu), "vae_decode_non_gemm_share", None) or {}
    return measured.get(vae_family, profiled.get(vae_family))


def time_scale(cal: Calibration, target: Any | None) -> TimeScale:
    """How much longer each kind of work takes on `target` than on the calibrated GPU."""
    if target is None or target.key == cal.gpu:
        return TimeScale()
    base = cal.feature_ceilings
    cal_profile = profile_or_none(cal.gpu)
    t, notes = target_throughputs(base, cal_profile, target)
    notes.append(f"time transferred from {cal.gpu} (ceilings {cal.feature_ceilings_source}) to {target.key}")
    bandwidth = base.device_copy_gbps / t.device_copy_gbps
    rates = elementwise_rates(base, cal_profile, target)
    if rates is None:
        notes.append(f"the step's elementwise part scaled by memory bandwidth: no measured elementwise rate for "
                     f"{target.key}")
    return TimeScale(
        matmul=base.matmul_tflops / t.matmul_tflops,
        attention=base.attention_tflops / t.attention_tflops,
        bandwidth=bandwidth,
        elementwise=rates[0] / rates[1] if rates else bandwidth,
        host_pinned=base.h2d_pinned_gbps / t.h2d_pinned_gbps,
        host_pageable=base.h2d_pageable_gbps / t.h2d_pageable_gbps,
        overhead=1.0,
        transferred_from=cal.label,
        notes=tuple(notes),
    )


def context_gib(cal: Calibration, target: Any | None) -> tuple[float, bool]:
    """CUDA context size on the target and whether it is known there (else the calibrated one)."""
    if target is not None and target.key != cal.gpu:
        ctx = _opt(target, "cuda_context_gib")
        if ctx is not None:
            return ctx, True
        return cal.context_gib, False
    return cal.context_gib, True


def kernel_time_ratio(profile: Any | None, runtime: str, kernel: str) -> tuple[float | None, str]:
    """(attention time with `kernel` / with the runtime's own kernel on this GPU, and what that rests on), from
    the profile's measured kernel rates (one session's: a published figure of another shape does not set a ratio
    between kernels on one GPU); (None, why not) where the profile has no such rates."""
    rates = {name.removeprefix("attention_"): rate.value
             for name, rate in (getattr(profile, "class_rates", None) or {}).items()
             if name.startswith("attention_") and rate.basis == "measured"}
    own = (getattr(profile, "default_attention", None) or {}).get(runtime)
    where = getattr(profile, "key", "this GPU")
    if own not in rates or kernel not in rates:
        return None, f"no measured {kernel} rate on {where}: the step as with the runtime's own kernel"
    return rates[own] / rates[kernel], (f"attention kernel {kernel} timed from {where}'s measured kernel rates "
                                        f"({kernel} {rates[kernel]:g} against {own} {rates[own]:g} TFLOP/s, the "
                                        f"{runtime} runtime's own there)")
