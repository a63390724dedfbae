"""training.py and optimizer.safetensors (issue 15, parts 3-4) on the
fixtures of fixtures/cases_training.py: models compiled and fitted a few
steps before saving.

Without TensorFlow: training.py compiles, imports only torch (and math)
and is pycodestyle clean; its loss_fn gives the loss Keras evaluated on a
stored batch; optimizer.safetensors loads into make_optimizer(model).
With TensorFlow (keras-marked): five steps of training.py land where five
train_on_batch steps land, from the saved optimizer state."""
import ast
import subprocess
import sys

import numpy as np
import pytest
import torch

import migrate
from migrate.training.losses import Output, UnsupportedLoss, loss_code

from conftest import fixture_dir, needs_tf

CASES = [("k3_train_adam_sparse", "model.keras"),
         ("k2_train_adam_sparse", "model.h5"),
         ("k3_train_adamw_cce", "model.keras"),
         ("k3_train_sgd_nesterov_mse", "model.keras"),
         ("k3_train_rmsprop_bce", "model.keras"),
         ("k2_train_rmsprop_bce", "model.h5"),
         ("k3_train_two_heads", "model.keras"),
         ("k3_train_adam_schedule_mae", "model.keras"),
         # Keras 3's .h5 names the slots; tf.keras's .keras stores them
         # by position
         ("k3_train_adam_sparse", "model.h5"),
         ("k3_train_rmsprop_bce", "model.h5"),
         ("k2_train_adam_sparse", "model.keras"),
         ("k2_train_sgd_nesterov_mse", "model.h5")] + [
    (f"k3_train_{name}", "model.keras") for name in (
        "adagrad_cce_logits_globalclip", "adadelta_sparse_probs",
        "adamax_bce_logits_clipvalue", "nadam_mse_sum",
        "lion_huber_piecewise", "sgd_cosine_warmup_mae")] + [
    # an embedding lookup's gradient, taken row by row as each Keras does
    ("k3_train_lookup_adam_clipnorm", "model.keras"),
    ("k2_train_lookup_adam_clipnorm", "model.h5"),
    ("k2_train_lookup_legacy_sgd_momentum", "model.h5")]
IDS = [f"{c}-{f.split('.')[-1]}" for c, f in CASES]


def _code(source):
    """training.py without its regenerate line (it names the folder)."""
    import re
    return re.sub(r"^# Regenerate: .*\n", "", source, flags=re.M)


def _conv(case, name):
    return migrate.convert(fixture_dir(case) / name)


def _namespace(conv):
    ns = {"__name__": "training_under_test"}
    exec(compile(conv.training.source, "training.py", "exec"), ns)
    return ns


@pytest.mark.parametrize("case,name", CASES, ids=IDS)
def test_training_py_is_plain_torch(case, name, tmp_path):
    conv = _conv(case, name)
    port = conv.training
    assert port is not None and port.source is not None
    tree = ast.parse(port.source)
    imported = {a.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for a in node.names}
    assert imported <= {"math", "torch"}, imported
    out = conv.save(tmp_path / "port")
    assert _code((out / "training.py").read_text()) == _code(port.source)
    proc = subprocess.run([sys.executable, "-m", "pycodestyle",
                           str(out / "training.py")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout
    report = conv.report["training"]
    assert report["file"] == "training.py"
    assert report["loss"], report


@pytest.mark.parametrize("case,name", CASES, ids=IDS)
def test_loss_fn_matches_keras(case, name):
    """loss_fn on the port's outputs (eval mode) against the loss Keras's
    evaluate() gave on the same batch when the fixture was made."""
    conv = _conv(case, name)
    loss_fn = _namespace(conv)["loss_fn"]
    from migrate.verify_steps import _to_port
    with np.load(fixture_dir(case) / "reference.npz") as ref:
        x = [ref[f] for f in sorted(ref.files) if f.startswith("loss_x_")]
        y = [ref[f] for f in sorted(ref.files) if f.startswith("loss_y_")]
        keras_loss = float(ref["loss"])
    model = conv.module()
    args = [torch.from_numpy(a).permute(*t.layout.perm)
            for a, t in zip(x, conv.program.inputs)]
    targets = [_to_port(a.astype("int64") if a.dtype.kind == "i" else a,
                        tuple(t.layout.perm))
               for a, t in zip(y, conv.program.outputs)]
    with torch.no_grad():
        out = model(*args)
        got = (loss_fn(out, targets[0]) if len(targets) == 1
               else loss_fn(tuple(out), tuple(targets)))
    assert abs(float(got) - keras_loss) <= 1e-6 * max(1.0, abs(keras_loss))


@pytest.mark.parametrize("case,name", CASES, ids=IDS)
def test_optimizer_state_loads(case, name, tmp_path):
    conv = _conv(case, name)
    port = conv.training
    if port.code is None:
        pytest.skip("optimizer not reproduced: " + "; ".join(
            r["reason"] for r in port.info["refused"]))
    assert port.state is not None, port.warnings
    out = conv.save(tmp_path / "port")
    from safetensors.torch import load_file
    state = load_file(out / "optimizer.safetensors")
    ns = _namespace(conv)
    model = conv.module()
    optimizer = ns["make_optimizer"](model)
    ns["load_optimizer_state"](optimizer, state)
    saved = optimizer.state_dict()["state"]
    params = [p for p in model.parameters() if p.requires_grad]
    assert sorted(saved) == list(range(len(params)))
    for i, p in enumerate(params):
        for key, value in saved[i].items():
            if value.ndim:
                assert value.shape == p.shape, (i, key)
    step = port.info["step"]
    assert step == 3  # the fixtures fit three batches
    assert all(float(s[port.code.step_key]) == step for s in saved.values())


def test_loss_weights_dict_and_refusals():
    outs = [Output("a", 2, (0, 1)), Output("b", 2, (0, 1))]
    code = loss_code({"loss": {"a": "mse", "b": "mae"},
                      "loss_weights": {"a": 2.0, "b": 0.5}}, outs)
    assert [s["weight"] for s in code.summary] == [2.0, 0.5]
    assert "return 2.0 * loss_0 + 0.5 * loss_1" in code.source
    with pytest.raises(UnsupportedLoss, match="MyLoss"):
        loss_code({"loss": {"class_name": "MyLoss", "config": {}}},
                  outs[:1])
    with pytest.raises(UnsupportedLoss, match="ignore_class"):
        loss_code({"loss": {"class_name": "SparseCategoricalCrossentropy",
                            "config": {"ignore_class": 0}}}, outs[:1])
    with pytest.raises(UnsupportedLoss, match="reduction"):
        loss_code({"loss": {"class_name": "MeanSquaredError",
                            "config": {"reduction": None}}} and
                  {"loss": {"class_name": "MeanSquaredError",
                            "config": {"reduction": "none"}}}, outs[:1])


def test_uncompiled_model_has_no_training_py(tmp_path):
    conv = migrate.convert(fixture_dir("k3_mlp") / "model.keras")
    assert conv.training is None
    out = conv.save(tmp_path / "port")
    assert not (out / "training.py").exists()
    assert conv.report["training"] is None


@needs_tf
@pytest.mark.keras
@pytest.mark.parametrize("case,name", CASES, ids=IDS)
def test_five_steps_land_where_keras_lands(case, name):
    from migrate.verify import make_inputs
    from migrate.verify_steps import trajectory
    conv = _conv(case, name)
    if conv.training.code is None:
        pytest.skip("optimizer not reproduced: " + "; ".join(
            r["reason"] for r in conv.training.info["refused"]))
    major = int(conv.source_info["keras_version"].split(".")[0])
    path = fixture_dir(case) / name
    got = trajectory(conv, path, None, major, make_inputs(conv.program, 0, 4))
    assert got["from_saved_state"] and got["keras_start_iteration"] == 3
    assert len(got["per_step"]) == 5
    assert got["passed"], got["per_step"]
    for row in got["per_step"]:
        assert row["max_rel_err"] <= 1e-5, row
        assert abs(row["loss_keras"] - row["loss_port"]) <= 1e-5 * max(
            1.0, abs(row["loss_keras"]))


@needs_tf
@pytest.mark.keras
def test_the_saved_state_is_what_makes_the_steps_match():
    """Without optimizer.safetensors (a fresh optimizer) the port leaves
    Keras's trajectory at once: the state is read and it matters."""
    from migrate.verify import make_inputs
    from migrate.verify_steps import trajectory
    case, name = "k3_train_adam_sparse", "model.keras"
    conv = _conv(case, name)
    conv.training.state = None
    got = trajectory(conv, fixture_dir(case) / name, None, 3,
                     make_inputs(conv.program, 0, 4))
    assert not got["from_saved_state"]
    assert got["per_step"][0]["max_rel_err"] > 1e-4
    assert not got["passed"]


@needs_tf
@pytest.mark.keras
@pytest.mark.parametrize("case,name", CASES[-3:], ids=IDS[-3:])
def test_lookup_rows_are_what_makes_the_steps_match(case, name):
    """With the table's gradient summed (as torch's dense nn.Embedding
    gives it) the port leaves Keras's trajectory: make_optimizer's
    sparse=True and the optimizer's row-by-row treatment matter."""
    from migrate.verify import make_inputs
    from migrate.verify_steps import trajectory
    conv = _conv(case, name)
    source = conv.training.source
    assert source.count("module.sparse = True") == 1
    conv.training.source = source.replace("module.sparse = True",
                                          "module.sparse = False")
    major = int(conv.source_info["keras_version"].split(".")[0])
    got = trajectory(conv, fixture_dir(case) / name, None, major,
                     make_inputs(conv.program, 0, 4))
    assert not got["passed"]
    assert max(r["max_rel_err"] for r in got["per_step"]) > 1e-4


@needs_tf
@pytest.mark.keras
def test_cli_verify_training_reports_the_trajectory(tmp_path):
    import json
    from click.testing import CliRunner
    from cli.main import main
    path = fixture_dir("k3_train_adam_sparse") / "model.keras"
    out = tmp_path / "port"
    got = CliRunner().invoke(
        main, ["convert", str(path), "-o", str(out), "--verify",
               "--training"])
    assert got.exit_code == 0, got.output
    assert "training trajectory (5 steps" in got.output
    report = json.loads((out / "conversion.json").read_text())
    steps = report["parity"]["training"]["trajectory"]
    assert steps["passed"] and len(steps["per_step"]) == 5
    assert report["training"]["state_file"] == "optimizer.safetensors"
    assert {"training.py", "optimizer.safetensors"} <= {
        p.name for p in out.iterdir()}


@pytest.mark.parametrize("loss", [
    {"loss": "mse", "loss_weights": [float("nan")]},
    {"loss": {"class_name": "Huber", "config": {"delta": "1e9; import os"}}},
    {"loss": {"class_name": "CategoricalCrossentropy",
              "config": {"label_smoothing": 2.0}}},
    {"loss": {"class_name": "CategoricalCrossentropy",
              "config": {"axis": "0) + os.system('x'"}}},
    {"loss": {"class_name": "BinaryCrossentropy",
              "config": {"reduction": ["sum"]}}},
])
def test_hostile_loss_configs_are_refused(loss):
    """Values from the file are written into training.py only as checked
    numbers: anything else is refused by name, never written."""
    with pytest.raises(UnsupportedLoss):
        loss_code(loss, [Output("y", 2, (0, 1))])


def test_check_sees_a_drifted_training_py(tmp_path):
    import shutil
    from migrate.check import check
    src = fixture_dir("k3_train_adam_sparse") / "model.keras"
    shutil.copy(src, tmp_path / "m.keras")
    migrate.convert(tmp_path / "m.keras").save(tmp_path / "m_torch")
    assert check([tmp_path], verify=False).exit_code == 0
    (tmp_path / "m_torch" / "training.py").write_text("# edited\n")
    report = check([tmp_path], verify=False)
    assert report.exit_code == 1
    assert "training.py differs" in report.models[0].reason


def test_compiled_never_stepped_model_has_no_state_and_no_warning():
    """keras-hub compiles its tasks: saved before any step, the file
    holds only the step count and learning rate -- nothing to load, and
    nothing to warn about; training.py starts a fresh optimizer."""
    conv = _conv("k3_hub_phi3_causal_lm", "model.keras")
    port = conv.training
    assert port.state is None and port.info["state_file"] is None
    assert not [w for w in port.warnings if "optimizer state" in w]
    assert "def make_optimizer(model):" in port.source
    assert "load_optimizer_state" not in port.source
