"""The several-GPU launcher and merge, with stand-in ranks (tests/distributed_stub_rank.py, no torch): torchrun's
environment per rank, one Measurement from every rank's record, and failures (an OOM rank, a rank that dies, a rank
hung in a collective) that keep every rank's figures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wanfit.measure.distributed import launch
from wanfit.measure.distributed.merge import PointKey, RankOutput, RankResult, merge_ranks
from wanfit.measure.worker import Job
from wanfit.vocabulary.measurement import Distributed, StageRecord
from wanfit.vocabulary.workload import Plan, Workload

STUB = "distributed_stub_rank"
JOB = Job(workload=Workload(model="wan2.1-t2v-1.3b", height=32, width=48, frames=5, steps=2, guidance=5.0),
          plan=Plan(gpus=2, ulysses=2), device="cpu")


@pytest.fixture
def stub(monkeypatch):
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def run(mode: str, **kwargs):
        monkeypatch.setenv("WANFIT_STUB_MODE", mode)
        return launch.run_distributed(JOB, module=STUB, **kwargs)

    return run


def test_every_rank_gets_torchruns_environment_and_the_merge_keeps_every_rank(stub):
    m = stub("ok")
    assert m.status == "ok", m.error
    assert m.id == JOB.id and m.plan == JOB.plan
    assert [r.rank for r in m.ranks] == [0, 1] and [r.status for r in m.ranks] == ["ok", "ok"]
    for r in m.ranks:
        assert (r.extra["RANK"], r.extra["LOCAL_RANK"], r.extra["WORLD_SIZE"]) == (r.rank, r.rank, 2)
        assert r.extra["OMP_NUM_THREADS"] == 1  # torchrun's default for several processes
    assert m.ranks[0].extra["MASTER_PORT"] == m.ranks[1].extra["MASTER_PORT"] > 0  # one rendezvous
    # the point's stages are rank 0's; the per-GPU peak is the worst rank's
    assert m.stages == m.ranks[0].stages and m.stage("step", 1).device_used_peak_gib == 20.0
    assert m.peak_device_used_gib == 25.0 == m.ranks[1].peak_device_used_gib
    assert m.ranks[1].collectives()["all_to_all"].time_s == pytest.approx(0.2)
    assert m.environment.gpu_count == 2 and m.distributed.world_size == 2 and m.distributed.backend == "stub"


def test_an_oom_rank_makes_an_oom_point_and_its_hung_peer_is_killed_with_its_stages_kept(stub):
    started = time.monotonic()
    m = stub("oom_hang", grace_s=0.5)
    assert time.monotonic() - started < 30  # the peer waiting in its collective did not hold the point
    assert m.status == "oom" and m.failed_stage == "step 1"
    assert "rank 1: oom at step 1" in m.error and "rank 0: killed" in m.error
    killed, oom = m.ranks
    assert killed.status == "killed" and oom.status == "oom"
    assert [s.name for s in killed.stages] == ["init", "total"]  # what it streamed before it was killed
    assert killed.stages[0].device_used_peak_gib == 10.0
    assert m.stages == killed.stages  # rank 0's, though it never wrote a record


def test_a_rank_that_dies_without_a_record_is_an_error_point_with_its_output(stub):
    m = stub("die", grace_s=0.5)
    assert m.status == "error"
    assert [r.status for r in m.ranks] == ["ok", "no_record"]
    assert "segmentation fault" in m.ranks[1].error and "exit code 7" in m.ranks[1].error
    assert m.ranks[1].stages[0].name == "init"


def test_ranks_past_the_timeout_are_killed(stub):
    m = stub("hang", timeout_s=0.5)
    assert m.status == "error" and [r.status for r in m.ranks] == ["killed", "killed"]


def test_the_merge_takes_the_worst_rank_and_the_first_oom_of_several_failures():
    def result(rank: int, status: str, peak: float, stage: str | None = None) -> RankResult:
        rec = StageRecord(name="step", index=1, start_s=0.0, time_s=1.0, device_used_peak_gib=peak)
        streamed = [rec]
        out = RankOutput(rank=rank, local_rank=rank, device="cpu", backend="gloo",
                         error="RuntimeError: peer gone" if status == "error" else None)
        return RankResult(rank, 3, False, out if status == "error" else None, streamed, "oom: out of memory")

    key = PointKey(id="x", workload=JOB.workload, plan=JOB.plan)
    m = merge_ranks(key, [result(1, "error", 7.0), result(0, "error", 5.0)], Distributed(world_size=2, backend="gloo"))
    assert m.status == "error" and [r.rank for r in m.ranks] == [0, 1] and m.peak_device_used_gib == 7.0
    assert m.failed_stage == "step 2" and m.steps_run == 1  # where rank 0 was: after the step it closed


def test_gpu_count_is_checked_before_anything_runs(monkeypatch):
    from wanfit.vocabulary.errors import WanfitError

    monkeypatch.setattr(launch, "available_gpus", lambda: 2)
    launch.require_gpus(2, "verify")
    with pytest.raises(WanfitError, match="--gpus 4 runs one rank per GPU of this host, which has 2"):
        launch.require_gpus(4, "verify")


def test_a_rank_reads_its_own_gpu_in_nvml(monkeypatch):
    from wanfit.measure.monitor import _device_handle

    class FakeNvml:
        def nvmlDeviceGetHandleByIndex(self, i):
            return ("index", i)

        def nvmlDeviceGetHandleByUUID(self, u):
            return ("uuid", u)

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert _device_handle(FakeNvml(), None) == ("index", 5)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b")
    assert _device_handle(FakeNvml(), None) == ("uuid", "GPU-b")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _device_handle(FakeNvml(), None) == ("index", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert _device_handle(FakeNvml(), None) == ("index", 0)  # one GPU: as before
