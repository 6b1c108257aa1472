"""One error type for a bad parameter of every public configuration object.

The estimators refuse a bad parameter in ``fit`` with scikit-learn's
``InvalidParameterError``, a ValueError and a TypeError at once. The objects users
nest in them (generators, regularizers, the sparse noise term, stopping rules) and
the selection rules and scorers refuse theirs with it too, each when it validates
(at build, at the first penalty, at the start of a fit), in a message that names
the class and the parameter.
"""

import re
import reprlib

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

import skdip
import skdip.estimators
import skdip.generators
import skdip.losses
import skdip.metrics
import skdip.model_selection
import skdip.stopping
from skdip import (
    BlindDeblurrer,
    DIPDeconvolver,
    DIPDenoiser,
    DIPReconstructor,
    DiscrepancyPrinciple,
    ExponentialMovingVariance,
    GradientRatio,
    HIOPhaseRetriever,
    NoiseLevelDeadline,
    PhaseRetriever,
    SelfValidation,
    SkipNetwork,
    SparseNoise,
    TotalVariation,
    WindowedMovingVariance,
)
from skdip.generators import (
    ConvDecoder,
    DeepDecoder,
    DeepRandomProjector,
    ImplicitNeuralRepresentation,
)
from skdip.losses import BaseRegularizer
from skdip.metrics import NoReferenceScorer, ReferenceScorer
from skdip.model_selection import AverageOfBest, FitImagesCV, PreferDefault
from skdip.operators import (
    Convolution,
    Downsample,
    FourierMagnitude,
    FunctionOperator,
    KSpaceSampling,
    PixelMask,
)
from skdip.stopping import BaseStoppingRule

_IMAGE = np.random.default_rng(0).random((8, 8))


def _build(generator):
    generator.build((8, 8), 1, seed=0)


def _penalise(regularizer):
    regularizer(torch.zeros(1, 1, 4, 4))


def _fit_with_noise_model(noise):
    DIPDenoiser(noise_model=noise, max_iter=1, early_stopping=None).fit(_IMAGE)


def _start(rule):
    rule.start()


def _select(rule):
    rule.select([{"lr": 0.01}, {"lr": 0.1}], [0.0, 1.0])


def _score_params(scorer):
    scorer._validate_params()


def _fit_average(average):
    average.fit(_IMAGE)


def _average(**params):
    return AverageOfBest(DIPDenoiser(max_iter=1), {"lr": [0.01]}, **params)


INR = ImplicitNeuralRepresentation


def _fourier(**params):
    return INR(encoding="fourier", **params)


def _prefer(**params):
    return PreferDefault(**{"default": 0, **params})


# (class name, make an object with one parameter set, what validates it, parameter,
# bad values: one of the wrong type, then, where the type leaves room for one, one of
# the right type that is refused, and a bool where a number is wanted but no case
# above has one)
CASES = [
    ("SkipNetwork", SkipNetwork, _build, "width", (2.5, 0)),
    ("SkipNetwork", SkipNetwork, _build, "depth", (True, 0)),
    ("SkipNetwork", SkipNetwork, _build, "skip_channels", ("4", -1)),
    ("SkipNetwork", SkipNetwork, _build, "input_channels", (None, 0)),
    ("SkipNetwork", SkipNetwork, _build, "input_scale", ("0.1", 0.0)),
    ("SkipNetwork", SkipNetwork, _build, "upsample", (3, "cubic")),
    ("SkipNetwork", SkipNetwork, _build, "output_activation", (["sigmoid"], "swish")),
    ("DeepRandomProjector", DeepRandomProjector, _build, "width", (2.5, 0)),
    ("DeepRandomProjector", DeepRandomProjector, _build, "depth", (1.0, 0)),
    ("DeepRandomProjector", DeepRandomProjector, _build, "skip_channels", (None, -1)),
    ("DeepRandomProjector", DeepRandomProjector, _build, "input_channels", (1.5, 0)),
    ("DeepRandomProjector", DeepRandomProjector, _build, "input_scale", (None, -1.0)),
    ("DeepRandomProjector", DeepRandomProjector, _build, "upsample", (None, "cubic")),
    ("DeepRandomProjector", DeepRandomProjector, _build, "output_activation", (1, "swish")),
    ("DeepDecoder", DeepDecoder, _build, "channels", (2.5, 0)),
    ("DeepDecoder", DeepDecoder, _build, "n_blocks", (True, 0)),
    ("DeepDecoder", DeepDecoder, _build, "input_scale", ("0.1", 0.0)),
    ("DeepDecoder", DeepDecoder, _build, "upsample", (3, "cubic")),
    ("DeepDecoder", DeepDecoder, _build, "output_activation", (1, "swish")),
    ("ConvDecoder", ConvDecoder, _build, "channels", (2.5, 0)),
    ("ConvDecoder", ConvDecoder, _build, "n_layers", (True, 1)),
    ("ConvDecoder", ConvDecoder, _build, "input_size", ("8", 0)),
    ("ConvDecoder", ConvDecoder, _build, "output_activation", (1, "swish")),
    ("ImplicitNeuralRepresentation", INR, _build, "hidden", (2.5, 0)),
    ("ImplicitNeuralRepresentation", INR, _build, "n_layers", (True, 0)),
    ("ImplicitNeuralRepresentation", INR, _build, "encoding", (1, "relu")),
    ("ImplicitNeuralRepresentation", INR, _build, "omega0", ("30", 0.0)),
    ("ImplicitNeuralRepresentation", _fourier, _build, "n_frequencies", (2.5, 0)),
    ("ImplicitNeuralRepresentation", _fourier, _build, "scale", ("5", -1.0)),
    ("ImplicitNeuralRepresentation", INR, _build, "output_activation", (1, "swish")),
    ("BaseRegularizer", BaseRegularizer, _penalise, "weight", ("0.1", -1.0)),
    ("TotalVariation", TotalVariation, _penalise, "weight", (None, np.inf)),
    ("TotalVariation", TotalVariation, _penalise, "isotropic", (1, "yes")),
    ("GradientRatio", GradientRatio, _penalise, "weight", ("0.1", -1.0)),
    ("GradientRatio", GradientRatio, _penalise, "eps", (None, 0.0)),
    ("SparseNoise", SparseNoise, _fit_with_noise_model, "lr", ("0.03", 0.0)),
    ("SparseNoise", SparseNoise, _fit_with_noise_model, "init_std", (None, -1.0)),
    ("BaseStoppingRule", BaseStoppingRule, _start, "patience", (1.5, 0)),
    ("BaseStoppingRule", BaseStoppingRule, _start, "warmup", (None, -1)),
    ("ExponentialMovingVariance", ExponentialMovingVariance, _start, "alpha", ("0.1", 1.0)),
    ("ExponentialMovingVariance", ExponentialMovingVariance, _start, "patience", (True, 0)),
    ("ExponentialMovingVariance", ExponentialMovingVariance, _start, "warmup", (1.5, -1)),
    ("WindowedMovingVariance", WindowedMovingVariance, _start, "window", (2.5, 1)),
    ("DiscrepancyPrinciple", DiscrepancyPrinciple, _start, "tau", ("1", 0.0)),
    ("DiscrepancyPrinciple", DiscrepancyPrinciple, _start, "noise_var", (True, -0.01)),
    ("DiscrepancyPrinciple", DiscrepancyPrinciple, _start, "patience", (1.5, 0)),
    ("NoiseLevelDeadline", NoiseLevelDeadline, _start, "rule", ("emv", 1.0)),
    ("NoiseLevelDeadline", NoiseLevelDeadline, _start, "tau", ("1", 0.0)),
    ("NoiseLevelDeadline", NoiseLevelDeadline, _start, "noise_var", (True, -0.01)),
    ("NoiseLevelDeadline", NoiseLevelDeadline, _start, "patience", (1.5, 0)),
    ("SelfValidation", SelfValidation, _start, "lr", ("1e-3", 0.0)),
    ("SelfValidation", SelfValidation, _start, "batch_size", (True, 1)),
    ("SelfValidation", SelfValidation, _start, "width", (1.5, 0)),
    ("SelfValidation", SelfValidation, _start, "random_state", (None, -1)),
    ("PreferDefault", _prefer, _select, "default", ("lr", {}, -1)),
    ("PreferDefault", _prefer, _select, "margin", ("1", -0.1)),
    ("PreferDefault", _prefer, _select, "metric", (3,)),  # any name, until a search's
    ("NoReferenceScorer", NoReferenceScorer, _score_params, "rule", (1, "ema")),
    ("NoReferenceScorer", NoReferenceScorer, _score_params, "criterion", (None, "best")),
    ("NoReferenceScorer", NoReferenceScorer, _score_params, "sigma", ("0.1", 0.0, True)),
    ("ReferenceScorer", ReferenceScorer, _score_params, "metric", (1, "mse")),
    ("ReferenceScorer", ReferenceScorer, _score_params, "data_range", ("1", 0.0, True)),
    ("AverageOfBest", _average, _fit_average, "n_best", (1.5, 0)),
    ("AverageOfBest", _average, _fit_average, "margin", ("1", -1.0)),
    ("AverageOfBest", _average, _fit_average, "default", ("lr", {})),
    ("AverageOfBest", _average, _fit_average, "max_distance", ("1", np.nan)),
    ("AverageOfBest", _average, _fit_average, "batch_size", (1.5, 0)),
]

PARAMS = [
    pytest.param(owner, make, validate, name, value, id=f"{owner}.{name}={value!r}")
    for owner, make, validate, name, values in CASES
    for value in values
]


def _with(cls, **required):
    """``cls`` made with ``required`` settings unless the case sets them."""
    return lambda **params: cls(**{**required, **params})


_EYE = np.eye(4)

# The forward operators check their settings when made (and when set, which rebuilds
# them): (class name, make, setting, bad values: a wrong type, then refused values).
# A mismatch with the data of a call (an image of another shape than the mask) is no
# bad setting: it stays a ValueError (tests/test_operators.py).
OPERATOR_CASES = [
    ("Downsample", Downsample, "factor", (2.0, True, 0)),
    ("Downsample", _with(Downsample, factor=2), "kernel", (1, "nearest")),
    ("Downsample", _with(Downsample, factor=2), "padding", (None, "wrap")),
    ("Convolution", Convolution, "kernel", ("box", np.full((3, 3), np.nan), np.ones(3))),
    ("Convolution", Convolution, "kernel", (np.zeros((3, 3)), np.ones((3, 3), complex))),
    ("Convolution", _with(Convolution, kernel=np.ones((3, 3))), "boundary", (1, "same")),
    ("PixelMask", PixelMask, "mask", ("mask", np.full((4, 4), 0.5), np.zeros((4, 4)))),
    ("PixelMask", PixelMask, "mask", (np.ones((1, 4, 4, 1)),)),
    ("KSpaceSampling", KSpaceSampling, "mask", (None, 2 * _EYE, np.zeros(4))),
    ("KSpaceSampling", _with(KSpaceSampling, mask=_EYE), "coil_maps", ("maps", np.ones((2, 3, 3)))),
    ("KSpaceSampling", _with(KSpaceSampling, mask=_EYE), "image", (2, "cplx")),
    ("FourierMagnitude", FourierMagnitude, "oversampling", (2.5, 1)),
    ("FourierMagnitude", FourierMagnitude, "measurement", (1, "Intensity")),
    ("FourierMagnitude", FourierMagnitude, "n_masks", (1.5, -1)),
    ("FourierMagnitude", _with(FourierMagnitude, n_masks=1), "mask_seed", ("3", -1, 2**32)),
    ("FourierMagnitude", FourierMagnitude, "masks", (np.full((2, 4, 4), "a"), np.ones(4))),
    ("FourierMagnitude", FourierMagnitude, "masks", (np.full((2, 4, 4), np.nan),)),
    # The masks' number against n_masks: named as n_masks.
    ("FourierMagnitude", _with(FourierMagnitude, masks=np.ones((2, 4, 4))), "n_masks", (3,)),
    ("FunctionOperator", FunctionOperator, "function", (3,)),
    ("FunctionOperator", _with(FunctionOperator, function=abs), "output_shape", ("same",)),
    ("FunctionOperator", _with(FunctionOperator, function=abs), "input_shape", (3,)),
    ("FunctionOperator", _with(FunctionOperator, function=abs), "input_channels", (1.5, 0)),
    ("FunctionOperator", _with(FunctionOperator, function=abs), "linear", ("yes", 1)),
    # An adjoint of an operator not declared linear: named as the adjoint.
    ("FunctionOperator", _with(FunctionOperator, function=abs), "adjoint", (3, abs)),
]

OPERATOR_PARAMS = [
    pytest.param(owner, make, name, value, id=f"{owner}.{name}={reprlib.repr(value)}")
    for owner, make, name, values in OPERATOR_CASES
    for value in values
]


def _names(owner: str, name: str) -> str:
    """A message naming the class and the parameter, in the estimators' words
    ("The 'width' parameter of SkipNetwork ...") or as "SkipNetwork.width"."""
    return rf"'{name}' parameter of {owner}\b|\b{owner}\.{name}\b"


@pytest.mark.parametrize(("owner", "make", "validate", "name", "value"), PARAMS)
def test_a_bad_parameter_raises_invalid_parameter_error_naming_it(
    owner, make, validate, name, value
):
    obj = make(**{name: value})
    with pytest.raises(InvalidParameterError, match=_names(owner, name)) as info:
        validate(obj)
    # So that a caller's handler of either kind, as they were raised before, still catches it.
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize(("owner", "make", "name", "value"), OPERATOR_PARAMS)
def test_an_operators_bad_setting_raises_invalid_parameter_error_naming_it(
    owner, make, name, value
):
    # Plain ValueErrors and TypeErrors without the class name before ("factor must be a
    # positive int, got 0"), where every other configuration object named both.
    with pytest.raises(InvalidParameterError, match=_names(owner, name)):
        make(**{name: value})


def test_an_operators_setting_set_or_assigned_is_refused_alike():
    op = Downsample(2)
    with pytest.raises(InvalidParameterError, match=_names("Downsample", "factor")):
        op.set_params(factor=0)
    with pytest.raises(InvalidParameterError, match=_names("Downsample", "kernel")):
        op.kernel = "nearest"
    assert op.get_params() == {"factor": 2, "kernel": "lanczos2", "padding": "replicate"}


def test_a_grid_search_raises_the_operators_error():
    # A bad operator__factor came out of GridSearchCV as a plain ValueError.
    est = DIPReconstructor(
        operator=Downsample(2),
        generator=SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1),
        max_iter=1,
        early_stopping=None,
    )
    search = GridSearchCV(
        est, {"operator__factor": [2, 0]}, cv=FitImagesCV(), error_score="raise", refit=False
    )
    with pytest.raises(InvalidParameterError, match=re.escape("Downsample.factor")):
        search.fit(_IMAGE[None, ..., None])


def test_functions_that_build_an_operator_name_their_own_arguments():
    # Not the operator's settings, which their caller never made: plain errors, as before.
    from skdip.datasets import simulate_diffraction, simulate_kspace

    with pytest.raises(ValueError, match="^mask must contain only 0/1") as info:
        simulate_kspace(np.ones((4, 4)), 2 * _EYE)
    assert not isinstance(info.value, InvalidParameterError)
    with pytest.raises(ValueError, match="^coil_maps have spatial shape") as info:
        simulate_kspace(np.ones((4, 4)), _EYE, np.ones((2, 3, 3)))
    assert not isinstance(info.value, InvalidParameterError)
    for kwargs, match in [({"n_masks": -1}, "^n_masks must"), ({"mask_seed": 1.5}, "^mask_seed")]:
        with pytest.raises((ValueError, TypeError), match=match) as info:
            simulate_diffraction(np.ones((4, 4)), **kwargs)
        assert not isinstance(info.value, InvalidParameterError)


def test_every_public_configuration_class_is_covered():
    covered = {owner for owner, *_ in CASES} | {owner for owner, *_ in OPERATOR_CASES}
    modules = (skdip, skdip.estimators, skdip.generators, skdip.losses, skdip.metrics)
    modules += (skdip.model_selection, skdip.operators, skdip.stopping)
    public = {
        name
        for module in modules
        for name in module.__all__
        if isinstance(getattr(module, name), type)
        and "__init__" in vars(getattr(module, name))  # takes parameters of its own
    }
    estimators = {name for name in public if name.startswith(("DIP", "Blind")) or "Phase" in name}
    # The estimators have scikit-learn's own checks (tests/test_sklearn_compat.py).
    assert public - estimators - covered == set()


@pytest.mark.parametrize(
    ("params", "owner", "name"),
    [
        ({"generator": SkipNetwork(width=-1)}, "SkipNetwork", "width"),
        ({"generator": DeepDecoder(upsample="cubic")}, "DeepDecoder", "upsample"),
        ({"regularizer": TotalVariation(weight=-1.0)}, "TotalVariation", "weight"),
        ({"noise_model": SparseNoise(lr=0)}, "SparseNoise", "lr"),
        (
            {"early_stopping": ExponentialMovingVariance(alpha=2.0)},
            "ExponentialMovingVariance",
            "alpha",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_estimator_with_a_bad_nested_setting_fails_in_fit_naming_it(params, owner, name):
    den = DIPDenoiser(max_iter=2, **params)
    with pytest.raises(InvalidParameterError, match=_names(owner, name)):
        den.fit(_IMAGE)


def test_a_grid_search_raises_the_nested_settings_error():
    den = DIPDenoiser(
        generator=SkipNetwork(width=4, depth=2, input_channels=2), max_iter=2, early_stopping=None
    )
    search = GridSearchCV(
        den, {"generator__width": [4, -1]}, cv=FitImagesCV(), error_score="raise", refit=False
    )
    with pytest.raises(InvalidParameterError, match=re.escape("SkipNetwork.width")):
        search.fit(_IMAGE[None, ..., None])


@pytest.mark.parametrize(
    ("make", "owner", "name"),
    [
        (lambda: DIPDenoiser(generator="unet"), "DIPDenoiser", "generator"),
        (lambda: BlindDeblurrer(kernel_size=(0, 3)), "BlindDeblurrer", "kernel_size"),
        (lambda: BlindDeblurrer(kernel_size=(2.5, 3)), "BlindDeblurrer", "kernel_size"),
        (lambda: DIPReconstructor(output_shape=(8, 0)), "DIPReconstructor", "output_shape"),
        (lambda: DIPReconstructor(output_shape=(8,)), "DIPReconstructor", "output_shape"),
        (lambda: PhaseRetriever(oversampling=(2, 1)), "PhaseRetriever", "oversampling"),
        (lambda: PhaseRetriever(oversampling=[2, 2.0]), "PhaseRetriever", "oversampling"),
        (lambda: HIOPhaseRetriever(oversampling=(1, 2)), "HIOPhaseRetriever", "oversampling"),
        (lambda: PhaseRetriever(n_masks=1, mask_seed=2**32), "PhaseRetriever", "mask_seed"),
        (lambda: HIOPhaseRetriever(n_masks=1, mask_seed=2**32), "HIOPhaseRetriever", "mask_seed"),
        (lambda: PhaseRetriever(init=DIPDenoiser()), "PhaseRetriever", "init"),
        # Refused as the estimator's kernel, not as the Convolution it builds.
        (lambda: DIPDeconvolver(kernel=np.full((3, 3), np.nan)), "DIPDeconvolver", "kernel"),
        (lambda: DIPDeconvolver(kernel=np.zeros((3, 3))), "DIPDeconvolver", "kernel"),
        (lambda: DIPDeconvolver(kernel=np.ones(3)), "DIPDeconvolver", "kernel"),
        # The masks as such; their shape against the object's is the data's (ValueError).
        (lambda: PhaseRetriever(masks=np.full((2, 4, 4), np.nan)), "PhaseRetriever", "masks"),
        (lambda: PhaseRetriever(masks=np.ones((2, 4, 4, 1))), "PhaseRetriever", "masks"),
        (lambda: HIOPhaseRetriever(masks=np.full((2, 4, 4), "a")), "HIOPhaseRetriever", "masks"),
        (
            lambda: HIOPhaseRetriever(masks=np.ones((2, 4, 4)), n_masks=3),
            "HIOPhaseRetriever",
            "n_masks",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_estimators_parameter_checked_beyond_its_constraints_is_refused_alike(make, owner, name):
    # The constraints leave a pair's items, a seed's upper bound, a generator's name and
    # init's kind to checks of their own: those raise the constraints' error too.
    with pytest.raises(InvalidParameterError, match=_names(owner, name)):
        make().set_params(max_iter=1).fit(np.ones((8, 8)))
