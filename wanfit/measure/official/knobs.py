"""The official code's own knobs (named as its generate.py flags), how a wanfit Plan maps onto them, and the
users' stage names (their reports came from the official code). The models it covers:
wanfit.vocabulary.catalog.official_task."""

from __future__ import annotations

from dataclasses import dataclass

from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement
from wanfit.vocabulary.workload import Plan


@dataclass(frozen=True)
class OfficialKnobs:
    """generate.py's flags: --offload_model, --t5_cpu, --convert_model_dtype; and the attention kernel
    (auto | fa2 | fa3 | cudnn, see wanfit.measure.official.attention)."""

    offload_model: bool = False
    t5_cpu: bool = False
    convert_model_dtype: bool = False
    attention: str = "auto"

    def label(self) -> str:
        flags = [f for f, on in (("--offload_model", self.offload_model), ("--t5_cpu", self.t5_cpu),
                                 ("--convert_model_dtype", self.convert_model_dtype)) if on]
        return " ".join([*flags, f"attention={self.attention}"])


def knobs_for(plan: Plan) -> OfficialKnobs:
    """A Plan's official knobs: offload "model" = --offload_model, text encoder "cpu" = --t5_cpu, DiT "bf16" =
    --convert_model_dtype ("fp32" = the official default, fp32 weights under bf16 autocast). A `wan` Plan
    refuses the knobs the official code does not have when it is built; a diffusers plan is refused here."""
    if plan.runtime != "wan":
        raise WanfitError(f"the official runner runs runtime wan plans, not {plan.runtime} ones")
    return OfficialKnobs(offload_model=plan.offload == "model", t5_cpu=plan.text_encoder == "cpu",
                         convert_model_dtype=plan.dit_dtype == "bf16", attention=plan.attention)


def plan_for(knobs: OfficialKnobs) -> Plan:
    """The Plan a measurement records for official knobs (the inverse of knobs_for)."""
    return Plan(runtime="wan", attention=knobs.attention, offload="model" if knobs.offload_model else "none",
                text_encoder="cpu" if knobs.t5_cpu else "gpu", dit_dtype="bf16" if knobs.convert_model_dtype else "fp32")


# The users' stage names (their reports of official runs) for wanfit's stages. Their Step_N_Loading is the
# DiT's move to the GPU inside step N (step 1, and the expert swap of an A14B model): the runner records it
# as extra["step_<N>_loading_s"]; Step_N_Inference is the rest of the step. `prepare` (noise, scheduler,
# an I2V image's VAE encode) has no name of theirs: it falls between their T5_Encoding and Step_1.
USER_STAGE_NAMES = {"init": "Model_Initialization", "text_encode": "T5_Encoding", "step": "Step_{n}_Inference",
                    "step_loading": "Step_{n}_Loading", "vae_decode": "VAE_Decoding", "total": "Total_Execution"}


def user_stage_breakdown(m: Measurement) -> dict[str, float]:
    """A measurement's stage times (s) under the users' names, in their order."""
    out: dict[str, float] = {}
    for s in m.stages:
        if s.name == "step":
            loading = m.extra.get(f"step_{s.index}_loading_s", 0.0)
            if loading:
                out[USER_STAGE_NAMES["step_loading"].format(n=s.index)] = loading
            out[USER_STAGE_NAMES["step"].format(n=s.index)] = s.time_s - loading
        elif s.name in USER_STAGE_NAMES:
            out[USER_STAGE_NAMES[s.name]] = s.time_s
    return out
