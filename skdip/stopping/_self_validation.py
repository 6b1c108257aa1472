"""Self-validation: an autoencoder trained online on the iterates judges each new one.

Li et al. (BMVC 2021) observed that while a Deep Image Prior fit is still learning
the image, its iterates are structured and a small autoencoder trained on the
recent ones reconstructs the next one well; once the fit picks up noise, the new
iterate holds detail the autoencoder's narrow code cannot carry, and its
reconstruction error rises. The error's minimum tracks the quality peak.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval
from torch import nn

from .._random import seeded_cpu_rng
from .._typing import Float, Int
from ._variance import BaseStoppingRule

__all__ = ["SelfValidation"]


class _IterateAutoencoder(nn.Module):
    """Strided convolutions down to a one-channel grid of at most 4x4 pixels, a
    deep linear map on that code, and upsampling convolutions back."""

    def __init__(self, channels: int, shape: tuple[int, int], width: int):
        super().__init__()
        n_scales = max(1, math.ceil(math.log2(max(shape) / 4)))
        multiple = 2**n_scales
        self.shape = shape
        self.canvas = tuple(math.ceil(s / multiple) * multiple for s in shape)
        self.code_shape = tuple(s // multiple for s in self.canvas)
        widths = [min(width * 2**k, 4 * width) for k in range(n_scales - 1)] + [1]
        encoder: list[nn.Module] = []
        c_in = channels
        for c_out in widths:
            encoder += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c_in = c_out
        self.encoder = nn.Sequential(*encoder)
        code = self.code_shape[0] * self.code_shape[1]
        # A product of linear maps: gradient descent favours a low-rank code.
        self.bottleneck = nn.Sequential(*[nn.Linear(code, code, bias=False) for _ in range(4)])
        decoder: list[nn.Module] = []
        outs = [*reversed(widths[:-1]), channels]
        for k, c_out in enumerate(outs):
            decoder += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.Sigmoid() if k == len(outs) - 1 else nn.ReLU(),  # iterates lie in [0, 1]
            ]
            c_in = c_out
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.shape
        pad = (0, self.canvas[1] - w, 0, self.canvas[0] - h)
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        code = self.encoder(x).flatten(1)
        code = self.bottleneck(code).view(-1, 1, *self.code_shape)
        return self.decoder(code)[..., :h, :w]


class SelfValidation(BaseStoppingRule):
    """Self-validation: the error of an autoencoder trained online on the iterates.

    The rule keeps the last ``window`` iterates (clipped to ``[0, 1]``). Once
    the window is full, each new iterate is first passed through a small
    autoencoder trained on the earlier ones: the mean squared reconstruction
    error is the signal (lower is better). Then the autoencoder is trained for
    one epoch over the window (Adam, mini-batches of ``batch_size``, in a
    random order). The autoencoder squeezes an image through a one-channel
    code of at most 4x4 values, so it learns the slowly changing structure of
    the recent iterates but not noise that appears in a new one.

    It costs one epoch of training per step: with the defaults, ``window /
    batch_size = 8`` autoencoder steps on batches of 32 images, far more than
    the fit's own step. A smaller ``window`` is cheaper and reacts faster.
    The window's iterates take ``window`` images of memory per fitted image,
    also in a kept ``warm_start`` state; its pickle holds only those seen so
    far while the window fills.

    Parameters
    ----------
    window : int, default=256
        Iterates kept for training the autoencoder (at least 2); the first
        signal comes when the window is full.
    patience : int, default=500
        Steps without a new minimum of the error after which to stop.
    warmup : int, default=0
        Iterations before the error is checked (the window must be full too).
    lr : float, default=1e-3
        Adam learning rate of the autoencoder.
    batch_size : int, default=32
        Mini-batch size of the autoencoder's training, at least 2 (its
        BatchNorm needs two images).
    width : int, default=32
        Channels of the autoencoder's first layer (doubling per scale, at
        most four times this).
    random_state : int, default=0
        Seed of the autoencoder's weights and of the order of its batches.

    Attributes
    ----------
    best_iter_ : int
        Iteration of the smallest reconstruction error.
    best_value_ : float
        The smallest reconstruction error.

    See Also
    --------
    ExponentialMovingVariance : the default rule, far cheaper per step.

    Examples
    --------
    >>> from skdip import DIPDenoiser
    >>> from skdip import SelfValidation
    >>> den = DIPDenoiser(early_stopping=SelfValidation(window=64, patience=200))
    >>> den.get_params()["early_stopping__window"]
    64
    """

    _parameter_constraints: dict = {
        **BaseStoppingRule._parameter_constraints,
        "window": [Interval(Integral, 2, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        # BatchNorm trains on two images or more: batches of one never trained it.
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "width": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        window: Int = 256,
        patience: Int = 500,
        warmup: Int = 0,
        lr: Float = 1e-3,
        batch_size: Int = 32,
        width: Int = 32,
        random_state: Int = 0,
    ):
        self.window = window
        self.patience = patience
        self.warmup = warmup
        self.lr = lr
        self.batch_size = batch_size
        self.width = width
        self.random_state = random_state

    def _start(self) -> None:
        self._buffer = None
        self._count = 0
        self._autoencoder = None
        self._optimizer = None
        self._order = None

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: the live rule keeps its window
        buffer = state.get("_buffer")
        if buffer is not None and self._count < buffer.shape[0]:
            # The window is allocated whole at the first step: a pickle (or a deep
            # copy) of a fit shorter than the window carries only the iterates it
            # made, a copy so that the rest of the storage stays out.
            state["_buffer"] = buffer[: self._count].clone()
        if isinstance(state.get("_order"), torch.Generator):
            # Its state, not the generator: torch before 2.3 cannot pickle or deep-copy
            # a Generator (a kept warm_start fit, a cloned search, a worker's copy).
            # As bytes, not a tensor: a kept fit moved to another device goes through
            # torch.load(map_location=device), which put a tensor state on that device,
            # and a CPU generator refuses it ('RNG state must be a torch.ByteTensor').
            state["_order"] = state["_order"].get_state().numpy().tobytes()
        return state

    def __setstate__(self, state):
        buffer = state.get("_buffer")
        if buffer is not None and buffer.shape[0] < state["window"]:
            # The whole window again: signal() writes the next iterates in place.
            full = buffer.new_empty((state["window"], *buffer.shape[1:]))
            full[: buffer.shape[0]] = buffer
            state = {**state, "_buffer": full}
        order = state.get("_order")
        if isinstance(order, bytes | torch.Tensor):
            if isinstance(order, bytes):
                order = torch.frombuffer(bytearray(order), dtype=torch.uint8)
            generator = torch.Generator()
            # .cpu(): pickles made while the state was kept as a tensor.
            generator.set_state(order.cpu())
            state = {**state, "_order": generator}
        super().__setstate__(state)

    def signal(self, x: torch.Tensor, iteration: int) -> torch.Tensor | None:
        self._check_started()
        # The rule trains its autoencoder whatever the caller's mode: called on its own
        # (a loop of the user's) inside torch.inference_mode() it failed with torch's
        # "element 0 of tensors does not require grad", and inside torch.autocast it
        # trained in bfloat16 (another signal). A fit calls it with autograd on already.
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast("cpu", enabled=False),
            torch.autocast("cuda", enabled=False),
        ):
            return self._signal(x, iteration)

    def _signal(self, x: torch.Tensor, iteration: int) -> torch.Tensor | None:
        x = x.detach()
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(
                f"SelfValidation watches one image at a time, shaped (1, C, H, W); got "
                f"{tuple(x.shape)}"
            )
        x = x.clamp(0.0, 1.0)
        # Python ints: NumPy ones of a small type (window=np.uint8(100)) made the step
        # count overflow in the index below after 256 steps.
        window, batch_size = int(self.window), int(self.batch_size)
        if self._buffer is None:
            self._buffer = x.new_empty((window, *x.shape[1:]))
        self._buffer[self._count % window] = x[0]
        self._count += 1
        if self._count < window:
            return None
        if self._autoencoder is None:
            self._build(x)
        net = self._autoencoder
        with torch.no_grad():
            net.eval()
            error = (net(x) - x).square().mean()
        net.train()
        order = torch.randperm(window, generator=self._order).to(x.device)
        for start in range(0, window, batch_size):
            batch = self._buffer[order[start : start + batch_size]]
            if batch.shape[0] == 1:
                continue  # BatchNorm needs two images; the next epoch sees this one
            self._optimizer.zero_grad(set_to_none=True)
            F.mse_loss(net(batch), batch).backward()
            self._optimizer.step()
        return error if iteration >= self.warmup else None

    def _build(self, x: torch.Tensor) -> None:
        # Seeded apart from the caller's global generator, which the fit also draws from.
        with seeded_cpu_rng(self.random_state):
            net = _IterateAutoencoder(x.shape[1], tuple(x.shape[2:]), int(self.width))
        self._autoencoder = net.to(device=x.device, dtype=x.dtype)
        # A Python float: Adam works out its steps in single precision from a NumPy
        # float32 rate.
        self._optimizer = torch.optim.Adam(self._autoencoder.parameters(), lr=float(self.lr))
        self._order = torch.Generator().manual_seed(int(self.random_state))
