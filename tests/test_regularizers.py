"""Tests of the image regularizers: total variation and the gradient l1/l2 ratio."""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skdip import DIPReconstructor, GradientRatio, TotalVariation
from skdip.generators import SkipNetwork
from skdip.losses import BaseRegularizer, get_loss


def _step_image(size=8, edge=4):
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[..., edge:] = 1.0  # one vertical edge
    return x


def _ramp(size=8):
    i = torch.arange(size, dtype=torch.float64)
    return (i[:, None] + i[None, :]).reshape(1, 1, size, size)


def test_tv_values_on_known_images():
    # The differences are taken at all 8x8 pixels (zero beyond the last row and
    # column): 8 horizontal differences are 1, one per row, so the mean is 1/8.
    x = _step_image()
    assert float(TotalVariation(weight=1.0)(x)) == pytest.approx(1 / 8)
    assert float(TotalVariation(weight=1.0, isotropic=True)(x)) == pytest.approx(1 / 8, abs=1e-5)
    # A diagonal ramp: both differences are 1 except past the last row / column.
    r = _ramp()
    assert float(TotalVariation(weight=1.0)(r)) == pytest.approx(2 * 7 / 8)
    iso = (49 * math.sqrt(2) + 14 * 1.0 + 0.0) / 64  # inside, last row/column, corner
    assert float(TotalVariation(weight=1.0, isotropic=True)(r)) == pytest.approx(iso)


def test_differences_of_the_last_row_and_column_count():
    # A single bright corner pixel: the cropped grid of a former version saw no change.
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    x[..., -1, -1] = 1.0
    assert float(TotalVariation(weight=1.0)(x)) == pytest.approx(2 / 36)
    assert float(GradientRatio(weight=1.0)(x)) == pytest.approx(math.sqrt(2))
    # One pixel high: no vertical difference, a finite penalty.
    row = torch.arange(8, dtype=torch.float64).reshape(1, 1, 1, 8)
    assert float(TotalVariation(weight=1.0)(row)) == pytest.approx(7 / 8)


def test_gradient_ratio_of_a_batch_is_the_mean_over_its_images():
    a, b = _step_image(), _ramp()
    batch = torch.cat([a, b])
    expected = (GradientRatio(1.0).penalty(a) + GradientRatio(1.0).penalty(b)) / 2
    assert float(GradientRatio(1.0).penalty(batch)) == pytest.approx(float(expected))
    assert float(GradientRatio(1.0).penalty(torch.cat([a, a]))) == pytest.approx(
        float(GradientRatio(1.0).penalty(a))
    )


def test_weight_multiplies_and_zero_weight_gives_zero():
    r = _ramp()
    assert float(TotalVariation(weight=0.25)(r)) == pytest.approx(0.25 * 2 * 7 / 8)
    assert float(GradientRatio(weight=0.0)(r)) == 0.0
    assert float(GradientRatio(weight=2.0)(r)) == pytest.approx(2 * GradientRatio(1.0).penalty(r))


@pytest.mark.parametrize(
    "weight, error",
    [
        (-1.0, ValueError),
        ("a", TypeError),
        (None, TypeError),
        (True, TypeError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
    ],
)
@pytest.mark.parametrize("cls", [TotalVariation, GradientRatio])
def test_invalid_weight_raises(cls, weight, error):
    with pytest.raises(error, match="weight"):
        cls(weight=weight)(_ramp())


def test_tv_is_linear_in_contrast_but_ratio_is_scale_invariant():
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 12, 12, generator=rng, dtype=torch.float64)
    tv, ratio = TotalVariation(weight=1.0), GradientRatio(weight=1.0)
    assert float(tv(3 * x)) == pytest.approx(3 * float(tv(x)))
    assert float(ratio(3 * x)) == pytest.approx(float(ratio(x)))
    # both ignore a constant offset
    assert float(tv(x + 5)) == pytest.approx(float(tv(x)))
    assert float(ratio(x + 5)) == pytest.approx(float(ratio(x)))


def test_ratio_prefers_sparse_gradients():
    # one sharp edge: l1/l2 = sqrt(number of non-zero differences) = sqrt(8)
    edge = _step_image()
    assert float(GradientRatio(weight=1.0)(edge)) == pytest.approx(math.sqrt(8), rel=1e-6)
    # the same edge smeared over three columns has more non-zero differences
    smooth = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    smooth[..., 3], smooth[..., 4], smooth[..., 5:] = 1 / 3, 2 / 3, 1.0
    assert float(GradientRatio(weight=1.0)(smooth)) > float(GradientRatio(weight=1.0)(edge))
    # whereas total variation cannot tell them apart
    tv = TotalVariation(weight=1.0)
    assert float(tv(smooth)) == pytest.approx(float(tv(edge)))


@pytest.mark.parametrize(
    "reg", [TotalVariation(1.0), TotalVariation(1.0, isotropic=True), GradientRatio(1.0)]
)
def test_gradients_are_finite_even_on_constant_images(reg):
    x = torch.full((1, 2, 6, 6), 0.5, requires_grad=True)
    value = reg(x)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(x.grad).all()
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    "reg", [TotalVariation(1.0), TotalVariation(1.0, isotropic=True), GradientRatio(1.0)]
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_get_the_float32_penalty(reg, dtype):
    # float16 made eps (1e-8) and isotropic TV's 1e-12 zero: NaN on a flat image; and the
    # ratio's l1 sum of a 512x512 image overflowed to inf.
    flat = torch.full((1, 1, 6, 6), 0.5, dtype=dtype, requires_grad=True)
    value = reg(flat)
    value.backward()
    assert value.dtype == dtype
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-5)
    assert torch.isfinite(flat.grad).all()
    x = torch.rand(1, 1, 512, 512, generator=torch.Generator().manual_seed(0))
    x = x.to(dtype).float()  # values a half-precision image can hold
    expected = float(reg(x))
    assert float(reg(x.to(dtype))) == pytest.approx(expected, rel=1e-2)
    # Computed in float32 and rounded once: bfloat16's own sums gave the ratio 588, not 592.
    assert float(reg(x.to(dtype))) == float(torch.tensor(expected).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_gradient_ratio_eps_below_the_dtypes_range_still_guards_flat_images(dtype):
    # eps=1e-300 is 0 in float32: the flat image's ratio was 0/0 = NaN.
    flat = torch.full((1, 1, 6, 6), 0.5, dtype=dtype, requires_grad=True)
    value = GradientRatio(1.0, eps=1e-300)(flat)
    value.backward()
    assert float(value.detach()) == 0.0
    assert torch.isfinite(flat.grad).all()
    edge = _step_image().to(dtype)
    assert float(GradientRatio(1.0, eps=1e-300)(edge)) == pytest.approx(math.sqrt(8))


@pytest.mark.parametrize("shape", [(8, 8), (3, 8, 8), (2, 1, 1, 8, 8)])
def test_gradient_ratio_refuses_images_not_shaped_b_c_h_w(shape):
    # A 2-D image was read as 8 one-row images: 0.35 where its one edge gives sqrt(8).
    x = _step_image()[0, 0].expand(shape)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*x\[None, None\]"):
        GradientRatio(1.0)(x)
    assert float(GradientRatio(1.0)(x.reshape(1, -1, 8, 8)[:, :1])) == pytest.approx(math.sqrt(8))


def test_batch_penalty_is_the_mean_over_images():
    r = _ramp().float()
    batch = torch.cat([r, r])
    tv = TotalVariation(weight=1.0)
    assert float(tv(batch)) == pytest.approx(float(tv(r)))


def test_regularizers_clone_pickle_and_tune_in_an_estimator():
    reg = GradientRatio(weight=0.3, eps=1e-6)
    assert isinstance(reg, BaseRegularizer)
    assert clone(reg).get_params() == {"weight": 0.3, "eps": 1e-6}
    assert pickle.loads(pickle.dumps(reg)).get_params() == reg.get_params()
    est = DIPReconstructor(regularizer=TotalVariation()).set_params(regularizer__weight=0.7)
    assert est.regularizer.weight == 0.7


def test_a_strong_tv_weight_smooths_the_reconstruction():
    rng = np.random.default_rng(0)
    noisy = rng.random((16, 16))
    net = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)

    def fitted_tv(weight):
        est = DIPReconstructor(
            generator=net,
            regularizer=TotalVariation(weight=weight),
            max_iter=60,
            early_stopping=None,
            random_state=0,
        )
        out = est.fit_transform(noisy)
        return float(np.abs(np.diff(out, axis=0)).mean() + np.abs(np.diff(out, axis=1)).mean())

    assert fitted_tv(1.0) < 0.5 * fitted_tv(0.0)


def test_invalid_isotropic_and_eps_raise():
    with pytest.raises(ValueError, match="isotropic"):
        TotalVariation(1.0, isotropic="no")(_ramp())
    for eps, error in ((0.0, ValueError), (-1e-3, ValueError), (None, TypeError)):
        with pytest.raises(error, match="eps"):
            GradientRatio(1.0, eps=eps)(torch.zeros(1, 1, 4, 4))


# --------------------------------------------------------------------------- losses


def test_rmse_is_the_root_of_the_mse_with_a_finite_gradient_at_an_exact_fit():
    from skdip.losses import LOSS_NAMES, get_loss

    assert "rmse" in LOSS_NAMES
    pred = torch.tensor([[0.0, 1.0], [2.0, 3.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0], [2.0, 1.0]])
    value = get_loss("rmse")(pred, target)
    assert float(value) == pytest.approx(math.sqrt((1 + 4) / 4))
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    exact = target.clone().requires_grad_()
    get_loss("rmse")(exact, target).backward()
    assert torch.isfinite(exact.grad).all()


def test_the_estimators_take_the_rmse_loss_by_name():
    y = np.random.default_rng(0).random((8, 8))
    est = DIPReconstructor(
        generator=SkipNetwork(width=4, depth=2, input_channels=2),
        loss="rmse",
        max_iter=3,
        early_stopping=None,
    )
    assert est.fit_transform(y).shape == (8, 8)
    with pytest.raises(ValueError, match="loss"):
        DIPReconstructor(loss="rms").fit(y)


def test_isotropic_takes_numpys_bool_as_a_grid_hands_it_out():
    # ParameterGrid({"regularizer__isotropic": np.array([False, True])}) gives np.bool_,
    # which every candidate's fit refused.
    x = _ramp()
    for flag in np.array([False, True]):
        assert float(TotalVariation(1.0, isotropic=flag)(x)) == float(
            TotalVariation(1.0, isotropic=bool(flag))(x)
        )
    with pytest.raises(ValueError, match="isotropic"):
        TotalVariation(1.0, isotropic=1)(x)


def test_isotropic_tv_pairs_forward_differences_at_each_pixel():
    # Both differences forward at every pixel (a zero row padded on the wrong side
    # paired backward row differences with forward column ones, unseen by the
    # anisotropic TV and GradientRatio).
    a = np.array([[0.0, 1.0, 3.0], [2.0, 0.0, 1.0], [5.0, 4.0, 0.0]])
    dy, dx = np.zeros_like(a), np.zeros_like(a)
    dy[:-1] = a[1:] - a[:-1]
    dx[:, :-1] = a[:, 1:] - a[:, :-1]
    expected = np.sqrt(dy**2 + dx**2 + 1e-12).mean()
    value = float(TotalVariation(weight=1.0, isotropic=True)(torch.tensor(a)[None, None]))
    assert value == pytest.approx(expected, rel=1e-6)


def test_l1_and_huber_losses_have_their_documented_values():
    pred = torch.tensor([[[[0.0, 0.05, 0.5, -1.0]]]], dtype=torch.float64)
    target = torch.zeros_like(pred)
    assert float(get_loss("l1")(pred, target)) == pytest.approx((0.05 + 0.5 + 1.0) / 4)
    # delta = 0.1: quadratic 0.5 r^2 below it, linear 0.1 * (|r| - 0.05) above
    expected = (0.0 + 0.5 * 0.05**2 + 0.1 * (0.5 - 0.05) + 0.1 * (1.0 - 0.05)) / 4
    assert float(get_loss("huber")(pred, target)) == pytest.approx(expected)


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize(
    "term, culprit",
    [
        ("float_penalty", "the regularizer must return a torch tensor"),
        ("detached_penalty", "the regularizer cuts the gradient"),
        ("detached_loss", "the loss cuts the gradient"),
    ],
)
def test_a_term_that_cannot_steer_the_fit_is_refused(term, culprit, batch_size):
    # A penalty returned as a Python float, or detached, entered the reported loss but
    # not the gradient: TV weighted 1e6 that way left the estimate bit-identical to the
    # fit without it (and a detached loss beside a live penalty fitted the penalty alone).
    from skdip import DIPDenoiser

    def float_penalty(x):
        return (1e6 * x.abs().mean()).item()

    def detached_penalty(x):
        return (1e6 * x.abs().mean()).detach()

    def detached_loss(prediction, target):
        return (prediction - target).square().mean().detach()

    kw = dict(regularizer=TotalVariation(weight=0.1))
    if term == "float_penalty":
        kw = dict(regularizer=float_penalty)
    elif term == "detached_penalty":
        kw = dict(regularizer=detached_penalty)
    else:
        kw["loss"] = detached_loss
    images = list(np.random.default_rng(0).random((2, 12, 12)))
    den = DIPDenoiser(
        generator="skip-small", max_iter=2, early_stopping=None, random_state=0,
        batch_size=batch_size, **kw,
    )  # fmt: skip
    error = TypeError if term == "float_penalty" else ValueError
    with pytest.raises(error, match=culprit):
        den.fit(images)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_constant_zero_penalty_is_a_placeholder_not_an_error(batch_size):
    # A penalty of torch.zeros(()) (no gradient, but nothing reported either) changes
    # neither the loss nor the fit: it fits exactly as regularizer=None does.
    from skdip import DIPDenoiser

    images = list(np.random.default_rng(0).random((2, 12, 12)))
    kw = dict(generator="skip-small", max_iter=3, early_stopping=None, random_state=0)
    kw["batch_size"] = batch_size
    placeholder = DIPDenoiser(regularizer=lambda x: torch.zeros(()), **kw).fit(images)
    plain = DIPDenoiser(regularizer=None, **kw).fit(images)
    for a, b in zip(placeholder.reconstruction_, plain.reconstruction_, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("regularizer", TotalVariation, r"class TotalVariation.*TotalVariation\(weight=\.\.\.\)"),
        ("regularizer", GradientRatio, r"class GradientRatio.*GradientRatio\(weight=\.\.\.\)"),
        ("loss", torch.nn.L1Loss, r"class L1Loss.*L1Loss\(\)"),
    ],
)
def test_a_class_in_place_of_an_instance_is_named(param, value, match):
    # A class is callable: regularizer=TotalVariation got past the checks and failed in
    # the first step with "unsupported operand type(s) for +: 'Tensor' and
    # 'TotalVariation'", and loss=torch.nn.L1Loss with "Boolean value of Tensor with more
    # than one value is ambiguous".
    from skdip import DIPDenoiser

    den = DIPDenoiser(generator="skip-small", max_iter=2, early_stopping=None, **{param: value})
    with pytest.raises(TypeError, match=match):
        den.fit(np.zeros((8, 8)))


def test_get_loss_refuses_a_class_naming_the_instance():
    # get_loss(torch.nn.L1Loss) handed the class back; called on two tensors it failed
    # with "Boolean value of Tensor with more than one value is ambiguous".
    with pytest.raises(TypeError, match=r"class L1Loss.*L1Loss\(\)"):
        get_loss(torch.nn.L1Loss)
    l1 = torch.nn.L1Loss()
    assert get_loss(l1) is l1


def test_an_infinite_eps_is_refused():
    # eps = inf passed the check (inf > 0) and made the penalty 0 on every image, and
    # its gradient 0: a regularizer that silently did nothing.
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        GradientRatio(1.0, eps=math.inf)(_step_image())


@pytest.mark.parametrize(
    "regularizer, match",
    [
        (TotalVariation(0.01, isotropic="yes"), "isotropic must be a bool"),
        (GradientRatio(0.01, eps=0), "eps must be a finite number > 0"),
        (TotalVariation(-1.0), "weight must be a finite number >= 0"),
    ],
)
def test_a_regularizers_settings_are_checked_before_any_work(regularizer, match, monkeypatch):
    # Only the weight was checked up front: a PhaseRetriever (16x16, n_init=3,
    # pretrain_iter=300) with TotalVariation(isotropic="yes") or GradientRatio(eps=0)
    # ran its HIO start and pretraining for 4-5 s before the first step refused it.
    from skdip import DIPDenoiser
    from skdip.estimators._base import BaseDIPEstimator

    def no_work(*args, **kwargs):
        raise AssertionError("the fit started before the regularizer was checked")

    monkeypatch.setattr(BaseDIPEstimator, "_fit_images", no_work)
    den = DIPDenoiser(generator="skip-small", max_iter=2, regularizer=regularizer)
    with pytest.raises(ValueError, match=match):
        den.fit(np.zeros((8, 8)))


def test_a_regularizer_without_a_penalty_is_told_what_to_define():
    # A subclass that defined forward() (the torch habit) instead of penalty() failed
    # in the first step with a bare NotImplementedError(), no message at all.
    from skdip import DIPDenoiser

    class Mine(BaseRegularizer):
        def forward(self, x):
            return x.abs().mean()

    with pytest.raises(NotImplementedError, match=r"Mine must define penalty\(x\)"):
        Mine(weight=1.0)(torch.zeros(1, 1, 4, 4))
    den = DIPDenoiser(generator="skip-small", max_iter=2, early_stopping=None, regularizer=Mine())
    with pytest.raises(NotImplementedError, match=r"Mine must define penalty\(x\)"):
        den.fit(np.zeros((8, 8)))


def _mse_shaped_1(prediction, target):
    return (prediction - target).square().mean().reshape(1)


def _l1_penalty_shaped_1(x):
    return 0.01 * x.abs().mean().reshape(1)


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize(
    "kw",
    [
        dict(loss=_mse_shaped_1, regularizer=TotalVariation()),
        dict(regularizer=_l1_penalty_shaped_1),
        dict(loss=_mse_shaped_1, regularizer=_l1_penalty_shaped_1),
    ],
    ids=["loss", "penalty", "both"],
)
def test_a_one_element_loss_or_penalty_counts_as_a_scalar(kw, batch_size):
    # A one-element tensor passes as "a scalar tensor", and a loss shaped (1,) fits alone,
    # but beside a penalty it failed with "TypeError: must be real number, not list", and a
    # penalty shaped (1,) with "stack expects each tensor to be equal size".
    from skdip import DIPDenoiser

    images = list(np.random.default_rng(0).random((2, 8, 8)))
    kw = dict(generator="skip-small", max_iter=3, early_stopping=None, random_state=0, **kw)
    shaped = DIPDenoiser(batch_size=batch_size, **kw).fit(images)
    plain = dict(loss="mse", regularizer=TotalVariation())
    if kw["regularizer"] is _l1_penalty_shaped_1:
        plain["regularizer"] = lambda x: 0.01 * x.abs().mean()
    reference = DIPDenoiser(batch_size=batch_size, **{**kw, **plain}).fit(images)
    for a, b in zip(shaped.history_, reference.history_, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
        np.testing.assert_allclose(a["data_loss"], b["data_loss"], rtol=1e-6)
