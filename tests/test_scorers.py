import sys
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError

from skdip import (
    DIPDenoiser,
    DIPInpainter,
    ExponentialMovingVariance,
    SkipNetwork,
    WindowedMovingVariance,
)
from skdip.datasets import load_image
from skdip.estimators._base import _Scaling
from skdip.exceptions import FitInterrupted
from skdip.metrics import (
    SCORER_NAMES,
    NoReferenceScorer,
    ReferenceScorer,
    get_scorer,
    psnr,
    ssim,
)
from skdip.metrics._scorers import no_reference_scores
from skdip.model_selection import FitImagesCV

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)
SIGMA = 0.1


def _den(**kw):
    # Raw iterates: the averaged output of a 12-step fit is still mostly its start.
    params = dict(
        generator=TINY,
        max_iter=12,
        early_stopping=None,
        random_state=0,
        device="cpu",
        output_averaging=None,
    )
    params.update(kw)
    return DIPDenoiser(**params)


def _clean(shape=(16, 16), seed=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
    img = 0.3 + 0.4 * np.sin(3 * xx + seed) * np.cos(2 * yy)
    return img if len(shape) == 2 else np.repeat(img[..., None], shape[2], axis=2)


def _noisy(clean, seed=0):
    rng = np.random.default_rng(seed)
    return clean + SIGMA * rng.standard_normal(clean.shape)


# ------------------------------------------------------------------ registry
def test_registry_names_and_fresh_instances():
    assert {"emv", "wmv", "psnr", "ssim"} <= set(SCORER_NAMES)
    for name in SCORER_NAMES:
        assert callable(get_scorer(name))
    assert get_scorer("emv") is not get_scorer("emv")
    assert get_scorer("emv").rule == "emv" and get_scorer("wmv").rule == "wmv"
    assert get_scorer("psnr", data_range=255).data_range == 255
    assert get_scorer("emv", sigma=0.2).sigma == 0.2


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        get_scorer("nope")
    with pytest.raises(TypeError, match="must be a str"):
        get_scorer(3)
    with pytest.raises(InvalidParameterError):
        get_scorer("emv", sigma=-1.0)
    with pytest.raises(InvalidParameterError):
        get_scorer("psnr", data_range=0)
    with pytest.raises(ValueError, match="Invalid parameter"):
        get_scorer("emv", data_range=1.0)


# -------------------------------------------------------- the discrepancy rule
def test_discrepancy_ranks_a_clean_estimate_above_under_and_overfitted_ones():
    # Direct check of the criterion on hand-made "fits": the clean image leaves
    # a residual of noise power (score near 0 dB); returning the noisy image
    # (noise fitted) or a flat image (structure lost) scores far lower.
    clean = _clean((32, 32, 1))
    noisy = _noisy(clean)
    den = _den()
    history = {"signal": np.array([1e-4]), "loss": np.array([0.0])}

    def score(estimate, criterion="discrepancy"):
        result = {"estimate": estimate, "scaling": _Scaling(), "history": history, "best_iter": 0}
        return no_reference_scores(den, [noisy], [result], sigma=SIGMA, criterion=criterion)[0]

    good = score(clean)
    overfit = score(noisy + 0.2 * (clean - noisy))
    underfit = score(np.full_like(clean, clean.mean()))
    assert abs(good) < 0.5
    assert overfit < good - 3 and underfit < good - 3
    # The default adds the whiteness test, which keeps this order (on 32x32
    # pixels its own sampling spread is about half a dB).
    good = score(clean, "auto")
    assert score(noisy + 0.2 * (clean - noisy), "auto") < good - 3
    assert score(np.full_like(clean, clean.mean()), "auto") < good - 3


def test_discrepancy_value_is_the_documented_formula():
    noisy = _noisy(_clean())
    den = _den().fit(noisy)
    residual = np.mean((den.reconstruction_ - noisy) ** 2)
    expected = -abs(10 * np.log10(residual / 0.07**2))
    discrepancy = get_scorer("emv", sigma=0.07, criterion="discrepancy")
    assert discrepancy(den, noisy) == pytest.approx(expected, rel=1e-9)
    assert get_scorer("discrepancy", sigma=0.07)(den, noisy) == pytest.approx(expected, rel=1e-9)
    # The estimated noise level is close to the true one on a smooth image.
    estimated = get_scorer("emv")(den, noisy)
    with_truth = get_scorer("emv", sigma=SIGMA)(den, noisy)
    assert estimated == pytest.approx(with_truth, abs=1.5)


def test_sigma_is_on_the_callers_intensity_scale():
    noisy = _noisy(_clean())
    # The same affine map to [0, 1] for both, so both solve the same problem.
    den = _den(rescale=True).fit(noisy)
    den255 = _den(rescale=True).fit(noisy * 255.0)
    a = get_scorer("emv", sigma=SIGMA)(den, noisy)
    b = get_scorer("emv", sigma=SIGMA * 255.0)(den255, noisy * 255.0)
    assert a == pytest.approx(b, abs=1e-6)


def test_reference_scores_hold_for_data_near_the_float64_limit():
    # The PSNR's data_range**2 overflowed (OverflowError) for data near 1e200.
    clean = _clean()
    noisy = _noisy(clean)
    den = _den(rescale=True).fit(noisy)
    huge = _den(rescale=True).fit(noisy * 1e200)
    # Read on 1 for [0, 1] data and on the reference's peak above 1.
    peak = float(np.abs(clean).max())
    assert huge.score(noisy * 1e200, clean * 1e200) == pytest.approx(
        den.score(noisy, clean) + 20 * np.log10(peak)
    )
    for name in ("psnr", "ssim"):
        big = get_scorer(name, data_range=None)(huge, noisy * 1e200, clean * 1e200)
        assert big == pytest.approx(get_scorer(name, data_range=None)(den, noisy, clean))


def test_a_reference_on_another_scale_than_x_is_refused():
    noisy = _noisy(_clean())
    uint8 = (noisy * 255).astype(np.uint8)
    den = _den().fit(uint8)  # read on [0, 1]
    one_side = "X is uint8, read on .0, 1. .divided by 255., and y is not: .* different scales"
    with pytest.raises(ValueError, match=one_side):
        den.score(uint8, _clean() * 255)  # was -42 dB, silently
    # The PSNR recorded during a fit too, before any step (history_["psnr"] was -45.7).
    with pytest.raises(ValueError, match=one_side):
        _den().fit(uint8, _clean() * 255)
    # Float data on two scales: the range check.
    den = _den().fit(noisy)
    with pytest.raises(ValueError, match="more than 10 times X.s range"):
        den.score(noisy, _clean() * 255)


def test_a_uint8_reference_for_float_data_on_0_255_is_refused():
    # Noise added to a uint8 picture as floats, scored against the uint8 picture: the
    # reference was read on [0, 1] and the PSNR came out 15 dB low, silently.
    clean = (_clean() * 255).astype(np.uint8)
    noisy = clean + np.random.default_rng(0).normal(0, 10, clean.shape)
    den = _den(rescale=True).fit(noisy)
    message = "y is uint8, read on .0, 1. .divided by 255., and X is not: .* different scales"
    scorers = [get_scorer("psnr", data_range=None), get_scorer("ssim")]
    for score in [den.score, *(lambda X, y, s=s: s(den, X, y) for s in scorers)]:
        with pytest.raises(ValueError, match=message):
            score(noisy, clean)
    with pytest.raises(ValueError, match=message):
        _den(rescale=True).fit(noisy, clean)
    # Both on one scale: scored.
    assert np.isfinite(den.score(noisy, clean.astype(float)))
    assert np.isfinite(_den().fit(clean, clean / 255.0).score(clean, clean / 255.0))


def test_estimator_score_without_reference_is_the_default_no_reference_scorer():
    noisy = _noisy(_clean())
    den = _den().fit(noisy)
    value = den.score(noisy)
    assert value == pytest.approx(get_scorer("no_reference")(den, noisy))
    assert value == pytest.approx(get_scorer("emv")(den, noisy))
    assert value <= 0.0
    # A 1-D target (labels through a Pipeline) is ignored like None.
    assert den.score(noisy, np.zeros(3)) == pytest.approx(value)


def test_variance_criterion_is_the_running_variance_in_db():
    noisy = _noisy(_clean())
    den = _den().fit(noisy)
    v = den.history_["signal"][den.best_iter_]
    expected = 10 * np.log10(SIGMA**2 / v)
    assert get_scorer("emv_variance", sigma=SIGMA)(den, noisy) == pytest.approx(expected)


def test_variance_criterion_needs_a_recorded_signal_but_discrepancy_does_not():
    noisy = _noisy(_clean())
    rule = ExponentialMovingVariance(warmup=50, patience=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        den = _den(early_stopping=rule, max_iter=10).fit(noisy)
    with pytest.raises(ValueError, match="no running-variance signal"):
        get_scorer("emv_variance")(den, noisy)
    assert np.isfinite(get_scorer("emv")(den, noisy))


# ------------------------------------------------------------------ rules
def test_rule_must_match_the_estimators_stopping_rule():
    noisy = _noisy(_clean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        wmv = _den(early_stopping=WindowedMovingVariance(window=4, patience=50)).fit(noisy)
    assert np.isfinite(get_scorer("wmv")(wmv, noisy))
    assert np.isfinite(get_scorer("discrepancy")(wmv, noisy))
    with pytest.raises(ValueError, match="picked by EMV"):
        get_scorer("emv")(wmv, noisy)
    # No rule: a passive EMV is recorded, so the EMV scorers apply.
    plain = _den().fit(noisy)
    assert np.isfinite(get_scorer("emv")(plain, noisy))
    with pytest.raises(ValueError, match="picked by WMV"):
        get_scorer("wmv")(plain, noisy)


def test_not_a_dip_estimator_is_a_type_error():
    with pytest.raises(TypeError, match="need a fitted skdip DIP estimator"):
        get_scorer("emv")(FunctionTransformer(), np.zeros((8, 8)))


# ------------------------------------------------------------------ caching
def test_scoring_the_fitted_images_does_not_solve_again(count_fits):
    images = [_noisy(_clean(seed=s), seed=s) for s in range(2)]
    den = _den().fit(images)
    assert len(count_fits) == 2
    for name in ("emv", "discrepancy", "no_reference", "emv_variance"):
        get_scorer(name)(den, [im.copy() for im in images])
    get_scorer("psnr")(den, [im.copy() for im in images], [_clean(seed=s) for s in range(2)])
    assert len(count_fits) == 2
    # New data is solved (and leaves the fitted state alone).
    fitted = den.reconstruction_[0].copy()
    get_scorer("emv")(den, images[0] + 0.01)
    assert len(count_fits) == 3
    np.testing.assert_array_equal(den.reconstruction_[0], fitted)


# --------------------------------------------------------- full reference
def test_reference_scorers_match_the_metrics():
    clean = _clean((16, 16, 3))
    noisy = np.clip(_noisy(clean), 0, 1)
    den = _den().fit(noisy)
    assert get_scorer("psnr")(den, noisy, clean) == pytest.approx(psnr(clean, den.reconstruction_))
    assert get_scorer("ssim")(den, noisy, clean) == pytest.approx(ssim(clean, den.reconstruction_))
    # data_range enters the PSNR as 20 log10(range).
    assert ReferenceScorer("psnr", data_range=2.0)(den, noisy, clean) == pytest.approx(
        psnr(clean, den.reconstruction_) + 20 * np.log10(2.0)
    )
    span = np.ptp(clean)
    assert ReferenceScorer("psnr", data_range=None)(den, noisy, clean) == pytest.approx(
        psnr(clean, den.reconstruction_, data_range=span)
    )


def test_reference_scorer_errors():
    noisy = _noisy(_clean())
    den = _den().fit(noisy)
    with pytest.raises(ValueError, match="needs clean reference images"):
        get_scorer("psnr")(den, noisy)
    with pytest.raises(ValueError, match="needs clean reference images"):
        get_scorer("psnr")(den, noisy, np.array([0, 1]))
    with pytest.raises(ValueError, match="y holds 2 images"):
        get_scorer("psnr")(den, noisy, [noisy, noisy])
    with pytest.raises(ValueError, match="y has shape"):
        get_scorer("psnr")(den, noisy, np.zeros((16, 17)))
    with pytest.raises(InvalidParameterError):
        ReferenceScorer("mae")(den, noisy, noisy)
    # A row of labels per image (as a Pipeline's fit reads it) was taken for one image
    # a few pixels high: "y holds 1 images but X holds 2".
    batch = np.stack([noisy, noisy])[..., None]
    den2 = _den().fit(batch)
    for labels in (np.array([[0], [1]]), np.zeros((2, 5))):
        with pytest.raises(ValueError, match="needs clean reference images .* labels"):
            get_scorer("psnr")(den2, batch, labels)


def test_a_reference_scorer_refuses_a_pipeline_whose_later_steps_it_would_not_see():
    # psnr of a Pipeline scored its DIP step's reconstruction: a step after it scaling the
    # output by 0.2 scored the same 17.52 dB as by 1.0, so a search over it tied.
    noisy = _noisy(_clean())
    clean = _clean()
    scaled = make_pipeline(_den(), FunctionTransformer(np.multiply, kw_args={"x2": 0.2}))
    scaled.fit(noisy)
    for name in ("psnr", "ssim"):
        with pytest.raises(ValueError, match=r"\['functiontransformer'\] come after it"):
            get_scorer(name)(scaled, noisy, clean)
    nested = make_pipeline(make_pipeline(_den(), FunctionTransformer(np.sqrt)), "passthrough")
    with pytest.raises(ValueError, match=r"\['functiontransformer'\] come after it"):
        get_scorer("psnr")(nested.fit(noisy), noisy, clean)
    # Steps that hand the output on unchanged, or come before, are fine; so is scoring
    # the pipeline up to its DIP step, and the no-reference scorers (they judge the fit,
    # and say that the later steps do not move their score).
    expected = get_scorer("psnr")(scaled[0], noisy, clean)
    plain = make_pipeline(FunctionTransformer(), _den(), FunctionTransformer(), "passthrough")
    assert get_scorer("psnr")(plain.fit(noisy), noisy, clean) == expected
    assert get_scorer("psnr")(scaled[:-1], noisy, clean) == expected
    with pytest.warns(UserWarning, match=r"\['functiontransformer'\] after it do not change"):
        assert np.isfinite(get_scorer("emv")(scaled, noisy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(get_scorer("emv")(plain, noisy))
        skipped = Pipeline([("dip", _den()), ("skipped", None)]).fit(noisy)
        assert np.isfinite(get_scorer("emv")(skipped, noisy))


def test_reference_scorer_refuses_data_ranges_that_do_not_fit_the_images():
    clean = _clean((16, 16))
    noisy8 = np.round(np.clip(_noisy(clean), 0, 1) * 255).astype(np.uint8)
    clean8 = np.round(clean * 255).astype(np.uint8)
    den = _den().fit(noisy8)
    right = get_scorer("psnr")(den, noisy8, clean8)  # uint8 is read on [0, 1]
    assert right == pytest.approx(psnr(clean8, den.reconstruction_))
    # 255 would report 48 dB too much: uint8 images are compared on [0, 1].
    with pytest.raises(ValueError, match="uint8 images are read on"):
        get_scorer("psnr", data_range=255)(den, noisy8, clean8)
    # 16-bit counts with the default range of 1 gave -86 dB: refused, the range asked.
    counts = np.round(clean * 60000).astype(np.uint16)
    fitted = _den().fit(counts + 0.0)
    with pytest.raises(ValueError, match="more than data_range=1"):
        get_scorer("psnr")(fitted, counts + 0.0, counts)
    assert np.isfinite(get_scorer("psnr", data_range=65535)(fitted, counts + 0.0, counts))


def test_a_fit_cut_short_by_ctrl_c_is_not_scored():
    # A search would otherwise rank the truncated fit among complete ones.
    def ctrl_c(it, loss, estimate):
        if it == 3:
            raise KeyboardInterrupt

    clean = _clean()
    noisy = _noisy(clean)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        den = _den(callback=ctrl_c).fit(noisy)
    assert den.stopped_by_ == "interrupted"
    for score in (
        lambda: den.score(noisy),
        lambda: den.score(noisy, clean),
        lambda: get_scorer("emv")(den, noisy),
        lambda: get_scorer("psnr")(den, noisy, clean),
    ):
        with pytest.raises(FitInterrupted, match="interrupted") as info:
            score()
        # The attribute AverageOfBest fills is declared: None here, not missing.
        assert info.value.estimators is None
    assert np.isfinite(_den().fit(noisy).score(noisy))  # a complete fit scores


@pytest.mark.parametrize("scoring", [None, "emv"])
def test_one_ctrl_c_stops_a_search(ctrl_c_at, scoring):
    # The estimator kept its fit, the search scored it as failed and went on to the
    # next candidate: a search needed one Ctrl-C per fit.
    from sklearn.model_selection import GridSearchCV

    callback = ctrl_c_at(3)
    noisy = _noisy(_clean())
    scorer = None if scoring is None else get_scorer(scoring)
    search = GridSearchCV(
        _den(callback=callback), {"lr": [0.01, 0.02, 0.03]}, cv=FitImagesCV(), scoring=scorer
    )
    with pytest.warns(RuntimeWarning, match="interrupted"):
        with pytest.raises(FitInterrupted):
            search.fit(noisy)
    assert len(callback.calls) == 3  # no later candidate ran


def test_one_ctrl_c_stops_a_kfold_search_too(ctrl_c_at):
    # The test images are solved anew, so the cut training fit was never scored and
    # the search ran every candidate and the refit.
    from sklearn.model_selection import KFold

    callback = ctrl_c_at(3)
    X = np.stack([_noisy(_clean(), seed=k) for k in range(4)])[..., None]
    search = GridSearchCV(_den(callback=callback), {"lr": [0.01, 0.02]}, cv=KFold(2))
    with pytest.warns(RuntimeWarning, match="interrupted"):
        with pytest.raises(FitInterrupted, match="on these or other images"):
            search.fit(X)
    assert len(callback.calls) == 3


def test_scoring_a_cut_fit_inside_a_fit_is_an_error_not_a_ctrl_c(ctrl_c_at):
    # A FitInterrupted raised by the caller's code during a fit was taken for a
    # Ctrl-C: swallowed, the fit "interrupted" and the next images skipped.
    noisy = _noisy(_clean())
    with pytest.warns(RuntimeWarning, match="interrupted"):
        cut = _den(callback=ctrl_c_at(2)).fit(noisy)

    def scores_the_cut_fit(it, loss, estimate):
        cut.score(noisy)

    with pytest.raises(FitInterrupted):
        _den(callback=scores_the_cut_fit).fit(np.stack([noisy, noisy])[..., None])


def test_a_fit_that_accepted_no_step_is_not_scored():
    def nan_loss(prediction, target):
        return prediction.mean() * float("nan")

    noisy = _noisy(_clean())
    with pytest.warns(RuntimeWarning, match="no step could be taken"):
        den = _den(loss=nan_loss).fit(noisy)
    assert den.n_iter_ == 0
    with pytest.raises(ValueError, match="accepted no step"):
        den.score(noisy)
    with pytest.raises(ValueError, match="accepted no step"):
        get_scorer("discrepancy")(den, noisy)


# ------------------------------------------------------- use in a search
def test_multi_metric_search_with_refit_by_name(count_fits):
    clean = [_clean(seed=s) for s in range(2)]
    images = [_noisy(c, seed=s) for s, c in enumerate(clean)]
    scoring = {"emv": get_scorer("emv"), "psnr": get_scorer("psnr")}
    search = GridSearchCV(
        _den(), {"lr": [0.01, 0.03]}, scoring=scoring, refit="emv", cv=FitImagesCV()
    )
    search.fit(images, clean)
    res = search.cv_results_
    assert np.isfinite(res["mean_test_emv"]).all() and np.isfinite(res["mean_test_psnr"]).all()
    assert search.best_index_ == int(np.argmax(res["mean_test_emv"]))
    assert search.best_params_ == res["params"][search.best_index_]
    # 2 candidates x 2 images, scored by both metrics without solving again; refit: 2.
    assert len(count_fits) == 6
    assert search.score(images) == pytest.approx(get_scorer("emv")(search.best_estimator_, images))


def test_scorer_finds_the_dip_step_of_a_pipeline():
    noisy = _noisy(_clean())
    pipe = make_pipeline(FunctionTransformer(lambda x: x * 0.5 + 0.25), _den())
    pipe.fit(noisy)
    dip = pipe[-1]
    assert get_scorer("emv")(pipe, noisy) == pytest.approx(
        get_scorer("emv")(dip, noisy * 0.5 + 0.25)
    )
    assert isinstance(get_scorer("emv"), NoReferenceScorer)
    # Nested: the DIP step inside an inner Pipeline, after an outer step.
    nested = make_pipeline(
        FunctionTransformer(lambda x: x * 0.5),
        make_pipeline(FunctionTransformer(lambda x: x + 0.25), _den()),
        FunctionTransformer(),
    ).fit(noisy)
    assert get_scorer("emv")(nested, noisy) == pytest.approx(
        get_scorer("emv")(nested[1][-1], noisy * 0.5 + 0.25)
    )


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_noise_level_with_missing_pixels_is_that_of_the_observed_pixels(name):
    # Inpainting scores estimate the noise from the observed pixels. The median over
    # every whole 2x2 block read image texture as noise: with 30% missing at sigma 0.01
    # it read the power 2.3 (camera) and 5.9 times (astronaut) too high, so the
    # no-reference score rewarded fits that copied noise. The weak-texture patches
    # serve as on whole images, on the observed pairs and blocks.
    from skdip.metrics._noise_level import estimate_noise_var
    from skdip.metrics._scorers import _noise_var

    clean = load_image(name, size=64, as_gray=True)[..., None]
    rng = np.random.default_rng(0)
    noisy = clean + 0.01 * rng.standard_normal(clean.shape)
    observed = rng.random(clean.shape) >= 0.3
    actual = np.mean((noisy - clean)[observed] ** 2)
    holed = np.where(observed, noisy, np.nan)
    assert estimate_noise_var(holed) == pytest.approx(actual, rel=0.2)
    # What the scores read: the same estimate.
    assert _noise_var(holed, None, 1.0) == estimate_noise_var(holed)
    # A few random pixels missing barely move the estimate of the whole image.
    few = np.where(rng.random(clean.shape) >= 0.02, noisy, np.nan)
    assert estimate_noise_var(few) == pytest.approx(estimate_noise_var(noisy), rel=0.1)


def test_noise_level_with_too_few_observed_pixels_is_refused():
    from skdip.metrics._noise_level import estimate_noise_var

    with pytest.raises(ValueError, match="too few observed pixels"):
        estimate_noise_var(np.full((8, 8, 1), np.nan))
    with pytest.raises(ValueError, match="too few observed pixels"):
        estimate_noise_var(np.full((32, 32, 1), np.nan))
    # One channel missing entirely is refused too, not averaged with the others.
    both = _noisy(_clean((32, 32, 2)))
    both[..., 1] = np.nan
    with pytest.raises(ValueError, match="too few observed pixels"):
        estimate_noise_var(both)
    # Scattered pixels: the 2x2 blocks stand in for patches, within their limits.
    sparse = _noisy(_clean((64, 64, 1)))
    sparse[np.random.default_rng(1).random(sparse.shape) < 0.6] = np.nan
    assert np.sqrt(estimate_noise_var(sparse)) == pytest.approx(SIGMA, rel=0.3)


def test_noise_level_with_missing_pixels_and_a_flat_border():
    # A constant border holds no noise, with pixels missing too: the estimate is the
    # noise power over the observed pixels (the blocks' median read 3% of it).
    from skdip.metrics._noise_level import estimate_noise_var

    clean = np.pad(0.2 + 0.6 * load_image("camera", size=48), 8, constant_values=0.3)
    rng = np.random.default_rng(2)
    noisy = clean + 0.05 * rng.standard_normal(clean.shape)
    noisy[:8], noisy[-8:], noisy[:, :8], noisy[:, -8:] = 0.3, 0.3, 0.3, 0.3
    observed = rng.random(clean.shape) >= 0.3
    actual = np.mean((noisy - clean)[observed] ** 2)
    holed = np.where(observed, noisy, np.nan)[..., None]
    assert estimate_noise_var(holed) == pytest.approx(actual, rel=0.15)


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_noise_level_of_clipped_data_with_missing_pixels(sigma):
    # Clipped to [0, 1] with 30% of the pixels missing: the clip model measures the power
    # over the observed pixels (over all, it read 0.7 of it), and the zero-filled holes
    # are no clipped pixels (as such, they read 1.2 to 1.3 times it).
    from skdip.metrics._noise_level import estimate_noise_var

    clean = load_image("coins", size=64, as_gray=True)[..., None]
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + sigma * rng.standard_normal(clean.shape), 0, 1)
    observed = rng.random(clean.shape) >= 0.3
    actual = np.mean((noisy - clean)[observed] ** 2)
    assert estimate_noise_var(np.where(observed, noisy, np.nan)) == pytest.approx(actual, rel=0.1)
    # A ramp clipped at 0.95 and 40% missing: the patches away from the clip are chosen
    # by their mean over their observed pixels (over all 25, 0.7 of the power).
    ramp = 0.3 + 0.7 * np.mgrid[:64, :64][1] / 63
    noisy = np.clip(ramp + 0.1 * rng.standard_normal(ramp.shape), 0.3, 0.95)
    observed = rng.random(ramp.shape) >= 0.4
    actual = np.mean((noisy - ramp)[observed] ** 2)
    holed = np.where(observed, noisy, np.nan)[..., None]
    assert estimate_noise_var(holed) == pytest.approx(actual, rel=0.1)


def test_clipped_noise_power_with_missing_pixels_takes_the_observed_local_mean():
    # The clip's effect on a pixel follows the 5x5 local mean of the observed pixels;
    # with the zero-filled holes in it, half of them missing took a clean 0.1 for 0.05
    # and read 0.73 of the power.
    from skdip.metrics._noise_level import _clipped_noise_power

    rng = np.random.default_rng(0)
    clean = np.full((48, 48), 0.1)
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    observed = rng.random(clean.shape) >= 0.5
    actual = np.mean((noisy - clean)[observed] ** 2)
    channel = np.where(observed, noisy, 0.0)
    power = _clipped_noise_power(channel, 0.01, 0.0, 1.0, np.zeros(clean.shape, bool), observed)
    assert power == pytest.approx(actual, rel=0.05)


@pytest.mark.parametrize("name", ["coins", "camera"])
def test_noise_level_with_most_pixels_missing(name):
    # 60% missing: a patch takes part with 16 observed pairs of its 40 and 2 whole
    # 2x2 blocks. With 8 pairs, patches whose noise happened to be low passed as weak
    # texture (1.5 and 1.8 times the power); with 30, too few took part (4.2, 3.5).
    from skdip.metrics._noise_level import estimate_noise_var

    clean = load_image(name, size=64, as_gray=True)[..., None]
    rng = np.random.default_rng(0)
    noisy = clean + 3 / 255 * rng.standard_normal(clean.shape)
    observed = rng.random(clean.shape) >= 0.6
    actual = np.mean((noisy - clean)[observed] ** 2)
    assert estimate_noise_var(np.where(observed, noisy, np.nan)) == pytest.approx(actual, rel=0.25)


def test_flat_area_with_missing_pixels_needs_twelve_agreeing_pairs():
    # A patch is of one value when all its observed neighbouring pairs agree and there
    # are at least 12 of them: checked pixel by pixel on a half-constant channel with
    # 60% of its pixels missing (its patches hold 0 to 22 observed pairs).
    from skdip.metrics._noise_level import _PATCH, _flat_area, _ObservedPairs

    rng = np.random.default_rng(5)
    channel = rng.standard_normal((24, 24))
    channel[:, :14] = 0.3
    observed = rng.random(channel.shape) >= 0.6
    filled = np.where(observed, channel, 0.0)
    expected = np.zeros(channel.shape, bool)
    counts = []
    for i in range(24 - _PATCH + 1):
        for j in range(24 - _PATCH + 1):
            pairs, agree = 0, True
            for a in range(i, i + _PATCH):
                for b in range(j, j + _PATCH):
                    for c, d in ((a, b + 1), (a + 1, b)):
                        if c < i + _PATCH and d < j + _PATCH and observed[a, b] and observed[c, d]:
                            pairs += 1
                            agree &= bool(channel[a, b] == channel[c, d])
            counts.append(pairs)
            if agree and pairs >= 12:
                expected[i : i + _PATCH, j : j + _PATCH] = True
    assert min(counts) < 12 < max(counts) and expected.any() and not expected.all()
    flat = _flat_area(filled, _ObservedPairs(observed))
    np.testing.assert_array_equal(flat, expected)
    # No observed pair at all (a checkerboard) shows no flat area, even on a constant.
    board = (np.add.outer(np.arange(24), np.arange(24)) % 2).astype(bool)
    assert not _flat_area(np.where(board, 0.3, 0.0), _ObservedPairs(board)).any()


def test_texture_threshold_with_missing_pixels_passes_99_percent_of_noise():
    # The weak-texture test compares a patch's texture with the 0.99 quantile of
    # noise's; with fewer observed pairs that quantile is higher.
    from skdip.metrics._noise_level import (
        _ObservedPairs,
        _texture_energy,
        _texture_threshold,
    )

    rng = np.random.default_rng(3)
    for missing in (0.0, 0.2, 0.4):
        noise = rng.standard_normal((256, 256))
        observed = rng.random(noise.shape) >= missing
        pairs = _ObservedPairs(observed)
        energy = _texture_energy(np.where(observed, noise, 0.0), pairs)
        threshold = np.broadcast_to(_texture_threshold(pairs), energy.shape)
        passed = energy[pairs.measurable] <= threshold[pairs.measurable]
        assert 0.975 <= np.mean(passed) <= 0.997


def test_inpainter_score_names_the_scorer_that_takes_the_noise_level():
    # score() has no sigma: the message must say where to give one, and that works.
    rng = np.random.default_rng(1)
    X = _noisy(_clean((12, 12)))
    mask = rng.random((12, 12)) > 0.5
    inp = DIPInpainter(generator="skip-small", max_iter=3, random_state=0, device="cpu")
    inp.fit(X, mask=mask)
    with pytest.raises(ValueError, match=r"get_scorer\('emv', sigma=\.\.\.\)\(estimator, X\)"):
        inp.score(X)
    assert np.isfinite(get_scorer("emv", sigma=SIGMA)(inp, X))


def test_noise_level_of_white_noise_on_an_image():
    from skdip.metrics._noise_level import _wavelet_noise_sigma, estimate_noise_var
    from skdip.metrics._scorers import _noise_var

    camera = load_image("camera", size=96)
    # Image content barely reaches the finest diagonal sub-band (the clean image reads as
    # sigma 0.004), so the estimate is close from moderate noise levels on.
    assert _wavelet_noise_sigma(camera) < 0.01
    for sigma in (0.02, 0.05, 0.1):
        # Not clipped, so the power in the data is sigma squared up to the draw.
        noisy = camera + sigma * np.random.default_rng(1).standard_normal(camera.shape)
        actual = np.mean((noisy - camera) ** 2)
        if sigma >= 0.05:  # lower, the camera's texture adds to the wavelet estimate
            assert _wavelet_noise_sigma(noisy) == pytest.approx(sigma, rel=0.1)
        assert _noise_var(noisy[..., None], None, 1.0) == pytest.approx(actual, rel=0.1)
    # Channels are estimated one by one and their variances averaged.
    pair = np.stack(
        [
            camera + 0.02 * np.random.default_rng(2).standard_normal(camera.shape),
            camera + 0.06 * np.random.default_rng(3).standard_normal(camera.shape),
        ],
        -1,
    )
    both = [estimate_noise_var(pair[..., c : c + 1]) for c in range(2)]
    assert _noise_var(pair, None, 1.0) == pytest.approx(np.mean(both))
    assert np.sqrt(both) == pytest.approx([0.02, 0.06], rel=0.1)
    # A constant image has no noise (rounding only), and the variance is floored, not NaN.
    assert _wavelet_noise_sigma(np.full((8, 8), 0.3)) < 1e-12
    assert _wavelet_noise_sigma(np.zeros((8, 8))) == 0.0
    for shape in [(8, 8, 1), (64, 64, 1), (3, 3, 1)]:
        assert 0 < _noise_var(np.full(shape, 0.3), None, 1.0) <= 1e-12


def test_a_noise_free_observation_is_told_to_be_scored_otherwise():
    # A constant or piecewise-constant X has no noise to estimate: the level is floored at
    # 1e-12 and the score fell to about -100 dB (32x32, 50 steps: -102.2 on a constant
    # 0.5, -116.4 on 8x8 blocks), outweighing every noisy image in a search's mean score,
    # in silence.
    blocks = np.kron(np.random.default_rng(0).random((2, 2)), np.ones((8, 8)))
    for X in (np.full((16, 16), 0.5), blocks):
        fitted = _den(max_iter=4).fit(X)
        with pytest.warns(UserWarning, match="X shows no noise"):
            score = get_scorer("emv")(fitted, X)
        assert score < -80
        # A given noise level is no estimate (only its distance from the floor is told),
        # even one so small that it is floored as well.
        for sigma in (0.01, 1e-8):
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                get_scorer("emv", sigma=sigma)(fitted, X)
            assert not any("shows no noise" in str(w.message) for w in record)
    # Noisy images, and the fine texture of a clean photograph (5.7e-7), are not told;
    # nor is noise just above the floor (a variance of about 5e-12).
    camera = load_image("camera", size=32)
    noisy = camera + 0.01 * np.random.default_rng(1).standard_normal(camera.shape)
    faint = blocks + 2e-6 * np.random.default_rng(2).standard_normal(blocks.shape)
    for X in (camera, noisy, faint):
        fitted = _den(max_iter=4).fit(X)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            get_scorer("emv")(fitted, X)


def test_wavelet_noise_level_is_scikit_images_estimate():
    # Only where PyWavelets is installed (it is not an skdip dependency).
    pytest.importorskip("pywt")
    from skimage.restoration import estimate_sigma

    from skdip.metrics._noise_level import _wavelet_noise_sigma

    rng = np.random.default_rng(0)
    for shape in [(2, 2), (5, 4), (16, 16), (17, 23), (64, 64)]:
        image = rng.random(shape)
        assert _wavelet_noise_sigma(image) == pytest.approx(estimate_sigma(image), rel=1e-12)


def test_texture_threshold_is_the_quantile_of_white_noise():
    from skdip.metrics._noise_level import _NOISE_TEXTURE_QUANTILE, _texture_energy

    noise = np.random.default_rng(7).standard_normal((512, 512))
    energy = _texture_energy(noise)
    assert energy.shape == (508, 508)
    assert np.mean(energy) == pytest.approx(80, rel=0.01)
    assert np.quantile(energy, 0.99) == pytest.approx(_NOISE_TEXTURE_QUANTILE, rel=0.02)
    # A window sum is the sum over the window, at its top-left corner.
    from skdip.metrics._noise_level import _window_sums

    values = np.arange(30.0).reshape(5, 6)
    assert _window_sums(values, 2, 3)[1, 2] == values[1:3, 2:5].sum()


def _flat_and_textured(sigma, size=64, seed=0):
    """A flat left half and a fine, strong texture on the right, noise added."""
    rng = np.random.default_rng(seed)
    clean = np.full((size, size), 0.5)
    clean[:, size // 2 :] += 0.15 * rng.choice([-1.0, 1.0], (size, size - size // 2))
    return clean, clean + sigma * rng.standard_normal(clean.shape)


@pytest.mark.parametrize("sigma", [0.01, 0.02, 0.04])
def test_noise_level_is_measured_on_weak_texture_patches(sigma):
    from skdip.metrics._noise_level import _wavelet_noise_sigma, estimate_noise_var

    clean, noisy = _flat_and_textured(sigma)
    actual = np.mean((noisy - clean) ** 2)
    # Half the finest details hold texture: their median reads it as noise ...
    assert _wavelet_noise_sigma(noisy) ** 2 > 1.5 * actual
    # ... the flat patches measure the noise alone.
    assert estimate_noise_var(noisy[..., None]) == pytest.approx(actual, rel=0.1)


def _half_black(sigma, size=64, seed=0):
    """A black left half and a gentle ramp on the right, noise added, clipped to [0, 1]."""
    clean = np.zeros((size, size))
    clean[:, size // 2 :] = np.linspace(0.3, 0.7, size)[:, None]
    noisy = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
    return clean, np.clip(noisy, 0, 1)


@pytest.mark.parametrize("sigma", [0.06, 0.1, 0.2])
def test_noise_level_of_clipped_noise_is_the_power_left_in_the_data(sigma):
    from skdip.metrics._noise_level import _wavelet_noise_sigma, estimate_noise_var

    clean, noisy = _half_black(sigma)
    # The clip keeps about half the noise power in the black half: the power in the data
    # lies well below sigma squared, and every detail's median reads less still.
    actual = np.mean((noisy - clean) ** 2)
    assert actual < 0.8 * sigma**2
    assert _wavelet_noise_sigma(noisy) ** 2 < 0.8 * actual
    # Measured on the ramp, then reduced by the model of the clip.
    assert estimate_noise_var(noisy[..., None]) == pytest.approx(actual, rel=0.1)


@pytest.mark.parametrize("border", [0.0, 0.3])
def test_a_noise_free_border_counts_as_noise_free(border):
    # Padding, or a registered frame's fill: its flat patches always passed as "weak
    # texture" and took the level to the 1e-12 floor, so the no-reference score
    # rewarded the fit that copied the most noise. The estimate is the noise power in
    # the data, as for clipped noise: the border holds none.
    from skdip.metrics._noise_level import estimate_noise_var

    clean = 0.2 + 0.6 * load_image("camera", size=48)
    noisy = clean + 0.05 * np.random.default_rng(0).standard_normal(clean.shape)
    for width, tolerance in ((2, 0.25), (4, 0.25), (8, 0.1), (24, 0.1)):  # 24: 3/4 border
        framed = np.pad(noisy, width, constant_values=border)
        actual = np.mean((framed - np.pad(clean, width, constant_values=border)) ** 2)
        assert estimate_noise_var(framed[..., None]) == pytest.approx(actual, rel=tolerance)
    # A constant image has no noise to measure: the floor, not an error.
    assert estimate_noise_var(np.full((32, 32, 1), border)) == 1e-12


def test_extremes_shared_by_chance_barely_move_the_noise_level():
    # Quantised data often repeats its extreme values without any clip: the clip model
    # then treats the few pixels near them as clipped, which must cost next to nothing.
    from skdip.metrics._noise_level import _clipped_pixels, estimate_noise_var

    clean = 0.2 + 0.6 * load_image("camera", size=96)
    noisy = clean + 0.02 * np.random.default_rng(4).standard_normal(clean.shape)
    shared = noisy.copy()
    shared[np.unravel_index(np.argsort(noisy, axis=None)[:3], noisy.shape)] = noisy.min()
    assert _clipped_pixels(shared).sum() == 3 and not _clipped_pixels(noisy).any()
    assert estimate_noise_var(shared[..., None]) == pytest.approx(
        estimate_noise_var(noisy[..., None]), rel=0.02
    )


def test_noise_level_is_estimated_once_per_content(monkeypatch):
    import skdip.metrics._noise_level as noise_level

    calls = []
    original = noise_level._channel_noise_var
    monkeypatch.setattr(
        noise_level, "_channel_noise_var", lambda ch: calls.append(1) or original(ch)
    )
    monkeypatch.setattr(noise_level, "_ESTIMATES", type(noise_level._ESTIMATES)())
    noisy = 0.5 + 0.05 * np.random.default_rng(5).standard_normal((32, 32, 2))
    first = noise_level.estimate_noise_var(noisy)
    assert noise_level.estimate_noise_var(noisy.copy()) == first  # a copy: same content
    assert len(calls) == 2  # one per channel, once
    monkeypatch.setattr(noise_level, "_CACHED_ESTIMATES", 1)
    changed = noisy.copy()
    changed[0, 0, 0] += 0.1
    noise_level.estimate_noise_var(changed)  # other content: estimated, and `noisy` dropped
    assert len(calls) == 4 and len(noise_level._ESTIMATES) == 1
    assert noise_level.estimate_noise_var(noisy) == first
    assert len(calls) == 6


def test_clip_moments_match_a_simulation():
    from skdip.metrics._noise_level import _clip_moments

    rng = np.random.default_rng(3)
    noise = 0.1 * rng.standard_normal(1_000_000)
    for x, low, high in [(0.0, 0.0, 1.0), (0.05, 0.0, 1.0), (0.97, 0.0, 1.0), (0.3, -np.inf, 0.4)]:
        observed = np.clip(x + noise, low, high)
        mean, power = _clip_moments(np.array([x]), 0.1, low, high)
        assert mean[0] == pytest.approx(observed.mean(), abs=3e-4)
        assert power[0] == pytest.approx(np.mean((observed - x) ** 2), rel=0.01)
    # At a clipped end, half the variance and a shift of sigma / sqrt(2 pi).
    mean, power = _clip_moments(np.array([0.0]), 0.1, 0.0, np.inf)
    assert power[0] == pytest.approx(0.005) and mean[0] == pytest.approx(0.1 / np.sqrt(2 * np.pi))
    # Far from both ends, no clip.
    mean, power = _clip_moments(np.array([0.5]), 0.01, 0.0, 1.0)
    assert mean[0] == pytest.approx(0.5) and power[0] == pytest.approx(1e-4)


def test_clipped_pixels_are_shared_extreme_values():
    from skdip.metrics._noise_level import (
        _clipped_pixels,
        _wavelet_noise_sigma,
        estimate_noise_var,
    )

    rng = np.random.default_rng(1)
    unclipped = 0.5 + 0.1 * rng.standard_normal((16, 16))
    assert not _clipped_pixels(unclipped).any()  # unique min and max
    clipped = np.clip(unclipped, 0.45, 0.6)
    np.testing.assert_array_equal(_clipped_pixels(clipped), (clipped == 0.45) | (clipped == 0.6))
    # Any range: integer data clipped at 0 and 255 is flagged the same way.
    counts = np.clip(np.round(255 * (0.9 + 0.2 * rng.standard_normal((16, 16)))), 0, 255)
    np.testing.assert_array_equal(_clipped_pixels(counts), counts == 255)
    # Clipped pixels everywhere, so no patch shows the full noise: every wavelet detail
    # is used, as scikit-image does.
    scattered = np.clip(0.5 + 0.3 * rng.standard_normal((32, 32)), 0, 1)
    assert estimate_noise_var(scattered[..., None]) == pytest.approx(
        _wavelet_noise_sigma(scattered) ** 2, rel=1e-12
    )


# ------------------------------------------------------------------ whiteness
def test_residual_structure_is_zero_for_white_noise_and_large_for_image_detail():
    from skdip.metrics._scorers import _residual_structure

    rng = np.random.default_rng(0)
    white = rng.normal(0, 0.1, (64, 64, 1))
    assert abs(_residual_structure(white)) < 0.3
    ramp = np.linspace(0, 1, 64)[None, :, None] * np.ones((64, 1, 1))
    detail = np.sin(8 * np.pi * ramp) * 0.1
    assert _residual_structure(detail) > 8
    assert _residual_structure(white + detail) > 3
    # Constant residuals (no fluctuation at all) carry no structure.
    assert _residual_structure(np.full((8, 8, 1), 0.3)) == 0.0


def test_whiteness_criterion_is_discrepancy_minus_residual_structure():
    from skdip.metrics._scorers import _residual_structure

    noisy = _noisy(_clean())
    den = _den().fit(noisy)
    residual = noisy[..., None] - den.reconstruction_[..., None]
    discrepancy = get_scorer("emv", sigma=SIGMA, criterion="discrepancy")(den, noisy)
    expected = discrepancy - _residual_structure(residual)
    assert get_scorer("emv", sigma=SIGMA)(den, noisy) == pytest.approx(expected, rel=1e-9)
    whiteness = get_scorer("emv", sigma=SIGMA, criterion="discrepancy_whiteness")
    assert whiteness(den, noisy) == pytest.approx(expected, rel=1e-9)


def test_whiteness_separates_fits_the_discrepancy_cannot():
    # Two estimates whose residuals have the noise's power: one leaves white
    # noise, the other trades part of the noise for lost image detail.
    clean = load_image("camera", size=32, as_gray=True)[..., None]
    noisy = _noisy(clean)
    den = _den().fit(noisy)
    history = {"loss": np.zeros(1), "signal": np.ones(1)}

    def scores(estimate, criterion):
        result = {"estimate": estimate, "scaling": _Scaling(), "history": history, "best_iter": 0}
        return no_reference_scores(den, [noisy], [result], sigma=SIGMA, criterion=criterion)[0]

    detail = clean - ndimage.uniform_filter(clean, (5, 5, 1))
    noise = noisy - clean
    # Same residual power as the noise alone: noise scaled down, detail lost.
    k = np.sqrt(max(0.0, 1 - np.mean(detail**2) / np.mean(noise**2)))
    blurred = noisy - (k * noise + detail)
    assert np.mean((noisy - blurred) ** 2) == pytest.approx(np.mean(noise**2), rel=0.05)
    assert abs(scores(clean, "discrepancy") - scores(blurred, "discrepancy")) < 0.3
    assert scores(clean, "auto") > scores(blurred, "auto") + 1.0


def test_whiteness_needs_the_residual_image():
    rng = np.random.default_rng(0)
    image = rng.random((16, 16))
    mask = rng.random((16, 16)) > 0.3
    inp = DIPInpainter(generator=TINY, max_iter=5, early_stopping=None, random_state=0)
    inp.fit(np.where(mask, image, np.nan))
    observed = np.where(mask, image, np.nan)
    auto = NoReferenceScorer(criterion="auto", sigma=0.05)(inp, observed)
    plain = NoReferenceScorer(criterion="discrepancy", sigma=0.05)(inp, observed)
    assert auto == pytest.approx(plain)
    with pytest.raises(ValueError, match="residual image"):
        NoReferenceScorer(criterion="discrepancy_whiteness")(inp, observed)


def test_sigma_is_on_the_8_bit_scale_for_uint8_images():
    noisy = np.clip(_noisy(_clean((16, 16))), 0, 1)
    as_uint8 = np.round(noisy * 255).astype(np.uint8)
    den = _den().fit(as_uint8)
    on_255 = get_scorer("discrepancy", sigma=SIGMA * 255)(den, as_uint8)
    # The same fit, scored with the level on the [0, 1] scale it was fitted on.
    on_unit = no_reference_scores(
        den, [as_uint8[..., None] / 255.0], den._fit_results, criterion="discrepancy", sigma=SIGMA
    )[0]
    assert on_255 == pytest.approx(on_unit, abs=1e-9)
    # A float image on the 0-255 scale is rescaled by the estimator, so it gets the same.
    den_float = _den().fit(as_uint8.astype(np.float64))
    float_score = get_scorer("discrepancy", sigma=SIGMA * 255)(den_float, as_uint8.astype(float))
    assert np.isfinite(float_score) and float_score > -10


def test_pixels_hidden_by_a_mask_are_left_out_of_the_noise_estimate():
    rng = np.random.default_rng(0)
    noisy = _noisy(_clean((32, 32)))
    observed = rng.random(noisy.shape) > 0.3
    as_nan = np.where(observed, noisy, np.nan)
    overlaid = np.where(observed, noisy, 1.0)  # the same hidden pixels, given by mask=
    kw = dict(generator=TINY, max_iter=10, early_stopping=None, random_state=0, device="cpu")
    a = DIPInpainter(**kw).fit(as_nan)
    b = DIPInpainter(**kw).fit(overlaid, mask=observed)
    np.testing.assert_allclose(a.reconstruction_, b.reconstruction_)
    scorer = get_scorer("discrepancy")
    assert scorer(b, overlaid) == pytest.approx(scorer(a, as_nan), abs=1e-9)


def test_the_discrepancy_ignores_the_regularizer_penalty():
    # The score judges the data fit: a penalty added to the loss is no misfit.
    from skdip import TotalVariation

    rng = np.random.default_rng(0)
    noisy = _noisy(_clean((16, 16)))
    observed = rng.random(noisy.shape) > 0.3
    kw = dict(generator=TINY, max_iter=1, early_stopping=None, random_state=0, device="cpu")
    scores, data = [], []
    for weight in (0.0, 0.1, 1.0):
        inp = DIPInpainter(regularizer=TotalVariation(weight=weight), **kw).fit(
            np.where(observed, noisy, np.nan)
        )
        data.append(inp.history_["data_loss"][0])
        if weight > 0:
            assert inp.history_["loss"][0] > inp.history_["data_loss"][0]
        scores.append(get_scorer("discrepancy")(inp, np.where(observed, noisy, np.nan)))
    # One step from the same start: the same estimate, the same data term and score.
    assert data[0] == pytest.approx(data[1]) == pytest.approx(data[2])
    assert scores[0] == pytest.approx(scores[1]) == pytest.approx(scores[2])


def test_rule_scorers_judge_the_rule_the_images_were_fitted_with():
    # set_params after a fit changes no fitted result: the fitted images keep their
    # WMV fit, so the "wmv" scorer takes it and the "emv" scorer refuses it.
    noisy = _noisy(_clean((16, 16)))
    den = _den(early_stopping=WindowedMovingVariance(window=3, patience=5), max_iter=20)
    den.fit(noisy)
    before = get_scorer("wmv")(den, noisy)
    den.set_params(early_stopping="emv")
    assert get_scorer("wmv")(den, noisy) == before
    with pytest.raises(ValueError, match="fitted with early_stopping=WindowedMovingVariance"):
        get_scorer("emv")(den, noisy)


@pytest.mark.parametrize("name", ["emv", "psnr"])
def test_scorers_refuse_an_unfitted_estimator(name):
    from sklearn.exceptions import NotFittedError

    noisy = _noisy(_clean())
    # Was fitted quietly (a full solve) and scored, unlike score().
    with pytest.raises(NotFittedError):
        get_scorer(name)(_den(), noisy, _clean())


def test_unscaled_data_is_scored_on_its_own_range():
    # rescale=False on 0-255 data with a linear head: the estimate was clipped to
    # [0, 1] and an exact estimate scored -27.8 dB.
    noisy = _noisy(_clean()) * 255
    linear = SkipNetwork(
        width=8, depth=2, input_channels=4, skip_channels=2, output_activation=None
    )
    with pytest.warns(UserWarning, match="rescale=False"):
        # A rate that brings the estimate onto the data's scale within the 12 steps: a
        # reference far narrower than X is refused as on another scale.
        den = _den(generator=linear, rescale=False, lr=1.0).fit(noisy)
    assert den.reconstruction_.max() > 10
    assert den.score(noisy, den.reconstruction_) == np.inf


def test_scoring_new_images_warns_once_about_their_range():
    # score() checked a new solve's inputs before the solve and again in it: every
    # warning came twice.
    import warnings

    from skdip import DIPDenoiser, SkipNetwork

    tiny = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=1)
    X = np.random.default_rng(0).random((16, 16))
    den = DIPDenoiser(generator=tiny, max_iter=2, early_stopping=None, rescale=False).fit(X)
    new = X[::-1] * 3
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        den.score(new, new)
    assert sum("rescale=False" in str(w.message) for w in seen) == 1
    # And a y on another scale is still refused before the new images are solved.
    den = DIPDenoiser(generator=tiny, max_iter=2, early_stopping=None).fit(X)
    for score in (den.score, lambda X, y: get_scorer("psnr")(den, X, y)):
        with pytest.raises(ValueError, match="more than 10 times"):
            score(new / 300, X)
        assert not hasattr(den, "_last_solve")


def test_the_early_checks_hold_warnings_back_per_thread_and_issue_them_on_error():
    # They had used warnings.catch_warnings, whose filters are the whole process's
    # (two threads scoring at once could leave every warning switched off), and an
    # early error dropped the warning that explained it.
    import threading
    import warnings

    from skdip import DIPDenoiser, SkipNetwork
    from skdip._warnings import held_back, warn

    tiny = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=1)
    X = np.random.default_rng(0).random((16, 16))
    den = DIPDenoiser(generator=tiny, max_iter=2, early_stopping=None, rescale=False).fit(X)
    before = list(warnings.filters)
    with pytest.warns(UserWarning, match="rescale=False"):
        with pytest.raises(ValueError, match="more than 10 times"):
            den.score(X[::-1] * 3, X * 300)
    assert warnings.filters == before
    # Held back in this thread only.
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with held_back():
            thread = threading.Thread(target=lambda: warn("from another thread"))
            thread.start()
            thread.join()
            warn("held")
        seen = [str(w.message) for w in caught]
    assert seen == ["from another thread"]


def test_warnings_held_back_and_issued_name_the_callers_line():
    import warnings

    from skdip import DIPDenoiser, SkipNetwork

    tiny = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=1)
    X = np.random.default_rng(0).random((16, 16))
    den = DIPDenoiser(generator=tiny, max_iter=2, early_stopping=None, rescale=False).fit(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError):
            den.score(X[::-1] * 3, X * 300)
    assert caught and all(w.filename == __file__ for w in caught)


def test_the_discrepancy_knows_the_mean_squared_error_in_any_form():
    # get_loss("mse") and torch.nn.MSELoss() were refused as unknown callables, though
    # they are the very loss the string names; they score as "mse" does.
    import torch

    from skdip import DIPReconstructor
    from skdip.losses import get_loss
    from skdip.operators import Convolution

    noisy = _noisy(_clean())
    kw = dict(operator=Convolution(np.ones((3, 3)) / 9), generator=TINY, max_iter=5, random_state=0)
    scores = [
        DIPReconstructor(loss=loss, **kw).fit(noisy).score(noisy)
        for loss in ("mse", get_loss("mse"), torch.nn.MSELoss())
    ]
    assert np.isfinite(scores[0]) and scores[1] == scores[0]
    assert scores[2] == pytest.approx(scores[0], abs=1e-9)
    for loss in (
        torch.nn.MSELoss(reduction="sum"),
        get_loss("l1"),
        lambda a, b: (a - b).square().mean(),
    ):
        with pytest.raises(ValueError, match="needs loss='mse'"):
            DIPReconstructor(loss=loss, **kw).fit(noisy).score(noisy)


def test_a_fit_is_scored_with_the_loss_and_noise_model_it_ran_with():
    # After set_params, transform() still gave the fit, but score() read it with the
    # new settings: an L1 loss as a mean squared one, a sparse fit as a plain one.
    from skdip import DIPReconstructor, SparseNoise
    from skdip.operators import Convolution

    noisy = _noisy(_clean())
    est = DIPReconstructor(
        operator=Convolution(np.ones((3, 3)) / 9), loss="l1", generator=TINY, max_iter=5
    ).fit(noisy)
    est.set_params(loss="mse")
    with pytest.raises(ValueError, match="needs loss='mse'"):
        est.score(noisy)
    den = _den(noise_model=SparseNoise(), max_iter=5).fit(noisy)
    variance = NoReferenceScorer(criterion="variance")
    before = variance(den, noisy)
    with pytest.raises(ValueError, match="not available with a noise_model"):
        den.score(noisy)
    den.set_params(noise_model=None)
    # Still the sparse fit: its discrepancy is refused as before, whatever the settings say.
    with pytest.raises(ValueError, match="not available with a noise_model"):
        den.score(noisy)
    assert variance(den, noisy) == before


def _refused_before_its_fits(search, X):
    """``search`` (refit off) fails with the scorer's refusal of a noise model."""
    search.set_params(refit=False)
    with pytest.raises(ValueError, match="cannot be scored by the search's scoring.*noise_model"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's FitFailedWarning
            search.fit(X)


def test_a_search_whose_scoring_cannot_judge_a_setting_refuses_it_before_its_fit(count_fits):
    # Every fit of the search ran to its end, then every score came out NaN (the
    # discrepancy with a noise model; a scorer for another stopping rule).
    from sklearn.model_selection import cross_validate

    from skdip import SparseNoise

    X = np.stack([_noisy(_clean())] * 2)[..., None]
    sparse = _den(noise_model=SparseNoise(), max_iter=5)
    multi = {"v": get_scorer("emv"), "d": get_scorer("discrepancy")}
    for scoring in (None, get_scorer("no_reference"), multi):
        _refused_before_its_fits(
            GridSearchCV(sparse, {"lr": [0.01, 0.02]}, cv=FitImagesCV(), scoring=scoring), X
        )
        assert count_fits == []
    with pytest.raises(ValueError, match="judges the estimate picked by WMV"):
        cross_validate(
            _den(early_stopping="emv"),
            X,
            cv=FitImagesCV(),
            scoring=get_scorer("wmv"),
            error_score="raise",
        )
    assert count_fits == []
    # What the scoring can judge is fitted and scored: the variance with a noise model,
    # references, a pipeline's own score (its last step's), and a plain fit.
    variance = NoReferenceScorer(criterion="variance")
    for estimator, scoring, y in (
        (sparse, variance, None),
        (sparse, get_scorer("psnr"), X),
        (make_pipeline(sparse, FunctionTransformer()), variance, None),
    ):
        search = GridSearchCV(estimator, {}, cv=FitImagesCV(), scoring=scoring).fit(X, y)
        assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # A pipeline with two DIP steps is judged on its last: the first is not refused.
    twice = make_pipeline(sparse, _den(max_iter=5))
    assert np.isfinite(
        cross_validate(twice, X, cv=FitImagesCV(), scoring=get_scorer("emv"), error_score="raise")[
            "test_score"
        ]
    ).all()


def test_a_search_of_a_pipeline_is_refused_when_its_own_score_cannot_judge_it(count_fits):
    # scoring=None scores a Pipeline with its own score, its last step's: the fits of
    # make_pipeline(FunctionTransformer(), DIPDenoiser(noise_model=...)) all ran (4 of a
    # 2-candidate search) and every score came out NaN, where the DIP step searched
    # alone was refused before its fit.
    from skdip import SparseNoise

    X = np.stack([_noisy(_clean())] * 2)[..., None]
    sparse = _den(noise_model=SparseNoise(), max_iter=5)
    for estimator in (
        make_pipeline(FunctionTransformer(), sparse),
        make_pipeline(make_pipeline(FunctionTransformer(), sparse)),
    ):
        _refused_before_its_fits(GridSearchCV(estimator, {}, cv=FitImagesCV()), X)
    assert count_fits == []
    # Its own score with references is a reference one; a DIP step before the last is
    # not the one the no-reference scorer judges.
    for estimator, scoring, y in (
        (sparse, None, X),
        (make_pipeline(FunctionTransformer(), sparse), None, X),
        (make_pipeline(sparse, _den(max_iter=5)), get_scorer("no_reference"), None),
    ):
        search = GridSearchCV(estimator, {}, cv=FitImagesCV(), scoring=scoring).fit(X, y)
        assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_the_variance_criterion_needs_a_running_variance():
    # SelfValidation's signal (an autoencoder's error) was read as a running variance
    # against the noise power, in silence; so was a subclass of the base rule's.
    from skdip import SelfValidation

    noisy = _noisy(_clean())
    variance = NoReferenceScorer(criterion="variance")
    den = _den(max_iter=30, early_stopping=SelfValidation(window=4)).fit(noisy)
    with pytest.raises(ValueError, match="does not record .* early_stopping='emv' or 'wmv'"):
        variance(den, noisy)
    assert np.isfinite(NoReferenceScorer()(den, noisy))  # the discrepancy reads no signal
    # Refused before any fit in a search, and read from the fit, not from set_params.
    with pytest.raises(ValueError, match="does not record"):
        variance._check_can_score(den)
    den.set_params(early_stopping="emv")
    with pytest.raises(ValueError, match="does not record"):
        variance(den, noisy)
    for rule in (ExponentialMovingVariance(warmup=0), WindowedMovingVariance(window=5, warmup=0)):
        fitted = _den(max_iter=30, early_stopping=rule).fit(noisy)
        assert np.isfinite(variance(fitted, noisy))


def test_scoring_a_kept_fit_does_not_pickle_it(monkeypatch):
    # Reading the fit's recorded settings copied the estimator through __getstate__,
    # which saves every kept warm_start state: score(X) went from 2 ms to 1 s.
    noisy = _noisy(_clean())
    den = _den(max_iter=3, warm_start=True).fit(noisy)
    monkeypatch.setattr(type(den), "__getstate__", lambda self: pytest.fail("pickled"))
    assert np.isfinite(den.score(noisy))


def test_inpainter_discrepancy_is_the_residual_per_measured_pixel():
    # The recorded loss averages over every pixel, the hidden ones counting 0: the
    # discrepancy is read per measured pixel (a product in place of the division went
    # unnoticed where two criteria sharing it were compared).
    rng = np.random.default_rng(0)
    image = rng.random((16, 16))
    observed = np.where(rng.random((16, 16)) > 0.5, image, np.nan)
    inp = DIPInpainter(generator=TINY, max_iter=5, early_stopping=None, random_state=0)
    inp.fit(observed)
    result = inp._fit_results[0]
    history = result["history"]
    key = "data_loss" if "data_loss" in history else "loss"
    per_measured = history[key][result["best_iter"]] / np.mean(result["measured"])
    sigma = 0.05 / result["scaling"].scale
    expected = -abs(10 * np.log10(per_measured / sigma**2))
    score = NoReferenceScorer(criterion="discrepancy", sigma=0.05)(inp, observed)
    assert score == pytest.approx(expected, rel=1e-6)


# The auditor's network and settings for the tests below (a mutation audit's survivors).
_SMALL = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=1)
_SMALL_FIT = dict(generator=_SMALL, max_iter=3, early_stopping=None, random_state=0, device="cpu")


# A bug the suite once missed (score no longer clips the estimate to the range
# the fit worked on) and (_scored_range ignores a reference on [0, 1] and clips to
# the data's own range). Both need an estimate outside [0, 1]: a linear head with
# rescale=False, on noisy data reaching outside [0, 1] and a clean reference on [0, 1].
def test_score_clips_an_unscaled_linear_estimate_to_the_references_unit_range():
    from skdip.metrics import psnr

    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.05, 0.95, 16), (16, 1))
    noisy = clean + rng.normal(0, 0.2, clean.shape)  # about [-0.5, 1.5]
    linear = SkipNetwork(
        width=4, depth=2, input_channels=2, skip_channels=1, output_activation=None
    )
    with pytest.warns(UserWarning, match="rescale=False"):
        den = DIPDenoiser(**{**_SMALL_FIT, "generator": linear, "max_iter": 20}, rescale=False).fit(
            noisy
        )
    est = den.reconstruction_
    # Values outside [0, 1], within the data's range: the clip to [0, 1] matters.
    assert est.min() < 0 or est.max() > 1
    expected = psnr(clean, np.clip(est, 0.0, 1.0))
    assert den.score(noisy, clean) == pytest.approx(expected, rel=1e-9)


def _smooth_clean(shape=(16, 16)):
    yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
    return 0.3 + 0.4 * np.sin(3 * xx) * np.cos(2 * yy)


def _noisy_of(clean, seed=0):
    return clean + 0.1 * np.random.default_rng(seed).standard_normal(clean.shape)


# A bug the suite once missed: ReferenceScorer's uint8 check looks at X only (y uint8 with float X
# and data_range=255 scored 48 dB too high, silently)
def test_a_uint8_reference_with_data_range_255_is_refused_for_float_x():
    clean8 = np.round(_smooth_clean() * 255).astype(np.uint8)
    noisy = np.clip(_noisy_of(clean8 / 255.0), 0, 1)  # float X on [0, 1]
    den = _den().fit(noisy)
    assert np.isfinite(get_scorer("psnr")(den, noisy, clean8))  # read on [0, 1]: scored
    with pytest.raises(ValueError, match="uint8 images are read on"):
        get_scorer("psnr", data_range=255)(den, noisy, clean8)


# A bug the suite once missed: registry "wmv_variance" built with rule="emv" (and any rule/criterion
# mix-up)
def test_registry_scorers_have_the_documented_rule_and_criterion():
    expected = {
        "emv": ("emv", "auto"),
        "wmv": ("wmv", "auto"),
        "no_reference": (None, "auto"),
        "discrepancy": (None, "discrepancy"),
        "emv_variance": ("emv", "variance"),
        "wmv_variance": ("wmv", "variance"),
    }
    for name, (rule, criterion) in expected.items():
        scorer = get_scorer(name)
        assert (scorer.rule, scorer.criterion) == (rule, criterion), name
    assert get_scorer("ssim").metric == "ssim" and get_scorer("psnr").metric == "psnr"


# A bug the suite once missed: scoring the fitted images (the cache path) skipped the parameter
# validation: a misspelt criterion scored as the discrepancy, silently
def test_invalid_scorer_parameters_are_refused_on_the_fitted_images_too():
    noisy = _noisy_of(_smooth_clean())
    den = _den().fit(noisy)
    with pytest.raises(InvalidParameterError):
        NoReferenceScorer(criterion="whiteness")(den, noisy)
    with pytest.raises(InvalidParameterError):
        NoReferenceScorer(rule="EMV")(den, noisy)


def _kspace_fit(image_kind="real", coils=1, seed=0):
    from skdip import DIPReconstructor
    from skdip.datasets import cartesian_mask, make_coil_maps, simulate_kspace
    from skdip.operators import KSpaceSampling, kspace_to_channels

    image = load_image("camera", size=32, as_gray=True)
    mask = cartesian_mask((32, 32), acceleration=2, random_state=seed)
    maps = None if coils == 1 else make_coil_maps(coils, (32, 32))
    if image_kind == "complex":
        image = image * np.exp(1j * np.linspace(-np.pi, np.pi, 32))[None]
    X = kspace_to_channels(simulate_kspace(image, mask, maps, noise_std=0.01, random_state=seed))
    est = DIPReconstructor(
        operator=KSpaceSampling(mask, maps, image=image_kind),
        output_channels=1 if image_kind == "real" else 2,
        generator=TINY,
        max_iter=30,
        random_state=0,
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 30 steps: before the warm-up
        est.fit(X)
    return est, X


@pytest.mark.parametrize("coils", [1, 4])
def test_kspace_fits_are_scored_with_the_noise_level_of_the_kspace(coils):
    # The scorers read k-space as an image and warned that the score was unreliable
    # (up to 235 times too high a noise level); they now measure it on the part of the
    # measurement no image explains.
    from skdip.metrics._scorers import _observation_and_noise_var

    est, X = _kspace_fit(coils=coils)
    result = est._fit_results[0]
    scale = result["scaling"].scale
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        score = est.score(X)
        emv = get_scorer("emv")(est, X)
        _, noise_var = _observation_and_noise_var(est, X, result, None)
    assert np.isfinite(score) and np.isfinite(emv)
    assert np.sqrt(noise_var) * scale / 0.01 == pytest.approx(1, abs=0.2)
    # The noise level given still wins.
    _, given = _observation_and_noise_var(est, X, result, 0.05)
    assert given == pytest.approx((0.05 / scale) ** 2, rel=1e-12)
    assert get_scorer("emv", sigma=0.05)(est, X) != pytest.approx(emv, abs=0.1)


def test_kspace_noise_level_is_that_of_the_fitted_operator():
    # The scorers asked the estimator's current operator: after set_params(operator=...)
    # the fitted images were scored with another model's noise reading (here one with no
    # redundancy, which warned and fell back on reading k-space as an image).
    from skdip.operators import KSpaceSampling

    est, X = _kspace_fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        before = get_scorer("emv")(est, X)
        # Fits kept from before the level was recorded ask the estimator's operator.
        recorded = est._fit_results[0].pop("measurement_noise")
        assert get_scorer("emv")(est, X) == before
        est._fit_results[0]["measurement_noise"] = recorded
        fitted = est.operator
        est.set_params(operator=KSpaceSampling(fitted.mask[0, 0].numpy(), image="complex"))
        assert get_scorer("emv")(est, X) == before


def test_kspace_without_redundancy_still_asks_for_the_noise_level():
    # A complex image seen by one coil: every measured value is needed to explain it.
    est, X = _kspace_fit(image_kind="complex")
    with pytest.warns(UserWarning, match="cannot be estimated.*redundant"):
        est.score(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert np.isfinite(get_scorer("emv", sigma=0.01)(est, X))


# Mutation audit (survivors of _scored_range, each needing an estimate that the clip
# changes: a linear head with rescale=False): the reference's unit-range test read
# [0, 1] in place of its margins; the data's own range taken though it lies on [0, 1];
# k-space's own span taken in place of the range of the image estimated from it.
def _linear_unscaled(**kw):
    linear = SkipNetwork(
        width=4, depth=2, input_channels=2, skip_channels=1, output_activation=None
    )
    return dict(_SMALL_FIT, generator=linear, rescale=False, **kw)


def _scored_as(reference, estimate, low, high):
    from skdip._validation import reference_data_range

    peak = reference_data_range(reference)
    return psnr(reference / peak, np.clip(estimate, low, high) / peak, data_range=1.0)


def test_a_reference_within_the_unit_ranges_margins_clips_to_0_1():
    from skdip.estimators._base import _AUTO_RESCALE_BOUNDS

    rng = np.random.default_rng(0)
    # Data off [0, 1] (fitted as given), a reference a little beyond [0, 1] but
    # within the margins that still read it as on [0, 1].
    clean = np.tile(np.linspace(-0.1, 1.1, 16), (16, 1))
    assert _AUTO_RESCALE_BOUNDS[0] < clean.min() < 0 and 1 < clean.max() < _AUTO_RESCALE_BOUNDS[1]
    noisy = clean + rng.normal(0, 0.3, clean.shape)
    with pytest.warns(UserWarning, match="rescale=False"):
        den = DIPDenoiser(**_linear_unscaled(max_iter=20)).fit(noisy)
    est = den.reconstruction_
    assert est.min() < 0 or est.max() > 1
    assert den.score(noisy, clean) == pytest.approx(_scored_as(clean, est, 0, 1), rel=1e-9)


def test_unscaled_data_on_the_unit_range_clips_to_0_1_whatever_the_reference():
    rng = np.random.default_rng(0)
    # Data on [0.15, 0.85]: on the unit range, so the fit worked on [0, 1], not on the
    # data's own range, though the reference (twice the data) reads beyond [0, 1].
    clean = np.tile(np.linspace(0.2, 0.8, 16), (16, 1))
    noisy = clean + rng.normal(0, 0.02, clean.shape)
    reference = 2 * clean
    den = DIPDenoiser(**_linear_unscaled()).fit(noisy)
    est = den.reconstruction_
    assert est.min() < noisy.min() or est.max() > noisy.max()
    assert den.score(noisy, reference) == pytest.approx(_scored_as(reference, est, 0, 1), rel=1e-9)


def test_unscaled_kspace_is_scored_on_the_range_of_the_image_estimated_from_it():
    from skdip import DIPReconstructor
    from skdip.datasets import cartesian_mask, simulate_kspace
    from skdip.operators import KSpaceSampling, kspace_to_channels

    clean = np.tile(np.linspace(0.1, 0.9, 16), (16, 1))[..., None] * 255
    mask = cartesian_mask((16, 16), acceleration=2, random_state=0)
    y = kspace_to_channels(simulate_kspace(clean[..., 0], mask))
    est = DIPReconstructor(operator=KSpaceSampling(mask), output_channels=1, **_linear_unscaled())
    with pytest.warns(UserWarning, match="rescale=False"):
        est.fit(y)
    low, high, _ = est._image_range(y, {})
    # The k-space values span far more than the image estimated from them.
    assert y.min() < low - 100 and y.max() > high + 100
    rec = est.reconstruction_
    assert rec.min() < low
    assert est.score(y, clean) == pytest.approx(_scored_as(clean, rec, low, high), rel=1e-6)


def test_the_discrepancy_is_refused_with_a_noise_model_before_any_fit(monkeypatch):
    # With a sparse noise term the residual left says how much the term absorbed: the
    # default score picked noise_model__lr=0.01 (12.2 dB) over 0.1 (28.9 dB) on a
    # salt-and-pepper camera, and the worst network setting in 4 of 4 cases.
    import skdip.model_selection as ms
    from skdip import SparseNoise
    from skdip.model_selection import AverageOfBest

    noisy = _noisy(_clean())
    inp = DIPInpainter(
        noise_model=SparseNoise(),
        generator=TINY,
        max_iter=12,
        early_stopping=None,
        output_averaging=None,
        random_state=0,
    ).fit(noisy)
    for scorer in (get_scorer("emv"), NoReferenceScorer(criterion="discrepancy")):
        with pytest.raises(ValueError, match="not available with a noise_model"):
            scorer(inp, noisy)
    with pytest.raises(ValueError, match="not available with a noise_model"):
        inp.score(noisy)
    assert np.isfinite(NoReferenceScorer(criterion="variance")(inp, noisy))
    # A search that can check first refuses before it fits anything.
    monkeypatch.setattr(ms, "fit_candidates", lambda *a, **k: pytest.fail("fitted"))
    grid = {"noise_model__lr": [0.01, 0.1]}
    with pytest.raises(ValueError, match="not available with a noise_model"):
        AverageOfBest(_den(noise_model=SparseNoise()), grid).fit(noisy[None, ..., None])


def test_a_given_sigma_far_from_the_images_noise_is_warned_of():
    # sigma in [0, 1] units for uint8 data was accepted silently: a search picked the
    # longest run (22.0 dB) over the best one (27.7 dB).
    noisy = np.clip(_noisy(_clean()), 0, 1)
    as_uint8 = np.round(noisy * 255).astype(np.uint8)
    den = _den().fit(noisy)
    den8 = _den().fit(as_uint8)
    for est, X, wrong in ((den8, as_uint8, 0.1), (den, noisy, 25.5)):
        with pytest.warns(UserWarning, match=r"given sigma is [\d.e+-]+ times .* X's units"):
            get_scorer("emv", sigma=wrong)(est, X)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*given sigma")
        get_scorer("emv", sigma=SIGMA * 255)(den8, as_uint8)
        get_scorer("emv", sigma=SIGMA)(den, noisy)
        get_scorer("emv", sigma=2 * SIGMA)(den, noisy)  # within a factor of 10: not told


def test_scorers_judge_a_fitted_search_by_its_refit_estimator():
    # Nested cross-validation scores a fitted GridSearchCV: the skdip scorers refused it
    # ("need a fitted skdip DIP estimator"), so every outer score was NaN.
    from sklearn.model_selection import cross_validate

    noisy = _noisy(_clean())
    clean = _clean()
    grid = {"lr": [0.01, 0.03]}
    search = GridSearchCV(_den(), grid, cv=FitImagesCV(), scoring=get_scorer("emv")).fit(noisy)
    best = search.best_estimator_
    assert get_scorer("emv")(search, noisy) == get_scorer("emv")(best, noisy)
    assert get_scorer("psnr")(search, noisy, clean) == get_scorer("psnr")(best, noisy, clean)
    piped = make_pipeline(FunctionTransformer(), search).fit(noisy)
    assert get_scorer("psnr")(piped, noisy, clean) == get_scorer("psnr")(
        piped[-1].best_estimator_, noisy, clean
    )
    unrefitted = GridSearchCV(_den(), grid, cv=FitImagesCV(), refit=False).fit(noisy)
    with pytest.raises(TypeError, match="without a refit estimator"):
        get_scorer("emv")(unrefitted, noisy)
    batch = np.stack([noisy, noisy + 0.01])[..., None]
    refs = np.stack([clean, clean])[..., None]
    inner = GridSearchCV(_den(), grid, cv=FitImagesCV(), scoring=get_scorer("emv"))
    outer = cross_validate(
        inner, batch, refs, cv=FitImagesCV(), scoring={"psnr": get_scorer("psnr")}
    )
    assert np.isfinite(outer["test_psnr"]).all()


@pytest.mark.parametrize(
    "name, params",
    [
        ("psnr", {"metric": "ssim"}),
        ("ssim", {"metric": "psnr"}),
        ("emv", {"rule": "wmv"}),
        ("wmv_variance", {"criterion": "discrepancy"}),
        ("discrepancy", {"criterion": "variance"}),
    ],
)
def test_get_scorer_refuses_keywords_that_contradict_the_name(name, params):
    # get_scorer("psnr", metric="ssim") returned an SSIM scorer, and get_scorer("emv",
    # rule="wmv") a WMV one, under the name the caller's code reads.
    with pytest.raises(ValueError, match="contradicts it"):
        get_scorer(name, **params)


def test_get_scorer_takes_keywords_that_agree_with_or_refine_the_name():
    assert get_scorer("psnr", metric="psnr", data_range=255).get_params()["data_range"] == 255
    assert get_scorer("emv", criterion="discrepancy").criterion == "discrepancy"
    assert get_scorer("discrepancy", rule="emv").rule == "emv"


# get_scorer's overloads tell a type checker the class each name gives: a name added to
# the registry without one, or typed as the other class, would be read wrong there.
@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is 3.11+")
def test_get_scorer_is_typed_with_the_class_each_name_gives():
    import typing

    from skdip.metrics import _scorers

    typed = {}
    for overload in typing.get_overloads(_scorers.get_scorer):
        hints = typing.get_type_hints(overload)
        if typing.get_origin(hints["name"]) is typing.Literal:
            typed.update(dict.fromkeys(typing.get_args(hints["name"]), hints["return"]))
    assert typed == {name: type(get_scorer(name)) for name in SCORER_NAMES}
