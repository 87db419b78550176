"""Shared inputs of the planner tests: real H100 measurements and the calibration fitted from them.

tests/fixtures/h100-wan2.2-ti2v-5b.measurements.jsonl is a copy of the first H100 calibration run of
Wan2.2-TI2V-5B (calibration/h100/wan2.2-ti2v-5b.measurements.jsonl, 2026-11-23, 23 points; its two group-offload
points re-measured the same day with the text encoder offloaded leaf by leaf) with the
memory timelines dropped to keep it small; tests/fixtures/h100-ceilings.json is that run's measured
ceilings. Both are measurements, copied unchanged otherwise.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from wanfit.model.calibration import Calibration, save_calibration
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.measurement import Measurement
from wanfit.vocabulary.measurements_file import load_measurements

FIXTURES = Path(__file__).parent / "fixtures"
SHIPPED_H100 = Path(__file__).resolve().parents[1] / "calibration" / "h100"  # the shipped H100 measurements
MEASUREMENTS = FIXTURES / "h100-wan2.2-ti2v-5b.measurements.jsonl"
CEILINGS = FIXTURES / "h100-ceilings.json"
MODEL = "wan2.2-ti2v-5b"
GPU = "h100"


@cache
def measurements() -> tuple[Measurement, ...]:
    return tuple(load_measurements(MEASUREMENTS))


@cache
def ceilings() -> Ceilings:
    return Ceilings.model_validate(json.loads(CEILINGS.read_text())["ceilings"])


@cache
def calibration() -> Calibration:
    from wanfit.model.fit import fit_calibration

    return fit_calibration(list(measurements()), GPU, MODEL, ceilings(), 6.2)


def calibration_dir(tmp: Path, cal: Calibration | None = None, gpu: str = GPU) -> Path:
    """A calibration directory <tmp>/<gpu>/<model>.json holding `cal` (default: the H100 5B fit)."""
    cal = cal or calibration()
    save_calibration(cal, tmp / gpu / f"{cal.model}.json")
    return tmp


def as_family_calibration(model: str, gpu: str = GPU) -> Calibration:
    """The 5B calibration relabelled as another model's (for composition tests of models whose
    DiT has no measurements here, e.g. a two-expert A14B through the 14B family). Not a prediction
    of that model's numbers: only the plan arithmetic is under test."""
    from wanfit.vocabulary.catalog import get_model

    spec = get_model(model)
    return calibration().model_copy(update={"model": model, "dit_family": spec.dit_family, "gpu": gpu})
