"""What the planner predicts and advises: the objects `wanfit plan` prints and the Python API returns.

Pure pydantic. `peak_vram_gib` is device-level used memory at the peak, as NVML / nvidia-smi
report it on an uncapped card; `need_gib` is what decides the fit verdict: the torch-allocated
peak plus the CUDA context and non-torch memory (a capped allocator frees its cache and retries
before it raises OOM; predict.py says when a fragmentation margin is added).
The JSON contract (docs/json-contract.md) is the `model_dump(mode="json")` of PlanReport.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import Plan, Workload

# GiB kept free on every GPU before a plan counts as fitting, unless the user gives another
# (`--margin`; the JSON contract's `safety_margin_gib`).
SAFETY_MARGIN_GIB = 1.0
# The layout version of every JSON output (plan, verify, gpus, models: their `schema_version`). Raised when a
# field is renamed or removed or changes meaning; a field added keeps it (docs/json-contract.md).
SCHEMA_VERSION = 1


class StagePrediction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str  # init | text_encode | prepare | denoise | expert_switch | vae_decode
    time_s: float
    peak_vram_gib: float  # device level (what nvidia-smi shows), uncapped
    need_gib: float | None = None  # what decides OOM
    allocated_gib: float | None = None  # torch-allocated peak (torch.cuda.max_memory_allocated, what monitors print)


class Candidate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    plan: dict  # Plan.knobs(): offload, text_encoder, dit_dtype, vae_tiling
    fits: bool
    peak_vram_gib: float
    need_gib: float
    headroom_gib: float  # usable memory - need_gib - safety margin (negative: does not fit)
    binding_stage: str  # the stage whose need is largest
    step_s: float
    duration_s: float
    duration_interval_s: tuple[float, float] | None = None
    peak_vram_interval_gib: tuple[float, float] | None = None
    host_ram_gib: float = 0.0  # system memory the plan needs for offloaded weights
    host_ram_fits: bool = True  # False when a host RAM limit was given and the offloaded weights exceed it
    stages: list[StagePrediction] = Field(default_factory=list)
    extrapolated: bool = False
    transferred_from: str | None = None  # calibration (gpu/model) the prediction was carried over from
    notes: list[str] = Field(default_factory=list)
    # The command that runs this plan (wanfit.planner.command): set on each GPU's recommended candidate, else None.
    command: str | None = None

    def as_plan(self) -> Plan:
        return Plan(**self.plan)


class GpuResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    gpu: str
    gpu_count: int = 1  # GPUs of this kind for one video; every memory figure is per GPU (the worst rank)
    memory_gib: float  # usable memory as the driver reports it (one GPU)
    calibration: str | None = None  # which calibration file the predictions came from
    recommended: Candidate | None
    reason: str  # one line: why this plan (or why none fits)
    candidates: list[Candidate]

    def recommended_plan(self) -> Plan:
        """The recommended plan, or a one-line error saying why nothing fits."""
        if self.recommended is None:
            raise WanfitError(f"no plan is predicted to fit {self.gpu}: {self.reason}")
        return self.recommended.as_plan()


class HardwareOption(BaseModel):
    """One GPU kind x GPU count of the report with its recommended plan, ranked against the others by time and
    by GPU-hours (`plan --gpus 1,2,4,8`, or several --gpu)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    gpu: str
    gpu_count: int
    fits: bool
    summary: str  # '4 x l40s, Ulysses 4 + DiT FSDP: 23.1 GiB per GPU, 6m12s'
    need_gib: float | None = None  # per GPU, of the recommended plan
    duration_s: float | None = None
    gpu_hours: float | None = None  # gpu_count x duration
    speedup: float | None = None  # the same GPU kind's best one-GPU duration / this one (None: no one-GPU plan fits)
    rank_by_time: int | None = None  # 1 = fastest of the options that fit
    rank_by_gpu_hours: int | None = None  # 1 = cheapest


class PlanReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = SCHEMA_VERSION
    workload: Workload
    safety_margin_gib: float
    reused_pipeline: bool = False  # predicted for a process that keeps its pipeline built: no init
    results: list[GpuResult]
    hardware: list[HardwareOption] = Field(default_factory=list)  # with more than one GPU kind or count
