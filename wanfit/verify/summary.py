"""Accuracy summary over committed verify reports (verify-reports/*.json) for docs/accuracy.md.

Every figure comes from a report written by `wanfit verify` on a real GPU; nothing is typed in.
Statistics count only *scored* figures (both sides present and comparable: time measured on a
GPU other than the target is shown, not scored, unless the report carries a prediction for the
local GPU). Capped, reduced-step (extrapolated) and failed runs are named as such.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from wanfit.verify.compare import error_pct, within
from wanfit.verify.report import (
    DERIVED_MARK,
    EXTRAPOLATED_MARK,
    STAGE_LABELS,
    VerifyReport,
    build_report,
    fmt,
    load_report,
)

STAT_ORDER = ("step time", "denoise time", "vae_decode time", "total time", "init time", "text_encode time",
              "expert_switch time", "total peak", "denoise peak", "vae_decode peak", "init peak", "text_encode peak",
              "expert_switch peak")


class Figure(BaseModel):
    """One predicted-vs-measured figure of one run."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    run: int
    kind: str  # "<stage> time" | "<stage> peak" | "step time"
    unit: str  # "s" | "GiB"
    predicted: float | None
    measured: float | None
    error_pct: float | None
    scored: bool
    within: bool | None = None  # inside the report's tolerance (relative, or its absolute floor)
    flags: list[str]


def load_reports(reports_dir: Path) -> list[tuple[Path, VerifyReport]]:
    return [(p, load_report(p)) for p in sorted(Path(reports_dir).glob("*.json"))]


def figures(run: int, r: VerifyReport) -> list[Figure]:
    out = []
    time_scored = r.same_gpu or r.local_prediction is not None
    for rw in r.rows:
        flags = []
        if rw.extrapolated:
            flags.append(f"{EXTRAPOLATED_MARK} extrapolated")
        if rw.derived:
            flags.append(f"{DERIVED_MARK} derived")
        if rw.predicted_time_s is not None or rw.measured_time_s is not None:
            out.append(Figure(run=run, kind=f"{rw.stage} time", unit="s", predicted=rw.predicted_time_s,
                              measured=rw.measured_time_s, error_pct=rw.time_error_pct,
                              scored=rw.time_within is not None, within=rw.time_within, flags=flags))
        if rw.predicted_peak_gib is not None or rw.measured_peak_gib is not None:
            mflags = [f for f in flags if not f.endswith("extrapolated")]  # peaks are never extrapolated
            if rw.memory_basis == "need":
                mflags.append("basis need (capped)")
            out.append(Figure(run=run, kind=f"{rw.stage} peak", unit="GiB", predicted=rw.predicted_peak_gib,
                              measured=rw.measured_peak_gib, error_pct=rw.memory_error_pct,
                              scored=rw.memory_within is not None, within=rw.memory_within, flags=mflags))
    scored_source = r.prediction if r.same_gpu else r.local_prediction
    if r.steady_step_s is not None and r.measurement.status == "ok" and len(r.measurement.steps()) >= 2:
        predicted = scored_source.step_s if scored_source is not None else None
        scored = time_scored and predicted is not None
        tol = r.tolerances
        within_tol = within(predicted, r.steady_step_s, tol.time, tol.time_floor_s) if scored else None
        out.append(Figure(run=run, kind="step time", unit="s", predicted=predicted, measured=r.steady_step_s,
                          error_pct=error_pct(predicted, r.steady_step_s), scored=scored, within=within_tol,
                          flags=["steady-state median"]))
    return out


def _run_label(r: VerifyReport) -> str:
    return f"{r.workload.label()}; {r.plan.label()}"


def accuracy_markdown(reports_dir: Path, repredict: bool = False, host_rates: Mapping[str, float] | None = None) -> str:
    """Markdown: the runs, every figure (predicted, measured, error), then mean and worst absolute
    error per figure kind over scored figures (with `repredict`, also against what the shipped
    calibrations predict now), and plain statements of what was capped, reduced or failed."""
    reports = load_reports(reports_dir)
    lines = ["## Verify runs: predicted vs measured", ""]
    if not reports:
        return "\n".join([*lines, f"No verify reports in {reports_dir}: run `wanfit verify` and commit its JSON.", ""])
    lines += [f"From {len(reports)} verify report(s) in `{Path(reports_dir).name}/`, each a real run of "
              "`wanfit verify`. Error = (predicted - measured) / measured.", "",
              "| # | Workload and plan | Target | Measured on | Cap | Steps run | Predicted fit | Outcome | Verdict "
              "| Report |",
              "|---:|---|---|---|---|---:|---|---|---|---|"]
    all_figs: list[Figure] = []
    for i, (path, r) in enumerate(reports, 1):
        cap = f"capped to {r.cap.torch_budget_gib:.1f} GiB (torch)" if r.cap else "none"
        outcome = r.measurement.status + (f" at {r.measurement.failed_stage}" if r.measurement.failed_stage else "")
        lines.append(f"| {i} | {_run_label(r)} | {r.target_gpu} | {r.environment.gpu_name} | {cap} | "
                     f"{r.steps_run}/{r.steps_requested} | {'yes' if r.prediction.fits else 'no'} | {outcome} | "
                     f"{r.verdict} | `{path.name}` |")
        all_figs += figures(i, r)
    lines += ["", "### Every figure", "",
              "| # | Figure | Predicted | Measured | Error | Scored | Notes |", "|---:|---|---:|---:|---:|---|---|"]
    for f in all_figs:
        if f.predicted is None:
            continue  # measured only (e.g. `prepare`): in the run's own report, not an accuracy figure
        err = "—" if f.error_pct is None else f"{f.error_pct:+.1f} %"
        lines.append(f"| {f.run} | {f.kind} ({f.unit}) | {fmt(f.predicted)} | {fmt(f.measured)} | {err} | "
                     f"{'yes' if f.scored else 'no'} | {', '.join(f.flags)} |")
    lines += ["", "### Error per figure kind (scored figures only, as predicted before each run)", ""]
    lines += _error_table(all_figs)
    if repredict:
        text = ("The predictions above are the ones each report recorded before its run. The fits have "
                "changed since (see each report's `wanfit` version and the git log); here every run's "
                "measured figures are compared with what the calibrations in `calibration/` predict now. "
                "The runs were chosen off the calibration grids (other sizes, frame counts or plans); runs loaded "
                "from a checkpoint may repeat a grid workload, since what they test is the load, and a few repeat a "
                "grid point's shapes as a full job in a fresh process (see the remarks below).")
        if host_rates or any(r.host_pageable_gbps is not None for _, r in reports):
            text += (" Offloading runs are predicted at the pageable host-to-device rate measured on their machine "
                     "(by verify itself, or in the same device call) where one was measured.")
        lines += ["", "### The same runs re-predicted by the shipped calibrations", "", text, ""]
        again = repredicted(reports, host_rates)
        lines += _error_table([f for i, (_, r) in enumerate(again, 1) for f in figures(i, r)])
        lines += _by_runtime(again)
    lines += ["", "### What these runs are", ""]
    lines += _statements(reports)
    return "\n".join(lines) + "\n"


def _by_runtime(reports: list[tuple[Path, VerifyReport]]) -> list[str]:
    """The re-predicted figures again, one table per runtime (diffusers, the official code), each headed by how
    many of its fit / out-of-memory verdicts the run bore out."""
    lines = []
    for runtime in sorted({r.plan.runtime for _, r in reports}):
        runs = [(i, r) for i, (_, r) in enumerate(reports, 1) if r.plan.runtime == runtime]
        right = sum(r.prediction.fits == (r.measurement.status == "ok") for _, r in runs
                    if r.measurement.status in ("ok", "oom"))
        decided = sum(r.measurement.status in ("ok", "oom") for _, r in runs)
        name = " (the official Wan2.2 code)" if runtime == "wan" else ""
        lines += ["", f"#### Runtime {runtime}{name}: {len(runs)} runs, {right} of {decided} fit / "
                  "out-of-memory verdicts right", ""]
        lines += _error_table([f for i, r in runs for f in figures(i, r)])
    return lines


def _error_table(all_figs: list[Figure]) -> list[str]:
    """Per figure kind: errors in % of the measured value, and how many figures fall inside their
    report's tolerance (whose absolute floors pass a 0.03 s expert switch predicted as 0, which is
    -100 % of itself)."""
    lines = ["| Figure | n | Mean abs. error | Mean signed error | Worst abs. error (run) | Within tolerance |",
             "|---|---:|---:|---:|---:|---:|"]
    kinds = sorted({f.kind for f in all_figs},
                   key=lambda k: (STAT_ORDER.index(k) if k in STAT_ORDER else len(STAT_ORDER), k))
    for kind in kinds:
        scored = [f for f in all_figs if f.kind == kind and f.scored and f.error_pct is not None]
        if not scored:
            continue
        errs = [abs(f.error_pct) for f in scored]
        worst = max(scored, key=lambda f: abs(f.error_pct))
        lines.append(f"| {kind} | {len(scored)} | {statistics.mean(errs):.1f} % | "
                     f"{statistics.mean(f.error_pct for f in scored):+.1f} % | {abs(worst.error_pct):.1f} % "
                     f"(#{worst.run}) | {sum(bool(f.within) for f in scored)} of {len(scored)} |")
    return lines


def repredicted(reports: list[tuple[Path, VerifyReport]], host_rates: Mapping[str, float] | None = None,
                **predict_options) -> list[tuple[Path, VerifyReport]]:
    """Each report rebuilt around what the shipped calibrations predict now for its workload + plan
    (same measurement, cap, tolerances and GPUs, and the host rate the report's prediction used;
    `host_rates` gives it, by report file name, for reports older than verify's own measurement)."""
    from wanfit.planner.api import predict_one

    out = []
    for path, r in reports:
        options = dict(predict_options)
        rate = r.host_pageable_gbps if r.host_pageable_gbps is not None else (host_rates or {}).get(path.name)
        if rate is not None and r.plan.offload != "none":
            options.setdefault("host_pageable_gbps", rate)
        if r.host_d2h_gbps is not None:
            options.setdefault("host_d2h_gbps", r.host_d2h_gbps)
        prediction = predict_one(r.workload, r.plan, r.target_gpu, **options)
        local = None
        if not r.same_gpu and r.local_gpu is not None:
            local = predict_one(r.workload, r.plan, r.local_gpu, **options)
        out.append((path, build_report(r.measurement, prediction, target_gpu=r.target_gpu,
                                       target_memory_gib=r.target_memory_gib, cap=r.cap, tolerances=r.tolerances,
                                       same_gpu=r.same_gpu, local_gpu=r.local_gpu, local_prediction=local,
                                       host_pageable_gbps=options.get("host_pageable_gbps"),
                                       host_d2h_gbps=options.get("host_d2h_gbps"))))
    return out


def _statements(reports: list[tuple[Path, VerifyReport]]) -> list[str]:
    out = []
    idx = {id(r): i for i, (_, r) in enumerate(reports, 1)}

    def runs(pred) -> str:
        return ", ".join(f"#{idx[id(r)]}" for _, r in reports if pred(r))

    if s := runs(lambda r: r.cap is not None):
        out.append(f"- Capped to a smaller target's memory (torch allocator fraction on a larger GPU; the target's "
                   f"CUDA context and driver baseline assumed equal to the local ones): {s}.")
    if s := runs(lambda r: r.extrapolated):
        out.append(f"- Reduced-step runs: denoise and total times extrapolated from the steady-state step "
                   f"(marked {EXTRAPOLATED_MARK}); peaks measured: {s}.")
    if s := runs(lambda r: r.measurement.status != "ok"):
        out.append(f"- Runs that did not finish (OOM or error; only completed stages compared): {s}.")
    if s := runs(lambda r: r.verdict == "oom_confirmed"):
        out.append(f"- Predicted not to fit and ran out of memory (prediction confirmed): {s}.")
    if s := runs(lambda r: r.verdict == "oom_unexpected"):
        out.append(f"- Predicted to fit but ran out of memory (prediction FAILED): {s}.")
    if s := runs(lambda r: r.verdict == "ran_despite_no_fit"):
        out.append(f"- Predicted not to fit but ran (the prediction, or its safety margin, was too cautious): {s}.")
    if s := runs(lambda r: not r.same_gpu and r.local_prediction is None):
        out.append(f"- Time measured on another GPU than the target and not scored (no local prediction): {s}.")
    if s := runs(lambda r: r.measurement.source == "checkpoint"):
        out.append(f"- Loaded with `from_pretrained` from a local checkpoint (saved from random weights): {s}; their "
                   f"init time and memory are scored.")
    if s := runs(lambda r: r.measurement.source == "random"):
        out.append(f"- Random weights with the real architectures (memory and time depend on shapes and dtypes): {s}.")
    out.append(f"- {STAGE_LABELS['expert_switch']} and step loading figures are derived ({DERIVED_MARK}): a step's time "
               f"minus the steady-state step.")
    return out
