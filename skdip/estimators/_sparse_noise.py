"""Sparse (impulse) noise by double over-parameterisation.

The observation is modelled as ``y = f(G_theta(z)) + s`` with a sparse
outlier image ``s = g * g - h * h`` (element-wise), where ``g`` and ``h`` are
trained together with the network from a tiny random start. Plain gradient
descent from a small start grows an entry of ``g`` (or ``h``) at a rate
proportional to its residual, so large residuals (the impulses) are absorbed
by ``s`` long before small ones (image detail the network has not fitted
yet): the implicit bias acts like an l1 penalty on ``s`` without a weight to
tune (You et al., NeurIPS 2020).

That bias needs *plain* gradient steps: Adam rescales every entry's step to
about its learning rate, whatever the residual, and would let ``s`` absorb
everything. So ``g`` and ``h`` form a parameter group marked ``"sgd"``: the
engine steps them by plain gradient descent next to the network's Adam step,
and its divergence guard rolls them back and halves their rate with the rest.
"""

from __future__ import annotations

import torch
from sklearn.base import BaseEstimator
from torch import nn

from .._typing import Float
from .._validation import InvalidParameterError, check_number, to_numpy
from .._warnings import warn
from ._base import fitted_scaling

__all__ = ["SparseNoise", "SparseNoiseModel", "SparseNoiseMixin", "resolve_noise_model"]


class SparseNoise(BaseEstimator):
    """Configuration of the sparse noise term ``s = g * g - h * h``.

    Pass it (or the string ``"sparse"`` for the defaults) as the
    ``noise_model`` parameter of an estimator. Its parameters are tunable in a
    grid search as ``noise_model__lr`` and ``noise_model__init_std`` when
    ``noise_model`` is an instance (the string has no parameters to set).

    Parameters
    ----------
    lr : float, default=0.03
        Rate of the plain gradient steps on ``g`` and ``h``, per measured
        value: each step multiplies an entry of ``g`` by about
        ``1 + 4 * lr * r``, with ``r`` the residual of that value on the
        [0, 1] scale (for the "mse" loss; the gradient of the mean loss is
        multiplied by the number of measured values so that the rate does
        not depend on the image size). Larger values absorb outliers sooner
        but also more image detail; steps are stable while
        ``8 * lr * |s| < 2``, i.e. up to about 0.25. The network and ``s``
        race for the outliers, so the best rate depends on the generator and
        the picture: 0.03 did best on 64x64 bundled images with
        ``"skip-small"`` (0.01 let the network absorb the impulses first,
        0.1 let ``s`` absorb image detail), while a tiny smooth 16x16 picture
        wanted about 0.2. Tune it as ``noise_model__lr``.
    init_std : float, default=1e-5
        Standard deviation of the Gaussian start of ``g`` and ``h``. It must
        be small: the smaller the start, the sparser the absorbed noise.

    Examples
    --------
    >>> from skdip.estimators import SparseNoise
    >>> SparseNoise(lr=0.1).get_params()
    {'init_std': 1e-05, 'lr': 0.1}
    """

    def __init__(self, lr: Float = 0.03, init_std: Float = 1e-5):
        self.lr = lr
        self.init_std = init_std

    def _check(self) -> None:
        # InvalidParameterError, as an estimator's bad parameters are refused.
        for name in ("lr", "init_std"):
            check_number(
                getattr(self, name),
                f"SparseNoise.{name}",
                0,
                exclusive_minimum=True,
                error=InvalidParameterError,
            )


def resolve_noise_model(noise_model) -> SparseNoise | None:
    """``None`` -> None; ``"sparse"`` -> ``SparseNoise()``; an instance is checked and returned."""
    if noise_model is None:
        return None
    if isinstance(noise_model, str) and noise_model == "sparse":
        return SparseNoise()
    if isinstance(noise_model, SparseNoise):
        noise_model._check()
        return noise_model
    raise ValueError(
        f"noise_model must be None, 'sparse' or a SparseNoise instance, got {noise_model!r}"
    )


class SparseNoiseModel(nn.Module):
    """Wrap a model ``rng -> (estimate, prediction)``, adding ``g * g - h * h`` to the prediction.

    Parameters
    ----------
    model : nn.Module
        The wrapped model (e.g. a ``DIPModel``).
    shape : tuple of int
        Shape of the prediction, ``(1, C, h, w)``.
    init_std : float
        Standard deviation of the random start of ``g`` and ``h``.
    seed : int
        Seed of that start (drawn on the CPU, so identical on every device).
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], init_std: float, seed: int):
        super().__init__()
        self.model = model
        gen = torch.Generator().manual_seed(int(seed))
        self.g = nn.Parameter(init_std * torch.randn(tuple(shape), generator=gen))
        self.h = nn.Parameter(init_std * torch.randn(tuple(shape), generator=gen))

    def noise(self) -> torch.Tensor:
        """The current sparse component ``s = g * g - h * h``."""
        return self.g * self.g - self.h * self.h

    def forward(self, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        estimate, prediction = self.model(rng)
        return estimate, prediction + self.noise()


class SparseNoiseMixin:
    """Adds the ``noise_model`` option to a :class:`BaseDIPEstimator` subclass.

    List it before ``BaseDIPEstimator`` in the bases, add a ``noise_model=None``
    parameter to ``__init__`` and the constraint
    ``"noise_model": [StrOptions({"sparse"}), SparseNoise, None]``. With a
    noise model, the fitted estimator gains the attribute ``sparse_noise_``:
    the sparse component ``s`` at the end of the fit, in the measurement's
    layout (``(h, w)`` for a grey 2-D one, else ``(h, w, C)``) and on the
    caller's intensity scale.
    """

    def _check_params(self) -> None:
        super()._check_params()
        noise = resolve_noise_model(getattr(self, "noise_model", None))
        if noise is not None and getattr(self, "batch_size", 1) > 1:
            # Refused whatever the data: images of one shape would fail to batch, and
            # images of different shapes would pass, which hides the limit.
            raise ValueError(
                f"{type(self).__name__}: batch_size > 1 is not available with a noise_model "
                "(its sparse term has its own optimiser); use batch_size=1"
            )
        loss = getattr(self, "loss", "mse")
        # (A callable loss may well be a squared one: not told.)
        if noise is not None and isinstance(loss, str) and loss != "mse":
            # The implicit sparsity of s comes from plain gradient steps on a squared
            # residual; other losses bend the gradient each entry of s grows by.
            warn(
                f"{type(self).__name__}: noise_model is made for loss='mse', got "
                f"loss={loss!r}. Its sparse term grows by the loss's gradient: a loss that "
                "caps it (huber, l1) leaves the impulses to the network, and one that "
                "scales it (rmse) lets s absorb image detail (in our checks on a "
                "salt-and-pepper camera: 26.2 dB with mse, 22.6 with l1, 15.3 with huber, "
                "17.7 with rmse). Use loss='mse' with a noise_model.",
                UserWarning,
            )

    def _make_model(self, image, extra, seed, device):
        model, target, fit_kwargs = super()._make_model(image, extra, seed, device)
        noise = resolve_noise_model(getattr(self, "noise_model", None))
        if noise is None:
            return model, target, fit_kwargs
        wrapped = SparseNoiseModel(model, tuple(target.shape), float(noise.init_std), seed + 2)
        wrapped = wrapped.to(device)
        fit_kwargs = dict(fit_kwargs)
        if fit_kwargs.get("param_groups") is None:
            fit_kwargs["param_groups"] = [
                {"params": [p for p in model.parameters() if p.requires_grad]}
            ]
        # The gradient of a mean loss shrinks with the number of values; scaling
        # it back makes `lr` a per-value rate, independent of the image size.
        rate = float(noise.lr) * target.numel()
        # Plain gradient steps (not Adam): the double over-parameterisation's
        # implicit bias towards sparse s holds for gradient descent.
        fit_kwargs["param_groups"] = [
            *fit_kwargs["param_groups"],
            {"params": [wrapped.g, wrapped.h], "lr": rate, "optimizer": "sgd"},
        ]
        return wrapped, target, fit_kwargs

    def _finish(self, estimate, result, image, extra):
        out = super()._finish(estimate, result, image, extra)
        noise_module = None
        if result.model is not None:
            noise_module = next(
                (m for m in result.model.modules() if isinstance(m, SparseNoiseModel)), None
            )
        if noise_module is not None:
            # the same intensity map the base used for this image
            scale = fitted_scaling(self, image, extra).scale
            with torch.no_grad():
                out["sparse_noise"] = to_numpy(noise_module.noise().cpu()) * scale
        return out
