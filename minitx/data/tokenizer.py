"""Subword tokenizers (Hugging Face `tokenizers`): trained on the training split, or loaded from a file.

Text is split SentencePiece-style (Metaspace: a word-initial marker instead of spaces), so decoding
gives back detokenized text that BLEU can score directly, with no language-specific detokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from minitx.config import TokenizerConfig
from minitx.config.schema import SPECIAL_TOKENS
from minitx.errors import UserError
from minitx.run_dir import RunDir

PAD, UNK, BOS, EOS = SPECIAL_TOKENS


def train_tokenizer(
    texts: Iterable[str],
    kind: str,
    vocab_size: int,
    min_frequency: int = 2,
    tags: Sequence[str] = (),
) -> Tokenizer:
    """Train a BPE or Unigram tokenizer with minitx's special tokens at ids 0-3, then the corpus
    `tags` (kept whole wherever they appear in a text, never split into subwords)."""
    special_tokens = [*SPECIAL_TOKENS, *tags]
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, unk_token=UNK, show_progress=False
        )
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer_file(path: Path) -> Tokenizer:
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise UserError(f"{path} is not a valid tokenizer.json ({exc})") from None
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise UserError(f"{path} lacks the special tokens {missing}; minitx needs {SPECIAL_TOKENS}")
    return tokenizer


@dataclass(frozen=True)
class SpecialIds:
    """The ids a decoder needs: the start and end of a sequence, and the padding after its end."""

    bos_id: int
    eos_id: int
    pad_id: int


@dataclass
class TextCodec:
    """One side's tokenizer with the ids the model needs: text ↔ token ids."""

    tokenizer: Tokenizer

    def __post_init__(self) -> None:
        self.pad_id = self.tokenizer.token_to_id(PAD)
        self.unk_id = self.tokenizer.token_to_id(UNK)
        self.bos_id = self.tokenizer.token_to_id(BOS)
        self.eos_id = self.tokenizer.token_to_id(EOS)
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.special_ids = SpecialIds(self.bos_id, self.eos_id, self.pad_id)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.tokenizer.decode_batch(ids, skip_special_tokens=True)


@dataclass
class Codecs:
    """Source and target codecs; the same object twice when the vocabulary is joint."""

    src: TextCodec
    tgt: TextCodec

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    def save(self, run: RunDir) -> None:
        if self.joint:
            self.src.tokenizer.save(str(run.tokenizer_file))
        else:
            self.src.tokenizer.save(str(run.src_tokenizer_file))
            self.tgt.tokenizer.save(str(run.tgt_tokenizer_file))


def build_codecs(
    src_texts: Iterable[str],
    tgt_texts: Iterable[str],
    cfg: TokenizerConfig,
    joint: bool,
    tags: Sequence[str] = (),
) -> Codecs:
    """Load the tokenizer named by `cfg.path`, or train one (or two) on the training texts, with
    the corpus `tags` as special tokens of the source side."""
    if cfg.path:
        codec = TextCodec(load_tokenizer_file(Path(cfg.path)))
        return Codecs(codec, codec)
    options = (cfg.type, cfg.vocab_size, cfg.min_frequency)
    if joint:
        codec = TextCodec(train_tokenizer(_chain(src_texts, tgt_texts), *options, tags))
        return Codecs(codec, codec)
    return Codecs(
        TextCodec(train_tokenizer(src_texts, *options, tags)),
        TextCodec(train_tokenizer(tgt_texts, *options)),
    )


def check_tags(codecs: Codecs, tags: Sequence[str]) -> None:
    """Every corpus tag must be one token of the source vocabulary, or it would be split into
    subwords like any other text."""
    if not tags:
        return
    added = {token.content for token in codecs.src.tokenizer.get_added_tokens_decoder().values()}
    missing = [t for t in tags if t not in added]
    if missing:
        raise UserError(
            f"the corpus tags {missing} are not special tokens of this run's tokenizer (it was made "
            "without them, or came from tokenizer.path or train.init_from); train in a new run "
            "directory, or use a tokenizer that has them"
        )


def load_codecs(run: RunDir) -> Codecs:
    """The tokenizer(s) saved in a run directory."""
    if run.tokenizer_file.is_file():
        codec = TextCodec(load_tokenizer_file(run.tokenizer_file))
        return Codecs(codec, codec)
    if run.src_tokenizer_file.is_file():
        return Codecs(
            TextCodec(load_tokenizer_file(run.src_tokenizer_file)),
            TextCodec(load_tokenizer_file(run.tgt_tokenizer_file)),
        )
    raise UserError(f"{run} has no {run.tokenizer_file.name}; is it a minitx run directory?")


def _chain(*iterables: Iterable[str]) -> Iterator[str]:
    for iterable in iterables:
        yield from iterable
