"""Cartesian MRI: undersampled k-space of an image, with or without coil sensitivities."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import _array_like, check_int_pair, metric_array, native_copy, single_precision
from ._base import ForwardOperator, _setting
from ._convolution import _as_float_tensor, _check_image

__all__ = ["KSpaceSampling", "channels_to_kspace", "kspace_to_channels"]

_AXES = (-2, -1)
_IMAGE_KINDS = {"real": 1, "complex": 2}


def _fftc(z: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes: DC at ``(H // 2, W // 2)``."""
    shifted = torch.fft.ifftshift(z, dim=_AXES)
    return torch.fft.fftshift(torch.fft.fft2(shifted, norm="ortho"), dim=_AXES)


def _ifftc(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_fftc`, which is also its adjoint (the transform is unitary)."""
    shifted = torch.fft.ifftshift(k, dim=_AXES)
    return torch.fft.fftshift(torch.fft.ifft2(shifted, norm="ortho"), dim=_AXES)


def _complex_dtype(real_dtype) -> torch.dtype:
    return torch.complex128 if real_dtype == torch.float64 else torch.complex64


def _nan_hint(values: np.ndarray) -> str:
    """Where NaN may mark entries not sampled: the mask tells those, any value does."""
    if not np.isnan(values).any():
        return ""
    return (
        f" ({int(np.isnan(values).sum())} NaN): entries that were not sampled are told by "
        "the mask, whatever they hold; store them as 0 (np.nan_to_num(kspace, nan=0.0)), "
        "(a fit warns of sampled lines holding exact zeros)"
    )


def kspace_to_channels(kspace) -> np.ndarray:
    """Complex k-space as skdip's real, channels-last measurement layout.

    Coil ``c`` becomes the two channels ``2 * c`` (real part) and ``2 * c + 1``
    (imaginary part): ``[re_0, im_0, re_1, im_1, ...]``, the output layout of
    :class:`KSpaceSampling`. NaN or infinite values are refused.

    Parameters
    ----------
    kspace : array-like of complex, shape (H, W) or (n_coils, H, W)
        Single-coil or multi-coil k-space.

    Returns
    -------
    channels : ndarray of shape (H, W, 2 * n_coils)
        float32 for complex64 input, float64 otherwise.

    See Also
    --------
    channels_to_kspace : the inverse.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.operators import kspace_to_channels
    >>> k = np.array([[1 + 2j, 3 - 4j]])
    >>> kspace_to_channels(k)[0].tolist()
    [[1.0, 2.0], [3.0, -4.0]]
    """
    arr = metric_array(kspace, "kspace")
    if arr.dtype.kind != "c":
        raise TypeError(
            f"kspace must be a complex array, got dtype {arr.dtype} "
            "(channels_to_kspace reads the real channel layout)"
        )
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(
            f"kspace must have shape (H, W) or (n_coils, H, W) and not be empty, got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"kspace contains NaN or infinite values{_nan_hint(arr)}")
    real_dtype = np.float32 if single_precision(arr.dtype) else np.float64
    coils = arr if arr.ndim == 3 else arr[None]
    # (n, H, W) -> (n, 2, H, W) -> (H, W, n, 2) -> (H, W, 2n): re_0, im_0, re_1, ...
    pairs = np.stack([coils.real, coils.imag], axis=1).astype(real_dtype)
    h, w = coils.shape[1:]
    return np.ascontiguousarray(pairs.transpose(2, 3, 0, 1).reshape(h, w, -1))


def channels_to_kspace(channels) -> np.ndarray:
    """The complex k-space held by a real, channels-last measurement.

    The inverse of :func:`kspace_to_channels`: channels ``2 * c`` and
    ``2 * c + 1`` are the real and imaginary parts of coil ``c``.

    Parameters
    ----------
    channels : array-like of real, shape (H, W, 2 * n_coils)
        An even number of channels.

    Returns
    -------
    kspace : ndarray of complex
        ``(H, W)`` for 2 channels (single coil), ``(n_coils, H, W)`` for more;
        complex64 for float32 input, complex128 otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.operators import channels_to_kspace
    >>> channels_to_kspace(np.array([[[1.0, 2.0], [3.0, -4.0]]])).tolist()
    [[(1+2j), (3-4j)]]
    """
    arr = metric_array(channels, "channels")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"channels must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.size == 0:
        raise ValueError(
            f"channels must have shape (H, W, 2 * n_coils) (channels last), got {arr.shape}"
        )
    if arr.shape[-1] % 2:
        raise ValueError(
            f"channels must hold an even number of channels (real and imaginary part of each "
            f"coil), got {arr.shape[-1]}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"channels contain NaN or infinite values{_nan_hint(arr)}")
    real_dtype = np.float32 if single_precision(arr.dtype) else np.float64
    complex_dtype = np.complex64 if real_dtype == np.float32 else np.complex128
    values = arr.astype(real_dtype, copy=False)
    kspace = np.empty((arr.shape[-1] // 2, *arr.shape[:2]), dtype=complex_dtype)
    kspace.real = values[..., 0::2].transpose(2, 0, 1)
    kspace.imag = values[..., 1::2].transpose(2, 0, 1)
    return kspace[0] if kspace.shape[0] == 1 else kspace


def _check_coil_maps(coil_maps, owner: str | None = None) -> torch.Tensor:
    """Coil sensitivities as a finite complex tensor of shape ``(n_coils, H, W)``
    (``owner``: see :func:`~skdip.operators._base._setting`)."""
    name, error = _setting(owner, "coil_maps")
    type_error, value_error = error or TypeError, error or ValueError
    if isinstance(coil_maps, torch.Tensor):
        t = coil_maps.detach().cpu().clone()  # a copy, as for an array
    elif isinstance(coil_maps, np.ndarray | list | tuple) or _array_like(coil_maps):
        try:
            arr = metric_array(coil_maps, name)  # masked arrays refused, as for masks
        except ValueError as refused:
            raise value_error(str(refused)) from None
        if arr.dtype.kind not in "iufc":
            raise type_error(f"{name} must contain numbers, got an array of dtype {arr.dtype}")
        t = torch.from_numpy(native_copy(arr))
    else:
        raise type_error(
            f"{name} must be None, a numpy array or a torch.Tensor, got {type(coil_maps).__name__}"
        )
    if t.dtype == torch.bool:
        raise type_error(f"{name} must contain numbers, got a boolean array")
    if t.ndim != 3 or t.numel() == 0:
        raise value_error(f"{name} must have shape (n_coils, H, W), got {tuple(t.shape)}")
    # Keep double precision when given: the maps are data, not 0/1 like the mask.
    double = t.dtype in (torch.float64, torch.complex128)
    t = t.to(torch.complex128 if double else torch.complex64)
    if not bool(torch.isfinite(t).all()):
        raise value_error(f"{name} contain NaN or infinite values")
    if not bool((t != 0).any()):
        raise value_error(f"{name} are all zero: every measurement would be 0")
    return t


def _kspace_settings(
    mask, coil_maps, image, owner: str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The settings of :class:`KSpaceSampling` checked: the mask as a ``(1, 1, H, W)``
    float tensor (one row for sampled columns) and the coil maps (None or complex
    ``(n_coils, H, W)``). ``owner``: see :func:`~skdip.operators._base._setting` (the
    operator's own checks name it; :func:`~skdip.datasets.simulate_kspace` checks its
    arguments under their plain names)."""
    if not isinstance(image, str) or image not in _IMAGE_KINDS:
        name, error = _setting(owner, "image")
        raise (error or ValueError)(f"{name} must be 'real' or 'complex', got {image!r}")
    name, error = _setting(owner, "mask")
    m = _as_float_tensor(mask, name, error)
    columns = m.ndim == 1
    if columns:
        m = m[None, None, None]
    elif m.ndim == 2:
        m = m[None, None]
    else:
        raise (error or ValueError)(
            f"{name} must have shape (H, W), or (W,) for sampled columns, got {tuple(m.shape)}"
        )
    if not bool(((m == 0) | (m == 1)).all()):
        # Column indices are the likely mistake with a 1-D mask.
        hint = (
            "; a 1-D mask marks the sampled columns over the width (for column indices "
            "idx: m = np.zeros(W); m[idx] = 1)"
            if columns
            else ""
        )
        raise (error or ValueError)(f"{name} must contain only 0/1 (or False/True) values{hint}")
    if not bool(m.any()):
        raise (error or ValueError)(f"{name} has no sampled entry (all entries are 0/False)")
    if coil_maps is None:
        return m, None
    maps = _check_coil_maps(coil_maps, owner)
    rows = None if m.shape[-2] == 1 else int(m.shape[-2])  # one row: any number
    expected = (maps.shape[1] if rows is None else rows, m.shape[-1])
    if tuple(maps.shape[1:]) != expected:
        name, error = _setting(owner, "coil_maps")
        raise (error or ValueError)(
            f"{name} have spatial shape {tuple(maps.shape[1:])} but the mask is "
            f"{KSpaceSampling._shape_text(rows, m.shape[-1])}"
        )
    return m, maps


# A noise level read from the measurement at this fraction of its RMS or more: little
# of it is explained by the model (real images measured at most 0.79, under noise of
# half their span, four coils).
_NOISE_DOMINATES = 0.9


def sampled_lines(mask: np.ndarray) -> tuple[str, ...]:
    """The whole lines an ``(H, W)`` boolean mask samples: ``("columns",)`` when each
    column is sampled entirely or not at all (Cartesian phase encoding), ``("rows",)``
    for rows, both for a mask of all or nothing, none for scattered entries."""
    lines = []
    if (mask == mask[:1]).all():
        lines.append("columns")
    if (mask == mask[:, :1]).all():
        lines.append("rows")
    return tuple(lines)


def _run_length(flags: np.ndarray) -> int:
    """How many leading entries of a boolean vector are True."""
    return int(flags.argmin()) if not flags.all() else flags.size


class KSpaceSampling(ForwardOperator):
    """Undersampled Cartesian MRI: ``y = M F S x``, as real channels.

    The image ``x`` (real, or complex as two channels) is multiplied by the
    sensitivity ``S_c`` of each receive coil ``c`` (``S = 1`` for a single
    coil), transformed by the centred orthonormal 2-D discrete Fourier
    transform ``F`` and restricted to the sampled k-space locations by the
    0/1 mask ``M``. Centred means that the k-space centre (DC) sits at index
    ``(H // 2, W // 2)`` and the image centre at the same index of the image:
    ``F = fftshift(fft2(ifftshift(.), norm="ortho"))``. Being orthonormal,
    ``F`` preserves norms (Parseval).

    The measurement is real: coil ``c`` gives the channels ``2 * c`` (real
    part) and ``2 * c + 1`` (imaginary part), ``[re_0, im_0, re_1, im_1,
    ...]``; :func:`kspace_to_channels` and :func:`channels_to_kspace` convert
    between this layout and complex k-space. Unsampled entries are exactly 0,
    in the operator's output and in the k-space that
    :func:`skdip.datasets.simulate_kspace` simulates, so that they add nothing
    to an estimator's data-fit loss.

    The operator is linear, with :meth:`adjoint` exact for the real inner
    product of its real input and output tensors, and differentiable. It
    keeps the input's dtype (float32 or float64; complex64 or complex128
    internally).

    Parameters
    ----------
    mask : numpy.ndarray or torch.Tensor of shape (H, W) or (W,)
        Boolean or numeric 0/1 array marking the sampled k-space locations,
        in the centred layout (DC at ``(H // 2, W // 2)``); at least one must
        be sampled. A 1-D mask of length ``W`` marks the sampled columns
        (phase-encoding lines) with 0/1 and samples every row of them (for
        column indices ``idx``: ``m = np.zeros(W); m[idx] = 1``).
    coil_maps : array-like of shape (n_coils, H, W) or None, default=None
        Complex (or real) coil sensitivities; None for a single coil with
        ``S = 1``. See :func:`skdip.datasets.make_coil_maps`.
    image : {"real", "complex"}, default="real"
        Whether the image is real (input tensors have one channel) or complex
        (two channels: real and imaginary part).

    Attributes
    ----------
    mask : torch.Tensor of shape (1, 1, H, W), or (1, 1, 1, W) for a 1-D mask
        The mask as a float buffer of zeros and ones (it follows
        ``.to(device)`` and pickles).
    coil_maps : torch.Tensor of complex, shape (n_coils, H, W), or None
        The coil sensitivities, held as the float buffers ``coil_real`` and
        ``coil_imag`` (float64 when given in double precision).
    n_coils : int
        Number of coils; the measurement has ``2 * n_coils`` channels.
    n_channels : int
        Channels of the image: 1 for ``image="real"``, 2 for ``"complex"``.
    sampled_fraction : float
        Fraction of sampled k-space locations.
    image : str
        ``"real"`` or ``"complex"``.
    image_shape : tuple
        ``(H, W)``, the only spatial shape the operator accepts; ``H`` is None
        (any number of rows) for a 1-D mask without coil maps.
    linear : bool
        Always ``True``.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skdip.operators import KSpaceSampling
    >>> mask = np.zeros((8, 8), dtype=bool)
    >>> mask[:, 2:6] = True
    >>> op = KSpaceSampling(mask)
    >>> x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    >>> y = op(x)
    >>> y.shape, op.sampled_fraction
    (torch.Size([1, 2, 8, 8]), 0.5)
    >>> bool((y[..., :2] == 0).all())
    True
    >>> k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x[0, 0].numpy()), norm="ortho"))
    >>> bool(np.allclose(y[0, 0].numpy() + 1j * y[0, 1].numpy(), k * mask))
    True
    """

    linear = True
    # The coil maps are held as two real buffers, read back through their property.
    _settings = {"mask": "mask", "coil_maps": "coil_maps", "image": "image"}
    _derived = (
        "coil_real",
        "coil_imag",
        "n_coils",
        "n_channels",
        "image_shape",
        "sampled_fraction",
        "linear",
    )

    def __init__(self, mask, coil_maps=None, image: str = "real") -> None:
        super().__init__()
        m, maps = _kspace_settings(mask, coil_maps, image, "KSpaceSampling")
        self.image = image
        self.register_buffer("mask", m.contiguous())
        if maps is None:
            self.register_buffer("coil_real", None)
            self.register_buffer("coil_imag", None)
        else:
            self.register_buffer("coil_real", maps.real.contiguous())
            self.register_buffer("coil_imag", maps.imag.contiguous())

    def _setting_values(self) -> dict:
        # The mask back as (H, W), or (1, W) for sampled columns (the same model).
        return {
            "mask": self.mask.detach()[0, 0],
            "coil_maps": self.coil_maps,
            "image": self.image,
        }

    # ------------------------------------------------------------------ properties
    @property
    def n_coils(self) -> int:
        """Number of coils (1 without coil maps)."""
        return 1 if self.coil_real is None else int(self.coil_real.shape[0])

    @property
    def n_channels(self) -> int:
        """Channels of the image: 1 for a real image, 2 for a complex one."""
        return _IMAGE_KINDS[self.image]

    @property
    def coil_maps(self) -> torch.Tensor | None:
        """The complex coil sensitivities ``(n_coils, H, W)``, or None."""
        if self.coil_real is None:
            return None
        return torch.complex(self.coil_real, self.coil_imag)

    @property
    def image_shape(self) -> tuple:
        """``(H, W)``; ``H`` is None for a 1-D mask without coil maps."""
        w = int(self.mask.shape[-1])
        if self.coil_real is not None:
            return int(self.coil_real.shape[-2]), w
        return (None, w) if self._columns_only else (int(self.mask.shape[-2]), w)

    @property
    def sampled_fraction(self) -> float:
        """Fraction of sampled k-space locations."""
        return float(self.mask.float().mean())

    @property
    def _columns_only(self) -> bool:
        # A 1-D mask is stored with a single row; a 2-D mask of one row is the same
        # thing, so both broadcast over the rows of whatever the image has.
        return int(self.mask.shape[-2]) == 1

    @staticmethod
    def _shape_text(h, w) -> str:
        return f"(any, {w})" if h is None else f"{(int(h), int(w))}"

    def extra_repr(self) -> str:
        return (
            f"image={self.image!r}, n_coils={self.n_coils}, "
            f"image_shape={self.image_shape}, sampled_fraction={self.sampled_fraction:.3g}"
        )

    # ------------------------------------------------------------------ shapes
    def _check_shape(self, shape, name: str) -> tuple[int, int]:
        shape = check_int_pair(shape, name)
        h, w = self.image_shape
        if shape[1] != w or (h is not None and shape[0] != h):
            raise ValueError(
                f"{name} {shape} does not match the k-space mask's shape {self._shape_text(h, w)}"
            )
        return shape

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """The input shape, which must be the mask's ``(H, W)``."""
        return self._check_shape(input_shape, "input_shape")

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        """The output shape, which must be the mask's ``(H, W)``."""
        return self._check_shape(output_shape, "output_shape")

    def _measurement_channels(self) -> int:
        return 2 * self.n_coils

    def input_channels(self, output_channels: int) -> int:
        """The image's channels, :attr:`n_channels` (1 for a real image, 2 for a
        complex one), whatever the measurement's (two per coil)."""
        return self.n_channels

    # ------------------------------------------------------------------ tensors
    def _check_tensor(self, t: torch.Tensor, name: str, channels: int, what: str) -> None:
        _check_image(t, name)
        if t.shape[1] != channels:
            # An estimator makes as many image channels as X has unless told otherwise.
            hint = (
                f"; with DIPReconstructor, pass output_channels={channels}" if name == "x" else ""
            )
            raise ValueError(
                f"{name} must have {channels} channels ({what}), got {t.shape[1]}{hint}"
            )
        self._check_shape(tuple(t.shape[-2:]), f"{name}'s spatial shape")

    def _tensors(self, like: torch.Tensor):
        """Mask and coil maps in the working dtypes of ``like``; its work dtype."""
        real = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
        mask = self.mask.to(device=like.device, dtype=real)
        maps = None
        if self.coil_real is not None:
            maps = torch.complex(
                self.coil_real.to(device=like.device, dtype=real),
                self.coil_imag.to(device=like.device, dtype=real),
            )
        return real, mask, maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The k-space channels ``(B, 2 * n_coils, H, W)`` of images ``(B, C, H, W)``."""
        what = "a real image" if self.image == "real" else "real and imaginary part"
        self._check_tensor(x, "x", self.n_channels, what)
        real, mask, maps = self._tensors(x)
        work = x.to(real)
        if self.image == "real":
            z = work.to(_complex_dtype(real))  # (B, 1, H, W)
        else:
            z = torch.complex(work[:, :1], work[:, 1:])
        if maps is not None:
            z = z * maps  # (B, 1, H, W) * (n, H, W) -> (B, n, H, W)
        k = _fftc(z) * mask
        b, n, h, w = k.shape
        return torch.stack((k.real, k.imag), dim=2).reshape(b, 2 * n, h, w).to(x.dtype)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """The adjoint: k-space channels ``(B, 2 * n_coils, H, W)`` to images ``(B, C, H, W)``.

        Masked, inverse-transformed and combined with the conjugate coil maps;
        for a real image the real part (the adjoint of embedding the reals in
        the complex numbers).
        """
        self._check_tensor(y, "y", 2 * self.n_coils, "real and imaginary part of each coil")
        real, mask, maps = self._tensors(y)
        work = y.to(real)
        k = torch.complex(work[:, 0::2], work[:, 1::2]) * mask  # (B, n, H, W)
        z = _ifftc(k)
        z = (z * maps.conj()).sum(dim=1, keepdim=True) if maps is not None else z
        if self.image == "real":
            out = z.real
        else:
            out = torch.cat((z.real, z.imag), dim=1)
        return out.to(y.dtype)

    # ------------------------------------------------------------------ numpy helpers
    def _measurement(self, measurement) -> np.ndarray:
        """A measurement (channels or complex k-space) as complex ``(n_coils, H, W)``."""
        hidden = None
        if np.ma.isMaskedArray(measurement):
            # Masked entries where nothing is sampled are ignored as any unsampled entry
            # is; masked sampled entries are refused below.
            hidden = np.ma.getmaskarray(measurement)
            measurement = np.ma.getdata(measurement)
        arr = metric_array(measurement, "measurement")
        if arr.dtype.kind == "c":
            if arr.ndim not in (2, 3):
                raise ValueError(
                    f"complex k-space must have shape (H, W) or (n_coils, H, W), got {arr.shape}"
                )
            kspace = arr if arr.ndim == 3 else arr[None]
        elif arr.dtype.kind in "biuf":
            if arr.ndim != 3:
                raise ValueError(
                    f"measurement must have shape (H, W, 2 * n_coils) (channels last), or be "
                    f"complex k-space, got shape {arr.shape}"
                )
            kspace = channels_to_kspace(arr)
            kspace = kspace if kspace.ndim == 3 else kspace[None]
        else:
            raise TypeError(f"measurement must be a numeric array, got dtype {arr.dtype}")
        if kspace.shape[0] != self.n_coils:
            held = (
                f"{arr.shape[-1]} channels, the real and imaginary parts of "
                f"{kspace.shape[0]} coil(s),"
                if arr.dtype.kind != "c"
                else f"{kspace.shape[0]} coil(s)"
            )
            # Complex k-space stacked channels-last, as the real layout is, reads as H
            # coils: "measurement has 8 coil(s) but the operator has 3" named no cause.
            hint = (
                "; complex k-space is (n_coils, H, W), coils first: for (H, W, n_coils) "
                "pass np.moveaxis(kspace, -1, 0)"
                if arr.dtype.kind == "c" and arr.ndim == 3 and arr.shape[-1] == self.n_coils
                else ""
            )
            raise ValueError(
                f"measurement has {held} but the operator has {self.n_coils} coil(s)"
                + (f" ({2 * self.n_coils} channels)" if arr.dtype.kind != "c" else "")
                + hint
            )
        self._check_shape(kspace.shape[1:], "measurement's spatial shape")
        if hidden is not None and hidden.any():
            h, w = kspace.shape[1:]
            # Any entry (coil, real or imaginary part) of a k-space location.
            where = hidden.any(axis=2) if arr.dtype.kind != "c" else hidden.reshape(-1, h, w)
            where = where if where.ndim == 2 else where.any(axis=0)
            if (where & self._numpy_model(h, w)[0]).any():
                raise ValueError(
                    "measurement is a masked array with masked entries where the mask samples "
                    "k-space: those are data. Fill them, or leave them out of the mask"
                )
            kspace = np.where(where, 0, kspace)  # unsampled: ignored
        if not np.all(np.isfinite(kspace)):
            raise ValueError(f"measurement contains NaN or infinite values{_nan_hint(kspace)}")
        return kspace

    def _measurement_problems(self, measurement: np.ndarray) -> list[str]:
        """What makes a ``(H, W, 2 * n_coils)`` measurement look unlike this model's.

        Laid out otherwise than the centred convention (zero frequency at
        ``(H // 2, W // 2)``): numpy's own layout (``np.fft.fft2``, zero frequency at
        ``[0, 0]``) is common in raw data, and with a centred mask it was fitted as
        garbage (4.8 dB) in silence, while with a mask in the same layout it failed on
        the rescaling with a word on kernels. And a block of lines at an edge holding
        exact zeros in every sampled entry (partial Fourier under a column mask:
        measured values never are exactly 0), which were fitted as data and took the
        noise estimate 4.4 times too high. And sampled lines holding exact zeros next
        to one another: a mask other than the data's, whose unmeasured lines were
        fitted as measured zeros.
        """
        h, w = measurement.shape[:2]
        mask, _ = self._numpy_model(h, w)
        convention = (
            f"skdip's k-space is centred, the zero frequency at (H // 2, W // 2) = "
            f"({h // 2}, {w // 2}), as fftshift(fft2(ifftshift(x))) lays it out; for mask "
            "and k-space in numpy's layout (zero frequency at [0, 0]) pass "
            "np.fft.fftshift of both (axes (0, 1) for the k-space channels); if that "
            "k-space is np.fft.fft2 of the image itself, the image comes back with its "
            "quadrants swapped: np.fft.ifftshift the result"
        )
        problems = []
        power = (measurement.astype(np.float64) ** 2).sum(axis=2) * mask
        if not mask[h // 2, w // 2]:
            problems.append(
                "the mask does not sample the zero frequency, which carries the image's "
                "mean (so rescale='auto' cannot set the image's level, and the fit does not "
                f"measure it). If the mask is in numpy's layout: {convention}"
            )
        else:
            row, col = np.unravel_index(int(np.argmax(power)), power.shape)
            # A picture's k-space peaks at or next to the zero frequency (its mean);
            # smooth coil maps move the peak by a few entries at most. A flat k-space
            # (a point object) peaks anywhere: only a zero frequency far below the peak
            # tells of another layout.
            far = max(abs(row - h // 2) / h, abs(col - w // 2) / w) > 0.25
            if far and power[h // 2, w // 2] < 0.5 * power[row, col]:
                problems.append(
                    f"the largest measured value lies at {(int(row), int(col))}, far from "
                    f"the zero frequency where a picture's k-space peaks: {convention}"
                )
        # Sampled lines themselves holding exact zeros: a mask that is not the one the
        # data were taken with (np.ones over zero-filled data, another seed), fitted as
        # measured zeros in silence. A noise-free object's k-space has exact zeros on
        # isolated lines (the zeros of a square's sinc), never on neighbouring ones,
        # and a flat object's is zero all but at its centre: neither is told.
        lines_sampled = sampled_lines(mask)
        for name in lines_sampled:
            sampled = mask[0] if name == "columns" else mask[:, 0]
            along = power if name == "columns" else power.T
            empty = sampled & ~along.any(axis=0)
            paired = empty & (np.r_[False, empty[:-1]] | np.r_[empty[1:], False])
            offset = np.abs(np.arange(sampled.size) - sampled.size // 2)
            # Rounding leaves a flat object's other lines near 1e-34 of its power.
            live = sampled & (along.sum(axis=0) > 1e-12 * power.sum()) & (offset > 1)
            if paired.sum() >= max(2, sampled.sum() // 16) and live.any():
                problems.append(
                    f"{int(empty.sum())} of the {int(sampled.sum())} sampled {name} hold "
                    "exact zeros in every coil, which measured lines never do: is this the "
                    "mask the data were sampled with? Lines not acquired belong out of the "
                    "mask, or they are fitted as measured zeros"
                )
                return problems
        # Partial Fourier: a block of lines at one edge of the readout not acquired and
        # stored as exact zeros. (A noise-free phantom's k-space has exact zeros too,
        # on isolated lines of its sinc pattern, not in such a block.)
        blocks = []
        if "columns" in lines_sampled and mask[0].any():  # lines across the sampled columns
            blocks.append(power[:, mask[0]])
        if "rows" in lines_sampled and mask[:, 0].any():
            blocks.append(power[mask[:, 0], :].T)
        for lines in blocks:
            empty = ~lines.any(axis=1)
            edge = max(_run_length(empty), _run_length(empty[::-1]))
            # An object constant along this axis (a flat one, a ramp across it) holds
            # all its power on the one zero-frequency line: no block was cut off.
            live = int(np.count_nonzero(lines.sum(axis=1) > 1e-12 * lines.sum()))
            if edge >= max(2, lines.shape[0] // 16) and live > 1:
                problems.append(
                    f"{edge} lines at an edge of k-space hold exact zeros across every "
                    "sampled entry, which a measurement never does: if they were not "
                    "acquired (partial Fourier), leave them out of the mask (an (H, W) mask "
                    "can), or they are fitted as data"
                )
                break
        if not problems:
            problems.extend(self._noise_problems(measurement, mask))
        return problems

    def _noise_problems(self, measurement: np.ndarray, mask: np.ndarray) -> list[str]:
        """A noise level, read from the measurement's redundancy, near the sampled
        values' own RMS: k-space of an image with phase fitted with ``image="real"``
        reads the imaginary part as noise (1.0 to 2.0 times the RMS for a phase ramp
        of half a turn or more, 64x64 camera; four coil maps in reverse order, 1.2 to
        1.4; a real image under noise of half the image's span, 0.50 to 0.79), and the
        no-reference scores are read off that level."""
        sigma, _ = self._noise_sigma(measurement)
        sampled = measurement[mask]
        rms = float(np.sqrt(np.mean(sampled.astype(np.float64) ** 2))) if sampled.size else 0.0
        if sigma is None or not rms or sigma < _NOISE_DOMINATES * rms:
            return []
        causes = ["the noise is as large as the signal"]
        if self.coil_maps is not None:
            causes.insert(0, "the coil maps are not the data's (their order, their shape)")
        if self.image == "real":
            causes.insert(
                0,
                "k-space of an image with phase (a scan's image is complex) needs image='complex'",
            )
        cause = "; ".join(causes[:-1]) + ("; or " if len(causes) > 1 else "") + causes[-1]
        return [
            f"the part of the measurement no {self.image} image explains has an RMS of "
            f"{sigma:.3g} per real value, {sigma / rms:.2f} times the sampled values' own "
            f"({rms:.3g}): {cause}"
        ]

    def _noise_sigma(self, measurement: np.ndarray) -> tuple[float | None, str]:
        """The noise level from the measurement's redundancy (see
        :func:`skdip.metrics._kspace_noise.kspace_noise_sigma`); the reason where it
        has too little, as it is no image to read the level from instead."""
        # Imported here: the metrics import the operators.
        from ..metrics._kspace_noise import MIN_DOF, kspace_noise_sigma

        found = kspace_noise_sigma(measurement, self)
        if found is None:
            return None, "the mask samples neither whole columns nor whole rows"
        sigma, dof = found
        if dof < MIN_DOF:
            # No redundancy to measure the noise on: e.g. a complex image and one coil.
            return None, (
                f"the measurement holds too few redundant values ({dof} degrees of freedom, "
                f"{MIN_DOF} needed; a complex image seen by one coil has none)"
            )
        return sigma, ""

    def _numpy_model(self, h: int, w: int):
        """The mask as bool ``(H, W)`` and the coil maps as complex128 ``(n, H, W)``."""
        mask = np.broadcast_to(self.mask.detach().cpu().numpy()[0, 0] != 0, (h, w))
        maps = self.coil_maps
        maps = None if maps is None else maps.detach().cpu().to(torch.complex128).numpy()
        return mask, maps

    @staticmethod
    def _result_dtype(*arrays: np.ndarray):
        single = all(single_precision(a.dtype) for a in arrays)
        return np.float32 if single else np.float64

    def zero_filled(self, measurement) -> np.ndarray:
        """The zero-filled reconstruction of a measurement.

        The sampled k-space (entries outside the mask are ignored) is
        inverse-transformed; with coil maps the coil images are combined as
        ``sum_c conj(S_c) x_c / sum_c |S_c|**2`` (0 where no coil sees the
        pixel). A fully sampled measurement gives back the image. Where the maps
        fade out (a soft support edge) the division amplifies the noise as much
        as the gain falls: mask such a background out before comparing.

        Parameters
        ----------
        measurement : ndarray
            Real channels ``(H, W, 2 * n_coils)`` (the layout of the
            operator's output and of skdip's estimators), or complex k-space
            ``(H, W)`` (single coil) or ``(n_coils, H, W)``.

        Returns
        -------
        image : ndarray of shape (H, W)
            The real part for ``image="real"``, the magnitude for
            ``"complex"``; float32 for single-precision input, else float64.

        Examples
        --------
        >>> import numpy as np
        >>> from skdip.operators import KSpaceSampling
        >>> x = np.random.default_rng(0).random((8, 8))
        >>> k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))
        >>> op = KSpaceSampling(np.ones((8, 8)))
        >>> bool(np.allclose(op.zero_filled(k), x))
        True
        """
        kspace = self._measurement(measurement)
        dtype = self._result_dtype(kspace)
        n, h, w = kspace.shape
        mask, maps = self._numpy_model(h, w)
        k = torch.from_numpy(np.where(mask, kspace.astype(np.complex128), 0))
        coil_images = _ifftc(k).numpy()
        if maps is None:
            combined = coil_images[0]
        else:
            weight = (np.abs(maps) ** 2).sum(axis=0)
            numerator = (np.conj(maps) * coil_images).sum(axis=0)
            # Exact, however the gain varies (a floor darkened maps whose gain varies over
            # tenfold: 0.089 of the image at its centre); noise where it fades is the
            # price, told in the docstring.
            combined = np.divide(numerator, weight, out=np.zeros_like(numerator), where=weight > 0)
        out = combined.real if self.image == "real" else np.abs(combined)
        return out.astype(dtype)

    def data_consistency(self, estimate, measurement) -> np.ndarray:
        """Replace the sampled k-space of an estimate by the measured values.

        The estimate's k-space is computed coil by coil, its sampled entries
        are replaced by the measurement's, and each coil is transformed back;
        the result is the root-sum-of-squares of the coil images' magnitudes
        divided by ``sqrt(sum_c |S_c|**2)`` (0 where no coil sees the pixel; at
        least a tenth of its largest value, where the maps fade out), so that coil
        maps that are not normalised neither scale nor shade it (the
        magnitude of the single image without coil maps). This is the
        usual last step of an untrained-network MRI reconstruction: data
        consistency, inverse transform, root-sum-of-squares.

        Parameters
        ----------
        estimate : ndarray of shape (H, W) or (H, W, C)
            The reconstructed image, channels last: one channel (or a 2-D
            array) for a real image, two (real and imaginary part) for
            ``image="complex"``, which also takes a complex 2-D array.
        measurement : ndarray
            Real channels ``(H, W, 2 * n_coils)`` or complex k-space ``(H, W)``
            or ``(n_coils, H, W)``, as for :meth:`zero_filled`.

        Returns
        -------
        image : ndarray of shape (H, W)
            A magnitude image (non-negative): float32 when both inputs are in
            single precision, float64 otherwise (e.g. for float64 input).

        Examples
        --------
        >>> import numpy as np
        >>> from skdip.operators import KSpaceSampling
        >>> x = np.random.default_rng(0).random((8, 8))
        >>> k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))
        >>> op = KSpaceSampling(np.ones((8, 8)))
        >>> bool(np.allclose(op.data_consistency(np.zeros((8, 8)), k), x))
        True
        """
        kspace = self._measurement(measurement)
        n, h, w = kspace.shape
        image = self._estimate(estimate, (h, w))
        dtype = self._result_dtype(kspace, image)
        mask, maps = self._numpy_model(h, w)
        z = image.astype(np.complex128)[None]
        if maps is not None:
            z = z * maps
        k = _fftc(torch.from_numpy(z)).numpy()
        k = np.where(mask, kspace.astype(np.complex128), k)
        coil_images = _ifftc(torch.from_numpy(k)).numpy()
        combined = np.sqrt((np.abs(coil_images) ** 2).sum(axis=0))
        if maps is not None:
            # The root-sum-of-squares of S_c x is |x| sqrt(sum_c |S_c|**2): maps that are
            # not normalised (raw sensitivities, a gain) scaled or shaded the image. Where
            # the maps fade out (a soft support edge) the division would blow the noise
            # up (to 61 for an image below 0.8): at most tenfold.
            gain = np.sqrt((np.abs(maps) ** 2).sum(axis=0))
            floor = np.maximum(gain, 0.1 * float(gain.max()))
            combined = np.divide(combined, floor, out=np.zeros_like(combined), where=gain > 0)
        return combined.astype(dtype)

    def _estimate(self, estimate, shape: tuple[int, int]) -> np.ndarray:
        """An estimate as a real or complex ``(H, W)`` array."""
        arr = metric_array(estimate, "estimate")
        if arr.dtype.kind == "c":
            if self.image != "complex" or arr.ndim != 2:
                raise ValueError(
                    "a complex estimate must be 2-D (H, W), for an operator with image='complex'"
                )
            image = arr
        elif arr.dtype.kind in "biuf":
            if arr.ndim == 3 and arr.shape[-1] == self.n_channels:
                image = arr[..., 0] if self.n_channels == 1 else arr[..., 0] + 1j * arr[..., 1]
                if self.n_channels == 2 and single_precision(arr.dtype):
                    image = image.astype(np.complex64)
            elif arr.ndim == 2:
                image = arr
            else:
                raise ValueError(
                    f"estimate must have shape (H, W) or (H, W, {self.n_channels}) for "
                    f"image={self.image!r}, got {arr.shape}"
                )
        else:
            raise TypeError(f"estimate must be a numeric array, got dtype {arr.dtype}")
        if image.shape != tuple(shape):
            raise ValueError(
                f"estimate has spatial shape {image.shape[:2]} but the measurement is {shape}"
            )
        if not np.all(np.isfinite(image)):
            raise ValueError("estimate contains NaN or infinite values")
        return image
