"""The way back from every state-dict entry to the Keras variables it holds.

A rule gives each state-dict entry a *producer*.  The preferred kind is a
:class:`Transformed`: the stored variables it reads, a function of their
arrays, and what that function does in words::

    Transformed(lambda k: as_f32(k.T), [kernel], "transposed (in, out) -> "
                "(out, in)")

A plain zero-argument callable still works (keras-hub rules, user rules):
its variables are found by running it with the reads recorded
(:func:`migrate.weights.record`, zeros instead of the file) and its
transform is reported as not described -- never guessed.

The same producers serve two purposes, with no second copy of any
transform: producing the weights (the variables read from the file) and
:func:`map_arrays` -- the variables substituted by arrays the caller gives
(:func:`migrate.weights.substitute`): gradients, optimizer slots, a
fine-tuned copy, keyed by the Keras variable path.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .errors import ConversionError
from .weights import LazyArray, MissingVariable, record, substitute

AS_STORED = "as stored"
# a plain callable says nothing about its transform; "as stored" would be a
# guess
UNDESCRIBED = "not described (a plain producer: the rule gives no Transformed)"


class Transformed:
    """A state-dict value computed from stored variables:
    ``fn(*(s.read() for s in sources))``, with ``description`` saying in
    words what ``fn`` does (shown in ``conversion.json``).  ``frozen``:
    a parameter Keras does not have, kept out of training."""

    __slots__ = ("fn", "sources", "description", "frozen")

    def __init__(self, fn: Callable, sources: Sequence[LazyArray],
                 description: str = AS_STORED, *, frozen: bool = False):
        self.fn = fn
        self.sources = list(sources)
        self.description = description
        # a parameter Keras does not have (torch's second LSTM bias): the
        # port does not train it (requires_grad_(False) in model.py)
        self.frozen = frozen

    def __call__(self):
        return self.fn(*(s.read() for s in self.sources))

    def __repr__(self) -> str:
        return (f"Transformed({[s.path or s.where for s in self.sources]}, "
                f"{self.description!r})")


def producer_of(entry: Callable) -> Callable:
    """The rule's producer inside a translator-wrapped entry."""
    return getattr(entry, "producer", entry)


def description(entry: Callable) -> str:
    """What the entry's producer does to the variables, in words (the
    transforms of derived source arrays first)."""
    inner = producer_of(entry)
    text = getattr(inner, "description", UNDESCRIBED)
    before = [s.transform for s in getattr(inner, "sources", ())
              if s.transform]
    if before:
        text = "; ".join(before) + ("" if text == AS_STORED
                                    else f"; then {text}")
    return text


def sources(entry: Callable) -> list[LazyArray]:
    """The stored variables (with a Keras path) ``entry`` reads, in order,
    without reading the file: a :class:`Transformed` whose sources all have
    paths says so itself; anything else is run with the reads recorded."""
    inner = producer_of(entry)
    if isinstance(inner, Transformed) and all(s.path for s in inner.sources):
        found = inner.sources
    else:
        with record() as found:
            inner()
    out: list[LazyArray] = []
    for arr in found:
        if all(a is not arr for a in out):
            out.append(arr)
    return out


def variables(entry: Callable) -> list[str]:
    """The Keras variable paths ``entry`` is made of."""
    return _unique(a.path for a in sources(entry))


def _unique(paths) -> list[str]:
    out: list[str] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def weight_map(state: dict[str, Callable], order=None) -> list[dict]:
    """``[{torch, keras_layer, keras_variables, transform}]`` for every
    state-dict entry, in ``order`` (the module's keys) or ``state``'s."""
    rows = []
    for key in (order or state):
        entry = state[key]
        rows.append({"torch": key,
                     "keras_layer": getattr(entry, "keras_layer", None),
                     "keras_variables": variables(entry),
                     "transform": description(entry)})
    return rows


def ambiguous_paths(state: dict[str, Callable]) -> dict[str, list[str]]:
    """Keras paths read by entries of more than one layer (Keras 3 gives two
    LSTMs in two TimeDistributed wrappers the same ``lstm/lstm_cell/kernel``):
    ``{path: [layers]}``."""
    owners: dict[str, list[str]] = {}
    for entry in state.values():
        layer = getattr(entry, "keras_layer", None)
        for path in variables(entry):
            names = owners.setdefault(path, [])
            if layer not in names:
                names.append(layer)
    return {p: names for p, names in owners.items() if len(names) > 1}


def map_arrays(state: dict[str, Callable], arrays: dict,
               convert: Callable[[str, object], object]) -> dict:
    """``{state key: convert(key, value)}`` for every entry whose Keras
    variables are all in ``arrays`` (entries that hold no variable, such as
    ``num_batches_tracked``, and entries missing a variable are left out).
    A path Keras gives two layers' variables is refused."""
    clash = {p: owners for p, owners in ambiguous_paths(state).items()
             if p in arrays}
    if clash:
        path, owners = next(iter(clash.items()))
        raise ConversionError(
            f"Keras variable path {path!r} is shared by layers {owners}; "
            "it cannot say which one an array belongs to")
    out = {}
    for key, entry in state.items():
        if not variables(entry):
            continue
        try:
            with substitute(arrays):
                value = entry()
        except MissingVariable:
            continue
        out[key] = convert(key, value)
    return out
