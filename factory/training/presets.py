"""Fine-tune presets: hyperparameters that reach a good model by themselves, with the training length sized
from the data. Django-free (the form, the API and benchmarks/finetune.py read the same values).

"all" target modules means every Linear layer of the model's body; "all+output" adds a language model's output
layer (types.OUTPUT_LAYER) for a generation fine-tune. "epochs" is the value without data; with a
Datanet version the epochs are sized from it (PRESET_SIZING, estimate.sized_epochs): enough passes for a
minimum number of optimizer steps and of steps per label, at most max_epochs; early stopping (patience, in
epochs) ends a run whose validation score has stopped improving, and the best epoch's adapter is kept. A
classifier's head may start as a linear probe on the base's features (TrainConfig.head_init="probe",
factory/training/head.py); the default is transformers' random start (why: docs/factory.md).
"""
from __future__ import annotations

PRESETS: dict[str, dict] = {
    "quick": {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "targets": "all", "epochs": 1, "patience": 0,
              "learning_rate": 2e-3, "loraplus_ratio": 1.0, "batch_size": 32, "max_length": 64, "eval_split": 0.2, "keep_epoch": "best", "seed": 42},
    "balanced": {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "targets": "all", "epochs": 3, "patience": 3,
                 "learning_rate": 1e-3, "loraplus_ratio": 1.0, "batch_size": 32, "max_length": 64, "eval_split": 0.2, "keep_epoch": "best", "seed": 42},
    "thorough": {"lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "targets": "all", "epochs": 6, "patience": 4,
                 "learning_rate": 5e-4, "loraplus_ratio": 1.0, "batch_size": 16, "max_length": 128, "eval_split": 0.2, "keep_epoch": "best", "seed": 42},
    # Measured in benchmarks/generation_memorisation.py (docs/language_models.md, "LoRA+"): LoRA+ with LoRA on
    # the output layer learns passages as fast as updating every weight; 40 passes make them recitable.
    "verbatim": {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "targets": "all+output", "epochs": 40,
                 "patience": 0, "learning_rate": 1e-3, "loraplus_ratio": 16.0, "batch_size": 16, "max_length": 64,
                 "eval_split": 0.2, "keep_epoch": "last", "seed": 42},
}
PRESET_SIZING: dict[str, dict] = {
    "quick": {"min_steps": 100, "steps_per_label": 0, "max_epochs": 2},
    "balanced": {"min_steps": 300, "steps_per_label": 20, "max_epochs": 20},
    "thorough": {"min_steps": 600, "steps_per_label": 30, "max_epochs": 40},
    # Memorising takes passes, not steps: 40 whatever the size (so it is for small Datanets).
    "verbatim": {"min_steps": 0, "steps_per_label": 0, "max_epochs": 40, "min_epochs": 40},
}
# Presets for some tasks only (the others are for every task).
PRESET_TASKS: dict[str, tuple[str, ...]] = {"verbatim": ("generation",)}
PRESET_HELP = {
    "quick": "At least 100 steps (1 or 2 epochs), rank 8 on every linear layer: a first model in a few minutes.",
    "balanced": "At least 300 steps and 20 per label, rank 16, early stopping: the recommended default.",
    "thorough": "At least 600 steps and 30 per label, rank 32, longer sequences: best quality, slower.",
    "verbatim": ("Language models on a small chat Datanet (a few hundred conversations) whose answers should quote "
                 "it: 40 passes, LoRA+ and the output layer, no early stopping. Slow on a CPU."),
}
DEFAULT_PRESET = "balanced"
