"""Morozov's discrepancy principle: stop once the fit is as close to the observation
as the noise lets a clean image be.

A clean image ``x`` sits at a mean squared distance of about the noise power from
its noisy observation ``y``. While a Deep Image Prior fit is still learning the
image, its iterates are further from ``y`` than that; once they come closer, they
have started to reproduce the noise. The principle takes the first iterate whose
residual reaches the noise power.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval

from .._typing import Float, Int
from ..operators import Identity
from ._variance import BaseStoppingRule

__all__ = ["DiscrepancyPrinciple"]


class DiscrepancyPrinciple(BaseStoppingRule):
    """Stop once the residual to the observation falls to the noise power.

    The signal is the mean squared residual of the watched estimate to the
    observation, divided by the noise power: ``mean((x_t - y)**2) / noise_var``.
    Until it first reaches ``tau`` the rule tracks its minimum as the variance
    rules do (so a fit cut by ``max_iter`` returns the closest estimate so far);
    the first iterate at or below ``tau`` is the one selected, and the fit stops
    ``patience`` steps later. It compares the estimate with the observation
    directly, so it serves denoising: :class:`~skdip.DIPDenoiser` without a
    ``noise_model`` (a forward model or a sparse-noise term in between is refused
    when the fit starts). Read through a forward model, the residual was
    measured first (``benchmarks/results/discrepancy_operators.md``, 64x64
    crops at noise 0.01 and 0.03, 6 cases a problem): in deblurring it never
    came down to the noise power within 2500 steps, in super-resolution it
    stopped below ES-EMV wherever it did (5 cases, by 0.02 to 0.36 dB), and in
    inpainting it came down only at noise 0.03 (3 cases, 0.06 to 0.27 dB above
    ES-EMV): too little to offer it there.

    On 26 denoising cases (``benchmarks/results/output_averaging.md`` and
    ``output_averaging_fresh.md``: 64x64 crops, Gaussian noise 0.05 to 0.2, the
    noise power estimated, output averaging as by default, both rules read from
    the same iterates) it did better than ES-EMV at low noise and a little worse
    at high noise: a median +0.90 dB at 0.05 (11 cases, where ES-EMV often ran
    long), +0.23 dB at 0.1 (11), -0.25 dB at 0.2 (4, never higher); from -1.30 to
    +2.22 dB. Its estimate was ready at step 417 against ES-EMV's 1196 (medians),
    so fits end about three times sooner. At 128x128 (``output_averaging_128.md``,
    3 cases at noise 0.05 and 0.1) it was higher on all three, by 0.14 to 2.61 dB.
    On 10 cases recorded afterwards (``output_averaging_fresh2.md``, noise 0.03 to
    0.2) it was far higher on 2 (+4.43 and +2.91 dB) and level or lower on 8
    (down to -0.50 dB, mostly at noise 0.2).
    It relies on white Gaussian noise of the power it is given or estimates: other
    noise (impulse, Poisson at low counts) misleads it, and on an image without
    noise the estimate is near zero, so the rule does not fire before ``max_iter``
    (which warns).

    Parameters
    ----------
    tau : float, default=1.0
        The ratio of the residual to the noise power at which to stop; above 1
        stops earlier (a smoother estimate), below 1 later.
    noise_var : float or None, default=None
        The noise power (variance) of the observation on the scale the network
        fits (``[0, 1]`` for images on it; with ``rescale`` acting, the rescaled
        data's). None estimates it from the observation with the no-reference
        estimator of the ``"discrepancy"`` scorer.
    patience : int, default=100
        Steps after the selected iterate at which to stop (at least 1). With
        output averaging watched raw, keep it at least the averaging delay
        (100 for the default weight 0.99), so the average is due before the end.
    warmup : int, default=100
        Iterations before the signal is checked.

    Attributes
    ----------
    best_iter_ : int
        Iteration of the selected iterate (the first at or below ``tau``; before
        that, the closest so far); -1 before any.
    best_value_ : float
        Its signal.
    noise_var_ : float
        The noise power used, given or estimated (set when a fit starts).

    Examples
    --------
    >>> from skdip import DIPDenoiser
    >>> from skdip.stopping import DiscrepancyPrinciple
    >>> den = DIPDenoiser(early_stopping=DiscrepancyPrinciple(tau=1.0))
    >>> den.get_params()["early_stopping__tau"]
    1.0
    """

    # Reaching the noise level at the first check is no minimum of a settling signal.
    _suspect_first_check_minimum = False

    _parameter_constraints: dict = {
        **BaseStoppingRule._parameter_constraints,
        "tau": [Interval(Real, 0, None, closed="neither")],
        "noise_var": [None, Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        tau: Float = 1.0,
        noise_var: Float | None = None,
        patience: Int = 100,
        warmup: Int = 100,
    ):
        self.tau = tau
        self.noise_var = noise_var
        self.patience = patience
        self.warmup = warmup

    def _start(self) -> None:
        self._observation = None
        self._reached = False

    def _bind_observation(self, observation: torch.Tensor, operator) -> None:
        """Take the observation the fit matches (called by the engine after
        :meth:`start`) and the forward model between the iterates and it (None where a
        noise term or a learned part sits there too)."""
        self._check_started()
        name = type(self).__name__
        _refuse_indirect(operator, name)
        if observation.is_complex():
            raise ValueError(f"{name} needs a real-valued observation")
        self._observation = observation.detach()
        if self.noise_var is not None:
            self.noise_var_ = float(self.noise_var)
            return
        from ..metrics._noise_level import estimate_noise_var

        # (1, C, H, W) on the fit's device -> (H, W, C) on the host, once per fit.
        image = self._observation[0].movedim(0, -1).double().cpu().numpy()
        self.noise_var_ = float(estimate_noise_var(np.ascontiguousarray(image)))

    def signal(self, x: torch.Tensor, iteration: int) -> torch.Tensor | None:
        self._check_started()
        if self._observation is None:
            raise RuntimeError(
                f"{type(self).__name__} compares each iterate with the observation, which "
                "the fit gives it: use it through DIPDenoiser(early_stopping=...) or "
                "skdip's fit_model, not on its own"
            )
        if iteration < self.warmup:
            return None
        residual = (x.detach() - self._observation).square().mean()
        return residual / self.noise_var_

    def observe(self, value: float, iteration: int) -> tuple[bool, bool]:
        self._check_started()
        if iteration < self.warmup:
            return False, False
        if self._reached:
            self._stale += 1
            return False, self._stale >= int(self.patience)
        is_new = value < self.best_value_
        if is_new:
            self.best_value_ = value
            self.best_iter_ = iteration
        if value <= self.tau:
            # All earlier values were above tau: this is also a new minimum.
            self._reached = True
            self._stale = 0
        return is_new, False


def _refuse_indirect(operator, name: str) -> None:
    """Refuse a fit whose observation is not compared with the iterates themselves
    (``operator``: the forward model between them, None where a noise term or a learned
    part sits there too)."""
    if operator is None:
        raise ValueError(
            f"{name} compares the estimate with the observation itself, so it serves "
            "denoising only (DIPDenoiser without a noise_model): here more sits between "
            "them (a noise term, a learned kernel, a forward model or a transform of the "
            "estimate). Use early_stopping='emv' or 'wmv'."
        )
    if not isinstance(operator, Identity):
        # Measured through the operators' residual before offering it: not worth it.
        raise ValueError(
            f"{name} compares the estimate with the observation itself, so it serves "
            f"denoising only; here a forward model ({type(operator).__name__}) sits "
            "between them. Read through a forward model, the residual was measured "
            "(benchmarks/results/discrepancy_operators.md): in deblurring it never came "
            "down to the noise power within 2500 steps (6 cases of 6), in "
            "super-resolution it stopped below ES-EMV (5 of 6, once never), in inpainting "
            "it came down on 3 of 6 (a little above ES-EMV there). Use "
            "early_stopping='emv' or 'wmv'."
        )
