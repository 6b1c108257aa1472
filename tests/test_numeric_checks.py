"""The shared checks of numeric arguments (``check_int``, ``check_number``,
``check_int_pair``) and the public functions that use them: a wrong type is a
TypeError, a value out of range a ValueError, and each message names the argument
and the value."""

import re

import numpy as np
import pytest
import torch

from skdip import BlindDeblurrer, DIPDenoiser
from skdip._validation import check_int, check_int_pair, check_number
from skdip.datasets import (
    cartesian_mask,
    load_image,
    make_coil_maps,
    make_disk_kernel,
    make_motion_kernel,
    simulate_diffraction,
)
from skdip.generators import SkipNetwork
from skdip.metrics import align_shift, aligned_psnr, phase_retrieval_error, psnr
from skdip.model_selection import fit_candidates
from skdip.operators import (
    Convolution,
    Downsample,
    FourierMagnitude,
    FunctionOperator,
    Identity,
    KSpaceSampling,
    PixelMask,
    make_phase_masks,
)

# --------------------------------------------------------------------------- check_int


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), np.int8(3)])
def test_check_int_returns_a_python_int(value):
    out = check_int(value, "n", 1)
    assert out == 3 and type(out) is int


def test_check_int_cannot_overflow_later_in_a_small_numpy_type():
    # np.uint8(200) * 2 wraps around to 144; the int it is turned into does not.
    assert check_int(np.uint8(200), "n") * 2 == 400


@pytest.mark.parametrize("value", [True, False, np.True_, 2.0, np.float64(2.0), "2", None, 1j])
def test_check_int_refuses_what_is_no_int_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^n_masks must be a positive int, got ") as info:
        check_int(value, "n_masks", 1)
    assert repr(value) in str(info.value)  # the value itself, not only its type


@pytest.mark.parametrize(
    "kwargs, value, requirement",
    [
        ({"minimum": 1}, 0, "a positive int"),
        ({"minimum": 0}, -1, "a non-negative int"),
        ({"minimum": 3}, 2, "an int >= 3"),
        ({"maximum": 5}, 6, "an int <= 5"),
        ({"minimum": 2, "maximum": 5}, 6, r"an int in \[2, 5\]"),
        ({"minimum": 0, "maximum": 2**32 - 1}, 2**32, r"an int in \[0, 2\*\*32\)"),
        (
            {"minimum": -(2**63), "maximum": 2**64 - 1},
            -(2**63) - 1,
            r"an int in \[-2\*\*63, 2\*\*64\)",
        ),
    ],
)
def test_check_int_refuses_a_value_out_of_range_with_a_value_error(kwargs, value, requirement):
    with pytest.raises(ValueError, match=rf"^size must be {requirement}, got {value}$"):
        check_int(value, "size", **kwargs)


def test_check_int_takes_its_bounds_themselves():
    assert check_int(2, "n", 2, 5) == 2 and check_int(5, "n", 2, 5) == 5
    assert check_int(-7, "n") == -7  # no bound: any int


def test_check_int_takes_none_only_when_allowed_and_says_so():
    assert check_int(None, "batch_size", 1, allow_none=True) is None
    with pytest.raises(TypeError, match="batch_size must be a positive int or None, got 1.5"):
        check_int(1.5, "batch_size", 1, allow_none=True)
    with pytest.raises(TypeError, match="batch_size must be a positive int, got None"):
        check_int(None, "batch_size", 1)


def test_check_int_appends_the_hint():
    with pytest.raises(ValueError, match=r"got 9; the index of a candidate$"):
        check_int(9, "default", 0, 3, hint="the index of a candidate")


def test_a_long_value_is_abbreviated_in_the_message():
    with pytest.raises(TypeError) as info:
        check_int(list(range(1000)), "n")
    assert len(str(info.value)) < 100


# --------------------------------------------------------------------------- check_number


@pytest.mark.parametrize("value", [2, 2.0, np.float32(2.0), np.int64(2), np.uint8(2)])
def test_check_number_returns_a_float(value):
    out = check_number(value, "sigma", 0)
    assert out == 2.0 and type(out) is float


@pytest.mark.parametrize("value", [True, np.False_, "1", None, 1j, [1.0]])
def test_check_number_refuses_what_is_no_real_number_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^sigma must be a finite number >= 0, got "):
        check_number(value, "sigma", 0)


@pytest.mark.parametrize(
    "kwargs, value, requirement",
    [
        ({"minimum": 0}, -0.5, "a finite number >= 0"),
        ({"minimum": 0, "exclusive_minimum": True}, 0, "a finite number > 0"),
        ({"minimum": 0, "maximum": 1}, 1.5, r"a finite number in \[0, 1\]"),
        (
            {"minimum": 0, "maximum": 1, "exclusive_minimum": True},
            0.0,
            r"a finite number in \(0, 1\]",
        ),
        ({"minimum": 0}, float("inf"), "a finite number >= 0"),
        ({}, float("nan"), "a finite number"),
        ({"finite": False}, float("nan"), "a number"),
    ],
)
def test_check_number_refuses_a_value_out_of_range_with_a_value_error(kwargs, value, requirement):
    with pytest.raises(ValueError, match=rf"^photons must be {requirement}, got "):
        check_number(value, "photons", **kwargs)


def test_check_number_takes_infinity_only_when_asked_and_none_when_allowed():
    assert check_number(float("inf"), "max_distance", finite=False) == float("inf")
    assert check_number(None, "margin", 0, allow_none=True) is None
    assert check_number(0.0, "margin", 0) == 0.0  # an inclusive minimum is taken
    with pytest.raises(ValueError, match="margin must be a finite number >= 0 or None"):
        check_number(-1, "margin", 0, allow_none=True)


# --------------------------------------------------------------------------- check_int_pair


@pytest.mark.parametrize(
    "value",
    [
        (3, 4),
        [3, 4],
        torch.Size([3, 4]),
        np.array([3, 4]),
        np.array([3, 4], dtype=np.uint8),
        (np.int64(3), np.int32(4)),
    ],
    ids=repr,
)
def test_check_int_pair_returns_a_tuple_of_python_ints(value):
    out = check_int_pair(value, "shape")
    assert out == (3, 4) and type(out) is tuple and all(type(s) is int for s in out)


def test_check_int_pair_takes_one_int_for_both_sides_only_when_allowed():
    assert check_int_pair(5, "kernel_size", allow_int=True) == (5, 5)
    assert check_int_pair(np.uint8(200), "size", allow_int=True) == (200, 200)
    with pytest.raises(TypeError, match=r"^shape must be a pair of positive ints, got 5$"):
        check_int_pair(5, "shape")


class _Refused(ValueError, TypeError):
    """Stands for scikit-learn's InvalidParameterError, a ValueError and a TypeError."""


@pytest.mark.parametrize(
    "call",
    [
        lambda error: check_int(2.5, "n", 1, error=error),  # the type
        lambda error: check_int(0, "n", 1, error=error),  # the range
        lambda error: check_number("1", "x", 0, error=error),
        lambda error: check_number(-1.0, "x", 0, error=error),
        lambda error: check_int_pair("3", "size", 1, allow_int=True, error=error),  # no pair
        lambda error: check_int_pair((3, 2.5), "size", 1, error=error),  # an item's type
        lambda error: check_int_pair((3, 0), "size", 1, error=error),  # an item's range
    ],
)
def test_every_refusal_of_a_checker_raises_the_error_it_is_given(call):
    # Configuration objects pass InvalidParameterError; the estimators' constraints
    # refuse some values before these checks would (a str for a pair), so each refusal
    # is checked here, where the helper is called directly.
    with pytest.raises(_Refused):
        call(_Refused)
    with pytest.raises((TypeError, ValueError)) as plain:
        call(None)
    assert type(plain.value) in (TypeError, ValueError)


def test_check_int_pair_takes_none_only_when_allowed_and_says_so():
    assert check_int_pair(None, "size", allow_none=True) is None
    with pytest.raises(TypeError, match=r"^size must be a pair of positive ints, got None$"):
        check_int_pair(None, "size")
    with pytest.raises(
        TypeError, match=r"^size must be a positive int, a pair of positive ints or None, got 1.5$"
    ):
        check_int_pair(1.5, "size", allow_int=True, allow_none=True)


@pytest.mark.parametrize(
    "value",
    [
        (True, 4),
        (4, np.True_),
        np.array([True, False]),
        (4.0, 4),
        np.array([4.0, 4.0]),
        ("4", "4"),
        "44",  # a str of length 2
        (4,),
        (4, 4, 3),
        np.array([[4, 4]]),
        {4, 5},
        4.0,
        None,
    ],
    ids=repr,
)
def test_check_int_pair_refuses_what_is_no_pair_of_ints_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^shape must be a pair of positive ints, got ") as info:
        check_int_pair(value, "shape")
    assert repr(value) in str(info.value)


def test_check_int_pair_refuses_a_bool_even_where_one_int_is_taken():
    with pytest.raises(TypeError, match="kernel_size must be a positive int or a pair of"):
        check_int_pair(True, "kernel_size", allow_int=True)


@pytest.mark.parametrize(
    "kwargs, value, requirement",
    [
        ({}, (0, 4), "a pair of positive ints"),
        ({}, (4, -1), "a pair of positive ints"),
        ({"minimum": 0}, (0, -1), "a pair of non-negative ints"),
        ({"minimum": 2}, (2, 1), "a pair of ints, each >= 2"),
        ({"minimum": 2, "allow_int": True}, 1, "an int or a pair of ints, each >= 2"),
        ({"allow_int": True}, 0, "a positive int or a pair of positive ints"),
        ({"minimum": 2, "allow_none": True}, (1, 2), "a pair of ints, each >= 2, or None"),
    ],
)
def test_check_int_pair_refuses_a_side_below_the_minimum_with_a_value_error(
    kwargs, value, requirement
):
    message = f"size must be {requirement}, got {value!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_int_pair(value, "size", **kwargs)


def test_check_int_pair_takes_its_minimum_itself_and_any_int_without_one():
    assert check_int_pair((2, 3), "oversampling", 2) == (2, 3)
    assert check_int_pair((-3, 0), "shift", None) == (-3, 0)
    with pytest.raises(TypeError, match=r"^shift must be a pair of ints, got \(1, 2.0\)$"):
        check_int_pair((1, 2.0), "shift", None)


def test_check_int_pair_appends_the_hint():
    with pytest.raises(ValueError, match=r"got \(2, 1\); below 2 the phase is lost$"):
        check_int_pair((2, 1), "oversampling", 2, hint="below 2 the phase is lost")


# --------------------------------------------------------------------------- call sites
# Checks no other test reaches, and the type convention at the call sites whose wrong
# types raised a ValueError before.

X = np.random.default_rng(0).random((20, 20))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: align_shift(X, X, max_shift=1, crop=-1), ValueError, "crop must be a non-neg"),
        (lambda: aligned_psnr(X, X, max_shift=1, crop=1.0), TypeError, "crop must be a non-neg"),
        (lambda: psnr(X, X, data_range="1"), TypeError, "data_range must be a finite number"),
        (lambda: make_phase_masks(0, (4, 4)), ValueError, "n_masks must be a positive int"),
        (lambda: make_phase_masks(1.0, (4, 4)), TypeError, "n_masks must be a positive int"),
        (lambda: make_phase_masks(1, (4, 4), seed=1.0), TypeError, "seed must be an int in"),
        (lambda: FourierMagnitude(2, n_masks=1.0), TypeError, "n_masks must be a non-negative"),
        (lambda: FourierMagnitude(2, n_masks=1, mask_seed=1.0), TypeError, "mask_seed must be"),
        (lambda: make_disk_kernel(5, 0.0), ValueError, "radius must be a finite number > 0"),
        (lambda: make_disk_kernel(5, 1.0, supersample=0), ValueError, "supersample must be a pos"),
        (lambda: make_disk_kernel(5, 1.0, supersample=1.0), TypeError, "supersample must be a pos"),
        (lambda: make_motion_kernel(9, smoothing=-1.0), ValueError, "smoothing must be a finite"),
        (lambda: make_motion_kernel(9, n_steps=0), ValueError, "n_steps must be a positive int"),
        (lambda: make_motion_kernel(9, n_steps=8.0), TypeError, "n_steps must be a positive int"),
        (lambda: make_coil_maps(2.0, (4, 4)), TypeError, "n_coils must be a positive int"),
        (lambda: simulate_diffraction(X, photons="1e4"), TypeError, "photons must be a finite"),
        (
            lambda: simulate_diffraction(X, n_masks=1, mask_seed=1.0),
            TypeError,
            r"mask_seed must be an int in \[0, 2\*\*32\)",
        ),
    ],
)
def test_public_functions_name_a_bad_numeric_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_fit_candidates_refuses_a_batch_size_of_the_wrong_type_before_fitting():
    with pytest.raises(TypeError, match="batch_size must be a positive int or None, got 2.0"):
        fit_candidates(DIPDenoiser(max_iter=1), X, [{"lr": 0.01}], batch_size=2.0)


# Each shape or size pair checked by check_int_pair: a wrong type is a TypeError, a side
# out of range a ValueError, and the message names the argument.
_PAIR_SITES = [
    (lambda: Identity().output_shape((4, 4.0)), TypeError, "input_shape must be a pair of pos"),
    (lambda: Identity().input_shape((0, 4)), ValueError, "output_shape must be a pair of pos"),
    (lambda: Convolution(np.ones((3, 3))).input_shape((4,)), TypeError, "output_shape must be"),
    (
        lambda: FunctionOperator(lambda x: x, input_shape=lambda s: (s[0], 1.5)).input_shape(
            (4, 4)
        ),
        TypeError,
        "the result of input_shape must be a pair of positive ints, got",
    ),
    (lambda: PixelMask(np.ones((4, 4))).output_shape((4, True)), TypeError, "input_shape must"),
    (
        lambda: KSpaceSampling(np.ones((4, 4))).input_shape((4, 4.0)),
        TypeError,
        "output_shape must be a pair of positive ints",
    ),
    (lambda: Downsample(2).input_shape((2, 0)), ValueError, "output_shape must be a pair of pos"),
    (lambda: Downsample(2).output_shape((4, True)), TypeError, "input_shape must be a pair of"),
    (lambda: FourierMagnitude(2).input_shape((8, 8.0)), TypeError, "output_shape must be a pair"),
    (lambda: make_phase_masks(1, (4, 0)), ValueError, "shape must be a pair of positive ints"),
    (lambda: make_coil_maps(2, (4,)), TypeError, "shape must be a pair of positive ints"),
    (lambda: cartesian_mask((4, True)), TypeError, "shape must be a pair of positive ints"),
    (lambda: FourierMagnitude(oversampling=(2, True)), TypeError, "oversampling must be an int"),
    # Why 2 is the minimum was said of 2.5 too, which is no int at all (a setting of the
    # operator: named as the class's, InvalidParameterError, a TypeError too)
    (
        lambda: FourierMagnitude(oversampling=2.5),
        TypeError,
        r"^FourierMagnitude\.oversampling must be an int or a pair of ints, got 2.5$",
    ),
    (
        lambda: simulate_diffraction(X, oversampling=1),
        ValueError,
        r"oversampling must be an int or a pair of ints, each >= 2, got 1; below 2 the object's "
        "autocorrelation is undersampled",
    ),
    (
        lambda: phase_retrieval_error(X, X, oversampling=(1, 0)),
        ValueError,
        r"oversampling must be a positive int or a pair of positive ints, got \(1, 0\)$",
    ),
    (lambda: load_image("camera", size=(8, True)), TypeError, "size must be a positive int, a"),
    (lambda: load_image("camera", size=[8, 8.0]), TypeError, "size must be a positive int, a"),
    (lambda: load_image("camera", size=-8), ValueError, "size must be a positive int, a"),
    # A bool or a float in out_shape: a TypeError, as out_channels=True is (a ValueError before)
    (
        lambda: SkipNetwork(width=4, depth=1).build((8, True), 1),
        TypeError,
        r"SkipNetwork.out_shape must be a pair of positive ints, got \(8, True\)",
    ),
    (lambda: SkipNetwork(width=4, depth=1).build(8, 1), TypeError, "out_shape must be a pair"),
    (lambda: SkipNetwork(width=4, depth=1).build((8, 0), 1), ValueError, "out_shape must be a"),
]


@pytest.mark.parametrize("call, error, match", _PAIR_SITES)
def test_public_functions_name_a_bad_pair_of_ints(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_oversampling_takes_a_1d_array_as_the_other_pairs_do():
    assert FourierMagnitude(oversampling=np.array([2, 3])).oversampling == (2, 3)
    assert FourierMagnitude(oversampling=np.int64(2)).oversampling == (2, 2)


@pytest.mark.parametrize(
    "kernel_size, error",
    [((3, 2.0), TypeError), ((3, 3, 3), TypeError), ([0, 3], ValueError), ((3, -1), ValueError)],
)
def test_blind_deblurrer_refuses_a_bad_kernel_size_before_fitting(kernel_size, error):
    deb = BlindDeblurrer(kernel_size=kernel_size, max_iter=1, device="cpu")
    with pytest.raises(error, match="kernel_size must be a positive int, a pair of positive ints"):
        deb.fit(X)


# --------------------------------------------------------------------------- audit additions
# Bounds and conversions a mutation audit of the two helpers found unpinned.


def test_check_number_takes_its_maximum_itself():
    assert check_number(1, "amount", 0, 1) == 1.0
    assert check_number(1.0, "length", 0, 1, exclusive_minimum=True) == 1.0
    from skdip.datasets import add_impulse_noise

    # At a call site: amount=1 corrupts every pixel, to 0 or 1.
    out = add_impulse_noise(X, 1.0, random_state=0)
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_bounds_are_written_as_powers_of_two_from_2_16_up():
    with pytest.raises(ValueError, match=r"^n must be an int in \[0, 2\*\*16\), got 65536$"):
        check_int(2**16, "n", 0, 2**16 - 1)
    with pytest.raises(ValueError, match=r"^n must be an int in \[0, 32767\], got 32768$"):
        check_int(2**15, "n", 0, 2**15 - 1)


def test_a_zero_level_is_taken_where_the_minimum_is_inclusive():
    # sigma and c may be 0 (no noise), unlike photons: the image comes back as it was.
    from skdip.datasets import add_gaussian_noise, add_speckle_noise

    np.testing.assert_array_equal(add_gaussian_noise(X, 0, random_state=0), X)
    np.testing.assert_array_equal(add_speckle_noise(X, 0.0, random_state=0), X)


def test_ssim_hands_a_numpy_win_size_on_as_an_int():
    # scikit-image squares win_size in its own type: np.uint8(17) ** 2 wraps to 33,
    # which moved its covariance normalisation (0.947614 against 0.947621).
    from skdip.metrics import ssim

    rng = np.random.default_rng(0)
    a = rng.random((40, 40))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    assert ssim(a, b, win_size=np.uint8(17)) == ssim(a, b, win_size=17)


def test_an_unused_mask_seed_is_checked_for_its_type_only():
    # Without coded masks the seed draws nothing: out of range it is taken (as
    # FourierMagnitude takes it), of the wrong type it is refused all the same.
    assert FourierMagnitude(2, mask_seed=2**32).mask_seed == 2**32
    with pytest.raises(TypeError, match="mask_seed must be an int, got 1.5"):
        FourierMagnitude(2, mask_seed=1.5)
    y = simulate_diffraction(X[:8, :8], oversampling=2, mask_seed=-1)
    np.testing.assert_array_equal(y, simulate_diffraction(X[:8, :8], oversampling=2))


# A ParameterGrid over np.array([...], dtype=np.float32) hands out float32 rates: Adam,
# given one, worked out its steps in single precision (5.96e-08 apart after 6 steps).
@pytest.mark.parametrize(
    "make",
    [
        lambda lr: DIPDenoiser(lr=lr),
        lambda lr: BlindDeblurrer(lr=lr, kernel_lr=lr, kernel_size=(3, 3)),
    ],
)
def test_a_numpy_float32_rate_fits_as_the_same_rate_as_a_python_float(make):
    image = np.random.default_rng(0).random((16, 16))
    net = SkipNetwork(width=4, depth=1, skip_channels=2, input_channels=2)
    fits = [
        make(lr)
        .set_params(generator=net, max_iter=6, early_stopping=None, random_state=0, device="cpu")
        .fit(image)
        for lr in (np.float32(0.02), float(np.float32(0.02)))
    ]
    np.testing.assert_array_equal(fits[0].reconstruction_, fits[1].reconstruction_)


def test_self_validation_trains_as_well_with_a_numpy_float32_rate():
    from skdip import SelfValidation

    signals = []
    for lr in (np.float32(0.003), float(np.float32(0.003))):
        rule = SelfValidation(window=4, patience=100, batch_size=2, width=4, lr=lr)
        rule.start()
        steps = torch.Generator().manual_seed(1)
        x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        values = []
        for it in range(12):
            x = x + 0.01 * torch.randn(x.shape, generator=steps) * (1 + it % 3)
            values.append(rule.signal(x, it))
        signals.append([float(v) for v in values if v is not None])
    assert signals[0] == signals[1]
