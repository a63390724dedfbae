"""``botnet>RelativePositionalEmbedding`` (BotNet, HaloNet): the position
logits of queries ``(B, heads, H, W, D)`` against a ``(PH, PW)`` grid of
keys, ``(B, heads, H, W, PH, PW)``, from a learned embedding per axis:
relative (``2P - 1`` offsets, turned into absolute positions as kecam's
``rel_to_abs`` does) or absolute (``use_absolute_pos``).
"""
from __future__ import annotations

from ...layout import identity
from ..base import Emit, Out, chain
from ..common import as_f32
from ..registry import rule

RELATIVE_LOGITS = '''\
class RelativeLogits(nn.Module):
    """kecam RelativePositionalEmbedding (BotNet): logits of queries
    (B, heads, H, W, D) for a (PH, PW) grid of keys, from learned
    per-axis embeddings of relative (or absolute) positions."""

    def __init__(self, key_dim, height, width, pos_height, pos_width,
                 absolute=False):
        super().__init__()
        self.size = (height, width, pos_height, pos_width)
        self.absolute = absolute
        nh, nw = (pos_height, pos_width) if absolute else (
            2 * pos_height - 1, 2 * pos_width - 1)
        self.r_height = nn.Parameter(torch.zeros(key_dim, nh))
        self.r_width = nn.Parameter(torch.zeros(key_dim, nw))

    @staticmethod
    def rel_to_abs(x, pos_dim, blocks):
        """(N, a, b, 2 * pos_dim - 1) offsets -> (N, a, b, pos_dim)."""
        if pos_dim == 1:
            return x
        if blocks == 1:
            return x[..., -pos_dim:]
        _, a, b, d = x.shape
        flat = x.reshape(-1, a, b * d)[:, :, b - 1:-1]
        gap = pos_dim - blocks
        flat = flat.reshape(-1, a, b, 2 * (pos_dim - 1))
        return flat[..., gap:pos_dim + gap]

    def forward(self, q):  # (B, heads, H, W, D)
        h, w, ph, pw = self.size
        if self.absolute:
            return ((q @ self.r_width).unsqueeze(-2)
                    + (q @ self.r_height).unsqueeze(-1))
        x = q.reshape(-1, h, w, q.shape[-1])
        rel_w = self.rel_to_abs(x @ self.r_width, pw, w)  # (N, H, W, PW)
        rel_h = self.rel_to_abs(x.transpose(1, 2) @ self.r_height, ph, h)
        logits = rel_w.unsqueeze(-2) + rel_h.transpose(1, 2).unsqueeze(-1)
        return logits.reshape(-1, q.shape[1], h, w, ph, pw)
'''


@rule("botnet>RelativePositionalEmbedding",
      variables=lambda cfg: ["r_height", "r_width"])
def relative_positional_embedding(call):
    """nn.Module RelativeLogits in model.py (per-axis matmuls, rel_to_abs)"""
    x = call.inputs[0]
    if x.rank != 5 or any(d is None for d in x.shape[1:]):
        call.refuse(f"input shape {x.shape}", "queries (B, heads, H, W, D) "
                    "of known sizes")
    if not x.layout.is_identity:
        x = call.want(0, identity(5))
    _, heads, h, w, d = x.shape
    ph = int(call.get("position_height", 0))
    pw = int(call.get("position_width", 0)) or ph
    ph, pw = (ph if ph > h else h), (pw if pw > w else w)
    absolute = bool(call.get("use_absolute_pos", False))
    wts = call.weights(["r_height", "r_width"])
    nh, nw = (ph, pw) if absolute else (2 * ph - 1, 2 * pw - 1)
    for name, want in (("r_height", (d, nh)), ("r_width", (d, nw))):
        if tuple(wts[name].shape) != want:
            call.refuse(name, f"expected shape {want}, got "
                        f"{tuple(wts[name].shape)}")
    code = [f"self.{call.attr}({x.expr})"]
    shape = (x.shape[0], heads, h, w, ph, pw)
    if call.get("dynamic_shape", False) and (h < ph or w < pw):
        code = chain(code[0], f"{{}}[..., :{h}, :{w}]")
        shape = (x.shape[0], heads, h, w, h, w)
    args = f"{d}, {h}, {w}, {ph}, {pw}" + (", absolute=True" if absolute
                                           else "")
    return Emit([Out(code, shape, identity(6), x.dtype)],
                module=f"RelativeLogits({args})",
                state={"r_height": lambda: as_f32(wts["r_height"].read()),
                       "r_width": lambda: as_f32(wts["r_width"].read())},
                helpers={"RelativeLogits": RELATIVE_LOGITS})
