"""Fourier phase retrieval: double Deep Image Prior and the classical hybrid input-output.

Both estimators take a far-field measurement (magnitudes or intensities of
the oversampled Fourier transform, see :class:`skdip.operators.FourierMagnitude`)
and return the object, up to the trivial ambiguities of the problem
(translation, conjugate flip, global phase): score reconstructions with
:func:`skdip.metrics.phase_retrieval_psnr`.
"""

from __future__ import annotations

import copy
import functools
import time
from numbers import Integral, Real
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from joblib import Parallel, delayed
from scipy import ndimage
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._engine import (
    _interrupted_before,
    _record_interruption,
    fit_model,
    one_interruption,
    shared_interruption,
)
from .._typing import Float, Int
from .._validation import (
    ArrayInterface,
    InvalidParameterError,
    _nested_lists_as_array,
    check_images,
    images_digest,
    is_target_vector,
    metric_array,
    reference_data_range,
    reject_bool_numbers,
)
from .._warnings import warn
from ..exceptions import FitInterrupted, InterruptionWarning
from ..losses import get_loss
from ..metrics._phase import phase_retrieval_psnr
from ..metrics._quality import _REFERENCE_MARGIN
from ..operators._fourier import (
    FourierMagnitude,
    check_masks,
    check_oversampling,
    make_phase_masks,
)
from ._base import (
    N_JOBS_CONSTRAINT,
    BaseDIPEstimator,
    ImageOutputMixin,
    _Estimator,
    _fit_in_workers,
    _image_seeds,
    _LastSolveMixin,
    _params_key,
    _worker_count,
    checked_generator,
    clear_fitted,
    fitted_value,
    input_noise_std,
    resolved_seed,
    without_fitted_state,
)

__all__ = ["HIOPhaseRetriever", "PhaseRetriever"]

# HIOPhaseRetriever.fit returns the estimator itself (see _base._Estimator).
_HIO = TypeVar("_HIO", bound="HIOPhaseRetriever")

# Told with a refusal of complex X: the k-space advice given by default (split it into
# real and imaginary channels) would make coded patterns of the field's two parts.
_COMPLEX_FIELD_HINT = (
    "phase retrieval takes what a detector measures, the far field's magnitudes or "
    "intensities, not the complex field: pass np.abs(X) (measurement='magnitude') or "
    "np.abs(X) ** 2 (measurement='intensity')"
)

# Measurements are divided by a constant so that the implied object has this
# root-mean-square value: the middle of the [0, 1] range a sigmoid head covers.
_TARGET_RMS = 0.5


# ---------------------------------------------------------------- shared helpers
def _object_shape(frame: tuple[int, int], oversampling: tuple[int, int]) -> tuple[int, int]:
    (h, w), (sy, sx) = frame, oversampling
    if h % sy or w % sx:
        raise ValueError(
            f"the measurement has shape {(h, w)}, which is not divisible by the oversampling "
            f"{oversampling}: the object shape is the measured shape / oversampling"
        )
    return h // sy, w // sx


def _check_measurement(
    image: np.ndarray,
    oversampling: tuple[int, int],
    n_patterns: int,
    index: int | None,
    object_type: str = "complex",
    measurement: str = "magnitude",
    coded: bool | None = None,
) -> tuple[int, int]:
    """Validate one ``(sH, sW, K)`` measurement; return the object shape.

    ``coded``: whether the patterns come through masks (None: more than one pattern).
    """
    name = "X" if index is None else f"X[{index}]"
    coded = n_patterns > 1 if coded is None else coded
    if image.shape[2] != n_patterns:
        what = f"{n_patterns} coded patterns (masks)" if n_patterns > 1 else "one pattern"
        raise ValueError(
            f"{name} has {image.shape[2]} channel(s) but the measurement model has {what}; "
            "pass an (sH, sW) pattern, or (sH, sW, K) patterns for K masks"
        )
    unmeasured = np.isnan(image)
    empty = [k for k in range(image.shape[2]) if unmeasured[..., k].all()]
    if empty:
        raise ValueError(
            f"pattern(s) {empty} of {name} are NaN everywhere: no pixel of them was measured"
        )
    low, high = float(np.nanmin(image)), float(np.nanmax(image))
    if low < 0:
        raise ValueError(
            f"Negative values in data passed to {name} (min {low:g}): magnitudes and "
            "intensities are non-negative"
        )
    if not high > 0:
        # No light measured: PhaseRetriever returned an object anyway, and a relative
        # Fourier error has nothing to be relative to.
        raise ValueError(f"{name} is zero everywhere: no diffraction pattern was measured")
    if object_type == "real" and not coded:
        _check_zero_frequency(image, unmeasured, high, name)
    shape = _object_shape(image.shape[:2], oversampling)
    # Scattered unmeasured pixels, read as 0, leave the test as it was (up to 10% of
    # them, the 3x3 around the zero frequency measured: at most 0.8% outside with the
    # right oversampling and no swapped reading missed, 381 patterns of 5 pictures at
    # 16 and 32 px); a hole around the zero frequency (a beamstop) takes the
    # autocorrelation's broad part away: 5 to 14% outside with the right oversampling,
    # so no test then.
    near = np.r_[-1:2]
    if not unmeasured[np.ix_(near, near)].any():
        _check_autocorrelation(np.where(unmeasured, 0.0, image), shape, measurement, name)
    return shape


def _check_zero_frequency(image, unmeasured, high: float, name: str) -> None:
    """Warn when a non-negative object's single pattern does not peak at the zero
    frequency, which numpy's layout puts at ``[0, 0]``: a centred (fftshift-ed)
    pattern was fitted as garbage. Where ``[0, 0]`` was not measured (a beamstop, or
    a row of a centred pattern), the measured peak's place tells instead."""
    shift_hint = "pass np.fft.ifftshift(X, axes=(0, 1))"
    if not unmeasured[0, 0, 0]:
        if image[0, 0].max() < 0.5 * high:
            warn(
                f"{name}: the zero frequency X[0, 0] is {image[0, 0].max() / high:.2g} "
                "of the pattern's peak, while a non-negative object's pattern peaks there: "
                "is the pattern centred (fftshift)? skdip reads numpy's layout, zero "
                f"frequency at [0, 0]; {shift_hint}. If a beamstop hid it, mark the pixels "
                "it hid as NaN (not measured) instead of 0.",
                UserWarning,
            )
        return
    h, w = image.shape[:2]
    row, col, _ = np.unravel_index(np.nanargmax(image), image.shape)
    from_zero = np.hypot(min(row, h - row), min(col, w - col))
    from_centre = np.hypot(row - h // 2, col - w // 2)
    if from_centre < from_zero:
        warn(
            f"{name}: the zero frequency X[0, 0] was not measured (NaN) and the measured "
            f"peak lies at [{row}, {col}], nearer the middle of the frame than the zero "
            "frequency, near which a non-negative object's pattern peaks: is the pattern "
            f"centred (fftshift)? skdip reads numpy's layout, zero frequency at [0, 0]; "
            f"{shift_hint}.",
            UserWarning,
        )


# Share of the pattern's autocorrelation (zero lag left out) that an object of the
# assumed shape cannot produce, above which the oversampling is doubted. Measured on
# 5 images x 3 sizes simulated at oversampling 2: at most 0.5% down to 1e4 photons
# with the right factor, 30 to 52% with 4.
_AUTOCORRELATION_OUTSIDE = 0.05
# Intensities read as magnitudes (or the reverse): the other reading's autocorrelation
# fits the object at least this many times better, and the given one leaves this share
# outside. Measured on the 24 bundled pictures at 16, 32 and 64 pixels and 15 sparse point
# objects, at oversampling 2 and 3, noise-free and at 1e4 and 1e6 photons, each pattern
# given both ways (1044 patterns): no false alarm (the
# given reading's share was at most 1.16 times the other's where it exceeded 0.5%);
# 83 to 85% of the swapped readings caught (the pictures' intensities read as magnitudes:
# 98% at oversampling 2, 93% at 3).
_OTHER_READING_RATIO = 3.0
_OTHER_READING_MIN = 0.005


def _outside_share(correlation: np.ndarray, shape: tuple[int, int]) -> float:
    """Share of ``correlation`` (zero lag excluded) outside the lags of a ``shape`` object."""
    (H, W), (h, w) = correlation.shape, shape
    inside = np.zeros((H, W), dtype=bool)
    inside[np.ix_(np.r_[0:h, H - h + 1 : H], np.r_[0:w, W - w + 1 : W])] = True
    total = float(correlation.sum())
    return float(correlation[~inside].sum() / total) if total > 0 else 0.0


def _check_autocorrelation(image, shape, measurement: str, name: str) -> None:
    """Warn when the pattern holds lags that an object of ``shape`` cannot produce: the
    oversampling was too large for the data (a 12x12 object read as 8x8 or 6x6 returned
    a wrong object without a word), or the data are intensities read as magnitudes (or
    the reverse), which the other reading's autocorrelation shows."""

    def outside(intensity):
        correlation = np.abs(np.fft.ifft2(intensity, axes=(0, 1))).sum(axis=2)
        correlation[0, 0] = 0.0  # the zero lag holds the noise's own energy
        return _outside_share(correlation, shape)

    as_given = outside(image**2 if measurement == "magnitude" else image)
    other = "intensity" if measurement == "magnitude" else "magnitude"
    plural = {"magnitude": "magnitudes", "intensity": "intensities"}
    as_other = outside(image if measurement == "magnitude" else image**2)
    if as_given > _OTHER_READING_MIN and as_given > _OTHER_READING_RATIO * as_other:
        # Detector intensities fitted as magnitudes returned garbage (1.8 dB) silently.
        warn(
            f"{name} reads as {plural[other]} rather than {plural[measurement]}: as "
            f"{plural[measurement]}, {as_given:.1%} of the pattern's autocorrelation lies at "
            f"lags an object of shape {shape} cannot produce, as {plural[other]} "
            f"{as_other:.1%}. If X holds "
            f"{'intensities |F|**2 (photon counts)' if other == 'intensity' else 'magnitudes |F|'}"
            f", pass measurement={other!r}.",
            UserWarning,
        )
    elif as_given > _AUTOCORRELATION_OUTSIDE:
        warn(
            f"{name}: {as_given:.0%} of the pattern's autocorrelation lies at lags an object "
            f"of shape {shape} (the pattern's shape / oversampling) cannot produce: the object "
            "looks larger than that; check oversampling (the data's own oversampling is "
            "smaller).",
            UserWarning,
        )


def _check_measurements(estimator, images: list[np.ndarray]) -> list[tuple[int, int]]:
    """Check every measurement of a batch (and the support) against ``estimator``'s
    measurement model before any work; return the object shapes."""
    oversampling = check_oversampling(estimator.oversampling)
    masks = _given_masks(estimator)
    n_patterns = _pattern_count(estimator)
    shapes = []
    for i, image in enumerate(images):
        index = None if len(images) == 1 else i
        name = "X" if index is None else f"X[{index}]"
        if masks is not None:
            # Before the count of patterns: masks given channels last, as X is, were
            # reported as a wrong number of channels in X. Every pixel passed too.
            check_masks(masks, shape=_object_shape(image.shape[:2], oversampling))
        shape = _check_measurement(
            image,
            oversampling,
            n_patterns,
            index,
            estimator.object_type,
            estimator.measurement,
            coded=_is_coded(estimator),
        )
        support = _check_support(estimator.support, shape)
        _check_measured_count(estimator, image, shape, support, name)
        shapes.append(shape)
    return shapes


def _check_measured_count(estimator, image, shape, support, name: str) -> None:
    """Warn when fewer values were measured than the object has unknowns: many
    objects then fit the measured pixels, and ``fourier_error_``, taken over them,
    says nothing of which one was returned (28 values for an 8x8 object: HIO's
    Fourier error 3e-8 at 8.9 dB)."""
    measured = int(np.count_nonzero(~np.isnan(image)))
    pixels = int(np.count_nonzero(support)) if support is not None else shape[0] * shape[1]
    unknowns = pixels * (2 if estimator.object_type == "complex" else 1)
    if measured < unknowns:
        warn(
            f"{name}: only {measured} values were measured (not NaN) for an object of "
            f"{unknowns} unknowns: the measurement does not determine the object, and a "
            "small fourier_error_ (over the measured pixels) does not mean a right one",
            UserWarning,
        )


def _check_support(support, shape: tuple[int, int]) -> np.ndarray | None:
    if support is None:
        return None
    arr = metric_array(support, "support")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"support must be a boolean or 0/1 numeric array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(
            f"support has shape {arr.shape} but the object has shape {tuple(shape)} "
            "(the measured shape divided by the oversampling)"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("support contains NaN or infinity")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        # Read as "non-zero is inside", a soft support (1 inside, 1e-3 outside) kept
        # every pixel: the same fit as support=None, silently.
        values = np.unique(arr[~np.isin(arr, (0, 1))])
        raise ValueError(
            "support must contain only 0/1 (or False/True) values, got "
            f"{', '.join(f'{v:g}' for v in values[:3])}{', ...' if values.size > 3 else ''}: "
            "it marks where the object may be non-zero (threshold a soft support first, "
            "e.g. support > 0.5)"
        )
    mask = arr != 0
    if not mask.any():
        raise ValueError("support is empty: it must contain at least one pixel")
    return mask


def _restore_objects(layout, objects: list[np.ndarray]):
    """2-D objects in the caller's container and precision (complex stays complex)."""
    out = []
    for obj, dtype in zip(objects, layout.dtypes, strict=True):
        if np.iscomplexobj(obj):
            dtype = np.complex64 if dtype == np.float32 else np.complex128
        # Always a copy: the result must not alias fitted state the caller could edit.
        out.append(np.array(obj, dtype=dtype))
    if layout.kind == "single":
        return out[0]
    if layout.kind == "array":
        return np.stack(out)
    return out


def _as_reference_list(y, objects: list[np.ndarray]) -> list[np.ndarray]:
    """Clean objects for scoring (real or complex, one per measurement), checked
    against the recovered ``objects`` for their scale."""
    n = len(objects)
    if isinstance(y, list | tuple):
        y = _nested_lists_as_array(y, "y")  # nested lists of numbers: one object
    if isinstance(y, list | tuple):
        refs = [metric_array(v, f"y[{i}]") for i, v in enumerate(y)]
    else:
        arr = metric_array(y, "y")
        if arr.ndim == 3 and arr.shape[2] == 1 and n == 1:
            arr = arr[..., 0]  # one (H, W, 1) object, not H objects
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]  # (N, H, W, 1), the DIP estimators' layout of grey images
        if arr.ndim == 2:
            refs = [arr]
        elif arr.ndim == 3 and not _as_channels(arr, objects):
            refs = list(arr)
        else:
            raise ValueError(
                f"y must hold 2-D objects, got an array of shape {arr.shape}"
                + _channels_hint(arr, objects)
            )
    refs = [r[..., 0] if r.ndim == 3 and r.shape[2] == 1 else r for r in refs]
    if len(refs) != n:
        raise ValueError(f"y holds {len(refs)} objects but X holds {n} measurements")
    for i, (ref, obj) in enumerate(zip(refs, objects, strict=True)):
        if ref.shape != obj.shape:
            # The metric's own message named its arguments, not y.
            padded = all(r % o == 0 and r > o for r, o in zip(ref.shape, obj.shape, strict=False))
            hint = (
                ": it looks like the padded frame; give the object, its top-left "
                f"{obj.shape[0]}x{obj.shape[1]} pixels"
                if len(ref.shape) == 2 and padded
                else ""
            )
            raise ValueError(
                f"y[{i}] has shape {ref.shape} but the object recovered from X[{i}] has shape "
                f"{obj.shape} (the measured shape divided by the oversampling){hint}"
            )
        # The measurement fixes the object's scale: a reference 255 times larger (a
        # uint8 picture of a [0, 1] object) scored -43 dB, silently. Energies, not
        # peaks: a weak fit spreads a point object but keeps the measured energy.
        big, small = float(np.linalg.norm(ref)), float(np.linalg.norm(obj))
        if big > 0 and small > 0 and not 0.1 <= big / small <= 10:
            raise ValueError(
                f"y[{i}] has {big / small:.3g} times the energy (norm) of the object "
                "recovered from the measurement: give y on the scale the measurement "
                "implies (integers are taken as numbers, not as 8-bit levels)"
            )
    return refs


def _as_channels(arr: np.ndarray, objects: list[np.ndarray]) -> bool:
    """Whether ``arr`` holds complex objects as real and imaginary channels, ``(H, W, 2)``
    or ``(N, H, W, 2)``, the DIP estimators' layout of a complex image: read as objects,
    it was H objects of W x 2 ("y holds 8 objects but X holds 1 measurements")."""
    return (
        arr.ndim in (3, 4)
        and arr.shape[-1] == 2
        and arr.dtype.kind != "c"
        and arr.shape[-3:-1] == objects[0].shape
        and len(objects) == (1 if arr.ndim == 3 else arr.shape[0])
    )


def _channels_hint(arr: np.ndarray, objects: list[np.ndarray]) -> str:
    if not _as_channels(arr, objects):
        return ""
    return (
        ": it looks like complex objects given as their real and imaginary parts as "
        "channels; give them as complex arrays, y[..., 0] + 1j * y[..., 1]"
    )


def _aligned_psnr(refs, objects, oversampling, flip: bool, data_range="auto") -> float:
    """Mean aligned PSNR of ``objects`` against the clean ``refs``.

    ``data_range``: a number (a reference reaching beyond it, by the margin
    :func:`~skdip.metrics.phase_retrieval_psnr` allows, is refused), None (each
    reference's peak modulus), or "auto", the estimators' rule
    (:func:`skdip._validation.reference_data_range`): 1, or the reference's peak
    modulus above 1, so that objects given as counts (0-255) are measured on
    their own scale, not 48 dB low.
    """
    values = []
    for i, (ref, obj) in enumerate(zip(refs, objects, strict=True)):
        peak = float(np.abs(ref).max(initial=0.0))
        if data_range is None:
            scale = peak if peak > 0 else 1.0
        elif data_range == "auto":
            scale = reference_data_range(np.abs(ref))
        else:
            if peak > data_range * _REFERENCE_MARGIN:
                raise ValueError(
                    f"y[{i}] reaches {peak:.6g} in modulus, more than data_range="
                    f"{data_range}: pass the peak of the objects' scale (e.g. 255), or "
                    "data_range=None for each reference's own peak"
                )
            scale = data_range
        values.append(phase_retrieval_psnr(ref, obj, oversampling, flip=flip, data_range=scale))
    return float(np.mean(values))


def _run_sharing(runner, flag: list, job: tuple) -> dict:
    """``runner._run(*job)`` in a joblib worker; in a thread of the caller's process it
    shares the caller's interruption ``flag`` (a process gets a copy, unused)."""
    with shared_interruption(flag):
        return runner._run(*job)


def _fourier_error(obj: np.ndarray, magnitudes: np.ndarray, operator: FourierMagnitude) -> float:
    """``|| |F(obj)| - Y || / ||Y||`` for a 2-D object and ``(sH, sW, K)`` magnitudes,
    over the measured pixels (those not NaN)."""
    dtype = torch.complex128 if np.iscomplexobj(obj) else torch.float64
    with torch.no_grad():
        pred = operator(torch.as_tensor(obj, dtype=dtype)[None, None])[0]
    pred = pred.numpy().transpose(1, 2, 0)
    unmeasured = np.isnan(magnitudes)
    if unmeasured.any():
        pred, magnitudes = pred[~unmeasured], magnitudes[~unmeasured]
    norm = float(np.linalg.norm(magnitudes))
    return float(np.linalg.norm(pred - magnitudes)) / (norm if norm > 0 else 1.0)


# ------------------------------------------------------------------- the model
# A pretrained fit's first Adam steps jump far above its low initial loss (see
# PhaseRetriever._make_model): its divergence guard reacts to blow-ups only.
_PRETRAINED_DIVERGENCE_RATIO = 1e3


class _PhaseModel(nn.Module):
    """The object from one or two networks: ``gain * G_a`` or ``gain * G_a exp(i phi(G_p))``.

    The estimate handed to the engine is ``(1, 1, H, W)`` for real objects
    and the ``(1, 2, H, W)`` real and imaginary parts for complex ones; the
    prediction is the magnitude of the oversampled Fourier transform.
    """

    def __init__(self, magnitude_net, phase_net, operator, support, input_noise_std, measured=None):
        super().__init__()
        self.magnitude_net = magnitude_net
        self.phase_net = phase_net
        self.operator = operator
        self.input_noise_std = float(input_noise_std)
        # A learnt global gain lets the object exceed the sigmoid's [0, 1]
        # where the normalisation guessed its peak too low (sparse objects).
        self.log_gain = nn.Parameter(torch.zeros(()))
        self.register_buffer("support", support)
        # 1 where the detector measured, 0 where it did not (NaN in X): the prediction
        # is 0 there, as the target is, so that those pixels add nothing to the loss.
        self.register_buffer("measured", measured)

    def _run(self, net, rng):
        z = net.input
        if rng is not None and self.input_noise_std > 0:
            noise = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
            z = z + self.input_noise_std * noise
        return net(z)

    def estimate(self, rng: torch.Generator | None = None) -> torch.Tensor:
        """The object: ``(1, 1, H, W)`` real, or ``(1, 2, H, W)`` real and imaginary parts."""
        amplitude = self.log_gain.exp() * self._run(self.magnitude_net, rng)
        if self.support is not None:
            amplitude = amplitude * self.support
        if self.phase_net is None:
            return amplitude
        phase = torch.pi * (2.0 * self._run(self.phase_net, rng) - 1.0)
        return torch.cat([amplitude * torch.cos(phase), amplitude * torch.sin(phase)], dim=1)

    def forward(self, rng: torch.Generator | None = None):
        x = self.estimate(rng)
        obj = x if self.phase_net is None else torch.complex(x[:, :1], x[:, 1:])
        prediction = self.operator(obj)
        if self.measured is not None:
            prediction = prediction * self.measured
        return x, prediction


class _ObjectFit(nn.Module):
    """The same networks fitted in the object domain (to an initial guess)."""

    def __init__(self, model: _PhaseModel):
        super().__init__()
        self.model = model

    def forward(self, rng: torch.Generator | None = None):
        x = self.model.estimate(rng)
        return x, x


def _modulus(estimate: torch.Tensor) -> torch.Tensor:
    """What early stopping watches for complex objects: ``|x|`` (blind to the free global phase)."""
    return torch.sqrt(estimate[:, :1].square() + estimate[:, 1:2].square())


def _as_object(estimate: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` real or ``(H, W, 2)`` real/imaginary estimate to a 2-D object."""
    if estimate.shape[2] == 2:
        return estimate[..., 0] + 1j * estimate[..., 1]
    return estimate[..., 0].copy()


_COMMON_PHASE_CONSTRAINTS = {
    "oversampling": [Interval(Integral, 2, None, closed="left"), tuple, list],
    "measurement": [StrOptions({"magnitude", "intensity"})],
    "object_type": [StrOptions({"real", "complex"})],
    "support": ["array-like", ArrayInterface, None],
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "n_masks": [Interval(Integral, 0, None, closed="left")],
    "mask_seed": [Interval(Integral, 0, None, closed="left")],
    "masks": ["array-like", ArrayInterface, None],
}


def _check_oversampling_param(estimator) -> None:
    """The items of an ``oversampling`` pair, which the constraints leave to this check,
    refused as the constraints refuse the rest (before any work)."""
    check_oversampling(
        estimator.oversampling,
        name=f"{type(estimator).__name__}.oversampling",
        error=InvalidParameterError,
    )


def _check_masks_params(estimator) -> None:
    """Given masks (and ``n_masks`` agreeing with them), or numpy's seed range for a
    seed that is used (``n_masks`` > 0)."""
    if estimator.masks is not None:
        # Their pixels are checked with the object's shape (_check_measurements). Refused
        # as the constraints refuse the other parameters, naming the class.
        check_masks(
            estimator.masks, estimator.n_masks, coverage=False, owner=type(estimator).__name__
        )
    elif estimator.n_masks > 0 and estimator.mask_seed >= 2**32:
        raise InvalidParameterError(
            f"{type(estimator).__name__}.mask_seed must be below 2**32 (numpy's seed range), "
            f"got {estimator.mask_seed}"
        )


def _given_masks(estimator) -> np.ndarray | None:
    """The ``masks`` parameter as complex128 ``(K, H, W)``, or None (seeded masks or none)."""
    return None if estimator.masks is None else check_masks(estimator.masks, coverage=False)


def _pattern_count(estimator) -> int:
    """Patterns per measurement: the given masks', ``n_masks``, or 1 for a plain pattern."""
    masks = _given_masks(estimator)
    return max(int(estimator.n_masks), 1) if masks is None else masks.shape[0]


def _is_coded(estimator) -> bool:
    """Whether the object is seen through masks."""
    return estimator.masks is not None or estimator.n_masks > 0


def _twin_is_resolved(estimator) -> bool:
    """Whether the masks tell the object from its twin (the conjugate flip): the
    seeded masks do; given ones do unless flipping and conjugating each of them
    gives one of them up to a global phase (all-ones or symmetric real apertures),
    for then the twin measures the same patterns."""
    masks = _given_masks(estimator)
    if masks is None:
        return estimator.n_masks > 0
    flat = masks.reshape(len(masks), -1)
    norms = np.linalg.norm(flat, axis=1)
    flat, norms = flat[norms > 0], norms[norms > 0]  # an all-zero mask measures nothing
    flipped = np.conj(flat.reshape(-1, *masks.shape[1:])[:, ::-1, ::-1]).reshape(len(flat), -1)
    overlap = np.abs(flipped @ np.conj(flat).T) / np.outer(norms, norms)
    return not bool(np.all(overlap.max(axis=1) > 1 - 1e-9))


def _best_restarts(runs: list[dict], n_init: int, criterion, key: str) -> list[dict]:
    """Per measurement (``n_init`` consecutive ``runs`` each), the restart with the
    lowest ``criterion(run)``, holding every restart's value under ``key``.

    A measurement any of whose restarts Ctrl-C cut is marked
    ``stopped_by="interrupted"``: the choice was made without the cut restarts'
    end, so score and the scorers refuse it (a search stops).
    """
    results = []
    for start in range(0, len(runs), n_init):
        mine = runs[start : start + n_init]
        values = np.array([criterion(r) for r in mine])
        best = mine[int(np.argmin(values))]
        best[key] = values
        if any(r["stopped_by"] == "interrupted" for r in mine):
            best["stopped_by"] = "interrupted"
        results.append(best)
    return results


class _PhaseEstimator(Protocol):
    """What the methods of :class:`_PhaseRetrieverMixin` read of the estimator that
    takes it (the mixin alone has none of it)."""

    reconstruction_: Any

    def fit(self, X: Any, y: Any = None) -> Any: ...

    def _results_for(self, X: Any, fit_params: dict) -> tuple[list, Any, list[dict]]: ...

    def _restore(self, layout: Any, results: list[dict]) -> Any: ...


class _PhaseRetrieverMixin:
    """``transform``, ``fit_transform`` and the aligned score of both phase retrievers,
    on their ``_results_for(X, fit_params)`` and ``_objects(results)``."""

    # Reference scorers use the aligned PSNR (score); see skdip.metrics.ReferenceScorer.
    _aligned_reference = True

    def _unused_params(self) -> frozenset[str]:
        # The seed draws masks only when none are given and n_masks asks for some.
        unused = self.masks is not None or self.n_masks == 0
        inherited: frozenset[str] = getattr(super(), "_unused_params", frozenset)()  # HIO: none
        return frozenset(inherited) | ({"mask_seed"} if unused else set())

    def _restore(self, layout, results: list[dict]):
        return _restore_objects(layout, self._objects(results))

    # Any, as BaseDIPEstimator.transform.
    def transform(self: _PhaseEstimator, X: Any = None) -> Any:
        """Return the reconstructed object(s).

        Parameters
        ----------
        X : array-like, optional
            None or the fitted measurement(s): the fitted reconstruction.
            Other measurements are solved from scratch with the same
            parameters; the fitted state is left as it is. The last such
            solve is kept: the same data and parameters again return it
            (with ``random_state=None`` too) until another solve replaces it
            (for :class:`PhaseRetriever`, also until ``set_params``).

        Returns
        -------
        objects : ndarray or list of ndarray
            ``(H, W)`` objects, real or complex (see ``object_type``).
        """
        check_is_fitted(self, "reconstruction_")
        if X is None:
            return copy.deepcopy(self.reconstruction_)
        _, layout, results = self._results_for(X, {})
        return self._restore(layout, results)

    def fit_transform(self: _PhaseEstimator, X: Any, y: Any = None) -> Any:
        """Fit to ``X`` and return its reconstruction (see :meth:`fit`).

        Parameters
        ----------
        X : array-like
            Measurement(s), as for :meth:`fit`.
        y : None
            Ignored (scikit-learn's API).

        Returns
        -------
        reconstruction : ndarray or list of ndarray
            As ``reconstruction_``.
        """
        return self.fit(X).transform()

    def _scored_results(self, X) -> list[dict]:
        """The results to score for ``X``; refused (FitInterrupted) when Ctrl-C cut the
        fit, or the solve of ``X``."""
        check_is_fitted(self, "reconstruction_")
        # Imported here: the scorers module imports this one when it runs.
        from ..metrics._scorers import check_complete, check_fit_not_interrupted

        check_fit_not_interrupted(self)
        _, _, results = self._results_for(X, {})
        check_complete(results)
        return results

    def _aligned_score(self, X, y, data_range="auto") -> float:
        """The mean aligned PSNR of the objects solved from ``X`` against clean objects
        ``y`` (see :func:`_aligned_psnr` for ``data_range``)."""
        return self._psnr_against(self._scored_results(X), y, data_range)

    def _psnr_against(self, results: list[dict], y, data_range="auto") -> float:
        objects = self._objects(results)
        refs = _as_reference_list(y, objects)
        flip = not _twin_is_resolved(self)
        return _aligned_psnr(refs, objects, self.oversampling, flip, data_range)


# ----------------------------------------------------------- the DIP estimator
class PhaseRetriever(_PhaseRetrieverMixin, BaseDIPEstimator, auto_wrap_output_keys=None):
    """Fourier phase retrieval with (double) Deep Image Priors.

    The object is generated by untrained networks and fitted to the measured
    far-field magnitudes ``Y = |F(pad(x))|`` (oversampled, orthonormal FFT,
    as :class:`skdip.operators.FourierMagnitude` and
    :func:`skdip.datasets.simulate_diffraction`). A real, non-negative
    object is one network's output ``x = G(z)``; a complex object uses two
    networks, one for the magnitude and one for the phase,
    ``x = G_a(z_a) exp(i pi (2 G_p(z_p) - 1))`` (the double DIP of Zhuang et
    al.). The networks' bias towards natural images replaces the
    hand-tuned constraints of the classical iterative methods and makes the
    fit much less sensitive to shot noise.

    Start: gradient descent on Fourier magnitudes from a random network
    stagnates (typically in a superposition of the object and its twin), so
    by default the networks are first fitted for ``pretrain_iter`` steps, in
    the object domain, to a classical hybrid input-output reconstruction
    (the best of 4 HIO restarts), and then to the magnitudes. The short
    pretraining gives a smooth version of the HIO estimate: it places the fit
    in the right basin without copying HIO's noise, and the first steps of
    the magnitude fit move well away from it (under shot noise the DIP
    usually ends several dB above its HIO start; see
    ``benchmarks/results/phase_64.md``). ``init="random"`` skips it.

    Measurement scale: the magnitudes are divided by a constant so that the
    object implied by Parseval's identity has a root-mean-square value of
    0.5, and a learnt global gain absorbs the rest; the reconstruction is
    returned on the scale the measurement implies (the scale of the
    original object for data from :func:`~skdip.datasets.simulate_diffraction`).
    The base class's intensity rescaling is therefore disabled.

    Loss: intensities (``measurement="intensity"``) are turned into
    magnitudes by a square root and every fit compares magnitudes
    (the "amplitude" loss, better behaved under Poisson noise than a loss on
    intensities). The result is defined up to the trivial ambiguities
    (translation, conjugate flip, global phase).

    Parameters
    ----------
    oversampling : int or tuple of int, default=2
        Padding factor per axis (at least 2); the object shape is the
        measured shape divided by it.
    measurement : {"magnitude", "intensity"}, default="magnitude"
        What ``X`` holds.
    object_type : {"real", "complex"}, default="real"
        "real": a non-negative real object (one network). "complex": a
        complex object (two networks: magnitude and phase).
    support : array-like of shape (H, W) or None, default=None
        Pixels of the object's box where it may be non-zero (bool, or 0/1
        values; other values are refused). None: the whole ``H x W`` box (the
        padding is always zero).
    n_init : int, default=1
        Random restarts per measurement; the one with the lowest training
        loss is kept (their lowest losses are in ``restart_losses_``). A
        single run can end far below its HIO start (11 of 36 runs at 32 px
        in the phase retrieval guide's benchmark); ``n_init=3`` lifted the
        worst of them from 7.0 to 20.7 dB, at 3 to 4 times the time. One
        Ctrl-C ends the call, in a network fit, a pretraining or an HIO start
        alike: the fits finished before it are kept, the later restarts and
        measurements run no step (nor their HIO start), and a measurement
        whose restarts were not all run to their end is marked
        ``stopped_by_ == "interrupted"``, so that it is not scored.
    init : {"hio", "random"} or HIOPhaseRetriever, default="hio"
        Starting point: "hio" pretrains the networks on
        ``HIOPhaseRetriever(n_init=4)``; a configured
        :class:`HIOPhaseRetriever` sets that baseline's own parameters (its
        measurement model, support and seed are replaced by this
        estimator's); "random": the networks' random initialisation.
    pretrain_iter : int, default=200
        Object-domain fitting steps on the initial reconstruction (0, like
        ``init="random"``, starts from the random networks).
    n_masks : int, default=0
        Number of coded diffraction patterns in ``X`` (its channels); 0 for
        a single plain pattern.
    mask_seed : int, default=0
        Seed of the coded masks (:func:`skdip.operators.make_phase_masks`),
        the one used to acquire or simulate the data.
    masks : array-like of shape (K, H, W) or None, default=None
        The coded masks themselves, for data taken through masks of one's own
        (phase plates, amplitude masks; see
        :class:`~skdip.operators.FourierMagnitude`): ``X`` then holds ``K``
        patterns, ``n_masks`` is 0 or ``K`` and ``mask_seed`` is not used.
        ``(H, W)`` is the object shape.
    generator : str or BaseGenerator, default="skip"
        The network(s), as in :class:`DIPDenoiser` (``"skip-small"`` for
        CPUs). Each network has one output channel.
    early_stopping : {"emv", "wmv"}, BaseStoppingRule or None, default="emv"
        Reference-free stopping rule; for complex objects it watches the
        modulus ``|x|`` (the global phase is free and may drift).
    max_iter : int, default=5000
        Maximum number of optimisation steps per restart.
    lr : float, default=0.01
        Adam learning rate.
    loss : {"mse", "rmse", "l1", "huber"} or callable, default="mse"
        Loss between predicted and measured (normalised) magnitudes.
        A callable is called as ``loss(prediction, target)``, the model's
        prediction of the measurement first and the observation second
        (tensors shaped ``(1, C, H, W)``), and returns a scalar tensor.
    regularizer : BaseRegularizer or callable, default=None
        Optional penalty on the estimate (real objects; for complex ones it
        receives the real and imaginary parts as two channels).
    reg_noise_std : float, default=1/30
        Perturbation of the input codes at each step.
    output_averaging : float or None, default=None
        Weight of the exponential average of the estimates (see
        :class:`DIPDenoiser`).
    device : str or torch.device, default="auto"
        "auto" uses CUDA when available, else the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the networks, their inputs, the perturbations and the HIO
        start of every restart. The same seed gives identical results on the
        CPU. None draws the seed from NumPy's global generator
        (``np.random.seed`` makes it repeatable, not ``torch.manual_seed``),
        as does a ``RandomState`` instance from itself: the seed a fit ran
        from is kept in ``random_state_``; the restarts' seeds are drawn from it.
    verbose : bool or int, default=False
        Show a progress bar (needs tqdm: the ``progress`` extra).
    callback : callable, default=None
        ``callback(iteration, loss, estimate)`` after every step (the
        estimate is normalised: real/imaginary channels for complex objects).
        A callback with a parameter named ``image`` after its first three
        gets ``image=i`` too, ``i`` the index in ``X`` of the measurement
        fitted: every restart of ``n_init`` of that measurement calls it with
        the same ``i`` (see :class:`DIPDenoiser`).
    n_jobs : int, default=None
        Fits run in parallel (joblib; None means 1, -1 all cores), over the
        measurements of a batch and the restarts of ``n_init``. Each worker
        gets its share of the caller's torch threads
        (``torch.get_num_threads() // n_jobs``). As in :class:`DIPDenoiser`, a
        network that draws at random during the steps (dropout) is not
        reproducible under joblib's threading backend.
    warm_start : bool, default=False
        Keep each measurement's fit (the restart chosen, its network, Adam's
        state, stopping rule and history) so that the next ``fit`` on the
        same measurements goes on with it for up to ``max_iter`` more steps,
        as in :class:`DIPDenoiser`; the other restarts and the HIO start and
        pretraining are not run again. With ``n_init`` > 1 the restart the
        first fit chose goes on (``restart_losses_`` stay those that chose
        it), so the result can differ from one longer fit's, which chooses
        after all its steps.

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The object(s), shape ``(H, W)``, real (float32 for float32 ``X``,
        else float64) or complex, in the container of ``X``.
    restart_losses_ : ndarray or list of ndarray
        The lowest training loss of every restart.
    fourier_error_ : float or list of float
        Relative error of the reconstruction's magnitudes against the
        measured ones, ``|| |F(x)| - Y || / ||Y||``, over the measured
        pixels (NaN in ``X`` left out).
    best_iter_, n_iter_, stopped_by_, history_, loss_curve_ : as in :class:`DIPDenoiser`
        For the kept restart.
    n_images_ : int
        Number of measurements fitted.
    n_features_in_ : int
        Width of ``X`` when it is a single 2-D pattern.
    random_state_ : int
        The seed the fit ran from: set as ``random_state``, it repeats the fit
        (as for :class:`DIPDenoiser`, where it is described in full).

    See Also
    --------
    HIOPhaseRetriever : the classical hybrid input-output algorithm.
    skdip.metrics.phase_retrieval_psnr : PSNR up to the trivial ambiguities.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import PhaseRetriever, SkipNetwork
    >>> from skdip.datasets import simulate_diffraction
    >>> obj = np.zeros((8, 8)); obj[2:6, 3:6] = 1.0
    >>> y = simulate_diffraction(obj, oversampling=2)
    >>> pr = PhaseRetriever(generator=SkipNetwork(width=8, depth=2, input_channels=4),
    ...                     max_iter=20, early_stopping=None, random_state=0)
    >>> pr.fit(y).transform().shape
    (8, 8)
    """

    _parameter_constraints: dict = {
        **{k: v for k, v in BaseDIPEstimator._parameter_constraints.items() if k != "rescale"},
        **_COMMON_PHASE_CONSTRAINTS,
        "init": [StrOptions({"hio", "random"}), HasMethods(["fit", "transform"])],
        "pretrain_iter": [Interval(Integral, 0, None, closed="left")],
    }
    # The measurement is not an image in [0, 1]: it is normalised here, not by
    # the base class's affine rescaling (an offset would break |F x|).
    rescale = False
    _min_image_size = 2
    _scale_uint8 = False  # measurements: uint8 holds counts, not 8-bit pixel levels
    # NaN (or masked values) mark detector pixels that measured nothing: a beamstop,
    # gaps between detector modules, saturated or hot pixels.
    _allow_nan = True
    _complex_data_hint = _COMPLEX_FIELD_HINT

    def __init__(
        self,
        oversampling=2,
        measurement: str = "magnitude",
        object_type: str = "real",
        support=None,
        n_init: Int = 1,
        init="hio",
        pretrain_iter: Int = 200,
        n_masks: Int = 0,
        mask_seed: Int = 0,
        masks=None,
        generator="skip",
        early_stopping="emv",
        max_iter: Int = 5000,
        lr: Float = 0.01,
        loss="mse",
        regularizer=None,
        reg_noise_std: Float = 1.0 / 30.0,
        output_averaging: Float | None = None,
        device="auto",
        random_state=None,
        verbose=False,
        callback=None,
        n_jobs=None,
        warm_start: bool = False,
    ):
        self.oversampling = oversampling
        self.measurement = measurement
        self.object_type = object_type
        self.support = support
        self.n_init = n_init
        self.init = init
        self.pretrain_iter = pretrain_iter
        self.n_masks = n_masks
        self.mask_seed = mask_seed
        self.masks = masks
        self.generator = generator
        self.early_stopping = early_stopping
        self.max_iter = max_iter
        self.lr = lr
        self.loss = loss
        self.regularizer = regularizer
        self.reg_noise_std = reg_noise_std
        self.output_averaging = output_averaging
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.n_jobs = n_jobs
        self.warm_start = warm_start

    # The pretrained fits' looser divergence guard is made again by _continuation.
    _continued_fit_kwargs = frozenset(
        {"param_groups", "monitor", "divergence_ratio", "expect_progress"}
    )

    def _continuation(self, state, previous, image, extra, label):
        kwargs, extra = super()._continuation(state, previous, image, extra, label)
        if self.init != "random" and self.pretrain_iter > 0:
            kwargs["divergence_ratio"] = _PRETRAINED_DIVERGENCE_RATIO
            kwargs["expect_progress"] = False
        return kwargs, extra

    # ------------------------------------------------------------- helpers
    def _check_params(self) -> None:
        super()._check_params()
        _check_masks_params(self)
        _check_oversampling_param(self)
        # The constraint admits any transformer; only HIO gives the start it needs.
        if not isinstance(self.init, str) and not isinstance(self.init, HIOPhaseRetriever):
            raise InvalidParameterError(
                f"{type(self).__name__}.init must be 'hio', 'random' or a HIOPhaseRetriever, "
                f"got {type(self.init).__name__}"
            )

    def _operator(self) -> FourierMagnitude:
        return FourierMagnitude(
            self.oversampling, "magnitude", self.n_masks, self.mask_seed, self.masks
        )

    def _magnitudes(self, image: np.ndarray) -> np.ndarray:
        return np.sqrt(image) if self.measurement == "intensity" else image

    def _fitted_observation(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The magnitudes the network was fitted to (normalised) and their divisor.

        The no-reference score compares the recorded loss, computed on these,
        with a noise level: both must be on this scale, whatever the units of
        ``X`` or whether it holds magnitudes or intensities.
        """
        magnitudes = self._magnitudes(image)
        norm = self._normalisation(magnitudes)
        return magnitudes / norm, norm

    def _normalisation(self, magnitudes: np.ndarray) -> float:
        """Divisor of the magnitudes that gives the implied object an RMS of 0.5."""
        h, w = _object_shape(magnitudes.shape[:2], check_oversampling(self.oversampling))
        # Parseval (orthonormal FFT, unit-modulus masks): each pattern carries ||x||^2.
        # Squares taken relative to the peak, so that huge counts do not overflow.
        peak = float(np.nanmax(magnitudes))
        if not peak > 0:
            return 1.0
        # Unmeasured pixels (NaN) are taken to hold the measured ones' mean energy.
        measured_share = float(np.mean(~np.isnan(magnitudes)))
        energy = float(np.nansum((magnitudes / peak) ** 2)) / magnitudes.shape[2] / measured_share
        masks = _given_masks(self)
        if masks is not None:
            # A mask passes |m|^2 of the energy: exact for masks of even power.
            energy /= float(np.mean(np.abs(masks) ** 2))
        rms = peak * np.sqrt(energy / (h * w))
        return rms / _TARGET_RMS

    # --------------------------------------------------------------- hooks
    def _network_shape(self, image, extra):
        # The object, smaller than its oversampled diffraction pattern.
        return _object_shape(image.shape[:2], check_oversampling(self.oversampling))

    def _make_model(self, image, extra, seed, device):
        shape = self._network_shape(image, extra)
        magnitudes = self._magnitudes(image)
        target = magnitudes / self._normalisation(magnitudes)
        generator = checked_generator(self)
        magnitude_net = generator.build(shape, 1, seed=seed)
        phase_net = None
        if self.object_type == "complex":
            phase_net = generator.build(shape, 1, seed=seed + 1)
        support = _check_support(self.support, shape)
        dtype = torch.get_default_dtype()  # the networks' (built just above): the target's too
        support_t = None if support is None else torch.as_tensor(support, dtype=dtype)
        if support_t is not None:
            support_t = support_t[None, None]
        unmeasured = np.isnan(target)
        measured_t = None
        if unmeasured.any():
            target = np.where(unmeasured, 0.0, target)
            measured_t = torch.as_tensor(~unmeasured.transpose(2, 0, 1), dtype=dtype)[None]
        model = _PhaseModel(
            magnitude_net,
            phase_net,
            self._operator(),
            support_t,
            input_noise_std(self, generator),
            measured_t,
        ).to(device)
        target_t = torch.as_tensor(np.ascontiguousarray(target.transpose(2, 0, 1)), dtype=dtype)
        target_t = target_t[None].to(device)
        fit_kwargs = {"monitor": _modulus} if self.object_type == "complex" else {}
        return model, target_t, fit_kwargs

    def _fit_single(self, image, reference, extra, seed, index, n_images, device) -> dict:
        # One Ctrl-C ends the restart's HIO start, pretraining and fit alike, also in
        # a worker process (in the caller's process the fit call's block is in force).
        with one_interruption():
            return super()._fit_single(image, reference, extra, seed, index, n_images, device)

    def _after_build(self, model, image, extra, seed, device, fit_kwargs):
        # The classical start and the pretraining draw on their own seeded
        # generators: they run outside the build lock, beside other threads' builds.
        # After a Ctrl-C in this call they are not run: the fit then runs no step.
        if self.init != "random" and self.pretrain_iter > 0 and not _interrupted_before():
            magnitudes = self._magnitudes(image)
            try:
                start = self._initial_object(image, seed)
            except KeyboardInterrupt as interrupt:
                if isinstance(interrupt, FitInterrupted):
                    raise  # an error of the caller's code, not a Ctrl-C
                _record_interruption()
                start = None
            if start is None:
                # As the engine does for a Ctrl-C in its loop: the fits finished
                # before it are kept, this one and the later ones run no step.
                warn(
                    f"{type(self).__name__}: fit interrupted in its classical (HIO) start, "
                    "before any network step; keeping the fits finished so far",
                    InterruptionWarning,
                )
                return fit_kwargs
            self._pretrain(model, start / self._normalisation(magnitudes), seed, device)
            # A fresh Adam's first steps (every weight moved by about lr) knock
            # the pretrained network far off its low initial loss; that jump is
            # expected (and helps leave the stagnated classical solution), so
            # the divergence guard only reacts to blow-ups far beyond it.
            # Its first loss is its lowest as often as not: no warning of no progress.
            fit_kwargs = {
                **fit_kwargs,
                "divergence_ratio": _PRETRAINED_DIVERGENCE_RATIO,
                "expect_progress": False,
            }
        return fit_kwargs

    def _initial_object(self, image: np.ndarray, seed: int) -> np.ndarray | None:
        """A classical reconstruction (HIO) to start from, on the caller's scale; None
        when Ctrl-C cut it short."""
        # Restarts of HIO are cheap next to the DIP fit; their best data fit is a better start.
        hio = HIOPhaseRetriever(n_init=4) if isinstance(self.init, str) else clone(self.init)
        # The measurement model is this estimator's, whatever the given object says.
        hio.set_params(
            oversampling=self.oversampling,
            measurement=self.measurement,
            object_type=self.object_type,
            support=self.support,
            n_masks=self.n_masks,
            mask_seed=self.mask_seed,
            masks=self.masks,
            random_state=seed,
        )
        hio._check_params()
        # Not hio.fit: the measurement was checked, and warned about under its
        # index in the batch, by this fit; every restart's start would repeat it.
        shape = _object_shape(image.shape[:2], check_oversampling(self.oversampling))
        result = hio._solve_images([image], [shape], seed)[0]
        return None if result["stopped_by"] == "interrupted" else result["object"]

    def _pretrain(self, model: _PhaseModel, start: np.ndarray, seed: int, device) -> None:
        """Fit the networks to ``start`` (object domain, MSE) before the magnitudes."""
        channels = [start.real, start.imag] if self.object_type == "complex" else [start]
        # In the networks' dtype (the default one they were built in), as the fit's target.
        target = torch.as_tensor(np.stack(channels), dtype=torch.get_default_dtype())
        target = target[None].to(device)
        fit_model(
            _ObjectFit(model),
            target,
            loss=get_loss("mse"),
            max_iter=self.pretrain_iter,
            lr=self.lr,
            stopping=None,
            verbose=bool(self.verbose),
            seed=seed + 2,
            description=type(self).__name__ + " (pretrain)",
        )

    def _finish(self, estimate, result, image, extra) -> dict:
        magnitudes = self._magnitudes(image)
        estimate = estimate * self._normalisation(magnitudes)
        error = _fourier_error(_as_object(estimate), magnitudes, self._operator())
        out = {"estimate": estimate, "fourier_error": error}
        unmeasured = np.isnan(image)
        if unmeasured.any():
            out["measured"] = ~unmeasured  # for the scorers, as an inpainter's mask
        return out

    # ----------------------------------------------------------- internals
    def _fit_images(self, images, references, extras, rng) -> list[dict]:
        _check_measurements(self, images)
        n = len(images)
        # One seed per restart, the same for every measurement: a measurement's fit
        # does not depend on its place in the batch (as in the base class).
        restart_seeds = [int(rng.randint(0, 2**31 - 3)) for _ in range(self.n_init)]
        jobs = [(i, seed) for i in range(n) for seed in restart_seeds]
        workers = _worker_count(self.n_jobs, len(jobs))
        if workers <= 1:
            runs = [
                self._fit_single(images[i], None, extras[i], seed, i, n, self._device)
                for i, seed in jobs
            ]
        else:
            tasks = [[(i, images[i], None, extras[i], seed)] for i, seed in jobs]
            runs = [output[0] for output in _fit_in_workers(self, tasks, n, workers)]
        # Keep the best data fit: the lowest loss a restart reached tells its basin
        # (stagnated restarts plateau far above a good one). A restart whose every
        # step diverged recorded no loss: it ranks last.
        results = _best_restarts(
            runs,
            self.n_init,
            lambda r: np.min(r["history"]["loss"], initial=np.inf),
            "restart_losses",
        )
        for best in results:
            if best["stopped_by"] == "interrupted":
                # A cut fit (one Ctrl-C ends the call), which warm_start cannot
                # finish by going on with one restart.
                best["restarts_cut"] = self.n_init > 1
        return results

    def _states_to_continue(self, images, references, fit_params):
        states = super()._states_to_continue(images, references, fit_params)
        cut = [i for i, r in enumerate(getattr(self, "_fit_results", [])) if r.get("restarts_cut")]
        if states is not None and cut:
            # Going on with the kept restart alone, the cut ones never ran again and
            # the result became scorable, silently.
            warn(
                f"{type(self).__name__}: Ctrl-C cut the restart search of measurement(s) "
                f"{cut}, which warm_start cannot finish by going on with one restart: "
                "fitting afresh",
                UserWarning,
            )
            return None
        return states

    # ------------------------------------------------------------------ API
    def fit(self: _Estimator, X: Any, y: Any = None) -> _Estimator:  # type: ignore[override]
        """Recover the object(s) from measured diffraction pattern(s) ``X``.

        Parameters
        ----------
        X : array-like
            One measurement ``(sH, sW)`` (or ``(sH, sW, n_masks)`` coded
            patterns), a batch ``(N, sH, sW, K)`` or a list; non-negative
            magnitudes or intensities (see ``measurement``); ``sH`` and
            ``sW`` divisible by the oversampling. NaN (or a masked array's
            masked values) marks pixels that were not measured (a
            beamstop, detector gaps): they are left out of the fit.
        y : None
            Ignored (clean objects are only used by :meth:`score`).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return super().fit(X)

    def _objects(self, results: list[dict]) -> list[np.ndarray]:
        return [_as_object(r["estimate"]) for r in results]

    def score(self, X, y=None) -> float:
        """Quality of the reconstruction of ``X``; higher is better.

        With clean objects ``y``: the mean PSNR (dB) after alignment over
        translation, conjugate flip (not with coded masks) and global phase
        (:func:`skdip.metrics.phase_retrieval_psnr`), on the data range 1, or
        on the reference's peak modulus above 1 (objects given as counts, e.g.
        0-255). ``ReferenceScorer("psnr", data_range=...)`` sets another range
        (``None``: each reference's peak, e.g. for objects in small units).
        Without: the no-reference discrepancy score of
        :class:`skdip.metrics.NoReferenceScorer` on the magnitude residual
        recorded at the picked iteration (``loss`` must be "mse").

        Parameters
        ----------
        X : array-like
            Measurement(s); the fitted ones are not solved again.
        y : array-like, optional
            Clean objects ``(H, W)`` (real or complex), one per measurement.

        Returns
        -------
        score : float
        """
        if y is None or is_target_vector(y):  # labels through a Pipeline: as without y
            return super().score(X)
        return self._aligned_score(X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# ----------------------------------------------------------- the HIO baseline
class HIOPhaseRetriever(
    _PhaseRetrieverMixin,
    _LastSolveMixin,
    ImageOutputMixin,
    TransformerMixin,
    BaseEstimator,
    auto_wrap_output_keys=None,
):
    """Classical phase retrieval: Fienup's hybrid input-output with error reduction.

    The iterate ``g`` lives on the padded frame. Each step replaces the
    Fourier magnitudes of ``g`` by the measured ones, keeping the phase
    (``g' = P_F(g)``; with coded masks, the average of the per-pattern
    projections), then enforces the object constraints: inside the support
    (and, for real objects, where ``g'`` is non-negative) ``g <- g'``;
    elsewhere hybrid input-output sets ``g <- g - beta g'`` and error
    reduction sets ``g <- 0``. The last ``n_er`` steps are error reduction,
    which settles the HIO iterate on a consistent object. Shrink-wrap
    (Marchesini et al.) periodically sets the support to the pixels where the
    blurred ``|g|`` exceeds ``shrinkwrap_threshold`` times its maximum (within
    the object's box and ``support``), with a blur that narrows over time.

    Runs in NumPy on the CPU; a 128x128 pattern takes a few milliseconds per
    step. Same scikit-learn API as :class:`PhaseRetriever`, so both can be
    compared in one grid search.

    Parameters
    ----------
    oversampling : int or tuple of int, default=2
        Padding factor per axis (at least 2).
    measurement : {"magnitude", "intensity"}, default="magnitude"
        What ``X`` holds (intensities are square-rooted).
    object_type : {"real", "complex"}, default="real"
        "real": a real, non-negative object; "complex": support only.
    support : array-like of shape (H, W) or None, default=None
        Where the object may be non-zero (bool, or 0/1 values); None: its
        whole box.
    beta : float, default=0.9
        HIO feedback parameter.
    max_iter : int, default=1000
        Total number of iterations, error-reduction steps included.
    n_er : int, default=100
        Error-reduction iterations at the end (at most ``max_iter``).
    shrinkwrap_every : int or None, default=None
        Update the support every this many HIO iterations; None keeps the
        initial support (best for objects that fill their box).
    shrinkwrap_sigma : float, default=3.0
        Initial Gaussian blur (pixels) of the shrink-wrap; it shrinks by 1%
        per update down to 1.5 pixels (a blur set below 1.5 stays as set:
        it never grows).
    shrinkwrap_threshold : float, default=0.1
        Fraction of the maximum of the blurred ``|g|`` kept in the support.
    n_init : int, default=1
        Random restarts; the one with the lowest final Fourier error is kept.
    n_masks : int, default=0
        Number of coded diffraction patterns in ``X``.
    mask_seed : int, default=0
        Seed of the coded masks.
    masks : array-like of shape (K, H, W) or None, default=None
        The coded masks themselves, as in :class:`PhaseRetriever`. Masks that
        are not all of unit modulus combine the ``K`` fields by least squares.
    random_state : int, RandomState instance or None, default=None
        Seeds the random initial phases. None draws the seed from NumPy's
        global generator, as does a ``RandomState`` instance from itself: the
        seed a fit ran from is kept in ``random_state_``.
    n_jobs : int, default=None
        Runs in parallel (joblib processes; None means 1, -1 all cores), over
        the measurements of a batch and the restarts of ``n_init``. The result
        is the same as with one job, bit for bit.

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The object(s), ``(H, W)``, real or complex.
    n_iter_ : int or list of int
        Iterations run (fewer after a Ctrl-C).
    stopped_by_ : str or list of str
        "max_iter", or "interrupted": Ctrl-C ended the fit (sequential runs
        only; with ``n_jobs`` it ends the call). The run it cut keeps its
        iterate, the later restarts and measurements run no iteration, and
        such a fit is not scored (:class:`skdip.exceptions.FitInterrupted`).
    history_ : dict or list of dict
        "fourier_error": relative Fourier error ``|| |F(x_k)| - Y || / ||Y||``
        of the constrained iterate ``x_k`` at each iteration; "fit_time".
    fourier_error_ : float or list of float
        Fourier error of the reconstruction (as in :class:`PhaseRetriever`).
    support_ : ndarray or list of ndarray
        Final support (bool, ``(H, W)``).
    restart_errors_ : ndarray or list of ndarray
        Final Fourier error of every restart.
    n_images_ : int
        Number of measurements fitted.
    n_features_in_ : int
        Width of ``X`` when it is a single 2-D pattern.
    random_state_ : int
        The seed the fit ran from: set as ``random_state``, it repeats the fit
        (as for :class:`DIPDenoiser`, where it is described in full).

    See Also
    --------
    PhaseRetriever : phase retrieval with Deep Image Priors.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import HIOPhaseRetriever
    >>> from skdip.datasets import simulate_diffraction
    >>> from skdip.metrics import phase_retrieval_error
    >>> obj = np.zeros((8, 8)); obj[2:6, 3:6] = 1.0
    >>> hio = HIOPhaseRetriever(max_iter=300, n_er=50, random_state=0)
    >>> x = hio.fit_transform(simulate_diffraction(obj))
    >>> x.shape
    (8, 8)
    """

    # No iterate history nor running variance: skdip's scorers refuse it clearly.
    _own_score_only = True

    _parameter_constraints: dict = {
        **_COMMON_PHASE_CONSTRAINTS,
        "beta": [Interval(Real, 0, 2, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_er": [Interval(Integral, 0, None, closed="left")],
        "shrinkwrap_every": [Interval(Integral, 1, None, closed="left"), None],
        "shrinkwrap_sigma": [Interval(Real, 0, None, closed="neither")],
        "shrinkwrap_threshold": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }
    _min_image_size = 2

    def __init__(
        self,
        oversampling=2,
        measurement: str = "magnitude",
        object_type: str = "real",
        support=None,
        beta: Float = 0.9,
        max_iter: Int = 1000,
        n_er: Int = 100,
        shrinkwrap_every: Int | None = None,
        shrinkwrap_sigma: Float = 3.0,
        shrinkwrap_threshold: Float = 0.1,
        n_init: Int = 1,
        n_masks: Int = 0,
        mask_seed: Int = 0,
        masks=None,
        random_state=None,
        n_jobs=None,
    ):
        self.oversampling = oversampling
        self.measurement = measurement
        self.object_type = object_type
        self.support = support
        self.beta = beta
        self.max_iter = max_iter
        self.n_er = n_er
        self.shrinkwrap_every = shrinkwrap_every
        self.shrinkwrap_sigma = shrinkwrap_sigma
        self.shrinkwrap_threshold = shrinkwrap_threshold
        self.n_init = n_init
        self.n_masks = n_masks
        self.mask_seed = mask_seed
        self.masks = masks
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ----------------------------------------------------------- internals
    def _check_params(self) -> None:
        self._validate_params()
        reject_bool_numbers(self)
        _check_masks_params(self)
        _check_oversampling_param(self)
        if self.n_er > self.max_iter:
            raise ValueError(
                f"n_er={self.n_er} error-reduction steps exceed max_iter={self.max_iter}"
            )

    def _solve(self, X):
        images, layout = check_images(
            X,
            min_size=self._min_image_size,
            scale_uint8=False,
            allow_nan=True,
            complex_hint=_COMPLEX_FIELD_HINT,
        )
        shapes = _check_measurements(self, images)
        seed = resolved_seed(self.random_state)
        results = self._solve_images(images, shapes, seed)
        cut = [i for i, r in enumerate(results) if r["stopped_by"] == "interrupted"]
        if cut:
            warn(
                f"{type(self).__name__}: Ctrl-C ended the fit; measurement(s) {cut} of "
                f"{len(results)} keep the best restart run so far, cut short or not run at "
                "all (n_iter_ says how far it got; stopped_by_ 'interrupted': it is not "
                "scored). Fit again to solve them.",
                InterruptionWarning,
            )
        return images, layout, results, seed

    def _solve_images(
        self, images: list[np.ndarray], shapes: list[tuple[int, int]], seed: int
    ) -> list[dict]:
        """Solve checked ``(sH, sW, K)`` measurements (``shapes``: their object shapes)
        from the int ``seed`` (:func:`~skdip.estimators._base.resolved_seed`).

        One Ctrl-C ends the call (sequential runs): the run it cuts keeps its
        iterate and the later ones run no iteration; the images concerned are
        marked ``stopped_by="interrupted"``. Within an outer
        :func:`~skdip._engine.one_interruption` block (PhaseRetriever's fit) the
        interruption is the block's.
        """
        # One seed for every image, as the DIP estimators do: an image's result does
        # not depend on its place in the batch (a PerImageCV split and the refit agree).
        seeds = _image_seeds(np.random.RandomState(seed), len(images))
        jobs = []
        for image, shape, seed in zip(images, shapes, seeds, strict=True):
            magnitudes = np.sqrt(image) if self.measurement == "intensity" else image
            # Every restart's starting phases are drawn here, in order, so that
            # restarts run in any order or process give the sequential result.
            rng = np.random.RandomState(seed)
            size = (magnitudes.shape[2], *magnitudes.shape[:2])
            for _ in range(self.n_init):
                jobs.append((magnitudes, shape, rng.uniform(0.0, 2.0 * np.pi, size=size)))
        workers = _worker_count(self.n_jobs, len(jobs))
        if workers <= 1:
            with one_interruption():
                # After a Ctrl-C the later runs do no iteration (see _run).
                runs = [self._run(*job) for job in jobs]
        else:
            # Only the parameters travel, not a previous fit's results. A Ctrl-C
            # here ends joblib's run: nothing comes back to keep.
            runner = without_fitted_state(self)
            with one_interruption() as flag:
                try:
                    runs = Parallel(n_jobs=workers)(
                        delayed(_run_sharing)(runner, flag, job) for job in jobs
                    )
                except KeyboardInterrupt:
                    # Worker threads (joblib's threading backend) never see it: they
                    # ran on to their end after the call had raised.
                    flag[0] = True
                    raise
        return _best_restarts(runs, self.n_init, lambda r: r["fourier_error"], "restart_errors")

    def _run(self, magnitudes: np.ndarray, shape: tuple[int, int], phases: np.ndarray) -> dict:
        """One HIO run from the starting ``phases``. After a Ctrl-C that ended an
        earlier run of this call it runs no iteration: the constrained start is
        returned, marked interrupted."""
        skip = _interrupted_before()
        start = time.perf_counter()
        frame = magnitudes.shape[:2]
        h, w = shape
        real = self.object_type == "real"
        box = np.zeros(frame, dtype=bool)
        user = _check_support(self.support, shape)
        box[:h, :w] = True if user is None else user
        support = box.copy()
        y = magnitudes.transpose(2, 0, 1)  # (K, sH, sW)
        # Unmeasured pixels (NaN: a beamstop, detector gaps) keep the iterate's own
        # magnitude in the projection and are left out of the error.
        measured = ~np.isnan(y)
        partial = not measured.all()
        y = np.where(measured, y, 0.0)
        masks = power = None
        given = _given_masks(self)
        if given is not None or self.n_masks:
            k = len(y)
            masks = np.ones((k, *frame), dtype=complex)
            if given is None:
                masks[:, :h, :w] = make_phase_masks(self.n_masks, shape, self.mask_seed)
            else:
                masks[:, :h, :w] = given
                # The least-squares object from the K fields; seeded masks have unit
                # modulus, for which it is the plain average below. Pixels the masks
                # barely pass are not divided up to their noise (a leak of 1e-3 blew a
                # pixel up 5 times at 1e6 photons, 1e-9 to 3e5): floored at 1e-3 of the
                # best-seen pixel's power, they shrink towards 0 instead.
                power = np.sum(np.abs(masks) ** 2, axis=0)
                seen = power[:h, :w]
                power[:h, :w] = np.maximum(seen, 1e-3 * seen.max())

        def fourier_project(g):
            field = g[None] if masks is None else masks * g
            spec = np.fft.fft2(field, norm="ortho")
            projected = y * np.exp(1j * np.angle(spec))
            spec = np.where(measured, projected, spec) if partial else projected
            back = np.fft.ifft2(spec, norm="ortho")
            if masks is None:
                back = back[0]
            elif power is None:
                back = np.mean(np.conj(masks) * back, axis=0)
            else:
                back = np.sum(np.conj(masks) * back, axis=0) / power
            return back.real if real else back

        def constrain(gp, supp):
            valid = supp & (gp >= 0) if real else supp
            return valid, np.where(valid, gp, 0)

        def error(obj):
            field = obj[None] if masks is None else masks * obj
            pred = np.abs(np.fft.fft2(field, norm="ortho"))
            if partial:
                pred = np.where(measured, pred, 0.0)
            return float(np.linalg.norm(pred - y)) / max(float(np.linalg.norm(y)), 1e-300)

        # Start from the measured magnitudes with random phases.
        g = np.fft.ifft2(y * np.exp(1j * phases), norm="ortho").mean(axis=0)
        g = g.real if real else g
        _, g = constrain(g, support)
        errors = []
        sigma = float(self.shrinkwrap_sigma)
        n_hio = self.max_iter - self.n_er
        stopped_by = "interrupted" if skip else "max_iter"
        done = 0
        try:
            for it in range(0 if skip else self.max_iter):
                if _interrupted_before():
                    raise KeyboardInterrupt  # set by the caller of a worker thread (n_jobs)
                gp = fourier_project(g)
                valid, obj = constrain(gp, support)
                errors.append(error(obj))
                if it < n_hio:
                    g = np.where(valid, gp, g - self.beta * gp)
                    if self.shrinkwrap_every and (it + 1) % self.shrinkwrap_every == 0:
                        blurred = ndimage.gaussian_filter(np.abs(obj), sigma, mode="wrap")
                        new = box & (blurred > self.shrinkwrap_threshold * blurred.max())
                        if new.any():
                            support = new
                        # Narrows to 1.5 pixels, never widens: a blur set below
                        # that stays where it was set.
                        sigma = max(min(sigma, 1.5), 0.99 * sigma)
                else:
                    g = obj
                done = it + 1
        except KeyboardInterrupt as interrupt:
            if isinstance(interrupt, FitInterrupted):
                raise  # an error of the caller's code, not a Ctrl-C
            # Keep the iterate reached; the caller's later runs do no iteration.
            stopped_by = "interrupted"
            _record_interruption()
        _, obj = constrain(fourier_project(g), support) if done else (None, g)
        final = error(obj)
        obj = obj[:h, :w]
        return {
            "object": obj.copy(),
            "support": support[:h, :w].copy(),
            "fourier_error": final,
            "history": {
                "fourier_error": np.asarray(errors[:done]),
                "fit_time": time.perf_counter() - start,
            },
            "n_iter": done,
            "stopped_by": stopped_by,
        }

    # ------------------------------------------------------------------ API
    def fit(self: _HIO, X: Any, y: Any = None) -> _HIO:
        """Recover the object(s) from measured diffraction pattern(s) ``X``.

        Parameters
        ----------
        X : array-like
            One measurement ``(sH, sW)`` (or ``(sH, sW, n_masks)``), a batch
            ``(N, sH, sW, K)`` or a list; non-negative. NaN (or a masked
            array's masked values) marks pixels that were not measured: the
            projection keeps the iterate's magnitude there.
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        self._check_params()
        images, layout, results, seed = self._solve(X)
        single = layout.kind == "single"
        pick = functools.partial(fitted_value, results, single=single)
        clear_fitted(self)  # n_features_in_ only fits a 2-D input
        self.random_state_ = seed
        self.reconstruction_ = self._restore(layout, results)
        self.n_iter_ = pick("n_iter")
        self.stopped_by_ = pick("stopped_by")
        self.history_ = pick("history")
        self.fourier_error_ = pick("fourier_error")
        self.support_ = pick("support")
        self.restart_errors_ = pick("restart_errors")
        self.n_images_ = len(images)
        if single and layout.squeeze_channel[0]:
            self.n_features_in_ = images[0].shape[1]
        self._fit_digest = images_digest(images)
        self._fit_results = results
        return self

    def _results_for(self, X, fit_params: dict):
        """``(images, layout, results)`` for ``X``: the fit's for the fitted data, else
        the kept or a new solve (``fit_params``: the DIP estimators' argument, always
        empty here)."""
        images, layout = check_images(
            X,
            min_size=self._min_image_size,
            scale_uint8=False,
            allow_nan=True,
            complex_hint=_COMPLEX_FIELD_HINT,
        )
        if images_digest(images) == self._fit_digest:
            return images, layout, self._fit_results
        # NumPy alone: torch's default dtype, which _solve_key adds, does not enter.
        key = (images_digest(images), _params_key(self))
        return images, layout, self._kept_solve(key, lambda: self._solve(X)[2])

    def _objects(self, results: list[dict]) -> list[np.ndarray]:
        return [r["object"] for r in results]

    def score(self, X, y=None) -> float:
        """Quality of the reconstruction of ``X``; higher is better.

        With clean objects ``y``: the mean ambiguity-aligned PSNR (dB,
        :func:`skdip.metrics.phase_retrieval_psnr`) on the data range 1, or on
        the reference's peak modulus above 1. Without: minus
        the mean relative Fourier error (a data fit, not an image quality).
        A fit that Ctrl-C cut short (``stopped_by_ == "interrupted"``) is not
        scored: :class:`skdip.exceptions.FitInterrupted` is raised.

        Parameters
        ----------
        X : array-like
            Measurement(s); the fitted ones are not solved again.
        y : array-like, optional
            Clean objects ``(H, W)``, one per measurement.

        Returns
        -------
        score : float
        """
        results = self._scored_results(X)
        if y is None or is_target_vector(y):
            return -float(np.mean([r["fourier_error"] for r in results]))
        return self._psnr_against(results, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = True  # unmeasured pixels
        tags.non_deterministic = False
        tags.requires_fit = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
