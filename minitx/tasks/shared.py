"""What several tasks do alike: find a split's columns, and reach the PyTorch model of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from minitx.config import DataConfig
from minitx.data.sources import split_name
from minitx.errors import UserError
from minitx.inference.engines import PyTorchEngine

if TYPE_CHECKING:
    from minitx.api import Model


def renamed_columns(data: DataConfig, split: str) -> tuple[str, dict[str, str]]:
    """The data's name of `split` (a role or a split name) and the column renames that apply."""
    name = split_name(data.splits, split)
    return name, {**data.rename_columns.get(split, {}), **data.rename_columns.get(name, {})}


def pytorch_model(model: Model, command: str, ensembles: bool = False) -> nn.Module:
    """The PyTorch network of a loaded run (an Ensemble where `ensembles` are welcome); an
    export, run by another engine, has none to give."""
    if model.members and not ensembles:
        raise UserError(f"`minitx {command}` looks at one run; an ensemble has several")
    if not isinstance(model.engine, PyTorchEngine):
        origin = model.run.export_info().get("run", "see export.json")
        raise UserError(
            f"{model.run} is an export; `minitx {command}` needs the run directory it came from "
            f"({origin})"
        )
    return model.engine.model
