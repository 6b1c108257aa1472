"""Blur kernels (point spread functions) and a convolution helper.

All kernels are ``float64`` arrays of odd square size ``(size, size)``,
non-negative, summing to 1, and centred: their centre of mass lies within
half a pixel of the central pixel ``(size // 2, size // 2)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, signal

from .._typing import Float, Int
from .._validation import check_int, check_number, looks_like_a_stack, metric_array
from .._warnings import warn
from ._noise import _check_random_state

__all__ = ["blur", "make_disk_kernel", "make_gaussian_kernel", "make_motion_kernel"]


def _check_size(size: Any, minimum: int = 1) -> int:
    # The type only: an even size gets the message below, which says it must be odd.
    size = check_int(size, "size")
    if size < minimum or size % 2 == 0:
        raise ValueError(f"size must be an odd int >= {minimum}, got {size}")
    return size


def make_gaussian_kernel(size: Int, sigma: Float) -> np.ndarray:
    """Isotropic Gaussian blur kernel.

    ``k[i, j]`` is proportional to ``exp(-((i - c)**2 + (j - c)**2) / (2 sigma**2))``
    with ``c = size // 2``, normalised to sum to 1. The kernel is truncated
    to the ``size x size`` window, so choose ``size`` of at least about
    ``6 * sigma + 1`` to keep the tails.

    Parameters
    ----------
    size : int
        Odd side length of the kernel.
    sigma : float
        Standard deviation in pixels (``> 0``). A window narrower than
        ``2 * sigma + 1``, which leaves the kernel far less spread, is warned of.

    Returns
    -------
    kernel : ndarray of float64, shape (size, size)
        Non-negative, sums to 1, symmetric about the central pixel.

    Examples
    --------
    >>> from skdip.datasets import make_gaussian_kernel
    >>> k = make_gaussian_kernel(5, 1.0)
    >>> k.shape, round(float(k.sum()), 6), bool(k[2, 2] == k.max())
    ((5, 5), 1.0, True)
    """
    size = _check_size(size)
    sigma = check_number(sigma, "sigma", 0, exclusive_minimum=True)
    r = np.arange(size, dtype=np.float64) - size // 2
    # r / sigma, not r**2 / sigma**2: a tiny sigma squared underflows to 0 (NaN
    # kernel); this way the kernel tends to the delta it should be.
    with np.errstate(over="ignore"):
        g = np.exp(-0.5 * (r / sigma) ** 2)
    kernel = np.outer(g, g)
    kernel /= kernel.sum()
    if 1 < size and size // 2 < sigma:  # (a 1x1 kernel is the identity whatever sigma)
        # The window keeps only the middle of the bell: make_gaussian_kernel(5, 3.0)
        # blurred with a standard deviation of 1.36 pixels, not 3, silently.
        spread = float(np.sqrt((kernel.sum(axis=1) * r**2).sum()))
        warn(
            f"a {size}x{size} window keeps only the middle of a Gaussian of sigma={sigma:g}: "
            f"the kernel's standard deviation is {spread:.3g} pixels, not {sigma:g}. A size "
            f"of about 6 * sigma + 1 ({6 * sigma + 1:.3g}) keeps the tails.",
            UserWarning,
        )
    return kernel


def make_disk_kernel(size: Int, radius: Float, supersample: Int = 8) -> np.ndarray:
    """Uniform disk ("defocus", pillbox) blur kernel with an anti-aliased edge.

    Each pixel is weighted by the fraction of its area covered by the disk
    of the given radius centred on the central pixel, estimated on a
    ``supersample x supersample`` grid of sub-pixel points; the kernel is then
    normalised to sum to 1. A radius below about half a pixel gives the
    identity (a single central 1).

    Parameters
    ----------
    size : int
        Odd side length of the kernel.
    radius : float
        Disk radius in pixels, ``0 < radius <= size / 2`` (the disk must fit
        in the window).
    supersample : int, default=8
        Sub-pixel sampling per axis used for the edge coverage (``>= 1``).

    Returns
    -------
    kernel : ndarray of float64, shape (size, size)
        Non-negative, sums to 1, symmetric about the central pixel.

    Examples
    --------
    >>> from skdip.datasets import make_disk_kernel
    >>> k = make_disk_kernel(7, 3.0)
    >>> k.shape, round(float(k.sum()), 6), bool(k[0, 0] == 0)
    ((7, 7), 1.0, True)
    """
    size = _check_size(size)
    radius = check_number(radius, "radius", 0, exclusive_minimum=True)
    if radius > size / 2:
        raise ValueError(
            f"radius={radius} does not fit in a kernel of size {size} (max {size / 2})"
        )
    s = check_int(supersample, "supersample", 1)
    # Sub-pixel sample offsets inside a unit pixel, symmetric about 0.
    sub = (np.arange(s) + 0.5) / s - 0.5
    coords = (np.arange(size) - size // 2)[:, None] + sub[None, :]  # (size, s)
    yy = coords[:, None, :, None]
    xx = coords[None, :, None, :]
    inside = (yy**2 + xx**2) <= radius**2
    kernel = inside.mean(axis=(2, 3))
    if kernel.sum() == 0:  # tiny radius: no sample hit, fall back to identity
        kernel[size // 2, size // 2] = 1.0
    return kernel / kernel.sum()


def _shake_trajectory(
    rng: np.random.RandomState | np.random.Generator, n_steps: int, intensity: float
) -> np.ndarray:
    """Control points ``(n_steps + 1, 2)`` of a random camera-shake path (unit scale).

    Heading and speed follow correlated random walks: the angular velocity
    and the log-speed are AR(1) processes (momentum 0.9 and 0.8) driven by
    Gaussian noise scaled by ``intensity``; rare abrupt jerks (probability
    ``0.05 * intensity`` per step) turn the heading by a Gaussian angle.
    Each step takes the same exposure time.
    """
    heading = rng.uniform(0.0, 2.0 * np.pi)
    omega = 0.0
    log_speed = 0.0
    pos = np.zeros(2)
    points = [pos.copy()]
    for _ in range(n_steps):
        omega = 0.9 * omega + 0.04 * intensity * rng.standard_normal()
        if rng.random() < 0.05 * intensity:
            heading += 0.5 * np.pi * rng.standard_normal()
        heading += omega
        log_speed = 0.8 * log_speed + 0.6 * intensity * rng.standard_normal()
        pos = pos + np.exp(log_speed) * np.array([np.sin(heading), np.cos(heading)])
        points.append(pos.copy())
    return np.asarray(points)


def make_motion_kernel(
    size: Int,
    random_state: Any = None,
    *,
    length: Float | None = None,
    intensity: Float = 0.5,
    n_steps: Int = 64,
    smoothing: Float = 0.5,
) -> np.ndarray:
    """Random camera-shake (motion blur) kernel.

    Model. The camera follows a random 2-D trajectory sampled at ``n_steps``
    equal time steps: its heading turns with an angular velocity that is an
    AR(1) process with momentum (smooth curves), its speed is the exponential
    of another AR(1) process (the camera slows down and speeds up, so some
    places receive more exposure), and rare abrupt jerks change direction.
    ``intensity`` scales all these random changes: ``0`` gives a straight,
    uniform line (linear motion blur), ``1`` a very erratic path.
    The path is sampled densely (several points per pixel of path, equal
    weight per unit of time), moved so that its time-average position is the
    central pixel, scaled so that its farthest point is at ``length`` times
    the usable half-width, and splatted onto the grid with bilinear weights
    (sub-pixel accumulation, which preserves the centre of mass exactly).
    A light Gaussian smoothing of ``smoothing`` pixels then mimics the
    optics. The result is normalised to sum to 1. Because the path is kept
    away from the border by the splat and smoothing footprints, no mass is
    lost and the centre of mass equals the central pixel up to round-off.

    Parameters
    ----------
    size : int
        Odd side length of the kernel (9 to 41 are typical). It must leave the
        path room to move inside the splat and smoothing footprints: at least
        7 with the default smoothing, 5 without smoothing.
    random_state : None, int, RandomState or Generator, default=None
        Source of randomness.
    length : float or None, default=None
        Extent of the path, in ``(0, 1]``: the largest distance (max-norm)
        of the path from the kernel centre as a fraction of the usable
        half-width ``size // 2 - 1 - r``, where ``r`` is the smoothing
        footprint radius (1 pixel for the default smoothing). ``None`` draws
        it uniformly in ``[0.5, 1]``.
    intensity : float, default=0.5
        Erratic-ness of the shake, in ``[0, 1]``.
    n_steps : int, default=64
        Number of time steps of the trajectory (``>= 1``).
    smoothing : float, default=0.5
        Standard deviation in pixels of the final Gaussian smoothing
        (``0`` disables it).

    Returns
    -------
    kernel : ndarray of float64, shape (size, size)
        Non-negative, sums to 1, centre of mass at the central pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import make_motion_kernel
    >>> k = make_motion_kernel(15, random_state=0)
    >>> k.shape, round(float(k.sum()), 6), bool(k.min() >= 0)
    ((15, 15), 1.0, True)
    >>> rows, cols = np.indices(k.shape)
    >>> bool(abs((rows * k).sum() - 7) < 0.5 and abs((cols * k).sum() - 7) < 0.5)
    True
    """
    size = _check_size(size, minimum=3)
    rng = _check_random_state(random_state)
    intensity = check_number(intensity, "intensity", 0, 1)
    smoothing = check_number(smoothing, "smoothing", 0)
    n_steps = check_int(n_steps, "n_steps", 1)
    if length is None:
        length = rng.uniform(0.5, 1.0)
    else:
        length = check_number(length, "length", 0, 1, exclusive_minimum=True)

    control = _shake_trajectory(rng, n_steps, intensity)

    # Footprint of the smoothing (scipy truncates at 2 sigma here).
    truncate = 2.0
    smooth_radius = int(truncate * smoothing + 0.5) if smoothing > 0 else 0
    centre = size // 2
    half_width = centre - 1 - smooth_radius
    if half_width < 1:
        # No room for a path: every seed would give the same centred blob.
        raise ValueError(
            f"size={size} leaves no room for motion with smoothing={smoothing:g}: the "
            f"smallest size is {2 * (2 + smooth_radius) + 1}"
        )

    # Dense sampling, equal time per step; scale the path first so the density
    # of samples along it is known in pixels.
    seg = np.diff(control, axis=0)
    mean_pos = control[:-1] + 0.5 * seg  # time-average of each linear segment
    offset = mean_pos.mean(axis=0)
    reach = np.abs(control - offset).max()
    scale = length * half_width / reach if reach > 0 else 0.0
    seg_len = np.hypot(seg[:, 0], seg[:, 1]).max() * scale
    per_step = int(np.clip(np.ceil(4 * seg_len), 4, 256))
    t = (np.arange(per_step) + 0.5) / per_step  # midpoints: mean of t is exactly 1/2
    samples = control[:-1, None, :] + t[None, :, None] * seg[:, None, :]
    samples = (samples.reshape(-1, 2) - offset) * scale
    # Remove the tiny residual of the discrete mean so the centre is exact.
    samples -= samples.mean(axis=0)
    samples += centre

    # Bilinear splatting.
    kernel = np.zeros((size, size))
    base = np.floor(samples).astype(int)
    frac = samples - base
    weight = 1.0 / len(samples)
    for dy in (0, 1):
        wy = frac[:, 0] if dy else 1.0 - frac[:, 0]
        for dx in (0, 1):
            wx = frac[:, 1] if dx else 1.0 - frac[:, 1]
            rows = np.clip(base[:, 0] + dy, 0, size - 1)
            cols = np.clip(base[:, 1] + dx, 0, size - 1)
            np.add.at(kernel, (rows, cols), weight * wy * wx)

    if smoothing > 0:
        kernel = ndimage.gaussian_filter(kernel, smoothing, mode="constant", truncate=truncate)
    np.clip(kernel, 0.0, None, out=kernel)
    return kernel / kernel.sum()


_BLUR_MODES = ("valid", "same", "full", "wrap", "circular")


def blur(image: Any, kernel: Any, mode: str = "valid") -> np.ndarray:
    """Convolve every channel of an image with a 2-D kernel.

    This is a true convolution (the kernel is flipped), the model
    ``y = k * x`` of blind deblurring. With ``kh, kw = kernel.shape`` and
    ``c = ((kh - 1) // 2, (kw - 1) // 2)`` (the convention of
    :class:`skdip.operators.Convolution` and of SciPy's ``"same"`` mode):

    - ``"valid"``: ``y[i, j] = sum_{m, n} k[m, n] x[i + kh - 1 - m, j + kw - 1 - n]``,
      only where the kernel fits inside the image; shape ``(H - kh + 1, W - kw + 1)``.
      This is the forward model of SelfDeblur (the sharp image is larger than the
      blurred one).
    - ``"same"``: ``y[i, j] = sum_{m, n} k[m, n] x[i + c_0 - m, j + c_1 - n]`` with
      zeros outside the image; shape ``(H, W)``.
    - ``"wrap"`` (or ``"circular"``, the name of :class:`skdip.operators.Convolution`'s
      and :class:`skdip.DIPDeconvolver`'s ``boundary``): as ``"same"`` but the image is
      periodic (circular convolution).
    - ``"full"``: the whole support, zeros outside; shape ``(H + kh - 1, W + kw - 1)``.

    For odd kernel sizes the centre ``c`` is the central pixel, so a centred
    kernel does not shift the image in the ``"same"`` and ``"wrap"`` modes.
    When both image and kernel are non-negative, round-off negatives from
    the FFT are set to 0; otherwise no clipping is applied.

    Parameters
    ----------
    image : array-like of shape (H, W) or (H, W, C)
        Image to blur (any finite real values).
    kernel : array-like of shape (kh, kw)
        Blur kernel (point spread function), used as given; a sum below 0,
        or off ``[0.5, 2]`` (a PSF as recorded), is warned of.
    mode : {"valid", "same", "full", "wrap", "circular"}, default="valid"
        Boundary handling, see above.

    Returns
    -------
    blurred : ndarray of float64
        Shape ``(h, w)`` or ``(h, w, C)`` depending on ``mode``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.datasets import blur, make_gaussian_kernel
    >>> x = np.random.default_rng(0).random((32, 32, 3))
    >>> blur(x, make_gaussian_kernel(5, 1.0), mode="valid").shape
    (28, 28, 3)
    >>> delta = np.zeros((3, 3))
    >>> delta[1, 1] = 1.0
    >>> bool(np.allclose(blur(x, delta, mode="same"), x))
    True
    """
    if not isinstance(mode, str) or mode not in _BLUR_MODES:
        raise ValueError(f"mode must be one of {_BLUR_MODES}, got {mode!r}")
    mode = "wrap" if mode == "circular" else mode
    x = metric_array(image, "image")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"image must be a real numeric array, got dtype {x.dtype}")
    if x.ndim not in (2, 3) or x.size == 0:
        raise ValueError(
            f"image must be a non-empty 2-D (H, W) or 3-D (H, W, C) array, got shape {x.shape}"
        )
    if x.ndim == 3 and looks_like_a_stack(x.shape):
        # Blurred as one image, a stack's images would be mixed with each other.
        warn(
            f"image of shape {x.shape} is blurred as one {x.shape[0]}x{x.shape[1]} image with "
            f"{x.shape[2]} channels (channels last); for a stack of grey images blur each "
            "one, for a channels-first image move the channels last (np.moveaxis(image, 0, -1))",
            UserWarning,
        )
    k = metric_array(kernel, "kernel")
    if k.dtype.kind not in "biuf":
        raise TypeError(f"kernel must be a real numeric array, got dtype {k.dtype}")
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {k.shape}")
    x = x.astype(np.float64)
    k = k.astype(np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(k))):
        raise ValueError("image and kernel must not contain NaN or infinite values")
    total = float(k.sum())
    if total < 0:
        # As DIPDeconvolver warns: a kernel of the wrong sign inverted the image, silently.
        warn(
            f"the kernel sums to {total:.3g} < 0, while a blur kernel sums to a positive "
            "number (1 keeps the brightness): the blurred image's level is inverted. Check "
            "its sign.",
            UserWarning,
        )
    elif total > 0 and not 0.5 <= total <= 2:
        # A PSF as recorded (a uint8 image of it) brightened the image 840 times, silently;
        # DIPDeconvolver warns of the same kernel.
        warn(
            f"the kernel sums to {total:.3g}, while a blur that keeps the brightness sums "
            "to 1: the blurred image's level is multiplied by that much. Normalise it "
            "(kernel / kernel.sum()) unless that gain is meant.",
            UserWarning,
        )
    kh, kw = k.shape
    if mode == "valid" and (kh > x.shape[0] or kw > x.shape[1]):
        raise ValueError(
            f"kernel of shape {k.shape} is larger than the image {x.shape[:2]} in 'valid' mode"
        )

    grey = x.ndim == 2
    if grey:
        x = x[:, :, None]
    conv_mode = mode
    if mode in ("same", "wrap"):
        # Pad so that a 'valid' convolution puts the kernel centre c on each output
        # pixel; periodic padding makes it circular.
        ch, cw = (kh - 1) // 2, (kw - 1) // 2
        pads = ((kh - 1 - ch, ch), (kw - 1 - cw, cw), (0, 0))
        x = np.pad(x, pads, mode="wrap" if mode == "wrap" else "constant")
        conv_mode = "valid"
    out = signal.fftconvolve(x, k[:, :, None], mode=conv_mode, axes=(0, 1))
    if x.min() >= 0 and k.min() >= 0:
        np.maximum(out, 0.0, out=out)
    if grey:
        out = out[:, :, 0]
    return np.ascontiguousarray(out)
