"""From a user's flags to the Python API's objects: the workload (sizes, a scenario's preset) and the plan
knobs pinned. Pure and cheap: `wanfit plan` calls these before anything else (no heavy imports here)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanfit.vocabulary.errors import WanfitError

if TYPE_CHECKING:
    from wanfit.vocabulary.workload import PlanPins, Workload

DEFAULT_MODEL = "wan2.2-ti2v-5b"  # as Workload's own default (wanfit.vocabulary.workload)


def parse_size(size: str) -> tuple[int, int]:
    """'1280x704' (WIDTHxHEIGHT) -> (height, width)."""
    parts = size.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise WanfitError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 1280x704, not '{size}'")
    width, height = (int(p) for p in parts)
    return height, width


def build_workload(model: str | None, height: int | None, width: int | None, size: str | None, frames: int | None,
                   steps: int | None, guidance: float | None,
                   scenario: str | None) -> tuple[Workload, PlanPins]:
    """The workload the flags describe and the plan knobs a scenario pins (explicit flags win)."""
    from wanfit.vocabulary.workload import PlanPins, Workload

    if size is not None:
        if height is not None or width is not None:
            raise WanfitError("give either --size WIDTHxHEIGHT or --height/--width, not both")
        height, width = parse_size(size)
    overrides = {"height": height, "width": width, "frames": frames, "steps": steps, "guidance": guidance}
    if scenario is None:
        return Workload.for_model(model or DEFAULT_MODEL, **overrides), PlanPins()
    from wanfit.planner.scenarios import get_scenario

    preset = get_scenario(scenario)
    return preset.workload(model=model, **overrides), preset.pins()  # the flags given win


def plan_pins(base: PlanPins, offload: str | None, text_encoder: str | None, dit_dtype: str | None,
              vae_tiling: bool | None, runtime: str | None = None, attention: str | None = None,
              **layout: int | bool | None) -> PlanPins:
    """Plan knobs the user fixed: `base` (a scenario's pins) overridden by the knob flags given, the several-GPU
    layout's among them (gpus, ulysses, ring, dit_fsdp, t5_fsdp). Unset = free."""
    from wanfit.vocabulary.workload import PlanPins

    flags = PlanPins(offload=offload, text_encoder=text_encoder, dit_dtype=dit_dtype, vae_tiling=vae_tiling,
                     runtime=runtime, attention=attention, **layout)
    return base.overridden_by(flags)


def parse_gpu_counts(text: str | None) -> list[int] | None:
    """'--gpus 1,2,4' -> [1, 2, 4]; None when not given."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise WanfitError(f"--gpus takes a GPU count or counts separated by commas, e.g. 4 or 1,2,4,8, not '{text}'")
    return list(dict.fromkeys(int(p) for p in parts))  # each count once, in the order given


def planner_options(margin: float | None, host_ram: float | None, calibration_dir: Path | None,
                    host_pageable: float | None = None, host_d2h: float | None = None) -> dict[str, Any]:
    """The planner's keyword options the user gave (the API's defaults apply to the rest)."""
    given = {"safety_margin_gib": margin, "host_ram_gib": host_ram, "host_pageable_gbps": host_pageable,
             "host_d2h_gbps": host_d2h}
    return {"calibration_dir": calibration_dir, **{k: v for k, v in given.items() if v is not None}}


@dataclass(frozen=True)
class HostRam:
    """The host RAM plans are checked against: `gib` None = unlimited; `source` says where it came from."""
    gib: float | None
    source: str = ""


def host_ram_source(host_ram: float | None, gpus: list[str] | None,
                    local_gib: Callable[[], float | None]) -> HostRam:
    """The flag; else this machine's (`local_gib()`) when planning for the local GPU (no --gpu: its offloaded
    weights land here); else none (unlimited)."""
    if host_ram is not None:
        return HostRam(host_ram, "--host-ram")
    if not gpus and (local := local_gib()) is not None:
        return HostRam(round(local, 1), "this machine's; --host-ram to change")
    return HostRam(None)


def deprecated_steps(steps: int | None, run_steps: int | None) -> int | None:
    """verify's old --steps: still the steps run, with a one-line warning (--run-steps names them now)."""
    if steps is None:
        return run_steps
    if run_steps is not None:
        raise WanfitError("give --run-steps only (verify's --steps is its deprecated name)")
    print("warning: verify --steps is deprecated: use --run-steps (the steps actually run; --workload-steps "
          "sets the job's)", file=sys.stderr)
    return steps
