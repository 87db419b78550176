"""Hardware advice: each GPU kind x GPU count of a report, with its recommended plan, ranked by time and by
GPU-hours, and the several-GPU option suggested when nothing fits one GPU. Pure Python (the `plan` path)."""

from __future__ import annotations

from wanfit.planner.advise import describe
from wanfit.vocabulary.plan_report import GpuResult, HardwareOption
from wanfit.vocabulary.units import fmt_seconds
from wanfit.vocabulary.workload import Plan


def option_summary(result: GpuResult) -> str:
    """'4 x l40s, Ulysses 4 + DiT FSDP: 23.1 GiB per GPU, 6m12s' (or why nothing fits)."""
    head = f"{result.gpu_count} x {result.gpu}" if result.gpu_count > 1 else result.gpu
    rec = result.recommended
    if rec is None:
        return f"{head}: no plan fits"
    per = " per GPU" if result.gpu_count > 1 else ""
    return f"{head}, {describe(Plan(**rec.plan))}: {rec.need_gib:.1f} GiB{per}, {fmt_seconds(rec.duration_s)}"


def hardware_options(results: list[GpuResult]) -> list[HardwareOption]:
    """Every result as an option; the fitting ones ranked by duration and by GPU-hours (ties: fewer GPUs)."""
    single = {r.gpu: r.recommended.duration_s for r in results if r.gpu_count == 1 and r.recommended}
    options = []
    for r in results:
        rec = r.recommended
        figures = {}
        if rec is not None:
            figures = {"need_gib": rec.need_gib, "duration_s": rec.duration_s,
                       "gpu_hours": r.gpu_count * rec.duration_s / 3600,
                       "speedup": single[r.gpu] / rec.duration_s if r.gpu in single else None}
        options.append(HardwareOption(gpu=r.gpu, gpu_count=r.gpu_count, fits=rec is not None,
                                      summary=option_summary(r), **figures))
    fitting = [o for o in options if o.fits]
    by_time = sorted(fitting, key=lambda o: (o.duration_s, o.gpu_count))
    by_cost = sorted(fitting, key=lambda o: (o.gpu_hours, o.gpu_count))
    ranked = {id(o): {"rank_by_time": by_time.index(o) + 1, "rank_by_gpu_hours": by_cost.index(o) + 1}
              for o in fitting}
    options = [o.model_copy(update=ranked.get(id(o), {})) for o in options]
    return sorted(options, key=lambda o: (o.rank_by_time is None, o.rank_by_time or 0, o.gpu, o.gpu_count))


def more_gpus_line(tried: list[GpuResult]) -> str | None:
    """When nothing fits one GPU: the fewest GPUs of that kind that fit, as the reason's last clause."""
    fitting = [r for r in tried if r.recommended is not None]
    if not fitting:
        return None
    best = min(fitting, key=lambda r: r.gpu_count)
    return f"on several GPUs: {option_summary(best)} (--gpus {best.gpu_count})"
