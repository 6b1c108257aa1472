"""Input checking and image layout handling shared by every estimator.

Images enter as ``(H, W)`` (grey), ``(H, W, C)`` (channels last), a batch
``(N, H, W, C)`` array or a list of single images of any sizes. Internally
each image becomes a float64 ``(H, W, C)`` array; :class:`ImageLayout` keeps
what is needed to hand results back in the caller's layout and dtype.
"""

from __future__ import annotations

import hashlib
import numbers
import reprlib
from collections.abc import Callable, Iterator, Mapping, MappingView, Set
from dataclasses import dataclass
from typing import Literal, NoReturn, TypeGuard, overload

import numpy as np
import scipy.sparse
import torch
from sklearn.utils._param_validation import InvalidParameterError

from ._warnings import warn

__all__ = ["ImageLayout", "check_images", "images_digest", "to_tensor", "to_numpy"]


@dataclass(frozen=True)
class ImageLayout:
    """How a batch of images arrived, so results can leave the same way."""

    kind: str  # "single", "array" (an (N, H, W, C) array) or "list"
    squeeze_channel: tuple[bool, ...]  # per image: was it (H, W)?
    dtypes: tuple[np.dtype, ...]  # per image: float dtype to return
    # per image: was it uint8, read on [0, 1] (so intensities given on its scale, such
    # as a noise level, are 255 times the fitted ones)?
    scaled_uint8: tuple[bool, ...] = ()

    def restore(self, images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Return ``(H, W, C)`` float64 results in the input's layout and dtype."""
        out = []
        for img, squeeze, dtype in zip(images, self.squeeze_channel, self.dtypes, strict=True):
            # A grey input gives a 2-D result unless the estimator made channels.
            img = img[..., 0] if squeeze and img.shape[-1] == 1 else img
            # Always a copy: the result must not alias fitted state the caller could edit.
            out.append(np.array(img, dtype=dtype))
        return self.arrange(out)

    def arrange(self, images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Per-image results, as they are, in the input's layout (one, a stack, a list)."""
        if self.kind == "single":
            return images[0]
        if self.kind == "array":
            return np.stack(images)
        return list(images)


def single_precision(dtype: np.dtype) -> bool:
    """Single precision (float32 or complex64), in either byte order (a test of the
    dtype itself missed big-endian float32, as FITS files hold)."""
    return (dtype.kind == "f" and dtype.itemsize == 4) or (
        dtype.kind == "c" and dtype.itemsize == 8
    )


def _output_dtype(dtype: np.dtype) -> np.dtype:
    """The precision results are returned in: the input's float32 or float64 (in the
    machine's byte order)."""
    return np.dtype(np.float32 if dtype.kind == "f" and single_precision(dtype) else np.float64)


def pil_mode(image) -> str | None:
    """The mode of a PIL image ("RGB", "CMYK", ...); None for anything else."""
    mode = getattr(image, "mode", None)
    if not type(image).__module__.startswith("PIL") or not isinstance(mode, str):
        return None
    return mode


def _check_pil_mode(image, name: str, alpha: bool = True) -> None:
    """Refuse a PIL image whose array is no picture's intensities (a GIF's or an indexed
    PNG's palette indices were fitted as grey levels: 6.0 dB for 15.2), and, with
    ``alpha``, warn of an alpha channel, read as one more channel."""
    mode = pil_mode(image)
    if mode is None:
        return
    if mode in ("P", "PA"):
        raise ValueError(
            f"{name} is a PIL image in palette mode {mode!r}: its values are indices into "
            f"a colour table, not intensities. Convert it first: {name}.convert('RGB') (or "
            "'L' for grey levels)"
        )
    if mode == "CMYK":
        # Read as 4 channels with a constant 4th (no black ink), it was also taken for
        # an alpha channel, and the result read as RGBA in matplotlib.
        warn(
            f"{name} is a PIL image in CMYK mode: its 4 channels are ink amounts (cyan, "
            "magenta, yellow, black; 0 is no ink), fitted and returned as such. Pass "
            f"{name}.convert('RGB') for colour intensities.",
            UserWarning,
        )
        return
    if alpha and mode in ("LA", "La", "RGBA", "RGBa"):
        colour = "L" if mode[0] == "L" else "RGB"
        warn(
            f"{name} is a PIL image with an alpha channel (mode {mode!r}): the alpha is read "
            f"as one more channel. Pass {name}.convert({colour!r}) and put the alpha back "
            "afterwards.",
            UserWarning,
        )


def _refuse_sparse(image, name: str) -> None:
    if scipy.sparse.issparse(image):
        raise TypeError(
            f"{name} is a sparse matrix; sparse input is not supported, pass a dense image"
        )


def _refuse_iterables(image, name: str) -> None:
    """Refuse an iterator, a set, a dict or a dict's view of images: np.asarray reads
    each as one opaque object, refused as "dtype object", which named neither what was
    given nor what to give."""
    if scipy.sparse.issparse(image):
        return  # a dok_array is a dict: refused as sparse, where sparse input is checked
    if isinstance(image, Mapping):
        fix = f"list({name}.values())"
    elif isinstance(image, Iterator | Set | MappingView):
        fix = f"list({name})"
    else:
        return
    raise TypeError(
        f"{name} is a {type(image).__name__}, not an image, a batch array or a list of "
        f"images: pass {fix}"
    )


def _shapes(items, shown: int = 3) -> list[str]:
    """The shapes of the first ``shown`` items, then how many more there are."""
    out = [str(tuple(np.shape(item))) for item in items[:shown]]
    if len(items) > shown:
        out.append(f"{len(items) - shown} more")
    return out


def _check_one(
    image,
    name: str,
    min_size: int,
    scale_uint8: bool = True,
    missing_hint: str = "",
    complex_hint: str = "",
) -> tuple[np.ndarray, bool, np.dtype]:
    if isinstance(image, torch.Tensor):
        raise TypeError(
            f"{name} is a torch.Tensor; pass a NumPy array (e.g. tensor.detach().cpu().numpy()) "
            "in (H, W) or (H, W, C) layout"
        )
    if isinstance(image, str | bytes) or image is None:
        raise TypeError(f"{name} must be an array-like image, got {type(image).__name__}")
    _refuse_sparse(image, name)  # an item of a list too ("X[0] has dtype object" before)
    _refuse_iterables(image, name)
    _check_pil_mode(image, name)
    if np.ma.isMaskedArray(image):
        hidden = int(np.count_nonzero(np.ma.getmaskarray(image)))
        if hidden:
            # np.asarray would drop the mask and fit the values under it.
            other = f"; or {missing_hint}" if missing_hint else ""
            raise ValueError(
                f"{name} is a masked array with {hidden} masked value(s), which would be "
                f"read as data: every value is used here. Fill them "
                f"({name}.filled(value)){other}."
            )
        image = np.ma.getdata(image)
    arr = np.asarray(image)
    if arr.dtype == object:
        hint = ""
        if arr.ndim == 1 and arr.size and all(np.ndim(item) in (2, 3) for item in arr):
            # np.array(images, dtype=object), or a table's column of images: a batch of
            # images of different sizes, which skdip takes as a list.
            hint = (
                f"; it holds {arr.size} images ({', '.join(_shapes(arr))}): pass images of "
                f"different sizes as a list, list({name})"
            )
        raise TypeError(f"{name} has dtype object; images must be numeric arrays{hint}")
    if np.iscomplexobj(arr) and complex_hint:
        raise ValueError(f"Complex data not supported: {name} is complex; {complex_hint}")
    if np.iscomplexobj(arr):
        # A clean reference of a complex image is no k-space: say what fits it.
        hint = (
            "a complex image: its real and imaginary parts as two channels, "
            "np.stack([y.real, y.imag], axis=-1), as an image='complex' model returns it"
            if name.startswith("y")
            else "complex k-space: skdip.operators.kspace_to_channels gives its real and "
            "imaginary parts as channels, for the KSpaceSampling operator"
        )
        raise ValueError(
            f"Complex data not supported: {name} is complex; pass real-valued images ({hint})"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    elif arr.dtype.kind not in "iuf":
        # By kind: NumPy counts timedelta64 as an integer, read as counts of its unit.
        raise TypeError(f"{name} has non-numeric dtype {arr.dtype}; images must be numbers")
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2-D (H, W) or 3-D (H, W, C) image, got an array with "
            f"{arr.ndim} dimension(s) and shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    h, w = arr.shape[:2]
    if h < min_size or w < min_size:
        raise ValueError(
            f"{name} is too small: {h}x{w} pixels, at least {min_size}x{min_size} are needed"
        )
    out_dtype = _output_dtype(arr.dtype)
    if arr.dtype == np.uint8 and scale_uint8:
        arr = arr / 255.0  # a new array: the caller's is never touched
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    else:
        arr = np.array(arr, dtype=np.float64, copy=True)
    if not np.isfinite(arr).all():
        # Missing pixels in an observation: say where NaN means "missing".
        hint = f" ({missing_hint})" if missing_hint else ""
        raise ValueError(f"{name} contains NaN or infinity{hint}")
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[..., None]
    return arr, squeeze, out_dtype


def looks_like_a_stack(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D ``(H, W, C)`` shape looks like a stack of grey images,
    ``(N, H, W)``, or a channels-first image, ``(3, H, W)``, instead.

    More than 4 "channels" and: far more of them than rows, or square images. A
    many-band image, ``(H, W, B)``, has its two spatial sides first; a miss
    garbles silently, a false alarm only warns, so the test leans to warning.
    """
    rows, width, channels = shape
    return channels > 4 and (rows <= 4 or 4 * rows <= channels or width == channels)


def _warn_of_stacks(
    shapes: list[tuple[int, ...]], name: str, kind: str, channels: int | None = None
) -> None:
    """Warn, once, when images given channels last look like stacks or channels-first
    images instead (see :func:`looks_like_a_stack`), with the fix for the layout given.

    ``kind`` is how ``shapes`` arrived, as in :class:`ImageLayout`: "single" (one
    array), "array" (the images of an (N, H, W, C) batch) or "list". Images with
    ``channels`` channels, the number the caller expects, are not warned of.
    """
    stacks = [
        i
        for i, shape in enumerate(shapes)
        if len(shape) == 3 and shape[2] != channels and looks_like_a_stack(shape)
    ]
    if not stacks:
        return
    shape = tuple(shapes[stacks[0]])
    image = f"{shape[0]}x{shape[1]} image with {shape[2]} channels (channels last)"
    if kind == "single":
        message = (
            f"{name} of shape {shape} is read as one {image}. For N grey images pass an "
            "(N, H, W, 1) array or a list of images; for a channels-first image, move the "
            f"channels last (np.moveaxis({name}, 0, -1))."
        )
    elif kind == "array":
        n = len(shapes)
        message = (
            f"{name} of shape {(n, *shape)} is read as {n} image(s), each a {image}. For a "
            "channels-first (N, C, H, W) batch, as PyTorch lays them out, move the channels "
            f"last (np.moveaxis({name}, 1, -1)); for stacks of grey images pass an "
            f"(N, H, W, 1) array ({name}.reshape(-1, {shape[1]}, {shape[2]}, 1))."
        )
    else:
        others = f"; so are {len(stacks) - 1} other item(s) of {name}" if len(stacks) > 1 else ""
        message = (
            f"{name}[{stacks[0]}] of shape {shape} is read as one {image}{others}. For "
            f"channels-first images, move the channels last ([np.moveaxis(x, 0, -1) for x "
            f"in {name}]); for a stack of grey images, give each image as an item of the list."
        )
    warn(message + " If these are images with these channels, ignore this warning.", UserWarning)


class _ExposesArrayInterface(type):
    def __instancecheck__(cls, obj) -> bool:
        return hasattr(obj, "__array_interface__")


class ArrayInterface(metaclass=_ExposesArrayInterface):
    """What an array parameter takes besides scikit-learn's ``"array-like"``: an
    object exposing ``__array_interface__`` and nothing else that numpy reads (a PIL
    image: a recorded PSF, a support mask), for ``_parameter_constraints``.
    ``isinstance`` asks for the attribute alone."""


# scikit-learn names a type constraint by module and qualified name in its errors
# ("an instance of 'skdip._validation.ArrayInterface'"): say what it takes instead.
ArrayInterface.__module__ = "builtins"
ArrayInterface.__qualname__ = "PIL.Image.Image (or another object with __array_interface__)"


def _array_like(item) -> bool:
    """An array (NumPy, torch, pandas, PIL, ...) rather than nested lists of numbers."""
    return (
        isinstance(item, torch.Tensor)
        or hasattr(item, "__array__")
        or hasattr(item, "__array_interface__")  # PIL images offer only this
    )


def _nested_lists_as_array(X: list | tuple, name: str):
    """A list that is one image, as an array; any other list as it is (a batch).

    Rows (items of at most one dimension, lists or arrays) make one image. Nested
    lists of numbers two levels deep are one image too when their last axis is a
    few channels (``rgb.tolist()``); wider, they are a batch of grey images, as a
    list of arrays is.
    """
    if any(isinstance(item, torch.Tensor) for item in X):
        return X  # refused item by item, with the tensor's own message
    try:
        rows = all(np.ndim(item) <= 1 for item in X)
    except ValueError:  # a ragged item
        rows = False
    if rows:
        try:
            return np.asarray(X)
        except ValueError as error:
            raise ValueError(
                f"{name} is a nested list whose rows have different lengths; an image's "
                "rows must all have the same number of pixels"
            ) from error
    if len(X) == 1 or any(_array_like(item) for item in X):
        return X  # a list of one image (as nested lists or not), or of arrays
    try:
        arr = np.asarray(X)
    except ValueError:
        return X  # images of different sizes, each as nested lists
    if arr.ndim == 3 and arr.shape[2] > 4:
        # Grey images, each as nested lists, as a list of arrays would be; said, as
        # np.asarray would read one many-band image.
        warn(
            f"{name} is nested lists of shape {arr.shape}, read as {arr.shape[0]} grey "
            f"images of {arr.shape[1]}x{arr.shape[2]}; for one image with {arr.shape[2]} "
            f"channels pass np.asarray({name})",
            UserWarning,
        )
        return X
    return arr


def check_rows_of_one_image(item_shapes: list[tuple[int, ...]], name: str) -> None:
    """Refuse (or, for narrow images, warn of) a list whose items look like the rows of
    one colour image, ``list(rgb)``: ``item_shapes`` are the items' shapes."""
    shapes = set(item_shapes)
    if len(item_shapes) > 1 and len(shapes) == 1:
        (shape,) = shapes
        if len(shape) == 2 and shape[1] <= 4 and shape[0] > shape[1]:
            # list(rgb): the rows of one colour image, which would be fitted as grey
            # images a few pixels wide. Refused for 3 or 4 "columns" (colour, alpha),
            # only warned of otherwise: a batch of such narrow images is possible.
            n = len(item_shapes)
            message = (
                f"{name} is a list of {n} arrays of shape {shape}, read as "
                f"{n} grey images {shape[1]} pixel(s) wide. For one colour "
                f"image pass an array (np.asarray({name}), shape ({n}, "
                f"{shape[0]}, {shape[1]})); for a batch of images this narrow, give "
                "each a channel axis ((H, W, 1))."
            )
            if shape[1] in (3, 4):
                raise ValueError(message)
            warn(message, UserWarning)


def check_images(
    X,
    *,
    name: str = "X",
    min_size: int = 2,
    allow_nan: bool = False,
    scale_uint8: bool = True,
    missing_hint: str = "",
    complex_hint: str = "",
    channels: int | None = None,
) -> tuple[list[np.ndarray], ImageLayout]:
    """Validate one image or a batch and convert it to float64 ``(H, W, C)`` arrays.

    Parameters
    ----------
    X : array-like or list of array-like
        ``(H, W)``, ``(H, W, C)``, ``(N, H, W, C)`` or a list of 2-D/3-D images.
        uint8 images are scaled to ``[0, 1]``; other numbers are taken as is.
    name : str
        Name used in error messages.
    min_size : int
        Smallest accepted height and width.
    allow_nan : bool
        Accept NaN (used by estimators where NaN marks missing pixels).
    scale_uint8 : bool
        Map uint8 to [0, 1] as 8-bit images; False takes the numbers as they
        are (measurements such as photon counts).
    missing_hint : str
        What reads missing values instead, told with a refusal of NaN or masked
        values (e.g. that DIPInpainter does, to a denoiser's user).
    complex_hint : str
        What to pass instead, told with a refusal of complex data (by default the
        advice for complex images and k-space).
    channels : int or None
        The channels the caller expects its images to hold (as k-space holds two
        per coil): images with as many are not warned of as looking like stacks of
        grey images. None: no such number.

    Returns
    -------
    images : list of ndarray
        Copies of the images as float64 ``(H, W, C)`` arrays.
    layout : ImageLayout
        What :meth:`ImageLayout.restore` needs to undo the conversion.
    """
    if isinstance(X, str | bytes) or X is None:
        raise TypeError(f"{name} must be an array-like image, got {type(X).__name__}")
    _refuse_sparse(X, name)
    _refuse_iterables(X, name)
    if isinstance(X, list | tuple) and X:
        X = _nested_lists_as_array(X, name)
    if isinstance(X, list | tuple):
        if len(X) == 0:
            raise ValueError(f"{name} is an empty list; pass at least one image")
        items, kind = list(X), "list"
        item_shapes = [tuple(np.shape(item)) for item in items]
        if not any(isinstance(item, torch.Tensor) for item in items):
            _warn_of_stacks(item_shapes, name, kind, channels)  # (tensors are refused below)
        check_rows_of_one_image(item_shapes, name)
    else:
        if isinstance(X, torch.Tensor):
            _check_one(X, name, min_size)  # raises the tensor TypeError
        arr = np.asarray(X) if not isinstance(X, np.ndarray) else X
        if arr.dtype != object and arr.ndim == 4:
            if arr.shape[0] == 0:
                raise ValueError(f"{name} is an empty batch (shape {arr.shape})")
            items, kind = list(arr), "array"
            _warn_of_stacks([arr.shape[1:]] * arr.shape[0], name, kind, channels)
        elif arr.dtype != object and arr.ndim not in (2, 3):
            hint = " Reshape your data into an (H, W) image." if arr.ndim < 2 else ""
            raise ValueError(
                f"{name} must be an image (H, W) or (H, W, C), a batch (N, H, W, C) or a list "
                f"of images; got an array with {arr.ndim} dimension(s) and shape {arr.shape}.{hint}"
            )
        else:
            items, kind = [X], "single"
            if arr.dtype != object:
                _warn_of_stacks([arr.shape], name, kind, channels)
    images, squeeze, dtypes, scaled = [], [], [], []
    for i, item in enumerate(items):
        scaled.append(scale_uint8 and np.asarray(item).dtype == np.uint8)
        label = name if kind == "single" else f"{name}[{i}]"
        if allow_nan:
            img, sq, dt = _check_one_allow_nan(item, label, min_size, scale_uint8, complex_hint)
        else:
            img, sq, dt = _check_one(item, label, min_size, scale_uint8, missing_hint, complex_hint)
        images.append(img)
        squeeze.append(sq)
        dtypes.append(dt)
    return images, ImageLayout(kind, tuple(squeeze), tuple(dtypes), tuple(scaled))


def _check_one_allow_nan(
    image, name: str, min_size: int, scale_uint8: bool = True, complex_hint: str = ""
):
    if isinstance(image, torch.Tensor):
        _check_one(image, name, min_size)  # raises the tensor TypeError
    _refuse_sparse(image, name)
    _refuse_iterables(image, name)
    _check_pil_mode(image, name)
    masked = None
    if np.ma.isMaskedArray(image):
        # Masked values are missing, as NaN are.
        masked = np.ma.getmaskarray(image)
        image = np.ma.getdata(image)
    arr = np.asarray(image)
    if masked is not None and masked.any():
        if arr.dtype == bool:
            arr = arr.astype(np.float64)
        if arr.dtype.kind not in "iuf":  # complex, timedelta64, ...: refused there
            return _check_one(arr, name, min_size, scale_uint8, complex_hint=complex_hint)
        scale = 255.0 if arr.dtype == np.uint8 and scale_uint8 else 1.0
        out_dtype = _output_dtype(arr.dtype)
        arr = np.where(masked, np.nan, arr.astype(np.float64) / scale)
        img, sq, _ = _check_one_allow_nan(arr, name, min_size, scale_uint8=False)
        return img, sq, out_dtype
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind == "f" and np.isinf(arr).any():
        raise ValueError(f"{name} contains infinity")
    nan = np.isnan(arr) if arr.dtype.kind == "f" else None
    if nan is not None and nan.all():
        raise ValueError(f"{name} has no observed (non-NaN) pixel")
    filled = np.where(nan, 0.0, arr) if nan is not None and nan.any() else arr
    img, sq, dt = _check_one(filled, name, min_size, scale_uint8, complex_hint=complex_hint)
    if nan is not None and nan.any():
        img[np.broadcast_to(nan[..., None] if sq else nan, img.shape)] = np.nan
    return img, sq, dt


def reject_bool_numbers(estimator) -> None:
    """Refuse True/False for a numeric parameter (bool is an int to Python, so
    ``max_iter=True`` ran one step and ``lr=True`` a rate of 1, silently)."""
    from sklearn.utils._param_validation import Interval

    for name, constraints in estimator._parameter_constraints.items():
        value = getattr(estimator, name, None)
        if not isinstance(value, bool | np.bool_):
            continue
        numeric = any(
            isinstance(c, Interval) or (isinstance(c, type) and issubclass(c, numbers.Number))
            for c in constraints
        )
        accepts_bool = any(
            c in ("boolean", "verbose", "random_state") or c is bool for c in constraints
        )
        if numeric and not accepts_bool:
            raise InvalidParameterError(
                f"The {name!r} parameter of {type(estimator).__name__} must be a number, "
                f"not a bool; got {value!r}."
            )


def check_same_scale(
    images: list[np.ndarray],
    layout: ImageLayout,
    references: list[np.ndarray],
    ref_layout: ImageLayout,
    predict,
) -> None:
    """Refuse clean references read on another scale than the observations: because
    one side was uint8 (read on [0, 1], divided by 255) and the other was not, or, on
    one dtype, a reference far narrower than the data.

    A float X on 0-255 (noise added to a uint8 picture) against its uint8 clean
    image scored 15-43 dB too low, silently; so did raw 12-bit counts against their
    clean frame read by ``img_as_float`` (on [0, 4095/65535]: -65 dB). A reference
    far wider than the data is refused by the estimators' own range check. The scale
    is estimated from the data:
    ``predict(i, y)`` gives the measurements a linear forward model predicts for
    the reference (NaN where nothing is measured; None when it cannot tell), and
    the factor ``a`` in ``X ~ a * prediction`` is about 1 on one scale and 255 (or
    1/255) across them. It is taken twice, through the origin (robust to
    placeholders, which do not follow the prediction) and centred (robust to an
    offset such as clipped noise on a dark image), and the reference is refused
    only when both pass the geometric middle, 16 (or 1/16): a refusal of sound
    data would be worse than the silent miss it guards against.
    """
    for i, (image, reference) in enumerate(zip(images, references, strict=False)):
        x_uint8 = bool(layout.scaled_uint8[i]) if layout.scaled_uint8 else False
        y_uint8 = bool(ref_layout.scaled_uint8[i]) if ref_layout.scaled_uint8 else False
        predicted = predict(i, reference)
        if predicted is None or predicted.shape != image.shape:
            continue
        valid = np.isfinite(image) & np.isfinite(predicted)
        x, p = image[valid], predicted[valid]
        # In units of each side's largest magnitude, so that the squares below stay
        # finite for data near 1e200; the factors are put back in X's units after.
        x_unit = float(np.abs(x).max(initial=0.0))
        p_unit = float(np.abs(p).max(initial=0.0))
        if p.size < 2 or x_unit == 0 or p_unit == 0 or not np.isfinite(x_unit / p_unit):
            continue
        x, p = x / x_unit, p / p_unit
        if float(np.var(p)) <= 0:
            continue
        through_origin = float(np.sum(x * p)) / float(np.sum(p**2))
        centred = float(np.mean((x - x.mean()) * (p - p.mean()))) / float(np.var(p))
        # Three standard errors off the factors: a reference whose signal is below
        # the noise (one faint pixel in a dark frame) tells no scale.
        spread = [
            float(np.std(x - through_origin * p)) / float(np.sqrt(np.sum(p**2))),
            float(np.std(x - centred * p)) / float(np.sqrt(np.sum((p - p.mean()) ** 2))),
        ]
        unit = x_unit / p_unit
        factors = [through_origin * unit, centred * unit]
        spread = [e * unit for e in spread]
        centred = factors[1]
        if y_uint8 or x_uint8 == y_uint8:
            wrong = all(a - 3 * e > 16.0 for a, e in zip(factors, spread, strict=True))
        else:
            wrong = all(
                0 < a - 3 * e and a + 3 * e < 1 / 16.0 for a, e in zip(factors, spread, strict=True)
            )
        if wrong and x_uint8 == y_uint8:
            raise ValueError(
                f"X and y are on different scales: X is about {centred:.3g} times what y "
                "predicts. Give y on X's scale (for raw counts X, the clean counts, not "
                "img_as_float's [0, 1] reading of them; for X on [0, 1], y on [0, 1]; for "
                "k-space X, the transform of y with norm='ortho', as the model's)"
            )
        if wrong:
            eight, other = ("y", "X") if y_uint8 else ("X", "y")
            raise ValueError(
                f"{eight} is uint8, read on [0, 1] (divided by 255), and {other} is not: X is "
                f"about {centred:.3g} times what y predicts, so the two are on different "
                f"scales (0-255 against [0, 1] gives 255 or 1/255). Give y on X's scale: "
                f"e.g. {eight}.astype(float) when both are on 0-255, or {other} / 255 when "
                f"both should be on [0, 1]; for another scale (photon counts, a detector's "
                f"gain), divide by that scale instead"
            )


def _shown(value: object) -> str:
    """A short repr for an error message (a long list or array is abbreviated)."""
    return reprlib.repr(value)


def _bound(n: float) -> str:
    """A bound as written in a message: powers of two from 2**16 up as ``2**k`` (the
    seed ranges read as "[0, 2**32)" rather than "[0, 4294967295]")."""
    if isinstance(n, int) and abs(n) >= 2**16 and abs(n) & (abs(n) - 1) == 0:
        return f"{'-' if n < 0 else ''}2**{abs(n).bit_length() - 1}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def _range_text(
    minimum: float | None, maximum: float | None, exclusive_minimum: bool, integer: bool
) -> str:
    """The range part of a requirement: " >= 1", " in [0, 2**32)", ..."""
    if minimum is not None and maximum is not None:
        left = "(" if exclusive_minimum else "["
        if integer and isinstance(maximum, int) and "**" in _bound(maximum + 1):
            return f" in {left}{_bound(minimum)}, {_bound(maximum + 1)})"
        return f" in {left}{_bound(minimum)}, {_bound(maximum)}]"
    if minimum is not None:
        return f" {'>' if exclusive_minimum else '>='} {_bound(minimum)}"
    if maximum is not None:
        return f" <= {_bound(maximum)}"
    return ""


def _refuse(
    error: type[Exception], name: str, requirement: Callable[[], str], value: object, hint: str
) -> NoReturn:
    # The requirement is worded only here: the checks run on every step of a fit (a
    # regularizer's weight), where valid values need no message.
    raise error(
        f"{name} must be {requirement()}, got {_shown(value)}" + (f"; {hint}" if hint else "")
    )


# Without allow_none the checks return a value or raise: typed so, a caller's result is
# no Optional to narrow (mypy counted 65 errors in skdip's callers that relied on it).
@overload
def check_int(
    value: object,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    allow_none: Literal[False] = False,
    hint: str = "",
    error: type[Exception] | None = None,
) -> int: ...


@overload
def check_int(
    value: object,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    allow_none: bool,
    hint: str = "",
    error: type[Exception] | None = None,
) -> int | None: ...


def check_int(
    value: object,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    allow_none: bool = False,
    hint: str = "",
    error: type[Exception] | None = None,
) -> int | None:
    """Check an integer argument of a public function and return it as a Python int.

    NumPy integers are accepted (a ``ParameterGrid`` over ``np.arange`` hands them
    out) and returned as ``int``, so that a small type such as ``np.uint8`` cannot
    overflow in later arithmetic. ``bool`` is refused although Python counts it as
    an int: ``True`` as a count or a seed is a mistake, not a 1.

    Parameters
    ----------
    value : object
        The argument as given.
    name : str
        How the message names it (``"n_masks"``, ``"SkipNetwork.width"``).
    minimum, maximum : int or None, default=None
        Inclusive bounds; None for no bound.
    allow_none : bool, default=False
        Take None too (returned as is) and say so in the message.
    hint : str, default=""
        Appended to the message, after "; " (what the argument means, what to pass).
    error : exception class or None, default=None
        Raised for either refusal instead of TypeError and ValueError:
        ``InvalidParameterError`` (a subclass of both) for a constructor parameter
        of a configuration object, as the estimators refuse theirs.

    Returns
    -------
    int or None

    Raises
    ------
    TypeError
        If ``value`` is a bool or no integer (a float, a str, None unless allowed).
    ValueError
        If ``value`` is an integer outside ``[minimum, maximum]``.

    Both are ``error`` instead when it is given.
    """
    if value is None and allow_none:
        return None

    def requirement() -> str:
        adjective = _int_adjective(minimum) if maximum is None else ""
        if adjective:
            text = f"a {adjective}int"
        else:
            text = "an int" + _range_text(minimum, maximum, False, integer=True)
        return text + (" or None" if allow_none else "")

    if not _is_int(value):
        _refuse(error or TypeError, name, requirement, value, hint)
    out = int(value)  # exact for any integer; NumPy's compare alike
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        _refuse(error or ValueError, name, requirement, value, hint)
    return out


def _int_adjective(minimum: int | None) -> str:
    """How a message words a lower bound of 1 or 0 ("positive ", "non-negative "); ""
    for any other bound, which the message states as a number."""
    words: dict[int | None, str] = {1: "positive ", 0: "non-negative "}
    return words.get(minimum, "")


def _is_int(value: object) -> TypeGuard[numbers.Integral]:
    """An integer, Python's or NumPy's, and no bool (``np.bool_`` neither)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


@overload
def check_int_pair(
    value: object,
    name: str,
    minimum: int | None = 1,
    *,
    allow_int: bool = False,
    allow_none: Literal[False] = False,
    hint: str = "",
    error: type[Exception] | None = None,
) -> tuple[int, int]: ...


@overload
def check_int_pair(
    value: object,
    name: str,
    minimum: int | None = 1,
    *,
    allow_int: bool = False,
    allow_none: bool,
    hint: str = "",
    error: type[Exception] | None = None,
) -> tuple[int, int] | None: ...


def check_int_pair(
    value: object,
    name: str,
    minimum: int | None = 1,
    *,
    allow_int: bool = False,
    allow_none: bool = False,
    hint: str = "",
    error: type[Exception] | None = None,
) -> tuple[int, int] | None:
    """Check a pair of integers (a shape ``(h, w)``, a kernel size, a factor per
    axis) and return it as a tuple of two Python ints.

    The pair may be a tuple (``torch.Size`` too), a list or a 1-D NumPy array
    (``image.shape[:2]`` kept as an array); its items are checked as
    :func:`check_int` checks one: NumPy integers are taken, bools are not.

    Parameters
    ----------
    value : object
        The argument as given.
    name : str
        How the message names it (``"input_shape"``, ``"kernel_size"``).
    minimum : int or None, default=1
        Smallest value each item may take (inclusive); None for no bound.
    allow_int : bool, default=False
        Take a single int ``s`` too, for ``(s, s)``.
    allow_none : bool, default=False
        Take None too (returned as is) and say so in the message.
    hint : str, default=""
        Appended to the message, after "; " (why the minimum, what to pass).
    error : exception class or None, default=None
        Raised for either refusal instead of TypeError and ValueError:
        ``InvalidParameterError`` (a subclass of both) for a constructor parameter
        of a configuration object, as the estimators refuse theirs.

    Returns
    -------
    tuple of (int, int) or None

    Raises
    ------
    TypeError
        If ``value`` is no pair (a str, a set, another length, an int unless
        ``allow_int``, None unless ``allow_none``) or an item is no int (a float,
        a bool).
    ValueError
        If an item (or the single int) is below ``minimum``.

    Both are ``error`` instead when it is given.
    """
    if value is None and allow_none:
        return None

    def requirement() -> str:
        # "a positive int or a pair of positive ints", "a pair of ints, each >= 2", ...
        adjective = _int_adjective(minimum)
        each = "" if adjective or minimum is None else f", each >= {_bound(minimum)}"
        kinds = [f"a {adjective}int" if adjective else "an int"] * allow_int
        kinds += [f"a pair of {adjective}ints"]
        text = " or ".join(kinds) + each
        if allow_none:
            text = text.replace(" or ", ", ") + ("," if each else "") + " or None"
        return text

    if allow_int and _is_int(value):
        items = [value, value]
    elif isinstance(value, tuple | list) or (isinstance(value, np.ndarray) and value.ndim == 1):
        items = list(value)
    else:
        _refuse(error or TypeError, name, requirement, value, hint)
    if len(items) != 2 or not all(_is_int(s) for s in items):
        _refuse(error or TypeError, name, requirement, value, hint)
    if minimum is not None and min(items) < minimum:
        _refuse(error or ValueError, name, requirement, value, hint)
    return int(items[0]), int(items[1])


@overload
def check_number(
    value: object,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    finite: bool = True,
    allow_none: Literal[False] = False,
    hint: str = "",
    error: type[Exception] | None = None,
) -> float: ...


@overload
def check_number(
    value: object,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    finite: bool = True,
    allow_none: bool,
    hint: str = "",
    error: type[Exception] | None = None,
) -> float | None: ...


def check_number(
    value: object,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    finite: bool = True,
    allow_none: bool = False,
    hint: str = "",
    error: type[Exception] | None = None,
) -> float | None:
    """Check a real-number argument of a public function and return it as a float.

    Python and NumPy integers and floats are accepted; ``bool`` is refused (``True``
    as a noise level or a range is a mistake, not a 1), and so is NaN.

    Parameters
    ----------
    value : object
        The argument as given.
    name : str
        How the message names it.
    minimum, maximum : float or None, default=None
        Bounds, inclusive unless ``exclusive_minimum``; None for no bound.
    exclusive_minimum : bool, default=False
        Refuse ``minimum`` itself (a scale or a width that must be > 0).
    finite : bool, default=True
        Refuse infinity too (with False, only NaN is refused).
    allow_none : bool, default=False
        Take None too (returned as is) and say so in the message.
    hint : str, default=""
        Appended to the message, after "; ".
    error : exception class or None, default=None
        Raised for either refusal instead of TypeError and ValueError:
        ``InvalidParameterError`` (a subclass of both) for a constructor parameter
        of a configuration object, as the estimators refuse theirs.

    Returns
    -------
    float or None

    Raises
    ------
    TypeError
        If ``value`` is a bool or no real number (a str, a complex, None unless allowed).
    ValueError
        If ``value`` is NaN, infinite (with ``finite``) or out of range.

    Both are ``error`` instead when it is given.
    """
    if value is None and allow_none:
        return None

    def requirement() -> str:
        return (
            ("a finite number" if finite else "a number")
            + _range_text(minimum, maximum, exclusive_minimum, integer=False)
            + (" or None" if allow_none else "")
        )

    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        _refuse(error or TypeError, name, requirement, value, hint)
    out = float(value)
    if (
        np.isnan(out)
        or (finite and not np.isfinite(out))
        or (minimum is not None and (out <= minimum if exclusive_minimum else out < minimum))
        or (maximum is not None and out > maximum)
    ):
        _refuse(error or ValueError, name, requirement, value, hint)
    return out


def metric_array(image, name: str = "the array") -> np.ndarray:
    """``image`` as a NumPy array for a metric or a simulation: torch tensors too.

    A tensor is detached and brought to the CPU first: NumPy cannot read one that
    requires grad or lives on a GPU, and scoring a network's output should not
    depend on where it was made. Estimators refuse tensors instead (their results
    are NumPy arrays in the caller's layout).
    """
    if isinstance(image, torch.Tensor):
        # resolve_conj/neg: NumPy cannot read torch's lazy conjugate (x.conj()) either.
        image = image.detach().cpu().resolve_conj().resolve_neg()
        if image.dtype == torch.bfloat16:
            image = image.to(torch.float32)  # NumPy has no bfloat16
        return image.numpy()
    _check_pil_mode(image, name, alpha=False)
    if np.ma.isMaskedArray(image) and np.ma.getmaskarray(image).any():
        # np.asarray drops the mask: a reference's dead pixels, masked, counted as data
        # (PSNR 20.1 dB for 34.2 on the valid pixels).
        raise ValueError(
            f"{name} is a masked array with {int(np.ma.getmaskarray(image).sum())} masked "
            "value(s), whose hidden values would be read as data: fill them "
            "(.filled(value)), or compare the valid pixels only"
        )
    return np.asarray(image)


def native_copy(arr: np.ndarray) -> np.ndarray:
    """A copy of ``arr`` in the machine's byte order, which torch requires: astropy
    reads FITS files (a PSF, a mask) as big-endian numbers, which torch refused."""
    return np.array(arr, dtype=arr.dtype.newbyteorder("="), copy=True)


def check_plane(image, name: str = "image") -> np.ndarray:
    """A single 2-D ``(H, W)`` plane of numbers, real or complex, finite and not empty
    (an object to simulate a measurement of, or to compare): as an array, unconverted.
    Torch tensors are read as :func:`metric_array` reads them."""
    arr = metric_array(image, name)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def is_target_vector(y, n_images: int | None = None, images=None) -> bool:
    """Whether ``y`` is a supervised target (labels in a Pipeline), not clean images.

    A 0-D/1-D ``y`` always is. Given ``n_images``, so is a 2-D array with one
    row per image (multi-output labels): as clean images it would be a single
    image for several observations, or, for one observation, an image one
    pixel high, neither of which is valid. Given the observations (``images``,
    ``(H, W, C)`` arrays), such labels shaped like each of them, ``(H, W)``, are
    warned of: more likely one clean image given for the whole batch.
    """
    if y is None:
        return False
    if isinstance(y, Mapping | Iterator | Set | MappingView) and not scipy.sparse.issparse(y):
        return False  # no labels: refused by check_images, in words (np.asarray: 0-D)
    if isinstance(y, list | tuple):
        return all(np.ndim(item) == 0 for item in y)
    # A tensor's own shape: np.asarray refuses one that requires grad.
    shape = tuple(y.shape) if isinstance(y, torch.Tensor) else np.asarray(y).shape
    if n_images is not None and len(shape) == 2 and shape[0] == n_images:
        if images and all(np.shape(image)[:2] == shape for image in images):
            # N images of N rows: read as labels, a clean image was scored with no
            # reference (or not recorded by the fit), in silence.
            warn(
                f"y of shape {shape} is read as labels, one row per image of the "
                f"{n_images} given, but it has the shape of one of them: to judge the "
                f"estimates against clean images, pass one per image ({n_images}, "
                f"{shape[0]}, {shape[1]}[, C])",
                UserWarning,
            )
        return True
    return len(shape) <= 1


def images_digest(images: list[np.ndarray]) -> str:
    """A content hash of a list of images (copies made by GridSearchCV hash equal)."""
    h = hashlib.sha1()
    for img in images:
        h.update(str(img.shape).encode())
        h.update(np.ascontiguousarray(img, dtype=np.float64).tobytes())
    return h.hexdigest()


def working_dtype() -> torch.dtype:
    """torch's default dtype, which skdip builds its networks and operators in, where it
    is float32 or float64. Half precision is refused: float16 diverged at once (advice:
    a smaller learning rate), bfloat16 fitted 8 dB worse, silently, and an operator
    built under it kept its kernel rounded to bfloat16 after the default was set back."""
    dtype = torch.get_default_dtype()
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"torch's default dtype is {str(dtype).removeprefix('torch.')}, which skdip "
            "would build its networks and operators in: it computes in float32 or float64 "
            "only. Call torch.set_default_dtype(torch.float32) (or float64) first"
        )
    return dtype


def to_tensor(image: np.ndarray, device: torch.device, dtype=None) -> torch.Tensor:
    """``(H, W, C)`` array to a ``(1, C, H, W)`` tensor on ``device``, by default in
    torch's default dtype: the one the networks are built in, so that a fit's target
    and prediction agree (a float32 target under a float64 default made MSE's backward
    fail on some torch versions, and rounded the data to float32 for nothing)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    t = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=dtype)
    return t.unsqueeze(0).to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` tensor to a float64 ``(H, W, C)`` array on the CPU."""
    return tensor.detach()[0].to("cpu", torch.float64).numpy().transpose(1, 2, 0).copy()


def reference_data_range(reference: np.ndarray) -> float:
    """The PSNR range the estimators' ``score(X, y)`` reads a clean reference on: 1
    for references on the [0, 1] scale, else their peak magnitude, ``max(1, max|y|)``.

    From ``y`` alone, so that settings fitted on other intensity maps (rescaled or
    not) are measured alike, and continuous in ``y``: a rule that switched with the
    rescaling, or at a threshold, moved scores by 4 to 20 dB for one pixel's change.
    References in small units (1e-3) are thus read on 1 too: pass a range of your
    own to ``get_scorer("psnr", data_range=...)`` for those.
    """
    finite = np.abs(reference[np.isfinite(reference)])
    return max(1.0, float(finite.max())) if finite.size else 1.0
