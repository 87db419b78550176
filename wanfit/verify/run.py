"""`wanfit verify` execution: predict, run the workload for real in a fresh process (capped to the
target's memory when the target is smaller than the local GPU), compare, report.

The parent process never creates a CUDA context: a context here would sit in NVML's device-used
figure during the measured run and inflate every peak. It asks torch only whether CUDA is there
(`torch.cuda.is_available()` does not create a context) and reads the local GPU's name and total
memory through NVML.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from wanfit.measure.cap import make_cap, needs_cap
from wanfit.measure.host_rate import measure_host_rates
from wanfit.verify.compare import Tolerances, outside_torch_gib
from wanfit.verify.report import VerifyReport, build_report
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.units import GIB
from wanfit.vocabulary.workload import Plan, Workload

NO_CUDA = ("`wanfit verify` runs the workload for real and needs a CUDA GPU, and none is visible here; "
           "use `wanfit plan` for a prediction, or run verify on a machine with an NVIDIA GPU")


def _require_cuda() -> None:
    try:
        import torch
    except ModuleNotFoundError:
        raise WanfitError("`wanfit verify` needs torch: pip install 'wanfit[gpu]'") from None
    if not torch.cuda.is_available():
        raise WanfitError(NO_CUDA)


def local_gpu_nvml() -> tuple[str, float] | None:
    """(name, total GiB) of the first visible GPU through NVML, without a CUDA context; None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        name = pynvml.nvmlDeviceGetName(handle)
        total = pynvml.nvmlDeviceGetMemoryInfo(handle).total / GIB
        return (name.decode() if isinstance(name, bytes) else name), total
    except Exception:  # no driver, no NVML library or no GPU: the caller falls back to the run's own record
        return None


def _profile_key_and_memory(gpu: str) -> tuple[str, float]:
    from wanfit.vocabulary.profiles import get_profile

    profile = get_profile(gpu)
    return profile.key, float(profile.memory_gib)


def _local_profile_key(name: str, total_gib: float) -> str | None:
    from wanfit.vocabulary.profiles import match_local_gpu

    profile = match_local_gpu(name, total_gib)
    return profile.key if profile is not None else None


def _check_steps(workload: Workload, steps: int | None) -> int | None:
    if steps is None or steps == workload.steps:
        return None
    if steps < 1 or steps > workload.steps:
        raise WanfitError(f"--steps {steps} must be between 1 and the job's {workload.steps} steps "
                          f"(fewer steps are run and extrapolated to {workload.steps})")
    return steps


def run_verify(
    workload: Workload,
    plan: Plan,
    target_gpu: str,
    steps: int | None = None,
    tolerance_memory: float = 0.05,
    tolerance_time: float = 0.10,
    checkpoint: Path | None = None,
    host_pageable_gbps: float | None = None,
    host_d2h_gbps: float | None = None,
    **predict_options,
) -> VerifyReport:
    """Predict `workload` + `plan` on `target_gpu`, run it on the local GPU (capped to the target's
    usable memory when the target is smaller), and compare. `steps` < workload.steps runs fewer
    denoising steps and extrapolates (marked so in the report). `predict_options` (e.g. a
    calibration directory or safety margin) are passed on to the planner's predict_one.

    An offloading plan's time depends on this host's host-to-device rate more than on the GPU (lent
    H100 hosts ran sequential offload 15-22 % apart): its time is predicted at `host_pageable_gbps`,
    or at the rate measured here first when not given; model offload's moves down to host memory at
    `host_d2h_gbps`, the device-to-host rate into fresh pageable memory, or at the one measured here
    when not given (a given host-to-device rate does not skip measuring it)."""
    tolerances = Tolerances(memory=tolerance_memory, time=tolerance_time)
    steps = _check_steps(workload, steps)
    _require_cuda()
    from wanfit.measure.worker import run_in_subprocess
    from wanfit.planner.api import predict_one

    target_key, target_memory = _profile_key_and_memory(target_gpu)
    local = local_gpu_nvml()
    local_key = _local_profile_key(*local) if local is not None else None
    same_gpu = local_key == target_key
    capped = False
    if local is not None and not same_gpu:
        capped = needs_cap(target_memory, local[1])  # refuses a target larger than this GPU

    # Predict before the run: a missing calibration is reported before any GPU time is spent.
    prediction = predict_one(workload, plan, target_key, **predict_options)
    host_rate_source = "given" if host_pageable_gbps is not None else None
    d2h_source = "given"
    if plan.offload != "none":
        moves_down = plan.offload == "model"  # only model offload sends weights back to host memory
        if host_pageable_gbps is None or (moves_down and host_d2h_gbps is None):
            rates = measure_host_rates()
            if host_pageable_gbps is None:
                host_pageable_gbps = rates.h2d_pageable_gbps
                host_rate_source = "measured" if host_pageable_gbps is not None else "not measured"
            if moves_down and host_d2h_gbps is None:
                host_d2h_gbps, d2h_source = rates.d2h_fresh_gbps, "measured"
        if host_pageable_gbps is not None:
            predict_options = {**predict_options, "host_pageable_gbps": host_pageable_gbps}
        if moves_down and host_d2h_gbps is not None:
            predict_options = {**predict_options, "host_d2h_gbps": host_d2h_gbps}
        if host_pageable_gbps is not None or "host_d2h_gbps" in predict_options:
            prediction = predict_one(workload, plan, target_key, **predict_options)
    local_prediction = None
    if not same_gpu and local_key is not None:
        try:
            local_prediction = predict_one(workload, plan, local_key, **predict_options)
        except WanfitError:
            local_prediction = None  # no calibration for the local GPU: time is shown, not scored

    m = run_in_subprocess(workload, plan, steps=steps, memory_cap_gib=target_memory if capped else None,
                          checkpoint=checkpoint)
    env = m.environment
    if env.gpu_name == "cpu":
        raise WanfitError(NO_CUDA)
    if local is None and env.gpu_total_gib > 0:  # no NVML here: decide from the run's own record
        local_key = _local_profile_key(env.gpu_name, env.gpu_total_gib)
        same_gpu = local_key == target_key
    cap = None
    if capped:
        # torch's total_memory is what the fraction multiplies; context + baseline as the run measured them.
        cap = make_cap(target_key, target_memory, env.gpu_total_gib, outside_torch_gib(m))
    return build_report(m, prediction, target_gpu=target_key, target_memory_gib=target_memory, cap=cap,
                        tolerances=tolerances, same_gpu=same_gpu, local_gpu=local_key,
                        local_prediction=local_prediction,
                        host_pageable_gbps=predict_options.get("host_pageable_gbps"), host_rate_source=host_rate_source,
                        host_d2h_gbps=predict_options.get("host_d2h_gbps"), host_d2h_source=d2h_source)


def load_plan_file(path: Path, gpu: str | None = None) -> tuple[Workload, Plan]:
    """Workload and recommended plan from a saved `wanfit plan --format json` (top level `workload`
    and `results`; each result's `recommended` candidate has the `plan`). With several GPUs in the
    file, `gpu` picks one (its key as written in the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WanfitError(f"no plan file at {path}: save one with `wanfit plan --format json > plan.json`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WanfitError(f"{path} is not JSON: save one with `wanfit plan --format json > plan.json`") from None
    if not isinstance(data, dict) or "workload" not in data or "results" not in data:
        raise WanfitError(f"{path} has no top-level `workload` and `results`: it is not a `wanfit plan --format "
                          f"json` output")
    try:
        workload = Workload.model_validate(data["workload"])
    except ValidationError as e:
        raise WanfitError(f"{path}: invalid workload ({e.errors()[0]['msg']})") from None
    results = data["results"] or []
    if gpu is not None:
        results = [r for r in results if r.get("gpu") == gpu]
        if not results:
            have = ", ".join(str(r.get("gpu")) for r in data["results"] or [])
            raise WanfitError(f"{path} has no result for GPU '{gpu}' (it has: {have or 'none'})")
    if not results:
        raise WanfitError(f"{path} has no results: re-run `wanfit plan --format json`")
    if len(results) > 1:
        have = ", ".join(str(r.get("gpu")) for r in results)
        raise WanfitError(f"{path} has results for several GPUs ({have}): pick one with --gpu")
    result = results[0]
    recommended = result.get("recommended")
    if not recommended:
        raise WanfitError(f"{path} recommends no plan for {result.get('gpu')}: pin one with --offload etc.")
    try:
        plan = Plan.model_validate(recommended["plan"])
    except (KeyError, TypeError, ValidationError):
        raise WanfitError(f"{path}: the recommended candidate for {result.get('gpu')} has no valid `plan`") from None
    return workload, plan
