"""Weights: what each component weighs in each variant, where a plan places it in each stage (mirroring how
the runners apply a Plan: wanfit/measure/placement.py, measure/official, measure/distributed), what crosses the
host link, and (for the fit) the weights measured resident. Pure Python (the `plan` path), apart from
`measured_weights`, which the fit calls. GiB (2**30 bytes) throughout.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wanfit.model.calibration import ComponentWeights
from wanfit.model.fitting import median_or
from wanfit.model.geometry import BYTES
from wanfit.vocabulary.catalog import ModelSpec, get_model
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan

if TYPE_CHECKING:
    from wanfit.model.context import FitContext
    from wanfit.vocabulary.measurement import Measurement

# component -> variant (dtype or quantisation) -> GiB on the GPU, as a calibration stores them
WeightsTable = dict[str, dict[str, ComponentWeights]]
VARIANTS = (("transformer", "bf16"), ("transformer", "fp8"), ("transformer", "fp32"), ("vae", "fp32"),
            ("text_encoder", "bf16"), ("text_encoder", "int8"))


def text_encoder_variant(plan: Plan) -> str | None:
    """Weight variant of the text encoder on the GPU (None: it computes on the CPU)."""
    return {"gpu": "bf16", "int8": "int8", "cpu": None}[plan.text_encoder]


def analytic_weights_gib(spec: ModelSpec, component: str, variant: str) -> float:
    """Weights from parameter counts and dtype sizes: the fallback when a variant was not measured.

    int8 text encoder: weight-only int8 quantises the Linear layers; the token embedding
    (vocab x d_model) stays bf16. fp8 DiT storage: every parameter in one byte (layerwise casting
    keeps a few small norm / embedding layers in bf16, which this ignores)."""
    p = spec.params
    if component == "transformer":
        return p.dit_per_expert * BYTES[variant] / GIB
    if component == "vae":
        return p.vae * BYTES[variant] / GIB
    if component == "image_encoder":
        return p.image_encoder * BYTES[variant] / GIB
    if component == "text_encoder":
        if variant == "int8":
            embedding = spec.text_encoder["vocab_size"] * spec.text_encoder["d_model"]
            return ((p.text_encoder - embedding) * BYTES["int8"] + embedding * BYTES["bf16"]) / GIB
        return p.text_encoder * BYTES[variant] / GIB
    raise ValueError(f"unknown component {component}")


@dataclass(frozen=True)
class Weights:
    """GiB of each component's weights in the variant a plan uses (per DiT expert)."""

    dit: float  # one expert, in the plan's storage dtype
    text_encoder: float  # on the GPU (0 when it computes on the CPU)
    text_encoder_host: float  # bf16 copy in host RAM when it computes on the CPU
    vae: float
    image_encoder: float
    experts: int
    dit_layers: int

    @property
    def block(self) -> float:  # one transformer block of one expert (group offloading moves these)
        return self.dit / self.dit_layers


def resident_gib(stage: str, plan: Plan, w: Weights) -> float:
    """Weights on the GPU during `stage` (GiB), as the runner places them for `plan` (the official code:
    _official_resident_gib).

    none: everything resident all run. model: one component at a time in the pipeline's chain
    (text_encoder -> transformer -> transformer_2 -> vae). group: DiT blocks stream per forward
    (counted in the stage's transient), VAE / image encoder resident. sequential: every leaf
    streams. A weight-only int8 text encoder is placed on the GPU outside the offload chain, so it
    stays resident under every offload mode."""
    if plan.gpus > 1:
        return _rank_resident_gib(stage, plan, w)
    if plan.runtime == "wan":
        return _official_resident_gib(stage, plan, w)
    te_int8 = w.text_encoder if plan.text_encoder == "int8" else 0.0
    te = w.text_encoder if plan.text_encoder != "cpu" else 0.0
    if plan.offload == "none":
        return w.dit * w.experts + te + w.vae + w.image_encoder
    if plan.offload == "model":
        te_chain = w.text_encoder if plan.text_encoder == "gpu" else 0.0
        in_chain = {"init": 0.0, "text_encode": te_chain, "prepare": w.image_encoder or te_chain,
                    "denoise": w.dit, "expert_switch": w.dit, "vae_decode": w.vae}[stage]
        return in_chain + te_int8
    if plan.offload == "group":
        return w.vae + w.image_encoder + te_int8
    return te_int8  # sequential


def _official_resident_gib(stage: str, plan: Plan, w: Weights) -> float:
    """The official code on one GPU (WanT2V / WanI2V / WanTI2V with their default init_on_cpu): the VAE is
    built on the GPU and stays there; T5 and the DiT expert(s) are built in host memory. T5 comes up for the
    encode (not with `--t5_cpu`) and goes back with `--offload_model`; the DiT comes up before the first
    step, a two-expert model swaps its experts (one on the GPU at a time, whatever `--offload_model` says);
    with `--offload_model` the DiT goes back before the decode (wan/text2video.py, textimage2video.py)."""
    te_up = w.text_encoder if plan.text_encoder == "gpu" else 0.0
    te_kept = te_up if plan.offload == "none" else 0.0
    dit_kept = w.dit if plan.offload == "none" else 0.0
    return {"init": w.vae, "text_encode": w.vae + te_up, "prepare": w.vae + te_kept,
            "denoise": w.vae + te_kept + w.dit, "expert_switch": w.vae + te_kept + w.dit,
            "vae_decode": w.vae + te_kept + dit_kept}[stage]


def _rank_resident_gib(stage: str, plan: Plan, w: Weights) -> float:
    """One rank of a several-GPU plan. The official code (init_on_cpu off when N > 1) puts every DiT expert on the
    GPU at build, 1/N under --dit_fsdp; T5 is sharded there at build by --t5_fsdp, else comes up for the encode.
    --offload_model (allowed under torchrun) moves as on one GPU. diffusers: each rank holds the whole pipeline,
    its transformer's blocks 1/N under FSDP. Blocks in flight: the step's transient (wanfit.model.sharding)."""
    dit = w.dit / (plan.gpus if plan.dit_fsdp else 1)
    te = w.text_encoder / (plan.gpus if plan.t5_fsdp else 1)
    if plan.runtime != "wan":
        return dit * w.experts + te + w.vae + w.image_encoder
    te_built = te if plan.t5_fsdp else 0.0
    if plan.offload != "model":
        return w.vae + dit * w.experts + (te_built if stage == "init" else te)
    return w.vae + {"init": dit * w.experts + te_built, "text_encode": dit * w.experts + te,
                    "prepare": dit * w.experts, "denoise": dit, "expert_switch": dit, "vae_decode": 0.0}[stage]


def _rank_host_build_gib(plan: Plan, w: Weights) -> float:
    """One rank's host memory at its build's peak. The official code (N > 1) builds T5 first (sharded onto the GPU
    at once by --t5_fsdp, else kept in host memory), then each expert in turn, placed or sharded onto the GPU
    before the next (text2video.py): T5 beside one expert. diffusers loads the whole pipeline, then moves it."""
    te = w.text_encoder or w.text_encoder_host
    if plan.runtime == "wan":
        return max(te, w.dit) if plan.t5_fsdp else te + w.dit
    return w.dit * w.experts + te + w.vae + w.image_encoder


def host_ram_gib(plan: Plan, w: Weights) -> float:
    """System memory the plan needs for weights kept off the GPU (GiB). The official code on one GPU builds T5 and
    every DiT expert in host memory before anything moves; several ranks each build their own at once."""
    dits = w.dit * w.experts
    if plan.gpus > 1:
        return plan.gpus * _rank_host_build_gib(plan, w)
    if plan.runtime == "wan":
        return dits + (w.text_encoder or w.text_encoder_host)
    te_host = w.text_encoder_host if plan.text_encoder == "cpu" else 0.0
    te_offloaded = w.text_encoder if plan.text_encoder == "gpu" else 0.0
    if plan.offload == "none":
        return te_host
    if plan.offload == "group":
        return dits + te_host + te_offloaded
    # model / sequential: every component handed to the offload chain lives in host RAM.
    return dits + w.vae + w.image_encoder + te_host + te_offloaded


# DiT blocks in flight under group offloading when not calibrated: the current one and the one
# prefetched on the transfer stream.
GROUPS_IN_FLIGHT = 2


@dataclass(frozen=True)
class Moves:
    """Bytes (GiB) crossing the host link in one stage: host->device and device->host (pageable)."""

    h2d: float = 0.0
    d2h: float = 0.0


def weight_moves(stage: str, plan: Plan, w: Weights) -> Moves:
    """Whole-model moves between host and GPU (pageable memory): diffusers' model CPU offload (accelerate
    hooks), or the official code's fixed moves (_official_moves).

    text_encode: the text encoder is uploaded (only when it is in the chain, i.e. `gpu`).
    denoise (step 1): the previous model goes down, the DiT comes up.
    expert_switch: expert 1 down, expert 2 up.
    vae_decode: the last DiT goes down, the VAE up, and at the end of the call the pipeline moves
    the VAE back (maybe_free_model_hooks)."""
    if plan.runtime == "wan":
        return _official_moves(stage, plan, w)
    if plan.offload != "model":
        return Moves()
    te = w.text_encoder if plan.text_encoder == "gpu" else 0.0
    if stage == "text_encode":
        return Moves(h2d=te)
    if stage == "prepare":  # I2V with a CLIP image encoder: it replaces the text encoder
        return Moves(h2d=w.image_encoder, d2h=te) if w.image_encoder else Moves()
    if stage == "denoise":
        return Moves(h2d=w.dit, d2h=w.image_encoder or te)
    if stage == "expert_switch":
        return Moves(h2d=w.dit, d2h=w.dit) if w.experts == 2 else Moves()
    if stage == "vae_decode":
        return Moves(h2d=w.vae, d2h=w.dit + w.vae)
    return Moves()


def _official_moves(stage: str, plan: Plan, w: Weights) -> Moves:
    """The official code's moves (see _official_resident_gib): T5 up for the encode (and down with
    `--offload_model`), the DiT up before the first step (it was built in host memory), a two-expert model's
    swap, and with `--offload_model` the DiT down before the decode."""
    te_up = w.text_encoder if plan.text_encoder == "gpu" else 0.0
    offload = plan.offload == "model"
    if plan.gpus > 1:
        return _rank_moves(stage, plan, w, te_up)
    if stage == "text_encode":
        return Moves(h2d=te_up, d2h=te_up if offload else 0.0)
    if stage == "denoise":
        return Moves(h2d=w.dit)
    if stage == "expert_switch":
        return Moves(h2d=w.dit, d2h=w.dit) if w.experts == 2 else Moves()
    if stage == "vae_decode":
        return Moves(d2h=w.dit if offload else 0.0)
    return Moves()


def _rank_moves(stage: str, plan: Plan, w: Weights, te_up: float) -> Moves:
    """One video's moves on one rank of an official several-GPU plan (the build's: rank_build_upload_gib): an
    unsharded T5 up for the encode; with --offload_model, the moves of one GPU, each DiT move its FSDP shard."""
    dit = w.dit / (plan.gpus if plan.dit_fsdp else 1)
    te = te_up / (plan.gpus if plan.t5_fsdp else 1)
    if plan.offload != "model":
        return {"text_encode": Moves(h2d=0.0 if plan.t5_fsdp else te)}.get(stage, Moves())
    other_expert = dit if w.experts == 2 else 0.0
    return {"text_encode": Moves(h2d=te, d2h=te), "denoise": Moves(h2d=dit, d2h=other_expert),
            "expert_switch": Moves(h2d=dit, d2h=dit) if w.experts == 2 else Moves(),
            "vae_decode": Moves(d2h=dit)}.get(stage, Moves())


def rank_build_upload_gib(plan: Plan, w: Weights) -> float:
    """What one rank of an official several-GPU plan uploads at build: every expert whole (FSDP1 with device_id
    moves each unit onto the GPU, then shards it: torch's _move_module_to_device), and T5 under --t5_fsdp."""
    if plan.runtime != "wan" or plan.gpus == 1:
        return 0.0
    te = (w.text_encoder or w.text_encoder_host) if plan.t5_fsdp else 0.0
    return w.dit * w.experts + te


# ---- the weights of a plan, from a calibration's table --------------------------------------


def _param_ratio(spec: ModelSpec, cal_spec: ModelSpec, component: str) -> float:
    """Parameter ratio of a component between the predicted model and the calibrated one."""
    counts = {
        "transformer": (spec.params.dit_per_expert, cal_spec.params.dit_per_expert),
        "vae": (spec.params.vae, cal_spec.params.vae),
        "text_encoder": (spec.params.text_encoder, cal_spec.params.text_encoder),
        "image_encoder": (spec.params.image_encoder, cal_spec.params.image_encoder),
    }
    mine, theirs = counts[component]
    return mine / theirs if theirs else 1.0


def component_weight(table: WeightsTable, calibrated_model: str, spec: ModelSpec, component: str,
                     variant: str) -> tuple[float, bool]:
    """(GiB, measured?) of one component variant: measured in the table of `calibrated_model` (scaled by
    parameter count when `spec` is another model with the same DiT), else from the parameter count."""
    cw = table.get(component, {}).get(variant)
    if cw is None or cw.source != "measured":
        return analytic_weights_gib(spec, component, variant), False
    return cw.gib * _param_ratio(spec, get_model(calibrated_model), component), True


def plan_weights(table: WeightsTable, calibrated_model: str, spec: ModelSpec, plan: Plan,
                 label: str) -> tuple[Weights, list[str]]:
    """The weights a plan puts on the GPU (and in host RAM), with notes on analytic fallbacks; `label`
    names the calibration in those notes."""
    notes = []

    def weight(component: str, variant: str) -> tuple[float, bool]:
        return component_weight(table, calibrated_model, spec, component, variant)

    te_variant = text_encoder_variant(plan)
    dit, measured = weight("transformer", plan.dit_dtype)
    if not measured:
        notes.append(f"DiT {plan.dit_dtype} weights not measured in {label}: from the parameter count")
    te = te_host = 0.0
    if te_variant is None:
        te_host = weight("text_encoder", "bf16")[0]
    else:
        te, measured = weight("text_encoder", te_variant)
        if not measured:
            notes.append(f"text encoder {te_variant} weights not measured in {label}: from the parameter count")
    return Weights(
        dit=dit, text_encoder=te, text_encoder_host=te_host, vae=weight("vae", "fp32")[0],
        image_encoder=weight("image_encoder", "bf16")[0] if spec.image_encoder else 0.0,
        experts=spec.experts, dit_layers=spec.transformer["num_layers"],
    ), notes


def built_gib(w: Weights) -> float:
    """Every weight a pipeline builds for a plan (each expert, the encoder wherever it computes)."""
    return w.dit * w.experts + w.text_encoder + w.text_encoder_host + w.vae + w.image_encoder


# ---- the fit: weights measured resident -------------------------------------------------------


def _text_encoder_weight(m: Measurement) -> tuple[str, float] | None:
    """(variant, GiB) of the text encoder resident in a measurement, when it was resident. From the
    allocator, not from resident_weights_gib: a quantised tensor subclass reports its logical (bf16)
    element size there."""
    rw, p = m.resident_weights_gib, m.plan
    te_resident = p.text_encoder == "int8" or (p.text_encoder == "gpu" and p.offload == "none")
    te_stage = m.stage("text_encode")
    if not rw or not te_resident or te_stage is None or te_stage.torch_allocated_start_gib is None:
        return None
    others = sum(v for k, v in rw.items() if k != "text_encoder")
    return ("int8" if p.text_encoder == "int8" else "bf16"), te_stage.torch_allocated_start_gib - others


def _official_weights(m: Measurement) -> dict[str, float]:
    """Each component's weights in an official-code run, wherever they sat (its runner records them: the
    official code keeps T5 and the DiT in host memory until generate() moves them)."""
    prefix = "weights_gib."
    return {k.removeprefix(prefix): v for k, v in m.extra.items() if k.startswith(prefix)}


def _recorded_weights(m: Measurement) -> Weights | None:
    """An official-code run's weights as its runner recorded them (None for another runtime, or without them)."""
    weights = _official_weights(m) if m.plan.runtime == "wan" else {}
    if "transformer" not in weights:
        return None
    te = weights.get("text_encoder", 0.0)
    return Weights(dit=weights["transformer"], text_encoder=te if m.plan.text_encoder == "gpu" else 0.0,
                   text_encoder_host=te if m.plan.text_encoder == "cpu" else 0.0, vae=weights.get("vae", 0.0),
                   image_encoder=0.0, experts=m.workload.spec.experts,
                   dit_layers=m.workload.spec.transformer["num_layers"])


def moved_before_work(m: Measurement, stage: str) -> Moves:
    """The weights an official-code run moves inside `stage` before the stage's own work (T5 up before the
    encode, the DiT up before the first step, an expert swapped, the DiT down before the decode), which the
    stage's allocated start does not yet show. None counted for diffusers runs: their fits keep to plans whose
    stages move no weights."""
    w = _recorded_weights(m)
    if w is None:
        return Moves()
    moves = weight_moves(stage, m.plan, w)
    return Moves(h2d=moves.h2d) if stage == "text_encode" else moves  # T5 goes back down after the encode


def measured_resident_gib(m: Measurement, stage: str) -> float | None:
    """The weights on the GPU during `stage` of a measured run (None where the run does not tell): diffusers
    without offload, everything it placed; the official code, its placement of the weights it recorded."""
    if m.plan.runtime == "wan":
        w = _recorded_weights(m)
        return resident_gib(stage, m.plan, w) if w is not None else None
    if m.plan.offload != "none" or not m.resident_weights_gib:
        return None
    return sum(m.resident_weights_gib.values())


def _resident_observations(ms: list[Measurement]) -> dict[tuple[str, str], list[float]]:
    """GiB of each (component, variant) measured resident, from the plans that keep it resident (the official
    code's runner records every component wherever it sits)."""
    obs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in ms:
        if m.plan.runtime == "wan":
            weights = _official_weights(m)
            for comp, variant in (("transformer", m.plan.dit_dtype), ("vae", "fp32"), ("text_encoder", "bf16")):
                if comp in weights:
                    obs[(comp, variant)].append(weights[comp])
            continue
        rw, p = m.resident_weights_gib, m.plan
        if not rw:
            continue
        if p.offload == "none":
            if "transformer" in rw:
                obs[("transformer", p.dit_dtype)].append(rw["transformer"])
            if rw.get("image_encoder"):
                obs[("image_encoder", "bf16")].append(rw["image_encoder"])
        if p.offload in ("none", "group") and "vae" in rw:
            obs[("vae", "fp32")].append(rw["vae"])
        if (te := _text_encoder_weight(m)) is not None:
            obs[("text_encoder", te[0])].append(te[1])
    return obs


def measured_weights(fc: FitContext) -> WeightsTable:
    """The table a calibration stores: the median resident GiB of every variant measured here (a text
    encoder variant not measured here from the other models' points on the same GPU: the same UMT5-XXL),
    else the parameter count's."""
    obs = _resident_observations(fc.ms)
    for variant in ("bf16", "int8"):
        if ("text_encoder", variant) not in obs:
            borrowed = [te[1] for m in fc.te_siblings if (te := _text_encoder_weight(m)) and te[0] == variant]
            if borrowed:
                obs[("text_encoder", variant)] = borrowed
                fc.borrowed_te.add(f"{variant} weights")
    table: WeightsTable = defaultdict(dict)
    variants = [*VARIANTS, ("image_encoder", "bf16")] if fc.spec.image_encoder else list(VARIANTS)
    for comp, var in variants:
        values = obs.get((comp, var))
        if values:
            table[comp][var] = ComponentWeights(gib=median_or(values, 0.0), source="measured",
                                                n_points=len(values))
        else:
            table[comp][var] = ComponentWeights(gib=analytic_weights_gib(fc.spec, comp, var), source="analytic")
    return dict(table)
