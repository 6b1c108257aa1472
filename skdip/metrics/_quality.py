"""Full-reference image quality: PSNR and SSIM for grey and channels-last images.

Thin wrappers over :mod:`skimage.metrics` that fix skdip's conventions
(``(H, W)`` grey or ``(H, W, C)`` colour, reference first) and validate input.
Every metric of :mod:`skdip.metrics` also takes torch tensors, in the same
layout: they are read detached and on the CPU (so a network's output can be
scored as it is, even one that requires grad or lives on a GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._typing import Float
from .._validation import check_int, check_number, looks_like_a_stack, metric_array
from .._warnings import warn

__all__ = ["psnr", "ssim"]

# A reference beyond this many times data_range is on another scale, not merely
# noisy or ringing (estimates get a wider margin, 10, in _check_pair).
_REFERENCE_MARGIN = 1.5

# A reference spanning less than this fraction of data_range is most likely on
# another scale (an image on [0, 1] divided by 255 once more spans 1/255): its PSNR
# would read tens of dB too high.
_NARROW_REFERENCE = 0.01

# The options of skimage.metrics.structural_similarity that ssim passes on (its
# keywords, and those it reads from **kwargs).
_SSIM_OPTIONS = frozenset(
    {"win_size", "gaussian_weights", "sigma", "K1", "K2", "use_sample_covariance"}
)


def _as_image(image: Any, name: str, scale_uint8: bool = True) -> np.ndarray:
    """A real, finite float64 array of 2 or 3 dimensions; uint8 read on [0, 1] when
    ``scale_uint8``, else as the numbers it holds."""
    arr = metric_array(image, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be 2-D (H, W) or 3-D channels-last (H, W, C), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8 and scale_uint8:
        # 8-bit images are on [0, 1] in skdip, as the estimators read them.
        return arr / 255.0
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_pair(
    image_true: Any, image_test: Any, data_range: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (reference, estimate) pair; return float64 views or copies.

    With ``data_range``, also refuse values on another scale than it: a uint8
    image (read on [0, 1]) with ``data_range=255`` read 48 dB too high, and
    16-bit counts against the default range of 1 read -54 dB.
    """
    # Once, here: the uint8 test below reads the dtypes of the arrays, not of tensors.
    image_true = metric_array(image_true, "image_true")
    image_test = metric_array(image_test, "image_test")
    a = _as_image(image_true, "image_true")
    b = _as_image(image_test, "image_test")
    if a.shape != b.shape:
        raise ValueError(
            f"image_true and image_test must have the same shape, got {a.shape} and {b.shape}"
        )
    if a.ndim == 3 and looks_like_a_stack(a.shape):
        # The metrics read the last axis as channels: a stack of N grey images or a
        # channels-first image was scored as one N x H picture, silently (SSIM 0.940 for
        # 8 images of 32x32 whose own SSIMs average 0.925).
        h, w, c = a.shape
        warn(
            f"image_true of shape {a.shape} is read as one {h}x{w} image with {c} channels "
            "(channels last). For a channels-first image, move the channels last "
            "(np.moveaxis(image, 0, -1)); for a stack of grey images, score each image on "
            "its own ([psnr(t, e) for t, e in zip(image_true, image_test)]). If these are "
            "images with these channels, ignore this warning.",
            UserWarning,
        )
    if data_range is None:
        return a, b
    if data_range != 1 and any(x.dtype == np.uint8 for x in (image_true, image_test)):
        raise ValueError(
            "uint8 images are read on [0, 1] (divided by 255), as skdip's estimators read "
            f"them: their data range is 1 (the default), not {data_range:g}"
        )
    # Beyond these margins the images are on another scale, not merely noisy.
    spans = {"image_true": float(np.ptp(a)), "image_test": float(np.ptp(b))}
    for name, bound in (("image_true", _REFERENCE_MARGIN), ("image_test", 10.0)):
        span = spans[name]
        if span > bound * data_range:
            raise ValueError(
                f"{name} spans {span:.6g} in intensity, far more than data_range="
                f"{data_range:g}: pass the range of the images' scale (e.g. data_range=255 "
                "for float data on 0-255, 65535 for 16-bit counts) and both images on that "
                "scale (uint8 images are read on [0, 1])"
            )
    span = spans["image_true"]
    if 0 < span < _NARROW_REFERENCE * data_range:
        # Not refused: a nearly flat reference can be meant (a dark frame).
        warn(
            f"image_true spans only {span:.3g} in intensity, under 1% of data_range="
            f"{data_range:g}: if the images are on a smaller scale (divided by 255 twice, "
            "8-bit values with data_range=65535), pass that scale's range, or the "
            "PSNR reads too high",
            UserWarning,
        )
    return a, b


def _check_data_range(data_range: Any) -> float:
    if data_range is None:
        # The scorers take None for each reference's own range; scikit-image's metrics
        # for the dtype's. Neither is guessed here.
        raise TypeError(
            "data_range must be a real number, the range of the images' scale (1 for "
            "[0, 1], 255 for floats on 0-255), not None: for the reference's own range "
            "pass np.ptp(image_true)"
        )
    return check_number(data_range, "data_range", 0, exclusive_minimum=True)


def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(a, b):
        return float("inf")
    # On the unit range: the same ratio, and data_range**2 cannot overflow (1e200).
    return float(peak_signal_noise_ratio(a / data_range, b / data_range, data_range=1.0))


def _check_win_size(win_size: Any, sample_covariance: bool) -> int:
    """Refuse a window scikit-image would misuse: a negative one was taken for its
    absolute value (-3 scored 0.9945), 1 with the sample covariance divided by zero,
    a float failed on indexing."""
    # The type only: the oddness and the smallest size get their own message below.
    win_size = check_int(win_size, "win_size")
    smallest = 3 if sample_covariance else 1
    if win_size < smallest or win_size % 2 == 0:
        raise ValueError(
            f"win_size must be an odd int of at least {smallest}, got {win_size}"
            + (
                " (the sample covariance over a 1-pixel window divides by zero; "
                "use_sample_covariance=False allows win_size=1)"
                if win_size == 1
                else ""
            )
        )
    return win_size


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float, **kwargs: Any) -> float:
    from skimage.metrics import structural_similarity

    refused = sorted({"full", "gradient", "channel_axis", "data_range"} & set(kwargs))
    if refused:
        raise TypeError(
            f"ssim does not take {', '.join(refused)}: it returns the mean SSIM as a float, "
            "sets channel_axis from the image and data_range from its own argument; call "
            "skimage.metrics.structural_similarity for the SSIM map or gradient"
        )
    # scikit-image drops keywords it does not know, so a misspelt option would
    # silently score another SSIM (the uniform window for gaussian_weight=True).
    unknown = sorted(set(kwargs) - _SSIM_OPTIONS)
    if unknown:
        raise TypeError(
            f"ssim got unknown keyword argument(s) {', '.join(unknown)}; the options it "
            f"passes on to skimage.metrics.structural_similarity are "
            f"{', '.join(sorted(_SSIM_OPTIONS))}"
        )
    if "sigma" in kwargs and not kwargs.get("gaussian_weights"):
        # scikit-image reads sigma only for the Gaussian window: ssim(a, b, sigma=3)
        # scored the uniform 7x7 window's SSIM, whatever the sigma.
        raise TypeError(
            "sigma sets the Gaussian window's width and is used only with "
            "gaussian_weights=True: pass both, or neither for the uniform 7x7 window"
        )
    win_size = kwargs.get("win_size")
    if win_size is not None:
        win_size = _check_win_size(win_size, kwargs.get("use_sample_covariance", True))
        kwargs["win_size"] = win_size
    sigma = kwargs.get("sigma", 1.5)
    if kwargs.get("gaussian_weights"):
        # Checked with a given win_size too: sigma=0 weighted each window by its centre
        # pixel alone, silently.
        check_number(sigma, "sigma", 0, exclusive_minimum=True, hint="the Gaussian window's width")
    if win_size is None:
        # scikit-image's default: 7, or the Gaussian's support (truncated at 3.5 sigma).
        if kwargs.get("gaussian_weights"):
            win_size = 2 * int(3.5 * sigma + 0.5) + 1
            if win_size < 3 and kwargs.get("use_sample_covariance", True):
                # A 1-pixel window: the sample covariance's N / (N - 1) divides by zero.
                raise ValueError(
                    f"sigma={sigma:g} makes a 1x1 Gaussian window, over which the sample "
                    "covariance is undefined: pass sigma >= 1/7 (a 3x3 window), or "
                    "use_sample_covariance=False"
                )
        else:
            win_size = 7
    if min(a.shape[:2]) < win_size:
        raise ValueError(
            f"SSIM needs images of at least {win_size}x{win_size} pixels "
            f"(win_size={win_size}), got spatial shape {a.shape[:2]}"
        )
    channel_axis = -1 if a.ndim == 3 else None
    # On the unit range: SSIM is unchanged by a common scale and its variances
    # cannot overflow.
    a, b = a / data_range, b / data_range
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis, **kwargs))


def psnr(image_true: Any, image_test: Any, data_range: Float = 1.0) -> float:
    """Peak signal-to-noise ratio, ``10 log10(data_range**2 / MSE)`` in dB.

    The mean squared error is taken over all pixels and channels. Wraps
    :func:`skimage.metrics.peak_signal_noise_ratio`, with ``data_range=1`` by
    default where scikit-image takes its dtype's range, 2, for a float
    reference with negative values (its PSNR is then 6 dB higher).

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W) or (H, W, C)
        Reference (ground-truth) image.
    image_test : array-like or torch.Tensor of the same shape
        Image to evaluate.
    data_range : float, default=1.0
        Range of the intensities (1 for images in ``[0, 1]``). uint8 images
        are scaled to ``[0, 1]`` first, as skdip's estimators read them, so
        with a uint8 image it must stay 1. A reference spanning more than 1.5
        times it, or an estimate more than 10 times, is refused as being on
        another scale (16-bit counts, floats on 0-255); a reference spanning
        less than 1% of it is warned of (a smaller scale reads too high).

    Returns
    -------
    value : float
        PSNR in decibels; ``inf`` when the images are identical.

    Raises
    ------
    ValueError
        On shape mismatch, wrong number of dimensions, NaN/inf values, a
        non-positive ``data_range`` or images on another scale than it.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import psnr
    >>> x = np.zeros((4, 4))
    >>> round(psnr(x, x + 0.1), 6)  # MSE = 0.01
    20.0
    """
    data_range = _check_data_range(data_range)
    a, b = _check_pair(image_true, image_test, data_range)
    return _psnr(a, b, data_range)


def ssim(image_true: Any, image_test: Any, data_range: Float = 1.0, **kwargs: Any) -> float:
    """Structural similarity index (mean SSIM over the image).

    Wraps :func:`skimage.metrics.structural_similarity` with its defaults
    (7x7 uniform window); colour images are handled with ``channel_axis=-1``
    (SSIM per channel, then averaged).

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W) or (H, W, C)
        Reference (ground-truth) image, at least 7x7 pixels.
    image_test : array-like or torch.Tensor of the same shape
        Image to evaluate.
    data_range : float, default=1.0
        Range of the intensities (1 for images in ``[0, 1]``). uint8 images
        are scaled to ``[0, 1]`` first, as skdip's estimators read them, so
        with a uint8 image it must stay 1. A reference spanning more than 1.5
        times it, or an estimate more than 10 times, is refused as being on
        another scale (16-bit counts, floats on 0-255); a reference spanning
        less than 1% of it is warned of (a smaller scale reads too high).
    **kwargs
        Passed on to :func:`skimage.metrics.structural_similarity`
        (for example ``gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False`` for the settings of Wang et al. 2004);
        not ``full``, ``gradient``, ``channel_axis`` or ``data_range``. Only
        ``win_size``, ``gaussian_weights``, ``sigma``, ``K1``, ``K2`` and
        ``use_sample_covariance`` are taken: others (a misspelt option, which
        scikit-image would silently ignore) raise a TypeError, as does
        ``sigma`` without ``gaussian_weights=True`` (it would change nothing).

    Returns
    -------
    value : float
        Mean SSIM, at most 1 (reached for identical images).

    Raises
    ------
    ValueError
        On shape mismatch, wrong number of dimensions, NaN/inf values, a
        non-positive ``data_range``, images on another scale than it or
        images smaller than the window.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import ssim
    >>> x = np.random.default_rng(0).random((16, 16, 3))
    >>> ssim(x, x)
    1.0
    """
    data_range = _check_data_range(data_range)
    a, b = _check_pair(image_true, image_test, data_range)
    return _ssim(a, b, data_range, **kwargs)
