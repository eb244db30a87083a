"""Where the text comes from: a Hub dataset, a local directory or the synthetic task → a `datasets.Dataset`.

Every source ends as a Dataset with fixed column names, so the rest of minitx never asks where the
data came from: `src` and `tgt` strings for translation; `text` (and `text_pair`) strings and a
`label` for classification. Local layouts, looked up per split name `NAME` in `data.path`:

- parallel text, one sentence per line: `NAME.{src}` and `NAME.{tgt}`, optionally gzipped (`.gz`);
- one table per split: `NAME.csv`, `NAME.tsv`, `NAME.jsonl` / `NAME.json`, `NAME.parquet`, with
  the configured columns, or (translation) a WMT-style `translation` column of {lang: text} dicts.

Columns can be renamed per split before they are looked up (`data.rename_columns`), for data whose
splits disagree, such as SST-2's `sentence` (train) and `content` (dev, test).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from minitx.config import DataConfig
from minitx.data.synthetic import number_pairs
from minitx.errors import UserError

# `datasets` (0.9 s to import) is imported where data is loaded, so that commands that only read
# a trained run (translate, serve, export) start without it.
if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)


def column(dataset: datasets.Dataset, name: str) -> list:
    """A whole column as a list, read from Arrow at once. Iterating `dataset[name]` (a lazy
    `Column` in datasets 4 and later) reads row by row: 10 times slower on Multi30k's 29,000 pairs."""
    return dataset[name][:]


SYNTHETIC = "synthetic"
TABLE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}


def split_name(splits: dict[str, str], split: str) -> str:
    """The data's own name for `split`: a role (train/validation/test) or already a data split name."""
    return splits.get(split, split)


def load_pairs(
    data: DataConfig, split: str, rename: dict[str, str] | None = None
) -> datasets.Dataset:
    """Load one split (the data's own name for it) as a Dataset with `src` and `tgt` string
    columns, empty pairs removed. `rename` renames the data's columns first."""
    import datasets

    if data.path == SYNTHETIC:
        pairs = number_pairs(data.synthetic_size, data.synthetic_seed)
        if split not in pairs:
            raise UserError(f"the synthetic task has splits train, validation, test; not '{split}'")
        dataset = datasets.Dataset.from_dict(pairs[split])
    else:
        columns = {"src": data.src, "tgt": data.tgt}
        dataset = _load(data.path, data.name, split, columns, rename or {})
    return _drop_empty(dataset, split, ["src", "tgt"], "sentence pairs")


def load_labelled_texts(
    data: DataConfig, split: str, rename: dict[str, str] | None = None
) -> datasets.Dataset:
    """Load one split as a Dataset with `text` (and `text_pair`) strings and a `label` column.

    Labels keep their type; a ClassLabel feature (names in the dataset's metadata) survives.
    Rows with an empty text are dropped and counted; missing labels are handled by data/labels.py.
    """
    columns = {"text": data.text, "label": data.label}
    if data.text_pair:
        columns["text_pair"] = data.text_pair
    dataset = _load(data.path, data.name, split, columns, rename or {})
    texts = [c for c in columns if c != "label"]
    return _drop_empty(dataset, split, texts, "rows")


def _load(
    path: str, name: str | None, split: str, columns: dict[str, str], rename: dict[str, str]
) -> datasets.Dataset:
    """A local directory or a Hub id → the split with `columns` ({minitx name: data column})."""
    local = Path(path).expanduser()
    if local.is_dir():
        dataset, where = _load_local(local, split, columns, rename)
    elif local.exists():
        raise UserError(
            f"data.path must be a directory of split files or a Hub id, got file {path}"
        )
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise UserError(f"data directory not found: {path}; set data.path to where the files are")
    else:
        dataset, where = _load_hub(path, name, split), path
    return _select_columns(_rename(dataset, rename, where, split), columns, where)


def _load_local(
    directory: Path, split: str, columns: dict[str, str], rename: dict[str, str]
) -> tuple[datasets.Dataset, str]:
    import datasets

    if set(columns) == {"src", "tgt"}:
        files = parallel_files(directory, split, columns["src"], columns["tgt"])
        if files:
            return _load_parallel_text(*files, columns["src"], columns["tgt"]), str(directory)
    for suffix, builder in TABLE_BUILDERS.items():
        table = directory / f"{split}{suffix}"
        if table.is_file():
            options = {}
            if builder == "csv":  # cells are text: no NA guessing ("None", "n/a"), no "007" → 7
                original = {new: old for old, new in rename.items()}
                as_text = {original.get(c, c): str for c in columns.values()}
                options = {"converters": as_text, "keep_default_na": False, "na_filter": False}
            if suffix == ".tsv":
                options.update(delimiter="\t", quoting=3)
            dataset = datasets.load_dataset(
                builder, data_files={split: str(table)}, split=split, **options
            )
            return dataset, str(table)
    available = sorted(
        {p.name.split(".")[0] for p in directory.iterdir() if not p.name.startswith(".")}
    )
    expected = f"{split}.csv/.tsv/.jsonl/.parquet"
    if set(columns) == {"src", "tgt"}:
        expected = f"{split}.{columns['src']}[.gz] + {split}.{columns['tgt']}[.gz] or " + expected
    raise UserError(
        f"no split '{split}' in {directory} (expected {expected}); splits found: "
        f"{', '.join(available) or 'none'}; map split names with data.splits"
    )


def parallel_files(directory: Path, split: str, src: str, tgt: str) -> tuple[Path, Path] | None:
    """`split.{src}` and `split.{tgt}` (each optionally gzipped) in `directory`; None when
    neither exists, an error when only one does."""
    src_file = _first_existing(directory, [f"{split}.{src}", f"{split}.{src}.gz"])
    tgt_file = _first_existing(directory, [f"{split}.{tgt}", f"{split}.{tgt}.gz"])
    if src_file and tgt_file:
        return src_file, tgt_file
    if src_file or tgt_file:
        found, missing = (src_file, tgt) if src_file else (tgt_file, src)
        raise UserError(
            f"found {found} but no {split}.{missing} or {split}.{missing}.gz in {directory}"
        )
    return None


def _first_existing(directory: Path, names: list[str]) -> Path | None:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def _opener(path: Path):
    return gzip.open if path.suffix == ".gz" else open


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (optionally gzipped), read as they are needed. Only "\n"
    ends a line (a stray "\r" inside a line must not shift a parallel corpus out of line)."""
    try:
        with _opener(path)(path, "rt", encoding="utf-8", newline="\n") as handle:
            for line in handle:
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def count_lines(path: Path) -> int:
    """Lines as `text_lines` reads them, counted in bytes without decoding."""
    count, last = 0, b"\n"
    try:
        with _opener(path)(path, "rb") as handle:
            while block := handle.read(1 << 20):
                count, last = count + block.count(b"\n"), block[-1:]
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return count + (last != b"\n")


def check_parallel(src_file: Path, tgt_file: Path) -> int:
    """The number of lines of two files that must align line by line."""
    src_count, tgt_count = count_lines(src_file), count_lines(tgt_file)
    if src_count != tgt_count:
        raise UserError(
            f"parallel files differ in length: {src_file} has {src_count} lines, "
            f"{tgt_file} has {tgt_count}; they must align line by line"
        )
    return src_count


def _load_parallel_text(src_file: Path, tgt_file: Path, src: str, tgt: str) -> datasets.Dataset:
    """Two aligned text files as columns named by their language suffixes."""
    import datasets

    check_parallel(src_file, tgt_file)
    return datasets.Dataset.from_dict(
        {src: list(text_lines(src_file)), tgt: list(text_lines(tgt_file))}
    )


def _load_hub(path: str, name: str | None, split: str) -> datasets.Dataset:
    import datasets

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
    return dataset


def _rename(
    dataset: datasets.Dataset, rename: dict[str, str], where: str, split: str
) -> datasets.Dataset:
    columns = dataset.column_names
    problem = None
    missing = [old for old in rename if old not in columns]
    renamed = [*rename.values(), *(c for c in columns if c not in rename)]
    if missing:
        problem = f"names column(s) {missing}"
    elif any(not new.strip() for new in rename.values()):
        problem = "gives an empty column name"
    elif len(set(renamed)) < len(renamed):
        problem = f"would give two columns one name ({rename} over {columns})"
    if problem:
        raise UserError(
            f"{where}: data.rename_columns for split '{split}' {problem}, "
            f"but the columns are {columns}"
        )
    return dataset.rename_columns(rename) if rename else dataset


def _select_columns(
    dataset: datasets.Dataset, columns: dict[str, str], where: str
) -> datasets.Dataset:
    """Keep the configured `columns` ({minitx name: data column}) under minitx's names."""
    import datasets

    present = dataset.column_names
    if all(column in present for column in columns.values()):
        dataset = dataset.select_columns(list(columns.values()))
        # Through temporary names, so that swaps (data.src: tgt) cannot collide; renaming keeps
        # the features, such as a label's ClassLabel names.
        dataset = dataset.rename_columns({old: f"__{new}" for new, old in columns.items()})
        dataset = dataset.rename_columns({f"__{new}": new for new in columns})
        for new in columns:
            if new != "label":
                dataset = dataset.cast_column(new, datasets.Value("string"))
        return dataset
    if set(columns) == {"src", "tgt"} and "translation" in present:
        return _from_translation_column(dataset, columns["src"], columns["tgt"], where)
    missing = [c for c in columns.values() if c not in present]
    keys = {old: f"data.{new}" for new, old in columns.items()}
    raise UserError(
        f"{where}: no column {' or '.join(repr(c) for c in missing)}; columns are {present}; "
        f"set {', '.join(keys[c] for c in missing)} or rename per split with data.rename_columns"
    )


def _from_translation_column(
    dataset: datasets.Dataset, src: str, tgt: str, where: str
) -> datasets.Dataset:
    sample = dataset[0]["translation"] if len(dataset) else {}
    if src in sample and tgt in sample:
        return dataset.map(
            lambda batch: {
                "src": [pair[src] for pair in batch["translation"]],
                "tgt": [pair[tgt] for pair in batch["translation"]],
            },
            batched=True,
            remove_columns=dataset.column_names,
        )
    raise UserError(
        f"{where}: the translation column has languages {sorted(sample)}, not {src} and {tgt}; "
        "set data.src and data.tgt"
    )


def _drop_empty(
    dataset: datasets.Dataset, split: str, columns: list[str], what: str
) -> datasets.Dataset:
    """Drop rows where any of the text `columns` is empty or missing, and say how many."""
    before = len(dataset)
    dataset = dataset.filter(
        lambda batch: [
            all(text and text.strip() for text in row)
            for row in zip(*(batch[c] for c in columns), strict=True)
        ],
        batched=True,
    )
    if len(dataset) == 0:
        raise UserError(f"split '{split}' has no non-empty {what}")
    if len(dataset) < before:
        log.info(f"{split}: skipped {before - len(dataset)} {what} with an empty text")
    return dataset
