"""Read a Keras model file into a :class:`migrate.graph.Graph` with lazy
weights, without TensorFlow or Keras.

    with open_model("model.keras") as src:
        graph = src.graph          # layers, nodes, inputs, outputs
        ...                        # weights are read on demand

Accepted inputs (told apart by content, not by extension):

==================== ==================================================
``format``           ``open_model`` arguments
==================== ==================================================
``"keras"``          a ``.keras`` zip archive (Keras 3, or tf-keras >= 2.13)
``"h5"``             a legacy full-model HDF5 file (``model.save("m.h5")``)
``"json+h5"``        ``model.to_json()`` text plus ``weights=`` a Keras 2
                     ``save_weights`` HDF5 file
``"json+weights.h5"`` ``model.to_json()`` text plus ``weights=`` a Keras 3
                     ``.weights.h5`` file
``"savedmodel"``     a tf.keras SavedModel directory (``saved_model.pb``,
                     ``keras_metadata.pb``, ``variables/``)
==================== ==================================================

Anything else is refused with a one-line :class:`ConversionError`: a
SavedModel without Keras metadata, a weights-only file given as the model,
a JSON config without weights, a truncated or corrupt file, HDF5 links or
external data.

Nothing from a file is ever unpickled, unmarshalled or evaluated; zip members
are read in place (stored) or in memory with size limits (compressed).  The
modules: :mod:`.detect` (sniffing), :mod:`.archive` (zip), :mod:`.hdf5`
(safe lazy HDF5), :mod:`.config` (config tree and normalisation),
:mod:`.inline` (tree -> graph), :mod:`.legacy_weights` and
:mod:`.v3_weights` (weights), :mod:`.savedmodel` with
:mod:`.tensor_bundle` and :mod:`.protobuf` (SavedModel directories).
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass, field

import h5py

from ..errors import ConversionError
from ..graph import Graph
from .archive import JSON_LIMIT, read_archive
from .config import load_json, parse_model
from .detect import hdf5_kind, sniff
from .hdf5 import close_hdf5, group, open_hdf5, text_attr
from .inline import build_graph
from .legacy_weights import attach_legacy
from .training import TrainingSource, from_archive, from_h5
from .savedmodel import (attach_savedmodel, compiled, open_checkpoint,
                         read_metadata, digest_files)
from .v3_weights import attach_v3

_READ_AHEAD = 1 << 16  # bytes buffered over a .keras archive's weights

FORMATS = ("keras", "h5", "json+h5", "json+weights.h5", "savedmodel")


@dataclass
class Source:
    """A model read from disk.  Keep it open while weights are read."""

    path: str  # the model path as given (a directory for a SavedModel)
    weights_path: str | None
    format: str  # one of FORMATS
    keras_version: str  # "3.15.1", "2.21.0"; "" when the files do not say
    _digest: "_Digest | str" = field(repr=False)
    graph: Graph
    _files: list = field(default_factory=list, repr=False)
    # the compile config and optimizer variables (:mod:`.training`), or
    # None when the file was saved uncompiled or its format has none
    training: "TrainingSource | None" = None

    @property
    def sha256(self) -> str:
        """Of the file at ``path`` (hashed in a background thread while
        the model is read and translated); of a SavedModel, of the files
        read, named and in order (:func:`.savedmodel.digest_files`)."""
        if isinstance(self._digest, _Digest):
            self._digest = self._digest.result()
        return self._digest

    def close(self) -> None:
        """Close the HDF5 files; lazy weights cannot be read after this."""
        while self._files:
            f = self._files.pop()  # last opened first: HDF5 before its window
            if isinstance(f, h5py.File):
                close_hdf5(f)
            else:
                f.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_model(path, weights=None) -> Source:
    """Read the model at ``path`` (and its weights file, for JSON)."""
    path = os.fspath(path)
    weights = os.fspath(weights) if weights is not None else None
    kind = sniff(path)
    files: list = []
    extra: dict = {}
    digest = _Digest(digest_files(path) if kind == "savedmodel" else
                     [(None, path)])
    try:
        if kind == "savedmodel":
            _no_weights_arg(path, weights, "a SavedModel directory")
            fmt, version, graph = _read_savedmodel(path, files, extra)
        elif kind == "zip":
            _no_weights_arg(path, weights, "a .keras archive")
            fmt, version, graph = _read_keras(path, files, extra)
        elif kind == "hdf5":
            fmt, version, graph = _read_h5(path, weights, files, extra)
        else:
            fmt, version, graph = _read_json(path, weights, files)
    except BaseException:
        Source(path, weights, "", "", "", None, files).close()
        raise
    return Source(path, weights, fmt, version, digest, graph, files,
                  extra.get("training"))


def _read_keras(path, files, extra):
    archive = read_archive(path)
    weights = archive.weights
    if not isinstance(weights, bytes):
        # HDF5 reads metadata in thousands of small pieces (EfficientNetB0:
        # 2,700 under 8 KiB); a buffer serves most from memory, one read
        # per 64 KiB, and passes big reads straight to the window
        weights = io.BufferedReader(weights, _READ_AHEAD)
        files.append(weights)  # closing it closes the window
    label = f"{path}: model.weights.h5"
    spec = parse_model(archive.config, path)  # its errors say more
    f = open_hdf5(weights, label)
    files.append(f)
    if hdf5_kind(f) != "v3_weights":
        raise ConversionError(f"{label}: not in the Keras 3 weights layout")
    graph = build_graph(spec, path, archive.keras_version, "keras")
    attach_v3(spec, f, label, graph.keras_major)
    extra["training"] = from_archive(archive.config, f, spec)
    return "keras", archive.keras_version, graph


def _read_savedmodel(path, files, extra):
    entry, version, layer_names = read_metadata(path)
    spec = parse_model(entry, path)
    bundle = open_checkpoint(path)
    files.append(bundle)
    graph = build_graph(spec, path, version, "savedmodel")
    attach_savedmodel(spec, bundle, layer_names, path)
    if compiled(path):
        extra["training"] = TrainingSource("savedmodel", {}, warnings=[
            "the SavedModel was saved compiled, but its compile config and "
            "optimizer state are not read (no training.py); convert the "
            "model's .keras or .h5 file for them"])
    return "savedmodel", version, graph


def _read_h5(path, weights, files, extra):
    f = open_hdf5(path, path)
    files.append(f)
    kind = hdf5_kind(f)
    if kind in ("legacy_weights", "v3_weights"):
        raise ConversionError(
            f"{path}: is a weights-only file (save_weights) with no model "
            "config; pass the model's JSON config (model.to_json()) as the "
            "model and this file as the weights")
    if kind != "model":
        raise ConversionError(f"{path}: HDF5 file without a model_config "
                              "attribute, not a Keras model")
    _no_weights_arg(path, weights, "a full-model .h5 file")
    config = load_json(text_attr(f, "model_config"), path)
    root = group(f, "model_weights")
    version = (text_attr(f, "keras_version")
               or text_attr(root, "keras_version") or "")
    spec = parse_model(config, path)
    graph = build_graph(spec, path, version, "h5")
    attach_legacy(spec, root, path)
    extra["training"] = from_h5(f, path, spec, graph.keras_major)
    return "h5", version, graph


def _read_json(path, weights, files):
    config = load_json(_read_text(path), path)
    if weights is None:
        raise ConversionError(
            f"{path}: a JSON config holds only the architecture; pass its "
            "weights file too (a save_weights .h5 or .weights.h5)")
    if not os.path.exists(weights):
        raise ConversionError(f"{weights}: weights file not found")
    if _sniff_weights(weights) != "hdf5":
        raise ConversionError(
            f"{weights}: weights must be an HDF5 file written by "
            "save_weights (a .keras archive is a whole model: convert it "
            "on its own)")
    f = open_hdf5(weights, weights)
    files.append(f)
    kind = hdf5_kind(f)
    if kind == "model":
        raise ConversionError(
            f"{weights}: is a full model file, not a weights file; convert "
            "it on its own, without the JSON config")
    if kind is None:
        raise ConversionError(f"{weights}: HDF5 file without Keras weights "
                              "(no layer_names attribute or layers group)")
    version = str(config.get("keras_version")
                  or text_attr(f, "keras_version") or "")
    fmt = "json+h5" if kind == "legacy_weights" else "json+weights.h5"
    spec = parse_model(config, path)
    graph = build_graph(spec, path, version, fmt)
    if kind == "legacy_weights":
        attach_legacy(spec, f, weights)
    else:
        attach_v3(spec, f, weights, graph.keras_major)
    return fmt, version, graph


def _sniff_weights(weights) -> str:
    """:func:`sniff` for the weights of a JSON config: a refusal names
    what a weights file must be, not what a model file is."""
    try:
        return sniff(weights)
    except ConversionError as exc:
        if "not a Keras model" not in str(exc):
            raise  # no such file, empty, cannot read: true of any file
        raise ConversionError(
            f"{weights}: is not a Keras weights file (expected an HDF5 "
            "file written by save_weights: .weights.h5 or .h5)") from None


def _no_weights_arg(path, weights, what):
    if weights is not None:
        raise ConversionError(
            f"{path}: is {what}, which holds its own weights; do not pass a "
            f"separate weights file ({weights})")


def _read_text(path) -> bytes:
    if os.path.getsize(path) > JSON_LIMIT:
        raise ConversionError(f"{path}: JSON config over the "
                              f"{JSON_LIMIT >> 20} MiB limit")
    with open(path, "rb") as f:
        return f.read()


class _Digest:
    """The SHA-256 of a file, computed in a thread (hashlib releases the
    GIL on large blocks, so it overlaps with reading the model).  Given
    several ``(name, path)`` files, each name and size is hashed before
    its bytes; a single unnamed file hashes to its plain SHA-256."""

    def __init__(self, files: list):
        self._files = files
        self._path = files[0][1] if files else ""
        self._value: str | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="keras2torch-sha256")
        self._thread.start()

    def _run(self) -> None:
        try:
            h = hashlib.sha256()
            for name, path in self._files:
                self._path = path
                with open(path, "rb") as f:
                    if name is not None:
                        size = os.fstat(f.fileno()).st_size
                        h.update(f"{name}\0{size}\0".encode())
                    for block in iter(lambda: f.read(4 << 20), b""):
                        h.update(block)
            self._value = h.hexdigest()
        except OSError as exc:
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise ConversionError(f"{self._path}: cannot read "
                                  f"({self._error.strerror})")
        return self._value


__all__ = ["FORMATS", "Source", "open_model"]
