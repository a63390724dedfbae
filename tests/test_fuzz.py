"""Fuzz the readers and the translator with mutated real models.

Each example starts from a small committed fixture and mutates its config
(dropped and replaced keys, wrong types, huge/negative/zero dimensions,
deep nesting, random class names, rewired or cyclic references), its
weights file (shapes, dtypes, missing or renamed datasets, attributes,
random bytes, truncation) or its ``.keras`` archive, then converts it and
reads every weight.  The only exception allowed out is
:class:`migrate.ConversionError`, with a one-line message.

CI runs a few hundred examples per test (derandomized, so every run is the
same).  For a long local run: ``K2T_FUZZ_EXAMPLES=5000 python -m pytest
tests/test_fuzz.py``.
"""
import copy
import json
import os
import shutil
import warnings
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migrate
from migrate.errors import ConversionError
from migrate.rules import registry

from conftest import fixture_dir

EXAMPLES = int(os.environ.get("K2T_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))

CASES = ["mlp", "small_cnn", "shared", "nested", "two_io", "ops",
         "rnn_state", "lstm_text_classifier", "transformer_encoder",
         "seq_noinput", "norms", "rnn_masked", "conv_sweep"]
JSON_CASES = [(f"{b}_{c}", w) for c in CASES
              for b, w in (("k3", "model.weights.h5"),
                           ("k2", "model_weights.h5"))
              if (fixture_dir(f"{b}_{c}") / w).exists()]
KERAS_CASES = [f"k3_{c}" for c in CASES
               if (fixture_dir(f"k3_{c}") / "model.keras").exists()]
CONFIGS = {case: json.loads((fixture_dir(case) / "model.json").read_text())
           for case, _ in JSON_CASES}
CLASS_NAMES = sorted({k.rsplit(".", 1)[-1] for k in registry.RULES}) + [
    "Lambda", "Functional", "Sequential", "InputLayer", "Model", "Nope",
    "keras.src.ops.numpy.Add", "Custom>Thing", ""]
DIM_KEYS = ["units", "filters", "kernel_size", "strides", "pool_size",
            "batch_shape", "shape", "target_shape", "input_dim",
            "output_dim", "num_heads", "key_dim", "dims", "axis", "n",
            "size", "rate", "groups", "padding", "cropping"]


def convert_fully(model, weights=None) -> None:
    """Convert and read every weight; only ConversionError may escape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with migrate.convert(model, weights) as conv:
                conv.module()
    except ConversionError as exc:
        assert "\n" not in str(exc), str(exc)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# -- config mutations ------------------------------------------------------
leaf_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(CLASS_NAMES),
    st.lists(st.one_of(st.none(), st.integers(-2, 10 ** 6)), max_size=5))
values = st.recursive(
    leaf_values,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner,
                                            max_size=3)),
    max_leaves=12)
dims = st.sampled_from([0, -1, -7, 2 ** 31, 2 ** 40, 10 ** 12, 2 ** 64,
                        [0], [2 ** 40, 2 ** 40], [None] * 9, [-1, -1],
                        "3", 3.5, True, None, [], {}])
mutation = st.tuples(
    st.sampled_from(["replace", "delete", "class_name", "dim", "rewire",
                     "nest", "swap", "duplicate", "drop_layer"]),
    st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), values, dims,
    st.sampled_from(CLASS_NAMES))


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _get(value, path):
    for k in path:
        value = value[k]
    return value


def _layer_lists(config):
    return [p for p in _paths(config)
            if p and p[-1] == "layers" and isinstance(_get(config, p), list)]


def _layer_names(config) -> list[str]:
    return [_get(config, p + ("name",)) for p in _paths(config)
            if len(p) >= 2 and p[-1] == "config" and p[-3:-2] == ("layers",)
            and isinstance(_get(config, p), dict)
            and isinstance(_get(config, p).get("name"), str)] or ["x"]


def mutate(config, op, a, b, value, dim, cls):
    paths = list(_paths(config))[1:]
    path = paths[a % len(paths)]
    parent, key = _get(config, path[:-1]), path[-1]
    if op == "replace":
        parent[key] = value
    elif op == "delete":
        del parent[key]
    elif op == "class_name":
        hits = [p for p in paths if p[-1] == "class_name"]
        if hits:
            p = hits[a % len(hits)]
            _get(config, p[:-1])["class_name"] = cls
    elif op == "dim":
        hits = [p for p in paths if p[-1] in DIM_KEYS]
        if hits:
            p = hits[a % len(hits)]
            _get(config, p[:-1])[p[-1]] = dim
    elif op == "rewire":  # a reference names another layer: cycles, self
        hits = [p for p in paths if any(k in p for k in (
            "inbound_nodes", "input_layers", "output_layers"))
            and isinstance(_get(config, p), str)]
        if hits:
            p = hits[a % len(hits)]
            names = _layer_names(config)
            _get(config, p[:-1])[p[-1]] = names[b % len(names)]
    elif op == "nest":
        for _ in range(1 + b % 300):
            parent[key] = [parent[key]] if b % 2 else {"x": parent[key]}
    elif op in ("swap", "duplicate", "drop_layer"):
        lists = _layer_lists(config)
        if lists:
            layers = _get(config, lists[a % len(lists)])
            if not layers:
                return config
            i, j = a % len(layers), b % len(layers)
            if op == "swap":
                layers[i], layers[j] = layers[j], layers[i]
            elif op == "duplicate":
                layers.insert(j, copy.deepcopy(layers[i]))
            else:
                del layers[i]
    return config


@FUZZ
@given(case=st.sampled_from(JSON_CASES),
       mutations=st.lists(mutation, min_size=1, max_size=4),
       as_h5=st.booleans())
def test_fuzz_configs(workdir, case, mutations, as_h5):
    name, weights = case
    config = copy.deepcopy(CONFIGS[name])
    for m in mutations:
        config = mutate(config, *m)
    text = json.dumps(config)
    if as_h5 and (fixture_dir(name) / "model.h5").exists():
        model = workdir / "config.h5"
        shutil.copy(fixture_dir(name) / "model.h5", model)
        with h5py.File(model, "a") as f:
            f.attrs["model_config"] = text
        convert_fully(model)
    else:
        model = workdir / "config.json"
        model.write_text(text)
        convert_fully(model, fixture_dir(name) / weights)


# -- weight file mutations ---------------------------------------------------
weight_mutation = st.tuples(
    st.sampled_from(["delete", "shape", "dtype", "scalar", "values",
                     "to_group", "group_to_data", "attr", "rename",
                     "extra", "bytes", "truncate"]),
    st.integers(0, 10 ** 6),
    st.lists(st.integers(0, 9), max_size=4),
    st.sampled_from(["f2", "f8", "i4", "u1", "?", "c8", "S3", "O", "V4"]),
    st.lists(st.integers(0, 255), min_size=1, max_size=16))


def _objects(f, kind):
    out = []
    f.visititems(lambda n, o: out.append(n) if isinstance(o, kind) else None)
    return out


def mutate_h5(path, op, a, shape, dtype, noise):
    if op in ("bytes", "truncate"):
        data = bytearray(path.read_bytes())
        if not data:
            return
        if op == "truncate":
            data = data[:a % len(data)]
        else:
            for k, byte in enumerate(noise):
                data[(a + k * 7919) % len(data)] = byte
        path.write_bytes(bytes(data))
        return
    with h5py.File(path, "a") as f:
        datasets = _objects(f, h5py.Dataset)
        groups = _objects(f, h5py.Group)
        name = datasets[a % len(datasets)] if datasets else None
        if op == "delete" and name:
            del f[name]
        elif op == "shape" and name:
            del f[name]
            f[name] = np.zeros(shape, "f4")
        elif op == "dtype" and name:
            old = np.asarray(f[name][()])
            del f[name]
            if dtype == "O":
                f[name] = np.array(["x"] * max(1, old.size),
                                   dtype=h5py.string_dtype())
            else:
                f[name] = np.zeros(old.shape, dtype)
        elif op == "scalar" and name:
            del f[name]
            f[name] = np.float32(noise[0])
        elif op == "values" and name:
            old = np.asarray(f[name][()], "f4").copy()
            if old.size:
                old.flat[0] = [np.nan, np.inf, -np.inf, 3e38][a % 4]
            del f[name]
            f[name] = old
        elif op == "to_group" and name:
            del f[name]
            f.create_group(name)
        elif op == "group_to_data" and groups:
            g = groups[a % len(groups)]
            del f[g]
            f[g] = np.zeros(3, "f4")
        elif op == "attr":
            owners = [f] + [f[g] for g in groups]
            owner = owners[a % len(owners)]
            keys = sorted(owner.attrs)
            if keys:
                key = keys[a % len(keys)]
                owner.attrs[key] = [
                    np.array([b"nope", b"x"]), np.array([1, 2]), b"",
                    np.array([b"a/../b"]), 3.5,
                    np.array([b"\xff\xfe"])][noise[0] % 6]
        elif op == "rename" and name:
            f.move(name, name + "_renamed")
        elif op == "extra":
            where = groups[a % len(groups)] if groups else "/"
            f[f"{where}/extra_{a}"] = np.zeros(shape, "f4")


@FUZZ
@given(case=st.sampled_from(JSON_CASES + [(c, None) for c in (
           "k2_mlp", "k2_small_cnn", "k2_nested", "k3_two_io")]),
       mutations=st.lists(weight_mutation, min_size=1, max_size=3))
def test_fuzz_weight_files(workdir, case, mutations):
    name, weights = case
    target = workdir / (weights or "model.h5")
    shutil.copy(fixture_dir(name) / (weights or "model.h5"), target)
    for m in mutations:
        try:
            mutate_h5(target, *m)
        except (OSError, KeyError, ValueError, TypeError, RuntimeError):
            break  # the file is already too broken for h5py to write
    if weights is None:
        convert_fully(target)
    else:
        convert_fully(fixture_dir(name) / "model.json", target)


# -- .keras archives -------------------------------------------------------
@FUZZ
@given(case=st.sampled_from(KERAS_CASES),
       mode=st.sampled_from(["config", "config", "bytes", "truncate",
                             "members"]),
       mutations=st.lists(mutation, min_size=1, max_size=3),
       where=st.integers(0, 10 ** 6),
       noise=st.lists(st.integers(0, 255), min_size=1, max_size=16),
       names=st.lists(st.sampled_from([
           "config.json", "metadata.json", "model.weights.h5",
           "model.weights.npz", "../x", "assets/a", "CONFIG.JSON"]),
           max_size=3))
def test_fuzz_archives(workdir, case, mode, mutations, where, noise, names):
    src = fixture_dir(case) / "model.keras"
    target = workdir / "model.keras"
    if mode in ("config", "members"):
        with zipfile.ZipFile(src) as z:
            members = {i.filename: (i, z.read(i)) for i in z.infolist()}
        if mode == "config":
            config = json.loads(members["config.json"][1])
            for m in mutations:
                config = mutate(config, *m)
            info = members["config.json"][0]
            members["config.json"] = (info, json.dumps(config).encode())
        else:
            for n in names:
                if n in members and where % 2:
                    del members[n]
                else:
                    members[n] = (n, bytes(noise))
        with zipfile.ZipFile(target, "w") as z:
            for info, data in members.values():
                z.writestr(info, data)
    else:
        data = bytearray(src.read_bytes())
        if mode == "truncate":
            data = data[:where % len(data)]
        else:
            for k, byte in enumerate(noise):
                data[(where + k * 104729) % len(data)] = byte
        target.write_bytes(bytes(data))
    convert_fully(target)


# -- SavedModel directories (issue 16) ---------------------------------------
import struct  # noqa: E402

from migrate.read.crc32c import crc32c as _crc, masked as _masked  # noqa
from migrate.read.protobuf import varint as read_varint  # noqa: E402
from migrate.read.tensor_bundle import (_block_entries,  # noqa: E402
                                        _handle, read_table)

from savedmodel_tools import (decode_entry, entry as _entry,  # noqa: E402
                              varint, write_table)

SM_CASES = ["k2_sm_small_cnn", "k2_sm_nested", "k2_sm_bilstm_masked"]
_GRAPH_KEY = b"_CHECKPOINTABLE_OBJECT_GRAPH"


def _string_tensor(data: bytes) -> tuple[bytes, int]:
    """A scalar string tensor as a bundle stores it, and its entry crc."""
    lc = _masked(_crc(len(data).to_bytes(4, "little")))
    crc = _crc(data, _crc(struct.pack("<I", lc),
                          _crc(len(data).to_bytes(4, "little"))))
    return varint(len(data)) + struct.pack("<I", lc) + data, _masked(crc)


def _noise(data: bytes, where: int, noise: list, mode: str) -> bytes:
    data = bytearray(data)
    if not data:
        return bytes(noise)
    if mode == "truncate":
        return bytes(data[:where % len(data)])
    if mode == "insert":
        at = where % len(data)
        return bytes(data[:at] + bytes(noise) + data[at:])
    for k, byte in enumerate(noise):
        data[(where + k * 7919) % len(data)] = byte
    return bytes(data)


def _mutated_block(table: bytes, where: int, noise: list) -> bytes:
    """The first data block's bytes mutated and its crc made valid again,
    so the block parser sees the garbage."""
    buf = memoryview(table)
    footer = buf[len(buf) - 48:]
    _, pos = _handle(footer, 0, "t")
    (ioff, isize), _ = _handle(footer, pos, "t")
    _, handle = next(_block_entries(bytes(buf[ioff:ioff + isize]), "t"))
    (off, size), _ = _handle(memoryview(handle), 0, "t")
    data = bytearray(table)
    block = bytearray(_noise(bytes(data[off:off + size]), where, noise,
                             "flip"))
    data[off:off + size] = block
    data[off + size + 1:off + size + 5] = struct.pack(
        "<I", _masked(_crc(bytes(block) + bytes(data[off + size:
                                                     off + size + 1]))))
    return bytes(data)


@FUZZ
@given(case=st.sampled_from(SM_CASES),
       target=st.sampled_from(["index", "block", "entry", "metadata",
                               "object_graph", "shard"]),
       mode=st.sampled_from(["flip", "flip", "truncate", "insert"]),
       where=st.integers(0, 10 ** 6),
       noise=st.lists(st.integers(0, 255), min_size=1, max_size=12))
def test_fuzz_savedmodels(workdir, case, target, mode, where, noise):
    """Mutated index bytes and blocks (crc fixed), bundle entries,
    keras_metadata.pb, the object graph protobuf (its tensor re-encoded
    with valid crcs) and shards: a ConversionError or a conversion, never
    another exception."""
    sm = workdir / "sm"
    if sm.exists():
        shutil.rmtree(sm)
    shutil.copytree(fixture_dir(case) / "savedmodel", sm)
    index = sm / "variables" / "variables.index"
    shard = sm / "variables" / "variables.data-00000-of-00001"
    if target == "index":
        index.write_bytes(_noise(index.read_bytes(), where, noise, mode))
    elif target == "block":
        index.write_bytes(_mutated_block(index.read_bytes(), where, noise))
    elif target == "entry":
        items = read_table(index.read_bytes(), "t")
        keys = sorted(items)
        key = keys[where % len(keys)]
        items[key] = _noise(items[key], where // 7, noise, mode)
        index.write_bytes(write_table(items))
    elif target == "metadata":
        meta = sm / "keras_metadata.pb"
        meta.write_bytes(_noise(meta.read_bytes(), where, noise, mode))
    elif target == "object_graph":
        items = read_table(index.read_bytes(), "t")
        e = decode_entry(items[_GRAPH_KEY])
        data = shard.read_bytes()
        raw = data[e["offset"]:e["offset"] + e["size"]]
        _, pos = read_varint(raw, 0, "t")
        graph = raw[pos + 4:]
        tensor, crc = _string_tensor(_noise(graph, where, noise, mode))
        items[_GRAPH_KEY] = _entry(7, [], 0, len(data), len(tensor), crc)
        shard.write_bytes(data + tensor)
        index.write_bytes(write_table(items))
    else:
        shard.write_bytes(_noise(shard.read_bytes(), where, noise, mode))
    convert_fully(sm)
