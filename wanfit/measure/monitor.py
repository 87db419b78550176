"""Per-stage measurement: wall time with device synchronisation, torch allocator peaks, NVML
device-level memory and utilisation from a background poller, process CPU % and host RSS.

NVML's device "used" memory is what decides OOM and what nvidia-smi shows; torch's peaks say how
much of it the caching allocator held (reserved) and how much live tensors needed (allocated).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil

from wanfit.vocabulary.measurement import MemorySample, StageRecord
from wanfit.vocabulary.units import GIB

POLL_INTERVAL_S = 0.01
MAX_TIMELINE_POINTS = 1500
# The driver's utilisation is a ~1/6 s window: reading it every 20th sample (0.2 s) misses nothing.
UTIL_EVERY_SAMPLES = 20
# A poller stuck in an NVML call must not hang the point: the thread is a daemon, left after this wait.
POLLER_JOIN_TIMEOUT_S = 2
MILLIWATTS_PER_WATT = 1000.0  # NVML reports power in milliwatts


class Nvml:
    """NVML device handle for the process's CUDA device; every reading is None without NVML."""

    def __init__(self, index: int | None = None, enabled: bool = True) -> None:
        self.handle = None
        self.activity_source: str | None = None
        if not enabled:  # a CPU run: nothing to read, and no NVML init on machines without a driver
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = _device_handle(pynvml, index)
            self._nvml = pynvml
            self.activity_source = "nvml GPU utilisation (% of time a kernel was running)"
        except Exception:  # no driver, no GPU or no pynvml: the monitor still times and reads torch
            self.handle = None

    def used_gib(self) -> float | None:
        if self.handle is None:
            return None
        return self._nvml.nvmlDeviceGetMemoryInfo(self.handle).used / GIB

    def utilisation_pct(self) -> float | None:
        if self.handle is None:
            return None
        return float(self._nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def driver(self) -> str | None:
        if self.handle is None:
            return None
        v = self._nvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else v

    def power_limit_w(self) -> float | None:
        """The enforced board power limit (an administrator may set it below the default)."""
        if self.handle is None:
            return None
        try:
            return self._nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / MILLIWATTS_PER_WATT
        except Exception:  # not supported on every board / virtualised GPU
            return None

    def max_sm_clock_mhz(self) -> int | None:
        if self.handle is None:
            return None
        try:
            return int(self._nvml.nvmlDeviceGetMaxClockInfo(self.handle, self._nvml.NVML_CLOCK_SM))
        except Exception:
            return None


def _device_handle(pynvml, index: int | None):
    """The NVML handle of this process's GPU: `index`, else the LOCAL_RANK-th visible device (a rank of a
    several-GPU point; 0 otherwise), named in CUDA_VISIBLE_DEVICES by index or UUID. The launcher sets
    CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML's own order, so CUDA's device i is NVML's i."""
    if index is not None:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    entry = visible[local] if local < len(visible) else str(local)
    if entry.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    return pynvml.nvmlDeviceGetHandleByIndex(int(entry) if entry.isdigit() else 0)


@dataclass
class _Sample:
    t: float
    used_gib: float | None
    util_pct: float | None
    rss_gib: float


@dataclass
class Poller:
    """Samples device memory, utilisation and host RSS every few milliseconds in a thread."""

    nvml: Nvml
    t0: float = field(default_factory=time.perf_counter)
    samples: list[_Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._proc = psutil.Process()

    def sample(self) -> _Sample:
        s = _Sample(time.perf_counter(), self.nvml.used_gib(), None, self._proc.memory_info().rss / GIB)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            s = self.sample()
            if n % UTIL_EVERY_SAMPLES == 0:
                s.util_pct = self.nvml.utilisation_pct()
            n += 1
            time.sleep(POLL_INTERVAL_S)

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self._run, name="wanfit-nvml-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=POLLER_JOIN_TIMEOUT_S)

    def window(self, start: float, end: float) -> list[_Sample]:
        return [s for s in list(self.samples) if start <= s.t <= end]

    def timeline(self) -> list[MemorySample]:
        pts = [s for s in list(self.samples) if s.used_gib is not None]
        stride = max(1, len(pts) // MAX_TIMELINE_POINTS)
        # Keep every stride-th point but never drop a local maximum: peaks are what matter.
        kept = []
        for i in range(0, len(pts), stride):
            chunk = pts[i : i + stride]
            kept.append(max(chunk, key=lambda s: s.used_gib))
        return [MemorySample(t_s=round(s.t - self.t0, 4), used_gib=round(s.used_gib, 4), sm_pct=s.util_pct)
                for s in kept]


class StageClock:
    """Times stages back to back. `begin()` opens a stage after a device sync; `end()` closes it
    and returns its StageRecord with the torch peaks since `begin()` and the poller's window.

    A rank of a several-GPU point adds a `meter` (its `take()` returns the collectives since the last call, read
    after the device sync) and `on_record` (each record as it closes: the launcher keeps a rank's stages even
    when it has to kill the rank)."""

    def __init__(self, poller: Poller, torch_mod, device: str, meter=None, on_record=None) -> None:
        self.poller = poller
        self.torch = torch_mod
        self.cuda = device.startswith("cuda") and torch_mod.cuda.is_available()
        self.meter, self.on_record = meter, on_record
        self.proc = psutil.Process()
        self._start: float | None = None
        self._used_start: float | None = None
        self._alloc_start: float | None = None

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def begin(self) -> None:
        self.sync()
        self.proc.cpu_percent(None)
        self.begin_at(self.poller.sample())

    def end(self, name: str, index: int | None = None, expert: int | None = None) -> StageRecord:
        self.sync()
        last = self.poller.sample()
        start = self._start if self._start is not None else last.t
        window = self.poller.window(start, last.t) or [last]
        used = [s.used_gib for s in window if s.used_gib is not None]
        util = [s.util_pct for s in window if s.util_pct is not None]
        rss = max(s.rss_gib for s in window)
        time_s = last.t - start
        activity = sum(util) / len(util) if util else None
        rec = StageRecord(
            name=name, index=index, expert=expert, start_s=round(start - self.poller.t0, 6), time_s=time_s,
            torch_allocated_start_gib=self._alloc_start,
            torch_peak_allocated_gib=self.torch.cuda.max_memory_allocated() / GIB if self.cuda else None,
            torch_peak_reserved_gib=self.torch.cuda.max_memory_reserved() / GIB if self.cuda else None,
            device_used_start_gib=self._used_start, device_used_peak_gib=max(used) if used else None,
            sm_activity_pct=activity, compute_load=time_s * activity / 100 if activity is not None else None,
            cpu_pct=self.proc.cpu_percent(None), host_rss_peak_gib=rss,
            collectives=self.meter.take() if self.meter is not None else {},
        )
        if self.on_record is not None:
            self.on_record(rec)
        # The next stage starts where this one ended (no gap): callbacks mark step boundaries.
        self.begin_at(last)
        return rec

    def begin_at(self, sample: _Sample) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            self._alloc_start = self.torch.cuda.memory_allocated() / GIB
        self._start, self._used_start = sample.t, sample.used_gib
