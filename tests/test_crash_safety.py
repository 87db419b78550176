"""Measurements survive a crash at any byte: a writer killed mid-line loses only that line, which the next
append sets aside in <file>.torn (never glued to the next record) and every load reports; writes are checked
to the last byte and fsynced; an interrupted calibrate session still records its GPU minutes; --fit-only over
corrupt side files or an unwritable output is one line; verify checks --out before the run and keeps the raw
measurement before it builds any report."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from wanfit import cli
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement, point_id
from wanfit.vocabulary.measurements_file import append_json_line, append_measurement, load_measurements, session_windows
from wanfit.vocabulary.workload import Plan, Workload

runner = CliRunner()
ENV = Environment(gpu_name="test", gpu_total_gib=1.0, torch="x", python="3.11", platform="linux", wanfit="0")


def point(frames: int) -> Measurement:
    wl = Workload(model="wan2.1-t2v-1.3b", height=480, width=832, frames=frames, steps=2, guidance=5.0)
    return Measurement(id=point_id(wl, Plan(), 2, "random"), workload=wl, plan=Plan(), status="ok", steps_run=2,
                       source="random", first_in_process=True, environment=ENV, created_at="2026-11-23T10:00:00+00:00",
                       error="x" * 200_000)  # a big record: the writer is killed inside it


WRITER = textwrap.dedent("""
    import os, sys
    line = open(sys.argv[2]).read().encode()
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    os.write(fd, line[: len(line) // 2])  # half the record is on disk ...
    os.fsync(fd)
    print("half", flush=True)
    sys.stdin.read()  # ... when the process is killed
""")


def test_a_writer_killed_mid_line_loses_only_that_line_and_appending_resumes(tmp_path, capsys):
    path = tmp_path / "m.measurements.jsonl"
    first, torn, after = point(5), point(9), point(13)
    append_measurement(path, first)
    record = tmp_path / "record.json"
    record.write_text(torn.model_dump_json() + "\n")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(record)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "half"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    assert not path.read_bytes().endswith(b"\n")

    assert load_measurements(path) == [first]  # every good point kept ...
    assert "dropped a torn last line" in capsys.readouterr().err  # ... and the drop said

    notice = append_measurement(path, after)
    assert notice is not None and "m.measurements.jsonl.torn" in notice
    assert "set aside a torn last line" in capsys.readouterr().err
    assert load_measurements(path) == [first, after]  # not glued: the next record is whole
    assert capsys.readouterr().err == ""  # nothing dropped any more
    aside = (tmp_path / "m.measurements.jsonl.torn").read_bytes()
    assert record.read_bytes().startswith(aside.rstrip(b"\n")) and len(aside) > 100_000
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_truncated_write_of_half_a_line_is_set_aside_before_the_next_append(tmp_path):
    path = tmp_path / "m.jsonl"
    append_measurement(path, point(5))
    with path.open("a") as f:
        f.write(point(9).model_dump_json()[:40])
    append_measurement(path, point(13))
    assert [m.workload.frames for m in load_measurements(path)] == [5, 13]
    assert (tmp_path / "m.jsonl.torn").read_text().startswith('{"')


def test_a_complete_last_record_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(point(5).model_dump_json())  # the crash came between the record and its newline
    assert append_measurement(path, point(9)) is None
    assert [m.workload.frames for m in load_measurements(path)] == [5, 9]
    assert not (tmp_path / "m.jsonl.torn").exists()


def test_a_fragment_glued_before_a_good_record_keeps_the_record(tmp_path, capsys):
    """Files an older wanfit appended after a crash: the fragment and the next record share a line."""
    path = tmp_path / "m.jsonl"
    a, b, c = point(5), point(9), point(13)
    path.write_text(a.model_dump_json() + "\n" + b.model_dump_json()[:300] + c.model_dump_json() + "\n")
    assert load_measurements(path) == [a, c]
    assert "dropped a torn fragment glued before a good record" in capsys.readouterr().err


def test_every_byte_is_written_and_fsynced(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    real_write, synced = os.write, []

    def short_write(fd, data):  # the kernel may take fewer bytes than asked
        return real_write(fd, bytes(data[: max(1, len(data) // 3)]))

    monkeypatch.setattr(os, "write", short_write)
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    append_measurement(path, point(5))
    assert [m.workload.frames for m in load_measurements(path)] == [5]
    assert str(path) in synced  # the file itself, not only its directory

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(WanfitError) as err:
        append_measurement(path, point(9))
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)


def test_the_sessions_file_is_fsynced_and_a_torn_session_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    from wanfit.measure.calibrate import _record_session, gpu_minutes

    path = tmp_path / "m.sessions.jsonl"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    _record_session(path, 1_700_000_000.0, 3)
    assert str(path) in synced
    with path.open("a") as f:
        f.write('{"started": "2026-11-23T1')
    assert len(session_windows(path)) == 1
    assert "GPU minutes are not counted" in capsys.readouterr().err
    assert gpu_minutes(tmp_path, "m") > 0


def test_an_interrupted_calibrate_session_still_records_its_gpu_minutes(tmp_path, monkeypatch):
    import wanfit.measure.calibrate as calibrate

    monkeypatch.setattr(calibrate, "require_cuda", lambda command: None)
    monkeypatch.setattr(calibrate, "local_gpu", lambda: ("NVIDIA H100 80GB HBM3", 79.6))
    monkeypatch.setattr(calibrate, "measure_session_ceilings", lambda path: {"h2d_pageable_gbps": 7.0})

    def interrupted(jobs, path, on_result=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibrate, "run_jobs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        calibrate.run_calibration("h100", ["wan2.1-t2v-1.3b"], tmp_path, quick=True)
    (row,) = [row for _, _, row in session_windows(tmp_path / "h100" / "wan2.1-t2v-1.3b.sessions.jsonl")]
    assert row["wall_s"] >= 0 and row["jobs"] > 0 and row["ceilings"] == {"h2d_pageable_gbps": 7.0}


def test_a_calibrate_session_killed_by_sigterm_records_its_gpu_minutes(tmp_path, monkeypatch):
    """`timeout` (the device calls) and batch schedulers stop a run with SIGTERM, which skips `finally` unless
    handled: the session row is written all the same, and the previous handler is back afterwards."""
    import os
    import signal
    import time

    import wanfit.measure.calibrate as calibrate

    monkeypatch.setattr(calibrate, "require_cuda", lambda command: None)
    monkeypatch.setattr(calibrate, "local_gpu", lambda: ("NVIDIA H100 80GB HBM3", 79.6))
    monkeypatch.setattr(calibrate, "measure_session_ceilings", lambda path: {"h2d_pageable_gbps": 7.0})

    def terminated(jobs, path, on_result=None):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first
        raise AssertionError("SIGTERM did not stop the session")

    monkeypatch.setattr(calibrate, "run_jobs", terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        calibrate.run_calibration("h100", ["wan2.1-t2v-1.3b"], tmp_path, quick=True)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    (row,) = [row for _, _, row in session_windows(tmp_path / "h100" / "wan2.1-t2v-1.3b.sessions.jsonl")]
    assert 0 <= row["wall_s"] < 5 and row["jobs"] > 0


@pytest.fixture
def measured_dir(tmp_path):
    from planner_fixtures import CEILINGS, MEASUREMENTS

    gpu_dir = tmp_path / "h100"
    gpu_dir.mkdir()
    (gpu_dir / "wan2.2-ti2v-5b.measurements.jsonl").write_text(MEASUREMENTS.read_text())
    (gpu_dir / "ceilings.json").write_text(CEILINGS.read_text())
    return tmp_path


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


FIT_ONLY = ["calibrate", "--gpu", "h100", "--fit-only", "--model", "wan2.2-ti2v-5b", "--out"]


@pytest.mark.parametrize("content", ["{not json", '{"ceilings": {"matmul_tflops": "fast"}}', "[]", ""])
def test_fit_only_with_a_corrupt_ceilings_file_is_one_line(measured_dir, content):
    (measured_dir / "h100" / "ceilings.json").write_text(content)
    line = _one_line(runner.invoke(cli.app, [*FIT_ONLY, str(measured_dir)]))
    assert "ceilings.json" in line and "wanfit calibrate --gpu h100" in line


def test_fit_only_with_a_corrupt_sessions_file_is_one_line(measured_dir):
    (measured_dir / "h100" / "wan2.2-ti2v-5b.sessions.jsonl").write_text('garbage\n{"started": "x"}\n')
    line = _one_line(runner.invoke(cli.app, [*FIT_ONLY, str(measured_dir)]))
    assert "wan2.2-ti2v-5b.sessions.jsonl:1" in line


def test_fit_only_to_an_unwritable_path_is_one_line(measured_dir):
    (measured_dir / "h100" / "wan2.2-ti2v-5b.json").mkdir()  # where the calibration goes, a directory sits
    line = _one_line(runner.invoke(cli.app, [*FIT_ONLY, str(measured_dir)]))
    assert "cannot write calibration file" in line and "--out" in line


def test_append_json_line_creates_its_directory(tmp_path):
    append_json_line(tmp_path / "a" / "b.jsonl", '{"x": 1}')
    assert (tmp_path / "a" / "b.jsonl").read_text() == '{"x": 1}\n'


@pytest.fixture
def fake_verify_gpu(monkeypatch):
    """An H100 as nvidia-smi describes it, a planner returning a fixture candidate and a worker returning a
    fixture measurement (constructed objects, not a run): what run_verify does around the run."""
    import wanfit.measure.worker as worker
    import wanfit.planner.api as api
    import wanfit.verify.run as run_mod
    from verify_fixtures import candidate, measurement

    runs = []
    monkeypatch.setattr(run_mod, "require_cuda", lambda command: None)
    monkeypatch.setattr(run_mod, "local_gpu", lambda: ("NVIDIA H100 80GB HBM3", 79.647))
    monkeypatch.setattr(api, "predict_one", lambda workload, plan, gpu, **kw: candidate(plan=plan))

    def run_in_subprocess(workload, plan, **kw):
        runs.append(kw)
        return measurement(workload=workload, plan=plan)

    monkeypatch.setattr(worker, "run_in_subprocess", run_in_subprocess)
    return runs


def test_verify_checks_its_output_path_before_the_gpu_run(tmp_path, fake_verify_gpu):
    from verify_fixtures import WORKLOAD
    from wanfit.verify.run import run_verify

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(WanfitError) as err:
        run_verify(WORKLOAD, Plan(), "h100", out=blocker / "reports")
    assert "--out" in str(err.value) and "nothing has run yet" in str(err.value) and "\n" not in str(err.value)
    assert fake_verify_gpu == []  # no GPU time spent


def test_verify_saves_the_raw_measurement_before_it_builds_any_report(tmp_path, fake_verify_gpu, monkeypatch):
    import wanfit.verify.run as run_mod
    from verify_fixtures import WORKLOAD
    from wanfit.verify.run import run_verify

    def broken_report(*args, **kwargs):
        raise RuntimeError("a report bug")

    monkeypatch.setattr(run_mod, "build_report", broken_report)
    with pytest.raises(RuntimeError):
        run_verify(WORKLOAD, Plan(), "h100", out=tmp_path / "reports")
    (raw,) = (tmp_path / "reports").glob("*.measurement.jsonl")
    (m,) = load_measurements(raw)
    assert m.workload == WORKLOAD and len(fake_verify_gpu) == 1
