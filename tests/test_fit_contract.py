"""The estimators' shared promises about inputs, fitted state and returned arrays.

Checks that need only the data run before any fit (a batch is fitted image after
image, so a late check would throw away the earlier images' fits); results never
alias the fitted state; a refit replaces the whole fitted state.
"""

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

from skdip import (
    BlindDeblurrer,
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    DIPSuperResolver,
    HIOPhaseRetriever,
    PhaseRetriever,
    SkipNetwork,
)
from skdip.datasets import simulate_diffraction
from skdip.losses import TotalVariation
from skdip.operators import Convolution
from skdip.stopping import ExponentialMovingVariance, WindowedMovingVariance

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)
COMMON = dict(generator=TINY, max_iter=4, early_stopping=None, random_state=0, device="cpu")


def _image(shape=(16, 16), seed=0):
    return np.random.default_rng(seed).random(shape)


# ------------------------------------------------------- checks before any fit
def test_a_bad_mask_of_a_later_image_fails_before_the_first_fit(count_fits):
    images = [_image(seed=0), _image(seed=1)]
    masks = [np.ones((16, 16), bool), np.ones((8, 8), bool)]
    with pytest.raises(ValueError, match="mask has shape"):
        DIPInpainter(**COMMON).fit(images, mask=masks)
    assert count_fits == []


def test_a_kernel_larger_than_a_later_image_fails_before_the_first_fit(count_fits):
    images = [_image((20, 20)), _image((6, 6))]
    with pytest.raises(ValueError, match="larger than the 6x6 image"):
        BlindDeblurrer(kernel_size=9, **COMMON).fit(images)
    assert count_fits == []


@pytest.mark.parametrize(
    "estimator, reference_shape",
    [
        (DIPDenoiser(**COMMON), (16, 16, 3)),  # colour reference for a grey image
        (DIPDenoiser(**COMMON), (18, 18)),
        (BlindDeblurrer(kernel_size=3, **COMMON), (16, 16, 3)),
        (BlindDeblurrer(kernel_size=3, **COMMON), (18, 18)),
        (DIPSuperResolver(scale=2, **COMMON), (16, 16)),  # the observation's size, not 2x
        (DIPReconstructor(**COMMON), (16, 16, 2)),
    ],
)
def test_a_clean_reference_of_the_wrong_shape_fails_before_the_first_fit(
    count_fits, estimator, reference_shape
):
    images = [_image(), _image(seed=1)]
    references = [_image(), _image(reference_shape, seed=2)]  # the second one is wrong
    with pytest.raises(ValueError, match="clean reference y has shape"):
        estimator.fit(images, references)
    assert count_fits == []


def test_references_of_the_reconstruction_shape_are_accepted():
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    x = _image()
    DIPSuperResolver(scale=2, **COMMON).fit(x, _image((32, 32)))
    DIPDeconvolver(kernel=kernel, boundary="valid", **COMMON).fit(x, _image())
    BlindDeblurrer(kernel_size=3, **COMMON).fit(x, _image())


def test_scoring_the_fitted_images_judges_y_by_the_fitted_reconstruction(count_fits):
    # transform keeps the fitted result after set_params; score did not, and refused a
    # reference of the fitted reconstruction's shape for the new scale's.
    low = _image()
    sr = DIPSuperResolver(scale=2, **COMMON).fit(low)
    before = sr.score(low, _image((32, 32)))
    sr.set_params(scale=4)
    assert sr.transform(low).shape == (32, 32)
    assert sr.score(low, _image((32, 32))) == before
    with pytest.raises(
        ValueError, match=r"y has shape \(64, 64, 1\).*fitted reconstruction of image 0"
    ):
        sr.score(low, _image((64, 64)))
    assert len(count_fits) == 1


def test_score_checks_the_references_before_solving_new_data(count_fits):
    den = DIPDenoiser(**COMMON).fit(_image())
    fits = len(count_fits)
    new = _image(seed=3)
    with pytest.raises(ValueError, match="y holds 2 images but X holds 1"):
        den.score(new, [_image(), _image()])
    with pytest.raises(ValueError, match="clean reference y has shape"):
        den.score(new, _image((12, 12)))
    assert len(count_fits) == fits
    assert np.isfinite(den.score(new, _image()))  # a matching reference still scores
    assert len(count_fits) == fits + 1


@pytest.mark.parametrize(
    "estimator",
    [
        DIPDenoiser(**COMMON),
        DIPSuperResolver(scale=2, **COMMON),
        DIPReconstructor(**COMMON),
        BlindDeblurrer(kernel_size=3, **COMMON),
    ],
)
def test_unknown_fit_parameters_are_refused(count_fits, estimator):
    mask = np.ones((16, 16), bool)
    with pytest.raises(TypeError, match="unexpected fit parameter.*mask"):
        estimator.fit(_image(), mask=mask)
    assert count_fits == []


def test_unknown_parameters_are_refused_by_transform_and_score_too():
    den = DIPDenoiser(**COMMON).fit(_image())
    with pytest.raises(TypeError, match="unexpected fit parameter.*sample_weight"):
        den.transform(_image(), sample_weight=np.ones(1))
    with pytest.raises(TypeError, match="unexpected fit parameter.*mask"):
        den.score(_image(), mask=np.ones((16, 16), bool))


def test_the_inpainter_takes_its_mask():
    mask = np.ones((16, 16), bool)
    mask[4:8, 4:8] = False
    inp = DIPInpainter(**COMMON).fit(_image(), mask=mask)
    assert inp.transform(_image(), mask=mask).shape == (16, 16)


_BOX = np.ones((3, 3)) / 9
_NO_RULE = dict(generator=TINY, max_iter=2, early_stopping=None, random_state=0, device="cpu")


@pytest.mark.parametrize(
    "make",
    [
        lambda: DIPDenoiser(**_NO_RULE),
        lambda: DIPDenoiser(noise_model="sparse", **_NO_RULE),
        lambda: DIPInpainter(**_NO_RULE),
        lambda: DIPDeconvolver(kernel=_BOX, **_NO_RULE),
        lambda: DIPReconstructor(operator=Convolution(_BOX), **_NO_RULE),
        lambda: BlindDeblurrer(kernel_size=3, **_NO_RULE),
    ],
    ids=["denoiser", "sparse", "inpainter", "deconvolver", "reconstructor", "blind"],
)
def test_the_rescale_decision_is_made_once_per_image(make, monkeypatch):
    # The check before any fit decided each image's rescaling, and its fit decided it
    # again (BlindDeblurrer and the sparse noise model a third time): through a blur
    # each decision probes the model (15 forward calls, 38 for narrow data).
    import skdip.estimators._base as base

    decisions = []
    decide = base._Scaling.fit.__func__

    def counting(cls, values, *args, **kwargs):
        decisions.append(values.shape)
        return decide(cls, values, *args, **kwargs)

    monkeypatch.setattr(base._Scaling, "fit", classmethod(counting))
    # Narrow data (stretched) and counts on 0-255 (rescaled), as well as [0, 1] data.
    X = [0.3 + 0.1 * _image((16, 16, 3)), 255 * _image((16, 16, 3), seed=1), _image((16, 16, 3))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make().fit(X)
    assert len(decisions) == len(X)
    for image, result in zip(X, est._fit_results, strict=True):  # the decision the fit used
        again = est._fit_scaling(image, {})
        assert (result["scaling"].scale, result["scaling"].image_offset) == (
            again.scale,
            again.image_offset,
        )
        np.testing.assert_array_equal(result["scaling"].offset, again.offset)


# ------------------------------------------------------- returned arrays and state
def test_transform_of_the_fitted_images_returns_a_copy():
    x = _image()
    den = DIPDenoiser(**COMMON).fit(x)
    before = den.reconstruction_.copy()
    score = den.score(x, _image(seed=5))
    for out in (den.transform(x), den.transform()):
        assert not np.shares_memory(out, den.reconstruction_)
        out[:] = 0  # a caller editing its result in place
    np.testing.assert_array_equal(den.reconstruction_, before)
    np.testing.assert_array_equal(den.transform(x), before)
    assert den.score(x, _image(seed=5)) == score


def _arrays(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _arrays(item)


@pytest.mark.parametrize(
    ("estimator", "fit_params"),
    [
        (DIPDenoiser(**COMMON), {}),
        (DIPInpainter(**COMMON), {"mask": _image(seed=3) < 0.7}),
        (BlindDeblurrer(kernel_size=3, max_iter=4, random_state=0, device="cpu"), {}),
        (PhaseRetriever(generator=TINY, max_iter=4, random_state=0), {}),
        (HIOPhaseRetriever(max_iter=20, n_er=5, random_state=0), {}),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, dict) else "",
)
def test_fitted_attributes_do_not_share_memory_with_what_scoring_reads(estimator, fit_params):
    # loss_curve_ and history_ were the arrays the scorers read: normalising the curve
    # for a plot, in place, moved score() from -12.6 to -28.6 dB (as kernel_, mask_,
    # restart_losses_ and HIO's support_ were the fit's own).
    phase = isinstance(estimator, PhaseRetriever | HIOPhaseRetriever)
    x = simulate_diffraction(_image((8, 8))) if phase else _image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(x, **fit_params)
    kept = list(_arrays(estimator._fit_results))
    for name, value in vars(estimator).items():
        if name.endswith("_") and not name.startswith("_"):
            for array in _arrays(value):
                assert not any(np.shares_memory(array, other) for other in kept), name
    if not phase:
        score = estimator.score(x, **fit_params)
        estimator.loss_curve_ /= estimator.loss_curve_[0]
        assert estimator.score(x, **fit_params) == score


def _images_of(value):
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize(
    ("layout", "dtype"),
    [("single", np.float64), ("array", np.float64), ("list", np.float32), ("grey", np.float64)],
)
def test_a_pickle_carries_each_reconstruction_once(layout, dtype):
    # reconstruction_ is a copy of the kept per-image estimates (it must not alias
    # them): pickled beside them, every reconstruction travelled twice (a 64x64 grey
    # fit: 67 kB for 33 kB of estimate).
    batch = np.stack([_image((32, 32, 3), seed=k) for k in range(3)]).astype(dtype)
    X = {
        "single": batch[0],
        "array": batch,
        "list": list(batch),
        "grey": batch[0, ..., 0],
    }[layout]
    den = DIPDenoiser(**COMMON).fit(X)
    estimates = sum(r["estimate"].nbytes for r in den._fit_results)
    data = pickle.dumps(den)
    # Everything but the estimates (parameters, histories, digests) is a few kB.
    assert len(data) < estimates + 8000
    for loaded in (pickle.loads(data), copy.deepcopy(den)):
        # Made again as it was: same layout, dtype and bits, writable, its own copy.
        assert type(loaded.reconstruction_) is type(den.reconstruction_)
        for a, b in zip(
            _images_of(loaded.reconstruction_), _images_of(den.reconstruction_), strict=True
        ):
            assert a.dtype == b.dtype and a.flags.writeable
            np.testing.assert_array_equal(a, b)
        kept = [r["estimate"] for r in loaded._fit_results]
        for a in _images_of(loaded.reconstruction_):
            assert not any(np.shares_memory(a, k) for k in kept)
        assert "_rebuild_reconstruction" not in vars(loaded)
        np.testing.assert_array_equal(np.asarray(loaded.transform()), np.asarray(den.transform()))
        np.testing.assert_array_equal(np.asarray(loaded.transform(X)), np.asarray(den.transform()))
        assert loaded.score(X, X) == den.score(X, X)
        assert loaded.score(X) == den.score(X)
        assert "_last_solve" not in vars(loaded)  # the fitted images were not solved again


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_a_pickle_carries_float32_estimates_as_float32(dtype):
    # A fit's float64 estimate is the float32 network output widened (for data on
    # [0, 1], which is not rescaled): carried as float64, the pickle of a float32 fit
    # weighed twice its reconstruction (a 256x256 RGB fit: 1.58 MB for 0.79 MB).
    x = _image((32, 32, 3))
    x = (x * 255).astype(np.uint8) if dtype == np.uint8 else x.astype(dtype)
    den = DIPDenoiser(**COMMON).fit(x)
    estimate = den._fit_results[0]["estimate"]
    data = pickle.dumps(den)
    assert len(data) < estimate.nbytes // 2 + 8000
    for loaded in (pickle.loads(data), copy.deepcopy(den)):
        # Widened back on loading: the same float64 bits, as scoring reads them.
        kept = loaded._fit_results[0]["estimate"]
        assert kept.dtype == np.float64 and kept.flags.writeable
        assert kept.tobytes() == estimate.tobytes()
        assert loaded.reconstruction_.tobytes() == den.reconstruction_.tobytes()
        assert loaded.score(x) == den.score(x)
    assert den._fit_results[0]["estimate"] is estimate  # the live fit is left as it was


def test_a_pickle_keeps_float64_estimates_that_float32_would_change():
    # Data off [0, 1] is rescaled: its estimate holds more than float32 does, and a
    # pickle must give it back bit for bit.
    x = _image((16, 16, 3)) * 255
    den = DIPDenoiser(**COMMON).fit(x)
    estimate = den._fit_results[0]["estimate"]
    assert not np.array_equal(estimate.astype(np.float32).astype(np.float64), estimate)
    loaded = pickle.loads(pickle.dumps(den))
    assert loaded._fit_results[0]["estimate"].tobytes() == estimate.tobytes()
    assert loaded.score(x) == den.score(x)


def test_a_pickle_keeps_an_edited_or_replaced_reconstruction():
    # Only a reconstruction_ that is still the estimates' copy is left out of a pickle
    # and made again: an edit made since survives a pickle, and scores stay the fit's.
    x = _image((16, 16, 3))
    den = DIPDenoiser(**COMMON).fit(x)
    score = den.score(x, x)
    den.reconstruction_[0, 0, 0] = -0.0
    for edited in (den.reconstruction_.copy(), den.reconstruction_.astype(np.float32)):
        den.reconstruction_ = edited
        loaded = pickle.loads(pickle.dumps(den))
        assert loaded.reconstruction_.dtype == edited.dtype
        np.testing.assert_array_equal(loaded.reconstruction_, edited)
        assert np.signbit(loaded.reconstruction_[0, 0, 0]) == np.signbit(edited[0, 0, 0])
        assert loaded.score(x, x) == score


def test_hio_transform_of_the_fitted_measurement_returns_a_copy():
    obj = np.zeros((8, 8))
    obj[2:6, 3:6] = 1.0
    y = simulate_diffraction(obj)
    hio = HIOPhaseRetriever(max_iter=20, n_er=5, random_state=0).fit(y)
    before = hio.reconstruction_.copy()
    out = hio.transform(y)
    out[:] = 0
    np.testing.assert_array_equal(hio.reconstruction_, before)


def test_a_refit_leaves_no_attribute_of_the_earlier_fit():
    den = DIPDenoiser(noise_model="sparse", **COMMON).fit(_image())
    assert hasattr(den, "sparse_noise_") and hasattr(den, "n_features_in_")
    den.set_params(noise_model=None).fit(_image((16, 16, 3)))
    assert not hasattr(den, "sparse_noise_")
    assert not hasattr(den, "n_features_in_")  # a colour image has no sklearn features
    assert den.reconstruction_.shape == (16, 16, 3)


def test_a_failed_refit_keeps_the_earlier_fit():
    den = DIPDenoiser(**COMMON).fit(_image())
    before = den.reconstruction_.copy()
    with pytest.raises(ValueError):
        den.fit(_image(), _image((8, 8)))  # wrong reference: refused before fitting
    np.testing.assert_array_equal(den.reconstruction_, before)


def test_hio_refit_leaves_no_attribute_of_the_earlier_fit():
    obj = np.zeros((8, 8))
    obj[2:6, 3:6] = 1.0
    y = simulate_diffraction(obj)
    hio = HIOPhaseRetriever(max_iter=10, n_er=2, random_state=0).fit(y)
    assert hio.n_features_in_ == 16
    hio.fit([y, y])
    assert not hasattr(hio, "n_features_in_") and len(hio.reconstruction_) == 2


def test_noise_model_with_batch_size_is_refused_whatever_the_shapes(count_fits):
    for images in ([_image(seed=0), _image(seed=1)], [_image((16, 16)), _image((12, 14))]):
        with pytest.raises(ValueError, match="batch_size > 1 is not available with a noise_model"):
            DIPDenoiser(noise_model="sparse", batch_size=2, **COMMON).fit(images)
    assert count_fits == []


def test_blind_deblurrer_refuses_a_bool_kernel_size():
    with pytest.raises(TypeError, match="kernel_size"):
        BlindDeblurrer(kernel_size=True, **COMMON).fit(_image())


def test_phase_retriever_init_must_be_hio():
    from sklearn.preprocessing import StandardScaler

    from skdip import PhaseRetriever

    y = simulate_diffraction(np.ones((8, 8)))
    with pytest.raises(TypeError, match="init must be 'hio', 'random' or a HIOPhaseRetriever"):
        PhaseRetriever(init=StandardScaler(), **COMMON).fit(y)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"early_stopping": ExponentialMovingVariance(alpha=2.0)}, "alpha"),
        ({"early_stopping": WindowedMovingVariance(window=1)}, "window"),
        ({"regularizer": TotalVariation(weight=-1)}, "weight must be a finite number"),
        ({"loss": lambda prediction: prediction.sum()}, r"loss is called as loss\(prediction"),
        ({"callback": lambda it: None}, r"callback is called as callback\(iteration"),
        ({"regularizer": lambda: 0.0}, r"regularizer is called as regularizer\(image\)"),
    ],
)
def test_bad_settings_of_parts_are_refused_before_any_work(params, match, monkeypatch):
    # Found only when the fit reached them: after PhaseRetriever's HIO start and
    # pretraining, or after the earlier candidates of fit_candidates; a function's
    # wrong form raised Python's bare "<lambda>() takes 1 positional argument".
    from sklearn.utils._param_validation import InvalidParameterError

    est = DIPDenoiser(
        generator=SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1),
        max_iter=2,
        random_state=0,
        **params,
    )
    monkeypatch.setattr(type(est), "_fit_images", lambda *a, **k: pytest.fail("fitted"))
    with pytest.raises((ValueError, TypeError, InvalidParameterError), match=match):
        est.fit(np.random.default_rng(0).random((16, 16)))


def test_builtins_without_a_signature_are_called_as_given():
    # torch.dist and slice are C functions inspect cannot read: the call-form check and
    # the callback's image= keyword leave them alone, and the fit calls them as given.
    est = DIPDenoiser(loss=torch.dist, callback=slice, **COMMON)
    with pytest.warns(UserWarning, match="callback returned a value of type slice"):
        est.fit(_image())
    # The Euclidean distance over 256 pixels, not the default mean square (under 1).
    assert len(est.loss_curve_) == 4 and min(est.loss_curve_) > 1


def test_an_output_average_of_weight_zero_is_refused():
    # w = 0 averaged nothing yet returned the raw iterate one step after the minimum,
    # unlike None; the two are told apart by refusing 0.
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="output_averaging"):
        DIPDenoiser(output_averaging=0.0, max_iter=2).fit(np.random.default_rng(0).random((8, 8)))


# The auditor's network and settings for the tests below (a mutation audit's survivors).
_SMALL = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=1)
_SMALL_FIT = dict(generator=_SMALL, max_iter=3, early_stopping=None, random_state=0, device="cpu")


# A bug the suite once missed (skdip/_validation.py images_digest: the
# image's shape left out of the hash). The same values in another shape hashed alike, so
# transform/score of X.reshape(w, h) returned the fit of X (shape (h, w)), silently.
def test_the_fitted_values_in_another_shape_are_other_data():
    from skdip._validation import images_digest

    x = np.random.default_rng(0).random((8, 12))
    assert images_digest([x[..., None]]) != images_digest([x.reshape(12, 8)[..., None]])
    den = DIPDenoiser(**_SMALL_FIT).fit(x)
    out = den.transform(x.reshape(12, 8))
    assert out.shape == (12, 8)


# ------------------------------------------------------------- dtypes
def _record_fit_dtypes(monkeypatch) -> list:
    """(network dtype, target dtype) of every fit the estimators hand the engine."""
    seen = []

    def recording(original, batched):
        def fit(models, targets, *args, **kwargs):
            for model, target in (
                zip(models, targets, strict=True) if batched else [(models, targets)]
            ):
                weight = next(p for p in model.parameters() if p.is_floating_point())
                seen.append((weight.dtype, target.dtype))
            return original(models, targets, *args, **kwargs)

        return fit

    import skdip.estimators._base as base
    import skdip.estimators._phase as phase

    for module in (base, phase):  # phase: the pretraining's own fits
        for name, batched in (("fit_model", False), ("fit_batch", True)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, recording(getattr(module, name), batched))
    return seen


def _dtype_cases():
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    holes = _image((16, 16, 3))
    holes[3:7, 5:9] = np.nan
    small = dict(COMMON, max_iter=2)
    blob = _image((8, 8), seed=3)
    return [
        (DIPDenoiser(**small), _image()),
        (DIPDenoiser(**small, batch_size=2), [_image(), _image(seed=1)]),
        (DIPInpainter(**small), holes),
        (DIPSuperResolver(scale=2, **small), _image()),
        (DIPDeconvolver(kernel=kernel, **small), _image()),
        (BlindDeblurrer(kernel_size=3, **small), _image()),
        (
            PhaseRetriever(**small, pretrain_iter=2, init=HIOPhaseRetriever(max_iter=4, n_er=2)),
            simulate_diffraction(blob),
        ),
    ]


@pytest.mark.parametrize("estimator, X", _dtype_cases(), ids=lambda v: type(v).__name__)
def test_the_target_is_in_the_networks_dtype_under_a_float64_default(
    estimator, X, float64, monkeypatch
):
    # A bug the suite once missed: under torch.set_default_dtype(torch.float64) the
    # networks were float64 and every target float32. torch 2.13 mixes them in MSE, but
    # torch 2.11 (seen on a GPU machine) fails in MSE's backward, "Found dtype Float but
    # expected Double": every fit under a float64 default crashed there.
    seen = _record_fit_dtypes(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X)
    assert seen, "no fit reached the engine"
    assert set(seen) == {(torch.float64, torch.float64)}


def test_a_grey_reference_stack_read_as_one_image_is_explained():
    # y of shape (N, H, W) is one image with channels last: "y holds 1 images but X holds
    # 3" said nothing of why.
    images = np.stack([_image(seed=k) for k in range(3)])[..., None]  # (3, H, W, 1)
    den = DIPDenoiser(**COMMON).fit(images)
    grey_stack = images[..., 0]
    with pytest.raises(
        ValueError, match=r"holds 3.*pass an \(N, H, W, 1\) array \(y\[\.\.\., None\]\)"
    ):
        den.score(images, grey_stack)
    with pytest.raises(ValueError, match=r"holds 3: a 3-D y is one image"):
        DIPDenoiser(**COMMON).fit(images, grey_stack)
    assert np.isfinite(den.score(images, grey_stack[..., None]))


def test_packed_results_carry_an_array_kept_twice_once():
    # An array two results (or two entries) share is narrowed once: the pickle carries
    # one float32 copy, and loading gives back one float64 array, shared as before.
    from skdip.estimators._base import _packed_results, _unpacked_results

    shared = np.arange(4096, dtype=np.float32).astype(np.float64) / 8
    results = [{"estimate": shared, "n_iter": 3}, {"estimate": shared}]
    packed = _packed_results(results)
    assert packed[0]["estimate"] is packed[1]["estimate"]
    data = pickle.dumps(packed)
    assert len(data) < shared.nbytes // 2 + 1000
    loaded = _unpacked_results(pickle.loads(data))
    assert loaded[0]["estimate"] is loaded[1]["estimate"]
    assert loaded[0]["estimate"].dtype == np.float64
    assert loaded[0]["estimate"].tobytes() == shared.tobytes()
    assert loaded[0]["n_iter"] == 3
    assert results[0]["estimate"] is shared  # the live results are left alone


def test_a_pickle_carries_every_image_of_a_float32_batch_as_float32():
    # Not only the first image's estimate: a batch of three pickles at half its
    # float64 estimates.
    batch = np.stack([_image((16, 16, 3), seed=k) for k in range(3)]).astype(np.float32)
    den = DIPDenoiser(**COMMON).fit(batch)
    estimates = sum(r["estimate"].nbytes for r in den._fit_results)
    data = pickle.dumps(den)
    assert len(data) < estimates // 2 + 8000
    loaded = pickle.loads(data)
    for a, b in zip(loaded._fit_results, den._fit_results, strict=True):
        assert a["estimate"].dtype == np.float64
        assert a["estimate"].tobytes() == b["estimate"].tobytes()
