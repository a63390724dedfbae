"""EinsumDense: ``torch.einsum(equation, x, kernel) + bias``.

The equation indexes Keras axes, so the input is taken in Keras axis order
and the output stays in it.  The kernel and bias are stored with the shapes
the equation gives them and are used as they are; the bias broadcasts
against the trailing output axes, as in Keras.
"""
from __future__ import annotations

import re

from ..layout import identity
from .activations import activation_shape, with_activation
from .base import Emit, Out, Tensor, Transformed, chain
from .common import as_f32, lit
from .registry import rule

EINSUM_DENSE = '''\
class EinsumDense(nn.Module):
    """Keras EinsumDense: torch.einsum(equation, x, kernel) + bias."""

    def __init__(self, equation, kernel_shape, bias_shape=None):
        super().__init__()
        self.equation = equation
        self.kernel = nn.Parameter(torch.empty(kernel_shape))
        self.bias = None if bias_shape is None else nn.Parameter(
            torch.empty(bias_shape))

    def forward(self, x):
        x = torch.einsum(self.equation, x, self.kernel)
        return x if self.bias is None else x + self.bias
'''

_EQUATION = re.compile(r"^([a-zA-Z.]+),([a-zA-Z]+)->([a-zA-Z.]+)$")


def _variables(cfg):
    return ["kernel"] + (["bias"] if cfg.get("bias_axes") else [])


def _split(spec: str, rank: int, what: str, call) -> list:
    """Letters of ``spec``, with ``...`` expanded to ``rank`` minus the
    letters, as positions marked ``None``."""
    if spec.count("...") > 1 or spec.replace("...", "").count(".") > 0:
        call.refuse(f"equation {what} {spec!r}", "malformed ellipsis")
    if "..." not in spec:
        return list(spec)
    head, tail = spec.split("...")
    n = rank - len(head) - len(tail)
    if n < 0:
        call.refuse(f"equation {what} {spec!r}", f"does not fit rank {rank}")
    return list(head) + [None] * n + list(tail)


@rule("EinsumDense", variables=_variables)
def einsum_dense(call):
    x = call.inputs[0]
    equation = str(call.get("equation", ""))
    m = _EQUATION.match(equation)
    if not m:
        call.refuse(f"equation={equation!r}",
                    "expected 'input,kernel->output' (letters and ...)")
    if call.get("lora_rank") or call.get("quantization_config") or \
            "int" in str(call.config.get("_dtype_policy", "")):
        call.refuse("dtype", "quantized or LoRA EinsumDense layers are not "
                    "supported")
    x = call.want(0, identity(x.rank))
    w = call.weights(_variables(call.config))
    kernel = w["kernel"]
    ins = _split(m.group(1), x.rank, "input", call)
    if len(ins) != x.rank:
        call.refuse(f"equation={equation!r}", f"input rank is {x.rank}")
    if "..." in m.group(2) or len(m.group(2)) != len(kernel.shape):
        call.refuse(f"equation={equation!r}",
                    f"kernel shape is {tuple(kernel.shape)}")
    dims = dict(zip(m.group(2), kernel.shape))
    dims.update({c: d for c, d in zip(ins, x.shape) if c is not None})
    ell = [d for c, d in zip(ins, x.shape) if c is None]
    out_spec = m.group(3)
    if "..." in out_spec:
        head, tail = out_spec.split("...")
        shape = tuple(dims.get(c) for c in head) + tuple(ell) + tuple(
            dims.get(c) for c in tail)
    else:
        shape = tuple(dims.get(c) for c in out_spec)
    bias_shape = tuple(w["bias"].shape) if "bias" in w else None
    state = {"kernel": Transformed(as_f32, [kernel])}
    if bias_shape is not None:
        state["bias"] = Transformed(as_f32, [w["bias"]])
    args = [lit(equation), lit(tuple(kernel.shape))]
    if bias_shape is not None:
        args.append(lit(bias_shape))
    out = Tensor(shape, identity(len(shape)))
    helpers = {"EinsumDense": EINSUM_DENSE}
    steps = with_activation(call, out, chain(f"self.{call.attr}({x.expr})"),
                            helpers)
    return Emit([Out(steps, activation_shape(call.get("activation"), shape),
                     identity(len(shape)))],
                module=f"EinsumDense({', '.join(args)})", state=state,
                helpers=helpers)
