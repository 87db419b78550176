"""`wanfit plan --plot FILE.png`: for each GPU, the need of its best plan against frame count and against
resolution, its usable memory as a line, and the predicted time below, so a reader sees where each GPU stops
fitting. What is predicted is wanfit.planner.sweep's; this lays it out. matplotlib is imported only inside
`plot_sweeps` (the `plot` extra): the CLI asks for it (wanfit.views.output.pyplot) before it sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wanfit.planner.sweep import GpuSweep, SweepPoint, sweep
from wanfit.views.output import missing_extras, pyplot
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import PlanPins, Workload

MEGA = 1e6


def check_plot_path(path: Path) -> None:
    """Before any work: the plot extra is installed and `path` is a PNG in a directory that exists."""
    from wanfit.views.output import pyplot

    try:
        pyplot()
    except ModuleNotFoundError as missing:
        raise missing_extras("plan --plot", "plot", missing) from None
    if path.suffix.lower() != ".png":
        raise WanfitError(f"--plot writes a PNG: give a file name ending in .png, not {path.name}")
    if not path.resolve().parent.is_dir():
        raise WanfitError(f"--plot {path}: the directory {path.resolve().parent} does not exist")


def _frames(p: SweepPoint) -> float:
    return p.workload.frames


def _megapixels(p: SweepPoint) -> float:
    return p.workload.width * p.workload.height / MEGA


def _memory_panel(ax, sweeps: Sequence[GpuSweep], points: Callable[[GpuSweep], list[SweepPoint]],
                  x: Callable[[SweepPoint], float], colors: list) -> None:
    for gpu, color in zip(sweeps, colors, strict=True):
        pts = points(gpu)
        xs = [x(p) for p in pts]
        ax.plot(xs, [p.best.need_gib for p in pts], color=color, lw=1.5, label=f"{gpu.gpu}: best plan's need")
        misses = [p for p in pts if not p.fits]
        ax.scatter([x(p) for p in misses], [p.best.need_gib for p in misses], color=color, marker="x", zorder=3)
        ax.plot(xs, [p.least_need_gib for p in pts], color=color, lw=0.8, ls=":", label=f"{gpu.gpu}: least need")
        ax.axhline(gpu.memory_gib, color=color, lw=1, ls="--", label=f"{gpu.gpu}: {gpu.memory_gib:.1f} GiB usable")
    ax.set_ylabel("need (GiB)")
    ax.set_ylim(bottom=0)


def _time_panel(ax, sweeps: Sequence[GpuSweep], points: Callable[[GpuSweep], list[SweepPoint]],
                x: Callable[[SweepPoint], float], colors: list) -> None:
    for gpu, color in zip(sweeps, colors, strict=True):
        pts = points(gpu)  # no time where nothing fits: that job does not run on the card
        ax.plot([x(p) for p in pts], [p.best.duration_s / 60 if p.fits else math.nan for p in pts], color=color,
                marker="o", ms=3, lw=1.5, label=gpu.gpu)
    ax.set_ylabel("predicted time (min)")
    ax.set_yscale("log")


def _size_ticks(ax, points: list[SweepPoint]) -> None:
    ax.set_xticks([_megapixels(p) for p in points])
    ax.set_xticklabels([f"{p.workload.width}x{p.workload.height}" for p in points], rotation=45, ha="right",
                       fontsize=7)


def plot_sweeps(sweeps: Sequence[GpuSweep], workload: Workload, path: Path) -> Path:
    """A PNG at `path`: need (top) and time (bottom) of each GPU's best plan over frame count (left, at the job's
    size) and over resolution (right, at the job's frames); a cross where no plan fits; the job marked."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=110, sharex="col")
    try:
        colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(sweeps))]
        for col, (points, x) in enumerate(((lambda s: s.by_frames, _frames), (lambda s: s.by_size, _megapixels))):
            _memory_panel(axes[0][col], sweeps, points, x, colors)
            _time_panel(axes[1][col], sweeps, points, x, colors)
            here = workload.frames if col == 0 else workload.width * workload.height / MEGA
            for ax in (axes[0][col], axes[1][col]):
                ax.axvline(here, color="gray", lw=0.8, ls="-.")
                ax.grid(alpha=0.3)
        axes[1][0].set_xlabel(f"frames (at {workload.width}x{workload.height})")
        axes[1][1].set_xlabel(f"width x height (at {workload.frames} frames)")
        _size_ticks(axes[1][1], sweeps[0].by_size)
        axes[0][0].legend(fontsize=7, loc="best")
        axes[1][0].legend(fontsize=7, loc="best")
        fig.suptitle(f"{workload.model}, {workload.steps} steps: the best plan per GPU (x: no plan fits; dash-dot: "
                     "this job)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def write_plot(workload: Workload, gpus: list[str], pins: PlanPins | None, options: dict[str, Any], path: Path) -> Path:
    """`wanfit plan --plot`: sweep the job as planned (the same pins and planner options) and draw it at `path`."""
    return plot_sweeps(sweep(workload, gpus, pins, **options), workload, path)
