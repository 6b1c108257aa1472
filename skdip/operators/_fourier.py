"""Far-field diffraction: the magnitude (or intensity) of an oversampled Fourier transform."""

from __future__ import annotations

import numpy as np
import torch

from .._typing import Int
from .._validation import check_int, check_int_pair, metric_array
from ._base import ForwardOperator, _setting

__all__ = ["FourierMagnitude", "check_oversampling", "make_phase_masks"]


def check_oversampling(
    oversampling, minimum: int = 2, *, name: str = "oversampling", error=None
) -> tuple[int, int]:
    """Validate an oversampling factor (an int or a pair) and return ``(sy, sx)``.

    A measurement needs at least 2 per axis; comparing objects in their padded
    frame (the phase-retrieval metrics) also takes 1, the arrays as given.
    ``name`` and ``error`` are :func:`~skdip._validation.check_int_pair`'s (an
    estimator's parameter: its class's name, InvalidParameterError).
    """
    # Below 2 the phase is not determined by the magnitudes, even in principle.
    hint = (
        "below 2 the object's autocorrelation is undersampled: the magnitudes do not "
        "determine its phase"
        if minimum >= 2
        else ""
    )
    # The type first, without the hint: why 2 says nothing to 2.5 or "2".
    check_int_pair(oversampling, name, None, allow_int=True, error=error)
    return check_int_pair(oversampling, name, minimum, allow_int=True, hint=hint, error=error)


def make_phase_masks(n_masks: Int, shape: tuple[int, int], seed: Int = 0) -> np.ndarray:
    """The random unit-modulus masks of coded diffraction patterns.

    Mask ``k`` is ``exp(1j * phi_k)`` with phases drawn uniformly in
    ``[0, 2 pi)`` by ``numpy.random.RandomState(seed)``, so the same
    ``(n_masks, shape, seed)`` always gives the same masks: simulation and
    reconstruction only need to agree on these three values.

    Parameters
    ----------
    n_masks : int
        Number of masks (at least 1).
    shape : tuple of int
        ``(H, W)`` of the object.
    seed : int, default=0
        Seed of the phases.

    Returns
    -------
    masks : ndarray of complex128, shape (n_masks, H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.operators import make_phase_masks
    >>> m = make_phase_masks(2, (4, 4), seed=0)
    >>> m.shape, bool(np.allclose(np.abs(m), 1))
    ((2, 4, 4), True)
    """
    n_masks = check_int(n_masks, "n_masks", 1)
    seed = check_int(seed, "seed", 0, 2**32 - 1)  # RandomState's seed range
    shape = check_int_pair(shape, "shape")
    rng = np.random.RandomState(seed)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n_masks, *shape))
    return np.exp(1j * phases)


def check_masks(
    masks,
    n_masks: int = 0,
    shape: tuple[int, int] | None = None,
    coverage: bool = True,
    *,
    owner: str | None = None,
) -> np.ndarray:
    """Coded masks given as an array, validated, as complex128 ``(K, H, W)``.

    Parameters
    ----------
    masks : array-like of shape (K, H, W) or (H, W)
        The masks multiplying the object, one per pattern (a 2-D array is one
        mask): complex (phase plates), or real (amplitude masks). NumPy arrays,
        nested lists and torch tensors are read.
    n_masks : int, default=0
        The number of masks they must hold; 0 takes it from ``masks``.
    shape : tuple of int or None, default=None
        The object shape ``(H, W)`` they must have; None does not check it.
    coverage : bool, default=True
        Refuse masks under which a pixel is zero in every mask. Checked after
        the shape: masks given channels-last are told as such, not as blocking
        pixels.
    owner : str or None, default=None
        The class whose ``masks`` and ``n_masks`` parameters these are: what they
        are as such (their type, layout, values, count) is then refused with
        ``InvalidParameterError`` naming ``owner.masks`` (or ``owner.n_masks``),
        as the estimators refuse a bad parameter; a mismatch with the object's
        ``shape`` stays a ValueError about the data. None: the arguments of a
        function, refused with ValueError and TypeError.

    Returns
    -------
    masks : ndarray of complex128, shape (K, H, W)
        A new array: the caller's is never kept, so editing it later does not
        change a measurement model built from it.
    """
    name, error = _setting(owner, "masks")
    type_error, value_error = error or TypeError, error or ValueError
    try:
        arr = metric_array(masks, name)
    except ValueError as refused:  # a masked array with masked values
        raise value_error(str(refused)) from None
    if arr.dtype.kind not in "biufc":
        raise type_error(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise value_error(
            f"{name} must be an (n_masks, H, W) array (or one (H, W) mask), got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise value_error(f"{name} is empty (shape {arr.shape})")
    arr = np.array(arr, dtype=np.complex128)
    if not np.isfinite(arr).all():
        raise value_error(f"{name} contains NaN or infinity")
    if n_masks and n_masks != arr.shape[0]:
        count, _ = _setting(owner, "n_masks")
        raise value_error(
            f"{count}={n_masks} but masks holds {arr.shape[0]} mask(s): leave n_masks at 0 "
            "(it is taken from the masks) or make them agree"
        )
    if shape is not None and arr.shape[1:] != tuple(shape):
        hint = (
            "; they look channels-last: masks are (K, H, W), e.g. np.moveaxis(masks, -1, 0)"
            if arr.shape[:2] == tuple(shape)
            else ""
        )
        raise ValueError(
            f"masks have shape {arr.shape[1:]} per mask but the object has shape "
            f"{tuple(shape)}{hint}"
        )
    blocked = ~(np.abs(arr) > 0).any(axis=0)
    if coverage and blocked.any():
        # No pattern carries these pixels: nothing determines the object there, and the
        # classical projection would divide by zero.
        row, col = (int(v) for v in np.argwhere(blocked)[0])
        raise ValueError(
            f"masks are zero at {int(blocked.sum())} object pixel(s) in every pattern "
            f"(the first at row {row}, column {col}): the object is not measured there; "
            "every pixel needs a non-zero value in at least one mask"
        )
    return arr


class FourierMagnitude(ForwardOperator):
    """Far-field diffraction pattern of an object: ``|F(pad(x))|`` or its square.

    The object ``x`` of shape ``(H, W)`` is zero-padded at the bottom and
    right to ``(sy * H, sx * W)`` and transformed by the orthonormal 2-D
    discrete Fourier transform (``numpy.fft.fft2(..., norm="ortho")``), so
    that Parseval holds: the squared magnitudes sum to ``||x||**2``. With
    ``n_masks > 0`` the measurement is a set of coded diffraction patterns:
    pattern ``k`` is that of the object multiplied by the random phase mask
    ``k`` of :func:`make_phase_masks`. Masks of one's own (phase plates of an
    experiment, amplitude masks) are given as ``masks``.

    Real tensors are real objects; complex tensors are complex objects.
    Every input channel (and every mask) gives one output channel, in the
    order ``channel * n_patterns + mask``.

    The measured magnitudes do not change when the padded object is moved
    circularly, conjugated and flipped (``x(-r)*``) or multiplied by a
    global phase: these are the trivial ambiguities that any evaluation
    must factor out (see :func:`skdip.metrics.phase_retrieval_error`).
    Coded masks remove most of them.

    Parameters
    ----------
    oversampling : int or tuple of int, default=2
        Padding factor per axis, at least 2.
    measurement : {"magnitude", "intensity"}, default="magnitude"
        Return ``|F(pad(x))|`` or ``|F(pad(x))|**2``.
    n_masks : int, default=0
        Number of coded diffraction patterns; 0 measures the plain pattern.
    mask_seed : int, default=0
        Seed of the masks (see :func:`make_phase_masks`).
    masks : array-like of shape (K, H, W) or None, default=None
        The masks themselves, for objects of shape ``(H, W)`` only: complex
        (phase plates) or real (amplitude masks), each object pixel non-zero in
        at least one of them (a 2-D array is one mask). They replace the
        seeded ones and ``n_masks`` (0, or ``K``) is taken from them.

    Attributes
    ----------
    masks : Tensor or None
        The complex masks, shape ``(n_masks, H, W)``, of the object shape of
        the last call (None before any call and without masks).
    given_masks : ndarray or None
        The ``masks`` given (a read-only complex128 ``(K, H, W)`` copy), None for
        seeded ones.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skdip.operators import FourierMagnitude
    >>> x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    >>> y = FourierMagnitude(oversampling=2)(x)
    >>> y.shape
    torch.Size([1, 1, 16, 16])
    >>> ref = np.abs(np.fft.fft2(x[0, 0].numpy(), s=(16, 16), norm="ortho"))
    >>> bool(np.allclose(y[0, 0].numpy(), ref))
    True
    """

    linear = False
    # The given masks are held privately: the attribute ``masks`` is the last call's.
    _settings = {
        "oversampling": "oversampling",
        "measurement": "measurement",
        "n_masks": "n_masks",
        "mask_seed": "mask_seed",
        "masks": "_given_masks",
    }
    _derived = ("given_masks", "n_patterns", "linear")

    def __init__(
        self,
        oversampling=2,
        measurement: str = "magnitude",
        n_masks: Int = 0,
        mask_seed: Int = 0,
        masks=None,
    ):
        super().__init__()
        owner = "FourierMagnitude"
        name, error = _setting(owner, "oversampling")
        self.oversampling = check_oversampling(oversampling, name=name, error=error)
        if not isinstance(measurement, str) or measurement not in ("magnitude", "intensity"):
            name, error = _setting(owner, "measurement")
            raise error(f"{name} must be 'magnitude' or 'intensity', got {measurement!r}")
        name, error = _setting(owner, "n_masks")
        n_masks = check_int(n_masks, name, 0, error=error)
        # As given: with masks, 0 takes their number, which new masks may change.
        self._n_masks_given = int(n_masks)
        name, error = _setting(owner, "mask_seed")
        mask_seed = check_int(mask_seed, name, error=error)
        # A NumPy array, not a buffer: the state_dict stays that of a plain operator.
        # Their pixels are checked against the object shape at the first call.
        self._given_masks = (
            None if masks is None else check_masks(masks, n_masks, coverage=False, owner=owner)
        )
        if self._given_masks is not None:
            # Read-only: the masks are cached per shape and device, which an edit in
            # place would not reach.
            self._given_masks.flags.writeable = False
            n_masks = self._given_masks.shape[0]
        elif n_masks > 0:  # an unused seed is not checked
            check_int(mask_seed, name, 0, 2**32 - 1, error=error)  # RandomState's seed range
        self.measurement = measurement
        self.n_masks = int(n_masks)
        self.mask_seed = int(mask_seed)
        # The masks follow from (n_masks, shape, mask_seed): a cache, not module state, so
        # the state_dict is the same before and after the first call (the divergence
        # guard restores snapshots taken before it), and a changed mask_seed takes effect.
        self._masks_cache: dict[tuple, torch.Tensor] = {}

    def __getstate__(self) -> dict:
        # The cache is rebuilt on use: a pickle must not carry tensors of a device
        # the loading machine may lack.
        state = self.__dict__.copy()
        state["_masks_cache"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if self.__dict__.get("_given_masks") is not None:
            self._given_masks.flags.writeable = False  # a pickle does not keep the flag

    def _setting_values(self) -> dict:
        values = super()._setting_values()
        values["n_masks"] = self.__dict__.get("_n_masks_given", self.n_masks)
        return values

    @property
    def given_masks(self) -> np.ndarray | None:
        """The ``masks`` given, read-only; None for seeded masks."""
        return self._given_masks

    def _key_arrays(self) -> list[np.ndarray]:
        # The given masks are neither a buffer nor a public attribute: without this,
        # estimators keyed two operators with other masks alike, and kept a solve (or
        # went on with a warm fit) made under the other masks.
        return [] if self._given_masks is None else [self._given_masks]

    @property
    def masks(self) -> torch.Tensor | None:
        """The complex masks of the last call, ``(n_masks, H, W)``; None before any
        call and without masks (``make_phase_masks`` gives them for any shape)."""
        if not self.n_masks or not self._masks_cache:
            return None
        return next(iter(self._masks_cache.values()))

    @property
    def n_patterns(self) -> int:
        """Number of diffraction patterns per object channel."""
        return max(self.n_masks, 1)

    def _masks_for(self, shape: tuple[int, int], device, dtype) -> torch.Tensor:
        key = (self.n_masks, tuple(shape), self.mask_seed, str(device), dtype)
        if key not in self._masks_cache:
            if self.given_masks is None:
                masks = make_phase_masks(self.n_masks, tuple(shape), self.mask_seed)
            else:
                masks = check_masks(self.given_masks, shape=tuple(shape))
            self._masks_cache.clear()  # one entry: the operator serves one problem at a time
            self._masks_cache[key] = torch.as_tensor(masks, dtype=torch.complex128).to(
                device=device, dtype=dtype
            )
        return self._masks_cache[key]

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """The complex field ``F(pad(mask * x))``, shape ``(B, C * n_patterns, sH, sW)``."""
        if not isinstance(x, torch.Tensor):
            # NumPy input failed with "'numpy.ndarray' object has no attribute 'is_complex'".
            raise TypeError(
                f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__} "
                "(torch.from_numpy(x) for a NumPy array)"
            )
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        frame = self.output_shape((h, w))
        if self.n_masks:
            cdtype = x.dtype if x.is_complex() else torch.promote_types(x.dtype, torch.complex64)
            masks = self._masks_for((h, w), x.device, cdtype)
            # (B, C, 1, H, W) * (K, H, W) -> (B, C, K, H, W) -> (B, C*K, H, W)
            x = (x.unsqueeze(2) * masks).reshape(x.shape[0], -1, h, w)
        # fft2 with s= pads with zeros after the data: the object sits top-left.
        return torch.fft.fft2(x, s=frame, norm="ortho")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        field = self.spectrum(x)
        if self.measurement == "intensity":
            return field.real.square() + field.imag.square()
        return field.abs()

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        sy, sx = self.oversampling
        h, w = check_int_pair(input_shape, "input_shape")
        return h * sy, w * sx

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        sy, sx = self.oversampling
        h, w = check_int_pair(output_shape, "output_shape")
        if h % sy or w % sx:
            raise ValueError(
                f"a diffraction pattern of shape {(h, w)} is not divisible by the "
                f"oversampling {self.oversampling}"
            )
        return h // sy, w // sx

    def input_channels(self, output_channels: int) -> int:
        """Channels of the object measured as ``output_channels`` patterns: each
        object channel gives :attr:`n_patterns` of them (one per mask).

        Without it an estimator built an object with as many channels as the
        measurement (3 for three coded patterns of a grey object) and failed on
        the model's 9 patterns.
        """
        patterns = self.n_patterns
        if output_channels % patterns:
            raise ValueError(
                f"a measurement of {output_channels} channel(s) is not {patterns} coded "
                f"pattern(s) per object channel (n_masks={self.n_masks}): pass the "
                f"measurement with a multiple of {patterns} channels, in the order "
                "channel * n_patterns + mask"
            )
        return output_channels // patterns

    def extra_repr(self) -> str:
        masks = (
            f"mask_seed={self.mask_seed}"
            if self.given_masks is None
            else f"masks=<{self.n_masks} given, {self.given_masks.shape[1]}x"
            f"{self.given_masks.shape[2]}>"
        )
        return (
            f"oversampling={self.oversampling}, measurement={self.measurement!r}, "
            f"n_masks={self.n_masks}, {masks}"
        )
