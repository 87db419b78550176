"""Where wanfit finds its shipped data (GPU profiles, calibrations) and user calibrations.

Installed from a wheel, the data is inside the package (wanfit/data/...); from a source checkout
(editable install, tests) it is at the repository root. WANFIT_CALIBRATION_DIR adds a directory of
the user's own calibrations that takes precedence over the shipped ones.
"""

from __future__ import annotations

import os
from pathlib import Path

from wanfit.vocabulary.errors import WanfitError

# wanfit/vocabulary/paths.py: the package is one folder up (a wheel ships its data in wanfit/data/), the
# repository root two (a checkout keeps it in profiles/ and calibration/ there).
_PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def _shipped(name: str) -> Path:
    packaged = _PACKAGE_DATA / name
    return packaged if packaged.is_dir() else _REPO_ROOT / name


def profiles_dir() -> Path:
    """Directory of the GPU profile JSON files (one per GPU, file name = key)."""
    return _shipped("profiles")


def shipped_calibration_dir() -> Path:
    """Directory of the calibrations shipped with wanfit: <dir>/<gpu>/<model>.json."""
    return _shipped("calibration")


def calibration_dirs(extra: Path | None = None) -> list[Path]:
    """Calibration directories to search, most specific first."""
    dirs = []
    if extra is not None:
        dirs.append(_existing_dir(Path(extra), "--calibration-dir"))
    env = os.environ.get("WANFIT_CALIBRATION_DIR")
    if env:
        dirs.append(_existing_dir(Path(env), "WANFIT_CALIBRATION_DIR"))
    dirs.append(shipped_calibration_dir())
    return dirs


def _existing_dir(path: Path, given_as: str) -> Path:
    """A calibration directory the user named: a typo there would otherwise plan from the shipped
    calibrations without a word."""
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise WanfitError(f"{given_as} {path} {what}: point it at a directory of <gpu>/<model>.json "
                          f"calibrations (`wanfit calibrate --out DIR` writes one)")
    return path
