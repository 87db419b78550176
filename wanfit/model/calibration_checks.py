"""What a calibration file must hold before `plan` trusts it: finite numbers, fitted models of the right
shape, the models every prediction reads, figures physics allows, and content that matches its path.

A file that fails is refused (calibration.load_calibration turns the reason into one line naming the
file and the refit to run): a NaN coefficient or a negative step cost would otherwise reach the table
as a step of -176 s or a plan that "fits" with no time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanfit.model.stages.denoise import ACTIVATION, STEP
from wanfit.vocabulary.workload import RUNTIMES

if TYPE_CHECKING:
    from wanfit.model.calibration import Calibration

# Every prediction reads these: the steady step (time) and the DiT's activations (the usual peak).
REQUIRED_MODELS = (STEP, ACTIVATION)
# Bounded least squares returns coefficients at or above their bounds; a solver's rounding sits within this.
BOUND_SLACK = 1e-9


def path_identity(path: Path) -> tuple[str, str, str]:
    """(gpu, model, runtime) a calibration file's place names: <gpu>/<model>.json is diffusers,
    <gpu>/<runtime>/<model>.json another runtime."""
    p = Path(path)
    if p.parent.name in RUNTIMES and p.parent.name != "diffusers":
        return p.parent.parent.name, p.stem, p.parent.name
    return p.parent.name, p.stem, "diffusers"


def first_non_finite(data: Any, where: str = "") -> str | None:
    """Where the first NaN or infinity sits in parsed JSON (Python's json reads NaN and Infinity), or None."""
    if isinstance(data, float):
        return None if math.isfinite(data) else f"{where or 'value'} is {data}"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def calibration_problem(cal: Calibration, path: Path) -> str | None:
    """What is wrong with a parsed calibration read from `path`, in a few words; None when it is usable."""
    gpu, model, runtime = path_identity(path)
    for field, expected in (("gpu", gpu), ("model", model), ("runtime", runtime)):
        if getattr(cal, field) != expected:
            return f"its {field} is '{getattr(cal, field)}' but its path says '{expected}'"
    missing = [name for name in REQUIRED_MODELS if name not in cal.models]
    if missing:
        return f"fitted model(s) {', '.join(missing)} missing"
    for name, m in cal.models.items():
        if len(m.coefficients) != len(m.features):
            return f"model {name} has {len(m.coefficients)} coefficients for {len(m.features)} features"
        if m.lower_bounds and len(m.lower_bounds) != len(m.features):
            return f"model {name} has {len(m.lower_bounds)} lower bounds for {len(m.features)} features"
        below = [f for f, c, lo in zip(m.features, m.coefficients, m.lower_bounds, strict=False)
                 if c < lo - BOUND_SLACK]
        if below:
            return f"model {name}'s coefficient of {below[0]} is below its physical bound"
    for component, variants in cal.weights_gib.items():
        for variant, w in variants.items():
            if w.gib <= 0:
                return f"weights of {component} ({variant}) are {w.gib:g} GiB, not > 0"
    for field in ("idle_gib", "context_gib", "non_torch_gib", "fragmentation_margin_gib", "gpu_minutes"):
        if getattr(cal, field) < 0:
            return f"{field} is {getattr(cal, field):g}, not >= 0"
    return None
