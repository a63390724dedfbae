"""One meaning of the exit code for every command (README, "Exit codes"):
0 success, 1 a model fails (unsupported layers, parity, drift), 2 a model
cannot be read or run, or bad usage; and what each command does with a
folder that holds no model (issue 18, items 3 and 4)."""
import shutil

import h5py
import pytest
from click.testing import CliRunner

from cli.main import main
from conftest import fixture_dir

UNSUPPORTED = fixture_dir("k3_custom_layers") / "model.keras"


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.fixture
def truncated(tmp_path):
    data = (fixture_dir("k3_small_cnn") / "model.keras").read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[:len(data) // 3])
    return path


def _commands(model, tmp_path):
    other = tmp_path / "other.keras"
    shutil.copy(fixture_dir("k3_small_cnn") / "model.keras", other)
    return {
        "convert": ["convert", model, "-o", tmp_path / "port"],
        "convert batch": ["convert", model, other, "-o", tmp_path / "ports"],
        "check": ["check", model, "--no-verify"],
        "inspect": ["inspect", model],
    }


@pytest.mark.parametrize("command", ["convert", "convert batch", "check",
                                     "inspect"])
def test_unsupported_layers_exit_1_everywhere(tmp_path, command):
    r = run(*_commands(UNSUPPORTED, tmp_path)[command])
    assert r.exit_code == 1, r.output
    assert "cannot be converted" in r.output
    assert not (tmp_path / "port").exists()


@pytest.mark.parametrize("command", ["convert", "convert batch", "check",
                                     "inspect"])
def test_unreadable_model_exits_2_everywhere(tmp_path, truncated, command):
    r = run(*_commands(truncated, tmp_path)[command])
    assert r.exit_code == 2, r.output


def _nothing(tmp_path):
    d = tmp_path / "nomodels"
    (d / ".venv").mkdir(parents=True)
    (d / "package.json").write_text('{"name": "x"}')
    with h5py.File(d / "orphan.weights.h5", "w") as f:
        f.attrs["layer_names"] = ["dense"]
    return d


def test_convert_of_nothing_is_an_error(tmp_path):
    d = _nothing(tmp_path)
    r = run("convert", d, "-o", tmp_path / "out")
    assert r.exit_code == 2
    assert r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: no Keras models found in {d} ")
    assert "orphan.weights.h5" in line and "no JSON config" in line
    assert ".venv" in line and "1 JSON file(s)" in line
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("convert", empty, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "nothing else there" in r.stderr


@pytest.mark.parametrize("fmt", ["table", "json", "github"])
def test_check_of_nothing_says_it_checked_nothing(tmp_path, fmt):
    d = _nothing(tmp_path)
    r = run("check", d, "--format", fmt)
    assert r.exit_code == 0  # as ruff and black: nothing to do is no error
    [line] = r.stderr.splitlines()
    assert line.startswith(f"warning: no Keras models found in {d} ")
    assert line.endswith("nothing checked")
    assert "verified against Keras" not in r.stdout
    if fmt == "table":
        assert r.stdout.splitlines()[-1] == \
            "nothing checked: no models found (1 file(s) skipped)"


def test_weights_only_file_names_its_config(tmp_path):
    """The weights of a JSON config, named on their own, point to it."""
    from migrate.discover import discover
    shutil.copy(fixture_dir("k2_small_cnn") / "model.json", tmp_path)
    shutil.copy(fixture_dir("k2_small_cnn") / "model_weights.h5", tmp_path)
    [f] = discover([tmp_path / "model_weights.h5"])
    assert f.skip == ("weights-only HDF5 file, the weights of model.json "
                      "beside it: convert that config")
