"""BatchNormalization and LayerNormalization.

Keras defaults differ from torch's and are written out: ``eps=1e-3`` and
momentum ``1 - keras_momentum`` (Keras 0.99 is torch 0.01).  A parameter that
Keras leaves out (``scale=False``/``center=False``) is kept at its identity
value and frozen, so training behaves as in Keras.  ``renorm=True`` only
changes training (a warning says so); LayerNormalization's deprecated
``rms_scaling=True`` is its own small helper (it is not RMSNorm).
"""
from __future__ import annotations

import numpy as np

from ..layout import identity
from .base import Emit, Out, Transformed, chain
from .common import as_f32, flat_order, kwargs_code, lit, move_axes_last
from .common import move_axis_to, shape_args
from .registry import rule


def _bn_variables(cfg):
    names = []
    if cfg.get("scale", True):
        names.append("gamma")
    if cfg.get("center", True):
        names.append("beta")
    names += ["moving_mean", "moving_variance"]
    if cfg.get("renorm"):
        names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
    return names


def _axis(value, rank):
    if isinstance(value, (list, tuple)):
        return [int(a) % rank for a in value]
    return [int(value) % rank]


@rule("BatchNormalization", variables=_bn_variables, masks="propagate")
def batch_norm(call):
    x = call.inputs[0]
    if call.get("renorm"):
        call.warn("renorm=True changes training only; the port trains as "
                  "plain BatchNorm (inference is exact)")
    axes = _axis(call.get("axis", -1), x.rank)
    if len(axes) != 1:
        call.refuse(f"axis={call.get('axis')}", "only one channel axis")
    axis = axes[0]
    if x.layout.flat is not None and not (x.rank == 2 and axis == 1):
        x = call.want(0, identity(x.rank))
    if x.rank > 2 and x.layout.torch_axis(axis) != 1:
        x = call.want(0, move_axis_to(x.layout, axis, 1))
    order = flat_order(x.layout)
    w = call.weights(_bn_variables(call.config))
    channels = w["moving_mean"].shape[0]
    scale = bool(call.get("scale", True))
    center = bool(call.get("center", True))
    momentum = 1.0 - float(call.get("momentum", 0.99))
    eps = float(call.get("epsilon", 1e-3))

    def take(name, fill):
        if name not in w:  # Keras has no such variable (center/scale off)
            return Transformed(lambda: np.full(channels, fill, np.float32),
                               [], f"constant {fill} (no Keras variable)")
        if order is None:
            return Transformed(as_f32, [w[name]])
        return Transformed(lambda a: as_f32(a[order]), [w[name]],
                           "permuted: Keras flattened channels-last")

    affine = scale or center
    state = {}
    if affine:
        state["weight"] = take("gamma", 1.0)
        state["bias"] = take("beta", 0.0)
    state["running_mean"] = take("moving_mean", 0.0)
    state["running_var"] = take("moving_variance", 1.0)
    state["num_batches_tracked"] = Transformed(
        lambda: np.array(0, dtype=np.int64), [], "0 (no Keras variable)")
    init = []
    if affine and not scale:
        init.append("self.{attr}.weight.requires_grad_(False)"
                    "  # Keras: scale=False")
    if affine and not center:
        init.append("self.{attr}.bias.requires_grad_(False)"
                    "  # Keras: center=False")
    nd = max(1, x.rank - 2)
    if nd > 3:
        call.refuse(f"rank {x.rank}", "BatchNormalization up to 5-D inputs")
    args = kwargs_code(eps=lit(eps), momentum=lit(momentum),
                       affine=None if affine else "False")
    module = f"nn.BatchNorm{nd}d({channels}, {args})"
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout)], module=module, state=state, init_lines=init)


def _axes_last(call, x, axes, flat_all=False):
    """Input 0 with the normalised Keras ``axes`` as its trailing torch
    dims (permuted if need be): ``(x, torch_axes, normalized sizes,
    transpose)``, where ``transpose`` puts a weight of the sorted axes'
    shape into torch order.  ``flat_all``: a flat tensor normalised over
    all of its features stays as it is."""
    if x.layout.flat is not None and not flat_all:
        x = call.want(0, identity(x.rank))
    if not flat_all:
        tail = x.layout.perm[len(x.layout.perm) - len(axes):]
        if sorted(tail) != axes:
            x = call.want(0, move_axes_last(x.layout, axes))
    torch_axes = list(x.layout.perm[x.rank - len(axes):])
    normalized = [x.shape[a] for a in torch_axes]
    if any(d is None for d in normalized):
        call.refuse("axis", "normalised dims must have a known size")
    return x, torch_axes, normalized, [axes.index(a) for a in torch_axes]


def _ln_variables(cfg):
    names = []
    if cfg.get("scale", True) or cfg.get("rms_scaling", False):
        names.append("gamma")  # rms_scaling makes gamma even if not scale
    if cfg.get("center", True) and not cfg.get("rms_scaling", False):
        names.append("beta")
    return names


@rule("LayerNormalization", variables=_ln_variables, masks="propagate")
def layer_norm(call):
    """nn.LayerNorm over the normalised axes, moved to the torch end."""
    x = call.inputs[0]
    axes = sorted(_axis(call.get("axis", -1), x.rank))
    if 0 in axes:
        call.refuse(f"axis={axes}", "cannot normalise over the batch axis")
    flat_all = x.layout.flat is not None and axes == [1]
    x, torch_axes, normalized, transpose = _axes_last(call, x, axes,
                                                      flat_all)
    # gamma/beta are stored with the shape of the axes in config order (a
    # Keras 2 config keeps them unsorted: axis=[3, 1] gives gamma (C, H)),
    # but both Kerases *reshape* them onto the sorted axes, not transpose.
    # Reshape likewise, then put the sorted axes in torch order.
    order = flat_order(x.layout) if flat_all else None
    w = call.weights(_ln_variables(call.config))
    scale = bool(call.get("scale", True))
    center = bool(call.get("center", True))

    def take(name, fill):
        def value(arr=None):
            if arr is None:
                arr = np.full(normalized, fill)
            else:
                arr = arr.reshape([x.shape[a] for a in axes])
                arr = arr.transpose(transpose)
            if order is not None:
                arr = arr.reshape(-1)[order]
            return as_f32(arr)
        if name not in w:
            return Transformed(value, [], f"constant {fill} (no Keras "
                               "variable)")
        return Transformed(value, [w[name]], f"reshaped to the normalised "
                           f"axes, transposed {transpose}" + (
                               "" if order is None else
                               ", permuted: Keras flattened channels-last"))

    eps = float(call.get("epsilon", 1e-3))
    if call.get("rms_scaling"):
        return _rms_scaling(call, x, normalized, eps, take("gamma", 1.0))
    state, init = {}, []
    if scale or center:
        state["weight"] = take("gamma", 1.0)
        if center:
            state["bias"] = take("beta", 0.0)
    if not scale and center:
        init.append("self.{attr}.weight.requires_grad_(False)"
                    "  # Keras: scale=False")
    args = kwargs_code(
        eps=lit(eps),
        elementwise_affine=None if (scale or center) else "False",
        bias="False" if (scale and not center) else None)
    shape_code = lit(normalized[0]) if len(normalized) == 1 else lit(
        tuple(normalized))
    module = f"nn.LayerNorm({shape_code}, {args})"
    out_layout = x.layout
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     out_layout)], module=module, state=state,
                init_lines=init)


LAYER_NORM_RMS = '''\
def layer_norm_rms(x, weight, dims, eps):
    """Keras LayerNormalization(rms_scaling=True): x divided by its standard
    deviation over dims (x is not centred, no bias), times weight."""
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    return x * torch.rsqrt(var + eps) * weight
'''


def _rms_scaling(call, x, normalized, eps, gamma):
    """``rms_scaling=True`` (deprecated in Keras 3) is not RMSNorm: it divides
    by the standard deviation, not the root mean square, and always has a
    gamma (even with ``scale=False``), never a beta.  The normalised axes
    are the trailing torch dims; ``gamma`` (a reader) has their shape."""
    dims = lit(tuple(range(-len(normalized), 0)))
    code = f"layer_norm_rms({x.expr}, self.{call.attr}, {dims}, {lit(eps)})"
    module = f"nn.Parameter(torch.ones({shape_args(normalized)}))"
    return Emit([Out(chain(code), x.shape, x.layout)], module=module,
                state={"": gamma},
                helpers={"layer_norm_rms": LAYER_NORM_RMS})


@rule("RMSNormalization", variables=lambda cfg: ["scale"], masks="propagate")
def rms_norm(call):
    """``nn.RMSNorm`` over the normalised axes, moved to the torch end:
    ``x * rsqrt(mean(x**2) + eps) * scale``, Keras's eps (1e-6)."""
    x = call.inputs[0]
    axes = sorted(_axis(call.get("axis", -1), x.rank))
    if 0 in axes:
        call.refuse(f"axis={axes}", "cannot normalise over the batch axis")
    if axes != list(range(x.rank - len(axes), x.rank)):
        # Keras multiplies by ``scale`` (the normalised axes' shape) with
        # numpy broadcasting against the *trailing* axes, which only lines
        # up when the normalised axes are the trailing ones.
        call.refuse(f"axis={call.get('axis')}", "RMSNormalization over "
                    "axes other than the last ones")
    x, _, normalized, transpose = _axes_last(call, x, axes)
    scale = call.weights(["scale"])["scale"]

    weight = Transformed(
        lambda s: as_f32(s.reshape([x.shape[a] for a in axes])
                         .transpose(transpose)),
        [scale], f"reshaped to the normalised axes, transposed {transpose}")

    eps = float(call.get("epsilon", 1e-6))
    shape_code = lit(normalized[0]) if len(normalized) == 1 else lit(
        tuple(normalized))
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape,
                     x.layout)],
                module=f"nn.RMSNorm({shape_code}, eps={lit(eps)})",
                state={"weight": weight})
