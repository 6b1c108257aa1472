"""Stopping rules: when to stop a fit without the clean image."""

from ._deadline import NoiseLevelDeadline
from ._discrepancy import DiscrepancyPrinciple
from ._self_validation import SelfValidation
from ._variance import BaseStoppingRule, ExponentialMovingVariance, WindowedMovingVariance

__all__ = [
    "BaseStoppingRule",
    "DiscrepancyPrinciple",
    "ExponentialMovingVariance",
    "NoiseLevelDeadline",
    "WindowedMovingVariance",
    "SelfValidation",
    "get_stopping_rule",
]


def get_stopping_rule(early_stopping) -> BaseStoppingRule | None:
    """Resolve ``early_stopping`` ("emv", "wmv", "discrepancy", None or a rule) to a rule.

    Parameters
    ----------
    early_stopping : {"emv", "wmv", "discrepancy"}, BaseStoppingRule or None
        A name of a rule with its defaults (``"discrepancy"``:
        :class:`DiscrepancyPrinciple`, for denoising), a rule object (returned
        unchanged; callers clone it before a fit), or None (no rule).

    Returns
    -------
    rule : BaseStoppingRule or None

    Examples
    --------
    >>> from skdip.stopping import get_stopping_rule
    >>> get_stopping_rule("wmv")
    WindowedMovingVariance()
    >>> get_stopping_rule(None) is None
    True
    """
    if early_stopping is None:
        return None
    if isinstance(early_stopping, BaseStoppingRule):
        return early_stopping
    if early_stopping == "emv":
        return ExponentialMovingVariance()
    if early_stopping == "wmv":
        return WindowedMovingVariance()
    if early_stopping == "discrepancy":
        return DiscrepancyPrinciple()
    raise ValueError(
        "early_stopping must be 'emv', 'wmv', 'discrepancy', None or a BaseStoppingRule "
        f"instance, got {early_stopping!r}"
    )
