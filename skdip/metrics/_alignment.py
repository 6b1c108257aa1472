"""Shift-tolerant metrics for blind deblurring.

In blind deblurring the image and the kernel are only determined up to a
shift (a kernel moved one way and the image moved the other way explain the
data equally well), so estimates are scored after the best integer
alignment with the reference, as in the evaluations of SelfDeblur and
Zhuang et al. (search over +-10 pixels and a border crop).
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
from scipy import signal

from .._typing import Float, Int
from .._validation import check_int
from ._quality import _as_image, _check_data_range, _check_pair, _psnr, _ssim

__all__ = ["align_shift", "aligned_psnr", "aligned_ssim", "kernel_error"]


def _pick_best(cost: np.ndarray, max_shift: int) -> tuple[int, int]:
    """Index of the minimum of ``cost`` (indexed by shift + max_shift).

    Near-ties (within round-off) go to the smallest shift, so that a
    featureless image reports no shift.
    """
    best = cost.min()
    tol = 1e-9 * max(abs(best), float(np.abs(cost).max()), 1e-300)
    cand = np.argwhere(cost <= best + tol) - max_shift
    norms = np.abs(cand).sum(axis=1) * (cost.size + 1) + np.abs(cand).max(axis=1)
    dy, dx = cand[np.argmin(norms)]
    return int(dy), int(dx)


def _prepare(
    image_true: Any, image_test: Any, max_shift: Any, crop: Any, data_range: float | None = None
) -> tuple[np.ndarray, np.ndarray, int, int]:
    a, b = _check_pair(image_true, image_test, data_range)
    max_shift = check_int(max_shift, "max_shift", 0)
    crop = max_shift if crop is None else check_int(crop, "crop", 0)
    if crop < max_shift:
        raise ValueError(
            f"crop ({crop}) must be >= max_shift ({max_shift}) so that every shift "
            "compares valid pixels"
        )
    h, w = a.shape[:2]
    if h - 2 * crop < 1 or w - 2 * crop < 1:
        raise ValueError(
            f"crop={crop} leaves nothing of an image of spatial shape {(h, w)}"
            + (" (crop defaults to max_shift)" if crop == max_shift else "")
            + f": pass a smaller max_shift (and crop), below {(min(h, w) + 1) // 2}"
        )
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    return a, b, max_shift, crop


def _best_shift(a: np.ndarray, b: np.ndarray, max_shift: int, crop: int) -> tuple[int, int]:
    """Shift minimising the MSE between ``a`` cropped and ``b`` displaced, via FFT."""
    if max_shift == 0:
        return 0, 0
    # The MSE is blind to a level common to both images (per channel), the FFT's
    # round-off is not: on a 1e5 offset real differences between shifts fell under
    # the tie tolerance.
    level = np.mean(a, axis=(0, 1), keepdims=True)
    a, b = a - level, b - level
    h, w = a.shape[:2]
    ref = a[crop : h - crop, crop : w - crop]
    # The part of b that any allowed shift can reach.
    lo = crop - max_shift
    search = b[lo : h - lo, lo : w - lo]
    # cross[dy, dx] = sum ref * search[dy:dy + rh, dx:dx + rw], summed over channels.
    cross = signal.fftconvolve(search, ref[::-1, ::-1], mode="valid", axes=(0, 1)).sum(axis=-1)
    box = np.ones(ref.shape[:2] + (1,))
    energy = signal.fftconvolve(search**2, box, mode="valid", axes=(0, 1)).sum(axis=-1)
    # MSE up to the constant ||ref||^2 and the common normalisation.
    cost = energy - 2.0 * cross
    return _pick_best(cost, max_shift)


def _crop_pair(
    a: np.ndarray, b: np.ndarray, shift: tuple[int, int], crop: int
) -> tuple[np.ndarray, np.ndarray]:
    h, w = a.shape[:2]
    dy, dx = shift
    ref = a[crop : h - crop, crop : w - crop]
    test = b[crop + dy : h - crop + dy, crop + dx : w - crop + dx]
    return ref, test


def _squeeze(x: np.ndarray, grey: bool) -> np.ndarray:
    return x[:, :, 0] if grey else x


def align_shift(
    image_true: Any, image_test: Any, max_shift: Int = 10, crop: Int | None = None
) -> tuple[int, int]:
    """Integer displacement of ``image_test`` relative to ``image_true``.

    Returns the ``(dy, dx)`` in ``[-max_shift, max_shift]**2`` minimising
    the mean squared error between ``image_true[c:H-c, c:W-c]`` and
    ``image_test[c+dy:H-c+dy, c+dx:W-c+dx]`` (``c = crop``), i.e. such that
    ``image_test[i + dy, j + dx]`` best matches ``image_true[i, j]``. For
    ``image_test = np.roll(image_true, (dy, dx), axis=(0, 1))`` it returns
    ``(dy, dx)``; ``np.roll(image_test, (-dy, -dx), axis=(0, 1))`` undoes it.
    All shifts are scored at once by FFT cross-correlation. Ties go to the
    smallest shift.

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W) or (H, W, C)
        Reference image.
    image_test : array-like or torch.Tensor of the same shape
        Image to align.
    max_shift : int, default=10
        Largest displacement searched along each axis.
    crop : int or None, default=None
        Border removed from the reference before comparing; ``None`` means
        ``max_shift``. Must be ``>= max_shift``.

    Returns
    -------
    shift : tuple of two ints
        ``(dy, dx)``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import align_shift
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> align_shift(x, np.roll(x, (3, -2), axis=(0, 1)), max_shift=5)
    (3, -2)
    """
    a, b, max_shift, crop = _prepare(image_true, image_test, max_shift, crop)
    return _best_shift(a, b, max_shift, crop)


def aligned_psnr(
    image_true: Any,
    image_test: Any,
    max_shift: Int = 10,
    crop: Int | None = None,
    data_range: Float = 1.0,
) -> float:
    """PSNR after the best integer alignment and a border crop.

    The shift is found by :func:`align_shift` (least MSE, hence highest
    PSNR, over ``[-max_shift, max_shift]**2``) and the PSNR is computed on
    the cropped reference against the correspondingly shifted test region.
    With ``max_shift=0`` and ``crop=0`` this is :func:`psnr`.

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W) or (H, W, C)
        Reference image.
    image_test : array-like or torch.Tensor of the same shape
        Estimate (for example a deblurred image).
    max_shift : int, default=10
        Largest displacement searched along each axis.
    crop : int or None, default=None
        Border removed before comparing; ``None`` means ``max_shift``.
        Must be ``>= max_shift``.
    data_range : float, default=1.0
        Range of the intensities.

    Returns
    -------
    value : float
        PSNR in dB at the best shift (``inf`` for a perfect match).

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import aligned_psnr
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> aligned_psnr(x, np.roll(x, (1, 2), axis=(0, 1)), max_shift=3)
    inf
    """
    data_range = _check_data_range(data_range)
    a, b, max_shift, crop = _prepare(image_true, image_test, max_shift, crop, data_range)
    ref, test = _crop_pair(a, b, _best_shift(a, b, max_shift, crop), crop)
    return _psnr(ref, test, data_range)


def aligned_ssim(
    image_true: Any,
    image_test: Any,
    max_shift: Int = 10,
    crop: Int | None = None,
    data_range: Float = 1.0,
) -> float:
    """SSIM after the best integer alignment and a border crop.

    The shift is the one of :func:`aligned_psnr` (least MSE, found by
    :func:`align_shift`), not a separate SSIM search: SSIM is then computed
    once, by :func:`ssim`, on the aligned, cropped regions (which must be at
    least 7x7 pixels).

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W) or (H, W, C)
        Reference image.
    image_test : array-like or torch.Tensor of the same shape
        Estimate.
    max_shift : int, default=10
        Largest displacement searched along each axis.
    crop : int or None, default=None
        Border removed before comparing; ``None`` means ``max_shift``.
        Must be ``>= max_shift``.
    data_range : float, default=1.0
        Range of the intensities.

    Returns
    -------
    value : float
        Mean SSIM at the chosen shift.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import aligned_ssim
    >>> x = np.random.default_rng(0).random((32, 32, 3))
    >>> aligned_ssim(x, np.roll(x, (-2, 0), axis=(0, 1)), max_shift=3)
    1.0
    """
    data_range = _check_data_range(data_range)
    a, b, max_shift, crop = _prepare(image_true, image_test, max_shift, crop, data_range)
    grey = np.ndim(image_true) == 2
    if min(a.shape[:2]) - 2 * crop < 7:
        # _ssim's own message would name only the cropped size.
        raise ValueError(
            f"aligned_ssim compares the images without a border of crop={crop} pixels (crop "
            f"defaults to max_shift), which leaves less than SSIM's 7x7 window of the "
            f"{a.shape[:2]} images: pass a smaller max_shift (and crop)"
        )
    ref, test = _crop_pair(a, b, _best_shift(a, b, max_shift, crop), crop)
    return _ssim(_squeeze(ref, grey), _squeeze(test, grey), data_range)


def _as_kernel(kernel: Any, name: str) -> np.ndarray:
    # Numbers, uint8 too (a PSF saved as an 8-bit image holds counts), as Convolution,
    # DIPDeconvolver and datasets.blur take a kernel: read on [0, 1], a uint8 kernel
    # scored 254 against the same counts as floats, which blur identically.
    k = _as_image(kernel, name, scale_uint8=False)
    if k.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {k.shape}")
    return k


def _pad_to(k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad ``k`` to ``shape``, its centre ``((h - 1) // 2, (w - 1) // 2)`` on the canvas's."""
    (h, w), (H, W) = k.shape, shape
    # The centre Convolution uses, so that kernels which blur alike line up at shift (0, 0).
    top, left = (H - 1) // 2 - (h - 1) // 2, (W - 1) // 2 - (w - 1) // 2
    out = np.zeros(shape)
    out[top : top + h, left : left + w] = k
    return out


# The result's type follows return_shift: without these, a type checker read every
# call as returning "float | tuple", and refused kernel_error(a, b) < 0.1.
@overload
def kernel_error(
    kernel_true: Any,
    kernel_est: Any,
    max_shift: Int | None = None,
    return_shift: Literal[False] = False,
) -> float: ...


@overload
def kernel_error(
    kernel_true: Any, kernel_est: Any, max_shift: Int | None = None, *, return_shift: Literal[True]
) -> tuple[float, tuple[int, int]]: ...


@overload
def kernel_error(
    kernel_true: Any, kernel_est: Any, max_shift: Int | None = None, return_shift: bool = False
) -> float | tuple[float, tuple[int, int]]: ...


def kernel_error(
    kernel_true: Any,
    kernel_est: Any,
    max_shift: Int | None = None,
    return_shift: bool = False,
) -> float | tuple[float, tuple[int, int]]:
    """Relative l2 error between two blur kernels, up to an integer shift.

    Both kernels are zero-padded, about their centres
    (``((h - 1) // 2, (w - 1) // 2)``, the sample
    :class:`~skdip.operators.Convolution` centres on, so for an even size the
    one before the middle), to a common size, and the estimate is moved by
    the integer shift ``(dy, dx)`` that best matches the reference (largest
    cross-correlation, which is least squared error because shifting on an
    unbounded zero background keeps the norm). The error is

    ``||k_true - S k_est|| / ||k_true||``

    where ``S k_est`` is ``k_est`` moved back by ``(dy, dx)``: ``k_est``
    looks like ``k_true`` displaced by ``(dy, dx)``. The kernels are
    compared as given (not renormalised); 0 means identical up to shift,
    and a kernel compared with zeros scores 1.

    "As given" means on the kernels' own scales, which the error depends on:
    every kernel is taken as the numbers it holds, uint8 too (not divided by
    255 as the image metrics read uint8 images), as
    :class:`~skdip.operators.Convolution`, :class:`~skdip.DIPDeconvolver` and
    :func:`~skdip.datasets.blur` take it, so kernels that blur alike score 0.
    To compare shapes only, for example a kernel saved as an 8-bit image
    against :class:`~skdip.BlindDeblurrer`'s ``kernel_`` (which sums to 1),
    normalise both to unit sum first:
    ``kernel_error(k / k.sum(), k_est / k_est.sum())``.

    Parameters
    ----------
    kernel_true : array-like or torch.Tensor of shape (h1, w1)
        Reference kernel (not all zeros).
    kernel_est : array-like or torch.Tensor of shape (h2, w2)
        Estimated kernel; its size may differ from the reference.
    max_shift : int or None, default=None
        Largest displacement searched along each axis, relative to the
        centre-aligned position; ``None`` allows any shift with overlap.
    return_shift : bool, default=False
        Also return the shift ``(dy, dx)``.

    Returns
    -------
    error : float
        Relative l2 error, ``>= 0``.
    shift : tuple of two ints
        Only if ``return_shift``: the displacement of ``kernel_est``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import kernel_error
    >>> k = np.zeros((5, 5))
    >>> k[2, 1:4] = 1 / 3
    >>> big = np.zeros((9, 9))
    >>> big[3, 4:7] = 1 / 3  # the same kernel, larger and moved by (-1, +1)
    >>> err, shift = kernel_error(k, big, return_shift=True)
    >>> round(err, 12), shift
    (0.0, (-1, 1))
    """
    kt = _as_kernel(kernel_true, "kernel_true")
    ke = _as_kernel(kernel_est, "kernel_est")
    if max_shift is not None:
        max_shift = check_int(max_shift, "max_shift", 0)
    norm_true = float(np.linalg.norm(kt))
    if norm_true == 0:
        raise ValueError("kernel_true must not be all zeros")

    shape = (max(kt.shape[0], ke.shape[0]), max(kt.shape[1], ke.shape[1]))
    a, b = _pad_to(kt, shape), _pad_to(ke, shape)
    H, W = shape
    # corr[H - 1 + s] = sum_m b[m] a[m - s]: large when b is a displaced by s.
    corr = signal.convolve(b, a[::-1, ::-1], mode="full")
    cost = -corr
    if max_shift is not None and (max_shift < H - 1 or max_shift < W - 1):
        my, mx = min(max_shift, H - 1), min(max_shift, W - 1)
        cost = cost[H - 1 - my : H + my, W - 1 - mx : W + mx]
    else:
        my, mx = H - 1, W - 1
    # Smallest shift among (near-)ties.
    best = cost.min()
    tol = 1e-9 * max(abs(best), float(np.abs(cost).max()), 1e-300)
    cand = np.argwhere(cost <= best + tol) - np.array([my, mx])
    dy, dx = (int(v) for v in cand[np.argmin(np.abs(cand).sum(axis=1))])

    # Exact error at that shift on a canvas large enough for both.
    pad_y, pad_x = abs(dy), abs(dx)
    canvas_a = np.pad(a, ((pad_y, pad_y), (pad_x, pad_x)))
    canvas_b = np.zeros_like(canvas_a)
    canvas_b[pad_y - dy : pad_y - dy + H, pad_x - dx : pad_x - dx + W] = b
    error = float(np.linalg.norm(canvas_a - canvas_b)) / norm_true
    if return_shift:
        return error, (dy, dx)
    return error
