"""Predict one workload + plan from a calibration: per stage time and peak VRAM, totals, intervals.

Pure Python over stored coefficients (no numpy, no sklearn): this is the `wanfit plan` path.
Plan knobs are composed from physics, so a calibration that measured each knob at one to three
points predicts every combination:

memory (torch-allocated, per stage) = weights resident in that stage for the plan (features.py)
    + persistent tensors (latents, embeddings) + the stage's transient (fitted: DiT activations
    linear in the hidden-state size; decode linear in frame pixels and video bytes; text encode)
    + the knob's own transient (fp8/fp32 casts, group-offload blocks in flight).
device level (what nvidia-smi shows, uncapped) = driver baseline + CUDA context + non-torch
    memory + the allocator's reservation, which only grows within a run (the runner empties the
    cache once, after placing the weights): reserved = max(previous, allocated peak + slack).
need (decides the verdict) = allocated peak + baseline + context + non-torch: a capped allocator
    frees its cache and retries before it raises OOM. With expandable segments it also unmaps the
    free pages inside its segments (an RTX 4090-capped verify run decoded with 0.18 GiB reserved
    above allocated, where uncapped it held 5 GiB more), so no fragmentation margin is added; without
    them the steady steps' reserved-above-allocated is (whole segments stay mapped).
time = init + text encode + prepare + steps x steady step + warm-up + the plan's host transfers
    (model offload moves whole models, pageable) + expert switch + VAE decode; the steady step is
    matmul, attention, elementwise and per-layer terms plus the knob's cost (weight casts,
    streamed blocks), each scaled to the target GPU by transfer.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from wanfit.model.calibration import Calibration, LinearModel
from wanfit.model.features import (
    GROUPS_IN_FLIGHT,
    Moves,
    Weights,
    analytic_weights_gib,
    host_ram_gib,
    model_offload_moves,
    resident_gib,
    size_features,
    text_encoder_variant,
)
from wanfit.model.geometry import high_noise_steps
from wanfit.model.transfer import TERM_BOUND, TimeScale, context_gib, time_scale, vae_non_gemm_share
from wanfit.vocabulary.catalog import ModelSpec, get_model
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.plan_report import Candidate, StagePrediction
from wanfit.vocabulary.stages import STAGES
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan, Workload

# Interval policy (assumptions, not measurements; docs/accuracy.md reports how they hold up):
EXTRAPOLATION_WIDEN = 2.0  # held-out error x2 outside the calibrated range
TRANSFER_TIME_REL = 0.25  # +25 % relative time uncertainty when transferred to another GPU
NO_HELDOUT_TIME_REL = 0.10  # a time fit with too few sizes to hold any out
# Predicting a DiT from another DiT's calibration: measured carry-over between the shipped DiTs was
# at worst 3.0 % (step) and 7.4 % (peak) on the H100 (docs/accuracy.md); an untested DiT gets more.
CROSS_DIT_TIME_REL = 0.10
CROSS_DIT_PEAK_REL = 0.10


@dataclass(frozen=True)
class StageEstimate:
    name: str
    time_s: float
    allocated_gib: float  # torch-allocated peak
    peak_vram_gib: float  # device level, uncapped
    need_gib: float


@dataclass
class Prediction:
    """Everything predicted for one workload + plan on one GPU (before the fit verdict)."""

    workload: Workload
    plan: Plan
    stages: list[StageEstimate]
    step_s: float
    duration_s: float
    peak_vram_gib: float
    need_gib: float
    binding_stage: str
    peak_vram_interval_gib: tuple[float, float]
    duration_interval_s: tuple[float, float]
    host_ram_gib: float
    extrapolated: bool
    transferred_from: str | None
    calibration: str
    notes: list[str] = field(default_factory=list)

    def stage(self, name: str) -> StageEstimate | None:
        return next((s for s in self.stages if s.name == name), None)

    def candidate(self, usable_gib: float, safety_margin_gib: float = 1.0,
                  host_ram_limit_gib: float | None = None) -> Candidate:
        """The Candidate of the JSON contract: fits when need + margin <= usable memory (and the
        offloaded weights fit in host RAM when a limit is given)."""
        headroom = usable_gib - self.need_gib - safety_margin_gib
        host_ok = host_ram_limit_gib is None or self.host_ram_gib <= host_ram_limit_gib
        notes = list(self.notes)
        if not host_ok:
            notes.append(f"needs {self.host_ram_gib:.1f} GiB of host RAM for offloaded weights "
                         f"> {host_ram_limit_gib:.1f} GiB available")

        def shown(gib: float) -> float:
            # A plan whose need fits never shows more than the card has: under pressure the caching
            # allocator frees its cached blocks and retries before it fails.
            return round(min(gib, usable_gib) if headroom >= 0 else gib, 3)

        if headroom >= 0 and self.peak_vram_gib > usable_gib:
            notes.append(f"device-level peak held at the {usable_gib:.1f} GiB usable where the cache would grow "
                         f"beyond it: the allocator gives back cached memory under pressure")
        return Candidate(
            plan=self.plan.knobs(), fits=headroom >= 0 and host_ok, peak_vram_gib=shown(self.peak_vram_gib),
            need_gib=round(self.need_gib, 3), headroom_gib=round(headroom, 3), binding_stage=self.binding_stage,
            step_s=round(self.step_s, 4), duration_s=round(self.duration_s, 3),
            duration_interval_s=_round_pair(self.duration_interval_s, 3),
            peak_vram_interval_gib=(shown(self.peak_vram_interval_gib[0]), shown(self.peak_vram_interval_gib[1])),
            host_ram_gib=round(self.host_ram_gib, 3), host_ram_fits=host_ok,
            stages=[StagePrediction(name=s.name, time_s=round(s.time_s, 4), peak_vram_gib=shown(s.peak_vram_gib),
                                    need_gib=round(s.need_gib, 3)) for s in self.stages],
            extrapolated=self.extrapolated, transferred_from=self.transferred_from, notes=notes,
        )


def _round_pair(pair: tuple[float, float], digits: int) -> tuple[float, float]:
    return round(pair[0], digits), round(pair[1], digits)


class _Composer:
    """One prediction's working state: the calibration, the scales, the notes collected."""

    def __init__(self, workload: Workload, plan: Plan, cal: Calibration, target: Any | None,
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
        self.x = size_features(workload, cal.feature_ceilings)
        self.extrapolated_by: list[str] = []

    # ---- helpers ------------------------------------------------------------------------

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def model(self, name: str) -> LinearModel | None:
        return self.cal.models.get(name)

    def value(self, name: str, default: float, missing_note: str | None = None,
              x: dict[str, float] | None = None) -> float:
        m = self.model(name)
        if m is None:
            if missing_note:
                self.note(missing_note)
            return default
        return m.predict(x if x is not None else self.x)

    def weights(self) -> Weights:
        w, notes = plan_weights(self.cal, self.spec, self.plan)
        for n in notes:
            self.note(n)
        return w

    def host_seconds(self, moves: Moves) -> float:
        """Time of whole-model moves (fitted per direction, pageable memory). Uploads scale with the
        host's h2d rate. Downloads land in freshly mapped host pages (`module.to("cpu")`), so they run
        at the host's page-fault rate: 1.15-1.37 GB/s in six fresh processes on lent H100 hosts whose
        h2d rate moved 5.8-8.5 GB/s (bench/results/host-copies-h100*.jsonl), as the fits imply (1.3-1.6):
        neither the host link nor the h2d rate sets it, so they stay as calibrated."""
        pageable = self.cal.feature_ceilings.h2d_pageable_gbps * 1e9
        x = {"h2d_s": moves.h2d * GIB / pageable, "d2h_s": moves.d2h * GIB / pageable}
        m = self.model("host_transfer")
        if m is None:
            if moves.h2d or moves.d2h:
                self.note("model offload transfers not calibrated: pageable copies at the measured h2d rate")
            terms = x
        else:
            terms = m.terms(x)
        down = terms["d2h_s"]
        if moves.d2h and self.host_d2h_gbps is not None:  # this host's own rate, measured the same way
            down = moves.d2h * GIB / (self.host_d2h_gbps * 1e9)
            self.note(f"model offload's moves to host memory at {self.host_d2h_gbps:.2f} GB/s (this host's rate "
                      f"into fresh pageable memory)")
        elif moves.d2h and self.scale.host_pageable != 1.0:
            self.note("model offload's moves to host memory at the calibration host's rate (bound by mapping "
                      "fresh host pages, not by the host link)")
        return terms["h2d_s"] * self.scale.host_pageable + down + (m.intercept if m is not None else 0.0)

    def slack(self, kind: str, transient: float) -> float:
        """Reservation above the allocated peak when a stage of this kind grows the cache."""
        suffix = "" if self.plan.expandable_segments else ":no-expandable"
        m = self.model(f"reserved_slack:{kind}:sequential") if self.plan.offload == "sequential" else None
        m = m or self.model(f"reserved_slack:{kind}{suffix}")
        if m is None and suffix:
            self.note("allocator without expandable segments not calibrated: slack of expandable segments used")
        m = m or self.model(f"reserved_slack:{kind}")
        if m is None and kind == "vae_decode_tiled":
            m = self.model("reserved_slack:denoise")
        slack = m.predict({**self.x, "transient_gib": transient}) if m is not None else 0.0
        # Weight casts of a resident DiT fragment more, in proportion to the bf16 activations (held
        # constant beyond the largest measured). Measured without offload; under group or sequential
        # offload the casts happen on streamed blocks, not measured: none added.
        if kind == "denoise" and self.plan.dit_dtype != "bf16" and self.plan.offload in ("none", "model"):
            cast = self.model(f"reserved_slack:denoise:{self.plan.dit_dtype}{suffix}") or \
                self.model(f"reserved_slack:denoise:{self.plan.dit_dtype}")
            if cast is not None:
                measured_max = cast.training_range.get("transient_gib", (0.0, transient))[1]
                slack += cast.predict({"transient_gib": min(transient, measured_max)})
        return max(0.0, slack)

    def _per_block(self, name: str, w: Weights) -> float:
        """A group-offload fit on the DiT block size; uncalibrated: GROUPS_IN_FLIGHT blocks."""
        m = self.model(name)
        if m is None:
            return GROUPS_IN_FLIGHT * w.block
        return max(0.0, m.predict({"block_gib": w.block}))

    def group_pool(self, w: Weights) -> float:
        """Reservation of the group-offload transfer stream: the blocks in flight are allocated on
        it, and the default stream cannot reuse that cache (nor this stream the default's)."""
        return self._per_block("group_stream_pool", w)

    def group_in_flight(self, w: Weights) -> float:
        """DiT blocks allocated (on the transfer stream) during a group-offloaded step."""
        return self._per_block("denoise_extra:group", w)

    # ---- time ---------------------------------------------------------------------------

    def base_step_s(self) -> float:
        m = self.model("step_time")
        assert m is not None  # fit_calibration refuses a calibration without baseline steps
        self._check_range(m)
        return sum(term * self.scale.of(TERM_BOUND[name]) for name, term in m.terms(self.x).items()) \
            + m.intercept * self.scale.overhead

    def step_s(self, w: Weights, base: float) -> float:
        plan, x = self.plan, self.x
        forwards = x["forwards_per_step"]
        extra = 0.0
        if plan.dit_dtype != "bf16":
            cast_s = w.dit * GIB * forwards / (self.cal.feature_ceilings.device_copy_gbps * 1e9)
            m = self.model(f"step_extra:{plan.dit_dtype}")
            if m is None:
                self.note(f"DiT {plan.dit_dtype} step cost not calibrated: one cast of the weights per forward")
                extra += cast_s * self.scale.bandwidth
            else:
                terms = m.terms({"cast_s": cast_s, "base_step_s": base})
                extra += terms.get("cast_s", 0.0) * self.scale.bandwidth + terms.get("base_step_s", 0.0)
        if plan.offload == "group":
            # Blocks stream on a CUDA stream while the previous block computes: the step pays the
            # part of the transfer the stream does not hide, and is never faster than the transfer.
            h2d = w.dit * GIB * forwards / (self.cal.feature_ceilings.h2d_pinned_gbps * 1e9) * self.scale.host_pinned
            m = self.model("step_extra:group")
            if m is None:
                self.note("group offload step cost not calibrated: the step takes max(compute, block transfers)")
                unhidden = 0.0
            else:
                unhidden = m.predict({"h2d_s": h2d})
            extra += max(unhidden, h2d - (base + extra))
        elif plan.offload == "sequential":
            # Every leaf's weights cross the link on every forward (pageable, not overlapped).
            stream = w.dit * GIB * forwards / (self.cal.feature_ceilings.h2d_pageable_gbps * 1e9)
            m = self.model("step_extra:sequential")
            if m is None:
                self.note("sequential offload not calibrated: every forward streams the DiT at the pageable h2d rate")
                extra += stream * self.scale.host_pageable
            else:
                # The stream scales with the target host's pageable rate; the other terms (memory mapped
                # again after each emptied cache, per-block hooks) are driver and host work, kept as measured.
                terms = m.terms({**x, "stream_s": stream})
                extra += sum(term * (self.scale.host_pageable if name == "stream_s" else self.scale.overhead)
                             for name, term in terms.items())
            # Lent H100s measured 6.4 to 9.2 GB/s: the host, not the GPU, sets most of this step.
            rate = self.cal.feature_ceilings.h2d_pageable_gbps / self.scale.host_pageable
            self.note(f"sequential offload: every weight crosses the host link on every forward, timed at "
                      f"{rate:.1f} GB/s from pageable memory; the host's own rate moves it most "
                      f"(--host-pageable-gbps)")
        return base + extra

    def text_encode_s(self, w: Weights) -> float:
        plan = self.plan
        # A GPU-side encoder's first call in a process pays the one-time setup (lazily loaded kernels).
        first = self.value("text_encode_first_s", 0.0) if self.first_in_process and plan.text_encoder != "cpu" \
            else 0.0
        # Under model offload the encoder's upload is a host copy, timed apart at the host's rate.
        combo = self.model(f"text_encode_s:{plan.text_encoder}:{plan.offload}") if plan.offload != "model" else None
        if combo is not None:
            seconds = combo.predict({}) + first
            return seconds * (1.0 if plan.text_encoder == "cpu" else self.scale.overhead)
        base = self.model(f"text_encode_s:{plan.text_encoder}")
        if base is None:
            gpu = self.model("text_encode_s:gpu")
            self.note(f"text encoder {plan.text_encoder} not calibrated in {self.cal.label}: "
                      f"time of the bf16 encoder on the GPU used")
            seconds = gpu.predict({}) if gpu is not None else 0.0
        else:
            seconds = base.predict({})
        if plan.text_encoder == "cpu":
            self.note("text encoder on the CPU: time as measured on the calibration host's CPU")
        else:
            seconds = (seconds + first) * self.scale.overhead
        upload = self.model("text_encode_upload")
        if plan.offload == "model" and plan.text_encoder == "gpu" and upload is not None:
            h2d_s = w.text_encoder * GIB / (self.cal.feature_ceilings.h2d_pageable_gbps * 1e9)
            seconds += upload.predict({"h2d_s": h2d_s}) * self.scale.host_pageable
        elif plan.offload == "model":
            seconds += self.host_seconds(model_offload_moves("text_encode", plan, w))
        elif plan.offload in ("group", "sequential") and plan.text_encoder == "gpu":
            rate = self.cal.feature_ceilings.h2d_pinned_gbps if plan.offload == "group" \
                else self.cal.feature_ceilings.h2d_pageable_gbps
            scale = self.scale.host_pinned if plan.offload == "group" else self.scale.host_pageable
            seconds += w.text_encoder * GIB / (rate * 1e9) * scale
        return seconds

    def decode_s(self, w: Weights) -> float:
        seconds = self.decode_compute_s()
        if self.plan.offload == "model":
            seconds += self.host_seconds(model_offload_moves("vae_decode", self.plan, w))
        elif self.plan.offload == "sequential":
            # The Wan VAE decodes latent frame by latent frame: every call streams the VAE's leaves.
            stream = w.vae * GIB * self.x["latent_frames"] / (self.cal.feature_ceilings.h2d_pageable_gbps * 1e9)
            m = self.model("decode_extra:sequential")
            if m is None:
                self.note("sequential offload decode not calibrated: the VAE streamed per latent frame at the "
                          "pageable h2d rate")
                seconds += stream * self.scale.host_pageable
            else:
                terms = m.terms({"vae_stream_s": stream, "decode_s": seconds})
                seconds += terms["vae_stream_s"] * self.scale.host_pageable + terms["decode_s"]
        return seconds

    def decode_compute_s(self) -> float:
        tiled = self.plan.vae_tiling
        m = self.model("decode_s:tiled" if tiled else "decode_s:untiled")
        if m is None and tiled:
            untiled = self.model("decode_s:untiled")
            self.note("VAE tiling not calibrated: decode time of the untiled decode used")
            m = untiled
        if m is None:
            self.note("VAE decode time not calibrated")
            return 0.0
        self._check_range(m)
        return sum(m.terms(self.x).values()) * self.decode_scale() + m.intercept * self.scale.overhead

    def decode_scale(self) -> float:
        """How much longer the decode's kernels take on the target. The convolutions' implicit GEMMs
        (TF32 tensor cores) scale with matmul throughput; the rest of the decode's kernels (norms, SiLU,
        upsampling, the causal caches' copies) with the elementwise rate, in the split measured on the
        calibrated GPU: about half the kernel time on an H100, and those kernels ran 1.18-1.20x faster on
        an H200 where the GEMMs ran 1.01-1.11x (bench/results/vae-kernels-*.json)."""
        if self.scale.matmul == 1.0 and self.scale.elementwise == 1.0:
            return 1.0
        share = vae_non_gemm_share(self.cal, self.spec.vae_family)
        if share is None:
            self.note(f"VAE decode scaled by matmul throughput: no measured kernel split of the "
                      f"{self.spec.vae_family} decode on {self.cal.gpu}")
            return self.scale.matmul
        return (1.0 - share) * self.scale.matmul + share * self.scale.elementwise

    def init_s(self, w: Weights) -> float:
        built = w.dit * w.experts + w.text_encoder + w.text_encoder_host + w.vae + w.image_encoder
        checkpoint = self.model("init_s:checkpoint")
        if checkpoint is not None:
            # A host property (disk, page cache, host copies): measured on the calibration host, not
            # scaled to the target GPU. What is read is the checkpoint as stored (bf16 DiT and text
            # encoder, fp32 VAE) whatever the plan then casts or quantises; one note for every
            # candidate (the table prints each distinct note once).
            stored = (component_weight(self.cal, self.spec, "transformer", "bf16")[0] * w.experts
                      + component_weight(self.cal, self.spec, "text_encoder", "bf16")[0] + w.vae + w.image_encoder)
            self.note(f"init time: a checkpoint load as measured on the calibration host ({checkpoint.intercept:.1f} s "
                      f"+ {checkpoint.coefficients[0]:.2f} s per GiB stored) with the files in its page cache; a "
                      f"first load from disk also reads every GiB at the disk's rate; fp8 / int8 conversion not counted")
            return checkpoint.predict({"weights_gib": stored})
        self.note("init time: CUDA start and building the weights as measured (random weights), not loading "
                  "a checkpoint from disk")
        x = {"weights_gib": built, "host_gib": host_ram_gib(self.plan, w),
             "fresh_process": 1.0 if self.first_in_process else 0.0,
             "int8_gib": w.text_encoder if self.plan.text_encoder == "int8" else 0.0}
        return max(0.0, self.value("init_s", 0.0, "init time not calibrated (no point built a pipeline): 0 s", x=x))

    # ---- memory -------------------------------------------------------------------------

    def denoise_transient(self, w: Weights) -> float:
        plan = self.plan
        m = self.model("denoise_activation")
        assert m is not None
        self._check_range(m)
        act = m.predict(self.x)
        self.bf16_activation = max(0.0, act)
        if plan.dit_dtype != "bf16":
            act += self.value(f"denoise_extra:{plan.dit_dtype}", 0.0,
                              f"DiT {plan.dit_dtype} activation memory not calibrated: as bf16")
        if plan.offload == "group":
            if self.model("denoise_extra:group") is None:
                self.note(f"group offload blocks in flight not calibrated: {GROUPS_IN_FLIGHT} blocks assumed")
            act += self.group_in_flight(w)
        elif plan.offload == "sequential":
            act += self.value("denoise_extra:sequential", w.block,
                              "sequential offload memory not calibrated: one DiT block in flight assumed")
        return max(0.0, act)

    def decode_transient(self) -> float:
        tiled = self.plan.vae_tiling
        name = "decode_transient:tiled" if tiled else "decode_transient:untiled"
        m = self.model(name)
        if m is None and tiled:
            self.note("VAE tiling memory not calibrated: the untiled decode's memory used")
            m = self.model("decode_transient:untiled")
        if m is None:
            self.note("VAE decode memory not calibrated")
            return 0.0
        self._check_range(m)
        return max(0.0, m.predict(self.x))

    def text_encode_transient(self, w: Weights) -> float:
        plan = self.plan
        combo = self.model(f"text_encode_transient:{plan.text_encoder}:{plan.offload}")
        if combo is not None:
            return max(0.0, combo.predict({}))
        base = self.value(f"text_encode_transient:{plan.text_encoder}", 0.0)
        if plan.offload == "group" and plan.text_encoder == "gpu":
            # Uncalibrated: the runner offloads the encoder leaf by leaf; its largest leaf, the
            # token embedding, is in flight with the next one.
            te = self.spec.text_encoder
            base += GROUPS_IN_FLIGHT * te["vocab_size"] * te["d_model"] * 2 / GIB
        return max(0.0, base)

    def _check_range(self, m: LinearModel) -> None:
        for name in m.outside_range(self.x):
            if name not in self.extrapolated_by:
                self.extrapolated_by.append(name)

    # ---- the whole prediction -----------------------------------------------------------

    def run(self) -> Prediction:
        wl, plan, cal, spec = self.wl, self.plan, self.cal, self.spec
        w = self.weights()
        base = self.base_step_s()
        step = self.step_s(w, base)
        persistent = self.value("denoise_persistent", 0.0)
        persistent_decode = self.value("decode_persistent", persistent)
        act = self.denoise_transient(w)

        alloc: dict[str, float] = {}
        trans: dict[str, float] = {}  # each stage's transient (drives the allocator's slack)
        times: dict[str, float] = {}
        placed = resident_gib("init", plan, w)  # what stays once placed (the runner empties the cache then)
        alloc["init"] = placed
        if plan.text_encoder == "int8":
            # Quantised on the GPU from its bf16 weights before the pipeline moves there (the runner and
            # a checkpoint load alike): for that moment the GPU holds the whole bf16 encoder.
            alloc["init"] = max(alloc["init"], component_weight(cal, spec, "text_encoder", "bf16")[0])
        if self.reused_pipeline:
            times["init"] = 0.0
            self.note("pipeline reused: built by an earlier job of the same process (no init, no first-call setup)")
        else:
            times["init"] = self.init_s(w)
        trans["text_encode"] = self.text_encode_transient(w)
        alloc["text_encode"] = resident_gib("text_encode", plan, w) + trans["text_encode"]
        times["text_encode"] = self.text_encode_s(w)
        trans["prepare"] = 0.0
        if spec.is_i2v:
            # I2V encodes the conditioning video through the VAE before the first step; the
            # calibration has no I2V point: estimated as large as the decode of that video.
            trans["prepare"] = self.decode_transient()
            self.note("I2V conditioning encode not calibrated: estimated from the VAE decode")
        alloc["prepare"] = resident_gib("prepare", plan, w) + persistent + trans["prepare"]
        if spec.is_i2v and plan.offload == "model":
            alloc["prepare"] += w.vae  # the VAE's offload hook brings it up for the encode
        times["prepare"] = self.value("prepare_s", 0.0) + (self.decode_compute_s() if spec.is_i2v else 0.0)

        trans["denoise"] = act
        alloc["denoise"] = resident_gib("denoise", plan, w) + persistent + act
        warmup = self.value("warmup_s", 0.0, "first-step warm-up not calibrated") if self.first_in_process \
            else self.value("warmup_reused_s", 0.0)
        loading = self.host_seconds(model_offload_moves("denoise", plan, w))
        times["denoise"] = wl.steps * step + warmup + loading
        if spec.experts == 2:
            high = high_noise_steps(spec, wl.steps)
            if 0 < high < wl.steps:
                trans["expert_switch"] = act
                alloc["expert_switch"] = resident_gib("expert_switch", plan, w) + persistent + act
                times["expert_switch"] = self.host_seconds(model_offload_moves("expert_switch", plan, w))
        trans["vae_decode"] = self.decode_transient()
        decode_alloc = resident_gib("vae_decode", plan, w) + persistent_decode + trans["vae_decode"]
        if plan.offload == "model":  # the DiT is still up when decode starts; it goes down before the VAE comes up
            decode_alloc = max(decode_alloc, w.dit + persistent_decode)
        alloc["vae_decode"] = decode_alloc
        times["vae_decode"] = self.decode_s(w)

        # Device level: outside-torch memory + the reservation, which only grows within a run.
        ctx, ctx_known = context_gib(cal, self.target)
        outside = cal.idle_gib + ctx + cal.non_torch_gib
        kinds = {"text_encode": "text_encode", "prepare": "denoise", "denoise": "denoise",
                 "expert_switch": "denoise", "vae_decode": "vae_decode_tiled" if plan.vae_tiling else "vae_decode"}
        margin = 0.0 if plan.expandable_segments else cal.fragmentation_margin_gib
        reserved, pool = placed, 0.0
        stages = []
        for name in STAGES:
            if name not in alloc:
                continue
            if name != "init":
                default_stream = alloc[name]
                if plan.offload == "group" and name in ("denoise", "expert_switch"):
                    # The blocks in flight sit in the transfer stream's pool, not the default stream's cache.
                    pool = self.group_pool(w)
                    default_stream -= min(self.group_in_flight(w), trans[name])
                grown_by = trans[name]
                if kinds[name] == "denoise" and plan.dit_dtype != "bf16" and plan.offload in ("none", "model"):
                    grown_by = self.bf16_activation  # cast slack is fitted against the bf16 activations
                grow = self.slack(kinds[name], grown_by) if name != "prepare" else 0.0
                # Under sequential offload accelerate empties the cache at every leaf's weight load:
                # no stage keeps an earlier stage's reservation.
                kept = 0.0 if plan.offload == "sequential" else reserved
                reserved = max(kept, default_stream + grow)
            held = alloc["init"] if name == "init" else reserved  # init: its conversion transient too
            stages.append(StageEstimate(name=name, time_s=max(0.0, times[name]), allocated_gib=alloc[name],
                                        peak_vram_gib=outside + held + pool,
                                        need_gib=alloc[name] + outside + margin))
        peak = max(s.peak_vram_gib for s in stages)
        binding = max(stages, key=lambda s: s.need_gib)
        duration = sum(s.time_s for s in stages)

        extrapolated = bool(self.extrapolated_by)
        if extrapolated:
            ranges = ", ".join(self.extrapolated_by)
            self.note(f"outside the calibrated range of {cal.label} ({ranges}): extrapolated, wider interval")
        mem_half = self._memory_half_width(binding.name) * (EXTRAPOLATION_WIDEN if extrapolated else 1.0)
        if not ctx_known:
            mem_half += cal.context_gib  # the target's context size is unknown: up to its own size off
        time_rel = self._time_rel() * (EXTRAPOLATION_WIDEN if extrapolated else 1.0)
        if self.scale.transferred_from is not None:
            time_rel += TRANSFER_TIME_REL
        if cal.dit_family != spec.dit_family:
            time_rel += CROSS_DIT_TIME_REL
            mem_half += CROSS_DIT_PEAK_REL * peak
        return Prediction(
            workload=wl, plan=plan, stages=stages, step_s=step, duration_s=duration, peak_vram_gib=peak,
            need_gib=binding.need_gib, binding_stage=binding.name,
            peak_vram_interval_gib=(max(0.0, peak - mem_half), peak + mem_half),
            duration_interval_s=(duration * max(0.0, 1 - time_rel), duration * (1 + time_rel)),
            host_ram_gib=host_ram_gib(plan, w), extrapolated=extrapolated,
            transferred_from=self.scale.transferred_from, calibration=cal.label, notes=self.notes,
        )

    def _memory_half_width(self, binding: str) -> float:
        """Worst held-out error (GiB) of the fits behind the peak: the binding stage's transient
        and the allocator slack of that kind of stage."""
        tiled = self.plan.vae_tiling
        names = {"denoise": ("denoise_activation", "reserved_slack:denoise"),
                 "expert_switch": ("denoise_activation", "reserved_slack:denoise"),
                 "vae_decode": ("decode_transient:tiled" if tiled else "decode_transient:untiled",
                                "reserved_slack:vae_decode_tiled" if tiled else "reserved_slack:vae_decode"),
                 "text_encode": ("text_encode_transient:gpu", "reserved_slack:text_encode")}.get(binding, ())
        total = 0.0
        for name in names:
            m = self.model(name)
            if m is not None and m.held_out is not None:
                total += m.held_out.worst_abs
        return total

    def _time_rel(self) -> float:
        m = self.model("step_time")
        if m is None or m.held_out is None:
            return NO_HELDOUT_TIME_REL
        return m.held_out.worst_abs_pct / 100.0


def _param_ratio(spec: ModelSpec, cal_spec: ModelSpec, component: str) -> float:
    """Parameter ratio of a component between the predicted model and the calibrated one."""
    counts = {
        "transformer": (spec.params.dit_per_expert, cal_spec.params.dit_per_expert),
        "vae": (spec.params.vae, cal_spec.params.vae),
        "text_encoder": (spec.params.text_encoder, cal_spec.params.text_encoder),
        "image_encoder": (spec.params.image_encoder, cal_spec.params.image_encoder),
    }
    mine, theirs = counts[component]
    return mine / theirs if theirs else 1.0


def component_weight(cal: Calibration, spec: ModelSpec, component: str, variant: str) -> tuple[float, bool]:
    """(GiB, measured?) of one component variant: measured in the calibration (scaled by parameter
    count when the calibration is of another model with the same DiT), else from the parameter count."""
    cw = cal.weight(component, variant)
    if cw is None or cw.source != "measured":
        return analytic_weights_gib(spec, component, variant), False
    return cw.gib * _param_ratio(spec, get_model(cal.model), component), True


def plan_weights(cal: Calibration, spec: ModelSpec, plan: Plan) -> tuple[Weights, list[str]]:
    """The weights a plan puts on the GPU (and in host RAM), with notes on analytic fallbacks."""
    notes = []
    te_variant = text_encoder_variant(plan)
    dit, measured = component_weight(cal, spec, "transformer", plan.dit_dtype)
    if not measured:
        notes.append(f"DiT {plan.dit_dtype} weights not measured in {cal.label}: from the parameter count")
    te = te_host = 0.0
    if te_variant is None:
        te_host = component_weight(cal, spec, "text_encoder", "bf16")[0]
    else:
        te, measured = component_weight(cal, spec, "text_encoder", te_variant)
        if not measured:
            notes.append(f"text encoder {te_variant} weights not measured in {cal.label}: from the parameter count")
    return Weights(
        dit=dit, text_encoder=te, text_encoder_host=te_host,
        vae=component_weight(cal, spec, "vae", "fp32")[0],
        image_encoder=component_weight(cal, spec, "image_encoder", "bf16")[0] if spec.image_encoder else 0.0,
        experts=spec.experts, dit_layers=spec.transformer["num_layers"],
    ), notes


def predict(workload: Workload, plan: Plan, calibration: Calibration, target: Any | None = None,
            host_pageable_gbps: float | None = None, first_in_process: bool = True,
            host_d2h_gbps: float | None = None, reused_pipeline: bool = False) -> Prediction:
    """Predict `workload` run with `plan`, from `calibration`, on `target` (a GpuProfile; None:
    the calibrated GPU itself). `host_pageable_gbps`: the host's measured host-to-device rate from
    pageable memory (offloading plans copy at it; lent H100 hosts ranged 6.4 to 9.2 GB/s), instead
    of the calibration host's scaled to the target's host link. `first_in_process`: the job is its
    process's first (a one-video run: it pays the one-time setup); False for a pipeline reused by a
    long-lived process. `host_d2h_gbps`: the host's measured device-to-host rate into freshly allocated
    pageable memory (model offload's moves down run at it; wanfit.measure.ceilings.host_d2h_fresh_gbps),
    instead of the calibration host's as fitted. `reused_pipeline`: the process built this pipeline
    for an earlier job and keeps it (a server): no init stage time, and not its process's first job."""
    try:
        return _Composer(workload, plan, calibration, target, host_pageable_gbps, first_in_process,
                         host_d2h_gbps, reused_pipeline).run()
    except KeyError as missing:  # a fitted model asks for a feature this wanfit no longer computes
        raise WanfitError(f"calibration {calibration.label} was fitted by another wanfit version (no feature "
                          f"{missing}): refit it with `wanfit calibrate --fit-only --gpu {calibration.gpu} "
                          f"--model {calibration.model}`") from None
