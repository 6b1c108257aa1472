"""Regularizers ``lambda * R(x)`` on the generated image."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .._typing import Float
from .._validation import InvalidParameterError, check_number

__all__ = ["BaseRegularizer", "TotalVariation", "GradientRatio"]

# Below float32, the penalties' own constants and sums fail: float16 turns
# GradientRatio's eps (1e-8) and isotropic TV's 1e-12 into 0 (NaN on a flat image) and
# overflows the ratio's l1 sum of a 512x512 image (inf).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _in_full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in half precision, else unchanged."""
    return x.float() if x.dtype in _LOW_PRECISION else x


def _finite_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along rows and columns at every pixel, ``(B, C, H, W)`` each.

    The image is taken as constant beyond its last row and column (a zero
    difference there), so every difference inside the image counts, also those
    of the last row and column, and a one-pixel-high image has a finite penalty.
    """
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    return dy, dx


class BaseRegularizer(BaseEstimator):
    """Base class: a weighted penalty on images ``x`` of shape ``(B, C, H, W)``.

    Calling the object returns ``weight * penalty(x)`` as a scalar tensor.
    Being a scikit-learn ``BaseEstimator``, its ``weight`` can be tuned in a
    grid search as ``regularizer__weight``. Subclasses define
    :meth:`penalty`.

    Parameters
    ----------
    weight : float, default=0.01
        Multiplier of the penalty (finite, >= 0).

    Examples
    --------
    A penalty of your own: the mean distance of the image from mid-grey.

    >>> import torch
    >>> from skdip.losses import BaseRegularizer
    >>> class TowardsGrey(BaseRegularizer):
    ...     def penalty(self, x):
    ...         return (x - 0.5).abs().mean()
    >>> float(TowardsGrey(weight=2.0)(torch.ones(1, 1, 4, 4)))
    1.0
    """

    def __init__(self, weight: Float = 0.01):
        self.weight = weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._checked_weight() * self.penalty(x)

    def _check_params(self) -> None:
        """Refuse invalid settings, with InvalidParameterError as the estimators refuse
        theirs; the estimators call it before any work (a subclass with settings of its
        own extends it)."""
        self._checked_weight()

    def _checked_weight(self) -> float:
        """The weight, refused unless a finite real >= 0 (the estimators ask before a fit),
        with InvalidParameterError, as an estimator's bad parameters are."""
        return check_number(
            self.weight, f"{type(self).__name__}.weight", 0, error=InvalidParameterError
        )

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        """The unweighted penalty."""
        raise NotImplementedError(
            f"{type(self).__name__} must define penalty(x), which returns the unweighted "
            "penalty of images x shaped (B, C, H, W) as a scalar tensor (the weight is "
            "applied by the base class)"
        )


class TotalVariation(BaseRegularizer):
    """Total variation: the mean size of the image gradient.

    Parameters
    ----------
    weight : float, default=0.01
        Multiplier ``lambda`` of the penalty.
    isotropic : bool, default=False
        ``False`` sums absolute horizontal and vertical differences
        (anisotropic TV); ``True`` takes the Euclidean norm of the gradient at
        each pixel (isotropic TV), ``sqrt(dy**2 + dx**2 + 1e-12)``: the constant
        keeps its gradient finite on flat regions, so a flat image scores
        1e-6 and gradients well under 1e-6 are penalised quadratically. Either
        way each channel is taken on its own (colour channels are not coupled).

    Examples
    --------
    >>> import torch
    >>> from skdip.losses import TotalVariation
    >>> float(TotalVariation(weight=1.0)(torch.zeros(1, 1, 4, 4)))
    0.0
    >>> round(float(TotalVariation(weight=1.0, isotropic=True)(torch.zeros(1, 1, 4, 4))), 9)
    1e-06
    """

    def __init__(self, weight: Float = 0.01, isotropic: bool = False):
        self.weight = weight
        self.isotropic = isotropic

    def _check_params(self) -> None:
        super()._check_params()
        self._checked_isotropic()

    def _checked_isotropic(self) -> bool:
        # NumPy's bool too: a grid's np.array([False, True]) hands out np.bool_ values.
        if not isinstance(self.isotropic, (bool, np.bool_)):
            raise InvalidParameterError(
                f"TotalVariation.isotropic must be a bool, got {self.isotropic!r}"
            )
        return bool(self.isotropic)

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        isotropic = self._checked_isotropic()
        dy, dx = _finite_differences(_in_full_precision(x))
        if isotropic:
            # The small constant keeps the gradient of sqrt finite on flat regions.
            value = torch.sqrt(dy.square() + dx.square() + 1e-12).mean()
        else:
            value = dy.abs().mean() + dx.abs().mean()
        return value.to(x.dtype)


class GradientRatio(BaseRegularizer):
    """Scale-invariant sparsity of the gradient: ``||grad x||_1 / ||grad x||_2``.

    Unlike total variation it does not favour shrinking the image's contrast,
    which is why it works better in blind deblurring. The ratio is taken per
    image, over all its channels, and it is a sum, not a mean: its pull on one
    value, relative to that of a mean loss such as the MSE, grows as
    ``sqrt(C H W)``. A weight tuned on small crops is therefore too strong on
    large images (on the camera picture, 12 times stronger relative to the MSE
    at 512x512 than at 64x64, where total variation's changed 1.4 times);
    :class:`~skdip.BlindDeblurrer`'s default weight follows the size.

    Parameters
    ----------
    weight : float, default=0.001
        Multiplier ``lambda`` of the penalty.
    eps : float, default=1e-8
        Guards the division on constant images (finite, > 0).

    Examples
    --------
    >>> import torch
    >>> from skdip.losses import GradientRatio
    >>> x = torch.zeros(1, 1, 8, 8)
    >>> x[..., 4:, :] = 1.0
    >>> round(float(GradientRatio(weight=1.0)(x)), 3)  # one edge, 8 steps: l1/l2 = sqrt(8)
    2.828
    """

    def __init__(self, weight: Float = 0.001, eps: Float = 1e-8):
        self.weight = weight
        self.eps = eps

    def _check_params(self) -> None:
        super()._check_params()
        self._checked_eps()

    def _checked_eps(self) -> float:
        # eps = 0 would give 0/0 on a flat image, eps = inf a penalty of 0 everywhere.
        return check_number(
            self.eps, "GradientRatio.eps", 0, exclusive_minimum=True, error=InvalidParameterError
        )

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        eps = self._checked_eps()
        if x.ndim != 4:
            # The ratio is taken per image (over its channels): a 2-D image was read as a
            # batch of one-row images, 0.35 where its one edge gives sqrt(8) = 2.83.
            raise ValueError(
                f"GradientRatio takes images shaped (B, C, H, W), got shape {tuple(x.shape)}"
                " (x[None, None] for one grey (H, W) image, x[None] for one (C, H, W) image)"
            )
        dy, dx = _finite_differences(_in_full_precision(x))
        # Per image, then the mean over the batch (as TotalVariation's mean does).
        g = torch.cat([dy.flatten(1), dx.flatten(1)], dim=1)
        # An eps below the dtype's smallest normal number (1e-300 in float32) rounded to 0
        # there and gave 0/0 on a flat image: it counts as that number.
        eps = max(eps, torch.finfo(g.dtype).tiny)
        return (g.abs().sum(dim=1) / (g.norm(dim=1) + eps)).mean().to(x.dtype)
