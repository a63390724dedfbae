"""Tensor layouts: how a torch tensor relates to the Keras tensor it stands for.

Keras computes channels-last; the port is channels-first.  Rather than a
permute around every layer, every tensor carries a :class:`Layout`:

    torch_tensor = keras_tensor.permute(layout.perm)

Convolutions ask for channels-first, Dense asks for its feature axis last,
element-wise layers take whatever they get, and axis arguments (Concatenate,
Softmax, normalisation) are remapped through the layout.  When a layer cannot
take the layout it is given, :func:`convert` writes the one permute that
fixes it, and the report lists it.

A rank-2 tensor made by flattening a permuted tensor keeps its features in
torch order; ``Layout.flat`` remembers that order so that a following Dense
permutes its weight rows instead of the activations (Keras flattens H, W, C).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    perm: tuple  # over Keras axes, batch included: torch = keras.permute(perm)
    # For a flattened tensor: (keras shape without batch, perm without batch)
    # of the tensor that was flattened in torch order.
    flat: tuple | None = None

    @property
    def rank(self) -> int:
        return len(self.perm)

    @property
    def is_identity(self) -> bool:
        return self.flat is None and self.perm == tuple(range(len(self.perm)))

    def torch_axis(self, keras_axis: int) -> int:
        """The torch dim holding Keras axis ``keras_axis`` (may be negative)."""
        if self.flat is not None:
            raise ValueError("axis lookup on a flattened permuted tensor")
        return self.perm.index(keras_axis % self.rank)

    def torch_shape(self, keras_shape: tuple) -> tuple:
        return tuple(keras_shape[p] for p in self.perm)


def identity(rank: int) -> Layout:
    return Layout(tuple(range(rank)))


def channels_first(rank: int) -> Layout:
    """(N, C, *spatial) for a channels-last Keras tensor of this rank."""
    if rank < 3:
        return identity(rank)
    return Layout((0, rank - 1) + tuple(range(1, rank - 1)))


def channels_last_of(layout: Layout) -> Layout:
    """Move the Keras last axis to the torch end, keeping the other axes
    in their current torch order (NCHW -> NHWC)."""
    rank = layout.rank
    rest = tuple(p for p in layout.perm if p != rank - 1)
    return Layout(rest + (rank - 1,))


def relative_perm(src: Layout, dst: Layout) -> tuple:
    """Dims to pass to ``torch.permute`` to go from ``src`` to ``dst``."""
    return tuple(src.perm.index(p) for p in dst.perm)


def is_free(src: Layout, dst: Layout, keras_shape: tuple) -> bool:
    """True when the permute only moves size-1 dims (a reshape, no copy)."""
    def order(layout):
        return [p for p in layout.perm if p == 0 or keras_shape[p] != 1]
    return order(src) == order(dst)


def convert(expr: str, keras_shape: tuple, src: Layout, dst: Layout):
    """Code that turns ``expr`` (in ``src`` layout) into ``dst`` layout.

    Returns ``(code, kind)`` with kind ``None`` (nothing to do), ``"reshape"``
    or ``"permute"``; a permute is what the report lists.
    """
    if src == dst:
        return expr, None
    if src.flat is not None:
        # Undo a deferred flatten: back to the flattened tensor, to Keras
        # order, flatten again.
        shape, perm = src.flat
        tshape = tuple(shape[p - 1] for p in perm[1:])
        back = relative_perm(Layout(perm), identity(len(perm)))
        dims = ", ".join(str(d) for d in tshape)
        code = (f"{expr}.reshape(-1, {dims})"
                f".permute{_tuple(back)}.flatten(1)")
        return code, "permute"
    if dst.flat is not None:
        raise ValueError("cannot convert to a flattened layout")
    if is_free(src, dst, keras_shape) and all(
            d is not None for d in keras_shape[1:]):
        dims = ", ".join(str(d) for d in dst.torch_shape(keras_shape)[1:])
        return f"{expr}.reshape(-1, {dims})", "reshape"
    return f"{expr}.permute{_tuple(relative_perm(src, dst))}", "permute"


def _tuple(values) -> str:
    values = tuple(values)
    return "(" + ", ".join(str(v) for v in values) + ")"
