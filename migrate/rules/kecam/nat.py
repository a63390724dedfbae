"""``kecam/nat>MultiHeadRelativePositionalKernelBias`` (NAT, DiNAT): a
learned bias per head for every offset inside each query's ``size x size``
neighbourhood, added to the neighbourhood attention scores ``(B, H * W,
heads, ..., size * size)`` (``is_heads_first``: ``(B, heads, H * W, ...)``).
The weight is ``(heads, (2 size - 1) ** 2)``; the index of every (query,
neighbour) pair is computed in ``__init__`` as kecam's ``build`` does
(queries near the border keep the border's neighbourhood; dilation).
"""
from __future__ import annotations

from ...layout import identity
from ..base import Emit, Out, Transformed, chain
from ..common import as_f32, lit
from ..registry import rule

KERNEL_BIAS = '''\
class KernelPositionBias(nn.Module):
    """kecam MultiHeadRelativePositionalKernelBias (NAT): a learned bias
    per head for every offset in each query's size x size neighbourhood,
    added to the scores (B, H * W, heads, ..., size * size), or
    (B, heads, H * W, ...) with heads_first."""

    def __init__(self, num_heads, height, width, size, dilation=(1, 1),
                 extra_axes=0, heads_first=False):
        super().__init__()
        self.heads_first = heads_first
        pos = 2 * size - 1
        self.weight = nn.Parameter(torch.zeros(num_heads, pos * pos))
        idx = torch.arange(size)

        def spread(total, rate):  # border queries keep the border's window
            left = idx[:size // 2].repeat_interleave(rate)
            right = idx[size // 2 + 1:].repeat_interleave(rate)
            center = idx[size // 2].repeat(total - len(left) - len(right))
            return torch.cat([left, center, right])
        start = spread(height, dilation[0])[:, None] * pos + spread(
            width, dilation[1])
        offsets = (idx[:, None] * pos + idx).flatten()
        index = (start[..., None] + offsets).reshape(-1, size * size)
        index = index.flip(0).reshape(-1, *[1] * extra_axes, size * size)
        self.register_buffer("index", index, persistent=False)

    def forward(self, x):
        bias = self.weight[:, self.index]  # (heads, H * W, ..., size**2)
        return x + (bias if self.heads_first else bias.transpose(0, 1))
'''


@rule("kecam/nat>MultiHeadRelativePositionalKernelBias",
      variables=lambda cfg: ["positional_embedding"], masks="propagate")
def multi_head_relative_positional_kernel_bias(call):
    """nn.Module KernelPositionBias in model.py (neighbourhood offsets)"""
    x = call.inputs[0]
    if x.rank < 4 or any(d is None for d in x.shape[1:]):
        call.refuse(f"input shape {x.shape}", "neighbourhood scores (B, "
                    "H * W, heads, ..., size * size) of known sizes")
    if not x.layout.is_identity:
        x = call.want(0, identity(x.rank))
    heads_first = bool(call.get("is_heads_first", False))
    blocks, heads = (x.shape[2], x.shape[1]) if heads_first else (
        x.shape[1], x.shape[2])
    size = int(float(x.shape[-1]) ** 0.5)
    height_cfg = int(call.get("input_height", -1))
    h = height_cfg if height_cfg > 0 else int(float(blocks) ** 0.5)
    w = blocks // h
    rate = call.get("dilation_rate", 1)
    rate = tuple(rate) if isinstance(rate, (list, tuple)) else (rate, rate)
    if (size * size != x.shape[-1] or h * w != blocks
            or h < 1 + (size - 1) * rate[0] or w < 1 + (size - 1) * rate[1]):
        call.refuse(f"{h}x{w} queries, {size}x{size} neighbourhoods",
                    f"do not fit the scores {x.shape}")
    wt = call.weights(["positional_embedding"])["positional_embedding"]
    pos = 2 * size - 1
    if tuple(wt.shape) != (heads, pos * pos):
        call.refuse("positional_embedding", f"expected shape ({heads}, "
                    f"{pos * pos}), got {tuple(wt.shape)}")
    args = f"{heads}, {h}, {w}, {size}" + "".join(
        f", {k}={lit(v)}" for k, v, d in (
            ("dilation", rate, (1, 1)), ("extra_axes", x.rank - 4, 0),
            ("heads_first", heads_first, False)) if v != d)
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=f"KernelPositionBias({args})",
                state={"weight": Transformed(as_f32, [wt])},
                helpers={"KernelPositionBias": KERNEL_BIAS})
