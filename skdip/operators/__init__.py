"""Forward operators ``f``: the known measurement models that skdip inverts."""

from ._base import ForwardOperator, Identity
from ._convolution import Convolution
from ._function import FunctionOperator
from ._mask import PixelMask
from ._resample import Downsample, downsampling_kernel

__all__ = [
    "Convolution",
    "Downsample",
    "ForwardOperator",
    "FunctionOperator",
    "Identity",
    "PixelMask",
    "downsampling_kernel",
]
