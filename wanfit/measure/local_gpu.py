"""The local GPU: which one is here (cheap, no torch) and whether torch can run on it.

`local_gpu()` asks nvidia-smi, never torch: `wanfit plan` calls it to pick its default GPU and must start
without importing torch, and `verify`'s parent process must not create a CUDA context (one would sit in
NVML's device-used figure during the measured run). nvidia-smi reports memory.total as the GPU profiles
record it (`nvidia_smi_total_mib`), so its answer matches a profile as written.

`require_cuda(command)` is for the commands that run the pipeline (calibrate, verify): it imports torch
and asks only whether CUDA is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from wanfit.vocabulary.errors import WanfitError

MIB_PER_GIB = 1024
# nvidia-smi answers in well under a second; a hung driver must not hang `wanfit plan`.
NVIDIA_SMI_TIMEOUT_S = 10
QUERY = ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]


def parse_nvidia_smi(text: str) -> list[tuple[str, float]]:
    """(name, total GiB) per line of `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`
    ("NVIDIA H100 80GB HBM3, 81559"); lines that do not parse are skipped."""
    gpus = []
    for line in text.splitlines():
        name, _, mib = line.rpartition(",")  # the name may hold commas; the memory is the last field
        try:
            total_gib = float(mib) / MIB_PER_GIB
        except ValueError:
            continue
        if name.strip():
            gpus.append((name.strip(), total_gib))
    return gpus


def _visible_device() -> str | None:
    """The first device CUDA_VISIBLE_DEVICES names as nvidia-smi's --id takes it (an index or a GPU UUID):
    the device torch will run on. None when unset or in a form nvidia-smi does not take (the first GPU)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return first if first.isdigit() or first.startswith("GPU-") else None


def local_gpu() -> tuple[str, float] | None:
    """(device name, total memory in GiB) of the GPU this process would run on, through nvidia-smi.

    None when there is no nvidia-smi on PATH, no GPU, or nvidia-smi fails or times out. Imports no torch
    and creates no CUDA context; costs one nvidia-smi call. Match the answer to a
    profile with wanfit.vocabulary.profiles.match_local_gpu(*local_gpu())."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    device = _visible_device()
    command = [exe, *QUERY, *([f"--id={device}"] if device is not None else [])]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = parse_nvidia_smi(out)
    return gpus[0] if gpus else None


def no_cuda_error(command: str) -> WanfitError:
    """The one-line error of a GPU command (`command`: "calibrate", "verify") run where no CUDA GPU is seen."""
    return WanfitError(f"`wanfit {command}` runs the Wan pipeline on the local GPU and needs a CUDA GPU, and none is "
                       f"visible here: run it on a machine with an NVIDIA GPU (`wanfit plan` needs no GPU)")


def require_cuda(command: str) -> None:
    """Raise a one-line WanfitError unless torch is installed and sees a CUDA GPU (`command` names the
    wanfit command that needs it in the message). `torch.cuda.is_available()` creates no CUDA context."""
    try:
        import torch
    except ImportError:
        raise WanfitError(f"`wanfit {command}` needs the GPU extras: pip install 'wanfit[gpu]'") from None
    if not torch.cuda.is_available():
        raise no_cuda_error(command)
