"""warm_start: a later fit goes on with the last one, as one longer fit would have."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skdip import (
    DIPDeconvolver,
    DIPDenoiser,
    DIPInpainter,
    DIPReconstructor,
    DIPSuperResolver,
    ExponentialMovingVariance,
    SkipNetwork,
)
from skdip.datasets import simulate_diffraction
from skdip.operators import Convolution
from skdip.stopping import BaseStoppingRule

TINY = SkipNetwork(width=8, depth=2, input_channels=4, skip_channels=2)


def _rule(patience=1000):
    return ExponentialMovingVariance(warmup=3, patience=patience)


def _images(n=1, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.random((n, 16, 16, 1))
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    return (noisy[0], clean[0]) if n == 1 else (noisy, clean)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def _same_fit(a, b):
    np.testing.assert_array_equal(a.reconstruction_, b.reconstruction_)
    assert a.n_iter_ == b.n_iter_ and a.best_iter_ == b.best_iter_
    assert a.stopped_by_ == b.stopped_by_
    histories = zip(np.atleast_1d(a.history_), np.atleast_1d(b.history_), strict=True)
    for ha, hb in histories:
        for key in ("loss", "signal", "psnr"):
            if key in ha:
                np.testing.assert_array_equal(ha[key], hb[key])


CASES = {
    "denoiser": lambda **kw: DIPDenoiser(generator=TINY, early_stopping=_rule(), **kw),
    "denoiser, no averaging": lambda **kw: DIPDenoiser(
        generator=TINY, early_stopping=_rule(), output_averaging=None, **kw
    ),
    "reconstructor": lambda **kw: DIPReconstructor(
        operator=Convolution(np.ones((3, 3)) / 9), generator=TINY, early_stopping=_rule(), **kw
    ),
    # Two optimizers (Adam and plain gradient steps) and a sparse component.
    "denoiser, sparse noise": lambda **kw: DIPDenoiser(
        generator=TINY, early_stopping=_rule(), noise_model="sparse", **kw
    ),
    "super-resolver": lambda **kw: DIPSuperResolver(
        scale=2, generator=TINY, early_stopping=_rule(), **kw
    ),
    "deconvolver, valid": lambda **kw: DIPDeconvolver(
        kernel=np.ones((3, 3)) / 9, boundary="valid", generator=TINY, early_stopping=_rule(), **kw
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_two_warm_fits_are_one_longer_fit(name):
    noisy, clean = _images()
    if name == "super-resolver":
        clean = None  # the reference would be the high-resolution image
    make = CASES[name]
    longer = _quiet(make(max_iter=25, random_state=0, device="cpu").fit, noisy, y=clean)
    warm = make(max_iter=10, random_state=0, device="cpu", warm_start=True)
    _quiet(warm.fit, noisy, y=clean)
    assert warm.n_iter_ == 10
    # The kept fit survives a pickle (a saved estimator goes on where it was).
    warm = pickle.loads(pickle.dumps(warm))
    _quiet(warm.set_params(max_iter=15).fit, noisy)  # y is remembered: no need to pass it
    _same_fit(warm, longer)
    assert warm.history_["fit_time"] > 0
    if hasattr(longer, "sparse_noise_"):
        np.testing.assert_array_equal(warm.sparse_noise_, longer.sparse_noise_)


def test_inpainter_goes_on_with_its_mask():
    noisy, _ = _images()
    mask = np.random.default_rng(1).random(noisy.shape[:2]) > 0.3
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPInpainter(max_iter=20, **kw).fit, noisy, mask=mask)
    warm = DIPInpainter(max_iter=8, warm_start=True, **kw)
    _quiet(warm.fit, noisy, mask=mask)
    _quiet(warm.set_params(max_iter=12).fit, noisy, mask=mask)
    _same_fit(warm, longer)


def test_a_batch_and_parallel_workers():
    noisy, _ = _images(n=2)
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPDenoiser(max_iter=16, **kw).fit, noisy)
    # The first fits run in worker processes; their states come back with them.
    warm = DIPDenoiser(max_iter=6, n_jobs=2, warm_start=True, **kw)
    _quiet(warm.fit, noisy)
    _quiet(warm.set_params(max_iter=4, n_jobs=None).fit, noisy)  # in this process
    _quiet(warm.set_params(max_iter=6, n_jobs=2).fit, noisy)  # in workers again
    _same_fit(warm, longer)
    assert warm.n_iter_ == [16, 16]


def test_an_interrupted_fit_goes_on(ctrl_c_at):
    noisy, _ = _images(n=3)
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPDenoiser(max_iter=12, **kw).fit, noisy)
    warm = DIPDenoiser(max_iter=12, warm_start=True, callback=ctrl_c_at(5), **kw)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _quiet(warm.fit, noisy)
    assert warm.stopped_by_ == ["interrupted"] * 3 and warm.n_iter_ == [5, 0, 0]
    # The next call finishes the first image's fit and makes the two others.
    _quiet(warm.set_params(callback=None).fit, noisy)
    assert warm.n_iter_ == [17, 12, 12]
    other = DIPDenoiser(max_iter=17, **kw)
    first = _quiet(other.fit, noisy[:1])
    np.testing.assert_array_equal(warm.reconstruction_[0], first.reconstruction_[0])
    np.testing.assert_array_equal(warm.reconstruction_[1:], longer.reconstruction_[1:])


def test_a_numpy_max_iter_of_a_small_type_goes_on():
    # max_iter=np.int8(70) passes the parameter check; the second warm fit's last step,
    # 70 + np.int8(70), wrapped around to -116 and the fit went on for no step.
    noisy = _images()[0][:8, :8]
    tiny = SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1)
    kw = dict(generator=tiny, early_stopping=None, random_state=0, device="cpu")
    longer = DIPDenoiser(max_iter=140, **kw).fit(noisy)
    warm = DIPDenoiser(max_iter=np.int8(70), warm_start=True, **kw)
    warm.fit(noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's overflow
        warm.fit(noisy)
    assert warm.n_iter_ == 140
    _same_fit(warm, longer)


def test_a_fit_the_callback_stopped_goes_on():
    # A callback that stops on a time budget: the next warm fit goes on from there.
    noisy, _ = _images()
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPDenoiser(max_iter=12, **kw).fit, noisy)
    warm = DIPDenoiser(max_iter=12, warm_start=True, callback=lambda it, *_: it >= 4, **kw)
    _quiet(warm.fit, noisy)
    assert warm.stopped_by_ == "callback" and warm.n_iter_ == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "kept as they were"
        _quiet(warm.set_params(max_iter=7, callback=None).fit, noisy)
    assert warm.n_iter_ == 12
    _same_fit(warm, longer)


# A fit its stopping rule ends within 200 steps.
_RULE_ENDS = dict(output_averaging=None, max_iter=200, random_state=0, device="cpu")


def test_a_fit_the_callback_stopped_as_the_rule_fired_stays_as_it_was():
    noisy, _ = _images()
    kw = dict(generator=TINY, early_stopping=_rule(patience=3), **_RULE_ENDS)
    ruled = DIPDenoiser(**kw).fit(noisy)
    assert ruled.stopped_by_ == "early_stopping"
    last = ruled.n_iter_ - 1
    # The callback stops at the very step the rule fired: the rule ended the fit too.
    den = DIPDenoiser(warm_start=True, callback=lambda it, *_: it >= last, **kw).fit(noisy)
    assert den.stopped_by_ == "callback" and den.n_iter_ == ruled.n_iter_
    with pytest.warns(UserWarning, match="1 of 1 fit.*stopping rule.*kept as they were"):
        den.set_params(callback=None).fit(noisy)
    assert den.n_iter_ == ruled.n_iter_
    np.testing.assert_array_equal(den.reconstruction_, ruled.reconstruction_)


class _LaterValley(BaseStoppingRule):
    """A signal lowest at step 3 (patience 3 stops at step 6) and lower still at step 7."""

    def _start(self):
        pass

    def signal(self, x, iteration):
        value = {3: 2.0, 7: 0.0}.get(iteration, 3.0 + max(3 - iteration, 0))
        return x.new_tensor(value).mean()


def test_a_fit_interrupted_as_the_rule_fired_goes_on_no_further(ctrl_c_at):
    # A Ctrl-C in the callback of the step the rule fired at cut a complete fit: the
    # next warm fit went on past the rule's decision, found the later valley at step 7
    # and returned that iterate (n_iter_ 11) where the fit had stopped at step 6 and
    # returned step 3's. It now ends where the rule ended it, as one fit does.
    noisy, _ = _images()
    kw = dict(generator=TINY, early_stopping=_LaterValley(patience=3, warmup=0), **_RULE_ENDS)
    ruled = DIPDenoiser(**kw).fit(noisy)
    assert ruled.stopped_by_ == "early_stopping" and ruled.n_iter_ == 7
    den = DIPDenoiser(warm_start=True, callback=ctrl_c_at(7), **kw)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        den.fit(noisy)
    # Complete: it keeps the rule's reason (it read "interrupted", and the scorers
    # refused it), and scores as the one fit.
    assert den.stopped_by_ == "early_stopping" and den.n_iter_ == 7
    assert den.score(noisy) == ruled.score(noisy)
    den.set_params(callback=None).fit(noisy)
    _same_fit(den, ruled)


def test_a_fit_the_rule_ended_stays_as_it_was():
    noisy, _ = _images()
    den = DIPDenoiser(generator=TINY, early_stopping=_rule(patience=3), **_RULE_ENDS)
    den.set_params(warm_start=True).fit(noisy)
    assert den.stopped_by_ == "early_stopping"
    before = den.reconstruction_.copy(), den.n_iter_
    with pytest.warns(UserWarning, match="1 of 1 fit.*stopping rule.*kept as they were"):
        den.fit(noisy)
    np.testing.assert_array_equal(den.reconstruction_, before[0])
    assert den.n_iter_ == before[1]


def test_what_may_not_change_between_warm_fits():
    noisy, clean = _images()
    den = DIPDenoiser(
        generator=TINY, early_stopping=_rule(), max_iter=5, random_state=0, warm_start=True
    )
    _quiet(den.fit, noisy, y=clean)
    for params, named in [
        ({"lr": 0.02}, "lr"),
        ({"generator__width": 4}, "generator__width"),
        ({"early_stopping__patience": 2000}, "early_stopping__patience"),
        ({"random_state": 1}, "random_state"),
    ]:
        changed = pickle.loads(pickle.dumps(den)).set_params(**params)
        with pytest.raises(ValueError, match=f"but {named} changed since"):
            changed.fit(noisy)
    with pytest.raises(ValueError, match="other clean images y"):
        den.fit(noisy, y=np.clip(clean + 0.1, 0, 1))
    assert den.n_iter_ == 5  # nothing was run, nothing was lost
    blind = DIPDenoiser(generator=TINY, max_iter=5, random_state=0, warm_start=True)
    _quiet(blind.fit, noisy)
    with pytest.raises(ValueError, match="recorded no PSNR"):
        blind.fit(noisy, y=clean)
    # Other images are a new problem: fitted afresh, as without warm_start.
    other, _ = _images(seed=3)
    with pytest.warns(UserWarning, match="other images.*fitting them afresh"):
        _quiet(den.fit, other)
    fresh = _quiet(den.set_params(warm_start=False).fit, other)
    assert den.n_iter_ == 5 and fresh is den


def test_without_warm_start_nothing_is_kept_and_each_fit_starts_afresh():
    noisy, _ = _images()
    den = DIPDenoiser(
        generator=TINY, early_stopping=_rule(), max_iter=6, random_state=0, device="cpu"
    )
    first = _quiet(den.fit, noisy).reconstruction_.copy()
    assert den._fit_states is None
    np.testing.assert_array_equal(_quiet(den.fit, noisy).reconstruction_, first)
    assert den.n_iter_ == 6


def test_warm_start_refuses_batches_and_non_booleans():
    noisy, _ = _images(n=2)
    with pytest.raises(ValueError, match="batch_size=2.*use batch_size=1"):
        DIPDenoiser(generator=TINY, warm_start=True, batch_size=2).fit(noisy)
    with pytest.raises(ValueError, match="warm_start"):
        DIPDenoiser(generator=TINY, warm_start="yes").fit(noisy)


def test_a_state_from_another_device_goes_on_with_a_fresh_perturbation_stream():
    # A GPU fit's generator state (16 bytes) does not fit a CPU generator: the fit
    # goes on, its perturbations from a seeded CPU stream, instead of failing.
    import torch

    from skdip._engine import DIPModel, fit_model
    from skdip.losses import get_loss

    target = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    model = DIPModel(TINY.build((16, 16), 1, seed=0), None, 1 / 30)
    first = fit_model(model, target, loss=get_loss("mse"), max_iter=4, keep_state=True)
    first.state.rng_state = torch.zeros(16, dtype=torch.uint8)
    more = fit_model(None, None, loss=get_loss("mse"), max_iter=3, resume=first.state)
    assert more.n_iter == 7 and np.isfinite(more.history["loss"]).all()


def test_device_may_change_between_warm_fits():
    # A fit made with device="cuda" could not go on on a machine without a GPU:
    # device="cuda" is refused there, and setting another device was refused as a
    # change. A device that names where the kept fit is changes nothing.
    noisy, _ = _images()
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0)
    longer = _quiet(DIPDenoiser(max_iter=9, device="cpu", **kw).fit, noisy)
    warm = _quiet(DIPDenoiser(max_iter=4, device="cpu", warm_start=True, **kw).fit, noisy)
    _quiet(warm.set_params(max_iter=5, device=torch.device("cpu")).fit, noisy)
    _same_fit(warm, longer)


def test_a_kept_fit_moved_whole_goes_on_as_it_would_have(float64, loss_nan_at):
    # The path that moves a kept fit to another device (through torch's format, onto
    # the new device), taken here from the CPU to the CPU: the same numbers, a
    # rollback of the divergence guard included (its snapshot moves too).
    from skdip._engine import DIPModel, fit_model

    nan_at_step_9, count = loss_nan_at(9)
    target = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    kw = dict(loss=nan_at_step_9, checkpoint_every=3, seed=0)
    longer = fit_model(DIPModel(TINY.build((16, 16), 1, seed=0)), target, max_iter=12, **kw)
    count[0] = 0
    first = fit_model(
        DIPModel(TINY.build((16, 16), 1, seed=0)), target, max_iter=6, keep_state=True, **kw
    )
    moved = first.state._moved_to(torch.device("cpu"))
    assert moved.model is not first.state.model
    more = fit_model(None, None, max_iter=6, resume=moved, **kw)
    assert len(more.history["divergences"]) == len(longer.history["divergences"]) == 1
    assert torch.equal(more.estimate, longer.estimate)
    adam = moved.optimizer.optimizers[0]
    assert adam.param_groups[0]["foreach"] and not adam.param_groups[0]["fused"]


def test_a_gpu_fit_loaded_on_the_cpu_goes_on_with_the_cpus_kernels():
    # torch.load puts a GPU's kept fit on the CPU where there is no GPU, but its Adam
    # kept the GPU's fused kernels (seen on an H100: a pickled device="cuda" fit went
    # on with them on the CPU). Faked here: a CPU fit given the GPU's kernel settings.
    from skdip._engine import DIPModel, _suit_adam_states, fit_model
    from skdip.estimators._base import _SavedFitStates
    from skdip.losses import get_loss

    target = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    kw = dict(loss=get_loss("mse"), seed=0)
    longer = fit_model(DIPModel(TINY.build((16, 16), 1, seed=0)), target, max_iter=8, **kw)
    first = fit_model(
        DIPModel(TINY.build((16, 16), 1, seed=0)), target, max_iter=4, keep_state=True, **kw
    )
    state = first.state
    state.optimizer.load_state_dict(_suit_adam_states(state.optimizer.state_dict(), True))
    assert state.optimizer.optimizers[0].param_groups[0]["fused"]
    loaded = _SavedFitStates([state]).load()[0]  # as a pickled estimator's kept fit loads
    goes_on = loaded.copy_on(torch.device("cpu"))
    adam = goes_on.optimizer.optimizers[0]
    assert adam.param_groups[0]["foreach"] and not adam.param_groups[0]["fused"]
    more = fit_model(None, None, max_iter=4, resume=goes_on, **kw)
    assert torch.equal(more.estimate, longer.estimate)


def test_kept_fits_saved_on_a_gpu_this_machine_lacks_load_on_the_cpu(monkeypatch):
    # torch.load put each tensor back on its saved device whenever CUDA was there:
    # a fit kept on cuda:1 failed to load on a machine with one GPU, and with it the
    # pickled estimator. The saved device is faked here, as this machine may have none.
    from skdip.estimators._base import _SavedFitStates

    states = [{"weight": torch.arange(4.0)}]
    real_tag = torch.serialization.location_tag
    monkeypatch.setattr(
        torch.serialization,
        "location_tag",
        lambda storage: "cuda:1" if storage.device.type == "cpu" else real_tag(storage),
    )
    saved = _SavedFitStates(states)
    monkeypatch.setattr(torch.serialization, "location_tag", real_tag)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    loaded = saved.load()
    assert loaded[0]["weight"].device.type == "cpu"
    assert torch.equal(loaded[0]["weight"], states[0]["weight"])


def test_a_pickled_warm_fit_goes_on_in_another_process(tmp_path):
    # A function-valued parameter enters the parameter keys by identity, which a new
    # process does not share: the kept fit must go on there all the same.
    import subprocess
    import sys

    import torch

    noisy, _ = _images()
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPDenoiser(max_iter=9, loss=torch.nn.functional.l1_loss, **kw).fit, noisy)
    warm = DIPDenoiser(max_iter=4, loss=torch.nn.functional.l1_loss, warm_start=True, **kw)
    _quiet(warm.fit, noisy)
    saved, out = tmp_path / "warm.pkl", tmp_path / "out.npy"
    saved.write_bytes(pickle.dumps((warm, noisy)))
    script = (
        "import pickle, sys, warnings, numpy as np, torch\n"
        "warnings.simplefilter('ignore')\n"
        "torch.set_num_threads(1)\n"
        f"est, x = pickle.loads(open({str(saved)!r}, 'rb').read())\n"
        "est.set_params(max_iter=5).fit(x)\n"
        f"np.save({str(out)!r}, est.reconstruction_)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(out), longer.reconstruction_)


def test_a_change_made_before_a_pickle_is_still_refused():
    noisy, _ = _images()
    den = DIPDenoiser(generator=TINY, max_iter=4, random_state=0, warm_start=True)
    _quiet(den.fit, noisy)
    loaded = pickle.loads(pickle.dumps(den.set_params(lr=0.05)))
    with pytest.raises(ValueError, match="but lr changed since"):
        loaded.fit(noisy)
    # Set back, it goes on.
    _quiet(loaded.set_params(lr=0.01).fit, noisy)
    assert loaded.n_iter_ == 8


def test_a_continued_fit_scores_as_the_longer_fit():
    from skdip.metrics import get_scorer

    noisy, _ = _images()
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPDenoiser(max_iter=14, **kw).fit, noisy)
    warm = DIPDenoiser(max_iter=6, warm_start=True, **kw)
    _quiet(warm.fit, noisy)
    _quiet(warm.set_params(max_iter=8).fit, noisy)
    for name in ("emv", "discrepancy"):
        assert get_scorer(name)(warm, noisy) == get_scorer(name)(longer, noisy)
    assert warm.score(noisy) == longer.score(noisy)
    np.testing.assert_array_equal(warm.transform(), longer.transform())


def test_a_continuation_that_raises_leaves_the_kept_fit_as_it_was():
    noisy, _ = _images()
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPDenoiser(max_iter=12, **kw).fit, noisy)
    warm = DIPDenoiser(max_iter=5, warm_start=True, **kw)
    _quiet(warm.fit, noisy)

    def broken(it, loss, estimate):
        if it == 7:
            raise RuntimeError("a bug in the callback")

    with pytest.raises(RuntimeError, match="a bug in the callback"):
        _quiet(warm.set_params(max_iter=7, callback=broken).fit, noisy)
    assert warm.n_iter_ == 5
    _quiet(warm.set_params(callback=None).fit, noisy)
    _same_fit(warm, longer)


def test_a_fit_of_other_images_that_raises_keeps_the_fit_to_go_on_with():
    noisy, _ = _images()
    other, _ = _images(seed=1)
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(DIPDenoiser(max_iter=12, **kw).fit, noisy)
    warm = DIPDenoiser(max_iter=5, warm_start=True, **kw)
    _quiet(warm.fit, noisy)

    def broken(it, loss, estimate):
        raise RuntimeError("a bug in the callback")

    # Other images start afresh; that fit fails, and the kept one must survive it.
    with pytest.warns(UserWarning, match="other"):
        with pytest.raises(RuntimeError, match="a bug in the callback"):
            _quiet(warm.set_params(callback=broken).fit, other)
    _quiet(warm.set_params(max_iter=7, callback=None).fit, noisy)
    _same_fit(warm, longer)


def test_blind_deblurring_goes_on_with_both_networks_and_its_psnr_curve():
    from skdip import BlindDeblurrer
    from skdip.datasets import blur, make_motion_kernel

    sharp = np.random.default_rng(0).random((24, 24))
    blurry = blur(sharp, make_motion_kernel(5, random_state=0, smoothing=0))
    truth = sharp[2:-2, 2:-2]  # the valid blur's grid
    kw = dict(generator=TINY, kernel_size=5, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(BlindDeblurrer(max_iter=20, **kw).fit, blurry, y=truth)
    warm = BlindDeblurrer(max_iter=8, warm_start=True, **kw)
    _quiet(warm.fit, blurry, y=truth)
    warm = pickle.loads(pickle.dumps(warm))
    _quiet(warm.set_params(max_iter=7).fit, blurry)
    _quiet(warm.set_params(max_iter=5).fit, blurry)  # a third call: the reference is kept
    _same_fit(warm, longer)
    np.testing.assert_array_equal(warm.kernel_, longer.kernel_)
    assert len(warm.history_["psnr"]) == 20
    assert not [k for k in vars(warm) if k.startswith("continuation")]


def test_blind_deblurring_of_a_colour_image_goes_on_with_its_own_regularizer_weight():
    # The default ratio weight counts the channels: a continued colour fit must go on
    # with the colour weight, not the grey one, and so match an uninterrupted fit.
    from skdip import BlindDeblurrer
    from skdip.datasets import blur, make_motion_kernel

    sharp = np.random.default_rng(0).random((16, 16, 3))
    blurry = blur(sharp, make_motion_kernel(5, random_state=0, smoothing=0))
    kw = dict(generator=TINY, kernel_size=5, early_stopping=_rule(), random_state=0, device="cpu")
    longer = _quiet(BlindDeblurrer(max_iter=4, **kw).fit, blurry)
    warm = BlindDeblurrer(max_iter=2, warm_start=True, **kw)
    _quiet(warm.fit, blurry)
    _quiet(warm.set_params(max_iter=2).fit, blurry)
    _same_fit(warm, longer)


def test_an_estimator_whose_fits_take_settings_of_their_own_cannot_keep_them():
    # A guard for estimators to come: a per-fit engine setting that a continuation
    # would not make again must not be silently dropped.
    from skdip.losses import get_loss

    class _OwnLoss(DIPDenoiser):
        def _make_model(self, image, extra, seed, device):
            model, target, fit_kwargs = super()._make_model(image, extra, seed, device)
            return model, target, {**fit_kwargs, "loss": get_loss("l1")}

    noisy, _ = _images()
    with pytest.raises(NotImplementedError, match="cannot keep its fits.*loss"):
        _OwnLoss(generator=TINY, max_iter=3, warm_start=True).fit(noisy)
    assert _quiet(_OwnLoss(generator=TINY, max_iter=3).fit, noisy).n_iter_ == 3


def _diffraction():
    from skdip.datasets import simulate_diffraction

    yy, xx = np.mgrid[0:12, 0:12] / 12
    return simulate_diffraction(0.5 + 0.4 * np.sin(3 * xx) * np.cos(2 * yy))


@pytest.mark.parametrize("n_init, n_jobs", [(1, None), (2, 2)])
def test_phase_retrieval_goes_on_with_the_restart_it_chose(n_init, n_jobs):
    from skdip import HIOPhaseRetriever, PhaseRetriever

    y = _diffraction()
    kw = dict(
        generator=TINY,
        early_stopping=_rule(),
        random_state=0,
        device="cpu",  # compared bit for bit: GPU kernels are not bit-reproducible
        n_init=n_init,
        pretrain_iter=5,
        init=HIOPhaseRetriever(max_iter=30, n_er=10),
    )
    longer = _quiet(PhaseRetriever(max_iter=20, **kw).fit, y)
    warm = PhaseRetriever(max_iter=8, warm_start=True, n_jobs=n_jobs, **kw)
    _quiet(warm.fit, y)
    chose = warm.restart_losses_.copy()
    warm = pickle.loads(pickle.dumps(warm))
    _quiet(warm.set_params(max_iter=12, n_jobs=None).fit, y)
    assert warm.n_iter_ == 20
    np.testing.assert_array_equal(warm.restart_losses_, chose)  # the losses that chose it
    if n_init == 1:
        _same_fit(warm, longer)
    else:
        # Here both choose the same restart; in general the choice can differ.
        assert np.argmin(chose) == np.argmin(longer.restart_losses_)
        np.testing.assert_array_equal(warm.reconstruction_, longer.reconstruction_)


def test_workers_get_the_parameters_not_the_fitted_state(monkeypatch):
    # Every task's pickle carried the whole fitted estimator, kept states included
    # (590 MB to transform four new images after four kept skip fits).
    from joblib import parallel_config

    import skdip.estimators._base as base

    seen = []
    original = base._fit_in_worker

    def spy(estimator, *args):
        seen.append(set(vars(estimator)))
        return original(estimator, *args)

    monkeypatch.setattr(base, "_fit_in_worker", spy)
    noisy, _ = _images(n=2)
    other, _ = _images(n=2, seed=1)
    kw = dict(generator=TINY, early_stopping=_rule(), random_state=0, device="cpu")
    den = DIPDenoiser(max_iter=4, warm_start=True, n_jobs=2, **kw)
    with parallel_config(backend="threading"):  # the spy sees the workers' copies
        _quiet(den.fit, noisy)
        _quiet(den.transform, other)
        _quiet(den.set_params(max_iter=2).fit, noisy)  # a continuation
    assert len(seen) == 6
    fitted = {"_fit_results", "_fit_states", "_last_solve", "reconstruction_", "history_"}
    assert all(not fitted & keys for keys in seen)
    assert "lr" in seen[-1] and "_device" in seen[-1]
    assert den._fit_states is not None and den.n_iter_ == [6, 6]


def test_the_max_iter_warning_says_what_warm_start_does_now():
    # With warm_start=False it said "with warm_start=True, a next fit goes on from
    # here": following it restarted at step 0, as nothing had been kept.
    from sklearn.exceptions import ConvergenceWarning

    from skdip import DIPDenoiser, SkipNetwork

    x = np.random.default_rng(0).random((16, 16))
    kw = dict(
        generator=SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1),
        early_stopping=ExponentialMovingVariance(warmup=0, patience=100),
        max_iter=3,
        random_state=0,
    )
    with pytest.warns(ConvergenceWarning, match="fitted with warm_start=True, a fit is kept"):
        DIPDenoiser(**kw).fit(x)
    with pytest.warns(ConvergenceWarning, match="warm_start=True: a next fit goes on from here"):
        DIPDenoiser(warm_start=True, **kw).fit(x)


def test_a_kept_fit_holds_no_gradients():
    # The last step's gradients stayed with the kept fit, as large as the network.
    from skdip import DIPDenoiser, SkipNetwork

    x = np.random.default_rng(0).random((16, 16))
    den = DIPDenoiser(
        generator=SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1),
        early_stopping=None,
        max_iter=3,
        random_state=0,
        warm_start=True,
    ).fit(x)
    (state,) = den._fit_states
    params = list(state.model.parameters())
    assert params and all(p.grad is None for p in params)


def test_blind_deblurring_goes_on_in_its_own_dtype_after_the_default_changed():
    # The reference of BlindDeblurrer's PSNR curve was made again in the new default
    # dtype when a kept float32 fit went on under a float64 default: the curve's later
    # points moved (1e-6 dB, found by a review), though the fit itself went on exactly.
    import torch

    from skdip import BlindDeblurrer

    rng = np.random.default_rng(0)
    blurry = rng.random((24, 24))
    sharp = np.clip(blurry + 0.05 * rng.standard_normal(blurry.shape), 0, 1)
    kw = dict(generator=TINY, kernel_size=5, early_stopping=None, random_state=0, device="cpu")
    longer = _quiet(BlindDeblurrer(max_iter=12, **kw).fit, blurry, y=sharp)
    warm = _quiet(BlindDeblurrer(max_iter=6, warm_start=True, **kw).fit, blurry, y=sharp)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _quiet(warm.fit, blurry, y=sharp)
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_array_equal(warm.reconstruction_, longer.reconstruction_)
    np.testing.assert_array_equal(warm.history_["psnr"], longer.history_["psnr"])


# Mutation audit (survivor: a continuation's warnings did not say which image): the
# ConvergenceWarning of a continued fit names its image, as the first fit's does.
def test_a_continued_fits_convergence_warnings_name_the_image():
    noisy, _ = _images(2)
    kw = dict(generator=TINY, early_stopping=ExponentialMovingVariance(warmup=50))
    den = _quiet(
        DIPDenoiser(max_iter=2, warm_start=True, random_state=0, device="cpu", **kw).fit, noisy
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        den.set_params(max_iter=2).fit(noisy)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert [m.split(" max_iter=")[0] for m in messages] == [
        "DIPDenoiser: image 1 of 2:",
        "DIPDenoiser: image 2 of 2:",
    ]


# Mutation audit (survivor: _Selection's class-level reference_range default dropped):
# a fit kept before the range was recorded per fit (pickled by an earlier skdip) has
# no such attribute, and goes on reading its PSNR curve as it did, on (0, 1, 1).
def test_a_kept_fit_without_a_recorded_psnr_range_goes_on():
    noisy, clean = _images()
    den = _quiet(
        DIPDenoiser(
            generator=TINY,
            max_iter=3,
            early_stopping=None,
            warm_start=True,
            random_state=0,
            device="cpu",
        ).fit,
        noisy,
        clean,
    )
    selection = den._fit_states[0].selection
    del selection.__dict__["reference_range"]  # as unpickled from an earlier version
    _quiet(den.set_params(max_iter=2).fit, noisy, clean)
    assert len(den.history_["psnr"]) == 5 and np.isfinite(den.history_["psnr"]).all()


def _blind(**kw):
    from skdip import BlindDeblurrer

    return BlindDeblurrer(generator=TINY, kernel_size=5, early_stopping=_rule(), **kw)


def _phase(**kw):
    from skdip import HIOPhaseRetriever, PhaseRetriever

    init = HIOPhaseRetriever(max_iter=30, n_er=10)
    return PhaseRetriever(generator=TINY, early_stopping=_rule(), pretrain_iter=5, init=init, **kw)


@pytest.mark.parametrize("name", [*CASES, "blind deblurring", "phase retrieval"])
def test_every_estimators_kept_fit_moves_whole(name, monkeypatch):
    # A changed device moves a kept fit through torch's format. No second device
    # here: every continuation is made to take that path, from the CPU to the CPU,
    # and must give the numbers of the longer fit (two networks, plain gradient
    # steps, a phase monitor and all).
    from skdip._engine import FitState

    if name == "blind deblurring":
        from skdip.datasets import blur, make_motion_kernel

        sharp = np.random.default_rng(0).random((24, 24))
        x, make = blur(sharp, make_motion_kernel(5, random_state=0, smoothing=0)), _blind
    elif name == "phase retrieval":
        x, make = _diffraction(), _phase
    else:
        x, make = _images()[0], CASES[name]
    longer = _quiet(make(max_iter=12, random_state=0, device="cpu").fit, x)
    warm = make(max_iter=5, random_state=0, device="cpu", warm_start=True)
    _quiet(warm.fit, x)
    moves = []

    def moved(self, device):
        moves.append(device)
        return self._moved_to(device)

    monkeypatch.setattr(FitState, "copy_on", moved)
    _quiet(warm.set_params(max_iter=7).fit, x)
    assert moves and all(d.type == "cpu" for d in moves)
    _same_fit(warm, longer)


def test_a_phase_retrievers_unused_mask_seed_may_change_between_warm_fits():
    # With no coded masks the seed draws nothing, yet changing it refused the warm fit.
    from skdip import PhaseRetriever

    blob = np.zeros((8, 8))
    blob[2:6, 2:6] = np.random.default_rng(0).random((4, 4))
    pattern = simulate_diffraction(blob, oversampling=2)
    kw = dict(generator=TINY, random_state=0, device="cpu")
    longer = _quiet(PhaseRetriever(max_iter=9, **kw).fit, pattern)
    warm = _quiet(PhaseRetriever(max_iter=4, warm_start=True, **kw).fit, pattern)
    _quiet(warm.set_params(mask_seed=3, max_iter=5).fit, pattern)
    np.testing.assert_array_equal(warm.reconstruction_, longer.reconstruction_)
    # Where the seed draws the masks, it is part of the fit: refused as before.
    coded = simulate_diffraction(blob, oversampling=2, n_masks=2)
    warm = _quiet(PhaseRetriever(n_masks=2, max_iter=4, warm_start=True, **kw).fit, coded)
    with pytest.raises(ValueError, match="mask_seed changed since"):
        warm.set_params(mask_seed=3).fit(coded)
