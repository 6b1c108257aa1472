import inspect
import itertools
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, ParameterGrid, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError

from skdip import BlindDeblurrer, DIPDenoiser, DIPInpainter, DIPSuperResolver, SkipNetwork
from skdip.exceptions import FitInterrupted, NothingToAverage
from skdip.metrics import NoReferenceScorer, get_scorer
from skdip.model_selection import (
    AverageOfBest,
    FitImagesCV,
    PerImageCV,
    PreferDefault,
    best_params_per_image,
    best_scored,
    fit_candidates,
)

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)


def _den(**kw):
    params = dict(generator=TINY, max_iter=6, early_stopping=None, random_state=0, device="cpu")
    params.update(kw)
    return DIPDenoiser(**params)


def _images(n=2, shape=(16, 16)):
    rng = np.random.default_rng(0)
    return [np.clip(0.5 + 0.1 * rng.standard_normal(shape), 0, 1) for _ in range(n)]


@pytest.fixture
def candidate_runs(monkeypatch):
    """The keyword arguments of every fit_candidates call AverageOfBest makes."""
    import skdip.model_selection as ms

    calls = []
    original = ms.fit_candidates
    monkeypatch.setattr(ms, "fit_candidates", lambda *a, **k: calls.append(k) or original(*a, **k))
    return calls


# ------------------------------------------------------------------ splitters
def test_fit_images_cv_splits():
    cv = FitImagesCV()
    assert repr(cv) == "FitImagesCV()" and cv.get_n_splits() == 1
    for X, n in [(np.zeros((3, 8, 8, 1)), 3), (_images(4), 4), (np.zeros((10, 12)), 10)]:
        splits = list(cv.split(X))
        assert len(splits) == 1
        train, test = splits[0]
        np.testing.assert_array_equal(train, np.arange(n))
        np.testing.assert_array_equal(test, np.arange(n))
        assert train is not test
    with pytest.raises(ValueError, match="X is required"):
        list(cv.split(None))
    with pytest.raises(ValueError, match="got a scalar"):
        list(cv.split(3.0))
    for empty in ([], np.zeros((0, 8, 8, 1))):
        with pytest.raises(ValueError, match="X holds no image"):
            list(cv.split(empty))


def test_per_image_cv_splits():
    cv = PerImageCV()
    assert repr(cv) == "PerImageCV()"
    X = np.zeros((3, 8, 8, 1))
    assert cv.get_n_splits(X) == 3
    assert [(tr.tolist(), te.tolist()) for tr, te in cv.split(X)] == [([i], [i]) for i in range(3)]
    assert cv.get_n_splits(_images(2)) == 2
    with pytest.raises(ValueError, match="needs a batch of images"):
        list(cv.split(np.zeros((8, 8))))
    with pytest.raises(ValueError, match="needs a batch of images"):
        cv.get_n_splits(np.zeros((8, 8, 3)))
    # A stack of grey images (N, H, W) reads as one image with W channels: say how to pass it.
    with pytest.raises(ValueError, match=r"X\[\.\.\., None\]"):
        cv.get_n_splits(np.zeros((5, 16, 16)))
    with pytest.raises(ValueError, match="needs X"):
        cv.get_n_splits()
    for empty in ([], np.zeros((0, 8, 8, 1))):
        with pytest.raises(ValueError, match="X holds no image"):
            cv.get_n_splits(empty)


def test_per_image_cv_reads_nested_lists_as_the_estimators_do():
    # rgb.tolist() is one colour image to the estimators: PerImageCV split it into 16
    # "images", rows each fitted as a 16x3 grey image, in silence.
    cv = PerImageCV()
    rgb = np.random.default_rng(0).random((16, 16, 3))
    with pytest.raises(ValueError, match="needs a batch of images"):
        cv.get_n_splits(rgb.tolist())
    with pytest.raises(ValueError, match="needs a batch of images"):
        list(cv.split(rgb.tolist()))
    # Rows of different lengths are one (bad) image, refused in the fit's words, not
    # split into rows (nor refused with NumPy's "inhomogeneous shape").
    with pytest.raises(ValueError, match="rows have different lengths"):
        cv.get_n_splits([[0.1, 0.2, 0.3], [0.4, 0.5]])
    # Grey images as nested lists, or a batch's, are a batch to both; the warning the
    # first gets (read as grey images) is the fit's to give, not the splitter's too.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cv.get_n_splits(np.zeros((3, 16, 16)).tolist()) == 3
    assert cv.get_n_splits(np.zeros((2, 8, 8, 3)).tolist()) == 2
    assert cv.get_n_splits([rgb.tolist(), rgb.tolist()]) == 2


def test_per_image_cv_refuses_the_rows_of_one_colour_image_as_the_fit_does():
    # list(rgb): refused by fit, but each split holds one row, which no check refused:
    # every row was fitted as a 16x3 grey image.
    cv = PerImageCV()
    rgb = np.random.default_rng(0).random((16, 16, 3))
    with pytest.raises(ValueError, match=r"list of 16 arrays of shape \(16, 3\)"):
        cv.get_n_splits(list(rgb))
    with pytest.raises(ValueError, match=r"list of 16 arrays of shape \(16, 3\)"):
        list(cv.split(list(rgb)))
    with pytest.warns(UserWarning, match="read as 8 grey images 2 pixel"):
        assert cv.get_n_splits(list(np.zeros((8, 16, 2)))) == 8
    # An alpha channel's rows are refused as a colour image's are; square items, and one
    # narrow image alone, are no rows of anything.
    with pytest.raises(ValueError, match=r"list of 16 arrays of shape \(16, 4\)"):
        cv.get_n_splits(list(np.zeros((16, 16, 4))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cv.get_n_splits(list(np.zeros((3, 4, 4)))) == 3
        assert cv.get_n_splits([np.zeros((16, 3))]) == 1


# ------------------------------------------------- no wasted solves in a search
@pytest.mark.parametrize(
    "scoring", [None, get_scorer("emv"), {"a": get_scorer("emv"), "b": get_scorer("discrepancy")}]
)
def test_grid_search_solves_each_image_once_per_candidate(count_fits, scoring):
    images = _images(2)
    refit = "a" if isinstance(scoring, dict) else False
    search = GridSearchCV(
        _den(), {"lr": [0.01, 0.03]}, cv=FitImagesCV(), scoring=scoring, refit=refit
    )
    search.fit(images)
    # 2 candidates x 2 images, scoring reuses the fits; a refit adds one solve per image.
    assert len(count_fits) == 4 + (2 if refit else 0)
    key = "mean_test_a" if isinstance(scoring, dict) else "mean_test_score"
    assert np.isfinite(search.cv_results_[key]).all()


def test_plain_kfold_would_solve_the_test_images_again(count_fits):
    # The contrast that motivates FitImagesCV: disjoint test images are solved
    # from scratch at scoring time.
    images = _images(2)
    GridSearchCV(_den(), {"lr": [0.01]}, cv=KFold(2), refit=False).fit(images)
    assert len(count_fits) == 4  # 2 folds x (1 train + 1 test image)


def test_the_scorers_of_a_multi_metric_search_share_one_solve_of_the_test_images(count_fits):
    images = _images(2)
    scoring = {name: get_scorer(name) for name in ("emv", "discrepancy", "emv_variance")}
    search = GridSearchCV(_den(random_state=None), {"lr": [0.01]}, cv=KFold(2), refit=False)
    search.set_params(scoring=scoring).fit(images)
    assert len(count_fits) == 4  # 2 folds x (1 train + 1 test image), not 1 test solve per scorer
    # One fit behind all the metrics of a split, even without a seed.
    den = _den(random_state=None).fit(images[0])
    first = den.transform(images[1])
    np.testing.assert_array_equal(den.transform(images[1]), first)
    den.set_params(lr=0.02)  # other parameters: a new solve
    del count_fits[:]
    den.transform(images[1])
    assert len(count_fits) == 1


def test_scores_equal_those_of_a_separate_fit():
    images = _images(2)
    search = GridSearchCV(
        _den(), {"lr": [0.01, 0.03]}, cv=FitImagesCV(), scoring=get_scorer("emv"), refit=False
    ).fit(images)
    for params, score in zip(
        search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
    ):
        den = _den(**params).fit(images)
        assert score == pytest.approx(get_scorer("emv")(den, images))


def test_per_image_search_and_best_params_per_image(count_fits):
    images = np.stack(_images(3))[..., None]  # a (3, 16, 16, 1) batch
    grid = {"lr": [0.005, 0.03], "reg_noise_std": [0.0, 0.05]}
    search = GridSearchCV(
        _den(), grid, cv=PerImageCV(), scoring=get_scorer("emv"), refit=False
    ).fit(images)
    assert len(count_fits) == 4 * 3  # each candidate solves each image once
    chosen = best_params_per_image(search)
    assert len(chosen) == 3
    res = search.cv_results_
    for i, params in enumerate(chosen):
        scores = res[f"split{i}_test_score"]
        assert params == res["params"][int(np.argmax(scores))]
    # Each per-image score is the score of that image fitted alone.
    den = _den(**res["params"][0]).fit(images[1:2])
    assert res["split1_test_score"][0] == pytest.approx(get_scorer("emv")(den, images[1:2]))


def test_best_params_per_image_errors_and_metric_names():
    images = _images(2)
    with pytest.raises(ValueError, match="not fitted"):
        best_params_per_image(GridSearchCV(_den(), {"lr": [0.01]}))
    search = GridSearchCV(
        _den(),
        {"lr": [0.01, 0.03]},
        cv=PerImageCV(),
        scoring={"emv": get_scorer("emv"), "d": get_scorer("discrepancy")},
        refit="d",
    ).fit(images)
    assert best_params_per_image(search) == best_params_per_image(search, metric="d")
    assert len(best_params_per_image(search, metric="emv")) == 2
    with pytest.raises(ValueError, match="no test scores named 'psnr'"):
        best_params_per_image(search, metric="psnr")


def test_best_params_per_image_applies_the_searchs_rule_to_its_own_metric_only():
    # metric="ssim" on a search whose refit was PreferDefault(metric="emv") kept the
    # default by the emv rule's margin, though ssim put the other setting ahead.
    results = {
        "params": [{"lr": 0.01}, {"lr": 0.03}],
        "split0_test_emv": np.array([0.0, 0.5]),
        "split0_test_ssim": np.array([0.5, 0.9]),
        "mean_test_emv": np.array([0.0, 0.5]),
        "mean_test_ssim": np.array([0.5, 0.9]),
    }

    class Fitted:
        cv_results_ = results
        cv = PerImageCV()
        refit = PreferDefault({"lr": 0.01}, margin=1.0, metric="emv")

    assert best_params_per_image(Fitted()) == [{"lr": 0.01}]  # emv, within the margin
    assert best_params_per_image(Fitted(), metric="emv") == [{"lr": 0.01}]
    assert best_params_per_image(Fitted(), metric="ssim") == [{"lr": 0.03}]  # arg-max
    ssim_rule = PreferDefault({"lr": 0.01}, margin=0.5, metric="ssim")
    assert best_params_per_image(Fitted(), metric="ssim", prefer=ssim_rule) == [{"lr": 0.01}]
    with pytest.raises(ValueError, match="prefer weighs the 'emv' scores .* metric='ssim'"):
        best_params_per_image(Fitted(), metric="ssim", prefer=Fitted.refit)


def test_best_params_per_image_keeps_the_other_choices_when_an_image_fails():
    # Every candidate failing on one image raised, and the other images' choices (the
    # search's hours of fits) were lost with the error.
    class Fitted:
        cv_results_ = {
            "params": [{"lr": 0.01}, {"lr": 0.03}],
            "split0_test_score": np.array([1.0, 2.0]),
            "split1_test_score": np.array([np.nan, -np.inf]),
            "split2_test_score": np.array([2.0, 1.0]),
            "mean_test_score": np.array([np.nan, np.nan]),
        }
        cv = PerImageCV()
        refit = False

    with pytest.raises(ValueError, match=r"every candidate failed on image\(s\) \[1\]") as err:
        best_params_per_image(Fitted())
    assert err.value.params == [{"lr": 0.03}, None, {"lr": 0.01}]


def test_best_params_per_image_reads_whole_metric_names():
    # "psnr" took split0_test_val_test_psnr too, and int("0_test_val") failed.
    results = {
        "params": [{"lr": 0.01}, {"lr": 0.03}],
        "split0_test_psnr": np.array([1.0, 2.0]),
        "split1_test_psnr": np.array([2.0, 1.0]),
        "split0_test_val_test_psnr": np.array([2.0, 1.0]),
        "split1_test_val_test_psnr": np.array([1.0, 2.0]),
        "mean_test_psnr": np.array([1.5, 1.5]),
        "mean_test_val_test_psnr": np.array([1.5, 1.5]),
    }

    class Fitted:
        cv_results_ = results
        cv = PerImageCV()
        refit = False

    assert best_params_per_image(Fitted(), metric="psnr") == [{"lr": 0.03}, {"lr": 0.01}]
    assert best_params_per_image(Fitted(), metric="val_test_psnr") == [{"lr": 0.01}, {"lr": 0.03}]


def test_the_refit_after_per_image_splits_reproduces_the_scored_fits():
    images = _images(3)
    scorer = get_scorer("emv")
    search = GridSearchCV(
        _den(), {"lr": [0.01, 0.03]}, cv=PerImageCV(), scoring=scorer, refit=True
    ).fit(images)
    split_scores = [
        search.cv_results_[f"split{i}_test_score"][search.best_index_] for i in range(3)
    ]
    np.testing.assert_allclose(scorer.score_images(search.best_estimator_, images), split_scores)


def test_cross_validate_with_fit_images_cv(count_fits):
    images = _images(2)
    out = cross_validate(_den(), images, cv=FitImagesCV(), scoring=get_scorer("emv"))
    assert out["test_score"].shape == (1,) and np.isfinite(out["test_score"]).all()
    assert len(count_fits) == 2


def test_per_image_fit_params_are_sliced_and_the_fit_reused(count_fits):
    rng = np.random.default_rng(1)
    images = [rng.random((16, 16)) for _ in range(2)]
    masks = [rng.random((16, 16)) > 0.3 for _ in range(2)]
    inp = DIPInpainter(
        generator=TINY, max_iter=5, early_stopping=None, random_state=0, device="cpu"
    )
    search = GridSearchCV(
        inp,
        {"lr": [0.01, 0.03]},
        cv=PerImageCV(),
        scoring=get_scorer("emv", sigma=0.05),
        refit=False,
    )
    search.fit(images, mask=masks)
    assert len(count_fits) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


# ------------------------------------------------------------- PreferDefault
PARAMS = [
    {"generator": "skip-small", "lr": 0.01},
    {"generator": "skip-small", "lr": 0.03},
    {"generator": TINY, "lr": 0.01},
]


def test_prefer_default_keeps_the_default_within_the_margin():
    rule = PreferDefault({"generator": "skip-small", "lr": 0.01}, margin=1.0)
    assert rule.select(PARAMS, [0.0, 0.9, -5.0]) == 0
    assert rule.select(PARAMS, [0.0, 1.1, -5.0]) == 1
    assert rule.select(PARAMS, [-3.0, -2.5, -1.9]) == 2  # 1.1 better
    # margin 0: the plain arg-max, a tie going to the default.
    assert PreferDefault(1, margin=0.0).select(PARAMS, [0.5, 0.5, 0.1]) == 1
    assert PreferDefault(0, margin=0.0).select(PARAMS, [0.5, 0.6, 0.1]) == 1


def test_prefer_default_matches_partial_dicts_floats_and_generators():
    # A clone of a generator object is the same setting; 1/30 written twice is the same float.
    assert (
        PreferDefault({"generator": TINY.__class__(**TINY.get_params())}).default_index(PARAMS) == 2
    )
    params = [{"reg_noise_std": 0.0}, {"reg_noise_std": 1 / 30}]
    assert PreferDefault({"reg_noise_std": 1.0 / 30.0}).default_index(params) == 1
    with pytest.raises(ValueError, match="2 candidates match the default"):
        PreferDefault({"lr": 0.01}).default_index(PARAMS)
    with pytest.raises(ValueError, match="no candidate match"):
        PreferDefault({"lr": 0.02}).default_index(PARAMS)
    with pytest.raises(ValueError, match="no candidate match"):
        PreferDefault({"width": 8}).default_index(PARAMS)  # a key no candidate has


def _same(x):
    return x


def _same_too(x):
    return x


def test_prefer_default_matches_tuples_lists_of_arrays_and_functions():
    # Equal values built apart (a tuple from a config, a list of kernels, which == cannot
    # compare) are the same setting; an array does not match a ragged list; two
    # functions are the same setting only as one object, or pickled alike (a lambda
    # does not pickle: only itself matches it).
    sizes = [{"kernel_size": (3, 3)}, {"kernel_size": (5, 5)}]
    assert PreferDefault({"kernel_size": tuple([5, 5])}).default_index(sizes) == 1
    kernels = [{"kernel": [np.zeros((3, 3))]}, {"kernel": [np.ones((3, 3))]}]
    assert PreferDefault({"kernel": [np.ones((3, 3))]}).default_index(kernels) == 1
    flat = [{"kernel": [[1.0], [1.0, 1.0]]}, {"kernel": [1.0, 1.0]}]
    assert PreferDefault({"kernel": np.ones(2)}).default_index(flat) == 1
    one, other = (lambda x: x), (lambda x: x)
    assert PreferDefault({"operator": one}).default_index([{"operator": one}]) == 0
    with pytest.raises(ValueError, match="no candidate matches"):
        PreferDefault({"operator": other}).default_index([{"operator": one}])
    functions = [{"operator": _same}, {"operator": _same_too}]
    assert PreferDefault({"operator": _same_too}).default_index(functions) == 1


def test_prefer_default_failed_fits():
    rule = PreferDefault(0, margin=1.0)
    # A failed default is replaced by the best candidate that did not fail.
    assert rule.select(PARAMS, [np.nan, -0.5, -3.0]) == 1
    # A failed challenger never wins, however the NaN compares.
    assert rule.select(PARAMS, [0.0, np.nan, np.nan]) == 0
    with pytest.raises(ValueError, match="every candidate failed"):
        rule.select(PARAMS, [np.nan, np.nan, np.inf])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"default": "lr"}, TypeError, "default must be a dict"),
        ({"default": True}, TypeError, "default must be a dict"),
        ({"default": {}}, ValueError, "at least one parameter"),
        ({"default": 3}, ValueError, "out of range for 3 candidates"),
        ({"default": -1}, ValueError, "index >= 0, got -1"),  # for any grid
        ({"default": 0, "margin": -0.1}, ValueError, "margin must be"),
        ({"default": 0, "margin": np.nan}, ValueError, "margin must be"),
        ({"default": 0, "margin": "1"}, TypeError, "margin must be"),
        ({"default": 0, "metric": 3}, TypeError, "metric must be"),
    ],
)
def test_prefer_default_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        PreferDefault(**kwargs).select(PARAMS, [0.0, 0.0, 0.0])


def test_prefer_default_needs_one_score_per_candidate():
    with pytest.raises(ValueError, match="one score per candidate"):
        PreferDefault(0).select(PARAMS, [0.0, 1.0])


def test_prefer_default_as_refit_of_a_grid_search():
    images = _images(2)
    grid = {"lr": [0.005, 0.03], "reg_noise_std": [0.0, 0.05]}
    plain = GridSearchCV(
        _den(), grid, cv=FitImagesCV(), scoring=get_scorer("emv"), refit=False
    ).fit(images)
    scores = plain.cv_results_["mean_test_score"]
    params = plain.cv_results_["params"]
    best = int(np.argmax(scores))
    default = next(i for i in range(4) if i != best)
    gain = scores[best] - scores[default]
    assert gain > 0
    for margin, expected in [(gain / 2, best), (gain * 2, default)]:
        rule = PreferDefault(dict(params[default]), margin=margin)
        search = GridSearchCV(
            _den(), grid, cv=FitImagesCV(), scoring=get_scorer("emv"), refit=rule
        ).fit(images)
        assert search.best_index_ == expected
        assert search.best_params_ == params[expected]
        assert search.best_estimator_.get_params()["lr"] == params[expected]["lr"]
        # The search and its rule survive clone and pickle (the rule is a parameter).
        assert repr(clone(search).refit) == repr(rule)
        assert pickle.loads(pickle.dumps(search)).best_index_ == expected


def test_prefer_default_multi_metric_and_per_image():
    images = _images(3)
    scoring = {"emv": get_scorer("emv"), "d": get_scorer("discrepancy")}
    grid = {"lr": [0.005, 0.03], "reg_noise_std": [0.0, 0.05]}
    rule = PreferDefault({"lr": 0.005, "reg_noise_std": 0.0}, margin=1e9, metric="d")
    search = GridSearchCV(_den(), grid, cv=PerImageCV(), scoring=scoring, refit=rule)
    search.fit(images)
    assert search.best_index_ == 0
    # The search's rule is used for each image: a huge margin keeps the default everywhere.
    assert best_params_per_image(search) == [search.cv_results_["params"][0]] * 3
    # margin 0 on the same search: the per-image arg-max of the named metric.
    res = search.cv_results_
    for metric in ("emv", "d"):
        chosen = best_params_per_image(search, prefer=PreferDefault(0, 0.0, metric=metric))
        for i, params in enumerate(chosen):
            assert params == res["params"][int(np.argmax(res[f"split{i}_test_{metric}"]))]
    with pytest.raises(ValueError, match="no test scores named 'score'.*metric="):
        PreferDefault(0)(res)
    # scikit-learn's score() looks the callable refit up among the scorers (its issue
    # 17058); the documented way round scores the refit estimator with the rule's metric.
    with pytest.raises(KeyError):
        search.score(images)
    own = search.scorer_[rule.metric](search.best_estimator_, images)
    assert own == get_scorer("discrepancy")(search.best_estimator_, images)
    with pytest.raises(TypeError, match="prefer must be a PreferDefault"):
        best_params_per_image(search, prefer=0)


def test_prefer_default_errors_keep_the_searchs_results():
    # scikit-learn calls refit after every fit and drops cv_results_ when it raises.
    images = _images(1)
    search = GridSearchCV(
        _den(),
        {"lr": [0.005, 0.03]},
        cv=FitImagesCV(),
        scoring=get_scorer("emv"),
        refit=PreferDefault({"lr": 0.01}),  # a default the grid does not hold
    )
    with pytest.raises(ValueError, match="no candidate match.*not lost") as info:
        search.fit(images)
    assert not hasattr(search, "cv_results_")
    kept = info.value.cv_results
    assert [p["lr"] for p in kept["params"]] == [0.005, 0.03]
    assert np.isfinite(kept["mean_test_score"]).all()


# ------------------------------------------------------------------ AverageOfBest
GRID = {"lr": [0.01, 0.03], "reg_noise_std": [0.0, 0.05]}


def _noisy_batch(n=2, size=16):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = 0.5 + 0.3 * np.sin(4 * xx) * np.cos(3 * yy)
    return np.stack([np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1) for _ in range(n)])[
        ..., None
    ]


def test_average_of_best_averages_the_top_scored_fits_of_each_image():
    X = _noisy_batch()
    avg = AverageOfBest(_den(), GRID, n_best=2).fit(X)
    fitted = fit_candidates(_den(), X, ParameterGrid(GRID))
    scorer = get_scorer("no_reference")
    expected_scores = np.stack([scorer.score_images(est, X) for est in fitted])
    np.testing.assert_array_equal(avg.scores_, expected_scores)
    assert avg.candidates_ == list(ParameterGrid(GRID))
    assert avg.selected_.shape == (4, 2) and avg.n_images_ == 2
    for i in range(2):
        top = np.argsort(-expected_scores[:, i])[:2]
        assert set(np.flatnonzero(avg.selected_[:, i])) == set(top)
        mean = np.mean([fitted[k].reconstruction_[i] for k in top], axis=0)
        np.testing.assert_allclose(avg.reconstruction_[i], mean, rtol=0, atol=1e-7)
    assert avg.reconstruction_.shape == X.shape
    assert avg.reconstruction_.dtype == fitted[0].reconstruction_.dtype
    # The average is not one of the fits (unless they agree), and n_best=1 is the arg-max.
    best = AverageOfBest(_den(), GRID, n_best=1).fit(X)
    for i in range(2):
        k = int(np.argmax(expected_scores[:, i]))
        np.testing.assert_array_equal(best.reconstruction_[i], fitted[k].reconstruction_[i])
        assert not np.allclose(avg.reconstruction_[i], best.reconstruction_[i])


def test_average_of_best_is_scored_against_clean_images():
    # No skdip scorer took it (TypeError) and it had no score method, so neither
    # cross_validate nor a search could evaluate it.
    from skdip.metrics import psnr
    from skdip.model_selection import FitImagesCV

    X = _noisy_batch()
    size = X.shape[1]
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack([0.5 + 0.3 * np.sin(4 * xx) * np.cos(3 * yy)] * len(X))[..., None]
    avg = AverageOfBest(_den(), GRID, n_best=2).fit(X)
    expected = np.mean([psnr(c, r) for c, r in zip(clean, avg.reconstruction_, strict=True)])
    assert avg.score(X, clean) == pytest.approx(expected)
    assert get_scorer("psnr")(avg, X, clean) == pytest.approx(expected)
    ssim = get_scorer("ssim")(avg, X, clean)
    assert 0 < ssim <= 1
    with pytest.raises(TypeError, match="averages several fits: it has no running variance"):
        get_scorer("emv")(avg, X)
    with pytest.raises(ValueError, match="scored against clean images only"):
        avg.score(X)
    # New images: solved by a fresh copy, as transform does.
    assert avg.score(X[:1], clean[:1]) == pytest.approx(psnr(clean[0], avg.transform(X[:1])[0]))
    scores = cross_validate(
        AverageOfBest(_den(), GRID, n_best=2),
        X,
        clean,
        cv=FitImagesCV(),
        scoring=get_scorer("psnr"),
    )["test_score"]
    assert scores[0] == pytest.approx(expected)
    # A search over n_best, with the estimator's own score.
    search = GridSearchCV(
        AverageOfBest(_den(), GRID), {"n_best": [1, 2]}, cv=FitImagesCV(), refit=False
    ).fit(X, clean)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_average_of_best_has_the_estimators_tags_and_width():
    from sklearn.utils import get_tags

    avg = AverageOfBest(DIPInpainter(generator=TINY, max_iter=3, early_stopping=None), GRID)
    tags = get_tags(avg)
    assert tags.input_tags.allow_nan and tags.input_tags.three_d_array
    assert "float32" in tags.transformer_tags.preserves_dtype
    assert AverageOfBest(_den(), GRID, n_best=2).fit(_images(1)[0]).n_features_in_ == 16


def test_average_of_best_solves_new_images_once_for_several_scorers(candidate_runs):
    X = _noisy_batch(3)
    clean = np.clip(X, 0, 1)
    avg = AverageOfBest(_den(), {"lr": [0.01, 0.03]}, n_best=2).fit(X[:2])
    assert len(candidate_runs) == 1
    for scorer in (get_scorer("psnr"), get_scorer("ssim"), get_scorer("psnr")):
        scorer(avg, X[2:], clean[2:])
    avg.transform(X[2:])
    assert len(candidate_runs) == 2  # one solve of the grid, for all four
    avg.set_params(n_best=1)  # new parameters: solved again
    get_scorer("psnr")(avg, X[2:], clean[2:])
    assert len(candidate_runs) == 3


def test_average_of_best_forgets_the_width_of_an_earlier_fit():
    avg = AverageOfBest(_den(), GRID, n_best=2).fit(_images(1)[0])
    assert avg.n_features_in_ == 16
    avg.fit([_images(1)[0], _images(1, (20, 12))[0]])
    assert not hasattr(avg, "n_features_in_")


def test_average_of_best_keeps_the_input_layout():
    X = _noisy_batch(2)
    single = AverageOfBest(_den(), GRID, n_best=2).fit_transform(X[0, ..., 0])
    assert single.shape == (16, 16)
    listed = AverageOfBest(_den(), GRID, n_best=2).fit_transform([X[0], X[1, :12, :14]])
    assert isinstance(listed, list) and [a.shape for a in listed] == [(16, 16, 1), (12, 14, 1)]
    np.testing.assert_allclose(listed[0], AverageOfBest(_den(), GRID, n_best=2).fit_transform(X[0]))


def test_average_of_best_transform_reuses_the_fit_and_leaves_it_alone(candidate_runs):
    X = _noisy_batch(1)
    avg = AverageOfBest(_den(), GRID, n_best=2).fit(X)
    kept = avg.reconstruction_.copy()
    del candidate_runs[:]  # count from here
    calls = candidate_runs
    np.testing.assert_array_equal(avg.transform(), kept)
    np.testing.assert_array_equal(avg.transform(X.copy()), kept)
    assert calls == []
    other = avg.transform(_noisy_batch(1)[:, ::-1])
    assert len(calls) == 1 and not np.allclose(other, kept)
    np.testing.assert_array_equal(avg.reconstruction_, kept)


def test_average_of_best_skips_fits_that_cannot_be_scored(monkeypatch):
    import skdip.model_selection as ms

    X = _noisy_batch(1)
    real = ms._finite_scores
    seen = []

    def some_nan(scorer, est, X):
        seen.append(1)
        scores = real(scorer, est, X)
        return scores * np.nan if len(seen) in (1, 2) else scores

    monkeypatch.setattr(ms, "_finite_scores", some_nan)
    avg = AverageOfBest(_den(), GRID, n_best=3).fit(X)
    assert np.isnan(avg.scores_[:2]).all()
    np.testing.assert_array_equal(avg.selected_[:, 0], [False, False, True, True])
    monkeypatch.setattr(ms, "_finite_scores", lambda scorer, est, X: np.array([np.inf]))
    with pytest.raises(ValueError, match="no setting could be scored on image 0"):
        AverageOfBest(_den(), GRID).fit(X)


def test_average_of_best_validates_its_parameters():
    X = _noisy_batch(1)
    with pytest.raises(InvalidParameterError, match="n_best"):
        AverageOfBest(_den(), GRID, n_best=0).fit(X)
    with pytest.raises(InvalidParameterError, match="scoring"):
        AverageOfBest(_den(), GRID, scoring="psnr").fit(X)
    with pytest.raises(ValueError, match="unknown|Invalid parameter"):
        AverageOfBest(_den(), {"learning_rate": [0.1]}).fit(X)
    with pytest.raises(TypeError, match="batched fitting"):
        AverageOfBest(BlindDeblurrer(generator=TINY), {"lr": [0.01]}).fit(X)
    # An empty list of grids (ParameterGrid yields nothing): refused, not an average
    # of no estimate.
    with pytest.raises(ValueError, match="param_grid holds no setting"):
        AverageOfBest(_den(), []).fit(X)


def test_average_of_best_rejects_bad_images_and_leaves_the_callers_alone():
    X = _noisy_batch(1)[0]
    before = X.copy()
    avg = AverageOfBest(_den(), GRID, n_best=2).fit(X)
    np.testing.assert_array_equal(X, before)
    bad = X.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        AverageOfBest(_den(), GRID).fit(bad)
    with pytest.raises(ValueError, match="infinity"):
        avg.transform(np.where(bad == bad, bad, np.inf))
    with pytest.raises(ValueError, match="got an array with 1 dimension"):
        AverageOfBest(_den(), GRID).fit(np.ones(5))
    with pytest.raises(TypeError, match="array-like image"):
        AverageOfBest(_den(), GRID).fit("image.png")
    # More best settings than the grid holds: every setting is averaged.
    every = AverageOfBest(_den(), GRID, n_best=10).fit(X)
    assert every.selected_.all()


@pytest.mark.parametrize(
    "scores, n_best, margin, expected",
    [
        ([-3.0, -1.0, -1.5, -2.2], None, None, [1, 2, 3, 0]),
        ([-3.0, -1.0, -1.5, -2.2], 2, None, [1, 2]),
        ([-3.0, -1.0, -1.5, -2.2], None, 1.0, [1, 2]),
        ([-3.0, -1.0, -1.5, -2.0], None, 1.0, [1, 2, 3]),  # exactly at the margin: kept
        ([-3.0, -1.0, -1.5, -2.2], None, 0.0, [1]),
        ([-1.0, -1.0, -1.5, -2.2], None, 0.0, [0, 1]),  # ties keep the candidates' order
        ([-3.0, -1.0, -1.5, -2.2], 1, 5.0, [1]),  # both limits: the tighter wins
        ([np.nan, -1.0, np.inf, -np.inf], None, None, [1]),  # unscorable: never chosen
        ([np.nan, np.nan], 3, 1.0, []),
    ],
)
def test_best_scored(scores, n_best, margin, expected):
    chosen = best_scored(scores, n_best=n_best, margin=margin)
    assert chosen.dtype.kind == "i"
    assert chosen.tolist() == expected


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_best": 0}, ValueError, "n_best"),
        ({"n_best": 2.0}, TypeError, "n_best"),
        ({"n_best": True}, TypeError, "n_best"),
        ({"margin": -0.1}, ValueError, "margin"),
        ({"margin": np.nan}, ValueError, "margin"),
        ({"margin": np.inf}, ValueError, "margin"),
        ({"margin": "1"}, TypeError, "margin"),
    ],
)
def test_best_scored_rejects_bad_limits(kwargs, error, match):
    with pytest.raises(error, match=match):
        best_scored([1.0, 2.0], **kwargs)
    with pytest.raises(ValueError, match="1-D"):
        best_scored([[1.0, 2.0]])


def test_best_scored_rejects_non_numbers_and_leaves_the_scores_alone():
    with pytest.raises(TypeError, match="scores must be numbers"):
        best_scored(["a", "b"])
    with pytest.raises(TypeError, match="scores must be numbers"):
        best_scored([{"x": 1}])
    scores = np.array([-2.0, np.nan, -1.0, np.inf])
    before = scores.copy()
    assert best_scored(scores, n_best=2, margin=0.5).tolist() == [2]
    np.testing.assert_array_equal(scores, before)


def test_best_scored_reads_masked_scores_as_unscored_and_takes_tensors():
    # np.asarray read the value under a mask: a masked 5.0 was chosen first.
    scores = np.ma.masked_array([1.0, 5.0, 2.0], mask=[False, True, False])
    assert best_scored(scores).tolist() == [2, 0]
    assert best_scored(np.ma.masked_array([1, 5, 2], mask=[0, 1, 0])).tolist() == [2, 0]
    assert best_scored(np.ma.masked_array([1.0, 2.0], mask=[True, True])).tolist() == []
    np.testing.assert_array_equal(scores.data, [1.0, 5.0, 2.0])  # left alone
    # A masked distance never joins the default, as NaN does not.
    distances = np.ma.masked_array([0.0, 0.1, 0.2], mask=[False, True, False])
    chosen = best_scored([1.0, 3.0, 2.0], default=0, margin=5, distances=distances, max_distance=1)
    assert chosen.tolist() == [0, 2]
    # A tensor that requires grad (scores kept from a torch computation) is read as numbers.
    tensor = torch.tensor([1.0, 3.0, 2.0], requires_grad=True)
    assert best_scored(tensor).tolist() == [1, 2, 0]


def _fix_scores(monkeypatch, fixed):
    """Each fit's scores: row k of ``fixed`` for setting k (again for every fit)."""
    import skdip.model_selection as ms

    rows = itertools.cycle(fixed)
    monkeypatch.setattr(ms, "_finite_scores", lambda scorer, est, X: next(rows))


def _assert_averages_of(avg, fitted, members_per_image):
    """Each image's result is the mean of its members' estimates."""
    for i, members in enumerate(members_per_image):
        mean = np.mean([fitted[k].reconstruction_[i] for k in members], axis=0)
        np.testing.assert_allclose(avg.reconstruction_[i], mean, rtol=0, atol=1e-7)


def test_average_of_best_margin_averages_the_settings_the_score_cannot_tell_apart(monkeypatch):
    X = _noisy_batch(2)
    fixed = np.array([[-1.0, -4.0], [-1.8, -1.0], [-2.5, -1.9], [-1.2, -3.5]])
    _fix_scores(monkeypatch, fixed)
    avg = AverageOfBest(_den(), GRID, n_best=None, margin=1.0).fit(X)
    fitted = fit_candidates(_den(), X, ParameterGrid(GRID))
    # Image 0: settings 0, 3, 1 lie within 1 of the best; image 1: settings 1 and 2.
    np.testing.assert_array_equal(avg.selected_[:, 0], [True, True, False, True])
    np.testing.assert_array_equal(avg.selected_[:, 1], [False, True, True, False])
    _assert_averages_of(avg, fitted, ([0, 1, 3], [1, 2]))
    # n_best caps the members: the two best of image 0.
    capped = AverageOfBest(_den(), GRID, n_best=2, margin=1.0).fit(X)
    np.testing.assert_array_equal(capped.selected_[:, 0], [True, False, False, True])
    np.testing.assert_array_equal(capped.selected_[:, 1], [False, True, True, False])


def test_average_of_best_refuses_a_bad_margin_before_fitting(monkeypatch):
    import skdip.model_selection as ms

    monkeypatch.setattr(ms, "fit_candidates", lambda *a, **k: pytest.fail("fitted"))
    X = _noisy_batch(1)
    for margin in (-1.0, np.inf, np.nan, "1"):
        with pytest.raises(ValueError, match="margin"):
            AverageOfBest(_den(), GRID, margin=margin).fit(X)
    with pytest.raises(ValueError, match="n_best"):
        AverageOfBest(_den(), GRID, n_best=0).fit(X)


def test_average_of_best_refuses_settings_that_change_the_output_shape():
    y = _noisy_batch(1)[0, :8, :8]
    sr = DIPSuperResolver(generator=TINY, max_iter=3, early_stopping=None, random_state=0)
    with pytest.raises(ValueError, match="different shapes"):
        AverageOfBest(sr, {"scale": [2, 3]}, n_best=2).fit(y)


def test_average_of_best_clones_and_pickles():
    X = _noisy_batch(1)
    avg = AverageOfBest(_den(), GRID, n_best=2, scoring="emv")
    twin = clone(avg)
    assert twin.get_params()["n_best"] == 2 and twin.estimator is not avg.estimator
    avg.fit(X)
    restored = pickle.loads(pickle.dumps(avg))
    np.testing.assert_array_equal(restored.transform(X), avg.reconstruction_)


# ------------------------------------------------------------ refusals before fits
def test_average_of_best_refuses_a_scorer_it_cannot_use_before_fitting(candidate_runs):

    calls = candidate_runs
    X = _noisy_batch(1)
    with pytest.raises(ValueError, match="judges the estimate picked by EMV"):
        AverageOfBest(_den(early_stopping="wmv", max_iter=300), GRID, scoring="emv").fit(X)
    with pytest.raises(InvalidParameterError, match="criterion"):
        AverageOfBest(_den(), GRID, scoring=NoReferenceScorer(criterion="discrepency")).fit(X)
    # Requirements of the criterion on the estimator: all settings were fitted, then
    # "no setting could be scored", the cause only in warnings.
    inpainter = DIPInpainter(generator=TINY, max_iter=6, random_state=0, device="cpu")
    grid = {"lr": [0.01, 0.02]}
    with pytest.raises(ValueError, match="needs loss='mse'"):
        AverageOfBest(inpainter.set_params(loss="l1"), grid).fit(X)
    whiteness = NoReferenceScorer(criterion="discrepancy_whiteness")
    with pytest.raises(ValueError, match="whiteness test needs the residual image"):
        AverageOfBest(inpainter.set_params(loss="mse"), grid, scoring=whiteness).fit(X)
    assert calls == []


def test_average_of_best_leaves_out_a_setting_whose_scorer_raises(monkeypatch):

    X = _noisy_batch(1)
    real = NoReferenceScorer.score_images
    calls = []

    def first_fails(self, est, X):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("no running-variance signal was recorded")
        return real(self, est, X)

    monkeypatch.setattr(NoReferenceScorer, "score_images", first_fails)
    with pytest.warns(UserWarning, match="could not be scored and is left out"):
        avg = AverageOfBest(_den(), GRID, n_best=2).fit(X)
    assert np.isnan(avg.scores_[0, 0]) and np.isfinite(avg.scores_[1:, 0]).all()
    assert not avg.selected_[0, 0] and avg.selected_[:, 0].sum() == 2


def test_average_of_best_transform_of_the_fitted_images_takes_their_layout(candidate_runs):
    X = _noisy_batch(2)
    avg = AverageOfBest(_den(), GRID, n_best=2).fit(X)
    del candidate_runs[:]  # count from here
    calls = candidate_runs
    as_list = avg.transform(list(X))
    assert isinstance(as_list, list) and [a.shape for a in as_list] == [(16, 16, 1)] * 2
    np.testing.assert_array_equal(np.stack(as_list), avg.reconstruction_)
    grey = AverageOfBest(_den(), GRID, n_best=2).fit(X[0, ..., 0])
    assert grey.transform(X[0]).shape == (16, 16, 1)  # same pixels, given with a channel axis
    assert grey.transform().shape == (16, 16)
    assert len(calls) == 1  # the second AverageOfBest's fit; no transform refitted


def test_best_params_per_image_needs_per_image_splits():
    search = GridSearchCV(
        _den(), {"lr": [0.01, 0.03]}, cv=FitImagesCV(), scoring=get_scorer("emv"), refit=False
    ).fit(_images(3))
    with pytest.raises(ValueError, match="needs a search run with cv=PerImageCV"):
        best_params_per_image(search)


def test_fit_candidates_explains_that_a_grid_needs_parameter_grid(count_fits):
    with pytest.raises(TypeError, match="ParameterGrid"):
        fit_candidates(_den(), _images(1), {"lr": [0.01, 0.03]})
    # GridSearchCV's order (estimator, grid, X), or settings that are no dicts: named
    # (was "dictionary update sequence element #0 has length ...").
    with pytest.raises(TypeError, match="the images before the settings"):
        fit_candidates(_den(), list(ParameterGrid({"lr": [0.01, 0.03]})), _images(1))
    with pytest.raises(TypeError, match="candidates must be a sequence of settings"):
        fit_candidates(_den(), _images(1), ["lr"])
    assert count_fits == []


def test_prefer_default_compares_integers_exactly():
    # A relative tolerance would take two large seeds 600 apart for one setting.
    params = [{"random_state": 1234567890}, {"random_state": 1234568500}]
    assert PreferDefault({"random_state": 1234568500}).select(params, [0.0, 0.0]) == 1


def test_prefer_default_matches_float32_grid_values():
    params = [{"lr": np.float32(0.01)}, {"lr": np.float32(0.03)}]
    assert PreferDefault({"lr": 0.01}).select(params, [0.0, 0.5]) == 0
    assert PreferDefault({"lr": 0.03}).select(params, [0.0, 0.5]) == 1


def test_average_of_best_transform_passes_per_image_inputs(candidate_runs):
    X = _noisy_batch(1)[0]
    mask = np.ones(X.shape[:2], bool)
    mask[4:9, 3:8] = False
    inp = DIPInpainter(
        generator=TINY, max_iter=6, early_stopping=None, random_state=0, device="cpu"
    )  # the CPU: bit-for-bit comparison
    avg = AverageOfBest(inp, GRID, n_best=2).fit(X, mask=mask)
    del candidate_runs[:]  # count from here
    calls = candidate_runs
    np.testing.assert_array_equal(avg.transform(X.copy(), mask=mask), avg.reconstruction_)
    assert calls == []  # the fitted images with their mask: reused
    other = np.ones_like(mask)
    other[:5, :5] = False
    new = avg.transform(X, mask=other)  # same pixels, another mask: a new problem
    assert len(calls) == 1 and calls[0]["mask"] is other
    expected = AverageOfBest(inp, GRID, n_best=2).fit(X, mask=other).reconstruction_
    np.testing.assert_array_equal(new, expected)


def test_fit_candidates_tells_a_callback_naming_image_the_images_index_in_x():
    # Every setting's fits run in one batch: each member's callback names its image.
    seen = []

    def callback(iteration, loss, estimate, image=None):
        seen.append((image, iteration))

    grid = [{"lr": 0.01}, {"lr": 0.02}]
    fit_candidates(_den(max_iter=2, callback=callback), _images(3), grid)
    assert sorted(seen) == sorted([(i, it) for i in range(3) for it in range(2)] * 2)


def test_one_ctrl_c_ends_every_fit_of_fit_candidates(ctrl_c_at):
    ctrl_c = ctrl_c_at(2)
    other = SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1)
    candidates = [{"generator": TINY}, {"generator": other}]  # fitted apart
    with pytest.warns(RuntimeWarning, match=r"1 of 2 \(setting, image\) fits were not fitted"):
        fitted = fit_candidates(_den(callback=ctrl_c, max_iter=10), _images(1)[0], candidates)
    assert [est.stopped_by_ for est in fitted] == ["interrupted", "interrupted"]
    assert fitted[0].n_iter_ == 2 and fitted[1].n_iter_ == 0 and len(ctrl_c.calls) == 2


def test_average_of_best_after_ctrl_c_says_so():
    def ctrl_c(it, loss, estimate):
        if it == 2:
            raise KeyboardInterrupt

    X = _noisy_batch(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # "no setting could be scored ... check the scorer's requirements (e.g. its rule)"
        with pytest.raises(FitInterrupted, match=r"interrupted \(Ctrl-C\)"):
            AverageOfBest(_den(callback=ctrl_c, max_iter=10), GRID).fit(X)
    # One batched run was cut: no fit was left without a step, so no such warning.
    assert not [w for w in caught if "were not fitted" in str(w.message)]


@pytest.mark.parametrize(
    "scores, n_best, margin, default, expected",
    [
        # The default first, then the others scoring at least its score minus margin.
        ([-3.0, -1.0, -1.5, -2.2], None, 0.5, 3, [3, 1, 2]),
        ([-3.0, -1.0, -1.5, -2.2], None, None, 3, [3, 1, 2]),  # margin None: 0
        ([-3.0, -1.0, -1.5, -2.2], None, 1.0, 3, [3, 1, 2, 0]),  # -3.2 and up
        ([-3.0, -1.0, -1.5, -2.2], 2, 0.5, 3, [3, 1]),  # n_best counts the default
        ([-3.0, -1.0, -1.5, -2.2], 1, 0.5, 3, [3]),
        ([-3.0, -1.0, -1.5, -2.2], None, 0.0, 1, [1]),  # the best default stays alone
        ([-3.0, -1.0, -1.5, -2.2], None, 0.5, 1, [1, 2]),
        ([-2.0, -2.0, -1.5], None, 0.0, 1, [1, 2, 0]),  # a tie with it joins
        ([np.nan, -1.0, -1.5], 2, 0.5, 0, [1, 2]),  # an unscorable default: left out
        ([-1.0, np.nan, np.inf], None, 5.0, 0, [0]),
    ],
)
def test_best_scored_anchored_on_a_default(scores, n_best, margin, default, expected):
    chosen = best_scored(scores, n_best=n_best, margin=margin, default=default)
    assert chosen.dtype.kind == "i"
    assert chosen.tolist() == expected


@pytest.mark.parametrize(
    "default, error",
    [(-1, ValueError), (4, ValueError), (1.0, TypeError), (True, TypeError), ("0", TypeError)],
)
def test_best_scored_refuses_a_default_that_is_no_candidate(default, error):
    with pytest.raises(error, match=r"default must be an int in \[0, 3\].*index of a candidate"):
        best_scored([1.0, 2.0, 3.0, 4.0], default=default)


def test_average_of_best_anchored_on_a_default_always_averages_it(monkeypatch):
    X = _noisy_batch(2)
    fixed = np.array([[-1.0, -4.0], [-1.8, -1.0], [-2.5, -1.9], [-1.2, -3.5]])
    _fix_scores(monkeypatch, fixed)
    # Candidate 2 of ParameterGrid(GRID) is lr=0.03, reg_noise_std=0.0.
    default = {"lr": 0.03, "reg_noise_std": 0.0}
    avg = AverageOfBest(_den(), GRID, n_best=3, margin=0.5, default=default).fit(X)
    assert avg.candidates_[2] == default and avg.default_index_ == 2
    fitted = fit_candidates(_den(), X, ParameterGrid(GRID))
    # Image 0: the default scores -2.5; settings 0, 3 and 1 all score -3.0 or better,
    # and the best two join it. Image 1: -1.9; only setting 1 (-1.0) scores -2.4 or better.
    np.testing.assert_array_equal(avg.selected_[:, 0], [True, False, True, True])
    np.testing.assert_array_equal(avg.selected_[:, 1], [False, True, True, False])
    _assert_averages_of(avg, fitted, ([2, 0, 3], [2, 1]))
    # n_best=1: the default's own estimate, whatever the scores.
    alone = AverageOfBest(_den(), GRID, n_best=1, default=2).fit(X)
    np.testing.assert_array_equal(alone.reconstruction_, fitted[2].reconstruction_)


def test_average_of_best_refuses_a_bad_default_before_fitting(monkeypatch):
    import skdip.model_selection as ms

    monkeypatch.setattr(ms, "fit_candidates", lambda *a, **k: pytest.fail("fitted"))
    X = _noisy_batch(1)
    with pytest.raises(ValueError, match="no candidate match"):
        AverageOfBest(_den(), GRID, default={"lr": 0.02}).fit(X)
    with pytest.raises(ValueError, match="2 candidates match"):
        AverageOfBest(_den(), GRID, default={"lr": 0.01}).fit(X)
    with pytest.raises(ValueError, match="out of range"):
        AverageOfBest(_den(), GRID, default=4).fit(X)
    with pytest.raises((TypeError, InvalidParameterError), match="default"):
        AverageOfBest(_den(), GRID, default=True).fit(X)
    with pytest.raises(InvalidParameterError, match="default"):
        AverageOfBest(_den(), GRID, default="skip-small").fit(X)


def test_average_of_best_matches_an_array_default_by_content_in_clones():
    # clone copies the grid and the default apart: matching by identity failed there,
    # so new images (solved by a clone) and searches could not find the default.
    from skdip import DIPDeconvolver

    box, cross = np.ones((3, 3)) / 9, np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 8.0
    X = _noisy_batch(1)
    deconv = DIPDeconvolver(kernel=box, generator=TINY, max_iter=3, early_stopping=None)
    grid = {"kernel": [box, cross]}
    avg = AverageOfBest(deconv, grid, default={"kernel": cross.copy()}, n_best=1).fit(X)
    assert avg.default_index_ == 1
    assert clone(avg).fit(X).default_index_ == 1
    np.testing.assert_array_equal(avg.transform(X[:, ::-1].copy()).shape, X.shape)
    with pytest.raises(ValueError, match="no candidate match"):
        AverageOfBest(deconv, grid, default={"kernel": box.T[:2]}).fit(X)
    torch_default = {"kernel": torch.as_tensor(cross)}
    assert AverageOfBest(deconv, grid, default=torch_default, n_best=1).fit(X).default_index_ == 1


def test_reference_scorers_check_y_before_solving_new_images():
    from skdip.metrics import ReferenceScorer

    X = _noisy_batch(1)[0]
    den = _den().fit(X)
    new = X[::-1].copy()
    for scorer, y, match in [
        (get_scorer("psnr"), np.zeros((12, 12)), "clean reference y has shape"),
        (ReferenceScorer("psnr"), new * 3, "more than data_range"),
        (
            ReferenceScorer("psnr", data_range=255),
            (new * 255).astype(np.uint8),
            "data range is 1",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            scorer(den, (new * 255).astype(np.uint8) if "range is" in match else new, y)
        assert not hasattr(den, "_last_solve")  # nothing was solved
    avg = AverageOfBest(_den(), GRID, n_best=2).fit(X)
    with pytest.raises(ValueError, match="clean reference y has shape"):
        avg.score(new, np.zeros((12, 12)))
    assert not hasattr(avg, "_last_solve")


@pytest.mark.parametrize(
    "a, b, same",
    [
        (np.array(0.01, np.float32), 0.01, True),  # a 0-d float32 against its float
        (torch.tensor(0.01), 0.01, True),
        (np.array([0.01]), 0.01, True),
        (np.ones((3, 3)), np.ones((3, 3), np.float32), True),
        (np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), True),  # a copy with NaN
        (np.ones(3), np.ones(4), False),
        (np.ones((3, 3)), np.ones((3, 3)) * 1.001, False),
        (np.ones(2), 2.0, False),
        (np.array(["a"]), "a", True),
        (np.array(np.nan), float("nan"), True),
        (np.ones((1, 1)), np.ones(1), False),  # other shapes
        (np.array([10**7]), np.array([10**7 + 5.0]), False),  # exact unless both float
        (np.array([True, False]), np.array([1 - 1e-7, 0.0]), False),
        (np.full(3, 0.1 + 0.2j, np.complex64), np.full(3, 0.1 + 0.2j), True),
    ],
)
def test_default_values_match_arrays_by_content(a, b, same):
    from skdip.model_selection import _same_value

    assert _same_value(a, b) is same and _same_value(b, a) is same


@pytest.mark.parametrize(
    "distances, max_distance, n_best, expected",
    [
        # Scores [-3.0, -1.0, -1.5, -2.2], default 3, margin 0.5: [3, 1, 2] by score alone.
        ([-9.0, -10.0, -14.0, np.nan], -12.0, None, [3, 2]),  # 1 lies too far away
        ([-9.0, -13.0, -14.0, np.nan], -12.0, None, [3, 1, 2]),
        ([-9.0, -13.0, -14.0, np.nan], -12.0, 2, [3, 1]),  # the limit first, then n_best
        ([-9.0, -10.0, -14.0, np.nan], -12.0, 2, [3, 2]),
        ([-20.0, np.nan, -12.0, np.nan], -12.0, None, [3, 2]),  # at the limit joins; NaN not
        ([-20.0, -20.0, -20.0, np.nan], -np.inf, None, [3]),
        ([-9.0, -10.0, -14.0, np.nan], np.inf, None, [3, 1, 2]),  # the score's choice
    ],
)
def test_best_scored_limits_the_distance_to_the_default(distances, max_distance, n_best, expected):
    scores = [-3.0, -1.0, -1.5, -2.2]
    given = np.array(distances)
    chosen = best_scored(
        scores, n_best=n_best, margin=0.5, default=3, distances=given, max_distance=max_distance
    )
    assert chosen.tolist() == expected
    np.testing.assert_array_equal(given, distances)  # the caller's array is left alone
    # A default that could not be scored: chosen as without it, the limit unused.
    unscored = best_scored(
        [-3.0, -1.0, -1.5, np.nan], default=3, distances=distances, max_distance=-50
    )
    assert unscored.tolist() == [1, 2, 0]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_distance": -12.0, "distances": [0.0] * 3}, ValueError, "pass default too"),
        ({"max_distance": -12.0, "default": 0}, ValueError, "needs distances"),
        ({"max_distance": -12.0, "default": 0, "distances": [0.0] * 2}, ValueError, "one value"),
        ({"max_distance": -12.0, "default": 0, "distances": ["a", 1, 2]}, TypeError, "numbers"),
        ({"max_distance": np.nan, "default": 0, "distances": [0.0] * 3}, ValueError, "a number"),
        ({"max_distance": True, "default": 0, "distances": [0.0] * 3}, TypeError, "a number"),
    ],
)
def test_best_scored_refuses_a_bad_distance_limit(kwargs, error, match):
    with pytest.raises(error, match=match):
        best_scored([-1.0, -2.0, -3.0], **kwargs)


def test_average_of_best_leaves_out_settings_far_from_the_default(monkeypatch):
    X = _noisy_batch(2)
    # By score alone (margin 1 from the default, setting 2) every setting would join it.
    fixed = np.array([[-1.0, -1.0], [-1.8, -1.0], [-2.5, -1.9], [-1.2, -1.5]])
    _fix_scores(monkeypatch, fixed)
    fitted = fit_candidates(_den(), X, ParameterGrid(GRID))
    plain = AverageOfBest(_den(), GRID, n_best=None, margin=1.0, default=2).fit(X)
    assert plain.distances_ is None and plain.selected_.all()
    avg = AverageOfBest(_den(), GRID, n_best=None, margin=1.0, default=2, max_distance=0.0)
    avg.fit(X)
    # The distances, as documented: mean squared difference to the default's estimate
    # in dB relative to the noise variance the score uses (estimated from the image).
    from skdip.metrics._scorers import _noise_var

    for i in range(2):
        noise_var = _noise_var(X[i], None, 1.0)
        for k in range(4):
            spread = np.mean((fitted[k].reconstruction_[i] - fitted[2].reconstruction_[i]) ** 2)
            expected = -np.inf if k == 2 else 10 * np.log10(spread / noise_var)
            assert avg.distances_[k, i] == pytest.approx(expected, rel=1e-6)
    # A limit between the distances splits the settings: the near ones join, the far don't.
    limit = float(np.median(avg.distances_[[0, 1, 3], 0]))
    split = AverageOfBest(_den(), GRID, n_best=None, margin=1.0, default=2, max_distance=limit)
    split.fit(X)
    near = [k for k in (0, 1, 3) if avg.distances_[k, 0] <= limit]
    assert 0 < len(near) < 3
    np.testing.assert_array_equal(np.flatnonzero(split.selected_[:, 0]), sorted([2, *near]))
    ordered = [2, *sorted(near, key=lambda k: -fixed[k, 0])]
    _assert_averages_of(split, fitted, [ordered])
    # Below every distance: the default's own estimate.
    alone = AverageOfBest(_den(), GRID, n_best=None, margin=1.0, default=2, max_distance=-200.0)
    np.testing.assert_array_equal(alone.fit(X).reconstruction_, fitted[2].reconstruction_)


def test_average_of_best_distance_uses_the_scorers_sigma_on_the_images_scale():
    X = _noisy_batch(1)
    as_uint8 = np.round(X * 255).astype(np.uint8)
    scorer = get_scorer("no_reference", sigma=0.1)
    on_floats = AverageOfBest(_den(), GRID, default=2, max_distance=0.0, scoring=scorer).fit(X)
    scorer8 = get_scorer("no_reference", sigma=25.5)  # the same noise, in 0-255 units
    on_bytes = AverageOfBest(_den(), GRID, default=2, max_distance=0.0, scoring=scorer8)
    on_bytes.fit(as_uint8)
    fitted = fit_candidates(_den(), X, ParameterGrid(GRID))
    spread = np.mean((fitted[0].reconstruction_[0] - fitted[2].reconstruction_[0]) ** 2)
    assert on_floats.distances_[0, 0] == pytest.approx(10 * np.log10(spread / 0.01), rel=1e-6)
    # uint8 images are fitted on [0, 1]: sigma=25.5 there is 0.1, the distances alike
    # up to the rounding of the image to bytes.
    np.testing.assert_allclose(on_bytes.distances_, on_floats.distances_, atol=0.5)


def test_average_of_best_refuses_a_distance_limit_it_cannot_apply_before_fitting(monkeypatch):
    import skdip.model_selection as ms
    from skdip import DIPDeconvolver

    monkeypatch.setattr(ms, "fit_candidates", lambda *a, **k: pytest.fail("fitted"))
    X = _noisy_batch(1)
    with pytest.raises(ValueError, match="pass default too"):
        AverageOfBest(_den(), GRID, max_distance=-12.0).fit(X)
    deconv = DIPDeconvolver(kernel=np.ones((3, 3)) / 9, generator=TINY, max_iter=3)
    with pytest.raises(ValueError, match="DIPDeconvolver .* forward model"):
        AverageOfBest(deconv, {"lr": [0.01, 0.02]}, default=0, max_distance=-12.0).fit(X)
    with pytest.raises(ValueError, match="forward model or a noise model"):
        AverageOfBest(
            _den(),
            {"noise_model": [None, "sparse"]},
            default=0,
            max_distance=-12.0,
            scoring=NoReferenceScorer(criterion="variance"),
        ).fit(X)
    with pytest.raises(InvalidParameterError, match="max_distance"):
        AverageOfBest(_den(), GRID, default=0, max_distance="far").fit(X)
    for bad in (True, np.nan):
        with pytest.raises((ValueError, InvalidParameterError), match="max_distance"):
            AverageOfBest(_den(), GRID, default=0, max_distance=bad).fit(X)


def test_fitted_candidates_own_copies_of_the_grids_objects():
    # A generator object of the grid was shared by every fitted candidate and the
    # caller: tuning one fitted candidate changed the others' next solves.
    g = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)
    fitted = fit_candidates(
        _den(), _images(1), ParameterGrid({"generator": [g], "lr": [0.01, 0.02]})
    )
    assert fitted[0].generator is not g and fitted[0].generator is not fitted[1].generator
    fitted[0].set_params(generator__width=4)
    assert g.width == 8 and fitted[1].generator.width == 8


def test_average_of_best_matches_an_operator_default_after_clone():
    # clone copies param_grid and default apart; an operator compared by identity
    # then matched no candidate ("no candidate match the default").
    from skdip import DIPReconstructor
    from skdip.operators import PixelMask

    m1, m2 = np.ones((16, 16)), np.ones((16, 16))
    m1[4:8, 4:8] = 0
    m2[8:12, 8:12] = 0
    op1, op2 = PixelMask(m1), PixelMask(m2)
    base = DIPReconstructor(
        generator=TINY, max_iter=3, early_stopping=None, random_state=0, device="cpu"
    )
    avg = AverageOfBest(
        base,
        {"operator": [op1, op2]},
        default={"operator": op1},
        n_best=1,
        scoring=get_scorer("discrepancy", sigma=0.1),
    )
    assert clone(avg).fit(_images(1)[0]).default_index_ == 0
    # ... but a default of other content is no candidate
    avg.set_params(default={"operator": PixelMask(np.ones((16, 16)))})
    with pytest.raises(ValueError, match="default"):
        clone(avg).fit(_images(1)[0])


def test_a_kept_solve_is_not_reused_in_another_working_dtype():
    # torch's default dtype is no parameter, but the networks and data are made in it:
    # after torch.set_default_dtype(torch.float64) the float32 solve came back.
    X, new = _images(2)
    est = _den(max_iter=3).fit(X)
    avg = AverageOfBest(
        _den(max_iter=3),
        {"lr": [0.01, 0.02]},
        n_best=1,
        scoring=get_scorer("discrepancy", sigma=0.1),
    ).fit(X)
    before = est.transform(new), avg.transform(new)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        after = est.transform(new), avg.transform(new)
        expected = clone(est).fit(new).transform()
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_array_equal(after[0], expected)
    assert not np.array_equal(after[1], before[1])
    # Back in float32, the float32 solve is made again (only the last one is kept).
    np.testing.assert_array_equal(est.transform(new), before[0])


def test_kept_solves_notice_arrays_a_repr_prints_alike():
    # The kept-solve key read a partial's bound array and a grid's operators through
    # their repr, which elides the middle of large arrays (and prints masks alike).
    import functools

    from skdip import DIPReconstructor
    from skdip.operators import PixelMask

    weight = np.ones((40, 40), dtype=np.float32)

    def weighted_mse(pred, target, weight):
        w = torch.as_tensor(weight[: pred.shape[-2], : pred.shape[-1]])
        return (w * (pred - target) ** 2).mean()

    X, new = _images(2)
    est = _den(loss=functools.partial(weighted_mse, weight=weight)).fit(X)
    before = est.transform(new)
    weight[5:12, 5:12] = 0.0
    after = est.transform(new)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, clone(est).fit(new).transform())

    # ... and inside an operator: a FunctionOperator around such a partial.
    from skdip.operators import FunctionOperator

    kernel = np.full((3, 3), 1 / 9)

    def blur3(x, kernel):
        w = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)[None, None]
        w = w.repeat(x.shape[1], 1, 1, 1)
        return torch.nn.functional.conv2d(x, w, padding=1, groups=x.shape[1])

    op = FunctionOperator(functools.partial(blur3, kernel=kernel), linear=True)
    # On the CPU: a GPU's solves are not bit-reproducible, so they always differ.
    rec = DIPReconstructor(operator=op, generator=TINY, max_iter=3, random_state=0, device="cpu")
    rec.fit(X)
    before = rec.transform(new)
    kernel[1, 1] = 1.0
    assert not np.array_equal(before, rec.transform(new))

    m = np.ones((16, 16))
    m[::2, ::2] = 0
    op = PixelMask(m)
    base = DIPReconstructor(
        generator=TINY, max_iter=3, early_stopping=None, random_state=0, device="cpu"
    )
    avg = AverageOfBest(
        base,
        {"operator": [op], "lr": [0.01, 0.02]},
        n_best=2,
        scoring=get_scorer("discrepancy", sigma=0.1),
    ).fit(X)
    before = avg.transform(new)
    avg.param_grid["operator"][0].mask.copy_(torch.as_tensor(np.roll(m, 1, axis=0)))
    after = avg.transform(new)
    assert not np.array_equal(before, after)


# ------------------------------------------- AverageOfBest: Ctrl-C, shapes, routing, searches
@pytest.mark.parametrize(
    "batch_size, at, where, complete, n_iter",
    [
        # One setting after another: the 1st completes (6 steps), Ctrl-C in the 2nd's 3rd.
        (1, 9, "during the fit of setting 2 of 3 ({'lr': 0.02})", 1, [6, 3, 0]),
        # The three in one vectorised run (a callback per fit and step): cut in the 3rd step.
        (None, 7, "during the fits of settings [1, 2, 3] of 3 (fitted together)", 0, [3, 3, 3]),
    ],
)
def test_average_of_best_ctrl_c_gives_one_honest_error(
    ctrl_c_at, batch_size, at, where, complete, n_iter
):
    # It warned "keeping the best estimate so far" (nothing was kept), named the internal
    # fit_candidates, and ended with "...not scored. Fit again to score it." (no score was
    # asked for); a fitted AverageOfBest kept its earlier result.
    X = _noisy_batch(1)
    avg = AverageOfBest(_den(), {"lr": [0.01, 0.02, 0.03]}, batch_size=batch_size).fit(X)
    avg.set_params(estimator__callback=ctrl_c_at(at))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(FitInterrupted) as info:
            avg.fit(X)
    message = str(info.value)
    assert message.startswith(f"AverageOfBest was interrupted (Ctrl-C) {where}, "), message
    assert f"with {complete} of 3 settings fitted in full: nothing was averaged" in message
    assert "score" not in message and "fit_candidates" not in message
    assert isinstance(info.value, KeyboardInterrupt)  # a search stops
    assert [str(w.message) for w in caught] == []
    assert not hasattr(avg, "reconstruction_") and not hasattr(avg, "estimators_")
    fits = info.value.estimators
    assert [est.n_iter_[0] for est in fits] == n_iter  # per image: one here
    stopped = ["max_iter" if n == 6 else "interrupted" for n in n_iter]
    assert [est.stopped_by_[0] for est in fits] == stopped


def test_average_of_best_refuses_a_shape_changing_grid_before_any_fit(monkeypatch):
    # The refusal came after every setting was fitted (5.6 s at 16x16, 3 steps).
    import skdip.model_selection as ms

    monkeypatch.setattr(ms, "fit_candidates", lambda *a, **k: pytest.fail("fitted"))
    y = _noisy_batch(1)[0, :8, :8]
    sr = DIPSuperResolver(generator=TINY, max_iter=3, early_stopping=None, random_state=0)
    with pytest.raises(ValueError, match=r"different shapes \[\(16, 16, 1\), \(24, 24, 1\)\].*"):
        AverageOfBest(sr, {"scale": [2, 3]}, n_best=1).fit(y)
    with pytest.raises(
        ValueError, match=r"'scale': 2\} and \{'lr': 0.01, 'scale': 3\}.*before any fit"
    ):
        AverageOfBest(sr, {"scale": [2, 3], "lr": [0.01]}).fit([y, y])


def _inpainter(**kw):
    return DIPInpainter(
        generator=TINY, max_iter=6, early_stopping=None, random_state=0, device="cpu", **kw
    )


def test_average_of_best_routes_metadata_to_the_estimator(candidate_runs):
    # With routing enabled it could not pass a mask on: "not routed to any object".
    import sklearn
    from sklearn.exceptions import UnsetMetadataPassedError
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X = _noisy_batch(1)[0]
    mask = np.ones(X.shape[:2], bool)
    mask[4:9, 3:8] = False
    clean = np.clip(X, 0, 1)
    grid = {"lr": [0.01, 0.03]}
    reference = AverageOfBest(_inpainter(), grid, n_best=2).fit(X, mask=mask)
    expected, score = reference.reconstruction_, reference.score(X, clean, mask=mask)
    unmasked = AverageOfBest(_inpainter(), grid, n_best=2).fit(X).reconstruction_
    assert not np.array_equal(expected, unmasked)
    with sklearn.config_context(enable_metadata_routing=True):
        inner = _inpainter().set_fit_request(mask=True)
        inner.set_transform_request(mask=True).set_score_request(mask=True)
        last = make_pipeline(AverageOfBest(inner, grid, n_best=2)).fit(X, mask=mask)
        np.testing.assert_array_equal(last[-1].reconstruction_, expected)
        # Not the last step: the pipeline calls fit_transform.
        pipe = make_pipeline(AverageOfBest(inner, grid, n_best=2), FunctionTransformer())
        pipe.fit(X, mask=mask)
        avg = pipe[0]
        np.testing.assert_array_equal(avg.reconstruction_, expected)
        del candidate_runs[:]
        np.testing.assert_array_equal(avg.transform(X, mask=mask), expected)  # the fit reused
        assert avg.score(X, clean, mask=mask) == score
        assert candidate_runs == []  # transform and score reuse the fit
        with pytest.raises(UnsetMetadataPassedError, match="DIPInpainter.fit"):
            AverageOfBest(_inpainter(), grid).fit(X, mask=mask)
        with pytest.raises(UnsetMetadataPassedError, match="DIPInpainter.transform"):
            AverageOfBest(_inpainter().set_fit_request(mask=True), grid).fit(
                X, mask=mask
            ).transform(X, mask=mask)
        routing = AverageOfBest(inner, grid).get_metadata_routing()
        for method in ("fit", "fit_transform", "transform", "score"):
            assert routing.consumes(method, ["mask"]) == {"mask"}


def test_a_search_over_average_of_best_without_y_says_it_needs_clean_images():
    # Without y every score failed, NaN was recorded with warnings only, and best_params_
    # was set: the message now says what a search needs, and error_score="raise" stops.
    X = _noisy_batch(1)
    avg = AverageOfBest(_den(), {"lr": [0.01, 0.03]})
    search = GridSearchCV(avg, {"n_best": [1, 2]}, cv=FitImagesCV(), error_score="raise")
    with pytest.raises(ValueError, match=r"needs the clean images as y: search\.fit\(X, y\)"):
        search.fit(X)
    clean = np.clip(X, 0, 1)
    assert np.isfinite(search.fit(X, clean).cv_results_["mean_test_score"]).all()
    assert "Searches need clean references" in AverageOfBest.__doc__


def test_best_params_per_image_on_an_unfitted_search_is_not_fitted_error():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="GridSearchCV is not fitted yet"):
        best_params_per_image(GridSearchCV(_den(), {"lr": [0.01]}, cv=PerImageCV()))


# ------------------------------------------- the estimator's batch_size and n_jobs are not used
def test_fit_candidates_fits_a_noise_model_whatever_the_estimators_batch_size():
    # fit_candidates(DIPDenoiser(batch_size=4), ...) refused a noise_model setting ("use
    # batch_size=1"), though it batches by its own batch_size, never by the estimator's.
    X = _noisy_batch(2)
    candidates = [{"noise_model": None}, {"noise_model": "sparse"}]
    fitted = fit_candidates(_den(batch_size=4), X, candidates)
    expected = fit_candidates(_den(), X, candidates)
    for est, other in zip(fitted, expected, strict=True):
        np.testing.assert_array_equal(est.reconstruction_, other.reconstruction_)
    # The setting that cannot batch images gets 1, so that its copy can solve others too.
    assert [est.batch_size for est in fitted] == [4, 1]
    assert fitted[1].transform(X[:1] + 0.01).shape == X[:1].shape
    # (The discrepancy is refused with a noise model; the variance criterion is not.)
    variance = NoReferenceScorer(criterion="variance")
    avg = AverageOfBest(
        _den(batch_size=4), {"noise_model": [None, "sparse"]}, scoring=variance
    ).fit(X)
    assert [est.batch_size for est in avg.estimators_] == [4, 1]
    # A setting that names the batch_size itself asks for what cannot be: refused.
    with pytest.raises(ValueError, match="batch_size > 1 is not available with a noise_model"):
        fit_candidates(_den(), X, [{"noise_model": "sparse", "batch_size": 2}])
    with pytest.raises(InvalidParameterError, match="batch_size"):
        fit_candidates(_den(batch_size=0), X, candidates)  # an invalid one is not mended


def test_average_of_best_fits_in_the_calling_thread_whatever_the_estimators_n_jobs(ctrl_c_at):
    # The estimator's n_jobs is not used (fit_candidates runs every fit in this thread), so
    # under joblib's threading backend too a Ctrl-C is one FitInterrupted, and the notes of
    # the cut fits (InterruptionWarning) are held, not printed from worker threads.
    import threading

    import joblib

    threads = set()

    class Recording(ctrl_c_at):
        def __call__(self, it, loss, estimate):
            threads.add(threading.current_thread())
            return super().__call__(it, loss, estimate)

    den = _den(n_jobs=2, callback=Recording(9))
    avg = AverageOfBest(den, {"lr": [0.01, 0.02, 0.03]}, batch_size=1)
    with joblib.parallel_config(backend="threading"), warnings.catch_warnings(record=True) as c:
        warnings.simplefilter("always")
        with pytest.raises(FitInterrupted, match=r"during the fit of setting 2 of 3"):
            avg.fit(_noisy_batch(1))
    assert [str(w.message) for w in c] == []
    assert threads == {threading.current_thread()}


class _MeanMatcher(BaseEstimator):
    """Scores how close ``a`` is to the image's mean (``inf_at``: a setting scoring +inf)."""

    def __init__(self, a=0.0, inf_at=None):
        self.a, self.inf_at = a, inf_at

    def fit(self, X, y=None):
        return self

    def score(self, X, y=None):
        if self.a == self.inf_at:
            return float("inf")
        return -abs(float(X[0].mean()) - self.a)


# A bug the suite once missed: best_params_per_image ordered the splits as strings (split10 before
# split2)
def test_best_params_per_image_keeps_the_image_order_beyond_ten_images():
    images = [np.full((4, 4), float(i)) for i in range(12)]
    grid = {"a": [float(i) for i in range(12)]}
    search = GridSearchCV(_MeanMatcher(), grid, cv=PerImageCV(), refit=False).fit(images)
    assert best_params_per_image(search) == [{"a": float(i)} for i in range(12)]


# A bug the suite once missed: best_params_per_image could choose a candidate whose score is +inf
# (documented: NaN or infinite scores, from failed fits, are never chosen)
def test_best_params_per_image_never_chooses_an_infinite_score():
    images = [np.zeros((4, 4)), np.ones((4, 4))]
    search = GridSearchCV(
        _MeanMatcher(inf_at=2.0),
        {"a": [0.0, 1.0, 2.0]},
        cv=PerImageCV(),
        refit=False,
        error_score="raise",
    ).fit(images)
    assert best_params_per_image(search) == [{"a": 0.0}, {"a": 1.0}]


# Mutation audit (survivors of _configured: an estimator's batch_size of 2 left as it
# was; the trial check's warnings not held back, so given twice).
def test_fit_candidates_fits_a_noise_model_alone_from_a_batch_size_of_2_and_warns_once():
    from skdip import ExponentialMovingVariance

    X = _noisy_batch(2)
    fitted = fit_candidates(_den(batch_size=2, max_iter=2), X, [{"noise_model": "sparse"}])
    assert [est.batch_size for est in fitted] == [1]
    # A setting whose check warns (a patience shorter than the averaging's delay).
    setting = {
        "noise_model": "sparse",
        "early_stopping": ExponentialMovingVariance(warmup=3, patience=8),
        "output_averaging": 0.99,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_candidates(_den(batch_size=2, max_iter=2), X, [setting])
    assert sum("patience (8)" in str(w.message) for w in caught) == 1


def test_best_params_per_image_of_a_halving_search_reads_its_last_round():
    # A successive-halving search lists its candidates once per round: every round's
    # rows were compared (a candidate dropped after a short round could win), and a
    # PreferDefault found "3 candidates match the default".
    from types import SimpleNamespace

    from skdip.model_selection import PerImageCV, PreferDefault, best_params_per_image

    results = {
        "iter": np.array([0, 0, 0, 1, 1, 2]),
        "params": [
            {"lr": 0.01, "max_iter": 10},
            {"lr": 0.03, "max_iter": 10},
            {"lr": 0.1, "max_iter": 10},
            {"lr": 0.03, "max_iter": 20},
            {"lr": 0.1, "max_iter": 20},
            {"lr": 0.1, "max_iter": 40},
        ],
        # The shortest round scores highest on image 0 (a 10-step fit of lr=0.01).
        "split0_test_score": np.array([-5.0, -9.0, -8.0, -9.5, -7.0, -6.0]),
        "split1_test_score": np.array([-9.0, -8.0, -7.0, -8.5, -7.5, -6.5]),
    }
    results["mean_test_score"] = (results["split0_test_score"] + results["split1_test_score"]) / 2
    search = SimpleNamespace(cv_results_=results, cv=PerImageCV(), refit=False)
    last = {"lr": 0.1, "max_iter": 40}
    assert best_params_per_image(search) == [last, last]
    assert best_params_per_image(search, prefer=PreferDefault({"lr": 0.1})) == [last, last]


def test_a_halving_search_default_must_be_named_in_its_last_round():
    from types import SimpleNamespace

    from skdip.model_selection import PerImageCV, PreferDefault, best_params_per_image

    results = {
        "iter": np.array([0, 0, 1]),
        "params": [{"a": 0.0, "n": 1}, {"a": 1.0, "n": 1}, {"a": 1.0, "n": 2}],
        "split0_test_score": np.array([-1.0, -2.0, -1.5]),
        "mean_test_score": np.array([-1.0, -2.0, -1.5]),
    }
    search = SimpleNamespace(cv_results_=results, cv=PerImageCV(), refit=False)
    # An index counts every round's rows: index 0 named another candidate in the last round.
    with pytest.raises(ValueError, match="as a dict of parameters"):
        best_params_per_image(search, prefer=PreferDefault(0))
    with pytest.raises(ValueError, match="was eliminated before the last round"):
        best_params_per_image(search, prefer=PreferDefault({"a": 0.0}))
    assert best_params_per_image(search, prefer=PreferDefault({"a": 1.0})) == [{"a": 1.0, "n": 2}]


def test_a_halving_search_refuses_a_prefer_default_refit(count_fits):
    # scikit-learn's halving searches never call a callable refit: they refit the
    # arg-max of their last round, and the rule was ignored in silence.
    import sklearn
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV

    if (
        "caller"
        not in inspect.signature(sklearn.model_selection._validation._fit_and_score).parameters
    ):
        pytest.skip("scikit-learn before 1.9 does not hand the search to its fits")
    X = np.stack(_images(4))[..., None]
    kw = dict(cv=FitImagesCV(), scoring=get_scorer("emv"), resource="max_iter")
    kw.update(min_resources=4, max_resources=8, factor=2)
    search = HalvingGridSearchCV(
        _den(), {"lr": [0.01, 0.02, 0.03]}, refit=PreferDefault({"lr": 0.01}), **kw
    )
    with pytest.raises(ValueError, match="never calls a callable refit.*GridSearchCV"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's FitFailedWarning
            search.fit(X)
    assert count_fits == []
    # Its own arg-max refit, or a callable of the user's own, are not refused.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for refit in (True, lambda results: 0):
            search.set_params(refit=refit).fit(X)
    assert search.best_params_["lr"] in (0.01, 0.02, 0.03)


def test_a_refused_refit_of_average_of_best_keeps_the_earlier_fit():
    # Its fitted attributes were cleared before the refit's checks: a refit refused before
    # any work (warm_start, which fit_candidates cannot keep) lost the earlier fit, where
    # the estimators keep theirs.
    x = np.random.default_rng(0).random((16, 16))
    base = DIPDenoiser(generator=TINY, max_iter=3, random_state=0, device="cpu")
    avg = AverageOfBest(base, {"lr": [0.01, 0.02]}, scoring="discrepancy").fit(x)
    before = avg.reconstruction_.copy()
    avg.set_params(estimator__warm_start=True)
    # In its own words (it named fit_candidates, which the caller never called).
    with pytest.raises(ValueError, match="AverageOfBest .*estimator__warm_start=True"):
        avg.fit(x)
    np.testing.assert_array_equal(avg.reconstruction_, before)
    assert avg.scores_.shape == (2, 1) and avg.n_features_in_ == 16


def test_a_refit_of_average_of_best_that_fails_after_its_fits_leaves_it_unfitted():
    # A refit that fitted every setting and then had nothing to average on an image kept
    # the fitted attributes of the earlier fit, of other images: caught, the error left a
    # reconstruction_ and a transform() answering for those. Once the fits have run,
    # the estimator is left unfitted, as after a Ctrl-C.
    X = [x[..., 0] for x in _noisy_batch(2)]
    rng = np.random.default_rng(1)
    inpainter = DIPInpainter(generator=TINY, max_iter=3, early_stopping=None, random_state=0)
    avg = AverageOfBest(inpainter, {"lr": [0.01, 0.03]}, scoring="discrepancy")
    avg.fit(X, mask=[rng.random((16, 16)) > 0.2 for _ in X])
    assert len(avg.transform()) == 2
    sparse = [rng.random((16, 16)) > 0.2, rng.random((16, 16)) > 0.9]  # too few on image 1
    with pytest.warns(UserWarning, match="too few observed pixels"):
        with pytest.raises(NothingToAverage):
            avg.fit(X, mask=sparse)
    with pytest.raises(NotFittedError):
        avg.transform()
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(avg))


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 3)])
def test_a_search_splitting_the_rows_of_one_image_warns(shape):
    # GridSearchCV's default cv=5 splits a single image's rows: each fold fitted a strip
    # and scored another, and nothing failed (finite, meaningless scores).
    image = np.clip(0.5 + 0.1 * np.random.default_rng(0).standard_normal(shape), 0, 1)
    search = GridSearchCV(_den(), {"lr": [0.01]}, scoring=get_scorer("emv"), cv=2, refit=False)
    with pytest.warns(
        UserWarning,
        match=r"fitted on one image of 8x16 pixels and is scored on another, 8x16, in a",
    ):
        search.fit(image)
    search.set_params(scoring=None)  # the estimator's own score
    with pytest.warns(UserWarning, match="its splitter split the rows of a single image"):
        search.fit(image)
    clean = np.full(shape, 0.5)
    search.set_params(scoring=get_scorer("psnr"))
    with pytest.warns(UserWarning, match="pass cv=FitImagesCV()"):
        search.fit(image, clean)
    # As a batch of one, with the splitter that scores the fitted image: no warning.
    batch = image[None] if len(shape) == 3 else image[None, ..., None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        GridSearchCV(_den(), {"lr": [0.01]}, scoring=get_scorer("emv"), cv=FitImagesCV()).fit(batch)
        # Another image scored by hand, or of another width, or in a batch, is no strip.
        # (Noisy: a constant shows no noise, which its no-reference score warns of.)
        other = np.clip(0.4 + 0.1 * np.random.default_rng(2).standard_normal(shape), 0, 1)
        fitted = _den().fit(image)
        get_scorer("emv")(fitted, other)
        fitted.score(other)
        narrow = image[None, ::2] if len(shape) == 3 else image[None, ::2, :, None]
        get_scorer("emv")(_den().fit(batch), narrow)
    # A batch of images split by KFold: each fold scores whole images, no strips (it is
    # told of its unused fits instead).
    rng = np.random.default_rng(1)
    images = np.clip(0.5 + 0.1 * rng.standard_normal((4, *batch.shape[1:])), 0, 1)
    with pytest.warns(UserWarning, match="scored on images it was not fitted on") as record:
        GridSearchCV(_den(), {"lr": [0.01]}, scoring=get_scorer("emv"), cv=KFold(2)).fit(images)
    assert not any("split the rows" in str(w.message) for w in record)


def test_a_search_scoring_images_it_did_not_fit_says_its_fits_are_unused(count_fits):
    # Every image is fitted on its own: a KFold's fits of its training images did nothing
    # for the scores of its test images, fitted anew (8 solves of 4 images here, for the
    # scores that FitImagesCV gives from 4), in silence.
    X = np.stack(_images(4))[..., None]
    emv = get_scorer("emv")
    message = "scored on images it was not fitted on, in a cross-validation.*FitImagesCV"
    with pytest.warns(UserWarning, match=message):
        kfold = GridSearchCV(_den(), {"lr": [0.01]}, cv=KFold(2), scoring=emv, refit=False).fit(X)
    assert len(count_fits) == 8
    with pytest.warns(UserWarning, match="AverageOfBest is " + message):
        avg = AverageOfBest(_den(), {"lr": [0.01]}, n_best=1)
        cross_validate(avg, X, X, cv=KFold(2), scoring=get_scorer("psnr"))
    with pytest.warns(UserWarning, match=message):
        cross_validate(make_pipeline(FunctionTransformer(), _den()), X, cv=KFold(2), scoring=emv)
    del count_fits[:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fitted = GridSearchCV(_den(), {"lr": [0.01]}, cv=FitImagesCV(), scoring=emv, refit=False)
        fitted.fit(X)
        assert len(count_fits) == 4  # every image solved once, for the same scores
        # Nested: the outer split judges the inner search on new images, as it should.
        inner = GridSearchCV(_den(), {"lr": [0.01]}, cv=FitImagesCV(), scoring=emv)
        cross_validate(inner, X, cv=KFold(2), scoring=emv)
        _den().fit(X[:2]).score(X[2:])  # by hand: no cross-validation
    np.testing.assert_allclose(
        kfold.cv_results_["mean_test_score"], fitted.cv_results_["mean_test_score"]
    )


def test_an_average_of_best_searched_on_the_rows_of_one_image_warns():
    # AverageOfBest scored on new images solves them with a fresh copy: a split of one
    # image's rows is told of there too.
    image = np.clip(0.5 + 0.1 * np.random.default_rng(0).standard_normal((8, 16)), 0, 1)
    avg = AverageOfBest(_den(), {"lr": [0.01, 0.03]}, n_best=1)
    search = GridSearchCV(avg, {"n_best": [1]}, scoring=get_scorer("psnr"), cv=2, refit=False)
    # Named AverageOfBest, the estimator searched (it named the DIPDenoiser inside).
    with pytest.warns(UserWarning, match="AverageOfBest was fitted on one image.*its splitter"):
        search.fit(image, np.full(image.shape, 0.5))
    search.set_params(scoring=None)  # AverageOfBest's own score
    with pytest.warns(UserWarning, match="its splitter split the rows of a single image"):
        search.fit(image, np.full(image.shape, 0.5))


def _first_candidate_diverging_on_image_1(fit_candidates):
    """``fit_candidates`` whose first candidate's fit of image 1 ran no step (every
    step diverged), so that it cannot be scored there."""

    def fitted_so(*args, **kwargs):
        fitted = fit_candidates(*args, **kwargs)
        fitted[0]._fit_results[1]["n_iter"] = 0
        return fitted

    return fitted_so


def test_average_of_best_leaves_a_setting_out_only_on_the_images_it_cannot_score(monkeypatch):
    # The best setting of both images (the first) has a fit of image 1 that accepted no
    # step (every step diverged): it cannot be scored there, but on image 0 its fit is
    # sound and stays the best.
    import skdip.model_selection as ms

    X = _noisy_batch(2)
    diverged_on_image_1 = _first_candidate_diverging_on_image_1(ms.fit_candidates)

    clean = AverageOfBest(_den(), GRID, n_best=1).fit(X)
    assert clean.selected_[0].all()
    monkeypatch.setattr(ms, "fit_candidates", diverged_on_image_1)
    with pytest.warns(UserWarning, match="could not be scored"):
        avg = AverageOfBest(_den(), GRID, n_best=1).fit(X)
    np.testing.assert_array_equal(avg.scores_[:, 0], clean.scores_[:, 0])
    assert np.isnan(avg.scores_[0, 1]) and np.isfinite(avg.scores_[1:, 1]).all()
    assert avg.selected_[0, 0] and not avg.selected_[0, 1]
    np.testing.assert_array_equal(avg.transform()[0], clean.transform()[0])


@pytest.mark.parametrize(
    "scoring", ["discrepancy", NoReferenceScorer(criterion="discrepancy", sigma=0.2)]
)
def test_average_of_best_scores_an_image_alone_as_the_batch_was(monkeypatch, scoring):
    # Scored image by image after the batch's score failed, image 0 keeps the score the
    # whole batch gave it: by the scorer's criterion (not the default's whiteness test)
    # and with its noise level (not one estimated).
    import skdip.model_selection as ms

    X = _noisy_batch(2)
    diverged_on_image_1 = _first_candidate_diverging_on_image_1(ms.fit_candidates)

    grid = {"lr": [0.01, 0.03]}
    clean = AverageOfBest(_den(), grid, n_best=1, scoring=scoring).fit(X)
    assert np.isfinite(clean.scores_).all()
    monkeypatch.setattr(ms, "fit_candidates", diverged_on_image_1)
    with pytest.warns(UserWarning, match=r"could not be scored on image\(s\) \[1\] and is left"):
        avg = AverageOfBest(_den(), grid, n_best=1, scoring=scoring).fit(X)
    assert avg.scores_[0, 0] == clean.scores_[0, 0]
    assert np.isnan(avg.scores_[0, 1]) and avg.scores_[1, 1] == clean.scores_[1, 1]


def test_average_of_best_leaves_a_setting_out_whole_when_every_image_fails(monkeypatch):
    # A setting no image of which can be scored is left out as a whole, and said so.
    import skdip.model_selection as ms

    real = ms.fit_candidates

    def diverged_everywhere(*args, **kwargs):
        fitted = real(*args, **kwargs)
        for result in fitted[0]._fit_results:
            result["n_iter"] = 0
        return fitted

    monkeypatch.setattr(ms, "fit_candidates", diverged_everywhere)
    with pytest.warns(UserWarning, match=r"could not be scored and is left out: ") as record:
        avg = AverageOfBest(_den(), {"lr": [0.01, 0.03]}, n_best=1).fit(_noisy_batch(2))
    assert not any("on image(s)" in str(w.message) for w in record)
    assert np.isnan(avg.scores_[0]).all() and np.isfinite(avg.scores_[1]).all()


def test_average_of_best_does_not_score_image_by_image_with_another_score(monkeypatch):
    # A scorer with a score of its own cannot be asked image by image (the per-image
    # scores are the default's): a setting its batch call fails on is left out whole,
    # not kept on image 0 with a score of another scale.
    import skdip.model_selection as ms

    class _Doubled(NoReferenceScorer):
        def score_images(self, estimator, X, **fit_params):
            return 2 * super().score_images(estimator, X, **fit_params)

    diverged_on_image_1 = _first_candidate_diverging_on_image_1(ms.fit_candidates)

    monkeypatch.setattr(ms, "fit_candidates", diverged_on_image_1)
    with pytest.warns(UserWarning, match=r"could not be scored and is left out: "):
        avg = AverageOfBest(_den(), {"lr": [0.01, 0.03]}, n_best=1, scoring=_Doubled())
        avg.fit(_noisy_batch(2))
    assert np.isnan(avg.scores_[0]).all() and np.isfinite(avg.scores_[1]).all()


def test_average_of_best_names_the_image_no_setting_could_score_and_keeps_the_fits():
    # Image 1 has too few observed pixels for the noise level: every setting fails there,
    # and image 0, which every setting can be scored on, is not the one to blame. The
    # fits come before the scores: that error must not throw them away.
    X = [x[..., 0] for x in _noisy_batch(2)]
    rng = np.random.default_rng(1)
    masks = [rng.random((16, 16)) > 0.2, rng.random((16, 16)) > 0.9]
    inpainter = DIPInpainter(generator=TINY, max_iter=6, early_stopping=None, random_state=0)
    with pytest.warns(UserWarning, match="too few observed pixels"):
        with pytest.raises(
            NothingToAverage, match="no setting could be scored on image 1.*estimators attribute"
        ) as error:
            AverageOfBest(inpainter, {"lr": [0.01, 0.03]}, scoring="discrepancy").fit(X, mask=masks)
    # Its own class (a plain ValueError could not be told from a bad argument), still a
    # ValueError for the handlers written before it.
    assert isinstance(error.value, ValueError)
    fits = error.value.estimators
    assert [est.lr for est in fits] == [0.01, 0.03]
    assert all(est.n_images_ == 2 and est.n_iter_ == [6, 6] for est in fits)
    # A search's worker sends it back pickled: the fits come with it.
    again = pickle.loads(pickle.dumps(error.value))
    assert str(again) == str(error.value) and [est.lr for est in again.estimators] == [0.01, 0.03]
    # With the noise level given, they are scored without another fit.
    scorer = get_scorer("discrepancy", sigma=0.1)
    assert all(np.isfinite(scorer.score_images(est, X)).all() for est in fits)


def test_average_of_best_warns_when_new_images_come_without_the_fits_inputs(candidate_runs):
    # Fitted with masks, then asked for other images without theirs (KFold's test images
    # without metadata routing): those are solved without a mask, where only the NaN
    # pixels count as missing, as the wrapped DIPInpainter warns.
    rng = np.random.default_rng(1)
    X, masks = [], []
    for image in _noisy_batch(2)[..., 0]:
        image = image.copy()
        image[rng.random(image.shape) < 0.1] = np.nan  # dead pixels
        overlay = np.ones(image.shape, bool)
        overlay[4:10, 4:12] = False
        image[~overlay] = 1.0  # a white overlay, hidden by the mask
        X.append(image)
        masks.append(overlay)
    inpainter = DIPInpainter(generator=TINY, max_iter=6, early_stopping=None, random_state=0)
    avg = AverageOfBest(inpainter, {"lr": [0.01, 0.03]}, scoring="discrepancy")
    avg.fit([X[0]], mask=[masks[0]])
    clean = [_noisy_batch(2)[1, ..., 0]]
    for call in (avg.transform, lambda images: get_scorer("psnr")(avg, images, clean)):
        with pytest.warns(UserWarning, match="AverageOfBest was fitted with mask=.*come without"):
            call([X[1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with their masks, or the fitted images: no word
        avg.transform([X[1]], mask=[masks[1]])
        avg.transform([X[0]])
