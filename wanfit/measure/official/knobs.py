"""The official code's own knobs (named as its generate.py flags), how a wanfit Plan maps onto them, which
catalog models it covers, and the users' stage names (their reports came from the official code)."""

from __future__ import annotations

from dataclasses import dataclass

from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Measurement
from wanfit.vocabulary.workload import Plan

# wanfit catalog key -> the official task (wan.configs.WAN_CONFIGS key). The official Wan2.2 package has no
# Wan2.1 tasks (t2v-1.3B / t2v-14B / i2v-14B live in the Wan2.1 repository).
OFFICIAL_TASKS = {"wan2.2-ti2v-5b": "ti2v-5B", "wan2.2-t2v-a14b": "t2v-A14B", "wan2.2-i2v-a14b": "i2v-A14B"}


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


def official_task(model: str) -> str:
    """The official task of a wanfit catalog model, or a one-line error for a model it does not cover."""
    if model not in OFFICIAL_TASKS:
        raise WanfitError(f"the official Wan2.2 code has no task for {model} (it covers "
                          f"{', '.join(OFFICIAL_TASKS)}); measure {model} with the diffusers runtime")
    return OFFICIAL_TASKS[model]


def knobs_for(plan: Plan) -> OfficialKnobs:
    """A Plan's official knobs: offload "model" = --offload_model, text encoder "cpu" = --t5_cpu, DiT "bf16" =
    --convert_model_dtype ("fp32" = the official default, fp32 weights under bf16 autocast). Knobs the official
    code does not have (group / sequential offload, an int8 encoder, fp8, VAE tiling) are one-line errors.
    `attention` is read with getattr: Plan gains the field later, "auto" until then."""
    if plan.offload not in ("none", "model"):
        raise WanfitError(f"the official Wan code has no {plan.offload} offload: use offload none or model "
                          "(--offload_model)")
    if plan.text_encoder not in ("gpu", "cpu"):
        raise WanfitError(f"the official Wan code has no {plan.text_encoder} text encoder: use gpu or cpu (--t5_cpu)")
    if plan.dit_dtype not in ("bf16", "fp32"):
        raise WanfitError(f"the official Wan code has no {plan.dit_dtype} DiT: use bf16 (--convert_model_dtype) "
                          "or fp32 (its default)")
    if plan.vae_tiling:
        raise WanfitError("the official Wan code has no VAE tiling: use --no-vae-tiling")
    return OfficialKnobs(offload_model=plan.offload == "model", t5_cpu=plan.text_encoder == "cpu",
                         convert_model_dtype=plan.dit_dtype == "bf16", attention=getattr(plan, "attention", "auto"))


def plan_for(knobs: OfficialKnobs) -> Plan:
    """The Plan a measurement records for official knobs (the inverse of knobs_for). The official code sets
    no allocator option, so a plan built here asks for none."""
    fields = dict(offload="model" if knobs.offload_model else "none", text_encoder="cpu" if knobs.t5_cpu else "gpu",
                  dit_dtype="bf16" if knobs.convert_model_dtype else "fp32", expandable_segments=False)
    for name, value in (("runtime", "wan"), ("attention", knobs.attention)):
        if name in Plan.model_fields:  # fields Plan gains with the official runtime
            fields[name] = value
    return Plan(**fields)


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
