"""``keras2torch inspect``, the traced translation behind it, per-layer
verification and ``keras2torch rules``."""
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import migrate
from cli.main import main
from migrate import read
from migrate.errors import ConversionError
from migrate.inspect import describe_rules, inspect_model, rules_markdown
from migrate.rules import Emit, Out, Rule, chain
from migrate.rules.registry import RULES
from migrate.verify import (compare, compare_layers, make_inputs, run_port,
                            run_traced)

from conftest import MODELS, ROOT, fixture_dir, model_files, needs_tf

CNN = fixture_dir("k3_small_cnn") / "model.keras"
CUSTOM = fixture_dir("k3_custom_layers") / "model.keras"


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_layer_table():
    table = inspect_model(CNN)
    assert table.supported and table.model_name == "small_cnn"
    rows = {r.node: r for r in table.rows}
    assert list(rows) == ["conv1", "bn1", "pool1", "conv2", "residual",
                          "pool2", "flatten", "dropout", "logits"]
    conv1 = rows["conv1"]
    assert (conv1.class_name, conv1.rule, conv1.status) == \
        ("Conv2D", "conv2d", "ok")
    assert conv1.output_shapes == [[None, 7, 6, 8]]
    assert conv1.params == 3 * 3 * 3 * 8 + 8
    assert conv1.torch_name == "conv1"
    assert conv1.module.startswith("nn.Conv2d(3, 8, kernel_size=3")
    assert conv1.code == ["conv1 = F.relu(self.conv1(x))  # (B, 8, 7, 6)"]
    assert rows["bn1"].params == 4 * 8  # gamma, beta, moving mean and var
    assert rows["pool1"].module is None
    assert rows["pool1"].code[-1].startswith("pool1 = F.max_pool2d(pool1, 3")
    assert rows["residual"].code == ["residual = pool1 + conv2"]


def test_unsupported_layers_are_listed_with_the_rest():
    table = inspect_model(CUSTOM)
    assert not table.supported
    status = {r.node: (r.status, r.rule) for r in table.rows}
    assert status == {"scale_a": ("unsupported", None),
                      "dense": ("blocked", "dense"),
                      "shift": ("unsupported", None),
                      "scale_b": ("unsupported", None)}
    assert [p[0] for p in table.problems] == ["scale_a", "shift", "scale_b"]


def test_shared_and_nested_layers_get_one_row_per_call():
    table = inspect_model(fixture_dir("k3_shared") / "model.keras")
    nodes = [r.node for r in table.rows]
    assert nodes.count("shared_dense") == 1
    assert "shared_dense#1" in nodes and "shared_dense#2" in nodes
    assert {r.torch_name for r in table.rows
            if r.keras_name == "shared_dense"} == {"shared_dense"}
    table = inspect_model(fixture_dir("k3_nested") / "model.keras")
    assert "inner/inner_d1#1" in [r.node for r in table.rows]


def test_cli_table_and_json():
    r = run("inspect", CNN)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == ("small_cnn (keras, Keras 3.15.1): 9 layer calls, "
                        "493 parameters")
    assert lines[1].split() == ["LAYER", "CLASS", "OUTPUT", "SHAPE",
                                "PARAMS", "RULE", "TORCH"]
    assert re.match(r"conv1 +Conv2D +\(B, 7, 6, 8\) +224 +conv2d +"
                    r"self\.conv1 = nn\.Conv2d\(3, 8", lines[2])
    r = run("inspect", CNN, "--format", "json")
    data = json.loads(r.output)
    assert data["supported"] and data["parity"] is None
    assert data["layers"][0]["node"] == "conv1"
    assert set(data["layers"][0]) == {
        "node", "keras_name", "class_name", "output_shapes", "params",
        "rule", "status", "reason", "torch_name", "module", "code"}


def test_cli_unsupported_exits_1(tmp_path):
    r = run("inspect", CUSTOM)
    assert r.exit_code == 1
    assert re.search(r"scale_a +Scale +\? +0 +UNSUPPORTED +no rule", r.output)
    assert "3 layer(s) cannot be converted:" in r.output
    r = run("inspect", CUSTOM, "--html", tmp_path / "r.html")
    assert r.exit_code == 1 and (tmp_path / "r.html").is_file()


def test_cli_errors(tmp_path):
    r = run("inspect", tmp_path / "missing.keras")
    assert r.exit_code == 2 and "no such file" in r.output
    r = run("inspect", CNN, "--per-layer")
    assert r.exit_code == 2 and "--per-layer needs --verify" in r.output


def _stable_cases():
    out = []
    for d in sorted(MODELS.iterdir()):
        for label, m, w in model_files(d)[:1]:
            out.append(pytest.param(d, m, w, id=d.name))
    return out


@pytest.mark.parametrize("case_dir, model, weights", _stable_cases())
def test_traced_port_computes_what_the_port_computes(case_dir, model,
                                                     weights):
    """Every layer call's traced value, at the model's outputs, equals the
    stored Keras outputs as closely as the port itself does."""
    from migrate.userrules import load_rule_files
    rules = (load_rule_files([ROOT / "tests" / "data" / "custom_rules.py"])
             if case_dir.name == "k3_custom_layers" else None)
    try:
        conv = migrate.convert(model, weights, rules=rules)
    except ConversionError as exc:
        pytest.skip(f"does not convert here ({exc})")
    with np.load(case_dir / "reference.npz") as ref:
        n_in = sum(k.startswith("in_") for k in ref.files)
        inputs = [ref[f"in_{i}"] for i in range(n_in)]
    inputs = [a.astype(t.dtype) if t.dtype.startswith("float")
              and a.dtype.kind in "iu" else a
              for a, t in zip(inputs, conv.program.inputs)]
    nodes, values = run_traced(model, weights, conv, inputs, rules)
    assert [n[0] for n in nodes] == [r.node for r in inspect_model(
        model, weights, rules=rules).rows]
    port = run_port(conv, inputs)
    with read.open_model(model, weights) as src:
        refs = [o.ref for o in src.graph.outputs]
    for ref, want in zip(refs, port):
        got = values[ref.node][ref.index]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_traced_port_runs_in_float64():
    """``run_traced(..., dtype=torch.float64)`` (bench/efficientnet_drift.py
    compares the port with Keras in float64 layer by layer): every value is
    float64, within float32 rounding of the float32 run."""
    import torch
    conv = migrate.convert(CNN)
    inputs = make_inputs(conv.program)
    _, v32 = run_traced(CNN, None, conv, inputs)
    _, v64 = run_traced(CNN, None, conv, inputs, dtype=torch.float64)
    assert v64.keys() == v32.keys()
    for node, outs in v64.items():
        for i, got in outs.items():
            assert got.dtype == np.float64
            want = v32[node][i]
            assert np.abs(got - want).max() <= 1e-5 * max(
                1.0, np.abs(want).max())


def test_compare_layers_names_the_first_divergence():
    nodes = [("a", "a", "Dense", "a"), ("b", "b", "ReLU", None),
             ("c", "c", "Dense", "c"), ("d", "d", "Dense", "d")]
    k = {n: {0: np.full((2, 3), 100.0)} for n in "abcd"}
    ported = {"a": {0: np.full((2, 3), 100.0 + 5e-3)},  # within 1e-4 * 100
              "b": {0: np.full((2, 3), 100.5)},
              "c": {0: np.full((2, 4), 100.0)},
              "d": {0: np.full((2, 3), 100.0)}}
    got = compare_layers(k, (nodes, ported), 1e-4, False)
    assert [r["status"] for r in got["layers"]] == \
        ["ok", "diverged", "diverged", "ok"]
    assert got["first_divergence"]["node"] == "b"
    assert got["first_divergence"]["max_abs_err"] == pytest.approx(0.5)
    assert "Keras shape [2, 3], port shape [2, 4]" in got["layers"][2][
        "reason"]
    same = compare_layers(k, (nodes[3:], ported), 1e-4, False)
    assert same["first_divergence"] is None
    assert "how model.py joins them" in same["per_layer_note"]
    missing = compare_layers({}, (nodes[:1], ported), 1e-4, True)
    assert missing["layers"][0]["status"] == "not compared"


def test_non_finite_outputs_match_only_where_keras_has_them():
    """A model whose Keras outputs hold NaN or infinities (a log of a
    negative, a variance below zero) matches a port that gives the same
    values at the same places; one side alone non-finite is a failure."""
    keras = np.array([[1.0, np.nan, np.inf, -np.inf]])
    same = compare([keras], [keras.copy()], ["y"], 1e-5)
    assert same["passed"] and same["max_abs_err"] == 0.0
    assert same["outputs"][0]["max_rel_err"] == 0.0  # scale: finite values
    for i, value in enumerate([np.nan, 0.0, 5.0, np.inf]):
        port = keras.copy()
        port[0, i] = value
        got = compare([keras], [port], ["y"], 1e-5)
        assert not got["passed"] and got["max_abs_err"] == np.inf, i


def _wrong_pool(call):
    """MaxPooling2D written as average pooling."""
    x = call.inputs[0]
    from migrate.layout import channels_first
    x = call.want(0, channels_first(4))
    shape = (x.shape[0], 4, 3, x.shape[3])
    return Emit([Out(chain(f"F.avg_pool2d(F.pad({x.expr}, (0, 1, 1, 1)), "
                           "3, 2)"), shape, x.layout)])


@needs_tf
@pytest.mark.keras
def test_per_layer_all_match():
    parity = migrate.verify(CNN, per_layer=True)
    assert parity["passed"] and parity["first_divergence"] is None
    rows = parity["layers"]
    assert [r["node"] for r in rows][:3] == ["conv1", "bn1", "pool1"]
    assert all(r["status"] == "ok" and r["max_abs_err"] < 1e-5
               for r in rows)
    assert rows[0]["shape"] == [2, 7, 6, 8]  # Keras layout


@needs_tf
@pytest.mark.keras
def test_per_layer_names_the_first_wrong_layer(monkeypatch):
    monkeypatch.setitem(RULES, "MaxPooling2D", Rule("MaxPooling2D",
                                                    _wrong_pool))
    parity = migrate.verify(CNN, per_layer=True)
    assert not parity["passed"]
    first = parity["first_divergence"]
    assert (first["node"], first["class_name"]) == ("pool1", "MaxPooling2D")
    assert first["max_abs_err"] > 1e-2
    status = {r["node"]: r["status"] for r in parity["layers"]}
    assert status["conv1"] == status["bn1"] == "ok"
    r = run("inspect", CNN, "--verify", "--per-layer")
    assert r.exit_code == 1
    assert "first divergence: layer 'pool1' (MaxPooling2D)" in r.output


@needs_tf
@pytest.mark.keras
def test_per_layer_blames_the_emitter_when_layers_match():
    conv = migrate.convert(CNN)
    conv.source = conv.source.replace("F.softmax(", "F.log_softmax(")
    parity = migrate.verify(CNN, conv, per_layer=True)
    assert not parity["passed"] and parity["first_divergence"] is None
    assert "how model.py joins them" in parity["per_layer_note"]


@needs_tf
@pytest.mark.keras
def test_convert_verify_per_layer_cli(tmp_path):
    r = run("convert", CNN, "-o", tmp_path / "port", "--verify",
            "--per-layer")
    assert r.exit_code == 0, r.output
    assert "per layer: all 9 compared layer calls match Keras" in r.output
    saved = json.loads((tmp_path / "port" / "conversion.json").read_text())
    assert [r["node"] for r in saved["parity"]["layers"]][0] == "conv1"


def test_rules_lists_every_rule():
    from migrate.read.expand import EXPANDERS
    rows = describe_rules()
    keys = [k for r in rows for k in r["keras"]]
    models = [k for k in EXPANDERS if not k.startswith("keras_nlp>")]
    assert sorted(keys) == sorted(list(RULES) + models)
    undescribed = [r["keras"] for r in rows if not r["torch"]]
    assert not undescribed, "add them to migrate/inspect.py's descriptions"
    dense = next(r for r in rows if "Dense" in r["keras"])
    assert dense["torch"].startswith("`nn.Linear`")
    assert dense["rule"] == "core.dense"
    r = run("rules", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.output) == rows
    r = run("rules")
    assert r.exit_code == 0 and re.search(r"^Dense +nn\.Linear", r.output,
                                          re.M)
    assert run("rules", "--format", "markdown").output == rules_markdown(rows)


def test_readme_layer_table_is_generated():
    """The README's table is ``keras2torch rules --format markdown``
    (regenerate it after adding a rule)."""
    readme = (ROOT / "README.md").read_text()
    assert rules_markdown(describe_rules()) in readme, (
        "README.md's layer table is stale: paste the output of "
        "`keras2torch rules --format markdown`")


RULES_FILE = ROOT / "tests" / "data" / "custom_rules.py"


def test_inspect_and_rules_take_rules_files():
    assert run("inspect", CUSTOM).exit_code == 1
    r = run("inspect", CUSTOM, "--rules", RULES_FILE, "--format", "json")
    assert r.exit_code == 0, r.output
    rows = {row["node"]: row for row in json.loads(r.output)["layers"]}
    assert (rows["scale_a"]["rule"], rows["scale_a"]["status"]) == \
        ("scale", "ok")
    r = run("rules", "--rules", RULES_FILE, "--format", "json")
    listed = {k: row["rule"] for row in json.loads(r.output)
              for k in row["keras"]}
    assert listed["Scale"] == "custom_rules.py:scale"
    assert "Scale" not in RULES
    assert not re.search(r"^Scale ", run("rules").output, re.M)
