"""skdip: untrained-network image restoration with a scikit-learn API.

Deep Image Prior and its cousins fit a network to a single observation
through a known forward model and stop near the quality peak without a clean
reference, using the running variance of the iterates.
"""

from .estimators import (
    BlindDeblurrer,
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    DIPSuperResolver,
    HIOPhaseRetriever,
    PhaseRetriever,
    SparseNoise,
)
from .generators import SkipNetwork
from .losses import GradientRatio, TotalVariation
from .stopping import (
    DiscrepancyPrinciple,
    ExponentialMovingVariance,
    NoiseLevelDeadline,
    SelfValidation,
    WindowedMovingVariance,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BlindDeblurrer",
    "DIPDeconvolver",
    "DIPDenoiser",
    "DIPInpainter",
    "DIPReconstructor",
    "DIPSuperResolver",
    "HIOPhaseRetriever",
    "PhaseRetriever",
    "DiscrepancyPrinciple",
    "ExponentialMovingVariance",
    "NoiseLevelDeadline",
    "SelfValidation",
    "GradientRatio",
    "SkipNetwork",
    "SparseNoise",
    "TotalVariation",
    "WindowedMovingVariance",
    "__version__",
]
