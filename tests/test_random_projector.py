"""The Deep Random Projector through the engine and the estimators (tiny, CPU)."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from skdip import BlindDeblurrer, DIPDenoiser, DIPInpainter, DIPSuperResolver, TotalVariation
from skdip._engine import DIPModel, fit_model
from skdip.generators import DeepRandomProjector
from skdip.losses import get_loss
from skdip.metrics import psnr

TINY = DeepRandomProjector(width=8)


def _clean(size=24):
    rows = np.linspace(0, 1, size)[:, None]
    cols = np.linspace(0, 1, size)[None, :]
    return 0.5 + 0.3 * np.sin(6 * rows + 4 * cols) * np.cos(5 * cols - 2 * rows)


def _noisy(clean, sigma=0.1, seed=0):
    return clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)


def _recipe(**kw):
    params = dict(
        generator=TINY,
        lr=0.1,
        loss="rmse",
        regularizer=TotalVariation(weight=0.45),
        reg_noise_std=0,
        max_iter=200,
        early_stopping=None,
        random_state=0,
        device="cpu",
    )
    params.update(kw)
    return params


def test_the_engine_moves_the_code_and_norms_and_leaves_the_convolutions():
    model = DIPModel(TINY.build((16, 16), 1, seed=0))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    target = torch.from_numpy(_clean(16)).float()[None, None]
    result = fit_model(model, target, loss=get_loss("rmse"), max_iter=20, lr=0.1)
    after = model.state_dict()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for name in convs:
        assert torch.equal(before[f"{name}.weight"], after[f"{name}.weight"]), name
        assert torch.equal(before[f"{name}.bias"], after[f"{name}.bias"]), name
    for name in norms:
        assert not torch.equal(before[f"{name}.weight"], after[f"{name}.weight"]), name
    assert not torch.equal(before["network.input"], after["network.input"])
    loss = result.history["loss"]
    assert loss[-1] < 0.5 * loss[0]


def test_the_recipe_denoises_and_is_reproducible():
    clean = _clean()
    noisy = _noisy(clean)
    out = DIPDenoiser(**_recipe()).fit_transform(noisy)
    # 20.0 dB in; 25.3 dB out when written (24 x 24, 200 steps, width 8).
    assert psnr(clean, out, data_range=1) > psnr(clean, np.clip(noisy, 0, 1), data_range=1) + 3
    again = DIPDenoiser(**_recipe()).fit_transform(noisy)
    np.testing.assert_array_equal(out, again)
    other = DIPDenoiser(**_recipe(random_state=1)).fit_transform(noisy)
    assert not np.array_equal(out, other)


def test_early_stopping_and_scoring_work_with_it():
    noisy = _noisy(_clean())
    den = DIPDenoiser(**_recipe(max_iter=300, early_stopping="emv")).fit(noisy)
    assert 0 < den.best_iter_ <= den.n_iter_ <= 300
    assert np.isfinite(den.score(noisy))


def test_a_fitted_denoiser_pickles():
    noisy = _noisy(_clean(16))
    den = DIPDenoiser(**_recipe(max_iter=5)).fit(noisy)
    copy = pickle.loads(pickle.dumps(den))
    np.testing.assert_array_equal(copy.transform(), den.transform())


def test_batched_images_get_their_sequential_fits():
    # The code is fitted: in a batched run it lives in the stacked state.
    images = [_noisy(_clean(16), seed=k) for k in range(3)]
    alone = DIPDenoiser(**_recipe(max_iter=15)).fit_transform(images)
    together = DIPDenoiser(**_recipe(max_iter=15, batch_size=3)).fit_transform(images)
    other = DIPDenoiser(**_recipe(max_iter=15, random_state=1)).fit_transform(images)
    for a, b, c in zip(alone, together, other, strict=True):
        # Only float32 rounding differs (1.6e-5 at most when written); a wrongly
        # fitted code or another seed moves the estimate by far more.
        assert np.abs(b - a).max() < 1e-3
        assert np.abs(c - a).max() > 0.01


@pytest.mark.parametrize(
    "make",
    [
        lambda: DIPInpainter(**_recipe(max_iter=20)),
        lambda: DIPSuperResolver(scale=2, **_recipe(max_iter=20)),
        lambda: BlindDeblurrer(
            kernel_size=(3, 3), generator=TINY, lr=0.1, max_iter=20, random_state=0, device="cpu"
        ),
    ],
    ids=["inpaint", "superres", "blind-deblur"],
)
def test_other_estimators_accept_it(make):
    clean = _clean(16)
    est = make()
    if isinstance(est, DIPInpainter):
        mask = np.random.default_rng(0).random(clean.shape) > 0.3
        out = est.fit_transform(np.where(mask, clean, 0.0), mask=mask)
        assert out.shape == clean.shape
    else:
        out = est.fit_transform(clean)
        assert out.shape[:2] == (32, 32) if isinstance(est, DIPSuperResolver) else clean.shape
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: DIPDenoiser(**_recipe(max_iter=2, **kw)),
        lambda **kw: DIPInpainter(**_recipe(max_iter=2, **kw)),
    ],
    ids=["denoiser", "inpainter"],
)
def test_without_a_penalty_it_warns_with_the_recipe(make):
    noisy = _noisy(_clean(16))
    if isinstance(make(), DIPInpainter):
        noisy[2, 3] = np.nan  # something to fill (else that is warned of)
    with pytest.warns(UserWarning, match=r"without a regularizer.*TotalVariation\(weight=0.45\)"):
        make(regularizer=None).fit(noisy)
    # Without early stopping the warning does not speak of it.
    with pytest.warns(UserWarning, match="a fit of more steps than that ends on a noisy"):
        make(regularizer=None, early_stopping=None).fit(noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make().fit(noisy)  # the recipe's penalty: no warning
        make(generator="skip-small", regularizer=None).fit(noisy)  # other networks: none


def test_the_phase_retriever_warns_too():
    from skdip import PhaseRetriever
    from skdip.datasets import simulate_diffraction

    y = simulate_diffraction(np.pad(_clean(6), 1))
    with pytest.warns(UserWarning, match="without a regularizer"):
        PhaseRetriever(
            generator=TINY, max_iter=2, pretrain_iter=0, init="random", reg_noise_std=0
        ).fit(y)
