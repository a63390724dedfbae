"""kecam's Conv2D subclasses.

* ``beit>PatchConv2DWithResampleWeights`` (ViT, BEiT, DINOv2, FlexiViT
  patch stems): a Conv2D; only its weight loading differs (it can resample
  a kernel of another patch size), which a saved model has already done.
* ``nfnets>ScaledStandardizedConv2D`` (NFNet): a Conv2D whose kernel is
  standardised over (kh, kw, in) in every call and scaled by a learned
  per-filter ``gain`` and a constant ``gamma``:
  ``(w - mean) * gain * gamma / sqrt(max(fan_in * var, eps))`` (kecam's
  ``standardized_conv_op``; ``var`` biased).  The port does the same in
  its forward, from the raw kernel, so it trains as Keras does (timm's
  ``ScaledStdConv2d``, with kecam's ``eps`` inside the max).
"""
from __future__ import annotations

from dataclasses import replace

from ..base import Transformed
from ..common import as_f32
from ..conv import _conv, _conv_layout, _conv_variables
from ..registry import rule

SCALED_STD_CONV = '''\
class ScaledStdConv2d(nn.Conv2d):
    """kecam ScaledStandardizedConv2D (NFNet): the weight standardised
    over (in, kh, kw) in every forward, then scaled by gain * gamma:
    (w - mean) * gain * gamma / sqrt(max(fan_in * var, eps))."""

    def __init__(self, *args, gamma=1.0, eps=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels))
        self.gamma, self.eps = gamma, eps

    def forward(self, x):
        w = self.weight  # (out, in, kh, kw)
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True,
                                   correction=0)
        scale = torch.rsqrt((var * w[0].numel()).clamp(min=self.eps))
        scale = scale * (self.gain * self.gamma).view(-1, 1, 1, 1)
        return self._conv_forward(x, (w - mean) * scale, self.bias)
'''


@rule("beit>PatchConv2DWithResampleWeights", variables=_conv_variables,
      prefers=_conv_layout)
def patch_conv2d(call):
    """nn.Conv2d, as Conv2D"""
    return _conv(call, 2)


def _std_conv_variables(cfg):
    return _conv_variables(cfg) + ["gain"]


@rule("nfnets>ScaledStandardizedConv2D", variables=_std_conv_variables,
      prefers=_conv_layout)
def scaled_standardized_conv2d(call):
    """nn.Module ScaledStdConv2d in model.py (standardised in forward)"""
    gamma = float(call.get("gamma", 1.0))
    eps = float(call.get("eps", 1e-5))
    if not eps > 0:
        call.refuse(f"eps={eps}", "a positive eps (kecam's rsqrt of "
                    "max(fan_in * var, eps))")
    emit = _conv(call, 2, _std_conv_variables)
    head = "nn.Conv2d("
    assert emit.module.startswith(head) and emit.module.endswith(")")
    extra = "".join(f", {k}={v!r}" for k, v, d in (
        ("gamma", gamma, 1.0), ("eps", eps, 1e-5)) if v != d)
    module = f"ScaledStdConv2d({emit.module[len(head):-1]}{extra})"
    gain = call.weights(_std_conv_variables(call.config))["gain"]
    filters = int(call.get("filters"))
    if tuple(gain.shape) != (filters,):
        call.refuse("gain", f"expected shape ({filters},), got "
                    f"{tuple(gain.shape)}")
    state = dict(emit.state, gain=Transformed(as_f32, [gain]))
    return replace(emit, module=module, state=state,
                   helpers=dict(emit.helpers,
                                ScaledStdConv2d=SCALED_STD_CONV))
