"""Class labels: their names (from a ClassLabel feature or the training split) and label → index.

Names are strings, so predictions print `positive`, not `1`, whatever type the data stores; a
whole-number float label (Parquet columns with gaps hold 1.0) is the integer's name ("1"). Rows
whose label is missing (null, empty, NaN, or negative such as the -1 of unlabelled GLUE test
splits), or unknown to the run's label set, are counted and skipped, never fed to the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from minitx.data.sources import column
from minitx.errors import UserError

if TYPE_CHECKING:
    import datasets


def row_labels(dataset: datasets.Dataset) -> list[str | None]:
    """Each row's label as a name; None where it is missing (null, empty, or ClassLabel's -1)."""
    from datasets import ClassLabel

    feature = dataset.features["label"]
    values = column(dataset, "label")
    if isinstance(feature, ClassLabel):
        return [feature.names[v] if v is not None and v >= 0 else None for v in values]
    return [_label_name(v) for v in values]


def _label_name(value) -> str | None:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    name = "" if value is None else str(value).strip()
    if not name or (_is_integer(name) and int(name) < 0):
        return None
    return name


def label_names(dataset: datasets.Dataset) -> list[str]:
    """The ClassLabel's names, else the sorted distinct labels (numerically when all are integers)."""
    from datasets import ClassLabel

    feature = dataset.features["label"]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    names = sorted({label for label in row_labels(dataset) if label is not None})
    if all(_is_integer(name) for name in names):
        names.sort(key=int)
    if len(names) < 2:
        raise UserError(
            f"the training split has {len(names)} distinct label(s) ({names}); a classifier needs "
            "at least 2: check data.label"
        )
    return names


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def save_label_names(names: list[str], path: Path) -> None:
    path.write_text(json.dumps(names, ensure_ascii=False) + "\n", "utf-8")


def load_label_names(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path.parent} has no {path.name}; is it a classification run directory?")
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path} is damaged: it must be a JSON list of label names")
    return names
