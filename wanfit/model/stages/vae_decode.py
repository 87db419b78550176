"""The VAE decode: its memory (per-frame feature maps and the decoded video, or the tiles kept for blending)
and its time (convolution-bound work in output pixels x frames, or decoder calls per tile), with
sequential offload's stream of the VAE's weights per latent frame.

A DiT without tiled points of its own borrows the tiled decode of another DiT with the same VAE on the same
GPU (the decode depends on the VAE and the video, not on the DiT: Wan2.1's 1.3B and 14B share one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from wanfit.model.calibration import LinearModel
from wanfit.model.context import FitContext, PredictContext, size_key, stage_transient
from wanfit.model.fitting import Row, fit_constant, fit_linear
from wanfit.model.kernel_classes import decode_on_target, transferred
from wanfit.model.transfer import vae_non_gemm_share
from wanfit.model.weights import (
    Moves,
    WeightsTable,
    analytic_weights_gib,
    measured_resident_gib,
    moved_before_work,
    weight_moves,
)
from wanfit.vocabulary.catalog import get_model
from wanfit.vocabulary.units import transfer_s

if TYPE_CHECKING:
    from wanfit.vocabulary.measurement import Measurement

# ---- the fitted quantities, as named in calibration files -----------------------------------------
PERSISTENT = "decode_persistent"
SEQUENTIAL_EXTRA = "decode_extra:sequential"


def transient_key(tiled: bool) -> str:
    return "decode_transient:tiled" if tiled else "decode_transient:untiled"


def time_key(tiled: bool) -> str:
    return "decode_s:tiled" if tiled else "decode_s:untiled"


def _resident_vae(m: Measurement) -> bool:
    """The VAE stays on the GPU through the decode (no offload, or group offload, which keeps it; the official
    code keeps it there all run)."""
    return m.plan.runtime == "wan" or m.plan.offload in ("none", "group")


def _decode_alone(m: Measurement) -> bool:
    """The decode stage is the decode's work alone: the VAE resident and no weights moving in the stage
    (the official code with --offload_model sends its DiT down just before it)."""
    return m.plan.offload in ("none", "group") if m.plan.runtime == "diffusers" else m.plan.offload == "none"


def tiled_decodes(fc: FitContext) -> tuple[list[Measurement], bool]:
    """Points with a tiled VAE decode (resident VAE), and whether they are borrowed: this DiT's own, else
    those of the other DiTs on this GPU with the same VAE. Not their reservation slack: that follows what
    the process's earlier stages left cached (a 14B's steps left 2.4 GiB above its tiled decode's
    allocations, a 1.3B's 0.6 GiB), so a DiT without tiled points keeps its own denoise slack there."""
    def tiled(ms: list[Measurement]) -> list[Measurement]:
        return [m for m in ms if m.plan.vae_tiling and _decode_alone(m) and m.stage("vae_decode") is not None]

    own = tiled(fc.ms)
    if own:
        return own, False
    same_vae = [m for m in fc.siblings if get_model(m.workload.model).vae_family == fc.spec.vae_family]
    return tiled(same_vae), True


# ---- fit -----------------------------------------------------------------------------------------


def fit_memory(fc: FitContext) -> None:
    persistent = []
    for m in fc.ms:
        dec = m.stage("vae_decode")
        resident = measured_resident_gib(m, "vae_decode")
        if resident is not None and dec is not None and dec.torch_allocated_start_gib is not None:
            start = dec.torch_allocated_start_gib - moved_before_work(m, "vae_decode").d2h
            persistent.append(Row({}, start - resident, size_key(m)))
    fc.put(PERSISTENT, fit_constant(persistent, target="allocated at decode start above the resident weights, GiB",
                                    unit="GiB", held_out=fc.held))
    rows: dict[bool, list[Row]] = defaultdict(list)
    tiled, borrowed = tiled_decodes(fc)
    for m in fc.ms + (tiled if borrowed else []):
        dec = m.stage("vae_decode")
        if dec is not None and _resident_vae(m) and (t := stage_transient(m, dec)) is not None:
            rows[m.plan.vae_tiling].append(Row(fc.x(m), t, size_key(m)))
    fc.put(transient_key(False), fit_linear(rows[False], ["frame_mpix", "video_fp32_gib"], held_out=fc.held,
           target="VAE decode transient (allocated peak - start), GiB", unit="GiB"))
    # No intercept: the tiled grid has two small sizes and one large one; a line through two
    # close points extrapolates wildly, a proportional model does not.
    fc.put(transient_key(True), fit_linear(rows[True], ["tiles_fp32_gib"], intercept=False, held_out=fc.held,
           target="tiled VAE decode transient (allocated peak - start), GiB", unit="GiB"))


def _resident_time_fit(fc: FitContext, ms: list[Measurement], held_out: bool) -> LinearModel | None:
    """The untiled VAE decode with the VAE resident, in output pixels x frames."""
    rows = [Row(fc.x(m), dec.time_s, size_key(m)) for m in ms
            if (dec := m.stage("vae_decode")) is not None and _decode_alone(m) and not m.plan.vae_tiling]
    return fit_linear(rows, ["pixel_gframes"], relative=True, held_out=held_out,
                      target="VAE decode and postprocess (output pixels x frames), s", unit="s")


def fit_time(fc: FitContext, weights: WeightsTable) -> None:
    tiled, borrowed = tiled_decodes(fc)
    tiled_rows = [Row(fc.x(m), m.stage("vae_decode").time_s, size_key(m)) for m in tiled]
    if borrowed and tiled_rows:
        others = ", ".join(sorted({m.workload.model for m in tiled}))
        fc.notes.append(f"VAE tiling not measured here: the tiled decode's time and transient fitted on {others}'s "
                        f"tiled points on the same GPU (the same VAE, {fc.spec.vae_family})")
    fc.put(time_key(False), _resident_time_fit(fc, fc.ms, fc.held))
    fc.put(time_key(True), fit_linear(tiled_rows, ["tile_calls_k"], intercept=False, relative=True, held_out=fc.held,
           target="tiled VAE decode and postprocess (decoder calls: tiles x latent frames), s", unit="s"))
    fc.put(SEQUENTIAL_EXTRA, fit_linear(_sequential_rows(fc, weights), ["vae_stream_s", "decode_s"], intercept=False,
           held_out=fc.held, unit="s",
           target="VAE decode under sequential offload above the resident decode (the VAE's weights streamed "
                  "per latent frame at the session's pageable h2d rate, and a part of the decode's own work), s"))


def _sequential_rows(fc: FitContext, weights: WeightsTable) -> list[Row]:
    """The Wan VAE decodes latent frame by latent frame, and sequential offload copies every leaf's
    weights from pageable memory at each call (waiting for the GPU first, as in the steps). From
    every model's decoded sequential points on this GPU, each against its own VAE's bytes and
    resident decode (fitted here on that model's resident decodes)."""
    def rows_of(ms: list[Measurement], resident: LinearModel, vae_gib: float) -> list[Row]:
        rows = []
        for m in ms:
            dec = m.stage("vae_decode")
            if dec is None or m.plan.offload != "sequential" or m.plan.vae_tiling:
                continue
            x = fc.x(m)
            decode_s = resident.predict(x)
            rows.append(Row({"vae_stream_s": transfer_s(vae_gib * x["latent_frames"], fc.pageable_gbps(m)),
                             "decode_s": decode_s}, dec.time_s - decode_s, size_key(m), ref=dec.time_s))
        return rows

    own = fc.models.get(time_key(False))
    rows = rows_of(fc.ms, own, next(iter(weights["vae"].values())).gib) if own is not None else []
    measured_here = bool(rows)
    for model in sorted({m.workload.model for m in fc.siblings}):
        theirs = [m for m in fc.siblings if m.workload.model == model]
        resident = _resident_time_fit(fc, theirs, held_out=False)
        if resident is not None:
            rows += rows_of(theirs, resident, analytic_weights_gib(get_model(model), "vae", "fp32"))
    if rows and not measured_here:
        fc.notes.append("sequential offload's decode not measured here: fitted on other models' decoded "
                        "sequential points on the same GPU (per VAE bytes and resident decode time)")
    return rows


# ---- predict -------------------------------------------------------------------------------------


def persistent_gib(pc: PredictContext, default: float) -> float:
    return pc.value(PERSISTENT, default)


def _decode_model(pc: PredictContext, key, what: str) -> LinearModel | None:
    """The plan's decode model for `what` (memory / time): the tiled one under VAE tiling, falling back to
    the untiled one (noted); None, noted, when neither was calibrated."""
    tiled = pc.plan.vae_tiling
    m = pc.model(key(tiled))
    if m is None and tiled:
        pc.note(f"VAE tiling {what} not calibrated: the untiled decode's {what} used")
        m = pc.model(key(False))
    if m is None:
        pc.note(f"VAE decode {what} not calibrated")
        return None
    pc.check_range(m)
    return m


def transient_gib(pc: PredictContext) -> float:
    m = _decode_model(pc, transient_key, "memory")
    return max(0.0, m.predict(pc.x)) if m is not None else 0.0


def time_s(pc: PredictContext, host_seconds: Callable[[PredictContext, Moves], float]) -> float:
    """The decode on the target, with the plan's weight traffic: model offload's whole-model moves
    (`host_seconds` of wanfit.model.stages.host) or sequential offload's stream per latent frame."""
    seconds = compute_s(pc)
    if pc.plan.offload == "model":
        seconds += host_seconds(pc, weight_moves("vae_decode", pc.plan, pc.weights))
    elif pc.plan.offload == "sequential":
        # The Wan VAE decodes latent frame by latent frame: every call streams the VAE's leaves.
        stream = transfer_s(pc.weights.vae * pc.x["latent_frames"], pc.cal.feature_ceilings.h2d_pageable_gbps)
        m = pc.model(SEQUENTIAL_EXTRA)
        if m is None:
            pc.note("sequential offload decode not calibrated: the VAE streamed per latent frame at the "
                    "pageable h2d rate")
            seconds += stream * pc.scale.host_pageable
        else:
            terms = m.terms({"vae_stream_s": stream, "decode_s": seconds})
            seconds += terms["vae_stream_s"] * pc.scale.host_pageable + terms["decode_s"]
    return seconds


def compute_s(pc: PredictContext) -> float:
    """The decode's own work on the target (the VAE resident), by kernel class there: the convolutions' implicit
    GEMMs (TF32 tensor cores) by conv3d_vae, the rest of its kernels (norms, SiLU, upsampling, the causal caches'
    copies) like the elementwise chain, in the split measured on the calibrated GPU: about half the kernel time on
    an H100; those kernels ran 1.18-1.20x faster on an H200 where the GEMMs ran 1.01-1.11x
    (bench/results/vae-kernels-*.json)."""
    m = _decode_model(pc, time_key, "time")
    if m is None:
        return 0.0
    share = vae_non_gemm_share(pc.cal, pc.spec.vae_family) if transferred(pc) else None
    return decode_on_target(pc, m.terms(pc.x), m.intercept, share)


# ---- the convolution workspace a card at its limit does without ---------------------------------------------
# torch runs a cuDNN convolution with the first execution plan whose workspace it can allocate and tries the next
# one when that allocation fails (pytorch aten/src/ATen/native/cudnn/Conv_v8.cpp, try_plans catches
# OutOfMemoryError): the fast plans a roomy card picks hold workspace that an untiled decode at a card's limit does
# without, decoding slower. Measured once, for the Wan2.2 VAE: its 1280x704x121 decode capped to an RTX 4090
# (verify-reports/wan2.2-ti2v-5b_1280x704x121f_2of50st_model-tegpu-bf16-untiled_rtx4090-capped.json) ran at
# 22.72 GiB allocated where the roomy decode is predicted at 23.78 (within 0.1 % uncapped at 81 frames), in
# 24.8 s against 20.2 s predicted. A lower bound (it gave up what the cap asked), in proportion to the
# frame's pixels (the workspace follows the top-resolution feature maps). On a real RTX 4090 the official
# README's TI2V-5B 1280x704x121 run (--offload_model True --t5_cpu --convert_model_dtype) peaked at 22.8, where
# wanfit's roomy decode allocates 23.84 GiB: the same 1.04 (its figures are allocated GiB: its 14B rows match
# wanfit's allocated peaks to 1.7 % median, bench/multi_gpu_published.py). Not measured for the Wan2.1 VAE nor
# for tiles: none assumed there. Not counted in the need: said beside a plan it would rescue.
ELASTIC_WORKSPACE_MEASURED = {"wan2.2-vae": (1280 * 704, 1.06)}
ELASTIC_DECODE_SLOWDOWN = 24.77 / 20.20 - 1


def elastic_workspace_gib(pc: PredictContext) -> float:
    """GiB of the untiled decode's allocated peak that is cuDNN workspace a card at its limit does without."""
    measured = ELASTIC_WORKSPACE_MEASURED.get(pc.spec.vae_family)
    if pc.plan.vae_tiling or measured is None:
        return 0.0
    pixels, gib = measured
    return gib * pc.wl.height * pc.wl.width / pixels
