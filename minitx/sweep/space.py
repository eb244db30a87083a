"""The search space of a sweep: config keys with ranges or choices, read from YAML and checked
against the config schema before any trial runs.

    model.dropout: [0.1, 0.4]                         # a number between the two (uniform)
    train.warmup_steps: [200, 2000]                   # an integer key: an integer between
    train.lr: {log: [1.0e-4, 3.0e-3]}                 # between the two, uniform in log space
    tokenizer.vocab_size: {choice: [4000, 8000, 16000]}

Every bound and choice is applied to the base config and validated as `--set` would be, so a value
the config refuses (out of a key's range, not one of its allowed words) stops the sweep at once.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from minitx.config import Config, apply_overrides, config_from_dict, yaml_scalar
from minitx.errors import UserError


@dataclass(frozen=True)
class Parameter:
    """One searched key: a range ("range", uniform; "log", uniform in log space) or a "choice"."""

    key: str
    kind: str
    values: tuple  # (low, high) for ranges, the choices for "choice"
    integer: bool = False  # a range of an integer key

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        low, high = self.values
        log = self.kind == "log"
        if self.integer:
            return trial.suggest_int(self.key, low, high, log=log)
        return trial.suggest_float(self.key, float(low), float(high), log=log)


def load_space(path: Path, base: dict) -> list[Parameter]:
    """The parameters of a space file, each checked against the base config (a raw dict)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"space file {path} not found") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: a space maps config keys to ranges or choices, e.g. {_EXAMPLE}")
    return [_parameter(str(key), value, base, path) for key, value in raw.items()]


_EXAMPLE = "'train.lr: {log: [1.0e-4, 3.0e-3]}'"


def _parameter(key: str, spec: Any, base: dict, path: Path) -> Parameter:
    hint = _key_type(key, path)
    kind, values = _kind_and_values(key, spec, path)
    numeric = int in _types(hint) or float in _types(hint)
    if kind != "choice":
        if not numeric:
            raise UserError(f"{path}: {key} takes no range; give {{choice: [...]}} instead")
        if not all(_is_number(v) for v in values):
            raise UserError(f"{path}: {key}: a range is two numbers, got {list(values)}")
        if float not in _types(hint) and not all(isinstance(v, int) for v in values):
            raise UserError(f"{path}: {key} is an integer key; its range needs integers")
        if values[0] >= values[1]:
            raise UserError(f"{path}: {key}: the range [{values[0]}, {values[1]}] is empty")
        if kind == "log" and values[0] <= 0:
            raise UserError(f"{path}: {key}: a log range needs numbers above 0")
    for value in values:  # the config's own checks: types, bounds, allowed words
        try:
            config_from_dict(apply_overrides(base, overrides({key: value})))
        except UserError as exc:
            raise UserError(f"{path}: {key}: the value {value!r} is refused: {exc}") from None
    return Parameter(key, kind, values, integer=kind != "choice" and float not in _types(hint))


def _kind_and_values(key: str, spec: Any, path: Path) -> tuple[str, tuple]:
    if isinstance(spec, list):
        kind, values = "range", spec
    elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("log", "choice"):
        kind, values = next(iter(spec.items()))
    else:
        raise UserError(
            f"{path}: {key}: expected [LOW, HIGH], {{log: [LOW, HIGH]}} or {{choice: [...]}}, "
            f"got {spec!r}"
        )
    if not isinstance(values, list) or not values:
        raise UserError(f"{path}: {key}: expected a non-empty list, got {values!r}")
    if kind != "choice" and len(values) != 2:
        raise UserError(f"{path}: {key}: a range is [LOW, HIGH], got {values!r}")
    if kind == "choice" and len(set(map(repr, values))) != len(values):
        raise UserError(f"{path}: {key}: a choice lists each value once, got {values!r}")
    return kind, tuple(values)


def _key_type(key: str, path: Path) -> Any:
    """The annotation of a dotted config key, or one line saying it does not exist."""
    node: Any = Config
    for part in key.split("."):
        fields = (
            {f.name for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else ()
        )
        if part not in fields:
            raise UserError(f"{path}: unknown config key '{key}' (docs/config.md lists them)")
        node = typing.get_type_hints(node)[part]
    if dataclasses.is_dataclass(node):
        raise UserError(f"{path}: '{key}' is a section; name one of its keys")
    return node


def _types(hint: Any) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) is not None else (hint,)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def overrides(params: dict[str, Any]) -> list[str]:
    """A trial's parameter values as `--set KEY=VALUE` overrides (values written as YAML)."""
    return [f"{key}={yaml_scalar(value)}" for key, value in params.items()]
