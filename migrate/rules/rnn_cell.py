"""The generic ``RNN`` layer over one built-in cell.

``RNN(LSTMCell(n))``, ``RNN(GRUCell(n))`` and ``RNN(SimpleRNNCell(n))``
compute exactly what ``LSTM``, ``GRU`` and ``SimpleRNN`` compute with the
cell's options and the RNN's (``return_sequences``, ``go_backwards``...),
and store the cell's weights the same way, so the rule hands the layer to
the LSTM / GRU / SimpleRNN rule.  ``StackedRNNCells`` and custom cells are
refused.
"""
from __future__ import annotations

import dataclasses

from .base import Call
from .registry import RULES, rule

_LAYER_OF = {"LSTMCell": "LSTM", "GRUCell": "GRU",
             "SimpleRNNCell": "SimpleRNN"}
_RNN_KEYS = ("name", "trainable", "return_sequences", "return_state",
             "go_backwards", "stateful", "unroll", "time_major",
             "zero_output_for_mask")


def _cell(cfg: dict):
    cell = cfg.get("cell")
    if isinstance(cell, dict) and isinstance(cell.get("config"), dict):
        return cell.get("class_name"), cell["config"]
    return None, {}


def _variables(cfg):
    cls, cell = _cell(cfg)
    if cls not in _LAYER_OF:
        return []
    return ["cell/kernel", "cell/recurrent_kernel"] + (
        ["cell/bias"] if cell.get("use_bias", True) else [])


@rule("RNN", variables=_variables, masks="consume")
def rnn_cell(call):
    """As ``LSTM`` / ``GRU`` / ``SimpleRNN`` with the cell's options."""
    cls, cell = _cell(call.config)
    if cls not in _LAYER_OF:
        why = ("stacked cells: use one RNN layer per cell"
               if cls == "StackedRNNCells" else
               "only LSTMCell, GRUCell and SimpleRNNCell have rules")
        call.refuse(f"cell={cls!r}", why)
    config = dict(cell)
    config.update({k: call.config[k] for k in _RNN_KEYS
                   if k in call.config})
    layer = dataclasses.replace(call.layer, class_name=_LAYER_OF[cls],
                                config=config, module=None,
                                registered_name=None)
    node = dataclasses.replace(call.node, layer=layer)
    inner = Call(node, call.inputs, call.attr, call.keras_major, call._conv)
    return RULES[_LAYER_OF[cls]].convert(inner)
