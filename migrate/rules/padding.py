"""TensorFlow padding arithmetic, shared by convolution and pooling rules.

``same`` pads ``total = max((ceil(n/s) - 1)*s + (k-1)*d + 1 - n, 0)`` per
spatial dim, the odd pixel at the end.  With stride 1 the total does not
depend on ``n``; with a larger stride it does, and an unknown ``n`` (a
``None`` dim) is padded at run time by the ``pad_same`` helper written into
``model.py``.
"""
from __future__ import annotations

import math

PAD_SAME_HELPER = '''\
def pad_same(x, kernel_size, stride, dilation, value=0.0):
    """Pad the trailing dims of x as TensorFlow's "same" padding does."""
    pads = []
    for i in range(len(kernel_size)):
        n = x.shape[-len(kernel_size) + i]
        k = (kernel_size[i] - 1) * dilation[i] + 1
        total = max((-(-n // stride[i]) - 1) * stride[i] + k - n, 0)
        pads = [total // 2, total - total // 2] + pads
    return F.pad(x, pads, value=value)
'''


def same_pads(n, k: int, s: int, d: int):
    """(before, after) for one dim, or None when ``n`` is unknown and the
    stride makes the padding depend on it."""
    ke = (k - 1) * d + 1
    if s == 1:
        total = ke - 1
    elif n is None:
        return None
    else:
        total = max((math.ceil(n / s) - 1) * s + ke - n, 0)
    return total // 2, total - total // 2


def conv_out(n, k: int, s: int, d: int, padding: str):
    """Output length of a convolution or pooling window."""
    if n is None:
        return None
    ke = (k - 1) * d + 1
    if padding == "same":
        return math.ceil(n / s)
    if padding == "causal":
        return math.ceil(n / s) if s == 1 else (n - 1) // s + 1
    return (n - ke) // s + 1 if n >= ke else 0


def torch_pad_arg(pads: list[tuple[int, int]]) -> tuple:
    """Per-dim (before, after), first spatial dim first -> F.pad order."""
    flat = []
    for before, after in reversed(pads):
        flat += [before, after]
    return tuple(flat)
