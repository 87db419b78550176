"""The listing commands' tables (`wanfit gpus`, `wanfit models`): flat rows as rich tables, and the
model catalog's rows with the calibrations on disk for each model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

GROUPED_DIGITS_FROM = 10_000  # integers from here on are printed with thousands separators (parameter counts)


def rows_table(rows: Sequence[Mapping[str, Any]], title: str) -> Table:
    """A plain table from a list of flat dicts (column order = first row's keys); numeric columns right-aligned."""
    table = Table(title=Text(title), title_justify="left")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    right = {col for col in columns
             if all(isinstance(row.get(col), int | float | None) and not isinstance(row.get(col), bool) for row in rows)}
    for i, col in enumerate(columns):  # the first column names the row: never cut
        table.add_column(Text(col), justify="right" if col in right else "left", no_wrap=i == 0,
                         min_width=max(len(_cell(row.get(col))) for row in rows) if i == 0 and rows else None)
    for row in rows:
        table.add_row(*_plain(*[_cell(row.get(col)) for col in columns]))
    return table


def columns_that_fit(rows: Sequence[Mapping[str, Any]], width: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows cut to the leading columns a `width`-wide terminal shows whole (a cell's text, its padding and
    border: 3 characters a column; the first column always kept), and the names of the columns left out."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    used, kept = 1, []
    for col in columns:
        need = max(len(col), *(len(_cell(row.get(col))) for row in rows)) + 3
        if kept and used + need > width:
            break
        kept.append(col)
        used += need
    return [{k: row.get(k) for k in kept} for row in rows], columns[len(kept):]


def _plain(*cells: str) -> list[Text]:
    """Cells as Text: a plain str in a rich Table is parsed as markup, and '[...]' in data would break it."""
    return [Text(c) for c in cells]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) >= GROUPED_DIGITS_FROM:
        return f"{value:,}"  # parameter counts
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "-"
    return str(value)


def calibrations_on_disk(model: str, calibration_dir=None) -> list[str]:
    """Calibration files usable for `model`, as '<gpu>/<calibrated model>': its own and those of models
    with the same DiT (e.g. wan2.1-t2v-14b's covers the Wan2.2 A14B experts). User directories first.
    A file that does not load (corrupt, implausible) is not usable: `plan` would refuse it."""
    from wanfit.model.calibration import load_calibration
    from wanfit.vocabulary.catalog import MODELS
    from wanfit.vocabulary.errors import WanfitError
    from wanfit.vocabulary.paths import calibration_dirs

    family = MODELS[model].dit_family
    found: list[str] = []
    for directory in calibration_dirs(calibration_dir):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*/*.json")):
            other = MODELS.get(path.stem)
            label = f"{path.parent.name}/{path.stem}"
            if other is None or other.dit_family != family or label in found:
                continue
            try:
                load_calibration(path)
            except WanfitError:
                continue
            found.append(label)
    return found


def model_rows(calibration_dir=None) -> list[dict[str, Any]]:
    """One flat row per catalog model (also the `wanfit models --format json` output)."""
    from wanfit.vocabulary.catalog import MODELS

    rows = []
    for spec in MODELS.values():
        d = spec.defaults
        rows.append({
            "key": spec.key,
            "dit_params": spec.params.dit_per_expert,
            "experts": spec.experts,
            "vae": f"{'2.2' if spec.vae_spatial == 16 else '2.1'} (x{spec.vae_spatial}, z={spec.vae['z_dim']})",
            "size": f"{d.width}x{d.height}",
            "frames": d.frames,
            "steps": d.steps,
            "stride": spec.spatial_stride,
            "dit_family": spec.dit_family,
            "calibrations": calibrations_on_disk(spec.key, calibration_dir),
        })
    return rows
