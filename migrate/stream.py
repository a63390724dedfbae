"""Converted weights, produced one tensor at a time.

A conversion's weights are *producers*: functions that read a stored
variable (:class:`migrate.weights.LazyArray`) and transform it.  Two ways to
consume them:

* :class:`LazyStateDict` is the ``Conversion.state_dict`` that API users
  see: a read-only mapping whose keys, shapes and dtypes are known up front
  (from the generated module built on the meta device) and whose tensors
  are produced on first access and then kept;
* :func:`write_safetensors` streams them into a ``.safetensors`` file: the
  header first, from the known shapes and dtypes, then each tensor produced,
  written and freed in turn, so writing needs memory for about one tensor,
  not for the model.

The safetensors layout: an 8-byte little-endian header length, a JSON
header ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}`` padded with spaces to a multiple of 8, then
the raw little-endian data of every tensor, back to back.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
import weakref
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import ConversionError
from .perms import file_mode

# torch dtype -> (safetensors name, numpy dtype of the bytes we write)
DTYPES = {
    torch.float64: ("F64", np.dtype("<f8")),
    torch.float32: ("F32", np.dtype("<f4")),
    torch.float16: ("F16", np.dtype("<f2")),
    torch.bfloat16: ("BF16", np.dtype("<u2")),  # written as raw 16-bit words
    torch.int64: ("I64", np.dtype("<i8")),
    torch.int32: ("I32", np.dtype("<i4")),
    torch.int16: ("I16", np.dtype("<i2")),
    torch.int8: ("I8", np.dtype("i1")),
    torch.uint8: ("U8", np.dtype("u1")),
    torch.bool: ("BOOL", np.dtype("?")),
}
BLOCK = 64 << 20  # bytes written per call: bounds the copies of a transform


class Spec(tuple):
    """``(shape, dtype)`` of one state-dict entry."""

    def __new__(cls, shape, dtype: torch.dtype):
        return super().__new__(cls, (tuple(int(d) for d in shape), dtype))

    @property
    def shape(self) -> tuple:
        return self[0]

    @property
    def dtype(self) -> torch.dtype:
        return self[1]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype
                                                   ).element_size()


class LazyStateDict(Mapping):
    """A read-only ``{key: torch.Tensor}`` whose tensors are produced on
    first access (and kept).  ``specs`` gives every key's shape and dtype
    without producing anything; ``produce(key)`` gives a tensor's value
    without keeping it (what the streaming writer uses)."""

    def __init__(self, producers: dict[str, Callable], specs: dict[str, Spec],
                 closer: Callable[[], None] | None = None):
        self._producers = dict(producers)
        self.specs = dict(specs)
        self._cache: dict[str, torch.Tensor] = {}
        # the model file is released when this mapping is collected, or on
        # close(), whichever comes first
        self._finalizer = (weakref.finalize(self, closer) if closer
                           else None)
        self.closed = False

    # Mapping -----------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = to_tensor(key, self.produce(key),
                                         self.specs[key])
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __contains__(self, key) -> bool:
        return key in self.specs

    def __repr__(self) -> str:
        return (f"<LazyStateDict: {len(self)} tensors, "
                f"{len(self._cache)} produced>")

    # producing ------------------------------------------------------------
    def produce(self, key: str):
        """The value of ``key`` (an array or tensor, possibly a view): the
        kept tensor when there is one, else a fresh one that is not kept."""
        if key in self._cache:
            return self._cache[key]
        if key not in self.specs:
            raise KeyError(key)
        if self.closed:
            raise ConversionError(
                f"weight {key!r}: the conversion was closed before this "
                "weight was read")
        return self._producers[key]()

    def materialize(self) -> dict[str, torch.Tensor]:
        """Every tensor, as a plain dict."""
        return {k: self[k] for k in self}

    def close(self) -> None:
        """Release the model file; unread weights cannot be read after."""
        self.closed = True
        if self._finalizer is not None:
            self._finalizer()

    @property
    def num_values(self) -> int:
        return sum(math.prod(s.shape) for s in self.specs.values())


def to_tensor(key: str, value, spec: Spec | None = None) -> torch.Tensor:
    """A contiguous, writable CPU tensor of ``value``, checked against (and
    cast to) ``spec``."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous()
    else:
        arr = np.asarray(value)
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = arr.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        t = torch.from_numpy(arr)
    if spec is not None:
        _check_shape(key, tuple(t.shape), spec)
        if t.dtype != spec.dtype:
            _check_cast(key, t.dtype, spec.dtype)
            t = t.to(spec.dtype)
    return t


def _check_shape(key: str, shape: tuple, spec: Spec) -> None:
    if shape != spec.shape:
        raise ConversionError(
            f"weight {key!r} has shape {shape}, the module built from the "
            f"model config expects {spec.shape}: the stored weights do not "
            "match the config")


def _check_cast(key: str, have: torch.dtype, want: torch.dtype) -> None:
    """Allow what ``load_state_dict`` would do without losing meaning:
    float to float, integer or bool to anything; refuse float to integer."""
    if have.is_floating_point and not want.is_floating_point:
        raise ConversionError(
            f"internal error: converted weight {key!r} is {have}, the "
            f"generated module expects {want}")


# -- streaming safetensors ---------------------------------------------------
def header(specs: dict[str, Spec], metadata: dict[str, str] | None = None
           ) -> bytes:
    """The length-prefixed, space-padded JSON header for ``specs``, with
    the tensors laid out in the order of ``specs``."""
    head: dict = {}
    if metadata:
        head["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key, spec in specs.items():
        if spec.dtype not in DTYPES:
            raise ConversionError(f"weight {key!r}: dtype {spec.dtype} "
                                  "cannot be written to safetensors")
        end = offset + spec.nbytes
        head[key] = {"dtype": DTYPES[spec.dtype][0],
                     "shape": list(spec.shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(head, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(path, specs: dict[str, Spec],
                      produce: Callable[[str], object],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write ``path`` (atomically: a temporary sibling renamed into place,
    removed on failure), producing one tensor at a time with
    ``produce(key)`` and writing it in blocks of at most :data:`BLOCK`
    bytes, so a transposed view is never copied whole."""
    path = Path(path)
    with _atomic(path, "wb") as f:
        f.write(header(specs, metadata))
        for key, spec in specs.items():
            value = produce(key)
            written = _write_tensor(f, key, value, spec)
            del value
            if written != spec.nbytes:
                raise ConversionError(
                    f"internal error: weight {key!r} wrote {written} "
                    f"bytes, expected {spec.nbytes}")
    return path


@contextlib.contextmanager
def _atomic(path: Path, mode: str):
    """A file object for ``path``, written as a temporary sibling that is
    renamed into place when the block ends and removed if it raises."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, file_mode())  # mkstemp's 0600 -> what open() gives
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_tensor(f, key: str, value, spec: Spec) -> int:
    np_dtype = DTYPES[spec.dtype][1]
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        _check_shape(key, tuple(t.shape), spec)
        if t.dtype != spec.dtype:
            _check_cast(key, t.dtype, spec.dtype)
            t = t.to(spec.dtype)
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        arr = t.numpy()
    else:
        arr = np.asarray(value)
        _check_shape(key, tuple(arr.shape), spec)
        have = _torch_dtype(arr.dtype)
        if have is None or (have.is_floating_point
                            and not spec.dtype.is_floating_point):
            raise ConversionError(
                f"internal error: converted weight {key!r} is {arr.dtype}, "
                f"the generated module expects {spec.dtype}")
        if spec.dtype == torch.bfloat16:  # numpy has no bfloat16
            arr = torch.from_numpy(np.ascontiguousarray(arr)).to(
                torch.bfloat16).view(torch.int16).numpy()
    written = 0
    for block in _blocks(arr, np_dtype):
        f.write(memoryview(block).cast("B"))
        written += block.nbytes
    return written


def _torch_dtype(dtype: np.dtype) -> torch.dtype | None:
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError:
        return None


def _blocks(arr: np.ndarray, dtype: np.dtype) -> Iterator[np.ndarray]:
    """C-contiguous pieces of ``arr`` cast to ``dtype``, in C order, each of
    at most about :data:`BLOCK` bytes (a whole row when a row is larger
    and cannot be split further)."""
    if arr.dtype == dtype and arr.flags.c_contiguous:
        yield arr.reshape(-1)  # no copy
        return
    if arr.ndim == 0 or arr.size * dtype.itemsize <= BLOCK:
        yield np.ascontiguousarray(arr, dtype=dtype).reshape(-1)
        return
    row = (arr.size // arr.shape[0]) * dtype.itemsize
    if row > BLOCK:
        for i in range(arr.shape[0]):
            yield from _blocks(arr[i], dtype)
        return
    step = max(1, BLOCK // max(row, 1))
    for i in range(0, arr.shape[0], step):
        yield np.ascontiguousarray(arr[i:i + step], dtype=dtype).reshape(-1)


# -- streaming torch.save ---------------------------------------------------
def write_torch(path, specs: dict[str, Spec],
                produce: Callable[[str], object]) -> Path:
    """Write a ``torch.save`` file of ``{key: tensor}`` (atomically), one
    tensor at a time.

    ``torch.save`` needs every tensor in memory.  Instead: save placeholders
    (``torch.empty``: address space, no pages touched) under
    ``torch.serialization.skip_data``, which lays out the zip with room for
    every storage; then write each produced tensor into its record and patch
    the record's CRC-32 in its data descriptor and the central directory.
    The result loads with ``torch.load(weights_only=True)`` (and
    ``mmap=True``) and passes a zip integrity test."""
    path = Path(path)
    with _atomic(path, "w+b") as f:
        if not hasattr(torch.serialization, "skip_data"):  # torch < 2.5
            torch.save({k: to_tensor(k, produce(k), s)
                        for k, s in specs.items()}, f)  # not bounded
            return path
        try:
            holders = {k: torch.empty(s.shape, dtype=s.dtype)
                       for k, s in specs.items()}
        except (RuntimeError, MemoryError) as exc:  # absurd config sizes
            total = sum(s.nbytes for s in specs.values())
            raise ConversionError(
                f"cannot lay out {total} bytes of weights for torch.save "
                f"({type(exc).__name__}); does the model config match "
                "its weights?") from None
        with torch.serialization.skip_data():
            torch.save(holders, f)
        del holders
        f.flush()
        records = _torch_records(f, len(specs))
        crcs = {}
        for (key, spec), rec in zip(specs.items(), records):
            if rec.file_size != spec.nbytes:
                raise ConversionError(
                    f"internal error: torch.save laid out {rec.file_size}"
                    f" bytes for {key!r}, expected {spec.nbytes}")
            f.seek(_data_start(f, rec))
            value = produce(key)
            crcs[rec.filename] = _CrcWriter(f)
            _write_tensor(crcs[rec.filename], key, value, spec)
            del value
        _patch_crcs(f, {n: w.crc for n, w in crcs.items()})
    return path


class _CrcWriter:
    def __init__(self, f):
        self.f = f
        self.crc = 0

    def write(self, data) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.f.write(data)


def _torch_records(f, count: int) -> list:
    """The zip entries of the storages ``data/0`` ... in key order."""
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        by_name = {}
        for info in z.infolist():
            head, _, name = info.filename.rpartition("/data/")
            if head and name.isdigit() and "/" not in head:
                by_name[int(name)] = info
    if sorted(by_name) != list(range(count)):
        raise ConversionError("internal error: torch.save wrote "
                              f"{len(by_name)} storages for {count} tensors")
    return [by_name[i] for i in range(count)]


def _data_start(f, info) -> int:
    f.seek(info.header_offset)
    head = f.read(30)
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _patch_crcs(f, crcs: dict[str, int]) -> None:
    """Write each record's CRC-32 where the zip keeps it: the local header
    or the data descriptor after the data, and the central directory."""
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        infos = {i.filename: i for i in z.infolist() if i.filename in crcs}
        cd = z.start_dir
    for name, info in infos.items():
        packed = struct.pack("<I", crcs[name])
        if info.flag_bits & 0x8:  # CRC in a data descriptor after the data
            at = _data_start(f, info) + info.compress_size
            f.seek(at)
            at += 4 if f.read(4) == b"PK\x07\x08" else 0
        else:
            at = info.header_offset + 14
        f.seek(at)
        f.write(packed)
    pos = cd
    while True:
        f.seek(pos)
        head = f.read(46)
        if len(head) < 46 or head[:4] != b"PK\x01\x02":
            break
        name_len, extra_len, comment_len = struct.unpack("<HHH", head[28:34])
        name = f.read(name_len).decode("utf-8")
        if name in crcs:
            f.seek(pos + 16)
            f.write(struct.pack("<I", crcs[name]))
        pos += 46 + name_len + extra_len + comment_len


__all__ = ["LazyStateDict", "Spec", "header", "to_tensor",
           "write_safetensors", "write_torch"]
