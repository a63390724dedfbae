"""Activation functions (by Keras name) and the activation layers.

:func:`activation` turns a Keras activation name into one chained step, as
Keras 2 or Keras 3 defines it (they differ: ``hard_sigmoid`` is
``clip(0.2x + 0.5, 0, 1)`` in Keras 2 and ``relu6(x + 3) / 6`` in Keras 3).
Fused ``activation=`` options of Dense, Conv and friends use it too, so the
activation is always visible in ``forward``.

Any other function (``"pkg>fn_name"`` registered with Keras, or a plain
function name) is converted by its activation rule
(:func:`migrate.rules.activation_rule`), for ``Activation`` layers and
fused ``activation=`` alike; without one it is refused with the way to
write it.
"""
from __future__ import annotations

from ..layout import Layout
from .base import HOLE, IN, Emit, Out, Refused, Tensor, Transformed, chain
from .common import as_f32, lit, shape_args
from .registry import RULES, activation_key, rule

# name -> step, for both Keras versions; {dim} is the torch dim of axis -1.
_COMMON = {
    "linear": None,
    "relu": "F.relu({})",
    "relu6": "F.relu6({})",
    "elu": "F.elu({})",
    "selu": "F.selu({})",
    "softplus": "F.softplus({})",
    "softsign": "F.softsign({})",
    "silu": "F.silu({})",
    "swish": "F.silu({})",
    "gelu": "F.gelu({})",
    "tanh": "torch.tanh({})",
    "sigmoid": "torch.sigmoid({})",
    "exponential": "torch.exp({})",
    "mish": "F.mish({})",
    "softmax": "F.softmax({}, dim={dim})",
    "log_softmax": "F.log_softmax({}, dim={dim})",
    "leaky_relu": "F.leaky_relu({}, 0.2)",
}

_KERAS2 = dict(_COMMON, hard_sigmoid="torch.clamp(0.2 * {} + 0.5, 0.0, 1.0)")

_KERAS3 = dict(
    _COMMON,
    hard_sigmoid="F.hardsigmoid({})",
    hard_silu="F.hardswish({})",
    hard_swish="F.hardswish({})",
    celu="F.celu({})",
    glu="F.glu({}, dim={dim})",
    log_sigmoid="F.logsigmoid({})",
    hard_tanh="F.hardtanh({})",
    hard_shrink="F.hardshrink({}, 0.5)",
    soft_shrink="F.softshrink({}, 0.5)",
    tanh_shrink="F.tanhshrink({})",
    sparse_sigmoid="torch.clamp(0.5 * ({} + 1.0), 0.0, 1.0)",
    sparse_plus="sparse_plus({})",
    squareplus="squareplus({})",
    sparsemax="sparsemax({}, dim={dim})",
)

HELPERS = {
    "sparse_plus": '''\
def sparse_plus(x):
    """Keras sparse_plus: 0 below -1, (x + 1)^2 / 4 up to 1, x above."""
    return torch.where(x <= -1, torch.zeros_like(x),
                       torch.where(x < 1, 0.25 * (x + 1) ** 2, x))
''',
    "squareplus": '''\
def squareplus(x, b=4.0):
    """Keras squareplus: (x + sqrt(x^2 + b)) / 2."""
    return (x + torch.sqrt(x * x + b)) / 2
''',
    "sparsemax": '''\
def sparsemax(x, dim=-1):
    """Sparsemax (Martins & Astudillo, 2016) along dim."""
    z, _ = torch.sort(x, dim=dim, descending=True)
    cumsum = z.cumsum(dim)
    shape = [1] * x.dim()
    shape[dim] = -1
    r = torch.arange(1, x.shape[dim] + 1, dtype=x.dtype,
                     device=x.device).reshape(shape)
    support = z - (cumsum - 1) / r > 0
    k = support.to(x.dtype).sum(dim=dim, keepdim=True)
    tau = (torch.where(support, cumsum, 0.0).sum(dim=dim, keepdim=True)
           - 1) / k
    return torch.clamp(x - tau, min=0.0)
''',
    "keras_relu": '''\
def keras_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """ReLU as Keras defines it: values at or below threshold become
    negative_slope * (x - threshold), then clip at max_value."""
    negative = F.relu(threshold - x)
    y = x * (x > threshold).to(x.dtype) if threshold != 0 else F.relu(x)
    if max_value is not None:
        y = torch.clamp(y, 0.0, max_value)
    return y - negative_slope * negative if negative_slope else y
''',
    "prelu": '''\
def prelu(x, alpha):
    """PReLU with an alpha that broadcasts against x."""
    return F.relu(x) - alpha * F.relu(-x)
''',
    "softmax_over": '''\
def softmax_over(x, dims):
    """Softmax over several dims at once."""
    return torch.exp(x - torch.logsumexp(x, dim=dims, keepdim=True))
''',
}


def activation(name, x: Tensor, keras_major: int, helpers: dict) -> str | None:
    """One chained step (``{}`` is the input) for activation ``name``.

    Returns None for ``linear``; raises :class:`Refused` for a name this
    Keras version does not define or a form we cannot express.
    """
    if name is None:
        return None
    if not isinstance(name, str):
        raise Refused(f"activation={name!r}: only built-in activations by "
                      "name are supported")
    table = _KERAS2 if keras_major < 3 else _KERAS3
    if name not in table:
        raise Refused(f"activation={name!r} is not a Keras {keras_major} "
                      "built-in activation we can convert")
    step = table[name]
    if step is None:
        return None
    if "{dim}" in step:
        step = step.replace("{dim}", str(_last_dim(x)))
    head = step.split("(", 1)[0]
    if head in HELPERS:
        helpers[head] = HELPERS[head]
    return step


def function_name(value) -> str | None:
    """The function an ``activation`` config value names: a string
    (``"relu"``, ``"pkg>fn_name"``) or a Keras function dict's ``config``
    (``{"class_name": "function", "config": "pkg>fn_name", ...}``, as
    Keras 3 and tf-keras write a registered function); None for anything
    else (a serialized layer object)."""
    if isinstance(value, str):
        return value
    if (isinstance(value, dict) and value.get("class_name") == "function"
            and isinstance(value.get("config"), str)):
        return value["config"]
    return None


def call_activation(call, name, x: Tensor, helpers: dict) -> str | None:
    """:func:`activation`, with the activation rules of this conversion
    (``--rules`` files, rule packs, built-in) for any function that is not
    a built-in Keras activation."""
    table = _KERAS2 if call.keras_major < 3 else _KERAS3
    if name is None or (isinstance(name, str) and name in table):
        return activation(name, x, call.keras_major, helpers)
    fn = function_name(name)
    if fn is None:
        return activation(name, x, call.keras_major, helpers)  # refuses
    key = activation_key(fn)
    extra = call._conv.options.rules or {}
    r = extra.get(key) or RULES.get(key)
    if r is None:
        what = (f"is not a Keras {call.keras_major} built-in activation "
                "we can convert"
                if ">" not in fn and isinstance(name, str)
                else "is a custom function")
        raise Refused(
            f"activation={fn!r} {what} and has no activation rule: "
            f"register one with migrate.rules.activation_rule({fn!r}) in a "
            "--rules file (`keras2torch rules new MODEL` writes the "
            "skeleton)")
    return _custom_step(call, r, fn, x, helpers)


def _custom_step(call, r, fn: str, x: Tensor, helpers: dict) -> str:
    """The chained step of activation rule ``r`` on ``x``: its expression
    inline when it uses its input once, else a helper function in
    model.py (so the input is computed once)."""
    from ..compose import subst
    from ..emit.names import comment_text
    result = r.convert(Tensor(x.shape, x.layout, x.dtype, IN(0)))
    if isinstance(result, str):
        steps = chain(result)
    elif isinstance(result, Emit) and len(result.outputs) == 1 and not (
            result.module or result.state or result.pre or result.multi
            or result.init_lines):
        steps = result.outputs[0].steps
        helpers.update(result.helpers)
    else:
        raise Refused(f"activation rule {r.name} for {fn!r} must return an "
                      "expression or an Emit with one Out and no module, "
                      "state or statements (an activation has no weights)")
    expr = steps[0]
    for step in steps[1:]:
        expr = subst(step, HOLE, expr)
    uses = expr.count(IN(0))
    if uses == 0:
        raise Refused(f"activation rule {r.name} for {fn!r} does not use "
                      "its input (x.expr)")
    if uses == 1:
        return expr.replace(IN(0), "{}")
    name = call._conv.vars.name(("activation", r.key), r.name, "activation")
    helpers[name] = (f"def {name}(x):\n"
                     f'    """Keras activation function '
                     f'{comment_text(fn)}."""\n'
                     f"    return {subst(expr, IN(0), 'x')}\n")
    return f"{name}({{}})"


def activation_shape(name, shape: tuple) -> tuple:
    """The Keras output shape of activation ``name`` on ``shape``: ``glu``
    halves the last axis, every other activation keeps the shape."""
    if name == "glu" and shape[-1] is not None:
        return shape[:-1] + (shape[-1] // 2,)
    return shape


def _last_dim(x: Tensor) -> int:
    if x.layout.flat is not None:
        return -1
    d = x.layout.torch_axis(-1)
    return -1 if d == x.rank - 1 else d


def with_activation(call, x: Tensor, emit_steps: list[str],
                    helpers: dict, name_key: str = "activation") -> list[str]:
    """Append the layer's fused activation (if any) to ``emit_steps``."""
    step = call_activation(call, call.get(name_key, "linear"), x, helpers)
    return emit_steps + chain("", step)[1:] if step else emit_steps


def _applied(x: Tensor, step: str | None) -> list[str]:
    """``step`` applied to ``x`` as a single first step (a bare input as a
    step of its own becomes a ``y = x`` line when the emitter splits)."""
    return [step.replace("{}", x.expr)] if step else [x.expr]


def _passthrough(call, step: str | None, helpers=None) -> Emit:
    x = call.inputs[0]
    steps = _applied(x, step)
    return Emit([Out(steps, x.shape, x.layout, x.dtype)],
                helpers=helpers or {})


@rule("Activation", masks="propagate")
def activation_layer(call):
    helpers: dict = {}
    x = call.inputs[0]
    name = call.get("activation", "linear")
    if name == "glu" and x.layout.flat is not None:
        # glu splits the last axis in halves: Keras order matters
        x = call.want(0, Layout(tuple(range(x.rank))))
    step = call_activation(call, name, x, helpers)
    steps = _applied(x, step)
    return Emit([Out(steps, activation_shape(name, x.shape), x.layout,
                     x.dtype)], helpers=helpers)


@rule("ReLU", masks="propagate")
def relu_layer(call):
    max_value = call.get("max_value")
    slope = float(call.get("negative_slope", 0.0) or 0.0)
    threshold = float(call.get("threshold", 0.0) or 0.0)
    if max_value is not None:
        max_value = float(max_value)
    if slope == 0 and threshold == 0:
        if max_value is None:
            return _passthrough(call, "F.relu({})")
        if max_value == 6.0:
            return _passthrough(call, "F.relu6({})")
        return _passthrough(call, f"torch.clamp({{}}, 0.0, {lit(max_value)})")
    if max_value is None and threshold == 0:
        return _passthrough(call, f"F.leaky_relu({{}}, {lit(slope)})")
    args = [f"negative_slope={lit(slope)}"] if slope else []
    if max_value is not None:
        args.append(f"max_value={lit(max_value)}")
    if threshold:
        args.append(f"threshold={lit(threshold)}")
    return _passthrough(call, f"keras_relu({{}}, {', '.join(args)})",
                        {"keras_relu": HELPERS["keras_relu"]})


@rule("LeakyReLU", masks="propagate")
def leaky_relu_layer(call):
    slope = call.get("negative_slope", 0.3)
    return _passthrough(call, f"F.leaky_relu({{}}, {lit(float(slope))})")


@rule("ELU", masks="propagate")
def elu_layer(call):
    alpha = float(call.get("alpha", 1.0))
    return _passthrough(call, "F.elu({})" if alpha == 1.0
                        else f"F.elu({{}}, alpha={lit(alpha)})")


@rule("ThresholdedReLU", masks="propagate")
def thresholded_relu_layer(call):
    theta = float(call.get("theta", 1.0))
    return _passthrough(call, f"keras_relu({{}}, threshold={lit(theta)})",
                        {"keras_relu": HELPERS["keras_relu"]})


@rule("Softmax", masks="consume")
def softmax_layer(call):
    """``F.softmax``; with a ``mask=`` argument as Keras applies it: the
    mask broadcast against the last axes, masked logits set to -1e9 and
    masked outputs to 0 (Keras 3), or -1e9 added to masked logits (Keras
    2; set to -1e9 with ``robust_masking``).  Keras fails on the (batch,
    steps) mask of a masked sequence (it does not broadcast that way), so
    such an input is refused."""
    x = call.inputs[0]
    mask = call.kwarg("mask")
    if isinstance(mask, list) or (mask is None and x.masked):
        call.refuse("input with a Keras mask", "Keras broadcasts the mask "
                    "against the last axes of the input, which fails for a "
                    "(batch, steps) mask; pass a mask of the input's shape")
    if mask is not None and not _broadcasts(mask.shape, x.shape):
        call.refuse(f"mask of shape {mask.shape}", "it does not broadcast "
                    f"to the input's shape {x.shape} (Keras fails too)")
    if x.layout.flat is not None or (mask is not None
                                     and not x.layout.is_identity):
        x = call.want(0, Layout(tuple(range(x.rank))))
    axis = call.get("axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    dims = sorted(x.layout.torch_axis(a) for a in axes)
    helpers = {}
    if len(dims) == 1:
        d = dims[0]
        d = -1 if d == x.rank - 1 else d
        step = f"F.softmax({{}}, dim={d})"
    else:
        step = f"softmax_over({{}}, {lit(tuple(dims))})"
        helpers["softmax_over"] = HELPERS["softmax_over"]
    if mask is None:
        return _passthrough(call, step, helpers)
    i = call.index(mask)
    mask = call.want(i, Layout(tuple(range(mask.rank))))
    keep = mask.expr if mask.dtype == "bool" else f"({mask.expr} > 0.5)"
    if call.keras_major >= 3 or call.get("robust_masking"):
        logits = f"{x.expr}.masked_fill(~{keep}, -1e9)"
        code = step.replace("{}", logits)
        if call.keras_major >= 3:
            code += f".masked_fill(~{keep}, 0.0)"
    else:
        m = f"{mask.expr}.float()" if mask.dtype == "bool" else mask.expr
        code = step.replace("{}", f"{x.expr} + (1.0 - {m}) * -1e9")
    return Emit([Out(chain(code), x.shape, x.layout, x.dtype, masked=True)],
                helpers=helpers)


def _broadcasts(mask_shape, shape) -> bool:
    """Keras's check: the mask broadcasts to the input from the right."""
    if len(mask_shape) > len(shape):
        return False
    return all(m is None or s is None or m in (1, s)
               for m, s in zip(mask_shape[::-1], shape[::-1]))


def _prelu_variables(cfg):
    return ["alpha"]


@rule("PReLU", variables=_prelu_variables, masks="propagate")
def prelu_layer(call):
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, Layout(tuple(range(x.rank))))
    alpha = call.weights(["alpha"])["alpha"]
    shared = set(call.get("shared_axes") or [])
    per_channel = x.rank == 2 or (
        x.layout.perm[1] == x.rank - 1
        and shared >= set(range(1, x.rank - 1)))
    channels = x.shape[-1]
    if per_channel and channels is not None:
        return Emit(
            [Out(chain(f"self.{call.attr}({x.expr})"), x.shape, x.layout,
                 x.dtype)],
            module=f"nn.PReLU({channels})",
            state={"weight": Transformed(lambda a: as_f32(a).reshape(-1),
                                         [alpha], "flattened")})
    # General case: alpha keeps its Keras shape (size 1 on shared axes),
    # permuted like the activations.
    order = [p - 1 for p in x.layout.perm[1:]]
    shape = tuple(alpha.shape[i] for i in order)
    return Emit(
        [Out(chain(f"prelu({x.expr}, self.{call.attr})"), x.shape, x.layout,
             x.dtype)],
        module=f"nn.Parameter(torch.empty({shape_args(shape)}))",
        state={"": Transformed(lambda a: as_f32(a.transpose(order)), [alpha],
                               f"transposed to the torch layout: {order}")},
        helpers={"prelu": HELPERS["prelu"]})
