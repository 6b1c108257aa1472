"""The Deep Random Projector: a frozen random network whose input code is fitted.

Li et al. (CVPR 2023) observed that most of the Deep Image Prior's effect survives
when the convolution weights stay at their random initial values and only the
input code (and the BatchNorm scales and shifts) is optimised, and that a shallow
network then reaches its quality peak in far fewer steps. The network is a random
projection of the code onto images; the code, at full resolution, carries the
picture.
"""

from __future__ import annotations

import torch
from torch import nn

from .._typing import Float, Int
from ._base import (
    BaseGenerator,
    GeneratorNetwork,
    center_crop,
    output_activation,
)
from ._skip import check_canvas, check_output_canvas, skip_body, validated_skip_settings

__all__ = ["DeepRandomProjector"]

_OWNER = "DeepRandomProjector"


class _RandomProjectorModule(GeneratorNetwork):
    def __init__(self, cfg: DeepRandomProjector, out_shape: tuple[int, int], out_channels: int):
        super().__init__()
        self.out_shape = out_shape
        self.out_channels = out_channels
        h, w = check_canvas(cfg.depth, out_shape, _OWNER)
        # A parameter, not a buffer: the code is what the fit changes. It still goes
        # by ``input``, so every model that perturbs or reads the code finds it.
        self.input = nn.Parameter(torch.randn(1, cfg.input_channels, h, w) * cfg.input_scale)
        # Normalising the code keeps its scale (which Adam would otherwise drift)
        # from setting the operating point of the frozen layers.
        self.input_norm = nn.BatchNorm2d(cfg.input_channels)
        self.body = skip_body(
            cfg.input_channels, cfg.width, cfg.skip_channels, cfg.depth, cfg.upsample
        )
        self.head = nn.Sequential(
            nn.Conv2d(cfg.width, out_channels, 1), output_activation(cfg.output_activation)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                for weight in module.parameters():
                    weight.requires_grad_(False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return center_crop(self.head(self.body(self.input_norm(z))), self.out_shape)


class DeepRandomProjector(BaseGenerator):
    """A shallow skip network with frozen random weights; the input code is fitted.

    The architecture is :class:`SkipNetwork`'s with ``depth`` scales (one by
    default), preceded by a BatchNorm of the input code. Every convolution keeps
    its random initial weights and biases; the fit changes only the input code
    (Gaussian, ``N(0, input_scale**2)``, at the image's padded resolution) and
    the scales and shifts of the BatchNorm layers. It usually reaches its best
    estimate in far fewer steps than the full Deep Image Prior, but its peak is
    lower unless an explicit prior is added: the method's authors pair it with
    a total-variation penalty, the square root of the mean squared error as the
    loss, and a learning rate of 0.1 for denoising, without input noise::

        DIPDenoiser(generator="drp", lr=0.1, loss="rmse", reg_noise_std=0,
                    regularizer=TotalVariation(weight=0.45))

    Parameters
    ----------
    width : int, default=64
        Channels of every convolution.
    depth : int, default=1
        Number of scales. Images are padded internally to a multiple of
        ``2**depth`` and the output is cropped back.
    skip_channels : int, default=4
        Channels of each skip connection; 0 removes them.
    input_channels : int, default=3
        Channels of the input code.
    input_scale : float, default=0.1
        Standard deviation of the initial code.
    upsample : {"bilinear", "nearest"}, default="bilinear"
        Upsampling mode of the decoder.
    output_activation : {"sigmoid", "tanh", "relu", "softplus"} or None, default="sigmoid"
        Activation of the head.

    See Also
    --------
    SkipNetwork : the same architecture with every weight fitted and a fixed code.

    Notes
    -----
    The built network's ``input`` is an ``nn.Parameter`` rather than a buffer,
    so :meth:`GeneratorNetwork.n_parameters` counts the code: for a 64x64 image
    with the defaults, 12,288 code values and 662 BatchNorm scales and shifts.
    Perturbing the code each step (``reg_noise_std``) is allowed, but the
    recipe above does without it. Without a ``regularizer`` the estimators
    warn: the network then reaches the noise within a few hundred steps, and
    the running variance keeps falling as it does.

    Examples
    --------
    >>> from skdip.generators import DeepRandomProjector
    >>> net = DeepRandomProjector(width=8).build((10, 13), 3, seed=0)
    >>> tuple(net.input.shape), net.input.requires_grad
    ((1, 3, 10, 14), True)
    >>> net(net.input).shape
    torch.Size([1, 3, 10, 13])
    """

    needs_explicit_prior = True

    def __init__(
        self,
        width: Int = 64,
        depth: Int = 1,
        skip_channels: Int = 4,
        input_channels: Int = 3,
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
        return _RandomProjectorModule(validated_skip_settings(self), out_shape, out_channels)

    def _check_output_shape(self, out_shape: tuple[int, int]) -> None:
        check_output_canvas(self, out_shape)
