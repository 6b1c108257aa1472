"""Forward operators: the known measurement model ``f`` in ``y = f(x) + noise``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._validation import check_int_pair

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
    :meth:`input_shape` (and channels through :meth:`input_channels`, where
    the measurement has other channels than its image).

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y
