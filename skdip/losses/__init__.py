"""Data-fidelity losses and image regularizers."""

from ._losses import LOSS_NAMES, get_loss
from ._regularizers import BaseRegularizer, GradientRatio, TotalVariation

__all__ = ["LOSS_NAMES", "get_loss", "BaseRegularizer", "GradientRatio", "TotalVariation"]
