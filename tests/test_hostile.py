"""Hostile input: model files built to attack or crash the converter.

Every file here is made from a small committed fixture in ``tmp_path``
(a mutated ``config.json``, a patched HDF5 dataset, a crafted zip), and
every refusal is checked the same way, through the command line and the
API: one line on stderr starting ``error:``, exit code 2, no traceback, no
OUTDIR and no temporary directory left behind (:func:`refused`).
"""
import ast
import base64
import json
import marshal
import os
import shutil
import struct
import subprocess
import sys
import types
import zipfile

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import migrate
from cli.main import main
from migrate.errors import ConversionError
from migrate.read.config import LAMBDA_CODE, MAX_DIM

from conftest import ROOT, fixture_dir


# -- helpers ---------------------------------------------------------------
def refused(tmp_path, model, weights=None, match="", subprocess_too=False,
            weights_format="safetensors"):
    """``model`` is refused by the CLI and the API, cleanly.  Returns the
    message."""
    out = tmp_path / "OUT"
    before = sorted(os.listdir(tmp_path))
    args = ["convert", str(model), "-o", str(out),
            "--weights-format", weights_format]
    if weights is not None:
        args += ["--weights", str(weights)]
    r = CliRunner().invoke(main, args)
    # 2: cannot be read; 1: read, but a layer cannot be converted (a Lambda,
    # weights that do not fit its rule) -- README's exit-code table
    assert r.exit_code in (1, 2), (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in r.output
    assert not out.exists() and sorted(os.listdir(tmp_path)) == before
    if subprocess_too:
        proc = subprocess.run([sys.executable, "-m", "cli.main", *args],
                              capture_output=True, text=True, cwd=ROOT,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1 and "Traceback" not in \
            proc.stderr and match in proc.stderr, proc.stderr[-2000:]
        assert not out.exists() and sorted(os.listdir(tmp_path)) == before
    # the API: convert (weights are read lazily) and save
    with pytest.raises(ConversionError) as info:
        with migrate.convert(model, weights,
                             weights_format=weights_format) as conv:
            conv.save(out)
    message = str(info.value)
    assert "\n" not in message and match in message, message
    assert not out.exists() and sorted(os.listdir(tmp_path)) == before
    return message


def keras_config(case="k3_mlp") -> dict:
    with zipfile.ZipFile(fixture_dir(case) / "model.keras") as z:
        return json.loads(z.read("config.json"))


def write_keras(path, config, case="k3_mlp", extra=()):
    """A copy of ``case``'s .keras archive with ``config`` (a dict, or raw
    bytes) as its config.json and ``extra`` (name, bytes) members added."""
    with zipfile.ZipFile(fixture_dir(case) / "model.keras") as src, \
            zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json" and config is not None:
                data = config if isinstance(config, bytes) else \
                    json.dumps(config).encode()
            dst.writestr(info, data)
        for name, data in extra:
            dst.writestr(name, data)
    return path


def h5_config(path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


def write_h5(path, config, case="k2_mlp"):
    """A copy of ``case``'s full-model .h5 with ``config`` as its
    model_config."""
    shutil.copy(fixture_dir(case) / "model.h5", path)
    with h5py.File(path, "a") as f:
        f.attrs["model_config"] = json.dumps(config)
    return path


def copy(tmp_path, case, name):
    dst = tmp_path / f"{case}.{name}"
    shutil.copy(fixture_dir(case) / name, dst)
    return dst


# -- 1. nothing from a model file is executed ------------------------------
def lambda_payload(sentinel) -> tuple[str, bytes]:
    """Marshalled bytecode of a lambda that would create ``sentinel`` if it
    ever ran, base64 as Keras writes it, and the raw marshal bytes."""
    src = f"lambda x: (open({str(sentinel)!r}, 'w').write('ran'), x)[1]"
    outer = compile(src, "EVIL_PAYLOAD", "eval")
    code = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
    raw = marshal.dumps(code)
    return base64.b64encode(raw).decode() + "\n", raw


def evil_module(tmp_path):
    """A module that records being imported; configs name it."""
    (tmp_path / "k2t_evil_module.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').write('imported')\n")


def keras3_lambda_model(tmp_path):
    payload, raw = lambda_payload(tmp_path / "lambda_ran")
    config = keras_config("k3_mlp")
    layers = config["config"]["layers"]
    layers.insert(2, {
        "module": "keras.layers", "class_name": "Lambda",
        "config": {"name": "evil_lambda", "trainable": True,
                   "dtype": "float32", "arguments": {},
                   "function": {"class_name": "__lambda__", "config": {
                       "code": payload, "defaults": None,
                       "closure": None}}},
        "registered_name": None})
    layers.insert(3, {
        "module": "k2t_evil_module", "class_name": "Evil",
        "config": {"name": "evil_custom", "trainable": True},
        "registered_name": "k2t_evil_module>Evil"})
    return write_keras(tmp_path / "lambda.keras", config), raw


def keras2_lambda_model(tmp_path):
    payload, raw = lambda_payload(tmp_path / "lambda_ran")
    config = h5_config(fixture_dir("k2_mlp") / "model.h5")
    config["config"]["layers"].insert(2, {
        "class_name": "Lambda",
        "config": {"name": "evil_lambda", "trainable": True,
                   "dtype": "float32", "function": [payload, None, None],
                   "function_type": "lambda", "module": "k2t_evil_module",
                   "output_shape": None, "output_shape_type": "raw",
                   "output_shape_module": None, "arguments": {}}})
    return write_h5(tmp_path / "lambda.h5", config), raw


@pytest.mark.parametrize("make", [keras3_lambda_model, keras2_lambda_model])
def test_lambda_layers_are_refused_and_their_bytecode_never_read(tmp_path,
                                                                 make):
    evil_module(tmp_path)
    model, raw = make(tmp_path)
    msg = refused(tmp_path, model, match="'evil_lambda' (Lambda)")
    assert "bytecode" in msg and "custom rule" in msg
    # the config the rules see holds a placeholder, not the code
    with pytest.raises(migrate.UnsupportedLayers):
        migrate.convert(model)
    from migrate.read import open_model
    with open_model(model) as src:
        cfg = next(n.layer.config for n in src.graph.nodes
                   if n.layer.class_name == "Lambda")
    assert cfg["function"] == LAMBDA_CODE
    # and in a fresh process, watched by an audit hook: the payload is
    # never unmarshalled or run, nothing is unpickled, the module a config
    # names is never imported
    code = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
import migrate
from migrate.errors import ConversionError
raw = bytes.fromhex({raw.hex()!r})
seen = []

def hook(event, args):
    if event == "marshal.loads" and args and args[0] == raw:
        seen.append(event)
    elif event == "pickle.find_class":
        seen.append((event, args))
    elif event == "exec" and getattr(args[0], "co_filename", "") == \\
            "EVIL_PAYLOAD":
        seen.append(event)
    elif event == "import" and str(args[0]).split(".")[0] in (
            "k2t_evil_module", "tensorflow", "keras", "tf_keras"):
        seen.append((event, args[0]))

sys.addaudithook(hook)
try:
    migrate.convert({str(model)!r})
except ConversionError as exc:
    print(exc)
assert not seen, seen
assert "k2t_evil_module" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "evil_lambda" in proc.stdout
    assert not (tmp_path / "lambda_ran").exists()
    assert not (tmp_path / "imported").exists()


def test_a_custom_rule_can_replace_a_lambda(tmp_path):
    from migrate.rules import Emit, Out, Rule, chain

    def double(call):
        x = call.inputs[0]
        return Emit([Out(chain(f"{x.expr} * 2.0"), x.shape, x.layout)])

    model, _ = keras2_lambda_model(tmp_path)
    conv = migrate.convert(model, rules={"Lambda": Rule("Lambda", double)})
    assert "* 2.0" in conv.source


def test_converting_never_unpickles_or_imports_tensorflow(tmp_path):
    """Every format, both weight formats, in a process where pickle, torch
    and numpy loading are booby-trapped."""
    cases = ["k3_small_cnn", "k2_small_cnn", "k3_nested", "k2_text_mlp",
             "k2_sm_bilstm_masked"]
    code = f"""
import pickle, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
import numpy, torch

def trap(*args, **kwargs):
    raise AssertionError("a loader that can run code was called")

pickle.load = pickle.loads = trap
torch.load = numpy.load = trap  # (imports use marshal: not trapped)
seen = []
sys.addaudithook(lambda event, args: seen.append(args[:2])
                 if event == "pickle.find_class" else None)
import migrate
from conftest import fixture_dir, model_files
n = 0
for case in {cases!r}:
    for _, m, w in model_files(fixture_dir(case)):
        for fmt in ("safetensors", "pt"):
            with migrate.convert(m, w, weights_format=fmt) as conv:
                conv.save({str(tmp_path)!r} + f"/out{{n}}")
            n += 1
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
assert not bad, bad[:5]
assert not seen, seen[:5]
print(n)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout) >= 2 * 2 * len(cases)


# -- 2. names never reach code as code --------------------------------------
HOSTILE = ['a"; __import__(\'os\').system(\'touch PWNED\') #',
           "x\nimport os\nos.system('touch PWNED')", '"""', "'''", "\\",
           "class", "lambda", "None", "match", "forward", "training",
           "torch", "nn", "F", "self", "super", "print", "__import__",
           "a-b", "a_b", "a b", "a.b", "ñaïve ünïcode", "层", "1st",
           "x" * 300, "# comment", "__class__", "_modules", "eval"]


def _rename(config: dict, mapping: dict) -> dict:
    """``config`` with every layer and model name renamed, references
    included (each name string is replaced wherever it occurs)."""
    def walk(v, key=None):
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str) and v in mapping and key not in (
                "class_name", "module", "registered_name", "activation",
                "padding", "data_format", "dtype"):
            return mapping[v]
        return v
    return walk(config)


def _names(config: dict) -> list[str]:
    return [layer["config"]["name"] for layer in config["config"]["layers"]]


@pytest.mark.parametrize("case, first", [
    ("k3_small_cnn", 0), ("k3_transformer_encoder", 11), ("k3_ops", 20),
    ("k3_mlp", 26), ("k3_nested", 3), ("k3_two_io", 16)])
def test_hostile_names_compile_run_and_inject_nothing(tmp_path, case, first):
    config = keras_config(case)
    names = _names(config) + [config["config"]["name"]]
    assert len(names) <= len(HOSTILE)
    # the model's name too; "a-b", "a_b", "a b" collide once sanitised
    mapping = {n: HOSTILE[(first + i) % len(HOSTILE)]
               for i, n in enumerate(names)}
    hostile = write_keras(tmp_path / "h.keras", _rename(config, mapping),
                          case)
    plain = migrate.convert(fixture_dir(case) / "model.keras")
    conv = migrate.convert(hostile)
    src = conv.source
    assert src.isascii()
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + [node.module or ""] \
                if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names]
            assert all(m.split(".")[0] in ("torch", "math", "") or m in (
                "nn", "functional", "F") for m in mods), ast.dump(node)
        if isinstance(node, ast.Name):
            assert node.id not in ("__import__", "eval", "exec", "os",
                                   "open", "system", "compile"), node.id
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("system", "popen"), node.attr
    # the only string literal is the docstring (names appear escaped in it)
    strings = [n for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    docstrings = {id(b.body[0].value) for b in ast.walk(tree)
                  if isinstance(b, (ast.ClassDef, ast.FunctionDef,
                                    ast.Module)) and b.body
                  and isinstance(b.body[0], ast.Expr)}
    dangerous = [h for h in HOSTILE if any(c in h for c in "\"'\\\n(")
                 or not h.isascii()]
    for s in strings:
        if id(s) not in docstrings:  # helpers' own literals ("-inf")
            assert not any(h in s.value for h in dangerous), s.value
    # every attribute is an identifier no module attribute or builtin
    attrs = [r["torch_name"] for r in conv.report["layers"]
             if r["torch_name"] and r["class_name"] != "InputLayer"]
    assert len(set(attrs)) == len(attrs)
    for a in attrs + [p.var for p in conv.program.inputs]:
        assert a.isidentifier() and a.isascii()
        assert not hasattr(torch.nn.Module, a), a
    assert conv.class_name.isidentifier() and conv.class_name.isascii()
    # it runs in a fresh namespace and computes what the plain model does
    model, ref = conv.module(), plain.module()
    torch.manual_seed(0)
    inputs = [_random_input(p) for p in plain.program.inputs]
    with torch.no_grad():
        got, want = model(*inputs), ref(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    # saved, the file imports with only torch and gives the same module
    conv.save(tmp_path / "port")
    text = (tmp_path / "port" / "model.py").read_text(encoding="utf-8")
    # the same file, the header's command naming the folder written to
    assert text == src.replace(" -o OUTDIR", " -o port", 1)
    assert not (tmp_path / "PWNED").exists() and not (ROOT / "PWNED").exists()


def _random_input(port):
    shape = [2 if d is None else d for d in port.torch_shape]
    if port.dtype.startswith("int"):
        return torch.randint(0, port.vocab or 2, shape)
    return torch.randn(shape)


def test_duplicate_names_after_sanitising_stay_apart(tmp_path):
    config = keras_config("k3_small_cnn")
    names = _names(config)
    clashing = ["a-b", "a_b", "a b", "a.b", "a/b", "a\tb", "a__b", "a+b",
                "a_b_1", "A_b"]
    mapping = dict(zip(names, clashing))
    conv = migrate.convert(write_keras(tmp_path / "d.keras",
                                       _rename(config, mapping),
                                       "k3_small_cnn"))
    attrs = [r["torch_name"] for r in conv.report["layers"]
             if r["torch_name"] and r["class_name"] != "InputLayer"]
    assert len(set(attrs)) == len(attrs) and len(attrs) >= 4
    conv.module()


INJECTIONS = ["x'); __import__('os').system('id'); ('",
              'a"\nimport os\nos.system("id") #']


def _string_paths(value, path=()):
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _string_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _string_paths(v, path + (i,))


@pytest.mark.parametrize("case, weights", [
    ("k3_ops", "model.weights.h5"), ("k2_ops", "model_weights.h5"),
    ("k2_tf_op_lambda", "model_weights.h5"),
    ("k3_transformer_encoder", "model.weights.h5"),
    ("k2_lstm_text_classifier", "model_weights.h5")])
def test_string_config_values_never_become_code(tmp_path, case, weights):
    """Every string in every layer config (op names, dtypes, activations,
    padding modes, TF function names...) replaced by an injection: the
    model is refused, or its source runs nothing of it."""
    config = json.loads((fixture_dir(case) / "model.json").read_text())
    model = tmp_path / "model.json"
    count = converted = 0
    for i, layer in enumerate(config["config"]["layers"]):
        for path in _string_paths(layer.get("config", {})):
            if path == ("name",):
                continue
            mutated = json.loads(json.dumps(config))
            target = mutated["config"]["layers"][i]["config"]
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = INJECTIONS[count % 2]
            count += 1
            model.write_text(json.dumps(mutated))
            try:
                with migrate.convert(model, fixture_dir(case) / weights) \
                        as conv:
                    source = conv.source
            except ConversionError as exc:
                assert "\n" not in str(exc)
                continue
            converted += 1
            tree = ast.parse(source)
            used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            used |= {n.attr for n in ast.walk(tree)
                     if isinstance(n, ast.Attribute)}
            assert not used & {"__import__", "os", "system"}, (path, source)
            assert not any(isinstance(n, ast.Import) and n.names[0].name
                           == "os" for n in ast.walk(tree)), path
    assert count > 10 and converted > 0


# -- 3. archives ----------------------------------------------------------
def _lie_about_size(path, member, size):
    """Patch the central directory so ``member`` claims ``size`` bytes."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    i = data.rfind(b"PK\x01\x02")
    while i >= 0:
        n = struct.unpack_from("<H", data, i + 28)[0]
        if bytes(data[i + 46:i + 46 + n]) == name:
            struct.pack_into("<I", data, i + 24, size)
            path.write_bytes(bytes(data))
            return path
        i = data.rfind(b"PK\x01\x02", 0, i)
    raise AssertionError(member)


def test_zip_bomb_is_refused(tmp_path):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", b" " * (8 << 20) + b"{}")
        z.writestr("model.weights.h5", b"")
    assert bomb.stat().st_size < 64 << 10
    refused(tmp_path, bomb, match="zip bomb")


def test_huge_config_member_is_refused(tmp_path):
    model = write_keras(tmp_path / "huge.keras", None)
    _lie_about_size(model, "config.json", 0xFFFF0000)
    msg = refused(tmp_path, model, match="over the")
    assert "config.json" in msg


def test_member_names_outside_the_archive_are_refused(tmp_path):
    for i, name in enumerate(["../evil.py", "/etc/passwd", "a/../../b",
                              "..\\evil"]):
        model = write_keras(tmp_path / f"m{i}.keras", None,
                            extra=[(name, b"print('hi')")])
        refused(tmp_path, model, match="outside the archive")
    assert not (tmp_path.parent / "evil.py").exists()


@pytest.mark.parametrize("member, match", [
    ("config.json", "without config.json"),
    ("model.weights.h5", "has no model.weights.h5")])
def test_missing_members(tmp_path, member, match):
    model = tmp_path / "m.keras"
    with zipfile.ZipFile(fixture_dir("k3_mlp") / "model.keras") as src, \
            zipfile.ZipFile(model, "w") as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info, src.read(info))
    refused(tmp_path, model, match=match)


def test_truncated_and_garbled_archives(tmp_path):
    data = (fixture_dir("k3_small_cnn") / "model.keras").read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[:len(data) * 2 // 3])
    refused(tmp_path, cut, match="corrupt", subprocess_too=True)
    garbled = bytearray(data)
    for i in range(100, len(garbled), 97):
        garbled[i] ^= 0x5A
    (tmp_path / "garbled.keras").write_bytes(bytes(garbled))
    refused(tmp_path, tmp_path / "garbled.keras")


def test_config_that_is_not_a_model(tmp_path):
    for i, config in enumerate([b"[]", b"{", b"\xff\xfe", json.dumps(
            {"class_name": "Functional", "config": 3}).encode(),
            b"[" * 100000 + b"]" * 100000]):
        refused(tmp_path, write_keras(tmp_path / f"c{i}.keras", config))
    deep = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 3,
                                           "x": [[[[[[[[[]]]]]]]]]}}]}}
    node = deep["config"]["layers"][0]["config"]
    for _ in range(300):
        node["x"] = {"x": node["x"]}
    refused(tmp_path, write_keras(tmp_path / "deep.keras", deep),
            match="nested more than")


# -- 4. HDF5 ----------------------------------------------------------------
def test_truncated_hdf5(tmp_path):
    for case, name, model in [("k2_small_cnn", "model.h5", None),
                              ("k3_small_cnn", "model.weights.h5",
                               "model.json"),
                              ("k2_small_cnn", "model_weights.h5",
                               "model.json")]:
        data = (fixture_dir(case) / name).read_bytes()
        for cut in (len(data) // 3, len(data) - 200):
            path = tmp_path / f"{cut}.{name}"
            path.write_bytes(data[:cut])
            if model is None:
                refused(tmp_path, path, match=str(path))
            else:
                refused(tmp_path, fixture_dir(case) / model, path,
                        match=str(path))
        path.unlink()


def test_truncated_hdf5_through_the_console(tmp_path):
    data = (fixture_dir("k2_mlp") / "model.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:len(data) // 2])
    refused(tmp_path, tmp_path / "cut.h5", match="truncated",
            subprocess_too=True)


def _replace(path, name, value):
    with h5py.File(path, "a") as f:
        del f[name]
        f[name] = value
    return path


def test_dataset_shape_disagrees_with_the_config(tmp_path):
    # the stored kernel is (7, 6) where the config says Dense(5) on 7
    model = _replace(copy(tmp_path, "k2_mlp", "model.h5"),
                     "model_weights/hidden/hidden/kernel:0",
                     np.zeros((7, 6), "f4"))
    refused(tmp_path, model, match="hidden", subprocess_too=True)
    weights = _replace(copy(tmp_path, "k3_small_cnn", "model.weights.h5"),
                       "layers/conv2d/vars/0", np.zeros((3, 3, 3), "f4"))
    refused(tmp_path, fixture_dir("k3_small_cnn") / "model.json", weights,
            match="conv1")
    weights = _replace(copy(tmp_path, "k3_mlp", "model.weights.h5"),
                       "layers/dense/vars/1", np.zeros((), "f4"))
    refused(tmp_path, fixture_dir("k3_mlp") / "model.json", weights,
            match="hidden")


def test_missing_weights(tmp_path):
    model = copy(tmp_path, "k2_mlp", "model.h5")
    with h5py.File(model, "a") as f:
        del f["model_weights/logits/logits/bias:0"]
    refused(tmp_path, model, match="bias")
    weights = copy(tmp_path, "k3_mlp", "model.weights.h5")
    with h5py.File(weights, "a") as f:
        del f["layers/dense_1/vars/1"]
    refused(tmp_path, fixture_dir("k3_mlp") / "model.json", weights,
            match="logits")


@pytest.mark.parametrize("value, match", [
    (np.array([b"abc"] * 5, dtype=object), "numeric"),
    (np.zeros(5, "S4"), "numeric"),
    (np.zeros(5, "c8"), "numeric"),
    (np.zeros(5, [("a", "f4"), ("b", "f4")]), "numeric"),
])
def test_wrong_dtypes(tmp_path, value, match):
    weights = _replace(copy(tmp_path, "k3_mlp", "model.weights.h5"),
                       "layers/dense/vars/1", value)
    refused(tmp_path, fixture_dir("k3_mlp") / "model.json", weights,
            match=match)


@pytest.mark.parametrize("key, value", [
    ("units", 10 ** 12), ("units", -3), ("units", 0), ("units", "5"),
    ("units", True), ("units", [5]), ("batch_shape", [None, 2 ** 40]),
    ("batch_shape", [None, 100000, 100000, 1000]),
])
def test_absurd_dimensions_in_a_config(tmp_path, key, value):
    config = keras_config("k3_mlp")
    layers = config["config"]["layers"]
    layers[0 if key == "batch_shape" else 1]["config"][key] = value
    model = write_keras(tmp_path / "absurd.keras", config)
    msg = refused(tmp_path, model)
    assert key in msg
    assert MAX_DIM == 2 ** 31 - 1


@pytest.mark.parametrize("weights_format", ["safetensors", "pt"])
def test_largest_valid_dims_with_small_weights(tmp_path, weights_format):
    """Dense(2**31 - 1) passes the dimension check; its 8 GiB kernel is
    never allocated: the stored (7, 5) kernel is refused first."""
    config = keras_config("k3_mlp")
    for layer in config["config"]["layers"][1:]:
        layer["config"]["units"] = MAX_DIM
    model = write_keras(tmp_path / "big.keras", config)
    refused(tmp_path, model, weights_format=weights_format)
    with pytest.raises(ConversionError, match="do not match"):
        migrate.convert(model).module()


def test_absurd_dimensions_inside_wrappers(tmp_path):
    config = keras_config("k3_time_distributed")
    wrapper = next(layer for layer in config["config"]["layers"]
                   if layer["class_name"] == "TimeDistributed")
    inner = wrapper["config"]["layer"]["config"]
    key = next(k for k in ("filters", "units", "pool_size", "kernel_size")
               if k in inner)
    inner[key] = 2 ** 40
    model = write_keras(tmp_path / "td.keras", config, "k3_time_distributed")
    assert key in refused(tmp_path, model, match="TimeDistributed")


def test_h5_config_bombs(tmp_path):
    config = h5_config(fixture_dir("k2_mlp") / "model.h5")
    config["config"]["layers"][1]["config"]["units"] = 2 ** 62
    refused(tmp_path, write_h5(tmp_path / "a.h5", config), match="units")
    shutil.copy(fixture_dir("k2_mlp") / "model.h5", tmp_path / "b.h5")
    with h5py.File(tmp_path / "b.h5", "a") as f:
        f.attrs["model_config"] = "{" * 10
    refused(tmp_path, tmp_path / "b.h5", match="not valid JSON")


# -- SavedModel directories (issue 16) ---------------------------------------
from migrate.read.crc32c import crc32c, masked  # noqa: E402

from savedmodel_tools import (copy_savedmodel, decode_entry,  # noqa: E402
                              entry, field, index_items, write_index)

SM = "k2_sm_small_cnn"
_VALUE = b"/.ATTRIBUTES/VARIABLE_VALUE"


def savedmodel(tmp_path, case=SM):
    return copy_savedmodel(fixture_dir(case), tmp_path / "my_model")


def _first_variable(items) -> bytes:
    return next(k for k in sorted(items) if k.endswith(_VALUE))


def test_savedmodel_without_keras_metadata(tmp_path):
    sm = savedmodel(tmp_path)
    (sm / "keras_metadata.pb").unlink()
    refused(tmp_path, sm, match="not a Keras model: a TensorFlow SavedModel "
                                "without Keras metadata", subprocess_too=True)


def test_savedmodel_of_a_subclassed_model(tmp_path):
    """Its metadata (rewritten here) has no config and no layer graph."""
    sm = savedmodel(tmp_path)
    meta = json.dumps({"name": "my_model", "class_name": "MyModel",
                       "is_graph_network": False, "keras_version": "2.15.0"})
    root = (field(2, 0) + field(3, "root") + field(4, "_tf_keras_model")
            + field(5, meta))
    (sm / "keras_metadata.pb").write_bytes(field(1, root))
    refused(tmp_path, sm, match="no layer graph")


def test_savedmodel_with_a_weights_argument(tmp_path):
    sm = savedmodel(tmp_path)
    refused(tmp_path, sm, fixture_dir("k2_mlp") / "model_weights.h5",
            match="holds its own weights")


def test_truncated_or_corrupt_index(tmp_path):
    sm = savedmodel(tmp_path)
    index = sm / "variables" / "variables.index"
    data = index.read_bytes()
    index.write_bytes(data[:-7])
    refused(tmp_path, sm, match="bad magic")
    index.write_bytes(data[:30])
    refused(tmp_path, sm, match="too short")
    flipped = bytearray(data)
    flipped[3] ^= 0x40  # inside the first data block: its crc fails
    index.write_bytes(bytes(flipped))
    refused(tmp_path, sm, match="checksum mismatch (corrupt index)")
    index.unlink()
    refused(tmp_path, sm, match="variables.index: missing")


def test_truncated_or_corrupt_shard(tmp_path):
    sm = savedmodel(tmp_path)
    shard = sm / "variables" / "variables.data-00000-of-00001"
    data = shard.read_bytes()
    items = index_items(sm)
    e = decode_entry(items[_first_variable(items)])
    flipped = bytearray(data)
    flipped[e["offset"]] ^= 1
    shard.write_bytes(bytes(flipped))
    refused(tmp_path, sm, match="crc32c mismatch (corrupt checkpoint data)")
    shard.write_bytes(data[:len(data) // 2])
    refused(tmp_path, sm, match="past the end of shard 0")
    shard.unlink()
    refused(tmp_path, sm, match="variables.data-00000-of-00001: missing")


def test_a_key_the_object_graph_does_not_explain(tmp_path):
    sm = savedmodel(tmp_path)
    items = index_items(sm)
    items[b"smuggled/.ATTRIBUTES/VARIABLE_VALUE"] = items[
        _first_variable(items)]
    write_index(sm, items)
    refused(tmp_path, sm, match="'smuggled/.ATTRIBUTES/VARIABLE_VALUE' is "
                                "not explained by the object graph")


def test_a_variable_missing_from_the_checkpoint(tmp_path):
    sm = savedmodel(tmp_path)
    items = index_items(sm)
    del items[_first_variable(items)]
    write_index(sm, items)
    refused(tmp_path, sm, match="the checkpoint lacks")


def _rewrite_entry(sm, **change):
    items = index_items(sm)
    key = _first_variable(items)
    e = dict(decode_entry(items[key]), **change)
    items[key] = entry(e["dtype"], e["shape"], e["shard"], e["offset"],
                       e["size"], e["crc"])
    write_index(sm, items)


def test_tensor_larger_than_its_declared_shape(tmp_path):
    sm = savedmodel(tmp_path)
    items = index_items(sm)
    size = decode_entry(items[_first_variable(items)])["size"]
    _rewrite_entry(sm, size=size + 4)
    refused(tmp_path, sm, match=f"declares {size + 4} bytes for shape")


@pytest.mark.parametrize("change, match", [
    ({"shape": [2 ** 40, 2 ** 40]}, "absurd shape"),
    ({"shape": [-3]}, "absurd shape"),
    ({"shape": [1] * 40}, "rank 40"),
    ({"shape": [2 ** 31 - 1] * 8}, "bytes for shape"),
    ({"offset": 2 ** 62}, "past the end of shard"),
    ({"offset": -5}, "negative offset"),
    ({"shard": 7}, "shard 7 of 1"),
    ({"dtype": 20}, "dtype resource"),
    ({"dtype": 7}, "string tensor"),
])
def test_absurd_bundle_entries(tmp_path, change, match):
    sm = savedmodel(tmp_path)
    _rewrite_entry(sm, **change)
    refused(tmp_path, sm, match=match)


def test_bundle_header_must_be_little_endian(tmp_path):
    sm = savedmodel(tmp_path)
    items = index_items(sm)
    items[b""] = field(1, 1) + field(2, 1)
    write_index(sm, items)
    refused(tmp_path, sm, match="big-endian")
    items[b""] = field(1, 10 ** 9)
    write_index(sm, items)
    refused(tmp_path, sm, match="shards")


def test_savedmodel_paths_that_leave_the_directory(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sm = savedmodel(tmp_path)
    shard = sm / "variables" / "variables.data-00000-of-00001"
    shutil.move(shard, outside / shard.name)
    shard.symlink_to(outside / shard.name)
    refused(tmp_path, sm, match="leaves the model directory")
    shard.unlink()
    shutil.move(outside / shard.name, shard)

    meta = sm / "keras_metadata.pb"
    shutil.move(meta, outside / meta.name)
    meta.symlink_to(outside / meta.name)
    refused(tmp_path, sm, match="leaves the model directory")
    meta.unlink()
    shutil.move(outside / meta.name, meta)

    shutil.move(sm / "variables", outside / "variables")
    (sm / "variables").symlink_to(outside / "variables")
    refused(tmp_path, sm, match="leaves the model directory")


def test_object_graph_that_disagrees_with_the_config(tmp_path):
    """A checkpoint of another model under this metadata."""
    sm = savedmodel(tmp_path)
    other = fixture_dir("k2_sm_two_io") / "savedmodel"
    shutil.rmtree(sm / "variables")
    shutil.copytree(other / "variables", sm / "variables")
    msg = refused(tmp_path, sm, match="do not belong together")
    assert "config" in msg


def test_corrupt_object_graph_string(tmp_path):
    """The object graph's own crc is checked (a string tensor's crc covers
    its length, the length's crc and the bytes)."""
    sm = savedmodel(tmp_path)
    items = index_items(sm)
    e = decode_entry(items[b"_CHECKPOINTABLE_OBJECT_GRAPH"])
    shard = sm / "variables" / "variables.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[e["offset"] + e["size"] - 3] ^= 0x10
    shard.write_bytes(bytes(data))
    refused(tmp_path, sm, match="crc32c mismatch")
    data[e["offset"] + e["size"] - 3] ^= 0x10
    data[e["offset"]] ^= 0x01  # the length varint: its own crc fails
    shard.write_bytes(bytes(data))
    refused(tmp_path, sm, match="_CHECKPOINTABLE_OBJECT_GRAPH")
    assert masked(crc32c(b"")) == 0xA282EAD8
