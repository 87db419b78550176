"""Units used everywhere in wanfit: memory in GiB (2**30 bytes), time in seconds."""

GIB = 2**30


def to_gib(n_bytes: float) -> float:
    """Bytes -> GiB (binary)."""
    return n_bytes / GIB


def from_gib(gib: float) -> float:
    """GiB (binary) -> bytes."""
    return gib * GIB
