"""Streaming: the windowed zip reader, the streaming weight writers, the lazy
state dict, and that saving a conversion reads each weight once."""
from __future__ import annotations

import importlib.util
import io
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import migrate
import migrate.stream as stream
from migrate.read import archive
from migrate.read.archive import MemberWindow
from migrate.stream import LazyStateDict, Spec, write_safetensors, write_torch
from migrate.weights import LazyArray

from conftest import fixture_dir, needs_tf

ROOT = Path(__file__).resolve().parents[1]


# -- the windowed zip reader --------------------------------------------------
def _zip(path, payload: bytes, method=zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", b"{}" * 50, zipfile.ZIP_DEFLATED)
        z.writestr("padding.bin", b"x" * 1000)
        z.writestr("model.weights.h5", payload, method)
    with zipfile.ZipFile(path) as z:
        return z.getinfo("model.weights.h5")


def test_window_reads_equal_and_seeks(tmp_path):
    payload = bytes(range(256)) * 40
    info = _zip(tmp_path / "a.zip", payload)
    with MemberWindow.open(str(tmp_path / "a.zip"), info) as w:
        assert w.readable() and w.seekable() and not w.writable()
        assert w.read() == payload
        assert w.tell() == len(payload) and w.read(10) == b""
        assert w.seek(100) == 100 and w.read(5) == payload[100:105]
        assert w.tell() == 105
        assert w.seek(-5, io.SEEK_CUR) == 100
        assert w.seek(-3, io.SEEK_END) == len(payload) - 3
        assert w.read(10) == payload[-3:]
        assert w.seek(len(payload) + 50) == len(payload) + 50
        assert w.read(1) == b""
        buf = bytearray(7)
        w.seek(3)
        assert w.readinto(buf) == 7 and bytes(buf) == payload[3:10]
        with pytest.raises(ValueError):
            w.seek(-1)
        with pytest.raises(ValueError):
            w.seek(0, 7)
    assert w.closed
    with pytest.raises(ValueError):
        w.read(1)


def test_window_feeds_h5py(tmp_path):
    h5 = tmp_path / "w.h5"
    data = np.arange(12000, dtype=np.float32).reshape(100, 120)
    with h5py.File(h5, "w") as f:
        f["layers/dense/vars/0"] = data
    info = _zip(tmp_path / "m.zip", h5.read_bytes())
    with MemberWindow.open(str(tmp_path / "m.zip"), info) as w:
        with h5py.File(w, "r") as f:
            np.testing.assert_array_equal(f["layers/dense/vars/0"][()], data)


def test_window_refuses_compressed_and_truncated(tmp_path):
    info = _zip(tmp_path / "c.zip", b"y" * 5000, zipfile.ZIP_DEFLATED)
    with pytest.raises(migrate.ConversionError, match="compressed"):
        MemberWindow.open(str(tmp_path / "c.zip"), info)
    info = _zip(tmp_path / "t.zip", b"z" * 5000)
    data = (tmp_path / "t.zip").read_bytes()
    (tmp_path / "t2.zip").write_bytes(data[:info.header_offset + 200])
    with pytest.raises(migrate.ConversionError, match="truncated"):
        MemberWindow.open(str(tmp_path / "t2.zip"), info)


def test_archive_reads_stored_in_place_and_compressed_in_memory(
        tmp_path, monkeypatch):
    with zipfile.ZipFile(fixture_dir("k3_mlp") / "model.keras") as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    for name, method in (("s.keras", zipfile.ZIP_STORED),
                         ("d.keras", zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(tmp_path / name, "w", method) as z:
            for member, data in members.items():
                z.writestr(member, data)
    stored = archive.read_archive(str(tmp_path / "s.keras"))
    assert isinstance(stored.weights, MemberWindow)
    assert stored.weights.read() == members["model.weights.h5"]
    stored.weights.close()
    packed = archive.read_archive(str(tmp_path / "d.keras"))
    assert packed.weights == members["model.weights.h5"]
    want = migrate.convert(fixture_dir("k3_mlp") / "model.keras")
    for name in ("s.keras", "d.keras"):  # both convert alike
        conv = migrate.convert(tmp_path / name)
        assert torch.equal(conv.state_dict["hidden.weight"],
                           want.state_dict["hidden.weight"])
    # the size limit still applies to a member read into memory
    monkeypatch.setattr(archive, "WEIGHTS_LIMIT", 1000)
    with pytest.raises(migrate.ConversionError, match="limit"):
        archive.read_archive(str(tmp_path / "d.keras"))


# -- the streaming writers ----------------------------------------------
def _values():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((300, 70)).astype(np.float32)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "scalar": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 4), np.float32),
        "transposed": big.T,  # a non-contiguous view, written in blocks
        "bf16": torch.arange(4, dtype=torch.bfloat16),
        "mask": np.array([True, False, True]),
        "from_f64": np.linspace(0, 1, 4),  # cast to the declared float32
    }


def _specs(values):
    specs = {}
    for k, v in values.items():
        t = v if isinstance(v, torch.Tensor) else torch.from_numpy(
            np.array(v, order="C"))
        specs[k] = Spec(t.shape, torch.float32 if k == "from_f64"
                        else t.dtype)
    return specs


def _expected(values, specs):
    out = {}
    for k, v in values.items():
        t = v if isinstance(v, torch.Tensor) else torch.from_numpy(
            np.array(v, order="C"))
        out[k] = t.to(specs[k].dtype)
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_writer_round_trip(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(stream, "BLOCK", 1000)  # force many blocks
    values = _values()
    specs = _specs(values)
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        write_safetensors(path, specs, values.__getitem__, {"k": "v"})
        got = load_file(path)
    else:
        write_torch(path, specs, values.__getitem__)
        got = torch.load(path, weights_only=True)
        mapped = torch.load(path, weights_only=True, mmap=True)
        assert all(torch.equal(mapped[k], got[k]) for k in got)
        with zipfile.ZipFile(path) as z:
            assert z.testzip() is None  # CRCs patched
    want = _expected(values, specs)
    assert list(got) == list(want) or set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert torch.equal(got[k], want[k]), k
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("writer", [write_safetensors, write_torch])
def test_writer_is_atomic(tmp_path, writer):
    values = _values()
    specs = _specs(values)
    path = tmp_path / "w.out"
    path.write_bytes(b"old")

    def produce(key):
        if key == "empty":
            raise OSError(28, "No space left on device")
        return values[key]

    with pytest.raises(OSError):
        writer(path, specs, produce)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.out"]
    wrong = dict(values, f32=np.zeros((4, 3), np.float32))
    with pytest.raises(migrate.ConversionError, match="shape"):
        writer(path, specs, wrong.__getitem__)
    assert [p.name for p in tmp_path.iterdir()] == ["w.out"]


def test_writer_refuses_float_into_int(tmp_path):
    specs = {"n": Spec((2,), torch.int64)}
    with pytest.raises(migrate.ConversionError, match="expects"):
        write_safetensors(tmp_path / "x", specs,
                          lambda k: np.ones(2, np.float32))


# -- lazy state dict and reads during a conversion ---------------------------
@pytest.fixture
def count_reads(monkeypatch):
    reads: dict[str, int] = {}
    real = LazyArray.read

    def read(self):
        reads[self.where] = reads.get(self.where, 0) + 1
        return real(self)

    monkeypatch.setattr(LazyArray, "read", read)
    return reads


@pytest.mark.parametrize("case", ["k3_small_cnn", "k2_norms",
                                  "k3_transformer_encoder"])
def test_save_reads_each_weight_once(tmp_path, count_reads, case):
    d = fixture_dir(case)
    model = d / "model.keras" if (d / "model.keras").exists() else d / \
        "model.h5"
    conv = migrate.convert(model)
    assert count_reads == {}, "convert() read weights before they were needed"
    conv.save(tmp_path / "port")
    assert count_reads and set(count_reads.values()) == {1}
    got = load_file(tmp_path / "port" / "model.safetensors")
    module = conv.module_class()()
    assert set(got) == set(module.state_dict())
    module.load_state_dict(got, strict=True)
    # state_dict access reads again (the streaming save kept nothing) and
    # then keeps what it read
    count_reads.clear()
    sd = conv.state_dict
    assert all(torch.equal(sd[k], got[k]) for k in got)
    once = dict(count_reads)
    assert all(torch.equal(sd[k], got[k]) for k in got)
    assert count_reads == once
    conv.save(tmp_path / "again", weights_format="pt")
    assert count_reads == once  # saved from what state_dict kept


def test_closed_conversion_refuses_unread_weights():
    with migrate.convert(fixture_dir("k3_mlp") / "model.keras") as conv:
        kept = conv.state_dict["hidden.weight"]
        assert conv.num_values == sum(
            v.numel() for v in conv.module_class()().state_dict().values())
    assert torch.equal(conv.state_dict["hidden.weight"], kept)
    with pytest.raises(migrate.ConversionError, match="closed"):
        conv.state_dict["logits.weight"]


def test_lazy_state_dict_is_a_mapping():
    calls = []

    def produce():
        calls.append(1)
        return np.ones((2, 2), np.float64)

    sd = LazyStateDict({"w": produce}, {"w": Spec((2, 2), torch.float32)})
    assert list(sd) == ["w"] and len(sd) == 1 and "w" in sd and not calls
    assert sd["w"].dtype == torch.float32 and sd["w"] is sd["w"]
    assert calls == [1] and sd.num_values == 4


# -- many layers ----------------------------------------------------------
def _synth():
    """bench/synth.py: writes .keras Dense stacks without Keras."""
    spec = importlib.util.spec_from_file_location(
        "synth", ROOT / "bench" / "synth.py")
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    return synth


@needs_tf
@pytest.mark.keras
def test_synthetic_models_load_in_keras(tmp_path):
    """The files bench/scale.py generates are ones Keras itself loads, and
    the port matches Keras on them."""
    path = tmp_path / "stack.keras"
    _synth().write_dense_stack(path, [6, 5, 4, 3])
    parity = migrate.verify(path)
    assert parity["passed"], parity


def test_thousand_layer_sequential_converts(tmp_path):
    synth = _synth()
    path = tmp_path / "deep.keras"
    synth.write_dense_stack(path, [4] * 1001)
    conv = migrate.convert(path, flat=True)  # one line per layer
    compile(conv.source, "model.py", "exec")
    assert conv.source.count("nn.Linear(4, 4)") == 1000
    x = torch.randn(2, 4)
    sd = conv.state_dict
    ref = x
    for i in range(1000):
        ref = ref @ sd[f"dense_{i}.weight"].T + sd[f"dense_{i}.bias"]
        ref = ref if i == 999 else torch.relu(ref)
    with torch.no_grad():
        torch.testing.assert_close(conv.module()(x), ref)
    assert os.path.getsize(path) > 0


# -- fast copies of permuted kernels --------------------------------------
@pytest.mark.parametrize("shape", [(3, 3, 16, 32), (5, 16, 32),
                                   (2, 3, 3, 8, 16), (300, 260)])
def test_contiguous_equals_numpy_for_every_permutation(shape):
    import itertools
    from migrate.weights import contiguous
    k = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    frozen = k.copy()
    frozen.flags.writeable = False  # torch cannot view it: numpy copies
    swapped = k.astype(">f4")  # byte-swapped: numpy copies too
    for base in (k, frozen, swapped):
        for perm in itertools.permutations(range(len(shape))):
            for view in (base.transpose(perm),
                         base.transpose(perm)[..., ::-1]):
                for dtype in (None, np.float64):
                    got = contiguous(view, dtype)
                    assert got.flags.c_contiguous
                    assert not np.shares_memory(got, base)
                    assert got.dtype == (view.dtype if dtype is None
                                         else dtype)
                    np.testing.assert_array_equal(got, view)
