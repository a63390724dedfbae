"""More ops on symbolic tensors: cumulative sums and products, products,
variances, log-sum-exp, arg-max/min, flips, norms, stacking, tiling,
constant padding and einsum, for Keras 3 op nodes and tf.keras
``TFOpLambda`` layers alike.

They extend the tables of :mod:`migrate.rules.ops` (same reading of calls,
same whitelist: a symbol or option not listed is refused by name).  Ops
along axes keep their input's layout and remap the axes; stack, tile, pad
and einsum work in Keras's own axis order.
"""
from __future__ import annotations

import re

from ..layout import identity
from .base import Emit, Out, chain
from .common import lit
from .ops import (IMPLEMENTATIONS, K3_OPTIONAL, K3_VARIADIC, TF_FIXES,
                  _K3_OPTIONS, _TF, _UNARY, _UNARY_CODE, Op, _axes, _dim_code,
                  _dims, _plain_value, _single, _tensor_refs, _tf, _unflat,
                  elementwise, keras_op, reduced)
from .registry import rule

# -- tables -----------------------------------------------------------------
_UNARY_CODE.update({
    "log1p": "torch.log1p({})", "expm1": "torch.expm1({})",
    "log2": "torch.log2({})", "log10": "torch.log10({})",
    "sinh": "torch.sinh({})", "cosh": "torch.cosh({})",
    "tan": "torch.tan({})", "arctan": "torch.atan({})",
    "trunc": "torch.trunc({})", "softsign": "F.softsign({})",
    "log_sigmoid": "F.logsigmoid({})",
})
_NEW_UNARY = {"Log1p": "log1p", "Expm1": "expm1", "Log2": "log2",
              "Log10": "log10", "Sinh": "sinh", "Cosh": "cosh", "Tan": "tan",
              "Arctan": "arctan", "Trunc": "trunc", "Softsign": "softsign",
              "LogSigmoid": "log_sigmoid"}
_UNARY.update(_NEW_UNARY)
_NEW_OPTIONS = {
    "Cumsum": ("cumsum", {"axis": None}),
    "Cumprod": ("cumprod", {"axis": None}),
    "Prod": ("prod", {"axis": None, "keepdims": False}),
    "Var": ("var", {"axis": None, "keepdims": False}),
    "Std": ("std", {"axis": None, "keepdims": False}),
    "Logsumexp": ("logsumexp", {"axis": None, "keepdims": False}),
    "Argmax": ("argmax", {"axis": None, "keepdims": False}),
    "Argmin": ("argmin", {"axis": None, "keepdims": False}),
    "Flip": ("flip", {"axis": None}),
    "Norm": ("norm", {"ord": None, "axis": None, "keepdims": False}),
    "Stack": ("stack", {"axis": 0}),
    "Tile": ("tile", {"repeats": None}),
    "Pad": ("pad", {"pad_width": None, "mode": "constant"}),
    "Einsum": ("einsum", {"subscripts": None}),
    "Split": ("split", {"indices_or_sections": None, "axis": 0}),
}
_K3_OPTIONS.update(_NEW_OPTIONS)
_MODULES = {
    "numpy": ["Log1p", "Expm1", "Log2", "Log10", "Sinh", "Cosh", "Tan",
              "Arctan", "Trunc", "Cumsum", "Cumprod", "Prod", "Var", "Std",
              "Argmax", "Argmin", "Flip", "Stack", "Tile", "Pad", "Einsum",
              "Split"],
    "nn": ["Softsign", "LogSigmoid"],
    "math": ["Logsumexp"],
    "linalg": ["Norm"],
}

_tf("math.log1p log1p", "log1p")
_tf("math.expm1 expm1", "expm1")
_tf("math.sinh sinh", "sinh")
_tf("math.cosh cosh", "cosh")
_tf("math.tan tan", "tan")
_tf("math.atan atan", "arctan")
_tf("math.softsign nn.softsign", "softsign")
_tf("math.log_sigmoid", "log_sigmoid")
_tf("math.cumsum cumsum", "cumsum",
    {"axis": 0, "exclusive": False, "reverse": False})
_tf("math.cumprod cumprod", "cumprod",
    {"axis": 0, "exclusive": False, "reverse": False})
_tf("math.reduce_prod reduce_prod", "prod",
    {"axis": None, "keepdims": False})
_tf("math.reduce_variance", "var", {"axis": None, "keepdims": False})
_tf("math.reduce_std", "std", {"axis": None, "keepdims": False})
_tf("math.reduce_logsumexp reduce_logsumexp", "logsumexp",
    {"axis": None, "keepdims": False})
_tf("math.argmax argmax", "argmax", {"axis": None, "output_type": None})
_tf("math.argmin argmin", "argmin", {"axis": None, "output_type": None})
_tf("reverse", "flip", {"axis": None})
_tf("norm linalg.norm compat.v1.norm", "norm",
    {"ord": "euclidean", "axis": None, "keepdims": False})
_tf("stack", "stack", {"axis": 0})
_tf("tile", "tile", {"multiples": None})
_tf("pad compat.v1.pad", "pad",
    {"paddings": None, "mode": "CONSTANT", "constant_values": 0})


def _tf_options(op: Op) -> Op:
    """tf.keras spellings of the options, as the Keras 3 ones."""
    o = op.options
    if "multiples" in o:
        o["repeats"] = o.pop("multiples")
    if "paddings" in o:
        o["pad_width"] = o.pop("paddings")
        o["mode"] = str(o["mode"]).lower()
    if op.name in ("argmax", "argmin"):
        o.pop("output_type", None)
        if o.get("axis") is None:  # tf.math.argmax's default
            o["axis"] = 0
    if op.name == "norm" and o.get("ord") == "euclidean":
        o["ord"] = None
    return op


# -- implementations ----------------------------------------------------------
def _one_axis(call, op: Op, x) -> int:
    axis = _plain_value(op.options.get("axis"))
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if not isinstance(axis, int):
        call.refuse(f"axis={axis!r}", f"{op.name} along one given axis "
                    "(Keras flattens the tensor for axis=None)")
    return int(axis) % x.rank


def cumulative(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    for flag in ("exclusive", "reverse"):
        if op.options.get(flag):
            call.refuse(f"{flag}=True", "not supported")
    dim = x.layout.torch_axis(_one_axis(call, op, x))
    fn = "cumsum" if op.name == "cumsum" else "cumprod"
    return Emit([Out(chain(f"torch.{fn}({x.expr}, dim={dim})"), x.shape,
                     x.layout, x.dtype)])


def reduce_more(call, op: Op) -> Emit:
    """prod (one axis at a time in torch), var and std (population, as
    numpy), logsumexp."""
    x = _unflat(call, _single(call, op))
    keep = bool(op.options.get("keepdims"))
    axis = _plain_value(op.options.get("axis"))
    axes = list(range(x.rank)) if axis is None or axis == [] else \
        _axes(axis, x.rank)
    dims = _dims(x, axes)
    kd = ", keepdim=True" if keep else ""
    if op.name == "prod":
        if len(dims) != 1:
            call.refuse(f"axis={axis!r}", "prod over one axis")
        code = f"{x.expr}.prod(dim={dims[0]}{kd})"
    elif op.name in ("var", "std"):
        code = f"{x.expr}.{op.name}(dim={_dim_code(dims)}, correction=0{kd})"
    else:
        code = f"torch.logsumexp({x.expr}, dim={_dim_code(dims)}{kd})"
    shape, layout = reduced(x, axes, keep)
    return Emit([Out(chain(code), shape, layout, x.dtype)])


def arg_reduce(call, op: Op) -> Emit:
    """argmax / argmin along one axis (the first of equal values, as
    Keras); int64 where Keras gives int32."""
    x = _unflat(call, _single(call, op))
    axis = _one_axis(call, op, x)
    keep = bool(op.options.get("keepdims"))
    code = (f"{x.expr}.{op.name}(dim={x.layout.torch_axis(axis)}"
            f"{', keepdim=True' if keep else ''})")
    shape, layout = reduced(x, [axis], keep)
    return Emit([Out(chain(code), shape, layout, "int64")])


def flip(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    axis = _plain_value(op.options.get("axis"))
    axes = list(range(x.rank)) if axis is None else _axes(axis, x.rank)
    code = f"torch.flip({x.expr}, {lit(tuple(_dims(x, axes)))})"
    return Emit([Out(chain(code), x.shape, x.layout, x.dtype)])


def norm(call, op: Op) -> Emit:
    """The 2-norm over the given axes (Frobenius for two; ``ord=None``), or
    a p-norm over one axis."""
    x = _unflat(call, _single(call, op))
    keep = bool(op.options.get("keepdims"))
    axis = _plain_value(op.options.get("axis"))
    order = _plain_value(op.options.get("ord"))
    axes = list(range(x.rank)) if axis is None else _axes(axis, x.rank)
    if order is not None and (len(axes) != 1 or isinstance(order, bool)
                              or not isinstance(order, (int, float))):
        call.refuse(f"ord={order!r}", "a numeric ord over one axis, or "
                    "ord=None")
    p = "" if order is None else f", ord={lit(order)}"
    code = (f"torch.linalg.vector_norm({x.expr}{p}, "
            f"dim={_dim_code(_dims(x, axes))}"
            f"{', keepdim=True' if keep else ''})")
    shape, layout = reduced(x, axes, keep)
    return Emit([Out(chain(code), shape, layout, x.dtype)])


def _keras_order(call, op: Op) -> list:
    refs = _tensor_refs(op.operands)
    if len(refs) != len(op.operands) or not refs:
        call.refuse("operands", f"{op.name} of tensors only")
    xs = []
    for r in refs:
        x = call.inputs[r.i]
        if not x.layout.is_identity:
            x = call.want(r.i, identity(x.rank))
        xs.append(x)
    return xs


def stack(call, op: Op) -> Emit:
    operands = op.operands
    if len(operands) == 1 and isinstance(operands[0], list):
        operands = operands[0]
    xs = _keras_order(call, Op(op.name, list(operands), op.options))
    if len({x.rank for x in xs}) != 1:
        call.refuse("operands", "stack of tensors of one rank")
    axis = int(_plain_value(op.options.get("axis", 0))) % (xs[0].rank + 1)
    if axis == 0:
        call.refuse("axis=0", "stacking along the batch axis changes the "
                    "batch size")
    shape = xs[0].shape[:axis] + (len(xs),) + xs[0].shape[axis:]
    code = f"torch.stack([{', '.join(x.expr for x in xs)}], dim={axis})"
    return Emit([Out(chain(code), shape, identity(len(shape)),
                     xs[0].dtype)])


def tile(call, op: Op) -> Emit:
    (x,) = _keras_order(call, Op(op.name, [op.operands[0]]))
    reps = _plain_value(op.options.get("repeats"))
    if isinstance(reps, int):
        reps = [reps]
    if not isinstance(reps, list) or not all(
            isinstance(r, int) and r >= 1 for r in reps):
        call.refuse(f"repeats={str(reps)[:40]}", "constant positive "
                    "repeats")
    if len(reps) > x.rank:
        call.refuse("repeats", "more repeats than axes")
    reps = [1] * (x.rank - len(reps)) + reps
    if reps[0] != 1:
        call.refuse("repeats", "tiling the batch axis")
    shape = tuple(None if d is None else d * r for d, r in zip(x.shape, reps))
    return Emit([Out(chain(f"{x.expr}.repeat{lit(tuple(reps))}"), shape,
                     x.layout, x.dtype)])


def pad(call, op: Op) -> Emit:
    (x,) = _keras_order(call, Op(op.name, [op.operands[0]]))
    mode = op.options.get("mode", "constant")
    if mode != "constant":
        call.refuse(f"mode={mode!r}", "constant padding only")
    width = _plain_value(op.options.get("pad_width"))
    if isinstance(width, list) and len(width) == 1 and x.rank > 1:
        width = width * x.rank  # numpy broadcasts one pair to every axis
    if not (isinstance(width, list) and len(width) == x.rank and all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, int) and v >= 0 for v in p) for p in width)):
        call.refuse(f"pad_width={str(width)[:40]}", "one constant (before, "
                    "after) pair per axis")
    if width[0] != [0, 0]:
        call.refuse("pad_width", "padding the batch axis")
    value = op.options.get("constant_values")
    if len(op.operands) > 1:
        value = op.operands[1]
    value = _plain_value(value)
    if value is None:
        value = 0
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        call.refuse("constant_values", "a constant number")
    flat = [v for p in reversed(width[1:]) for v in p]
    while flat[-2:] == [0, 0]:
        flat = flat[:-2]
    shape = tuple(None if d is None else d + p[0] + p[1]
                  for d, p in zip(x.shape, width))
    if not flat:
        return Emit([Out([x.expr], shape, x.layout, x.dtype)])
    fill = f", value={lit(float(value))}" if value else ""
    code = f"F.pad({x.expr}, {lit(tuple(flat))}{fill})"
    return Emit([Out(chain(code), shape, x.layout, x.dtype)])


_SUBSCRIPTS = re.compile(r"[a-zA-Z]+(,[a-zA-Z]+)*(->[a-zA-Z]*)?")


def einsum(call, op: Op) -> Emit:
    subscripts = _plain_value(op.options.get("subscripts"))
    if not isinstance(subscripts, str):
        call.refuse("subscripts", "missing")
    eq = subscripts.replace(" ", "")
    if not _SUBSCRIPTS.fullmatch(eq):
        call.refuse(f"subscripts={subscripts[:40]!r}", "letters, commas and "
                    "'->' only (no ellipsis)")
    xs = _keras_order(call, op)
    ins, _, out = eq.partition("->")
    terms = ins.split(",")
    if len(terms) != len(xs) or any(
            len(t) != x.rank for t, x in zip(terms, xs)):
        call.refuse(f"subscripts={subscripts!r}", "do not fit the operands")
    sizes: dict[str, object] = {}
    for t, x in zip(terms, xs):
        for letter, d in zip(t, x.shape):
            sizes[letter] = d if sizes.get(letter) is None else sizes[letter]
    if "->" not in eq:  # numpy's implicit output: letters seen once
        out = "".join(sorted(c for c in sizes if ins.count(c) == 1))
    if len(set(out)) != len(out) or any(c not in sizes for c in out):
        call.refuse(f"subscripts={subscripts!r}", "bad output subscripts")
    shape = tuple(sizes[c] for c in out)
    args = ", ".join(x.expr for x in xs)
    code = f"torch.einsum({lit(ins + '->' + out)}, {args})"
    return Emit([Out(chain(code), shape, identity(len(shape)),
                     xs[0].dtype)])


def split(call, op: Op) -> Emit:
    """numpy's split: equal sections or cuts at indices, along a known
    axis; one ``tensor_split`` unpacked into the outputs."""
    x = _unflat(call, _single(call, op))
    axis = _one_axis(call, op, x)
    n = x.shape[axis]
    if axis == 0 or n is None:
        call.refuse(f"axis={axis}", "split along a known non-batch axis")
    cut = _plain_value(op.options.get("indices_or_sections"))
    if isinstance(cut, int) and not isinstance(cut, bool) and cut >= 1:
        if n % cut:
            call.refuse(f"indices_or_sections={cut}",
                        f"{n} does not split into {cut} equal parts")
        bounds = [i * (n // cut) for i in range(cut + 1)]
        arg = str(cut)
    elif isinstance(cut, list) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in cut):
        bounds = [0] + [min(max(i if i >= 0 else i + n, 0), n)
                        for i in cut] + [n]
        arg = lit(tuple(cut))
    else:
        call.refuse(f"indices_or_sections={str(cut)[:40]}",
                    "a constant section count or index list")
    outs = []
    for lo, hi in zip(bounds, bounds[1:]):
        shape = list(x.shape)
        shape[axis] = max(hi - lo, 0)
        outs.append(Out([], tuple(shape), x.layout, x.dtype))
    if len(outs) == 1:  # one part (EdgeNeXt's split=2 heads): x itself
        return Emit([Out(chain(x.expr), x.shape, x.layout, x.dtype)])
    code = f"{x.expr}.tensor_split({arg}, dim={x.layout.torch_axis(axis)})"
    return Emit(outs, multi=[code])


IMPLEMENTATIONS.update({
    "cumsum": cumulative, "cumprod": cumulative, "prod": reduce_more,
    "var": reduce_more, "std": reduce_more, "logsumexp": reduce_more,
    "argmax": arg_reduce, "argmin": arg_reduce, "flip": flip, "norm": norm,
    "stack": stack, "tile": tile, "pad": pad, "einsum": einsum,
    "split": split,
})
for _name in _NEW_UNARY.values():
    IMPLEMENTATIONS[_name] = elementwise
K3_VARIADIC.add("einsum")
K3_OPTIONAL["pad"] = ("x", "constant_values")
TF_FIXES.append(_tf_options)

for _module, _classes in _MODULES.items():
    for _cls in _classes:
        rule(f"keras.src.ops.{_module}.{_cls}", masks="propagate")(keras_op)
assert all(v[0] in IMPLEMENTATIONS for v in _TF.values())
