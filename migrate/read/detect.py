"""Tell Keras file formats apart by their content, never by the extension.

:func:`sniff` looks at the first bytes of a path and answers ``"zip"``,
``"hdf5"`` or ``"json"``; :func:`hdf5_kind` tells the four HDF5 layouts
apart by their root attributes and groups (spec section 1.0):

==================  =====================================================
``"model"``         legacy full model: root attribute ``model_config``
``"legacy_weights"`` Keras 2 ``save_weights``: root attribute ``layer_names``
``"v3_weights"``    Keras 3 ``.weights.h5``: root group ``layers``
==================  =====================================================

A directory holding ``saved_model.pb`` is a SavedModel (read by
:mod:`.savedmodel`).  Other directories and files that are none of these
are refused with a message that says what the file looks like instead (a
file of a SavedModel, an empty file...).
"""
from __future__ import annotations

import os

import h5py

from ..errors import ConversionError
from .hdf5 import HDF5_SIGNATURE, guarded

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# HDF5 may sit after a user block of 512, 1024, 2048, ... bytes.
_USER_BLOCKS = [0] + [512 << i for i in range(12)]


def sniff(path: str) -> str:
    """``"zip"``, ``"hdf5"`` or ``"json"`` for a readable file at ``path``,
    ``"savedmodel"`` for a directory holding ``saved_model.pb``."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        raise ConversionError(f"{path}: is a directory, not a Keras model "
                              "(.keras, .h5, .json or a SavedModel "
                              "directory)")
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] in _ZIP_MAGIC:
                return "zip"
            for offset in _USER_BLOCKS:
                if offset + 8 > size:
                    break
                f.seek(offset)
                if f.read(8) == HDF5_SIGNATURE:
                    return "hdf5"
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read ({exc.strerror})") \
            from None
    if size == 0:
        raise ConversionError(f"{path}: is an empty file")
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"{"):
        return "json"
    if os.path.basename(path) in ("saved_model.pb", "keras_metadata.pb"):
        raise ConversionError(
            f"{path}: is part of a SavedModel; convert its directory "
            f"({os.path.dirname(path) or '.'})")
    raise ConversionError(
        f"{path}: is not a Keras model file (not a .keras zip, an HDF5 "
        "file or JSON)")


@guarded
def hdf5_kind(f: h5py.File) -> str | None:
    """Which Keras HDF5 layout ``f`` has, or ``None`` if none."""
    attrs = f.attrs
    if "model_config" in attrs:
        return "model"
    if "layer_names" in attrs or "layer_names0" in attrs:
        return "legacy_weights"
    if "layers" in f:
        return "v3_weights"
    return None
