"""Checks of a config that involve more than one key (each key's own type and range are checked
as it is read, in loading.py). Each problem is one line naming the keys to fix."""

from __future__ import annotations

import re

from minitx.config.schema import SPECIAL_TOKENS, Config, parse_duration


def cross_field_errors(cfg: Config) -> list[str]:
    """Checks that involve more than one key."""
    errors = []
    if cfg.model.d_model % cfg.model.n_heads:
        errors.append(
            f"model.d_model ({cfg.model.d_model}) must be divisible by model.n_heads "
            f"({cfg.model.n_heads})"
        )
    if cfg.model.n_kv_heads and cfg.model.n_heads % cfg.model.n_kv_heads:
        errors.append(
            f"model.n_kv_heads ({cfg.model.n_kv_heads}) must divide model.n_heads "
            f"({cfg.model.n_heads})"
        )
    d_head = cfg.model.d_model // cfg.model.n_heads
    if cfg.model.positions == "rope" and d_head % 2:
        errors.append(
            f"model.positions: rope rotates pairs of features, and the head width "
            f"d_model/n_heads = {d_head} is odd"
        )
    known_splits = {"train", "validation", "test", *cfg.data.splits.values()}
    stray = sorted(set(cfg.data.rename_columns) - known_splits)
    if stray:
        errors.append(
            f"data.rename_columns has keys {stray} that are neither train/validation/test "
            f"nor a split named in data.splits ({sorted(set(cfg.data.splits.values()))})"
        )
    errors.extend(_corpus_errors(cfg))
    errors.extend(_pruning_errors(cfg))
    missing = {"train", "validation", "test"} - set(cfg.data.splits)
    if missing:
        errors.append(f"data.splits needs keys {sorted(missing)} (the names the data uses)")
    unknown = set(cfg.data.splits) - {"train", "validation", "test"}
    if unknown:
        errors.append(
            f"data.splits has unknown keys {sorted(unknown)}; use train, validation, test"
        )
    if len(cfg.train.betas) != 2 or not all(0 <= b < 1 for b in cfg.train.betas):
        errors.append(f"train.betas must be two numbers in [0, 1), got {cfg.train.betas}")
    errors.extend(_decode_errors(cfg))
    if cfg.train.init_from and cfg.tokenizer.path:
        errors.append(
            "train.init_from brings the earlier run's tokenizer; leave tokenizer.path unset"
        )
    average = cfg.train.average_last
    if average is not None and cfg.train.keep_last < average:
        errors.append(
            f"train.average_last ({average}) needs train.keep_last of at least {average} "
            f"(got {cfg.train.keep_last}) so that enough step_N checkpoints are kept"
        )
    if isinstance(cfg.train.max_time, str):
        try:
            parse_duration(cfg.train.max_time)
        except ValueError as exc:
            errors.append(f"train.max_time: {exc}")
    return errors


def _pruning_errors(cfg: Config) -> list[str]:
    model, errors = cfg.model, []
    layers = {
        "encoder_self": model.n_encoder_layers,
        "decoder_self": model.n_decoder_layers,
        "cross": model.n_decoder_layers,
    }
    if model.pruned_heads and model.n_kv_heads not in (None, model.n_heads):
        errors.append(
            "model.pruned_heads: heads that share keys and values (model.n_kv_heads) cannot "
            "be removed one at a time"
        )
    for key, heads in model.pruned_heads.items():
        kind, _, layer = key.partition(".")
        if kind not in layers or not layer.isdigit() or int(layer) >= layers[kind]:
            errors.append(
                f"model.pruned_heads: {key!r} is not KIND.LAYER with KIND one of "
                f"{', '.join(layers)} and a layer of the model"
            )
        elif not set(heads) < set(range(model.n_heads)):
            errors.append(
                f"model.pruned_heads.{key}: {heads} must be heads 0-{model.n_heads - 1}, "
                "leaving at least one"
            )
    return errors


def _corpus_errors(cfg: Config) -> list[str]:
    errors = []
    for index, corpus in enumerate(cfg.data.train_corpora):
        where = f"data.train_corpora[{index}]"
        if not corpus.path.strip():
            errors.append(f"{where}.path is missing: name a directory or a Hub dataset id")
        if corpus.tag is not None and (not corpus.tag or re.search(r"\s", corpus.tag)):
            errors.append(f"{where}.tag must be one word without spaces, got {corpus.tag!r}")
        if corpus.tag in SPECIAL_TOKENS:
            errors.append(f"{where}.tag {corpus.tag!r} is one of minitx's own tokens; pick another")
    return errors


def _decode_errors(cfg: Config) -> list[str]:
    """Checks between decode keys."""
    errors = []
    decode = cfg.decode
    if decode.n_best > decode.beam_size and not decode.sample:
        errors.append(
            f"decode.n_best ({decode.n_best}) must be at most decode.beam_size "
            f"({decode.beam_size}), or sample with decode.sample: true"
        )
    if decode.sample and decode.temperature <= 0:
        errors.append("decode.temperature must be above 0 (a small value samples almost greedily)")
    return errors
