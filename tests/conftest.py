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
