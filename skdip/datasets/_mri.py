"""Simulated Cartesian MRI: undersampling masks, coil sensitivities and k-space."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._typing import Float, Int
from .._validation import check_int, check_int_pair, check_number, check_plane
from .._warnings import warn
from ..operators._kspace import KSpaceSampling, _kspace_settings, channels_to_kspace
from ._noise import _check_random_state

__all__ = ["cartesian_mask", "make_coil_maps", "simulate_kspace"]


def cartesian_mask(
    shape: tuple[int, int],
    acceleration: Float = 4,
    center_fraction: Float = 0.08,
    random_state: Any = None,
) -> np.ndarray:
    """A random Cartesian undersampling mask: whole k-space columns, centre included.

    The mask is in the centred layout of :class:`skdip.operators.KSpaceSampling`
    (DC at column ``W // 2``). It samples ``round(W / acceleration)`` of the
    ``W`` columns (phase-encoding lines), each over all its rows: the
    ``round(center_fraction * W)`` central columns (at least one) around
    ``W // 2``, which carry most of the image's energy, and the rest drawn
    uniformly at random without replacement among the other columns. When
    the centre alone reaches the total, only the centre is sampled (beyond
    the total, warned of: the acceleration is then lower than asked).
    ``round`` is Python's (halves to even).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the k-space.
    acceleration : float, default=4
        Undersampling factor, at least 1 (1 samples every column).
    center_fraction : float, default=0.08
        Fraction of the columns always sampled at the centre, in ``(0, 1]``.
    random_state : None, int, RandomState or Generator, default=None
        Source of the random columns.

    Returns
    -------
    mask : ndarray of bool, shape (H, W)

    Examples
    --------
    >>> from skdip.datasets import cartesian_mask
    >>> mask = cartesian_mask((32, 32), acceleration=4, random_state=0)
    >>> mask.shape, int(mask[0].sum()), bool(mask[:, 16].all())
    ((32, 32), 8, True)
    >>> bool((mask == mask[:1]).all())  # whole columns
    True
    """
    h, w = check_int_pair(shape, "shape")
    check_number(acceleration, "acceleration", 1)
    center_fraction = check_number(center_fraction, "center_fraction", 0, 1, exclusive_minimum=True)
    rng = _check_random_state(random_state)
    n_center = max(1, round(float(center_fraction) * w))
    n_total = max(1, round(w / float(acceleration)))
    start = w // 2 - n_center // 2
    if n_center > n_total:
        # The centre alone is over the total: (256, 256) at acceleration=16 and the
        # default center_fraction sampled 20 columns (acceleration 12.8), silently.
        warn(
            f"center_fraction={float(center_fraction):g} alone samples {n_center} of the "
            f"{w} columns, more than the {n_total} of acceleration={float(acceleration):g}: "
            f"the mask samples the centre only, an acceleration of {w / n_center:.3g}. "
            f"For {float(acceleration):g}, pass a center_fraction of at most "
            f"{1 / float(acceleration):.3g}.",
            UserWarning,
        )
    columns = np.zeros(w, dtype=bool)
    columns[start : start + n_center] = True
    if n_total > n_center:
        others = np.flatnonzero(~columns)
        columns[rng.choice(others, size=n_total - n_center, replace=False)] = True
    return np.broadcast_to(columns, (h, w)).copy()


def make_coil_maps(n_coils: Int, shape: tuple[int, int]) -> np.ndarray:
    """Smooth synthetic coil sensitivities, normalised to ``sum_c |S_c|**2 = 1``.

    Coil ``c`` sits at the angle ``2 pi c / n_coils`` on a circle around the
    image centre, with radius half the image size. Its magnitude falls off as
    a Gaussian of the distance to the coil (standard deviation half the image
    size) and its phase varies linearly across the image, along the
    direction of the coil, by about ``pi`` from side to side. The maps are
    then divided by their root-sum-of-squares, so that they combine to 1 at
    every pixel (as estimated sensitivities usually are). They are
    deterministic: the same arguments always give the same maps.

    Parameters
    ----------
    n_coils : int
        Number of coils, at least 1.
    shape : tuple of int
        ``(H, W)`` of the image.

    Returns
    -------
    coil_maps : ndarray of complex128, shape (n_coils, H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import make_coil_maps
    >>> maps = make_coil_maps(4, (16, 16))
    >>> maps.shape, maps.dtype
    ((4, 16, 16), dtype('complex128'))
    >>> bool(np.allclose((np.abs(maps) ** 2).sum(axis=0), 1))
    True
    """
    n_coils = check_int(n_coils, "n_coils", 1)
    h, w = check_int_pair(shape, "shape")
    size = float(max(h, w))
    rows, cols = np.meshgrid(
        np.arange(h, dtype=np.float64) - (h - 1) / 2,
        np.arange(w, dtype=np.float64) - (w - 1) / 2,
        indexing="ij",
    )
    angles = 2 * np.pi * np.arange(int(n_coils)) / int(n_coils)
    maps = np.empty((int(n_coils), h, w), dtype=np.complex128)
    for c, angle in enumerate(angles):
        dy, dx = np.sin(angle), np.cos(angle)
        distance2 = (rows - dy * size / 2) ** 2 + (cols - dx * size / 2) ** 2
        magnitude = np.exp(-distance2 / (2 * (size / 2) ** 2))
        phase = angle + np.pi * (rows * dy + cols * dx) / size
        maps[c] = magnitude * np.exp(1j * phase)
    return maps / np.sqrt((np.abs(maps) ** 2).sum(axis=0))


def simulate_kspace(
    image: Any,
    mask: Any,
    coil_maps: Any = None,
    noise_std: Float = 0.0,
    random_state: Any = None,
) -> np.ndarray:
    """Undersampled, optionally noisy, k-space of an image.

    The model is exactly that of :class:`skdip.operators.KSpaceSampling`:
    the image times each coil's sensitivity, the centred orthonormal 2-D FFT
    (DC at ``(H // 2, W // 2)``), the 0/1 mask. Complex Gaussian noise, of
    standard deviation ``noise_std`` in the real and in the imaginary part, is
    added at the sampled entries only: unsampled ones are exactly 0.
    Being orthonormal, the transform keeps the image's scale: a fully
    sampled, noise-free k-space has the norm of the (coil-weighted) image.

    Parameters
    ----------
    image : array-like of shape (H, W)
        Real (e.g. an image in ``[0, 1]``) or complex image.
    mask : array-like of shape (H, W) or (W,)
        Sampled k-space locations (e.g. from :func:`cartesian_mask`); a 1-D
        mask lists the sampled columns.
    coil_maps : array-like of shape (n_coils, H, W) or None, default=None
        Coil sensitivities (e.g. from :func:`make_coil_maps`); None for a
        single coil.
    noise_std : float, default=0.0
        Standard deviation of the noise per real and per imaginary part.
    random_state : None, int, RandomState or Generator, default=None
        Source of the noise.

    Returns
    -------
    kspace : ndarray of complex128
        ``(H, W)`` without coil maps, ``(n_coils, H, W)`` with them. Pass it
        through :func:`skdip.operators.kspace_to_channels` for skdip's
        estimators.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import cartesian_mask, simulate_kspace
    >>> x = np.random.default_rng(0).random((16, 16))
    >>> mask = cartesian_mask((16, 16), acceleration=2, random_state=0)
    >>> k = simulate_kspace(x, mask, noise_std=0.01, random_state=0)
    >>> k.shape, bool((k[~mask] == 0).all())
    ((16, 16), True)
    """
    arr = check_plane(image)
    check_number(noise_std, "noise_std", 0)
    complex_image = arr.dtype.kind == "c"
    kind = "complex" if complex_image else "real"
    # Refused under this function's names, not as the operator's settings.
    _kspace_settings(mask, coil_maps, kind)
    operator = KSpaceSampling(mask, coil_maps, image=kind)
    operator._check_shape(arr.shape, "the image's shape")  # the image must have the mask's
    if complex_image:
        x = np.stack([arr.real, arr.imag]).astype(np.float64)
    else:
        x = arr.astype(np.float64)[None]
    with torch.no_grad():
        channels = operator(torch.from_numpy(x)[None])[0].numpy().transpose(1, 2, 0)
    kspace = channels_to_kspace(channels)
    if noise_std > 0:
        rng = _check_random_state(random_state)
        noise = rng.standard_normal((2, *kspace.shape))
        sampled = np.broadcast_to(operator.mask.numpy()[0, 0] != 0, arr.shape)
        kspace = kspace + np.where(sampled, float(noise_std) * (noise[0] + 1j * noise[1]), 0)
    if coil_maps is not None and kspace.ndim == 2:
        kspace = kspace[None]  # one coil given as (1, H, W)
    return kspace.astype(np.complex128, copy=False)
