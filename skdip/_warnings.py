"""Warnings that point at the caller's code, not at skdip's internals."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from types import FrameType

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# A warning held back (held_back) is issued from a context manager's exit, under
# contextlib's own frame: skipped too, so that it still names the caller's line.
_CONTEXTLIB = os.path.abspath(contextlib.__file__)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside the skdip package.

    The fits run several calls deep (estimator, engine, stopping rule), so a
    fixed ``stacklevel`` would name a different internal line depending on
    the path taken; the user wants to see their own ``fit`` call.
    """
    block = getattr(_HELD, "block", None)
    while block is not None:
        if issubclass(category, block.category):
            block.append((message, category))
            return
        block = block.outer
    frame: FrameType | None = sys._getframe(1)  # warn's caller: stacklevel 2
    level = 2
    while frame is not None and (
        os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)
        or os.path.abspath(frame.f_code.co_filename) == _CONTEXTLIB
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


_HELD = threading.local()


class _HeldWarnings(list):
    """The warnings a :func:`held_back` block holds: ``(message, category)`` pairs."""

    def __init__(self, category: type[Warning], outer: _HeldWarnings | None) -> None:
        super().__init__()
        self.category, self.outer = category, outer


@contextlib.contextmanager
def held_back(category: type[Warning] = Warning):
    """Hold back skdip's warnings of ``category`` raised in this block, in this
    thread only (others go out as usual, or to an enclosing block).

    For checks that run twice (before a solve, and in it): the block's warnings
    are dropped when it ends normally, as the second run issues them, and
    issued when it raises, as they may explain the error. Yields the held
    ``(message, category)`` pairs, for a caller that decides otherwise.
    Thread-local, unlike ``warnings.catch_warnings``, whose filters are the
    whole process's.
    """
    outer = getattr(_HELD, "block", None)
    _HELD.block = held = _HeldWarnings(category, outer)
    try:
        yield held
    except BaseException:
        _HELD.block = outer
        for message, category in held:
            warn(message, category)
        raise
    finally:
        _HELD.block = outer
