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
    instead of going on to the next candidate.

    Examples
    --------
    >>> from skdip.exceptions import FitInterrupted
    >>> issubclass(FitInterrupted, KeyboardInterrupt)
    True
    """
