"""LocallyConnected1D and LocallyConnected2D (tf-keras / Keras 2 only).

A locally connected layer is a convolution whose kernel differs at every
output position.  The port has one form for all three Keras
``implementation`` modes: a module (written into model.py) that pads, cuts
the input into windows with ``Tensor.unfold`` and contracts them with a
per-position weight by ``torch.einsum``:

    weight: (out positions.., filters, in channels, kernel..)
    bias:   (filters, out positions..)

Keras stores the kernel in a different shape per mode, each converted to
that weight when the state dict is materialised:

* 1: ``(positions, window features, filters)``, the window flattened in
  input order: ``(kernel.., channels)`` channels-last, ``(channels,
  kernel..)`` channels-first;
* 2: a dense input x output kernel (``(in.., C, out.., F)`` channels-last,
  ``(C, in.., F, out..)`` channels-first), masked to the windows: entries
  outside a window are never used and are dropped;
* 3: the values of a sparse ``(out size, in size)`` matrix, in the sorted
  order of their ``(out index, in index)`` pairs (``conv_kernel_idxs``);
  those pairs are recomputed here from the config.

``padding="same"`` (modes 2 and 3; Keras refuses it for mode 1) is Keras's
own: ``ceil(n / stride)`` windows starting ``kernel // 2`` before
``position * stride``, cut at the input's ends; the port zero-pads instead,
which adds nothing.  With ``channels_first`` Keras adds its ``(out..,
filters)`` bias *reshaped*, not transposed, to ``(filters, out..)``, and so
does the port.
"""
from __future__ import annotations

import math

import numpy as np

from .activations import activation_shape, with_activation
from .base import Emit, Out, Transformed, chain
from .common import as_f32, channel_axis, kwargs_code, lit, ntuple
from .common import spatial_axes
from .conv import _conv_layout, conv_input
from .registry import rule

LOCALLY_CONNECTED_1D = '''\
class LocallyConnected1d(nn.Module):
    """Keras LocallyConnected1D: a 1D convolution with its own kernel at
    every output step.  weight: (out_length, out, in, kernel_size)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride,
                 output_size, padding=(0, 0), bias=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding  # zeros (before, after) the steps
        self.weight = nn.Parameter(torch.empty(
            output_size, out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(
            out_channels, output_size)) if bias else None

    def forward(self, x):  # (B, C, L)
        if any(self.padding):
            x = F.pad(x, self.padding)
        windows = x.unfold(2, self.kernel_size, self.stride)  # (B, C, l, k)
        x = torch.einsum("bclk,lock->bol", windows, self.weight)
        return x if self.bias is None else x + self.bias
'''

LOCALLY_CONNECTED_2D = '''\
class LocallyConnected2d(nn.Module):
    """Keras LocallyConnected2D: a 2D convolution with its own kernel at
    every output pixel.  weight: (out_h, out_w, out, in, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride,
                 output_size, padding=(0, 0, 0, 0), bias=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding  # F.pad order: (left, right, top, bottom)
        self.weight = nn.Parameter(torch.empty(
            *output_size, out_channels, in_channels, *kernel_size))
        self.bias = nn.Parameter(torch.empty(
            out_channels, *output_size)) if bias else None

    def forward(self, x):  # (B, C, H, W)
        if any(self.padding):
            x = F.pad(x, self.padding)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        windows = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C, h, w, kh, kw)
        x = torch.einsum("bchwij,hwocij->bohw", windows, self.weight)
        return x if self.bias is None else x + self.bias
'''

HELPERS = {1: ("LocallyConnected1d", LOCALLY_CONNECTED_1D),
           2: ("LocallyConnected2d", LOCALLY_CONNECTED_2D)}


def _variables(cfg):
    return ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])


def _extent(n, k, s, padding):
    """(output length, pad before, pad after) of one spatial dim, as
    tf_keras's conv_output_length and conv_connected_inputs define them."""
    if padding == "valid":
        out = (n - k + 1 + s - 1) // s
        before = 0
    else:
        out = (n + s - 1) // s
        before = k // 2
    return out, before, max(0, (out - 1) * s + k - before - n)


class _Plan:
    """Sizes of one layer; builds the port's weight from a Keras kernel."""

    def __init__(self, sizes, cin, filters, kernel, strides, padding, fmt):
        self.nd = len(sizes)
        self.sizes, self.cin, self.filters = sizes, cin, filters
        self.kernel, self.strides, self.fmt = kernel, strides, fmt
        ext = [_extent(n, k, s, padding)
               for n, k, s in zip(sizes, kernel, strides)]
        self.outs = tuple(o for o, _, _ in ext)
        self.pads = [(b, a) for _, b, a in ext]
        self.weight_shape = self.outs + (filters, cin) + kernel

    def stored_shape(self, implementation):
        """The Keras kernel's shape in this implementation mode."""
        ins, outs = tuple(self.sizes), self.outs
        c, f = self.cin, self.filters
        if implementation == 1:
            return (math.prod(outs), math.prod(self.kernel) * c, f)
        if implementation == 2:
            if self.fmt == "channels_first":
                return (c,) + ins + (f,) + outs
            return ins + (c,) + outs + (f,)
        return (self.connections(),)

    def connections(self) -> int:
        """How many (input, output) pairs the windows connect (the length
        of implementation 3's kernel)."""
        count = self.filters * self.cin
        for n, k, s, o, (b, _) in zip(self.sizes, self.kernel, self.strides,
                                      self.outs, self.pads):
            start = np.arange(o) * s - b  # each window's first index
            inside = np.minimum(start + k, n) - np.maximum(start, 0)
            count *= int(inside.clip(0).sum())
        return count

    def _grid(self):
        """Index arrays over the port's weight axes, the input positions
        each entry reads and whether it falls inside the input."""
        nd = self.nd
        idx = np.indices(self.weight_shape, sparse=True)
        outs, f, c, ks = idx[:nd], idx[nd], idx[nd + 1], idx[nd + 2:]
        pos = [o * s - b + k for o, s, (b, _), k
               in zip(outs, self.strides, self.pads, ks)]
        inside = np.ones(self.weight_shape, bool)
        for p, n in zip(pos, self.sizes):
            inside &= (p >= 0) & (p < n)
        pos = [np.clip(p, 0, n - 1) for p, n in zip(pos, self.sizes)]
        return outs, f, c, pos, inside

    def _keys(self, outs, f, c, pos):
        """Implementation 3's (out index, in index) pair as one number:
        flat indices in the layer's data format, out-major."""
        ins, o_shape = tuple(self.sizes), self.outs
        if self.fmt == "channels_first":
            out_idx = np.ravel_multi_index([f] + list(outs), (self.filters,)
                                           + o_shape)
            in_idx = np.ravel_multi_index([c] + list(pos), (self.cin,) + ins)
        else:
            out_idx = np.ravel_multi_index(list(outs) + [f],
                                           o_shape + (self.filters,))
            in_idx = np.ravel_multi_index(list(pos) + [c], ins + (self.cin,))
        return out_idx * (math.prod(ins) * self.cin) + in_idx

    def weight(self, kernel: np.ndarray, implementation: int) -> np.ndarray:
        nd = self.nd
        if implementation == 1:
            if self.fmt == "channels_first":  # windows flattened (C, k..)
                k = kernel.reshape(self.outs + (self.cin,) + self.kernel
                                   + (self.filters,))
                perm = tuple(range(nd)) + (2 * nd + 1, nd) + tuple(
                    range(nd + 1, 2 * nd + 1))
            else:  # windows flattened (k.., C)
                k = kernel.reshape(self.outs + self.kernel
                                   + (self.cin, self.filters))
                perm = tuple(range(nd)) + (2 * nd + 1, 2 * nd) + tuple(
                    range(nd, 2 * nd))
            return k.transpose(perm)
        outs, f, c, pos, inside = self._grid()
        if implementation == 2:
            if self.fmt == "channels_first":
                w = kernel[tuple([c] + pos + [f] + list(outs))]
            else:
                w = kernel[tuple(pos + [c] + list(outs) + [f])]
        else:
            keys = np.broadcast_to(self._keys(outs, f, c, pos),
                                   self.weight_shape)
            order = np.sort(keys[inside])
            w = kernel[np.searchsorted(order, keys).clip(0, len(order) - 1)]
        w = np.broadcast_to(w, self.weight_shape)
        return np.where(inside, w, 0).astype(kernel.dtype)

    def bias(self, bias: np.ndarray) -> np.ndarray:
        shape = (self.filters,) + self.outs
        if self.fmt == "channels_first":
            return bias.reshape(shape)  # Keras's bias_add reshapes it
        return bias.transpose((self.nd,) + tuple(range(self.nd)))

    def torch_pad(self):
        """The F.pad argument (last dim first), or None without padding."""
        if not any(b or a for b, a in self.pads):
            return None
        return tuple(v for b, a in reversed(self.pads) for v in (b, a))


def _locally_connected(call, nd: int):
    x, fmt = conv_input(call, nd)
    filters = int(call.get("filters"))
    kernel = ntuple(call.get("kernel_size"), nd, "kernel_size")
    strides = ntuple(call.get("strides", 1), nd, "strides")
    padding = str(call.get("padding", "valid")).lower()
    implementation = call.get("implementation", 1)
    use_bias = bool(call.get("use_bias", True))
    if implementation not in (1, 2, 3):
        call.refuse(f"implementation={implementation!r}",
                    "tf_keras defines modes 1, 2 and 3")
    if padding not in ("valid", "same"):
        call.refuse(f"padding={padding!r}", "expected valid or same")
    if padding == "same" and implementation == 1:
        call.refuse("padding='same'", "tf_keras accepts it only with "
                    "implementation 2 or 3")
    if min(strides) < 1:
        call.refuse(f"strides={strides}", "a stride must be at least 1")
    if min(kernel) < 1 or filters < 1:
        call.refuse("kernel_size / filters", "must be at least 1")
    axes = spatial_axes(x.rank, fmt)
    sizes = [x.shape[a] for a in axes]
    if any(n is None for n in sizes):
        call.refuse("input shape", f"{x.shape}: the spatial sizes must be "
                    "known (Keras sizes the kernel from them)")
    cin = x.shape[channel_axis(x.rank, fmt)]
    plan = _Plan(sizes, cin, filters, kernel, strides, padding, fmt)
    if min(plan.outs) < 1:
        call.refuse("kernel_size", f"{kernel} is larger than the input "
                    f"{tuple(sizes)}")
    w = call.weights(_variables(call.config))
    kernel_w = w["kernel"]
    expected = plan.stored_shape(implementation)
    if tuple(kernel_w.shape) != expected:
        call.refuse(f"implementation={implementation}",
                    f"stored kernel has shape {tuple(kernel_w.shape)}, "
                    f"expected {expected} for these options")
    if use_bias and math.prod(w["bias"].shape) != filters * math.prod(
            plan.outs):
        call.refuse("bias", f"stored bias has shape {w['bias'].shape}, "
                    f"expected {plan.outs + (filters,)}")

    name, code = HELPERS[nd]
    helpers = {name: code}
    one = (lambda t: lit(t[0])) if nd == 1 else lit
    pad = plan.torch_pad()
    args = kwargs_code(kernel_size=one(kernel), stride=one(strides),
                       output_size=one(plan.outs),
                       padding=lit(pad) if pad else None,
                       bias=None if use_bias else "False")
    module = f"{name}({cin}, {filters}, {args})"
    state = {"weight": Transformed(
        lambda k: as_f32(plan.weight(k, implementation)), [kernel_w],
        f"implementation {implementation} kernel rearranged to "
        "(positions, out, in*k..)")}
    if use_bias:
        state["bias"] = Transformed(lambda b: as_f32(plan.bias(b)),
                                    [w["bias"]], "rearranged to the torch "
                                    "layout")

    steps = with_activation(call, x, chain(f"self.{call.attr}({x.expr})"),
                            helpers)
    shape = list(x.shape)
    for a, n in zip(axes, plan.outs):
        shape[a] = n
    shape[channel_axis(x.rank, fmt)] = filters
    shape = activation_shape(call.get("activation"), tuple(shape))
    return Emit([Out(steps, shape, x.layout)], module=module, state=state,
                helpers=helpers)


@rule("LocallyConnected1D", variables=_variables, prefers=_conv_layout)
def locally_connected1d(call):
    return _locally_connected(call, 1)


@rule("LocallyConnected2D", variables=_variables, prefers=_conv_layout)
def locally_connected2d(call):
    return _locally_connected(call, 2)
