"""Dropout and the other training-only noise layers.

Each is the identity in ``eval()`` mode and behaves as Keras does in
``train()`` mode: ``nn.Dropout`` for Dropout, ``nn.Dropout1d/2d`` for the
spatial variants (whole channels), ``nn.AlphaDropout`` (the same SELU
formula), and small modules written into ``model.py`` for what torch lacks:
the Gaussian layers and Dropout with a ``noise_shape``.
"""
from __future__ import annotations

from ..layout import identity
from .base import Emit, Out, chain
from .common import lit, move_axis_to
from .registry import rule

GAUSSIAN_NOISE = '''\
class GaussianNoise(nn.Module):
    """Adds N(0, stddev) noise in training; identity in eval mode."""

    def __init__(self, stddev):
        super().__init__()
        self.stddev = stddev

    def forward(self, x):
        if not self.training:
            return x
        return x + torch.randn_like(x) * self.stddev
'''

GAUSSIAN_DROPOUT = '''\
class GaussianDropout(nn.Module):
    """Multiplies by N(1, rate / (1 - rate)) noise in training; identity in
    eval mode."""

    def __init__(self, rate):
        super().__init__()
        self.stddev = (rate / (1.0 - rate)) ** 0.5

    def forward(self, x):
        if not self.training:
            return x
        return x * (1.0 + torch.randn_like(x) * self.stddev)
'''


SHARED_DROPOUT = '''\
class SharedDropout(nn.Module):
    """Dropout whose keep/drop decision is shared along the dims in
    ``shared`` (Keras Dropout with a noise_shape holding 1s there);
    identity in eval mode."""

    def __init__(self, p, shared):
        super().__init__()
        self.p = p
        self.shared = shared

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        shape = [1 if d in self.shared else n for d, n in enumerate(x.shape)]
        keep = torch.rand(shape, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)
'''


def _module(call, module: str, helpers=None, x=None) -> Emit:
    x = x or call.inputs[0]
    return Emit([Out(chain(f"self.{call.attr}({x.expr})"), x.shape, x.layout,
                     x.dtype)], module=module, helpers=helpers or {})


@rule("Dropout", masks="propagate")
def dropout(call):
    rate = float(call.get("rate", 0.5))
    noise_shape = call.get("noise_shape")
    if noise_shape is None:
        return _module(call, f"nn.Dropout({lit(rate)})")
    x = call.inputs[0]
    if len(noise_shape) != x.rank:
        call.refuse(f"noise_shape={noise_shape!r}",
                    f"expected one entry per axis of the rank-{x.rank} input")
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    # Keras: None takes the input's size, 1 shares one decision along
    # that axis, any other value must be the input's size.
    shared = sorted(x.layout.torch_axis(a) for a, n in enumerate(noise_shape)
                    if n == 1 and x.shape[a] != 1)
    return _module(call, f"SharedDropout({lit(rate)}, {lit(tuple(shared))})",
                   {"SharedDropout": SHARED_DROPOUT}, x=x)


def _spatial(call, nd: int):
    rate = float(call.get("rate", 0.5))
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(x.rank))
    fmt = call.get("data_format", "channels_last") or "channels_last"
    channel = 1 if fmt == "channels_first" else x.rank - 1
    if x.layout.torch_axis(channel) != 1:
        x = call.want(0, move_axis_to(x.layout, channel, 1))
    return _module(call, f"nn.Dropout{nd}d({lit(rate)})", x=x)


@rule("SpatialDropout1D", masks="propagate")
def spatial_dropout1d(call):
    return _spatial(call, 1)


@rule("SpatialDropout2D", masks="propagate")
def spatial_dropout2d(call):
    return _spatial(call, 2)


@rule("SpatialDropout3D", masks="propagate")
def spatial_dropout3d(call):
    return _spatial(call, 3)


@rule("AlphaDropout", masks="propagate")
def alpha_dropout(call):
    if call.get("noise_shape") is not None:
        call.refuse("noise_shape", "not supported")
    return _module(call, f"nn.AlphaDropout({lit(float(call.get('rate')))})")


@rule("GaussianNoise", masks="propagate")
def gaussian_noise(call):
    stddev = float(call.get("stddev"))
    return _module(call, f"GaussianNoise({lit(stddev)})",
                   {"GaussianNoise": GAUSSIAN_NOISE})


@rule("GaussianDropout", masks="propagate")
def gaussian_dropout(call):
    rate = float(call.get("rate"))
    return _module(call, f"GaussianDropout({lit(rate)})",
                   {"GaussianDropout": GAUSSIAN_DROPOUT})


@rule("ActivityRegularization", masks="propagate")
def activity_regularization(call):
    call.warn("ActivityRegularization adds a training loss in Keras; the "
              "port is the identity and does not add that loss")
    x = call.inputs[0]
    return Emit([Out([x.expr], x.shape, x.layout, x.dtype)])
