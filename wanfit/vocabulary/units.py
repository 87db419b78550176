"""Units used everywhere in wanfit: memory in GiB (2**30 bytes), time in seconds."""

GIB = 2**30
GB = 1e9  # rates are in GB/s (decimal), as NVIDIA, PCIe and NCCL quote them
TFLOP = 1e12


def transfer_s(gib: float, gbps: float) -> float:
    """Seconds to move `gib` GiB at `gbps` GB/s (decimal gigabytes per second)."""
    return gib * GIB / (gbps * GB)


def to_gib(n_bytes: float) -> float:
    """Bytes -> GiB (binary)."""
    return n_bytes / GIB


def from_gib(gib: float) -> float:
    """GiB (binary) -> bytes."""
    return gib * GIB


# A duration in a sentence: seconds (one decimal) below two minutes, then minutes and seconds, then hours and
# minutes (a 361-frame job runs for half an hour).
MINUTES_FROM_S = 120


def fmt_seconds(value: float | None) -> str:
    """'55.0 s', '6m12s', '1h03m'; '-' for no value."""
    if value is None:
        return "-"
    if value < MINUTES_FROM_S:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
