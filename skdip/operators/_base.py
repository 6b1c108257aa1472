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
        if _shares_memory(self):
            return state  # torch's own pickling keeps shared tensors shared
        # Plain torch modules inside (FunctionOperator(my_module)) travel the same way.
        if state.get("_modules") and _ModuleArrays.can_convert(state):
            state["_modules"] = {
                name: _ModuleArrays.of(module) for name, module in state["_modules"].items()
            }
        for kind in ("_buffers", "_parameters"):
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


def _shares_memory(module: nn.Module) -> bool:
    """Whether two tensors of the module's tree (its own, its children's) share memory."""
    tensors = [
        t
        for _, t in (
            *module.named_parameters(remove_duplicate=False),
            *module.named_buffers(remove_duplicate=False),
        )
        if not isinstance(t, nn.parameter.UninitializedTensorMixin)
        and t.layout == torch.strided
        and t.numel() > 0
    ]
    storages = [t.untyped_storage().data_ptr() for t in tensors]
    return len(set(storages)) < len(storages)


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


_SIMPLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)
# What default pickling would call on a module; a class that changes any of it is
# left to that pickling.
_PICKLING = (
    "__getstate__",
    "__setstate__",
    "__reduce__",
    "__reduce_ex__",
    "__deepcopy__",
    "__copy__",
    "__getnewargs__",
    "__getnewargs_ex__",
)


def _is_simple(value) -> bool:
    if isinstance(value, tuple | list | set | frozenset):
        return all(_is_simple(v) for v in value)
    return type(value) in _SIMPLE


def _is_plain_module(module: nn.Module) -> bool:
    """A module that default pickling rebuilds from its ``__dict__`` alone."""
    cls = type(module)
    if isinstance(module, torch.jit.ScriptModule) or "Lazy" in cls.__name__:
        return False
    for name in _PICKLING:
        own = getattr(cls, name, None)
        if own is not getattr(nn.Module, name, None) and name != "__setstate__":
            return False
    state = module.__dict__
    if not {"_parameters", "_buffers", "_modules"} <= state.keys():
        return False
    for name, value in state.items():
        if name in ("_parameters", "_buffers", "_modules"):
            continue
        if "hook" in name:
            if value:  # hooks may hold the module's own bound methods
                return False
        elif not _is_simple(value):
            return False
    return all(
        p is None or (type(p) is nn.Parameter and not p.__dict__)
        for p in state["_parameters"].values()
    ) and all(
        value is None or (type(value) is torch.Tensor and not value.__dict__)
        for value in state["_buffers"].values()
    )


class _ModuleArrays:
    """A plain ``nn.Module`` whose tensors travel as NumPy arrays (see
    :meth:`ForwardOperator.__getstate__`), rebuilt as an instance of its class."""

    def __init__(self, cls: type, state: dict):
        self.cls, self.state = cls, state

    @staticmethod
    def can_convert(operator_state: dict) -> bool:
        """Whether an operator's plain child modules may travel as arrays.

        Only where that is exactly what default pickling would rebuild: every module
        in the tree a plain one (no pickling or copying of its own, not scripted or
        lazy, no hooks), holding plain parameters and buffers and simple settings
        (numbers, strings, tuples of them), nothing shared inside the tree or with
        the operator, and no reference to the tree from elsewhere in the operator (a
        bound method as the adjoint). Anything else keeps torch's own pickling: it
        is right, only its copies hash apart.
        """
        tree = [
            m
            for module in operator_state["_modules"].values()
            if isinstance(module, nn.Module) and not isinstance(module, ForwardOperator)
            for _, m in module.named_modules(remove_duplicate=False)
        ]
        if any(isinstance(m, ForwardOperator) for m in tree):
            return False  # it converts itself; mixing the two is not worth the risk
        if len({id(m) for m in tree}) < len(tree) or not all(map(_is_plain_module, tree)):
            return False
        ids = {id(m) for m in tree}
        for name, value in operator_state.items():
            if name in ("_modules", "_buffers", "_parameters"):
                continue
            if id(value) in ids or id(getattr(value, "__self__", None)) in ids:
                return False
        return True  # shared tensors were ruled out first (_shares_memory)

    @classmethod
    def of(cls, module):
        """The module in this form (see :meth:`can_convert`); an operator as it is."""
        if not isinstance(module, nn.Module) or isinstance(module, ForwardOperator):
            return module
        state = module.__getstate__()
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
