"""DiscrepancyPrinciple: stop once the residual to the observation reaches the noise;
NoiseLevelDeadline: another rule, stopped there at the latest."""

import functools
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from skdip import (
    BlindDeblurrer,
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    DIPSuperResolver,
    DiscrepancyPrinciple,
    ExponentialMovingVariance,
    NoiseLevelDeadline,
    PhaseRetriever,
    SelfValidation,
    WindowedMovingVariance,
)
from skdip.datasets import add_gaussian_noise, make_gaussian_kernel, simulate_diffraction
from skdip.generators import SkipNetwork
from skdip.metrics import get_scorer
from skdip.operators import FunctionOperator, Identity, PixelMask
from skdip.stopping import BaseStoppingRule, get_stopping_rule

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)


def _noisy(sigma=0.1, shape=(16, 16), seed=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    return clean, add_gaussian_noise(clean, sigma, random_state=seed)


def _bound(rule, observation=None):
    rule.start()
    if observation is None:
        observation = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    rule._bind_observation(observation, Identity())
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
    with pytest.raises(ValueError, match="here more sits between them"):
        rule._bind_observation(torch.zeros(1, 1, 4, 4), None)
    with pytest.raises(ValueError, match=r"a forward model \(PixelMask\) sits between"):
        rule._bind_observation(torch.zeros(1, 1, 4, 4), PixelMask(np.ones((4, 4), bool)))
    with pytest.raises(ValueError, match="real-valued"):
        rule._bind_observation(torch.zeros(1, 1, 4, 4, dtype=torch.complex64), Identity())


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


@pytest.mark.parametrize("rule", [DiscrepancyPrinciple, NoiseLevelDeadline])
def test_fits_with_a_noise_term_or_a_forward_model_are_refused(rule):
    _, noisy = _noisy()
    fast = dict(generator=TINY, max_iter=3, early_stopping=rule())
    named = f"^{rule.__name__} compares"  # the rule the user chose, not its parts
    with pytest.raises(ValueError, match=named) as err:
        DIPDenoiser(noise_model="sparse", **fast).fit(noisy)
    assert "here more sits between them" in str(err.value)
    with pytest.raises(ValueError, match="here more sits between them"):
        BlindDeblurrer(kernel_size=3, **fast).fit(noisy)
    # Measured through the forward models' residual, it helped nowhere (see the message).
    for estimator in (
        functools.partial(DIPDeconvolver, make_gaussian_kernel(3, 1.0)),
        functools.partial(DIPSuperResolver, scale=2),
        DIPInpainter,
        functools.partial(DIPReconstructor, operator=FunctionOperator(torch.tanh)),
    ):
        with pytest.raises(ValueError, match=named) as err:
            estimator(**fast).fit(noisy)
        assert "discrepancy_operators.md" in str(err.value)


@pytest.mark.parametrize("object_type", ["real", "complex"])
def test_phase_retrieval_is_refused(object_type):
    # The complex object's fit has a monitor (its modulus) and the real one its own
    # model (the support): a forward model sits in between either way.
    obj = np.zeros((8, 8))
    obj[2:6, 3:6] = 1.0
    y = simulate_diffraction(obj, oversampling=2)
    pr = PhaseRetriever(
        generator=SkipNetwork(width=8, depth=2, input_channels=4),
        max_iter=3,
        object_type=object_type,
        early_stopping=DiscrepancyPrinciple(),
    )
    with pytest.raises(ValueError, match="serves denoising only"):
        pr.fit(y)


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


# NoiseLevelDeadline


class _Scripted(BaseStoppingRule):
    """A rule whose signal at step t is ``values[t]`` (and which counts its calls)."""

    def __init__(self, values=(), patience=1000, warmup=0):
        self.values = values
        self.patience = patience
        self.warmup = warmup

    def _start(self):
        self.calls = 0

    def signal(self, x, iteration):
        self.calls += 1
        return torch.tensor(float(self.values[iteration]))


def _run_deadline(rule, values, ratios):
    """Feed ``rule`` (bound to a zero observation, noise power 1) iterates whose
    residual ratio at step t is ``ratios[t]``; return the (is_new, stop) answers up
    to and including the stop."""
    rule.start()
    rule._bind_observation(torch.zeros(1, 1, 2, 2, dtype=torch.float64), Identity())
    answers = []
    for it, ratio in enumerate(ratios):
        x = torch.full((1, 1, 2, 2), float(ratio) ** 0.5, dtype=torch.float64)
        value = rule.signal(x, it)
        answers.append(rule.observe(float(value), it) if value is not None else (False, False))
        if answers[-1][1]:
            break
    return answers


def test_at_the_deadline_the_rules_minimum_so_far_is_kept():
    values = [5, 4, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5]
    ratios = [9, 8, 7, 6, 5, 0.9, 0.5, 0.4, 0.3, 0.2]
    rule = NoiseLevelDeadline(_Scripted(values), noise_var=1.0, patience=4)
    answers = _run_deadline(rule, values, ratios)
    # The minimum at step 2; the residual reaches the noise power at step 5; the fit
    # stops 4 steps after the minimum, at step 6 (without the deadline: never here).
    assert rule.best_iter_ == 2 and rule.deadline_iter_ == 5
    assert [a[0] for a in answers] == [True, True, True, False, False, False, False]
    assert [a[1] for a in answers] == [False] * 6 + [True]
    # Past patience at the deadline itself: it stops there.
    rule = NoiseLevelDeadline(_Scripted(values), noise_var=1.0, patience=2)
    assert len(_run_deadline(rule, values, ratios)) == 6


def test_a_signal_still_falling_at_the_deadline_selects_the_iterate_there():
    values = [5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1]
    ratios = [9, 8, 7, 1.96, 1.5, 1.0, 0.5, 0.4, 0.3, 0.2]
    rule = NoiseLevelDeadline(_Scripted(values), noise_var=1.0, patience=3)
    answers = _run_deadline(rule, values, ratios)
    assert rule.best_iter_ == 5 and answers[5] == (True, False)  # tau=1 reached at 5
    # Frozen there: the lower values after it are no new selection.
    assert [a[0] for a in answers[6:]] == [False, False, False]
    assert len(answers) == 9 and answers[-1][1]
    # tau moves the deadline.
    rule = NoiseLevelDeadline(_Scripted(values), tau=2.0, noise_var=1.0, patience=3)
    _run_deadline(rule, values, ratios)
    assert rule.best_iter_ == 3 and rule.deadline_iter_ == 3


def test_the_rule_decides_where_it_stops_first_or_the_deadline_never_comes():
    values = [5, 4, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5]
    alone = _Scripted(values, patience=3)
    alone.start()
    expected = [alone.observe(v, it) for it, v in enumerate(values[:6])]
    for ratios in ([9] * 10, [9, 9, 9, 9, 9, 0.5, 0.5, 0.5, 0.5, 0.5]):
        rule = NoiseLevelDeadline(_Scripted(values, patience=3), noise_var=1.0, patience=50)
        assert _run_deadline(rule, values, ratios) == expected
        assert rule.best_iter_ == 2 and rule.deadline_iter_ == -1


def test_the_wrapped_rule_sees_every_iterate_and_the_warmup_is_its_own():
    # ES-EMV's statistics run from the first iterate: wrapped, its signal is the same.
    g = torch.Generator().manual_seed(0)
    iterates = [torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(12)]
    alone = ExponentialMovingVariance(warmup=5)
    rule = NoiseLevelDeadline(ExponentialMovingVariance(warmup=5), noise_var=1e-9)
    alone.start()
    rule.start()
    rule._bind_observation(torch.zeros(1, 1, 4, 4, dtype=torch.float64), Identity())
    assert rule.warmup == 5
    for it, x in enumerate(iterates):
        got, want = rule.signal(x, it), alone.signal(x, it)
        if it < 5:
            assert got is None
        else:
            assert float(got) == float(want)


def _deadline_fit(noisy, rule, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return DIPDenoiser(**_params(rule, **kw)).fit(noisy)


def test_denoiser_stops_at_the_noise_level_with_the_variance_minimum_so_far():
    _, noisy = _noisy(sigma=0.1)
    rule = NoiseLevelDeadline(ExponentialMovingVariance(warmup=5), noise_var=0.01, patience=7)
    den = _deadline_fit(noisy, rule, max_iter=600)
    variance = den.history_["signal"]
    assert den.stopped_by_ == "early_stopping" and den.n_iter_ < 600
    # The recorded signal is the running variance, as with ES-EMV alone.
    with pytest.warns(ConvergenceWarning):  # ES-EMV alone goes on: cut at the same step
        alone = DIPDenoiser(
            **_params(ExponentialMovingVariance(warmup=5), max_iter=den.n_iter_)
        ).fit(noisy)
    np.testing.assert_array_equal(variance, alone.history_["signal"])
    # Where the residual first reached 0.01, ES-EMV's minimum so far was selected.
    estimate = den.transform(noisy)
    residuals = []
    for it in range(5, den.n_iter_):
        probe = _deadline_fit(noisy, None, max_iter=it + 1)
        residuals.append(float(np.mean((probe.transform(noisy) - noisy) ** 2)))
        if residuals[-1] <= 0.01:
            break
    deadline = 5 + len(residuals) - 1
    assert residuals[-1] <= 0.01 < min(residuals[:-1])
    best = 5 + int(np.argmin(variance[5 : deadline + 1]))
    assert den.best_iter_ == best
    assert den.n_iter_ == max(deadline, best + 7) + 1
    np.testing.assert_array_equal(
        estimate, _deadline_fit(noisy, None, max_iter=best + 1).transform(noisy)
    )


def test_the_deadline_wraps_self_validation_as_it_wraps_es_emv():
    # Any rule runs inside: SelfValidation (an autoencoder trained on the iterates, on
    # its own seed) records the same signal as alone, and at the noise level its
    # minimum so far is kept.
    _, noisy = _noisy(sigma=0.1)

    def self_validation():
        return SelfValidation(window=8, patience=300, warmup=5, batch_size=4, width=4)

    rule = NoiseLevelDeadline(self_validation(), noise_var=0.01, patience=7)
    den = _deadline_fit(noisy, rule, max_iter=400)
    assert den.stopped_by_ == "early_stopping" and den.n_iter_ < 400
    with pytest.warns(ConvergenceWarning):  # alone it goes on: cut at the same step
        alone = DIPDenoiser(**_params(self_validation(), max_iter=den.n_iter_)).fit(noisy)
    signal = den.history_["signal"]
    np.testing.assert_array_equal(signal, alone.history_["signal"])  # NaN in the warm-up
    # The deadline: the first step past the warm-up whose residual (the MSE loss of
    # the iterate the rule saw) reached 0.01; the fit ended 7 steps later.
    loss = den.history_["loss"]
    deadline = 5 + int(np.argmax(loss[5:] <= 0.01))
    assert loss[deadline] <= 0.01 < loss[5:deadline].min()
    assert den.n_iter_ == deadline + 8
    assert den.best_iter_ == 5 + int(np.nanargmin(signal[5 : deadline + 1]))


def test_deadline_batched_fits_select_as_sequential_ones():
    _, a = _noisy(seed=0)
    _, b = _noisy(seed=1)
    X = np.stack([a, b])[..., None]
    rule = NoiseLevelDeadline(ExponentialMovingVariance(warmup=5), noise_var=0.01, patience=7)
    one = DIPDenoiser(**_params(rule, max_iter=600)).fit(X)
    batched = DIPDenoiser(**_params(rule, max_iter=600, batch_size=2)).fit(X)
    assert list(batched.best_iter_) == list(one.best_iter_)
    assert list(batched.n_iter_) == list(one.n_iter_)
    assert max(one.n_iter_) < 600  # the deadline ended both


@pytest.mark.parametrize(
    "params, error",
    [
        ({"tau": 0}, InvalidParameterError),
        ({"tau": float("nan")}, InvalidParameterError),
        ({"noise_var": True}, InvalidParameterError),
        ({"noise_var": float("inf")}, InvalidParameterError),
        ({"patience": 0}, InvalidParameterError),
        ({"patience": True}, InvalidParameterError),
        ({"rule": "emv"}, InvalidParameterError),
        ({"rule": ExponentialMovingVariance(alpha=2.0)}, InvalidParameterError),
        ({"rule": DiscrepancyPrinciple()}, ValueError),
        ({"rule": NoiseLevelDeadline()}, ValueError),
    ],
)
def test_deadline_bad_parameters_are_refused_when_the_fit_starts(params, error):
    _, noisy = _noisy()
    den = DIPDenoiser(generator=TINY, max_iter=3, early_stopping=NoiseLevelDeadline(**params))
    with pytest.raises(error):
        den.fit(noisy)


def test_deadline_clone_get_params_and_pickle():
    rule = NoiseLevelDeadline(WindowedMovingVariance(window=20), tau=1.1, patience=150)
    den = DIPDenoiser(early_stopping=rule)
    params = den.get_params()
    assert params["early_stopping__rule__window"] == 20
    assert params["early_stopping__tau"] == 1.1
    den.set_params(early_stopping__rule__window=30)
    assert rule.rule.window == 30
    assert clone(den).early_stopping.get_params()["rule__window"] == 30
    _, noisy = _noisy()
    rule = NoiseLevelDeadline(ExponentialMovingVariance(warmup=2), noise_var=1.0, patience=1)
    with pytest.warns(UserWarning, match="lowest at the first iteration"):
        fitted = DIPDenoiser(**_params(rule, max_iter=20)).fit(noisy)
    assert fitted.n_iter_ == 4  # noise power 1: the deadline at the first check
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.transform(noisy), fitted.transform(noisy))


def test_fits_with_the_deadline_score_as_their_variance_rule():
    _, noisy = _noisy()
    emv, wmv = get_scorer("emv", sigma=0.1), get_scorer("wmv", sigma=0.1)
    for rule, steps in [
        (NoiseLevelDeadline(), 120),  # past ES-EMV's default warm-up of 100
        (NoiseLevelDeadline(ExponentialMovingVariance(warmup=2), patience=5), 8),
    ]:
        den = DIPDenoiser(**_params(rule, max_iter=steps))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cut by max_iter
            den.fit(noisy)
        assert np.isfinite(emv(den, noisy))
        assert np.isfinite(get_scorer("emv_variance", sigma=0.1)(den, noisy))
        with pytest.raises(ValueError, match="early_stopping='wmv'"):
            wmv(den, noisy)
    rule = NoiseLevelDeadline(WindowedMovingVariance(window=3, warmup=2), noise_var=1e-9)
    den = DIPDenoiser(**_params(rule, max_iter=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        den.fit(noisy)
    assert np.isfinite(wmv(den, noisy))


def test_a_first_check_minimum_under_the_deadline_names_the_wrapped_warmup():
    _, noisy = _noisy(sigma=0.1)
    rule = NoiseLevelDeadline(ExponentialMovingVariance(warmup=4), noise_var=1.0, patience=3)
    with pytest.warns(UserWarning, match="the running variance was lowest at the first") as w:
        DIPDenoiser(**_params(rule, max_iter=50)).fit(noisy)
    text = " ".join(str(m.message) for m in w)
    assert "early_stopping=NoiseLevelDeadline(ExponentialMovingVariance(warmup=...))" in text


def test_a_deadline_fit_cut_by_max_iter_goes_on_as_one_fit():
    _, noisy = _noisy(sigma=0.1)
    rule = NoiseLevelDeadline(ExponentialMovingVariance(warmup=5), noise_var=0.01, patience=7)
    one = DIPDenoiser(**_params(rule, max_iter=600)).fit(noisy)
    resumed = DIPDenoiser(**_params(rule, max_iter=30, warm_start=True))
    with pytest.warns(ConvergenceWarning):
        resumed.fit(noisy)
    resumed.set_params(max_iter=600).fit(noisy)
    assert (resumed.best_iter_, resumed.n_iter_) == (one.best_iter_, one.n_iter_)
    np.testing.assert_array_equal(resumed.transform(noisy), one.transform(noisy))
