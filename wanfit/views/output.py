"""What the command line writes besides the plan table: JSON on stdout, rich consoles for the other
commands' tables, a known error as one line on stderr (exit code 2), and the verify report's files.

Light at import (json, os, sys, typer, which the CLI has imported already): the CLI imports this on every
command, `wanfit plan --format json` included, so rich and pydantic are imported only inside the functions
that need them.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from wanfit.vocabulary.errors import WanfitError

PIPED_WIDTH = 200  # wide enough for every column of the candidate table when the output goes to a file


def console():
    """A rich console on stdout; wide enough for the candidate tables when piped to a file. rich follows
    $COLUMNS, NO_COLOR, FORCE_COLOR and TERM=dumb."""
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH
    return Console(width=width)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed); ModuleNotFoundError without the
    plot extra (matplotlib), which the caller turns into missing_extras."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def print_json(data: Any) -> None:
    """JSON with a two-space indent; pydantic objects through their own serializer (the same text as
    json.dumps of model_dump, several times faster: 72 candidates took 13 ms in json.dumps)."""
    text = data.model_dump_json(indent=2) if hasattr(data, "model_dump_json") else json.dumps(data, indent=2)
    sys.stdout.write(text + "\n")


def error_line(error: BaseException) -> str:
    """The message a user sees for a known error (a WanfitError or a pydantic ValidationError): one
    line, no traceback."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        problems = error.errors()
        for problem in problems:  # a WanfitError raised inside a validator: its own message is the line
            inner = (problem.get("ctx") or {}).get("error")
            if isinstance(inner, WanfitError):
                return str(inner)
        first = problems[0] if problems else {"loc": (), "msg": str(error)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"invalid {error.title}{' ' + where if where else ''}: {first['msg']}{more}"
    return " ".join(str(error).split())


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Known errors -> one line on stderr and exit code 2 (a traceback only with WANFIT_DEBUG=1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            return command(*args, **kwargs)
        except (WanfitError, ValidationError) as error:
            if os.environ.get("WANFIT_DEBUG", "") not in ("", "0"):
                raise
            typer.echo(f"error: {error_line(error)}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def missing_extras(command: str, extra: str, missing: ModuleNotFoundError) -> WanfitError:
    """The one-line error of a command whose optional dependencies (`extra`) are not installed."""
    return WanfitError(f"`wanfit {command}` needs the {extra} extras ({missing.name} is missing): "
                       f"pip install 'wanfit[{extra}]'")


def write_verify_outputs(result: Any, out: Path, verify_report: Any) -> list[Path]:
    """The verify report as JSON, Markdown and a PNG memory plot under `out`; `verify_report` is the
    module that writes them (wanfit.views.verify_report)."""
    out.mkdir(parents=True, exist_ok=True)
    # Not Path.with_suffix: the stem holds dots (wan2.2-...), which it would cut at.
    stem = verify_report.report_stem(result)
    json_path, md_path, png_path = (out / f"{stem}{ext}" for ext in (".json", ".md", ".png"))
    verify_report.write_json(result, json_path)
    md_path.write_text(verify_report.render_markdown(result))
    verify_report.plot_memory(result, png_path)
    return [json_path, md_path, png_path]
