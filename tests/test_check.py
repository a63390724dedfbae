"""``keras2torch check`` over a temporary model repository.

The repository (:func:`make_repo`) holds one of each thing the CI gate must
tell apart: a good model with an up-to-date committed port, a good JSON
config with its weights beside it, a model with unsupported layers, a model
whose committed port has drifted, a non-model ``.h5``, a truncated
``.keras`` file and unrelated JSON.  Every output format is checked
against it.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import h5py
import pytest
from click.testing import CliRunner

import migrate
from cli.main import main
from migrate.check import check, find_config, load_config, port_for

from conftest import fixture_dir, needs_tf

EXPECTED = {  # path -> (status, category)
    "models/cnn.keras": ("pass", None),
    "models/custom.keras": ("fail", "unsupported"),
    "models/legacy/cnn.json": ("pass", None),
    "models/not_a_model.h5": ("skipped", "not a model"),
    "models/text.keras": ("fail", "drift"),
    "models/truncated.keras": ("error", "read"),
}


def make_repo(root):
    models = root / "models"
    (models / "legacy").mkdir(parents=True)
    shutil.copy(fixture_dir("k3_small_cnn") / "model.keras",
                models / "cnn.keras")
    migrate.convert(models / "cnn.keras").save(models / "cnn_torch")
    shutil.copy(fixture_dir("k3_custom_layers") / "model.keras",
                models / "custom.keras")
    shutil.copy(fixture_dir("k3_text_mlp") / "model.keras",
                models / "text.keras")
    migrate.convert(models / "text.keras").save(models / "text_torch")
    src = models / "text_torch" / "model.py"
    src.write_text(src.read_text().replace("eps=0.001", "eps=1e-05"))
    shutil.copy(fixture_dir("k2_small_cnn") / "model.json",
                models / "legacy" / "cnn.json")
    shutil.copy(fixture_dir("k2_small_cnn") / "model_weights.h5",
                models / "legacy" / "cnn_weights.h5")
    with h5py.File(models / "not_a_model.h5", "w") as f:
        f["data"] = [1.0, 2.0, 3.0]
    data = (fixture_dir("k3_small_cnn") / "model.keras").read_bytes()
    (models / "truncated.keras").write_bytes(data[:len(data) // 3])
    (models / "labels.json").write_text('{"classes": ["a", "b"]}')
    (root / ".git").mkdir()  # the config search stops here
    return root


@pytest.fixture
def repo(tmp_path, monkeypatch):
    make_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, ["check", *map(str, args)])


def test_each_model_gets_its_status(repo):
    report = check(["."], verify=False)
    got = {m.path: (m.status, m.category) for m in report.models}
    assert got == EXPECTED
    by = {m.path: m for m in report.models}
    assert by["models/cnn.keras"].port == "models/cnn_torch"
    assert by["models/legacy/cnn.json"].weights == \
        "models/legacy/cnn_weights.h5"
    assert [u["class_name"] for u in by["models/custom.keras"].unsupported] \
        == ["Scale", "Shift", "Scale"]
    drift = by["models/text.keras"].drift
    assert drift["model_py"] is True and drift["weights"] == []
    assert "eps=1e-05" in by["models/text.keras"].diff
    assert report.exit_code == 2  # the truncated file is an error


@pytest.mark.parametrize("keep, code", [
    (["models/cnn.keras", "models/legacy"], 0),
    (["models/cnn.keras", "models/not_a_model.h5"], 0),
    (["models/cnn.keras", "models/text.keras"], 1),
    (["models/custom.keras"], 1),
    (["models/cnn.keras", "models/text.keras", "models/truncated.keras"], 2),
])
def test_exit_codes(repo, keep, code):
    r = run("--no-verify", *keep)
    assert r.exit_code == code, r.output


def test_table(repo):
    r = run("--no-verify")
    assert r.exit_code == 2
    lines = r.output.splitlines()
    assert lines[0].split() == ["STATUS", "MODEL", "MAX", "ERR", "DETAIL"]
    rows = {ln.split()[1]: ln.split()[0] for ln in lines[1:-1]}
    assert rows == {p: s for p, (s, _) in EXPECTED.items()}
    assert "labels.json" not in r.output
    assert "cnn_weights.h5" not in r.output  # part of the JSON model
    assert lines[-1].startswith("6 model(s): 2 pass, 2 fail, 1 error, "
                                "1 skipped")
    assert "drift: models/text_torch: model.py differs" in r.output
    assert "regenerate: keras2torch convert models/text.keras -o " \
           "models/text_torch --force" in r.output
    assert "---" not in r.output  # no diff without --diff


def test_diff(repo):
    r = run("--no-verify", "--diff", "models/text.keras")
    assert r.exit_code == 1
    assert "--- models/text_torch/model.py" in r.output
    assert "-        self.norm = nn.LayerNorm(8, eps=1e-05)" in r.output
    assert "+        self.norm = nn.LayerNorm(8, eps=0.001)" in r.output


def test_json(repo):
    r = run("--no-verify", "--format", "json")
    assert r.exit_code == 2
    data = json.loads(r.output)
    assert set(data) == {"tool", "verify", "atol", "models", "summary"}
    got = {m["path"]: (m["status"], m["category"]) for m in data["models"]}
    assert got == EXPECTED
    for m in data["models"]:
        assert {"path", "status", "reason", "max_abs_err", "weights", "port",
                "drift", "unsupported", "verified"} <= set(m)
        assert m["status"] in ("pass", "fail", "error", "skipped")
        assert (m["reason"] == "") == (m["status"] == "pass")
        assert "diff" not in m
    assert data["summary"] == {"total": 6, "pass": 2, "fail": 2, "error": 1,
                               "skipped": 1, "verified": 0, "exit_code": 2}
    r = run("--no-verify", "--format", "json", "--diff", "models/text.keras")
    assert "eps=1e-05" in json.loads(r.output)["models"][0]["diff"]


def test_junit(repo):
    r = run("--no-verify", "--format", "junit")
    assert r.exit_code == 2
    root = ET.fromstring(r.output)
    (suite,) = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("6", "2", "1", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == set(EXPECTED)
    for path, (status, category) in EXPECTED.items():
        children = [el.tag for el in cases[path]
                    if el.tag != "system-out"]
        want = {"pass": [], "fail": ["failure"], "error": ["error"],
                "skipped": ["skipped"]}[status]
        assert children == want, path
        if status in ("fail", "error"):
            assert cases[path][0].get("type") == category
    assert "scale_a (Scale)" in cases["models/custom.keras"][0].text


def test_github_annotations(repo):
    r = run("--no-verify", "--format", "github")
    assert r.exit_code == 2
    lines = r.output.splitlines()
    by_file = {ln.split("file=")[1].split(",")[0]: ln
               for ln in lines if ln.startswith("::")}
    assert set(by_file) == {p for p, (s, _) in EXPECTED.items()
                            if s != "pass"}
    assert by_file["models/text.keras"].startswith(
        "::error file=models/text.keras,title=keras2torch check%3A fail "
        "(drift)::drift: ")
    assert by_file["models/not_a_model.h5"].startswith("::notice ")
    assert lines[-1].startswith("keras2torch check: 6 model(s)")


def test_weights_drift_and_missing_files(repo):
    from safetensors.torch import load_file, save_file
    port = repo / "models" / "cnn_torch"
    state = load_file(str(port / "model.safetensors"))
    state["conv1.bias"] = state["conv1.bias"] + 1
    save_file(state, str(port / "model.safetensors"))
    (m,) = check(["models/cnn.keras"], verify=False).models
    assert (m.status, m.category) == ("fail", "drift")
    assert m.drift["weights"] == ["conv1.bias"] and not m.drift["model_py"]
    (port / "model.safetensors").unlink()
    (m,) = check(["models/cnn.keras"], verify=False).models
    assert m.drift["missing"] == ["model.safetensors"]


def test_port_options_are_read_from_the_port(repo):
    """A port made with --layout keras, --class-name or --weights-format pt
    is compared as such: no false drift."""
    model = repo / "models" / "cnn.keras"
    port = repo / "models" / "cnn_torch"
    for options in [dict(layout="keras", class_name="Net",
                         weights_format="pt"), dict(class_name="Net")]:
        shutil.rmtree(port)
        migrate.convert(model, **options).save(port)
        (m,) = check([model], verify=False).models
        assert m.status == "pass", m.reason
    src = (port / "model.py").read_text()
    (port / "model.py").write_text(src.replace("class Net(", "class Nett("))
    (m,) = check([model], verify=False).models
    assert m.status == "fail"
    assert m.drift["regenerate"].endswith(
        "/models/cnn_torch --class-name Net --force")


def test_pyproject_ports_mapping(repo):
    shutil.move(repo / "models" / "text_torch", repo / "ports_text")
    (repo / "pyproject.toml").write_text(
        '[tool.keras2torch]\nports = {"models/cnn.keras" = "ports/cnn"}\n'
        'exclude = ["legacy/*", "truncated.keras"]\n'
        'port-dir = "../ports_{stem}"\n')
    config = find_config(["models"])
    assert port_for(repo / "models" / "cnn.keras", config) == \
        repo / "ports" / "cnn"
    assert port_for(repo / "models" / "text.keras", config) == \
        repo / "models" / ".." / "ports_text"
    report = check(["models"], verify=False)
    by = {m.path: m for m in report.models}
    assert set(by) == {"models/cnn.keras", "models/custom.keras",
                       "models/not_a_model.h5", "models/text.keras"}
    assert by["models/cnn.keras"].port is None  # ports/cnn does not exist
    assert by["models/text.keras"].category == "drift"


def test_setup_cfg_config(repo):
    cfg = repo / "setup.cfg"
    cfg.write_text("[tool:keras2torch]\nport-dir = {stem}_port\n"
                   "atol = 1e-6\nports =\n    models/cnn.keras = x/cnn\n")
    config = load_config(cfg)
    assert config.atol == 1e-6
    assert port_for(repo / "models" / "text.keras", config) == \
        repo / "models" / "text_port"
    assert port_for(repo / "models" / "cnn.keras", config) == \
        repo / "x" / "cnn"
    report = check(["models/text.keras"], verify=False)
    assert report.models[0].status == "pass"  # no text_port: no drift
    assert report.atol == 1e-6


@pytest.mark.parametrize("args, message", [
    (["missing/"], "no such file or directory"),
    (["--format", "xml"], "xml"),
    (["--config", "nowhere.toml"], ""),
])
def test_usage_errors_one_line_exit_2(repo, args, message):
    proc = subprocess.run([sys.executable, "-m", "cli.main", "check",
                           "--no-verify", *args], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr


def test_verify_without_tensorflow(repo, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                        if name == "tensorflow" else real(name, *a))
    r = run("--verify", "models/cnn.keras")
    assert r.exit_code == 2 and "TensorFlow is not installed" in r.output
    r = run("models/cnn.keras")  # default: verify only when available
    assert r.exit_code == 0 and "not verified" in r.output


def test_jobs_give_the_same_report(repo):
    one = check(["."], verify=False).to_dict()
    two = check(["."], verify=False, jobs=2).to_dict()
    for m in one["models"] + two["models"]:
        m.pop("seconds")
    assert one == two


@needs_tf
@pytest.mark.keras
def test_verify_passes_and_records_the_error(repo):
    r = run("--format", "json", "models/cnn.keras", "models/legacy")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["verify"] is True and data["summary"]["verified"] == 2
    for m in data["models"]:
        assert m["verified"] and m["max_abs_err"] < 1e-5


@needs_tf
@pytest.mark.keras
def test_parity_failure_is_a_fail(repo, monkeypatch):
    """A wrong rule (Add written as a subtraction) fails parity."""
    from migrate.rules import Emit, Out, Rule, chain
    from migrate.rules.registry import RULES

    def wrong_add(call):
        a, b = call.inputs
        return Emit([Out(chain(f"{a.expr} - {b.expr}"), a.shape, a.layout)])

    monkeypatch.setitem(RULES, "Add", Rule("Add", wrong_add))
    (m,) = check(["models/cnn.keras"], verify=True).models
    assert (m.status, m.category) == ("fail", "parity")
    assert m.max_abs_err > 1e-3
    assert m.reason.startswith("parity: max abs err")
    assert "drift" in m.reason  # and the committed port no longer matches


def _hook_repo(root):
    """A git repository with a good model and its port, and a drifted
    port: what the pre-commit hook must catch."""
    models = root / "models"
    models.mkdir(parents=True)
    shutil.copy(fixture_dir("k3_small_cnn") / "model.keras",
                models / "cnn.keras")
    migrate.convert(models / "cnn.keras").save(models / "cnn_torch")
    shutil.copy(fixture_dir("k3_text_mlp") / "model.keras",
                models / "text.keras")
    migrate.convert(models / "text.keras").save(models / "text_torch")
    src = models / "text_torch" / "model.py"
    src.write_text(src.read_text().replace("eps=0.001", "eps=1e-05"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "models"]):
        subprocess.run(git + cmd, cwd=root, check=True)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["keras2torch-check-system",
                                  "keras2torch-check"])
def test_pre_commit_hook(tmp_path, hook):
    """``pre-commit try-repo`` with this repository's hooks: the drifted
    port fails the hook, the good model passes.  keras2torch-check builds
    its own virtualenv (pip install of this repository, torch pinned by
    PIP_CONSTRAINT as the README says), keras2torch-check-system uses the
    keras2torch installed here."""
    from conftest import ROOT, require
    exe = shutil.which("pre-commit")
    require("pre-commit", exe is not None, "pip install pre-commit")
    repo = _hook_repo(tmp_path / "repo")
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "cache"),
               PIP_CONSTRAINT=str(ROOT / "constraints.txt"))
    proc = subprocess.run([exe, "try-repo", str(ROOT), hook, "--all-files"],
                          cwd=repo, env=env, capture_output=True, text=True,
                          timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"- hook id: {hook}" in out and "Failed" in out
    rows = {ln.split()[1]: ln.split()[0] for ln in out.splitlines()
            if ln.startswith(("pass ", "fail "))}
    assert rows == {"models/cnn.keras": "pass",
                    "models/text.keras": "fail"}, out
    assert "drift: models/text_torch: model.py differs" in out


RULES_FILE = Path(__file__).with_name("data") / "custom_rules.py"


def test_custom_rules_file(repo):
    """custom.keras fails without its rules; --rules FILE.py, or rules in
    [tool.keras2torch], make it pass (in worker processes too), and the
    rules do not stay in the global table."""
    from migrate.rules.registry import RULES
    before = dict(RULES)
    custom = "models/custom.keras"
    assert run("--no-verify", custom).exit_code == 1
    r = run("--no-verify", "--rules", RULES_FILE, custom)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1].split()[:2] == ["pass", custom]
    shutil.copy(RULES_FILE, repo / "k2t_rules.py")
    (repo / "pyproject.toml").write_text(
        '[tool.keras2torch]\nrules = ["k2t_rules.py"]\n')
    report = check([custom], verify=False, jobs=2)
    assert report.models[0].status == "pass", report.models[0].reason
    # the port made with the rules is up to date; changed rules drift
    r = CliRunner().invoke(main, ["convert", custom, "-o",
                                  "models/custom_torch", "--rules",
                                  "k2t_rules.py"])
    assert r.exit_code == 0, r.output
    (m,) = check([custom], verify=False).models
    assert m.status == "pass" and m.port == "models/custom_torch"
    text = (repo / "k2t_rules.py").read_text()
    (repo / "k2t_rules.py").write_text(text.replace("2.0", "3.0"))
    (m,) = check([custom], verify=False).models
    assert m.category == "drift"
    assert m.drift["regenerate"].endswith("--rules k2t_rules.py --force")
    assert RULES == before


@pytest.mark.parametrize("text, message", [
    (None, "No such file"),
    ("raise RuntimeError('oops')", "failed to load: RuntimeError: oops"),
    ("x = 1", "registers no rule"),
    ("from migrate.rules import rule\n@rule('Dense')\ndef d(call): pass",
     "already registered"),
])
def test_bad_rules_file_is_a_usage_error(repo, text, message):
    bad = repo / "bad_rules.py"
    if text is not None:
        bad.write_text(text + "\n")
    proc = subprocess.run([sys.executable, "-m", "cli.main", "check",
                           "--no-verify", "--rules", str(bad),
                           "models/cnn.keras"], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: rules file ") and \
        message in proc.stderr, proc.stderr


OBJECTS_FILE = Path(__file__).with_name("data") / "custom_layers_keras.py"


@needs_tf
@pytest.mark.keras
def test_custom_layers_verified_with_custom_objects(repo):
    """Keras can load a model with custom classes once given the file that
    defines them (--custom-objects, or custom-objects in the config)."""
    custom = "models/custom.keras"
    r = run("--verify", "--rules", RULES_FILE, "--format", "json", custom)
    assert r.exit_code == 2, r.output
    (m,) = json.loads(r.output)["models"]
    assert m["category"] == "verify" and "--custom-objects" in m["reason"]
    r = run("--verify", "--rules", RULES_FILE, "--custom-objects",
            OBJECTS_FILE, "--format", "json", custom)
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.output)["models"]
    assert m["verified"] and m["max_abs_err"] < 1e-6
    shutil.copy(OBJECTS_FILE, repo / "layers.py")
    shutil.copy(RULES_FILE, repo / "k2t_rules.py")
    (repo / "pyproject.toml").write_text(
        '[tool.keras2torch]\nrules = ["k2t_rules.py"]\n'
        'custom-objects = ["layers.py"]\n')
    (m,) = check([custom], verify=True).models
    assert m.status == "pass" and m.verified, m.reason
