"""Lazy access to a layer's stored variables.

Readers attach a :class:`LayerWeights` to every layer.  Nothing is read from
the file until a rule asks for a variable with :meth:`LazyArray.read`, and
each variable is read once, when its converted tensor is produced.

Files name variables differently: legacy HDF5 stores a name per variable
(``conv1/kernel:0``, ``seq/sd/kernel``), Keras 3 stores them by position
(``vars/0``, ``vars/1``).  :meth:`LayerWeights.bind` maps both onto the names
a rule declares (``["kernel", "bias"]``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ConversionError


@dataclass
class LazyArray:
    """A stored array, read on demand."""

    shape: tuple
    dtype: str
    _read: Callable[[], np.ndarray] = field(repr=False)
    where: str = ""  # for error messages: "model_weights/dense/dense/kernel:0"

    def read(self) -> np.ndarray:
        arr = np.asarray(self._read())
        if tuple(arr.shape) != tuple(self.shape):
            raise ConversionError(
                f"weight {self.where!r} has shape {arr.shape}, expected {self.shape}")
        return arr

    @classmethod
    def constant(cls, value, where: str = "") -> "LazyArray":
        arr = np.asarray(value)
        return cls(tuple(arr.shape), str(arr.dtype), lambda: arr, where)


@dataclass
class WeightEntry:
    """One stored variable of a layer.

    ``key`` is its path relative to the layer: ``"kernel"``,
    ``"lstm_cell/kernel"`` (named files) or ``"vars/0"``, ``"cell/vars/1"``
    (Keras 3 positional files).
    """

    key: str
    array: LazyArray


_SUFFIX = re.compile(r":\d+$")
_POSITIONAL = re.compile(r"^(?:(.*)/)?vars/(\d+)$")
_ANONYMOUS = re.compile(r"variable(_\d+)?")


def clean_weight_name(name: str) -> str:
    """``"dense/kernel:0"`` -> ``"dense/kernel"``."""
    return _SUFFIX.sub("", name)


@dataclass
class LayerWeights:
    entries: list[WeightEntry] = field(default_factory=list)
    layer: str = ""  # the owning layer's name, for messages

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def positional(self) -> bool:
        return bool(self.entries) and all(
            _POSITIONAL.match(e.key) for e in self.entries)

    def bind(self, expected: list[str]) -> dict[str, LazyArray]:
        """Map the stored variables onto ``expected`` names, in order.

        Names may be paths (``"forward/kernel"``); positional files are
        bound in order within each sub-object.  Raises a
        :class:`ConversionError` naming the layer when the counts or names
        disagree, so a wrong guess never binds silently.
        """
        if len(self.entries) != len(expected):
            have = [e.key for e in self.entries]
            raise ConversionError(
                f"layer {self.layer!r}: expected {len(expected)} weight(s) "
                f"{expected}, the file has {len(have)} {have}")
        if self.positional:
            return self._bind_positional(expected)
        return self._bind_named(expected)

    def _bind_positional(self, expected):
        def order(e: WeightEntry):
            prefix, idx = _POSITIONAL.match(e.key).groups()
            return (prefix or "", int(idx))

        ordered = sorted(self.entries, key=order)
        return {name: e.array for name, e in zip(expected, ordered)}

    def _bind_named(self, expected):
        out: dict[str, LazyArray] = {}
        remaining = list(self.entries)
        unmatched = []
        for name in expected:
            match = _best_match(name, remaining)
            if match is None:
                unmatched.append(name)
                continue
            remaining.remove(match)
            out[name] = match.array
        # Keras 3 .h5 names variables created without a name "variable",
        # "variable_1", ...: those bind in order to what is left.
        if unmatched and all(_ANONYMOUS.fullmatch(
                clean_weight_name(e.key).split("/")[-1]) for e in remaining):
            out.update({n: e.array for n, e in zip(unmatched, remaining)})
            unmatched = []
        if unmatched:
            raise ConversionError(
                f"layer {self.layer!r}: no stored weight matches "
                f"{unmatched[0]!r} (file has {[e.key for e in self.entries]})")
        return {name: out[name] for name in expected}


def _best_match(name: str, entries: list[WeightEntry]) -> WeightEntry | None:
    """The entry whose key ends with ``name`` (path components), else the
    first entry whose last component starts with the variable name (Keras 2
    may write ``kernel_1`` for a rebuilt layer)."""
    want = name.split("/")
    for e in entries:
        parts = clean_weight_name(e.key).split("/")
        if parts[-len(want):] == want:
            return e
    last = want[-1]
    for e in entries:
        tail = clean_weight_name(e.key).split("/")[-1]
        if re.fullmatch(re.escape(last) + r"(_\d+)?", tail):
            return e
    return None
