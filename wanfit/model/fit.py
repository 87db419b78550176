"""Fit a calibration from measurements: small linear models on physics-shaped features.

The only module that imports scikit-learn (and numpy for the fits); `wanfit plan` never imports it.
Each model is a non-negative least-squares fit (LinearRegression(positive=True)) on features from
wanfit.model.features, with physical lower bounds: a cost cannot be negative, and matmul / attention
work cannot run faster than the ceiling measured on this GPU (coefficient >= 1). Its error is
measured leave-one-group-out, a group being every measurement of one workload size (a repeat of
the same size under another plan or a reset check never leaks into its own score). Training
error is never reported.

What is fitted, per component and stage (the predictor composes plans from these; predict.py):
memory  denoise_activation (hidden-state GiB), denoise_persistent, denoise_extra:<knob>,
        decode_transient:<untiled|tiled> (frame pixels, video bytes), decode_persistent,
        text_encode_transient:<placement>, allocator slack per stage, fragmentation margin,
        non-torch device memory; component weights per dtype (measured resident GiB).
time    step_time (matmul, attention, elementwise, per-layer terms), step_extra:<knob>
        (weight casts, streamed blocks), warmup_s / warmup_reused_s (a process's first point
        or a later one), host_transfer (whole-model moves, per direction), decode_s:<untiled|tiled>,
        text_encode_s:<placement> (a reused process's), text_encode_first_s (a process's first
        point above it), text_encode_upload (the encoder's upload under model offload), prepare_s,
        init_s.
A knob never measured gets no model: the predictor falls back to its analytic estimate and says so.
OOM measurements are kept: each is checked against the fitted need (a lower bound on it).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sklearn.linear_model import LinearRegression

from wanfit import __version__
from wanfit.model.calibration import (
    Calibration,
    ComponentWeights,
    HeldOutError,
    LinearModel,
    OomPoint,
)
from wanfit.model.features import GROUPS_IN_FLIGHT, analytic_weights_gib, model_offload_moves, size_features
from wanfit.vocabulary.catalog import ModelSpec, get_model
from wanfit.vocabulary.environment import Ceilings
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement, StageRecord, fastest_steady_step_s
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan

# Stand-in ceilings when neither measured ceilings nor a profile of the calibrated GPU exist:
# the time coefficients are then plain seconds per unit of work and do not transfer.
NOMINAL = Ceilings(matmul_tflops=100.0, attention_tflops=100.0, device_copy_gbps=1000.0,
                   h2d_pinned_gbps=25.0, h2d_pageable_gbps=10.0)
GROWTH_EPS_GIB = 0.02  # a stage "grew" the reservation when its reserved peak rose by more than this
# Weight of the pull toward "matmul and attention run at the measured ceiling" (see _solve).
PRIOR_STRENGTH = 0.01
FIXED_PRIOR_STRENGTH = 1e3  # a counted term: held at its lower bound whatever the data

Group = tuple


@dataclass(frozen=True)
class Row:
    x: dict[str, float]
    y: float
    group: Group
    ref: float | None = None  # what a held-out % is of (the whole step for a knob's extra); default y


# ---- generic fitting -------------------------------------------------------------------------


def _solve(rows: list[Row], features: list[str], intercept: bool, lower: list[float],
           relative: bool, prior: dict[str, float] | None = None) -> tuple[list[float], float]:
    """Bounded least squares. `prior` adds, per feature, a weak pull of its coefficient toward its
    lower bound (weight relative to one data row): where features are collinear in the data (a
    single model's matmul and elementwise work both grow with tokens), it picks the physical
    solution (kernels at their measured ceilings) instead of an arbitrary one."""
    cols = [[r.x[f] for f in features] for r in rows]
    lb = list(lower)
    if intercept:
        for c in cols:
            c.append(1.0)
        lb.append(0.0)
    X = np.array(cols, dtype=float).reshape(len(rows), len(lb))
    y = np.array([r.y for r in rows], dtype=float)
    lbv = np.array(lb, dtype=float)
    target = y - X @ lbv
    if relative:
        weight = 1.0 / np.maximum(np.abs(y), 1e-9)
        X, target = X * weight[:, None], target * weight
    if X.shape[1] == 0:
        return [], 0.0
    if prior:
        scale = np.sqrt(np.mean(X**2, axis=0)) + 1e-12
        extra = np.zeros((len(prior), X.shape[1]))
        for i, (name, strength) in enumerate(prior.items()):
            j = features.index(name)
            extra[i, j] = strength * scale[j]
        X = np.vstack([X, extra])
        target = np.concatenate([target, np.zeros(len(prior))])
    reg = LinearRegression(positive=True, fit_intercept=False).fit(X, target)
    coef = (np.asarray(reg.coef_, dtype=float) + lbv).tolist()
    return (coef[:-1], coef[-1]) if intercept else (coef, 0.0)


def _held_out(rows: list[Row], fit: Callable[[list[Row]], Callable[[dict], float]], unit: str,
              method: str) -> HeldOutError | None:
    groups = sorted({r.group for r in rows}, key=repr)
    if len(groups) < 2:
        return None
    abs_err, pct_err = [], []
    for g in groups:
        train = [r for r in rows if r.group != g]
        predictor = fit(train)
        for r in rows:
            if r.group != g:
                continue
            e = abs(predictor(r.x) - r.y)
            abs_err.append(e)
            ref = abs(r.ref if r.ref is not None else r.y)
            if ref > 1e-9:
                pct_err.append(100.0 * e / ref)
    return HeldOutError(method=f"{method}, {len(groups)} folds", folds=len(groups),
                        mean_abs_pct=float(np.mean(pct_err)) if pct_err else 0.0,
                        worst_abs_pct=float(np.max(pct_err)) if pct_err else 0.0,
                        mean_abs=float(np.mean(abs_err)), worst_abs=float(np.max(abs_err)), unit=unit)


def fit_linear(rows: list[Row], features: list[str], *, target: str, unit: str, intercept: bool = True,
               lower: list[float] | None = None, relative: bool = False, held_out: bool = True,
               prior: dict[str, float] | None = None) -> LinearModel | None:
    """Bounded least squares of y on `features` (+ a non-negative intercept). None without rows."""
    if not rows:
        return None
    lower = list(lower) if lower is not None else [0.0] * len(features)

    def fit(train: list[Row]) -> Callable[[dict], float]:
        coef, b = _solve(train, features, intercept, lower, relative, prior)
        return lambda x: b + sum(c * x[f] for f, c in zip(features, coef, strict=True))

    coef, b = _solve(rows, features, intercept, lower, relative, prior)
    ranges = {f: (min(r.x[f] for r in rows), max(r.x[f] for r in rows)) for f in features}
    ho = _held_out(rows, fit, unit, "leave-one-group-out (group = workload size)") if held_out else None
    return LinearModel(target=target, unit=unit, features=features, coefficients=[float(c) for c in coef],
                       intercept=float(b), lower_bounds=lower, training_range=ranges, n_points=len(rows),
                       held_out=ho)


def fit_constant(rows: list[Row], *, target: str, unit: str, held_out: bool = True) -> LinearModel | None:
    """The median of y (robust to one slow outlier), held out like any other fit."""
    if not rows:
        return None

    def fit(train: list[Row]) -> Callable[[dict], float]:
        value = statistics.median(r.y for r in train)
        return lambda x: value

    ho = _held_out(rows, fit, unit, "leave-one-group-out (group = workload size), median") if held_out else None
    return LinearModel(target=target, unit=unit, features=[], coefficients=[],
                       intercept=float(statistics.median(r.y for r in rows)), n_points=len(rows), held_out=ho)


# ---- reading measurements -------------------------------------------------------------------


def size_key(m: Measurement) -> Group:
    w = m.workload
    return (w.model, w.height, w.width, w.frames, w.batch)


def transient(s: StageRecord) -> float | None:
    if s.torch_peak_allocated_gib is None or s.torch_allocated_start_gib is None:
        return None
    return s.torch_peak_allocated_gib - s.torch_allocated_start_gib


def first_in_process(m: Measurement) -> bool:
    """The first point its process ran: it paid the one-time setup (lazily loaded kernels, library
    handles) that a user's one-video job pays; later points of the process ran warm."""
    return bool(m.first_in_process)


def _median(values: Iterable[float], default: float) -> float:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else default


def _text_encoder_weight(m: Measurement) -> tuple[str, float] | None:
    """(variant, GiB) of the text encoder resident in a measurement, when it was resident. From the
    allocator, not from resident_weights_gib: a quantised tensor subclass reports its logical (bf16)
    element size there."""
    rw, p = m.resident_weights_gib, m.plan
    te_resident = p.text_encoder == "int8" or (p.text_encoder == "gpu" and p.offload == "none")
    te_stage = m.stage("text_encode")
    if not rw or not te_resident or te_stage is None or te_stage.torch_allocated_start_gib is None:
        return None
    others = sum(v for k, v in rw.items() if k != "text_encoder")
    return ("int8" if p.text_encoder == "int8" else "bf16"), te_stage.torch_allocated_start_gib - others


# ---- the fit ----------------------------------------------------------------------------------


class _Fitter:
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
        self.fc, self.fc_source = self._feature_ceilings(ceilings)
        self.models: dict[str, LinearModel] = {}
        self.notes: list[str] = []
        self._x: dict[int, dict[str, float]] = {}

    def x(self, m: Measurement) -> dict[str, float]:
        key = id(m.workload)
        if key not in self._x:
            self._x[key] = size_features(m.workload, self.fc)
        return self._x[key]

    def tiled_decodes(self) -> tuple[list[Measurement], bool]:
        """Points with a tiled VAE decode (resident or group-offloaded VAE), and whether they are
        borrowed: this DiT's own, else those of the other DiTs on this GPU with the same VAE (the
        decode's time and transient depend on the VAE and the video, not on the DiT: Wan2.1's 1.3B
        and 14B share one). Not its reservation slack: that follows what the process's earlier
        stages left cached (a 14B's steps left 2.4 GiB above its tiled decode's allocations, a
        1.3B's 0.6 GiB), so a DiT without tiled points keeps its own denoise slack there."""
        def tiled(ms: list[Measurement]) -> list[Measurement]:
            return [m for m in ms if m.plan.vae_tiling and m.plan.offload in ("none", "group")
                    and m.stage("vae_decode") is not None]

        own = tiled(self.ms)
        if own:
            return own, False
        same_vae = [m for m in self.siblings if get_model(m.workload.model).vae_family == self.spec.vae_family]
        return tiled(same_vae), True

    def _sequential_slack_rows(self) -> dict[str, list[Row]]:
        """accelerate empties the cache whenever it moves a weight onto the GPU (every leaf, every
        forward): under sequential offload each stage's reservation is its own working set, never an
        earlier stage's, and its slack above allocated is small. Fitted on this DiT's sequential
        points, else on the other DiTs' on this GPU (linear in each stage's own transient)."""
        def rows_of(ms: list[Measurement]) -> dict[str, list[Row]]:
            rows: dict[str, list[Row]] = defaultdict(list)
            for m in ms:
                if m.plan.offload != "sequential" or m.plan.vae_tiling:
                    continue
                for s in m.stages:
                    t = transient(s) if s.name in ("text_encode", "step", "vae_decode") else None
                    if t is None or s.torch_peak_reserved_gib is None or s.torch_peak_allocated_gib is None:
                        continue
                    kind = "denoise" if s.name == "step" else s.name
                    rows[f"{kind}:sequential"].append(Row({**self.x(m), "transient_gib": t},
                                                          s.torch_peak_reserved_gib - s.torch_peak_allocated_gib,
                                                          size_key(m)))
            return rows

        return rows_of(self.ms) or rows_of(self.siblings)

    def _sibling_sequential_rows(self, base: Callable[[Measurement], float], own: bool) -> list[Row]:
        """The other DiTs' bf16 sequential points on this GPU, each at its own DiT's bytes, block
        count and per-token modulation, which is what the terms scale with (a DiT twice as large
        streams twice the bytes). `own`: this DiT has sequential points of its own (else noted)."""
        rows, used = [], set()
        for m in self.siblings:
            t = fastest_steady_step_s(m.steps())
            if t is None or m.plan.offload != "sequential" or m.plan.dit_dtype != "bf16":
                continue
            dit_gib = analytic_weights_gib(get_model(m.workload.model), "transformer", "bf16")
            rows.append(Row({**self.x(m), "stream_s": self.stream_s(m, dit_gib)}, t - base(m), size_key(m), ref=t))
            used.add(m.workload.model)
        if rows and not own:
            self.notes.append(f"sequential offload not measured here: its step and reservation fitted on the "
                              f"sequential points of {', '.join(sorted(used))} on the same GPU (the step per DiT "
                              f"bytes and per-token modulation)")
        return rows

    def _resident_decode_fit(self, ms: list[Measurement], held_out: bool) -> LinearModel | None:
        """The untiled VAE decode with the VAE resident (no or group offload), in output pixels x frames."""
        rows = [Row(self.x(m), dec.time_s, size_key(m)) for m in ms
                if (dec := m.stage("vae_decode")) is not None and m.plan.offload in ("none", "group")
                and not m.plan.vae_tiling]
        return fit_linear(rows, ["pixel_gframes"], relative=True, held_out=held_out,
                          target="VAE decode and postprocess (output pixels x frames), s", unit="s")

    def pageable_gbps(self, m: Measurement) -> float:
        """The pageable host-to-device rate of the machine that measured `m` (its session's, where
        recorded; else the calibration's ceilings)."""
        return self.session_pageable.get(m.id, self.fc.h2d_pageable_gbps)

    def stream_s(self, m: Measurement, dit_gib: float) -> float:
        """Seconds to copy the DiT's weights once per forward of a step of `m` at its session's
        pageable rate (what sequential offload streams)."""
        return dit_gib * GIB * self.x(m)["forwards_per_step"] / (self.pageable_gbps(m) * 1e9)

    def _sequential_decode_rows(self, weights: dict) -> list[Row]:
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
                x = self.x(m)
                decode_s = resident.predict(x)
                rows.append(Row({"vae_stream_s": vae_gib * GIB * x["latent_frames"] / (self.pageable_gbps(m) * 1e9),
                                 "decode_s": decode_s}, dec.time_s - decode_s, size_key(m), ref=dec.time_s))
            return rows

        own = self.models.get("decode_s:untiled")
        rows = rows_of(self.ms, own, next(iter(weights["vae"].values())).gib) if own is not None else []
        measured_here = bool(rows)
        for model in sorted({m.workload.model for m in self.siblings}):
            theirs = [m for m in self.siblings if m.workload.model == model]
            resident = self._resident_decode_fit(theirs, held_out=False)
            if resident is not None:
                rows += rows_of(theirs, resident, analytic_weights_gib(get_model(model), "vae", "fp32"))
        if rows and not measured_here:
            self.notes.append("sequential offload's decode not measured here: fitted on other models' decoded "
                              "sequential points on the same GPU (per VAE bytes and resident decode time)")
        return rows

    def _te_rows(self, row: Callable[[Measurement], tuple[str, Row] | None]) -> dict[str, list[Row]]:
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

    def _feature_ceilings(self, ceilings: Ceilings | None) -> tuple[Ceilings, str]:
        if ceilings is not None:
            return ceilings, "measured"
        try:
            from wanfit.vocabulary.profiles import get_profile

            p = get_profile(self.gpu)
            host = float(p.host_link_gbps)
            c = Ceilings(matmul_tflops=float(p.achieved_matmul_tflops or p.bf16_dense_tflops),
                         attention_tflops=float(getattr(p, "achieved_attention_tflops", None) or p.bf16_dense_tflops),
                         device_copy_gbps=float(p.memory_bandwidth_gbps), h2d_pinned_gbps=host,
                         h2d_pageable_gbps=host)
            return c, f"datasheet figures of the {p.key} profile (ceilings not measured)"
        except Exception:
            return NOMINAL, "nominal stand-ins (no measured ceilings and no profile): time does not transfer"

    def put(self, name: str, model: LinearModel | None) -> None:
        if model is not None:
            self.models[name] = model

    # ---- weights and outside-torch memory ----

    def weights_table(self) -> dict[str, dict[str, ComponentWeights]]:
        obs: dict[tuple[str, str], list[float]] = defaultdict(list)
        for m in self.ms:
            rw, p = m.resident_weights_gib, m.plan
            if not rw:
                continue
            if p.offload == "none":
                if "transformer" in rw:
                    obs[("transformer", p.dit_dtype)].append(rw["transformer"])
                if rw.get("image_encoder"):
                    obs[("image_encoder", "bf16")].append(rw["image_encoder"])
            if p.offload in ("none", "group") and "vae" in rw:
                obs[("vae", "fp32")].append(rw["vae"])
            if (te := _text_encoder_weight(m)) is not None:
                obs[("text_encoder", te[0])].append(te[1])
        for variant in ("bf16", "int8"):
            if ("text_encoder", variant) not in obs:
                borrowed = [te[1] for m in self.te_siblings if (te := _text_encoder_weight(m)) and te[0] == variant]
                if borrowed:
                    obs[("text_encoder", variant)] = borrowed
                    self.borrowed_te.add(f"{variant} weights")
        table: dict[str, dict[str, ComponentWeights]] = defaultdict(dict)
        variants = [("transformer", "bf16"), ("transformer", "fp8"), ("transformer", "fp32"), ("vae", "fp32"),
                    ("text_encoder", "bf16"), ("text_encoder", "int8")]
        if self.spec.image_encoder:
            variants.append(("image_encoder", "bf16"))
        for comp, var in variants:
            values = obs.get((comp, var))
            if values:
                table[comp][var] = ComponentWeights(gib=float(statistics.median(values)), source="measured",
                                                    n_points=len(values))
            else:
                table[comp][var] = ComponentWeights(gib=analytic_weights_gib(self.spec, comp, var), source="analytic")
        return dict(table)

    def outside_memory(self) -> tuple[float, float, float]:
        """Driver baseline and CUDA context from points that started a process (later points of a
        reused process see the context already up), and the device memory above the allocator's
        reservation (lazy-loaded kernels, ...) from every stage."""
        first = [m for m in self.ms if (m.context_gib or 0.0) > 0.01]
        idle = _median((m.idle_device_used_gib for m in first), 0.0)
        ctx = _median((m.context_gib for m in first), 0.0)
        gaps = [s.device_used_peak_gib - s.torch_peak_reserved_gib for m in self.ms for s in m.stages
                if s.name not in ("init", "total") and s.device_used_peak_gib is not None
                and s.torch_peak_reserved_gib is not None]
        if not gaps:
            self.notes.append("no NVML readings: device-level memory = reserved + context (non-torch memory 0)")
            return idle, ctx, 0.0
        outside = _median(gaps, 0.0)
        if not first:
            self.notes.append("no point started a fresh process: baseline and context not separated")
            return 0.0, outside, 0.0
        return idle, ctx, max(0.0, outside - idle - ctx)

    def reservation(self, weights: dict[str, dict[str, ComponentWeights]]) -> float:
        """The caching allocator's reservation above allocated memory: per stage kind, the slack
        where a stage grew the reservation (linear in the stage's transient: bigger transients
        fragment more); the pool of the group-offload stream (blocks in flight are allocated on
        the transfer stream, whose cache the default stream cannot reuse); and the fragmentation
        margin of the verdict (reserved above allocated in steady no-offload steps, where the
        cache already holds the step's working set). Returns the fragmentation margin."""
        grown: dict[str, list[Row]] = defaultdict(list)
        group_steps: list[tuple[Measurement, StageRecord, float, float]] = []
        frag = []
        for m in self.ms:
            suffix = "" if m.plan.expandable_segments else ":no-expandable"
            prev = None
            before_denoise = 0.0
            for s in m.stages:
                if s.name in ("init", "total"):
                    continue
                if s.torch_peak_reserved_gib is None or s.torch_peak_allocated_gib is None:
                    prev = None
                    continue
                if prev is None:  # the point's first stage: the cache was emptied, reserved = allocated
                    prev = s.torch_allocated_start_gib if s.torch_allocated_start_gib is not None else 0.0
                kind = {"text_encode": "text_encode", "step": "denoise", "prepare": "denoise",
                        "vae_decode": "vae_decode_tiled" if m.plan.vae_tiling else "vae_decode"}[s.name]
                t = transient(s)
                if m.plan.offload == "sequential":
                    continue  # fitted apart, below
                if s.name == "step" and m.plan.offload == "group":
                    if s.index == 1:
                        before_denoise = prev
                    elif t is not None:
                        group_steps.append((m, s, t, before_denoise))
                elif s.name != "prepare" and t is not None and s.torch_peak_reserved_gib > prev + GROWTH_EPS_GIB \
                        and m.plan.offload in ("none", "model"):
                    # DiT weight casts (fp8 storage, fp32 autocast) allocate per layer between the
                    # activations: they fragment the step's reservation differently.
                    cast = f":{m.plan.dit_dtype}" if kind == "denoise" and m.plan.dit_dtype != "bf16" else ""
                    grown[kind + cast + suffix].append(Row({**self.x(m), "transient_gib": t},
                                                    s.torch_peak_reserved_gib - s.torch_peak_allocated_gib,
                                                    size_key(m)))
                prev = max(prev, s.torch_peak_reserved_gib)
            if m.plan.expandable_segments and m.plan.offload == "none":
                for s in m.steady_steps():
                    if s.torch_peak_reserved_gib is not None and s.torch_peak_allocated_gib is not None:
                        frag.append(s.torch_peak_reserved_gib - s.torch_peak_allocated_gib)
        grown.update(self._sequential_slack_rows())
        casts = {k: v for k, v in grown.items() if k.startswith(("denoise:fp8", "denoise:fp32"))}
        for kind, rows in sorted(grown.items()):
            if kind in casts:
                continue
            # The decode's fragmentation follows its buffers: per-frame feature maps and the video.
            # Under sequential offload (the cache emptied at every leaf) only the decode's own transient.
            features = ["frame_mpix", "video_fp32_gib"] if kind in ("vae_decode", "vae_decode:no-expandable") \
                else ["transient_gib"]
            target = (f"reserved above allocated in a {kind.split(':')[0]} stage under sequential offload (the cache "
                      "emptied at every leaf), GiB") if kind.endswith(":sequential") else \
                f"reserved above allocated where a {kind.split(':')[0]} stage grew the reservation, GiB"
            self.put(f"reserved_slack:{kind}", fit_linear(rows, features, held_out=self.held, unit="GiB", target=target))
        # Weight casts (per-layer buffers allocated between the activations) fragment in proportion
        # to the activations (measured fp8: about +0.2 GiB per GiB of bf16 activations). Both slacks
        # are taken at the bf16 activations: fp32's extra transient (autocast's bf16 weight copies)
        # is a few large blocks that fragment little. The predictor holds the extra constant beyond
        # the largest activation measured with the cast.
        activation = self.models["denoise_activation"]
        for kind, rows in sorted(casts.items()):
            suffix = ":no-expandable" if kind.endswith(":no-expandable") else ""
            base = self.models.get(f"reserved_slack:denoise{suffix}") or self.models.get("reserved_slack:denoise")
            extra = []
            for r in rows:
                x = {**r.x, "transient_gib": activation.predict(r.x)}
                extra.append(Row(x, r.y - (base.predict(x) if base else 0.0), r.group))
            self.put(f"reserved_slack:{kind}", fit_linear(extra, ["transient_gib"], intercept=False,
                     held_out=self.held, unit="GiB",
                     target="extra reservation slack of DiT weight casts over the bf16 step's, GiB"))
        # The transfer stream's pool: a steady group-offloaded step's reservation above the default
        # stream's cache, which is the larger of what earlier stages left reserved and what the step
        # needs there (its allocations less the blocks in flight, plus the slack of its transient),
        # as the predictor composes it.
        in_flight = self.models.get("denoise_extra:group")
        slack = self.models.get("reserved_slack:denoise")
        pool_rows = []
        for m, s, t, before in group_steps:
            block = weights["transformer"][m.plan.dit_dtype].gib / self.spec.transformer["num_layers"]
            blocks = in_flight.predict({"block_gib": block}) if in_flight is not None else GROUPS_IN_FLIGHT * block
            default_stream = s.torch_peak_allocated_gib - min(max(0.0, blocks), t)
            default_stream += max(0.0, slack.predict({**self.x(m), "transient_gib": t})) if slack is not None else 0.0
            pool_rows.append(Row({"block_gib": block}, s.torch_peak_reserved_gib - max(before, default_stream),
                                 size_key(m)))
        self.put("group_stream_pool", fit_linear(pool_rows, ["block_gib"], intercept=False, held_out=self.held,
                 unit="GiB", target="reservation of the group-offload transfer stream (blocks in flight), GiB"))
        return max(0.0, _median(frag, 0.0))

    # ---- memory models ----

    def fit_memory(self, weights: dict[str, dict[str, ComponentWeights]]) -> None:
        held = self.held
        persistent, act, decode_p = [], [], []
        for m in self.ms:
            steps = m.steady_steps()
            if m.plan.offload == "none" and m.resident_weights_gib:
                resident = sum(m.resident_weights_gib.values())
                for s in steps[:1]:
                    if s.torch_allocated_start_gib is not None:
                        persistent.append(Row({}, s.torch_allocated_start_gib - resident, size_key(m)))
                dec = m.stage("vae_decode")
                if dec is not None and dec.torch_allocated_start_gib is not None:
                    decode_p.append(Row({}, dec.torch_allocated_start_gib - resident, size_key(m)))
            if m.plan.dit_dtype == "bf16" and m.plan.offload in ("none", "model"):
                if not steps and m.plan.offload == "none":
                    steps = m.steps()[:1]
                values = [t for t in (transient(s) for s in steps) if t is not None]
                if values:
                    act.append(Row(self.x(m), max(values), size_key(m)))
        self.put("denoise_persistent", fit_constant(persistent, target="allocated at a step's start above the "
                                                    "resident weights (latents, embeddings), GiB", unit="GiB",
                                                    held_out=held))
        self.put("decode_persistent", fit_constant(decode_p, target="allocated at decode start above the resident "
                                                   "weights, GiB", unit="GiB", held_out=held))
        activation = fit_linear(act, ["hidden_state_gib"], target="denoise step transient (allocated peak - start), "
                                "GiB", unit="GiB", held_out=held)
        if activation is None:
            raise WanfitError(f"no bf16 denoising step with allocator readings in the {self.model_key} measurements: "
                              f"the calibration needs baseline points (offload none, bf16 DiT)")
        self.put("denoise_activation", activation)

        extra: dict[str, list[Row]] = defaultdict(list)
        for m in self.ms:
            p = m.plan
            values = [t for t in (transient(s) for s in m.steady_steps()) if t is not None]
            if not values or (p.dit_dtype == "bf16" and p.offload in ("none", "model")):
                continue
            residual = max(values) - activation.predict(self.x(m))
            if p.offload in ("none", "model"):
                extra[f"denoise_extra:{p.dit_dtype}"].append(Row({}, residual, size_key(m)))
            elif p.offload == "group":
                block = weights["transformer"][p.dit_dtype].gib / self.spec.transformer["num_layers"]
                extra[f"group:{p.dit_dtype}"].append(Row({"block_gib": block}, residual, size_key(m)))
            elif p.offload == "sequential":
                extra[f"sequential:{p.dit_dtype}"].append(Row({}, residual, size_key(m)))
        for dtype in ("fp8", "fp32"):
            self.put(f"denoise_extra:{dtype}", fit_constant(extra.get(f"denoise_extra:{dtype}", []),
                     target=f"denoise transient of a {dtype} DiT above bf16, GiB", unit="GiB", held_out=held))
        group_rows = []
        for key, rows in extra.items():
            if key.startswith("group:"):
                dtype_extra = self.models.get(f"denoise_extra:{key.split(':')[1]}")
                off = dtype_extra.predict({}) if dtype_extra is not None else 0.0
                group_rows += [Row(r.x, r.y - off, r.group) for r in rows]
        self.put("denoise_extra:group", fit_linear(group_rows, ["block_gib"], intercept=False,
                 target="denoise transient of group offloading above no offload (blocks in flight), GiB",
                 unit="GiB", held_out=held))
        seq_rows = [r for k, rows in extra.items() if k.startswith("sequential:") for r in rows]
        self.put("denoise_extra:sequential", fit_constant(seq_rows, target="denoise transient of sequential offload "
                                                          "above no offload, GiB", unit="GiB", held_out=held))

        dec_rows: dict[bool, list[Row]] = defaultdict(list)
        tiled, borrowed_tiled = self.tiled_decodes()
        for m in self.ms + (tiled if borrowed_tiled else []):
            dec = m.stage("vae_decode")
            if dec is None or m.plan.offload not in ("none", "group"):
                continue
            t = transient(dec)
            if t is not None:
                dec_rows[m.plan.vae_tiling].append(Row(self.x(m), t, size_key(m)))
        self.put("decode_transient:untiled", fit_linear(dec_rows[False], ["frame_mpix", "video_fp32_gib"],
                 target="VAE decode transient (allocated peak - start), GiB", unit="GiB", held_out=held))
        # No intercept: the tiled grid has two small sizes and one large one; a line through two
        # close points extrapolates wildly, a proportional model does not.
        self.put("decode_transient:tiled", fit_linear(dec_rows[True], ["tiles_fp32_gib"], intercept=False,
                 target="tiled VAE decode transient (allocated peak - start), GiB", unit="GiB", held_out=held))

        def transient_row(m: Measurement) -> tuple[str, Row] | None:
            s, p = m.stage("text_encode"), m.plan
            t = transient(s) if s is not None else None
            if t is None:
                return None
            if p.text_encoder != "gpu" or p.offload == "none":
                return f"text_encode_transient:{p.text_encoder}", Row({}, t, size_key(m))
            if p.offload in ("group", "sequential"):  # streamed by the offload hooks: all of it is transient
                return f"text_encode_transient:gpu:{p.offload}", Row({}, t, size_key(m))
            return None

        for name, rows in self._te_rows(transient_row).items():
            self.put(name, fit_constant(rows, target="text encode transient (allocated peak - start), GiB",
                                        unit="GiB", held_out=held))

    # ---- time models ----

    def fit_time(self, weights: dict[str, dict[str, ComponentWeights]]) -> None:
        held, fc = self.held, self.fc
        base_rows = []
        for m in self.ms + self.siblings:
            t = fastest_steady_step_s(m.steps())
            if t is not None and m.plan.dit_dtype == "bf16" and m.plan.offload in ("none", "model"):
                base_rows.append(Row(self.x(m), t, size_key(m)))
        if others := sorted({m.workload.model for m in self.siblings}):
            self.notes.append(f"step time fitted on this model's baseline steps and those of {', '.join(others)} "
                              f"on the same GPU (one physics-shaped step model for every DiT)")
        # modulation_s is counted traffic (geometry.PER_TOKEN_MODULATION_BYTES), held at its copy-
        # bandwidth time by a strong prior: the same step model then carries between DiTs with and
        # without per-token modulation (zero for those without: its coefficient stays 1).
        step = fit_linear(base_rows, ["matmul_s", "attention_s", "elementwise_s", "layer_forwards", "modulation_s"],
                          intercept=False, lower=[1.0, 1.0, 0.0, 0.0, 1.0], relative=True, held_out=held,
                          prior={"matmul_s": PRIOR_STRENGTH, "attention_s": PRIOR_STRENGTH,
                                 "modulation_s": FIXED_PRIOR_STRENGTH},
                          target="steady denoising step (CFG forwards included), s", unit="s")
        if step is None:
            raise WanfitError(f"no bf16 measurement of {self.model_key} ran two or more steps: the step-time fit needs "
                              f"baseline points with >= 2 steps (re-run `wanfit calibrate --gpu {self.gpu} --model "
                              f"{self.model_key}`)")
        self.put("step_time", step)

        def base(m: Measurement) -> float:
            return step.predict(self.x(m))

        warm_fresh, warm_reused = [], []
        for m in self.ms:
            t, steps = fastest_steady_step_s(m.steps()), m.steps()
            if t is None or not steps or m.plan.dit_dtype != "bf16" or m.plan.offload != "none":
                continue
            (warm_fresh if first_in_process(m) else warm_reused).append(Row({}, steps[0].time_s - t, size_key(m)))
        self.put("warmup_s", fit_constant(warm_fresh or warm_reused, target="first step above steady state in a "
                                          "fresh process (warm-up), s", unit="s", held_out=held))
        self.put("warmup_reused_s", fit_constant(warm_reused, target="first step above steady state when the "
                                                 "pipeline was reused, s", unit="s", held_out=held))

        dtype_rows: dict[str, list[Row]] = defaultdict(list)
        group_rows, seq_rows = [], []
        for m in self.ms:
            t, p = fastest_steady_step_s(m.steps()), m.plan
            if t is None:
                continue
            fwd = self.x(m)["forwards_per_step"]
            dit_gib = weights["transformer"][p.dit_dtype].gib
            if p.dit_dtype != "bf16" and p.offload in ("none", "model"):
                cast_s = dit_gib * GIB * fwd / (fc.device_copy_gbps * 1e9)
                dtype_rows[p.dit_dtype].append(Row({"cast_s": cast_s, "base_step_s": base(m)}, t - base(m),
                                                   size_key(m), ref=t))
        # fp8 storage: every weight is upcast once per forward (memory-bound, fixed per forward).
        # fp32 under autocast: the same per-forward casts, plus autocast's per-op overhead, which
        # grows with the step.
        for dtype, features in (("fp8", ["cast_s"]), ("fp32", ["cast_s", "base_step_s"])):
            self.put(f"step_extra:{dtype}", fit_linear(dtype_rows.get(dtype, []), features, intercept=False,
                     held_out=held, unit="s", target=f"step time of a {dtype} DiT above bf16 (held-out % of the "
                                                     "step), s"))
        for m in self.ms:
            t, p = fastest_steady_step_s(m.steps()), m.plan
            if t is None or p.offload not in ("group", "sequential"):
                continue
            fwd = self.x(m)["forwards_per_step"]
            dit_gib = weights["transformer"][p.dit_dtype].gib
            extra = t - base(m)
            if p.dit_dtype != "bf16":
                cast_model = self.models.get(f"step_extra:{p.dit_dtype}")
                if cast_model is not None:
                    extra -= cast_model.predict({"cast_s": dit_gib * GIB * fwd / (fc.device_copy_gbps * 1e9),
                                                 "base_step_s": base(m)})
            if p.offload == "group":
                h2d = dit_gib * GIB * fwd / (fc.h2d_pinned_gbps * 1e9)
                group_rows.append(Row({"h2d_s": h2d}, extra, size_key(m), ref=t))
            else:
                seq_rows.append(Row({**self.x(m), "stream_s": self.stream_s(m, dit_gib)}, extra, size_key(m), ref=t))
        # Pooled with the other DiTs' sequential points on this GPU: DiT bytes and block counts differ
        # between them, which is what tells the stream from the per-block cost.
        seq_rows += self._sibling_sequential_rows(base, own=bool(seq_rows))
        self.put("step_extra:group", fit_linear(group_rows, ["h2d_s"], intercept=False, held_out=held,
                 target="step time of group offloading above no offload (the part of the block transfers the "
                        "stream does not hide), s", unit="s"))
        # Sequential offload: every leaf's weights are copied from pageable memory before it runs, and
        # such a copy first waits for the GPU to drain, so nothing overlaps: the step pays the stream
        # (at the machine's own pageable rate). accelerate also empties the CUDA cache at every weight
        # load, so the activations come from freshly mapped memory leaf after leaf (a cost in their
        # bytes: tokens x width x layers), TI2V-5B's large per-token modulation the same way, and each
        # block's hooks cost a fixed time. Fitted on every DiT's sequential points on this GPU
        # (1.3B, 5B and 14B differ in bytes, width and blocks, which separates the terms).
        self.put("step_extra:sequential", fit_linear(seq_rows, ["stream_s", "elementwise_s", "modulation_s",
                                                                 "layer_forwards"], intercept=False, held_out=held,
                 unit="s",
                 target="step time of sequential offload above no offload (weights streamed per forward at the "
                        "session's pageable h2d rate; activations and per-token modulation from freshly mapped "
                        "memory after each emptied cache; per-block hooks), s"))

        tiled, borrowed_tiled = self.tiled_decodes()
        tiled_rows = [Row(self.x(m), m.stage("vae_decode").time_s, size_key(m)) for m in tiled]
        if borrowed_tiled and tiled_rows:
            others = ", ".join(sorted({m.workload.model for m in tiled}))
            self.notes.append(f"VAE tiling not measured here: the tiled decode's time and transient fitted on {others}'s "
                              f"tiled points on the same GPU (the same VAE, {self.spec.vae_family})")
        self.put("decode_s:untiled", self._resident_decode_fit(self.ms, held))
        self.put("decode_s:tiled", fit_linear(tiled_rows, ["tile_calls_k"], intercept=False, relative=True,
                                              held_out=held,
                 target="tiled VAE decode and postprocess (decoder calls: tiles x latent frames), s", unit="s"))
        self.put("decode_extra:sequential", fit_linear(self._sequential_decode_rows(weights), ["vae_stream_s", "decode_s"],
                 intercept=False, held_out=held, unit="s",
                 target="VAE decode under sequential offload above the resident decode (the VAE's weights streamed "
                        "per latent frame at the session's pageable h2d rate, and a part of the decode's own work), s"))

        # The text encode of a point that reused its process, per placement; a process's first pays a
        # one-time extra on top (CUDA loads kernels lazily, cuBLAS makes its handle), fitted once on
        # the resident bf16 encoder and removed from the other placements' first points. Under model
        # offload the encoder's upload is text_encode_upload's (it scales with the host's rate).
        def te_key(m: Measurement) -> str | None:
            p = m.plan
            if m.stage("text_encode") is None or (p.offload == "model" and p.text_encoder == "gpu"):
                return None
            return f"text_encode_s:{p.text_encoder}" if p.text_encoder != "gpu" or p.offload == "none" \
                else f"text_encode_s:gpu:{p.offload}"

        def reused_row(m: Measurement) -> tuple[str, Row] | None:
            if (key := te_key(m)) is None or first_in_process(m):
                return None
            return key, Row({}, m.stage("text_encode").time_s, size_key(m))

        reused = {name: fit_constant(rows, target="text encode (prompt and negative prompt), s", unit="s",
                                     held_out=held) for name, rows in self._te_rows(reused_row).items()}

        def first_row(m: Measurement) -> tuple[str, Row] | None:
            base = reused.get("text_encode_s:gpu")
            if te_key(m) != "text_encode_s:gpu" or not first_in_process(m) or base is None:
                return None
            return "text_encode_first_s", Row({}, m.stage("text_encode").time_s - base.predict({}), size_key(m))

        first = self._te_rows(first_row).get("text_encode_first_s", [])
        self.put("text_encode_first_s", fit_constant(first, target="text encode above a reused process's, in a "
                                                     "process's first point (one-time setup), s", unit="s",
                                                     held_out=held))
        extra = self.models["text_encode_first_s"].predict({}) if "text_encode_first_s" in self.models else 0.0

        def time_row(m: Measurement) -> tuple[str, Row] | None:
            if (key := te_key(m)) is None:
                return None
            gpu_side = m.plan.text_encoder != "cpu"
            return key, Row({}, m.stage("text_encode").time_s - (extra if first_in_process(m) and gpu_side else 0.0),
                            size_key(m))

        for name, rows in self._te_rows(time_row).items():
            self.put(name, fit_constant(rows, target="text encode in a reused process (prompt and negative "
                                        "prompt), s", unit="s", held_out=held))

        def upload_row(m: Measurement) -> tuple[str, Row] | None:
            s, base = m.stage("text_encode"), self.models.get("text_encode_s:gpu")
            if s is None or m.plan.offload != "model" or m.plan.text_encoder != "gpu" or base is None:
                return None
            te_gib = weights["text_encoder"]["bf16"].gib
            x = {"h2d_s": te_gib * GIB / (self.pageable_gbps(m) * 1e9)}
            return "text_encode_upload", Row(x, s.time_s - base.predict({}) - (extra if first_in_process(m) else 0.0),
                                             size_key(m))

        self.put("text_encode_upload", fit_linear(self._te_rows(upload_row).get("text_encode_upload", []), ["h2d_s"],
                 intercept=False, held_out=held, unit="s",
                 target="text encode under model offload above the resident encoder's: its upload from pageable "
                        "memory, against GiB / the pageable h2d rate of the point's session (else the "
                        "calibration's), s"))
        self.put("prepare_s", fit_constant([Row({}, s.time_s, size_key(m)) for m in self.ms
                                            if (s := m.stage("prepare")) is not None],
                                           target="pipeline call up to the first DiT forward, s", unit="s",
                                           held_out=held))
        init_rows = []
        for m in self.ms:
            s = m.stage("init")
            if s is not None and m.source == "random":
                built, host = self._built_gib(m.plan, weights)
                x = {"weights_gib": built, "host_gib": host,
                     "fresh_process": 1.0 if first_in_process(m) else 0.0,
                     "int8_gib": weights["text_encoder"]["int8"].gib if m.plan.text_encoder == "int8" else 0.0}
                init_rows.append(Row(x, s.time_s, size_key(m)))
        self.put("init_s", fit_linear(init_rows, ["weights_gib", "host_gib", "fresh_process", "int8_gib"],
                 intercept=False, held_out=held, unit="s",
                 target="init: start CUDA (fresh process), build the components, quantise, apply the plan "
                        "(moves to host RAM), s"))
        # A checkpoint load reads and places every weight: a fixed part (the pipeline's imports and
        # configs, building the modules empty) plus the bytes over the host's load rate (safetensors
        # to host memory, then to the GPU). Neither depends on the model, so every DiT's checkpoint
        # point on this GPU's host joins. The GiB loaded are those measured resident after placement
        # (the points are no-offload baselines).
        ckpt_rows = [Row({"weights_gib": sum(m.resident_weights_gib.values())}, s.time_s, size_key(m))
                     for m in [*self.ms, *self.siblings]
                     if m.source == "checkpoint" and m.plan == Plan() and (s := m.stage("init")) is not None
                     and m.resident_weights_gib]
        self.put("init_s:checkpoint", fit_linear(ckpt_rows, ["weights_gib"], held_out=held,
                 unit="s", target="init from a local checkpoint in the page cache: from_pretrained and placing "
                                  "the weights on the GPU, s"))
        self.fit_host_transfer(weights)

    def _built_gib(self, plan: Plan, weights: dict[str, dict[str, ComponentWeights]]) -> tuple[float, float]:
        """(GiB of weights built, GiB of them the plan moves to host RAM) for one plan."""
        from wanfit.model.features import host_ram_gib
        from wanfit.model.predict import plan_weights

        w, _ = plan_weights(_WeightsOnly(self.model_key, weights), self.spec, plan)  # type: ignore[arg-type]
        built = w.dit * w.experts + w.text_encoder + w.text_encoder_host + w.vae + w.image_encoder
        return built, host_ram_gib(plan, w)

    def fit_host_transfer(self, weights: dict[str, dict[str, ComponentWeights]]) -> None:
        """Whole-model moves of model CPU offload: the stage time above the same stage without
        offload, against the bytes each direction moves (pageable host memory)."""
        from wanfit.model.predict import plan_weights

        # The text encoder's upload has its own fit (text_encode_upload) and is one here too: a pure
        # host-to-device copy, it pins the h2d coefficient the other stages share with d2h.
        rows = []
        te_gpu, te_first = self.models.get("text_encode_s:gpu"), self.models.get("text_encode_first_s")
        warm = self.models.get("warmup_s")
        warm_reused = self.models.get("warmup_reused_s") or warm
        stub = _WeightsOnly(self.model_key, weights)
        for m in self.ms:
            if m.plan.offload != "model":
                continue
            w, _ = plan_weights(stub, m.workload.spec, m.plan)  # type: ignore[arg-type]

            def row(stage: str, excess: float, m: Measurement = m, w=w) -> Row:
                mv, pageable = model_offload_moves(stage, m.plan, w), self.pageable_gbps(m) * 1e9
                return Row({"h2d_s": mv.h2d * GIB / pageable, "d2h_s": mv.d2h * GIB / pageable}, excess, size_key(m))

            te = m.stage("text_encode")
            if te is not None and te_gpu is not None and m.plan.text_encoder == "gpu":
                first = te_first.predict({}) if te_first is not None and first_in_process(m) else 0.0
                rows.append(row("text_encode", te.time_s - te_gpu.predict({}) - first))
            steps, t = m.steps(), fastest_steady_step_s(m.steps())
            if steps and t is not None:
                w_model = warm if first_in_process(m) else warm_reused
                rows.append(row("denoise", steps[0].time_s - t - (w_model.predict({}) if w_model else 0.0)))
                sw = m.switch_step()
                if sw is not None:
                    rows.append(row("expert_switch", sw.time_s - t))
            dec = m.stage("vae_decode")
            decode_model = self.models.get("decode_s:tiled" if m.plan.vae_tiling else "decode_s:untiled")
            if dec is not None and decode_model is not None:
                rows.append(row("vae_decode", dec.time_s - decode_model.predict(self.x(m))))
        rows = [r for r in rows if r.x["h2d_s"] > 0 or r.x["d2h_s"] > 0]
        self.put("host_transfer", fit_linear(rows, ["h2d_s", "d2h_s"], intercept=False, held_out=self.held,
                 target="model-offload stage time above no offload, against GiB moved / the pageable h2d rate "
                        "measured in the point's session (else the calibration's), s", unit="s"))

    # ---- assembly ----

    def training_ranges(self) -> dict[str, tuple[float, float]]:
        base = [self.x(m) for m in self.ms if m.status == "ok" and m.plan.dit_dtype == "bf16"]
        out = {}
        for f in ("tokens", "frames", "frame_mpix", "pixel_gframes", "hidden_state_gib"):
            vals = [x[f] for x in base]
            if vals:
                out[f] = (min(vals), max(vals))
        return out

    def knobs(self) -> dict[str, list[str]]:
        seen: dict[str, set[str]] = defaultdict(set)
        for m in self.ms:
            for k, v in m.plan.knobs().items():
                seen[k].add(str(v).lower())
            seen["expandable_segments"].add(str(m.plan.expandable_segments).lower())
        return {k: sorted(v) for k, v in sorted(seen.items())}

    def environment(self):
        ok = [m for m in self.ms if m.status == "ok"]
        names = [m.environment.gpu_name for m in ok]
        common = max(set(names), key=names.count)
        return next(m.environment for m in ok if m.environment.gpu_name == common)


@dataclass
class _WeightsOnly:
    """Just enough of a Calibration for predict.plan_weights during the fit."""

    model: str
    weights_gib: dict[str, dict[str, ComponentWeights]]

    @property
    def label(self) -> str:
        return self.model

    def weight(self, component: str, variant: str) -> ComponentWeights | None:
        return self.weights_gib.get(component, {}).get(variant)


def fit_calibration(measurements: list[Measurement], gpu: str, model: str, ceilings: Ceilings | None,
                    gpu_minutes: float, *, held_out: bool = True, measurements_file: str | None = None,
                    step_siblings: list[Measurement] | None = None,
                    session_pageable: Mapping[str, float] | None = None) -> Calibration:
    """Fit every model of one calibration from its measurements (see the module docstring).
    `step_siblings`: other DiTs' measurements on the same GPU, whose baseline steps join the
    step-time fit (its features carry between DiTs; see docs/accuracy.md, carry-over).
    `session_pageable`: {measurement id: pageable h2d GB/s measured in its session}
    (measurements_file.gpu_session_pageable_gbps); sequential offload's stream time of those points is
    computed at their own machine's rate instead of the calibration's ceilings."""
    f = _Fitter(measurements, gpu, model, ceilings, held_out, step_siblings or [], session_pageable or {})
    weights = f.weights_table()
    idle, ctx, non_torch = f.outside_memory()
    f.fit_memory(weights)
    frag = f.reservation(weights)
    f.fit_time(weights)
    if f.borrowed_te:
        others = ", ".join(sorted({m.workload.model for m in f.te_siblings}))
        f.notes.append(f"text encoder (the same UMT5-XXL) not measured here for: {', '.join(sorted(f.borrowed_te))}; "
                       f"taken from {others} on the same GPU")
    if f.errors:
        f.notes.append(f"{len(f.errors)} measurement(s) ended in an error (not memory) and were left out")
    missing = [k for k in ("step_extra:fp8", "step_extra:fp32", "step_extra:group", "step_extra:sequential",
                           "decode_extra:sequential", "host_transfer", "decode_s:tiled", "text_encode_s:cpu",
                           "text_encode_s:int8")
               if k not in f.models]
    if missing:
        f.notes.append("not calibrated (analytic estimates, marked in predictions): " + ", ".join(missing))
    cal = Calibration(
        gpu=gpu, model=model, dit_family=f.spec.dit_family, environment=f.environment(), ceilings=ceilings,
        feature_ceilings=f.fc, feature_ceilings_source=f.fc_source,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), wanfit_version=__version__,
        gpu_minutes=round(gpu_minutes, 2), measurements_file=measurements_file or f"{model}.measurements.jsonl",
        n_measurements=len(f.all), weights_gib=weights, idle_gib=idle, context_gib=ctx, non_torch_gib=non_torch,
        fragmentation_margin_gib=frag, models=f.models, knobs_measured=f.knobs(),
        training_ranges=f.training_ranges(), notes=f.notes,
    )
    return cal.model_copy(update={"oom_points": check_ooms(cal, f.ooms)})


def check_ooms(cal: Calibration, ooms: list[Measurement]) -> list[OomPoint]:
    """Each OOM measurement beside the need the fit predicts at the stage that failed."""
    from wanfit.model.predict import predict

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
