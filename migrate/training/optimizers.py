"""A compiled Keras optimizer as torch code for ``training.py``.

:func:`optimizer_code` reads the optimizer config stored in a model file --
Keras 3's ``compile_config["optimizer"]`` or Keras 2's
``training_config["optimizer_config"]`` -- and returns the torch source
that reproduces Keras's update rule exactly, the body of
``make_optimizer(model)``, and how Keras's optimizer variables map to
torch's per-parameter state.

Three kinds of config are told apart by their keys, because their update
rules differ:

* ``keras3``: Keras 3 (``keras.optimizers``), in ``.keras`` or ``.h5``;
* ``tf_keras``: tf.keras 2.11+ optimizers (``Custom>Adam``,
  ``is_legacy_optimizer: False``), whose update rules are Keras 3's;
* ``legacy``: tf.keras <= 2.10 optimizers (``optimizer_v2``; ``decay``,
  no ``is_legacy_optimizer``), which tf.keras 2.11+ still loads as its
  ``legacy`` classes: a time decay ``lr / (1 + decay * step)``, clipping
  by value *then* by norm, and torch's epsilon placement in RMSprop
  without momentum and in Adagrad.

Where a torch built-in optimizer computes exactly Keras's update (measured
in tests/test_training_optimizers.py) it is used; otherwise the source
holds a short ``torch.optim.Optimizer`` subclass named like Keras's, all of
them sharing one base class (:data:`BASE`) that does what Keras does
around every update: clip, take the learning rate at the step count,
decay the weights, count the step.  Nothing from the config is evaluated:
every number is validated and written with ``repr``.
"""
from __future__ import annotations

import math
import struct
import textwrap
from dataclasses import dataclass, field

from ..rules.base import Refused


@dataclass
class OptimizerCode:
    source: str          # torch-only source: schedule, base class, class
    make_optimizer: str  # body lines of ``def make_optimizer(model):``
    slots: dict          # Keras slot name -> per-parameter torch state key
    step_key: str | None  # state key of the step count (None: none kept)
    notes: list          # comment lines for training.py (<= 72 columns)
    # Keras 3's weights file lists optimizer variables by index: after
    # ``iteration`` (and ``learning_rate`` unless it is a schedule), one
    # block per group, in each block for every trainable variable one
    # variable per slot name, e.g. Adam ``[["momentum", "velocity"],
    # ["velocity_hat"]]``; then the ``globals``.
    slot_groups: list = field(default_factory=list)
    # Keras optimizer-wide variable name -> per-parameter state key it is
    # copied to (Nadam's u_product: Keras 3 ``variable``, legacy
    # ``momentum_cache``).
    globals: dict = field(default_factory=dict)
    # State key -> value to use when the file keeps no variable for it but
    # Keras restarts it on load (tf.keras 2.11+ Nadam's u_product: 1.0).
    restart: dict = field(default_factory=dict)
    # Keras slots the update never reads (tf.keras SGD keeps ``m`` even
    # without momentum); nothing in torch corresponds.
    ignored_slots: list = field(default_factory=list)
    keras: str = ""      # "keras3", "tf_keras" or "legacy"
    class_name: str = ""  # the Keras optimizer class (AdamW, ...)


def optimizer_code(config: dict, lookups: bool = False) -> OptimizerCode:
    """torch code for the Keras optimizer serialized as ``config``;
    ``lookups``: the model looks rows up in nn.Embedding tables, whose
    gradients Keras (on TensorFlow) holds per looked-up row
    (:data:`LOOKUPS`).

    Raises :class:`~migrate.rules.base.Refused` naming the optimizer and
    option for anything not reproduced exactly."""
    if not isinstance(config, dict) or not isinstance(
            config.get("config", {}), dict):
        raise Refused("optimizer: the compile config's optimizer is not a "
                      "serialized Keras optimizer; write make_optimizer by "
                      "hand")
    name = config.get("class_name")
    if not isinstance(name, str):
        raise Refused(f"optimizer: class_name {name!r} is not a name; "
                      f"write make_optimizer by hand")
    cfg = dict(config.get("config") or {})
    kind = _kind(config, cfg)
    if name.startswith("Custom>") and kind == "tf_keras":
        name = name[len("Custom>"):]
    module = config.get("module")
    if module not in (None, "keras.optimizers") or config.get(
            "registered_name") not in (None, name):
        raise Refused(f"optimizer {name!r} (module {module!r}): a custom "
                      f"optimizer class; write make_optimizer by hand in "
                      f"training.py")
    if name.startswith("LossScaleOptimizer"):
        raise Refused(f"optimizer {name!r}: dynamic loss scaling for mixed "
                      f"precision is not reproduced; in torch, wrap the "
                      f"inner optimizer's step in torch.amp.GradScaler, or "
                      f"compile the model with the inner optimizer")
    spec = _CLASSES.get(kind, {}).get(name) or _CLASSES.get(
        kind, {}).get(name.lower())
    if spec is None:
        supported = ", ".join(sorted(_CLASSES[kind]))
        raise Refused(f"optimizer {name!r}: not supported for {_KIND[kind]} "
                      f"(supported: {supported}); write make_optimizer by "
                      f"hand in training.py")
    reader = _Reader(spec.__name__[1:], kind, cfg)
    reader.lookups = lookups
    return spec(reader)


_KIND = {"keras3": "Keras 3", "tf_keras": "tf.keras 2.11+",
         "legacy": "tf.keras <= 2.10 (legacy) optimizers"}


def _kind(config, cfg):
    if "is_legacy_optimizer" in cfg or config.get(
            "class_name", "").startswith("Custom>"):
        return "legacy" if cfg.get("is_legacy_optimizer") is True \
            else "tf_keras"
    if "module" in config or "use_ema" in cfg or \
            "loss_scale_factor" in cfg:
        return "keras3"
    return "legacy"


# -- reading the config --------------------------------------------------

class _Reader:
    """The config of optimizer ``name``: typed, validated reads; keys no
    read asked for are refused by :meth:`done` (an option we do not know
    could change the update)."""

    IGNORED = {"name", "jit_compile", "is_legacy_optimizer"}

    def __init__(self, name, kind, cfg):
        self.name, self.kind, self.cfg = name, kind, cfg
        self.seen = set(self.IGNORED)
        self.notes = []
        self.lookups = False

    def refuse(self, option, why):
        raise Refused(f"optimizer {self.name} ({_KIND[self.kind]}): "
                      f"{option}: {why}")

    def raw(self, key, default=None):
        self.seen.add(key)
        return self.cfg.get(key, default)

    def number(self, key, default, lo=None, hi=None, none=False):
        value = self.raw(key, default)
        if value is None and none:
            return None
        return _number(value, f"{key}={value!r}", lo, hi, self.refuse)

    def rate(self, key, default, cast=False):
        """A decay rate in [0, 1] (beta, rho), as the float32 number Keras
        computes with when it does (``cast``; tf.keras's legacy optimizers
        always): 1 - 0.999 is not 1 - float32(0.999), which Keras uses."""
        value = self.number(key, default, 0.0, 1.0)
        if cast or self.kind == "legacy":
            return _F32(struct.unpack("f", struct.pack("f", value))[0])
        return value

    def flag(self, key, default=False):
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.refuse(f"{key}={value!r}", "not a boolean")
        return value

    def done(self):
        extra = sorted(set(self.cfg) - self.seen)
        if extra:
            self.refuse(", ".join(map(repr, extra)),
                        "unknown option(s); keras2torch cannot tell how "
                        "they change the update, so make_optimizer is "
                        "left to you")


def _number(value, what, lo, hi, refuse):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        refuse(what, "not a number")
    value = float(value)
    if not math.isfinite(value) or (lo is not None and value < lo) or (
            hi is not None and value > hi):
        refuse(what, f"out of range [{lo}, {hi}]")
    return value


def _num(x: float) -> str:
    """``x`` as Python source: the shortest decimal with the same float32
    value when ``x`` is a float32 number (Keras stores hyper-parameters in
    float32: 0.0010000000474974513 is written 0.001), else ``repr``."""
    if x == int(x) and abs(x) < 2 ** 53:
        return repr(float(x)) if abs(x) < 1e16 else repr(x)
    try:
        as32 = struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        as32 = None
    if as32 == x:
        for digits in range(1, 10):
            text = f"{x:.{digits}g}"
            if struct.unpack("f", struct.pack("f", float(text)))[0] == x:
                return repr(float(text))
    return repr(x)


# -- the common options: learning rate, weight decay, clipping -----------

def _common(r: _Reader):
    """(schedule source or None, lr expression, keyword args, notes) for
    the options every Keras optimizer shares."""
    kw = {}
    if r.kind == "keras3" or r.kind == "tf_keras":
        if r.flag("use_ema"):
            r.refuse("use_ema=True", "Keras keeps a moving average of the "
                     "weights and writes it over them; torch.optim has no "
                     "such step (torch.optim.swa_utils.AveragedModel is "
                     "close, not the same); compile without it or average "
                     "by hand")
        r.raw("ema_momentum")
        r.raw("ema_overwrite_frequency")
    if r.kind == "keras3":
        for key, why in (("loss_scale_factor", "the loss is scaled and "
                          "the gradients unscaled by it"),
                         ("gradient_accumulation_steps", "Keras averages "
                          "gradients over several steps before updating")):
            if r.raw(key) is not None:
                r.refuse(f"{key}={r.cfg[key]!r}", f"{why}; not reproduced "
                         f"by make_optimizer: accumulate or scale in your "
                         f"training loop and compile without it")
    if r.kind != "legacy":
        wd = r.number("weight_decay", None, 0.0, None, none=True)
        if wd:
            kw["weight_decay"] = wd
            r.notes.append("The model file does not record Keras's "
                           "exclude_from_weight_decay(): if you excluded "
                           "variables, give them a param group with "
                           "weight_decay=0.")
    clip = {k: r.number(k, None, None, None, none=True)
            for k in ("clipvalue", "clipnorm", "global_clipnorm")}
    if r.kind == "legacy":
        for k, v in clip.items():
            if v is not None and v <= 0:
                r.refuse(f"{k}={v!r}", "tf.keras clips to a non-positive "
                         "bound (every gradient becomes 0 or NaN)")
        if clip["clipnorm"] is not None and \
                clip["global_clipnorm"] is not None:
            r.refuse("clipnorm and global_clipnorm", "tf.keras refuses "
                     "both")
        kw.update((k, v) for k, v in clip.items() if v is not None)
    else:  # Keras applies the first that is set and > 0
        for k in ("clipnorm", "global_clipnorm", "clipvalue"):
            if clip[k] is not None and clip[k] > 0:
                kw[k] = clip[k]
                ignored = [o for o in clip if o != k and clip[o]]
                if ignored:
                    r.notes.append(f"Keras applies only {k}; "
                                   f"{' and '.join(ignored)} ignored as "
                                   f"Keras ignores them.")
                break
    lr = r.raw("learning_rate", r.raw("lr") if r.kind == "legacy" else None)
    if lr is None:
        lr = _DEFAULT_LR.get(r.name, 0.001)
    decay = r.number("decay", 0.0, 0.0) if r.kind == "legacy" else 0.0
    if not isinstance(lr, dict):
        value = _number(lr, f"learning_rate={lr!r}", 0.0, None, r.refuse)
        if not decay:
            return None, _num(value), kw
        schedule = [f"lr = {_num(value)} / (1 + {_num(decay)} * step)"]
        doc = f"tf.keras's learning_rate={_num(value)}"
    else:
        schedule, doc = _schedule(r, lr)
        if decay:
            schedule.append(f"lr = lr / (1 + {_num(decay)} * step)")
    if decay:
        doc += f" with decay={_num(decay)}: lr / (1 + decay * step)"
    return _schedule_source(doc, schedule), "learning_rate", kw


_DEFAULT_LR = {"SGD": 0.01, "Lion": 0.001}


def _schedule_source(doc, lines):
    text = textwrap.wrap(f"{doc}, taken at Keras's step count (0 at the "
                         f"first update).", 72)
    text[0] = '"""' + text[0]
    text[-1] += '"""'
    body = [f"    {line}" for line in text + lines + ["return lr"]]
    return "def learning_rate(step):\n" + "\n".join(body) + "\n"


def _schedule(r: _Reader, config):
    name = config.get("class_name")
    inner = config.get("config")
    module = config.get("module")
    if module not in (None, "keras.optimizers.schedules") or \
            config.get("registered_name") not in (None, name) or \
            not isinstance(inner, dict) or name not in _SCHEDULES:
        r.refuse(f"learning_rate={_short(config)}", "a learning-rate "
                 f"schedule keras2torch does not know (known: "
                 f"{', '.join(sorted(_SCHEDULES))}); write "
                 f"learning_rate(step) by hand in training.py")
    s = _Reader(name, r.kind, inner)
    s.refuse = lambda option, why: r.refuse(
        f"learning_rate {name}: {option}", why)
    lines, doc = _SCHEDULES[name](s)
    s.done()
    return lines, doc


def _short(value):
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def _exponential(s):
    lr, rate, p, stair = _decay(s)
    return ([f"lr = {_num(lr)} * {_num(rate)} ** ({p})"],
            f"Keras's ExponentialDecay: lr * rate ** (step / steps"
            f"{', floored' if stair else ''})")


def _decay(s):
    """ExponentialDecay's and InverseTimeDecay's shared arguments: the
    initial rate, the decay rate, the step fraction's code, staircase."""
    lr = s.number("initial_learning_rate", None, 0.0)
    steps = s.number("decay_steps", None, 0.0)
    rate = s.number("decay_rate", None, 0.0)
    if steps <= 0:
        s.refuse(f"decay_steps={steps!r}", "not positive")
    stair = s.flag("staircase")
    return lr, rate, _steps_fraction(steps, stair), stair


def _steps_fraction(steps, staircase):
    if not staircase:
        return f"step / {_num(steps)}"
    if steps == int(steps):
        return f"step // {int(steps)}"
    return f"math.floor(step / {_num(steps)})"


def _inverse_time(s):
    lr, rate, p, stair = _decay(s)
    return ([f"lr = {_num(lr)} / (1 + {_num(rate)} * ({p}))"],
            f"Keras's InverseTimeDecay: lr / (1 + rate * step / steps"
            f"{', floored' if stair else ''})")


def _piecewise(s):
    bounds = s.raw("boundaries")
    values = s.raw("values")
    if not isinstance(bounds, list) or not isinstance(values, list) or \
            len(values) != len(bounds) + 1 or len(values) > 1000:
        s.refuse("boundaries/values", "not lists of n and n + 1 numbers")
    # Keras casts the boundaries to the integer step's dtype (truncates).
    bounds = [int(_number(b, f"boundary {b!r}", 0.0, 2.0 ** 62, s.refuse))
              for b in bounds]
    values = [_number(v, f"value {v!r}", 0.0, None, s.refuse)
              for v in values]
    if bounds != sorted(bounds):
        s.refuse(f"boundaries={bounds!r}", "not in increasing order "
                 "(Keras would add up several values)")
    lines = []
    for b, v in zip(bounds, values):
        lines += [f"if step <= {b}:", f"    return {_num(v)}"]
    lines.append(f"lr = {_num(values[-1])}")
    return lines, ("Keras's PiecewiseConstantDecay: values[i] up to and "
                   "including boundaries[i]")


def _cosine(s):
    lr = s.number("initial_learning_rate", None, 0.0)
    steps = s.number("decay_steps", None, 0.0)
    if steps <= 0:
        s.refuse(f"decay_steps={steps!r}", "not positive")
    alpha = s.number("alpha", 0.0)
    target = s.number("warmup_target", None, 0.0, none=True)
    warmup = s.number("warmup_steps", 0.0, 0.0)
    lines = []
    start = lr
    if target is None:
        lines.append(f"step = min(step, {_num(steps)})")
    else:
        lines.append(f"step = min(step, {_num(steps + warmup)})")
        if warmup:
            lines += [f"if step < {_num(warmup)}:",
                      f"    return ({_num(target)} - {_num(lr)}) * "
                      f"(step / {_num(warmup)}) + {_num(lr)}",
                      f"step = step - {_num(warmup)}"]
        start = target
    lines.append(f"cosine = 0.5 * (1 + math.cos(math.pi * step / "
                 f"{_num(steps)}))")
    if alpha:
        lines.append(f"lr = {_num(start)} * ((1 - {_num(alpha)}) * cosine "
                     f"+ {_num(alpha)})")
    else:
        lines.append(f"lr = {_num(start)} * cosine")
    doc = "Keras's CosineDecay" + (
        ", after a linear warmup" if target is not None else "")
    return lines, doc


def _polynomial(s):
    lr = s.number("initial_learning_rate", None, 0.0)
    steps = s.number("decay_steps", None, 0.0)
    if steps <= 0:
        s.refuse(f"decay_steps={steps!r}", "not positive")
    end = s.number("end_learning_rate", 0.0001, 0.0)
    power = s.number("power", 1.0)
    if s.flag("cycle"):
        lines = [f"steps = {_num(steps)} * max(1, math.ceil(step / "
                 f"{_num(steps)}))",
                 "p = step / steps"]
    else:
        lines = [f"p = min(step, {_num(steps)}) / {_num(steps)}"]
    lines.append(f"lr = ({_num(lr)} - {_num(end)}) * (1 - p) ** "
                 f"{_num(power)} + {_num(end)}")
    return lines, "Keras's PolynomialDecay"


def _cosine_restarts(s):
    lr = s.number("initial_learning_rate", None, 0.0)
    first = s.number("first_decay_steps", None, 0.0)
    if first <= 0:
        s.refuse(f"first_decay_steps={first!r}", "not positive")
    t_mul = s.number("t_mul", 2.0, 0.0)
    m_mul = s.number("m_mul", 1.0, 0.0)
    alpha = s.number("alpha", 0.0)
    if t_mul <= 0:
        s.refuse(f"t_mul={t_mul!r}", "not positive")
    lines = [f"fraction = step / {_num(first)}"]
    if t_mul == 1:
        lines += ["restart = math.floor(fraction)",
                  "fraction = fraction - restart"]
    else:
        t = _num(t_mul)
        lines += [f"restart = math.floor(math.log(1 - fraction * (1 - {t}))"
                  f" / math.log({t}))",
                  f"done = (1 - {t} ** restart) / (1 - {t})",
                  f"fraction = (fraction - done) / {t} ** restart"]
    lines += [f"cosine = 0.5 * {_num(m_mul)} ** restart * (1 + math.cos("
              f"math.pi * fraction))",
              f"lr = {_num(lr)} * ((1 - {_num(alpha)}) * cosine + "
              f"{_num(alpha)})"]
    return lines, ("Keras's CosineDecayRestarts: periods first_decay_steps "
                   "* t_mul ** i, each starting at m_mul ** i")


_SCHEDULES = {"ExponentialDecay": _exponential,
              "CosineDecayRestarts": _cosine_restarts,
              "InverseTimeDecay": _inverse_time,
              "PiecewiseConstantDecay": _piecewise,
              "CosineDecay": _cosine,
              "PolynomialDecay": _polynomial}


# -- the torch source ----------------------------------------------------

BASE = '''\
def each(f, grad):
    """f of every element of the gradient.  An embedding's sparse gradient
    (nn.Embedding(sparse=True)) holds one row per looked-up id, unsummed,
    as TensorFlow's tf.IndexedSlices holds Keras's: f is taken of each
    row, and the rows of one id are then summed, as Keras does."""
    if grad.is_sparse:
        ids, rows = grad._indices()[0], grad._values()
        return rows.new_zeros(grad.shape).index_add_(0, ids, f(rows))
    return f(grad)


def dense(grad):
    """The gradient as a tensor (a sparse one's rows summed per id)."""
    return grad.to_dense() if grad.is_sparse else grad


def clip_gradients(grads, clipvalue=None, clipnorm=None,
                   global_clipnorm=None):
    """Keras's clipping: each value to [-clipvalue, clipvalue], then each
    gradient to norm clipnorm, then all together to norm global_clipnorm,
    scaling by clip / max(norm, clip) (torch's clip_grad_norm_ divides by
    norm + 1e-6).  A sparse gradient is clipped as Keras clips a
    tf.IndexedSlices: row by row, its norm counting every looked-up row."""
    def rows(g):
        return g._values() if g.is_sparse else g

    def with_rows(g, values):
        if g.is_sparse:  # the same looked-up ids: no checks needed
            return torch.sparse_coo_tensor(g._indices(), values, g.shape,
                                           check_invariants=False)
        return values

    if clipvalue is not None:
        grads = [with_rows(g, rows(g).clamp(-clipvalue, clipvalue))
                 for g in grads]
    if clipnorm is not None:
        grads = [with_rows(g, rows(g) * clipnorm
                           / rows(g).norm().clamp(min=clipnorm))
                 for g in grads]
    if global_clipnorm is not None and grads:
        norm = torch.sqrt(sum((rows(g) * rows(g)).sum() for g in grads))
        scale = global_clipnorm / norm.clamp(min=global_clipnorm)
        grads = [with_rows(g, rows(g) * scale) for g in grads]
    return grads


class KerasOptimizer(torch.optim.Optimizer):
    """What every Keras optimizer does around its own update, in Keras's
    order: clip the gradients, take the learning rate (a number, or a
    function of the step count), decay the weights, p -= p * wd * lr
    (decoupled, as in torch.optim.AdamW), update, count the step.

    An embedding's sparse gradient (see make_optimizer) is updated as
    Keras updates a tf.IndexedSlices, by ``lookups``: "each" (Keras 3:
    squares and |g| are taken of each looked-up row, then summed), "sum"
    (tf.keras: rows summed per id first), "rows" (tf.keras's legacy
    optimizers: summed per id, and only the looked-up rows of the weights
    and slots change), "weight_rows" (legacy Nadam: only the looked-up
    rows of the weights)."""

    def __init__(self, params, lr, weight_decay=0.0, clipvalue=None,
                 clipnorm=None, global_clipnorm=None, lookups="sum",
                 **hyper):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay,
                                      **hyper))
        self.clipping = dict(clipvalue=clipvalue, clipnorm=clipnorm,
                             global_clipnorm=global_clipnorm)
        self.lookups = lookups

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo = [(p, group) for group in self.param_groups
                for p in group["params"] if p.grad is not None]
        grads = clip_gradients([p.grad for p, _ in todo], **self.clipping)
        for (p, group), grad in zip(todo, grads):
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                self.init_state(state, p, group)
            lr = group["lr"]
            if callable(lr):
                lr = lr(int(state["step"]))
            if group["weight_decay"]:
                p.sub_(p * group["weight_decay"] * lr)
            state["step"] += 1
            if grad.is_sparse and self.lookups in ("rows", "weight_rows"):
                self.update_rows(p, grad.coalesce(), state, group, lr,
                                 int(state["step"]))
                continue
            if grad.is_sparse and self.lookups == "sum":
                grad = dense(grad)
            self.update(p, grad, state, group, lr, int(state["step"]))
        return loss

    def update_rows(self, p, grad, state, group, lr, t):
        """The update of the looked-up rows only: of the weights and slots
        ("rows"), or of the weights ("weight_rows")."""
        rows = grad.indices()[0]
        if self.lookups == "weight_rows":
            before = p.clone()
            self.update(p, dense(grad), state, group, lr, t)
            before[rows] = p[rows]
            p.copy_(before)
            return
        slots = {k: v for k, v in state.items() if v.shape == p.shape}
        sliced = {**state, **{k: v[rows] for k, v in slots.items()}}
        p_rows = p[rows]
        self.update(p_rows, grad.values(), sliced, group, lr, t)
        p[rows] = p_rows
        for k in slots:
            state[k][rows] = sliced[k]
'''

ADAM = '''\
class Adam(KerasOptimizer):
    """Keras's Adam (AdamW: with weight_decay).  Unlike torch.optim.Adam,
    eps is added to sqrt(v) before the bias correction:
    p -= lr * sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m / (sqrt(v) + eps).
    """

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-7,
                 amsgrad=False, **kwargs):
        super().__init__(params, lr, betas=betas, eps=eps, amsgrad=amsgrad,
                         **kwargs)

    def init_state(self, state, p, group):
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p)

    def update(self, p, grad, state, group, lr, t):
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.add_((dense(grad) - m) * (1 - beta1))
        v.add_((each(torch.square, grad) - v) * (1 - beta2))
        if group["amsgrad"]:
            v = state["max_exp_avg_sq"]
            v.copy_(torch.maximum(v, state["exp_avg_sq"]))
        alpha = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p.sub_(m * alpha / (v.sqrt() + group["eps"]))
'''

SGD = '''\
class SGD(KerasOptimizer):
    """Keras's SGD.  Its momentum buffer holds the step itself,
    m = momentum * m - lr * g, then p += m (nesterov: p += momentum * m -
    lr * g); torch.optim.SGD's holds momentum * b + g and is multiplied by
    the lr of the current step."""

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False,
                 **kwargs):
        super().__init__(params, lr, momentum=momentum, nesterov=nesterov,
                         **kwargs)

    def init_state(self, state, p, group):
        if group["momentum"]:
            state["momentum"] = torch.zeros_like(p)

    def update(self, p, grad, state, group, lr, t):
        grad = dense(grad)
        momentum = group["momentum"]
        if not momentum:
            p.sub_(grad * lr)
            return
        m = state["momentum"]
        m.copy_(m * momentum - grad * lr)
        if group["nesterov"]:
            p.add_(m * momentum - grad * lr)
        else:
            p.add_(m)
'''

RMSPROP = '''\
class RMSprop(KerasOptimizer):
    """Keras's RMSprop.  Unlike torch.optim.RMSprop, eps is inside the
    square root, sqrt(v + eps), and the lr is inside the momentum buffer:
    b = momentum * b + lr * g / sqrt(v + eps); p -= b."""

    def __init__(self, params, lr=0.001, rho=0.9, momentum=0.0, eps=1e-7,
                 centered=False, **kwargs):
        super().__init__(params, lr, rho=rho, momentum=momentum, eps=eps,
                         centered=centered, **kwargs)

    def init_state(self, state, p, group):
        state["square_avg"] = torch.zeros_like(p)
        if group["momentum"] > 0:
            state["momentum"] = torch.zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p)

    def update(self, p, grad, state, group, lr, t):
        rho, eps = group["rho"], group["eps"]
        v = state["square_avg"]
        v.copy_(rho * v + (1 - rho) * each(torch.square, grad))
        grad = dense(grad)
        if group["centered"]:
            g_avg = state["grad_avg"]
            g_avg.copy_(rho * g_avg + (1 - rho) * grad)
            denom = v - g_avg * g_avg + eps
        else:
            denom = v + eps
        increment = lr * grad / denom.sqrt()
        if group["momentum"] > 0:
            b = state["momentum"]
            b.copy_(group["momentum"] * b + increment)
            p.sub_(b)
        else:
            p.sub_(increment)
'''

ADAGRAD = '''\
class Adagrad(KerasOptimizer):
    """Keras's Adagrad.  Unlike torch.optim.Adagrad, eps is inside the
    square root: p -= lr * g / sqrt(sum + eps)."""

    def __init__(self, params, lr=0.001, initial_accumulator_value=0.1,
                 eps=1e-7, **kwargs):
        super().__init__(params, lr, eps=eps, initial_accumulator_value=(
            initial_accumulator_value), **kwargs)

    def init_state(self, state, p, group):
        state["sum"] = torch.full_like(p, group["initial_accumulator_value"])

    def update(self, p, grad, state, group, lr, t):
        s = state["sum"]
        s.add_(each(torch.square, grad))
        p.sub_(lr * dense(grad) / (s + group["eps"]).sqrt())
'''

LEGACY_RMSPROP = '''\
class RMSprop(KerasOptimizer):
    """tf.keras <= 2.10's RMSprop without momentum: torch.optim.RMSprop's
    update, p -= lr * g / (sqrt(v) + eps), plus Keras's clipping and
    learning-rate decay."""

    def __init__(self, params, lr=0.001, rho=0.9, eps=1e-7, centered=False,
                 **kwargs):
        super().__init__(params, lr, rho=rho, eps=eps, centered=centered,
                         **kwargs)

    def init_state(self, state, p, group):
        state["square_avg"] = torch.zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p)

    def update(self, p, grad, state, group, lr, t):
        rho = group["rho"]
        v = state["square_avg"]
        v.copy_(rho * v + (1 - rho) * (grad * grad))
        if group["centered"]:
            g_avg = state["grad_avg"]
            g_avg.copy_(rho * g_avg + (1 - rho) * grad)
            v = v - g_avg * g_avg
        p.sub_(lr * grad / (v.sqrt() + group["eps"]))
'''

LEGACY_ADAGRAD = '''\
class Adagrad(KerasOptimizer):
    """tf.keras <= 2.10's Adagrad: torch.optim.Adagrad's update,
    p -= lr * g / (sqrt(sum) + eps), plus Keras's clipping and
    learning-rate schedule."""

    def __init__(self, params, lr=0.001, initial_accumulator_value=0.1,
                 eps=1e-7, **kwargs):
        super().__init__(params, lr, eps=eps, initial_accumulator_value=(
            initial_accumulator_value), **kwargs)

    def init_state(self, state, p, group):
        state["sum"] = torch.full_like(p, group["initial_accumulator_value"])

    def update(self, p, grad, state, group, lr, t):
        s = state["sum"]
        s.add_(grad * grad)
        p.sub_(lr * grad / (s.sqrt() + group["eps"]))
'''

ADADELTA = '''\
class Adadelta(KerasOptimizer):
    """Keras's Adadelta: torch.optim.Adadelta's update, plus Keras's
    clipping, schedule and decoupled weight decay."""

    def __init__(self, params, lr=0.001, rho=0.95, eps=1e-7, **kwargs):
        super().__init__(params, lr, rho=rho, eps=eps, **kwargs)

    def init_state(self, state, p, group):
        state["square_avg"] = torch.zeros_like(p)
        state["acc_delta"] = torch.zeros_like(p)

    def update(self, p, grad, state, group, lr, t):
        rho, eps = group["rho"], group["eps"]
        v, acc = state["square_avg"], state["acc_delta"]
        v.copy_(rho * v + (1 - rho) * each(torch.square, grad))
        scale = (acc + eps).sqrt() / (v + eps).sqrt()
        delta = -(scale * dense(grad))
        # delta * delta, its square taken row by row as the gradient's
        acc.copy_(rho * acc + (1 - rho) * (scale * scale
                                           * each(torch.square, grad)))
        p.add_(lr * delta)
'''

ADAMAX = '''\
class Adamax(KerasOptimizer):
    """Keras's Adamax.  Unlike torch.optim.Adamax, eps is added after the
    max: u = max(beta2 * u, |g|); p -= lr * m / ((1 - beta1 ** t) *
    (u + eps))."""

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-7,
                 **kwargs):
        super().__init__(params, lr, betas=betas, eps=eps, **kwargs)

    def init_state(self, state, p, group):
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_inf"] = torch.zeros_like(p)

    def update(self, p, grad, state, group, lr, t):
        beta1, beta2 = group["betas"]
        m, u = state["exp_avg"], state["exp_inf"]
        m.add_((dense(grad) - m) * (1 - beta1))
        u.copy_(torch.maximum(beta2 * u, each(torch.abs, grad)))
        p.sub_(lr * m / ((1 - beta1 ** t) * (u + group["eps"])))
'''

NADAM = '''\
class Nadam(KerasOptimizer):
    """Keras's Nadam: torch.optim.NAdam's update, with Keras's momentum
    schedule mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    (Keras 3: momentum_decay=1; torch's default is 0.004)."""

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-7,
                 momentum_decay=1.0, **kwargs):
        super().__init__(params, lr, betas=betas, eps=eps,
                         momentum_decay=momentum_decay, **kwargs)

    def init_state(self, state, p, group):
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        state["mu_product"] = torch.ones((), dtype=p.dtype)

    def update(self, p, grad, state, group, lr, t):
        beta1, beta2 = group["betas"]
        decay = group["momentum_decay"]
        mu = beta1 * (1 - 0.5 * 0.96 ** (t * decay))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * decay))
        mu_product = state["mu_product"]
        mu_product.mul_(mu)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        v.add_((each(torch.square, grad) - v) * (1 - beta2))
        grad = dense(grad)
        m.add_((grad - m) * (1 - beta1))
        m_hat = (mu_next * m / (1 - mu_product * mu_next)
                 + (1 - mu) * grad / (1 - mu_product))
        v_hat = v / (1 - beta2 ** t)
        p.sub_(m_hat * lr / (v_hat.sqrt() + group["eps"]))
'''

LION = '''\
class Lion(KerasOptimizer):
    """Keras's Lion (torch.optim has none):
    p -= lr * sign(beta1 * m + (1 - beta1) * g); m = beta2 * m +
    (1 - beta2) * g."""

    def __init__(self, params, lr=0.001, betas=(0.9, 0.99), **kwargs):
        super().__init__(params, lr, betas=betas, **kwargs)

    def init_state(self, state, p, group):
        state["exp_avg"] = torch.zeros_like(p)

    def update(self, p, grad, state, group, lr, t):
        beta1, beta2 = group["betas"]
        m, grad = state["exp_avg"], dense(grad)
        p.sub_(lr * torch.sign(m * beta1 + grad * (1 - beta1)))
        m.copy_(m * beta2 + grad * (1 - beta2))
'''


# -- one function per Keras optimizer ------------------------------------

def _eps(r, default=1e-7):
    eps = r.number("epsilon", default, 0.0)
    if r.kind == "legacy" and not eps:  # `epsilon or backend.epsilon()`
        r.notes.append("epsilon=0 is 1e-7 in tf.keras's legacy optimizers.")
        eps = 1e-7
    return eps


def _finish(r, cls_source, call_name, hyper, kw, schedule, lr, slots,
            groups, builtin=None, notes=(), **extra):
    """Assemble the OptimizerCode: the torch built-in ``builtin`` (name,
    args) when one is exact for this config, else ``call_name`` from
    ``cls_source`` on :data:`BASE`."""
    r.done()
    mode = _lookup_mode(r, hyper, kw) if r.lookups else None
    if mode:
        if builtin is not None:  # the class below takes sparse gradients
            r.notes = [n for n in r.notes if not n.startswith("torch.optim")]
        builtin = None
        kw = {**kw, "lookups": f'"{mode}"'}  # a str value is source
        extra.pop("step_key", None)
    parts = []
    if schedule:
        parts.append(schedule)
    if builtin is not None:
        func, args = builtin
        step_key = extra.pop("step_key", "step")
    else:
        parts += [BASE, cls_source]
        func, args = call_name, {**hyper, **kw}
        step_key = "step"
    args = {"lr": lr, **args}
    if any(isinstance(x, _F32) for v in args.values()
           for x in (v if isinstance(v, tuple) else (v,))):
        r.notes.append("Rates such as 0.8999999761581421 are the float32 "
                       "numbers Keras computes with (float32(0.9)); "
                       "Keras's 1 - float32(0.9) is not 1 - 0.9.")
    call = _call(func, args)
    if mode:
        call = SPARSE_LOOKUPS + call
    src = "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
    lines = [line for note in list(notes) + r.notes
             for line in textwrap.wrap(note, 72)]
    return OptimizerCode(
        source=src, make_optimizer=call, slots=slots, step_key=step_key,
        notes=lines, slot_groups=groups, keras=r.kind,
        class_name=r.name, **extra)


# Keras on TensorFlow holds an embedding lookup's gradient as a
# tf.IndexedSlices -- one row per looked-up id, not summed -- and its
# optimizers treat it differently from the summed gradient (measured in
# tests/test_training_optimizers.py's sparse cases):
# * Keras 3 squares (and takes |g| of) each row before summing them per
#   id: Adam, AdamW, Nadam, RMSprop, Adagrad, Adadelta, Adamax;
# * every Keras clips row by row: clipvalue, clipnorm and global_clipnorm
#   (its norms count every looked-up row);
# * tf.keras's legacy optimizers update only the looked-up rows where a
#   slot decays: SGD and RMSprop with momentum, Adadelta, Adamax; Nadam
#   decays every row of its slots, and updates the looked-up weights.
# Linear updates (SGD, Lion, tf.keras 2.11+'s after its clipping) are the
# summed gradient's.  A lookup whose table is also used densely (a tied
# output projection) has a dense gradient in both frameworks.
LOOKUPS = {"keras3": {"Adam", "AdamW", "Nadam", "RMSprop", "Adagrad",
                      "Adadelta", "Adamax"}}
LEGACY_LAZY = {"Adadelta", "Adamax"}

SPARSE_LOOKUPS = """\
# Keras (on TensorFlow) gives an embedding lookup's gradient one row per
# looked-up id, and this optimizer treats those rows as Keras does (see
# KerasOptimizer): sparse=True gives torch's gradient the same rows.
# (Keras on JAX or torch sums them first: without this loop, the
# optimizer trains as those backends do.)
for module in model.modules():
    if isinstance(module, torch.nn.Embedding):
        module.sparse = True
"""


def _lookup_mode(r, hyper, kw):
    """How the optimizer takes a lookup's sparse gradient ("each", "sum",
    "rows"), or None where Keras's update is the summed gradient's."""
    clips = any(k in kw for k in ("clipvalue", "clipnorm",
                                  "global_clipnorm"))
    if r.kind == "keras3" and (clips or r.name in LOOKUPS["keras3"]):
        return "each"
    if r.kind == "legacy" and r.name == "Nadam":
        return "weight_rows"
    if r.kind == "legacy" and (r.name in LEGACY_LAZY or (
            r.name in ("SGD", "RMSprop") and hyper.get("momentum"))):
        return "rows"
    return "sum" if clips else None


def _call(func, args):
    """``return func(model.parameters(), k=v, ...)`` wrapped to fit 79
    columns inside the function body (4 spaces)."""
    items = ["model.parameters()"] + [
        f"{k}={_value(v)}" for k, v in args.items()]
    one = f"return {func}({', '.join(items)})"
    if len(one) <= 75:
        return one
    lines, line = [], f"return {func}("
    pad = " " * len(line)
    for i, item in enumerate(items):
        piece = item + (")" if i == len(items) - 1 else ",")
        if len(line) + len(piece) + 1 > 75 and line.strip() != \
                f"return {func}(":
            lines.append(line.rstrip())
            line = pad
        line += piece + " "
    lines.append(line.rstrip())
    return "\n".join(lines)


class _F32(float):
    """A hyper-parameter Keras uses as a float32 number: written exactly
    (0.8999999761581421, not 0.9)."""


def _value(v):
    if isinstance(v, str):  # an expression we wrote (learning_rate)
        return v
    if isinstance(v, _F32):
        return repr(float(v))
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    return _num(v)


def _names(r, keras3, tf_keras, legacy):
    return {"keras3": keras3, "tf_keras": tf_keras, "legacy": legacy}[r.kind]


def _Adam(r, adamw=False):
    beta1 = r.rate("beta_1", 0.9)
    beta2 = r.rate("beta_2", 0.999)
    eps = _eps(r)
    amsgrad = r.flag("amsgrad")
    schedule, lr, kw = _common(r)
    hyper = {"betas": (beta1, beta2), "eps": eps}
    if amsgrad:
        hyper["amsgrad"] = True
    m, v, vhat = _names(r, ("momentum", "velocity", "velocity_hat"),
                        ("m", "v", "vhat"), ("m", "v", "vhat"))
    slots = {m: "exp_avg", v: "exp_avg_sq"}
    groups = [[m, v]]
    if amsgrad:
        slots[vhat] = "max_exp_avg_sq"
        groups.append([vhat])
    notes = []
    if adamw:
        notes.append("Keras's AdamW is its Adam with decoupled weight "
                     "decay, p -= p * weight_decay * lr.")
    if r.kind == "legacy":  # one block per slot
        groups = [[name] for group in groups for name in group]
    return _finish(r, ADAM, "Adam", hyper, kw, schedule, lr, slots, groups,
                   notes=notes)


def _AdamW(r):
    return _Adam(r, adamw=True)


def _SGD(r):
    momentum = r.number("momentum", 0.0, 0.0, 1.0)
    nesterov = r.flag("nesterov")
    schedule, lr, kw = _common(r)
    hyper = {}
    if momentum:
        hyper["momentum"] = momentum
        if nesterov:
            hyper["nesterov"] = True
    name = _names(r, "momentum", "m", "momentum")
    slots = {name: "momentum"} if momentum else {}
    groups = [[name]] if momentum or r.kind == "tf_keras" else []
    ignored = [name] if r.kind == "tf_keras" and not momentum else []
    builtin = None
    if not momentum and not schedule and set(kw) <= {"weight_decay"}:
        # p -= lr * (g + wd * p) is Keras's p -= p * wd * lr; p -= lr * g
        builtin = ("torch.optim.SGD", kw)
        r.notes.append("torch.optim.SGD is Keras's SGD without momentum "
                       "(its weight_decay adds wd * p to the gradient: "
                       "the same step as Keras's p -= p * wd * lr).")
    return _finish(r, SGD, "SGD", hyper, kw, schedule, lr, slots, groups,
                   builtin=builtin, ignored_slots=ignored,
                   **({"step_key": None} if builtin else {}))


def _RMSprop(r):
    rho = r.rate("rho", 0.9)
    momentum = r.number("momentum", 0.0, 0.0, 1.0)
    eps = _eps(r)
    centered = r.flag("centered")
    schedule, lr, kw = _common(r)
    hyper = {"rho": rho, "eps": eps}
    if momentum:
        hyper["momentum"] = momentum
    if centered:
        hyper["centered"] = True
    v, b, g = _names(r, ("velocity", "momentum", "average_gradient"),
                     ("velocity", "momentum", "average_gradient"),
                     ("rms", "momentum", "mg"))
    slots = {v: "square_avg"}
    groups = [[v]]
    if momentum:
        slots[b] = "momentum"
        groups.append([b])
    if centered:
        slots[g] = "grad_avg"
        groups.append([g])
    builtin = None
    notes = []
    source = RMSPROP
    if r.kind == "legacy" and not momentum:
        # tf.keras <= 2.10 without momentum: p -= lr * g / (sqrt(v) + eps),
        # torch.optim.RMSprop's update.
        source = LEGACY_RMSPROP
        notes.append("tf.keras's legacy RMSprop without momentum adds eps "
                     "outside the square root, as torch.optim.RMSprop.")
        if not schedule and not kw:
            args = {"alpha": rho, "eps": eps}
            if centered:
                args["centered"] = True
            builtin = ("torch.optim.RMSprop", args)
    return _finish(r, source, "RMSprop", hyper, kw, schedule, lr, slots,
                   groups, builtin=builtin, notes=notes)


def _Adagrad(r):
    init = r.number("initial_accumulator_value", 0.1, 0.0)
    eps = _eps(r)
    # tf.keras <= 2.10 with a constant learning rate and no clipping is
    # torch.optim.Adagrad, its decay torch's lr_decay.
    builtin = r.kind == "legacy" and not isinstance(r.cfg.get(
        "learning_rate", r.cfg.get("lr")), dict) and all(
        r.cfg.get(k) is None for k in ("clipvalue", "clipnorm",
                                       "global_clipnorm"))
    decay = r.number("decay", 0.0, 0.0) if builtin else 0.0
    if builtin:
        r.cfg = dict(r.cfg, decay=0.0)
    schedule, lr, kw = _common(r)
    hyper = {"initial_accumulator_value": init, "eps": eps}
    name = "accumulator"
    slots = {name: "sum"}
    notes = []
    source = ADAGRAD
    if r.kind == "legacy":
        source = LEGACY_ADAGRAD
        notes.append("tf.keras's legacy Adagrad adds eps outside the "
                     "square root, as torch.optim.Adagrad.")
    if builtin:
        args = {"lr_decay": decay, "initial_accumulator_value": init,
                "eps": eps}
        if not decay:
            del args["lr_decay"]
        builtin = ("torch.optim.Adagrad", args)
    else:
        builtin = None
    return _finish(r, source, "Adagrad", hyper, kw, schedule, lr, slots,
                   [[name]], builtin=builtin, notes=notes)


def _Adadelta(r):
    rho = r.rate("rho", 0.95)
    eps = _eps(r)
    schedule, lr, kw = _common(r)
    hyper = {"rho": rho, "eps": eps}
    g, d = _names(r, ("accumulated_grad", "accumulated_delta_var"),
                  ("accumulated_grad", "accumulated_delta_var"),
                  ("accum_grad", "accum_var"))
    slots = {g: "square_avg", d: "acc_delta"}
    groups = [[g, d]] if r.kind != "legacy" else [[g], [d]]
    builtin = None
    if not schedule and not kw:
        builtin = ("torch.optim.Adadelta", hyper)
        r.notes.append("torch.optim.Adadelta is Keras's Adadelta.")
    return _finish(r, ADADELTA, "Adadelta", hyper, kw, schedule, lr, slots,
                   groups, builtin=builtin)


def _Adamax(r):
    beta1 = r.rate("beta_1", 0.9)
    beta2 = r.rate("beta_2", 0.999)
    eps = _eps(r)
    schedule, lr, kw = _common(r)
    hyper = {"betas": (beta1, beta2), "eps": eps}
    m, u = _names(r, ("momentum", "norm"), ("m", "u"), ("m", "v"))
    groups = [[m, u]] if r.kind != "legacy" else [[m], [u]]
    return _finish(r, ADAMAX, "Adamax", hyper, kw, schedule, lr,
                   {m: "exp_avg", u: "exp_inf"}, groups)


def _Nadam(r):
    beta1 = r.rate("beta_1", 0.9, cast=True)
    beta2 = r.rate("beta_2", 0.999, cast=True)
    eps = _eps(r)
    decay = 1.0
    if r.kind == "legacy":  # tf.keras's legacy "decay" is schedule_decay
        decay = r.number("decay", 0.004, 0.0)
        r.cfg = dict(r.cfg, decay=0.0)
        if isinstance(r.cfg.get("learning_rate"), dict):
            r.refuse("learning-rate schedule", "tf.keras's legacy Nadam "
                     "does not take one")
    schedule, lr, kw = _common(r)
    hyper = {"betas": (beta1, beta2), "eps": eps, "momentum_decay": decay}
    m, v = _names(r, ("momentum", "velocity"), ("m", "v"), ("m", "v"))
    extra = {}
    if r.kind == "keras3":
        extra["globals"] = {"variable": "mu_product"}
    elif r.kind == "legacy":
        extra["globals"] = {"momentum_cache": "mu_product"}
    else:
        extra["restart"] = {"mu_product": 1.0}
        r.notes.append("tf.keras 2.11+ does not save Nadam's u_product and "
                       "restarts it at 1.0 on load; so does this state.")
    groups = [[m, v]] if r.kind != "legacy" else [[m], [v]]
    builtin = None
    if not schedule and set(kw) <= {"weight_decay"}:
        args = dict(hyper)
        if kw:
            args.update(kw, decoupled_weight_decay=True)
        builtin = ("torch.optim.NAdam", args)
        r.notes.append(f"torch.optim.NAdam with momentum_decay="
                       f"{_num(decay)} is Keras's Nadam (Keras's momentum "
                       f"schedule 0.96 ** (t * {_num(decay)})).")
    return _finish(r, NADAM, "Nadam", hyper, kw, schedule, lr,
                   {m: "exp_avg", v: "exp_avg_sq"}, groups,
                   builtin=builtin, **extra)


def _Lion(r):
    beta1 = r.rate("beta_1", 0.9, cast=True)
    if beta1 <= 0:
        r.refuse(f"beta_1={beta1!r}", "Keras refuses it")
    beta2 = r.rate("beta_2", 0.99, cast=True)
    schedule, lr, kw = _common(r)
    m = _names(r, "momentum", "m", "m")
    return _finish(r, LION, "Lion", {"betas": (beta1, beta2)}, kw, schedule,
                   lr, {m: "exp_avg"}, [[m]])


_ALL = {f.__name__[1:]: f for f in (_Adam, _AdamW, _SGD, _RMSprop, _Adagrad,
                                    _Adadelta, _Adamax, _Nadam, _Lion)}
_LEGACY = {k: f for k, f in _ALL.items() if k not in ("AdamW", "Lion")}
_CLASSES = {"keras3": _ALL, "tf_keras": _ALL,
            "legacy": {**_LEGACY, **{k.lower(): f
                                     for k, f in _LEGACY.items()}}}
