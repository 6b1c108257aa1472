"""Test data: bundled pictures, synthetic noise and blur kernels, simulated measurements.

Images follow skdip's convention: floating arrays with values in ``[0, 1]``,
``(H, W)`` for grey and ``(H, W, C)`` (channels last) for colour.
"""

from __future__ import annotations

from ._images import IMAGE_NAMES, load_image
from ._kernels import blur, make_disk_kernel, make_gaussian_kernel, make_motion_kernel
from ._mri import cartesian_mask, make_coil_maps, simulate_kspace
from ._noise import (
    NOISE_KINDS,
    NOISE_LEVELS,
    add_gaussian_noise,
    add_impulse_noise,
    add_noise,
    add_poisson_noise,
    add_speckle_noise,
)
from ._phase import simulate_diffraction

__all__ = [
    "IMAGE_NAMES",
    "NOISE_KINDS",
    "NOISE_LEVELS",
    "add_gaussian_noise",
    "add_impulse_noise",
    "add_noise",
    "add_poisson_noise",
    "add_speckle_noise",
    "blur",
    "cartesian_mask",
    "load_image",
    "make_coil_maps",
    "make_disk_kernel",
    "make_gaussian_kernel",
    "make_motion_kernel",
    "simulate_diffraction",
    "simulate_kspace",
]
