"""MaxPooling3D, AveragePooling3D and the 3D global poolings.

The 1D/2D rules in :mod:`migrate.rules.pooling` are written for any number
of spatial dims; these register them for volumes.
"""
from __future__ import annotations

from .pooling import _global, _pool, _pool_layout
from .registry import rule


@rule("MaxPooling3D", "MaxPool3D", prefers=_pool_layout)
def max_pool3d(call):
    return _pool(call, 3, "max")


@rule("AveragePooling3D", "AvgPool3D", prefers=_pool_layout)
def avg_pool3d(call):
    return _pool(call, 3, "avg")


@rule("GlobalAveragePooling3D", "GlobalAvgPool3D")
def global_avg_pool3d(call):
    return _global(call, "avg")


@rule("GlobalMaxPooling3D", "GlobalMaxPool3D")
def global_max_pool3d(call):
    return _global(call, "max")
