"""Advice: enumerate the plan space, predict every plan, mark fits, rank, recommend with a reason.

The plan space is offload (none | model | group | sequential) x text encoder (gpu | cpu | int8)
x DiT dtype (bf16 | fp8 | fp32) x VAE tiling (off | on); a knob the user pinned is fixed. A plan
fits when its predicted need plus the safety margin is within the GPU's usable memory and, when
a host RAM limit is given, its offloaded weights fit in host RAM. Fitting plans rank by
predicted duration; the fastest is recommended, with one line naming the stage that binds.
Pure Python (the `plan` path).
"""

from __future__ import annotations

import itertools
import math

from wanfit.model.calibration import Calibration, source_note
from wanfit.model.geometry import geometry
from wanfit.model.predict import Prediction, predict
from wanfit.planner.command import plan_command
from wanfit.planner.layouts import layouts
from wanfit.vocabulary.catalog import ModelSpec
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.plan_report import SAFETY_MARGIN_GIB, Candidate, GpuResult
from wanfit.vocabulary.profiles import GpuProfile
from wanfit.vocabulary.stages import stage_title
from wanfit.vocabulary.units import MINUTES_FROM_S
from wanfit.vocabulary.workload import (
    EXTRA_PINS,
    GPU_COUNTS,
    LAYOUT_KNOBS,
    Plan,
    PlanPins,
    Workload,
    check_layout_for,
)

OFFLOAD_WORDS = {"none": "no offload", "model": "model offload", "group": "group offload",
                 "sequential": "sequential offload"}


def plan_space(pins: PlanPins | None = None, spec: ModelSpec | None = None, tokens: int | None = None) -> list[Plan]:
    """Every plan the knobs allow on the pinned GPU count (default 1) for the DiT of `spec` (None: any head
    count) and its sequence of `tokens` (None: any), the pinned knobs fixed. Combinations the runtime does not
    have on several GPUs are left out; when the pins leave none, the first one's one-line error says which
    constraint they break."""
    pins = pins or PlanPins()
    given, choices = pins.given(), pins.choices()
    extra = {k: given[k] for k in EXTRA_PINS if k in given and k not in LAYOUT_KNOBS}
    names = list(choices)
    heads = spec.transformer["num_attention_heads"] if spec else math.lcm(*GPU_COUNTS)
    plans, refused = [], None
    for layout in layouts(given.get("runtime", "diffusers"), given.get("gpus", 1), heads, given):
        for combo in itertools.product(*choices.values()):
            try:
                plan = Plan(**dict(zip(names, combo, strict=True)), **extra, **layout)
                if spec is not None:
                    check_layout_for(spec, plan, tokens)
                plans.append(plan)
            except WanfitError as error:
                refused = refused or error
    if not plans:
        raise refused
    return plans


def baseline_plan(pins: PlanPins | None = None, spec: ModelSpec | None = None) -> Plan:
    """The plan users start from (no offload, text encoder on the GPU, bf16, no tiling; on several GPUs the
    runtime's usual layout) with the pins applied."""
    return (pins or PlanPins()).apply(heads=spec.transformer["num_attention_heads"] if spec else None)


def describe(plan: Plan) -> str:
    """A plan in words: 'no offload', 'model offload + fp8 DiT', ...; an official-code plan in its flags."""
    if plan.runtime == "wan":
        return " ".join(plan.official_flags())
    words = [OFFLOAD_WORDS[plan.offload]]
    if plan.text_encoder == "cpu":
        words.append("text encoder on the CPU")
    elif plan.text_encoder == "int8":
        words.append("int8 text encoder")
    if plan.dit_dtype != "bf16":
        words.append(f"{plan.dit_dtype} DiT")
    if plan.vae_tiling:
        words.append("VAE tiling")
    words += [f"{name} {getattr(plan, name.lower())}" for name in ("Ulysses", "ring") if getattr(plan, name.lower()) > 1]
    words += ["DiT FSDP"] if plan.dit_fsdp else []
    return " + ".join(words)


def _mechanism(base: Plan, rec: Plan, binding: str) -> str:
    """Why the recommended plan needs less than the baseline, in a few words per changed knob."""
    parts = []
    if rec.offload != base.offload:
        parts.append({
            "model": "model offload frees the DiT before decode" if binding == "vae_decode"
            else "model offload keeps one model on the GPU at a time",
            "group": "group offload streams the DiT blocks from host RAM",
            "sequential": "sequential offload streams every layer from host RAM",
            "none": "no offload",
        }[rec.offload])
    if rec.text_encoder != base.text_encoder:
        parts.append({"cpu": "the text encoder runs on the CPU", "int8": "an int8 text encoder halves its weights",
                      "gpu": "the text encoder on the GPU"}[rec.text_encoder])
    if rec.dit_dtype != base.dit_dtype:
        parts.append({"fp8": "fp8 DiT weights halve them", "bf16": "bf16 DiT weights",
                      "fp32": "fp32 DiT weights"}[rec.dit_dtype])
    if rec.vae_tiling != base.vae_tiling:
        parts.append("VAE tiling bounds decode memory by the tile" if rec.vae_tiling else "untiled VAE decode")
    return " + ".join(parts) or describe(rec)


# A time difference in the reason line: tenths of a second below WHOLE_SECONDS_FROM_S, whole seconds
# below MINUTES_FROM_S, minutes (one decimal) above; a difference that rounds to 0.0 s is shown as +0.0 s.
WHOLE_SECONDS_FROM_S = 10
SHOWN_AS_ZERO_BELOW_S = 0.05


def _seconds(delta: float) -> str:
    d = abs(delta)
    sign = "-" if delta < 0 and d >= SHOWN_AS_ZERO_BELOW_S else "+"
    if d < WHOLE_SECONDS_FROM_S:
        return f"{sign}{d:.1f} s"
    if d < MINUTES_FROM_S:
        return f"{sign}{d:.0f} s"
    return f"{sign}{d / 60:.1f} min"


def reason_line(gpu: str, usable_gib: float, margin_gib: float, base: Prediction, base_cand: Candidate,
                rec: Candidate | None, candidates: list[Candidate], host_ram_gib: float | None) -> str:
    """One line: why this plan (or why nothing fits), naming the binding stage."""
    budget = usable_gib - margin_gib
    where = f"{budget:.1f} GiB usable on {gpu} after the {margin_gib:g} GiB margin"
    base_words = describe(base.plan)
    if rec is None:
        fit_memory = [c for c in candidates if c.headroom_gib >= 0]
        if fit_memory and host_ram_gib is not None:  # the GPU would hold them: host RAM is what stops them
            least = min(fit_memory, key=lambda c: c.host_ram_gib)
            return (f"nothing fits the {host_ram_gib:g} GiB of host RAM: {len(fit_memory)} plan(s) fit {gpu}'s memory "
                    f"but the least host RAM one needs {least.host_ram_gib:.1f} GiB ({describe(least.as_plan())})")
        smallest = min(candidates, key=lambda c: c.need_gib)
        line = (f"nothing fits: the smallest need is {smallest.need_gib:.1f} GiB ({describe(smallest.as_plan())}) at "
                f"{stage_title(smallest.binding_stage)} > {where}")
        short_of_host = sum(1 for c in candidates if not c.host_ram_fits)
        if short_of_host and host_ram_gib is not None:
            line += f"; {short_of_host} plan(s) need more than the {host_ram_gib:g} GiB of host RAM"
        return line
    rec_plan = rec.as_plan()
    if rec.plan == base_cand.plan:
        return (f"{base_words} fits: needs {rec.need_gib:.1f} GiB at {stage_title(rec.binding_stage)} of {where}; "
                f"the fastest plan")
    if base_cand.fits:
        return (f"fastest plan that fits: {_mechanism(base.plan, rec_plan, rec.binding_stage)}, "
                f"{_seconds(rec.duration_s - base_cand.duration_s)} vs {base_words}; needs {rec.need_gib:.1f} GiB")
    why = "" if base_cand.host_ram_fits else f" (and {base_cand.host_ram_gib:.1f} GiB of host RAM)"
    if base_cand.need_gib + margin_gib <= usable_gib:
        cause = f"{base_words} needs {base_cand.host_ram_gib:.1f} GiB of host RAM > {host_ram_gib:g} GiB"
    else:
        cause = (f"{base_words} needs {base_cand.need_gib:.1f} GiB at "
                 f"{stage_title(base_cand.binding_stage)} > {where}{why}")
    return (f"{cause}; {_mechanism(base.plan, rec_plan, base_cand.binding_stage)}: {rec.need_gib:.1f} GiB, "
            f"{_seconds(rec.duration_s - base_cand.duration_s)}")


def advise(workload: Workload, calibration: Calibration, target: GpuProfile, pins: PlanPins | None = None,
           safety_margin_gib: float = SAFETY_MARGIN_GIB, host_ram_gib: float | None = None,
           host_pageable_gbps: float | None = None, host_d2h_gbps: float | None = None,
           reused_pipeline: bool = False) -> GpuResult:
    """Predict every plan for `target`, rank and recommend."""
    usable = float(target.memory_gib)
    family_note = source_note(workload.model, calibration)
    options = {"host_d2h_gbps": host_d2h_gbps, "reused_pipeline": reused_pipeline}
    predictions = [predict(workload, plan, calibration, target, host_pageable_gbps, **options)
                   for plan in plan_space(pins, workload.spec, geometry(workload).tokens)]
    candidates = []
    for p in predictions:
        cand = p.candidate(usable, safety_margin_gib, host_ram_gib)
        if family_note:
            cand = cand.model_copy(update={"notes": [family_note, *cand.notes]})
        candidates.append(cand)
    base_plan = baseline_plan(pins, workload.spec)
    base_pred = next((p for p in predictions if p.plan == base_plan), None)
    if base_pred is None:
        base_pred = predict(workload, base_plan, calibration, target, host_pageable_gbps, **options)
    base_cand = base_pred.candidate(usable, safety_margin_gib, host_ram_gib)
    ranked = rank(candidates, base_plan)
    if ranked and ranked[0].fits:
        ranked[0] = with_command(ranked[0], workload, predictions)
    recommended = ranked[0] if ranked and ranked[0].fits else None
    reason = reason_line(target.key, usable, safety_margin_gib, base_pred, base_cand, recommended, ranked,
                         host_ram_gib)
    return GpuResult(gpu=target.key, memory_gib=usable, calibration=calibration.label, recommended=recommended,
                     reason=reason, candidates=ranked)


def with_command(cand: Candidate, workload: Workload, predictions: list[Prediction]) -> Candidate:
    """`cand` with the command that runs its plan: the predicted Plan itself (the candidate's knobs leave out
    the allocator setting)."""
    plan = next((p.plan for p in predictions if p.plan.knobs() == cand.plan), cand.as_plan())
    return cand.model_copy(update={"command": plan_command(workload, plan)})


def rank(candidates: list[Candidate], base_plan: Plan) -> list[Candidate]:
    """Fitting plans by duration (an exact tie goes to the plan with fewer knobs changed from the
    baseline), then the rest by how much they need."""
    base_knobs = base_plan.knobs()

    def key(c: Candidate) -> tuple:
        changes = sum(1 for k, v in c.plan.items() if base_knobs[k] != v)
        return (not c.fits, c.duration_s if c.fits else c.need_gib, changes)

    return sorted(candidates, key=key)
