"""Forward operators ``f``: the known measurement models that skdip inverts."""

from ._base import ForwardOperator, Identity

__all__ = ["ForwardOperator", "Identity"]
