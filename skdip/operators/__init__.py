"""Forward operators ``f``: the known measurement models that skdip inverts."""

from ._base import ForwardOperator, Identity
from ._convolution import Convolution
from ._fourier import FourierMagnitude, make_phase_masks
from ._function import FunctionOperator
from ._kspace import KSpaceSampling, channels_to_kspace, kspace_to_channels
from ._mask import PixelMask
from ._resample import Downsample, downsampling_kernel

__all__ = [
    "Convolution",
    "Downsample",
    "ForwardOperator",
    "FourierMagnitude",
    "FunctionOperator",
    "Identity",
    "KSpaceSampling",
    "PixelMask",
    "channels_to_kspace",
    "downsampling_kernel",
    "kspace_to_channels",
    "make_phase_masks",
]
