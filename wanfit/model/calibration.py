"""The calibration file: what `wanfit calibrate` fitted for one model on one GPU.

`calibration/<gpu>/<model>.json`, committed beside the raw measurements it was fitted from
(`<model>.measurements.jsonl`). Pure pydantic (no numpy, no sklearn): `wanfit plan` reads these.
Every fitted model is stored as plain numbers — feature names, coefficients, intercept, the
training range of each feature and its held-out error (leave-one-group-out: a group is every
measurement of one workload size, so no size the fit saw is ever scored). Memory in GiB (2**30
bytes), time in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wanfit.vocabulary.catalog import get_model
from wanfit.vocabulary.environment import Ceilings, Environment
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.paths import calibration_dirs
from wanfit.vocabulary.workload import Plan, Runtime, Workload

SCHEMA_VERSION = 1

# Relative slack when deciding whether a feature value lies outside its training range.
RANGE_TOLERANCE = 0.02

Unit = Literal["GiB", "s"]
FindHow = Literal["exact", "dit-family", "other-gpu", "other-dit"]


class HeldOutError(BaseModel):
    """Error of a fit on data it did not see. Percentages are of the measured value."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    method: str  # e.g. "leave-one-group-out (group = workload size), 5 folds"
    folds: int
    mean_abs_pct: float
    worst_abs_pct: float
    mean_abs: float  # in the model's unit
    worst_abs: float
    unit: Unit


class LinearModel(BaseModel):
    """y = intercept + sum(coefficient_i x feature_i), coefficients bounded below by physics
    (`lower_bounds`: 0 for costs that cannot be negative, 1 for work that cannot beat the
    calibrated GPU's measured ceiling)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    target: str  # what it predicts, in words with the unit
    unit: Unit
    features: list[str]
    coefficients: list[float]
    intercept: float = 0.0
    lower_bounds: list[float] = Field(default_factory=list)
    training_range: dict[str, tuple[float, float]] = Field(default_factory=dict)
    n_points: int
    held_out: HeldOutError | None = None  # None when too few groups to hold any out

    def predict(self, x: dict[str, float]) -> float:
        return self.intercept + sum(c * x[f] for f, c in zip(self.features, self.coefficients, strict=True))

    def terms(self, x: dict[str, float]) -> dict[str, float]:
        """Each feature's contribution (cross-GPU transfer scales them one by one)."""
        return {f: c * x[f] for f, c in zip(self.features, self.coefficients, strict=True)}

    def outside_range(self, x: dict[str, float]) -> list[str]:
        """Features whose value lies outside what the fit was trained on."""
        out = []
        for name, (lo, hi) in self.training_range.items():
            value = x.get(name)
            if value is None:
                continue
            if value < lo * (1 - RANGE_TOLERANCE) - 1e-12 or value > hi * (1 + RANGE_TOLERANCE) + 1e-12:
                out.append(name)
        return out


class ComponentWeights(BaseModel):
    """GiB of one component's weights in one variant (dtype / quantisation) on the GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    gib: float
    source: Literal["measured", "analytic"]
    n_points: int = 0


class OomPoint(BaseModel):
    """A measured run that ran out of memory: the need there exceeded the GPU (a lower bound)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    measurement_id: str
    workload: Workload
    plan: Plan
    failed_stage: str | None
    available_gib: float  # the cap when capped, else the device total
    predicted_need_gib: float | None = None  # by this calibration, at the failing stage's peak
    consistent: bool | None = None  # predicted need > available (the fit agrees it could not fit)


class Calibration(BaseModel):
    """Everything `plan` needs to predict one model (and its DiT family) on one GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = SCHEMA_VERSION
    gpu: str  # profile key of the calibrated GPU
    model: str  # catalog key of the calibrated model
    runtime: Runtime = "diffusers"  # the code that ran the measurements (calibration/<gpu>/wan/ for the official one)
    dit_family: str
    environment: Environment
    ceilings: Ceilings | None  # measured on the calibrated GPU (None: not measured)
    feature_ceilings: Ceilings  # the ceilings the time features were computed with
    feature_ceilings_source: str  # "measured" or where the stand-in figures came from
    created_at: str
    wanfit_version: str
    gpu_minutes: float  # wall time of the calibrate sessions that measured this
    measurements_file: str  # relative name of the raw JSONL beside this file
    n_measurements: int
    weights_gib: dict[str, dict[str, ComponentWeights]]  # component -> variant -> weights
    idle_gib: float  # device memory in use before the process touched the GPU (driver baseline)
    context_gib: float  # CUDA context of the process
    non_torch_gib: float  # device memory above the allocator's reservation (lazy-loaded kernels, ...)
    fragmentation_margin_gib: float  # reserved above allocated in steady steps; in the need without expandable segments
    models: dict[str, LinearModel]
    knobs_measured: dict[str, list[str]]  # knob -> values that had measured points
    oom_points: list[OomPoint] = Field(default_factory=list)
    training_ranges: dict[str, tuple[float, float]]  # workload features over the measured points
    notes: list[str] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.gpu}/{self.model}" if self.runtime == "diffusers" else f"{self.gpu}/{self.runtime}/{self.model}"

    def weight(self, component: str, variant: str) -> ComponentWeights | None:
        return self.weights_gib.get(component, {}).get(variant)


def _bad_file(path: Path, why: str) -> WanfitError:
    from wanfit.model.calibration_checks import path_identity

    gpu, model, runtime = path_identity(path)
    root = path.parent if runtime == "diffusers" else path.parent.parent
    flag = "" if runtime == "diffusers" else f" --runtime {runtime}"
    return WanfitError(f"calibration file {path} is unusable ({why}): refit it from its measurements with "
                       f"`wanfit calibrate --fit-only --gpu {gpu} --model {model}{flag} --out {root.parent}`, "
                       f"or delete it")


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime_ns: int, size: int) -> Calibration:
    from wanfit.model.calibration_checks import calibration_problem, first_non_finite

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _bad_file(p, type(error).__name__) from None
    if not isinstance(data, dict):
        raise _bad_file(p, "not a JSON object")
    if data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise _bad_file(p, f"schema version {data.get('schema_version')}, this wanfit reads {SCHEMA_VERSION}")
    if (where := first_non_finite(data)) is not None:
        raise _bad_file(p, where)
    try:
        cal = Calibration.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise _bad_file(p, f"{error.error_count()} invalid field(s), first {where}: {first['msg']}") from None
    if (problem := calibration_problem(cal, p)) is not None:
        raise _bad_file(p, problem)
    return cal


def load_calibration(path: Path) -> Calibration:
    """Read and validate a calibration file (calibration_checks: finite, well-shaped, physically possible,
    matching its path); a bad file is a one-line WanfitError naming the file and the refit to run."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise WanfitError(f"calibration file {p} does not exist: run `wanfit calibrate` to make it") from None
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def save_calibration(cal: Calibration, path: Path) -> None:
    """Write atomically (a crash never leaves a half-written calibration)."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cal.model_dump(mode="json"), indent=1) + "\n")
        os.replace(tmp, p)
    except OSError as error:
        with contextlib.suppress(OSError):  # the directory itself may be what cannot be written
            tmp.unlink(missing_ok=True)
        raise WanfitError(f"cannot write calibration file {p} ({error.strerror or type(error).__name__}): "
                          f"pass a directory you can write to with --out") from None


def runtime_dir(gpu_dir: Path, runtime: Runtime) -> Path:
    """Where a runtime's calibrations of one GPU live: <gpu>/ for diffusers, <gpu>/<runtime>/ otherwise."""
    return gpu_dir if runtime == "diffusers" else gpu_dir / runtime


def _candidate_files(dirs: list[Path], runtime: Runtime = "diffusers") -> list[tuple[str, str, Path]]:
    """(gpu, model, path) of every calibration file of a runtime, the first directory winning per (gpu, model)."""
    seen: dict[tuple[str, str], Path] = {}
    pattern = "*/*.json" if runtime == "diffusers" else f"*/{runtime}/*.json"
    for d in dirs:
        if not Path(d).is_dir():
            continue
        for path in sorted(Path(d).glob(pattern)):
            if path.name.endswith(".measurements.json") or path.name == "ceilings.json":
                continue
            gpu = path.parent.name if runtime == "diffusers" else path.parent.parent.name
            seen.setdefault((gpu, path.stem), path)
    return [(gpu, model, path) for (gpu, model), path in seen.items()]


def _gpu_distance(target: str, other: str) -> tuple:
    """How far another GPU is from the target, for picking a calibration to transfer from (the nearest first):
    the same architecture first; then the nearest compute capability (|major.minor difference|: an L40S, 8.9, is
    nearer an RTX 4090, 8.9, than an A100, 8.0); then the smallest |ln GEMM rate ratio| + |ln memory bandwidth
    ratio| (the two rates a Wan step is bound by); then the name."""
    import math

    try:
        from wanfit.vocabulary.profiles import get_profile

        t, o = get_profile(target), get_profile(other)
    except Exception:  # an unprofiled calibration GPU still works, ranked last
        return (2, math.inf, math.inf, other)
    same_arch = 0 if t.architecture == o.architecture else 1
    cc = abs(float(t.compute_capability) - float(o.compute_capability))

    def gemm(p) -> float | None:
        rate = p.rate("gemm_bf16")
        return rate.value if rate is not None else p.bf16_dense_tflops

    def log_ratio(a: float | None, b: float | None) -> float:
        return abs(math.log(a / b)) if a and b else math.inf

    rates = log_ratio(gemm(t), gemm(o)) + log_ratio(t.memory_bandwidth_gbps, o.memory_bandwidth_gbps)
    return (same_arch, round(cc, 3), rates, other)


@lru_cache(maxsize=64)
def _calibrated_gpus(dirs: tuple[Path, ...], runtime: Runtime, family: str, target: str) -> tuple[str, ...]:
    """The GPUs calibrated for a DiT family under a runtime in `dirs`, nearest to `target` first."""
    files = _candidate_files(list(dirs), runtime) if runtime != "diffusers" else _candidate_files(list(dirs))
    gpus = {gpu for gpu, model, _ in files if _family(model) == family}
    return tuple(sorted(gpus, key=lambda g: _gpu_distance(target, g)))


# The calibration directories each calibration was found in (by label), for the run corrections beside them.
_SEARCHED: dict[str, tuple[Path, ...]] = {}


def correction_dirs(cal: Calibration) -> list[Path]:
    """Where run corrections of a target GPU are looked for: the directories the calibration was found in, else
    the default ones (--calibration-dir, WANFIT_CALIBRATION_DIR, the shipped calibrations)."""
    return list(_SEARCHED.get(cal.label) or calibration_dirs())


def nearest_note(cal: Calibration, target: str) -> str | None:
    """Which calibrated GPU a transfer comes from when several are calibrated for this DiT and runtime, and by
    what rule (None when only one is)."""
    ranked = _calibrated_gpus(tuple(correction_dirs(cal)), cal.runtime, cal.dit_family, target)
    if len(ranked) < 2:
        return None
    gpus = ranked
    return (f"{len(gpus)} GPUs calibrated for this DiT ({', '.join(ranked)}, nearest first): transferred from "
            f"{cal.gpu}, the nearest to {target} by architecture, then compute capability, then GEMM and memory "
            f"bandwidth")


def find_calibration(gpu_key: str, model_key: str, dirs: list[Path] | None = None,
                     runtime: Runtime = "diffusers") -> tuple[Calibration, FindHow]:
    """The calibration to predict `model_key` run by `runtime` on `gpu_key`: the runtime's own calibrations
    (see _find_in: another DiT's under the same runtime carries over through FLOPs and shapes, 3-12 % on the
    H100, closer than the same DiT under another runtime, 10-30 %); without any calibration of the runtime,
    the diffusers ones (the prediction then says so and widens its interval)."""
    dirs = calibration_dirs() if dirs is None else dirs
    cal, how = _find(gpu_key, model_key, dirs, runtime)
    _SEARCHED[cal.label] = tuple(dirs)
    return cal, how


def _find(gpu_key: str, model_key: str, dirs: list[Path], runtime: Runtime) -> tuple[Calibration, FindHow]:
    if runtime != "diffusers" and (files := _candidate_files(dirs, runtime)):
        return _find_in(files, gpu_key, model_key)
    return _find_in(_candidate_files(dirs), gpu_key, model_key)


def _find_in(files: list[tuple[str, str, Path]], gpu_key: str, model_key: str) -> tuple[Calibration, FindHow]:
    """The calibration among `files` to predict `model_key` on `gpu_key`, and how it was found:
    `exact` (this GPU, this model), `dit-family` (this GPU, a model with the same DiT, e.g. the
    Wan2.1-T2V-14B calibration for Wan2.2-T2V-A14B's experts), `other-gpu` (this model or its DiT
    family measured on another GPU: time is transferred) or `other-dit` (no calibration of this DiT:
    the nearest one's, carried over). No calibration at all: one-line error."""
    spec = get_model(model_key)
    family = {key for _, key, _ in files if _family(key) == spec.dit_family}

    def pick(gpus: set[str] | None, models: set[str]) -> list[tuple[str, str, Path]]:
        return [f for f in files if (gpus is None or f[0] in gpus) and f[1] in models]

    exact = pick({gpu_key}, {spec.key})
    if exact:
        return load_calibration(exact[0][2]), "exact"
    same_gpu = pick({gpu_key}, family)
    if same_gpu:
        return load_calibration(same_gpu[0][2]), "dit-family"
    others = pick(None, family | {spec.key})
    if others:
        ranked = sorted(others, key=lambda f: (f[1] != spec.key, _gpu_distance(gpu_key, f[0]), f[1]))
        return load_calibration(ranked[0][2]), "other-gpu"
    # No calibration of this DiT anywhere: the nearest DiT by size, this GPU first. The fits are on
    # physics-shaped features (FLOPs, counted traffic, hidden-state bytes), which carry between the
    # shipped DiTs within 3 % (step) and 7.4 % (peak) (docs/accuracy.md, carry-over).
    other_dits = [f for f in files if _family(f[1]) not in (None, spec.dit_family)]
    if other_dits:
        ranked = sorted(other_dits, key=lambda f: (_dit_distance(spec, f[1]), f[0] != gpu_key,
                                                   _gpu_distance(gpu_key, f[0]), f[1]))
        return load_calibration(ranked[0][2]), "other-dit"
    target = _calibratable(spec.key, spec.dit_family)
    raise WanfitError(f"no calibration covers {spec.key} (DiT family {spec.dit_family}) on any GPU: run "
                      f"`wanfit calibrate --gpu {gpu_key} --model {target}` on that GPU, or point "
                      f"--calibration-dir at a directory that has one")


def _dit_distance(spec, other_key: str) -> float:
    import math

    return abs(math.log(spec.params.dit_per_expert / get_model(other_key).params.dit_per_expert))


def source_note(model_key: str, cal: Calibration) -> str | None:
    """What a prediction from another model's calibration rests on; None for the model's own."""
    if cal.model == model_key:
        return None
    spec = get_model(model_key)
    if spec.dit_family == cal.dit_family:
        return f"predicted from the {cal.model} calibration (same DiT: {cal.dit_family})"
    runtime = "" if cal.runtime == "diffusers" else f" of the {cal.runtime} runtime"
    return (f"predicted from the {cal.label} calibration: no calibration{runtime} has the {spec.dit_family} DiT; "
            f"carried over through its FLOPs and shapes (wider interval)")


def _calibratable(model_key: str, family: str) -> str:
    """The model `wanfit calibrate` measures for a DiT family (models sharing a DiT share it)."""
    try:
        from wanfit.model.calibration_grid import GRIDS
    except Exception:  # the measuring side is not installed: name the model itself
        return model_key
    if model_key in GRIDS:
        return model_key
    return next((k for k in GRIDS if _family(k) == family), model_key)


def _family(model_key: str) -> str | None:
    try:
        return get_model(model_key).dit_family
    except WanfitError:
        return None
