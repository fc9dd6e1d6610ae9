"""Back-of-the-envelope cost of a LoRA fine-tune: trainable parameters, memory, steps, time.

Used by the form (live estimate) and by the trainer's pre-flight memory check. The constants are
rough, measured on MiniLM-L6 (benchmarks/training.py); the page calls the figures estimates.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# Sustained training FLOP/s: a shared 2-core CPU, and a data-centre GPU at ~30% of its bf16 peak.
CPU_FLOPS = 4e10
GPU_FLOPS = 1.5e14
# LoRA still back-propagates through the frozen base (activation gradients, no weight gradients):
# forward 2, backward ~2 FLOPs per parameter per token.
FLOPS_PER_PARAM_TOKEN = 4
# Activation bytes per token per layer per hidden unit, kept for the backward pass (fp32).
ACTIVATION_FACTOR = 34
OVERHEAD_BYTES = 300 * 1024 * 1024  # the framework itself


@dataclass
class Estimate:
    trainable_params: int
    total_params: int
    trainable_percent: float
    memory_bytes: int
    steps_per_epoch: int
    total_steps: int
    tokens: int
    cpu_seconds: float
    gpu_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def lora_trainable_params(module_shapes: dict, targets: list[str], r: int) -> int:
    total = 0
    for name in targets:
        for fin, fout in module_shapes.get(name, {}).get("shapes", []):
            total += r * (fin + fout)
    return total


def estimate_run(*, info: dict, targets: list[str], r: int, task: str, num_labels: int, n_examples: int,
                 mean_tokens: float, epochs: int, batch_size: int, max_length: int, eval_split: float) -> Estimate:
    """`info` is what modeling.inspect_model returned for the base model."""
    hidden, layers = info.get("hidden_size", 0), info.get("num_layers", 0)
    trainable = lora_trainable_params(info.get("module_shapes", {}), targets, r)
    if task == "classification":
        trainable += hidden * num_labels + num_labels  # the classifier head, trained and saved whole
    total = info.get("parameter_count", 0) + trainable
    n_train = max(1, round(n_examples * (1 - eval_split)))
    steps_per_epoch = math.ceil(n_train / max(1, batch_size))
    tokens_per_example = min(max_length, max(1.0, mean_tokens))
    tokens = int(n_train * tokens_per_example * epochs)
    eval_tokens = int(n_examples * eval_split * tokens_per_example * epochs)
    flops = FLOPS_PER_PARAM_TOKEN * total * tokens + 2 * total * eval_tokens
    vocab_logits = info.get("vocab_size", 0) * batch_size * max_length * 4 * 3 if task == "generation" else 0
    memory = (total * 4 + trainable * 12 + batch_size * max_length * hidden * layers * ACTIVATION_FACTOR
              + vocab_logits + OVERHEAD_BYTES)
    return Estimate(
        trainable_params=int(trainable), total_params=int(total),
        trainable_percent=round(100 * trainable / total, 3) if total else 0.0,
        memory_bytes=int(memory), steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs,
        tokens=tokens, cpu_seconds=flops / CPU_FLOPS, gpu_seconds=flops / GPU_FLOPS,
    )
