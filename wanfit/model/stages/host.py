"""The host side of a job: init (build or load the components and place them per plan), prepare (the
pipeline call up to the first DiT forward) and model offload's whole-model moves between host and GPU.

init     random builds: CUDA start in a fresh process, the GiB built, the GiB the plan moves to host RAM,
         int8 quantisation; a checkpoint load: a fixed part plus the GiB read, at the calibration host's rate.
moves    model CPU offload's stage time above the same stage without offload, against the bytes each
         direction moves through pageable memory (uploads at the host's h2d rate; downloads land in freshly
         mapped host pages and run at the host's page-fault rate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wanfit.model.context import FitContext, PredictContext, first_in_process, size_key
from wanfit.model.fitting import Row, fit_constant, fit_linear
from wanfit.model.stages import denoise, text_encode, vae_decode
from wanfit.model.weights import Moves, WeightsTable, built_gib, host_ram_gib, plan_weights, weight_moves
from wanfit.vocabulary.units import transfer_s
from wanfit.vocabulary.workload import Plan

if TYPE_CHECKING:
    from wanfit.vocabulary.measurement import Measurement

# ---- the fitted quantities, as named in calibration files -----------------------------------------
INIT = "init_s"
INIT_CHECKPOINT = "init_s:checkpoint"
PREPARE = "prepare_s"
MOVES = "host_transfer"
UNCALIBRATED_FALLBACKS = (MOVES,)
# Moves down into freshly mapped pageable memory ran at 0.09-0.115 of the same copy into touched pages on lent
# H100 hosts (1.15-1.37 against 10.5-14.7 GB/s, bench/results/host-copies-h100*.jsonl): page faults set them,
# and a host that maps its pages faster (transparent huge pages) may run them up to that much faster.
FRESH_OVER_TOUCHED = 0.115


# ---- fit -----------------------------------------------------------------------------------------


def fit_prepare_and_init(fc: FitContext, weights: WeightsTable) -> None:
    fc.put(PREPARE, fit_constant([Row({}, s.time_s, size_key(m)) for m in fc.ms
                                  if (s := m.stage("prepare")) is not None],
                                 target="pipeline call up to the first DiT forward, s", unit="s", held_out=fc.held))
    rows = []
    for m in fc.ms:
        s = m.stage("init")
        if s is not None and m.source == "random":
            rows.append(Row(_init_features(fc, m.plan, weights, first_in_process(m)), s.time_s, size_key(m)))
    fc.put(INIT, fit_linear(rows, ["weights_gib", "host_gib", "fresh_process", "int8_gib"], intercept=False,
                            held_out=fc.held, unit="s",
                            target="init: start CUDA (fresh process), build the components, quantise, apply the "
                                   "plan (moves to host RAM), s"))
    # A checkpoint load reads and places every weight: a fixed part (the pipeline's imports and
    # configs, building the modules empty) plus the bytes over the host's load rate (safetensors
    # to host memory, then to the GPU). Neither depends on the model, so every DiT's checkpoint
    # point on this GPU's host joins. The GiB loaded are those measured resident after placement
    # (the points are no-offload baselines).
    ckpt_rows = [Row({"weights_gib": sum(m.resident_weights_gib.values())}, s.time_s, size_key(m))
                 for m in [*fc.ms, *fc.siblings]
                 if m.source == "checkpoint" and m.plan == Plan() and (s := m.stage("init")) is not None
                 and m.resident_weights_gib]
    fc.put(INIT_CHECKPOINT, fit_linear(ckpt_rows, ["weights_gib"], held_out=fc.held, unit="s",
                                       target="init from a local checkpoint in the page cache: from_pretrained and "
                                              "placing the weights on the GPU, s"))


def _init_features(fc: FitContext, plan: Plan, weights: WeightsTable, fresh: bool) -> dict[str, float]:
    w, _ = plan_weights(weights, fc.model_key, fc.spec, plan, fc.model_key)
    return {"weights_gib": built_gib(w), "host_gib": host_ram_gib(plan, w), "fresh_process": 1.0 if fresh else 0.0,
            "int8_gib": weights["text_encoder"]["int8"].gib if plan.text_encoder == "int8" else 0.0}


def fit_moves(fc: FitContext, weights: WeightsTable) -> None:
    """Whole-model moves of model CPU offload: the stage time above the same stage without offload
    (the other stages' fits), against the bytes each direction moves (pageable host memory). The text
    encoder's upload has its own fit (text_encode's) and is one here too: a pure host-to-device copy,
    it pins the h2d coefficient the other stages share with d2h."""
    rows = [r for m in fc.ms if m.plan.offload == "model" or m.plan.runtime == "wan"
            for r in _move_rows(fc, m, weights)]
    rows = [r for r in rows if r.x["h2d_s"] > 0 or r.x["d2h_s"] > 0]
    fc.put(MOVES, fit_linear(rows, ["h2d_s", "d2h_s"], intercept=False, held_out=fc.held, unit="s",
                             target="model-offload stage time above no offload, against GiB moved / the pageable h2d "
                                    "rate measured in the point's session (else the calibration's), s"))


def _move_rows(fc: FitContext, m: Measurement, weights: WeightsTable) -> list[Row]:
    w, _ = plan_weights(weights, fc.model_key, m.workload.spec, m.plan, fc.model_key)
    pageable = fc.pageable_gbps(m)

    def row(stage: str, excess: float) -> Row:
        mv = weight_moves(stage, m.plan, w)
        return Row({"h2d_s": transfer_s(mv.h2d, pageable), "d2h_s": transfer_s(mv.d2h, pageable)}, excess,
                   size_key(m))

    models = fc.models
    te_gpu, te_first = models.get(text_encode.time_key("gpu")), models.get(text_encode.FIRST)
    warm = models.get(denoise.WARMUP)
    warm_reused = models.get(denoise.WARMUP_REUSED) or warm
    rows = []
    te = m.stage("text_encode")
    # The official encode's T5 moves are in its own fit (text_encode: measured with them).
    if te is not None and te_gpu is not None and m.plan.text_encoder == "gpu" and m.plan.runtime == "diffusers":
        first = te_first.predict({}) if te_first is not None and first_in_process(m) else 0.0
        rows.append(row("text_encode", te.time_s - te_gpu.predict({}) - first))
    steps, t = m.steps(), denoise.steady_s(m)
    if steps and t is not None:
        w_model = warm if first_in_process(m) else warm_reused
        rows.append(row("denoise", steps[0].time_s - t - (w_model.predict({}) if w_model else 0.0)))
        if (sw := m.switch_step()) is not None:
            rows.append(row("expert_switch", sw.time_s - t))
    dec = m.stage("vae_decode")
    decode_model = models.get(vae_decode.time_key(m.plan.vae_tiling))
    if dec is not None and decode_model is not None:
        rows.append(row("vae_decode", dec.time_s - decode_model.predict(fc.x(m))))
    return rows


# ---- predict -------------------------------------------------------------------------------------


def move_s(pc: PredictContext, moves: Moves) -> float:
    """Time of whole-model moves (fitted per direction, pageable memory). Uploads scale with the
    host's h2d rate. Downloads land in freshly mapped host pages (`module.to("cpu")`), so they run
    at the host's page-fault rate: 1.15-1.37 GB/s in six fresh processes on lent H100 hosts whose
    h2d rate moved 5.8-8.5 GB/s (bench/results/host-copies-h100*.jsonl), as the fits imply (1.3-1.6):
    neither the host link nor the h2d rate sets it, so they stay as calibrated."""
    pageable = pc.cal.feature_ceilings.h2d_pageable_gbps
    x = {"h2d_s": transfer_s(moves.h2d, pageable), "d2h_s": transfer_s(moves.d2h, pageable)}
    m = pc.model(MOVES)
    if m is None:
        if moves.h2d or moves.d2h:
            pc.note("model offload transfers not calibrated: pageable copies at the measured h2d rate")
        terms = x
    else:
        terms = m.terms(x)
    down = terms["d2h_s"]
    if moves.d2h and pc.host_d2h_gbps is not None:  # this host's own rate, measured the same way
        down = transfer_s(moves.d2h, pc.host_d2h_gbps)
        pc.note(f"model offload's moves to host memory at {pc.host_d2h_gbps:.2f} GB/s (this host's rate "
                f"into fresh pageable memory)")
    elif moves.d2h:
        pc.fresh_page_s += down
        pc.note("model offload's moves to host memory at the calibration host's rate into fresh host pages (bound "
                "by mapping them, not by the host link; up to 9x faster on a host that maps pages faster, e.g. with "
                "transparent huge pages: the interval's low end allows it)")
    return terms["h2d_s"] * pc.scale.host_pageable + down + (m.intercept if m is not None else 0.0)


def stage_move_s(pc: PredictContext, stage: str) -> float:
    """Model offload's moves in one stage (0 under other plans)."""
    return move_s(pc, weight_moves(stage, pc.plan, pc.weights))


def init_s(pc: PredictContext) -> float:
    w = pc.weights
    checkpoint = pc.model(INIT_CHECKPOINT)
    if checkpoint is not None:
        # A host property (disk, page cache, host copies): measured on the calibration host, not
        # scaled to the target GPU. What is read is the checkpoint as stored (bf16 DiT and text
        # encoder, fp32 VAE) whatever the plan then casts or quantises; one note for every
        # candidate (the table prints each distinct note once).
        stored = (pc.calibrated_weight("transformer", "bf16") * w.experts
                  + pc.calibrated_weight("text_encoder", "bf16") + w.vae + w.image_encoder)
        pc.note(f"init time: a checkpoint load as measured on the calibration host ({checkpoint.intercept:.1f} s "
                f"+ {checkpoint.coefficients[0]:.2f} s per GiB stored) with the files in its page cache; a "
                f"first load from disk also reads every GiB at the disk's rate; fp8 / int8 conversion not counted")
        return checkpoint.predict({"weights_gib": stored})
    pc.note("init time: CUDA start and building the weights as measured (random weights), not loading "
            "a checkpoint from disk")
    # Several ranks build their copies at the same time: each builds one (their share of the host's memory
    # bandwidth is not modelled; the several-GPU note says the build is not measured with N ranks).
    x = {"weights_gib": built_gib(w), "host_gib": host_ram_gib(pc.plan, w) / pc.plan.gpus,
         "fresh_process": 1.0 if pc.first_in_process else 0.0,
         "int8_gib": w.text_encoder if pc.plan.text_encoder == "int8" else 0.0}
    return max(0.0, pc.value(INIT, 0.0, "init time not calibrated (no point built a pipeline): 0 s", x=x))


def prepare_s(pc: PredictContext) -> float:
    return pc.value(PREPARE, 0.0)
