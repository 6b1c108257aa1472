"""Warnings that point at the caller's code, not at skdip's internals."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings

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
    held = getattr(_HELD, "warnings", None)
    if held is not None:
        held.append((message, category))
        return
    frame = sys._getframe(1)  # warn's caller: stacklevel 2
    level = 2
    while frame is not None and (
        os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)
        or os.path.abspath(frame.f_code.co_filename) == _CONTEXTLIB
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


_HELD = threading.local()


@contextlib.contextmanager
def held_back():
    """Hold back skdip's warnings raised in this block, in this thread only.

    For checks that run twice (before a solve, and in it): the block's warnings
    are dropped when it ends normally, as the second run issues them, and
    issued when it raises, as they may explain the error. Thread-local, unlike
    ``warnings.catch_warnings``, whose filters are the whole process's.
    """
    outer = getattr(_HELD, "warnings", None)
    _HELD.warnings = []
    try:
        yield
    except BaseException:
        caught, _HELD.warnings = _HELD.warnings, outer
        for message, category in caught:
            warn(message, category)
        raise
    finally:
        _HELD.warnings = outer
