"""A user's code on skdip's public API, for a type checker (tests/test_typing.py).

skdip ships its annotations (``skdip/py.typed``), so what mypy or pyright make of them
is what its users see. This module calls the API as README.md, doc/ and examples/ do;
``assert_type`` pins the types a user relies on. mypy --strict must find no error here.
The functions are never called: importing this module (pytest's doctest collection
does) runs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, cross_validate
from torch import nn

import skdip
from skdip import (
    BlindDeblurrer,
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    DIPSuperResolver,
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
from skdip.datasets import (
    add_gaussian_noise,
    add_impulse_noise,
    add_noise,
    add_poisson_noise,
    add_speckle_noise,
    blur,
    cartesian_mask,
    load_image,
    make_coil_maps,
    make_disk_kernel,
    make_gaussian_kernel,
    make_motion_kernel,
    simulate_diffraction,
    simulate_kspace,
)
from skdip.exceptions import FitInterrupted, NothingToAverage
from skdip.generators import (
    BaseGenerator,
    ConvDecoder,
    DeepDecoder,
    DeepRandomProjector,
    GeneratorNetwork,
    ImplicitNeuralRepresentation,
    get_generator,
)
from skdip.losses import BaseRegularizer, get_loss
from skdip.metrics import (
    SCORER_NAMES,
    NoReferenceScorer,
    ReferenceScorer,
    align_phase_retrieval,
    align_shift,
    aligned_psnr,
    aligned_ssim,
    get_scorer,
    kernel_error,
    phase_retrieval_error,
    phase_retrieval_psnr,
    psnr,
    ssim,
)
from skdip.model_selection import (
    AverageOfBest,
    FitImagesCV,
    PerImageCV,
    PreferDefault,
    best_params_per_image,
    best_scored,
    fit_candidates,
)
from skdip.operators import (
    Convolution,
    Downsample,
    ForwardOperator,
    FourierMagnitude,
    FunctionOperator,
    Identity,
    KSpaceSampling,
    PixelMask,
    channels_to_kspace,
    downsampling_kernel,
    kspace_to_channels,
    make_phase_masks,
)
from skdip.stopping import BaseStoppingRule, get_stopping_rule

if TYPE_CHECKING:
    # typing.assert_type needs Python 3.11; the checker reads this one on 3.10 too.
    from typing_extensions import assert_type


def denoise(noisy: np.ndarray, clean: np.ndarray) -> None:
    den = DIPDenoiser(generator="skip-small", early_stopping="emv", random_state=0)
    # fit returns the estimator itself, as its own type: its attributes stay checked.
    assert_type(den.fit(noisy), DIPDenoiser)
    assert_type(den.fit(noisy, clean), DIPDenoiser)
    x_hat = den.fit(noisy).transform()  # the README's first example
    restored = den.fit_transform(noisy)
    print(psnr(clean, np.clip(restored, 0, 1)), x_hat)
    print(den.transform(noisy))
    batch = den.fit_transform([noisy, noisy])  # a list in: a list out
    print(len(batch), den.best_iter_, den.n_iter_, den.stopped_by_, den.history_)
    print(den.loss_curve_, den.reconstruction_, den.n_images_)
    assert_type(den.score(noisy), float)
    assert_type(den.score(noisy, clean), float)
    assert_type(den.set_params(lr=0.02, max_iter=100), DIPDenoiser)
    assert_type(den.set_output(transform="default"), DIPDenoiser)
    params: dict[str, Any] = den.get_params()
    print(params)
    sparse = DIPDenoiser(noise_model=SparseNoise(lr=0.1), regularizer=TotalVariation(0.01))
    print(sparse.fit(noisy).sparse_noise_)


def inverse_problems(image: np.ndarray, mask: np.ndarray, kernel: np.ndarray) -> None:
    inp = DIPInpainter(keep_observed=True, max_iter=100)
    assert_type(inp.fit(image, mask=mask), DIPInpainter)
    print(inp.transform(image, mask=mask))
    print(inp.fit_transform(image, mask=mask))
    assert_type(inp.score(image, mask=mask), float)
    print(inp.mask_)
    sr = DIPSuperResolver(scale=2, kernel="lanczos2")
    assert_type(sr.fit(image), DIPSuperResolver)
    print(sr.fit_transform(image))
    dec = DIPDeconvolver(kernel=kernel, boundary="circular")
    print(dec.fit_transform(image))
    assert_type(dec.set_params(max_iter=10), DIPDeconvolver)
    rec = DIPReconstructor(operator=Downsample(2), output_shape=(16, 16), output_channels=1)
    assert_type(rec.fit(image), DIPReconstructor)
    print(rec.fit_transform(image))
    print(rec.transform(image))
    assert_type(rec.score(image), float)
    bd = BlindDeblurrer(kernel_size=(9, 9), max_iter=100, random_state=0)
    assert_type(bd.fit(image), BlindDeblurrer)
    print(bd.kernel_, bd.kernel_full_, bd.kernel_size_)
    print(kernel_error(kernel, bd.kernel_) < 0.5, aligned_psnr(image, bd.transform()))
    error, shift = kernel_error(kernel, bd.kernel_, return_shift=True)
    print(error, shift[0])


def phase(measured: np.ndarray, obj: np.ndarray) -> None:
    pr = PhaseRetriever(oversampling=2, n_init=1, random_state=0)
    assert_type(pr.fit(measured), PhaseRetriever)
    print(pr.fit_transform(measured))
    print(pr.transform(measured))
    assert_type(pr.score(measured, obj), float)
    assert_type(pr.set_params(max_iter=10), PhaseRetriever)
    hio = HIOPhaseRetriever(oversampling=2, beta=0.9, max_iter=100, random_state=0)
    assert_type(hio.fit(measured), HIOPhaseRetriever)
    print(hio.fit_transform(measured))
    print(hio.transform(measured))
    assert_type(hio.score(measured), float)
    print(hio.support_, hio.fourier_error_, hio.restart_errors_)
    print(PhaseRetriever(init=HIOPhaseRetriever(n_init=4)).fit(measured).restart_losses_)
    aligned = align_phase_retrieval(obj, pr.transform())
    assert_type(aligned, np.ndarray)
    aligned, found = align_phase_retrieval(obj, pr.transform(), return_params=True)
    print(aligned.shape, found, phase_retrieval_error(obj, aligned))
    assert_type(phase_retrieval_psnr(obj, aligned), float)


def networks_and_rules(x: torch.Tensor) -> None:
    net = SkipNetwork(width=8, depth=2, skip_channels=2, input_channels=4).build((8, 8), 1)
    assert_type(net, GeneratorNetwork)
    assert_type(net.n_parameters(), int)
    assert_type(net.input, torch.Tensor)  # the code z (GeneratorNetwork's docstring)
    perturbed = net.input + 0.05 * torch.randn_like(net.input)
    assert_type(net(perturbed), torch.Tensor)  # calling the module runs forward
    print(net(perturbed).shape, net.out_shape, net.out_channels)
    for generator in (DeepDecoder(), ConvDecoder(), ImplicitNeuralRepresentation()):
        print(generator.build((8, 8), 3, seed=0))
    assert_type(get_generator("skip-small"), BaseGenerator)
    print(DeepRandomProjector(width=8))
    assert_type(get_loss("mse")(x, x), torch.Tensor)
    assert_type(TotalVariation(weight=0.1, isotropic=True).penalty(x), torch.Tensor)
    assert_type(GradientRatio(weight=1e-3).penalty(x), torch.Tensor)
    rules: list[BaseStoppingRule] = [
        ExponentialMovingVariance(alpha=0.1, patience=10),
        WindowedMovingVariance(window=5, patience=10),
        SelfValidation(window=16, patience=10),
    ]
    for rule in rules:
        rule.start()
        value = rule.signal(x, 0)
        if value is not None:
            stop, best = rule.observe(float(value), 0)
            print(stop, best)
    print(get_stopping_rule("wmv"), DIPDenoiser(early_stopping=rules[0]))


def operators(x: torch.Tensor, mask: np.ndarray, kernel: np.ndarray) -> None:
    conv = Convolution(kernel, boundary="valid")
    assert_type(conv.forward(x), torch.Tensor)
    assert_type(conv(x), torch.Tensor)  # calling the module runs forward
    assert_type(conv.adjoint(x), torch.Tensor)
    assert_type(conv.output_shape((8, 8)), tuple[int, int])
    assert_type(conv.input_shape((6, 6)), tuple[int, int])
    assert_type(Downsample(2, kernel="box").output_shape((8, 8)), tuple[int, int])
    assert_type(PixelMask(mask).forward(x), torch.Tensor)
    assert_type(Identity().forward(x), torch.Tensor)
    kspace = KSpaceSampling(cartesian_mask((8, 8)), coil_maps=make_coil_maps(2, (8, 8)))
    assert_type(kspace.zero_filled(np.zeros((8, 8, 4))), np.ndarray)
    assert_type(kspace.input_channels(4), int)
    magnitude = FourierMagnitude(oversampling=2, measurement="intensity", n_masks=2)
    assert_type(magnitude.spectrum(x), torch.Tensor)
    double = FunctionOperator(
        lambda t: 2 * t,
        adjoint=lambda t: 2 * t,
        output_shape=lambda shape: shape,
        linear=True,
    )
    assert_type(double.forward(x), torch.Tensor)
    taps, pad = downsampling_kernel(2)
    print(taps.shape, pad + 1, make_phase_masks(2, (8, 8)).shape)
    assert_type(kspace_to_channels(np.zeros((8, 8), complex)), np.ndarray)
    assert_type(channels_to_kspace(np.zeros((8, 8, 2))), np.ndarray)


def data_and_metrics(clean: np.ndarray) -> None:
    image = load_image("camera", size=32, as_gray=True)
    assert_type(image, np.ndarray)
    assert_type(add_gaussian_noise(image, 25 / 255, random_state=0), np.ndarray)
    assert_type(add_noise(image, "poisson", 30.0, random_state=0), np.ndarray)
    for noisy in (
        add_impulse_noise(image, 0.1),
        add_poisson_noise(image, 30.0),
        add_speckle_noise(image, 0.1),
        blur(image, make_gaussian_kernel(5, 1.0), mode="same"),
        blur(image, make_disk_kernel(5, 2.0)),
        blur(image, make_motion_kernel(9, random_state=0, length=0.5)),
    ):
        assert_type(psnr(clean, noisy), float)
        assert_type(ssim(clean, noisy, data_range=1.0), float)
        assert_type(aligned_ssim(clean, noisy, max_shift=2), float)
        assert_type(align_shift(clean, noisy), tuple[int, int])
    mask = cartesian_mask(image.shape, acceleration=4, random_state=0)
    assert_type(simulate_kspace(image, mask, noise_std=0.01), np.ndarray)
    assert_type(simulate_diffraction(image, oversampling=2, photons=1e4), np.ndarray)


def model_selection(images: list[np.ndarray], noisy: np.ndarray) -> None:
    grid = {"lr": [0.01, 0.03]}
    search = GridSearchCV(DIPDenoiser(max_iter=100), grid, cv=PerImageCV(), refit=False)
    search.fit(images)
    print(FitImagesCV().get_n_splits(images), list(PerImageCV().split(images)))
    prefer = PreferDefault({"lr": 0.01}, margin=1.0)
    assert_type(
        prefer.select(search.cv_results_["params"], search.cv_results_["mean_test_score"]), int
    )
    assert_type(best_params_per_image(search, prefer=prefer), list[dict[Any, Any]])
    picked = best_scored(np.array([1.0, 2.0, 0.5]), n_best=2, margin=1.0)
    assert_type(picked, np.ndarray)
    fitted = fit_candidates(DIPDenoiser(max_iter=10), noisy, [{"lr": 0.01}, {"lr": 0.03}])
    print(len(fitted))
    avg = AverageOfBest(DIPDenoiser(max_iter=100), grid, n_best=2, margin=1.0)
    assert_type(avg.fit(noisy), AverageOfBest)
    print(avg.fit_transform(noisy))
    print(avg.transform(noisy))
    assert_type(avg.score(noisy), float)
    assert_type(avg.set_params(n_best=1), AverageOfBest)
    print(avg.scores_, avg.selected_, avg.estimators_, avg.reconstruction_)
    try:
        DIPDenoiser().fit(noisy).score(noisy)
    except FitInterrupted as interrupted:
        print(interrupted)
    # doc/model_selection.md: when AverageOfBest fails, its fits come with the error.
    try:
        avg.fit(noisy)
    except NothingToAverage as failed:
        assert_type(failed.estimators, list[Any])
        print(get_scorer("discrepancy", sigma=0.1).score_images(failed.estimators[0], noisy))
    except FitInterrupted as interrupted:
        assert_type(interrupted.estimators, list[Any] | None)
        print([est.stopped_by_ for est in interrupted.estimators or []])
    print(skdip.__version__.split("."))


def scorers(noisy: np.ndarray, clean: np.ndarray, images: list[np.ndarray]) -> None:
    den = DIPDenoiser(max_iter=100).fit(noisy)
    # The scorer's class follows its name.
    emv = get_scorer("emv", sigma=0.1)
    assert_type(emv, NoReferenceScorer)
    assert_type(emv(den, noisy), float)
    assert_type(emv.score_images(den, noisy), np.ndarray)
    print(emv.rule, emv.criterion, emv.sigma)
    assert_type(get_scorer("wmv"), NoReferenceScorer)
    assert_type(get_scorer("no_reference"), NoReferenceScorer)
    assert_type(get_scorer("discrepancy"), NoReferenceScorer)
    assert_type(get_scorer("emv_variance"), NoReferenceScorer)
    assert_type(get_scorer("wmv_variance"), NoReferenceScorer)
    reference = get_scorer("psnr", data_range=1.0)
    assert_type(reference, ReferenceScorer)
    assert_type(reference(den, noisy, clean), float)
    print(reference.metric, reference.data_range)
    assert_type(get_scorer("ssim"), ReferenceScorer)
    for name in SCORER_NAMES:  # a name known at run time only: either class
        scorer = get_scorer(name)
        assert_type(scorer, NoReferenceScorer | ReferenceScorer)
        print(scorer(den, noisy))
    grid = {"lr": [0.01, 0.03]}
    scoring = {"emv": get_scorer("emv"), "psnr": get_scorer("psnr")}
    search = GridSearchCV(DIPDenoiser(), grid, cv=FitImagesCV(), scoring=scoring, refit="emv")
    search.fit(images)
    print(AverageOfBest(DIPDenoiser(), grid, scoring=get_scorer("wmv")).fit(noisy).scores_)
    # doc/model_selection.md, metadata routing of the inpainter's masks.
    masks = [np.ones(image.shape, bool) for image in images]
    inpainter = DIPInpainter().set_fit_request(mask=True).set_score_request(mask=True)
    routed = get_scorer("emv").set_score_request(mask=True)
    assert_type(routed, NoReferenceScorer)
    assert_type(get_scorer("psnr").set_score_request(mask="masks"), ReferenceScorer)
    cross_validate(inpainter, images, params={"mask": masks}, scoring=routed)
    print(AverageOfBest(DIPInpainter(), grid).get_metadata_routing())


def numpy_scalars(noisy: np.ndarray, clean: np.ndarray, x: torch.Tensor) -> None:
    # A sweep over np.arange or np.linspace, or a ParameterGrid over an array, hands out
    # NumPy scalars; the numeric parameters take them (np.float64 is a float, but
    # np.float32 and the NumPy integers are not, to a type checker).
    for n in np.arange(10, 100, 10):
        for rate in np.array([0.01, 0.03], dtype=np.float32):
            print(
                DIPDenoiser(max_iter=n, lr=rate, batch_size=np.int64(1)),
                DIPInpainter(max_iter=n, lr=rate),
                DIPSuperResolver(scale=np.int64(2), max_iter=n, lr=rate),
                DIPDeconvolver(max_iter=n, lr=rate, reg_noise_std=np.float32(0.0)),
                DIPReconstructor(max_iter=n, lr=rate, output_averaging=np.float32(0.9)),
                BlindDeblurrer(max_iter=n, lr=rate, kernel_lr=rate),
                PhaseRetriever(max_iter=n, lr=rate, n_init=np.int32(2)),
                HIOPhaseRetriever(max_iter=n, beta=np.float32(0.9), n_er=np.int64(10)),
                SparseNoise(lr=rate, init_std=np.float32(1e-5)),
            )
    print(SkipNetwork(width=np.int64(8), depth=np.int32(2), input_scale=np.float32(0.1)))
    print(DeepDecoder(channels=np.int64(8)), ConvDecoder(n_layers=np.int64(3)))
    print(ImplicitNeuralRepresentation(hidden=np.int64(8), omega0=np.float32(30.0)))
    print(DeepRandomProjector(width=np.int64(8)), Downsample(np.int64(2)))
    print(FourierMagnitude(n_masks=np.int64(2), mask_seed=np.int64(0)))
    print(ExponentialMovingVariance(alpha=np.float32(0.1), patience=np.int64(10)))
    print(WindowedMovingVariance(window=np.int64(5), warmup=np.int64(0)))
    print(SelfValidation(window=np.int64(16), lr=np.float32(1e-3)))
    print(DiscrepancyPrinciple(tau=np.float32(1.1), noise_var=None, patience=np.int64(100)))
    print(DIPDenoiser(early_stopping=DiscrepancyPrinciple(noise_var=0.01)))
    print(
        NoiseLevelDeadline(ExponentialMovingVariance(), tau=np.float32(1.1), patience=np.int64(100))
    )
    print(DIPDenoiser(early_stopping=NoiseLevelDeadline(noise_var=0.01)))
    print(TotalVariation(np.float32(0.01)), GradientRatio(weight=np.float32(1e-3)))
    assert_type(psnr(clean, noisy, data_range=np.float32(1.0)), float)
    assert_type(ssim(clean, noisy, data_range=np.int64(1)), float)
    assert_type(aligned_psnr(clean, noisy, max_shift=np.int64(2)), float)
    for sigma in np.linspace(0.05, 0.2, 4, dtype=np.float32):
        assert_type(add_gaussian_noise(clean, sigma, random_state=0), np.ndarray)
    print(make_gaussian_kernel(np.int64(5), np.float32(1.0)), make_disk_kernel(5, np.int64(2)))
    print(cartesian_mask((8, 8), acceleration=np.int64(4)), load_image("camera", np.int64(32)))
    print(simulate_diffraction(clean, oversampling=np.int64(2), photons=np.float32(1e4)))
    print(best_scored(np.array([1.0, 2.0]), n_best=np.int64(1), margin=np.float32(1.0)))
    print(AverageOfBest(DIPDenoiser(), {"lr": [0.01]}, n_best=np.int64(2)))
    print(PreferDefault(np.int64(0), margin=np.float32(1.0)), x)


# The extension points, subclassed as their docstrings show, with a strict user's
# annotations: the overrides must agree with the base classes' signatures.
class EveryOtherColumn(ForwardOperator):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::2]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        x = y.new_zeros((*y.shape[:-1], 2 * y.shape[-1]))
        x[..., ::2] = y
        return x

    def output_shape(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        h, w = input_shape
        return h, (w + 1) // 2

    def input_shape(self, output_shape: tuple[int, int]) -> tuple[int, int]:
        h, w = output_shape
        return h, 2 * w


class StepSize(BaseStoppingRule):
    def _start(self) -> None:
        self._previous: torch.Tensor | None = None

    def signal(self, x: torch.Tensor, iteration: int) -> torch.Tensor | None:
        previous, self._previous = self._previous, x.detach().clone()
        return None if previous is None else (x - previous).square().mean()


class TwoLayers(GeneratorNetwork):
    def __init__(self, out_shape: tuple[int, int], out_channels: int, width: int) -> None:
        super().__init__()
        self.out_shape, self.out_channels = out_shape, out_channels
        self.register_buffer("input", 0.1 * torch.rand(1, width, *out_shape))
        self.layers = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, out_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(z)
        return out


class TwoLayerGenerator(BaseGenerator):
    def __init__(self, width: int = 8) -> None:
        self.width = width

    def _build(self, out_shape: tuple[int, int], out_channels: int) -> GeneratorNetwork:
        return TwoLayers(out_shape, out_channels, self.width)


class TowardsGrey(BaseRegularizer):
    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5).abs().mean()


def extensions(noisy: np.ndarray) -> None:
    assert_type(EveryOtherColumn()(torch.ones(1, 1, 4, 4)), torch.Tensor)
    rec = DIPReconstructor(operator=EveryOtherColumn(), early_stopping=StepSize(patience=2))
    print(rec.fit(noisy).reconstruction_.shape)
    den = DIPDenoiser(generator=TwoLayerGenerator(width=4), regularizer=TowardsGrey(weight=2.0))
    print(den.fit_transform(noisy).shape)
    assert_type(TwoLayerGenerator(width=4).build((8, 8), 1, seed=0), GeneratorNetwork)
    assert_type(TowardsGrey(weight=2.0)(torch.ones(1, 1, 4, 4)), torch.Tensor)
