"""Training: the masked multi-task loss, the trainer and the data-parallel context."""

from camoe.training.loss import MaskedLoss, masked_bce
from camoe.training.trainer import Checkpoint, TrainData, Trainer, TrainResult, TrainState

__all__ = ["Checkpoint", "MaskedLoss", "TrainData", "TrainResult", "TrainState", "Trainer", "masked_bce"]
