"""Conv1D and Conv2D (valid, same, causal; strides, dilation, groups)."""
from __future__ import annotations

from ..errors import ConversionError
from ..layout import channels_first, identity
from .activations import activation_shape, with_activation
from .base import Emit, Out, Transformed, chain
from .common import as_f32, channel_axis, kwargs_code, lit, ntuple, short
from .common import spatial_axes
from .padding import PAD_SAME_HELPER, conv_out, same_pads, torch_pad_arg
from .registry import rule


def _conv_variables(cfg):
    return ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])


def _conv_layout(cfg, rank):
    if cfg.get("data_format") == "channels_first":
        return identity(rank)
    return channels_first(rank)


def conv_input(call, nd: int):
    """Input 0 in channels-first torch layout, and the data format."""
    fmt = call.get("data_format", "channels_last") or "channels_last"
    x = call.inputs[0]
    x = call.want(0, _conv_layout(call.config, x.rank))
    return x, fmt


def padding_plan(call, x, kernel, strides, dilation, padding):
    """How to pad: (module padding arg or None, pre-step or None, helpers).

    Symmetric padding goes into the module; TensorFlow's uneven "same"
    padding (the extra pixel at the end) becomes an explicit F.pad; an
    unknown input size with stride > 1 pads at run time.
    """
    fmt = call.get("data_format", "channels_last") or "channels_last"
    sizes = [x.shape[a] for a in spatial_axes(x.rank, fmt)]
    if padding == "valid":
        return None, None, {}
    if padding == "causal":
        left = [(k - 1) * d for k, d in zip(kernel, dilation)]
        if not any(left):
            return None, None, {}
        pad = torch_pad_arg([(n, 0) for n in left])
        return None, f"F.pad({{}}, {lit(pad)})", {}
    if padding != "same":
        call.refuse(f"padding={padding!r}", "expected valid, same or causal")
    spans = [(k - 1) * d for k, d in zip(kernel, dilation)]
    if set(strides) == {1} and any(spans) and all(n % 2 == 0 for n in spans):
        # torch's own "same": stride 1 and an even total (torch warns and
        # copies the input for an odd one, so that is padded explicitly)
        return '"same"', None, {}
    pads = [same_pads(n, k, s, d)
            for n, k, s, d in zip(sizes, kernel, strides, dilation)]
    if any(p is None for p in pads):
        step = (f"pad_same({{}}, {lit(kernel)}, {lit(strides)}, "
                f"{lit(dilation)})")
        return None, step, {"pad_same": PAD_SAME_HELPER}
    if all(b == a for b, a in pads):
        if all(b == 0 for b, _ in pads):
            return None, None, {}
        return short(b for b, _ in pads), None, {}
    return None, f"F.pad({{}}, {lit(torch_pad_arg(pads))})", {}


def _conv(call, nd: int, variables=_conv_variables):
    """Conv{nd}D; ``variables`` names the layer's weights (a subclass's
    extra ones are the caller's to map)."""
    x, fmt = conv_input(call, nd)
    filters = int(call.get("filters"))
    kernel = ntuple(call.get("kernel_size"), nd, "kernel_size")
    strides = ntuple(call.get("strides", 1), nd, "strides")
    dilation = ntuple(call.get("dilation_rate", 1), nd, "dilation_rate")
    groups = int(call.get("groups", 1) or 1)
    padding = str(call.get("padding", "valid")).lower()
    if padding == "causal" and nd != 1:
        call.refuse("padding='causal'", "only Conv1D supports it")
    use_bias = bool(call.get("use_bias", True))
    w = call.weights(variables(call.config))
    kernel_w = w["kernel"]
    in_channels = kernel_w.shape[-2] * groups
    have = x.shape[-1 if fmt == "channels_last" else 1]
    if have is not None and have != in_channels:
        # a bad file, not a missing rule: keras-hub's image backbones do
        # not save data_format, so one built channels_first reads (and
        # reloads in Keras) as channels_last
        raise ConversionError(
            f"layer {call.layer.name!r}: its kernel takes {in_channels} "
            f"input channels, its {fmt} input has {have}: the weights do not "
            "fit the config (a model built channels_first whose config does "
            "not say so? keras-hub's backbones do not save data_format)")
    if kernel_w.shape[-1] != filters:
        # a config that lost the argument the layer was built with
        raise ConversionError(
            f"layer {call.layer.name!r}: its kernel has "
            f"{kernel_w.shape[-1]} filters, its config says {filters}: the "
            "weights do not fit the config (keras-hub's EfficientNetBackbone "
            "does not save num_features: only the default 1280 reloads)")

    pad_arg, pre, helpers = padding_plan(call, x, kernel, strides, dilation,
                                         padding)
    args = kwargs_code(
        kernel_size=short(kernel),
        stride=short(strides) if set(strides) != {1} else None,
        padding=pad_arg,
        dilation=short(dilation) if set(dilation) != {1} else None,
        groups=str(groups) if groups != 1 else None,
        bias=None if use_bias else "False")
    module = f"nn.Conv{nd}d({in_channels}, {filters}, {args})"

    perm = (nd + 1, nd) + tuple(range(nd))  # (k.., in, out) -> (out, in, k..)
    state = {"weight": Transformed(
        lambda k: as_f32(k.transpose(perm)), [kernel_w],
        f"transposed (k.., in, out) -> (out, in, k..): {perm}")}
    if use_bias:
        state["bias"] = Transformed(as_f32, [w["bias"]])

    if pre:
        steps = chain(pre.replace("{}", x.expr), f"self.{call.attr}({{}})")
    else:
        steps = chain(f"self.{call.attr}({x.expr})")
    steps = with_activation(call, x, steps, helpers)

    axes = spatial_axes(x.rank, fmt)
    shape = list(x.shape)
    for a, k, s, d in zip(axes, kernel, strides, dilation):
        shape[a] = conv_out(x.shape[a], k, s, d, padding)
    shape[channel_axis(x.rank, fmt)] = filters
    shape = activation_shape(call.get("activation"), tuple(shape))
    return Emit([Out(steps, shape, x.layout)], module=module,
                state=state, helpers=helpers)


@rule("Conv1D", "Convolution1D", variables=_conv_variables,
      prefers=_conv_layout)
def conv1d(call):
    return _conv(call, 1)


@rule("Conv2D", "Convolution2D", variables=_conv_variables,
      prefers=_conv_layout)
def conv2d(call):
    return _conv(call, 2)
