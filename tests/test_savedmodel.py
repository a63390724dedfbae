"""tf.keras SavedModel directories: the same port as the model's .h5.

The fixtures ``k2_sm_*`` (fixtures/cases_savedmodel.py) hold each model as
``savedmodel/`` and ``model.h5``.  Parity against Keras's stored outputs
runs in tests/test_parity.py (the ``savedmodel`` format of every fixture);
refusals of broken and hostile directories are in tests/test_hostile.py,
mutations in tests/test_fuzz.py.
"""
import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import migrate
from cli.main import main
from migrate.discover import discover
from migrate.read import open_model
from migrate.read.crc32c import crc32c, masked
from migrate.read.protobuf import Message
from migrate.read.savedmodel import plain_json, read_metadata
from migrate.read.tensor_bundle import read_table, snappy_decompress

from conftest import HAS_TF, MODELS, fixture_dir
from savedmodel_tools import (as_before_tf_2_5, copy_savedmodel, field,
                              index_items, snappy_literal, write_index)

SM_CASES = sorted(d for d in MODELS.iterdir() if (d / "savedmodel").is_dir())
KINDS = {"k2_sm_small_cnn", "k2_sm_bilstm_masked", "k2_sm_gru_stack",
         "k2_sm_two_io", "k2_sm_nested", "k2_sm_mobilenet_v2",
         "k2_sm_transformer", "k2_sm_trained"}


def test_the_fixture_set_has_every_kind():
    assert KINDS <= {d.name for d in SM_CASES}
    for d in SM_CASES:
        assert (d / "model.h5").is_file(), d


@pytest.mark.parametrize("case_dir", SM_CASES, ids=lambda d: d.name)
def test_same_port_and_weights_as_the_h5(case_dir):
    with migrate.convert(case_dir / "savedmodel") as sm, \
            migrate.convert(case_dir / "model.h5") as h5:
        # model.py byte for byte, but the command naming each file
        assert _code(sm.source) == _code(h5.source)
        a, b = dict(sm.state_dict), dict(h5.state_dict)
        assert list(a) == list(b)
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        assert sm.weight_map() == h5.weight_map()  # Keras variable names
        src = sm.report["source"]
        assert src["format"] == "savedmodel"
        assert src["keras_version"] == h5.report["source"]["keras_version"]
        assert len(src["sha256"]) == 64


@pytest.mark.parametrize("case_dir", SM_CASES, ids=lambda d: d.name)
def test_metadata_config_is_the_h5_config(case_dir):
    entry, version, _ = read_metadata(str(case_dir / "savedmodel"))
    with h5py.File(case_dir / "model.h5", "r") as f:
        h5 = json.loads(f.attrs["model_config"])
    assert _without_shared_ids(entry) == _without_shared_ids(h5)
    assert version.startswith("2.")


def _without_shared_ids(value):
    """``value`` less what the two writers serialise differently: shared
    object ids (dropped by the reader), and the modules (Keras 2 writes
    them for wrapped layers and initializers into .h5 only)."""
    if isinstance(value, dict):
        return {k: _without_shared_ids(v) for k, v in value.items()
                if k not in ("shared_object_id", "module",
                             "registered_name")}
    if isinstance(value, list):
        return [_without_shared_ids(v) for v in value]
    return value


def test_every_layer_gets_the_h5_weight_keys():
    """Keys come from the variables' full names, as .h5 stores them."""
    case = fixture_dir("k2_sm_transformer")
    with open_model(case / "savedmodel") as sm, \
            open_model(case / "model.h5") as h5:
        for x, y in zip(sm.graph.layers(), h5.graph.layers()):
            assert x.name == y.name
            assert [e.key for e in x.weights.entries] == [
                e.key for e in y.weights.entries], x.name
            for e, f in zip(x.weights.entries, y.weights.entries):
                np.testing.assert_array_equal(e.array.read(), f.array.read())


def test_cli_converts_the_directory_as_one_model(tmp_path):
    sm = fixture_dir("k2_sm_small_cnn") / "savedmodel"
    r = CliRunner().invoke(main, ["convert", str(sm), "-o",
                                  str(tmp_path / "port")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "port" / "model.py").is_file()
    report = json.loads((tmp_path / "port" / "conversion.json").read_text())
    assert report["source"]["format"] == "savedmodel"


def test_discover_and_batch_take_a_savedmodel_as_one_model(tmp_path):
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    sm = copy_savedmodel(fixture_dir("k2_sm_two_io"), repo / "models" / "two")
    # nothing inside a SavedModel is searched, even a model file
    (sm / "assets").mkdir(exist_ok=True)
    shutil.copy(fixture_dir("k2_sm_nested") / "model.h5",
                sm / "assets" / "inner.h5")
    shutil.copy(fixture_dir("k2_sm_nested") / "model.h5", repo / "a.h5")
    plain = repo / "plain_tf"  # a TensorFlow SavedModel without Keras
    plain.mkdir()
    (plain / "saved_model.pb").write_bytes(b"\x08\x01")
    found = discover([repo])
    assert [f.path for f in found] == [repo / "a.h5", repo / "models" / "two",
                                       plain]
    assert [f.path for f in discover([sm])] == [sm]
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["convert", str(repo), "-o", str(out)])
    assert (out / "two" / "model.py").is_file(), r.output
    assert (out / "a" / "model.py").is_file(), r.output
    assert "plain_tf: not a Keras model" in r.output
    assert "3 model(s): 2 ok, 1 error" in r.output


def test_snappy_compressed_index_blocks_are_read(tmp_path):
    sm = copy_savedmodel(fixture_dir("k2_sm_small_cnn"), tmp_path / "sm")
    items = index_items(sm)
    write_index(sm, items, compress="snappy", blocks=3)
    assert read_table((sm / "variables/variables.index").read_bytes(),
                      "x") == items
    with migrate.convert(sm) as a, migrate.convert(
            fixture_dir("k2_sm_small_cnn") / "savedmodel") as b:
        assert _code(a.source) == _code(b.source)
        assert all(torch.equal(x, y) for x, y in zip(
            dict(a.state_dict).values(), dict(b.state_dict).values()))


def test_snappy_roundtrip_and_bounds():
    for data in (b"\0" * 300, os.urandom(500), b"abcd" * 99 + b"xyz"):
        assert snappy_decompress(snappy_literal(data), 1 << 20, "t") == data
    from migrate.errors import ConversionError
    for bad in (b"\x05\x00", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                b"\x04\x0e\x01\x00", b"\xff\xff\xff\xff\x0f"):
        with pytest.raises(ConversionError):
            snappy_decompress(bad, 1 << 20, "t")


def test_crc32c_known_values_and_long_inputs():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert masked(0) == 0xA282EAD8
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (1 << 20) + 13, dtype=np.uint8).tobytes()
    # the numpy lanes against the byte loop
    from migrate.read.crc32c import _extend_small
    assert crc32c(data) == _extend_small(0, data)
    assert crc32c(data[5:], crc32c(data[:5])) == crc32c(data)


def test_protobuf_decoder_is_bounded():
    from migrate.errors import ConversionError
    m = Message.parse(field(1, 150) + field(2, "hé") + field(1, 3), "t")
    assert m.int(1) == 3 and m.text(2) == "hé"
    for bad in (b"\x0a\x05ab",  # length past the end
                b"\x08" + b"\xff" * 11,  # varint too long
                b"\x0b",  # group wire type
                b"\x00\x01",  # field 0
                b"\x0d\x01\x02"):  # truncated fixed32
        with pytest.raises(ConversionError):
            Message.parse(bad, "t")


def test_plain_json_decodes_tuples_and_shapes():
    enc = {"a": {"class_name": "__tuple__", "items": [1, {"class_name":
           "__tuple__", "items": [None, 2]}]},
           "s": {"class_name": "TensorShape", "items": [None, 3]},
           "keep": {"class_name": "Dense", "config": {}}}
    assert plain_json(enc) == {"a": [1, [None, 2]], "s": [None, 3],
                               "keep": {"class_name": "Dense", "config": {}}}


@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed")
@pytest.mark.parametrize("case", ["k2_sm_small_cnn", "k2_sm_bilstm_masked"])
def test_verify_loads_the_directory_in_keras(tmp_path, case):
    """`keras2torch convert my_model/ -o port --verify`: Keras (tf-keras)
    loads the directory in its subprocess and the port matches it; the
    port is the .h5's, byte for byte."""
    sm = fixture_dir(case) / "savedmodel"
    r = CliRunner().invoke(main, ["convert", str(sm), "-o",
                                  str(tmp_path / "port"), "--verify"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "port" / "conversion.json").read_text())
    assert report["parity"]["passed"], report["parity"]
    r = CliRunner().invoke(main, ["convert", str(fixture_dir(case) /
                                                 "model.h5"),
                                  "-o", str(tmp_path / "h5")])
    assert r.exit_code == 0, r.output
    port = (tmp_path / "port" / "model.py").read_text()
    assert "keras2torch convert savedmodel -o port\n" in port
    assert _code(port) == _code((tmp_path / "h5" / "model.py").read_text())


@pytest.mark.parametrize("case", ["k2_sm_nested", "k2_sm_bilstm_masked"])
def test_before_tf_2_5_the_metadata_is_in_saved_model_pb(tmp_path, case):
    sm = copy_savedmodel(fixture_dir(case), tmp_path / "old")
    as_before_tf_2_5(sm)
    assert not (sm / "keras_metadata.pb").exists()
    with migrate.convert(sm) as old, migrate.convert(
            fixture_dir(case) / "model.h5") as h5:
        assert _code(old.source) == _code(h5.source)
        assert all(torch.equal(x, y) for x, y in zip(
            dict(old.state_dict).values(), dict(h5.state_dict).values()))


def test_check_finds_savedmodel_directories(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_savedmodel(fixture_dir("k2_sm_two_io"), repo / "two")
    monkeypatch.chdir(repo)
    r = CliRunner().invoke(main, ["check", "--no-verify"])
    assert r.exit_code == 0, r.output
    assert "pass    two " in r.output and "1 model(s): 1 pass" in r.output


def _code(source: str) -> str:
    """model.py but the header's command (which names each file)."""
    return re.sub(r"^# Regenerate: .*\n", "", source, flags=re.M)
