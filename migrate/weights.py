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

import contextlib
import contextvars
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import ConversionError


def contiguous(arr, dtype=None) -> np.ndarray:
    """A C-contiguous copy of ``arr`` (cast to ``dtype``), never a view of
    it.

    Converting a weight usually means copying a permuted view of what was
    read (a Keras ``(kh, kw, in, out)`` kernel to torch's ``(out, in, kh,
    kw)``).  torch copies such a view fastest (:func:`_torch_copy`).  Where
    it cannot, numpy copies a view with an inner loop over the last output
    axis, only ``kw`` long; as two copies with long inner loops (a 2-D
    transpose, then a swap of whole ``kh * kw`` runs) it is several times
    faster.  Other arrays are copied plainly."""
    arr = np.asarray(arr)
    dtype = arr.dtype if dtype is None else np.dtype(dtype)
    if arr.size >= 1 << 12 and not arr.flags.c_contiguous:
        fast = _torch_copy(arr, dtype)
        if fast is not None:
            return fast
    if arr.ndim == 2 and arr.size >= 1 << 16 and \
            abs(arr.strides[0]) < abs(arr.strides[1]):
        return _transposed_copy(arr, dtype)
    fast = _permuted_copy(arr) if arr.ndim >= 3 else None
    if fast is not None:
        return fast if fast.dtype == dtype else fast.astype(dtype)
    return np.array(arr, dtype=dtype, order="C", copy=True)


_TORCH_DTYPES = {np.dtype(n): getattr(torch, n) for n in (
    "float16", "float32", "float64", "int8", "uint8", "int16", "int32",
    "int64", "bool")}


def _torch_copy(arr: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """``arr`` copied (and cast) by torch, whose strided copy runs on its
    intra-op threads: 1.2-2x faster than the tiles below for ResNet50's
    kernels on 2 CPUs.  ``None`` when torch cannot view ``arr`` (a read-only,
    byte-swapped or negatively strided array)."""
    src, dst = _TORCH_DTYPES.get(arr.dtype), _TORCH_DTYPES.get(dtype)
    if (src is None or dst is None or not arr.flags.writeable
            or not arr.dtype.isnative or min(arr.strides) < 0):
        return None
    out = torch.empty(arr.shape, dtype=dst)
    out.copy_(torch.from_numpy(arr))
    return out.numpy()  # owns its data through the tensor


def _transposed_copy(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A column-major 2-D view (a Dense kernel's ``.T``), copied in tiles."""
    return _tiled(arr, dtype)


def _tiled(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A C-contiguous copy of ``arr`` made in 64 x 64 tiles over its first
    two axes, each of which stays in cache while it is read and written (a
    plain copy of a transposed view reads one number per cache line: 2-3x
    slower on large kernels)."""
    rows, cols = arr.shape[:2]
    if min(rows, cols) < 128 or arr.flags.c_contiguous:
        return np.array(arr, dtype=dtype, order="C", copy=True)
    out = np.empty(arr.shape, dtype)
    for i in range(0, rows, 64):
        for j in range(0, cols, 64):
            out[i:i + 64, j:j + 64] = arr[i:i + 64, j:j + 64]
    return out


def _permuted_copy(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` (a view ``base.transpose(perm)`` of a C-contiguous base)
    copied in two long-loop passes when ``perm``, once axes that stay
    together are merged, reverses three groups; else ``None``."""
    if arr.flags.c_contiguous or arr.size < 4096 or 0 in arr.strides:
        return None
    order = sorted(range(arr.ndim), key=lambda j: -arr.strides[j])
    base = arr.transpose(order)
    if not base.flags.c_contiguous:
        return None
    perm = [order.index(j) for j in range(arr.ndim)]  # out axis -> base axis
    groups = [[perm[0]]]  # runs of output axes adjacent in the base too
    for b in perm[1:]:
        if b == groups[-1][-1] + 1:
            groups[-1].append(b)
        else:
            groups.append([b])
    if len(groups) != 3 or [g[0] for g in groups] != sorted(
            (g[0] for g in groups), reverse=True):
        return None
    size = [int(np.prod([base.shape[b] for b in g])) for g in groups]
    c, b, a = size  # base is (a, b, c) in memory, the output (c, b, a)
    step = _tiled(base.reshape(a, b * c).T, arr.dtype)  # (b * c, a)
    out = _tiled(step.reshape(b, c, a).transpose(1, 0, 2), arr.dtype)
    return out.reshape(arr.shape)


class MissingVariable(ConversionError):
    """A producer read a Keras variable that :func:`substitute` was not
    given (its state-dict entry cannot be mapped from those arrays)."""


# {keras variable path: array} while substitute() is active
_SUBSTITUTES: contextvars.ContextVar = contextvars.ContextVar(
    "keras2torch_substitutes", default=None)
# a list collecting the paths read while record() is active
_RECORDING: contextvars.ContextVar = contextvars.ContextVar(
    "keras2torch_recording", default=None)


@contextlib.contextmanager
def substitute(arrays: dict) -> Iterator[None]:
    """While active, a :class:`LazyArray` with a Keras path reads
    ``arrays[path]`` instead of the file (and raises
    :class:`MissingVariable` for a path not given).  The state-dict
    producers then map any arrays shaped like the variables (gradients,
    optimizer slots) through exactly the transforms of the weights."""
    token = _SUBSTITUTES.set(dict(arrays))
    try:
        yield
    finally:
        _SUBSTITUTES.reset(token)


@contextlib.contextmanager
def record() -> Iterator[list]:
    """While active, reading a :class:`LazyArray` with a Keras path appends
    the array to the yielded list and returns zeros of its shape (nothing
    is read from the file)."""
    seen: list = []
    token = _RECORDING.set(seen)
    try:
        yield seen
    finally:
        _RECORDING.reset(token)


@dataclass
class LazyArray:
    """A stored array, read on demand.

    ``path`` is the Keras variable it holds as Keras names it
    (``variable.path`` in Keras 3, ``variable.name`` without ``:0`` in
    tf.keras): set by the reader for files that store names, else when a
    rule binds it (``scope`` + the declared variable name)."""

    shape: tuple
    dtype: str
    _read: Callable[[], np.ndarray] = field(repr=False)
    where: str = ""  # for error messages: "model_weights/dense/dense/kernel:0"
    path: str = ""  # "conv1/kernel", "lstm/lstm_cell/recurrent_kernel"
    scope: str = ""  # positional files: the path without the variable name
    transform: str = ""  # an array derived from another: how (in words)

    def read(self) -> np.ndarray:
        if self.path:
            seen = _RECORDING.get()
            if seen is not None:
                seen.append(self)
                return np.zeros(self.shape, self.dtype)
            arrays = _SUBSTITUTES.get()
            if arrays is not None:
                if self.path not in arrays:
                    raise MissingVariable(self.path)
                arr = np.asarray(arrays[self.path])
                if tuple(arr.shape) != tuple(self.shape):
                    raise ConversionError(
                        f"array for {self.path!r} has shape {arr.shape}, "
                        f"the variable {tuple(self.shape)}")
                return arr
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
        bound = (self._bind_positional(expected) if self.positional
                 else self._bind_named(expected))
        for name, arr in bound.items():
            if not arr.path and arr.scope:  # the declared name is Keras's
                arr.path = f"{arr.scope}/{name.rsplit('/', 1)[-1]}"
        return bound

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
