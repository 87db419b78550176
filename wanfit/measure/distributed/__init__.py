"""Several GPUs for one video: the launcher (`launch`, torch-free: one process per rank, torchrun's
environment), the per-rank entry (`rank`: the process group, the runtime's real distributed path, its own
monitor and collective timers), the merge of the ranks' records into one Measurement (`merge`, pure), and what
each runtime's distributed path needs (`official`, `diffusers_cp`)."""
