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
    achieved_matmul_tflops: float | None = Field(default=None, gt=0, description="measured bf16 matmul TFLOP/s")
    achieved_attention_tflops: float | None = Field(default=None, gt=0, description="measured bf16 SDPA TFLOP/s")
    achieved_h2d_gbps: float | None = Field(default=None, gt=0, description="measured pinned host-to-device GB/s")
    achieved_d2d_gbps: float | None = Field(default=None, gt=0, description="measured device-to-device copy GB/s")
    achieved_elementwise_gbps: float | None = Field(
        default=None, gt=0, description="measured Wan-block elementwise chain, GB of one bf16 hidden state per second "
                                        "(wanfit.measure.ceilings.elementwise_gbps)")
    vae_decode_non_gemm_share: dict[str, float] | None = Field(
        default=None, description="measured share of a VAE decode's kernel time outside its convolutions' implicit "
                                  "GEMMs on this GPU, per Wan VAE (bench/device/vae_kernels.py): norms, SiLU, "
                                  "upsampling, the causal caches' copies, layout transforms")
    cuda_context_gib: float | None = Field(default=None, gt=0, description="measured device memory a CUDA context takes")
    attention_tflops_by_kernel: dict[str, float] | None = Field(
        default=None, description="measured bf16 attention TFLOP/s per kernel class (fa2, fa3, cudnn), at a Wan "
                                  "sequence: what a pinned attention kernel is timed at against the runtime's own")
    default_attention: dict[str, str] | None = Field(
        default=None, description="the kernel class each runtime picks here by itself (`auto`): diffusers through "
                                  "torch SDPA's own choice, wan through what the official attention call imports")
    notes: str = Field(default="", description="caveats that apply to the whole profile")
    sources: dict[str, str] = Field(description="field name -> where its value came from (or why it is null)")

    @property
    def device_names(self) -> tuple[str, ...]:
        """Every name the driver may report for a board this profile describes."""
        return (self.name, *self.other_device_names)

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


def profile_table_rows(profiles: Mapping[str, GpuProfile] | None = None) -> list[dict[str, Any]]:
    """One flat row per GPU for `wanfit gpus` (memory GiB, throughput TFLOP/s, bandwidth GB/s)."""
    profiles = load_profiles() if profiles is None else profiles
    return [
        {
            "key": p.key,
            "name": p.name,
            "arch": p.architecture,
            "memory_gib": round(p.memory_gib, 2),
            "bf16_tflops": p.bf16_dense_tflops,
            "measured_matmul_tflops": p.achieved_matmul_tflops,
            "mem_bw_gbps": p.memory_bandwidth_gbps,
            "host_link": p.host_link,
            "host_gbps": p.host_link_gbps,
            "tdp_w": p.tdp_w,
        }
        for p in sorted(profiles.values(), key=lambda p: p.key)
    ]
