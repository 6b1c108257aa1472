"""Phase-retrieval metrics that factor out the trivial ambiguities.

Fourier magnitudes of a zero-padded object do not change when the padded
object is moved circularly, replaced by its conjugate flip ``x(-r)*`` or
multiplied by a global phase ``exp(1j * theta)``. A reconstruction is
therefore compared with the truth after the best of these operations: the
translation and the phase come in closed form from the peak of an FFT
cross-correlation, for the estimate and for its conjugate flip.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np

from .._typing import Float, Int
from .._validation import check_plane
from ..operators._fourier import check_oversampling
from ._quality import _REFERENCE_MARGIN, _check_data_range

__all__ = ["align_phase_retrieval", "phase_retrieval_error", "phase_retrieval_psnr"]


def _as_object(image: Any, name: str) -> np.ndarray:
    arr = check_plane(image, name)
    return arr.astype(np.complex128 if arr.dtype.kind == "c" else np.float64, copy=False)


def _align(image_true, image_test, oversampling, flip):
    """Aligned test object in the padded frame, the padded truth, and the parameters."""
    a = _as_object(image_true, "image_true")
    b = _as_object(image_test, "image_test")
    if a.shape != b.shape:
        raise ValueError(
            f"image_true and image_test must have the same shape, got {a.shape} and {b.shape}"
        )
    sy, sx = check_oversampling(oversampling, minimum=1)
    frame = (a.shape[0] * sy, a.shape[1] * sx)
    a_pad = np.zeros(frame, dtype=a.dtype)
    a_pad[: a.shape[0], : a.shape[1]] = a
    b_pad = np.zeros(frame, dtype=b.dtype)
    b_pad[: b.shape[0], : b.shape[1]] = b
    real = a.dtype.kind != "c" and b.dtype.kind != "c"

    fa = np.fft.fft2(a_pad)
    candidates = [(False, b_pad)]
    if flip:
        # Reversing both axes of the frame is x(-r) up to a circular shift,
        # which the correlation search below absorbs.
        candidates.append((True, np.conj(b_pad[::-1, ::-1])))
    best = None
    for flipped, cand in candidates:
        # corr[s] = sum_r a(r) conj(cand(r - s)): overlap with cand rolled by s.
        corr = np.fft.ifft2(fa * np.conj(np.fft.fft2(cand)))
        if real:
            corr = corr.real
        mag = np.abs(corr)
        idx = np.unravel_index(int(np.argmax(mag)), mag.shape)
        if best is None or mag[idx] > best[0] * (1 + 1e-12):
            best = (float(mag[idx]), flipped, cand, idx, corr[idx])
    _, flipped, cand, (dy, dx), peak = best
    # The global phase that makes the overlap real and positive (a sign for real data).
    if real:
        phase = 1.0 if peak >= 0 else -1.0
    else:
        phase = np.exp(1j * np.angle(peak)) if abs(peak) > 0 else 1.0
    aligned = phase * np.roll(cand, (int(dy), int(dx)), axis=(0, 1))
    params = {"shift": (int(dy), int(dx)), "flipped": flipped, "phase": phase}
    return a, a_pad, aligned, params


# The result's type follows return_params: without these, a type checker read every
# call as returning "ndarray | tuple", and refused the plain call's result as an array.
@overload
def align_phase_retrieval(
    image_true: Any,
    image_test: Any,
    oversampling: Int | tuple[int, int] = 2,
    flip: bool = True,
    return_params: Literal[False] = False,
) -> np.ndarray: ...


@overload
def align_phase_retrieval(
    image_true: Any,
    image_test: Any,
    oversampling: Int | tuple[int, int] = 2,
    flip: bool = True,
    *,
    return_params: Literal[True],
) -> tuple[np.ndarray, dict]: ...


@overload
def align_phase_retrieval(
    image_true: Any,
    image_test: Any,
    oversampling: Int | tuple[int, int] = 2,
    flip: bool = True,
    return_params: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]: ...


def align_phase_retrieval(
    image_true: Any,
    image_test: Any,
    oversampling: Int | tuple[int, int] = 2,
    flip: bool = True,
    return_params: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Move a phase-retrieval estimate onto the truth, up to the trivial ambiguities.

    Both objects are zero-padded to the measured frame (``oversampling``
    times their size, object top-left). Over every circular shift of the
    padded estimate, its conjugate flip (when ``flip``) and a global phase
    (a sign for real data), the one closest to the truth in the l2 sense is
    returned, cropped back to the object's shape.

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W)
        Reference object, real or complex. Integer objects (uint8 too) are taken
        as numbers, as :func:`skdip.datasets.simulate_diffraction` takes them
        (unlike :func:`psnr`, which reads uint8 images on [0, 1]).
    image_test : array-like or torch.Tensor of shape (H, W)
        Estimate, real or complex.
    oversampling : int or tuple of int, default=2
        Padding factor per axis of the measurement (1: compare the arrays
        as given, with circular shifts of their own frame).
    flip : bool, default=True
        Also consider the conjugate flip ``x(-r)*`` (set False for coded
        diffraction patterns, which remove that ambiguity).
    return_params : bool, default=False
        Also return ``{"shift": (dy, dx), "flipped": bool, "phase": p}``:
        the aligned estimate is ``p * roll(e, (dy, dx))`` in the padded
        frame, with ``e`` the padded estimate or its reversed conjugate.

    Returns
    -------
    aligned : ndarray of shape (H, W)
        Real when both inputs are real, else complex.
    params : dict
        Only if ``return_params``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import align_phase_retrieval
    >>> x = np.zeros((8, 8)); x[2:5, 1:4] = np.arange(9).reshape(3, 3)
    >>> twin = np.roll(x[::-1, ::-1], (1, 1), axis=(0, 1))  # x(-r) in the 8x8 box
    >>> bool(np.allclose(align_phase_retrieval(x, twin), x))
    True
    """
    a, _, aligned, params = _align(image_true, image_test, oversampling, bool(flip))
    out = aligned[: a.shape[0], : a.shape[1]].copy()
    return (out, params) if return_params else out


def phase_retrieval_error(
    image_true: Any,
    image_test: Any,
    oversampling: Int | tuple[int, int] = 2,
    flip: bool = True,
) -> float:
    """Relative l2 error after alignment over translation, conjugate flip and global phase.

    ``min ||x - T(x_hat)|| / ||x||`` over the trivial ambiguities ``T``
    (see :func:`align_phase_retrieval`), measured on the whole padded frame:
    energy of the estimate that lands outside the object's box counts as
    error. 0 is a perfect reconstruction; an all-zero estimate scores 1.

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W)
        Reference object (not all zeros), real or complex.
    image_test : array-like or torch.Tensor of shape (H, W)
        Estimate.
    oversampling : int or tuple of int, default=2
        Padding factor per axis of the measurement.
    flip : bool, default=True
        Also consider the conjugate flip.

    Returns
    -------
    error : float

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import phase_retrieval_error
    >>> x = np.random.default_rng(0).random((8, 8)) * np.exp(1j)
    >>> round(phase_retrieval_error(x, -1j * np.conj(x[::-1, ::-1])), 12)
    0.0
    >>> round(phase_retrieval_error(x, np.zeros((8, 8))), 12)
    1.0
    """
    a, a_pad, aligned, _ = _align(image_true, image_test, oversampling, bool(flip))
    norm = float(np.linalg.norm(a))
    if norm == 0:
        raise ValueError("image_true must not be all zeros")
    return float(np.linalg.norm(a_pad - aligned)) / norm


def phase_retrieval_psnr(
    image_true: Any,
    image_test: Any,
    oversampling: Int | tuple[int, int] = 2,
    flip: bool = True,
    data_range: Float = 1.0,
) -> float:
    """PSNR (dB) after alignment over translation, conjugate flip and global phase.

    ``10 log10(data_range**2 / MSE)`` with ``MSE = sum |x - T(x_hat)|**2 / (H W)``,
    the sum taken over the padded frame (misplaced energy counts) and the
    mean over the ``H x W`` object pixels; complex objects use the modulus
    of the difference.

    Parameters
    ----------
    image_true : array-like or torch.Tensor of shape (H, W)
        Reference object, real or complex. Integer objects (uint8 too) are taken
        as numbers, as :func:`skdip.datasets.simulate_diffraction` takes them
        (unlike :func:`psnr`, which reads uint8 images on [0, 1]).
    image_test : array-like or torch.Tensor of shape (H, W)
        Estimate.
    oversampling : int or tuple of int, default=2
        Padding factor per axis of the measurement.
    flip : bool, default=True
        Also consider the conjugate flip.
    data_range : float, default=1.0
        Peak value of the reference's scale. A reference whose modulus exceeds
        1.5 times it is refused as being on another scale, as :func:`psnr` refuses
        it (an object on 0-255 with the default range read about -22 dB).

    Returns
    -------
    value : float
        ``inf`` for a perfect match.

    Raises
    ------
    ValueError
        On shape mismatch, NaN/inf values, a non-positive ``data_range`` or a
        reference on another scale than it.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.metrics import phase_retrieval_psnr
    >>> x = np.random.default_rng(0).random((8, 8))
    >>> phase_retrieval_psnr(x, x[::-1, ::-1])
    inf
    """
    data_range = _check_data_range(data_range)
    a, a_pad, aligned, _ = _align(image_true, image_test, oversampling, bool(flip))
    peak = float(np.abs(a).max())
    if peak > _REFERENCE_MARGIN * data_range:
        raise ValueError(
            f"image_true reaches {peak:.6g} in modulus, far more than data_range="
            f"{data_range:g}: pass the peak of the objects' scale (e.g. data_range=255 for "
            "objects on 0-255) and both objects on that scale. Integer objects (uint8 too) "
            "are taken as numbers here, not read on [0, 1] as psnr reads uint8 images"
        )
    sq = float(np.sum(np.abs(a_pad - aligned) ** 2))
    if sq <= 1e-24 * max(float(np.sum(np.abs(a) ** 2)), 1e-300):
        return float("inf")
    return float(10.0 * np.log10(data_range**2 * a.size / sq))
