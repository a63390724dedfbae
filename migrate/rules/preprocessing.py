"""Rescaling and Normalization: the preprocessing layers that compute.

``Rescaling`` is ``x * scale + offset``.  ``Normalization`` is
``(x - mean) / max(sqrt(variance), 1e-7)`` (or its inverse), with mean and
variance either in the config (``Normalization(mean=..., variance=...)``)
or stored as variables by ``adapt()`` (EfficientNet); both end up as
buffers of a small ``Normalization`` module written into ``model.py``,
shaped to broadcast against the torch tensor.
"""
from __future__ import annotations

import numpy as np

from ..layout import identity
from .base import Emit, Out, Transformed, chain
from .common import as_f32, lit
from .registry import rule

EPSILON = 1e-7  # keras.backend.epsilon()

NORMALIZATION = '''\
class Normalization(nn.Module):
    """Keras Normalization: (x - mean) / max(sqrt(variance), 1e-7), or the
    inverse; mean and variance are buffers shaped to broadcast over x."""

    def __init__(self, shape, invert=False):
        super().__init__()
        self.invert = invert
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))

    def forward(self, x):
        std = torch.clamp(torch.sqrt(self.variance), min=1e-7)
        if self.invert:
            return self.mean + x * std
        return (x - self.mean) / std
'''


def _value(value):
    """A config number or array (Keras 3 may wrap numpy values)."""
    if isinstance(value, dict) and value.get("class_name") in (
            "__numpy__", "__tensor__"):
        value = (value.get("config") or {}).get("value")
    return value


def _keras_broadcast(arr, keras_shape):
    """Reshape a constant as Keras broadcasts it: aligned with the last
    axes of the Keras tensor."""
    arr = np.asarray(arr, dtype=np.float64)
    rank = len(keras_shape)
    if arr.ndim > rank:
        raise ValueError(f"constant of rank {arr.ndim} for rank {rank}")
    return arr.reshape((1,) * (rank - arr.ndim) + arr.shape)


@rule("Rescaling", masks="propagate")
def rescaling(call):
    x = call.inputs[0]
    scale = _value(call.get("scale", 1.0))
    offset = _value(call.get("offset", 0.0))
    if not x.dtype.startswith("float"):  # Keras computes in float32
        x.expr = f"{x.expr}.float()"
    if isinstance(scale, (int, float)) and isinstance(offset, (int, float)):
        code = x.expr
        if float(scale) != 1.0:
            code = f"{code} * {lit(float(scale))}"
        if float(offset) != 0.0:
            sign = "-" if float(offset) < 0 else "+"
            code = f"{code} {sign} {lit(abs(float(offset)))}"
        return Emit([Out(chain(code), x.shape, x.layout, "float32")])
    # Per-feature scale / offset: constants shaped like the torch tensor.
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    perm = list(x.layout.perm)
    args = []
    for value in (scale, offset):
        arr = _keras_broadcast(value, x.shape).transpose(perm)
        args.append(lit(float(arr.reshape(-1)[0])) if arr.size == 1
                    else lit(arr.astype(float).tolist()))
    code = f"rescale({x.expr}, {args[0]}, {args[1]})"
    return Emit([Out(chain(code), x.shape, x.layout, "float32")],
                helpers={"rescale": RESCALE})


RESCALE = '''\
def rescale(x, scale, offset):
    """Keras Rescaling: x * scale + offset, each a number or nested tuples
    shaped to broadcast against x (made on x's device)."""
    return x * x.new_tensor(scale) + x.new_tensor(offset)
'''


def _normalization_variables(cfg):
    if cfg.get("mean") is not None:
        return []
    return ["mean", "variance", "count"]


@rule("Normalization", variables=_normalization_variables,
      masks="propagate")
def normalization(call):
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    axis = call.get("axis", -1)
    if axis is None:
        axis = []
    axes = sorted({int(a) % x.rank for a in (
        axis if isinstance(axis, (list, tuple)) else [axis])})
    if 0 in axes:
        call.refuse(f"axis={axis}", "per-sample statistics over the batch "
                    "axis")
    if any(x.shape[a] is None for a in axes):
        call.refuse(f"axis={axis}", "kept axes must have a known size")
    keras_shape = tuple(x.shape[a] if a in axes else 1
                        for a in range(x.rank))
    kept = tuple(x.shape[a] for a in axes)
    perm = list(x.layout.perm)
    torch_shape = tuple(keras_shape[p] for p in perm)

    if call.get("mean") is not None:
        mean = _value(call.get("mean"))
        variance = _value(call.get("variance"))

        def constant(value):
            def read():
                arr = np.asarray(value, dtype=np.float64)
                arr = np.broadcast_to(arr, kept) if kept else arr.reshape(())
                return as_f32(arr.reshape(keras_shape).transpose(perm))
            return Transformed(read, [], "from the layer config (no Keras "
                               "variable)")
        state = {"mean": constant(mean), "variance": constant(variance)}
    else:
        w = call.weights(["mean", "variance", "count"])

        def stored(name):
            return Transformed(
                lambda a: as_f32(np.asarray(a).reshape(keras_shape)
                                 .transpose(perm)),
                [w[name]], f"reshaped to {tuple(keras_shape)}, transposed "
                f"{tuple(perm)}")
        state = {"mean": stored("mean"), "variance": stored("variance")}
    invert = bool(call.get("invert", False))
    args = lit(torch_shape) + (", invert=True" if invert else "")
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, "float32")],
                module=f"Normalization({args})", state=state,
                helpers={"Normalization": NORMALIZATION})
