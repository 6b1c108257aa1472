"""Image quality metrics (full-reference and shift-aligned) and scorers."""

from ._alignment import align_shift, aligned_psnr, aligned_ssim, kernel_error
from ._phase import align_phase_retrieval, phase_retrieval_error, phase_retrieval_psnr
from ._quality import psnr, ssim
from ._scorers import SCORER_NAMES, NoReferenceScorer, ReferenceScorer, get_scorer

__all__ = [
    "SCORER_NAMES",
    "NoReferenceScorer",
    "ReferenceScorer",
    "align_phase_retrieval",
    "align_shift",
    "aligned_psnr",
    "aligned_ssim",
    "get_scorer",
    "kernel_error",
    "phase_retrieval_error",
    "phase_retrieval_psnr",
    "psnr",
    "ssim",
]
