"""Stored variables of keras-hub's composite layers, by sub-layer path.

A Keras 3 file stores a layer's variables by position under the path of
the attribute that holds each sub-layer: a TransformerDecoder's query
kernel is ``_self_attention_layer/query_dense/vars/0``.  Rules ask for
them by that path and position, with the shape they expect, so a file
that disagrees is refused by name instead of binding the wrong array.
"""
from __future__ import annotations

from ...weights import LazyArray, clean_weight_name
from ..base import Call, Tensor, Transformed
from ..common import as_f32


# sub-layer attribute -> the name Keras gives that sub-layer (its variables'
# path: ``transformer_layer_0/self_attention/query/kernel``)
_SUBLAYER = {"self_attention_layer": "self_attention",
             "cross_attention_layer": "cross_attention",
             "query_dense": "query", "key_dense": "key",
             "value_dense": "value", "output_dense": "attention_output",
             "gating_ffw": "ffw_gating", "gating_ffw_2": "ffw_gating_2",
             "layer_norm_1": "ln_1", "layer_norm_2": "ln_2",
             "query_dense_layer_norm": "query_dense_layernorm",  # Qwen 3
             "key_dense_layer_norm": "key_dense_layernorm"}


class HubWeights:
    """``own``: the names of the layer's own variables by position
    (``["embeddings"]``); ``norm``: its norms' variable names
    (``("gamma", "beta")``, or ``("scale",)`` for RMS norms); ``names``:
    sub-layer names of this layer that differ from :data:`_SUBLAYER`'s."""

    def __init__(self, call: Call, own=(), norm=("gamma", "beta"),
                 names=None):
        self.call = call
        self.own = list(own)
        self.norm = tuple(norm)
        self.names = dict(_SUBLAYER, **(names or {}))
        self.arrays = {clean_weight_name(e.key): e.array
                       for e in call.layer.weights.entries}

    def keras_path(self, sub: str, index: int) -> str:
        """The variable's path as Keras 3 names it (``variable.path``)."""
        parts = [p.lstrip("_") for p in sub.split("/") if p]
        if parts and parts[0] == "encoder_layers":  # ViT's block list
            parts = parts[1:]
        names = [self.names.get(p, p) for p in parts]
        last = parts[-1] if parts else ""
        if not parts:
            var = self.own[index] if index < len(self.own) else f"var{index}"
        elif "norm" in last or last.startswith("ln"):
            var = self.norm[index] if index < len(self.norm) else "var"
        elif "embedding" in last:
            var = ("embeddings", "reverse_embeddings")[min(index, 1)]
        else:
            var = ("kernel", "bias")[min(index, 1)]
        return "/".join([self.call.layer.keras_name] + names + [var])

    def has(self, sub: str) -> bool:
        prefix = f"{sub}/"
        return any(k.startswith(prefix) for k in self.arrays)

    def array(self, sub, index: int, shape=None) -> LazyArray:
        """Variable ``index`` of sub-layer ``sub`` ("" for the layer's own;
        a tuple gives the paths different versions use, first match)."""
        subs = (sub,) if isinstance(sub, str) else tuple(sub)
        for sub in subs:
            key = f"{sub}/vars/{index}" if sub else f"vars/{index}"
            found = self.arrays.get(key)
            if found is not None:
                break
        if found is None:
            have = sorted(self.arrays)
            self.call.refuse("weights", f"no stored variable {key!r} "
                             f"(the file has {have[:6]}"
                             f"{' ...' if len(have) > 6 else ''})")
        if not found.path:
            found.path = self.keras_path(sub, index)
        if shape is not None and tuple(found.shape) != tuple(
                int(d) for d in shape):
            self.call.refuse("weights", f"{key!r} has shape "
                             f"{tuple(found.shape)}, the config gives "
                             f"{tuple(shape)}")
        return found


def input_ids(call: Call, x: Tensor) -> str:
    """Token ids as an embedding takes them."""
    return x.expr if x.dtype.startswith(("int", "uint")) \
        else f"{x.expr}.long()"


# -- state-dict producers (each says what it does to the variable) --------
def stored(a: LazyArray) -> Transformed:
    return Transformed(as_f32, [a])


def dense_weight(k: LazyArray) -> Transformed:
    """A Dense kernel (in, out) as nn.Linear's weight (out, in)."""
    return Transformed(lambda x: as_f32(x.T), [k],
                       "transposed (in, out) -> (out, in)")


def heads_in(k: LazyArray) -> Transformed:
    """A per-head projection kernel (in, heads, dim) as nn.Linear's weight
    (heads * dim, in)."""
    return Transformed(lambda x: as_f32(x.reshape(x.shape[0], -1).T), [k],
                       "heads flattened, transposed (in, heads, dim) -> "
                       "(heads * dim, in)")


def heads_first_in(k: LazyArray) -> Transformed:
    """A per-head kernel stored (heads, in, dim) (Gemma) as nn.Linear's
    weight (heads * dim, in)."""
    return Transformed(
        lambda x: as_f32(x.transpose(0, 2, 1).reshape(-1, x.shape[1])), [k],
        "(heads, in, dim) -> (heads * dim, in)")


def heads_out(k: LazyArray) -> Transformed:
    """An output kernel (heads, dim, out) as nn.Linear's weight
    (out, heads * dim)."""
    return Transformed(lambda x: as_f32(x.reshape(-1, x.shape[-1]).T), [k],
                       "heads flattened, transposed (heads, dim, out) -> "
                       "(out, heads * dim)")


def heads_bias(b: LazyArray) -> Transformed:
    return Transformed(lambda x: as_f32(x.reshape(-1)), [b],
                       "heads flattened (heads, dim) -> (heads * dim,)")


def transposed(a: LazyArray) -> Transformed:
    return Transformed(lambda x: as_f32(x.T), [a], "transposed")
