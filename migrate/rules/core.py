"""Dense and Embedding."""
from __future__ import annotations

from ..layout import Layout, channels_last_of
from .activations import activation_shape, with_activation
from .base import IN, Emit, Out, Transformed, chain
from .common import as_f32, flat_order, kwargs_code
from .registry import rule


def _dense_variables(cfg):
    return ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])


def _last_axis(cfg, rank):
    return Layout(tuple(range(rank)))


@rule("Dense", variables=_dense_variables, prefers=_last_axis,
      masks="propagate")
def dense(call):
    """nn.Linear on the last axis, for any rank.  After a Flatten of a
    channels-first tensor the kernel rows are permuted instead of the
    activations."""
    x = call.inputs[0]
    if call.get("quantization_config") or "int" in str(
            call.config.get("_dtype_policy", "")):
        call.refuse("dtype", "quantized Dense layers are not supported")
    if x.rank > 2 and x.layout.perm[-1] != x.rank - 1:
        x = call.want(0, channels_last_of(x.layout))
    units = int(call.get("units"))
    use_bias = bool(call.get("use_bias", True))
    w = call.weights(_dense_variables(call.config))
    kernel = w["kernel"]
    in_features = kernel.shape[0]
    order = flat_order(x.layout)

    def weight(k):
        return as_f32((k if order is None else k[order]).T)

    state = {"weight": Transformed(weight, [kernel], "transposed (in, out) -> "
                                   "(out, in)" + (
                                       "" if order is None else
                                       "; rows permuted: Keras flattened "
                                       "channels-last"))}
    if use_bias:
        state["bias"] = Transformed(as_f32, [w["bias"]])
    helpers: dict = {}
    steps = with_activation(call, x, chain(f"self.{call.attr}({x.expr})"),
                            helpers)
    args = kwargs_code(bias=None if use_bias else "False")
    module = f"nn.Linear({in_features}, {units}{', ' + args if args else ''})"
    out_layout = x.layout if x.layout.flat is None else Layout((0, 1))
    shape = activation_shape(call.get("activation"), x.shape[:-1] + (units,))
    return Emit([Out(steps, shape, out_layout)],
                module=module, state=state, helpers=helpers)


@rule("Embedding", variables=lambda cfg: ["embeddings"])
def embedding(call):
    x = call.inputs[0]
    table = call.weights(["embeddings"])["embeddings"]
    n, dim = table.shape
    ids = x.expr if x.dtype.startswith(("int", "uint")) else f"{x.expr}.long()"
    if x.layout.flat is not None:
        x = call.want(0, Layout(tuple(range(x.rank))))
        ids = f"{x.expr}.long()"
    out_layout = Layout(x.layout.perm + (x.rank,))
    return Emit(
        [Out(chain(f"self.{call.attr}({ids})"), x.shape + (dim,), out_layout,
             # Keras mask (sequences helper): mask_zero masks the ids == 0
             mask=f"{IN(0)} != 0" if call.get("mask_zero") else None)],
        module=f"nn.Embedding({n}, {dim})",
        state={"weight": Transformed(as_f32, [table])})
