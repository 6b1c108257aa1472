"""Forward operators: the known measurement model ``f`` in ``y = f(x) + noise``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ForwardOperator", "Identity"]


class ForwardOperator(nn.Module):
    """Base class of forward models mapping an image to a measurement.

    Operators are ``torch.nn.Module`` objects so that the tensors they hold
    (masks, kernels) follow ``.to(device)`` and pickle with the estimator.
    They act on batched tensors of shape ``(B, C, H, W)`` and are
    differentiable, which is all the fitting engine needs. The engine holds
    an operator's parameters fixed (the forward model is known), and the
    estimators fit a copy, never the caller's object. Settings kept as public
    attributes (or tensors) are part of the estimators' kept-solve key.

    Subclasses implement :meth:`forward` and, when linear, :meth:`adjoint`,
    and say how shapes change through :meth:`output_shape` and
    :meth:`input_shape`.

    Attributes
    ----------
    linear : bool
        Whether the operator is linear (then :meth:`adjoint` is defined).
    """

    linear: bool = True

    # Buffers travel as NumPy arrays in pickles and copies: a torch tensor pickles
    # with a storage key, so two copies of one operator hashed apart and joblib's
    # caches (Pipeline(memory=...)) never matched an estimator holding one.
    def __getstate__(self):
        state = self.__dict__.copy()
        if type(self).__setstate__ is not ForwardOperator.__setstate__:
            return state  # a subclass's own __setstate__ expects the tensors as they are
        # Plain torch modules inside (FunctionOperator(my_module)) travel the same way.
        if state.get("_modules") and _ModuleArrays.can_convert(state["_modules"].values()):
            state["_modules"] = {
                name: _ModuleArrays.of(module) for name, module in state["_modules"].items()
            }
        for kind in ("_buffers", "_parameters"):
            tensors = [t for t in state.get(kind, {}).values() if isinstance(t, torch.Tensor)]
            storages = [
                t.untyped_storage().data_ptr()
                for t in tensors
                if t.layout == torch.strided and t.numel() > 0
            ]
            if len(set(storages)) < len(storages):
                continue  # tensors sharing memory: torch's pickling keeps them shared
            state[kind] = {name: _BufferArray.of(value) for name, value in state[kind].items()}
        return state

    def __setstate__(self, state):
        super().__setstate__(_restored(state))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Apply the forward model to images ``x`` of shape ``(B, C, H, W)``."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint of a linear operator to measurements ``y``."""
        raise NotImplementedError(f"{type(self).__name__} does not define an adjoint")

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """Spatial shape ``(h, w)`` of the measurement of an image of ``input_shape``."""
        return tuple(input_shape)

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        """Spatial shape of the image that produces a measurement of ``output_shape``."""
        return tuple(output_shape)


class _BufferArray:
    """A tensor's values as a NumPy array, with what it takes to restore it."""

    def __init__(self, array, dtype: torch.dtype, device: str, requires_grad: bool, parameter):
        self.array, self.dtype, self.device = array, dtype, device
        self.requires_grad, self.parameter = requires_grad, parameter

    @classmethod
    def of(cls, value):
        """The tensor as an array where NumPy holds it exactly; else the tensor itself
        (None, sparse or other layouts, dtypes NumPy lacks), pickled by torch."""
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            return value
        try:
            array = value.detach().resolve_conj().resolve_neg().cpu().numpy().copy()
        except (TypeError, RuntimeError):
            return value
        return cls(
            array,
            value.dtype,
            str(value.device),
            value.requires_grad,
            isinstance(value, nn.Parameter),
        )

    def tensor(self) -> torch.Tensor:
        tensor = torch.from_numpy(self.array.copy()).to(device=self.device, dtype=self.dtype)
        if self.parameter:
            return nn.Parameter(tensor, requires_grad=self.requires_grad)
        return tensor.requires_grad_(self.requires_grad)


def _restored(state: dict) -> dict:
    """A module's state with its tensors and plain sub-modules made again."""
    state = dict(state)
    for kind in ("_buffers", "_parameters"):
        if kind in state:
            state[kind] = {
                name: value.tensor() if isinstance(value, _BufferArray) else value
                for name, value in state[kind].items()
            }
    if state.get("_modules"):
        state["_modules"] = {
            name: value.module() if isinstance(value, _ModuleArrays) else value
            for name, value in state["_modules"].items()
        }
    return state


class _ModuleArrays:
    """A plain ``nn.Module`` whose tensors travel as NumPy arrays (see
    :meth:`ForwardOperator.__getstate__`), rebuilt as an instance of its class."""

    def __init__(self, cls: type, state: dict):
        self.cls, self.state = cls, state

    @staticmethod
    def can_convert(modules) -> bool:
        """Whether plain modules (an operator's children) may travel as arrays: not
        where torch's own pickling must stay, i.e. a class with its own pickling, or
        sub-modules or tensors that are shared (one module given as both function and
        adjoint, tied weights): a copy must keep them shared. A class's own
        ``__setstate__`` (torch's layers have them) is fine: it gets the state that
        default pickling would give it."""
        tree = [
            m
            for module in modules
            if isinstance(module, nn.Module) and not isinstance(module, ForwardOperator)
            for _, m in module.named_modules(remove_duplicate=False)
            if not isinstance(m, ForwardOperator)  # converts its own tensors
        ]
        if len({id(m) for m in tree}) < len(tree):
            return False
        custom = ("__getstate__", "__reduce__", "__reduce_ex__")
        if any(getattr(type(m), n) is not getattr(nn.Module, n) for m in tree for n in custom):
            return False
        storages = [
            t.untyped_storage().data_ptr()
            for m in tree
            for t in (*m._buffers.values(), *m._parameters.values())
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.numel() > 0
        ]
        return len(set(storages)) == len(storages)

    @classmethod
    def of(cls, module):
        """The module in this form (see :meth:`can_convert`); an operator as it is."""
        if not isinstance(module, nn.Module) or isinstance(module, ForwardOperator):
            return module
        state = module.__dict__.copy()
        for kind in ("_buffers", "_parameters"):
            state[kind] = {name: _BufferArray.of(value) for name, value in state[kind].items()}
        state["_modules"] = {name: cls.of(child) for name, child in state["_modules"].items()}
        return cls(type(module), state)

    def module(self) -> nn.Module:
        module = self.cls.__new__(self.cls)
        module.__setstate__(_restored(self.state))
        return module


class Identity(ForwardOperator):
    """The identity map: the measurement is the image itself (denoising).

    Examples
    --------
    >>> import torch
    >>> from skdip.operators import Identity
    >>> x = torch.rand(1, 3, 8, 8)
    >>> bool(torch.equal(Identity()(x), x))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y
