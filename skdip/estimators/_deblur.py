"""Blind deblurring with a double Deep Image Prior (image and kernel generators)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from .._engine import _psnr
from .._typing import Float, Int
from .._validation import InvalidParameterError, check_int_pair, to_numpy, to_tensor
from ..losses import BaseRegularizer, GradientRatio, TotalVariation
from ..operators._convolution import convolve
from ._base import (
    _AUTO_STRETCH_SPAN,
    BaseDIPEstimator,
    checked_generator,
    fitted_scaling,
    image_callback,
    input_noise_std,
)

__all__ = ["BlindDeblurrer"]

# The over-specified kernel size used when ``kernel_size=None``: about a quarter of the
# shorter image side, odd, between these bounds.
_MIN_AUTO_KERNEL = 3
_MAX_AUTO_KERNEL = 65
# Default regularizer weights. The gradient of the l1/l2 gradient ratio with respect to a
# pixel is of order 1 / ||grad x||_2, about 1 / sqrt(C H' W'), while that of the (mean) MSE
# is of order 1 / (C H' W'): the "ratio" weight is therefore c / sqrt(C H' W') for the
# generated H' x W' image of C channels, so that the balance does not depend on the size or
# the channels (c = 8e-4 gives 1e-5 for a grey 64x64 observation with its default 17x17
# kernel, the best of the values tried in tuning, on grey pictures).
_RATIO_WEIGHT = 8e-4
_TV_WEIGHT = 1e-3
# Rows/columns of the estimated kernel whose largest entry is below this fraction of the
# kernel's maximum are treated as empty when cropping ``kernel_`` to its support.
_SUPPORT_THRESHOLD = 0.02


def auto_kernel_size(height: int, width: int) -> int:
    """The kernel size assumed when none is given: odd, about ``min(H, W) / 4``, in [3, 65].

    It never exceeds the image (a 2-pixel-wide image gets 1).
    """
    side = min(height, width)
    size = min(max(2 * (side // 8) + 1, _MIN_AUTO_KERNEL), _MAX_AUTO_KERNEL)
    return int(min(size, side if side % 2 else side - 1))


class _KernelMLP(nn.Module):
    """Kernel generator: an MLP on a fixed random code, softmax output.

    ``Linear(code -> hidden) -> ReLU6 -> Linear(hidden -> kh*kw) -> softmax``:
    the softmax makes the kernel non-negative and sum to one by construction.
    ``init="uniform"`` keeps the default initialisation, whose first kernel is
    nearly uniform over the window (as in SelfDeblur); ``"gaussian"`` sets the
    output bias so that it is a centred Gaussian.
    """

    def __init__(
        self,
        kernel_shape: tuple[int, int],
        init: str = "gaussian",
        code_size: int = 200,
        hidden: int = 1000,
    ):
        super().__init__()
        self.kernel_shape = kernel_shape
        # A small uniform code, as for the image generator's input.
        self.register_buffer("input", torch.rand(1, code_size) * 0.1)
        self.body = nn.Sequential(
            nn.Linear(code_size, hidden),
            nn.ReLU6(),
            nn.Linear(hidden, kernel_shape[0] * kernel_shape[1]),
        )
        if init == "gaussian":
            # Start from a centred Gaussian whose +-3 sigma spans the window (the random
            # weights add logits of about +-0.3): a moderate blur whatever the window size.
            kh, kw = kernel_shape
            ry = (torch.arange(kh) - (kh - 1) / 2) / (kh / 6)
            rx = (torch.arange(kw) - (kw - 1) / 2) / (kw / 6)
            with torch.no_grad():
                self.body[-1].bias.copy_((-0.5 * (ry[:, None] ** 2 + rx[None, :] ** 2)).flatten())

    def forward(self) -> torch.Tensor:
        logits = self.body(self.input)
        return torch.softmax(logits, dim=-1).reshape(self.kernel_shape)


class _DoubleDIPModel(nn.Module):
    """``x = G_x(z_x + noise)``, ``k = G_k(z_k)``, prediction ``k * x`` ('valid').

    The image is generated on the grid ``(H + kh - 1, W + kw - 1)`` so that the
    valid convolution explains every observed pixel. The engine tracks a single
    tensor per iterate (for early stopping, averaging and the returned estimate),
    so the kernel travels with the image: the estimate is the image with one
    extra channel holding the kernel, zero-padded to the image grid (see
    :func:`_unpack`). Averaging then averages image and kernel together, and the
    selected iterate carries its own kernel.
    """

    def __init__(self, image_net: nn.Module, kernel_net: _KernelMLP, input_noise_std: float):
        super().__init__()
        self.image_net = image_net
        self.kernel_net = kernel_net
        self.input_noise_std = float(input_noise_std)

    def forward(self, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.image_net.input
        if rng is not None and self.input_noise_std > 0:
            noise = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
            z = z + self.input_noise_std * noise
        x = self.image_net(z)
        k = self.kernel_net()
        prediction = convolve(x, k, boundary="valid")
        hp, wp = x.shape[-2:]
        kh, kw = k.shape
        plane = F.pad(k, (0, wp - kw, 0, hp - kh)).reshape(1, 1, hp, wp).to(x.dtype)
        return torch.cat([x, plane], dim=1), prediction

    @staticmethod
    def _image_values(target: torch.Tensor) -> torch.Tensor:
        # The kernel is a softmax, a local average: the blurred data keeps the image's
        # levels (the engine's saturation warning compares the image with them).
        return target

    @staticmethod
    def _image_of(packed: torch.Tensor) -> torch.Tensor:
        """The image of a packed estimate (its kernel plane off)."""
        return packed[:, :-1]


def _unpack(
    packed: torch.Tensor, kernel_shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a packed estimate into the image ``(1, C, H', W')`` and the kernel ``(kh, kw)``."""
    kh, kw = kernel_shape
    return packed[:, :-1], packed[0, -1, :kh, :kw]


def _mass_centre(kernel: torch.Tensor) -> tuple[int, int]:
    """Centre of mass of a non-negative kernel's support, rounded to the nearest pixel.

    The support is the entries of at least ``_SUPPORT_THRESHOLD`` times the peak:
    the softmax never gives exact zeros, and a faint background spread over the
    window would pull the centre away from the blur itself.
    """
    k = kernel.detach().double()
    k = torch.where(k >= _SUPPORT_THRESHOLD * k.max(), k, torch.zeros_like(k))
    total = k.sum().clamp_min(1e-30)
    rows = torch.arange(k.shape[0], dtype=k.dtype, device=k.device)
    cols = torch.arange(k.shape[1], dtype=k.dtype, device=k.device)
    cy = (k.sum(1) * rows).sum() / total
    cx = (k.sum(0) * cols).sum() / total
    centre = torch.stack([cy, cx]).cpu().tolist()
    return (
        min(max(int(math.floor(centre[0] + 0.5)), 0), k.shape[0] - 1),
        min(max(int(math.floor(centre[1] + 0.5)), 0), k.shape[1] - 1),
    )


def _aligned_image(packed: torch.Tensor, kernel_shape: tuple[int, int]) -> torch.Tensor:
    """The image on the observation's grid, aligned with the observation.

    With the valid convolution, ``y[i, j] = sum k[a, b] x[i + kh-1-a, j + kw-1-b]``;
    a kernel whose mass sits at ``(a0, b0)`` maps ``x[i + kh-1-a0, j + kw-1-b0]`` to
    ``y[i, j]``. Cropping the window that starts at ``(kh-1-a0, kw-1-b0)`` therefore
    undoes the shift a displaced kernel would put between the estimate and ``y``:
    it is the image of the same solution with its kernel centred.
    """
    image, kernel = _unpack(packed, kernel_shape)
    kh, kw = kernel_shape
    a0, b0 = _mass_centre(kernel)
    h, w = image.shape[-2] - kh + 1, image.shape[-1] - kw + 1
    top, left = kh - 1 - a0, kw - 1 - b0
    return image[..., top : top + h, left : left + w]


def _centred_support(kernel: np.ndarray, centre: tuple[int, int] | None = None) -> np.ndarray:
    """Crop the kernel to its support, centred on the support's centre of mass.

    The support is the entries of at least ``_SUPPORT_THRESHOLD`` times the peak;
    fainter entries (the softmax's background) are set to zero. The result has
    odd sides, its centre of mass on the central pixel (to the nearest pixel),
    and sums to one. ``centre``: that pixel, as :func:`_mass_centre` found it for
    the image's window (recomputed here in float64, a centre of mass within
    rounding of a half pixel, as a symmetric even kernel's, could round the
    other way and put the kernel a pixel off the image).
    """
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0.0, None)
    kh, kw = k.shape
    if k.sum() <= 0:
        return np.ones((1, 1))
    strong = k >= _SUPPORT_THRESHOLD * k.max()
    k = np.where(strong, k, 0.0)
    total = k.sum()
    rows, cols = np.arange(kh), np.arange(kw)
    if centre is None:
        cy = int(np.clip(np.floor((k.sum(1) * rows).sum() / total + 0.5), 0, kh - 1))
        cx = int(np.clip(np.floor((k.sum(0) * cols).sum() / total + 0.5), 0, kw - 1))
    else:
        cy, cx = centre
    ys, xs = np.nonzero(strong.any(1))[0], np.nonzero(strong.any(0))[0]
    # Half-sizes symmetric about the centre pixel, so the crop stays centred.
    ry = max(cy - ys[0], ys[-1] - cy)
    rx = max(cx - xs[0], xs[-1] - cx)
    out = np.zeros((2 * ry + 1, 2 * rx + 1))
    y0, y1 = max(cy - ry, 0), min(cy + ry + 1, kh)
    x0, x1 = max(cx - rx, 0), min(cx + rx + 1, kw)
    out[y0 - (cy - ry) : y1 - (cy - ry), x0 - (cx - rx) : x1 - (cx - rx)] = k[y0:y1, x0:x1]
    return out / out.sum()


class _AlignedImage:
    """The image a packed estimate holds, aligned with the observation: what the
    stopping rule watches (a class, not a closure: a kept fit must pickle)."""

    def __init__(self, kernel_shape: tuple[int, int]):
        self.kernel_shape = kernel_shape

    def __call__(self, packed: torch.Tensor) -> torch.Tensor:
        return _aligned_image(packed, self.kernel_shape)


class _AlignedCallback:
    """Per step: the PSNR of the aligned image against a clean reference, recorded
    in ``psnrs``, and the user's callback, which sees the aligned image. It names
    ``image`` itself, so that the fit hands it the image's index (see
    ``image_callback``) to pass on to a user's callback that asks for it."""

    # ``(index, the user's callback as image_callback gives it)``, made once, not at
    # every step (it reads the callback's signature); None in fits pickled before.
    _bound = None

    def __init__(self, kernel_shape, reference, user_callback, psnrs: list, reference_range=None):
        self.kernel_shape, self.reference = kernel_shape, reference
        self.user_callback, self.psnrs = user_callback, psnrs
        # (low, high, peak) in the fit's units: read as score(X, y) reads the image.
        self.reference_range = reference_range

    def __call__(self, iteration, loss, packed, image=0):
        if self.reference is None and self.user_callback is None:
            return None
        aligned = _aligned_image(packed, self.kernel_shape)
        if self.reference is not None:
            self.psnrs.append(float(_psnr(aligned, self.reference, self.reference_range)))
        if self.user_callback is None:
            return None
        # As returned: the engine judges it as any estimator's (only True stops).
        if self._bound is None or self._bound[0] != image:
            self._bound = (image, image_callback(self.user_callback, image))
        return self._bound[1](iteration, loss, aligned)


class _ImageOnly:
    """Apply a regularizer to the image channels of a packed estimate."""

    def __init__(self, regularizer):
        self.regularizer = regularizer

    def __call__(self, packed: torch.Tensor) -> torch.Tensor:
        return self.regularizer(packed[:, :-1])


class BlindDeblurrer(BaseDIPEstimator):
    """Blind deblurring with a double Deep Image Prior: unknown kernel, unknown size.

    The blurry, noisy observation ``y = k * x + n`` is explained by two
    untrained generators fitted jointly: a convolutional network ``G_x`` for
    the sharp image and a small MLP ``G_k`` for the blur kernel, whose
    softmax output is non-negative and sums to one. The image is generated
    on the grid ``(H + kh - 1, W + kw - 1)`` and blurred by a 'valid'
    convolution, so that the prediction covers every observed pixel and no
    boundary condition is assumed. The objective is
    ``loss(G_k * G_x, y) + lambda R(G_x)``, with ``R`` the scale-invariant
    ratio ``||grad x||_1 / ||grad x||_2`` by default (Zhuang et al.,
    arXiv 2208.09483), which keeps the fit stable when the kernel size is
    over-specified and the noise is substantial.

    The size of the kernel need not be known: ``kernel_size=None``
    over-specifies it (see below). Colour images share one kernel across the
    channels.

    A blurred image is unchanged when the kernel moves one way and the image
    the other; after fitting, the kernel is centred (its centre of mass moved
    to its central pixel, by an integer shift) and the image moved
    accordingly, so that the returned image is aligned with the input. The
    returned image lies on the observation's grid: same shape as ``X`` (the
    generated border band of width about ``kh // 2``, which only the
    blurred observation constrains, is dropped).

    The configuration of SelfDeblur (Ren et al., CVPR 2020), with the exact
    kernel size, no image regularizer, a nearly uniform first kernel and a
    fixed number of iterations, is ``BlindDeblurrer(kernel_size=k,
    regularizer=None, kernel_init="uniform", early_stopping=None)``
    (SelfDeblur also uses ``kernel_lr=1e-4`` and ``max_iter=5000``). Its switch
    from the MSE to a 1 - SSIM loss after 1000 steps is not reproduced: a
    ``loss`` holds for the whole fit.

    Parameters
    ----------
    generator : str or BaseGenerator, default="skip"
        Image generator ``G_x``: a name from
        :data:`skdip.generators.GENERATOR_NAMES` or a configuration such as
        ``SkipNetwork(width=64)``. ``"skip-small"`` is much faster on a CPU.
    kernel_size : int, tuple of two ints or None, default=None
        Size ``(kh, kw)`` of the estimated kernel; an int gives a square
        kernel. None over-specifies it from the image size
        ``(H, W)``: ``2 * (min(H, W) // 8) + 1``, an odd number close to
        ``min(H, W) / 4``, clipped to ``[3, 65]`` and to the image (17 for a
        64x64 image, 65 from 256x256 on). An explicit size must not exceed the
        image. Blur wider than the assumed size cannot be recovered; a larger
        size costs time and, with short runs, some quality (see the guide).
        ``kernel_`` has odd sides, centred on its centre of mass, so an even
        size can give it one more pixel (4 gives up to 5x5).
    early_stopping : {"emv", "wmv"}, BaseStoppingRule or None, default="emv"
        Stopping rule, watching the aligned image on the observation's grid
        (see :class:`DIPDenoiser`); None runs ``max_iter`` steps and returns
        the last iterate (the last average with ``output_averaging``).
    max_iter : int, default=5000
        Maximum number of optimisation steps.
    lr : float, default=0.01
        Adam learning rate of the image generator.
    kernel_lr : float, default=1e-3
        Adam learning rate of the kernel generator. SelfDeblur uses 1e-4 over
        5000 iterations; with the ratio regularizer and budgets of a few
        hundred to a few thousand iterations, 1e-3 lets the kernel form
        before the image generator settles on a cartoon of the blur (see the
        user guide, ``doc/blind_deblurring.md``).
    kernel_init : {"gaussian", "uniform"}, default="gaussian"
        First kernel. ``"gaussian"``: a centred Gaussian whose +-3 sigma spans
        the window, so that an over-specified window does not start from an
        overly wide blur (which drives the image towards a cartoon and the
        kernel towards a thin stroke). ``"uniform"``: nearly uniform over the
        window, as in SelfDeblur.
    loss : {"mse", "rmse", "l1", "huber"} or callable, default="mse"
        Data-fidelity loss between the blurred estimate and ``y``.
        A callable is called as ``loss(prediction, target)``, the model's
        prediction of the measurement first and the observation second
        (tensors shaped ``(1, C, H, W)``), and returns a scalar tensor.
    regularizer : {"ratio", "tv"}, BaseRegularizer, callable or None, default="ratio"
        Penalty on the generated image. ``"ratio"``: :class:`GradientRatio`
        with weight ``8e-4 / sqrt(C H' W')``, ``H' x W'`` the generated image's
        size and ``C`` its channels (1e-5 for a grey 64x64 observation and a
        17x17 kernel): the pull of the ratio on one value is of order
        ``1 / sqrt(C H' W')`` while that of the mean squared error is of order
        ``1 / (C H' W')``, so the weight follows the size and the channels.
        Much stronger weights turn the image into a cartoon;
        ``"tv"``:
        :class:`TotalVariation` with weight ``1e-3``; an object is used as
        given (tunable as ``regularizer__weight``); None disables it.
    reg_noise_std : float, default=0.001
        Standard deviation of the perturbation of the image generator's input
        code at each step.
    output_averaging : float or None, default=None
        Weight of an exponential average of the iterates (image and kernel
        together), as in :class:`DIPDenoiser`.
    rescale : "auto" or bool, default="auto"
        Map intensities to [0, 1] before fitting and back after ("auto": for
        data clearly outside [0, 1] (below -0.25 or above 1.25, or with its
        median off [-0.05, 1.05]) and for data spanning less than 0.5 (a dim
        or low-contrast image, which the default networks fit poorly as given);
        False as in :class:`DIPDenoiser`). The data's range maps to the middle of [0, 1]
        with a quarter of its span to spare on each side (none below 0 for
        non-negative data), as the sharp image spans more than the blurred one:
        point sources blurred far lower than that (a star whose blurred peak is
        under 0.5) come back capped; for those, bring the data to [0, 1] and
        pass ``rescale=False``.
    device : str or torch.device, default="auto"
        "auto" uses CUDA when available, else the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds both networks, their input codes and the perturbations. The
        same seed gives identical results on the CPU. None draws the seed from
        NumPy's global generator (``np.random.seed`` makes it repeatable, not
        ``torch.manual_seed``), as does a ``RandomState`` instance from
        itself: the seed a fit ran from is kept in ``random_state_``.
    verbose : bool or int, default=False
        Show a progress bar (needs tqdm: the ``progress`` extra).
    callback : callable, default=None
        ``callback(iteration, loss, estimate)`` after every step, with
        ``estimate`` the aligned ``(1, C, H, W)`` image on the fitting device,
        on the intensity scale the fit works on ([0, 1] for rescaled data);
        returning True stops the fit. A callback with a parameter named
        ``image`` after its first three gets ``image=i`` too, ``i`` the index
        in ``X`` of the image fitted (see :class:`DIPDenoiser`).
    n_jobs : int, default=None
        Images of a batch fitted in parallel (as in :class:`DIPDenoiser`).
    warm_start : bool, default=False
        Keep each image's fit (both networks, Adam's state, the stopping rule,
        the history) so that the next ``fit`` on the same images goes on with
        it for up to ``max_iter`` more steps, as in :class:`DIPDenoiser`.

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The sharp image(s), same shape and layout as ``X`` (float32 for
        float32 ``X``, else float64), aligned with it.
    kernel_ : ndarray or list of ndarray
        The estimated kernel(s): cropped to the support (the entries of at
        least 2% of the peak; fainter ones set to 0), centred on its centre of
        mass, odd sides, non-negative, summing to 1.
    kernel_full_ : ndarray or list of ndarray
        The kernel(s) at the working size ``kernel_size_``, as generated
        (not centred).
    kernel_size_ : tuple of int or list of tuple
        The working kernel size ``(kh, kw)``.
    best_iter_, n_iter_, stopped_by_, history_, loss_curve_, n_images_, n_features_in_
        As for :class:`DIPDenoiser`. With clean references ``y`` given to
        :meth:`fit`, ``history_["psnr"]`` records the PSNR of the aligned
        image at every step: of the running average with ``output_averaging``
        (there is no ``"psnr_raw"`` curve of the raw iterates here).
    random_state_ : int
        The seed the fit ran from, which repeats it set as ``random_state``
        (as for :class:`DIPDenoiser`).

    See Also
    --------
    DIPDenoiser : the single-network estimator.
    skdip.metrics.aligned_psnr, skdip.metrics.kernel_error : shift-tolerant scores.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import BlindDeblurrer, SkipNetwork
    >>> from skdip.datasets import blur, make_gaussian_kernel
    >>> rng = np.random.default_rng(0)
    >>> sharp = rng.random((36, 36))
    >>> blurry = blur(sharp, make_gaussian_kernel(5, 1.0))  # 'valid': 32x32
    >>> deb = BlindDeblurrer(generator=SkipNetwork(width=8, depth=2), kernel_size=5,
    ...                      max_iter=20, early_stopping=None, random_state=0)
    >>> deb.fit_transform(blurry).shape
    (32, 32)
    >>> k = deb.kernel_
    >>> bool(k.min() >= 0), round(float(k.sum()), 6), k.shape[0] % 2
    (True, 1.0, 1)
    """

    _parameter_constraints: dict = {
        **BaseDIPEstimator._parameter_constraints,
        "kernel_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "kernel_lr": [Interval(Real, 0, None, closed="neither")],
        "kernel_init": [StrOptions({"gaussian", "uniform"})],
        "regularizer": [StrOptions({"ratio", "tv"}), BaseRegularizer, callable, None],
    }

    _min_image_size = 2

    def __init__(
        self,
        generator="skip",
        kernel_size=None,
        early_stopping="emv",
        max_iter: Int = 5000,
        lr: Float = 0.01,
        kernel_lr: Float = 1e-3,
        kernel_init: str = "gaussian",
        loss="mse",
        regularizer="ratio",
        reg_noise_std: Float = 0.001,
        output_averaging: Float | None = None,
        rescale="auto",
        device="auto",
        random_state=None,
        verbose=False,
        callback=None,
        n_jobs=None,
        warm_start: bool = False,
    ):
        self.generator = generator
        self.kernel_size = kernel_size
        self.early_stopping = early_stopping
        self.max_iter = max_iter
        self.lr = lr
        self.kernel_lr = kernel_lr
        self.kernel_init = kernel_init
        self.loss = loss
        self.regularizer = regularizer
        self.reg_noise_std = reg_noise_std
        self.output_averaging = output_averaging
        self.rescale = rescale
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.n_jobs = n_jobs
        self.warm_start = warm_start

    # ------------------------------------------------------------- helpers
    def _check_params(self) -> None:
        super()._check_params()
        self._kernel_shape_for(None)  # validates an explicit kernel_size

    def _kernel_shape_for(self, image_shape: tuple[int, int] | None) -> tuple[int, int] | None:
        """The working kernel size for an image of ``image_shape`` (None: only validate)."""
        size = self.kernel_size
        if size is None:
            return None if image_shape is None else (auto_kernel_size(*image_shape),) * 2
        shape = check_int_pair(
            size,
            f"{type(self).__name__}.kernel_size",
            allow_int=True,
            allow_none=True,
            error=InvalidParameterError,  # as the constraints refuse the rest
        )
        if image_shape is not None and (shape[0] > image_shape[0] or shape[1] > image_shape[1]):
            raise ValueError(
                f"kernel_size {shape} is larger than the {image_shape[0]}x{image_shape[1]} image"
            )
        return shape

    def _regularizer_for(self, padded_shape: tuple[int, int], channels: int):
        reg = self.regularizer
        if isinstance(reg, str) and reg == "ratio":
            # Per value of the generated image: relative to the mean squared error's pull
            # on a pixel, the ratio's grows as sqrt(C) too. Colour images had a weight 1.7
            # times the grey ones' balance: 2 seeds x 16 colour cases
            # (benchmarks/deblur_colour.py), the image 1.51 dB better on average with it
            # divided by sqrt(3) (better in 28 of 32; the kernel error larger in 24).
            size = padded_shape[0] * padded_shape[1] * channels
            reg = GradientRatio(weight=_RATIO_WEIGHT / math.sqrt(size))
        elif isinstance(reg, str) and reg == "tv":
            reg = TotalVariation(weight=_TV_WEIGHT)
        return None if reg is None else _ImageOnly(reg)

    # --------------------------------------------------------------- hooks
    _observes_a_valid_blur = True

    def _check_observation(self, image, reference, extra) -> None:
        self._kernel_shape_for(image.shape[:2])
        # The reference is compared with the aligned estimate, which has the image's shape.
        super()._check_observation(image, reference, extra)

    def _predict_measurements(self, image, extra, reference):
        # The kernel is unknown, but non-negative, summing to one and within
        # kernel_size: a box over that support spreads a point source as far as
        # any such kernel does, so the factor between X and this prediction stays
        # near 1 on one scale, also for a star field (the sharp reference
        # itself, a sum of points, had made blurred stars look 35x too faint).
        if reference.shape != image.shape:
            return None
        kh, kw = self._kernel_shape_for(image.shape[:2])
        return ndimage.uniform_filter(reference, size=(kh, kw, 1), mode="nearest")

    def _fit_single(self, image, reference, extra, *args, **kwargs) -> dict:
        # The engine compares its reference with the (packed) estimate; the PSNR of the
        # aligned image is recorded by this estimator's callback instead.
        extra = dict(extra)
        scaling = extra["_scaling"] = fitted_scaling(self, image, extra)
        extra["_reference"] = None if reference is None else scaling.forward_image(reference)
        if reference is not None:
            extra["_reference_range"] = self._history_psnr_range(scaling, reference, image, extra)
        return super()._fit_single(image, None, extra, *args, **kwargs)

    def _network_shape(self, image: np.ndarray, extra: dict) -> tuple[int, int]:
        # The scene behind a "valid" blur: the observation grown by the kernel.
        h, w = image.shape[:2]
        kh, kw = self._kernel_shape_for((h, w))
        return (h + kh - 1, w + kw - 1)

    def _auto_stretch_span(self, image: np.ndarray, extra: dict) -> float:
        # Low contrast fitted as given stopped at a spurious early minimum, as in
        # denoising: a camera crop on [0, 0.12] blurred (32x32, noise 1% of the span)
        # came back at 16.0 dB, 4 dB below the blurred input, against 19.9 stretched.
        return _AUTO_STRETCH_SPAN

    def _data_is_image_like(self) -> bool:
        # The kernel is unknown, so no image can be estimated to judge by: the data
        # decides (a dim image fitted as it was came back at 5.4 dB against 27.6 dB).
        return True

    def _make_model(self, image: np.ndarray, extra: dict, seed: int, device: torch.device):
        channels = image.shape[2]
        kh, kw = self._kernel_shape_for(image.shape[:2])
        padded = self._network_shape(image, extra)
        generator = checked_generator(self)
        image_net = generator.build(padded, channels, seed=seed)
        # The caller restores the CPU generator (GPU ones are left alone: built on the CPU).
        torch.random.default_generator.manual_seed(int(seed) + 1)
        kernel_net = _KernelMLP((kh, kw), init=self.kernel_init)
        model = _DoubleDIPModel(image_net, kernel_net, input_noise_std(self, generator)).to(device)

        kernel_shape = (kh, kw)
        reference = extra.get("_reference")
        ref_tensor = None if reference is None else to_tensor(reference, device)
        extra["_psnrs"] = []
        fit_kwargs = {
            "param_groups": [
                {"params": list(model.image_net.parameters()), "lr": self.lr},
                {"params": list(model.kernel_net.parameters()), "lr": self.kernel_lr},
            ],
            "regularizer": self._regularizer_for(padded, channels),
            "monitor": _AlignedImage(kernel_shape),
            "callback": _AlignedCallback(
                kernel_shape,
                ref_tensor,
                self.callback,
                extra["_psnrs"],
                extra.get("_reference_range"),
            ),
        }
        return model, to_tensor(image, device), fit_kwargs

    # The monitor travels in the kept fit; the rest is made again by _continuation.
    _continued_fit_kwargs = frozenset({"param_groups", "regularizer", "monitor", "callback"})

    def _continuation(self, state, previous, image, extra, label):
        kwargs, extra = super()._continuation(state, previous, image, extra, label)
        kernel_shape = self._kernel_shape_for(image.shape[:2])
        reference = previous["continuation"]["reference"]
        # Absent from fits kept before it was recorded: their curve read (0, 1, 1).
        reference_range = previous["continuation"].get("reference_range")
        device = state.target.device
        # In the kept fit's dtype: the default may have changed since.
        dtype = state.target.dtype
        ref_tensor = None if reference is None else to_tensor(reference, device, dtype)
        # The PSNR curve goes on from where the kept fit's ended.
        psnrs = list(previous["history"].get("psnr", []))
        extra = {
            **extra,
            "_scaling": previous["scaling"],
            "_reference": reference,
            "_reference_range": reference_range,
            "_psnrs": psnrs,
        }
        kwargs["regularizer"] = self._regularizer_for(
            self._network_shape(image, extra), image.shape[2]
        )
        kwargs["callback"] = _AlignedCallback(
            kernel_shape, ref_tensor, self.callback, psnrs, reference_range
        )
        return kwargs, extra

    def _finish(self, estimate, result, image, extra) -> dict:
        kernel_shape = tuple(int(s) for s in self._kernel_shape_for(image.shape[:2]))
        aligned = _aligned_image(result.estimate, kernel_shape)
        _, kernel = _unpack(result.estimate, kernel_shape)
        centre = _mass_centre(kernel)  # the one the image's window was cut at
        kernel = kernel.double().numpy()
        kernel = kernel / kernel.sum()
        if extra.get("_psnrs"):
            result.history["psnr"] = np.asarray(extra["_psnrs"])
        out = {
            "estimate": extra["_scaling"].inverse(to_numpy(aligned)),
            "kernel": _centred_support(kernel, centre),
            "kernel_full": kernel,
            "kernel_size": kernel_shape,
        }
        if getattr(self, "_keeping_fit_states", False):
            # The engine never sees the reference: a continuation needs it again.
            out["continuation"] = {
                "reference": extra.get("_reference"),
                "reference_range": extra.get("_reference_range"),
            }
        return out
