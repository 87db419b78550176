"""How accurate are wanfit's predictions? Held-out errors of every shipped calibration, the
5B -> 14B carry-over of the step-time model, and the wall time of `wanfit plan`.

    python bench/accuracy.py            # print the tables
    python bench/accuracy.py --write    # also write docs/accuracy.md

Held out = leave-one-size-out: every measurement of one workload size (all its plans, and the
reset-check repeat) is removed, the calibration is refitted from the rest, and the removed
measurements are predicted. No size a prediction is scored on was seen by its fit; a knob
measured at that size only falls back to its analytic estimate (counted, and marked `*`).
Peak VRAM is the device-level peak (NVML) over the stages the run measured; the step is the
steady step (the fastest step after the first, as the fit takes it); stage times are text encode
and VAE decode.
Needs scikit-learn (it refits); no GPU.

The parts, beside this script: accuracy_held_out (leave-one-size-out), accuracy_carry_over (one
DiT's fit predicting another), accuracy_plan_timing (`wanfit plan`'s wall time and instructions),
accuracy_verify (the verify runs' section), accuracy_reading (remarks written by hand),
accuracy_render (the Markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's wanfit, before any installed one

from accuracy_carry_over import CarryOver, carry_over  # noqa: E402
from accuracy_held_out import HeldOutScores, held_out_scores, model_offload_decode_notes  # noqa: E402
from accuracy_plan_timing import PlanTiming, fitted_calibration_dir, time_plan  # noqa: E402
from accuracy_render import render, write_doc  # noqa: E402

from wanfit.vocabulary.environment import Ceilings  # noqa: E402
from wanfit.vocabulary.measurement import Measurement  # noqa: E402
from wanfit.vocabulary.measurements_file import gpu_session_pageable_gbps, load_measurements  # noqa: E402

DOC = REPO / "docs" / "accuracy.md"


RUNTIME_DIRS = ("wan",)  # calibration/<gpu>/<runtime>/: another runtime's calibrations of that GPU


def calibrations(root: Path) -> list[tuple[Path, str]]:
    """(directory, model) of every measurements file under a calibration root, each runtime's
    (calibration/<gpu>/ for diffusers, calibration/<gpu>/<runtime>/ for the others)."""
    files = [*root.glob("*/*.measurements.jsonl"),
             *(p for runtime in RUNTIME_DIRS for p in root.glob(f"*/{runtime}/*.measurements.jsonl"))]
    return [(p.parent, p.name.removesuffix(".measurements.jsonl")) for p in sorted(files)]


def gpu_of(model_dir: Path) -> Path:
    """The GPU's directory of a calibration directory (a runtime's sits inside it)."""
    return model_dir.parent if model_dir.name in RUNTIME_DIRS else model_dir


def ceilings_of(gpu_dir: Path) -> Ceilings | None:
    """The ceilings measured on a calibrated GPU (None where its ceilings.json is absent)."""
    path = gpu_dir / "ceilings.json"
    if not path.exists():
        return None
    return Ceilings.model_validate(json.loads(path.read_text())["ceilings"])


def plan_calibration_dir(gpu_dir: Path, model: str, ms: list[Measurement], ceilings: Ceilings | None) -> Path | None:
    """Where `wanfit plan` finds this GPU's calibration: the shipped ones (None), or a fit of the
    measurements when the calibration itself is not committed yet."""
    if (gpu_dir / f"{model}.json").exists():
        return None
    return fitted_calibration_dir(gpu_dir.name, model, ms, ceilings)


def score(measured: dict[tuple[Path, str], list[Measurement]], details: bool
          ) -> tuple[list[HeldOutScores], list[CarryOver], list[PlanTiming], list[str]]:
    """Held-out scores and notes of every calibration, the carry-over between the models of each GPU, and
    `wanfit plan`'s timing once per GPU."""
    held_out, carry, timing, notes = [], [], [], []
    for (gpu_dir, model), ms in measured.items():
        gpu = gpu_of(gpu_dir).name
        label, ceilings = f"{gpu_dir.relative_to(gpu_of(gpu_dir).parent)}/{model}", ceilings_of(gpu_of(gpu_dir))
        others = {other: oms for (other_dir, other), oms in measured.items() if other_dir == gpu_dir and other != model}
        siblings = [m for oms in others.values() for m in oms]
        scores = held_out_scores(label, ms, gpu, model, ceilings, siblings,
                                 gpu_session_pageable_gbps(gpu_dir, [*ms, *siblings]))
        held_out.append(scores)
        if details:
            for size, line in scores.details:
                print(size, line)
        notes += model_offload_decode_notes(label, ms)
        carry += [carry_over(gpu, model, ms, other, oms, ceilings) for other, oms in others.items()]
        if gpu_dir.name not in RUNTIME_DIRS and not any(t.gpu == gpu for t in timing):
            timing.append(time_plan(gpu, plan_calibration_dir(gpu_dir, model, ms, ceilings)))
    return held_out, carry, timing, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration-root", type=Path, default=REPO / "calibration")
    parser.add_argument("--reports", type=Path, default=REPO / "verify-reports")
    parser.add_argument("--write", action="store_true", help="write docs/accuracy.md")
    parser.add_argument("--details", action="store_true", help="print every held-out prediction")
    args = parser.parse_args()
    os.chdir(REPO)  # paths in the written document are relative to the repository
    reports = Path(os.path.relpath(args.reports.resolve(), REPO))
    measured = {(gpu_dir, model): load_measurements(gpu_dir / f"{model}.measurements.jsonl")
                for gpu_dir, model in calibrations(args.calibration_root)}
    if not measured:
        print(f"no measurements under {args.calibration_root}: nothing to score")
        return 1
    held_out, carry, timing, notes = score(measured, args.details)
    tables = render(held_out, carry, timing)
    print(tables)
    if args.write:
        write_doc(tables, notes, DOC, reports)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
