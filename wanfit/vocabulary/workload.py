"""Workload (what to generate) and Plan (how to place it in memory): shared by every part of wanfit."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from wanfit.vocabulary.catalog import GenerationSettings, ModelSpec, get_model
from wanfit.vocabulary.errors import WanfitError

Offload = Literal["none", "model", "group", "sequential"]
TextEncoderPlacement = Literal["gpu", "cpu", "int8"]
DitDtype = Literal["bf16", "fp8", "fp32"]
# Which code runs the job: diffusers' WanPipeline, or the official Wan2.2 code (`generate.py`, PyPI `wan22`).
Runtime = Literal["diffusers", "wan"]
# The attention kernel class: `auto` is what the runtime itself picks on the GPU (a profile fact); fa2 is
# FlashAttention-2 (or SDPA's flash backend, the same kernel), fa3 FlashAttention-3 (Hopper only), cudnn
# SDPA's cuDNN backend (the same class as FA3 on Hopper).
Attention = Literal["auto", "fa2", "fa3", "cudnn"]

OFFLOADS: tuple[Offload, ...] = ("none", "model", "group", "sequential")
TEXT_ENCODERS: tuple[TextEncoderPlacement, ...] = ("gpu", "cpu", "int8")
DIT_DTYPES: tuple[DitDtype, ...] = ("bf16", "fp8", "fp32")
RUNTIMES: tuple[Runtime, ...] = ("diffusers", "wan")
ATTENTIONS: tuple[Attention, ...] = ("auto", "fa2", "fa3", "cudnn")


# Far beyond any Wan job (an hour of video at 24 fps, 16K pixels a side), and small enough that every
# figure computed from them stays a finite float (10**300 frames overflowed the FLOP count).
MAX_FRAMES = 100_001
MAX_SIDE = 16_384
MAX_STEPS = 10_000
MAX_BATCH = 1_024
# GPUs of one host for one video (torchrun --nproc_per_node): the largest hosts carry 16; several hosts are
# not modelled.
MAX_GPUS = 16
GPU_COUNTS: tuple[int, ...] = tuple(range(1, MAX_GPUS + 1))


def nearest_valid_frames(frames: int) -> tuple[int, int]:
    """The 4k+1 frame counts just below and above `frames`."""
    lower = max(1, (frames - 1) // 4 * 4 + 1)
    return lower, lower + 4


def check_frames(frames: int) -> None:
    if frames > MAX_FRAMES:
        raise WanfitError(f"frames must be at most {MAX_FRAMES} (over an hour at 24 fps), not {frames}")
    if frames < 1 or (frames - 1) % 4 != 0:
        lo, hi = nearest_valid_frames(frames)
        raise WanfitError(f"frames must be 4k+1 (the VAE packs 4 frames per latent frame): use {lo} or {hi}, "
                          f"not {frames}")


def check_size(spec: ModelSpec, height: int, width: int) -> None:
    stride = spec.spatial_stride
    for name, value in (("height", height), ("width", width)):
        if not stride <= value <= MAX_SIDE:
            raise WanfitError(f"{name} must be from {stride} to {MAX_SIDE} pixels ({spec.key}), not {value}")
        if value % stride != 0:
            lo = max(stride, value // stride * stride)
            raise WanfitError(f"{name} {value} is not a multiple of {stride} ({spec.key}: VAE x{spec.vae_spatial} "
                              f"x patch 2): use {lo} or {lo + stride}")


def check_guidance(name: str, value: float | None) -> None:
    """A guidance scale is a finite number >= 0 (<= 1 runs without classifier-free guidance): NaN or infinity
    would pass every comparison downstream and come out as a plan with no time."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise WanfitError(f"{name} must be a finite number >= 0 (> 1 runs classifier-free guidance, e.g. 5), "
                          f"not {value:g}")


def check_layout(plan: Plan) -> None:
    """A several-GPU layout the runtime really has, else a one-line error naming the constraint (the heads
    that Ulysses must divide are the model's: check_layout_for)."""
    gpus, fsdp = plan.gpus, plan.dit_fsdp or plan.t5_fsdp
    if not 1 <= gpus <= MAX_GPUS:
        raise WanfitError(f"gpus must be from 1 to {MAX_GPUS} (the GPUs of one host for one video), not {gpus}")
    if plan.ulysses < 1 or plan.ring < 1:
        raise WanfitError("ulysses and ring are degrees of sequence parallelism: 1 (off) or more")
    if gpus == 1:
        if plan.sequence_parallel > 1 or fsdp:
            raise WanfitError("ulysses, ring, dit_fsdp and t5_fsdp split a job over several GPUs: give the GPU "
                              "count too (--gpus N)")
        return
    (_check_official_layout if plan.runtime == "wan" else _check_diffusers_layout)(plan)


def _check_official_layout(plan: Plan) -> None:
    """generate.py's own asserts and the pipelines' documented limits (Wan2.2 generate.py, textimage2video.py).
    `--offload_model` defaults to False under torchrun but may be given (the README's RTX 4090 rows do)."""
    if plan.ring > 1:
        raise WanfitError("the official code has no ring attention: use ulysses (--ulysses_size)")
    if plan.ulysses not in (1, plan.gpus):
        raise WanfitError(f"the official code's --ulysses_size must equal the GPU count: use ulysses {plan.gpus} "
                          f"(or 1 with dit_fsdp, sharding memory only)")
    if plan.t5_fsdp and plan.text_encoder == "cpu":
        raise WanfitError("the official code's --t5_cpu only works without --t5_fsdp: use one of them")
    if plan.dit_fsdp and plan.dit_dtype == "bf16":
        raise WanfitError("--convert_model_dtype has no effect under --dit_fsdp (FSDP keeps the checkpoint's fp32 "
                          "weights sharded and gathers them in bf16): use dit_dtype fp32")
    if plan.ulysses == 1 and not (plan.dit_fsdp or plan.t5_fsdp):
        raise WanfitError(f"{plan.gpus} GPUs with neither Ulysses nor FSDP run the same job {plan.gpus} times: use "
                          f"ulysses {plan.gpus} or dit_fsdp")


def _check_diffusers_layout(plan: Plan) -> None:
    """diffusers' context parallelism (ContextParallelConfig(ulysses_degree, ring_degree) over every rank) with
    FSDP of the transformer's blocks as the only weight sharding it can take."""
    if plan.offload != "none":
        raise WanfitError("diffusers' context parallelism takes no offload hooks: a several-GPU diffusers plan "
                          "runs with offload none")
    if plan.t5_fsdp:
        raise WanfitError("diffusers has no T5 FSDP: use text_encoder cpu or int8, or the official runtime "
                          "(--runtime wan)")
    if plan.sequence_parallel != plan.gpus:
        raise WanfitError(f"diffusers' context parallelism needs ulysses x ring = gpus ({plan.ulysses} x "
                          f"{plan.ring} != {plan.gpus}): e.g. ulysses {plan.gpus}")
    if plan.dit_fsdp and plan.dit_dtype == "fp8":
        raise WanfitError("fp8 layerwise casting under FSDP is not a path diffusers runs: use dit_dtype bf16 "
                          "with dit_fsdp")


def check_layout_for(spec: ModelSpec, plan: Plan, tokens: int | None = None) -> None:
    """Ulysses splits the attention heads: its degree must divide the DiT's head count. diffusers' context
    parallelism splits the DiT's sequence of `tokens` evenly over ulysses x ring ranks and asserts it divides
    (the official code pads it instead)."""
    heads = spec.transformer["num_attention_heads"]
    if heads % plan.ulysses:
        fits = [str(d) for d in GPU_COUNTS if heads % d == 0]
        raise WanfitError(f"ulysses {plan.ulysses} does not divide the {spec.key} DiT's {heads} attention heads: "
                          f"use ulysses {' | '.join(fits)}")
    split = plan.sequence_parallel
    if tokens is not None and plan.runtime == "diffusers" and split > 1 and tokens % split:
        raise WanfitError(f"diffusers' context parallelism splits the {tokens:,} latent tokens evenly over ulysses x "
                          f"ring = {split} ranks and they do not divide: change the size or frames, or use the "
                          f"official runtime (--runtime wan), which pads them")


class _ModelChoice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str = "wan2.2-ti2v-5b"


# Bases in this order put `model` first in Workload's fields, then the generation settings, then `batch`:
# point_id hashes Workload's JSON, so that order is part of every stored measurement's id (the resume key).
class Workload(GenerationSettings, _ModelChoice):
    """What to generate. Sizes in pixels; `guidance` > 1 turns classifier-free guidance on
    (two transformer forwards per step in diffusers)."""

    batch: int = 1

    @model_validator(mode="after")
    def _valid(self) -> Workload:
        spec = get_model(self.model)
        check_frames(self.frames)
        check_size(spec, self.height, self.width)
        for name, limit in (("steps", MAX_STEPS), ("batch", MAX_BATCH)):
            value = getattr(self, name)
            if not 1 <= value <= limit:
                raise WanfitError(f"{name} must be from 1 to {limit}, not {value}")
        for name in ("guidance", "guidance_2"):
            check_guidance(name, getattr(self, name))
        return self

    @classmethod
    def for_model(cls, model: str = "wan2.2-ti2v-5b", **overrides) -> Workload:
        """A workload with the model's own defaults, overridden by any non-None keyword."""
        values = get_model(model).defaults.model_dump(include=set(GenerationSettings.model_fields))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, **values)

    @property
    def spec(self) -> ModelSpec:
        return get_model(self.model)

    @property
    def cfg(self) -> bool:
        return self.guidance > 1.0

    def label(self) -> str:
        return f"{self.model} {self.width}x{self.height}x{self.frames}f {self.steps} steps"


class Plan(BaseModel):
    """How the pipeline is placed and cast: the knobs users really turn.

    offload: none | model (diffusers model CPU offload) | group (block-level group offloading on a
    CUDA stream) | sequential (diffusers sequential CPU offload, leaf by leaf).
    text_encoder: gpu (bf16) | cpu (encode on the CPU) | int8 (weight-only int8 on the GPU).
    dit_dtype: bf16 | fp8 (layerwise-casting storage, bf16 compute) | fp32 (fp32 weights under bf16
    autocast, like the official Wan code without --convert_model_dtype).
    expandable_segments: PyTorch allocator setting; on for every wanfit diffusers run unless asked
    otherwise; off under the official code, which does not set it.
    runtime: diffusers | wan (the official Wan2.2 code, whose knobs are its own flags: offload model =
    `--offload_model True`, text encoder cpu = `--t5_cpu`, DiT bf16 = `--convert_model_dtype`; it has no
    group / sequential offload, no int8 encoder, no fp8 DiT and no VAE tiling).
    attention: the attention kernel class (see Attention).
    gpus, ulysses, ring, dit_fsdp, t5_fsdp: the layout over several GPUs of one host for one video (see
    check_layout): `gpus` ranks; Ulysses sequence parallelism of degree `ulysses` (all-to-all of q, k, v and
    the output around self-attention) and ring attention of degree `ring` (diffusers' context parallelism:
    ulysses x ring = gpus); the DiT's blocks (`dit_fsdp`) and the T5 encoder (`t5_fsdp`, official code only)
    sharded by FSDP. The official code's flags: `torchrun --nproc_per_node N generate.py --dit_fsdp --t5_fsdp
    --ulysses_size N`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    offload: Offload = "none"
    text_encoder: TextEncoderPlacement = "gpu"
    dit_dtype: DitDtype = "bf16"
    vae_tiling: bool = False
    expandable_segments: bool = True
    runtime: Runtime = "diffusers"
    attention: Attention = "auto"
    gpus: int = 1
    ulysses: int = 1
    ring: int = 1
    dit_fsdp: bool = False
    t5_fsdp: bool = False

    @model_validator(mode="before")
    @classmethod
    def _official_allocator(cls, values: object) -> object:
        """The official code does not set expandable segments: a `wan` plan runs without them unless told."""
        if isinstance(values, dict) and values.get("runtime") == "wan" and values.get("expandable_segments") is None:
            return {**values, "expandable_segments": False}
        return values

    @model_validator(mode="after")
    def _knobs_of_the_runtime(self) -> Plan:
        for knob, allowed in RUNTIME_KNOB_CHOICES[self.runtime].items():
            if getattr(self, knob) not in allowed:
                words = " | ".join(str(c).lower() for c in allowed)
                raise WanfitError(f"the {self.runtime} runtime has no {knob} {str(getattr(self, knob)).lower()}: "
                                  f"use {words}")
        check_layout(self)
        return self

    def label(self) -> str:
        tiling = "tiled" if self.vae_tiling else "untiled"
        alloc = "" if self.expandable_segments == (self.runtime == "diffusers") else \
            (" no-expandable" if not self.expandable_segments else " expandable")
        runtime = "" if self.runtime == "diffusers" else f"runtime={self.runtime} "
        attention = "" if self.attention == "auto" else f" attn={self.attention}"
        return (f"{runtime}offload={self.offload} te={self.text_encoder} dit={self.dit_dtype} vae={tiling}{alloc}"
                f"{attention}{self.layout_label()}")

    def layout_label(self) -> str:
        """' gpus=4 ulysses=4 dit-fsdp t5-fsdp' for a several-GPU plan, '' for one GPU."""
        if self.gpus == 1:
            return ""
        parts = [f"gpus={self.gpus}"] + [f"{name}={getattr(self, name)}" for name in ("ulysses", "ring")
                                         if getattr(self, name) > 1]
        return " " + " ".join(parts + [name.replace("_", "-") for name in ("dit_fsdp", "t5_fsdp") if getattr(self, name)])

    @property
    def sequence_parallel(self) -> int:
        """How many ways the DiT's sequence is split (Ulysses x ring): each rank computes 1/that of a step."""
        return self.ulysses * self.ring

    def official_flags(self) -> list[str]:
        """The knobs as the official code's generate.py flags (for a runtime wan plan; see the class)."""
        flags = ["--offload_model", str(self.offload == "model")]
        flags += ["--t5_cpu"] if self.text_encoder == "cpu" else []
        flags += ["--convert_model_dtype"] if self.dit_dtype == "bf16" else []
        flags += ["--dit_fsdp"] if self.dit_fsdp else []
        flags += ["--t5_fsdp"] if self.t5_fsdp else []
        return flags + (["--ulysses_size", str(self.ulysses)] if self.ulysses > 1 else [])

    def knobs(self) -> dict:
        """The user-facing knobs (the JSON contract's `plan` object)."""
        return {"runtime": self.runtime, "offload": self.offload, "text_encoder": self.text_encoder,
                "dit_dtype": self.dit_dtype, "vae_tiling": self.vae_tiling, "attention": self.attention,
                **self.layout()}

    def layout(self) -> dict:
        """The several-GPU layout knobs: gpus, ulysses, ring, dit_fsdp, t5_fsdp."""
        return {name: getattr(self, name) for name in LAYOUT_KNOBS}


# The values each enumerated knob may take: the plan space the planner searches, per runtime. The official
# code's knobs are its flags (see Plan); the attention kernel is searched where the runtime offers a choice.
RUNTIME_KNOB_CHOICES: dict[str, dict[str, tuple]] = {
    "diffusers": {"offload": OFFLOADS, "text_encoder": TEXT_ENCODERS, "dit_dtype": DIT_DTYPES,
                  "vae_tiling": (False, True)},
    "wan": {"offload": ("none", "model"), "text_encoder": ("gpu", "cpu"), "dit_dtype": ("fp32", "bf16"),
            "vae_tiling": (False,)},
}
KNOB_CHOICES: dict[str, tuple] = RUNTIME_KNOB_CHOICES["diffusers"]
# Plan fields a caller may pin that the planner does not enumerate (they keep Plan's default unless pinned).
# The several-GPU layout is searched per GPU count by the planner (planner.layouts), not enumerated here.
LAYOUT_KNOBS = ("gpus", "ulysses", "ring", "dit_fsdp", "t5_fsdp")
EXTRA_PINS = ("expandable_segments", "runtime", "attention", *LAYOUT_KNOBS)
EXTRA_PIN_CHOICES: dict[str, tuple] = {"expandable_segments": (False, True), "runtime": RUNTIMES,
                                       "attention": ATTENTIONS, "gpus": GPU_COUNTS, "ulysses": GPU_COUNTS,
                                       "ring": GPU_COUNTS, "dit_fsdp": (False, True), "t5_fsdp": (False, True)}


class PlanPins(BaseModel):
    """The plan knobs a user fixed (`wanfit plan --offload model ...`, a scenario); None = free, searched.

    Bad input (an unknown knob, a value the knob cannot take) raises a one-line WanfitError where the
    pins are built, naming the knobs or values allowed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    offload: Offload | None = None
    text_encoder: TextEncoderPlacement | None = None
    dit_dtype: DitDtype | None = None
    vae_tiling: bool | None = None
    expandable_segments: bool | None = None
    runtime: Runtime | None = None
    attention: Attention | None = None
    gpus: int | None = None
    ulysses: int | None = None
    ring: int | None = None
    dit_fsdp: bool | None = None
    t5_fsdp: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_knobs_and_values(cls, values: object) -> object:
        if not isinstance(values, dict):
            return values
        unknown = sorted(set(values) - set(KNOB_CHOICES) - set(EXTRA_PINS))
        if unknown:
            raise WanfitError(f"unknown plan knob(s) {', '.join(unknown)}: pin one of {', '.join(KNOB_CHOICES)}")
        for knob, value in values.items():
            allowed = KNOB_CHOICES.get(knob) or EXTRA_PIN_CHOICES[knob]
            if value is not None and (value not in allowed or type(value) is not type(allowed[0])):
                words = " | ".join(str(c).lower() for c in allowed)
                raise WanfitError(f"{knob} cannot be {value!r}: use {words}")
        return values

    def given(self) -> dict:
        """The pinned knobs alone: {"offload": "model", ...}."""
        return self.model_dump(exclude_none=True)

    def overridden_by(self, other: PlanPins) -> PlanPins:
        """These pins with `other`'s pinned knobs on top (explicit flags over a scenario's pins)."""
        return self.model_copy(update=other.given())

    def apply(self, plan: Plan | None = None, heads: int | None = None) -> Plan:
        """`plan` (default: the pinned runtime's baseline on the pinned GPU count, for a DiT of `heads` attention
        heads) with the pinned knobs set."""
        given = self.given()
        start = plan or baseline(given.get("runtime", "diffusers"), given.get("gpus", 1), heads)
        # The several-GPU baseline's FSDP gives way to a pinned knob the official code cannot combine with it
        # (--t5_cpu, --convert_model_dtype): an FSDP nobody asked for is left out, not an error.
        if given.get("text_encoder") == "cpu":
            given.setdefault("t5_fsdp", False)
        if start.runtime == "wan" and given.get("dit_dtype", "fp32") != "fp32":
            given.setdefault("dit_fsdp", False)
        return Plan(**{**start.model_dump(), **given})

    def choices(self) -> dict[str, tuple]:
        """What each enumerated knob of the pinned runtime may be: the pinned value, else every value."""
        given = self.given()
        knobs = RUNTIME_KNOB_CHOICES[given.get("runtime", "diffusers")]
        return {knob: (given[knob],) if knob in given else values for knob, values in knobs.items()}


def baseline(runtime: Runtime = "diffusers", gpus: int = 1, heads: int | None = None) -> Plan:
    """The plan users of a runtime start from: diffusers with every component on the GPU in bf16; the official
    code with its `generate.py` defaults on one GPU (`--offload_model` True, T5 on the GPU, the DiT's fp32
    weights under bf16 autocast). On several GPUs: the official READMEs' `--dit_fsdp --t5_fsdp --ulysses_size
    N` (no offload, generate.py's default under torchrun); diffusers' context parallelism with the largest
    Ulysses degree that divides the DiT's `heads` (unknown: N) and ring attention for the rest."""
    if gpus > 1:
        ulysses = max(d for d in GPU_COUNTS if gpus % d == 0 and (heads is None or heads % d == 0))
        if runtime == "wan":  # --ulysses_size is the GPU count or off
            ulysses = gpus if ulysses == gpus else 1
            return Plan(runtime="wan", dit_dtype="fp32", gpus=gpus, ulysses=ulysses, dit_fsdp=True, t5_fsdp=True)
        return Plan(gpus=gpus, ulysses=ulysses, ring=gpus // ulysses)
    if runtime == "wan":
        return Plan(runtime="wan", offload="model", text_encoder="gpu", dit_dtype="fp32")
    return Plan()
