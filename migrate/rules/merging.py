"""Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate.

Keras masks (measured against both Keras versions): the output of a merge
is masked where Keras 3 finds every input masked, provided each input has a
mask (else it has none), and where Keras 2 finds any masked input masked.
Keras 3 also changes values: Multiply counts a masked step as 1 (and gives
0 where every input is masked), Maximum and Minimum take the unmasked
inputs only; Keras 2 merges the values as they are.
"""
from __future__ import annotations

from ..layout import identity
from .base import IN, Emit, Out, chain
from .registry import rule

MASKED_MULTIPLY = '''\
def masked_multiply(inputs, masks):
    """Keras 3 Multiply of inputs with Keras masks (None: unmasked): a
    masked step counts as 1, and where every input has a mask, the steps
    masked in all of them are 0."""
    out, keep = None, None
    for x, mask in zip(inputs, masks):
        if mask is not None:
            mask = mask.unsqueeze(-1)
            x = torch.where(mask, x, 1.0)
            keep = mask if keep is None else keep | mask
        out = x if out is None else out * x
    if all(mask is not None for mask in masks):
        out = torch.where(keep, out, 0.0)
    return out
'''

MASKED_MERGE = '''\
def masked_merge(op, inputs, masks):
    """Keras 3 Maximum / Minimum (``op``) of inputs with Keras masks (None:
    unmasked), input by input as Keras does it: a masked step takes the
    value merged so far, and is replaced where that is masked itself."""
    out = inputs[0]
    keep = None if masks[0] is None else masks[0].unsqueeze(-1)
    for x, mask in zip(inputs[1:], masks[1:]):
        mask = None if mask is None else mask.unsqueeze(-1)
        if mask is not None:
            x = torch.where(mask, x, out)
        if keep is not None:
            out = torch.where(keep, out, x)
        keep = None if mask is None or keep is None else keep | mask
        out = op(out, x)
    return out
'''


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


def _merge_mask(call, joiner_k3: str = " | ") -> dict:
    """The output mask (``Out`` keywords) of a merge (see module doc)."""
    xs = call.inputs
    masks = list(dict.fromkeys(x.mask for x in xs if x.masked))
    if not masks or (call.keras_major >= 3
                     and not all(x.masked for x in xs)):
        return {"masked": False}
    joiner = joiner_k3 if call.keras_major >= 3 else " & "
    return {"mask": joiner.join(masks)}


def _elementwise(call, joiner: str | None = None, fn: str | None = None,
                 mean: bool = False, helper: str | None = None):
    """Merge the inputs with ``joiner`` or ``fn``; ``helper`` is the
    masked_* helper Keras 3 needs when an input is masked."""
    masked = helper and call.keras_major >= 3 and any(
        x.masked for x in call.inputs)
    if masked:
        for i, x in enumerate(call.inputs):
            if not x.layout.is_identity:
                call.want(i, identity(x.rank))
    xs, layout = _same_layout(call)
    exprs = [x.expr for x in xs]
    helpers = {}
    if masked:
        masks = ", ".join(x.mask if x.masked else "None" for x in xs)
        args = f"[{', '.join(exprs)}], [{masks}]"
        if helper == "masked_multiply":
            code = f"masked_multiply({args})"
            helpers[helper] = MASKED_MULTIPLY
        else:
            code = f"masked_merge({fn}, {args})"
            helpers[helper] = MASKED_MERGE
    elif fn:
        code = exprs[0]
        for e in exprs[1:]:
            code = f"{fn}({code}, {e})"
    else:
        code = f" {joiner} ".join(exprs)
    if mean:
        code = f"({code}) / {len(exprs)}"
    shape = _broadcast([x.shape for x in xs])
    return Emit([Out(chain(code), shape, layout, xs[0].dtype,
                     **_merge_mask(call))], helpers=helpers)


@rule("Add", masks="consume")
def add(call):
    return _elementwise(call, "+")


@rule("Subtract", masks="consume")
def subtract(call):
    if len(call.inputs) != 2:
        call.refuse("inputs", "Subtract takes exactly two inputs")
    return _elementwise(call, "-")


@rule("Multiply", masks="consume")
def multiply(call):
    return _elementwise(call, "*", helper="masked_multiply")


@rule("Average", masks="consume")
def average(call):
    return _elementwise(call, "+", mean=True)


@rule("Maximum", masks="consume")
def maximum(call):
    return _elementwise(call, fn="torch.maximum", helper="masked_merge")


@rule("Minimum", masks="consume")
def minimum(call):
    return _elementwise(call, fn="torch.minimum", helper="masked_merge")


@rule("Concatenate", masks="consume")
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
    if axis == xs[0].rank - 1 or not any(x.masked for x in xs):
        mask = _merge_mask(call)
    else:  # along the steps: the masks too (unmasked inputs: all kept)
        parts = [x.mask if x.masked else
                 f"torch.ones_like({IN(i)}[..., 0], dtype=torch.bool)"
                 for i, x in enumerate(xs)]
        mask = {"mask": f"torch.cat([{', '.join(parts)}], dim={axis})"}
    return Emit([Out(chain(code), tuple(shape), layout, xs[0].dtype,
                     **mask)])
