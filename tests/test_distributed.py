"""Several GPUs, driven for real on the CPU: two ranks (gloo) through the same launcher calibrate and verify use,
each running its runtime's own distributed path on tiny configs: the official code's Ulysses all-to-all with FSDP1
of the DiT and T5 (generate.py's setup), diffusers' context parallelism with FSDP2 of the blocks. What a CPU cannot
run is listed, each with its reason."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from wanfit.measure.distributed.collectives import CollectiveMeter  # noqa: E402
from wanfit.measure.official.tiny import tiny_arch  # noqa: E402
from wanfit.measure.tiny import tiny_spec  # noqa: E402
from wanfit.measure.worker import run_in_subprocess  # noqa: E402
from wanfit.vocabulary.catalog import MODELS  # noqa: E402
from wanfit.vocabulary.workload import Plan, Workload  # noqa: E402

STEPS = 2
CFG_FORWARDS = 2


def workload(key: str, rows: int) -> Workload:
    stride = MODELS[key].spatial_stride
    return Workload(model=key, height=rows * stride, width=2 * stride, frames=5, steps=STEPS, guidance=5.0)


def per_step(rank, kind: str) -> list[int]:
    return [s.collectives[kind].calls if kind in s.collectives else 0 for s in rank.stages if s.name == "step"]


@pytest.mark.slow
def test_official_ulysses_with_dit_and_t5_fsdp_on_two_ranks():
    """generate.py's `torchrun --nproc_per_node 2 ... --dit_fsdp --t5_fsdp --ulysses_size 2`."""
    plan = Plan(runtime="wan", dit_dtype="fp32", gpus=2, ulysses=2, dit_fsdp=True, t5_fsdp=True)
    arch = tiny_arch()
    m = run_in_subprocess(workload("wan2.2-ti2v-5b", 1), plan, device="cpu", arch=dataclasses.asdict(arch))
    assert m.status == "ok", m.error
    assert [r.status for r in m.ranks] == ["ok", "ok"] and m.distributed.backend == "gloo"
    assert m.environment.gpu_count == 2 and m.steps_run == STEPS
    layers = arch.dit["num_layers"]
    for rank in m.ranks:
        # Ulysses: q, k, v and the output of every self-attention, both CFG forwards of every step
        assert per_step(rank, "all_to_all") == [4 * layers * CFG_FORWARDS] * STEPS
        assert per_step(rank, "sequence_gather") == [CFG_FORWARDS] * STEPS
        # FSDP1 gathers each block per forward (the root unit stays gathered after the first)
        assert all(n >= layers * CFG_FORWARDS for n in per_step(rank, "all_gather"))
        assert rank.stage_named("text_encode").collectives["all_gather"].calls > 0  # T5 FSDP
        assert rank.stage_named("init").collectives["broadcast"].calls > 0  # sync_module_states
    # rank 0 decodes; rank 1 waits for it at generate()'s barrier
    assert "vae_decode_call_s" in m.ranks[0].extra and "vae_decode_call_s" not in m.ranks[1].extra
    assert "barrier" in m.ranks[1].stage_named("vae_decode").collectives
    assert m.stages == m.ranks[0].stages and m.extra["attention_calls"] == CFG_FORWARDS * STEPS * layers * 2


@pytest.mark.slow
def test_diffusers_context_parallelism_with_fsdp2_on_two_ranks():
    """ContextParallelConfig(ulysses_degree=2) on the transformer, FSDP2 of its blocks, every rank decoding."""
    key = "wan2.2-ti2v-5b"
    spec = tiny_spec(key)
    m = run_in_subprocess(workload(key, 2), Plan(gpus=2, ulysses=2, dit_fsdp=True), device="cpu", spec=spec)
    assert m.status == "ok", m.error
    layers = spec.transformer["num_layers"]
    for rank in m.ranks:
        assert per_step(rank, "all_to_all") == [4 * layers * CFG_FORWARDS] * STEPS
        assert per_step(rank, "sequence_gather") == [CFG_FORWARDS] * STEPS
        assert per_step(rank, "all_gather") == [layers * CFG_FORWARDS] * STEPS  # FSDP2: each block, each forward
        assert "vae_decode_call_s" in rank.extra
        assert all(c.time_s > 0 and c.bytes > 0 for s in rank.stages for c in s.collectives.values())


def test_gpu_only_paths_say_why():
    """The paths a CPU cannot run; each runs on a GPU (bench/device/multi_gpu_verify.sh)."""
    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs here: the device script runs these paths")
    pytest.skip("GPU only: diffusers' ring attention (its backends that return the log-sum-exp are flash-attn and "
                "SDPA cuDNN / flash, CUDA bf16 only); NCCL; FSDP1's own sync_module_states (refused for CPU modules: "
                "the CPU run broadcasts rank 0's states itself); the allocator cap per rank; NVML peaks per rank")


def test_the_meter_times_each_call_once_by_its_outer_kind():
    meter = CollectiveMeter(cuda=False)
    inner = meter.wrap("all_gather", lambda out, x, async_op=False: out, name="all_gather_single")
    outer = meter.wrap("all_to_all", lambda x: inner(torch.zeros(8), x))
    outer(torch.zeros(2))
    inner(torch.zeros(4, dtype=torch.bfloat16), torch.zeros(2))
    inner(torch.zeros(4), torch.zeros(2), async_op=True)
    got = meter.take()
    assert got["all_to_all"].calls == 1 and got["all_to_all"].bytes == 32  # the inner call not counted again
    assert got["all_gather"].calls == 2 and got["all_gather"].bytes == 8 + 16 and got["all_gather"].untimed_calls == 1
    assert meter.take() == {}  # the next stage starts empty
