import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from skdip import ExponentialMovingVariance, WindowedMovingVariance
from skdip.stopping import get_stopping_rule


def _sequence(n=60, shape=(1, 2, 5, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=g, dtype=torch.float64) for _ in range(n)]


def _feed(rule, xs):
    rule.start()
    values = []
    for it, x in enumerate(xs):
        sig = rule.signal(x, it)
        values.append(np.nan if sig is None else float(sig))
    return np.array(values)


def test_emv_matches_the_recursion_written_out():
    xs = _sequence()
    alpha = 0.2
    got = _feed(ExponentialMovingVariance(alpha=alpha, warmup=0), xs)
    mean, var = xs[0].numpy(), 0.0
    expected = [np.nan]
    for x in xs[1:]:
        delta = x.numpy() - mean
        mean = mean + alpha * delta
        var = (1 - alpha) * (var + alpha * np.mean(delta**2))
        expected.append(var)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_emv_warmup_hides_the_signal():
    got = _feed(ExponentialMovingVariance(warmup=10), _sequence(20))
    assert np.isnan(got[:10]).all()
    assert np.isfinite(got[10:]).all()


def test_wmv_matches_brute_force_window_variance():
    xs = _sequence(50)
    window = 7
    got = _feed(WindowedMovingVariance(window=window), xs)
    assert np.isnan(got[: window - 1]).all()
    for t in range(window - 1, len(xs)):
        stack = torch.stack(xs[t - window + 1 : t + 1]).numpy()
        expected = stack.var(axis=0).mean()
        assert got[t] == pytest.approx(expected, rel=1e-9)


def test_wmv_float32_keeps_tiny_variances():
    # Iterates near 0.5 that differ by 1e-4: float32 sums would cancel.
    base = torch.full((1, 1, 8, 8), 0.5)
    xs = [base + 1e-4 * (i % 2) for i in range(10)]
    got = _feed(WindowedMovingVariance(window=4), xs)
    assert got[-1] == pytest.approx(0.25e-8, rel=1e-2)


def test_patience_counts_steps_without_a_new_minimum():
    rule = ExponentialMovingVariance(patience=3, warmup=0)
    rule.start()
    decisions = [rule.observe(v, i) for i, v in enumerate([5.0, 4.0, 4.5, 4.2, 4.1])]
    assert decisions == [
        (True, False),
        (True, False),
        (False, False),
        (False, False),
        (False, True),
    ]
    assert rule.best_iter_ == 1 and rule.best_value_ == 4.0


def test_a_new_minimum_resets_patience():
    rule = ExponentialMovingVariance(patience=2, warmup=0)
    rule.start()
    stops = [rule.observe(v, i)[1] for i, v in enumerate([3.0, 4.0, 2.0, 5.0, 6.0])]
    assert stops == [False, False, False, False, True]


def test_rules_are_estimators_for_grid_search():
    rule = WindowedMovingVariance(window=20, patience=5)
    assert rule.get_params() == {"window": 20, "patience": 5, "warmup": 0}
    rule.set_params(patience=9)
    twin = clone(rule)
    assert twin.patience == 9 and twin is not rule


@pytest.mark.parametrize(
    "rule",
    [
        ExponentialMovingVariance(alpha=0.0),
        ExponentialMovingVariance(alpha=1.5),
        ExponentialMovingVariance(patience=0),
        WindowedMovingVariance(window=1),
        WindowedMovingVariance(warmup=-1),
    ],
)
def test_invalid_parameters_are_rejected_at_start(rule):
    with pytest.raises(InvalidParameterError):
        rule.start()


@pytest.mark.parametrize(
    "rule",
    [
        ExponentialMovingVariance(patience=True),
        ExponentialMovingVariance(warmup=True),
        WindowedMovingVariance(patience=True),
    ],
)
def test_a_bool_for_a_rules_number_is_refused(rule):
    # bool is an int to Python: DIPDenoiser(early_stopping=ExponentialMovingVariance(
    # patience=True, warmup=True)) stopped silently after 3 of 30 steps (patience 1),
    # while the estimator's own max_iter=True is refused.
    from skdip import DIPDenoiser

    with pytest.raises(InvalidParameterError, match="parameter .* not a bool"):
        rule.start()
    den = DIPDenoiser(generator="skip-small", max_iter=3, early_stopping=rule)
    with pytest.raises(InvalidParameterError, match="parameter .* not a bool"):
        den.fit(np.zeros((8, 8)))


@pytest.mark.parametrize("name", ["emv", "wmv", "sv"])
def test_a_rule_used_before_start_says_so(name):
    # A loop of one's own (as in BaseStoppingRule's example) that forgot start(), or a
    # clone of a started rule, failed with "'ExponentialMovingVariance' object has no
    # attribute '_mean'" (WindowedMovingVariance: '_count'; observe(): 'best_value_').
    from skdip.stopping import SelfValidation

    rule = {
        "emv": ExponentialMovingVariance(warmup=0),
        "wmv": WindowedMovingVariance(window=2),
        "sv": SelfValidation(window=2, batch_size=2, width=2),
    }[name]
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"call start\(\) before"):
        rule.signal(x, 0)
    with pytest.raises(RuntimeError, match=r"call start\(\) before"):
        rule.observe(1.0, 0)
    rule.start()
    rule.signal(x, 0)
    with pytest.raises(RuntimeError, match=r"call start\(\) before"):
        clone(rule).signal(x, 1)


def test_get_stopping_rule():
    assert isinstance(get_stopping_rule("emv"), ExponentialMovingVariance)
    assert isinstance(get_stopping_rule("wmv"), WindowedMovingVariance)
    assert get_stopping_rule(None) is None
    rule = ExponentialMovingVariance()
    assert get_stopping_rule(rule) is rule
    with pytest.raises(ValueError, match="early_stopping"):
        get_stopping_rule("variance")


def test_the_base_rule_ignores_values_before_its_warmup():
    # A user's rule whose signal() does not hide the warm-up stopped at iteration 6
    # with its minimum at 0, under warmup=30.
    from skdip.stopping import BaseStoppingRule

    class Raw(BaseStoppingRule):
        def _start(self):
            pass

        def signal(self, x, iteration):
            return x.sum()

    rule = Raw(patience=2, warmup=3)
    rule.start()
    decisions = [rule.observe(v, i) for i, v in enumerate([1.0, 2.0, 3.0, 9.0, 8.0, 8.5, 8.6])]
    assert decisions[:3] == [(False, False)] * 3
    assert rule.best_iter_ == 4 and decisions[-1] == (False, True)


def _user_rule(returns, warmup=0):
    from skdip.stopping import BaseStoppingRule

    class UserRule(BaseStoppingRule):
        def _start(self):
            pass

        def signal(self, x, iteration):
            return returns(x, iteration)

    return UserRule(patience=3, warmup=warmup)


def _fit_with(rule, batch_size=1, n_images=1):
    from skdip import DIPDenoiser, SkipNetwork

    den = DIPDenoiser(
        generator=SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1),
        max_iter=20,
        early_stopping=rule,
        random_state=0,
        device="cpu",
        output_averaging=None,
        batch_size=batch_size,
    )
    images = np.random.default_rng(0).random((n_images, 8, 8, 1))
    return den.fit(images if n_images > 1 else images[0, ..., 0])


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_user_rule_may_return_a_python_number(batch_size):
    # 'float' object has no attribute 'reshape' before; a number is a valid signal.
    # A valley at 3; patience 3 stops at 6.
    den = _fit_with(_user_rule(lambda x, it: float(abs(it - 3))), batch_size, n_images=2)
    assert list(den.stopped_by_) == ["early_stopping"] * 2
    assert list(den.n_iter_) == [7, 7] and list(den.best_iter_) == [3, 3]


@pytest.mark.parametrize(
    "returns, error, match",
    [
        (
            lambda x, it: x,
            ValueError,
            r"UserRule.signal must return a scalar.*shape \(1, 1, 8, 8\)",
        ),
        (lambda x, it: "low", TypeError, "UserRule.signal must return a scalar torch tensor"),
        (lambda x, it: x.mean() * 1j, TypeError, "must return a real value"),
    ],
)
def test_a_user_rule_returning_a_wrong_signal_is_named(returns, error, match):
    with pytest.raises(error, match=match):
        _fit_with(_user_rule(returns))


def test_a_user_rules_values_within_its_warm_up_count_nowhere():
    # The base class lets signal() return values in the warm-up; the history showed
    # them, and the spurious-first-minimum warning never fired for such a rule.
    with pytest.warns(UserWarning, match=r"stopping signal of UserRule was lowest at the first"):
        den = _fit_with(_user_rule(lambda x, it: float(abs(it - 3)), warmup=5))
    signal = den.history_["signal"]
    assert np.isnan(signal[:5]).all() and np.isfinite(signal[5:]).all()
    assert den.best_iter_ == 5 and den.n_iter_ == 9


def test_a_user_rule_missing_its_hooks_is_told_what_to_define():
    from skdip.stopping import BaseStoppingRule

    class NoStart(BaseStoppingRule):
        def signal(self, x, iteration):
            return x.mean()

    class NoSignal(BaseStoppingRule):
        def _start(self):
            pass

    with pytest.raises(NotImplementedError, match=r"NoStart must define _start\(\)"):
        _fit_with(NoStart())
    with pytest.raises(NotImplementedError, match=r"NoSignal must define signal\(x, iteration\)"):
        _fit_with(NoSignal())


# --------------------------------------------------------------------------- self-validation


def _structured(size=16):
    yy, xx = np.mgrid[0:size, 0:size] / size
    return torch.tensor(0.5 + 0.3 * np.sin(4 * xx) * np.cos(3 * yy), dtype=torch.float32)[
        None, None
    ]


def test_self_validation_error_is_lowest_between_learning_and_fitting_noise():
    # Iterates first approach the picture (a blur fading), then pick up a growing
    # noise pattern: the autoencoder reconstructs the smooth ones, not the noisy ones.
    from skdip.stopping import SelfValidation

    clean = _structured()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    rule = SelfValidation(window=8, batch_size=4, patience=1000, lr=1e-2)
    rule.start()
    signals = []
    for it in range(120):
        fade = max(0.0, 1 - it / 40)
        grow = max(0.0, (it - 60) / 60)
        x = clean * (1 - 0.5 * fade) + 0.25 * grow * noise
        value = rule.signal(x, it)
        assert (value is None) == (it < 7)  # the first check when the window is full
        if value is not None:
            signals.append(float(value))
            rule.observe(float(value), it)
    assert 40 <= rule.best_iter_ <= 75, rule.best_iter_
    # The noisy end scores clearly worse than the minimum.
    assert signals[-1] > 3 * rule.best_value_


def test_self_validation_is_seeded_and_leaves_the_global_generator_alone():
    from skdip.stopping import SelfValidation

    def run(seed):
        rule = SelfValidation(window=4, batch_size=2, random_state=seed)
        rule.start()
        x = _structured()
        return [rule.signal(x + 0.01 * k, k) for k in range(8)][-1]

    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    a = run(0)
    assert torch.equal(torch.rand(2), expected)
    assert torch.equal(a, run(0)) and not torch.equal(a, run(1))


def test_self_validation_in_an_estimator_and_a_grid():
    from skdip import DIPDenoiser
    from skdip.stopping import SelfValidation

    noisy = np.random.default_rng(0).random((12, 12))
    kw = dict(
        generator="skip-small", max_iter=12, random_state=0, device="cpu", output_averaging=None
    )
    rule = SelfValidation(window=3, batch_size=2, patience=2)
    den = DIPDenoiser(early_stopping=rule, **kw).fit(noisy)
    assert 2 <= den.best_iter_ < den.n_iter_ <= 12
    again = DIPDenoiser(early_stopping=rule, **kw).fit(noisy)
    np.testing.assert_array_equal(den.reconstruction_, again.reconstruction_)
    assert clone(den).get_params()["early_stopping__window"] == 3


def test_self_validation_trains_its_autoencoder_inside_no_grad():
    from skdip.stopping import SelfValidation

    rule = SelfValidation(window=2, batch_size=2)
    rule.start()
    x = _structured()
    with torch.no_grad():
        values = [rule.signal(x * (1 + 0.1 * k), k) for k in range(4)]
    assert values[0] is None and all(v is not None for v in values[1:])
    assert len({float(v) for v in values[1:]}) == 3  # it learnt between steps


@pytest.mark.parametrize("mode", ["inference_mode", "autocast"])
def test_self_validation_on_its_own_gives_its_signal_in_any_mode(mode):
    # Called on its own in a loop of the user's: inside torch.inference_mode() it failed
    # with torch's "element 0 of tensors does not require grad", and inside
    # torch.autocast it trained its autoencoder in bfloat16 (another signal).
    from skdip.stopping import SelfValidation

    def run():
        rule = SelfValidation(window=4, batch_size=2)
        rule.start()
        x = _structured()
        return [rule.signal(x * (1 + 0.1 * k), k) for k in range(8)][3:]

    plain = run()
    with torch.inference_mode() if mode == "inference_mode" else torch.autocast("cpu"):
        inside = run()
    assert [float(v) for v in inside] == [float(v) for v in plain]


@pytest.mark.parametrize(
    "params",
    [
        dict(window=1),
        dict(lr=0),
        dict(batch_size=0),
        dict(batch_size=1),  # its BatchNorm skipped every batch of one: never trained
        dict(width=0),
        dict(random_state=-1),
    ],
)
def test_self_validation_rejects_bad_parameters(params):
    from skdip.stopping import SelfValidation

    with pytest.raises(InvalidParameterError):
        SelfValidation(**params).start()


def test_self_validation_refuses_a_batch_of_images():
    from skdip.stopping import SelfValidation

    rule = SelfValidation(window=2)
    rule.start()
    with pytest.raises(ValueError, match=r"one image at a time"):
        rule.signal(torch.rand(2, 1, 8, 8), 0)


# --------------------------------------------------------------------------- kept state


def _window_rules():
    from skdip.stopping import SelfValidation

    return {
        "wmv": lambda: WindowedMovingVariance(window=6, patience=1000),
        "self-validation": lambda: SelfValidation(window=6, batch_size=2, patience=1000),
    }


@pytest.mark.parametrize("name", list(_window_rules()))
@pytest.mark.parametrize("copy_with", ["pickle", "deepcopy"])
def test_a_copied_window_rule_goes_on_bit_identically(name, copy_with):
    # Cut before the window is full, as it fills, and after it wrapped around.
    import copy
    import pickle

    make = _window_rules()[name]
    xs = [x.float() for x in _sequence(16, shape=(1, 2, 8, 8))]
    expected = _feed(make(), xs)
    for cut in (2, 5, 6, 9):
        rule = make()
        rule.start()
        got = [rule.signal(x, it) for it, x in enumerate(xs[:cut])]
        if copy_with == "pickle":
            rule = pickle.loads(pickle.dumps(rule))
        else:
            rule = copy.deepcopy(rule)
        got += [rule.signal(x, it) for it, x in enumerate(xs[cut:], start=cut)]
        got = np.array([np.nan if g is None else float(g) for g in got])
        np.testing.assert_array_equal(got, expected, err_msg=f"cut at {cut}")


def test_a_self_validation_rule_copies_without_a_torch_generator_in_its_state():
    # A bug the suite once missed: torch before 2.3 can neither pickle nor deep-copy a
    # torch.Generator, and SelfValidation kept one (the order of its autoencoder's
    # batches), so a kept warm_start fit or a cloned search failed there (seen with
    # torch 2.1.2, where the test above failed; on newer torch it passes either way).
    import pickle

    from skdip.stopping import SelfValidation

    rule = _window_rules()["self-validation"]()
    rule.start()
    for it, x in enumerate(_sequence(9, shape=(1, 2, 8, 8))):
        rule.signal(x.float(), it)
    assert isinstance(rule._order, torch.Generator)  # built: the window is full
    state = rule.__getstate__()
    assert not any(isinstance(value, torch.Generator) for value in state.values())
    copied = pickle.loads(pickle.dumps(rule))
    assert isinstance(copied, SelfValidation) and isinstance(copied._order, torch.Generator)
    assert torch.equal(copied._order.get_state(), rule._order.get_state())


@pytest.mark.parametrize("name", list(_window_rules()))
def test_a_window_rule_pickles_only_the_iterates_it_has_seen(name):
    # WMV's window (and SelfValidation's) was allocated whole at the first step and
    # pickled whole: 100 iterates of the image after a 2-step warm_start fit.
    import pickle

    rule = _window_rules()[name]().set_params(window=40)
    rule.start()
    x = torch.rand(1, 3, 16, 16)
    image = x.numel() * x.element_size()
    for it in range(2):
        rule.signal(x + it, it)
    # Two iterates, and WMV's two float64 sums (four float32 images).
    assert len(pickle.dumps(rule)) < 8 * image


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(_window_rules()))
def test_a_pickled_warm_fit_with_a_window_rule_is_one_longer_fit(name):
    import pickle

    from skdip import DIPDenoiser, SkipNetwork

    kw = dict(
        generator=SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1),
        early_stopping=_window_rules()[name](),
        random_state=0,
        device="cpu",
    )
    noisy = np.random.default_rng(0).random((12, 12, 3))
    longer = DIPDenoiser(max_iter=11, **kw).fit(noisy)
    warm = DIPDenoiser(max_iter=2, warm_start=True, **kw).fit(noisy)
    # The kept rule holds two iterates; a continuation works on a deep copy of it.
    warm = pickle.loads(pickle.dumps(warm))
    warm.set_params(max_iter=3).fit(noisy)  # the window fills
    warm.set_params(max_iter=6).fit(noisy)  # and wraps around
    np.testing.assert_array_equal(warm.reconstruction_, longer.reconstruction_)
    np.testing.assert_array_equal(warm.history_["signal"], longer.history_["signal"])
    assert warm.best_iter_ == longer.best_iter_ and warm.n_iter_ == 11


def test_a_tie_keeps_the_earlier_minimum():
    # Only a strictly smaller value is a new minimum: a tie neither moves best_iter_
    # nor resets the patience.
    rule = ExponentialMovingVariance(patience=2, warmup=0)
    rule.start()
    stops = [rule.observe(v, i)[1] for i, v in enumerate([3.0, 2.0, 2.0, 2.0])]
    assert stops == [False, False, False, True]
    assert rule.best_iter_ == 1


# A bug the suite once missed (SelfValidation's warm-up: the first checked
# iteration is `warmup` itself, as for the variance rules; that bug waited one more).
def test_self_validation_first_signal_is_at_the_warmup():
    from skdip.stopping import SelfValidation

    rule = SelfValidation(window=2, batch_size=2, warmup=3, width=2)
    rule.start()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    values = [rule.signal(x * (1 + 0.1 * k), k) for k in range(6)]
    assert [v is None for v in values] == [True, True, True, False, False, False]


@pytest.mark.parametrize("name", ["wmv", "self-validation"])
def test_a_numpy_window_of_a_small_type_runs_past_its_range(name):
    # window=np.int8(3) (a NumPy integer passes the parameter check) made the step
    # count overflow in the window's index: OverflowError at step 128, in the fit.
    from skdip.stopping import SelfValidation

    def make(window, batch_size=2):
        if name == "wmv":
            return WindowedMovingVariance(window=window, patience=1000)
        return SelfValidation(window=window, batch_size=batch_size, width=1, patience=1000)

    xs = [x.float() for x in _sequence(130, shape=(1, 1, 4, 4))]
    expected = _feed(make(3), xs)
    np.testing.assert_array_equal(_feed(make(np.int8(3), np.int8(2)), xs), expected)


def test_a_self_validation_rule_loads_onto_another_device():
    # A kept warm_start fit moves to a changed device through torch.load(map_location=
    # device), which put the state of the rule's (CPU) batch-order generator on that
    # device too: 'RNG state must be a torch.ByteTensor', and the fit did not go on.
    # The meta device stands in for a GPU this machine may lack.
    import io

    rule = _window_rules()["self-validation"]()
    rule.start()
    for it, x in enumerate(_sequence(7, shape=(1, 2, 8, 8))):
        rule.signal(x.float(), it)
    buffer = io.BytesIO()
    torch.save(rule, buffer)
    buffer.seek(0)
    moved = torch.load(buffer, map_location="meta", weights_only=False)
    assert moved._buffer.device.type == "meta"
    assert isinstance(moved._order, torch.Generator) and moved._order.device.type == "cpu"
    assert torch.equal(moved._order.get_state(), rule._order.get_state())


@pytest.mark.parametrize("patience", [np.int64(2), np.uint8(2)])
def test_observe_answers_python_bools_for_a_numpy_patience(patience):
    # It said np.False_ (annotated tuple[bool, bool]): ``stop is False`` was False.
    rule = ExponentialMovingVariance(patience=patience, warmup=0)
    rule.start()
    answers = [rule.observe(value, it) for it, value in enumerate([1.0, 2.0, 3.0])]
    assert answers == [(True, False), (False, False), (False, True)]
    assert all(type(flag) is bool for answer in answers for flag in answer)
