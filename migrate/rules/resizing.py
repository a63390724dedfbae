"""ZeroPadding3D, Cropping1D/2D/3D, UpSampling1D/2D/3D, Resizing and
CenterCrop.

Cropping and nearest upsampling index the torch dims that hold the Keras
axes, so they take any layout.  Nearest upsampling by an integer factor is
``repeat_interleave`` (exact, as Keras's ``ops.repeat``).  Bilinear
upsampling and :class:`Resizing` are TensorFlow's ``tf.image.resize``
without antialiasing: half-pixel centres, which is torch's
``align_corners=False`` for bilinear and ``"nearest-exact"`` for nearest.
Bicubic, area and Lanczos kernels differ between the libraries and are
refused.
"""
from __future__ import annotations

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
_MODES = {"bilinear": '"bilinear"', "nearest": '"nearest-exact"'}


def _image_input(call):
    """Input 0 as (N, C, H, W) (or Keras's own channels-first layout)."""
    x = _plain(call)
    if x.rank != 4:
        call.refuse(f"rank {x.rank}", "expected a batch of images (rank 4)")
    return call.want(0, _pad_layout(call.config, x.rank))


@rule("Resizing", prefers=_pad_layout)
def resizing(call):
    x = _image_input(call)
    interpolation = call.get("interpolation", "bilinear")
    if interpolation not in _MODES:
        call.refuse(f"interpolation={interpolation!r}",
                    "only bilinear and nearest match TensorFlow's resize")
    for option in ("crop_to_aspect_ratio", "pad_to_aspect_ratio",
                   "antialias"):
        if call.get(option):
            call.refuse(f"{option}=True", "not supported")
    h, w = int(call.get("height")), int(call.get("width"))
    axes = spatial_axes(x.rank, _fmt(call))
    shape = list(x.shape)
    shape[axes[0]], shape[axes[1]] = h, w
    code = (f"F.interpolate({x.expr}, size=({h}, {w}), "
            f"mode={_MODES[interpolation]})")
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)])


CENTER_CROP_HELPER = '''\
def center_crop(x, height, width):
    """The central height x width window of (N, C, H, W) images, as Keras
    CenterCrop takes it (the odd pixel goes to the end)."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
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
    if (n_h is not None and n_h < h) or (n_w is not None and n_w < w):
        call.refuse("height/width", "an input smaller than the crop is "
                    "resized by Keras (smart_resize), not supported")
    if n_h is None or n_w is None:
        return Emit([Out(chain(f"center_crop({x.expr}, {h}, {w})"),
                         tuple(shape), x.layout, x.dtype)],
                    helpers={"center_crop": CENTER_CROP_HELPER})
    top, left = (n_h - h) // 2, (n_w - w) // 2
    index = [":", ":", f"{top or ''}:{top + h}", f"{left or ''}:{left + w}"]
    if top == 0 and h == n_h:
        index[2] = ":"
    if left == 0 and w == n_w:
        index[3] = ":"
        while index[-1] == ":":
            index.pop()
    code = f"{x.expr}[{', '.join(index)}]" if index else x.expr
    return Emit([Out(chain(code), tuple(shape), x.layout, x.dtype)])
