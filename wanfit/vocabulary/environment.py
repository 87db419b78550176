"""Where a measurement was taken and what its GPU was measured to do: embedded in measurements,
calibration files and verify reports.

Kept apart from the measurement records (wanfit.vocabulary.measurement) so that `wanfit plan`, which reads
calibration files only, does not build the record models it never uses (start-up time).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WanCode(BaseModel):
    """Which official Wan code (module `wan`) ran a measurement of the official runtime: a checkout's
    directory and commit, or the installed PyPI `wan22` and its version; the shims and patches the runner
    applied to run it (e.g. a stand-in for torchvision where it cannot load, `lightning=False`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str  # the directory of the `wan` package that ran
    version: str | None = None  # importlib.metadata version of wan22 when that is the installed distribution
    commit: str | None = None  # git commit of a checkout
    dirty: bool | None = None  # the checkout had uncommitted changes
    shims: list[str] = []  # what the runner substituted or set to run it (each says why in its docstring)


class Environment(BaseModel):
    """Where a measurement was taken. Embedded in every Measurement and calibration file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    gpu_name: str
    gpu_total_gib: float
    gpu_count: int = 1
    driver: str | None = None
    cuda: str | None = None
    torch: str
    diffusers: str | None = None
    transformers: str | None = None
    python: str
    platform: str
    cpu: str | None = None
    cpu_count: int | None = None
    host_ram_gib: float | None = None
    allocator_conf: str = ""  # PYTORCH_CUDA_ALLOC_CONF as the run saw it
    memory_cap_gib: float | None = None  # set when the process was capped (verify emulating a smaller GPU)
    # Lent GPUs of one kind can differ in speed (steps ~20 % apart between two H100 machines): the
    # enforced power limit and the SM clock ceiling, as NVML reports them, say whether a card was set lower.
    gpu_power_limit_w: float | None = None
    gpu_max_sm_clock_mhz: int | None = None
    wanfit: str
    # The official runtime: which `wan` ran, and the attention kernel its attention calls really ran
    # ("flash_attn_3", "flash_attn_2", "sdpa-flash", "sdpa-cudnn", "sdpa-math"). None: a diffusers run.
    wan: WanCode | None = None
    attention_kernel: str | None = None


class Ceilings(BaseModel):
    """Throughput ceilings measured on the calibrated GPU (the measured side of a cross-GPU ratio)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    matmul_tflops: float  # bf16 8192^3 matmul
    attention_tflops: float  # bf16 SDPA at a Wan-like shape
    device_copy_gbps: float  # device-to-device copy, bytes read + written
    h2d_pinned_gbps: float
    h2d_pageable_gbps: float
    # The Wan block's elementwise chain (its ops outside the linears and attention: fp32 layer norms
    # with modulation, gated residuals, GELU on the FFN width), in GB of one bf16 hidden state per
    # second. Not a copy: on an H200 it ran 1.22x an H100's where a copy runs 1.40x. None: not
    # measured (ceilings recorded before it was).
    elementwise_gbps: float | None = None
    # Per Wan VAE, the share of its decode's kernel time outside the convolutions' implicit GEMMs
    # (wanfit.measure.vae_split): that part scales like the elementwise chain between GPUs. None: not
    # measured (ceilings recorded before it was; the GPU's profile may carry it).
    vae_decode_non_gemm_share: dict[str, float] | None = None
    # Device-to-host into freshly allocated pageable memory (model offload's moves down; bound by the
    # host's page faulting, not the link). None: not measured (sessions before 2026-11-24).
    d2h_fresh_gbps: float | None = None
