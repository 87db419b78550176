"""Which workloads `wanfit plan --plot` predicts: the planned job swept over frame count (at its size) and over
resolution (at its frame count, the aspect ratio kept), with each GPU's best plan at every point, so a picture
shows where each GPU stops fitting. Pure: each point is one plan_report, as `wanfit plan` makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wanfit.planner.api import plan_report
from wanfit.vocabulary.plan_report import Candidate
from wanfit.vocabulary.workload import PlanPins, Workload

FIRST_FRAMES = 5  # the shortest clip worth planning (1 latent frame + 1)
FRAME_STEP = 20  # 21, 41, ..., 361: each one 4k+1, 20 frames apart
LAST_FRAMES = 361  # 15 s at 24 fps: the long jobs users ask about
# Each side of the planned size times these (rounded to the model's stride): quarter size to 1.5x.
SIZE_SCALES = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)


@dataclass(frozen=True)
class SweepPoint:
    workload: Workload
    best: Candidate  # the recommended plan, or when none fits the one that needs least
    fits: bool
    least_need_gib: float  # the smallest need of any plan: the GPU stops fitting where it crosses the usable line


@dataclass(frozen=True)
class GpuSweep:
    gpu: str
    memory_gib: float  # usable memory
    by_frames: list[SweepPoint]
    by_size: list[SweepPoint]


def frame_points(frames: int) -> list[int]:
    """FIRST_FRAMES, then every FRAME_STEP frames from 21 up to LAST_FRAMES or the job's frames if longer; the
    job's own frame count among them."""
    top = max(LAST_FRAMES, frames)
    points = sorted({FIRST_FRAMES, frames, *range(FIRST_FRAMES + 16, top + 1, FRAME_STEP)})
    return points if points[-1] == top else [*points, top]


def size_points(workload: Workload) -> list[tuple[int, int]]:
    """(width, height) of the planned size scaled by SIZE_SCALES, each side a multiple of the model's stride,
    smallest first, no duplicates."""
    stride = workload.spec.spatial_stride

    def side(pixels: int, scale: float) -> int:
        return max(stride, round(pixels * scale / stride) * stride)

    return sorted({(side(workload.width, s), side(workload.height, s)) for s in SIZE_SCALES},
                  key=lambda wh: wh[0] * wh[1])


def _points(workloads: list[Workload], gpus: list[str], pins: PlanPins | None,
            options: dict[str, Any]) -> dict[str, list[SweepPoint]]:
    out: dict[str, list[SweepPoint]] = {}
    for workload in workloads:
        for result in plan_report(workload, gpus, pins, **options).results:
            least = min(result.candidates, key=lambda c: c.need_gib)
            out.setdefault(result.gpu, []).append(SweepPoint(workload, result.recommended or least,
                                                             result.recommended is not None, least.need_gib))
    return out


def sweep(workload: Workload, gpus: list[str], pins: PlanPins | None = None, **options: Any) -> list[GpuSweep]:
    """Each GPU's best plan over frame_points and size_points of `workload`; `options` are plan_report's."""
    values = workload.model_dump()
    by_frames = _points([Workload(**{**values, "frames": f}) for f in frame_points(workload.frames)], gpus, pins,
                        options)
    by_size = _points([Workload(**{**values, "width": w, "height": h}) for w, h in size_points(workload)], gpus,
                      pins, options)
    first = plan_report(workload, gpus, pins, **options)
    return [GpuSweep(r.gpu, r.memory_gib, by_frames[r.gpu], by_size[r.gpu]) for r in first.results]
