"""Synthetic noise models for denoising experiments.

Every function returns a new floating array clipped to ``[0, 1]`` and leaves
its input untouched. Randomness comes from ``random_state`` (``None``, an int,
a :class:`numpy.random.RandomState` or a :class:`numpy.random.Generator`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from .._typing import Float
from .._validation import check_number, metric_array
from .._warnings import warn

__all__ = [
    "NOISE_KINDS",
    "NOISE_LEVELS",
    "add_gaussian_noise",
    "add_impulse_noise",
    "add_noise",
    "add_poisson_noise",
    "add_speckle_noise",
]

#: The published noise levels used by the early-stopping study of Wang et al.
#: (ImageNet-C's severities 2, 3 and 4 for Gaussian, shot and speckle noise;
#: larger impulse amounts than ImageNet-C's): ``sigma`` for ``"gaussian"``,
#: ``photons`` (lambda) for ``"poisson"``, ``c`` for ``"speckle"`` and
#: ``amount`` for ``"impulse"``. Read-only mapping: kind -> (low, medium, high).
NOISE_LEVELS = MappingProxyType(
    {
        "gaussian": (0.12, 0.18, 0.26),
        "poisson": (25, 12, 5),
        "speckle": (0.20, 0.35, 0.45),
        "impulse": (0.3, 0.5, 0.7),
    }
)

NOISE_KINDS: tuple[str, ...] = tuple(NOISE_LEVELS)

# Values this far outside [0, 1] (round-off of a previous step) are clipped
# silently; anything further is rejected as not being a [0, 1] image.
_RANGE_TOL = 1e-6


def _check_random_state(random_state: Any) -> np.random.RandomState | np.random.Generator:
    """Resolve ``random_state`` to a RandomState, or pass a Generator through."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return check_random_state(random_state)


def _check_image(image: Any, name: str = "image", check_range: bool = True) -> np.ndarray:
    """Validate an image and return it as a new floating array.

    Float32/float16 inputs keep their dtype; everything else becomes float64.
    """
    arr = metric_array(image, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be 2-D (H, W) or 3-D channels-last (H, W, C), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    # In the machine's byte order: torch refuses another.
    dtype = arr.dtype.newbyteorder("=") if arr.dtype.kind == "f" else np.float64
    out = np.array(arr, dtype=dtype, copy=True)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if check_range:
        lo, hi = float(out.min()), float(out.max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise ValueError(
                f"{name} values must lie in [0, 1], got range [{lo:g}, {hi:g}] "
                "(convert integer pictures with skimage.util.img_as_float)"
            )
        np.clip(out, 0.0, 1.0, out=out)
    return out


# NumPy's Poisson sampler refuses larger means ("lam value too large").
_MAX_POISSON_MEAN = 1e15


def _warn_saturating(level: float, name: str) -> None:
    # The images are on [0, 1] and clipped to it: a level above 1 (often one on the
    # 0-255 scale, 25 for 25/255) leaves nearly every pixel at 0 or 1.
    if level > 1:
        warn(
            f"{name}={level:g} is larger than the whole [0, 1] intensity range: the noisy "
            f"image is nearly all 0 or 1 after clipping. For a level on the 0-255 scale, "
            f"pass {name}={level:g}/255.",
            UserWarning,
        )


def _finish(noisy: np.ndarray, like: np.ndarray) -> np.ndarray:
    np.clip(noisy, 0.0, 1.0, out=noisy)
    return noisy.astype(like.dtype, copy=False)


def add_gaussian_noise(image: Any, sigma: Float, random_state: Any = None) -> np.ndarray:
    """Add white Gaussian noise: ``clip(x + sigma * N(0, 1), 0, 1)``.

    Parameters
    ----------
    image : array-like of shape (H, W) or (H, W, C)
        Clean image with values in ``[0, 1]``.
    sigma : float
        Standard deviation of the noise (``>= 0``), in the units of the
        ``[0, 1]`` intensity range.
    random_state : None, int, RandomState or Generator, default=None
        Source of randomness.

    Returns
    -------
    noisy : ndarray of the same shape
        New floating array (float32 inputs stay float32) clipped to ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import add_gaussian_noise
    >>> x = np.full((64, 64), 0.5)
    >>> y = add_gaussian_noise(x, 0.1, random_state=0)
    >>> round(float((y - x).std()), 2)
    0.1
    """
    x = _check_image(image)
    sigma = check_number(sigma, "sigma", 0)
    _warn_saturating(sigma, "sigma")
    rng = _check_random_state(random_state)
    noisy = x.astype(np.float64) + sigma * rng.standard_normal(x.shape)
    return _finish(noisy, x)


def add_poisson_noise(image: Any, photons: Float, random_state: Any = None) -> np.ndarray:
    """Add Poisson ("shot") noise: ``clip(Poisson(photons * x) / photons, 0, 1)``.

    Each value is replaced by a photon count drawn with mean ``photons * x``
    and rescaled, so the mean intensity is preserved and the noise variance is
    ``x / photons``: fewer photons means stronger noise.

    Parameters
    ----------
    image : array-like of shape (H, W) or (H, W, C)
        Clean image with values in ``[0, 1]``.
    photons : float
        Expected photon count of a white pixel (lambda, ``> 0``). At 1 or
        fewer, one count is already ``>= 1``: every value comes out 0 or 1 and
        the clipping loses the mean (warned of).
    random_state : None, int, RandomState or Generator, default=None
        Source of randomness.

    Returns
    -------
    noisy : ndarray of the same shape
        New floating array clipped to ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import add_poisson_noise
    >>> x = np.full((64, 64), 0.5)
    >>> y = add_poisson_noise(x, 25, random_state=0)
    >>> bool(abs(y.mean() - 0.5) < 0.02)
    True
    """
    x = _check_image(image)
    photons = check_number(photons, "photons", 0, exclusive_minimum=True)
    if photons * float(x.max()) > _MAX_POISSON_MEAN:
        raise ValueError(
            f"photons={photons:g} is beyond what a Poisson draw can take (means up to "
            f"{_MAX_POISSON_MEAN:g}); at such counts the noise is below 1e-7 of the signal"
        )
    if photons <= 1:
        # One count is then 1 / photons >= 1: every value is 0 or 1, and the clipping
        # takes most of the light (a 0.5 grey came out 0.048 at photons=0.1). A level
        # read as "more is noisier", as the other kinds' are, lands here.
        warn(
            f"photons={photons:g} is at most one photon for a white pixel: every noisy "
            "value is 0 or 1 after clipping and the mean intensity is lost (a grey x "
            "comes out 1 - exp(-photons * x) on average, not x). photons is a count: "
            "fewer means noisier (NOISE_LEVELS['poisson'] is (25, 12, 5)).",
            UserWarning,
        )
    rng = _check_random_state(random_state)
    noisy = rng.poisson(photons * x.astype(np.float64)) / photons
    return _finish(np.asarray(noisy, dtype=np.float64), x)


def add_speckle_noise(image: Any, c: Float, random_state: Any = None) -> np.ndarray:
    """Add multiplicative speckle noise: ``clip(x + x * N(0, c**2), 0, 1)``.

    Parameters
    ----------
    image : array-like of shape (H, W) or (H, W, C)
        Clean image with values in ``[0, 1]``.
    c : float
        Standard deviation of the multiplicative factor (``>= 0``; above 1,
        where most values are clipped, warned of).
    random_state : None, int, RandomState or Generator, default=None
        Source of randomness.

    Returns
    -------
    noisy : ndarray of the same shape
        New floating array clipped to ``[0, 1]``. Black pixels stay black.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import add_speckle_noise
    >>> x = np.zeros((8, 8))
    >>> bool(np.all(add_speckle_noise(x, 0.3, random_state=0) == 0))
    True
    """
    x = _check_image(image)
    c = check_number(c, "c", 0)
    if c > 1:
        # A percentage (c=20 for 20%) clipped 96% of a 0.5 grey to 0 or 1, silently.
        warn(
            f"c={c:g} is the standard deviation of the multiplicative factor 1 + c N(0, 1): "
            "above 1 most values are clipped to 0 or 1 (61% of a 0.5 grey at c=2, 96% at "
            f"c=20). For a percentage, pass c={c:g}/100.",
            UserWarning,
        )
    rng = _check_random_state(random_state)
    x64 = x.astype(np.float64)
    noisy = x64 + x64 * (c * rng.standard_normal(x.shape))
    return _finish(noisy, x)


def add_impulse_noise(image: Any, amount: Float, random_state: Any = None) -> np.ndarray:
    """Add impulse ("salt and pepper") noise.

    A fraction ``amount`` of the values, chosen at random, is replaced by
    0 (pepper) or 1 (salt) with equal probability. For colour images the
    choice is made independently for every pixel *and channel* (each of the
    ``H * W * C`` values is corrupted on its own, as in scikit-image's
    ``random_noise(mode="s&p")``), so a corrupted pixel may be coloured.

    Parameters
    ----------
    image : array-like of shape (H, W) or (H, W, C)
        Clean image with values in ``[0, 1]``.
    amount : float
        Probability that a value is corrupted, in ``[0, 1]``.
    random_state : None, int, RandomState or Generator, default=None
        Source of randomness.

    Returns
    -------
    noisy : ndarray of the same shape
        New floating array with values in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import add_impulse_noise
    >>> x = np.full((100, 100), 0.5)
    >>> y = add_impulse_noise(x, 0.3, random_state=0)
    >>> round(float(np.mean(y != 0.5)), 1)
    0.3
    """
    x = _check_image(image)
    amount = check_number(amount, "amount", 0, 1)
    rng = _check_random_state(random_state)
    corrupt = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    noisy = x.astype(np.float64)
    noisy[corrupt] = salt[corrupt].astype(np.float64)
    return _finish(noisy, x)


_ADDERS = {
    "gaussian": add_gaussian_noise,
    "poisson": add_poisson_noise,
    "speckle": add_speckle_noise,
    "impulse": add_impulse_noise,
}


def add_noise(image: Any, kind: str, level: Float, random_state: Any = None) -> np.ndarray:
    """Add noise of a named kind: a dispatcher over the ``add_*_noise`` functions.

    Parameters
    ----------
    image : array-like of shape (H, W) or (H, W, C)
        Clean image with values in ``[0, 1]``.
    kind : {"gaussian", "poisson", "speckle", "impulse"}
        Noise model; see :func:`add_gaussian_noise`, :func:`add_poisson_noise`,
        :func:`add_speckle_noise` and :func:`add_impulse_noise`.
    level : float
        The model's strength parameter: ``sigma``, ``photons``, ``c`` or
        ``amount`` respectively (a larger level is noisier, except for
        ``photons``, a count: fewer are noisier). :data:`NOISE_LEVELS` lists
        published values.
    random_state : None, int, RandomState or Generator, default=None
        Source of randomness.

    Returns
    -------
    noisy : ndarray of the same shape
        New floating array clipped to ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import NOISE_LEVELS, add_noise
    >>> x = np.full((16, 16), 0.5)
    >>> low, medium, high = NOISE_LEVELS["gaussian"]
    >>> y = add_noise(x, "gaussian", high, random_state=0)
    >>> y.shape
    (16, 16)
    """
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    try:
        adder = _ADDERS[kind]
    except KeyError:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {list(_ADDERS)}") from None
    return adder(image, level, random_state=random_state)
