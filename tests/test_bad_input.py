"""Every bad input tried on the command line, kept as one table: each is refused with exit code 2 and one
line on stderr that names what to change (no traceback, no silent nonsense such as a plan that "fits" with a
NaN guidance). Run through the real entry point, wanfit.cli.app; none needs a GPU (verify checks its inputs
before it looks for one)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from wanfit import cli

runner = CliRunner()
PLAN = ["plan", "--gpu", "h100", "--format", "json"]
VERIFY = ["verify", "--gpu", "h100", "--offload", "none"]
# verify's flag for the steps actually run: --run-steps where the CLI has it (--steps there now names the job's)
RUN_STEPS = next((name for p in typer.main.get_command(cli.app).commands["verify"].params for name in p.opts
                  if name == "--run-steps"), "--steps")

# (command line, a word the one-line error must hold)
BAD_INPUTS = [
    # the workload (wanfit.vocabulary.workload.Workload)
    ([*PLAN, "--guidance", "nan"], "guidance"),
    ([*PLAN, "--guidance", "inf"], "guidance"),
    ([*PLAN, "--guidance", "-inf"], "guidance"),
    ([*PLAN, "--guidance", "-1"], "guidance"),
    ([*PLAN, "--steps", "0"], "steps"),
    ([*PLAN, "--steps", "-5"], "steps"),
    ([*PLAN, "--steps", "10001"], "steps"),
    ([*PLAN, "--steps", "1" + "0" * 300], "steps"),
    ([*PLAN, "--frames", "0"], "frames"),
    ([*PLAN, "--frames", "-3"], "frames"),
    ([*PLAN, "--frames", "8"], "4k+1"),
    ([*PLAN, "--frames", "100005"], "frames"),
    ([*PLAN, "--frames", "1" + "0" * 299 + "1"], "frames"),
    ([*PLAN, "--size", "0x0"], "height"),
    ([*PLAN, "--size", "1280x0"], "height"),
    ([*PLAN, "--size", "1280x700"], "multiple of 32"),
    ([*PLAN, "--size", "32768x704"], "width"),
    ([*PLAN, "--size", "axb"], "--size"),
    ([*PLAN, "--size", "-1280x704"], "--size"),
    ([*PLAN, "--height", "-32"], "height"),
    ([*PLAN, "--width", "16"], "width"),
    ([*PLAN, "--size", "1280x704", "--height", "704"], "either"),
    ([*PLAN, "--scenario", "fastest"], "scenario"),
    (["plan", "--gpu", "h1000", "--format", "json"], "gpu"),
    ([*PLAN, "--model", "wan3"], "model"),
    # the planner's options (wanfit.planner.api.check_options)
    ([*PLAN, "--margin", "nan"], "--margin"),
    ([*PLAN, "--margin", "inf"], "--margin"),
    ([*PLAN, "--margin", "-1"], "--margin"),
    ([*PLAN, "--host-ram", "nan"], "--host-ram"),
    ([*PLAN, "--host-ram", "inf"], "--host-ram"),
    ([*PLAN, "--host-ram", "0"], "--host-ram"),
    ([*PLAN, "--host-ram", "-8"], "--host-ram"),
    ([*PLAN, "--host-pageable-gbps", "nan"], "--host-pageable-gbps"),
    ([*PLAN, "--host-pageable-gbps", "inf"], "--host-pageable-gbps"),
    ([*PLAN, "--host-pageable-gbps", "0"], "--host-pageable-gbps"),
    ([*PLAN, "--host-pageable-gbps", "-6.4"], "--host-pageable-gbps"),
    ([*PLAN, "--host-d2h-gbps", "nan"], "--host-d2h-gbps"),
    ([*PLAN, "--host-d2h-gbps", "inf"], "--host-d2h-gbps"),
    ([*PLAN, "--host-d2h-gbps", "0"], "--host-d2h-gbps"),
    ([*PLAN, "--calibration-dir", "/nonexistent/wanfit-calibrations"], "does not exist"),
    ([*PLAN, "--runtime", "wan", "--offload", "group"], "wan runtime has no offload group"),
    # verify's own numbers (wanfit.verify.compare.Tolerances, run_verify), all before any GPU is looked for
    ([*VERIFY, "--tolerance-memory", "nan"], "--tolerance-memory"),
    ([*VERIFY, "--tolerance-memory", "inf"], "--tolerance-memory"),
    ([*VERIFY, "--tolerance-memory", "0"], "--tolerance-memory"),
    ([*VERIFY, "--tolerance-memory", "-0.05"], "--tolerance-memory"),
    ([*VERIFY, "--tolerance-memory", "5"], "--tolerance-memory"),
    ([*VERIFY, "--tolerance-time", "nan"], "--tolerance-time"),
    ([*VERIFY, "--tolerance-time", "0"], "--tolerance-time"),
    ([*VERIFY, RUN_STEPS, "0"], "steps to run"),
    ([*VERIFY, RUN_STEPS, "51"], "steps to run"),
    ([*VERIFY, "--workload-steps", "0"], "steps"),
    ([*VERIFY, "--guidance", "nan"], "guidance"),
    ([*VERIFY, "--margin", "nan"], "--margin"),
    ([*VERIFY, "--host-ram", "-1"], "--host-ram"),
    ([*VERIFY, "--host-pageable-gbps", "nan"], "--host-pageable-gbps"),
    ([*VERIFY, "--host-d2h-gbps", "inf"], "--host-d2h-gbps"),
    ([*VERIFY, "--recommended", "--plan-file", __file__], "either"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUTS, ids=[" ".join(a[1:])[-60:] for a, _ in BAD_INPUTS])
def test_a_bad_input_is_one_line_and_exit_code_2(args, needle, monkeypatch):
    monkeypatch.delenv("WANFIT_CALIBRATION_DIR", raising=False)
    monkeypatch.delenv("WANFIT_DEBUG", raising=False)
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle.lower() in lines[0].lower(), lines[0]
    assert result.stdout == ""
