"""The generic ``RNN`` layer over built-in cells.

``RNN(LSTMCell(n))``, ``RNN(GRUCell(n))`` and ``RNN(SimpleRNNCell(n))``
compute exactly what ``LSTM``, ``GRU`` and ``SimpleRNN`` compute with the
cell's options and the RNN's (``return_sequences``, ``go_backwards``...),
and store the cell's weights the same way, so the rule hands the layer to
the LSTM / GRU / SimpleRNN rule.

``RNN([cell, cell, ...])`` (``RNN(StackedRNNCells(cells))``) runs the cells
one after the other at every time step, each on the previous one's output.
That is a chain of recurrent layers, each returning its whole sequence to
the next: the port is one torch RNN per cell, in an ``nn.ModuleDict`` keyed
by the cells' names, each built and loaded by the LSTM / GRU / SimpleRNN
rule's own functions, and run one after the other::

    x = self.rnn["lstm_cell"](x)[0]
    x = self.rnn["gru_cell"](x)[0][:, -1]

How the chain follows Keras's options (checked against Keras 3 and
tf.keras):

* ``go_backwards``: the stack reads the sequence from its end; the second
  cell sees the first one's outputs in that order, so only the first cell
  flips its input, and the later ones get the mask flipped to match.
  With ``return_sequences`` the outputs stay in processing order, as in
  Keras.
* masks: Keras keeps every cell's state at a masked step and repeats the
  stack's previous output (zeros with ``zero_output_for_mask``); each cell
  skipping the step computes the same, since what a skipped step feeds
  the next cell is never used.
* ``return_state``: the states of all cells, in cell order, each cell's
  flattened (``[h1, c1, h2]`` for an LSTM cell then a GRU cell); an
  ``initial_state`` list is read in the same order.
* dropout: each cell draws its own masks once per call, as Keras's cells
  do (tf.keras runs a generic RNN step by step, never through the fused
  kernel of its LSTM / GRU layers).

Custom cells are refused, and so are ``StackedRNNCells(reverse_state_order=
True)`` (old tf.keras) and ``unroll=True`` with ``go_backwards``,
``zero_output_for_mask`` and a mask (Keras's unrolled loop then zeroes the
outputs with the mask in input order, after the loop).
``Bidirectional(RNN(...))`` is refused by the Bidirectional rule, which
takes LSTM, GRU and SimpleRNN layers only.
"""
from __future__ import annotations

import dataclasses
import re

from .base import HOLE, IN, TMP, Call, Emit, Out
from .recurrent import (RUN_RNN, _sequence, _state_input, rnn_inputs,
                        rnn_module, rnn_spec, rnn_state, run_code)
from .registry import RULES, rule
from ..layout import identity
from ..weights import LayerWeights, WeightEntry, clean_weight_name

_LAYER_OF = {"LSTMCell": "LSTM", "GRUCell": "GRU",
             "SimpleRNNCell": "SimpleRNN"}
# Keras 3 files key a list's objects by class, snake case, numbered in order
_V3_KEY = {"LSTMCell": "lstm_cell", "GRUCell": "gru_cell",
           "SimpleRNNCell": "simple_rnn_cell"}
_RNN_KEYS = ("name", "trainable", "return_sequences", "return_state",
             "go_backwards", "stateful", "unroll", "time_major",
             "zero_output_for_mask")
# attributes of nn.ModuleDict a key must not shadow
_MODULE_DICT_ATTRS = {"clear", "items", "keys", "pop", "update", "values",
                      "forward", "training", "to", "eval", "train", "float",
                      "half", "double", "cuda", "cpu", "type", "apply",
                      "children", "modules", "parameters", "buffers",
                      "state_dict", "extra_repr", "zero_grad"}


def _cell(cfg: dict):
    cell = cfg.get("cell")
    if isinstance(cell, dict) and isinstance(cell.get("config"), dict):
        return cell.get("class_name"), cell["config"]
    return None, {}


def _cells(cfg: dict) -> list[tuple[str, dict]]:
    """(class name, config) of each cell of a StackedRNNCells config."""
    _, stacked = _cell(cfg)
    out = []
    for c in stacked.get("cells") or []:
        if isinstance(c, dict):
            out.append((c.get("class_name"), c.get("config") or {}))
        else:
            out.append((None, {}))
    return out


def _cell_variables(cell: dict) -> list[str]:
    return ["kernel", "recurrent_kernel"] + (
        ["bias"] if cell.get("use_bias", True) else [])


def _variables(cfg):
    cls, cell = _cell(cfg)
    if cls in _LAYER_OF:
        return [f"cell/{n}" for n in _cell_variables(cell)]
    if cls == "StackedRNNCells":
        return [f"cell/cells/{c.get('name')}/{n}" for _, c in _cells(cfg)
                for n in _cell_variables(c)]
    return []


@rule("RNN", variables=_variables, masks="consume")
def rnn_cell(call):
    """As ``LSTM`` / ``GRU`` / ``SimpleRNN`` with the cell's options, or a
    chain of them for stacked cells (see the module doc)."""
    cls, cell = _cell(call.config)
    if cls == "StackedRNNCells":
        return _stacked(call)
    if cls not in _LAYER_OF:
        call.refuse(f"cell={cls!r}", "only LSTMCell, GRUCell, SimpleRNNCell "
                    "and StackedRNNCells of them have rules")
    config = dict(cell)
    config.update({k: call.config[k] for k in _RNN_KEYS
                   if k in call.config})
    layer = dataclasses.replace(call.layer, class_name=_LAYER_OF[cls],
                                config=config, module=None,
                                registered_name=None)
    node = dataclasses.replace(call.node, layer=layer)
    inner = _CellCall(node, call.inputs, call.attr, call.keras_major,
                      call._conv)
    return RULES[_LAYER_OF[cls]].convert(inner)


class _CellCall(Call):
    """The call of an ``RNN(cell)`` handed to the LSTM/GRU/SimpleRNN rule,
    which then draws dropout masks as the generic ``RNN`` layer does
    (tf.keras never runs it through its fused LSTM/GRU kernel)."""
    generic_rnn = True


# -- StackedRNNCells ----------------------------------------------------------
def _keys(names: list[str]) -> list[str]:
    """ModuleDict keys for the cells: the Keras names as identifiers,
    unique, never an attribute of nn.ModuleDict."""
    keys = []
    for name in names:
        key = re.sub(r"\W", "_", name) or "cell"
        if key[0].isdigit():
            key = f"cell_{key}"
        if key in _MODULE_DICT_ATTRS:
            key = f"{key}_cell"
        base, n = key, 1
        while key in keys:
            key, n = f"{base}_{n}", n + 1
        keys.append(key)
    return keys


def _cell_weights(call: Call, cells: list[tuple[str, dict]]
                  ) -> list[LayerWeights]:
    """Each cell's stored variables, keyed as a single cell's.

    Keras 3 files store them by position under ``cell/cells/<key>/vars/
    <i>``, ``<key>`` the cell's class in snake case numbered in list order
    (``lstm_cell``, ``lstm_cell_1``); legacy HDF5 files by name, under the
    cell's name (``stacked_rnn_cells/<cell name>/kernel``)."""
    weights = call.layer.weights
    v3_keys, used = [], {}
    for cls, _ in cells:
        key = _V3_KEY[cls]
        used[key] = used.get(key, -1) + 1
        v3_keys.append(key if used[key] == 0 else f"{key}_{used[key]}")
    names = [c.get("name") for _, c in cells]
    if len(set(names)) != len(names):
        call.refuse("cells", f"two cells share a name ({names}); their "
                    "stored weights cannot be told apart")
    positional = weights.positional
    parts = {key: [] for key in (v3_keys if positional else names)}
    for e in weights.entries:
        path = clean_weight_name(e.key).split("/")
        owner = path[-3] if positional and len(path) >= 3 else (
            path[-2] if not positional and len(path) >= 2 else None)
        if owner not in parts:
            call.refuse("weights", f"cannot tell which cell the stored "
                        f"weight {e.key!r} belongs to")
        rest = "/".join(path[-2:]) if positional else path[-1]
        parts[owner].append(WeightEntry(rest, e.array))
    return [LayerWeights(parts[k], f"{weights.layer}/{n}")
            for k, n in zip(v3_keys if positional else names, names)]


def _stacked(call: Call) -> Emit:
    cells = _cells(call.config)
    if not cells:
        call.refuse("cell=StackedRNNCells", "no cells")
    if _cell(call.config)[1].get("reverse_state_order"):
        call.refuse("StackedRNNCells(reverse_state_order=True)", "states in "
                    "reverse cell order are not converted")
    for i, (cls, _) in enumerate(cells):
        if cls not in _LAYER_OF:
            call.refuse(f"cells[{i}]={cls!r}", "only LSTMCell, GRUCell and "
                        "SimpleRNNCell have rules")
    cfg = call.config
    for key in ("stateful", "time_major"):
        if cfg.get(key):
            call.refuse(f"{key}=True", "not supported for an RNN layer "
                        "(rebuild it with stateful=False and pass the state "
                        "as initial_state)" if key == "stateful" else
                        "not supported")
    seqs = bool(cfg.get("return_sequences", False))
    state_out = bool(cfg.get("return_state", False))
    backwards = bool(cfg.get("go_backwards", False))
    zeros = bool(cfg.get("zero_output_for_mask", False))
    unroll = bool(cfg.get("unroll", False))
    x = _sequence(call)
    inp = rnn_inputs(call)
    if unroll and backwards and zeros and inp.mask is not None:
        call.refuse("unroll=True with go_backwards, zero_output_for_mask "
                    "and a mask", "Keras's unrolled loop zeroes the outputs "
                    "with the mask in input order after the loop")
    last = len(cells) - 1
    specs = []
    for i, (cls, cell) in enumerate(cells):
        where = f"cell {cell.get('name', i)!r} "
        spec = rnn_spec(call, _LAYER_OF[cls], dict(
            cell, return_sequences=seqs if i == last else True,
            return_state=state_out, go_backwards=backwards and i == 0,
            zero_output_for_mask=zeros and i == last, unroll=unroll),
            where, generic=True)
        specs.append(spec)
    n_states = sum(s.num_states for s in specs)
    if inp.states and len(inp.states) != n_states:
        call.refuse("initial_state", f"{len(inp.states)} tensors for cells "
                    f"with {n_states} states in all")
    states = [_state_input(call, s) for s in inp.states]
    weights = _cell_weights(call, cells)
    keys = _keys([c.get("name") or _V3_KEY[cls] for cls, c in cells])
    helpers, modules, state = {}, [], {}
    size = x.shape[2]
    for key, spec, w in zip(keys, specs, weights):
        modules.append(f'"{key}": {rnn_module(call, spec, size, helpers)}')
        state.update(rnn_state(spec, w, prefix=f"{key}."))
        size = spec.units
    module = f"nn.ModuleDict({{{', '.join(modules)}}})"
    # the later cells read the first one's outputs in processing order
    later_mask = (f"{inp.mask}.flip(1)" if backwards and inp.mask else
                  inp.mask)
    # One statement per cell when later cells read other inputs (initial
    # states, a mask passed as a tensor) or every cell's states are
    # returned; else one chain of calls.
    named = state_out or bool(states) or any(
        IN(i) in (later_mask or "") for i in range(len(call.inputs)))
    codes, pre, seq, tmp, state_tmps = [], [], x.expr, 0, []
    for i, (key, spec) in enumerate(zip(keys, specs)):
        mine = states[:spec.num_states]
        states = states[spec.num_states:]
        code = run_code(f"self.{call.attr}[\"{key}\"]",
                        seq if named or i == 0 else HOLE, spec,
                        inp.mask if i == 0 else later_mask, mine,
                        spec.zero_output_for_mask)
        if code.startswith("run_rnn("):
            helpers["run_rnn"] = RUN_RNN
        codes.append(code)
        if not named:
            continue
        count = spec.num_states if state_out else 0
        name = call.attr if i == last else key  # the layer's output
        pre.append(([name] + [f"{key}_{s}" for s in "hc"[:count]], code))
        seq = TMP(tmp)
        state_tmps += [(TMP(tmp + 1 + j), spec.units) for j in range(count)]
        tmp += 1 + count
    units = specs[-1].units
    shape = (None, x.shape[1], units) if seqs else (None, units)
    out = Out([seq] if named else codes, shape, identity(len(shape)),
              masked=seqs)
    emit = Emit([out], module=module, state=state, helpers=helpers, pre=pre)
    for t, n in state_tmps:
        emit.outputs.append(Out([t], (None, n), identity(2), masked=False))
    return emit
