"""The importable Python API: what `wanfit plan` prints, as pydantic objects, for tools that embed wanfit.

Pure Python (no torch, no sklearn): predictions come from stored calibrations and GPU profiles.
"""

from __future__ import annotations

from math import isfinite
from pathlib import Path

from wanfit.model.calibration import find_calibration, source_note
from wanfit.model.predict import predict
from wanfit.model.sharding import NoInterconnect
from wanfit.planner.advise import advise
from wanfit.planner.hardware import hardware_options, more_gpus_line
from wanfit.vocabulary.catalog import official_task
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.paths import calibration_dirs
from wanfit.vocabulary.plan_report import SAFETY_MARGIN_GIB, Candidate, GpuResult, PlanReport
from wanfit.vocabulary.profiles import GpuProfile, get_profile
from wanfit.vocabulary.workload import LAYOUT_KNOBS, MAX_GPUS, Plan, PlanPins, Workload

# When nothing fits one GPU, these counts are tried in turn for the reason's suggestion.
SUGGESTED_GPU_COUNTS = (2, 4, 8)


def check_options(safety_margin_gib: float, host_ram_gib: float | None, host_pageable_gbps: float | None = None,
                  host_d2h_gbps: float | None = None) -> None:
    """The planner's numeric options: finite and in range (a NaN compares False with every bound, so each
    check says what it accepts rather than what it refuses)."""
    if not (isfinite(safety_margin_gib) and safety_margin_gib >= 0):
        raise WanfitError(f"--margin (the safety margin) must be a finite number of GiB >= 0, e.g. 1, "
                          f"not {safety_margin_gib:g}")
    if host_ram_gib is not None and not (isfinite(host_ram_gib) and host_ram_gib > 0):
        raise WanfitError(f"--host-ram must be a finite positive number of GiB (leave it out for no limit), "
                          f"not {host_ram_gib:g}")
    if host_pageable_gbps is not None and not (isfinite(host_pageable_gbps) and host_pageable_gbps > 0):
        raise WanfitError(f"--host-pageable-gbps must be a finite positive number of GB/s, not "
                          f"{host_pageable_gbps:g} (lent H100 hosts measured 6.4 to 9.2 GB/s)")
    if host_d2h_gbps is not None and not (isfinite(host_d2h_gbps) and host_d2h_gbps > 0):
        raise WanfitError(f"--host-d2h-gbps must be a finite positive number of GB/s, not {host_d2h_gbps:g} "
                          f"(lent H100 hosts measured 1.15 to 1.37 GB/s into fresh pageable memory)")


def plan_report(workload: Workload, gpus: list[str], pins: PlanPins | None = None,
                safety_margin_gib: float = SAFETY_MARGIN_GIB, host_ram_gib: float | None = None,
                calibration_dir: Path | None = None, host_pageable_gbps: float | None = None,
                host_d2h_gbps: float | None = None, reused_pipeline: bool = False,
                gpu_counts: list[int] | None = None) -> PlanReport:
    """Every plan for `workload` on each GPU (profile keys or aliases) and each GPU count, ranked, with a
    recommendation per GPU kind and count, and the hardware options ranked when there are several.

    `pins` fixes plan knobs (`PlanPins(offload="model", vae_tiling=False)`; the knobs it leaves None
    are searched); `safety_margin_gib` is kept free on the GPU; `host_ram_gib` limits the weights
    offloading plans keep in system memory; `calibration_dir` is searched before the shipped
    calibrations; `host_pageable_gbps` is the host's measured host-to-device rate from pageable
    memory, at which offloading plans copy; `host_d2h_gbps` its device-to-host rate into fresh
    pageable memory, at which model offload sends models down (`wanfit verify` of a model-offload
    plan measures both and records them); `reused_pipeline` predicts one more video from a process
    that keeps its pipeline built (a server): no init time, no first-call setup; `gpu_counts` the GPUs of
    one host for one video to compare (default: the pinned count, else 1); when nothing fits one GPU, the
    reason names the fewest GPUs of that kind that fit."""
    check_options(safety_margin_gib, host_ram_gib, host_pageable_gbps, host_d2h_gbps)
    if pins is not None and not isinstance(pins, PlanPins):
        raise WanfitError(f"pins must be a PlanPins (wanfit.vocabulary.workload.PlanPins(offload='model', ...)), "
                          f"not {type(pins).__name__}")
    if not gpus:
        raise WanfitError("name at least one GPU (e.g. --gpu l40s; `wanfit gpus` lists them)")
    pins = pins or PlanPins()
    counts = check_gpu_counts(gpu_counts or [pins.gpus or 1])
    dirs = calibration_dirs(calibration_dir)
    runtime = pins.runtime or "diffusers"
    if runtime == "wan":
        official_task(workload.model)
    options = {"safety_margin_gib": safety_margin_gib, "host_ram_gib": host_ram_gib, "host_pageable_gbps":
               host_pageable_gbps, "host_d2h_gbps": host_d2h_gbps, "reused_pipeline": reused_pipeline}
    results = []
    for profile in _unique_profiles(gpus):
        calibration, _ = find_calibration(profile.key, workload.model, dirs, runtime)

        def on(count: int, profile=profile, calibration=calibration) -> GpuResult:
            try:
                result = advise(workload, calibration, profile, pins.overridden_by(PlanPins(gpus=count)), **options)
            except WanfitError as refused:
                # No plan for that GPU kind or count alone (no interconnect figure; a layout the workload cannot
                # take): said in its result while the others are compared; on its own, the one-line error.
                if not (isinstance(refused, NoInterconnect) or len(counts) > 1) or count == 1:
                    raise
                return GpuResult(gpu=profile.key, gpu_count=count, memory_gib=profile.memory_gib,
                                 calibration=calibration.label, recommended=None, reason=str(refused), candidates=[])
            return result.model_copy(update={"gpu_count": count})

        kind = [on(count) for count in counts]
        if gpu_counts is None and kind[0].recommended is None and kind[0].gpu_count == 1 and \
                not pins.given().keys() & set(LAYOUT_KNOBS):
            kind[0] = _with_more_gpus(kind[0], on)
        results += kind
    hardware = hardware_options(results) if len(results) > 1 else []
    return PlanReport(workload=workload, safety_margin_gib=safety_margin_gib, reused_pipeline=reused_pipeline,
                      results=results, hardware=hardware)


def _unique_profiles(gpus: list[str]) -> list[GpuProfile]:
    seen, profiles = set(), []
    for name in gpus:
        profile = get_profile(name)
        if profile.key not in seen:
            seen.add(profile.key)
            profiles.append(profile)
    return profiles


def check_gpu_counts(counts: list[int]) -> list[int]:
    """GPU counts to compare: each from 1 to MAX_GPUS, each once, in the order given."""
    for count in counts:
        if not 1 <= count <= MAX_GPUS:
            raise WanfitError(f"--gpus counts must be from 1 to {MAX_GPUS} (the GPUs of one host), not {count}")
    return list(dict.fromkeys(counts))


def _with_more_gpus(single: GpuResult, on) -> GpuResult:
    """Nothing fits one GPU: try 2, 4 and 8 of them and name the fewest that fit in the reason."""
    tried = []
    for count in SUGGESTED_GPU_COUNTS:
        try:
            tried.append(on(count))
        except WanfitError:  # no layout of that many GPUs for this model (heads)
            continue
        if tried[-1].recommended is not None:
            break
    line = more_gpus_line(tried)
    return single if line is None else single.model_copy(update={"reason": f"{single.reason}; {line}"})


def predict_one(workload: Workload, plan: Plan, gpu: str, calibration_dir: Path | None = None,
                safety_margin_gib: float = SAFETY_MARGIN_GIB, host_ram_gib: float | None = None,
                host_pageable_gbps: float | None = None, host_d2h_gbps: float | None = None,
                reused_pipeline: bool = False) -> Candidate:
    """The prediction for one workload + plan on one GPU (verify puts a measurement beside it);
    `host_pageable_gbps`, `host_d2h_gbps` and `reused_pipeline` as in plan_report."""
    check_options(safety_margin_gib, host_ram_gib, host_pageable_gbps, host_d2h_gbps)
    profile = get_profile(gpu)
    if plan.runtime == "wan":
        official_task(workload.model)
    calibration, _ = find_calibration(profile.key, workload.model, calibration_dirs(calibration_dir), plan.runtime)
    cand = predict(workload, plan, calibration, profile, host_pageable_gbps=host_pageable_gbps,
                   host_d2h_gbps=host_d2h_gbps, reused_pipeline=reused_pipeline).candidate(
        profile.memory_gib, safety_margin_gib, host_ram_gib)
    if (note := source_note(workload.model, calibration)) is not None:
        cand = cand.model_copy(update={"notes": [note, *cand.notes]})
    return cand
