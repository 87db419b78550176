"""The raw measurements file of a calibration: JSON lines, one Measurement per line, appended
durably as each point finishes so an interrupted calibration keeps every point measured so far; a crash
at any byte loses at most the line being written, which is set aside (never glued to the next record)
and reported."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement

T = TypeVar("T")


def append_measurement(path: Path, m: Measurement) -> str | None:
    """Append one measurement durably (append_json_line); returns what had to be set aside, if anything."""
    return append_json_line(path, m.model_dump_json())


def append_json_line(path: Path, text: str) -> str | None:
    """Append one JSON line and fsync it: a crash after this call never loses the record, and one during it
    leaves at most a torn last line, which the next append sets aside first (set_aside_torn_tail) so the
    record is never glued to a fragment. Returns the line saying what was set aside (also on stderr)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    notice = set_aside_torn_tail(path)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _write_all(fd, (text + "\n").encode(), path)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)  # a new file's name is durable only once its directory is
    return notice


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """os.write may write less than asked (a full disk, a signal): keep writing until every byte is out."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as error:
            raise WanfitError(f"cannot write {path} ({error.strerror}): free space or fix its permissions, "
                              f"then re-run (a calibration resumes where it stopped)") from None
        if written <= 0:
            raise WanfitError(f"cannot write {path} (the disk took no bytes): free space, then re-run "
                              f"(a calibration resumes where it stopped)")
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside_torn_tail(path: Path) -> str | None:
    """Before an append: a last line that does not parse (a write a crash cut short) moves to
    `<file>.torn` and is cut from the file; a complete last record missing only its newline gets it.
    Returns (and writes on stderr) the line saying what was set aside; None when nothing was."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    body = data[:-1] if data.endswith(b"\n") else data
    cut = body.rfind(b"\n") + 1
    last = data[cut:]
    if not last.strip() or _is_json_object(last):
        if last.strip() and not data.endswith(b"\n"):
            with open(path, "ab") as f:
                f.write(b"\n")
                os.fsync(f.fileno())
        return None
    torn = Path(f"{path}.torn")
    with open(torn, "ab") as f:  # kept before the cut: a crash in between leaves it in both, never in neither
        f.write(last.rstrip(b"\n") + b"\n")
        os.fsync(f.fileno())
    with open(path, "r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())
    return _say(f"{path}: set aside a torn last line ({len(last)} bytes, a write a crash cut short) in {torn.name}")


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode()), dict)
    except (UnicodeDecodeError, ValueError):
        return False


_said: set[str] = set()


def _say(line: str) -> str:
    """A warning on stderr, once per process (the calibrate loop reads its file every few seconds)."""
    if line not in _said:
        _said.add(line)
        print(f"warning: {line}", file=sys.stderr)
    return line


def read_json_lines(path: Path, parse: Callable[[str], T], lost: str) -> list[T]:
    """Every record of a JSON-lines file, each through `parse`. A torn last line is dropped, saying so and what
    that loses (`lost`); a torn fragment glued before a good record (an append after a crash, before
    wanfit set torn tails aside) keeps the record; any other bad line is a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(parse(line))
            continue
        except (ValueError, KeyError, TypeError):  # JSON and pydantic errors are ValueErrors
            pass
        record = _glued_record(line, parse)
        if record is None and i == last:
            _say(f"{path}:{i}: dropped a torn last line ({len(line)} characters, a write a crash cut short): {lost}")
            break
        if record is None:
            raise WanfitError(f"{path}:{i} is not a valid record: move that line to {path.name}.torn and re-run "
                              f"`wanfit calibrate` to measure what it held again")
        _say(f"{path}:{i}: dropped a torn fragment glued before a good record: {lost}")
        out.append(record)
    return out


def _glued_record(line: str, parse: Callable[[str], T]) -> T | None:
    start = line.find('{"', 1)
    while start > 0:
        try:
            return parse(line[start:])
        except (ValueError, KeyError, TypeError):
            start = line.find('{"', start + 1)
    return None


def load_measurements(path: Path) -> list[Measurement]:
    """All complete measurements in the file (read_json_lines: a torn last line is dropped with a warning,
    its point measured again on resume). Measurements that predate the runner's `first_in_process` get it
    inferred (`infer_first_in_process`)."""
    out = read_json_lines(path, lambda line: Measurement.model_validate(json.loads(line)),
                          "its point is measured again on resume")
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
    def window(line: str) -> tuple[datetime, datetime, dict]:
        row = json.loads(line)
        start = datetime.fromisoformat(row["started"])
        return start, start + timedelta(seconds=float(row["wall_s"])), row

    return read_json_lines(sessions_path, window, "that session's GPU minutes are not counted")


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
