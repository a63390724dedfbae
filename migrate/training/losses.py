"""The compiled Keras loss as plain torch: the ``loss_fn`` of
``training.py``.

Supported, each with Keras's reduction (``sum_over_batch_size``, the
default: the mean of the per-sample losses; ``sum``) and exactly Keras's
arithmetic (TensorFlow backend, Keras 3 and tf.keras):

* ``CategoricalCrossentropy`` / ``SparseCategoricalCrossentropy`` /
  ``BinaryCrossentropy`` with ``from_logits`` and ``label_smoothing``
  (categorical: along ``axis``).  From probabilities, Keras clips them to
  ``[1e-7, 1 - 1e-7]`` first (categorical: after dividing by their sum;
  tf.keras's binary cross-entropy also adds 1e-7 inside each log);
* ``MeanSquaredError``, ``MeanAbsoluteError``, ``Huber(delta)``;
* their Keras 2 string names (``"categorical_crossentropy"``, ``"mse"``);
* several outputs: one loss for all, a list, or a dict keyed by output
  name, with ``loss_weights`` (list or dict).

Anything else raises :class:`UnsupportedLoss` naming it; ``training.py`` is
then written without ``loss_fn`` (never an approximation).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

from ..errors import ConversionError
from ..emit.format import wrap
from ..emit.names import comment_text

EPSILON = 1e-7  # keras.backend.epsilon()


class UnsupportedLoss(ConversionError):
    """A compiled loss training.py cannot reproduce exactly."""


_ALIASES = {
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "binary_crossentropy": "BinaryCrossentropy",
    "mse": "MeanSquaredError", "mean_squared_error": "MeanSquaredError",
    "mae": "MeanAbsoluteError", "mean_absolute_error": "MeanAbsoluteError",
    "huber": "Huber", "huber_loss": "Huber",
}
_REDUCTIONS = {None: "mean", "auto": "mean", "sum_over_batch_size": "mean",
               "mean": "mean", "sum": "sum"}


@dataclass
class Output:
    """One output of the port, as the loss sees it."""

    name: str
    keras_ndim: int
    perm: tuple  # torch_tensor = keras_tensor.permute(perm)


@dataclass
class LossCode:
    source: str  # the text of loss_fn (and its constants) for training.py
    summary: list  # per output: {"output", "loss", "weight"}
    notes: list = field(default_factory=list)


def _canonical(loss) -> tuple[str, dict]:
    """``(class name, config)`` of a Keras loss entry (string or
    serialized object)."""
    if isinstance(loss, str):
        name = _ALIASES.get(loss)
        if name is None:
            raise UnsupportedLoss(f"loss {loss!r} is not supported")
        return name, {}
    if isinstance(loss, dict) and isinstance(loss.get("class_name"), str):
        name = loss["class_name"].split(">")[-1]
        name = _ALIASES.get(name, name)
        cfg = loss.get("config") if isinstance(loss.get("config"),
                                               dict) else {}
        if name not in _ALIASES.values() or loss.get("registered_name") \
                not in (None, name, loss["class_name"]):
            raise UnsupportedLoss(f"loss {comment_text(name)!r} is not "
                                  "supported (a custom or unknown loss)")
        return name, cfg
    raise UnsupportedLoss(f"loss {comment_text(repr(loss))[:60]} is not "
                          "supported")


def _per_output(compile_: dict, outputs: list[Output]) -> list:
    loss = compile_.get("loss")
    names = [o.name for o in outputs]
    if loss is None:
        raise UnsupportedLoss("the model was compiled without a loss")
    if isinstance(loss, dict) and "class_name" not in loss:
        missing = [n for n in names if n not in loss]
        if missing or set(loss) - set(names):
            raise UnsupportedLoss(f"loss keys {sorted(loss)} are not the "
                                  f"output names {names}")
        losses = [loss[n] for n in names]
    elif isinstance(loss, list):
        if len(loss) != len(outputs):
            raise UnsupportedLoss(f"{len(loss)} losses for {len(outputs)} "
                                  "outputs")
        losses = list(loss)
    else:
        losses = [loss] * len(outputs)
    weights = compile_.get("loss_weights")
    if weights is None:
        weights = [1.0] * len(outputs)
    elif isinstance(weights, dict):
        weights = [_finite(weights.get(n, 1.0), "loss weight")
                   for n in names]
    elif isinstance(weights, list) and len(weights) == len(outputs):
        weights = [_finite(w, "loss weight") for w in weights]
    elif isinstance(weights, (int, float)) and len(outputs) == 1:
        weights = [_finite(weights, "loss weight")]
    else:
        raise UnsupportedLoss(f"loss_weights {weights!r} do not fit "
                              f"{len(outputs)} outputs")
    return [(o, *_canonical(l), w)
            for o, l, w in zip(outputs, losses, weights)]


def _num(x: float) -> str:
    return repr(_finite(x, "a loss option"))


def _finite(x, what: str, low: float = -math.inf,
            high: float = math.inf) -> float:
    """``x`` as a float, refused unless finite and in ``[low, high]``
    (the value is written into training.py)."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise UnsupportedLoss(f"{what} {comment_text(repr(x))[:40]} is not "
                              "a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise UnsupportedLoss(f"{what} {value!r} is out of range")
    return value


def _axis(o: Output, axis, cls: str = "the loss") -> int:
    """The torch dim of Keras axis ``axis`` of output ``o``."""
    if isinstance(axis, bool) or not isinstance(axis, int) or not (
            -o.keras_ndim <= axis < o.keras_ndim) or o.keras_ndim < 2:
        shown = comment_text(repr(axis))[:20]
        raise UnsupportedLoss(f"{cls} along axis {shown} of output "
                              f"{comment_text(o.name)!r} ({o.keras_ndim} "
                              "axes)")
    a = axis % o.keras_ndim
    return list(o.perm).index(a)


def _term(o: Output, cls: str, cfg: dict, y: str, t: str,
          s: str, notes: list) -> tuple:
    """``(lines, expression, description)`` of one output's loss; ``s``
    suffixes the names of intermediate values (one per output)."""
    red = cfg.get("reduction", "sum_over_batch_size")
    if not isinstance(red, (str, type(None))) or red not in _REDUCTIONS:
        raise UnsupportedLoss(f"loss {cls} with reduction {red!r} is not "
                              "supported")
    mean = _REDUCTIONS[red] == "mean"
    logits = bool(cfg.get("from_logits", False))
    ls = _finite(cfg.get("label_smoothing", 0.0) or 0.0, "label_smoothing",
                 0.0, 1.0)
    reduce = "mean" if mean else "sum"
    arg = "" if mean else ", reduction='sum'"  # torch's default: mean
    desc = ["from_logits=True"] if logits else []
    lines: list[str] = []
    if ls and cls in ("CategoricalCrossentropy", "BinaryCrossentropy"):
        smooth = (f"{ls!r} / "
                  f"{y}.shape[{_axis(o, cfg.get('axis', -1), cls)}]"
                  if cls == "CategoricalCrossentropy" else _num(0.5 * ls))
        lines.append(f"smoothed{s} = {t} * {_num(1 - ls)} + {smooth}")
        t = f"smoothed{s}"
        desc.append(f"label_smoothing={ls:g}")
    if cls == "SparseCategoricalCrossentropy":
        if cfg.get("ignore_class") is not None:
            raise UnsupportedLoss("SparseCategoricalCrossentropy with "
                                  "ignore_class is not supported")
        dim = _axis(o, cfg.get("axis", -1), cls)
        logit = y if logits else f"torch.log({y}.clamp(EPSILON, 1 - EPSILON))"
        if dim != 1:
            logit = f"{logit}.movedim({dim}, 1)"
        expr = f"F.cross_entropy({logit}, {t}{arg})"
    elif cls == "CategoricalCrossentropy":
        dim = _axis(o, cfg.get("axis", -1), cls)
        if logits:
            lines.append(f"log_p{s} = F.log_softmax({y}, {dim})")
        else:
            lines.append(f"p{s} = {y} / {y}.sum({dim}, keepdim=True)")
            lines.append(f"log_p{s} = torch.log(p{s}.clamp(EPSILON, "
                         "1 - EPSILON))")
        expr = f"-({t} * log_p{s}).sum({dim}).{reduce}()"
    elif cls == "BinaryCrossentropy":
        if logits:
            expr = f"F.binary_cross_entropy_with_logits({y}, {t}{arg})"
        else:
            lines.append(f"p{s} = {y}.clamp(EPSILON, 1 - EPSILON)")
            eps = " + EPSILON" if cfg.get("_keras2") else ""
            lines.append(f"bce{s} = {t} * torch.log(p{s}{eps})")
            lines.append(f"bce{s} = bce{s} + (1 - {t}) * "
                         f"torch.log(1 - p{s}{eps})")
            expr = f"-bce{s}.{reduce}()"
    elif cls in ("MeanSquaredError", "MeanAbsoluteError", "Huber"):
        fn = {"MeanSquaredError": "F.mse_loss", "MeanAbsoluteError":
              "F.l1_loss", "Huber": "F.huber_loss"}[cls]
        extra = ""
        if cls == "Huber":
            if "delta" not in cfg and cfg:
                notes.append(f"{o.name}: the file does not record Huber's "
                             "delta (Keras 3's Huber.get_config omits it); "
                             "Keras reloads it as 1.0, and so does loss_fn")
            delta = _finite(cfg.get("delta", 1.0), "Huber delta", 1e-30)
            extra = f", delta={_num(delta)}"
            desc.append(f"delta={delta:g}")
        expr = f"{fn}({y}, {t}{arg}{extra})"
    else:  # pragma: no cover -- _canonical admits only the above
        raise UnsupportedLoss(f"loss {cls} is not supported")
    if not mean and cls not in ("SparseCategoricalCrossentropy",
                                "CategoricalCrossentropy"):
        # Keras sums the per-sample means over the last axis
        expr = f"{expr} / {y}.shape[{_axis(o, -1)}]"
    if not mean:
        desc.append("reduction='sum'")
    return lines, expr, f"{cls}({', '.join(desc)})"


def loss_code(compile_: dict, outputs: list[Output],
              keras_major: int = 3) -> LossCode:
    """``loss_fn`` for the compiled loss of a model with ``outputs`` (the
    port's, in order).  Raises :class:`UnsupportedLoss`."""
    terms = _per_output(compile_, outputs)
    single = len(outputs) == 1
    body, parts, summary, doc, notes = [], [], [], [], []
    for i, (o, cls, cfg, w) in enumerate(terms):
        if keras_major < 3 and cls == "BinaryCrossentropy":
            cfg = dict(cfg, _keras2=True)  # tf.keras: + 1e-7 in the logs
        y, t, s = (("output", "target", "") if single else
                   (f"outputs[{i}]", f"targets[{i}]", f"_{i}"))
        lines, expr, desc = _term(o, cls, cfg, y, t, s, notes)
        body += lines
        parts.append(expr)
        summary.append({"output": o.name, "loss": desc, "weight": w})
        doc.append(f"{comment_text(o.name)}: {desc}"
                   + ("" if w == 1.0 else f", weight {w:g}"))
    body = [ln for ln in body if ln]
    args = "output, target" if single else "outputs, targets"
    src = []
    uses_eps = any("EPSILON" in ln for ln in body + parts)
    if uses_eps:
        src.append(f"EPSILON = {EPSILON!r}  # keras.backend.epsilon()")
    if src:
        src += ["", ""]
    src.append(f"def loss_fn({args}):")
    src.append('    """Keras\'s compiled loss, for the port\'s '
               + ("output and the target" if single else "outputs and "
                  "targets"))
    src.append("    (in the port's layout" + ("" if single else ", tuples in "
               "the order of forward()") + "):")
    src.append("")
    for d in doc:
        src += ["        " + ln for ln in textwrap.wrap(
            d, 71, subsequent_indent="    ", break_on_hyphens=False)]
    src.append('    """')
    for ln in body:
        src += wrap(ln, 4)
    if single:
        src += wrap(f"return {parts[0]}", 4)
    else:  # one named term per output, then their weighted sum
        total = []
        for i, (part, (_, _, _, w)) in enumerate(zip(parts, terms)):
            src += wrap(f"loss_{i} = {part}", 4)
            total.append(f"loss_{i}" if w == 1.0 else f"{_num(w)} * loss_{i}")
        src += wrap("return " + " + ".join(total), 4)
    return LossCode("\n".join(src) + "\n", summary, notes)
