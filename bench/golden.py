"""Record (or check) the golden outputs that guard a refactor: `wanfit plan --format json` for a set of
workloads spanning every model, every GPU profile, pinned and free knobs, the scenarios and sizes outside the
calibrated range, and a `--fit-only` refit of every shipped calibration.

    python bench/golden.py --write   # record tests/golden/*.json (only when a change says why figures moved)
    python bench/golden.py           # compare the current code with the recorded files; prints a table

tests/test_golden.py runs the same comparison (0.1 % relative, or one unit in the last rounded digit).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
PLAN_FILE = GOLDEN / "plan.json.gz"  # 19 MB of JSON: every candidate of every GPU
REFIT_FILE = GOLDEN / "refit.json"

ALL_GPUS = ["a100-40g", "a100-80g", "a10g", "b200", "h100-pcie", "h100", "h20", "h200", "l4", "l40s", "rtx-a6000",
            "rtx3090", "rtx4080", "rtx4090", "rtx5090", "rtx6000"]
MODELS = ["wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b",
          "wan2.1-i2v-14b"]


def _gpus(*keys: str) -> list[str]:
    return [a for k in keys for a in ("--gpu", k)]


def plan_cases() -> list[list[str]]:
    """The `wanfit plan` argument lists recorded (each prints one JSON report)."""
    cases: list[list[str]] = []
    for model in MODELS:  # every model on every GPU profile, free knobs, the model's defaults
        cases.append(["--model", model, *_gpus(*ALL_GPUS)])
    for scenario in ("speed-preview", "efficiency", "max-quality", "long-duration"):
        cases.append(["--scenario", scenario, *_gpus("l40s", "rtx6000", "h100")])
    pins = [["--offload", "none"], ["--offload", "model"], ["--offload", "group"], ["--offload", "sequential"],
            ["--text-encoder", "cpu"], ["--text-encoder", "int8"], ["--dit-dtype", "fp8"], ["--dit-dtype", "fp32"],
            ["--vae-tiling"], ["--no-vae-tiling"], ["--offload", "model", "--text-encoder", "cpu", "--dit-dtype", "fp8"]]
    for pin in pins:
        cases.append(["--model", "wan2.2-ti2v-5b", "--frames", "121", *pin, *_gpus("rtx4090", "h100")])
    cases.append(["--model", "wan2.1-t2v-14b", "--offload", "group", "--dit-dtype", "fp8", *_gpus("rtx4090", "l40s")])
    cases.append(["--model", "wan2.2-t2v-a14b", "--offload", "model", *_gpus("rtx5090", "a100-80g")])
    sizes = [  # (model, WxH, frames, steps): inside, at the edge of and far outside the calibrated grids
        ("wan2.2-ti2v-5b", "1280x704", 361, 50), ("wan2.2-ti2v-5b", "1920x1088", 241, 30),
        ("wan2.2-ti2v-5b", "832x480", 17, 20), ("wan2.2-ti2v-5b", "704x1280", 121, 50),
        ("wan2.1-t2v-1.3b", "1280x720", 161, 50), ("wan2.1-t2v-1.3b", "320x192", 5, 10),
        ("wan2.1-t2v-14b", "1280x720", 161, 40), ("wan2.1-t2v-14b", "832x480", 81, 50),
        ("wan2.2-t2v-a14b", "1280x720", 121, 40), ("wan2.2-i2v-a14b", "832x480", 81, 40),
        ("wan2.1-i2v-14b", "1280x720", 81, 40), ("wan2.2-ti2v-5b", "2560x1408", 121, 50),
    ]
    for model, size, frames, steps in sizes:
        cases.append(["--model", model, "--size", size, "--frames", str(frames), "--steps", str(steps),
                      *_gpus("l40s", "rtx4090", "h100", "b200")])
    options = [["--guidance", "1"], ["--guidance", "7.5"], ["--margin", "0"], ["--margin", "4"],
               ["--host-ram", "32"], ["--host-ram", "64"], ["--host-pageable-gbps", "6.4"],
               ["--host-d2h-gbps", "1.3", "--offload", "model"], ["--reused-pipeline"],
               ["--steps", "5", "--frames", "41"]]
    for opt in options:
        cases.append(["--model", "wan2.2-ti2v-5b", *opt, *_gpus("rtx4090", "l40s", "h100")])
    cases.append(["--model", "wan2.1-t2v-14b", "--host-ram", "32", "--host-pageable-gbps", "9", *_gpus("rtx4090")])
    return cases


def run_plan(args: list[str]) -> dict:
    """One `wanfit plan ... --format json` through the real entry point, in this process."""
    from typer.testing import CliRunner

    from wanfit.cli import app

    result = CliRunner().invoke(app, ["plan", *args, "--format", "json"])
    if result.exit_code != 0:
        raise RuntimeError(f"wanfit plan {' '.join(args)} exited {result.exit_code}: {result.output[-500:]}")
    return json.loads(result.output)


def refit_all() -> dict[str, dict]:
    """Every shipped calibration refitted from its committed measurements (`calibrate --fit-only`), each runtime's."""
    from wanfit.measure.calibrate import fit_model

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for gpu_dir in sorted((ROOT / "calibration").iterdir()):
            if not gpu_dir.is_dir():
                continue
            shutil.copytree(gpu_dir, Path(tmp) / gpu_dir.name)
            for runtime in ("diffusers", "wan"):
                model_dir = gpu_dir if runtime == "diffusers" else gpu_dir / runtime
                for meas in sorted(model_dir.glob("*.measurements.jsonl")):
                    model = meas.name.removesuffix(".measurements.jsonl")
                    path = fit_model(gpu_dir.name, model, Path(tmp), runtime)
                    label = f"{gpu_dir.name}/{model}" if runtime == "diffusers" else f"{gpu_dir.name}/{runtime}/{model}"
                    out[label] = json.loads(path.read_text())
    return out


# Fields that say when or by which version a file was made, not what was predicted.
VOLATILE = {"created_at", "wanfit_version"}


def differences(golden, current, path: str = "", rel: float = 1e-3, abs_floor: float = 1.5e-3) -> list[str]:
    """Where `current` departs from `golden`: numbers beyond `rel` relative (or `abs_floor`, one unit in the
    last of the three decimals reports round to), any other value unequal, keys added or lost."""
    if isinstance(golden, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(golden) | set(current)):
            if key in VOLATILE:
                continue
            if key not in current or key not in golden:
                out.append(f"{path}/{key}: {'lost' if key not in current else 'added'}")
                continue
            out += differences(golden[key], current[key], f"{path}/{key}", rel, abs_floor)
        return out
    if isinstance(golden, list) and isinstance(current, list):
        if len(golden) != len(current):
            return [f"{path}: {len(golden)} items recorded, {len(current)} now"]
        return [d for i, (g, c) in enumerate(zip(golden, current, strict=True))
                for d in differences(g, c, f"{path}[{i}]", rel, abs_floor)]
    numbers = (int, float)
    if isinstance(golden, numbers) and isinstance(current, numbers) and not isinstance(golden, bool) \
            and not isinstance(current, bool):
        if math.isclose(golden, current, rel_tol=rel, abs_tol=abs_floor):
            return []
        return [f"{path}: {golden} recorded, {current} now"]
    return [] if golden == current else [f"{path}: {golden!r} recorded, {current!r} now"]


def load_golden() -> tuple[dict, dict]:
    """The recorded plan reports (by argument line) and refits (by gpu/model)."""
    return json.loads(gzip.decompress(PLAN_FILE.read_bytes())), json.loads(REFIT_FILE.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record the golden files from the current code")
    args = parser.parse_args()
    plans = {" ".join(case): run_plan(case) for case in plan_cases()}
    refits = refit_all()
    if args.write:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        PLAN_FILE.write_bytes(gzip.compress(json.dumps(plans, sort_keys=True, separators=(",", ":")).encode(), 9,
                                            mtime=0))
        REFIT_FILE.write_text(json.dumps(refits, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(plans)} plan reports and {len(refits)} refits under {GOLDEN.relative_to(ROOT)}")
        return 0
    recorded_plans, recorded_refits = load_golden()
    rows = [("plan", name, differences(report, plans.get(name))) for name, report in recorded_plans.items()]
    rows += [("refit", name, differences(cal, refits.get(name))) for name, cal in recorded_refits.items()]
    print(f"{'kind':6} {'differences':>11}  case")
    for kind, name, diffs in rows:
        print(f"{kind:6} {len(diffs):>11}  {name}")
        for d in diffs[:5]:
            print(f"{'':20}{d}")
    return 1 if any(diffs for _, _, diffs in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
