"""Per-channel scales and biases of kecam.

* ``resmlp>ChannelAffine`` (ResMLP, ConvNeXt, CAFormer, EfficientFormer,
  FastViT, ...): ``x * weight + bias``; weight of shape ``(C,)`` for
  ``axis=-1``, else the input's shape without the batch with 1 off
  ``axis``.
* ``volo>BiasLayer`` (VOLO, DINOv2...): ``x + bias``, ``(C,)`` or the
  input's full shape (batch included) with 1 off ``axis``.
* ``nfnets>ZeroInitGain`` (NFNet, CAFormer): ``x * gain (+ bias)``, two
  scalars.
"""
from __future__ import annotations

from ..base import Emit, Out, chain
from ..registry import rule
from .common import broadcast_param

AFFINE = '''\
class Affine(nn.Module):
    """x * weight + bias, both broadcast against x (kecam ChannelAffine,
    ZeroInitGain)."""

    def __init__(self, *shape, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x):
        x = x * self.weight
        return x if self.bias is None else x + self.bias
'''


def _affine(call, weight_name: str, with_bias: bool):
    names = [weight_name] + (["bias"] if with_bias else [])
    w = call.weights(names)
    x, shape, weight = broadcast_param(call, 0, w[weight_name], False)
    state = {"weight": weight}
    if with_bias:
        _, _, bias = broadcast_param(call, 0, w["bias"], False)
        state["bias"] = bias
    args = ", ".join(str(d) for d in shape)
    if not with_bias:
        args += ", bias=False" if args else "bias=False"
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=f"Affine({args})", state=state,
                helpers={"Affine": AFFINE})


def _names(*names):
    return lambda cfg: [n for n in names
                        if n != "bias" or cfg.get("use_bias", True)]


@rule("resmlp>ChannelAffine", variables=_names("weight", "bias"),
      masks="propagate")
def channel_affine(call):
    """nn.Module Affine in model.py (x * weight + bias)"""
    return _affine(call, "weight", bool(call.get("use_bias", True)))


@rule("nfnets>ZeroInitGain", variables=lambda cfg: ["gain"] + (
    ["bias"] if cfg.get("use_bias", False) else []), masks="propagate")
def zero_init_gain(call):
    """nn.Module Affine in model.py (scalar gain and bias)"""
    return _affine(call, "gain", bool(call.get("use_bias", False)))


@rule("volo>BiasLayer", variables=lambda cfg: ["bias"], masks="propagate")
def bias_layer(call):
    """nn.Parameter added to x"""
    b = call.weights(["bias"])["bias"]
    x, shape, bias = broadcast_param(call, 0, b, True)
    module = f"nn.Parameter(torch.zeros({', '.join(map(str, shape))}))"
    return Emit([Out(chain(f"{x.expr} + self.{call.attr}"), x.shape,
                     x.layout, x.dtype)],
                module=module, state={"": bias})

