"""AdaptiveAverage/AdaptiveMaxPooling1D/2D/3D (Keras 3).

Keras splits each spatial axis of length ``n`` into ``out`` windows
``[floor(i * n / out), ceil((i + 1) * n / out))``, as torch's adaptive
pooling does, so they map onto ``F.adaptive_{avg,max}_pool{1,2,3}d`` on the
channels-first tensor.  The spatial sizes must be known (Keras requires
them too).
"""
from __future__ import annotations

from .base import Emit, Out, chain
from .common import ntuple, short, spatial_axes
from .pooling import _pool_layout
from .registry import rule


def _adaptive(call, nd: int, kind: str):
    fmt = call.get("data_format", "channels_last") or "channels_last"
    x = call.want(0, _pool_layout(call.config, call.inputs[0].rank))
    size = ntuple(call.get("output_size"), nd, "output_size")
    axes = spatial_axes(x.rank, fmt)
    if any(x.shape[a] is None for a in axes):
        call.refuse("input size", "adaptive pooling needs known spatial "
                    "sizes (as Keras does)")
    shape = list(x.shape)
    for a, s in zip(axes, size):
        shape[a] = s
    code = f"F.adaptive_{kind}_pool{nd}d({x.expr}, {short(size)})"
    return Emit([Out(chain(code), tuple(shape), x.layout)])


def _register(nd: int, kind: str, name: str):
    def convert(call):
        return _adaptive(call, nd, kind)
    convert.__name__ = f"adaptive_{kind}_pool{nd}d"
    convert.__doc__ = f"``F.adaptive_{kind}_pool{nd}d``"
    return rule(name, prefers=_pool_layout)(convert)


for _nd in (1, 2, 3):
    _register(_nd, "avg", f"AdaptiveAveragePooling{_nd}D")
    _register(_nd, "max", f"AdaptiveMaxPooling{_nd}D")
