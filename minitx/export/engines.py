"""Run an export: CTranslate2 translates and ONNX Runtime classifies, with minitx's decode options,
giving the same `Hypothesis` lists and probabilities as the PyTorch model does."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from minitx.config import Config, DecodeConfig
from minitx.data.tokenizer import Codecs
from minitx.decode import Hypothesis
from minitx.errors import UserError
from minitx.export.onnx import onnx_session

# CTranslate2 closes a sentence's beam once beam_size × patience hypotheses have finished (Kasai
# et al., 2022); minitx closes it once no live beam can beat the K finished ones. Patience 2 makes
# CTranslate2 search on past the first K finished, as minitx does: on the quickstart test set both
# then agree on every beam-5 output (patience 1 differs on 17 of 300).
BEAM_PATIENCE = 2.0


def require_extra(module: str) -> None:
    """Import `module` or say which extra to install (one line, exit 2)."""
    try:
        __import__(module)
    except ImportError:
        raise UserError(
            f"this needs {module}: pip install 'minitx[export]' (CTranslate2, ONNX, ONNX Runtime)"
        ) from None


class CTranslate2Translator:
    """A CTranslate2 export: source text → the N best (or N sampled) hypotheses."""

    def __init__(
        self, directory: Path, codecs: Codecs, device: str, threads: int, max_positions: int
    ):
        require_extra("ctranslate2")
        import ctranslate2

        self.codecs, self.max_positions = codecs, max_positions
        self.translator = ctranslate2.Translator(
            str(directory), device=device, inter_threads=1, intra_threads=threads
        )

    def translate(self, texts: list[str], decode: DecodeConfig) -> list[list[Hypothesis]]:
        if decode.alignments:
            raise UserError(
                "word alignments come from the PyTorch model's attention: translate with the run "
                "directory instead of the export"
            )
        src_tokenizer = self.codecs.src.tokenizer
        sources = [e.tokens for e in src_tokenizer.encode_batch(texts, add_special_tokens=False)]
        too_long = [i for i, tokens in enumerate(sources) if len(tokens) + 1 > self.max_positions]
        if too_long:
            raise UserError(
                f"input {too_long[0] + 1} has {len(sources[too_long[0]]) + 1} tokens; this export "
                f"has positions for {self.max_positions}"
            )
        # minitx's limit is per sentence (decode.max_lengths, EOS included); CTranslate2 takes one
        # per call. Splitting a batch by limit cost half the speed on two threads (many small
        # calls), so each batch runs once at its largest limit and a hypothesis longer than its
        # own sentence's limit is cut back to it: only outputs that run to the limit can differ.
        limits = [self._limit(len(tokens) + 1, decode) for tokens in sources]
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        outputs: list[list[Hypothesis]] = [[] for _ in sources]
        for start in range(0, len(order), decode.batch_size):
            chosen = order[start : start + decode.batch_size]
            limit = max(limits[i] for i in chosen)
            self._translate(chosen, [sources[i] for i in chosen], limit, decode, outputs)
        for i, hypotheses in enumerate(outputs):
            outputs[i] = [self._within(h, limits[i]) for h in hypotheses]
        return outputs

    def _within(self, hypothesis: Hypothesis, limit: int) -> Hypothesis:
        if len(hypothesis.tokens) < limit:  # room for its EOS
            return hypothesis
        ids = hypothesis.tokens[: limit - 1]
        return replace(hypothesis, tokens=ids, text=self.codecs.tgt.decode([ids])[0])

    def _limit(self, src_length: int, decode: DecodeConfig) -> int:
        limit = math.ceil(src_length * decode.max_len_ratio) + decode.max_len_offset
        return max(1, min(limit, self.max_positions))

    def _translate(self, rows, batch, limit: int, decode: DecodeConfig, outputs) -> None:
        results = self.translator.translate_batch(
            batch,
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
    if decode.sample:
        import ctranslate2

        if decode.seed is not None:
            ctranslate2.set_random_seed(decode.seed)
        return {
            "beam_size": 1,
            "num_hypotheses": decode.n_best,
            "sampling_topk": decode.top_k or 0,  # 0: the whole vocabulary
            "sampling_topp": decode.top_p,
            "sampling_temperature": decode.temperature,
            "length_penalty": decode.length_penalty,
            "return_scores": True,
        }
    return {
        "beam_size": decode.beam_size,
        "num_hypotheses": decode.n_best,
        "length_penalty": decode.length_penalty,
        "patience": BEAM_PATIENCE,
        "return_scores": True,
    }


class OnnxClassifier:
    """An ONNX export of a classifier: padded ids → class probabilities."""

    def __init__(self, path: Path, threads: int):
        require_extra("onnxruntime")
        self.session = onnx_session(path, threads)

    def probabilities(self, src: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {"src": src.astype(np.int64)})[0]
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)


def open_engine(directory: Path, info: dict, cfg: Config, codecs: Codecs, onnx_file: Path):
    """The engine an export directory holds, as its export.json names it."""
    threads = cfg.run.threads or 0
    if info.get("format") == "ctranslate2":
        require_extra("ctranslate2")
        import ctranslate2

        gpu = cfg.run.device in ("cuda", "auto") and ctranslate2.get_cuda_device_count() > 0
        max_positions = int(info.get("max_positions", cfg.model.max_positions))
        return CTranslate2Translator(
            directory, codecs, "cuda" if gpu else "cpu", threads, max_positions
        )
    if info.get("format") == "onnx" and cfg.task == "classification":
        return OnnxClassifier(onnx_file, threads)
    raise UserError(
        f"{directory} holds a {info.get('format')} export of a {cfg.task} model, which minitx "
        "cannot run: translate with a ctranslate2 export, classify with an onnx one"
    )
