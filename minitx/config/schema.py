"""The typed config tree: frozen dataclasses, each key declared once with its default, type, bounds
and meaning (`help`); docs/config.md, the CLI's decode options and the HTTP schema are derived from
this metadata. Checks that depend on the task (its metrics, its data) belong to the task
(minitx/tasks); loading and validation are in minitx/config/loading.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

# The tokenizer's special tokens at ids 0-3 (padding, unknown, start, end), declared here because a
# corpus tag must not be one of them; minitx/data/tokenizer.py builds every vocabulary with them.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


def _key(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 - `help` reads best here
    """A config field: its default, its meaning, optional range checks (`min` and `max` inclusive,
    `above` exclusive) and, for decode options, where they surface (see DecodeConfig)."""
    if isinstance(default, (dict, list)):
        return field(
            default_factory=lambda: type(default)(default), metadata={"help": help, **metadata}
        )
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class CorpusConfig:
    """One training corpus of several (data.train_corpora): read as data.path is, with its columns."""

    path: str = _key("", "a directory or Hub dataset id, read as data.path is (same columns)")
    split: str | None = _key(None, "the split to train on; default: data.splits.train")
    weight: int = _key(
        1, "times each of its examples is seen per pass over the corpora (upsampling)", min=1
    )
    tag: str | None = _key(
        None,
        "a token put before each of its source texts (e.g. `<bt>` for back-translated or `<kd>` for "
        "distilled data), added to the vocabulary as a special token",
    )


@dataclass(frozen=True)
class DataConfig:
    path: str = _key(
        "synthetic",
        "Hub dataset id (e.g. bentrevett/multi30k), a local directory, or `synthetic` for the "
        "built-in offline task",
    )
    name: str | None = _key(None, "Hub dataset configuration name (`load_dataset(path, name)`)")
    src: str = _key("src", "source language suffix (parallel text files) or column name")
    tgt: str = _key("tgt", "target language suffix (parallel text files) or column name")
    splits: dict[str, str] = _key(
        {"train": "train", "validation": "validation", "test": "test"},
        "maps train/validation/test to the split names the data uses",
    )
    text: str = _key("text", "classification: the text column")
    text_pair: str | None = _key(
        None, "classification: a second text column, for sentence-pair tasks such as NLI"
    )
    label: str = _key("label", "classification: the label column")
    rename_columns: dict[str, dict[str, str]] = _key(
        {},
        "per split (a role or the data's split name): {old column: new column} applied on load, "
        "e.g. {validation: {content: sentence}}",
    )
    max_len: int = _key(
        128,
        "drop training examples with more subword tokens than this (per side; classification: "
        "text and pair together)",
        min=1,
    )
    synthetic_size: int = _key(
        20000,
        "number of training pairs of the synthetic task (data.path: synthetic)",
        min=10,
        max=999_000,  # distinct numbers below 1,000,000, with 1,000 kept for validation and test
    )
    synthetic_seed: int = _key(1, "seed that generates the synthetic task's pairs", min=0)
    train_corpora: list[CorpusConfig] = _key(
        [],
        "train on these corpora (each {path, split, weight, tag}) instead of data.path's training "
        "split; validation and test still come from data.path",
    )


@dataclass(frozen=True)
class TokenizerConfig:
    type: Literal["bpe", "unigram"] = _key("bpe", "subword model trained on the training split")
    vocab_size: int = _key(8000, "vocabulary size (per side when not joint)", min=16)
    joint: bool = _key(True, "one vocabulary for source and target (enables shared embeddings)")
    min_frequency: int = _key(2, "BPE: minimum pair frequency for a merge", min=1)
    path: str | None = _key(
        None, "use this existing tokenizer.json instead of training one (joint vocabulary)"
    )
    max_training_texts: int = _key(
        2_000_000,
        "train the tokenizer on at most this many training examples (a seeded random sample), "
        "as SentencePiece's input_sentence_size does",
        min=1,
    )


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = _key(256, "width of embeddings and residual stream", min=8)
    n_heads: int = _key(4, "attention heads; must divide d_model", min=1)
    n_encoder_layers: int = _key(3, "encoder layers", min=1)
    n_decoder_layers: int = _key(3, "decoder layers", min=1)
    d_ff: int = _key(1024, "hidden width of the feed-forward blocks", min=1)
    dropout: float = _key(
        0.1, "dropout on embeddings and on each sublayer's output", min=0.0, max=0.9
    )
    attention_dropout: float = _key(0.0, "dropout on attention weights", min=0.0, max=0.9)
    activation_dropout: float = _key(
        0.0, "dropout inside the feed-forward block, after the activation", min=0.0, max=0.9
    )
    activation: Literal["relu", "gelu", "swish"] = _key(
        "relu", "feed-forward activation (swish = SiLU, as Marian's OPUS-MT models use)"
    )
    norm: Literal["pre", "post"] = _key(
        "pre", "LayerNorm before (pre) or after (post) each sublayer"
    )
    attention: Literal["scaled_dot", "dot", "cosine"] = _key(
        "scaled_dot",
        "attention score: QKᵀ/√d_k (fused kernel), QKᵀ, or cosine(Q, K) × a learned per-head scale",
    )
    positions: Literal["sinusoidal", "learned", "rope", "relative", "alibi", "none"] = _key(
        "sinusoidal",
        "position information: added to embeddings (sinusoidal, learned) or inside "
        "self-attention (rope, relative = T5 bias buckets, alibi), or none",
    )
    max_positions: int = _key(1024, "positions: learned: the longest sequence it can encode", min=1)
    n_kv_heads: int | None = _key(
        None,
        "key/value heads (grouped-query attention; 1 = multi-query; null = n_heads); divides n_heads",
        min=1,
    )
    window: int | None = _key(
        None,
        "encoder self-attention sees only this many neighbours on each side (null: all)",
        min=1,
    )
    dilation: int = _key(1, "with window: the step between the neighbours seen (dilated)", min=1)
    tie_embeddings: bool = _key(
        True, "share target embeddings with the output layer (and with the source when joint)"
    )
    output_bias: bool = _key(
        False, "a learned bias on the output logits (Marian's final_logits_bias)"
    )
    pooling: Literal["mean", "cls"] = _key(
        "mean",
        "classification: mean of the encoder outputs over real tokens, or the output at the "
        "learned <s> token every input starts with",
    )
    pruned_heads: dict[str, list[int]] = _key(
        {},
        "attention heads removed from the model (`minitx heads --prune`), as {KIND.LAYER: "
        "[head, …]} with KIND encoder_self, decoder_self or cross and heads numbered as trained",
    )


@dataclass(frozen=True)
class TrainConfig:
    batch_tokens: int = _key(
        4096, "token budget per batch (padded source or target tokens)", min=16
    )
    accumulate: int = _key(1, "batches per optimizer step (gradient accumulation)", min=1)
    lr: float = _key(5e-4, "peak learning rate", min=0.0)
    schedule: Literal["inverse_sqrt", "cosine", "constant"] = _key(
        "inverse_sqrt",
        "learning-rate schedule after linear warmup; cosine reaches min_lr when max_steps or "
        "max_time, whichever comes first, ends training",
    )
    warmup_steps: int = _key(1000, "linear warmup steps", min=0)
    min_lr: float = _key(0.0, "cosine: final learning rate", min=0.0)
    betas: list[float] = _key([0.9, 0.98], "AdamW betas")
    weight_decay: float = _key(0.0, "AdamW weight decay (not applied to biases and norms)", min=0.0)
    label_smoothing: float = _key(0.1, "label smoothing of the cross-entropy", min=0.0, max=0.99)
    clip_norm: float = _key(1.0, "clip the gradient norm to this (0 disables)", min=0.0)
    max_steps: int = _key(100000, "stop after this many optimizer steps", min=1)
    max_epochs: int = _key(1000, "stop after this many epochs", min=1)
    max_time: float | str | None = _key(
        None, "stop after this wall time: seconds, or e.g. 90s, 30m, 1.5h", min=0
    )
    log_every: int = _key(50, "steps between progress log lines in metrics.jsonl", min=1)
    eval_every: int = _key(1000, "steps between validations (and checkpoints)", min=1)
    keep_last: int = _key(
        1, "also keep the last N validated checkpoints as checkpoints/step_N (1: only last)", min=1
    )
    eval_max_sentences: int | None = _key(
        None, "validate on the first N validation sentences only", min=1
    )
    compile: bool = _key(
        False,
        "run the training step's model through torch.compile (falls back to eager with a "
        "warning where it cannot compile)",
    )
    early_stopping_metric: str | None = _key(
        None,
        "validation metric that picks the best checkpoint and drives early stopping "
        "(null: bleu for translation, accuracy for classification)",
    )
    patience: int | None = _key(
        None, "stop after this many validations without improvement (null: never)", min=1
    )
    average_last: int | None = _key(
        None,
        "at the end of training, average the last N kept step_N checkpoints into "
        "checkpoints/averaged (needs keep_last >= N)",
        min=2,
    )
    init_from: str | None = _key(
        None,
        "start from the weights and tokenizer of this run directory (its best checkpoint), "
        "checkpoint directory, or hf:PATH_OR_HUB_ID Marian (OPUS-MT) model; optimizer and "
        "counters start fresh (fine-tuning)",
    )


@dataclass(frozen=True)
class DecodeConfig:
    """Every decoding option, declared once. Each is also a per-call option: `minitx translate`'s
    options, the HTTP TranslateRequest's fields, `Model.translate`'s keywords, GET /info's decode
    section and the CTranslate2 engine's arguments are derived from these fields. Metadata beyond
    `help` and the bounds: `flag`, the command-line option where it is not --field-name;
    `ctranslate2`, the `Translator.translate_batch` argument the option becomes."""

    # beam_size and n_best are capped: a request's time and memory grow with them, and a server
    # takes them from its clients.
    beam_size: int = _key(
        5,
        "beam width for eval/translate (1 = greedy)",
        min=1,
        max=64,
        flag="--beam",
        ctranslate2="beam_size",
    )
    length_penalty: float = _key(
        1.0,
        "beam score = log-prob / length**length_penalty",
        min=0.0,
        ctranslate2="length_penalty",
    )
    max_len_ratio: float = _key(
        1.5, "maximum output length = ratio × source length + offset", min=0.0, max=100.0
    )
    max_len_offset: int = _key(10, "see max_len_ratio", min=0)
    batch_size: int = _key(128, "sentences decoded together", min=1)
    n_best: int = _key(
        1,
        "hypotheses returned per input: the N best of the beam (N <= beam_size), or N samples",
        min=1,
        max=64,
        ctranslate2="num_hypotheses",
    )
    sample: bool = _key(
        False, "sample each token instead of searching (see temperature, top_k, top_p)"
    )
    temperature: float = _key(
        1.0,
        "sampling: divide the logits by this (> 0; small → greedy)",
        min=0.0,  # 0 is refused only when sampling (_decode_errors)
        ctranslate2="sampling_temperature",
    )
    top_k: int | None = _key(
        None,
        "sampling: only from the k most likely tokens (null: all)",
        min=1,
        ctranslate2="sampling_topk",
    )
    top_p: float = _key(
        1.0,
        "sampling: only from the smallest set of tokens whose probability reaches p (0 < p <= 1)",
        above=0.0,
        max=1.0,
        ctranslate2="sampling_topp",
    )
    seed: int | None = _key(None, "sampling: seed of the draws (null: different each run)", min=0)
    alignments: bool = _key(
        False, "also give word alignments (source word i - target word j) from cross-attention"
    )
    max_phrases: int = _key(
        8, "lexical constraints, and banned phrases, one input may have at most", min=0, max=64
    )
    ensemble_combine: Literal["mean_prob", "mean_log_prob"] = _key(
        "mean_prob",
        "several runs decoding as one: the mean of their probabilities, or of their "
        "log-probabilities (renormalised)",
    )
    alignment_layer: int | None = _key(
        None,
        "decoder layer whose cross-attention (averaged over heads) gives the alignments, from 0; "
        "negative counts from the last; null: the penultimate (Garg et al., 2019), or the only one",
    )


@dataclass(frozen=True)
class RunConfig:
    seed: int = _key(1, "seed for weights, dropout and batch order", min=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = _key(
        "auto", "auto picks cuda, then mps, then cpu"
    )
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = _key(
        "auto",
        "autocast dtype for matmuls; weights stay fp32. auto: bf16 where the GPU or CPU has it "
        "natively (AVX512-BF16, AMX), else fp32. fp16 adds a dynamic loss scaler; on CUDA, fp32 "
        "matmuls use TF32",
    )
    threads: int | None = _key(None, "CPU threads for torch (null: torch's default)", min=1)
    tensorboard: bool = _key(
        False,
        "also write TensorBoard event files to RUN_DIR/tensorboard (pip install 'minitx[tensorboard]')",
    )
    deterministic: bool = _key(
        False,
        "deterministic algorithms only: same seed, same metrics (see docs/run-directory.md for GPU limits)",
    )


@dataclass(frozen=True)
class Config:
    task: str = _key(
        "translation",
        "translation (encoder-decoder, data.src → data.tgt), classification (encoder + head, "
        "data.text → data.label), or a task registered with minitx.tasks.register_task",
    )
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    run: RunConfig = field(default_factory=RunConfig)


def parse_duration(text: str | int | float) -> float:
    """'90', '90s', '30m', '1.5h' → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise ValueError(f"'{text}' is not a duration; write seconds or e.g. 90s, 30m, 1.5h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
