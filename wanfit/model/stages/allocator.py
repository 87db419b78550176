"""The caching allocator and the memory outside it: from torch-allocated peaks to what nvidia-smi shows
and to what decides an out-of-memory.

fit      the driver baseline, CUDA context and non-torch memory; per kind of stage, the reservation above
         allocated where a stage grew the cache (linear in its transient: bigger transients fragment
         more), what DiT weight casts add to it, the pool of the group-offload transfer stream, and the
         fragmentation margin (reserved above allocated in steady no-offload steps).
predict  the device-level peak of each stage: outside-torch memory + the reservation, which only grows
         within a run (the runner empties the cache once, after placing the weights; under sequential
         offload accelerate empties it at every leaf); the need that decides the verdict: allocated peak
         + outside-torch memory (+ the fragmentation margin without expandable segments: a capped
         allocator frees its cache and retries before it raises OOM, and with expandable segments it also
         unmaps the free pages inside its segments).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from wanfit.model.calibration import Calibration
from wanfit.model.context import (
    FitContext,
    PredictContext,
    StageDemand,
    StageEstimate,
    size_key,
    stage_transient,
)
from wanfit.model.fitting import Row, fit_linear, median_or
from wanfit.model.geometry import BYTES
from wanfit.model.stages import denoise
from wanfit.model.stranded_cache import stranded_gib
from wanfit.model.transfer import context_gib
from wanfit.model.weights import GROUPS_IN_FLIGHT, WeightsTable
from wanfit.vocabulary.stages import STAGES
from wanfit.vocabulary.workload import Plan

if TYPE_CHECKING:
    from wanfit.vocabulary.measurement import Measurement, StageRecord

GROUP_POOL = "group_stream_pool"
GROWTH_EPS_GIB = 0.02  # a stage "grew" the reservation when its reserved peak rose by more than this
NVML_FLOOR_GIB = 0.01  # a context reading below this: the process's context was already up (a reused process)


def slack_kind(stage: str, vae_tiling: bool) -> str:
    """The kind of stage whose slack applies: the runner's `step` and `prepare` and the planner's
    `denoise`, `prepare` and `expert_switch` share the denoise cache."""
    if stage == "vae_decode":
        return "vae_decode_tiled" if vae_tiling else "vae_decode"
    return "text_encode" if stage == "text_encode" else "denoise"


def cache_emptied_before(stage: str, plan: Plan, index: int | None = None) -> bool:
    """Whether the cache is emptied as the stage starts (every earlier reservation gone): under sequential
    offload accelerate empties it at every leaf's weight load; the official code calls torch.cuda.empty_cache()
    after moving its DiT up for the first step (WanTI2V; WanI2V just before, WanT2V not at all, where the first
    step's reservation, a whole expert above the text encode's, covers what T5 left cached either way, and what
    --offload_model strands is stranded_text_encoder_gib's) and, with --offload_model, after sending it down
    before the decode (wan/textimage2video.py, image2video.py, text2video.py)."""
    if plan.offload == "sequential":
        return True
    if plan.runtime != "wan":
        return False
    if stage in ("denoise", "step"):
        return index in (None, 1)
    return stage == "vae_decode" and plan.offload == "model"


def stranded_text_encoder_gib(plan: Plan, model_key: str) -> float:
    """T5's cache the official code's --offload_model leaves reserved under its DiT's steps (one GPU, T5 computed
    on it; wanfit.model.stranded_cache): reserved and unusable on top of the steps' own slack."""
    if plan.runtime != "wan" or plan.offload != "model" or plan.text_encoder != "gpu" or plan.gpus > 1:
        return 0.0
    return stranded_gib(model_key, BYTES[plan.dit_dtype])


def slack_key(kind: str, variant: str = "") -> str:
    """`variant`: a DiT cast (`:fp8`), `:no-expandable`, `:sequential`, or both a cast and no-expandable."""
    return f"reserved_slack:{kind}{variant}"


# ---- fit -----------------------------------------------------------------------------------------


def fit_outside_memory(fc: FitContext) -> tuple[float, float, float]:
    """Driver baseline and CUDA context from points that started a process (later points of a
    reused process see the context already up), and the device memory above the allocator's
    reservation (lazy-loaded kernels, ...) from every stage."""
    first = [m for m in fc.ms if (m.context_gib or 0.0) > NVML_FLOOR_GIB]
    idle = median_or((m.idle_device_used_gib for m in first), 0.0)
    ctx = median_or((m.context_gib for m in first), 0.0)
    gaps = [s.device_used_peak_gib - s.torch_peak_reserved_gib for m in fc.ms for s in m.stages
            if s.name not in ("init", "total") and s.device_used_peak_gib is not None
            and s.torch_peak_reserved_gib is not None]
    if not gaps:
        fc.notes.append("no NVML readings: device-level memory = reserved + context (non-torch memory 0)")
        return idle, ctx, 0.0
    outside = median_or(gaps, 0.0)
    if not first:
        fc.notes.append("no point started a fresh process: baseline and context not separated")
        return 0.0, outside, 0.0
    return idle, ctx, max(0.0, outside - idle - ctx)


def fit_reservation(fc: FitContext, weights: WeightsTable) -> float:
    """Every reservation model (see the module docstring); returns the fragmentation margin."""
    grown, group_steps = _growth_rows(fc)
    grown.update(_sequential_slack_rows(fc))
    casts = {k: v for k, v in grown.items() if k.startswith(("denoise:fp8", "denoise:fp32"))}
    _fit_slacks(fc, {k: v for k, v in grown.items() if k not in casts})
    _fit_cast_slacks(fc, casts)
    _fit_group_pool(fc, weights, group_steps)
    # Measured where the cache holds the step's working set (no offload): with expandable segments where the
    # calibration has them, else (the official code sets none) without.
    steady = [m for m in fc.ms if m.plan.offload == "none" and m.plan.expandable_segments] or \
        [m for m in fc.ms if m.plan.offload == "none"]
    frag = [s.torch_peak_reserved_gib - s.torch_peak_allocated_gib for m in steady for s in m.steady_steps()
            if s.torch_peak_reserved_gib is not None and s.torch_peak_allocated_gib is not None]
    return max(0.0, median_or(frag, 0.0))


GroupStep = tuple["Measurement", "StageRecord", float, float]  # point, step, its transient, reserved before denoise


def _growth_rows(fc: FitContext) -> tuple[dict[str, list[Row]], list[GroupStep]]:
    """Walk each point's stages (no or model offload: the slack where a stage grew the cache; group
    offload: its steady steps, for the transfer stream's pool)."""
    grown: dict[str, list[Row]] = defaultdict(list)
    group_steps: list[GroupStep] = []
    for m in fc.ms:
        if m.plan.offload == "sequential":
            continue  # its own slack model (_sequential_slack_rows)
        suffix = "" if m.plan.expandable_segments else ":no-expandable"
        prev, before_denoise = None, 0.0
        for s in m.stages:
            if s.name in ("init", "total"):
                continue
            if s.torch_peak_reserved_gib is None or s.torch_peak_allocated_gib is None:
                prev = None
                continue
            if prev is None:  # the point's first stage: the cache was emptied, reserved = allocated
                prev = s.torch_allocated_start_gib if s.torch_allocated_start_gib is not None else 0.0
            if cache_emptied_before(s.name, m.plan, s.index):
                prev = 0.0  # the stage's reservation is its own working set
            kind, t = slack_kind(s.name, m.plan.vae_tiling), stage_transient(m, s)
            if s.name == "step" and m.plan.offload == "group":
                if s.index == 1:
                    before_denoise = prev
                elif t is not None:
                    group_steps.append((m, s, t, before_denoise))
            elif s.name != "prepare" and t is not None and s.torch_peak_reserved_gib > prev + GROWTH_EPS_GIB \
                    and m.plan.offload in ("none", "model"):
                # DiT weight casts (fp8 storage, fp32 autocast) allocate per layer between the
                # activations: they fragment the step's reservation differently.
                cast = f":{m.plan.dit_dtype}" if kind == "denoise" and m.plan.dit_dtype != "bf16" else ""
                # The steps' own slack: what the text encoder's cache strands is the replay's, not fitted.
                stranded = stranded_text_encoder_gib(m.plan, m.workload.model) if kind == "denoise" else 0.0
                grown[kind + cast + suffix].append(Row({**fc.x(m), "transient_gib": t},
                                                       s.torch_peak_reserved_gib - s.torch_peak_allocated_gib - stranded,
                                                       size_key(m)))
            prev = max(prev, s.torch_peak_reserved_gib)
    return grown, group_steps


def _sequential_slack_rows(fc: FitContext) -> dict[str, list[Row]]:
    """accelerate empties the cache whenever it moves a weight onto the GPU (every leaf, every
    forward): under sequential offload each stage's reservation is its own working set, never an
    earlier stage's, and its slack above allocated is small. Fitted on this DiT's sequential
    points, else on the other DiTs' on this GPU (linear in each stage's own transient)."""
    def rows_of(ms: list[Measurement]) -> dict[str, list[Row]]:
        rows: dict[str, list[Row]] = defaultdict(list)
        for m in ms:
            if m.plan.offload != "sequential" or m.plan.vae_tiling:
                continue
            for s in m.stages:
                t = stage_transient(m, s) if s.name in ("text_encode", "step", "vae_decode") else None
                if t is None or s.torch_peak_reserved_gib is None or s.torch_peak_allocated_gib is None:
                    continue
                rows[f"{slack_kind(s.name, False)}:sequential"].append(
                    Row({**fc.x(m), "transient_gib": t}, s.torch_peak_reserved_gib - s.torch_peak_allocated_gib,
                        size_key(m)))
        return rows

    return rows_of(fc.ms) or rows_of(fc.siblings)


def _fit_slacks(fc: FitContext, grown: dict[str, list[Row]]) -> None:
    for kind, rows in sorted(grown.items()):
        # The decode's fragmentation follows its buffers: per-frame feature maps and the video.
        # Under sequential offload (the cache emptied at every leaf) only the decode's own transient.
        features = ["frame_mpix", "video_fp32_gib"] if kind in ("vae_decode", "vae_decode:no-expandable") \
            else ["transient_gib"]
        intercept = True
        if len(features) == 2 and len({r.group for r in rows}) <= len(features):
            # Fewer sizes than the line's unknowns (the official A14B grid grows the cache at its decode at two
            # sizes only: the steps reserve more at the others): proportional to the per-frame feature maps,
            # which is what the slack follows (8.3 and 8.6 GiB per output megapixel at 480p and 720p there).
            features, intercept = ["frame_mpix"], False
        stage = kind.split(":")[0]
        target = (f"reserved above allocated in a {stage} stage under sequential offload (the cache emptied at "
                  "every leaf), GiB") if kind.endswith(":sequential") else \
            f"reserved above allocated where a {stage} stage grew the reservation, GiB"
        fc.put(slack_key(kind), fit_linear(rows, features, intercept=intercept, held_out=fc.held, unit="GiB",
                                           target=target))


def _fit_cast_slacks(fc: FitContext, casts: dict[str, list[Row]]) -> None:
    """Weight casts (per-layer buffers allocated between the activations) fragment in proportion
    to the activations (measured fp8: about +0.2 GiB per GiB of bf16 activations). Both slacks
    are taken at the bf16 activations: fp32's extra transient (autocast's bf16 weight copies)
    is a few large blocks that fragment little. The predictor holds the extra constant beyond
    the largest activation measured with the cast."""
    activation = fc.models[denoise.ACTIVATION]
    for kind, rows in sorted(casts.items()):
        suffix = ":no-expandable" if kind.endswith(":no-expandable") else ""
        base = fc.models.get(slack_key("denoise", suffix)) or fc.models.get(slack_key("denoise"))
        extra = []
        for r in rows:
            x = {**r.x, "transient_gib": activation.predict(r.x)}
            extra.append(Row(x, r.y - (base.predict(x) if base else 0.0), r.group))
        fc.put(slack_key(kind), fit_linear(extra, ["transient_gib"], intercept=False, held_out=fc.held, unit="GiB",
                                           target="extra reservation slack of DiT weight casts over the bf16 "
                                                  "step's, GiB"))


def _fit_group_pool(fc: FitContext, weights: WeightsTable, group_steps: list[GroupStep]) -> None:
    """The transfer stream's pool: a steady group-offloaded step's reservation above the default
    stream's cache, which is the larger of what earlier stages left reserved and what the step
    needs there (its allocations less the blocks in flight, plus the slack of its transient),
    as the predictor composes it."""
    in_flight = fc.models.get(denoise.extra_memory("group"))
    slack = fc.models.get(slack_key("denoise"))
    rows = []
    for m, s, t, before in group_steps:
        block = denoise.block_gib(fc, weights, m.plan.dit_dtype)
        blocks = in_flight.predict({"block_gib": block}) if in_flight is not None else \
            GROUPS_IN_FLIGHT * block
        default_stream = s.torch_peak_allocated_gib - min(max(0.0, blocks), t)
        default_stream += max(0.0, slack.predict({**fc.x(m), "transient_gib": t})) if slack is not None else 0.0
        rows.append(Row({"block_gib": block}, s.torch_peak_reserved_gib - max(before, default_stream), size_key(m)))
    fc.put(GROUP_POOL, fit_linear(rows, ["block_gib"], intercept=False, held_out=fc.held, unit="GiB",
                                  target="reservation of the group-offload transfer stream (blocks in flight), GiB"))


# ---- predict -------------------------------------------------------------------------------------


def slack_gib(pc: PredictContext, kind: str, transient_gib: float) -> float:
    """Reservation above the allocated peak when a stage of this kind grows the cache."""
    plan = pc.plan
    suffix = "" if plan.expandable_segments else ":no-expandable"
    m = pc.model(slack_key(kind, ":sequential")) if plan.offload == "sequential" else None
    m = m or pc.model(slack_key(kind, suffix))
    if m is None and suffix:
        pc.note("allocator without expandable segments not calibrated: slack of expandable segments used")
    m = m or pc.model(slack_key(kind))
    if m is None and kind == "vae_decode_tiled":
        m = pc.model(slack_key("denoise"))
    slack = m.predict({**pc.x, "transient_gib": transient_gib}) if m is not None else 0.0
    # Weight casts of a resident DiT fragment more, in proportion to the bf16 activations (held
    # constant beyond the largest measured). Measured without offload; under group or sequential
    # offload the casts happen on streamed blocks, not measured: none added.
    if kind == "denoise" and plan.dit_dtype != "bf16" and plan.offload in ("none", "model"):
        cast = pc.model(slack_key(kind, f":{plan.dit_dtype}{suffix}")) or \
            pc.model(slack_key(kind, f":{plan.dit_dtype}"))
        if cast is not None:
            measured_max = cast.training_range.get("transient_gib", (0.0, transient_gib))[1]
            slack += cast.predict({"transient_gib": min(transient_gib, measured_max)})
    return max(0.0, slack)


def group_pool_gib(pc: PredictContext) -> float:
    """Reservation of the group-offload transfer stream: the blocks in flight are allocated on
    it, and the default stream cannot reuse that cache (nor this stream the default's);
    uncalibrated: GROUPS_IN_FLIGHT blocks."""
    m = pc.model(GROUP_POOL)
    if m is None:
        return GROUPS_IN_FLIGHT * pc.weights.block
    return max(0.0, m.predict({"block_gib": pc.weights.block}))


def outside_torch_gib(cal: Calibration, target: object | None) -> tuple[float, bool]:
    """Device memory outside the allocator (driver baseline, CUDA context, non-torch), and whether the
    target's context size is known (else the calibrated GPU's is used)."""
    ctx, known = context_gib(cal, target)
    return cal.idle_gib + ctx + cal.non_torch_gib, known


def device_level(pc: PredictContext, demands: dict[str, StageDemand], bf16_activation: float) -> list[StageEstimate]:
    """Each stage's device-level peak and need, walking the reservation through the stages in order."""
    plan = pc.plan
    outside, _ = outside_torch_gib(pc.cal, pc.target)
    margin = 0.0 if plan.expandable_segments else pc.cal.fragmentation_margin_gib
    stranded = stranded_text_encoder_gib(plan, pc.spec.key)
    init = demands["init"]
    reserved, pool = init.allocated_gib - init.transient_gib, 0.0  # the cache is emptied once weights are placed
    stages = []
    for name in STAGES:
        if name not in demands:
            continue
        d = demands[name]
        # Reserved under the DiT's weights and out of the steps' reach: counted in the need too.
        unusable = stranded if name in ("denoise", "expert_switch") else 0.0
        if name == "init":
            held = d.allocated_gib  # its conversion transient (an int8 encoder quantised from bf16) included
        else:
            default_stream = d.allocated_gib
            if plan.offload == "group" and name in ("denoise", "expert_switch"):
                # The blocks in flight sit in the transfer stream's pool, not the default stream's cache.
                pool = group_pool_gib(pc)
                default_stream -= min(denoise.group_in_flight_gib(pc), d.transient_gib)
            kind = slack_kind(name, plan.vae_tiling)
            grown_by = d.transient_gib
            if kind == "denoise" and plan.dit_dtype != "bf16" and plan.offload in ("none", "model"):
                grown_by = bf16_activation  # cast slack is fitted against the bf16 activations
            grow = slack_gib(pc, kind, grown_by) if name != "prepare" else 0.0
            # Where the cache was emptied the stage keeps no earlier stage's reservation.
            kept = 0.0 if cache_emptied_before(name, plan) else reserved
            reserved = held = max(kept, default_stream + grow + unusable)
        stages.append(StageEstimate(name=name, time_s=max(0.0, d.time_s), allocated_gib=d.allocated_gib,
                                    peak_vram_gib=outside + held + pool,
                                    need_gib=d.allocated_gib + outside + margin + unusable))
    return stages
