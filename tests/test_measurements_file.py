"""The measurements file keeps every point: atomic appends, torn last line, resume semantics."""

from __future__ import annotations

import json

import pytest

from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement, point_id
from wanfit.vocabulary.measurements_file import append_measurement, done_ids, load_measurements
from wanfit.vocabulary.workload import Plan, Workload

ENV = Environment(gpu_name="test", gpu_total_gib=1.0, torch="x", python="3.11", platform="linux", wanfit="0")


def point(frames: int, status: str = "ok", first: bool | None = False, at: str = "00:00:00",
          source: str = "random", allocator: str = "") -> Measurement:
    wl = Workload(model="wan2.1-t2v-1.3b", height=480, width=832, frames=frames, steps=2, guidance=5.0)
    return Measurement(id=point_id(wl, Plan(), 2, source), workload=wl, plan=Plan(), status=status, steps_run=2,
                       source=source, first_in_process=first,
                       environment=ENV.model_copy(update={"allocator_conf": allocator}),
                       created_at=f"2026-11-23T{at}+00:00")


def test_append_then_load_round_trips(tmp_path):
    path = tmp_path / "m.jsonl"
    a, b = point(5, first=True), point(9, "oom")
    append_measurement(path, a)
    append_measurement(path, b)
    assert load_measurements(path) == [a, b]


def test_first_in_process_is_inferred_from_how_workers_start_where_not_recorded(tmp_path):
    """One worker per session runs points in file order until one fails or the allocator setting
    changes; the checkpoint point runs alone. A recorded value is kept as it is."""
    path = tmp_path / "x.measurements.jsonl"
    (tmp_path / "x.sessions.jsonl").write_text(
        '{"started": "2026-11-23T10:00:00+00:00", "wall_s": 600, "jobs": 6}\n'
        '{"started": "2026-11-23T12:00:00+00:00", "wall_s": 600, "jobs": 3}\n')
    points = [point(5, first=None, at="10:01:00"), point(9, first=None, at="10:02:00"),
              point(13, "oom", first=None, at="10:03:00"), point(17, first=None, at="10:04:00"),
              point(21, first=None, at="10:05:00", allocator="expandable_segments:True"),
              point(25, first=None, at="10:06:00", source="checkpoint", allocator="expandable_segments:True"),
              point(29, first=None, at="12:01:00"), point(33, first=None, at="12:02:00"),
              point(37, first=True, at="12:03:00")]
    for m in points:
        append_measurement(path, m)
    assert [m.first_in_process for m in load_measurements(path)] == [
        True, False, False,  # the worker's first, then two in the same process (the OOM ends it)
        True,  # after a failed point
        True,  # the allocator setting changed: a new worker
        True,  # the checkpoint point runs on its own
        True, False,  # a new session
        True]  # recorded, kept


def test_torn_last_line_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "m.jsonl"
    append_measurement(path, point(5))
    with path.open("a") as f:
        f.write(point(9).model_dump_json()[:40])  # the process died mid-write
    assert [m.workload.frames for m in load_measurements(path)] == [5]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("{not json}\n" + point(5).model_dump_json() + "\n")
    with pytest.raises(WanfitError, match=r"m\.jsonl:1 .*wanfit calibrate"):
        load_measurements(path)


def test_resume_skips_ok_and_oom_points_but_retries_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    ok, oom, err = point(5), point(9, "oom"), point(13, "error")
    for m in (ok, oom, err):
        append_measurement(path, m)
    assert done_ids(path) == {ok.id, oom.id}


def test_point_id_is_stable_and_distinguishes_options():
    wl = Workload(model="wan2.1-t2v-1.3b", height=480, width=832, frames=5, steps=2, guidance=5.0)
    assert point_id(wl, Plan(), 2) == point_id(wl, Plan(), 2)
    ids = {point_id(wl, Plan(), 2), point_id(wl, Plan(offload="model"), 2), point_id(wl, Plan(), 3),
           point_id(wl, Plan(), 2, tag="reset-check"), point_id(wl, Plan(), 2, decode=False),
           point_id(wl, Plan(), 2, memory_cap_gib=40.0)}
    assert len(ids) == 6


def test_file_lines_are_plain_json(tmp_path):
    path = tmp_path / "m.jsonl"
    append_measurement(path, point(5))
    assert json.loads(path.read_text().splitlines()[0])["status"] == "ok"


def test_stored_points_keep_their_ids_as_the_plan_gains_fields():
    """Each shipped measurement's id is its point_id (the resume key a rerun of calibrate matches): fields the
    Plan gained later must not change the ids of points stored before them."""
    from pathlib import Path

    from wanfit.vocabulary.measurement import point_id

    root = Path(__file__).resolve().parents[1] / "calibration"
    files = sorted(root.glob("*/*.measurements.jsonl")) + sorted(root.glob("*/wan/*.measurements.jsonl"))
    assert len(files) >= 4
    for path in files:
        for m in load_measurements(path):
            ids = {point_id(m.workload, m.plan, steps, m.source, m.tag, m.decoded, m.environment.memory_cap_gib)
                   for steps in (m.steps_run, m.workload.steps)}  # an OOM point ran fewer steps than asked
            assert m.id in ids, (path.name, m.id)
