"""Train-mode parity: one step of the port in ``train()`` against Keras's
``training=True`` (``verify(..., training=True)``, ``--verify --training``).

Dropout and noise rates are set to 0 on both sides without touching the
user's file (Keras: on the loaded layers, in the verify process; the port:
on its modules).  BatchNorm then runs on batch statistics on both sides.
The scalar loss is ``sum_i sum(output_i * r_i)`` with seeded ``r_i``, so
every output element gets its own gradient.  Compared, each relative to
the Keras value's scale (its largest magnitude):

* the outputs;
* the gradient of every parameter: Keras's gradients (``tf.GradientTape``,
  keyed by the variables' Keras paths) are mapped with
  :meth:`migrate.api.Conversion.map_arrays` -- the transforms of the
  weights -- onto the state-dict keys;
* the buffers after the step (BatchNorm's running statistics), mapped the
  same way.  torch updates ``running_var`` with the *unbiased* batch
  variance and Keras with the biased one; the difference is reported as
  measured, not hidden (``buffers``).

A gradient below 1e-5 of the model's largest (``vanishing``: a key
projection's bias under softmax gets exactly zero, both sides rounding
noise) is measured against that largest gradient instead of its own scale.
Parameters that hold no Keras variable (the second bias torch's LSTM
has) are listed in ``unmapped``; parameters whose Keras gradient did not
come back under the weight map's path (``missing``) fail the check.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import ConversionError

TOL = 1e-5
VANISHING = 1e-5  # a gradient this small next to the largest one is zero
_RATES = ("p", "rate", "stddev")  # and every "...dropout" attribute


def no_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability and noise scale of ``model`` to 0;
    returns how many were set."""
    count = 0
    for m in model.modules():
        for name, value in list(vars(m).items()):
            if (name in _RATES or name.endswith("dropout")) and isinstance(
                    value, float) and value:
                setattr(m, name, 0.0)
                count += 1
    return count


def _rel(keras: np.ndarray, port: np.ndarray) -> dict:
    k = np.asarray(keras, np.float64)
    t = np.asarray(port, np.float64)
    if k.shape != t.shape:
        raise ConversionError(f"shape {t.shape} vs Keras {k.shape}")
    err = float(np.abs(k - t).max()) if k.size else 0.0
    scale = float(np.abs(k).max()) if k.size else 0.0
    return {"max_abs_err": err, "max_rel_err": err / scale if scale else err}


def _run_runner(model_path, weights, major, tmp, files: dict, flags,
                custom_objects=(), what="a training step"):
    """Run ``verify_keras.py`` in the Keras process (the session's server,
    or a new process) with the arrays of ``files`` (``{name: {key:
    array}}``, written as ``tmp/<name>.npz``) and ``flags`` (file names
    in them become those paths); returns the path of ``out.npz``."""
    import importlib
    v = importlib.import_module("migrate.verify")  # the module, not the
    # function migrate.verify
    if not v.verify_available():
        raise v.VerifyUnavailable("cannot verify: TensorFlow is not "
                                  "installed (pip install 'keras2torch"
                                  "[verify]')")
    paths = {name: Path(tmp, f"{name}.npz") for name in files}
    for name, arrays in files.items():
        np.savez(paths[name], **arrays)
    dst = Path(tmp, "out.npz")
    cmd = [sys.executable, str(v.RUNNER), os.fspath(model_path),
           str(paths["in"]), str(dst), "--major", str(major)]
    cmd += [str(paths.get(f, f)) for f in flags]
    if weights:
        cmd += ["--weights", os.fspath(weights)]
    for path in custom_objects or ():
        cmd += ["--custom-objects", os.path.abspath(path)]
    server = v._server(major)
    if server is not None:
        server.run(cmd[2:])
    else:
        import subprocess
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=v._keras_env(), timeout=900)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise ConversionError(f"Keras could not run {what}: "
                                  f"{v._keras_error(last)}")
    return dst


def run_keras_step(model_path, weights, major, inputs, rs, custom_objects=()):
    """Keras's outputs, ``[(path, gradient)]`` and ``[(path, value
    after)]``, in Keras's order (a path may repeat)."""
    with tempfile.TemporaryDirectory(prefix="keras2torch-train-") as tmp:
        dst = _run_runner(
            model_path, weights, major, tmp,
            {"in": {f"in_{i}": a for i, a in enumerate(inputs)},
             "r": {f"r_{i}": r for i, r in enumerate(rs)}},
            ["--train", "r"], custom_objects)
        with np.load(dst, allow_pickle=False) as data:
            index = json.loads(str(data["index"]))
            outs = [data[f"out_{i}"] for i in range(
                sum(1 for f in data.files if f.startswith("out_")))]
            grads = [(p, data[f"grad_{i}"])
                     for i, p in enumerate(index["grads"])]
            after = [(p, data[f"after_{i}"])
                     for i, p in enumerate(index["after"])]
    return outs, grads, after


def map_by_path(conv, pairs, mapper) -> dict:
    """Keras's ``[(variable path, array)]`` onto the port's state-dict keys
    with ``mapper`` (``conv.map_gradients`` / ``conv.map_arrays``).  A path
    Keras gives several variables (keras-hub T5 names both stacks'
    relative position tables ``self_attention/embeddings``) goes, by
    occurrence, to the layers the port reads it for, in order -- both
    follow the model's layer order -- when their counts agree; otherwise
    its keys stay unmapped (and the check reports them missing)."""
    from .weightmap import ambiguous_paths, variables
    seen: dict[str, list] = {}
    for path, array in pairs:
        seen.setdefault(path, []).append(array)
    unique = {p: a[0] for p, a in seen.items() if len(a) == 1}
    out = mapper(unique)
    owners = ambiguous_paths(conv.program.state)
    for path, arrays in seen.items():
        if len(arrays) == 1 or len(owners.get(path, ())) != len(arrays):
            continue
        for layer, array in zip(owners[path], arrays):
            keys = {k for k, e in conv.program.state.items()
                    if getattr(e, "keras_layer", None) == layer
                    and path in variables(e)}
            out.update(mapper(dict(unique, **{path: array}), keys))
    return out


def port_step(conv, inputs, rs):
    """The port's outputs (Keras layout), ``{key: grad}`` and buffers after
    one training-mode forward and backward."""
    model = conv.module().train()
    no_dropout(model)
    args = [torch.from_numpy(a).permute(*t.layout.perm)
            for a, t in zip(inputs, conv.program.inputs)]
    outs = model(*args)
    if not isinstance(outs, tuple):
        outs = (outs,)
    keras_outs, loss = [], 0
    for o, t, r in zip(outs, conv.program.outputs, rs):
        back = [t.layout.perm.index(i) for i in range(len(t.layout.perm))]
        o = o.permute(*back)
        keras_outs.append(o.detach().numpy())
        loss = loss + (o.double() * torch.from_numpy(r)).sum()
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in model.named_parameters()
             if p.grad is not None}
    buffers = {k: b.numpy() for k, b in model.named_buffers()}
    return keras_outs, grads, buffers


def train_parity(conv, model_path, weights, major, inputs, seed=0,
                 atol: float = TOL, custom_objects=()) -> dict:
    """The ``training`` section of the parity report (see the module doc)."""
    names = [t.name for t in conv.program.outputs]
    rs = _weights_for(conv, inputs, np.random.default_rng(seed + 1))
    k_outs, k_grads, k_after = run_keras_step(
        model_path, weights, major, inputs, rs, custom_objects)
    t_outs, t_grads, t_buffers = port_step(conv, inputs, rs)
    outputs = [dict(name=n, **_rel(k, t))
               for n, k, t in zip(names, k_outs, t_outs)]
    mapped = map_by_path(conv, k_grads, conv.map_gradients)
    top = max((float(np.abs(g).max()) for _, g in k_grads if g.size),
              default=0.0)
    grads, vanishing = {}, []
    for key, g in t_grads.items():
        if key in mapped:
            keras = mapped[key].numpy()
            grads[key] = _rel(keras, g)
            if keras.size and np.abs(keras).max() < VANISHING * top:
                # zero in exact arithmetic (a key bias under softmax): both
                # sides give rounding noise, measured against the largest
                # gradient instead of its own scale
                vanishing.append(key)
                grads[key]["max_rel_err"] = (grads[key]["max_abs_err"] / top)
    held = {r["torch"] for r in conv.weight_map() if r["keras_variables"]}
    # no Keras variable (torch's second LSTM bias): nothing to compare with
    unmapped = sorted(k for k in set(t_grads) - set(grads) if k not in held)
    # a Keras variable whose gradient did not come back under our path
    missing = sorted(k for k in set(t_grads) - set(grads) if k in held)
    after = map_by_path(conv, k_after, conv.map_arrays)
    buffers = {key: _rel(after[key].numpy(), b)
               for key, b in t_buffers.items() if key in after}
    worst_out = max((o["max_rel_err"] for o in outputs), default=0.0)
    worst_grad = max((g["max_rel_err"] for g in grads.values()),
                     default=0.0)
    return {
        "dropout": "rates set to 0 on both sides",
        "outputs": outputs, "max_rel_err": worst_out,
        "gradients": grads, "max_grad_rel_err": worst_grad,
        "unmapped": unmapped, "missing": missing, "vanishing": vanishing,
        "buffers": buffers,
        "passed": worst_out <= atol and worst_grad <= atol and not missing}


def _weights_for(conv, inputs, rng):
    """Seeded loss weights, one array per output in Keras layout (shapes
    from a no-grad forward of the port)."""
    from .verify import run_port
    return [rng.standard_normal(o.shape) for o in run_port(conv, inputs)]
