"""A SentencePiece Unigram model as a `tokenizers` Tokenizer, with the ids of another vocabulary.

Marian (OPUS-MT) segments the source with `source.spm` and the target with `target.spm`, then
looks each piece up in one `vocab.json`, whose ids are not the SentencePiece ids: a piece it lacks
is `<unk>`. The tokenizer built here segments as SentencePiece does (its normalisation table,
whitespace rules, piece scores and unknown-character penalty) and gives vocab.json's ids.
Entries of vocab.json that this side's SentencePiece model does not have (the other side's
pieces) keep their ids under a name no text can produce, so they are never matched.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers

from minitx.errors import UserError

SPACE = "\u2581"  # SentencePiece's visible space
UNMATCHABLE = "\u0000not-in-this-side:"  # prefix of the other side's pieces


def spm_tokenizer(
    spm_file: Path, vocab: dict[str, int], specials: list[str], whole: list[str] = ()
) -> Tokenizer:
    """Segment with `spm_file`; ids from `vocab` (piece → id, ids 0…n-1). `specials` (the unknown
    token first) and `whole` (tokens decoded as text, such as the language codes >>fra<<) are
    matched whole in the text before segmentation, as MarianTokenizer does."""
    proto = _load_proto(spm_file)
    normal, user_defined = 1, 4  # SentencePiece piece types that segmentation uses
    scores = {p.piece: p.score for p in proto.pieces if p.type in (normal, user_defined)}
    ordered = sorted(vocab, key=vocab.__getitem__)
    if [vocab[piece] for piece in ordered] != list(range(len(ordered))):
        raise UserError(
            f"{spm_file.parent / 'vocab.json'}: the ids are not 0 to {len(ordered) - 1}"
        )
    # Pieces absent from this side score as its least likely piece: the unknown-character penalty
    # (the lowest score minus 10, in both SentencePiece and tokenizers) stays SentencePiece's.
    lowest = min(scores.values())
    pieces = [
        (piece, scores.get(piece, lowest))
        if piece in scores or piece in specials or piece in whole
        else (UNMATCHABLE + piece, lowest)
        for piece in ordered
    ]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=vocab[specials[0]], byte_fallback=False))
    tokenizer.add_special_tokens(specials)
    tokenizer.add_tokens([AddedToken(token, normalized=False) for token in whole])
    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [
            normalizers.Replace(Regex(r"\A +| +\z"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    # The dummy prefix goes on the normalized text, as SentencePiece puts it, so that leading
    # whitespace removed above does not count as a word boundary.
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPACE))
    steps.append(normalizers.Replace(" ", SPACE))
    tokenizer.normalizer = normalizers.Sequence(steps)
    scheme = "always" if spec.add_dummy_prefix else "never"
    # The other side's pieces decode to their text, as MarianTokenizer decodes them.
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(UNMATCHABLE, ""),
            decoders.Metaspace(SPACE, prepend_scheme=scheme, split=False),
        ]
    )
    return tokenizer


def _load_proto(spm_file: Path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(spm_file.read_bytes())
    except Exception as exc:  # protobuf's DecodeError, or a file that cannot be read
        raise UserError(f"{spm_file} is not a SentencePiece model ({type(exc).__name__})") from None
    if proto.trainer_spec.model_type != 1:  # 1: Unigram, what Marian's SentencePiece models are
        raise UserError(f"{spm_file} is not a SentencePiece Unigram model; minitx reads Unigram")
    return proto
