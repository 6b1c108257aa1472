"""Simulated far-field diffraction measurements for phase retrieval experiments."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._typing import Float, Int
from .._validation import check_int, check_number, check_plane, native_copy
from .._warnings import warn
from ..operators._fourier import FourierMagnitude, check_masks, check_oversampling
from ._noise import _MAX_POISSON_MEAN, _check_random_state

__all__ = ["simulate_diffraction"]


def simulate_diffraction(
    image: Any,
    oversampling: Int | tuple[int, int] = 2,
    measurement: str = "magnitude",
    photons: Float | None = None,
    n_masks: Int = 0,
    mask_seed: Int = 0,
    random_state: Any = None,
    masks: Any = None,
) -> np.ndarray:
    """Far-field diffraction measurement of an object, optionally with shot noise.

    The object is zero-padded to ``oversampling`` times its size and
    transformed as by :class:`skdip.operators.FourierMagnitude` (orthonormal
    FFT, object in the top-left corner of the padded frame). Normalisation:
    without noise the intensities ``|F(pad(x))|**2`` sum to ``||x||**2``
    (per pattern), so magnitudes are on the object's own scale and a
    reconstruction from them comes back on the scale of ``image``.

    Shot noise: with ``photons = N`` the whole measurement (all patterns
    together) collects ``N`` photons on average. Each detector pixel counts
    ``n ~ Poisson(N * I / sum(I))`` photons and the noisy intensity is
    ``n * sum(I) / N``, back on the noise-free scale; fewer photons means
    more noise (the relative noise of a pixel expecting ``m`` photons is
    ``1 / sqrt(m)``).

    Parameters
    ----------
    image : array-like of shape (H, W)
        The object: real (e.g. an image in ``[0, 1]``) or complex.
    oversampling : int or tuple of int, default=2
        Padding factor per axis, at least 2.
    measurement : {"magnitude", "intensity"}, default="magnitude"
        Return magnitudes ``|F(pad(x))|`` or intensities ``|F(pad(x))|**2``.
    photons : float or None, default=None
        Expected total photon count; None simulates noise-free data.
    n_masks : int, default=0
        Number of coded diffraction patterns (random phase masks of
        :func:`skdip.operators.make_phase_masks`); 0 for the plain pattern.
    mask_seed : int, default=0
        Seed of the masks; pass the same value to the reconstruction.
    random_state : None, int, RandomState or Generator, default=None
        Source of the shot noise.
    masks : array-like of shape (K, H, W) or None, default=None
        Masks of one's own instead of the seeded ones (complex or real, see
        :class:`skdip.operators.FourierMagnitude`); ``n_masks`` is then 0 or
        ``K``. Pass the same masks to the reconstruction.

    Returns
    -------
    measurement : ndarray
        ``(sy * H, sx * W)`` without masks, ``(sy * H, sx * W, K)``
        with ``K`` masks (the patterns as channels), float64 and non-negative.
        Objects of any magnitude are simulated exactly (at a power of two near 1,
        scaled back); intensities beyond float64's range (objects past about
        1e154) are refused, and ones below its normal range warned of.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import simulate_diffraction
    >>> x = np.random.default_rng(0).random((8, 8))
    >>> y = simulate_diffraction(x, oversampling=2)
    >>> y.shape, bool(np.isclose((y**2).sum(), (x**2).sum()))
    ((16, 16), True)
    >>> simulate_diffraction(x, n_masks=3, photons=1e4, random_state=0).shape
    (16, 16, 3)
    """
    arr = check_plane(image)
    check_oversampling(oversampling)
    if measurement not in ("magnitude", "intensity"):
        raise ValueError(f"measurement must be 'magnitude' or 'intensity', got {measurement!r}")
    photons = check_number(photons, "photons", 0, exclusive_minimum=True, allow_none=True)
    # Refused under this function's names, not as the operator's settings.
    n_masks = check_int(n_masks, "n_masks", 0)
    if n_masks and masks is None:
        check_int(mask_seed, "mask_seed", 0, 2**32 - 1)  # RandomState's seed range
    else:
        check_int(mask_seed, "mask_seed")  # unused: its type, as the operator checks it
    if masks is not None:
        masks = check_masks(masks, n_masks, shape=arr.shape)
    operator = FourierMagnitude(oversampling, "intensity", n_masks, mask_seed, masks)
    dtype = torch.complex128 if arr.dtype.kind == "c" else torch.float64
    # Simulated for the image scaled by a power of two to near 1, and scaled back (exact):
    # the squared magnitudes of values beyond 1e154 overflowed to inf, in silence.
    peak = float(np.abs(arr).max(initial=0.0))
    # (Within +-1000: a power of two beyond float64's range would not scale.)
    exponent = int(np.clip(np.frexp(peak)[1], -1000, 1000)) if peak > 0 else 0
    x = torch.as_tensor(native_copy(arr) * 2.0**-exponent, dtype=dtype)[None, None]
    with torch.no_grad():
        intensity = operator(x)[0].numpy().transpose(1, 2, 0).astype(np.float64)
    if photons is not None:
        total = float(intensity.sum())
        if total > 0 and float(photons) * float(intensity.max()) / total > _MAX_POISSON_MEAN:
            raise ValueError(
                f"photons={photons:g} is beyond what a Poisson draw can take (a pixel's "
                f"mean count up to {_MAX_POISSON_MEAN:g}); at such counts the noise is "
                "below 1e-7 of the signal: pass photons=None for none"
            )
        if total > 0:
            rng = _check_random_state(random_state)
            counts = rng.poisson(intensity * (float(photons) / total))
            intensity = counts * (total / float(photons))
    with np.errstate(over="ignore"):
        if measurement == "intensity":
            out = np.ldexp(intensity, 2 * exponent)
        else:
            out = np.ldexp(np.sqrt(intensity), exponent)
    if ((out < np.finfo(np.float64).tiny) & (intensity > 0)).any():
        warn(
            f"some {measurement} values of an image of magnitude up to {peak:.3g} are below "
            "float64's normal range and lost precision or became 0; pass the image in "
            "larger units" + (", or measurement='magnitude'" if measurement == "intensity" else ""),
            UserWarning,
        )
    if not np.isfinite(out).all():
        raise ValueError(
            f"the {measurement} values of an image of magnitude up to {peak:.3g} exceed float64's "
            "range; pass the image in smaller units"
            + (", or measurement='magnitude'" if measurement == "intensity" else "")
        )
    return out[..., 0] if operator.n_masks == 0 else out
