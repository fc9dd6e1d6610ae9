"""Back-of-the-envelope cost of a LoRA fine-tune: trainable parameters, memory, steps, time.

Used by the form (live estimate) and by the trainer's pre-flight memory check. The constants are
rough, measured on MiniLM-L6 (benchmarks/training.py); the page calls the figures estimates.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from factory.training.types import OUTPUT_LAYER

# Sustained training FLOP/s: one core of this 2-core CPU (MiniLM-L6, batch 16-32, measured by CPU time in
# benchmarks/finetune.py; a second thread adds little to batches this small), and a data-centre GPU at ~30%
# of its bf16 peak.
CPU_FLOPS = 6e10
GPU_FLOPS = 1.5e14
# A step also costs time that does not scale with FLOPs: Python, the optimizer, and on a GPU one kernel
# launch per operation (a small model's step is bound by these, not by arithmetic). A run also loads the
# model and tokenises the data first (and on a GPU creates the CUDA context). Without these a small model's
# GPU estimate read "under 1 s".
CPU_STEP_SECONDS = 0.05
GPU_STEP_SECONDS = 0.04
CPU_STARTUP_SECONDS = 5.0
GPU_STARTUP_SECONDS = 15.0
# LoRA still back-propagates through the frozen base (activation gradients, no weight gradients):
# forward 2, backward ~2 FLOPs per parameter per token.
FLOPS_PER_PARAM_TOKEN = 4
# Activation bytes per token per layer per hidden unit, kept for the backward pass (fp32).
ACTIVATION_FACTOR = 34
OVERHEAD_BYTES = 300 * 1024 * 1024  # the framework itself

# Peak GPU memory (what torch.cuda.max_memory_allocated reports; the CUDA context, ~0.5 GB, comes on top).
# Base weights: fp32 as loaded (autocast computes in bf16). QLoRA: the body's Linear weights in NF4, 4 bits,
# plus double-quantized constants (an 8-bit absmax per 64 weights, an fp32 one per 256 of those); the rest
# (embeddings, norms, heads) fp32 after peft's prepare_model_for_kbit_training.
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
# LoRA's trainable parameters: fp32 weight, gradient and AdamW's two moments.
TRAINABLE_BYTES = 16
# With gradient checkpointing only each layer's input (fp32 residual stream) is kept, and one layer's
# activations are rebuilt at a time during the backward pass, at the cost of a second forward.
CHECKPOINT_INPUT_BYTES = 4
# NF4 matmuls dequantize every weight on each use: slower than bf16 LoRA (QLoRA paper: ~1.3-1.4x). Not yet
# measured here (benchmarks/gpu_run.sh measures it on a lent GPU).
QLORA_SLOWDOWN = 1.35


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
    quantization: str = "none"
    gpu_memory_bytes: int = 0
    cpu_seconds_per_epoch: float = 0.0  # the training loop's, without the start-up
    gpu_seconds_per_epoch: float = 0.0
    early_stopping: bool = False  # the times are for every epoch; early stopping may end the run sooner

    def to_dict(self) -> dict:
        return asdict(self)


def sized_epochs(*, n_examples: int, eval_split: float, batch_size: int, num_labels: int, min_steps: int,
                 steps_per_label: int, max_epochs: int, min_epochs: int = 1) -> int:
    """Epochs for a preset, from the data: enough passes for `min_steps` optimizer steps, and for
    `steps_per_label` steps per label (many labels with few examples each need more passes), at most
    `max_epochs`, at least `min_epochs`. A small set gets many epochs, a large one few; early stopping ends a run that has
    stopped improving."""
    n_train = max(1, round(n_examples * (1 - eval_split)))
    steps_per_epoch = math.ceil(n_train / max(1, batch_size))
    wanted = max(min_steps, steps_per_label * max(0, num_labels))
    return max(1, min_epochs, min(max_epochs, math.ceil(wanted / steps_per_epoch)))


def lora_trainable_params(module_shapes: dict, targets: list[str], r: int) -> int:
    total = 0
    for name in targets:
        for fin, fout in module_shapes.get(name, {}).get("shapes", []):
            total += r * (fin + fout)
    return total


def linear_params(module_shapes: dict) -> int:
    """Weights of the body's Linear layers (every LoRA target choice but the output layer): the ones
    bitsandbytes quantizes."""
    return sum(fin * fout for name, entry in module_shapes.items() if name != OUTPUT_LAYER
               for fin, fout in entry.get("shapes", []))


def gpu_peak_memory(*, info: dict, trainable: int, task: str, batch_size: int, max_length: int,
                    quantization: str = "none") -> int:
    """Peak GPU memory of a training step in bytes (allocated by torch, the CUDA context excluded):
    base weights + trainable state + activations kept for the backward pass + the LM's logits."""
    params = info.get("parameter_count", 0)
    hidden, layers = info.get("hidden_size", 0), info.get("num_layers", 0)
    if task == "generation" and info.get("tied_embeddings") is False:
        params += info.get("vocab_size", 0) * hidden  # the LM head (kept in full precision under QLoRA)
    tokens = batch_size * max_length
    if quantization == "nf4":
        quantized = min(params, linear_params(info.get("module_shapes", {})))
        weights = quantized * NF4_BYTES_PER_WEIGHT + (params - quantized) * 4
        activations = tokens * hidden * (layers * CHECKPOINT_INPUT_BYTES + ACTIVATION_FACTOR)
    else:
        weights = params * 4
        activations = tokens * hidden * layers * ACTIVATION_FACTOR
    logits = info.get("vocab_size", 0) * tokens * 4 * 3 if task == "generation" else 0
    return int(weights + trainable * TRAINABLE_BYTES + activations + logits)


def estimate_run(*, info: dict, targets: list[str], r: int, task: str, num_labels: int, n_examples: int,
                 mean_tokens: float, epochs: int, batch_size: int, max_length: int, eval_split: float,
                 quantization: str = "none", patience: int = 0, head_init: str = "random") -> Estimate:
    """`info` is what modeling.inspect_model returned for the base model. With quantization "nf4" (QLoRA)
    the GPU figures are for a 4-bit base with gradient checkpointing. The totals include the start-up
    (loading, the CUDA context) and, with head_init "probe", a classifier head's probe pass; the per-epoch times are the training
    loop's."""
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
    # Gradient checkpointing (QLoRA) runs each layer's forward twice: 2 more FLOPs per parameter per token.
    per_token = FLOPS_PER_PARAM_TOKEN + (2 if quantization == "nf4" else 0)
    # A classifier's token embedding is a table lookup, not a matmul: its parameters cost no FLOPs (half of
    # MiniLM-L6's). A language model's output projection multiplies by it (tied or not), so it counts there.
    embedding = info.get("vocab_size", 0) * hidden if task == "classification" else 0
    compute = total - embedding if 0 < embedding < total else total
    flops = per_token * compute * tokens + 2 * compute * eval_tokens
    # Training steps, plus evaluation batches (twice the batch size, once an epoch).
    steps = (steps_per_epoch + math.ceil(n_examples * eval_split / max(1, 2 * batch_size))) * epochs
    # Before the first step a classifier's head is set by a linear probe (factory/training/head.py): one
    # forward pass over the training split in batches of twice the batch size, once per run.
    probe_flops = 2 * compute * n_train * tokens_per_example if task == "classification" and head_init == "probe" else 0
    probe_steps = math.ceil(n_train / max(1, 2 * batch_size)) if probe_flops else 0
    # QLoRA's second forward (checkpointing) and dequantization add launches as well as FLOPs: both scale.
    slower = (per_token / FLOPS_PER_PARAM_TOKEN) * QLORA_SLOWDOWN if quantization == "nf4" else 1.0
    gpu_loop = max(flops / GPU_FLOPS * (QLORA_SLOWDOWN if quantization == "nf4" else 1.0),
                   steps * GPU_STEP_SECONDS * slower)
    cpu_loop = flops / CPU_FLOPS + steps * CPU_STEP_SECONDS
    gpu_probe = max(probe_flops / GPU_FLOPS, probe_steps * GPU_STEP_SECONDS) if probe_flops else 0.0
    cpu_probe = probe_flops / CPU_FLOPS + probe_steps * CPU_STEP_SECONDS
    vocab_logits = info.get("vocab_size", 0) * batch_size * max_length * 4 * 3 if task == "generation" else 0
    memory = (total * 4 + trainable * 12 + batch_size * max_length * hidden * layers * ACTIVATION_FACTOR
              + vocab_logits + OVERHEAD_BYTES)
    return Estimate(
        trainable_params=int(trainable), total_params=int(total),
        trainable_percent=round(100 * trainable / total, 3) if total else 0.0,
        memory_bytes=int(memory), steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs,
        tokens=tokens, cpu_seconds=CPU_STARTUP_SECONDS + cpu_probe + cpu_loop,
        gpu_seconds=GPU_STARTUP_SECONDS + gpu_probe + gpu_loop,
        quantization=quantization,
        gpu_memory_bytes=gpu_peak_memory(info=info, trainable=int(trainable), task=task, batch_size=batch_size,
                                         max_length=max_length, quantization=quantization),
        cpu_seconds_per_epoch=cpu_loop / max(1, epochs), gpu_seconds_per_epoch=gpu_loop / max(1, epochs),
        early_stopping=patience > 0,
    )
