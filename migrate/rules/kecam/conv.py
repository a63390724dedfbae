"""kecam's Conv2D subclasses that compute as Conv2D.

* ``beit>PatchConv2DWithResampleWeights`` (ViT, BEiT, DINOv2, FlexiViT
  patch stems): a Conv2D; only its weight loading differs (it can resample
  a kernel of another patch size), which a saved model has already done.
"""
from __future__ import annotations

from ..conv import _conv, _conv_layout, _conv_variables
from ..registry import rule


@rule("beit>PatchConv2DWithResampleWeights", variables=_conv_variables,
      prefers=_conv_layout)
def patch_conv2d(call):
    """nn.Conv2d, as Conv2D"""
    return _conv(call, 2)
