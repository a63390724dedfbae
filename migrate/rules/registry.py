"""The rule table: Keras layer class -> the function that converts it.

    @rule("Dense", variables=dense_variables, prefers=last_axis)
    def dense(call): ...

A lookup miss is an error that names the layer class; registering a key twice
is refused unless ``override=True`` (how users replace a built-in rule).
Keys are tried in this order: the layer's ``registered_name`` (custom and
package-registered classes, ``"pkg>Name"``), ``"<module>.<ClassName>"`` (Keras
3 op nodes such as ``keras.src.ops.numpy.Add`` share class names with real
layers, so they are only found this way), then the bare class name.

A registered activation *function* (``"pkg>fn_name"`` in ``Activation`` or a
layer's ``activation=``) has a rule too, written with :func:`activation_rule`
and kept under the key ``"activation:pkg>fn_name"``.

``Rule.pack`` says where a rule comes from: ``""`` for keras2torch's own,
the distribution name of an installed rule pack (:mod:`migrate.plugins`),
or the path of a ``--rules`` file (:mod:`migrate.userrules`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..graph import Layer
from ..layout import Layout


@dataclass(frozen=True)
class Rule:
    key: str
    convert: Callable  # (Call) -> Emit
    # config -> variable names in storage order (Keras 3 files are positional)
    variables: Callable[[dict], list[str]] | None = None
    # (config, rank) -> the layout this layer wants its input in, or None
    # when any layout will do; used to pick the model's input layouts.
    prefers: Callable[[dict, int], Layout | None] | None = None
    # What the layer does with a Keras mask on its inputs: "drop" (ignores
    # it, as layers without mask support do), "propagate" (passes it on,
    # computing as if unmasked) or "consume" (the rule implements masking).
    masks: str = "drop"
    kind: str = "layer"  # or "activation" (a rule for a registered function)
    pack: str = ""  # "" built-in, a rule pack's distribution, a rules file

    @property
    def name(self) -> str:
        return self.convert.__name__


RULES: dict[str, Rule] = {}


def rule(*keys: str, variables=None, prefers=None, masks="drop",
         override: bool = False):
    """Register the decorated function as the rule for ``keys``."""
    def deco(fn):
        for key in keys:
            register(Rule(key, fn, variables, prefers, masks),
                     override=override)
        return fn
    return deco


ACTIVATION = "activation:"


def activation_key(name: str) -> str:
    """The table key of the rule for activation function ``name``."""
    return ACTIVATION + name


def activation_rule(*names: str, override: bool = False):
    """Register the decorated function as the rule for the activation
    functions ``names`` (``"pkg>fn_name"``, as Keras registered them).

    Written like a layer rule, it takes the input :class:`Tensor` ``x``
    and returns an :class:`Emit` with one :class:`Out` (or just the
    expression, a string using ``x.expr``)::

        @activation_rule("kecamCommon>hard_swish")
        def hard_swish(x):
            return Emit([Out(chain(f"{x.expr} * F.relu6({x.expr} + 3.0) / 6.0"),
                             x.shape, x.layout)])

    It is used for ``Activation(fn)`` layers and every layer's
    ``activation=fn``; an expression that uses ``x`` more than once
    becomes a small function in model.py."""
    def deco(fn):
        for name in names:
            register(Rule(activation_key(name), fn, kind="activation",
                          masks="propagate"), override=override)
        return fn
    return deco


def register(r: Rule, override: bool = False) -> None:
    if r.key in RULES and not override:
        raise ValueError(f"a rule for {r.key!r} is already registered "
                         "(pass override=True to replace it)")
    RULES[r.key] = r


def op_key(layer: Layer) -> str:
    return f"{layer.module}.{layer.class_name}"


def lookup(layer: Layer, extra: dict[str, Rule] | None = None) -> Rule | None:
    tables = [extra or {}, RULES]
    keys = []
    if layer.registered_name and layer.registered_name != layer.class_name:
        keys.append(layer.registered_name)
    if layer.is_op:
        keys.append(op_key(layer))
    else:
        # keras-hub's internal classes register under their bare names
        # (``RMSNormalization``, as Keras's own): its module tells them apart
        package = (layer.module or "").split(".", 1)[0]
        if package in ("keras_hub", "keras_nlp"):
            keys.append(f"keras_hub>{layer.class_name}")
        keys.append(layer.class_name)
    for table in tables:
        for key in keys:
            if key in table:
                return table[key]
    return None
