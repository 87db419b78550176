"""Fit a calibration from measurements: every stage module's fits, in the order their inputs need.

Needs scikit-learn (through wanfit.model.fitting); `wanfit plan` never imports this module. What each
stage fits is in its module (wanfit.model.stages); this module runs them and assembles the calibration
file. A knob never measured gets no model: the predictor falls back to its analytic estimate and says so.
OOM measurements are kept: each is checked against the fitted need (a lower bound on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from wanfit import __version__
from wanfit.model.calibration import Calibration, OomPoint
from wanfit.model.context import FitContext, size_key
from wanfit.model.predict import predict
from wanfit.model.stages import allocator, denoise, host, text_encode, vae_decode
from wanfit.model.weights import measured_weights
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement

__all__ = ["check_ooms", "fit_calibration", "size_key"]

# Fits whose absence the calibration names (the predictor then uses an analytic estimate, marked).
UNCALIBRATED_FALLBACKS = (*denoise.UNCALIBRATED_FALLBACKS, vae_decode.SEQUENTIAL_EXTRA, *host.UNCALIBRATED_FALLBACKS,
                          vae_decode.time_key(tiled=True), *text_encode.UNCALIBRATED_FALLBACKS)
# Workload features whose measured range a calibration records (a query outside is extrapolated).
RANGE_FEATURES = ("tokens", "frames", "frame_mpix", "pixel_gframes", "hidden_state_gib")


def fit_calibration(measurements: list[Measurement], gpu: str, model: str, ceilings, gpu_minutes: float, *,
                    held_out: bool = True, measurements_file: str | None = None,
                    step_siblings: list[Measurement] | None = None,
                    session_pageable: Mapping[str, float] | None = None) -> Calibration:
    """Fit every model of one calibration from its measurements (`ceilings`: measured on the GPU, or None).
    `step_siblings`: other DiTs' measurements on the same GPU, whose baseline steps join the
    step-time fit (its features carry between DiTs; see docs/accuracy.md, carry-over).
    `session_pageable`: {measurement id: pageable h2d GB/s measured in its session}
    (measurements_file.gpu_session_pageable_gbps); sequential offload's stream time of those points is
    computed at their own machine's rate instead of the calibration's ceilings."""
    fc = FitContext(measurements, gpu, model, ceilings, held_out, step_siblings or [], session_pageable or {})
    weights = measured_weights(fc)
    idle, ctx, non_torch = allocator.fit_outside_memory(fc)
    denoise.fit_memory(fc, weights)
    vae_decode.fit_memory(fc)
    text_encode.fit_memory(fc)
    frag = allocator.fit_reservation(fc, weights)
    denoise.fit_time(fc, weights)
    vae_decode.fit_time(fc, weights)
    text_encode.fit_time(fc, weights)
    host.fit_prepare_and_init(fc, weights)
    host.fit_moves(fc, weights)
    _closing_notes(fc)
    cal = Calibration(
        gpu=gpu, model=model, runtime=_runtime(fc), dit_family=fc.spec.dit_family, environment=_environment(fc),
        ceilings=ceilings,
        feature_ceilings=fc.fc, feature_ceilings_source=fc.fc_source,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), wanfit_version=__version__,
        gpu_minutes=round(gpu_minutes, 2), measurements_file=measurements_file or f"{model}.measurements.jsonl",
        n_measurements=len(fc.all), weights_gib=weights, idle_gib=idle, context_gib=ctx, non_torch_gib=non_torch,
        fragmentation_margin_gib=frag, models=fc.models, knobs_measured=_knobs(fc),
        training_ranges=_training_ranges(fc), notes=fc.notes,
    )
    return cal.model_copy(update={"oom_points": check_ooms(cal, fc.ooms)})


def _closing_notes(fc: FitContext) -> None:
    if fc.borrowed_te:
        others = ", ".join(sorted({m.workload.model for m in fc.te_siblings}))
        fc.notes.append(f"text encoder (the same UMT5-XXL) not measured here for: {', '.join(sorted(fc.borrowed_te))}; "
                        f"taken from {others} on the same GPU")
    if fc.errors:
        fc.notes.append(f"{len(fc.errors)} measurement(s) ended in an error (not memory) and were left out")
    missing = [k for k in UNCALIBRATED_FALLBACKS if k not in fc.models]
    if missing:
        fc.notes.append("not calibrated (analytic estimates, marked in predictions): " + ", ".join(missing))


def _runtime(fc: FitContext) -> str:
    """The runtime every point of the calibration ran (a calibration is of one runtime)."""
    runtimes = sorted({m.plan.runtime for m in fc.all})
    if len(runtimes) != 1:
        raise WanfitError(f"the {fc.model_key} measurements mix runtimes ({', '.join(runtimes)}): keep each "
                          f"runtime's in its own directory (calibration/<gpu>/ and calibration/<gpu>/<runtime>/)")
    return runtimes[0]


def _training_ranges(fc: FitContext) -> dict[str, tuple[float, float]]:
    base = [fc.x(m) for m in fc.ms if m.status == "ok" and m.plan.dit_dtype == "bf16"]
    return {f: (min(x[f] for x in base), max(x[f] for x in base)) for f in RANGE_FEATURES if base}


def _knobs(fc: FitContext) -> dict[str, list[str]]:
    seen: dict[str, set[str]] = {}
    for m in fc.ms:
        for k, v in [*m.plan.knobs().items(), ("expandable_segments", m.plan.expandable_segments)]:
            seen.setdefault(k, set()).add(str(v).lower())
    return {k: sorted(v) for k, v in sorted(seen.items())}


def _environment(fc: FitContext) -> Environment:
    """The environment of the GPU most of the successful points ran on."""
    ok = [m for m in fc.ms if m.status == "ok"]
    names = [m.environment.gpu_name for m in ok]
    common = max(set(names), key=names.count)
    return next(m.environment for m in ok if m.environment.gpu_name == common)


def check_ooms(cal: Calibration, ooms: list[Measurement]) -> list[OomPoint]:
    """Each OOM measurement beside the need the fit predicts at the stage that failed."""
    out = []
    for m in ooms:
        available = m.environment.memory_cap_gib or m.environment.gpu_total_gib
        stage = (m.failed_stage or "").split(" ")[0]
        stage = {"step": "denoise", "done": "vae_decode"}.get(stage, stage)
        need = None
        try:
            pred = predict(m.workload, m.plan, cal)
            st = pred.stage(stage) or next(s for s in pred.stages if s.name == pred.binding_stage)
            need = st.need_gib
        except WanfitError:
            pass
        out.append(OomPoint(measurement_id=m.id, workload=m.workload, plan=m.plan, failed_stage=m.failed_stage,
                            available_gib=available, predicted_need_gib=need,
                            consistent=None if need is None else need > available))
    return out
