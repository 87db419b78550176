"""What a run measured: the file format written by the runner and read by the fitter and verify.

Pure pydantic (no torch). Memory in GiB (2**30 bytes), times in seconds, percentages 0-100.
A failed run (OOM included) is a Measurement too: `status` says how it ended and `failed_stage`
where, and every stage completed before the failure is kept.
"""

from __future__ import annotations

import hashlib
import statistics
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wanfit.vocabulary.environment import Environment
from wanfit.vocabulary.workload import Plan, Workload

StageName = Literal["init", "text_encode", "prepare", "step", "vae_decode", "total"]
Status = Literal["ok", "oom", "error"]
# A rank of a several-GPU point: as the point ended (ok, oom, error), killed by the launcher while it waited in a
# collective for a rank that had failed, or gone without a record (its process died).
RankStatus = Literal["ok", "oom", "error", "killed", "no_record"]


class CollectiveStat(BaseModel):
    """One kind of collective on one rank within a stage (or a whole run). `time_s`: seconds inside the calls,
    timed by CUDA events on the stream that issued each call (the wall clock on a CPU run), so a rank waiting for
    a slower one counts that wait; `bytes`: the size of the calls' results on this rank (what it ends up holding);
    `untimed_calls`: calls issued asynchronously (async_op), counted but not timed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    calls: int = 0
    time_s: float = 0.0
    bytes: float = 0.0
    untimed_calls: int = 0


class StageRecord(BaseModel):
    """One stage of a run. `index` numbers denoising steps from 1.

    Stages, back to back: init (build or load, then place per plan), text_encode (prompt and, with
    CFG, negative prompt), prepare (pipeline call up to the first DiT forward: latents, and for I2V
    the image / VAE conditioning encode), step 1..n (step 1 includes warm-up and any weight upload
    done by offload hooks), vae_decode (after the last step: decode and postprocess to numpy),
    total (the whole run).

    device_used_peak_gib is the NVML device-level used memory (what decides OOM and what nvidia-smi
    shows), sampled by a poller during the stage; torch_* are the caching allocator's own peaks.
    sm_activity_pct is the mean SM activity over the stage (NVML GPM when available, else GPU
    utilisation; `activity_source` in the Measurement says which); compute_load = time_s x
    sm_activity_pct / 100, as in the user's own reports.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: StageName
    index: int | None = None
    expert: int | None = None  # 1 = transformer (high noise), 2 = transformer_2 (low noise)
    start_s: float
    time_s: float
    torch_allocated_start_gib: float | None = None  # live tensors when the stage began (weights, latents)
    torch_peak_allocated_gib: float | None = None
    torch_peak_reserved_gib: float | None = None
    device_used_start_gib: float | None = None
    device_used_peak_gib: float | None = None
    sm_activity_pct: float | None = None
    compute_load: float | None = None
    cpu_pct: float | None = None
    host_rss_peak_gib: float | None = None
    # Several GPUs: this rank's collectives in the stage by kind (all_to_all: Ulysses; all_gather: FSDP's weight
    # gathers; sequence_gather: the output's gather; ring_all_gather: ring attention's K/V; broadcast, barrier).
    collectives: dict[str, CollectiveStat] = Field(default_factory=dict)


def sum_collectives(stages: list[StageRecord]) -> dict[str, CollectiveStat]:
    """The stages' collectives added up by kind (the `total` record left out)."""
    out: dict[str, CollectiveStat] = {}
    for s in stages:
        if s.name == "total":
            continue
        for kind, c in s.collectives.items():
            prev = out.get(kind, CollectiveStat())
            out[kind] = CollectiveStat(calls=prev.calls + c.calls, time_s=prev.time_s + c.time_s,
                                       bytes=prev.bytes + c.bytes, untimed_calls=prev.untimed_calls + c.untimed_calls)
    return out


class RankRecord(BaseModel):
    """One rank of a several-GPU point as it measured itself: its own stages (per-stage peaks of its device, its
    stage clock, its collectives), its memory baseline and the weights it held."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rank: int
    local_rank: int
    device: str
    status: RankStatus
    failed_stage: str | None = None
    error: str | None = None
    steps_run: int = 0
    stages: list[StageRecord] = Field(default_factory=list)
    context_gib: float | None = None
    idle_device_used_gib: float | None = None
    resident_weights_gib: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, float] = Field(default_factory=dict)

    def collectives(self) -> dict[str, CollectiveStat]:
        return sum_collectives(self.stages)

    def stage_named(self, name: StageName) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def peak_device_used_gib(self) -> float | None:
        peaks = [s.device_used_peak_gib for s in self.stages if s.device_used_peak_gib is not None]
        return max(peaks) if peaks else None


class Distributed(BaseModel):
    """How a several-GPU point was launched: the collective backend, its NCCL version, the NCCL_* settings the
    ranks ran with, and the GPUs' interconnect (nvidia-smi topo -m) where it could be read."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    world_size: int
    backend: str
    launcher: str = "wanfit.measure.distributed (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT as torchrun)"
    nccl_version: str | None = None
    nccl_env: dict[str, str] = Field(default_factory=dict)
    topology: str | None = None


class MemorySample(BaseModel):
    """One poller sample: seconds since the run started, device-level used GiB."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    t_s: float
    used_gib: float
    sm_pct: float | None = None


class Measurement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    workload: Workload
    plan: Plan
    status: Status
    failed_stage: str | None = None
    error: str | None = None
    source: Literal["random", "checkpoint"] = "random"
    tag: str = ""  # e.g. "reset-check": a repeat of a point in a reused process, to show resets are clean
    decoded: bool = True  # False when the run stopped at latents (knob points that do not need a decode)
    steps_run: int
    stages: list[StageRecord] = Field(default_factory=list)
    # Weights resident on the GPU after the plan is applied, per component (GiB, torch-allocated).
    resident_weights_gib: dict[str, float] = Field(default_factory=dict)
    # Device-level used memory with only the CUDA context up (before any weight), GiB.
    context_gib: float | None = None
    idle_device_used_gib: float | None = None  # before this process touched the GPU
    # The first point its process ran: it pays the process's one-time costs (CUDA's lazily loaded
    # kernels and library handles on first use: about 0.5 s in the first text encode and 0.3 s in the
    # first step), as a user's one-video job does. None: measured before the runner recorded it;
    # measurements_file.load_measurements infers it from the file's order and sessions.
    first_in_process: bool | None = None
    activity_source: str | None = None
    # Sub-stage figures: vae_decode_call_s / vae_decode_call_peak_above_start_gib time the VAE's own
    # decode() inside the vae_decode stage (the stage also holds postprocessing to numpy).
    extra: dict[str, float] = Field(default_factory=dict)
    timeline: list[MemorySample] = Field(default_factory=list)
    environment: Environment
    created_at: str
    # Several GPUs (plan.gpus > 1): `stages` are rank 0's (its clock is the point's); every rank's own record
    # (rank 0's included) is in `ranks`, and how they were launched in `distributed`.
    ranks: list[RankRecord] = Field(default_factory=list)
    distributed: Distributed | None = None

    def stage(self, name: StageName, index: int | None = None) -> StageRecord | None:
        for s in self.stages:
            if s.name == name and (index is None or s.index == index):
                return s
        return None

    def steps(self) -> list[StageRecord]:
        return [s for s in self.stages if s.name == "step"]

    def switch_step(self) -> StageRecord | None:
        return switch_step(self.steps())

    def steady_steps(self) -> list[StageRecord]:
        return steady_steps(self.steps())

    def fastest_steady_step_s(self) -> float | None:
        return fastest_steady_step_s(self.steps())

    @property
    def peak_device_used_gib(self) -> float | None:
        """The highest device-level peak: of the one GPU, or of any rank's GPU (the per-GPU peak of a
        several-GPU point is its worst rank's)."""
        peaks = [s.device_used_peak_gib for s in [*self.stages, *(st for r in self.ranks for st in r.stages)]
                 if s.device_used_peak_gib is not None]
        return max(peaks) if peaks else None


# Plan fields added after points were stored, by the release that added them: a group left at its defaults is
# left out of a point's hash, so the points stored before it keep their ids.
LATER_PLAN_FIELDS = (("runtime", "attention"), ("gpus", "ulysses", "ring", "dit_fsdp", "t5_fsdp"))


def point_id(workload: Workload, plan: Plan, steps: int, source: str = "random", tag: str = "",
             decode: bool = True, memory_cap_gib: float | None = None) -> str:
    """Stable id of a measured point (resume key): same workload, plan, steps, options -> same id. A group of
    Plan fields added later (runtime and attention; the several-GPU layout) that a plan leaves at its defaults
    hashes as before them, so the stored points' ids stay theirs and a resumed calibration does not measure
    them again."""
    unset = {f for group in LATER_PLAN_FIELDS
             if all(getattr(plan, f) == Plan.model_fields[f].default for f in group) for f in group}
    plan_json = plan.model_dump_json(exclude=unset or None)
    key = f"{workload.model_dump_json()}|{plan_json}|{steps}|{source}|{tag}|{decode}|{memory_cap_gib}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


# ---- steady steps: the one definition the fit and verify share ----------------------------------


def switch_step(steps: list[StageRecord]) -> StageRecord | None:
    """The first step of the second expert (where a two-expert model swaps its DiT), if any."""
    for prev, cur in pairwise(steps):
        if prev.expert == 1 and cur.expert == 2:
            return cur
    return None


def steady_steps(steps: list[StageRecord]) -> list[StageRecord]:
    """The steps of a run at steady state: after the first (warm-up and offload uploads happen in step 1),
    the expert-switch step left out."""
    switch = switch_step(steps)
    return [s for s in steps if (s.index or 0) >= 2 and s is not switch]


def fastest_steady_step_s(steps: list[StageRecord]) -> float | None:
    """What the fit takes as a run's steady step: the fastest steady step. A step is only ever slowed by
    something else (a clock ramp, a host hiccup), so the minimum is the cleanest estimate of the step's cost."""
    steady = steady_steps(steps)
    return min(s.time_s for s in steady) if steady else None


def median_steady_step_s(steps: list[StageRecord]) -> float | None:
    """What verify compares a prediction with: the median steady step, the time a user's run spends per
    step (slow steps included). Falls back to the first step (warm-up included) when it is the only one."""
    if not steps:
        return None
    steady = steady_steps(steps)
    return statistics.median(s.time_s for s in steady) if steady else steps[0].time_s
