"""The CTranslate2 engine: a translation export run with minitx's decode options, giving the same
`Hypothesis` lists as the PyTorch model does."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from minitx.config import DecodeConfig
from minitx.errors import require_extra
from minitx.inference.decode import Hypothesis
from minitx.inference.engines.base import (
    ExportedRun,
    check_export_inputs,
    length_sorted_batches,
    output_limit,
    refuse_steering,
    within_limit,
)
from minitx.inference.steering import Steering, steering_tokens

# CTranslate2 closes a sentence's beam once beam_size × patience hypotheses have finished (Kasai
# et al., 2022); minitx closes it once its best live beam, at its current length, scores no better
# than the K-th finished one. Patience 2 makes CTranslate2 search on past the first K finished, as
# minitx does (on the quickstart test set, with minitx's rule of 2026-11, they then agreed on every
# beam-5 output; patience 1 differed on 17 of 300; tests/test_export.py checks 60 at beam 4).
BEAM_PATIENCE = 2.0


class CTranslate2Engine:
    """A CTranslate2 export: source text → the N best (or N sampled) hypotheses."""

    name = "ctranslate2"

    def __init__(self, export: ExportedRun):
        require_extra("ctranslate2")
        import ctranslate2

        cfg, info = export.config, export.info
        self.codecs = export.codecs
        self.max_positions = int(info.get("max_positions", cfg.model.max_positions))
        device, threads = cfg.run.device, cfg.run.threads or 0
        gpu = device in ("cuda", "auto") and ctranslate2.get_cuda_device_count() > 0
        # The translator sets the OpenMP thread count of the whole process, torch's included, to
        # its own: torch's is put back, so PyTorch work beside the engine keeps its threads.
        torch_threads = torch.get_num_threads()
        self.translator = ctranslate2.Translator(
            str(export.directory),
            device="cuda" if gpu else "cpu",
            inter_threads=1,
            intra_threads=threads,
        )
        torch.set_num_threads(torch_threads)

    def translate(
        self, texts: list[str], decode: DecodeConfig, steering: Sequence[Steering | None] = ()
    ) -> list[list[Hypothesis]]:
        """A target prefix becomes CTranslate2's `target_prefix`, banned phrases (every
        tokenization) its `suppress_sequences`; it has no lexical constraints."""
        refuse_steering(steering, self.name, ("constraints",))
        src_tokenizer = self.codecs.src.tokenizer
        sources = [e.tokens for e in src_tokenizer.encode_batch(texts, add_special_tokens=False)]
        check_export_inputs([len(t) + 1 for t in sources], decode, self.max_positions)
        limits = [output_limit(len(t) + 1, decode, self.max_positions) for t in sources]
        tokens = steering_tokens(list(steering) or [None] * len(texts), self.codecs.tgt,
                                 decode.max_phrases)  # fmt: skip
        outputs: list[list[Hypothesis]] = [[] for _ in sources]
        # suppress_sequences holds for a whole call: texts with the same banned phrases together
        groups: dict[tuple, list[int]] = {}
        for i, one in enumerate(tokens):
            groups.setdefault(one.banned if one else (), []).append(i)
        for banned, members in groups.items():
            for part in length_sorted_batches([sources[i] for i in members], decode.batch_size):
                chosen = [members[i] for i in part]
                limit = max(limits[i] for i in chosen)
                prefixes = [self._strings(tokens[i].prefix if tokens[i] else ()) for i in chosen]
                steer = {"suppress_sequences": [self._strings(s) for s in banned] or None}
                if any(prefixes):
                    steer["target_prefix"] = prefixes
                self._translate(chosen, [sources[i] for i in chosen], limit, decode, outputs, steer)
        return [
            [within_limit(h, limit, self.codecs.tgt) for h in hypotheses]
            for hypotheses, limit in zip(outputs, limits, strict=True)
        ]

    def _strings(self, ids) -> list[str]:
        return [self.codecs.tgt.tokenizer.id_to_token(i) for i in ids]

    def _translate(self, rows, batch, limit: int, decode: DecodeConfig, outputs, steer) -> None:
        results = self.translator.translate_batch(
            batch,
            **steer,
            max_decoding_length=limit,
            min_decoding_length=0,
            max_input_length=0,  # no silent truncation: too long an input was refused above
            return_end_token=True,  # scores count the EOS, as minitx's do
            **_search_options(decode),
        )
        for i, result in zip(rows, results, strict=True):
            outputs[i] = [
                self._hypothesis(h, s, decode.length_penalty)
                for h, s in zip(result.hypotheses, result.scores, strict=True)
            ]

    def _hypothesis(self, tokens: list[str], score: float, length_penalty: float) -> Hypothesis:
        """CTranslate2's score is minitx's, log-probability / length**length_penalty with the
        EOS counted; the log-probability is recovered from it."""
        codec = self.codecs.tgt
        ids = [codec.tokenizer.token_to_id(token) for token in tokens]
        length = len(ids)
        if ids and ids[-1] == codec.eos_id:
            ids = ids[:-1]
        log_prob = score * length**length_penalty
        return Hypothesis(ids, log_prob, score, codec.decode([ids])[0])


def _search_options(decode: DecodeConfig) -> dict:
    """The `translate_batch` arguments of the decode options that have one (their `ctranslate2`
    metadata in DecodeConfig)."""
    options = {
        option.metadata["ctranslate2"]: getattr(decode, option.name)
        for option in dataclasses.fields(decode)
        if "ctranslate2" in option.metadata
    }
    if decode.sample:
        import ctranslate2

        if decode.seed is not None:
            ctranslate2.set_random_seed(decode.seed)
        options["beam_size"] = 1  # CTranslate2 samples with a beam of one
        options["sampling_topk"] = options["sampling_topk"] or 0  # 0: the whole vocabulary
    else:
        # CTranslate2 samples whenever sampling_topk is not 1, in beam search too: leave them out.
        options = {
            name: value for name, value in options.items() if not name.startswith("sampling_")
        }
        options["patience"] = BEAM_PATIENCE
    return {**options, "return_scores": True}
