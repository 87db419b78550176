"""The stages of a Wan video job, defined once: the planner predicts them, verify measures them, views show them.

Pipeline order. `init` builds or loads the components and places them per plan; `text_encode` encodes the
prompt (and with CFG the negative prompt); `prepare` is the pipeline call up to the first DiT forward (for I2V
the conditioning encode); `denoise` the steps; `expert_switch` the swap of a two-expert DiT (Wan2.2 A14B);
`vae_decode` the decode and postprocess. The runner records denoising per step (`step`) and a `total`.
"""

from typing import Literal

StageName = Literal["init", "text_encode", "prepare", "denoise", "expert_switch", "vae_decode"]
STAGES: tuple[StageName, ...] = ("init", "text_encode", "prepare", "denoise", "expert_switch", "vae_decode")

# Words for a stage in a sentence ("needs 43 GiB at VAE decode") and in a narrow table column.
STAGE_TITLES: dict[str, str] = {"init": "init", "text_encode": "text encode", "prepare": "prepare",
                                "denoise": "denoise", "expert_switch": "expert switch", "vae_decode": "VAE decode"}
STAGE_SHORT_TITLES: dict[str, str] = {**STAGE_TITLES, "text_encode": "text enc", "expert_switch": "expert sw"}


def stage_title(name: str) -> str:
    """A stage's words, or its name when it is not one of STAGES."""
    return STAGE_TITLES.get(name, name)
