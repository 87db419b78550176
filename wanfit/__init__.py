"""wanfit: memory-fit planner and offload advisor for Wan video generation models."""

__version__ = "0.1.0"
