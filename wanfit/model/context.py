"""The working state every stage module receives: a FitContext while a calibration is fitted, a
PredictContext while one workload + plan is predicted from it.

Stage modules (wanfit.model.stages) hold both halves of each per-stage model; these two objects are what
those halves share: the measurements and the models fitted so far, or the calibration, the target GPU's
time scales and the notes collected. Pure Python (no numpy, no sklearn).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from wanfit.model.calibration import Calibration, LinearModel
from wanfit.model.features import size_features
from wanfit.model.fitting import Group, Row
from wanfit.model.transfer import TimeScale, profile_or_none, time_scale
from wanfit.model.weights import Weights, component_weight, moved_before_work, plan_weights
from wanfit.vocabulary.catalog import ModelSpec, get_model
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.profiles import get_profile
from wanfit.vocabulary.units import transfer_s
from wanfit.vocabulary.workload import Plan, Workload

if TYPE_CHECKING:  # the fit reads measurements; `plan` never loads their format
    from wanfit.vocabulary.measurement import Measurement, StageRecord

# Stand-in ceilings when neither measured ceilings nor a profile of the calibrated GPU exist:
# the time coefficients are then plain seconds per unit of work and do not transfer.
NOMINAL = Ceilings(matmul_tflops=100.0, attention_tflops=100.0, device_copy_gbps=1000.0,
                   h2d_pinned_gbps=25.0, h2d_pageable_gbps=10.0)
# A stage whose allocated peak stays within this of its start allocated nothing above it (the allocator's
# rounding is 2 MiB blocks; a real stage's work allocates hundreds of MiB).
CENSORED_TRANSIENT_GIB = 0.01
# Baseline sizes of its own from which an official-code DiT fits its step alone (FitContext.step_siblings).
OWN_STEP_SIZES = 3


# ---- reading measurements -------------------------------------------------------------------


def size_key(m: Measurement) -> Group:
    """The held-out group of a measurement: its workload size (every plan measured at it)."""
    w = m.workload
    return (w.model, w.height, w.width, w.frames, w.batch)


def transient(s: StageRecord) -> float | None:
    """What a stage allocated above what it started with (allocated peak - start), GiB."""
    if s.torch_peak_allocated_gib is None or s.torch_allocated_start_gib is None:
        return None
    return s.torch_peak_allocated_gib - s.torch_allocated_start_gib


def stage_transient(m: Measurement, s: StageRecord) -> float | None:
    """What a stage's own work allocated: its transient, less the weights moved up inside the stage before
    the work and plus those moved down (an official-code run moves whole models at fixed points)."""
    t = transient(s)
    if t is None or (s.name == "step" and s.index != 1):
        return t
    before = moved_before_work(m, "denoise" if s.name == "step" else s.name)
    if before.d2h > 0 and t <= CENSORED_TRANSIENT_GIB:
        # The stage's peak is its start: the weights sent down held more than its work then allocated
        # (the official A14B under --offload_model: a 26.6 GiB expert leaves, the 480p decode takes 8.0),
        # so the work's own transient is only known to be under the moved weights: not a data point.
        return None
    return t - before.h2d + before.d2h


def official_cfg(plan: Plan) -> bool:
    """The official Wan2.2 pipelines compute the unconditional prediction at every step, guidance or not."""
    return plan.runtime == "wan"


def first_in_process(m: Measurement) -> bool:
    """The first point its process ran: it paid the one-time setup (lazily loaded kernels, library
    handles) that a user's one-video job pays; later points of the process ran warm."""
    return bool(m.first_in_process)


def feature_ceilings(gpu: str, ceilings: Ceilings | None) -> tuple[Ceilings, str]:
    """The ceilings time features are computed with, and where they come from: measured on the GPU, else
    its profile's datasheet figures, else nominal stand-ins (time does not transfer then)."""
    if ceilings is not None:
        return ceilings, "measured"
    try:
        p = get_profile(gpu)
        host = float(p.host_link_gbps)
        sdpa = p.achieved(f"attention_{p.default_attention['diffusers']}")  # SDPA's own pick there
        c = Ceilings(matmul_tflops=float(p.achieved("gemm_bf16") or p.bf16_dense_tflops),
                     attention_tflops=float(sdpa or p.bf16_dense_tflops),
                     device_copy_gbps=float(p.memory_bandwidth_gbps), h2d_pinned_gbps=host, h2d_pageable_gbps=host)
    except (WanfitError, TypeError):  # no profile of this GPU, or one without these figures
        return NOMINAL, "nominal stand-ins (no measured ceilings and no profile): time does not transfer"
    return c, f"datasheet figures of the {p.key} profile (ceilings not measured)"


class FitContext:
    """One calibration's fit: its measurements (and the other DiTs' on the same GPU), the features of each,
    the models fitted so far (`models`, by their calibration-file names) and the notes collected."""

    def __init__(self, measurements: list[Measurement], gpu: str, model: str, ceilings: Ceilings | None,
                 held_out: bool, step_siblings: list[Measurement], session_pageable: Mapping[str, float]) -> None:
        self.spec: ModelSpec = get_model(model)
        self.session_pageable = session_pageable
        self.gpu, self.model_key, self.held = gpu, model, held_out
        family = self.spec.dit_family
        ours = [m for m in measurements if get_model(m.workload.model).dit_family == family]
        self.errors = [m for m in ours if m.status == "error"]
        # Capped runs (verify) behave differently in the allocator; calibrations are uncapped.
        self.ms = [m for m in ours if m.status in ("ok", "oom") and m.environment.memory_cap_gib is None]
        self.ooms = [m for m in ours if m.status == "oom"]
        self.all = ours
        self.siblings = [m for m in step_siblings if m.status == "ok" and m.environment.memory_cap_gib is None
                         and get_model(m.workload.model).dit_family != family]
        # Siblings whose text encoder is this one's (every Wan model uses the same UMT5-XXL): their
        # text-encoder placements stand in for ones not measured here.
        self.te_siblings = [m for m in self.siblings
                            if get_model(m.workload.model).text_encoder == self.spec.text_encoder]
        self.borrowed_te: set[str] = set()  # text-encoder fits taken from the siblings' points
        if not any(m.status == "ok" for m in self.ms):
            raise WanfitError(f"no successful measurement of {model} to fit: re-run `wanfit calibrate --gpu {gpu} "
                              f"--model {model}` (its measurements file has {len(ours)} point(s), none ok)")
        self.ceilings = ceilings
        self.fc, self.fc_source = feature_ceilings(gpu, ceilings)
        self.models: dict[str, LinearModel] = {}
        self.notes: list[str] = []
        self._x: dict[int, dict[str, float]] = {}

    def x(self, m: Measurement) -> dict[str, float]:
        key = id(m.workload)
        if key not in self._x:
            self._x[key] = size_features(m.workload, self.fc, cfg_always=official_cfg(m.plan))
        return self._x[key]

    def step_siblings(self, own_baseline_sizes: int) -> list[Measurement]:
        """The other DiTs' points that join this DiT's step fit. Under the official code, none once this DiT has
        OWN_STEP_SIZES baseline sizes: its per-token overhead (float64 RoPE, fp32 norms and modulation) does not
        scale between DiTs as the elementwise term does (fitted alone, the 5B and the A14B put matmul and attention
        at the same rates and that term at 235 and 312), and fitted jointly the solver moved it into the matmul
        term (2.4x the ceiling), which fits the H100 but transfers as matmul: the official README's H20 / H100
        ratios came 18-35 % high, against 0-9 % from each DiT's own fit."""
        official = any(m.plan.runtime == "wan" for m in self.ms)
        return [] if official and own_baseline_sizes >= OWN_STEP_SIZES else self.siblings

    def put(self, name: str, model: LinearModel | None) -> None:
        if model is not None:
            self.models[name] = model

    def pageable_gbps(self, m: Measurement) -> float:
        """The pageable host-to-device rate of the machine that measured `m` (its session's, where
        recorded; else the calibration's ceilings)."""
        return self.session_pageable.get(m.id, self.fc.h2d_pageable_gbps)

    def stream_s(self, m: Measurement, dit_gib: float) -> float:
        """Seconds to copy the DiT's weights once per forward of a step of `m` at its session's
        pageable rate (what sequential offload streams)."""
        return transfer_s(dit_gib * self.x(m)["forwards_per_step"], self.pageable_gbps(m))

    def te_rows(self, row: Callable[[Measurement], tuple[str, Row] | None]) -> dict[str, list[Row]]:
        """Rows per text-encoder fit from this model's points; a fit with none here takes the
        siblings' rows (noted in the calibration)."""
        own: dict[str, list[Row]] = defaultdict(list)
        for m in self.ms:
            if (r := row(m)) is not None:
                own[r[0]].append(r[1])
        borrowed: dict[str, list[Row]] = defaultdict(list)
        for m in self.te_siblings:
            if (r := row(m)) is not None and r[0] not in own:
                borrowed[r[0]].append(r[1])
        self.borrowed_te.update(borrowed)
        return {**own, **borrowed}


class PredictContext:
    """One prediction's working state: the workload, plan and calibration, the target's time scales, the
    plan's weights, the features of the workload and the notes collected (each said once)."""

    def __init__(self, workload: Workload, plan: Plan, cal: Calibration, target: object | None,
                 host_pageable_gbps: float | None = None, first_in_process: bool = True,
                 host_d2h_gbps: float | None = None, reused_pipeline: bool = False) -> None:
        self.wl, self.plan, self.cal, self.target = workload, plan, cal, target
        self.first_in_process, self.host_d2h_gbps = first_in_process and not reused_pipeline, host_d2h_gbps
        self.reused_pipeline = reused_pipeline
        self.spec: ModelSpec = workload.spec
        self.scale: TimeScale = time_scale(cal, target)
        if host_pageable_gbps is not None:  # the user's own host, measured: it replaces the profile's estimate
            self.scale = replace(self.scale, host_pageable=cal.feature_ceilings.h2d_pageable_gbps / host_pageable_gbps)
        self.notes: list[str] = list(self.scale.notes)
        self.x = size_features(workload, cal.feature_ceilings, cfg_always=official_cfg(plan))
        self.extrapolated_by: list[str] = []
        # Seconds of moves down into fresh host pages at the calibration host's rate (host.move_s): the duration's
        # interval reaches down to the same moves into pages mapped fast (wanfit.model.predict).
        self.fresh_page_s = 0.0
        self.weights: Weights = self._plan_weights()

    def _plan_weights(self) -> Weights:
        w, notes = plan_weights(self.cal.weights_gib, self.cal.model, self.spec, self.plan, self.cal.label)
        for n in notes:
            self.note(n)
        return w

    @property
    def gpu_profile(self) -> object | None:
        """The profile of the GPU predicted for: the target, else the calibrated GPU's (None without one)."""
        return self.target if self.target is not None else profile_or_none(self.cal.gpu)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def model(self, name: str) -> LinearModel | None:
        return self.cal.models.get(name)

    def value(self, name: str, default: float, missing_note: str | None = None,
              x: dict[str, float] | None = None) -> float:
        """A fitted model's prediction at `x` (default: the workload's features); `default` (and the note,
        once) when the calibration has no such model."""
        m = self.model(name)
        if m is None:
            if missing_note:
                self.note(missing_note)
            return default
        return m.predict(x if x is not None else self.x)

    def check_range(self, m: LinearModel) -> None:
        """Remember the features of this workload outside the range `m` was fitted on (wider interval)."""
        for name in m.outside_range(self.x):
            if name not in self.extrapolated_by:
                self.extrapolated_by.append(name)

    def calibrated_weight(self, component: str, variant: str) -> float:
        """GiB of a component variant as the calibration has it (measured or analytic), for this model."""
        return component_weight(self.cal.weights_gib, self.cal.model, self.spec, component, variant)[0]


@dataclass(frozen=True)
class StageDemand:
    """What one stage asks of the GPU, before the allocator's reservation: its time, its torch-allocated
    peak and the part of that peak it allocated itself (its transient, which sets the cache's slack)."""

    time_s: float
    allocated_gib: float
    transient_gib: float


@dataclass(frozen=True)
class StageEstimate:
    name: str
    time_s: float
    allocated_gib: float  # torch-allocated peak
    peak_vram_gib: float  # device level, uncapped
    need_gib: float
