"""Decoder-only generators: the Deep Decoder and the ConvDecoder.

Both map a small, fixed random tensor to an image by repeated upsampling, with
no encoder and no skip connections. They have far fewer parameters than the
skip network (the Deep Decoder is even under-parameterised), which makes them
fit noise more slowly.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .._typing import Float, Int
from .._validation import InvalidParameterError, check_int, check_number
from ._base import (
    BaseGenerator,
    GeneratorNetwork,
    center_crop,
    check_output_activation,
    output_activation,
    padded_canvas,
)

__all__ = ["DeepDecoder", "ConvDecoder"]


# --------------------------------------------------------------------------- Deep Decoder


def _deep_decoder_canvas(n_blocks: int, out_shape: tuple[int, int]) -> tuple[int, int]:
    """The padded size a Deep Decoder computes on; refused when far larger than the image."""
    # Its code too needs 2 pixels per side: bilinear upsampling of one is constant, so a
    # side of up to 32 pixels came out constant along that axis under the defaults.
    return padded_canvas(
        2 ** (n_blocks - 1),
        out_shape,
        f"DeepDecoder(n_blocks={n_blocks})",
        "use a smaller n_blocks (each block but the last doubles the resolution, so about "
        "log2 of the image's shorter side at most)",
    )


class _DeepDecoderModule(GeneratorNetwork):
    def __init__(
        self,
        out_shape: tuple[int, int],
        out_channels: int,
        *,
        channels: int,
        n_blocks: int,
        input_scale: float,
        upsample: str,
        activation: str | None,
    ):
        super().__init__()
        self.out_shape = out_shape
        self.out_channels = out_channels
        n_up = n_blocks - 1
        multiple = 2**n_up
        self.padded_shape = _deep_decoder_canvas(n_blocks, out_shape)
        h0, w0 = (s // multiple for s in self.padded_shape)
        self.register_buffer("input", torch.rand(1, channels, h0, w0) * input_scale)
        align = None if upsample == "nearest" else False
        layers: list[nn.Module] = []
        for block in range(n_blocks):
            layers.append(nn.Conv2d(channels, channels, 1, bias=False))
            # The last block works at the output resolution: no upsampling.
            if block < n_up:
                layers.append(nn.Upsample(scale_factor=2, mode=upsample, align_corners=align))
            layers += [nn.ReLU(), nn.BatchNorm2d(channels)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv2d(channels, out_channels, 1), output_activation(activation)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return center_crop(self.head(self.body(z)), self.out_shape)


class DeepDecoder(BaseGenerator):
    """Deep Decoder: an under-parameterised generator without spatial convolutions.

    The network is ``n_blocks`` blocks of [1x1 convolution without bias, x2
    upsampling, ReLU, BatchNorm] followed by a 1x1 convolution to the output
    channels and an output activation. The last block does not upsample, so
    there are ``n_blocks - 1`` upsamplings: the fixed input code, drawn from
    ``U(0, input_scale)``, has ``channels`` channels and a spatial size of
    ``1 / 2**(n_blocks - 1)`` of the image. Images whose sides are not
    multiples of ``2**(n_blocks - 1)`` are produced on a padded grid and
    cropped at the centre; the grid is at least ``2 * 2**(n_blocks - 1)``
    pixels per side (64 with the defaults), so that the code always has at
    least 2x2 pixels and small images are produced in the centre of a larger
    grid. A configuration whose grid would exceed 64 times the image's pixels
    (and 256x256) is refused. Only the upsampling mixes neighbouring pixels,
    which is what makes the model a strong smoothness prior; with the defaults
    it has about 25 thousand parameters (25,539 for 3 output channels).

    Parameters
    ----------
    channels : int, default=64
        Channels of every block (``k`` in the paper).
    n_blocks : int, default=6
        Number of blocks. The input code is ``2**(n_blocks - 1)`` times smaller
        than the (padded) image along each side.
    input_scale : float, default=0.1
        The code is drawn uniformly from ``[0, input_scale)``.
    upsample : {"bilinear", "nearest"}, default="bilinear"
        Upsampling mode. With ``"nearest"`` the output is constant on blocks of
        ``2**(n_blocks - 1)`` pixels, since every other layer acts pixel by pixel.
    output_activation : {"sigmoid", "tanh", "relu", "softplus"} or None, default="sigmoid"
        Activation of the head. The sigmoid keeps outputs in ``[0, 1]``.

    Examples
    --------
    >>> from skdip.generators import DeepDecoder
    >>> net = DeepDecoder(channels=8, n_blocks=3).build((10, 13), 1, seed=0)
    >>> tuple(net.input.shape)
    (1, 8, 3, 4)
    >>> net(net.input).shape
    torch.Size([1, 1, 10, 13])
    """

    def __init__(
        self,
        channels: Int = 64,
        n_blocks: Int = 6,
        input_scale: Float = 0.1,
        upsample: str = "bilinear",
        output_activation: str | None = "sigmoid",
    ):
        self.channels = channels
        self.n_blocks = n_blocks
        self.input_scale = input_scale
        self.upsample = upsample
        self.output_activation = output_activation

    def _build(self, out_shape: tuple[int, int], out_channels: int) -> GeneratorNetwork:
        error = InvalidParameterError  # as an estimator's bad parameters are refused
        channels = check_int(self.channels, "DeepDecoder.channels", 1, error=error)
        n_blocks = check_int(self.n_blocks, "DeepDecoder.n_blocks", 1, error=error)
        input_scale = check_number(
            self.input_scale, "DeepDecoder.input_scale", 0, exclusive_minimum=True, error=error
        )
        if self.upsample not in ("bilinear", "nearest"):
            raise error(
                f"DeepDecoder.upsample must be 'bilinear' or 'nearest', got {self.upsample!r}"
            )
        check_output_activation(self.output_activation, "DeepDecoder")
        return _DeepDecoderModule(
            out_shape,
            out_channels,
            channels=channels,
            n_blocks=n_blocks,
            input_scale=input_scale,
            upsample=self.upsample,
            activation=self.output_activation,
        )

    def _check_output_shape(self, out_shape: tuple[int, int]) -> None:
        # A bad n_blocks is left for build() to report with the other parameters.
        if isinstance(self.n_blocks, numbers.Integral) and not isinstance(self.n_blocks, bool):
            if self.n_blocks >= 1:
                _deep_decoder_canvas(int(self.n_blocks), tuple(int(s) for s in out_shape))


# --------------------------------------------------------------------------- ConvDecoder


def _start_shape(out_shape: tuple[int, int], input_size: int) -> tuple[int, int]:
    """Input size with the output's aspect ratio and ``input_size`` on the long side."""
    h, w = out_shape
    long_side = max(h, w)
    if long_side <= input_size:
        return h, w
    scale = input_size / long_side
    return max(1, min(h, round(h * scale))), max(1, min(w, round(w * scale)))


def _geometric_sizes(
    start: tuple[int, int], end: tuple[int, int], n_steps: int
) -> list[tuple[int, int]]:
    """``n_steps`` sizes growing geometrically from (after) ``start`` to ``end`` inclusive."""
    sizes = []
    for step in range(1, n_steps + 1):
        if step == n_steps:
            sizes.append(tuple(end))
            continue
        t = step / n_steps
        size = tuple(
            min(e, max(1, math.ceil(s * (e / s) ** t - 1e-9)))
            for s, e in zip(start, end, strict=True)
        )
        sizes.append(size)
    return sizes


def _conv3x3_relu_bn(channels: int) -> list[nn.Module]:
    # Zero padding, as in the reference ConvDecoder; it works at any size (even 1x1).
    return [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(channels)]


class _ConvDecoderModule(GeneratorNetwork):
    def __init__(
        self,
        out_shape: tuple[int, int],
        out_channels: int,
        *,
        channels: int,
        n_layers: int,
        input_size: int,
        activation: str | None,
    ):
        super().__init__()
        self.out_shape = out_shape
        self.out_channels = out_channels
        # BatchNorm needs more than one value per channel: a 1x1 image is made 1x2 and cropped.
        work = (1, 2) if out_shape == (1, 1) else out_shape
        start = _start_shape(work, input_size)
        #: the sizes the code is upsampled to, one per upsampling block.
        self.sizes = _geometric_sizes(start, work, n_layers - 1)
        self.register_buffer("input", torch.rand(1, channels, *start))
        layers: list[nn.Module] = []
        for size in self.sizes:
            layers.append(nn.Upsample(size=size, mode="nearest"))
            layers += _conv3x3_relu_bn(channels)
        layers += _conv3x3_relu_bn(channels)
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv2d(channels, out_channels, 1), output_activation(activation)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return center_crop(self.head(self.body(z)), self.out_shape)


class ConvDecoder(BaseGenerator):
    """ConvDecoder: nearest upsampling to explicit sizes, then 3x3 convolutions.

    The fixed input code is drawn from ``U(0, 1)`` with ``channels`` channels
    and a small spatial size that keeps the image's aspect ratio: its longer
    side is ``input_size`` pixels (or the image's own size, when smaller) and
    its shorter side is scaled to match (at least 1 pixel). For example a
    640x368 image starts from 8x5 and a 128x128 image from 8x8. The code then
    goes through ``n_layers - 1`` blocks of [nearest upsampling, 3x3
    convolution, ReLU, BatchNorm], whose sizes grow geometrically from the
    input size to exactly the image size, and a last [3x3 convolution, ReLU,
    BatchNorm] block at the image size. A 1x1 convolution to the output
    channels and an output activation form the head. Since the last
    upsampling targets the image size itself, no padding or cropping is
    needed. Convolutions use zero padding.

    The defaults (256 channels, 7 layers) are those of the MRI demonstration
    of the paper: about 4.1 million parameters, and on a CPU a step costs
    several times as much as one of the skip network.

    Parameters
    ----------
    channels : int, default=256
        Channels of the input code and of every convolution.
    n_layers : int, default=7
        Number of 3x3 convolutions; ``n_layers - 1`` of them follow an
        upsampling. Must be at least 2.
    input_size : int, default=8
        Longer side of the input code, in pixels.
    output_activation : {"sigmoid", "tanh", "relu", "softplus"} or None, default="sigmoid"
        Activation of the head. The sigmoid keeps outputs in ``[0, 1]``.

    Examples
    --------
    >>> from skdip.generators import ConvDecoder
    >>> net = ConvDecoder(channels=8, n_layers=3, input_size=4).build((12, 18), 3, seed=0)
    >>> tuple(net.input.shape)
    (1, 8, 3, 4)
    >>> net.sizes
    [(6, 9), (12, 18)]
    >>> net(net.input).shape
    torch.Size([1, 3, 12, 18])
    """

    def __init__(
        self,
        channels: Int = 256,
        n_layers: Int = 7,
        input_size: Int = 8,
        output_activation: str | None = "sigmoid",
    ):
        self.channels = channels
        self.n_layers = n_layers
        self.input_size = input_size
        self.output_activation = output_activation

    def _build(self, out_shape: tuple[int, int], out_channels: int) -> GeneratorNetwork:
        error = InvalidParameterError  # as an estimator's bad parameters are refused
        channels = check_int(self.channels, "ConvDecoder.channels", 1, error=error)
        n_layers = check_int(self.n_layers, "ConvDecoder.n_layers", 2, error=error)
        input_size = check_int(self.input_size, "ConvDecoder.input_size", 1, error=error)
        check_output_activation(self.output_activation, "ConvDecoder")
        return _ConvDecoderModule(
            out_shape,
            out_channels,
            channels=channels,
            n_layers=n_layers,
            input_size=input_size,
            activation=self.output_activation,
        )
