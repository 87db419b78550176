"""Launch the ranks of a several-GPU point and merge what they measured (the worker calls `run_distributed` for a
job whose plan has gpus > 1). Imports no torch: the launching process never touches a GPU.

Each rank is a fresh `python -m wanfit.measure.distributed.rank` with the environment torchrun gives its workers:
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT (a free port), OMP_NUM_THREADS=1
unless set (torchrun's default for several processes), and CUDA_DEVICE_ORDER=PCI_BUS_ID unless set (so CUDA's
device i is NVML's i, which each rank's monitor reads). A rank's output goes to its log file, not the console.
Linux ranks die with the launcher (PR_SET_PDEATHSIG): a killed worker leaves no rank holding a GPU.

When a rank fails, the others get GRACE_S to end on their own (on gloo they see the peer gone at once; on NCCL they
wait in the collective forever) and are then killed, each by its own process id; what they had measured is kept
(wanfit.measure.distributed.merge).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from wanfit.measure.distributed.merge import PointKey, RankResult, merge_ranks, rank_files, read_rank
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.measurement import Distributed, Measurement

RANK_MODULE = "wanfit.measure.distributed.rank"
GRACE_S = float(os.environ.get("WANFIT_RANK_GRACE_S", "30"))
POLL_S = 0.1
LOG_TAIL_CHARS = 1500
TOPOLOGY_CHARS = 2000
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port nothing listens on now (the rendezvous binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_environ(rank: int, world: int, port: int, base: dict | None = None) -> dict[str, str]:
    """torchrun's variables for one worker of a single-node job (module docstring)."""
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the ranks outlive a killed launcher
        pass


@dataclass
class _Rank:
    rank: int
    proc: subprocess.Popen
    killed: bool = False


def _spawn(rank: int, world: int, port: int, job_file: Path, rank_dir: Path, module: str) -> _Rank:
    log = rank_files(rank_dir, rank)[2].open("w")
    try:
        proc = subprocess.Popen([sys.executable, "-m", module, str(job_file), str(rank_dir)],
                                env=rank_environ(rank, world, port), stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    finally:
        log.close()
    return _Rank(rank, proc)


def _watch(ranks: list[_Rank], grace_s: float, timeout_s: float | None) -> None:
    """Wait for every rank; GRACE_S after the first failure (or at the timeout) kill those still running."""
    started, failed_at = time.monotonic(), None
    while any([r.proc.poll() is None for r in ranks]):  # a list: every rank polled, its return code read
        now = time.monotonic()
        if failed_at is None and any(r.proc.returncode not in (None, 0) for r in ranks):
            failed_at = now
        late = timeout_s is not None and now - started > timeout_s
        if late or (failed_at is not None and now - failed_at > grace_s):
            for r in ranks:
                if r.proc.poll() is None:
                    r.proc.kill()
                    r.killed = True
        time.sleep(POLL_S)
    for r in ranks:
        r.proc.wait()


def available_gpus() -> int | None:
    """The GPUs nvidia-smi lists (None: no nvidia-smi), counted without creating a CUDA context."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    listed = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return min(listed, len([v for v in visible.split(",") if v.strip()])) if visible is not None else listed


def require_gpus(gpus: int, command: str) -> None:
    """A one-line error before anything runs when the plan wants more GPUs than this host has."""
    count = available_gpus()
    if gpus > 1 and count is not None and count < gpus:
        raise WanfitError(f"{command} --gpus {gpus} runs one rank per GPU of this host, which has {count}: use "
                          f"--gpus {count} or a machine with {gpus} GPUs")


def topology() -> str | None:
    """`nvidia-smi topo -m` (how the GPUs connect: NVLink, PCIe switch, host bridge), where it can be read."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()[:TOPOLOGY_CHARS] if out.returncode == 0 else None


def _setup(world: int, cpu: bool) -> Distributed:
    nccl_env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("NCCL_", "TORCH_NCCL_"))}
    return Distributed(world_size=world, backend="gloo" if cpu else "nccl", nccl_env=nccl_env,
                       topology=None if cpu else topology())


def run_distributed(job, *, module: str = RANK_MODULE, grace_s: float = GRACE_S,
                    timeout_s: float | None = None) -> Measurement:
    """Run `job` (a wanfit.measure.worker.Job with plan.gpus > 1) on plan.gpus ranks and merge their records."""
    world = job.plan.gpus
    key = PointKey(id=job.id, workload=job.workload, plan=job.plan, source="checkpoint" if job.checkpoint else "random",
                   tag=job.tag, decode=job.decode)
    with tempfile.TemporaryDirectory(prefix="wanfit-ranks-") as tmp:
        rank_dir = Path(tmp)
        job_file = rank_dir / "job.json"
        job_file.write_text(job.model_dump_json())
        port = free_port()
        ranks = []
        try:
            for r in range(world):
                ranks.append(_spawn(r, world, port, job_file, rank_dir, module))
            _watch(ranks, grace_s, timeout_s)
        finally:  # an interrupted launcher leaves no rank running
            for r in ranks:
                if r.proc.poll() is None:
                    r.proc.kill()
                    r.killed = True
                    r.proc.wait()
        results: list[RankResult] = [read_rank(rank_dir, r.rank, r.proc.returncode, r.killed, LOG_TAIL_CHARS)
                                     for r in ranks]
    return merge_ranks(key, results, _setup(world, job.device == "cpu"))
