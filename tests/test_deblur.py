import pickle

import numpy as np
import pytest
import torch
from scipy import signal
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from skdip import BlindDeblurrer, GradientRatio, SkipNetwork
from skdip.datasets import blur, make_gaussian_kernel, make_motion_kernel
from skdip.estimators._deblur import (
    _aligned_image,
    _centred_support,
    _DoubleDIPModel,
    _KernelMLP,
    _mass_centre,
    auto_kernel_size,
)
from skdip.metrics import aligned_psnr, kernel_error

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)


def _deb(**kw):
    params = dict(generator=TINY, max_iter=5, early_stopping=None, random_state=0, device="cpu")
    params.update(kw)
    return BlindDeblurrer(**params)


def _sharp(size=34, channels=None, seed=0):
    """Piecewise-constant blocks: sharp edges that blur visibly."""
    rng = np.random.default_rng(seed)
    shape = (6, 6) if channels is None else (6, 6, channels)
    blocks = rng.random(shape)
    reps = (size // 6 + 1, size // 6 + 1) + (() if channels is None else (1,))
    return np.kron(blocks, np.ones(reps))[:size, :size]


def _blurry(size=34, kernel=None, channels=None, seed=0):
    kernel = make_motion_kernel(5, random_state=0, smoothing=0) if kernel is None else kernel
    return blur(_sharp(size, channels, seed), kernel, mode="valid")


# ------------------------------------------------------------ the kernel
def test_kernel_is_a_centred_distribution_of_odd_size():
    deb = _deb(max_iter=20).fit(_blurry())
    k = deb.kernel_
    assert k.ndim == 2 and k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    assert k.min() >= 0 and k.sum() == pytest.approx(1.0, abs=1e-9)
    rows, cols = np.indices(k.shape)
    assert abs((rows * k).sum() - k.shape[0] // 2) <= 0.5 + 1e-9
    assert abs((cols * k).sum() - k.shape[1] // 2) <= 0.5 + 1e-9
    # The working kernel: the over-specified size for a 30x30 image.
    assert deb.kernel_size_ == (7, 7)
    assert deb.kernel_full_.shape == (7, 7)
    assert deb.kernel_full_.min() >= 0 and deb.kernel_full_.sum() == pytest.approx(1.0)


def test_auto_kernel_size_rule():
    assert auto_kernel_size(64, 64) == 17
    assert auto_kernel_size(30, 40) == 7
    assert auto_kernel_size(256, 300) == 65
    assert auto_kernel_size(2000, 3000) == 65
    assert auto_kernel_size(8, 8) == 3
    assert auto_kernel_size(30, 2) == 1  # never larger than the image
    assert all(auto_kernel_size(s, s) % 2 == 1 for s in range(4, 600, 7))


@pytest.mark.parametrize("size, expected", [(5, (5, 5)), ((3, 5), (3, 5)), ([5, 3], (5, 3))])
def test_explicit_kernel_size(size, expected):
    deb = _deb(kernel_size=size).fit(_blurry())
    assert deb.kernel_size_ == expected
    assert deb.kernel_full_.shape == expected


def test_centred_support_crops_and_centres():
    k = np.zeros((15, 15))
    k[2, 3:6] = [0.2, 0.5, 0.3]  # mass centre at (2, 4.1): off-centre, near a border
    k[10, 10] = 1e-4  # below the support threshold
    out = _centred_support(k)
    assert out.shape == (1, 3)
    np.testing.assert_allclose(out, [[0.2, 0.5, 0.3]], atol=1e-3)
    assert out.sum() == pytest.approx(1.0)
    # An asymmetric support is padded so that the centre pixel stays in the middle.
    k = np.zeros((9, 9))
    k[4, 4], k[4, 5], k[4, 6] = 0.7, 0.2, 0.1  # mass centre 4.4: pixel 4
    out = _centred_support(k)
    assert out.shape == (1, 5)
    np.testing.assert_allclose(out[0], [0.0, 0.0, 0.7, 0.2, 0.1])


def test_a_faint_background_does_not_pull_the_centre():
    # The softmax gives every entry some mass: 30% spread over a 17x17 window, the
    # blur itself near a corner. The centre is the blur's, as kernel_ and the image
    # crop both use it.
    k = np.full((17, 17), 0.30 / 289)
    k[2, 3:6] += [0.2, 0.3, 0.2]
    k /= k.sum()
    out = _centred_support(k)
    rows, cols = np.indices(out.shape)
    assert out.shape == (1, 3)
    assert (rows * out).sum() == pytest.approx(0.0) and (cols * out).sum() == pytest.approx(1.0)
    assert _mass_centre(torch.as_tensor(k)) == (2, 4)


# ------------------------------------------------- model and alignment
def test_kernel_initialisations():
    torch.manual_seed(0)
    gauss = _KernelMLP((9, 9), init="gaussian")().detach().numpy()
    torch.manual_seed(0)
    flat = _KernelMLP((9, 9), init="uniform")().detach().numpy()
    for k in (gauss, flat):
        assert k.min() > 0 and k.sum() == pytest.approx(1.0, abs=1e-5)
    # The Gaussian start is peaked at the centre; the uniform one is nearly flat.
    assert np.unravel_index(gauss.argmax(), gauss.shape) == (4, 4)
    assert gauss[4, 4] > 10 * gauss[0, 0]
    assert flat.max() < 2 * flat.min()


def test_model_prediction_is_the_valid_convolution_of_its_estimate():
    net = TINY.build((14, 16), 2, seed=0)
    model = _DoubleDIPModel(net, _KernelMLP((5, 3)), 0.0)
    packed, prediction = model(None)
    assert packed.shape == (1, 3, 14, 16) and prediction.shape == (1, 2, 10, 14)
    image = packed[0, :2].detach().double().numpy()
    kernel = packed[0, 2, :5, :3].detach().double().numpy()
    assert kernel.min() >= 0 and kernel.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(packed[0, 2].detach().numpy()[5:] == 0)
    for c in range(2):
        expected = signal.convolve2d(image[c], kernel, mode="valid")
        np.testing.assert_allclose(prediction[0, c].detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "image, kernel, where",
    [
        ((14, 14), (5, 5), (2, 2)),
        ((14, 14), (5, 5), (0, 4)),
        ((14, 14), (5, 5), (4, 1)),
        # A bug the suite once missed: _mass_centre clamped the row to the kernel's
        # width (tall kernels).
        ((20, 12), (9, 3), (7, 1)),
    ],
)
def test_alignment_undoes_a_displaced_kernel(image, kernel, where):
    # A delta kernel anywhere in the window: the aligned image must equal the observation.
    from skdip.estimators._deblur import _mass_centre

    x = torch.rand(1, 1, *image, dtype=torch.float64)
    k = torch.zeros(*kernel, dtype=torch.float64)
    k[where] = 1.0
    assert _mass_centre(k) == where
    y = torch.from_numpy(signal.convolve2d(x[0, 0].numpy(), k.numpy(), mode="valid"))
    plane = torch.zeros(1, 1, *image, dtype=torch.float64)
    plane[0, 0, : kernel[0], : kernel[1]] = k
    aligned = _aligned_image(torch.cat([x, plane], dim=1), kernel)
    torch.testing.assert_close(aligned[0, 0], y)


# -------------------------------------------------------- end to end
def test_grey_and_colour_keep_the_input_shape():
    grey = _blurry()
    out = _deb().fit_transform(grey)
    assert out.shape == grey.shape and out.dtype == np.float64
    colour = _blurry(channels=3)
    deb = _deb().fit(colour)
    assert deb.reconstruction_.shape == colour.shape
    assert deb.kernel_.ndim == 2  # one kernel shared by the channels
    assert deb.transform(colour.astype(np.float32)).dtype == np.float32


def test_same_seed_same_result_different_seed_differs():
    y = _blurry()
    a, b, c = (_deb(random_state=s).fit(y) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.reconstruction_, b.reconstruction_)
    np.testing.assert_array_equal(a.kernel_, b.kernel_)
    assert not np.array_equal(a.reconstruction_, c.reconstruction_)


def test_input_is_not_modified():
    y = _blurry()
    before = y.copy()
    _deb().fit(y)
    np.testing.assert_array_equal(y, before)


def test_deblurring_recovers_sharper_image_and_kernel():
    k_true = make_gaussian_kernel(5, 1.0)
    sharp = _sharp(36)
    y = blur(sharp, k_true, mode="valid")
    truth = sharp[2:-2, 2:-2]
    deb = _deb(kernel_size=5, max_iter=150, kernel_lr=1e-3, regularizer=None)
    x = deb.fit_transform(y)
    assert aligned_psnr(truth, x, max_shift=3) > aligned_psnr(truth, y, max_shift=3) + 1.0
    delta = np.ones((1, 1))
    assert kernel_error(k_true, deb.kernel_) < kernel_error(k_true, delta)


def test_reference_psnr_and_callback_see_the_aligned_image():
    y = _blurry()
    seen = []

    def callback(iteration, loss, estimate):
        seen.append(tuple(estimate.shape))
        return iteration == 3

    deb = _deb(callback=callback, max_iter=10).fit(y, _sharp()[2:-2, 2:-2])
    assert seen == [(1, 1, 30, 30)] * 4
    assert deb.stopped_by_ == "callback" and deb.n_iter_ == 4
    psnr = deb.history_["psnr"]
    assert psnr.shape == (4,) and np.isfinite(psnr).all()


def test_a_callback_naming_image_is_told_each_aligned_steps_image():
    # Through the aligned-image wrapper, alone and in a warm continuation.
    seen = []

    def callback(iteration, loss, estimate, image=None):
        seen.append((image, iteration, tuple(estimate.shape)))

    images = [_blurry(size=20, seed=s) for s in range(2)]  # 16 x 16 observed
    deb = _deb(max_iter=2, kernel_size=3, warm_start=True, callback=callback).fit(images)
    assert sorted(seen) == [(i, it, (1, 1, 16, 16)) for i in range(2) for it in range(2)]
    seen.clear()
    deb.fit(images)
    assert sorted(seen) == [(i, it, (1, 1, 16, 16)) for i in range(2) for it in (2, 3)]


def test_recorded_psnr_of_the_last_iterate_is_its_score():
    # The aligned image's PSNR curve was read clipped to [0, 1] on range 1 in the fit's
    # units, score on y's range: on 0-255 data (rescaled) 13.89 against 11.96 dB.
    sharp = 255 * _sharp()
    y = blur(sharp, make_motion_kernel(5, random_state=0, smoothing=0), mode="valid")
    truth = sharp[2:-2, 2:-2]
    for kw in ({}, {"max_iter": 3}):
        deb = _deb(**kw).fit(y, truth)
        assert deb.score(y, truth) == pytest.approx(deb.history_["psnr"][-1], abs=1e-4)
    # A warm_start continuation goes on reading the same range.
    warm = _deb(max_iter=3, warm_start=True).fit(y, truth)
    warm.set_params(max_iter=2).fit(y, truth)
    assert len(warm.history_["psnr"]) == 5
    assert warm.score(y, truth) == pytest.approx(warm.history_["psnr"][-1], abs=1e-4)


@pytest.mark.parametrize(
    "regularizer", ["ratio", "tv", None, GradientRatio(weight=1e-3), lambda x: x.mean()]
)
def test_regularizer_options(regularizer):
    deb = _deb(regularizer=regularizer, max_iter=3).fit(_blurry())
    assert np.isfinite(deb.reconstruction_).all()


def test_regularizer_changes_the_fit():
    y = _blurry()
    plain = _deb(regularizer=None, max_iter=5).fit_transform(y)
    strong = _deb(regularizer=GradientRatio(weight=1.0), max_iter=5).fit_transform(y)
    assert not np.allclose(plain, strong)


def test_early_stopping_watches_the_aligned_image():
    from skdip import ExponentialMovingVariance

    rule = ExponentialMovingVariance(patience=5, warmup=2)
    deb = _deb(early_stopping=rule, max_iter=200).fit(_blurry())
    assert deb.stopped_by_ == "early_stopping"
    assert deb.n_iter_ < 200 and 2 <= deb.best_iter_ < deb.n_iter_
    assert deb.reconstruction_.shape == (30, 30)


def test_output_averaging_averages_image_and_kernel_together():
    deb = _deb(output_averaging=0.9, max_iter=6).fit(_blurry())
    assert deb.reconstruction_.shape == (30, 30)
    assert deb.kernel_full_.sum() == pytest.approx(1.0) and deb.kernel_.min() >= 0


def test_batch_gives_one_kernel_per_image():
    ys = [_blurry(seed=0), _blurry(seed=1)]
    deb = _deb(max_iter=2).fit(ys)
    assert isinstance(deb.kernel_, list) and len(deb.kernel_) == 2
    assert [r.shape for r in deb.reconstruction_] == [(30, 30), (30, 30)]


def test_rescaled_intensities_come_back_on_the_input_scale():
    y = 255.0 * _blurry()
    out = _deb().fit_transform(y)
    # Non-negative data keep a non-negative estimate; above, there is headroom.
    assert out.max() > 2.0 and out.min() >= -1e-6 and out.max() <= 1.25 * y.max()


def test_low_contrast_data_is_stretched_as_raw_counts_are():
    # Spanning under 0.5, as in denoising: a camera crop on [0, 0.12] blurred came back
    # 4 dB below the blurred input as given, 3.9 dB above that stretched (32x32,
    # benchmarks/results/low_contrast_operators.md); only spans under 0.1 were.
    low = _deb(max_iter=2).fit(0.3 * _blurry())
    assert low._fit_results[0]["scaling"].scale != 1
    wide = _deb(max_iter=2).fit(0.2 + 0.6 * _blurry() / _blurry().max())
    assert wide._fit_results[0]["scaling"].scale == 1


def test_dim_data_is_stretched_as_raw_counts_are():
    # Fitted as it was, a 0.01-scale image sat where the sigmoid is flat (5.4 dB
    # against 27.6 dB on [0, 1]); it is rescaled as 0-255 data is.
    dim = _deb(max_iter=2).fit(0.01 * _blurry())
    counts = _deb(max_iter=2).fit(255.0 * _blurry())
    assert dim._fit_results[0]["scaling"].scale != 1
    np.testing.assert_allclose(
        dim.reconstruction_ / 0.01, counts.reconstruction_ / 255.0, rtol=1e-4, atol=1e-5
    )


# ------------------------------------------------------- validation
@pytest.mark.parametrize(
    "params, error",
    [
        ({"kernel_size": 0}, InvalidParameterError),
        ({"kernel_size": 2.5}, InvalidParameterError),
        ({"kernel_size": (3,)}, TypeError),
        ({"kernel_size": (3, 2.0)}, TypeError),
        ({"kernel_size": (3, True)}, TypeError),
        ({"kernel_size": (0, 3)}, ValueError),
        ({"kernel_size": 31}, ValueError),  # larger than the 30x30 image
        ({"kernel_lr": 0.0}, InvalidParameterError),
        ({"regularizer": "l2"}, InvalidParameterError),
        ({"kernel_init": "delta"}, InvalidParameterError),
        ({"generator": "nope"}, ValueError),
    ],
)
def test_bad_parameters_are_rejected(params, error):
    with pytest.raises(error):
        _deb(**params).fit(_blurry())


def test_bad_input_is_rejected():
    y = _blurry()
    y[3, 3] = np.nan
    with pytest.raises(ValueError):
        _deb().fit(y)
    with pytest.raises(ValueError):
        _deb().fit(np.ones(30))
    with pytest.raises(ValueError):
        _deb().fit(np.ones((1, 3)))
    with pytest.raises((TypeError, ValueError)):
        _deb().fit("not an image")


def test_clone_and_pickle():
    deb = _deb(kernel_size=(3, 5), regularizer="tv")
    twin = clone(deb)
    assert repr(twin) == repr(deb) and twin is not deb
    y = _blurry()
    deb.fit(y)
    loaded = pickle.loads(pickle.dumps(deb))
    np.testing.assert_array_equal(loaded.kernel_, deb.kernel_)
    np.testing.assert_array_equal(loaded.transform(), deb.transform())
    np.testing.assert_array_equal(loaded.transform(y), deb.reconstruction_)


def test_mass_centre_rounds_to_the_nearest_pixel():
    # Centres with a fractional part above 0.5 (the other tests' were below, where
    # flooring agrees).
    rows = torch.zeros(5, 5, dtype=torch.float64)
    rows[1, 2], rows[2, 2] = 0.3, 0.7  # row centre 1.7
    cols = torch.zeros(5, 5, dtype=torch.float64)
    cols[2, 2], cols[2, 3] = 0.4, 0.6  # column centre 2.6
    assert _mass_centre(rows) == (2, 2)
    assert _mass_centre(cols) == (2, 3)


def test_kernel_and_image_are_centred_on_one_pixel_when_the_centre_is_a_tie():
    # A symmetric even kernel's centre of mass lies half-way between two pixels: the
    # image's window (float32 kernel: pixel 2) and kernel_ (recomputed in float64:
    # pixel 1) rounded it apart, so kernel_ blurred reconstruction_ a column off.
    from skdip._engine import FitResult
    from skdip.estimators._base import _Scaling

    kernel = torch.tensor([[0.05, 0.3, 0.3, 0.05]], dtype=torch.float32)  # as fitted
    scene = torch.rand(1, 1, 6, 12, generator=torch.Generator().manual_seed(0))
    plane = torch.nn.functional.pad(kernel, (0, 8, 0, 5))[None, None]
    packed = torch.cat([scene, plane], dim=1)
    result = FitResult(packed, packed, 0, 1, "max_iter")
    out = BlindDeblurrer(kernel_size=(1, 4))._finish(
        None, result, np.zeros((6, 9, 1)), {"_scaling": _Scaling()}
    )
    # The window's first column in the scene, kw - 1 - b0 for the kernel pixel b0
    # the image lies under.
    starts = [
        s for s in range(4) if np.allclose(out["estimate"][..., 0], scene[0, 0, :, s : s + 9])
    ]
    assert len(starts) == 1
    b0 = 3 - starts[0]
    # kernel_'s central pixel must be that same pixel of the kernel.
    k = out["kernel"][0]
    offsets = [o for o in range(len(k) - 3) if np.allclose(k[o : o + 4], kernel[0] / 0.7)]
    assert len(offsets) == 1
    assert len(k) // 2 - offsets[0] == b0


def test_centred_support_keeps_an_asymmetric_support_along_rows():
    k = np.zeros((9, 9))
    k[4, 4], k[5, 4], k[6, 4] = 0.7, 0.2, 0.1  # row centre 4.4: pixel 4
    out = _centred_support(k)
    assert out.shape == (5, 1)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, 0.7, 0.2, 0.1])


def test_full_kernel_sums_to_one():
    # Renormalised in float64 (the network's float32 kernel sums to 1 only to ~1e-8).
    d = _deb(max_iter=3).fit(_blurry())
    assert abs(float(d.kernel_full_.sum()) - 1.0) < 1e-12


_SMALL_NET = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)


def _small_deb(**kw):
    params = dict(
        generator=_SMALL_NET, max_iter=2, early_stopping=None, random_state=0, device="cpu"
    )
    params.update(kw)
    return BlindDeblurrer(**params)


# A bug the suite once missed: the Gaussian first kernel's column width taken from kh (non-square
# windows)
def test_gaussian_first_kernel_spans_a_non_square_window_along_both_axes():
    from skdip.estimators._deblur import _KernelMLP

    torch.manual_seed(0)
    k = _KernelMLP((5, 13), init="gaussian")().detach().double().numpy()
    assert np.unravel_index(k.argmax(), k.shape) == (2, 6)
    # +-3 sigma spans the window along each axis: the ends of the central row and
    # column keep a few percent of the peak (exp(-0.5 * (3 (n-1)/n)**2) ~ 2-6%).
    for edge in (k[2, 0], k[2, -1], k[0, 6], k[-1, 6]):
        assert 0.005 < edge / k[2, 6] < 0.2


# A bug the suite once missed: the default regularizers' weights (documented: ratio 8e-4 /
# sqrt(H'W'), 1e-5 for a 64x64 observation and a 17x17 kernel; tv 1e-3)
def test_default_regularizer_weights_follow_the_documented_rule():
    from skdip import GradientRatio, TotalVariation

    ratio = BlindDeblurrer()._regularizer_for((80, 80), 1).regularizer
    assert isinstance(ratio, GradientRatio) and ratio.weight == pytest.approx(1e-5)
    bigger = BlindDeblurrer()._regularizer_for((160, 320), 1).regularizer
    assert bigger.weight == pytest.approx(8e-4 / np.sqrt(160 * 320))
    tv = BlindDeblurrer(regularizer="tv")._regularizer_for((80, 80), 1).regularizer
    assert isinstance(tv, TotalVariation) and tv.weight == pytest.approx(1e-3)
    # Per value: a colour image's ratio weighs sqrt(3) times more against the data term,
    # and its weight is sqrt(3) times smaller (it had the grey weight, 1.7 times too much).
    colour = BlindDeblurrer()._regularizer_for((80, 80), 3).regularizer
    assert colour.weight == pytest.approx(1e-5 / np.sqrt(3))


def test_a_grey_picture_in_three_channels_is_regularised_as_the_grey_one():
    # The mean squared error of three equal channels is the grey one's; the ratio of the
    # copies is sqrt(3) times the grey one's, and so the weighted penalty must match.
    grey = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    colour = grey.expand(1, 3, 20, 20)
    one = BlindDeblurrer()._regularizer_for((20, 20), 1).regularizer
    three = BlindDeblurrer()._regularizer_for((20, 20), 3).regularizer
    assert float(three(colour)) == pytest.approx(float(one(grey)), rel=1e-5)
    # A fitted colour image's regularizer is the per-channel one.
    fitted = BlindDeblurrer(generator=TINY, max_iter=2, random_state=0, device="cpu")
    seen = []
    original = fitted._regularizer_for
    fitted._regularizer_for = lambda *a: seen.append(a) or original(*a)
    fitted.fit(np.random.default_rng(0).random((24, 24, 3)))
    assert seen and seen[0][1] == 3


# A bug the suite once missed: the regularizer saw the packed estimate (image channels plus the
# kernel plane)
def test_the_regularizer_sees_the_image_channels_only():
    seen = []

    def penalty(x):
        seen.append(tuple(x.shape))
        return x.mean() * 0.0

    sharp = np.random.default_rng(0).random((20, 20, 3))
    y = np.stack(
        [signal.convolve2d(sharp[..., c], np.ones((3, 3)) / 9, mode="valid") for c in range(3)],
        axis=-1,
    )
    _small_deb(kernel_size=3, regularizer=penalty).fit(y)
    assert seen and all(shape == (1, 3, 20, 20) for shape in seen)


# A bug the suite once missed: a kernel as large as the image (the auto size of a 3-pixel image)
# refused
def test_a_kernel_as_large_as_the_image_is_allowed():
    y = np.random.default_rng(0).random((5, 5))
    assert _small_deb(kernel_size=5).fit(y).kernel_size_ == (5, 5)
    small = np.random.default_rng(0).random((3, 7))
    assert _small_deb().fit(small).kernel_size_ == (3, 3)  # auto_kernel_size(3, 7) == 3
    with pytest.raises(ValueError, match="larger than"):
        _small_deb(kernel_size=(5, 6)).fit(y)


# A bug the suite once missed: _centred_support clipped columns at kh (wide kernels)
def test_centred_support_of_a_wide_kernel():
    from skdip.estimators._deblur import _centred_support

    k = np.zeros((3, 9))
    k[1, 4:9] = [0.1, 0.2, 0.4, 0.2, 0.1]
    np.testing.assert_allclose(_centred_support(k), [[0.1, 0.2, 0.4, 0.2, 0.1]])


def test_a_callbacks_answer_other_than_true_does_not_stop_a_blind_deblurring():
    # Its aligned-image callback wrapper turned any truthy answer into True: a callback
    # returning the loss it logged stopped the fit after one step, in silence.
    from skdip import BlindDeblurrer

    observed = np.random.default_rng(0).random((16, 16))
    deb = BlindDeblurrer(
        generator="skip-small",
        kernel_size=3,
        max_iter=4,
        early_stopping=None,
        callback=lambda it, loss, image: loss,
        random_state=0,
    )
    with pytest.warns(UserWarning, match="returned a value of type float"):
        deb.fit(observed)
    assert deb.n_iter_ == 4 and deb.stopped_by_ == "max_iter"
    deb.set_params(callback=lambda it, loss, image: it == 1).fit(observed)
    assert deb.n_iter_ == 2 and deb.stopped_by_ == "callback"


def test_a_reference_given_as_the_whole_sharp_scene_is_told_its_crop():
    from skdip import DIPDeconvolver

    sharp = np.random.default_rng(0).random((24, 24))
    kernel = make_gaussian_kernel(5, 1.0)
    X = blur(sharp, kernel)  # the 'valid' part: 20x20
    tiny = dict(generator=SkipNetwork(width=8, depth=2, input_channels=4), max_iter=2)
    tiny.update(early_stopping=None, random_state=0, device="cpu")
    crop = r"whole sharp scene, 4x4 larger.*y\[2:22, 2:22\].*for a 5x5 blur"
    for est in (
        BlindDeblurrer(kernel_size=5, **tiny),
        DIPDeconvolver(kernel=kernel, boundary="valid", **tiny),
    ):
        with pytest.raises(ValueError, match=crop):
            clone(est).fit(X, sharp)
        fitted = clone(est).fit(X)
        with pytest.raises(ValueError, match=crop):
            fitted.score(X, sharp)
        assert fitted.score(X, sharp[2:22, 2:22]) > 0  # the crop it names is taken
    with pytest.raises(ValueError) as info:
        DIPDeconvolver(kernel=kernel, **tiny).fit(sharp[:20, :20], sharp)  # circular
    assert "sharp scene" not in str(info.value)


def test_the_crop_told_for_an_even_kernel_is_the_window_returned():
    # DIPDeconvolver returns the scene under the kernel's centre pixel ((kh - 1) // 2,
    # (kw - 1) // 2), at kh // 2 for a 4x3 kernel: (2, 1). The crop told was at
    # ((kh - 1) // 2, (kw - 1) // 2) = (1, 1), a row off (a 24x24 camera crop fitted
    # perfectly scored 20.0 dB against it).
    from skdip import DIPDeconvolver

    sharp = np.random.default_rng(0).random((24, 24))
    kernel = np.ones((4, 3)) / 12
    X = blur(sharp, kernel)  # 21x22
    dec = DIPDeconvolver(kernel=kernel, boundary="valid", max_iter=2, early_stopping=None)
    with pytest.raises(ValueError, match=r"3x2 larger.*y\[2:23, 1:23\].*for a 4x3 blur"):
        dec.fit(X, sharp)
    # The window the model crops (that under the delta at the centre pixel (1, 1)).
    delta = np.zeros((4, 3))
    delta[1, 1] = 1.0
    np.testing.assert_allclose(blur(sharp, delta), sharp[2:23, 1:23], atol=1e-12)


def test_blind_deblurrer_names_the_crop_its_window_takes_for_an_even_kernel():
    # BlindDeblurrer cuts its window at the rounded centre of mass, which for a
    # symmetric even kernel (a tie) rounds up: a 4x3 box's (1.5, 1) is pixel (2, 1),
    # the window starts at (kh - 1 - 2, kw - 1 - 1) = (1, 1), and the crop told is
    # that one (DIPDeconvolver's is (2, 1): test_the_crop_told_for_an_even_kernel_...).
    sharp = np.random.default_rng(0).random((24, 24))
    X = blur(sharp, np.ones((4, 3)) / 12)  # 21x22
    a0, b0 = _mass_centre(torch.ones(4, 3) / 12)
    assert (3 - a0, 2 - b0) == (1, 1)
    deb = BlindDeblurrer(kernel_size=(4, 3), max_iter=2, early_stopping=None)
    with pytest.raises(ValueError, match=r"3x2 larger.*y\[1:22, 1:23\].*for a 4x3 blur"):
        deb.fit(X, sharp)


def test_centred_support_rounds_the_centre_of_mass_as_mass_centre_does():
    # Without a centre given, the kernel is centred where _mass_centre puts it: a
    # row centre of 1.7 is pixel 2, not the floored 1.
    k = np.zeros((5, 5))
    k[1, 2], k[2, 2] = 0.3, 0.7
    assert _mass_centre(torch.as_tensor(k)) == (2, 2)
    np.testing.assert_allclose(_centred_support(k)[:, 0], [0.3, 0.7, 0.0])
    np.testing.assert_array_equal(_centred_support(k), _centred_support(k, (2, 2)))
