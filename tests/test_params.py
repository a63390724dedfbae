"""One parameter count everywhere, Keras's (issue 18, item 5): what
``model.summary()`` / ``layer.count_params()`` give, trainable and not.

``fixtures/param_counts.json`` holds Keras's counts for every fixture file
(made by ``fixtures/param_counts.py`` in Keras processes); keras2torch's
count (``migrate/params.py``), ``conversion.json``'s ``layers[].params``,
``inspect`` and the ``convert`` line must all give them.
"""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import migrate
from cli.main import main
from conftest import HAS_TF, MODELS, ROOT, model_files
from migrate import read
from migrate.inspect import inspect_model
from migrate.params import layer_params, model_params

COUNTS = json.loads((ROOT / "fixtures" / "param_counts.json").read_text())


def _files():
    for key in sorted(COUNTS):
        case, label = key.split("/")
        for fmt, path, weights in model_files(MODELS / case):
            if path.name == label:
                yield key, path, weights
                break


def _matches(ours: dict, name: str, count: int) -> bool:
    """Keras lists a layer a task shares with its nested backbone at the
    top too (keras-hub's tied token embedding): the same layer.  Input
    layers are no layers of the graph."""
    if name in ours:
        return ours[name] == count
    if count == 0:
        return True
    return any(n.endswith("/" + name) and c == count
               for n, c in ours.items())


@pytest.mark.parametrize("key, path, weights", list(_files()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_counts_are_keras_counts(key, path, weights):
    want = COUNTS[key]
    with read.open_model(path, weights) as src:
        layers = src.graph.layers()
        ours = {layer.name: layer_params(layer, src.graph)
                for layer in layers}
        assert model_params(layers) == want["total"]
    bad = {n: (ours.get(n), c) for n, c in want["layers"].items()
           if not _matches(ours, n, c)}
    assert not bad, bad


@pytest.mark.parametrize("key", [
    "k3_small_cnn/model.keras",     # BatchNormalization: 4 x C
    "k2_lstm_options/model.keras",  # one Keras bias, not torch's two
    "k3_gru_options/model.keras",
    "k3_conv_sweep/model.keras",    # LoRA variables count
    "k3_shared/model.keras",        # a shared layer counts once
    "k3_nested/model.keras",
])
def test_report_inspect_and_cli_give_the_keras_count(key, tmp_path):
    [(_, path, weights)] = [f for f in _files() if f[0] == key]
    total = COUNTS[key]["total"]
    with migrate.convert(path, weights) as conv:
        layers = conv.report["layers"]
        assert sum(layer["params"] for layer in layers) == total
        for layer in layers:
            if layer["keras_name"] in COUNTS[key]["layers"]:
                assert layer["params"] == \
                    COUNTS[key]["layers"][layer["keras_name"]]
    found = inspect_model(path, weights)
    assert found.params == total == found.to_dict()["params"]
    args = ["convert", str(path), "-o", str(tmp_path / "port")]
    if weights is not None:
        args += ["--weights", str(weights)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().endswith(f"{total:,} parameters)")


def test_batchnorm_counts_its_moving_statistics():
    with migrate.convert(MODELS / "k3_small_cnn" / "model.keras") as conv:
        bn1 = {r["keras_name"]: r for r in conv.report["layers"]}["bn1"]
        assert bn1["params"] == 4 * 8
        # torch's state has one more value: num_batches_tracked
        assert conv.num_values == COUNTS["k3_small_cnn/model.keras"][
            "total"] + 1


@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed")
def test_stored_counts_are_what_keras_reports():
    """The stored table is Keras's (a few fixtures of each kind, both
    backends; ``python fixtures/param_counts.py --check`` does all)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fixtures" / "param_counts.py"),
         "--check", "--only=small_cnn", "--only=lstm_options",
         "--only=conv_sweep", "--only=shared", "--only=nested"],
        capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
