"""Pixel masks: the inpainting forward model."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_int_pair
from ._base import ForwardOperator, _setting
from ._convolution import _as_float_tensor, _check_image

__all__ = ["PixelMask"]


class PixelMask(ForwardOperator):
    """Keep the observed pixels and zero the others: ``y = m * x`` (inpainting).

    The mask follows skdip's image layout (channels last, like scikit-image): a 2-D mask
    ``(H, W)`` applies to every channel, a 3-D mask ``(H, W, C)`` gives each channel its own
    pattern. ``True``/``1`` marks an observed pixel, ``False``/``0`` a missing one. The operator
    is an orthogonal projection, so it is its own adjoint.

    Parameters
    ----------
    mask : numpy.ndarray or torch.Tensor of shape (H, W) or (H, W, C)
        Boolean or numeric array whose values are all 0 or 1; at least one pixel must be
        observed.

    Attributes
    ----------
    mask : torch.Tensor of shape (1, 1, H, W) or (1, C, H, W)
        The mask as a float buffer of zeros and ones, in the operator's tensor layout (it
        follows ``.to(device)`` and pickles).
    image_shape : tuple of int
        ``(H, W)``, the only spatial shape the operator accepts.
    n_channels : int
        ``C`` for a per-channel mask, 1 for a mask shared by all channels.
    observed_fraction : float
        Fraction of observed entries of the mask.
    linear : bool
        Always ``True``.
    measures_pixels : bool
        Always ``True``: the measurements are the observed pixels themselves.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skdip.operators import PixelMask
    >>> m = np.array([[True, False], [False, True]])
    >>> op = PixelMask(m)
    >>> x = torch.ones(1, 3, 2, 2)
    >>> op(x)[0, 0].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> op.mask.shape, op.observed_fraction
    (torch.Size([1, 1, 2, 2]), 0.5)
    >>> PixelMask(np.ones((4, 4, 3))).mask.shape
    torch.Size([1, 3, 4, 4])
    """

    linear = True
    measures_pixels = True
    _settings = {"mask": "mask"}
    _derived = ("image_shape", "n_channels", "observed_fraction", "linear", "measures_pixels")

    def __init__(self, mask: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        name, error = _setting("PixelMask", "mask")
        m = _as_float_tensor(mask, name, error)
        if m.ndim == 2:
            m = m[None, None]
        elif m.ndim == 3:
            m = m.permute(2, 0, 1)[None]
        else:
            raise error(
                f"{name} must have shape (H, W) or (H, W, C) (channels last), got {tuple(m.shape)}"
            )
        if not bool(((m == 0) | (m == 1)).all()):
            raise error(f"{name} must contain only 0/1 (or False/True) values")
        if not bool(m.any()):
            raise error(f"{name} has no observed pixel (all entries are 0/False)")
        self.register_buffer("mask", m.contiguous())

    def _setting_values(self) -> dict:
        # The buffer back in the layout the constructor takes: (H, W), or (H, W, C).
        mask = self.mask.detach()
        return {"mask": mask[0, 0] if mask.shape[1] == 1 else mask[0].permute(1, 2, 0)}

    @property
    def image_shape(self) -> tuple[int, int]:
        """The spatial shape ``(H, W)`` of the mask."""
        return int(self.mask.shape[-2]), int(self.mask.shape[-1])

    @property
    def n_channels(self) -> int:
        """Number of mask channels (1 when the mask is shared by all channels)."""
        return int(self.mask.shape[1])

    @property
    def observed_fraction(self) -> float:
        """Fraction of observed mask entries."""
        return float(self.mask.mean())

    def extra_repr(self) -> str:
        return (
            f"image_shape={self.image_shape}, n_channels={self.n_channels}, "
            f"observed_fraction={self.observed_fraction:.3g}"
        )

    def _channels_first_hint(self, shape: tuple[int, int]) -> str:
        """A word where the mask looks given channels-first: a ``(C, H, W)`` mask is read
        as ``(H, W, C)``, so its "shape" is ``(C, H)`` and its channels ``W``."""
        if self.n_channels > 1 and tuple(shape) == (self.image_shape[1], self.n_channels):
            return (
                "; the mask looks channels-first (C, H, W), but PixelMask takes (H, W) or "
                "(H, W, C): pass np.moveaxis(mask, 0, -1)"
            )
        return ""

    def _masked(self, x: torch.Tensor, name: str) -> torch.Tensor:
        _check_image(x, name)
        if tuple(x.shape[-2:]) != self.image_shape:
            raise ValueError(
                f"{name} has spatial shape {tuple(x.shape[-2:])} but the mask is "
                f"{self.image_shape}{self._channels_first_hint(tuple(x.shape[-2:]))}"
            )
        if self.n_channels not in (1, x.shape[1]):
            raise ValueError(
                f"{name} has {x.shape[1]} channels but the mask has {self.n_channels} "
                "(use a 2-D mask to share it across channels)"
            )
        return x * self.mask.to(dtype=x.dtype, device=x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero the unobserved pixels of ``x`` (shape ``(B, C, H, W)``)."""
        return self._masked(x, "x")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward`: a mask is self-adjoint."""
        return self._masked(y, "y")

    def _image_values(self, measurement: torch.Tensor) -> torch.Tensor | None:
        # The observed pixels only: the unobserved are zeros, not the image's.
        observed = self.mask.to(device=measurement.device).expand_as(measurement) > 0
        return measurement[observed]

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """The input shape, which must be the mask's ``(H, W)``."""
        return self._check_shape(input_shape, "input_shape")

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        """The output shape, which must be the mask's ``(H, W)``."""
        return self._check_shape(output_shape, "output_shape")

    def _check_shape(self, shape: tuple[int, int], name: str) -> tuple[int, int]:
        shape = check_int_pair(shape, name)
        if shape != self.image_shape:
            raise ValueError(
                f"{name} {shape} does not match the mask's shape {self.image_shape}"
                f"{self._channels_first_hint(shape)}"
            )
        return shape
