"""verify of a several-GPU run: memory compared on the worst rank (device peaks, and each rank's own need under a
cap), times on rank 0's clock, the report's per-rank table and statements. The ranks are made-up records
(tests/verify_fixtures.py) merged as the launcher merges real ones."""

from __future__ import annotations

from rich.console import Console

from verify_fixtures import candidate, measurement
from wanfit.measure.cap import make_cap
from wanfit.measure.distributed.merge import PointKey, RankOutput, RankResult, merge_ranks
from wanfit.verify.report import build_report, honesty_statements, report_stem
from wanfit.views.verify_report import render_markdown, render_rich
from wanfit.vocabulary.measurement import CollectiveStat, Distributed
from wanfit.vocabulary.workload import Plan

PLAN = Plan(runtime="wan", dit_dtype="fp32", gpus=2, ulysses=2, dit_fsdp=True, t5_fsdp=True)


def two_ranks():
    """Rank 0 decodes (40 GiB), rank 1 has the higher step peak (21 vs 18) and more memory outside torch."""
    r0 = measurement(plan=PLAN, step_peak=18.0, step_alloc=15.0, vae=(10.3, 40.0), vae_alloc=30.0)
    r1 = measurement(plan=PLAN, step_peak=21.0, step_alloc=17.5, vae=(10.5, 12.0), vae_alloc=10.0, context=0.7,
                     idle=0.9)
    steps = [s.model_copy(update={"collectives": {"all_to_all": CollectiveStat(calls=240, time_s=0.3, bytes=1e9)}})
             if s.name == "step" else s for s in r1.stages]
    r1 = r1.model_copy(update={"stages": steps})
    results = [RankResult(i, 0, False, RankOutput(rank=i, local_rank=i, device=f"cuda:{i}", backend="nccl",
                                                  nccl_version="2.27.3", measurement=m), [])
               for i, m in enumerate((r0, r1))]
    key = PointKey(id=r0.id, workload=r0.workload, plan=PLAN, source="checkpoint")
    return merge_ranks(key, results, Distributed(world_size=2, backend="nccl"))


def test_memory_is_compared_on_the_worst_rank_and_time_on_rank_0():
    m = two_ranks()
    report = build_report(m, candidate(plan=PLAN, step_peak=21.0), target_gpu="h100", target_memory_gib=79.2)
    rows = {r.stage: r for r in report.rows}
    assert rows["denoise"].measured_peak_gib == 21.0  # rank 1's steps, not rank 0's 18
    assert rows["vae_decode"].measured_peak_gib == 40.0  # rank 0 decodes
    assert rows["total"].measured_peak_gib == 40.0
    assert rows["vae_decode"].measured_time_s == 10.3  # rank 0's clock
    assert m.peak_device_used_gib == 40.0


def test_a_capped_run_compares_each_ranks_own_need():
    m = two_ranks()
    cap = make_cap("l40s", 20.0, 79.2, 1.1)
    report = build_report(m, candidate(plan=PLAN, step_peak=21.0, need={"denoise": 19.0}), target_gpu="l40s",
                          target_memory_gib=20.0, cap=cap, same_gpu=False)
    denoise = next(r for r in report.rows if r.stage == "denoise")
    assert denoise.memory_basis == "need"
    assert abs(denoise.measured_peak_gib - (17.5 + 0.7 + 0.9)) < 1e-9  # rank 1's allocated peak + its own outside


def test_the_report_shows_every_rank_and_says_what_the_figures_are():
    report = build_report(two_ranks(), candidate(plan=PLAN, step_peak=21.0), target_gpu="h100",
                          target_memory_gib=79.2)
    md = render_markdown(report)
    assert "## Per rank (measured)" in md
    rank_rows = [line for line in md.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    # each rank's highest device peak over the run: rank 0 at its decode, rank 1 at its text encode
    assert len(rank_rows) == 2 and "| 40.00 |" in rank_rows[0] and "| 23.50 |" in rank_rows[1]
    assert "| 1.200 |" in rank_rows[1]  # rank 1's all-to-all over its 4 steps
    statement = next(s for s in honesty_statements(report) if "GPUs, one rank each" in s)
    assert "(nccl, NCCL 2.27.3)" in statement and "decodes on rank 0 only" in statement
    assert "gpus2-ulysses2-dit-fsdp-t5-fsdp" in report_stem(report)
    console = Console(record=True, width=240)
    render_rich(report, console)
    assert "Per rank (measured)" in console.export_text()


def test_a_one_gpu_report_has_no_rank_section():
    report = build_report(measurement(), candidate(), target_gpu="h100", target_memory_gib=79.2)
    assert "Per rank" not in render_markdown(report)
    assert not any("one rank each" in s for s in honesty_statements(report))
