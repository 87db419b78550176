"""Time the collectives a rank issues, without changing what overlaps what.

Each collective the runtime's code calls is wrapped where the code looks it up (a module attribute), and given a
kind by where it was called from:

* official code: `wan.distributed.ulysses.all_to_all` (Ulysses' q, k, v and output) -> all_to_all;
  `wan.distributed.sequence_parallel.gather_forward` (the output's sequence gather) -> sequence_gather;
* diffusers: `attention_dispatch._all_to_all_single` (Ulysses) -> all_to_all; the functional all-gather that
  attention_dispatch calls (ring attention's K/V) -> ring_all_gather, and the one the context-parallel hooks call
  (the output's gather) -> sequence_gather;
* torch.distributed itself (what FSDP1 and FSDP2 call to gather weights: all_gather_single, all_gather_into_tensor,
  all_gather on a CPU), outside any call above -> all_gather; broadcast (FSDP's sync_module_states), barrier,
  all_to_all, all_reduce and the rest under their own names.

On a GPU a call is timed by two CUDA events recorded on the current stream (the one that issues it: FSDP's
unshard stream for its gathers) before and after the call; after a synchronous collective that stream waits for
it, so the second event completes when the collective has. Recording an event adds no synchronisation, and the
events are read only when the stage closes, after the clock's device sync. A call issued with async_op=True is
counted but not timed (its end is where someone waits for it). On a CPU (gloo) a call blocks: wall time.
A rank waiting for a slower rank counts that wait in the collective: that is what the step pays for it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from wanfit.measure.patching import patch
from wanfit.vocabulary.measurement import CollectiveStat

# torch.distributed's functions a rank's code may call, by the kind a call outside any wrapped runtime function
# counts as (FSDP's weight gathers are the all_gather ones).
TORCH_KINDS = {"all_gather_single": "all_gather", "all_gather_into_tensor": "all_gather", "all_gather": "all_gather",
               "_all_gather_base": "all_gather", "broadcast": "broadcast", "barrier": "barrier",
               "all_to_all": "all_to_all", "all_to_all_single": "all_to_all", "all_reduce": "all_reduce",
               "reduce_scatter_tensor": "reduce_scatter", "reduce_scatter": "reduce_scatter"}
MS_PER_S = 1000.0


def _nbytes(x) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.numel() * x.element_size())
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(t) for t in x)
    return 0.0


def _result_bytes(name: str, args: tuple, result) -> float:
    """The size of what a call leaves on this rank: its output argument for torch's (output, input) calls, else
    its returned tensor(s)."""
    if name in ("all_gather_single", "all_gather_into_tensor", "_all_gather_base", "all_gather", "all_to_all",
                "all_to_all_single", "reduce_scatter_tensor", "reduce_scatter", "broadcast", "all_reduce"):
        return _nbytes(args[0]) if args else 0.0
    return _nbytes(result)


@dataclass
class _Stage:
    calls: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    nbytes: dict[str, float] = field(default_factory=dict)
    untimed: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[str, object, object]] = field(default_factory=list)  # (kind, start event, end event)

    def add(self, kind: str, seconds: float, nbytes: float, timed: bool = True) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.nbytes[kind] = self.nbytes.get(kind, 0.0) + nbytes
        if not timed:
            self.untimed[kind] = self.untimed.get(kind, 0) + 1


class CollectiveMeter:
    """The collectives of the stage in progress; `take()` closes the stage (call it after a device sync)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self._stage = _Stage()
        self._inside = threading.local()

    def wrap(self, kind: str, fn: Callable, name: str = "", waits: Callable | None = None) -> Callable:
        """`fn` timed as `kind` (nested calls count once, as the outer kind). `waits(result)` returns the result
        once complete (functional collectives return before they finish)."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if getattr(self._inside, "depth", 0):
                return fn(*args, **kwargs)
            self._inside.depth = 1
            try:
                return self._call(kind, fn, name, waits, args, kwargs)
            finally:
                self._inside.depth = 0

        return timed

    def _call(self, kind: str, fn: Callable, name: str, waits: Callable | None, args: tuple, kwargs: dict):
        if kwargs.get("async_op"):
            result = fn(*args, **kwargs)
            self._stage.add(kind, 0.0, _result_bytes(name, args, result), timed=False)
            return result
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn(*args, **kwargs)
            result = waits(result) if waits is not None else result
            end.record()
            self._stage.add(kind, 0.0, _result_bytes(name, args, result))
            self._stage.pending.append((kind, start, end))
            return result
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        result = waits(result) if waits is not None else result
        self._stage.add(kind, time.perf_counter() - t0, _result_bytes(name, args, result))
        return result

    def take(self) -> dict[str, CollectiveStat]:
        """The closing stage's collectives by kind (CUDA events read here: the caller has synchronised)."""
        stage, self._stage = self._stage, _Stage()
        for kind, start, end in stage.pending:
            stage.seconds[kind] += start.elapsed_time(end) / MS_PER_S
        return {kind: CollectiveStat(calls=n, time_s=stage.seconds[kind], bytes=stage.nbytes[kind],
                                     untimed_calls=stage.untimed.get(kind, 0))
                for kind, n in stage.calls.items()}


def _wait_functional(result):
    """A functional collective's result, waited for (AsyncCollectiveTensor.wait; a plain tensor as is)."""
    wait = getattr(result, "wait", None)
    return wait() if callable(wait) and isinstance(result, torch.Tensor) else result


class _Proxy:
    """A module seen through one module's name for it, with some attributes replaced (so the same function is
    counted as another kind where that module calls it)."""

    def __init__(self, inner, **overrides) -> None:
        self._inner, self._overrides = inner, overrides

    def __getattr__(self, name):
        return self._overrides[name] if name in self._overrides else getattr(self._inner, name)


def _official_targets(meter: CollectiveMeter, stack: ExitStack, wan_modules: dict) -> None:
    ulysses = wan_modules["wan.distributed.ulysses"]
    patch(stack, ulysses, "all_to_all", meter.wrap("all_to_all", ulysses.all_to_all))
    sp = wan_modules["wan.distributed.sequence_parallel"]
    patch(stack, sp, "gather_forward", meter.wrap("sequence_gather", sp.gather_forward))


def _diffusers_targets(meter: CollectiveMeter, stack: ExitStack) -> None:
    from diffusers.hooks import context_parallel
    from diffusers.models import attention_dispatch

    patch(stack, attention_dispatch, "_all_to_all_single",
           meter.wrap("all_to_all", attention_dispatch._all_to_all_single))
    for module, kind in ((attention_dispatch, "ring_all_gather"), (context_parallel, "sequence_gather")):
        funcol = module.funcol
        gather = meter.wrap(kind, funcol.all_gather_tensor, waits=_wait_functional)
        patch(stack, module, "funcol", _Proxy(funcol, all_gather_tensor=gather))


@contextmanager
def metered(meter: CollectiveMeter, runtime: str, wan_modules: dict | None = None) -> Iterator[CollectiveMeter]:
    """While open, every collective of the runtime's code and of torch.distributed is timed by `meter`."""
    with ExitStack() as stack:
        for name, kind in TORCH_KINDS.items():
            if hasattr(dist, name):
                patch(stack, dist, name, meter.wrap(kind, getattr(dist, name), name=name))
        if runtime == "wan":
            _official_targets(meter, stack, wan_modules or {})
        else:
            _diffusers_targets(meter, stack)
        yield meter
