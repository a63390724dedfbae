"""Run a Keras model on stored inputs; the Keras half of parity checking.

    python verify_keras.py MODEL [--weights FILE] --major 2|3 INPUTS.npz OUTPUTS.npz
                           [--taps TAPS.npz]

Runs in its own process, started by :mod:`migrate.verify` as a script (not
as part of the ``migrate`` package), so TensorFlow and torch never share a
process.  Keras 2 files run under tf-keras, Keras 3 files under Keras 3,
always with Keras's safe mode on.

``--serve`` keeps one process for many models (:class:`migrate.verify.
KerasServer` starts it): each line on stdin is a JSON list of the arguments
above, each answer a JSON line ``{"ok": true, "version": ...}`` or ``{"ok":
false, "error": LAST_LINE}`` on the original stdout (what Keras prints goes
to stderr).  One server runs one Keras major version (``--major``);
between models it clears the Keras session.

``--custom-objects FILE.py`` (repeatable) imports the user's own file that
defines the model's custom layer classes (registered with
``keras.saving.register_keras_serializable``) before loading the model.

``--taps`` also records every layer call's output: each layer's ``call``
(nested models' layers and Keras 3 op nodes included) is wrapped on the
instance, and the k-th call of the layer at path ``outer/inner/name`` is
stored as ``name`` (k = 0) or ``name#k`` -- the node ids of
:mod:`migrate.read.inline`.  TAPS.npz holds arrays ``t0, t1, ...`` and
``index``, a JSON list of ``[node_id, output_index]`` per array.
"""
import os
import sys

# Run as a script, this file's directory (the migrate package) comes first on
# sys.path, where migrate/inspect.py would shadow the standard library's.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("inputs")
    p.add_argument("outputs")
    p.add_argument("--weights")
    p.add_argument("--major", type=int, default=3)
    p.add_argument("--taps")
    p.add_argument("--custom-objects", action="append", default=[])
    p.add_argument("--train")
    p.add_argument("--fit")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import numpy as np
    if a.major < 3:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as keras
    else:
        import keras
    if a.major >= 3 and _uses_keras_hub(a.model):
        import keras_hub  # noqa: F401  (registers its classes with Keras)
    for path in a.custom_objects:
        _import_file(path)
    if a.weights:
        import json
        with open(a.model, encoding="utf-8") as f:
            config = json.load(f)
        model = keras.models.model_from_json(json.dumps(
            cpu_config(config) or config))
        model.load_weights(a.weights)
    elif a.major < 3:
        model = keras.models.load_model(a.model, compile=bool(a.fit))
    else:
        model = keras.saving.load_model(a.model, compile=bool(a.fit),
                                        safe_mode=True)
    if a.fit:  # training steps from the saved optimizer state (fit_steps)
        fit_steps(model, a.fit, a.outputs, a.major, a.model)
        print(keras.__version__)
        return
    if not a.weights:
        model = cpu_twin(keras, model, a.model)
    with np.load(a.inputs, allow_pickle=False) as data:
        inputs = [data[f"in_{i}"] for i in range(len(data.files))]
    if a.train:  # one training-mode step instead (see train_step)
        train_step(model, model_args(model, inputs), a.train, a.outputs,
                   a.major)
        print(keras.__version__)
        return
    records = _tap(model) if a.taps else None
    outs = run_model(model, model_args(model, inputs))
    if isinstance(outs, dict):  # flattened as Keras flattens: sorted keys
        outs = [outs[k] for k in sorted(outs)]
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    np.savez(a.outputs, **{f"out_{i}": np.asarray(o) for i, o in enumerate(outs)})
    if records is not None:
        _save_taps(a.taps, records)
    print(keras.__version__)


def _uses_keras_hub(path):
    """Whether the model's config names keras-hub classes (a .keras
    archive's config.json, or a JSON config).  keras-hub is imported only
    then, and only here: it is the library Keras needs to run the model,
    never a module the file chose."""
    import zipfile
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                text = z.read("config.json")
        else:
            with open(path, "rb") as f:
                text = f.read(1 << 24)
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
    return b"keras_hub" in text or b"keras_nlp" in text


_RATES = ("rate", "dropout", "recurrent_dropout", "stddev")


def _no_dropout(model):
    """Every dropout and noise rate of ``model``'s layers (nested ones and
    RNN cells too) set to 0 on the loaded instances: the user's file is not
    touched.  Returns how many rates were set."""
    seen, count = set(), 0
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        for name in _RATES:
            value = getattr(layer, name, None)
            if isinstance(value, (int, float)) and not isinstance(
                    value, bool) and value:
                try:
                    setattr(layer, name, 0.0)
                    count += 1
                except AttributeError:  # a read-only property
                    pass
        for attr in ("cell", "layer", "forward_layer", "backward_layer"):
            sub = getattr(layer, attr, None)
            if sub is not None and hasattr(sub, "__dict__"):
                stack.append(sub)
        stack.extend(getattr(layer, "cells", None) or [])
        try:
            stack.extend(layer._flatten_layers(include_self=False))
        except Exception:  # noqa: BLE001 -- not a layer container
            pass
    return count


def train_step(model, args, weights_file, out_file, major):
    """One forward in training mode (dropout and noise rates 0) with
    ``loss = sum_i sum(output_i * r_i)`` (``r_i`` from ``weights_file``),
    its gradient w.r.t. every trainable variable (``tf.GradientTape``), and
    every variable after the step (BatchNorm's moving statistics move).
    Writes ``out_i``, ``grad_k``, ``after_k`` and ``index`` (JSON:
    ``{"grads": [path...], "after": [path...]}``, Keras's own paths)."""
    import json
    import numpy as np
    import tensorflow as tf
    with np.load(weights_file, allow_pickle=False) as data:
        rs = [data[f"r_{i}"] for i in range(len(data.files))]
    _no_dropout(model)

    def path(v):
        return v.path if major >= 3 else v.name.split(":")[0]

    variables = list(model.trainable_variables)
    sources = [v.value if major >= 3 else v for v in variables]

    def step(args):
        with tf.GradientTape() as tape:
            outs = model(args, training=True)
            if isinstance(outs, dict):
                outs = [outs[k] for k in sorted(outs)]
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            loss = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64) * r)
                             for o, r in zip(outs, rs)])
        return outs, tape.gradient(loss, sources)

    try:
        outs, grads = step(args)
    except Exception as exc:  # noqa: BLE001 -- channels_first on CPU
        if "NHWC" not in str(exc):
            raise
        outs, grads = tf.function(step, jit_compile=True)(args)
    arrays = {f"out_{i}": np.asarray(o) for i, o in enumerate(outs)}
    names = {"grads": [], "after": []}
    for v, g in zip(variables, grads):
        if g is None:
            continue
        if isinstance(g, tf.IndexedSlices):
            g = tf.convert_to_tensor(g)
        arrays[f"grad_{len(names['grads'])}"] = np.asarray(g)
        names["grads"].append(path(v))
    for v in model.weights:
        arrays[f"after_{len(names['after'])}"] = np.asarray(v)
        names["after"].append(path(v))
    arrays["index"] = np.array(json.dumps(names))
    np.savez(out_file, **arrays)


def fit_steps(model, batches_file, out_file, major, model_path=""):
    """``train_on_batch`` on each stored batch (``x_<k>_<i>``, ``y_<k>_<j>``;
    dropout and noise rates 0), from the optimizer state loaded with the
    model.  Writes ``loss_<k>`` (the loss train_on_batch reports),
    ``w_<k>_<j>`` (every trainable variable after step k), ``iterations``
    (the optimizer's count before the first step) and ``index`` (JSON:
    ``{"paths": [path...]}``, Keras's own paths)."""
    import json
    import numpy as np
    with np.load(batches_file, allow_pickle=False) as data:
        steps = int(data["steps"])
        xs = [[data[f"x_{k}_{i}"] for i in range(int(data["inputs"]))]
              for k in range(steps)]
        ys = [[data[f"y_{k}_{j}"] for j in range(int(data["outputs"]))]
              for k in range(steps)]
    _no_dropout(model)
    variables = list(model.trainable_variables)
    if major >= 3:
        _rebind_optimizer(model, model_path)
    arrays = {"iterations": np.asarray(int(model.optimizer.iterations))}
    for k in range(steps):
        y = ys[k] if len(ys[k]) > 1 else ys[k][0]
        loss = model.train_on_batch(model_args(model, xs[k]), y)
        if isinstance(loss, dict):
            loss = loss.get("loss")
        if isinstance(loss, (list, tuple)):
            loss = loss[0]
        arrays[f"loss_{k}"] = np.asarray(loss, np.float64)
        for j, v in enumerate(variables):
            arrays[f"w_{k}_{j}"] = np.asarray(v)
    paths = [v.path if major >= 3 else v.name.split(":")[0]
             for v in variables]
    arrays["index"] = np.array(json.dumps({"paths": paths}))
    np.savez(out_file, **arrays)


def _rebind_optimizer(model, path):
    """Keras 3 loads a legacy ``.h5`` with its optimizer built on no
    variables (only ``iteration`` and ``learning_rate``; ``train_on_batch``
    then refuses the model's): the optimizer is rebuilt on the model's
    trainable variables and given the file's ``optimizer_weights`` in
    their stored order, which is the built optimizer's own order (shapes
    checked).  ``.keras`` files load whole and are left alone."""
    opt = model.optimizer
    if not str(path).endswith((".h5", ".hdf5")) or len(
            opt.variables) > 2 or not model.trainable_variables:
        return
    import h5py
    import numpy as np
    with h5py.File(path, "r") as f:
        group = f.get("optimizer_weights")
        if group is None:
            return
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]
        values = [np.asarray(group[n]) for n in names]
    fresh = type(opt).from_config(opt.get_config())
    fresh.build(model.trainable_variables)
    if len(fresh.variables) != len(values) or any(
            tuple(v.shape) != a.shape
            for v, a in zip(fresh.variables, values)):
        raise ValueError("the .h5 file's optimizer_weights do not fit the "
                         "optimizer Keras builds for the model")
    for v, a in zip(fresh.variables, values):
        v.assign(a)
    model.optimizer = fresh


def _import_file(path):
    """Import the user's Python file that defines (and registers with
    Keras) the model's custom classes; once per process."""
    import hashlib
    import importlib.util
    path = os.path.abspath(path)
    name = "keras2torch_custom_objects_" + hashlib.sha256(
        path.encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"custom objects file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


_CUDNN = {"CuDNNLSTM": ("LSTM", {}), "CuDNNGRU": ("GRU", {"reset_after": True})}


def cpu_config(value):
    """A model config with CuDNNLSTM/CuDNNGRU (Keras 2 layers that run only
    on a GPU) replaced by LSTM / GRU(reset_after=True) with sigmoid gates,
    into which tf-keras converts their weights on load; ``None`` when the
    config has none."""
    found = []

    def swap(value):
        if isinstance(value, dict):
            if value.get("class_name") in _CUDNN and isinstance(
                    value.get("config"), dict):
                cls, extra = _CUDNN[value["class_name"]]
                found.append(cls)
                value = dict(value, class_name=cls, config=dict(
                    value["config"], activation="tanh",
                    recurrent_activation="sigmoid", **extra))
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    value = swap(value)
    return value if found else None


def cpu_twin(keras, model, weights_path):
    """``model`` itself, or its CPU twin (see :func:`cpu_config`) with the
    weights at ``weights_path`` loaded."""
    import json
    config = cpu_config(json.loads(model.to_json()))
    if config is None:
        return model
    twin = keras.models.model_from_json(json.dumps(config))
    if os.path.isdir(weights_path):  # a SavedModel: its checkpoint
        weights_path = os.path.join(weights_path, "variables", "variables")
    twin.load_weights(weights_path)
    return twin


def run_model(model, args):
    """``model(args)`` in inference mode.  TensorFlow's CPU kernels refuse
    channels_first convolutions and poolings; XLA compiles them, so such
    a model runs under ``jit_compile`` (as its fixtures were made)."""
    try:
        return model(args, training=False)
    except Exception as exc:  # noqa: BLE001 -- TF's own error types
        if "NHWC" not in str(exc):
            raise
    import tensorflow as tf
    return tf.function(lambda a: model(a, training=False),
                       jit_compile=True)(args)


def model_args(model, arrays):
    """The arrays as the model takes them: one array, a list, or a dict
    when the model was built on a dict of inputs (the port's inputs are in
    Keras's flattened order: sorted keys)."""
    try:
        struct = model.input
    except (AttributeError, ValueError):
        struct = None
    if isinstance(struct, dict) and len(struct) == len(arrays):
        return dict(zip(sorted(struct), arrays))
    return arrays if len(arrays) > 1 else arrays[0]


def _children(layer):
    ops = getattr(layer, "operations", None)
    if ops is None:
        ops = getattr(layer, "layers", None)
    return list(ops or [])


def _tap(model):
    """Wrap every layer's ``call``; returns the list the calls append
    ``(path, outputs)`` to, in call order."""
    records, stack, seen = [], [], set()

    def wrap(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        original = layer.call
        nested = hasattr(layer, "layers")
        name = layer.name

        def call(*args, **kwargs):
            if nested:
                stack.append(name)
                try:
                    return original(*args, **kwargs)
                finally:
                    stack.pop()
            out = original(*args, **kwargs)
            records.append(("/".join(stack + [name]), out))
            return out

        object.__setattr__(layer, "call", call)
        for child in _children(layer):
            wrap(child)

    seen.add(id(model))
    for child in _children(model):
        wrap(child)
    return records


def _flat(value):
    if isinstance(value, dict):
        return [v for item in value.values() for v in _flat(item)]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flat(item)]
    return [value]


def _save_taps(path, records):
    import json
    import numpy as np
    arrays, index, calls = {}, [], {}
    for name, out in records:
        k = calls.get(name, 0)
        calls[name] = k + 1
        node = name if k == 0 else f"{name}#{k}"
        for i, value in enumerate(_flat(out)):
            if value is None:
                continue
            try:
                arr = np.asarray(value)
            except Exception:  # not a tensor (a Keras object, a string...)
                continue
            if arr.dtype == object:
                continue
            arrays[f"t{len(index)}"] = arr
            index.append([node, i])
    arrays["index"] = np.array(json.dumps(index))
    np.savez(path, **arrays)


def end_with_parent(interval: float = 1.0) -> None:
    """Exit when the process that started this one is gone, even if
    stdin stays open (a process forked from it before it died may still
    hold the pipe), so no TensorFlow process outlives its session."""
    import threading
    import time
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="end-with-parent"
                     ).start()


def serve(major):
    """Answer requests until stdin closes (see the module doc)."""
    import contextlib
    import gc
    import io
    import json
    import traceback
    end_with_parent()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    threads = int(os.environ.get("KERAS2TORCH_KERAS_THREADS") or 0)
    os.dup2(2, 1)  # prints from Keras or the model go to stderr
    if major < 3:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as keras
    else:
        import keras
    if threads > 0:  # one of several Keras processes: share the CPUs
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    for line in sys.stdin:
        if not line.strip():
            continue
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                main(json.loads(line))
            version = (printed.getvalue().strip().splitlines() or [""])[-1]
            answer = {"ok": True, "version": version}
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            last = traceback.format_exception_only(type(exc), exc)
            answer = {"ok": False, "error": "".join(last).strip()
                      .splitlines()[-1] if last else repr(exc)}
        finally:
            keras.backend.clear_session()
            gc.collect()
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve(int(sys.argv[sys.argv.index("--major") + 1])
                       if "--major" in sys.argv else 3))
    sys.exit(main())
