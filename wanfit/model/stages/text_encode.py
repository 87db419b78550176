"""The text encode: UMT5-XXL on the GPU (bf16 or weight-only int8) or on the CPU, under each offload mode.

memory  the encode's transient per placement (under group or sequential offload the encoder's leaves are
        streamed by the offload hooks: all of it is transient).
time    the encode of a process that already ran one, per placement; a process's first GPU-side encode pays a
        one-time setup above it (CUDA loads kernels lazily, cuBLAS makes its handle); under model offload
        the encoder's upload from pageable memory, timed at the host's rate.
A placement not measured for this model is taken from another model's points on the same GPU (every Wan
model uses the same UMT5-XXL), and noted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wanfit.model.context import FitContext, PredictContext, first_in_process, size_key, stage_transient
from wanfit.model.fitting import Row, fit_constant, fit_linear
from wanfit.model.weights import GROUPS_IN_FLIGHT, Moves, WeightsTable, weight_moves
from wanfit.vocabulary.units import GIB, transfer_s
from wanfit.vocabulary.workload import Plan

if TYPE_CHECKING:
    from wanfit.vocabulary.measurement import Measurement

# ---- the fitted quantities, as named in calibration files -----------------------------------------
FIRST = "text_encode_first_s"
UPLOAD = "text_encode_upload"


def _placement(plan: Plan) -> str:
    """How the encoder runs: its variant (gpu / int8 / cpu), and for a bf16 GPU encoder handed to group or
    sequential offload, that offload too (`gpu:group`). The official code moves T5 up for every GPU encode
    and, with --offload_model, down after it, inside the stage: `gpu` and `gpu:model` there, moves included."""
    if plan.runtime == "wan":
        return "gpu:model" if plan.text_encoder == "gpu" and plan.offload == "model" else plan.text_encoder
    if plan.text_encoder != "gpu" or plan.offload in ("none", "model"):
        return plan.text_encoder
    return f"{plan.text_encoder}:{plan.offload}"


def _upload_fitted_apart(plan: Plan) -> bool:
    """diffusers' model offload uploads the encoder inside the encode: fitted apart (UPLOAD), at the host's rate."""
    return plan.runtime == "diffusers" and plan.offload == "model" and plan.text_encoder == "gpu"


def transient_key(placement: str) -> str:
    return f"text_encode_transient:{placement}"


def time_key(placement: str) -> str:
    return f"text_encode_s:{placement}"


UNCALIBRATED_FALLBACKS = (time_key("cpu"), time_key("int8"))


# ---- fit -----------------------------------------------------------------------------------------


def fit_memory(fc: FitContext) -> None:
    def transient_row(m: Measurement) -> tuple[str, Row] | None:
        s, p = m.stage("text_encode"), m.plan
        t = stage_transient(m, s) if s is not None else None
        if t is None or _upload_fitted_apart(p):
            return None
        return transient_key(_placement(p)), Row({}, t, size_key(m))

    for name, rows in fc.te_rows(transient_row).items():
        fc.put(name, fit_constant(rows, target="text encode transient (allocated peak - start), GiB", unit="GiB",
                                  held_out=fc.held))


def _time_key(m: Measurement) -> str | None:
    """The time fit a point's encode belongs to (none under model offload with the encoder in the chain:
    its upload is fitted apart)."""
    if m.stage("text_encode") is None or _upload_fitted_apart(m.plan):
        return None
    return time_key(_placement(m.plan))


def fit_time(fc: FitContext, weights: WeightsTable) -> None:
    first = _fit_first_call(fc)
    gpu_side_first = first.predict({}) if first is not None else 0.0

    def time_row(m: Measurement) -> tuple[str, Row] | None:
        if (key := _time_key(m)) is None:
            return None
        setup = gpu_side_first if first_in_process(m) and m.plan.text_encoder != "cpu" else 0.0
        return key, Row({}, m.stage("text_encode").time_s - setup, size_key(m))

    for name, rows in fc.te_rows(time_row).items():
        fc.put(name, fit_constant(rows, target="text encode in a reused process (prompt and negative prompt), s",
                                  unit="s", held_out=fc.held))
    _fit_upload(fc, weights, gpu_side_first)


def _fit_first_call(fc: FitContext):
    """The one-time setup of a process's first GPU-side encode: fitted once on the resident bf16 encoder,
    against the same encode in processes that had run one (fitted first, here only)."""
    def reused_row(m: Measurement) -> tuple[str, Row] | None:
        if (key := _time_key(m)) is None or first_in_process(m):
            return None
        return key, Row({}, m.stage("text_encode").time_s, size_key(m))

    reused = fc.te_rows(reused_row).get(time_key("gpu"))
    base = fit_constant(reused or [], target="text encode (prompt and negative prompt), s", unit="s",
                        held_out=fc.held)

    def first_row(m: Measurement) -> tuple[str, Row] | None:
        if _time_key(m) != time_key("gpu") or not first_in_process(m) or base is None:
            return None
        return FIRST, Row({}, m.stage("text_encode").time_s - base.predict({}), size_key(m))

    fc.put(FIRST, fit_constant(fc.te_rows(first_row).get(FIRST, []), unit="s", held_out=fc.held,
                               target="text encode above a reused process's, in a process's first point "
                                      "(one-time setup), s"))
    return fc.models.get(FIRST)


def _fit_upload(fc: FitContext, weights: WeightsTable, gpu_side_first: float) -> None:
    def upload_row(m: Measurement) -> tuple[str, Row] | None:
        s, base = m.stage("text_encode"), fc.models.get(time_key("gpu"))
        if s is None or not _upload_fitted_apart(m.plan) or base is None:
            return None
        x = {"h2d_s": transfer_s(weights["text_encoder"]["bf16"].gib, fc.pageable_gbps(m))}
        setup = gpu_side_first if first_in_process(m) else 0.0
        return UPLOAD, Row(x, s.time_s - base.predict({}) - setup, size_key(m))

    fc.put(UPLOAD, fit_linear(fc.te_rows(upload_row).get(UPLOAD, []), ["h2d_s"], intercept=False, held_out=fc.held,
           unit="s", target="text encode under model offload above the resident encoder's: its upload from pageable "
                            "memory, against GiB / the pageable h2d rate of the point's session (else the "
                            "calibration's), s"))


# ---- predict -------------------------------------------------------------------------------------


def transient_gib(pc: PredictContext) -> float:
    plan = pc.plan
    combo = pc.model(transient_key(f"{plan.text_encoder}:{plan.offload}"))
    if combo is not None:
        return max(0.0, combo.predict({}))
    base = pc.value(transient_key(plan.text_encoder), 0.0)
    if plan.offload == "group" and plan.text_encoder == "gpu":
        # Uncalibrated: the runner offloads the encoder leaf by leaf; its largest leaf, the
        # token embedding, is in flight with the next one.
        te = pc.spec.text_encoder
        base += GROUPS_IN_FLIGHT * te["vocab_size"] * te["d_model"] * 2 / GIB
    return max(0.0, base)


def time_s(pc: PredictContext, host_seconds: Callable[[PredictContext, Moves], float]) -> float:
    """The encode on the target, with its weights' traffic: model offload's upload (fitted, or timed by
    `host_seconds` of wanfit.model.stages.host), the stream of group or sequential offload."""
    plan = pc.plan
    # A GPU-side encoder's first call in a process pays the one-time setup (lazily loaded kernels): a cost,
    # never a saving (a calibration whose points ran in one process can fit it below zero).
    first = max(0.0, pc.value(FIRST, 0.0)) if pc.first_in_process and plan.text_encoder != "cpu" else 0.0
    if plan.runtime == pc.cal.runtime == "wan" and (moved := pc.model(time_key(_placement(plan)))) is not None:
        # The official encode with its T5 moves, as measured on the calibration host.
        if plan.text_encoder == "cpu":
            return moved.predict({})
        return (moved.predict({}) + first) * pc.scale.overhead
    # Under model offload the encoder's upload is a host copy, timed apart at the host's rate.
    combo = pc.model(time_key(f"{plan.text_encoder}:{plan.offload}")) if plan.offload != "model" else None
    if combo is not None:
        seconds = combo.predict({}) + first
        return seconds * (1.0 if plan.text_encoder == "cpu" else pc.scale.overhead)
    base = pc.model(time_key(plan.text_encoder))
    if base is None:
        gpu = pc.model(time_key("gpu"))
        pc.note(f"text encoder {plan.text_encoder} not calibrated in {pc.cal.label}: "
                f"time of the bf16 encoder on the GPU used")
        seconds = gpu.predict({}) if gpu is not None else 0.0
    else:
        seconds = base.predict({})
    if plan.text_encoder == "cpu":
        pc.note("text encoder on the CPU: time as measured on the calibration host's CPU")
    else:
        seconds = (seconds + first) * pc.scale.overhead
    return seconds + _weight_traffic_s(pc, host_seconds)


def _weight_traffic_s(pc: PredictContext, host_seconds: Callable[[PredictContext, Moves], float]) -> float:
    plan, w, ceilings = pc.plan, pc.weights, pc.cal.feature_ceilings
    upload = pc.model(UPLOAD)
    if plan.runtime == "wan":
        return host_seconds(pc, weight_moves("text_encode", plan, w))
    if _upload_fitted_apart(plan) and upload is not None:
        return upload.predict({"h2d_s": transfer_s(w.text_encoder, ceilings.h2d_pageable_gbps)}) \
            * pc.scale.host_pageable
    if plan.offload == "model":
        return host_seconds(pc, weight_moves("text_encode", plan, w))
    if plan.offload in ("group", "sequential") and plan.text_encoder == "gpu":
        if plan.offload == "group":
            return transfer_s(w.text_encoder, ceilings.h2d_pinned_gbps) * pc.scale.host_pinned
        return transfer_s(w.text_encoder, ceilings.h2d_pageable_gbps) * pc.scale.host_pageable
    return 0.0
