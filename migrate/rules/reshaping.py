"""Flatten, Reshape, Permute and ZeroPadding1D/2D.

Flatten and Reshape follow Keras's (channels-last) element order.  Flatten of
a channels-first tensor does not move any data: the result is marked as
flattened in torch order and the Dense that follows permutes its kernel rows.
"""
from __future__ import annotations

from ..layout import Layout, channels_first, identity, is_free
from .base import Emit, Out, chain
from .common import lit, spatial_axes
from .registry import rule


def _identity_input(call, i=0):
    x = call.inputs[i]
    if not x.layout.is_identity:
        x = call.want(i, identity(x.rank))
    return x


@rule("Flatten", masks="drop")
def flatten(call):
    x = call.inputs[0]
    if x.rank <= 2:
        return Emit([Out([x.expr], x.shape, x.layout)])
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    size = 1
    for d in x.shape[1:]:
        size = None if (size is None or d is None) else size * d
    # Keras flattens in channels-last order, also for channels_first data.
    if call.get("data_format") == "channels_first":
        q = (0,) + tuple(range(2, x.rank)) + (1,)
    else:
        q = tuple(range(x.rank))
    r = tuple(q.index(p) for p in x.layout.perm)  # torch = E.permute(r)
    out_shape = (x.shape[0], size)
    code = f"{x.expr}.flatten(1)"
    if r == tuple(range(x.rank)):
        return Emit([Out(chain(code), out_shape, identity(2))])
    eshape = tuple(x.shape[p] for p in q)
    if any(d is None for d in eshape[1:]):
        # unknown sizes: put the tensor in Keras order first
        x = call.want(0, Layout(q))
        return Emit([Out(chain(f"{x.expr}.flatten(1)"), out_shape,
                         identity(2))])
    if is_free(Layout(r), identity(x.rank), eshape):
        return Emit([Out(chain(code), out_shape, identity(2))])
    return Emit([Out(chain(code), out_shape,
                     Layout((0, 1), flat=(eshape[1:], r)))])


def _target(call, x):
    target = [int(d) for d in call.get("target_shape")]
    known = [d for d in x.shape[1:]]
    if -1 in target and all(d is not None for d in known):
        total = 1
        for d in known:
            total *= d
        rest = 1
        for d in target:
            if d != -1:
                rest *= d
        target[target.index(-1)] = total // rest
    return target


@rule("Reshape", masks="drop")
def reshape(call):
    x = call.inputs[0]
    # Reshape follows Keras element order: fine on the torch tensor when
    # its element order is Keras's (only size-1 dims moved).
    if x.layout.flat is not None or not is_free(
            x.layout, identity(x.rank), x.shape):
        x = call.want(0, identity(x.rank))
    target = _target(call, x)
    shape = (x.shape[0],) + tuple(None if d == -1 else d for d in target)
    # A channels-first result is free when only size-1 dims move.
    out = identity(len(shape))
    cf = channels_first(len(shape))
    if len(shape) >= 3 and -1 not in target and is_free(out, cf, shape):
        out = cf
    dims = ", ".join(str(d) for d in out.torch_shape(shape)[1:])
    if -1 in target:
        code = f"{x.expr}.flatten(1).unflatten(1, {lit(tuple(target))})"
    else:
        code = f"{x.expr}.reshape(-1, {dims})"
    return Emit([Out(chain(code), shape, out)])


@rule("Permute", masks="drop")
def permute(call):
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    q = (0,) + tuple(int(d) for d in call.get("dims"))
    shape = tuple(x.shape[p] for p in q)
    # result in Keras order: torch_out = torch_in.permute(...)
    dims = tuple(x.layout.perm.index(p) for p in q)
    if dims == tuple(range(x.rank)):
        return Emit([Out([x.expr], shape, identity(x.rank))])
    return Emit([Out(chain(f"{x.expr}.permute{lit(dims)}"), shape,
                     identity(x.rank))])


def _pairs(value, nd):
    """Keras padding config -> [(before, after)] per spatial dim."""
    if isinstance(value, int):
        return [(value, value)] * nd
    value = list(value)
    if nd == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [(value[0], value[1])]
    out = []
    for v in value:
        out.append((v, v) if isinstance(v, int) else (int(v[0]), int(v[1])))
    if len(out) != nd:
        raise ValueError(f"padding {value!r} for {nd} dims")
    return out


def _zero_pad(call, nd, pairs=None):
    """Zero padding of the spatial axes (``pairs``: (before, after) per
    axis; by default the layer's ``padding``)."""
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    fmt = call.get("data_format", "channels_last") or "channels_last"
    pairs = pairs or _pairs(call.get("padding", 1), nd)
    axes = spatial_axes(x.rank, fmt)
    by_dim = {x.layout.torch_axis(a): p for a, p in zip(axes, pairs)}
    first = min(by_dim)
    pad = []
    for d in range(x.rank - 1, first - 1, -1):
        pad += list(by_dim.get(d, (0, 0)))
    shape = list(x.shape)
    for a, (b, e) in zip(axes, pairs):
        shape[a] = None if shape[a] is None else shape[a] + b + e
    return Emit([Out(chain(f"F.pad({x.expr}, {lit(tuple(pad))})"),
                     tuple(shape), x.layout)])


def _pad_layout(cfg, rank):
    if cfg.get("data_format") == "channels_first":
        return identity(rank)
    return channels_first(rank)


@rule("ZeroPadding1D", prefers=_pad_layout)
def zero_padding1d(call):
    return _zero_pad(call, 1)


@rule("ZeroPadding2D", prefers=_pad_layout)
def zero_padding2d(call):
    return _zero_pad(call, 2)
