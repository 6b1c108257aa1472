"""Anti-aliased downsampling by an integer factor (the super-resolution forward model)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._typing import Int
from .._validation import check_int, check_int_pair, working_dtype
from ._base import ForwardOperator, _setting
from ._convolution import _PADDING_MODES, _check_image, _pad, _pad_adjoint

__all__ = ["Downsample", "downsampling_kernel"]

_KERNELS = ("lanczos2", "bicubic", "box")


def _lanczos(t: np.ndarray, a: int) -> np.ndarray:
    """Lanczos window of order ``a``: ``sinc(t) sinc(t / a)`` on ``|t| < a``, zero elsewhere."""
    return np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)


def _cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (``a = -0.5``, the usual "bicubic"), support ``|t| < 2``."""
    s = np.abs(t)
    inner = (a + 2.0) * s**3 - (a + 3.0) * s**2 + 1.0
    outer = a * s**3 - 5.0 * a * s**2 + 8.0 * a * s - 4.0 * a
    return np.where(s <= 1.0, inner, np.where(s < 2.0, outer, 0.0))


def downsampling_kernel(factor: Int, kernel: str = "lanczos2") -> tuple[np.ndarray, int]:
    """1-D anti-aliasing filter for downsampling by ``factor``, normalised to sum 1.

    Low-resolution sample ``i`` sits at the centre of the block of high-resolution samples
    ``factor * i, ..., factor * i + factor - 1``, i.e. at high-resolution coordinate
    ``factor * i + (factor - 1) / 2``. The filter is the continuous kernel stretched by
    ``factor`` (so its support is ``factor`` times wider than the kernel's own support) and
    sampled at the high-resolution pixel offsets from that centre.

    Parameters
    ----------
    factor : int
        Downsampling factor (at least 1).
    kernel : {"lanczos2", "bicubic", "box"}, default="lanczos2"
        ``"lanczos2"``: Lanczos window with ``a = 2``; ``"bicubic"``: Keys' cubic with
        ``a = -0.5``; ``"box"``: the block mean.

    Returns
    -------
    taps : numpy.ndarray of shape (K,)
        Filter weights, summing to 1.
    offset : int
        High-resolution index of the first tap relative to the first sample of the block, so
        that ``low[i] = sum_j taps[j] * high[factor * i + offset + j]``. It is ``<= 0``.

    Examples
    --------
    >>> from skdip.operators import downsampling_kernel
    >>> taps, offset = downsampling_kernel(2, "box")
    >>> taps.tolist(), offset
    ([0.5, 0.5], 0)
    >>> taps, offset = downsampling_kernel(2, "lanczos2")
    >>> len(taps), offset, round(float(taps.sum()), 12)
    (8, -3, 1.0)
    """
    factor = check_int(factor, "factor", 1)
    kernel = _check_kernel_name(kernel)
    centre = (factor - 1) / 2.0
    if kernel == "box":
        return np.full(factor, 1.0 / factor), 0
    support = 2.0 * factor  # both lanczos2 and bicubic have support 2, stretched by the factor
    first = int(np.floor(centre - support)) + 1
    last = int(np.ceil(centre + support)) - 1
    positions = np.arange(first, last + 1)
    t = (positions - centre) / factor
    taps = _lanczos(t, 2) if kernel == "lanczos2" else _cubic(t)
    # drop taps that are exactly zero at the ends (e.g. factor 1), they only widen the padding
    nonzero = np.flatnonzero(np.abs(taps) > 1e-12)
    taps = taps[nonzero[0] : nonzero[-1] + 1]
    offset = first + int(nonzero[0])
    return taps / taps.sum(), offset


def _check_kernel_name(kernel: object, owner: str | None = None) -> str:
    """The name of a downsampling kernel, checked (``owner``: see :func:`_setting`)."""
    if not isinstance(kernel, str) or kernel not in _KERNELS:
        name, error = _setting(owner, "kernel")
        raise (error or ValueError)(f"{name} must be one of {list(_KERNELS)}, got {kernel!r}")
    return kernel


class Downsample(ForwardOperator):
    """Anti-aliased downsampling by an integer factor, the super-resolution forward model.

    Each axis is filtered with a 1-D low-pass kernel stretched by ``factor`` and normalised to
    sum 1 (so constant images stay constant), then subsampled: low-resolution pixel ``i`` is the
    filtered value at the centre of high-resolution block ``i`` (pixels ``factor * i`` to
    ``factor * i + factor - 1``). With ``kernel="box"`` this is exactly the block mean. The
    default Lanczos-2 filter is the one of the Deep Image Prior super-resolution experiments.

    The operator is implemented as padding followed by a strided separable convolution, and
    its :meth:`adjoint` is the exact adjoint of both (a transposed convolution, then the
    padded samples are added back onto the border pixels they were copied from).

    Parameters
    ----------
    factor : int
        Downsampling factor, at least 1. Image heights and widths must be multiples of it.
    kernel : {"lanczos2", "bicubic", "box"}, default="lanczos2"
        Anti-aliasing filter: Lanczos window with ``a = 2``, Keys' cubic (``a = -0.5``), or the
        box filter (block mean, no padding needed).
    padding : {"replicate", "reflect", "circular", "zeros"}, default="replicate"
        How the image is extended beyond its borders for the filter taps that fall outside it:
        repeat the edge pixel, mirror about the edge pixel, wrap around, or zeros. All choices
        keep the operator linear; all but ``"zeros"`` keep constant images constant.

    Attributes
    ----------
    factor : int
        The downsampling factor.
    kernel : str
        The filter name.
    padding : str
        The border handling.
    taps : torch.Tensor of shape (K,)
        The 1-D filter (a registered buffer; the 2-D filter is its outer product), in
        torch's default dtype, as :class:`Convolution`'s kernel.
    offset : int
        Index of the first tap relative to the first pixel of a block (see
        :func:`downsampling_kernel`).
    linear : bool
        Always ``True``.

    Examples
    --------
    >>> import torch
    >>> from skdip.operators import Downsample
    >>> op = Downsample(4)
    >>> x = torch.rand(1, 3, 32, 32)
    >>> op(x).shape
    torch.Size([1, 3, 8, 8])
    >>> op.output_shape((32, 32)), op.input_shape((8, 8))
    ((8, 8), (32, 32))
    >>> box = Downsample(2, kernel="box")
    >>> box(torch.arange(4.0).reshape(1, 1, 2, 2)).item()
    1.5
    """

    linear = True
    _settings = {"factor": "factor", "kernel": "kernel", "padding": "padding"}
    _derived = ("taps", "offset", "linear")

    def __init__(self, factor: Int, kernel: str = "lanczos2", padding: str = "replicate") -> None:
        super().__init__()
        name, error = _setting("Downsample", "factor")
        factor = check_int(factor, name, 1, error=error)
        _check_kernel_name(kernel, "Downsample")
        if not isinstance(padding, str) or padding not in _PADDING_MODES:
            name, error = _setting("Downsample", "padding")
            raise error(f"{name} must be one of {list(_PADDING_MODES)}, got {padding!r}")
        taps, offset = downsampling_kernel(factor, kernel)
        self.factor = int(factor)
        self.kernel = kernel
        self.padding = padding
        self.offset = offset
        self.register_buffer("taps", torch.as_tensor(taps, dtype=working_dtype()))

    def extra_repr(self) -> str:
        return f"factor={self.factor}, kernel={self.kernel!r}, padding={self.padding!r}"

    def _axis_pads(self) -> tuple[int, int]:
        """Samples added before and after an axis whose length is a multiple of the factor."""
        k = self.taps.shape[0]
        before = -self.offset
        # the last block starts at n - factor and reads up to (n - factor) + offset + k - 1
        after = self.offset + k - self.factor
        return max(before, 0), max(after, 0)

    def _crops(self) -> tuple[int, int]:
        """Samples dropped at the start/end of an axis when the filter is narrower than a block."""
        k = self.taps.shape[0]
        return max(self.offset, 0), max(self.factor - self.offset - k, 0)

    def _weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        taps = self.taps.to(dtype=x.dtype, device=x.device)
        # re-normalise in the working precision: the buffer may have been rounded (float32)
        taps = taps / taps.sum()
        k = taps.shape[0]
        return taps.reshape(1, 1, k, 1), taps.reshape(1, 1, 1, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample images ``x`` of shape ``(B, C, H, W)`` to ``(B, C, H // f, W // f)``."""
        _check_image(x)
        h, w = self.output_shape(tuple(x.shape[-2:]))
        n, c = x.shape[:2]
        before, after = self._axis_pads()
        flat = x.reshape(n * c, 1, *x.shape[-2:])
        flat = _pad(flat, (before, after, before, after), self.padding)
        crop0, crop1 = self._crops()
        if crop0 or crop1:
            flat = flat[..., crop0 : flat.shape[-2] - crop1, crop0 : flat.shape[-1] - crop1]
        col, row = self._weights(x)
        out = F.conv2d(flat, col, stride=(self.factor, 1))
        out = F.conv2d(out, row, stride=(1, self.factor))
        return out.reshape(n, c, h, w)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Exact adjoint: map ``(B, C, h, w)`` measurements to ``(B, C, h * f, w * f)`` images."""
        _check_image(y, "y")
        big_h, big_w = self.input_shape(tuple(y.shape[-2:]))
        n, c, h, w = y.shape
        col, row = self._weights(y)
        out = F.conv_transpose2d(y.reshape(n * c, 1, h, w), row, stride=(1, self.factor))
        out = F.conv_transpose2d(out, col, stride=(self.factor, 1))
        crop0, crop1 = self._crops()
        if crop0 or crop1:
            out = F.pad(out, (crop0, crop1, crop0, crop1))
        before, after = self._axis_pads()
        out = _pad_adjoint(out, (before, after, before, after), self.padding, (big_h, big_w))
        return out.reshape(n, c, big_h, big_w)

    def _image_values(self, measurement: torch.Tensor) -> torch.Tensor | None:
        # A local average (the filter sums to 1): a picture's levels, if not its detail.
        return measurement

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """``(H // factor, W // factor)``; ``H`` and ``W`` must be multiples of the factor."""
        h, w = check_int_pair(input_shape, "input_shape")
        f = self.factor
        if h < f or w < f:
            raise ValueError(
                f"image shape {(h, w)} is smaller than the downsampling factor {f}: each "
                "side needs at least one low-resolution pixel"
            )
        if h % f or w % f:
            raise ValueError(
                f"image shape {(h, w)} is not divisible by the downsampling factor {f}; "
                f"crop the image to {(h - h % f, w - w % f)} first"
            )
        return h // f, w // f

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        """``(h * factor, w * factor)``."""
        h, w = check_int_pair(output_shape, "output_shape")
        return h * self.factor, w * self.factor
