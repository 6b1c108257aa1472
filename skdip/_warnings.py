"""Warnings that point at the caller's code, not at skdip's internals."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside the skdip package.

    The fits run several calls deep (estimator, engine, stopping rule), so a
    fixed ``stacklevel`` would name a different internal line depending on
    the path taken; the user wants to see their own ``fit`` call.
    """
    frame = sys._getframe(1)  # warn's caller: stacklevel 2
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
