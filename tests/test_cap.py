"""Memory-cap arithmetic for emulating a smaller GPU on a larger one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wanfit.measure.cap import SAME_SIZE_TOLERANCE, make_cap, memory_fraction, needs_cap
from wanfit.vocabulary.errors import WanfitError

H100_TORCH_TOTAL = 79.19  # GiB, an H100 80GB as torch reports total_memory (approx.)


def test_fraction_subtracts_the_memory_outside_the_allocator():
    # An L40S-sized target of 44.99 GiB; 0.6 GiB context + 0.5 GiB baseline outside torch.
    f = memory_fraction(44.99, H100_TORCH_TOTAL, 1.1)
    assert f == pytest.approx((44.99 - 1.1) / H100_TORCH_TOTAL)
    assert f * H100_TORCH_TOTAL + 1.1 == pytest.approx(44.99)


def test_cap_record_is_consistent():
    cap = make_cap("l40s", 44.99, H100_TORCH_TOTAL, 1.1)
    assert cap.target_gpu == "l40s"
    assert cap.torch_budget_gib == pytest.approx(43.89)
    assert cap.fraction == pytest.approx(43.89 / H100_TORCH_TOTAL)
    assert cap.torch_budget_gib + cap.outside_torch_gib == pytest.approx(cap.target_memory_gib)


def test_same_size_target_needs_no_cap():
    assert not needs_cap(79.6, H100_TORCH_TOTAL)  # NVML and torch totals differ by well under 1 %
    assert memory_fraction(79.6, H100_TORCH_TOTAL, 1.1) == 1.0


def test_larger_target_is_refused_in_one_line():
    with pytest.raises(WanfitError) as err:
        needs_cap(139.8, H100_TORCH_TOTAL)  # an H200 on an H100
    msg = str(err.value)
    assert "\n" not in msg and "cannot be emulated" in msg
    with pytest.raises(WanfitError):
        memory_fraction(139.8, H100_TORCH_TOTAL, 1.1)
    with pytest.raises(WanfitError):
        make_cap("h200", 139.8, H100_TORCH_TOTAL, 1.1)


def test_context_larger_than_the_target_is_refused():
    with pytest.raises(WanfitError, match="nothing would fit"):
        memory_fraction(1.0, H100_TORCH_TOTAL, 1.2)
    with pytest.raises(WanfitError, match="negative"):
        memory_fraction(40.0, H100_TORCH_TOTAL, -0.1)
    with pytest.raises(WanfitError, match="positive"):
        needs_cap(0.0, H100_TORCH_TOTAL)


@given(target=st.floats(2.0, 200.0), local=st.floats(2.0, 200.0), outside=st.floats(0.0, 1.9))
def test_cap_properties(target, local, outside):
    if target > local * (1 + SAME_SIZE_TOLERANCE):
        with pytest.raises(WanfitError):
            memory_fraction(target, local, outside)
        return
    f = memory_fraction(target, local, outside)
    assert 0 < f <= 1.0
    if needs_cap(target, local):
        # the allocator's budget plus what sits outside it is exactly the target's usable memory
        assert f * local + outside == pytest.approx(target)
        assert f * local <= target + 1e-9
