"""Workload (what to generate) and Plan (how to place it in memory): shared by every part of wanfit."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from wanfit.vocabulary.catalog import ModelSpec, get_model
from wanfit.vocabulary.errors import WanfitError

Offload = Literal["none", "model", "group", "sequential"]
TextEncoderPlacement = Literal["gpu", "cpu", "int8"]
DitDtype = Literal["bf16", "fp8", "fp32"]

OFFLOADS: tuple[Offload, ...] = ("none", "model", "group", "sequential")
TEXT_ENCODERS: tuple[TextEncoderPlacement, ...] = ("gpu", "cpu", "int8")
DIT_DTYPES: tuple[DitDtype, ...] = ("bf16", "fp8", "fp32")


def nearest_valid_frames(frames: int) -> tuple[int, int]:
    """The 4k+1 frame counts just below and above `frames`."""
    lower = max(1, (frames - 1) // 4 * 4 + 1)
    return lower, lower + 4


def check_frames(frames: int) -> None:
    if frames < 1 or (frames - 1) % 4 != 0:
        lo, hi = nearest_valid_frames(frames)
        raise WanfitError(f"frames must be 4k+1 (the VAE packs 4 frames per latent frame): use {lo} or {hi}, "
                          f"not {frames}")


def check_size(spec: ModelSpec, height: int, width: int) -> None:
    stride = spec.spatial_stride
    for name, value in (("height", height), ("width", width)):
        if value < stride or value % stride != 0:
            lo = max(stride, value // stride * stride)
            raise WanfitError(f"{name} {value} is not a multiple of {stride} ({spec.key}: VAE x{spec.vae_spatial} "
                              f"x patch 2): use {lo} or {lo + stride}")


class Workload(BaseModel):
    """What to generate. Sizes in pixels; `guidance` > 1 turns classifier-free guidance on
    (two transformer forwards per step in diffusers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str = "wan2.2-ti2v-5b"
    height: int
    width: int
    frames: int
    steps: int
    guidance: float
    guidance_2: float | None = None
    batch: int = 1

    @model_validator(mode="after")
    def _valid(self) -> Workload:
        spec = get_model(self.model)
        check_frames(self.frames)
        check_size(spec, self.height, self.width)
        if self.steps < 1:
            raise WanfitError(f"steps must be at least 1, not {self.steps}")
        if self.batch < 1:
            raise WanfitError(f"batch must be at least 1, not {self.batch}")
        return self

    @classmethod
    def for_model(cls, model: str = "wan2.2-ti2v-5b", **overrides) -> Workload:
        """A workload with the model's own defaults, overridden by any non-None keyword."""
        d = get_model(model).defaults
        values = {"height": d.height, "width": d.width, "frames": d.frames, "steps": d.steps,
                  "guidance": d.guidance, "guidance_2": d.guidance_2}
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
    expandable_segments: PyTorch allocator setting; on for every wanfit run unless asked otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    offload: Offload = "none"
    text_encoder: TextEncoderPlacement = "gpu"
    dit_dtype: DitDtype = "bf16"
    vae_tiling: bool = False
    expandable_segments: bool = True

    def label(self) -> str:
        tiling = "tiled" if self.vae_tiling else "untiled"
        alloc = "" if self.expandable_segments else " no-expandable"
        return f"offload={self.offload} te={self.text_encoder} dit={self.dit_dtype} vae={tiling}{alloc}"

    def knobs(self) -> dict:
        """The four user-facing knobs (the JSON contract's `plan` object)."""
        return {"offload": self.offload, "text_encoder": self.text_encoder, "dit_dtype": self.dit_dtype,
                "vae_tiling": self.vae_tiling}


# The values each enumerated knob may take: the plan space the planner searches.
KNOB_CHOICES: dict[str, tuple] = {
    "offload": OFFLOADS,
    "text_encoder": TEXT_ENCODERS,
    "dit_dtype": DIT_DTYPES,
    "vae_tiling": (False, True),
}
# Plan fields a caller may pin that the planner does not enumerate (they keep Plan's default unless pinned).
EXTRA_PINS = ("expandable_segments",)


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

    @model_validator(mode="before")
    @classmethod
    def _known_knobs_and_values(cls, values: object) -> object:
        if not isinstance(values, dict):
            return values
        unknown = sorted(set(values) - set(KNOB_CHOICES) - set(EXTRA_PINS))
        if unknown:
            raise WanfitError(f"unknown plan knob(s) {', '.join(unknown)}: pin one of {', '.join(KNOB_CHOICES)}")
        for knob, value in values.items():
            allowed = KNOB_CHOICES.get(knob, (False, True))
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
        """`plan` (default: the baseline Plan()) with the pinned knobs set."""
        return Plan(**{**(plan or Plan()).model_dump(), **self.given()})
