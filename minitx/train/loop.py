"""train(): the one visible training loop, and TrainState, everything a resume needs besides weights.

forward → loss → backward → clip → step → log → validate → checkpoint, in that order, in one function.
"""

from __future__ import annotations

import math
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minitx import runtime
from minitx.config import Config, config_to_dict, parse_duration, save_config
from minitx.data.batching import Batch, EncodedPairs
from minitx.errors import TrainingInterrupted, UserError
from minitx.evaluate import score_pairs
from minitx.metrics import MetricsLog
from minitx.model.transformer import Seq2Seq, build_model
from minitx.progress import bar, info
from minitx.run_dir import RunData, config_differences, load_run_config, load_run_data
from minitx.train.checkpoint import (
    check_free_space,
    find_checkpoint,
    keep_snapshot,
    load_meta,
    load_trainer_state,
    load_weights,
    recover_checkpoints,
    save_checkpoint,
)
from minitx.train.optim import build_optimizer, build_scheduler

LOWER_IS_BETTER = {"loss"}


@dataclass
class TrainState:
    """Counters that survive a resume (saved in trainer.pt with the optimizer and RNG states)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    tgt_tokens: int = 0  # real target tokens trained on
    elapsed: float = 0.0  # training wall time in seconds, summed over resumes
    best_score: float | None = None
    bad_validations: int = 0  # validations since the best one, for early stopping

    def state_dict(self) -> dict:
        return asdict(self)


def is_better(score: float, best: float | None, metric: str) -> bool:
    if not math.isfinite(score):
        return False
    if best is None:
        return True
    return score < best if metric in LOWER_IS_BETTER else score > best


def train(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) the run in `run_dir`; return the final validation scores."""
    runtime.set_threads(cfg.run.threads)
    runtime.keep_freed_memory()
    runtime.seed_everything(cfg.run.seed, cfg.run.deterministic)
    device = runtime.resolve_device(cfg.run.device)
    if cfg.run.dtype == "fp16":
        raise UserError(
            "training in fp16 needs loss scaling, which minitx lacks; use run.dtype=bf16"
        )
    tc = cfg.train
    max_time = parse_duration(tc.max_time) if tc.max_time else math.inf

    data = load_run_data(cfg, run_dir, splits=("train", "validation"))
    src_codec, tgt_codec = data.codecs.src, data.codecs.tgt
    train_pairs, valid_pairs = data.pairs["train"], data.pairs["validation"]
    model = build_model(
        cfg.model, src_codec.vocab_size, tgt_codec.vocab_size, tgt_codec.pad_id, data.codecs.joint
    )
    model.to(device)
    optimizer = build_optimizer(model, tc.lr, tc.betas, tc.weight_decay)
    scheduler = build_scheduler(
        optimizer, tc.schedule, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr
    )
    state = TrainState()

    last_dir, best_dir = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    recover_checkpoints(last_dir.parent)
    n_params = sum(p.numel() for p in model.parameters())
    check_free_space(last_dir.parent, n_params)
    resume_from = find_checkpoint(last_dir)
    last_scores: dict = {}
    log = MetricsLog(run_dir / "metrics.jsonl")
    if resume_from is not None:
        last_scores = _restore(resume_from, model, optimizer, scheduler, state, device)
        # prepare_run_dir refused changes to data, tokenizer and model; the rest is recorded here.
        changed = config_differences(
            config_to_dict(load_run_config(run_dir)),
            config_to_dict(cfg),
            ("train", "decode", "run"),
        )
        log.write("resume", step=state.step, changed=changed)
        info(
            f"resuming {run_dir} from step {state.step} (epoch {state.epoch + 1})"
            + (f" with {'; '.join(changed)}" if changed else "")
        )
    save_config(cfg, run_dir / "config.yaml")
    info(
        f"training on {device} ({cfg.run.dtype}): {n_params / 1e6:.1f}M parameters, "
        f"{len(train_pairs)} training pairs, vocabulary {tgt_codec.vocab_size}"
    )
    if resume_from is None:
        log.write(
            "start",
            parameters=n_params,
            train_pairs=len(train_pairs),
            device=str(device),
            dtype=cfg.run.dtype,
        )

    def validate() -> dict:
        scores = validation_scores(model, valid_pairs, data, cfg, device)
        improved = is_better(
            scores[tc.early_stopping_metric], state.best_score, tc.early_stopping_metric
        )
        if improved:
            state.best_score, state.bad_validations = scores[tc.early_stopping_metric], 0
        else:
            state.bad_validations += 1
        log.write("validation", step=state.step, epoch=state.epoch, best=improved, **scores)
        info(
            f"step {state.step}: validation loss {scores['loss']:.3f}, BLEU {scores['bleu']:.2f}, "
            f"chrF {scores['chrf']:.2f}" + (" (best)" if improved else "")
        )
        meta = {"step": state.step, "epoch": state.epoch, "scores": scores}
        # best first: a crash between the two must not leave `last` claiming a best never saved
        if improved:
            save_checkpoint(best_dir, model, meta)
        save_checkpoint(last_dir, model, meta, _trainer_state(optimizer, scheduler, state))
        keep_snapshot(last_dir, state.step, tc.keep_last)
        return scores

    started = time.monotonic() - state.elapsed
    progress = bar(total=tc.max_steps, initial=state.step, desc="train", unit="step")
    window = {"loss": torch.zeros((), device=device), "tokens": 0, "since": time.monotonic()}
    last_validated = state.step if last_scores else -1
    stop_reason = _limit_reached(state, tc.max_steps, tc.max_epochs, max_time)
    interrupted = False
    with runtime.StopRequest() as stop_request:
        while stop_reason is None:
            batches = _epoch_batches(
                train_pairs, tc.batch_tokens, cfg.run.seed + state.epoch, tgt_codec
            )
            if state.batch_in_epoch == 0 and state.epoch == 0 and resume_from is None:
                info(f"epoch of {len(batches)} batches, {100 * _padding(batches):.1f}% padding")
            while state.batch_in_epoch < len(batches):
                micro_batches = batches[state.batch_in_epoch : state.batch_in_epoch + tc.accumulate]
                loss_sum, grad_norm = train_step(model, optimizer, micro_batches, cfg, device)
                if not torch.isfinite(grad_norm):
                    _stop_on_divergence(
                        run_dir, model, optimizer, scheduler, state, loss_sum, grad_norm
                    )
                lr = scheduler.get_last_lr()[0]  # the rate this step used
                scheduler.step()
                state.step += 1
                state.batch_in_epoch += len(micro_batches)
                n_tokens = sum(b.n_tgt_tokens for b in micro_batches)
                state.tgt_tokens += n_tokens
                window["loss"] += loss_sum
                window["tokens"] += n_tokens
                state.elapsed = time.monotonic() - started
                progress.update(1)

                if state.step % tc.log_every == 0:
                    seconds = max(time.monotonic() - window["since"], 1e-9)
                    loss = float(window["loss"]) / max(window["tokens"], 1)
                    log.write(
                        "train",
                        step=state.step,
                        epoch=state.epoch,
                        loss=round(loss, 4),
                        lr=lr,
                        grad_norm=round(float(grad_norm), 4),
                        tgt_tokens_per_s=round(window["tokens"] / seconds, 1),
                        elapsed=round(state.elapsed, 1),
                    )
                    progress.set_postfix(
                        loss=f"{loss:.3f}",
                        lr=f"{lr:.2e}",
                        tok_s=f"{window['tokens'] / seconds:.0f}",
                    )
                    window = {
                        "loss": torch.zeros((), device=device),
                        "tokens": 0,
                        "since": time.monotonic(),
                    }

                if state.step % tc.eval_every == 0:
                    last_scores, last_validated = validate(), state.step
                    if tc.patience is not None and state.bad_validations >= tc.patience:
                        stop_reason = f"no improvement in {tc.patience} validations"
                stop_reason = stop_reason or _limit_reached(
                    state, tc.max_steps, tc.max_epochs, max_time
                )
                if stop_reason is None and stop_request.signal_number is not None:
                    interrupted = True
                    stop_reason = f"stopped by {signal.Signals(stop_request.signal_number).name}"
                if stop_reason:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                stop_reason = _limit_reached(state, tc.max_steps, tc.max_epochs, max_time)
    progress.close()
    if interrupted:
        meta = {"step": state.step, "epoch": state.epoch}
        save_checkpoint(last_dir, model, meta, _trainer_state(optimizer, scheduler, state))
        log.write("end", step=state.step, epoch=state.epoch, reason=stop_reason)
        raise TrainingInterrupted(
            stop_request.signal_number,
            f"{stop_reason} at step {state.step}; saved {last_dir}; run the same command to resume",
        )
    if last_validated != state.step:
        last_scores = validate()
    log.write(
        "end",
        step=state.step,
        epoch=state.epoch,
        reason=stop_reason,
        elapsed=round(state.elapsed, 1),
    )
    info(
        f"stopped at step {state.step}: {stop_reason}; best validation {tc.early_stopping_metric} {state.best_score}"
    )
    return last_scores


def train_step(
    model: Seq2Seq,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[Batch],
    cfg: Config,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over `micro_batches`; the loss is normalised by their total target tokens.

    Returns the summed (label-smoothed) loss and the gradient norm as tensors, so that nothing waits
    for the device unless the caller logs them.
    """
    model.train()
    n_tokens = sum(b.n_tgt_tokens for b in micro_batches)
    loss_sum = torch.zeros((), device=device)
    for batch in micro_batches:
        batch = batch.to(device)
        with runtime.autocast(device, cfg.run.dtype):
            logits = model(batch.src, batch.tgt_in)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.tgt_out.flatten(),
            ignore_index=model.pad_id,
            label_smoothing=cfg.train.label_smoothing,
            reduction="sum",
        )
        (loss / n_tokens).backward()
        loss_sum += loss.detach()
    max_norm = cfg.train.clip_norm if cfg.train.clip_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    # A non-finite norm means the loss diverged: skip the update so the weights stay finite, and
    # let the caller stop. This costs one host sync per step, worth it to never save NaN weights.
    if torch.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


def validation_scores(
    model: Seq2Seq, pairs: EncodedPairs, data: RunData, cfg: Config, device: torch.device
) -> dict:
    """Loss, perplexity and greedy BLEU/chrF/exact match on (the first sentences of) the validation split."""
    if cfg.train.eval_max_sentences:
        pairs = pairs.subset(cfg.train.eval_max_sentences)
    scores, _ = score_pairs(
        model, pairs, data.codecs, device, cfg.run.dtype, cfg.train.batch_tokens, 1, cfg.decode
    )
    return scores


def _stop_on_divergence(run_dir, model, optimizer, scheduler, state, loss_sum, grad_norm) -> None:
    """Keep the last finite weights as a crash checkpoint (never `best`) and stop with the step."""
    crash_dir = run_dir / "checkpoints" / "crash"
    meta = {"step": state.step, "epoch": state.epoch, "failed_step": state.step + 1}
    save_checkpoint(crash_dir, model, meta, _trainer_state(optimizer, scheduler, state))
    raise UserError(
        f"the loss or gradient became non-finite at step {state.step + 1} "
        f"(loss {float(loss_sum):.4g}, gradient norm {float(grad_norm):.4g}); the weights before "
        f"it are in {crash_dir}; lower train.lr or raise train.warmup_steps"
    )


def _limit_reached(
    state: TrainState, max_steps: int, max_epochs: int, max_time: float
) -> str | None:
    if state.step >= max_steps:
        return f"reached train.max_steps ({max_steps})"
    if state.epoch >= max_epochs:
        return f"reached train.max_epochs ({max_epochs})"
    if state.elapsed >= max_time:
        return f"reached train.max_time ({max_time:g} s)"
    return None


def _padding(batches: list[Batch]) -> float:
    """Share of target positions that are padding."""
    return 1.0 - sum(b.n_tgt_tokens for b in batches) / sum(b.tgt_out.numel() for b in batches)


def _epoch_batches(pairs: EncodedPairs, batch_tokens: int, seed: int, codec) -> list[Batch]:
    return pairs.batches(batch_tokens, seed, codec.pad_id, codec.bos_id, codec.eos_id)


def _trainer_state(optimizer, scheduler, state: TrainState) -> dict:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state.state_dict(),
        "rng": {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def _restore(
    directory: Path, model, optimizer, scheduler, state: TrainState, device: torch.device
) -> dict:
    """Load a checkpoint into the model, optimizer, scheduler, state and RNGs; return its scores."""
    meta = load_meta(directory)
    load_weights(directory, model, device)
    saved = load_trainer_state(directory)
    try:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        for key, value in saved["state"].items():
            setattr(state, key, value)
        random.setstate(_as_tuple(saved["rng"]["python"]))
        torch.set_rng_state(saved["rng"]["torch"])
        if saved["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        elif saved["rng"]["cuda"]:
            info(
                "note: this run was saved on CUDA; its CUDA random state cannot apply on this device"
            )
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise UserError(
            f"cannot resume from {directory}: its trainer state does not fit ({exc})"
        ) from None
    return meta.get("scores", {})


def _as_tuple(value):
    """random.setstate needs tuples where serialisation may have produced lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
