"""Plain data types of the training loop: what goes in (config, examples), what comes out.

No Django here: the loop runs on a GPU machine with nothing but torch, transformers and PEFT.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

CLASSIFICATION = "classification"
GENERATION = "generation"
# A causal LM's output layer (vocabulary x hidden) as a LoRA target. Never part of "all": it is offered by
# name, for generation only (a classifier built on the same base has a `score` head instead). With it an
# adapter can learn to reproduce its passages word for word (docs/language_models.md, "LoRA+").
OUTPUT_LAYER = "lm_head"
TASKS = (CLASSIFICATION, GENERATION)


class TrainingError(Exception):
    """Training cannot go on for a reason the user can act on (bad data, out of memory, missing model)."""


class TrainingCancelled(Exception):  # noqa: N818 - a signal, not an error
    """The cancel flag was seen; `step` is the last completed step (a checkpoint was written there)."""

    def __init__(self, step: int):
        super().__init__(f"cancelled at step {step}")
        self.step = step


class TrainingSuperseded(TrainingCancelled):
    """Another worker took the job over (this one was presumed dead); stop without writing anything."""


@dataclass(frozen=True)
class Example:
    """One record. A conversation (`messages`: [{"role", "content"}, ...]) is rendered with the base's chat
    template and trained on its assistant turns only; `text` then keeps the record's stored form."""

    text: str
    label: str = ""
    record_id: int | None = None
    messages: list | None = None


@dataclass
class TrainConfig:
    """Everything that decides the result. Same config + same data + same seed = same adapter (on CPU)."""

    task: str
    model_path: str
    labels: list[str] = field(default_factory=list)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list[str] = field(default_factory=list)
    # Transformer layers that get LoRA (empty: all). Training only the top layers cuts the backward pass.
    layers: list[int] = field(default_factory=list)
    epochs: int = 3  # the most epochs; early stopping (patience) may end the run sooner
    # Early stopping: stop after this many evaluations in a row without a better validation metric (macro-F1
    # for classification, evaluation loss for generation), once at least half of `epochs` have run (a score
    # that is flat while a many-label head starts to learn does not end the run); 0 = train every epoch. The
    # best epoch's adapter is kept.
    patience: int = 0
    # Which epoch's adapter is kept: "best" (the best validation score; the default) or "last" (the verbatim
    # preset: memorising passages raises the held-out loss while the trained ones are learnt).
    keep_epoch: str = "best"
    learning_rate: float = 5e-4
    # LoRA+ (Hayou et al., ICML 2024): each LoRA B matrix learns at learning_rate x this ratio, the A matrices
    # and a classifier's head at learning_rate. 1 is plain LoRA. B starts at zero, so a higher rate on it
    # lets the update grow without unsettling A.
    loraplus_ratio: float = 1.0
    batch_size: int = 16
    max_length: int = 128
    eval_split: float = 0.2
    seed: int = 42
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    # "random": transformers' random start (the default: the start the payouts were validated on). "probe": a
    # classifier's output layer starts as a linear probe on the base's features (factory/training/head.py,
    # LP-FT); better many-label models, but on the demo's quick Finance model it left the attribution index
    # without signal (an equal split, an honest contributor flagged harmful): docs/factory.md.
    head_init: str = "random"
    # With head_init "probe": 0 keeps the probe as fitted; above 0, its weight (and bias, by the same factor) is
    # scaled to this Frobenius norm. As fitted on MiniLM's small pooled features the weight's norm is in the
    # hundreds (benchmarks/probe_head_scale.py); an experiment, not used by the product yet.
    probe_norm: float = 0.0
    group_by_length: bool = True
    # Causal LMs: pack whole examples into rows of max_length tokens (fewer pad tokens, fewer steps).
    packing: bool = False
    # The catalog's chat template for this base ("": the tokenizer's own).
    chat_template: str = ""
    # "nf4": QLoRA, the base's Linear layers loaded in 4-bit NF4 by bitsandbytes (double quantization, bf16
    # compute) and trained with gradient checkpointing; "none": the base in full precision.
    quantization: str = "none"
    checkpoint_every: int = 50
    progress_every_s: float = 3.0
    device: str = ""  # "" = cuda when present, else cpu
    cpu_threads: int = 0  # 0 = torch's default (one per core); 1 is steadier on a crowded machine

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Progress:
    """One throttled progress report: what the job row shows."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    examples_per_s: float
    tokens_per_s: float
    eta_s: float
    elapsed_s: float


@dataclass
class TrainResult:
    adapter_dir: Path
    adapter_sha256: str
    best_epoch: int
    metrics: dict  # the best epoch's evaluation
    history: list[dict]  # every train report and every evaluation, in order
    steps: int
    resumed_from_step: int
    train_examples: int
    eval_examples: int
    train_seconds: float
    peak_memory_bytes: int
    device: str
    dtype: str
    epochs_run: int = 0
    stopped_early: bool = False
