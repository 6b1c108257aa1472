"""The noise level of an observation, estimated from the observation alone.

The no-reference scores compare a fit's residual with the noise power of the
data (the discrepancy principle), so that power must be measured without the
clean image. These facts shape the estimate:

* image detail reaches the finest scales too: on a small or textured picture a
  statistic over every pixel reads texture as noise, and overstates a low noise
  level by several dB. Patches whose gradient energy is what noise alone would
  give ("weak-texture" patches) carry little detail, so the noise is measured
  on them only;
* noise added before a clip to the intensity range is smaller at the clipped
  pixels (half of it is cut off), so it is measured on patches whose mean lies
  well inside the range, and the power lost near the clipped ends is then
  subtracted with a model of the clip;
* a noise-free flat area (a constant border or fill, as wide as a patch) holds no
  noise: its patches are left out and its pixels count as noise-free, so the
  estimate stays the noise power in the data;
* where neither works (tiny images, or clipped pixels everywhere) the wavelet
  median absolute deviation over all finest details is the fallback, the
  estimate of ``skimage.restoration.estimate_sigma``;
* pixels not observed (NaN: inpainting) are left out: each patch is measured on
  its observed neighbour pairs and whole 2x2 blocks, and takes part only with
  enough of them; the fallback is then the median over the whole 2x2 blocks.

Measured against the noise power actually in the data on the 23 bundled
pictures (``benchmarks/noise_level.py --part accuracy``,
``benchmarks/results/noise_level_accuracy_*.md``; with missing pixels,
``--part missing``, ``noise_level_missing.md``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.special import ndtr

from .._validation import images_digest

# A noise-free observation would make the scores' ratios infinite; this floor keeps
# them finite (and still ranks smaller residuals higher).
_MIN_NOISE_VAR = 1e-12

# Daubechies-2 analysis high-pass filter, from its closed form
# (1 -/+ sqrt 3, 3 -/+ sqrt 3) / (4 sqrt 2) with alternating signs.
_R3 = np.sqrt(3.0)
_DB2_HIGH = np.array([-(1 + _R3), 3 + _R3, -(3 - _R3), -(_R3 - 1)]) / (4 * np.sqrt(2.0))
# The MAD of a standard normal: norm.ppf(0.75).
_MAD_TO_SIGMA = 0.6744897501960817

# Side of the square patches the weak-texture estimate works on.
_PATCH = 5
# The 0.99 quantile of a patch's texture energy (see _texture_energy) for white noise of
# unit variance: a patch above this times the noise variance holds image detail. From
# 8 draws of 1024x1024 standard normal noise (155.72, spread 0.53 between draws); the
# mean is 80: 40 neighbour differences in a patch, each of variance 2.
_NOISE_TEXTURE_QUANTILE = 155.7
# Fewer patches than this untouched by clipped pixels: the wavelet fallback.
_MIN_PATCHES = 64
# The most recent estimates, by the observation's content (least recently used dropped).
_CACHED_ESTIMATES = 64
_ESTIMATES: OrderedDict[str, float] = OrderedDict()
_ESTIMATES_LOCK = threading.Lock()
# Fewer weak-texture patches than this: the 5% of least texture stand in for them (where
# clipping restricts the patches, the wavelet fallback is used instead).
_MIN_WEAK_PATCHES = 16
# With missing pixels: the fewest observed neighbouring pairs (of a patch's 40) whose
# texture is compared with noise's, and the fewest wholly observed 2x2 blocks (of 16) to
# measure on. With fewer, a patch's texture and its measure share most of their pixels:
# patches whose noise happened to be low pass as weak texture, and on a textured picture
# the estimate fell round after round (coins, 64 px, half the pixels missing, sigma 3/255:
# 6.7 dB low with 8 pairs and one block). Chosen on the bundled pictures
# (``benchmarks/noise_level.py --part missing``).
_MIN_TEXTURE_PAIRS = 16
_MIN_MEASURED_BLOCKS = 2
# With missing pixels: the fewest observed pairs, all agreeing, that show a flat area.
_MIN_FLAT_PAIRS = 12


def _finest_diagonal(channel: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Filter a 2-D image with ``taps`` along both axes and keep every other sample.

    With the Daubechies-2 high-pass this is the finest diagonal wavelet sub-band
    (half-sample symmetric extension).
    """
    detail = channel
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (3, 3)
        extended = np.pad(detail, pad, mode="symmetric")
        # Full convolution with the 4-tap filter, then every other sample.
        filtered = sum(
            taps[k] * np.take(extended, np.arange(3 - k, extended.shape[axis] - k), axis=axis)
            for k in range(4)
        )
        detail = np.take(filtered, np.arange(1, filtered.shape[axis], 2), axis=axis)
    return detail


def _wavelet_noise_sigma(channel: np.ndarray) -> float:
    """Gaussian noise level of a 2-D image from its finest diagonal wavelet details.

    Donoho and Johnstone's robust estimate: image content is sparse in the
    finest-scale Daubechies-2 diagonal sub-band while white noise spreads
    evenly over it, so ``median(|d|) / 0.6745`` measures the noise. Exactly-zero
    coefficients are left out (flat regions such as saturated areas carry no
    noise). This is scikit-image's ``estimate_sigma``.
    """
    detail = _finest_diagonal(channel, _DB2_HIGH)
    detail = np.abs(detail[detail != 0])
    if detail.size == 0:  # a constant image: no noise to measure
        return 0.0
    return float(np.median(detail) / _MAD_TO_SIGMA)


def _quick_noise_sigma(channel: np.ndarray) -> float:
    """A quick, robust noise level of a 2-D channel in which NaN marks missing pixels.

    The wavelet MAD on a whole channel; with missing pixels, the MAD of the
    whole 2x2 blocks' diagonal detail (zero-filled holes made every wavelet
    detail near them large: 10% of the pixels missing read a sigma of 0.02 as
    0.04 to 0.05), or, with too few of those, the wavelet MAD of the zero-filled
    channel (too high, but finite).
    """
    if np.isfinite(channel).all():
        return _wavelet_noise_sigma(channel)
    try:
        return float(np.sqrt(_complete_blocks_noise_var(channel)))
    except ValueError:
        return _wavelet_noise_sigma(np.nan_to_num(channel))


def _clip_bounds(channel: np.ndarray) -> tuple[float, float]:
    """The channel's clipped ends: its lowest and highest values where several pixels share
    them, else minus and plus infinity.

    Noise added before a clip to the intensity range piles pixels up at its
    ends; unclipped noisy data hardly ever repeats its exact extreme values.
    """
    bounds = []
    for value, none in ((channel.min(), -np.inf), (channel.max(), np.inf)):
        bounds.append(float(value) if np.count_nonzero(channel == value) > 1 else none)
    return bounds[0], bounds[1]


def _clipped_pixels(channel: np.ndarray) -> np.ndarray:
    """Pixels at a clipped end of the channel (see :func:`_clip_bounds`)."""
    low, high = _clip_bounds(channel)
    return (channel == low) | (channel == high)


def _flat_area(channel: np.ndarray, pairs: _ObservedPairs) -> np.ndarray:
    """Pixels of a noise-free flat area: those covered by a patch of one value.

    Noise never repeats one value over a whole patch, even quantised to 8 bits at a
    grey level or clipped at a bound (25 draws on its far side); a constant border
    or fill does. Such pixels hold no noise: a clip leaves them at the clean value.
    With missing pixels, a patch is of one value when all its observed neighbouring
    pairs agree and it has at least ``_MIN_FLAT_PAIRS`` of them.
    """
    p = _PATCH
    across = ((channel[:, :-1] == channel[:, 1:]) & pairs.across).astype(np.float64)
    down = ((channel[:-1, :] == channel[1:, :]) & pairs.down).astype(np.float64)
    # Patches (by their top-left pixel) all of whose observed neighbouring pairs agree.
    agree_across = _window_sums(across, p, p - 1)
    agree_down = _window_sums(down, p - 1, p)
    block = (
        (agree_across == pairs.across_counts)
        & (agree_down == pairs.down_counts)
        & (agree_across + agree_down >= _MIN_FLAT_PAIRS)
    )
    # A pixel is covered when a window of the patches whose top-left lies up to p - 1
    # above and left of it holds one.
    return _window_sums(np.pad(block.astype(np.float64), p - 1), p, p) > 0


def _window_sums(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sums over every ``height`` x ``width`` window that fits (top-left anchored)."""
    total = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    total[1:, 1:] = values.cumsum(0).cumsum(1)
    return (
        total[height:, width:]
        - total[:-height, width:]
        - total[height:, :-width]
        + total[:-height, :-width]
    )


class _ObservedPairs:
    """Which neighbouring pairs and 2x2 blocks of a channel are wholly observed, and how
    many of each every patch holds (all of them where no pixel is missing)."""

    def __init__(self, observed: np.ndarray):
        p = _PATCH
        self.all = bool(observed.all())
        self.across = observed[:, :-1] & observed[:, 1:]
        self.down = observed[:-1, :] & observed[1:, :]
        self.blocks = self.across[:-1, :] & self.across[1:, :]
        self.across_counts = _window_sums(self.across.astype(np.float64), p, p - 1)
        self.down_counts = _window_sums(self.down.astype(np.float64), p - 1, p)
        self.block_counts = _window_sums(self.blocks.astype(np.float64), p - 1, p - 1)
        self.pair_counts = self.across_counts + self.down_counts
        self.measurable = (self.pair_counts >= _MIN_TEXTURE_PAIRS) & (
            self.block_counts >= _MIN_MEASURED_BLOCKS
        )


def _texture_energy(channel: np.ndarray, pairs: _ObservedPairs | None = None) -> np.ndarray:
    """Each patch's sum of squared differences between horizontal and vertical neighbours.

    Noise of variance ``v`` gives ``80 v`` on average; image detail adds to it.
    With missing pixels (``pairs``), the sum over the observed pairs is scaled to the
    patch's 40 pairs (0 where none is observed).
    """
    p = _PATCH
    across = np.diff(channel, axis=1) ** 2
    down = np.diff(channel, axis=0) ** 2
    if pairs is None or pairs.all:
        return _window_sums(across, p, p - 1) + _window_sums(down, p - 1, p)
    energy = _window_sums(np.where(pairs.across, across, 0.0), p, p - 1) + _window_sums(
        np.where(pairs.down, down, 0.0), p - 1, p
    )
    full = 2 * p * (p - 1)
    return energy * full / np.maximum(pairs.pair_counts, 1.0)


def _haar_diagonal(image: np.ndarray) -> np.ndarray:
    """The diagonal Haar detail ``(a - b - c + d) / 2`` of every 2x2 block (first two axes).

    It has the noise variance under white noise and only the mixed second
    derivative of the image, which is small where the texture is weak.
    """
    return (image[:-1, :-1] - image[:-1, 1:] - image[1:, :-1] + image[1:, 1:]) / 2


def _diagonal_energy(channel: np.ndarray, pairs: _ObservedPairs | None = None) -> np.ndarray:
    """Each patch's mean squared diagonal Haar detail (over its wholly observed 2x2
    blocks, with ``pairs``; 0 where it has none)."""
    p = _PATCH
    detail = _haar_diagonal(channel) ** 2
    if pairs is None or pairs.all:
        return _window_sums(detail, p - 1, p - 1) / (p - 1) ** 2
    total = _window_sums(np.where(pairs.blocks, detail, 0.0), p - 1, p - 1)
    return total / np.maximum(pairs.block_counts, 1.0)


def _texture_threshold(pairs: _ObservedPairs | None) -> np.ndarray | float:
    """The 0.99 quantile of white noise's :func:`_texture_energy`, per unit variance.

    A patch with fewer observed pairs averages fewer squared differences, whose spread
    is wider: ``1 + 5.71 / sqrt(n)`` times their mean for ``n`` pairs follows the
    quantile measured on 512x512 unit noise with 10% to 60% of its pixels missing
    within 4% from 4 to 40 pairs (above it, so slightly more patches pass).
    """
    if pairs is None or pairs.all:
        return _NOISE_TEXTURE_QUANTILE
    full = 2 * _PATCH * (_PATCH - 1)
    spread = 1 + 5.71 / np.sqrt(np.maximum(pairs.pair_counts, 1.0))
    return _NOISE_TEXTURE_QUANTILE * spread / (1 + 5.71 / np.sqrt(full))


def _weak_texture_noise_var(
    texture: np.ndarray,
    diagonal: np.ndarray,
    eligible: np.ndarray,
    *,
    least_textured: bool = True,
    threshold: np.ndarray | float = _NOISE_TEXTURE_QUANTILE,
) -> float | None:
    """Noise variance measured on the eligible patches whose texture is that of noise.

    Starts from every eligible patch, then keeps those whose texture energy
    lies below the 0.99 quantile noise of the current level would give, and
    measures again, until the level settles (a handful of rounds). The rare
    pure-noise patch above the threshold costs about 1% of the variance.
    Where fewer than 16 patches pass (texture everywhere), the 5% of least
    texture stand in for them, or, with ``least_textured=False``, None is
    returned. ``texture`` and ``diagonal``: each patch's :func:`_texture_energy`
    and :func:`_diagonal_energy`; ``threshold``: :func:`_texture_threshold`.
    """
    noise_var = float(np.mean(diagonal[eligible]))
    for _ in range(20):
        weak = eligible & (texture <= noise_var * threshold)
        if np.count_nonzero(weak) < _MIN_WEAK_PATCHES:
            if not least_textured:
                return None
            weak = eligible & (texture <= np.quantile(texture[eligible], 0.05))
        previous, noise_var = noise_var, float(np.mean(diagonal[weak]))
        if abs(noise_var - previous) <= 1e-4 * previous:
            break
    return noise_var


def _clip_moments(
    x: np.ndarray, sigma: float, low: float, high: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``clip(x + n, low, high)`` and mean of ``(clip(x + n, low, high) - x)**2``.

    For ``n`` normal with standard deviation ``sigma``; closed forms from the
    truncated normal (an infinite bound is no clip).
    """
    # Beyond 40 standard deviations the normal's mass is zero in float64.
    a = np.maximum((low - x) / sigma, -40.0)
    b = np.minimum((high - x) / sigma, 40.0)
    cdf_a, cdf_b = ndtr(a), ndtr(b)
    pdf_a = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
    pdf_b = np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
    shift = a * cdf_a + (pdf_a - pdf_b) + b * (1 - cdf_b)
    power = a * a * cdf_a + (cdf_b - cdf_a + a * pdf_a - b * pdf_b) + b * b * (1 - cdf_b)
    return x + sigma * shift, sigma * sigma * power


def _clipped_noise_power(
    channel: np.ndarray,
    noise_var: float,
    low: float,
    high: float,
    noise_free: np.ndarray,
    observed: np.ndarray | None = None,
) -> float:
    """Mean power of Gaussian noise of variance ``noise_var`` after the channel's clip.

    A pixel whose clean value lies near a clipped end keeps less than the full
    variance (half of it at the end itself, with a shift of its mean). The
    clean value is unknown; it is taken as the one whose clipped noisy mean
    equals the 5x5 local mean of the observation (inverted on a table of clean
    values between the clip bounds), and the expected power is averaged over
    all pixels. ``low``, ``high``: the clipped ends (infinite: none);
    ``noise_free``: pixels that hold no noise (see :func:`_flat_area`);
    ``observed``: the pixels measured (the power is their mean; the local mean is
    over the observed pixels of the 5x5 window), all if None.
    """
    sigma = float(np.sqrt(noise_var))
    if sigma == 0.0:
        return noise_var
    if observed is None or observed.all():
        observed = np.ones(channel.shape, dtype=bool)
        local = uniform_filter(channel, size=5, mode="reflect").ravel()
    else:
        weight = uniform_filter(observed.astype(np.float64), size=5, mode="reflect")
        total = uniform_filter(np.where(observed, channel, 0.0), size=5, mode="reflect")
        local = (total / np.maximum(weight, 1e-12)).ravel()
    noisy = (~noise_free & observed).ravel()
    count = np.count_nonzero(observed)
    # 5 sigma inside both ends the clip removes under 1e-5 of the power.
    is_near = noisy & ((local < low + 5 * sigma) | (local > high - 5 * sigma))
    near = local[is_near]
    full = np.count_nonzero(noisy) - near.size  # pixels that keep the whole variance
    if near.size == 0:
        return noise_var * full / count
    start = low if np.isfinite(low) else near.min() - 5 * sigma
    stop = high if np.isfinite(high) else near.max() + 5 * sigma
    # Clean values a twentieth of sigma apart: the clipped mean is increasing in them.
    clean = np.linspace(start, stop, int(np.clip(20 * (stop - start) / sigma, 64, 20000)) + 1)
    mean, power = _clip_moments(clean, sigma, low, high)
    near_power = np.interp(near, mean, power)  # clamps beyond the table's ends
    return float((np.sum(near_power) + noise_var * full) / count)


def _channel_noise_var(channel: np.ndarray) -> float:
    """Noise power of one 2-D channel (NaN: a pixel not observed) over its observed
    pixels: weak-texture patches, else a median absolute deviation (the wavelet MAD on
    a whole channel, the diagonal Haar detail of whole 2x2 blocks with missing pixels).
    """
    observed = np.isfinite(channel)
    if observed.all():

        def fallback() -> float:
            return _wavelet_noise_sigma(channel) ** 2

    else:
        # Where too few whole 2x2 blocks are observed, the few patches that hold some
        # measure the noise no better: refused, naming the sigma= that serves instead.
        blocks_noise_var = _complete_blocks_noise_var(channel)

        def fallback() -> float:
            return blocks_noise_var

        channel = np.where(observed, channel, 0.0)
    if min(channel.shape) < _PATCH + 1:
        return fallback()
    pairs = _ObservedPairs(observed)
    texture, diagonal = _texture_energy(channel, pairs), _diagonal_energy(channel, pairs)
    threshold = _texture_threshold(pairs)
    low, high = _clip_bounds(channel[observed])
    clipped = observed & ((channel == low) | (channel == high))
    # A noise-free flat area (a constant border or fill: padding, a registered frame's
    # corners) adds no noise to the data, and its patches always passed as "weak
    # texture": they took the level to the floor (an 8-pixel border, 36% of a picture's
    # pixels, turned a sigma of 0.05 into 1e-6). Its patches are left out, and its
    # pixels count as noise-free, at a clipped end too.
    flat = _flat_area(channel, pairs) & observed
    noisy_fraction = 1.0 - np.count_nonzero(flat) / np.count_nonzero(observed)
    beside_flat = _window_sums(flat.astype(np.float64), _PATCH, _PATCH) > 0
    # With missing pixels, only patches with enough observed pairs (all, otherwise).
    usable = ~beside_flat & pairs.measurable
    if not clipped.any():
        if not usable.any():
            return fallback() * noisy_fraction
        noise_var = _weak_texture_noise_var(texture, diagonal, usable, threshold=threshold)
        return noise_var * noisy_fraction
    eligible = (_window_sums(clipped.astype(np.float64), _PATCH, _PATCH) == 0) & usable
    noise_var = None
    if np.count_nonzero(eligible) >= _MIN_PATCHES:
        noise_var = _weak_texture_noise_var(
            texture, diagonal, eligible, least_textured=False, threshold=threshold
        )
    if noise_var is None:
        # Clipped pixels everywhere, or only at edges between clipped areas: no patch
        # shows the full noise alone.
        return fallback() * noisy_fraction
    # Patches no clipped pixel touches are also those whose noise happened not to reach
    # a bound, so their noise is smaller (by about 0.35 dB at sigma 45/255 on the bundled
    # pictures). Patches chosen by their mean, 2 sigma inside the bounds, hardly depend on
    # their own noise: measure again on those.
    counts = _window_sums(observed.astype(np.float64), _PATCH, _PATCH)
    means = _window_sums(channel, _PATCH, _PATCH) / np.maximum(counts, 1.0)
    for _ in range(5):
        sigma = np.sqrt(noise_var)
        inside = (means >= low + 2 * sigma) & (means <= high - 2 * sigma) & usable
        if np.count_nonzero(inside) < _MIN_PATCHES:
            break
        refined = _weak_texture_noise_var(
            texture, diagonal, inside, least_textured=False, threshold=threshold
        )
        if refined is None:
            break
        previous, noise_var = noise_var, refined
        if abs(noise_var - previous) <= 1e-3 * previous:
            break
    return _clipped_noise_power(channel, noise_var, low, high, flat, observed)


def estimate_noise_var(observation: np.ndarray) -> float:
    """Noise power of an ``(H, W, C)`` observation: the mean over channels, floored.

    Parameters
    ----------
    observation : ndarray of shape (H, W, C)
        White Gaussian noise, perhaps clipped to the data's range; NaN marks a
        pixel not observed (inpainting), left out.

    Returns
    -------
    noise_var : float
        The estimated ``mean((observation - clean)**2)`` over the observed values,
        at least ``1e-12``.

    Raises
    ------
    ValueError
        A channel with missing pixels has fewer than 8 wholly observed 2x2 blocks
        where the weak-texture patches do not serve.
    """
    # A grid search scores every setting against the same image: estimate it once.
    key = images_digest([observation])
    with _ESTIMATES_LOCK:  # scorers may run in threads
        if key in _ESTIMATES:
            _ESTIMATES.move_to_end(key)
            return _ESTIMATES[key]
    powers = [_channel_noise_var(observation[..., c]) for c in range(observation.shape[-1])]
    noise_var = max(float(np.mean(powers)), _MIN_NOISE_VAR)
    with _ESTIMATES_LOCK:
        _ESTIMATES[key] = noise_var
        while len(_ESTIMATES) > _CACHED_ESTIMATES:
            _ESTIMATES.popitem(last=False)
    return noise_var


def _complete_blocks_noise_var(channel: np.ndarray) -> float:
    """Noise variance of a 2-D channel with missing pixels (NaN) from its wholly
    observed 2x2 blocks.

    The diagonal Haar detail ``(a - b - c + d) / 2`` of a block has the noise
    variance under i.i.d. Gaussian noise and is nearly blind to smooth image
    content; its median absolute value over blocks gives a robust estimate (read
    high where texture is everywhere: the weak-texture estimate is preferred).
    """
    # The blocks that tile the image: every other one of all 2x2 blocks.
    detail = _haar_diagonal(channel)[::2, ::2]
    detail = detail[np.isfinite(detail)]
    if detail.size < 8:
        # estimator.score has no sigma: name the scorer that takes one.
        raise ValueError(
            f"too few observed pixels to estimate the noise level: {detail.size} 2x2 blocks "
            "with all four pixels observed, at least 8 needed. Give the noise level (in X's "
            "units) to a scorer: skdip.metrics.get_scorer('emv', sigma=...)(estimator, X) "
            "instead of estimator.score(X), or scoring=get_scorer('emv', sigma=...) in a "
            "grid search"
        )
    return float(np.median(np.abs(detail)) / _MAD_TO_SIGMA) ** 2
