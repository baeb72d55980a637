"""Training: the masked multi-task loss, the trainer and the data-parallel context."""

from camoe.training.loss import MaskedLoss, masked_bce
from camoe.training.checkpoint import Checkpoint, CheckpointError, TrainState
from camoe.training.trainer import TrainData, Trainer, TrainResult

__all__ = ["Checkpoint", "CheckpointError", "MaskedLoss", "TrainData", "TrainResult", "TrainState", "Trainer", "masked_bce"]
