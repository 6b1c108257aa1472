"""The noise level of undersampled Cartesian k-space, from the measurement alone.

K-space is no image: the image-domain estimate of :mod:`._noise_level` reads
its structure (and the zeros of the unsampled entries) as noise. What k-space
offers instead is redundancy. Where the measurement holds more numbers than the
forward model has unknowns (a real image's k-space is Hermitian, so a sampled
column and its mirror measure the same thing; several coils see the same
image), the part of the measurement that no image can explain is noise alone,
whatever the image. Its power, over the number of such directions (the degrees
of freedom), is the noise variance, as in the residual variance of a linear
regression.

With whole columns sampled (the usual Cartesian mask: every row of each
sampled phase-encoding line), a unitary inverse transform along the fully
sampled axis keeps the noise white and splits the model into one small linear
system per image row, which is solved exactly. Measured on bundled pictures
(``benchmarks/kspace_noise.py``, ``benchmarks/results/kspace_noise.md``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .._validation import images_digest
from ..operators._kspace import sampled_lines

# Singular values below this fraction of the largest count as zero: such a direction is
# counted as noise, and the image puts at most this fraction of its norm into it (for
# smooth coil maps the per-row systems are very ill-conditioned, not singular).
_RTOL = 1e-8
# Stop adding image rows once the residual has this many degrees of freedom: the
# estimate's relative standard deviation is then about 1 / sqrt(2 * 5000) = 1%.
_TARGET_DOF = 5000
# Rows solved together (one batched SVD).
_ROW_BATCH = 8
# Fewer degrees of freedom than this: no estimate. With 80, the estimate lies within
# [0.80, 1.21] times the truth with probability 0.99 (chi-square quantiles).
MIN_DOF = 80
# The most recent estimates, by measurement and model (a grid search scores every
# setting against the same data): least recently used dropped.
_CACHED_ESTIMATES = 64
_ESTIMATES: OrderedDict[str, tuple[float, int] | None] = OrderedDict()
_ESTIMATES_LOCK = threading.Lock()
# The golden ratio's fractional part: rows taken in this low-discrepancy order spread
# over the image when only some are needed.
_GOLDEN = 0.6180339887498949


def _centred_dft_rows(n: int, frequencies: np.ndarray) -> np.ndarray:
    """Rows ``frequencies`` of the centred orthonormal DFT matrix of size ``n``."""
    # fftshift(fft(ifftshift(e_x))) for every unit vector e_x: the columns of the matrix.
    eye = np.fft.ifftshift(np.eye(n), axes=0)
    full = np.fft.fftshift(np.fft.fft(eye, axis=0, norm="ortho"), axes=0)
    return full[frequencies]


def _centred_idft(k: np.ndarray, axis: int) -> np.ndarray:
    """Centred orthonormal inverse DFT along one axis (unitary: white noise stays white)."""
    shifted = np.fft.ifftshift(k, axes=axis)
    return np.fft.fftshift(np.fft.ifft(shifted, axis=axis, norm="ortho"), axes=axis)


def _residual_and_dof(systems: np.ndarray, data: np.ndarray) -> tuple[float, int]:
    """Squared norm of ``data`` outside the range of ``systems``, and that range's
    co-dimension, summed over a stack (``systems`` ``(n, m, p)``, ``data`` ``(n, m)``)."""
    u, s, _ = np.linalg.svd(systems, full_matrices=False)
    kept = s > _RTOL * s.max(axis=-1, keepdims=True)
    coefficients = np.einsum("nmk,nm->nk", u, data) * kept
    # The residual itself, not |data|^2 - |projection|^2: the image's part can be many
    # orders of magnitude above the noise.
    residual = float(np.sum((data - np.einsum("nmk,nk->nm", u, coefficients)) ** 2))
    dof = systems.shape[0] * systems.shape[1] - int(np.count_nonzero(kept))
    return residual, dof


def kspace_noise_sigma(measurement: np.ndarray, operator) -> tuple[float, int] | None:
    """Per-component noise standard deviation of a ``KSpaceSampling`` measurement.

    The noise is taken as white, complex Gaussian with the same standard
    deviation in the real and imaginary parts of every coil (as
    :func:`skdip.datasets.simulate_kspace` adds it), and the measurement as the
    operator's model of some image plus that noise. The estimate is then the
    root mean square of the measurement's part that no image explains, per
    degree of freedom: independent of the image, exact in expectation, with a
    relative spread of about ``1 / sqrt(2 * dof)``. A model that does not fit
    the data (an image declared real that has a phase, wrong coil maps) puts
    the misfit into the estimate as well.

    Parameters
    ----------
    measurement : ndarray of shape (H, W, 2 * n_coils)
        The measurement in :class:`skdip.operators.KSpaceSampling`'s channel
        layout; unsampled entries are ignored.
    operator : KSpaceSampling
        The forward model the measurement was taken with.

    Returns
    -------
    result : tuple of (float, int) or None
        ``(sigma, dof)``, in the measurement's units, ``sigma`` NaN when
        ``dof`` is 0 (no redundancy: e.g. a complex image seen by a single
        coil). None when the mask samples neither whole columns nor whole rows
        (the model does not split into rows), or the measurement is not finite.
    """
    data = np.asarray(measurement, dtype=np.float64)
    if data.ndim != 3 or not np.isfinite(data).all():
        return None
    mask = operator.mask.detach().cpu().numpy()[0, 0] != 0
    maps = operator.coil_maps
    maps = None if maps is None else maps.detach().cpu().numpy().astype(np.complex128)
    model = [mask.astype(np.float64)] + ([] if maps is None else [maps.real, maps.imag])
    key = images_digest([data, *model]) + operator.image
    with _ESTIMATES_LOCK:  # scorers may run in threads
        if key in _ESTIMATES:
            _ESTIMATES.move_to_end(key)
            return _ESTIMATES[key]
    result = _estimate(data, mask, maps, operator.image == "complex")
    with _ESTIMATES_LOCK:
        _ESTIMATES[key] = result
        while len(_ESTIMATES) > _CACHED_ESTIMATES:
            _ESTIMATES.popitem(last=False)
    return result


def _estimate(
    data: np.ndarray, mask: np.ndarray, maps: np.ndarray | None, complex_image: bool
) -> tuple[float, int] | None:
    """:func:`kspace_noise_sigma` of a float64 measurement, the mask ``(H or 1, W)``
    and the complex coil maps (None: one coil)."""
    h, w = data.shape[:2]
    n_coils = 1 if maps is None else maps.shape[0]
    if mask.shape[0] not in (1, h) or mask.shape[1] != w or data.shape[2] != 2 * n_coils:
        return None  # not this model's measurement
    if maps is not None and maps.shape[1:] != (h, w):
        return None
    mask = np.broadcast_to(mask, (h, w))
    kspace = data[..., 0::2] + 1j * data[..., 1::2]  # (H, W, n_coils)
    lines = sampled_lines(mask)
    if not lines:
        return None
    if "columns" not in lines:
        # Whole rows sampled: the same problem transposed (the 2-D DFT commutes with it).
        mask, kspace = mask.T, kspace.transpose(1, 0, 2)
        maps = None if maps is None else maps.transpose(0, 2, 1)
        h, w = w, h
    columns = np.flatnonzero(mask[0])
    # Along the fully sampled axis, back to image rows: row y of every coil now holds the
    # sampled 1-D DFT of that coil's image row, plus white noise of the same level.
    hybrid = _centred_idft(kspace[:, columns, :], axis=0)  # (H, n_sampled, n_coils)
    hybrid = hybrid.transpose(0, 2, 1).reshape(h, -1)  # coil-major, as the systems below
    dft = _centred_dft_rows(w, columns)  # (n_sampled, W)

    def systems(rows: np.ndarray) -> np.ndarray:
        """The real ``(2 n_coils n_sampled, unknowns)`` system of each image row."""
        if maps is None:
            a = np.broadcast_to(dft, (len(rows), *dft.shape))
        else:
            a = (maps[:, rows, None, :] * dft[None, None]).transpose(1, 0, 2, 3)
            a = a.reshape(len(rows), -1, w)
        if complex_image:
            a = np.concatenate([a, 1j * a], axis=2)  # unknowns: real, then imaginary part
        return np.concatenate([a.real, a.imag], axis=1)

    def stacked(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values.real, values.imag], axis=1)

    if maps is None:
        # Every row has the same system: one decomposition for all of them.
        residual, dof = _shared_system(systems(np.arange(1))[0], stacked(hybrid))
    else:
        residual, dof = 0.0, 0
        order = np.argsort((np.arange(h) * _GOLDEN) % 1.0, kind="stable")
        for start in range(0, h, _ROW_BATCH):
            rows = order[start : start + _ROW_BATCH]
            part, part_dof = _residual_and_dof(systems(rows), stacked(hybrid[rows]))
            residual, dof = residual + part, dof + part_dof
            if dof >= _TARGET_DOF:
                break
    sigma = float(np.sqrt(residual / dof)) if dof > 0 else float("nan")
    return sigma, dof


def _shared_system(system: np.ndarray, data: np.ndarray) -> tuple[float, int]:
    """:func:`_residual_and_dof` for one system shared by every row of ``data``."""
    u, s, _ = np.linalg.svd(system, full_matrices=False)
    basis = u[:, s > _RTOL * s.max()]
    residual = float(np.sum((data - (data @ basis) @ basis.T) ** 2))
    return residual, data.shape[0] * (system.shape[0] - basis.shape[1])
