"""Training speed of the Multi30k model on real Multi30k batches, against torch.nn.Transformer.

    python scripts/bench_train.py [--dtype fp32|bf16] [--data ../shared/data/multi30k] [--quick]
                                  [--device auto|cpu|cuda]

Prints a table and one JSON line. Both models train the same batches from the same initial seed;
the figure is the median over `--steps` timed steps after `--warmup` untimed ones. Model FLOPs are
6 × (matmul parameters touched per token) × tokens, plus 12 · d_model · length per token for each
attention block's scores (see ../shared/PERF-NOTES.md). On a GPU the JSON line adds the model
FLOP/s utilisation (MFU) against the card's dense bf16 peak from its data sheet.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

import datasets
import torch
from torch import nn

from minitx import runtime
from minitx.config import load_config
from minitx.data.batching import encode_pairs
from minitx.data.tokenizer import build_codecs
from minitx.model.positions import SinusoidalPositions
from minitx.model.transformer import build_model
from minitx.runtime import Compute
from minitx.tasks import get_task
from minitx.training.distributed import Ranks
from minitx.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets; the first name
# contained in torch.cuda.get_device_name() wins, so the more specific names come first.
GPU_BF16_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
}


def model_flops(batch, cfg) -> float:
    d, d_ff, vocab = cfg.model.d_model, cfg.model.d_ff, cfg.tokenizer.vocab_size
    src_tokens = int((batch.src != 0).sum())
    tgt_tokens = batch.n_targets
    src_len, tgt_len = batch.src.shape[1], batch.tgt_in.shape[1]
    encoder = cfg.model.n_encoder_layers * (4 * d * d + 2 * d * d_ff) * src_tokens
    decoder = (cfg.model.n_decoder_layers * (8 * d * d + 2 * d * d_ff) + d * vocab) * tgt_tokens
    scores = (
        12
        * d
        * (
            cfg.model.n_encoder_layers * src_len * src_tokens
            + cfg.model.n_decoder_layers * (tgt_len + src_len) * tgt_tokens
        )
    )
    return 6 * (encoder + decoder) + scores


class ReferenceTransformer(nn.Module):
    """The same sizes built from `torch.nn.Transformer` (pre-norm, tied embeddings): the baseline."""

    def __init__(self, cfg, vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, cfg.d_model, padding_idx=pad_id)
        self.positions = SinusoidalPositions(cfg.d_model)
        self.transformer = nn.Transformer(
            cfg.d_model, cfg.n_heads, cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.d_ff,
            cfg.dropout, batch_first=True, norm_first=True,
        )  # fmt: skip
        self.output = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.output.weight = self.embedding.weight
        self.scale = cfg.d_model**0.5

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids) * self.scale + self.positions(ids.shape[1])

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(
            tgt_in.shape[1], device=tgt_in.device, dtype=torch.bool
        )
        hidden = self.transformer(
            self.embed(src), self.embed(tgt_in), tgt_mask=causal, tgt_is_causal=True,
            src_key_padding_mask=src == self.pad_id, memory_key_padding_mask=src == self.pad_id,
        )  # fmt: skip
        return self.output(hidden)


def make_trainer(model, cfg, compute: Compute, compile_model: bool = False) -> Trainer:
    """minitx's Trainer (AdamW, fused on CUDA) for `model` in one process; `compile_model` runs
    the step through torch.compile (falling back to eager where it cannot compile)."""
    train_cfg = replace(cfg.train, compile=compile_model)
    return Trainer(model, train_cfg, compute, Ranks(device=compute.device))


def one_step(trainer: Trainer, batch) -> None:
    """minitx's training step on one batch (the loss divided by its target tokens)."""
    trainer.step([batch], batch.n_targets)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Trainer, batches, cfg, warmup: int) -> tuple[float, float]:
    """Median target tokens/s and model FLOP/s of training steps after `warmup` untimed ones."""
    device = trainer.compute.device
    tokens_per_s, flops_per_s = [], []
    for i, batch in enumerate(batches):
        synchronize(device)
        start = time.perf_counter()
        one_step(trainer, batch)
        synchronize(device)
        seconds = time.perf_counter() - start
        if i >= warmup:
            tokens_per_s.append(batch.n_targets / seconds)
            flops_per_s.append(model_flops(batch, cfg) / seconds)
    return statistics.median(tokens_per_s), statistics.median(flops_per_s)


def matmul_gflops(dtype: torch.dtype, device: torch.device) -> float:
    n = 2048 if device.type == "cpu" else 8192  # a GPU needs a larger product to reach its peak
    a = torch.randn(n, n // 2, dtype=dtype, device=device)
    b = torch.randn(n // 2, n, dtype=dtype, device=device)
    times = []
    for _ in range(12):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n * (n // 2) * n / statistics.median(times[2:]) / 1e9


def profile_steps(trainer: Trainer, batches) -> None:
    """Where a training step spends its time: the top ops by self CPU time over `batches`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for batch in batches:
            one_step(trainer, batch)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="8 timed steps: a smoke check")
    parser.add_argument(
        "--compile", action="store_true", help="time minitx's model through torch.compile"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print torch.profiler's top ops for 5 steps"
    )
    parser.add_argument(
        "--default-malloc", action="store_true", help="skip runtime.keep_freed_memory (to compare)"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 8, 2
    datasets.disable_progress_bars()  # as the CLI does: only the results are printed

    if not args.default_malloc:
        runtime.keep_freed_memory()
    device = runtime.resolve_device(args.device)
    runtime.use_fast_matmuls(device)
    cfg = load_config(
        ROOT / "configs" / "multi30k_de_en_raw.yaml",
        [f"data.path={args.data}", f"run.dtype={args.dtype}"],
    )
    train = get_task(cfg.task).load_split(cfg, "train")
    codecs = build_codecs(train["src"], train["tgt"], cfg.tokenizer, cfg.tokenizer.joint)
    pairs = encode_pairs(train, codecs.src, codecs.tgt, cfg.data.max_len)
    groups = pairs.batch_groups(cfg.train.batch_tokens, seed=1)
    # as `minitx train` logs it: the share of the epoch's source positions that are padding
    padding = pairs.padding_fraction(groups)
    batches = [pairs.batch(g.tolist(), codecs.tgt) for g in groups[: args.warmup + args.steps]]

    vocab = codecs.tgt.vocab_size
    torch.manual_seed(0)
    ours = build_model(cfg.model, vocab, vocab, 0, codecs.joint)
    torch.manual_seed(0)
    reference = ReferenceTransformer(cfg.model, vocab)
    compute = Compute(device, cfg.run.dtype)
    # torch.compile shares the weights; the warm-up steps absorb the compilation
    trainer = make_trainer(ours, cfg, compute, compile_model=args.compile)
    reference_trainer = make_trainer(reference, cfg, compute)
    tokens_per_s, flops_per_s = time_steps(trainer, batches, cfg, args.warmup)
    reference_tokens_per_s, _ = time_steps(reference_trainer, batches, cfg, args.warmup)

    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "compile": args.compile,
        "tgt_tokens_per_s": round(tokens_per_s, 1),
        "reference_tgt_tokens_per_s": round(reference_tokens_per_s, 1),
        "model_gflops_per_s": round(flops_per_s / 1e9, 1),
        "matmul_gflops_per_s": round(matmul_gflops(torch.float32, device), 1),
        "bf16_matmul_gflops_per_s": round(matmul_gflops(torch.bfloat16, device), 1),
        "padding_fraction": round(padding, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "malloc_tuned": not args.default_malloc,
    }
    if device.type == "cuda":
        name = summary["device"]
        peak = next((v for k, v in GPU_BF16_PEAK_TFLOPS.items() if k in name), None)
        summary["gpu_bf16_peak_tflops"] = peak
        summary["mfu"] = round(flops_per_s / (peak * 1e12), 4) if peak else None
    if args.profile:
        profile_steps(trainer, batches[-5:])
    print(f"{'model':<24} {'tgt tok/s':>10}")
    print(f"{'minitx':<24} {tokens_per_s:>10.0f}")
    print(f"{'torch.nn.Transformer':<24} {reference_tokens_per_s:>10.0f}")
    print(f"{'minitx / reference':<24} {tokens_per_s / reference_tokens_per_s:>10.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
