import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tiny test problems gain nothing from threads, and OpenMP spin-waits make
    # oversubscribed runs (parallel CI jobs, pytest-xdist) crawl.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
