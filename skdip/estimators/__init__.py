"""Estimators: scikit-learn front ends of the fitting engine."""

from ._base import BaseDIPEstimator
from ._deblur import BlindDeblurrer
from ._denoise import DIPDenoiser
from ._phase import HIOPhaseRetriever, PhaseRetriever
from ._reconstruct import DIPDeconvolver, DIPInpainter, DIPReconstructor, DIPSuperResolver
from ._sparse_noise import SparseNoise

__all__ = [
    "BaseDIPEstimator",
    "BlindDeblurrer",
    "DIPDeconvolver",
    "DIPDenoiser",
    "DIPInpainter",
    "DIPReconstructor",
    "DIPSuperResolver",
    "HIOPhaseRetriever",
    "PhaseRetriever",
    "SparseNoise",
]
