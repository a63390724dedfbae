"""Keras's own path of a variable stored by position (``.keras`` archives,
``.weights.h5``), which a file that stores names gives directly.

Keras 3 names a variable ``<name scope>/<variable name>`` (``variable.path``)
when the variable is created; tf.keras names it the same way (``variable.
name`` without ``:0``).  A positional file keeps the sub-object attributes
(``forward_layer/cell/vars/0``), so the scope is rebuilt here from the
layer's config, and the variable's own name comes from the rule that binds
it (:meth:`migrate.weights.LayerWeights.bind`).  What decides the scope,
as measured on both Keras versions:

* a layer's own variables: ``<layer name>`` (the nested models' names are
  not part of it);
* a sub-layer built by its parent's constructor -- an LSTM's cell, the
  dense projections of MultiHeadAttention -- lives in the parent's scope:
  ``lstm/lstm_cell``, ``mha/query``;
* Keras 3: a sub-layer deserialized from the config (an ``RNN``'s cell, the
  cells of ``StackedRNNCells``, the layers a ``TimeDistributed`` or a
  ``Bidirectional`` wraps) starts a scope of its own: ``lstm_cell_3``,
  ``forward_lstm/lstm_cell``;
* tf.keras: the wrappers are scopes too (``bilstm/forward_lstm/
  lstm_cell``; ``td/kernel`` for a ``TimeDistributed(Dense)`` named ``td``),
  and its ConvLSTM cells are not (``conv_lstm/kernel``).

Not derivable from a file: tf.keras's ``StackedRNNCells`` scope carries a
process-wide counter (``stacked_rnn_cells_7``), and variables created
without a name are ``variable``, ``variable_1``... numbered across the
whole model; those paths are best guesses (``StackedRNNCells`` without the
counter, the rule's declared name).
"""
from __future__ import annotations

_CELLS = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN":
          "simple_rnn_cell", "ConvLSTM1D": "conv_lstm_cell",
          "ConvLSTM2D": "conv_lstm_cell", "ConvLSTM3D": "conv_lstm_cell"}
# MultiHeadAttention / GroupedQueryAttention: attribute -> sub-layer name
_DENSES = {"query_dense": "query", "key_dense": "key", "value_dense":
           "value", "output_dense": "attention_output",
           "gate_dense": "gate"}


def _name(cfg: dict, default: str = "") -> str:
    return str((cfg.get("config") or {}).get("name") or default)


def scope(class_name: str, config: dict, name: str, parts: list[str],
          major: int) -> str:
    """The Keras scope of a variable stored under the sub-object path
    ``parts`` (``["forward_layer", "cell"]``) of layer ``name``."""
    return "/".join(_scope(class_name, config, [name], parts, major))


def _scope(cls: str, config: dict, at: list[str], parts: list[str],
           major: int) -> list[str]:
    if not parts:
        return at
    head, rest = parts[0], parts[1:]
    sub, own = None, None
    if head == "cell" and cls in _CELLS:  # built by the layer itself
        if major < 3 and cls.startswith("ConvLSTM"):
            return _scope("", {}, at, rest, major)
        return _scope("", {}, at + [_CELLS[cls]], rest, major)
    if head.lstrip("_") in _DENSES:
        return _scope("", {}, at + [_DENSES[head.lstrip("_")]], rest, major)
    if head == "cell" and isinstance(config.get("cell"), dict):
        sub = config["cell"]  # RNN(cell)
        if sub.get("class_name") == "StackedRNNCells":
            own = [] if major >= 3 else at + ["stacked_rnn_cells"]
    elif head == "cells" and rest and cls == "StackedRNNCells":
        sub = _stacked_cell(config, rest[0])
        rest = rest[1:]
        own = at + [_name(sub)] if sub is not None else None
    elif head == "layer" and isinstance(config.get("layer"), dict):
        sub = config["layer"]  # TimeDistributed: tf.keras keeps its scope
        own = at if major < 3 else None
    elif head in ("forward_layer", "backward_layer"):
        sub = _direction(config, head.split("_")[0], major)
    if sub is None:  # an attribute we do not know: keep it
        return _scope("", {}, at + [head], rest, major)
    if own is None:
        own = [_name(sub)] if major >= 3 else at + [_name(sub)]
    return _scope(str(sub.get("class_name", "")), sub.get("config") or {},
                  own, rest, major)


def _direction(config: dict, direction: str, major: int) -> dict:
    """The config of a Bidirectional's ``forward`` or ``backward`` layer,
    named as Keras names it: Keras 3 ``forward_<name>`` (the prefix not
    repeated) and a given backward layer's own name, else ``backward_<name>``;
    tf.keras prefixes both, a given backward layer too."""
    inner = config.get("layer") or {}
    given = config.get("backward_layer")
    if direction == "backward" and isinstance(given, dict):
        if major >= 3:
            return given
        inner = given
    name = _name(inner)
    if major >= 3 and name.startswith(f"{direction}_"):
        name = name[len(direction) + 1:]
    return dict(inner, config=dict(inner.get("config") or {},
                                   name=f"{direction}_{name}"))


def _stacked_cell(config: dict, key: str) -> dict | None:
    """The cell of a StackedRNNCells stored under ``key``: keyed like the
    layers of a model, by class in snake case, ``_1``, ``_2``... for
    repeats."""
    from .v3_weights import snake_case
    used: dict[str, int] = {}
    for c in config.get("cells") or []:
        if not isinstance(c, dict):
            continue
        k = snake_case(str(c.get("class_name", "")))
        n = used.get(k, -1) + 1
        used[k] = n
        if (f"{k}_{n}" if n else k) == key:
            return c
    return None
