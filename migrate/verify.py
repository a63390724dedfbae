"""Parity: run the Keras original and the port on the same random inputs.

The Keras side runs in a subprocess (``verify_keras.py``) so that TensorFlow
and torch never share a process.  Inputs are seeded: normal floats, or
integer ids below the vocabulary size for inputs that feed an Embedding.
Unknown dims (``None``) get :data:`DEFAULT_DIM`.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import ConversionError

DEFAULT_DIM = 32
RUNNER = Path(__file__).with_name("verify_keras.py")


class VerifyUnavailable(ConversionError):
    """TensorFlow is not installed, so Keras cannot be run."""


def make_inputs(program, seed: int = 0, batch: int = 2) -> list[np.ndarray]:
    """Seeded inputs in Keras layout, one per model input."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in program.inputs:
        shape = [batch] + [DEFAULT_DIM if d is None else d
                           for d in t.keras_shape[1:]]
        if t.vocab:
            arr = rng.integers(0, t.vocab, shape)
            arrays.append(arr.astype(t.dtype if "int" in t.dtype
                                     else "float32"))
        elif "int" in t.dtype:
            arrays.append(rng.integers(0, 10, shape).astype(t.dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype("float32"))
    return arrays


def run_port(conv, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The port's outputs in Keras layout for Keras-layout ``inputs``."""
    model = conv.module()
    args = [torch.from_numpy(a).permute(*t.layout.perm)
            for a, t in zip(inputs, conv.program.inputs)]
    with torch.no_grad():
        outs = model(*args)
    if not isinstance(outs, tuple):
        outs = (outs,)
    result = []
    for o, t in zip(outs, conv.program.outputs):
        back = [t.layout.perm.index(i) for i in range(len(t.layout.perm))]
        result.append(o.permute(*back).numpy())
    return result


def run_keras(model_path, weights, keras_major: int,
              inputs: list[np.ndarray], timeout: float = 900):
    if importlib.util.find_spec("tensorflow") is None:
        raise VerifyUnavailable(
            "cannot verify: TensorFlow is not installed "
            "(pip install 'keras2torch[verify]')")
    with tempfile.TemporaryDirectory(prefix="keras2torch-verify-") as tmp:
        src, dst = Path(tmp, "inputs.npz"), Path(tmp, "outputs.npz")
        np.savez(src, **{f"in_{i}": a for i, a in enumerate(inputs)})
        cmd = [sys.executable, str(RUNNER), os.fspath(model_path), str(src),
               str(dst), "--major", str(keras_major)]
        if weights:
            cmd += ["--weights", os.fspath(weights)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_ENABLE_ONEDNN_OPTS="0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=timeout)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConversionError(f"Keras could not run the model: {last}")
        with np.load(dst, allow_pickle=False) as data:
            outs = [data[f"out_{i}"] for i in range(len(data.files))]
        version = (proc.stdout.strip().splitlines() or [""])[-1]
    return outs, version


def compare(keras_outs, port_outs, names, atol: float) -> dict:
    rows = []
    for name, k, t in zip(names, keras_outs, port_outs):
        k = np.asarray(k, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        if k.shape != t.shape:
            raise ConversionError(f"output {name!r}: Keras shape {k.shape}, "
                                  f"port shape {t.shape}")
        err = float(np.max(np.abs(k - t))) if k.size else 0.0
        scale = float(np.max(np.abs(k))) if k.size else 0.0
        rows.append({"name": name, "shape": list(k.shape),
                     "max_abs_err": err,
                     "max_rel_err": err / scale if scale else err})
    worst = max((r["max_abs_err"] for r in rows), default=0.0)
    return {"atol": atol, "outputs": rows, "max_abs_err": worst,
            "max_rel_err": max((r["max_rel_err"] for r in rows), default=0.0),
            "passed": worst <= atol}


def verify(model_path, conversion=None, weights=None, *, atol: float = 1e-4,
           seed: int = 0, batch: int = 2) -> dict:
    """Run Keras and the port on the same seeded inputs; return the parity
    figures (also stored on ``conversion.parity``).

    ``rel`` errors are the max absolute error over the largest Keras output
    magnitude.  Raises :class:`VerifyUnavailable` without TensorFlow.
    """
    if conversion is None:
        from .api import convert
        conversion = convert(model_path, weights)
    major = int(str(conversion.source_info.get("keras_version") or "3")
                .split(".")[0] or 3)
    inputs = make_inputs(conversion.program, seed, batch)
    keras_outs, version = run_keras(model_path, weights, major, inputs)
    if len(keras_outs) != len(conversion.program.outputs):
        raise ConversionError(f"Keras returned {len(keras_outs)} outputs, "
                              f"the port {len(conversion.program.outputs)}")
    port_outs = run_port(conversion, inputs)
    result = compare(keras_outs, port_outs,
                     [t.name for t in conversion.program.outputs], atol)
    result.update({"seed": seed, "batch": batch,
                   "inputs": [list(a.shape) for a in inputs],
                   "keras_runtime": version})
    conversion.parity = result
    return result
