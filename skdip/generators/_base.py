"""The generator protocol shared by every network that skdip can fit.

A *generator* is a lightweight, picklable configuration object (a scikit-learn
``BaseEstimator``, so its parameters can be tuned with ``generator__width`` in a
grid search). Calling :meth:`BaseGenerator.build` turns it into a
:class:`GeneratorNetwork`: a ``torch.nn.Module`` that owns its fixed input code
``z`` and maps a (possibly perturbed) code to an image of exactly the requested
size. Architectures that need a size divisible by some power of two work on a
padded grid internally and crop on the way out, so callers never pad.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from sklearn.base import BaseEstimator
from torch import nn

from .._random import seeded_cpu_rng
from .._validation import InvalidParameterError, check_int, check_int_pair

__all__ = ["BaseGenerator", "GeneratorNetwork", "center_crop", "padded_size"]


def padded_size(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is at least ``size``."""
    return int(math.ceil(size / multiple) * multiple)


def padded_canvas(
    multiple: int, out_shape: tuple[int, int], setting: str, advice: str
) -> tuple[int, int]:
    """The padded size a network whose coarsest scale is ``multiple`` times smaller
    computes on, refused when far larger than the image.

    Each side is a multiple of ``multiple`` with at least 2 pixels at the coarsest
    scale: one pixel is constant under upsampling, reflection padding needs two, and
    BatchNorm saw a single value (a side of ``multiple`` or fewer pixels came out
    constant). ``setting`` (e.g. ``"SkipNetwork(depth=10)"``) and ``advice`` name
    what to change in the refusal.
    """
    h, w = (max(padded_size(s, multiple), 2 * multiple) for s in out_shape)
    if h * w > max(64 * out_shape[0] * out_shape[1], 256 * 256):
        # A 16x16 image under depth=10 ran on a 2048x2048 canvas and ran out of memory.
        raise ValueError(
            f"{setting} works on a {h}x{w} canvas for a {out_shape[0]}x{out_shape[1]} "
            f"image ({h * w // (out_shape[0] * out_shape[1])} times its pixels, and as many "
            f"times the memory and time per step); {advice}"
        )
    return h, w


def center_crop(x: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """Crop the last two axes of ``x`` to ``out_shape`` around the centre."""
    h, w = x.shape[-2:]
    oh, ow = out_shape
    if (h, w) == (oh, ow):
        return x
    if oh > h or ow > w:
        raise ValueError(f"cannot crop a {h}x{w} tensor to {oh}x{ow}")
    top = (h - oh) // 2
    left = (w - ow) // 2
    return x[..., top : top + oh, left : left + ow]


_ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    None: nn.Identity,
}


def check_output_activation(name: object, owner: str) -> None:
    """Refuse an output activation no generator knows, as the ``output_activation``
    parameter of the configuration class ``owner``."""
    # A str or None first: a list (unhashable) failed the look-up with a bare TypeError.
    if not (name is None or isinstance(name, str)) or name not in _ACTIVATIONS:
        raise InvalidParameterError(
            f"{owner}.output_activation must be one of "
            f"{sorted(k for k in _ACTIVATIONS if k)} or None, got {name!r}"
        )


def output_activation(name: str | None) -> nn.Module:
    """The module for an output activation (checked by :func:`check_output_activation`)."""
    return _ACTIVATIONS[name]()


class GeneratorNetwork(nn.Module):
    """A built generator: ``forward(z)`` returns a ``(1, C, H, W)`` image.

    Subclasses set :attr:`out_shape` and :attr:`out_channels` and register the
    fixed input code as the buffer ``input`` (shape ``(1, ...)``), so that it
    moves with ``.to(device)`` and is saved in ``state_dict`` and pickles. A
    network whose code is fitted too registers ``input`` as an
    ``nn.Parameter`` instead (:class:`DeepRandomProjector`); the engine then
    trains it with the weights, in plain and in batched fits.

    Examples
    --------
    >>> from skdip.generators import SkipNetwork
    >>> net = SkipNetwork(width=8, depth=2).build((16, 16), 3, seed=0)
    >>> net.out_shape, net.out_channels, net(net.input).shape
    ((16, 16), 3, torch.Size([1, 3, 16, 16]))
    """

    out_shape: tuple[int, int]
    out_channels: int
    # Registered by each subclass (a buffer, or a parameter); declared for type checkers,
    # which read a module's other attributes as "Tensor | Module".
    input: torch.Tensor
    # net(z) runs forward, which gives the image; annotated only, as ForwardOperator's.
    __call__: Callable[..., torch.Tensor]

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class BaseGenerator(BaseEstimator):
    """Base class of generator configurations.

    Subclasses implement ``_build(out_shape, out_channels)``, which returns a
    :class:`GeneratorNetwork` (its ``input`` buffer is the code ``z``); the
    public :meth:`build` validates the arguments, seeds torch's global RNG with
    ``seed`` and calls it, so ``_build`` only creates the layers. Every
    parameter is a plain value set in ``__init__``, following the scikit-learn
    convention. For ``batch_size > 1`` the network must run under
    :func:`torch.func.vmap` (no dropout, no ``.item()`` or data-dependent
    branching); ``batch_size=1`` has no such limit. What a network (or a
    forward operator) draws at random during the steps, such as dropout masks,
    comes from torch's global generators, which each fit seeds from the
    estimator's ``random_state`` and gives back to the caller after (shared by
    fits in threads of one process, where it is not reproducible). The image
    a fit returns is the network's output as it was trained, in training mode:
    with dropout, a draw of its masks (with ``output_averaging``, the running
    average of each step's draw), not the deterministic output of
    ``network.eval()``; BatchNorm layers normalise by the image's own
    statistics, as in the fit (their running statistics give another image).

    Examples
    --------
    A network of your own, tunable as ``generator__width`` in a search:

    >>> import numpy as np
    >>> import torch
    >>> from torch import nn
    >>> from skdip import DIPDenoiser
    >>> from skdip.generators import BaseGenerator, GeneratorNetwork
    >>> class TwoLayers(GeneratorNetwork):
    ...     def __init__(self, out_shape, out_channels, width):
    ...         super().__init__()
    ...         self.out_shape, self.out_channels = out_shape, out_channels
    ...         self.register_buffer("input", 0.1 * torch.rand(1, width, *out_shape))
    ...         self.layers = nn.Sequential(
    ...             nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
    ...             nn.Conv2d(width, out_channels, 1), nn.Sigmoid())
    ...     def forward(self, z):
    ...         return self.layers(z)
    >>> class TwoLayerGenerator(BaseGenerator):
    ...     def __init__(self, width=8):
    ...         self.width = width
    ...     def _build(self, out_shape, out_channels):
    ...         return TwoLayers(out_shape, out_channels, self.width)
    >>> net = TwoLayerGenerator(width=4).build((8, 8), 1, seed=0)
    >>> net(net.input).shape, net.n_parameters()
    (torch.Size([1, 1, 8, 8]), 153)
    >>> noisy = np.random.default_rng(0).random((8, 8))
    >>> den = DIPDenoiser(generator=TwoLayerGenerator(), max_iter=3, early_stopping=None)
    >>> den.fit_transform(noisy).shape
    (8, 8)
    """

    #: whether perturbing the input code each step (``reg_noise_std``) makes
    #: sense for this architecture; estimators warn when it does not.
    accepts_input_noise: bool = True

    #: whether the network needs an explicit penalty (``regularizer``) to stop
    #: short of the noise; estimators warn when none is given.
    needs_explicit_prior: bool = False

    def build(
        self,
        out_shape: tuple[int, int],
        out_channels: int,
        *,
        seed: int = 0,
    ) -> GeneratorNetwork:
        """Create a freshly initialised network for images of ``out_shape``.

        Parameters
        ----------
        out_shape : tuple of int
            ``(H, W)`` of the image the network must produce.
        out_channels : int
            Number of output channels.
        seed : int, default=0
            Seed of the weights and the input code. The network is built on the
            CPU, so the same seed gives the same network on every device.

        Returns
        -------
        network : GeneratorNetwork

        Raises
        ------
        InvalidParameterError
            If a setting of the generator is invalid (``width=2.5``, ``depth=True``,
            ``upsample="cubic"``): scikit-learn's error for a bad parameter, a
            ValueError and a TypeError, as an estimator's ``fit`` raises it.
        TypeError
            If ``seed`` is not an int (a float, a str, None, a RandomState),
            ``out_shape`` is no pair of ints (``(8,)``, ``(8, True)``), or
            ``out_channels`` is of the wrong type.
        ValueError
            If ``seed`` is outside torch's seed range ``[-2**63, 2**64)``, or
            ``out_shape`` or ``out_channels`` is out of range.
        """
        # The global RNG is seeded for the build, so builds in threads of one
        # process (Dask or joblib threading workers) must not interleave.
        owner = type(self).__name__
        shape = check_int_pair(out_shape, f"{owner}.out_shape")
        channels = check_int(out_channels, f"{owner}.out_channels", 1)
        # int() inside the seeding turned 1.5 and "1" silently into seed 1, and
        # None or a RandomState into a bare "int() argument must be ..." error.
        # The range is torch's (manual_seed).
        seed = check_int(
            seed,
            f"{owner}.build: seed",
            -(2**63),
            2**64 - 1,
            hint="to draw one from a random_state, pass "
            "check_random_state(random_state).randint(2**31)",
        )
        with seeded_cpu_rng(seed):
            network = self._build(shape, channels)
        if not isinstance(getattr(network, "input", None), torch.Tensor):
            # The fit feeds network.input (the code z) to the network: a bare
            # AttributeError came from deep in the engine.
            raise TypeError(
                f"{owner}._build must return a network whose `input` is its code z, a "
                "tensor (a buffer, or a parameter to fit it), as GeneratorNetwork's "
                f"subclasses register it; got {type(network).__name__} without one"
            )
        if any(t.is_meta for t in (*network.parameters(), *network.buffers())):
            # torch's own error, at the move to the fit's device, advised to_empty(),
            # which would fit uninitialised memory.
            raise ValueError(
                f"{owner}._build returned a network on the 'meta' device, which holds no "
                "values (built under torch.set_default_device('meta')?): build it on the CPU"
            )
        return network

    def _build(self, out_shape: tuple[int, int], out_channels: int) -> GeneratorNetwork:
        """Build the network; the global torch RNG is already seeded."""
        raise NotImplementedError

    def _check_output_shape(self, out_shape: tuple[int, int]) -> None:
        """Refuse, before any fit, an image shape this configuration cannot serve
        (the estimators ask for every image of a batch before fitting the first)."""
