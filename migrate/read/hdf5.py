"""Safe, lazy access to Keras HDF5 files (legacy ``.h5`` and ``.weights.h5``).

Everything the readers take from an HDF5 file goes through this module:

* :func:`open_hdf5` opens a path or in-memory bytes read-only and turns
  h5py's errors into one-line :class:`ConversionError` messages;
* :func:`group` and :func:`dataset` walk a ``/``-separated path one link at
  a time and refuse soft links, external links, external storage, virtual
  datasets, non-numeric data and "shape bombs" (a huge declared size with
  almost nothing stored);
* :func:`lazy` wraps a dataset in a :class:`LazyArray` that reads nothing
  until :meth:`LazyArray.read` is called, so the file must stay open until
  the caller is done (``Source.close``);
* :func:`text_attr` and :func:`names_attr` decode attributes that may come
  back as ``str``, ``bytes``, object or fixed-length byte arrays, or as
  chunks ``layer_names0``, ``layer_names1``, ... when they were too large
  for one HDF5 object header.
"""
from __future__ import annotations

import functools
import io
import math
from typing import Iterator

import h5py
import numpy as np

from ..errors import ConversionError
from ..weights import LazyArray

# A dataset that declares more than this many bytes must store at least
# 1/_MAX_EXPANSION of them: real arrays (even compressed) do, bombs do not.
_BOMB_FLOOR = 1 << 30
_MAX_EXPANSION = 1000
_MAX_DEPTH = 64  # nesting of groups under one layer
_NUMERIC_KINDS = "biuf"  # Keras weights are never complex

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# h5py file name -> the name to show in messages (in-memory files have none)
_LABELS: dict[str, str] = {}


def open_hdf5(source, label: str) -> h5py.File:
    """Open ``source`` (a path or ``bytes``) read-only.

    ``label`` names the file in error messages (``"m.keras:
    model.weights.h5"``).
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            f = h5py.File(io.BytesIO(source), "r")
        else:
            f = h5py.File(source, "r")
    except (OSError, ValueError) as exc:
        raise ConversionError(
            f"{label}: cannot open as HDF5, the file is truncated or "
            f"corrupt ({first_line(exc)})") from None
    _LABELS[f.filename] = label
    return f


# What h5py raises when the bytes under a valid header are damaged
# (truncated heaps, bad B-trees, "message not aligned", ...).
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError,
             IndexError, OverflowError, UnicodeDecodeError)


def _corrupt(label: str, exc: BaseException) -> ConversionError:
    return ConversionError(f"{label}: cannot read, the HDF5 file is "
                           f"truncated or corrupt ({first_line(exc)})")


def _file_label(obj) -> str:
    try:
        name = obj.file.filename
    except Exception:  # a closed or broken object
        return "HDF5 file"
    return _LABELS.get(name, name)


def guarded(fn):
    """Turn h5py's errors on a damaged file inside ``fn`` (whose first
    argument is an h5py object) into one-line ConversionErrors."""
    @functools.wraps(fn)
    def wrapper(obj, *args, **kwargs):
        try:
            return fn(obj, *args, **kwargs)
        except ConversionError:
            raise
        except H5_ERRORS as exc:
            raise _corrupt(_file_label(obj), exc) from None
    return wrapper


def close_hdf5(f: h5py.File) -> None:
    _LABELS.pop(f.filename, None)
    f.close()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- attributes ------------------------------------------------------------
def _as_text(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


@guarded
def text_attr(obj, name: str) -> str | None:
    """A string attribute, or ``None`` when absent."""
    if name not in obj.attrs:
        return None
    value = obj.attrs[name]
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ConversionError(
                f"{_where(obj)}: attribute {name!r} is not a string")
        value = value.reshape(-1)[0]
    return _as_text(value)


@guarded
def names_attr(obj, name: str) -> list[str]:
    """A list-of-names attribute (``layer_names``, ``weight_names``).

    Reads the chunks ``name0``, ``name1``, ... when the attribute was split.
    A missing attribute reads as ``[]``; so does an empty one, which h5py
    returns as an empty float64 array.
    """
    if name in obj.attrs:
        chunks = [obj.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in obj.attrs:
            chunks.append(obj.attrs[f"{name}{len(chunks)}"])
    out: list[str] = []
    for chunk in chunks:
        values = np.asarray(chunk).reshape(-1)
        if values.size and values.dtype.kind not in "OSU":
            raise ConversionError(
                f"{_where(obj)}: attribute {name!r} does not hold names")
        out.extend(_as_text(v) for v in values)
    return out


# -- safe navigation --------------------------------------------------------
def _where(obj) -> str:
    name = obj.file.filename
    return f"{_LABELS.get(name, name)}:{obj.name}"


_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "SoftLink",
               h5py.h5l.TYPE_EXTERNAL: "ExternalLink"}


def _refuse_link(parent: h5py.Group, name: str, kind: int):
    label = _LINK_KINDS.get(kind, "user-defined link")
    raise ConversionError(f"{_where(parent)}/{name}: refusing an HDF5 "
                          f"{label}; Keras files never contain links")


def _open(parent: h5py.Group, name: bytes):
    """Wrap the object at hard link ``name`` of ``parent``.

    h5py's low-level calls: ``parent[name]`` goes through several
    high-level lookups per call, and a Keras file has thousands of
    links (this walk was most of the time spent reading a small model).
    """
    oid = h5py.h5o.open(parent.id, name)
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    if isinstance(oid, h5py.h5d.DatasetID):
        return h5py.Dataset(oid)
    return h5py.Datatype(oid)


def _link(parent: h5py.Group, name: str, path: str):
    """The object ``parent[name]``, refusing anything but a hard link."""
    if not name or name in (".", ".."):
        raise ConversionError(f"{_where(parent)}: bad path {path!r}")
    raw = name.encode("utf-8")
    links = parent.id.links
    if not links.exists(raw):
        return None
    kind = links.get_info(raw).type
    if kind != h5py.h5l.TYPE_HARD:
        _refuse_link(parent, name, kind)
    return _open(parent, raw)


def _links(grp: h5py.Group) -> list[tuple[bytes, int]]:
    """``(name, link type)`` of every link in ``grp``, in name order."""
    out: list[tuple[bytes, int]] = []
    grp.id.links.iterate(lambda name, info: out.append((name, info.type)),
                         info=True)
    return out


@guarded
def group(parent: h5py.Group, path: str, required: bool = True):
    """The group at ``path`` under ``parent`` (``None`` if absent and not
    ``required``)."""
    current = parent
    for name in path.split("/"):
        nxt = _link(current, name, path)
        if nxt is None:
            if required:
                raise ConversionError(
                    f"{_where(parent)}: no group {path!r} in the file")
            return None
        if not isinstance(nxt, h5py.Group):
            raise ConversionError(f"{_where(nxt)}: expected a group")
        current = nxt
    return current


@guarded
def dataset(parent: h5py.Group, path: str) -> h5py.Dataset:
    """The dataset at ``path`` under ``parent``, checked to be safe."""
    head, _, name = path.rpartition("/")
    owner = group(parent, head) if head else parent
    ds = _link(owner, name, path)
    if ds is None:
        raise ConversionError(
            f"{_where(parent)}: weight {path!r} is listed but not stored")
    if not isinstance(ds, h5py.Dataset):
        raise ConversionError(f"{_where(ds)}: expected a dataset")
    _check_dataset(ds)
    return ds


def _check_dataset(ds: h5py.Dataset) -> None:
    if ds.external:
        raise ConversionError(
            f"{_where(ds)}: refusing a dataset stored in external files")
    if ds.is_virtual:
        raise ConversionError(f"{_where(ds)}: refusing a virtual dataset")
    if ds.dtype.kind not in _NUMERIC_KINDS or ds.dtype.fields:
        raise ConversionError(
            f"{_where(ds)}: weights must be numeric, found dtype {ds.dtype}")
    declared = math.prod(ds.shape or ()) * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if declared > _BOMB_FLOOR and declared > _MAX_EXPANSION * stored:
        raise ConversionError(
            f"{_where(ds)}: declares {declared} bytes but stores only "
            f"{stored}; refusing a possible decompression bomb")


def datasets_under(root: h5py.Group) -> Iterator[tuple[str, h5py.Dataset]]:
    """Every dataset below ``root`` as ``(relative path, dataset)``, in
    name order, with the same checks as :func:`dataset`."""
    seen = set()

    def walk(grp: h5py.Group, prefix: str, depth: int):
        if grp.id in seen:
            return  # a hard link back to a visited group
        seen.add(grp.id)
        if depth > _MAX_DEPTH:
            raise ConversionError(f"{_where(grp)}: groups nested too deep")
        for raw, kind in _links(grp):
            name = raw.decode("utf-8")
            if kind != h5py.h5l.TYPE_HARD:
                _refuse_link(grp, name, kind)
            obj = _open(grp, raw)
            if isinstance(obj, h5py.Group):
                yield from walk(obj, f"{prefix}{name}/", depth + 1)
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(obj)
                yield prefix + name, obj

    try:
        yield from walk(root, "", 0)
    except ConversionError:
        raise
    except H5_ERRORS as exc:
        raise _corrupt(_file_label(root), exc) from None


# -- lazy arrays --------------------------------------------------------------
@guarded
def lazy(ds: h5py.Dataset) -> LazyArray:
    """A :class:`LazyArray` that reads ``ds`` when asked, not before."""
    where = ds.name.lstrip("/")
    label = _where(ds)

    def read() -> np.ndarray:
        try:
            return ds[()]
        except H5_ERRORS as exc:
            raise ConversionError(
                f"{label}: cannot read weight ({first_line(exc)})") from None

    return LazyArray(tuple(ds.shape), str(ds.dtype), read, where)
