"""`wanfit verify`: run a workload + plan for real, put the measurement beside the prediction, report.

compare.py and cap.py are pure; report.py imports matplotlib only inside `plot_memory`; run.py
imports torch (only to ask whether CUDA is there) and the measuring side inside `run_verify`.
"""

from wanfit.verify.compare import Comparison, StageComparison, Tolerances, compare, exit_code

__all__ = ["Comparison", "StageComparison", "Tolerances", "compare", "exit_code"]
