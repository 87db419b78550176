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
