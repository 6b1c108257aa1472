"""Convolution with a known kernel, and the padding/validation helpers the operators share."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._base import ForwardOperator, _check_spatial_shape

__all__ = ["Convolution", "convolve", "convolve_adjoint"]

_PADDING_MODES = ("replicate", "reflect", "circular", "zeros")
_BOUNDARIES = ("circular", "valid")


# ----------------------------------------------------------------------------------------------
# shared validation helpers (private; also used by the other operator modules)
# ----------------------------------------------------------------------------------------------
def _check_image(x: object, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a floating ``(B, C, H, W)`` tensor and return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}"
        )
    if x.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _as_float_tensor(value: object, name: str) -> torch.Tensor:
    """Convert an array-like (numpy array, tensor, nested lists) to a finite float tensor.

    The result is detached, on the CPU, in the default floating dtype.
    """
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
    elif isinstance(value, (np.ndarray, list, tuple)):
        arr = np.asarray(value)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
        ):
            raise TypeError(f"{name} must contain numbers, got an array of dtype {arr.dtype}")
        t = torch.from_numpy(np.array(arr, copy=True))
    else:
        raise TypeError(
            f"{name} must be a numpy array or a torch.Tensor, got {type(value).__name__}"
        )
    if t.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.to(torch.get_default_dtype())
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


# ----------------------------------------------------------------------------------------------
# padding as an explicit gather, so that its adjoint (a scatter-add) is exact for every mode
# ----------------------------------------------------------------------------------------------
def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index in ``[0, n)`` of every position of an axis padded by ``before``/``after``."""
    idx = torch.arange(-before, n + after, device=device)
    if mode == "replicate":
        return idx.clamp(0, n - 1)
    if mode == "circular":
        return idx.remainder(n)
    if mode == "reflect":  # mirror about the edge samples (the edge itself is not repeated)
        if n == 1:
            return torch.zeros_like(idx)
        period = 2 * (n - 1)
        idx = idx.remainder(period)
        return torch.where(idx >= n, period - idx, idx)
    raise ValueError(f"unknown padding mode {mode!r}")  # pragma: no cover - checked by callers


def _pad(x: torch.Tensor, pads: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Pad the last two axes of ``x`` by ``pads = (top, bottom, left, right)``."""
    top, bottom, left, right = pads
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    h, w = x.shape[-2:]
    x = x.index_select(-2, _pad_index(h, top, bottom, mode, x.device))
    return x.index_select(-1, _pad_index(w, left, right, mode, x.device))


def _pad_adjoint(
    y: torch.Tensor, pads: tuple[int, int, int, int], mode: str, shape: tuple[int, int]
) -> torch.Tensor:
    """Exact adjoint of :func:`_pad`: fold a padded tensor back onto the ``shape`` grid."""
    top, bottom, left, right = pads
    h, w = shape
    if mode == "zeros":
        return y[..., top : top + h, left : left + w]
    idx_w = _pad_index(w, left, right, mode, y.device)
    out = y.new_zeros(*y.shape[:-1], w).index_add(-1, idx_w, y)
    idx_h = _pad_index(h, top, bottom, mode, y.device)
    return out.new_zeros(*out.shape[:-2], h, w).index_add(-2, idx_h, out)


# ----------------------------------------------------------------------------------------------
# functional convolution (usable with a kernel that requires grad, e.g. in blind deblurring)
# ----------------------------------------------------------------------------------------------
def _circular_pads(kh: int, kw: int) -> tuple[int, int, int, int]:
    ch, cw = (kh - 1) // 2, (kw - 1) // 2
    return kh - 1 - ch, ch, kw - 1 - cw, cw


def _check_boundary(boundary: object) -> str:
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {list(_BOUNDARIES)}, got {boundary!r}")
    return boundary


def convolve(x: torch.Tensor, kernel: torch.Tensor, boundary: str = "circular") -> torch.Tensor:
    """Convolve every channel of ``x`` with one 2-D ``kernel``.

    This is a true convolution (the kernel is flipped, unlike ``torch.nn.functional.conv2d``),
    matching ``scipy.signal.convolve2d``: ``boundary="valid"`` gives ``mode="valid"`` and
    ``boundary="circular"`` gives ``mode="same", boundary="wrap"``.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, H, W)
        Images.
    kernel : torch.Tensor of shape (kh, kw)
        Convolution kernel; it may require grad.
    boundary : {"circular", "valid"}, default="circular"
        ``"circular"``: periodic image, output of shape ``(H, W)``, the kernel's centre being
        sample ``((kh - 1) // 2, (kw - 1) // 2)``. ``"valid"``: only the positions where the
        kernel lies inside the image, output of shape ``(H - kh + 1, W - kw + 1)``.

    Returns
    -------
    torch.Tensor
        The blurred images.

    Examples
    --------
    >>> import torch
    >>> from skdip.operators._convolution import convolve
    >>> x = torch.zeros(1, 1, 5, 5)
    >>> x[0, 0, 2, 2] = 1.0
    >>> k = torch.tensor([[1.0, 2.0, 3.0]])
    >>> convolve(x, k)[0, 0, 2].tolist()
    [0.0, 1.0, 2.0, 3.0, 0.0]
    """
    _check_image(x)
    _check_boundary(boundary)
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    weight = kernel.to(dtype=x.dtype, device=x.device).flip(0, 1).reshape(1, 1, kh, kw)
    flat = x.reshape(n * c, 1, h, w)
    if boundary == "circular":
        flat = _pad(flat, _circular_pads(kh, kw), "circular")
    elif kh > h or kw > w:
        raise ValueError(f"a {kh}x{kw} kernel is larger than the {h}x{w} image ('valid' boundary)")
    out = F.conv2d(flat, weight)
    return out.reshape(n, c, *out.shape[-2:])


def convolve_adjoint(
    y: torch.Tensor, kernel: torch.Tensor, boundary: str = "circular"
) -> torch.Tensor:
    """Exact adjoint of :func:`convolve` (correlation with ``kernel``, folded at the borders).

    Parameters
    ----------
    y : torch.Tensor of shape (B, C, h, w)
        Measurements.
    kernel : torch.Tensor of shape (kh, kw)
        The kernel given to :func:`convolve`.
    boundary : {"circular", "valid"}, default="circular"
        As in :func:`convolve`. With ``"valid"`` the result has shape ``(h + kh - 1, w + kw - 1)``.

    Returns
    -------
    torch.Tensor
        ``A^T y``.

    Examples
    --------
    >>> import torch
    >>> from skdip.operators._convolution import convolve, convolve_adjoint
    >>> k = torch.rand(3, 3, dtype=torch.float64)
    >>> x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    >>> y = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    >>> lhs = (convolve(x, k, "valid") * y).sum()
    >>> rhs = (x * convolve_adjoint(y, k, "valid")).sum()
    >>> bool(torch.isclose(lhs, rhs))
    True
    """
    _check_image(y, "y")
    _check_boundary(boundary)
    kh, kw = kernel.shape
    n, c, h, w = y.shape
    weight = kernel.to(dtype=y.dtype, device=y.device).flip(0, 1).reshape(1, 1, kh, kw)
    out = F.conv_transpose2d(y.reshape(n * c, 1, h, w), weight)
    if boundary == "circular":
        out = _pad_adjoint(out, _circular_pads(kh, kw), "circular", (h, w))
    return out.reshape(n, c, *out.shape[-2:])


class Convolution(ForwardOperator):
    """Blur by a known 2-D kernel, shared by all channels: ``y = k * x``.

    The operation is a true convolution (the kernel is flipped relative to a correlation), the
    same as ``scipy.signal.convolve2d(x, kernel, ...)`` on each channel. The kernel is used as
    given: it is not normalised, so pass a kernel that sums to 1 if the blur should preserve
    the mean intensity.

    Parameters
    ----------
    kernel : numpy.ndarray or torch.Tensor of shape (kh, kw)
        Real, finite convolution kernel. It is copied into a float buffer.
    boundary : {"circular", "valid"}, default="circular"
        How the image borders are handled.

        - ``"circular"``: the image is treated as periodic and the output has the image's
          size; the kernel's centre is sample ``((kh - 1) // 2, (kw - 1) // 2)``. Equal to
          ``scipy.signal.convolve2d(x, kernel, mode="same", boundary="wrap")``.
        - ``"valid"``: only positions where the kernel fits inside the image are kept, so an
          ``(H, W)`` image gives an ``(H - kh + 1, W - kw + 1)`` measurement. Equal to
          ``scipy.signal.convolve2d(x, kernel, mode="valid")``. This is the usual model for
          blind deblurring, where the estimated image is larger than the observation.

    Attributes
    ----------
    kernel : torch.Tensor of shape (kh, kw)
        The kernel (a registered buffer: it follows ``.to(device)`` and pickles), in
        torch's default dtype (float32 unless ``torch.set_default_dtype`` changed it, which
        also suits devices without float64): for double-precision work, set float64 as
        the default before building the operator, as ``.to(torch.float64)`` cannot give
        back digits already rounded away.
    boundary : str
        The boundary handling.
    kernel_size : tuple of int
        ``(kh, kw)``.
    linear : bool
        Always ``True``; :meth:`adjoint` is the exact adjoint for both boundaries.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skdip.operators import Convolution
    >>> op = Convolution(np.ones((3, 3)) / 9)
    >>> x = torch.ones(2, 3, 8, 8)
    >>> op(x).shape
    torch.Size([2, 3, 8, 8])
    >>> bool(torch.allclose(op(x), x))
    True
    >>> Convolution(np.ones((3, 5)), boundary="valid").output_shape((8, 8))
    (6, 4)
    >>> Convolution(np.ones((3, 5)), boundary="valid").input_shape((6, 4))
    (8, 8)
    """

    linear = True

    def __init__(self, kernel: np.ndarray | torch.Tensor, boundary: str = "circular") -> None:
        super().__init__()
        k = _as_float_tensor(kernel, "kernel")
        if k.ndim != 2:
            raise ValueError(
                f"kernel must be 2-D (kh, kw) and is shared by all channels, "
                f"got shape {tuple(k.shape)}"
            )
        if not bool(k.any()):
            # Every measurement would be 0 whatever the image: nothing to fit.
            raise ValueError("kernel is all zeros; a blur kernel needs a nonzero entry")
        self.boundary = _check_boundary(boundary)
        self.register_buffer("kernel", k)

    @property
    def kernel_size(self) -> tuple[int, int]:
        """The kernel's shape ``(kh, kw)``."""
        return int(self.kernel.shape[0]), int(self.kernel.shape[1])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, boundary={self.boundary!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur images ``x`` of shape ``(B, C, H, W)``."""
        _check_image(x)
        self.output_shape(tuple(x.shape[-2:]))
        return convolve(x, self.kernel, self.boundary)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the exact adjoint (a correlation with the kernel) to ``y``."""
        _check_image(y, "y")
        return convolve_adjoint(y, self.kernel, self.boundary)

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """Measurement shape: unchanged (``"circular"``) or ``(H - kh + 1, W - kw + 1)``."""
        h, w = _check_spatial_shape(input_shape, "input_shape")
        if self.boundary == "circular":
            return h, w
        kh, kw = self.kernel_size
        if kh > h or kw > w:
            raise ValueError(
                f"a {kh}x{kw} kernel is larger than the {h}x{w} image ('valid' boundary)"
            )
        return h - kh + 1, w - kw + 1

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        """Image shape: unchanged (``"circular"``) or ``(h + kh - 1, w + kw - 1)``."""
        h, w = _check_spatial_shape(output_shape, "output_shape")
        if self.boundary == "circular":
            return h, w
        kh, kw = self.kernel_size
        return h + kh - 1, w + kw - 1
