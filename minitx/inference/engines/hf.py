"""The `transformers` engine: a `--format transformers` export run by `generate()` with minitx's
decode options, giving the same `Hypothesis` lists as the PyTorch model does."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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
from minitx.inference.steering import Steering


class TransformersEngine:
    """A Pegasus or Marian folder written by `minitx export --format transformers`."""

    name = "transformers"

    def __init__(self, export: ExportedRun):
        require_extra("transformers", "hf")
        from transformers import AutoModelForSeq2SeqLM

        cfg = export.config
        gpu = cfg.run.device in ("cuda", "auto") and torch.cuda.is_available()
        self.device = torch.device("cuda" if gpu else "cpu")
        with quiet_transformers():
            model = AutoModelForSeq2SeqLM.from_pretrained(export.directory)
        self.model = model.to(self.device).eval()
        self.codecs = export.codecs
        self.max_positions = self.model.config.max_position_embeddings

    def translate(
        self, texts: list[str], decode: DecodeConfig, steering: Sequence[Steering | None] = ()
    ) -> list[list[Hypothesis]]:
        refuse_steering(steering, self.name, ("target_prefix", "constraints", "banned"))
        codec = self.codecs.src
        sources = [ids + [codec.eos_id] for ids in codec.encode(texts)]
        check_export_inputs([len(ids) for ids in sources], decode, self.max_positions)
        limits = [output_limit(len(ids), decode, self.max_positions) for ids in sources]
        outputs: list[list[Hypothesis]] = [[] for _ in sources]
        for chosen in length_sorted_batches(sources, decode.batch_size):
            found = self._generate(
                [sources[i] for i in chosen], max(limits[i] for i in chosen), decode
            )
            for i, hypotheses in zip(chosen, found, strict=True):
                outputs[i] = [within_limit(h, limits[i], self.codecs.tgt) for h in hypotheses]
        return outputs

    @torch.inference_mode()
    def _generate(self, batch: list[list[int]], limit: int, decode: DecodeConfig):
        pad = self.codecs.src.pad_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch])
        if decode.sample and decode.seed is not None:
            torch.manual_seed(decode.seed)
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=(input_ids != pad).long().to(self.device),
            max_length=limit + 1,  # the start token counts (max_new_tokens would clash with the
            # generation_config's max_length)
            min_new_tokens=0,
            num_return_sequences=decode.n_best,
            return_dict_in_generate=True,
            output_scores=True,
            **_generate_options(decode),
        )
        if decode.sample or decode.beam_size == 1:  # log-probabilities of the chosen tokens
            steps = self.model.compute_transition_scores(
                out.sequences, out.scores, normalize_logits=True
            )
            totals = None
        else:
            steps, totals = None, out.sequences_scores.tolist()
        eos, hypotheses = self.codecs.tgt.eos_id, []
        for row, sequence in enumerate(out.sequences[:, 1:].tolist()):  # after the start token
            ids = sequence[: sequence.index(eos)] if eos in sequence else sequence
            length = len(ids) + 1  # EOS counted, as minitx counts it
            if totals is None:
                log_prob = float(steps[row, :length].sum())
                score = log_prob / length**decode.length_penalty
            else:  # beam search scores finished hypotheses as minitx does: log-prob / length**lp
                score = totals[row]
                log_prob = score * length**decode.length_penalty
            hypotheses.append(Hypothesis(ids, log_prob, score, self.codecs.tgt.decode([ids])[0]))
        n = decode.n_best
        return [
            sorted(hypotheses[i : i + n], key=lambda h: -h.score)
            for i in range(0, len(hypotheses), n)
        ]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-file progress bars while loading or saving weights (minitx shows its own status
    lines); the caller's setting is restored after."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def _generate_options(decode: DecodeConfig) -> dict:
    """`generate()`'s search arguments for minitx's decode options."""
    if decode.sample:
        return {
            "do_sample": True,
            "num_beams": 1,
            "temperature": decode.temperature,
            "top_k": decode.top_k or 0,  # minitx's None: the whole vocabulary
            "top_p": decode.top_p,
        }
    return {
        "do_sample": False,
        "num_beams": decode.beam_size,
        "length_penalty": decode.length_penalty,
        "early_stopping": False,  # minitx's stopping rule: see inference/searches/beam.py
    }
