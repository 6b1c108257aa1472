"""By-hand check of the Ray recipe in doc/model_selection.md (not run in CI).

Ray is not a dependency of skdip; install it in a separate environment::

    pip install ray
    python benchmarks/ray_recipe.py

A small no-reference ``GridSearchCV`` runs once serially and once through
Ray's joblib backend on a local Ray instance; the scores must be identical.
Writes ``benchmarks/results/ray_recipe.md``.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV

from skdip import DIPDenoiser, SkipNetwork
from skdip.metrics import get_scorer
from skdip.model_selection import FitImagesCV

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    try:  # imported here: the module imports without Ray (tests/test_benchmarks.py)
        import ray
        from ray.util.joblib import register_ray
    except ImportError:
        raise SystemExit(
            "ray_recipe.py needs Ray, which is no dependency of skdip: install it in a "
            "separate environment (pip install ray), then run this script there"
        ) from None
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)  # as each Ray worker (one CPU each)
    load = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    images = [np.clip(0.5 + 0.1 * rng.standard_normal((16, 16)), 0, 1) for _ in range(2)]
    tiny = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)
    grid = {"lr": [0.01, 0.02], "reg_noise_std": [0.0, 0.05]}
    est = DIPDenoiser(generator=tiny, max_iter=20, early_stopping=None, random_state=0)

    t0 = time.perf_counter()
    serial = GridSearchCV(est, grid, cv=FitImagesCV(), scoring=get_scorer("emv")).fit(images)
    t1 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False)
    t2 = time.perf_counter()
    register_ray()
    with parallel_config(backend="ray"):
        search = GridSearchCV(est, grid, cv=FitImagesCV(), scoring=get_scorer("emv"), n_jobs=2)
        on_ray = search.fit(images)
    t3 = time.perf_counter()
    ray.shutdown()
    a = serial.cv_results_["mean_test_score"]
    b = on_ray.cv_results_["mean_test_score"]
    same = bool(np.array_equal(a, b))
    lines = [
        "# Ray recipe check",
        "",
        f"Command: `python benchmarks/ray_recipe.py` with Ray {ray.__version__} (separate "
        f"environment), 2-core machine, load average {load:.1f} at the start, 1 torch thread. "
        "GridSearchCV over 4 settings of a tiny DIPDenoiser "
        "(two 16x16 images, 20 steps, `cv=FitImagesCV()`, `scoring=get_scorer('emv')`).",
        "",
        "| run | wall time (s) | best params |",
        "|---|---|---|",
        f"| serial | {t1 - t0:.1f} | {serial.best_params_} |",
        f"| Ray backend, n_jobs=2 (ray.init {t2 - t1:.1f} s not included) | {t3 - t2:.1f} | "
        f"{on_ray.best_params_} |",
        "",
        f"Scores identical to the serial search: {same} ({np.round(b, 6).tolist()}).",
        "",
        "On a tiny search the Ray run is dominated by starting its worker processes (each "
        "imports torch); it pays only when single fits take much longer than that.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_recipe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not same:
        raise SystemExit("the Ray search did not reproduce the serial scores")


if __name__ == "__main__":
    main()
