"""Run a Keras model on stored inputs; the Keras half of parity checking.

    python verify_keras.py MODEL [--weights FILE] --major 2|3 INPUTS.npz OUTPUTS.npz

Runs in its own process, started by :mod:`migrate.verify` as a script (not
as part of the ``migrate`` package), so TensorFlow and torch never share a
process.  Keras 2 files run under tf-keras, Keras 3 files under Keras 3,
always with Keras's safe mode on.
"""
import argparse
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("inputs")
    p.add_argument("outputs")
    p.add_argument("--weights")
    p.add_argument("--major", type=int, default=3)
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import numpy as np
    if a.major < 3:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as keras
    else:
        import keras
    if a.weights:
        with open(a.model, encoding="utf-8") as f:
            model = keras.models.model_from_json(f.read())
        model.load_weights(a.weights)
    elif a.major < 3:
        model = keras.models.load_model(a.model, compile=False)
    else:
        model = keras.saving.load_model(a.model, compile=False, safe_mode=True)
    with np.load(a.inputs, allow_pickle=False) as data:
        inputs = [data[f"in_{i}"] for i in range(len(data.files))]
    outs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    if isinstance(outs, dict):
        outs = list(outs.values())
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    np.savez(a.outputs, **{f"out_{i}": np.asarray(o) for i, o in enumerate(outs)})
    print(keras.__version__)


if __name__ == "__main__":
    sys.exit(main())
