"""Max/Average pooling 1D/2D and the global poolings.

TensorFlow's ``same`` pooling pads max pooling with -inf and leaves padded
cells out of averages.  Symmetric padding within half the window maps onto
torch's own ``padding`` (with ``count_include_pad=False`` for averages);
anything else pads explicitly.
"""
from __future__ import annotations

from ..layout import Layout, channels_first, identity
from .base import Emit, Out, chain
from .common import lit, ntuple, short, spatial_axes
from .padding import PAD_SAME_HELPER, conv_out, same_pads, torch_pad_arg
from .registry import rule

AVG_POOL_SAME_HELPER = '''\
def avg_pool_same(x, kernel_size, stride, pads):
    """Average pooling over TF "same" padding: padded cells are not
    counted, as in Keras."""
    pool = getattr(F, f"avg_pool{len(kernel_size)}d")
    ones = torch.ones_like(x[:1, :1])
    return (pool(F.pad(x, pads), kernel_size, stride)
            / pool(F.pad(ones, pads), kernel_size, stride))
'''


def _pool_layout(cfg, rank):
    if cfg.get("data_format") == "channels_first":
        return identity(rank)
    return channels_first(rank)


def _pool(call, nd: int, kind: str):
    fmt = call.get("data_format", "channels_last") or "channels_last"
    x = call.want(0, _pool_layout(call.config, call.inputs[0].rank))
    size = ntuple(call.get("pool_size", 2), nd, "pool_size")
    strides = call.get("strides")
    strides = size if strides is None else ntuple(strides, nd, "strides")
    padding = str(call.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        call.refuse(f"padding={padding!r}", "expected valid or same")
    fn = f"F.{kind}_pool{nd}d"
    args = [short(size)]
    if strides != size:
        args.append(short(strides))
    axes = spatial_axes(x.rank, fmt)
    helpers = {}
    pre = None
    if padding == "same":
        pads = [same_pads(x.shape[a], k, s, 1)
                for a, k, s in zip(axes, size, strides)]
        if any(p is None for p in pads):
            if kind == "avg":
                call.refuse("padding='same'", "average pooling with strides "
                            "> 1 needs a known input size")
            pre = (f"pad_same({{}}, {lit(size)}, {lit(strides)}, "
                   f"{lit((1,) * nd)}, value=float(\"-inf\"))")
            helpers["pad_same"] = PAD_SAME_HELPER
        elif all(b == a and b <= k // 2 for (b, a), k in zip(pads, size)):
            if any(b for b, _ in pads):
                args.append(f"padding={short(b for b, _ in pads)}")
                if kind == "avg":
                    args.append("count_include_pad=False")
        elif kind == "max":
            pre = (f"F.pad({{}}, {lit(torch_pad_arg(pads))}, "
                   f"value=float(\"-inf\"))")
        else:
            helpers["avg_pool_same"] = AVG_POOL_SAME_HELPER
            code = (f"avg_pool_same({x.expr}, {lit(size)}, {lit(strides)}, "
                    f"{lit(torch_pad_arg(pads))})")
            return Emit([Out([code], _shape(x, axes, size, strides, padding),
                             x.layout)], helpers=helpers)
    call_code = f"{fn}({{}}, {', '.join(args)})"
    steps = chain(x.expr, pre, call_code) if pre else chain(
        call_code.replace("{}", x.expr))
    return Emit([Out(steps, _shape(x, axes, size, strides, padding),
                     x.layout)], helpers=helpers)


def _shape(x, axes, size, strides, padding):
    shape = list(x.shape)
    for a, k, s in zip(axes, size, strides):
        shape[a] = conv_out(x.shape[a], k, s, 1, padding)
    return tuple(shape)


@rule("MaxPooling1D", "MaxPool1D", prefers=_pool_layout)
def max_pool1d(call):
    return _pool(call, 1, "max")


@rule("MaxPooling2D", "MaxPool2D", prefers=_pool_layout)
def max_pool2d(call):
    return _pool(call, 2, "max")


@rule("AveragePooling1D", "AvgPool1D", prefers=_pool_layout)
def avg_pool1d(call):
    return _pool(call, 1, "avg")


@rule("AveragePooling2D", "AvgPool2D", prefers=_pool_layout)
def avg_pool2d(call):
    return _pool(call, 2, "avg")


def _global(call, kind: str):
    fmt = call.get("data_format", "channels_last") or "channels_last"
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    axes = spatial_axes(x.rank, fmt)
    dims = sorted(x.layout.torch_axis(a) for a in axes)
    keep = bool(call.get("keepdims", False))
    dim = lit(dims[0]) if len(dims) == 1 else lit(tuple(dims))
    op = "mean" if kind == "avg" else "amax"
    code = f"{x.expr}.{op}(dim={dim}{', keepdim=True' if keep else ''})"
    if keep:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        layout = x.layout
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        kept = [p for p in x.layout.perm if p not in axes]
        # renumber the surviving Keras axes
        order = sorted(kept)
        layout = Layout(tuple(order.index(p) for p in kept))
    return Emit([Out(chain(code), shape, layout)])


def _gap_masked(call):
    if call.inputs[0].masked:
        call.refuse("mask", "GlobalAveragePooling1D over a masked sequence "
                    "(mask_zero/Masking) is not supported yet")


@rule("GlobalAveragePooling1D", "GlobalAvgPool1D", masks="consume")
def global_avg_pool1d(call):
    _gap_masked(call)
    return _global(call, "avg")


@rule("GlobalAveragePooling2D", "GlobalAvgPool2D")
def global_avg_pool2d(call):
    return _global(call, "avg")


@rule("GlobalMaxPooling1D", "GlobalMaxPool1D")
def global_max_pool1d(call):
    return _global(call, "max")


@rule("GlobalMaxPooling2D", "GlobalMaxPool2D")
def global_max_pool2d(call):
    return _global(call, "max")
