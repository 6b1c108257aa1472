"""Tests of skdip.datasets: bundled images, noise models, blur kernels."""

import warnings

import numpy as np
import pytest

from skdip.datasets import (
    IMAGE_NAMES,
    NOISE_KINDS,
    NOISE_LEVELS,
    add_gaussian_noise,
    add_impulse_noise,
    add_noise,
    add_poisson_noise,
    add_speckle_noise,
    blur,
    load_image,
    make_disk_kernel,
    make_gaussian_kernel,
    make_motion_kernel,
)

GREY = np.full((64, 64), 0.5)
ADDERS = {
    "gaussian": (add_gaussian_noise, 0.1),
    "poisson": (add_poisson_noise, 25),
    "speckle": (add_speckle_noise, 0.3),
    "impulse": (add_impulse_noise, 0.3),
}


def _ramp(shape=(16, 16, 3)):
    return np.linspace(0.0, 1.0, int(np.prod(shape))).reshape(shape)


def _centre_of_mass(k):
    rows, cols = np.indices(k.shape)
    return (rows * k).sum() / k.sum(), (cols * k).sum() / k.sum()


# --------------------------------------------------------------------------- images


def test_load_image_grey_and_colour():
    cam = load_image("camera")
    assert cam.shape == (512, 512) and cam.dtype == np.float64
    assert cam.min() >= 0 and cam.max() <= 1 and cam.max() > 0.9
    astro = load_image("astronaut", size=(24, 40))
    assert astro.shape == (24, 40, 3) and astro.dtype == np.float64
    assert 0 <= astro.min() and astro.max() <= 1
    grey = load_image("astronaut", size=24, as_gray=True)
    assert grey.shape == (24, 24)
    # The grey version is a luma-weighted mix of the colour one.
    col = load_image("astronaut", size=24)
    assert np.allclose(grey, col @ [0.2125, 0.7154, 0.0721], atol=1e-6)


def test_load_image_drops_alpha_and_converts_bool():
    logo = load_image("logo", size=16)
    assert logo.shape == (16, 16, 3)
    horse = load_image("horse")
    assert horse.dtype == np.float64 and set(np.unique(horse)) <= {0.0, 1.0}


def test_load_image_centre_crop_keeps_aspect():
    # camera is square: a wide target keeps the middle rows, unstretched.
    full = load_image("camera")
    wide = load_image("camera", size=(256, 512))
    assert wide.shape == (256, 512)
    assert np.allclose(wide, full[128:384], atol=1e-12)


def test_load_image_returns_fresh_arrays():
    a = load_image("shepp_logan_phantom")
    a[:] = 0
    assert load_image("shepp_logan_phantom").max() == 1.0


def test_load_image_errors():
    with pytest.raises(ValueError, match="unknown image"):
        load_image("lena")
    with pytest.raises(TypeError):
        load_image(3)
    with pytest.raises(ValueError):
        load_image("camera", size=0)
    with pytest.raises(TypeError):
        load_image("camera", size=(8, 8, 3))
    assert "camera" in IMAGE_NAMES and "lfw_subset" not in IMAGE_NAMES
    # A truthy string turned a colour picture grey.
    with pytest.raises(TypeError, match="as_gray must be a bool, got 'no'"):
        load_image("astronaut", size=8, as_gray="no")
    assert load_image("astronaut", size=8, as_gray=np.False_).shape == (8, 8, 3)


# --------------------------------------------------------------------------- noise


def test_gaussian_noise_statistics():
    y = add_gaussian_noise(GREY, 0.1, random_state=0)
    residual = y - GREY
    assert abs(residual.std() - 0.1) < 0.01
    assert abs(residual.mean()) < 0.01


def test_poisson_noise_statistics():
    y = add_poisson_noise(GREY, 25, random_state=0)
    assert abs(y.mean() - 0.5) < 0.01
    # variance of Poisson(lambda x) / lambda is x / lambda
    assert abs(y.var() / (0.5 / 25) - 1) < 0.15
    # values are multiples of 1 / photons
    assert np.allclose(y * 25, np.round(y * 25))


@pytest.mark.parametrize("photons", [0.1, 1])
def test_poisson_noise_of_at_most_one_photon_is_warned_of(photons):
    # Every value came out 0 or 1 and a 0.5 grey averaged 0.048 at photons=0.1, silently;
    # add_noise's level, "more is noisier" for the other kinds, is a count here.
    with pytest.warns(UserWarning, match=r"0 or 1.*fewer means noisier"):
        y = add_noise(GREY, "poisson", photons, random_state=0)
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert abs(y.mean() - (1 - np.exp(-photons * 0.5))) < 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_poisson_noise(GREY, 2, random_state=0)


def test_speckle_noise_statistics():
    y = add_speckle_noise(GREY, 0.2, random_state=0)
    assert abs((y - GREY).std() - 0.5 * 0.2) < 0.01
    x = GREY.copy()
    x[:8] = 0.0
    assert np.all(add_speckle_noise(x, 0.4, random_state=1)[:8] == 0)


def test_speckle_noise_above_one_is_warned_of():
    # c=20 (a percentage) clipped 96% of the values to 0 or 1, silently.
    with pytest.warns(UserWarning, match=r"c=20/100"):
        y = add_noise(GREY, "speckle", 20, random_state=0)
    assert np.isin(y, [0.0, 1.0]).mean() > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_speckle_noise(GREY, 1, random_state=0)


def test_impulse_noise_fraction_and_values():
    y = add_impulse_noise(GREY, 0.3, random_state=0)
    changed = y != 0.5
    assert abs(changed.mean() - 0.3) < 0.03
    assert set(np.unique(y[changed])) == {0.0, 1.0}
    assert abs((y[changed] == 1).mean() - 0.5) < 0.08


def test_impulse_noise_colour_is_per_channel():
    x = np.full((32, 32, 3), 0.5)
    y = add_impulse_noise(x, 0.5, random_state=0)
    hit = y != 0.5
    assert abs(hit.mean() - 0.5) < 0.05
    # Some pixels have only part of their channels corrupted.
    assert np.any(hit.any(axis=-1) & ~hit.all(axis=-1))


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_determinism_and_seeds(kind):
    func, level = ADDERS[kind]
    x = _ramp()
    a = func(x, level, random_state=3)
    assert np.array_equal(a, func(x, level, random_state=3))
    assert np.array_equal(a, func(x, level, random_state=np.random.RandomState(3)))
    assert not np.array_equal(a, func(x, level, random_state=4))
    g1 = func(x, level, random_state=np.random.default_rng(5))
    g2 = func(x, level, random_state=np.random.default_rng(5))
    assert np.array_equal(g1, g2)
    assert np.array_equal(add_noise(x, kind, level, random_state=3), a)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_leaves_input_and_clips(kind):
    func, _ = ADDERS[kind]
    strong = {"gaussian": 0.8, "poisson": 2, "speckle": 1.0, "impulse": 0.9}[kind]
    x = _ramp()
    before = x.copy()
    y = func(x, strong, random_state=0)
    assert np.array_equal(x, before)
    assert y.shape == x.shape and not np.shares_memory(x, y)
    assert y.min() >= 0 and y.max() <= 1
    assert np.issubdtype(y.dtype, np.floating)
    # float32 in, float32 out
    assert func(x.astype(np.float32), strong, random_state=0).dtype == np.float32


def test_noise_levels_table():
    assert dict(NOISE_LEVELS) == {
        "gaussian": (0.12, 0.18, 0.26),
        "poisson": (25, 12, 5),
        "speckle": (0.20, 0.35, 0.45),
        "impulse": (0.3, 0.5, 0.7),
    }
    assert set(NOISE_KINDS) == set(NOISE_LEVELS)


def test_a_gaussian_kernel_cut_well_inside_its_sigma_is_warned_of():
    # make_gaussian_kernel(5, 3.0) blurred with a standard deviation of 1.36, not 3.
    with pytest.warns(UserWarning, match=r"standard deviation is 1.36 pixels, not 3"):
        k = make_gaussian_kernel(5, 3.0)
    assert k.sum() == pytest.approx(1.0)
    with pytest.warns(UserWarning, match=r"not 1e\+300"):
        make_gaussian_kernel(3, 1e300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for size, sigma in [(3, 1.0), (5, 1.0), (9, 2.0), (11, 1.6), (5, 2.0)]:
            make_gaussian_kernel(size, sigma)
        # A 1x1 kernel is the identity whatever sigma: nothing is cut from it.
        assert make_gaussian_kernel(1, 3.0).tolist() == [[1.0]]


def test_noise_errors():
    with pytest.raises(ValueError, match="unknown noise kind"):
        add_noise(GREY, "pink", 0.1)
    with pytest.raises(ValueError):
        add_gaussian_noise(GREY, -0.1)
    with pytest.raises(ValueError, match=r"photons must be a finite number > 0, got 0"):
        add_poisson_noise(GREY, 0)
    with pytest.raises(ValueError, match="beyond what a Poisson draw can take"):
        add_poisson_noise(GREY, 1e30)
    with pytest.raises(ValueError):
        add_impulse_noise(GREY, 1.5)
    with pytest.raises(TypeError):
        add_speckle_noise(GREY, "0.2")
    bad = GREY.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        add_gaussian_noise(bad, 0.1)
    with pytest.raises(ValueError, match="2-D"):
        add_gaussian_noise(np.zeros(5), 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        add_gaussian_noise(np.full((4, 4), 200, dtype=np.uint8), 0.1)


# --------------------------------------------------------------------------- kernels


def _check_kernel(k, size):
    assert k.shape == (size, size) and size % 2 == 1
    assert k.dtype == np.float64
    assert k.min() >= 0
    assert abs(k.sum() - 1) < 1e-12
    cy, cx = _centre_of_mass(k)
    assert abs(cy - size // 2) <= 0.5 and abs(cx - size // 2) <= 0.5


@pytest.mark.parametrize("size,sigma", [(1, 1.0), (7, 1.0), (15, 3.0)])
def test_gaussian_kernel(size, sigma):
    k = make_gaussian_kernel(size, sigma)
    _check_kernel(k, size)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1])
    if size > 1:
        r = np.arange(size) - size // 2
        expected = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
        assert np.allclose(k, expected / expected.sum())


def test_disk_kernel():
    k = make_disk_kernel(11, 4.0)
    _check_kernel(k, 11)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
    assert k[0, 0] == 0 and k[5, 0] == 0  # outside the disk
    assert np.isclose(k[5, 5], k.max())  # flat top
    # edge pixels are partially covered (anti-aliasing)
    assert 0 < k[5, 1] < k[5, 5]
    delta = make_disk_kernel(5, 0.1)
    assert delta[2, 2] == 1.0


@pytest.mark.parametrize("size", list(range(9, 42, 4)) + [41])
def test_motion_kernel_valid_for_sizes(size):
    k = make_motion_kernel(size, random_state=size)
    _check_kernel(k, size)
    cy, cx = _centre_of_mass(k)
    assert abs(cy - size // 2) < 1e-6 and abs(cx - size // 2) < 1e-6
    # a blur, not a point: spread over several pixels
    assert (k > 1e-3 * k.max()).sum() > size // 2


def test_motion_kernel_random_state():
    a = make_motion_kernel(21, random_state=0)
    assert np.array_equal(a, make_motion_kernel(21, random_state=0))
    assert not np.allclose(a, make_motion_kernel(21, random_state=1))
    g = make_motion_kernel(21, random_state=np.random.default_rng(0))
    _check_kernel(g, 21)


def test_motion_kernel_length_controls_extent():
    def extent(k):
        rows, cols = np.nonzero(k > 1e-3 * k.max())
        return max(np.ptp(rows), np.ptp(cols))

    short = make_motion_kernel(31, random_state=2, length=0.3)
    long = make_motion_kernel(31, random_state=2, length=1.0)
    assert extent(short) < extent(long)
    # intensity 0 gives a straight line: thin across, long along its direction
    line = make_motion_kernel(31, random_state=2, length=1.0, intensity=0.0)
    _check_kernel(line, 31)
    rows, cols = np.indices(line.shape)
    pts = np.stack([rows.ravel(), cols.ravel()], axis=1) - 15.0
    cov = (pts * line.ravel()[:, None]).T @ pts
    minor, major = np.sqrt(np.linalg.eigvalsh(cov))
    assert minor < 1.0 and major > 5.0


def test_kernel_errors():
    with pytest.raises(ValueError, match="odd"):
        make_gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError):
        make_gaussian_kernel(5, 0.0)
    with pytest.raises(TypeError):
        make_gaussian_kernel(5.0, 1.0)
    with pytest.raises(ValueError, match="fit"):
        make_disk_kernel(5, 3.0)
    with pytest.raises(ValueError):
        make_motion_kernel(8)
    with pytest.raises(ValueError):
        make_motion_kernel(9, intensity=2.0)
    with pytest.raises(ValueError):
        make_motion_kernel(9, length=0.0)


# --------------------------------------------------------------------------- blur


def test_blur_shapes():
    x = _ramp((20, 24, 3))
    k = make_gaussian_kernel(5, 1.0)
    assert blur(x, k).shape == (16, 20, 3)
    assert blur(x[..., 0], k, mode="valid").shape == (16, 20)
    assert blur(x, k, mode="same").shape == x.shape
    assert blur(x, k, mode="wrap").shape == x.shape
    assert blur(x, k, mode="full").shape == (24, 28, 3)


def test_blur_is_true_convolution():
    k = np.arange(1.0, 10.0).reshape(3, 3)
    k /= k.sum()
    impulse = np.zeros((7, 7))
    impulse[3, 3] = 1.0
    # The response to a centred impulse is the kernel itself, not flipped.
    assert np.allclose(blur(impulse, k, mode="same")[2:5, 2:5], k)
    assert np.allclose(blur(impulse, k, mode="valid")[1:4, 1:4], k)
    # valid mode: y[i, j] = sum k[m, n] x[i + 2 - m, j + 2 - n]
    x = np.random.default_rng(0).random((6, 6))
    assert np.isclose(blur(x, k)[0, 0], np.sum(k * x[2::-1, 2::-1]))


def test_blur_wrap_and_input_untouched():
    x = np.random.default_rng(1).random((16, 16))
    before = x.copy()
    k = make_motion_kernel(7, random_state=0)
    y = blur(x, k, mode="wrap")
    assert np.array_equal(x, before)
    assert np.isclose(y.mean(), x.mean())  # circular blur keeps the mean
    assert y.min() >= 0
    shifted = np.zeros((3, 3))
    shifted[1, 2] = 1.0  # moves content one column to the right
    assert np.allclose(blur(x, shifted, mode="wrap"), np.roll(x, 1, axis=1))


def test_blur_takes_the_convolution_operators_name_for_the_circular_mode():
    # Convolution and DIPDeconvolver call it boundary="circular"; blur refused that name.
    x = np.random.default_rng(1).random((16, 16))
    k = make_motion_kernel(7, random_state=0)
    assert np.array_equal(blur(x, k, mode="circular"), blur(x, k, mode="wrap"))


@pytest.mark.parametrize("shape", [(4, 4), (2, 3), (4, 3)])
def test_blur_centres_even_kernels_like_the_convolution_operator_and_scipy(shape):
    # Data simulated with blur(mode="wrap") must be the DIPDeconvolver's model
    # (Convolution, boundary="circular"), not that model shifted by a pixel.
    import torch
    from scipy.signal import convolve2d

    from skdip.operators import Convolution

    rng = np.random.default_rng(0)
    x, k = rng.random((9, 8)), rng.random(shape)
    model = Convolution(k, boundary="circular").double()
    expected = model(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(blur(x, k, mode="wrap"), expected, atol=1e-6)
    np.testing.assert_allclose(blur(x, k, mode="same"), convolve2d(x, k, mode="same"), atol=1e-12)


def test_a_tiny_gaussian_sigma_gives_the_delta_kernel():
    k = make_gaussian_kernel(3, 1e-200)
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    np.testing.assert_array_equal(k, delta)


def test_blur_errors():
    x = np.zeros((8, 8))
    with pytest.raises(ValueError, match="mode"):
        blur(x, np.ones((3, 3)), mode="mirror")
    with pytest.raises(ValueError, match="larger"):
        blur(x, np.ones((9, 9)))
    with pytest.raises(ValueError):
        blur(x, np.ones((3, 3, 1)))
    with pytest.raises(ValueError):
        blur(x, np.full((3, 3), np.inf))


def test_motion_kernel_too_small_to_move_is_refused():
    # At size 5 the default smoothing leaves the path no room: every seed gave the
    # same centred blob. Without smoothing a 5x5 kernel can move.
    with pytest.raises(ValueError, match="no room for motion.*smallest size is 7"):
        make_motion_kernel(5, random_state=0)
    with pytest.raises(ValueError, match="no room for motion"):
        make_motion_kernel(3, random_state=0, smoothing=0)
    moving = [make_motion_kernel(5, random_state=s, smoothing=0) for s in range(3)]
    assert not np.allclose(moving[0], moving[1]) or not np.allclose(moving[1], moving[2])
    assert not np.allclose(
        make_motion_kernel(7, random_state=0), make_motion_kernel(7, random_state=1)
    )


def test_a_gaussian_level_on_the_0_255_scale_is_reported():
    # sigma=25 left 98.5% of the pixels at 0 or 1, silently.
    with pytest.warns(UserWarning, match=r"sigma=25/255"):
        add_noise(GREY, "gaussian", 25, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        add_noise(GREY, "gaussian", 25 / 255, random_state=0)


# A bug the suite once missed: a tall target cropped the columns from the left, not about the centre
def test_load_image_tall_target_keeps_the_middle_columns(monkeypatch):
    import skimage.data

    from skdip.datasets import load_image

    ramp = np.tile(np.arange(40, dtype=np.uint8), (20, 1))  # pixel value = column
    monkeypatch.setattr(skimage.data, "camera", lambda: ramp)
    out = load_image("camera", size=(20, 20))  # crop only, no resize
    np.testing.assert_allclose(out[0] * 255, np.arange(10, 30), atol=1e-9)


# A bug the suite once missed: resize padded with zeros (mode="constant"): the border of a shrunk
# picture bends towards black (a ramp's last column fell from 0.97 to 0.79)
def test_load_image_resize_keeps_a_ramp_monotone_to_the_border(monkeypatch):
    import skimage.data

    from skdip.datasets import load_image

    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # 64x64, 0 to 252
    monkeypatch.setattr(skimage.data, "camera", lambda: ramp)
    out = load_image("camera", size=(16, 16))
    assert (np.diff(out, axis=1) > 0).all()
    assert out[:, -1].min() > 0.9 and out[:, 0].max() < 0.1


# A bug the suite once missed: size with one non-positive side accepted
def test_load_image_refuses_a_size_with_one_non_positive_side():
    from skdip.datasets import load_image

    for size in [(0, 8), (8, 0), (-2, 8)]:
        with pytest.raises(
            ValueError, match="size must be a positive int, a pair of positive ints or None, got "
        ):
            load_image("camera", size=size)


def test_blur_warns_of_a_kernel_that_changes_the_brightness():
    image = np.random.default_rng(0).random((16, 16))
    psf = np.zeros((5, 5), dtype=np.uint8)
    psf[1:4, 1:4] = 200  # a PSF as recorded: sums to 1800
    with pytest.warns(UserWarning, match="kernel sums to 1.8e\\+03"):
        out = blur(image, psf)
    assert out.mean() > 100 * image.mean()  # as documented: the kernel is used as given
    # A kernel of the wrong sign inverted the image in silence, as DIPDeconvolver warns.
    with pytest.warns(UserWarning, match="kernel sums to -1 < 0.*Check its sign"):
        assert blur(image, -(psf / psf.sum())).mean() < 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blur(image, psf / psf.sum())
