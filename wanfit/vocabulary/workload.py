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
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    offload: Offload = "none"
    text_encoder: TextEncoderPlacement = "gpu"
    dit_dtype: DitDtype = "bf16"
    vae_tiling: bool = False
    expandable_segments: bool = True
    runtime: Runtime = "diffusers"
    attention: Attention = "auto"

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
        return self

    def label(self) -> str:
        tiling = "tiled" if self.vae_tiling else "untiled"
        alloc = "" if self.expandable_segments == (self.runtime == "diffusers") else \
            (" no-expandable" if not self.expandable_segments else " expandable")
        runtime = "" if self.runtime == "diffusers" else f"runtime={self.runtime} "
        attention = "" if self.attention == "auto" else f" attn={self.attention}"
        return f"{runtime}offload={self.offload} te={self.text_encoder} dit={self.dit_dtype} vae={tiling}{alloc}{attention}"

    def official_flags(self) -> list[str]:
        """The knobs as the official code's generate.py flags (for a runtime wan plan; see the class)."""
        flags = ["--offload_model", str(self.offload == "model")]
        flags += ["--t5_cpu"] if self.text_encoder == "cpu" else []
        return flags + (["--convert_model_dtype"] if self.dit_dtype == "bf16" else [])

    def knobs(self) -> dict:
        """The user-facing knobs (the JSON contract's `plan` object)."""
        return {"runtime": self.runtime, "offload": self.offload, "text_encoder": self.text_encoder,
                "dit_dtype": self.dit_dtype, "vae_tiling": self.vae_tiling, "attention": self.attention}


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
EXTRA_PINS = ("expandable_segments", "runtime", "attention")
EXTRA_PIN_CHOICES: dict[str, tuple] = {"expandable_segments": (False, True), "runtime": RUNTIMES,
                                       "attention": ATTENTIONS}


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

    def apply(self, plan: Plan | None = None) -> Plan:
        """`plan` (default: the pinned runtime's baseline) with the pinned knobs set."""
        given = self.given()
        start = plan or baseline(given.get("runtime", "diffusers"))
        return Plan(**{**start.model_dump(), **given})

    def choices(self) -> dict[str, tuple]:
        """What each enumerated knob of the pinned runtime may be: the pinned value, else every value."""
        given = self.given()
        knobs = RUNTIME_KNOB_CHOICES[given.get("runtime", "diffusers")]
        return {knob: (given[knob],) if knob in given else values for knob, values in knobs.items()}


def baseline(runtime: Runtime = "diffusers") -> Plan:
    """The plan users of a runtime start from: diffusers with every component on the GPU in bf16; the official
    code with its `generate.py` defaults on one GPU (`--offload_model` True, T5 on the GPU, the DiT's fp32
    weights under bf16 autocast)."""
    if runtime == "wan":
        return Plan(runtime="wan", offload="model", text_encoder="gpu", dit_dtype="fp32")
    return Plan()
