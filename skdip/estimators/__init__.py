"""Estimators: scikit-learn front ends of the fitting engine."""

from ._base import BaseDIPEstimator
from ._denoise import DIPDenoiser

__all__ = ["BaseDIPEstimator", "DIPDenoiser"]
