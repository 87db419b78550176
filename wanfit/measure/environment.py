"""The environment block embedded in every Measurement: GPU, driver, CUDA, library versions, allocator."""

from __future__ import annotations

import os
import platform
import sys

import psutil

from wanfit import __version__
from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.units import GIB


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", None)
    except Exception:
        return None


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def collect_environment(torch_mod, nvml, memory_cap_gib: float | None = None) -> Environment:
    """`nvml`: the monitor's Nvml (driver version, power limit and clock ceiling; None readings without NVML)."""
    cuda = torch_mod.cuda.is_available()
    if cuda:
        props = torch_mod.cuda.get_device_properties(0)
        gpu_name, total = props.name, props.total_memory / GIB
        count = torch_mod.cuda.device_count()
    else:
        gpu_name, total, count = "cpu", 0.0, 0
    return Environment(
        gpu_name=gpu_name, gpu_total_gib=total, gpu_count=count, driver=nvml.driver(),
        gpu_power_limit_w=nvml.power_limit_w(), gpu_max_sm_clock_mhz=nvml.max_sm_clock_mhz(),
        cuda=torch_mod.version.cuda, torch=torch_mod.__version__, diffusers=_version("diffusers"),
        transformers=_version("transformers"), python=sys.version.split()[0], platform=platform.platform(),
        cpu=_cpu_name(), cpu_count=os.cpu_count(), host_ram_gib=psutil.virtual_memory().total / GIB,
        allocator_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), memory_cap_gib=memory_cap_gib,
        wanfit=__version__,
    )
