"""`wanfit verify` execution: predict, run the workload for real in a fresh process (capped to the
target's memory when the target is smaller than the local GPU), compare, report.

The parent process never creates a CUDA context: a context here would sit in NVML's device-used
figure during the measured run and inflate every peak. It asks torch only whether CUDA is there and
reads the local GPU's name and total memory through nvidia-smi (wanfit.measure.local_gpu).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pydantic import ValidationError

from wanfit.measure.cap import make_cap, needs_cap
from wanfit.measure.distributed.launch import require_gpus
from wanfit.measure.host_rate import measure_host_rates
from wanfit.measure.local_gpu import local_gpu, no_cuda_error, require_cuda
from wanfit.planner.api import check_options
from wanfit.verify.compare import Tolerances
from wanfit.verify.measured import outside_torch_gib
from wanfit.verify.report import VerifyReport, build_report
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement
from wanfit.vocabulary.measurements_file import append_measurement
from wanfit.vocabulary.plan_report import Candidate
from wanfit.vocabulary.workload import Plan, Workload

DEFAULT_TOLERANCES = Tolerances()


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
        raise WanfitError(f"the steps to run ({steps}) must be between 1 and the job's {workload.steps} steps "
                          f"(fewer steps are run and extrapolated to {workload.steps})")
    return steps


def check_writable(out: Path) -> None:
    """The reports' directory, checked before the GPU run: a bad --out found after it would lose the run."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".wanfit-write-check-"):
            pass
    except OSError as error:
        raise WanfitError(f"--out {out} is not writable ({error.strerror or type(error).__name__}): name a "
                          f"directory you can write to (nothing has run yet)") from None


def save_raw_measurement(m: Measurement, out: Path) -> Path:
    """The run's raw measurement as a JSON line under `out`, written (and fsynced) before any report is built:
    whatever fails after, the GPU time spent is kept (`wanfit calibrate`'s measurements file format)."""
    path = Path(out) / f"{m.workload.model}_{m.id}.measurement.jsonl"
    append_measurement(path, m)
    return path


def _host_rate_options(plan: Plan, h2d_gbps: float | None, d2h_gbps: float | None) -> tuple[dict, str | None, str]:
    """The planner options that time an offloading plan at this host's rates (none for a resident plan),
    and where each rate came from: the host-to-device one "given", "measured" or "not measured" (None
    when neither given nor needed), the device-to-host one "given" or "measured". A rate not given is
    measured here; only model offload moves weights down, so only it needs the device-to-host rate."""
    h2d_source = "given" if h2d_gbps is not None else None
    d2h_source = "given"
    if plan.offload == "none":
        return {}, h2d_source, d2h_source
    moves_down = plan.offload == "model"
    if h2d_gbps is None or (moves_down and d2h_gbps is None):
        rates = measure_host_rates()
        if h2d_gbps is None:
            h2d_gbps = rates.h2d_pageable_gbps
            h2d_source = "measured" if h2d_gbps is not None else "not measured"
        if moves_down and d2h_gbps is None:
            d2h_gbps, d2h_source = rates.d2h_fresh_gbps, "measured"
    options = {}
    if h2d_gbps is not None:
        options["host_pageable_gbps"] = h2d_gbps
    if moves_down and d2h_gbps is not None:
        options["host_d2h_gbps"] = d2h_gbps
    return options, h2d_source, d2h_source


def _local_prediction(workload: Workload, plan: Plan, local_key: str | None, options: dict) -> Candidate | None:
    """The plan predicted for the local GPU, against which a run measured off the target scores time;
    None where no calibration covers the local GPU (time is then shown, not scored)."""
    from wanfit.planner.api import predict_one

    if local_key is None:
        return None
    try:
        return predict_one(workload, plan, local_key, **options)
    except WanfitError:
        return None


def run_verify(
    workload: Workload,
    plan: Plan,
    target_gpu: str,
    steps: int | None = None,
    tolerance_memory: float = DEFAULT_TOLERANCES.memory,
    tolerance_time: float = DEFAULT_TOLERANCES.time,
    checkpoint: Path | None = None,
    host_pageable_gbps: float | None = None,
    host_d2h_gbps: float | None = None,
    wan_repo: Path | None = None,
    out: Path | None = None,
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
    when not given (a given host-to-device rate does not skip measuring it). `out`: the reports' directory,
    checked writable before the run; the raw measurement is saved there as soon as the run ends. A plan on
    several GPUs (plan.gpus > 1) runs one rank per GPU of this host through the same launcher as calibrate
    (wanfit.measure.distributed); its memory is compared on the worst rank, its times on rank 0's clock; a cap
    applies to every rank."""
    tolerances = Tolerances(memory=tolerance_memory, time=tolerance_time)
    steps = _check_steps(workload, steps)
    # Every option is checked before any GPU time is spent (the predictions below check them again).
    check_options(predict_options.get("safety_margin_gib", 0.0), predict_options.get("host_ram_gib"),
                  host_pageable_gbps, host_d2h_gbps)
    if out is not None:
        check_writable(out)
    require_cuda("verify")
    require_gpus(plan.gpus, "verify")
    from wanfit.measure.worker import run_in_subprocess
    from wanfit.planner.api import predict_one

    target_key, target_memory = _profile_key_and_memory(target_gpu)
    local = local_gpu()
    local_key = _local_profile_key(*local) if local is not None else None
    same_gpu = local_key == target_key
    # refuses a target larger than this GPU, before anything runs
    capped = local is not None and not same_gpu and needs_cap(target_memory, local[1])

    # Predict before the run: a missing calibration is reported before any GPU time is spent.
    prediction = predict_one(workload, plan, target_key, **predict_options)
    rate_options, host_rate_source, d2h_source = _host_rate_options(plan, host_pageable_gbps, host_d2h_gbps)
    if rate_options:
        predict_options = {**predict_options, **rate_options}
        prediction = predict_one(workload, plan, target_key, **predict_options)
    local_prediction = None if same_gpu else _local_prediction(workload, plan, local_key, predict_options)

    m = run_in_subprocess(workload, plan, steps=steps, memory_cap_gib=target_memory if capped else None,
                          checkpoint=checkpoint, wan_repo=wan_repo)
    if out is not None:
        save_raw_measurement(m, out)
    env = m.environment
    if env.gpu_name == "cpu":
        raise no_cuda_error("verify")
    if local is None and env.gpu_total_gib > 0:  # no nvidia-smi here: decide from the run's own record
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
