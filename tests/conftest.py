import numpy as np
import pytest
import torch

import skdip._engine


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tiny test problems gain nothing from threads, and OpenMP spin-waits make
    # oversubscribed runs (parallel CI jobs, pytest-xdist) crawl.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed_global_generators():
    # Estimators left at random_state=None draw from the global generators, whose
    # state would otherwise depend on which tests ran before and how far
    # timing-dependent ones (Ctrl-C, timeouts) got: seed them so that every test
    # sees the same draws on every machine and in any order.
    np.random.seed(0)  # noqa: NPY002 (random_state=None draws from this legacy generator)
    torch.manual_seed(0)


@pytest.fixture
def float64():
    """torch's default dtype set to float64 for the test, then restored."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def count_fits(monkeypatch):
    """The one-by-one fits (the engine's fit_model calls) made while a test runs."""
    calls = []
    original = skdip._engine.fit_model

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr("skdip.estimators._base.fit_model", counting)
    return calls


class _CtrlCAt:
    """A fit callback that records the steps it sees and raises KeyboardInterrupt
    (a simulated Ctrl-C) at its ``at``-th call overall."""

    def __init__(self, at: int):
        self.at, self.calls = at, []

    def __deepcopy__(self, memo):
        # clone() deep-copies callbacks: every copy counts on the one record, as a
        # function's closure would.
        return self

    def __call__(self, it, loss, estimate):
        self.calls.append(it)
        if len(self.calls) == self.at:
            raise KeyboardInterrupt


@pytest.fixture
def ctrl_c_at():
    """Factory of callbacks simulating one Ctrl-C at a given call: ``ctrl_c_at(3)``."""
    return _CtrlCAt


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test: a process started in the background
    by a non-interactive shell ignores SIGINT, and then neither a real SIGINT nor
    ``_thread.interrupt_main()`` raises KeyboardInterrupt."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.fixture
def loss_nan_at():
    """``make(*calls) -> (loss, count)``: an MSE loss that is NaN at the given calls
    (counted from 1 in ``count[0]``, which a test resets), to set off the divergence
    guard at a chosen step."""

    def make(*calls):
        count = [0]

        def loss(prediction, target):
            count[0] += 1
            value = (prediction - target).square().mean()
            return value * float("nan") if count[0] in calls else value

        return loss, count

    return make
