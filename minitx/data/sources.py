"""Where the text comes from: a Hub dataset, a local directory or the synthetic task → a `datasets.Dataset`.

Every source ends as a Dataset with two string columns, `src` and `tgt`, so the rest of minitx never
asks where the data came from. Local layouts, looked up per split name `NAME` in `data.path`:

- parallel text, one sentence per line: `NAME.{src}` and `NAME.{tgt}`, optionally gzipped (`.gz`);
- one table per split: `NAME.csv`, `NAME.tsv`, `NAME.jsonl` / `NAME.json`, `NAME.parquet`, with
  columns `{src}` and `{tgt}`, or a WMT-style `translation` column of {lang: text} dicts.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import datasets

from minitx.data.synthetic import number_pairs
from minitx.errors import UserError
from minitx.progress import info

SYNTHETIC = "synthetic"
TABLE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}

datasets.disable_progress_bars()


def split_name(splits: dict[str, str], split: str) -> str:
    """The data's own name for `split`: a role (train/validation/test) or already a data split name."""
    return splits.get(split, split)


def load_pairs(
    path: str,
    src: str,
    tgt: str,
    split: str,
    name: str | None = None,
    synthetic_size: int = 0,
    seed: int = 0,
) -> datasets.Dataset:
    """Load one split as a Dataset with `src` and `tgt` string columns, empty pairs removed."""
    local = Path(path).expanduser()
    if path == SYNTHETIC:
        pairs = number_pairs(synthetic_size, seed)
        if split not in pairs:
            raise UserError(f"the synthetic task has splits train, validation, test; not '{split}'")
        dataset = datasets.Dataset.from_dict(pairs[split])
    elif local.is_dir():
        dataset = _load_local(local, src, tgt, split)
    elif local.exists():
        raise UserError(
            f"data.path must be a directory of split files or a Hub id, got file {path}"
        )
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise UserError(f"data directory not found: {path}; set data.path to where the files are")
    else:
        dataset = _load_hub(path, name, src, tgt, split)
    return _drop_empty(dataset, split)


def _load_local(directory: Path, src: str, tgt: str, split: str) -> datasets.Dataset:
    src_file = _first_existing(directory, [f"{split}.{src}", f"{split}.{src}.gz"])
    tgt_file = _first_existing(directory, [f"{split}.{tgt}", f"{split}.{tgt}.gz"])
    if src_file and tgt_file:
        return _load_parallel_text(src_file, tgt_file)
    if src_file or tgt_file:
        found, missing = (src_file, tgt) if src_file else (tgt_file, src)
        raise UserError(
            f"found {found} but no {split}.{missing} or {split}.{missing}.gz in {directory}"
        )
    for suffix, builder in TABLE_BUILDERS.items():
        table = directory / f"{split}{suffix}"
        if table.is_file():
            options = {}
            if builder == "csv":  # cells are text: no NA guessing ("None", "n/a"), no "007" → 7
                options = {
                    "converters": {src: str, tgt: str},
                    "keep_default_na": False,
                    "na_filter": False,
                }
            if suffix == ".tsv":
                options.update(delimiter="\t", quoting=3)
            dataset = datasets.load_dataset(
                builder, data_files={split: str(table)}, split=split, **options
            )
            return _select_columns(dataset, src, tgt, f"{table}")
    available = sorted(
        {p.name.split(".")[0] for p in directory.iterdir() if not p.name.startswith(".")}
    )
    raise UserError(
        f"no split '{split}' in {directory} (expected {split}.{src}[.gz] + {split}.{tgt}[.gz] or "
        f"{split}.csv/.tsv/.jsonl/.parquet); splits found: {', '.join(available) or 'none'}; "
        "map split names with data.splits"
    )


def _first_existing(directory: Path, names: list[str]) -> Path | None:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _load_parallel_text(src_file: Path, tgt_file: Path) -> datasets.Dataset:
    src_lines, tgt_lines = _read_lines(src_file), _read_lines(tgt_file)
    if len(src_lines) != len(tgt_lines):
        raise UserError(
            f"parallel files differ in length: {src_file} has {len(src_lines)} lines, "
            f"{tgt_file} has {len(tgt_lines)}; they must align line by line"
        )
    return datasets.Dataset.from_dict({"src": src_lines, "tgt": tgt_lines})


def _load_hub(path: str, name: str | None, src: str, tgt: str, split: str) -> datasets.Dataset:
    try:
        dataset = datasets.load_dataset(path, name, split=split)
    except ValueError as exc:  # unknown split or config name
        raise UserError(f"cannot load split '{split}' of {path}: {exc}") from None
    except Exception as exc:  # network, missing dataset: the library raises many types
        raise UserError(
            f"'{path}' is no local directory, and loading it as a Hugging Face Hub id failed "
            f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}); "
            "check data.path, the dataset id or your network"
        ) from None
    return _select_columns(dataset, src, tgt, path)


def _select_columns(dataset: datasets.Dataset, src: str, tgt: str, where: str) -> datasets.Dataset:
    columns = dataset.column_names
    if src in columns and tgt in columns:
        dataset = dataset.select_columns([src, tgt])
        if (src, tgt) != ("src", "tgt"):
            dataset = dataset.rename_columns({src: "__src", tgt: "__tgt"})
            dataset = dataset.rename_columns({"__src": "src", "__tgt": "tgt"})
        return dataset.cast_column("src", datasets.Value("string")).cast_column(
            "tgt", datasets.Value("string")
        )
    if "translation" in columns:
        sample = dataset[0]["translation"] if len(dataset) else {}
        if src in sample and tgt in sample:
            return dataset.map(
                lambda batch: {
                    "src": [pair[src] for pair in batch["translation"]],
                    "tgt": [pair[tgt] for pair in batch["translation"]],
                },
                batched=True,
                remove_columns=columns,
            )
        raise UserError(
            f"{where}: the translation column has languages {sorted(sample)}, not {src} and {tgt}; "
            "set data.src and data.tgt"
        )
    missing = [c for c in (src, tgt) if c not in columns]
    raise UserError(
        f"{where}: no column {' or '.join(repr(c) for c in missing)}; columns are {columns}; "
        "set data.src and data.tgt"
    )


def _drop_empty(dataset: datasets.Dataset, split: str) -> datasets.Dataset:
    """Drop pairs where either side is empty or missing, and say how many."""
    before = len(dataset)
    dataset = dataset.filter(
        lambda batch: [
            bool(s and s.strip()) and bool(t and t.strip())
            for s, t in zip(batch["src"], batch["tgt"], strict=True)
        ],
        batched=True,
    )
    if len(dataset) == 0:
        raise UserError(f"split '{split}' has no non-empty sentence pairs")
    if len(dataset) < before:
        info(f"{split}: skipped {before - len(dataset)} pair(s) with an empty side")
    return dataset
