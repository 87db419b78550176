"""An attribute swapped for the length of a block and put back: how the runners adapt code they do not own (the
official `wan` package, diffusers, torch) to a random-weight build, a CPU test or a timer, without editing it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any


def patch(stack: ExitStack, obj: Any, name: str, value: Any, *, instance: bool = False) -> None:
    """Set `obj.name = value` until `stack` closes. Then the old value comes back; with `instance`, the attribute
    set on an instance over its class's is deleted instead, so the class's shows again."""
    saved = getattr(obj, name)
    setattr(obj, name, value)
    if instance:
        stack.callback(delattr, obj, name)
    else:
        stack.callback(setattr, obj, name, saved)


@contextmanager
def swapped(obj: Any, name: str, value: Any) -> Iterator[None]:
    """`obj.name` is `value` inside the block, its old value after it (however the block ends)."""
    with ExitStack() as stack:
        patch(stack, obj, name, value)
        yield
