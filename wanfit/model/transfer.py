"""Cross-GPU transfer: carry a calibration measured on one GPU over to another, kernel class by kernel class.

Memory carries over unchanged (same shapes, same dtypes, same allocator), except the CUDA context, which comes
from the target's profile when it records one. Time is scaled class by class (wanfit.model.kernel_classes): each
fitted term of a step by the target's rate of its kernel class over the calibrated GPU's (matmul: `gemm_bf16`;
attention: the backend the runtime runs on each GPU, `default_attention`, or the pinned one; elementwise and
modulation: the Wan block's elementwise chain), the official code's float64 RoPE by the FP64 rates, the VAE
decode by the kernel split measured on the calibrated GPU (its convolutions' implicit GEMMs by `conv3d_vae`, the
rest like the step's elementwise part), weight casts by the device copy, host transfers by the pinned h2d rate
(pageable: the host link); fixed per-launch overheads stay as measured. Model offload's moves down to host memory
stay as measured: they are bound by mapping fresh host pages, not by the link.

The calibrated side of each ratio is the ceiling measured on the calibrated GPU (the calibration's own ceilings;
attention kernels other than SDPA's own pick through its profile's measured ratio to it); the target side is its
profile's class rate, whatever its basis (measured, public or derived: that basis sets the interval). A class
the target profile lacks falls back as before: matmul to its datasheet times the calibrated GPU's efficiency,
elementwise to the copy bandwidth, attention like matmul, each said in a note. A run measured on the target
(`wanfit calibrate --from-run`, wanfit.vocabulary.corrections) corrects the step and the decode there first.

Why the elementwise chain and not the copy: its kernels (fp32 layer norms, modulation, GELU, casts) are only
partly bandwidth-bound. An H200 copies 1.40x as fast as an H100 but ran the chain 1.22x as fast, and the
non-GEMM, non-attention kernels of real Wan forwards 1.17-1.19x (bench/results/step-kernels-*.json).
Pure Python; no heavy imports (this runs on the `plan` path).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from wanfit.model import kernel_classes as kc
from wanfit.vocabulary.environment import Ceilings

if TYPE_CHECKING:
    from wanfit.model.calibration import Calibration
    from wanfit.vocabulary.corrections import RunCorrection

# What each fitted time term is bound by (how it scales to another GPU), and the kernel class behind it.
TERM_BOUND = {
    "matmul_s": "matmul",
    "attention_s": "attention",
    "elementwise_s": "elementwise",
    "modulation_s": "elementwise",
    "layer_forwards": "overhead",
}
BOUND_CLASS = {"matmul": "gemm_bf16", "elementwise": "elementwise", "bandwidth": "d2d_copy", "conv": "conv3d_vae",
               "host_pinned": "h2d_pinned"}


@dataclass(frozen=True)
class TimeScale:
    """Time on the target / time on the calibrated GPU, per kind of work (1.0: same GPU), the basis of each
    ratio, and the run correction applied there."""

    matmul: float = 1.0
    attention: float = 1.0
    bandwidth: float = 1.0
    elementwise: float = 1.0
    host_pinned: float = 1.0
    host_pageable: float = 1.0
    overhead: float = 1.0
    conv: float = 1.0
    basis: dict[str, str] = field(default_factory=dict)
    correction: RunCorrection | None = None
    correction_path: str | None = None
    transferred_from: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def of(self, bound: str) -> float:
        return getattr(self, bound)

    def basis_of(self, bound: str) -> str:
        return self.basis.get(bound, "derived")

    def transfer_rel(self, pc: Any) -> float:
        """The relative time uncertainty the transfer adds to the prediction `pc` (kernel_classes.transfer_rel)."""
        return kc.transfer_rel(pc)


# Off while a run correction is solved: it is set against the pure transfer.
_CORRECTIONS_ON: ContextVar[bool] = ContextVar("corrections_on", default=True)


@contextmanager
def without_corrections() -> Iterator[None]:
    """Predictions inside use the pure transfer (no run correction of the target)."""
    token = _CORRECTIONS_ON.set(False)
    try:
        yield
    finally:
        _CORRECTIONS_ON.reset(token)


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


def _efficiency(measured: float, datasheet: float | None) -> float:
    return measured / datasheet if datasheet else 1.0


def target_rates(cal_ceilings: Ceilings, cal_profile: Any | None, target: Any) -> tuple[dict[str, tuple[float, str]],
                                                                                        list[str]]:
    """The target's rate per bound (matmul, attention = SDPA's own pick, bandwidth, host_pinned, host_pageable)
    with its basis, on the same footing as the calibrated GPU's measured ceilings, and the fallbacks taken."""
    notes = []
    if cal_profile is None:
        notes.append("the calibrated GPU has no profile: target datasheet figures used as if achieved")
    dm, db, dh = (_opt(cal_profile, f) for f in ("bf16_dense_tflops", "memory_bandwidth_gbps", "host_link_gbps"))
    copy = kc.rate(target, "d2d_copy") or (float(target.memory_bandwidth_gbps)
                                           * _efficiency(cal_ceilings.device_copy_gbps, db), "derived")
    matmul = kc.rate(target, "gemm_bf16")
    if matmul is None and _opt(target, "bf16_dense_tflops") is not None:
        matmul = float(target.bf16_dense_tflops) * _efficiency(cal_ceilings.matmul_tflops, dm), "derived"
    if matmul is None:  # no throughput figure at all: compute scaled like memory bandwidth
        notes.append(f"{target.key} has no bf16 throughput figure: compute time scaled by memory bandwidth")
        matmul = cal_ceilings.matmul_tflops * copy[0] / cal_ceilings.device_copy_gbps, "derived"
    sdpa = kc.backend(target, "diffusers")
    attention = kc.rate(target, f"attention_{sdpa}") if sdpa else None
    if attention is None:  # scale attention like matmul (keep the calibrated GPU's attention/matmul ratio)
        attention = matmul[0] * cal_ceilings.attention_tflops / cal_ceilings.matmul_tflops, "derived"
    host = _opt(target, "host_link_gbps")
    if host is None:
        notes.append(f"{target.key} has no host-link figure: host transfers as on the calibrated GPU")
        pinned, pageable = (cal_ceilings.h2d_pinned_gbps, "derived"), (cal_ceilings.h2d_pageable_gbps, "derived")
    else:
        pinned = kc.rate(target, "h2d_pinned") or (host * _efficiency(cal_ceilings.h2d_pinned_gbps, dh), "derived")
        pageable = host * _efficiency(cal_ceilings.h2d_pageable_gbps, dh), "derived"
    return {"matmul": matmul, "attention": attention, "bandwidth": copy, "host_pinned": pinned,
            "host_pageable": pageable}, notes


def target_throughputs(cal_ceilings: Ceilings, cal_profile: Any | None, target: Any) -> tuple[Ceilings, list[str]]:
    """The target's throughputs, on the same footing as the calibrated GPU's measured ceilings."""
    rates, notes = target_rates(cal_ceilings, cal_profile, target)
    return Ceilings(matmul_tflops=rates["matmul"][0], attention_tflops=rates["attention"][0],
                    device_copy_gbps=rates["bandwidth"][0], h2d_pinned_gbps=rates["host_pinned"][0],
                    h2d_pageable_gbps=rates["host_pageable"][0]), notes


def elementwise_rates(cal_ceilings: Ceilings, cal_profile: Any | None, target: Any) -> tuple[float, float] | None:
    """(calibrated, target) rates of the elementwise chain when both are known: the calibration's own ceilings,
    else its GPU's profile (calibrations made before the chain was measured); the target's profile."""
    cal = cal_ceilings.elementwise_gbps or (kc.rate(cal_profile, "elementwise") or (None,))[0]
    target_rate = kc.rate(target, "elementwise")
    return (cal, target_rate[0]) if cal and target_rate else None


def vae_non_gemm_share(cal: Calibration, vae_family: str) -> float | None:
    """The share of a VAE decode's kernel time outside its convolutions' GEMMs on the calibrated GPU:
    the calibration's own ceilings, else its GPU's profile (calibrations made before it was measured)."""
    measured = (cal.ceilings.vae_decode_non_gemm_share if cal.ceilings else None) or {}
    profiled = getattr(profile_or_none(cal.gpu), "vae_decode_non_gemm_share", None) or {}
    return measured.get(vae_family, profiled.get(vae_family))


def _class_ratio(cal_profile: Any | None, target: Any, cls: str) -> tuple[float, str] | None:
    """(time on the target / on the calibrated GPU, basis) of a class both profiles rate."""
    cal, tgt = kc.rate(cal_profile, cls), kc.rate(target, cls)
    if cal is None or tgt is None:
        return None
    return cal[0] / tgt[0], kc.worse(cal[1], tgt[1])


def time_scale(cal: Calibration, target: Any | None) -> TimeScale:
    """How much longer each kind of work takes on `target` than on the calibrated GPU."""
    if target is None or target.key == cal.gpu:
        return TimeScale()
    base = cal.feature_ceilings
    cal_profile = profile_or_none(cal.gpu)
    rates, notes = target_rates(base, cal_profile, target)
    notes.append(f"time transferred from {cal.gpu} (ceilings {cal.feature_ceilings_source}) to {target.key}, kernel "
                 f"class by class ({_bases_word(rates)})")
    notes.extend(_nearest_note(cal, target))
    ratios = {"matmul": (base.matmul_tflops / rates["matmul"][0], rates["matmul"][1]),
              "bandwidth": (base.device_copy_gbps / rates["bandwidth"][0], rates["bandwidth"][1]),
              "host_pinned": (base.h2d_pinned_gbps / rates["host_pinned"][0], rates["host_pinned"][1]),
              "host_pageable": (base.h2d_pageable_gbps / rates["host_pageable"][0], "derived")}
    own_cal, own_tgt = kc.backend(cal_profile, cal.runtime), kc.backend(target, cal.runtime)
    attention = kc.attention_ratio(base.attention_tflops, cal_profile, target, own_cal, own_tgt)
    ratios["attention"] = attention or (base.attention_tflops / rates["attention"][0], rates["attention"][1])
    element = elementwise_rates(base, cal_profile, target)
    basis = kc.worse("measured", (kc.rate(target, "elementwise") or (0, "derived"))[1])
    ratios["elementwise"] = (element[0] / element[1], basis) if element else ratios["bandwidth"]
    if element is None:
        notes.append(f"the step's elementwise part scaled by memory bandwidth: no measured elementwise rate for "
                     f"{target.key}")
    conv = _class_ratio(cal_profile, target, "conv3d_vae")
    ratios["conv"] = conv or ratios["matmul"]
    correction, path = _correction(cal, target)
    return TimeScale(
        matmul=ratios["matmul"][0], attention=ratios["attention"][0], bandwidth=ratios["bandwidth"][0],
        elementwise=ratios["elementwise"][0], host_pinned=ratios["host_pinned"][0],
        host_pageable=ratios["host_pageable"][0], overhead=1.0, conv=ratios["conv"][0],
        basis={bound: b for bound, (_, b) in ratios.items()},
        correction=correction, correction_path=path, transferred_from=cal.label, notes=tuple(notes),
    )


def _bases_word(rates: dict[str, tuple[float, str]]) -> str:
    derived = [bound for bound, (_, basis) in rates.items() if basis == "derived" and bound != "host_pageable"]
    return f"derived from the datasheet: {', '.join(derived)}" if derived else "achieved rates"


def _nearest_note(cal: Calibration, target: Any) -> list[str]:
    from wanfit.model.calibration import nearest_note

    note = nearest_note(cal, target.key)
    return [note] if note else []


def _correction(cal: Calibration, target: Any) -> tuple[RunCorrection | None, str | None]:
    """The run correction of the target GPU for the calibration's runtime: the calibration's own model's first,
    else another model's of the same runtime (the factors correct that GPU's class rates, not a model)."""
    from wanfit.model.calibration import correction_dirs
    from wanfit.vocabulary.corrections import corrections_for

    if not _CORRECTIONS_ON.get():
        return None, None
    found = [(p, c) for p, c in corrections_for(target.key, correction_dirs(cal)) if c.runtime == cal.runtime]
    if not found:
        return None, None
    path, correction = min(found, key=lambda pc: (pc[1].model != cal.model, str(pc[0])))
    return correction, str(path)


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
    the profile's achieved kernel rates (measured, or published: the FA3 paper's H100 figure put the official
    code's FA3 runs of the Wan2.2 README within a few % where the FA2 rate was 45 % slow); (None, why not) where
    the profile has no achieved rate of one of them (a datasheet-derived ratio between kernels is not used)."""
    entries = {name.removeprefix("attention_"): r for name, r in (getattr(profile, "class_rates", None) or {}).items()
               if name.startswith("attention_") and r.basis != "derived"}
    own = (getattr(profile, "default_attention", None) or {}).get(runtime)
    where = getattr(profile, "key", "this GPU")
    if own not in entries or kernel not in entries:
        return None, f"no measured {kernel} rate on {where}: the step as with the runtime's own kernel"
    words = "measured" if entries[own].basis == entries[kernel].basis == "measured" else "measured and published"
    return entries[own].value / entries[kernel].value, (
        f"attention kernel {kernel} timed from {where}'s {words} kernel rates ({kernel} {entries[kernel].value:g} "
        f"against {own} {entries[own].value:g} TFLOP/s, the {runtime} runtime's own there)")
