"""The single fitting loop behind every skdip estimator.

It solves ``min_theta loss(f(G_theta(z)), y) + lambda * R(G_theta(z))`` by Adam
for one observation ``y``. What varies between estimators (which networks,
which forward model, how many parameter groups) lives in the *model*: a
``torch.nn.Module`` whose ``forward(rng)`` returns ``(estimate, prediction)``,
the current image estimate and the predicted measurement ``f(estimate)``.
Everything else is here, once: stopping, output averaging, the divergence
guard, progress, callbacks, reference tracking and interruption.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import io
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, overload

import joblib
import numpy as np
import torch
from sklearn.base import clone
from torch import nn

from ._random import BUILD_LOCK
from ._warnings import warn
from .exceptions import FitInterrupted, InterruptionWarning
from .operators import ForwardOperator, Identity
from .stopping import BaseStoppingRule, ExponentialMovingVariance, WindowedMovingVariance

if TYPE_CHECKING:
    from .generators import GeneratorNetwork

__all__ = [
    "DIPModel",
    "FitResult",
    "fit_batch",
    "fit_model",
    "one_interruption",
    "resolve_device",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else the CPU."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fallback = "pass device='auto' (a GPU when there is one, else the CPU) or 'cpu'"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        # torch's own words list its twenty device types, not what skdip takes.
        raise ValueError(
            f"invalid device {device!r}: skdip takes 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' "
            "or a torch.device (names are lower case)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} was requested but CUDA is not available: {fallback}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        # Else torch's "invalid device ordinal" once the first network is built.
        raise ValueError(
            f"device {str(dev)!r} was requested but this machine has "
            f"{torch.cuda.device_count()} GPU(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no data, so nothing can be fitted on it")
    if dev.type not in ("cpu", "cuda"):
        # Other accelerators (mps, xpu, ...) say whether they are there as CUDA does;
        # without a check they failed later with torch's own, less clear errors.
        backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ValueError(
                f"device {str(dev)!r} was requested but {dev.type} is not available here: "
                f"{fallback}"
            )
    return dev


class DIPModel(nn.Module):
    """The plain reparametrisation ``x = G(z + noise)``, prediction ``f(x)``.

    Parameters
    ----------
    network : GeneratorNetwork
        The built generator; its ``input`` buffer is the fixed code ``z``.
    operator : ForwardOperator, optional
        The forward model ``f``; identity when None. Its parameters, if any,
        are frozen (``requires_grad=False``): only the network is fitted.
    input_noise_std : float
        Standard deviation of the Gaussian perturbation added to ``z`` at each
        step (0 disables it).
    """

    def __init__(
        self,
        network: GeneratorNetwork,
        operator: ForwardOperator | None = None,
        input_noise_std: float = 0.0,
    ):
        super().__init__()
        self.network = network
        self.operator = operator if operator is not None else Identity()
        # The forward model is known, not learned: weights it holds as parameters
        # (a FunctionOperator around an nn.Conv2d) were trained with the network.
        for weight in self.operator.parameters():
            weight.requires_grad_(False)
        self.input_noise_std = float(input_noise_std)

    def forward(
        self, rng: torch.Generator | None = None, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(estimate, prediction)``; the input is ``z`` when given."""
        if z is None:
            z = self.perturbed_input(rng)
        x = self.network(z)
        if not torch.is_tensor(x):
            # Here, not after the step: the operator saw a tuple first and named x, and
            # a batched fit indexed it as one (a shape error, a KeyError).
            raise TypeError(_not_a_tensor("the generator", x))
        return x, self.operator(x)

    def _image_values(self, target: torch.Tensor) -> torch.Tensor | None:
        """The values of ``target`` that show the image's grey levels, where the forward
        model keeps them, else None (``ForwardOperator._image_values``): what the
        saturation warning compares the estimate with."""
        read = getattr(self.operator, "_image_values", None)
        return None if read is None else read(target)

    def perturbed_input(self, rng: torch.Generator | None) -> torch.Tensor:
        """The input code plus this step's perturbation (none without ``rng``)."""
        z = self.network.input
        delta = self.input_perturbation(rng)
        return z if delta is None else z + delta

    def input_perturbation(self, rng: torch.Generator | None) -> torch.Tensor | None:
        """This step's perturbation of the code, or None when there is none."""
        if rng is None or self.input_noise_std <= 0:
            return None
        z = self.network.input
        noise = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
        return self.input_noise_std * noise


# Per thread: the flag of the outermost one_interruption block in force, if any.
_INTERRUPTION = threading.local()


@contextlib.contextmanager
def autograd_on():
    """Autograd on and full precision, whatever the caller's mode: a fit called inside
    ``torch.no_grad()`` or ``torch.inference_mode()`` (an evaluation loop) failed with
    torch's "element 0 of tensors does not require grad", and one inside
    ``torch.autocast`` ran in bfloat16 in silence (14.8 dB where 17.5 dB). The
    networks are built inside it too: parameters made under inference mode cannot be
    trained. See :func:`_full_cpu_precision` for the CPU's float32 precision."""
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast("cpu", enabled=False),
        torch.autocast("cuda", enabled=False),
        _full_cpu_precision(),
    ):
        yield


# The oneDNN operations whose float32 precision torch lets the caller lower on the CPU.
_CPU_PRECISION_OPS = ("matmul", "conv")
# That setting is one for the whole process: the first fit to start (of any thread)
# raises it, and the last one to end gives the caller's back.
_PRECISION_LOCK = threading.Lock()
_precision_users = 0
_precision_before: dict = {}
# The key of torch's general float32 matmul precision among them, where torch has no
# per-operation setting.
_GENERAL_MATMUL = "float32_matmul_precision"


@contextlib.contextmanager
def _full_cpu_precision():
    """The CPU's float32 matrix products and convolutions in float32 for the block.

    ``torch.set_float32_matmul_precision("medium")`` (or ``fp32_precision = "bf16"``)
    makes oneDNN compute them in bfloat16 on a CPU that has it (AMX, AVX-512 BF16): a
    fit then ended 1.4 to 1.9 dB lower, in silence (64x64 camera: denoising 27.56 and
    26.27 dB became 25.97 and 24.41 for two seeds, blind deblurring 25.53 became
    24.09), and no faster (44 and 35 s against 38 and 33 s). GPUs are left as set
    (TF32 there is torch's usual trade).

    A torch without the per-operation setting (2.8 and older) lowers oneDNN's products
    under ``"medium"`` of the general setting alone (from 2.3; 2.1 did not): a fit under
    it ended up to 0.02 off the one under ``"highest"`` (torch 2.8, 30 steps on a 32x32
    image, every generator). There the general setting is raised to ``"high"`` for the
    block, which on a GPU allows TF32 as ``"medium"`` does.
    """
    global _precision_users, _precision_before
    settings = [getattr(torch.backends.mkldnn, op, None) for op in _CPU_PRECISION_OPS]
    settings = [s for s in settings if s is not None and hasattr(s, "fp32_precision")]
    with _PRECISION_LOCK:
        if _precision_users == 0:
            _precision_before = {}
            # torch reads an operation's setting as its effective value: one that only
            # follows oneDNN's (or torch's) general setting reads as that. Given back as
            # read, it was pinned there: the caller's later change of the general setting
            # no longer reached it. Such a value is given back as "none" (follow it).
            general = getattr(torch.backends.mkldnn, "fp32_precision", None)
            for setting in settings:
                value = setting.fp32_precision
                if value not in ("ieee", "none"):
                    _precision_before[setting] = "none" if value == general else value
                    setting.fp32_precision = "ieee"
            if not settings and torch.get_float32_matmul_precision() == "medium":
                _precision_before[_GENERAL_MATMUL] = "medium"
                torch.set_float32_matmul_precision("high")
        _precision_users += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _precision_users -= 1
            if _precision_users == 0:
                for setting, value in _precision_before.items():
                    if setting is _GENERAL_MATMUL:
                        torch.set_float32_matmul_precision(value)
                    else:
                        setting.fp32_precision = value
                _precision_before = {}


def _asks_to_stop(answer) -> bool:
    """Whether a callback's return value asks the fit to stop: True (or a one-element
    boolean array or tensor holding it) does; None and False do not. Anything else is
    warned of and ignored: a logging callback that returned the value it logged ended
    its fit after one step, in silence."""
    if answer is None or answer is False:
        return False
    if answer is True or isinstance(answer, np.bool_):
        return bool(answer)
    if isinstance(answer, np.ndarray | torch.Tensor) and answer.dtype in (np.bool_, torch.bool):
        if answer.numel() == 1 if isinstance(answer, torch.Tensor) else answer.size == 1:
            return bool(answer.item())
    # No value in the message: Python's default filter then shows it once, not per step.
    warn(
        f"the callback returned a value of type {type(answer).__name__}, which is ignored: "
        "return True to stop the fit (None or False to go on)",
        UserWarning,
    )
    return False


def _stream_seed(seed: int) -> int:
    """The seed of torch's global generators for a fit's steps: apart from the input
    perturbation's generator, which ``seed`` itself seeds (one stream for both would tie
    a network's dropout masks to the perturbations)."""
    return (int(seed) * 2654435761 + 97) % 2**63


class _SharedGenerator:
    """One of torch's global generators (the CPU's, or one GPU's) as fits share it.

    The first fit to use it saves the caller's state, and the last one to leave gives
    it back, so the caller's stream stays whole however the fits overlap. A fit seeds
    it when no fit of another thread is using it (alone, or nested in its own thread's
    fit, a callback's): its draws are then its own, and a nested fit gives the outer
    one its stream back. In threads that overlap, the later fits draw from whatever
    stream is there (not reproducible). Changed under BUILD_LOCK only, so that no
    seeding or giving back lands in the middle of another thread's seeded build.
    """

    def __init__(self, get_state, set_state, manual_seed) -> None:
        self.get_state, self.set_state, self.manual_seed = get_state, set_state, manual_seed
        self.users: list[int] = []  # the thread of every fit using it now
        self.callers_state = None

    def enter(self, seed: int, saved) -> tuple[bool, object]:
        """``(seeded, outer_state)``: whether this fit seeded (or set ``saved``), and the
        stream to give back when it leaves (a nested fit's outer one)."""
        me = threading.get_ident()
        if any(thread != me for thread in self.users):
            self.users.append(me)
            return False, None
        # Alone, or nested in this thread's own fit: the state to give back after.
        before = self.get_state()
        if saved is not None:
            self.set_state(saved)
        else:
            self.manual_seed(_stream_seed(seed))
        # Registered once seeded: a state that cannot be set leaves nothing behind.
        outer = before if self.users else None
        if not self.users:
            self.callers_state = before
        self.users.append(me)
        return True, outer

    def leave(self, seeded: bool, outer) -> object:
        """This fit's end state where it seeded (None otherwise), after giving back."""
        end = self.get_state() if seeded else None
        self.users.remove(threading.get_ident())
        if outer is not None:
            self.set_state(outer)
        if not self.users:
            self.set_state(self.callers_state)
            self.callers_state = None
        return end


_CPU_GENERATOR = _SharedGenerator(
    torch.random.default_generator.get_state,
    torch.random.default_generator.set_state,
    torch.random.default_generator.manual_seed,
)
_GPU_GENERATORS: dict[int, _SharedGenerator] = {}


def _gpu_generator(index: int) -> _SharedGenerator:
    if index not in _GPU_GENERATORS:
        generator = torch.cuda.default_generators[index]
        _GPU_GENERATORS[index] = _SharedGenerator(
            generator.get_state, generator.set_state, generator.manual_seed
        )
    return _GPU_GENERATORS[index]


@contextlib.contextmanager
def _own_global_stream(device: torch.device, seed: int, saved: tuple | None = None):
    """Run a fit's steps on torch's global generators (the CPU's, and its GPU's) seeded
    for the fit, or set to ``saved`` (a kept fit's), and give the caller's back after.

    Whatever draws from them during the steps (a network's dropout, an operator that
    adds noise) then follows ``random_state``, goes on across ``warm_start`` as one fit
    would, and leaves the caller's stream alone: such fits differed between two runs
    of one seed and moved the caller's ``torch.rand``. See :class:`_SharedGenerator`
    for fits in threads. Yields a list that receives ``(cpu_state, gpu_state)`` as the
    steps end (``cpu_state`` None for a fit that did not seed).
    """
    generators = [_CPU_GENERATOR]
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        with BUILD_LOCK:
            generators.append(_gpu_generator(index))
    kept = [None, None] if saved is None else list(saved)
    entered = []
    with BUILD_LOCK:
        try:
            for generator, state in zip(generators, kept, strict=False):
                entered.append((generator, *generator.enter(seed, state)))
        except BaseException:
            for generator, seeded, outer in reversed(entered):
                generator.leave(seeded, outer)
            raise
    ends: list = []
    try:
        yield ends
    finally:
        with BUILD_LOCK:
            states = [generator.leave(seeded, outer) for generator, seeded, outer in entered]
        ends.append((states[0], states[1] if len(states) > 1 else None))


@contextlib.contextmanager
def one_interruption():
    """Within this block, one Ctrl-C ends every fit: the fit it cuts keeps its
    best estimate, and the fits after it return at once (no step, the
    untrained network's output, ``stopped_by="interrupted"``).

    Without it a caller fitting many images (or settings) one after another
    would need one Ctrl-C per fit. Nested blocks share the outer block's flag.
    Yields a one-item list, ``[True]`` once a fit was interrupted.
    """
    outer = getattr(_INTERRUPTION, "flag", None)
    if outer is not None:
        yield outer
        return
    _INTERRUPTION.flag = flag = [False]
    try:
        yield flag
    finally:
        _INTERRUPTION.flag = None


@contextlib.contextmanager
def shared_interruption(flag: list | None):
    """Within this block (a worker thread), ``flag`` (the caller's
    :func:`one_interruption` flag) is this thread's too: set by the caller on a
    Ctrl-C, it ends the thread's fits at their next step."""
    if flag is None:
        yield
        return
    before = getattr(_INTERRUPTION, "flag", None)
    _INTERRUPTION.flag = flag
    try:
        yield
    finally:
        _INTERRUPTION.flag = before


def current_interruption() -> list | None:
    """This thread's :func:`one_interruption` flag, if inside one."""
    return getattr(_INTERRUPTION, "flag", None)


def _interrupted_before() -> bool:
    flag = getattr(_INTERRUPTION, "flag", None)
    return bool(flag and flag[0])


def _record_interruption() -> None:
    flag = getattr(_INTERRUPTION, "flag", None)
    if flag is not None:
        flag[0] = True


class _StepRecordGuard:
    """Holds a Ctrl-C that arrives between a step and its record until the record
    is complete, so that an interrupted fit's state is that of its recorded steps.

    A fit kept to go on with (``keep_state``) must be the fit of the steps in its
    history; an interruption inside ``optimizer.step()`` or before the step's
    record left parameters, Adam's moments and the average one step ahead. Only
    in the main thread (the only one signals reach), and only over Python's own
    handler: a caller's own SIGINT handler is left alone.
    """

    def __init__(self) -> None:
        self._inside = False
        self._pending = False
        self._previous = None

    def __enter__(self) -> _StepRecordGuard:
        self._inside = True
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._inside = False
        if self._pending:
            self._pending = False
            if kind is None:
                raise KeyboardInterrupt

    def _handle(self, signum, frame) -> None:
        if self._inside:
            self._pending = True
        else:
            signal.default_int_handler(signum, frame)

    def install(self) -> None:
        """Handle SIGINT from now on (where allowed); :meth:`uninstall` gives it back."""
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        # Only over our own handler: one a callback installed during the fit stays.
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None


@dataclass
class FitResult:
    """What one fit produced. Tensors are on the CPU, shaped ``(1, C, H, W)``."""

    estimate: torch.Tensor
    last: torch.Tensor
    best_iter: int
    n_iter: int
    stopped_by: str  # "early_stopping", "max_iter", "callback", "interrupted", "divergence"
    history: dict = field(default_factory=dict)
    model: nn.Module | None = None
    # Where the fit ended, for a later call to go on from (``keep_state=True``).
    state: FitState | None = None


@dataclass
class FitState:
    """Everything :func:`fit_model` needs to go on with a fit where it ended.

    The model and its optimizer (one object graph, so the optimizer still
    steps the model's parameters after a pickle), the perturbation generator's
    state, the stopping rule, output average and history (``selection``), the
    divergence guard's snapshot, and the counters. Taking steps from it gives
    the numbers one longer fit would have given.
    """

    model: nn.Module
    target: torch.Tensor
    optimizer: _Optimizers
    rng_state: torch.Tensor
    selection: _Selection
    snapshot: tuple
    snapshot_loss: float
    min_loss: float
    events: list
    n_steps: int
    elapsed: float
    # torch's global generators as the steps ended (see _own_global_stream); None in
    # fits kept before they were: seeded from the step count then.
    global_rng_state: tuple | None = None

    def copy_on(self, device: torch.device) -> FitState:
        """A copy of this fit to go on with on ``device``: where it is when ``device``
        names the same place (``"cuda"`` is any GPU), else moved there whole, so that a
        fit kept on a GPU goes on on a machine without one, or the reverse.

        A moved fit takes the Adam kernels the engine uses on its new device; its
        perturbations go on from a stream of that device's (see :func:`fit_model`).
        """
        here = self.target.device
        if here.type == device.type and device.index in (None, here.index):
            return copy.deepcopy(self)
        return self._moved_to(device)

    def _moved_to(self, device: torch.device) -> FitState:
        here = self.target.device
        buffer = io.BytesIO()
        try:
            torch.save(self, buffer)
        except Exception as error:  # pickle's errors have no common base
            raise ValueError(
                f"the kept fit cannot move from {here} to {device}: it does not pickle "
                f"({type(error).__name__}: {error}). Go on with it on {here}, or start a "
                "new fit (warm_start=False)"
            ) from error
        buffer.seek(0)
        moved = torch.load(buffer, map_location=device, weights_only=False)
        # The generators' states are CPU byte tensors on every device.
        moved.rng_state = self.rng_state.clone()
        moved.global_rng_state = copy.deepcopy(self.global_rng_state)
        return moved._use_device_kernels()

    def _use_device_kernels(self) -> FitState:
        """Give Adam (and the divergence guard's snapshot of it) the engine's kernels
        for the device the fit is on, after it changed device (a move, or a load
        onto the CPU of a fit kept on a GPU); in place."""
        on_gpu = self.target.device.type == "cuda"
        _suit_adam_states(self.snapshot[1], on_gpu)
        self.optimizer.load_state_dict(_suit_adam_states(self.optimizer.state_dict(), on_gpu))
        return self


def _psnr(
    x: torch.Tensor, reference: torch.Tensor, reference_range: tuple | None = None
) -> torch.Tensor:
    """The PSNR of ``x``, clipped to ``[low, high]``, against ``reference`` on the
    range ``peak``: ``reference_range = (low, high, peak)``, default ``(0, 1, 1)``."""
    low, high, peak = (0.0, 1.0, 1.0) if reference_range is None else reference_range
    mse = (x.clamp(low, high) - reference).square().mean()
    psnr = -10.0 * torch.log10(mse.clamp_min(1e-20))
    # The peak enters as a logarithm: its square could overflow float32.
    return psnr if peak == 1 else psnr + 20.0 * math.log10(peak)


# A loss under this share of the fit's first one (the untrained network's) times the
# ratio is no divergence, however far above the lowest loss: fitting clean or barely
# noisy data, the loss falls to 1e-4 of its start and the input perturbation alone
# moves it 7 to 70 times its lowest, hundreds of times a fit; each such step was taken
# for a divergence, rolled back and halved the rate, and the eleventh ended the fit
# (a smooth 24x24 image, 0.005 noise: 31.3 dB at step 264 against 51.2 dB unguarded).
# On the natural loss curves of 30 fits (inpainting, denoising, 2x super-resolution;
# tiny skip network and deep decoder; lr 0.01 to 3), 0.05 cut those steps from 105-1072
# per healthy fit to at most 2, while every fit that blew up (its loss 3.5 to 8 times
# the first) was still caught at the guard's first test.
_SPIKE_FLOOR = 0.05
# A fit of this many steps or more whose loss never fell below its first value, and whose
# last 50 losses (the last half of a shorter fit) lie at this many times it (median), did
# not learn (_Selection.result). On 30 loss curves (see _SPIKE_FLOOR) it told the 10 fits
# that never learned (1.65 to 4.7 times) from every other; a slow fit of a hard target (a
# tiny network on half noise, 150 steps) stays under its first loss, a near-perfect start
# (a flat target) near it. 20 steps, not 100: at lr=1 or 3 a 20- to 50-step fit ended 3
# to 4 times above its first loss, in silence. On 84 short fits at the default and 10
# times the default rate (24x24 camera, coins, moon; denoising, inpainting, 2x
# super-resolution, deconvolution, blind deblurring; three generators) every default fit's
# loss fell below its first within 10 steps; the two flagged at 10 times the rate fell
# below it after 32 and 37 steps only, their estimate before that as bad as the start.
_NO_PROGRESS_STEPS = 20
_NO_PROGRESS_RISE = 1.5
# From this many steps, a smaller rise: by then every fit that learns has fallen below
# its first loss (by step 65 at the latest, in the 133 of 178 denoising fits that did in
# benchmarks/results/no_progress.md: 32x32 and 64x64, 300 and 600 steps, pictures at
# their range and squeezed, flat ones, two generators, lr 0.01 to 3; by step 76 in the
# other problems' there, but for three wrecks at lr=1 and 3, at 78 to 288, warned of as
# saturated). Of the 45 denoising fits that never did, 35 ended 1.45 to 3.3 times above
# it, at 5 to 20 dB on 20 to 27 dB inputs; the one at 1.45 (skip-small at lr=1 on a
# 64x64 camera crop, 11.3 dB) went unflagged under 1.5. (The other 10 ended 1.09 to 1.22
# times above it, outputs saturated at 0: see _SATURATED_SPAN.) 1.25 still leaves a
# start at its best (1.2) alone.
_NO_PROGRESS_LONG = 100
_NO_PROGRESS_LONG_RISE = 1.25
# An estimate 98% of whose values lie within this of 0 (or of 1) while the data's median
# is not near it: the network's output saturated, as a learning rate far too large does
# to pictures that sit on one side of mid-grey. Its loss had mostly fallen (a flat 0 is
# closer to a dark picture than the untrained network's grey), so the no-progress
# warning was silent: camera on [0, 0.25] at lr=1 with rescale=False came back a flat 0,
# 16.9 dB on a 26.9 dB input, and so did inpainting, super-resolution, deconvolution and
# blind deblurring. In benchmarks/results/no_progress.md (434 fits of those five
# problems), 168 network estimates were flat at a bound (spanning 0.0112 at the most),
# all warned of (140 as saturated, at 10.9 to 20 dB, 118 of those with a loss below its
# first; 28 as never learned); the others spanned 0.0018 at the least (a flat picture
# estimated flat, at 0.5) and none was.
_SATURATED_SPAN = 0.03
# The median, not the mean: a black picture's noise, clipped at 0, lifts its mean (0.08
# at noise 0.2) but not its median; a picture on [0, 0.25] has it at 0.09.
_SATURATED_MEDIAN_GAP = 0.06
# An estimate, not flat, this much of whose values lie within _SATURATED_SPAN of 0 or of
# 1 while under _SATURATED_DATA_PINNED of the data's do (a black-and-white picture's data
# sits there too: under noise, half its pixels at least) and its median is not the
# data's: the output head saturated both ways, a black-and-white pattern. At lr=0.3 to 3
# a network that had learned came back so, e.g. 6.1 dB for 2x super-resolution on a 22.5
# dB input, in silence. In benchmarks/results/no_progress.md, 25 such estimates lay 93.7%
# to 100% there, at 5.3 to 10.9 dB, their data 0% to 12.2% (12 now warned of as
# saturated, 13 as never learned); of the other 241, none more than 76% (a wreck at 11.3
# dB, warned of as never learned) and none within 3 dB of its input (or above) more than
# 16% (dark pictures, their data 6.8% to 19% there); the data never more than 19%.
_SATURATED_PINNED = 0.9
_SATURATED_DATA_PINNED = 0.25


def _shares_at_bounds(values: torch.Tensor) -> tuple[float, float]:
    """The shares of ``values`` (flat) within _SATURATED_SPAN of 0 and of 1 (NaN counts
    as neither): one read."""
    at = torch.stack([values <= _SATURATED_SPAN, values >= 1 - _SATURATED_SPAN])
    at_low, at_high = at.float().mean(dim=1).tolist()
    return at_low, at_high


def _spiked(loss_value: float, min_loss: float, ratio: float, first_loss: float) -> bool:
    """Whether a loss jumped far above the lowest so far (a ratio, so only for a
    positive lowest loss: with a negative one, a ratio says nothing), and above
    ``_SPIKE_FLOOR`` times the fit's first loss (NaN: none yet) times the ratio."""
    if not min_loss > 0:
        return False
    reference = max(min_loss, _SPIKE_FLOOR * first_loss) if first_loss > 0 else min_loss
    return loss_value > ratio * reference


def _snapshot(model: nn.Module, optimizer: _Optimizers) -> tuple[dict, list]:
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return params, copy.deepcopy(optimizer.state_dict())


def _adam_kernels(on_gpu: bool) -> dict:
    """Adam's ``fused``/``foreach`` choice for parameters on a GPU or not."""
    return {"fused": True, "foreach": None} if on_gpu else {"fused": None, "foreach": True}


def _suit_adam_states(states: list[dict], on_gpu: bool) -> list[dict]:
    """Optimizer ``state_dict()``s (of :class:`_Optimizers`) made for parameters
    that moved to a GPU or off one: Adam's kernels for that device, and its step
    counters where those kernels keep them (the CPU, unless fused); in place."""
    for state in states:
        for group in state["param_groups"]:
            if "betas" not in group:
                continue  # plain gradient steps: foreach everywhere, no counters
            group.update(_adam_kernels(on_gpu))
            for index in group["params"]:
                entry = state["state"].get(index, {})
                if "step" in entry and not on_gpu:
                    # (A fused optimizer's load_state_dict puts them on the parameters' device.)
                    entry["step"] = entry["step"].cpu()
    return states


class _Optimizers:
    """Adam for the parameter groups, plain gradient steps for those marked "sgd".

    One object with the optimizer methods the loop uses, so that the
    divergence guard snapshots, restores and slows down every group.
    """

    def __init__(self, param_groups: list[dict], lr: float):
        # Python floats: with a NumPy float32 rate (lr=np.float32(0.01)), Adam worked
        # out its step size in single precision, and the fit differed from one at the
        # same rate as a Python float (the batched fits' optimizer takes floats too).
        lr = float(lr)
        kinds: dict[str, list[dict]] = {"adam": [], "sgd": []}
        for group in param_groups:
            group = dict(group)
            if "lr" in group:
                group["lr"] = float(group["lr"])
            kind = group.pop("optimizer", "adam")
            if kind not in kinds:
                raise ValueError(
                    f"a parameter group's optimizer must be 'adam' or 'sgd', got {kind!r}"
                )
            params = group["params"]
            group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
            kinds[kind].append(group)
        # foreach: the same numbers as the per-tensor loop (tested), in a few
        # multi-tensor operations; PyTorch picks it on GPUs only, and on a CPU it
        # saves up to ~18% of a small network's step. On a GPU, where a step is
        # bound by kernel launches, the fused kernels are ~10% faster (H100:
        # benchmarks/adam_kernels.py) for the same update, up to float rounding.
        adam = kinds["adam"]
        on_gpu = all(p.is_cuda for g in adam for p in g["params"])
        fast = _adam_kernels(on_gpu)
        self.optimizers = [torch.optim.Adam(adam, lr=lr, **fast)] if adam else []
        if kinds["sgd"]:
            self.optimizers.append(torch.optim.SGD(kinds["sgd"], lr=lr, foreach=True))

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)


class _NoProgressBar:
    """Stands in for a progress bar when none is shown (no tqdm needed)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: object) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, description: str, verbose: bool):
    """A tqdm bar when ``verbose``; tqdm is an optional extra, needed only then.

    A missing tqdm is reported before the first step, so it costs no work.
    """
    if not verbose:
        return _NoProgressBar()
    return require_tqdm()(total=total, desc=description, leave=False)


def require_tqdm():
    """tqdm's progress bar class, or a clear ImportError (estimators check it up front)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(
            "verbose=True shows a progress bar, which needs tqdm: pip install "
            "'skdip[progress]' (or pip install tqdm), or leave verbose=False"
        ) from exc
    return tqdm


# A new fit needs its model and target; one that goes on from ``resume`` reads neither
# (the estimators pass None): each form typed as it is called.
@overload
def fit_model(
    model: nn.Module,
    target: torch.Tensor,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_iter: int,
    lr: float = 0.01,
    param_groups: list[dict] | None = None,
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stopping: BaseStoppingRule | None = None,
    averaging: float | None = None,
    averaging_monitor: str = "average",
    callback: Callable | None = None,
    verbose: bool = False,
    reference: torch.Tensor | None = None,
    reference_range: tuple[float, float, float] | None = None,
    seed: int = 0,
    checkpoint_every: int = 50,
    divergence_ratio: float = 10**0.5,
    max_divergences: int = 10,
    monitor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    description: str = "fit",
    resume: None = None,
    keep_state: bool = False,
    expect_progress: bool = True,
) -> FitResult: ...


@overload
def fit_model(
    model: nn.Module | None,
    target: torch.Tensor | None,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_iter: int,
    lr: float = 0.01,
    param_groups: list[dict] | None = None,
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stopping: BaseStoppingRule | None = None,
    averaging: float | None = None,
    averaging_monitor: str = "average",
    callback: Callable | None = None,
    verbose: bool = False,
    reference: torch.Tensor | None = None,
    reference_range: tuple[float, float, float] | None = None,
    seed: int = 0,
    checkpoint_every: int = 50,
    divergence_ratio: float = 10**0.5,
    max_divergences: int = 10,
    monitor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    description: str = "fit",
    resume: FitState,
    keep_state: bool = False,
    expect_progress: bool = True,
) -> FitResult: ...


def fit_model(
    model: nn.Module | None,
    target: torch.Tensor | None,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_iter: int,
    lr: float = 0.01,
    param_groups: list[dict] | None = None,
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stopping: BaseStoppingRule | None = None,
    averaging: float | None = None,
    averaging_monitor: str = "average",
    callback: Callable | None = None,
    verbose: bool = False,
    reference: torch.Tensor | None = None,
    reference_range: tuple[float, float, float] | None = None,
    seed: int = 0,
    checkpoint_every: int = 50,
    divergence_ratio: float = 10**0.5,
    max_divergences: int = 10,
    monitor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    description: str = "fit",
    resume: FitState | None = None,
    keep_state: bool = False,
    expect_progress: bool = True,
) -> FitResult:
    """Fit ``model`` to ``target`` with Adam and return the selected estimate.

    Parameters
    ----------
    model : nn.Module or None
        ``model(rng) -> (estimate, prediction)``, already on the target device.
        Not read with ``resume`` (which holds the model): None there.
    target : Tensor or None
        The observation, on the model's device, shaped like the prediction.
        Not read with ``resume``: None there.
    loss : callable
        ``loss(prediction, target) -> scalar``.
    max_iter : int
        Maximum number of Adam steps.
    lr : float
        Learning rate of every parameter group that does not set its own.
    param_groups : list of dict, optional
        Parameter groups; default: every parameter of ``model`` at ``lr``.
        A group is trained by Adam, or by plain gradient steps when it sets
        ``"optimizer": "sgd"`` (e.g. the sparse noise terms). The divergence
        guard rolls back and slows down both.
    regularizer : callable, optional
        ``regularizer(estimate) -> scalar`` added to the loss.
    stopping : BaseStoppingRule, optional
        Cloned, then fed the monitored estimate each step. None runs
        ``max_iter`` steps and returns the last estimate (an exponential
        moving variance is still recorded in the history, for scoring).
    averaging : float, optional
        Weight ``w`` of the exponential average of outputs
        ``a_t = w a_{t-1} + (1 - w) x_t``. When given, the average is the
        estimate returned; ``averaging_monitor`` says what the stopping rule
        watches.
    averaging_monitor : {"average", "raw"}
        With ``averaging``, what the stopping rule watches: ``"average"`` (the
        default) the average itself, returned at its minimum; ``"raw"`` the raw
        iterates, and the average ``round(1 / (1 - w))`` steps after their
        minimum is returned (:class:`~skdip.DIPDenoiser`'s default). With
        ``"raw"`` and a stopping rule, the average starts afresh at the rule's
        first check (the warm-up's iterates are left out) and its weights are
        normalised over the ``n`` iterates it holds,
        ``a_t = sum_k (1 - w) w^(t-k) x_k / (1 - w^n)`` (the estimate a
        ``callback`` is given restarts there too). Without ``averaging`` it
        changes nothing.
    callback : callable, optional
        ``callback(iteration, loss, estimate)`` after each step, ``estimate``
        a copy the callback may keep; returning True stops the fit (the best
        estimate so far is kept), None or False goes on, anything else is warned
        of and ignored.
    verbose : bool
        Show a progress bar with the loss and the stopping signal.
    reference : Tensor, optional
        Clean image; when given the PSNR of each iterate is recorded (never
        used to fit or to stop).
    reference_range : tuple of float, optional
        ``(low, high, peak)``, in the reference's units: each iterate is
        clipped to ``[low, high]`` and its PSNR read on the range ``peak``.
        Default ``(0, 1, 1)``.
    seed : int
        Seed of the input perturbations.
    checkpoint_every : int
        Steps between snapshots of the parameters for the divergence guard.
    divergence_ratio : float
        A loss above ``divergence_ratio`` times the lowest loss so far (while
        that is positive; from step ``checkpoint_every`` on) and above it times
        0.05 of the fit's first loss, or a non-finite loss at any step, counts
        as divergence: the last snapshot is restored
        and the learning rates are halved. No snapshot is taken at such a loss
        (the first interval's last step, before the test starts, keeps the
        snapshot taken before the first step).
    max_divergences : int
        Rollbacks allowed; the divergence after them (one more) ends the fit
        with the best estimate (it is recorded too).
    monitor : callable, optional
        Maps the estimate to the tensor the stopping rule watches (default:
        the estimate itself), for models whose estimate is not a plain image.
    description : str
        Label of the progress bar.
    resume : FitState, optional
        A fit to go on with (from an earlier result's ``state``) for up to
        ``max_iter`` more steps (none where its stopping rule had fired: the
        result is the fit as it ended, ``stopped_by="early_stopping"``): its
        model, optimizer, stopping rule, average and history are used, and
        ``model``, ``target``, ``param_groups``, ``lr``, ``stopping``,
        ``averaging``, ``averaging_monitor``, ``monitor``, ``reference``,
        ``reference_range`` and ``seed`` are not read.
    keep_state : bool
        Return the fit's :class:`FitState` in the result's ``state``.
    expect_progress : bool
        Warn when, in 20 steps or more, the loss never falls below its first value
        and ends (the median of the last 50, or of the last half) 1.5 times above it
        (1.25 times from 100 steps): a fit that did not learn; and, where the data
        shows the image's levels (the model's ``_image_values`` says: through the
        identity, a pixel mask, a downsampling, a blur by a kernel summing to 1, a
        blind deblurrer's softmax kernel), when the estimate is flat at 0 or 1 far
        from the data's median, or 90% of it within 0.03 of 0 or 1 where under 25%
        of the data is: a saturated output. False for a fit that starts
        from a solution (a pretrained network), whose first loss can be its lowest.
    """
    if resume is None:
        if model is None or target is None:
            # Only a fit that goes on from resume has them already.
            raise TypeError("fit_model needs a model and a target, unless it is given resume")
        device = target.device
        if param_groups is None:
            param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        optimizer = _Optimizers(param_groups, lr)
        rng = torch.Generator(device=device)
        rng.manual_seed(int(seed))
        selection = _Selection(
            stopping, averaging, averaging_monitor, monitor, reference, reference_range
        )
        selection.bind(target, model)
        events: list[dict] = []
        snapshot = _snapshot(model, optimizer)
        snapshot_loss = min_loss = math.inf
        n_steps = 0
        elapsed_before = 0.0
    else:
        model, target, optimizer = resume.model, resume.target, resume.optimizer
        rng = torch.Generator(device=target.device)
        try:
            rng.set_state(resume.rng_state)
        except RuntimeError:
            # Kept on another kind of device (a GPU fit loaded on a CPU): its
            # perturbations go on from a stream of this device's, seeded alike.
            rng.manual_seed(int(resume.n_steps))
        selection, events = resume.selection, list(resume.events)
        snapshot, snapshot_loss = resume.snapshot, resume.snapshot_loss
        min_loss, n_steps, elapsed_before = resume.min_loss, resume.n_steps, resume.elapsed
    stopped_by = "max_iter"
    # A Python int: with a NumPy one of a small type (max_iter=np.int8(70)) the sum
    # wrapped around, and a kept fit went on for no step (NumPy warned of an overflow).
    last_step = n_steps + int(max_iter)
    # (A frozen parameter handed to the optimizer, DeepRandomProjector's in a blind
    # deblurring, gets no gradient, as backward() would give it none.)
    trainable = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    start_time = time.perf_counter()
    bar = _progress_bar(max_iter, description, verbose)
    model.train()
    skipped = _interrupted_before()
    if skipped:
        stopped_by = "interrupted"  # an earlier fit of this call was; this one runs no step
    if selection.rule_stopped:
        # A kept fit its rule had ended, cut by a Ctrl-C at that very step (in the
        # callback, or held until the step was recorded): it is complete, and takes no
        # further step, as one fit would not (a step on could find a new minimum).
        skipped, stopped_by = True, "early_stopping"
    if resume is None:
        stream = _own_global_stream(target.device, seed)
    else:
        saved = resume.global_rng_state
        stream = _own_global_stream(target.device, resume.n_steps, saved)
    streams = contextlib.ExitStack()
    try:
        global_rng = streams.enter_context(stream)  # gives back what it took if it fails
    except BaseException:
        bar.close()
        raise
    # Once nothing can fail before the block that uninstalls it: a failed start left
    # the handler in place, and later fits, finding it there, went without one.
    step_record = _StepRecordGuard()
    step_record.install()
    try:
        # Iterations count accepted steps only; a step rejected by the divergence
        # guard is retried after the rollback, at most max_divergences times.
        while n_steps < last_step and not skipped:
            if _interrupted_before():
                raise KeyboardInterrupt  # set by the caller of a worker thread (n_jobs)
            it = n_steps
            optimizer.zero_grad(set_to_none=True)
            if it == 0:
                x, prediction = _first_forward(model, rng)
                _check_shapes(x, prediction, target, reference, model)
            else:
                x, prediction = model(rng)
            data = loss(prediction, target)
            penalty = None if regularizer is None else regularizer(x)
            if it == 0:
                _check_scalar(data, "the loss")
                if penalty is not None:
                    _check_scalar(penalty, "the regularizer")
            data, penalty = _as_scalar(data), _as_scalar(penalty)
            total = data if penalty is None else data + penalty
            if it == 0:
                _check_differentiable(x, prediction, total, penalty)
                _check_terms_steer(x, prediction, data, penalty)
            # The gradients of the fitted parameters only: backward() also filled the
            # .grad of a caller's loss or regularizer module (a perceptual network),
            # summed over every step.
            gradients = torch.autograd.grad(total, trainable, allow_unused=True)
            for parameter, gradient in zip(trainable, gradients, strict=True):
                parameter.grad = gradient
            # The one required sync per step (the data term rides along with a penalty).
            if regularizer is None:
                loss_value, data_value = float(total.detach()), None
            else:
                loss_value, data_value = torch.stack([total.detach(), data.detach()]).tolist()
            if it == 0 and math.isfinite(loss_value) and loss_value > 0:
                _warn_if_no_gradient(gradients)
            # The ratio test waits for the first checkpoint interval: the first
            # Adam steps of some networks overshoot briefly before settling.
            first_loss = selection.losses[0] if selection.losses else math.nan
            spiked = it >= checkpoint_every and _spiked(
                loss_value, min_loss, divergence_ratio, first_loss
            )
            if not math.isfinite(loss_value) or spiked:
                current = _lrs(optimizer)
                model.load_state_dict(snapshot[0])
                # A copy: load_state_dict adopts the given tensors, and later Adam steps
                # would then rewrite the snapshot a second rollback returns to.
                optimizer.load_state_dict(copy.deepcopy(snapshot[1]))
                # Measure later steps against the restored point, or a rollback
                # to a snapshot older than the lowest loss would loop forever.
                min_loss = snapshot_loss
                # Halve the rate in force, not the snapshot's: a second divergence
                # before the next snapshot must step down again.
                for group, rate in zip(optimizer.param_groups, current, strict=True):
                    group["lr"] = 0.5 * rate
                events.append({"iteration": it, "loss": loss_value, "lr": _lrs(optimizer)})
                if len(events) > max_divergences:
                    stopped_by = "divergence"
                    _warn_diverged(events, it, _label(description))
                    break
                continue
            # A Ctrl-C in here waits for the step's record (see _StepRecordGuard).
            with step_record:
                # The snapshot taken before the first step stands until the first
                # full interval, so even a bad first step can be undone. It holds the
                # parameters the accepted loss was measured at, before this step: the
                # step's own result is unchecked (a NaN gradient under a finite loss),
                # and after a rollback the restored point must measure as recorded.
                # Nor from a loss the ratio test rejects: the first interval's last step,
                # before the test starts, can have one. A learning rate far too large
                # blew the network up within it, the snapshot held the wreck, and the
                # rollback kept it (lr=3: 12.7 dB against 28.2 at 0.01, no warning).
                first_wreck = _spiked(loss_value, min_loss, divergence_ratio, first_loss)
                if (it + 1) % checkpoint_every == 0 and not first_wreck:
                    snapshot = _snapshot(model, optimizer)
                    snapshot_loss = loss_value
                optimizer.step()
                n_steps += 1
                min_loss = min(min_loss, loss_value)

                scalars = selection.track(x.detach(), it)
                values = torch.stack(scalars).tolist() if scalars else []
                stop = selection.observe(values, loss_value, it, data_value)
            if verbose:
                bar.update(1)
                if it % 25 == 0:
                    bar.set_postfix(loss=f"{loss_value:.3e}", signal=f"{selection.signals[-1]:.3e}")
            # A copy: with output averaging the estimate is updated in place next step.
            if callback is not None and _asks_to_stop(
                callback(it, loss_value, selection.estimate.clone())
            ):
                stopped_by = "callback"
                break
            if stop:
                stopped_by = "early_stopping"
                break
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, FitInterrupted):
            raise  # an error of the caller's code (scoring a cut fit), not a Ctrl-C
        # At the step its rule fired (a Ctrl-C in the callback, or held until the step
        # was recorded), the fit is complete: it keeps its reason, as a batched member
        # ending in that step does (it read "interrupted", and the scorers refused it).
        stopped_by = "early_stopping" if selection.rule_stopped else "interrupted"
        _record_interruption()
        _warn_interrupted(n_steps)
    finally:
        streams.close()  # the caller's generators back
        step_record.uninstall()
        bar.close()
    elapsed = elapsed_before + time.perf_counter() - start_time
    result = selection.result(
        model, n_steps, stopped_by, events, elapsed, expect_progress, label=_label(description)
    )
    if keep_state:
        # The last step's gradients are never read again (each step clears them) but
        # would stay held with the kept fit, as large as the network (8.5 MiB per
        # image for the skip network at 256x256), on the GPU between fits.
        optimizer.zero_grad(set_to_none=True)
        result.state = FitState(
            model=model,
            target=target,
            optimizer=optimizer,
            rng_state=rng.get_state(),
            selection=selection,
            snapshot=snapshot,
            snapshot_loss=snapshot_loss,
            min_loss=min_loss,
            events=events,
            # Where the guard could not hold a Ctrl-C (another thread, a caller's
            # SIGINT handler), it can fall between a step and its record: go on from
            # the recorded steps, so that the history stays one entry per step.
            n_steps=len(selection.losses),
            elapsed=elapsed,
            global_rng_state=global_rng[0] if global_rng[0][0] is not None else None,
        )
    return result


def fit_batch(
    models: list[DIPModel],
    targets: list[torch.Tensor],
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_iter: int,
    lr: float = 0.01,
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stopping: BaseStoppingRule | None = None,
    averaging: float | None = None,
    averaging_monitor: str = "average",
    callback: Callable | None = None,
    verbose: bool = False,
    references: list[torch.Tensor | None] | None = None,
    reference_ranges: list[tuple[float, float, float] | None] | None = None,
    seeds: list[int] | None = None,
    checkpoint_every: int = 50,
    divergence_ratio: float = 10**0.5,
    max_divergences: int = 10,
    description: str = "fit",
    settings: list[dict] | None = None,
) -> list[FitResult]:
    """Fit several independent models of one architecture in one vectorised run.

    Each member is the fit :func:`fit_model` would make of ``models[k]`` to
    ``targets[k]`` on its own (same input perturbations, Adam updates,
    divergence guard, stopping rule and selected estimate), up to
    floating-point rounding. The members' parameters are stacked and every
    step runs one batched forward and backward pass (``torch.func.vmap``),
    which saves the per-operation launch cost on a GPU for small images. A
    member whose fit has ended leaves the batch, so the others go on at the
    cost of the remaining ones only.

    Parameters
    ----------
    models : list of DIPModel
        Models with identical parameter and buffer shapes (the same generator
        and image size), on one device. Buffers such as the input code or an
        operator's mask may differ. Their parameters hold the final values
        when the call returns.
    targets : list of Tensor
        One observation per model.
    callback : callable, optional
        Called as in :func:`fit_model`, once per member and step; returning
        True ends that member's fit. A ``KeyboardInterrupt`` (Ctrl-C) raised
        in one member's callback ends every member's fit, once each member
        has had its callback for that step.
    references : list of Tensor or None, optional
        Clean images, to record PSNR curves as :func:`fit_model` does.
    reference_ranges : list of tuple or None, optional
        Each member's ``reference_range`` (see :func:`fit_model`).
    seeds : list of int, optional
        Seed of each member's input perturbations.
    settings : list of dict, optional
        One dict per member overriding, for that member only, any of
        ``loss``, ``max_iter``, ``lr``, ``regularizer``, ``stopping``,
        ``averaging``, ``averaging_monitor``, ``callback`` and ``description``
        (what the member's warnings name; the progress bar shows the shared
        one): several settings of one architecture run in one batch.

    The other parameters are those of :func:`fit_model`, applied to every
    member. Adam runs with PyTorch's default settings, as in :func:`fit_model`.

    Returns
    -------
    results : list of FitResult
        One per model, in order.
    """
    n = len(models)
    if n == 0:
        raise ValueError("fit_batch needs at least one model")
    if len(targets) != n:
        raise ValueError(f"{n} models but {len(targets)} targets")
    references = list(references) if references is not None else [None] * n
    seeds = list(seeds) if seeds is not None else [0] * n
    ranges = list(reference_ranges) if reference_ranges is not None else [None] * n
    if len(references) != n or len(seeds) != n or len(ranges) != n:
        raise ValueError("references, reference_ranges and seeds must hold one entry per model")
    shared = dict(
        loss=loss,
        max_iter=max_iter,
        lr=lr,
        regularizer=regularizer,
        stopping=stopping,
        averaging=averaging,
        averaging_monitor=averaging_monitor,
        callback=callback,
        description=description,
    )
    settings = list(settings) if settings is not None else [{}] * n
    if len(settings) != n:
        raise ValueError(f"settings must hold one dict per model ({n}), got {len(settings)}")
    for own in settings:
        unknown = set(own) - set(shared)
        if unknown:
            raise ValueError(
                f"unknown per-member settings {sorted(unknown)}; known: {sorted(shared)}"
            )
    cfg = [{**shared, **own} for own in settings]
    for k, c in enumerate(cfg):
        # Every member takes a step before its budget is checked.
        if int(c["max_iter"]) < 1:
            raise ValueError(f"member {k}: max_iter must be >= 1, got {c['max_iter']!r}")
    _check_stackable(models)
    device = targets[0].device
    rngs = []
    for seed in seeds:
        rng = torch.Generator(device=device)
        rng.manual_seed(int(seed))
        rngs.append(rng)
    selections = [
        _Selection(c["stopping"], c["averaging"], c["averaging_monitor"], None, ref, span)
        for c, ref, span in zip(cfg, references, ranges, strict=True)
    ]
    for selection, target, model in zip(selections, targets, models, strict=True):
        selection.bind(target, model)

    for model in models:
        model.train()  # before the template below copies member 0's mode
    first = models[0]
    trainable = [name for name, p in first.named_parameters() if p.requires_grad]
    fixed = [name for name, p in first.named_parameters() if not p.requires_grad]
    fixed += [name for name, _ in first.named_buffers()]

    def stacked(names, source):
        # In the standard layout, strides of size-1 dimensions too (.contiguous() keeps
        # those): stacked channels_last weights made vmap's backward through a 1x1
        # convolution give weight gradients 8.4 off (a torch bug), silently.
        return {
            name: torch.stack([source(m)[name].detach() for m in models]).clone(
                memory_format=torch.contiguous_format
            )
            for name in names
        }

    params = {k: v.requires_grad_() for k, v in stacked(trainable, _tensors).items()}
    constants = stacked(fixed, _tensors)
    adam = _StackedAdam(params, [c["lr"] for c in cfg])
    snapshot = adam.state_copy(constants)
    # Run the members through a parameter-less copy: any tensor the stacked
    # dictionaries do not provide fails loudly instead of leaking member 0's.
    template = copy.deepcopy(first).to("meta")

    # The code is read from the stacked state, not from the members: a generator
    # that fits its code (a trainable ``input``) updates it there, row by row.
    fitted_code = "network.input" in params

    def member_forward(p, c, delta):
        code = (p if fitted_code else c)["network.input"]
        return torch.func.functional_call(
            template, (p, c), (None,), {"z": code + delta}, strict=True
        )

    batched_forward = torch.func.vmap(member_forward)
    # Members share the code's shape, dtype and device (checked above): one zero
    # perturbation serves every member without input noise, at every step.
    no_perturbation = torch.zeros_like(first.network.input).detach()

    active = list(range(n))  # member behind each row of the stacked tensors
    n_steps = [0] * n
    min_loss = [math.inf] * n
    snapshot_loss = [math.inf] * n
    events: list[list[dict]] = [[] for _ in range(n)]
    stopped_by = ["max_iter"] * n
    results: list[FitResult | None] = [None] * n
    start_time = time.perf_counter()
    longest = max(c["max_iter"] for c in cfg)
    bar = _progress_bar(longest, description, verbose)

    def finish(rows: list[int]) -> None:
        elapsed = time.perf_counter() - start_time
        for row in rows:
            m = active[row]
            _unstack_into(models[m], params, constants, row)
            results[m] = selections[m].result(
                models[m],
                n_steps[m],
                stopped_by[m],
                events[m],
                elapsed,
                label=_label(cfg[m]["description"]),
            )
        keep = [row for row in range(len(active)) if row not in rows]
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device, dtype=torch.long)
            for name in list(params):
                params[name] = params[name].detach()[index].requires_grad_()
            for name in list(constants):
                constants[name] = constants[name][index]
            adam.keep(params, index)
            snapshot.keep(index)
            active[:] = [active[row] for row in keep]

    if _interrupted_before():  # an earlier fit of this call was: no member runs a step
        stopped_by[:] = ["interrupted"] * n
        finish(list(range(len(active))))
    step_record = _StepRecordGuard()
    step_record.install()
    try:
        while active:
            if _interrupted_before():
                raise KeyboardInterrupt  # set by the caller of a worker thread (n_jobs)
            deltas = []
            for m in active:
                delta = models[m].input_perturbation(rngs[m])
                deltas.append(no_perturbation if delta is None else delta)
            try:
                x, prediction = batched_forward(params, constants, torch.stack(deltas))
            except RuntimeError as error:
                # Not every vmap failure names vmap (a round trip through NumPy: "Cannot
                # access data pointer of Tensor that doesn't have storage"); on the first
                # forward pass, any failure is likely one.
                first_pass = all(n_steps[m] == 0 and not events[m] for m in active)
                if "vmap" not in str(error) and not first_pass:
                    raise
                hint = _dtype_hint(error)
                if hint is not None:
                    raise hint from error
                raise RuntimeError(
                    "batch_size > 1 fits the images together under torch.func.vmap, and the "
                    "generator or forward operator failed under it (dropout, .item(), NumPy "
                    "or a branch on the data are common causes); if it runs with "
                    f"batch_size=1, which fits the images one by one, use that. torch said: {error}"
                ) from error
            if any(n_steps[m] == 0 and not events[m] for m in active):
                # Before the rows are read: vmap hands back a network's tuple or dict
                # as it is, and its rows were taken for members' images.
                _check_tensors(x, prediction)
            member_losses, member_data = [], []
            for row, m in enumerate(active):
                first = n_steps[m] == 0 and not events[m]
                if first:
                    _check_shapes(x[row], prediction[row], targets[m], references[m], models[m])
                data = cfg[m]["loss"](prediction[row], targets[m])
                penalty = None
                if cfg[m]["regularizer"] is not None:
                    penalty = cfg[m]["regularizer"](x[row])
                if first:
                    _check_scalar(data, "the loss")
                    if penalty is not None:
                        _check_scalar(penalty, "the regularizer")
                data, penalty = _as_scalar(data), _as_scalar(penalty)
                member_data.append(data)
                member_losses.append(data if penalty is None else data + penalty)
                if first:
                    _check_differentiable(x[row], prediction[row], member_losses[-1], penalty)
                    _check_terms_steer(x[row], prediction[row], data, penalty)
            totals = torch.stack(member_losses)
            grads = torch.autograd.grad(totals.sum(), list(params.values()))
            # The one required sync per step (with a penalty, the data terms ride along).
            if any(cfg[m]["regularizer"] is not None for m in active):
                loss_values, data_values = torch.stack(
                    [totals.detach(), torch.stack(member_data).detach()]
                ).tolist()
            else:
                loss_values = data_values = totals.detach().tolist()
            for row, m in enumerate(active):
                value = loss_values[row]
                if n_steps[m] == 0 and not events[m] and math.isfinite(value) and value > 0:
                    _warn_if_no_gradient([g[row] for g in grads])

            # A Ctrl-C in here waits for the step's record (see _StepRecordGuard).
            with step_record:
                rejected = []
                for row, m in enumerate(active):
                    value = loss_values[row]
                    losses = selections[m].losses
                    first_loss = losses[0] if losses else math.nan
                    spiked = n_steps[m] >= checkpoint_every and _spiked(
                        value, min_loss[m], divergence_ratio, first_loss
                    )
                    if not math.isfinite(value) or spiked:
                        rejected.append(row)
                    elif (n_steps[m] + 1) % checkpoint_every == 0 and not _spiked(
                        value, min_loss[m], divergence_ratio, first_loss
                    ):
                        # Before the step, as in fit_model (and not from a spiked loss).
                        snapshot.update(adam, params, constants, row)
                        snapshot_loss[m] = value
                adam.step(params, grads)
                ended = []
                for row in rejected:
                    m = active[row]
                    # Buffers too: the rejected step's forward moved BatchNorm's statistics.
                    adam.restore(params, constants, snapshot, row)
                    min_loss[m] = snapshot_loss[m]
                    adam.lr[row] *= 0.5
                    events[m].append(
                        {"iteration": n_steps[m], "loss": loss_values[row], "lr": [adam.lr[row]]}
                    )
                    if len(events[m]) > max_divergences:
                        stopped_by[m] = "divergence"
                        _warn_diverged(events[m], n_steps[m], _label(cfg[m]["description"]))
                        ended.append(row)

                accepted = [row for row in range(len(active)) if row not in rejected]
                scalars, counts = [], []
                for row in accepted:
                    m = active[row]
                    it = n_steps[m]
                    n_steps[m] += 1
                    min_loss[m] = min(min_loss[m], loss_values[row])
                    member = selections[m].track(x[row].detach(), it)
                    scalars += member
                    counts.append(len(member))
                values = torch.stack(scalars).tolist() if scalars else []
                stops = []
                for row, count in zip(accepted, counts, strict=True):
                    m = active[row]
                    it = n_steps[m] - 1
                    data_value = data_values[row] if cfg[m]["regularizer"] is not None else None
                    stops.append(
                        selections[m].observe(values[:count], loss_values[row], it, data_value)
                    )
                    values = values[count:]
            # The callbacks run outside the loss computation: a caller's slow callback
            # stays interruptible (a Ctrl-C in one is raised after the step's others).
            interrupt = None
            for row, stop in zip(accepted, stops, strict=True):
                m = active[row]
                it = n_steps[m] - 1
                hook = cfg[m]["callback"]
                estimate = selections[m].estimate
                try:
                    asked = hook is not None and _asks_to_stop(
                        hook(it, loss_values[row], estimate.clone())
                    )
                except KeyboardInterrupt as error:
                    # Held until every member has had this step's callback: each one
                    # then sees every step its history records, as on its own (the
                    # members after the interrupted one missed their last step).
                    if interrupt is None:
                        interrupt = error
                    continue
                except Exception as error:
                    if interrupt is None:
                        raise
                    # The Ctrl-C came first and ends the fit, keeping its results: a later
                    # callback's error must not replace it (the fits were lost).
                    warn(
                        f"after a Ctrl-C, the callback of batch member {m} raised {error!r}; "
                        "the Ctrl-C ends the fit",
                        InterruptionWarning,
                    )
                    continue
                if asked:
                    stopped_by[m] = "callback"
                    ended.append(row)
                elif stop:
                    stopped_by[m] = "early_stopping"
                    ended.append(row)
                elif n_steps[m] >= cfg[m]["max_iter"]:
                    ended.append(row)
            if interrupt is not None:
                raise interrupt
            if verbose:
                bar.update(1)
                bar.set_postfix(active=len(active) - len(ended))
            if ended:
                finish(sorted(set(ended)))
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, FitInterrupted):
            raise
        for row in range(len(active)):
            # A member that ended in this very step keeps its reason.
            if stopped_by[active[row]] == "max_iter":
                stopped_by[active[row]] = "interrupted"
        _record_interruption()
        _warn_interrupted(max(n_steps))
        finish(list(range(len(active))))
    finally:
        step_record.uninstall()
        bar.close()
    return results


class _StackedAdam:
    """Adam over parameters stacked along a leading member axis.

    Each member (row) has its own step count and learning rate, so rows can
    be rolled back and slowed down independently. Same update as
    ``torch.optim.Adam`` with its defaults (betas 0.9 and 0.999, eps 1e-8).
    """

    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def __init__(self, params: dict, lrs: list[float]):
        self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        self.steps = [0] * len(lrs)
        self.lr = [float(rate) for rate in lrs]
        self.params = params

    def step(self, params: dict, grads) -> None:
        self.steps = [s + 1 for s in self.steps]
        t = torch.tensor(self.steps, dtype=torch.float64)
        rate = torch.tensor(self.lr, dtype=torch.float64)
        step_size = rate / (1 - self.beta1**t)
        correction = (1 - self.beta2**t).sqrt()
        # One host-to-device copy per step, not one per parameter tensor.
        factors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            for (name, p), g in zip(params.items(), grads, strict=True):
                key = (p.device, p.dtype)
                if key not in factors:
                    both = torch.stack([step_size, correction]).to(p.device, p.dtype)
                    factors[key] = (both[0], both[1])
                view = (-1,) + (1,) * (p.dim() - 1)
                size = factors[key][0].view(view)
                corr = factors[key][1].view(view)
                m, v = self.exp_avg[name], self.exp_avg_sq[name]
                m.lerp_(g, 1 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
                p.sub_(size * m / (v.sqrt() / corr + self.eps))
        self.params = params

    def keep(self, params: dict, index: torch.Tensor) -> None:
        rows = index.tolist()
        self.exp_avg = {k: v[index] for k, v in self.exp_avg.items()}
        self.exp_avg_sq = {k: v[index] for k, v in self.exp_avg_sq.items()}
        self.steps = [self.steps[r] for r in rows]
        self.lr = [self.lr[r] for r in rows]
        self.params = params

    def state_copy(self, buffers: dict) -> _RowSnapshot:
        return _RowSnapshot(self, buffers)

    def restore(self, params: dict, buffers: dict, snapshot: _RowSnapshot, row: int) -> None:
        with torch.no_grad():
            for name, p in params.items():
                p[row] = snapshot.params[name][row]
                self.exp_avg[name][row] = snapshot.exp_avg[name][row]
                self.exp_avg_sq[name][row] = snapshot.exp_avg_sq[name][row]
            for name, b in buffers.items():
                b[row] = snapshot.buffers[name][row]
        self.steps[row] = snapshot.steps[row]


class _RowSnapshot:
    """Rows of parameters, Adam state and buffers (BatchNorm statistics) saved
    for the divergence guard, as ``fit_model``'s snapshot of the whole state."""

    def __init__(self, adam: _StackedAdam, buffers: dict):
        self.params = {k: v.detach().clone() for k, v in adam.params.items()}
        self.exp_avg = {k: v.clone() for k, v in adam.exp_avg.items()}
        self.exp_avg_sq = {k: v.clone() for k, v in adam.exp_avg_sq.items()}
        self.buffers = {k: v.clone() for k, v in buffers.items()}
        self.steps = list(adam.steps)

    def update(self, adam: _StackedAdam, params: dict, buffers: dict, row: int) -> None:
        with torch.no_grad():
            for name, p in params.items():
                self.params[name][row] = p[row]
                self.exp_avg[name][row] = adam.exp_avg[name][row]
                self.exp_avg_sq[name][row] = adam.exp_avg_sq[name][row]
            for name, b in buffers.items():
                self.buffers[name][row] = b[row]
        self.steps[row] = adam.steps[row]

    def keep(self, index: torch.Tensor) -> None:
        self.params = {k: v[index] for k, v in self.params.items()}
        self.exp_avg = {k: v[index] for k, v in self.exp_avg.items()}
        self.exp_avg_sq = {k: v[index] for k, v in self.exp_avg_sq.items()}
        self.buffers = {k: v[index] for k, v in self.buffers.items()}
        self.steps = [self.steps[r] for r in index.tolist()]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _unstack_into(model: nn.Module, params: dict, constants: dict, row: int) -> None:
    """Write one row of the stacked state back into its member's module."""
    with torch.no_grad():
        own = _tensors(model)
        for source in (params, constants):
            for name, value in source.items():
                own[name].copy_(value[row])


def _check_stackable(models: list[nn.Module]) -> None:
    """Members of a batched fit must share every shape and every non-buffer tensor."""
    first = models[0]
    # Tied weights (one parameter in two layers) enter the stacked state under one name,
    # which the template's other layer then misses (torch: "Missing key(s)").
    named = [name for name, _ in first.named_parameters(remove_duplicate=False)]
    if len(named) != len(dict(first.named_parameters())):
        raise ValueError(
            "the network shares (ties) a parameter between layers, which a batched fit "
            "cannot stack: use batch_size=1"
        )
    if not any(p.requires_grad for p in first.parameters()):
        raise ValueError(
            f"nothing can be fitted: {_NO_TRAINABLE_PARAMETER} (every parameter frozen)"
        )
    if any("_orig_mod" in m._modules for m in first.modules()):
        # torch.compile's wrapper renames every tensor (a bare KeyError came from deep
        # in the batched step), and vmap would run the layers uncompiled anyway.
        raise ValueError(
            "the network or the forward operator is compiled (torch.compile), which a "
            "batched fit cannot stack: use batch_size=1, or pass it uncompiled"
        )
    layout = {k: (v.shape, v.dtype, v.device) for k, v in _tensors(first).items()}
    for k, model in enumerate(models[1:], start=1):
        if not isinstance(model, DIPModel) or type(model) is not type(first):
            raise ValueError(
                "fit_batch needs DIPModel members of one type, got "
                f"{type(first).__name__} and {type(model).__name__}"
            )
        other = {key: (v.shape, v.dtype, v.device) for key, v in _tensors(model).items()}
        if other != layout:
            raise ValueError(
                f"member {k} differs in its parameters or buffers from member 0 (another "
                "generator, image size or device): such images cannot be fitted in one batch"
            )
        for a, b in zip(first.modules(), model.modules(), strict=True):
            if type(a) is not type(b):
                raise ValueError(f"member {k} has another architecture than member 0")
            registered = set(a._parameters) | set(a._buffers)
            for name, value in vars(a).items():
                if name in registered or not isinstance(value, torch.Tensor):
                    continue
                theirs = getattr(b, name, None)
                if not isinstance(theirs, torch.Tensor) or not torch.equal(value, theirs):
                    raise ValueError(
                        f"member {k} differs from member 0 in the tensor attribute {name!r} "
                        f"of {type(a).__name__}, which a batched fit cannot stack"
                    )
        # Settings that are neither tensors nor module types (a LeakyReLU's slope, a
        # padding mode) show in extra_repr; the networks run as member 0's template.
        for a, b in zip(first.network.modules(), model.network.modules(), strict=True):
            if a.extra_repr() != b.extra_repr():
                raise ValueError(
                    f"member {k}'s network differs from member 0's in a {type(a).__name__} "
                    f"({b.extra_repr()} instead of {a.extra_repr()}): such networks cannot "
                    "be fitted in one batch"
                )
        # The operators run as member 0's too; their settings are plain attributes
        # (a FunctionOperator's function, a Downsample's padding), not tensors.
        for a, b in zip(first.operator.modules(), model.operator.modules(), strict=True):
            mine, theirs = _plain_settings(a), _plain_settings(b)
            if mine.keys() != theirs.keys() or not all(
                _same_setting(value, theirs[name]) for name, value in mine.items()
            ):
                changed = sorted(
                    name
                    for name in mine.keys() | theirs.keys()
                    if not _same_setting(mine.get(name), theirs.get(name))
                )
                raise ValueError(
                    f"member {k}'s {type(b).__name__} differs from member 0's in "
                    f"{', '.join(changed)}: such operators cannot be fitted in one batch"
                )
    if not isinstance(first, DIPModel):
        raise ValueError(f"fit_batch needs DIPModel members, got {type(first).__name__}")


# What every nn.Module holds (its registries, hooks and flags), not a setting.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def _plain_settings(module: nn.Module) -> dict:
    """A module's own attributes that are neither tensors, modules nor torch internals
    (private ones too: an operator of one's own that kept its shift in ``_shift`` ran
    as member 0's for every member, silently)."""
    return {
        name: value
        for name, value in vars(module).items()
        if name not in _MODULE_INTERNALS and not isinstance(value, torch.Tensor | nn.Module)
    }


def _same_setting(a, b, depth: int = 0) -> bool:
    """Whether two settings are alike by content: each member holds its own deep copy
    of the operator, so a partial or a callable object equals only itself by ``==``
    (a FunctionOperator around partial(f, k) could not be batched)."""
    if a is b:
        return True
    if type(a) is not type(b) or depth > 10:
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, functools.partial):
        return (
            _same_setting(a.func, b.func, depth + 1)
            and _same_setting(a.args, b.args, depth + 1)
            and _same_setting(a.keywords, b.keywords, depth + 1)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(
            _same_setting(x, y, depth + 1) for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_setting(a[k], b[k], depth + 1) for k in a)
    try:
        if bool(a == b):
            return True
    except (TypeError, ValueError, RuntimeError):
        pass
    if callable(a) and hasattr(a, "__dict__") and not inspect.isroutine(a):
        return _same_setting(vars(a), vars(b), depth + 1)  # a callable object's state
    if inspect.isroutine(a):
        return False  # functions by identity
    # Other objects by content (a random generator an operator keeps, deep-copied
    # for each member): pickled alike.
    try:
        return joblib.hash(a) == joblib.hash(b)
    except Exception:
        return False


def averaging_delay(averaging: float) -> int:
    """Steps after the raw variance minimum at which the average is returned.

    Watching the raw iterates, the average is captured once it has had about
    ``1 / (1 - w)`` steps to absorb the iterates around the minimum.
    """
    return round(1.0 / (1.0 - averaging))


def _unchanged(t: torch.Tensor) -> torch.Tensor:
    return t


class _Selection:
    """What one fit keeps track of: the averaged output, the stopping rule, the
    estimate it selects and the per-step history.

    Shared by :func:`fit_model` and :func:`fit_batch` so that a member of a
    batched run selects its estimate exactly as a fit on its own does.
    """

    # (low, high, peak) of the recorded PSNR (see fit_model), None for (0, 1, 1); also
    # for fits kept (warm_start) and pickled before it was set per fit.
    reference_range = None
    # How many iterates the output average holds since it restarted at the stopping
    # rule's first check (see _average); 0 while it is the plain exponential average,
    # also for fits kept (warm_start) and pickled before the restart existed.
    averaged = 0
    # Whether the stopping rule asked to stop (also at a step whose callback did, which
    # then names the callback): warm_start goes on with callback-ended fits, not those.
    # A class default for fits kept (warm_start) and pickled before it was recorded.
    rule_stopped = False

    def __init__(
        self, stopping, averaging, averaging_monitor, monitor, reference, reference_range=None
    ):
        if averaging_monitor not in ("average", "raw"):
            raise ValueError(
                f"averaging_monitor must be 'average' or 'raw', got {averaging_monitor!r}"
            )
        # Without a stopping rule an EMV still watches, passively, so that the
        # running variance of the returned (last) iterate is recorded for scoring.
        self.passive = stopping is None
        self.rule = clone(stopping) if stopping is not None else ExponentialMovingVariance(warmup=0)
        self.rule.start()
        # A module-level function, not a lambda: a kept fit state must pickle.
        self.monitor = monitor if monitor is not None else _unchanged
        self.reference = reference
        self.reference_range = reference_range
        self.averaging = averaging
        self.watch_raw = averaging is not None and averaging_monitor == "raw"
        self.delay = averaging_delay(averaging) if self.watch_raw else 0
        self.capture_at = None
        self.first_checked = self.detected = None
        self.average = self.best = self.last = self.estimate = None
        self.best_iter = -1
        self.has_signal = False
        self.losses: list[float] = []
        self.data_losses: list[float] = []
        self.signals: list[float] = []
        self.psnrs: list[float] = []
        self.psnrs_raw: list[float] = []

    def track(self, raw: torch.Tensor, it: int) -> list[torch.Tensor]:
        """Take the iterate of accepted step ``it``; return the scalars to read."""
        if self.watch_raw:
            # The rule watches the raw iterates: ask it first, so that the average can
            # start afresh at its first check (see _average).
            sig = self._signal(raw, it)
            self._average(raw, restart=sig is not None and self.first_checked is None)
        else:
            self._average(raw, restart=False)
            sig = self._signal(self.estimate, it)
        self.last = self.estimate
        scalars = []
        self.has_signal = sig is not None
        if sig is not None:
            if self.first_checked is None:
                self.first_checked = it
            scalars.append(_signal_tensor(sig, self.rule, raw))
        if self.reference is not None:
            span = self.reference_range
            scalars.append(_psnr(self.estimate, self.reference, span).float())
            if self.averaging is not None:
                scalars.append(_psnr(raw, self.reference, span).float())
        return scalars

    def _warn_if_saturated(self, estimate: torch.Tensor, label: str) -> None:
        """Warn of an estimate flat at 0 or 1 far from the data's median, or mostly at 0
        and 1 where the data is not (see _SATURATED_SPAN); a few reads, once per fit."""
        # None: not the image (see bind), or a fit kept by an older skdip.
        levels = getattr(self, "target_levels", None)
        if levels is None or estimate.numel() == 0:
            return
        median, data_pinned = levels
        # Its 1st and 99th percentiles: a few pixels off the bound leave it as meaningless.
        values = estimate.detach().float().flatten()
        tail = max(1, values.numel() // 100)
        low = float(torch.kthvalue(values, tail).values)
        high = float(torch.kthvalue(values, values.numel() - tail + 1).values)
        if high - low < _SATURATED_SPAN:
            if high <= _SATURATED_SPAN:
                bound = 0
            elif low >= 1 - _SATURATED_SPAN:
                bound = 1
            else:
                return
            if abs(bound - median) <= _SATURATED_MEDIAN_GAP:
                return  # a black (or white) picture, estimated as such
            warn(
                f"{label}the network's estimate is flat at {bound} (98% of its values in "
                f"[{low:.3g}, {high:.3g}]) while the data's median is {median:.3g}: its "
                "output saturated, most likely from a learning rate far too large; the "
                "estimate returned is meaningless (but for data pasted into it)",
                RuntimeWarning,
            )
            return
        # Not flat, but mostly at 0 and 1 where the data is not: a black-and-white pattern.
        at_low, at_high = _shares_at_bounds(values)
        if at_low + at_high < _SATURATED_PINNED or data_pinned >= _SATURATED_DATA_PINNED:
            return
        middle = float(values.nanmedian())
        if abs(middle - median) <= _SATURATED_MEDIAN_GAP:
            return  # a dark (or light) picture with a few pixels at the other bound
        warn(
            f"{label}{at_low + at_high:.1%} of the network's estimate lies within "
            f"{_SATURATED_SPAN} of 0 or 1 ({at_low:.1%} at 0, {at_high:.1%} at 1), against "
            f"{data_pinned:.1%} of the data: its output saturated, most likely from a "
            "learning rate far too large; the estimate returned is meaningless (but for "
            "data pasted into it)",
            RuntimeWarning,
        )

    def bind(self, target: torch.Tensor, model: nn.Module) -> None:
        """Take the fit's ``target``: its median and its share of values at 0 or 1, where
        it shows the image's levels, and for a rule that compares the iterates with the
        observation (see :class:`~skdip.stopping.DiscrepancyPrinciple`), the target
        itself."""
        # What a saturated output is told from (see _SATURATED_SPAN), read once, where
        # the data shows the image's levels (the model says: the data itself, its
        # observed pixels, a local average); not through another forward model, whose
        # data's median is not the image's (diffraction magnitudes), nor a model's own.
        read = getattr(model, "_image_values", None)
        values = None if read is None else read(target)
        self.target_levels = None
        if values is not None:
            values = values.detach().float().flatten()
            values = values[~values.isnan()]
            if values.numel():
                self.target_levels = (float(values.median()), sum(_shares_at_bounds(values)))
        bind = getattr(self.rule, "_bind_observation", None)
        if bind is None or self.passive:
            return
        # The known forward model that maps the iterates onto the observation: None
        # where none does (a noise term or a learned kernel in between, or a monitor
        # changing what the rule sees); the rule says which models it can serve.
        operator = model.operator if isinstance(model, DIPModel) else None
        if isinstance(operator, Identity) and self.monitor is not _unchanged:
            operator = None
        bind(target, operator)

    def _signal(self, x: torch.Tensor, it: int):
        sig = self.rule.signal(self.monitor(x), it)
        if it < getattr(self.rule, "warmup", 0):
            # A rule may return values in its warm-up (the base class lets it); they
            # count nowhere, so the history shows none (and warm-up advice holds).
            sig = None
        return sig

    def _average(self, raw: torch.Tensor, restart: bool) -> None:
        """Fold the iterate into the output average (the estimate), if there is one.

        Watching the raw iterates, a stopping rule's minimum can come just after its
        first check, and the average returned ``delay`` steps later then still gave the
        first, far worse iterates over a third of its weight: up to 5.2 dB below an
        average that leaves them out, and on 5 of 11 such cases below the raw iterate
        at the minimum (``benchmarks/results/output_averaging.md``). So there the
        average restarts at the rule's first check, with its weights normalised over
        the iterates it holds (as Adam corrects its moments): its first iterate, which
        stands in for all the earlier ones in a plain average, counts as one. (When
        the best iterates come within the warm-up, they are left out too: 1.83 dB
        lost on one of 26 measured cases, which the first-check warning flagged.)
        """
        if self.averaging is None:
            self.estimate = raw
            return
        w = self.averaging
        # Without a stopping rule the last average is returned, long after the start.
        restart = restart and not self.passive
        if self.average is None or restart:
            self.average = raw.clone()
            if restart:
                self.averaged = 1
        elif self.averaged:
            self.averaged += 1
            # a_n = a_{n-1} + b_n (x_n - a_{n-1}), b_n = (1 - w) / (1 - w**n): the
            # normalised exponential average of the n iterates, updated in place.
            b = (1.0 - w) / (1.0 - w**self.averaged)
            self.average.mul_(1.0 - b).add_(raw, alpha=b)
        else:
            self.average.mul_(w).add_(raw, alpha=1.0 - w)
        self.estimate = self.average

    def observe(
        self, values: list[float], loss_value: float, it: int, data_loss: float | None = None
    ) -> bool:
        """Record the scalars read for step ``it``; return whether the rule stops.

        ``data_loss`` is the data term alone, given when a penalty was added to it.
        """
        values = list(values)
        self.losses.append(loss_value)
        if data_loss is not None:
            self.data_losses.append(data_loss)
        signal_value = values.pop(0) if self.has_signal else math.nan
        self.signals.append(signal_value)
        if self.reference is not None:
            self.psnrs.append(values.pop(0))
            if self.averaging is not None:
                self.psnrs_raw.append(values.pop(0))
        if self.passive or not self.has_signal:
            is_best, stop = False, False
        else:
            is_best, stop = self.rule.observe(signal_value, it)
        if is_best:
            self.detected = it
        if is_best and self.watch_raw:
            self.capture_at = it + self.delay
        elif is_best:
            self.best, self.best_iter = self.estimate.clone(), it
        if self.capture_at == it:
            self.best, self.best_iter, self.capture_at = self.estimate.clone(), it, None
        if stop:
            self.rule_stopped = True
        return stop

    def result(
        self,
        model: nn.Module,
        n_steps: int,
        stopped_by: str,
        events: list,
        elapsed: float,
        expect_progress: bool = True,
        label: str = "",
    ) -> FitResult:
        """The fit's outcome; ``model`` holds the final parameters (``expect_progress``:
        see :func:`fit_model`; ``label``: what the warnings name, see :func:`_label`)."""
        # An interruption can fall between a step and its record: count recorded steps,
        # so that n_iter and the history agree.
        n_steps = min(n_steps, len(self.losses))
        if (
            stopped_by == "early_stopping"
            and self.detected is not None
            and self.detected == self.first_checked
            and getattr(self.rule, "_suspect_first_check_minimum", True)
        ):
            # A deadline's warm-up is its wrapped rule's (a duck-typed rule is its own).
            watched = getattr(self.rule, "_signal_rule", lambda: self.rule)()
            rule = f"{type(watched).__name__}(warmup=...)"
            if watched is not self.rule:
                rule = f"{type(self.rule).__name__}({rule})"
            signal_name = (
                "the running variance"
                if isinstance(watched, ExponentialMovingVariance | WindowedMovingVariance)
                else f"the stopping signal of {type(watched).__name__}"
            )
            warn(
                f"{label}{signal_name} was lowest at the first iteration it was checked "
                f"({self.detected}) and never went lower: often a spurious early minimum (the "
                "network was still learning structure, e.g. a texture). Consider a longer "
                f"warm-up (early_stopping={rule}) and compare with the result at "
                "a later step. On a smooth picture under strong noise the fit may instead be "
                "past its best already (a shorter warm-up tells).",
                UserWarning,
            )
        finite = [v for v in self.losses if math.isfinite(v)]
        first = self.losses[0] if self.losses else math.nan
        # The last 50 losses, or the last half of a shorter fit.
        tail = min(50, len(self.losses) // 2) or 1
        ending = float(np.median(self.losses[-tail:])) if self.losses else math.nan
        rise = _NO_PROGRESS_RISE if len(self.losses) < _NO_PROGRESS_LONG else _NO_PROGRESS_LONG_RISE
        learned = True  # as far as the loss tells
        if (
            expect_progress
            and len(self.losses) >= _NO_PROGRESS_STEPS
            and first > 0
            and min(finite) >= first
            and ending >= rise * first
        ):
            # A learning rate far too large can keep the network from ever learning
            # without a blow-up the guard reacts to: the deep decoder at lr=1 on a
            # noisy camera crop returned 5.1 dB, early-stopped, silently.
            learned = False
            warn(
                f"{label}the loss never fell below its first value ({first:.3g}, the untrained "
                f"network's) in {len(self.losses)} steps and ended {ending / first:.3g} "
                "times above it: the network did not learn, most likely from a learning "
                "rate far too large; the estimate returned is meaningless",
                RuntimeWarning,
            )
        # Far above its start too: near 0, a near-perfect fit's loss jitters by large
        # ratios (1e4 above a lowest of 3e-10).
        elif (
            finite and min(finite) > 0 and finite[-1] > max(1e3 * min(finite), 10 * finite[0], 1e-3)
        ):
            # The ratio guard waits for the first checkpoint: a step size far too large
            # (a noise model's lr=1e9) ran the loss up 1e7-fold in 20 steps, silently.
            warn(
                f"{label}the loss ended {finite[-1] / min(finite):.3g} times above its lowest "
                f"({min(finite):.3g}): the fit went astray, most likely from a learning rate "
                "far too large; the estimate returned may be meaningless",
                RuntimeWarning,
            )
        best, best_iter, last = self.best, self.best_iter, self.last
        if self.capture_at is not None and last is not None:
            # The run ended inside the delay: the latest average is the closest.
            best, best_iter = last.clone(), n_steps - 1
        if last is None:  # not a single good step
            with torch.no_grad():
                last = model(None)[0].detach()
        if best is None or self.passive:
            best, best_iter = last, max(n_steps - 1, 0)
        if expect_progress and learned:
            # The image in the estimate (a blind deblurrer's carries its kernel too).
            self._warn_if_saturated(getattr(model, "_image_of", _unchanged)(best), label)
        history = {
            "loss": np.asarray(self.losses),
            **({"data_loss": np.asarray(self.data_losses)} if self.data_losses else {}),
            "signal": np.asarray(self.signals),
            "divergences": events,
            "fit_time": elapsed,
            "seconds_per_step": elapsed / max(len(self.losses), 1),
        }
        if self.reference is not None:
            history["psnr"] = np.asarray(self.psnrs)
            if self.averaging is not None:
                history["psnr_raw"] = np.asarray(self.psnrs_raw)
        # The model stays in training mode: BatchNorm in eval mode would use running
        # statistics and produce a different image than the estimate returned.
        return FitResult(
            # Copies: on the CPU .to() would share the live average a resumed fit updates.
            estimate=best.detach().to("cpu", copy=True),
            last=last.detach().to("cpu", copy=True),
            best_iter=int(best_iter),
            n_iter=int(n_steps),
            stopped_by=stopped_by,
            history=history,
            model=model,
        )


def _label(description: str) -> str:
    """The prefix by which a fit's warnings name it: its estimator, and its image where
    the call fits several (``"DIPDenoiser [2/6]: "``), else nothing (a bare engine fit)."""
    # Without it, a batch's warnings of a spurious minimum or a divergence did not say
    # which of the images they were about.
    return "" if description == "fit" else f"{description}: "


def _warn_diverged(events: list[dict], it: int, label: str = "") -> None:
    if it == 0 and not any(math.isfinite(e["loss"]) for e in events):
        # Not the step size: the untrained network's loss is already not finite.
        warn(
            f"{label}no step could be taken: the loss of the untrained network was not finite "
            f"({len(events)} tries), so the forward operator, the loss or the data overflow "
            "(e.g. a kernel or measurements too large for float32); the untrained "
            "network's output is returned.",
            RuntimeWarning,
        )
        return
    warn(
        f"{label}the fit diverged {len(events)} times; stopping at iteration {it} "
        "with the best estimate so far. Try a smaller learning rate.",
        RuntimeWarning,
    )


def _warn_interrupted(n_steps: int) -> None:
    warn(
        f"fit interrupted after {n_steps} steps; keeping the best estimate so far",
        InterruptionWarning,
    )


COMPLEX_OUTPUT_MESSAGE = (
    "the forward operator returns complex values but the observation is real; "
    "return what is measured (e.g. magnitudes, or real and imaginary parts as channels)"
)


def _signal_tensor(value, rule, like: torch.Tensor) -> torch.Tensor:
    """A stopping rule's signal as a 0-d float tensor on the iterate's device.

    A user's rule may return a Python or NumPy number (it costs a sync, but it
    is not wrong); anything else gets an error naming the rule.
    """
    name = type(rule).__name__
    if not torch.is_tensor(value):
        if isinstance(value, Real) and not isinstance(value, bool):
            value = torch.tensor(float(value), device=like.device)
        else:
            raise TypeError(
                f"{name}.signal must return a scalar torch tensor or None, "
                f"got {type(value).__name__}"
            )
    if value.numel() != 1:
        raise ValueError(
            f"{name}.signal must return a scalar (one value per iterate), "
            f"got shape {tuple(value.shape)}"
        )
    if value.is_complex():
        raise TypeError(f"{name}.signal must return a real value, got {value.dtype}")
    return value.detach().reshape(()).float().to(like.device)


def _check_scalar(value, what: str) -> None:
    """A user's loss or regularizer must give a scalar tensor (the gradient's root)."""
    if not torch.is_tensor(value):
        raise TypeError(
            f"{what} must return a torch tensor (to differentiate), got {type(value).__name__}"
        )
    if value.numel() != 1:
        raise ValueError(f"{what} must return a scalar tensor, got shape {tuple(value.shape)}")


def _first_forward(model: DIPModel, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The first step's forward pass, with a word on dtypes where torch's own error
    names none of skdip's (a float64 module inside a float32 fit)."""
    try:
        return model(rng)
    except RuntimeError as error:
        hint = _dtype_hint(error)
        if hint is None:
            raise
        raise hint from error


def _dtype_hint(error: RuntimeError) -> TypeError | None:
    """torch's dtype-mismatch error with what skdip expects, or None for another error."""
    text = str(error)
    if not any(word in text for word in ("scalar type", "dtype", "Input type")):
        return None
    if any(word in text for word in ("cuda", "device", "mps")):
        return None  # torch words a device mismatch alike ("Input type ... cuda")
    return TypeError(
        f"{text} (skdip builds the target and its networks in torch's default dtype, "
        f"{torch.get_default_dtype()}: a network's parameters and input code, and a "
        "forward operator's tensors, must be in it too, e.g. "
        "module.to(torch.get_default_dtype()))"
    )


_NO_TRAINABLE_PARAMETER = "the generator's output depends on no trainable parameter"


def _check_differentiable(x, prediction, total, penalty=None) -> None:
    """Refuse, on the first step, a loss no trainable parameter reaches: torch's "element
    0 of tensors does not require grad" named neither the network nor the operator.
    ``penalty``: the regularizer's term, None without one (then the loss alone is named)."""
    if total.requires_grad:
        return
    if not x.requires_grad:
        culprit = _NO_TRAINABLE_PARAMETER + " (every parameter frozen, or the output detached)"
    elif not prediction.requires_grad:
        culprit = (
            "the forward operator cuts the gradient (a detach, NumPy or torch.no_grad inside it)"
        )
    elif penalty is None:
        culprit = "the loss cuts the gradient (a detach, .item(), NumPy or torch.no_grad inside it)"
    else:  # one term reached by the gradient would have carried the total
        culprit = "the loss and the regularizer both cut the gradient"
    raise ValueError(f"nothing can be fitted: {culprit}")


def _as_scalar(value: torch.Tensor | None) -> torch.Tensor | None:
    """A one-element loss or penalty (shaped ``(1,)``: a caller's ``keepdim`` or
    ``view(1)``) as the 0-d tensor it stands for: beside a 0-d term it made the step's
    read-out a list ("must be real number, not list") or failed to stack."""
    return value if value is None or value.dim() == 0 else value.reshape(())


def _check_terms_steer(x, prediction, data, penalty) -> None:
    """Refuse, on the first step, a loss or a penalty that the gradient does not reach
    while the other one does: it entered the reported loss but not the fit (a penalty
    returned as ``float(...)`` or detached left the estimate bit-identical to a fit
    without it, whatever its weight)."""
    if prediction.requires_grad and not data.requires_grad:
        raise ValueError(
            "the loss cuts the gradient (a detach, .item(), NumPy or torch.no_grad inside "
            "it): the fit would follow the regularizer alone"
        )
    # A constant zero (a placeholder for "no penalty") changes neither the loss nor the fit.
    if (
        penalty is not None
        and x.requires_grad
        and not penalty.requires_grad
        and bool(penalty.detach() != 0)
    ):
        raise ValueError(
            "the regularizer cuts the gradient (a detach, .item(), NumPy or torch.no_grad "
            "inside it): it would change the reported loss but not the fit"
        )


def _warn_if_no_gradient(gradients) -> None:
    """Warn, on the first step, where a loss above 0 gives every fitted parameter a
    gradient of exactly 0: Adam then never moves and the fit returns the untrained
    network's output in silence (measured: a forward operator ``torch.round(10 * x) /
    10``, whose gradient is 0 everywhere, fitted nothing in 3 steps, without a word).
    A warning, not an error: an operator flat only where the first output lands (a
    clamp) may still be fitted from a perturbed input."""
    present = [g.ne(0).any() for g in gradients if g is not None]
    if present and bool(torch.stack(present).any()):
        return
    warn(
        "the loss has a gradient of exactly 0 for every fitted parameter at the first "
        "step, so nothing is fitted and the result is the untrained network's output: "
        "is the forward operator piecewise constant (torch.round, floor, sign, a "
        "comparison or an index taken from the values)? Use a differentiable model of "
        "the measurement (e.g. the values before rounding)"
    )


def _not_a_tensor(what: str, value) -> str:
    return f"{what} must return a torch tensor, got {type(value).__name__}"


def _check_tensors(x, prediction) -> None:
    """Refuse an estimate or a prediction that is no tensor (a tuple, NumPy), naming
    the generator or the forward operator."""
    for value, what in ((x, "the generator"), (prediction, "the forward operator")):
        if not torch.is_tensor(value):
            raise TypeError(_not_a_tensor(what, value))


def _check_shapes(x, prediction, target, reference, model=None) -> None:
    # A user's generator or operator returning NumPy failed with "'numpy.ndarray'
    # object has no attribute 'is_complex'".
    _check_tensors(x, prediction)
    # Without an operator, a wrong shape is the generator's.
    culprit = (
        "the generator's output shape"
        if isinstance(getattr(model, "operator", None), Identity)
        else "the forward operator"
    )
    if prediction.is_complex() and not target.is_complex():
        raise ValueError(COMPLEX_OUTPUT_MESSAGE)
    if prediction.shape != target.shape:
        raise ValueError(
            f"the model predicts measurements of shape {tuple(prediction.shape)} but the "
            f"observation has shape {tuple(target.shape)}; check {culprit}"
        )
    if reference is not None and reference.shape != x.shape:
        raise ValueError(
            f"the clean reference y has shape {tuple(reference.shape)} (as (1, C, H, W)) but "
            f"the reconstruction has shape {tuple(x.shape)}"
        )


def _lrs(optimizer: _Optimizers) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups]
