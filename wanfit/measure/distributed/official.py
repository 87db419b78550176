"""The official code's several-GPU path, as generate.py sets it up (Wan-Video/Wan2.2 generate.py): the process
group is up before the pipeline is built (`dist.init_process_group(backend=get_distributed_backend())`, then
`init_distributed_group()` when ulysses_size > 1), and the pipeline is built with `device_id=local_rank`,
`rank=rank`, `t5_fsdp`, `dit_fsdp`, `use_sp=(ulysses_size > 1)`; generate() runs with offload_model False
(generate.py's default for N > 1) on every rank and decodes on rank 0 only.

On a CPU (the tests: gloo, tiny architectures) three things the official code does only on a GPU are translated
while the pipeline is built, nothing else:
* `shard_model`'s FSDP1 gets `device_id=cpu`; FSDP1 refuses `sync_module_states` for CPU modules, so rank 0's
  states are broadcast first (the same collective FSDP would issue) and FSDP is built without it;
* `_configure_model` moves a sequence-parallel DiT without FSDP to `self.device`, which the constructor sets to
  cuda:<device_id>: it is the run's device while `_configure_model` runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from wanfit.measure.distributed.context import RankInfo
from wanfit.measure.patching import patch
from wanfit.vocabulary.workload import Plan


@dataclass(frozen=True)
class OfficialLayout:
    """The constructor arguments of one rank (generate.py's)."""

    rank: int
    local_rank: int
    t5_fsdp: bool
    dit_fsdp: bool
    use_sp: bool

    def constructor_kwargs(self) -> dict:
        return dict(device_id=self.local_rank, rank=self.rank, t5_fsdp=self.t5_fsdp, dit_fsdp=self.dit_fsdp,
                    use_sp=self.use_sp)


def official_layout(plan: Plan, rank: RankInfo | None) -> OfficialLayout | None:
    """A several-GPU plan's layout on this rank (None: one GPU)."""
    if plan.gpus == 1 or rank is None:
        return None
    return OfficialLayout(rank=rank.rank, local_rank=rank.local_rank, t5_fsdp=plan.t5_fsdp, dit_fsdp=plan.dit_fsdp,
                          use_sp=plan.ulysses > 1)


def init_sequence_parallel(wan_modules: dict, plan: Plan) -> None:
    """generate.py's `init_distributed_group()` when ulysses_size > 1 (a no-op once the group is up, as here)."""
    if plan.ulysses > 1:
        wan_modules["wan.distributed.util"].init_distributed_group()


def _cpu_shard_model(original):
    """shard_model on a CPU (module docstring): device_id cpu, rank 0's states broadcast before FSDP."""

    def shard(model, device_id=None, sync_module_states=True, **kwargs):
        if sync_module_states:
            import torch.distributed as dist

            with torch.no_grad():
                for tensor in [*model.parameters(), *model.buffers()]:
                    dist.broadcast(tensor.data, src=0)
        return original(model, device_id=torch.device("cpu"), sync_module_states=False, **kwargs)

    return shard


def _configure_on(original, device: torch.device):
    def configure(self, *args, **kwargs):
        self.device = device
        return original(self, *args, **kwargs)

    return configure


@contextmanager
def cpu_distributed_build(pipe_mod, cls, layout: OfficialLayout | None, target: torch.device) -> Iterator[None]:
    """While the pipeline is built: the CPU translations of the module docstring (nothing on a GPU or one rank)."""
    with ExitStack() as stack:
        if layout is not None and target.type == "cpu":
            for obj, name, value in ((pipe_mod, "shard_model", _cpu_shard_model(pipe_mod.shard_model)),
                                     (cls, "_configure_model", _configure_on(cls._configure_model, target))):
                patch(stack, obj, name, value)
        yield


def t5_sharded(model: torch.nn.Module, shard_fn, device) -> torch.nn.Module:
    """What T5EncoderModel does with its module: sharded by FSDP under --t5_fsdp (without syncing states: wan
    modules/t5.py), else moved to its device."""
    if shard_fn is not None:
        return shard_fn(model, sync_module_states=False)
    return model.to(device)
