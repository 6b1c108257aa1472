"""Exceptions skdip raises for its own conditions."""

from __future__ import annotations

__all__ = ["FitInterrupted"]


class FitInterrupted(KeyboardInterrupt):
    """Raised when a fit that Ctrl-C cut short is scored.

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

    Examples
    --------
    >>> from skdip.exceptions import FitInterrupted
    >>> issubclass(FitInterrupted, KeyboardInterrupt)
    True
    """
