"""Custom layers of ``keras.applications`` (Keras 3 and tf-keras).

Keras 3 files name them by class (``LayerScale``, module
``keras.src.applications.convnext``); tf-keras registers them under its
default package (``"Custom>CustomScaleLayer"``).  A layer of the same name
from another package (``registered_name`` ``"pkg>Name"``, or a module
outside the applications) is refused rather than guessed at.

* ``LayerScale`` (ConvNeXt): ``x * gamma``, gamma of shape (dim,).
* ``StochasticDepth`` (ConvNeXt): the identity at inference; drops the
  whole residual branch per batch in training.
* ``CustomScaleLayer`` (InceptionResNetV2): ``inputs[0] + inputs[1] *
  scale``, ``scale`` in the config.
"""
from __future__ import annotations

from ..layout import identity
from .base import Emit, Out, Transformed, chain
from .common import as_f32, lit
from .merging import _broadcast, _same_layout
from .registry import rule

_MODULES = ("keras.src.applications.", "keras.applications.",
            "tf_keras.src.applications.", "tf_keras.applications.",
            "keras_core.src.applications.")


def _check_origin(call, family: str):
    layer = call.layer
    reg = layer.registered_name
    if reg and ">" in reg and reg.split(">", 1)[0] != "Custom":
        call.refuse(f"registered_name={reg!r}",
                    f"not the keras.applications {family} layer")
    if layer.module and not layer.module.startswith(_MODULES):
        call.refuse(f"module={layer.module!r}",
                    f"not the keras.applications {family} layer")


@rule("LayerScale", variables=lambda cfg: ["gamma"], masks="propagate")
def layer_scale(call):
    _check_origin(call, "ConvNeXt")
    x = call.inputs[0]
    gamma = call.weights(["gamma"])["gamma"]
    dim = int(call.get("projection_dim", gamma.shape[-1]))
    if tuple(gamma.shape) != (dim,):
        call.refuse("gamma", f"expected shape ({dim},), got {gamma.shape}")
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    # gamma scales the Keras last axis, wherever torch holds it
    d = x.layout.torch_axis(-1)
    trailing = x.rank - 1 - d
    shape = (dim,) + (1,) * trailing
    module = f"nn.Parameter(torch.empty{lit(shape)})"
    return Emit([Out(chain(f"{x.expr} * self.{call.attr}"), x.shape,
                     x.layout, x.dtype)],
                module=module,
                state={"": Transformed(lambda g: as_f32(g.reshape(shape)),
                                       [gamma], f"reshaped to {shape}")})


STOCHASTIC_DEPTH = '''\
class StochasticDepth(nn.Module):
    """Drops the whole residual branch of a sample with probability rate
    in training (the kept ones scaled by 1 / (1 - rate)); identity in eval
    mode."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or not self.rate:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep
'''


@rule("StochasticDepth", masks="propagate")
def stochastic_depth(call):
    """Identity in eval mode; drops residual branches in ``train()``."""
    _check_origin(call, "ConvNeXt")
    rate = float(call.get("drop_path_rate", 0.0))
    x = call.inputs[0]
    if not rate:
        return Emit([Out([x.expr], x.shape, x.layout, x.dtype)])
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape, x.layout,
                     x.dtype)], module=f"StochasticDepth({lit(rate)})",
                helpers={"StochasticDepth": STOCHASTIC_DEPTH})


@rule("CustomScaleLayer", masks="propagate")
def custom_scale(call):
    _check_origin(call, "InceptionResNetV2")
    if len(call.inputs) != 2:
        call.refuse("inputs", "CustomScaleLayer takes [shortcut, residual]")
    scale = call.get("scale")
    if not isinstance(scale, (int, float)):
        call.refuse(f"scale={scale!r}", "expected a number")
    xs, layout = _same_layout(call)
    code = f"{xs[0].expr} + {xs[1].expr} * {lit(float(scale))}"
    shape = _broadcast([x.shape for x in xs])
    return Emit([Out(chain(code), shape, layout, xs[0].dtype)])
