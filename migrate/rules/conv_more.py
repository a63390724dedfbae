"""Conv3D, transposed, depthwise and separable convolutions.

Kernels are stored channels-last by Keras and permuted to torch's layout:

* ``Conv*D``: ``(k.., in, out)`` -> ``(out, in, k..)``;
* ``Conv*DTranspose``: ``(k.., out, in)`` -> ``(in, out, k..)``;
* ``DepthwiseConv*D``: ``(k.., in, mult)`` -> ``(in*mult, 1, k..)``, a
  grouped convolution whose output channel ``c*mult + m`` is TensorFlow's;
* ``SeparableConv*D``: that depthwise step (no bias) then a 1x1 convolution
  (``(1.., in*mult, out)`` -> ``(out, in*mult, 1..)``), as ``nn.Sequential``.

Padding follows :mod:`migrate.rules.padding` (TensorFlow's uneven ``same``).
A transposed convolution is TensorFlow's gradient of a convolution whose
input has the Keras output size; it equals torch's full transposed output
cropped by that convolution's leading pad, which torch's ``padding`` and
``output_padding`` express, or a trailing slice when the crop is uneven.
"""
from __future__ import annotations

import math

from .activations import activation_shape, with_activation
from .base import Emit, Out, Transformed, chain
from .common import as_f32, channel_axis, kwargs_code, ntuple, short
from .common import spatial_axes
from .conv import _conv, _conv_layout, conv_input, padding_plan
from .padding import conv_out
from .registry import rule


def _bias_names(cfg):
    return ["bias"] if cfg.get("use_bias", True) else []


def _spatial(call, x, nd):
    fmt = call.get("data_format", "channels_last") or "channels_last"
    return spatial_axes(x.rank, fmt), channel_axis(x.rank, fmt)


def _options(call, nd):
    kernel = ntuple(call.get("kernel_size"), nd, "kernel_size")
    strides = ntuple(call.get("strides", 1), nd, "strides")
    dilation = ntuple(call.get("dilation_rate", 1), nd, "dilation_rate")
    padding = str(call.get("padding", "valid")).lower()
    return kernel, strides, dilation, padding


def _conv_module(nd, cin, cout, kernel, strides, pad_arg, dilation, groups,
                 bias):
    args = kwargs_code(
        kernel_size=short(kernel),
        stride=short(strides) if set(strides) != {1} else None,
        padding=pad_arg,
        dilation=short(dilation) if set(dilation) != {1} else None,
        groups=str(groups) if groups != 1 else None,
        bias=None if bias else "False")
    return f"nn.Conv{nd}d({cin}, {cout}, {args})"


def _steps(call, x, pre, helpers):
    if pre:
        steps = chain(x.expr, pre, f"self.{call.attr}({{}})")
    else:
        steps = chain(f"self.{call.attr}({x.expr})")
    return with_activation(call, x, steps, helpers)


def _out_shape(call, x, axes, cax, sizes, channels):
    shape = list(x.shape)
    for a, n in zip(axes, sizes):
        shape[a] = n
    shape[cax] = channels
    return activation_shape(call.get("activation"), tuple(shape))


# -- Conv3D ---------------------------------------------------------------
def _conv_variables(cfg):
    return ["kernel"] + _bias_names(cfg)


@rule("Conv3D", "Convolution3D", variables=_conv_variables,
      prefers=_conv_layout)
def conv3d(call):
    return _conv(call, 3)


# -- transposed -----------------------------------------------------------
def transpose_length(n, k, s, d, padding, output_padding):
    """Keras's output length of a transposed convolution."""
    if n is None:
        return None
    ke = (k - 1) * d + 1
    if output_padding is None:
        if padding == "valid":
            return n * s + max(ke - s, 0)
        return n * s
    pad = ke // 2 if padding == "same" else 0
    return (n - 1) * s + ke - 2 * pad + output_padding


def transpose_crop(n, k, s, d, padding, output_padding):
    """(torch padding, torch output_padding, trailing cut) for one dim.

    TensorFlow crops the full transposed output (length ``(n-1)*s + ke``)
    by the leading pad ``b`` of the convolution it is the gradient of, and
    keeps ``length`` values (zeros past the end).  Torch keeps
    ``full[p : p + length]`` with ``padding=p`` and ``output_padding`` extra
    values; a negative remainder is cut off the end instead.  None of these
    depend on ``n``, so unknown sizes work too (``n`` = 1 stands in).
    """
    probe = 1 if n is None else n
    ke = (k - 1) * d + 1
    length = transpose_length(probe, k, s, d, padding, output_padding)
    if padding == "same":
        total = max((math.ceil(length / s) - 1) * s + ke - length, 0)
        before = total // 2
    else:
        before = 0
    full = (probe - 1) * s + ke
    extra = length - (full - 2 * before)
    if extra >= 0:
        return before, extra, 0
    return before, 0, -extra


def _transpose_variables(cfg):
    return ["kernel"] + _bias_names(cfg)


def _conv_transpose(call, nd: int):
    x, fmt = conv_input(call, nd)
    axes, cax = _spatial(call, x, nd)
    kernel, strides, dilation, padding = _options(call, nd)
    if padding not in ("valid", "same"):
        call.refuse(f"padding={padding!r}", "expected valid or same")
    out_pad = call.get("output_padding")
    out_pad = [None] * nd if out_pad is None else list(
        ntuple(out_pad, nd, "output_padding"))
    if int(call.get("groups", 1) or 1) != 1:
        call.refuse("groups", "grouped transposed convolutions")
    filters = int(call.get("filters"))
    use_bias = bool(call.get("use_bias", True))
    w = call.weights(_transpose_variables(call.config))
    kernel_w = w["kernel"]
    in_channels = kernel_w.shape[-1]
    plans = [transpose_crop(x.shape[a], k, s, d, padding, op)
             for a, k, s, d, op in zip(axes, kernel, strides, dilation,
                                       out_pad)]
    pads = [p for p, _, _ in plans]
    extras = [e for _, e, _ in plans]
    cuts = [c for _, _, c in plans]
    for e, s, d in zip(extras, strides, dilation):
        if e >= max(s, d):
            call.refuse("output_padding", f"{e} extra values with stride {s}"
                        " cannot be expressed by torch's output_padding")
    args = kwargs_code(
        kernel_size=short(kernel),
        stride=short(strides) if set(strides) != {1} else None,
        padding=short(pads) if any(pads) else None,
        output_padding=short(extras) if any(extras) else None,
        dilation=short(dilation) if set(dilation) != {1} else None,
        bias=None if use_bias else "False")
    module = f"nn.ConvTranspose{nd}d({in_channels}, {filters}, {args})"
    perm = (nd + 1, nd) + tuple(range(nd))  # (k.., out, in) -> (in, out, k..)
    state = {"weight": Transformed(
        lambda k: as_f32(k.transpose(perm)), [kernel_w],
        f"transposed (k.., out, in) -> (in, out, k..): {perm}")}
    if use_bias:
        state["bias"] = Transformed(as_f32, [w["bias"]])
    helpers: dict = {}
    steps = chain(f"self.{call.attr}({x.expr})")
    if any(cuts):
        index = [":"] * 2 + [f":-{c}" if c else ":" for c in cuts]
        while index[-1] == ":":
            index.pop()
        steps += chain("", "{}[" + ", ".join(index) + "]")[1:]
    steps = with_activation(call, x, steps, helpers)
    sizes = [transpose_length(x.shape[a], k, s, d, padding, op)
             for a, k, s, d, op in zip(axes, kernel, strides, dilation,
                                       out_pad)]
    return Emit([Out(steps, _out_shape(call, x, axes, cax, sizes, filters),
                     x.layout)], module=module, state=state, helpers=helpers)


@rule("Conv1DTranspose", "Convolution1DTranspose",
      variables=_transpose_variables, prefers=_conv_layout)
def conv1d_transpose(call):
    return _conv_transpose(call, 1)


@rule("Conv2DTranspose", "Convolution2DTranspose",
      variables=_transpose_variables, prefers=_conv_layout)
def conv2d_transpose(call):
    return _conv_transpose(call, 2)


@rule("Conv3DTranspose", "Convolution3DTranspose",
      variables=_transpose_variables, prefers=_conv_layout)
def conv3d_transpose(call):
    return _conv_transpose(call, 3)


# -- depthwise and separable ----------------------------------------------
def _stored_name(call, keras3: str, keras2: str) -> str:
    """Keras 2 legacy files name some kernels differently (``depthwise_
    kernel:0`` for DepthwiseConv2D's ``kernel``)."""
    for e in call.layer.weights.entries:
        if e.key.split(":")[0].split("/")[-1].startswith(keras2):
            return keras2
    return keras3


def _depthwise_weight(kernel_w, nd):
    """(k.., in, mult) -> (in*mult, 1, k..)."""
    def weight(k):
        k = k.reshape(k.shape[:nd] + (-1,))
        return as_f32(k.transpose((nd,) + tuple(range(nd)))[:, None])
    return Transformed(weight, [kernel_w], "(k.., in, mult) reshaped to "
                       "(k.., in*mult), transposed to (in*mult, 1, k..)")


def _depthwise_plan(call, x, nd):
    kernel, strides, dilation, padding = _options(call, nd)
    if padding == "causal" and nd != 1:
        call.refuse("padding='causal'", "only 1D layers support it")
    if padding not in ("valid", "same", "causal"):
        call.refuse(f"padding={padding!r}", "expected valid, same or causal")
    pad_arg, pre, helpers = padding_plan(call, x, kernel, strides, dilation,
                                         padding)
    axes, cax = _spatial(call, x, nd)
    sizes = [conv_out(x.shape[a], k, s, d, padding)
             for a, k, s, d in zip(axes, kernel, strides, dilation)]
    return kernel, strides, dilation, pad_arg, pre, helpers, axes, cax, sizes


def _depthwise_variables(cfg):
    return ["kernel"] + _bias_names(cfg)


def _depthwise(call, nd: int):
    x, _ = conv_input(call, nd)
    (kernel, strides, dilation, pad_arg, pre, helpers, axes, cax,
     sizes) = _depthwise_plan(call, x, nd)
    name = _stored_name(call, "kernel", "depthwise_kernel")
    use_bias = bool(call.get("use_bias", True))
    w = call.weights([name] + _bias_names(call.config))
    kernel_w = w[name]
    cin, mult = kernel_w.shape[nd], kernel_w.shape[nd + 1]
    module = _conv_module(nd, cin, cin * mult, kernel, strides, pad_arg,
                          dilation, cin, use_bias)
    state = {"weight": _depthwise_weight(kernel_w, nd)}
    if use_bias:
        state["bias"] = Transformed(as_f32, [w["bias"]])
    steps = _steps(call, x, pre, helpers)
    return Emit([Out(steps, _out_shape(call, x, axes, cax, sizes, cin * mult),
                     x.layout)], module=module, state=state, helpers=helpers)


@rule("DepthwiseConv1D", variables=_depthwise_variables,
      prefers=_conv_layout)
def depthwise_conv1d(call):
    return _depthwise(call, 1)


@rule("DepthwiseConv2D", variables=_depthwise_variables,
      prefers=_conv_layout)
def depthwise_conv2d(call):
    return _depthwise(call, 2)


def _separable_variables(cfg):
    return ["depthwise_kernel", "pointwise_kernel"] + _bias_names(cfg)


def _separable(call, nd: int):
    x, _ = conv_input(call, nd)
    (kernel, strides, dilation, pad_arg, pre, helpers, axes, cax,
     sizes) = _depthwise_plan(call, x, nd)
    use_bias = bool(call.get("use_bias", True))
    w = call.weights(_separable_variables(call.config))
    dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
    cin, mult = dw.shape[nd], dw.shape[nd + 1]
    filters = pw.shape[-1]
    depthwise = _conv_module(nd, cin, cin * mult, kernel, strides, pad_arg,
                             dilation, cin, False)
    pointwise = _conv_module(nd, cin * mult, filters, (1,) * nd, (1,) * nd,
                             None, (1,) * nd, 1, use_bias)
    module = f"nn.Sequential({depthwise}, {pointwise})"
    perm = (nd + 1, nd) + tuple(range(nd))
    state = {"0.weight": _depthwise_weight(dw, nd),
             "1.weight": Transformed(
                 lambda k: as_f32(k.transpose(perm)), [pw],
                 f"transposed (1.., in, out) -> (out, in, 1..): {perm}")}
    if use_bias:
        state["1.bias"] = Transformed(as_f32, [w["bias"]])
    steps = _steps(call, x, pre, helpers)
    return Emit([Out(steps, _out_shape(call, x, axes, cax, sizes, filters),
                     x.layout)], module=module, state=state, helpers=helpers)


@rule("SeparableConv1D", "SeparableConvolution1D",
      variables=_separable_variables, prefers=_conv_layout)
def separable_conv1d(call):
    return _separable(call, 1)


@rule("SeparableConv2D", "SeparableConvolution2D",
      variables=_separable_variables, prefers=_conv_layout)
def separable_conv2d(call):
    return _separable(call, 2)
