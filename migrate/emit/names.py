"""Safe Python identifiers from untrusted Keras names.

Layer and model names come from the model file and end up as ``self.``
attributes, local variables and a class name in generated code.  Every one
goes through a :class:`Namespace`: it becomes an ASCII identifier, never a
keyword, builtin, or ``nn.Module`` attribute, never the same as another name
in the namespace, and the same name always gets the same identifier.
"""
from __future__ import annotations

import builtins
import functools
import keyword
import re

import torch.nn as nn

_NOT_IDENT = re.compile(r"[^0-9a-zA-Z_]+")

# Names a generated module or forward() must not shadow.
_RESERVED = (
    set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
    | set(dir(nn.Module)) | set(vars(nn.Module()))
    | {"self", "torch", "nn", "F", "inputs"}
    # module-level helpers that rules may write into model.py
    | {"pad_same", "avg_pool_same", "sparse_plus", "squareplus", "sparsemax",
       "keras_relu", "prelu", "softmax_over", "GaussianNoise",
       "GaussianDropout", "center_crop", "Normalization"}
    # sequence helpers (rules/recurrent.py, rules/attention.py)
    | {"run_rnn", "KerasLSTM", "KerasGRU", "KerasSimpleRNN", "ConvLSTM",
       "rnn_dropout_masks", "gate_linear", "gate_conv", "masked_multiply",
       "masked_merge",
       "masked_mean", "EinsumDense", "SharedDropout", "StochasticDepth",
       "layer_norm_rms",
       "MultiHeadAttention", "GroupedQueryAttention", "attend",
       "keras_hard_sigmoid",
       "keras_leaky_relu", "keras_softmax", "keras_log_softmax", "keras_glu",
       "keras_hard_shrink", "keras_soft_shrink", "keras_sparse_sigmoid",
       "keras_sparsemax"}
)


def identifier(text: str, fallback: str = "layer") -> str:
    """``"conv-1/relu"`` -> ``"conv_1_relu"``; ``"1x"`` -> ``"_1x"``."""
    name = _NOT_IDENT.sub("_", str(text)).strip("_") or fallback
    if name[0].isdigit():
        name = "_" + name
    return name


_HELPER_DEF = re.compile(r"^(?:def|class) (\w+)", re.M)


@functools.cache
def helper_names() -> frozenset:
    """Every name a built-in rule's model.py helper defines: the ``def``
    and ``class`` names in the helper source strings of
    ``migrate.rules.*``, so that no layer variable shadows one."""
    import importlib
    import pkgutil

    from .. import rules
    found = set()
    for info in pkgutil.iter_modules(rules.__path__):
        module = importlib.import_module(f"{rules.__name__}.{info.name}")
        for key, value in vars(module).items():
            if isinstance(value, str) and not key.startswith("__"):
                found.update(_HELPER_DEF.findall(value))
    return frozenset(found)


def class_identifier(text: str) -> str:
    """``"small_cnn"`` -> ``"SmallCnn"`` (a valid, non-reserved class name)."""
    parts = [p for p in _NOT_IDENT.sub("_", str(text)).split("_") if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    if name[0].isdigit():
        name = "Model" + name
    if name in _RESERVED or name in helper_names() or keyword.iskeyword(
            name):
        name += "Model"
    return name


class Namespace:
    """Hands out unique identifiers, remembering which object got which."""

    def __init__(self, reserved: set[str] | None = None):
        self._taken = set(_RESERVED) | helper_names() | set(reserved or ())
        self._given: dict[object, str] = {}

    def name(self, key: object, text: str, fallback: str = "layer") -> str:
        if key in self._given:
            return self._given[key]
        base = identifier(text, fallback)
        candidate = base
        n = 1
        while candidate in self._taken:
            candidate = f"{base}_{n}"
            n += 1
        self._taken.add(candidate)
        self._given[key] = candidate
        return candidate

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def free(self, name: str) -> bool:
        return name not in self._taken


def comment_text(text: str) -> str:
    """A Keras name as it may appear in a comment or docstring: ASCII,
    escaped, and unable to close a string or start a new line."""
    out = []
    for ch in str(text):
        if 32 <= ord(ch) < 127 and ch not in "\"'\\":
            out.append(ch)
        elif ch in "\"'":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ascii(ch)[1:-1])
    return "".join(out)


def shape_text(shape) -> str:
    """``(B, T, 64)``: a shape for a comment or docstring; an unknown
    size is ``T`` along a sequence (axis 1 of a rank-2 or rank-3 shape),
    ``?`` elsewhere."""
    dims = ["B"]
    for axis, d in enumerate(shape[1:], 1):
        if d is not None:
            dims.append(str(d))
        elif axis == 1 and len(shape) in (2, 3):
            dims.append("T")
        else:
            dims.append("?")
    return "(" + ", ".join(dims) + ")"
