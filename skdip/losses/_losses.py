"""Data-fidelity losses ``loss(f(x), y)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["get_loss", "LOSS_NAMES"]

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


def _rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # The floor keeps the gradient finite at an exact fit (d sqrt(u)/du is 1/(2 sqrt(u))).
    return F.mse_loss(pred, target).clamp_min(1e-20).sqrt()


def _l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target)


def _huber(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # delta = 0.1 sits between Gaussian-like residuals (quadratic) and outliers
    # (linear) on the [0, 1] intensity scale.
    return F.huber_loss(pred, target, delta=0.1)


_LOSSES: dict[str, LossFunction] = {"mse": _mse, "rmse": _rmse, "l1": _l1, "huber": _huber}
LOSS_NAMES = tuple(_LOSSES)


def get_loss(loss: str | LossFunction) -> LossFunction:
    """Resolve a data-fidelity loss given by name or as a callable.

    Parameters
    ----------
    loss : {"mse", "rmse", "l1", "huber"} or callable
        A name (``"rmse"`` is the square root of the mean squared error: the
        same minimiser as ``"mse"``, but its gradient does not shrink as the
        fit improves, and a penalty's weight keeps its meaning at any noise
        level; ``"huber"`` is quadratic for residuals up to 0.1 and linear
        beyond, a threshold set for data on [0, 1]: with ``rescale=False`` on
        data in 0-255 nearly every residual is past it and the loss acts as
        0.1 times ``"l1"``), or a callable ``loss(prediction, target) -> scalar tensor``
        (returned unchanged; an instance such as ``torch.nn.L1Loss()``, not the
        class). Use a module-level function, not a lambda, if the estimator must
        pickle.

    Returns
    -------
    loss : callable

    Examples
    --------
    >>> import torch
    >>> from skdip.losses import get_loss
    >>> mse = get_loss("mse")
    >>> float(mse(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)))
    0.25
    """
    if isinstance(loss, type):
        # A class is callable too: get_loss(torch.nn.L1Loss) was returned as it was, and
        # called on two tensors it failed with "Boolean value of Tensor with more than
        # one value is ambiguous" (on one-element tensors it returned a module, no loss).
        raise TypeError(
            f"loss must be an instance or a function, got the class {loss.__name__}: "
            f"pass loss={loss.__name__}()"
        )
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in _LOSSES:
        return _LOSSES[loss]
    raise ValueError(f"loss must be one of {sorted(_LOSSES)} or a callable, got {loss!r}")
