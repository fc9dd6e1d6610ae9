"""LoRA fine-tuning with PEFT, free of Django: configs and examples in, an adapter directory out.

The trainer (torch, transformers, PEFT) is imported on first use, so a web process that only needs the
types, the estimate or the catalog does not pay for torch (~300 MB) at start-up.
"""
from factory.training.types import (
    CLASSIFICATION,
    GENERATION,
    Example,
    Progress,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainingSuperseded,
    TrainResult,
)

_LAZY = {"Callbacks", "checkpoint_step", "train"}


def __getattr__(name):
    if name in _LAZY:
        from factory.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'factory.training' has no attribute {name!r}")


__all__ = [
    "CLASSIFICATION", "GENERATION", "Callbacks", "Example", "Progress", "TrainConfig", "TrainResult",
    "TrainingCancelled", "TrainingError", "TrainingSuperseded", "checkpoint_step", "train",
]
