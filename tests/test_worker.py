"""Worker isolation: points run in fresh processes, results are appended, a rerun resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from wanfit.measure.tiny import tiny_spec
from wanfit.measure.worker import Job, run_in_subprocess, run_jobs
from wanfit.vocabulary.measurements_file import load_measurements
from wanfit.vocabulary.workload import Plan, Workload

pytestmark = pytest.mark.slow
KEY = "wan2.1-t2v-1.3b"


def job(frames: int, plan: Plan = Plan()) -> Job:
    wl = Workload(model=KEY, height=32, width=48, frames=frames, steps=2, guidance=5.0)
    return Job(workload=wl, plan=plan, spec=tiny_spec(KEY), device="cpu")


def test_run_jobs_measures_failures_and_resumes_without_rerunning(tmp_path):
    path = tmp_path / "m.jsonl"
    jobs = [job(5), job(9), job(5, Plan(offload="model"))]  # the last needs CUDA: an error point
    seen = []
    out = run_jobs(jobs, path, on_result=seen.append)
    assert [m.status for m in out] == ["ok", "ok", "error"]
    assert [m.first_in_process for m in out] == [True, False, False]  # one worker process ran all three
    assert len(seen) == 3
    assert out[2].failed_stage == "init"
    lines_before = len(load_measurements(path))
    again = run_jobs(jobs[:2], path)  # finished points are not measured again
    assert [m.id for m in again] == [m.id for m in out[:2]]
    assert len(load_measurements(path)) == lines_before


def test_run_in_subprocess_returns_the_measurement():
    m = run_in_subprocess(job(5).workload, Plan(), spec=tiny_spec(KEY), device="cpu")
    assert m.status == "ok", m.error
    assert m.environment.allocator_conf == "expandable_segments:True"


def test_allocator_setting_follows_the_plan(tmp_path):
    out = run_jobs([job(5, Plan(expandable_segments=False))], tmp_path / "m.jsonl")
    assert out[0].status == "ok" and out[0].environment.allocator_conf == ""


def test_a_checkpoint_job_loads_through_a_worker_and_resumes_by_its_own_id(tmp_path):
    """The calibration's checkpoint-load point: a job with `checkpoint` runs from_pretrained in the
    worker, is recorded as source=checkpoint, and its id differs from the random point's."""
    from wanfit.measure.build import save_random_checkpoint
    from wanfit.measure.calibrate import CHECKPOINT_POINT, grid_jobs

    grid = grid_jobs(KEY, checkpoint=tmp_path / "ckpt")
    last = grid[-1]
    assert last.checkpoint == str(tmp_path / "ckpt") and last.plan == Plan()
    assert (last.workload.height, last.workload.width, last.workload.frames) == CHECKPOINT_POINT[:3]
    assert last.id not in {j.id for j in grid[:-1]} and grid_jobs(KEY)[-1].checkpoint is None
    path = save_random_checkpoint(tiny_spec(KEY), tmp_path / "ckpt", "cpu")
    tiny = job(5).model_copy(update={"checkpoint": str(path)})
    out = run_jobs([tiny], tmp_path / "m.jsonl")
    assert out[0].status == "ok" and out[0].source == "checkpoint" and out[0].id == tiny.id != job(5).id


def test_a_session_record_keeps_the_ceilings_measured_at_its_start(tmp_path):
    from wanfit.measure.calibrate import _record_session, gpu_minutes

    path = tmp_path / "m.sessions.jsonl"
    _record_session(path, time.time() - 90, 3, {"h2d_pageable_gbps": 9.2})
    _record_session(path, time.time() - 30, 1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["ceilings"] == {"h2d_pageable_gbps": 9.2} and "ceilings" not in rows[1]
    assert rows[0]["jobs"] == 3 and 1.9 < gpu_minutes(tmp_path, "m") < 2.1


def test_every_session_measures_its_ceilings_and_the_first_stays_the_fits(tmp_path, monkeypatch):
    import types

    import wanfit.measure.calibrate as calibrate

    measured = iter([9.2, 7.1])
    # two more fresh-process draws per session: the pageable rate and the rate down into fresh pages
    draws = iter([(8.0, 1.2), (10.4, 1.3), (6.0, 1.1), (6.8, 1.0)])

    def fake_run(cmd, **kwargs):  # the ceilings subprocesses need a GPU: write / print what they would
        if cmd[-1] == "--host-pageable":
            h2d, d2h = next(draws)
            return types.SimpleNamespace(stdout=json.dumps({"h2d_pageable_gbps": h2d, "d2h_fresh_gbps": d2h}))
        Path(cmd[-1]).write_text(json.dumps({"ceilings": {"h2d_pageable_gbps": next(measured)}}, indent=1))

    monkeypatch.setattr(calibrate.subprocess, "run", fake_run)
    path = tmp_path / "h100" / "ceilings.json"
    # medians of 9.2, 8.0, 10.4 and of 1.2, 1.3; then of 7.1, 6.0, 6.8 and of 1.1, 1.0
    assert calibrate.measure_session_ceilings(path) == {"h2d_pageable_gbps": 9.2, "d2h_fresh_gbps": 1.25}
    assert calibrate.measure_session_ceilings(path) == {"h2d_pageable_gbps": 6.8, "d2h_fresh_gbps": 1.05}
    assert json.loads(path.read_text())["ceilings"] == {"h2d_pageable_gbps": 9.2, "d2h_fresh_gbps": 1.25}
