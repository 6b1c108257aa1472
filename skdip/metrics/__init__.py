"""Image quality metrics (full-reference and shift-aligned) and scorers."""

from ._alignment import align_shift, aligned_psnr, aligned_ssim, kernel_error
from ._quality import psnr, ssim

__all__ = ["align_shift", "aligned_psnr", "aligned_ssim", "kernel_error", "psnr", "ssim"]
