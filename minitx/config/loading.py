"""Loading a config: YAML and `--set` overrides → validated, frozen dataclasses (minitx/config/schema.py).

Errors are collected, not raised one at a time, so a user sees every problem in their file at once,
each with the nearest valid key when a name is misspelt.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from minitx.config.checks import cross_field_errors
from minitx.config.schema import Config
from minitx.errors import UserError

# --- loading ----------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file, apply `key.sub=value` overrides, validate; raise UserError listing all problems."""
    raw = read_config_file(path)
    return config_from_dict(apply_overrides(raw, overrides), source=str(path))


def read_config_file(path: str | Path) -> dict:
    """A config file's mapping as written, before overrides and validation."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: {problem}{where}; fix the YAML syntax there") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: the top level must be a mapping of sections (task, data, model, …)"
        )
    return raw


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `train.lr=3e-4` style overrides (values parsed as YAML) to a nested dict copy."""
    raw = _deep_copy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE (e.g. train.lr=3e-4), got '{item}'")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = parsed
    return raw


def config_from_dict(raw: dict, source: str = "config") -> Config:
    errors: list[str] = []
    config = _build(Config, raw, "", errors)
    # Invalid values were replaced by defaults above, so the cross-field checks are safe to run.
    errors.extend(cross_field_errors(config))
    if errors:
        detail = "; ".join(errors).replace("\n", "\\n")  # keep the error on one line
        raise UserError(f"{source}: {len(errors)} problem(s): {detail}")
    return config


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Config, path: Path) -> None:
    """Write the config whole or not at all (a temporary file renamed over the old one)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    """Build dataclass `cls` from `raw`, appending every problem found to `errors`."""
    where = prefix.rstrip(".") or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where} must be a mapping of keys, got {type(raw).__name__} {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            errors.append(
                f"unknown key '{prefix}{key}'{_nearest_key_hint(str(key), prefix, fields)}"
            )
            continue
        hint_type = hints[key]
        if dataclasses.is_dataclass(hint_type):
            values[key] = _build(hint_type, value, f"{prefix}{key}.", errors)
            continue
        item_type = _dataclass_items(hint_type)
        if item_type:
            if not isinstance(value, list):
                errors.append(f"{prefix}{key}: expected a list of mappings, got {value!r}")
                continue
            values[key] = [
                _build(item_type, item, f"{prefix}{key}[{i}].", errors)
                for i, item in enumerate(value)
            ]
            continue
        if isinstance(value, str) and float in _flat_types(hint_type) and _FLOAT.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 2e-3 (no dot) as a string
        problem = _type_problem(value, hint_type)
        if problem:
            errors.append(f"{prefix}{key}: {problem}")
            continue
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and float in _flat_types(hint_type)
        ):
            value = float(value) if int not in _flat_types(hint_type) else value
        range_problem = _range_problem(value, fields[key].metadata)
        if range_problem:
            errors.append(f"{prefix}{key}: {range_problem}")
            continue
        values[key] = value
    return cls(**values)


def _dataclass_items(hint: Any) -> type | None:
    """The item type of a list-of-sections key (data.train_corpora), else None."""
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        if dataclasses.is_dataclass(inner):
            return inner
    return None


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _nearest_key_hint(key: str, prefix: str, fields: dict) -> str:
    """'; did you mean …?' from this section first, then from every key of the config."""
    everywhere = {dotted.rsplit(".", 1)[-1]: dotted for dotted, _, _ in describe_keys()}
    if key in everywhere:  # the right name in the wrong section
        return f"; did you mean '{everywhere[key]}'?"
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    close = difflib.get_close_matches(key, list(everywhere), n=1, cutoff=0.75)
    if close:
        return f"; did you mean '{everywhere[close[0]]}'?"
    return f"; valid keys here: {', '.join(fields)}"


def _flat_types(hint: Any) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the annotation `hint`, or None if it does."""
    options = _flat_types(hint)
    if value is None:
        return None if type(None) in options else "must not be empty (null)"
    for option in options:
        if _fits(value, option):
            return None
    return f"expected {_describe(hint)}, got {value!r}"


def _fits(value: Any, option: Any) -> bool:
    origin = typing.get_origin(option)
    if origin is Literal:
        return value in typing.get_args(option)
    if origin is list:
        (inner,) = typing.get_args(option)
        return isinstance(value, list) and all(_fits(v, inner) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(option)
        return isinstance(value, dict) and all(
            _fits(k, key_type) and _fits(v, value_type) for k, v in value.items()
        )
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is type(None):
        return value is None
    return isinstance(value, option)


def _describe(hint: Any) -> str:
    names = []
    for option in _flat_types(hint):
        origin = typing.get_origin(option)
        if origin is Literal:
            names.append("one of " + ", ".join(repr(a) for a in typing.get_args(option)))
        elif origin is list:
            names.append(f"a list of {_describe(typing.get_args(option)[0])}")
        elif origin is dict:
            names.append("a mapping")
        elif option is type(None):
            names.append("null")
        else:
            names.append(
                {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[
                    option
                ]
            )
    return " or ".join(names)


def _range_problem(value: Any, metadata: Any) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if "min" in metadata and value < metadata["min"]:
        return f"must be at least {metadata['min']}, got {value}"
    if "above" in metadata and value <= metadata["above"]:
        return f"must be above {metadata['above']}, got {value}"
    if "max" in metadata and value > metadata["max"]:
        return f"must be at most {metadata['max']}, got {value}"
    return None


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every config key, in declaration order (docs/config.md)."""
    rows = []
    for section in dataclasses.fields(Config):
        if dataclasses.is_dataclass(section.default_factory):  # type: ignore[arg-type]
            rows += _describe_fields(section.default_factory, f"{section.name}.")  # type: ignore[arg-type]
        else:
            rows.append((section.name, yaml_scalar(section.default), section.metadata["help"]))
    return rows


def _describe_fields(cls: type, prefix: str) -> list[tuple[str, str, str]]:
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append((f"{prefix}{f.name}", yaml_scalar(default), f.metadata["help"]))
        item_type = _dataclass_items(hints[f.name])
        if item_type:  # each item's keys, as data.train_corpora[].path
            rows += _describe_fields(item_type, f"{prefix}{f.name}[].")
    return rows


def yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False)
    return text.strip().removesuffix("...").strip()
