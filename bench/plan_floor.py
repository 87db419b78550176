"""The floor under `wanfit plan`: the smallest command on the same stack, for bench/accuracy.py.

A typer command with a few options of the kinds `plan` takes, one pydantic model built from them and
printed as JSON (`--format json`) or as one line of text (`--format table`: plan draws its table
itself, without rich). Whatever `wanfit plan` costs above this is wanfit's own (its models,
calibrations, predictions, its table); what this costs is Python, typer (which validates every option
through a pydantic TypeAdapter) and pydantic's schema machinery, and no change to wanfit can remove it.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as wanfit.cli does

import typer

app = typer.Typer(add_completion=False)


@app.command()
def plan(
    gpu: Annotated[list[str] | None, typer.Option("--gpu")] = None,
    frames: Annotated[int | None, typer.Option("--frames")] = None,
    guidance: Annotated[float | None, typer.Option("--guidance")] = None,
    vae_tiling: Annotated[bool | None, typer.Option("--vae-tiling/--no-vae-tiling")] = None,
    output_format: Annotated[Literal["table", "json"], typer.Option("--format")] = "table",
) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        gpu: list[str] | None
        frames: int | None
        guidance: float | None
        vae_tiling: bool | None

    answer = Answer(gpu=gpu, frames=frames, guidance=guidance, vae_tiling=vae_tiling)
    if output_format == "json":
        print(answer.model_dump_json(indent=2))
        return
    print(" | ".join(f"{k}: {v}" for k, v in answer.model_dump().items()))


@app.command()
def gpus() -> None:
    """A second command, so that typer builds a group as it does for wanfit."""


if __name__ == "__main__":
    app()
