"""Carry-over, for bench/accuracy.py: how well a calibration fitted on one DiT predicts another DiT
it never saw, on the same GPU."""

from __future__ import annotations

from dataclasses import dataclass

from accuracy_held_out import PeakAndStep, device_peaks

from wanfit.model.fit import fit_calibration
from wanfit.model.predict import predict
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.measurement import Measurement, fastest_steady_step_s
from wanfit.vocabulary.workload import Plan


@dataclass
class CarryOver:
    """One model's fit predicting another model's baseline points."""

    label: str  # "GPU: fitted-on model -> predicted model"
    errors: PeakAndStep


def carry_over(gpu: str, source_model: str, source_ms: list[Measurement], target_model: str,
               target_ms: list[Measurement], ceilings: Ceilings | None) -> CarryOver:
    """Fit every model of one model's measurements, predict another model's baseline points on the
    same GPU (bf16 DiT, no offload): the steady step's and the device peak's signed errors."""
    calibration = fit_calibration(source_ms, gpu, source_model, ceilings, gpu_minutes=0.0, held_out=False)
    errors = PeakAndStep()
    for m in target_ms:
        if m.status != "ok" or m.plan != Plan():
            continue
        prediction = predict(m.workload, m.plan, calibration)
        if (measured_step := fastest_steady_step_s(m.steps())) is not None:
            errors.step.add(prediction.step_s, measured_step)
        errors.peak.add(*device_peaks(prediction, m))
    return CarryOver(f"{gpu}: {source_model} -> {target_model}", errors)
