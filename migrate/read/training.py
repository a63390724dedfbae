"""What a model file says about training: its compile config and the
optimizer's saved variables (issue 15, part 3).

* Keras 3 ``.keras``: ``config.json`` ``compile_config`` (``optimizer``,
  ``loss``, ``loss_weights``, ``metrics``); ``model.weights.h5``
  ``optimizer/vars/0..N``, stored by position: ``iteration``, then
  ``learning_rate`` (absent under a schedule), then the slots: for each
  of the optimizer's ``slot_groups`` (:mod:`migrate.training.optimizers`)
  one block over ``model.trainable_variables``, the group's names
  interleaved (``kernel_momentum, kernel_velocity, bias_momentum, ...``),
  then optimizer-wide variables.  The model variables' order is the
  weights file's own (layers in config order, each layer's variables in
  creation order), kept as :attr:`TrainingSource.order`.  A Keras 3
  ``.h5`` names them (``adam/hidden_kernel_momentum``) in the same order.
* Keras 2 ``.h5``: the ``training_config`` attribute (``optimizer_config``,
  ``loss``, ``loss_weights``, ``metrics``) and the ``optimizer_weights``
  group, whose ``weight_names`` name each variable: ``iteration:0``,
  ``Adam/m/dense/kernel:0`` (the optimizers of TF >= 2.11) or
  ``Adam/dense/kernel/m:0`` (legacy optimizers).

Nothing is read from the arrays here (they are :class:`LazyArray`), and
nothing is unpickled or evaluated: the configs are JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConversionError
from .config import load_json
from .hdf5 import datasets_under, dataset, group, names_attr, text_attr


@dataclass
class TrainingSource:
    """The training half of a model file."""

    format: str  # "keras" (.keras archive) or "h5" (legacy full model)
    compile: dict  # optimizer, loss, loss_weights, metrics
    # the optimizer's saved variables, in file order: (name or None, array)
    variables: list = field(default_factory=list)
    # every model variable in the file's order (Keras 3 lists the
    # optimizer's slots by this order)
    order: list = field(default_factory=list)
    # whether the optimizer variables are Keras 3's, listed by position
    # (.keras; a Keras 3 .h5 names them, in the same order), else named
    # by slot and variable (Keras 2)
    positional: bool = True
    # layers with a regularizer: Keras adds their losses to the loss
    regularized: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def optimizer_class(self) -> str:
        opt = self.compile.get("optimizer")
        return str(opt.get("class_name", "")).split(">")[-1] if isinstance(
            opt, dict) else str(opt or "")


def from_archive(config: dict, weights_root, spec) -> TrainingSource | None:
    """The compile config of a ``.keras`` archive and its optimizer
    variables; ``None`` when the model was saved uncompiled."""
    cc = config.get("compile_config")
    if not isinstance(cc, dict) or not (cc.get("optimizer")
                                        or cc.get("loss")):
        return None
    compile_ = {"optimizer": cc.get("optimizer"), "loss": cc.get("loss"),
                "loss_weights": cc.get("loss_weights"),
                "metrics": cc.get("metrics")}
    src = TrainingSource("keras", compile_)
    if group(weights_root, "optimizer", required=False) is not None:
        found = [(k, a) for k, a in datasets_under(weights_root, "optimizer")]
        if any(not k.startswith("vars/") for k, _ in found):
            src.warnings.append(
                "the optimizer state holds nested optimizers (" + ", ".join(
                    sorted({k.split("/")[0] for k, _ in found
                            if not k.startswith("vars/")})) + "); it is not "
                "read")
        else:
            found.sort(key=lambda ka: int(ka[0].split("/")[1])
                       if ka[0].split("/")[1].isdigit() else -1)
            src.variables = [(None, a) for _, a in found]
    src.order = list(_walk_order(spec))
    src.regularized = _regularized(spec)
    return src


def _walk_order(spec):
    for m in spec.members:
        if m.model is not None:
            yield from _walk_order(m.model)
        elif m.layer is not None:
            for e in m.layer.weights.entries:
                yield e.array


def _regularized(spec) -> list[str]:
    out = []
    for m in spec.members:
        if m.model is not None:
            out += _regularized(m.model)
        elif m.layer is not None:
            cfg = m.layer.config or {}
            if any(k.endswith("_regularizer") and cfg[k] for k in cfg):
                out.append(m.layer.name)
    return out


def from_h5(f, label: str, spec, keras_major: int) -> TrainingSource | None:
    """The ``training_config`` of a legacy full-model ``.h5`` and its
    ``optimizer_weights``; ``None`` when saved uncompiled."""
    text = text_attr(f, "training_config")
    if not text:
        return None
    cfg = load_json(text, label)
    if not isinstance(cfg, dict):
        raise ConversionError(f"{label}: training_config is not a JSON "
                              "object")
    compile_ = {"optimizer": cfg.get("optimizer_config"),
                "loss": cfg.get("loss"),
                "loss_weights": cfg.get("loss_weights"),
                "metrics": cfg.get("metrics")}
    src = TrainingSource("h5", compile_, regularized=_regularized(spec),
                         order=list(_walk_order(spec)),
                         positional=keras_major >= 3)
    grp = group(f, "optimizer_weights", required=False)
    if grp is not None:
        src.variables = [(name, dataset(grp, name))
                         for name in names_attr(grp, "weight_names")]
    return src


def slot_of(name: str, model_paths) -> tuple[str, str] | None:
    """``(slot, model variable path)`` of a Keras 2 optimizer variable name
    (``Adam/m/dense/kernel:0`` or legacy ``Adam/dense/kernel/m:0``);
    ``None`` for the iteration count and unknown names."""
    parts = name.split(":")[0].split("/")
    if len(parts) < 3:
        return None
    new_var, legacy_var = "/".join(parts[2:]), "/".join(parts[1:-1])
    if new_var in model_paths:
        return parts[1], new_var
    if legacy_var in model_paths:
        return parts[-1], legacy_var
    return None
