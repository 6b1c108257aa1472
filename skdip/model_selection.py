"""Cross-validation splitters for estimators that solve each image on its own.

A Deep Image Prior estimator learns nothing that carries over to other images:
"fitting" an image is solving it. The usual train/test split therefore buys
nothing and costs a second solve (the test images are solved from scratch when
scored). The splitters here score on the images that were fitted, so that,
with the estimators' fitted-data cache, every candidate of a grid search costs
exactly one solve per image:

- :class:`FitImagesCV`: one split, train = test = every image; one setting for
  the whole batch.
- :class:`PerImageCV`: one split per image, train = test = that image; the
  per-split scores choose a setting per image (see
  :func:`best_params_per_image`).

:class:`PreferDefault` is a choice rule for those searches (``refit=``):
keep a default setting unless another one scores clearly better, because a
single fit's score is noisy.

:func:`fit_candidates` fits many settings of one architecture together, in
vectorised runs (for GPUs), and returns one fitted estimator per setting;
:class:`AverageOfBest` fits every setting of a grid and returns, per image, the
mean of the estimates of the best-scored ones (:func:`best_scored` is its choice
of those, for scores computed elsewhere).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import joblib
import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import ParameterGrid
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.validation import check_is_fitted

from ._engine import autograd_on, one_interruption
from ._typing import Float, Int
from ._validation import (
    InvalidParameterError,
    _nested_lists_as_array,
    check_int,
    check_number,
    check_rows_of_one_image,
    metric_array,
    reject_bool_numbers,
)
from ._warnings import held_back, warn
from .estimators._base import (
    ImageOutputMixin,
    _fit_together,
    _image_seeds,
    _solve_key,
    resolved_seed,
)
from .exceptions import FitInterrupted, InterruptionWarning, NothingToAverage
from .generators import get_generator
from .metrics import NoReferenceScorer, get_scorer
from .metrics._scorers import _measures_in_image_space, distances_to, no_reference_scores

__all__ = [
    "AverageOfBest",
    "FitImagesCV",
    "PerImageCV",
    "PreferDefault",
    "best_params_per_image",
    "best_scored",
    "fit_candidates",
]


def _n_samples(X: Any) -> int:
    """What scikit-learn indexes: list items, or the first axis of an array."""
    if X is None:
        raise ValueError("X is required to build the splits")
    if isinstance(X, list | tuple):
        return len(X)
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) == 0:
        raise ValueError("X must be an image or a batch of images, got a scalar")
    return int(shape[0])


def _is_single_image(X: Any) -> bool:
    # A 2-D or 3-D array is one image (H, W) or (H, W, C); its first axis is rows.
    if isinstance(X, list | tuple):
        if not X:
            return False
        # As the estimators read it: rgb.tolist() is one colour image, not a batch of
        # its rows (split, each was fitted as a W x 3 grey image, in silence). Their
        # warnings (grey images as nested lists) are for the fits to give.
        with held_back():
            # Rows of different lengths raise the fit's own words: taken for one image,
            # they failed in np.shape, with NumPy's "inhomogeneous shape".
            read = _nested_lists_as_array(X, "X")
        return isinstance(read, np.ndarray) and read.ndim in (2, 3)
    return np.ndim(X) in (2, 3)


class _ImageSplitter:
    """Splitter protocol of scikit-learn (``split`` and ``get_n_splits``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple]:
        raise NotImplementedError

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        raise NotImplementedError


class FitImagesCV(_ImageSplitter):
    """A single split that fits and scores the same images.

    Pass it as ``cv`` to :class:`~sklearn.model_selection.GridSearchCV` (or
    ``cross_validate``) with a DIP estimator: each candidate solves every image
    once and is scored on those solutions, with a no-reference scorer such as
    ``skdip.metrics.get_scorer("emv")`` or with ``scoring=None`` (the
    estimator's ``score``). The test images are equal in content to the fitted
    ones (scikit-learn copies them), so the estimator's fitted-data cache
    answers the scoring without a second solve.

    Works with a batch ``(N, H, W, C)``, a list of images, or a single image
    (whose rows scikit-learn then indexes as a whole).

    See Also
    --------
    PerImageCV : one split per image, to choose a setting per image.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.model_selection import FitImagesCV
    >>> images = np.zeros((3, 16, 16, 1))
    >>> [(train.tolist(), test.tolist()) for train, test in FitImagesCV().split(images)]
    [([0, 1, 2], [0, 1, 2])]
    """

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple]:
        """Yield the one ``(train, test)`` pair: all indices, twice.

        Parameters
        ----------
        X : array-like or list of images
            The data to be split.
        y, groups : ignored
            Present for API compatibility.

        Yields
        ------
        train, test : ndarray of int
            Both ``arange(n)``, with ``n`` the number of indexable items of
            ``X`` (images of a batch, or rows of a single image).
        """
        n = _n_samples(X)
        if n < 1:
            raise ValueError("X holds no image")
        indices = np.arange(n)
        yield indices, indices.copy()

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of splits: always 1.

        Parameters
        ----------
        X, y, groups : ignored
            Present for API compatibility.

        Returns
        -------
        n_splits : int
        """
        return 1


class PerImageCV(_ImageSplitter):
    """One split per image; each split fits and scores that image alone.

    With a grid search, the per-split test scores
    (``cv_results_["split{i}_test_score"]``) rank the settings for image ``i``
    on its own; :func:`best_params_per_image` reads the best setting of every
    image. Each candidate solves each image exactly once (the score reuses the
    fit). ``best_params_`` is the setting with the best mean score over images.

    ``X`` must be a batch: an ``(N, H, W, C)`` array or a list of images.

    See Also
    --------
    FitImagesCV : one split over all images (one setting for the batch).
    best_params_per_image : the per-image choice from a fitted search.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip.model_selection import PerImageCV
    >>> images = [np.zeros((16, 16)), np.ones((20, 20))]
    >>> [(train.tolist(), test.tolist()) for train, test in PerImageCV().split(images)]
    [([0], [0]), ([1], [1])]
    """

    def _count(self, X: Any) -> int:
        if _is_single_image(X):
            raise ValueError(
                "PerImageCV needs a batch of images (an (N, H, W, C) array or a list of "
                f"images); got a single image of shape {np.shape(X)}. A 3-D array is one "
                "(H, W, C) image: a batch of grey images is X[..., None] (N, H, W, 1) or a "
                "list; for one image use FitImagesCV"
            )
        n = _n_samples(X)
        if n < 1:
            raise ValueError("X holds no image")
        if isinstance(X, list | tuple):
            # Each split fits one item alone, where list(rgb)'s rows are not refused.
            check_rows_of_one_image([tuple(np.shape(item)) for item in X], "X")
        return n

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple]:
        """Yield ``([i], [i])`` for every image ``i``.

        Parameters
        ----------
        X : array of shape (N, H, W, C) or list of images
            The batch to be split.
        y, groups : ignored
            Present for API compatibility.

        Yields
        ------
        train, test : ndarray of int
            Both ``[i]``.
        """
        for i in range(self._count(X)):
            yield np.array([i]), np.array([i])

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of splits: the number of images in ``X``.

        Parameters
        ----------
        X : array of shape (N, H, W, C) or list of images
            Required: the number of splits is the number of images.
        y, groups : ignored
            Present for API compatibility.

        Returns
        -------
        n_splits : int
        """
        if X is None:
            raise ValueError("PerImageCV.get_n_splits needs X: it makes one split per image")
        return self._count(X)


def _same_value(a: Any, b: Any) -> bool:
    """Whether two parameter values are the same setting."""
    if a is b:
        return True
    if isinstance(a, Integral) and isinstance(b, Integral):
        return bool(a == b)  # seeds, max_iter: exact, however large
    if isinstance(a, Real) and isinstance(b, Real) and not isinstance(a, bool | np.bool_):
        # float32 grids (np.float32(0.01) is 0.01 to 2e-8) must match their float64 values.
        return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=0.0, equal_nan=True))
    if hasattr(a, "get_params") and hasattr(b, "get_params"):
        # Generator objects: clones of one configuration are equal settings (by
        # content: a repr shortens the arrays it prints).
        return type(a) is type(b) and _same_content(a, b)
    if isinstance(a, np.ndarray | torch.Tensor) or isinstance(b, np.ndarray | torch.Tensor):
        # Kernels, masks: by content (clone copies a grid and its default apart).
        try:
            a, b = (np.asarray(v.detach().cpu() if torch.is_tensor(v) else v) for v in (a, b))
            if a.size == 1 and b.size == 1 and min(a.ndim, b.ndim) == 0:
                return _same_value(a.item(), b.item())  # np.float32(0.01) against 0.01
            if a.shape != b.shape:
                return False
            if a.dtype.kind in "fc" and b.dtype.kind in "fc":  # float32 against float64
                return bool(np.allclose(a, b, rtol=1e-6, atol=0.0, equal_nan=True))
            return bool(np.array_equal(a, b))
        except (TypeError, ValueError, RuntimeError):
            return False
    try:
        if bool(a == b):
            return True
    except (TypeError, ValueError, RuntimeError):  # other ambiguous comparisons
        pass
    # Objects compared by identity (forward operators, functions with bound values):
    # clone copies a grid and its default apart, so their copies are compared by content.
    return type(a) is type(b) and _same_content(a, b)


def _same_content(a: Any, b: Any) -> bool:
    """Whether two objects pickle alike (joblib's content hash)."""
    try:
        return joblib.hash(a) == joblib.hash(b)
    except Exception:  # an object that cannot be pickled: only itself is the same
        return False


class PreferDefault:
    """Choose a default setting unless another one scores clearly better.

    A single DIP fit is noisy: two seeds of the same setting give no-reference
    scores about 0.4 dB apart at the median and about 1 dB or more apart in a
    quarter of the cases (``benchmarks/results/selection_*.md``). Taking the
    arg-max of such scores sometimes trades a sound default for a setting that
    only scored better by chance. This rule keeps ``default`` unless the best
    candidate beats its score by more than ``margin``.

    Use it as the ``refit`` of a ``GridSearchCV`` (scikit-learn calls it with
    ``cv_results_`` and refits the candidate it returns; the halving searches
    never call a callable ``refit``, and refuse this one), with
    :func:`best_params_per_image` for one choice per image, or on scores you
    computed yourself with :meth:`select`.

    Parameters
    ----------
    default : dict or int
        The default setting: a dict of parameter values that exactly one
        candidate matches (keys it does not name are free), or the index of
        the candidate in the search's ``params``.
    margin : float, default=1.0
        How much better, in the units of the score, another candidate must
        score to replace the default. skdip's no-reference scores are in dB;
        1 dB is about the 75th percentile of the score's spread between two
        seeds of one setting. 0 chooses the best score, ties going to the
        default.
    metric : str, optional
        Name of the score in a multi-metric search (the key of ``scoring``);
        default: the single score of the search.

    See Also
    --------
    best_params_per_image : One choice per image from a :class:`PerImageCV` search.

    Notes
    -----
    A NaN or infinite score marks a failed fit (a no-reference score is
    infinite only for a degenerate fit, such as a residual of exactly 0; a
    PSNR of +inf is left out too). A failed default is replaced by the best
    candidate that did not fail; when every candidate failed, a ValueError
    says so. With
    ``refit`` a callable, scikit-learn sets ``best_index_`` and
    ``best_params_`` from this rule and leaves ``best_score_`` unset; in a
    multi-metric search its ``search.score(X)`` fails with a ``KeyError``
    (it looks the rule up among the scorers), so score with
    ``search.scorer_[rule.metric](search.best_estimator_, X)``.

    Examples
    --------
    >>> from skdip.model_selection import PreferDefault
    >>> rule = PreferDefault(default={"lr": 0.01}, margin=1.0)
    >>> params = [{"lr": 0.01}, {"lr": 0.03}, {"lr": 0.1}]
    >>> rule.select(params, [-2.0, -1.5, -3.0])  # 0.5 dB better: keep the default
    0
    >>> rule.select(params, [-2.0, -0.5, -3.0])  # 1.5 dB better: switch
    1
    >>> rule({"params": params, "mean_test_score": [-2.0, -0.5, -3.0]})  # as refit=
    1
    """

    def __init__(
        self, default: Mapping | Int, margin: Float = 1.0, metric: str | None = None
    ) -> None:
        self.default = default
        self.margin = margin
        self.metric = metric

    def __repr__(self) -> str:
        return (
            f"PreferDefault(default={self.default!r}, margin={self.margin!r}, "
            f"metric={self.metric!r})"
        )

    def _check(self) -> None:
        # InvalidParameterError (a ValueError and a TypeError), as an estimator's bad
        # parameters are refused.
        if isinstance(self.default, bool) or not isinstance(self.default, Integral | Mapping):
            raise InvalidParameterError(
                f"PreferDefault.default must be a dict of parameter values or a candidate "
                f"index, got {type(self.default).__name__}"
            )
        if isinstance(self.default, Mapping) and not self.default:
            raise InvalidParameterError("PreferDefault.default must name at least one parameter")
        if isinstance(self.default, Integral) and self.default < 0:
            # Invalid for any grid (no counting from the end): only an index past the
            # candidates depends on them, and stays a ValueError.
            raise InvalidParameterError(
                f"PreferDefault.default must be a candidate index >= 0, got {self.default}"
            )
        check_number(self.margin, "PreferDefault.margin", 0, error=InvalidParameterError)
        if self.metric is not None and not isinstance(self.metric, str):
            raise InvalidParameterError(
                f"PreferDefault.metric must be a str or None, got {type(self.metric).__name__}"
            )

    def default_index(self, params: Sequence[Mapping]) -> int:
        """The index of the default setting among ``params``.

        Parameters
        ----------
        params : sequence of dict
            The candidates, e.g. ``search.cv_results_["params"]``.

        Returns
        -------
        index : int
        """
        self._check()
        n = len(params)
        if isinstance(self.default, Integral):
            index = int(self.default)
            if not 0 <= index < n:
                raise ValueError(f"default index {index} is out of range for {n} candidates")
            return index
        matches = self._matches(params)
        if len(matches) != 1:
            shown = ", ".join(repr(dict(c)) for c in list(params)[:6])
            more = f" (and {n - 6} more)" if n > 6 else ""
            what = "no candidate matches" if not matches else f"{len(matches)} candidates match"
            raise ValueError(
                f"{what} the default {dict(self.default)!r}; it must match exactly "
                f"one of: {shown}{more}"
            )
        return matches[0]

    def _matches(self, params: Sequence[Mapping]) -> list[int]:
        """The indices of the candidates a dict ``default`` names (each of its values)."""
        return [
            i
            for i, candidate in enumerate(params)
            if all(k in candidate and _same_value(candidate[k], v) for k, v in self.default.items())
        ]

    def select(self, params: Sequence[Mapping], scores: ArrayLike) -> int:
        """The chosen candidate for one set of scores.

        Parameters
        ----------
        params : sequence of dict
            The candidates.
        scores : array-like of float
            One score per candidate (a list, or a NumPy array such as a
            column of ``cv_results_``), higher is better; NaN or infinite
            marks a failed fit.

        Returns
        -------
        index : int
        """
        scores = np.asarray(scores, dtype=float)
        if scores.ndim != 1 or len(scores) != len(params):
            raise ValueError(
                f"need one score per candidate: {len(params)} candidates, scores of shape "
                f"{scores.shape}"
            )
        index = self.default_index(params)
        finite = np.isfinite(scores)
        if not finite.any():
            raise ValueError("every candidate failed (all scores are NaN or infinite)")
        best = int(np.nanargmax(np.where(finite, scores, np.nan)))
        if not finite[index]:
            return best
        return best if scores[best] - scores[index] > self.margin else index

    def __call__(self, cv_results: Mapping) -> int:
        """The candidate a search refits: its mean test score against the default.

        Parameters
        ----------
        cv_results : dict
            A search's ``cv_results_`` (``params`` and ``mean_test_<metric>``).

        Returns
        -------
        index : int

        Raises
        ------
        InvalidParameterError
            For a setting of the rule that no search could use (``margin=-1``,
            ``default={}``), as an estimator's ``fit`` refuses a bad parameter (a
            ValueError and a TypeError).
        ValueError or TypeError
            When the default or the metric does not fit the search, or every
            fit failed. scikit-learn calls the rule after all fits and drops
            its results when it raises, so the error carries them: its
            ``cv_results`` attribute is the search's ``cv_results_``.
        """
        try:
            scores = cv_results[_score_key(cv_results, self.metric)]
            return self.select(cv_results["params"], scores)
        except (TypeError, ValueError) as exc:
            error = type(exc)(
                f"{exc} (the search's fits are not lost: this error's cv_results attribute "
                "holds its cv_results_)"
            )
            error.cv_results = cv_results
            raise error from exc


def _score_key(results: Mapping, metric: str | None, kind: str = "mean") -> str:
    """The ``cv_results_`` key of a metric's scores (``mean_test_score`` if unnamed)."""
    name = "score" if metric is None else metric
    key = f"{kind}_test_{name}"
    if key in results:
        return key
    names = sorted(k[len("mean_test_") :] for k in results if k.startswith("mean_test_"))
    hint = "; name one with metric=" if metric is None else ""
    raise ValueError(f"no test scores named {name!r} in the search{hint}; known: {names}")


def best_params_per_image(
    search: Any, metric: str | None = None, *, prefer: PreferDefault | None = None
) -> list[dict]:
    """The best setting of each image from a search run with :class:`PerImageCV`.

    Parameters
    ----------
    search : GridSearchCV or RandomizedSearchCV
        A fitted search whose splits are one image each (``cv=PerImageCV()``).
    metric : str, optional
        Name of the metric in a multi-metric search; default: the metric of
        ``prefer``, else the ``refit`` name when it is a string, else the
        single score.
    prefer : PreferDefault, optional
        Choice rule applied to each image's scores; default: the search's
        ``refit`` when that is a :class:`PreferDefault` of the same metric
        (or ``metric`` is not given), else the highest score. One naming
        another metric than ``metric`` is refused.

    Returns
    -------
    params : list of dict
        ``params[i]`` is the candidate chosen for image ``i``: the highest
        test score on that image, or ``prefer``'s choice (NaN or infinite
        scores, from failed fits, are never chosen).

    Raises
    ------
    ValueError
        When every candidate failed on some image; the error's ``params``
        attribute holds the other images' choices (None for the failed ones).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.base import BaseEstimator
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skdip.model_selection import PerImageCV, PreferDefault, best_params_per_image
    >>> class Toy(BaseEstimator):
    ...     def __init__(self, a=0.0):
    ...         self.a = a
    ...     def fit(self, X, y=None):
    ...         return self
    ...     def score(self, X, y=None):
    ...         return -abs(float(X[0].mean()) - self.a)
    >>> images = [np.zeros((4, 4)), np.ones((4, 4))]
    >>> search = GridSearchCV(Toy(), {"a": [0.0, 1.0]}, cv=PerImageCV(), refit=False)
    >>> best_params_per_image(search.fit(images))
    [{'a': 0.0}, {'a': 1.0}]
    >>> best_params_per_image(search, prefer=PreferDefault({"a": 0.0}, margin=2.0))
    [{'a': 0.0}, {'a': 0.0}]
    """
    if isinstance(search, dict):
        raise TypeError(
            "best_params_per_image takes the fitted search itself, not its cv_results_ "
            "dict: it also reads the search's cv and refit"
        )
    results = getattr(search, "cv_results_", None)
    if results is None:
        # NotFittedError is a ValueError: handlers of the earlier error still catch it.
        raise NotFittedError(
            f"this {type(search).__name__} is not fitted yet: call its fit first "
            "(best_params_per_image reads its cv_results_)"
        )
    if not isinstance(getattr(search, "cv", None), PerImageCV):
        # Any other splitter's splits are not images: one "per image" entry per split
        # would be silently wrong.
        raise ValueError(
            "best_params_per_image needs a search run with cv=PerImageCV() (one split per "
            f"image), got cv={getattr(search, 'cv', None)!r}; for one setting for all "
            "images, read search.best_params_"
        )
    refit = getattr(search, "refit", None)
    if (
        prefer is None
        and isinstance(refit, PreferDefault)
        # The search's rule weighs its own metric's scores (its margin is in their
        # units): another metric asked for by name gets the plain arg-max.
        and (metric is None or refit.metric is None or metric == refit.metric)
    ):
        prefer = refit
    if prefer is not None and not isinstance(prefer, PreferDefault):
        raise TypeError(f"prefer must be a PreferDefault, got {type(prefer).__name__}")
    if prefer is not None and None not in (metric, prefer.metric) and metric != prefer.metric:
        raise ValueError(
            f"prefer weighs the {prefer.metric!r} scores (its margin is in their units), "
            f"but metric={metric!r} was asked for: give a PreferDefault with "
            f"metric={metric!r}, or leave one of them out"
        )
    if metric is None:
        if prefer is not None and prefer.metric is not None:
            metric = prefer.metric
        elif isinstance(refit, str):
            metric = refit
    _score_key(results, metric)  # a clear error for an unknown metric
    # Whole keys only: metric "psnr" must not take "split0_test_val_test_psnr".
    pattern = re.compile(rf"split(\d+)_test_{re.escape('score' if metric is None else metric)}")
    splits = sorted(
        (int(found.group(1)), key) for key in results if (found := pattern.fullmatch(key))
    )
    rows = np.arange(len(results["params"]))
    if "iter" in results:
        # Successive halving: every round lists its candidates again, on other
        # resources; the last round's, on the most, decide (as the search's own best).
        rounds = np.asarray(results["iter"])
        rows = np.flatnonzero(rounds == rounds.max())
        if prefer is not None:
            _check_default_in_last_round(prefer, results["params"], rows)
    params = [results["params"][i] for i in rows]
    chosen: list[dict | None] = []
    failed = []
    for split, key in splits:
        scores = np.asarray(results[key], dtype=float)[rows]
        if not np.isfinite(scores).any():
            failed.append(split)
            chosen.append(None)
            continue
        if prefer is not None:
            best = prefer.select(params, scores)
        else:
            best = int(np.nanargmax(np.where(np.isfinite(scores), scores, np.nan)))
        chosen.append(dict(params[best]))
    if failed:
        # The other images' choices are not lost with the error (the search's fits are).
        error = ValueError(
            f"every candidate failed on image(s) {failed} (their splits of PerImageCV): "
            "no setting can be chosen for them. The choices of the other images are in "
            "this error's params attribute (None for the failed ones)."
        )
        error.params = chosen
        raise error
    return chosen


def _check_default_in_last_round(prefer: PreferDefault, params: list, rows: np.ndarray) -> None:
    """Refuse a default that a halving search's last round cannot name: an index (it
    counts every round's rows) or a setting eliminated before that round."""
    if isinstance(prefer.default, Integral):
        raise ValueError(
            "with a successive-halving search, give PreferDefault's default as a dict of "
            "parameters: an index counts the candidates of every round"
        )
    last = [params[i] for i in rows]
    if not prefer._matches(last):
        raise ValueError(
            f"the default {dict(prefer.default)!r} was eliminated before the last round of "
            f"the halving search, whose candidates ({', '.join(repr(dict(c)) for c in last)}) "
            "alone were scored on the most resources: there is no default to prefer"
        )


def fit_candidates(
    estimator: Any,
    X: Any,
    candidates: Iterable[dict],
    y: Any = None,
    *,
    batch_size: Int | None = None,
    **fit_params: Any,
) -> list:
    """Fit one copy of ``estimator`` per candidate setting, many per vectorised run.

    Settings that keep the network's architecture (learning rate, input
    noise, stopping rule, loss, regularizer, output averaging, ``max_iter``,
    ``random_state``) are fitted together: the networks of every (setting,
    image) pair with the same generator and image shape are stacked and
    trained as one batch (see ``batch_size`` of :class:`skdip.DIPDenoiser`),
    which pays on a GPU. Each returned estimator is fitted as
    ``clone(estimator).set_params(**candidate).fit(X, y)`` would be, with
    its cache in place: scoring it on ``X`` solves nothing again. Batched
    fits differ from those by float32 rounding, which can move an
    early-stopping point and so change single fits; ``batch_size=1`` gives
    exactly those fits. All fits run in this process, on the estimator's
    device (its ``n_jobs`` is not used). No fit is kept to go on with, so
    ``warm_start=True`` is refused. The estimator's own ``batch_size`` is not
    used either (``batch_size=`` below decides): a setting that cannot fit
    images in batches (a ``noise_model``) is fitted alone, and its returned
    copy gets ``batch_size=1`` when the estimator's is larger and the setting
    names none (with a larger one it could not fit other images).
    ``random_state=None`` draws one seed for the call, from NumPy's global
    generator: every setting left at None runs from it, as from an int (the
    fits differ by their settings alone), and records it in
    ``random_state_``, which, set as ``random_state``, repeats them.

    Parameters
    ----------
    estimator : DIPDenoiser
        An unfitted estimator with batched fitting (a ``batch_size``
        parameter, whose value is not used here).
    X : array-like
        The image(s) to fit, as for ``estimator.fit``.
    candidates : iterable of dict
        Parameter settings, e.g. ``sklearn.model_selection.ParameterGrid``.
    y : array-like, optional
        Clean references, only recorded (as in ``fit``).
    batch_size : int, optional
        Largest number of fits per batched run; None puts every compatible
        fit in one run, holding all their networks and activations at once.
        1 fits one after another.
    **fit_params
        Per-image fit parameters, as for ``estimator.fit``.

    Returns
    -------
    fitted : list of estimators
        One per candidate, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import ParameterGrid
    >>> from skdip import DIPDenoiser
    >>> from skdip.metrics import get_scorer
    >>> from skdip.model_selection import fit_candidates
    >>> noisy = np.random.default_rng(0).random((16, 16))
    >>> grid = ParameterGrid({"lr": [0.01, 0.02], "reg_noise_std": [0.0, 0.05]})
    >>> den = DIPDenoiser(generator="skip-small", max_iter=10, early_stopping=None,
    ...                   random_state=0)
    >>> fitted = fit_candidates(den, noisy, grid)
    >>> scores = [get_scorer("emv")(est, noisy) for est in fitted]
    >>> best = fitted[int(np.argmax(scores))]
    >>> best.reconstruction_.shape
    (16, 16)
    """
    if isinstance(candidates, dict):
        raise TypeError(
            "candidates must be a sequence of settings (dicts); for a grid of values such as "
            "{'lr': [0.01, 0.03]}, pass sklearn.model_selection.ParameterGrid(grid)"
        )
    if isinstance(X, list | tuple) and X and all(isinstance(c, dict) for c in X):
        # GridSearchCV's order (estimator, grid, X) put the images where the settings go:
        # "dictionary update sequence element #0 has length ..." said nothing of it.
        raise TypeError(
            "X is a list of settings (dicts): fit_candidates takes (estimator, X, "
            "candidates), the images before the settings"
        )
    try:
        candidates = [dict(c) for c in candidates]
    except (TypeError, ValueError) as error:
        raise TypeError(
            "candidates must be a sequence of settings (dicts of parameter values); got "
            f"{type(candidates).__name__} ({error})"
        ) from error
    if not candidates:
        raise ValueError("fit_candidates needs at least one candidate setting")
    if not hasattr(estimator, "get_params") or "batch_size" not in estimator.get_params():
        raise TypeError(
            f"fit_candidates needs an estimator with batched fitting (a batch_size "
            f"parameter, e.g. DIPDenoiser), got {type(estimator).__name__}"
        )
    batch_size = check_int(batch_size, "batch_size", 1, allow_none=True)
    fitted = [_configured(estimator, c) for c in candidates]
    for est in fitted:
        est._check_params()
        if getattr(est, "warm_start", False):
            # Its next fit would silently start afresh: no state is kept here.
            raise ValueError(
                "fit_candidates keeps no fit to go on with, so warm_start=True would be "
                "ignored; fit such a setting with clone(estimator).set_params(**setting)"
                ".fit(X), or set warm_start=False"
            )
    images, layout, references = fitted[0]._check_inputs(X, y, fit_params)
    if references is not None:
        for est in fitted[1:]:  # a candidate's own forward model judges y's scale
            est._check_inputs(X, y, fit_params)
    n = len(images)
    refs = references if references is not None else [None] * n

    # random_state=None is drawn once for the call: the settings left at it run from one
    # seed, as from an int, so that one value repeats them all. A RandomState instance
    # is drawn from in each setting's copy (clone's), all alike, the caller's untouched.
    drawn: dict[None, int] = {}

    def seed_of(random_state: Any) -> int:
        if random_state is None:
            return drawn.setdefault(None, resolved_seed(None))
        return resolved_seed(random_state)

    seeds_of = [seed_of(est.random_state) for est in fitted]
    # Every (candidate, image) fit, grouped by what decides the stacked shapes.
    groups: dict[tuple, list[tuple]] = {}
    for k, est in enumerate(fitted):
        extras = est._per_image_inputs(images, references, fit_params)
        seeds = _image_seeds(np.random.RandomState(seeds_of[k]), n)
        for i in range(n):
            key = (
                repr(get_generator(est.generator)),
                est._batch_key(images[i], extras[i]),
                str(est._device),
            )
            groups.setdefault(key, []).append(
                (k, (est, i, images[i], refs[i], extras[i], seeds[i]))
            )
    results: dict[tuple[int, int], dict] = {}
    # One Ctrl-C ends every fit of the call, not only the one it cuts.
    with one_interruption() as interrupted, autograd_on():
        for members in groups.values():
            size = len(members) if batch_size is None else batch_size
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                entries = [entry for _, entry in chunk]
                out = _fit_together(entries, n, entries[0][0]._device, strict=False)
                for (k, entry), result in zip(chunk, out, strict=True):
                    results[(k, entry[1])] = result
    skipped = []
    if interrupted[0]:
        skipped = sorted(
            key
            for key, r in results.items()
            if r["stopped_by"] == "interrupted" and not r["n_iter"]
        )
    if skipped:
        warn(
            f"fit_candidates: Ctrl-C ended the fits; {len(skipped)} of {len(results)} (setting, "
            f"image) fits were not fitted, e.g. {skipped[:3]} (no step: the untrained "
            "network's output, stopped_by_ 'interrupted').",
            InterruptionWarning,
        )
    for k, est in enumerate(fitted):
        est._set_fitted(
            images, layout, [results[(k, i)] for i in range(n)], fit_params, seeds_of[k]
        )
    return fitted


def _configured(estimator: Any, candidate: dict) -> Any:
    """``clone(estimator).set_params(**candidate)``, as :func:`fit_candidates` fits it.

    fit_candidates batches by its own ``batch_size``, never by the estimator's. A
    setting that the estimator's ``batch_size`` > 1 refuses (a ``noise_model``
    cannot fit images in batches) gets ``batch_size=1``, unless it names a
    ``batch_size`` itself: it is fitted alone in any case, and its copy can then
    fit other images too (``transform`` of new images).
    """
    # The settings are copied too, as GridSearchCV does: a generator object shared
    # by two candidates was one object, so tuning one fitted candidate changed the other.
    est = clone(estimator).set_params(**clone(candidate, safe=False))
    size = est.get_params().get("batch_size", 1) if hasattr(est, "get_params") else 1
    if (
        "batch_size" in candidate
        or not isinstance(size, Integral)
        or isinstance(size, bool)
        or size <= 1  # an invalid one is refused by the caller's check
        or not hasattr(est, "_check_params")
    ):
        return est
    with held_back():  # the caller's own check gives its warnings, once
        try:
            est._check_params()
        except ValueError:
            # Where something else refused it, the caller's check says what.
            est.set_params(batch_size=1)
    return est


def _check_best_scored(n_best: Any, margin: Any, max_distance: Any = None) -> None:
    check_int(n_best, "n_best", 1, allow_none=True)
    check_number(margin, "margin", 0, allow_none=True)
    check_number(max_distance, "max_distance", finite=False, allow_none=True)


def _per_candidate(values: Any, name: str) -> np.ndarray:
    """``values`` (one per candidate) as a float64 array; a masked entry, a value
    not recorded, is NaN (np.asarray read the value under the mask: a masked score was
    chosen first). Tensors are read detached, as the metrics read them."""
    try:
        if np.ma.isMaskedArray(values):
            return np.ma.masked_array(values, dtype=np.float64).filled(np.nan)
        if isinstance(values, torch.Tensor):
            values = metric_array(values, name)
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numbers, one per candidate: {exc}") from None


def best_scored(
    scores: Any,
    *,
    n_best: Int | None = None,
    margin: Float | None = None,
    default: Int | None = None,
    distances: Any = None,
    max_distance: Float | None = None,
) -> np.ndarray:
    """Indices of the best-scored candidates, best first: the ones AverageOfBest averages.

    Parameters
    ----------
    scores : array-like of shape (n_candidates,)
        One score per candidate, higher is better; NaN or infinite (or a
        masked entry of a masked array) marks a candidate that could not be
        scored, which is never chosen.
    n_best : int or None, default=None
        Keep at most this many; None: no limit.
    margin : float or None, default=None
        Keep only the candidates that score within ``margin`` of the best
        score; None: no such limit. With ``default``, measured from the
        default's score instead, and None means 0.
    default : int or None, default=None
        Index of a trusted default candidate. It is always kept, first, and
        another candidate only when it scores at least the default's score
        minus ``margin`` (0 when None); ``n_best`` counts the default. A
        default that could not be scored (NaN or infinite) is not kept, and
        the others are chosen as without ``default``.
    distances : array-like of shape (n_candidates,), optional
        With ``max_distance``: how far each candidate's estimate lies from the
        default's (for :class:`AverageOfBest`, the mean squared difference in
        dB relative to the noise variance). NaN (or a masked entry) never joins.
    max_distance : float or None, default=None
        With ``default``: another candidate joins the default only if its
        distance is at most this (applied before ``n_best``). None: no
        such limit. Without a scorable default it is not used.

    Returns
    -------
    indices : ndarray of int
        Empty when no score is finite. Ties keep the candidates' order.

    Examples
    --------
    >>> from skdip.model_selection import best_scored
    >>> best_scored([-3.0, -1.0, -1.5, float("nan")], n_best=2)
    array([1, 2])
    >>> best_scored([-3.0, -1.0, -1.5, -2.2], margin=1.0)
    array([1, 2])
    >>> best_scored([-3.0, -1.0, -1.5, -2.2], margin=0.5, default=3)  # -2.2 - 0.5 and up
    array([3, 1, 2])
    >>> best_scored([-3.0, -1.0, -1.5, -2.2], margin=0.5, default=3,
    ...             distances=[-9.0, -10.0, -14.0, float("nan")], max_distance=-12.0)
    array([3, 2])
    """
    scores = _per_candidate(scores, "scores")
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (one per candidate), got shape {scores.shape}")
    _check_best_scored(n_best, margin, max_distance)
    default = check_int(
        default, "default", 0, scores.size - 1, allow_none=True, hint="the index of a candidate"
    )
    if max_distance is not None:
        if default is None:
            raise ValueError("max_distance limits what joins a default: pass default too")
        if distances is None:
            raise ValueError("max_distance needs distances, one per candidate")
        distances = _per_candidate(distances, "distances")
        if distances.shape != scores.shape:
            raise ValueError(
                f"distances must have one value per candidate ({scores.size}), "
                f"got shape {distances.shape}"
            )
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(-scores[finite], kind="stable")]
    if default is not None and np.isfinite(scores[default]):
        # Anchored on the default: the others join it only if they score about as
        # well, so the average leans on it where the score cannot tell them apart.
        floor = scores[default] - (0.0 if margin is None else margin)
        others = order[(order != default) & (scores[order] >= floor)]
        if max_distance is not None:
            # An estimate far from the default's is a different solution: one of the
            # two is far from the truth, and averaging a far worse one costs more than
            # the independent errors save (NaN compares False: never joins).
            others = others[distances[others] <= max_distance]
        chosen = np.concatenate([[int(default)], others]).astype(order.dtype)
        return chosen if n_best is None else chosen[:n_best]
    if margin is not None and order.size:
        order = order[scores[order] >= scores[order[0]] - margin]
    return order if n_best is None else order[:n_best]


class AverageOfBest(ImageOutputMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Fit every candidate setting, return the mean of the best-scored estimates.

    A no-reference score picks good settings, but a single fit's score is
    noisy, so the single best-scored setting is sometimes worse than the
    default. Averaging the estimates of the ``n_best`` best-scored settings
    of each image cancels part of their independent errors: over the 162
    cases of the selection benchmark its median gap to the best single
    setting was 0.01 dB, against 0.21 dB for the single best-scored one, but
    it fell below the default setting in 22 of them (3 by more than 0.5 dB;
    ``doc/model_selection.md``).
    The candidates are fitted by :func:`fit_candidates` (batched where the
    architecture allows, which pays on a GPU) and scored per image on the
    images they fitted, with no second solve.

    Its own :meth:`score` needs clean images: **a search over its parameters
    (``n_best``, ``margin``, ...) must be given them**, ``search.fit(X, y)``
    (see Notes).

    Parameters
    ----------
    estimator : estimator with a ``batch_size`` parameter
        An unfitted skdip estimator (e.g. :class:`~skdip.DIPDenoiser`); every
        setting of ``param_grid`` is applied to a clone of it. Its own
        ``batch_size`` and ``n_jobs`` are not used: the fits run in the
        calling thread, batched by ``batch_size`` below (see
        :func:`fit_candidates`).
    param_grid : dict or list of dicts
        Settings to fit, as for ``GridSearchCV``: a dict of parameter names to
        lists of values, or a list of such dicts. They must not change the
        output's shape (checked before any fit).
    n_best : int or None, default=3
        Largest number of best-scored settings averaged per image (all of
        them when the grid, or the set of fits with a finite score, is
        smaller). 1 returns the best-scored estimate (the default's, with
        ``default``); None sets no limit.
    margin : float or None, default=None
        If set, only the settings that score within ``margin`` of the
        image's best score are averaged (at most ``n_best`` of them): those
        that the score cannot tell apart from the best, while settings that
        score clearly worse are left out. In the units of the score (dB for
        skdip's no-reference scores; 1 dB is about the 75th percentile of
        the score's spread between two seeds of one setting). None averages
        the ``n_best`` best-scored, however far apart their scores are.
        With ``default``, measured from the default's score instead, and
        None means 0: only settings scoring at least as well as the default
        join it.
    default : dict, int or None, default=None
        A trusted default setting (a dict of parameter values that exactly one
        setting matches, or the index of a setting in ``candidates_``). When
        given, its estimate is always in the average, and another setting
        joins it only when it scores at least the default's score minus
        ``margin`` (0 when None), best-scored first; ``n_best`` counts the
        default. A default that could not be scored on an image is left out
        there. With ``n_best=4, margin=0.5`` and the library's default
        setting, on 46 cases never used to design it, the average fell below
        the default once (by 0.40 dB) at a median gap of 0.19 dB to the best
        single setting; on 46 more (noise 10/255 and 45/255), 3 times (by up
        to 1.94 dB) at 0.36 dB (``doc/model_selection.md``).
    max_distance : float or None, default=None
        With ``default``: another setting joins the default's estimate only if
        the mean squared difference between the two estimates is at most
        ``10**(max_distance / 10)`` times the noise variance (the scorer's
        ``sigma``, or its estimate from the image), i.e. ``max_distance`` dB
        relative to the noise. Two estimates that far apart are different
        solutions, one of them poor, and averaging in the poorer one costs
        more than the independent errors save. Only for estimators that
        observe the image itself (:class:`~skdip.DIPDenoiser` without
        ``noise_model``). None: no such limit. With ``n_best=4, margin=0.5,
        max_distance=-12``, on 46 cases never used to design it, the average
        fell below the default twice (by at most 0.14 dB) at a median gap of
        0.66 dB to the best single setting: at low noise the limit kept out
        nearly every other setting. With ``n_best=4, margin=0.25,
        max_distance=-10.5``, on 46 more, once (by 0.07 dB) at 0.12 dB; those
        were scored with the earlier wavelet noise level. With the current one,
        on 46 further cases, once (by 0.02 dB) at 0.09 dB
        (``doc/model_selection.md``).
    scoring : str or NoReferenceScorer, default="no_reference"
        A no-reference scorer name of :func:`skdip.metrics.get_scorer`
        (``"no_reference"``, ``"emv"``, ``"wmv"``, ``"discrepancy"``) or a
        :class:`~skdip.metrics.NoReferenceScorer`.
    batch_size : int or None, default=None
        Largest number of fits per vectorised run (see :func:`fit_candidates`).
        None puts every compatible setting in one run, whose memory grows
        with the number of settings (on the CPU too): set it to cap that.

    Attributes
    ----------
    candidates_ : list of dict
        The settings, in the order of ``scores_``.
    scores_ : ndarray of shape (n_candidates, n_images)
        Each setting's score on each image (NaN where it could not be scored).
    selected_ : ndarray of bool, shape (n_candidates, n_images)
        The settings averaged for each image.
    default_index_ : int or None
        The index of ``default`` in ``candidates_`` (None without one).
    distances_ : ndarray of shape (n_candidates, n_images) or None
        With ``max_distance``: each setting's distance to the default's
        estimate, in dB relative to the noise variance (None otherwise); the
        default's own row is ``-inf`` (no difference).
    estimators_ : list of estimators
        The fitted estimator of each setting.
    reconstruction_ : ndarray or list of ndarray
        The averaged estimate(s), in the input's layout.
    n_images_ : int
        Number of images fitted.
    n_features_in_ : int
        Width of the image, set when ``X`` is a single 2-D array.
    random_state_ : int
        The seed the estimator's ``random_state`` gave the settings (those of
        ``param_grid`` that set no ``random_state`` of their own): itself
        when it is an int, else one drawn from it (None: from NumPy's global
        generator, once for every setting; a ``RandomState`` instance is
        drawn from in each setting's copy, as ``clone`` makes it, and is left
        as it was). Set as ``estimator__random_state``, it repeats the fit
        exactly (on the CPU): ``clone(avg).set_params(
        estimator__random_state=avg.random_state_).fit(X)``. New images
        that ``transform`` or ``score`` solve draw their own, not recorded.

    See Also
    --------
    fit_candidates : the fits, without the choice.
    PreferDefault : choose one setting, keeping a default unless another
        scores clearly better.

    Notes
    -----
    **Searches need clean references.** An average of several fits has no
    running variance or picked iterate of its own, so there is no
    no-reference score: :meth:`score` and the reference scorers
    (``get_scorer("psnr")``, ``"ssim"``) need the clean images ``y``, and
    the no-reference scorers refuse it. ``GridSearchCV(AverageOfBest(...),
    {"n_best": [1, 3]}).fit(X)`` without ``y`` does not raise: scikit-learn
    records each failed score as NaN (``error_score=np.nan``) with a
    warning, and still sets ``best_params_`` from those NaN scores. Pass
    ``y`` (``search.fit(X, y)``), or ``error_score="raise"`` to make the
    search stop at the first such failure.

    **Ctrl-C** during the fits raises
    :class:`skdip.exceptions.FitInterrupted` (a ``KeyboardInterrupt``, so a
    search stops): an average over cut fits would not be the one asked for,
    so nothing is averaged and the estimator is left unfitted; the error's
    ``estimators`` attribute holds the settings' fits. The fits run in the
    calling thread whatever the estimator's ``n_jobs`` and joblib backend,
    so this holds with them too.

    **Metadata routing.** With ``sklearn.set_config(enable_metadata_routing=True)``
    the per-image inputs reach the wrapped estimator as its requests say
    (``DIPInpainter().set_fit_request(mask=True)``, see
    :meth:`get_metadata_routing`); without routing they are passed on as
    given.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPDenoiser
    >>> from skdip.model_selection import AverageOfBest
    >>> noisy = np.random.default_rng(0).random((16, 16))
    >>> den = DIPDenoiser(generator="skip-small", max_iter=10, early_stopping=None,
    ...                   random_state=0)
    >>> avg = AverageOfBest(den, {"lr": [0.01, 0.02], "reg_noise_std": [0.0, 0.05]},
    ...                     n_best=2).fit(noisy)
    >>> avg.scores_.shape, int(avg.selected_.sum())
    ((4, 1), 2)
    >>> avg.transform().shape
    (16, 16)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "get_params", "set_params"])],
        "param_grid": [dict, list],
        "n_best": [Interval(Integral, 1, None, closed="left"), None],
        "margin": [Interval(Real, 0, None, closed="left"), None],
        "default": [dict, Interval(Integral, 0, None, closed="left"), None],
        "max_distance": [Interval(Real, None, None, closed="neither"), None],
        "scoring": [StrOptions({"no_reference", "emv", "wmv", "discrepancy"}), NoReferenceScorer],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        estimator: Any,
        param_grid: dict | list,
        *,
        n_best: Int | None = 3,
        margin: Float | None = None,
        default: dict | Int | None = None,
        max_distance: Float | None = None,
        scoring: str | NoReferenceScorer = "no_reference",
        batch_size: Int | None = None,
    ):
        self.estimator = estimator
        self.param_grid = param_grid
        self.n_best = n_best
        self.margin = margin
        self.default = default
        self.max_distance = max_distance
        self.scoring = scoring
        self.batch_size = batch_size

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> AverageOfBest:
        """Fit every setting to ``X``, score each per image, average the best.

        Parameters
        ----------
        X : array-like
            The image(s), as for the estimator's ``fit``.
        y : array-like, optional
            Clean references, only recorded by the fits (never used to choose).
        **fit_params
            Per-image fit parameters, as for the estimator's ``fit``. With
            scikit-learn's metadata routing enabled, those the estimator
            requests for ``fit`` (e.g. ``set_fit_request(mask=True)``).

        Returns
        -------
        self : AverageOfBest

        Raises
        ------
        FitInterrupted
            On Ctrl-C (:class:`skdip.exceptions.FitInterrupted`, a
            ``KeyboardInterrupt``, so a search stops): nothing is averaged and
            this estimator is left unfitted. The error's ``estimators``
            attribute holds every setting's fit, in the order of the grid;
            those that Ctrl-C cut or that ran no step have ``stopped_by_ ==
            "interrupted"``.
        NothingToAverage
            When no setting could be scored on an image
            (:class:`skdip.exceptions.NothingToAverage`, a ``ValueError``):
            nothing is averaged and this estimator is left unfitted (not with
            the result of an earlier fit, of other data); the error's
            ``estimators`` attribute holds every setting's fit, in the order of
            the grid, to be scored by hand without another solve.

        Notes
        -----
        A refit refused before any fit runs (a bad parameter,
        ``estimator__warm_start=True``) keeps the earlier fit; once the
        settings have been fitted, a refit that fails leaves the estimator
        unfitted.
        """
        self._validate_params()
        if _routing_enabled():
            fit_params = process_routing(self, "fit", **fit_params).estimator.fit
        return self._fit(X, y, fit_params)

    def _drop_fitted(self) -> None:
        for name in _AVERAGE_OF_BEST_FITTED:
            self.__dict__.pop(name, None)

    def _fit(self, X: Any, y: Any, fit_params: dict) -> AverageOfBest:
        """:meth:`fit` with its parameters validated and the fit parameters routed."""
        self.__dict__.pop("_last_solve", None)  # a solve kept for the earlier settings
        # Interval accepts bools as numbers: refused as the estimators refuse them (an
        # InvalidParameterError, a ValueError and a TypeError alike), and inf below,
        # before the fits.
        reject_bool_numbers(self)
        if isinstance(self.default, Mapping) and not self.default:
            # In scikit-learn's words, as the other parameters: PreferDefault's, below,
            # would name a class the caller never made.
            raise InvalidParameterError(
                "The 'default' parameter of AverageOfBest must be a dict naming at least one "
                "parameter, an int or None. Got {} instead."
            )
        _check_best_scored(self.n_best, self.margin, self.max_distance)
        candidates = list(ParameterGrid(self.param_grid))
        if not candidates:
            raise ValueError("param_grid holds no setting")
        default_index = (
            None if self.default is None else PreferDefault(self.default).default_index(candidates)
        )
        scorer = get_scorer(self.scoring) if isinstance(self.scoring, str) else self.scoring
        configured = [_configured(self.estimator, setting) for setting in candidates]
        for est in configured:  # before the fits, not after them
            if getattr(est, "warm_start", False):
                # (fit_candidates refuses it too, in words about itself.)
                raise ValueError(
                    "AverageOfBest fits every candidate afresh and keeps no fit to go on "
                    "with, so estimator__warm_start=True would be ignored: set it to False"
                )
            scorer._check_can_score(est)
            if self.max_distance is not None:
                _check_distance_applies(est, default_index)
        _check_same_output_shape(configured, candidates, X, fit_params)
        # The notes of a Ctrl-C (kept estimates, unfitted pairs) describe fits that
        # are not kept here: one error instead, below (issued if something else fails).
        with held_back(InterruptionWarning) as notes:
            fitted = fit_candidates(
                self.estimator, X, candidates, y, batch_size=self.batch_size, **fit_params
            )
        # Only now, once the fits have run: a refit refused before any work (warm_start,
        # a device this machine lacks) keeps the earlier fit. From here the earlier result
        # is no longer the estimator's, whether the new one fails (Ctrl-C, nothing to
        # average) or not: not kept, lest it pass for this fit's.
        self._drop_fitted()
        interruption = _interruption(fitted, candidates)
        if interruption is not None:
            # The engine's "keeping the best estimate so far" and fit_candidates' list
            # of unfitted pairs describe fits that are not kept here: one error instead.
            raise FitInterrupted(interruption, estimators=fitted)
        for message, category in notes:
            warn(message, category)
        images, layout = fitted[0]._check_observations(X)
        scores = np.stack([_finite_scores(scorer, est, X) for est in fitted])
        distances = None
        if self.max_distance is not None:
            anchor, sigmas = fitted[default_index], scorer._sigmas(layout)
            distances = distances_to(fitted, anchor, images, sigma=sigmas)
        # Float64 (H, W, C) per image, so the average can be laid out as any input asks.
        estimates = [[r["estimate"] for r in est._fit_results] for est in fitted]
        n_images = scores.shape[1]
        selected = np.zeros_like(scores, dtype=bool)
        averaged = []
        for i in range(n_images):
            chosen = best_scored(
                scores[:, i],
                n_best=self.n_best,
                margin=self.margin,
                default=default_index,
                distances=None if distances is None else distances[:, i],
                max_distance=self.max_distance,
            )
            if chosen.size == 0:
                # The fits are not lost: scored by hand (e.g. with the noise level given),
                # they need no second solve.
                raise NothingToAverage(
                    f"no setting could be scored on image {i}: every score is NaN or "
                    "infinite; check the scorer's requirements (e.g. its rule, or sigma= "
                    "where the noise level cannot be estimated). Every setting's fit is in "
                    "this error's estimators attribute, in the order of the grid.",
                    estimators=fitted,
                )
            selected[chosen, i] = True
            shapes = {estimates[k][i].shape for k in chosen}
            if len(shapes) > 1:  # checked before the fits; kept for estimators it misses
                raise ValueError(
                    f"the settings give estimates of different shapes {sorted(shapes)} for "
                    f"image {i}; AverageOfBest needs settings that keep the output shape"
                )
            averaged.append(np.mean([estimates[k][i] for k in chosen], axis=0))
        self.random_state_ = _estimator_seed(self.estimator, candidates, fitted)
        self.candidates_ = candidates
        self.scores_ = scores
        self.selected_ = selected
        self.default_index_ = default_index
        self.distances_ = distances
        self.estimators_ = fitted
        self.n_images_ = n_images
        self.reconstruction_ = layout.restore(averaged)
        self._averages = averaged
        if hasattr(fitted[0], "n_features_in_"):
            self.n_features_in_ = fitted[0].n_features_in_
        return self

    def transform(self, X: Any = None, **fit_params: Any) -> Any:
        """The averaged estimate(s) of ``X``.

        Parameters
        ----------
        X : array-like, optional
            None (or the fitted images) returns the fitted result; other images
            are solved by a fresh copy (every setting fitted again), leaving
            this one's fit untouched.
        **fit_params
            Per-image inputs of the estimator for ``X`` (e.g. ``mask=`` of
            :class:`~skdip.DIPInpainter`), as in :meth:`fit`. With metadata
            routing enabled, those the estimator requests for ``transform``.

        Returns
        -------
        reconstruction : ndarray or list of ndarray
        """
        check_is_fitted(self, "reconstruction_")
        if _routing_enabled():
            fit_params = process_routing(self, "transform", **fit_params).estimator.transform
        if X is not None:
            images, layout = self.estimators_[0]._check_observations(X)
            if not self.estimators_[0]._reuses_fit(images, fit_params):
                return layout.restore(self._new_fit(X, images, fit_params)._averages)
            return layout.restore(self._averages)  # in the layout X came in, as a copy
        out = self.reconstruction_
        return [a.copy() for a in out] if isinstance(out, list) else out.copy()

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """Fit to ``X`` and return the averaged estimate(s) (see :meth:`fit`).

        Parameters
        ----------
        X : array-like
            The image(s), as for the estimator's ``fit``.
        y : array-like, optional
            Clean references, only recorded by the fits.
        **fit_params
            Per-image fit parameters, as in :meth:`fit` (with metadata routing
            enabled, those the estimator requests for ``fit``).

        Returns
        -------
        reconstruction : ndarray or list of ndarray
        """
        self._validate_params()
        if _routing_enabled():
            fit_params = process_routing(self, "fit_transform", **fit_params).estimator.fit
        return self._fit(X, y, fit_params).transform()

    def score(self, X: Any, y: Any = None, **fit_params: Any) -> float:
        """Mean PSNR of the averaged estimates of ``X`` against clean images ``y``.

        The PSNR is taken as the wrapped estimator's ``score`` takes it (its
        range: 1, or the reference's peak magnitude above 1). An
        average of several fits has no running variance or picked iterate of
        its own, so there is no no-reference score: ``y`` is required (the
        settings' own scores are in ``scores_``).
        A search over AverageOfBest's parameters therefore needs the clean
        images too (``search.fit(X, y)``); without them every candidate's
        score fails, and scikit-learn records NaN and warns rather than
        raising (see the class's Notes).

        Parameters
        ----------
        X : array-like
            The fitted image(s), or new ones (solved by a fresh copy).
        y : array-like
            Clean image(s) in the layout of ``X``.
        **fit_params
            Per-image inputs for new images, as in :meth:`fit` (with metadata
            routing enabled, those the estimator requests for ``score``).

        Returns
        -------
        score : float
        """
        from ._validation import check_images, is_target_vector
        from .metrics._scorers import check_complete

        check_is_fitted(self, "reconstruction_")
        if _routing_enabled():
            fit_params = process_routing(self, "score", **fit_params).estimator.score
        first = self.estimators_[0]
        checked = first._check_observations(X)
        if y is None or is_target_vector(y, len(checked[0])):
            raise ValueError(
                "AverageOfBest is scored against clean images only (pass y): an average of "
                "several fits has no no-reference score; the settings' scores are in "
                "scores_. A search over AverageOfBest (GridSearchCV, cross_validate) needs "
                "the clean images as y: search.fit(X, y), scored by this score or a "
                "reference scorer such as skdip.metrics.get_scorer('psnr')"
            )
        references, ref_layout = check_images(y, name="y", min_size=first._min_image_size)
        # Every setting's own model judges y's scale, as in fit and the scorers.
        first._check_references_first(checked, references, ref_layout, fit_params, judge=self)
        images, _, results = self._results_for(X, fit_params, checked, scoring=True)
        check_complete(results)
        extras = first._split_extra(len(images), fit_params)
        return float(np.mean(first._reference_psnrs(images, results, references, extras)))

    # For the reference scorers (PSNR, SSIM); the no-reference ones refuse it.
    _averages_fits = True

    def _check_reference_dtypes(self, images, layout, references, ref_layout, fit_params):
        for est in self.estimators_:
            est._check_reference_dtypes(images, layout, references, ref_layout, fit_params)

    def _results_for(
        self, X: Any, fit_params: dict, checked: tuple | None = None, scoring: bool = False
    ) -> tuple:
        """``(images, layout, results)`` of ``X``, each result holding the averaged
        estimate (new images are solved by a fresh copy; ``scoring``: as for the DIP
        estimators)."""
        check_is_fitted(self, "reconstruction_")
        images, layout = (
            checked if checked is not None else self.estimators_[0]._check_observations(X)
        )
        source = self
        if not self.estimators_[0]._reuses_fit(images, fit_params):
            if scoring:
                self.estimators_[0]._check_cross_validation_scoring(images, layout, owner=self)
            source = self._new_fit(X, images, fit_params)
        results = []
        for i, average in enumerate(source._averages):
            members = [
                est._fit_results[i]
                for est, chosen in zip(source.estimators_, source.selected_[:, i], strict=True)
                if chosen
            ]
            cut = any(m["stopped_by"] == "interrupted" for m in members)
            results.append(
                {
                    **members[0],
                    "estimate": average,
                    "stopped_by": "interrupted" if cut else members[0]["stopped_by"],
                    "n_iter": min(m["n_iter"] for m in members),
                }
            )
        return images, layout, results

    def _new_fit(self, X: Any, images: list, fit_params: dict) -> AverageOfBest:
        """A fresh copy fitted to new images; the last one is kept, so that several
        scorers of one search (or transform, then score) fit the grid once."""
        self.estimators_[0]._warn_inputs_left_out(fit_params, owner=self)
        key = _solve_key(self.estimators_[0]._inputs_digest(images, fit_params), self)
        last = getattr(self, "_last_solve", None)
        if last is not None and last[0] == key:
            return last[1]
        fitted = clone(self)
        fitted._validate_params()
        # _fit, not fit: these parameters are routed already (metadata routing).
        fitted = fitted._fit(X, None, fit_params)
        self._last_solve = (key, fitted)
        return fitted

    def set_params(self, **params: Any) -> AverageOfBest:
        self.__dict__.pop("_last_solve", None)
        return super().set_params(**params)

    def get_metadata_routing(self) -> MetadataRouter:
        """Get the metadata routing of this object.

        With scikit-learn's metadata routing enabled, the per-image inputs
        (e.g. ``mask``) go to the wrapped estimator as its own requests say:
        :meth:`fit` and :meth:`fit_transform` pass on what it requests for
        ``fit``, :meth:`transform` what it requests for ``transform``, and
        :meth:`score` what it requests for ``score``, as if it were called
        itself. See the :ref:`User Guide <metadata_routing>`.

        Returns
        -------
        routing : MetadataRouter
            A :class:`~sklearn.utils.metadata_routing.MetadataRouter`
            encapsulating the routing.
        """
        return MetadataRouter(owner=self).add(
            estimator=self.estimator,
            method_mapping=MethodMapping()
            .add(caller="fit", callee="fit")
            .add(caller="fit_transform", callee="fit")
            .add(caller="transform", callee="transform")
            .add(caller="score", callee="score"),
        )

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_last_solve", None)  # a cache: not worth its size in a pickle
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Its inputs and outputs are the wrapped estimator's.
        inner = get_tags(self.estimator)
        tags.input_tags = inner.input_tags
        tags.requires_fit = True
        if tags.transformer_tags is not None and inner.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = inner.transformer_tags.preserves_dtype
        return tags


def _check_distance_applies(estimator: Any, default_index: int | None) -> None:
    """Refuse ``max_distance`` where it means nothing, before any fit."""
    if default_index is None:
        raise ValueError("max_distance limits what joins the default: pass default too")
    if not _measures_in_image_space(estimator):
        raise ValueError(
            "max_distance compares estimates with the noise of an observation of the image "
            f"itself; {type(estimator).__name__} (with these parameters) observes it through "
            "a forward model or a noise model, where that noise level says nothing of how "
            "far apart two images are"
        )


_AVERAGE_OF_BEST_FITTED = (
    "random_state_",
    "candidates_",
    "scores_",
    "selected_",
    "default_index_",
    "distances_",
    "estimators_",
    "n_images_",
    "reconstruction_",
    "n_features_in_",
    "_averages",
    "_last_solve",
)


def _estimator_seed(estimator: Any, candidates: list[dict], fitted: list) -> int:
    """The seed ``estimator``'s ``random_state`` gave the settings of ``fitted`` that set
    none of their own (one for them all: see :func:`fit_candidates`); where every setting
    sets its own, the seed it would give them."""
    for setting, est in zip(candidates, fitted, strict=True):
        if "random_state" not in setting:
            return est.random_state_
    # Drawn from a copy, as each setting's clone would be: a RandomState is left alone.
    return resolved_seed(clone(estimator.random_state, safe=False))


def _check_same_output_shape(
    configured: list, candidates: list[dict], X: Any, fit_params: dict
) -> None:
    """Refuse, before any fit, settings whose estimates of an image differ in shape
    (a super-resolution ``scale``, a deconvolution ``boundary``): they cannot be
    averaged, and the fits take minutes to hours."""
    if "batch_size" not in configured[0].get_params() or not all(
        hasattr(est, "_reconstruction_shape") for est in configured
    ):
        return  # fit_candidates refuses the first; the others are checked after the fits
    # The fits check X and their parameters again and give the warnings then.
    with held_back():
        for est in configured:
            est._check_params()
        images, _ = configured[0]._check_observations(X)
        shapes = []
        for est in configured:
            extras = est._split_extra(len(images), fit_params)
            shapes.append(
                [est._reconstruction_shape(im, ex) for im, ex in zip(images, extras, strict=True)]
            )
    for i in range(len(images)):
        first: dict[tuple[int, ...], int] = {}
        for k, per_image in enumerate(shapes):
            first.setdefault(tuple(per_image[i]), k)
        if len(first) > 1:
            a, b = list(first.values())[:2]
            raise ValueError(
                f"the settings give estimates of different shapes {sorted(first)} for "
                f"image {i} (e.g. {candidates[a]} and {candidates[b]}); AverageOfBest needs "
                "settings that keep the output shape (refused before any fit)"
            )


def _interruption(fitted: list, candidates: list[dict]) -> str | None:
    """The message of a Ctrl-C during AverageOfBest's fits; None without one."""
    cut: list[int] = []
    unfitted: list[int] = []
    for k, est in enumerate(fitted):
        stopped = [r for r in est._fit_results if r["stopped_by"] == "interrupted"]
        if stopped:
            (cut if any(r["n_iter"] for r in stopped) else unfitted).append(k)
    if not cut and not unfitted:
        return None
    n = len(candidates)
    complete = n - len(cut) - len(unfitted)
    if len(cut) == 1:
        where = f"during the fit of setting {cut[0] + 1} of {n} ({candidates[cut[0]]})"
    elif cut:  # settings fitted together, in one vectorised run
        where = f"during the fits of settings {[k + 1 for k in cut]} of {n} (fitted together)"
    else:  # before any step of the remaining settings
        where = f"before the fit of setting {unfitted[0] + 1} of {n} ({candidates[unfitted[0]]})"
    return (
        f"AverageOfBest was interrupted (Ctrl-C) {where}, with {complete} of {n} settings "
        "fitted in full: nothing was averaged. Each setting's fit is in this error's "
        "estimators attribute (stopped_by_ 'interrupted' where it was cut or never ran)."
    )


def _finite_scores(scorer: NoReferenceScorer, estimator: Any, X: Any) -> np.ndarray:
    try:
        scores = np.asarray(scorer.score_images(estimator, X), dtype=np.float64)
    except ValueError as err:
        # One setting the score cannot judge (e.g. no variance recorded before its fit
        # ended) is left out, as GridSearchCV's error_score does; the others are kept.
        # Only on the images it cannot judge: one image (a fit that accepted no step, too
        # few observed pixels for the noise level) failed the whole setting's scores.
        scores = _scores_per_image(scorer, estimator, X)
        failed = np.flatnonzero(np.isnan(scores)).tolist()
        if failed and len(failed) < scores.size:
            where = f" on image(s) {failed} and is left out there"
        else:  # not one image's failure: the whole setting is left out
            scores, where = np.full(scores.size, np.nan), " and is left out"
        warn(f"a setting could not be scored{where}: {err}", UserWarning)
    return np.where(np.isfinite(scores), scores, np.nan)


def _scores_per_image(scorer: NoReferenceScorer, estimator: Any, X: Any) -> np.ndarray:
    """The scorer's score of each fitted image of ``X`` alone, NaN where it fails."""
    if type(scorer).score_images is not NoReferenceScorer.score_images:
        return np.full(estimator.n_images_, np.nan)  # a score of its own: not known here
    with held_back():  # the fit gave the warnings of these checks
        images, layout = estimator._check_observations(X)
    sigmas = scorer._sigmas(layout) or [None] * len(images)
    scores = np.full(len(images), np.nan)
    for i, (image, result, sigma) in enumerate(
        zip(images, estimator._fit_results, sigmas, strict=True)
    ):
        try:
            scores[i] = no_reference_scores(
                estimator, [image], [result], criterion=scorer.criterion, sigma=sigma
            )[0]
        except ValueError:
            pass
    return scores
