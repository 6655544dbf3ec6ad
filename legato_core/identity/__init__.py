"""Face-identity networks: ``arcface`` (drives identity losses) and ``judge`` (scores results, nothing else)."""

from .model import IdentityModel, load_identity_model
from .networks import ArcFaceNet, JudgeNet
from .verification import roc_auc, threshold_at_far, verification_report

__all__ = ["ArcFaceNet", "IdentityModel", "JudgeNet", "load_identity_model", "roc_auc", "threshold_at_far",
           "verification_report"]
