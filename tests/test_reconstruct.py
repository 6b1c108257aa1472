"""Tests of the inverse-problem estimators and of the sparse noise model."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from skdip import (
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    DIPSuperResolver,
    ExponentialMovingVariance,
    GradientRatio,
    SparseNoise,
    TotalVariation,
)
from skdip.datasets import add_impulse_noise, blur, simulate_kspace
from skdip.estimators._reconstruct import _least_squares_image
from skdip.generators import ConvDecoder, DeepDecoder, ImplicitNeuralRepresentation, SkipNetwork
from skdip.metrics import psnr
from skdip.operators import (
    Convolution,
    Downsample,
    ForwardOperator,
    FunctionOperator,
    KSpaceSampling,
    PixelMask,
    kspace_to_channels,
)
from skdip.operators._convolution import convolve

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)
COMMON = dict(generator=TINY, max_iter=10, early_stopping=None, random_state=0, device="cpu")


def _smooth(shape=(16, 16), seed=0):
    """A smooth test picture with values in [0.1, 0.9]."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = np.random.default_rng(seed).random(3) * 6
    img = 0.5 + 0.4 * np.sin(3 * xx + phase[0]) * np.cos(2 * yy + phase[1])
    if len(shape) == 3:
        img = np.stack([np.roll(img, k, axis=1) for k in range(shape[2])], axis=-1)
    return img


def _channel_mean(x):
    return x.mean(dim=1, keepdim=True)


# One configured instance per estimator, and its matching observation/reference.
def _cases():
    kernel = np.outer([1, 2, 1], [1, 2, 3, 2, 1]).astype(float)
    kernel /= kernel.sum()
    return {
        "reconstructor": (DIPReconstructor(operator=Downsample(2, kernel="box"), **COMMON), 2),
        "inpainter": (DIPInpainter(**COMMON), 1),
        "superresolver": (DIPSuperResolver(scale=2, **COMMON), 2),
        "deconvolver": (DIPDeconvolver(kernel=kernel, boundary="valid", **COMMON), 1),
    }


CASES = _cases()


def _observation(name, shape=(16, 16, 3), seed=0):
    x = _smooth(shape, seed)
    if name == "inpainter":
        x = x.copy()
        x[3:7, 5:9] = np.nan
    return x


def _reference(name, obs):
    factor = CASES[name][1]
    ref = np.nan_to_num(obs, nan=0.5)
    return np.repeat(np.repeat(ref, factor, axis=0), factor, axis=1)


# ------------------------------------------------------------------- shared contract
@pytest.mark.parametrize("name", list(CASES))
def test_shapes_determinism_and_input_untouched(name):
    est, factor = CASES[name]
    obs = _observation(name)
    before = obs.copy()
    out1 = clone(est).fit_transform(obs)
    out2 = clone(est).fit_transform(obs)
    assert out1.shape == (16 * factor, 16 * factor, 3)
    assert np.isfinite(out1).all()
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(np.isnan(obs), np.isnan(before))
    np.testing.assert_array_equal(np.nan_to_num(obs), np.nan_to_num(before))
    out3 = clone(est).set_params(random_state=1).fit_transform(obs)
    assert not np.array_equal(out1, out3)


@pytest.mark.parametrize("name", list(CASES))
def test_grey_2d_in_2d_out(name):
    est, factor = CASES[name]
    obs = _observation(name, shape=(16, 16))
    assert clone(est).fit_transform(obs).shape == (16 * factor, 16 * factor)


@pytest.mark.parametrize("name", list(CASES))
def test_batches_lists_score_and_pickle(name):
    est, factor = CASES[name]
    batch = np.stack([_observation(name, seed=s) for s in range(2)])
    fitted = clone(est).fit(batch)
    assert fitted.reconstruction_.shape == (2, 16 * factor, 16 * factor, 3)
    assert fitted.n_images_ == 2 and len(fitted.best_iter_) == 2
    # a list of images of different sizes
    items = [_observation(name, shape=(16, 16, 3)), _observation(name, shape=(8, 12))]
    outs = clone(est).fit_transform(items)
    assert [o.shape for o in outs] == [(16 * factor,) * 2 + (3,), (8 * factor, 12 * factor)]
    # score against clean references (PSNR) without solving again
    refs = np.stack([_reference(name, b) for b in batch])
    assert np.isfinite(fitted.score(batch, refs))
    # a fitted estimator pickles and keeps its result
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(batch), fitted.reconstruction_)


@pytest.mark.parametrize("name", list(CASES))
def test_transform_of_new_data_leaves_the_fit_alone(name):
    est, _ = CASES[name]
    fitted = clone(est).fit(_observation(name, seed=0))
    kept = fitted.reconstruction_.copy()
    other = fitted.transform(_observation(name, seed=1))
    assert other.shape == kept.shape and not np.array_equal(other, kept)
    np.testing.assert_array_equal(fitted.reconstruction_, kept)


@pytest.mark.parametrize("name", list(CASES))
def test_the_fit_reduces_the_data_loss(name):
    est, _ = CASES[name]
    fitted = clone(est).set_params(max_iter=60).fit(_observation(name))
    assert fitted.loss_curve_[-1] < 0.2 * fitted.loss_curve_[0]


@pytest.mark.parametrize("name", list(CASES))
def test_early_stopping_regularizers_and_history(name):
    est, _ = CASES[name]
    obs = _observation(name)
    rule = ExponentialMovingVariance(warmup=2, patience=3)
    for reg in (TotalVariation(weight=0.01, isotropic=True), GradientRatio(weight=1e-3)):
        fitted = clone(est).set_params(early_stopping=rule, regularizer=reg, max_iter=60)
        fitted.fit(obs, y=_reference(name, obs))
        assert fitted.stopped_by_ == "early_stopping"
        assert fitted.n_iter_ < 60 and 0 <= fitted.best_iter_ < fitted.n_iter_
        assert len(fitted.history_["psnr"]) == fitted.n_iter_
        # the no-reference score is defined once a variance signal exists
        assert np.isfinite(fitted.score(obs))


@pytest.mark.parametrize(
    "generator",
    [
        TINY,
        DeepDecoder(channels=8, n_blocks=3),
        ConvDecoder(channels=8, n_layers=3, input_size=4),
        ImplicitNeuralRepresentation(hidden=16, n_layers=2),
        "skip-small",
    ],
    ids=lambda g: type(g).__name__ if not isinstance(g, str) else g,
)
def test_every_generator_works(generator):
    obs = _smooth((8, 8, 3))
    noise = 0.0 if isinstance(generator, ImplicitNeuralRepresentation) else 1 / 30
    sr = DIPSuperResolver(scale=2, **{**COMMON, "generator": generator, "reg_noise_std": noise})
    out = sr.fit_transform(obs)
    assert out.shape == (16, 16, 3) and np.isfinite(out).all()


# ------------------------------------------------------------------------- generic
def test_reconstructor_defaults_to_the_identity():
    obs = _smooth((16, 16))
    out = DIPReconstructor(**COMMON).fit_transform(obs)
    assert out.shape == obs.shape


def test_reconstructor_with_a_function_and_explicit_output_shape():
    obs = _smooth((12, 12))

    def crop(x):
        return x[..., 2:-2, 2:-2]

    est = DIPReconstructor(operator=crop, output_shape=(16, 16), **COMMON)
    assert est.fit_transform(obs).shape == (16, 16)
    # an output shape the operator cannot map onto the observation is reported
    with pytest.raises(ValueError, match=r"from an image of shape \(20, 20\) \(output_shape="):
        DIPReconstructor(operator=crop, output_shape=(20, 20), **COMMON).fit(obs)
    # without output_shape the message says where the image's shape came from
    with pytest.raises(ValueError, match=r"of shape \(12, 12\) \(the operator's input_shape"):
        DIPReconstructor(operator=crop, **COMMON).fit(obs)


def test_a_channel_mismatch_names_where_the_channel_count_came_from():
    def to_grey(x):
        return x.mean(dim=1, keepdim=True)

    colour = np.stack([_smooth((12, 12))] * 3, axis=-1)
    with pytest.raises(ValueError, match="from an image with 3 \\(the operator's input_channels"):
        DIPReconstructor(operator=to_grey, **COMMON).fit(colour)
    with pytest.raises(ValueError, match="from an image with 2 \\(output_channels=2\\)"):
        DIPReconstructor(operator=to_grey, output_channels=2, **COMMON).fit(colour)
    # A built-in operator's channels are known: the mistake is output_channels, and the
    # message says what to pass (it said only "check the forward operator").
    grey = _smooth((12, 12))
    for operator in (None, Downsample(2)):
        observed = grey if operator is None else grey[::2, ::2]
        with pytest.raises(ValueError, match=r"Downsample|Identity") as info:
            DIPReconstructor(operator=operator, output_channels=3, **COMMON).fit(observed)
        assert "takes 1 channel(s) for this observation: pass output_channels=1" in str(info.value)
    # A function's channel count is not known: no such advice.
    with pytest.raises(ValueError, match="; check the forward operator$"):
        DIPReconstructor(operator=to_grey, output_channels=2, **COMMON).fit(colour)
    # Nor when output_channels is None: the operator's own count did not fit (one coil's
    # k-space for a two-coil observation), and output_channels=1 would change nothing.
    two_coils = np.random.default_rng(0).random((12, 12, 4))
    with pytest.raises(ValueError, match="but the observation has 4; check the forward operator$"):
        DIPReconstructor(operator=KSpaceSampling(np.ones((12, 12))), **COMMON).fit(two_coils)


def test_an_operator_that_misses_a_later_image_is_reported_before_any_fit(count_fits):
    def crop(x):
        return x[..., 2:-2, 2:-2]

    batch = [_smooth((12, 12)), _smooth((10, 10))]  # output_shape suits the first only
    with pytest.raises(ValueError, match="predicts measurements of shape"):
        DIPReconstructor(operator=crop, output_shape=(16, 16), **COMMON).fit(batch)
    assert count_fits == []


def test_reconstructor_output_channels_differ_from_the_observation():
    # a colour image observed through a grey camera: the output keeps 3 channels
    grey = _smooth((16, 16))
    est = DIPReconstructor(
        operator=FunctionOperator(_channel_mean), output_channels=3, **COMMON
    ).fit(grey)
    assert est.reconstruction_.shape == (16, 16, 3)
    assert est.transform(grey).shape == (16, 16, 3)
    # The sparse noise lives with the grey 2-D observation: (h, w), not (h, w, 1).
    sparse = DIPReconstructor(
        operator=FunctionOperator(_channel_mean), output_channels=3, noise_model="sparse", **COMMON
    ).fit(grey)
    assert sparse.reconstruction_.shape == (16, 16, 3) and sparse.sparse_noise_.shape == (16, 16)


def test_a_function_operator_declares_its_image_channels():
    # A colour scene seen by a grey camera needed output_channels=3 every time: the
    # FunctionOperator could not say how many channels its image has.
    grey = _smooth((16, 16))
    for declared in (3, lambda c: 3 * c):
        op = FunctionOperator(_channel_mean, input_channels=declared)
        assert op.input_channels(1) == 3
        est = DIPReconstructor(operator=op, **COMMON).fit(grey)
        assert est.reconstruction_.shape == (16, 16, 3)
    # Declared, it is a fact: output_channels that does not fit is told what to pass.
    op = FunctionOperator(_squared, input_channels=lambda c: c)
    with pytest.raises(ValueError, match="takes 1 channel.s. for this observation: pass output"):
        DIPReconstructor(operator=op, output_channels=3, **COMMON).fit(grey)
    assert FunctionOperator(_channel_mean).input_channels(2) == 2  # the default: as many
    for bad, error in ((0, ValueError), (2.0, TypeError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(error, match="input_channels must be a positive int"):
            FunctionOperator(_channel_mean, input_channels=bad)
    with pytest.raises(ValueError, match="the result of input_channels must be a positive int"):
        FunctionOperator(_channel_mean, input_channels=lambda c: 0).input_channels(1)


@pytest.mark.parametrize(
    "shape, error",
    [
        ((0, 4), ValueError),
        ((-4, 4), ValueError),
        # No pair of ints: a TypeError (a ValueError before)
        ((16,), TypeError),
        ((16, 16, 3), TypeError),
        ((4, 4.5), TypeError),
        ([True, 4], TypeError),
        ("big", TypeError),  # refused by scikit-learn's check: both errors
    ],
)
def test_reconstructor_rejects_bad_output_shapes(shape, error):
    with pytest.raises(error, match="output_shape"):
        DIPReconstructor(output_shape=shape, **COMMON).fit(_smooth())


def test_reconstructor_rejects_bad_operators():
    with pytest.raises(InvalidParameterError, match="operator"):
        DIPReconstructor(operator="blur", **COMMON).fit(_smooth())
    with pytest.raises(InvalidParameterError, match="output_channels"):
        DIPReconstructor(output_channels=0, **COMMON).fit(_smooth())


def test_operator_is_not_modified_by_fitting():
    op = Downsample(2)
    taps = op.taps.clone()
    DIPReconstructor(operator=op, **COMMON).fit(_smooth((8, 8)))
    assert torch.equal(op.taps, taps) and op.taps.device.type == "cpu"


# ----------------------------------------------------------------------- inpainting
def test_inpainter_keeps_observed_values_and_fills_holes():
    clean = _smooth((16, 16, 3))
    obs = clean.copy()
    obs[4:9, 5:10] = np.nan
    hole = np.isnan(obs)
    inp = DIPInpainter(**{**COMMON, "max_iter": 100}).fit(obs)
    out = inp.reconstruction_
    np.testing.assert_array_equal(out[~hole], clean[~hole])
    assert inp.mask_.shape == (16, 16)
    np.testing.assert_array_equal(inp.mask_, ~hole[..., 0])
    # the hole is filled with something close to the picture, not with zeros
    err = np.abs(out[hole] - clean[hole]).mean()
    assert err < 0.25 * np.abs(clean[hole]).mean()
    free = DIPInpainter(keep_observed=False, **{**COMMON, "max_iter": 100}).fit(obs)
    assert not np.array_equal(free.reconstruction_[~hole], clean[~hole])
    np.testing.assert_array_equal(free.reconstruction_[hole], out[hole])


def test_mask_is_equivalent_to_nan_and_both_combine():
    clean = _smooth((16, 16, 3))
    mask = np.ones((16, 16), dtype=bool)
    mask[2:6, 2:6] = False
    with_nan = clean.copy()
    with_nan[~mask] = np.nan
    garbage = clean.copy()
    garbage[~mask] = 0.77  # hidden by the mask: must not matter
    a = DIPInpainter(**COMMON).fit_transform(with_nan)
    b = DIPInpainter(**COMMON).fit_transform(garbage, mask=mask)
    np.testing.assert_array_equal(a, b)
    # NaN elsewhere and a mask: a value is observed only if both say so
    both = garbage.copy()
    both[10:12, 10:12, 1] = np.nan
    inp = DIPInpainter(**COMMON).fit(both, mask=mask.astype(int))
    expected = np.broadcast_to(mask[..., None], both.shape) & ~np.isnan(both)
    assert inp.mask_.shape == (16, 16, 3)
    np.testing.assert_array_equal(inp.mask_, expected)


def test_a_mask_given_the_scikit_image_way_round_is_warned_of():
    # scikit-image's inpaint_biharmonic takes True = to fill; here True = observed. The
    # damage zeroed and given as the mask was fitted silently: the damage kept, the
    # picture redrawn (0.85 off on undamaged pixels).
    import warnings

    image = _smooth((16, 16, 2))
    damage = np.zeros((16, 16), dtype=bool)
    damage[5:8, 3:13] = True
    damaged = image.copy()
    damaged[damage] = 0.0
    with pytest.warns(UserWarning, match=r"in channel 0, every value .* is 0, .* pass ~mask"):
        DIPInpainter(**COMMON).fit(damaged, mask=damage)
    # The right way round, or NaN for the damage: no such warning. Nor for a channel mask
    # that hides one channel's constant values.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*pass ~mask")
        DIPInpainter(**COMMON).fit(damaged, mask=~damage)
        both = np.where(damage[..., None], np.nan, damaged)
        DIPInpainter(**COMMON).fit(both)
        flat = image.copy()
        flat[..., 1] = 0.5
        DIPInpainter(**COMMON).fit(flat, mask=~damage)


def test_a_mask_the_wrong_way_round_is_warned_of_over_a_noisy_or_compressed_fill():
    # Only damage filled with exactly one value was told: noise of 0.01 on the zero fill,
    # or a JPEG round-trip of it, silenced the warning (the picture redrawn, 4.9 dB).
    import io

    from PIL import Image

    from skdip.datasets import load_image

    image = load_image("camera", size=32, as_gray=True)
    damage = np.random.default_rng(3).random(image.shape) < 0.3
    noisy_fill = image.copy()
    noisy_fill[damage] = np.random.default_rng(5).normal(0, 0.01, int(damage.sum()))
    zeroed = np.where(damage, 0.0, image)
    buffer = io.BytesIO()
    Image.fromarray((zeroed * 255).round().astype(np.uint8)).save(buffer, "JPEG", quality=90)
    jpeg = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    assert np.ptp(jpeg[damage]) > 0  # not one value: the old rule's blind spot
    for damaged in (noisy_fill, jpeg):
        with pytest.warns(UserWarning, match=r"vary \d+ times less than the hidden .* ~mask"):
            DIPInpainter(**COMMON).fit(damaged, mask=damage)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*DIPInpainter: in channel")
            DIPInpainter(**COMMON).fit(damaged, mask=~damage)
    # A masked array hides where its mask is True (NumPy's way): the damage given as
    # the observed part is told too, though the hidden values are gone.
    with pytest.warns(UserWarning, match=r"every value .* is 0, .* fit would be flat.*invert"):
        DIPInpainter(**COMMON).fit(np.ma.masked_array(zeroed, mask=~damage))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*DIPInpainter: in channel")
        DIPInpainter(**COMMON).fit(np.ma.masked_array(zeroed, mask=damage))
        # A flat background around a hidden object is the larger part: not told.
        scene = 0.5 + np.random.default_rng(1).normal(0, 0.005, image.shape)
        hidden = np.zeros(image.shape, dtype=bool)
        hidden[8:24, 8:24] = True
        scene[hidden] = image[hidden]
        DIPInpainter(**COMMON).fit(scene, mask=~hidden)


def test_a_batchs_checks_say_which_image_they_speak_of():
    # "an image has no observed value" in a batch of four did not say which.
    images = [_smooth(seed=k) for k in range(4)]
    masks = [np.random.default_rng(k).random((16, 16)) > 0.3 for k in range(4)]
    hidden = [m.copy() for m in masks]
    hidden[2][:] = False
    with pytest.raises(ValueError, match=r"^image 2 of the batch: an image has no observed"):
        DIPInpainter(**COMMON).fit(images, mask=hidden)
    # A warning shared by several images is given once, with their indices.
    damaged = [np.where(m, im, 0.0) for im, m in zip(images, masks, strict=True)]
    inverted = [masks[0], ~masks[1], masks[2], ~masks[3]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DIPInpainter(**COMMON).fit(damaged, mask=inverted)
    told = [str(w.message) for w in caught if "pass ~mask" in str(w.message)]
    assert len(told) == 1 and told[0].startswith("images [1, 3] of the batch: DIPInpainter")
    with pytest.warns(UserWarning, match=r"^image 3 of the batch: DIPInpainter: in channel"):
        DIPInpainter(**COMMON).fit(damaged, mask=[*masks[:3], ~masks[3]])


def test_a_mask_saved_as_an_8_bit_picture_is_told_how_to_read_it():
    mask = np.ones((16, 16), np.uint8) * 255
    mask[3:6, 3:6] = 0
    with pytest.raises(ValueError, match=r"got 0, 255; .* pass mask > 0"):
        DIPInpainter(**COMMON).fit(_smooth(), mask=mask)


def test_an_inpainter_with_nothing_to_fill_says_so():
    # Holes stored as 0 with the mask forgotten: the whole fit ran and X came back
    # unchanged, without a word.
    image = _smooth()
    with pytest.warns(UserWarning, match="nothing is missing .* returns X unchanged"):
        out = DIPInpainter(**COMMON).fit_transform(image)
    np.testing.assert_array_equal(out, image)
    with pytest.warns(UserWarning, match="nothing is missing .* only denoises X"):
        DIPInpainter(keep_observed=False, **COMMON).fit(image, mask=np.ones((16, 16), bool))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*nothing is missing")
        holed = image.copy()
        holed[3, 4] = np.nan
        DIPInpainter(**COMMON).fit(holed)


@pytest.mark.parametrize(
    "mask_shape", [(16, 16), (16, 16, 1), (16, 16, 3), (1, 16, 16), (1, 16, 16, 1)]
)
def test_mask_shapes(mask_shape):
    mask2d = np.ones((16, 16), dtype=bool)
    mask2d[3:5, 3:5] = False
    if mask_shape[0] == 1:  # a batch of one's mask, with its leading axis
        mask = mask2d.reshape(mask_shape)
    elif len(mask_shape) == 3:
        mask = np.repeat(mask2d[..., None], mask_shape[2], axis=2)
    else:
        mask = mask2d
    out = DIPInpainter(**COMMON).fit(_smooth((16, 16, 3)), mask=mask)
    assert not out.mask_[3, 3].any() and out.mask_[0, 0].all()


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.ones((8, 8), dtype=bool), "mask has shape"),
        (np.ones((16, 16, 2), dtype=bool), "mask has shape"),
        (np.full((16, 16), 2.0), "only 0/1"),
        (np.full((16, 16), np.nan), "NaN"),
        (np.zeros((16, 16), dtype=bool), "no observed value"),
        (np.full((16, 16), "a"), None),
    ],
)
def test_bad_masks_are_rejected(mask, match):
    err = TypeError if match is None else ValueError
    with pytest.raises(err, match=match):
        DIPInpainter(**COMMON).fit(_smooth((16, 16, 3)), mask=mask)


def test_all_missing_image_is_rejected():
    with pytest.raises(ValueError, match="no observed"):
        DIPInpainter(**COMMON).fit(np.full((16, 16), np.nan))
    with pytest.raises(ValueError, match="infinity"):
        DIPInpainter(**COMMON).fit(np.where(np.eye(16) > 0, np.inf, 0.5))


def test_transform_reuses_the_fitted_mask_only_for_the_fitted_image():
    obs = _smooth((16, 16))
    mask = np.ones((16, 16), dtype=bool)
    mask[4:8, 4:8] = False
    inp = DIPInpainter(**COMMON).fit(obs, mask=mask)
    np.testing.assert_array_equal(inp.transform(obs), inp.reconstruction_)
    # a different mask for the same pixels is a new problem
    other = inp.transform(obs, mask=np.ones((16, 16), dtype=bool))
    np.testing.assert_array_equal(other, obs)  # fully observed: kept as it is
    assert not np.array_equal(other, inp.reconstruction_)


def test_grid_search_slices_masks_per_fold():
    rng = np.random.default_rng(0)
    images = np.stack([_smooth((16, 16, 3), seed=s) for s in range(3)])
    masks = rng.random((3, 16, 16)) > 0.3
    idx = np.array([2, 0])
    seen = []

    def scorer(est, X, y):
        seen.append(np.array(est.mask_))
        return est.score(X, y)  # no mask here: the fitted result is reused

    search = GridSearchCV(
        DIPInpainter(**COMMON),
        {"lr": [0.01, 0.02]},
        cv=[(idx, idx)],
        scoring=scorer,
        refit=False,
        error_score="raise",
    )
    search.fit(images, images, mask=masks)
    assert len(seen) == 2
    for got in seen:
        np.testing.assert_array_equal(got, masks[idx])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


# ------------------------------------------------------------------ super-resolution
@pytest.mark.parametrize("kernel", ["lanczos2", "bicubic", "box"])
def test_superresolver_output_is_consistent_with_the_observation(kernel):
    low = _smooth((8, 8, 3))
    sr = DIPSuperResolver(scale=3, kernel=kernel, **{**COMMON, "max_iter": 60}).fit(low)
    high = sr.transform()
    assert high.shape == (24, 24, 3)
    down = Downsample(3, kernel=kernel)(torch.as_tensor(high.transpose(2, 0, 1)[None]))
    err = np.abs(down[0].numpy().transpose(1, 2, 0) - low).mean()
    assert err < 0.05


def test_superresolver_rejects_bad_parameters():
    with pytest.raises(InvalidParameterError, match="scale"):
        DIPSuperResolver(scale=0, **COMMON).fit(_smooth())
    with pytest.raises(InvalidParameterError, match="kernel"):
        DIPSuperResolver(kernel="nearest", **COMMON).fit(_smooth())
    with pytest.raises(ValueError, match="'scale' parameter of DIPSuperResolver must be a number"):
        DIPSuperResolver(scale=True, **COMMON).fit(_smooth())  # not a factor of 1


# ------------------------------------------------------------------------ deblurring
@pytest.mark.parametrize(
    "shape, centre, aligned",
    [
        ((3, 5), (1, 2), True),
        ((3, 5), (0, 0), False),
        # Even sizes, centred at ((kh - 1) // 2, (kw - 1) // 2): a window starting at
        # (kh - 1) // 2 instead of kh - 1 - (kh - 1) // 2 agreed on odd kernels only.
        ((4, 2), (1, 0), True),
        ((4, 2), (2, 0), False),
        ((2, 4), (0, 1), True),
    ],
    ids=["centre", "corner", "even-centre", "even-off-centre", "even-wide"],
)
def test_valid_deconvolution_returns_the_window_under_the_kernel_centre(shape, centre, aligned):
    # With a delta kernel at its centre, the 'valid' blur of the generated scene is
    # exactly the returned window; a delta elsewhere shifts the measurement.
    kernel = np.zeros(shape)
    kernel[centre] = 1.0
    dec = DIPDeconvolver(kernel=kernel, boundary="valid", **COMMON)
    dec._check_params()
    image = _smooth((10, 12, 1))
    model, _, _ = dec._make_model(image, {}, seed=0, device=torch.device("cpu"))
    with torch.no_grad():
        estimate, prediction = model(None)
    assert estimate.shape == prediction.shape == (1, 1, 10, 12)
    assert torch.allclose(estimate, prediction) == aligned


def test_valid_deconvolution_accepts_an_aligned_reference():
    kernel = np.ones((3, 3)) / 9
    scene = _smooth((18, 18))
    blurred = convolve(torch.as_tensor(scene)[None, None], torch.as_tensor(kernel), "valid")
    blurred = blurred[0, 0].numpy()
    dec = DIPDeconvolver(kernel=kernel, boundary="valid", **{**COMMON, "max_iter": 30})
    dec.fit(blurred, y=scene[1:-1, 1:-1])
    assert dec.reconstruction_.shape == (16, 16)
    assert dec.history_["psnr"][-1] > dec.history_["psnr"][0]


@pytest.mark.parametrize(
    "kernel, err",
    [(None, ValueError), (np.ones(3), ValueError), (np.full((3, 3), np.nan), ValueError)],
)
def test_deconvolver_rejects_bad_kernels(kernel, err):
    with pytest.raises(err, match="kernel"):
        DIPDeconvolver(kernel=kernel, **COMMON).fit(_smooth())


def test_circular_deconvolution_keeps_the_shape():
    out = DIPDeconvolver(kernel=np.ones((5, 5)) / 25, **COMMON).fit_transform(_smooth((16, 20)))
    assert out.shape == (16, 20)


# ---------------------------------------------------------------------- sparse noise
def _impulse_case(seed=0):
    clean = _smooth((16, 16))
    noisy = add_impulse_noise(clean, 0.2, random_state=seed)
    return clean, noisy


def test_sparse_noise_absorbs_the_impulses():
    clean, noisy = _impulse_case()
    # a faster rate than the default suits this tiny, smooth picture
    est = DIPReconstructor(noise_model=SparseNoise(lr=0.2), **{**COMMON, "max_iter": 200})
    est.fit(noisy, y=clean)
    s = est.sparse_noise_
    assert s.shape == noisy.shape == (16, 16)  # the observation's layout
    outliers = np.abs(noisy - clean) > 0.2
    # the absorbed component is large on the outliers and small elsewhere
    assert np.abs(s[outliers]).mean() > 5 * np.abs(s[~outliers]).mean()
    plain = DIPReconstructor(loss="mse", **{**COMMON, "max_iter": 200}).fit(noisy, y=clean)
    # at the end of the run the plain fit has absorbed the impulses, the sparse model has not
    assert est.history_["psnr"][-1] > plain.history_["psnr"][-1] + 10


def test_an_inpainter_with_a_noise_model_does_not_put_the_impulses_back():
    clean, noisy = _impulse_case()
    noisy[5:9, 5:9] = np.nan
    params = {**COMMON, "max_iter": 200}
    kept = DIPInpainter(noise_model=SparseNoise(lr=0.2), **params).fit(noisy)
    impulses = np.abs(noisy - clean) > 0.2  # False in the hole (NaN)
    # The impulses were put back as observed values (errors of ~0.5 on them).
    assert np.abs(kept.reconstruction_ - clean)[impulses].max() < 0.1
    # What is kept is the observation less its fitted sparse part.
    observed = ~np.isnan(noisy)
    np.testing.assert_allclose(
        kept.reconstruction_[observed], (noisy - kept.sparse_noise_)[observed], atol=1e-12
    )


def test_sparse_noise_is_deterministic_scaled_and_calls_back():
    clean, noisy = _impulse_case()
    calls = []

    def callback(it, loss, estimate):
        calls.append(it)
        return it == 14

    params = {**COMMON, "max_iter": 40, "callback": callback}
    a = DIPReconstructor(noise_model="sparse", **params).fit(noisy * 255)
    assert a.n_iter_ == 15 and calls == list(range(15)) and a.stopped_by_ == "callback"
    b = DIPReconstructor(noise_model="sparse", **params).fit(noisy * 255)
    np.testing.assert_array_equal(a.reconstruction_, b.reconstruction_)
    np.testing.assert_array_equal(a.sparse_noise_, b.sparse_noise_)
    unit = DIPReconstructor(noise_model="sparse", **params).fit(noisy)
    np.testing.assert_allclose(a.sparse_noise_, 255 * unit.sparse_noise_, rtol=1e-4, atol=1e-6)
    assert not hasattr(DIPReconstructor(**COMMON).fit(noisy), "sparse_noise_")


def test_sparse_noise_lives_in_the_measurement_space():
    low = _smooth((8, 8))
    sr = DIPSuperResolver(scale=2, noise_model="sparse", **COMMON).fit(low)
    assert sr.sparse_noise_.shape == (8, 8) and sr.reconstruction_.shape == (16, 16)
    inp = DIPInpainter(noise_model="sparse", **COMMON).fit([low, low], mask=[low > 0.5] * 2)
    assert len(inp.sparse_noise_) == 2
    # In the layout of the observation: the outliers subtract from it directly.
    colour = DIPDenoiser(noise_model="sparse", **COMMON).fit(_smooth((8, 8, 3)).astype(np.float32))
    assert colour.sparse_noise_.shape == (8, 8, 3) and colour.sparse_noise_.dtype == np.float32
    batch = DIPDenoiser(noise_model="sparse", **COMMON).fit(np.stack([low, low])[..., None])
    assert batch.sparse_noise_.shape == (2, 8, 8, 1)


@pytest.mark.parametrize(
    "noise_model, err",
    [
        ("dense", InvalidParameterError),
        (SparseNoise(lr=0), ValueError),
        (SparseNoise(init_std=-1.0), ValueError),
        (SparseNoise(lr="fast"), TypeError),
    ],
)
def test_bad_noise_models_are_rejected(noise_model, err):
    with pytest.raises(err, match="noise_model|SparseNoise"):
        DIPReconstructor(noise_model=noise_model, **COMMON).fit(_smooth())


def test_a_noise_model_with_another_loss_than_mse_is_warned_of():
    # Accepted silently before: with huber the sparse term absorbed nothing (15.3 dB
    # against 26.2 with mse on a salt-and-pepper camera), with rmse image detail too.
    holed = _smooth()
    holed[3:6, 4:9] = np.nan
    for loss in ("l1", "huber", "rmse"):
        with pytest.warns(UserWarning, match=f"made for loss='mse', got loss='{loss}'"):
            DIPInpainter(noise_model="sparse", loss=loss, **COMMON).fit(holed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DIPInpainter(noise_model="sparse", **COMMON).fit(holed)
        DIPInpainter(loss="huber", **COMMON).fit(holed)
        # A callable may be a squared loss: not told.
        sq = lambda p, t: ((p - t) ** 2).mean()  # noqa: E731
        DIPInpainter(noise_model="sparse", loss=sq, **COMMON).fit(holed)


def test_noise_model_is_tunable_by_name():
    est = DIPInpainter(noise_model=SparseNoise()).set_params(noise_model__lr=0.2)
    assert est.get_params()["noise_model__lr"] == 0.2
    assert clone(est).noise_model.lr == 0.2


def test_per_image_fit_parameters_must_match_the_batch():
    images = [np.full((16, 16), 0.5), np.full((16, 16), 0.4)]
    masks = [np.ones((16, 16), bool)] * 3
    with pytest.raises(ValueError, match="one entry per image \\(2\\)"):
        DIPInpainter(**COMMON).fit(images, mask=masks)
    # A single image takes its mask as is, or wrapped in a one-element list.
    mask = np.ones((16, 16), bool)
    mask[4:8, 4:8] = False
    a = DIPInpainter(**COMMON).fit(images[0], mask=mask).transform()
    b = DIPInpainter(**COMMON).fit(images[0], mask=[mask]).transform()
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ rescaling


def test_rescaling_moves_its_offset_through_a_kernel_that_does_not_sum_to_one():
    # y = (2k) * x is y = k * (2x): the gain-2 fit must be the gain-1 fit halved,
    # not shifted by the offset the rescaling removed from the measurement.
    kernel = np.outer([1, 2, 1], [1, 2, 1]).astype(float)
    kernel /= kernel.sum()
    y = 200 + 200 * _smooth()  # raw data: rescale="auto" maps it to [0, 1]
    params = dict(COMMON, boundary="circular", max_iter=20)
    once = DIPDeconvolver(kernel=kernel, **params).fit_transform(y)
    twice = DIPDeconvolver(kernel=2 * kernel, **params).fit_transform(y)
    # Equal up to Adam's eps on a 4x larger loss (0.2% here); the offset error this
    # guards against was 100, half the offset, on values near 150.
    np.testing.assert_allclose(twice, once / 2, rtol=1e-2)


def test_values_hidden_by_a_mask_do_not_set_the_rescaling():
    image = _smooth()
    mask = np.ones(image.shape, bool)
    mask[4:8, 4:8] = False
    fits = []
    for placeholder in (0.0, 255.0, -1e4):
        held = np.where(mask, image, placeholder)
        fits.append(DIPInpainter(**COMMON).fit_transform(held, mask=mask))
    np.testing.assert_array_equal(fits[1], fits[0])
    np.testing.assert_array_equal(fits[2], fits[0])


def _squared(x):
    return x**2


def _zero_padded_shift(x):
    return torch.nn.functional.pad(x, (1, 0, 0, 0))[..., :-1]  # linear; a zero column enters


def test_rescaling_refuses_a_non_linear_forward_model():
    y = 200 + 200 * _smooth()
    with pytest.raises(ValueError, match="not linear"):
        DIPReconstructor(operator=FunctionOperator(_squared), **COMMON).fit(y)


def test_rescaling_through_a_linear_model_that_does_not_keep_constants():
    # Zero padding: the constant image is not measured as a constant. The offset
    # removed is the model's measurement of the constant image, exact for any linear
    # model, so data below 0 still fits.
    y = 200 * _smooth() - 100
    est = DIPReconstructor(
        operator=FunctionOperator(_zero_padded_shift), **{**COMMON, "max_iter": 100}
    ).fit(y)
    predicted = _zero_padded_shift(torch.from_numpy(est.reconstruction_)[None, None])[0, 0]
    misfit = np.abs(predicted.numpy() - y)[:, 1:].mean()  # column 0 is the padding
    assert misfit < 5  # 2.3 seen; values span 160


def test_a_kernel_far_from_unit_sum_is_warned_of():
    # A measured PSF as recorded (a uint8 image of it sums to its counts) was fitted as
    # given: the image came back far too dark (5.1 dB), in silence.
    import warnings

    y = _smooth()
    params = dict(COMMON, boundary="circular", max_iter=2)
    for kernel, total in ((np.ones((3, 3)), "9"), (np.full((3, 3), 0.04), "0.36")):
        with pytest.warns(UserWarning, match=rf"kernel sums to {total}, .* Normalise it"):
            DIPDeconvolver(kernel=kernel, **params).fit(y)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*kernel sums")
        warnings.filterwarnings("error", message=".*Normalise")
        DIPDeconvolver(kernel=np.ones((3, 3)) / 9, **params).fit(y)
        # A zero-sum kernel (a difference operator) is no blur to normalise.
        laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)
        DIPDeconvolver(kernel=laplacian, rescale=False, **params).fit(y)
        DIPDeconvolver(kernel=np.ones((3, 3)) / 6, **params).fit(y)  # a gain of 1.5: fine


def test_rescaling_with_a_kernel_of_negative_sum():
    # (-k) * x = -y is k * x = y: the same fit, and a score on the right range.
    kernel = np.outer([1, 2, 1], [1, 2, 1]).astype(float) / 16
    y = 200 + 200 * _smooth()
    params = dict(COMMON, boundary="circular", max_iter=20)
    plain = DIPDeconvolver(kernel=kernel, **params).fit(y)
    with pytest.warns(UserWarning, match="kernel sums to -1 < 0"):
        negated = DIPDeconvolver(kernel=-kernel, **params).fit(-y)
    np.testing.assert_allclose(negated.reconstruction_, plain.reconstruction_, rtol=1e-4)
    clean = 200 + 200 * _smooth(seed=0)
    assert negated.score(-y, clean) == pytest.approx(plain.score(y, clean), rel=1e-3)


@pytest.mark.parametrize("gain", [0.5, -1.0])
def test_data_on_the_unit_range_behind_a_gain_that_needs_another_image_range(gain):
    # Data on [0, 1] through a kernel of sum 0.5 need an image up to 1.8, or through
    # one of sum -1 a negative image: not rescaled, the sigmoid output saturated.
    kernel = np.full((3, 3), gain / 9)
    image = (0.3 + 0.6 * _smooth()) / gain  # on [0.6, 1.8], or on [-0.9, -0.3]
    y = blur(image, kernel, mode="wrap")
    assert 0 <= y.min() and y.max() <= 1
    params = dict(COMMON, kernel=kernel, boundary="circular", max_iter=60, lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the negative kernel's warning
        auto = DIPDeconvolver(**params).fit_transform(y)
        as_is = DIPDeconvolver(rescale=False, **params).fit_transform(y)
    assert np.abs(auto - image).mean() < 0.1
    assert np.abs(as_is - image).mean() > 0.3  # held on [0, 1]


def test_a_rescaled_blur_leaves_the_sharp_image_room_beyond_the_blurred_range():
    # Mapped exactly onto the blurred data's range, the sigmoid output could never
    # leave it: point sources came back capped at the blurred peak.
    sharp = np.zeros((16, 16))
    sharp[4, 4] = sharp[11, 9] = 1.0
    kernel = np.ones((3, 3)) / 9
    y = 255 * blur(sharp, kernel, mode="wrap")
    params = dict(COMMON, kernel=kernel, boundary="circular", max_iter=80, lr=0.05)
    out = DIPDeconvolver(**params).fit_transform(y)
    assert out.max() > 1.1 * y.max()
    assert out.min() >= -1e-6  # non-negative data: no room below 0


def test_a_reference_whose_contrast_lies_in_the_hole_is_accepted():
    # The observed pixels (a dark sky) span 0.04, the hidden scene 0.6: a clean y on
    # X's own scale was refused as "more than 10 times X's range".
    clean = np.zeros((16, 16))
    clean[:8] = 0.02 + 0.04 * np.linspace(0, 1, 16)[None]
    clean[8:] = 0.3 + 0.6 * np.random.default_rng(0).random((8, 16))
    observed = clean.copy()
    observed[8:] = np.nan
    inp = DIPInpainter(**COMMON).fit(observed, clean)
    assert np.isfinite(inp.score(observed, clean))
    with pytest.raises(ValueError, match="give y on X's scale"):
        inp.score(observed, 255 * clean)  # still refused: another scale


def test_new_images_without_the_fit_parameters_the_fit_had_are_reported():
    # With a plain KFold, scikit-learn hands mask= to fit only: the test images would
    # be solved with their hidden pixels taken as observed, silently.
    image = _smooth()
    mask = np.ones(image.shape, bool)
    mask[4:8, 4:8] = False
    inp = DIPInpainter(**COMMON).fit(image, mask=mask)
    other = _smooth(seed=1)
    with pytest.warns(UserWarning, match="fitted with mask="):
        inp.transform(other)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        inp.transform(other, mask=mask)  # given: no warning
        inp.transform(image)  # the fitted image: its fit and mask are reused
        # Fitted without a mask (its holes NaN): the new image needs none.
        holed, other_holed = image.copy(), other.copy()
        holed[2, 3] = other_holed[5, 6] = np.nan
        DIPInpainter(**COMMON).fit(holed).transform(other_holed)


def test_a_new_kernel_of_the_same_size_is_a_new_problem():
    # Large arrays print alike (NumPy elides their middle): the kept solve must not
    # be reused for another kernel.
    kernel = np.full((33, 33), 1.0 / 33**2)
    other = kernel.copy()
    other[16, 16], other[16, 17] = 2 * kernel[16, 16], 0.0  # same sum, same edges
    image = _smooth((40, 40))
    den = DIPDeconvolver(kernel=kernel, **COMMON).fit(_smooth((40, 40), seed=1))
    first = den.transform(image)
    den.set_params(kernel=other)
    assert not np.array_equal(den.transform(image), first)


def _fft(x):
    return torch.fft.fft2(x)


def test_an_operator_returning_complex_values_is_reported_clearly():
    steps = []
    est = DIPReconstructor(
        operator=FunctionOperator(_fft), callback=lambda *a: steps.append(1), **COMMON
    )
    # Before any step, and before the rescaling probe drops the imaginary part
    # (torch warned of the cast).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="returns complex values"):
            est.fit(_smooth() * 200)
    assert steps == [] and not caught


def _first_item(x):
    return x[0]


def test_an_operator_returning_no_batch_axis_is_reported_before_any_step():
    # A (C, h, w) prediction (the batch axis indexed away) is named before the fit, with
    # the layout the operator must return.
    steps = []
    est = DIPReconstructor(
        operator=FunctionOperator(_first_item), callback=lambda *a: steps.append(1), **COMMON
    )
    with pytest.raises(
        ValueError, match=r"must return a \(B, C, h, w\) tensor, got shape \(1, 16, 16\)"
    ):
        est.fit(_smooth())
    assert steps == []


def _scale_by(factor):
    def scale(x):
        return factor * x

    return scale


def test_the_kept_solve_is_not_reused_for_another_operator():
    # Operators print alike whatever their kernel or function.
    image = _smooth()
    est = DIPReconstructor(operator=FunctionOperator(_scale_by(1.0)), **COMMON).fit(_smooth(seed=1))
    first = est.transform(image)
    est.set_params(operator=FunctionOperator(_scale_by(0.5)))
    assert not np.allclose(est.transform(image), first)
    conv = DIPDeconvolver(kernel=np.ones((3, 3)) / 9, **COMMON).fit(_smooth(seed=1))
    before = conv.transform(image)
    conv.kernel = np.eye(3) / 3  # assigned directly, not through set_params
    assert not np.allclose(conv.transform(image), before)


def test_a_solve_cut_short_is_not_kept_and_pickling_keeps_the_cache(ctrl_c_at):
    import copy

    callback = ctrl_c_at(COMMON["max_iter"] + 3)  # in the first new solve, after the fit
    est = DIPReconstructor(callback=callback, **COMMON).fit(_smooth(seed=1))
    image = _smooth()
    with pytest.warns(RuntimeWarning, match="interrupted"):
        cut = est.transform(image)
    complete = est.transform(image)  # solved again, to the end
    assert not np.array_equal(cut, complete)
    pickle.dumps(est)
    copy.deepcopy(est)
    n = len(callback.calls)
    np.testing.assert_array_equal(est.transform(image), complete)  # kept, still
    assert len(callback.calls) == n


def _zero_padded_box_sum(x):
    weight = torch.ones(1, 1, 3, 3, dtype=x.dtype, device=x.device)
    return torch.nn.functional.conv2d(x, weight, padding=1)  # gain 9 inside, less at borders


def _negated_shift(x):
    return -_zero_padded_shift(x)


@pytest.mark.parametrize("function", [_zero_padded_box_sum, _negated_shift])
def test_rescaling_through_such_a_model_with_a_gain(function):
    # The image behind the data spans the data's range divided by the gain.
    truth = 240 + 120 * _smooth()
    y = function(torch.from_numpy(truth)[None, None])[0, 0].numpy()
    est = DIPReconstructor(operator=FunctionOperator(function), **{**COMMON, "max_iter": 100})
    fitted = est.fit(y).reconstruction_
    predicted = function(torch.from_numpy(fitted)[None, None])[0, 0].numpy()
    misfit = np.sqrt(np.mean((predicted - y) ** 2)) / np.ptp(y)
    assert misfit < 0.2  # about 0.02; 3.7 and 0.8 when the gain was taken to be 1


def _crop_top_left(x):
    return x[..., :16, :16]


def _plus(k):
    def shape(s):
        return (s[0] + k, s[1] + k)

    return shape


def test_the_kept_solve_key_sees_a_function_operators_shape_functions():
    est = DIPReconstructor(
        operator=FunctionOperator(_crop_top_left, input_shape=_plus(2)), **COMMON
    ).fit(_smooth(seed=1))
    assert est.transform(_smooth()).shape == (18, 18)
    est.operator = FunctionOperator(_crop_top_left, input_shape=_plus(4))  # assigned directly
    assert est.transform(_smooth()).shape == (20, 20)


def test_the_fitted_images_score_after_set_params_to_a_model_that_could_not_solve_them():
    y = 200 + 200 * _smooth()
    est = DIPReconstructor(operator=FunctionOperator(_scale_by(1.0)), **COMMON).fit(y)
    est.set_params(operator=FunctionOperator(_squared))  # non-linear: could not rescale y
    assert np.isfinite(est.score(y, y))  # the fitted images: their fit is reused


@pytest.mark.parametrize("before, after", [("valid", "circular"), ("circular", "valid")])
def test_deconvolver_scores_its_fit_after_the_boundary_changes(before, after):
    # A convolution kept from the fit gave score()'s shape check the old boundary:
    # "the clean reference y has shape (16, 16, 1) ... reconstruction ... (18, 18, 1)".
    image = _smooth()
    est = DIPDeconvolver(kernel=np.ones((3, 3)) / 9, boundary=before, **COMMON).fit(image)
    fitted = est.score(image, image)
    est.set_params(boundary=after)
    assert est.score(image, image) == fitted  # the fitted image keeps its fit
    assert np.isfinite(est.score(_smooth(seed=3), _smooth(seed=3)))  # new data: solved anew


def test_the_sparse_noise_rate_is_tunable_only_on_an_instance():
    est = DIPReconstructor(noise_model="sparse", **COMMON)
    with pytest.raises(ValueError, match=r"pass SparseNoise\(\) .* as noise_model"):
        est.set_params(noise_model__lr=0.1)  # was AttributeError on a str
    est.set_params(noise_model=SparseNoise(), noise_model__lr=0.1)
    assert est.noise_model.lr == 0.1
    est.set_params(noise_model__init_std=1e-4)
    assert est.get_params()["noise_model__init_std"] == 1e-4


def test_measurements_a_mask_hides_do_not_set_the_scale():
    # A PixelMask measures 0 where it hides: a placeholder there (255) rescaled the
    # data by 255 and wrecked the fit (errors of 4.9 on [0, 1] data).
    image = _smooth()
    hidden = np.zeros(image.shape, bool)
    hidden[4:9, 5:10] = True
    outputs = []
    for placeholder in (0.0, 255.0):
        y = np.where(hidden, placeholder, image)
        est = DIPReconstructor(operator=PixelMask(~hidden), **COMMON)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # nor a false range warning
            est.fit(y)
            DIPReconstructor(operator=PixelMask(~hidden), **{**COMMON, "rescale": False}).fit(y)
        outputs.append(est.reconstruction_)
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_nan_under_a_pixel_mask_is_told_what_to_pass():
    # NaN over the hidden pixels (DIPInpainter's convention) was refused with
    # "X contains NaN or infinity" alone.
    image = _smooth()
    hidden = np.zeros(image.shape, bool)
    hidden[4:9, 5:10] = True
    est = DIPReconstructor(operator=PixelMask(~hidden), **COMMON)
    with pytest.raises(ValueError, match=r"NaN or infinity \(the PixelMask.*nan_to_num"):
        est.fit(np.where(hidden, np.nan, image))
    # Other operators keep the plain message.
    with pytest.raises(ValueError, match=r"NaN or infinity$"):
        DIPReconstructor(**COMMON).fit(np.where(hidden, np.nan, image))


def test_a_pixel_mask_reconstructor_fits_and_scores_as_the_inpainter():
    # The placeholders under a PixelMask entered the loss and the noise estimate: the
    # emv score was -9.1 against the inpainter's -0.19 on the same problem (48x48
    # camera, 30% hidden), whatever the placeholder.
    from skdip.metrics import get_scorer

    rng = np.random.default_rng(0)
    clean = _smooth((24, 24))
    noisy = clean + rng.normal(0, 0.1, clean.shape)
    observed = rng.random(clean.shape) > 0.3
    params = {**COMMON, "max_iter": 30, "rescale": False}
    inpainter = DIPInpainter(keep_observed=False, **params).fit(noisy, mask=observed)
    scorer = get_scorer("emv")
    expected = scorer(inpainter, noisy)
    for placeholder in (0.0, 1.0, 7.0):
        y = np.where(observed, noisy, placeholder)
        est = DIPReconstructor(operator=PixelMask(observed), **params).fit(y)
        np.testing.assert_allclose(est.loss_curve_, inpainter.loss_curve_, rtol=1e-6)
        np.testing.assert_allclose(est.reconstruction_, inpainter.reconstruction_, atol=1e-6)
        assert scorer(est, y) == pytest.approx(expected, abs=1e-6)


def test_a_pixel_mask_reconstructor_rescales_raw_counts_as_the_inpainter():
    # Through the identity or a mask the measured pixels are the image's own: no room
    # is left beyond their range (as through a blur), so the two fit alike.
    rng = np.random.default_rng(0)
    noisy = 255 * (_smooth((16, 16)) + rng.normal(0, 0.05, (16, 16)))
    observed = rng.random(noisy.shape) > 0.3
    params = {**COMMON, "max_iter": 10}
    inpainter = DIPInpainter(keep_observed=False, **params).fit(noisy, mask=observed)
    est = DIPReconstructor(operator=PixelMask(observed), **params).fit(noisy)
    assert est._fit_results[0]["scaling"].scale == inpainter._fit_results[0]["scaling"].scale
    np.testing.assert_allclose(est.reconstruction_, inpainter.reconstruction_, atol=1e-4)
    den = DIPReconstructor(**params).fit(noisy)  # the identity: as DIPDenoiser's rescaling
    assert den._fit_results[0]["scaling"].scale == pytest.approx(np.ptp(noisy))


def test_the_fitted_images_are_known_however_their_masks_are_packed(monkeypatch):
    X = np.stack([_smooth(), _smooth(seed=1)])[..., None]  # (N, H, W, 1): two grey images
    masks = np.ones((2, 16, 16), bool)
    masks[:, 3:6, 3:6] = False
    est = DIPInpainter(**{**COMMON, "random_state": None}).fit(X, mask=masks)
    one = DIPInpainter(**{**COMMON, "random_state": None}).fit(X[0], mask=masks[0])
    monkeypatch.setattr(type(est), "_solve", lambda *a, **k: pytest.fail("solved again"))
    # One (N, H, W) array at fit, a list of N masks (or of (H, W, 1) masks) now.
    for packed in (masks, list(masks), [m[..., None] for m in masks]):
        np.testing.assert_array_equal(est.transform(X, mask=packed), est.reconstruction_)
    # One image: its mask as (H, W), (1, H, W), (H, W, 1) or a list of one (a (1, H, W)
    # array was solved again).
    for packed in (masks[0], masks[:1], masks[0][..., None], [masks[0]]):
        np.testing.assert_array_equal(one.transform(X[0], mask=packed), one.reconstruction_)


def test_dark_data_through_a_non_linear_model_is_fitted_as_it_is():
    # "auto" rescales narrow data only where the measurement is the image (a blur would
    # cap the image at the measurement's range); through a model, none is refused.
    dark = 0.05 * _smooth()
    est = DIPReconstructor(operator=FunctionOperator(_squared), **COMMON).fit(dark)
    plain = DIPReconstructor(operator=FunctionOperator(_squared), rescale=False, **COMMON)
    np.testing.assert_array_equal(est.reconstruction_, plain.fit(dark).reconstruction_)
    with pytest.raises(ValueError, match="not linear"):  # asked for: refused, as before
        DIPReconstructor(operator=FunctionOperator(_squared), rescale=True, **COMMON).fit(dark)


def test_narrow_data_through_a_blur_is_not_rescaled():
    # Rescaled, the estimate could not leave the blurred measurement's range: a dim
    # star's peak came back capped at the blurred peak. The sharp reference spans
    # 20 times the measurement and is accepted.
    sharp = np.zeros((16, 16))
    sharp[8, 8] = 0.9
    kernel = np.ones((5, 5)) / 25
    blurred = blur(sharp, kernel, mode="wrap")
    params = dict(kernel=kernel, boundary="circular", **COMMON)
    auto = DIPDeconvolver(**params).fit(blurred, y=sharp)
    plain = DIPDeconvolver(rescale=False, **params).fit(blurred, y=sharp)
    np.testing.assert_array_equal(auto.reconstruction_, plain.reconstruction_)
    dark = 0.05 * _smooth()
    dark[5:9, 5:9] = np.nan  # the hole is the network's
    inpainted = DIPInpainter(**COMMON).fit_transform(dark)  # the image itself: rescaled
    as_is = DIPInpainter(rescale=False, **COMMON).fit_transform(dark)
    assert not np.array_equal(inpainted, as_is)


def test_an_operators_own_weights_are_not_fitted():
    # A FunctionOperator around an nn.Conv2d: Adam trained its kernel with the
    # network (18% drift in 100 steps), so another forward model was inverted.
    kernel = torch.full((1, 1, 3, 3), 1 / 9)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernel)
    image = _smooth()
    as_module = DIPReconstructor(operator=FunctionOperator(conv), **COMMON).fit(image)
    as_tensor = DIPReconstructor(operator=FunctionOperator(_fixed_blur), **COMMON).fit(image)
    np.testing.assert_allclose(as_module.reconstruction_, as_tensor.reconstruction_, atol=1e-6)
    torch.testing.assert_close(conv.weight, kernel)  # the caller's module, untouched
    assert conv.weight.requires_grad


def _fixed_blur(x):
    kernel = torch.full((1, 1, 3, 3), 1 / 9, dtype=x.dtype, device=x.device)
    return torch.nn.functional.conv2d(x, kernel, padding=1)


class _Gain(ForwardOperator):
    """A user's operator whose setting its repr does not show."""

    def __init__(self, strength):
        super().__init__()
        self.strength = strength

    def forward(self, x):
        return self.strength * x


def test_the_kept_solve_sees_a_user_operators_attributes():
    # The key held repr "_Gain()" and an empty state_dict: a changed strength (or a
    # loss object's weight) returned the stale solve.
    est = DIPReconstructor(operator=_Gain(1.0), **COMMON).fit(_smooth(seed=1))
    image = _smooth()
    first = est.transform(image)
    est.operator.strength = 0.5  # in place, not through set_params
    assert not np.array_equal(est.transform(image), first)


# ------------------------------------------- rescaling through sign-changing models
_COLUMNS = torch.zeros(16, 16)
_COLUMNS[:, [0, 1, 2, 5, 8, 11, 14, 15]] = 1  # half the k-space columns, DC included


def _sampled_fourier(img):
    """Real and imaginary parts of a column-sampled orthonormal 2-D DFT (MRI-like)."""
    k = torch.fft.fft2(img[:, 0], norm="ortho") * _COLUMNS.to(img.device)
    return torch.stack([k.real, k.imag], 1)


def _kspace(unit=1.0):
    x = _smooth()
    k = _sampled_fourier(torch.as_tensor(x * unit)[None, None])[0].numpy().transpose(1, 2, 0)
    return x, k


def _kspace_fit(data, rescale):
    params = {**COMMON, "max_iter": 150, "lr": 0.02}
    est = DIPReconstructor(operator=_sampled_fourier, output_channels=1, rescale=rescale, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # divergence notes: the result is what is checked
        return est.fit(data).reconstruction_[..., 0]


def test_kspace_of_an_image_on_0_1_is_fitted_as_given():
    # Its values span [-1, 10.6], as k-space does, but the image is on [0, 1]: nothing to
    # rescale (the data's own range once mapped it to [0, 1], for an image spanning a
    # quarter of it: 19.7 dB), and no warning about the range with rescale=False.
    x, k = _kspace()
    assert k.max() > 5
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="rescale=False")
        unscaled = _kspace_fit(k, rescale=False)
    np.testing.assert_array_equal(_kspace_fit(k, rescale="auto"), unscaled)
    assert psnr(x, np.clip(unscaled, 0, 1)) > 28


def test_kspace_of_an_image_on_0_255_is_rescaled_from_an_estimated_image():
    x, k = _kspace(unit=255.0)
    rescaled = _kspace_fit(k, rescale="auto") / 255
    assert psnr(x, np.clip(rescaled, 0, 1)) > 28  # 19.7 dB from the data's range
    # rescale=True maps the estimated range too, whatever the data span.
    forced = _kspace_fit(_kspace()[1], rescale=True)
    assert psnr(x, np.clip(forced, 0, 1)) > 28
    with pytest.warns(UserWarning, match="an image estimated from the data spans"):
        DIPReconstructor(operator=_sampled_fourier, output_channels=1, rescale=False, **COMMON).fit(
            k
        )


def test_kspace_of_a_dim_image_is_stretched_from_the_estimated_image():
    # k-space in a scanner's units (an image on [0, 1e-3]): its estimated image lies
    # inside [0, 1], so it was fitted as it was, near the sigmoid's flat end (-17.5 dB).
    x, k = _kspace(unit=1e-3)
    dim = _kspace_fit(k, rescale="auto") / 1e-3
    assert psnr(x, np.clip(dim, 0, 1)) > 28
    assert psnr(x, np.clip(_kspace_fit(k, rescale=False) / 1e-3, 0, 1)) < 15


def test_dim_data_through_a_blur_is_stretched_but_a_dim_star_is_not():
    # Narrow data through a blur: a dim image (1e-2 of [0, 1]) fitted as it was came back
    # as noise (1.8 dB); a star's blurred peak is as narrow, but its estimated image is not.
    kernel = np.ones((3, 3)) / 9
    x = _smooth()
    y = blur(0.01 * x, kernel, mode="wrap")
    params = dict(COMMON, kernel=kernel, boundary="circular", max_iter=150, lr=0.02)
    auto = DIPDeconvolver(**params).fit(y)
    assert auto._fit_results[0]["scaling"].scale < 0.1
    assert psnr(x, np.clip(auto.reconstruction_ / 0.01, 0, 1)) > 24
    as_is = DIPDeconvolver(rescale=False, **params).fit_transform(y)
    assert psnr(x, np.clip(as_is / 0.01, 0, 1)) < 15


@pytest.mark.parametrize("estimator", ["deconvolver", "super-resolver"])
def test_low_contrast_through_a_blur_or_a_downsampling_is_stretched(estimator):
    # A camera crop on [0, 0.12], blurred or downsampled (32x32, every default), came back
    # 2.7 and 3.9 dB below its stretched fit (benchmarks/results/
    # low_contrast_operators.md); only images estimated under 0.1 were stretched.
    def fitted(image):
        if estimator == "deconvolver":
            kernel = np.ones((3, 3)) / 9
            data = blur(image, kernel, mode="wrap")
            est = DIPDeconvolver(kernel=kernel, boundary="circular", **COMMON)
        else:
            with torch.no_grad():
                data = Downsample(2)(torch.as_tensor(image)[None, None])[0, 0].numpy()
            est = DIPSuperResolver(scale=2, **COMMON)
        return est.fit(data)._fit_results[0]["scaling"]

    low_contrast = fitted(0.3 * _smooth())
    assert low_contrast.scale < 0.5 and low_contrast.from_estimate
    assert fitted(0.9 * _smooth()).scale == 1.0  # wide enough: fitted as given


@pytest.mark.parametrize("unit", [1e-20, 1e19])
def test_the_estimated_image_does_not_depend_on_the_datas_units(unit):
    # The least-squares image ran on the data as given: at 1e-17 its float32 squares fell
    # under the step's floor (output capped at 0.25 of the truth, 4e-7 of it at 1e-20),
    # and at 1e19 k-space's overflowed (the untrained network came back). The map to
    # the fitting scale is now the same in any units (the fits themselves then differ
    # by the data's float32 rounding, which Adam amplifies).
    def scaling(est, data, per):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = est.fit(data)._fit_results[0]["scaling"]
        return found.scale / per, found.image_offset / per

    _, k = _kspace(unit=1e-3)
    kspace = DIPReconstructor(operator=_sampled_fourier, output_channels=1, **COMMON)
    expected = scaling(clone(kspace), k, 1e-3)
    np.testing.assert_allclose(scaling(clone(kspace), k / 1e-3 * unit, unit), expected, rtol=1e-4)
    if unit > 1:
        return  # wide data through a blur: mapped by the data's own range, not estimated
    kernel = np.ones((3, 3)) / 9
    y = blur(0.01 * _smooth(), kernel, mode="wrap")
    deconvolver = DIPDeconvolver(kernel=kernel, boundary="circular", **COMMON)
    expected = scaling(clone(deconvolver), y, 0.01)
    found = scaling(clone(deconvolver), y / 0.01 * unit, unit)
    np.testing.assert_allclose(found, expected, rtol=1e-4)


def test_dim_data_through_a_model_that_is_not_linear_is_warned_of():
    # Wide data through such a model is refused; dim data was fitted as given, far below
    # the network's [0, 1] (sqrt(x) at 1e-6 of [0, 1]: 5.6 dB), in silence.
    def root(x):
        return x.clamp_min(0).sqrt()

    y = np.sqrt(1e-6 * _smooth())
    with pytest.warns(UserWarning, match=r"reach only .*not linear.*fitted as given"):
        DIPReconstructor(operator=FunctionOperator(root), **COMMON).fit(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DIPReconstructor(operator=FunctionOperator(root), **COMMON).fit(np.sqrt(_smooth()))


def test_least_squares_image_of_a_sampled_fourier_model_is_its_zero_filled_image():
    x, k = _kspace()
    data = torch.as_tensor(k.transpose(2, 0, 1))[None]
    estimate = _least_squares_image(_sampled_fourier, data, (1, 1, 16, 16))[0, 0].numpy()
    kspace = (k[..., 0] + 1j * k[..., 1]) * _COLUMNS.numpy()
    zero_filled = np.fft.ifft2(kspace, norm="ortho").real  # the real image's least squares
    np.testing.assert_allclose(estimate, zero_filled, atol=1e-10)


@pytest.mark.parametrize("name", ["reconstructor", "superresolver", "deconvolver", "inpainter"])
def test_positive_models_keep_the_rescaling_by_the_data_range(name):
    est, factor = CASES[name]
    est = clone(est)
    est._device = torch.device("cpu")
    image = _smooth((16 // factor, 16 // factor) if factor > 1 else (16, 16))[..., None]
    assert est._image_range(image * 255, {}) is None


def test_no_reference_scores_of_kspace_fits_ask_for_the_noise_level():
    from skdip.metrics import get_scorer

    x, k = _kspace()
    noisy = k + 0.01 * np.random.default_rng(0).standard_normal(k.shape) * (k != 0)
    est = DIPReconstructor(operator=_sampled_fourier, output_channels=1, **COMMON).fit(noisy)
    with pytest.warns(UserWarning, match="not image-like"):
        est.score(noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert np.isfinite(get_scorer("emv", sigma=0.01)(est, noisy))
        # A positive model's measurements are image-like: no warning there.
        masked = DIPReconstructor(operator=PixelMask(np.ones((16, 16))), **COMMON).fit(x)
        masked.score(x)


def test_complex_kspace_is_refused_with_the_way_to_pass_it():
    with pytest.raises(ValueError, match="Complex data not supported.*kspace_to_channels"):
        DIPReconstructor(operator=_sampled_fourier, output_channels=1, **COMMON).fit(
            np.ones((16, 16), dtype=complex)
        )
    # A complex clean reference is a complex image, not k-space: its two channels.
    with pytest.raises(ValueError, match=r"y is complex.*np.stack\(\[y.real, y.imag\]"):
        DIPReconstructor(**COMMON).fit(np.ones((16, 16)), np.ones((16, 16), dtype=complex))


def test_grid_search_on_kspace_with_the_noise_level_given():
    from skdip.metrics import get_scorer
    from skdip.model_selection import FitImagesCV

    x, k = _kspace()
    noisy = k + 0.01 * np.random.default_rng(0).standard_normal(k.shape) * (k != 0)
    est = DIPReconstructor(operator=_sampled_fourier, output_channels=1, **COMMON)
    search = GridSearchCV(
        est, {"lr": [0.01, 0.03]}, scoring=get_scorer("emv", sigma=0.01), cv=FitImagesCV()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no noise-level warning: sigma is given
        search.fit(noisy[None])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.reconstruction_.shape == (1, 16, 16, 1)


def _inpainting_masks(n):
    rng = np.random.default_rng(3)
    return rng.random((n, 16, 16, 1)) > 0.3


@pytest.mark.parametrize(
    "make, fit_params",
    [
        (lambda: DIPReconstructor(operator=_sampled_fourier, output_channels=1), {}),
        (lambda: DIPInpainter(), {"mask": _inpainting_masks(3)}),
        (lambda: DIPSuperResolver(scale=2), {}),
        (lambda: DIPDeconvolver(kernel=np.ones((3, 3)) / 9), {}),
    ],
    ids=["reconstructor", "inpainter", "superresolver", "deconvolver"],
)
def test_n_jobs_fits_the_images_as_one_by_one(make, fit_params):
    # The operator (a module-level function here) and the per-image fit parameters
    # travel to the worker processes.
    est = make()
    if isinstance(est, DIPReconstructor):
        images = [_kspace()[1] * s for s in (1.0, 0.8, 0.6)]
    elif isinstance(est, DIPSuperResolver):
        images = [_smooth((8, 8), s) for s in range(3)]
    else:
        images = [_smooth((16, 16), s) for s in range(3)]
    images = np.stack([np.atleast_3d(im) for im in images])
    sequential = clone(est).set_params(**COMMON).fit_transform(images, **fit_params)
    parallel = clone(est).set_params(**COMMON, n_jobs=2).fit_transform(images, **fit_params)
    np.testing.assert_array_equal(parallel, sequential)


def test_a_kspace_fit_takes_its_image_channels_from_the_operator():
    # It was refused ("pass output_channels=1"), after a warning of hot pixels that
    # read the real and imaginary channels as an image's.
    from skdip.datasets import cartesian_mask, simulate_kspace
    from skdip.operators import KSpaceSampling, kspace_to_channels

    mask = cartesian_mask((16, 16), acceleration=2, random_state=0)
    operator = KSpaceSampling(mask)
    measured = kspace_to_channels(simulate_kspace(_smooth(), mask, None, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        implied = DIPReconstructor(operator=operator, **COMMON).fit(measured)
    told = DIPReconstructor(operator=operator, output_channels=1, **COMMON).fit(measured)
    assert implied.reconstruction_.shape == told.reconstruction_.shape == (*measured.shape[:2], 1)
    np.testing.assert_array_equal(implied.reconstruction_, told.reconstruction_)
    # A complex image: two channels, whatever the measurement's.
    complex_image = KSpaceSampling(mask, image="complex")
    assert complex_image.input_channels(measured.shape[2]) == 2
    assert operator.input_channels(8) == 1


class _EveryOtherColumn(ForwardOperator):
    """Measures every other column of the image: its own pixels, a subset."""

    measures_pixels = True

    def forward(self, x):
        return x[..., ::2]

    def adjoint(self, y):
        x = y.new_zeros((*y.shape[:-1], 2 * y.shape[-1]))
        x[..., ::2] = y
        return x

    def output_shape(self, input_shape):
        return input_shape[0], (input_shape[1] + 1) // 2

    def input_shape(self, output_shape):
        return output_shape[0], 2 * output_shape[1]


@pytest.mark.parametrize("measures_pixels", [True, False])
def test_an_operator_that_measures_pixels_is_rescaled_as_the_identity(measures_pixels):
    # The rescaling asks the operator, not its class: an operator of one's own that
    # picks pixels leaves no room beyond the data's range, and stretches narrow data
    # by its own span, not by that of an image estimated from it.
    rng = np.random.default_rng(0)
    y = 255 * (_smooth((16, 8)) + rng.normal(0, 0.05, (16, 8)))
    op = _EveryOtherColumn()
    op.measures_pixels = measures_pixels
    est = DIPReconstructor(operator=op, **COMMON).fit(y)
    scale = est._fit_results[0]["scaling"].scale
    if measures_pixels:
        assert scale == pytest.approx(np.ptp(y))
    else:
        assert scale > 1.2 * np.ptp(y)
    narrow = 0.45 + 0.04 * _smooth((16, 8))
    est = DIPReconstructor(operator=op, **COMMON).fit(narrow)
    scale = est._fit_results[0]["scaling"].scale
    if measures_pixels:
        assert scale == pytest.approx(np.ptp(narrow))
    else:
        # The least-squares image, 0 in the columns never measured, spans [0, 0.49]:
        # under 0.5, so it is stretched, with room on each side.
        assert 1.2 * np.ptp(narrow) < scale < 1.0


def test_a_pixel_mask_reconstructor_stretches_narrow_data_as_the_inpainter():
    rng = np.random.default_rng(1)
    narrow = 0.45 + 0.04 * _smooth() + rng.normal(0, 0.002, (16, 16))
    observed = rng.random(narrow.shape) > 0.3
    params = {**COMMON, "max_iter": 10}
    inpainter = DIPInpainter(keep_observed=False, **params).fit(narrow, mask=observed)
    est = DIPReconstructor(operator=PixelMask(observed), **params).fit(narrow)
    assert inpainter._fit_results[0]["scaling"].scale < 0.1
    assert est._fit_results[0]["scaling"].scale == inpainter._fit_results[0]["scaling"].scale
    np.testing.assert_allclose(est.reconstruction_, inpainter.reconstruction_, atol=1e-4)


def test_a_downsampling_factor_larger_than_the_image_is_named():
    # It advised to "crop the image to (0, 0)".
    from skdip.operators import Downsample

    with pytest.raises(ValueError, match=r"smaller than the downsampling factor 8"):
        Downsample(8).output_shape((4, 16))


def test_a_shifted_image_behind_a_model_is_rescaled_as_shifted_data_is():
    # The rule on the image estimated by least squares asked only the bounds: a dark
    # image on [-0.1, 0] behind a blur, or on [-0.2, 0] behind k-space, came back
    # with every pixel's sign wrong (4.4 and 4.8 dB).
    x = -0.1 * _smooth()
    kernel = np.ones((3, 3)) / 9
    y = blur(x, kernel, mode="wrap")
    params = dict(COMMON, kernel=kernel, boundary="circular", max_iter=1)
    assert DIPDeconvolver(**params).fit(y)._fit_results[0]["scaling"].scale != 1
    _, k = _kspace(unit=-0.2)
    est = DIPReconstructor(
        operator=_sampled_fourier, output_channels=1, **{**COMMON, "max_iter": 1}
    )
    assert est.fit(k)._fit_results[0]["scaling"].scale != 1


# A bug the suite once missed (the superresolver's kernel parameter ignored):
# its test only checks that each kernel's downsampling of the result is near the observation, which
# a lanczos2 fit of a smooth picture also passes.
def test_the_superresolvers_kernel_is_its_forward_model():
    low = _smooth((8, 8))
    fits = {
        kernel: DIPSuperResolver(scale=2, kernel=kernel, **COMMON).fit_transform(low)
        for kernel in ("lanczos2", "box")
    }
    assert not np.allclose(fits["lanczos2"], fits["box"])
    sr = DIPSuperResolver(scale=2, kernel="box", **COMMON)
    operator = sr._forward_problem(low[..., None], {})[0]
    assert operator.kernel == "box" and operator.factor == 2


# A bug the suite once missed (CGLS direction without conjugation), and
# (residual updated without the step length): the only test used an orthonormal
# sampled Fourier model, solved by the first step, where both agree.
def test_least_squares_image_is_the_least_squares_solution_of_a_small_blur():
    from skdip.estimators._reconstruct import _least_squares_image

    kernel = np.array([[0.5, 0.3, 0.15, 0.05]])
    op = Convolution(kernel, boundary="circular").to(torch.float64)
    shape = (1, 1, 1, 8)  # 8 unknowns: CGLS is exact in at most 8 steps
    columns = np.eye(8).reshape(8, *shape)
    matrix = np.stack(
        [op(torch.from_numpy(c)).numpy().ravel() for c in columns], axis=1
    )  # the operator as a matrix
    data = np.random.default_rng(40).random(8)
    expected = np.linalg.lstsq(matrix, data, rcond=None)[0]
    got = _least_squares_image(op, torch.from_numpy(data).reshape(shape), shape)
    np.testing.assert_allclose(got.numpy().ravel(), expected, atol=1e-8)


# A bug the suite once missed (the estimated image's mean instead of its
# median): an image whose median lies below -0.05 but whose mean does not is rescaled (the data-
# range rule, applied to the image estimated from k-space).
def test_kspace_of_an_image_with_a_negative_median_is_rescaled_from_the_estimate():
    h, w = 8, 8
    values = np.repeat([-0.1, 0.2], [40, 24])  # median -0.1, mean 0.0125
    x = np.random.default_rng(41).permutation(values).reshape(h, w)
    assert np.median(x) < -0.05 < x.mean() < 1.05
    k = kspace_to_channels(simulate_kspace(x, np.ones((h, w))))
    est = DIPReconstructor(operator=KSpaceSampling(np.ones((h, w))), output_channels=1, **COMMON)
    est._device = torch.device("cpu")
    low, high, median = est._image_range(k, {})
    assert median == pytest.approx(-0.1, abs=1e-6)
    scaling = est._fit_scaling(k, {})
    assert scaling.from_estimate and scaling.scale != 1


def test_shared_parameter_docs_take_the_indentation_of_the_docstring_they_fill():
    # A bug the suite once missed: Python 3.13 strips a docstring's common indentation,
    # but the shared descriptions were pasted in with the class-body indentation of
    # earlier Pythons, so on 3.13 DIPInpainter's "generator" and every parameter after
    # it sat 4 spaces deeper than its own (help() and numpydoc read them as text).
    import inspect

    from skdip.estimators._reconstruct import _doc

    indented = (
        "An estimator.\n\n    Parameters\n    ----------\n    own : int\n        Its own.\n"
        "    %(common_params)s\n\n    Attributes\n    ----------\n    %(common_attributes)s\n    "
    )
    for raw in (indented, inspect.cleandoc(indented)):  # Python <= 3.12, then 3.13's form

        class Filled:
            __doc__ = raw

        doc = inspect.cleandoc(_doc(Filled).__doc__)
        for name in ("own : int", "generator : str", "max_iter : int", "n_iter_ : int"):
            assert f"\n{name}" in doc, (name, doc[:400])
        assert "\n    The network: a name" in doc
    # A docstring without a placeholder is left as it is; only the leading whitespace
    # of the placeholder's line is indentation.

    class Partial:
        __doc__ = "An estimator.\n\n    Parameters\n    ----------\n    %(common_params)s\n"

    doc = _doc(Partial).__doc__
    assert "%(common" not in doc and "\n    max_iter : int" in doc
    assert _doc(type("Plain", (), {"__doc__": "Nothing to fill."})).__doc__ == "Nothing to fill."


# Mutation audit (survivors of _fill: blank lines given the indentation, the newline
# before the placeholder counted as indentation, text before the placeholder too).
def test_shared_parameter_docs_are_filled_line_for_line():
    from skdip import DIPInpainter
    from skdip.estimators._reconstruct import _doc

    doc = DIPInpainter.__doc__
    assert "%(common" not in doc
    # One line each, at the indentation of the placeholder's line (4 spaces on <= 3.12,
    # none on 3.13, which strips a docstring's common indentation).
    indent = "    " if "\n    Parameters\n" in doc else ""
    block = (
        f"\n{indent}max_iter : int, default=5000\n"
        f"{indent}    Maximum number of optimisation steps.\n{indent}lr : float"
    )
    assert block in doc
    # Blank lines stay empty (no trailing whitespace); the last line is the closing one.
    assert not [line for line in doc.split("\n")[:-1] if line and not line.strip()]

    class Labelled:
        __doc__ = "An estimator.\n\n    Shared: %(common_params)s\n"

    filled = _doc(Labelled).__doc__
    assert "\n    max_iter : int, default=5000\n        Maximum number" in filled
    # A blank line of the filled-in text stays empty.
    from skdip.estimators._reconstruct import _fill

    text = "first : int\n        One.\n\n    second : int\n        Two."
    assert _fill("Doc.\n\n    %(p)s\n", "%(p)s", text) == (
        "Doc.\n\n    first : int\n        One.\n\n    second : int\n        Two.\n"
    )


def test_low_contrast_data_through_a_model_that_is_not_linear_is_not_warned_of():
    # The dim-data warning tested the span: data near 0.5 spanning 0.1 (0.45-0.55 through
    # a gamma curve) was told to change units though it fitted as well as before.
    def gamma(x):
        return x.clamp_min(0) ** 0.8

    y = (0.45 + 0.1 * _smooth()) ** 0.8
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DIPReconstructor(operator=FunctionOperator(gamma), **COMMON).fit(y)


def test_a_photograph_fitted_as_periodic_is_warned_of():
    # A crop blurred as a photograph is (its borders cut from a larger scene) was
    # fitted as periodic by the default boundary, ringing from its borders, silently.
    from skdip.datasets import load_image, make_gaussian_kernel

    kernel = make_gaussian_kernel(9, 2.0)
    scene = load_image("camera", size=64, as_gray=True)[8:48, 12:52]
    photo = blur(scene, kernel, "valid")  # 32x32
    periodic = blur(scene[4:36, 4:36], kernel, "wrap")
    fit = dict(COMMON, max_iter=1)
    with pytest.warns(UserWarning, match="DIPDeconvolver: .*does not look periodic"):
        DIPDeconvolver(kernel=kernel, **fit).fit(photo)
    # The same model as an operator of DIPReconstructor was fitted in silence.
    through = dict(fit, output_channels=1)
    with pytest.warns(UserWarning, match="DIPReconstructor: .*does not look periodic"):
        DIPReconstructor(operator=Convolution(kernel), **through).fit(photo)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DIPDeconvolver(kernel=kernel, boundary="valid", **fit).fit(photo)
        DIPDeconvolver(kernel=kernel, **fit).fit(periodic)
        DIPReconstructor(operator=Convolution(kernel, "valid"), **through).fit(photo)
        DIPReconstructor(operator=Convolution(kernel), **through).fit(periodic)


def test_an_off_centre_kernel_is_warned_of_as_a_shift():
    from skdip.datasets import make_gaussian_kernel

    centred = np.zeros((9, 9))
    centred[2:7, 2:7] = make_gaussian_kernel(5, 1.0)
    off = np.roll(centred, (2, -1), axis=(0, 1))  # a measured PSF cut off-centre
    image = np.random.default_rng(0).random((16, 16))
    fit = dict(COMMON, max_iter=1)
    with pytest.warns(UserWarning, match=r"centre of mass lies \(\+2.00, -1.00\) pixels"):
        DIPDeconvolver(kernel=off, boundary="valid", **fit).fit(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Centred ones, of odd or even size, are not (an even box's centre of mass lies
        # half a pixel past its centre pixel).
        DIPDeconvolver(kernel=centred, boundary="valid", **fit).fit(image)
        DIPDeconvolver(kernel=np.ones((4, 4)) / 16, boundary="valid", **fit).fit(image)


# A bug the suite once missed: through a PixelMask, DIPReconstructor judged "content beyond
# [0, 1]" on the measured values flattened, where the test needs the image, so it never ran:
# a masked picture on [0, 1.2] was fitted as given and clipped at 1 (27.1 dB against
# DIPInpainter's 30.9 on a 32x32 camera, 300 steps), with no warning
def test_a_mask_operator_rescales_content_beyond_one_as_the_inpainter_does():
    from skimage.data import camera
    from skimage.transform import resize

    from skdip import DIPInpainter, DIPReconstructor
    from skdip.operators import PixelMask

    image = resize(camera() / 255.0, (32, 32), anti_aliasing=True) ** 0.5 * 1.2
    assert 0.05 < np.mean(image > 1) and image.max() < 1.25  # beyond only past the noise
    mask = np.random.default_rng(0).random(image.shape) > 0.2
    observed = np.where(mask, image, 0.0)
    settings = dict(generator="skip-small", max_iter=3, early_stopping=None, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        through_model = DIPReconstructor(operator=PixelMask(mask), **settings).fit(observed)
        inpainted = DIPInpainter(keep_observed=False, **settings).fit(observed, mask=mask)
        as_given = DIPInpainter(keep_observed=False, rescale=False, **settings)
        as_given.fit(observed, mask=mask)
    assert np.abs(inpainted.reconstruction_ - as_given.reconstruction_).max() > 0.01  # rescaled
    np.testing.assert_allclose(through_model.reconstruction_, inpainted.reconstruction_, atol=1e-6)
