"""The user's four standard benchmark cases as presets for `plan` and `verify` (`--scenario NAME`).

Wan2.2-TI2V-5B at 1280x704 (width x height), as in the user's own L40S / RTX PRO 6000 reports:
Speed Preview (5 steps, offload on), Efficiency (30 steps, offload on), Max Quality (50 steps,
offload off) and Long Duration (15 s = 361 frames at 24 fps, 50 steps, offload on).
"Offload on" there is the official Wan `generate.py --offload_model`, which moves whole models
between CPU and GPU: wanfit's `offload="model"`. The other knobs (text encoder, DiT dtype, VAE
tiling) are left free so `plan` can advise on them; a scenario pins only what the user's runs fixed.
Frames not named by a scenario are the model's own default (121 for TI2V-5B, 5 s at 24 fps).

Pure data: on the plan path, no heavy imports.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from wanfit.vocabulary.errors import unknown_name_error
from wanfit.vocabulary.workload import Offload, PlanPins, Workload


class Scenario(BaseModel):
    """One preset: the workload fields and plan knobs it fixes; everything else stays default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    title: str  # the name in the user's reports
    description: str
    model: str = "wan2.2-ti2v-5b"
    height: int = 704
    width: int = 1280
    frames: int | None = None  # None: the model's default
    steps: int
    offload: Offload

    def workload_overrides(self) -> dict:
        """Workload fields the scenario sets (keyword arguments for Workload.for_model)."""
        out = {"model": self.model, "height": self.height, "width": self.width, "steps": self.steps}
        if self.frames is not None:
            out["frames"] = self.frames
        return out

    def pins(self) -> PlanPins:
        """Plan knobs the scenario pins; the others stay free."""
        return PlanPins(offload=self.offload)

    def workload(self, **overrides) -> Workload:
        """The scenario's workload; non-None `overrides` (explicit user flags) win."""
        values = self.workload_overrides()
        values.update({k: v for k, v in overrides.items() if v is not None})
        model = values.pop("model")
        return Workload.for_model(model, **values)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(name="speed-preview", title="Speed Preview", steps=5, offload="model",
                 description="quick look: 1280x704, default length, 5 steps, model offload (--offload_model)"),
        Scenario(name="efficiency", title="Efficiency", steps=30, offload="model",
                 description="balanced: 1280x704, default length, 30 steps, model offload (--offload_model)"),
        Scenario(name="max-quality", title="Max Quality", steps=50, offload="none",
                 description="best quality: 1280x704, default length, 50 steps, everything resident (no offload)"),
        Scenario(name="long-duration", title="Long Duration", frames=361, steps=50, offload="model",
                 description="15 s clip: 1280x704, 361 frames, 50 steps, model offload (--offload_model)"),
    ]
}


def get_scenario(name: str) -> Scenario:
    """The preset called `name`, or a one-line error naming the closest known scenarios."""
    try:
        return SCENARIOS[name.lower()]
    except KeyError:
        raise unknown_name_error("scenario", name, SCENARIOS, "wanfit plan --help") from None
