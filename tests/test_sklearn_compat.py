"""scikit-learn's own estimator checks, run on tiny configurations.

skdip reads a 2-D array as one grey image, so the checks exercise the whole
contract (cloning, parameters, fitting, pickling, dtypes, ...). The few that
cannot hold for an image estimator are declared below with their reason.
"""

import inspect
import re
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdip import (
    BlindDeblurrer,
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    DIPSuperResolver,
    HIOPhaseRetriever,
    PhaseRetriever,
    SkipNetwork,
)
from skdip.model_selection import AverageOfBest

TINY = SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1)

# Reasons shared by every image estimator: the rows of a 2-D array are the rows
# of one image, not independent samples.
IMAGE_ESTIMATOR_FAILURES = {
    "check_methods_sample_order_invariance": (
        "rows of an image are not samples: reordering them makes another image"
    ),
    "check_methods_subset_invariance": (
        "rows of an image are not samples: a subset of rows is another (tiny) image"
    ),
    "check_n_features_in_after_fitting": (
        "an image of another width is a new problem to solve, not a feature mismatch"
    ),
    "check_transformer_general": (
        "transforming an image of another width solves it; it is not an error"
    ),
    "check_fit2d_1sample": (
        "a 1-pixel-high array is rejected as too small to be an image, with an image-specific "
        "message rather than sklearn's n_samples wording"
    ),
    "check_fit2d_1feature": (
        "a 1-pixel-wide array is rejected as too small to be an image, with an image-specific "
        "message rather than sklearn's n_features wording"
    ),
    "check_estimators_empty_data_messages": (
        "empty input is rejected with an image-specific message ('X is empty (shape ...)')"
    ),
    "check_dtype_object": (
        "object arrays are rejected on purpose: an image must have a numeric dtype"
    ),
}


# Phase retrieval takes Fourier magnitudes of an object zero-padded by the
# oversampling factor (2): a measurement with an odd side cannot come from that
# model and is rejected, and most of sklearn's test arrays have an odd side
# (30x3, 21x2, 20x5, 15x4, 10x3, ...).
ODD_SHAPE = "sklearn's test array has an odd side; a 2x-oversampled measurement cannot"
PHASE_FAILURES = {
    **IMAGE_ESTIMATOR_FAILURES,
    **{
        name: ODD_SHAPE
        for name in (
            "check_fit_score_takes_y",
            "check_estimators_overwrite_params",
            "check_dont_overwrite_parameters",
            "check_estimators_fit_returns_self",
            "check_readonly_memmap_input",
            "check_estimators_dtypes",
            "check_pipeline_consistency",
            "check_estimators_pickle",
            "check_f_contiguous_array_estimator",
            "check_transformer_data_not_an_array",
            "check_transformer_preserve_dtypes",
            "check_transformer_n_iter",
            "check_dict_unchanged",
            "check_fit2d_predict1d",
        )
    },
}


def _expected_failed_checks(estimator):
    if isinstance(estimator, PhaseRetriever | HIOPhaseRetriever):
        return PHASE_FAILURES
    failures = dict(IMAGE_ESTIMATOR_FAILURES)
    if isinstance(estimator, DIPInpainter):
        # With no pixel missing the observed pixels are returned as they are,
        # which is invariant to the row order.
        del failures["check_methods_sample_order_invariance"]
    if isinstance(estimator, AverageOfBest):
        # An average of several fits has no running variance or picked iterate, so no
        # no-reference score: score() needs clean images as y (documented, and a search
        # over it is told so), where these checks pass a 1-D label vector.
        no_score = "score needs clean images as y; the check passes class labels"
        failures["check_fit_score_takes_y"] = no_score
        failures["check_pipeline_consistency"] = no_score
    if isinstance(estimator, DIPSuperResolver):
        failures["check_transformer_data_not_an_array"] = (
            "the output has `scale` times the rows of the input, which the check compares "
            "with the input's row count"
        )
    return failures


COMMON = dict(generator=TINY, max_iter=3, early_stopping=None, random_state=0, device="cpu")

ESTIMATORS = [
    DIPDenoiser(**COMMON),
    DIPReconstructor(**COMMON),
    DIPInpainter(**COMMON),
    DIPSuperResolver(scale=2, **COMMON),
    DIPDeconvolver(kernel=np.ones((3, 3)) / 9, **COMMON),
    BlindDeblurrer(**COMMON),
    PhaseRetriever(pretrain_iter=2, init=HIOPhaseRetriever(max_iter=5, n_er=1), **COMMON),
    HIOPhaseRetriever(max_iter=10, n_er=2, random_state=0),
    # Two settings, so that the checks see an average (and its batched fits).
    AverageOfBest(DIPDenoiser(**COMMON), {"lr": [0.01, 0.02]}, n_best=2),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_expected_failures_really_fail(estimator):
    """Each declared failure still fails: the list is the smallest honest one."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(_expected_failed_checks(estimator))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_every_fitted_attribute_is_documented(estimator):
    from sklearn.base import clone

    # A 2-D input sets n_features_in_ too; 16x16 suits every estimator (even sides).
    x = np.random.default_rng(0).random((16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = clone(estimator).fit(x)
    attributes = {k for k in vars(fitted) if k.endswith("_") and not k.startswith("_")}
    # cleandoc: Python 3.13 strips a docstring's common indentation, earlier ones keep it.
    doc = inspect.cleandoc(type(fitted).__doc__)
    doc = doc.split("Attributes\n----------")[1].split("\nSee Also")[0]
    documented = set(re.findall(r"^(\w+_)\b", doc, flags=re.M))
    for line in re.findall(r"^(\w+_(?:, \w+_)+)", doc, flags=re.M):
        documented.update(line.split(", "))
    assert attributes <= documented, sorted(attributes - documented)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_the_constraints_name_exactly_the_parameters(estimator):
    # sklearn's check_param_validation (which parametrize_with_checks does not run)
    # refused a constraint for averaging_monitor on estimators without it.
    from sklearn.utils.estimator_checks import check_param_validation

    assert set(estimator._parameter_constraints) == set(estimator.get_params(deep=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_param_validation(type(estimator).__name__, estimator)
