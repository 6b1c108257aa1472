"""Type aliases for the numeric parameters of the public API.

A sweep over ``np.arange`` or a ``ParameterGrid`` over an array hands out NumPy
scalars, which the argument checks take (and turn into Python numbers); annotated
``int`` or ``float``, such a parameter made a user's type checker refuse them:
``np.int64`` is no ``int`` to it, nor ``np.float32`` a ``float`` (``np.float64``
is one). Annotations only: a value is checked where it is used, as before.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np

# A float parameter takes an int, as a ``float`` annotation does (PEP 484), so a
# NumPy integer too.
Int: TypeAlias = int | np.integer[Any]
Float: TypeAlias = float | np.floating[Any] | np.integer[Any]
