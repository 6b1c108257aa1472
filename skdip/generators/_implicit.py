"""Implicit neural representations: an MLP evaluated at every pixel coordinate."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._typing import Float, Int
from .._validation import InvalidParameterError, check_int, check_number
from ._base import (
    BaseGenerator,
    GeneratorNetwork,
    check_output_activation,
    output_activation,
)

__all__ = ["ImplicitNeuralRepresentation"]


def coordinate_grid(out_shape: tuple[int, int]) -> torch.Tensor:
    """Pixel-centre coordinates of an image, shape ``(1, 2, H, W)``.

    Channel 0 holds the row coordinate and channel 1 the column coordinate.
    The pixel spacing is the same along both axes: the longer side spans
    ``[-1, 1]`` and the shorter side a centred sub-interval, so a non-square
    image is not stretched. A single pixel sits at 0.
    """
    h, w = out_shape
    steps = max(h, w) - 1

    def axis(size: int) -> torch.Tensor:
        if steps == 0:
            return torch.zeros(size)
        half = (size - 1) / steps
        return torch.linspace(-half, half, size)

    rows, cols = torch.meshgrid(axis(h), axis(w), indexing="ij")
    return torch.stack([rows, cols])[None]


class _SineLayer(nn.Module):
    """``sin(omega0 * (W x + b))`` with the SIREN initialisation of ``W``."""

    def __init__(self, in_features: int, out_features: int, omega0: float, first: bool):
        super().__init__()
        self.omega0 = omega0
        self.linear = nn.Linear(in_features, out_features)
        bound = 1.0 / in_features if first else math.sqrt(6.0 / in_features) / omega0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * self.linear(x))


class _FourierFeatures(nn.Module):
    """``[sin(2 pi B v), cos(2 pi B v)]`` with a fixed Gaussian frequency matrix ``B``."""

    def __init__(self, n_frequencies: int, scale: float):
        super().__init__()
        # A buffer, not a parameter: the frequencies are drawn once and never trained.
        self.register_buffer("frequencies", torch.randn(n_frequencies, 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * (x @ self.frequencies.T)
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


class _ImplicitModule(GeneratorNetwork):
    def __init__(
        self,
        out_shape: tuple[int, int],
        out_channels: int,
        *,
        hidden: int,
        n_layers: int,
        encoding: str,
        omega0: float | None,
        n_frequencies: int | None,
        scale: float | None,
        activation: str | None,
    ):
        super().__init__()
        self.out_shape = out_shape
        self.out_channels = out_channels
        self.register_buffer("input", coordinate_grid(out_shape))
        layers: list[nn.Module] = []
        if encoding == "sine":
            for i in range(n_layers):
                layers.append(_SineLayer(2 if i == 0 else hidden, hidden, omega0, first=i == 0))
            last = nn.Linear(hidden, out_channels)
            bound = math.sqrt(6.0 / hidden) / omega0
            with torch.no_grad():
                last.weight.uniform_(-bound, bound)
        else:
            layers.append(_FourierFeatures(n_frequencies, scale))
            width = 2 * n_frequencies
            for _ in range(n_layers):
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            last = nn.Linear(hidden, out_channels)
        layers.append(last)
        self.mlp = nn.Sequential(*layers)
        self.activation = output_activation(activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (1, 2, H, W) -> (1, H, W, 2): the MLP acts on the last axis, one pixel at a time.
        values = self.mlp(z.permute(0, 2, 3, 1))
        return self.activation(values.permute(0, 3, 1, 2))


class ImplicitNeuralRepresentation(BaseGenerator):
    """A coordinate MLP: the image is a continuous function of pixel position.

    The network is evaluated independently at every pixel; its fixed input
    (the buffer ``input``, shape ``(1, 2, H, W)``) is the grid of pixel
    coordinates, with the same spacing along both axes and the longer side
    spanning ``[-1, 1]``. Two encodings are available:

    - ``"sine"`` (SIREN): ``n_layers`` layers ``sin(omega0 * (W x + b))``
      followed by a linear layer. The first layer's weights are drawn from
      ``U(-1/2, 1/2)`` (``1 / fan_in`` with 2 inputs) and those of the later
      layers from ``U(-sqrt(6 / fan_in) / omega0, sqrt(6 / fan_in) / omega0)``.
    - ``"fourier"`` (random Fourier features): the coordinates ``v`` are
      mapped to ``[sin(2 pi B v), cos(2 pi B v)]`` with a fixed matrix ``B``
      of ``n_frequencies x 2`` entries drawn from ``N(0, scale**2)`` (seeded
      with the network), then ``n_layers`` ReLU layers and a linear layer.

    The output activation follows. Perturbing a coordinate grid with noise
    only blurs the image, so :attr:`accepts_input_noise` is ``False``.

    Parameters
    ----------
    hidden : int, default=256
        Width of the hidden layers.
    n_layers : int, default=3
        Number of hidden layers (sine or ReLU), not counting the output layer.
    encoding : {"sine", "fourier"}, default="sine"
        SIREN activations or random Fourier features with a ReLU MLP.
    omega0 : float, default=30.0
        Frequency factor of the sine layers (``"sine"`` only).
    n_frequencies : int, default=256
        Number of random frequencies (``"fourier"`` only); the encoding has
        twice as many features.
    scale : float, default=5.0
        Standard deviation of the random frequencies, in cycles per unit of
        coordinate (``"fourier"`` only). Larger values fit finer detail, and
        noise, sooner. 5 on ``[-1, 1]`` corresponds to the standard deviation
        10 recommended for natural images on ``[0, 1]`` coordinates.
    output_activation : {"sigmoid", "tanh", "relu", "softplus"} or None, default="sigmoid"
        Activation of the output. The sigmoid keeps outputs in ``[0, 1]``.

    Examples
    --------
    >>> from skdip.generators import ImplicitNeuralRepresentation
    >>> net = ImplicitNeuralRepresentation(hidden=16, n_layers=2).build((9, 12), 3, seed=0)
    >>> tuple(net.input.shape)
    (1, 2, 9, 12)
    >>> net(net.input).shape
    torch.Size([1, 3, 9, 12])
    >>> fourier = ImplicitNeuralRepresentation(hidden=16, encoding="fourier", n_frequencies=8)
    >>> fourier.build((9, 12), 1, seed=0)(net.input).shape
    torch.Size([1, 1, 9, 12])
    """

    accepts_input_noise = False

    def __init__(
        self,
        hidden: Int = 256,
        n_layers: Int = 3,
        encoding: str = "sine",
        omega0: Float = 30.0,
        n_frequencies: Int = 256,
        scale: Float = 5.0,
        output_activation: str | None = "sigmoid",
    ):
        self.hidden = hidden
        self.n_layers = n_layers
        self.encoding = encoding
        self.omega0 = omega0
        self.n_frequencies = n_frequencies
        self.scale = scale
        self.output_activation = output_activation

    def _build(self, out_shape: tuple[int, int], out_channels: int) -> GeneratorNetwork:
        owner = "ImplicitNeuralRepresentation"
        error = InvalidParameterError  # as an estimator's bad parameters are refused
        hidden = check_int(self.hidden, f"{owner}.hidden", 1, error=error)
        n_layers = check_int(self.n_layers, f"{owner}.n_layers", 1, error=error)
        if self.encoding not in ("sine", "fourier"):
            raise error(f"{owner}.encoding must be 'sine' or 'fourier', got {self.encoding!r}")
        # Only the parameters of the chosen encoding are checked.
        omega0: float | None = None
        n_frequencies: int | None = None
        scale: float | None = None
        if self.encoding == "sine":
            omega0 = check_number(
                self.omega0, f"{owner}.omega0", 0, exclusive_minimum=True, error=error
            )
        else:
            n_frequencies = check_int(self.n_frequencies, f"{owner}.n_frequencies", 1, error=error)
            scale = check_number(
                self.scale, f"{owner}.scale", 0, exclusive_minimum=True, error=error
            )
        check_output_activation(self.output_activation, owner)
        return _ImplicitModule(
            out_shape,
            out_channels,
            hidden=hidden,
            n_layers=n_layers,
            encoding=self.encoding,
            omega0=omega0,
            n_frequencies=n_frequencies,
            scale=scale,
            activation=self.output_activation,
        )
