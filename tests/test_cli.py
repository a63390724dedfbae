"""The keras2torch command, through click's runner and as a subprocess."""
import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli.main import main
from conftest import fixture_dir, needs_tf


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and "keras2torch" in r.output
    r = run("convert", "--help")
    assert r.exit_code == 0 and "Examples:" in r.output and "--verify" in r.output


def test_convert_keras(tmp_path):
    out = tmp_path / "port"
    r = run("convert", fixture_dir("k3_small_cnn") / "model.keras", "-o", out)
    assert r.exit_code == 0, r.output
    assert (out / "model.py").exists() and (out / "model.safetensors").exists()
    report = json.loads((out / "conversion.json").read_text())
    assert report["module"]["class_name"] == "SmallCnn"


def test_convert_json_with_weights(tmp_path):
    d = fixture_dir("k2_small_cnn")
    r = run("convert", d / "model.json", "--weights", d / "model_weights.h5",
            "-o", tmp_path / "port", "--class-name", "Net", "--weights-format", "pt")
    assert r.exit_code == 0, r.output
    assert "class Net(nn.Module)" in (tmp_path / "port" / "model.py").read_text()
    assert (tmp_path / "port" / "model.pt").exists()


@pytest.mark.parametrize("args, message", [
    (["convert", "missing.keras", "-o", "OUT"], "no such file"),
    (["convert", "README.md", "-o", "OUT"], ""),
    (["convert", "MODEL"], "Missing option"),
    (["convert", "MODEL", "-o", "OUT", "--layout", "nchw"], "nchw"),
])
def test_errors_are_one_line_exit_2_nothing_written(tmp_path, args, message):
    model = fixture_dir("k3_small_cnn") / "model.keras"
    args = [str(model) if a == "MODEL" else str(tmp_path / "out") if a == "OUT"
            else str(tmp_path / "x.md") if a == "README.md" else a for a in args]
    (tmp_path / "x.md").write_text("# not a model\n")
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_existing_outdir_needs_force(tmp_path):
    model = fixture_dir("k3_small_cnn") / "model.keras"
    out = tmp_path / "port"
    out.mkdir()
    r = run("convert", model, "-o", out)
    assert r.exit_code == 2 and "already exists" in r.output
    r = run("convert", model, "-o", out, "--force")
    assert r.exit_code == 0 and (out / "model.py").exists()


def test_console_script_installed():
    exe = shutil.which("keras2torch")
    if exe is None:
        pytest.skip("package not installed as a console script")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "keras2torch" in proc.stdout


def test_every_source_directory_is_a_package():
    """A non-editable install (pip install keras2torch, pre-commit's
    virtualenv) ships only what setuptools finds: a directory of modules
    without __init__.py would be left out."""
    from setuptools import find_packages
    from conftest import ROOT
    found = set(find_packages(
        str(ROOT), include=["migrate", "migrate.*", "cli", "cli.*"]))
    dirs = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
            for top in ("migrate", "cli") for p in (ROOT / top).rglob("*.py")
            if "__pycache__" not in p.parts}
    assert dirs <= found, sorted(dirs - found)


@needs_tf
@pytest.mark.keras
@pytest.mark.parametrize("case, fmt", [("k3_small_cnn", "keras"),
                                       ("k2_small_cnn", "h5"),
                                       ("k3_text_mlp", "json")])
def test_convert_verify_end_to_end(tmp_path, case, fmt):
    d = fixture_dir(case)
    if fmt == "json":
        args = [d / "model.json", "--weights", d / "model.weights.h5"]
    else:
        args = [d / f"model.{fmt}"]
    proc = subprocess.run([sys.executable, "-m", "cli.main", "convert",
                           *map(str, args), "-o", str(tmp_path / "port"),
                           "--verify"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "max abs err" in proc.stdout
    report = json.loads((tmp_path / "port" / "conversion.json").read_text())
    assert report["parity"]["passed"] is True
    assert report["parity"]["max_abs_err"] < 1e-5


@needs_tf
@pytest.mark.keras
def test_verify_fails_above_atol(tmp_path):
    model = fixture_dir("k3_small_cnn") / "model.keras"
    proc = subprocess.run([sys.executable, "-m", "cli.main", "convert",
                           str(model), "-o", str(tmp_path / "port"), "--verify",
                           "--atol", "0"], capture_output=True, text=True)
    # exact zero error is possible, but float32 conv sums rarely agree bit-exactly
    if proc.returncode == 0:
        pytest.skip("port matched Keras bit-exactly")
    assert proc.returncode == 1
    assert "parity failed" in proc.stderr


def test_verify_without_tensorflow_says_so(tmp_path, monkeypatch):
    import importlib.util
    import migrate
    from migrate.verify import VerifyUnavailable
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(VerifyUnavailable, match="TensorFlow is not installed"):
        migrate.verify(fixture_dir("k3_small_cnn") / "model.keras")
