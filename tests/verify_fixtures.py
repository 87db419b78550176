"""Builders of Measurements and Candidates for the verify unit tests.

These are constructed pydantic objects with plausible values (loosely shaped like the H100 runs of
Wan2.2-TI2V-5B at 1280x704x121) to exercise the comparison and report logic; they are NOT
measurements and nothing here is reported as one.
"""

from __future__ import annotations

from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.measurement import Measurement, MemorySample, StageRecord
from wanfit.vocabulary.plan_report import Candidate, StagePrediction
from wanfit.vocabulary.workload import Plan, Workload

WORKLOAD = Workload(model="wan2.2-ti2v-5b", height=704, width=1280, frames=121, steps=50, guidance=5.0)
A14B = Workload.for_model("wan2.2-t2v-a14b", steps=6)


def environment(**kw) -> Environment:
    values = dict(gpu_name="NVIDIA H100 80GB HBM3", gpu_total_gib=79.19, driver="580.159.04", cuda="13.0",
                  torch="2.11.0+cu130", diffusers="0.42.1", python="3.12.3", platform="Linux-x86_64",
                  allocator_conf="expandable_segments:True", wanfit="0.1.0")
    values.update(kw)
    return Environment(**values)


def measurement(
    *,
    workload: Workload = WORKLOAD,
    plan: Plan | None = None,
    step_times: list[float] | None = None,
    experts: list[int] | None = None,
    step_sm: list[float] | None = None,
    status: str = "ok",
    failed_stage: str | None = None,
    source: str = "checkpoint",
    init: tuple[float, float] = (20.0, 12.5),  # (time s, device peak GiB)
    text: tuple[float, float] = (0.5, 23.5),
    prepare: tuple[float, float] = (0.2, 13.0),
    vae: tuple[float, float] | None = (10.3, 45.0),
    step_peak: float = 20.5,
    step_alloc: float = 17.2,
    vae_alloc: float = 33.1,
    context: float = 0.6,
    idle: float = 0.5,
    timeline: bool = True,
    memory_cap_gib: float | None = None,
) -> Measurement:
    """A run: stages back to back from t=0. `vae=None` leaves decode out (a failed run)."""
    plan = plan or Plan()
    step_times = [3.4, 2.46, 2.45, 2.47] if step_times is None else step_times
    step_sm = step_sm or [90.0] * len(step_times)
    stages: list[StageRecord] = []
    t = 0.0

    def add(name, time_s, peak, alloc=None, sm=50.0, **kw):
        nonlocal t
        stages.append(StageRecord(name=name, start_s=t, time_s=time_s, torch_peak_allocated_gib=alloc,
                                  torch_peak_reserved_gib=alloc, device_used_peak_gib=peak, sm_activity_pct=sm,
                                  compute_load=time_s * sm / 100, cpu_pct=100.0, host_rss_peak_gib=30.0, **kw))
        t += time_s

    add("init", init[0], init[1], alloc=init[1] - 1.1, sm=5.0)
    add("text_encode", text[0], text[1], alloc=text[1] - 1.1, sm=60.0)
    add("prepare", prepare[0], prepare[1], alloc=prepare[1] - 1.1, sm=10.0)
    for i, (st, sm) in enumerate(zip(step_times, step_sm, strict=True), 1):
        add("step", st, step_peak, alloc=step_alloc, sm=sm, index=i,
            expert=experts[i - 1] if experts else None)
    if vae is not None:
        add("vae_decode", vae[0], vae[1], alloc=vae_alloc, sm=95.0)
    peaks = [s.device_used_peak_gib for s in stages]
    stages.append(StageRecord(name="total", start_s=0.0, time_s=t + 0.1, device_used_peak_gib=max(peaks),
                              torch_peak_allocated_gib=max(s.torch_peak_allocated_gib for s in stages),
                              host_rss_peak_gib=30.0))
    samples = []
    if timeline:
        for s in stages[:-1]:
            samples.append(MemorySample(t_s=s.start_s, used_gib=s.device_used_peak_gib * 0.8, sm_pct=s.sm_activity_pct))
            samples.append(MemorySample(t_s=s.start_s + s.time_s / 2, used_gib=s.device_used_peak_gib,
                                        sm_pct=s.sm_activity_pct))
    return Measurement(
        id="test00000000", workload=workload, plan=plan, status=status, failed_stage=failed_stage,
        error="CUDA out of memory. Tried to allocate 2.60 GiB" if status == "oom" else
        ("RuntimeError: boom" if status == "error" else None),
        steps_run=len(step_times), stages=stages, resident_weights_gib={"transformer": 9.31, "vae": 2.63},
        source=source, context_gib=context, idle_device_used_gib=idle, activity_source="nvml GPU utilisation (test)",
        timeline=samples, environment=environment(memory_cap_gib=memory_cap_gib),
        created_at="2026-11-23T12:00:00+00:00",
    )


def candidate(
    *,
    fits: bool = True,
    init: tuple[float, float] = (20.0, 12.5),
    text: tuple[float, float] = (0.5, 23.5),
    step_s: float = 2.46,
    denoise: tuple[float, float] | None = None,
    vae: tuple[float, float] = (10.3, 45.0),
    steps: int = 50,
    step_peak: float = 20.5,
    need: dict[str, float] | None = None,
    headroom_gib: float = 30.0,
    expert_switch: tuple[float, float] | None = None,
    plan: Plan | None = None,
) -> Candidate:
    """A prediction. Denoise defaults to 3.4 + (steps - 1) x step_s (first step with warm-up)."""
    need = need or {}
    denoise = denoise or (3.4 + (steps - 1) * step_s, step_peak)
    stages = [
        StagePrediction(name="init", time_s=init[0], peak_vram_gib=init[1], need_gib=need.get("init")),
        StagePrediction(name="text_encode", time_s=text[0], peak_vram_gib=text[1], need_gib=need.get("text_encode")),
        StagePrediction(name="denoise", time_s=denoise[0], peak_vram_gib=denoise[1], need_gib=need.get("denoise")),
    ]
    if expert_switch is not None:
        stages.append(StagePrediction(name="expert_switch", time_s=expert_switch[0], peak_vram_gib=expert_switch[1]))
    stages.append(StagePrediction(name="vae_decode", time_s=vae[0], peak_vram_gib=vae[1],
                                  need_gib=need.get("vae_decode")))
    # The measured total also holds `prepare` (0.2 s) and the 0.1 s after the last stage.
    duration = sum(s.time_s for s in stages) + 0.3
    peak = max(s.peak_vram_gib for s in stages)
    return Candidate(
        plan=(plan or Plan()).knobs(), fits=fits, peak_vram_gib=peak, need_gib=need.get("total", peak),
        headroom_gib=headroom_gib, binding_stage="vae_decode", step_s=step_s, duration_s=duration, stages=stages,
    )
