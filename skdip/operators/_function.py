"""Wrap a user-supplied torch function as a forward operator."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._typing import Int
from .._validation import check_int, check_int_pair
from ._base import ForwardOperator, _setting

__all__ = ["FunctionOperator"]


class FunctionOperator(ForwardOperator):
    """A forward operator defined by any differentiable torch callable ``x -> y``.

    Use it for measurement models that skdip does not ship. The fitting engine only needs
    ``function`` to be differentiable with torch autograd; the adjoint is optional and only
    used by methods that need one.

    Lambdas and local functions cannot be pickled, so an estimator holding such an operator
    cannot be pickled, copied to worker processes (``n_jobs``) or saved. Pass functions
    defined at module level (or ``torch.nn.Module`` instances) when you need that.

    Parameters
    ----------
    function : callable
        Maps a ``(B, C, H, W)`` tensor to the measurement tensor. A ``torch.nn.Module`` is
        registered as a sub-module, so its buffers and parameters follow ``.to(device)``
        (its parameters are held fixed during a fit: only the network is fitted).
    adjoint : callable, default=None
        The adjoint of ``function`` (only for ``linear=True``). Without it :meth:`adjoint`
        raises ``NotImplementedError``.
    output_shape : callable, default=None
        Maps an image's spatial shape ``(H, W)`` to the measurement's ``(h, w)``. Default:
        the shape is unchanged.
    input_shape : callable, default=None
        The inverse of ``output_shape``. Default: the shape is unchanged.
    input_channels : int or callable, default=None
        The channels of the image behind a measurement: a number (3 for a colour scene
        seen by a grey camera), or a callable mapping the measurement's channel count to
        the image's. Default: as many as the measurement. The estimators read it when
        their ``output_channels`` is None.
    linear : bool, default=False
        Whether ``function`` is linear.

    Attributes
    ----------
    function : callable
        The forward function.
    adjoint_function : callable or None
        The adjoint function.
    output_shape_function, input_shape_function : callable or None
        The shape functions.
    input_channels_rule : int, callable or None
        The ``input_channels`` given.
    linear : bool
        Whether the operator is declared linear.

    Examples
    --------
    >>> import torch
    >>> from skdip.operators import FunctionOperator
    >>> def double(x):
    ...     return 2 * x
    >>> op = FunctionOperator(double, adjoint=double, linear=True)
    >>> op(torch.ones(1, 1, 2, 2)).sum().item()
    8.0
    >>> op.adjoint(torch.ones(1, 1, 2, 2)).sum().item()
    8.0
    >>> crop = FunctionOperator(
    ...     lambda x: x[..., 1:-1, 1:-1],
    ...     output_shape=lambda s: (s[0] - 2, s[1] - 2),
    ...     input_shape=lambda s: (s[0] + 2, s[1] + 2),
    ...     linear=True,
    ... )
    >>> crop.output_shape((8, 8)), crop.input_shape((6, 6))
    ((6, 6), (8, 8))
    """

    # The parameters named as methods are held under other names.
    _settings = {
        "function": "function",
        "adjoint": "adjoint_function",
        "output_shape": "output_shape_function",
        "input_shape": "input_shape_function",
        "input_channels": "input_channels_rule",
        "linear": "linear",
    }

    def __init__(
        self,
        function: Callable[[torch.Tensor], torch.Tensor],
        adjoint: Callable[[torch.Tensor], torch.Tensor] | None = None,
        output_shape: Callable[[tuple[int, int]], tuple[int, int]] | None = None,
        input_shape: Callable[[tuple[int, int]], tuple[int, int]] | None = None,
        input_channels: Int | Callable[[int], int] | None = None,
        linear: bool = False,
    ) -> None:
        super().__init__()
        for name, value in [
            ("function", function),
            ("adjoint", adjoint),
            ("output_shape", output_shape),
            ("input_shape", input_shape),
        ]:
            if value is None and name != "function":
                continue
            if not callable(value):
                name, error = _setting("FunctionOperator", name)
                raise error(f"{name} must be callable, got {type(value).__name__}")
        if input_channels is not None and not callable(input_channels):
            name, error = _setting("FunctionOperator", "input_channels")
            check_int(input_channels, name, 1, error=error)
        if not isinstance(linear, bool):
            name, error = _setting("FunctionOperator", "linear")
            raise error(f"{name} must be a bool, got {type(linear).__name__}")
        if adjoint is not None and not linear:
            name, error = _setting("FunctionOperator", "adjoint")
            raise error(
                f"{name} is given, but an adjoint is only meaningful for a linear operator: "
                "pass linear=True"
            )
        self.function = function
        self.adjoint_function = adjoint
        self.output_shape_function = output_shape
        self.input_shape_function = input_shape
        self.input_channels_rule = input_channels
        self.linear = linear

    def extra_repr(self) -> str:
        name = getattr(self.function, "__qualname__", type(self.function).__name__)
        return f"function={name}, linear={self.linear}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``function`` to ``x``."""
        return self._call(self.function, x, "function")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the user-supplied adjoint to ``y``."""
        if self.adjoint_function is None:
            raise NotImplementedError(
                "this FunctionOperator has no adjoint: pass adjoint=... (and linear=True)"
            )
        return self._call(self.adjoint_function, y, "adjoint")

    @staticmethod
    def _call(fn: Callable, t: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
        out = fn(t)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
        return out

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """Measurement shape given by ``output_shape`` (unchanged by default)."""
        shape = check_int_pair(input_shape, "input_shape")
        if self.output_shape_function is None:
            return shape
        return check_int_pair(self.output_shape_function(shape), "the result of output_shape")

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        """Image shape given by ``input_shape`` (unchanged by default)."""
        shape = check_int_pair(output_shape, "output_shape")
        if self.input_shape_function is None:
            return shape
        return check_int_pair(self.input_shape_function(shape), "the result of input_shape")

    def input_channels(self, output_channels: int) -> int:
        """Image channels given by ``input_channels`` (as many as the measurement's by
        default)."""
        rule = self.input_channels_rule
        if rule is None:
            return output_channels
        if callable(rule):
            return check_int(rule(output_channels), "the result of input_channels", 1)
        return int(rule)
