"""LoRA fine-tuning with PEFT, free of Django: configs and examples in, an adapter directory out."""
from factory.training.trainer import Callbacks, checkpoint_step, train
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

__all__ = [
    "CLASSIFICATION", "GENERATION", "Callbacks", "Example", "Progress", "TrainConfig", "TrainResult",
    "TrainingCancelled", "TrainingError", "TrainingSuperseded", "checkpoint_step", "train",
]
