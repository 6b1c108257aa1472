"""Deep Image Prior denoising."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval, StrOptions

from .._typing import Float, Int
from ..stopping import BaseStoppingRule
from ._base import BaseDIPEstimator
from ._sparse_noise import SparseNoise, SparseNoiseMixin

__all__ = ["DIPDenoiser"]


class DIPDenoiser(SparseNoiseMixin, BaseDIPEstimator):
    """Denoise images with a Deep Image Prior and reference-free early stopping.

    An untrained generator ``G_theta(z)`` is fitted to the noisy image ``y``
    by minimising ``loss(G_theta(z), y) + R(G_theta(z))``. The network
    reproduces image structure long before it reproduces noise, so the
    quality rises, peaks and then falls; the early-stopping rule watches the
    running variance of the iterates, whose minimum tracks the peak, and the
    estimate at that minimum is returned. No training data and no clean image
    are needed.

    Parameters
    ----------
    generator : str or BaseGenerator, default="skip"
        The network: a name from :data:`skdip.generators.GENERATOR_NAMES`
        (``"skip"``, the DIP paper's encoder-decoder, about 2.2M parameters;
        ``"skip-small"``, about 5x faster per step on a CPU (measured); ``"drp"``, the
        Deep Random Projector, with its own recipe: see
        :class:`~skdip.generators.DeepRandomProjector`) or a configuration
        such as ``SkipNetwork(width=64)``.
    early_stopping : {"emv", "wmv", "discrepancy"}, BaseStoppingRule or None, default="emv"
        ``"emv"``: :class:`ExponentialMovingVariance` with its defaults;
        ``"wmv"``: :class:`WindowedMovingVariance`; ``"discrepancy"``:
        :class:`~skdip.stopping.DiscrepancyPrinciple` (white Gaussian noise:
        stops once the residual reaches the noise power, without a
        ``noise_model``); a rule object to set its parameters (tunable as
        ``early_stopping__patience``); None runs
        ``max_iter`` steps and returns the last estimate (the last average
        with ``output_averaging``).
    max_iter : int, default=5000
        Maximum number of optimisation steps.
    lr : float, default=0.01
        Adam learning rate.
    loss : {"mse", "rmse", "l1", "huber"} or callable, default="mse"
        Data-fidelity loss. "l1" and "huber" suit impulse-like noise; "rmse"
        (its square root) goes with the "drp" generator.
        A callable is called as ``loss(prediction, target)``, the model's
        prediction of the measurement first and the observation second
        (tensors shaped ``(1, C, H, W)``), and returns a scalar tensor.
    regularizer : BaseRegularizer or callable, default=None
        Optional penalty on the output, e.g. ``TotalVariation(weight=0.01)``.
    noise_model : {"sparse"}, SparseNoise or None, default=None
        ``"sparse"`` models impulse (salt-and-pepper) noise explicitly: the
        observation is fitted as ``G(z) + (g*g - h*h)`` with ``g``, ``h``
        trained by plain gradient steps from a tiny start, so that outliers
        go to the sparse term (double over-parameterisation). Its rate is
        tunable as ``noise_model__lr``.
    reg_noise_std : float, default=1/30
        Standard deviation of the Gaussian perturbation of the input code at
        each step (1/20 helps at high noise).
    output_averaging : float or None, default=0.99
        Weight ``w``, in (0, 1), of the exponential average of outputs,
        ``a_t = w * a_{t-1} + (1 - w) * x_t`` (0.99 as in the DIP paper), the
        estimate returned. None returns the raw iterate at the variance
        minimum.
    averaging_monitor : {"raw", "average"}, default="raw"
        With output averaging, what the stopping rule watches. "raw": the raw
        iterates; the average ``round(1 / (1 - w))`` steps after their
        variance minimum is returned (an average of the steadiest iterates).
        That average starts at the rule's first check, leaving out the
        warm-up's iterates, with its weights normalised over the ``n``
        iterates it holds (``sum_k (1 - w) w^(t-k) x_k / (1 - w^n)``): averaged
        from the first step, a minimum just after the warm-up returned an
        average a third made of the first, blurry outputs, up to 5.2 dB worse
        (``benchmarks/results/output_averaging.md``: 16 of 26 cases gained). If
        the best iterates come within the warm-up (moon at noise 0.2, whose
        fit was overfitting by the first check, which warns), they are left
        out too: 1.83 dB lost there, the one loss of the 26.
        "average": the average itself, from the first step; the average at
        its variance minimum is returned. In the denoising benchmark
        (``benchmarks/results/denoise.md``, 12 cases, measured with "raw"
        averaging from the first step) "raw" beat the raw iterate at the EMV
        minimum in 9 cases (median +0.58 dB), while "average" drifted late and
        lost 3.6 to 7.1 dB in 5 cases (median 0.36 dB below "raw").
        ``best_iter_`` is the step of the returned average.
    rescale : "auto" or bool, default="auto"
        Map intensities to [0, 1] before fitting and back after. "auto" does
        so for data clearly outside [0, 1] (below -0.25 or above 1.25, with
        its median off [-0.05, 1.05], such as data on [-0.2, 0], or with over
        5% of its values beyond [0, 1] by more than three times the noise, such
        as a signed map on [-0.2, 0.2] or an HDR image on [0, 1.2]) and for
        data spanning less than 0.5 (a dark or low-contrast picture, or 12-bit
        counts that ``img_as_float`` read from a 16-bit container), which the
        default networks fit poorly as given (on a 3%-exposure crop: 24.6 dB
        as it was, 34.7 dB rescaled; a crop on [0, 0.12] or [0.44, 0.56]:
        15.2 and 16.1 dB, far worse than the noisy input's 26 dB, against
        26.4 dB stretched).
        ``score(X, y)`` measures the PSNR on a range from ``y`` alone (see
        :meth:`score`).
        With False the data is fitted as given: a warning says when it is off
        [0, 1] as above, and data beyond 1e19 in absolute value is refused.
    device : str or torch.device, default="auto"
        "auto" uses CUDA when available, else the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the network weights, its input code and the perturbations. The
        same seed gives identical results on the CPU; every image of a batch
        gets the same seed, so an image's fit does not depend on the others.
        None draws the seed from NumPy's global generator (``np.random.seed``
        makes it repeatable, not ``torch.manual_seed``), as does a
        ``RandomState`` instance from itself: the seed a fit ran from is kept
        in ``random_state_``, to repeat it.
    verbose : bool or int, default=False
        Show a progress bar with the loss and the stopping signal (needs
        tqdm: the ``progress`` extra).
    callback : callable, default=None
        ``callback(iteration, loss, estimate)`` after every step, with
        ``estimate`` a ``(1, C, H, W)`` tensor on the fitting device (a copy,
        safe to keep) on the intensity scale the fit works on: [0, 1] for
        rescaled data (see ``rescale``), not the caller's; returning True
        stops the fit, keeping the best estimate so far. A callback with a
        parameter named ``image`` after its first three is called as
        ``callback(iteration, loss, estimate, image=i)``, ``i`` the index in
        ``X`` of the image fitted (0 for a single image), in batched, parallel
        and warm-started fits alike; ``**kwargs`` alone does not ask for it,
        nor does ``image`` as the name of the third (the estimate). With
        ``n_jobs`` the callback runs in joblib's worker processes (a warning
        says so): its side effects stay there.
    n_jobs : int, default=None
        Images of a batch fitted in parallel (joblib; None means 1, -1 all
        cores). Each worker gets its share of the caller's torch threads
        (``torch.get_num_threads() // n_jobs``); on a machine with several
        GPUs, images are spread over them. Under joblib's threading backend
        (``joblib.parallel_config(backend="threading")``) the fits share
        torch's global generator, so a network that draws at random during
        the steps (dropout) is not reproducible there; worker processes, the
        default, are.
    batch_size : int, default=1
        Number of images of one shape fitted together in one vectorised run:
        their networks are stacked and run as one (``torch.func.vmap``), so
        each step launches a few large operations instead of many small
        ones, which pays on a GPU for small images. Every image is fitted by
        the same algorithm as alone (same seeds, Adam, stopping rule); only
        float32 rounding differs, which Adam can amplify and which can move
        the early-stopping point (16x16 RGB, default network: the largest
        difference was 4e-6 after one step, 0.004 after 3 and 0.01 after 10;
        under ``torch.set_default_dtype(torch.float64)`` 3e-10 after 10).
        An image whose fit ends leaves the batch. On a CPU it gains
        little or loses (0.67x to 1.36x measured,
        ``benchmarks/results/batched_cpu_t*.md``).
        Not available with ``noise_model``. Batches are spread over the
        ``n_jobs`` workers.
    warm_start : bool, default=False
        Keep each image's fit (network, Adam's state, stopping rule, history)
        so that the next ``fit`` on the same images goes on with it for up to
        ``max_iter`` more steps instead of starting afresh: the numbers one
        longer fit would have given. It goes on with fits that ``max_iter``
        or the ``callback`` cut short or that were interrupted (Ctrl-C); fits
        the stopping rule ended stay as they are. Only ``max_iter``, ``verbose``, ``callback``,
        ``n_jobs`` and ``device`` (the kept fits move to it) may change
        between the calls; other images are fitted
        afresh (with a warning). Continued fits run in parallel with
        ``n_jobs``, as fits do. The kept states make the estimator (and its pickle)
        larger: the network, Adam's moments and the divergence guard's
        snapshot of them, per image (59 MB for a 128x128 RGB image with the
        ``"skip"`` network). Not with
        ``batch_size`` > 1.

    Attributes
    ----------
    reconstruction_ : ndarray or list of ndarray
        The denoised image(s), in the layout of ``X`` (float32 for float32 ``X``, else float64).
    best_iter_ : int or list of int
        Iteration whose estimate was returned: the variance minimum, plus
        the averaging delay with ``averaging_monitor="raw"`` (the default).
        0 with ``n_iter_ == 0`` when no step was accepted (every step
        diverged): the estimate is then the untrained network's output.
    n_iter_ : int or list of int
        Iterations run (accepted steps).
    stopped_by_ : str or list of str
        Why the fit ended: "early_stopping", "max_iter", "callback",
        "interrupted" or "divergence".
    history_ : dict or list of dict
        Per-iteration records: "loss" (with a ``regularizer``, its penalty
        included, and "data_loss" the data term alone), "signal" (the running
        variance; NaN during warm-up), "psnr" when clean references were given to ``fit``
        (the PSNR of the estimate each step would return: with output
        averaging, of the running average, and "psnr_raw" that of the raw
        iterates), "divergences" (rollbacks of the divergence guard), "fit_time"
        and "seconds_per_step".
    loss_curve_ : ndarray or list of ndarray
        The loss at every iteration (as ``history_["loss"]``).
    n_images_ : int
        Number of images fitted.
    n_features_in_ : int
        Width of the image, set when ``X`` is a single 2-D array.
    random_state_ : int
        The seed the fit ran from: ``random_state`` itself when it is an int,
        else the one drawn from it (None: from NumPy's global generator; a
        ``RandomState`` instance: one draw, which advances it). Set as
        ``random_state``, it repeats the fit exactly (on the CPU: see
        ``random_state``), e.g. a good fit made with None:
        ``clone(est).set_params(random_state=est.random_state_).fit(X)``. A
        fit that ``warm_start`` goes on with keeps it. New images that
        ``transform`` or ``score`` solve are not fitted: a seed drawn for them
        is not recorded (give an int ``random_state`` to repeat such solves).
    sparse_noise_ : ndarray or list of ndarray
        With ``noise_model``: the fitted sparse noise term, in the layout of
        ``X`` and on the intensity scale of ``reconstruction_`` ([0, 1] for
        uint8 input).

    See Also
    --------
    ExponentialMovingVariance, WindowedMovingVariance : the stopping rules.

    Examples
    --------
    >>> import numpy as np
    >>> from skdip import DIPDenoiser
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(0, 1, 32), (32, 1))
    >>> noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    >>> den = DIPDenoiser(generator="skip-small", max_iter=40, early_stopping=None,
    ...                   random_state=0)
    >>> den.fit_transform(noisy).shape
    (32, 32)

    With ``warm_start=True`` a second ``fit`` goes on where the first ended (bit for
    bit on the CPU; a GPU's kernels round differently from run to run):

    >>> warm = DIPDenoiser(generator="skip-small", max_iter=20, early_stopping=None,
    ...                    random_state=0, warm_start=True).fit(noisy)
    >>> warm.set_params(max_iter=20).fit(noisy).n_iter_
    40
    >>> bool(np.array_equal(warm.reconstruction_, den.reconstruction_))
    True
    """

    # The observation is the image itself (identity forward model): scorers
    # may compare the returned estimate with X directly.
    _observes_the_image = True
    _measurement_is_the_image = True
    _missing_pixels_hint = "DIPInpainter reads NaN and masked values as missing pixels to fill in"

    _parameter_constraints: dict = {
        **BaseDIPEstimator._parameter_constraints,
        # "discrepancy" here only: it compares the estimate with the observation itself.
        "early_stopping": [StrOptions({"emv", "wmv", "discrepancy"}), BaseStoppingRule, None],
        "noise_model": [StrOptions({"sparse"}), SparseNoise, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "averaging_monitor": [StrOptions({"average", "raw"})],
    }

    def __init__(
        self,
        generator="skip",
        early_stopping="emv",
        max_iter: Int = 5000,
        lr: Float = 0.01,
        loss="mse",
        regularizer=None,
        noise_model=None,
        reg_noise_std: Float = 1.0 / 30.0,
        output_averaging: Float | None = 0.99,
        averaging_monitor: str = "raw",
        rescale="auto",
        device="auto",
        random_state=None,
        verbose=False,
        callback=None,
        n_jobs=None,
        batch_size: Int = 1,
        warm_start: bool = False,
    ):
        self.generator = generator
        self.early_stopping = early_stopping
        self.max_iter = max_iter
        self.lr = lr
        self.loss = loss
        self.regularizer = regularizer
        self.noise_model = noise_model
        self.reg_noise_std = reg_noise_std
        self.output_averaging = output_averaging
        self.averaging_monitor = averaging_monitor
        self.rescale = rescale
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.n_jobs = n_jobs
        self.warm_start = warm_start
        self.batch_size = batch_size

    def _variance_rule_cut_hint(self) -> str:
        # At low noise the running variance kept falling for 2500 steps on 4 of 11
        # pictures at sigma 0.05 (benchmarks/results/output_averaging.md), where more
        # steps fit more noise; the discrepancy principle stopped those by step 907.
        if self.noise_model is not None:
            return ""
        return (
            "With white Gaussian noise, early_stopping=DiscrepancyPrinciple() stops once the "
            "fit reaches the noise level instead of waiting for a variance minimum."
        )
