"""Held-out errors of one shipped calibration, for bench/accuracy.py.

Leave-one-size-out: every measurement of one workload size (all its plans, and the reset-check
repeat) is removed, the calibration is refitted from the rest as `wanfit calibrate` fits it, and the
removed measurements are predicted. A knob measured at the removed size only falls back to its
analytic estimate: those points are scored apart (`knob fallbacks`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from wanfit.model.calibration import Calibration
from wanfit.model.fit import fit_calibration, size_key
from wanfit.model.predict import Prediction, predict
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.measurement import Measurement, fastest_steady_step_s
from wanfit.vocabulary.workload import Plan

# The words of the notes wanfit.model.predict adds where a knob had no calibrated value at hand and
# its prediction fell back to the analytic estimate.
FALLBACK_NOTE_MARKERS = ("not calibrated", "not measured")
# Stages a measurement records but the peak is not scored over: `init` builds random weights before
# placement (no checkpoint load to compare with), `total` spans the whole run.
UNSCORED_PEAK_STAGES = ("init", "total")
OFFLOAD_MODES = ("none", "model", "group", "sequential")  # the order the by-offload table lists them in


@dataclass
class Errors:
    """Signed relative errors (%) of one figure over the points scored."""

    values: list[float] = field(default_factory=list)
    deltas: list[float] = field(default_factory=list)  # predicted - measured, in the figure's unit

    def add(self, predicted: float | None, measured: float | None) -> None:
        if predicted is not None and measured:
            self.values.append(100.0 * (predicted - measured) / measured)
            self.deltas.append(predicted - measured)

    def summary(self, absolute_unit: str | None = None) -> str:
        """'mean / worst absolute error (n=points)', in % or, given a unit, in that unit."""
        if not self.values:
            return "-"
        if absolute_unit:  # tiny figures (a 0.1 s text encode): the error in its unit says more
            deltas = [abs(v) for v in self.deltas]
            return f"{statistics.mean(deltas):.2f} / {max(deltas):.2f} {absolute_unit} (n={len(deltas)})"
        percents = [abs(v) for v in self.values]
        return f"{statistics.mean(percents):.1f} / {max(percents):.1f} % (n={len(percents)})"


@dataclass
class PeakAndStep:
    """The device peak's and the steady step's errors over one set of points."""

    peak: Errors = field(default_factory=Errors)
    step: Errors = field(default_factory=Errors)


@dataclass
class HeldOutScores:
    """What leave-one-size-out scored for one calibration (GPU/model)."""

    label: str
    sizes: int
    points: int
    calibrated: PeakAndStep = field(default_factory=PeakAndStep)  # knobs calibrated without the removed size
    fallback: PeakAndStep = field(default_factory=PeakAndStep)  # knobs that fell back to the analytic estimate
    by_offload: dict[str, PeakAndStep] = field(default_factory=dict)  # offload mode -> calibrated knobs only
    text_encode: Errors = field(default_factory=Errors)
    vae_decode: Errors = field(default_factory=Errors)
    details: list[tuple[tuple, str]] = field(default_factory=list)  # (size, line) of every prediction


def device_peaks(prediction: Prediction, m: Measurement) -> tuple[float | None, float | None]:
    """(predicted, measured) device-level peak over the stages the measurement ran."""
    ran = [s for s in m.stages if s.name not in UNSCORED_PEAK_STAGES]
    seen = {"denoise" if s.name == "step" else s.name for s in ran}  # the runner records denoising per step
    measured = max((s.device_used_peak_gib for s in ran if s.device_used_peak_gib is not None), default=None)
    return max((s.peak_vram_gib for s in prediction.stages if s.name in seen), default=None), measured


def fell_back(prediction: Prediction) -> bool:
    """Whether some knob of the prediction fell back to its analytic estimate."""
    return any(marker in note for note in prediction.notes for marker in FALLBACK_NOTE_MARKERS)


def held_out_scores(label: str, ms: list[Measurement], gpu: str, model: str, ceilings: Ceilings | None,
                    siblings: list[Measurement], session_pageable: dict[str, float]) -> HeldOutScores:
    """Leave-one-size-out over the measurements of one calibration (refitted as `wanfit calibrate`
    fits it: the other DiTs' baseline steps on the same GPU join the step-time fit). A point whose
    session measured its machine's pageable host-to-device rate is predicted at that rate (`wanfit plan
    --host-pageable-gbps`): lent H100s differ there by 1.4x, which sequential offload's step follows.
    Each point is predicted as its process's first point or a later one, as it ran."""
    ok = [m for m in ms if m.status == "ok"]
    sizes = sorted({size_key(m) for m in ok}, key=repr)
    scores = HeldOutScores(label=label, sizes=len(sizes), points=len(ok))
    for size in sizes:
        try:
            calibration = fit_calibration([m for m in ms if size_key(m) != size], gpu, model, ceilings,
                                          gpu_minutes=0.0, held_out=False, step_siblings=siblings,
                                          session_pageable=session_pageable)
        except Exception as error:  # too little left to fit (e.g. the only multi-step size)
            scores.details.append((size, f"not refittable without this size: {error}"))
            continue
        for m in ok:
            if size_key(m) == size:
                _score_point(scores, size, m, calibration, session_pageable.get(m.id))
    return scores


def _score_point(scores: HeldOutScores, size: tuple, m: Measurement, calibration: Calibration,
                 host_pageable_gbps: float | None) -> None:
    """Predict one held-out measurement as it ran and add its errors to `scores`."""
    prediction = predict(m.workload, m.plan, calibration, host_pageable_gbps=host_pageable_gbps,
                         first_in_process=bool(m.first_in_process))
    analytic = fell_back(prediction)
    predicted_peak, measured_peak = device_peaks(prediction, m)
    measured_step = fastest_steady_step_s(m.steps())
    groups = [scores.fallback] if analytic else [scores.calibrated,
                                                 scores.by_offload.setdefault(m.plan.offload, PeakAndStep())]
    for group in groups:
        group.peak.add(predicted_peak, measured_peak)
        group.step.add(prediction.step_s, measured_step)
    text_encode = m.stage("text_encode")
    if text_encode is not None and not analytic:
        scores.text_encode.add(prediction.stage("text_encode").time_s, text_encode.time_s)
    decode = m.stage("vae_decode")
    if decode is not None:
        predicted_decode_s = prediction.stage("vae_decode").time_s
        scores.vae_decode.add(predicted_decode_s, decode.time_s)
        scores.details.append((size, f"  decode {predicted_decode_s:.2f} vs {decode.time_s:.2f} s"))
    step_shown = measured_step if measured_step is None else round(measured_step, 3)
    scores.details.append((size, f"{m.plan.label()}: peak {predicted_peak:.2f} vs {measured_peak:.2f} GiB, step "
                                 f"{prediction.step_s:.3f} vs {step_shown} s{' *' if analytic else ''}"))


def model_offload_decode_notes(label: str, ms: list[Measurement]) -> list[str]:
    """Model offload's decode carries the DiT's move to host memory: on the lent GPU machine (a VM
    whose host memory is handed over on first touch) that move is far slower than the measured
    pageable copy rate, and leaving that size out leaves the fit without it. Say so, from the data."""
    notes = []
    plain_decode_s = {size_key(m): m.stage("vae_decode").time_s for m in ms
                      if m.plan == Plan() and m.stage("vae_decode") is not None}
    for m in ms:
        decode = m.stage("vae_decode")
        if m.plan.offload != "model" or decode is None or size_key(m) not in plain_decode_s:
            continue
        w = m.workload
        notes.append(f"- {label} {w.width}x{w.height}x{w.frames}: VAE decode under model offload took "
                     f"{decode.time_s:.1f} s against {plain_decode_s[size_key(m)]:.1f} s without offload (the DiT "
                     f"leaves the GPU first); it is the only model-offload decode of its size, so the "
                     f"leave-one-size-out fold predicts it without any measured offload move.")
    return notes
