"""The one attribute-swapping helper the runners share (wanfit.measure.patching)."""

from contextlib import ExitStack
from types import SimpleNamespace

import pytest

from wanfit.measure.patching import patch, swapped


class Thing:
    def method(self):
        return "class"


def test_swapped_restores_the_old_value_however_the_block_ends():
    holder = SimpleNamespace(value=1)
    with swapped(holder, "value", 2):
        assert holder.value == 2
    assert holder.value == 1
    with pytest.raises(RuntimeError), swapped(holder, "value", 3):
        raise RuntimeError
    assert holder.value == 1


def test_an_instance_attribute_over_its_class_is_deleted_so_the_class_shows_again():
    thing = Thing()
    with ExitStack() as stack:
        patch(stack, thing, "method", lambda: "instance", instance=True)
        assert thing.method() == "instance"
    assert thing.method() == "class" and "method" not in vars(thing)
