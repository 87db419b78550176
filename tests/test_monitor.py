"""NVML readings of the monitor, with a stand-in pynvml (no GPU here): the environment records the
driver, the enforced power limit and the SM clock ceiling; without NVML every reading is None."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch")

from wanfit.measure.environment import collect_environment  # noqa: E402
from wanfit.measure.monitor import Nvml  # noqa: E402


def fake_pynvml(power_error: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.NVML_CLOCK_SM = 1
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    nvml.nvmlSystemGetDriverVersion = lambda: b"580.159.04"

    def power(handle):
        if power_error:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 700_000  # milliwatts

    nvml.nvmlDeviceGetEnforcedPowerLimit = power
    nvml.nvmlDeviceGetMaxClockInfo = lambda handle, clock: 1980 if clock == 1 else 0
    return nvml


def test_the_environment_records_the_gpus_power_limit_and_clock_ceiling(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    env = collect_environment(torch, Nvml())
    assert (env.driver, env.gpu_power_limit_w, env.gpu_max_sm_clock_mhz) == ("580.159.04", 700.0, 1980)


def test_an_unsupported_reading_is_none_not_a_failure(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(power_error=True))
    nvml = Nvml()
    assert nvml.power_limit_w() is None and nvml.max_sm_clock_mhz() == 1980


def test_without_nvml_every_reading_is_none():
    env = collect_environment(torch, Nvml(enabled=False))
    assert (env.driver, env.gpu_power_limit_w, env.gpu_max_sm_clock_mhz) == (None, None, None)
