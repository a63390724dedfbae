"""Identity, Dot, UnitNormalization and GroupNormalization."""
from __future__ import annotations

import numpy as np

from ..layout import identity
from .base import Emit, Out, Transformed, chain
from .common import as_f32, kwargs_code, lit, move_axis_to
from .registry import rule


@rule("Identity", masks="propagate")
def identity_layer(call):
    x = call.inputs[0]
    return Emit([Out([x.expr], x.shape, x.layout, x.dtype)])


def _axes(value, rank):
    values = value if isinstance(value, (list, tuple)) else [value]
    return sorted({int(a) % rank for a in values})


@rule("UnitNormalization", masks="propagate")
def unit_normalization(call):
    """x / ||x||_2 over ``axis``: Keras 3 takes ``x * min(rsqrt(sum x^2),
    1e12)``, which is ``F.normalize`` with ``eps=1e-12``."""
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    axes = _axes(call.get("axis", -1), x.rank)
    if 0 in axes:
        call.refuse("axis", "cannot normalise over the batch axis")
    dims = sorted(x.layout.torch_axis(a) for a in axes)
    if len(dims) == 1:
        d = -1 if dims[0] == x.rank - 1 else dims[0]
        code = f"F.normalize({x.expr}, dim={d}, eps=1e-12)"
    else:
        code = (f"{x.expr} * torch.clamp(torch.rsqrt(torch.square({x.expr})"
                f".sum(dim={lit(tuple(dims))}, keepdim=True)), max=1e12)")
    return Emit([Out(chain(code), x.shape, x.layout, x.dtype)])


def _dot_axes(call, xs):
    axes = call.get("axes", -1)
    if isinstance(axes, int):
        return [axes % x.rank for x in xs]
    if len(axes) != 2 or not all(isinstance(a, int) for a in axes):
        call.refuse(f"axes={axes!r}", "one axis per input")
    return [a % x.rank for a, x in zip(axes, xs)]


@rule("Dot")
def dot(call):
    """Keras ``batch_dot``: contract one axis of each input, keep the batch
    axis, then the rest of x, then the rest of y; a rank-1 result gets a
    trailing axis of size 1."""
    if len(call.inputs) != 2:
        call.refuse("inputs", "Dot takes exactly two inputs")
    for i, x in enumerate(call.inputs):
        if not x.layout.is_identity:
            call.want(i, identity(x.rank))
    a, b = call.inputs
    ax, bx = _dot_axes(call, [a, b])
    if 0 in (ax, bx):
        call.refuse("axes", "cannot contract the batch axis")
    ea, eb = a.expr, b.expr
    if call.get("normalize", False):
        ea = f"F.normalize({ea}, dim={ax}, eps=1e-12)"
        eb = f"F.normalize({eb}, dim={bx}, eps=1e-12)"
    if a.rank == b.rank == 2:
        code = f"({ea} * {eb}).sum(dim=1, keepdim=True)"
        return Emit([Out(chain(code), (a.shape[0], 1), identity(2))])
    letters = "bcdefghijklmnopqrstuvwxyz"
    la = ["a"] + list(letters[1:a.rank])
    lb = ["a"] + list(letters[a.rank:a.rank + b.rank - 1])
    lb[bx] = la[ax]
    out = la[:1] + [c for i, c in enumerate(la) if i not in (0, ax)] + [
        c for i, c in enumerate(lb) if i not in (0, bx)]
    equation = f"{''.join(la)},{''.join(lb)}->{''.join(out)}"
    shape = [a.shape[0]] + [d for i, d in enumerate(a.shape)
                            if i not in (0, ax)] + [
        d for i, d in enumerate(b.shape) if i not in (0, bx)]
    code = f'torch.einsum("{equation}", {ea}, {eb})'
    if len(shape) == 1:
        code += "[:, None]"
        shape.append(1)
    return Emit([Out(chain(code), tuple(shape), identity(len(shape)))])


def _gn_variables(cfg):
    return (["gamma"] if cfg.get("scale", True) else []) + (
        ["beta"] if cfg.get("center", True) else [])


@rule("GroupNormalization", variables=_gn_variables, masks="propagate")
def group_norm(call):
    """nn.GroupNorm: the channel axis moves to torch dim 1; statistics over
    each group's channels and every other non-batch axis, as Keras."""
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    axis = call.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            call.refuse(f"axis={axis}", "one channel axis")
        axis = axis[0]
    axis = int(axis) % x.rank
    if axis == 0:
        call.refuse("axis=0", "the batch axis")
    if x.layout.torch_axis(axis) != 1:
        x = call.want(0, move_axis_to(x.layout, axis, 1))
    channels = x.shape[axis]
    if channels is None:
        call.refuse("axis", "the channel axis must have a known size")
    groups = int(call.get("groups", 32))
    if groups == -1:
        groups = channels
    if channels % groups:
        call.refuse(f"groups={groups}", f"does not divide {channels}")
    scale = bool(call.get("scale", True))
    center = bool(call.get("center", True))
    w = call.weights(_gn_variables(call.config))
    eps = float(call.get("epsilon", 1e-3))

    def take(name, fill):
        if name in w:
            return Transformed(lambda a: as_f32(a.reshape(-1)), [w[name]],
                               "flattened")
        return Transformed(lambda: np.full(channels, fill, np.float32), [],
                           f"constant {fill} (no Keras variable)")

    affine = scale or center
    state, init = {}, []
    if affine:
        state = {"weight": take("gamma", 1.0), "bias": take("beta", 0.0)}
    if affine and not scale:
        init.append("self.{attr}.weight.requires_grad_(False)"
                    "  # Keras: scale=False")
    if affine and not center:
        init.append("self.{attr}.bias.requires_grad_(False)"
                    "  # Keras: center=False")
    args = kwargs_code(eps=lit(eps), affine=None if affine else "False")
    module = f"nn.GroupNorm({groups}, {channels}, {args})"
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)], module=module, state=state,
                init_lines=init)
