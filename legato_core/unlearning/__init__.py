"""The unlearning engine: targets, objectives, adapter training and background jobs."""

from .engine import Cancelled, ForgetConfig, ForgetJob, ForgetResult, ProgressEvent, forget, train_adapter
from .objectives import LossWeights
from .targets import TARGETS, TargetConfig, make_target

__all__ = ["TARGETS", "Cancelled", "ForgetConfig", "ForgetJob", "ForgetResult", "LossWeights", "ProgressEvent",
           "TargetConfig", "forget", "make_target", "train_adapter"]
