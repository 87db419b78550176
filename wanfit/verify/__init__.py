"""`wanfit verify`: run a workload + plan for real, put the measurement beside the prediction, report.

compare.py is pure (the cap arithmetic it reads is wanfit.measure.cap's); report.py holds the report's
content, its views are wanfit.views.verify_report; run.py starts the measuring side inside `run_verify`.
"""

from wanfit.verify.compare import Comparison, StageComparison, Tolerances, compare, exit_code

__all__ = ["Comparison", "StageComparison", "Tolerances", "compare", "exit_code"]
