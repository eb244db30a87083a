"""Word alignments from cross-attention: Moses-style `i-j` links, and their alignment error rate.

A link (i, j) says source word i ↔ target word j, both 0-based. Attention is over subword tokens,
so tokens are first mapped to the words they belong to (SentencePiece-style "▁" word starts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minitx.data.tokenizer import BOS, EOS, PAD

WORD_START = "\u2581"  # "▁", the Metaspace marker on a word's first piece
NO_WORD = -1
# <unk> is not here: it stands for unknown characters inside a word, so it continues that word
NOT_WORDS = frozenset({BOS, EOS, PAD})

Link = tuple[int, int]


def word_starts(tokens: Sequence[str]) -> list[int]:
    """The index of the word each token belongs to; -1 for `<s>`, `</s>` and `<pad>`.

    A token starting with "▁" starts a new word, any other continues the current one; the first
    word token starts word 0 even without "▁", since there is no earlier word it could continue.
    A bare "▁" starts a word only when a continuation piece follows it (as in "▁" "z" "w" "e"
    "i"); otherwise it decodes to a space alone, which is no word of the text, and gets -1.
    """
    words: list[int] = []
    current = NO_WORD
    for position, token in enumerate(tokens):
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        bare_space = token == WORD_START and (
            following is None or following in NOT_WORDS or following.startswith(WORD_START)
        )
        if token in NOT_WORDS or bare_space:
            words.append(NO_WORD)
            continue
        if current == NO_WORD or token.startswith(WORD_START):
            current += 1
        words.append(current)
    return words


def word_alignments(
    weights: torch.Tensor, src_tokens: Sequence[str], tgt_tokens: Sequence[str]
) -> list[Link]:
    """Sorted, de-duplicated (source word, target word) links from one cross-attention map.

    `weights` is (T_tgt, S_src), already averaged over heads: row t is the query that predicts
    target token t (rows follow `tgt_tokens`, the output tokens with EOS last), columns follow
    `src_tokens` (the source tokens with EOS last). Each target token that belongs to a word is
    linked to the source token it attends to most (argmax per target subword, as in Garg et al.,
    2019, and fairseq's `extract_hard_alignment`); EOS and other special tokens are never
    candidates, because attention often parks mass on them without aligning anything. A word
    split into pieces gets the union of its pieces' links. Ties go to the earlier source token.
    """
    weights = torch.as_tensor(weights)
    _check_shape(weights, len(tgt_tokens), len(src_tokens))
    src_words = torch.tensor(word_starts(src_tokens), dtype=torch.long)
    tgt_words = word_starts(tgt_tokens)
    if not (src_words >= 0).any():
        return []  # nothing on the source side to link to
    # -inf rather than dropping columns keeps argmax indices aligned to src_tokens
    masked = weights.float().masked_fill(src_words < 0, float("-inf"))
    best = masked.argmax(dim=1).tolist()
    links = {
        (int(src_words[s]), t_word)
        for s, t_word in zip(best, tgt_words, strict=True)
        if t_word >= 0
    }
    return sorted(links)


def _check_shape(weights: torch.Tensor, n_tgt: int, n_src: int) -> None:
    if weights.shape != (n_tgt, n_src):
        raise ValueError(
            f"attention weights have shape {tuple(weights.shape)}, but there are {n_tgt} target "
            f"and {n_src} source tokens; expected ({n_tgt}, {n_src}) (average over heads first)"
        )


def format_alignments(pairs: Sequence[Link]) -> str:
    """Links in the Moses / fast_align format: "0-0 1-2 2-1"."""
    return " ".join(f"{i}-{j}" for i, j in pairs)


def alignment_error_rate(
    predicted: Sequence[set[Link]],
    sure: Sequence[set[Link]],
    possible: Sequence[set[Link]] | None = None,
) -> float:
    """Corpus alignment error rate (Och & Ney, 2003), a fraction in [0, 1]; lower is better.

    AER = 1 − (|A∩S| + |A∩P|) / (|A| + |S|), with A the predicted, S the sure and P ⊇ S the
    possible links. The counts are summed over the corpus before dividing (not an average of
    sentence rates), as the standard evaluation scripts do. P defaults to S.
    """
    possible = sure if possible is None else possible
    if not len(predicted) == len(sure) == len(possible):
        raise ValueError(
            f"{len(predicted)} predicted, {len(sure)} sure and {len(possible)} possible "
            "alignments: give one set per sentence pair for each"
        )
    hits = total = 0
    for index, (a, s, p) in enumerate(zip(predicted, sure, possible, strict=True)):
        if not s <= p:
            raise ValueError(f"sentence {index}: sure links {sorted(s - p)} are not possible")
        hits += len(a & s) + len(a & p)
        total += len(a) + len(s)
    if total == 0:
        raise ValueError("no predicted and no sure links: the alignment error rate is undefined")
    return 1.0 - hits / total
