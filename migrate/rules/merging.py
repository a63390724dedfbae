"""Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate."""
from __future__ import annotations

from ..layout import identity
from .base import Emit, Out, chain
from .registry import rule


def _same_layout(call):
    """All inputs in the first input's layout (a flattened layout only when
    every input shares it)."""
    xs = call.inputs
    ranks = {x.rank for x in xs}
    if len(ranks) != 1:
        call.refuse("inputs", f"inputs of different ranks {sorted(ranks)}")
    target = xs[0].layout
    if target.flat is not None and any(x.layout != target for x in xs):
        target = identity(xs[0].rank)
    for i, x in enumerate(xs):
        if x.layout != target:
            call.want(i, target)
    return call.inputs, target


def _broadcast(shapes):
    out = []
    for dims in zip(*shapes):
        known = [d for d in dims if d is not None and d != 1]
        if known:
            out.append(known[0])
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _refuse_masked(call):
    """Keras 3 Multiply/Maximum/Minimum change values at masked steps
    (measured: 1.3e-3 and 2e-2 off a plain product/maximum); not converted
    yet, so refuse rather than approximate."""
    if any(x.masked for x in call.inputs):
        call.refuse("mask", f"{call.layer.class_name} of masked inputs "
                    "(mask_zero/Masking) is not supported yet")


def _elementwise(call, joiner: str | None = None, fn: str | None = None,
                 mean: bool = False):
    xs, layout = _same_layout(call)
    exprs = [x.expr for x in xs]
    if fn:
        code = exprs[0]
        for e in exprs[1:]:
            code = f"{fn}({code}, {e})"
    else:
        code = f" {joiner} ".join(exprs)
    if mean:
        code = f"({code}) / {len(exprs)}"
    shape = _broadcast([x.shape for x in xs])
    return Emit([Out(chain(code), shape, layout, xs[0].dtype)])


@rule("Add", masks="propagate")
def add(call):
    return _elementwise(call, "+")


@rule("Subtract", masks="propagate")
def subtract(call):
    if len(call.inputs) != 2:
        call.refuse("inputs", "Subtract takes exactly two inputs")
    return _elementwise(call, "-")


@rule("Multiply", masks="consume")
def multiply(call):
    _refuse_masked(call)
    return _elementwise(call, "*")


@rule("Average", masks="propagate")
def average(call):
    return _elementwise(call, "+", mean=True)


@rule("Maximum", masks="consume")
def maximum(call):
    _refuse_masked(call)
    return _elementwise(call, fn="torch.maximum")


@rule("Minimum", masks="consume")
def minimum(call):
    _refuse_masked(call)
    return _elementwise(call, fn="torch.minimum")


@rule("Concatenate", masks="propagate")
def concatenate(call):
    xs = call.inputs
    if any(x.layout.flat is not None for x in xs):
        for i, x in enumerate(xs):
            if x.layout.flat is not None:
                call.want(i, identity(x.rank))
    xs, layout = _same_layout(call)
    axis = int(call.get("axis", -1)) % xs[0].rank
    dim = layout.torch_axis(axis)
    dim_code = -1 if dim == xs[0].rank - 1 else dim
    shape = list(xs[0].shape)
    sizes = [x.shape[axis] for x in xs]
    shape[axis] = None if None in sizes else sum(sizes)
    code = f"torch.cat([{', '.join(x.expr for x in xs)}], dim={dim_code})"
    return Emit([Out(chain(code), tuple(shape), layout, xs[0].dtype)])
