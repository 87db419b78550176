"""A light calibration of one GPU from one measured run: the file `wanfit calibrate --from-run` writes.

`<calibration dir>/<gpu>/corrections/<model>.json`: how much longer (factor > 1) or shorter the run's denoising
step and VAE decode took on that GPU than wanfit's pure cross-GPU transfer predicted for the same workload and
plan. Predictions for that GPU apply the factors to the classes of each stage before anything else and name the
file in a note. Pure Python (pydantic + json): read on the `plan` path.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wanfit.vocabulary.errors import WanfitError

CORRECTIONS_DIR = "corrections"
SCHEMA_VERSION = 1


class RunFigures(BaseModel):
    """What the run measured and what the pure transfer predicted for it (seconds, GiB)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step_s: float = Field(gt=0)
    decode_s: float | None = Field(default=None, gt=0)
    peak_allocated_gib: float | None = Field(default=None, ge=0)
    predicted_step_s: float = Field(gt=0)
    predicted_decode_s: float | None = Field(default=None, gt=0)
    predicted_peak_allocated_gib: float | None = Field(default=None, ge=0)


class RunCorrection(BaseModel):
    """Per-stage (and per-class) factors one measured run identifies on one GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    gpu: str
    model: str
    runtime: Literal["diffusers", "wan"]
    calibration: str = Field(description="the calibration the pure transfer came from, <gpu>/<model>")
    workload: dict
    plan: dict
    step_factor: float = Field(gt=0, description="measured / predicted steady step")
    decode_factor: float | None = Field(default=None, gt=0, description="measured / predicted VAE decode")
    class_factors: dict[str, float] = Field(
        description="the factor each kernel class of the run takes (the step's classes the step factor, the "
                    "decode's convolutions the decode factor, the elementwise chain their time-weighted blend)")
    figures: RunFigures
    source: str = Field(description="the run file this came from")
    environment: dict = Field(default_factory=dict, description="what the run recorded of its machine")
    created_at: str
    wanfit_version: str


def correction_path(calibration_dir: Path, gpu: str, model: str) -> Path:
    return Path(calibration_dir) / gpu / CORRECTIONS_DIR / f"{model}.json"


def save_correction(correction: RunCorrection, calibration_dir: Path) -> Path:
    path = correction_path(calibration_dir, correction.gpu, correction.model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(correction.model_dump_json(indent=2) + "\n")
    except OSError as exc:
        raise WanfitError(f"cannot write {path}: {exc.strerror or exc}; choose a writable calibration directory "
                          f"(--out / WANFIT_CALIBRATION_DIR)") from None
    return path


@functools.lru_cache(maxsize=64)
def _load(path: str, mtime_ns: int) -> RunCorrection:
    try:
        return RunCorrection.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise WanfitError(f"corrupt run correction {path}: {str(exc).splitlines()[0]}; delete it or write it again "
                          f"with `wanfit calibrate --gpu GPU --from-run FILE`") from None


def corrections_for(gpu: str, dirs: list[Path]) -> list[tuple[Path, RunCorrection]]:
    """Every correction of `gpu` in `dirs` (the first directory wins per model), most specific directory first."""
    folders = tuple(Path(d) / gpu / CORRECTIONS_DIR for d in dirs)
    stamps = tuple(f.stat().st_mtime_ns if f.is_dir() else None for f in folders)
    return list(_corrections_in(folders, stamps))


@functools.lru_cache(maxsize=64)
def _corrections_in(folders: tuple[Path, ...], stamps: tuple[int | None, ...]) -> tuple[tuple[Path, RunCorrection], ...]:
    found: dict[str, tuple[Path, RunCorrection]] = {}
    for folder, stamp in zip(folders, stamps, strict=True):
        if stamp is None:
            continue
        for path in sorted(folder.glob("*.json")):
            found.setdefault(path.stem, (path, _load(str(path), path.stat().st_mtime_ns)))
    return tuple(found.values())
