"""Time on another GPU by kernel class: which class each part of a calibrated time belongs to, the rate of that
class on each GPU, and how sure the transfer is.

A calibrated time splits into classes (wanfit.vocabulary.profiles.RATE_CLASSES): the step's fitted matmul term
is `gemm_bf16`, its attention term the attention backend the runtime ran on the calibrated GPU (its profile's
`default_attention`, or the plan's pinned kernel), its elementwise and modulation terms `elementwise`; the official
code's float64 RoPE adds `fp64` work estimated from the geometry; the VAE decode splits into its convolutions'
implicit GEMMs (`conv3d_vae`) and the rest (`elementwise`). Each class is rescaled by the target's rate of the
backend that will run there over the calibrated GPU's rate, and every rescaled second is entered in a per-prediction
ledger with the basis of its rates (measured, public, derived, or corrected by a measured run on the target), which
sets the prediction's transfer interval (BASIS_REL, from bench/transfer_public.py).

Pure Python; reads profiles and calibrations only (this runs on the `plan` path).
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

# The basis of a transferred class, from most to least certain. `corrected`: a measured run on the target GPU
# set the factor (wanfit calibrate --from-run).
BASIS_ORDER = ("measured", "corrected", "public", "derived")
# Relative time uncertainty a transferred second carries, by the basis of its class's rates, from the spread of
# the transfer's own errors (python bench/transfer_public.py): measured on both GPUs, the H100 calibrations on the
# real H200 runs (steps and decodes outside sequential offload, worst 5.9 %) x 1.5; corrected by a run on the
# target, as measured; public, the GPU-to-GPU ratios of the published Wan tables (A100, H20 against H100: 12
# ratios, worst 6.3 %) x 1.5, rounded up to cover the published absolute figures (worst +8.8 %, RTX 4090);
# derived, the 90th percentile of the leave-one-out derivations of the step's class rates (28, median 13.7 %).
BASIS_REL = {"measured": 0.09, "corrected": 0.09, "public": 0.10, "derived": 0.31}
# A transferred prediction none of whose seconds were classified (an uncalibrated stage only): as wide as derived.
UNCLASSIFIED_REL = BASIS_REL["derived"]
# The official code's RoPE (wan/modules/model.py rope_apply) per element of q and k per block: the cast to
# float64, the complex multiply (two multiplies and two FMAs per complex pair: two instructions per element) and
# the cast back to float32 run on the FP64 units; four FP64 instructions per element, counted as 8 FLOPs to be
# divided by datasheet FP64 TFLOP/s (an FMA counts 2 there). Its memory traffic stays in the elementwise term.
FP64_FLOPS_PER_ELEMENT = 8.0


def worse(*bases: str) -> str:
    """The least certain of `bases`."""
    return max(bases, key=BASIS_ORDER.index)


def rate(profile: Any | None, cls: str) -> tuple[float, str] | None:
    """(value, basis) of class `cls` on the GPU `profile` describes; None where it has none."""
    if profile is None:
        return None
    entry = (getattr(profile, "class_rates", None) or {}).get(cls)
    return (float(entry.value), str(entry.basis)) if entry is not None else None


def backend(profile: Any | None, runtime: str, pinned: str = "auto") -> str | None:
    """The attention backend a runtime runs on this GPU: the pinned one, else the runtime's own pick there."""
    if pinned != "auto":
        return pinned
    return (getattr(profile, "default_attention", None) or {}).get(runtime)


def calibrated_attention(ceiling_tflops: float, cal_profile: Any | None, kernel: str | None) -> tuple[float, str] | None:
    """The calibrated GPU's rate of attention `kernel`, on the footing of the calibration's measured SDPA ceiling:
    the ceiling itself for SDPA's own pick there, else the ceiling times the profile's ratio of the two kernels."""
    sdpa = backend(cal_profile, "diffusers")
    if kernel is None or cal_profile is None or kernel == sdpa:
        return ceiling_tflops, "measured"
    own, ref = rate(cal_profile, f"attention_{kernel}"), rate(cal_profile, f"attention_{sdpa}")
    if own is None or ref is None:
        return None
    return ceiling_tflops * own[0] / ref[0], worse(own[1], ref[1])


def attention_ratio(ceiling_tflops: float, cal_profile: Any | None, target: Any, kernel_cal: str | None,
                    kernel_tgt: str | None) -> tuple[float, str] | None:
    """(attention time on the target with `kernel_tgt` / on the calibrated GPU with `kernel_cal`, basis); None
    where either rate is unknown."""
    cal = calibrated_attention(ceiling_tflops, cal_profile, kernel_cal)
    tgt = rate(target, f"attention_{kernel_tgt}") if kernel_tgt else None
    if cal is None or tgt is None:
        return None
    return cal[0] / tgt[0], worse(cal[1], tgt[1])


def rope_fp64_tflop(pc: Any) -> float:
    """FP64 work of one step's float64 RoPE (the official runtime only), TFLOP: q and k of every block of every
    forward."""
    if pc.plan.runtime != "wan":
        return 0.0
    spec = pc.spec
    elements = 2.0 * pc.x["tokens"] * spec.inner_dim * spec.transformer["num_layers"] * pc.wl.batch
    return FP64_FLOPS_PER_ELEMENT * elements * pc.x["forwards_per_step"] / 1e12


# ---- the ledger: every transferred second and the basis of its rates, per prediction ------------------------

_LEDGER: WeakKeyDictionary = WeakKeyDictionary()


def record(pc: Any, key: str, seconds: float, basis: str) -> None:
    """Enter `seconds` of the prediction `pc` (on the target, the whole run's share) under `key` (stage:class)."""
    _LEDGER.setdefault(pc, {})[key] = (max(0.0, seconds), basis)


def ledger(pc: Any) -> dict[str, tuple[float, str]]:
    return dict(_LEDGER.get(pc, {}))


def transfer_rel(pc: Any) -> float:
    """The relative time uncertainty the transfer adds to `pc`'s prediction: its transferred seconds weighted by
    the uncertainty of their classes' bases."""
    entries = list(_LEDGER.get(pc, {}).values())
    total = sum(seconds for seconds, _ in entries)
    if total <= 0:
        return UNCLASSIFIED_REL
    return sum(seconds * BASIS_REL[basis] for seconds, basis in entries) / total


# ---- the step and the decode on the target, class by class --------------------------------------------------


def _cal_profile(pc: Any) -> Any | None:
    from wanfit.model.transfer import profile_or_none

    return profile_or_none(pc.cal.gpu)


def transferred(pc: Any) -> bool:
    return pc.scale.transferred_from is not None


def attention_factor(pc: Any) -> tuple[float, str]:
    """(attention time on the target with the plan's runtime's own backend there / as calibrated, basis): the
    calibrated GPU ran its runtime's own backend (its profile's default_attention)."""
    if not transferred(pc):
        return 1.0, "measured"
    cal_profile = _cal_profile(pc)
    kernel_cal = backend(cal_profile, pc.cal.runtime)
    kernel_tgt = backend(pc.target, pc.plan.runtime)
    ratio = attention_ratio(pc.cal.feature_ceilings.attention_tflops, cal_profile, pc.target, kernel_cal, kernel_tgt)
    if ratio is None:
        pc.note(f"attention scaled like the calibration's SDPA ceiling: no {kernel_tgt or 'attention'} rate for "
                f"{pc.target.key}")
        return pc.scale.attention, pc.scale.basis_of("attention")
    pc.note(f"attention: {kernel_cal} on {pc.cal.gpu} -> {kernel_tgt} on {pc.target.key} (the {pc.plan.runtime} "
            f"runtime's own there), {ratio[0]:.2f}x the time ({ratio[1]} rates)")
    return ratio


def pinned_attention_extra(pc: Any, attention_s: float, calibrated_extra: float | None) -> float:
    """A pinned attention kernel's step time above the runtime's own backend on the target: the kernel's time on
    the calibrated GPU (calibrated there, else the runtime's own time at the profile's kernel ratio) at the two
    GPUs' rates of that kernel. 0, noted, where the kernel does not run on the target or has no rate there."""
    kernel = pc.plan.attention
    cal_profile = _cal_profile(pc)
    ceiling = pc.cal.feature_ceilings.attention_tflops
    if calibrated_extra is not None:
        ratio, on_cal = attention_ratio(ceiling, cal_profile, pc.target, kernel, kernel), attention_s + calibrated_extra
    else:
        own = backend(cal_profile, pc.cal.runtime)
        ratio, on_cal = attention_ratio(ceiling, cal_profile, pc.target, own, kernel), attention_s
    if ratio is None:
        why = "does not run" if kernel not in (getattr(pc.target, "backends", lambda: ())() or (kernel,)) else \
            "has no rate"
        pc.note(f"attention kernel {kernel} {why} on {pc.target.key}: the step as with the runtime's own kernel")
        return 0.0
    auto = attention_factor(pc)[0]
    extra = on_cal * ratio[0] - attention_s * auto
    record(pc, "step:attention_pinned", abs(extra) * pc.wl.steps, ratio[1])
    pc.note(f"attention kernel {kernel} on {pc.target.key} from the two GPUs' {kernel} rates ({ratio[1]})")
    return extra


def step_on_target(pc: Any, terms: dict[str, float], intercept: float) -> float:
    """The fitted steady step's terms on the target, each by its class (the ledger gets every transferred
    second), plus the official code's FP64 RoPE at the target's FP64 rate, times a run correction there."""
    from wanfit.model.transfer import BOUND_CLASS, TERM_BOUND

    scale, steps = pc.scale, pc.wl.steps
    total = intercept * scale.overhead
    for name, term in terms.items():
        bound = TERM_BOUND[name]
        factor, basis = attention_factor(pc) if bound == "attention" else (scale.of(bound), scale.basis_of(bound))
        total += term * factor
        if transferred(pc) and bound != "overhead":
            cls = f"attention_{backend(pc.target, pc.plan.runtime)}" if bound == "attention" else BOUND_CLASS[bound]
            record(pc, f"step:{cls}:{name}", term * factor * steps, basis)
    total += _fp64_extra(pc)
    factor = step_correction(pc)
    return total * factor


def _fp64_extra(pc: Any) -> float:
    """The official code's float64 RoPE at the target's FP64 rate instead of the calibrated GPU's, per step."""
    tflop = rope_fp64_tflop(pc) if transferred(pc) else 0.0
    if not tflop:
        return 0.0
    cal, tgt = rate(_cal_profile(pc), "fp64"), rate(pc.target, "fp64")
    if cal is None or tgt is None:
        pc.note(f"the official code's float64 RoPE not rescaled: no FP64 rate for {pc.cal.gpu} or {pc.target.key}")
        return 0.0
    extra = tflop * (1.0 / tgt[0] - 1.0 / cal[0])
    record(pc, "step:fp64", tflop / tgt[0] * pc.wl.steps, worse(cal[1], tgt[1]))
    pc.note(f"the official code's float64 RoPE: {tflop * 1e3:.0f} GFLOP of FP64 a step at {tgt[0]:g} TFLOP/s on "
            f"{pc.target.key} ({extra:+.3f} s a step against {pc.cal.gpu})")
    return extra


def _corrected(pc: Any, stage: str, factor: float | None) -> float:
    correction = pc.scale.correction
    if correction is None or factor is None or correction.runtime != pc.plan.runtime:
        if correction is not None and correction.runtime != pc.plan.runtime:
            pc.note(f"run correction {pc.scale.correction_path} is of the {correction.runtime} runtime: not used")
        return 1.0
    pc.note(f"corrected by a run measured on {correction.gpu} ({pc.scale.correction_path}: {correction.model}, step "
            f"x{correction.step_factor:.3f}" + (f", decode x{correction.decode_factor:.3f}"
                                               if correction.decode_factor else "") + " against the pure transfer)")
    entries = _LEDGER.get(pc, {})
    for key, (seconds, _) in list(entries.items()):
        if key.startswith(f"{stage}:"):
            entries[key] = (seconds * factor, "corrected")
    return factor


def step_correction(pc: Any) -> float:
    correction = pc.scale.correction
    return _corrected(pc, "step", correction.step_factor if correction else None)


def decode_on_target(pc: Any, terms: dict[str, float], intercept: float, share: float | None) -> float:
    """The VAE decode's fitted terms on the target: the convolutions' implicit GEMMs (1 - share of the kernel
    time measured on the calibrated GPU) by conv3d_vae, the rest like the elementwise chain; without a measured
    split, all of it by matmul throughput (noted); times a run correction there."""
    work = sum(terms.values())
    scale = pc.scale
    if not transferred(pc):
        return work + intercept * scale.overhead
    if share is None:
        pc.note(f"VAE decode scaled by matmul throughput: no measured kernel split of the {pc.spec.vae_family} "
                f"decode on {pc.cal.gpu}")
        parts = {"decode:gemm_bf16": (work * scale.matmul, scale.basis_of("matmul"))}
    else:
        parts = {"decode:conv3d_vae": (work * (1.0 - share) * scale.conv, scale.basis_of("conv")),
                 "decode:elementwise": (work * share * scale.elementwise, scale.basis_of("elementwise"))}
    for key, (seconds, basis) in parts.items():
        record(pc, key, seconds, basis)
    total = sum(seconds for seconds, _ in parts.values()) + intercept * scale.overhead
    correction = scale.correction
    return total * _corrected(pc, "decode", correction.decode_factor if correction else None)
