"""Generic fitting: bounded least squares on physics-shaped features, scored leave-one-size-out.

The only module of wanfit that imports scikit-learn (and numpy for the fits), and only inside `_solve`: the
stage modules hold both their fits and their predictions, and `wanfit plan` imports them without paying for
(or needing) either library.
Each model is a non-negative least-squares fit (LinearRegression(positive=True)) with physical lower bounds:
a cost cannot be negative, and matmul / attention work cannot run faster than the ceiling measured on this
GPU (coefficient >= 1). Its error is measured leave-one-group-out, a group being every measurement of one
workload size (a repeat of the same size under another plan never leaks into its own score). Training error
is never reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wanfit.model.calibration import HeldOutError, LinearModel

Group = tuple
# Weight of the pull toward "matmul and attention run at the measured ceiling" (see _solve): one hundredth of
# a data row, enough to choose among collinear solutions, too weak to move a fit the data determine.
PRIOR_STRENGTH = 0.01
FIXED_PRIOR_STRENGTH = 1e3  # a counted term: held at its lower bound whatever the data
# Below this a measured value counts as zero: no relative weight, no percentage error of it.
TINY = 1e-9
SCALE_FLOOR = 1e-12  # a feature that is zero at every point keeps a finite prior row


@dataclass(frozen=True)
class Row:
    x: dict[str, float]
    y: float
    group: Group
    ref: float | None = None  # what a held-out % is of (the whole step for a knob's extra); default y


# ---- generic fitting -------------------------------------------------------------------------


def median_or(values: Iterable[float | None], default: float) -> float:
    """The median of the values given (None left out), or `default` when there is none."""
    import statistics  # the fit side only, like numpy below: `plan` imports this module and never needs it

    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else default


def _solve(rows: list[Row], features: list[str], intercept: bool, lower: list[float],
           relative: bool, prior: dict[str, float] | None = None) -> tuple[list[float], float]:
    """Bounded least squares. `prior` adds, per feature, a weak pull of its coefficient toward its
    lower bound (weight relative to one data row): where features are collinear in the data (a
    single model's matmul and elementwise work both grow with tokens), it picks the physical
    solution (kernels at their measured ceilings) instead of an arbitrary one."""
    import numpy as np  # the fit side only (see the module docstring)
    from sklearn.linear_model import LinearRegression

    cols = [[r.x[f] for f in features] for r in rows]
    lb = list(lower)
    if intercept:
        for c in cols:
            c.append(1.0)
        lb.append(0.0)
    X = np.array(cols, dtype=float).reshape(len(rows), len(lb))
    y = np.array([r.y for r in rows], dtype=float)
    lbv = np.array(lb, dtype=float)
    target = y - X @ lbv
    if relative:
        weight = 1.0 / np.maximum(np.abs(y), TINY)
        X, target = X * weight[:, None], target * weight
    if X.shape[1] == 0:
        return [], 0.0
    if prior:
        scale = np.sqrt(np.mean(X**2, axis=0)) + SCALE_FLOOR
        extra = np.zeros((len(prior), X.shape[1]))
        for i, (name, strength) in enumerate(prior.items()):
            j = features.index(name)
            extra[i, j] = strength * scale[j]
        X = np.vstack([X, extra])
        target = np.concatenate([target, np.zeros(len(prior))])
    reg = LinearRegression(positive=True, fit_intercept=False).fit(X, target)
    coef = (np.asarray(reg.coef_, dtype=float) + lbv).tolist()
    return (coef[:-1], coef[-1]) if intercept else (coef, 0.0)


def _held_out(rows: list[Row], fit: Callable[[list[Row]], Callable[[dict], float]], unit: str,
              method: str) -> HeldOutError | None:
    groups = sorted({r.group for r in rows}, key=repr)
    if len(groups) < 2:
        return None
    abs_err, pct_err = [], []
    for g in groups:
        train = [r for r in rows if r.group != g]
        predictor = fit(train)
        for r in rows:
            if r.group != g:
                continue
            e = abs(predictor(r.x) - r.y)
            abs_err.append(e)
            ref = abs(r.ref if r.ref is not None else r.y)
            if ref > TINY:
                pct_err.append(100.0 * e / ref)
    return HeldOutError(method=f"{method}, {len(groups)} folds", folds=len(groups),
                        mean_abs_pct=sum(pct_err) / len(pct_err) if pct_err else 0.0,
                        worst_abs_pct=max(pct_err) if pct_err else 0.0,
                        mean_abs=sum(abs_err) / len(abs_err), worst_abs=max(abs_err), unit=unit)


def fit_linear(rows: list[Row], features: list[str], *, target: str, unit: str, intercept: bool = True,
               lower: list[float] | None = None, relative: bool = False, held_out: bool = True,
               prior: dict[str, float] | None = None) -> LinearModel | None:
    """Bounded least squares of y on `features` (+ a non-negative intercept). None without rows."""
    if not rows:
        return None
    lower = list(lower) if lower is not None else [0.0] * len(features)

    def fit(train: list[Row]) -> Callable[[dict], float]:
        coef, b = _solve(train, features, intercept, lower, relative, prior)
        return lambda x: b + sum(c * x[f] for f, c in zip(features, coef, strict=True))

    coef, b = _solve(rows, features, intercept, lower, relative, prior)
    ranges = {f: (min(r.x[f] for r in rows), max(r.x[f] for r in rows)) for f in features}
    ho = _held_out(rows, fit, unit, "leave-one-group-out (group = workload size)") if held_out else None
    return LinearModel(target=target, unit=unit, features=features, coefficients=[float(c) for c in coef],
                       intercept=float(b), lower_bounds=lower, training_range=ranges, n_points=len(rows),
                       held_out=ho)


def fit_constant(rows: list[Row], *, target: str, unit: str, held_out: bool = True) -> LinearModel | None:
    """The median of y (robust to one slow outlier), held out like any other fit."""
    if not rows:
        return None

    def fit(train: list[Row]) -> Callable[[dict], float]:
        value = median_or((r.y for r in train), 0.0)
        return lambda x: value

    ho = _held_out(rows, fit, unit, "leave-one-group-out (group = workload size), median") if held_out else None
    return LinearModel(target=target, unit=unit, features=[], coefficients=[],
                       intercept=median_or((r.y for r in rows), 0.0), n_points=len(rows), held_out=ho)
