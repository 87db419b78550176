"""The Markdown bench/accuracy.py prints (its tables) and writes (docs/accuracy.md)."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from accuracy_carry_over import CarryOver
from accuracy_held_out import OFFLOAD_MODES, HeldOutScores
from accuracy_plan_timing import FORMATS, PLAN_REPEATS, PlanTiming
from accuracy_reading import LADDER_READING, READING
from accuracy_verify import run_numbers, verify_section
from sequential_ladder import ladder_section

# What the predictions aim at: peak VRAM and step within these % on the calibrated GPU, plan within seconds.
TARGET_PEAK_PERCENT = 3.0
TARGET_STEP_PERCENT = 5.0
TARGET_PLAN_S = 0.3  # --format json
TARGET_TABLE_S = 0.5  # the table, drawn with rich (issue 20 accepts up to 0.5 s for a command run a few times)


def render(held_out: list[HeldOutScores], carry: list[CarryOver], timing: list[PlanTiming]) -> str:
    """Every table bench/accuracy.py prints, with the sentences that read them."""
    lines = [*held_out_table(held_out), "", *by_offload_table(held_out), "", *carry_over_table(carry)]
    if ladder := ladder_section():
        lines += ["", *ladder, "", LADDER_READING]
    lines += ["", *plan_timing_table(timing)]
    return "\n".join(lines)


def held_out_table(held_out: list[HeldOutScores]) -> list[str]:
    lines = ["| calibration | sizes | points | peak VRAM | steady step | VAE decode | text encode | "
             "knob fallbacks: peak | knob fallbacks: step |", "|---|---|---|---|---|---|---|---|---|"]
    for s in held_out:
        lines.append(f"| {s.label} | {s.sizes} | {s.points} | {s.calibrated.peak.summary()} | "
                     f"{s.calibrated.step.summary()} | {s.vae_decode.summary()} | {s.text_encode.summary('s')} | "
                     f"{s.fallback.peak.summary()} | {s.fallback.step.summary()} |")
    return [*lines, "", "Cells: mean / worst absolute error (n = held-out measurements scored); text encode in "
            "seconds (0.1 s in a reused process, 0.4-0.7 s as its process's first point, 2-5 s under model or "
            "sequential offload; each point predicted as it ran). Targets: peak VRAM "
            f"<= {TARGET_PEAK_PERCENT:g} %, step <= {TARGET_STEP_PERCENT:g} % on the calibrated GPU."]


def by_offload_table(held_out: list[HeldOutScores]) -> list[str]:
    lines = ["The same held-out points by offload mode (calibrated knobs only, the `peak VRAM` and `steady step` "
             "columns above split):", "", "| calibration | offload | peak VRAM | steady step |", "|---|---|---|---|"]
    for s in held_out:
        for mode in OFFLOAD_MODES:
            if mode in s.by_offload:
                errors = s.by_offload[mode]
                lines.append(f"| {s.label} | {mode} | {errors.peak.summary()} | {errors.step.summary()} |")
    return lines


def carry_over_table(carry: list[CarryOver]) -> list[str]:
    lines = ["Carry-over: every model fitted on one model's measurements predicts another model's measured "
             "baseline points (bf16 DiT, no offload) on the same GPU, a DiT it never saw. Signed errors per point.",
             "", "| fitted on -> predicted | steady step | each step (%) | device peak | each peak (%) |",
             "|---|---|---|---|---|"]
    for c in carry:
        each_step = ", ".join(f"{v:+.1f}" for v in c.errors.step.values) or "-"
        each_peak = ", ".join(f"{v:+.1f}" for v in c.errors.peak.values) or "-"
        lines.append(f"| {c.label} | {c.errors.step.summary()} | {each_step} | {c.errors.peak.summary()} | "
                     f"{each_peak} |")
    return lines


def plan_timing_table(timing: list[PlanTiming]) -> list[str]:
    lines = ["| `wanfit plan` | --format json | table |", "|---|---|---|"]
    for t in timing:
        lines.append(f"| --gpu {t.gpu} (wall, subprocess: median of {PLAN_REPEATS}, best) | "
                     f"{_wall_cells(t.wall_s, 'plan')} |")
        if t.instructions_m is not None:
            lines.append(f"| --gpu {t.gpu} (instructions, valgrind) | {t.instructions_m['json'][0]:.0f} M | "
                         f"{t.instructions_m['table'][0]:.0f} M |")
        lines.append(f"| floor: `bench/plan_floor.py` (wall, run in turn with the line above) | "
                     f"{_wall_cells(t.wall_s, 'floor')} |")
    counted = next((t.instructions_m for t in timing if t.instructions_m is not None), None)
    if counted is not None:
        lines.append(f"| floor (instructions, valgrind) | {counted['json'][1]:.0f} M | {counted['table'][1]:.0f} M |")
    lines.append(f"\nTarget: `plan` <= {TARGET_PLAN_S:g} s with --format json, <= {TARGET_TABLE_S:g} s for the table. "
                 f"Measured on the machine that ran this script ({os.cpu_count()} CPU cores). The floor is the smallest "
                 "command on the same stack (`bench/plan_floor.py`: typer parsing plan-like options, one pydantic "
                 "model printed as JSON or as a line of text); the difference is wanfit's own code (its models, "
                 "calibrations, predictions, and the table, which it draws with rich).")
    return lines


def _wall_cells(wall_s: dict[str, list[float]], who: str) -> str:
    """'median s (best b)' of `who` ("plan" or "floor") for each format, as table cells."""
    return " | ".join(f"{statistics.median(wall_s[f'{who} {fmt}']):.2f} s (best {min(wall_s[f'{who} {fmt}']):.2f})"
                      for fmt in FORMATS)


def write_doc(tables: str, notes: list[str], path: Path, reports_dir: Path) -> None:
    """docs/accuracy.md: the printed tables, notes on them, the verify summary and the remarks on it."""
    numbers = run_numbers(reports_dir)
    doc = [
        "# Accuracy",
        "",
        "Generated by `python bench/accuracy.py --write` from the committed measurements under `calibration/` "
        "and the verify reports under `verify-reports/`; do not edit by hand.",
        "",
        "## Held-out error of the shipped calibrations",
        "",
        "Leave-one-size-out: every measurement of one workload size is removed, the calibration refitted from "
        "the rest, and the removed measurements predicted; training error is never reported. Peak VRAM is the "
        "device-level peak (what nvidia-smi shows) over the stages the run measured; the step is the steady "
        "step (the fastest after the first: calibration points run 2-3 steps, and a step is only ever slowed "
        "by something else). `knob fallbacks` scores points whose knob was measured at the removed "
        "size only, so its prediction fell back to the analytic estimate.",
        "",
        tables,
        "",
        *notes,
        "",
        verify_section(reports_dir),
        "",
        "## Reading the verify runs",
        "",
        *(line.format(**numbers) for line in READING),
        "",
    ]
    path.write_text("\n".join(doc))
