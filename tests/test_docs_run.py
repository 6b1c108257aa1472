"""The Python blocks of README.md and doc/*.md run, page by page.

test_docs.py checks the blocks statically; this module executes them, so that a block
which breaks only at runtime (shapes that do not fit, a missing attribute, an argument
with a wrong value) fails the suite. The blocks of one page run in order in one
namespace, as a reader pasting them one after the other would: a later block uses what
an earlier one defined.

What this proves, and what it does not: the guides' code runs and its calls, attributes
and shapes fit the API; a few results the comments state (shapes, a returned array) are
checked in ``CHECKS``, right after their block. Nothing about the quality figures the
guides quote: the fits are cut to a few steps of tiny networks on tiny pictures, by the
``_quick_fits`` fixture, which patches exactly this:

- the engine's two entry points, ``skdip._engine.fit_model`` and ``fit_batch``, wherever
  an skdip module holds them, are wrapped to run at most ``MAX_STEPS`` steps (``max_iter``
  and every batch member's ``max_iter`` capped). Every DIP fit, one by one, batched,
  warm-started or a phase retriever's pre-training, goes through them; the estimators'
  parameters are left as the block set them. Their "max_iter ended the fit before the
  stopping rule fired" warning, which the cap causes, is silenced;
- the named generators ``"skip"`` and ``"skip-small"`` build a two-level, four-channel
  :class:`~skdip.generators.SkipNetwork` (``"skip"``'s construction alone takes 0.4 s);
  generator objects a block passes itself are used as given.

Nothing else is changed: ``load_image`` and the simulators run as written (the guides
already use 64x64 pictures), and so does ``HIOPhaseRetriever``, which has no network
(its 1000 steps, and the four runs of PhaseRetriever's ``init="hio"``, take about 5 s).
What the guides call the user's data (``y_noisy``, ``images``, ``masks``, ...) gets
small explicit values from ``SETUP``, per page. The blocks run in ``tmp_path``, so a
block that saves a file leaves nothing behind.

A block that needs what the suite cannot have (a cluster, a GPU, a file of the user's)
is marked in the guide by an HTML comment, invisible once rendered, on the line right
before its opening fence::

    <!-- skip-run: starts a Dask LocalCluster (worker processes) -->

It is reported as a skipped test with that reason, and the page's other blocks run
without it.
"""

import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import skdip
import skdip._engine
import skdip.generators
import skdip.model_selection  # noqa: F401 (loaded before the engine's names are patched)
from skdip.datasets import add_gaussian_noise, load_image
from skdip.generators import SkipNetwork

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "doc").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SKIP = re.compile(r"<!--\s*skip-run:\s*(.*?)\s*-->")
MAX_STEPS = 3


def _blocks(text: str, page: str) -> list[tuple[str, str, str | None]]:
    """``(name, source, skip reason or None)`` of each Python block of a page."""
    blocks = []
    for m in BLOCK.finditer(text):
        line = text[: m.start()].count("\n") + 1
        before = text[: m.start()].split("\n")  # its last item is "": the fence's line
        skip = SKIP.fullmatch(before[-2].strip()) if len(before) > 1 else None
        blocks.append((f"{page}:{line}", m.group(1), skip.group(1) if skip else None))
    return blocks


def _picture(size: int, gray: bool = False, name: str = "astronaut") -> np.ndarray:
    return load_image(name, size=size, as_gray=gray)


def _noisy(size: int, seed: int = 0, name: str = "astronaut") -> np.ndarray:
    return add_gaussian_noise(_picture(size, name=name), 0.1, random_state=seed)


def _masks(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size)) > 0.2  # True: observed


def _with_holes(size: int) -> np.ndarray:
    image = _picture(size).copy()
    image[~_masks(1, size)[0]] = np.nan
    return image


# The user's data each page names without defining it: tiny, in [0, 1].
SETUP = {
    "README.md": lambda: {"y_noisy": _noisy(16)},
    "blind_deblurring.md": lambda: {"blurry": _picture(24, gray=True), "k": 5},
    "denoising.md": lambda: {"y_noisy": _noisy(16), "noisy": _noisy(16)},
    "inverse_problems.md": lambda: {
        "low": _picture(8),
        "image_with_nans": _with_holes(16),
        "images": np.stack([_noisy(16, seed) for seed in range(2)]),
        "masks": _masks(2, 16),
        "noisy": _noisy(16),
    },
    "model_selection.md": lambda: {
        "images": np.stack([_noisy(16, seed) for seed in range(2)]),
        "masks": _masks(2, 16),
        "noisy": _noisy(16),
        "noisy_images": np.stack([_noisy(16, seed) for seed in range(2)]),
        "clean_images": np.stack([_picture(16)] * 2),
        "batch": np.stack([_noisy(16, seed) for seed in range(2)]),
        "X": np.stack([_noisy(8, seed, name) for seed in range(3) for name in ("camera", "coins")])[
            ..., :1
        ],
        "labels": np.array([0, 1] * 3),
    },
}

# What the comments of the guides state, where a short fit can show it: per page,
# (a line of the block, a check run in the page's namespace right after that block).
CHECKS = {
    "README.md": [
        ("x_hat = den.fit(y_noisy)", "x_hat.shape == y_noisy.shape"),
        ("x_hat = den.fit(y_noisy)", "den.stopped_by_ == 'max_iter' and den.n_iter_ == 3"),
    ],
    "blind_deblurring.md": [
        ("sharp = deb.fit(blurry)", "sharp.shape == blurry.shape"),
        ("sharp = deb.fit(blurry)", "abs(deb.kernel_.sum() - 1) < 1e-6"),
        ("sharp = deb.fit(blurry)", "deb.kernel_full_.shape == tuple(deb.kernel_size_)"),
        ("sharp = deb.fit(blurry)", "deb.n_iter_ == 3"),
    ],
    "denoising.md": [
        ("x_hat = den.fit_transform(y_noisy)", "x_hat.shape == y_noisy.shape"),
        ("x_hat = den.fit_transform(y_noisy)", "{'loss', 'signal'} <= set(den.history_)"),
        ("x_hat = den.fit_transform(y_noisy)", "'psnr' not in den.history_"),  # no y given
        ("den.set_params(max_iter=2000)", "den.n_iter_ == len(den.history_['loss']) == 6"),
        ("again = clone(first)", "type(first.random_state_) is int"),
        ("again = clone(first)", "np.array_equal(again.reconstruction_, first.reconstruction_)"),
    ],
    "inverse_problems.md": [
        ("high = est.fit_transform(low)", "high.shape == (2 * 8, 2 * 8, 3)"),
        ("filled = DIPInpainter(", "filled.shape == image_with_nans.shape"),
        ("filled = DIPInpainter(", "not np.isnan(filled).any()"),
        ("kspace = simulate_kspace(", "kspace.shape == (4, 64, 64) and np.iscomplexobj(kspace)"),
        ("kspace = simulate_kspace(", "y.shape == (64, 64, 8) and np.isrealobj(y)"),
        ("kspace = simulate_kspace(", "recon.shape == final.shape == baseline.shape == (64, 64)"),
        ("kspace = simulate_kspace(", "final.min() >= 0"),  # a root-sum-of-squares
        ("outliers = est.sparse_noise_", "outliers.shape == noisy.shape"),
    ],
    "model_selection.md": [
        ("refit=rule", "set(search.best_params_) == set(grid)"),
        ("n_best=3", "avg.scores_.shape == avg.selected_.shape == (4, 1)"),
        ("n_best=3", "avg.selected_.sum() == 3 and denoised.shape == noisy.shape"),
        ("best_scored([", "best_scored([-3.0, -1.0, -1.5, -2.2], margin=1.0).tolist() == [1, 2]"),
        ("default=default, n_best=4, margin=0.5", "avg.selected_[avg.default_index_, 0]"),
        ("max_distance=-10.5", "avg.distances_.shape == (4, 1)"),
        ('refit="emv"', "{'mean_test_emv', 'mean_test_psnr'} <= set(search.cv_results_)"),
        ("best_params_per_image(search)", "len(per_image) == len(batch)"),
        ("pipe.fit(X, labels)", "pipe.predict(X).shape == labels.shape"),
        ("fit_candidates(", "len(fitted) == 9 and all(est.n_iter_ == 3 for est in fitted)"),
    ],
    "phase_retrieval.md": [
        ("simulate_diffraction(", "y.shape == (128, 128)"),
        ("simulate_diffraction(", "x_dip.shape == x_hio.shape == x.shape"),
    ],
}


def _tiny_skip() -> SkipNetwork:
    return SkipNetwork(width=4, depth=2, skip_channels=2, input_channels=2)


@pytest.fixture
def _quick_fits(monkeypatch, tmp_path):
    """Fits cut to ``MAX_STEPS`` steps of tiny networks, in ``tmp_path`` (see above)."""
    fit_model, fit_batch = skdip._engine.fit_model, skdip._engine.fit_batch

    def capped(n):
        return min(int(n), MAX_STEPS)

    def quick_fit_model(*args, max_iter, **kwargs):
        return fit_model(*args, max_iter=capped(max_iter), **kwargs)

    def quick_fit_batch(*args, max_iter, settings=None, **kwargs):
        if settings is not None:
            settings = [
                {**s, "max_iter": capped(s["max_iter"])} if "max_iter" in s else s for s in settings
            ]
        return fit_batch(*args, max_iter=capped(max_iter), settings=settings, **kwargs)

    patched = 0
    for name, module in list(sys.modules.items()):
        if name == "skdip" or name.startswith("skdip."):
            for attr, value in list(vars(module).items()):
                if value is fit_model or value is fit_batch:
                    quick = quick_fit_model if value is fit_model else quick_fit_batch
                    monkeypatch.setattr(module, attr, quick)
                    patched += 1
    assert patched >= 4  # the engine's own two names and the estimators' imports
    for name in ("skip", "skip-small"):
        monkeypatch.setitem(skdip.generators._PRESETS, name, _tiny_skip)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_iter=.* ended the fit before")
        yield


def run_page(blocks, namespace: dict, checks=()) -> list[tuple[str, float]]:
    """Execute the blocks not marked skip-run, in order, in ``namespace``, each followed by
    the ``checks`` ((a line of it, an expression)) of that block; the time of each block.
    A failing block or check raises, naming the page and line of its fence."""
    times, unused = [], list(checks)
    for name, source, skip in blocks:
        if skip is not None:
            continue
        start = time.perf_counter()
        try:
            exec(compile(source, name, "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"the block at {name} failed: {error!r}") from error
        times.append((name, time.perf_counter() - start))
        for check in [c for c in unused if c[0] in source]:
            unused.remove(check)
            assert eval(check[1], {"np": np, **namespace}), f"{name}: not {check[1]}"
    assert not unused, f"checks whose block is gone or skipped: {unused}"
    return times


def _page_params():
    return [
        pytest.param(page, id=page.name)
        for page in PAGES
        if "```python" in page.read_text(encoding="utf-8")
    ]


def _skipped_blocks():
    return [
        pytest.param(name, id=name, marks=pytest.mark.skip(reason=f"skip-run: {skip}"))
        for page in PAGES
        for name, _, skip in _blocks(page.read_text(encoding="utf-8"), page.name)
        if skip is not None
    ]


@pytest.mark.parametrize("page", _page_params())
# model_selection.md's KFold block is warned of, as the guide says right before it.
@pytest.mark.filterwarnings("ignore:DIPInpainter is scored on images it was not fitted on")
def test_the_blocks_of_a_page_run(page, _quick_fits):
    namespace = {"__name__": "docs_page", **SETUP.get(page.name, dict)()}
    blocks = _blocks(page.read_text(encoding="utf-8"), page.name)
    run_page(blocks, namespace, CHECKS.get(page.name, []))


@pytest.mark.parametrize("block", _skipped_blocks())
def test_a_block_marked_skip_run(block):
    """Never runs: lists each block the suite cannot run, with the guide's reason."""


def test_every_skip_run_marker_is_before_a_block():
    # A marker that drifted away from its fence (text put in between) would skip nothing
    # and leave the block to fail for want of a cluster: find markers that skip nothing.
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        marked = sum(skip is not None for _, _, skip in _blocks(text, page.name))
        assert text.count("skip-run:") == marked, page.name


def test_a_failing_block_fails_its_page():
    page = "```python\nx = 1\n```\n\n<!-- skip-run: no cluster -->\n```python\nboom\n```\n"
    page += "```python\ny = x + [1]\n```\n"
    blocks = _blocks(page, "page.md")
    assert [skip for *_, skip in blocks] == [None, "no cluster", None]
    with pytest.raises(AssertionError, match=r"page\.md:9 failed: TypeError"):
        run_page(blocks, {})
    with pytest.raises(AssertionError, match=r"page\.md:1: not x == 2"):
        run_page(blocks, {}, [("x = 1", "x == 2")])
    with pytest.raises(AssertionError, match="block is gone or skipped"):
        run_page(blocks[:1], {}, [("x = 1", "x == 1"), ("boom", "True")])
