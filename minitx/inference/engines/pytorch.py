"""The PyTorch engine: a run's own model, with the searches of minitx/inference/decode.py and word
alignments from its cross-attention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from minitx.config import DecodeConfig
from minitx.data.tokenizer import Codecs
from minitx.errors import UserError
from minitx.inference.alignments import word_alignments
from minitx.inference.decode import Hypothesis, translate
from minitx.inference.ensemble import Ensemble
from minitx.inference.steering import Steering, steering_tokens
from minitx.model.attention import recording_attention
from minitx.model.transformer import Classifier, Seq2Seq
from minitx.runtime import Compute


class PyTorchEngine:
    name = "pytorch"

    def __init__(self, model: Seq2Seq | Classifier | Ensemble, codecs: Codecs, compute: Compute):
        self.model, self.codecs, self.compute = model, codecs, compute

    def translate(
        self, texts: list[str], decode: DecodeConfig, steering: Sequence[Steering | None] = ()
    ) -> list[list[Hypothesis]]:
        """With `decode.alignments`, each hypothesis carries its word alignment."""
        if isinstance(self.model, Ensemble):
            if decode.alignments:
                raise UserError(
                    "word alignments come from one model's attention: translate with one run"
                )
            self.model.combine = decode.ensemble_combine
        src_ids = self.codecs.src.encode(texts)
        inputs = None
        if any(steering):
            inputs = steering_tokens(steering, self.codecs.tgt, decode.max_phrases)
        found = translate(self.model, src_ids, self.codecs, decode, self.compute, inputs=inputs)
        if decode.alignments:
            found = [
                [replace(h, alignment=self._align(ids, h.tokens, decode)) for h in hypotheses]
                for ids, hypotheses in zip(src_ids, found, strict=True)
            ]
        return found

    @torch.no_grad()
    def class_probabilities(self, src: torch.Tensor) -> torch.Tensor:
        with self.compute.autocast():
            return self.model(src.to(self.compute.device)).float().softmax(-1).cpu()

    @torch.no_grad()
    def _align(
        self, src_ids: list[int], tgt_ids: list[int], decode: DecodeConfig
    ) -> list[tuple[int, int]]:
        """Word alignment of one hypothesis from the cross-attention of `decode.alignment_layer`,
        averaged over heads, in a teacher-forced pass over the source and the hypothesis."""
        src_codec, tgt_codec, model = self.codecs.src, self.codecs.tgt, self.model
        layers = model.decoder.layers
        layer = decode.alignment_layer
        if layer is None:
            layer = -2 if len(layers) > 1 else -1
        if not -len(layers) <= layer < len(layers):
            raise UserError(
                f"decode.alignment_layer {layer}: the decoder has layers 0 to {len(layers) - 1} "
                f"(or -1 to -{len(layers)})"
            )
        src = [*src_ids, src_codec.eos_id]
        tgt_in = [tgt_codec.bos_id, *tgt_ids]
        device = self.compute.device
        with recording_attention(model), self.compute.autocast():
            model(torch.tensor([src], device=device), torch.tensor([tgt_in], device=device))
            weights = layers[layer].cross_attention.weights[0].float().mean(0)
        src_tokens = [src_codec.tokenizer.id_to_token(i) for i in src]
        tgt_tokens = [tgt_codec.tokenizer.id_to_token(i) for i in [*tgt_ids, tgt_codec.eos_id]]
        return word_alignments(weights.cpu(), src_tokens, tgt_tokens)
