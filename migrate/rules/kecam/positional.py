"""Learned attention biases of kecam, indexed by the (query, key) offset.

* ``levit>MultiHeadPositionalEmbedding`` (LeViT, EfficientFormer,
  EfficientViT_M): on attention scores ``(B, heads, Q, K)`` (or ``(B, Q,
  K)``), ``x + weight[index]`` with ``weight`` of shape ``(K, heads)`` and
  ``index[q, k]`` the manhattan-coded offset between query ``q`` (on a grid
  ``strides`` apart) and key ``k``.
* ``beit>MultiHeadRelativePositionalEmbedding`` (BEiT, CoAtNet, MaxViT,
  CMT, GCViT...): ``x + weight[:, index]`` with ``weight`` of shape
  ``(heads, (2h-1)(2w-1) [+ 3 with a class token])`` and ``index`` the
  relative position index (three extra entries for the class token's
  row, column and corner).

Grid sizes follow kecam's ``build`` from the input shape and the config
(``-1`` means "infer it", as kecam does); the index table is computed in
the generated module's ``__init__`` and not stored.
"""
from __future__ import annotations

import math

from ...layout import identity
from ..base import Emit, Out, chain
from ..common import as_f32
from ..registry import rule

POSITIONAL_BIAS = '''\
class PositionalBias(nn.Module):
    """kecam MultiHeadPositionalEmbedding (LeViT): a learned bias for every
    (query, key) offset, added to the attention scores (B, heads, Q, K).
    Queries sit on a grid `strides` apart over the keys' grid."""

    def __init__(self, num_heads, query_grid, key_grid, strides):
        super().__init__()
        (qh, qw), (kh, kw) = query_grid, key_grid
        shape = (kh * kw, num_heads) if num_heads else (kh * kw,)
        self.weight = nn.Parameter(torch.zeros(shape))
        qx, qy = torch.meshgrid(torch.arange(qh), torch.arange(qw),
                                indexing="xy")
        kx, ky = torch.meshgrid(torch.arange(kh), torch.arange(kw),
                                indexing="xy")
        q = torch.stack([qx.flatten(), qy.flatten()], -1) * strides
        k = torch.stack([kx.flatten(), ky.flatten()], -1)
        d = (k[None] - q[:, None]).abs()  # (Q, K, 2)
        self.register_buffer("index", d[..., 0] + d[..., 1] * kh,
                             persistent=False)

    def forward(self, x):
        bias = self.weight[self.index]  # (Q, K) or (Q, K, heads)
        return x + (bias if bias.dim() == 2 else bias.permute(2, 0, 1))
'''

RELATIVE_POSITION_BIAS = '''\
class RelativePositionBias(nn.Module):
    """kecam MultiHeadRelativePositionalEmbedding (BEiT): a learned bias
    per head for every relative position on a (height, width) grid, added
    to the attention scores (B, heads, Q, K); with a class token, three
    more entries for its row, its column and their corner."""

    def __init__(self, num_heads, height, width, queries, keys,
                 cls_token=True):
        super().__init__()
        cls = 1 if cls_token else 0
        n = (2 * height - 1) * (2 * width - 1) + 3 * cls
        self.weight = nn.Parameter(torch.zeros(num_heads, n))
        hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width),
                                indexing="xy")
        coords = torch.stack([hh.flatten(), ww.flatten()], -1)
        rel = coords[:, None] - coords[None]  # (P, P, 2)
        index = rel[..., 0] + height - 1 + (
            rel[..., 1] + width - 1) * (2 * height - 1)
        if keys != queries:  # fewer keys: the last ones
            index = index[:, index.shape[1] - (keys - cls):]
        if cls:
            index = F.pad(index, (1, 0, 1, 0), value=n - 3)
            index[1:, 0] = n - 2
            index[0, 0] = n - 1
        self.register_buffer("index", index[:queries, :keys],
                             persistent=False)

    def forward(self, x):
        return x + self.weight[:, self.index]
'''


def _scores(call):
    """The attention scores input, in Keras's axis order."""
    x = call.inputs[0]
    if x.rank not in (3, 4) or any(d is None for d in x.shape[1:]):
        call.refuse(f"input shape {x.shape}", "attention scores (B, [heads,]"
                    " Q, K) of known sizes")
    if not x.layout.is_identity:
        x = call.want(0, identity(x.rank))
    return x


@rule("levit>MultiHeadPositionalEmbedding",
      variables=lambda cfg: ["positional_embedding"], masks="propagate")
def multi_head_positional_embedding(call):
    """nn.Module PositionalBias in model.py (bias table indexed by offsets)"""
    x = _scores(call)
    heads = x.shape[1] if x.rank == 4 else 0
    qq, kk = x.shape[-2:]
    qh_cfg = int(call.get("query_height", -1))
    kh_cfg = int(call.get("key_height", -1))
    if qh_cfg == -1:
        qh = qw = int(float(qq) ** 0.5)
    else:
        qh, qw = qh_cfg, int(qq / qh_cfg)
    strides = int(math.ceil(float(kk / qq) ** 0.5))
    if kh_cfg == -1:
        kh = qh * strides
        while kh > 1 and kk % kh != 0:
            kh -= 1
        kw = int(kk / kh)
    else:
        kh, kw = kh_cfg, int(kk / kh_cfg)
    if qh * qw != qq or kh * kw != kk or min(qh, qw, kh, kw) < 1:
        call.refuse(f"query/key grids {qh}x{qw}, {kh}x{kw}",
                    f"do not cover {qq} queries and {kk} keys")
    w = call.weights(["positional_embedding"])["positional_embedding"]
    want = (kk, heads) if heads else (kk,)
    if tuple(w.shape) != want:
        call.refuse("positional_embedding", f"expected shape {want}, got "
                    f"{tuple(w.shape)}")
    module = (f"PositionalBias({heads}, ({qh}, {qw}), ({kh}, {kw}), "
              f"{strides})")
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=module,
                state={"weight": lambda: as_f32(w.read())},
                helpers={"PositionalBias": POSITIONAL_BIAS})


@rule("beit>MultiHeadRelativePositionalEmbedding",
      variables=lambda cfg: ["positional_embedding"], masks="propagate")
def multi_head_relative_positional_embedding(call):
    """nn.Module RelativePositionBias in model.py (BEiT relative index)"""
    x = _scores(call)
    if x.rank != 4:
        call.refuse(f"rank {x.rank}", "attention scores (B, heads, Q, K)")
    _, heads, qb, kb = x.shape
    cls_token = bool(call.get("with_cls_token", True))
    cls = 1 if cls_token else 0
    height_cfg = int(call.get("attn_height", -1))
    if height_cfg == -1:
        height = width = int(float(qb - cls) ** 0.5)
    else:
        height, width = height_cfg, int(float(qb - cls) / height_cfg)
    heads_cfg = int(call.get("num_heads", -1))
    if heads_cfg not in (-1, heads):
        call.refuse(f"num_heads={heads_cfg}", f"the scores have {heads} "
                    "heads")
    if height < 1 or width < 1 or kb - cls < 1 or kb - cls > height * width:
        call.refuse(f"grid {height}x{width}", f"does not fit {qb} queries "
                    f"and {kb} keys")
    n = (2 * height - 1) * (2 * width - 1) + 3 * cls
    w = call.weights(["positional_embedding"])["positional_embedding"]
    if tuple(w.shape) != (heads, n):
        call.refuse("positional_embedding", f"expected shape ({heads}, {n}),"
                    f" got {tuple(w.shape)}")
    module = (f"RelativePositionBias({heads}, {height}, {width}, {qb}, {kb}"
              f"{'' if cls_token else ', cls_token=False'})")
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=module,
                state={"weight": lambda: as_f32(w.read())},
                helpers={"RelativePositionBias": RELATIVE_POSITION_BIAS})
