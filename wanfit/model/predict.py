"""Predict one workload + plan from a calibration: per stage time and peak VRAM, totals, intervals.

Pure Python over stored coefficients (no numpy, no sklearn): this is the `wanfit plan` path.
Plan knobs are composed from physics, so a calibration that measured each knob at one to three
points predicts every combination. Each stage's figures come from its module (wanfit.model.stages):

memory (torch-allocated, per stage) = weights resident in that stage for the plan (weights.py)
    + persistent tensors (latents, embeddings) + the stage's transient (DiT activations, the decode's
    buffers, the text encode) + the knob's own transient (fp8/fp32 casts, group-offload blocks in flight).
device level and need: stages.allocator (the reservation walked through the stages; the need that
    decides the verdict: allocated peak + outside-torch memory).
time = init + text encode + prepare + steps x steady step + warm-up + the plan's host transfers
    (model offload moves whole models, pageable) + expert switch + VAE decode, each scaled to the
    target GPU by transfer.py.
several GPUs: per rank (the worst rank: the one that decodes), by sharding.py from the same stage figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from wanfit.model import sharding
from wanfit.model.calibration import Calibration
from wanfit.model.context import PredictContext, StageDemand, StageEstimate
from wanfit.model.geometry import crosses_expert_switch, geometry
from wanfit.model.stages import allocator, denoise, host, text_encode, vae_decode
from wanfit.model.weights import Moves, host_ram_gib, rank_build_upload_gib, resident_gib
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.plan_report import Candidate, StagePrediction
from wanfit.vocabulary.workload import Plan, Workload, check_layout_for

# Interval policy (assumptions, not measurements; docs/accuracy.md reports how they hold up):
EXTRAPOLATION_WIDEN = 2.0  # held-out error x2 outside the calibrated range
# Transferred to another GPU: + the transfer's interval, its seconds weighted by their kernel classes' bases
# (wanfit.model.kernel_classes.BASIS_REL: measured, corrected, public, derived; from bench/transfer_public.py).
NO_HELDOUT_TIME_REL = 0.10  # a time fit with too few sizes to hold any out
# Predicting a DiT from another DiT's calibration: measured carry-over between the shipped DiTs was
# at worst 3.0 % (step) and 7.4 % (peak) on the H100 (docs/accuracy.md); an untested DiT gets more.
CROSS_DIT_TIME_REL = 0.10
CROSS_DIT_PEAK_REL = 0.10
# Predicting one runtime from another's calibration: on the H100 the official code and diffusers differed by
# 10-30 % in step time and by up to 7 GiB (27 %) in the DiT's allocated peak on the same workload
# (../shared/DESIGN.md, "Runtimes and GPUs"): as wide as that.
OTHER_RUNTIME_TIME_REL = 0.30
OTHER_RUNTIME_PEAK_REL = 0.30


@dataclass
class Prediction:
    """Everything predicted for one workload + plan on one GPU (before the fit verdict)."""

    workload: Workload
    plan: Plan
    stages: list[StageEstimate]
    step_s: float
    duration_s: float
    peak_vram_gib: float
    need_gib: float
    binding_stage: str
    peak_vram_interval_gib: tuple[float, float]
    duration_interval_s: tuple[float, float]
    host_ram_gib: float
    extrapolated: bool
    transferred_from: str | None
    calibration: str
    notes: list[str] = field(default_factory=list)
    decode_workspace_gib: float = 0.0  # of the decode's allocated peak: workspace cuDNN does without at a limit

    def stage(self, name: str) -> StageEstimate | None:
        return next((s for s in self.stages if s.name == name), None)

    def candidate(self, usable_gib: float, safety_margin_gib: float = 1.0,
                  host_ram_limit_gib: float | None = None) -> Candidate:
        """The Candidate of the JSON contract: fits when need + margin <= usable memory (and the
        offloaded weights fit in host RAM when a limit is given)."""
        headroom = usable_gib - self.need_gib - safety_margin_gib
        host_ok = host_ram_limit_gib is None or self.host_ram_gib <= host_ram_limit_gib
        notes = list(self.notes)
        if not host_ok:
            notes.append(f"needs {self.host_ram_gib:.1f} GiB of host RAM for offloaded weights "
                         f"> {host_ram_limit_gib:.1f} GiB available")

        def shown(gib: float) -> float:
            # A plan whose need fits never shows more than the card has: under pressure the caching
            # allocator frees its cached blocks and retries before it fails.
            return round(min(gib, usable_gib) if headroom >= 0 else gib, 3)

        lean = self.need_gib - self.decode_workspace_gib  # the decode without cuDNN's optional workspace
        if headroom < 0 < self.decode_workspace_gib and self.binding_stage == "vae_decode" and lean <= usable_gib:
            notes.append(f"may still run: without the {self.decode_workspace_gib:.2f} GiB of convolution workspace "
                         f"cuDNN does without at a card's limit (measured once, capped) the VAE decode needs "
                         f"{lean:.2f} GiB of {usable_gib:.2f}, inside the {safety_margin_gib:g} GiB safety margin, "
                         f"decoding about {vae_decode.ELASTIC_DECODE_SLOWDOWN:.0%} slower; not counted as fitting: "
                         f"check it with `wanfit verify`")
        if headroom >= 0 and self.peak_vram_gib > usable_gib:
            notes.append(f"device-level peak held at the {usable_gib:.1f} GiB usable where the cache would grow "
                         f"beyond it: the allocator gives back cached memory under pressure")
        return Candidate(
            plan=self.plan.knobs(), fits=headroom >= 0 and host_ok, peak_vram_gib=shown(self.peak_vram_gib),
            need_gib=round(self.need_gib, 3), headroom_gib=round(headroom, 3), binding_stage=self.binding_stage,
            step_s=round(self.step_s, 4), duration_s=round(self.duration_s, 3),
            duration_interval_s=_round_pair(self.duration_interval_s, 3),
            peak_vram_interval_gib=(shown(self.peak_vram_interval_gib[0]), shown(self.peak_vram_interval_gib[1])),
            host_ram_gib=round(self.host_ram_gib, 3), host_ram_fits=host_ok,
            stages=[StagePrediction(name=s.name, time_s=round(s.time_s, 4), peak_vram_gib=shown(s.peak_vram_gib),
                                    need_gib=round(s.need_gib, 3), allocated_gib=round(s.allocated_gib, 3))
                    for s in self.stages],
            extrapolated=self.extrapolated, transferred_from=self.transferred_from, notes=notes,
        )


def _round_pair(pair: tuple[float, float], digits: int) -> tuple[float, float]:
    return round(pair[0], digits), round(pair[1], digits)


# ---- composing the stages --------------------------------------------------------------------


def _init_demand(pc: PredictContext) -> StageDemand:
    plan, w = pc.plan, pc.weights
    placed = resident_gib("init", plan, w)  # what stays once placed (the runner empties the cache then)
    allocated = placed
    if plan.text_encoder == "int8":
        # Quantised on the GPU from its bf16 weights before the pipeline moves there (the runner and
        # a checkpoint load alike): for that moment the GPU holds the whole bf16 encoder.
        allocated = max(allocated, pc.calibrated_weight("text_encoder", "bf16"))
    if pc.reused_pipeline:
        pc.note("pipeline reused: built by an earlier job of the same process (no init, no first-call setup)")
        seconds = 0.0
    else:
        seconds = host.init_s(pc)
    return StageDemand(time_s=seconds, allocated_gib=allocated, transient_gib=allocated - placed)


def _prepare_demand(pc: PredictContext, persistent: float) -> StageDemand:
    plan, spec = pc.plan, pc.spec
    trans = 0.0
    if spec.is_i2v:
        # I2V encodes the conditioning video through the VAE before the first step; the
        # calibration has no I2V point: estimated as large as the decode of that video.
        trans = vae_decode.transient_gib(pc)
        pc.note("I2V conditioning encode not calibrated: estimated from the VAE decode")
    allocated = resident_gib("prepare", plan, pc.weights) + persistent + trans
    if spec.is_i2v and plan.offload == "model":
        allocated += pc.weights.vae  # the VAE's offload hook brings it up for the encode
    seconds = host.prepare_s(pc) + (vae_decode.compute_s(pc) if spec.is_i2v else 0.0)
    return StageDemand(time_s=seconds, allocated_gib=allocated, transient_gib=trans)


def _denoise_demands(pc: PredictContext, step: float, persistent: float, act: float) -> dict[str, StageDemand]:
    """The steps, and a two-expert model's switch between its experts when the run reaches it."""
    plan, w, steps = pc.plan, pc.weights, pc.wl.steps
    warmup = denoise.warmup_s(pc)
    loading = host.stage_move_s(pc, "denoise")
    out = {"denoise": StageDemand(time_s=steps * step + warmup + loading,
                                  allocated_gib=resident_gib("denoise", plan, w) + persistent + act,
                                  transient_gib=act)}
    if crosses_expert_switch(pc.spec, steps):
        out["expert_switch"] = StageDemand(time_s=host.stage_move_s(pc, "expert_switch"),
                                           allocated_gib=resident_gib("expert_switch", plan, w) + persistent + act,
                                           transient_gib=act)
    return out


def _decode_demand(pc: PredictContext, persistent: float) -> StageDemand:
    plan, w = pc.plan, pc.weights
    persistent_decode = vae_decode.persistent_gib(pc, default=persistent)
    trans = vae_decode.transient_gib(pc)
    allocated = resident_gib("vae_decode", plan, w) + persistent_decode + trans
    if plan.offload == "model":  # the DiT is still up when decode starts; it goes down before the VAE comes up
        allocated = max(allocated, w.dit / (plan.gpus if plan.dit_fsdp else 1) + persistent_decode)
    return StageDemand(time_s=vae_decode.time_s(pc, host.move_s), allocated_gib=allocated, transient_gib=trans)


def _compose(pc: PredictContext) -> Prediction:
    base = denoise.base_step_s(pc)
    step = denoise.step_s(pc, base)
    persistent = denoise.persistent_gib(pc)
    act, bf16_activation = denoise.transient_gib(pc)
    ranks = _Ranks(pc, base, step, act, bf16_activation) if pc.plan.gpus > 1 else None
    if ranks is not None:
        step, (act, bf16_activation) = ranks.step.step_s, ranks.activation
    demands = {"init": _init_demand(pc)}
    te_transient = text_encode.transient_gib(pc) + (sharding.t5_in_flight_gib(pc) if ranks else 0.0)
    demands["text_encode"] = StageDemand(
        time_s=text_encode.time_s(pc, host.move_s),
        allocated_gib=resident_gib("text_encode", pc.plan, pc.weights) + te_transient, transient_gib=te_transient)
    demands["prepare"] = _prepare_demand(pc, persistent)
    demands.update(_denoise_demands(pc, step, persistent, act))
    demands["vae_decode"] = _decode_demand(pc, persistent)
    if ranks is not None:
        demands = ranks.with_communication(ranks.with_kept_roots(demands))
    stages = allocator.device_level(pc, demands, bf16_activation)
    if ranks is not None:
        stages = ranks.with_nccl_buffers(stages)
    return _with_intervals(pc, stages, step, ranks.comm_s if ranks else 0.0)


class _Ranks:
    """One rank of a several-GPU plan (wanfit.model.sharding): its step, its activations, the collectives the
    text encode and the build add, NCCL's buffers."""

    def __init__(self, pc: PredictContext, base: float, step: float, act: float, bf16_activation: float) -> None:
        self.pc = pc
        self.net = sharding.links(pc.gpu_profile, pc.plan.gpus)
        self.step = sharding.rank_step(pc, base, step, self.net)
        self.activation = sharding.rank_activation_gib(pc, act, bf16_activation)
        self.t5_s = sharding.t5_gather_s(pc, self.net)
        self.comm_s = self.step.comm_s * pc.wl.steps + self.t5_s
        pc.note(sharding.assumptions_note(pc, self.net))

    def with_kept_roots(self, demands: dict[str, StageDemand]) -> dict[str, StageDemand]:
        """FSDP root units that stay gathered after their forward (sharding.kept_roots_gib), resident from then on."""
        return {name: replace(d, allocated_gib=d.allocated_gib + sharding.kept_roots_gib(self.pc, name))
                for name, d in demands.items()}

    def with_communication(self, demands: dict[str, StageDemand]) -> dict[str, StageDemand]:
        build = 0.0 if self.pc.reused_pipeline else (
            sharding.init_broadcast_s(self.pc, self.net)
            + host.move_s(self.pc, Moves(h2d=rank_build_upload_gib(self.pc.plan, self.pc.weights))))
        shared = sharding.shared_host_encode_s(self.pc, demands["text_encode"].time_s)
        self.comm_s += shared  # assumed like the collectives: the interval widens by its size
        extra = {"text_encode": self.t5_s + shared, "init": build}
        return {name: replace(d, time_s=d.time_s + extra.get(name, 0.0)) for name, d in demands.items()}

    def with_nccl_buffers(self, stages: list[StageEstimate]) -> list[StageEstimate]:
        buffers = sharding.NCCL_BUFFERS_GIB
        return [replace(s, peak_vram_gib=s.peak_vram_gib + buffers, need_gib=s.need_gib + buffers) for s in stages]


def _with_intervals(pc: PredictContext, stages: list[StageEstimate], step: float, comm_s: float) -> Prediction:
    """Totals and intervals: the held-out error of the fits behind them, widened where the workload is
    outside the calibrated range, transferred to another GPU or carried over from another DiT."""
    cal = pc.cal
    peak = max(s.peak_vram_gib for s in stages)
    binding = max(stages, key=lambda s: s.need_gib)
    duration = sum(s.time_s for s in stages)
    extrapolated = bool(pc.extrapolated_by)
    if extrapolated:
        pc.note(f"outside the calibrated range of {cal.label} ({', '.join(pc.extrapolated_by)}): extrapolated, "
                f"wider interval")
    mem_half = _memory_half_width(pc, binding.name) * (EXTRAPOLATION_WIDEN if extrapolated else 1.0)
    if not allocator.outside_torch_gib(cal, pc.target)[1]:
        mem_half += cal.context_gib  # the target's context size is unknown: up to its own size off
    time_rel = _time_rel(pc) * (EXTRAPOLATION_WIDEN if extrapolated else 1.0)
    if pc.scale.transferred_from is not None:
        time_rel += pc.scale.transfer_rel(pc)
    if pc.plan.gpus > 1:  # the split over ranks and every collective are assumed until measured
        time_rel += sharding.SPLIT_TIME_REL + comm_s / max(duration, 1e-9)
        mem_half += sharding.NCCL_BUFFERS_GIB + sharding.in_flight_gib(pc) / (sharding.FSDP_BLOCKS_IN_FLIGHT
                                                                              + sharding.FSDP_ROOT_BLOCKS)
    if cal.dit_family != pc.spec.dit_family:
        time_rel += CROSS_DIT_TIME_REL
        mem_half += CROSS_DIT_PEAK_REL * peak
    if cal.runtime != pc.plan.runtime:
        pc.note(f"the {pc.plan.runtime} runtime is not calibrated for this DiT: predicted from the {cal.runtime} "
                f"calibration {cal.label} with the {pc.plan.runtime} runtime's placement and moves (its kernels, "
                f"casts and allocator not measured: wider interval)")
        time_rel += OTHER_RUNTIME_TIME_REL
        mem_half += OTHER_RUNTIME_PEAK_REL * peak
    return Prediction(
        workload=pc.wl, plan=pc.plan, stages=stages, step_s=step, duration_s=duration, peak_vram_gib=peak,
        need_gib=binding.need_gib, binding_stage=binding.name,
        peak_vram_interval_gib=(max(0.0, peak - mem_half), peak + mem_half),
        duration_interval_s=(max(0.0, duration * (1 - time_rel) - pc.fresh_page_s * (1 - host.FRESH_OVER_TOUCHED)),
                             duration * (1 + time_rel)),
        host_ram_gib=host_ram_gib(pc.plan, pc.weights), extrapolated=extrapolated,
        transferred_from=pc.scale.transferred_from, calibration=cal.label, notes=pc.notes,
        decode_workspace_gib=vae_decode.elastic_workspace_gib(pc),
    )


def _memory_half_width(pc: PredictContext, binding: str) -> float:
    """Worst held-out error (GiB) of the fits behind the peak: the binding stage's transient
    and the allocator slack of that kind of stage."""
    tiled = pc.plan.vae_tiling
    names = {"denoise": (denoise.ACTIVATION, allocator.slack_key("denoise")),
             "expert_switch": (denoise.ACTIVATION, allocator.slack_key("denoise")),
             "vae_decode": (vae_decode.transient_key(tiled), allocator.slack_key(allocator.slack_kind("vae_decode",
                                                                                                      tiled))),
             "text_encode": (text_encode.transient_key("gpu"), allocator.slack_key("text_encode"))}.get(binding, ())
    total = 0.0
    for name in names:
        m = pc.model(name)
        if m is not None and m.held_out is not None:
            total += m.held_out.worst_abs
    return total


def _time_rel(pc: PredictContext) -> float:
    m = pc.model(denoise.STEP)
    if m is None or m.held_out is None:
        return NO_HELDOUT_TIME_REL
    return m.held_out.worst_abs_pct / 100.0


def predict(workload: Workload, plan: Plan, calibration: Calibration, target: Any | None = None,
            host_pageable_gbps: float | None = None, first_in_process: bool = True,
            host_d2h_gbps: float | None = None, reused_pipeline: bool = False) -> Prediction:
    """Predict `workload` run with `plan`, from `calibration`, on `target` (a GpuProfile; None:
    the calibrated GPU itself). `host_pageable_gbps`: the host's measured host-to-device rate from
    pageable memory (offloading plans copy at it; lent H100 hosts ranged 6.4 to 9.2 GB/s), instead
    of the calibration host's scaled to the target's host link. `first_in_process`: the job is its
    process's first (a one-video run: it pays the one-time setup); False for a pipeline reused by a
    long-lived process. `host_d2h_gbps`: the host's measured device-to-host rate into freshly allocated
    pageable memory (model offload's moves down run at it; wanfit.measure.ceilings.host_d2h_fresh_gbps),
    instead of the calibration host's as fitted. `reused_pipeline`: the process built this pipeline
    for an earlier job and keeps it (a server): no init stage time, and not its process's first job."""
    check_layout_for(workload.spec, plan, geometry(workload).tokens if plan.gpus > 1 else None)
    try:
        return _compose(PredictContext(workload, plan, calibration, target, host_pageable_gbps, first_in_process,
                                       host_d2h_gbps, reused_pipeline))
    except KeyError as missing:  # a fitted model asks for a feature this wanfit no longer computes
        raise WanfitError(f"calibration {calibration.label} was fitted by another wanfit version (no feature "
                          f"{missing}): refit it with `wanfit calibrate --fit-only --gpu {calibration.gpu} "
                          f"--model {calibration.model}`") from None
