"""Tokens and learned position embeddings of kecam's vision transformers.

* ``volo>ClassToken`` (ViT, DINOv2, CoaT, FlexiViT...): ``num_tokens``
  learned tokens of shape ``(1, num_tokens, C)`` put before the sequence
  (after it with ``is_at_end``).
* ``volo>PositionalEmbedding`` (ViT, GPViT, Hiera, IFormer...): ``x +
  positional_embedding``, a weight of the input's shape with batch 1.
* ``kecam>PureWeigths`` (GPViT's group tokens): its weight ``gain`` of
  the configured ``shape``, whatever the input.
"""
from __future__ import annotations

from ...layout import identity
from ..base import Emit, Out, chain
from ..common import as_f32
from ..registry import rule
from .common import broadcast_param


@rule("volo>ClassToken", variables=lambda cfg: ["tokens"])
def class_token(call):
    """torch.cat of an nn.Parameter expanded over the batch"""
    x = call.inputs[0]
    if x.rank != 3:
        call.refuse(f"rank {x.rank}", "ClassToken of a (batch, tokens, "
                    "channels) sequence")
    if not x.layout.is_identity:
        x = call.want(0, identity(3))
    tokens = call.weights(["tokens"])["tokens"]
    n = int(call.get("num_tokens", 1))
    if tuple(tokens.shape) != (1, n, x.shape[2]):
        call.refuse("tokens", f"expected shape (1, {n}, {x.shape[2]}), got "
                    f"{tuple(tokens.shape)}")
    expand = f"self.{call.attr}.expand({x.expr}.shape[0], -1, -1)"
    parts = [x.expr, expand] if call.get("is_at_end", False) \
        else [expand, x.expr]
    length = None if x.shape[1] is None else x.shape[1] + n
    module = f"nn.Parameter(torch.zeros(1, {n}, {x.shape[2]}))"
    return Emit([Out(chain(f"torch.cat([{', '.join(parts)}], dim=1)"),
                     (x.shape[0], length, x.shape[2]), x.layout, x.dtype)],
                module=module, state={"": lambda: as_f32(tokens.read())})


@rule("volo>PositionalEmbedding",
      variables=lambda cfg: ["positional_embedding"], masks="propagate")
def positional_embedding(call):
    """nn.Parameter added to x"""
    w = call.weights(["positional_embedding"])["positional_embedding"]
    x, shape, weight = broadcast_param(call, 0, w, True)
    module = f"nn.Parameter(torch.zeros({', '.join(map(str, shape))}))"
    return Emit([Out(chain(f"{x.expr} + self.{call.attr}"), x.shape,
                     x.layout, x.dtype)],
                module=module, state={"": weight})


@rule("kecam>PureWeigths", variables=lambda cfg: ["gain"])
def pure_weights(call):
    """nn.Parameter returned as is (the input is not used)"""
    gain = call.weights(["gain"])["gain"]
    shape = tuple(int(d) for d in gain.shape)
    cfg_shape = call.get("shape")
    if not isinstance(cfg_shape, (list, tuple)) or tuple(cfg_shape) != shape:
        call.refuse(f"shape={cfg_shape!r}", f"the weight's shape {shape}")
    module = f"nn.Parameter(torch.zeros({', '.join(map(str, shape))}))"
    return Emit([Out(chain(f"self.{call.attr}"), shape,
                     identity(len(shape)), "float32")],
                module=module, state={"": lambda: as_f32(gain.read())})
