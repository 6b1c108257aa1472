"""Forward operators: the known measurement model ``f`` in ``y = f(x) + noise``."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .._validation import InvalidParameterError, check_int_pair

__all__ = ["ForwardOperator", "Identity"]


def _setting(owner: str | None, param: str) -> tuple[str, type[Exception] | None]:
    """``(name, error)`` for a check of ``param``: ``"Class.param"`` and
    InvalidParameterError (a ValueError and a TypeError) where ``owner`` is the class of
    an operator whose constructor gets it, as the estimators and the other configuration
    objects refuse a bad parameter (a search's ``operator__factor`` too); the plain name
    and None (the check's own ValueError or TypeError) where a function gets it."""
    if owner is None:
        return param, None
    return f"{owner}.{param}", InvalidParameterError


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
    :meth:`input_shape` (and channels through :meth:`input_channels`, where
    the measurement has other channels than its image).

    The settings of skdip's own operators (their constructor's parameters) may
    be assigned after construction: ``op.factor = 4`` checks the value as the
    constructor does and rebuilds the operator as ``Downsample(4, ...)`` with
    its other settings would be (its tensors on the device they were on, in
    the floating dtype they were converted to with ``.double()``, ``.half()``
    or ``.to(dtype)``, else in the one the constructor gives them); a value
    the constructor refuses is
    refused, and the operator is left as it was. skdip's operators refuse a
    bad setting with :class:`~skdip.exceptions.InvalidParameterError` (a
    ValueError and a TypeError) naming it, e.g. "Downsample.factor must be a
    positive int, got 0", as the estimators refuse theirs; data that does not
    fit the model at a call (an image of another shape than the mask) is a
    ValueError. What follows from the
    settings (a filter's ``taps``, ``n_coils``, ``linear``) cannot be
    assigned. A subclass of one of them is rebuilt by the built-in
    constructor: its own tensors, sub-modules and attributes are kept as they
    are, and what its own ``__init__`` derived from the settings is not
    derived again: make a new one instead.

    Attributes
    ----------
    linear : bool
        Whether the operator is linear (then :meth:`adjoint` is defined).
    measures_pixels : bool
        Whether each measurement is one of the image's own pixel values, as
        through :class:`Identity` and :class:`~skdip.operators.PixelMask`
        (False by default). The estimators' ``rescale`` then treats the data
        as :class:`~skdip.DIPDenoiser` does: no room is left for the image
        beyond the measured range, which a blur or a downsampling would
        narrow, and data spanning under 0.5 is stretched to [0, 1]. Set it
        on a subclass that picks or keeps pixels.

    Examples
    --------
    A forward model of your own: every other pixel of each row, measured.

    >>> import numpy as np
    >>> from skdip import DIPReconstructor
    >>> from skdip.operators import ForwardOperator
    >>> class EveryOtherColumn(ForwardOperator):
    ...     def forward(self, x):
    ...         return x[..., ::2]
    ...     def adjoint(self, y):
    ...         x = y.new_zeros((*y.shape[:-1], 2 * y.shape[-1]))
    ...         x[..., ::2] = y
    ...         return x
    ...     def output_shape(self, input_shape):
    ...         h, w = input_shape
    ...         return h, (w + 1) // 2
    ...     def input_shape(self, output_shape):
    ...         h, w = output_shape
    ...         return h, 2 * w
    >>> y = np.random.default_rng(0).random((8, 4))
    >>> est = DIPReconstructor(operator=EveryOtherColumn(), generator="skip-small",
    ...                        max_iter=3, early_stopping=None, random_state=0)
    >>> est.fit(y).reconstruction_.shape
    (8, 8)
    """

    linear: bool = True
    measures_pixels: bool = False
    # op(x) runs forward: typed so, or a type checker reads nn.Module's Callable[..., Any].
    # An annotation only: a __call__ of our own would add a Python frame to every call.
    __call__: Callable[..., torch.Tensor]

    # The constructor's parameters of one of skdip's operators, each with the attribute
    # that holds it (a parameter named otherwise, or held privately, is an alias of it):
    # assigning either rebuilds the operator as the constructor would. Assigned plainly,
    # a setting left what was derived from it stale (a Downsample's taps filtered with
    # the old factor) or failed deep inside a later call. None here, and in operators of
    # one's own unless they name theirs.
    _settings: dict[str, str] = {}
    # What follows from the settings: assigning one of these is refused.
    _derived: tuple[str, ...] = ()

    def __setattr__(self, name: str, value) -> None:
        settings = type(self)._settings
        # After nn.Module.__init__, and not while a state_dict is loaded: torch's
        # load_state_dict(assign=True) sets the stored tensors as attributes, which
        # restores them as unpickling does (a (1, 1, H, W) mask, derived taps).
        if "_buffers" in self.__dict__ and "_loading_state" not in self.__dict__:
            held = self._holds(name)
            alias = name in settings and settings[name] != name
            # A setting's attribute is first set by the constructor, which is let through;
            # one read through a property (the coil maps) is the constructor's to build.
            if alias or (
                name in settings.values()
                and (held or isinstance(getattr(type(self), name, None), property))
            ):
                param = name if name in settings else _param_of(settings, name)
                self._rebuild({param: value})
                return
            if name in type(self)._derived:
                owner, declared = type(self).__name__, getattr(type(self), name, None)
                if hasattr(type(self), name) and not isinstance(declared, property):
                    # A constant of one of skdip's models (Convolution.linear); a user's
                    # subclass, which may change the model, declares its own as it likes.
                    if "_derived" in vars(type(self)):
                        raise AttributeError(f"{owner}.{name} is fixed for this kind of operator")
                elif held or isinstance(declared, property):
                    raise AttributeError(
                        f"{owner}.{name} follows from the operator's settings "
                        f"({', '.join(settings)}) and cannot be assigned: set those, or "
                        f"create a new {owner}(...)"
                    )
        super().__setattr__(name, value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        self.__dict__["_loading_state"] = True
        try:
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        finally:
            del self.__dict__["_loading_state"]

    def _holds(self, name: str) -> bool:
        """Whether the instance itself holds ``name`` (a plain attribute, a buffer, a
        sub-module or a parameter)."""
        return (
            any(
                name in self.__dict__.get(kind, {})
                for kind in ("_buffers", "_modules", "_parameters")
            )
            or name in self.__dict__
        )

    def _setting_values(self) -> dict:
        """The current settings, as the constructor takes them."""
        return {param: getattr(self, attr) for param, attr in type(self)._settings.items()}

    def _rebuild(self, changes: dict) -> None:
        """Rebuild the operator as its constructor does, with ``changes`` to its
        settings: built aside first, so that a refused value leaves it as it was."""
        cls = type(self)
        owner = next(c for c in cls.__mro__ if "_settings" in vars(c))

        def build(settings: dict) -> ForwardOperator:
            made = cls.__new__(cls)
            owner.__init__(made, **settings)
            return made

        current = self._setting_values()
        fresh = build({**current, **changes})
        own = self.__dict__
        # The operator as the constructor builds it from the current settings.
        made = vars(build(current))
        # The device the tensors were on (a GPU, after .to("cuda")) is kept, and so is a
        # floating dtype a buffer was converted to (.double(), .half()): one that is not
        # the constructor's own (float64 coil maps given so follow new maps' dtype).
        device = next((b.device for b in self._buffers.values() if b is not None), None)
        for key, buffer in fresh._buffers.items():
            old, built = own["_buffers"].get(key), made["_buffers"].get(key)
            if buffer is None:
                continue
            converted = (
                old is not None
                and built is not None
                and old.is_floating_point()
                and buffer.is_floating_point()
                and old.dtype != built.dtype
            )
            if device is not None or converted:
                fresh._buffers[key] = buffer.to(device, old.dtype if converted else None)
        # Tensors and sub-modules the constructor does not make (a subclass's own, made
        # by its __init__ beside the built-in one's) are kept, after the new ones.
        for kind in ("_buffers", "_modules", "_parameters"):
            extra = {k: v for k, v in own[kind].items() if k not in made[kind]}
            vars(fresh)[kind] = {**vars(fresh)[kind], **extra}
            if kind == "_buffers":
                fresh._non_persistent_buffers_set |= (
                    extra.keys() & own["_non_persistent_buffers_set"]
                )
        # Hooks and the training flag stay the instance's own. A name the new operator
        # holds as a tensor or a sub-module is no plain attribute any more (a
        # FunctionOperator's function, a module where a function was).
        tensors = {
            key for kind in ("_buffers", "_modules", "_parameters") for key in vars(fresh)[kind]
        }
        # In the new operator's order: pickles, and joblib's hashes of them
        # (Pipeline(memory=...)), are then those of the operator built anew.
        state = {
            k: own[k] if k in _MODULE_MACHINERY and k in own else v for k, v in vars(fresh).items()
        }
        state.update({k: v for k, v in own.items() if k not in state and k not in tensors})
        # In one step: a copy taken meanwhile in another thread (a fit starting) reads the
        # old operator or the new, never one emptied halfway.
        object.__setattr__(self, "__dict__", state)

    def get_params(self, deep: bool = True) -> dict:
        """The operator's settings, as its constructor takes them.

        scikit-learn's convention for nested parameters: an estimator holding the
        operator lists them as ``operator__<name>``, so that a search tunes them
        (``{"operator__factor": [2, 4]}``) and ``set_params`` sets them. An
        operator of one's own has none unless it names them.

        Parameters
        ----------
        deep : bool, default=True
            Unused (no setting holds parameters of its own); scikit-learn's signature.

        Returns
        -------
        params : dict
            Setting name to value; tensors are copies, in the layout the
            constructor takes (a PixelMask's mask as ``(H, W)`` or ``(H, W, C)``).

        Examples
        --------
        >>> from skdip.operators import Downsample
        >>> Downsample(4).get_params()
        {'factor': 4, 'kernel': 'lanczos2', 'padding': 'replicate'}
        """
        return {
            name: value.detach().clone() if isinstance(value, torch.Tensor) else value
            for name, value in self._setting_values().items()
        }

    def set_params(self, **params) -> ForwardOperator:
        """Change settings, as assigning them does, all at once.

        The operator is rebuilt in place as its constructor builds it with the
        new settings and its others (see the class's description); values the
        constructor refuses are refused, leaving it unchanged. Settings that
        must change together (a FunctionOperator's ``adjoint`` and ``linear``)
        are given in one call.

        Parameters
        ----------
        **params
            Settings by their constructor's names.

        Returns
        -------
        self : ForwardOperator
            The operator itself.

        Examples
        --------
        >>> from skdip.operators import Downsample
        >>> Downsample(2).set_params(factor=4, kernel="box")
        Downsample(factor=4, kernel='box', padding='replicate')
        """
        settings = type(self)._settings
        unknown = sorted(set(params) - set(settings))
        if unknown:
            name = type(self).__name__
            valid = (
                f"Valid parameters are: {sorted(settings)}"
                if settings
                else (f"{name} has no settings to set: pass a new {name}(...) instead")
            )
            raise ValueError(f"Invalid parameter {unknown[0]!r} for operator {name}. {valid}.")
        if params:
            self._rebuild(params)
        return self

    def __sklearn_clone__(self) -> ForwardOperator:
        """A copy, for scikit-learn's ``clone`` (of the operator, or of an estimator
        holding it): what ``clone`` made of an operator before operators had
        ``get_params``, which would otherwise have it rebuilt from its settings and
        refuse it, as the constructor copies arrays given to it."""
        return copy.deepcopy(self)

    # Buffers travel as NumPy arrays in pickles and copies: a torch tensor pickles
    # with a storage key, so two copies of one operator hashed apart and joblib's
    # caches (Pipeline(memory=...)) never matched an estimator holding one.
    def __getstate__(self):
        state = self.__dict__.copy()
        if type(self).__setstate__ is not ForwardOperator.__setstate__:
            return state  # a subclass's own __setstate__ expects the tensors as they are
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
        state = dict(state)
        for kind in ("_buffers", "_parameters"):
            if kind in state:
                state[kind] = {
                    name: value.tensor() if isinstance(value, _BufferArray) else value
                    for name, value in state[kind].items()
                }
        super().__setstate__(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Apply the forward model to images ``x`` of shape ``(B, C, H, W)``."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint of a linear operator to measurements ``y``."""
        raise NotImplementedError(f"{type(self).__name__} does not define an adjoint")

    def _measurement_problems(self, measurement: np.ndarray) -> list[str]:
        """What makes an ``(H, W, C)`` measurement look unlike this model's (a layout
        convention missed, values no measurement holds); the estimators warn of each
        before fitting. None known here."""
        return []

    def _measurement_channels(self) -> int | None:
        """The channels of every measurement of this model, where it fixes them (None
        where they follow the image's)."""
        return None

    def _noise_sigma(self, measurement: np.ndarray) -> tuple[float | None, str]:
        """The noise level of an ``(H, W, C)`` measurement, in its units, from the part of
        it this model cannot explain: ``(sigma, "")``; ``(None, why)`` where it cannot be
        read from this measurement; ``(None, "")`` where the model has no estimate of its
        own (the no-reference scorers then read the measurement as an image)."""
        return None, ""

    def _image_values(self, measurement: torch.Tensor) -> torch.Tensor | None:
        """The values of a ``(B, C, h, w)`` measurement that show the image's grey levels,
        where this model keeps them (the engine's saturation warning compares an estimate
        at 0 or 1 with them); None where it does not, as here: a diffraction pattern's or
        a k-space's values are not the image's, nor are a blur's by an unnormalised
        kernel."""
        return None

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """Spatial shape ``(h, w)`` of the measurement of an image of ``input_shape``."""
        return check_int_pair(input_shape, "input_shape")

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        """Spatial shape of the image that produces a measurement of ``output_shape``."""
        return check_int_pair(output_shape, "output_shape")

    def _key_arrays(self) -> list[np.ndarray]:
        """Arrays of the model's held outside its tensors and public attributes: the
        estimators' kept-solve and warm-start keys read them by content, as they read
        the tensors. None here."""
        return []

    def input_channels(self, output_channels: int) -> int:
        """Channels of the image that produces a measurement of ``output_channels``
        channels: as many, unless the model makes other channels of its image's (as
        k-space holds two per coil)."""
        return output_channels


def _param_of(settings: dict[str, str], attribute: str) -> str:
    return next(param for param, attr in settings.items() if attr == attribute)


# nn.Module's own bookkeeping besides the tensors and sub-modules: kept by a rebuild.
_MODULE_MACHINERY = frozenset(vars(nn.Module())) - {
    "_parameters",
    "_buffers",
    "_non_persistent_buffers_set",
    "_modules",
}


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
        device = _loadable_device(self.device)
        tensor = torch.from_numpy(self.array.copy()).to(device=device, dtype=self.dtype)
        if self.parameter:
            return nn.Parameter(tensor, requires_grad=self.requires_grad)
        return tensor.requires_grad_(self.requires_grad)


def _loadable_device(name: str) -> str:
    """The device a saved tensor was on, where this machine has it, else the CPU: an
    operator moved to a GPU (``op.to("cuda")``) failed to load without one, and the
    fitted estimator holding it was lost."""
    device = torch.device(name)
    if device.type == "cuda":
        usable = torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    elif device.type == "mps":
        usable = torch.backends.mps.is_available()
    else:
        usable = device.type == "cpu"
    return name if usable else "cpu"


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

    measures_pixels = True
    _derived = ("linear", "measures_pixels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def _image_values(self, measurement: torch.Tensor) -> torch.Tensor | None:
        return measurement
