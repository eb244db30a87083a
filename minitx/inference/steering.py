"""Steering an output, as a user writes it: a target prefix it must start with, phrases it must
contain (lexical constraints) and phrases it must not (banned), per input; and their checks and
tokens, the same for the command line, the Python API and the HTTP server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from minitx.data.tokenizer import TextCodec
from minitx.errors import UserError
from minitx.inference.searches import SentenceSteering

# A banned phrase is kept out under every tokenization of it; a long phrase of short pieces has
# very many, so past this many the likeliest-looking ones (fewest tokens) are kept.
MAX_TOKENIZATIONS = 256


@dataclass(frozen=True)
class Steering:
    """What one input's output must do: start with `target_prefix`, contain each of
    `constraints`, contain none of `banned` (each a target-language text)."""

    target_prefix: str = ""
    constraints: tuple[str, ...] = ()
    banned: tuple[str, ...] = ()

    def __post_init__(self) -> None:  # lists are welcome: keep them hashable and unchangeable
        object.__setattr__(self, "constraints", tuple(self.constraints))
        object.__setattr__(self, "banned", tuple(self.banned))

    def __bool__(self) -> bool:
        return bool(self.target_prefix or self.constraints or self.banned)


def check_steering(steering: Steering, max_phrases: int, where: str) -> None:
    """Refuse what no search can honour, before any decoding: empty phrases, too many."""
    for field in ("constraints", "banned"):
        phrases = getattr(steering, field)
        if any(not phrase.strip() for phrase in phrases):
            raise UserError(f"{where}: an empty phrase in {field}; give words or leave it out")
        if len(phrases) > max_phrases:
            raise UserError(
                f"{where}: {len(phrases)} {field}, and at most {max_phrases} are taken "
                "(decode.max_phrases)"
            )


def steering_tokens(
    steerings: Sequence[Steering | None], codec: TextCodec, max_phrases: int
) -> list[SentenceSteering | None]:
    """Each input's steering in target token ids (None where there is none)."""
    found: list[SentenceSteering | None] = []
    for number, steering in enumerate(steerings, start=1):
        if not steering:
            found.append(None)
            continue
        where = f"input {number}"
        check_steering(steering, max_phrases, where)
        prefix = tuple(_tokens(codec, steering.target_prefix, where, "target prefix"))
        constraints = tuple(
            tuple(_tokens(codec, phrase, where, "constraint")) for phrase in steering.constraints
        )
        banned = tuple(
            sequence for phrase in steering.banned for sequence in tokenizations(codec, phrase)
        )
        found.append(SentenceSteering(prefix, constraints, banned))
    return found


def _tokens(codec: TextCodec, text: str, where: str, what: str) -> list[int]:
    if not text:
        return []
    ids = codec.encode([text])[0]
    if codec.unk_id in ids:
        raise UserError(
            f"{where}: the {what} '{text}' has characters the model's target vocabulary lacks, "
            "so no output could hold it"
        )
    return ids


def tokenizations(codec: TextCodec, phrase: str) -> list[tuple[int, ...]]:
    """Every way the target vocabulary spells `phrase` as it appears in a text (with its
    word-start markers): the tokenizer's own spelling, any other split into vocabulary tokens,
    and the last piece also as a token that adds only punctuation to it ("▁bicycle." after
    "bicycle": the word is there, "bicycles" is another word). Fewest tokens first, at most
    MAX_TOKENIZATIONS."""
    tokenizer = codec.tokenizer
    own = codec.encode([phrase])[0]
    surface = "".join(tokenizer.id_to_token(i) for i in own)
    vocabulary = {
        token: i for token, i in tokenizer.get_vocab().items() if i != codec.unk_id and token
    }
    longest = max(len(token) for token in vocabulary)
    punctuated: dict[str, list[int]] = {}  # "▁bicycle" → ids of "▁bicycle.", "▁bicycle,", …
    for token, i in vocabulary.items():
        word = token.rstrip("".join(c for c in token if not c.isalnum()))
        if word and word != token and not any(c.isalnum() for c in token[len(word) :]):
            punctuated.setdefault(word, []).append(i)
    # ways[i]: the spellings of surface[i:], built from the end
    ways: list[list[tuple[int, ...]]] = [[] for _ in range(len(surface))] + [[()]]
    for start in range(len(surface) - 1, -1, -1):
        for end in range(start + 1, min(len(surface), start + longest) + 1):
            piece = surface[start:end]
            ids = [vocabulary[piece]] if piece in vocabulary else []
            if end == len(surface):
                ids += punctuated.get(piece, [])
            ways[start] += [(i, *rest) for i in ids for rest in ways[end]]
        ways[start] = sorted(ways[start], key=len)[:MAX_TOKENIZATIONS]
    spellings = ways[0] if ways[0] else [tuple(own)]
    return sorted(set(spellings), key=lambda s: (len(s), s))
