"""Settings for the whole suite: the tests under tests/ and the examples in skdip's docstrings."""

import pytest
import torch

pytest_plugins = ["pytester"]  # tests/test_suite_settings.py runs this file on a sample


@pytest.fixture(autouse=True)
def _auto_device_is_the_cpu(request, monkeypatch):
    # The suite's fits run on the CPU, where a seeded fit repeats bit for bit: many tests
    # compare two fits exactly, and on a GPU the same seeded fit twice differs (by 0.05
    # in a pixel on an H200: 14 tests and examples failed on that alone). So "auto" means
    # the CPU here even where there is a GPU; tests marked `cuda` see the machine as it is.
    # Not in processes a test starts (a search's joblib workers, Dask's): an estimator
    # sent there with "auto" resolves it anew (skdip's own n_jobs sends the device).
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
