"""The shared checks of numeric arguments (``check_int``, ``check_number``) and the
public functions that use them: a wrong type is a TypeError, a value out of range a
ValueError, and each message names the argument and the value."""

import numpy as np
import pytest

from skdip import DIPDenoiser
from skdip._validation import check_int, check_number
from skdip.datasets import (
    make_coil_maps,
    make_disk_kernel,
    make_motion_kernel,
    simulate_diffraction,
)
from skdip.metrics import align_shift, aligned_psnr, psnr
from skdip.model_selection import fit_candidates
from skdip.operators import FourierMagnitude, make_phase_masks

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
