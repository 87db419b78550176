"""The raw measurements file of a calibration: JSON lines, one Measurement per line, appended
atomically as each point finishes so an interrupted calibration keeps every point measured so far."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from wanfit.errors import WanfitError
from wanfit.measurement import Measurement


def append_measurement(path: Path, m: Measurement) -> None:
    """Append one line and fsync: a crash after this call never loses the point."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = m.model_dump_json() + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def load_measurements(path: Path) -> list[Measurement]:
    """All complete measurements in the file. A torn last line (the process died while writing)
    is skipped; a corrupt line elsewhere is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Measurement.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as e:
            if i == len(lines):
                break  # torn final write of an interrupted run
            raise WanfitError(f"{path}:{i} is not a valid measurement ({type(e).__name__}); "
                              f"remove that line and re-run `wanfit calibrate` to measure it again") from None
    return out


def done_ids(path: Path) -> set[str]:
    """Ids of points that need no re-run: finished ones and OOMs (an OOM is a data point).
    Points that ended in another error are retried on resume."""
    return {m.id for m in load_measurements(path) if m.status in ("ok", "oom")}


def session_pageable_gbps(sessions_path: Path, measurements: list[Measurement]) -> dict[str, float]:
    """{measurement id: the pageable host-to-device bandwidth measured at the start of the calibrate
    session that took it}, for the measurements whose session recorded its ceilings (a measurement
    belongs to the session whose wall-clock window holds its time). Lent machines of one GPU model
    differ here by up to 1.4x, and sequential offload streams every weight through it."""
    path = Path(sessions_path)
    if not path.exists():
        return {}
    windows = []
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        gbps = row.get("ceilings", {}).get("h2d_pageable_gbps")
        if gbps:
            start = datetime.fromisoformat(row["started"])
            windows.append((start, start + timedelta(seconds=row["wall_s"]), float(gbps)))
    out = {}
    for m in measurements:
        t = datetime.fromisoformat(m.created_at)
        for start, end, gbps in windows:
            if start <= t <= end:
                out[m.id] = gbps
    return out


def gpu_session_pageable_gbps(gpu_dir: Path, measurements: list[Measurement]) -> dict[str, float]:
    """session_pageable_gbps over every model's sessions on one GPU (a fit borrows other DiTs' points)."""
    out: dict[str, float] = {}
    for path in sorted(Path(gpu_dir).glob("*.sessions.jsonl")):
        out.update(session_pageable_gbps(path, measurements))
    return out
