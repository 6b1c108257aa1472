"""GridSearchCV on a real dask.distributed cluster (loopback), through joblib."""

import numpy as np
import pytest
import torch
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV

from skdip import DIPDenoiser, SkipNetwork
from skdip.metrics import get_scorer
from skdip.model_selection import FitImagesCV

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)


def _search():
    den = DIPDenoiser(generator=TINY, max_iter=6, early_stopping=None, random_state=0, device="cpu")
    return GridSearchCV(
        den,
        {"lr": [0.01, 0.03], "reg_noise_std": [0.0, 0.05]},
        cv=FitImagesCV(),
        scoring={"emv": get_scorer("emv"), "variance": get_scorer("emv_variance")},
        refit="emv",
        n_jobs=2,
    )


@pytest.fixture(scope="module")
def client():
    # Two single-threaded worker processes talking TCP on loopback: tasks and
    # results are serialised and fits run in other processes, as on a cluster.
    # Forked rather than spawned, so the workers start with torch and skdip
    # already imported (a spawned worker imports torch afresh: too slow here).
    # Worker threads of one process would not do: networks are seeded through
    # torch's process-wide RNG, so concurrent fits in threads are not reproducible.
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address=None,
        )
    client = distributed.Client(cluster)
    # One torch thread per single-threaded worker, as a spawned worker would have.
    client.run(torch.set_num_threads, 1)
    yield client
    client.close()
    cluster.close()


def test_grid_search_on_a_local_dask_cluster(client):
    rng = np.random.default_rng(0)
    images = [np.clip(0.5 + 0.1 * rng.standard_normal((16, 16)), 0, 1) for _ in range(2)]
    local = _search().set_params(n_jobs=1).fit(images)
    with distributed.get_task_stream(client) as stream, parallel_config(backend="dask"):
        remote = _search().fit(images)
    # The candidate fits ran as tasks on the cluster's workers.
    assert len(stream.data) >= 4
    workers = {task["worker"] for task in stream.data}
    assert workers <= set(client.scheduler_info()["workers"])
    # Same seeds, same CPU arithmetic: the same scores and the same choice.
    for key in ("mean_test_emv", "mean_test_variance"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-6)
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(
        remote.best_estimator_.reconstruction_[0], local.best_estimator_.reconstruction_[0]
    )
