"""Stage boundaries inside the official `generate()`, which has no callbacks.

While generate() runs, the runner's hooks sit on what it calls, each restored afterwards:
* text_encode: from the call's start through the two T5 calls (prompt, negative prompt) and, under
  offload_model with T5 on the GPU, its move back to the CPU (the encoder is a proxy; its module's `cpu`
  is wrapped).
* prepare: noise, the scheduler, an I2V image's VAE encode; it ends where the DiT is first placed for the
  loop (TI2V: `model.to(device)` before the loop; A14B: the first `_prepare_model_for_timestep`) or at the
  first DiT forward, whichever comes first. So the DiT's upload lands in step 1, as in the users'
  Step_1_Loading; its time (and an expert swap's) goes to extra["step_<n>_loading_s"].
* step n: ends when the scheduler's step returns (the scheduler class in the pipeline's module is swapped
  for a subclass), so a step holds both CFG forwards and the scheduler update. A14B steps record their
  expert (1 = high_noise_model, wanfit's `transformer`; 2 = low_noise_model, `transformer_2`).
* vae_decode: from the last step to generate()'s return (offload_model's DiT move to the CPU, the decode);
  the VAE's own decode call is timed alone in extra["vae_decode_call_s"].
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from wanfit.measure import patching
from wanfit.measure.monitor import StageClock
from wanfit.measure.official.build import official_dits
from wanfit.measure.official.knobs import OfficialKnobs
from wanfit.measure.point import Progress, timed_decode


@dataclass
class OfficialProgress(Progress):
    """A point's progress, and what the step in progress has seen so far (generate() reports it piecemeal)."""

    expert: int | None = None  # of the step in progress
    loading_s: float = 0.0  # DiT placement inside the step in progress


class _TimedEncoder:
    """The official T5EncoderModel seen through a proxy: calls are counted, attributes pass through."""

    def __init__(self, inner, after_call) -> None:
        self._inner, self._after_call = inner, after_call

    def __call__(self, texts, device):
        out = self._inner(texts, device)
        self._after_call()
        return out

    def __getattr__(self, name):
        return getattr(self._inner, name)


class StageHooks:
    def __init__(self, pipe, pipe_module, knobs: OfficialKnobs, clock: StageClock, prog: OfficialProgress,
                 steps_run: int, extra: dict[str, float]) -> None:
        self.pipe, self.pipe_module, self.knobs = pipe, pipe_module, knobs
        self.clock, self.prog, self.steps_run, self.extra = clock, prog, steps_run, extra
        self.encodes = 0
        self.dits = official_dits(pipe)
        self.forwards = dict.fromkeys(self.dits, 0)

    def close(self, name: str, **kwargs) -> None:
        self.prog.stages.append(self.clock.end(name, **kwargs))

    # ---- text_encode -----------------------------------------------------------------------------------
    def _t5_offloaded_after_encode(self) -> bool:
        return self.knobs.offload_model and not self.knobs.t5_cpu

    def after_encode(self) -> None:
        self.encodes += 1
        if self.encodes == 2 and not self._t5_offloaded_after_encode():
            self.close("text_encode")
            self.prog.stage = "prepare"

    def _t5_cpu(self, original):
        def cpu(*args, **kwargs):
            result = original(*args, **kwargs)
            if self.encodes == 2 and self.prog.stage == "text_encode":
                self.close("text_encode")
                self.prog.stage = "prepare"
            return result

        return cpu

    # ---- prepare -> step 1, DiT placement ---------------------------------------------------------------
    def end_prepare(self) -> None:
        if self.prog.stage == "prepare":
            self.close("prepare")
            self.prog.stage = "step"

    def _timed_placement(self, original, expert_of=None):
        """A DiT placement call: closes prepare when it is the first, and adds its time to the step's loading."""

        def placed(*args, **kwargs):
            self.end_prepare()
            before = self._placement()
            self.clock.sync()
            t0 = time.perf_counter()
            result = original(*args, **kwargs)
            self.clock.sync()
            if self.prog.stage == "step" and self._placement() != before:  # only a real move is loading
                self.prog.loading_s += time.perf_counter() - t0
            if expert_of is not None:
                self.prog.expert = expert_of(result)
            return result

        return placed

    def _placement(self) -> tuple:
        return tuple(next(dit.parameters()).device for dit in self.dits.values())

    def _expert_of(self, model) -> int:
        return 1 if model is self.dits["transformer"] else 2

    def _forward_pre_hook(self, name: str):
        def hook(_module, _args):
            self.end_prepare()
            self.forwards[name] += 1

        return hook

    # ---- steps -------------------------------------------------------------------------------------------
    def step_done(self) -> None:
        index = self.prog.steps_done + 1
        self.close("step", index=index, expert=self.prog.expert)
        if self.prog.loading_s:
            self.extra[f"step_{index}_loading_s"] = self.prog.loading_s
        self.prog.loading_s = 0.0
        self.prog.steps_done = index
        self.prog.stage = "vae_decode" if index == self.steps_run else "step"

    def _timed_scheduler(self, scheduler_cls):
        hooks = self

        class TimedScheduler(scheduler_cls):
            """The official scheduler; its step closes the denoising step it completes."""

            def step(self, *args, **kwargs):
                result = super().step(*args, **kwargs)
                hooks.step_done()
                return result

        TimedScheduler.__name__ = scheduler_cls.__name__
        return TimedScheduler

    @contextmanager
    def installed(self) -> Iterator[None]:
        pipe = self.pipe
        with ExitStack() as stack:
            def patch(obj, name, value, instance: bool = False):
                patching.patch(stack, obj, name, value, instance=instance)

            patch(pipe, "text_encoder", _TimedEncoder(pipe.text_encoder, self.after_encode))
            t5 = pipe.text_encoder.model
            patch(t5, "cpu", self._t5_cpu(t5.cpu), instance=True)
            if hasattr(pipe, "_prepare_model_for_timestep"):  # A14B: the per-step expert choice places the DiTs
                patch(pipe, "_prepare_model_for_timestep",
                      self._timed_placement(pipe._prepare_model_for_timestep, self._expert_of), instance=True)
            else:
                for dit in self.dits.values():
                    patch(dit, "to", self._timed_placement(dit.to), instance=True)
            for name, dit in self.dits.items():
                stack.callback(dit.register_forward_pre_hook(self._forward_pre_hook(name)).remove)
            patch(self.pipe_module, "FlowUniPCMultistepScheduler",
                  self._timed_scheduler(self.pipe_module.FlowUniPCMultistepScheduler))
            patch(pipe.vae, "decode", timed_decode(pipe.vae.decode, self.clock, self.extra), instance=True)
            yield
        for name, count in self.forwards.items():
            self.extra[f"dit_forwards.{name}"] = float(count)
