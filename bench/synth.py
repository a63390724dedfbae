"""Write Keras 3 ``.keras`` files of Dense stacks directly, without Keras.

Used by ``bench/scale.py`` (a model of several GB of weights, generated a
layer at a time so the generator itself stays small in memory) and by
``tests/test_stream.py`` (a 1,000-layer Sequential).  The files follow what
Keras 3.15 writes for ``keras.Sequential([Input((n,)), Dense(...), ...])``:
``config.json``, ``metadata.json`` and ``model.weights.h5`` stored
uncompressed; ``bench/scale.py --check-keras`` loads one with Keras.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import h5py
import numpy as np

KERAS_VERSION = "3.15.1"


def _dtype_policy(name: str = "float32") -> dict:
    return {"module": "keras", "class_name": "DTypePolicy",
            "config": {"name": name}, "registered_name": None}


def _dense(name: str, units: int, n_in: int, activation: str) -> dict:
    init = {"module": "keras.initializers", "class_name": "GlorotUniform",
            "config": {"seed": None}, "registered_name": None}
    zeros = {"module": "keras.initializers", "class_name": "Zeros",
             "config": {}, "registered_name": None}
    return {"module": "keras.layers", "class_name": "Dense",
            "config": {"name": name, "trainable": True,
                       "dtype": _dtype_policy(), "units": units,
                       "activation": activation, "use_bias": True,
                       "kernel_initializer": init,
                       "bias_initializer": zeros, "kernel_regularizer": None,
                       "bias_regularizer": None, "activity_regularizer": None,
                       "kernel_constraint": None, "bias_constraint": None},
            "registered_name": None,
            "build_config": {"input_shape": [None, n_in]}}


def dense_stack_config(name: str, widths: list[int],
                       activation: str = "relu") -> dict:
    """The config of ``Sequential([Input((widths[0],)), Dense(widths[1]),
    ..., Dense(widths[-1])])`` (the last Dense is linear)."""
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": [None, widths[0]],
                          "dtype": "float32", "sparse": False,
                          "ragged": False, "name": "input_layer",
                          "optional": False},
               "registered_name": None}]
    for i, (n_in, units) in enumerate(zip(widths, widths[1:])):
        last = i == len(widths) - 2
        layers.append(_dense(f"dense_{i}", units, n_in,
                             "linear" if last else activation))
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": name, "trainable": True,
                       "dtype": _dtype_policy(), "layers": layers,
                       "build_input_shape": [None, widths[0]]},
            "registered_name": None,
            "build_config": {"input_shape": [None, widths[0]]},
            "compile_config": None}


def write_dense_stack(path, widths: list[int], *, seed: int = 0,
                      name: str = "dense_stack",
                      activation: str = "relu") -> None:
    """Write a ``.keras`` archive of a Dense stack with random weights
    (scaled so activations stay O(1)), one layer in memory at a time."""
    rng = np.random.default_rng(seed)
    config = dense_stack_config(name, widths, activation)
    meta = {"keras_version": KERAS_VERSION, "date_saved": "synthetic"}
    fd, h5 = tempfile.mkstemp(suffix=".h5",
                              dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        with h5py.File(h5, "w") as f:
            layers = f.create_group("layers")
            for i, (n_in, units) in enumerate(zip(widths, widths[1:])):
                key = "dense" if i == 0 else f"dense_{i}"
                v = layers.create_group(key).create_group("vars")
                kernel = v.create_dataset("0", (n_in, units), "float32")
                rows = max(1, (64 << 20) // (4 * units))
                for r in range(0, n_in, rows):
                    n = min(rows, n_in - r)
                    kernel[r:r + n] = (rng.standard_normal(
                        (n, units), dtype=np.float32) / np.sqrt(n_in))
                v.create_dataset("1", data=rng.standard_normal(
                    units, dtype=np.float32) * 0.1)
            f.create_group("vars")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("metadata.json", json.dumps(meta))
            z.writestr("config.json", json.dumps(config))
            z.write(h5, "model.weights.h5")
    finally:
        os.unlink(h5)
