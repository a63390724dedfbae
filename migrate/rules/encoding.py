"""CategoryEncoding and Discretization: integer features as numbers.

CategoryEncoding turns token ids into one-hot rows, a multi-hot or a count
vector over ``num_tokens`` (float32, as Keras outputs); Discretization puts
each value in its bucket (``boundaries[i - 1] <= x < boundaries[i]``).  Ids
outside ``[0, num_tokens)`` are an error in Keras and in ``F.one_hot``.
"""
from __future__ import annotations

from ..layout import identity
from .base import Emit, Out, chain
from .common import lit
from .registry import rule


@rule("CategoryEncoding")
def category_encoding(call):
    """``F.one_hot``, summed (count) or maxed (multi_hot) over the ids."""
    x = call.want(0, identity(call.inputs[0].rank))
    n = int(call.get("num_tokens"))
    mode = call.only("output_mode", ("one_hot", "multi_hot", "count"),
                     "multi_hot")
    if call.get("sparse"):
        call.refuse("sparse=True", "sparse outputs are not supported")
    if x.rank not in (1, 2) or (x.rank == 1 and mode != "one_hot"):
        # Keras treats a rank-1 input to multi_hot/count as one sample
        call.refuse(f"input rank {x.rank}", "expected (batch, ids) inputs")
    hot = f"F.one_hot({x.expr}.long(), {n})"
    last = x.shape[-1]
    if mode == "one_hot":
        if x.rank == 2 and last == 1:
            return Emit([Out(chain(f"{hot}[:, 0].float()"), (x.shape[0], n),
                             identity(2))])
        if x.rank == 2 and call.keras_major < 3:
            call.refuse("output_mode='one_hot'", "Keras 2 one-hot encodes "
                        "(batch, 1) or (batch,) inputs only")
        shape = x.shape + (n,)
        return Emit([Out(chain(f"{hot}.float()"), shape, identity(len(shape)))])
    reduce = "amax" if mode == "multi_hot" else "sum"
    return Emit([Out(chain(f"{hot}.{reduce}(dim=1).float()"),
                     (x.shape[0], n), identity(2))])


@rule("Discretization")
def discretization(call):
    """``torch.bucketize(x, boundaries, right=True)``."""
    x = call.inputs[0]
    call.only("output_mode", ("int",), "int")
    bounds = call.get("bin_boundaries")
    if not isinstance(bounds, (list, tuple)) or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool)
            for b in bounds):
        call.refuse("bin_boundaries", "expected a list of numbers (an "
                    "adapted layer without stored boundaries cannot be "
                    "converted)")
    if list(bounds) != sorted(bounds):
        call.refuse("bin_boundaries", "must be sorted")
    dtype = "int32" if call.keras_major >= 3 else "int64"
    boundaries = lit(tuple(float(b) for b in bounds))
    int32 = ", out_int32=True" if dtype == "int32" else ""
    code = f"discretize({x.expr}, {boundaries}{int32})"
    return Emit([Out(chain(code), x.shape, x.layout, dtype)],
                helpers={"discretize": DISCRETIZE})


DISCRETIZE = '''\
def discretize(x, boundaries, out_int32=False):
    """The bucket of each value: i where boundaries[i - 1] <= x <
    boundaries[i], as Keras Discretization computes it."""
    boundaries = torch.tensor(boundaries, device=x.device)
    return torch.bucketize(x, boundaries, right=True, out_int32=out_int32)
'''
