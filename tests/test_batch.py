"""Batch migration: ``migrate.convert_many`` and ``keras2torch convert A B
dir/ -o OUT``.  Parallel runs (a process pool, a Dask LocalCluster) must
give the results a sequential run gives."""
import concurrent.futures as cf
import importlib
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import migrate
from cli.main import main
from migrate.batch import output_names, run_jobs

from conftest import fixture_dir, needs_tf, require


@pytest.fixture
def sources(tmp_path):
    """A directory of models plus loose files: 3 good, 1 unsupported, 1
    truncated, 1 non-model .h5 (found in the directory), 1 missing."""
    d = tmp_path / "zoo"
    d.mkdir()
    shutil.copy(fixture_dir("k3_small_cnn") / "model.keras", d / "cnn.keras")
    shutil.copy(fixture_dir("k3_text_mlp") / "model.h5", d / "text.h5")
    shutil.copy(fixture_dir("k3_custom_layers") / "model.keras",
                d / "custom.keras")
    shutil.copy(fixture_dir("k3_small_cnn") / "model.weights.h5",
                d / "orphan.weights.h5")
    broken = tmp_path / "broken.keras"
    data = (fixture_dir("k3_mlp") / "model.keras").read_bytes()
    broken.write_bytes(data[:100])
    json_model = (fixture_dir("k2_small_cnn") / "model.json",
                  fixture_dir("k2_small_cnn") / "model_weights.h5")
    return [d, broken, json_model, tmp_path / "missing.keras"]


EXPECTED = [  # (source name, status, output subdirectory)
    ("cnn.keras", "ok", "cnn"),
    ("custom.keras", "fail", None),
    ("orphan.weights.h5", "skipped", None),
    ("text.h5", "ok", "text"),
    ("broken.keras", "error", None),
    ("model.json", "ok", "model"),
    ("missing.keras", "error", None),
]


def _summary(results, out):
    return [(Path(r.source).name, r.status,
             Path(r.outdir).relative_to(out).as_posix() if r.outdir
             else None) for r in results]


def _comparable(results):
    rows = []
    for r in results:
        d = r.to_dict()
        d.pop("seconds")
        d["outdir"] = d["outdir"] and Path(d["outdir"]).name
        d["report"] = r.report and {k: v for k, v in r.report.items()
                                    if k != "source"}
        rows.append(d)
    return rows


def test_one_result_per_model_in_order(tmp_path, sources):
    out = tmp_path / "out"
    results = migrate.convert_many(sources, out)
    assert _summary(results, out) == EXPECTED
    by = {Path(r.source).name: r for r in results}
    assert by["custom.keras"].error_type == "UnsupportedLayers"
    assert "Scale" in by["custom.keras"].error
    assert "no such file" in by["missing.keras"].error
    assert by["orphan.weights.h5"].error.startswith("weights-only")
    for name in ("cnn", "text", "model"):
        assert (out / name / "model.py").is_file()
        report = json.loads((out / name / "conversion.json").read_text())
        assert report == by[{"cnn": "cnn.keras", "text": "text.h5",
                             "model": "model.json"}[name]].report
    assert sorted(p.name for p in out.iterdir()) == ["cnn", "model", "text"]


def test_existing_output_needs_force(tmp_path, sources):
    out = tmp_path / "out"
    migrate.convert_many(sources[:1], out)
    again = migrate.convert_many(sources[:1], out)
    assert [r.status for r in again if r.status != "skipped"] == \
        ["error", "fail", "error"]
    assert "already exists" in again[0].error
    forced = migrate.convert_many(sources[:1], out, force=True)
    assert [r.status for r in forced] == ["ok", "fail", "skipped", "ok"]


def test_process_pool_gives_the_sequential_results(tmp_path, sources):
    seq = migrate.convert_many(sources, tmp_path / "a")
    par = migrate.convert_many(sources, tmp_path / "b", jobs=2)
    assert _comparable(par) == _comparable(seq)
    for name in ("cnn", "text", "model"):
        assert (tmp_path / "a" / name / "model.py").read_bytes() == \
            (tmp_path / "b" / name / "model.py").read_bytes()
        assert (tmp_path / "a" / name / "model.safetensors").read_bytes() \
            == (tmp_path / "b" / name / "model.safetensors").read_bytes()


def test_dask_local_cluster_gives_the_sequential_results(tmp_path, sources):
    try:
        import distributed
    except ImportError:
        distributed = None
    require("dask", distributed is not None,
            'pip install "keras2torch[dask]"')
    seq = migrate.convert_many(sources, tmp_path / "a")
    with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
            worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        done = []
        par = migrate.convert_many(
            sources, tmp_path / "b", executor=client.get_executor(),
            progress=lambda n, total, r: done.append((n, total)))
    assert _comparable(par) == _comparable(seq)
    assert done[-1] == (6, 6)  # every model reported (not the skipped one)


def test_any_executor_and_crashes(tmp_path, sources):
    """A ThreadPoolExecutor works too; an exception that escapes a worker
    becomes that job's error result, the others still finish."""
    with cf.ThreadPoolExecutor(2) as ex:
        par = migrate.convert_many(sources, tmp_path / "a", executor=ex)
    assert _summary(par, tmp_path / "a") == EXPECTED

    def boom(job):
        if job == 2:
            raise RuntimeError("worker died")
        return job * 10

    with cf.ThreadPoolExecutor(2) as ex:
        got = run_jobs(boom, [1, 2, 3], executor=ex,
                       on_crash=lambda job, exc: f"crash {job}: {exc}")
    assert got == [10, "crash 2: worker died", 30]


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(TypeError, match="layouts"):
        migrate.convert_many([], tmp_path, layouts="keras")


def test_output_names_are_unique_and_stable():
    paths = [Path("a/cnn.keras"), Path("b/cnn.keras"), Path("a/mlp.h5"),
             Path("c/x.keras"), Path("c/x.h5"), Path("c/weird name!.json")]
    assert output_names(paths) == ["a_cnn", "b_cnn", "mlp", "x_keras",
                                   "x_h5", "weird_name"]
    assert output_names(paths) == output_names(list(paths))


def run(*args):
    return CliRunner().invoke(main, ["convert", *map(str, args)])


def test_cli_batch(tmp_path, sources):
    d, broken, (json_model, _), missing = sources
    out = tmp_path / "OUT"
    r = run(d, broken, "-o", out)
    assert r.exit_code == 2, r.output  # broken.keras cannot be read
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["STATUS", "MODEL", "OUTPUT"]
    statuses = [ln.split()[0] for ln in lines[1:-1]]
    assert statuses == ["ok", "fail", "skipped", "ok", "error"]
    assert lines[-1] == "5 model(s): 2 ok, 1 fail, 1 error, 1 skipped"
    assert "converting" not in r.stderr  # no progress bar off a terminal
    assert sorted(p.name for p in out.iterdir()) == ["cnn", "text"]


def test_cli_batch_exit_codes_and_json(tmp_path, sources):
    d = sources[0]
    (d / "custom.keras").unlink()
    r = run(d, "-o", tmp_path / "ok", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["summary"] == {"total": 3, "ok": 2, "fail": 0, "error": 0,
                               "skipped": 1, "exit_code": 0}
    assert [m["status"] for m in data["models"]] == ["ok", "skipped", "ok"]
    shutil.copy(fixture_dir("k3_custom_layers") / "model.keras",
                d / "custom.keras")
    r = run(d, "-o", tmp_path / "fail", "--format", "json", "-j", "2")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    (bad,) = [m for m in data["models"] if m["status"] == "fail"]
    assert bad["error_type"] == "UnsupportedLayers"
    assert "Scale" in bad["error"]


def test_cli_batch_refuses_weights(tmp_path, sources):
    r = run(sources[0], sources[1], "--weights", "w.h5", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "--weights takes one model" in r.output


def test_cli_single_directory_is_a_batch(tmp_path):
    d = tmp_path / "one"
    d.mkdir()
    shutil.copy(fixture_dir("k3_small_cnn") / "model.keras", d / "cnn.keras")
    r = run(d, "-o", tmp_path / "out")
    assert r.exit_code == 0
    assert (tmp_path / "out" / "cnn" / "model.py").is_file()


@needs_tf
@pytest.mark.keras
def test_verify_in_parallel(tmp_path, sources):
    d = sources[0]
    res = migrate.convert_many([d / "cnn.keras", d / "text.h5"],
                               tmp_path / "out", jobs=2, verify=True)
    assert [r.status for r in res] == ["ok", "ok"]
    for r in res:
        assert r.parity["passed"] and r.parity["max_abs_err"] < 1e-5
        saved = json.loads((Path(r.outdir) / "conversion.json").read_text())
        assert saved["parity"]["max_abs_err"] == r.parity["max_abs_err"]


RULES_FILE = Path(__file__).with_name("data") / "custom_rules.py"


def test_rules_files_in_a_batch_and_single(tmp_path, sources):
    """--rules FILE.py: each worker process loads the file; the custom
    layers convert where they failed without it."""
    d = sources[0]
    r = run(d, "-o", tmp_path / "out", "-j", "2", "--rules", RULES_FILE,
            "--format", "json")
    assert r.exit_code == 0, r.output
    status = {Path(m["source"]).name: m["status"]
              for m in json.loads(r.stdout)["models"]}
    assert status == {"cnn.keras": "ok", "custom.keras": "ok",
                      "orphan.weights.h5": "skipped", "text.h5": "ok"}
    assert "* 2.0" in (tmp_path / "out" / "custom" / "model.py").read_text()
    res = migrate.convert_many([d / "custom.keras"], tmp_path / "api",
                               rules=[RULES_FILE])
    assert res[0].status == "ok", res[0].error
    r = run(d / "custom.keras", "-o", tmp_path / "one", "--rules",
            RULES_FILE)
    assert r.exit_code == 0, r.output
    r = run(d / "custom.keras", "-o", tmp_path / "two", "--rules",
            tmp_path / "nothere.py")
    assert r.exit_code == 2 and "rules file" in r.output
    assert not (tmp_path / "two").exists()


def _stderr_on_a_terminal(args, cwd):
    """Run ``keras2torch ARGS`` with stderr on a pseudo-terminal (stdout a
    pipe); returns (exit code, what the terminal showed, stdout)."""
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "cli.main", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    out = proc.stdout.read()
    proc.wait(timeout=300)
    os.close(master)
    return proc.returncode, shown.decode(errors="replace"), out.decode()


@pytest.mark.parametrize("command", ["convert", "check"])
def test_progress_bar_on_a_terminal_only(tmp_path, sources, command):
    d = sources[0]
    args = ([command, d, "-o", tmp_path / "o1"] if command == "convert"
            else [command, "--no-verify", d])
    label = {"convert": "converting", "check": "checking"}[command]
    code, shown, out = _stderr_on_a_terminal(args, tmp_path)
    assert code == 1, shown + out  # custom.keras fails
    assert label in shown and "3/3" in shown, shown
    assert label not in out and "custom.keras" in out
    quiet = ([command, d, "-o", tmp_path / "o2", "--quiet"]
             if command == "convert" else [command, "--no-verify", "-q", d])
    code, shown, out = _stderr_on_a_terminal(quiet, tmp_path)
    assert code == 1 and label not in shown, shown


@needs_tf
@pytest.mark.keras
def test_one_keras_process_gives_the_fresh_process_results(monkeypatch):
    """verify() inside keras_session() (as check and convert_many run it)
    starts TensorFlow once per Keras major version, and every figure is
    the one a fresh process per model gives; a model Keras cannot run is
    the same error, and the server goes on with the next model."""
    v = importlib.import_module("migrate.verify")  # not the function
    from migrate.userrules import load_rule_files
    custom = fixture_dir("k3_custom_layers") / "model.keras"
    models = [(fixture_dir("k3_small_cnn") / "model.keras", None, False),
              (fixture_dir("k2_small_cnn") / "model.h5", None, False),
              (custom, load_rule_files([RULES_FILE]), False),
              (fixture_dir("k3_text_mlp") / "model.keras", None, True),
              (fixture_dir("k2_text_mlp") / "model.h5", None, True)]

    def run_all():
        out = []
        for path, rules, per_layer in models:
            conv = migrate.convert(path, rules=rules)
            try:
                out.append(v.verify(path, conv, per_layer=per_layer,
                                    rules=rules))
            except migrate.ConversionError as exc:
                out.append(str(exc))
        return out

    fresh = run_all()
    starts = []
    real_start = v.KerasServer._start
    monkeypatch.setattr(v.KerasServer, "_start", lambda self: (
        starts.append(self.major), real_start(self))[1])
    with v.keras_session():
        reused = run_all()
        pids = {m: s.proc.pid for m, s in v._SERVERS.items()}
        assert set(pids) == {2, 3}
    assert sorted(starts) == [2, 3]
    assert not v._SERVERS  # ended with the session
    assert reused == fresh
    assert "Could not locate class 'Scale'" in fresh[2]
    assert fresh[0]["passed"] and fresh[3]["layers"]


@needs_tf
@pytest.mark.keras
def test_dask_workers_verify_in_one_keras_process(tmp_path, sources):
    """A Dask worker keeps one Keras process for the models it verifies
    (killed when the worker exits): the figures are the sequential ones
    up to torch's threading (an ulp or so)."""
    try:
        import distributed
    except ImportError:
        distributed = None
    require("dask", distributed is not None,
            'pip install "keras2torch[dask]"')
    d = sources[0]
    models = [d / "cnn.keras", d / "text.h5", d / "cnn.keras"]
    seq = migrate.convert_many(models[:2], tmp_path / "a", verify=True)
    with distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
            worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        par = migrate.convert_many(models, tmp_path / "b", verify=True,
                                   executor=client.get_executor())
    assert [r.status for r in par] == ["ok", "ok", "ok"]
    for s, p in zip(seq + seq[:1], par):
        assert abs(s.parity["max_abs_err"] - p.parity["max_abs_err"]) < 1e-6
