"""Safe, lazy access to Keras HDF5 files (legacy ``.h5`` and ``.weights.h5``).

Everything the readers take from an HDF5 file goes through this module:

* :func:`open_hdf5` opens a path or in-memory bytes read-only and turns
  h5py's errors into one-line :class:`ConversionError` messages;
* the first lookup in a file lists all its links at once, with HDF5's
  own visitors (:class:`_Tree`); :func:`group`, :func:`has_group`,
  :func:`dataset` and :func:`datasets_under` then check every component of
  a ``/``-separated path in that list, and refuse soft, external and
  user-defined links, second hard links to one object (cycles), deep
  nesting, external storage, virtual datasets, non-numeric data and
  "shape bombs" (a huge declared size with almost nothing stored);
* :func:`dataset` and :func:`datasets_under` give :class:`LazyArray`
  objects that read nothing until :meth:`LazyArray.read` is called, so the
  file must stay open until the caller is done (``Source.close``);
* :func:`text_attr` and :func:`names_attr` decode attributes that may come
  back as ``str``, ``bytes``, object or fixed-length byte arrays, or as
  chunks ``layer_names0``, ``layer_names1``, ... when they were too large
  for one HDF5 object header.
"""
from __future__ import annotations

import functools
import io
import math

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

# HDF5 file number -> the name to show in messages (in-memory files have
# none); numbers are not reused while the process lives
_LABELS: dict[int, str] = {}


def open_hdf5(source, label: str) -> h5py.File:
    """Open ``source`` (a path, ``bytes`` or a binary file object)
    read-only.

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
    _LABELS[f.id.fileno] = label
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
        label = _LABELS.get(obj.id.fileno)
        return label if label is not None else obj.file.filename
    except Exception:  # a closed or broken object
        return "HDF5 file"


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
    _LABELS.pop(f.id.fileno, None)
    _TREES.pop(f.id.fileno, None)
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
    return f"{_file_label(obj)}:{obj.name}"


_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "SoftLink",
               h5py.h5l.TYPE_EXTERNAL: "ExternalLink"}
# Kinds of entries in a _Tree besides h5py.h5l's link types.
_GROUP, _DATASET, _OTHER, _ALIAS = "group", "dataset", "other", "alias"
_MAX_LINKS = 2_000_000  # a Keras file of 10,000 layers has ~100,000
_MAX_PATH_DEPTH = 4 * _MAX_DEPTH  # components of a path from the root


class _Tree:
    """Every link of one HDF5 file, listed in two passes of HDF5's own
    visitors (``H5Lvisit`` for link types, ``H5Ovisit`` for object types).

    Walking a file with h5py's high-level API costs several lookups per
    link, and a small model's file has thousands: that walk was most of
    the time spent converting EfficientNetB0.  The visitors call back
    before descending into a group, so a path deeper than
    ``_MAX_PATH_DEPTH`` stops them before HDF5 recurses further (no C
    stack exhaustion on a hostile file).  Neither revisits an object
    reached by a second hard link (no cycles).
    """

    def __init__(self, f: h5py.File):
        self.kind: dict[str, object] = {"": _GROUP}
        self.children: dict[str, list[str]] = {"": []}
        self.refused = ""
        links: list[tuple[bytes, int]] = []

        def on_link(name: bytes, info):
            links.append((name, info.type))
            return self._stop(name, len(links))

        types: dict[bytes, int] = {}

        def on_object(name: bytes, info):
            types[name] = info.type
            return self._stop(name, len(types))

        f.id.links.visit(on_link, info=True)
        if not self.refused:
            h5py.h5o.visit(f.id, on_object, info=True)
        if self.refused:
            raise ConversionError(self.refused)
        for raw, link_type in links:
            path = raw.decode("utf-8", "replace")
            parent, _, name = path.rpartition("/")
            self.children.setdefault(parent, []).append(name)
            if link_type != h5py.h5l.TYPE_HARD:
                self.kind[path] = _LINK_KINDS.get(link_type,
                                                  "user-defined link")
            elif raw not in types:
                self.kind[path] = _ALIAS
            else:
                self.kind[path] = {h5py.h5o.TYPE_GROUP: _GROUP,
                                   h5py.h5o.TYPE_DATASET: _DATASET}.get(
                                       types[raw], _OTHER)

    def _stop(self, name: bytes, count: int):
        # An exception must not cross HDF5's C frames: a true return value
        # stops the visit, and __init__ raises afterwards.
        if count > _MAX_LINKS:
            self.refused = (f"more than {_MAX_LINKS:,} HDF5 objects, not a "
                            "Keras file")
        elif name.count(b"/") >= _MAX_PATH_DEPTH:
            self.refused = "groups nested too deep"
        return True if self.refused else None


# h5py file number -> its _Tree, built on first use
_TREES: dict[int, _Tree] = {}


def _tree(obj) -> _Tree:
    key = obj.id.fileno
    tree = _TREES.get(key)
    if tree is None:
        try:
            tree = _Tree(obj.file)
        except ConversionError as exc:
            raise ConversionError(f"{_file_label(obj)}: {exc}") from None
        _TREES[key] = tree
    return tree


def _rel(obj) -> str:
    return obj.name.strip("/")


def _kind(tree: _Tree, obj, full: str):
    kind = tree.kind.get(full)
    if kind is not None and kind not in (_GROUP, _DATASET, _OTHER):
        if kind == _ALIAS:
            raise ConversionError(
                f"{_file_label(obj)}:/{full}: refusing a second hard link "
                "to one HDF5 object; Keras files never contain links")
        raise ConversionError(f"{_file_label(obj)}:/{full}: refusing an HDF5 "
                              f"{kind}; Keras files never contain links")
    return kind


def _open(obj, full: str):
    """The object at ``full`` (a path from the root of ``obj``'s file),
    opened with h5py's low-level call and wrapped (an absolute path is
    resolved from the root whatever object it is given)."""
    oid = h5py.h5o.open(obj.id, ("/" + full).encode("utf-8"))
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    if isinstance(oid, h5py.h5d.DatasetID):
        return h5py.Dataset(oid)
    return h5py.Datatype(oid)


def _find(parent: h5py.Group, path: str, want: str):
    """``(path from the root, kind)`` of ``path`` under ``parent``, every
    component checked; kind is ``None`` when something is absent."""
    tree = _tree(parent)
    full = _rel(parent)
    names = path.split("/")
    for i, name in enumerate(names):
        if not name or name in (".", ".."):
            raise ConversionError(f"{_where(parent)}: bad path {path!r}")
        full = f"{full}/{name}" if full else name
        kind = _kind(tree, parent, full)
        if kind is None:
            return full, None
        if i < len(names) - 1 and kind != _GROUP:
            raise ConversionError(
                f"{_file_label(parent)}:/{full}: expected a group")
    if kind != want:
        raise ConversionError(f"{_file_label(parent)}:/{full}: expected a "
                              f"{want}")
    return full, kind


@guarded
def group(parent: h5py.Group, path: str, required: bool = True):
    """The group at ``path`` under ``parent`` (``None`` if absent and not
    ``required``)."""
    full, kind = _find(parent, path, _GROUP)
    if kind is None:
        if required:
            raise ConversionError(
                f"{_where(parent)}: no group {path!r} in the file")
        return None
    return _open(parent, full)


@guarded
def dataset(parent: h5py.Group, path: str) -> LazyArray:
    """The dataset at ``path`` under ``parent``, checked to be safe, as a
    :class:`LazyArray` (nothing is read yet)."""
    full, kind = _find(parent, path, _DATASET)
    if kind is None:
        raise ConversionError(
            f"{_where(parent)}: weight {path!r} is listed but not stored")
    return _lazy(_open(parent, full), full)


def _check_dataset(ds: h5py.Dataset, full: str) -> tuple[tuple, np.dtype]:
    """``(shape, dtype)`` of ``ds`` (at ``full``) once it is checked."""
    plist = ds.id.get_create_plist()
    if plist.get_external_count():
        raise ConversionError(f"{_file_label(ds)}:/{full}: refusing a "
                              "dataset stored in external files")
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise ConversionError(
            f"{_file_label(ds)}:/{full}: refusing a virtual dataset")
    dtype = ds.id.dtype  # the low-level properties: h5py's cost more
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields:
        raise ConversionError(f"{_file_label(ds)}:/{full}: weights must be "
                              f"numeric, found dtype {dtype}")
    shape = tuple(ds.id.shape)
    declared = math.prod(shape) * dtype.itemsize
    if declared > _BOMB_FLOOR:
        stored = ds.id.get_storage_size()
        if declared > _MAX_EXPANSION * stored:
            raise ConversionError(
                f"{_file_label(ds)}:/{full}: declares {declared} bytes but "
                f"stores only {stored}; refusing a possible decompression "
                "bomb")
    return shape, dtype


@guarded
def has_group(parent: h5py.Group, path: str) -> bool:
    """Whether ``path`` under ``parent`` is a group (checked as
    :func:`group` checks it, without opening it)."""
    return _find(parent, path, _GROUP)[1] is not None


@guarded
def datasets_under(root: h5py.Group,
                   path: str = "") -> list[tuple[str, LazyArray]]:
    """Every dataset below ``root`` (or below its group ``path``) as
    ``(relative path, LazyArray)``, in name order, with the same checks as
    :func:`dataset`."""
    tree = _tree(root)
    out: list[tuple[str, LazyArray]] = []
    start = _rel(root)
    if path:
        start = _find(root, path, _GROUP)[0]

    def walk(full: str, prefix: str, depth: int):
        if depth > _MAX_DEPTH:
            raise ConversionError(
                f"{_file_label(root)}:/{start}: groups nested too deep")
        for name in tree.children.get(full, ()):
            sub = f"{full}/{name}" if full else name
            kind = _kind(tree, root, sub)
            if kind == _GROUP:
                walk(sub, f"{prefix}{name}/", depth + 1)
            elif kind == _DATASET:
                out.append((prefix + name, _lazy(_open(root, sub), sub)))

    walk(start, "", 0)
    return out


# -- lazy arrays --------------------------------------------------------------
def read_array(ds: h5py.Dataset) -> np.ndarray:
    """All of ``ds``, through h5py's low-level read (``ds[()]`` spends
    longer on selection checks than on reading a small weight)."""
    dsid = ds.id
    out = np.empty(dsid.shape, dsid.dtype)
    if out.size:
        dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def _lazy(ds: h5py.Dataset, full: str) -> LazyArray:
    """A :class:`LazyArray` that reads ``ds`` (at ``full``, checked here)
    when asked, not before."""
    shape, dtype = _check_dataset(ds, full)
    label = f"{_file_label(ds)}:/{full}"

    def read() -> np.ndarray:
        try:
            return read_array(ds)
        except H5_ERRORS as exc:
            raise ConversionError(
                f"{label}: cannot read weight ({first_line(exc)})") from None

    return LazyArray(shape, str(dtype), read, full)
