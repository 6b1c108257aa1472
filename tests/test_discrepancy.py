"""DiscrepancyPrinciple: stop once the residual to the observation reaches the noise."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from skdip import DIPDeconvolver, DIPDenoiser, DiscrepancyPrinciple, ExponentialMovingVariance
from skdip.datasets import add_gaussian_noise, make_gaussian_kernel
from skdip.generators import SkipNetwork
from skdip.stopping import get_stopping_rule

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)


def _noisy(sigma=0.1, shape=(16, 16), seed=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    return clean, add_gaussian_noise(clean, sigma, random_state=seed)


def _bound(rule, observation=None):
    rule.start()
    if observation is None:
        observation = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    rule._bind_observation(observation, True)
    return rule


def _observe_all(rule, values):
    out = []
    for it, v in enumerate(values):
        out.append(rule.observe(v, it))
    return out


def test_the_first_value_at_the_noise_level_is_selected_and_the_fit_stops_patience_later():
    rule = _bound(DiscrepancyPrinciple(noise_var=0.01, patience=3, warmup=0))
    values = [5.0, 3.0, 4.0, 1.5, 0.9, 0.5, 0.4, 0.3, 0.2]
    answers = _observe_all(rule, values)
    # Before reaching tau it tracks the closest so far; 0.9 is the first at or below 1.
    assert [a[0] for a in answers] == [True, True, False, True, True] + [False] * 4
    assert rule.best_iter_ == 4 and rule.best_value_ == 0.9
    assert [a[1] for a in answers] == [False] * 7 + [True, True]


def test_tau_moves_the_threshold():
    rule = _bound(DiscrepancyPrinciple(tau=1.6, noise_var=0.01, patience=1, warmup=0))
    _observe_all(rule, [5.0, 3.0, 1.5, 0.9])
    assert rule.best_iter_ == 2


def test_values_in_the_warmup_count_nowhere():
    rule = _bound(DiscrepancyPrinciple(noise_var=0.01, patience=1, warmup=2))
    answers = _observe_all(rule, [0.1, 0.2, 3.0, 0.5])
    assert answers[:2] == [(False, False), (False, False)]
    assert rule.best_iter_ == 3


def test_the_signal_is_the_residual_power_over_the_noise_power():
    g = torch.Generator().manual_seed(0)
    observation = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64)
    x = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64)
    rule = _bound(DiscrepancyPrinciple(noise_var=0.02, warmup=3), observation)
    assert rule.signal(x, 2) is None  # warm-up
    expected = float(((x - observation) ** 2).mean()) / 0.02
    assert float(rule.signal(x, 3)) == pytest.approx(expected, rel=1e-12)


def test_the_noise_power_is_estimated_from_the_observation():
    _, noisy = _noisy(sigma=0.1, shape=(64, 64))
    observation = torch.from_numpy(noisy)[None, None]
    rule = _bound(DiscrepancyPrinciple(), observation)
    assert rule.noise_var_ == pytest.approx(0.01, rel=0.2)
    given = _bound(DiscrepancyPrinciple(noise_var=0.003), observation)
    assert given.noise_var_ == 0.003


def test_the_rule_needs_the_observation_the_fit_gives():
    rule = DiscrepancyPrinciple()
    rule.start()
    with pytest.raises(RuntimeError, match="DiscrepancyPrinciple compares each iterate"):
        rule.signal(torch.zeros(1, 1, 4, 4), 200)
    with pytest.raises(ValueError, match="serves denoising only"):
        rule._bind_observation(torch.zeros(1, 1, 4, 4), False)
    with pytest.raises(ValueError, match="real-valued"):
        rule._bind_observation(torch.zeros(1, 1, 4, 4, dtype=torch.complex64), True)


@pytest.mark.parametrize(
    "params",
    [
        {"tau": 0},
        {"tau": -1.0},
        {"tau": "1"},
        {"noise_var": 0.0},
        {"noise_var": True},
        {"patience": 0},
        {"tau": float("inf")},
        {"tau": float("nan")},
        {"noise_var": float("inf")},
        {"noise_var": float("nan")},
    ],
)
def test_bad_parameters_are_refused_when_the_fit_starts(params):
    _, noisy = _noisy()
    den = DIPDenoiser(generator=TINY, max_iter=3, early_stopping=DiscrepancyPrinciple(**params))
    with pytest.raises(InvalidParameterError):
        den.fit(noisy)


def _params(rule, **kw):
    """A tiny denoiser's parameters with ``rule``, raw iterates (no output average)."""
    params = dict(
        generator=TINY,
        max_iter=300,
        early_stopping=rule,
        random_state=0,
        device="cpu",
        output_averaging=None,
    )
    return {**params, **kw}


def _fit(noisy, rule, **kw):
    raws = []

    def keep(it, loss, estimate):
        raws.append(estimate.clone())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no spurious-minimum or convergence warning
        den = DIPDenoiser(**_params(rule, callback=keep, **kw)).fit(noisy)
    return den, raws


def test_denoiser_returns_the_first_iterate_at_the_noise_level():
    clean, noisy = _noisy(sigma=0.1)
    rule = DiscrepancyPrinciple(noise_var=0.01, patience=5, warmup=0)
    den, raws = _fit(noisy, rule)
    signal = den.history_["signal"]
    first = int(np.flatnonzero(signal <= 1.0)[0])
    assert den.best_iter_ == first and den.stopped_by_ == "early_stopping"
    assert den.n_iter_ == first + 5 + 1
    # The returned estimate is that iterate, on the image's scale (rescale left it).
    np.testing.assert_allclose(
        den.transform(noisy), raws[first][0, 0].double().numpy(), rtol=0, atol=1e-6
    )
    # And the signal is its residual over the noise power.
    residual = float(np.mean((raws[first][0, 0].double().numpy() - noisy) ** 2))
    assert signal[first] == pytest.approx(residual / 0.01, rel=1e-4)


def test_with_output_averaging_the_average_is_taken_a_delay_after():
    _, noisy = _noisy(sigma=0.1)
    rule = DiscrepancyPrinciple(noise_var=0.01, patience=20, warmup=0)
    den, _ = _fit(noisy, rule, output_averaging=0.9)
    first = int(np.flatnonzero(den.history_["signal"] <= 1.0)[0])
    assert den.best_iter_ == first + 10 and den.n_iter_ == first + 20 + 1


def test_batched_fits_select_as_sequential_ones():
    _, a = _noisy(seed=0)
    _, b = _noisy(seed=1)
    X = np.stack([a, b])[..., None]
    rule = DiscrepancyPrinciple(noise_var=0.01, patience=5, warmup=0)
    one = DIPDenoiser(**_params(rule)).fit(X)
    batched = DIPDenoiser(**_params(rule, batch_size=2)).fit(X)
    assert list(batched.best_iter_) == list(one.best_iter_)
    assert list(batched.n_iter_) == list(one.n_iter_)


def test_fits_with_a_forward_model_or_a_noise_term_are_refused():
    _, noisy = _noisy()
    with pytest.raises(ValueError, match="serves denoising only"):
        DIPDenoiser(
            generator=TINY, max_iter=3, noise_model="sparse", early_stopping=DiscrepancyPrinciple()
        ).fit(noisy)
    with pytest.raises(ValueError, match="serves denoising only"):
        DIPDeconvolver(
            make_gaussian_kernel(5, 1.0),
            generator=TINY,
            max_iter=3,
            early_stopping=DiscrepancyPrinciple(),
        ).fit(noisy)


def test_a_run_that_never_reaches_the_noise_level_returns_the_closest_so_far():
    _, noisy = _noisy(sigma=0.1)
    rule = DiscrepancyPrinciple(noise_var=1e-6, patience=5, warmup=0)  # never reached
    with pytest.warns(Warning, match="max_iter=30 ended the fit"):
        den = DIPDenoiser(**_params(rule, max_iter=30)).fit(noisy)
    assert den.best_iter_ == int(np.nanargmin(den.history_["signal"]))


def test_clone_get_params_and_pickle():
    rule = DiscrepancyPrinciple(tau=1.2, noise_var=0.004, patience=50, warmup=10)
    den = DIPDenoiser(early_stopping=rule)
    assert den.get_params()["early_stopping__tau"] == 1.2
    assert clone(den).early_stopping.get_params() == rule.get_params()
    _, noisy = _noisy()
    fitted = DIPDenoiser(
        generator=TINY,
        max_iter=5,
        early_stopping=DiscrepancyPrinciple(noise_var=1.0, warmup=0, patience=1),
        device="cpu",
        output_averaging=None,
    ).fit(noisy)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.transform(noisy), fitted.transform(noisy))


def test_reaching_the_noise_level_at_the_first_check_is_no_spurious_minimum():
    # The variance rules warn of a minimum at their first check; here it means the
    # fit was already at the noise level, and the warning's advice would not hold.
    _, noisy = _noisy(sigma=0.1)
    rule = DiscrepancyPrinciple(noise_var=1.0, patience=3, warmup=4)
    den, _ = _fit(noisy, rule)  # any warning is an error there
    assert den.best_iter_ == 4 and den.n_iter_ == 8


def test_a_denoiser_cut_before_its_variance_rule_fired_points_to_the_rule():
    # At low noise the running variance can keep falling past max_iter, where more
    # steps fit more noise: the warning names the rule that does not wait for it.
    _, noisy = _noisy()
    rule = ExponentialMovingVariance(warmup=2)
    hint = "early_stopping=DiscrepancyPrinciple() stops once the fit reaches the noise level"
    for params, expected in [
        ({}, True),
        ({"noise_model": "sparse"}, False),  # the rule refuses a noise term
        ({"early_stopping": DiscrepancyPrinciple(noise_var=1e-9, warmup=2)}, False),
    ]:
        with pytest.warns(ConvergenceWarning, match="max_iter=10 ended the fit") as caught:
            DIPDenoiser(**_params(rule, max_iter=10, **params)).fit(noisy)
        assert any(hint in str(w.message) for w in caught) is expected
    with pytest.warns(ConvergenceWarning) as caught:
        DIPDeconvolver(
            make_gaussian_kernel(3, 1.0), **_params(rule, max_iter=10, output_averaging=None)
        ).fit(noisy)
    assert not any(hint in str(w.message) for w in caught)


def test_the_denoiser_takes_the_rule_by_name():
    _, noisy = _noisy(sigma=0.1)
    by_name = DIPDenoiser(**_params("discrepancy", max_iter=400)).fit(noisy)
    by_object = DIPDenoiser(**_params(DiscrepancyPrinciple(), max_iter=400)).fit(noisy)
    assert by_name.stopped_by_ == "early_stopping"
    assert (by_name.best_iter_, by_name.n_iter_) == (by_object.best_iter_, by_object.n_iter_)
    np.testing.assert_array_equal(by_name.transform(noisy), by_object.transform(noisy))
    assert isinstance(get_stopping_rule("discrepancy"), DiscrepancyPrinciple)
    # Only the denoiser lists the name: elsewhere a forward model sits in between.
    with pytest.raises(InvalidParameterError, match="early_stopping"):
        DIPDeconvolver(make_gaussian_kernel(3, 1.0), **_params("discrepancy", max_iter=3)).fit(
            noisy
        )
