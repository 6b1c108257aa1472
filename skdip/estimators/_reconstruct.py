"""Deep Image Prior for known forward models: generic, inpainting, super-resolution, deblurring.

Every estimator here solves ``min_theta loss(f(G_theta(z)), y) + R(G_theta(z))``
for a known measurement model ``f`` and returns ``G_theta(z)`` at the
selected iteration. They differ only in how ``f`` is built from their
parameters (and, for inpainting, from the observation itself).
"""

from __future__ import annotations

import copy
import textwrap
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from .._engine import COMPLEX_OUTPUT_MESSAGE
from .._typing import Float, Int
from .._validation import (
    ArrayInterface,
    InvalidParameterError,
    check_int_pair,
    metric_array,
    to_tensor,
)
from .._warnings import warn
from ..operators import (
    Convolution,
    Downsample,
    ForwardOperator,
    FunctionOperator,
    Identity,
    PixelMask,
)
from ..operators._convolution import _check_kernel
from ._base import (
    _AUTO_RESCALE_MIN_SPAN,
    _AUTO_STRETCH_SPAN,
    ZERO_GAIN_MESSAGE,
    BaseDIPEstimator,
    _Estimator,
    rescaling_reason,
)
from ._sparse_noise import SparseNoise, SparseNoiseMixin

__all__ = ["DIPDeconvolver", "DIPInpainter", "DIPReconstructor", "DIPSuperResolver"]


_COMMON_PARAMS_DOC = """generator : str or BaseGenerator, default="skip"
        The network: a name from :data:`skdip.generators.GENERATOR_NAMES`
        (``"skip"``, ``"skip-small"``, ``"deep-decoder"``, ``"conv-decoder"``,
        ``"inr"``, ``"drp"``) or a configuration object such as ``SkipNetwork(width=64)``
        (tunable as ``generator__width``).
    early_stopping : {"emv", "wmv"}, BaseStoppingRule or None, default="emv"
        Reference-free stopping rule watching the running variance of the
        iterates; None runs ``max_iter`` steps and returns the last iterate
        (the last average with ``output_averaging``).
    max_iter : int, default=5000
        Maximum number of optimisation steps.
    lr : float, default=0.01
        Adam learning rate of the network.
    loss : {"mse", "rmse", "l1", "huber"} or callable, default="mse"
        Data fidelity between the predicted and the observed measurement.
        A callable is called as ``loss(prediction, target)``, the model's
        prediction of the measurement first and the observation second
        (tensors shaped ``(1, C, H, W)``), and returns a scalar tensor.
    regularizer : BaseRegularizer or callable, default=None
        Penalty on the image estimate, e.g. ``TotalVariation(weight=0.01)``
        or ``GradientRatio()`` (tunable as ``regularizer__weight``).
    noise_model : {"sparse"}, SparseNoise or None, default=None
        ``"sparse"`` models impulse (salt-and-pepper) outliers as
        ``y = f(x) + g * g - h * h`` with ``g``, ``h`` trained from a tiny
        start by plain gradient steps (double over-parameterisation); see
        :class:`SparseNoise`. Use it with ``loss="mse"``.
    reg_noise_std : float, default=1/30
        Standard deviation of the perturbation of the input code at each step
        (set 0 for generators that ignore it, such as ``"inr"``).
    output_averaging : float or None, default=None
        Weight ``w``, in (0, 1), of the exponential average of outputs (0.99
        in the DIP paper; None for no average). When set, the stopping rule
        watches the raw iterates and the average ``round(1 / (1 - w))`` steps
        after their variance minimum is returned, an average started at the
        rule's first check (``DIPDenoiser``'s ``averaging_monitor="raw"``);
        ``best_iter_`` is the step of that average.
    rescale : "auto" or bool, default="auto"
        Map intensities to about [0, 1] before fitting and back after.
        "auto" does it for data clearly outside [0, 1] (below -0.25 or above
        1.25, or with its median off [-0.05, 1.05]), and for data whose
        image, through the model's gain on constant images, is (a kernel
        summing to 0.5 or to -1 on data on [0, 1]). Through a model that
        narrows the image's range (a blur, a downsampling), the image is left
        a quarter of the data's span to spare on each side (none below 0 for
        non-negative data), as a sharp image spans more than its measurement;
        point sources blurred far lower than that come back capped (for a
        star field, bring the data to [0, 1] and pass ``rescale=False``: a
        room set by a least-squares image instead cost natural images 0.2 to
        0.9 dB).
        Where the measured pixels are the image's own (``DIPInpainter``, or an
        operator whose ``measures_pixels`` is True: ``Identity``,
        ``PixelMask``), no room is left, and "auto" also stretches data
        spanning less than 0.5, as :class:`DIPDenoiser` does; through
        another linear model, data spanning less than 0.5 is stretched where
        the image estimated from it by least squares spans less than 0.5 too
        (a dim or low-contrast image, not a dim star whose blurred peak
        alone is narrow), or less than 0.1 through a model whose measurements
        take both signs (k-space).
        The offset removed from the measurements is carried through the
        forward model: divided by its gain on constant images (a kernel
        summing to 2 halves it); for a linear model that does not keep
        constant images constant (zero padding), its measurement of the
        constant image is removed instead. Data that needs rescaling through
        a non-linear model is refused before any fit.
        Measurements the model never produces (pixels a mask hides, whether
        by ``DIPInpainter``'s ``mask=`` or a ``PixelMask`` operator) do not
        count. Through a linear model that measures a positive image with
        signs of both kinds (a Fourier transform: MRI k-space, as real and
        imaginary channels), the data's range says nothing of the image's:
        the range of an image fitted to the data by least squares (8
        conjugate-gradient steps; with 25% room on each side) decides, and
        data of an image on [0, 1] is fitted as it is (one spanning less than
        0.1 of it is stretched).
        With False, as in :class:`DIPDenoiser` (a warning for data far outside
        [0, 1]).
    device : str or torch.device, default="auto"
        "auto" uses CUDA when available, else the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the network, its input code and the perturbations; the same
        seed gives identical results on the CPU. None draws the seed from
        NumPy's global generator (``np.random.seed`` makes it repeatable, not
        ``torch.manual_seed``), as does a ``RandomState`` instance from
        itself: the seed a fit ran from is kept in ``random_state_``.
    verbose : bool or int, default=False
        Show a progress bar (needs tqdm: the ``progress`` extra).
    callback : callable, default=None
        ``callback(iteration, loss, estimate)`` after every step, with
        ``estimate`` on the intensity scale the fit works on ([0, 1] for
        rescaled data); returning True stops the fit. A callback with a
        parameter named ``image`` after its first three gets ``image=i`` too,
        ``i`` the index in ``X`` of the image fitted (see :class:`DIPDenoiser`).
    batch_size : int, default=1
        Number of images of one shape fitted together in one vectorised run
        (for GPUs; see :class:`DIPDenoiser`): the same algorithm as alone,
        up to float32 rounding (which can move the early-stopping point).
        Not available with ``noise_model`` or
        ``DIPDeconvolver(boundary="valid")``.
    n_jobs : int, default=None
        Images of a batch fitted in parallel (joblib; None means 1, -1 all
        cores), as in :class:`DIPDenoiser`: each worker gets its share of the
        caller's torch threads, images are spread over the GPUs of a machine
        with several, and batches (``batch_size``) over the workers. The
        operator is sent to the worker processes: a ``FunctionOperator``
        needs a function defined at module level (lambdas do not pickle).
    warm_start : bool, default=False
        Keep each image's fit so that the next ``fit`` on the same images
        goes on with it for up to ``max_iter`` more steps, as in
        :class:`DIPDenoiser` (fits that ``max_iter`` or the ``callback`` cut
        short or that were interrupted; only ``max_iter``, ``verbose``, ``callback``, ``n_jobs``
        and ``device`` may change between the calls; not with ``batch_size`` > 1)."""

_COMMON_ATTRIBUTES_DOC = """best_iter_ : int or list of int
        Iteration whose estimate was returned (0 with ``n_iter_ == 0`` when
        every step diverged: the untrained network's output).
    n_iter_ : int or list of int
        Iterations run (accepted steps).
    stopped_by_ : str or list of str
        Why the fit ended: "early_stopping", "max_iter", "callback",
        "interrupted" or "divergence".
    history_ : dict or list of dict
        Per-iteration records ("loss", with a ``regularizer`` its penalty
        included and "data_loss" the data term alone, "signal", "psnr" when
        clean references were given to ``fit`` (with ``output_averaging``, of the
        running average, and "psnr_raw" of the raw iterates), "fit_time",
        "seconds_per_step", ...).
    loss_curve_ : ndarray or list of ndarray
        The loss at every iteration.
    sparse_noise_ : ndarray or list of ndarray
        Only with a ``noise_model``: the sparse component of the measurement
        at the end of the fit, in the observation's layout (``(h, w)`` for a
        grey 2-D one, else channels last).
    n_images_ : int
        Number of images fitted.
    n_features_in_ : int
        Width of the observation, set when ``X`` is a single 2-D array.
    random_state_ : int
        The seed the fit ran from: set as ``random_state``, it repeats the fit
        (as for :class:`DIPDenoiser`, where it is described in full)."""


def _fill(doc: str, placeholder: str, text: str) -> str:
    """``doc`` with ``placeholder`` replaced by ``text`` (its first line unindented, the
    rest indented for a class body), re-indented to the placeholder's own indentation:
    Python 3.13 strips the common indentation of docstrings, earlier versions keep it."""
    start = doc.find(placeholder)
    if start < 0:
        return doc
    before = doc[doc.rfind("\n", 0, start) + 1 : start]
    indent = before[: len(before) - len(before.lstrip())]
    first, _, rest = text.partition("\n")
    rest = textwrap.dedent(rest)
    lines = [first] + [indent + line if line else line for line in rest.split("\n")]
    return doc.replace(placeholder, "\n".join(lines))


def _doc(cls):
    """Fill the shared parameter and attribute descriptions into a class docstring."""
    if cls.__doc__ is None:  # python -OO strips docstrings
        return cls
    doc = _fill(cls.__doc__, "%(common_params)s", _COMMON_PARAMS_DOC)
    cls.__doc__ = _fill(doc, "%(common_attributes)s", _COMMON_ATTRIBUTES_DOC)
    return cls


class _InverseProblemEstimator(SparseNoiseMixin, BaseDIPEstimator):
    """Shared parts: the noise-model option and layouts for outputs of a new shape."""

    _parameter_constraints: dict = {
        **BaseDIPEstimator._parameter_constraints,
        "noise_model": [StrOptions({"sparse"}), SparseNoise, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def _probe_operator(self, image, extra, make_inputs) -> list[np.ndarray] | None:
        """The forward model of one observation applied to ``make_inputs(shape)``
        (images of the reconstruction's ``(1, C, H, W)`` shape), as float64 arrays
        (complex128 for a model with complex output).

        On a copy, on the fitting device (a function may hold tensors there).
        None when the model fails: the fit itself reports what it cannot do.
        """
        device = getattr(self, "_device", torch.device("cpu"))
        try:
            operator, _, out_shape, channels = self._forward_problem(image, extra)
            operator = copy.deepcopy(operator).to(device)
            with torch.no_grad():
                outputs = [
                    operator(v.to(device)).cpu() for v in make_inputs((1, channels, *out_shape))
                ]
            return [(t.cdouble() if t.is_complex() else t.double()).numpy() for t in outputs]
        except Exception:
            return None

    def _predict_measurements(self, image, extra, reference):
        if self._measurement_is_the_image:
            if reference.shape != image.shape:
                return None
            if hasattr(self, "_observed"):  # placeholders under a mask say nothing
                return np.where(self._observed(image, extra), reference, np.nan)
            return reference
        _, _, out_shape, channels = self._forward_problem(image, extra)
        if reference.shape != (*out_shape, channels):
            # On the observation's grid (the field of view of a "valid" blur), the model
            # cannot be applied to it: a gain alone misjudged a blurred star field.
            return None
        probe = to_tensor(reference, torch.device("cpu"))
        outputs = self._probe_operator(image, extra, lambda shape: [probe, 2 * probe])
        if outputs is None or np.iscomplexobj(outputs[0]):
            return None
        once, twice = (o[0].transpose(1, 2, 0) for o in outputs)
        size = float(np.abs(once).max(initial=0.0))
        if size == 0 or float(np.abs(twice - 2 * once).max()) > 1e-4 * size:
            return None  # not linear: no single factor tells the scale
        # Entries the model never produces predict 0 and so weigh nothing.
        return once

    def _unmeasured(self, image, extra) -> np.ndarray | None:
        """Entries of the observation a linear forward model never produces, as an
        ``(h, w, c)`` boolean array (a PixelMask's hidden pixels); None when there
        are none, or when the model is not linear (or cannot be probed).

        They hold placeholders, not measurements: they must set neither the
        scale, nor the loss, nor the noise level a scorer estimates.
        """

        def inputs(shape):
            probe = torch.rand(shape, generator=torch.Generator().manual_seed(1))
            return 0 * probe, 0 * probe + 1, probe, 2 * probe

        outputs = self._probe_operator(image, extra, inputs)
        if outputs is None or outputs[0].shape[1:] != image.shape[2:] + image.shape[:2]:
            return None
        zero, one, x, twice_x = (out[0].transpose(1, 2, 0) for out in outputs)
        size = max(float(np.abs(x).max()), float(np.abs(one).max()), 1e-12)
        if np.abs(zero).max() > 1e-4 * size or np.abs(twice_x - 2 * x).max() > 2e-4 * size:
            return None
        # A linear model gives exactly 0 at an entry for both probes only where its
        # row is 0.
        unmeasured = (one == 0) & (x == 0)
        return unmeasured if unmeasured.any() and not unmeasured.all() else None

    def _scaling_values(self, image, extra):
        unmeasured = self._unmeasured(image, extra)
        # NaN in the image's shape, as DIPInpainter's: flattened, the values skipped the
        # test for content beyond [0, 1] (it measures the image's noise), so a masked
        # picture on [0, 1.2] was fitted as given and clipped at 1 by the sigmoid.
        return image if unmeasured is None else np.where(unmeasured, np.nan, image)

    def _sign_changing_operator(self, image, extra) -> tuple[ForwardOperator, tuple] | None:
        """The forward model (a copy on the fitting device) and the reconstruction's
        ``(1, C, H, W)`` shape when the model is linear and measures a positive image
        with both signs in substantial shares (a Fourier transform, a difference
        filter); None otherwise, or when it cannot be probed."""
        found = self._linear_operator(image, extra)
        if found is None:
            return None
        operator, shape, once = found
        negative, positive = float(-once.clamp(max=0).sum()), float(once.clamp(min=0).sum())
        if min(negative, positive) <= _SIGN_CHANGING_SHARE * max(negative, positive):
            return None  # one sign (a kernel of negative sum flips them all)
        return operator, shape

    def _linear_operator(self, image, extra) -> tuple[ForwardOperator, tuple, torch.Tensor] | None:
        """The forward model (a copy on the fitting device), the reconstruction's
        ``(1, C, H, W)`` shape and the model's measurement of a random positive
        image, when the model is linear; None otherwise, or when it cannot be probed."""
        device = getattr(self, "_device", torch.device("cpu"))
        try:
            operator, _, out_shape, channels = self._forward_problem(image, extra)
            operator = copy.deepcopy(operator).to(device)
            shape = (1, channels, *out_shape)
            probe = torch.rand(shape, generator=torch.Generator().manual_seed(2)).to(device)
            with torch.no_grad():
                zero, once, twice = (operator(v) for v in (0 * probe, probe, 2 * probe))
        except Exception:
            return None  # the fit itself reports what it cannot do
        # An operator returning no tensor (a tuple) failed here with "'tuple' object has
        # no attribute 'is_complex'"; the fit's own check names the operator.
        if (
            not all(torch.is_tensor(v) for v in (zero, once, twice))
            or once.is_complex()
            or tuple(once.shape[-2:]) != image.shape[:2]
        ):
            return None  # refused by the checks of the fit
        size = float(once.abs().max())
        if size == 0 or float(zero.abs().max()) > 1e-4 * size:
            return None
        if float((twice - 2 * once).abs().max()) > 2e-4 * size:
            return None  # not linear: the rescaling refuses it
        return operator, shape, once

    def _image_range(self, image, extra):
        # Such a model measures an image on [0, 1] on any range: there the scale comes
        # from an image estimated from the data, not from the data's range.
        found = self._sign_changing_operator(image, extra)
        if found is None and self._narrow_through_a_model(image, extra, _AUTO_STRETCH_SPAN):
            # Data spanning under 0.5 through a blur or a downsampling: a dim image
            # (1e-3 of a scanner's units) fitted as it was came back as noise (1.8 dB),
            # a low-contrast one 2.7 to 3.9 dB below its stretched fit, while a dim
            # star, its peak blurred 25 times lower, spans far more once estimated.
            # The estimate tells them apart.
            linear = self._linear_operator(image, extra)
            found = None if linear is None else linear[:2]
        if found is None:
            return None
        operator, shape = found
        try:
            values = np.nan_to_num(image)
            # The model is linear: solved for data near 1 and scaled back by a power of
            # two, exactly. At 1e-17 of [0, 1] the squares of the float32 steps fell
            # under the step's floor (output capped at 0.25 of the truth; at 1e19,
            # k-space's overflowed).
            peak = float(np.abs(values).max())
            unit = 2.0 ** round(np.log2(peak)) if 0 < peak < np.inf else 1.0
            data = to_tensor(values / unit, getattr(self, "_device", torch.device("cpu")))
            estimate = _least_squares_image(operator, data, shape) * unit
        except Exception:
            return None  # the fit itself reports what it cannot do
        finite = estimate[torch.isfinite(estimate)]
        if finite.numel() == 0:
            return None
        return float(finite.min()), float(finite.max()), float(finite.median())

    def _narrow_through_a_model(self, image, extra, span: float) -> bool:
        """Whether ``rescale="auto"`` sees data spanning under ``span`` through a model
        that does not measure the image's own pixels."""
        if self.rescale != "auto" or self._measures_own_pixels():
            return False
        values = self._scaling_values(image, extra)
        finite = values[np.isfinite(values)]
        return finite.size > 0 and 0 < float(np.ptp(finite)) < span

    def _auto_stretch_span(self, image, extra) -> float:
        # Through a blur or a downsampling, as where the pixels are the image's own
        # (measured: benchmarks/results/low_contrast_operators.md); through a model
        # whose measurements take both signs (k-space), 0.1, not measured wider.
        if self._measures_own_pixels() or (
            self.rescale == "auto" and self._sign_changing_operator(image, extra) is None
        ):
            return _AUTO_STRETCH_SPAN
        return _AUTO_RESCALE_MIN_SPAN

    def _constant_response(self, image, extra):
        # Constant images give the gain, a random one tests linearity.
        def inputs(shape):
            probe = torch.rand(shape, generator=torch.Generator().manual_seed(0))
            return 0 * probe, 0 * probe + 1, probe, 2 * probe

        outputs = self._probe_operator(image, extra, inputs)
        if outputs is None:
            return 1.0
        zero, one, x, twice_x = outputs
        size = max(float(np.abs(x).max()), float(np.abs(one).max()), 1e-12)
        if np.abs(zero).max() > 1e-4 * size or np.abs(twice_x - 2 * x).max() > 2e-4 * size:
            raise ValueError(
                f"{rescaling_reason(self.rescale)}, but the forward model is not linear, so "
                "the image cannot be rescaled with them. Bring the data near [0, 1] yourself "
                "and pass rescale=False."
            )
        if np.abs(one).max() <= 1e-6 * size:
            # A difference of Gaussians sums to 1e-8 in float32: the exact test missed
            # it, and the scale came out 6e8 with an estimate of -7e7.
            raise ValueError(ZERO_GAIN_MESSAGE.format(reason=rescaling_reason(self.rescale)))
        gain = float(one.mean())
        if abs(gain) > 1e-6 * size and np.abs(one - gain).max() <= 1e-4 * size:
            return gain
        return one[0].transpose(1, 2, 0)  # (h, w, c): the measurement's layout


# A linear model whose measurement of a random positive image has a part of one sign
# this large against the other's changes signs (a Fourier transform: about 1; an
# interpolating kernel with small negative lobes, such as Lanczos-2: about 0).
_SIGN_CHANGING_SHARE = 0.1
# Conjugate-gradient steps for the image that such a model's rescaling is read from: a
# sampled orthonormal Fourier transform needs one (its zero-filled image); a few more
# give a smooth estimate of an ill-conditioned model, cheap next to any fit.
# Few steps: CGLS semi-converges on noisy, ill-conditioned data (two coils, complex
# images), and at 25 steps its range was off by up to 5.7 (17 of 72 k-space cases off
# by more than 0.25); at 4 to 8 steps by at most 0.19 (benchmark in the commit).
_LEAST_SQUARES_STEPS = 8


def _least_squares_image(operator, data: torch.Tensor, shape) -> torch.Tensor:
    """An image ``x`` of ``shape`` with ``operator(x)`` near ``data``: conjugate
    gradients on the normal equations (CGLS) from 0, the adjoint taken by autograd
    (a user's linear function needs none of its own)."""

    def adjoint(v):
        x = torch.zeros(shape, dtype=v.dtype, device=v.device, requires_grad=True)
        (grad,) = torch.autograd.grad((operator(x) * v).sum(), x)
        return grad

    x = torch.zeros(shape, dtype=data.dtype, device=data.device)
    residual = data.clone()
    gradient = adjoint(residual)
    direction = gradient.clone()
    gamma = first = float(gradient.square().sum())
    for _ in range(_LEAST_SQUARES_STEPS):
        if gamma <= 1e-12 * first or gamma == 0:
            break
        with torch.no_grad():
            q = operator(direction)
        alpha = gamma / max(float(q.square().sum()), 1e-30)
        x = x + alpha * direction
        residual = residual - alpha * q
        gradient = adjoint(residual)
        previous, gamma = gamma, float(gradient.square().sum())
        direction = gradient + (gamma / previous) * direction
    return x.detach()


# --------------------------------------------------------------------------- generic


@_doc
class DIPReconstructor(_InverseProblemEstimator):
    """Deep Image Prior for any known forward model ``y = f(x) + noise``.

    The generator's output ``x = G_theta(z)`` is passed through the forward
    operator ``f`` and compared with the observation; the estimate of ``x``
    at the selected iteration is returned. The operator may change the
    shape: the image has the shape ``operator.input_shape(y_shape)`` unless
    ``output_shape`` is given, and ``output_channels`` channels.

    Parameters
    ----------
    operator : ForwardOperator, callable or None, default=None
        The measurement model: a :class:`~skdip.operators.ForwardOperator`
        (e.g. ``Downsample(2)``, ``Convolution(kernel)``,
        ``KSpaceSampling(mask)`` for MRI, with ``output_channels=1``,
        ``FunctionOperator(fn, ...)``) or a differentiable torch function of a
        ``(1, C, H, W)`` tensor (wrapped in ``FunctionOperator``; pass
        ``output_shape`` if it changes the shape). None is the identity
        (plain denoising). It is copied, never modified.
    output_shape : tuple of int or None, default=None
        ``(H, W)`` of the image to reconstruct. None asks the operator:
        ``operator.input_shape((h, w))`` of each observation.
    output_channels : int or None, default=None
        Channels of the image to reconstruct; None asks the operator:
        ``operator.input_channels(c)`` for an observation of ``c`` channels,
        which is ``c`` for most (:class:`~skdip.operators.KSpaceSampling`
        gives 1 for a real image, 2 for a complex one, whatever the coils;
        :class:`~skdip.operators.FourierMagnitude` ``c / n_patterns``; a
        :class:`~skdip.operators.FunctionOperator` its ``input_channels``).
    %(common_params)s

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The reconstructed image(s) of shape ``output_shape`` (channels last),
        in the layout of ``X`` (float32 for float32 ``X``, else float64); a
        2-D grey input gives a 2-D output when the reconstruction has one
        channel.
    %(common_attributes)s

    See Also
    --------
    DIPInpainter, DIPSuperResolver, DIPDeconvolver : ready-made operators.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPReconstructor
    >>> from skdip.operators import Downsample
    >>> low = np.tile(np.linspace(0, 1, 8), (8, 1))
    >>> est = DIPReconstructor(operator=Downsample(2, kernel="box"), generator="skip-small",
    ...                        max_iter=20, early_stopping=None, random_state=0)
    >>> est.fit_transform(low).shape
    (16, 16)
    """

    _parameter_constraints: dict = {
        **_InverseProblemEstimator._parameter_constraints,
        "operator": [ForwardOperator, callable, None],
        "output_shape": [tuple, list, None],
        "output_channels": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        operator=None,
        output_shape=None,
        output_channels=None,
        generator="skip",
        early_stopping="emv",
        max_iter: Int = 5000,
        lr: Float = 0.01,
        loss="mse",
        regularizer=None,
        noise_model=None,
        reg_noise_std: Float = 1.0 / 30.0,
        output_averaging: Float | None = None,
        rescale="auto",
        device="auto",
        random_state=None,
        verbose=False,
        callback=None,
        batch_size: Int = 1,
        n_jobs=None,
        warm_start: bool = False,
    ):
        self.operator = operator
        self.output_shape = output_shape
        self.output_channels = output_channels
        self.generator = generator
        self.early_stopping = early_stopping
        self.max_iter = max_iter
        self.lr = lr
        self.loss = loss
        self.regularizer = regularizer
        self.noise_model = noise_model
        self.reg_noise_std = reg_noise_std
        self.output_averaging = output_averaging
        self.rescale = rescale
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.warm_start = warm_start

    def _check_params(self) -> None:
        super()._check_params()
        # The items of a pair, which the constraints leave to this check.
        check_int_pair(
            self.output_shape,
            f"{type(self).__name__}.output_shape",
            allow_none=True,
            error=InvalidParameterError,
        )

    @property
    def _missing_pixels_hint(self) -> str:
        # NaN over the pixels a PixelMask does not observe, as DIPInpainter takes them,
        # was refused with "X contains NaN or infinity" alone.
        if not isinstance(self.operator, PixelMask):
            return ""
        return (
            "the PixelMask operator tells which pixels are observed: the others may hold "
            "any finite value, e.g. np.nan_to_num(X, nan=0.0); DIPInpainter reads NaN "
            "as missing pixels itself"
        )

    @property
    def _measurement_channels(self) -> int | None:
        # 8 coils on a 16x16 image are 16 k-space channels, as many as the image is
        # wide: warned of as a stack of grey images before.
        if not isinstance(self.operator, ForwardOperator):
            return None
        return self.operator._measurement_channels()

    def _operator(self) -> ForwardOperator:
        if self.operator is None:
            return Identity()
        if isinstance(self.operator, ForwardOperator):
            return self.operator
        return FunctionOperator(self.operator)

    def _check_solvable(self, image, extra, reference=None):
        # A user's operator may not map the reconstruction onto this observation:
        # found here for every image of a batch, not after the earlier images' fits.
        outputs = self._probe_operator(
            image, extra, lambda shape: [torch.zeros(shape), torch.full(shape, 0.5)]
        )
        if outputs is not None:
            predicted = outputs[0]
            if np.iscomplexobj(predicted):
                raise ValueError(COMPLEX_OUTPUT_MESSAGE)
            if predicted.ndim != 4:
                raise ValueError(
                    "the forward operator must return a (B, C, h, w) tensor, got shape "
                    f"{tuple(predicted.shape)}"
                )
            if tuple(predicted.shape[-2:]) != image.shape[:2]:
                _, _, out_shape, _ = self._forward_problem(image, extra)
                source = (
                    f"output_shape={tuple(self.output_shape)!r}"
                    if self.output_shape is not None
                    else "the operator's input_shape for the observation's shape; pass "
                    "output_shape if that is not the image's shape"
                )
                raise ValueError(
                    f"the model predicts measurements of shape {tuple(predicted.shape[-2:])} "
                    f"from an image of shape {out_shape} ({source}), but the observation has "
                    f"shape {image.shape[:2]}; check the forward operator"
                )
            if predicted.shape[1] != image.shape[2]:
                source = (
                    f"output_channels={self.output_channels}"
                    if self.output_channels is not None
                    else "the operator's input_channels for the observation's when "
                    "output_channels is None"
                )
                hint = "check the forward operator"
                operator = self._operator()
                expected = operator.input_channels(image.shape[2])
                # With a built-in operator the mistake is output_channels: a colour
                # output_channels=3 for a grey observation was told to check the operator
                # only. (A function's input_channels is a default, not a fact, unless its
                # FunctionOperator declares it.)
                declared = not isinstance(operator, FunctionOperator) or (
                    operator.input_channels_rule is not None
                )
                if (
                    self.output_channels is not None
                    and expected != self.output_channels
                    and declared
                ):
                    hint = (
                        f"{type(operator).__name__} takes {expected} channel(s) for this "
                        f"observation: pass output_channels={expected}, or None to read it "
                        "from the operator"
                    )
                raise ValueError(
                    f"the model predicts measurements with {predicted.shape[1]} channel(s) from "
                    f"an image with {self._forward_problem(image, extra)[3]} ({source}), but the "
                    f"observation has {image.shape[2]}; {hint}"
                )
            # Of a mid-grey image: the zero image is no output of a network, and some
            # models (a logarithm, a normalisation) are undefined there only.
            if not np.isfinite(outputs[1]).all():
                raise ValueError(
                    "the forward operator gives NaN or infinite measurements of a constant "
                    "image (0.5 everywhere); no step could be fitted through it"
                )
            # Before the rescaling, whose own error on uncentred k-space named kernels.
            for problem in self._operator()._measurement_problems(image):
                warn(f"{type(self).__name__}: {problem}.", UserWarning)
            level = float(np.abs(image[np.isfinite(image)]).max(initial=0.0))
            if (
                0 < level < _AUTO_RESCALE_MIN_SPAN
                and self._narrow_through_a_model(image, extra, _AUTO_RESCALE_MIN_SPAN)
                and self._linear_operator(image, extra) is None
            ):
                # Wide data through such a model is refused; dim data was fitted as given,
                # its image far below the network's [0, 1] (sqrt(x) at 1e-6: 5.6 dB). The
                # level, not the span: low-contrast data near 0.5 is no dim image.
                warn(
                    f"{type(self).__name__}: the data reach only {level:.3g}, and through a "
                    "forward model that is not linear rescale='auto' cannot set the image's "
                    "scale: it is fitted as given, and an image far below [0, 1] fits poorly. "
                    "Bring the data, and the model with it, to units where the image spans "
                    "about [0, 1].",
                    UserWarning,
                )
        return super()._check_solvable(image, extra, reference)  # the rescaling probes too

    def _measures_own_pixels(self) -> bool:
        # Through the identity or a mask the measured pixels are the image's own:
        # rescaled as DIPDenoiser and DIPInpainter do.
        return self._measurement_is_the_image or bool(
            getattr(self._operator(), "measures_pixels", False)
        )

    def _forward_problem(self, image, extra):
        operator = self._operator()
        observed_shape = image.shape[:2]
        if self.output_shape is not None:
            out_shape = tuple(int(s) for s in self.output_shape)
        else:
            out_shape = operator.input_shape(observed_shape)
        channels = (
            self.output_channels
            if self.output_channels is not None
            else operator.input_channels(image.shape[2])
        )
        return operator, image, out_shape, int(channels)

    def _make_model(self, image, extra, seed, device):
        model, target, fit_kwargs = super()._make_model(image, extra, seed, device)
        unmeasured = self._unmeasured(image, extra)
        if unmeasured is not None:
            # The model predicts 0 there: a placeholder would add a constant misfit
            # to the loss (and to the score read from it).
            target = target.masked_fill(to_tensor(unmeasured, device, torch.bool), 0.0)
        return model, target, fit_kwargs

    def _finish(self, estimate, result, image, extra):
        out = super()._finish(estimate, result, image, extra)
        unmeasured = self._unmeasured(image, extra)
        if unmeasured is not None:
            out["measured"] = ~unmeasured  # for the scorers, as an inpainter's mask
        if self._sign_changing_operator(image, extra) is not None:
            # For the scorers: such a measurement (k-space) is no image, and the noise
            # level read from it as from an image is wrong.
            out["measurement_is_no_image"] = True
        noise = self._operator()._noise_sigma(image)
        if noise != (None, ""):
            # For the scorers: the level the model reads from its own measurement
            # (k-space's redundancy), that of the operator this fit ran with.
            out["measurement_noise"] = noise
        return out


# --------------------------------------------------------------------------- inpainting


def _check_mask(mask, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Validate one image's mask; return it as a boolean ``(H, W, C)`` array."""
    if scipy.sparse.issparse(mask):
        raise TypeError("mask is a sparse matrix; pass a dense array (mask.toarray())")
    arr = metric_array(mask, "mask")
    if np.iscomplexobj(arr):
        raise TypeError("mask must be a boolean or 0/1 real array, got complex values")
    if arr.dtype.kind not in "biuf":  # by kind: NumPy counts timedelta64 as a number
        raise TypeError(f"mask must be a boolean or 0/1 numeric array, got dtype {arr.dtype}")
    h, w, c = image_shape
    # A batch of one may hand its single mask with a leading axis of length 1.
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    elif arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[1:] == (h, w):
        if not (arr.shape[:2] == (h, w) and arr.shape[2] in (1, c)):
            arr = arr[0]
    if arr.ndim == 2 and arr.shape == (h, w):
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[:2] != (h, w) or arr.shape[2] not in (1, c):
        expected = f"({h}, {w})" + (f" or ({h}, {w}, {c})" if c > 1 else "")
        # A batch splits its mask along the first axis: one (H, W) mask for several
        # images arrives here as its rows.
        hint = (
            "; for several images pass one mask per image (an (N, H, W) array or a list)"
            if arr.ndim < 2
            else ""
        )
        raise ValueError(f"mask has shape {np.shape(mask)} but the image needs {expected}{hint}")
    if arr.dtype != bool:
        if not np.isfinite(arr).all():
            raise ValueError("mask contains NaN or infinity")
        if not np.isin(arr, (0, 1)).all():
            values = np.unique(arr)
            shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if values.size > 4 else "")
            raise ValueError(
                f"mask must contain only 0/1 (or False/True) values, got {shown}; for a "
                "mask saved as an 8-bit picture (0/255) pass mask > 0"
            )
        arr = arr.astype(bool)
    return np.broadcast_to(arr, (h, w, c))


@_doc
class DIPInpainter(_InverseProblemEstimator, auto_wrap_output_keys=None):
    """Fill in missing pixels with a Deep Image Prior.

    The loss compares the generator's output with the observation on the
    observed pixels only (``y = m * x``); the network's structure fills the
    holes. Missing pixels are marked as NaN in ``X`` (the scikit-learn
    convention, as for ``SimpleImputer``), as the masked values of a NumPy
    masked array, or by a boolean ``mask`` passed to :meth:`fit` (True =
    observed, the reverse of :func:`skimage.restoration.inpaint_biharmonic`'s
    mask: pass ``~mask`` for one of those), or together: a value is observed
    only if all say so. A 2-D
    mask is shared by all channels; a 3-D ``(H, W, C)`` mask gives each its
    own. A channel with no observed value is refused.

    ``mask`` is a per-image fit parameter: for a batch ``(N, H, W, C)`` pass
    ``(N, H, W)`` or ``(N, H, W, C)`` masks (or a list), which
    ``GridSearchCV`` slices with the images. ``transform(X)`` and
    ``score(X, y)`` given the fitted ``X`` without a mask reuse the fitted
    result and its mask (so that a grid search can score without the mask).

    Parameters
    ----------
    keep_observed : bool, default=True
        Put the observed values back into the returned image (only the holes
        come from the network). False returns the network's output
        everywhere, which also smooths the observed pixels. With a
        ``noise_model`` the values put back are the observed ones less the
        fitted sparse noise (``sparse_noise_``), so impulses do not return.
    %(common_params)s

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The full image(s) with the holes filled, in the layout and float
        dtype of ``X``.
    mask_ : ndarray or list of ndarray
        The boolean mask of observed values that was used (NaN and ``mask``
        combined): ``(H, W)`` when every channel shares it, else ``(H, W, C)``.
    %(common_attributes)s

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPInpainter
    >>> image = np.tile(np.linspace(0, 1, 16), (16, 1))
    >>> image[4:8, 4:8] = np.nan  # the hole
    >>> inp = DIPInpainter(generator="skip-small", max_iter=20, early_stopping=None,
    ...                    random_state=0)
    >>> filled = inp.fit_transform(image)
    >>> bool(np.isfinite(filled).all()), bool(inp.mask_[5, 5]), bool(inp.mask_[0, 0])
    (True, False, True)
    """

    _parameter_constraints: dict = {
        **_InverseProblemEstimator._parameter_constraints,
        "keep_observed": ["boolean"],
    }
    _allow_nan = True
    _measurement_is_the_image = True  # the observed pixels are the image's own
    _fit_param_names = ("mask",)

    def __init__(
        self,
        keep_observed: bool = True,
        generator="skip",
        early_stopping="emv",
        max_iter: Int = 5000,
        lr: Float = 0.01,
        loss="mse",
        regularizer=None,
        noise_model=None,
        reg_noise_std: Float = 1.0 / 30.0,
        output_averaging: Float | None = None,
        rescale="auto",
        device="auto",
        random_state=None,
        verbose=False,
        callback=None,
        batch_size: Int = 1,
        n_jobs=None,
        warm_start: bool = False,
    ):
        self.keep_observed = keep_observed
        self.generator = generator
        self.early_stopping = early_stopping
        self.max_iter = max_iter
        self.lr = lr
        self.loss = loss
        self.regularizer = regularizer
        self.noise_model = noise_model
        self.reg_noise_std = reg_noise_std
        self.output_averaging = output_averaging
        self.rescale = rescale
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.warm_start = warm_start

    # mask named in fit, transform and score (not **fit_params, as in the base class,
    # which a type checker reads as a narrower signature): scikit-learn's metadata
    # routing offers set_fit_request / set_transform_request / set_score_request only
    # for named parameters.
    def fit(  # type: ignore[override]
        self: _Estimator, X: Any, y: Any = None, mask: Any = None
    ) -> _Estimator:
        """Fit the network to the observed pixels of ``X``.

        Parameters
        ----------
        X : array-like
            Image ``(H, W)`` / ``(H, W, C)``, batch ``(N, H, W, C)`` or list of
            images; NaN marks missing values.
        y : array-like, optional
            Clean references, used only to record the PSNR of every iterate.
        mask : array-like or list of array-like, optional
            True (or 1) where a value is observed; ``(H, W)`` or
            ``(H, W, C)`` per image. A mask under which every observed value
            of a channel is the same while the hidden ones vary is warned of
            as likely inverted (scikit-image's masks mark the pixels to fill).

        Returns
        -------
        self : DIPInpainter
        """
        return super().fit(X, y, mask=mask)

    def transform(  # type: ignore[override]
        self, X: Any = None, mask: Any = None
    ) -> Any:
        """Return the reconstruction.

        Parameters
        ----------
        X : array-like, optional
            None or the fitted observation(s): the fitted reconstruction. Other
            data is solved from scratch, as described for
            :meth:`BaseDIPEstimator.transform`.
        mask : array-like or list of array-like, optional
            The masks of new data, as in :meth:`fit`.

        Returns
        -------
        X_hat : ndarray or list of ndarray
        """
        return super().transform(X, mask=mask)

    def score(  # type: ignore[override]
        self, X: Any, y: Any = None, mask: Any = None
    ) -> float:
        """PSNR against clean ``y``, or the no-reference score without it.

        Parameters
        ----------
        X : array-like
            Observation(s); the fitted ones reuse the fit.
        y : array-like, optional
            Clean references.
        mask : array-like or list of array-like, optional
            The masks of new data, as in :meth:`fit`.

        Returns
        -------
        score : float
        """
        return super().score(X, y, mask=mask)

    def _observed(self, image: np.ndarray, extra: dict) -> np.ndarray:
        observed = ~np.isnan(image)
        if extra.get("mask") is not None:
            observed = observed & _check_mask(extra["mask"], image.shape)
        if not observed.any():
            raise ValueError("an image has no observed value (its mask and NaNs hide everything)")
        empty = [c for c in range(observed.shape[2]) if not observed[..., c].any()]
        if empty:
            # Nothing would tie that channel to the data: the network's output there is
            # returned as if it were a reconstruction.
            raise ValueError(
                f"channel(s) {empty} of an image have no observed value (its mask and NaNs hide "
                "them entirely), so nothing constrains them; to fill in whole channels from "
                "the others, use DIPReconstructor with an operator that measures the observed "
                "channels"
            )
        return observed

    def _check_solvable(self, image, extra, reference=None):
        scaling = super()._check_solvable(image, extra, reference)
        observed = self._observed(image, extra)
        if observed.all():
            # A forgotten mask (holes stored as 0): the whole fit would run and, with
            # keep_observed, hand X back unchanged.
            warn(
                "DIPInpainter: nothing is missing in this image (no NaN, no masked value, "
                "and no mask hiding a pixel), so there is nothing to fill: "
                + (
                    "with keep_observed=True the fit returns X unchanged. "
                    if self.keep_observed
                    else "the fit only denoises X (DIPDenoiser does that). "
                )
                + "Mark the missing values as NaN, with a masked array, or with mask= "
                "(True where a value is observed).",
                UserWarning,
            )
            return scaling
        for c in range(image.shape[2]):
            problem = _inverted_mask_problem(image[..., c], observed[..., c])
            if problem:
                # A damaged area given as the mask, scikit-image's way (True = to fill):
                # the fit would keep the damage and redraw the rest.
                source = (
                    "The mask is True where a value is observed, the reverse of "
                    "scikit-image's inpaint_biharmonic (True = to fill): if it marks the "
                    "damaged pixels, pass ~mask."
                    if extra.get("mask") is not None
                    else "NaN and masked values are the missing ones (a masked array hides "
                    "where its mask is True): if they mark the pixels you have, invert "
                    "that mask."
                )
                warn(f"DIPInpainter: in channel {c}, {problem}. {source}", UserWarning)
                break
        return scaling

    def _scaling_values(self, image, extra):
        # Values hidden by a mask (placeholders, overlays) must not set the scale: NaN,
        # in the image's shape (flattened, the test for content beyond [0, 1], which
        # needs the image to measure its noise, never ran: a picture on [-0.2, 1.2]
        # was fitted as given and clipped by the sigmoid).
        return np.where(self._observed(image, extra), image, np.nan)

    def _constant_response(self, image, extra):
        return 1.0  # the observed pixels are the image's own

    @staticmethod
    def _shared_mask(observed: np.ndarray) -> bool:
        return bool((observed == observed[..., :1]).all())

    def _batch_key(self, image, extra):
        # A mask shared by the channels is (H, W), another (H, W, C): not stackable.
        return (*image.shape, self._shared_mask(self._observed(image, extra)))

    def _forward_problem(self, image, extra):
        observed = self._observed(image, extra)
        shared = self._shared_mask(observed)
        operator = PixelMask(observed[..., 0] if shared else observed)
        target = np.where(observed, image, 0.0)
        return operator, target, image.shape[:2], image.shape[2]

    def _finish(self, estimate, result, image, extra):
        out = super()._finish(estimate, result, image, extra)
        observed = self._observed(image, extra)
        if self.keep_observed:
            filled = np.array(estimate, copy=True)
            # With a noise model the observation holds impulses: what is kept is the
            # observation less its fitted sparse part, not the impulses themselves.
            kept = image if "sparse_noise" not in out else image - out["sparse_noise"]
            filled[observed] = kept[observed]
            out["estimate"] = filled
        shared = bool((observed == observed[..., :1]).all())
        out["mask"] = np.array(observed[..., 0] if shared else observed)
        out["measured"] = observed
        return out


def _inverted_mask_problem(channel: np.ndarray, observed: np.ndarray) -> str:
    """Why the pixels marked observed in one channel look like the damaged ones ("" if not).

    The damaged area of a picture is usually one value (0, a fill colour), perhaps
    with some noise or a JPEG round-trip on it, and usually the smaller part.
    """
    seen = channel[observed]
    n_hidden = int(np.count_nonzero(~observed))
    hidden = channel[~observed & np.isfinite(channel)]
    if seen.size < 2 or n_hidden < 2:
        return ""
    if np.ptp(seen) == 0:
        if hidden.size > 1 and np.ptp(hidden) > 0:
            return f"every value marked as observed is {seen[0]:g}, while the hidden ones vary"
        if hidden.size == 0 and seen.size < n_hidden:
            return (
                f"every value marked as observed is {seen[0]:g}, and they are the smaller "
                f"part ({seen.size} of {seen.size + n_hidden}): the fit would be flat"
            )
        return ""
    if hidden.size < 2 or seen.size >= n_hidden:
        return ""
    # Noise or compression on a filled area: nearly one value, against the picture's
    # spread. Only where the observed part is the smaller one, so that a flat
    # background around a hidden object is not taken for damage.
    spread_seen, spread_hidden = float(np.std(seen)), float(np.std(hidden))
    span = float(np.ptp(np.concatenate([seen, hidden])))
    if spread_seen <= _INVERTED_SPREAD_RATIO * spread_hidden and spread_seen <= 0.02 * span:
        return (
            f"the values marked as observed vary {spread_hidden / spread_seen:.0f} times less "
            f"than the hidden ones (standard deviation {spread_seen:.3g} against "
            f"{spread_hidden:.3g}), as a filled damaged area does, and they are the smaller part "
            f"({seen.size} of {seen.size + n_hidden})"
        )
    return ""


# Observed values spreading at most this fraction of the hidden ones' look like a filled
# damaged area (noise 0.01 or a JPEG round-trip on a zero fill: see the tests).
_INVERTED_SPREAD_RATIO = 0.1


# ----------------------------------------------------------------------- super-resolution


@_doc
class DIPSuperResolver(_InverseProblemEstimator):
    """Upsample images by an integer factor with a Deep Image Prior.

    The generator produces the high-resolution image ``x``; its
    anti-aliased downsampling ``D(x)`` (a Lanczos-2 filter, as in the DIP
    paper) is fitted to the low-resolution observation. ``fit(low_res)``
    then ``transform()`` returns the ``(H * scale, W * scale)`` image.
    Low-resolution pixel ``i`` is taken at the centre of high-resolution
    block ``i`` (pixels ``scale * i`` to ``scale * i + scale - 1``), as
    :func:`skimage.transform.rescale` and ``resize`` place it; an image
    decimated as ``high[::scale, ::scale]`` samples pixel ``scale * i``
    instead, and comes back shifted by ``(scale - 1) / 2`` pixels (one for
    ``scale=3``, half a pixel for 2).

    Parameters
    ----------
    scale : int, default=4
        Upsampling factor.
    kernel : {"lanczos2", "bicubic", "box"}, default="lanczos2"
        Anti-aliasing filter of the downsampling model
        (:class:`~skdip.operators.Downsample`); choose the one that produced
        the low-resolution image if it is known.
    %(common_params)s

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The high-resolution image(s), in the layout of ``X`` (float32 for
        float32 ``X``, else float64).
    %(common_attributes)s

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPSuperResolver
    >>> low = np.tile(np.linspace(0, 1, 8), (8, 1))
    >>> sr = DIPSuperResolver(scale=2, generator="skip-small", max_iter=20,
    ...                       early_stopping=None, random_state=0)
    >>> sr.fit(low).transform().shape
    (16, 16)
    """

    _parameter_constraints: dict = {
        **_InverseProblemEstimator._parameter_constraints,
        "scale": [Interval(Integral, 1, None, closed="left")],
        "kernel": [StrOptions({"lanczos2", "bicubic", "box"})],
    }

    def __init__(
        self,
        scale: Int = 4,
        kernel: str = "lanczos2",
        generator="skip",
        early_stopping="emv",
        max_iter: Int = 5000,
        lr: Float = 0.01,
        loss="mse",
        regularizer=None,
        noise_model=None,
        reg_noise_std: Float = 1.0 / 30.0,
        output_averaging: Float | None = None,
        rescale="auto",
        device="auto",
        random_state=None,
        verbose=False,
        callback=None,
        batch_size: Int = 1,
        n_jobs=None,
        warm_start: bool = False,
    ):
        self.scale = scale
        self.kernel = kernel
        self.generator = generator
        self.early_stopping = early_stopping
        self.max_iter = max_iter
        self.lr = lr
        self.loss = loss
        self.regularizer = regularizer
        self.noise_model = noise_model
        self.reg_noise_std = reg_noise_std
        self.output_averaging = output_averaging
        self.rescale = rescale
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.warm_start = warm_start

    def _forward_problem(self, image, extra):
        operator = Downsample(int(self.scale), kernel=self.kernel)
        out_shape = operator.input_shape(image.shape[:2])
        return operator, image, out_shape, image.shape[2]


# ---------------------------------------------------------------------------- deblurring


class _CroppedEstimate(nn.Module):
    """Report a window of the model's estimate; the prediction still uses all of it."""

    def __init__(self, model: nn.Module, window: tuple[int, int, int, int]):
        super().__init__()
        self.model = model
        self.window = window

    def forward(self, rng: torch.Generator | None = None):
        estimate, prediction = self.model(rng)
        top, left, h, w = self.window
        return estimate[..., top : top + h, left : left + w], prediction


@_doc
class DIPDeconvolver(_InverseProblemEstimator):
    """Non-blind deblurring: invert a known blur with a Deep Image Prior.

    The generator's output is blurred by the given kernel and fitted to the
    blurred, noisy observation, so the network's prior both sharpens and
    denoises. The returned image always has the observation's shape and is
    aligned with it.

    Parameters
    ----------
    kernel : array-like of shape (kh, kw), default=None
        The blur kernel (a true convolution, as ``scipy.signal.convolve2d``),
        shared by all channels. Required: ``fit`` refuses None (the default
        only lets ``DIPDeconvolver()`` be made first, as scikit-learn's
        ``clone`` does). It is used as given: make it sum to
        1 to keep the mean intensity. Each image pixel lines up with the
        kernel's pixel ``((kh - 1) // 2, (kw - 1) // 2)``, as in
        ``scipy.signal.convolve2d(..., mode="same")``; a kernel whose centre of
        mass lies over a pixel from it is warned of (the image comes back
        shifted). For kernels of even size ``scipy.ndimage.convolve`` takes
        ``(kh // 2, kw // 2)`` instead: data blurred that way comes back one
        pixel off.
    boundary : {"circular", "valid"}, default="circular"
        The blur's border model. ``"circular"``: the scene is periodic and the
        estimate has the observation's size; an observation whose opposite
        borders jump far more than its neighbouring rows or columns is
        warned of (it looks cut from a larger scene, not periodic). ``"valid"`` (more realistic for
        real photographs): the observation only contains the positions where
        the whole kernel lies inside the scene, so the network generates a
        scene larger by ``(kh - 1, kw - 1)``; the returned image is the
        window of that scene aligned with the observed pixels (the scene
        pixel under the kernel's centre ``((kh - 1) // 2, (kw - 1) // 2)``),
        of the observation's shape. The margin outside the window is
        constrained only by part of the kernel and is not returned.
    %(common_params)s

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The deblurred image(s), shaped and aligned like ``X``.
    %(common_attributes)s

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPDeconvolver
    >>> blurred = np.tile(np.linspace(0, 1, 16), (16, 1))
    >>> dec = DIPDeconvolver(kernel=np.ones((3, 3)) / 9, boundary="valid",
    ...                      generator="skip-small", max_iter=20, early_stopping=None,
    ...                      random_state=0)
    >>> dec.fit_transform(blurred).shape
    (16, 16)
    """

    _parameter_constraints: dict = {
        **_InverseProblemEstimator._parameter_constraints,
        "kernel": ["array-like", ArrayInterface, None],
        "boundary": [StrOptions({"circular", "valid"})],
    }

    def __init__(
        self,
        kernel=None,
        boundary: str = "circular",
        generator="skip",
        early_stopping="emv",
        max_iter: Int = 5000,
        lr: Float = 0.01,
        loss="mse",
        regularizer=None,
        noise_model=None,
        reg_noise_std: Float = 1.0 / 30.0,
        output_averaging: Float | None = None,
        rescale="auto",
        device="auto",
        random_state=None,
        verbose=False,
        callback=None,
        batch_size: Int = 1,
        n_jobs=None,
        warm_start: bool = False,
    ):
        self.kernel = kernel
        self.boundary = boundary
        self.generator = generator
        self.early_stopping = early_stopping
        self.max_iter = max_iter
        self.lr = lr
        self.loss = loss
        self.regularizer = regularizer
        self.noise_model = noise_model
        self.reg_noise_std = reg_noise_std
        self.output_averaging = output_averaging
        self.rescale = rescale
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.warm_start = warm_start

    def _check_params(self) -> None:
        super()._check_params()
        if self.kernel is None:
            raise ValueError("DIPDeconvolver needs the blur kernel: pass kernel=<2-D array>")
        if self.boundary == "valid" and self.batch_size > 1:
            # Refused whatever the data, before any fit: it was found after the
            # first batch's fits, which were lost.
            raise ValueError(
                "DIPDeconvolver: batch_size > 1 is not available with boundary='valid' (its "
                "model crops the scene it generates, which a batched run cannot stack); use "
                "batch_size=1, or boundary='circular'"
            )
        # Refused as this estimator's parameter, not as the Convolution's it builds.
        _check_kernel(self.kernel, type(self).__name__)
        convolution = self._convolution()
        self._check_kernel_centre(convolution.kernel.double().numpy())
        total = float(convolution.kernel.double().sum())
        if total < 0:
            # Fitted as given, it explains positive data by a negative image.
            warn(
                f"the kernel sums to {total:.3g} < 0, while a blur kernel sums to a positive "
                "number (1 keeps the brightness): under it, the image that explains positive "
                "data is negative. Check its sign.",
                UserWarning,
            )
        elif total > 0 and not 0.5 <= total <= 2:
            # A measured PSF as recorded (a uint8 image of it sums to its counts):
            # fitted as given, the image came back that many times too dark (5.1 dB).
            warn(
                f"the kernel sums to {total:.3g}, while a blur that keeps the brightness "
                "sums to 1: the model multiplies the image's level by that much, so the "
                "reconstruction's level comes out divided by it. Normalise it "
                "(kernel / kernel.sum()) unless the measurement has that gain.",
                UserWarning,
            )

    def _check_solvable(self, image, extra, reference=None):
        scaling = super()._check_solvable(image, extra, reference)
        for problem in self._convolution()._measurement_problems(image):
            # A photograph fitted as periodic rang from its borders, silently.
            warn(f"{type(self).__name__}: {problem}.", UserWarning)
        return scaling

    def _check_kernel_centre(self, kernel: np.ndarray) -> None:
        """Warn when a non-negative kernel's centre of mass lies over a pixel from its
        centre pixel: the image comes back shifted by that much (a measured PSF cut
        off-centre shifted the result by (-2, +1), silently)."""
        if kernel.min() < 0 or not kernel.sum() > 0:
            return
        rows, cols = np.indices(kernel.shape)
        mass = kernel / kernel.sum()
        offset = (
            float((mass * rows).sum()) - (kernel.shape[0] - 1) // 2,
            float((mass * cols).sum()) - (kernel.shape[1] - 1) // 2,
        )
        if max(abs(v) for v in offset) > 1:
            warn(
                f"the kernel's centre of mass lies ({offset[0]:+.2f}, {offset[1]:+.2f}) "
                "pixels from its centre pixel ((kh - 1) // 2, (kw - 1) // 2), which the "
                "convolution aligns each image pixel with: the reconstruction comes back "
                "shifted by about that much. Centre the kernel (e.g. crop it around its "
                "centre of mass) unless that shift is meant.",
                UserWarning,
            )

    def _convolution(self) -> Convolution:
        # Built from the current parameters each time: a copy kept from the last
        # fit would outlive set_params (the shape checks of score read it).
        return Convolution(self.kernel, boundary=self.boundary)

    def _forward_problem(self, image, extra):
        operator = self._convolution()
        out_shape = operator.input_shape(image.shape[:2])
        return operator, image, out_shape, image.shape[2]

    @property
    def _observes_a_valid_blur(self) -> bool:
        return self.boundary == "valid"

    def _scene_window_start(self, kh: int, kw: int) -> tuple[int, int]:
        # The window _make_model crops: under the centre pixel ((kh - 1) // 2, ...), at
        # kh - 1 - (kh - 1) // 2 = kh // 2. The base's (kh - 1) // 2 named a crop one
        # pixel off for even kernels (4x4: y[1:22] for the window y[2:23], 16.6 dB).
        return kh - 1 - (kh - 1) // 2, kw - 1 - (kw - 1) // 2

    def _reconstruction_shape(self, image, extra):
        shape = super()._reconstruction_shape(image, extra)
        # "valid": the estimate is cropped back to the observation's field of view.
        return (*image.shape[:2], shape[2]) if self.boundary == "valid" else shape

    def _make_model(self, image, extra, seed, device):
        model, target, fit_kwargs = super()._make_model(image, extra, seed, device)
        if self.boundary == "valid":
            kh, kw = self._convolution().kernel_size
            h, w = image.shape[:2]
            model = _CroppedEstimate(model, (*self._scene_window_start(kh, kw), h, w))
        return model, target, fit_kwargs
