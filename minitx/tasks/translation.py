"""Translation: an encoder-decoder reads `data.src` and writes `data.tgt`, scored by sacreBLEU BLEU
and chrF and by exact match."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minitx.config import Config, DecodeConfig
from minitx.data.batching import encode_pairs
from minitx.data.corpus import Corpus, dataset_corpus, sample_rows, text_corpus
from minitx.data.sources import SYNTHETIC, column, load_pairs, parallel_files, split_name
from minitx.data.token_store import read_pairs, store_pairs
from minitx.data.tokenizer import Codecs
from minitx.errors import UserError
from minitx.inference.attention_maps import (
    attention_map,
    encoder_maps,
    recorded_maps,
    token_strings,
)
from minitx.inference.ensemble import Ensemble
from minitx.inference.scoring import score_pairs
from minitx.inference.steering import steering_tokens
from minitx.model.transformer import Seq2Seq
from minitx.runtime import Compute
from minitx.tasks.base import Task
from minitx.tasks.shared import pytorch_model, renamed_columns

if TYPE_CHECKING:
    import datasets

    from minitx.api import Model


class Translation(Task):
    name = "translation"
    metrics = ("bleu", "chrf", "exact_match", "loss")
    throughput_key = "tgt_tokens_per_s"
    tagged_column = "src"
    model_type = Seq2Seq
    generates_text = True
    counted = "sentences"
    shown_scores = ("bleu", "chrf", "exact_match", "loss", "ppl")

    def load_split(self, cfg: Config, split: str) -> datasets.Dataset:
        name, rename = renamed_columns(cfg.data, split)
        return load_pairs(cfg.data, name, rename)

    def training_columns(self, cfg: Config) -> list[str]:
        return ["src", "tgt"]

    def split_corpus(self, cfg: Config) -> Corpus:
        """Parallel text files are read line by line, anything else through its Dataset."""
        data = cfg.data
        name = split_name(data.splits, "train")
        local = Path(data.path).expanduser()
        renamed = data.rename_columns.get("train") or data.rename_columns.get(name)
        if data.path != SYNTHETIC and local.is_dir() and not renamed:
            files = parallel_files(local, name, data.src, data.tgt)
            if files:
                return text_corpus(*files, name)
        return dataset_corpus(self.load_split(cfg, "train"))

    def training_texts(self, cfg: Config, corpus: Corpus) -> tuple[list[str], list[str]]:
        sample = sample_rows(corpus, ["src", "tgt"], cfg.tokenizer.max_training_texts, cfg.run.seed)
        return sample["src"], sample["tgt"]

    def encode_split(self, raw: datasets.Dataset, codecs: Codecs, labels, split: str):
        return encode_pairs(raw, codecs.src, codecs.tgt)

    def store_train(self, directory: Path, corpus: Corpus, codecs: Codecs, labels, max_len: int):
        store_pairs(directory, corpus, codecs, max_len, "train")

    def read_train(self, directory: Path):
        return read_pairs(directory)

    def build_model(self, cfg: Config, codecs: Codecs, labels: list[str] | None) -> Seq2Seq:
        tgt = codecs.tgt
        return Seq2Seq(cfg.model, codecs.src.vocab_size, tgt.vocab_size, tgt.pad_id, codecs.joint)

    def validation_scores(self, model: Seq2Seq, split, data, cfg: Config, compute: Compute):
        """Loss and perplexity with greedy BLEU/chrF/exact match: the same search every time."""
        greedy = replace(cfg.decode, beam_size=1, n_best=1, sample=False)
        scores, _ = score_pairs(model, split, data.codecs, greedy, cfg.train.batch_tokens, compute)
        return scores

    def evaluate(
        self, model: Model, split: str, decode: DecodeConfig, steering: Sequence = ()
    ) -> dict:
        """BLEU, chrF, exact match, loss; the hypotheses go to <split>.hyp. `steering`, one per
        pair of the split, steers each translation."""
        cfg, codecs = model.config, model.codecs
        decode = replace(decode, n_best=1, alignments=False)
        pairs = encode_pairs(self.load_split(cfg, split), codecs.src, codecs.tgt)
        inputs = None
        if steering:
            if len(steering) != len(pairs.src_ids):
                raise UserError(
                    f"{len(steering)} steering lines for the {len(pairs.src_ids)} pairs of "
                    f"{split}: one line per pair, in order"
                )
            inputs = steering_tokens(steering, codecs.tgt, decode.max_phrases)
        # the loss needs the model's logits (an ensemble's combined log-probabilities)
        network = pytorch_model(model, "eval", ensembles=True)
        if isinstance(network, Ensemble):
            network.combine = decode.ensemble_combine
        scores, hypotheses = score_pairs(
            network, pairs, codecs, decode, cfg.train.batch_tokens, model.compute, inputs
        )
        model.run.eval_files(split).hypotheses.write_text(
            "".join(h + "\n" for h in hypotheses), encoding="utf-8"
        )
        return {
            "split": split,
            "data_split": split_name(cfg.data.splits, split),
            "sentences": len(pairs),
            "checkpoint_step": model.checkpoint_step,
            **scores,
            "decoding": asdict(decode),  # every setting, to reproduce the scores
        }

    @torch.no_grad()
    def attention_maps(self, model: Model, text: str) -> dict:
        """The greedy translation is fed back teacher-forced: encoder self-attention (source ×
        source), decoder self-attention (target × target) and cross-attention (target × source),
        per layer, each (H, Tq, Tk)."""
        network = pytorch_model(model, "attention")
        src_codec, tgt_codec, device = model.codecs.src, model.codecs.tgt, model.compute.device
        src_ids = [*src_codec.encode([text])[0], src_codec.eos_id]
        # Decoded before recording starts: the search runs the fused attention.
        greedy = replace(model.config.decode, beam_size=1, n_best=1, sample=False)
        (best, *_) = model.engine.translate([text], greedy)[0]
        tgt_ids = [tgt_codec.bos_id, *tgt_codec.encode([best.text])[0]]
        result = {
            "source_tokens": token_strings(src_codec, src_ids, "the text"),
            "translation": best.text,
            "target_tokens": token_strings(tgt_codec, tgt_ids, "its translation"),
        }
        src, tgt = torch.tensor([src_ids], device=device), torch.tensor([tgt_ids], device=device)
        with recorded_maps(network, model.compute) as maps:
            network(src, tgt)
            maps += encoder_maps(network)
            for i, layer in enumerate(network.decoder.layers):
                self_attention, cross = layer.self_attention, layer.cross_attention
                maps.append(attention_map("decoder_self", i, self_attention, "target", "target"))
                maps.append(attention_map("cross", i, cross, "target", "source"))
        return {**result, "maps": maps}

    def attention_layers(self, cfg: Config) -> int:
        return max(cfg.model.n_encoder_layers, cfg.model.n_decoder_layers)

    def model_summary(self, cfg: Config) -> dict:
        return {**super().model_summary(cfg), "n_decoder_layers": cfg.model.n_decoder_layers}

    def report_samples(self, run, reports: dict[str, dict]) -> dict[str, tuple[list, ...]]:
        """Per evaluated split with its hypotheses on disk: (sources, hypotheses, references)."""
        samples = {}
        for split in reports:
            hypotheses_file = run.eval_files(split).hypotheses
            if not hypotheses_file.is_file():
                continue
            dataset = self.load_split(run.config(), split)
            hypotheses = hypotheses_file.read_text(encoding="utf-8").split("\n")[: len(dataset)]
            if len(hypotheses) == len(dataset):
                samples[split] = (column(dataset, "src"), hypotheses, column(dataset, "tgt"))
        return samples
