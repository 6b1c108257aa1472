"""The estimator layer shared by every DIP method: the scikit-learn contract.

:class:`BaseDIPEstimator` turns the fitting engine into a scikit-learn
transformer: validation, image layouts, seeding, batches, fitted attributes,
``transform``/``score`` caching. A concrete estimator is a configuration: it
declares its defaults and, at most, how to build the forward model (and the
model, for multi-network methods) for one observation.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import inspect
import io
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from types import FrameType
from typing import Any, TypeVar

import numpy as np
import torch
from joblib import Parallel, cpu_count, delayed, effective_n_jobs
from skimage.metrics import peak_signal_noise_ratio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._engine import (
    DIPModel,
    FitResult,
    FitState,
    _check_stackable,
    autograd_on,
    averaging_delay,
    current_interruption,
    fit_batch,
    fit_model,
    one_interruption,
    require_tqdm,
    resolve_device,
    shared_interruption,
)
from .._random import BUILD_LOCK
from .._validation import (
    check_images,
    check_same_scale,
    images_digest,
    is_target_vector,
    metric_array,
    pil_mode,
    reference_data_range,
    reject_bool_numbers,
    to_numpy,
    to_tensor,
    working_dtype,
)
from .._warnings import held_back, warn
from ..exceptions import InterruptionWarning
from ..generators import GENERATOR_NAMES, BaseGenerator, get_generator
from ..losses import LOSS_NAMES, BaseRegularizer, get_loss
from ..operators import ForwardOperator, Identity
from ..operators._base import _loadable_device
from ..stopping import (
    BaseStoppingRule,
    ExponentialMovingVariance,
    WindowedMovingVariance,
    get_stopping_rule,
)

# joblib's convention (-1: every core, -2: all but one); 0 means nothing to it.
N_JOBS_CONSTRAINT = [
    Interval(Integral, None, -1, closed="right"),
    Interval(Integral, 1, None, closed="left"),
    None,
]

__all__ = ["BaseDIPEstimator"]

# fit and set_params return the estimator itself: typed so, DIPDenoiser().fit(x) is a
# DIPDenoiser to a type checker (typing.Self needs Python 3.11).
_Estimator = TypeVar("_Estimator", bound="BaseDIPEstimator")
_Configured = TypeVar("_Configured", bound="ImageOutputMixin")

# Data whose range leaves [-0.25, 1.25] is not on the [0, 1] scale the sigmoid
# head can produce; "auto" rescaling maps it there and back.
_AUTO_RESCALE_BOUNDS = (-0.25, 1.25)
# Data whose median lies this far outside [0, 1] is shifted off it, though within
# the bounds above (a dark-frame-subtracted image on [-0.2, 0] came back with every
# pixel's sign wrong); noise around a black or white image leaves it near 0 or 1.
_AUTO_RESCALE_MEDIAN_MARGIN = 0.05
# Data spanning less than this, such as 12-bit counts read by img_as_float from a
# 16-bit container (up to 0.0625) or an under-exposed picture, sits where the
# sigmoid is nearly flat: "auto" maps it to [0, 1] too when the measurement is the
# image itself. Through a model whose measurements take both signs (k-space), only
# when the image estimated from it is narrow too: kept there, not measured at wider
# spans.
_AUTO_RESCALE_MIN_SPAN = 0.1
# Where the data are the image's own pixels (denoising, inpainting), data spanning
# less than this are stretched to [0, 1]: low contrast, dark or not, was fitted badly
# as given, and far worse than the noisy input, silently (a 32x32 camera crop on
# [0, 0.12] or [0.44, 0.56], noise 5% of the span: 15.2 and 16.1 dB on the span, the
# noisy input being at 26, against 26.4 dB stretched and 26.8 dB for the same picture
# on [0, 1]; on 48x48,
# [0, 0.2] and [0, 0.3]: 11.9 and 13.9 dB; ES-EMV stopped at a spurious early minimum),
# while on [0, 0.5] it fitted as given (26.9 dB).
# Through a blur or a downsampling, the image estimated from the data by least squares
# is judged instead (a dim star's blurred peak is narrow, the star is not: rescaled from
# the data, its peak came back capped). The same crop on [0, 0.12], blurred or
# downsampled by 2 (noise 1% of the span), came back at 21.4 and 21.7 dB as given,
# against 24.6 and 25.5 dB stretched by this rule.
# Stretched, the fit is that of the picture on [0, 1]: benchmarks/low_contrast.py.
# Not free where the fit as given works: an astronaut crop on [0, 0.4] or [0, 0.3]
# fitted as given came back at 27.0 or 27.8 dB, stretched at 26.5 (a coffee crop on
# [0, 0.3]: 28.2 as given; all ran to max_iter); where the fit as given fails, it
# loses far more (the camera crop on [0, 0.12]: 15.2 against 26.4 dB stretched). Which
# pictures fail as given between 0.12 and 0.5 is not known (one seed, three pictures).
_AUTO_STRETCH_SPAN = 0.5


def _off_the_unit_range(lo: float, hi: float, median: float) -> bool:
    """Whether values spanning ``[lo, hi]`` around ``median`` are not on [0, 1]."""
    margin = _AUTO_RESCALE_MEDIAN_MARGIN
    return (
        lo < _AUTO_RESCALE_BOUNDS[0]
        or hi > _AUTO_RESCALE_BOUNDS[1]
        or not -margin <= median <= 1 + margin
    )


# A share of values this large beyond [0, 1], by more than their noise, is image
# content the sigmoid cannot produce (a signed map on [-0.2, 0.2], an HDR image on
# [0, 1.2]: clipped silently, 16 dB and 3.9 dB lost); noise around black or white
# leaves about 0.1% of the values beyond 3 sigmas.
_BEYOND_THE_NOISE_SHARE = 0.05


def _beyond_the_noise(values: np.ndarray) -> bool:
    """Whether a real share of ``(H, W, C)`` values lies outside [0, 1] by more than
    three times their noise level (estimated per channel)."""
    if values.ndim != 3 or min(values.shape[:2]) < 8:
        return False
    from ..metrics._noise_level import _quick_noise_sigma  # metrics import estimators

    # Missing pixels (NaN) are left out: zero-filled, they read as noise and widened the
    # margin until nothing lay beyond it (a picture on [-0.2, 1.2] with 10% missing).
    sigma = max(_quick_noise_sigma(values[..., c]) for c in range(values.shape[2]))
    finite = values[np.isfinite(values)]
    margin = 3 * sigma + 1e-3
    share = float(np.mean((finite < -margin) | (finite > 1 + margin)))
    return share > _BEYOND_THE_NOISE_SHARE


def rescaling_reason(mode, narrow: float | None = None) -> str:
    """Why the measurements are being rescaled, for the errors that refuse it
    (``narrow``: the span under which data are rescaled too, if they are)."""
    if mode is True:
        return "rescale=True rescales the measurements"
    also = f" or span under {narrow}" if narrow else ""
    return (
        f"rescale={mode!r} would rescale these measurements (they reach outside "
        f"[{_AUTO_RESCALE_BOUNDS[0]}, {_AUTO_RESCALE_BOUNDS[1]}], or lie mostly outside "
        f"[0, 1]{also})"
    )


ZERO_GAIN_MESSAGE = (
    "{reason}, but the forward model measures a constant image as (nearly) 0 (a kernel "
    "summing to 0, a difference operator), so the image's level cannot be set from them. "
    "Bring the data near [0, 1] yourself and pass rescale=False."
)


def _square_limit(dtype: torch.dtype) -> float:
    """The square root of ``dtype``'s largest value, rounded down to a power of 10 (1e19
    for float32, 1e154 for float64): beyond it a squared misfit overflows."""
    return 10.0 ** math.floor(math.log10(math.sqrt(torch.finfo(dtype).max)))


# The room left on each side of an image range estimated from the data, as a share of
# it, when rescaling through a model whose measurements do not bound the image.
_ESTIMATED_RANGE_MARGIN = 0.25


class _Scaling:
    """An affine map of intensities to about [0, 1] and back.

    Measurements map as ``(y - offset) / scale`` and the network's images back
    as ``x * scale + image_offset``. The offset removed from the measurements is
    what the forward model makes of the constant image ``image_offset``: the
    same constant for the identity, ``g`` times it for a model with gain ``g``
    on constants (a kernel that does not sum to 1), and, for a linear model that
    does not keep constants constant (a mask, zero padding), an array.

    The data's range maps onto [0, 1]; with ``headroom`` (a model that narrows
    the image's range, such as a blur) onto its middle, a quarter of the span
    to spare on each side, none below 0 for non-negative data. An image range
    estimated from the data (``image_range``) always gets that room.
    """

    def __init__(self, offset=0.0, scale: float = 1.0, image_offset: float | None = None):
        self.offset, self.scale = offset, scale
        self.image_offset = offset if image_offset is None else image_offset
        # Set from an image estimated from the data, not from the data's own range.
        self.from_estimate = False

    @classmethod
    def fit(
        cls,
        values: np.ndarray,
        mode,
        constant_response: Callable | None = None,
        image_like: bool = False,
        image_range: Callable | None = None,
        headroom: bool = False,
        narrow_span: float | Callable[[], float] = _AUTO_RESCALE_MIN_SPAN,
    ):
        """The map for the observed ``values``.

        ``image_like``: whether the data's own values judge the image's (the image
        itself, or its blur with an unknown kernel): then "auto" also stretches
        data spanning under ``narrow_span``, and maps content beyond [0, 1] past
        the noise. An image estimated by ``image_range`` spanning under
        ``narrow_span`` is stretched too. ``narrow_span`` may be a function giving
        it, asked only where it decides (finding it can probe the forward model).
        ``constant_response()`` (asked only when rescaling) is the forward
        model's measurement of the constant image 1: a number (its gain) when
        that measurement is constant, else an array in the measurement's layout.
        ``image_range()`` (asked unless ``mode`` is False) is, for a model whose
        measurements' range does not bound the image's (a Fourier transform),
        the ``(low, high, median)`` of an image estimated from them; None otherwise.
        """
        estimated = None if mode is False or image_range is None else image_range()
        if estimated is not None:
            span = narrow_span() if callable(narrow_span) else narrow_span
            return cls._fit_image_range(*estimated, mode, constant_response, span)
        finite = values[np.isfinite(values)]
        lo, hi = float(finite.min()), float(finite.max())
        median = float(np.median(finite))
        if not np.isfinite(hi - lo):
            raise ValueError(
                f"the data span [{lo:.6g}, {hi:.6g}] overflows float64; bring the data to "
                "a smaller scale"
            )
        needed = _off_the_unit_range(lo, hi, median)
        if mode == "auto" and image_like and not needed:
            needed = _beyond_the_noise(values)  # content beyond [0, 1]
        if image_like and callable(narrow_span):
            narrow_span = narrow_span()
        narrow = image_like and 0 < hi - lo < narrow_span
        response = None
        if mode == "auto" and not (needed or narrow) and constant_response is not None:
            # Data on [0, 1] can still need an image outside it (a kernel summing to
            # 0.5 or to -1): a sigmoid output then saturated, silently.
            try:
                response = np.asarray(constant_response())
            except ValueError:
                pass  # not linear, or no gain: the data's range decides, as before
            else:
                g = float(response.flat[np.argmax(np.abs(response))])
                if g != 0:
                    low, high = sorted((lo / g, hi / g))
                    needed = _off_the_unit_range(low, high, median / g)
        if not (mode is True or (mode == "auto" and (needed or narrow))):
            return cls()
        span = hi - lo if hi > lo else 1.0
        if response is None:
            response = np.asarray(1.0 if constant_response is None else constant_response())
        # The gain g (for a response that is not constant, a mask or zero padding,
        # its largest entry): the image behind [lo, hi] spans [lo, hi] / g, reversed
        # for g < 0. Its lowest value c measures as c * response, exactly.
        g = float(response.flat[np.argmax(np.abs(response))])
        if g == 0:
            reason = rescaling_reason(mode, narrow_span if narrow else None)
            raise ValueError(ZERO_GAIN_MESSAGE.format(reason=reason))
        low, image_span = min(lo / g, hi / g), span / abs(g)
        if hi == lo:
            # A constant has no range to map onto [0, 1]: put at its low end, it sat on
            # the sigmoid's lower edge, which an output only nears (a constant 200.0
            # came back at 200.02-200.05). Mid-range, as a constant 0.5 is fitted; not
            # below 0 for a non-negative one.
            centred = low - 0.5 * image_span
            low = centred if low < 0 else max(centred, 0.0)
        if headroom:
            # A sharp image spans more than its blurred or downsampled measurement:
            # mapped exactly onto the data's range, a sigmoid output could never leave
            # it (point sources came back capped at the blurred peak). Not below 0
            # under non-negative data: intensities stay intensities.
            high = low + (1 + _ESTIMATED_RANGE_MARGIN) * image_span
            low -= _ESTIMATED_RANGE_MARGIN * image_span
            if min(lo / g, hi / g) >= 0:
                low = max(low, 0.0)
            image_span = high - low
        offset = low * response if response.ndim else low * g
        return cls(offset, image_span, low)

    @classmethod
    def _fit_image_range(
        cls, low: float, high: float, median: float, mode, constant_response, narrow_span: float
    ):
        """The map of an image spanning ``[low, high]`` around ``median``, whatever its
        measurements span."""
        # The rule the data's own range follows (a dark image on [-0.1, 0] behind a blur
        # came back with every pixel's sign wrong when only the bounds were asked).
        outside = _off_the_unit_range(low, high, median)
        # A dim image (k-space in a scanner's units, 1e-3 of [0, 1]) is stretched as
        # narrow data is where the measurement is the image: fitted as it was, it
        # came back as noise (-17.5 dB).
        narrow = 0 < high - low < narrow_span
        if not (mode is True or (mode == "auto" and (outside or narrow))):
            return cls()
        span = high - low if high > low else 1.0
        # An estimated image is not the image (a zero-filled one lacks contrast): leave
        # room around it, as a sigmoid output cannot leave [0, 1].
        low, span = low - _ESTIMATED_RANGE_MARGIN * span, (1 + 2 * _ESTIMATED_RANGE_MARGIN) * span
        response = np.asarray(1.0 if constant_response is None else constant_response())
        # The constant image `low` measures as low * response: removed from the data, the
        # rest is the measurement of an image on [0, 1] once divided by the span.
        offset = low * response if response.ndim else low * float(response)
        scaling = cls(offset, span, low)
        scaling.from_estimate = True
        return scaling

    def forward(self, measurement: np.ndarray) -> np.ndarray:
        return (measurement - self.offset) / self.scale

    def forward_image(self, image: np.ndarray) -> np.ndarray:
        return (image - self.image_offset) / self.scale

    def inverse(self, image: np.ndarray) -> np.ndarray:
        return image * self.scale + self.image_offset


class ImageOutputMixin:
    """``set_output`` for transformers whose output is images (no table container)."""

    def set_output(self: _Configured, *, transform: str | None = None) -> _Configured:
        """Accept scikit-learn's output configuration; images stay NumPy arrays.

        Parameters
        ----------
        transform : {"default"} or None
            Only the default container exists for images: ``Pipeline.set_output``
            with "default" (or None) works through this step; "pandas" or
            "polars" are refused, since a table cannot hold ``(H, W, C)`` images.

        Returns
        -------
        self : object
        """
        if transform not in (None, "default"):
            raise ValueError(
                f"{type(self).__name__} returns images as NumPy arrays; "
                f"set_output(transform={transform!r}) is not available (only 'default')"
            )
        return self


class _LastSolveMixin:
    """Keeps the last solve of new data (other than the fitted data) in ``_last_solve``.

    With ``random_state=None`` too, ``score(new)`` then judges the solve that
    ``transform(new)`` returned, and the several scorers of one search (a
    multi-metric dict over KFold test images) score one solve, not one each.
    """

    def _kept_solve(self, key: tuple, solve: Callable[[], list[dict]]) -> list[dict]:
        """The results kept under ``key`` (:func:`_solve_key`: the data's digest, the
        parameters and the working dtype), else ``solve()``'s, after the parameters are
        checked; a solve Ctrl-C cut short is not kept."""
        last = getattr(self, "_last_solve", None)
        if last is not None and last[0] == key:
            return last[1]
        self._check_params()
        results = solve()
        if all(r["stopped_by"] != "interrupted" for r in results):
            self._last_solve = (key, results)
        return results

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: the live object keeps its cache
        state.pop("_last_solve", None)  # a cache: not worth its size in a pickle
        return state


def _goes_on(state: FitState, stopped_by: str) -> bool:
    """Whether ``warm_start`` goes on with a kept fit that ended as ``stopped_by`` says.

    A fit that ``max_iter``, Ctrl-C or the callback cut short goes on: the callback
    may change between the calls, and one that stops on a time budget was kept in
    vain (its fit stayed as it was). One that its stopping rule or a divergence ended
    does not, nor one the callback stopped at the step the rule fired. One that Ctrl-C
    cut at the step the rule fired goes on without a step (see ``fit_model``'s
    ``resume``): it is complete, and ends as the rule ended it.
    """
    if stopped_by == "callback":
        return not state.selection.rule_stopped
    return stopped_by in ("max_iter", "interrupted")


def _worker_count(n_jobs, n_tasks: int) -> int:
    """How many joblib workers run ``n_tasks`` tasks: 1 for ``n_jobs`` None or 1."""
    return min(n_tasks, effective_n_jobs(n_jobs)) if n_jobs not in (None, 1) else 1


def input_noise_std(estimator, generator: BaseGenerator) -> float:
    """The perturbation of the input code each step: none for a generator that does
    not take one (its coordinates were jittered by up to 1.6 grid spacings)."""
    return float(estimator.reg_noise_std) if generator.accepts_input_noise else 0.0


def checked_generator(estimator) -> BaseGenerator:
    """The estimator's generator, with a warning for settings it is known not to suit."""
    generator = get_generator(estimator.generator)
    name = type(generator).__name__
    if estimator.reg_noise_std > 0 and not generator.accepts_input_noise:
        warn(
            f"{name} does not use input noise (on its coordinate grid it would only blur "
            "the image), so reg_noise_std is not applied; set reg_noise_std=0 to silence "
            "this warning",
            UserWarning,
        )
    if generator.needs_explicit_prior and getattr(estimator, "regularizer", None) is None:
        # Measured: 20.94 dB returned from 20.64 dB noisy (camera 128x128, sigma 25).
        stopping = (
            "and its running variance keeps falling as it does, so early stopping "
            "returns a noisy estimate"
            if getattr(estimator, "early_stopping", None) is not None
            else "so a fit of more steps than that ends on a noisy estimate"
        )
        warn(
            f"{name} without a regularizer fits the noise within a few hundred steps, "
            f"{stopping}; pass e.g. regularizer=TotalVariation(weight=0.45) "
            "(its authors' denoising recipe adds lr=0.1, loss='rmse', reg_noise_std=0)",
            UserWarning,
        )
    return generator


def _reference_count_message(references: list, ref_layout, n_images: int) -> str:
    """Why clean references ``y`` and the images of ``X`` do not pair up."""
    message = f"y holds {len(references)} images but X holds {n_images}"
    if ref_layout.kind == "single" and references[0].shape[0] == n_images > 1:
        # A stack of N grey references, (N, H, W), is one image with channels last.
        shape = references[0].shape
        message += (
            f": a 3-D y is one image with its channels last, here {shape[0]}x{shape[1]} with "
            f"{shape[2]} channels; for {n_images} grey references pass an (N, H, W, 1) array "
            "(y[..., None]) or a list of images"
        )
    return message


def _cross_validation_frame() -> dict | None:
    """The local variables of scikit-learn's fit-and-score of a cross-validation
    (GridSearchCV, cross_validate, successive halving) the call comes from, in this
    process or a worker; None outside one."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_fit_and_score" and str(
            frame.f_globals.get("__name__", "")
        ).startswith("sklearn."):
            return frame.f_locals
        frame = frame.f_back
    return None


class BaseDIPEstimator(
    _LastSolveMixin, ImageOutputMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None
):
    """Base class of the Deep Image Prior estimators. Not for direct use.

    Subclasses set their parameter defaults in ``__init__`` and may override
    :meth:`_forward_problem` (the forward operator and fitted target for one
    observation), :meth:`_make_model` (for several networks) and
    :meth:`_finish` (post-processing of one result).
    """

    _parameter_constraints: dict = {
        # The names, not any str: an unknown one was get_generator's plain ValueError.
        "generator": [StrOptions(set(GENERATOR_NAMES)), BaseGenerator],
        "early_stopping": [StrOptions({"emv", "wmv"}), BaseStoppingRule, None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "loss": [StrOptions(set(LOSS_NAMES)), callable],
        "regularizer": [BaseRegularizer, callable, None],
        "reg_noise_std": [Interval(Real, 0, None, closed="left")],
        "output_averaging": [Interval(Real, 0, 1, closed="neither"), None],
        "rescale": [StrOptions({"auto"}), "boolean"],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callback": [callable, None],
        "n_jobs": N_JOBS_CONSTRAINT,
        "warm_start": ["boolean"],
    }

    # Parameters a warm-started fit may change: how many more steps it takes and how
    # it reports or runs them, not the problem or the method.
    # device: the kept fits move there (a GPU's fit goes on on a machine without one).
    _warm_start_free = ("max_iter", "verbose", "callback", "n_jobs", "device", "warm_start")
    # Engine settings a kept fit carries (param_groups: in its optimizer) or that
    # :meth:`_continuation` makes again; any other per-fit setting cannot be kept.
    _continued_fit_kwargs: frozenset[str] = frozenset({"param_groups"})
    # What fit keeps for warm_start: the per-image fit states, and the parameters they
    # were fitted with (set together: both None, or both set).
    _fit_states: list | None
    _warm_params: dict[str, str] | None

    # Smallest height/width accepted; the generators pad internally.
    _min_image_size = 2
    _allow_nan = False
    # Told with a refusal of NaN or masked values in X: what reads them as missing.
    _missing_pixels_hint = ""
    # Told with a refusal of complex X: what to pass instead ("": complex images, k-space).
    _complex_data_hint = ""
    # The channels every observation holds where the forward model fixes them (k-space:
    # two per coil), not warned of as a stack of grey images; None where it does not.
    _measurement_channels: int | None = None
    # Names of the per-image inputs ``fit(X, **fit_params)`` takes (e.g. "mask").
    _fit_param_names: tuple[str, ...] = ()
    # uint8 observations are 8-bit images, mapped to [0, 1]; estimators whose
    # observations are measurements (photon counts) take the numbers as they are.
    _scale_uint8 = True
    # Whether the measurement is the image itself (denoising, inpainting): then
    # rescale="auto" maps data spanning under 0.5 to [0, 1] (_AUTO_STRETCH_SPAN),
    # and a clean reference cannot span much more than the observation.
    _measurement_is_the_image = False

    # ------------------------------------------------------------------ hooks
    def _forward_problem(
        self, image: np.ndarray, extra: dict
    ) -> tuple[ForwardOperator, np.ndarray, tuple[int, int], int]:
        """Return ``(operator, target, out_shape, out_channels)`` for one image.

        ``image`` is a float64 ``(H, W, C)`` observation on the [0, 1] scale;
        ``target`` is what the prediction ``operator(x)`` is compared with.
        """
        return Identity(), image, image.shape[:2], image.shape[2]

    def _fit_scaling(self, image: np.ndarray, extra: dict, values=None) -> _Scaling:
        """The intensity map of one observation (``rescale``); ``values``: its
        :meth:`_scaling_values`, when the caller has them already."""
        return _Scaling.fit(
            self._scaling_values(image, extra) if values is None else values,
            self.rescale,
            constant_response=lambda: self._constant_response(image, extra),
            image_like=self._data_is_image_like(),
            image_range=lambda: self._image_range(image, extra),
            # A sharp image spans more than its blurred or downsampled measurement,
            # not more than its own noisy or masked pixels.
            headroom=not self._measures_own_pixels(),
            # Asked only where it decides: through a model it probes the model again.
            narrow_span=lambda: self._auto_stretch_span(image, extra),
        )

    def _auto_stretch_span(self, image: np.ndarray, extra: dict) -> float:
        """The span under which ``rescale="auto"`` stretches the data (or the image
        estimated from them) to [0, 1]: 0.5 where the measurements are the image's own
        pixels, else 0.1 unless a subclass measured otherwise."""
        return _AUTO_STRETCH_SPAN if self._measures_own_pixels() else _AUTO_RESCALE_MIN_SPAN

    def _data_is_image_like(self) -> bool:
        """Whether the data's own values judge the image's range for ``rescale``
        (where the measurement is the image): narrow data is stretched and content
        beyond [0, 1] rescaled by them (models with a least-squares estimate judge
        that image instead, see :meth:`_image_range`)."""
        return self._measures_own_pixels()

    def _measures_own_pixels(self) -> bool:
        """Whether the measurements are pixels of the image itself, for the
        rescaling: then data spanning under 0.5 is stretched to [0, 1], and no room
        is left beyond the data's range."""
        return self._measurement_is_the_image

    def _scaling_values(self, image: np.ndarray, extra: dict) -> np.ndarray:
        """The observed values that decide the intensity rescaling."""
        return image

    def _image_range(self, image: np.ndarray, extra: dict) -> tuple[float, float, float] | None:
        """For a forward model whose measurements' range says nothing of the image's
        (one with negative responses to a positive image), the ``(low, high, median)``
        of an image estimated from the observation; None where the measurements' own
        range decides the rescaling."""
        return None

    def _constant_response(self, image: np.ndarray, extra: dict) -> float | np.ndarray:
        """The forward model's measurement of the constant image 1 (asked only when
        rescaling): its gain when constant, else an ``(h, w, c)`` array."""
        return 1.0

    def _make_model(self, image: np.ndarray, extra: dict, seed: int, device: torch.device):
        """Build ``(model, target_tensor, fit_kwargs)`` for one observation."""
        operator, target, out_shape, out_channels = self._forward_problem(image, extra)
        generator = checked_generator(self)
        network = generator.build(out_shape, out_channels, seed=seed)
        # Deep-copy the operator: .to(device) must not move the user's object.
        model = DIPModel(network, copy.deepcopy(operator), input_noise_std(self, generator)).to(
            device
        )
        return model, to_tensor(target, device), {}

    def _batch_key(self, image: np.ndarray, extra: dict) -> tuple:
        """What images fitted together in one vectorised run must share: models whose
        buffers differ in shape cannot be stacked. Here: the image's shape."""
        return tuple(image.shape)

    def _after_build(self, model, image: np.ndarray, extra: dict, seed: int, device, fit_kwargs):
        """Work on a freshly built model that needs neither the build lock nor torch's
        global RNG (a pretraining); returns the engine settings. Here: nothing."""
        return fit_kwargs

    def _finish(
        self, estimate: np.ndarray, result: FitResult, image: np.ndarray, extra: dict
    ) -> dict:
        """Post-process one fit; return extra per-image fitted values.

        ``estimate`` is the selected estimate as a float64 ``(H, W, C)`` array
        on the caller's intensity scale. A returned ``"estimate"`` entry
        replaces it (e.g. to re-insert observed pixels); any other key ``k``
        becomes the fitted attribute ``k_`` (e.g. an estimated kernel).
        """
        return {}

    def _restore(self, layout, results: list[dict]):
        """The reconstruction(s) in the caller's layout (an estimator whose output is
        not an image of the input's kind overrides this)."""
        return layout.restore([r["estimate"] for r in results])

    # -------------------------------------------------------------- internals
    def _check_params(self) -> None:
        self._validate_params()
        reject_bool_numbers(self)
        working_dtype()  # before any work: networks and data are made in it
        get_generator(self.generator)  # raises on unknown names
        get_loss(self.loss)
        # A class is callable too (its constructor): it passed as a loss or a penalty and
        # failed in the first step with a bare torch or operator error.
        _refuse_class(self.loss, "loss")
        _refuse_class(self.regularizer, "regularizer")
        # Before any work (an initialisation, earlier images or settings), not when
        # the fit reaches them: a rule's or a regularizer's settings, and the call
        # forms of a user's functions (Python's own error named neither).
        rule = get_stopping_rule(self.early_stopping)
        if rule is not None:
            rule._validate_params()
        if isinstance(self.regularizer, BaseRegularizer):
            self.regularizer._check_params()
        elif callable(self.regularizer):
            _check_call_form(self.regularizer, 1, "regularizer", "regularizer(image)")
        if callable(self.loss):
            _check_call_form(self.loss, 2, "loss", "loss(prediction, target)")
        if self.callback is not None:
            # In the form every step calls it (see image_callback).
            keywords = ("image",) if _names_image(self.callback) else ()
            form = "callback(iteration, loss, estimate" + ", image=index" * bool(keywords) + ")"
            _check_call_form(self.callback, 3, "callback", form, keywords)
        if self.verbose:
            require_tqdm()  # before any work (an initialisation, the first images)
        self._device = resolve_device(self.device)
        self._warn_short_patience()
        if getattr(self, "warm_start", False) and int(getattr(self, "batch_size", 1)) > 1:
            raise ValueError(
                "warm_start=True keeps each image's fit to go on with, which a batched run "
                f"(batch_size={self.batch_size}) does not: use batch_size=1"
            )

    def _warn_short_patience(self) -> None:
        """Say, before any fit, when every run would end before its average is due."""
        rule = get_stopping_rule(self.early_stopping)
        averaging = self.output_averaging
        patience = getattr(rule, "patience", None)
        if averaging is None or not isinstance(patience, Integral) or patience < 1:
            return  # an invalid patience is reported by the rule's own checks
        if getattr(self, "averaging_monitor", "raw") != "raw":
            return
        delay = averaging_delay(averaging)
        if patience < delay:
            warn(
                f"{type(self).__name__}: the stopping rule's patience ({patience}) is "
                f"shorter than the averaging delay ({delay} steps for output_averaging="
                f"{averaging}): each run ends before the average after the variance minimum "
                "is due, and the latest average is returned instead. Use a patience of at "
                f"least {delay}, or averaging_monitor='average'.",
                UserWarning,
            )

    def _fit_images(self, images, references, extras, rng) -> list[dict]:
        n = len(images)
        seeds = _image_seeds(rng, n)
        refs = references if references is not None else [None] * n
        keys = [self._batch_key(image, extra) for image, extra in zip(images, extras, strict=True)]
        groups = _batches(keys, int(getattr(self, "batch_size", 1)))
        tasks = [[(i, images[i], refs[i], extras[i], seeds[i]) for i in g] for g in groups]
        workers = _worker_count(getattr(self, "n_jobs", None), len(tasks))
        if workers <= 1:
            outputs = [self._fit_group(task, n, self._device) for task in tasks]
        else:
            outputs = _fit_in_workers(self, tasks, n, workers)
        results: list[dict] = [{}] * n
        for group, output in zip(groups, outputs, strict=True):
            for i, result in zip(group, output, strict=True):
                results[i] = result
        return results

    def _fit_group(self, task: list[tuple], n_images: int, device) -> list[dict]:
        """Fit the images of one batch: alone, or together in one vectorised run."""
        if len(task) == 1:
            i, image, reference, extra, seed = task[0]
            return [self._fit_single(image, reference, extra, seed, i, n_images, device)]
        return _fit_together([(self, *entry) for entry in task], n_images, device)

    def _prepare(self, image, reference, extra, seed, device):
        """Scale one observation and build its model: ``(scaling, model, target,
        fit_kwargs, reference_tensor, reference_range)``."""
        scaling = fitted_scaling(self, image, extra)
        scaled = scaling.forward(image)
        # Under the lock the builds take: restoring torch's global RNG when this block
        # ends must not land in the middle of another thread's seeded build.
        with BUILD_LOCK, torch.random.fork_rng(devices=[]):
            model, target, fit_kwargs = self._make_model(scaled, extra, seed, device)
        # Outside the lock: long work here must not hold up other threads' builds.
        fit_kwargs = self._after_build(model, scaled, extra, seed, device, fit_kwargs)
        ref_tensor = ref_range = None
        if reference is not None:
            ref_tensor = to_tensor(scaling.forward_image(reference), device)
            ref_range = self._history_psnr_range(scaling, reference, image, extra)
        return scaling, model, target, fit_kwargs, ref_tensor, ref_range

    def _history_psnr_range(self, scaling, reference, image, extra) -> tuple[float, float, float]:
        """``(low, high, peak)`` of the PSNR curve a fit records against ``reference``,
        in the fit's units: the clipping and range of :meth:`score`, so that the curve's
        last point of a fit that returns its last iterate is its score."""
        lo, span = self._scored_range(scaling, reference, image, extra)
        offset, scale = scaling.image_offset, scaling.scale
        peak = reference_data_range(reference)
        return (lo - offset) / scale, (lo + span - offset) / scale, peak / scale

    def _engine_kwargs(
        self, label: str, reference=None, seed: int = 0, reference_range=None
    ) -> dict:
        """The engine settings this estimator's parameters give."""
        return dict(
            loss=get_loss(self.loss),
            max_iter=self.max_iter,
            lr=self.lr,
            regularizer=self.regularizer,
            stopping=get_stopping_rule(self.early_stopping),
            averaging=self.output_averaging,
            # Estimators that expose the choice have the parameter; the others
            # get the variant the denoising benchmark found robust.
            averaging_monitor=getattr(self, "averaging_monitor", "raw"),
            callback=self.callback,
            verbose=bool(self.verbose),
            reference=reference,
            reference_range=reference_range,
            seed=seed,
            description=label,
        )

    def _fit_single(self, image, reference, extra, seed, index, n_images, device) -> dict:
        prepared = self._prepare(image, reference, extra, seed, device)
        return self._fit_prepared(prepared, image, extra, seed, index, n_images)

    def _fit_prepared(self, prepared, image, extra, seed, index, n_images) -> dict:
        """Fit one observation whose model :meth:`_prepare` built, on its own."""
        scaling, model, target, fit_kwargs, ref_tensor, ref_range = prepared
        label = type(self).__name__ + (f" [{index + 1}/{n_images}]" if n_images > 1 else "")
        kwargs = self._engine_kwargs(label, ref_tensor, seed + 1, ref_range)
        kwargs.update(fit_kwargs)
        keep = getattr(self, "_keeping_fit_states", False)
        lost = set(fit_kwargs) - self._continued_fit_kwargs
        if keep and lost:
            raise NotImplementedError(
                f"{type(self).__name__} cannot keep its fits to go on with: their "
                f"{', '.join(sorted(lost))} would not be made again"
            )
        # Over the estimator's own callback too: BlindDeblurrer's passes the index on.
        kwargs["callback"] = image_callback(kwargs.get("callback"), index)
        result = fit_model(model, target, keep_state=keep, **kwargs)
        out = self._complete(result, scaling, image, extra, index, n_images)
        if keep:
            out["fit_state"] = result.state
        return out

    def _variance_rule_cut_hint(self) -> str:
        """Added to the warning of a fit that ``max_iter`` cut before a variance rule
        fired, where another rule would serve (see DIPDenoiser); "" for none."""
        return ""

    def _returned_before_the_rule_fired(self, result: FitResult) -> str:
        """What a fit that ``max_iter`` cut before its rule fired returns, in words: with
        output averaging watched raw, not the estimate at the signal's minimum."""
        # The rule's minimum: its first (a tie is no new minimum).
        minimum = int(np.nanargmin(result.history["signal"]))
        averaging = self.output_averaging
        if averaging is None or getattr(self, "averaging_monitor", "raw") != "raw":
            return (
                f"the estimate at the stopping signal's minimum so far (step {minimum}) is returned"
            )
        delay = averaging_delay(averaging)
        if result.best_iter == minimum + delay:
            return (
                f"the average {delay} steps after the stopping signal's minimum so far (step "
                f"{minimum}) is returned"
            )
        return (
            f"the stopping signal's minimum so far (step {minimum}) came less than the "
            f"averaging delay ({delay} steps) before the end, so the latest average (step "
            f"{result.best_iter}) is returned"
        )

    def _complete(
        self, result: FitResult, scaling, image, extra, index: int = 0, n_images: int = 1
    ) -> dict:
        """Turn one engine result into the per-image fitted values (of image ``index``
        of the ``n_images`` of the call, which the warnings name)."""
        if result.stopped_by == "max_iter" and self.early_stopping is not None:
            if np.isfinite(result.history["signal"]).any():
                what = self._returned_before_the_rule_fired(result)
                advice = "Increase max_iter or lower the rule's patience."
                if getattr(self, "_keeping_fit_states", False):
                    advice = advice[:-1] + " (warm_start=True: a next fit goes on from here)."
                elif hasattr(self, "warm_start"):
                    # With warm_start=False nothing is kept: setting it now restarts at 0.
                    advice = advice[:-1] + (
                        " (fitted with warm_start=True, a fit is kept and a next fit goes on "
                        "from where it stopped)."
                    )
                rule = get_stopping_rule(self.early_stopping)
                if isinstance(rule, ExponentialMovingVariance | WindowedMovingVariance):
                    advice = " ".join(filter(None, [advice, self._variance_rule_cut_hint()]))
            else:
                # The rule never watched: max_iter ended the fit within its warm-up.
                what = (
                    "the rule had not started watching (its warm-up), so the last "
                    "estimate is returned"
                )
                advice = "Increase max_iter beyond the rule's warm-up (and window)."
            # Which image, where there are several: the warning is one per image, and
            # without it N alike messages did not say which fits were cut.
            which = f"image {index + 1} of {n_images}: " if n_images > 1 else ""
            warn(
                f"{type(self).__name__}: {which}max_iter={self.max_iter} ended the fit before "
                f"the stopping rule fired; {what}. {advice}",
                ConvergenceWarning,
            )
        estimate = scaling.inverse(to_numpy(result.estimate))
        out = {
            "estimate": estimate,
            "best_iter": result.best_iter,
            "n_iter": result.n_iter,
            "stopped_by": result.stopped_by,
            "history": result.history,
            "best_signal": _best_signal(result),
            "scaling": scaling,
            # The rule, loss and noise model this fit ran with: set_params after the fit
            # does not change them (a score read an L1 loss as a mean squared one).
            "early_stopping": self.early_stopping,
            "loss": self.loss,
            "noise_model": getattr(self, "noise_model", None),
        }
        out.update(self._finish(estimate, result, image, extra))
        return out

    def _check_fit_params(self, fit_params: dict) -> None:
        unknown = sorted(set(fit_params) - set(self._fit_param_names))
        if unknown:
            takes = ", ".join(self._fit_param_names) or "none"
            raise TypeError(
                f"{type(self).__name__} got unexpected fit parameter(s) {', '.join(unknown)}; "
                f"the per-image inputs it takes: {takes}"
            )

    def _split_extra(self, n_images: int, fit_params: dict) -> list[dict]:
        """Per-image fit parameters: one entry per image, as GridSearchCV slices them."""
        self._check_fit_params(fit_params)
        extras: list[dict] = [{} for _ in range(n_images)]
        for key, value in fit_params.items():
            if value is None:
                continue
            if n_images == 1:
                # One image: a one-element list holds its entry; anything else is the entry.
                single = isinstance(value, list | tuple) and len(value) == 1
                extras[0][key] = value[0] if single else value
                continue
            if isinstance(value, list | tuple):
                values = list(value)
            else:
                # As one image's entry is read (metric_array): np.asarray failed on a
                # tensor that requires grad or lives on a GPU, and read a masked array's
                # hidden values.
                arr = metric_array(value, key)
                values = list(arr) if arr.ndim >= 1 else []
            if len(values) != n_images:
                what = (
                    f"an array of shape {np.shape(value)}"
                    if not isinstance(value, list | tuple)
                    else f"a {type(value).__name__} of {len(values)}"
                )
                raise ValueError(
                    f"{key} must hold one entry per image ({n_images}): an array with a leading "
                    f"axis of {n_images} or a list of {n_images}; got {what}. To share one "
                    f"entry, repeat it (e.g. np.broadcast_to({key}, ({n_images}, *{key}.shape)))"
                )
            for extra, v in zip(extras, values, strict=True):
                extra[key] = v
        return extras

    def _check_observations(self, X):
        images, layout = check_images(
            X,
            min_size=self._min_image_size,
            allow_nan=self._allow_nan,
            scale_uint8=self._scale_uint8,
            missing_hint=self._missing_pixels_hint,
            complex_hint=self._complex_data_hint,
            channels=self._measurement_channels,
        )
        sources = X if isinstance(X, list | tuple) else [X]
        # A CMYK picture's constant 4th channel is black ink, not alpha (warned of as CMYK).
        cmyk = {i for i, source in enumerate(sources) if pil_mode(source) == "CMYK"}
        alpha = [
            i
            for i, im in enumerate(images)
            if im.shape[2] == 4 and np.ptp(im[..., 3]) == 0 and i not in cmyk
        ]
        if alpha:
            # An opaque alpha (1.0) came back at 0.94-0.98: fitted like a colour channel.
            warn(
                f"image(s) {alpha} have 4 channels and a constant last one, likely an alpha "
                "channel: it is fitted like a colour channel and does not come back exactly. "
                "Pass the colour channels (X[..., :3]) and put the alpha back afterwards.",
                UserWarning,
            )
        return images, layout

    def _check_observation(self, image: np.ndarray, reference, extra: dict) -> None:
        """Check one observation's per-image inputs and clean reference before any fit.

        The images of a batch are fitted one after another, so a problem the fit
        itself finds would surface only after the earlier images' fits: whatever
        can be checked from the data alone is checked here, for every image first.
        """
        if reference is None and not extra:
            return
        expected = self._reconstruction_shape(image, extra)
        if reference is not None and reference.shape != expected:
            raise ValueError(
                f"the clean reference y has shape {reference.shape} (as (H, W, C)) but the "
                f"reconstruction of this observation has shape {expected}"
                f"{self._reference_crop_hint(reference.shape, expected)}"
            )

    # Whether the observation is the "valid" part of a blur of a larger scene: a clean
    # reference given as that whole scene is then told the crop to give.
    _observes_a_valid_blur = False

    def _reference_crop_hint(self, shape: tuple, expected: tuple) -> str:
        """For a reference larger than the reconstruction by a blur's margin, the crop
        of it that lines up (the scene pixel under the blur's centre pixel)."""
        dh, dw = shape[0] - expected[0], shape[1] - expected[1]
        if not self._observes_a_valid_blur or shape[2:] != expected[2:] or min(dh, dw) < 0:
            return ""
        h, w = expected[:2]
        top, left = self._scene_window_start(dh + 1, dw + 1)
        return (
            f": it looks like the whole sharp scene, {dh}x{dw} larger. The observation is the "
            "'valid' part of the blurred scene; give the crop that lines up with it, "
            f"y[{top}:{top + h}, {left}:{left + w}] (the scene under the "
            f"blur's centre pixel, for a {dh + 1}x{dw + 1} blur)"
        )

    def _scene_window_start(self, kh: int, kw: int) -> tuple[int, int]:
        """Where the reconstruction starts in the scene behind a 'valid' blur by a
        ``kh x kw`` kernel: at ``kh - 1 - a0``, ``a0`` the kernel's centre. Here
        ``BlindDeblurrer``'s, the rounded centre of mass, ``kh // 2`` for a symmetric
        kernel (for an even one that is a half-pixel tie, which the fit's kernel may
        break either way)."""
        return (kh - 1) // 2, (kw - 1) // 2

    def _reconstruction_shape(self, image: np.ndarray, extra: dict) -> tuple[int, int, int]:
        """The ``(H, W, C)`` shape of one observation's reconstruction (builds the
        forward problem, which also checks the per-image inputs)."""
        _, _, out_shape, channels = self._forward_problem(image, extra)
        return (*out_shape, channels)

    def _predict_measurements(
        self, image: np.ndarray, extra: dict, reference: np.ndarray
    ) -> np.ndarray | None:
        """The measurement the forward model predicts for a clean image, on the
        observation's grid (NaN where nothing is measured); None when it cannot
        tell. Here the measurement is the image."""
        return reference if reference.shape == image.shape else None

    def _check_reference_dtypes(self, images, layout, references, ref_layout, fit_params):
        """Refuse a clean ``y`` read on another scale than ``X``: one side uint8 and the
        other not, or ``y`` far narrower (see :func:`~skdip._validation.check_same_scale`)."""
        extras = self._split_extra(len(images), fit_params)
        check_same_scale(
            images,
            layout,
            references,
            ref_layout,
            lambda i, reference: self._predict_measurements(images[i], extras[i], reference),
        )

    def _network_shape(self, image: np.ndarray, extra: dict) -> tuple[int, int]:
        """The ``(H, W)`` the generator is built for (a padded scene, an object
        smaller than its diffraction pattern: not always the returned shape)."""
        return tuple(self._forward_problem(image, extra)[2])

    def _check_solvable(self, image: np.ndarray, extra: dict, reference=None) -> _Scaling:
        """Refuse, before any fit, an observation the current parameters cannot solve
        (and a clean ``reference`` on another intensity scale); return its intensity
        map, which its fit then uses (deciding it probes the forward model: once per
        image, not here and again in :meth:`_prepare`)."""
        if "generator" in self._parameter_constraints:
            # e.g. a network far deeper than the image: found for every image of a batch
            # before the first one is fitted.
            get_generator(self.generator)._check_output_shape(self._network_shape(image, extra))
        values = self._scaling_values(image, extra)
        scaling = self._fit_scaling(image, extra, values)  # e.g. a rescaling the model cannot carry
        # Estimators that normalise their own measurements have no rescale parameter.
        if "rescale" in self._parameter_constraints:
            if self.rescale is False:
                self._check_unscaled_range(values, self._image_range(image, extra))
            elif (scaling.scale != 1 or np.any(scaling.offset != 0)) and not getattr(
                scaling, "from_estimate", False
            ):
                # A few extreme values squeeze the rest only where they set the range:
                # k-space's DC is no hot pixel (it carries the image's mean).
                _check_outliers(values)
        if reference is not None:
            self._check_reference_scale(reference, values, scaling.scale)
        return scaling

    def _check_unscaled_range(self, values: np.ndarray, image_range=None) -> None:
        """With ``rescale=False`` the data is fitted as given, in torch's default dtype
        (``image_range``: see :meth:`_image_range`)."""
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return
        lo, hi = float(finite.min()), float(finite.max())
        # Beyond this the fit's squared misfit overflows (it runs in torch's default
        # dtype): every step would diverge.
        dtype = torch.get_default_dtype()
        if max(abs(lo), abs(hi)) > _square_limit(dtype):
            raise ValueError(
                f"rescale=False, but the data spans [{lo:.3g}, {hi:.3g}]: too large for the "
                f"{str(dtype).removeprefix('torch.')} fit (its squared misfit overflows). Use "
                "rescale='auto' or scale the data."
            )
        # k-space of an image on [0, 1] spans far more than [0, 1]: the image matters.
        what, median = "the data", float(np.median(finite))
        if image_range is not None:
            (lo, hi, median), what = image_range, "an image estimated from the data"
        beyond = image_range is None and self._data_is_image_like() and _beyond_the_noise(values)
        if _off_the_unit_range(lo, hi, median) or beyond:
            warn(
                f"rescale=False, but {what} spans [{lo:.3g}, {hi:.3g}] (median "
                f"{median:.3g}), off [0, 1]: "
                "the networks' default output (a sigmoid) cannot leave [0, 1], so such a fit "
                "cannot reach the data. Use rescale='auto' unless your generator's output "
                "covers this range.",
                UserWarning,
            )

    def _check_reference_scale(self, reference, values: np.ndarray, span: float) -> None:
        """Refuse a clean reference on another intensity scale than the observation's
        ``values`` (e.g. uint8 X, read on [0, 1], against a float y on 0-255: -42 dB)."""
        finite = values[np.isfinite(values)]
        scale = max(span, float(np.ptp(finite)) if finite.size else 0.0)
        # Through a blur a sharp reference spans more than its measurement (a point
        # source 20 times more under a 5x5 kernel), and the missing pixels of an
        # inpainting can hold all the contrast (a dark sky kept, the scene hidden):
        # there the bound is looser.
        factor = 10 if self._measurement_is_the_image and not self._allow_nan else 100
        if float(np.ptp(reference)) > factor * scale:
            raise ValueError(
                f"y spans {float(np.ptp(reference)):.6g} in intensity, more than {factor} "
                f"times X's range ({scale:.6g}): give y on X's scale (uint8 images are read "
                "on [0, 1])"
            )

    def _per_image_inputs(self, images, references, fit_params) -> list[dict]:
        """The per-image fit parameters, every image's inputs checked before any fit,
        and whether the images can be solved; each image's intensity map, found by
        the check, rides along as ``"_scaling"`` for its fit (:meth:`_prepare`)."""
        extras = self._split_extra(len(images), fit_params)
        refs = references if references is not None else [None] * len(images)
        if len(images) == 1:
            self._check_observation(images[0], refs[0], extras[0])
            extras[0]["_scaling"] = self._check_solvable(images[0], extras[0], refs[0])
            return extras
        # In a batch, say which images a check speaks of; a warning that several
        # images share is given once, with their indices.
        notes: dict[tuple[str, type], list[int]] = {}
        for i, (image, reference, extra) in enumerate(zip(images, refs, extras, strict=True)):
            with held_back(Warning) as held:
                try:
                    self._check_observation(image, reference, extra)
                    extra["_scaling"] = self._check_solvable(image, extra, reference)
                except (ValueError, TypeError) as exc:
                    if type(exc) not in (ValueError, TypeError):
                        raise  # a subclass may take other arguments: left as it is
                    raise type(exc)(f"image {i} of the batch: {exc}") from exc
            for message, category in held:
                notes.setdefault((message, category), []).append(i)
        for (message, category), indices in notes.items():
            which = f"image {indices[0]}" if len(indices) == 1 else f"images {indices}"
            warn(f"{which} of the batch: {message}", category)
        return extras

    def _check_inputs(self, X, y=None, fit_params=None, checked=None):
        """Validated ``(images, layout, references)``; references None without clean ``y``
        (``checked``: ``X`` already through :meth:`_check_observations`)."""
        images, layout = checked if checked is not None else self._check_observations(X)
        references = None
        if y is not None and not is_target_vector(y, len(images), images):
            references, ref_layout = check_images(y, name="y", min_size=self._min_image_size)
            if len(references) != len(images):
                raise ValueError(_reference_count_message(references, ref_layout, len(images)))
            self._check_reference_dtypes(images, layout, references, ref_layout, fit_params or {})
        return images, layout, references

    def _solve(self, X, y=None, *, fitting: bool = False, checked=None, **fit_params):
        """Check and solve ``X``: ``(images, layout, results, seed)``, ``seed`` the int
        the new fits ran from (:func:`resolved_seed`), None when the kept fits went on.
        ``fitting``: for :meth:`fit`, which may go on with the last fit (``warm_start``)
        and keeps the fits' states for the next; ``checked``: ``X`` already checked (its
        warnings given once)."""
        images, layout, references = self._check_inputs(X, y, fit_params, checked)
        extras = self._per_image_inputs(images, references, fit_params)
        warm = fitting and bool(getattr(self, "warm_start", False))
        states = self._states_to_continue(images, references, fit_params) if warm else None
        # New fits run from one int seed, which fit records: a kept fit that goes on
        # draws none.
        seed = resolved_seed(self.random_state) if states is None else None
        # Put back if the new fit fails: the fit they belong to stays the fitted one.
        kept = {
            k: self.__dict__[k] for k in ("_fit_states", "_warm_references") if k in self.__dict__
        }
        if fitting and states is None:
            # A new fit replaces the kept one: not worth sending to worker processes.
            self._fit_states = None
        if warm and states is None:
            # A new fit: the clean images it records its PSNR against, if any.
            self._warm_references = None if references is None else images_digest(references)
        if warm:
            # Read by this call's fits (in worker processes too). Set only for them: a
            # fitted estimator's transform of new images, which threads may call at once,
            # set and deleted it, and the calls that ended after the first one raised.
            self._keeping_fit_states = True
        try:
            with one_interruption() as interrupted, autograd_on():
                if states is not None:
                    results = self._continue_fits(states, images, extras)
                else:
                    rng = np.random.RandomState(seed)
                    results = self._fit_images(images, references, extras, rng)
        except BaseException:
            self.__dict__.update(kept)
            raise
        finally:
            if warm:
                self.__dict__.pop("_keeping_fit_states", None)
        if interrupted[0]:
            _warn_not_fitted(type(self).__name__, results)
        return images, layout, results, seed

    def _states_to_continue(self, images, references, fit_params) -> list | None:
        """The last fit's states when ``fit`` is to go on with it, else None (a new fit)."""
        states = getattr(self, "_fit_states", None)
        if states is None:
            return None  # the first fit of a warm-started estimator starts afresh
        name = type(self).__name__
        if self._inputs_digest(images, fit_params) != self._fit_digest:
            warn(
                f"{name}: warm_start=True goes on with the last fit, but these are other "
                "images (or other per-image inputs) than it fitted: fitting them afresh",
                UserWarning,
            )
            return None
        if references is not None and images_digest(references) != self._warm_references:
            recorded = (
                "recorded no PSNR (it had no y), and a curve cannot start midway"
                if self._warm_references is None
                else "recorded its PSNR against other clean images y"
            )
            raise ValueError(
                f"{name}: warm_start=True goes on with the last fit, which {recorded}: "
                "pass the same y as that fit, or none"
            )
        changed = self._changed_since_fit()
        if changed:
            raise ValueError(
                f"{name}: warm_start=True goes on with the last fit, but {', '.join(changed)} "
                f"changed since; only {', '.join(self._warm_start_free)} may change between "
                "its calls. Set them back, or set warm_start=False for a new fit"
            )
        return states

    def _unused_params(self) -> frozenset[str]:
        """Parameters the fit does not read with the others as they are (a seed of
        masks there are none of): a warm start ignores their changes."""
        return frozenset()

    def _changed_since_fit(self) -> list[str]:
        """The parameters (other than the free ones) that changed since the kept fit."""
        keys, last = _param_keys(self), self._warm_params
        assert last is not None, "called only with a kept fit, which records its parameters"
        ignored = set(self._warm_start_free) | self._unused_params()
        changed = {
            k
            for k in set(keys) | set(last)
            if k.split("__")[0] not in ignored and keys.get(k) != last.get(k)
        }
        # An object's own entry changes with any of its parameters: name those.
        return sorted(k for k in changed if not any(c.startswith(k + "__") for c in changed))

    def _continue_fits(self, states: list, images, extras) -> list[dict]:
        """Up to ``max_iter`` more steps of each fit that ``max_iter``, an interruption
        or the callback ended; fits that ended otherwise are kept as they are."""
        n = len(images)
        results: list[dict] = [{}] * n
        tasks = []
        for i, (state, previous) in enumerate(zip(states, self._fit_results, strict=True)):
            if state is None or not _goes_on(state, previous["stopped_by"]):
                results[i] = {**previous, "fit_state": state}
            else:
                tasks.append([(i, state, previous, images[i], extras[i])])
        workers = _worker_count(getattr(self, "n_jobs", None), len(tasks))
        if workers <= 1:
            outputs = [self._continue_group(task, n, None) for task in tasks]
        else:
            # Each worker gets its own fit's state (in its task), not every kept one.
            outputs = _fit_in_workers(self, tasks, n, workers, "_continue_group")
        for task, output in zip(tasks, outputs, strict=True):
            results[task[0][0]] = output[0]
        kept = n - len(tasks)
        if kept:
            warn(
                f"{type(self).__name__}: {kept} of {n} fit(s) had ended by their stopping "
                "rule or a divergence, and are kept as they were; warm_start goes on with "
                "fits that max_iter, an interruption or the callback cut short",
                UserWarning,
            )
        return results

    def _continue_group(self, task: list[tuple], n_images: int, device) -> list[dict]:
        """Go on with the kept fits of ``task``: each on its own device, unless the
        estimator's ``device`` names another (``device`` changed since the fit)."""
        outputs = []
        for i, state, previous, image, extra in task:
            label = type(self).__name__ + (f" [{i + 1}/{n_images}]" if n_images > 1 else "")
            # On a copy: a continuation that raises (a callback's error) leaves the
            # kept fit as it was, to go on with once the cause is fixed.
            state = state.copy_on(self._device)
            kwargs, extra = self._continuation(state, previous, image, extra, label)
            kwargs["callback"] = image_callback(kwargs.get("callback"), i)
            result = fit_model(None, None, resume=state, keep_state=True, **kwargs)
            out = self._complete(result, previous["scaling"], image, extra, i, n_images)
            # What the continuation does not make again (the losses of PhaseRetriever's
            # restarts, which chose this fit) stays as the kept fit had it.
            outputs.append({**previous, **out, "fit_state": result.state})
        return outputs

    def _continuation(self, state, previous: dict, image, extra: dict, label: str):
        """``(engine settings, per-image inputs)`` to go on with a kept fit; estimators
        whose fits take settings of their own (``_continued_fit_kwargs``) add them."""
        return self._engine_kwargs(label), extra

    # ------------------------------------------------------------------- API
    def fit(self: _Estimator, X: Any, y: Any = None, **fit_params: Any) -> _Estimator:
        """Fit the network(s) to the observed image(s) ``X``.

        Parameters
        ----------
        X : array-like
            One image ``(H, W)`` or ``(H, W, C)``, a batch ``(N, H, W, C)``
            or a list of images. Floats on the [0, 1] scale; uint8 is scaled
            to [0, 1]; other ranges are rescaled (see ``rescale``).
        y : array-like, optional
            Clean references in the layout of ``X``, used only to record the
            PSNR of every step's estimate in ``history_`` (never to fit or to
            stop): ``"psnr"``, of the running average with output averaging,
            and ``"psnr_raw"``, of the raw iterates, then. Both are read as
            :meth:`score` reads a reconstruction (same clipping, same range),
            so the last value of a fit that returns its last iterate is its
            score; an estimator that changes the network's estimate after the
            fit (``DIPInpainter(keep_observed=True)`` puts the observed pixels
            back) scores what it returns instead. (:class:`~skdip.BlindDeblurrer`
            records the PSNR of its aligned image, read the same way.)
            A 1-D target (such as class labels passed through a ``Pipeline``),
            or a 2-D one with a row per image of a batch (multi-output labels),
            is ignored, as scikit-learn transformers do.
        **fit_params
            Per-image inputs of the estimator (see its documentation).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._check_params()
        self._check_search()
        images, layout, results, seed = self._solve(X, y, fitting=True, **fit_params)
        states = [r.pop("fit_state", None) for r in results]
        if seed is None:  # the kept fits went on: they ran from the seed of their start
            seed = self.__dict__.get("random_state_")
        self._set_fitted(images, layout, results, fit_params, seed)
        # Kept only for warm_start: a state holds the network and Adam's moments.
        self._fit_states = states if any(s is not None for s in states) else None
        self._warm_params = _param_keys(self) if self._fit_states is not None else None
        return self

    def _check_search(self) -> None:
        """Refuse, before the fit, a fit of a cross-validation whose scoring cannot judge
        this estimator from its parameters alone (a no-reference score with a
        noise_model, a scorer for another stopping rule): every fit of a search ran to
        its end and every score came out NaN. And a successive-halving search given a
        PreferDefault refit, which it never calls."""
        found = _cross_validation_frame()
        if found is None:
            return
        # The search (scikit-learn 1.9 hands it to its fit-and-score; older ones do not).
        search = found.get("caller")
        if any(c.__name__ == "BaseSuccessiveHalving" for c in type(search).__mro__):
            from ..model_selection import PreferDefault

            if isinstance(search.refit, PreferDefault):
                # scikit-learn's halving searches refit the arg-max of their last round
                # whatever refit callable they are given: the rule was ignored, in silence.
                raise ValueError(
                    f"{type(search).__name__} never calls a callable refit: it refits the "
                    "best score of its last round, so refit=PreferDefault(...) would be "
                    "ignored. Use GridSearchCV, or apply the rule afterwards to the rows of "
                    "the last round of cv_results_ (where 'iter' is largest): "
                    "rule.select(params, scores), or best_params_per_image(search, "
                    "prefer=rule) with cv=PerImageCV()"
                )
        # Imported here: the scorers module imports this one when it runs.
        from ..metrics._scorers import check_search_scoring

        try:
            check_search_scoring(self, found.get("scorer"), found.get("y"), found.get("estimator"))
        except ValueError as err:
            raise ValueError(
                f"{type(self).__name__} with these parameters cannot be scored by the search's "
                f"scoring, so it is not fitted: {err}"
            ) from err

    def _set_fitted(self, images, layout, results, fit_params, seed: int | None) -> None:
        """Set the fitted attributes from the per-image ``results`` of the fits that ran
        from ``seed`` (:func:`resolved_seed`; None: not known, as for a fit kept by an
        earlier version, which recorded none)."""
        clear_fitted(self)
        if seed is not None:
            self.random_state_ = seed
        single = layout.kind == "single"
        pick = functools.partial(fitted_value, results, single=single)
        self.reconstruction_ = self._restore(layout, results)
        self.best_iter_ = pick("best_iter")
        self.n_iter_ = pick("n_iter")
        self.stopped_by_ = pick("stopped_by")
        self.history_ = pick("history")
        curves = [history["loss"] for history in ([self.history_] if single else self.history_)]
        self.loss_curve_ = curves[0] if single else curves
        self.n_images_ = len(images)
        for key in results[0]:
            if key in _OBSERVATION_SHAPED:
                # In the observation's layout, as reconstruction_ is in the input's: a
                # grey (H, W) observation gives an (H, W) array, not (H, W, 1).
                setattr(self, key + "_", layout.restore([r[key] for r in results]))
            elif key not in _COMMON_KEYS:
                setattr(self, key + "_", pick(key))
        if single and images[0].shape[2] == 1 and layout.squeeze_channel[0]:
            self.n_features_in_ = images[0].shape[1]
        self._fit_digest = self._inputs_digest(images, fit_params)
        self._fitted_inputs = tuple(sorted(k for k, v in fit_params.items() if v is not None))
        self._fit_images_only_digest = images_digest(images)
        self._fit_image_shapes = tuple(image.shape for image in images)
        self._fit_results = results
        # What reconstruction_ is made from again when an unpickled copy is loaded.
        self._fit_layout = layout

    def _check_cross_validation_scoring(self, images: list[np.ndarray], layout, owner=None) -> None:
        """Warn when scikit-learn's cross-validation scores images the estimator was not
        fitted on: one new image as wide as the one fitted, with as many channels, is a
        split of the rows of a single image (GridSearchCV's default cv does that), which
        fails nowhere (every fold fits one strip of the image and scores another); other
        new images are solved anew, the split's fits of its training images unused.
        ``owner``: the estimator scored (default: this one)."""
        found = _cross_validation_frame()
        if found is None:
            return
        name = type(owner or self).__name__
        fitted = getattr(self, "_fit_layout", None)
        shapes = getattr(self, "_fit_image_shapes", None)
        if fitted is not None and shapes is not None and fitted.kind == layout.kind == "single":
            (fit_h, fit_w, fit_c), (h, w, c) = shapes[0], images[0].shape
            # Scoring another image of that width by hand is no mistake: only a split is.
            if (fit_w, fit_c) == (w, c):
                warn(
                    f"{name} was fitted on one image of {fit_h}x{fit_w} pixels and is scored "
                    f"on another, {h}x{w}, in a cross-validation: its splitter split the rows "
                    "of a single image (GridSearchCV's default cv does), so every fold fits one "
                    "strip of the image and scores another. Give the image as a batch of one "
                    "(image[None] for (H, W, C), image[None, ..., None] for a grey (H, W)) and "
                    "pass cv=FitImagesCV() from skdip.model_selection.",
                    UserWarning,
                )
                return
        # Imported here: the scorers module imports this one when it runs.
        from ..metrics._scorers import scored_dip_step

        # Only where the search fits this estimator itself: a search scored in an outer
        # cross-validation (nested) is meant to meet new images.
        if scored_dip_step(found.get("estimator")) is (owner or self):
            # Every image is fitted on its own: a KFold's fits of its training images did
            # nothing for the score of its test images, which were fitted anew, the work
            # of every image done twice or more for the same scores.
            warn(
                f"{name} is scored on images it was not fitted on, in a cross-validation: each "
                "image is fitted on its own, so the split's fits of its training images do not "
                "serve its score, and its test images are fitted anew. cv=FitImagesCV() from "
                "skdip.model_selection scores the images each fit was made on: the same "
                "scores, every image solved once.",
                UserWarning,
            )

    # Any: an array gives an array, a list of images a list, but nested lists of numbers
    # are one image, and X=None gives the fit's layout; a type checker cannot tell these
    # apart (overloads on np.ndarray, whose type arguments are Any, resolved to Any too).
    def transform(self, X: Any = None, **fit_params: Any) -> Any:
        """Return the reconstruction.

        Parameters
        ----------
        X : array-like, optional
            None, or the fitted observation(s) (compared by content), returns
            the fitted reconstruction without refitting (also after
            ``set_params``, which refits nothing: call ``fit`` for that).
            Other data is solved from scratch with the current parameters;
            the fitted state is left as it is. The last such solve is kept:
            the same data, inputs and parameters again return it (with
            ``random_state=None`` too) until ``set_params`` or another solve.
        **fit_params
            Per-image inputs for new data, as in :meth:`fit`.

        Returns
        -------
        X_hat : ndarray or list of ndarray
            Reconstruction(s) in the layout of the input, float32 for float32 input, else float64.
        """
        check_is_fitted(self, "reconstruction_")
        if X is None:
            return copy.deepcopy(self.reconstruction_)
        images, layout, results = self._results_for(X, fit_params)
        return self._restore(layout, results)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """Fit to ``X`` and return its reconstruction (see :meth:`fit`).

        Parameters
        ----------
        X : array-like
            Observation(s), as for :meth:`fit`.
        y : array-like, optional
            Clean references, used only to record the PSNR curve (see :meth:`fit`).
        **fit_params
            Per-image inputs (e.g. ``mask`` for :class:`~skdip.DIPInpainter`).

        Returns
        -------
        reconstruction : ndarray or list of ndarray
            As ``reconstruction_``.
        """
        return self.fit(X, y, **fit_params).transform()

    def _inputs_digest(self, images: list[np.ndarray], fit_params: dict) -> str:
        """Content hash of the images and their per-image inputs, however those
        come packed (one ``(N, H, W)`` array of masks or a list of N masks)."""
        parts = list(images)
        extras = self._split_extra(len(images), fit_params)
        for key in sorted({k for extra in extras for k in extra}):
            for extra, image in zip(extras, images, strict=True):
                if key not in extra:
                    continue
                # metric_array: a tensor mask (requires_grad, on a GPU) crashed here,
                # after the fit.
                entry = np.atleast_3d(np.asarray(metric_array(extra[key], key), dtype=np.float64))
                if entry.shape[0] == 1 and entry.shape[1:] == image.shape[:2]:
                    # One image's (1, H, W) entry is its (H, W) one: a mask fitted as
                    # (H, W) and passed again as (1, H, W) was solved again.
                    entry = entry[0][..., None]
                parts.append(entry)
        return images_digest(parts)

    def _reuses_fit(self, images: list[np.ndarray], fit_params: dict) -> bool:
        """Whether these (checked) images, with these inputs, are the fitted ones."""
        if any(v is not None for v in fit_params.values()):
            return self._inputs_digest(images, fit_params) == getattr(self, "_fit_digest", None)
        # X alone (scorers and pipelines pass no fit parameters): the fitted
        # images, whatever parameters they were fitted with, hold the answer.
        return images_digest(images) == getattr(self, "_fit_images_only_digest", None)

    def _results_for(self, X, fit_params, checked=None, scoring: bool = False):
        """``(images, layout, results)`` for ``X``: the fit's when ``X`` is the fitted
        data, else a new solve. ``checked``: ``X`` already through
        :meth:`_check_observations`, so that callers that looked first do not check twice;
        ``scoring``: the call scores ``X`` (see :meth:`_check_cross_validation_scoring`)."""
        self._check_fit_params(fit_params)
        images, layout = checked if checked is not None else self._check_observations(X)
        if self._reuses_fit(images, fit_params):
            return images, layout, self._fit_results
        if scoring:
            self._check_cross_validation_scoring(images, layout)
        self._warn_inputs_left_out(fit_params)
        key = _solve_key(self._inputs_digest(images, fit_params), self)
        # A seed drawn for new images (random_state=None) is not recorded: the
        # fitted state is the fit's.
        results = self._kept_solve(
            key, lambda: self._solve(X, None, checked=(images, layout), **fit_params)[2]
        )
        return images, layout, results

    def _warn_inputs_left_out(self, fit_params: dict, owner=None) -> None:
        """Warn when new images come without the per-image inputs the fit had.

        A cross-validation splitter hands fit parameters to fit only: new images
        scored without them would be solved as a different problem. ``owner``: the
        estimator that solves them (default: this one).
        """
        missing = [k for k in getattr(self, "_fitted_inputs", ()) if fit_params.get(k) is None]
        if missing:
            warn(
                f"{type(owner or self).__name__} was fitted with {', '.join(missing)}=..., but "
                "these new images come without it, so they are solved without it (for "
                "DIPInpainter, only NaN pixels count as missing). Pass it to transform/score, "
                "or score the fitted images (skdip.model_selection.FitImagesCV, PerImageCV).",
                UserWarning,
            )

    def __getstate__(self):
        state = super().__getstate__()  # a copy, without the kept solve (_LastSolveMixin)
        if state.get("_fit_states") is not None:
            state["_fit_states"] = _SavedFitStates(state["_fit_states"])
            # Functions enter the keys by identity, which another process does not
            # share: the keys are made anew on loading, but for those that had
            # changed, which keep the fit's own (a later set_params may set them back).
            last = self._warm_params
            state["_warm_params"] = {k: last.get(k) for k in self._changed_since_fit()}
        if self._reconstruction_is_rebuilt():
            # reconstruction_ is a copy of the per-image results' estimates (a copy, so
            # that a write into it cannot move a later score or warm_start fit): the
            # pickle carries them once (a 64x64 grey fit: 67 kB, now 34 kB) and
            # reconstruction_ is made again from them on loading. One edited or
            # replaced since the fit is no longer their copy and is carried as it is.
            del state["reconstruction_"]
            state["_rebuild_reconstruction"] = True
        if state.get("_fit_results") is not None:
            state["_fit_results"] = _packed_results(state["_fit_results"])
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if isinstance(self.__dict__.get("_fit_states"), _SavedFitStates):
            self._fit_states = self._fit_states.load()
            self._warm_params = {**_param_keys(self), **self._warm_params}
        if self.__dict__.get("_fit_results") is not None:
            self._fit_results = _unpacked_results(self._fit_results)
        if self.__dict__.pop("_rebuild_reconstruction", False):
            self.reconstruction_ = self._restore(self._fit_layout, self._fit_results)

    def _reconstruction_is_rebuilt(self) -> bool:
        """Whether ``reconstruction_`` is, bit for bit, what :meth:`_restore` makes of
        the kept per-image results, so that a pickle can leave it out."""
        attrs = self.__dict__
        if not all(k in attrs for k in ("reconstruction_", "_fit_results", "_fit_layout")):
            return False
        return _same_bits(self._restore(self._fit_layout, self._fit_results), self.reconstruction_)

    def set_params(self: _Estimator, **params: Any) -> _Estimator:
        valid = self.get_params(deep=False)
        for key in sorted(params):
            name, nested, _ = key.partition("__")
            target = params.get(name, valid.get(name))
            # A misspelt name is left to scikit-learn's "Invalid parameter" error.
            if nested and name in valid and not hasattr(target, "set_params"):
                # Else scikit-learn fails with "'str' object has no attribute 'set_params'".
                hint = _TUNABLE_FORMS.get(name, "an object with parameters")
                raise ValueError(
                    f"{key} sets a parameter of {name}, but {name}={target!r} has no "
                    f"parameters to set; pass {hint} as {name} to tune them"
                )
        # Parameters such as operators print alike whatever their content: a kept
        # solve is dropped rather than trusted to the key.
        self.__dict__.pop("_last_solve", None)
        return super().set_params(**params)

    def score(self, X: Any, y: Any = None, **fit_params: Any) -> float:
        """Quality of the reconstruction of ``X``; higher is better.

        With clean references ``y``: the mean PSNR (dB) of the reconstructions
        against them, clipped to the intensity range the fit worked on, and
        measured on a range from ``y`` alone: 1, or the reference's peak
        magnitude above 1 (raw counts), whatever the fit's intensity map, so
        that settings fitted with and without rescaling score alike (for
        references in small units, on a large offset (1000 + x reads on a range
        of 1001: 60 dB higher than on its own span of 1), or any range of your
        choice, use ``skdip.metrics.get_scorer("psnr", data_range=...)``;
        ``history_``'s "psnr" curve is read the same way). Without: the
        default no-reference score of :class:`skdip.metrics.NoReferenceScorer`,
        averaged over images:
        ``-|10 log10(r / sigma**2)|`` in dB (at most 0), ``r`` the mean
        squared residual of the estimate the stopping rule picked and
        ``sigma`` the noise level estimated from ``X``, minus, when the
        residual image is available (denoising), the structure left in it
        (``10 log10(9 p3 / p)``, about 0 dB for a white residual, negative for one
        poorer in low frequencies, so the total can exceed 0). It is comparable
        across learning rates, widths, input noise and generators, so
        ``GridSearchCV`` works with ``scoring=None`` and no clean image.

        Parameters
        ----------
        X : array-like
            Observation(s); the fitted ones are not solved again.
        y : array-like, optional
            Clean references.
        **fit_params
            Per-image inputs of new images (e.g. ``mask``), as for :meth:`fit`.

        Returns
        -------
        score : float
        """
        check_is_fitted(self, "reconstruction_")
        # Imported here: the scorers module imports this one when it runs.
        from ..metrics._scorers import (
            check_complete,
            check_fit_not_interrupted,
            no_reference_scores,
        )

        check_fit_not_interrupted(self)
        checked = self._check_observations(X)
        references = None
        if y is not None and not is_target_vector(y, len(checked[0]), checked[0]):
            # Checked before X is solved: new data costs a full fit.
            references, ref_layout = check_images(y, name="y", min_size=self._min_image_size)
            self._check_references_first(checked, references, ref_layout, fit_params)
        images, layout, results = self._results_for(X, fit_params, checked, scoring=True)
        if references is None:
            return float(np.mean(no_reference_scores(self, images, results)))
        check_complete(results)
        extras = self._split_extra(len(images), fit_params)
        return float(np.mean(self._reference_psnrs(images, results, references, extras)))

    def _check_references_first(self, checked, references, ref_layout, fit_params, judge=None):
        """Every check of clean references against ``X`` (``checked``: as
        :meth:`_check_observations` gives it) that can run before new images are
        solved, as a solve costs a full fit: their number, scale (judged by
        ``judge``, default this estimator), shapes, and whether the images can be
        solved. Its warnings are held back (issued if a check fails): the solve checks
        again and warns then, once."""
        if len(references) != len(checked[0]):
            raise ValueError(_reference_count_message(references, ref_layout, len(checked[0])))
        (judge or self)._check_reference_dtypes(*checked, references, ref_layout, fit_params)
        if self._reuses_fit(checked[0], fit_params):  # no solve: nothing checks again
            # Against the fitted reconstructions, which are what is scored: the
            # parameters may have changed since (set_params(scale=4) after a fit).
            for i, (reference, result) in enumerate(
                zip(references, self._fit_results, strict=True)
            ):
                if reference.shape != result["estimate"].shape:
                    expected = result["estimate"].shape
                    raise ValueError(
                        f"the clean reference y has shape {reference.shape} (as (H, W, C)) but "
                        f"the fitted reconstruction of image {i} {expected}"
                        f"{self._reference_crop_hint(reference.shape, expected)}"
                    )
            return
        with held_back():
            self._per_image_inputs(checked[0], references, fit_params)

    def _reference_psnrs(self, images, results, references, extras) -> list[float]:
        """Per image, the PSNR of the estimate against its clean reference (see
        :meth:`score` for its range)."""
        scores = []
        for r, ref, image, extra in zip(results, references, images, extras, strict=True):
            est = r["estimate"]
            if ref.shape != est.shape:
                raise ValueError(f"y has shape {ref.shape} but the reconstruction {est.shape}")
            lo, span = self._scored_range(r["scaling"], ref, image, extra)
            self._check_reference_scale(ref, self._scaling_values(image, extra), span)
            clipped = np.clip(est, lo, lo + span)  # the range the fit worked on
            # Measured on a range from y alone: the scaling's span (the data's range,
            # its noise and room) switched with one pixel and differed between
            # settings fitted on other intensity maps. The PSNR curve a fit records
            # reads the same range and clipping (_history_psnr_range).
            data_range = reference_data_range(ref)
            # On the unit scale: data_range**2 overflows for data near 1e200.
            unit_ref, unit_est = (ref - lo) / data_range, (clipped - lo) / data_range
            scores.append(peak_signal_noise_ratio(unit_ref, unit_est, data_range=1.0))
        return scores

    def _scored_range(self, scaling, reference, image, extra) -> tuple[float, float]:
        """``(low, span)`` in data units: the intensity range the fit worked on, to
        which :meth:`score` clips a reconstruction before comparing it with
        ``reference`` (``scaling``: the fit's intensity map)."""
        lo, span = scaling.image_offset, scaling.scale
        in_unit_range = (
            _AUTO_RESCALE_BOUNDS[0] <= reference.min() <= reference.max() <= _AUTO_RESCALE_BOUNDS[1]
        )
        if span == 1 and np.all(scaling.offset == 0) and not in_unit_range:
            # Fitted as given, of an image outside [0, 1]: the image's own range
            # (clipping to [0, 1] scored an exact estimate on 0-255 at -27.8 dB).
            # Measurements that do not bound the image (k-space) tell it only
            # through an image estimated from them: their own span inflated the
            # PSNR by 20 dB. A reference on [0, 1] says the range is [0, 1] (a
            # noisy estimate of it read 10 dB high).
            image_range = self._image_range(image, extra)
            if image_range is None:
                values = self._scaling_values(image, extra)
                finite = values[np.isfinite(values)]
                image_range = (float(finite.min()), float(finite.max()), float(np.median(finite)))
            low, high, median = image_range
            if _off_the_unit_range(low, high, median):
                lo, span = low, high - low
        return lo, span

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = self._allow_nan
        tags.non_deterministic = False
        tags.requires_fit = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# The objects whose parameters a search can tune, for the names that stand for them.
_TUNABLE_FORMS = {
    "generator": "a generator object (SkipNetwork(...), DeepDecoder(...), ...)",
    "early_stopping": "a rule object (ExponentialMovingVariance(...), ...)",
    "noise_model": "SparseNoise() (the same model as 'sparse')",
    "regularizer": "a regularizer object (TotalVariation(...), ...)",
    "operator": "one of skdip's operators (Downsample(...), Convolution(...), ...)",
    "init": "a HIOPhaseRetriever(...) (the start 'hio' is HIOPhaseRetriever(n_init=4))",
}


def _check_outliers(values: np.ndarray) -> None:
    """Warn when a few extreme values set the range the data is rescaled from."""
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(finite.max())
    low, high = np.percentile(finite, [1, 99])
    if hi > lo and high - low < 0.05 * (hi - lo):
        warn(
            f"98% of the values lie in [{low:.4g}, {high:.4g}], under 5% of the data's range "
            f"[{lo:.4g}, {hi:.4g}]: a few extreme values (hot pixels, a saturated spot, a "
            "placeholder) set the rescaling, which squeezes the rest near one end of [0, 1], "
            "where the fit is poor. Remove or clip them (or mask them, with DIPInpainter), "
            "unless they are real (a few bright stars).",
            UserWarning,
        )


def _warn_not_fitted(name: str, results: list[dict]) -> None:
    """After a Ctrl-C, say which images the call left without a single step."""
    skipped = [
        i for i, r in enumerate(results) if r["stopped_by"] == "interrupted" and not r["n_iter"]
    ]
    if skipped:
        warn(
            f"{name}: Ctrl-C ended the fit; image(s) {skipped} of {len(results)} were not "
            "fitted (no step: their reconstruction is the untrained network's output, "
            "stopped_by_ 'interrupted'). Fit again to solve them.",
            InterruptionWarning,
        )


def clear_fitted(estimator) -> None:
    """Remove an estimator's fitted attributes (public names ending in "_").

    A refit replaces the whole fitted state: attributes that only some fits set
    (a ``sparse_noise_``, ``n_features_in_``) must not survive from an earlier fit.
    """
    for name in [k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")]:
        delattr(estimator, name)


def _same_bits(a, b) -> bool:
    """Whether ``a`` and ``b``, arrays or lists of arrays, are alike in type, dtype,
    shape and every bit (an edit to -0.0 or to another NaN counts)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_bits(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not np.ndarray or a.dtype != b.dtype or a.shape != b.shape or a.dtype.hasobject:
        return False
    bits = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in (a, b)]
    return bool(np.array_equal(*bits))


def _worker_devices(device: torch.device, n: int) -> list[torch.device]:
    """One device per image: spread CUDA work over the visible GPUs."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        count = torch.cuda.device_count()
        return [torch.device("cuda", i % count) for i in range(n)]
    return [device] * n


def without_fitted_state(estimator):
    """A shallow copy of ``estimator`` for joblib workers: its parameters and fit-time
    settings, without what a fit left (fitted attributes, results, kept states, the
    solve cache), which every task's pickle would carry (590 MB for four kept skip
    fits). Not ``copy.copy``: that pickles every kept state only to drop it."""
    runner = object.__new__(type(estimator))
    runner.__dict__.update(
        {
            k: v
            for k, v in vars(estimator).items()
            if not (k.endswith("_") and not k.startswith("_")) and k not in _FITTED_PRIVATE
        }
    )
    return runner


# What a fit leaves in private attributes; workers never read them.
_FITTED_PRIVATE = ("_fit_results", "_fit_states", "_last_solve")


def _fit_in_workers(
    estimator, tasks: list[list[tuple]], n: int, workers: int, method: str = "_fit_group"
) -> list:
    """``estimator._fit_group`` (or another ``method`` of the same signature) of every
    task in ``workers`` joblib workers, in order.

    Each worker gets its share of the caller's torch threads, so workers x
    threads never oversubscribes the machine. Warnings raised in worker processes are replayed
    here, where the caller's warning filters (and ``catch_warnings``) apply.
    """
    devices = _worker_devices(estimator._device, len(tasks))
    estimator = without_fitted_state(estimator)
    # The workers share the threads this process has: torch's count honours a
    # user's limit or an outer joblib worker's; joblib's honours container quotas.
    threads = max(1, min(torch.get_num_threads(), cpu_count()) // workers)
    # A worker process starts with torch's float32 default: a caller's float64 default
    # gave other networks there than n_jobs=1 (0.45 apart), silently.
    dtype = torch.get_default_dtype()
    # Worker threads (joblib's threading backend) never see a Ctrl-C, which reaches
    # this thread only: they share a flag, set here, and stop at their next step
    # (they fitted on after the call had ended, and the interpreter aborted at exit).
    flag = current_interruption()
    shared = _WorkersFlag()
    try:
        runs = Parallel(n_jobs=workers)(
            delayed(_fit_in_worker)(
                estimator, method, task, n, devices[k], threads, os.getpid(), dtype, shared
            )
            for k, task in enumerate(tasks)
        )
    except KeyboardInterrupt:
        shared[0] = True
        if flag is not None:
            flag[0] = True
        raise
    failures = [output for output, *_ in runs if isinstance(output, _WorkerFailure)]
    if failures:
        raise failures[0].error
    if shared[0] and flag is not None:
        flag[0] = True  # a Ctrl-C in a worker thread ends the call's later fits too
    for _, caught, _ in runs:
        for message, category in caught:
            warn(message, category)
    if getattr(estimator, "callback", None) is not None and not all(own for *_, own in runs):
        warn(
            f"{type(estimator).__name__}: with n_jobs, the callback ran in joblib's worker "
            "processes, so what it changed there (lists, files it keeps open, counters) does "
            "not reach this process. Use joblib.parallel_config(backend='threading') or "
            "n_jobs=None to keep its effects.",
            UserWarning,
        )
    return [output for output, *_ in runs]


class _WorkersFlag(list):
    """The :func:`~skdip._engine.one_interruption` flag the worker threads of one call
    share (``[True]``: their fits stop at their next step), and ``failed``: whether it
    was set because one of their fits raised."""

    def __init__(self) -> None:
        super().__init__([False])
        self.failed = False


class _WorkerFailure:
    """What a worker thread returns in place of the error its fit raised."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _fit_in_worker(estimator, method, task, n, device, threads, parent_pid, dtype, flag):
    work = getattr(estimator, method)
    if os.getpid() == parent_pid:
        # A thread of the caller's process: its warnings reach the caller's
        # filters directly (and catch_warnings is not thread-safe).
        with _shared_torch_threads(threads), shared_interruption(flag):
            with held_back(InterruptionWarning) as stopped:
                try:
                    output = work(task, n, device)
                except Exception as error:
                    # Returned, not raised: joblib raised it at once, and the other
                    # threads fitted on after the call had ended, holding torch's global
                    # generator (the caller's torch.rand drew from their stream). They
                    # stop at their next step; the caller raises it once they have.
                    flag.failed = flag[0] = True
                    return _WorkerFailure(error), [], True
            if not flag.failed:
                for message, category in stopped:
                    warn(message, category)  # a Ctrl-C's: only an error's go unsaid
            return output, [], True
    previous, previous_dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                output = work(task, n, device)
            except Exception as error:
                # The caller sees the error, not the warnings that led to it.
                notes = [
                    f"warning in the worker: {w.category.__name__}: {w.message}" for w in caught
                ]
                if hasattr(error, "add_note"):  # Python 3.11 on
                    for note in notes:
                        error.add_note(note)
                elif notes:
                    # Python 3.10 has no add_note; the attribute it fills (PEP 678) is
                    # still there to read, and pytest shows it.
                    error.__notes__ = [*getattr(error, "__notes__", []), *notes]
                raise
        return output, [(str(w.message), w.category) for w in caught], False
    finally:
        torch.set_num_threads(previous)
        torch.set_default_dtype(previous_dtype)


# torch's thread count is one setting for the whole process. Worker threads that
# each saved and restored it could leave the caller with a worker's count (one
# saves the count another has just set); the first to start saves it, the last
# to end restores it.
_THREADS_LOCK = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextlib.contextmanager
def _shared_torch_threads(threads: int):
    global _threads_users, _threads_before
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        _threads_users += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)


def resolved_seed(random_state) -> int:
    """The int seed a new solve runs from, from ``np.random.RandomState(seed)``.

    An int ``random_state`` is the seed itself: ``RandomState(random_state)``, as
    ``check_random_state`` makes it. None and a ``RandomState`` instance give one
    draw, from NumPy's global generator or from the instance (which it advances as
    the solve's own first draw did before there was a seed to record). Recorded as
    ``random_state_``, the seed, set as ``random_state``, solves the same again.
    """
    rng = check_random_state(random_state)  # refuses what is not a random state
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(rng.randint(0, 2**31 - 1))


def _image_seeds(rng: np.random.RandomState, n: int) -> list[int]:
    """The seed of each image's fit, drawn from the estimator's random state.

    One seed for every image: an image's fit then does not depend on its place
    in the batch, so a split that fits one image (PerImageCV) and the refit on
    all of them solve it identically.
    """
    seed = int(rng.randint(0, 2**31 - 1))
    return [seed] * n


# Engine settings an estimator decides per member of a batched run.
_MEMBER_SETTINGS = (
    "loss",
    "max_iter",
    "lr",
    "regularizer",
    "stopping",
    "averaging",
    "averaging_monitor",
    "callback",
)


def _fit_together(entries: list[tuple], n_images: int, device, strict: bool = True) -> list[dict]:
    """Fit ``(estimator, index, image, reference, extra, seed)`` entries in batched runs.

    The estimators may differ in any setting the engine takes per member
    (learning rate, input noise, stopping rule, ...), not in architecture.
    Members whose model cannot be stacked raise a ValueError when ``strict``;
    otherwise they are fitted in as few batched runs as their models allow
    (models of another shape, e.g. another super-resolution scale, run
    apart), and models that never stack are fitted one after another.
    """
    prepared = [
        est._prepare(image, reference, extra, seed, device)
        for est, _, image, reference, extra, seed in entries
    ]
    alone = [k for k, p in enumerate(prepared) if type(p[1]) is not DIPModel or p[3]]
    if alone and strict:
        est, model, fit_kwargs = entries[alone[0]][0], prepared[alone[0]][1], prepared[alone[0]][3]
        raise ValueError(
            f"{type(est).__name__} cannot fit images in batches with these parameters "
            f"(its model is a {type(model).__name__}"
            + (" with its own optimiser settings" if fit_kwargs else "")
            + "); use batch_size=1"
        )
    if strict:
        groups = [list(range(len(entries)))]
    else:
        # Models that never stack run alone; the others still in as few batched runs
        # as they allow (one such candidate made its whole chunk run one by one).
        rest = [k for k in range(len(entries)) if k not in alone]
        groups = [[k] for k in alone] + [
            [rest[j] for j in group] for group in _stackable_groups([prepared[k][1] for k in rest])
        ]
    results: list[dict | None] = [None] * len(entries)
    for group in groups:
        if len(group) == 1:
            (k,) = group
            est, i, image, _, extra, seed = entries[k]
            results[k] = est._fit_prepared(prepared[k], image, extra, seed, i, n_images)
            continue
        fitted = _fit_stacked([entries[k] for k in group], [prepared[k] for k in group], n_images)
        for k, result in zip(group, fitted, strict=True):
            results[k] = result
    return results


def _stackable_groups(models: list[DIPModel]) -> list[list[int]]:
    """Indices of ``models`` in groups that one batched run can fit, in order."""
    groups: list[list[int]] = []
    for k, model in enumerate(models):
        for group in groups:
            try:
                _check_stackable([models[group[0]], model])
            except ValueError:
                continue
            group.append(k)
            break
        else:
            groups.append([k])
    return groups


def _fit_stacked(entries: list[tuple], prepared: list[tuple], n_images: int) -> list[dict]:
    """One batched run over entries whose prepared models stack."""
    name = type(entries[0][0]).__name__
    first, last = entries[0][1] + 1, entries[-1][1] + 1
    label = f"{name} [{len(entries)} fits, images {first}-{last}/{n_images}]"
    own = [est._engine_kwargs(label) for est, *_ in entries]
    settings = [{k: kw[k] for k in _MEMBER_SETTINGS} for kw in own]
    for setting, entry in zip(settings, entries, strict=True):
        setting["callback"] = image_callback(setting["callback"], entry[1])
        # Each member's warnings name its image, as those of a fit on its own do.
        setting["description"] = name + (f" [{entry[1] + 1}/{n_images}]" if n_images > 1 else "")
    fitted = fit_batch(
        [p[1] for p in prepared],
        [p[2] for p in prepared],
        references=[p[4] for p in prepared],
        reference_ranges=[p[5] for p in prepared],
        seeds=[entry[-1] + 1 for entry in entries],
        settings=settings,
        loss=settings[0]["loss"],
        max_iter=settings[0]["max_iter"],
        verbose=any(kw["verbose"] for kw in own),
        description=label,
    )
    return [
        est._complete(result, p[0], image, extra, i, n_images)
        for result, p, (est, i, image, _, extra, _) in zip(fitted, prepared, entries, strict=True)
    ]


def fitted_scaling(estimator, image: np.ndarray, extra: dict) -> _Scaling:
    """The intensity map of one observation's fit: the one its check found
    (:meth:`BaseDIPEstimator._per_image_inputs`), else (inputs that did not go
    through it, an override of ``_check_solvable`` that returns nothing) decided now."""
    scaling = extra.get("_scaling")
    return estimator._fit_scaling(image, extra) if scaling is None else scaling


def fitted_value(results: list[dict], key: str, single: bool):
    """A fitted attribute's value from the per-image ``results`` (a list but for a
    ``single`` image): copies, as the results are what scoring and warm_start read, and
    editing an attribute in place (normalising loss_curve_ for a plot) moved the score."""
    values = [copy.deepcopy(r[key]) for r in results]
    return values[0] if single else values


def _batches(shapes: list[tuple], batch_size: int) -> list[list[int]]:
    """Indices of the images fitted together: same shape (batch key, see
    ``_batch_key``), at most ``batch_size``."""
    if batch_size <= 1:
        return [[i] for i in range(len(shapes))]
    by_shape: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        by_shape.setdefault(tuple(shape), []).append(i)
    groups = []
    for indices in by_shape.values():
        groups += [indices[k : k + batch_size] for k in range(0, len(indices), batch_size)]
    return groups


# Per-image results shaped like the observation, handed back in its layout.
_OBSERVATION_SHAPED = {"sparse_noise"}

_COMMON_KEYS = {
    "estimate",
    # What an estimator keeps to go on with a fit (warm_start), not a fitted value.
    "continuation",
    "best_iter",
    "n_iter",
    "stopped_by",
    "history",
    "best_signal",
    "scaling",
    # The settings the fit ran with (for scoring it after a set_params).
    "early_stopping",
    "loss",
    "noise_model",
    # PhaseRetriever: Ctrl-C cut the search among restarts (warm_start starts afresh).
    "restarts_cut",
    # (h, w, c) booleans: the entries that hold measurements, where some do not.
    "measured",
    # Set where the measurement is not image-like (k-space): its noise level must be given.
    "measurement_is_no_image",
    # (sigma or None, why not): the noise level the forward model reads from the measurement.
    "measurement_noise",
}


def _best_signal(result: FitResult) -> float:
    signal = result.history["signal"]
    if 0 <= result.best_iter < len(signal) and np.isfinite(signal[result.best_iter]):
        return float(signal[result.best_iter])
    return float("nan")


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    # NumPy has no bfloat16: its values are hashed as float32 (exact).
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


class _SavedFitStates:
    """Kept fit states (``warm_start``) in torch's own format, so that a fit kept
    on a GPU loads on a machine without that GPU (onto the CPU) instead of failing."""

    def __init__(self, states: list):
        buffer = io.BytesIO()
        torch.save(states, buffer)
        self.data = buffer.getvalue()

    def load(self) -> list:
        states = torch.load(
            io.BytesIO(self.data), map_location=_restore_location, weights_only=False
        )
        for state in states:
            # A fit kept on a GPU and loaded on the CPU kept the GPU's Adam kernels.
            if isinstance(state, FitState):
                state._use_device_kernels()
        return states


class _ExactFloat32:
    """A float64 array carried in a pickle as the float32 array it equals bit for bit
    once widened: see :func:`_packed_results`."""

    def __init__(self, values: np.ndarray):
        self.values = values

    def widened(self) -> np.ndarray:
        return self.values.astype(np.float64)


def _packed_results(results: list) -> list:
    """The per-image results for a pickle, each float64 array that float32 holds
    exactly carried as float32.

    A fit's estimate is the float32 network output widened to float64 (and mapped
    back by the intensity scaling, which is the identity for data on [0, 1]): the
    pickle of a fit carried twice the bytes it holds (a 256x256 RGB float32 fit:
    1.58 MB for a 0.79 MB reconstruction). The bits are checked, so any array that
    float32 would change (a rescaled estimate, observed pixels kept) stays float64;
    loading widens the others back to the same bits.
    """
    memo: dict[int, _ExactFloat32] = {}  # an array kept twice is carried once

    def packed(value):
        if type(value) is not np.ndarray or value.dtype != np.float64 or value.size < 2:
            return value
        if id(value) not in memo:
            narrow = value.astype(np.float32)
            if not _same_bits(narrow.astype(np.float64), value):
                return value
            memo[id(value)] = _ExactFloat32(narrow)
        return memo[id(value)]

    return [{k: packed(v) for k, v in r.items()} if type(r) is dict else r for r in results]


def _unpacked_results(results: list) -> list:
    """:func:`_packed_results` undone: the float64 arrays as they were fitted."""
    memo: dict[int, np.ndarray] = {}

    def unpacked(value):
        if not isinstance(value, _ExactFloat32):
            return value
        if id(value) not in memo:
            memo[id(value)] = value.widened()
        return memo[id(value)]

    return [{k: unpacked(v) for k, v in r.items()} if type(r) is dict else r for r in results]


def _restore_location(storage, location: str):
    """torch.load's ``map_location``: each tensor on the device it was saved on where
    this machine has it (None: torch's own restore), else on the CPU, where torch
    read it (a fit kept on ``cuda:1``, loaded on a machine with one GPU, failed)."""
    return None if _loadable_device(location) == location else storage


def _names_image(callback) -> bool:
    """Whether ``callback`` has a parameter named ``image`` for the image's index: one
    that a keyword can fill, past the three positions the step's values fill.

    As ``scipy.optimize.minimize`` does for ``intermediate_result``, only a
    parameter of that name counts: a callback taking ``**kwargs`` is called as
    before, so that one written for the three-argument form gets no keyword it
    did not ask for. Nor does ``callback(it, loss, image)``, whose ``image`` is the
    estimate (a natural name for it, used before the index was offered).
    """
    try:
        parameters = list(inspect.signature(callback).parameters.values())
    except (TypeError, ValueError):
        return False  # a builtin without a signature: called as it always was
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if "image" in [p.name for p in parameters if p.kind in positional][:3]:
        return False
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(p.name == "image" and p.kind in keyword for p in parameters)


def image_callback(callback, index: int):
    """The callable the engine calls after each step of the fit of image ``index``
    (its place in the ``X`` of the call): ``callback`` itself, or, where it names an
    ``image`` parameter, ``callback`` with ``image=index``.

    Every fit path (alone, batched, in workers, warm_start continuations) hands the
    engine its callback through here, so that all call it alike.
    """
    if callback is None or not _names_image(callback):
        return callback
    # A partial, not a closure: it pickles wherever the callback does.
    return functools.partial(callback, image=int(index))


def _refuse_class(value, name: str) -> None:
    """Refuse a class given where an instance (or a function) is called, naming the call
    to make instead."""
    if not isinstance(value, type):
        return
    arguments = "weight=..." if issubclass(value, BaseRegularizer) else ""
    raise TypeError(
        f"{name} must be an instance or a function, got the class {value.__name__}: "
        f"pass {name}={value.__name__}({arguments})"
    )


def _check_call_form(
    function, n_args: int, name: str, form: str, keywords: tuple[str, ...] = ()
) -> None:
    """Refuse a function that cannot be called with ``n_args`` positional arguments
    (and the ``keywords`` given)."""
    if not callable(function):
        raise TypeError(f"{name} must be callable as {form}, got {function!r}")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin without a signature: its call will tell
    try:
        signature.bind(*range(n_args), **dict.fromkeys(keywords, 0))
    except TypeError as error:
        taking = f"{n_args} positional arguments" + "".join(f" and {k}=" for k in keywords)
        raise TypeError(
            f"{name} is called as {form}, but {function!r} cannot take {taking} ({error})"
        ) from None


def _solve_key(digest: str, estimator) -> tuple:
    """The key a kept solve of new data is reused under: the data's ``digest``, the
    estimator's parameters and torch's default dtype, in which the networks and the
    data are made (after ``torch.set_default_dtype(torch.float64)`` the float32 solve
    came back, 0.52 off the float64 one)."""
    return (digest, _params_key(estimator), str(torch.get_default_dtype()))


def _params_key(estimator) -> str:
    """The estimator's parameters as a string that changes with any of their values.

    Arrays (a deconvolution kernel) enter by content: NumPy's repr elides the
    middle of large ones, so two kernels could print alike.
    """
    return ";".join(f"{name}={key}" for name, key in _param_keys(estimator).items())


def _param_keys(estimator) -> dict[str, str]:
    """One string per parameter (``get_params(deep=True)``) that changes with its value."""
    return {
        name: _value_key(value, callback=name == "callback")
        for name, value in sorted(estimator.get_params(deep=True).items())
    }


def _content(arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _value_key(value, callback: bool = False, depth: int = 0) -> str:
    """A string that changes with a parameter value: arrays, tensors and modules
    (a kernel, a mask) by content, also inside lists, dicts (a grid) and the bound
    arguments of a ``functools.partial`` (a weighted loss), which a repr shortens or
    prints alike; functions by identity; a callable object's public attributes."""
    if depth > 20:  # a self-referencing structure: its repr stands for it
        return repr(value)

    def key(v) -> str:
        return _value_key(v, depth=depth + 1)

    def attributes(obj) -> list:
        # The public attributes of a user's object (an operator's ``strength``, a loss
        # object's weight), which its repr need not show.
        # Functions by identity (their repr), a partial's bound values by content (a
        # FunctionOperator around partial(blur, kernel=k) missed k changed in place).
        return [(k, key(v)) for k, v in sorted(vars(obj).items()) if not k.startswith("_")]

    if isinstance(value, torch.nn.Module):
        # Weights and buffers and the public attributes.
        tensors = [_as_numpy(t) for t in value.state_dict().values()]
        # And the arrays an operator holds besides (FourierMagnitude's given masks).
        own = getattr(value, "_key_arrays", None)
        tensors += list(own()) if callable(own) else []
        return repr((repr(value), attributes(value), _content(tensors)))
    if isinstance(value, torch.Tensor | np.ndarray):
        if isinstance(value, np.ndarray) and value.dtype == object:
            return repr([key(v) for v in value.ravel()])
        return repr(_content([_as_numpy(value) if torch.is_tensor(value) else value]))
    if isinstance(value, functools.partial):
        args = [key(v) for v in value.args]
        keywords = {k: key(v) for k, v in sorted(value.keywords.items())}
        return repr(("partial", key(value.func), args, keywords))
    if isinstance(value, list | tuple):
        return repr((type(value).__name__, [key(v) for v in value]))
    if isinstance(value, dict):
        return repr(("dict", [(repr(k), key(v)) for k, v in value.items()]))
    if (
        not callback  # its state (steps it saw) is no setting of the fit
        and callable(value)
        and hasattr(value, "__dict__")
        and not inspect.isroutine(value)
    ):
        return repr((repr(value), attributes(value)))  # a callable object, e.g. a loss
    return repr(value)
