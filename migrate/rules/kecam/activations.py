"""kecam's registered activation functions (``Activation`` layers and
``activation=`` of other layers), as kecam defines them in
``common_layers.py``:

* ``hard_swish``: ``x * relu6(x + 3) / 6`` (= ``F.hardswish``);
* ``hard_sigmoid_torch``: ``clip(x / 6 + 0.5, 0, 1)`` (= ``F.hardsigmoid``);
* ``mish``: ``x * tanh(softplus(x))`` (= ``F.mish``);
* ``phish``: ``x * tanh(gelu(x))``, exact gelu.
"""
from __future__ import annotations

from ..registry import activation_rule


@activation_rule("kecamCommon>hard_swish")
def hard_swish(x):
    """F.hardswish (kecam hard_swish: x * relu6(x + 3) / 6)"""
    return f"F.hardswish({x.expr})"


@activation_rule("kecamCommon>hard_sigmoid_torch")
def hard_sigmoid_torch(x):
    """F.hardsigmoid (kecam hard_sigmoid_torch)"""
    return f"F.hardsigmoid({x.expr})"


@activation_rule("kecamCommon>mish")
def mish(x):
    """F.mish"""
    return f"F.mish({x.expr})"


@activation_rule("kecamCommon>phish")
def phish(x):
    """torch.tanh(F.gelu(x)) * x"""
    return f"{x.expr} * torch.tanh(F.gelu({x.expr}))"
