"""What a rule sees (:class:`Call`) and what it returns (:class:`Emit`).

A rule is a plain function ``rule(call) -> Emit`` registered under a Keras
class name (see :mod:`migrate.rules.registry`).  It reads the layer's config
with explicit defaults, asks for its weights by name, says which layout it
needs its inputs in, and returns

* the ``nn.Module`` constructor it wants as ``self.<attr>`` (or none),
* the state-dict entries of that module as lazy producers (weights are read
  only when the state dict is materialised): preferably
  ``Transformed(fn, [variables], "what fn does")`` (:mod:`migrate.weightmap`),
  which keeps the way back to the Keras variables; a plain callable works
  too (its transform then reported as not described),
* the forward code of each output, as a chain of steps.

Forward code uses placeholders, not variable names: ``call.x(i)`` is input
``i`` and :data:`HOLE` in a later step is the previous step's value, so the
emitter can name variables and join steps into readable lines.  Rules never
mutate the graph; a rule refuses an option with :meth:`Call.refuse`.

**Keras masks.**  A tensor may carry a Keras mask (``Embedding(mask_zero=
True)``, ``Masking``): a bool tensor in Keras axis order over every axis but
the last, ``(B, T)`` for a sequence.  ``Tensor.masked`` says an input has
one; ``Tensor.mask`` is the placeholder :func:`MASK` ``(i)`` for its value,
usable in forward code like ``IN(i)``, when the translator has written it
(always, for rules registered with ``masks="consume"``).  An output's mask
is, unless the rule says otherwise in :class:`Out`, the layer's *previous
mask* (an explicit ``mask=`` call argument, else input 0's mask) for
``masks="propagate"`` rules and none for the others.  ``Out.mask`` gives a
new mask as an expression (``f"{IN(0)} != 0"``, ``f"{MASK(0)} | {MASK(1)}"``);
it is written as its own line, before the layer's statement, only when
something downstream reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConversionError
from ..graph import Layer, Node, TensorRef
from ..layout import Layout
from ..weightmap import Transformed  # noqa: F401 -- rules build state with it
from ..weights import LazyArray

HOLE = "\x01\x02"  # the previous step's value in a chained step


def IN(i: int) -> str:
    """Placeholder for input ``i`` in a first step."""
    return f"\x01{i}\x02"


def MASK(i: int) -> str:
    """Placeholder for the Keras mask of input ``i`` (any step)."""
    return f"\x03{i}\x04"


def TMP(k: int) -> str:
    """Placeholder for the ``k``-th variable named by :attr:`Emit.pre`."""
    return f"\x05{k}\x06"


class Refused(ConversionError):
    """A rule cannot convert this layer's options (names layer and option)."""


@dataclass
class Tensor:
    shape: tuple  # Keras shape, batch included
    layout: Layout
    dtype: str = "float32"
    expr: str = ""  # code for this tensor inside a rule (a placeholder)
    masked: bool = False  # carries a Keras mask (Embedding mask_zero, ...)
    mask: str | None = None  # MASK(i) when the mask's value is available

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def torch_shape(self) -> tuple:
        return self.layout.torch_shape(self.shape)


@dataclass
class Out:
    steps: list[str]  # steps[0] uses IN(i); later steps use HOLE
    shape: tuple
    layout: Layout
    dtype: str = "float32"
    masked: bool | None = None  # None: as the rule's ``masks`` policy says;
    # True: the previous mask (explicit ``mask=`` argument, else input 0's)
    mask: str | None = None  # a new mask: code using IN(i) / MASK(i)
    # A Python number or tuple (a ``tf.shape`` piece), not a tensor: no
    # shape comment, and its line is dropped when nothing reads it.
    python: bool = False
    # A value the layers after it read as they are, as they read masks (a
    # T5 stack's position bias): repeated blocks fold around it.
    shared: bool = False


@dataclass
class Emit:
    outputs: list[Out]
    module: str | None = None  # "nn.Linear(4, 5)" -> self.<attr> = ...
    # state-dict entries relative to self.<attr>: "weight", "bias"; the key
    # "" means self.<attr> itself is an nn.Parameter / buffer.
    state: dict[str, Callable[[], Any]] = field(default_factory=dict)
    init_lines: list[str] = field(default_factory=list)  # use {attr}
    helpers: dict[str, str] = field(default_factory=dict)  # name -> code
    # One expression returning a tuple, unpacked into the outputs
    # (``out, h, c = self.lstm(x)``); the outputs' steps are then unused.
    multi: list[str] | None = None
    # Statements before the outputs, each ``(name hints, code)``: written
    # as ``forward, state = run_rnn(...)``, the translator choosing unique
    # names; later code refers to the k-th name (counted over all of them)
    # as TMP(k).  An output whose steps are just ``[TMP(k)]`` is that
    # variable.
    pre: list[tuple[list[str], str]] = field(default_factory=list)
    # Modules the layer needs beside its own, ``{attr: (constructor,
    # state)}``, the attr from :meth:`Call.extra_attr` (a T5 stack's
    # relative position table, which every layer of the stack reads).
    modules: dict[str, tuple[str, dict]] = field(default_factory=dict)


def chain(first: str, *wraps: str) -> list[str]:
    """Steps from a first expression and wrappers written with ``{}``."""
    return [first] + [w.replace("{}", HOLE) for w in wraps]


class Call:
    """One node being converted, as its rule sees it."""

    def __init__(self, node: Node, inputs: list[Tensor], attr: str,
                 keras_major: int, converter):
        self.node = node
        self.layer: Layer = node.layer
        self.config: dict = node.layer.config
        self.inputs = inputs
        self.attr = attr
        self.keras_major = keras_major
        self._conv = converter  # the translator: layout conversion, warnings

    def extra_attr(self, hint: str) -> str:
        """A ``self.`` attribute for a further module of this layer
        (:attr:`Emit.modules`), unique in the model."""
        return self._conv.attrs.name((self.layer.name, hint), hint)

    # -- config ---------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        value = self.config.get(key, default)
        return default if value is None and default is not None else value

    def refuse(self, option: str, why: str) -> None:
        raise Refused(f"{option}: {why}")

    def only(self, key: str, allowed, default=None) -> Any:
        """Read ``key``; refuse any value outside ``allowed``."""
        value = self.config.get(key, default)
        if value not in allowed:
            self.refuse(f"{key}={value!r}", f"supported: {list(allowed)}")
        return value

    # -- inputs and weights -------------------------------------------------
    def x(self, i: int = 0) -> str:
        return self.inputs[i].expr

    def index(self, t: Tensor) -> int:
        """Which input ``t`` is.  A tensor passed twice (``mha(x, x)``) is
        one input, which an earlier :meth:`want` may have replaced: ``t`` is
        then found by its placeholder."""
        for i, u in enumerate(self.inputs):
            if u is t:
                return i
        for i in range(len(self.inputs)):
            if t.expr == IN(i):
                return i
        raise ValueError(f"{t.expr!r} is not an input of this call")

    def want(self, i: int, layout: Layout) -> Tensor:
        """Input ``i`` converted to ``layout`` (writes a permute if needed)."""
        self.inputs[i] = self._conv.relayout(self, self.inputs[i], layout)
        return self.inputs[i]

    def mask(self, i: int = 0) -> str | None:
        """The placeholder for input ``i``'s Keras mask, or None."""
        return self.inputs[i].mask

    def kwarg(self, name: str) -> Tensor | list | None:
        """The input tensor(s) passed as call keyword ``name``
        (``initial_state``, ``mask``, ``attention_mask``...), or None."""
        value = self.node.kwargs.get(name)
        refs = self.node.inputs
        if isinstance(value, TensorRef):
            return self.inputs[refs.index(value)]
        if isinstance(value, (list, tuple)) and value and all(
                isinstance(v, TensorRef) for v in value):
            return [self.inputs[refs.index(v)] for v in value]
        return None

    def weights(self, names: list[str]) -> dict[str, LazyArray]:
        return self.layer.weights.bind(names)

    def warn(self, message: str) -> None:
        self._conv.warn(self.layer, message)

    def declared(self) -> dict:
        """``{graph name: (layer, attr)}`` of the layers whose modules
        earlier calls declared (a tied head reads its embedding's table as
        ``self.<attr>.weight``)."""
        return self._conv.declared()

    def declared_state(self) -> set[str]:
        """The state-dict keys declared so far (``token_embedding.weight``)."""
        return set(self._conv.state)

    @property
    def self_attr(self) -> str:
        return f"self.{self.attr}"
