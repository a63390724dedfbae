"""``kecamCommon>CompatibleExtractPatches`` (CotNet, HaloNet, NAT): every
``sizes x sizes`` window of a channels-last image, as
``tf.image.extract_patches`` gives them (each patch flattened as
``(kh, kw, C)``), after a symmetric zero padding of ``sizes // 2`` for
``padding="same"``; ``compressed=False`` keeps ``(kh, kw, C)`` as three
axes.  In torch: ``F.unfold`` on the channels-first image, its
``(C, kh, kw)`` patch order moved to ``(kh, kw, C)``.
"""
from __future__ import annotations

from ...layout import channels_first, identity
from ..base import Emit, Out, chain
from ..registry import rule


def _pair(value, what, call):
    if isinstance(value, (list, tuple)):
        if len(value) == 4:  # [1, k, k, 1], as tf.image.extract_patches
            value = value[1:3]
        if len(value) != 2 or not all(isinstance(v, int) for v in value):
            call.refuse(f"{what}={value!r}", "an int or a pair")
        return tuple(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        call.refuse(f"{what}={value!r}", "a positive int")
    return (value, value)


@rule("kecamCommon>CompatibleExtractPatches", variables=lambda cfg: [])
def compatible_extract_patches(call):
    """F.unfold, patches in (kh, kw, C) order as tf.image.extract_patches"""
    if call.get("force_conv", False):
        call.refuse("force_conv=True", "the unfold-as-conv variant (its "
                    "kernel is stored as a weight); the default unfold "
                    "converts")
    x = call.inputs[0]
    if x.rank != 4 or any(d is None for d in x.shape[1:]):
        call.refuse(f"input shape {x.shape}", "a (B, H, W, C) image of "
                    "known size")
    kh, kw = _pair(call.get("sizes", 3), "sizes", call)
    if kh != kw:
        call.refuse(f"sizes={(kh, kw)}", "square patches (as kecam reads "
                    "them)")
    k = kh
    s = _pair(call.get("strides", 2), "strides", call)[0]
    rates = call.get("rates", 1)
    dh, dw = _pair(rates, "rates", call)
    padding = str(call.get("padding", "same")).lower()
    if padding not in ("same", "valid"):
        call.refuse(f"padding={padding!r}", "same or valid")
    p = k // 2 if padding == "same" else 0
    _, h, w, c = x.shape
    oh = (h + 2 * p - dh * (k - 1) - 1) // s + 1
    ow = (w + 2 * p - dw * (k - 1) - 1) // s + 1
    if oh < 1 or ow < 1:
        call.refuse("sizes", f"larger than the padded {h}x{w} input")
    x = call.want(0, channels_first(4))
    args = [x.expr, str(k)]
    if (dh, dw) != (1, 1):
        args.append(f"dilation={(dh, dw) if dh != dw else dh}")
    if p:
        args.append(f"padding={p}")
    if s != 1:
        args.append(f"stride={s}")
    unfold = f"F.unfold({', '.join(args)})"
    compressed = bool(call.get("compressed", True))
    if compressed:  # (B, k*k*C, oh, ow), channels in (kh, kw, C) order
        code = chain(unfold, f"{{}}.unflatten(1, ({c}, {k * k}))"
                     ".transpose(1, 2)"
                     f".reshape(-1, {k * k * c}, {oh}, {ow})")
        return Emit([Out(code, (x.shape[0], oh, ow, k * k * c),
                         channels_first(4), x.dtype)])
    code = chain(unfold, f"{{}}.reshape(-1, {c}, {k}, {k}, {oh}, {ow})"
                 ".permute(0, 4, 5, 2, 3, 1)")
    return Emit([Out(code, (x.shape[0], oh, ow, k, k, c), identity(6),
                     x.dtype)])
