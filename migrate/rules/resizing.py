"""ZeroPadding3D, Cropping1D/2D/3D, UpSampling1D/2D/3D, Resizing and
CenterCrop.

Cropping and nearest upsampling index the torch dims that hold the Keras
axes, so they take any layout.  Nearest upsampling by an integer factor is
``repeat_interleave`` (exact, as Keras's ``ops.repeat``).  Bilinear
upsampling and :class:`Resizing` are TensorFlow's ``tf.image.resize``:
half-pixel centres, which is torch's ``align_corners=False`` for bilinear
and ``"nearest-exact"`` for nearest; TF's antialiasing is torch's
``antialias=True`` for bilinear and bicubic.  ``crop_to_aspect_ratio`` (and
CenterCrop on images smaller than the crop, Keras's ``smart_resize``) slice
Keras's centred window first; ``pad_to_aspect_ratio`` pads first.  Area,
Lanczos, Gaussian and Mitchell kernels, and plain bicubic except at
power-of-two upscales, differ between the libraries and are refused.
"""
from __future__ import annotations

import numpy as np

from ..layout import identity
from .base import Emit, Out, chain
from .common import lit, ntuple, spatial_axes
from .registry import rule
from .reshaping import _pad_layout, _pairs, _zero_pad


def _fmt(call) -> str:
    return call.get("data_format", "channels_last") or "channels_last"


def _plain(call, i=0):
    """Input ``i``, un-flattened (any permutation is fine)."""
    x = call.inputs[i]
    if x.layout.flat is not None:
        x = call.want(i, identity(x.rank))
    return x


@rule("ZeroPadding3D", prefers=_pad_layout)
def zero_padding3d(call):
    return _zero_pad(call, 3)


# -- cropping -----------------------------------------------------------------
def _crop(call, nd: int, axes=None):
    x = _plain(call)
    if axes is None:
        axes = spatial_axes(x.rank, _fmt(call))
    pairs = _pairs(call.get("cropping", 1), nd)
    by_dim = {x.layout.torch_axis(a): p for a, p in zip(axes, pairs)}
    index = []
    for d in range(x.rank):
        b, e = by_dim.get(d, (0, 0))
        index.append(f"{b if b else ''}:{-e if e else ''}")
    while index and index[-1] == ":":
        index.pop()
    shape = list(x.shape)
    for a, (b, e) in zip(axes, pairs):
        if shape[a] is not None:
            shape[a] -= b + e
            if shape[a] <= 0:
                call.refuse("cropping", f"crops all of axis {a}")
    code = f"{x.expr}[{', '.join(index)}]" if index else x.expr
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)])


@rule("Cropping1D", prefers=_pad_layout)
def cropping1d(call):
    return _crop(call, 1, axes=[1])


@rule("Cropping2D", prefers=_pad_layout)
def cropping2d(call):
    return _crop(call, 2)


@rule("Cropping3D", prefers=_pad_layout)
def cropping3d(call):
    return _crop(call, 3)


# -- upsampling ---------------------------------------------------------------
def _repeat(call, x, axes, sizes):
    code = x.expr
    shape = list(x.shape)
    for a, s in zip(axes, sizes):
        if s != 1:
            dim = x.layout.torch_axis(a)
            code = f"{code}.repeat_interleave({s}, dim={dim})"
        shape[a] = None if shape[a] is None else shape[a] * s
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)])


@rule("UpSampling1D", prefers=_pad_layout)
def upsampling1d(call):
    x = _plain(call)
    return _repeat(call, x, [1], [int(call.get("size", 2))])


def _upsample(call, nd: int):
    x = _plain(call)
    fmt = _fmt(call)
    sizes = ntuple(call.get("size", 2), nd, "size")
    interpolation = call.get("interpolation", "nearest") or "nearest"
    axes = spatial_axes(x.rank, fmt)
    if interpolation == "nearest":
        return _repeat(call, x, axes, sizes)
    if interpolation != "bilinear" or nd != 2:
        call.refuse(f"interpolation={interpolation!r}",
                    "only nearest and bilinear match TensorFlow")
    x = call.want(0, _pad_layout(call.config, x.rank))
    shape = list(x.shape)
    for a, s in zip(axes, sizes):
        shape[a] = None if shape[a] is None else shape[a] * s
    scale = lit(sizes[0]) if sizes[0] == sizes[1] else lit(tuple(sizes))
    code = (f"F.interpolate({x.expr}, scale_factor={scale}, "
            f"mode=\"bilinear\")")
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)])


@rule("UpSampling2D", prefers=_pad_layout)
def upsampling2d(call):
    return _upsample(call, 2)


@rule("UpSampling3D", prefers=_pad_layout)
def upsampling3d(call):
    return _upsample(call, 3)


# -- Resizing and CenterCrop ------------------------------------------------
# tf.image.resize's kernels that torch reproduces.  Antialiasing (TF's
# scale_and_translate with the kernel widened by the downscale factor,
# renormalised at the borders) is torch's ``antialias=True`` for bilinear
# and bicubic (torch's antialiased bicubic uses Keys' a=-0.5, as TF does);
# TF's nearest ignores ``antialias``.
_MODES = {"bilinear": '"bilinear"', "nearest": '"nearest-exact"',
          "bicubic": '"bicubic"'}
_REFUSED_MODES = {
    "area": "TensorFlow's area resize averages fractional pixel footprints; "
            "torch's area is adaptive average pooling (equal only at "
            "integer ratios)",
    "lanczos3": "torch has no Lanczos kernel",
    "lanczos5": "torch has no Lanczos kernel",
    "gaussian": "torch has no Gaussian resize kernel",
    "mitchellcubic": "torch's cubic is Keys' kernel, not Mitchell-Netravali",
}
_BICUBIC_EXACT = {1, 2, 4, 8, 16}


def _image_input(call):
    """Input 0 as (N, C, H, W) (or Keras's own channels-first layout)."""
    x = _plain(call)
    if x.rank != 4:
        call.refuse(f"rank {x.rank}", "expected a batch of images (rank 4)")
    return call.want(0, _pad_layout(call.config, x.rank))


def _div(a: int, b: int, f32: bool = True) -> int:
    """``int(a / b)`` as Keras computes a crop or pad size: in float32
    (float64 for Keras 3's CenterCrop on static shapes)."""
    if f32:
        return int(np.float32(a) / np.float32(b))
    return int(float(a) / b)


def _aspect_crop(n_h, n_w, h, w, f32=True):
    """Keras's smart_resize crop box (top, left, crop_h, crop_w): the
    largest centred window of aspect h:w, the odd pixel at the end."""
    crop_h = max(min(n_h, _div(n_w * h, w, f32)), 1)
    crop_w = max(min(n_w, _div(n_h * w, h, f32)), 1)
    return (n_h - crop_h) // 2, (n_w - crop_w) // 2, crop_h, crop_w


def _aspect_pad(n_h, n_w, h, w):
    """Keras's pad_to_aspect_ratio: (top, left) pixels on *both* sides
    (half the missing rows or columns, rounded down)."""
    top = (max(n_h, _div(n_w * h, w)) - n_h) // 2
    left = (max(n_w, _div(n_h * w, h)) - n_w) // 2
    return top, left


def _window(expr, n_h, n_w, top, left, crop_h, crop_w):
    index = [":", ":", f"{top or ''}:{top + crop_h}",
             f"{left or ''}:{left + crop_w}"]
    if top == 0 and crop_h == n_h:
        index[2] = ":"
    if left == 0 and crop_w == n_w:
        index[3] = ":"
        while index and index[-1] == ":":
            index.pop()
    return f"{expr}[{', '.join(index)}]" if index else expr


CROP_TO_ASPECT_HELPER = '''\
def crop_to_aspect(x, height, width):
    """The largest centred window of (N, C, H, W) images with the aspect
    ratio height:width, as Keras's smart_resize takes it (the odd pixel goes
    to the end; Keras divides in float32, the same below 2**24 pixels)."""
    h, w = x.shape[-2], x.shape[-1]
    crop_h = max(min(h, w * height // width), 1)
    crop_w = max(min(w, h * width // height), 1)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return x[..., top:top + crop_h, left:left + crop_w]
'''

PAD_TO_ASPECT_HELPER = '''\
def pad_to_aspect(x, height, width, value):
    """(N, C, H, W) images padded with value on both sides of the short
    side towards the aspect ratio height:width, as Keras's Resizing
    (pad_to_aspect_ratio=True) pads them (an odd missing row or column is
    left out)."""
    h, w = x.shape[-2], x.shape[-1]
    top = (max(h, w * height // width) - h) // 2
    left = (max(w, h * width // height) - w) // 2
    return F.pad(x, (left, left, top, top), value=value)
'''


def _interpolate(expr, h, w, mode, antialias):
    aa = ", antialias=True" if antialias else ""
    return f"F.interpolate({expr}, size=({h}, {w}), mode={mode}{aa})"


@rule("Resizing", prefers=_pad_layout)
def resizing(call):
    x = _image_input(call)
    interpolation = call.get("interpolation", "bilinear")
    antialias = bool(call.get("antialias", False))
    crop = bool(call.get("crop_to_aspect_ratio", False))
    pad = bool(call.get("pad_to_aspect_ratio", False))
    if interpolation in _REFUSED_MODES:
        call.refuse(f"interpolation={interpolation!r}",
                    _REFUSED_MODES[interpolation])
    if interpolation not in _MODES:
        call.refuse(f"interpolation={interpolation!r}",
                    "not an interpolation tf.image.resize knows")
    if crop and pad:
        call.refuse("crop_to_aspect_ratio/pad_to_aspect_ratio",
                    "Keras allows only one of them")
    fill_mode = call.get("fill_mode", "constant")
    value = float(call.get("fill_value", 0.0) or 0.0) if pad else 0.0
    if pad and fill_mode != "constant":
        call.refuse(f"fill_mode={fill_mode!r}",
                    "Keras pads only with a constant")
    h, w = int(call.get("height")), int(call.get("width"))
    axes = spatial_axes(x.rank, _fmt(call))
    n_h, n_w = x.shape[axes[0]], x.shape[axes[1]]
    static = n_h is not None and n_w is not None
    helpers = {}
    code = x.expr
    if crop and static:
        box = _aspect_crop(n_h, n_w, h, w)
        code = _window(code, n_h, n_w, *box)
        n_h, n_w = box[2:]
    elif crop:
        code = f"crop_to_aspect({code}, {h}, {w})"
        helpers["crop_to_aspect"] = CROP_TO_ASPECT_HELPER
    elif pad and static:
        top, left = _aspect_pad(n_h, n_w, h, w)
        if top or left:
            code = (f"F.pad({code}, ({left}, {left}, {top}, {top}), "
                    f"value={lit(value)})")
        n_h, n_w = n_h + 2 * top, n_w + 2 * left
    elif pad:
        code = f"pad_to_aspect({code}, {h}, {w}, {lit(value)})"
        helpers["pad_to_aspect"] = PAD_TO_ASPECT_HELPER
    if interpolation == "nearest":
        antialias = False  # TF ignores it for nearest
    elif interpolation == "bicubic" and not antialias:
        # TF's plain bicubic samples Keys' kernel from a 1024-entry table;
        # torch's plain bicubic uses a=-0.75.  At power-of-two upscales the
        # table is exact and TF's weights are torch's antialiased bicubic.
        ok = static and all(o % i == 0 and o // i in _BICUBIC_EXACT
                            for i, o in ((n_h, h), (n_w, w)))
        if not ok:
            call.refuse("interpolation='bicubic'",
                        "without antialias, TensorFlow's bicubic (a=-0.5, "
                        "tabulated) matches torch only for power-of-two "
                        "upscales of a known input size (torch's plain "
                        "bicubic uses a=-0.75)")
        antialias = True
    shape = list(x.shape)
    shape[axes[0]], shape[axes[1]] = h, w
    code = _interpolate(code, h, w, _MODES[interpolation], antialias)
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)],
                helpers=helpers)


CENTER_CROP_HELPER = '''\
def center_crop(x, height, width):
    """The central height x width window of (N, C, H, W) images, as Keras
    CenterCrop takes it (the odd pixel goes to the end); images smaller than
    the window are resized as Keras does (smart_resize, bilinear)."""
    h, w = x.shape[-2], x.shape[-1]
    if h < height or w < width:
        return F.interpolate(crop_to_aspect(x, height, width),
                             size=(height, width), mode="bilinear")
    top, left = (h - height) // 2, (w - width) // 2
    return x[..., top:top + height, left:left + width]
'''


@rule("CenterCrop", prefers=_pad_layout)
def center_crop(call):
    x = _image_input(call)
    h, w = int(call.get("height")), int(call.get("width"))
    axes = spatial_axes(x.rank, _fmt(call))
    n_h, n_w = x.shape[axes[0]], x.shape[axes[1]]
    shape = list(x.shape)
    shape[axes[0]], shape[axes[1]] = h, w
    if n_h is None or n_w is None:
        return Emit([Out(chain(f"center_crop({x.expr}, {h}, {w})"),
                         tuple(shape), x.layout, x.dtype)],
                    helpers={"center_crop": CENTER_CROP_HELPER,
                             "crop_to_aspect": CROP_TO_ASPECT_HELPER})
    if n_h < h or n_w < w:
        # Keras resizes the largest centred window of the crop's aspect
        # ratio (smart_resize; Keras 3 divides in float64 here)
        box = _aspect_crop(n_h, n_w, h, w, f32=call.keras_major < 3)
        code = _window(x.expr, n_h, n_w, *box)
        code = _interpolate(code, h, w, _MODES["bilinear"], False)
    else:
        code = _window(x.expr, n_h, n_w, (n_h - h) // 2, (n_w - w) // 2,
                       h, w)
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)])
