"""Run the official, CUDA-only code path on a CPU (the tests drive it there with tiny models).

The official pipelines call three CUDA-only things a CPU run must translate while `generate()` runs:
* `torch.amp.autocast('cuda', dtype=bf16)` around the denoising loop (and `torch.cuda.amp.autocast(dtype=fp32)`
  around the VAE, `('cuda', dtype=float32)` around the DiT's time embedding): on a CPU they would do nothing,
  so fp32 weights would run in fp32 and converted bf16 weights would fail on fp32 inputs. They become CPU
  autocast with the same dtype. CPU autocast refuses float32 as its target, which CUDA accepts (the official
  time embedding relies on it: fp32 inputs into bf16 Linear weights): it is set directly.
* CUDA autocast runs layer_norm in fp32 with every argument cast to fp32; CPU autocast leaves it alone, and
  CPU layer_norm refuses an fp32 input with the bf16 weight of a converted DiT (WanLayerNorm feeds it
  `x.float()`): under CPU autocast, layer_norm casts its arguments to fp32 as CUDA autocast does.
* `torch.cuda.synchronize()` after offload_model's moves: a no-op where there is no device to wait for.
Never active on a GPU run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_Autocast = torch.amp.autocast


class _CpuAutocast(_Autocast):
    """A CUDA autocast request served by CPU autocast with the requested dtype (float32 included)."""

    def __init__(self, device_type: str = "cuda", dtype: torch.dtype | None = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        device_type = "cpu" if device_type == "cuda" else device_type
        if device_type == "cpu" and dtype == torch.float32:
            super().__init__(device_type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache_enabled)
            self.fast_dtype = torch.float32  # autocast then casts the listed ops' inputs to fp32
        else:
            super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def _cuda_amp_autocast(enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True):
    """torch.cuda.amp.autocast's signature (the official VAE wrappers call it with dtype= only)."""
    return _CpuAutocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


_layer_norm = torch.nn.functional.layer_norm


def _fp32_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    if torch.is_autocast_enabled("cpu"):
        input = input.float()
        weight = weight.float() if weight is not None else None
        bias = bias.float() if bias is not None else None
    return _layer_norm(input, normalized_shape, weight, bias, eps)


@contextmanager
def cpu_emulation(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    saved = (torch.amp.autocast, torch.cuda.amp.autocast, torch.cuda.synchronize, torch.nn.functional.layer_norm)
    torch.amp.autocast = _CpuAutocast
    torch.cuda.amp.autocast = _cuda_amp_autocast
    torch.cuda.synchronize = lambda device=None: None
    torch.nn.functional.layer_norm = _fp32_layer_norm
    try:
        yield
    finally:
        (torch.amp.autocast, torch.cuda.amp.autocast, torch.cuda.synchronize,
         torch.nn.functional.layer_norm) = saved
