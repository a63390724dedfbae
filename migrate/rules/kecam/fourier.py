"""Fixed sin/cos position tables of kecam (no stored table: computed in
the generated module's ``__init__`` as kecam's ``build`` does).

* ``kecam/edgenext>PositionalEncodingFourier`` (EdgeNeXt): ``x + table @
  ww + bb`` on an image ``(B, H, W, C)``; ``table`` ``(H, W, 2 filters)``
  holds sin/cos of the row and column positions scaled to ``(0, 2 pi]``,
  ``ww`` ``(2 filters, C)`` and ``bb`` ``(C,)`` are learned.
* ``beit>PositionalEncodingFourierRot`` (EVA02): 2D rotary embedding of
  tokens ``(B, ..., N, C)``: the class token kept, the ``H x W`` patches
  (then the register tokens, on their own grid) rotated pairwise, ``x *
  cos + rotate_half(x) * sin``, with sin/cos of row and column positions
  (scaled to ``ref_feature_shape``), repeated for every head.
"""
from __future__ import annotations

from ...layout import channels_first, identity
from ..base import Emit, Out, Transformed, chain
from ..common import as_f32, lit
from ..registry import rule

FOURIER_POSITION = '''\
class FourierPositionEncoding(nn.Module):
    """kecam PositionalEncodingFourier (EdgeNeXt): sin/cos of the row and
    column positions, projected by a learned map and added to an image
    (B, H, W, C), or (B, C, H, W) with channels_first."""

    def __init__(self, height, width, channels, filters=32, temperature=1e4,
                 channels_first=False):
        super().__init__()
        self.channels_first = channels_first
        self.ww = nn.Parameter(torch.zeros(2 * filters, channels))
        self.bb = nn.Parameter(torch.zeros(channels))
        dim_t = torch.arange(filters, dtype=torch.float32) // 2
        dim_t = temperature ** (2 * dim_t / filters)  # (filters,)

        def axis(n):  # (n, filters): sin, cos, sin, cos...
            pos = (torch.arange(n, dtype=torch.float32) + 1) / (n + 1e-6)
            pos = (pos * 2 * torch.pi)[:, None] / dim_t
            return torch.stack([pos[:, 0::2].sin(), pos[:, 1::2].cos()],
                               dim=-1).flatten(1)
        table = torch.cat([axis(height)[:, None].expand(-1, width, -1),
                           axis(width)[None].expand(height, -1, -1)], -1)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x):
        pos = self.table @ self.ww + self.bb  # (H, W, C)
        return x + (pos.permute(2, 0, 1) if self.channels_first else pos)
'''

ROTARY_2D = '''\
class Rotary2d(nn.Module):
    """kecam PositionalEncodingFourierRot (EVA02): 2D rotary position
    embedding of tokens (B, ..., N, C) = class tokens, height x width
    patches, register tokens; patches and registers are rotated pairwise
    by sin/cos of their row and column, repeated for every head."""

    def __init__(self, channels, height, width, cls_tokens=1, num_heads=1,
                 temperature=1e4, ref_shape=16, reg_tokens=0,
                 reg_temperature=100.0, reg_ref_shape=14):
        super().__init__()
        self.sizes = (cls_tokens, height * width, reg_tokens)
        args = channels, num_heads
        sin, cos = self.table(height, width, ref_shape, temperature, *args)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("cos", cos, persistent=False)
        side = int(reg_tokens ** 0.5)
        sin, cos = self.table(side, side, reg_ref_shape, reg_temperature,
                              *args)
        self.register_buffer("reg_sin", sin, persistent=False)
        self.register_buffer("reg_cos", cos, persistent=False)

    @staticmethod
    def table(height, width, ref_shape, temperature, channels, num_heads):
        hh = torch.arange(height, dtype=torch.float32)
        ww = torch.arange(width, dtype=torch.float32)
        if ref_shape > 0:
            hh, ww = hh / height * ref_shape, ww / width * ref_shape
        dim = channels // num_heads // 2
        freqs = torch.arange(0, dim, 2, dtype=torch.float32) / dim
        freqs = 1.0 / temperature ** freqs
        fh = (hh[:, None] * freqs).repeat_interleave(2, dim=-1)
        fw = (ww[:, None] * freqs).repeat_interleave(2, dim=-1)
        grid = torch.cat([fh[:, None].expand(-1, width, -1),
                          fw[None].expand(height, -1, -1)], dim=-1)
        grid = grid.flatten(0, 1)  # (P, C / heads)
        return grid.sin().repeat(1, num_heads), grid.cos().repeat(
            1, num_heads)

    @staticmethod
    def rotate(x, sin, cos):
        pairs = x.unflatten(-1, (-1, 2))
        half = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1)
        return x * cos + half.flatten(-2) * sin

    def forward(self, x):  # (B, ..., N, C)
        cls, patches, regs = x.split(self.sizes, dim=-2)
        patches = self.rotate(patches, self.sin, self.cos)
        regs = self.rotate(regs, self.reg_sin, self.reg_cos)
        return torch.cat([cls, patches, regs], dim=-2)
'''


def _ref(call, key, default):
    """A reference grid size; None or 0 means "none" (kecam's test)."""
    value = call.config.get(key, default)
    return int(value) if value and value > 0 else 0


def _known(call, x, what):
    if any(d is None for d in x.shape[1:]):
        call.refuse(f"input shape {x.shape}", f"{what} of known sizes")


@rule("kecam/edgenext>PositionalEncodingFourier",
      variables=lambda cfg: ["ww", "bb"], masks="propagate")
def positional_encoding_fourier(call):
    """nn.Module FourierPositionEncoding in model.py (sin/cos table)"""
    x = call.inputs[0]
    if x.rank != 4:
        call.refuse(f"rank {x.rank}", "an image (B, H, W, C)")
    _known(call, x, "an image (B, H, W, C)")
    first = x.layout == channels_first(4)
    if not first and x.layout != identity(4):
        x = call.want(0, identity(4))
    _, h, w, c = x.shape
    filters = int(call.get("filters", 32))
    temperature = float(call.get("temperature", 1e4))
    if filters < 2 or filters % 2:
        call.refuse(f"filters={filters}", "an even number (sin, cos pairs)")
    wts = call.weights(["ww", "bb"])
    for name, want in (("ww", (2 * filters, c)), ("bb", (c,))):
        if tuple(wts[name].shape) != want:
            call.refuse(name, f"expected shape {want}, got "
                        f"{tuple(wts[name].shape)}")
    args = f"{h}, {w}, {c}"
    if filters != 32:
        args += f", filters={filters}"
    if temperature != 1e4:
        args += f", temperature={lit(temperature)}"
    if first:
        args += ", channels_first=True"
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=f"FourierPositionEncoding({args})",
                state={n: Transformed(as_f32, [wts[n]]) for n in ("ww", "bb")},
                helpers={"FourierPositionEncoding": FOURIER_POSITION})


@rule("beit>PositionalEncodingFourierRot", variables=lambda cfg: [],
      masks="propagate")
def positional_encoding_fourier_rot(call):
    """nn.Module Rotary2d in model.py (2D rotary embedding)"""
    x = call.inputs[0]
    if x.rank < 3:
        call.refuse(f"rank {x.rank}", "tokens (B, ..., N, C)")
    _known(call, x, "tokens (B, ..., N, C)")
    if not x.layout.is_identity:
        x = call.want(0, identity(x.rank))
    blocks, c = x.shape[-2:]
    cls = 1 if call.get("with_cls_token", True) else 0
    reg = int(call.get("num_reg_tokens", 0) or 0)
    patches = blocks - cls - reg
    height_cfg = int(call.get("attn_height", -1))
    if height_cfg == -1:
        h = w = int(float(patches) ** 0.5)
    else:
        h, w = height_cfg, int(float(patches) / height_cfg)
    if reg < 0 or h < 1 or h * w != patches:
        call.refuse(f"grid {h}x{w}", f"does not cover the {patches} patch "
                    f"tokens of {blocks}")
    side = int(reg ** 0.5)
    if side * side != reg:
        call.refuse(f"num_reg_tokens={reg}", "a square number of register "
                    "tokens (kecam's grid for them)")
    heads_cfg = int(call.get("num_heads", -1))
    heads = heads_cfg if heads_cfg > 0 else 1
    dim = c // heads // 2
    if 4 * ((dim + 1) // 2) * heads != c:
        call.refuse(f"{c} channels", f"the sin/cos table does not fit them "
                    f"with {heads} head(s)")
    opts = [("cls_tokens", cls, 1), ("num_heads", heads, 1),
            ("temperature", float(call.get("temperature", 1e4)), 1e4),
            ("ref_shape", _ref(call, "ref_feature_shape", 16), 16),
            ("reg_tokens", reg, 0)]
    if reg:
        opts += [("reg_temperature",
                  float(call.get("reg_temperature", 100)), 100.0),
                 ("reg_ref_shape", _ref(call, "reg_ref_feature_shape", 14),
                  14)]
    args = f"{c}, {h}, {w}" + "".join(
        f", {k}={lit(v)}" for k, v, d in opts if v != d)
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=f"Rotary2d({args})",
                helpers={"Rotary2d": ROTARY_2D})
