"""`wanfit calibrate`: measure a model on the local GPU over its grid (wanfit.model.calibration_grid), then fit.

Every point is appended to
calibration/<gpu>/<model>.measurements.jsonl as it finishes; a rerun resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from wanfit.measure.distributed.grid import distributed_points
from wanfit.measure.distributed.launch import require_gpus
from wanfit.measure.host_rate import measure_host_rates
from wanfit.measure.local_gpu import local_gpu, require_cuda
from wanfit.measure.worker import Job, run_jobs
from wanfit.model.calibration import runtime_dir
from wanfit.model.calibration_grid import CHECKPOINT_POINT, GRIDS, NO_RESET_CHECK, OFFICIAL_GRIDS, RESET_CHECK_TAG
from wanfit.vocabulary.catalog import get_model
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurements_file import (
    append_json_line,
    gpu_session_pageable_gbps,
    load_measurements,
    session_windows,
)
from wanfit.vocabulary.workload import Plan, Runtime, Workload


def grid_jobs(model: str, quick: bool = False, checkpoint: Path | None = None, runtime: Runtime = "diffusers",
              wan_repo: Path | None = None) -> list[Job]:
    """The model's grid for a runtime; with `checkpoint` (a directory save_random_checkpoint wrote) also the
    checkpoint-load point, last (diffusers). `wan_repo`: the official code's checkout, for runtime wan."""
    spec = get_model(model)
    grids = GRIDS if runtime == "diffusers" else OFFICIAL_GRIDS
    if model not in grids:
        raise WanfitError(f"no {runtime} calibration grid for {model}: calibrate one of {', '.join(grids)} "
                          f"(models sharing a DiT use its calibration)")
    d = spec.defaults
    jobs = []
    for gi, (plan, points) in enumerate(grids[model]):
        chosen = points[:2] if quick else points
        for h, w, f, steps, decode in chosen:
            wl = Workload(model=model, height=h, width=w, frames=f, steps=steps, guidance=d.guidance,
                          guidance_2=d.guidance_2)
            jobs.append(Job(workload=wl, plan=plan, steps=steps, decode=decode,
                            wan_repo=str(wan_repo) if wan_repo else None))
        if gi == 0 and (runtime, model) not in NO_RESET_CHECK:
            first = jobs[0]
            jobs.append(first.model_copy(update={"tag": RESET_CHECK_TAG}))
    if checkpoint is not None and runtime == "diffusers":
        h, w, f, steps, decode = CHECKPOINT_POINT
        wl = Workload(model=model, height=h, width=w, frames=f, steps=steps, guidance=d.guidance,
                      guidance_2=d.guidance_2)
        jobs.append(Job(workload=wl, plan=Plan(), steps=steps, decode=decode, checkpoint=str(checkpoint)))
    return jobs


def distributed_jobs(model: str, runtime: Runtime, gpus: int, quick: bool = False,
                     wan_repo: Path | None = None) -> list[Job]:
    """`calibrate --gpus N`'s points (wanfit.measure.distributed.grid): each runs on N ranks."""
    return [Job(workload=wl, plan=plan, steps=size[3], decode=size[4], wan_repo=str(wan_repo) if wan_repo else None)
            for wl, plan, size in distributed_points(model, runtime, gpus, quick)]


def measurements_dir(gpu_dir: Path, runtime: Runtime, gpus: int = 1) -> Path:
    """Where a model's measurements go: the runtime's folder, and under it gpus-<N>/ for N GPUs (kept apart from
    the one-GPU points, which the stage fits read)."""
    base = runtime_dir(gpu_dir, runtime)
    return base / f"gpus-{gpus}" if gpus > 1 else base


def save_checkpoint_dir(model: str, path: Path) -> None:
    """Save the model's random-weight build as a checkpoint in a separate process (the calibrating
    process keeps the GPU clean for the points)."""
    code = ("import sys; from wanfit.vocabulary.catalog import get_model; "
            "from wanfit.measure.build import save_random_checkpoint; "
            "save_random_checkpoint(get_model(sys.argv[1]), sys.argv[2], 'cuda')")
    subprocess.run([sys.executable, "-c", code, model, str(path)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def _check_gpu(gpu: str, local: tuple[str, float] | None, console) -> str:
    """The profile key to file the calibration under; warns when the local GPU (local_gpu()'s (name, GiB))
    is another one or could not be identified."""
    from wanfit.vocabulary.profiles import get_profile, match_local_gpu

    wanted = get_profile(gpu)
    if local is None:
        console.print(f"[yellow]warning:[/] nvidia-smi did not identify the local GPU; calibrating as {wanted.name}, "
                      f"the GPU the run records is in the calibration's environment")
        return wanted.key
    profile = match_local_gpu(*local)
    if profile is None or profile.key != wanted.key:
        console.print(f"[yellow]warning:[/] local GPU is {local[0]} ({local[1]:.1f} GiB), not {wanted.name}; "
                      f"the mismatch is recorded in the calibration's environment")
    return wanted.key


def measure_session_ceilings(path: Path) -> dict:
    """Measure this machine's ceilings, every session: lent machines of one GPU model differ (pageable
    host copies most). The first session's become `path` (ceilings.json), at which every fit computes
    its features; each session's go into its session record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ceilings.json"
        subprocess.run([sys.executable, "-m", "wanfit.measure.ceilings", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        measured = json.loads(out.read_text())
    # The pageable rate varies from process to process: the median with two more fresh draws, which
    # also measure model offload's rate down to fresh host memory.
    ceilings = measured["ceilings"]
    rates = measure_host_rates(first_h2d=ceilings["h2d_pageable_gbps"])
    ceilings["h2d_pageable_gbps"] = rates.h2d_pageable_gbps
    if rates.d2h_fresh_gbps is not None:
        ceilings["d2h_fresh_gbps"] = rates.d2h_fresh_gbps
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(measured, indent=1))
    return ceilings


@contextmanager
def terminate_unwinds() -> Iterator[None]:
    """SIGTERM (`timeout`, a batch scheduler, `kill`) raises SystemExit while inside, so `finally` blocks run as on
    Ctrl-C: a session cut that way keeps its record (a device call's `timeout 560` killed one that recorded
    nothing, though its four points were kept). The handler is put back on leaving; outside the main thread,
    where Python cannot set one, nothing changes."""
    def exit_on_terminate(signum, _frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, exit_on_terminate)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_calibration(gpu: str, models: list[str], out_dir: Path = Path("calibration"), resume: bool = True,
                    quick: bool = False, fit: bool = True, runtime: Runtime = "diffusers",
                    wan_repo: Path | None = None, gpus: int = 1) -> list[Path]:
    """Measure each model's grid on the local GPU under `runtime`, then fit. Returns the calibration files
    written (calibration/<gpu>/ for diffusers, calibration/<gpu>/<runtime>/ otherwise). With `gpus` N > 1: the
    several-GPU points on N GPUs of this host (distributed_jobs), into <that folder>/gpus-<N>/, not fitted (the
    stage fits are one GPU's): returns the measurement files."""
    from rich.console import Console

    console = Console(stderr=True)
    require_cuda("calibrate")
    require_gpus(gpus, "calibrate")
    key = _check_gpu(gpu, local_gpu(), console)
    gpu_dir = Path(out_dir) / key
    ceilings_path = gpu_dir / "ceilings.json"
    session_ceilings = measure_session_ceilings(ceilings_path)
    written = []
    for model in models:
        meas_path = measurements_dir(gpu_dir, runtime, gpus) / f"{model}.measurements.jsonl"
        meas_path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and meas_path.exists():
            shutil.move(meas_path, meas_path.with_suffix(f".jsonl.{int(time.time())}.bak"))
        started = time.time()
        # The checkpoint (tens of GiB) goes to the system temp directory (TMPDIR) and is removed after;
        # it is saved just before its point runs, so the load reads it from the page cache.
        one_gpu_checkpoint = not quick and runtime == "diffusers" and gpus == 1
        checkpoint_root = Path(tempfile.mkdtemp(prefix=f"wanfit-{model}-")) if one_gpu_checkpoint else None
        jobs = (grid_jobs(model, quick, checkpoint_root / "checkpoint" if checkpoint_root else None, runtime, wan_repo)
                if gpus == 1 else distributed_jobs(model, runtime, gpus, quick, wan_repo))
        try:
            with terminate_unwinds():
                _measure_jobs(model, jobs, meas_path, checkpoint_root is not None, console)
        finally:
            if checkpoint_root is not None:
                shutil.rmtree(checkpoint_root, ignore_errors=True)
            # An interrupted session (Ctrl-C, SIGTERM, a crash) spent its GPU minutes too: they are recorded.
            _record_session(meas_path.parent / f"{model}.sessions.jsonl", started, len(jobs), session_ceilings)
        if gpus > 1:
            written.append(meas_path)
        elif fit:
            written.append(fit_model(key, model, Path(out_dir), runtime))
    return written


def _measure_jobs(model: str, jobs: list[Job], meas_path: Path, checkpoint_last: bool, console) -> None:
    """Measure every job not yet in `meas_path`, with a progress bar; with `checkpoint_last` the last job is the
    checkpoint-load point, whose checkpoint is saved just before it runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    done_before = {m.id for m in load_measurements(meas_path) if m.status in ("ok", "oom")}
    with Progress(TextColumn(f"[bold]{model}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as progress:
        task = progress.add_task("", total=len(jobs))
        progress.update(task, completed=sum(1 for j in jobs if j.id in done_before))

        def on_result(m, task=task, progress=progress):
            label = f"{m.workload.height}x{m.workload.width}x{m.workload.frames} {m.plan.label()}: {m.status}"
            progress.update(task, advance=1, description=label)

        run_jobs(jobs[:-1] if checkpoint_last else jobs, meas_path, on_result=on_result)
        if checkpoint_last and jobs[-1].id not in done_before:
            progress.update(task, description="saving a random-weight checkpoint")
            try:
                save_checkpoint_dir(model, Path(jobs[-1].checkpoint))
            except (subprocess.CalledProcessError, OSError) as error:
                console.print(f"[yellow]warning:[/] {model}: no checkpoint-load point (saving the "
                              f"checkpoint failed: {error}); the init time stays the random builds'")
            else:
                run_jobs(jobs[-1:], meas_path, on_result=on_result)


def _record_session(path: Path, started: float, n_jobs: int, ceilings: dict | None = None) -> None:
    """Each calibrate session's wall time (the calibration's GPU-minutes are their sum) and the ceilings
    measured at its start: ceilings.json keeps only the latest session's, and lent machines of one GPU
    model differ (host-to-device copies from pageable memory, which sequential offload runs on, most)."""
    row = {"started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
           "wall_s": round(time.time() - started, 1), "jobs": n_jobs}
    if ceilings is not None:
        row["ceilings"] = ceilings
    append_json_line(path, json.dumps(row))


def gpu_minutes(gpu_dir: Path, model: str) -> float:
    """The calibrate sessions' wall time of one model, in minutes (every recorded session, interrupted ones too)."""
    return sum(float(row["wall_s"]) for _, _, row in session_windows(gpu_dir / f"{model}.sessions.jsonl")) / 60


def fit_model(gpu_key: str, model: str, out_dir: Path = Path("calibration"), runtime: Runtime = "diffusers") -> Path:
    """Fit the measurements of one model on one GPU under a runtime and write calibration/<gpu>/<model>.json
    (calibration/<gpu>/<runtime>/ for another runtime: the other models' points there join the step fit,
    the GPU's ceilings are shared). Needs no GPU: `wanfit calibrate --fit-only` refits committed measurements."""
    from wanfit.model.calibration import save_calibration
    from wanfit.model.fit import fit_calibration

    gpu_dir = Path(out_dir) / gpu_key
    model_dir = runtime_dir(gpu_dir, runtime)
    meas_path = model_dir / f"{model}.measurements.jsonl"
    measurements = load_measurements(meas_path)
    if not measurements:
        raise WanfitError(f"no measurements in {meas_path}: run `wanfit calibrate --gpu {gpu_key} --model {model} "
                          f"--runtime {runtime}` on that GPU first")
    ceilings = _stored_ceilings(gpu_dir / "ceilings.json", gpu_key)
    siblings = [m for path in sorted(model_dir.glob("*.measurements.jsonl")) if path != meas_path
                for m in load_measurements(path)]
    cal = fit_calibration(measurements, gpu_key, model, ceilings, gpu_minutes(model_dir, model),
                          step_siblings=siblings,
                          session_pageable=gpu_session_pageable_gbps(model_dir, [*measurements, *siblings]))
    out = model_dir / f"{model}.json"
    save_calibration(cal, out)
    return out


def _stored_ceilings(path: Path, gpu_key: str):
    """The GPU's measured ceilings (ceilings.json), None where not measured; a corrupt file is one line."""
    from pydantic import ValidationError

    from wanfit.vocabulary.environment import Ceilings

    if not path.exists():
        return None
    try:
        return Ceilings.model_validate(json.loads(path.read_text())["ceilings"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, ValidationError) as error:
        raise WanfitError(f"{path} is unreadable ({type(error).__name__}): delete it and run `wanfit calibrate "
                          f"--gpu {gpu_key}` on that GPU to measure it again") from None
