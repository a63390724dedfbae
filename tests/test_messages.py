"""Messages that fit the situation (issue 18, item 6) and one vocabulary
for batch and check results (item 7)."""
import json
import shutil
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool

import h5py
import pytest
from click.testing import CliRunner

import migrate
from cli.main import main
from conftest import ROOT, fixture_dir
from migrate.batch import crash_reason
from migrate.discover import discover


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_weights_only_file_without_its_config(tmp_path):
    with h5py.File(tmp_path / "w.weights.h5", "w") as f:
        f.create_group("layers")
    [found] = discover([tmp_path])
    assert "no JSON config beside it" in found.skip
    assert "its JSON config is the model" not in found.skip


def test_a_random_weights_argument_is_called_weights(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not weights " * 40)
    d = fixture_dir("k2_small_cnn")
    r = run("convert", d / "model.json", "--weights", junk, "-o",
            tmp_path / "port")
    assert r.exit_code == 2
    assert r.stderr == (f"error: {junk}: is not a Keras weights file "
                        "(expected an HDF5 file written by save_weights: "
                        ".weights.h5 or .h5)\n")


def test_api_errors_name_the_api_argument(tmp_path):
    model = fixture_dir("k3_small_cnn") / "model.keras"
    with migrate.convert(model) as conv:
        conv.save(tmp_path / "port")
        with pytest.raises(migrate.ConversionError, match="force=True"):
            conv.save(tmp_path / "port")
    migrate.convert_many([model], tmp_path / "ports")
    [r] = migrate.convert_many([model], tmp_path / "ports")
    assert r.status == "error" and "force=True" in r.reason


def test_broken_pool_says_why(tmp_path, monkeypatch):
    import types
    main_module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main_module)
    exc = BrokenProcessPool("A process in the process pool was terminated")
    script = tmp_path / "convert_all.py"
    script.write_text("import migrate\nmigrate.convert_many(['a.keras'], "
                      "'out', jobs=2)\n")
    main_module.__file__ = str(script)
    assert f"imports your script {script}" in crash_reason(exc)
    assert 'if __name__ == "__main__":' in crash_reason(exc)
    script.write_text("import migrate\nif __name__ == '__main__':\n"
                      "    migrate.convert_many(['a.keras'], 'out', "
                      "jobs=2)\n")
    assert "run the batch with jobs=1" in crash_reason(exc)
    del main_module.__file__  # an interactive session
    assert "run the batch with jobs=1" in crash_reason(exc)
    assert crash_reason(ValueError("x")) == "worker failed: ValueError: x"


@pytest.mark.slow
def test_unguarded_script_gets_the_hint(tmp_path):
    """The real thing: a script calling convert_many(jobs=2) at module
    level breaks its pool; each result says what to do."""
    model = fixture_dir("k3_small_cnn") / "model.keras"
    script = tmp_path / "batch.py"
    script.write_text(
        "import json, migrate\n"
        f"rs = migrate.convert_many([{str(model)!r}, {str(model)!r}], "
        f"{str(tmp_path / 'out')!r}, jobs=2)\n"
        "print(json.dumps([r.reason for r in rs]))\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    reasons = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(reasons) == 2
    for reason in reasons:
        assert "has no 'if __name__ ==" in reason, reason


def test_batch_and_check_share_one_vocabulary(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(fixture_dir("k3_small_cnn") / "model.keras", d / "a.keras")
    shutil.copy(fixture_dir("k3_custom_layers") / "model.keras",
                d / "b.keras")
    r = run("convert", d, "-o", tmp_path / "out", "--format", "json")
    batch = {m["path"]: m for m in json.loads(r.stdout)["models"]}
    r = run("check", d, "--no-verify", "--format", "json")
    check = {m["path"]: m for m in json.loads(r.stdout)["models"]}
    assert batch.keys() == check.keys() == {str(d / "a.keras"),
                                            str(d / "b.keras")}
    bad_b, bad_c = batch[str(d / "b.keras")], check[str(d / "b.keras")]
    for key in ("path", "status", "reason", "category", "weights"):
        assert key in bad_b and key in bad_c
    assert bad_b["category"] == bad_c["category"] == "unsupported"
    assert bad_b["reason"] == bad_c["reason"]
    # the names before 0.2 stay one release
    assert bad_b["source"] == bad_b["path"]
    assert bad_b["error"] == bad_b["reason"]
    [res] = migrate.convert_many([d / "b.keras"], tmp_path / "again")
    assert res.source == res.path and res.error == res.reason
