"""Training: masked multi-task loss and the training loop."""

from camoe.training.loss import MaskedLoss, masked_bce
from camoe.training.trainer import TrainResult, predict_logits, train_model

__all__ = ["MaskedLoss", "TrainResult", "masked_bce", "predict_logits", "train_model"]
