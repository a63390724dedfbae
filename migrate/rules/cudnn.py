"""Keras 2's CuDNNLSTM and CuDNNGRU (GPU-only layers of older models).

They compute what ``LSTM`` and ``GRU(reset_after=True)`` with sigmoid
gates compute, with weights in cuDNN's layout; Keras itself loads them
into those layers by converting each gate's input kernel (transposed and
re-read in Fortran order), transposing each gate's recurrent kernel, and
summing (LSTM) or stacking (GRU) the input and recurrent biases.  The rule
does the same conversion and hands the layer to the LSTM / GRU rule, so
the port is an ``nn.LSTM`` / ``nn.GRU``.  They never take masks.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..weights import LayerWeights, LazyArray, WeightEntry
from .base import Call
from .registry import RULES, rule

_GATES = {"CuDNNLSTM": 4, "CuDNNGRU": 3}
_AS = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}


def _per_gate(arr: np.ndarray, gates: int, fn) -> np.ndarray:
    return np.hstack([fn(k) for k in np.hsplit(arr, gates)])


def _input_kernel(k: np.ndarray) -> np.ndarray:
    return k.T.reshape(k.shape, order="F")


def _converted(lazy: LazyArray, shape: tuple, fn, how: str) -> LazyArray:
    derived = LazyArray(tuple(shape), lazy.dtype, lambda: fn(lazy.read()),
                        lazy.where)
    derived.transform = how  # shown before the LSTM/GRU rule's own transform
    return derived


@rule("CuDNNLSTM", "CuDNNGRU",
      variables=lambda cfg: ["kernel", "recurrent_kernel", "bias"])
def cudnn_rnn(call):
    """As ``LSTM`` / ``GRU(reset_after=True)``: ``nn.LSTM`` / ``nn.GRU``."""
    cls = call.layer.class_name
    gates = _GATES[cls]
    if call.get("stateful"):
        call.refuse("stateful=True", "stateful RNNs carry state between "
                    "batches; not supported")
    w = call.weights(["kernel", "recurrent_kernel", "bias"])
    kernel, recurrent, bias = w["kernel"], w["recurrent_kernel"], w["bias"]
    units = int(call.get("units"))
    n = gates * units
    if tuple(bias.shape) != (2 * n,) or recurrent.shape != (units, n):
        call.refuse("weights", f"unexpected shapes {kernel.shape}, "
                    f"{recurrent.shape}, {bias.shape} for {units} units")
    if cls == "CuDNNLSTM":
        new_bias = _converted(bias, (n,), lambda b: b[:n] + b[n:],
                              "CuDNN input and recurrent biases summed")
    else:
        new_bias = _converted(bias, (2, n), lambda b: b.reshape(2, n),
                              "CuDNN biases reshaped to (2, gates*units)")
    entries = [
        WeightEntry("cell/kernel", _converted(
            kernel, kernel.shape,
            lambda k: _per_gate(k, gates, _input_kernel),
            "CuDNN per-gate kernels re-laid out (column-major)")),
        WeightEntry("cell/recurrent_kernel", _converted(
            recurrent, recurrent.shape,
            lambda k: _per_gate(k, gates, np.transpose),
            "CuDNN per-gate recurrent kernels transposed")),
        WeightEntry("cell/bias", new_bias),
    ]
    config = {key: call.config[key] for key in (
        "name", "trainable", "return_sequences", "return_state",
        "go_backwards", "time_major") if key in call.config}
    config.update(units=units, activation="tanh",
                  recurrent_activation="sigmoid", use_bias=True,
                  unroll=False, dropout=0.0, recurrent_dropout=0.0)
    if cls == "CuDNNGRU":
        config["reset_after"] = True
    layer = dataclasses.replace(
        call.layer, class_name=_AS[cls], config=config, module=None,
        registered_name=None,
        weights=LayerWeights(entries, call.layer.weights.layer))
    node = dataclasses.replace(call.node, layer=layer)
    inner = Call(node, call.inputs, call.attr, call.keras_major, call._conv)
    return RULES[_AS[cls]].convert(inner)
