"""``random_state_``: the int seed a fit ran from, which repeats it.

With ``random_state=None`` (or a ``RandomState`` instance) a good fit could not be
made again: nothing recorded what was drawn. The seed is drawn first, recorded, and
the fit runs from it, so ``clone(est).set_params(random_state=est.random_state_)``
fits the same numbers; an int is its own seed, as before.
"""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone

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
from skdip.model_selection import AverageOfBest, fit_candidates
from skdip.operators import Downsample

TINY = SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1)
COMMON = dict(generator=TINY, max_iter=3, early_stopping=None, device="cpu")


def _image(shape=(16, 16), seed=0):
    return np.random.default_rng(seed).random(shape)


def _diffraction():
    obj = np.zeros((8, 8))
    obj[2:6, 3:6] = 1.0
    return simulate_diffraction(obj)


_MASK = np.ones((16, 16), dtype=bool)
_MASK[::3] = False

# (estimator, X, fit parameters): every estimator, and the paths that draw more.
CASES = {
    "denoiser": (DIPDenoiser(**COMMON), _image(), {}),
    "sparse_noise": (DIPDenoiser(noise_model="sparse", **COMMON), _image(), {}),
    "batch": (DIPDenoiser(batch_size=2, **COMMON), [_image(), _image(seed=1)], {}),
    "inpainter": (DIPInpainter(**COMMON), _image(), {"mask": _MASK}),
    "deconvolver": (DIPDeconvolver(kernel=np.ones((3, 3)) / 9, **COMMON), _image(), {}),
    "reconstructor": (DIPReconstructor(operator=Downsample(2), **COMMON), _image((8, 8)), {}),
    "super_resolver": (DIPSuperResolver(scale=2, **COMMON), _image((8, 8)), {}),
    "blind": (BlindDeblurrer(kernel_size=3, **COMMON), _image(), {}),
    # Restarts draw their own seeds, and the HIO start runs from the fit's.
    "phase": (
        PhaseRetriever(
            pretrain_iter=2, n_init=2, init=HIOPhaseRetriever(max_iter=5, n_er=1), **COMMON
        ),
        _diffraction(),
        {},
    ),
    "hio": (HIOPhaseRetriever(max_iter=10, n_er=2, n_init=2), _diffraction(), {}),
}


def _fit(case, **params):
    est, X, fit_params = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter's ConvergenceWarning
        return clone(est).set_params(**params).fit(X, **fit_params)


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(a, b)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("random_state", [None, "instance"], ids=["None", "RandomState"])
def test_the_recorded_seed_repeats_the_fit(case, random_state):
    if random_state == "instance":
        random_state = np.random.RandomState(3)
    est = _fit(case, random_state=random_state)
    seed = est.random_state_
    assert type(seed) is int and 0 <= seed < 2**31
    again = _fit(case, random_state=seed)
    assert again.random_state_ == seed
    assert _same(again.reconstruction_, est.reconstruction_)
    curve = "restart_errors_" if case == "hio" else "loss_curve_"
    assert _same(getattr(again, curve), getattr(est, curve))
    # The recorded seed goes with the fit through a pickle.
    assert pickle.loads(pickle.dumps(est)).random_state_ == seed


@pytest.mark.parametrize("case", ["denoiser", "phase", "hio"])
def test_an_int_random_state_is_its_own_seed(case):
    est = _fit(case, random_state=7)
    assert est.random_state_ == 7
    # A NumPy int is recorded as a Python int, and fits as the int does.
    numpy_int = _fit(case, random_state=np.int64(7))
    assert type(numpy_int.random_state_) is int and numpy_int.random_state_ == 7
    assert _same(numpy_int.reconstruction_, est.reconstruction_)


def test_each_fit_with_none_draws_a_seed_of_its_own():
    first, second = _fit("denoiser", random_state=None), _fit("denoiser", random_state=None)
    assert first.random_state_ != second.random_state_
    assert not np.array_equal(first.reconstruction_, second.reconstruction_)
    for est in (first, second):
        assert _same(
            _fit("denoiser", random_state=est.random_state_).reconstruction_, est.reconstruction_
        )


def test_none_draws_its_seed_from_numpys_global_generator():
    np.random.seed(12)  # noqa: NPY002 (random_state=None draws from this legacy generator)
    seed = _fit("denoiser", random_state=None).random_state_
    np.random.seed(12)  # noqa: NPY002
    assert _fit("denoiser", random_state=None).random_state_ == seed
    np.random.seed(12)  # noqa: NPY002
    assert seed == np.random.randint(0, 2**31 - 1)  # noqa: NPY002 (one draw per fit)


def test_a_random_state_instance_is_advanced_by_one_draw():
    rng = np.random.RandomState(5)
    est = _fit("denoiser", random_state=rng)
    # One draw, the seed, as the fit drew one seed from it before it recorded any.
    state = np.random.RandomState(5)
    assert est.random_state_ == state.randint(0, 2**31 - 1)
    assert rng.randint(1000) == state.randint(1000)


def test_parallel_images_are_repeated_by_the_seed_too():
    images = [_image(), _image(seed=1)]
    est = DIPDenoiser(n_jobs=2, **COMMON).fit(images)
    again = DIPDenoiser(random_state=est.random_state_, **COMMON).fit(images)
    assert _same(again.reconstruction_, est.reconstruction_)


def test_a_warm_fit_that_goes_on_keeps_the_seed_of_its_start():
    x = _image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = DIPDenoiser(warm_start=True, **COMMON).fit(x)
        seed = warm.random_state_
        warm.fit(x)
        assert warm.n_iter_ == 6 and warm.random_state_ == seed
        # Repeated by one fit of the steps of both, from the recorded seed.
        longer = DIPDenoiser(**{**COMMON, "max_iter": 6}, random_state=seed).fit(x)
        assert np.array_equal(warm.reconstruction_, longer.reconstruction_)
        # Other images are fitted afresh: from a new seed, recorded.
        warm.fit(_image(seed=1))
    assert warm.random_state_ != seed
    again = DIPDenoiser(**COMMON, random_state=warm.random_state_).fit(_image(seed=1))
    assert np.array_equal(again.reconstruction_, warm.reconstruction_)


@pytest.mark.parametrize("case", ["denoiser", "hio"])
def test_solving_new_images_leaves_the_recorded_seed(case):
    est = _fit(case, random_state=None)
    seed = est.random_state_
    new = _image(seed=1) if case != "hio" else _diffraction()[::-1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.transform(new)
        est.score(new)
    assert est.random_state_ == seed


def test_fit_candidates_draws_one_seed_for_the_settings_left_at_none():
    x = _image()
    settings = [{"lr": 0.01}, {"lr": 0.02}, {"lr": 0.02, "random_state": 4}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # batch_size=1: the fits one by one, which batched ones equal up to rounding.
        fitted = fit_candidates(DIPDenoiser(**COMMON), x, settings, batch_size=1)
    seed = fitted[0].random_state_
    assert fitted[1].random_state_ == seed and fitted[2].random_state_ == 4
    for est, setting in zip(fitted, settings, strict=True):
        alone = DIPDenoiser(**COMMON, random_state=seed).set_params(**setting).fit(x)
        assert np.array_equal(alone.reconstruction_, est.reconstruction_)


def test_average_of_best_is_repeated_by_its_seed():
    x = _image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        avg = AverageOfBest(DIPDenoiser(**COMMON), {"lr": [0.01, 0.02]}, n_best=2).fit(x)
        again = clone(avg).set_params(estimator__random_state=avg.random_state_).fit(x)
    assert [est.random_state_ for est in avg.estimators_] == [avg.random_state_] * 2
    assert np.array_equal(again.reconstruction_, avg.reconstruction_)
    assert np.array_equal(again.scores_, avg.scores_)
