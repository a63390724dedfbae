"""The same trajectory: K training steps in Keras against K steps of the
port with ``training.py`` (issue 15, part 4; ``verify(..., training=True)``
on a compiled model).

Keras loads the model *with* its compile config and optimizer state and
runs ``train_on_batch`` on K seeded batches (dropout and noise rates 0, in
the verify process).  The port starts from the same weights, builds
``make_optimizer(model)``, loads ``optimizer.safetensors``' tensors with
``load_optimizer_state`` and runs K steps of ``loss_fn`` on the same
batches in ``train()`` mode.  After every step each trainable parameter
is compared with Keras's variable mapped by
:meth:`migrate.api.Conversion.map_arrays`, relative to the Keras value's
largest magnitude; the step's figure is the worst parameter.  Targets are
drawn for each output's loss: class ids (sparse), probability rows
(categorical), 0/1 (binary), normal values (regression).
"""
from __future__ import annotations

import json
import tempfile

import numpy as np
import torch

from .errors import ConversionError
from .verify_train import TOL, _run_runner, map_by_path, no_dropout

STEPS = 5


def _targets(port_outs, losses, rng) -> list[np.ndarray]:
    """One target array per output, in Keras layout, for its loss."""
    out = []
    for o, loss in zip(port_outs, losses):
        kind = loss["loss"].split("(")[0]
        shape = o.shape
        if kind == "SparseCategoricalCrossentropy":
            out.append(rng.integers(0, shape[-1], shape[:-1]).astype(
                "int64"))
        elif kind == "CategoricalCrossentropy":
            z = rng.standard_normal(shape)
            p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
            out.append(p.astype("float32"))
        elif kind == "BinaryCrossentropy":
            out.append(rng.integers(0, 2, shape).astype("float32"))
        else:
            out.append(rng.standard_normal(shape).astype("float32"))
    return out


def _to_port(a: np.ndarray, perm: tuple) -> torch.Tensor:
    """A Keras-layout array in the port's layout (a sparse target lacks
    the class axis, the last one)."""
    t = torch.from_numpy(a)
    if a.ndim == len(perm):
        return t.permute(*perm)
    last = len(perm) - 1
    sub = [p - (p > last) for p in perm if p != last]
    return t.permute(*sub)


def trajectory(conv, model_path, weights, major, inputs, seed=0,
               steps: int = STEPS, atol: float = TOL,
               custom_objects=()) -> dict:
    """The ``trajectory`` section of the training report."""
    from .verify import make_inputs, run_port
    port = conv.training
    if port is None:
        return {"skipped": "the model file has no compile config"}
    if port.code is None or not port.has_loss:
        return {"skipped": "training.py lacks the optimizer or the loss: "
                + "; ".join(r["reason"] for r in port.info["refused"])}
    rng = np.random.default_rng(seed + 7)
    batches = [make_inputs(conv.program, seed + 10 + k, len(inputs[0]))
               for k in range(steps)]
    shapes = run_port(conv, batches[0])
    ys = [_targets(shapes, port.info["loss"], rng) for _ in range(steps)]
    files = {"in": {f"in_{i}": a for i, a in enumerate(inputs)},
             "fit": {"steps": np.asarray(steps),
                     "inputs": np.asarray(len(inputs)),
                     "outputs": np.asarray(len(ys[0]))}}
    for k in range(steps):
        files["fit"].update({f"x_{k}_{i}": a for i, a in
                             enumerate(batches[k])})
        files["fit"].update({f"y_{k}_{j}": a for j, a in enumerate(ys[k])})
    with tempfile.TemporaryDirectory(prefix="keras2torch-fit-") as tmp:
        dst = _run_runner(model_path, weights, major, tmp, files,
                          ["--fit", "fit"], custom_objects,
                          "the training steps")
        with np.load(dst, allow_pickle=False) as data:
            paths = json.loads(str(data["index"]))["paths"]
            k_loss = [float(data[f"loss_{k}"]) for k in range(steps)]
            # (path, array) pairs: a path may repeat (keras-hub T5's
            # relative tables), map_by_path gives each its own layer
            k_weights = [[(p, data[f"w_{k}_{j}"]) for j, p in
                          enumerate(paths)] for k in range(steps)]
            start = int(data["iterations"])
    t_loss, t_weights = port_steps(conv, batches, ys)
    rows = []
    for k in range(steps):
        mapped = map_by_path(conv, k_weights[k], conv.map_arrays)
        errs = {}
        for key, value in t_weights[k].items():
            if key in mapped:
                ref = mapped[key].double()
                err = float((ref - value.double()).abs().max())
                scale = float(ref.abs().max())
                errs[key] = err / scale if scale else err
        worst = max(errs, key=errs.get) if errs else None
        rows.append({"step": k + 1, "max_rel_err": errs.get(worst, 0.0),
                     "worst": worst, "compared": len(errs),
                     "loss_keras": k_loss[k], "loss_port": t_loss[k]})
    missing = sorted(set(t_weights[0]) - set(
        map_by_path(conv, k_weights[0], conv.map_arrays)))
    worst = max((r["max_rel_err"] for r in rows), default=0.0)
    return {"steps": steps, "keras_start_iteration": start,
            "from_saved_state": port.state is not None,
            "per_step": rows, "max_rel_err": worst, "missing": missing,
            "passed": worst <= atol and not missing}


def port_steps(conv, batches, ys):
    """The port's loss and trainable parameters after each step."""
    namespace: dict = {"__name__": "keras2torch_training"}
    exec(compile(conv.training.source, "training.py", "exec"), namespace)
    model = conv.module().train()
    no_dropout(model)
    optimizer = namespace["make_optimizer"](model)
    if conv.training.state is not None:
        namespace["load_optimizer_state"](
            optimizer, {k: v.clone() for k, v in
                        conv.training.state.items()})
    loss_fn = namespace["loss_fn"]
    outs_spec = conv.program.outputs
    losses, after = [], []
    for x, y in zip(batches, ys):
        args = [torch.from_numpy(a).permute(*t.layout.perm)
                for a, t in zip(x, conv.program.inputs)]
        targets = [_to_port(a, tuple(t.layout.perm))
                   for a, t in zip(y, outs_spec)]
        optimizer.zero_grad()
        out = model(*args)
        loss = (loss_fn(out, targets[0]) if len(targets) == 1
                else loss_fn(tuple(out), tuple(targets)))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        after.append({k: p.detach().clone()
                      for k, p in model.named_parameters()
                      if p.requires_grad})
    if not losses:
        raise ConversionError("no training steps to compare")
    return losses, after
