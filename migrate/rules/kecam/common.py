"""Helpers of the kecam pack: broadcasting a per-axis weight as torch
holds the input."""
from __future__ import annotations

from ...layout import identity
from ..common import as_f32


def broadcast_param(call, i: int, arr, with_batch: bool):
    """``(x, torch shape, producer)`` for a weight ``arr`` that kecam adds
    or multiplies onto input ``i`` in Keras's axis order: its shape is the
    input's trailing axes (``(C,)`` for the last axis), or every axis but
    the batch (``with_batch=False``), or every axis (``with_batch``) with
    size-1 axes broadcast.  The weight is permuted like the input."""
    x = call.inputs[i]
    if x.layout.flat is not None:
        x = call.want(i, identity(x.rank))
    shape = tuple(arr.shape)
    if len(shape) > x.rank:
        call.refuse(f"weight shape {shape}", f"does not fit a rank-{x.rank} "
                    "input")
    full = (1,) * (x.rank - len(shape)) + shape
    for d, n in zip(x.shape, full):
        if n != 1 and d is not None and d != n:
            call.refuse(f"weight shape {shape}", f"does not broadcast "
                        f"against the input {x.shape}")
    perm = x.layout.perm
    torch_full = tuple(full[p] for p in perm)
    # drop leading size-1 axes: torch broadcasts them
    k = 0
    while k < len(torch_full) and torch_full[k] == 1:
        k += 1
    torch_shape = torch_full[k:]

    def produce():
        return as_f32(arr.read().reshape(full).transpose(perm)
                      .reshape(torch_shape))
    return x, torch_shape, produce
