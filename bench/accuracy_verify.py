"""The verify runs' section of docs/accuracy.md, for bench/accuracy.py: wanfit.verify.summary's table of
the committed reports, re-predicted at each machine's measured host rate, and the run numbers the
hand-written remarks (accuracy_reading) cite."""

from __future__ import annotations

import json
from pathlib import Path

from accuracy_reading import READING_RUNS

from wanfit.verify.summary import accuracy_markdown
from wanfit.vocabulary.measurements_file import session_windows

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
VERIFY_BEGIN = "<!-- BEGIN verify summary (generated from verify-reports/ by wanfit.verify.summary) -->"
VERIFY_END = "<!-- END verify summary -->"

# Verify reports older than verify's own host measurement whose machine's pageable host-to-device
# rate was measured in the same device call (bench/verify/h100-runs.txt says which machine ran what):
# report file name -> (sessions file, session start) of a calibrate session, or (ceilings file, None).
_5B_SESSIONS = REPO / "calibration" / "h100" / "wan2.2-ti2v-5b.sessions.jsonl"
HOST_RATE_SOURCES: dict[str, tuple[Path, str | None]] = {
    "wan2.2-ti2v-5b_1280x704x81f_2of50st_sequential-tegpu-bf16-untiled_h100.json":
        (_5B_SESSIONS, "2026-11-23T19:51:53+00:00"),
    "wan2.2-ti2v-5b_960x544x61f_3of50st_sequential-tegpu-bf16-untiled_h100.json":
        (_5B_SESSIONS, "2026-11-23T19:51:53+00:00"),
    "wan2.2-ti2v-5b_832x480x41f_3of50st_sequential-tegpu-bf16-untiled_h100-machine-c.json":
        (_5B_SESSIONS, "2026-11-23T20:00:20+00:00"),
    "wan2.2-ti2v-5b_1280x704x161f_2of50st_sequential-tegpu-bf16-untiled_h100.json":
        (_5B_SESSIONS, "2026-11-23T20:22:45+00:00"),
    "wan2.1-t2v-14b_832x480x41f_2of50st_sequential-tegpu-bf16-untiled_h100.json":
        (RESULTS / "ceilings-14b-seq-session.json", None),
    "wan2.1-t2v-1.3b_832x480x81f_3of50st_sequential-tegpu-bf16-untiled_h100.json":
        (RESULTS / "ceilings-13b-seq-session.json", None),
    "wan2.2-ti2v-5b_832x480x41f_3of50st_sequential-tegpu-bf16-untiled_h200.json":
        (RESULTS / "ceilings-h200-verify-session.json", None),
}


def known_host_rates() -> dict[str, float]:
    """Report file name -> the pageable rate measured on its machine (read from HOST_RATE_SOURCES)."""
    rates = {}
    for name, (path, started) in HOST_RATE_SOURCES.items():
        if started is None:
            rates[name] = json.loads(path.read_text())["ceilings"]["h2d_pageable_gbps"]
            continue
        (session,) = [row for _, _, row in session_windows(path) if row["started"] == started]
        rates[name] = session["ceilings"]["h2d_pageable_gbps"]
    return rates


def verify_section(reports_dir: Path) -> str:
    """The verify summary between its markers, re-predicted by the shipped calibrations."""
    summary = accuracy_markdown(reports_dir, repredict=True, host_rates=known_host_rates())
    return "\n".join([VERIFY_BEGIN, "", summary, "", VERIFY_END])


def run_numbers(reports_dir: Path) -> dict[str, str]:
    """'#n' of each report READING names, numbered as the verify summary numbers them (sorted files)."""
    names = [p.name for p in sorted(Path(reports_dir).glob("*.json"))]
    numbers = {}
    for key, fragment in READING_RUNS.items():
        hits = [number for number, name in enumerate(names, 1) if fragment in name]
        if len(hits) != 1:
            raise SystemExit(f"docs/accuracy.md remark '{key}' matches {len(hits)} reports ({fragment}): "
                             f"fix READING_RUNS")
        numbers[key] = f"#{hits[0]}"
    return numbers
