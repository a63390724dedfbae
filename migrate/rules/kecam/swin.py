"""The attention pieces of kecam's Swin Transformer V2 (and FasterViT).

* ``kecam>ExpLogitScale`` (Swin V2 cosine attention, CLIP): ``x *
  exp(min(gamma, max_value))``, ``gamma`` learned per ``axis``.
* ``kecam>MlpPairwisePositionalEmbedding`` (Swin V2, FasterViT): a small
  MLP (2 -> hidden, relu, -> out) of fixed coordinates.  Relative (the
  default): log-spaced relative offsets of a ``height x width`` window,
  gathered per (query, key), ``16 * sigmoid``, added to the attention
  scores ``(B, heads, Q, K)`` (leading extra tokens get 0).  Absolute
  (``use_absolute_pos``): coordinates in ``[-1, 1)`` of every token of
  ``(B, H, W, C)`` or ``(B, H * W, C)``, added to the tokens.  Deploy mode
  adds its stored ``deploy_bias``.
* ``kecam>WindowAttentionMask`` (Swin V2 shifted windows): ``-100`` on the
  scores ``(B * windows, heads, Q, Q)`` between tokens of different
  regions of a shifted window.

Coordinate tables and indices are computed in the generated module's
``__init__`` as kecam's ``build`` does (in float64 where numpy does).
"""
from __future__ import annotations

from ...layout import channels_first, identity
from ..base import Emit, Out, Transformed, chain
from ..common import as_f32, lit
from ..registry import rule
from .common import broadcast_param

PAIRWISE_BIAS = '''\
class PairwisePositionBias(nn.Module):
    """kecam MlpPairwisePositionalEmbedding (Swin V2): an MLP of
    log-spaced relative coordinates gives a bias per head for every
    (query, key) pair, 16 * sigmoid, added to the scores (B, heads, Q, K);
    `padding` leading tokens (outside the window) get 0."""

    def __init__(self, num_heads, height, width, hidden_dim=512,
                 pos_scale=None, padding=0):
        super().__init__()
        self.padding = padding
        self.hidden_weight = nn.Parameter(torch.zeros(2, hidden_dim))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden_dim))
        self.out = nn.Parameter(torch.zeros(hidden_dim, num_heads))
        sh, sw = pos_scale or (height, width)
        hh, ww = torch.meshgrid(torch.arange(1 - height, height),
                                torch.arange(1 - width, width), indexing="ij")
        coords = torch.stack([hh, ww], -1).double() * 8
        coords = coords / torch.tensor([sh - 1.0, sw - 1.0]).double()
        coords = coords.sign() * torch.log2(1.0 + coords.abs()) / 3.0
        self.register_buffer("coords", coords.reshape(-1, 2).float(),
                             persistent=False)
        hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width),
                                indexing="xy")
        points = torch.stack([hh.flatten(), ww.flatten()], -1)
        rel = points[:, None] - points[None]  # (P, P, 2)
        index = rel[..., 0] + height - 1 + (
            rel[..., 1] + width - 1) * (2 * height - 1)
        self.register_buffer("index", index, persistent=False)

    def forward(self, x):
        bias = F.relu(self.coords @ self.hidden_weight + self.hidden_bias)
        bias = torch.sigmoid((bias @ self.out)[self.index]) * 16.0
        if self.padding:  # (Q, K, heads)
            bias = F.pad(bias, (0, 0, self.padding, 0, self.padding, 0))
        return x + bias.permute(2, 0, 1)
'''

ABSOLUTE_BIAS = '''\
class AbsolutePositionMlp(nn.Module):
    """kecam MlpPairwisePositionalEmbedding(use_absolute_pos=True)
    (FasterViT): an MLP of every token's (row, column) in [-1, 1) added to
    the tokens (B, H * W, C), or an image (B, C, H, W) channels-first."""

    def __init__(self, height, width, channels, hidden_dim=512,
                 flat=True):
        super().__init__()
        self.flat = flat
        self.hidden_weight = nn.Parameter(torch.zeros(2, hidden_dim))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden_dim))
        self.out = nn.Parameter(torch.zeros(hidden_dim, channels))
        hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width),
                                indexing="ij")
        coords = torch.stack([hh, ww], -1).double()
        coords = coords / torch.tensor([height // 2, width // 2]) - 1
        self.register_buffer("coords", coords.reshape(-1, 2).float(),
                             persistent=False)
        self.size = (height, width)

    def forward(self, x):
        bias = F.relu(self.coords @ self.hidden_weight + self.hidden_bias)
        bias = bias @ self.out  # (H * W, C)
        if self.flat:
            return x + bias
        return x + bias.t().unflatten(1, self.size)
'''

WINDOW_MASK = '''\
class ShiftedWindowMask(nn.Module):
    """kecam WindowAttentionMask (Swin): -100 on the attention scores
    (B * windows, heads, Q, Q) between tokens that come from different
    regions of a shifted window."""

    def __init__(self, height, width, window_height, window_width,
                 shift_height=0, shift_width=0):
        super().__init__()
        hs = [0, height - window_height, height - shift_height, height]
        ws = [0, width - window_width, width - shift_width, width]
        region = torch.zeros(height, width)
        for i in range(3):
            for j in range(3):
                region[hs[i]:hs[i + 1], ws[j]:ws[j + 1]] = 3 * i + j
        region = region.reshape(height // window_height, window_height,
                                width // window_width, window_width)
        region = region.transpose(1, 2).flatten(2).flatten(0, 1)
        differ = region[:, None, :] != region[:, :, None]  # (windows, Q, Q)
        mask = torch.where(differ, -100.0, 0.0)[:, None]
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):  # (B * windows, heads, Q, Q)
        x = x.unflatten(0, (-1, self.mask.shape[0])) + self.mask
        return x.flatten(0, 1)
'''


@rule("kecam>ExpLogitScale", variables=lambda cfg: ["gamma"],
      masks="propagate")
def exp_logit_scale(call):
    """torch.exp of an nn.Parameter clamped at max_value, times x"""
    gamma = call.weights(["gamma"])["gamma"]
    x, shape, value = broadcast_param(call, 0, gamma, True)
    max_value = float(call.get("max_value", 4.605170185988092))
    module = f"nn.Parameter(torch.zeros({', '.join(map(str, shape))}))"
    code = f"{x.expr} * self.{call.attr}.clamp(max={lit(max_value)}).exp()"
    return Emit([Out(chain(code), x.shape, x.layout, x.dtype)],
                module=module, state={"": value})


def _pairwise_variables(cfg):
    if cfg.get("is_deploy_mode"):
        return ["deploy_bias"]
    return ["hidden_weight", "hidden_bias", "out"]


def _mlp_state(call, wts, out_shape):
    hidden = int(call.get("hidden_dim", 512))
    for name, want in (("hidden_weight", (2, hidden)),
                       ("hidden_bias", (hidden,)), ("out", out_shape)):
        if tuple(wts[name].shape) != want:
            call.refuse(name, f"expected shape {want}, got "
                        f"{tuple(wts[name].shape)}")
    return hidden, {n: Transformed(as_f32, [wts[n]]) for n in wts}


@rule("kecam>MlpPairwisePositionalEmbedding", variables=_pairwise_variables,
      masks="propagate")
def mlp_pairwise_positional_embedding(call):
    """nn.Module PairwisePositionBias in model.py (MLP of coordinates)"""
    wts = call.weights(_pairwise_variables(call.config))
    if call.get("is_deploy_mode", False):
        x, shape, value = broadcast_param(call, 0, wts["deploy_bias"], True)
        module = f"nn.Parameter(torch.zeros({', '.join(map(str, shape))}))"
        return Emit([Out(chain(f"{x.expr} + self.{call.attr}"), x.shape,
                         x.layout, x.dtype)],
                    module=module, state={"": value})
    x = call.inputs[0]
    if any(d is None for d in x.shape[1:]):
        call.refuse(f"input shape {x.shape}", "known sizes")
    attn_h = int(call.get("attn_height", -1))
    if call.get("use_absolute_pos", False):
        return _absolute(call, x, wts, attn_h)
    if x.rank != 4 or x.shape[2] != x.shape[3]:
        call.refuse(f"input shape {x.shape}", "attention scores (B, heads, "
                    "Q, Q)")
    if not x.layout.is_identity:
        x = call.want(0, identity(4))
    _, heads, q, _ = x.shape
    h = int(float(q) ** 0.5) if attn_h == -1 else attn_h
    attn_w = int(call.get("attn_width", -1))
    w = q // h if attn_w == -1 else attn_w
    padding = q - h * w
    if h < 2 or w < 2 or padding < 0:
        call.refuse(f"window {h}x{w}", f"does not fit {q} queries")
    scale = call.get("pos_scale", -1)
    if scale == -1:
        scale = None
    elif isinstance(scale, (list, tuple)):
        scale = tuple(int(s) for s in scale)
    else:
        scale = (int(scale), int(scale))
    if scale is not None and min(scale) < 2:
        call.refuse(f"pos_scale={scale}", "at least 2 (kecam divides by "
                    "pos_scale - 1)")
    hidden, state = _mlp_state(call, wts, (int(call.get("hidden_dim", 512)),
                                           heads))
    args = f"{heads}, {h}, {w}" + "".join(
        f", {k}={lit(v)}" for k, v, d in (("hidden_dim", hidden, 512),
                                          ("pos_scale", scale, None),
                                          ("padding", padding, 0))
        if v != d)
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=f"PairwisePositionBias({args})", state=state,
                helpers={"PairwisePositionBias": PAIRWISE_BIAS})


def _absolute(call, x, wts, attn_h):
    if x.rank == 3:
        if not x.layout.is_identity:
            x = call.want(0, identity(3))
        _, n, c = x.shape
        h = int(float(n) ** 0.5) if attn_h == -1 else attn_h
        w = n // h
        flat = True
    elif x.rank == 4:
        x = call.want(0, channels_first(4))
        _, h, w, c = x.shape
        flat = False
    else:
        call.refuse(f"rank {x.rank}", "tokens (B, N, C) or an image")
    if h < 2 or w < 2 or (flat and h * w != n):
        call.refuse(f"grid {h}x{w}", f"does not fit the input {x.shape}")
    hidden, state = _mlp_state(call, wts, (int(call.get("hidden_dim", 512)),
                                           c))
    args = f"{h}, {w}, {c}" + (f", hidden_dim={hidden}" if hidden != 512
                               else "") + ("" if flat else ", flat=False")
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=f"AbsolutePositionMlp({args})", state=state,
                helpers={"AbsolutePositionMlp": ABSOLUTE_BIAS})


@rule("kecam>WindowAttentionMask", variables=lambda cfg: [],
      masks="propagate")
def window_attention_mask(call):
    """nn.Module ShiftedWindowMask in model.py (-100 across regions)"""
    x = call.inputs[0]
    if x.rank != 4 or any(d is None for d in x.shape[1:]):
        call.refuse(f"input shape {x.shape}", "attention scores (B * "
                    "windows, heads, Q, Q) of known sizes")
    if not x.layout.is_identity:
        x = call.want(0, identity(4))
    h, w = int(call.get("height")), int(call.get("width"))
    wh, ww = int(call.get("window_height")), int(call.get("window_width"))
    sh = int(call.get("shift_height", 0))
    sw = int(call.get("shift_width", 0))
    if min(wh, ww) < 1 or h % wh or w % ww or not (
            0 <= sh <= wh and 0 <= sw <= ww) or x.shape[2:] != (
            wh * ww, wh * ww):
        call.refuse(f"windows {wh}x{ww} shifted {sh}x{sw}", f"tile {h}x{w} "
                    f"with scores {x.shape[2:]}")
    args = f"{h}, {w}, {wh}, {ww}, {sh}, {sw}"
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout, x.dtype)],
                module=f"ShiftedWindowMask({args})",
                helpers={"ShiftedWindowMask": WINDOW_MASK})
