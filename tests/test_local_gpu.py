"""The local-GPU detector (wanfit.measure.local_gpu): nvidia-smi's answer parsed, the GPU torch would run
on picked, None without nvidia-smi, and no torch imported on the way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wanfit.measure import local_gpu as detector
from wanfit.vocabulary.errors import WanfitError

# As the project's device machines print it (tests/test_profiles.py): an H100 80GB HBM3 has 81559 MiB.
TWO_GPUS = "NVIDIA H100 80GB HBM3, 81559\nNVIDIA L40S, 46068\n"


def test_nvidia_smi_lines_become_names_and_gib():
    assert detector.parse_nvidia_smi(TWO_GPUS) == [("NVIDIA H100 80GB HBM3", 81559 / 1024), ("NVIDIA L40S", 46068 / 1024)]
    # the memory is the last field even when the name holds a comma; noise and blank lines are skipped
    assert detector.parse_nvidia_smi("Odd, GPU, 1024\nNo devices were found\n\n, 5\n") == [("Odd, GPU", 1.0)]


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """An nvidia-smi on PATH that prints the GPU its --id names (all of them without one) and logs its args."""
    script = tmp_path / "nvidia-smi"
    log = tmp_path / "args"
    script.write_text(f"""#!/bin/sh
echo "$@" > {log}
case "$*" in
  *--id=1*) echo 'NVIDIA L40S, 46068' ;;
  *--id=*) echo 'No devices were found'; exit 6 ;;
  *) printf '{TWO_GPUS}' ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return log


def test_the_first_gpu_without_cuda_visible_devices(fake_smi):
    assert detector.local_gpu() == ("NVIDIA H100 80GB HBM3", 81559 / 1024)
    assert "--query-gpu=name,memory.total" in fake_smi.read_text() and "--id" not in fake_smi.read_text()


def test_the_gpu_cuda_visible_devices_names_first(fake_smi, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert detector.local_gpu() == ("NVIDIA L40S", 46068 / 1024)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f6e")
    assert detector.local_gpu() is None  # nvidia-smi knows no such device: it fails, and so no GPU
    assert "--id=GPU-8f6e" in fake_smi.read_text()


def test_no_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detector.local_gpu() is None


def test_a_failing_or_hung_nvidia_smi_means_no_gpu(fake_smi, monkeypatch):
    def hung(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], detector.NVIDIA_SMI_TIMEOUT_S)

    monkeypatch.setattr(detector.subprocess, "run", hung)
    assert detector.local_gpu() is None


def test_detecting_imports_no_torch():
    code = ("import sys; from wanfit.measure.local_gpu import local_gpu; local_gpu(); "
            "assert 'torch' not in sys.modules and 'pynvml' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_require_cuda_is_one_line_naming_the_command(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        detector.require_cuda("verify")  # a GPU is here: nothing to refuse
        return
    with pytest.raises(WanfitError) as err:
        detector.require_cuda("calibrate")
    assert "`wanfit calibrate`" in str(err.value) and "needs a CUDA GPU" in str(err.value)
    assert "\n" not in str(err.value)
