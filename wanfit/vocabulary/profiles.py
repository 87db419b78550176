"""GPU profiles: what wanfit knows about each GPU it plans for, and where every number came from.

One JSON file per GPU in `profiles/` (file name = key), validated by `GpuProfile`. The numbers are
datasheet / whitepaper figures, public measurements, or wanfit's own device measurements, and every
numeric field names its source in `sources` -- also the fields left null, whose source then says
why no figure was found. Units: memory in GiB (2**30 bytes); bandwidths in GB/s (10**9 bytes/s);
throughput in TFLOP/s (10**12 FLOP/s), dense (no 2:4 sparsity); power in W.

Pure Python (pydantic + json): this module is on the `wanfit plan` path and must not import torch.
"""

from __future__ import annotations

import functools
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wanfit.vocabulary.errors import WanfitError, unknown_name_error
from wanfit.vocabulary.paths import profiles_dir

Architecture = Literal["Ampere", "Ada", "Hopper", "Blackwell"]

# How far the memory a local GPU reports may be from its profile and still count as that GPU.
# NVML and torch disagree by ~0.5 GiB (torch leaves out memory the driver keeps), and on GDDR
# cards ECC on/off moves the reported total by 6.25 % (L40S: 46068 MiB with ECC, 49140 without).
MATCH_TOLERANCE = 0.08

_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")

RateUnit = Literal["TFLOP/s", "GB/s"]
RateBasis = Literal["measured", "public", "derived"]
AttentionBackend = Literal["fa2", "fa3", "cudnn", "fa4"]
Runtime = Literal["diffusers", "wan"]

# The kernel classes a Wan job's time splits into, each with its unit and what its rate means. A profile's
# `class_rates` holds the *achieved* rate of each class this GPU can run: measured by wanfit on the device,
# a published measurement, or a datasheet figure times a stated rule (bench/transfer_rates.py writes those).
RATE_CLASSES: dict[str, tuple[RateUnit, str]] = {
    "gemm_bf16": ("TFLOP/s", "dense bf16 matmul with fp32 accumulate at large square sizes (torch.mm)"),
    "attention_fa2": ("TFLOP/s", "FlashAttention-2 class kernels (flash-attn 2, torch SDPA's flash backend; the "
                                 "mma.sync path on every architecture), bf16 forward, head dim 128, long sequences"),
    "attention_fa3": ("TFLOP/s", "FlashAttention-3 (flash_attn_interface; Hopper's wgmma/TMA path, sm90 only), bf16 "
                                 "forward, head dim 128, long sequences"),
    "attention_cudnn": ("TFLOP/s", "torch SDPA's cuDNN backend (cuDNN fused flash attention), bf16 forward, head dim "
                                   "128, long sequences"),
    "attention_fa4": ("TFLOP/s", "FlashAttention-4 (flash_attn.cute; sm90 and sm100), bf16 forward, head dim 128, "
                                 "long sequences"),
    "conv3d_vae": ("TFLOP/s", "the Wan VAE decode's cuDNN convolutions as they run (fp32 tensors, TF32 tensor cores: "
                              "torch allows TF32 for cuDNN by default), convolution FLOPs per second of their "
                              "implicit-GEMM kernels"),
    "elementwise": ("GB/s", "the Wan block's elementwise chain (fp32 norms with modulation, gated residuals, GELU), "
                            "GB of one bf16 hidden state per second (wanfit.measure.ceilings.elementwise_gbps)"),
    "fp64": ("TFLOP/s", "non-tensor FP64 (the official code's float64 RoPE: 1/2 of FP32 on GH100/GA100/B200, 1/64 "
                        "on GA10x/AD10x/GB20x)"),
    "h2d_pinned": ("GB/s", "pinned host-to-device copy"),
    "d2d_copy": ("GB/s", "device-to-device copy, bytes read + written"),
    "nccl_all_gather": ("GB/s", "NCCL all-gather bus bandwidth per GPU at large messages, several GPUs of this kind "
                                "in one host (nccl-tests busbw)"),
    "nccl_all_to_all": ("GB/s", "NCCL all-to-all bus bandwidth per GPU at large messages, several GPUs of this kind "
                                "in one host (nccl-tests busbw)"),
}


class ClassRate(BaseModel):
    """One kernel class's achieved rate on one GPU, and what it rests on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float = Field(gt=0)
    unit: RateUnit
    basis: RateBasis = Field(description="measured: wanfit's own device run; public: a published measurement; "
                                         "derived: a datasheet figure times a stated rule")
    source: str = Field(min_length=10)

    @property
    def achieved(self) -> bool:
        return self.basis != "derived"


class GpuProfile(BaseModel):
    """One GPU as wanfit plans for it. Read by the planner (transfer between GPUs, fit verdicts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="profile key = JSON file name, e.g. 'l40s'")
    name: str = Field(description="device name as nvidia-smi / torch.cuda.get_device_name report it")
    other_device_names: tuple[str, ...] = Field(
        default=(), description="other names the driver reports for boards this profile also describes")
    aliases: tuple[str, ...] = Field(default=(), description="other names accepted by --gpu")
    architecture: Architecture
    compute_capability: str = Field(pattern=r"^\d+\.\d+$", description="CUDA compute capability, e.g. '8.9'")
    memory_total_gib: float = Field(gt=0, description="memory capacity as the vendor states it (GPU 'GB' are GiB)")
    nvidia_smi_total_mib: int = Field(gt=0, description="nvidia-smi memory.total in MiB, as the driver reports it")
    memory_gib: float = Field(gt=0, description="usable memory the driver reports: nvidia_smi_total_mib / 1024")
    bf16_dense_tflops: float | None = Field(
        default=None, gt=0, description="dense BF16 tensor TFLOP/s with FP32 accumulate (what a PyTorch bf16 matmul uses)")
    fp8_dense_tflops: float | None = Field(default=None, gt=0, description="dense FP8 tensor TFLOP/s, null without FP8")
    memory_bandwidth_gbps: float = Field(gt=0, description="peak device-memory bandwidth, GB/s")
    host_link: str | None = Field(default=None, description="host interface, e.g. 'PCIe Gen5 x16'")
    host_link_gbps: float | None = Field(default=None, gt=0, description="theoretical host-link GB/s per direction")
    tdp_w: float = Field(gt=0, description="board power limit (TDP / TBP), W")
    vae_decode_non_gemm_share: dict[str, float] | None = Field(
        default=None, description="measured share of a VAE decode's kernel time outside its convolutions' implicit "
                                  "GEMMs on this GPU, per Wan VAE (bench/device/vae_kernels.py): norms, SiLU, "
                                  "upsampling, the causal caches' copies, layout transforms")
    cuda_context_gib: float | None = Field(default=None, gt=0, description="measured device memory a CUDA context takes")
    class_rates: dict[str, ClassRate] = Field(
        default_factory=dict, description="achieved rate per kernel class (RATE_CLASSES), each with its basis and "
                                          "source; a class this GPU cannot run (FA3 off Hopper, FA4 off sm90/sm100) "
                                          "is absent")
    default_attention: dict[Runtime, AttentionBackend] = Field(
        description="the attention backend each runtime picks here by itself (`auto`): diffusers through torch "
                    "SDPA's own priority, wan through what the official attention call imports (flash-attn 2 "
                    "installed, no flash_attn_interface)")
    interconnect: str | None = Field(
        default=None, description="how GPUs of this kind in one host exchange data, e.g. 'NVLink 4, 18 links, "
                                  "900 GB/s bidirectional' or 'PCIe Gen4 x16, no P2P on GeForce'")
    gpu_p2p_gbps: float | None = Field(
        default=None, gt=0, description="datasheet GPU-to-GPU GB/s per direction (null: no peer-to-peer path)")
    notes: str = Field(default="", description="caveats that apply to the whole profile")
    sources: dict[str, str] = Field(description="field name -> where its value came from (or why it is null)")

    @property
    def device_names(self) -> tuple[str, ...]:
        """Every name the driver may report for a board this profile describes."""
        return (self.name, *self.other_device_names)

    def backends(self) -> tuple[str, ...]:
        """The attention backends that run here: FA2 and cuDNN everywhere (sm80 on), FA3's kernels on sm90 only,
        FA4 on sm90 and sm100 (Dao-AILab/flash-attention: hopper/ and flash_attn/cute/)."""
        major = int(self.compute_capability.split(".")[0])
        return ("fa2", "cudnn", *(("fa3",) if major == 9 else ()), *(("fa4",) if major in (9, 10) else ()))

    def rate(self, name: str) -> ClassRate | None:
        """The class rate `name` (a RATE_CLASSES key), None where this GPU has none."""
        return self.class_rates.get(name)

    def achieved(self, name: str) -> float | None:
        """The rate of `name` where it is achieved (measured or public), else None."""
        rate = self.class_rates.get(name)
        return rate.value if rate is not None and rate.achieved else None

    @model_validator(mode="after")
    def _consistent(self) -> GpuProfile:
        if not _KEY.match(self.key):
            raise ValueError(f"key '{self.key}' must be lowercase letters, digits and '-'")
        unknown = sorted(set(self.sources) - (set(type(self).model_fields) - {"sources"}))
        if unknown:
            raise ValueError(f"sources name fields the profile does not have: {', '.join(unknown)}")
        unsourced = [f for f in numeric_fields() if not self.sources.get(f, "").strip()]
        if unsourced:
            raise ValueError(f"numeric fields without a source: {', '.join(unsourced)}")
        if abs(self.memory_gib - self.nvidia_smi_total_mib / 1024) > 1e-3:
            raise ValueError(f"memory_gib {self.memory_gib} != nvidia_smi_total_mib / 1024 "
                             f"({self.nvidia_smi_total_mib / 1024:.3f})")
        if self.memory_gib > self.memory_total_gib + 0.01:
            raise ValueError(f"usable memory_gib {self.memory_gib} exceeds memory_total_gib {self.memory_total_gib}")
        for name, rate in self.class_rates.items():
            if name not in RATE_CLASSES:
                raise ValueError(f"class_rates: unknown class '{name}' (known: {', '.join(RATE_CLASSES)})")
            if rate.unit != RATE_CLASSES[name][0]:
                raise ValueError(f"class_rates.{name}: unit {rate.unit}, expected {RATE_CLASSES[name][0]}")
        for name in self.class_rates:
            if name.startswith("attention_") and name.removeprefix("attention_") not in self.backends():
                raise ValueError(f"class_rates.{name}: that kernel does not run on compute capability "
                                 f"{self.compute_capability}")
        for runtime, backend in self.default_attention.items():
            if backend not in self.backends():
                raise ValueError(f"default_attention.{runtime}: {backend} does not run on compute capability "
                                 f"{self.compute_capability}")
        missing = [r for r in typing.get_args(Runtime) if r not in self.default_attention]
        if missing:
            raise ValueError(f"default_attention has no entry for runtime {', '.join(missing)}")
        for field in ("default_attention", "interconnect"):
            if not self.sources.get(field, "").strip():
                raise ValueError(f"{field} without a source")
        if (self.host_link is None) != (self.host_link_gbps is None):
            raise ValueError("host_link and host_link_gbps must both be given or both be null")
        return self


@functools.cache
def numeric_fields() -> tuple[str, ...]:
    """The GpuProfile fields that hold a number (or the compute capability): each needs a source."""
    names = []
    for field_name, info in GpuProfile.model_fields.items():
        annotation = info.annotation
        members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
        if any(m in (int, float) for m in members) or field_name == "compute_capability":
            names.append(field_name)
    return tuple(names)


def _alias_norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _device_norm(name: str) -> str:
    # Older drivers print names without the "NVIDIA " prefix ("GeForce RTX 4090").
    norm = " ".join(name.lower().split())
    return norm.removeprefix("nvidia ")


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        return f"{where}: {first['msg']}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=8)
def _load_dir(directory: str) -> tuple[GpuProfile, ...]:
    paths = sorted(Path(directory).glob("*.json"))
    if not paths:
        raise WanfitError(f"no GPU profiles in {directory}: reinstall wanfit (profiles/ ships with it)")
    profiles = []
    for path in paths:
        try:
            profile = GpuProfile.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:  # JSONDecodeError and pydantic's ValidationError are ValueErrors
            raise WanfitError(f"corrupt GPU profile {path}: {_one_line(exc)}; restore the file from the wanfit "
                              f"sources or fix it") from exc
        if profile.key != path.stem:
            raise WanfitError(f"corrupt GPU profile {path}: key '{profile.key}' must equal the file name "
                              f"'{path.stem}'; rename one of them")
        profiles.append(profile)
    seen: dict[str, str] = {}
    for profile in profiles:
        for alias in {_alias_norm(n) for n in (profile.key, *profile.aliases)}:
            if alias in seen:
                raise WanfitError(f"GPU profiles {seen[alias]} and {profile.key} both claim the name '{alias}' "
                                  f"in {directory}; remove one of them")
            seen[alias] = profile.key
    return tuple(profiles)


def load_profiles(directory: Path | None = None) -> dict[str, GpuProfile]:
    """All GPU profiles by key (read once per directory and cached)."""
    directory = Path(directory) if directory is not None else profiles_dir()
    return {p.key: p for p in _load_dir(str(directory.resolve()))}


def known_names(profiles: Mapping[str, GpuProfile] | None = None) -> list[str]:
    """Every key and alias `--gpu` accepts."""
    profiles = load_profiles() if profiles is None else profiles
    return sorted({n for p in profiles.values() for n in (p.key, *p.aliases)})


def get_profile(name: str, directory: Path | None = None) -> GpuProfile:
    """The profile named by key, alias or driver device name (case-insensitive).

    Unknown names raise a one-line WanfitError listing the closest known keys and aliases."""
    profiles = load_profiles(directory)
    wanted = _alias_norm(name)
    for profile in profiles.values():
        if wanted in {_alias_norm(n) for n in (profile.key, *profile.aliases)}:
            return profile
    device = _device_norm(name)
    for profile in profiles.values():
        if device in {_device_norm(n) for n in profile.device_names}:
            return profile
    raise unknown_name_error("GPU", name, known_names(profiles), "wanfit gpus")


def match_local_gpu(device_name: str, total_gib: float, directory: Path | None = None) -> GpuProfile | None:
    """The profile of a GPU as torch or NVML describe it ("NVIDIA H100 80GB HBM3", 79.2 GiB), or None.

    The name must be one the profile lists; the memory must be within MATCH_TOLERANCE of the profile's,
    so a board with the same name and a different memory size (or a MIG slice) is not mistaken for it."""
    device = _device_norm(device_name)
    fitting = [p for p in load_profiles(directory).values()
               if device in {_device_norm(n) for n in p.device_names}
               and abs(total_gib - p.memory_gib) <= MATCH_TOLERANCE * p.memory_gib]
    return min(fitting, key=lambda p: abs(total_gib - p.memory_gib), default=None)


# Short column names of the class rates in `wanfit gpus`; a cell is the rate and its basis's initial
# (m measured, p public, d derived), '-' where the GPU has no such class.
TABLE_CLASSES: dict[str, str] = {
    "gemm_bf16": "gemm", "attention_fa2": "fa2", "attention_fa3": "fa3", "attention_cudnn": "cudnn",
    "attention_fa4": "fa4", "conv3d_vae": "conv3d", "elementwise": "elemwise", "fp64": "fp64", "h2d_pinned": "h2d",
    "d2d_copy": "copy", "nccl_all_gather": "allgather", "nccl_all_to_all": "all2all",
}


def rate_cell(rate: ClassRate | None) -> str | None:
    """A class rate as `wanfit gpus` shows it: '797 m' (3 significant figures, whole numbers from 100; basis
    initial)."""
    if rate is None:
        return None
    return f"{rate.value:.0f} {rate.basis[0]}" if rate.value >= 100 else f"{rate.value:.3g} {rate.basis[0]}"


def profile_table_rows(profiles: Mapping[str, GpuProfile] | None = None) -> list[dict[str, Any]]:
    """One flat row per GPU for `wanfit gpus`: datasheet figures (memory GiB, TFLOP/s, GB/s), the attention backend
    each runtime picks (diffusers/wan), and every class rate with its basis (TABLE_CLASSES; units: RATE_CLASSES).
    Host link, power and the rest: `wanfit gpus --format json` and docs/gpus.md."""
    profiles = load_profiles() if profiles is None else profiles
    rows = []
    for p in sorted(profiles.values(), key=lambda p: p.key):
        row: dict[str, Any] = {
            "key": p.key,
            "arch": p.architecture,
            "cc": p.compute_capability,
            "memory_gib": round(p.memory_gib, 2),
            "bf16_tflops": p.bf16_dense_tflops,
            "mem_bw_gbps": p.memory_bandwidth_gbps,
            "attn": f"{p.default_attention['diffusers']}/{p.default_attention['wan']}",
        }
        row.update({short: rate_cell(p.rate(name)) for name, short in TABLE_CLASSES.items()})
        row["p2p_gbps"] = p.gpu_p2p_gbps
        rows.append(row)
    return rows
