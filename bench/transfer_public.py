"""How far wanfit's cross-GPU transfer lands from real runs, GPU by GPU, and the interval that follows.

    python bench/transfer_public.py            # the tables
    python bench/transfer_public.py --json F   # also every row as JSON

Three checks, each predicted from the shipped H100 calibrations (no other GPU is calibrated):
  1. the H200 verify runs (verify-reports/*_h200.json, wanfit's own): per step and per decode, transferred;
  2. every usable published single-GPU Wan figure (bench/reference/published_single_gpu*.json) of the official
     code or diffusers on a GPU wanfit has a profile of: the generation time (init left out: the sources time
     generate() after the models are loaded) or the step, predicted vs published;
  3. the GPU-to-GPU ratios inside one published table (the same workload on several GPUs of one source): the
     ratio predicted vs published, which leaves out what one source's setup adds to all its GPUs.
Each published prediction is grouped by the basis most of its transferred seconds rest on (measured, public,
derived); the worst ratio error of each group is what the transfer interval of that basis must cover
(wanfit.model.kernel_classes.BASIS_REL; the last table prints both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's wanfit

from wanfit.model import kernel_classes as kc  # noqa: E402
from wanfit.model import predict as predict_module  # noqa: E402
from wanfit.model.calibration import find_calibration  # noqa: E402
from wanfit.model.context import PredictContext  # noqa: E402
from wanfit.vocabulary.catalog import MODELS  # noqa: E402
from wanfit.vocabulary.errors import WanfitError  # noqa: E402
from wanfit.vocabulary.paths import calibration_dirs  # noqa: E402
from wanfit.vocabulary.profiles import get_profile  # noqa: E402
from wanfit.vocabulary.workload import Plan, Workload  # noqa: E402

REFERENCE = REPO / "bench" / "reference"
VERIFY = REPO / "verify-reports"
GPU_NAMES = {"H800/H100": "h100", "H100/H800": "h100", "H100": "h100", "H100 SXM": "h100", "A800/A100": "a100-80g",
             "A100/A800": "a100-80g", "A100": "a100-80g", "H20": "h20", "H200": "h200", "H800": "h100",
             "RTX 4090": "rtx4090", "RTX 5090": "rtx5090", "RTX PRO 6000": "rtx6000", "RTX 3090": "rtx3090"}
ENGINES = {"official wan": "wan", "diffusers": "diffusers"}


@dataclass
class Row:
    check: str
    id: str
    gpu: str
    model: str
    what: str  # "step" | "decode" | "generation"
    predicted: float
    low: float
    high: float
    measured: float
    basis: str
    assumptions: str = ""
    table: str = ""  # the source table (published rows): GPUs of one table share the source's setup
    key: str = ""  # the workload within it

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1.0

    @property
    def inside(self) -> bool:
        return self.low <= self.measured <= self.high


def _predict(workload: Workload, plan: Plan, gpu: str, host_pageable: float | None = None, reused: bool = True):
    """(Prediction, dominant basis of its transferred seconds) for `plan` on `gpu` from the shipped calibrations."""
    profile = get_profile(gpu)
    cal, _ = find_calibration(profile.key, workload.model, calibration_dirs(), plan.runtime)
    pc = PredictContext(workload, plan, cal, profile, host_pageable, first_in_process=not reused,
                        reused_pipeline=reused)
    prediction = predict_module._compose(pc)
    seconds: dict[str, float] = {}
    for value, basis in kc.ledger(pc).values():
        seconds[basis] = seconds.get(basis, 0.0) + value
    basis = max(seconds, key=seconds.get) if seconds else "measured"
    return prediction, basis


def h200_rows() -> list[Row]:
    """The H200 verify runs against the H100 calibrations transferred: steady step and decode."""
    rows = []
    for path in sorted(VERIFY.glob("*_h200.json")):
        run = json.loads(path.read_text())
        workload, plan = Workload(**run["workload"]), Plan(**run["plan"])
        prediction, basis = _predict(workload, plan, "h200", run.get("host_pageable_gbps"), reused=False)
        rel = (prediction.duration_interval_s[1] / prediction.duration_s) - 1.0
        step = prediction.step_s
        rows.append(Row("h200-verify", path.stem, "h200", workload.model, "step", step, step * (1 - rel),
                        step * (1 + rel), run["steady_step_s"], basis, f"plan {plan.label()}"))
        measured = next((s["time_s"] for s in run["measurement"]["stages"] if s["name"] == "vae_decode"), None)
        decode = prediction.stage("vae_decode").time_s
        if measured and plan.offload in ("none", "group"):
            rows.append(Row("h200-verify", path.stem, "h200", workload.model, "decode", decode, decode * (1 - rel),
                            decode * (1 + rel), measured, basis, f"plan {plan.label()}"))
    return rows


def _official_plan(figure: dict, gpu: str) -> tuple[Plan, list[str]]:
    said = []
    offload = "model" if figure.get("offload_model") else "none"
    te = "cpu" if figure.get("t5_cpu") else "gpu"
    dtype = "bf16" if figure.get("convert_model_dtype") else "fp32"
    attention = "auto"
    if "FlashAttention3" in str(figure.get("attention")) and get_profile(gpu).compute_capability == "9.0":
        attention = "fa3"
    for name, value in (("offload_model", figure.get("offload_model")), ("t5_cpu", figure.get("t5_cpu"))):
        if value is None:
            said.append(f"{name} not stated: off")
    return Plan(runtime="wan", offload=offload, text_encoder=te, dit_dtype=dtype, vae_tiling=False,
                attention=attention), said


def published_rows() -> list[Row]:
    rows = []
    for path in sorted(REFERENCE.glob("published_single_gpu*.json")):
        for figure in json.loads(path.read_text()).get("figures", []):
            row = _published_row(figure)
            if row is not None:
                rows.append(row)
    return rows


def _published_row(f: dict) -> Row | None:
    runtime = ENGINES.get(str((f.get("parallel") or {}).get("engine")))
    gpu = GPU_NAMES.get(str(f.get("gpu_model")))
    model = str(f.get("model") or "").removesuffix("-720p").removesuffix("-480p")
    if runtime is None or gpu is None or model not in MODELS or not all(f.get(k) for k in ("width", "height",
                                                                                           "frames", "steps")):
        return None
    if (f.get("total_time_s") is None and f.get("per_step_s") is None) or f.get("outcome", "ok") != "ok":
        return None
    workload = Workload.for_model(model, width=f["width"], height=f["height"], frames=f["frames"], steps=f["steps"])
    if runtime == "wan":
        plan, said = _official_plan(f, gpu)
    else:
        plan, said = Plan(), ["diffusers defaults (bf16, no offload)"]
    try:
        prediction, basis = _predict(workload, plan, gpu)
    except WanfitError as exc:
        print(f"skipped {f['id']}: {exc}", file=sys.stderr)
        return None
    rel = prediction.duration_interval_s[1] / prediction.duration_s - 1.0
    if f.get("total_time_s") is not None:
        value = sum(s.time_s for s in prediction.stages if s.name != "init")
        measured, what = float(f["total_time_s"]), "generation"
        # The interval's seconds as printed: its low end also allows the moves to host memory at a fast-mapping
        # host's rate (wanfit.model.stages.host.FRESH_OVER_TOUCHED), which a relative width would lose.
        low, high = (value - (prediction.duration_s - prediction.duration_interval_s[0]),
                     value + (prediction.duration_interval_s[1] - prediction.duration_s))
    else:
        value, measured, what = prediction.step_s, float(f["per_step_s"]), "step"
        low, high = value * (1 - rel), value * (1 + rel)
    return Row("published", f["id"], gpu, model, what, value, low, high, measured, basis,
               "; ".join([plan.label(), *said]), table="-".join(f["id"].split("-")[:2]),
               key=f"{f.get('task')} {model} {f['width']}x{f['height']}x{f['frames']} {f['steps']} steps {what}")


def ratio_rows(rows: list[Row]) -> list[dict]:
    """Published tables with the same workload on several GPUs: every GPU against the table's H100 (else its
    first GPU), predicted ratio vs published ratio."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.check == "published":
            groups.setdefault((r.table, r.key), []).append(r)
    out = []
    for members in groups.values():
        if len({m.gpu for m in members}) < 2:
            continue
        ref = next((m for m in members if m.gpu == "h100"), members[0])
        for m in members:
            if m is ref:
                continue
            predicted, published = m.predicted / ref.predicted, m.measured / ref.measured
            out.append({"pair": f"{m.gpu}/{ref.gpu}", "id": m.id, "predicted_ratio": predicted,
                        "published_ratio": published, "error": predicted / published - 1.0, "basis": m.basis})
    return out


def derivation_rows() -> list[dict]:
    """Leave one out: every achieved (measured or public) class rate derived again from the others by
    bench/transfer_rates.py's rules, against its achieved value -- how far a derived rate may be off."""
    sys.path.insert(0, str(REPO / "bench"))
    import transfer_rates

    raw = {p.stem: json.loads(p.read_text()) for p in sorted((REPO / "profiles").glob("*.json"))}
    out = []
    for key, profile in raw.items():
        for cls, entry in profile["class_rates"].items():
            if entry["basis"] == "derived" or cls in ("fp64",):
                continue
            trial = json.loads(json.dumps(raw))
            del trial[key]["class_rates"][cls]
            derived = transfer_rates.rederive(trial)[key]["class_rates"].get(cls)
            if derived is not None:
                out.append({"gpu": key, "class": cls, "achieved": entry["value"], "derived": derived["value"],
                            "error": derived["value"] / entry["value"] - 1.0})
    return out


def _print(rows: list[Row], ratios: list[dict]) -> None:
    print(f"{'check':12} {'gpu':9} {'what':10} {'predicted':>10} {'measured':>10} {'error':>7} {'in':3} {'basis':9} id")
    for r in sorted(rows, key=lambda r: (r.check, r.gpu, r.id)):
        print(f"{r.check:12} {r.gpu:9} {r.what:10} {r.predicted:10.2f} {r.measured:10.2f} {r.error:+7.1%} "
              f"{'yes' if r.inside else 'NO':3} {r.basis:9} {r.id}")
    print("\nGPU-to-GPU ratios inside one published table (predicted / published):")
    for q in sorted(ratios, key=lambda q: q["pair"]):
        print(f"  {q['pair']:16} predicted {q['predicted_ratio']:6.3f} published {q['published_ratio']:6.3f} "
              f"error {q['error']:+7.1%}  {q['basis']:9} {q['id']}")
    derivations = derivation_rows()
    print("\nLeave-one-out: each achieved class rate derived from the others (derived / achieved):")
    for d in derivations:
        print(f"  {d['gpu']:9} {d['class']:16} achieved {d['achieved']:8.2f} derived {d['derived']:8.2f} "
              f"{d['error']:+7.1%}")
    print("\nInterval by basis (worst |error|: measured, the H200 runs' steps and decodes outside sequential "
          "offload; public, the published GPU-to-GPU ratios; derived, the leave-one-out derivations of the "
          "step's classes; BASIS_REL now):")
    by_basis: dict[str, list[float]] = {}
    for r in rows:
        if r.check == "h200-verify" and "sequential" not in r.assumptions:
            by_basis.setdefault("measured", []).append(abs(r.error))
    for q in ratios:
        by_basis.setdefault(q["basis"], []).append(abs(q["error"]))
    for d in derivations:
        if d["class"] in ("gemm_bf16", "elementwise") or d["class"].startswith("attention_"):
            by_basis.setdefault("derived", []).append(abs(d["error"]))
    for basis in kc.BASIS_ORDER:
        errors = sorted(by_basis.get(basis, []))
        worst = max(errors, default=float("nan"))
        median = statistics.median(errors) if errors else float("nan")
        p90 = errors[min(len(errors) - 1, int(0.9 * len(errors)))] if errors else float("nan")
        # the rule: 1.5x the worst error where a handful of checks exist, the 90th percentile of many
        suggested = p90 if len(errors) >= 20 else 1.5 * worst
        print(f"  {basis:9} n={len(errors):2}  median {median:6.1%}  p90 {p90:6.1%}  worst {worst:6.1%}  "
              f"suggested {suggested:5.2f}  BASIS_REL {kc.BASIS_REL[basis]:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every row here as JSON")
    args = parser.parse_args(argv)
    rows = h200_rows() + published_rows()
    ratios = ratio_rows(rows)
    _print(rows, ratios)
    if args.json:
        args.json.write_text(json.dumps({"rows": [{**asdict(r), "error": r.error, "inside": r.inside} for r in rows],
                                         "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
