"""Tests of the image and kernel metrics (psnr, ssim, aligned metrics, kernel_error)."""

import numpy as np
import pytest

# Imported from the implementation modules so these tests do not depend on
# the package's re-exports.
from skdip.metrics._alignment import align_shift, aligned_psnr, aligned_ssim, kernel_error
from skdip.metrics._quality import psnr, ssim


def _smooth_image(shape=(40, 40), seed=0):
    """A textured image in [0, 1] (random, lightly smoothed so shifts are well defined)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), sigma=[1, 1] + [0] * (len(shape) - 2))
    x -= x.min()
    return x / x.max()


# --------------------------------------------------------------------------- psnr / ssim


def test_psnr_hand_computed():
    x = np.zeros((4, 4))
    y = x.copy()
    y[1, 2] = 0.4  # MSE = 0.16 / 16 = 0.01 -> 20 dB
    assert psnr(x, y) == pytest.approx(20.0)
    assert psnr(x, y, data_range=2.0) == pytest.approx(20.0 + 20 * np.log10(2))
    # colour: the MSE is over all values
    xc = np.zeros((4, 4, 3))
    yc = xc.copy()
    yc[0, 0, 1] = 0.6  # MSE = 0.36 / 48
    assert psnr(xc, yc) == pytest.approx(10 * np.log10(48 / 0.36))
    assert psnr(x, x) == np.inf


def test_ssim_grey_and_colour():
    x = _smooth_image((32, 32, 3))
    noisy = np.clip(x + 0.1 * np.random.default_rng(1).standard_normal(x.shape), 0, 1)
    assert ssim(x, x) == pytest.approx(1.0)
    value = ssim(x, noisy)
    assert 0 < value < 0.95
    # channels last: the mean of the per-channel SSIMs
    per_channel = [ssim(x[..., c], noisy[..., c]) for c in range(3)]
    assert value == pytest.approx(np.mean(per_channel))
    assert ssim(x[..., 0], noisy[..., 0], gaussian_weights=True) != pytest.approx(per_channel[0])


def test_quality_inputs_untouched_and_float_returned():
    x = _smooth_image()
    y = x[::-1].copy()
    bx, by = x.copy(), y.copy()
    assert isinstance(psnr(x, y), float) and isinstance(ssim(x, y), float)
    assert np.array_equal(x, bx) and np.array_equal(y, by)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_quality_errors(metric):
    x = np.zeros((16, 16))
    with pytest.raises(ValueError, match="same shape"):
        metric(x, np.zeros((16, 15)))
    with pytest.raises(ValueError, match="2-D"):
        metric(np.zeros(16), np.zeros(16))
    bad = x.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metric(x, bad)
    with pytest.raises(ValueError, match="NaN"):
        metric(np.full_like(x, np.inf), x)
    with pytest.raises(ValueError, match="data_range"):
        metric(x, x, data_range=0)
    with pytest.raises(TypeError):
        metric(np.array([["a"]]), np.array([["a"]]))


def test_ssim_too_small():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.zeros((5, 8)), np.zeros((5, 8)))


# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("colour", [False, True])
def test_aligned_metrics_find_known_shift(colour):
    x = _smooth_image((48, 48, 3) if colour else (48, 48))
    y = np.roll(x, (3, -2), axis=(0, 1))
    y = y + 0.01 * np.random.default_rng(2).standard_normal(y.shape)
    before = y.copy()
    assert align_shift(x, y, max_shift=5) == (3, -2)
    assert align_shift(y, x, max_shift=5) == (-3, 2)
    plain, aligned = psnr(x, y), aligned_psnr(x, y, max_shift=5)
    assert aligned > plain + 15
    assert aligned == pytest.approx(40.0, abs=1.0)  # the 0.01 noise floor
    assert aligned_ssim(x, y, max_shift=5) > ssim(x, y) + 0.3
    assert np.array_equal(y, before)


def test_aligned_psnr_no_shift_equals_psnr_and_crop():
    x = _smooth_image()
    y = np.clip(x + 0.05 * np.random.default_rng(3).standard_normal(x.shape), 0, 1)
    assert aligned_psnr(x, y, max_shift=0, crop=0) == pytest.approx(psnr(x, y))
    assert aligned_psnr(x, y, max_shift=0, crop=4) == pytest.approx(
        psnr(x[4:-4, 4:-4], y[4:-4, 4:-4])
    )
    assert align_shift(x, y, max_shift=4) == (0, 0)
    # The default crop equals max_shift.
    assert aligned_psnr(x, y, max_shift=3) == pytest.approx(aligned_psnr(x, y, max_shift=3, crop=3))


def test_aligned_psnr_is_best_over_shifts():
    x = _smooth_image((32, 32))
    y = np.roll(x, (1, 1), axis=(0, 1)) * 0.9 + 0.05
    m = 3
    brute = max(
        psnr(x[m:-m, m:-m], y[m + dy : 32 - m + dy, m + dx : 32 - m + dx])
        for dy in range(-m, m + 1)
        for dx in range(-m, m + 1)
    )
    assert aligned_psnr(x, y, max_shift=m) == pytest.approx(brute)


def test_alignment_ties_prefer_no_shift():
    x = np.full((20, 20), 0.3)
    assert align_shift(x, x.copy(), max_shift=4) == (0, 0)


def test_alignment_errors():
    x = np.zeros((20, 20))
    with pytest.raises(ValueError, match="crop"):
        aligned_psnr(x, x, max_shift=5, crop=2)
    with pytest.raises(ValueError, match="leaves nothing"):
        align_shift(x, x, max_shift=10)
    # The default max_shift on a small image: told what to pass.
    with pytest.raises(
        ValueError, match=r"defaults to max_shift\): pass a smaller max_shift .*below 3"
    ):
        aligned_psnr(np.zeros((6, 6)), np.zeros((6, 6)))
    aligned_psnr(np.zeros((6, 6)), np.ones((6, 6)), max_shift=2)
    with pytest.raises(ValueError):
        align_shift(x, x, max_shift=-1)
    with pytest.raises(TypeError):
        align_shift(x, x, max_shift=1.5)
    with pytest.raises(ValueError, match="same shape"):
        aligned_ssim(x, np.zeros((20, 21)))


# --------------------------------------------------------------------------- kernels


def _motion_like_kernel():
    k = np.zeros((9, 9))
    k[4, 2:7] = [1, 2, 3, 2, 1]
    k[3, 6] = 2
    k[2, 7] = 1
    return k / k.sum()


def test_kernel_error_zero_for_shifted_copy_of_other_size():
    k = _motion_like_kernel()
    assert kernel_error(k, k) == pytest.approx(0.0, abs=1e-12)
    bigger = np.roll(np.pad(k, 4), (2, -3), axis=(0, 1))  # 17x17, moved
    err, shift = kernel_error(k, bigger, return_shift=True)
    assert err == pytest.approx(0.0, abs=1e-12)
    assert shift == (2, -3)
    # the other way round (reference larger than the estimate)
    assert kernel_error(bigger, k) == pytest.approx(0.0, abs=1e-12)
    # rectangular estimate
    assert kernel_error(k, np.pad(k, ((1, 3), (0, 6)))) == pytest.approx(0.0, abs=1e-12)


def test_kernel_error_positive_for_different_kernel():
    k = _motion_like_kernel()
    other = np.zeros((9, 9))
    other[1:8, 4] = 1 / 7  # a vertical line instead
    assert kernel_error(k, other) > 0.5
    assert kernel_error(k, np.zeros((5, 5))) == pytest.approx(1.0)
    # a small perturbation gives a small error
    noisy = k + 0.001 * np.random.default_rng(0).random(k.shape)
    assert 0 < kernel_error(k, noisy) < 0.1


def test_kernel_error_max_shift_limits_the_search():
    k = _motion_like_kernel()
    moved = np.roll(np.pad(k, 6), (5, 0), axis=(0, 1))
    assert kernel_error(k, moved) == pytest.approx(0.0, abs=1e-12)
    err, shift = kernel_error(k, moved, max_shift=2, return_shift=True)
    assert err > 0.5 and max(abs(s) for s in shift) <= 2


def test_kernel_error_errors():
    k = _motion_like_kernel()
    with pytest.raises(ValueError, match="all zeros"):
        kernel_error(np.zeros((3, 3)), k)
    with pytest.raises(ValueError, match="2-D"):
        kernel_error(k[None], k)
    with pytest.raises(ValueError, match="NaN"):
        kernel_error(k, np.full((3, 3), np.nan))


def test_uint8_images_are_read_on_the_unit_scale():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    expected = peak_signal_noise_ratio(a, b, data_range=255)
    assert psnr(a, b) == pytest.approx(expected)
    assert psnr(a, b / 255.0) == pytest.approx(expected)  # mixed: the same scale
    assert ssim(a, b) == pytest.approx(structural_similarity(a, b, data_range=255))


@pytest.mark.parametrize("metric", [psnr, ssim, aligned_psnr, aligned_ssim])
def test_data_range_none_says_what_to_pass(metric):
    # get_scorer("psnr", data_range=None) takes each reference's range; here None got
    # only "must be a real number, got NoneType".
    x = np.random.default_rng(0).random((16, 16))
    with pytest.raises(TypeError, match=r"not None: for the reference's own range pass np\.ptp"):
        metric(x, x, data_range=None)


def test_images_on_another_scale_than_data_range_are_refused():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    # scikit-image's usual data_range=255 on uint8, read on [0, 1]: 48 dB too high.
    for metric in (psnr, ssim, lambda x, y, **kw: aligned_psnr(x, y, 0, 0, **kw)):
        with pytest.raises(ValueError, match="uint8 images are read on"):
            metric(a, b, data_range=255)
    # 16-bit counts, or float on 0-255, against the default range of 1.
    with pytest.raises(ValueError, match="image_true spans 65535 .*data_range=1:"):
        psnr(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257)
    with pytest.raises(ValueError, match="image_test spans"):
        psnr(a, b * 1.0)  # uint8 against its pixel values as float
    with pytest.raises(ValueError, match="image_true spans"):
        aligned_ssim(a * 1.0, b * 1.0, max_shift=1)
    # Given the right range, float 0-255 agrees with scikit-image.
    expected = peak_signal_noise_ratio(a * 1.0, b * 1.0, data_range=255)
    assert psnr(a * 1.0, b * 1.0, data_range=255) == pytest.approx(expected)
    # A noisy estimate beyond [0, 1] is still an estimate on that scale.
    assert np.isfinite(psnr(a / 255.0, a / 255.0 + rng.normal(0, 0.2, a.shape)))


def test_a_reference_far_narrower_than_data_range_is_warned_of():
    import warnings

    x = _smooth_image((16, 16))
    noisy = x + np.random.default_rng(1).normal(0, 0.05, x.shape)
    # An image on [0, 1] divided by 255 once more: its PSNR reads 48 dB too high.
    for metric in (psnr, ssim, lambda a, b, **kw: aligned_psnr(a, b, 0, 0, **kw)):
        with pytest.warns(UserWarning, match="image_true spans only 0.00392 .*data_range=1:"):
            metric(x / 255, noisy / 255)
    with pytest.warns(UserWarning, match="under 1% of data_range=65535"):
        psnr(x * 255, noisy * 255, data_range=65535)  # 8-bit values read as 16-bit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        psnr(x / 255, noisy / 255, data_range=1 / 255)  # the right range: no warning
        psnr(x * 0.02, noisy * 0.02)  # a dim picture, 2% of the range
        psnr(np.zeros((4, 4)), np.full((4, 4), 0.1))  # a flat reference: nothing to judge


def test_aligned_ssim_names_the_crop_that_leaves_too_little():
    x = np.random.default_rng(0).random((24, 24))
    with pytest.raises(ValueError, match="crop=10 .* smaller max_shift"):
        aligned_ssim(x, x)
    assert aligned_ssim(x, x, max_shift=3) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"full": True}, {"gradient": True}, {"channel_axis": 0}])
def test_ssim_refuses_options_that_change_what_it_returns(kwargs):
    x = np.random.default_rng(0).random((16, 16))
    with pytest.raises(TypeError, match="ssim does not take"):
        ssim(x, x, **kwargs)


def _noisy_pair():
    """A 32x32 random picture and a noisy copy of it, for the SSIM option tests."""
    rng = np.random.default_rng(0)
    x = rng.random((32, 32))
    return x, np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)


@pytest.mark.parametrize("kwargs", [{"gaussian_weight": True}, {"sigmas": 3.0}, {"k1": 0.1}])
def test_ssim_refuses_unknown_options(kwargs):
    # scikit-image drops unknown keywords: a misspelt gaussian_weights scored the
    # uniform-window SSIM (0.9839 where the Gaussian window gives 0.9847), silently.
    x, y = _noisy_pair()
    with pytest.raises(TypeError, match="unknown keyword argument.*gaussian_weights"):
        ssim(x, y, **kwargs)


@pytest.mark.parametrize("kwargs", [{"sigma": 3.0}, {"sigma": 3.0, "gaussian_weights": False}])
def test_ssim_refuses_a_sigma_without_the_gaussian_window(kwargs):
    # scikit-image reads sigma only with gaussian_weights=True: ssim(x, y, sigma=3)
    # returned the uniform 7x7 window's value, silently.
    x, y = _noisy_pair()
    with pytest.raises(TypeError, match="gaussian_weights=True"):
        ssim(x, y, **kwargs)
    assert ssim(x, y, sigma=3.0, gaussian_weights=True) != ssim(x, y)


@pytest.mark.parametrize(
    "win_size, error",
    [(-3, ValueError), (-1, ValueError), (1, ValueError), (7.0, TypeError), (True, TypeError)],
)
def test_ssim_refuses_a_window_size_that_is_no_odd_int_it_can_use(win_size, error):
    # Passed on, win_size=-3 scored 0.9945 (no such window), 1 and -1 raised a bare
    # ZeroDivisionError, 7.0 "'float' object is not subscriptable".
    x = np.random.default_rng(0).random((16, 16))
    with pytest.raises(error, match="win_size"):
        ssim(x, 0.9 * x, win_size=win_size)
    assert ssim(x, 0.9 * x, win_size=np.int64(7)) == ssim(x, 0.9 * x)


@pytest.mark.parametrize("metric", [psnr, ssim, align_shift])
def test_a_stack_of_grey_images_is_warned_of(metric):
    # An (N, H, W) stack was read as one N x H image with W channels, silently: SSIM
    # 0.9401 for 8 images of 32x32 whose per-image SSIMs average 0.9255 (the estimators
    # warn of such a shape; the metrics did not).
    stack = np.stack([_smooth_image((32, 32), seed) for seed in range(8)])
    noisy = np.clip(stack + 0.05 * np.random.default_rng(0).standard_normal(stack.shape), 0, 1)
    kwargs = {"max_shift": 2} if metric is align_shift else {}
    with pytest.warns(UserWarning, match=r"8x32 image with 32 channels.*each image on its own"):
        metric(stack, noisy, **kwargs)


def test_a_many_band_image_is_not_warned_of():
    import warnings

    x = _smooth_image((32, 32, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert psnr(x, x) == np.inf


@pytest.mark.parametrize(
    "sigma, error",
    [
        (0.1, ValueError),
        (0.0, ValueError),
        (-1.0, ValueError),
        ("1.5", TypeError),
        (None, TypeError),
    ],
)
def test_ssim_refuses_a_gaussian_sigma_it_cannot_use(sigma, error):
    # sigma=0.1 gave a 1x1 window and a bare ZeroDivisionError; "1.5" and None bare
    # TypeErrors of arithmetic (now a TypeError that names sigma).
    x = np.random.default_rng(0).random((16, 16))
    with pytest.raises(error, match="sigma"):
        ssim(x, 0.9 * x, gaussian_weights=True, sigma=sigma)
    assert ssim(x, 0.9 * x, gaussian_weights=True, sigma=0.2) < 1.0


@pytest.mark.parametrize(
    "sigma, error",
    [(0.0, ValueError), (float("nan"), ValueError), (-1.0, ValueError), ("1.5", TypeError)],
)
def test_ssim_checks_the_gaussian_sigma_with_a_given_window_too(sigma, error):
    # With win_size given, sigma=0 and NaN scored silently (0.968 against 0.992 for
    # sigma=1.5 on this pair): each window weighted by its centre pixel alone.
    rng = np.random.default_rng(0)
    x = rng.random((16, 16))
    y = x + 0.1 * rng.random((16, 16))
    with pytest.raises(error, match="sigma must be a finite number > 0"):
        ssim(x, y, gaussian_weights=True, sigma=sigma, win_size=7)
    assert ssim(x, y, gaussian_weights=True, sigma=1.5, win_size=7) == pytest.approx(
        0.9916, abs=1e-4
    )


def test_ssim_size_check_knows_the_gaussian_window():
    x = np.random.default_rng(0).random((10, 10))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x, x, gaussian_weights=True)
    assert ssim(x, x, gaussian_weights=True, sigma=1.0) == pytest.approx(1.0)  # 9x9 window


@pytest.mark.parametrize("level", [0.0, 3e4, 1e6])
def test_align_shift_is_blind_to_a_common_level(level):
    # The FFT's round-off grew with the level: at 3e4 the true shift tied with none.
    x = np.random.default_rng(0).random((32, 32))
    y = np.roll(x, (2, -1), axis=(0, 1))
    assert align_shift(x + level, y + level, 3) == (2, -1)


def test_align_shift_is_blind_to_a_level_per_channel():
    x = np.random.default_rng(1).random((32, 32, 3)) + np.array([3e4, 0.0, -1e5])
    y = np.roll(x, (3, -2), axis=(0, 1))
    assert align_shift(x, y, 4) == (3, -2)


# --------------------------------------------------------------------------- torch inputs


def test_metrics_read_tensors_that_require_grad():
    # np.asarray raised torch's own RuntimeError on these (a network's output).
    torch = pytest.importorskip("torch")
    from skdip.metrics import phase_retrieval_error, phase_retrieval_psnr

    x = _smooth_image((16, 16))
    est = np.clip(x + 0.05 * np.random.default_rng(1).standard_normal(x.shape), 0, 1)
    t_x = torch.tensor(x, requires_grad=True)
    t_est = torch.tensor(est, requires_grad=True)
    for metric in (
        psnr,
        ssim,
        lambda a, b: aligned_psnr(a, b, max_shift=1),
        lambda a, b: align_shift(a, b, max_shift=1),
        kernel_error,
        phase_retrieval_psnr,
        phase_retrieval_error,
    ):
        assert metric(t_x, t_est) == metric(x, est)
    assert psnr(torch.tensor(x).to(torch.bfloat16), x) > 40  # no bfloat16 in NumPy
    z = torch.tensor(x * np.exp(1j), requires_grad=True)
    assert phase_retrieval_error(z.conj(), np.conj(z.detach().numpy())) == 0.0
    # uint8 tensors are read on [0, 1] as uint8 arrays are.
    x8 = (x * 255).astype(np.uint8)
    assert psnr(torch.from_numpy(x8), est) == psnr(x8, est)
    with pytest.raises(ValueError, match="uint8 images are read on"):
        psnr(torch.from_numpy(x8), torch.from_numpy(x8), data_range=255)


# --------------------------------------------------------------------------- phase retrieval


def test_phase_retrieval_psnr_refuses_a_reference_on_another_scale():
    # Objects on 0-255 against the default data_range=1 read -22 dB (psnr refuses them).
    from skdip.metrics import phase_retrieval_psnr

    rng = np.random.default_rng(0)
    x = rng.random((16, 16))
    est = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    x8, est8 = (x * 255).astype(np.uint8), (est * 255).astype(np.uint8)
    for true, test in ((x8, est8), (x * 255, est * 255), (x8, est), (x * 1j * 255, est * 255)):
        with pytest.raises(ValueError, match=r"image_true reaches .* in modulus.*data_range=1:"):
            phase_retrieval_psnr(true, test)
    # On its own scale the same pair scores as on [0, 1] (integers are numbers here).
    expected = phase_retrieval_psnr(x, est)
    assert phase_retrieval_psnr(x * 255, est * 255, data_range=255) == pytest.approx(expected)
    assert np.isfinite(phase_retrieval_psnr(x8, est8, data_range=255))
    # A reference a little beyond data_range (noise, ringing) is still on its scale.
    assert np.isfinite(phase_retrieval_psnr(1.4 * x, est))


def test_kernel_error_reads_uint8_kernels_as_numbers_as_the_blur_does():
    # As Convolution, DIPDeconvolver and datasets.blur take a kernel: a uint8 PSF holds
    # counts (read on [0, 1], it scored 254 against the same counts as floats, which
    # blur identically). A unit-sum normalisation compares the shapes only.
    import torch

    from skdip.operators import Convolution

    k = np.outer(*2 * [np.hanning(7)])
    k8 = np.round(k / k.max() * 255).astype(np.uint8)
    counts = k8.astype(np.float64)
    assert torch.equal(Convolution(k8).kernel, Convolution(counts).kernel)
    assert kernel_error(k8, counts) == 0.0
    assert kernel_error(k8, k8 / 255.0) == pytest.approx(254 / 255)
    assert kernel_error(k8, k / k.sum()) > 0.5
    assert kernel_error(k8 / k8.sum(), k / k.sum()) < 0.01


@pytest.mark.parametrize("seed", range(4))
def test_align_shift_minimises_the_mean_squared_error(seed):
    # On images that are not shifted copies the least-MSE shift and the best
    # correlation differ; brute force decides.
    rng = np.random.default_rng(seed)
    a = rng.random((20, 20))
    b = rng.random((20, 20)) * np.linspace(0.2, 2.0, 20)[:, None]  # uneven energy
    m = 3
    costs = {
        (dy, dx): np.mean((a[m:-m, m:-m] - b[m + dy : 20 - m + dy, m + dx : 20 - m + dx]) ** 2)
        for dy in range(-m, m + 1)
        for dx in range(-m, m + 1)
    }
    assert align_shift(a, b, max_shift=m) == min(costs, key=costs.get)


# A bug the suite once missed (real objects: the sign
# ambiguity not removed) and (phase_retrieval_psnr's MSE over the padded frame's
# pixels instead of the object's).
def test_phase_retrieval_metrics_remove_the_sign_of_a_real_object():
    from skdip.metrics import align_phase_retrieval, phase_retrieval_error

    x = np.random.default_rng(0).random((8, 8))
    assert phase_retrieval_error(x, -x) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(align_phase_retrieval(x, -x), x, atol=1e-12)


def test_phase_retrieval_psnr_is_the_psnr_of_the_aligned_object():
    from skdip.metrics import phase_retrieval_psnr, psnr

    x = np.random.default_rng(0).random((8, 8))
    for oversampling in (1, 2, 3):
        assert phase_retrieval_psnr(x, 0.9 * x, oversampling=oversampling) == pytest.approx(
            psnr(x, 0.9 * x), rel=1e-12
        )


# A bug the suite once missed: aligned_ssim's grey test inverted: a colour pair was scored on
# channel 0 alone
def test_aligned_ssim_scores_every_channel_of_a_colour_pair():
    from skdip.metrics import aligned_ssim, ssim

    x = np.random.default_rng(0).random((24, 24, 3))
    y = x.copy()
    y[..., 1] = np.clip(y[..., 1] + 0.2 * np.random.default_rng(1).standard_normal((24, 24)), 0, 1)
    value = aligned_ssim(x, y, max_shift=0, crop=0)
    assert value == pytest.approx(ssim(x, y)) and value < 0.95
    grey = x[..., 0]
    assert aligned_ssim(grey, grey, max_shift=0, crop=0) == pytest.approx(1.0)


# A bug the suite once missed: kernel_error padded about (H-h)//2 instead of the kernel's centre;
# then it centred even kernels on h // 2, a pixel from the (h - 1) // 2 Convolution blurs about,
# so two kernels that blur alike came out a pixel apart, and apart by max_shift=0
@pytest.mark.parametrize("small, big", [((3, 3), (4, 4)), ((4, 4), (5, 5)), ((4, 6), (7, 9))])
def test_kernel_error_centres_kernels_where_convolution_does(small, big):
    import torch

    from skdip.metrics import kernel_error
    from skdip.operators import Convolution

    rng = np.random.default_rng(0)
    k = rng.random(small)
    image = torch.from_numpy(rng.random((1, 1, 16, 16)))
    blurred = Convolution(k)(image)
    matches = []
    for top in range(big[0] - small[0] + 1):
        for left in range(big[1] - small[1] + 1):
            padded = np.zeros(big)
            padded[top : top + small[0], left : left + small[1]] = k
            if torch.allclose(Convolution(padded)(image), blurred):
                matches.append(padded)
    assert len(matches) == 1  # the placement that blurs alike
    for a, b in ((k, matches[0]), (matches[0], k)):
        err, shift = kernel_error(a, b, return_shift=True)
        assert err == pytest.approx(0.0, abs=1e-12) and shift == (0, 0)
        assert kernel_error(a, b, max_shift=0) == pytest.approx(0.0, abs=1e-12)


# A bug the suite once missed: kernel_error's ties went to the largest shift
def test_kernel_error_ties_prefer_the_smallest_shift():
    from skdip.metrics import kernel_error

    kt = np.zeros((3, 3))
    kt[1, 1] = 1.0
    ke = np.zeros((5, 5))
    ke[2, 2] = ke[2, 4] = 0.5  # matches kt equally at shift (0, 0) and (0, 2)
    err, shift = kernel_error(kt, ke, return_shift=True)
    assert shift == (0, 0) and err == pytest.approx(np.sqrt(0.5))


# A bug the suite once missed: kernel_error's max_shift window left out the shift +max_shift
def test_kernel_error_searches_up_to_plus_and_minus_max_shift():
    from skdip.metrics import kernel_error

    k = np.zeros((9, 9))
    k[4, 3:6] = [0.25, 0.5, 0.25]
    for s in (2, -2):
        moved = np.roll(k, (s, s), axis=(0, 1))
        err, shift = kernel_error(k, moved, max_shift=2, return_shift=True)
        assert err == pytest.approx(0.0, abs=1e-12) and shift == (s, s)


# A bug the suite once missed: aligned_ssim refused images leaving exactly SSIM's 7x7 window after
# the crop
def test_aligned_ssim_accepts_a_crop_leaving_exactly_seven_pixels():
    from skdip.metrics import aligned_ssim

    x = np.random.default_rng(0).random((13, 13))
    assert aligned_ssim(x, np.roll(x, (1, -1), axis=(0, 1)), max_shift=3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="7x7"):
        aligned_ssim(x, x, max_shift=4)


# Mutation audit (survivor: '<' made '<=' in the narrow-reference warning). Under 1%
# of data_range warns; exactly 1% does not.
def test_a_reference_spanning_exactly_1_percent_of_data_range_is_not_warned_of():
    import warnings

    reference = np.zeros((8, 8))
    reference[0, 0] = 0.01
    estimate = reference + 0.001
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        psnr(reference, estimate)
        psnr(reference * 255, estimate * 255, data_range=255)
    reference[0, 0] = 0.0099
    with pytest.warns(UserWarning, match="under 1% of data_range"):
        psnr(reference, estimate)
