"""diffusers' several-GPU path: context parallelism over every rank, `transformer.enable_parallelism(config=
ContextParallelConfig(ulysses_degree=U, ring_degree=R))` (diffusers 0.42.1 models/modeling_utils.py, the model's
_cp_plan: the sequence split before the blocks, gathered after proj_out), every rank running the whole pipeline
(text encode, every step on its share of the sequence, the VAE decode). The weights are not sharded by it; a plan
with dit_fsdp shards each transformer block, then the transformer's own remaining weights, with torch's FSDP2
(`fully_shard`) over the same ranks (the context-parallel mesh flattened), gathering bf16 weights just before
each block as the official code's FSDP does (MixedPrecisionPolicy(param_dtype=bf16)). FSDP2 shards one dtype per
group: the few weights diffusers keeps in fp32 in a bf16 DiT (_keep_in_fp32_modules: the time embedder, norms,
scale_shift_table; tens of MiB) stay whole on every rank, as fp32 as they run without FSDP. A sharded DiT is built
in host memory, as a checkpoint load places it, so no rank ever holds it whole on its GPU.

Ring attention needs an attention backend that returns the softmax's log-sum-exp (diffusers: flash-attn, SDPA's
cuDNN or flash backends: GPU only, bf16): a ring plan runs on the backend of its attention knob, SDPA cuDNN under
`auto`. On a CPU (the tests: gloo, tiny configs) diffusers asks torch.accelerator for a device count, which is 0:
it is 1 while the mesh is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from wanfit.measure import build
from wanfit.measure.patching import swapped
from wanfit.vocabulary.workload import Plan

RING_BACKEND_UNDER_AUTO = "_native_cudnn"


@contextmanager
def dit_in_host_memory(plan: Plan) -> Iterator[None]:
    """While the components are built: a DiT that FSDP will shard is built in host memory (module docstring)."""
    if not plan.dit_fsdp:
        yield
        return
    original = build.built_in_host_memory
    with swapped(build, "built_in_host_memory", lambda p: original(p) | {"transformer"}):
        yield


@contextmanager
def _device_count_on_cpu(device: str) -> Iterator[None]:
    if device.startswith("cuda"):
        yield
        return
    with swapped(torch.accelerator, "device_count", lambda: 1):
        yield


def _ring_backend(dit, plan: Plan, device: str) -> None:
    """A backend that returns the log-sum-exp, for ring attention (module docstring)."""
    if plan.ring == 1:
        return
    if not device.startswith("cuda"):
        raise RuntimeError("ring attention needs an attention backend that returns the log-sum-exp (diffusers: "
                           "flash-attn, SDPA cuDNN or flash): GPU only")
    if plan.attention == "auto":
        dit.set_attention_backend(RING_BACKEND_UNDER_AUTO)


def _mixed(dit) -> bool:
    return len({p.dtype for p in dit.parameters()}) > 1


def _fully_shard(dit, mesh, device: str) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
    kept = {p for p in dit.parameters() if p.dtype == torch.float32} if _mixed(dit) else set()
    for block in dit.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, ignored_params=kept & set(block.parameters()) or None)
    fully_shard(dit, mesh=mesh, mp_policy=policy, ignored_params=kept or None)
    dit.to(device)  # the shards, from host memory to this rank's device


def apply_layout(dits: list, plan: Plan, device: str) -> None:
    """Context parallelism (and FSDP2 with dit_fsdp) on every DiT of the pipeline, as diffusers runs them."""
    from diffusers import ContextParallelConfig

    for dit in dits:
        _ring_backend(dit, plan, device)
        config = ContextParallelConfig(ulysses_degree=plan.ulysses, ring_degree=plan.ring)
        with _device_count_on_cpu(device):
            dit.enable_parallelism(config=config)
        if plan.dit_fsdp:
            _fully_shard(dit, dit._parallel_config.context_parallel_config._flattened_mesh, device)
