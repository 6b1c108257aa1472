"""Reference-free early stopping from the running variance of the iterates.

Near the quality peak of a Deep Image Prior fit the iterates change the least:
the running variance of the reconstructions has a valley that tracks the
(unknown) PSNR peak. A rule watches that signal, remembers the iterate at its
minimum and stops once no new minimum has appeared for ``patience`` steps.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval

from .._typing import Float, Int
from .._validation import reject_bool_numbers

__all__ = ["BaseStoppingRule", "ExponentialMovingVariance", "WindowedMovingVariance"]


class BaseStoppingRule(BaseEstimator):
    """Base class of stopping rules driven by a scalar signal (lower is better).

    The fitting engine works on a fresh clone of the rule for every fit and
    calls :meth:`start` once, then :meth:`signal` with every new iterate and
    :meth:`observe` with the signal's value. Subclasses define
    :meth:`_start` and :meth:`signal`.

    Parameters
    ----------
    patience : int, default=1000
        Steps without a new minimum of the signal after which to stop (at least 1).
    warmup : int, default=100
        Iterations before the signal is checked at all (the first iterates of
        a fit change fast and can create spurious early minima).

    Attributes
    ----------
    best_iter_ : int
        Iteration (0-based) of the smallest signal seen; -1 before any.
    best_value_ : float
        The smallest signal seen.

    Examples
    --------
    A rule of your own: the mean squared change between successive iterates.

    >>> import torch
    >>> from skdip.stopping import BaseStoppingRule
    >>> class StepSize(BaseStoppingRule):
    ...     def _start(self):
    ...         self._previous = None
    ...     def signal(self, x, iteration):
    ...         previous, self._previous = self._previous, x.detach().clone()
    ...         return None if previous is None else (x - previous).square().mean()
    >>> rule = StepSize(patience=2, warmup=0)
    >>> rule.start()
    >>> for it, step in enumerate([1.0, 0.5, 0.25, 0.5, 1.0]):
    ...     value = rule.signal(torch.full((1, 1, 2, 2), step), it)
    ...     if value is not None:
    ...         stop = rule.observe(float(value), it)[1]
    >>> rule.best_iter_, stop
    (2, True)
    """

    _parameter_constraints: dict = {
        "patience": [Interval(Integral, 1, None, closed="left")],
        "warmup": [Interval(Integral, 0, None, closed="left")],
    }
    # Whether a minimum at the first check, never undercut, is worth a warning (the
    # signal still settling); a rule that selects otherwise says False.
    _suspect_first_check_minimum = True

    def __init__(self, patience: Int = 1000, warmup: Int = 100):
        self.patience = patience
        self.warmup = warmup

    def _validate_params(self) -> None:
        super()._validate_params()
        # bool is an int to Python: patience=True stopped a fit after one stale step.
        reject_bool_numbers(self)

    def _signal_rule(self) -> BaseStoppingRule:
        """The rule whose signal this one records (itself; a wrapper's, the wrapped
        rule's): what the warnings name and the variance scorers read."""
        return self

    def start(self) -> None:
        """Reset the state before a fit; validates the parameters."""
        self._validate_params()
        self.best_iter_ = -1
        self.best_value_ = float("inf")
        self._stale = 0
        self._start()

    def _check_started(self) -> None:
        """Refuse a rule whose state :meth:`start` has not set (a clone drops it too):
        the missing attribute's name said nothing about the call to make."""
        if not hasattr(self, "_stale"):
            raise RuntimeError(
                f"{type(self).__name__}: call start() before signal() or observe(); it "
                "resets the rule's state for a fit (the estimators call it themselves)"
            )

    def _start(self) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must define _start(), which resets the running "
            "statistics before each fit (define it with 'pass' if there are none)"
        )

    def signal(self, x: torch.Tensor, iteration: int) -> torch.Tensor | None:
        """Update the running statistics with iterate ``x``; return the signal.

        Returns a scalar tensor on ``x``'s device, or None while the rule is
        warming up. No host-device synchronisation happens here (a Python
        number is accepted too, at the cost of one).

        ``x`` may be a tensor the fit goes on to update in place (the running
        average of the outputs, when the rule watches it): keep a copy
        (``x.detach().clone()``) of what a later step compares with, not ``x``
        itself, which would then always equal the newest iterate.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define signal(x, iteration), which returns "
            "the stopping signal (lower is better) or None"
        )

    def observe(self, value: float, iteration: int) -> tuple[bool, bool]:
        """Record the signal's value; return ``(is_new_minimum, should_stop)``.

        Values before ``warmup`` are ignored, also for a subclass whose
        :meth:`signal` returns them.
        """
        self._check_started()
        if iteration < self.warmup:
            return False, False
        if value < self.best_value_:
            self.best_value_ = value
            self.best_iter_ = iteration
            self._stale = 0
            return True, False
        self._stale += 1
        # A Python int: a NumPy patience (from a grid) made the flag NumPy's bool.
        return False, self._stale >= int(self.patience)


class ExponentialMovingVariance(BaseStoppingRule):
    """ES-EMV: exponential moving variance of the iterates.

    With ``delta = x_t - m_{t-1}`` the rule updates the exponential mean
    ``m_t = m_{t-1} + alpha * delta`` and the variance
    ``v_t = (1 - alpha) * (v_{t-1} + alpha * mean(delta**2))``, the mean
    taken over pixels and channels. It costs O(pixels) per step and keeps a
    single image of state.

    Parameters
    ----------
    alpha : float, default=0.1
        Forgetting factor, in (0, 1); larger reacts faster and is noisier.
    patience : int, default=1000
        Steps without a new variance minimum after which to stop.
    warmup : int, default=100
        Iterations before the variance is checked.

    Attributes
    ----------
    best_iter_ : int
        Iteration of the variance minimum.
    best_value_ : float
        The variance at its minimum.

    Examples
    --------
    >>> from skdip import DIPDenoiser, ExponentialMovingVariance
    >>> rule = ExponentialMovingVariance(alpha=0.1, patience=300)
    >>> den = DIPDenoiser(early_stopping=rule)
    >>> den.get_params()["early_stopping__patience"]
    300
    """

    _parameter_constraints: dict = {
        **BaseStoppingRule._parameter_constraints,
        "alpha": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, alpha: Float = 0.1, patience: Int = 1000, warmup: Int = 100):
        self.alpha = alpha
        self.patience = patience
        self.warmup = warmup

    def _start(self) -> None:
        self._mean = None
        self._var = None

    def signal(self, x: torch.Tensor, iteration: int) -> torch.Tensor | None:
        self._check_started()
        x = x.detach()
        if self._mean is None:
            self._mean = x.clone()
            self._var = x.new_zeros(())
            return None
        delta = x - self._mean
        self._mean.add_(delta, alpha=self.alpha)
        self._var = (1.0 - self.alpha) * (self._var + self.alpha * delta.square().mean())
        return self._var if iteration >= self.warmup else None


class WindowedMovingVariance(BaseStoppingRule):
    """ES-WMV: variance of the iterates over a sliding window.

    Over the last ``window`` iterates, the signal is the mean over pixels of
    each pixel's variance across the window. Sums of the window are kept in
    float64 and updated incrementally, so a step costs O(pixels), at the price
    of storing the window: ``window`` iterates per image, 300 MiB for a
    512x512 RGB image in float32 with the default window. A kept
    ``warm_start`` state holds them too, and so does its pickle; the window
    fills one iterate per step, so a fit shorter than ``window`` steps keeps
    only the iterates it made.

    Parameters
    ----------
    window : int, default=100
        Number of iterates in the window (at least 2).
    patience : int, default=1000
        Steps without a new variance minimum after which to stop.
    warmup : int, default=0
        First iteration at which the variance may be checked. The window must
        be full as well, so the first check comes at iteration
        ``max(window - 1, warmup)`` (counting from 0).

    Attributes
    ----------
    best_iter_ : int
        Iteration of the variance minimum.
    best_value_ : float
        The variance at its minimum.

    Examples
    --------
    >>> from skdip import WindowedMovingVariance
    >>> WindowedMovingVariance(window=50).get_params()["window"]
    50
    """

    _parameter_constraints: dict = {
        **BaseStoppingRule._parameter_constraints,
        "window": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, window: Int = 100, patience: Int = 1000, warmup: Int = 0):
        self.window = window
        self.patience = patience
        self.warmup = warmup

    def _start(self) -> None:
        # The window's iterates, one tensor each, added as they come: a kept
        # warm_start state (and its pickle) holds only the iterates seen, not
        # ``window`` slots allocated at the first step.
        self._iterates: list[torch.Tensor] = []
        self._count = 0

    def signal(self, x: torch.Tensor, iteration: int) -> torch.Tensor | None:
        self._check_started()
        x = x.detach()
        # A Python int: a NumPy one of a small type (window=np.uint8(100)) made the
        # step count overflow in the index below after 256 steps.
        window = int(self.window)
        # float64 sums: the variance is tiny next to the mean square, so
        # float32 would lose it to cancellation.
        x64 = x.to(torch.float64)
        if self._count == 0:
            self._sum = torch.zeros_like(x64)
            self._sum_sq = torch.zeros_like(x64)
        if self._count < window:
            # A copy: the caller may update its estimate in place (output averaging).
            self._iterates.append(x.clone(memory_format=torch.contiguous_format))
        else:
            # Full: the oldest iterate leaves the sums and its tensor takes the new one.
            oldest = self._iterates[self._count % window]
            old = oldest.to(torch.float64)
            self._sum.sub_(old)
            self._sum_sq.sub_(old.square())
            oldest.copy_(x)
        self._sum.add_(x64)
        self._sum_sq.add_(x64.square())
        self._count += 1
        if self._count < window or iteration < self.warmup:
            return None
        mean = self._sum / window
        var = (self._sum_sq / window - mean.square()).clamp_min(0.0)
        return var.mean().to(x.dtype)
