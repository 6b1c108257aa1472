"""Scorers for model selection: ``scorer(estimator, X, y=None) -> float``.

scikit-learn's ``make_scorer`` only calls ``predict``-like methods, so skdip's
scorers are plain callables with the scorer signature, higher is better. They
work alone (``scoring=get_scorer("emv")``) or in a multi-metric dict with
``refit="name"``.

No-reference scorers judge the estimate the early-stopping rule picked (the
iterate at the running-variance minimum). The raw variance there is not
comparable across settings: it scales with the step size, the network and
the input perturbation, and it keeps falling when a fit overfits the noise
instead of showing a valley. The default criterion (``"auto"``) rests on
the discrepancy instead, which compares the data fit of the picked estimate
with the noise level of the observation (Morozov's discrepancy principle): a
good denoised image
leaves a residual whose power equals the noise power; a smaller residual means
noise was fitted, a larger one that structure was lost. The score,
``-|10 log10(residual / sigma**2)|`` in dB, is in units of the data, so it is
comparable across learning rates, widths, input-noise levels and generators.

When the residual image itself is available (denoising), ``"auto"`` adds a
whiteness test (elsewhere it is the discrepancy alone): a residual that is only
noise has no structure, so a 3x3 local mean keeps 1/9 of its power; image
detail left in the residual (an over-smoothed estimate) keeps more. Residuals
of the right power can differ this way, which the discrepancy alone cannot see.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Literal, TypeVar, overload

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._validation import reject_bool_numbers
from .._warnings import warn
from ..exceptions import FitInterrupted
from ._noise_level import _MIN_NOISE_VAR, estimate_noise_var
from ._quality import psnr as _psnr_metric
from ._quality import ssim as _ssim_metric

__all__ = ["NoReferenceScorer", "ReferenceScorer", "get_scorer", "SCORER_NAMES"]


def _holds_dip(step: Any) -> bool:
    return (
        hasattr(step, "_results_for")
        or any(_holds_dip(inner) for _, inner in getattr(step, "steps", None) or [])
        or _refitted_estimator(step) is not None
    )


def _find_dip_step(estimator: Any, X: Any) -> tuple[Any, Any]:
    """The last DIP step (in nested Pipelines too) and the data the steps before it
    hand it; ``(None, X)`` when there is none."""
    if hasattr(estimator, "_results_for"):
        return estimator, X
    refitted = _refitted_estimator(estimator)
    if refitted is not None:
        # A fitted search (nested cross-validation): it predicts with its refit.
        return _find_dip_step(refitted, X)
    steps = getattr(estimator, "steps", None) or []
    positions = [i for i, (_, step) in enumerate(steps) if _holds_dip(step)]
    if not positions:
        return None, X
    for _, step in steps[: positions[-1]]:
        if step is not None and step != "passthrough":
            X = step.transform(X)
    return _find_dip_step(steps[positions[-1]][1], X)


def _refitted_estimator(estimator: Any) -> Any:
    """A fitted search's refit estimator holding a DIP step (None for anything else)."""
    if hasattr(estimator, "cv_results_") and hasattr(estimator, "best_estimator_"):
        best = estimator.best_estimator_
        if _holds_dip(best) or _refitted_estimator(best) is not None:
            return best
    return None


def _steps_after_dip(estimator: Any) -> list[str]:
    """Names of the steps that change the output after the last DIP step (in nested
    Pipelines too): a scorer of the DIP step's reconstruction does not see them."""
    refitted = _refitted_estimator(estimator)
    if refitted is not None:
        return _steps_after_dip(refitted)
    steps = getattr(estimator, "steps", None) or []
    positions = [i for i, (_, step) in enumerate(steps) if _holds_dip(step)]
    if hasattr(estimator, "_results_for") or not positions:
        return []
    after = [
        name
        for name, step in steps[positions[-1] + 1 :]
        if step is not None
        and not (isinstance(step, str) and step == "passthrough")
        # FunctionTransformer() without a function hands its input on unchanged.
        and not (type(step).__name__ == "FunctionTransformer" and step.func is None)
    ]
    return _steps_after_dip(steps[positions[-1]][1]) + after


def _dip_step(estimator: Any, X: Any, reference: bool = False) -> tuple[Any, Any]:
    """The DIP estimator to score and its input (through a Pipeline's earlier steps);
    ``reference`` for a scorer against clean images."""
    dip, X = _find_dip_step(estimator, X)
    if dip is None:
        search = hasattr(estimator, "cv_results_") or hasattr(estimator, "param_grid")
        raise TypeError(
            "skdip scorers need a fitted skdip DIP estimator (or a Pipeline or a refitted "
            f"search containing one), got {type(estimator).__name__}"
            + (" without a refit estimator (refit=False, or not fitted)" if search else "")
        )
    if not reference and getattr(dip, "_averages_fits", False):
        raise TypeError(
            f"{type(dip).__name__} averages several fits: it has no running variance or "
            "picked iterate for a no-reference score (the settings' scores are in its "
            "scores_); score it against clean images (get_scorer('psnr'))"
        )
    if not reference and getattr(dip, "_own_score_only", False):
        # Against clean images it is scored as the other phase retriever is.
        raise TypeError(
            f"{type(dip).__name__} records no iterates or running variance for a "
            "no-reference score: score it against clean images (get_scorer('psnr', "
            "data_range=...), or its own score(X, y): scoring=None in a search)"
        )
    # As score() does: an unfitted estimator would otherwise be fitted here, quietly.
    check_is_fitted(dip)
    check_fit_not_interrupted(dip)
    return dip, X


def _rule_kind(early_stopping: Any) -> str:
    """Which running variance an ``early_stopping`` value records: "emv", "wmv" or "other"."""
    from ..stopping import ExponentialMovingVariance, WindowedMovingVariance, get_stopping_rule

    rule = get_stopping_rule(early_stopping)
    if rule is not None:
        rule = rule._signal_rule()  # a wrapper records its wrapped rule's signal
    # Without a rule the engine still records a passive EMV.
    if rule is None or isinstance(rule, ExponentialMovingVariance):
        return "emv"
    if isinstance(rule, WindowedMovingVariance):
        return "wmv"
    return "other"


def _settings(estimator: Any, results: list[dict] | None = None) -> dict:
    """The ``loss`` and ``noise_model`` that scoring reads: those its ``results`` were
    made with (a ``set_params`` after the fit does not change them), else the
    estimator's own."""
    if results and "loss" in results[0]:
        return {
            "loss": results[0]["loss"],
            "noise_model": results[0]["noise_model"],
            "early_stopping": results[0].get(
                "early_stopping", getattr(estimator, "early_stopping", None)
            ),
        }
    return {
        "loss": getattr(estimator, "loss", "mse"),
        "noise_model": getattr(estimator, "noise_model", None),
        "early_stopping": getattr(estimator, "early_stopping", None),
    }


def _measures_in_image_space(estimator: Any, settings: dict | None = None) -> bool:
    """Whether the observation is the image itself (no forward operator, no post-processing;
    ``settings``: see :func:`_settings`).

    Then the residual of the returned estimate can be computed exactly from it
    and ``X``, whatever the loss or regularizer; otherwise the recorded loss
    at the picked iteration is used.
    """
    # Estimators declare it (DIPDenoiser); a sparse noise model adds a term
    # between the image and the observation, so then the loss is used.
    settings = _settings(estimator) if settings is None else settings
    return bool(getattr(estimator, "_observes_the_image", False)) and (
        settings["noise_model"] is None
    )


def _noise_var(observation: np.ndarray, sigma: float | None, scale: float) -> float:
    """Noise variance on the [0, 1] fitting scale: given, or estimated from the data."""
    if sigma is not None:
        return max((float(sigma) / scale) ** 2, _MIN_NOISE_VAR)
    return estimate_noise_var(observation)


def _picked(result: dict, key: str) -> float:
    values = result["history"][key]
    b = int(result["best_iter"])
    if 0 <= b < len(values) and np.isfinite(values[b]):
        return float(values[b])
    return float("nan")


def check_fit_not_interrupted(estimator: Any) -> None:
    """Refuse to score, on any images, an estimator whose own fit Ctrl-C cut short.

    With a splitter whose test images differ from the fitted ones (``KFold``),
    the scores solve the test images anew and would never see the cut fit: the
    search went on after the Ctrl-C that was meant to stop it.
    """
    results = getattr(estimator, "_fit_results", None) or []
    cut = [i for i, r in enumerate(results) if r.get("stopped_by") == "interrupted"]
    if cut:
        raise FitInterrupted(
            f"the fit of this {type(estimator).__name__} was interrupted (Ctrl-C) on image(s) "
            f"{cut}; it is not scored, on these or other images. Fit again to score it."
        )


def check_complete(results: list[dict]) -> None:
    """Refuse to score a fit that Ctrl-C cut short (:class:`FitInterrupted`), or one
    that accepted no step: a search would rank it against complete ones (and refit
    it if it won)."""
    cut = [i for i, r in enumerate(results) if r.get("stopped_by") == "interrupted"]
    if cut:
        steps = [results[i]["n_iter"] for i in cut]
        # A KeyboardInterrupt: a search that scores it stops, as the user asked.
        raise FitInterrupted(
            f"the fit of image(s) {cut} was interrupted (Ctrl-C) after {steps} steps; a "
            "truncated fit is not scored. Fit again to score it."
        )
    # Every step diverged: the "estimate" is the untrained network's output.
    empty = [i for i, r in enumerate(results) if r.get("n_iter", 1) == 0]
    if empty:
        raise ValueError(
            f"the fit of image(s) {empty} accepted no step (every step diverged); there is "
            "no fit to score. Try a smaller learning rate."
        )


def resolve_criterion(estimator: Any, criterion: str, settings: dict | None = None) -> str:
    """The criterion ``criterion`` means for this estimator ("auto" resolved),
    refused from the estimator's parameters alone when it cannot be computed
    (so a search can refuse it before any fit; ``settings``: see :func:`_settings`)."""
    settings = _settings(estimator) if settings is None else settings
    loss = settings["loss"]
    in_image_space = _measures_in_image_space(estimator, settings)
    if criterion == "auto":
        criterion = "discrepancy_whiteness" if in_image_space else "discrepancy"
    if criterion == "discrepancy_whiteness" and not in_image_space:
        raise ValueError(
            "the whiteness test needs the residual image, which "
            f"{type(estimator).__name__} with these parameters does not observe directly "
            "(a forward operator or a noise model sits between the image and X); use "
            "criterion='discrepancy'"
        )
    if criterion == "variance" and _rule_kind(settings["early_stopping"]) == "other":
        # Its signal (SelfValidation's autoencoder error, a user's rule's) was read as
        # a running variance against the noise power, in silence.
        raise ValueError(
            "the variance criterion reads the running variance of the iterates, which "
            f"early_stopping={settings['early_stopping']!r} does not record (its signal "
            "is its own); fit with early_stopping='emv' or 'wmv', or score with "
            "criterion='auto'"
        )
    direct = criterion != "variance" and in_image_space
    if criterion == "discrepancy" and settings["noise_model"] is not None:
        # The sparse term absorbs whatever residual it grows into, so the misfit says
        # how much it took, not how good the image is (measured: backwards, below).
        raise ValueError(
            "the discrepancy criterion is not available with a noise_model: the sparse "
            "term s absorbs part of the residual, so the residual left says how much s "
            "took, not how good the image is (in our checks it picked the worst of four "
            "network settings in 4 cases of 4, and ranked noise_model__lr backwards). "
            "Score with NoReferenceScorer(criterion='variance') to compare settings of "
            "the network (it too ranked noise_model__lr backwards: do not tune that with "
            "it), or with a full-reference scorer"
        )
    if criterion == "discrepancy" and not direct and not _is_mean_squared_error(loss):
        raise ValueError(
            "the discrepancy criterion compares a mean squared residual with the noise "
            f"variance; it needs loss='mse' for {type(estimator).__name__}, got "
            f"{loss!r} (a callable loss is not known to be one). Score with "
            "NoReferenceScorer(criterion='variance') or a full-reference scorer"
        )
    return criterion


def _is_mean_squared_error(loss: Any) -> bool:
    """Whether ``loss`` is the mean squared error: ``"mse"``, the function
    ``get_loss("mse")`` returns, or ``torch.nn.MSELoss()`` with its mean reduction
    (the last two were refused as unknown callables)."""
    import torch

    from ..losses import get_loss

    if isinstance(loss, str):
        return loss == "mse"
    if isinstance(loss, torch.nn.MSELoss):
        return loss.reduction == "mean"
    return loss is get_loss("mse")


def no_reference_scores(
    estimator: Any,
    images: list[np.ndarray],
    results: list[dict],
    *,
    criterion: str = "auto",
    sigma: float | list[float] | None = None,
) -> np.ndarray:
    """Per-image no-reference scores of fitted results (higher is better).

    Parameters
    ----------
    estimator : BaseDIPEstimator
        The fitted estimator the results belong to.
    images : list of ndarray
        The observations, float64 ``(H, W, C)`` on the caller's scale.
    results : list of dict
        The per-image fit results (``estimate``, ``history``, ``best_iter``,
        ``scaling``).
    criterion : {"auto", "discrepancy_whiteness", "discrepancy", "variance"}
        See :class:`NoReferenceScorer`.
    sigma : float or list of float, optional
        Noise standard deviation on the scale of ``images`` (one value, or one
        per image); estimated from each image when None.

    Returns
    -------
    scores : ndarray of shape (n_images,)
    """
    check_complete(results)
    settings = _settings(estimator, results)
    criterion = resolve_criterion(estimator, criterion, settings)
    direct = criterion != "variance" and _measures_in_image_space(estimator, settings)
    sigmas = sigma if isinstance(sigma, list | tuple) else [sigma] * len(images)
    scores = []
    for image, result, image_sigma in zip(images, results, sigmas, strict=True):
        scaling = result["scaling"]
        measured = result.get("measured")
        observation, noise_var = _observation_and_noise_var(estimator, image, result, image_sigma)
        if criterion == "variance":
            value = _picked(result, "signal")
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    "no running-variance signal was recorded at the picked iteration (the fit "
                    "ended before the rule's warm-up); use the discrepancy criterion"
                )
            # Jitter of the iterates against the noise power, in dB per pixel.
            scores.append(10.0 * np.log10(noise_var / value))
            continue
        structure = 0.0
        if direct:
            estimate = scaling.forward(np.asarray(result["estimate"], dtype=np.float64))
            residual = float(np.mean((estimate - observation) ** 2))
            if criterion == "discrepancy_whiteness":
                structure = _residual_structure(observation - estimate)
        else:
            # The data term alone: a regularizer's penalty is no misfit of the data.
            residual = _picked(result, "data_loss" if "data_loss" in result["history"] else "loss")
            if measured is not None and np.mean(measured) > 0:
                # A masked loss averages over all pixels; the residual is per measured one.
                residual /= float(np.mean(measured))
        if not np.isfinite(residual):
            raise ValueError("no finite residual was recorded at the picked iteration")
        residual = max(residual, _MIN_NOISE_VAR)
        scores.append(-abs(10.0 * np.log10(residual / noise_var)) - structure)
    return np.asarray(scores, dtype=np.float64)


def _measurement_noise(estimator: Any, image: np.ndarray, result: dict) -> tuple[float | None, str]:
    """The noise level the fitted forward model reads from its measurement ``image``
    (see ``ForwardOperator._noise_sigma``): recorded by the fit, so a ``set_params``
    since does not change it; asked of the estimator's operator for fits kept from
    before it was recorded."""
    if "measurement_noise" in result:
        return result["measurement_noise"]
    if not result.get("measurement_is_no_image") or not hasattr(estimator, "_operator"):
        return None, ""
    return estimator._operator()._noise_sigma(image)


def _observation_and_noise_var(
    estimator: Any, image: np.ndarray, result: dict, sigma: float | None
) -> tuple[np.ndarray, float]:
    """The observation on the scale the loss was computed on, and its noise variance there.

    ``sigma`` is on the caller's scale (None: estimated from the observation).
    """
    estimated_here = sigma is None  # (the model's own estimate, for k-space, too)
    scaling = result["scaling"]
    # The factor from the caller's units to the fitting scale (estimators whose
    # target is not the scaled X say so).
    if hasattr(estimator, "_fitted_observation"):
        observation, sigma_scale = estimator._fitted_observation(image)
    else:
        observation, sigma_scale = scaling.forward(image), scaling.scale
    measured = result.get("measured")
    observation_for_noise = observation
    if sigma is None:
        sigma, problem = _measurement_noise(estimator, image, result)
        if problem:
            warn(
                f"the noise level of this k-space cannot be estimated: {problem}. The "
                "no-reference score estimates it from X as from an image instead, which was "
                "up to 235 times too high on k-space in our checks: the score is unreliable. "
                "Give the noise level, e.g. get_scorer('emv', sigma=...), in X's units (the "
                "standard deviation per real and imaginary part).",
                UserWarning,
            )
        elif sigma is None and result.get("measurement_is_no_image"):
            warn(
                "the no-reference score estimates the noise level from X as from an image, "
                "but this forward model's measurements are not image-like: the score is "
                "unreliable. Give the noise level, e.g. get_scorer('emv', sigma=...), in X's "
                "units.",
                UserWarning,
            )
    # Checked against the estimate where the observation is image-like (not k-space,
    # not diffraction magnitudes, whose noise an image estimate misreads).
    given = (
        sigma is not None
        and not result.get("measurement_is_no_image")
        and not hasattr(estimator, "_fitted_observation")
    )
    if (sigma is None or given) and measured is not None:
        # Pixels a mask hides hold no observation (overlays, dead pixels): as NaN,
        # they are left out of the noise estimate, as missing pixels are.
        hidden = ~np.broadcast_to(measured, observation.shape)
        observation_for_noise = np.where(hidden, np.nan, observation)
    noise_var = _noise_var(observation_for_noise, sigma, sigma_scale)
    if estimated_here and noise_var <= _MIN_NOISE_VAR:
        # A constant or piecewise-constant X: the score ranks the closest fits first, as
        # it should without noise, but at -100 dB and below (10 log10 of the residual
        # over 1e-12), which outweighs every noisy image in a search's mean score.
        warn(
            "X shows no noise: the noise level estimated from it is 0, taken as 1e-6 of "
            "the fitting scale. The no-reference score then rewards the closest fit to X "
            "on a scale of its own (about -100 dB and below) that no noisy image's score "
            "shares: do not average or compare it with theirs. For noise-free data, "
            "score against clean images (get_scorer('psnr')) or give the noise level "
            "(get_scorer('emv', sigma=...)).",
            UserWarning,
        )
    if given:
        try:
            estimated = _noise_var(observation_for_noise, None, sigma_scale)
        except ValueError:
            # Too few observed pixels to estimate it: what sigma= is there for.
            estimated = None
        if estimated is not None:
            _check_given_sigma(noise_var, estimated)
    return observation, noise_var


# A given noise level this many times the estimated one (or its inverse) is taken
# for a slip of units: 255 between uint8 and [0, 1] data.
_SIGMA_UNITS_RATIO = 10.0


def _check_given_sigma(given_var: float, estimated_var: float) -> None:
    """Warn when a given ``sigma`` is far from the level estimated from the image.

    The score compares residuals with it, so a sigma in the wrong units ranks
    settings by how much they overfit (uint8 data with sigma=0.1 picked the
    longest run, 22.0 dB, over the best, 27.7 dB).
    """
    ratio = float(np.sqrt(given_var / max(estimated_var, _MIN_NOISE_VAR)))
    if 1.0 / _SIGMA_UNITS_RATIO <= ratio <= _SIGMA_UNITS_RATIO:
        return
    warn(
        f"the given sigma is {ratio:.3g} times the noise level estimated from this image. "
        "sigma is in X's units: 0-255 for uint8 images (where sigma=0.1 means 0.1/255 "
        "of the range), the floats' own scale otherwise. With a sigma that far off the "
        "score ranks settings by how closely they fit the noise; if it is right (an "
        "image far from white Gaussian noise), ignore this warning.",
        UserWarning,
    )


def distances_to(
    estimators: list,
    anchor: Any,
    images: list[np.ndarray],
    *,
    sigma: float | list[float] | None = None,
) -> np.ndarray:
    """How far each estimator's estimates lie from ``anchor``'s, in dB relative to the noise.

    ``10 log10(mean((x - x_anchor)**2) / sigma**2)`` per estimator and image
    (shape ``(n_estimators, n_images)``; NaN where the shapes differ), on the
    fitting scale of the anchor's results, with the noise variance the
    no-reference score uses (``sigma`` on the images' scale, one or one per
    image; None estimates it). Only for estimators that observe the image itself.
    """
    sigmas = sigma if isinstance(sigma, list | tuple) else [sigma] * len(images)
    out = np.full((len(estimators), len(images)), np.nan)
    for i, (image, image_sigma) in enumerate(zip(images, sigmas, strict=True)):
        reference = anchor._fit_results[i]
        scaling = reference["scaling"]
        _, noise_var = _observation_and_noise_var(anchor, image, reference, image_sigma)
        base = scaling.forward(np.asarray(reference["estimate"], np.float64))
        for k, estimator in enumerate(estimators):
            own = scaling.forward(np.asarray(estimator._fit_results[i]["estimate"], np.float64))
            if own.shape == base.shape:
                power = float(np.mean((own - base) ** 2))
                out[k, i] = -np.inf if power == 0 else 10.0 * np.log10(power / noise_var)
    return out


def _residual_structure(residual: np.ndarray) -> float:
    """Power of the residual's 3x3 local mean against white noise's, in dB.

    0 dB for a white residual (the mean of 9 independent values keeps 1/9 of
    their power), up to the border: the reflected edge repeats pixels in
    their own window, which adds about +0.17 dB at 64x64 and +0.05 dB at
    256x256 (mean over white-noise draws), about alike for every setting
    of one image; positive when image structure, which is locally
    correlated, was left in the residual; negative when the residual lacks low
    frequencies (a DIP estimate keeps the noise's low frequencies, which it
    fits first). Kept signed: penalising both signs selected worse settings
    in the design run (``benchmarks/results/selection_design.md``).
    """
    from scipy.ndimage import uniform_filter

    centred = residual - residual.mean(axis=(0, 1), keepdims=True)
    power = float(np.mean(centred**2))
    if power <= _MIN_NOISE_VAR:
        return 0.0
    local = uniform_filter(centred, size=(3, 3, 1), mode="reflect")
    return 10.0 * float(np.log10(max(9.0 * float(np.mean(local**2)), _MIN_NOISE_VAR) / power))


# set_score_request returns the scorer itself, as its own type.
_Scorer = TypeVar("_Scorer", bound="_RoutedInputsMixin")


class _RoutedInputsMixin:
    """Per-image fit inputs (an inpainter's ``mask``) routed to a scorer.

    With scikit-learn's metadata routing on, ``scorer.set_score_request(mask=True)``
    asks a search or ``cross_validate`` to pass the test images' masks to the
    scorer, as ``set_score_request`` does on scikit-learn's own scorers; the
    scorer hands them to the estimator for images it has not fitted.
    """

    def set_score_request(self: _Scorer, **requests: bool | str | None) -> _Scorer:
        """Request per-image inputs to be routed to this scorer.

        Parameters
        ----------
        **requests : bool, str or None
            ``name=True`` to receive ``name``, ``name="alias"`` to receive it
            under another name, ``False``/``None`` not to.

        Returns
        -------
        self : object
        """
        from sklearn.utils.metadata_routing import MetadataRequest

        # Kept where scikit-learn keeps an estimator's requests: clone() copies them,
        # and get_metadata_routing() reads them.
        if not hasattr(self, "_metadata_request"):
            self._metadata_request = MetadataRequest(owner=type(self).__name__)
        for name, alias in requests.items():
            self._metadata_request.score.add_request(param=name, alias=alias)
        return self


class NoReferenceScorer(_RoutedInputsMixin, BaseEstimator):
    """Score a fitted DIP estimator without the clean image (higher is better).

    The estimate judged is the one the early-stopping rule returned (the
    iterate at the running-variance minimum, EMV or WMV), for each image of
    ``X``; the scores are averaged over images. Scoring the fitted images
    reuses the fit (the cache is keyed on content, so the copies made by
    ``GridSearchCV`` hit it); other images are solved first.

    Parameters
    ----------
    rule : {"emv", "wmv"} or None, default=None
        Require the estimator's stopping rule to be this one (an estimator with
        ``early_stopping=None`` records a passive EMV and counts as "emv");
        None accepts any rule.
    criterion : {"auto", "discrepancy_whiteness", "discrepancy", "variance"}, \
            default="auto"
        ``"discrepancy"``: ``-|10 log10(r / sigma**2)|`` with ``r`` the mean
        squared residual of the picked estimate to the observation and
        ``sigma`` the noise level (0 dB is best). It compares across settings
        (learning rate, width, input noise, generator). Refused with a
        ``noise_model``: the sparse term absorbs part of the residual, and the
        score ranked settings backwards there.
        ``"discrepancy_whiteness"``: the discrepancy minus
        ``10 log10(9 p3 / p)``, with ``p`` the power of the residual image and
        ``p3`` that of its 3x3 local mean (about 0 dB for a white residual, more
        when image structure was left in it); it needs the residual image,
        i.e. an estimator that observes the image itself
        (:class:`~skdip.DIPDenoiser` without ``noise_model``). ``"auto"``:
        ``"discrepancy_whiteness"`` where the residual image is available,
        else ``"discrepancy"``. ``"variance"``:
        ``10 log10(sigma**2 / v)`` with ``v`` the running variance at the
        picked iteration; it favours small steps and fits that overfit without
        a valley, so it is NOT comparable across such settings (kept as the
        plain signal, e.g. to compare seeds of one setting); it needs a fit
        stopped by EMV or WMV (another rule's signal is no variance). The only
        criterion with a ``noise_model``; it ranked ``noise_model__lr``
        backwards in our checks, so do not tune that with it.
    sigma : float or None, default=None
        Noise standard deviation of ``X`` on its intensity scale, when known
        (0-255 for uint8 images; for phase retrieval, of the Fourier magnitudes,
        also when ``X`` holds intensities). None estimates it per image, on the
        patches of weak texture, with a model of the clip where pixels are
        clipped (the wavelet median absolute deviation of
        :func:`skimage.restoration.estimate_sigma`, computed without PyWavelets,
        where no patch looks like noise alone; missing pixels, NaN or hidden
        by a ``mask=`` fit parameter, are left out of the patches, and with
        too few whole 2x2 blocks observed the estimate is refused),
        which assumes additive Gaussian-like white noise on an image-like
        observation. For a
        :class:`~skdip.operators.KSpaceSampling` model whose mask samples
        whole columns (or rows), it is the part of the k-space no image
        explains, per degree of freedom (white Gaussian noise of one level in
        every coil); with too little redundancy for that (a complex image and
        one coil) the scorer warns. Pass it for other problems. A given
        sigma more than 10 times above or below the level estimated from an
        image-like observation is warned of (usually a slip of units).

    See Also
    --------
    get_scorer : scorers by name ("emv", "wmv", ...).
    ReferenceScorer : PSNR/SSIM against clean images.

    Notes
    -----
    For :class:`~skdip.DIPDenoiser` the residual is computed from the returned
    image and ``X``. For estimators with a forward operator it is the loss
    recorded at the picked iteration, which must be the MSE (the data term
    alone: a ``regularizer``'s penalty is left out); for an estimator that reports a
    pixel mask (inpainting) it is rescaled to a mean over observed pixels.
    The criterion was designed and measured on Gaussian denoising only.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPDenoiser, SkipNetwork
    >>> from skdip.metrics import NoReferenceScorer
    >>> rng = np.random.default_rng(0)
    >>> noisy = np.clip(0.5 + 0.1 * rng.standard_normal((16, 16)), 0, 1)
    >>> den = DIPDenoiser(generator=SkipNetwork(width=8, depth=2, input_channels=4),
    ...                   max_iter=10, early_stopping=None, random_state=0).fit(noisy)
    >>> score = NoReferenceScorer(rule="emv")(den, noisy)  # higher is better
    >>> discrepancy = NoReferenceScorer(rule="emv", criterion="discrepancy")(den, noisy)
    >>> discrepancy <= 0.0  # 0 dB: a residual of exactly the noise power
    True
    """

    _parameter_constraints: dict = {
        "rule": [StrOptions({"emv", "wmv"}), None],
        "criterion": [StrOptions({"auto", "discrepancy_whiteness", "discrepancy", "variance"})],
        "sigma": [Interval(Real, 0, None, closed="neither"), None],
    }

    def __init__(self, rule: str | None = None, criterion: str = "auto", sigma=None):
        self.rule = rule
        self.criterion = criterion
        self.sigma = sigma

    def _validate_params(self) -> None:
        super()._validate_params()
        # bool is an int to Python: sigma=True was taken as a noise level of 1.
        reject_bool_numbers(self)

    def score_images(self, estimator: Any, X: Any, **fit_params) -> np.ndarray:
        """Per-image scores of ``X`` (see the class description).

        Parameters
        ----------
        estimator : BaseDIPEstimator or Pipeline
            A fitted skdip estimator, or a fitted Pipeline with one.
        X : array-like
            Observation(s), as given to ``fit``.
        **fit_params
            Per-image inputs of new images (e.g. ``mask``), as for ``fit``.

        Returns
        -------
        scores : ndarray of shape (n_images,)
        """
        after = _steps_after_dip(estimator)
        if after:
            # Documented, but silent: a search over those steps' parameters scored by
            # this would tie on every one of them and pick by tie-break.
            warn(
                f"the no-reference score judges the pipeline's DIP step only: step(s) "
                f"{after} after it do not change the score, so every setting of their "
                "parameters scores the same (a search over them picks by tie-break). Score "
                "those steps with a metric of the pipeline's output (e.g. scoring=None "
                "for the last step's own score), or search them apart.",
                UserWarning,
            )
        dip, X = _dip_step(estimator, X)
        checked = dip._check_observations(X)
        if dip._reuses_fit(checked[0], fit_params):
            self._validate_params()
        else:
            self._check_can_score(dip)  # before new data is solved
        images, layout, results = dip._results_for(X, fit_params, checked, scoring=True)
        for result in results:
            # The fitted images keep the fit they had, whatever set_params did since.
            self._check_rule(result["early_stopping"], "these images were fitted with")
        return no_reference_scores(
            dip, images, results, criterion=self.criterion, sigma=self._sigmas(layout)
        )

    def _sigmas(self, layout: Any) -> list[float] | None:
        """``sigma`` per image on the scale of the checked images (None: estimated)."""
        if self.sigma is None:
            return None
        # sigma is on X's scale: 0-255 for 8-bit images, which are fitted on [0, 1].
        return [self.sigma / 255.0 if scaled else self.sigma for scaled in layout.scaled_uint8]

    def _check_can_score(self, dip: Any) -> None:
        """Refuse, from its parameters alone, an estimator this scorer cannot judge.

        Needs no fit, so callers that fit many settings check them all first.
        """
        self._validate_params()
        self._check_rule(dip.early_stopping, "the estimator uses")
        resolve_criterion(dip, self.criterion)  # e.g. the whiteness test on an inpainter

    def _check_rule(self, early_stopping: Any, whose: str) -> None:
        if self.rule is not None and _rule_kind(early_stopping) != self.rule:
            raise ValueError(
                f"this scorer judges the estimate picked by {self.rule.upper()}, but "
                f"{whose} early_stopping={early_stopping!r}; fit with "
                f"early_stopping={self.rule!r} or use a scorer with rule=None"
            )

    def __call__(self, estimator: Any, X: Any, y: Any = None, **fit_params) -> float:
        """Mean score over the images of ``X``; ``y`` is ignored.

        Parameters
        ----------
        estimator : BaseDIPEstimator or Pipeline
            A fitted skdip estimator, or a fitted Pipeline with one.
        X : array-like
            Observation(s).
        y : ignored
            Accepted for the scorer signature (labels in a Pipeline, or None).
        **fit_params
            Per-image inputs of new images (e.g. ``mask``), as for ``fit``.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_images(estimator, X, **fit_params)))


def scored_dip_step(estimator: Any) -> Any:
    """The estimator the scorers judge when ``estimator`` is searched: itself if it is
    one of skdip's, else a Pipeline's last DIP step (in nested Pipelines too); None for
    anything else (a search, another kind of estimator)."""
    step = estimator
    while not hasattr(step, "_results_for"):
        steps = getattr(step, "steps", None) or []
        positions = [i for i, (_, s) in enumerate(steps) if _holds_dip(s)]
        if not positions:
            return None
        step = steps[positions[-1]][1]
    return step


def check_search_scoring(dip: Any, scorer: Any, y: Any, searched: Any) -> None:
    """Raise what scoring ``dip`` with ``scorer`` (a cross-validation's, as scikit-learn
    holds it: one scorer, its multi-metric wrapper, or the estimator's own score) would
    raise from the parameters alone; ``y`` and ``searched``: the search's target and
    the estimator it fits (``dip`` or a Pipeline holding it)."""
    if scored_dip_step(searched) is not dip:
        return  # an inner fit of another estimator (AverageOfBest's), or an earlier step
    final = searched
    while getattr(final, "steps", None):  # a Pipeline's own score is its last step's
        final = final.steps[-1][1]
    scorers = getattr(scorer, "_scorers", None)  # scikit-learn's multi-metric wrapper
    for one in scorers.values() if isinstance(scorers, dict) else [scorer]:
        if isinstance(one, NoReferenceScorer):
            one._check_can_score(dip)
        elif type(one).__name__ == "_PassthroughScorer" and final is dip and y is None:
            # The estimator's own score without references (a Pipeline ending in it:
            # its score), the default no-reference one.
            NoReferenceScorer()._check_can_score(dip)


class ReferenceScorer(_RoutedInputsMixin, BaseEstimator):
    """Score reconstructions against clean images ``y`` (PSNR or SSIM, higher is better).

    Parameters
    ----------
    metric : {"psnr", "ssim"}, default="psnr"
        :func:`skdip.metrics.psnr` (dB) or :func:`skdip.metrics.ssim`.
    data_range : float or None, default=1.0
        Intensity range of the images: 1 for [0, 1] data and for uint8 images
        (skdip reads them on [0, 1]); 255 for float data on a 0-255 scale,
        65535 for 16-bit counts. None uses the range (max - min) of each
        reference, and 1 for a flat reference (whose range is 0). A reference
        spanning more than ``data_range`` is refused.

    Notes
    -----
    The reconstruction is scored as ``transform`` returns it. The estimator's
    own ``score(X, y)`` (``scoring=None`` in a search) clips it to the range
    the fit worked on first, and reads the range from ``y``; the two agree for
    generators with a bounded output (the default sigmoid) on [0, 1] data,
    and differ where the output leaves that range: with
    ``output_activation=None`` on a near-saturated checkerboard, 7.19 against
    6.88 dB. Use one of them throughout a comparison. Scoring a Pipeline
    whose steps after the DIP step change its output is refused.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPDenoiser, SkipNetwork
    >>> from skdip.metrics import ReferenceScorer
    >>> clean = np.tile(np.linspace(0, 1, 16), (16, 1))
    >>> noisy = np.clip(clean + 0.1 * np.random.default_rng(0).standard_normal((16, 16)), 0, 1)
    >>> den = DIPDenoiser(generator=SkipNetwork(width=8, depth=2, input_channels=4),
    ...                   max_iter=10, early_stopping=None, random_state=0).fit(noisy)
    >>> ReferenceScorer("psnr")(den, noisy, clean) > 0
    True
    """

    _parameter_constraints: dict = {
        "metric": [StrOptions({"psnr", "ssim"})],
        "data_range": [Interval(Real, 0, None, closed="neither"), None],
    }

    def __init__(self, metric: str = "psnr", data_range=1.0):
        self.metric = metric
        self.data_range = data_range

    def _validate_params(self) -> None:
        super()._validate_params()
        # bool is an int to Python: data_range=True was taken as a range of 1.
        reject_bool_numbers(self)

    def __call__(self, estimator: Any, X: Any, y: Any = None, **fit_params) -> float:
        """Mean PSNR/SSIM of the reconstructions of ``X`` against ``y``.

        Parameters
        ----------
        estimator : BaseDIPEstimator or Pipeline
            A fitted skdip estimator, or a fitted Pipeline with one.
        X : array-like
            Observation(s).
        y : array-like
            Clean image(s) in the layout of ``X``.
        **fit_params
            Per-image inputs of new images (e.g. ``mask``), as for ``fit``.

        Returns
        -------
        score : float
        """
        from .._validation import check_images, is_target_vector

        self._validate_params()
        needs_images = (
            f"the {self.metric!r} scorer needs clean reference images as y; without "
            "them use a no-reference scorer such as get_scorer('emv')"
        )
        if y is None or is_target_vector(y):
            raise ValueError(needs_images)
        after = _steps_after_dip(estimator)
        if after:
            # Scoring the DIP step's reconstruction would give every setting of those
            # steps the same score: a search over them would pick by tie-break.
            raise ValueError(
                f"the {self.metric!r} scorer compares the reconstruction of the pipeline's "
                f"DIP step with y, but step(s) {after} come after it and change the output "
                "it would not see (every setting of them would score the same). Score the "
                "pipeline up to its DIP step (e.g. pipe[:-1] when one step follows), or "
                "write a scorer of the pipeline's output with sklearn.metrics.make_scorer"
            )
        dip, X = _dip_step(estimator, X, reference=True)
        if getattr(dip, "_aligned_reference", False):
            # Phase retrieval recovers the object up to a shift, a flip and a global
            # phase: only the aligned PSNR is meaningful.
            if self.metric != "psnr":
                raise ValueError(
                    f"{type(dip).__name__} is scored by the PSNR after alignment, got "
                    f"metric={self.metric!r}"
                )
            return dip._aligned_score(X, y, self.data_range, **fit_params)
        # y is checked against X before new images are solved, not after the solve.
        first = dip.estimators_[0] if getattr(dip, "_averages_fits", False) else dip
        checked = first._check_observations(X)
        if is_target_vector(y, len(checked[0])):
            # A row of labels per image (multi-output), as the fit reads it too.
            raise ValueError(f"{needs_images} (y has a row per image: labels)")
        references, ref_layout = check_images(y, name="y")
        if self.data_range not in (None, 1) and any(
            checked[1].scaled_uint8 + ref_layout.scaled_uint8
        ):
            raise ValueError(
                "uint8 images are read on [0, 1] (divided by 255), and so are their "
                f"reconstructions: their data range is 1 (the default), not {self.data_range}"
            )
        for ref in references:
            if self.data_range is not None and float(np.ptp(ref)) > self.data_range * (1 + 1e-6):
                raise ValueError(
                    f"y spans {float(np.ptp(ref)):.6g} in intensity, more than data_range="
                    f"{self.data_range}: pass the range of the images' scale (e.g. "
                    "data_range=65535 for 16-bit counts), or data_range=None for each "
                    "reference's own range"
                )
        first._check_references_first(checked, references, ref_layout, fit_params, judge=dip)
        images, layout, results = dip._results_for(X, fit_params, checked, scoring=True)
        check_complete(results)
        metric = _psnr_metric if self.metric == "psnr" else _ssim_metric
        scores = []
        for result, ref in zip(results, references, strict=True):
            estimate = np.asarray(result["estimate"], dtype=np.float64)
            if ref.shape != estimate.shape:
                raise ValueError(
                    f"y has shape {ref.shape} but the reconstruction has {estimate.shape}"
                )
            span = self.data_range if self.data_range is not None else float(np.ptp(ref)) or 1.0
            scores.append(metric(ref, estimate, data_range=span))
        return float(np.mean(scores))


# Each name: the scorer's class and the settings the name fixes (the others keep the
# class's defaults and may be set; get_scorer refuses keywords that contradict these).
_REGISTRY = {
    "emv": (NoReferenceScorer, {"rule": "emv"}),
    "wmv": (NoReferenceScorer, {"rule": "wmv"}),
    "no_reference": (NoReferenceScorer, {}),
    "discrepancy": (NoReferenceScorer, {"criterion": "discrepancy"}),
    "emv_variance": (NoReferenceScorer, {"rule": "emv", "criterion": "variance"}),
    "wmv_variance": (NoReferenceScorer, {"rule": "wmv", "criterion": "variance"}),
    "psnr": (ReferenceScorer, {"metric": "psnr"}),
    "ssim": (ReferenceScorer, {"metric": "ssim"}),
}

#: Names accepted by :func:`get_scorer`.
SCORER_NAMES = tuple(_REGISTRY)


# The scorer's class follows the name: without these, a type checker read every
# get_scorer(...) as "NoReferenceScorer | ReferenceScorer", so get_scorer("emv").sigma or
# .score_images(...) was refused (ReferenceScorer has neither) until narrowed.
@overload
def get_scorer(
    name: Literal["emv", "wmv", "no_reference", "discrepancy", "emv_variance", "wmv_variance"],
    **params: Any,
) -> NoReferenceScorer: ...


@overload
def get_scorer(name: Literal["psnr", "ssim"], **params: Any) -> ReferenceScorer: ...


@overload
def get_scorer(name: str, **params: Any) -> NoReferenceScorer | ReferenceScorer: ...


def get_scorer(name: str, **params: Any) -> NoReferenceScorer | ReferenceScorer:
    """A skdip scorer by name, as a callable ``scorer(estimator, X, y=None) -> float``.

    Parameters
    ----------
    name : str
        One of :data:`SCORER_NAMES`: ``"emv"`` / ``"wmv"`` (no reference: the
        default criterion of :class:`NoReferenceScorer` on the estimate picked
        by that rule), ``"no_reference"`` (same, any rule), ``"discrepancy"``
        (the discrepancy alone, any rule), ``"emv_variance"`` /
        ``"wmv_variance"`` (the plain running variance, not comparable across
        settings), ``"psnr"`` / ``"ssim"`` (clean references as ``y``).
    **params
        Parameters of the scorer, e.g. ``sigma=0.1`` or ``data_range=255``;
        not against what the name sets (``get_scorer("psnr", metric="ssim")``
        and ``get_scorer("emv", rule="wmv")`` raise a ValueError).

    Returns
    -------
    scorer : NoReferenceScorer or ReferenceScorer
        A new scorer; higher is better.

    Examples
    --------
    >>> from skdip.metrics import get_scorer
    >>> get_scorer("emv")
    NoReferenceScorer(rule='emv')
    >>> get_scorer("psnr", data_range=255)
    ReferenceScorer(data_range=255)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    try:
        scorer_class, fixed = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {list(SCORER_NAMES)}") from None
    scorer = scorer_class(**fixed)
    # What the name stands for is not a default to override: get_scorer("psnr",
    # metric="ssim") returned an SSIM scorer named psnr in the caller's code.
    clashes = [f"{k}={params[k]!r}" for k in fixed if k in params and params[k] != fixed[k]]
    if clashes:
        named = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
        raise ValueError(
            f"get_scorer({name!r}) sets {named}; {', '.join(clashes)} contradicts it: "
            f"choose the scorer by its name (one of {list(SCORER_NAMES)})"
        )
    scorer.set_params(**params)
    scorer._validate_params()
    return scorer
