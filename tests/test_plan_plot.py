"""`wanfit plan --plot`: the sweep it predicts (which frame counts and sizes, the best plan at each) and the PNG,
and the one-line error without the plot extra."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from wanfit import cli
from wanfit.planner.api import plan_report
from wanfit.planner.sweep import frame_points, size_points, sweep
from wanfit.vocabulary.workload import PlanPins, Workload

runner = CliRunner()
EVERY_20 = [21, 41, 61, 81, 101, 121, 141, 161, 181, 201, 221, 241, 261, 281, 301, 321, 341, 361]


def test_frame_points_run_from_5_to_361_or_the_jobs_frames():
    assert frame_points(121) == [5, *EVERY_20]
    assert frame_points(361) == [5, *EVERY_20]
    assert frame_points(45) == sorted([5, 45, *EVERY_20])
    assert frame_points(401) == [5, *EVERY_20, 381, 401]
    assert frame_points(365) == [5, *EVERY_20, 365]
    assert all(f % 4 == 1 for f in frame_points(365))


def test_size_points_keep_the_aspect_and_the_stride():
    workload = Workload.for_model("wan2.2-ti2v-5b")
    points = size_points(workload)
    assert (1280, 704) in points and points[0] == (320, 192) and points[-1] == (1920, 1056)
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in points)
    assert [w * h for w, h in points] == sorted(w * h for w, h in points)


def test_sweep_takes_each_gpus_best_plan_at_every_point():
    workload = Workload.for_model("wan2.2-ti2v-5b", frames=361)
    pins = PlanPins(text_encoder="gpu")
    sweeps = sweep(workload, ["l40s", "rtx4090"], pins, host_ram_gib=64)
    assert [s.gpu for s in sweeps] == ["l40s", "rtx4090"]
    for s in sweeps:
        assert [p.workload.frames for p in s.by_frames] == frame_points(361)
        assert [(p.workload.width, p.workload.height) for p in s.by_size] == size_points(workload)
    for point in sweeps[1].by_frames[::6] + sweeps[1].by_size[::3]:  # spot checks against plan itself
        result = plan_report(point.workload, ["rtx4090"], pins, host_ram_gib=64).results[0]
        least = min(result.candidates, key=lambda c: c.need_gib)
        assert point.best == (result.recommended or least)
        assert point.fits is (result.recommended is not None)
        assert point.least_need_gib == least.need_gib
        assert point.best.plan["text_encoder"] == "gpu"  # the pins hold along the sweep
    assert not sweeps[1].by_size[-1].fits  # 1920x1056x361 does not fit a 24 GB card


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "fit.png"
    result = runner.invoke(cli.app, ["plan", "--gpu", "l40s", "--gpu", "rtx4090", "--frames", "121", "--format",
                                     "json", "--plot", str(path)])
    assert result.exit_code == 0, result.output
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {path}" in result.stderr


def test_plot_without_matplotlib_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as when not installed
    result = runner.invoke(cli.app, ["plan", "--gpu", "l40s", "--plot", str(tmp_path / "fit.png")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: `wanfit plan --plot` needs the plot extras (matplotlib is missing): pip install 'wanfit[plot]'"]
    assert result.stdout == ""  # refused before planning


@pytest.mark.parametrize(("name", "needle"), [("fit.svg", "ending in .png"), ("nowhere/fit.png", "does not exist")])
def test_plot_path_is_checked_before_planning(tmp_path, name, needle):
    result = runner.invoke(cli.app, ["plan", "--gpu", "l40s", "--plot", str(tmp_path / name)])
    assert result.exit_code == 2 and needle in result.stderr
