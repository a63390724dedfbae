"""Operations on symbolic tensors: Keras 3 op nodes and Keras 2
``TFOpLambda`` / ``SlicingOpLambda`` layers.

Both record a function call, never code: Keras 3 writes an op node (module
``keras.src.ops.numpy``, class ``Add``; options in its config, operands in
its call), Keras 2 writes the TensorFlow symbol (``function:
"math.multiply"``), the first argument as the call's input and the others
as keyword arguments.  Each source is read into one :class:`Op` — a
canonical name, operands (tensors or constants) and options — through a
whitelist; a symbol not in the table is refused by name, and nothing is
ever executed.  Ops become plain torch expressions (``x + 3.0``,
``F.relu6(x)``, ``x.mean(dim=(2, 3), keepdim=True)``, slicing).

Layouts: element-wise ops take their operands in the first tensor's layout;
axis arguments are remapped through the layout; a transpose only relabels
the layout (no data moves); reshape, matmul and broadcasting between ranks
work in Keras's own axis order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import TensorRef
from ..layout import Layout, channels_first, identity, is_free
from .activations import HELPERS as ACTIVATION_HELPERS
from .base import Emit, Out, chain
from .common import lit
from .merging import _broadcast
from .registry import rule


@dataclass(frozen=True)
class Ref:
    """Operand: input ``i`` of the call."""

    i: int


@dataclass
class Op:
    name: str  # canonical op name (a key of IMPLEMENTATIONS)
    operands: list  # Ref or constant, in call order
    options: dict = field(default_factory=dict)


# -- reading the call -------------------------------------------------------
def _bind(value, counter):
    """``value`` with every TensorRef replaced by ``Ref(i)``, numbered in
    :attr:`migrate.graph.Node.inputs` order (args, then kwargs values)."""
    if isinstance(value, TensorRef):
        counter[0] += 1
        return Ref(counter[0] - 1)
    if isinstance(value, (list, tuple)):
        return [_bind(v, counter) for v in value]
    if isinstance(value, dict):
        return {k: _bind(v, counter) for k, v in value.items()}
    return value


def _call_args(call):
    counter = [0]
    args = _bind(call.node.args, counter)
    kwargs = _bind(call.node.kwargs, counter)
    return args, kwargs


# Keras 3 op classes -> (canonical op, option keys read from the config
# with defaults).  Operands are the call's positional arguments.
_BINARY = {
    "Add": "add", "Subtract": "subtract", "Multiply": "multiply",
    "Divide": "divide", "TrueDivide": "divide", "FloorDivide":
    "floor_divide", "Power": "power", "Maximum": "maximum",
    "Minimum": "minimum", "Greater": "greater", "GreaterEqual":
    "greater_equal", "Less": "less", "LessEqual": "less_equal",
    "Equal": "equal", "NotEqual": "not_equal", "LogicalAnd": "logical_and",
    "LogicalOr": "logical_or", "Mod": "mod",
}
_UNARY = {
    "Negative": "negative", "Abs": "abs", "Absolute": "abs", "Sqrt": "sqrt",
    "Square": "square", "Exp": "exp", "Log": "log", "Tanh": "tanh",
    "Sin": "sin", "Cos": "cos", "Floor": "floor", "Ceil": "ceil",
    "Sign": "sign", "Reciprocal": "reciprocal", "LogicalNot": "logical_not",
    "Rsqrt": "rsqrt", "Erf": "erf", "Relu": "relu", "Relu6": "relu6",
    "Sigmoid": "sigmoid", "Silu": "silu", "Swish": "silu", "Selu": "selu",
    "Softplus": "softplus", "HardSigmoid": "hard_sigmoid",
    "HardSilu": "hard_silu", "HardSwish": "hard_silu", "Copy": "identity",
    "StopGradient": "identity",
}
_K3_OPTIONS = {
    "Mean": ("mean", {"axis": None, "keepdims": False}),
    "Sum": ("sum", {"axis": None, "keepdims": False}),
    "Max": ("max", {"axis": None, "keepdims": False}),
    "Min": ("min", {"axis": None, "keepdims": False}),
    "Any": ("any", {"axis": None, "keepdims": False}),
    "All": ("all", {"axis": None, "keepdims": False}),
    "Softmax": ("softmax", {"axis": -1}),
    "LogSoftmax": ("log_softmax", {"axis": -1}),
    "Gelu": ("gelu", {"approximate": True}),
    "Elu": ("elu", {"alpha": 1.0}),
    "LeakyRelu": ("leaky_relu", {"negative_slope": 0.2}),
    "Reshape": ("reshape", {"newshape": None}),
    "Transpose": ("transpose", {"axes": None}),
    "ExpandDims": ("expand_dims", {"axis": None}),
    "Squeeze": ("squeeze", {"axis": None}),
    "Concatenate": ("concat", {"axis": 0}),
    "Clip": ("clip", {"x_min": None, "x_max": None}),
    "Cast": ("cast", {"dtype": None}),
    "ZerosLike": ("zeros_like", {"dtype": None}),
    "OnesLike": ("ones_like", {"dtype": None}),
    "Matmul": ("matmul", {}),
    "Where": ("where", {}),
    "GetItem": ("getitem", {}),
}
_RENAME = {"newshape": "shape", "axes": "perm", "x_min": "min",
           "x_max": "max", "negative_slope": "alpha"}


def keras3_op(call) -> Op:
    cls = call.layer.class_name
    args, kwargs = _call_args(call)
    if cls in _BINARY:
        return Op(_BINARY[cls], _positional(call, args, kwargs, ("x1", "x2")))
    if cls in _UNARY:
        return Op(_UNARY[cls], _positional(call, args, kwargs, ("x",)))
    if cls not in _K3_OPTIONS:
        call.refuse(f"op {call.layer.module}.{cls}",
                    "not in the table of Keras ops keras2torch converts")
    name, defaults = _K3_OPTIONS[cls]
    options = {_RENAME.get(k, k): call.config.get(k, v)
               for k, v in defaults.items()}
    if name == "getitem":
        return Op(name, _positional(call, args, kwargs, ("x",), 1),
                  {"key": args[1] if len(args) > 1 else kwargs.get("key")})
    if name == "concat":
        return Op(name, list(args[0]) if args else [], options)
    if name in K3_VARIADIC:
        return Op(name, list(args), options)
    if name in K3_OPTIONAL:  # operands that may be left out
        names = K3_OPTIONAL[name]
        operands = list(args[:len(names)]) + [
            kwargs[n] for n in names[len(args):] if n in kwargs]
        return Op(name, operands, options)
    names = {"where": ("condition", "x1", "x2"), "matmul": ("x1", "x2")}
    return Op(name, _positional(call, args, kwargs, names.get(name, ("x",))),
              options)


# ops whose operands are every positional argument (einsum), and ops with
# optional operands after the first (pad's constant_values)
K3_VARIADIC: set[str] = set()
K3_OPTIONAL: dict[str, tuple[str, ...]] = {}


def _positional(call, args, kwargs, names, count=None):
    """The first ``count`` (default: all ``names``) positional operands,
    taken from args or, by name, from kwargs."""
    count = len(names) if count is None else count
    out = list(args[:count])
    for n in names[len(out):count]:
        if n not in kwargs:
            call.refuse(f"argument {n!r}", "missing from the recorded call")
        out.append(kwargs[n])
    return out


# Keras 2: TensorFlow symbol -> (canonical op, parameter names after the
# first, with defaults; None = required).  Parameters named here are the
# only ones accepted (besides ``name``).
_TF: dict[str, tuple[str, dict]] = {}


def _tf(symbols: str, op: str, params: dict | None = None):
    for s in symbols.split():
        _TF[s] = (op, params or {})


_tf("__operators__.add math.add add", "add", {"y": None})
_tf("math.subtract subtract __operators__.sub", "subtract", {"y": None})
_tf("math.multiply multiply __operators__.mul", "multiply", {"y": None})
_tf("math.truediv math.divide divide truediv __operators__.truediv",
    "divide", {"y": None})
_tf("math.floordiv floordiv", "floor_divide", {"y": None})
_tf("math.floormod math.mod", "mod", {"y": None})
_tf("math.pow pow __operators__.pow", "power", {"y": None})
_tf("math.maximum maximum", "maximum", {"y": None})
_tf("math.minimum minimum", "minimum", {"y": None})
_tf("math.greater greater", "greater", {"y": None})
_tf("math.greater_equal greater_equal", "greater_equal", {"y": None})
_tf("math.less less", "less", {"y": None})
_tf("math.less_equal less_equal", "less_equal", {"y": None})
_tf("math.equal equal", "equal", {"y": None})
_tf("math.not_equal not_equal", "not_equal", {"y": None})
_tf("math.logical_and logical_and", "logical_and", {"y": None})
_tf("math.logical_or logical_or", "logical_or", {"y": None})
_tf("math.logical_not logical_not", "logical_not")
_tf("math.negative negative __operators__.neg", "negative")
_tf("math.abs abs", "abs")
_tf("math.sqrt sqrt", "sqrt")
_tf("math.square square", "square")
_tf("math.exp exp", "exp")
_tf("math.log log", "log")
_tf("math.tanh tanh nn.tanh", "tanh")
_tf("math.sin sin", "sin")
_tf("math.cos cos", "cos")
_tf("math.floor floor", "floor")
_tf("math.ceil ceil", "ceil")
_tf("math.sign sign", "sign")
_tf("math.reciprocal reciprocal", "reciprocal")
_tf("math.rsqrt rsqrt", "rsqrt")
_tf("math.erf erf", "erf")
_tf("math.sigmoid sigmoid nn.sigmoid", "sigmoid")
_tf("nn.relu", "relu")
_tf("nn.relu6", "relu6")
_tf("nn.silu nn.swish", "silu", {"beta": 1.0})
_tf("nn.selu", "selu")
_tf("nn.elu", "elu")
_tf("math.softplus nn.softplus", "softplus")
_tf("nn.gelu", "gelu", {"approximate": False})
_tf("nn.leaky_relu", "leaky_relu", {"alpha": 0.2})
_tf("nn.softmax math.softmax", "softmax", {"axis": -1})
_tf("nn.log_softmax math.log_softmax", "log_softmax", {"axis": -1})
_tf("math.reduce_mean reduce_mean", "mean",
    {"axis": None, "keepdims": False})
_tf("math.reduce_sum reduce_sum", "sum", {"axis": None, "keepdims": False})
_tf("math.reduce_max reduce_max", "max", {"axis": None, "keepdims": False})
_tf("math.reduce_min reduce_min", "min", {"axis": None, "keepdims": False})
_tf("math.reduce_any reduce_any", "any", {"axis": None, "keepdims": False})
_tf("math.reduce_all reduce_all", "all", {"axis": None, "keepdims": False})
_tf("reshape", "reshape", {"shape": None})
_tf("compat.v1.transpose transpose", "transpose",
    {"perm": None, "conjugate": False})
_tf("expand_dims", "expand_dims", {"axis": None})
_tf("compat.v1.squeeze squeeze", "squeeze", {"axis": None})
_tf("concat", "concat", {"axis": None})
_tf("clip_by_value", "clip",
    {"clip_value_min": None, "clip_value_max": None})
_tf("linalg.matmul matmul", "matmul",
    {"b": None, "transpose_a": False, "transpose_b": False})
_tf("cast", "cast", {"dtype": None})
_tf("identity", "identity")
_tf("__operators__.getitem", "getitem", {"slice_spec": None})
_tf("math.l2_normalize nn.l2_normalize", "l2_normalize",
    {"axis": None, "epsilon": 1e-12})
_tf("image.resize", "resize", {"size": None, "method": "bilinear",
                               "preserve_aspect_ratio": False,
                               "antialias": False})
_TF_RENAME = {"clip_value_min": "min", "clip_value_max": "max",
              "slice_spec": "key"}
_TF_OPERANDS = {"y", "b"}  # parameters that are operands, not options


def tf_op(call) -> Op:
    symbol = call.get("function")
    if symbol not in _TF:
        call.refuse(f"function tf.{symbol}", "not in the table of TensorFlow "
                    "functions keras2torch converts")
    name, params = _TF[symbol]
    args, kwargs = _call_args(call)
    if len(args) != 1:
        call.refuse("arguments", f"expected one positional argument, the "
                    f"call recorded {len(args)}")
    extra = sorted(set(kwargs) - set(params) - {"name"})
    if extra:
        call.refuse(f"tf.{symbol} argument {extra[0]!r}", "not supported")
    first = args[0]
    operands = list(first) if name == "concat" else [first]
    options = {}
    for p, default in params.items():
        value = kwargs.get(p, default)
        if p in _TF_OPERANDS:
            if value is None:
                call.refuse(f"tf.{symbol}", f"argument {p!r} is missing")
            operands.append(value)
        else:
            options[_TF_RENAME.get(p, p)] = value
    if name == "silu" and float(options.pop("beta")) != 1.0:
        call.refuse("beta", "tf.nn.silu with beta != 1")
    if name == "transpose" and options.pop("conjugate"):
        call.refuse("conjugate=True", "complex tensors are not supported")
    op = Op(name, operands, options)
    for fix in TF_FIXES:
        op = fix(op)
    return op


# functions that rewrite a tf.* call's options into the Keras 3 spelling
TF_FIXES: list = []


# -- helpers ------------------------------------------------------------------
def _tensor_refs(values):
    out = []
    for v in values:
        if isinstance(v, Ref):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(_tensor_refs(v))
        elif isinstance(v, dict):
            out.extend(_tensor_refs(list(v.values())))
    return out


def _plain_value(value):
    """A constant as written: numbers, lists, Keras 3 ``__numpy__``."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        return (value.get("config") or {}).get("value")
    if isinstance(value, dict) and value.get("class_name") == "__tensor__":
        return (value.get("config") or {}).get("value")
    return value


def _is_scalar(value) -> bool:
    value = _plain_value(value)
    return isinstance(value, (int, float, bool))


def _const(call, value) -> str:
    value = _plain_value(value)
    if isinstance(value, (int, float, bool)):
        return lit(value)
    if isinstance(value, list):
        # An array constant becomes a (non-persistent) buffer of the op's
        # own, so it follows the module to the device it is moved to.
        if getattr(call, "const_buffer", None) is not None:
            call.refuse("constants", "an op with two array constants")
        call.const_buffer = (f"nn.Buffer(torch.tensor({_list(value)}), "
                             "persistent=False)")
        return f"self.{call.attr}"
    call.refuse(f"constant {str(value)[:40]}", "unsupported constant operand")


def _list(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_list(v) for v in value) + "]"
    return lit(value)


def _const_shape(value) -> tuple:
    value = _plain_value(value)
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def _unflat(call, i):
    x = call.inputs[i]
    if x.layout.flat is not None:
        x = call.want(i, identity(x.rank))
    return x


def _drop_axes(layout: Layout, axes) -> Layout:
    kept = [p for p in layout.perm if p not in axes]
    order = sorted(kept)
    return Layout(tuple(order.index(p) for p in kept))


def _dims(x, axes) -> list[int]:
    return sorted(x.layout.torch_axis(a) for a in axes)


def _dim_code(dims) -> str:
    return lit(dims[0]) if len(dims) == 1 else lit(tuple(dims))


def _axes(value, rank) -> list[int]:
    if isinstance(value, (list, tuple)):
        return sorted({int(a) % rank for a in value})
    return [int(value) % rank]


# -- element-wise ----------------------------------------------------------
_INFIX = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/",
          "floor_divide": "//", "mod": "%", "power": "**", "greater": ">",
          "greater_equal": ">=", "less": "<", "less_equal": "<=",
          "equal": "==", "not_equal": "!=", "logical_and": "&",
          "logical_or": "|"}
_BOOL = {"greater", "greater_equal", "less", "less_equal", "equal",
         "not_equal", "logical_and", "logical_or", "logical_not"}
_FUNCS = {"maximum": "torch.maximum", "minimum": "torch.minimum"}
_UNARY_CODE = {
    "negative": "-{}", "abs": "torch.abs({})", "sqrt": "torch.sqrt({})",
    "square": "torch.square({})", "exp": "torch.exp({})",
    "log": "torch.log({})", "tanh": "torch.tanh({})", "sin": "torch.sin({})",
    "cos": "torch.cos({})", "floor": "torch.floor({})",
    "ceil": "torch.ceil({})", "sign": "torch.sign({})",
    "reciprocal": "torch.reciprocal({})", "rsqrt": "torch.rsqrt({})",
    "erf": "torch.erf({})", "logical_not": "~{}",
    "sigmoid": "torch.sigmoid({})", "relu": "F.relu({})",
    "relu6": "F.relu6({})", "silu": "F.silu({})", "selu": "F.selu({})",
    "softplus": "F.softplus({})", "hard_sigmoid": "F.hardsigmoid({})",
    "hard_silu": "F.hardswish({})", "identity": "{}",
}


def _align(call, operands):
    """Put the tensor operands in one layout; returns it.  Same-rank
    tensors with scalar constants keep the first tensor's layout;
    broadcasting across ranks or against array constants is done in
    Keras's own axis order."""
    refs = _tensor_refs(operands)
    if not refs:
        call.refuse("operands", "an op without tensor operands")
    xs = [call.inputs[r.i] for r in refs]
    ranks = {x.rank for x in xs}
    consts = [v for v in operands if not isinstance(v, Ref)]
    arrays = [c for c in consts if not _is_scalar(c)]
    target = xs[0].layout
    if len(ranks) != 1 or arrays or (
            target.flat is not None and any(x.layout != target for x in xs)):
        target = identity(max(ranks))
    for r in refs:
        if call.inputs[r.i].layout != target:
            if call.inputs[r.i].rank != target.rank:
                call.want(r.i, identity(call.inputs[r.i].rank))
            else:
                call.want(r.i, target)
    return target


def _operand(call, v, left=False) -> str:
    if isinstance(v, Ref):
        return call.inputs[v.i].expr
    code = _const(call, v)
    return f"({code})" if left and code.startswith("-") else code


def _shape_of(call, v) -> tuple:
    if isinstance(v, Ref):
        return call.inputs[v.i].shape
    return _const_shape(v)


def _broadcast_shapes(shapes):
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    return _broadcast(padded)


def elementwise(call, op: Op) -> Emit:
    layout = _align(call, op.operands)
    ops = op.operands
    dtype = "bool" if op.name in _BOOL else next(
        call.inputs[r.i].dtype for r in _tensor_refs(ops))
    if op.name in _UNARY_CODE or op.name in ("gelu", "elu", "leaky_relu",
                                             "clip"):
        if len(ops) != 1:
            call.refuse("operands", f"{op.name} takes one operand")
        x = _operand(call, ops[0])
        code = _unary_code(call, op, x)
        return Emit([Out(chain(code), _shape_of(call, ops[0]), layout,
                         dtype)])
    if len(ops) != 2 and op.name != "where":
        call.refuse("operands", f"{op.name} takes two operands")
    shape = _broadcast_shapes([_shape_of(call, v) for v in ops])
    if op.name == "where":
        if len(ops) != 3:
            call.refuse("operands", "where takes three operands")
        code = "torch.where({}, {}, {})".format(
            *[_operand(call, v) for v in ops])
        dtype = call.inputs[_tensor_refs(ops[1:])[0].i].dtype \
            if _tensor_refs(ops[1:]) else "float32"
        return Emit([Out(chain(code), shape, layout, dtype)])
    a, b = ops
    if op.name in _INFIX:
        code = (f"{_operand(call, a, left=True)} {_INFIX[op.name]} "
                f"{_operand(call, b)}")
    elif isinstance(a, Ref) and isinstance(b, Ref):
        code = f"{_FUNCS[op.name]}({_operand(call, a)}, {_operand(call, b)})"
    else:
        t, c = (a, b) if isinstance(a, Ref) else (b, a)
        if not _is_scalar(c):
            code = (f"{_FUNCS[op.name]}({_operand(call, a)}, "
                    f"{_operand(call, b)})")
        else:
            bound = "min" if op.name == "maximum" else "max"
            code = (f"torch.clamp({_operand(call, t)}, "
                    f"{bound}={_operand(call, c)})")
    return Emit([Out(chain(code), shape, layout, dtype)])


def _unary_code(call, op: Op, x: str) -> str:
    if op.name in _UNARY_CODE:
        return _UNARY_CODE[op.name].format(x)
    o = op.options
    if op.name == "gelu":
        return f'F.gelu({x}, approximate="tanh")' if o.get("approximate") \
            else f"F.gelu({x})"
    if op.name == "elu":
        alpha = float(o.get("alpha", 1.0))
        return f"F.elu({x})" if alpha == 1.0 else \
            f"F.elu({x}, alpha={lit(alpha)})"
    if op.name == "leaky_relu":
        return f"F.leaky_relu({x}, {lit(float(o.get('alpha', 0.2)))})"
    if op.name == "clip":
        lo, hi = o.get("min"), o.get("max")
        for v in (lo, hi):
            if v is not None and not _is_scalar(v):
                call.refuse("clip bounds", "only constant scalar bounds")
        args = [x] + [f"{k}={lit(_plain_value(v))}"
                      for k, v in (("min", lo), ("max", hi)) if v is not None]
        return f"torch.clamp({', '.join(args)})"
    raise AssertionError(op.name)


# -- axis ops -------------------------------------------------------------
def reduce(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    keep = bool(op.options.get("keepdims"))
    axis = op.options.get("axis")
    method = {"mean": "mean", "sum": "sum", "max": "amax", "min": "amin",
              "any": "any", "all": "all"}[op.name]
    dtype = "bool" if op.name in ("any", "all") else x.dtype
    if axis is None or axis == []:
        axes = list(range(x.rank))
    else:
        axes = _axes(axis, x.rank)
    if axes == list(range(x.rank)) and not keep:
        code = f"{x.expr}.{method}()"
        return Emit([Out(chain(code), (), Layout(()), dtype)])
    dims = _dims(x, axes)
    code = (f"{x.expr}.{method}(dim={_dim_code(dims)}"
            f"{', keepdim=True' if keep else ''})")
    shape, layout = reduced(x, axes, keep)
    return Emit([Out(chain(code), shape, layout, dtype)])


def reduced(x, axes, keep) -> tuple[tuple, Layout]:
    """Shape and layout of ``x`` reduced over the Keras ``axes`` (kept as
    size 1 with ``keep``)."""
    if keep:
        return (tuple(1 if i in axes else d for i, d in enumerate(x.shape)),
                x.layout)
    return (tuple(d for i, d in enumerate(x.shape) if i not in axes),
            _drop_axes(x.layout, axes))


def _single(call, op: Op) -> int:
    refs = _tensor_refs(op.operands)
    if len(op.operands) != 1 or len(refs) != 1:
        call.refuse("operands", f"{op.name} takes one tensor")
    return refs[0].i


def softmax(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    axes = _axes(op.options.get("axis", -1), x.rank)
    dims = _dims(x, axes)
    fn = "softmax" if op.name == "softmax" else "log_softmax"
    if len(dims) == 1:
        d = -1 if dims[0] == x.rank - 1 else dims[0]
        return Emit([Out(chain(f"F.{fn}({x.expr}, dim={d})"), x.shape,
                         x.layout, x.dtype)])
    if fn != "softmax":
        call.refuse("axis", "log_softmax over several axes")
    return Emit([Out(chain(f"softmax_over({x.expr}, {lit(tuple(dims))})"),
                     x.shape, x.layout, x.dtype)],
                helpers={"softmax_over": ACTIVATION_HELPERS["softmax_over"]})


def l2_normalize(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    axis = op.options.get("axis")
    axes = list(range(x.rank)) if axis is None else _axes(axis, x.rank)
    dims = _dim_code(_dims(x, axes))
    eps = lit(float(op.options.get("epsilon", 1e-12)))
    code = (f"{x.expr} * torch.rsqrt(torch.clamp(torch.square({x.expr})"
            f".sum(dim={dims}, keepdim=True), min={eps}))")
    return Emit([Out(chain(code), x.shape, x.layout, x.dtype)])


def concat(call, op: Op) -> Emit:
    refs = _tensor_refs(op.operands)
    if len(refs) != len(op.operands) or not refs:
        call.refuse("operands", "concatenation of constants")
    for r in refs:
        _unflat(call, r.i)
    layout = _align(call, op.operands)
    xs = [call.inputs[r.i] for r in refs]
    axis = op.options.get("axis")
    if axis is None:
        call.refuse("axis", "missing")
    axis = int(axis) % xs[0].rank
    dim = layout.torch_axis(axis)
    dim = -1 if dim == xs[0].rank - 1 else dim
    shape = list(xs[0].shape)
    sizes = [x.shape[axis] for x in xs]
    shape[axis] = None if None in sizes else sum(sizes)
    code = f"torch.cat([{', '.join(x.expr for x in xs)}], dim={dim})"
    return Emit([Out(chain(code), tuple(shape), layout, xs[0].dtype)])


def expand_dims(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    axis = op.options.get("axis")
    if not isinstance(axis, int):
        call.refuse(f"axis={axis!r}", "expand_dims on one axis")
    a = axis % (x.rank + 1)
    perm = [p + 1 if p >= a else p for p in x.layout.perm]
    pos = 0 if a == 0 else perm.index(a - 1) + 1
    perm.insert(pos, a)
    shape = x.shape[:a] + (1,) + x.shape[a:]
    return Emit([Out(chain(f"{x.expr}.unsqueeze({pos})"), shape,
                     Layout(tuple(perm)), x.dtype)])


def squeeze(call, op: Op) -> Emit:
    x = _unflat(call, _single(call, op))
    axis = op.options.get("axis")
    if axis is None:
        if any(d is None for d in x.shape[1:]):
            call.refuse("axis=None", "squeeze of unknown sizes")
        axes = [i for i, d in enumerate(x.shape) if d == 1 and i > 0]
    else:
        axes = _axes(axis, x.rank)
    if not axes:
        return Emit([Out([x.expr], x.shape, x.layout, x.dtype)])
    dims = _dims(x, axes)
    code = f"{x.expr}.squeeze({_dim_code(dims)})"
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return Emit([Out(chain(code), shape, _drop_axes(x.layout, axes),
                     x.dtype)])


def transpose(call, op: Op) -> Emit:
    """Relabel: the torch tensor already holds every axis somewhere."""
    x = _unflat(call, _single(call, op))
    perm = op.options.get("perm")
    perm = list(range(x.rank))[::-1] if perm is None else [
        int(p) % x.rank for p in perm]
    shape = tuple(x.shape[p] for p in perm)
    layout = Layout(tuple(perm.index(p) for p in x.layout.perm))
    return Emit([Out([x.expr], shape, layout, x.dtype)])


def reshape(call, op: Op) -> Emit:
    i = _single(call, op)
    x = call.inputs[i]
    if x.layout.flat is not None or not is_free(
            x.layout, identity(x.rank), x.shape):
        x = call.want(i, identity(x.rank))
    target = op.options.get("shape")
    if not isinstance(target, (list, tuple)):
        call.refuse(f"shape={target!r}", "expected a constant shape")
    target = [-1 if d is None else int(d) for d in target]
    if target.count(-1) > 1:
        # Keras 3 writes the batch as -1 or None next to an inferred dim
        known = x.shape[1:]
        rest = [d for d in target[1:] if d != -1]
        if target[0] != -1 or target[1:].count(-1) != 1 or None in known:
            call.refuse(f"shape={target}", "more than one inferred size")
        size = 1
        for d in known:
            size *= d
        for d in rest:
            size //= d
        target[target.index(-1, 1)] = size
    shape = tuple(None if d == -1 else d for d in target)
    dims = ", ".join(str(d) for d in target)
    return Emit([Out(chain(f"{x.expr}.reshape({dims})"), shape,
                     identity(len(target)), x.dtype)])


def matmul(call, op: Op) -> Emit:
    refs = _tensor_refs(op.operands)
    if len(refs) != 2 or len(op.operands) != 2:
        call.refuse("operands", "matmul of two tensors")
    for r in refs:
        x = call.inputs[r.i]
        if not x.layout.is_identity:
            call.want(r.i, identity(x.rank))
    a, b = (call.inputs[r.i] for r in refs)
    if a.rank < 2 or b.rank < 2:
        call.refuse("rank", "matmul of rank >= 2 tensors")
    ea, eb = a.expr, b.expr
    sa, sb = list(a.shape), list(b.shape)
    if op.options.get("transpose_a"):
        ea, sa = f"{ea}.mT", sa[:-2] + [sa[-1], sa[-2]]
    if op.options.get("transpose_b"):
        eb, sb = f"{eb}.mT", sb[:-2] + [sb[-1], sb[-2]]
    batch = _broadcast_shapes([tuple(sa[:-2]), tuple(sb[:-2])])
    shape = tuple(batch) + (sa[-2], sb[-1])
    return Emit([Out(chain(f"{ea} @ {eb}"), shape, identity(len(shape)),
                     a.dtype)])


_DTYPES = {"float16": "torch.float16", "float32": "torch.float32",
           "float64": "torch.float64", "bfloat16": "torch.bfloat16",
           "int8": "torch.int8", "int16": "torch.int16",
           "int32": "torch.int32", "int64": "torch.int64",
           "uint8": "torch.uint8", "bool": "torch.bool"}


def cast(call, op: Op) -> Emit:
    x = call.inputs[_single(call, op)]
    dtype = op.options.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name", dtype)
    if dtype not in _DTYPES:
        call.refuse(f"dtype={dtype!r}", f"supported: {sorted(_DTYPES)}")
    return Emit([Out(chain(f"{x.expr}.to({_DTYPES[dtype]})"), x.shape,
                     x.layout, dtype)])


def filled_like(call, op: Op) -> Emit:
    """``zeros_like`` / ``ones_like`` (Keras 3 writes a concatenated mask
    with them), of the op's dtype or the input's."""
    x = call.inputs[_single(call, op)]
    dtype = op.options.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name", dtype)
    if dtype is not None and dtype not in _DTYPES:
        call.refuse(f"dtype={dtype!r}", f"supported: {sorted(_DTYPES)}")
    arg = f", dtype={_DTYPES[dtype]}" if dtype else ""
    return Emit([Out(chain(f"torch.{op.name}({x.expr}{arg})"), x.shape,
                     x.layout, dtype or x.dtype)])


def resize(call, op: Op) -> Emit:
    i = _single(call, op)
    x = _unflat(call, i)
    if x.rank != 4:
        call.refuse("rank", "tf.image.resize of a batch of images")
    o = op.options
    method = o.get("method", "bilinear")
    modes = {"bilinear": '"bilinear"', "nearest": '"nearest-exact"'}
    if method not in modes:
        call.refuse(f"method={method!r}", "only bilinear and nearest match "
                    "TensorFlow's resize")
    if o.get("antialias") or o.get("preserve_aspect_ratio"):
        call.refuse("antialias / preserve_aspect_ratio", "not supported")
    size = o.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(s, int) for s in size)):
        call.refuse(f"size={size!r}", "expected a constant (height, width)")
    x = call.want(i, channels_first(4))
    h, w = size
    code = f"F.interpolate({x.expr}, size=({h}, {w}), mode={modes[method]})"
    shape = (x.shape[0], h, w, x.shape[3])
    return Emit([Out(chain(code), shape, x.layout, x.dtype)])


# -- slicing ------------------------------------------------------------------
class _Ellipsis:
    pass


def _key_items(call, key) -> list:
    """Normalise a recorded index (Keras 3 ``__slice__``/``__ellipsis__``
    dicts, Keras 2 ``{start, stop, step}`` dicts) to slices, ints, None and
    :class:`_Ellipsis`."""
    items = key if isinstance(key, list) else [key]
    out = []
    for item in items:
        if isinstance(item, dict):
            cls = item.get("class_name")
            cfg = item.get("config", item)
            if cls == "__ellipsis__":
                out.append(_Ellipsis())
                continue
            if cls in (None, "__slice__") and set(cfg) <= {
                    "start", "stop", "step"}:
                parts = [cfg.get(k) for k in ("start", "stop", "step")]
                if not all(p is None or isinstance(p, int) for p in parts):
                    call.refuse("index", "slice bounds must be constants")
                out.append(slice(*parts))
                continue
            call.refuse(f"index {str(item)[:40]}", "unsupported index")
        elif item is None or (isinstance(item, int)
                              and not isinstance(item, bool)):
            out.append(item)
        else:
            call.refuse(f"index {str(item)[:40]}",
                        "only constant slices, integers, ... and None")
    return out


def _slice_code(s) -> str:
    if isinstance(s, int):
        return str(s)
    if s is None:
        return "None"
    text = f"{'' if s.start is None else s.start}:" \
           f"{'' if s.stop is None else s.stop}"
    if s.step is not None:
        text += f":{s.step}"
    return text


def getitem(call, op: Op) -> Emit:
    i = _single(call, op)
    x = _unflat(call, i)
    items = _key_items(call, op.options.get("key"))
    if sum(isinstance(it, _Ellipsis) for it in items) > 1:
        call.refuse("index", "more than one ...")
    real = [it for it in items if it is not None
            and not isinstance(it, _Ellipsis)]
    if len(real) > x.rank:
        call.refuse("index", f"{len(real)} indices for rank {x.rank}")
    # one entry per Keras axis; None entries (new axes) kept in place
    full, seen = [], False
    for it in items:
        if isinstance(it, _Ellipsis):
            full += [slice(None)] * (x.rank - len(real))
            seen = True
        else:
            full.append(it)
    if not seen:
        full += [slice(None)] * (x.rank - len(real))
    if any(it is None for it in full):
        x = call.want(i, identity(x.rank))
        per_axis, layout = full, None
    else:
        per_axis = [full[p] for p in x.layout.perm]
        layout = x.layout
    # output shape (Keras order) and surviving axes
    shape, kept, axis = [], [], 0
    for it in full:
        if it is None:
            shape.append(1)
            continue
        if isinstance(it, slice):
            n = x.shape[axis]
            if axis == 0 and it != slice(None):
                n = None
            shape.append(None if n is None else len(range(*it.indices(n))))
            kept.append(axis)
        axis += 1
    if layout is None:
        out_layout = identity(len(shape))
    else:
        out_layout = _drop_axes(layout, [a for a in range(x.rank)
                                         if a not in kept])
    codes = [_slice_code(s) for s in per_axis]
    while codes and codes[-1] == ":":
        codes.pop()
    code = f"{x.expr}[{', '.join(codes)}]" if codes else x.expr
    return Emit([Out(chain(code), tuple(shape), out_layout, x.dtype)])


IMPLEMENTATIONS = {
    **{k: elementwise for k in list(_INFIX) + list(_FUNCS)
       + list(_UNARY_CODE) + ["gelu", "elu", "leaky_relu", "clip",
                              "where"]},
    "mean": reduce, "sum": reduce, "max": reduce, "min": reduce,
    "any": reduce, "all": reduce,
    "softmax": softmax, "log_softmax": softmax, "concat": concat,
    "expand_dims": expand_dims, "squeeze": squeeze, "transpose": transpose,
    "reshape": reshape, "matmul": matmul, "cast": cast, "getitem": getitem,
    "zeros_like": filled_like, "ones_like": filled_like,
    "l2_normalize": l2_normalize, "resize": resize,
}


def _emit(call, op: Op) -> Emit:
    emit = IMPLEMENTATIONS[op.name](call, op)
    buffer = getattr(call, "const_buffer", None)
    if buffer is not None:
        if emit.module is not None:
            call.refuse("constants", "an array constant in an op with a "
                        "module")
        emit.module = buffer
    return emit


_K3_CLASSES = (sorted(_BINARY) + sorted(_UNARY) + sorted(_K3_OPTIONS))
_K3_MODULES = {
    "numpy": [c for c in _K3_CLASSES if c not in (
        "Relu", "Relu6", "Sigmoid", "Silu", "Swish", "Selu", "Softplus",
        "HardSigmoid", "HardSilu", "HardSwish", "Softmax", "LogSoftmax",
        "Gelu", "Elu", "LeakyRelu", "Rsqrt", "Erf", "Cast", "StopGradient")],
    "nn": ["Relu", "Relu6", "Sigmoid", "Silu", "Swish", "Selu", "Softplus",
           "HardSigmoid", "HardSilu", "HardSwish", "Softmax", "LogSoftmax",
           "Gelu", "Elu", "LeakyRelu"],
    "math": ["Rsqrt", "Erf"],
    "core": ["Cast", "StopGradient"],
}


def keras_op(call):
    return _emit(call, keras3_op(call))


keras_op.__name__ = "keras_op"
# Keras 3 ops do not carry Keras masks: ``x + y`` on a masked ``x`` is an
# unmasked tensor (``Operation.symbolic_call`` attaches none, and the
# backend's eager ops return new tensors without ``_keras_mask``).
for _module, _classes in _K3_MODULES.items():
    for _cls in _classes:
        rule(f"keras.src.ops.{_module}.{_cls}", masks="drop")(keras_op)


@rule("TFOpLambda", "SlicingOpLambda", masks="propagate")
def tf_op_lambda(call):
    return _emit(call, tf_op(call))
