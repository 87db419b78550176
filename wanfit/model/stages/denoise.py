"""The denoising steps: the DiT's activations and the steady step's time, with each plan knob's own cost.

memory  persistent tensors at a step's start (latents, embeddings), the step's transient (DiT activations,
        linear in the hidden-state size), and what a knob adds above a bf16 resident DiT: fp8 / fp32 weight
        casts, the blocks in flight of group offload, the leaf in flight of sequential offload.
time    the steady step (matmul, attention, elementwise, per-block terms: inverse efficiencies at the calibrated
        GPU's ceilings, each scaled to another GPU by its kind of work), the first step's warm-up, and each knob's
        extra: weight casts per forward, group offload's unhidden block stream, sequential offload's stream, a
        pinned attention kernel.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from wanfit.model.context import FitContext, PredictContext, first_in_process, size_key, transient
from wanfit.model.fitting import FIXED_PRIOR_STRENGTH, PRIOR_STRENGTH, Row, fit_constant, fit_linear
from wanfit.model.kernel_classes import pinned_attention_extra, step_correction, step_on_target, transferred
from wanfit.model.transfer import kernel_time_ratio
from wanfit.model.weights import GROUPS_IN_FLIGHT, WeightsTable, analytic_weights_gib, measured_resident_gib
from wanfit.vocabulary.catalog import get_model
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.units import transfer_s

if TYPE_CHECKING:
    from wanfit.vocabulary.measurement import Measurement

# ---- the fitted quantities, as named in calibration files -----------------------------------------
PERSISTENT = "denoise_persistent"
ACTIVATION = "denoise_activation"
STEP = "step_time"
WARMUP = "warmup_s"
WARMUP_REUSED = "warmup_reused_s"


def extra_memory(knob: str) -> str:
    """The transient a knob (fp8, fp32, group, sequential) adds above a bf16 resident DiT's step."""
    return f"denoise_extra:{knob}"


def extra_time(knob: str) -> str:
    """The time a knob (fp8, fp32, group, sequential) adds above a bf16 resident DiT's step."""
    return f"step_extra:{knob}"


UNCALIBRATED_FALLBACKS = tuple(extra_time(k) for k in ("fp8", "fp32", "group", "sequential"))
STEP_FEATURES = ["matmul_s", "attention_s", "elementwise_s", "layer_forwards", "modulation_s"]


def steady_s(m: Measurement) -> float | None:
    return m.fastest_steady_step_s()


def block_gib(fc: FitContext, weights: WeightsTable, dtype: str) -> float:
    """One DiT block of this model in `dtype` (what block-level group offload moves)."""
    return weights["transformer"][dtype].gib / fc.spec.transformer["num_layers"]


def cast_s(gib: float, forwards: float, copy_gbps: float) -> float:
    """One cast of every DiT weight per forward, at the device's copy bandwidth (fp8 storage, fp32 autocast)."""
    return transfer_s(gib * forwards, copy_gbps)


# ---- fit: memory ---------------------------------------------------------------------------------


def fit_memory(fc: FitContext, weights: WeightsTable) -> None:
    _fit_persistent_and_activation(fc)
    _fit_knob_memory(fc, weights)


def _fit_persistent_and_activation(fc: FitContext) -> None:
    persistent, act = [], []
    for m in fc.ms:
        steps = m.steady_steps()
        if (resident := measured_resident_gib(m, "denoise")) is not None:
            for s in steps[:1]:
                if s.torch_allocated_start_gib is not None:
                    persistent.append(Row({}, s.torch_allocated_start_gib - resident, size_key(m)))
        if m.plan.dit_dtype == "bf16" and m.plan.offload in ("none", "model"):
            if not steps and m.plan.offload == "none":
                steps = m.steps()[:1]
            values = [t for t in (transient(s) for s in steps) if t is not None]
            if values:
                act.append(Row(fc.x(m), max(values), size_key(m)))
    fc.put(PERSISTENT, fit_constant(persistent, target="allocated at a step's start above the resident weights "
                                    "(latents, embeddings), GiB", unit="GiB", held_out=fc.held))
    activation = fit_linear(act, ["hidden_state_gib"], target="denoise step transient (allocated peak - start), "
                            "GiB", unit="GiB", held_out=fc.held)
    if activation is None:
        raise WanfitError(f"no bf16 denoising step with allocator readings in the {fc.model_key} measurements: "
                          f"the calibration needs baseline points (offload none, bf16 DiT)")
    fc.put(ACTIVATION, activation)


def _fit_knob_memory(fc: FitContext, weights: WeightsTable) -> None:
    """Each knob's transient above the bf16 activation the model predicts at the point's size."""
    activation = fc.models[ACTIVATION]
    extra: dict[str, list[Row]] = defaultdict(list)
    for m in fc.ms:
        p = m.plan
        values = [t for t in (transient(s) for s in m.steady_steps()) if t is not None]
        if not values or (p.dit_dtype == "bf16" and p.offload in ("none", "model")):
            continue
        residual = max(values) - activation.predict(fc.x(m))
        if p.offload in ("none", "model"):
            extra[p.dit_dtype].append(Row({}, residual, size_key(m)))
        elif p.offload == "group":
            extra[f"group:{p.dit_dtype}"].append(Row({"block_gib": block_gib(fc, weights, p.dit_dtype)}, residual,
                                                     size_key(m)))
        elif p.offload == "sequential":
            extra["sequential"].append(Row({}, residual, size_key(m)))
    for dtype in ("fp8", "fp32"):
        fc.put(extra_memory(dtype), fit_constant(extra.get(dtype, []), target=f"denoise transient of a {dtype} "
                                                 f"DiT above bf16, GiB", unit="GiB", held_out=fc.held))
    group_rows = []
    for key, rows in extra.items():
        if key.startswith("group:"):
            dtype_extra = fc.models.get(extra_memory(key.split(":")[1]))
            off = dtype_extra.predict({}) if dtype_extra is not None else 0.0
            group_rows += [Row(r.x, r.y - off, r.group) for r in rows]
    fc.put(extra_memory("group"), fit_linear(group_rows, ["block_gib"], intercept=False, held_out=fc.held, unit="GiB",
           target="denoise transient of group offloading above no offload (blocks in flight), GiB"))
    fc.put(extra_memory("sequential"), fit_constant(extra.get("sequential", []), target="denoise transient of "
                                                    "sequential offload above no offload, GiB", unit="GiB",
                                                    held_out=fc.held))


# ---- fit: time -----------------------------------------------------------------------------------


def fit_time(fc: FitContext, weights: WeightsTable) -> None:
    step = _fit_step(fc)
    _fit_warmup(fc)
    _fit_cast_extras(fc, weights, step)
    _fit_offload_extras(fc, weights, step)
    _fit_attention_extras(fc, step)


def _fit_attention_extras(fc: FitContext, step) -> None:
    """A pinned attention kernel's step against the runtime's own (`auto`): a share of the attention work
    (negative where the kernel is faster), on the bf16 resident points measured with it."""
    rows: dict[str, list[Row]] = defaultdict(list)
    for m in fc.ms:
        t, p = steady_s(m), m.plan
        if t is None or p.attention == "auto" or p.dit_dtype != "bf16" or p.offload not in ("none", "model"):
            continue
        base = step.predict(fc.x(m))
        rows[p.attention].append(Row({"attention_s": fc.x(m)["attention_s"]}, t - base, size_key(m), ref=t))
    for kernel, kernel_rows in sorted(rows.items()):
        fc.put(extra_time(f"attention:{kernel}"), fit_linear(kernel_rows, ["attention_s"], intercept=False,
               lower=[-1.0], held_out=fc.held, unit="s",
               target=f"step time with the {kernel} attention kernel above the runtime's own kernel (a share of "
                      f"the attention work at the calibrated ceiling), s"))


def _baseline_step(m: Measurement) -> bool:
    """Steady steps of the bf16 DiT, resident, with the runtime's own attention kernel: what the step model fits."""
    return m.plan.dit_dtype == "bf16" and m.plan.offload in ("none", "model") and m.plan.attention == "auto" \
        and steady_s(m) is not None


def _fit_step(fc: FitContext):
    own = [m for m in fc.ms if _baseline_step(m)]
    siblings = [m for m in fc.step_siblings(len({size_key(m) for m in own})) if _baseline_step(m)]
    base_rows = [Row(fc.x(m), steady_s(m), size_key(m)) for m in own + siblings]
    if others := sorted({m.workload.model for m in siblings}):
        fc.notes.append(f"step time fitted on this model's baseline steps and those of {', '.join(others)} "
                        f"on the same GPU (one physics-shaped step model for every DiT)")
    # modulation_s is counted traffic (geometry.PER_TOKEN_MODULATION_BYTES), held at its copy-
    # bandwidth time by a strong prior: the same step model then carries between DiTs with and
    # without per-token modulation (zero for those without: its coefficient stays 1).
    step = fit_linear(base_rows, STEP_FEATURES, intercept=False, lower=[1.0, 1.0, 0.0, 0.0, 1.0], relative=True,
                      held_out=fc.held, prior={"matmul_s": PRIOR_STRENGTH, "attention_s": PRIOR_STRENGTH,
                                               "modulation_s": FIXED_PRIOR_STRENGTH},
                      target="steady denoising step (CFG forwards included), s", unit="s")
    if step is None:
        raise WanfitError(f"no bf16 measurement of {fc.model_key} ran two or more steps: the step-time fit needs "
                          f"baseline points with >= 2 steps (re-run `wanfit calibrate --gpu {fc.gpu} --model "
                          f"{fc.model_key}`)")
    fc.put(STEP, step)
    return step


def _fit_warmup(fc: FitContext) -> None:
    warm_fresh, warm_reused = [], []
    for m in fc.ms:
        t, steps = steady_s(m), m.steps()
        if t is None or not steps or m.plan.dit_dtype != "bf16" or m.plan.offload != "none":
            continue
        # The official code moves its DiT to the GPU inside the first step: its runner times that move apart.
        excess = steps[0].time_s - t - m.extra.get("step_1_loading_s", 0.0)
        (warm_fresh if first_in_process(m) else warm_reused).append(Row({}, excess, size_key(m)))
    fc.put(WARMUP, fit_constant(warm_fresh or warm_reused, target="first step above steady state in a fresh "
                                "process (warm-up), s", unit="s", held_out=fc.held))
    fc.put(WARMUP_REUSED, fit_constant(warm_reused, target="first step above steady state when the pipeline was "
                                       "reused, s", unit="s", held_out=fc.held))


def _fit_cast_extras(fc: FitContext, weights: WeightsTable, step) -> None:
    rows: dict[str, list[Row]] = defaultdict(list)
    for m in fc.ms:
        t, p = steady_s(m), m.plan
        if t is None or p.dit_dtype == "bf16" or p.offload not in ("none", "model"):
            continue
        base = step.predict(fc.x(m))
        cast = cast_s(weights["transformer"][p.dit_dtype].gib, fc.x(m)["forwards_per_step"], fc.fc.device_copy_gbps)
        rows[p.dit_dtype].append(Row({"cast_s": cast, "base_step_s": base}, t - base, size_key(m), ref=t))
    # fp8 storage: every weight is upcast once per forward (memory-bound, fixed per forward).
    # fp32 under autocast: the same per-forward casts, plus autocast's per-op overhead, which
    # grows with the step.
    for dtype, features in (("fp8", ["cast_s"]), ("fp32", ["cast_s", "base_step_s"])):
        fc.put(extra_time(dtype), fit_linear(rows.get(dtype, []), features, intercept=False, held_out=fc.held,
               unit="s", target=f"step time of a {dtype} DiT above bf16 (held-out % of the step), s"))


def _fit_offload_extras(fc: FitContext, weights: WeightsTable, step) -> None:
    group_rows, seq_rows = [], []
    for m in fc.ms:
        t, p = steady_s(m), m.plan
        if t is None or p.offload not in ("group", "sequential"):
            continue
        fwd = fc.x(m)["forwards_per_step"]
        dit_gib = weights["transformer"][p.dit_dtype].gib
        base = step.predict(fc.x(m))
        extra = t - base
        if p.dit_dtype != "bf16" and (cast_model := fc.models.get(extra_time(p.dit_dtype))) is not None:
            extra -= cast_model.predict({"cast_s": cast_s(dit_gib, fwd, fc.fc.device_copy_gbps), "base_step_s": base})
        if p.offload == "group":
            group_rows.append(Row({"h2d_s": transfer_s(dit_gib * fwd, fc.fc.h2d_pinned_gbps)}, extra, size_key(m),
                                  ref=t))
        else:
            seq_rows.append(Row({**fc.x(m), "stream_s": fc.stream_s(m, dit_gib)}, extra, size_key(m), ref=t))
    # Pooled with the other DiTs' sequential points on this GPU: DiT bytes and block counts differ
    # between them, which is what tells the stream from the per-block cost.
    seq_rows += _sibling_sequential_rows(fc, step, own=bool(seq_rows))
    fc.put(extra_time("group"), fit_linear(group_rows, ["h2d_s"], intercept=False, held_out=fc.held, unit="s",
           target="step time of group offloading above no offload (the part of the block transfers the stream "
                  "does not hide), s"))
    # Sequential offload: every leaf's weights are copied from pageable memory before it runs, and
    # such a copy first waits for the GPU to drain, so nothing overlaps: the step pays the stream
    # (at the machine's own pageable rate). accelerate also empties the CUDA cache at every weight
    # load, so the activations come from freshly mapped memory leaf after leaf (a cost in their
    # bytes: tokens x width x layers), TI2V-5B's large per-token modulation the same way, and each
    # block's hooks cost a fixed time. Fitted on every DiT's sequential points on this GPU
    # (1.3B, 5B and 14B differ in bytes, width and blocks, which separates the terms).
    fc.put(extra_time("sequential"), fit_linear(seq_rows, ["stream_s", "elementwise_s", "modulation_s",
                                                           "layer_forwards"], intercept=False, held_out=fc.held,
           unit="s", target="step time of sequential offload above no offload (weights streamed per forward at the "
                            "session's pageable h2d rate; activations and per-token modulation from freshly mapped "
                            "memory after each emptied cache; per-block hooks), s"))


def _sibling_sequential_rows(fc: FitContext, step, own: bool) -> list[Row]:
    """The other DiTs' bf16 sequential points on this GPU, each at its own DiT's bytes, block
    count and per-token modulation, which is what the terms scale with (a DiT twice as large
    streams twice the bytes). `own`: this DiT has sequential points of its own (else noted)."""
    rows, used = [], set()
    for m in fc.siblings:
        t = steady_s(m)
        if t is None or m.plan.offload != "sequential" or m.plan.dit_dtype != "bf16":
            continue
        dit_gib = analytic_weights_gib(get_model(m.workload.model), "transformer", "bf16")
        rows.append(Row({**fc.x(m), "stream_s": fc.stream_s(m, dit_gib)}, t - step.predict(fc.x(m)), size_key(m),
                        ref=t))
        used.add(m.workload.model)
    if rows and not own:
        fc.notes.append(f"sequential offload not measured here: its step and reservation fitted on the "
                        f"sequential points of {', '.join(sorted(used))} on the same GPU (the step per DiT "
                        f"bytes and per-token modulation)")
    return rows


# ---- predict -------------------------------------------------------------------------------------


def persistent_gib(pc: PredictContext) -> float:
    return pc.value(PERSISTENT, 0.0)


def base_step_s(pc: PredictContext) -> float:
    """The steady bf16 resident step on the target: each fitted term by its kernel class there (kernel_classes)."""
    m = pc.model(STEP)
    assert m is not None  # fit_calibration refuses a calibration without baseline steps
    pc.check_range(m)
    return step_on_target(pc, m.terms(pc.x), m.intercept)


def step_s(pc: PredictContext, base: float) -> float:
    """The plan's steady step: the bf16 step plus its attention kernel's, its weight casts' and its offload's."""
    extra = cast_extra_s(pc, base) + _attention_extra_s(pc)
    if pc.plan.offload == "group":
        extra += _group_extra_s(pc, base + extra)
    elif pc.plan.offload == "sequential":
        extra += _sequential_extra_s(pc)
    return base + extra


def _attention_extra_s(pc: PredictContext) -> float:
    """A pinned attention kernel against the runtime's own: calibrated, else the profile's measured kernel rates."""
    kernel = pc.plan.attention
    if kernel == "auto":
        return 0.0
    m = pc.model(extra_time(f"attention:{kernel}"))
    attention = pc.model(STEP).terms(pc.x)["attention_s"]
    if transferred(pc):
        extra = m.predict({"attention_s": pc.x["attention_s"]}) if m is not None else None
        return pinned_attention_extra(pc, attention, extra) * step_correction(pc)
    if m is not None:
        return m.predict({"attention_s": pc.x["attention_s"]})
    ratio, note = kernel_time_ratio(pc.gpu_profile, pc.plan.runtime, kernel)
    pc.note(note if ratio is not None else f"attention kernel {kernel} not calibrated in {pc.cal.label}; {note}")
    return attention * (ratio - 1.0) if ratio is not None else 0.0


def cast_extra_s(pc: PredictContext, base: float) -> float:
    dtype = pc.plan.dit_dtype
    if dtype == "bf16":
        return 0.0
    cast = cast_s(pc.weights.dit, pc.x["forwards_per_step"], pc.cal.feature_ceilings.device_copy_gbps)
    m = pc.model(extra_time(dtype))
    if m is None:
        pc.note(f"DiT {dtype} step cost not calibrated: one cast of the weights per forward")
        return cast * pc.scale.bandwidth
    terms = m.terms({"cast_s": cast, "base_step_s": base})
    return terms.get("cast_s", 0.0) * pc.scale.bandwidth + terms.get("base_step_s", 0.0)


def _group_extra_s(pc: PredictContext, compute: float) -> float:
    """Blocks stream on a CUDA stream while the previous block computes: the step pays the part of the
    transfer the stream does not hide, and is never faster than the transfer."""
    forwards = pc.x["forwards_per_step"]
    h2d = transfer_s(pc.weights.dit * forwards, pc.cal.feature_ceilings.h2d_pinned_gbps) * pc.scale.host_pinned
    m = pc.model(extra_time("group"))
    if m is None:
        pc.note("group offload step cost not calibrated: the step takes max(compute, block transfers)")
        unhidden = 0.0
    else:
        unhidden = m.predict({"h2d_s": h2d})
    return max(unhidden, h2d - compute)


def _sequential_extra_s(pc: PredictContext) -> float:
    """Every leaf's weights cross the link on every forward (pageable, not overlapped)."""
    stream = transfer_s(pc.weights.dit * pc.x["forwards_per_step"], pc.cal.feature_ceilings.h2d_pageable_gbps)
    m = pc.model(extra_time("sequential"))
    if m is None:
        pc.note("sequential offload not calibrated: every forward streams the DiT at the pageable h2d rate")
        extra = stream * pc.scale.host_pageable
    else:
        # The stream scales with the target host's pageable rate; the other terms (memory mapped
        # again after each emptied cache, per-block hooks) are driver and host work, kept as measured.
        terms = m.terms({**pc.x, "stream_s": stream})
        extra = sum(term * (pc.scale.host_pageable if name == "stream_s" else pc.scale.overhead)
                    for name, term in terms.items())
    # Lent H100s measured 6.4 to 9.2 GB/s: the host, not the GPU, sets most of this step.
    rate = pc.cal.feature_ceilings.h2d_pageable_gbps / pc.scale.host_pageable
    pc.note(f"sequential offload: every weight crosses the host link on every forward, timed at "
            f"{rate:.1f} GB/s from pageable memory; the host's own rate moves it most "
            f"(--host-pageable-gbps)")
    return extra


def warmup_s(pc: PredictContext) -> float:
    """The first step above steady state: a fresh process's warm-up, or a reused process's."""
    if pc.first_in_process:
        return pc.value(WARMUP, 0.0, "first-step warm-up not calibrated")
    return pc.value(WARMUP_REUSED, 0.0)


def group_in_flight_gib(pc: PredictContext) -> float:
    """DiT blocks allocated (on the transfer stream) during a group-offloaded step; uncalibrated:
    GROUPS_IN_FLIGHT blocks."""
    m = pc.model(extra_memory("group"))
    if m is None:
        return GROUPS_IN_FLIGHT * pc.weights.block
    return max(0.0, m.predict({"block_gib": pc.weights.block}))


def transient_gib(pc: PredictContext) -> tuple[float, float]:
    """(the plan's step transient, the bf16 resident DiT's activations at this size), GiB."""
    plan = pc.plan
    m = pc.model(ACTIVATION)
    assert m is not None
    pc.check_range(m)
    act = m.predict(pc.x)
    bf16_activation = max(0.0, act)
    if plan.dit_dtype != "bf16":
        act += pc.value(extra_memory(plan.dit_dtype), 0.0,
                        f"DiT {plan.dit_dtype} activation memory not calibrated: as bf16")
    if plan.offload == "group":
        if pc.model(extra_memory("group")) is None:
            pc.note(f"group offload blocks in flight not calibrated: {GROUPS_IN_FLIGHT} blocks assumed")
        act += group_in_flight_gib(pc)
    elif plan.offload == "sequential":
        act += pc.value(extra_memory("sequential"), pc.weights.block,
                        "sequential offload memory not calibrated: one DiT block in flight assumed")
    return max(0.0, act), bf16_activation
