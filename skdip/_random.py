"""Seeded construction of networks that leaves the caller's random state alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["BUILD_LOCK", "seeded_cpu_rng"]

# Re-entrant: an estimator holds it around its whole model set-up (which seeds
# torch's global RNG too, and builds the network inside). Builds in threads of one
# process (Dask or joblib threading workers) must not interleave.
BUILD_LOCK = threading.RLock()


@contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator for the block, and restore it after.

    Only the CPU generator: ``torch.manual_seed`` would reseed every GPU's too,
    which ``fork_rng(devices=[])`` does not give back. Networks are built on the CPU.
    """
    with BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        yield
