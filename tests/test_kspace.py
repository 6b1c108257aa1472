"""Tests of Cartesian MRI: KSpaceSampling, the k-space layout helpers and the simulations."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

from skdip.datasets import cartesian_mask, make_coil_maps, simulate_kspace
from skdip.operators import KSpaceSampling, channels_to_kspace, kspace_to_channels
from skdip.operators._kspace import _fftc, _ifftc

DT = torch.float64


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _fft_np(x: np.ndarray) -> np.ndarray:
    """The centred orthonormal FFT of the last two axes, written with NumPy."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def _random_maps(n: int, h: int, w: int, seed: int = 5) -> np.ndarray:
    rng = _rng(seed)
    return rng.standard_normal((n, h, w)) + 1j * rng.standard_normal((n, h, w))


def _mask2d(h: int, w: int, seed: int = 1) -> np.ndarray:
    mask = _rng(seed).random((h, w)) > 0.5
    mask[h // 2, w // 2] = True
    return mask


def _complexify(y: torch.Tensor) -> np.ndarray:
    """(B, 2n, H, W) channels -> complex (B, n, H, W), by hand."""
    y = y.detach().numpy()
    return y[:, 0::2] + 1j * y[:, 1::2]


# ------------------------------------------------------------------------------------------
# forward model
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 8), (7, 5)])
def test_forward_single_coil_matches_numpy(shape):
    mask = _mask2d(*shape)
    x = _rng(2).random(shape)
    y = KSpaceSampling(mask)(torch.from_numpy(x)[None, None])
    assert y.shape == (1, 2, *shape) and y.dtype == DT
    expected = _fft_np(x) * mask
    np.testing.assert_allclose(_complexify(y)[0, 0], expected, atol=1e-12)
    # the layout: channel 0 the real part, channel 1 the imaginary part
    np.testing.assert_allclose(y[0, 0].numpy(), expected.real, atol=1e-12)
    np.testing.assert_allclose(y[0, 1].numpy(), expected.imag, atol=1e-12)
    # unsampled entries are exactly zero
    assert (y[0, :, ~torch.from_numpy(mask)] == 0).all()
    # the DC sits at the centre
    full = KSpaceSampling(np.ones(shape))(torch.ones(1, 1, *shape, dtype=DT))
    h, w = shape
    assert float(full[0, 0, h // 2, w // 2]) == pytest.approx(np.sqrt(h * w))
    assert float(full.abs().sum()) == pytest.approx(np.sqrt(h * w))


def test_forward_multi_coil_matches_numpy_and_layout():
    h, w, n = 6, 8, 3
    mask, maps = _mask2d(h, w), _random_maps(n, h, w)
    x = _rng(3).random((h, w))
    y = KSpaceSampling(mask, maps)(torch.from_numpy(x)[None, None])
    assert y.shape == (1, 2 * n, h, w)
    expected = _fft_np(maps * x) * mask
    for c in range(n):  # [re_0, im_0, re_1, im_1, ...]
        np.testing.assert_allclose(y[0, 2 * c].numpy(), expected[c].real, atol=1e-12)
        np.testing.assert_allclose(y[0, 2 * c + 1].numpy(), expected[c].imag, atol=1e-12)
    assert (y[0, :, ~torch.from_numpy(mask)] == 0).all()


def test_forward_complex_image_and_column_mask():
    h, w = 5, 6
    cols = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    z = _rng(4).standard_normal((h, w)) + 1j * _rng(5).standard_normal((h, w))
    x = torch.from_numpy(np.stack([z.real, z.imag]))[None]
    op = KSpaceSampling(cols, image="complex")
    y = op(x)
    np.testing.assert_allclose(_complexify(y)[0, 0], _fft_np(z) * cols, atol=1e-12)
    assert op.mask.shape == (1, 1, 1, w) and op.image_shape == (None, w)
    assert op.sampled_fraction == pytest.approx(0.5)
    # a 1-D mask is the 2-D mask of whole columns
    y2 = KSpaceSampling(np.broadcast_to(cols, (h, w)), image="complex")(x)
    torch.testing.assert_close(y, y2, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    op = KSpaceSampling(_mask2d(4, 4), _random_maps(2, 4, 4))
    x = torch.rand(2, 1, 4, 4, dtype=dtype)
    y = op(x)
    assert y.dtype == dtype and op.adjoint(y).dtype == dtype
    if dtype == torch.float32:
        ref = op(x.to(DT))
        torch.testing.assert_close(y.to(DT), ref, rtol=1e-5, atol=1e-5)


def test_forward_is_differentiable():
    op = KSpaceSampling(_mask2d(4, 6), _random_maps(2, 4, 6))
    x = torch.rand(1, 1, 4, 6, dtype=DT, requires_grad=True)
    y = torch.rand(1, 4, 4, 6, dtype=DT)
    (op(x) * y).sum().backward()
    # the gradient of <Ax, y> in x is A^T y
    torch.testing.assert_close(x.grad, op.adjoint(y))


def test_parseval_with_a_full_mask():
    x = torch.from_numpy(_rng(6).standard_normal((2, 1, 7, 6)))
    y = KSpaceSampling(np.ones((7, 6)))(x)
    assert float(y.norm()) == pytest.approx(float(x.norm()), rel=1e-12)
    z = torch.from_numpy(_rng(7).standard_normal((2, 2, 7, 6)))
    assert float(KSpaceSampling(np.ones(6), image="complex")(z).norm()) == pytest.approx(
        float(z.norm()), rel=1e-12
    )


def test_centred_fft_round_trip():
    z = torch.from_numpy(_rng(8).standard_normal((3, 5, 4)) + 0j)
    torch.testing.assert_close(_ifftc(_fftc(z)), z)
    np.testing.assert_allclose(_fftc(z).numpy(), _fft_np(z.numpy()), atol=1e-12)


# ------------------------------------------------------------------------------------------
# adjoint
# ------------------------------------------------------------------------------------------
SHAPES = [(6, 8), (7, 5)]
ADJOINT_PARAMS = [
    pytest.param(image, n, kind, shape, id=f"{image}-coils{n}-{kind}-{shape[0]}x{shape[1]}")
    for image in ("real", "complex")
    for n in (0, 1, 3)
    for kind in ("2d", "columns")
    for shape in SHAPES
]


def _operator(image: str, n: int, kind: str, shape) -> KSpaceSampling:
    h, w = shape
    mask = _mask2d(h, w) if kind == "2d" else _rng(9).random(w) > 0.4
    if kind == "columns":
        mask[w // 2] = True
    maps = _random_maps(n, h, w) if n else None
    return KSpaceSampling(mask, maps, image=image)


@pytest.mark.parametrize("image, n, kind, shape", ADJOINT_PARAMS)
def test_adjoint_dot_product(image, n, kind, shape):
    op = _operator(image, n, kind, shape)
    assert op.linear
    x = torch.from_numpy(_rng(10).standard_normal((2, op.n_channels, *shape)))
    ax = op(x)
    assert ax.shape == (2, 2 * max(n, 1), *shape)
    y = torch.from_numpy(_rng(11).standard_normal(tuple(ax.shape)))
    aty = op.adjoint(y)
    assert aty.shape == x.shape
    lhs = float((ax * y).sum())
    rhs = float((x * aty).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_the_dot_product_test_catches_a_missing_conjugate():
    op = KSpaceSampling(_mask2d(6, 8), _random_maps(3, 6, 8))
    x = torch.from_numpy(_rng(12).standard_normal((1, 1, 6, 8)))
    y = torch.from_numpy(_rng(13).standard_normal((1, 6, 6, 8)))
    k = torch.complex(y[:, 0::2], y[:, 1::2]) * op.mask
    wrong = (_ifftc(k) * op.coil_maps).sum(dim=1, keepdim=True).real  # no conj
    lhs = float((op(x) * y).sum())
    assert lhs != pytest.approx(float((x * wrong).sum()), rel=1e-6)
    assert lhs == pytest.approx(float((x * op.adjoint(y)).sum()), rel=1e-10)


# ------------------------------------------------------------------------------------------
# numpy helpers
# ------------------------------------------------------------------------------------------
def test_kspace_channels_round_trip():
    k1 = _random_maps(1, 4, 5)[0]
    k3 = _random_maps(3, 4, 5)
    c1, c3 = kspace_to_channels(k1), kspace_to_channels(k3)
    assert c1.shape == (4, 5, 2) and c3.shape == (4, 5, 6) and c3.dtype == np.float64
    np.testing.assert_array_equal(c3[..., 2], k3[1].real)
    np.testing.assert_array_equal(c3[..., 5], k3[2].imag)
    np.testing.assert_array_equal(channels_to_kspace(c1), k1)
    np.testing.assert_array_equal(channels_to_kspace(c3), k3)
    assert channels_to_kspace(c1).shape == (4, 5)
    single = kspace_to_channels(k3.astype(np.complex64))
    assert single.dtype == np.float32 and channels_to_kspace(single).dtype == np.complex64


def test_kspace_channels_match_the_operator_layout():
    h, w = 6, 8
    mask, maps = _mask2d(h, w), _random_maps(2, h, w)
    x = _rng(14).random((h, w))
    y = KSpaceSampling(mask, maps)(torch.from_numpy(x)[None, None])[0].numpy()
    np.testing.assert_array_equal(
        kspace_to_channels(channels_to_kspace(y.transpose(1, 2, 0))), y.transpose(1, 2, 0)
    )
    np.testing.assert_allclose(
        channels_to_kspace(y.transpose(1, 2, 0)), _fft_np(maps * x) * mask, atol=1e-12
    )


def test_layout_helpers_reject_bad_inputs():
    with pytest.raises(ValueError, match="even number of channels"):
        channels_to_kspace(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"\(H, W, 2 \* n_coils\)"):
        channels_to_kspace(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="real numeric"):
        channels_to_kspace(np.zeros((4, 4, 2), dtype=complex))
    with pytest.raises(TypeError, match="complex array"):
        kspace_to_channels(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(n_coils, H, W\)"):
        kspace_to_channels(np.zeros((2, 2, 4, 4), dtype=complex))
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="kspace contains NaN or infinite"):
            kspace_to_channels(np.full((4, 4), bad + 0j))
        with pytest.raises(ValueError, match="channels contain NaN or infinite"):
            channels_to_kspace(np.full((4, 4, 2), bad))


def test_simulate_kspace_names_the_image_shape_that_does_not_fit_the_mask():
    with pytest.raises(ValueError, match=r"the image's shape \(4, 4\) does not match"):
        simulate_kspace(np.ones((4, 4)), np.ones((8, 8)))


@pytest.mark.parametrize("n", [0, 3])
def test_zero_filled_with_a_full_mask_is_the_image(n):
    h, w = 6, 8
    x = _rng(15).random((h, w))
    maps = make_coil_maps(n, (h, w)) if n else None
    k = simulate_kspace(x, np.ones((h, w)), maps)
    op = KSpaceSampling(np.ones((h, w)), maps)
    np.testing.assert_allclose(op.zero_filled(k), x, atol=1e-12)
    np.testing.assert_allclose(op.zero_filled(kspace_to_channels(k)), x, atol=1e-12)
    assert op.zero_filled(k).dtype == np.float64
    assert op.zero_filled(kspace_to_channels(k).astype(np.float32)).dtype == np.float32


def test_zero_filled_is_the_adjoint_for_a_single_coil_and_ignores_unsampled_entries():
    h, w = 6, 8
    mask = _mask2d(h, w)
    op = KSpaceSampling(mask)
    k = _random_maps(1, h, w)[0]  # "measured" everywhere: the mask drops the rest
    expected = op.adjoint(torch.from_numpy(kspace_to_channels(k).transpose(2, 0, 1))[None])
    np.testing.assert_allclose(op.zero_filled(k), expected[0, 0].numpy(), atol=1e-12)
    z = _rng(16).standard_normal((h, w)) + 1j * _rng(17).standard_normal((h, w))
    complex_op = KSpaceSampling(np.ones((h, w)), image="complex")
    np.testing.assert_allclose(complex_op.zero_filled(_fft_np(z)), np.abs(z), atol=1e-12)


def _ifft_np(k: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)


@pytest.mark.parametrize("n", [0, 4])
def test_data_consistency(n):
    h, w = 8, 8
    x = _rng(18).random((h, w)) - 0.3  # negative values: the result is a magnitude
    maps = make_coil_maps(n, (h, w)) if n else None
    full = KSpaceSampling(np.ones((h, w)), maps)
    k_full = simulate_kspace(x, np.ones((h, w)), maps)
    for estimate in (np.zeros((h, w)), x[..., None]):
        out = full.data_consistency(estimate, k_full)
        np.testing.assert_allclose(out, np.abs(x), atol=1e-12)
    # a partial mask: the measured entries replace the estimate's, the others stay
    mask = cartesian_mask((h, w), acceleration=2, random_state=0)
    op = KSpaceSampling(mask, maps)
    k = simulate_kspace(x, mask, maps)
    estimate = _rng(19).random((h, w))
    out = op.data_consistency(estimate, kspace_to_channels(k))
    assert out.shape == (h, w) and out.dtype == np.float64 and (out >= 0).all()
    coils = maps if n else np.ones((1, h, w))
    consistent = np.where(mask, k, _fft_np(coils * estimate))
    np.testing.assert_allclose(out, np.sqrt((np.abs(_ifft_np(consistent)) ** 2).sum(0)), atol=1e-12)
    # not the plain estimate, nor the zero-filled image
    assert not np.allclose(out, np.sqrt((np.abs(coils * estimate) ** 2).sum(0)))
    assert not np.allclose(out, np.sqrt((np.abs(_ifft_np(k if n else k[None])) ** 2).sum(0)))
    # an estimate that is right off the mask comes back as the true image
    off_mask_right = np.where(mask, 0, _fft_np(coils * x))
    right = np.sqrt((np.abs(_ifft_np(np.where(mask, k, off_mask_right))) ** 2).sum(0))
    np.testing.assert_allclose(right, np.abs(x), atol=1e-12)
    np.testing.assert_allclose(op.data_consistency(x, k), np.abs(x), atol=1e-12)


def test_data_consistency_does_not_scale_or_shade_with_maps_that_are_not_normalised():
    # The root-sum-of-squares gave |x| sqrt(sum |S|**2): maps times 3 scored -1.2 dB and
    # raw sensitivities shaded the image (9.1 dB), where zero_filled was exact.
    h, w = 8, 8
    x = _rng(40).random((h, w))
    falloff = np.exp(-np.linspace(0, 2, w))[None, None, :]
    for maps in (3 * make_coil_maps(4, (h, w)), make_coil_maps(4, (h, w)) * falloff):
        full = KSpaceSampling(np.ones((h, w)), maps)
        k = simulate_kspace(x, np.ones((h, w)), maps)
        np.testing.assert_allclose(full.data_consistency(np.zeros((h, w)), k), x, atol=1e-12)
        np.testing.assert_allclose(full.zero_filled(k), x, atol=1e-12)


def test_zero_filled_is_exact_whatever_the_maps_gain():
    # A floor on the gain (as data_consistency has) darkened the image where the maps'
    # gain is under a tenth of its peak: 0.089 of the truth at the centre.
    h, w = 16, 16
    x = _rng(42).random((h, w))
    yy, xx = np.mgrid[:h, :w] - 7.5
    weak_centre = 0.02 + np.hypot(yy, xx) / 10  # the gain grows fiftyfold outwards
    maps = make_coil_maps(4, (h, w)) * weak_centre
    k = simulate_kspace(x, np.ones((h, w)), maps)
    np.testing.assert_allclose(KSpaceSampling(np.ones((h, w)), maps).zero_filled(k), x, atol=1e-10)


def test_complex_kspace_given_coils_last_is_named():
    # (H, W, n_coils) complex k-space reads as H coils: "measurement has 8 coil(s) but
    # the operator has 3 coil(s)" named no cause.
    h, w = 8, 8
    maps = _random_maps(3, h, w)
    op = KSpaceSampling(np.ones((h, w)), maps)
    k = simulate_kspace(_rng(0).random((h, w)), np.ones((h, w)), maps)
    for helper in (op.zero_filled, lambda m: op.data_consistency(np.zeros((h, w)), m)):
        with pytest.raises(ValueError, match=r"coils first.*np.moveaxis\(kspace, -1, 0\)"):
            helper(np.moveaxis(k, 0, -1))
        helper(k)  # coils first: read as it is
    # Another coil count gets no such word.
    with pytest.raises(ValueError) as info:
        op.zero_filled(k[:2])
    assert "moveaxis" not in str(info.value)


@pytest.mark.parametrize("combination", ["data_consistency"])
def test_coil_combinations_do_not_blow_up_where_the_maps_fade_out(combination):
    # Divided by the maps' gain wherever it was positive, the noise of a soft support
    # edge came out 80 times the image there (61 for an image below 0.8).
    h, w = 16, 16
    x = _rng(41).random((h, w))
    yy, xx = np.mgrid[:h, :w] - 7.5
    soft = np.clip(1.2 - np.hypot(yy, xx) / 7, 1e-4, 1)  # fades to 1e-4 at the corners
    maps = make_coil_maps(4, (h, w)) * soft
    k = simulate_kspace(x, np.ones((h, w)), maps, noise_std=0.05, random_state=0)
    op = KSpaceSampling(np.ones((h, w)), maps)
    if combination == "data_consistency":
        out = op.data_consistency(np.zeros((h, w)), k)
    else:
        out = op.zero_filled(k)
    assert np.abs(out).max() < 5  # the noise at most tenfold (it reached thousands)
    inside = soft > 0.5
    assert np.abs(out - x)[inside].max() < 0.4


def test_data_consistency_ignores_the_estimate_on_the_sampled_entries():
    # In k-space: changing the estimate only where k-space is sampled changes nothing.
    h, w = 8, 6
    mask = cartesian_mask((h, w), acceleration=2, random_state=1)
    op = KSpaceSampling(mask, image="complex")
    z = _rng(25).standard_normal((h, w)) + 1j * _rng(26).standard_normal((h, w))
    k = simulate_kspace(z, mask, noise_std=0.1, random_state=0)
    estimate = _rng(27).standard_normal((h, w)) + 1j * _rng(28).standard_normal((h, w))
    bump = _ifft_np(mask * (_rng(29).standard_normal((h, w)) + 1j))
    first = op.data_consistency(estimate, k)
    np.testing.assert_allclose(op.data_consistency(estimate + bump, k), first, atol=1e-12)
    off = _ifft_np(~mask * (_rng(30).standard_normal((h, w)) + 1j))
    assert not np.allclose(op.data_consistency(estimate + off, k), first)


def test_data_consistency_with_a_complex_estimate():
    h, w = 6, 6
    z = _rng(20).standard_normal((h, w)) + 1j * _rng(21).standard_normal((h, w))
    op = KSpaceSampling(np.ones((h, w)), image="complex")
    k = simulate_kspace(z, np.ones((h, w)))
    np.testing.assert_allclose(op.data_consistency(z, k), np.abs(z), atol=1e-12)
    two = np.stack([z.real, z.imag], axis=-1).astype(np.float32)
    out = op.data_consistency(two, k.astype(np.complex64))
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 2\)"):
        op.data_consistency(two[..., :1].repeat(3, axis=-1), k)


def test_helpers_reject_bad_measurements():
    op = KSpaceSampling(np.ones((4, 4)), make_coil_maps(2, (4, 4)))
    with pytest.raises(ValueError, match="1 coil\\(s\\) but the operator has 2"):
        op.zero_filled(np.zeros((4, 4), dtype=complex))
    with pytest.raises(ValueError, match="does not match the k-space mask"):
        op.zero_filled(np.zeros((2, 4, 5), dtype=complex))
    with pytest.raises(ValueError, match="NaN"):
        op.zero_filled(np.full((4, 4, 4), np.nan))
    with pytest.raises(ValueError, match="spatial shape"):
        op.data_consistency(np.zeros((4, 5)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="image='complex'"):
        op.data_consistency(np.zeros((4, 4), dtype=complex), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match=r"complex k-space must have shape .*got \(4,\)"):
        op.zero_filled(np.zeros(4, dtype=complex))
    with pytest.raises(ValueError, match=r"\(H, W, 2 \* n_coils\) \(channels last\).*\(4, 4\)"):
        op.zero_filled(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="measurement must be a numeric array, got dtype <U1"):
        op.zero_filled(np.full((4, 4, 4), "a"))
    with pytest.raises(TypeError, match="estimate must be a numeric array, got dtype <U1"):
        op.data_consistency(np.full((4, 4), "a"), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="estimate contains NaN or infinite values"):
        op.data_consistency(np.full((4, 4), np.nan), np.zeros((4, 4, 4)))


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mask, match",
    [
        (np.full((4, 4), 0.5), "only 0/1"),
        (np.zeros((4, 4)), "no sampled entry"),
        (np.zeros((2, 4, 4)), r"shape \(H, W\)"),
        (np.array([[1.0, np.nan]]), "NaN"),
    ],
)
def test_rejects_bad_masks(mask, match):
    with pytest.raises(ValueError, match=match):
        KSpaceSampling(mask)


def test_column_indices_for_a_1d_mask_are_told_how_to_make_the_mask():
    columns = np.flatnonzero(cartesian_mask((32, 32), 4, random_state=0)[0])
    with pytest.raises(ValueError, match=r"marks the sampled columns over the width.*m\[idx\] = 1"):
        KSpaceSampling(columns)
    # A 2-D mask of other values is not told about columns.
    with pytest.raises(ValueError, match=r"only 0/1 \(or False/True\) values$"):
        KSpaceSampling(np.full((4, 4), 0.5))


def test_rejects_bad_arguments():
    with pytest.raises(TypeError, match="real-valued"):
        KSpaceSampling(np.ones((4, 4), dtype=complex))
    with pytest.raises(ValueError, match="image must be 'real' or 'complex'"):
        KSpaceSampling(np.ones((4, 4)), image="magnitude")
    with pytest.raises(ValueError, match=r"coil_maps have spatial shape \(4, 5\)"):
        KSpaceSampling(np.ones((4, 4)), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"coil_maps have spatial shape"):
        KSpaceSampling(np.ones(4), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\(n_coils, H, W\)"):
        KSpaceSampling(np.ones((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        KSpaceSampling(np.ones((4, 4)), np.full((1, 4, 4), np.inf))
    with pytest.raises(ValueError, match="all zero"):
        KSpaceSampling(np.ones((4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(TypeError, match="coil_maps must be None"):
        KSpaceSampling(np.ones((4, 4)), "maps")
    with pytest.raises(
        TypeError, match="coil_maps must contain numbers, got an array of dtype bool"
    ):
        KSpaceSampling(np.ones((4, 4)), np.ones((1, 4, 4), dtype=bool))
    with pytest.raises(TypeError, match="coil_maps must contain numbers, got a boolean array"):
        KSpaceSampling(np.ones((4, 4)), torch.ones(1, 4, 4, dtype=torch.bool))
    assert repr(KSpaceSampling(np.ones((4, 4)), np.ones((2, 4, 4)))) == (
        "KSpaceSampling(image='real', n_coils=2, image_shape=(4, 4), sampled_fraction=1)"
    )
    # a 1-D mask takes the rows of the coil maps
    assert KSpaceSampling(np.ones(5), np.ones((2, 3, 5))).image_shape == (3, 5)


def test_rejects_bad_inputs():
    op = KSpaceSampling(np.ones((4, 4)), np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match=r"x must have 1 channels \(a real image\), got 3"):
        op(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="x must have 2 channels"):
        KSpaceSampling(np.ones((4, 4)), image="complex")(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="does not match the k-space mask's shape"):
        op(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="y must have 4 channels"):
        op.adjoint(torch.zeros(1, 2, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        op(torch.zeros(1, 1, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="does not match the k-space mask's shape"):
        op.output_shape((4, 5))
    with pytest.raises(ValueError, match="does not match the k-space mask's shape"):
        op.input_shape((3, 4))
    with pytest.raises(TypeError, match="pair of positive ints"):
        op.output_shape((4, 4, 3))
    assert op.output_shape((4, 4)) == op.input_shape((4, 4)) == (4, 4)
    # without coil maps a 1-D mask takes any number of rows, but not another width
    columns = KSpaceSampling(np.ones(4))
    assert columns.output_shape((9, 4)) == (9, 4)
    with pytest.raises(ValueError, match=r"\(any, 4\)"):
        columns.input_shape((9, 5))


# ------------------------------------------------------------------------------------------
# pickling, copies, dtype and device
# ------------------------------------------------------------------------------------------
def test_pickle_and_deepcopy_give_identical_outputs():
    op = KSpaceSampling(_mask2d(6, 8), _random_maps(2, 6, 8), image="complex")
    x = torch.rand(2, 2, 6, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    y = op(x)
    for clone in (pickle.loads(pickle.dumps(op)), copy.deepcopy(op)):
        assert type(clone) is KSpaceSampling and clone.image == "complex"
        assert torch.equal(clone(x), y)
        assert torch.equal(clone.adjoint(y), op.adjoint(y))
        assert clone.coil_real.dtype == DT and torch.equal(clone.coil_maps, op.coil_maps)
    plain = KSpaceSampling(np.ones(8))
    assert torch.equal(pickle.loads(pickle.dumps(plain)).mask, plain.mask)
    assert pickle.loads(pickle.dumps(plain)).coil_maps is None


def test_copies_hash_alike():
    import joblib

    op = KSpaceSampling(_mask2d(6, 8), _random_maps(2, 6, 8))
    assert joblib.hash(copy.deepcopy(op)) == joblib.hash(op)


def test_buffers_follow_to():
    op = KSpaceSampling(_mask2d(4, 6), _random_maps(2, 4, 6).astype(np.complex64))
    assert op.coil_real.dtype == torch.float32
    names = {name for name, _ in op.named_buffers()}
    assert names == {"mask", "coil_real", "coil_imag"} and names <= set(op.state_dict())
    op64 = op.to(DT)
    assert all(b.dtype == DT for b in op64.buffers())
    x = torch.rand(1, 1, 4, 6, dtype=DT)
    assert op64(x).dtype == DT and op64.adjoint(op64(x)).dtype == DT
    assert op64.to("cpu")(x).device.type == "cpu"
    meta = copy.deepcopy(op).to("meta")
    assert all(b.device.type == "meta" for b in meta.buffers())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    op = KSpaceSampling(_mask2d(6, 8), _random_maps(2, 6, 8))
    x = torch.rand(2, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    y = op(x)
    gpu = copy.deepcopy(op).to("cuda")
    torch.testing.assert_close(gpu(x.cuda()).cpu(), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gpu.adjoint(y.cuda()).cpu(), op.adjoint(y), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# simulations
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, acceleration, center_fraction",
    [((8, 32), 4, 0.08), ((5, 17), 3.0, 0.2), ((4, 10), 1, 0.1)],
)
def test_cartesian_mask(shape, acceleration, center_fraction):
    mask = cartesian_mask(shape, acceleration, center_fraction, random_state=0)
    h, w = shape
    assert mask.shape == shape and mask.dtype == bool
    assert (mask == mask[:1]).all()  # whole columns
    assert int(mask[0].sum()) == max(round(w / acceleration), round(center_fraction * w), 1)
    n_center = max(1, round(center_fraction * w))
    start = w // 2 - n_center // 2
    assert mask[:, start : start + n_center].all() and mask[:, w // 2].all()
    np.testing.assert_array_equal(mask, cartesian_mask(shape, acceleration, center_fraction, 0))


def test_cartesian_mask_is_random_outside_the_centre():
    masks = [cartesian_mask((4, 64), 4, 0.08, random_state=seed) for seed in range(3)]
    assert not np.array_equal(masks[0], masks[1]) or not np.array_equal(masks[1], masks[2])
    rng = np.random.default_rng(0)
    assert cartesian_mask((4, 64), random_state=rng)[0].sum() == 16
    # the centre alone may reach the total: then only the centre
    with pytest.warns(UserWarning, match="samples the centre only"):
        only = cartesian_mask((4, 20), acceleration=10, center_fraction=0.5, random_state=0)
    np.testing.assert_array_equal(np.flatnonzero(only[0]), np.arange(5, 15))


def test_a_centre_beyond_the_accelerations_total_is_warned_of():
    # (256, 256) at acceleration=16 sampled the 20 central columns (12.8), silently.
    with pytest.warns(UserWarning, match=r"20 of the 256 columns.*acceleration of 12.8"):
        mask = cartesian_mask((4, 256), acceleration=16, random_state=0)
    assert int(mask[0].sum()) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cartesian_mask((4, 256), acceleration=12, random_state=0)  # 21 columns, 20 central
        # A centre exactly the total is the acceleration asked: 16 of 64 columns at 4.
        assert int(cartesian_mask((4, 64), acceleration=4, center_fraction=0.25)[0].sum()) == 16


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(shape=(4, 0)), ValueError, "positive"),
        (dict(shape=(4,)), TypeError, "pair of positive ints"),
        (dict(shape=(4, 4.0)), TypeError, "pair of positive ints"),
        (dict(shape=(4, 8), acceleration=0.5), ValueError, "acceleration"),
        (dict(shape=(4, 8), acceleration=np.inf), ValueError, "acceleration"),
        (dict(shape=(4, 8), acceleration="4"), TypeError, "acceleration"),
        (dict(shape=(4, 8), center_fraction=0), ValueError, "center_fraction"),
        (dict(shape=(4, 8), center_fraction=1.5), ValueError, "center_fraction"),
    ],
)
def test_cartesian_mask_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        cartesian_mask(**kwargs)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_make_coil_maps(n):
    maps = make_coil_maps(n, (6, 9))
    assert maps.shape == (n, 6, 9) and maps.dtype == np.complex128
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(maps, make_coil_maps(n, (6, 9)))  # deterministic
    if n > 1:
        assert not np.allclose(np.abs(maps[0]), np.abs(maps[1]))  # coils see differently
    with pytest.raises(ValueError, match="n_coils"):
        make_coil_maps(0, (4, 4))
    with pytest.raises(ValueError, match="positive"):
        make_coil_maps(2, (0, 4))


@pytest.mark.parametrize("n", [0, 3])
def test_simulate_kspace_matches_the_operator(n):
    h, w = 8, 10
    x = _rng(22).random((h, w))
    mask = cartesian_mask((h, w), 2, random_state=1)
    maps = make_coil_maps(n, (h, w)) if n else None
    k = simulate_kspace(x, mask, maps)
    assert k.dtype == np.complex128 and k.shape == ((n, h, w) if n else (h, w))
    y = KSpaceSampling(mask, maps)(torch.from_numpy(x)[None, None])[0].numpy()
    np.testing.assert_allclose(k, channels_to_kspace(y.transpose(1, 2, 0)), atol=1e-12)
    expected = _fft_np((maps if n else 1) * x) * mask
    np.testing.assert_allclose(k, expected, atol=1e-12)


def test_simulate_kspace_noise():
    h, w = 16, 16
    x = _rng(23).random((h, w))
    mask = cartesian_mask((h, w), 4, random_state=2)
    clean = simulate_kspace(x, mask)
    noisy = simulate_kspace(x, mask, noise_std=0.5, random_state=3)
    assert (noisy[~mask] == 0).all()
    diff = (noisy - clean)[mask]
    assert (diff.real != 0).all() and (diff.imag != 0).all()
    assert np.std(np.concatenate([diff.real, diff.imag])) == pytest.approx(0.5, rel=0.2)
    np.testing.assert_array_equal(noisy, simulate_kspace(x, mask, noise_std=0.5, random_state=3))
    assert not np.array_equal(noisy, simulate_kspace(x, mask, noise_std=0.5, random_state=4))
    z = x + 1j * _rng(24).random((h, w))
    np.testing.assert_allclose(simulate_kspace(z, np.ones((h, w))), _fft_np(z), atol=1e-12)


def test_simulate_kspace_validates():
    x = np.zeros((4, 4))
    with pytest.raises(ValueError, match="noise_std"):
        simulate_kspace(x, np.ones((4, 4)), noise_std=-1)
    with pytest.raises(ValueError, match="2-D"):
        simulate_kspace(np.zeros((4, 4, 1)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="does not match the k-space mask"):
        simulate_kspace(x, np.ones((4, 5)))
    with pytest.raises(ValueError, match="coil_maps have spatial shape"):
        simulate_kspace(x, np.ones((4, 4)), np.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        simulate_kspace(np.full((4, 4), np.nan), np.ones((4, 4)))


# ------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------
def test_dip_reconstructor_smoke():
    from skdip import DIPReconstructor

    h = w = 16
    yy, xx = np.mgrid[:h, :w]
    img = ((yy - 8) ** 2 + (xx - 8) ** 2 < 30).astype(np.float64) * 0.8 + 0.1
    mask = cartesian_mask((h, w), acceleration=2, random_state=0)
    op = KSpaceSampling(mask)
    y = kspace_to_channels(simulate_kspace(img, mask))
    assert y.shape == (h, w, 2)
    est = DIPReconstructor(
        operator=op,
        output_channels=1,
        generator="skip-small",
        max_iter=30,
        early_stopping=None,
        random_state=0,
        rescale=False,
        device="cpu",
    ).fit(y)
    rec = np.asarray(est.reconstruction_)
    assert rec.shape == (h, w, 1) and np.isfinite(rec).all()
    assert op.data_consistency(rec, y).shape == (h, w)


def test_as_many_coil_channels_as_the_image_is_wide_are_no_stack():
    # 8 coils on a 16x16 image are 16 channels, as many as the image is wide: fit,
    # transform and score each warned "X of shape (16, 16, 16) is read as one 16x16
    # image with 16 channels ... For N grey images pass an (N, H, W, 1) array".
    from skdip import DIPReconstructor, SkipNetwork

    clean = np.tile(np.linspace(0.1, 0.9, 16), (16, 1))
    mask = cartesian_mask((16, 16), acceleration=2, random_state=0)
    maps = make_coil_maps(8, (16, 16))
    y = kspace_to_channels(simulate_kspace(clean, mask, maps, noise_std=0.01, random_state=0))
    assert y.shape == (16, 16, 16)
    net = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=1)
    common = dict(generator=net, max_iter=2, early_stopping=None, random_state=0, device="cpu")
    est = DIPReconstructor(operator=KSpaceSampling(mask, coil_maps=maps), **common)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*grey images")
        est.fit(y)
        est.transform(y)
        est.score(y, clean)
        est.transform([y])  # a list of measurements
        est.transform(y[None])  # an (N, H, W, C) batch
    # The warning stays for channels the operator does not expect (2 coils: 4 channels).
    est = DIPReconstructor(operator=KSpaceSampling(mask, coil_maps=maps[:2]), **common)
    with pytest.warns(UserWarning, match="For N grey images"), pytest.raises(ValueError):
        est.fit(y)


def test_score_with_a_reference_is_the_psnr_on_the_image_range():
    # k-space spans far more than the image: its span as the PSNR's range read 20 dB high.
    from skdip import DIPReconstructor
    from skdip.metrics import psnr

    clean = np.tile(np.linspace(0.1, 0.9, 16), (16, 1))[..., None]
    mask = cartesian_mask((16, 16), acceleration=2, random_state=0)
    y = kspace_to_channels(simulate_kspace(clean[..., 0], mask, noise_std=0.01, random_state=0))
    assert y.max() - y.min() > 5
    est = DIPReconstructor(
        operator=KSpaceSampling(mask),
        output_channels=1,
        generator="skip-small",
        max_iter=10,
        early_stopping=None,
        random_state=0,
        device="cpu",
    ).fit(y, clean)
    expected = psnr(clean, est.reconstruction_, data_range=1.0)
    assert est.score(y, clean) == pytest.approx(expected, abs=1e-6)
    assert est.history_["psnr"][est.best_iter_] == pytest.approx(expected, abs=1e-3)


def test_noisy_two_coil_kspace_of_an_image_on_the_unit_range_is_fitted_as_it_is():
    # The range comes from a least-squares image; at 25 CGLS steps it semi-converged
    # on these data to [-1.04, 2.08]: fitted on a 4.7-wide span, scored 10 dB high.
    from skdip import DIPReconstructor
    from skdip.datasets import load_image
    from skdip.metrics import psnr

    image = load_image("camera", size=24, as_gray=True)
    mask = cartesian_mask(image.shape, acceleration=4, center_fraction=0.08, random_state=0)
    maps = make_coil_maps(2, image.shape)
    y = kspace_to_channels(simulate_kspace(image, mask, maps, noise_std=0.005, random_state=0))
    est = DIPReconstructor(
        operator=KSpaceSampling(mask, maps),
        output_channels=1,
        generator="skip-small",
        max_iter=5,
        early_stopping=None,
        random_state=0,
        device="cpu",
    ).fit(y)
    scaling = est._fit_results[0]["scaling"]
    assert scaling.scale == 1 and np.all(scaling.offset == 0)
    expected = psnr(image[..., None], np.clip(est.reconstruction_, 0, 1))
    assert est.score(y, image[..., None]) == pytest.approx(expected, abs=1e-6)


def test_kspace_in_scanner_units_gets_no_hot_pixel_warning():
    # Its scale comes from an image estimated by least squares, yet the check for a few
    # extreme values read the k-space itself, whose DC always stands far above the rest,
    # and told the user to remove or clip it.
    import warnings

    from skdip import DIPReconstructor, SkipNetwork
    from skdip.datasets import load_image
    from skdip.operators import KSpaceSampling

    image = load_image("camera", size=64)
    mask = cartesian_mask((64, 64), acceleration=4, random_state=0)
    X = kspace_to_channels(simulate_kspace(1e3 * image, mask, noise_std=5.0, random_state=0))
    est = DIPReconstructor(
        operator=KSpaceSampling(mask),
        output_channels=1,
        generator=SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1),
        max_iter=1,
        early_stopping=None,
        random_state=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X)
    assert not [w for w in caught if "extreme values" in str(w.message)]


# A bug the suite once missed (coil combination not divided by sum |S|^2): survived
# because make_coil_maps' maps already combine to 1; with raw sensitivities the docstring's "a fully
# sampled measurement gives back the image" fails.
def test_zero_filled_with_unnormalised_coil_maps_is_the_image():
    h, w = 6, 8
    x = _rng(31).random((h, w))
    rng = _rng(32)
    maps = 0.5 * (rng.standard_normal((3, h, w)) + 1j * rng.standard_normal((3, h, w)))
    op = KSpaceSampling(np.ones((h, w)), maps)
    k = simulate_kspace(x, np.ones((h, w)), maps)
    np.testing.assert_allclose(op.zero_filled(k), x, atol=1e-12)


# A bug the suite once missed (`all` -> `any` in _result_dtype): float32 k-space
# with a float64 estimate gave float32, where the docstring promises float64 unless both are single.
def test_data_consistency_is_single_precision_only_when_both_inputs_are():
    h, w = 6, 6
    x = _rng(33).random((h, w))
    op = KSpaceSampling(np.ones((h, w)))
    k = simulate_kspace(x, np.ones((h, w)))
    assert op.data_consistency(x, k.astype(np.complex64)).dtype == np.float64
    assert op.data_consistency(x.astype(np.float32), k).dtype == np.float64
    assert op.data_consistency(x.astype(np.float32), k.astype(np.complex64)).dtype == np.float32


# A bug the suite once missed (two-channel estimate read as re - 1j * im): the
# existing test only checks the dtype of the two-channel path, never its values.
def test_data_consistency_reads_a_two_channel_estimate_as_real_and_imaginary_parts():
    h, w = 6, 8
    mask = np.zeros((h, w), dtype=bool)
    mask[:, 3:5] = True  # few columns: the estimate decides most of the result
    op = KSpaceSampling(mask, image="complex")
    z = _rng(34).standard_normal((h, w)) + 1j * _rng(35).standard_normal((h, w))
    k = simulate_kspace(z, mask)
    estimate = _rng(36).standard_normal((h, w)) + 1j * _rng(37).standard_normal((h, w))
    two = np.stack([estimate.real, estimate.imag], axis=-1)
    np.testing.assert_allclose(
        op.data_consistency(two, k), op.data_consistency(estimate, k), atol=1e-12
    )


# A bug the suite once missed (`noise[0] + 1j * noise[1]` -> `noise[0] + 1j *
# noise[0]`): the real and imaginary noise were one draw; the test only checked their joint std.
def test_simulate_kspace_noise_is_independent_in_the_real_and_imaginary_parts():
    h, w = 32, 32
    x = _rng(38).random((h, w))
    clean = simulate_kspace(x, np.ones((h, w)))
    noise = simulate_kspace(x, np.ones((h, w)), noise_std=0.5, random_state=0) - clean
    assert abs(np.corrcoef(noise.real.ravel(), noise.imag.ravel())[0, 1]) < 0.15
    assert np.std(noise.real) == pytest.approx(0.5, rel=0.15)
    assert np.std(noise.imag) == pytest.approx(0.5, rel=0.15)


# A bug the suite once missed (the `kspace[None]` for one coil map dropped): one coil
# map gave (H, W), where the docstring promises (n_coils, H, W) with coil maps.
def test_simulate_kspace_with_one_coil_map_keeps_the_coil_axis():
    h, w = 6, 8
    x = _rng(39).random((h, w))
    maps = make_coil_maps(1, (h, w))
    k = simulate_kspace(x, np.ones((h, w)), maps)
    assert k.shape == (1, h, w)
    np.testing.assert_allclose(k[0], _fft_np(maps[0] * x), atol=1e-12)


# --------------------------------------------------------------------------- noise level


def _noisy_kspace(image, mask, maps, sigma, kind="real", seed=0):
    k = simulate_kspace(image, mask, maps, noise_std=sigma, random_state=seed)
    return kspace_to_channels(k), KSpaceSampling(mask, maps, image=kind)


@pytest.mark.parametrize(
    ("coils", "kind", "transposed"),
    [(1, "real", False), (4, "real", False), (4, "complex", False), (1, "real", True)],
)
def test_kspace_noise_level_is_estimated_from_the_measurement_alone(coils, kind, transposed):
    # The scorers read k-space as an image before: up to 236 times too high
    # (benchmarks/results/kspace_noise.md). The part no image explains is noise alone.
    from skdip.datasets import load_image
    from skdip.metrics._kspace_noise import MIN_DOF, kspace_noise_sigma

    image = load_image("camera", size=64, as_gray=True)
    if kind == "complex":
        image = image * np.exp(1j * np.linspace(-np.pi, np.pi, 64))[None]
    mask = cartesian_mask((64, 64), acceleration=4, random_state=0)
    maps = None if coils == 1 else make_coil_maps(coils, (64, 64))
    if transposed:  # whole rows sampled
        mask = mask.T
    for sigma in (1e-3, 0.1):
        data, op = _noisy_kspace(image, mask, maps, sigma, kind)
        estimate, dof = kspace_noise_sigma(data, op)
        assert dof >= MIN_DOF
        # Within 3 standard deviations of the chi-square spread (about 1 / sqrt(2 dof)).
        assert estimate / sigma == pytest.approx(1, abs=3 / np.sqrt(2 * dof))


def test_kspace_noise_level_does_not_depend_on_the_image():
    from skdip.metrics._kspace_noise import kspace_noise_sigma

    mask = cartesian_mask((32, 32), acceleration=2, random_state=0)
    maps = make_coil_maps(3, (32, 32))
    estimates = []
    for image in (np.zeros((32, 32)), 100 * _rng(40).random((32, 32))):
        data, op = _noisy_kspace(image, mask, maps, 0.01, seed=3)  # the same noise draw
        estimates.append(kspace_noise_sigma(data, op)[0])
    assert estimates[1] == pytest.approx(estimates[0], rel=1e-6)


def test_kspace_noise_level_is_not_estimated_without_redundancy_or_row_structure():
    from skdip.metrics._kspace_noise import kspace_noise_sigma

    image = _rng(41).random((16, 16))
    columns = cartesian_mask((16, 16), acceleration=2, random_state=0)
    # A complex image seen by one coil: as many unknowns as measured values.
    data, op = _noisy_kspace(image + 0j, columns, None, 0.01, kind="complex")
    estimate, dof = kspace_noise_sigma(data, op)
    assert dof == 0 and np.isnan(estimate)
    # Scattered samples: the model does not split into rows.
    data, op = _noisy_kspace(image, _mask2d(16, 16), None, 0.01)
    assert kspace_noise_sigma(data, op) is None


def test_k_space_in_numpys_uncentred_layout_is_reported():
    # np.fft.fft2's layout (zero frequency at [0, 0]) with the centred mask was fitted as
    # garbage (4.8 dB) in silence; with a mask in the same layout the rescaling failed
    # with a word on kernels summing to 0.
    import warnings

    from skdip import DIPReconstructor
    from skdip.datasets import load_image

    image = load_image("camera", size=24, as_gray=True)
    mask = cartesian_mask(image.shape, acceleration=2, center_fraction=0.1, random_state=0)
    uncentred = np.fft.fft2(image, norm="ortho")
    fast = dict(output_channels=1, generator="skip-small", max_iter=1, early_stopping=None)
    with pytest.warns(UserWarning, match=r"largest measured value lies at \(0, 1\).*fftshift"):
        DIPReconstructor(KSpaceSampling(mask), **fast).fit(
            kspace_to_channels(np.where(mask, uncentred, 0))
        )
    shifted = np.fft.ifftshift(mask)
    with pytest.warns(UserWarning, match="does not sample the zero frequency"):
        with pytest.raises(ValueError, match="rescale"):
            DIPReconstructor(KSpaceSampling(shifted), **fast).fit(
                kspace_to_channels(np.where(shifted, uncentred, 0))
            )
    # Partial Fourier stored as zeros under a column mask: the zeros were fitted as data.
    partial = simulate_kspace(image, mask, noise_std=0.01, random_state=0)
    partial[: 24 * 3 // 8] = 0
    with pytest.warns(UserWarning, match=r"9 lines at an edge of k-space hold exact zeros"):
        DIPReconstructor(KSpaceSampling(mask), **fast).fit(kspace_to_channels(partial))
    # Centred k-space, one coil or four, and a noise-free square whose k-space holds exact
    # zeros on isolated lines: no such warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*(zero frequency|exact zeros)")
        for maps in (None, make_coil_maps(4, image.shape)):
            k = kspace_to_channels(simulate_kspace(image, mask, maps, noise_std=0.01))
            DIPReconstructor(KSpaceSampling(mask, maps), **fast).fit(k)
        square = np.zeros(image.shape)
        square[6:18, 6:18] = 1.0
        exact = kspace_to_channels(simulate_kspace(square, mask))
        assert KSpaceSampling(mask)._measurement_problems(exact) == []
        # A point object's k-space is flat: its largest value lies anywhere (it was
        # told to fftshift).
        point = np.zeros(image.shape)
        point[5, 7] = 1.0
        flat = kspace_to_channels(simulate_kspace(point, mask, noise_std=1e-3, random_state=0))
        assert KSpaceSampling(mask)._measurement_problems(flat) == []


def test_uncentred_layout_advice_brings_the_image_back_unswapped():
    # fftshift of numpy-layout k-space and mask fits fftshift(image): the advice said
    # nothing of it, and the reconstruction came back with its quadrants swapped.
    from skdip.datasets import load_image

    image = load_image("camera", size=23, as_gray=True)  # odd: fftshift is not ifftshift
    mask = np.ones(image.shape, dtype=bool)
    kspace = np.fft.fft2(image, norm="ortho")
    problems = KSpaceSampling(np.fft.ifftshift(mask))._measurement_problems(
        kspace_to_channels(kspace)
    )
    assert any("np.fft.ifftshift the result" in p for p in problems)
    fitted = KSpaceSampling(np.fft.fftshift(mask)).zero_filled(np.fft.fftshift(kspace))
    assert np.abs(fitted - image).max() > 0.1  # swapped, as the advice says
    np.testing.assert_allclose(np.fft.ifftshift(fitted), image, atol=1e-12)


def test_sampled_lines_holding_exact_zeros_are_reported():
    # A mask that is not the data's (all ones over zero-filled k-space, another seed)
    # fitted unmeasured columns as measured zeros, in silence.
    import warnings

    from skdip import DIPReconstructor
    from skdip.datasets import load_image

    image = load_image("camera", size=64, as_gray=True)
    maps = make_coil_maps(4, image.shape)
    mask = cartesian_mask(image.shape, acceleration=4, random_state=0)
    data = kspace_to_channels(simulate_kspace(image, mask, maps, noise_std=0.01, random_state=0))
    fast = dict(output_channels=1, generator="skip-small", max_iter=1, early_stopping=None)
    with pytest.warns(UserWarning, match="48 of the 64 sampled columns hold exact zeros"):
        DIPReconstructor(KSpaceSampling(np.ones(image.shape), maps), **fast).fit(data)
    other = cartesian_mask(image.shape, acceleration=4, random_state=1)
    rows = KSpaceSampling(other.T, maps.transpose(0, 2, 1))._measurement_problems(
        data.transpose(1, 0, 2)
    )
    assert any("8 of the 16 sampled rows hold exact zeros" in p for p in rows)
    with pytest.warns(UserWarning, match="8 of the 16 sampled columns hold exact zeros"):
        DIPReconstructor(KSpaceSampling(other, maps), **fast).fit(data)
    # Not told: the right mask, and noise-free objects whose k-space holds exact zeros
    # on isolated lines (a square, a rectangle) or everywhere but the centre (flat).
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*exact zeros")
        DIPReconstructor(KSpaceSampling(mask, maps), **fast).fit(data)
    square = np.zeros(image.shape)
    square[16:48, 16:48] = 1.0
    rectangle = np.zeros(image.shape)
    rectangle[8:32, 16:56] = 1.0
    # Without coil maps a flat object, or one constant along the lines (a ramp across
    # them), holds all its power on the zero-frequency line: that was told as a block
    # of lines cut off at an edge (partial Fourier).
    ramp = np.tile(np.linspace(0, 1, image.shape[1]), (image.shape[0], 1))
    flat = np.full(image.shape, 0.5)
    cases = ((square, None), (rectangle, None), (flat, maps), (flat, None), (ramp, None))
    for obj, maps_ in cases:
        exact = kspace_to_channels(simulate_kspace(obj, mask, maps_))
        assert KSpaceSampling(mask, maps_)._measurement_problems(exact) == []


def test_measurement_mostly_unexplained_by_the_model_is_reported():
    # K-space of an image with phase fitted as a real image: the redundancy read the
    # imaginary part as noise above the data's own RMS, and fitting went on in silence.
    from skdip import DIPReconstructor
    from skdip.datasets import load_image

    image = load_image("camera", size=32, as_gray=True)
    rows, cols = np.mgrid[:32, :32] / 32
    phased = image * np.exp(1j * np.pi * (rows + cols))
    maps = make_coil_maps(4, image.shape)
    mask = cartesian_mask(image.shape, acceleration=4, random_state=0)
    data = kspace_to_channels(simulate_kspace(phased, mask, maps, noise_std=0.01, random_state=0))
    fast = dict(generator="skip-small", max_iter=1, early_stopping=None)
    with pytest.warns(UserWarning, match=r"no real image explains .* times the sampled.*'complex'"):
        DIPReconstructor(KSpaceSampling(mask, maps), **fast).fit(data)
    assert KSpaceSampling(mask, maps, image="complex")._measurement_problems(data) == []
    wrong = KSpaceSampling(mask, maps[::-1], image="complex")._measurement_problems(data)
    assert len(wrong) == 1 and "coil maps are not the data's" in wrong[0]
    assert "'complex'" not in wrong[0]
    # A real image's k-space under the real model, and under heavy noise (half the span).
    for noise in (0.01, 0.5):
        real = simulate_kspace(image, mask, maps, noise_std=noise, random_state=0)
        assert KSpaceSampling(mask, maps)._measurement_problems(kspace_to_channels(real)) == []


def test_nan_in_kspace_is_told_how_unsampled_entries_are_marked():
    # NaN stored for entries not acquired was refused with no word of the mask.
    mask = cartesian_mask((8, 8), acceleration=2, random_state=0)
    k = np.where(mask, simulate_kspace(_rng(45).random((8, 8)), mask), np.nan)
    hint = r"\(32 NaN\): entries that were not sampled are told by the mask"
    with pytest.raises(ValueError, match=hint):
        kspace_to_channels(k)
    with pytest.raises(ValueError, match=hint):
        KSpaceSampling(mask).zero_filled(k)
    np.testing.assert_array_equal(
        KSpaceSampling(mask).zero_filled(np.nan_to_num(k, nan=0.0)),
        KSpaceSampling(mask).zero_filled(np.where(mask, k, 0)),
    )
    with pytest.raises(ValueError, match=r"infinite values$"):
        kspace_to_channels(np.full((2, 2), np.inf + 0j))


def test_a_coil_count_mismatch_is_told_in_the_layout_given():
    # Four channels for four coils (one per coil) were told "2 coil(s)", no word of
    # the channels each coil takes.
    op = KSpaceSampling(np.ones((8, 8)), make_coil_maps(4, (8, 8)))
    with pytest.raises(ValueError, match=r"has 4 channels, the real and imaginary parts of 2 "):
        op.zero_filled(np.ones((8, 8, 4)))
    with pytest.raises(ValueError, match=r"4 coil\(s\) \(8 channels\)$"):
        op.zero_filled(np.ones((8, 8, 4)))
    with pytest.raises(ValueError, match=r"has 2 coil\(s\) but the operator has 4 coil\(s\)$"):
        op.zero_filled(np.ones((2, 8, 8), dtype=complex))


def test_masked_kspace_is_read_where_the_mask_samples():
    # Masked entries where nothing is sampled are ignored (as before the masked-array
    # refusal); masked sampled entries are data, refused.
    mask = cartesian_mask((8, 8), acceleration=2, random_state=0)
    k = simulate_kspace(_rng(43).random((8, 8)), mask, noise_std=0.01, random_state=0)
    op = KSpaceSampling(mask)
    plain = op.zero_filled(k)
    np.testing.assert_array_equal(op.zero_filled(np.ma.masked_array(k, ~mask)), plain)
    channels = np.ma.masked_array(kspace_to_channels(k), np.repeat(~mask[..., None], 2, axis=2))
    np.testing.assert_array_equal(op.zero_filled(channels), plain)
    with pytest.raises(ValueError, match="masked entries where the mask samples"):
        op.zero_filled(np.ma.masked_array(k, mask))


def test_kspace_helpers_keep_single_precision_in_either_byte_order():
    k = (_rng(44).random((8, 8)) + 1j).astype(">c8")
    assert kspace_to_channels(k).dtype == np.float32
    channels = kspace_to_channels(k.astype(np.complex64)).astype(">f4")
    assert channels_to_kspace(channels).dtype == np.complex64
    assert KSpaceSampling(np.ones((8, 8))).zero_filled(k).dtype == np.float32


def test_coil_maps_refuse_masked_arrays_and_take_array_likes():
    maps = make_coil_maps(2, (8, 8))
    hidden = np.zeros(maps.shape, dtype=bool)
    hidden[0, 0, 0] = True
    with pytest.raises(ValueError, match="coil_maps is a masked array with 1 masked value"):
        KSpaceSampling(np.ones((8, 8)), np.ma.masked_array(maps, hidden))

    class Wrapped:  # an array-like that is not a NumPy array (dask, xarray, ...)
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    wrapped = KSpaceSampling(np.ones((8, 8)), Wrapped(maps)).coil_maps
    assert torch.equal(wrapped, KSpaceSampling(np.ones((8, 8)), maps).coil_maps)
