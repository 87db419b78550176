"""The text encoder's cache that the official code's `--offload_model` strands under its DiT.

With T5 on the GPU and `--offload_model`, the official pipelines send T5 down after encoding
(`text_encoder.model.cpu()`) without emptying torch's cache, then move a DiT up parameter by parameter.
torch's caching allocator places each parameter in the smallest cached free block that holds it (best
fit) and splits the block: a 50 MiB attention weight of a 14B expert lands in one of T5's 80 MiB FFN
blocks and leaves 30 MiB behind. Those remainders are reserved but too small for the DiT's weights and
its activations, and `torch.cuda.empty_cache()` cannot return them (their segments hold DiT weights):
the step's reservation sits that much above allocated, and the allocator cannot use it for the step's
buffers either. Measured on an H100: the A14B's first step 6.0 GiB above allocated under
`--offload_model` against 1.1 GiB without; the 5B's 2.9 against 1.3 GiB.

This module replays the allocator over the parameter sizes of the official T5 and DiT modules (from the
catalog's architecture dims, in the order `Module.to()` moves them) and returns the stranded bytes per
pipeline: WanT2V (text2video.py) empties no cache between the two moves, so every free block of T5's
segments stays reserved (the replay: 5.15 GiB for the A14B); WanTI2V (textimage2video.py) calls
`torch.cuda.empty_cache()` after moving its DiT up, which returns the T5 segments the DiT left whole
(1.66 GiB stay for the 5B); WanI2V (image2video.py) empties it before the DiT moves, so nothing strands.
The allocator's rules (CUDACachingAllocator.cpp): requests rounded to 512 bytes; requests of 1 MiB or less
use the small pool (ignored here: a few MiB); a new segment is 20 MiB for requests under 10 MiB, else the
request rounded up to 2 MiB; a large-pool block is split when more than 1 MiB would remain.
"""

from __future__ import annotations

import bisect
from functools import cache

from wanfit.model.official_params import umt5_encoder_param_bytes, wan_dit_param_bytes
from wanfit.vocabulary.catalog import OFFICIAL_TASKS, get_model
from wanfit.vocabulary.units import GIB

MIB = 2**20
SMALL_REQUEST = MIB  # kSmallSize: requests up to this go to the small pool
MIN_LARGE_ALLOC = 10 * MIB  # kMinLargeAlloc: below it a request gets a shared kLargeBuffer segment
LARGE_BUFFER = 20 * MIB  # kLargeBuffer
ROUND_LARGE = 2 * MIB  # kRoundLarge

# The official pipelines' cache handling between sending T5 down and moving the DiT up (see above).
EMPTIED_AFTER_DIT = {"ti2v-5B"}
EMPTIED_BEFORE_DIT = {"i2v-A14B"}


class CachingAllocator:
    """The large pool of torch's caching allocator: segments and their free blocks."""

    def __init__(self) -> None:
        self.segments: list[int] = []  # bytes of each segment, by index
        self.used: list[int] = []  # bytes allocated in each segment
        self.free: list[tuple[int, int, int]] = []  # (bytes, segment, offset), sorted: best fit = first fit

    def allocate(self, nbytes: int) -> None:
        size = -(-max(nbytes, 512) // 512) * 512
        if size <= SMALL_REQUEST:
            return
        i = bisect.bisect_left(self.free, (size, -1, -1))
        if i < len(self.free):
            block, segment, offset = self.free.pop(i)
        else:
            block = LARGE_BUFFER if size < MIN_LARGE_ALLOC else -(-size // ROUND_LARGE) * ROUND_LARGE
            segment, offset = len(self.segments), 0
            self.segments.append(block)
            self.used.append(0)
        self.used[segment] += size
        if block - size > SMALL_REQUEST:
            bisect.insort(self.free, (block - size, segment, offset + size))
        else:
            self.used[segment] += block - size  # the remainder stays with the allocation

    def free_everything(self) -> None:
        """Every allocation freed (a model sent to the host): each segment one free block again."""
        self.used = [0] * len(self.segments)
        self.free = sorted((size, i, 0) for i, size in enumerate(self.segments))

    def free_bytes(self, only_used_segments: bool = False) -> int:
        """Reserved but unallocated bytes; with `only_used_segments`, those that torch.cuda.empty_cache()
        keeps (it releases only segments with nothing allocated)."""
        return sum(size for size, segment, _ in self.free if not only_used_segments or self.used[segment] > 0)


@cache
def stranded_gib(model_key: str, dit_bytes_per_param: int = 2) -> float:
    """GiB of T5's cache left reserved and unusable under the official pipeline's DiT (bf16, or fp32 with 4 bytes a
    parameter) after `--offload_model` sends T5 down with T5 computed on the GPU (see the module docstring); 0 for a
    model the official code does not run or whose pipeline empties the cache before its DiT moves up."""
    task = OFFICIAL_TASKS.get(model_key)
    if task is None or task in EMPTIED_BEFORE_DIT:
        return 0.0
    spec = get_model(model_key)
    allocator = CachingAllocator()
    for nbytes in umt5_encoder_param_bytes(spec.text_encoder):
        allocator.allocate(nbytes)
    allocator.free_everything()
    for nbytes in wan_dit_param_bytes(spec.transformer, dit_bytes_per_param):
        allocator.allocate(nbytes)
    return allocator.free_bytes(only_used_segments=task in EMPTIED_AFTER_DIT) / GIB
