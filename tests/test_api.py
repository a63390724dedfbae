"""The Python API and what convert writes, on whole small models."""
import ast
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import migrate
from migrate.verify import run_port

from conftest import fixture_dir, model_files, needs_tf


def _load(case):
    d = fixture_dir(case)
    with np.load(d / "reference.npz") as ref:
        inputs = [ref[k] for k in sorted(ref.files) if k.startswith("in_")]
        outputs = [ref[k] for k in sorted(ref.files) if k.startswith("out_")]
    return d, inputs, outputs


@pytest.mark.parametrize("case", ["k3_small_cnn", "k2_small_cnn",
                                  "k3_text_mlp", "k2_text_mlp"])
def test_every_format_gives_byte_identical_source_and_weights(case):
    d = fixture_dir(case)
    convs = [migrate.convert(m, w) for _, m, w in model_files(d)]
    assert len(convs) >= 2
    for c in convs[1:]:
        # the same code; the header's command names each file
        assert _code(c.source) == _code(convs[0].source)
        assert c.state_dict.keys() == convs[0].state_dict.keys()
        for k, v in c.state_dict.items():
            assert torch.equal(v, convs[0].state_dict[k]), k


def test_keras2_and_keras3_saves_of_one_architecture_give_one_source():
    k3 = migrate.convert(fixture_dir("k3_small_cnn") / "model.keras")
    k2 = migrate.convert(fixture_dir("k2_small_cnn") / "model.h5")
    assert _code(k3.source) == _code(k2.source)


def _code(source: str) -> str:
    return re.sub(r"^# Regenerate: .*\n", "", source, flags=re.M)


def test_the_header_command_works_from_the_output_folders_parent(tmp_path):
    """Base names and the options used: no absolute path, no timestamp;
    the folder written to is named once saved."""
    d = fixture_dir("k3_small_cnn")
    conv = migrate.convert(d / "model.json", d / "model.weights.h5",
                           flat=True)
    assert "# Regenerate: keras2torch convert model.json --weights " \
        "model.weights.h5 -o OUTDIR --flat\n" in conv.source
    conv.save(tmp_path / "port")
    text = (tmp_path / "port" / "model.py").read_text()
    assert "# Regenerate: keras2torch convert model.json --weights " \
        "model.weights.h5 -o port --flat\n" in text
    assert str(tmp_path) not in text and str(d) not in text


def test_conversion_object():
    d, inputs, outputs = _load("k3_small_cnn")
    conv = migrate.convert(d / "model.keras")
    assert conv.class_name == "SmallCnn"
    model = conv.module()
    assert not model.training
    assert set(conv.state_dict) == set(model.state_dict())
    got = run_port(conv, inputs)
    assert np.abs(got[0] - outputs[0]).max() < 1e-5
    src = conv.source
    assert "self.conv1 = nn.Conv2d(3, 8" in src
    assert "eps=0.001, momentum=0.01" in src
    imports = [ln for ln in src.splitlines() if ln.startswith(("import", "from"))]
    assert all("torch" in ln for ln in imports)
    assert str(d) not in src  # no paths: the base name, in the header only
    assert [ln for ln in src.splitlines() if "model.keras" in ln] == [
        "# Regenerate: keras2torch convert model.keras -o OUTDIR"]


def test_report_shape():
    d = fixture_dir("k3_small_cnn")
    r = migrate.convert(d / "model.keras").report
    assert set(r) >= {"tool", "source", "module", "layout", "inputs", "outputs",
                      "layers", "warnings", "parity"}
    assert r["tool"]["name"] == "keras2torch"
    assert r["source"]["format"] == "keras"
    assert len(r["source"]["sha256"]) == 64
    assert r["source"]["keras_version"].startswith("3.")
    assert r["module"] == {"file": "model.py", "class_name": "SmallCnn",
                           "weights_file": "model.safetensors"}
    (inp,) = r["inputs"]
    assert inp["keras_shape"] == [None, 13, 11, 3]
    assert inp["torch_shape"] == [None, 3, 13, 11]
    assert inp["permutation"] == [0, 3, 1, 2]
    conv1 = next(l for l in r["layers"] if l["keras_name"] == "conv1")
    assert conv1 == {"keras_name": "conv1", "class_name": "Conv2D",
                     "rule": "conv2d", "torch_name": "conv1",
                     "params": 3 * 8 * 9 + 8}
    assert r["permutes"] == []
    assert r["parity"] is None


def test_layout_keras_keeps_keras_interface():
    d, inputs, outputs = _load("k3_small_cnn")
    conv = migrate.convert(d / "model.keras", layout="keras")
    assert conv.report["inputs"][0]["permutation"] == [0, 1, 2, 3]
    out = conv.module()(torch.from_numpy(inputs[0]))
    assert np.abs(out.detach().numpy() - outputs[0]).max() < 1e-5
    assert "--layout keras" in conv.source


def test_class_name_option_and_validation():
    d = fixture_dir("k3_small_cnn")
    assert migrate.convert(d / "model.keras", class_name="Net").class_name == "Net"
    with pytest.raises(migrate.ConversionError):
        migrate.convert(d / "model.keras", class_name="not valid")


def test_save_writes_loadable_files(tmp_path):
    from safetensors.torch import load_file
    d = fixture_dir("k3_small_cnn")
    conv = migrate.convert(d / "model.keras")
    out = conv.save(tmp_path / "port")
    assert sorted(p.name for p in out.iterdir()) == [
        "conversion.json", "model.py", "model.safetensors"]
    report = json.loads((out / "conversion.json").read_text())
    assert report["module"]["class_name"] == "SmallCnn"
    model = conv.module_class()()
    model.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    assert [p.name for p in tmp_path.iterdir()] == ["port"]  # no temp dirs left


def test_save_pt_and_force(tmp_path):
    d = fixture_dir("k3_small_cnn")
    conv = migrate.convert(d / "model.keras", weights_format="pt")
    out = conv.save(tmp_path / "port")
    state = torch.load(out / "model.pt", weights_only=True)
    conv.module_class()().load_state_dict(state, strict=True)
    with pytest.raises(migrate.ConversionError, match="already exists"):
        conv.save(out)
    conv.save(out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["port"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import migrate.stream
    d = fixture_dir("k3_small_cnn")
    conv = migrate.convert(d / "model.keras")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(migrate.stream, "_write_tensor", boom)
    with pytest.raises(migrate.ConversionError):
        conv.save(tmp_path / "port")
    assert list(tmp_path.iterdir()) == []


def test_port_runs_with_only_torch(tmp_path):
    """The written port imports neither keras2torch, Keras, TF nor h5py."""
    d, inputs, outputs = _load("k3_small_cnn")
    conv = migrate.convert(d / "model.keras", weights_format="pt")
    conv.save(tmp_path / "port")
    np.save(tmp_path / "x.npy", inputs[0].transpose(0, 3, 1, 2))
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"migrate", "cli", "keras",
                        "tensorflow", "tf_keras", "h5py", "safetensors"}}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(tmp_path / "port")!r})
        import numpy as np, torch
        from model import SmallCnn
        m = SmallCnn()
        m.load_state_dict(torch.load({str(tmp_path / "port" / "model.pt")!r},
                                     weights_only=True))
        m.eval()
        y = m(torch.from_numpy(np.load({str(tmp_path / "x.npy")!r})))
        np.save({str(tmp_path / "y.npy")!r}, y.detach().numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    y = np.load(tmp_path / "y.npy")
    assert np.abs(y - outputs[0]).max() < 1e-5


def test_train_mode_keeps_dropout_and_batchnorm_trainable():
    d = fixture_dir("k3_small_cnn")
    model = migrate.convert(d / "model.keras").module().train()
    assert isinstance(model.dropout, torch.nn.Dropout) and model.dropout.p == 0.3
    assert model.bn1.momentum == pytest.approx(0.01)
    x = torch.randn(4, 3, 13, 11)
    model(x).sum().backward()
    assert model.conv1.weight.grad is not None


@pytest.mark.parametrize("fmt", ["model.keras", "model.h5"])
def test_hostile_names_never_reach_code(fmt):
    d, inputs, outputs = _load("k3_hostile_names")
    conv = migrate.convert(d / fmt)
    src = conv.source
    tree = ast.parse(src)
    # the only imports are torch; nothing calls a bare name like __import__
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", "")]
            assert all(n.split(".")[0] in {"torch", "nn", "F", ""} or
                       n in {"nn"} for n in names if n), names
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"__import__", "eval", "exec", "open"}
    strings = [n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert len(strings) == 1  # the docstring, names escaped in its source
    assert 'model"""\n__import__' not in src and "x\nimport os" not in src
    assert src.isascii()
    attrs = [r["torch_name"] for r in conv.report["layers"][1:]]
    assert len(set(attrs)) == len(attrs)
    for a in attrs:
        assert a.isidentifier() and a not in {"forward", "training", "class",
                                               "torch", "self"}
    got = run_port(conv, inputs)
    assert np.abs(got[0] - outputs[0]).max() < 1e-5


def test_unsupported_layers_are_all_named_at_once():
    with pytest.raises(migrate.UnsupportedLayers) as info:
        migrate.convert(fixture_dir("k3_custom_layers") / "model.keras")
    err = info.value
    assert [(n, c) for n, c, _ in err.problems] == [
        ("scale_a", "Scale"), ("shift", "Shift"), ("scale_b", "Scale")]
    msg = str(err)
    assert "\n" not in msg
    assert "Scale x2" in msg and "Shift x1" in msg and "custom rule" in msg


def test_custom_rule_converts_a_custom_layer():
    from migrate.rules import Emit, Out, Rule, chain

    def scale(call):
        x = call.inputs[0]
        return Emit([Out(chain(f"{x.expr} * 2.0"), x.shape, x.layout)])

    def shift(call):
        x = call.inputs[0]
        return Emit([Out(chain(f"{x.expr} + 1.0"), x.shape, x.layout)])

    rules = {"fixtures>Scale": Rule("fixtures>Scale", scale),
             "Shift": Rule("Shift", shift)}
    d, inputs, outputs = _load("k3_custom_layers")
    conv = migrate.convert(d / "model.keras", rules=rules)
    got = run_port(conv, inputs)
    assert np.abs(got[0] - outputs[0]).max() < 1e-5


def test_a_crashing_rule_is_a_layer_problem_unless_debugging(monkeypatch):
    from migrate.rules import Rule

    def broken(call):
        return {}["missing"]

    rules = {"fixtures>Scale": Rule("fixtures>Scale", broken)}
    path = fixture_dir("k3_custom_layers") / "model.keras"
    with pytest.raises(migrate.UnsupportedLayers) as info:
        migrate.convert(path, rules=rules)
    reason = info.value.problems[0][2]
    assert "cannot read this layer's config (KeyError" in reason
    assert "KERAS2TORCH_DEBUG=1" in reason
    monkeypatch.setenv("KERAS2TORCH_DEBUG", "1")
    with pytest.raises(KeyError):
        migrate.convert(path, rules=rules)


@needs_tf
@pytest.mark.keras
@pytest.mark.parametrize("case, fmt", [("k3_dict_io", "keras"),
                                       ("k2_dict_io", "h5")])
def test_verify_feeds_and_reads_dicts_as_keras_flattens_them(case, fmt):
    """Dict inputs and outputs are in sorted key order on both sides."""
    path = fixture_dir(case) / f"model.{fmt}"
    conv = migrate.convert(path)
    assert [o["name"] for o in conv.report["outputs"]] == ["department",
                                                           "priority"]
    parity = migrate.verify(path, conv)
    assert parity["passed"] and parity["max_abs_err"] < 1e-5


@needs_tf
@pytest.mark.keras
@pytest.mark.parametrize("case, fmt", [("k3_fixed_batch", "keras"),
                                       ("k2_fixed_batch", "h5"),
                                       ("k3_conv_channels_first", "keras")])
def test_verify_runs_fixed_batch_and_channels_first_models(case, fmt):
    """Keras runs an Input(batch_size=3) model only on batches of 3, and
    channels_first convolutions only under XLA on a CPU: verify does both
    (the port itself takes any batch)."""
    path = fixture_dir(case) / f"model.{fmt}"
    conv = migrate.convert(path)
    parity = migrate.verify(path, conv)
    assert parity["passed"] and parity["max_abs_err"] < 1e-4
    if "fixed" in case:
        assert conv.report["inputs"][0]["keras_shape"][0] is None
        x = torch.zeros(5, 4)
        assert conv.module()(x).shape == (5, 2)


@needs_tf
@pytest.mark.keras
@pytest.mark.parametrize("fmt", ["h5", "json"])
def test_verify_runs_cudnn_models_on_a_cpu(fmt):
    """CuDNN layers run only on a GPU: verify runs their CPU twin, into
    which tf-keras converts the weights."""
    d = fixture_dir("k2_cudnn_rnn")
    path, weights = (d / "model.h5", None) if fmt == "h5" else (
        d / "model.json", d / "model_weights.h5")
    conv = migrate.convert(path, weights)
    parity = migrate.verify(path, conv, weights)
    assert parity["passed"] and parity["max_abs_err"] < 1e-5
