"""train(): the one visible training loop, and TrainState, everything a resume needs besides weights.

forward → loss → backward → clip → step → log → validate → checkpoint, in that order, in one function.

Under torchrun the same function runs in every process: each step's group of batches is split
between the ranks, DistributedDataParallel all-reduces the gradients, rank 0 alone validates and
writes, and the ranks agree every step on whether to stop.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from minitx import runtime
from minitx.config import TASK_METRICS, Config, config_to_dict, parse_duration, save_config
from minitx.data.batching import Batch, LabelBatch
from minitx.distributed import Ranks
from minitx.errors import ReportedElsewhere, TrainingInterrupted, UserError
from minitx.evaluate import score_labels, score_pairs
from minitx.metrics import MetricsLog
from minitx.model.transformer import Classifier, Seq2Seq
from minitx.progress import bar, info
from minitx.run_dir import (
    RunData,
    build_run_model,
    config_differences,
    load_run_config,
    load_run_data,
)
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
from minitx.train.objective import logits_and_targets, summed_loss
from minitx.train.optim import build_optimizer, build_scheduler

LOWER_IS_BETTER = {"loss"}
# What the loss counts, per task, for the throughput in the logs: target tokens, or examples.
THROUGHPUT_KEY = {"translation": "tgt_tokens_per_s", "classification": "examples_per_s"}


@dataclass
class TrainState:
    """Counters that survive a resume (saved in trainer.pt with the optimizer and RNG states)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    targets: int = 0  # loss terms trained on: target tokens (translation) or examples
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


def train(cfg: Config, run_dir: Path, ranks: Ranks | None = None) -> dict:
    """Train (or resume) the run in `run_dir`; return the final validation scores (rank 0; the
    other ranks of a torchrun group return {})."""
    runtime.set_threads(cfg.run.threads)
    runtime.keep_freed_memory()
    runtime.seed_everything(cfg.run.seed, cfg.run.deterministic)
    ranks = ranks or Ranks(device=runtime.resolve_device(cfg.run.device))
    device = ranks.device
    # `auto` is settled here and saved resolved in config.yaml, so the run says what it used.
    chosen = " chosen by run.dtype auto" if cfg.run.dtype == "auto" else ""
    cfg = runtime.with_resolved_dtype(cfg, device)
    runtime.use_fast_matmuls(device)
    tc = cfg.train
    max_time = parse_duration(tc.max_time) if tc.max_time else math.inf

    # Rank 0 first: it may train and save the tokenizer, which the other ranks then load.
    data = ranks.main_first(lambda: load_run_data(cfg, run_dir, splits=("train", "validation")))
    tgt_codec = data.codecs.tgt  # classification: the one codec (src and tgt are the same)
    train_data, valid_data = data.splits["train"], data.splits["validation"]
    model = build_run_model(cfg, data.codecs, data.labels)
    model.to(device)
    metric = tc.early_stopping_metric
    optimizer = build_optimizer(
        model, tc.lr, tc.betas, tc.weight_decay, fused=device.type == "cuda"
    )
    scheduler = build_scheduler(
        optimizer, tc.schedule, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr
    )
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (a disabled scaler
    # passes everything through).
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.run.dtype == "fp16")
    state = TrainState()

    last_dir, best_dir = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    n_params = sum(p.numel() for p in model.parameters())
    ranks.main_only(
        lambda: (
            recover_checkpoints(last_dir.parent),
            check_free_space(last_dir.parent, n_params),
        )
    )
    resume_from = find_checkpoint(last_dir)
    last_scores: dict = {}
    log = MetricsLog(
        run_dir / "metrics.jsonl" if ranks.is_main else None,
        run_dir / "tensorboard" if cfg.run.tensorboard and ranks.is_main else None,
    )
    if resume_from is not None:
        last_scores = _restore(resume_from, model, optimizer, scheduler, scaler, state, device)
    if resume_from is not None and ranks.is_main:  # the others must not read what rank 0 rewrites
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
    if ranks.is_main:
        save_config(cfg, run_dir / "config.yaml")
    if ranks.distributed:
        # Every rank has the same weights and batch order; dropout must differ between ranks,
        # and a resumed run must draw the same masks again: seed from the rank and the step.
        torch.manual_seed(hash((cfg.run.seed, ranks.rank, state.step)) % 2**63)
    classes = f", {len(data.labels)} classes" if data.labels else ""
    info(
        f"training a {cfg.task} model on {device} ({cfg.run.dtype}{chosen}): {n_params / 1e6:.1f}M "
        f"parameters, {len(train_data)} training examples, vocabulary {tgt_codec.vocab_size}"
        + classes
        + (f"; {ranks.world_size} processes" if ranks.distributed else "")
    )
    if resume_from is None:
        log.write(
            "start",
            task=cfg.task,
            parameters=n_params,
            train_examples=len(train_data),
            device=str(device),
            dtype=cfg.run.dtype,
            processes=ranks.world_size,
        )

    def validate() -> dict:
        scores = validation_scores(model, valid_data, data, cfg, device)
        improved = is_better(scores[metric], state.best_score, metric)
        if improved:
            state.best_score, state.bad_validations = scores[metric], 0
        else:
            state.bad_validations += 1
        log.write("validation", step=state.step, epoch=state.epoch, best=improved, **scores)
        shown = ", ".join(f"{key} {scores[key]:g}" for key in TASK_METRICS[cfg.task])
        info(f"step {state.step}: validation {shown}" + (" (best)" if improved else ""))
        meta = {"step": state.step, "epoch": state.epoch, "scores": scores}
        # best first: a crash between the two must not leave `last` claiming a best never saved
        if improved:
            save_checkpoint(best_dir, model, meta)
        save_checkpoint(last_dir, model, meta, _trainer_state(optimizer, scheduler, scaler, state))
        keep_snapshot(last_dir, state.step, tc.keep_last)
        return scores

    # The training step runs the model through DDP (several processes) and torch.compile (when
    # asked); both share its weights, so saving, validating and resuming use `model` itself.
    replica = model
    if ranks.distributed:
        # The model's buffers are constants computed from the config (sinusoid table, rotary
        # frequencies, ALiBi slopes; no running statistics), and the sinusoid table grows on the
        # ranks that meet a longer batch: broadcasting rank 0's copy every step would be wasted
        # work at best and a shape mismatch at worst.
        # (Recent torch calls the switch forward_sync_buffers; older versions broadcast_buffers.)
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        replica = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync
        )
    no_sync = replica.no_sync if ranks.distributed else contextlib.nullcontext
    step_model = torch.compile(replica) if tc.compile else replica
    started = time.monotonic() - state.elapsed
    progress = bar(total=tc.max_steps, initial=state.step, desc="train", unit="step")
    window = {"loss": torch.zeros((), device=device), "targets": 0, "since": time.monotonic()}
    last_validated = state.step if last_scores else -1
    stop_reason = _limit_reached(state, tc.max_steps, tc.max_epochs, max_time)
    interrupted = False
    world = ranks.world_size
    with runtime.StopRequest() as stop_request:
        while stop_reason is None:
            batches = train_data.batches(tc.batch_tokens, cfg.run.seed + state.epoch, tgt_codec)
            if len(batches) < world:
                raise UserError(
                    f"the training data makes {len(batches)} batches per epoch, fewer than the "
                    f"{world} processes; lower train.batch_tokens or start fewer processes"
                )
            if device.type == "cuda":  # page-locked, so that copies to the GPU run asynchronously
                batches = [batch.pin_memory() for batch in batches]
            if state.batch_in_epoch == 0 and state.epoch == 0 and resume_from is None:
                padding = _padding(batches, tgt_codec.pad_id)
                info(f"epoch of {len(batches)} batches, {100 * padding:.1f}% padding")
            # A step takes `accumulate` batches per rank. Like DistributedSampler(drop_last=True),
            # an epoch skips its last batches when fewer than one per rank remain (other batches
            # each epoch: the order is reshuffled).
            while len(batches) - state.batch_in_epoch >= world:
                group = batches[state.batch_in_epoch : state.batch_in_epoch + tc.accumulate * world]
                share = len(group) // world
                micro_batches = group[ranks.rank * share : (ranks.rank + 1) * share]
                # Every rank holds the whole group, so the global number of targets needs no
                # communication. DDP averages gradients over ranks; dividing each rank's loss by
                # targets / world makes that average the gradient of the loss summed over the
                # group divided by its targets: N ranks train like one process with N× the batch.
                n_targets = sum(b.n_targets for b in group[: share * world])
                step_args = (optimizer, micro_batches, n_targets / world, cfg, device, scaler)
                try:
                    loss_sum, grad_norm = train_step(step_model, *step_args, no_sync)
                except Exception as exc:  # torch.compile fails at its first call, in many ways
                    if step_model is replica:
                        raise
                    info(f"warning: torch.compile failed ({type(exc).__name__}); training eagerly")
                    optimizer.zero_grad(set_to_none=True)
                    step_model = replica
                    loss_sum, grad_norm = train_step(replica, *step_args, no_sync)
                # fp16: an overflowing gradient is the loss scaler's business (it skips the step
                # and lowers the scale); only a non-finite loss means divergence. The loss is
                # per rank, so the ranks agree before any of them stops. The gradient norm is
                # computed after the all-reduce, the same on every rank: no agreement needed.
                diverged = not torch.isfinite(loss_sum if scaler.is_enabled() else grad_norm)
                if ranks.distributed and scaler.is_enabled():
                    (diverged,) = ranks.any([diverged])
                if diverged:
                    _stop_on_divergence(
                        run_dir,
                        model,
                        optimizer,
                        scheduler,
                        scaler,
                        state,
                        loss_sum,
                        grad_norm,
                        ranks,
                    )
                lr = scheduler.get_last_lr()[0]  # the rate this step used
                scheduler.step()
                state.step += 1
                state.batch_in_epoch += len(group)
                state.targets += n_targets
                window["loss"] += loss_sum
                window["targets"] += n_targets
                state.elapsed = time.monotonic() - started
                progress.update(1)

                if state.step % tc.log_every == 0:
                    seconds = max(time.monotonic() - window["since"], 1e-9)
                    loss = float(ranks.sum(window["loss"])) / max(window["targets"], 1)
                    throughput = window["targets"] / seconds
                    log.write(
                        "train",
                        step=state.step,
                        epoch=state.epoch,
                        loss=round(loss, 4),
                        lr=lr,
                        grad_norm=round(float(grad_norm), 4),
                        **{THROUGHPUT_KEY[cfg.task]: round(throughput, 1)},
                        elapsed=round(state.elapsed, 1),
                    )
                    progress.set_postfix(
                        loss=f"{loss:.3f}", lr=f"{lr:.2e}", per_s=f"{throughput:.0f}"
                    )
                    window = {
                        "loss": torch.zeros((), device=device),
                        "targets": 0,
                        "since": time.monotonic(),
                    }

                if state.step % tc.eval_every == 0:
                    last_validated = state.step
                    if ranks.is_main:
                        last_scores = validate()
                        if tc.patience is not None and state.bad_validations >= tc.patience:
                            stop_reason = f"no improvement in {tc.patience} validations"
                stop_reason = stop_reason or _limit_reached(
                    state, tc.max_steps, tc.max_epochs, max_time
                )
                signal_number = stop_request.signal_number
                if ranks.distributed:  # clocks, signals and patience are per rank: agree
                    signalled, stopping = ranks.any([signal_number is not None, bool(stop_reason)])
                    if signalled and signal_number is None:
                        signal_number = signal.SIGTERM  # as torchrun forwards it
                    if stopping and not stop_reason:
                        stop_reason = "stopped with the other ranks"
                if stop_reason is None and signal_number is not None:
                    interrupted = True
                    stop_reason = f"stopped by {signal.Signals(signal_number).name}"
                if stop_reason:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                # No time check here: the step before just made it, and a clock read here could
                # differ between ranks.
                stop_reason = _limit_reached(state, tc.max_steps, tc.max_epochs, math.inf)
    progress.close()
    if interrupted:
        if ranks.is_main:
            meta = {"step": state.step, "epoch": state.epoch}
            trainer_state = _trainer_state(optimizer, scheduler, scaler, state)
            save_checkpoint(last_dir, model, meta, trainer_state)
            log.write("end", step=state.step, epoch=state.epoch, reason=stop_reason)
        ranks.barrier()  # no rank exits (and has torchrun stop the rest) before the save is done
        raise TrainingInterrupted(
            signal_number,
            f"{stop_reason} at step {state.step}; saved {last_dir}; run the same command to resume",
        )
    if not ranks.is_main:
        return {}
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
        f"stopped at step {state.step}: {stop_reason}; best validation {metric} {state.best_score}"
    )
    return last_scores


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[Batch] | list[LabelBatch],
    normaliser: float,
    cfg: Config,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    no_sync=contextlib.nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over `micro_batches`, the loss divided by `normaliser` (the targets of
    the step: target tokens or examples), so accumulated micro-batches train like one large batch.

    `model` may be a DDP replica: `no_sync` then keeps the gradient all-reduce for the last
    micro-batch. Returns the summed (label-smoothed) loss and the gradient norm as tensors, so that
    nothing waits for the device unless the caller logs them.
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        batch = batch.to(device)
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else no_sync():
            with runtime.autocast(device, cfg.run.dtype):
                logits, targets = logits_and_targets(model, batch)
            loss = summed_loss(logits, targets, cfg.train.label_smoothing)
            scaler.scale(loss / normaliser).backward()
        loss_sum += loss.detach()
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    max_norm = cfg.train.clip_norm if cfg.train.clip_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler.is_enabled():
        scaler.step(optimizer)  # skips the update when a gradient overflowed
        scaler.update()
    elif torch.isfinite(grad_norm):
        # A non-finite norm means the loss diverged: skip the update so the weights stay finite,
        # and let the caller stop. One host sync per step, worth it to never save NaN weights.
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


def validation_scores(
    model: Seq2Seq | Classifier, valid_data, data: RunData, cfg: Config, device: torch.device
) -> dict:
    """On (the first examples of) the validation split: loss and perplexity with greedy
    BLEU/chrF/exact match (translation), or loss with accuracy and macro-F1 (classification)."""
    if cfg.train.eval_max_sentences:
        valid_data = valid_data.subset(cfg.train.eval_max_sentences)
    if cfg.task == "classification":
        report = score_labels(
            model,
            valid_data,
            data.codecs.src,
            data.labels,
            device,
            cfg.run.dtype,
            cfg.train.batch_tokens,
        )
        return {key: report[key] for key in ("loss", "accuracy", "macro_f1")}
    scores, _ = score_pairs(
        model, valid_data, data.codecs, device, cfg.run.dtype, cfg.train.batch_tokens, 1, cfg.decode
    )
    return scores


def _stop_on_divergence(
    run_dir, model, optimizer, scheduler, scaler, state, loss_sum, grad_norm, ranks: Ranks
) -> None:
    """Keep the last finite weights as a crash checkpoint (never `best`) and stop with the step.

    Every rank of a torchrun group comes here at the same step; rank 0 saves and reports."""
    crash_dir = run_dir / "checkpoints" / "crash"
    if ranks.is_main:
        meta = {"step": state.step, "epoch": state.epoch, "failed_step": state.step + 1}
        trainer_state = _trainer_state(optimizer, scheduler, scaler, state)
        save_checkpoint(crash_dir, model, meta, trainer_state)
    ranks.barrier()
    raise (UserError if ranks.is_main else ReportedElsewhere)(
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


def _padding(batches: list[Batch] | list[LabelBatch], pad_id: int) -> float:
    """Share of source positions that are padding."""
    real = sum(int((b.src != pad_id).sum()) for b in batches)
    return 1.0 - real / sum(b.src.numel() for b in batches)


def _trainer_state(optimizer, scheduler, scaler, state: TrainState) -> dict:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "state": state.state_dict(),
        "rng": {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def _restore(
    directory: Path, model, optimizer, scheduler, scaler, state: TrainState, device: torch.device
) -> dict:
    """Load a checkpoint into the model, optimizer, scheduler, loss scaler, state and RNGs; return
    its scores."""
    meta = load_meta(directory)
    load_weights(directory, model, device)
    saved = load_trainer_state(directory)
    try:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):  # written by fp16 runs only (and not by older versions)
            scaler.load_state_dict(saved["scaler"])
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
