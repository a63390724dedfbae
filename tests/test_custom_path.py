"""The custom-layer path (issue 13, section 4): from refusal to a verified
port in a few edits.

* ``keras2torch rules new MODEL`` writes a rule file for what no rule
  converts (fixtures k2/k3_custom_port: a custom layer class with config and
  weights, and a registered activation function in ``Activation`` and in
  ``Dense(activation=)``); it loads with ``--rules`` as it is and refuses
  with "fill me in"; filled in here (three edits), it matches the stored
  Keras outputs;
* names and values from a hostile model file never become code;
* rule packs installed as distributions (entry-point group
  ``keras2torch.rules``) are loaded automatically: real ``.dist-info``
  distributions on ``sys.path``, and a pip install into a temporary venv
  (slow); ``--no-plugins`` / ``plugins=False``; a user rule overrides a
  pack's; two packs with one key are an error naming both; batch workers
  get the same packs.
"""
import ast
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import migrate
from cli.main import main
from migrate.errors import ConversionError, UnsupportedLayers
from migrate.skeleton import rule_skeleton
from migrate.userrules import load_rule_files
from migrate.verify import run_port

from conftest import ROOT, fixture_dir, needs_tf

PORTS = [("k3_custom_port", "keras"), ("k3_custom_port", "h5"),
         ("k2_custom_port", "h5"), ("k2_custom_port", "keras")]
KEY = "fixtures>GatedScale"
ANSWER = ROOT / "tests" / "data" / "custom_port_rules.py"


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def model_path(case, fmt):
    return fixture_dir(case) / f"model.{fmt}"


def reference(case):
    with np.load(fixture_dir(case) / "reference.npz") as ref:
        return ref["in_0"], ref["out_0"]


def fill_in(text: str) -> str:
    """What the user writes into the skeleton: weight names (Keras 3 files
    store them by position), the layer's body, the activation's body."""
    body = textwrap.indent(textwrap.dedent('''\
        module, state = parameters(gate=gate, scale=scale)
        a = f"self.{call.attr}"
        code = f"{x.expr} * torch.sigmoid({a}.gate) * {a}.scale + {offset}"
        return Emit([Out(chain(code), x.shape, x.layout)],
                    module=module, state=state)
        '''), "    ")
    edits = [("['weight_0', 'weight_1']", "['gate', 'scale']"),
             ("weight_0 = weights['weight_0']", "gate = weights['gate']"),
             ("weight_1 = weights['weight_1']", "scale = weights['scale']"),
             (f"    fill_me_in('the rule for {KEY}')\n", body),
             ("    fill_me_in('the activation rule for fixtures>hard_swish')"
              "\n",
              '    return f"{x.expr} * F.relu6({x.expr} + 3.0) / 6.0"\n')]
    for old, new in edits:
        if "weight_" in old and old not in text:
            continue  # named weights (.h5): the skeleton has their names
        assert old in text, old
        text = text.replace(old, new)
    return text


def max_err(conv, case):
    x, want = reference(case)
    return float(np.abs(run_port(conv, [x])[0] - want).max())


# -- rules new: the skeleton --------------------------------------------------
@pytest.mark.parametrize("case, fmt", PORTS)
def test_skeleton_shows_what_the_model_says(case, fmt, tmp_path,
                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "my_rules.py"
    r = run("rules", "new", model_path(case, fmt), "-o", "my_rules.py")
    assert r.exit_code == 0, r.output
    text = out.read_text()
    ast.parse(text)
    assert f"@rule('{KEY}')" in text
    assert "@activation_rule('fixtures>hard_swish')" in text
    assert "Used by: act (Activation), head (Dense)" in text
    # config keys with this model's values; the base keys left out
    assert "offset = call.get('offset', 0.25)" in text
    assert "axis = call.get('axis', -1)" in text
    assert "call.get('trainable'" not in text
    # weights (names where the file has them), shapes; input shapes
    assert text.count("(6,) float32") == 2
    if fmt == "h5":
        assert "weights = call.weights(['gate', 'scale'])" in text
    assert "gated: input (None, 5, 4, 6) float32 -> output" in text
    if case.startswith("k3"):  # Keras 3 records the output shape
        assert "-> output (None, 5, 4, 6)" in text
    assert "--rules my_rules.py" in text  # the next command
    assert "-o my_rules.py" in text  # and the one that wrote it


@pytest.mark.parametrize("case, fmt", PORTS[:2])
def test_skeleton_loads_and_refuses_with_fill_me_in(case, fmt, tmp_path):
    out = tmp_path / "my_rules.py"
    assert run("rules", "new", model_path(case, fmt), "-o", out
               ).exit_code == 0
    r = run("convert", model_path(case, fmt), "-o", tmp_path / "port",
            "--rules", out)
    assert r.exit_code == 1, r.output
    assert f"'gated' (GatedScale): fill me in: the rule for {KEY}" in \
        r.output
    assert "Traceback" not in r.output and not (tmp_path / "port").exists()


@pytest.mark.parametrize("case, fmt", PORTS)
@pytest.mark.parametrize("layout", ["torch", "keras"])
def test_filled_in_skeleton_matches_keras(case, fmt, layout, tmp_path):
    """Refusal -> rules new -> three edits -> a port equal to Keras."""
    with pytest.raises(UnsupportedLayers, match="keras2torch rules new"):
        migrate.convert(model_path(case, fmt))
    out = tmp_path / "my_rules.py"
    out.write_text(fill_in(rule_skeleton(model_path(case, fmt))))
    conv = migrate.convert(model_path(case, fmt), layout=layout,
                           rules=load_rule_files([out]))
    assert max_err(conv, case) <= 1e-5
    assert "def hard_swish(x):" in conv.source  # uses x twice: a helper
    assert "nn.ParameterDict" in conv.source


@needs_tf
@pytest.mark.keras
@pytest.mark.parametrize("case", ["k3_custom_port", "k2_custom_port"])
def test_the_whole_walk_verified_against_keras(case, tmp_path, monkeypatch):
    """As a user: refused -> rules new -> fill in -> convert --verify with
    the model's own Keras classes (--custom-objects), Keras running it.
    (.keras files: tf-keras cannot load its own legacy .h5 of a model with
    a registered activation function, 'Unknown activation function:
    function'.)"""
    monkeypatch.chdir(tmp_path)
    model = model_path(case, "keras")
    r = run("convert", model, "-o", "port")
    assert r.exit_code == 1 and "keras2torch rules new MODEL" in r.output
    assert run("rules", "new", model, "-o", "my_rules.py").exit_code == 0
    Path("my_rules.py").write_text(fill_in(Path("my_rules.py").read_text()))
    r = run("convert", model, "-o", "port", "--rules", "my_rules.py",
            "--verify", "--custom-objects",
            ROOT / "tests" / "data" / "custom_port_keras.py")
    assert r.exit_code == 0, r.output
    err = float(r.output.split("max abs err ")[1].split(",")[0])
    assert err <= 1e-5


@pytest.mark.parametrize("case", ["k3_custom_multi", "k2_custom_multi"])
def test_several_inputs_outputs_calls_and_a_nested_layer(case, tmp_path):
    """PairMix: two inputs, two outputs, called twice on other shapes;
    PlainScale inside a nested Sequential."""
    model = model_path(case, "keras")
    text = rule_skeleton(model)
    assert "inputs = call.inputs  # 2 tensors" in text
    assert "alpha = call.get('alpha', 0.3)" in text
    assert "factor = call.get('factor', 2.5)" in text
    assert "one Out per output (2)" in text
    assert "#   mix: input (None, 6) float32, (None, 6) float32 -> output" \
        in text and "#   mix#1: input " in text
    if case.startswith("k2"):  # after PairMix: Keras 2 records no shapes
        assert "#   inner/inner_scale: input ? -> output ?" in text
    else:
        assert "#   inner/inner_scale: input (None, 4) float32" in text
        assert "mix#1: input (None, 4) float32, (None, 4) float32 -> " \
            "output (None, 4),\n#     (None, 4)" in text
    text = text.replace("    fill_me_in('the rule for fixtures>PairMix')\n",
                        textwrap.indent(textwrap.dedent('''\
        a, b = inputs
        return Emit([Out(chain(f"{a.expr} * {alpha} + {b.expr}"), a.shape,
                         a.layout),
                     Out(chain(f"{a.expr} - {b.expr}"), a.shape, a.layout)])
        '''), "    "))
    text = text.replace("    fill_me_in('the rule for fixtures>PlainScale')\n",
                        '    return Emit([Out(chain(f"{x.expr} * {factor}"), '
                        'x.shape, x.layout)])\n')
    (tmp_path / "rules.py").write_text(text)
    conv = migrate.convert(model, rules=load_rule_files([tmp_path /
                                                         "rules.py"]))
    with np.load(fixture_dir(case) / "reference.npz") as ref:
        got = run_port(conv, [ref["in_0"], ref["in_1"]])[0]
        assert float(np.abs(got - ref["out_0"]).max()) <= 1e-5


def test_the_committed_answer_converts_every_format():
    rules = load_rule_files([ANSWER])
    for case, fmt in PORTS:
        conv = migrate.convert(model_path(case, fmt), rules=rules)
        assert max_err(conv, case) <= 1e-5, (case, fmt)


def test_the_readme_examples_convert(tmp_path):
    """README, "Custom rules": its layer rule and activation rule."""
    import re
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Custom rules"):
                     readme.index("### Rule packs")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    (tmp_path / "readme_rules.py").write_text("\n".join(blocks))
    rules = load_rule_files([tmp_path / "readme_rules.py"])
    for case, fmt in PORTS:
        conv = migrate.convert(model_path(case, fmt), rules=rules)
        assert max_err(conv, case) <= 1e-5, (case, fmt)


def test_cli_convert_with_the_filled_in_file(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    r = run("convert", model_path("k3_custom_port", "keras"), "-o",
            tmp_path / "port", "--rules", ANSWER)
    assert r.exit_code == 0, r.output
    assert "def hard_swish" in (tmp_path / "port" / "model.py").read_text()
    report = json.loads((tmp_path / "port" / "conversion.json").read_text())
    assert report["rules"] == [  # what the port needs to be made again
        {"keras": "activation:fixtures>hard_swish", "rule": "hard_swish",
         "source": "tests/data/custom_port_rules.py"},
        {"keras": KEY, "rule": "gated_scale",
         "source": "tests/data/custom_port_rules.py"}]


def test_layer_option_writes_an_override(tmp_path):
    model = model_path("k3_custom_port", "keras")
    out = tmp_path / "conv_rules.py"
    r = run("rules", "new", model, "--layer", "conv", "-o", out)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "@rule('Conv2D', override=True)" in text
    assert "Replaces the built-in rule conv2d" in text
    assert "conv2d_builtin = RULES['Conv2D']" in text
    assert "filters = call.get('filters', 6)" in text
    assert "input (None, 5, 4, 3) float32 -> output (None, 5, 4, 6)" in text
    assert "GatedScale" not in text
    with pytest.raises(UnsupportedLayers, match="'conv' .*fill me in"):
        migrate.convert(model, rules=load_rule_files([out]))


def test_a_layer_its_rule_refuses_gets_an_override(tmp_path):
    """A built-in rule that refuses one layer (Dense with a layer object as
    its activation): rules new writes an override for that layer, which
    hands the class's other layers to the built-in rule."""
    src = model_path("k3_custom_port", "keras")
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["config"].get("name") == "head":
            layer["config"]["activation"] = {
                "module": "keras.layers", "class_name": "ReLU",
                "config": {}, "registered_name": None}
    members["config.json"] = json.dumps(config).encode()
    model = tmp_path / "refused.keras"
    with zipfile.ZipFile(model, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    text = rule_skeleton(model)
    assert f"@rule('{KEY}')" in text  # still there, and now also:
    assert "# dense refuses head: activation=" in text
    assert "dense_builtin = RULES['Dense']" in text
    assert "@rule('Dense', override=True)" in text
    assert "    if call.layer.name not in ('head',):  # the others\n" \
        "        return dense_builtin.convert(call)" in text
    assert "input (None, 120) float32 -> output ?" in text
    (tmp_path / "rules.py").write_text(text)
    rules = load_rule_files([tmp_path / "rules.py"])
    rules.update({k: r for k, r in load_rule_files([ANSWER]).items()})
    with pytest.raises(UnsupportedLayers, match="'head' .*fill me in"):
        migrate.convert(model, rules=rules)


def test_an_override_hands_the_other_layers_to_the_built_in_rule(tmp_path):
    model = model_path("k3_custom_multi", "keras")
    text = rule_skeleton(model, layer="proj", rules=load_rule_files(
        [ROOT / "tests" / "data" / "custom_multi_rules.py"]))
    assert "@rule('Dense', override=True)" in text and "PairMix" not in text
    text = text.replace("    fill_me_in('the rule for Dense')\n",
                        "    return dense_builtin.convert(call)\n")
    (tmp_path / "rules.py").write_text(text)
    rules = load_rule_files([ROOT / "tests" / "data" /
                             "custom_multi_rules.py", tmp_path / "rules.py"])
    conv = migrate.convert(model, rules=rules)
    with np.load(fixture_dir("k3_custom_multi") / "reference.npz") as ref:
        got = run_port(conv, [ref["in_0"], ref["in_1"]])[0]
        assert float(np.abs(got - ref["out_0"]).max()) <= 1e-5


def test_rules_new_errors(tmp_path):
    model = model_path("k3_custom_port", "keras")
    r = run("rules", "new", model, "--layer", "no_such_layer")
    assert r.exit_code == 2 and "no layer or layer class named" in r.output
    r = run("rules", "new", fixture_dir("k3_small_cnn") / "model.keras")
    assert r.exit_code == 0 and "nothing to write" in r.output
    (tmp_path / "taken.py").write_text("")
    r = run("rules", "new", model, "-o", tmp_path / "taken.py")
    assert r.exit_code == 2 and "--force" in r.output
    r = run("rules", "new", tmp_path / "missing.keras")
    assert r.exit_code == 2 and "no such file" in r.output
    # to stdout without -o; the rules a --rules file gives are not asked for
    r = run("rules", "new", model)
    assert r.exit_code == 0 and r.output.startswith('"""Rules for')
    r = run("rules", "new", model, "--rules", ANSWER)
    assert r.exit_code == 0 and "nothing to write" in r.output


def test_refusals_name_the_command():
    with pytest.raises(UnsupportedLayers) as info:
        migrate.convert(model_path("k3_custom_port", "keras"))
    msg = str(info.value)
    assert "no rule for this layer class (`keras2torch rules new MODEL`" \
        in msg and "writes a rule file to fill in" in msg


# -- activation rules ---------------------------------------------------------
def _gated_only():
    rules = load_rule_files([ANSWER])
    return {k: r for k, r in rules.items() if k == KEY}


def test_activation_without_a_rule_is_refused_with_the_way():
    with pytest.raises(UnsupportedLayers) as info:
        migrate.convert(model_path("k3_custom_port", "keras"),
                        rules=_gated_only())
    msg = str(info.value)
    assert "'act' (Activation): activation='fixtures>hard_swish' is a " \
        "custom function and has no activation rule" in msg
    assert "migrate.rules.activation_rule('fixtures>hard_swish')" in msg


@pytest.mark.parametrize("body, inline", [
    ('f"F.hardswish({x.expr})"', True),
    ('Emit([Out(chain(f"{x.expr} + 3.0", "F.relu6({})"), x.shape, '
     'x.layout)])', True),
    ('f"{x.expr} * F.relu6({x.expr} + 3.0) / 6.0"', False)])
def test_activation_rule_inline_or_helper(body, inline, tmp_path):
    from migrate.rules import Emit, Out, chain
    from migrate.rules.registry import Rule, activation_key
    fn = eval(f"lambda x: {body}",
              {"Emit": Emit, "Out": Out, "chain": chain})
    fn.__name__ = "hard_swish"
    key = activation_key("fixtures>hard_swish")
    rules = dict(_gated_only(), **{key: Rule(key, fn, kind="activation")})
    conv = migrate.convert(model_path("k3_custom_port", "keras"),
                           rules=rules)
    assert ("def hard_swish(x):" in conv.source) is not inline
    x, _ = reference("k3_custom_port")
    assert np.isfinite(run_port(conv, [x])[0]).all()


def test_activation_rule_may_not_hold_weights():
    from migrate.rules import Emit, Out, chain
    from migrate.rules.registry import Rule, activation_key

    def bad(x):
        return Emit([Out(chain(f"{x.expr} * self.w"), x.shape, x.layout)],
                    module="nn.Parameter(torch.empty(1))")
    key = activation_key("fixtures>hard_swish")
    rules = dict(_gated_only(), **{key: Rule(key, bad, kind="activation")})
    with pytest.raises(UnsupportedLayers, match="an activation has no "
                                                "weights"):
        migrate.convert(model_path("k3_custom_port", "keras"), rules=rules)


# -- hostile model files ----------------------------------------------------
def _hostile_model(tmp_path, canary: Path) -> Path:
    """k3_custom_port with names and values that would run code if they
    reached the rule file unescaped."""
    touch = f"__import__('pathlib').Path({str(canary)!r}).touch()"
    evil = [f'"""\n{touch}\n"""', f"'\n{touch}\n#", f"\\'); {touch}; ('",
            f"x\u2028{touch}", f"{{}} {touch} #"]
    src = model_path("k3_custom_port", "keras")
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "GatedScale":
            layer["class_name"] = "Gated" + evil[0]
            layer["registered_name"] = "fixtures>" + evil[1]
            layer["module"] = evil[2]
            layer["config"][evil[3]] = {evil[4]: [evil[0], 1.5]}
            layer["config"]["offset"] = evil[1]
        if layer["class_name"] == "Activation":
            layer["config"]["activation"]["config"] = "fixtures>" + evil[2]
    members["config.json"] = json.dumps(config).encode()
    path = tmp_path / "hostile.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


_SAFE_CALLS = {"fill_me_in", "identity", "Refused", "rule",
               "activation_rule"}
_SAFE_ATTRS = {"get", "want", "weights"}


def test_hostile_names_never_become_code(tmp_path):
    canary = tmp_path / "pwned"
    model = _hostile_model(tmp_path, canary)
    text = rule_skeleton(model)
    tree = ast.parse(text)
    for node in tree.body:  # a docstring, imports and functions only
        assert isinstance(node, (ast.Expr, ast.ImportFrom, ast.FunctionDef)
                          ), ast.dump(node)[:200]
        if isinstance(node, ast.Expr):
            assert node is tree.body[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            assert (isinstance(f, ast.Name) and f.id in _SAFE_CALLS) or (
                isinstance(f, ast.Attribute) and f.attr in _SAFE_ATTRS
                and isinstance(f.value, ast.Name)
                and f.value.id == "call"), ast.unparse(node)[:200]
            for arg in node.args:  # names from the file: literals only
                assert isinstance(arg, (ast.Constant, ast.Dict, ast.List,
                                        ast.Attribute, ast.Call,
                                        ast.Name, ast.JoinedStr, ast.UnaryOp)
                                  ), ast.unparse(arg)[:200]
        assert not isinstance(node, (ast.Import, ast.Lambda, ast.Global))
    for line in text.splitlines():  # one line per comment, none unescaped
        assert line.isascii()
    out = tmp_path / "rules.py"
    out.write_text(text)
    rules = load_rule_files([out])  # runs the file: nothing else happens
    with pytest.raises(UnsupportedLayers, match="fill me in"):
        migrate.convert(model, rules=rules)
    assert not canary.exists()
    r = run("rules", "new", model, "-o", tmp_path / "cli.py")
    assert r.exit_code == 0 and not canary.exists()


def test_hostile_weight_names_never_become_code(tmp_path):
    """An .h5 names its weights: a name made to close the list of names
    and run code stays a string literal (and an escaped comment)."""
    import h5py
    canary = tmp_path / "pwned"
    model = tmp_path / "hostile.h5"
    shutil.copy(model_path("k2_custom_port", "h5"), model)
    evil = f"gate'])\n__import__('pathlib').Path({str(canary)!r}).touch()\n#"
    with h5py.File(model, "a") as f:
        f["model_weights/gated/gated"].move("gate:0", evil + ":0")
        f["model_weights/gated"].attrs["weight_names"] = np.array(
            [f"gated/{evil}:0".encode(), b"gated/scale:0"])
    text = rule_skeleton(model)
    tree = ast.parse(text)
    bad = ("touch", "Path", "__import__")
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and ast.unparse(n.func).endswith(bad)]
    out = tmp_path / "rules.py"
    out.write_text(text)
    with pytest.raises(UnsupportedLayers, match="fill me in"):
        migrate.convert(model, rules=load_rule_files([out]))
    assert not canary.exists()


# -- rule packs (entry-point group keras2torch.rules) -----------------------
_COUNTER = itertools.count()


def make_dist(site: Path, dist: str, body: str, callable_name=None) -> str:
    """A real distribution on ``site``: ``<dist>-1.0.dist-info`` with an
    entry point in ``keras2torch.rules`` naming a new module (or a
    callable in it) with ``body``; returns the module name."""
    module = f"k2t_pack_{next(_COUNTER)}_{os.getpid()}"
    (site / f"{module}.py").write_text(body)
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\n"
                                   "Version: 1.0\n")
    target = f"{module}:{callable_name}" if callable_name else module
    (info / "entry_points.txt").write_text(
        f"[keras2torch.rules]\n{dist} = {target}\n")
    return module


@pytest.fixture
def site(tmp_path, monkeypatch):
    d = tmp_path / "site"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    import importlib
    importlib.invalidate_caches()
    yield d


def _gated_pack(marker="1.0"):
    """The answer file as a pack, its GatedScale scaled by ``marker``."""
    text = ANSWER.read_text()
    return text.replace("+ {offset}\"", f"+ {{offset}} * {marker}\"")


def test_an_installed_pack_is_loaded(site, tmp_path):
    make_dist(site, "keras2torch-fixtures-pack", _gated_pack())
    model = model_path("k3_custom_port", "keras")
    conv = migrate.convert(model)  # no rules given: the pack's
    assert max_err(conv, "k3_custom_port") <= 1e-5
    with pytest.raises(UnsupportedLayers):
        migrate.convert(model, plugins=False)
    r = run("rules", "--format", "json")
    rows = {tuple(row["keras"]): row for row in json.loads(r.output)}
    assert rows[(KEY,)]["source"] == "keras2torch-fixtures-pack"
    assert rows[("Dense",)]["source"] == "builtin"
    table = run("rules").output
    assert any(line.startswith(KEY) and line.rstrip().endswith(
        "keras2torch-fixtures-pack") for line in table.splitlines())
    assert KEY not in run("rules", "--no-plugins").output
    r = run("convert", model, "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "a" / "conversion.json").read_text())
    assert {d["source"] for d in report["rules"]} == {
        "keras2torch-fixtures-pack"}
    r = run("convert", model, "-o", tmp_path / "b", "--no-plugins")
    assert r.exit_code == 1 and "GatedScale" in r.output
    assert run("inspect", model).exit_code == 0
    assert run("inspect", model, "--no-plugins").exit_code == 1
    r = run("rules", "new", model)
    assert "nothing to write" in r.output
    r = run("rules", "new", model, "--no-plugins")
    assert "@rule('fixtures>GatedScale')" in r.output


def test_check_uses_the_packs(site, tmp_path):
    make_dist(site, "keras2torch-fixtures-pack", _gated_pack())
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(model_path("k3_custom_port", "keras"), repo / "m.keras")
    r = run("check", repo, "--no-verify")
    assert r.exit_code == 0, r.output
    r = run("check", repo, "--no-verify", "--no-plugins")
    assert r.exit_code == 1 and "GatedScale" in r.output


def test_a_user_rule_overrides_the_pack(site, tmp_path):
    make_dist(site, "keras2torch-fixtures-pack", _gated_pack("7.0"))
    model = model_path("k3_custom_port", "keras")
    assert "0.25 * 7.0" in migrate.convert(model).source
    conv = migrate.convert(model, rules=load_rule_files([ANSWER]))
    assert "7.0" not in conv.source
    assert max_err(conv, "k3_custom_port") <= 1e-5


def test_a_pack_by_callable_and_its_rules_in_a_list(site):
    body = _gated_pack().replace("@rule('fixtures>GatedScale')\n", "") \
        .replace("@activation_rule('fixtures>hard_swish')\n", "")
    body += textwrap.dedent("""

        def register():
            from migrate.rules.registry import Rule
            activation_rule('fixtures>hard_swish')(hard_swish)  # registers
            return [Rule('fixtures>GatedScale', gated_scale)]
        """)
    make_dist(site, "callable-pack", body, callable_name="register")
    conv = migrate.convert(model_path("k2_custom_port", "h5"))
    assert max_err(conv, "k2_custom_port") <= 1e-5


def test_two_packs_with_one_key_are_an_error_naming_both(site):
    make_dist(site, "pack-a", _gated_pack())
    make_dist(site, "pack-b", _gated_pack("2.0"))
    model = model_path("k3_custom_port", "keras")
    with pytest.raises(ConversionError) as info:
        migrate.convert(model)
    msg = str(info.value)
    assert "rule packs pack-a and pack-b both register a rule for" in msg
    assert "--no-plugins" in msg
    r = run("convert", model, "-o", site / "out")
    assert r.exit_code == 2 and "pack-a and pack-b" in r.output
    assert run("rules").exit_code == 2
    with pytest.raises(UnsupportedLayers):  # without packs: no clash
        migrate.convert(model, plugins=False)


def test_a_broken_pack_is_one_error_line(site):
    make_dist(site, "broken-pack", "raise RuntimeError('boom')\n")
    with pytest.raises(ConversionError) as info:
        migrate.convert(model_path("k3_custom_port", "keras"))
    msg = str(info.value)
    assert msg.startswith("rule pack broken-pack (entry point broken-pack")
    assert "RuntimeError: boom" in msg and "\n" not in msg


@pytest.mark.slow
def test_batch_workers_get_the_packs(tmp_path):
    """Process-pool workers load the packs of the environment they run in;
    a worker that lacks a pack the batch was started with says so."""
    site = tmp_path / "site"
    site.mkdir()
    make_dist(site, "keras2torch-fixtures-pack", _gated_pack())
    models = [str(model_path(c, f)) for c, f in PORTS[:2]]
    code = textwrap.dedent(f"""
        import json, sys
        import migrate
        if __name__ == "__main__":
            rs = migrate.convert_many({models!r}, sys.argv[1], jobs=2,
                                      plugins=sys.argv[2] == "on")
            print(json.dumps([r.status for r in rs]))
        """)
    script = tmp_path / "batch.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site), str(ROOT)]))
    for flag, want in (("on", ["ok", "ok"]), ("off", ["fail", "fail"])):
        out = subprocess.run([sys.executable, str(script),
                              str(tmp_path / f"out_{flag}"), flag],
                             capture_output=True, text=True, env=env,
                             timeout=600, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.splitlines()[-1]) == want


@pytest.mark.slow
def test_a_pack_installed_with_pip_into_a_venv(tmp_path):
    """The three lines of pyproject.toml the README shows, installed for
    real (pip, no network: --no-deps --no-build-isolation) into a venv that
    sees keras2torch and torch through --system-site-packages."""
    pkg = tmp_path / "pack"
    (pkg / "k2t_fixtures_pack").mkdir(parents=True)
    (pkg / "k2t_fixtures_pack" / "__init__.py").write_text("")
    (pkg / "k2t_fixtures_pack" / "rules.py").write_text(_gated_pack())
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "k2t-fixtures-pack"
        version = "0.1"

        [project.entry-points."keras2torch.rules"]
        fixtures = "k2t_fixtures_pack.rules"
        """))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                    str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "--no-deps",
                          "--no-build-isolation", "--no-index", "-q",
                          str(pkg)], capture_output=True, text=True,
                         timeout=600)
    if pip.returncode != 0 and "setuptools" in pip.stderr:
        pytest.skip("setuptools not importable for a local build")
    assert pip.returncode == 0, pip.stderr[-2000:]
    model = model_path("k3_custom_port", "keras")
    for args, code in ((["convert", str(model), "-o", str(tmp_path / "p")],
                        0),
                       (["convert", str(model), "-o", str(tmp_path / "q"),
                         "--no-plugins"], 1),
                       (["rules"], 0)):
        out = subprocess.run([str(py), "-m", "cli.main", *args],
                             capture_output=True, text=True, cwd=ROOT,
                             timeout=600)
        assert out.returncode == code, out.stderr[-2000:]
    assert "k2t-fixtures-pack" in out.stdout
    assert (tmp_path / "p" / "model.py").exists()
