"""Small helpers shared by rules: literals, config tuples, weight arrays."""
from __future__ import annotations

import numpy as np

from ..layout import Layout
from ..weights import contiguous


def lit(value) -> str:
    """A Python literal for generated code (floats in shortest form)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f'float("{value}")'
        return repr(float(f"{value:.12g}"))
    if isinstance(value, (list, tuple)):
        items = [lit(v) for v in value]
        if len(items) == 1:
            return f"({items[0]},)"
        return "(" + ", ".join(items) + ")"
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    return repr(value)


def shape_args(shape) -> str:
    """``(5, 4)`` -> ``5, 4`` and ``(6,)`` -> ``6``, for ``torch.ones(...)``."""
    return ", ".join(str(int(d)) for d in shape)


def short(values) -> str:
    """``(3, 3)`` -> ``3``; ``(3, 1)`` stays a tuple."""
    values = tuple(values)
    if len(set(values)) == 1:
        return lit(values[0])
    return lit(values)


def ntuple(value, n: int, what: str = "value") -> tuple:
    """Keras accepts an int or an n-sequence for sizes and strides."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what} {value!r} should have {n} entries")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def kwargs_code(**kw) -> str:
    """``a=1, b=(2, 3)`` for the keyword arguments that are not None."""
    return ", ".join(f"{k}={v}" for k, v in kw.items() if v is not None)


def as_f32(arr) -> np.ndarray:
    """A float32, C-contiguous copy (fast for permuted kernels)."""
    return contiguous(arr, np.float32)


def flat_order(layout: Layout) -> np.ndarray | None:
    """For a flattened permuted tensor: the Keras feature index found at
    each torch position (None when the features are in Keras order)."""
    if layout.flat is None:
        return None
    shape, perm = layout.flat
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    return idx.transpose([p - 1 for p in perm[1:]]).reshape(-1)


def spatial_axes(rank: int, data_format: str) -> list[int]:
    """Keras axes of the spatial dims (batch excluded)."""
    if data_format == "channels_first":
        return list(range(2, rank))
    return list(range(1, rank - 1))


def channel_axis(rank: int, data_format: str) -> int:
    return 1 if data_format == "channels_first" else rank - 1


def move_axes_last(layout: Layout, axes: list[int]) -> Layout:
    """``layout`` with the Keras ``axes`` moved to the torch end, in Keras
    order; the other axes keep their torch order."""
    rest = tuple(p for p in layout.perm if p not in axes)
    return Layout(rest + tuple(sorted(axes)))


def move_axis_to(layout: Layout, axis: int, pos: int) -> Layout:
    rest = [p for p in layout.perm if p != axis]
    rest.insert(pos, axis)
    return Layout(tuple(rest))
