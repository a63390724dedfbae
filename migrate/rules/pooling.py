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
def avg_pool_same(x, kernel_size, stride, pads=None):
    """Average pooling over TF "same" padding: padded cells are not
    counted, as in Keras.  pads (F.pad order) defaults to what x's size
    needs."""
    pool = getattr(F, f"avg_pool{len(kernel_size)}d")
    if pads is None:
        pads = []
        for i, (k, s) in enumerate(zip(kernel_size, stride)):
            n = x.shape[-len(kernel_size) + i]
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads = [total // 2, total - total // 2] + pads
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
            if kind == "avg":  # padding depends on the size: at run time
                helpers["avg_pool_same"] = AVG_POOL_SAME_HELPER
                code = (f"avg_pool_same({x.expr}, {lit(size)}, "
                        f"{lit(strides)})")
                return Emit([Out([code], _shape(x, axes, size, strides,
                                                padding), x.layout)],
                            helpers=helpers)
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
    steps = chain(pre.replace("{}", x.expr), call_code) if pre else chain(
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


MASKED_MEAN_HELPER = '''\
def masked_mean(x, mask, dim, keepdim=False):
    """Mean over dim of the steps where mask is True, as Keras pools a
    masked sequence."""
    mask = mask.to(x.dtype)
    total = (x * mask).sum(dim, keepdim=keepdim)
    return total / mask.sum(dim, keepdim=keepdim)
'''


def _global(call, kind: str, mask: str | None = None):
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
    helpers = {}
    if mask is not None:
        # the Keras mask is (B, T): give it a size-1 dim where x has its
        # channels (its other two dims keep their order)
        channel = x.layout.torch_axis(1 if fmt == "channels_first" else 2)
        code = (f"masked_mean({x.expr}, {mask}.unsqueeze({channel}), "
                f"dim={dim}{', keepdim=True' if keep else ''})")
        helpers["masked_mean"] = MASKED_MEAN_HELPER
    if keep:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        layout = x.layout
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        kept = [p for p in x.layout.perm if p not in axes]
        # renumber the surviving Keras axes
        order = sorted(kept)
        layout = Layout(tuple(order.index(p) for p in kept))
    return Emit([Out(chain(code), shape, layout)], helpers=helpers)


@rule("GlobalAveragePooling1D", "GlobalAvgPool1D", masks="consume")
def global_avg_pool1d(call):
    """With a Keras mask (Embedding(mask_zero=True), Masking) only the
    unmasked steps are averaged."""
    mask = call.mask(0)
    # Keras mask (sequences helper): an explicit mask= argument wins; Keras
    # 3 writes the mask it computed when the model was built there.
    explicit = call.kwarg("mask")
    if explicit is not None and not isinstance(explicit, list):
        mask = explicit.expr
    elif call.inputs[0].masked and mask is None:
        call.refuse("mask", "the mask of the input sequence is not available")
    return _global(call, "avg", mask)


@rule("GlobalAveragePooling2D", "GlobalAvgPool2D")
def global_avg_pool2d(call):
    return _global(call, "avg")


@rule("GlobalMaxPooling1D", "GlobalMaxPool1D")
def global_max_pool1d(call):
    return _global(call, "max")


@rule("GlobalMaxPooling2D", "GlobalMaxPool2D")
def global_max_pool2d(call):
    return _global(call, "max")
