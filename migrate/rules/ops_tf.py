"""TensorFlow functions that community model code calls on symbolic
tensors in tf.keras (``TFOpLambda``): split, unstack, gather, repeat,
where, reflect padding, bias_add, squared_difference, the euclidean norm,
and ``tf.shape`` with the arithmetic on its pieces that feeds a reshape
or a ``tf.image.resize``.

They extend the tables of :mod:`migrate.rules.ops` (same reading of calls,
same whitelist: a symbol or option not listed is refused by name).

**Shapes.**  ``tf.shape(x)`` is a tuple of Python ints in the port,
``(x.shape[0], 16, 16, 8)`` in Keras's axis order: the sizes the model
file knows are constants, the others (the batch) read from the tensor.
Its pieces and the arithmetic on them (``shape[1] * shape[2]``, a cast,
``** 0.5``) stay Python numbers, folded to a constant when every operand
is known, so a reshape gets plain ints or ``x.shape[0]`` and the port
still exports with a dynamic batch (``torch.export``).  The converter
tracks the value of every such number (:data:`_VALUES`); an op mixing one
with tensors sees it as a constant when it is known.
"""
from __future__ import annotations

import weakref

from ..graph import TensorRef
from ..layout import Layout, channels_first, identity
from .base import HOLE, Emit, Out, chain
from .common import lit
from .ops import (IMPLEMENTATIONS, TF_FIXES, Op, Ref, _align, _axes,
                  _drop_axes, _plain_value, _single, _tensor_refs,
                  _TF_OPERANDS, _tf, _unflat, elementwise)
from .ops_more import _one_axis, split as _split

_tf("shape compat.v1.shape", "shape", {"out_type": "int32"})
_tf("split", "tf_split", {"num_or_size_splits": None, "axis": 0,
                          "num": None})
_tf("unstack", "unstack", {"num": None, "axis": 0})
_tf("gather compat.v1.gather", "gather",
    {"indices": None, "validate_indices": None, "axis": None,
     "batch_dims": 0})
_tf("repeat", "repeat", {"repeats": None, "axis": None})
_tf("where compat.v1.where_v2 where_v2", "where", {"x": None, "y": None})
_tf("math.squared_difference squared_difference", "squared_difference",
    {"y": None})
_tf("math.reduce_euclidean_norm reduce_euclidean_norm", "norm",
    {"axis": None, "keepdims": False})
_tf("nn.bias_add", "bias_add", {"bias": None, "data_format": None})
_tf("einsum linalg.einsum", "tf_einsum")
_TF_OPERANDS.add("x")  # tf.where(condition, x, y)

# translator -> {TensorRef: the static value of a Python-number "tensor"
# (an int, a float, None when unknown, or a tuple of them for a shape)}
_VALUES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_INT = {"int32", "int64", "int16", "int8", "uint8"}


def _table(call) -> dict:
    return _VALUES.setdefault(call._conv, {})


def _value_of(call, i: int):
    """``(True, value)`` when input ``i`` is a Python number or shape
    tuple (value None when unknown), else ``(False, None)``."""
    table = _table(call)
    ref = call.node.inputs[i]
    if ref in table:
        return True, table[ref]
    return False, None


def _record(call, emit: Emit, values: list) -> Emit:
    """Note the static values of ``emit``'s outputs (Python numbers)."""
    table = _table(call)
    for k, (out, v) in enumerate(zip(emit.outputs, values)):
        table[TensorRef(call.node.id, k)] = v
        out.python = True
    return emit


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- tf.shape and Python numbers ------------------------------------------------
def shape(call, op: Op) -> Emit:
    i = _single(call, op)
    x = call.inputs[i]
    if x.layout.flat is not None:
        x = _unflat(call, i)
    parts = [lit(d) if d is not None else
             f"{x.expr}.shape[{x.layout.torch_axis(a)}]"
             for a, d in enumerate(x.shape)]
    code = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    emit = Emit([Out(chain(code), (x.rank,), identity(1), "int32")])
    return _record(call, emit, [tuple(x.shape)])


def _py_getitem(call, op: Op, value) -> Emit:
    expr = call.inputs[_single(call, op)].expr
    key = _plain_value(op.options.get("key"))
    n = len(value)
    if isinstance(key, int) and not isinstance(key, bool):
        if not -n <= key < n:
            call.refuse(f"index {key}", f"out of range for a shape of {n}")
        v = value[key]
        code = lit(v) if v is not None else f"{expr}[{key}]"
        return _record(call, Emit([Out(chain(code), (), Layout(()),
                                       "int32")]), [v])
    if isinstance(key, dict) and set(key.get("config", key)) <= {
            "start", "stop", "step"}:
        cfg = key.get("config", key)
        s = slice(cfg.get("start"), cfg.get("stop"), cfg.get("step"))
        part = tuple(value[s])
        code = f"{expr}[{_slice_text(s)}]"
        return _record(call, Emit([Out(chain(code), (len(part),),
                                       identity(1), "int32")]), [part])
    call.refuse(f"index {str(key)[:40]}", "an integer or a slice of a shape")


def _slice_text(s: slice) -> str:
    text = ("" if s.start is None else str(s.start)) + ":" + (
        "" if s.stop is None else str(s.stop))
    return text + (f":{s.step}" if s.step is not None else "")


_PY_INFIX = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/",
             "floor_divide": "//", "mod": "%", "power": "**"}
_PY_FOLD = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
            "multiply": lambda a, b: a * b, "divide": lambda a, b: a / b,
            "floor_divide": lambda a, b: a // b, "mod": lambda a, b: a % b,
            "power": lambda a, b: a ** b}


def _py_arith(call, op: Op) -> Emit:
    """Arithmetic on Python numbers only: folded when all are known."""
    vals, codes = [], []
    for v in op.operands:
        if isinstance(v, Ref):
            _, val = _value_of(call, v.i)
            vals.append(val)
            codes.append(call.inputs[v.i].expr)
        else:
            vals.append(_plain_value(v))
            codes.append(lit(_plain_value(v)))
    if op.name in ("negative",):
        vals, codes = [0] + vals, ["0"] + codes
        op = Op("subtract", op.operands, op.options)
    if op.name not in _PY_INFIX or len(vals) != 2:
        call.refuse(op.name, "on a tf.shape piece (only + - * / // % **)")
    if all(_number(v) for v in vals):
        value = _PY_FOLD[op.name](*vals)
        code = lit(value)
    else:
        value = None
        code = f"({codes[0]} {_PY_INFIX[op.name]} {codes[1]})"
    dtype = "float32" if isinstance(value, float) or op.name == "divide" \
        else "int32"
    return _record(call, Emit([Out(chain(code), (), Layout(()), dtype)]),
                   [value])


def _py_cast(call, op: Op, value) -> Emit:
    dtype = op.options.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name", dtype)
    if not isinstance(dtype, str) or not (
            dtype.startswith("float") or dtype in _INT):
        call.refuse(f"dtype={dtype!r}", "a cast of a tf.shape piece to a "
                    "float or int type")
    fn = float if dtype.startswith("float") else int
    if _number(value):
        value = fn(value)
        code = lit(value)
    else:
        code = f"{fn.__name__}({call.inputs[_single(call, op)].expr})"
        value = None
    return _record(call, Emit([Out(chain(code), (), Layout(()), dtype)]),
                   [value])


def _with_python_numbers(impl):
    """``impl`` for ops whose operands may be Python numbers: all of them
    -> Python arithmetic; a known one among tensors -> a constant."""
    def run(call, op: Op) -> Emit:
        refs = _tensor_refs(op.operands)
        py = {r.i: _value_of(call, r.i) for r in refs}
        if not any(is_py for is_py, _ in py.values()):
            return impl(call, op)
        if all(is_py for is_py, _ in py.values()):
            if op.name == "getitem":
                return _py_getitem(call, op, py[refs[0].i][1])
            if op.name == "cast":
                return _py_cast(call, op, py[refs[0].i][1])
            return _py_arith(call, op)
        operands = []
        for v in op.operands:
            if isinstance(v, Ref) and py[v.i][0]:
                value = py[v.i][1]
                if not _number(value):
                    call.refuse("operands", "a tensor op on a tf.shape "
                                "piece that the model file does not know")
                v = value
            operands.append(v)
        return impl(call, Op(op.name, operands, op.options))
    run.__name__ = getattr(impl, "__name__", "op")
    return run


def reshape(call, op: Op) -> Emit:
    """tf.reshape with a shape computed from tf.shape pieces."""
    target = op.options.get("shape")
    if not isinstance(target, (list, tuple)) or not any(
            isinstance(d, Ref) for d in target):
        return _RESHAPE(call, op)
    i = _single(call, Op(op.name, op.operands[:1]))
    x = call.inputs[i]
    if not x.layout.is_identity:
        x = call.want(i, identity(x.rank))
    dims, codes = [], []
    for d in target:
        if isinstance(d, Ref):
            is_py, value = _value_of(call, d.i)
            if not is_py or not (value is None or isinstance(value, int)):
                call.refuse("shape", "a size that is not a tf.shape piece")
            dims.append(value)
            codes.append(lit(value) if value is not None
                         else call.inputs[d.i].expr)
        elif isinstance(d, int) and not isinstance(d, bool):
            dims.append(None if d == -1 else d)
            codes.append(str(d))
        else:
            call.refuse(f"shape entry {d!r}", "an int or a tf.shape piece")
    known = [d for d in dims if d is not None]
    unknown = [k for k, d in enumerate(dims) if d is None]
    total = 1
    for d in x.shape[1:]:
        total = None if total is None or d is None else total * d
    if len(unknown) == 2 and unknown[0] == 0 and total is not None:
        # the batch and one inferred size: the latter is known
        rest = 1
        for d in known:
            rest *= d
        dims[unknown[1]] = total // rest
    shape = tuple(dims)
    return Emit([Out(chain(f"{x.expr}.reshape({', '.join(codes)})"), shape,
                     identity(len(shape)), x.dtype)])


# -- tensor functions -----------------------------------------------------------
def tf_split(call, op: Op) -> Emit:
    """tf.split: a number of equal parts, or the sizes of the parts (one
    may be -1), as numpy's cut indices."""
    x = _unflat(call, _single(call, op))
    axis = _one_axis(call, op, x)
    sizes = _plain_value(op.options.get("num_or_size_splits"))
    n = x.shape[axis]
    if isinstance(sizes, list) and all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
            call.refuse(f"num_or_size_splits={sizes}", "sizes >= 0 with at "
                        "most one -1")
        if -1 in sizes:
            if n is None:
                call.refuse(f"axis={axis}", "split along a known axis")
            sizes = [n - (sum(sizes) + 1) if s == -1 else s for s in sizes]
        if n is not None and sum(sizes) != n:
            call.refuse(f"num_or_size_splits={sizes}",
                        f"the sizes do not add up to {n}")
        cuts, at = [], 0
        for s in sizes[:-1]:
            at += s
            cuts.append(at)
        return _split(call, Op("split", op.operands, {
            "indices_or_sections": cuts, "axis": axis}))
    return _split(call, Op("split", op.operands, {
        "indices_or_sections": sizes, "axis": axis}))


def unstack(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    axis = _one_axis(call, op, x)
    n = x.shape[axis]
    if axis == 0 or n is None:
        call.refuse(f"axis={axis}", "unstack along a known non-batch axis")
    num = op.options.get("num")
    if num is not None and num != n:
        call.refuse(f"num={num}", f"the axis has {n} entries")
    shape = x.shape[:axis] + x.shape[axis + 1:]
    layout = _drop_axes(x.layout, [axis])
    outs = [Out([], shape, layout, x.dtype) for _ in range(n)]
    return Emit(outs, multi=[
        f"{x.expr}.unbind({x.layout.torch_axis(axis)})"])


def gather(call, op: Op) -> Emit:
    """tf.gather with constant indices along one non-batch axis."""
    x = _unflat(call, _single(call, op))
    o = op.options
    if o.get("batch_dims"):
        call.refuse(f"batch_dims={o['batch_dims']!r}", "batch_dims=0 only")
    axis = 0 if o.get("axis") is None else _plain_value(o.get("axis"))
    if not isinstance(axis, int) or axis % x.rank == 0:
        call.refuse(f"axis={axis!r}", "gather along a non-batch axis")
    axis %= x.rank
    n = x.shape[axis]
    idx = _plain_value(o.get("indices"))
    ok = (lambda i: isinstance(i, int) and not isinstance(i, bool)
          and i >= 0 and (n is None or i < n))
    dim = x.layout.torch_axis(axis)
    if ok(idx):
        shape = x.shape[:axis] + x.shape[axis + 1:]
        return Emit([Out(chain(f"{x.expr}.select({dim}, {idx})"), shape,
                         _drop_axes(x.layout, [axis]), x.dtype)])
    if isinstance(idx, list) and idx and all(ok(i) for i in idx):
        index = ", ".join([":"] * dim + ["[" + ", ".join(map(str, idx)) +
                                         "]"])
        shape = x.shape[:axis] + (len(idx),) + x.shape[axis + 1:]
        return Emit([Out(chain(f"{x.expr}[{index}]"), shape, x.layout,
                         x.dtype)])
    call.refuse(f"indices={str(idx)[:40]}", "a constant index or list of "
                "indices in range (TensorFlow fails on others)")


def repeat(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    reps = _plain_value(op.options.get("repeats"))
    if op.options.get("axis") is None:
        call.refuse("axis=None", "repeat along one axis (TensorFlow "
                    "flattens the tensor for axis=None)")
    axis = _one_axis(call, op, x)  # axis 0 too: kecam repeats windows
    if isinstance(reps, list) and len(reps) == 1:
        reps = reps[0]
    if not (isinstance(reps, int) and not isinstance(reps, bool)
            and reps >= 0):
        call.refuse(f"repeats={str(reps)[:40]}", "one constant count")
    shape = list(x.shape)
    shape[axis] = None if shape[axis] is None else shape[axis] * reps
    code = f"{x.expr}.repeat_interleave({reps}, dim=" \
           f"{x.layout.torch_axis(axis)})"
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)])


def squared_difference(call, op: Op) -> Emit:
    emit = elementwise(call, Op("subtract", op.operands))
    emit.outputs[0].steps.append(f"torch.square({HOLE})")
    return emit


def bias_add(call, op: Op) -> Emit:
    fmt = op.options.get("data_format")
    if fmt not in (None, "NHWC", "NWC", "NDHWC", "N...C"):
        call.refuse(f"data_format={fmt!r}", "channels-last bias_add only")
    return elementwise(call, Op("add", [op.operands[0],
                                        op.options.get("bias")]))


def tf_einsum(call, op: Op) -> Emit:
    call.refuse("tf.einsum", "tf.keras records only the first positional "
                "argument of a TFOpLambda call (the equation), so the model "
                "file lost the operands; use keras.layers.EinsumDense or a "
                "custom layer with a rule")


def pad(call, op: Op) -> Emit:
    """Constant padding as ops_more; REFLECT as ``F.pad(mode="reflect")``
    over the trailing torch dims (the layout is chosen so that the padded
    axes are last); SYMMETRIC has no torch mode."""
    mode = str(op.options.get("mode", "constant")).lower()
    if mode == "constant":
        return _PAD(call, op)
    if mode != "reflect":
        call.refuse(f"mode={mode!r}", "constant or reflect padding "
                    "(torch has no symmetric mode)")
    i = _single(call, Op(op.name, op.operands[:1]))
    x = _unflat(call, i)
    width = _plain_value(op.options.get("pad_width"))
    if not (isinstance(width, list) and len(width) == x.rank and all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, int) and v >= 0 for v in p) for p in width)):
        call.refuse(f"paddings={str(width)[:40]}", "one constant (before, "
                    "after) pair per axis")
    if width[0] != [0, 0]:
        call.refuse("paddings", "padding the batch axis")
    padded = {a for a, p in enumerate(width) if p != [0, 0]}
    shape = tuple(None if d is None else d + p[0] + p[1]
                  for d, p in zip(x.shape, width))
    if not padded:
        return Emit([Out([x.expr], shape, x.layout, x.dtype)])
    for a in padded:
        if x.shape[a] is None or max(width[a]) >= x.shape[a]:
            call.refuse("paddings", "reflect padding narrower than the axis")

    def trailing(layout):
        return {layout.perm[j] for j in range(2, x.rank)} >= padded

    if not 3 <= x.rank <= 5:
        call.refuse(f"rank {x.rank}", "reflect padding of rank 3 to 5")
    if not trailing(x.layout):
        for layout in (channels_first(x.rank), identity(x.rank)):
            if trailing(layout):
                x = call.want(i, layout)
                break
        else:
            call.refuse("paddings", "reflect padding of the spatial axes "
                        "only (torch pads the last rank-2 dims)")
    flat = []
    for j in reversed(range(2, x.rank)):
        flat += width[x.layout.perm[j]]
    while flat[-2:] == [0, 0]:
        flat = flat[:-2]
    code = f'F.pad({x.expr}, {lit(tuple(flat))}, mode="reflect")'
    return Emit([Out(chain(code), shape, x.layout, x.dtype)])


def resize(call, op: Op) -> Emit:
    """tf.image.resize to a size read from tf.shape (``shape[1:3]``, or
    a list of pieces) that the model file knows: as a constant size."""
    size = op.options.get("size")
    pieces = size if isinstance(size, list) else [size]
    if any(isinstance(v, Ref) for v in pieces):
        known = []
        for v in pieces:
            value = _value_of(call, v.i)[1] if isinstance(v, Ref) else v
            known += list(value) if isinstance(value, tuple) else [value]
        if len(known) != 2 or not all(isinstance(v, int) for v in known):
            call.refuse("size", "a (height, width) the model file knows")
        op = Op(op.name, op.operands, dict(op.options, size=known))
    return _RESIZE(call, op)


def _tf_spellings(op: Op) -> Op:
    if op.name == "shape" and op.options.get("out_type") not in (
            None, "int32", "int64"):
        op.options["out_type"] = "int32"
    return op


def _list_reduce(impl):
    """``tf.reduce_sum([a, b], axis=0)`` (ResNeSt's split attention): a
    list operand is stacked on a new axis 0 (``tf.convert_to_tensor``);
    reducing over that axis only folds the tensors element-wise."""
    def convert(call, op: Op) -> Emit:
        if not (len(op.operands) == 1 and isinstance(op.operands[0], list)):
            return impl(call, op)
        items = op.operands[0]
        refs = _tensor_refs(items)
        if not refs or len(refs) != len(items):
            call.refuse("operands", f"{op.name} of a list of tensors only")
        for r in refs:
            _unflat(call, r.i)
        layout = _align(call, items)
        xs = [call.inputs[r.i] for r in refs]
        if len({x.shape for x in xs}) != 1:
            call.refuse("operands", f"{op.name} of a list of tensors of one "
                        "shape")
        axis = op.options.get("axis")
        axes = (list(range(xs[0].rank + 1)) if axis in (None, [])
                else _axes(axis, xs[0].rank + 1))
        if axes != [0] or op.options.get("keepdims"):
            call.refuse(f"axis={axis!r}", f"{op.name} of a list over the "
                        "list only (axis=0, keepdims=False)")
        names = [x.expr for x in xs]
        if op.name == "sum":
            code = " + ".join(names)
        else:
            method = {"mean": "mean", "max": "amax", "min": "amin",
                      "any": "any", "all": "all"}[op.name]
            code = f"torch.stack([{', '.join(names)}]).{method}(dim=0)"
        dtype = "bool" if op.name in ("any", "all") else xs[0].dtype
        return Emit([Out(chain(code), xs[0].shape, layout, dtype)])
    return convert


_RESHAPE = IMPLEMENTATIONS["reshape"]
_PAD = IMPLEMENTATIONS["pad"]
_RESIZE = IMPLEMENTATIONS["resize"]
for _name, _impl in list(IMPLEMENTATIONS.items()):
    IMPLEMENTATIONS[_name] = _with_python_numbers(_impl)
IMPLEMENTATIONS.update({
    "shape": shape, "tf_split": tf_split, "unstack": unstack,
    "gather": gather, "repeat": repeat,
    "squared_difference": _with_python_numbers(squared_difference),
    "bias_add": bias_add, "tf_einsum": tf_einsum,
    "reshape": _with_python_numbers(reshape),
    "pad": pad, "resize": resize,
})
for _name in ("sum", "mean", "max", "min", "any", "all"):
    IMPLEMENTATIONS[_name] = _list_reduce(IMPLEMENTATIONS[_name])
TF_FIXES.append(_tf_spellings)
