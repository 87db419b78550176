"""The raw measurements file of a calibration: JSON lines, one Measurement per line, appended
atomically as each point finishes so an interrupted calibration keeps every point measured so far."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement


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
    is skipped; a corrupt line elsewhere is an error naming the file and line. Measurements that
    predate the runner's `first_in_process` get it inferred (`infer_first_in_process`)."""
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
    if any(m.first_in_process is None for m in out):
        out = infer_first_in_process(out, session_windows(sessions_path_of(path)))
    return out


def sessions_path_of(measurements_path: Path) -> Path:
    """<model>.measurements.jsonl -> <model>.sessions.jsonl (calibrate writes both side by side)."""
    name = Path(measurements_path).name.removesuffix(".measurements.jsonl")
    return Path(measurements_path).with_name(f"{name}.sessions.jsonl")


def infer_first_in_process(ms: list[Measurement], windows: list[tuple[datetime, datetime, dict]]) -> list[Measurement]:
    """Fill `first_in_process` where it was not recorded, from how the measuring side starts
    processes (measure.worker.run_jobs): one worker per calibrate session and model runs consecutive
    points until one fails or the allocator setting changes, and the checkpoint point runs on its own.
    So a point (in file order) is first in its process when it opens the file or its session, follows
    a point that did not end ok, changes the allocator setting, or is or follows the checkpoint point."""
    def window_of(m: Measurement) -> int | None:
        t = datetime.fromisoformat(m.created_at)
        return next((i for i, (start, end, _) in enumerate(windows) if start <= t <= end), None)

    out, prev = [], None
    for m in ms:
        if m.first_in_process is None:
            first = (prev is None or prev.status != "ok" or window_of(prev) != window_of(m)
                     or prev.environment.allocator_conf != m.environment.allocator_conf
                     or "checkpoint" in (m.source, prev.source))
            m = m.model_copy(update={"first_in_process": first})
        out.append(m)
        prev = m
    return out


def done_ids(path: Path) -> set[str]:
    """Ids of points that need no re-run: finished ones and OOMs (an OOM is a data point).
    Points that ended in another error are retried on resume."""
    return {m.id for m in load_measurements(path) if m.status in ("ok", "oom")}


def session_windows(sessions_path: Path) -> list[tuple[datetime, datetime, dict]]:
    """(start, end, row) of every calibrate session recorded in a sessions file (none if absent)."""
    path = Path(sessions_path)
    if not path.exists():
        return []
    windows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            start = datetime.fromisoformat(row["started"])
            windows.append((start, start + timedelta(seconds=row["wall_s"]), row))
    return windows


def session_pageable_gbps(sessions_path: Path, measurements: list[Measurement]) -> dict[str, float]:
    """{measurement id: the pageable host-to-device bandwidth measured at the start of the calibrate
    session that took it}, for the measurements whose session recorded its ceilings (a measurement
    belongs to the session whose wall-clock window holds its time). Lent machines of one GPU model
    differ here by up to 1.4x, and sequential offload streams every weight through it."""
    windows = [(start, end, float(gbps)) for start, end, row in session_windows(sessions_path)
               if (gbps := row.get("ceilings", {}).get("h2d_pageable_gbps"))]
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
