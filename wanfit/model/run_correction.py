"""One measured run corrects a GPU: `wanfit calibrate --gpu KEY --from-run FILE`.

A user who ran one Wan job on a GPU wanfit has no calibration of (a `wanfit verify` report, or a small JSON:
{gpu, workload, plan, runtime, step_s, decode_s, peak_allocated_gib}) gives that run here. Its steady step and VAE
decode are set beside what the pure cross-GPU transfer predicts for the same workload and plan, and the factors
that close the gap are written as a light calibration (wanfit.vocabulary.corrections): the step's kernel classes
(its GEMMs, attention backend, elementwise chain, FP64 RoPE) take the step factor, the decode's convolutions the
decode factor, the elementwise chain their time-weighted blend. Every later prediction for that GPU applies them
before anything else and names the file. Memory is not corrected (it carries over between GPUs as measured).
Pure Python: no torch (the run was measured elsewhere).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from wanfit import __version__
from wanfit.model import kernel_classes as kc
from wanfit.model.calibration import find_calibration
from wanfit.model.context import PredictContext
from wanfit.model.predict import predict
from wanfit.model.stages import denoise, host, vae_decode
from wanfit.model.transfer import without_corrections
from wanfit.vocabulary.corrections import RunCorrection, RunFigures, save_correction
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.paths import calibration_dirs
from wanfit.vocabulary.profiles import get_profile
from wanfit.vocabulary.workload import Plan, Workload

SMALL_FORM = "{gpu, workload, plan, runtime, step_s, decode_s, peak_allocated_gib}"


def calibrate_from_run(gpu: str, run_file: Path, calibration_dir: Path | None = None) -> tuple[Path, RunCorrection]:
    """Correct GPU `gpu` (profile key or alias) from the run in `run_file` (a verify report JSON or the small form
    SMALL_FORM); write `<calibration_dir>/<gpu>/corrections/<model>.json` (default: the first calibration
    directory, WANFIT_CALIBRATION_DIR or the shipped one) and return its path and content. Bad input: one-line
    WanfitError saying what to do."""
    profile = get_profile(gpu)
    run = _read_run(Path(run_file))
    workload, plan, figures = _parse_run(run, profile.key, Path(run_file))
    dirs = calibration_dirs(calibration_dir) if calibration_dir is not None and Path(calibration_dir).is_dir() \
        else calibration_dirs()
    cal, _ = find_calibration(profile.key, workload.model, dirs, plan.runtime)
    if cal.gpu == profile.key:
        raise WanfitError(f"{profile.key} has its own calibration ({cal.label}): a run corrects a GPU predicted by "
                          f"transfer only; add the run to that calibration with `wanfit calibrate --gpu "
                          f"{profile.key} --model {workload.model}` instead")
    with without_corrections():
        pc = PredictContext(workload, plan, cal, profile, first_in_process=False, reused_pipeline=True)
        base = denoise.base_step_s(pc)
        step = denoise.step_s(pc, base)
        attention = denoise._attention_extra_s(pc)  # corrected with the step (kernel_classes.step_correction)
        compute = vae_decode.compute_s(pc)
        decode = vae_decode.time_s(pc, host.move_s)
        peak = max(s.allocated_gib for s in predict(workload, plan, cal, profile, first_in_process=False,
                                                    reused_pipeline=True).stages)
    corrected_step = base + attention
    step_factor = (figures["step_s"] - (step - corrected_step)) / corrected_step
    decode_factor = None
    if figures.get("decode_s") is not None and compute > 0:
        decode_factor = (figures["decode_s"] - (decode - compute)) / compute
    for name, factor in (("step", step_factor), ("decode", decode_factor)):
        if factor is not None and not 0.1 <= factor <= 10.0:
            raise WanfitError(f"the run's {name} is {factor:.2f}x what the transfer predicts for {profile.key}: not "
                              f"a rate correction (a different plan, GPU or software than the file says?); check "
                              f"{run_file}")
    correction = RunCorrection(
        gpu=profile.key, model=workload.model, runtime=plan.runtime, calibration=cal.label,
        workload=workload.model_dump(mode="json"), plan=plan.model_dump(mode="json"),
        step_factor=round(step_factor, 4), decode_factor=None if decode_factor is None else round(decode_factor, 4),
        class_factors=_class_factors(pc, step_factor, decode_factor),
        figures=RunFigures(step_s=figures["step_s"], decode_s=figures.get("decode_s"),
                           peak_allocated_gib=figures.get("peak_allocated_gib"), predicted_step_s=round(step, 4),
                           predicted_decode_s=round(decode, 4) if figures.get("decode_s") is not None else None,
                           predicted_peak_allocated_gib=round(peak, 3)),
        source=str(run_file), environment=dict(run.get("environment") or {}),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), wanfit_version=__version__,
    )
    target_dir = Path(calibration_dir) if calibration_dir is not None else dirs[0]
    return save_correction(correction, target_dir), correction


def _read_run(path: Path) -> dict[str, Any]:
    try:
        run = json.loads(path.read_text())
    except OSError as exc:
        raise WanfitError(f"cannot read run file {path}: {exc.strerror or exc}; give a `wanfit verify` report JSON "
                          f"or a JSON {SMALL_FORM}") from None
    except ValueError as exc:
        raise WanfitError(f"run file {path} is not JSON ({exc}); give a `wanfit verify` report JSON or a JSON "
                          f"{SMALL_FORM}") from None
    if not isinstance(run, dict):
        raise WanfitError(f"run file {path} holds no JSON object; give a `wanfit verify` report JSON or a JSON "
                          f"{SMALL_FORM}")
    return run


def _parse_run(run: dict[str, Any], gpu: str, path: Path) -> tuple[Workload, Plan, dict[str, float | None]]:
    """The run's workload, plan and measured figures, from a verify report or the small form."""
    report = "measurement" in run
    try:
        fields = dict(run["workload"])
        workload = Workload(**fields) if report else Workload.for_model(fields.pop("model"), **fields)
        plan_fields = dict(run["plan"])
        if not report and run.get("runtime"):
            plan_fields["runtime"] = run["runtime"]
        plan = Plan(**plan_fields)
    except KeyError as missing:
        raise WanfitError(f"run file {path} has no {missing}: give a `wanfit verify` report JSON or a JSON "
                          f"{SMALL_FORM}") from None
    except (TypeError, ValidationError, WanfitError) as exc:
        if isinstance(exc, WanfitError):
            raise WanfitError(f"run file {path}: {exc}") from None
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "workload/plan"
        raise WanfitError(f"run file {path}: {where}: {first['msg']}; fix the workload or plan there") from None
    if plan.gpus > 1:  # its step is one rank's, with communication: not the one-GPU step the factors correct
        raise WanfitError(f"run file {path} ran on {plan.gpus} GPUs: a correction is made from a one-GPU run of "
                          f"{gpu} (verify it with --gpus 1)")
    ran_on = run.get("local_gpu") or run.get("gpu") or (None if report else gpu)
    if ran_on is not None and get_profile(str(ran_on)).key != gpu:
        raise WanfitError(f"run file {path} was measured on {ran_on}, not {gpu}: give --gpu {ran_on}")
    figures = _report_figures(run) if report else {k: run.get(k) for k in ("step_s", "decode_s", "peak_allocated_gib")}
    for key, value in figures.items():
        if value is not None and (not isinstance(value, int | float) or not 0 < value < 1e6):
            raise WanfitError(f"run file {path}: {key} = {value!r} is not a positive number of seconds/GiB; fix it")
    if figures.get("step_s") is None:
        raise WanfitError(f"run file {path} has no steady step time (step_s, or a verify report that ran >= 2 "
                          f"steps); run `wanfit verify` with --run-steps 2 or more")
    return workload, plan, figures


def _report_figures(run: dict[str, Any]) -> dict[str, float | None]:
    stages = run["measurement"].get("stages") or []
    decode = next((s.get("time_s") for s in stages if s.get("name") == "vae_decode"), None)
    peaks = [s["torch_peak_allocated_gib"] for s in stages if s.get("torch_peak_allocated_gib") is not None]
    return {"step_s": run.get("steady_step_s"), "decode_s": decode, "peak_allocated_gib": max(peaks, default=None)}


def _class_factors(pc: PredictContext, step: float, decode: float | None) -> dict[str, float]:
    """The factor each kernel class of the run takes: the step's classes the step's, the decode's convolutions
    the decode's, the elementwise chain the blend of the two weighted by its seconds in each stage."""
    factors: dict[str, float] = {}
    weights: dict[str, list[tuple[float, float]]] = {}
    for key, (seconds, _) in kc.ledger(pc).items():
        stage, cls = key.split(":")[:2]
        if cls == "attention_pinned":
            cls = f"attention_{pc.plan.attention}"
        factor = step if stage == "step" else decode
        if factor is not None:
            weights.setdefault(cls, []).append((seconds, factor))
    for cls, pairs in weights.items():
        total = sum(s for s, _ in pairs)
        factors[cls] = round(sum(s * f for s, f in pairs) / total if total else pairs[0][1], 4)
    return factors
