"""Bad or ambiguous input found by a review of the entry points: each case was a
silent wrong answer, a raw error deep inside, or work thrown away."""

import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from skdip import (
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    HIOPhaseRetriever,
    SkipNetwork,
)
from skdip.operators import ForwardOperator, FunctionOperator

TINY = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=1)
COMMON = dict(generator=TINY, max_iter=3, early_stopping=None, random_state=0, device="cpu")


def _ramp(h=16, w=16):
    return np.tile(np.linspace(0.1, 0.9, w), (h, 1))


# ------------------------------------------------------------------ containers
def test_masked_values_are_missing_for_the_inpainter():
    # np.asarray dropped the mask: the placeholder -1000 was fitted and put back.
    data = _ramp()
    data[4:8, 4:8] = -1000
    masked = np.ma.masked_array(data, mask=False)
    masked[4:8, 4:8] = np.ma.masked
    inp = DIPInpainter(**COMMON).fit(masked)
    nan = _ramp()
    nan[4:8, 4:8] = np.nan
    expected = DIPInpainter(**COMMON).fit(nan)
    assert not inp.mask_[4:8, 4:8].any() and inp.mask_.sum() == 256 - 16
    np.testing.assert_array_equal(inp.reconstruction_, expected.reconstruction_)
    assert data[5, 5] == -1000  # the caller's data untouched


def test_a_masked_uint8_image_keeps_its_scale():
    data = (_ramp() * 255).astype(np.uint8)
    masked = np.ma.masked_array(data, mask=np.zeros(data.shape, bool))
    masked[0, 0] = np.ma.masked
    out = DIPInpainter(**COMMON).fit_transform(masked)
    assert out.dtype == np.float64 and out.max() <= 1.0
    np.testing.assert_allclose(out[0, 1:], data[0, 1:] / 255.0)  # kept observed values


def test_other_estimators_refuse_masked_values():
    masked = np.ma.masked_array(_ramp(), mask=False)
    masked[2, 2] = np.ma.masked
    with pytest.raises(ValueError, match="masked array with 1 masked value"):
        DIPDenoiser(**COMMON).fit(masked)
    # Nothing masked: the data as they are.
    plain = DIPDenoiser(**COMMON).fit_transform(_ramp())
    np.testing.assert_array_equal(
        DIPDenoiser(**COMMON).fit_transform(np.ma.masked_array(_ramp())), plain
    )


def test_the_rows_of_a_colour_image_are_not_taken_for_a_batch():
    # rgb.tolist() came back as 8 "grey images" of shape (8, 3): nested lists are one
    # array, as np.asarray reads them; a list of the rows as arrays is refused.
    rgb = np.stack([_ramp(8, 8)] * 3, -1)
    expected = DIPDenoiser(**COMMON).fit_transform(rgb)
    np.testing.assert_array_equal(DIPDenoiser(**COMMON).fit_transform(rgb.tolist()), expected)
    with pytest.raises(ValueError, match=r"list of 8 arrays of shape \(8, 3\).*np.asarray"):
        DIPDenoiser(**COMMON).fit(list(rgb))
    # Two "columns": possibly a batch of narrow images, so a warning, fitted as given.
    with pytest.warns(UserWarning, match="read as 2 grey images 2 pixel"):
        assert DIPDenoiser(**COMMON).fit([_ramp(24, 2), _ramp(24, 2)]).n_images_ == 2
    # Nested lists of several images of different sizes stay a list of images.
    pair = DIPDenoiser(**COMMON).fit_transform([_ramp(8, 8).tolist(), _ramp(9, 7).tolist()])
    assert [p.shape for p in pair] == [(8, 8), (9, 7)]


def test_an_object_array_of_images_of_different_sizes_is_told_to_be_a_list():
    # np.array(images, dtype=object), or a table's column of images: the message said
    # "X has dtype object; images must be numeric arrays", not that a list is wanted.
    sizes = [(8, 8), (9, 7), (8, 10), (12, 8)]
    images = np.empty(len(sizes), dtype=object)
    images[:] = [_ramp(*size) for size in sizes]
    message = (
        "X has dtype object; images must be numeric arrays; it holds 4 images ((8, 8), "
        "(9, 7), (8, 10), 1 more): pass images of different sizes as a list, list(X)"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        DIPDenoiser(**COMMON).fit(images)
    # What the message advises fits them.
    assert [x.shape for x in DIPDenoiser(**COMMON).fit_transform(list(images))] == sizes
    # An object array of anything else keeps the plain message.
    with pytest.raises(TypeError, match="^X has dtype object; images must be numeric arrays$"):
        DIPDenoiser(**COMMON).fit(np.full((8, 8), None))


def test_iterators_sets_and_dicts_of_images_are_told_to_be_lists():
    # Read by np.asarray as one opaque object: "X has dtype object; images must be
    # numeric arrays", which named neither what was given nor what to give.
    images = {"a": _ramp(), "b": _ramp()}
    for given, fix in (
        ((im for im in images.values()), r"list\(X\)"),
        (map(np.asarray, images.values()), r"list\(X\)"),
        (images, r"list\(X\.values\(\)\)"),
        (images.values(), r"list\(X\)"),
    ):
        with pytest.raises(TypeError, match=rf"X is a {type(given).__name__}.*{fix}"):
            DIPDenoiser(**COMMON).fit(given)
    with pytest.raises(TypeError, match=r"X\[1\] is a generator"):
        DIPInpainter(**COMMON).fit([_ramp(), (row for row in _ramp())])
    with pytest.raises(TypeError, match=r"X\[1\] is a generator"):
        DIPDenoiser(**COMMON).fit([_ramp(), (row for row in _ramp())])  # no NaN allowed
    with pytest.raises(TypeError, match=r"X is a set.*list\(X\)"):
        DIPDenoiser(**COMMON).fit({tuple(map(tuple, _ramp()))})  # nested tuples hash
    with pytest.raises(TypeError, match=r"y is a dict"):
        DIPDenoiser(**COMMON).fit(_ramp(), y={"clean": _ramp()})


def test_a_ragged_nested_list_is_named():
    with pytest.raises(ValueError, match="rows have different lengths"):
        DIPDenoiser(**COMMON).fit([[0.1, 0.2, 0.3], [0.4, 0.5], [0.6, 0.7, 0.8]])


def test_the_inpainter_refuses_tensors_as_the_others_do():
    with pytest.raises(TypeError, match=r"X\[0\] is a torch.Tensor"):
        DIPInpainter(**COMMON).fit([torch.tensor(_ramp())])


# ----------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", ["max_iter", "lr", "batch_size", "reg_noise_std"])
def test_a_bool_is_not_a_number(name):
    # max_iter=True ran one step and lr=True a rate of 1, silently.
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter .* not a bool"):
        DIPDenoiser(**{**COMMON, name: True}).fit(_ramp())


def test_a_bool_is_not_a_number_for_hio_either():
    with pytest.raises(InvalidParameterError, match="'max_iter' parameter .* not a bool"):
        HIOPhaseRetriever(max_iter=True).fit(np.ones((8, 8)))


@pytest.mark.parametrize("make", [DIPDenoiser, HIOPhaseRetriever], ids=["dip", "hio"])
def test_n_jobs_zero_is_refused_before_any_work(make):
    # It passed the checks and failed inside joblib, after the inputs were prepared.
    with pytest.raises(InvalidParameterError, match="'n_jobs' parameter"):
        make(n_jobs=0).fit(np.ones((8, 8)))
    assert make(n_jobs=-1).get_params()["n_jobs"] == -1


def test_bool_parameters_still_take_bools():
    DIPDenoiser(**{**COMMON, "rescale": True, "verbose": False}).fit(_ramp())


def test_a_skip_network_far_deeper_than_the_image_is_refused():
    # depth=10 on 16x16 ran on a 2048x2048 canvas and exhausted the memory.
    with pytest.raises(ValueError, match=r"depth=10\) works on a 2048x2048 canvas"):
        DIPDenoiser(**{**COMMON, "generator": SkipNetwork(depth=10, width=4)}).fit(_ramp())
    # The default depth on a small image is fine.
    SkipNetwork(width=4).build((8, 8), 1)


# ------------------------------------------------------------- forward models
def _grey_camera(x):
    return x.mean(1, keepdim=True)


def test_a_channel_mismatch_is_found_before_the_first_fit():
    # Image 0 was fitted to the end (200 steps), then the error came at image 1.
    steps = []
    est = DIPReconstructor(
        operator=_grey_camera, callback=lambda i, loss, e: steps.append(i), **COMMON
    )
    with pytest.raises(ValueError, match=r"1 channel\(s\) from .* but the observation has 3"):
        est.fit([_ramp(), np.stack([_ramp()] * 3, -1)])
    assert steps == []


def test_a_forward_model_giving_nan_is_refused_before_the_fit():
    with pytest.raises(ValueError, match="NaN or infinite measurements"):
        DIPReconstructor(operator=lambda x: x * float("nan"), **COMMON).fit(_ramp())


@pytest.mark.parametrize(
    "make",
    [
        lambda: DIPDeconvolver(kernel=[[0, 1, 0], [1, -4, 1], [0, 1, 0]], **COMMON),
        lambda: DIPReconstructor(operator=lambda x: x - torch.roll(x, 1, -1), **COMMON),
    ],
)
def test_a_zero_gain_model_cannot_be_rescaled(make):
    # ZeroDivisionError in the rescaling before.
    with pytest.raises(ValueError, match=r"measures a constant image as \(nearly\) 0"):
        make().fit(_ramp() * 255)
    make().set_params(rescale=False).fit(_ramp())  # on [0, 1], as given


def test_an_all_zero_kernel_is_refused():
    # The loss stayed constant and the untrained network came back, silently.
    with pytest.raises(ValueError, match="kernel is all zeros"):
        DIPDeconvolver(kernel=np.zeros((3, 3)), **COMMON).fit(_ramp())


def test_an_overflowing_model_is_not_blamed_on_the_learning_rate():
    with pytest.warns(RuntimeWarning, match="no step could be taken") as record:
        est = DIPDeconvolver(kernel=np.ones((3, 3)) * 1e30, **COMMON).fit(_ramp())
    assert est.n_iter_ == 0
    assert not any("smaller learning rate" in str(w.message) for w in record)


# ------------------------------------------------------------------ inpainting
def test_a_channel_with_no_observed_value_is_refused():
    rgb = np.stack([_ramp()] * 3, -1)
    rgb[..., 2] = np.nan
    with pytest.raises(ValueError, match=r"channel\(s\) \[2\] of an image have no observed"):
        DIPInpainter(**COMMON).fit(rgb)
    mask = np.ones(rgb.shape, bool)
    mask[..., 1] = False
    with pytest.raises(ValueError, match=r"channel\(s\) \[1\]"):
        DIPInpainter(**COMMON).fit(np.nan_to_num(rgb), mask=mask)


@pytest.mark.parametrize("n", [3, 16])
def test_one_mask_for_a_batch_gets_a_clear_error(n):
    X = np.random.default_rng(0).random((n, 16, 16, 1))
    shared = np.ones((16, 16), bool)
    with pytest.raises(ValueError, match="one mask per image|one entry per image"):
        DIPInpainter(**COMMON).fit(X, mask=shared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        DIPInpainter(**COMMON).fit(X[:3], mask=np.broadcast_to(shared, (3, 16, 16)))


def test_a_bool_masked_array_keeps_its_mask():
    rng = np.random.default_rng(0)
    values = np.ma.masked_array(rng.random((16, 16)) > 0.5, mask=rng.random((16, 16)) > 0.7)
    inp = DIPInpainter(**COMMON).fit(values)
    np.testing.assert_array_equal(inp.mask_, ~np.ma.getmaskarray(values))


def test_uint8_references_for_data_on_the_unit_scale_are_accepted():
    # Strong noise on [0, 1] data spans over 2 (here 3.3); a blur's measurements too.
    clean = (_ramp() * 255).astype(np.uint8)
    noisy = clean / 255 + np.random.default_rng(0).normal(0, 0.5, clean.shape)
    den = DIPDenoiser(**COMMON).fit(noisy, clean)
    assert np.isfinite(den.score(noisy, clean))
    blurred = 3.0 * (clean / 255.0)  # a kernel summing to 3
    kernel = np.full((3, 3), 3.0 / 9)
    assert np.isfinite(
        DIPDeconvolver(kernel=kernel, **COMMON).fit(blurred, clean).score(blurred, clean)
    )


def _normalised(x):
    return x / x.amax(dim=(-2, -1), keepdim=True)


def test_a_model_undefined_only_at_zero_is_fitted():
    # The zero image is no network output: a normalisation (or a logarithm) was refused.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        est = DIPReconstructor(operator=_normalised, **COMMON).fit(_ramp() / 0.9)
    assert est.n_iter_ == 3


def test_a_nearly_zero_gain_is_refused_too():
    # A difference of Gaussians sums to 1e-8 in float32: the scale came out 6e8.
    yy, xx = np.mgrid[-3:4, -3:4]
    g1, g2 = np.exp(-(xx**2 + yy**2) / 2), np.exp(-(xx**2 + yy**2) / 8)
    dog = g1 / g1.sum() - g2 / g2.sum()
    y = np.random.default_rng(0).random((16, 16)) * 2.2 - 0.96
    with pytest.raises(ValueError, match="rescale='auto' would rescale"):
        DIPDeconvolver(kernel=dog, **COMMON).fit(y)
    with pytest.raises(ValueError, match=r"rescale=True rescales the measurements, but"):
        DIPDeconvolver(kernel=dog, **{**COMMON, "rescale": True}).fit(y * 0.1)


def test_the_canvas_of_every_image_is_checked_before_the_first_fit():
    steps = []
    deep = SkipNetwork(width=2, depth=8, input_channels=1, skip_channels=1)
    est = DIPDenoiser(**{**COMMON, "generator": deep, "callback": lambda i, l, e: steps.append(i)})
    with pytest.raises(ValueError, match="depth=8.*for a 16x16 image"):
        est.fit([np.random.default_rng(0).random((100, 100)), _ramp()])
    assert steps == []


def _through_numpy(x):
    return torch.from_numpy(x.detach().cpu().numpy())


def test_a_vmap_failure_that_does_not_name_vmap_names_batch_size():
    with pytest.raises(RuntimeError, match="batch_size > 1 fits the images together"):
        DIPReconstructor(operator=_through_numpy, **{**COMMON, "batch_size": 2}).fit(
            np.stack([_ramp()] * 2)[..., None]
        )


# ------------------------------------------------------ second review of the checks
def test_float_data_on_0_255_through_a_model_against_uint8_is_refused():
    # A super-resolver or deblurrer keeps the image's scale: -42.7 dB, silently.
    from skdip import DIPSuperResolver
    from skdip.metrics import get_scorer

    high = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    low = high.reshape(8, 2, 8, 2).mean((1, 3))  # float, on 0-255
    sr = DIPSuperResolver(scale=2, kernel="box", **COMMON).fit(low)
    for score in (sr.score, lambda X, y: get_scorer("psnr")(sr, X, y)):
        with pytest.raises(ValueError, match="y is uint8, read on"):
            score(low, high)


def test_a_dark_picture_on_0_255_against_uint8_is_refused():
    rng = np.random.default_rng(0)
    clean = np.round(rng.random((16, 16)) * 10).astype(np.uint8)
    noisy = clean + rng.normal(0, 1, clean.shape)  # spans about 14, not 255
    with pytest.raises(ValueError, match="y is uint8, read on"):
        DIPDenoiser(**COMMON).fit(noisy).score(noisy, clean)


def test_the_canvas_check_uses_the_shape_the_network_is_built_for():
    from skdip import BlindDeblurrer, PhaseRetriever
    from skdip.datasets import simulate_diffraction

    deep = SkipNetwork(width=2, depth=8, input_channels=1, skip_channels=1)
    # The scene behind a "valid" blur is larger than the observation: fitted.
    DIPDeconvolver(
        kernel=np.ones((33, 33)) / 33**2, boundary="valid", **{**COMMON, "generator": deep}
    ).fit(np.random.default_rng(0).random((32, 32)))
    BlindDeblurrer(generator=deep, kernel_size=25, max_iter=2, early_stopping=None).fit(
        np.random.default_rng(0).random((40, 40))
    )
    # A phase object is half its diffraction pattern: refused before any step.
    steps = []
    pr = PhaseRetriever(
        generator=deep,
        init="random",
        pretrain_iter=0,
        max_iter=2,
        early_stopping=None,
        callback=lambda i, l, e: steps.append(i),
        device="cpu",
    )
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="for a 32x32 image"):
        pr.fit(
            [simulate_diffraction(rng.random((64, 64))), simulate_diffraction(rng.random((32, 32)))]
        )
    assert steps == []


def test_blur_warns_of_a_stack():
    from skdip.datasets import blur, make_gaussian_kernel

    with pytest.warns(UserWarning, match=r"blurred as one 4x32 image with 32 channels"):
        blur(np.random.default_rng(0).random((4, 32, 32)), make_gaussian_kernel(3, 1.0), "same")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        blur(np.random.default_rng(0).random((32, 32, 3)), make_gaussian_kernel(3, 1.0))


def test_a_phase_reference_on_another_scale_is_refused():
    from skdip.datasets import simulate_diffraction

    obj = np.random.default_rng(0).random((8, 8))
    y = simulate_diffraction(obj)
    hio = HIOPhaseRetriever(max_iter=30, n_er=10, random_state=0).fit(y)
    with pytest.raises(ValueError, match=r"y\[0\] has .* times the energy"):
        hio.score(y, (obj * 255).astype(np.uint8))  # was -43 dB
    assert hio.score(y, obj[..., None]) == hio.score(y, obj)  # one (H, W, 1) object


def test_simulate_diffraction_names_its_bad_arguments():
    from skdip.datasets import simulate_diffraction

    x = np.random.default_rng(0).random((8, 8))
    with pytest.raises(ValueError, match="beyond what a Poisson draw can take"):
        simulate_diffraction(x, photons=1e30)
    with pytest.raises(ValueError, match=r"mask_seed must be an int in \[0, 2\*\*32\)"):
        simulate_diffraction(x, n_masks=2, mask_seed=-1)


@pytest.mark.parametrize("scale", [1e155, 1e300, 1e306, 2.0**-700, 3e-150])
def test_simulate_diffraction_at_any_scale(scale):
    # Simulated at a power of two near 1 and scaled back: squared magnitudes beyond
    # 1e154 overflowed, and the magnitudes of images beyond 1e155 came back inf, silently.
    from skdip.datasets import simulate_diffraction

    x = np.random.default_rng(0).random((8, 8))
    unit = simulate_diffraction(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(simulate_diffraction(x * scale) / scale, unit, rtol=1e-12)
        masked = simulate_diffraction(x * scale, n_masks=2, photons=1e4, random_state=0)
    np.testing.assert_allclose(
        masked / scale, simulate_diffraction(x, n_masks=2, photons=1e4, random_state=0), rtol=1e-12
    )
    if scale > 1e154:  # intensities beyond float64: refused, not inf
        with pytest.raises(ValueError, match="exceed float64's range.*measurement='magnitude'"):
            simulate_diffraction(x * scale, measurement="intensity")
    elif scale < 1e-154:  # intensities below its normal range: warned of, not 0 in silence
        with pytest.warns(UserWarning, match="below float64's normal range"):
            simulate_diffraction(x * scale, measurement="intensity")


def test_simulate_diffraction_of_a_subnormal_image():
    # An image below float64's normal range (2**-1040) is simulated too: its magnitudes
    # come back subnormal, not 0, and are warned of (no OverflowError scaling it up).
    from skdip.datasets import simulate_diffraction

    x = np.random.default_rng(0).random((8, 8))
    with pytest.warns(UserWarning, match="magnitude values .* below float64's normal range"):
        tiny = simulate_diffraction(x * 2.0**-1040)
    assert 0 < tiny.min() and tiny.max() < np.finfo(np.float64).tiny
    np.testing.assert_allclose(tiny / 2.0**-1040, simulate_diffraction(x), rtol=1e-6)


def test_a_fit_gone_astray_before_the_guard_starts_is_reported():
    # The ratio guard starts at step 50: lr=1e9 on the noise model ran the loss up
    # 1e7-fold in 20 steps and the estimate came back as if fine.
    from skdip import SparseNoise
    from skdip.datasets import add_impulse_noise

    x = add_impulse_noise(_ramp(8, 8), 0.1, random_state=0)
    with pytest.warns(RuntimeWarning, match="the loss ended .* times above its lowest"):
        DIPDenoiser(noise_model=SparseNoise(lr=1e9), **{**COMMON, "max_iter": 20}).fit(x)


# ------------------------------------------------------- third review of the checks
def test_uint8_references_with_noisy_or_spiky_data_are_accepted():
    rng = np.random.default_rng(0)
    flat = np.full((16, 16), 128, np.uint8)
    noisy = flat / 255 + rng.normal(0, 0.3, flat.shape)  # spans about 1.9
    assert np.isfinite(DIPDenoiser(**COMMON).fit(noisy, flat).score(noisy, flat))
    spiky = _ramp() * 0.4
    spiky.flat[[3, 50, 200]] = [6.0, -3.0, 5.0]  # hot pixels
    reference = (spiky.clip(0, 1) * 255).astype(np.uint8)
    assert np.isfinite(DIPDenoiser(**COMMON).fit(spiky, reference).score(spiky, reference))


def _counts(x):
    return 500.0 * x


def test_a_model_of_unknown_gain_does_not_judge_the_measurements_scale():
    # Photon counts: the measurement spans hundreds, the image [0, 1].
    rng = np.random.default_rng(0)
    reference = (rng.random((16, 16)) * 200 + 20).astype(np.uint8)
    counts = rng.poisson(500 * reference.astype(float) / 255).astype(float)
    est = DIPReconstructor(operator=FunctionOperator(_counts, linear=True), **COMMON)
    assert np.isfinite(est.fit(counts, reference).score(counts, reference))


class _OwnState(ForwardOperator):
    """A user's operator with the usual __setstate__ idiom."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gain", torch.full((1, 1, 1, 1), 0.8))
        self.weight = torch.nn.Parameter(torch.ones(1))
        self._cache = {"x": 1}

    def __getstate__(self):
        state = super().__getstate__()
        state["_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def forward(self, x):
        return self.gain * self.weight * x


def test_a_user_operator_with_its_own_setstate_still_copies_and_fits():
    import copy
    import pickle

    op = _OwnState()
    for copied in (copy.deepcopy(op), pickle.loads(pickle.dumps(op))):
        assert torch.equal(copied.gain, op.gain) and copied._cache == {}
    assert DIPReconstructor(operator=op, **COMMON).fit(_ramp() * 0.8).n_iter_ == 3


def test_a_near_perfect_fit_is_not_reported_as_gone_astray():
    # One observed pixel: the loss drops to 1e-13 and jitters around 1e-7, a ratio
    # of 1e6 above its lowest but far below where it started.
    image = np.full((8, 8), np.nan)
    image[3, 4] = 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for seed in range(8):
            DIPInpainter(
                **{**COMMON, "max_iter": 30, "random_state": seed, "output_averaging": None}
            ).fit(image)


def test_nested_lists_and_lists_of_rows_keep_their_meaning():
    from skdip._validation import check_images

    rng = np.random.default_rng(0)
    grey = rng.random((8, 12))
    images, layout = check_images([grey.tolist() for _ in range(3)])  # three grey images
    assert layout.kind == "list" and [i.shape for i in images] == [(8, 12, 1)] * 3
    images, layout = check_images(list(grey))  # rows as arrays: one image
    assert layout.kind == "single" and images[0].shape == (8, 12, 1)
    images, layout = check_images(rng.random((8, 8, 3)).tolist())  # one colour image
    assert layout.kind == "single" and images[0].shape == (8, 8, 3)


class _TwoEmpty(ForwardOperator):
    def __init__(self):
        super().__init__()
        self.register_buffer("a", torch.zeros(0))
        self.register_buffer("b", torch.zeros(0))
        self.register_buffer("k", torch.ones(3))

    def forward(self, x):
        return x


def test_empty_buffers_do_not_stop_an_operator_hashing_by_content():
    import copy

    import joblib

    op = _TwoEmpty()
    assert joblib.hash(copy.deepcopy(op)) == joblib.hash(op)


def test_an_unused_mask_seed_is_not_checked():
    from skdip.datasets import simulate_diffraction

    x = np.random.default_rng(0).random((8, 8))
    np.testing.assert_array_equal(
        simulate_diffraction(x, n_masks=0, mask_seed=2**32), simulate_diffraction(x)
    )


# ------------------------------------------------------ fourth review of the checks
def test_the_reference_scale_is_judged_through_the_forward_model():
    from skdip import SparseNoise
    from skdip.metrics import get_scorer
    from skdip.operators import Convolution, Identity, PixelMask

    rng = np.random.default_rng(0)
    ref = np.tile(np.linspace(20, 220, 16), (16, 1)).astype(np.uint8)
    # 0-255 data through any model, the reconstructor's included: refused.
    for op in (Identity(), Convolution(np.ones((3, 3)) / 9), PixelMask(np.ones((16, 16), bool))):
        with pytest.raises(ValueError, match="y is uint8, read on .0, 1. .divided by 255."):
            DIPReconstructor(operator=op, **COMMON).fit(ref * 1.0, ref)
    # A kernel with a tiny sum, impulses, placeholders under a mask: accepted.
    yy, xx = np.mgrid[-3:4, -3:4]
    g1, g2 = np.exp(-(xx**2 + yy**2) / 2), np.exp(-(xx**2 + yy**2) / 8)
    dog = g1 / g1.sum() - g2 / g2.sum() + 1e-3 / 49
    from scipy.ndimage import convolve

    blurred = convolve(ref / 255.0, dog, mode="wrap")
    DIPDeconvolver(kernel=dog, rescale=False, **COMMON).fit(blurred, ref)
    impulses = ref / 255 + rng.normal(0, 0.05, ref.shape)
    hit = rng.random(ref.shape) < 0.05
    impulses[hit] = rng.choice([-3.0, 6.0], hit.sum())
    DIPDenoiser(noise_model=SparseNoise(), **COMMON).fit(impulses, ref)
    observed = rng.random(ref.shape) > 0.3
    held = np.where(observed, ref / 255, -999.0)
    inp = DIPInpainter(**COMMON).fit(held, ref, mask=observed)
    assert np.isfinite(get_scorer("psnr")(inp, held, ref, mask=observed))
    # A kernel that requires grad: its y is checked without NumPy on it.
    kernel = torch.full((3, 3), 1 / 9, requires_grad=True)
    DIPDeconvolver(kernel=kernel, **COMMON).fit(ref / 255.0, ref / 255.0)


def test_nested_lists_of_many_bands_are_said_to_be_a_batch():
    from skdip._validation import check_images

    with pytest.warns(UserWarning, match="read as 8 grey images of 8x6"):
        _, layout = check_images(np.random.default_rng(0).random((8, 8, 6)).tolist())
    assert layout.kind == "list"


def test_a_list_of_tensor_rows_is_refused_as_tensors():
    with pytest.raises(TypeError, match=r"X\[0\] is a torch.Tensor"):
        DIPDenoiser(**COMMON).fit([torch.rand(8) for _ in range(8)])


def test_a_phase_reference_as_nested_lists_is_one_object():
    from skdip.datasets import simulate_diffraction

    obj = np.random.default_rng(0).random((8, 8))
    y = simulate_diffraction(obj)
    hio = HIOPhaseRetriever(max_iter=30, n_er=10, random_state=0).fit(y)
    assert hio.score(y, obj.tolist()) == hio.score(y, obj)


def test_a_list_of_one_image_as_nested_lists_is_a_batch_of_one_without_a_warning():
    from skdip._validation import check_images

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        images, layout = check_images([_ramp(8, 12).tolist()])
    assert layout.kind == "list" and images[0].shape == (8, 12, 1)


def test_the_reference_scale_is_a_least_squares_factor():
    # Median residuals were fooled by black pixels and noise (70% black 0-255 data
    # passed, at -39 dB) and by zeros in uint8 data (a dark scene was refused).
    from skdip.model_selection import fit_candidates

    rng = np.random.default_rng(0)
    sparse = np.zeros((16, 16))
    sparse[rng.random((16, 16)) < 0.3] = 200
    sparse = sparse.astype(np.uint8)
    with pytest.raises(ValueError, match="on different scales"):
        DIPDenoiser(**COMMON).fit(sparse + rng.normal(0, 5, sparse.shape), sparse)
    dim = rng.integers(5, 36, (16, 16)).astype(np.uint8)
    with pytest.raises(ValueError, match="on different scales"):
        DIPDenoiser(**COMMON).fit(dim + rng.normal(0, 10, dim.shape), dim)
    # A circular blur is judged through the model.
    ref = np.tile(np.linspace(20, 220, 16), (16, 1)).astype(np.uint8)
    from scipy.ndimage import convolve

    seen = convolve(ref.astype(float), np.ones((3, 3)) / 9, mode="wrap")
    circular = DIPDeconvolver(kernel=np.ones((3, 3)) / 9, **COMMON)
    with pytest.raises(ValueError, match="on different scales"):
        circular.fit(seen, ref)
    circular.fit(seen / 255, ref)
    # uint8 data with many zeros against a float reference on [0, 1]: accepted.
    dark = np.clip(rng.random((16, 16)) * 0.02 * (rng.random((16, 16)) > 0.5), 0, 1)
    noisy = np.clip(np.round((dark + rng.normal(0, 0.1, dark.shape)) * 255), 0, 255)
    DIPDenoiser(**COMMON).fit(noisy.astype(np.uint8), dark)
    # The masks of a candidate search reach the check.
    clean = np.tile(np.linspace(0.2, 0.9, 16), (16, 1))
    observed = rng.random((16, 16)) > 0.6
    held = np.where(observed, np.round(clean * 255), 0).astype(np.uint8)
    fit_candidates(DIPInpainter(**COMMON), held, [{"lr": 0.01}], clean, mask=observed)
    assert np.isfinite(DIPInpainter(**COMMON).fit(held, clean, mask=observed).score(held, clean))


def test_a_reference_far_narrower_than_x_on_one_dtype_is_refused():
    # Raw 12-bit counts against their clean frame read by img_as_float (on
    # [0, 4095/65535]) were scored at -65 dB, silently; only a far wider y was refused.
    from skimage.util import img_as_float

    from skdip.metrics import get_scorer

    rng = np.random.default_rng(0)
    clean = np.round(4095 * np.tile(np.linspace(0.1, 0.9, 16), (16, 1))).astype(np.uint16)
    counts = np.clip(clean + rng.normal(0, 100, clean.shape), 0, 4095).astype(np.uint16)
    with pytest.raises(ValueError, match=r"on different scales: X is about 6.\d*e\+04 times"):
        DIPDenoiser(**COMMON).fit(counts, img_as_float(clean))
    den = DIPDenoiser(**COMMON).fit(counts, clean)  # the same scale: accepted
    for score in (den.score, lambda X, y: get_scorer("psnr", data_range=None)(den, X, y)):
        with pytest.raises(ValueError, match="on different scales"):
            score(counts, img_as_float(clean))
    # Floats on [0, 1] against a reference on 0-255 of the same picture: refused too.
    unit = clean / 4095.0
    with pytest.raises(ValueError, match="on different scales"):
        DIPDenoiser(**COMMON).fit(unit * 255 + rng.normal(0, 5, unit.shape), unit)


def test_the_reference_scale_allows_offsets_gains_and_non_linear_models():
    from scipy.signal import convolve2d

    from skdip.model_selection import fit_candidates

    rng = np.random.default_rng(0)
    ref = (np.clip(np.tile(np.linspace(0.1, 0.9, 20), (20, 1)), 0, 1) * 255).astype(np.uint8)
    # A "valid" blur's reference is on the observation's grid, where the model cannot
    # be applied: not judged (a gain alone refused a blurred star field).
    gain20 = np.ones((3, 3)) * 20 / 9
    seen = convolve2d(ref / 255, gain20, mode="valid")
    DIPDeconvolver(kernel=gain20, boundary="valid", rescale=False, **COMMON).fit(
        seen, ref[1:-1, 1:-1]
    )
    stars = np.zeros((28, 28))
    stars[4:24:6, 4:24:6] = 1
    bell = np.exp(-(np.arange(-4, 5) ** 2) / 8.0)
    gauss = np.outer(bell, bell) / np.outer(bell, bell).sum()
    faint = np.round(convolve2d(stars, gauss, mode="valid") * 255).astype(np.uint8)
    DIPDeconvolver(kernel=gauss, boundary="valid", **COMMON).fit(faint, stars[4:-4, 4:-4])
    # One faint pixel under noise tells no scale: accepted whatever the draw.
    for seed in range(20):
        one = np.zeros((16, 16), np.uint8)
        one[8, 8] = 1
        noise = np.random.default_rng(seed).standard_normal(one.shape)
        DIPDenoiser(**COMMON).fit(one / 255 + 0.1 * noise, one)
    # Clipped noise on a dark reference, a pedestal: offsets, accepted.
    dark = np.round(rng.random((16, 16)) * 2.4).astype(np.uint8)
    DIPDenoiser(**COMMON).fit(
        np.clip(dark / 255 + 0.3 * rng.standard_normal(dark.shape), 0, 1), dark
    )
    DIPDenoiser(**COMMON).fit(dark / 255 + 0.1, dark)
    # Every candidate's own model judges: the gain-1 candidate refuses gain-20 data.
    wrapped = convolve2d(ref / 255, gain20, mode="same", boundary="wrap")
    base = DIPDeconvolver(kernel=np.ones((3, 3)) / 9, rescale=False, **COMMON)
    candidates = [{"kernel": gain20}, {"kernel": np.ones((3, 3)) / 9}]
    with pytest.raises(ValueError, match="on different scales"):
        fit_candidates(base, wrapped, candidates, ref)


def test_a_blind_deblurrer_judges_the_scale_through_a_box_over_its_kernel_size():
    # The sharp reference stood in for the unknown blur: a blurred star field on
    # [0, 1] looked 35x too faint and was refused; 0-255 data at factor 7 passed.
    from scipy.signal import convolve2d

    from skdip import BlindDeblurrer
    from skdip.metrics import get_scorer

    stars = np.zeros((32, 32))
    stars[4:30:7, 4:30:7] = 1.0
    bell = np.exp(-(np.arange(-4, 5) ** 2) / 8.0)
    gauss = np.outer(bell, bell) / np.outer(bell, bell).sum()
    seen = convolve2d(stars, gauss, mode="same", boundary="wrap")
    blind = dict(COMMON, kernel_size=9)
    deb = BlindDeblurrer(**blind).fit(np.round(seen * 255).astype(np.uint8), stars)
    assert np.isfinite(deb.score(np.round(seen * 255).astype(np.uint8), stars))
    # Stars further apart than the kernel size, on 0-255: refused. (Closer ones
    # overlap under the box and tell the centred factor too little: not judged.)
    apart = np.zeros((32, 32))
    apart[4:30:10, 4:30:10] = 1.0
    seen_apart = convolve2d(apart, gauss, mode="same", boundary="wrap")
    with pytest.raises(ValueError, match="on different scales"):
        BlindDeblurrer(**blind).fit(seen_apart * 255, (apart * 255).astype(np.uint8))
    smooth = np.round(255 * np.tile(np.linspace(0.1, 0.9, 32), (32, 1))).astype(np.uint8)
    with pytest.raises(ValueError, match="on different scales"):
        BlindDeblurrer(**blind).fit(smooth * 1.0, smooth)
    # The scorer too: on one scale accepted, across scales refused.
    fitted = BlindDeblurrer(**blind).fit(smooth / 255.0)
    assert np.isfinite(get_scorer("psnr")(fitted, smooth / 255.0, smooth))
    fitted = BlindDeblurrer(**blind).fit(smooth * 1.0)
    with pytest.raises(ValueError, match="on different scales"):
        get_scorer("psnr")(fitted, smooth * 1.0, smooth)


def test_the_reference_scale_is_judged_before_new_images_are_solved():
    # The PSNR scorer solved new images in full before refusing their y.
    from skdip.metrics import get_scorer

    ref = np.tile(np.linspace(20, 220, 16), (16, 1)).astype(np.uint8)
    den = DIPDenoiser(**COMMON).fit(ref / 255.0)
    other = np.flipud(ref) * 1.0  # new images, on 0-255
    with pytest.raises(ValueError, match="on different scales"):
        get_scorer("psnr")(den, other, np.flipud(ref))
    assert not hasattr(den, "_last_solve")  # nothing was solved


def test_average_of_best_judges_y_with_every_setting_in_score():
    # score() judged y with the first setting's model only, which could not judge it.
    from scipy.signal import convolve2d

    from skdip.model_selection import AverageOfBest

    ref = np.tile(np.linspace(20, 220, 16), (16, 1)).astype(np.uint8)
    box = np.ones((3, 3)) / 9
    seen = convolve2d(ref / 255.0, box, mode="same", boundary="wrap") * 255
    base = DIPDeconvolver(kernel=box, **COMMON)
    avg = AverageOfBest(base, {"boundary": ["valid", "circular"]}, n_best=2).fit(seen)
    with pytest.raises(ValueError, match="on different scales"):
        avg.score(seen, ref)


def test_the_reference_scale_check_holds_for_data_near_1e200():
    ref = np.tile(np.linspace(20, 220, 16), (16, 1)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match="on different scales"):
            DIPDenoiser(**COMMON).fit(ref / 255.0 * 1e200, ref)


def test_channels_first_images_in_a_list_or_a_4d_batch_are_warned_of():
    # A channels-first (3, H, W) image was warned of alone but fitted silently inside
    # a list or a PyTorch-style (N, 3, H, W) batch, as images 3 pixels tall.
    from skdip._validation import check_images

    chw = np.random.default_rng(0).random((3, 16, 16))
    with pytest.warns(UserWarning, match=r"X\[0\] of shape \(3, 16, 16\) is read as one 3x16"):
        check_images([chw])
    with pytest.warns(UserWarning, match=r"X\[1\] of shape .*; so are 1 other item\(s\) of X"):
        check_images([chw.transpose(1, 2, 0), chw, chw])
    with pytest.warns(UserWarning, match=r"read as 2 image\(s\), .*np\.moveaxis\(X, 1, -1\)"):
        check_images(np.stack([chw, chw]))
    with pytest.warns(UserWarning, match=r"each a 1x16 image with 16 channels"):
        with pytest.raises(ValueError, match="too small"):  # grey NCHW: 1 pixel tall
            check_images(np.zeros((2, 1, 16, 16)))
    with pytest.warns(UserWarning, match=r"X\[0\] of shape \(3, 16, 16\)"):
        DIPDenoiser(**{**COMMON, "max_iter": 1}).fit([chw])
    # Channels-last batches and lists stay silent, tiny ambiguous ones too (as alone).
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for X in (
            np.zeros((2, 16, 16, 3)),
            np.zeros((2, 16, 16, 4)),
            np.zeros((2, 16, 16, 1)),
            np.zeros((2, 3, 4, 4)),  # (3, 4, 4): a 3x4 RGBA image as much as anything
            [np.zeros((16, 16, 3)), np.zeros((8, 8))],
        ):
            check_images(X)


def test_nan_in_x_names_the_estimator_that_reads_it_as_missing():
    nan = _ramp()
    nan[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity .DIPInpainter reads NaN and masked"):
        DIPDenoiser(**COMMON).fit(nan)
    with pytest.raises(ValueError, match=r"y contains NaN or infinity$"):
        DIPDenoiser(**COMMON).fit(_ramp(), nan)


# ------------------------------------------ what scientists pass in (audit: interop)
def test_a_tensor_mask_is_read_as_an_array_after_the_fit_too():
    # requires_grad: every step ran, then hashing the mask for the fitted state raised
    # torch's "Can't call numpy() on Tensor that requires grad" (the fit lost); bfloat16:
    # "unsupported ScalarType".
    x = _ramp()
    mask = np.ones((16, 16), dtype=bool)
    mask[4:8, 4:8] = False
    expected = DIPInpainter(**COMMON).fit_transform(x, mask=mask)
    for given in (
        torch.tensor(mask, dtype=torch.float32, requires_grad=True),
        torch.tensor(mask, dtype=torch.bfloat16),
    ):
        np.testing.assert_array_equal(DIPInpainter(**COMMON).fit_transform(x, mask=given), expected)


def test_the_masks_of_a_batch_are_read_as_one_images_mask_is():
    # Split with np.asarray: one tensor of masks that requires grad raised NumPy's "Can't
    # call numpy() on Tensor that requires grad" (a single image's mask was read), and a
    # masked array of masks was read with the values under its mask.
    batch = np.stack([_ramp(), _ramp()[::-1]])[..., None]
    masks = np.ones((2, 16, 16), dtype=bool)
    masks[0, 4:8, 4:8] = masks[1, 8:12, 2:6] = False
    expected = DIPInpainter(**COMMON).fit_transform(batch, mask=masks)
    given = torch.tensor(masks, dtype=torch.float32, requires_grad=True)
    np.testing.assert_array_equal(DIPInpainter(**COMMON).fit_transform(batch, mask=given), expected)
    hidden = np.ma.masked_array(masks, mask=np.zeros_like(masks))
    hidden[1, 0, 0] = np.ma.masked
    with pytest.raises(ValueError, match="mask is a masked array with 1 masked value"):
        DIPInpainter(**COMMON).fit(batch, mask=hidden)
    with pytest.raises(ValueError, match="mask is a masked array with 1 masked value"):
        DIPInpainter(**COMMON).fit(batch[:1], mask=hidden[1:])  # as for one image


def test_pil_palette_images_are_refused_and_grey_alpha_is_warned_of():
    from PIL import Image  # a dependency of scikit-image

    grey = (_ramp() * 255).astype(np.uint8)
    palette = Image.fromarray(np.stack([grey] * 3, -1)).convert("P", colors=16)
    # Read as its palette indices, a GIF was fitted as an index map (6.0 dB for 15.2).
    with pytest.raises(ValueError, match=r"palette mode 'P'.*X.convert\('RGB'\)"):
        DIPDenoiser(**COMMON).fit(palette)
    with pytest.raises(ValueError, match=r"X\[1\] is a PIL image in palette mode"):
        DIPDenoiser(**COMMON).fit([Image.fromarray(grey), palette])
    with pytest.warns(UserWarning, match=r"alpha channel .mode 'LA'.*convert\('L'\)"):
        DIPDenoiser(**COMMON).fit(Image.fromarray(grey).convert("LA"))
    # A varying alpha was fitted as a fourth colour channel in silence.
    rgba = np.dstack([np.stack([grey] * 3, -1), (_ramp() * 200).astype(np.uint8)])
    with pytest.warns(UserWarning, match=r"alpha channel .mode 'RGBA'.*convert\('RGB'\)"):
        DIPDenoiser(**COMMON).fit(Image.fromarray(rgba, mode="RGBA"))
    # The metrics read a palette image's indices too (6.0 dB for 42.3).
    from skdip.metrics import psnr

    with pytest.raises(ValueError, match="image_test is a PIL image in palette mode"):
        psnr(np.asarray(palette.convert("RGB")) / 255, palette)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # A list of PIL images was told it looked like nested lists of one image.
        out = DIPDenoiser(**COMMON).fit_transform([Image.fromarray(grey)] * 2)
    assert len(out) == 2
    # CMYK: 4 ink channels, the 4th constant without black ink. It was taken for an alpha
    # channel ("pass X[..., :3]") and came back as ink amounts without a word.
    cmyk = Image.fromarray(np.stack([grey] * 3, -1)).convert("CMYK")
    for X, name in ((cmyk, "X"), ([Image.fromarray(grey).convert("RGB"), cmyk], "X\\[1\\]")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            DIPDenoiser(**COMMON).fit(X)
        messages = [str(w.message) for w in caught if w.category is UserWarning]
        assert any(
            re.match(name + r" is a PIL image in CMYK mode.*convert\('RGB'\)", m) for m in messages
        )
        assert not any("alpha" in m for m in messages), messages


def test_array_parameters_take_pil_images_as_the_inputs_do():
    # A PSF or a support saved as an image was refused by the parameter check, while
    # X, the metrics and Convolution read PIL images.
    from PIL import Image

    from skdip import DIPDeconvolver, HIOPhaseRetriever, PhaseRetriever
    from skdip.datasets import simulate_diffraction

    kernel = np.full((3, 3), 1 / 9, dtype=np.float32)  # PIL mode "F"
    blurred = _ramp()
    expected = DIPDeconvolver(kernel=kernel, **COMMON).fit_transform(blurred)
    as_image = DIPDeconvolver(kernel=Image.fromarray(kernel), **COMMON).fit_transform(blurred)
    np.testing.assert_array_equal(as_image, expected)
    support = np.zeros((8, 8), dtype=bool)
    support[1:7, 1:7] = True
    obj = np.where(support, _ramp()[:8, :8], 0.0)
    pattern = simulate_diffraction(obj, oversampling=2)
    for estimator in (
        HIOPhaseRetriever(max_iter=5, n_er=0, random_state=0),
        PhaseRetriever(generator=TINY, max_iter=3, random_state=0, device="cpu"),
    ):
        as_array = clone(estimator).set_params(support=support).fit_transform(pattern)
        as_image = clone(estimator).set_params(support=Image.fromarray(support))
        np.testing.assert_array_equal(as_image.fit_transform(pattern), as_array)
    # The refusal says what it takes, not "an instance of 'skdip._validation.ArrayInterface'".
    with pytest.raises(InvalidParameterError, match="'kernel' parameter") as refused:
        DIPDeconvolver(kernel="gaussian").fit(blurred)
    assert "PIL.Image.Image (or another object with __array_interface__)" in str(refused.value)
    assert "skdip._validation" not in str(refused.value)


def test_metrics_refuse_masked_arrays_rather_than_read_the_hidden_values():
    from skdip.metrics import phase_retrieval_psnr, psnr, ssim

    clean = _ramp()
    dead = np.zeros(clean.shape, dtype=bool)
    dead[2:5, 2:5] = True
    reference = np.ma.masked_array(np.where(dead, 1.0, clean), dead)
    # Read as data, the dead pixels took PSNR from 34.2 to 20.1 dB on the valid pixels.
    for metric, name in (
        (psnr, "image_true"),
        (ssim, "image_true"),
        (phase_retrieval_psnr, "image_true"),
    ):
        with pytest.raises(ValueError, match=rf"{name} is a masked array with 9 masked value"):
            metric(reference, clean)
    # Nothing masked: read as the plain array.
    assert psnr(np.ma.masked_array(clean), clean + 0.01) == pytest.approx(psnr(clean, clean + 0.01))


def test_refusals_of_missing_values_suggest_what_reads_them():
    from skdip.datasets import simulate_diffraction

    nan = _ramp()
    nan[3, 3] = np.nan
    measurement = simulate_diffraction(_ramp(8, 8))
    beamstop = measurement.copy()
    beamstop[8, 8] = np.nan
    # A diffraction pattern with a NaN beamstop was told to use DIPInpainter; NaN now
    # marks its unmeasured pixels (tests/test_phase.py).
    assert np.isfinite(HIOPhaseRetriever(max_iter=20, n_er=5).fit(beamstop).fourier_error_)
    with pytest.raises(ValueError, match=r"X contains NaN or infinity$"):
        DIPDeconvolver(kernel=np.ones((3, 3)) / 9, **COMMON).fit(nan)
    hidden = np.isnan(nan)
    with pytest.raises(ValueError, match=r"Fill them \(X.filled\(value\)\); or DIPInpainter"):
        DIPDenoiser(**COMMON).fit(np.ma.masked_array(np.nan_to_num(nan), hidden))
    # In a list, the image itself is the masked array (the list has no .filled).
    masked = np.ma.masked_array(np.nan_to_num(nan), hidden)
    with pytest.raises(ValueError, match=r"Fill them \(X\[1\].filled\(value\)\)"):
        DIPDenoiser(**COMMON).fit([_ramp(), masked])
    den = DIPDenoiser(**COMMON).fit(_ramp())
    with pytest.raises(
        ValueError, match=r"y is a masked array.*Fill them \(y.filled\(value\)\)\.$"
    ):
        den.score(_ramp(), np.ma.masked_array(_ramp(), hidden))
    hio = HIOPhaseRetriever(max_iter=20, n_er=5, random_state=0).fit(measurement)
    with pytest.raises(ValueError, match="y is a masked array"):
        hio.score(measurement, np.ma.masked_array(_ramp(8, 8), hidden[:8, :8]))


def test_tensors_that_require_grad_are_read_by_every_array_argument():
    from skdip.datasets import add_gaussian_noise, blur, simulate_diffraction

    x = _ramp(8, 8)
    grad = torch.tensor(x, requires_grad=True)
    kernel = torch.full((3, 3), 1 / 9, requires_grad=True)
    np.testing.assert_array_equal(
        add_gaussian_noise(grad, 0.1, random_state=0), add_gaussian_noise(x, 0.1, random_state=0)
    )
    np.testing.assert_array_equal(blur(grad, kernel), blur(x, kernel.detach().numpy()))
    support = torch.zeros(8, 8, requires_grad=True)
    with torch.no_grad():
        support[2:6, 2:6] = 1
    measurement = simulate_diffraction(x)
    hio = HIOPhaseRetriever(support=support, max_iter=20, n_er=5, random_state=0).fit(measurement)
    assert np.isfinite(hio.score(measurement, grad))


def test_odd_array_kinds_of_masks_and_sizes_get_clear_answers():
    import scipy.sparse

    from skdip.datasets import add_gaussian_noise, load_image
    from skdip.model_selection import best_params_per_image

    x = _ramp()
    with pytest.raises(TypeError, match=r"mask is a sparse matrix.*toarray"):
        DIPInpainter(**COMMON).fit(x, mask=scipy.sparse.csr_matrix(np.ones((16, 16))))
    with pytest.raises(TypeError, match="got complex values"):
        DIPInpainter(**COMMON).fit(x, mask=np.ones((16, 16)) + 0j)
    noisy = add_gaussian_noise(x.astype(">f8"), 0.1, random_state=0)
    assert noisy.dtype.isnative and torch.from_numpy(noisy).shape == (16, 16)
    assert load_image("camera", size=np.array([8, 6])).shape == (8, 6)
    with pytest.raises(TypeError, match="takes the fitted search itself"):
        best_params_per_image({"params": []})


def test_phase_retriever_scores_against_a_tensor_that_requires_grad():
    from skdip import PhaseRetriever
    from skdip.datasets import simulate_diffraction

    obj = _ramp(8, 8)
    y = simulate_diffraction(obj)
    pr = PhaseRetriever(generator=TINY, max_iter=3, random_state=0, init="random").fit(y)
    assert pr.score(y, torch.tensor(obj, requires_grad=True)) == pr.score(y, obj)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_a_half_precision_default_dtype_is_refused_before_any_work(half):
    # skdip builds its networks and operators in torch's default dtype: float16
    # diverged at once (advice: a smaller learning rate), bfloat16 fitted 8 dB worse
    # silently, and an operator built under it kept a kernel rounded to bfloat16.
    from skdip import DIPDenoiser
    from skdip.operators import Convolution, KSpaceSampling

    x = np.random.default_rng(0).random((8, 8))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(half)
    try:
        for make in (
            lambda: DIPDenoiser(max_iter=2, device="cpu").fit(x),
            lambda: Convolution(np.ones((3, 3)) / 9),
            lambda: KSpaceSampling(np.ones((8, 8))),
        ):
            with pytest.raises(ValueError, match="default dtype is .*float32 or float64"):
                make()
    finally:
        torch.set_default_dtype(previous)


# A silent wrong answer the suite once missed: one clean (H, W) image given as y for a batch
# of H images of H x W was read as labels (a row per image), so score() gave the
# no-reference score (-0.92 on a 16-image check) for the PSNR (9.95), without a word
def test_one_clean_image_for_a_batch_of_as_many_images_as_its_rows_is_warned_of():
    from skdip import DIPDenoiser

    rng = np.random.default_rng(0)
    clean = rng.random((8, 8))
    batch = np.stack([clean + 0.1 * rng.standard_normal((8, 8)) for _ in range(8)])[..., None]
    den = DIPDenoiser(generator="skip-small", max_iter=2, early_stopping=None, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        den.fit(batch)
    with pytest.warns(UserWarning, match=r"y of shape \(8, 8\) is read as labels"):
        den.score(batch, clean)
    with pytest.warns(UserWarning, match=r"y of shape \(8, 8\) is read as labels"):
        den.fit(batch, clean)  # which recorded no reference curve
    labels = rng.random((8, 2))  # labels of another shape: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        den.score(batch, labels)
    # Nor for images of which only some have the labels' shape.
    mixed = [batch[0]] + [rng.random((12, 12)) for _ in range(7)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="y of shape")
        den.score(mixed, rng.random((8, 8)))


# ------------------------------------------------------------------ time dtypes
@pytest.mark.parametrize("unit", ["timedelta64[s]", "datetime64[s]"])
def test_time_arrays_are_no_images(unit):
    # NumPy counts timedelta64 as an integer: a (16, 16) array of durations was
    # fitted as an image of seconds, and a masked one or one with NaT as well.
    times = np.arange(256).reshape(16, 16).astype(unit)
    match = rf"X has non-numeric dtype {re.escape(unit)}"
    with pytest.raises(TypeError, match=match):
        DIPDenoiser(**COMMON).fit(times)
    with pytest.raises(TypeError, match=match):
        DIPInpainter(**COMMON).fit(times)
    masked = np.ma.masked_array(times, mask=np.eye(16, dtype=bool))
    with pytest.raises(TypeError, match=match):
        DIPInpainter(**COMMON).fit(masked)


@pytest.mark.parametrize("unit", ["timedelta64[s]", "datetime64[s]"])
def test_time_arrays_are_no_masks_kernels_or_metric_inputs(unit):
    from skdip.metrics import psnr, ssim
    from skdip.operators import Convolution, PixelMask

    ones = np.ones((16, 16)).astype(unit)
    # A timedelta mask was taken as 0/1 by DIPInpainter; PixelMask and Convolution
    # raised torch's "can't convert np.ndarray of type numpy.timedelta64".
    with pytest.raises(TypeError, match=rf"mask .*dtype {re.escape(unit)}"):
        DIPInpainter(**COMMON).fit(_ramp(), mask=ones)
    with pytest.raises(TypeError, match=rf"mask must contain numbers.*{re.escape(unit)}"):
        PixelMask(ones)
    with pytest.raises(TypeError, match=rf"kernel must contain numbers.*{re.escape(unit)}"):
        Convolution(ones[:3, :3])
    for metric in (psnr, ssim):
        with pytest.raises(TypeError, match=re.escape(unit)):
            metric(ones, _ramp())
        with pytest.raises(TypeError, match=re.escape(unit)):
            metric(_ramp(), ones)


# A sparse matrix inside a list was refused as "X[0] has dtype object", naming neither
# what it was nor what to pass (a mutation audit found the gap)
@pytest.mark.parametrize("estimator", ["DIPDenoiser", "DIPInpainter"])
def test_a_sparse_matrix_in_a_list_of_images_is_named(estimator):
    import scipy.sparse

    import skdip

    images = [np.ones((8, 8)), scipy.sparse.csr_array(np.ones((8, 8)))]
    with pytest.raises(TypeError, match=r"^X\[1\] is a sparse matrix.*dense image"):
        getattr(skdip, estimator)(**COMMON).fit(images)
