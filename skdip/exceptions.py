"""Exceptions skdip raises for its own conditions, and the one it raises for a bad
parameter.

``InvalidParameterError`` is scikit-learn's own class, given here under a public
name: scikit-learn keeps it in a private module
(``sklearn.utils._param_validation``), so catching it meant importing from there.
It is the same class object, so ``except skdip.exceptions.InvalidParameterError``
also catches what scikit-learn itself raises for a bad parameter. It subclasses
both :class:`ValueError` and :class:`TypeError`, so code catching either keeps
working.

Examples
--------
A bad parameter is told when the estimator is fitted:

>>> import numpy as np
>>> from skdip import DIPDenoiser
>>> from skdip.exceptions import InvalidParameterError
>>> try:
...     DIPDenoiser(max_iter=-1).fit(np.zeros((8, 8)))
... except InvalidParameterError as error:
...     print(type(error).__name__)
InvalidParameterError
"""

from __future__ import annotations

from typing import Any

# Re-exported: scikit-learn has no public path for it (see the module docstring).
from sklearn.utils._param_validation import InvalidParameterError

__all__ = ["FitInterrupted", "InterruptionWarning", "InvalidParameterError", "NothingToAverage"]


class FitInterrupted(KeyboardInterrupt):
    """Raised when a fit that Ctrl-C cut short is scored, and by
    :class:`~skdip.model_selection.AverageOfBest` when Ctrl-C cut its fits (it
    keeps nothing: an average of cut fits is no result).

    Ctrl-C during a fit keeps the best estimate so far (``stopped_by_ ==
    "interrupted"``), but a truncated fit is not scored: ``score`` and skdip's
    scorers raise this exception instead. It is a :class:`KeyboardInterrupt`,
    so the interruption reaches the caller: a scikit-learn search, which
    catches ordinary exceptions and records a failed score, stops there
    instead of going on to the next candidate. An estimator whose own fit was
    cut is not scored on other images either (a ``KFold`` search scores test
    images it solves anew). Being a ``KeyboardInterrupt`` it passes through
    ``except Exception``: a test runner or a worker pool that scores such a
    fit sees an interruption, as it would have seen the Ctrl-C.

    Parameters
    ----------
    *args
        The message, as for any exception.
    estimators : list of estimators or None, default=None
        Kept as the attribute of that name.

    Attributes
    ----------
    estimators : list of estimators or None
        Raised by :class:`~skdip.model_selection.AverageOfBest`: every setting's
        fit, in the order of the grid (``stopped_by_ == "interrupted"`` where
        Ctrl-C cut it or it ran no step). None when a scorer raised it.

    Examples
    --------
    >>> from skdip.exceptions import FitInterrupted
    >>> issubclass(FitInterrupted, KeyboardInterrupt)
    True
    """

    # Declared, not only set where AverageOfBest raises it: a type checker reads
    # ``error.estimators`` from the class.
    estimators: list[Any] | None

    def __init__(self, *args: object, estimators: list[Any] | None = None) -> None:
        super().__init__(*args)
        self.estimators = estimators


class NothingToAverage(ValueError):
    """Raised by :class:`~skdip.model_selection.AverageOfBest` when no setting
    could be scored on an image, so that there is nothing to average there.

    Every setting was fitted before the scores were asked for: the fits are
    not lost, but kept in ``estimators``, to be scored by hand (for example
    with the noise level given, ``get_scorer("discrepancy", sigma=...)``)
    without a second solve. A :class:`ValueError`, so code catching that
    still catches it.

    Parameters
    ----------
    *args
        The message, as for any exception.
    estimators : list of estimators, default=()
        Kept as the attribute of that name.

    Attributes
    ----------
    estimators : list of estimators
        Every setting's fit, in the order of the grid.

    Examples
    --------
    >>> from skdip.exceptions import NothingToAverage
    >>> issubclass(NothingToAverage, ValueError)
    True
    """

    estimators: list[Any]

    # Keyword-only, with a default: pickle makes the error again from its message
    # alone, then restores the attribute (a search's worker sends it back so).
    def __init__(self, *args: object, estimators: list[Any] | tuple[Any, ...] = ()) -> None:
        super().__init__(*args)
        self.estimators = list(estimators)


class InterruptionWarning(RuntimeWarning):
    """Says what a Ctrl-C kept: the best estimate so far of the fit it cut, and
    which fits of the call ran no step.

    A :class:`RuntimeWarning`, so filters on that category still apply; its own
    category lets a caller silence these notes alone.

    Examples
    --------
    >>> import warnings
    >>> from skdip.exceptions import InterruptionWarning
    >>> warnings.filterwarnings("ignore", category=InterruptionWarning)
    """
