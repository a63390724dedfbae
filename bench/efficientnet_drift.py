"""Where EfficientNetV2 (Keras 3) parity drifts in float32, and whether any
op of the port is computed differently from Keras.

    python bench/efficientnet_drift.py [--model EfficientNetV2L] [--size 96]
                                       [--batch 2] [--per-layer]
                                       [--seed 0] [--no-keras-torch]

A Keras subprocess (TensorFlow backend) builds the model (``weights=None``,
seeded, ``include_top=False, pooling="avg"``: the pooled features, since a
softmax would hide the drift) and calibrates its BatchNorm statistics
layer by layer: it runs the graph once in inference mode, node by node,
and just before each BatchNormalization sets its moving mean and variance
to the mean and (biased) variance of that layer's actual input, so every
BatchNorm output is standardised and activations stay O(1) however deep
the network (``--per-layer`` prints the scales).  Images are seeded uniform in
[0, 255]; the calibration batch is the evaluation batch.  It saves the
model, then builds the same architecture again under
``keras.config.set_floatx("float64")`` *and*
``keras.config.set_dtype_policy("float64")`` (the dtype policy is fixed
by the first model built; floatx alone leaves every layer in float32),
copies the weights in and runs it in float64; the script checks that the
float64 run's dtype is float64 and that it differs from the float32 run.
Every layer's output is recorded in both runs.  Here the port (the traced
translation, :func:`migrate.verify.run_traced`, one output per Keras layer)
runs in float32 and in float64.  The saved float32 model also runs again
in Keras with other kernels: on TensorFlow with oneDNN off
(``TF_ENABLE_ONEDNN_OPTS=0``: Eigen's convolutions) and, unless
``--no-keras-torch``, in Keras 3 on its torch backend.

What the comparisons mean:

* port float64 vs Keras float64: ~1e-12 when the port computes the same
  function as Keras, op for op (a different epsilon, activation formula,
  constant or order of an affine shows here, far above float64 rounding);
* port float32 vs Keras float32: the parity figure;
* each float32 run vs the float64 reference: the rounding error of float32
  alone.  Keras in float32 is itself that far from the exact result, so
  no float32 converter can be expected closer to it than about the sum of
  the two runs' distances from float64; Keras run by other kernels
  (oneDNN off, torch backend) shows how far Keras is from itself.

``--per-layer`` prints those figures at the end of every block and for
every op class (its worst layer).

Measured 2026-12-02 (96x96, batch 2, seed 0; max abs diff of the pooled
features, which reach 0.63 (ResNet50: 2.1); details, a second seed and
per-layer figures in bench/README.md):

    model            port64-K64  parity   K32-K64  port32-64  K(no oneDNN)-K32
    EfficientNetV2L  2.95e-12    1.80e-3  1.67e-3  1.08e-3    2.00e-3
    EfficientNetV2M  1.11e-12    6.94e-4  5.93e-4  4.03e-4    4.72e-4
    EfficientNetV2B0 2.30e-11    3.76e-5  2.79e-5  2.16e-5    1.51e-5
    ResNet50         7.02e-13    3.05e-4  4.38e-4  4.24e-4    2.29e-4

The port computes Keras's function (float64 agreement to 1e-12..1e-11
at every layer); its float32 error against Keras is float32 rounding, amplified
with depth: Keras's own float32 run is as far from float64, and Keras run
by other kernels (oneDNN off, or its torch backend) is as far from itself.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

_KERAS = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
from keras.src.models.functional import operation_fn
out, name = sys.argv[1], sys.argv[2]
size, batch, seed = (int(a) for a in sys.argv[3:6])
kw = dict(weights=None, input_shape=(size, size, 3), include_top=False,
          pooling="avg")


def build(dtype):
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    keras.utils.set_random_seed(seed)
    return getattr(keras.applications, name)(**kw)


def run(model, x, before=None):
    # inference-mode pass, node by node: (output, {layer: output}, order)
    taps, order = {}, []

    def wrap(op):
        call = operation_fn(op, training=False)

        def run_op(*args, **kwargs):
            if before is not None:
                before(op, args)
            if isinstance(op, keras.layers.Rescaling) and (
                    keras.config.floatx() == "float64"):
                # TensorFlow casts a Python float to float32 on its way
                # to float64 (tf.cast): Keras's float64 Rescaling scales
                # by float32(1/255).  The reference computes it exactly.
                y = (np.asarray(args[0], np.float64) * float(op.scale)
                     + float(op.offset))
            else:
                y = call(*args, **kwargs)
            taps[op.name] = np.asarray(y)
            order.append(op.name)
            return y
        return run_op
    y = model._run_through_graph(x, operation_fn=wrap)
    return np.asarray(y), taps, order


def calibrate(op, args):
    if isinstance(op, keras.layers.BatchNormalization):
        a = np.asarray(args[0], dtype=np.float64)
        axes = tuple(range(a.ndim - 1))
        op.moving_mean.assign(a.mean(axis=axes).astype("float32"))
        op.moving_variance.assign(a.var(axis=axes).astype("float32"))


x = np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3))
x = x.astype("float32")
model = build("float32")
_, _, order = run(model, x, calibrate)
model.save(os.path.join(out, "model.keras"))
y32 = np.asarray(model(x, training=False))
y32b, taps32, _ = run(model, x)
assert y32.dtype == np.float32 and np.array_equal(y32, y32b)
weights = model.get_weights()
classes = {l.name: type(l).__name__ for l in model.layers}
output = model.layers[-1].name
keras.backend.clear_session()  # the same auto-generated layer names
model64 = build("float64")
model64.set_weights([w.astype("float64") for w in weights])
y64, taps64, _ = run(model64, x.astype("float64"))
assert y64.dtype == np.float64, y64.dtype
assert not np.array_equal(y64, y32.astype("float64")), "float64 == float32"
np.save(os.path.join(out, "x.npy"), x)
np.savez(os.path.join(out, "keras32.npz"), **taps32)
np.savez(os.path.join(out, "keras64.npz"), **taps64)
with open(os.path.join(out, "order.json"), "w") as f:
    json.dump({"order": order, "classes": classes, "output": output}, f)
"""

_KERAS_AGAIN = r"""
import os, sys
import keras, numpy as np
out, name = sys.argv[1], sys.argv[2]
model = keras.saving.load_model(os.path.join(out, "model.keras"),
                                compile=False)
y = model(np.load(os.path.join(out, "x.npy")), training=False)
y = y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)
np.save(os.path.join(out, name), y)
"""
# The saved float32 model run again by other kernels: Keras 3 on its torch
# backend, and on TensorFlow without oneDNN (Eigen's convolutions).
AGAIN = {"keras_torch32.npy": dict(KERAS_BACKEND="torch"),
         "keras_eigen32.npy": dict(TF_ENABLE_ONEDNN_OPTS="0")}


def _err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64)
                        - np.asarray(b, np.float64)).max())


def _row(label, cells):
    return "| " + " | ".join([label] + cells) + " |"


def _figures(k32, k64, p32, p64):
    """(scale, port32-k32, k32-k64, p32-p64, p64-k64) for one layer."""
    return (float(np.abs(k64).max()), _err(p32, k32), _err(k32, k64),
            _err(p32, p64), _err(p64, k64))


HEAD = ("| layer | max abs value | port32 vs Keras32 | Keras32 vs Keras64 "
        "| port32 vs port64 | port64 vs Keras64 |\n|---|---|---|---|---|---|")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="EfficientNetV2L")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-layer", action="store_true")
    ap.add_argument("--no-keras-torch", action="store_true")
    args = ap.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    tmp = Path(tempfile.mkdtemp(prefix="k2t-drift-"))
    try:
        subprocess.run([sys.executable, "-c", _KERAS, str(tmp), args.model,
                        str(args.size), str(args.batch), str(args.seed)],
                       check=True, env=env)
        again = {}
        for name, extra in AGAIN.items():
            if args.no_keras_torch and "KERAS_BACKEND" in extra:
                continue
            subprocess.run([sys.executable, "-c", _KERAS_AGAIN, str(tmp),
                            name], check=True, env=dict(env, **extra))
            again[name] = np.load(tmp / name)
        import migrate
        from migrate.verify import run_traced
        meta = json.loads((tmp / "order.json").read_text())
        conv = migrate.convert(tmp / "model.keras")
        x = np.load(tmp / "x.npy")
        port = conv.module().eval()
        tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            p32 = port(tx).numpy()
            p64 = port.double()(tx.double()).numpy()
        k32 = np.load(tmp / "keras32.npz")
        k64 = np.load(tmp / "keras64.npz")
        out = meta["output"]
        report(args, k32[out], k64[out], p32, p64, again)
        if args.per_layer:
            per_layer(tmp, conv, x, meta, k32, k64, run_traced)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args, k32, k64, p32, p64, again):
    print(f"{args.model} {args.size}x{args.size}, batch {args.batch}, "
          f"seed {args.seed}, pooled features up to {np.abs(k64).max():.3g}")
    print("| compared | max abs diff |\n|---|---|")
    rows = [("port float64 vs Keras float64 (same function?)", p64, k64),
            ("port float32 vs Keras float32 (parity)", p32, k32),
            ("Keras float32 vs Keras float64 (Keras's rounding)", k32, k64),
            ("port float32 vs port float64 (the port's rounding)", p32,
             p64)]
    for name, label in (("keras_torch32.npy", "Keras on torch backend"),
                        ("keras_eigen32.npy", "Keras, TF without oneDNN")):
        if name in again:
            rows += [(f"{label} float32 vs Keras float32", again[name],
                      k32),
                     (f"{label} float32 vs Keras float64", again[name],
                      k64)]
    for label, a, b in rows:
        print(f"| {label} | {_err(a, b):.2e} |")


def per_layer(tmp, conv, x, meta, k32, k64, run_traced):
    """Per-layer figures at every block's end, and each op class's
    worst layer (relative to the layer's scale)."""
    _, t32 = run_traced(tmp / "model.keras", None, conv, [x])
    _, t64 = run_traced(tmp / "model.keras", None, conv, [x],
                        dtype=torch.float64)
    print("\nPer layer (max abs diff; the last layer of each block):\n")
    print(HEAD)
    worst: dict[str, tuple] = {}
    order = meta["order"]
    for i, name in enumerate(order):
        if name not in t32 or name not in t64:
            continue
        f = _figures(k32[name], k64[name], t32[name][0], t64[name][0])
        cls = meta["classes"].get(name, "?")
        rel = f[4] / max(f[0], 1e-30)
        if rel >= worst.get(cls, (-1.0,))[0]:
            worst[cls] = (rel, name, f)
        block = name.split("_")[0]
        nxt = order[i + 1].split("_")[0] if i + 1 < len(order) else None
        if block != nxt:
            print(_row(name, [f"{v:.2e}" for v in f]))
    print("\nWorst layer of each op class, by port64 vs Keras64 over the "
          "layer's max abs value:\n")
    print(HEAD.replace("| layer |", "| class: layer |"))
    for cls, (rel, name, f) in sorted(worst.items()):
        print(_row(f"{cls}: {name}", [f"{v:.2e}" for v in f]))


if __name__ == "__main__":
    main()
