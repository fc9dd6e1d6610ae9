"""The LoRA training loop: seeded, length-grouped, checkpointed, resumable, cancellable.

`train()` takes plain examples and callbacks; the Django side (factory.services) turns the callbacks
into job-row updates. A checkpoint holds the adapter, optimizer, scheduler, RNG states and the data
position (epoch, batch); resuming regenerates the epoch's batch order from the seed and skips ahead.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from factory.training import data as batching
from factory.training.artifacts import ADAPTER_FILE, file_sha256
from factory.training.head import PROBE, init_head
from factory.training.metrics import classification_metrics, perplexity
from factory.training.modeling import NF4, load_base, load_tokenizer, pick_device, prepare_kbit, wrap_lora
from factory.training.types import (
    CLASSIFICATION,
    Example,
    Progress,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainingSuperseded,
    TrainResult,
)

logger = logging.getLogger(__name__)

OOM_MESSAGE = ("Out of memory at batch size {bs} and max length {ml} on {device}. "
               "Lower the batch size or the max sequence length and retry.")
CHECKPOINT, BEST, ADAPTER = "checkpoint", "best", "adapter"
CANCEL, SUPERSEDED = "cancel", "superseded"
MIN_DELTA = 1e-4  # a validation score must beat the best by this much to count as better


@dataclass
class Callbacks:
    """Hooks the loop calls. `should_stop` runs before every step: return "cancel" or "superseded"."""

    on_progress: Callable[[Progress], None] | None = None
    on_eval: Callable[[dict], None] | None = None
    on_log: Callable[[str], None] | None = None
    on_checkpoint: Callable[[int], None] | None = None
    should_stop: Callable[[], str | None] | None = None


@dataclass
class _State:
    """What a checkpoint must carry besides tensors; JSON."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of `epoch` already done
    best_metric: float | None = None
    best_epoch: int = -1
    best_metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    stale_evals: int = 0  # evaluations since the best one (early stopping)
    stopped_early: bool = False


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


def oom_error(config: TrainConfig, device: torch.device) -> TrainingError:
    return TrainingError(OOM_MESSAGE.format(bs=config.batch_size, ml=config.max_length, device=device.type))


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# LoRA weights only. With LoRA on a tied output layer PEFT would also save that layer's whole weight (the
# base's embeddings, vocabulary x hidden) into every adapter; the base already has it.
ADAPTER_ONLY = {"save_embedding_layers": False}


def _save_checkpoint(out: Path, model, optimizer, scheduler, state: _State) -> None:
    """Write a complete checkpoint beside the old one, then swap: a kill mid-write loses nothing."""
    tmp, final, old = out / f"{CHECKPOINT}.tmp", out / CHECKPOINT, out / f"{CHECKPOINT}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), **ADAPTER_ONLY)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state.__dict__))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out: Path) -> Path | None:
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        if (out / name / "state.json").is_file():
            return out / name
    return None


def checkpoint_step(out: str | Path) -> int:
    ckpt = latest_checkpoint(Path(out))
    return json.loads((ckpt / "state.json").read_text())["step"] if ckpt else 0


def _load_checkpoint(ckpt: Path, model, optimizer, scheduler) -> _State:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(ckpt / ADAPTER_FILE)))
    # weights_only=False: these files are our own checkpoints (RNG states hold numpy objects).
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
    return _State(**json.loads((ckpt / "state.json").read_text()))


def _evaluate(model, data: batching.Encoded, *, config: TrainConfig, pad_id: int, device, autocast) -> dict:
    model.eval()
    order = sorted(range(len(data)), key=lambda i: -len(data.input_ids[i]))
    size = config.batch_size * 2
    preds: list[int] = []
    truth: list[int] = []
    loss_sum, weight = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            batch = {k: v.to(device) for k, v in batching.collate(data, idx, pad_id=pad_id, task=config.task).items()}
            with autocast():
                out = model(**batch)
            if config.task == CLASSIFICATION:
                loss_sum += float(out.loss) * len(idx)
                weight += len(idx)
                preds.extend(out.logits.float().argmax(-1).tolist())
                truth.extend(batch["labels"].tolist())
            else:
                n = int((batch["labels"][:, 1:] != batching.LABEL_PAD).sum())
                loss_sum += float(out.loss) * n
                weight += n
    model.train()
    mean_loss = loss_sum / max(1, weight)
    if config.task == CLASSIFICATION:
        return {"eval_loss": mean_loss, **classification_metrics(truth, preds, config.labels)}
    return {"eval_loss": mean_loss, "perplexity": perplexity(mean_loss)}


def majority_baseline(train_labels: list[int], eval_labels: list[int], labels: list[str]) -> dict:
    """What always answering the training split's most common label scores on the evaluation split: the
    floor a classifier must beat to have learnt anything."""
    counts = [0] * len(labels)
    for y in train_labels:
        counts[y] += 1
    top = max(range(len(labels)), key=lambda i: (counts[i], -i))
    m = classification_metrics(eval_labels, [top] * len(eval_labels), labels)
    return {"label": labels[top], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def _score(config: TrainConfig, metrics: dict) -> float:
    """Higher is better: macro-F1 for classification, minus the evaluation loss for generation."""
    return metrics["macro_f1"] if config.task == CLASSIFICATION else -metrics["eval_loss"]


def prepare(config: TrainConfig, examples: list[Example]):
    """Tokenizer, split and encoded sets: shared by the trainer and the benchmark's reference script."""
    if not Path(config.model_path).is_dir():
        raise TrainingError(f"The base model folder {config.model_path} does not exist (was it moved or deleted?).")
    tokenizer = load_tokenizer(config.model_path, chat_template=config.chat_template)
    train_ex, eval_ex = batching.split_examples(examples, eval_split=config.eval_split, seed=config.seed, task=config.task)
    enc = dict(tokenizer=tokenizer, task=config.task, labels=config.labels, max_length=config.max_length)
    train_set, eval_set = batching.encode(train_ex, **enc), batching.encode(eval_ex, **enc)
    if config.packing and config.task != CLASSIFICATION:
        train_set = batching.pack(train_set, max_length=config.max_length, seed=config.seed)
    return tokenizer, train_set, eval_set


def param_groups(model, config: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups: every trainable parameter at the learning rate, except the LoRA B
    matrices (`lora_B`, `lora_embedding_B`) at learning_rate x loraplus_ratio when that is above 1 (LoRA+).
    The scheduler scales each group's rate by the same factor, so the ratio holds through warm-up and decay."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.loraplus_ratio <= 1.0:
        return [{"params": [p for _, p in trainable], "lr": config.learning_rate}]
    fast = [p for n, p in trainable if ".lora_B." in n or ".lora_embedding_B." in n]
    fast_ids = {id(p) for p in fast}
    groups = [{"params": [p for _, p in trainable if id(p) not in fast_ids], "lr": config.learning_rate},
              {"params": fast, "lr": config.learning_rate * config.loraplus_ratio}]
    return [g for g in groups if g["params"]]


def train(config: TrainConfig, examples: list[Example], *, output_dir: str | Path,
          callbacks: Callbacks | None = None) -> TrainResult:
    """Train a LoRA adapter; resume from `output_dir`'s checkpoint when there is one.

    Raises TrainingError (user-actionable: data, memory, model), TrainingCancelled (a checkpoint was kept).
    """
    from transformers import get_linear_schedule_with_warmup

    cb = callbacks or Callbacks()
    log = cb.on_log or (lambda msg: logger.info(msg))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    device, dtype = pick_device(config.device)
    if device.type == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    tokenizer, train_set, eval_set = prepare(config, examples)
    pad_id = tokenizer.pad_token_id
    log(f"{len(train_set)} training {'rows (packed)' if config.packing else 'examples'} and {len(eval_set)} "
        f"evaluation examples; device {device.type}, {'bf16' if dtype == torch.bfloat16 else 'fp32'}")
    if train_set.loss_masks is not None:
        log("conversations: loss on the assistant's tokens only")
    if train_set.dropped + eval_set.dropped:
        log(f"{train_set.dropped + eval_set.dropped} conversations dropped: no answer within "
            f"{config.max_length} tokens")

    quantized = config.quantization == NF4
    model = load_base(config.model_path, task=config.task, labels=config.labels, pad_token_id=pad_id,
                      quantization=config.quantization, device=str(device))
    if quantized:
        model = prepare_kbit(model)
        if device.type != "cuda":  # the factory sends QLoRA jobs to CUDA workers only; tests run it on CPU
            log("QLoRA on a CPU: bitsandbytes' CPU kernels, far slower than a GPU")
        log("QLoRA: base Linear layers in 4-bit NF4 (double quantization, bf16 compute), gradient checkpointing")
    model = wrap_lora(model, task=config.task, r=config.lora_r, alpha=config.lora_alpha,
                      dropout=config.lora_dropout, target_modules=config.target_modules, layers=config.layers)
    if not quantized:  # a 4-bit model was placed at load; bitsandbytes' weights are not moved afterwards
        model.to(device)
    model.train()
    trainable, total = model.get_nb_trainable_parameters()
    log(f"LoRA r={config.lora_r} on {config.target_modules}: {trainable:,} trainable of {total:,} parameters")

    longest = max(train_set.lengths)
    hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd", 0)
    layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", 0)
    vocab = getattr(model.config, "vocab_size", 0) if config.task != CLASSIFICATION else 0
    need = config.batch_size * longest * (hidden * layers * 34 + vocab * 12)
    if need > available_memory(device):
        raise oom_error(config, device)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    # The floor every evaluation is shown against (the job page warns when a model does not beat it).
    baseline = (majority_baseline(train_set.labels, eval_set.labels, config.labels)
                if config.task == CLASSIFICATION else None)
    if baseline:
        log(f"majority-class baseline (always {baseline['label']!r}): accuracy {baseline['accuracy']:.4f}, "
            f"macro-F1 {baseline['macro_f1']:.4f}")

    ckpt = latest_checkpoint(out)
    if config.task == CLASSIFICATION and config.head_init == PROBE and not ckpt:
        probe = init_head(model, train_set, num_labels=len(config.labels), pad_id=pad_id,
                          batch_size=config.batch_size * 2, device=device, autocast=autocast,
                          norm=config.probe_norm)
        log("head initialised by a linear probe on the base's features (LP-FT): weight norm "
            f"{probe['norm']:.2f} (fitted {probe['fitted_norm']:.2f}), training accuracy {probe['train_accuracy']:.4f}"
            if probe else "no Linear with one output per label: the head starts at random")

    groups = param_groups(model, config)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    batches_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = batches_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total_steps * config.warmup_ratio), total_steps)

    state = _State()
    if ckpt:
        state = _load_checkpoint(ckpt, model, optimizer, scheduler)
        log(f"resumed from the checkpoint at step {state.step} (epoch {state.epoch + 1}, batch {state.position})")
    resumed_from = state.step

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    run_start = time.monotonic()
    base_seconds = state.train_seconds
    win_start, win_loss, win_steps, win_examples, win_tokens = time.monotonic(), 0.0, 0, 0, 0
    last_report = 0.0
    steps_this_run = 0

    def checkpoint():
        state.train_seconds = base_seconds + (time.monotonic() - run_start)
        _save_checkpoint(out, model, optimizer, scheduler, state)
        if cb.on_checkpoint:
            cb.on_checkpoint(state.step)

    try:
        while state.epoch < config.epochs and not state.stopped_early:
            order = batching.batch_order(train_set.lengths, batch_size=config.batch_size, seed=config.seed,
                                  epoch=state.epoch, group_by_length=config.group_by_length)
            while state.position < len(order):
                verdict = cb.should_stop() if cb.should_stop else None
                if verdict == SUPERSEDED:
                    raise TrainingSuperseded(state.step)
                if verdict == CANCEL:
                    checkpoint()
                    raise TrainingCancelled(state.step)
                idx = order[state.position]
                batch = {k: v.to(device) for k, v in batching.collate(train_set, idx, pad_id=pad_id, task=config.task).items()}
                with autocast():
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.position += 1
                steps_this_run += 1
                win_loss += float(loss.detach())
                win_steps += 1
                win_examples += len(idx)
                win_tokens += int(batch["attention_mask"].sum())
                now = time.monotonic()
                if cb.on_progress and (now - last_report >= config.progress_every_s or steps_this_run == 1):
                    elapsed = now - win_start
                    per_step = (now - run_start) / steps_this_run
                    report = Progress(
                        step=state.step, total_steps=total_steps,
                        epoch=state.epoch + state.position / len(order),
                        loss=win_loss / win_steps, learning_rate=scheduler.get_last_lr()[0],
                        examples_per_s=win_examples / elapsed if elapsed else 0.0,
                        tokens_per_s=win_tokens / elapsed if elapsed else 0.0,
                        eta_s=per_step * (total_steps - state.step), elapsed_s=base_seconds + now - run_start,
                    )
                    state.history.append({"kind": "train", **report.__dict__})
                    cb.on_progress(report)
                    last_report = now
                    win_start, win_loss, win_steps, win_examples, win_tokens = now, 0.0, 0, 0, 0
                if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                    checkpoint()
            metrics = _evaluate(model, eval_set, config=config, pad_id=pad_id, device=device, autocast=autocast)
            if baseline:
                metrics["baseline"] = baseline
            entry = {"kind": "eval", "step": state.step, "epoch": state.epoch + 1, **metrics}
            state.history.append(entry)
            score = _score(config, metrics)
            improved = state.best_metric is None or score > state.best_metric + MIN_DELTA
            if improved:
                state.best_metric, state.stale_evals = score, 0
            else:
                state.stale_evals += 1
            if improved or config.keep_epoch == "last":  # the epoch whose adapter is kept
                state.best_epoch, state.best_metrics = state.epoch + 1, metrics
                model.save_pretrained(str(out / BEST), **ADAPTER_ONLY)
            log(f"epoch {state.epoch + 1}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            if cb.on_eval:
                cb.on_eval(entry)
            state.epoch += 1
            state.position = 0
            if (config.patience and state.stale_evals >= config.patience and state.epoch < config.epochs
                    and state.epoch >= math.ceil(config.epochs / 2)):
                state.stopped_early = True
                log(f"early stop after epoch {state.epoch}: no better validation score for {state.stale_evals} "
                    f"epochs; keeping epoch {state.best_epoch}")
            checkpoint()
    except (TrainingCancelled, TrainingError):
        raise
    except Exception as exc:
        if is_oom(exc):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise oom_error(config, device) from exc
        raise

    final = out / ADAPTER
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(out / BEST, final)
    tokenizer.save_pretrained(str(final))
    (final / "factory.json").write_text(json.dumps({
        "task": config.task, "labels": config.labels, "max_length": config.max_length,
        "best_epoch": state.best_epoch, "config": config.to_dict(),
        # Trained on conversations: prompts are rendered with the saved tokenizer's chat template.
        "chat": train_set.loss_masks is not None,
    }, indent=2))
    seconds = base_seconds + (time.monotonic() - run_start)
    log(f"done: best epoch {state.best_epoch} of {state.epoch} run ({config.epochs} at most), {state.step} steps, "
        f"{seconds:.1f}s")
    return TrainResult(
        adapter_dir=final, adapter_sha256=file_sha256(final / ADAPTER_FILE), best_epoch=state.best_epoch,
        metrics=state.best_metrics, history=state.history, steps=state.step, resumed_from_step=resumed_from,
        train_examples=len(train_set), eval_examples=len(eval_set), train_seconds=seconds,
        peak_memory_bytes=peak_memory(device), device=device.type,
        dtype="bf16" if dtype == torch.bfloat16 else "fp32", epochs_run=state.epoch, stopped_early=state.stopped_early,
    )
