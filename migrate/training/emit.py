"""``training.py`` and ``optimizer.safetensors``: training goes on in torch
where Keras left off (issue 15, part 3).

When the model file holds a compile config (:mod:`migrate.read.training`),
:func:`build` makes

* ``training.py`` -- plain torch like ``model.py``: the optimizer
  (:mod:`.optimizers`: Keras's update rule, its hyper-parameters and
  schedule), ``make_optimizer(model)``, ``loss_fn`` (:mod:`.losses`) and
  ``load_optimizer_state(optimizer, state)``;
* the optimizer's saved state as tensors for ``optimizer.safetensors``:
  ``state.<i>.<key>`` is the state ``key`` of the ``i``-th parameter
  ``make_optimizer`` gives the optimizer (``model.parameters()``, in
  order; frozen ones have no state) --
  ``optimizer.state_dict()["state"][i][key]``.
  Each Keras slot goes through :meth:`Conversion.map_gradients` (the
  transposes and reshapes of its variable's weight), the step count is
  Keras's ``iteration``.

What cannot be reproduced (an optimizer or loss we have no exact torch
for, regularization losses, a state whose layout does not fit) is left
out with a warning naming it, never approximated: ``training.py`` is then
written without that part, and no ``optimizer.safetensors`` without the
whole state.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConversionError
from ..read.training import slot_of
from .losses import Output, UnsupportedLoss, loss_code

TRAINING_FILE = "training.py"
STATE_FILE = "optimizer.safetensors"

LOADER = '''\
def load_optimizer_state(optimizer, state):
    """Resume from the optimizer state Keras saved: ``state`` is
    ``safetensors.torch.load_file("optimizer.safetensors")``, whose keys
    ``state.<i>.<key>`` are ``optimizer.state_dict()["state"][i][key]``."""
    saved = optimizer.state_dict()
    saved["state"] = {}
    for name, value in state.items():
        _, index, key = name.split(".", 2)
        saved["state"].setdefault(int(index), {})[key] = value
    optimizer.load_state_dict(saved)
'''


@dataclass
class TrainingPort:
    """What :func:`build` made of a model file's training half."""

    source: str | None = None  # training.py, None when nothing is reproduced
    state: dict | None = None  # {key: tensor} for optimizer.safetensors
    info: dict = field(default_factory=dict)  # conversion.json "training"
    warnings: list = field(default_factory=list)
    code: object = None  # the OptimizerCode, when the optimizer is
    has_loss: bool = False


def build(conv, tsrc) -> TrainingPort:
    """The training port of ``conv`` from ``tsrc`` (a
    :class:`migrate.read.training.TrainingSource`)."""
    port = TrainingPort()
    port.warnings += tsrc.warnings
    if tsrc.format == "savedmodel":  # its compile config is not read
        port.info = {"optimizer": None, "loss": None, "state_file": None,
                     "refused": [{"what": "training", "reason":
                                  tsrc.warnings[0]}]}
        return port
    opt_cfg = tsrc.compile.get("optimizer")
    info = port.info
    info["optimizer"] = _describe(opt_cfg)
    info["refused"] = []
    parts = []
    code = None
    try:
        from .optimizers import optimizer_code
        if not isinstance(opt_cfg, dict):
            raise ConversionError(f"optimizer {str(opt_cfg)[:40]!r} is not "
                                  "a serialized Keras optimizer")
        # nn.Embedding modules, or classes built on it
        lookups = re.search(r"\bnn\.Embedding\b", conv.source) is not None
        code = optimizer_code(opt_cfg, lookups=lookups)
    except ConversionError as exc:
        _refuse(port, "optimizer", str(exc))
    if code is not None:
        port.code = code
        lines = (code.make_optimizer.splitlines()
                 if isinstance(code.make_optimizer, str)
                 else list(code.make_optimizer))
        body = "\n".join("    " + ln if ln else "" for ln in lines)
        notes = "".join(
            "".join(f"# {ln}\n" for ln in textwrap.wrap(n, 77))
            for n in code.notes)
        parts.append((notes + code.source.strip("\n")).strip("\n"))
        parts.append(f"def make_optimizer(model):\n{body}")
    outputs = [Output(t.name, len(t.keras_shape), tuple(t.layout.perm))
               for t in conv.program.outputs]
    major = int(str(conv.source_info.get("keras_version") or "3")
                .split(".")[0] or 3)
    info["loss"] = None
    try:
        regs = tsrc.regularized
        if regs:
            raise UnsupportedLoss(
                "layers with regularizers (" + ", ".join(regs[:5])
                + (", ..." if len(regs) > 5 else "") + "): Keras adds their "
                "regularization losses, which loss_fn does not")
        loss = loss_code(tsrc.compile, outputs, major)
        info["loss"] = loss.summary
        port.warnings += loss.notes
        parts.append(loss.source.strip("\n"))
        port.has_loss = True
    except UnsupportedLoss as exc:
        _refuse(port, "loss", str(exc))
    except (TypeError, ValueError, AttributeError) as exc:  # a malformed
        _refuse(port, "loss", f"malformed loss config ({exc})")  # config
    info["state_file"] = None
    if code is not None:
        try:
            state, why = optimizer_state(conv, tsrc, code)
        except (ConversionError, ValueError, TypeError) as exc:
            state, why = None, f"cannot be read ({exc})"
        if state is not None:
            port.state = state
            info["state_file"] = STATE_FILE
            info["step"] = int(_step(tsrc))
            parts.append(LOADER.strip("\n"))
        elif why:
            port.warnings.append(f"optimizer state not written: {why}")
            info["refused"].append({"what": "optimizer state",
                                    "reason": why})
    if parts:
        port.source = _render(conv, parts, port)
    return port


def _refuse(port: TrainingPort, what: str, why: str) -> None:
    port.warnings.append(f"training.py has no {what}: {why}")
    port.info["refused"].append({"what": what, "reason": why})


def _describe(cfg) -> str:
    if isinstance(cfg, dict):
        return str(cfg.get("class_name", "?")).split(">")[-1]
    return str(cfg)


def _step(tsrc) -> float:
    for name, arr in tsrc.variables:
        if name is None or name.split(":")[0].split("/")[-1] in (
                "iteration", "iter"):
            return float(np.asarray(arr.read()).reshape(()))
    return 0.0


def _parameters(conv) -> list[tuple[str, bool]]:
    """``(key, requires_grad)`` of the port's ``model.parameters()``, in
    order: ``make_optimizer`` gives the optimizer all of them (a frozen
    one never gets a gradient, so never a state)."""
    cls = conv.module_class()
    with torch.device("meta"):
        model = cls()
    return [(k, p.requires_grad) for k, p in model.named_parameters()]


def _slot_arrays(conv, tsrc, code) -> tuple[dict, dict, str]:
    """``({slot: {keras path: array}}, {global: array}, why not)``."""
    rows = {r["torch"]: r["keras_variables"] for r in conv.weight_map()}
    paths = {}  # Keras paths of the trainable variables
    for key, trains in _parameters(conv):
        for path in rows.get(key, ()) if trains else ():
            paths[path] = None
    slots: dict[str, dict] = {}
    globals_: dict = {}
    if not tsrc.positional:  # Keras 2: named by slot and variable
        for name, arr in tsrc.variables:
            found = slot_of(name, paths)
            if found is not None:
                slots.setdefault(found[0], {})[found[1]] = arr
            else:
                last = name.split(":")[0].split("/")[-1]
                if last in code.globals:
                    globals_[last] = arr
        return slots, globals_, ""
    cfg = (tsrc.compile.get("optimizer") or {}).get("config") or {}
    # the step count, then Keras 3's learning-rate variable (none under a
    # schedule; tf.keras keeps none in its optimizer's variables)
    scalars = 1 if (isinstance(cfg.get("learning_rate"), dict)
                    or code.keras != "keras3") else 2
    rest = [a for _, a in tsrc.variables][scalars:]
    names = [n for n, _ in tsrc.variables][scalars:]
    order = [a for a in tsrc.order if a.path in paths]
    groups = code.slot_groups
    need = sum(len(g) for g in groups) * len(order) + len(code.globals)
    if len(rest) != need:
        return {}, {}, (
            f"the file holds {len(rest)} optimizer variables after the step "
            f"count; {code.class_name or 'the optimizer'} over the "
            f"{len(order)} trainable variables needs {need}")
    i = 0
    for group in groups:
        for var in order:
            for slot in group:
                arr, name = rest[i], names[i]
                i += 1
                expected = f"{var.path.replace('/', '_')}_{slot}"
                if tuple(arr.shape) != tuple(var.shape) or (
                        name and not name.endswith(expected)):
                    return {}, {}, (
                        f"optimizer variable {i + scalars} "
                        f"({name or tuple(arr.shape)}) is not the {slot} "
                        f"of {var.path} {tuple(var.shape)}")
                slots.setdefault(slot, {})[var.path] = arr
    for g in code.globals:
        globals_[g] = rest[i]
        i += 1
    return slots, globals_, ""


def optimizer_state(conv, tsrc, code) -> tuple[dict | None, str]:
    """The tensors of ``optimizer.safetensors`` (see the module doc), or
    ``(None, why not)``; ``(None, "")`` when the file holds no state."""
    if not tsrc.variables:
        return None, ""
    if _step(tsrc) == 0 and len(tsrc.variables) <= 2:
        return None, ""  # compiled, never stepped: only Keras's scalars
    try:
        slots, globals_, why = _slot_arrays(conv, tsrc, code)
    except ConversionError as exc:
        return None, str(exc)
    if why:
        return None, why
    for slot in code.ignored_slots:
        slots.pop(slot, None)
    unknown = sorted(set(slots) - set(code.slots))
    if unknown:
        return None, f"Keras slots {unknown} have no torch state key"
    mapped = {slot: conv.map_gradients({p: a.read() for p, a in
                                        arrays.items()})
              for slot, arrays in slots.items()}
    step = _step(tsrc)
    if code.step_key and step >= 2 ** 24:
        return None, f"step count {step:g} is not exact in float32"
    shared = {key: torch.tensor(float(np.asarray(globals_[g].read())
                                      .reshape(())), dtype=torch.float32)
              for g, key in code.globals.items() if g in globals_}
    shared.update({key: torch.tensor(float(v), dtype=torch.float32)
                   for key, v in code.restart.items() if key not in shared})
    missing = sorted(set(code.globals.values()) - set(shared))
    if missing:
        return None, f"no Keras variable for the state {missing}"
    state = {}
    for i, (key, trains) in enumerate(_parameters(conv)):
        if not trains:
            continue
        for slot, torch_key in code.slots.items():
            value = mapped.get(slot, {}).get(key)
            if value is None:
                return None, f"no Keras {slot} slot for parameter {key}"
            state[f"state.{i}.{torch_key}"] = value.to(torch.float32)
        if code.step_key:
            state[f"state.{i}.{code.step_key}"] = torch.tensor(
                step, dtype=torch.float32)
        for torch_key, value in shared.items():
            state[f"state.{i}.{torch_key}"] = value.clone()
    return state, ""


def _render(conv, parts: list[str], port: TrainingPort) -> str:
    header = "".join(conv.source.splitlines(True)[:4])
    name = conv.program.model_name
    doc = [f'"""Train the port as Keras trained "{name}".', ""]
    if port.code is not None and port.has_loss:
        doc += ["    optimizer = make_optimizer(model)"]
        if port.state is not None:
            doc += ["    load_optimizer_state(optimizer, safetensors.torch."
                    "load_file(", '        "optimizer.safetensors"))']
        doc += ["    for x, y in batches:",
                "        optimizer.zero_grad()",
                "        loss_fn(model(x), y).backward()",
                "        optimizer.step()", ""]
    if port.state is not None:
        doc += textwrap.wrap(
            "optimizer.safetensors holds the optimizer state Keras saved "
            f"after step {int(port.info.get('step', 0))}, mapped onto the "
            "port's parameters: ``state.<i>.<key>`` is ``optimizer."
            "state_dict()[\"state\"][i][key]``, ``i`` counting the "
            "parameters make_optimizer passes (``model.parameters()``; a "
            "frozen one has none).", 79)
    refused = port.info.get("refused") or []
    if refused:
        doc += ["", "Not reproduced (see conversion.json):"]
        for r in refused:
            doc += textwrap.wrap(f"{r['what']}: {r['reason']}", 79,
                                 initial_indent="    ",
                                 subsequent_indent="        ")
    doc.append('"""')
    body = "\n\n\n".join(parts)
    imports = ["import math"] if "math." in body else []
    imports.append("import torch")
    if "F." in body:
        imports.append("import torch.nn.functional as F")
    return (header + "\n".join(doc) + "\n" + "\n".join(imports) + "\n\n\n"
            + body + "\n")
