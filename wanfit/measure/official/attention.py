"""The official code's attention, with the kernel the plan names.

`wan.modules.attention.flash_attention` runs FlashAttention-3 (`flash_attn_interface`) when importable, else
FlashAttention-2 (`flash_attn`), and asserts otherwise. Where the knob's flash-attn is installed the official
function runs as is (for `fa2` with FA3 also installed, with `version=2`, which the official function honours).
Where it is not, the official call (the name `flash_attention` in every loaded `wan` module that bound it:
wan.modules.model's self- and cross-attention) goes to torch SDPA with the backend of the same kernel class:
`fa2` -> FLASH_ATTENTION (the FA2 kernel), `fa3` / `cudnn` -> CUDNN_ATTENTION (the fast Hopper kernel); on the
CPU the math backend. A forced backend that cannot run its inputs raises instead of falling back, so the
kernel recorded is the kernel that ran.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from wanfit.vocabulary.errors import WanfitError

ATTENTION_KNOBS = ("auto", "fa2", "fa3", "cudnn")
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class AttentionRoute:
    """Which kernel the official attention calls run, and how many calls ran."""

    kernel: str  # flash_attn_3 | flash_attn_2 | sdpa-flash | sdpa-cudnn | sdpa-math
    calls: int = 0


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_kernel(knob: str, cuda: bool) -> str:
    """The kernel a knob runs here. `auto` is the official order (FA3, then FA2); without flash-attn, the FA2
    kernel through SDPA: the official requirements name flash_attn (2), which the users ran."""
    if knob not in ATTENTION_KNOBS:
        raise WanfitError(f"unknown attention kernel {knob!r}: use one of {', '.join(ATTENTION_KNOBS)}")
    if not cuda:
        return "sdpa-math"  # flash-attn and SDPA's fused kernels run only on a GPU
    fa3, fa2 = _has("flash_attn_interface"), _has("flash_attn")
    if knob == "auto":
        return "flash_attn_3" if fa3 else "flash_attn_2" if fa2 else "sdpa-flash"
    if knob == "fa3":
        return "flash_attn_3" if fa3 else "sdpa-cudnn"
    if knob == "fa2":
        return "flash_attn_2" if fa2 else "sdpa-flash"
    return "sdpa-cudnn"


def _backend(kernel: str):
    from torch.nn.attention import SDPBackend

    return {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
            "sdpa-math": SDPBackend.MATH}[kernel]


def _lengths(lens, full: int, batch: int) -> list[int]:
    """Per-sample lengths of the official varlen call (None: every sample full). The model passes CPU
    tensors, so reading them costs no device sync."""
    return [full] * batch if lens is None else [int(n) for n in lens.tolist()]


def sdpa_attention(route: AttentionRoute):
    """A drop-in for the official `flash_attention(q, k, v, q_lens, k_lens, ...)` on SDPA. q, k, v are
    [B, L, N, D]; like the official call they are cast to a half dtype (`dtype`, bf16) unless already half, and
    the output takes q's dtype. Varlen: sample i attends its first k_lens[i] keys with its first q_lens[i]
    queries (the official call packs exactly these); rows past q_lens[i] are zero. Full lengths (batch 1, the
    runs measured here) are one plain SDPA call."""
    from torch.nn.attention import sdpa_kernel

    backend = _backend(route.kernel)

    def attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None, causal=False,
                  window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
        if tuple(window_size) != (-1, -1):
            raise NotImplementedError("windowed attention has no SDPA route (no Wan2.2 config uses it)")
        b, lq, lk, out_dtype = q.size(0), q.size(1), k.size(1), q.dtype

        def half(x):
            return x if x.dtype in HALF_DTYPES else x.to(dtype)

        q, k, v = half(q), half(k), half(v)
        q, k = q.to(v.dtype), k.to(v.dtype)
        if q_scale is not None:
            q = q * q_scale
        qn, kn = _lengths(q_lens, lq, b), _lengths(k_lens, lk, b)

        def run(qi, ki, vi):
            out = torch.nn.functional.scaled_dot_product_attention(
                qi.transpose(1, 2), ki.transpose(1, 2), vi.transpose(1, 2), dropout_p=dropout_p, is_causal=causal,
                scale=softmax_scale)
            return out.transpose(1, 2)

        with sdpa_kernel([backend]):
            if all(n == lq for n in qn) and all(n == lk for n in kn):
                out = run(q, k, v)
            else:
                out = q.new_zeros(b, lq, q.size(2), v.size(3))
                for i in range(b):
                    out[i, :qn[i]] = run(q[i:i + 1, :qn[i]], k[i:i + 1, :kn[i]], v[i:i + 1, :kn[i]])[0]
        return out.contiguous().type(out_dtype)

    return attention


def _fa2_of(original):
    """The official function asked for FlashAttention-2 (its `version` argument) when FA3 is also installed."""

    def attention(*args, **kwargs):
        kwargs["version"] = 2
        return original(*args, **kwargs)

    return attention


@contextmanager
def routed_attention(wan_modules: dict, knob: str, cuda: bool) -> Iterator[AttentionRoute]:
    """While open, every loaded `wan` module's `flash_attention` runs the knob's kernel (module docstring)."""
    kernel = resolve_kernel(knob, cuda)
    original = wan_modules["wan.modules.attention"].flash_attention
    route = AttentionRoute(kernel=kernel)
    if kernel == "flash_attn_3" or (kernel == "flash_attn_2" and not _has("flash_attn_interface")):
        target = original  # the official function picks this kernel by itself
    elif kernel == "flash_attn_2":
        target = _fa2_of(original)
    else:
        target = sdpa_attention(route)

    def counted(*args, **kwargs):
        route.calls += 1
        return target(*args, **kwargs)

    bound = [m for m in wan_modules.values() if getattr(m, "flash_attention", None) is original
             and m is not wan_modules["wan.modules.attention"]]
    for module in bound:
        module.flash_attention = counted
    try:
        yield route
    finally:
        for module in bound:
            module.flash_attention = original
