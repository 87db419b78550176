"""User-facing errors: one line that says what is wrong and what to do.

The CLI prints `str(error)` alone (no traceback) unless WANFIT_DEBUG is set.
"""

import difflib
from collections.abc import Iterable


class WanfitError(Exception):
    """A known, user-correctable problem. The message is one line and names the fix."""


def closest(name: str, choices: Iterable[str], n: int = 4) -> list[str]:
    """The known names closest to `name`, best first (for 'did you mean' hints)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    prefix = [c for c in choices if c.lower().startswith(name.lower()[:3]) and c.lower() not in hits]
    return [lowered[h] for h in hits] + prefix[: max(0, n - len(hits))]


def unknown_name_error(kind: str, name: str, choices: Iterable[str], list_cmd: str) -> WanfitError:
    """Error for an unknown GPU/model/scenario name, listing the closest known names."""
    choices = sorted(choices)
    near = closest(name, choices)
    hint = f"closest: {', '.join(near)}" if near else f"known: {', '.join(choices)}"
    return WanfitError(f"unknown {kind} '{name}' ({hint}); `{list_cmd}` lists them all")
