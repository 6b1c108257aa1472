"""The encoder-decoder "skip" network of the Deep Image Prior paper."""

from __future__ import annotations

import copy
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

__all__ = ["SkipNetwork"]


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    # Reflection padding avoids the dark borders zero padding paints on the output.
    pad = (kernel - 1) // 2
    layers: list[nn.Module] = []
    if pad:
        layers.append(nn.ReflectionPad2d(pad))
    layers.append(nn.Conv2d(in_ch, out_ch, kernel, stride=stride))
    return nn.Sequential(*layers)


def _conv_bn_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [_conv(in_ch, out_ch, kernel, stride), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2)]


class _Scale(nn.Module):
    """One scale of the U-shaped network: skip branch, down branch, merge."""

    def __init__(
        self,
        in_ch: int,
        width: int,
        skip: int,
        inner: nn.Module | None,
        inner_out: int,
        upsample: str,
    ):
        super().__init__()
        self.skip = nn.Sequential(*_conv_bn_act(in_ch, skip, 1)) if skip else None
        down: list[nn.Module] = [
            *_conv_bn_act(in_ch, width, 3, stride=2),
            *_conv_bn_act(width, width, 3),
        ]
        if inner is not None:
            down.append(inner)
        align = None if upsample == "nearest" else False
        down.append(nn.Upsample(scale_factor=2, mode=upsample, align_corners=align))
        self.down = nn.Sequential(*down)
        merged = skip + (inner_out if inner is not None else width)
        self.merge = nn.Sequential(
            nn.BatchNorm2d(merged),
            *_conv_bn_act(merged, width, 3),
            *_conv_bn_act(width, width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.down(x)
        if self.skip is None:
            return self.merge(deep)
        return self.merge(torch.cat([self.skip(x), deep], dim=1))


def skip_body(
    input_channels: int, width: int, skip_channels: int, depth: int, upsample: str
) -> nn.Module:
    """The ``depth`` nested scales of the U-shaped network, outermost first."""
    inner: nn.Module | None = None
    for level in reversed(range(depth)):
        in_ch = input_channels if level == 0 else width
        inner = _Scale(in_ch, width, skip_channels, inner, width, upsample)
    return inner


def check_canvas(
    depth: int, out_shape: tuple[int, int], owner: str = "SkipNetwork"
) -> tuple[int, int]:
    """The padded size the network computes on; refused when far larger than the image."""
    return padded_canvas(
        2**depth,
        out_shape,
        f"{owner}(depth={depth})",
        "use a smaller depth (each level halves the resolution, so about log2 of the "
        "image's shorter side at most)",
    )


class _SkipNetworkModule(GeneratorNetwork):
    def __init__(self, cfg: SkipNetwork, out_shape: tuple[int, int], out_channels: int):
        super().__init__()
        self.out_shape = out_shape
        self.out_channels = out_channels
        h, w = check_canvas(cfg.depth, out_shape)
        z = torch.rand(1, cfg.input_channels, h, w) * cfg.input_scale
        self.register_buffer("input", z)
        self.body = skip_body(
            cfg.input_channels, cfg.width, cfg.skip_channels, cfg.depth, cfg.upsample
        )
        self.head = nn.Sequential(
            nn.Conv2d(cfg.width, out_channels, 1), output_activation(cfg.output_activation)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return center_crop(self.head(self.body(z)), self.out_shape)


class SkipNetwork(BaseGenerator):
    """Encoder-decoder with skip connections, the Deep Image Prior default.

    Each of ``depth`` scales halves the resolution with a strided 3x3
    convolution, processes it, recurses, upsamples by two and merges the
    result with a 1x1 "skip" projection of its input. BatchNorm and
    LeakyReLU(0.2) follow every convolution; padding is by reflection; a 1x1
    convolution and an output activation form the head. The input code is a
    fixed uniform ``U(0, input_scale)`` tensor with ``input_channels`` channels
    at the image's (padded) resolution.

    Parameters
    ----------
    width : int, default=128
        Channels in every convolution of the encoder and decoder.
    depth : int, default=5
        Number of scales. Images are padded internally to a multiple of
        ``2**depth`` and the output is cropped back.
    skip_channels : int, default=4
        Channels of each skip connection; 0 removes the skip connections
        (a plain hourglass).
    input_channels : int, default=32
        Channels of the input code ``z``.
    input_scale : float, default=0.1
        The code is drawn uniformly from ``[0, input_scale)``.
    upsample : {"bilinear", "nearest"}, default="bilinear"
        Upsampling mode of the decoder.
    output_activation : {"sigmoid", "tanh", "relu", "softplus"} or None, default="sigmoid"
        Activation of the head. The sigmoid keeps outputs in ``[0, 1]``.

    Examples
    --------
    >>> from skdip.generators import SkipNetwork
    >>> net = SkipNetwork(width=16, depth=3).build((20, 24), 3, seed=0)
    >>> net(net.input).shape
    torch.Size([1, 3, 20, 24])
    """

    def __init__(
        self,
        width: Int = 128,
        depth: Int = 5,
        skip_channels: Int = 4,
        input_channels: Int = 32,
        input_scale: Float = 0.1,
        upsample: str = "bilinear",
        output_activation: str | None = "sigmoid",
    ):
        self.width = width
        self.depth = depth
        self.skip_channels = skip_channels
        self.input_channels = input_channels
        self.input_scale = input_scale
        self.upsample = upsample
        self.output_activation = output_activation

    def _build(self, out_shape: tuple[int, int], out_channels: int) -> GeneratorNetwork:
        return _SkipNetworkModule(validated_skip_settings(self), out_shape, out_channels)

    def _check_output_shape(self, out_shape: tuple[int, int]) -> None:
        check_output_canvas(self, out_shape)


def validated_skip_settings(cfg: BaseGenerator) -> BaseGenerator:
    """A validated copy of a skip-architecture configuration (``SkipNetwork`` and
    the ``DeepRandomProjector``): numpy integers from a grid become ints, bad
    values fail here, named with the configuration's class, with scikit-learn's
    InvalidParameterError (a ValueError and a TypeError), as an estimator's do."""
    owner = type(cfg).__name__
    error = InvalidParameterError
    out = copy.copy(cfg)
    out.width = check_int(cfg.width, f"{owner}.width", 1, error=error)
    out.depth = check_int(cfg.depth, f"{owner}.depth", 1, error=error)
    out.input_channels = check_int(cfg.input_channels, f"{owner}.input_channels", 1, error=error)
    out.skip_channels = check_int(cfg.skip_channels, f"{owner}.skip_channels", 0, error=error)
    out.input_scale = check_number(
        cfg.input_scale, f"{owner}.input_scale", 0, exclusive_minimum=True, error=error
    )
    if cfg.upsample not in ("bilinear", "nearest"):
        raise error(f"{owner}.upsample must be 'bilinear' or 'nearest', got {cfg.upsample!r}")
    # Here with the others, not when the head is made (after the canvas is sized).
    check_output_activation(cfg.output_activation, owner)
    return out


def check_output_canvas(cfg: BaseGenerator, out_shape: tuple[int, int]) -> None:
    """Refuse, before any fit, an image whose canvas under ``cfg.depth`` is far too large."""
    if isinstance(cfg.depth, numbers.Integral) and not isinstance(cfg.depth, bool):
        check_canvas(int(cfg.depth), tuple(int(s) for s in out_shape), type(cfg).__name__)
