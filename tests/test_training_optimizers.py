"""The optimizers of training.py against Keras's (issue 15, part 3).

Every case of fixtures/make_optimizer_refs.py -- each Keras optimizer with
non-default hyper-parameters, weight decay, each clipping, each schedule,
amsgrad / nesterov / centered, Keras 3, tf.keras 2.11+ and legacy tf.keras
-- is converted from the config Keras serialized, the generated source is
run in a fresh namespace on the same variables and gradients, and after
each of the 5 steps

* float64: variables within 1e-6 of the size of Keras's update so far
  (the update formula itself: eps placement, bias correction, clipping);
* float32: variables within 1e-6 of their size, as a model trains;
* slots (through ``OptimizerCode.slots``) and optimizer-wide variables
  (``globals``) within 1e-6 of their size, in both;
* every Keras slot is either mapped or declared unused.

The references are stored (no TensorFlow needed); ``test_live_keras``
regenerates them with Keras and checks the same against the live ones.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fixtures.make_optimizer_refs import (CASES, LOOKED_UP, SHAPES, SPARSE,
                                          STEPS)
from migrate.rules.base import Refused
from migrate.training.optimizers import optimizer_code

from conftest import ROOT, needs_tf

REFS = ROOT / "fixtures" / "optimizers"
TOL = 1e-6
# Keras's Adam takes its bias correction at float32(beta_2) even for
# float64 variables, its moments at beta_2 itself: no one number gives
# both.  With beta_2 = 0.999, sqrt(1 - float32(0.999)) is 6.4e-6 off
# sqrt(1 - 0.999): measured 6.6e-6 of the float64 update (5.5e-8 of the
# float32 weights, where Keras's float32 pow rounds as much).
FLOAT64_TOL = {"k3_adam_defaults": 1e-5}
# Cases whose config torch's own optimizer reproduces exactly.
BUILTIN = {
    "k3_sgd": "torch.optim.SGD", "k3_sgd_weight_decay": "torch.optim.SGD",
    "k2_sgd": "torch.optim.SGD", "k3_adadelta": "torch.optim.Adadelta",
    "legacy_adadelta": "torch.optim.Adadelta",
    "k3_nadam": "torch.optim.NAdam", "k3_nadam_weight_decay":
        "torch.optim.NAdam", "k2_nadam": "torch.optim.NAdam",
    "legacy_nadam": "torch.optim.NAdam",
    "k3_nadam_defaults": "torch.optim.NAdam",
    "k2_nadam_defaults": "torch.optim.NAdam",
    "legacy_rmsprop": "torch.optim.RMSprop",
    "legacy_rmsprop_centered": "torch.optim.RMSprop",
    "legacy_adagrad_decay": "torch.optim.Adagrad",
}


def training_py(code) -> str:
    body = textwrap.indent(code.make_optimizer, "    ")
    notes = "".join(f"# {line}\n" for line in code.notes)
    parts = ["import math\n\nimport torch\n", code.source,
             f"{notes}def make_optimizer(model):\n{body}\n"]
    return "\n\n".join(part for part in parts if part)


def make_optimizer(code):
    namespace = {}
    exec(compile(training_py(code), "training.py", "exec"), namespace)
    return namespace["make_optimizer"]


def code_of(refs, lookups=None):
    """The OptimizerCode of a case; its sparse cases are a model's
    embedding lookups (``lookups`` overrides)."""
    if lookups is None:
        lookups = "float64_rows" in refs.files
    return optimizer_code(json.loads(str(refs["config"])), lookups=lookups)


def set_grads(params, refs, dtype, k, sparse=True):
    """Step ``k``'s gradients; a sparse case's first one as the rows an
    nn.Embedding(sparse=True) gives (one per looked-up id, unsummed), or
    summed (``sparse=False``)."""
    grads = split(refs["float64_g"][k].astype(dtype))
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g.copy())
    if sparse and "float64_rows" in refs.files:
        rows = torch.from_numpy(refs["float64_rows"][k].astype(dtype))
        ids = torch.tensor([LOOKED_UP[k]])
        params[0].grad = torch.sparse_coo_tensor(ids, rows, SHAPES[0],
                                                 check_invariants=False)


def split(vector):
    out, at = [], 0
    for shape in SHAPES:
        n = int(np.prod(shape))
        out.append(vector[at:at + n].reshape(shape))
        at += n
    return out


def rel(got, want):
    scale = np.abs(want).max()
    return float(np.abs(got - want).max() / scale) if scale else float(
        np.abs(got).max())


def errors(refs, dtype, lookups=None):
    """Per step: (variable error, worst slot/global error) of torch's
    trajectory against Keras's in ``refs``; asserts the slot bookkeeping.
    ``lookups=False``: a sparse case run as if its gradient were dense."""
    code = code_of(refs, lookups)
    x = refs["float64_x"].astype(dtype)
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in
              split(x)]
    opt = make_optimizer(code)(torch.nn.ParameterList(params))
    keras_slots = {k[len(dtype) + 3:] for k in refs.files
                   if k.startswith(f"{dtype}_s_")}
    keras_globals = {k[len(dtype) + 3:] for k in refs.files
                     if k.startswith(f"{dtype}_u_")}
    assert keras_slots == set(code.slots) | set(code.ignored_slots)
    assert keras_globals == set(code.globals)
    out = []
    for k in range(STEPS):
        set_grads(params, refs, dtype, k, sparse=lookups is None)
        opt.step()
        got = np.concatenate([p.detach().numpy().ravel() for p in params])
        want = refs[f"{dtype}_v"][k]
        scale = np.abs(want - x if dtype == "float64" else want).max()
        var_err = float(np.abs(got - want).max() / scale)
        state_err = 0.0
        for slot, key in code.slots.items():
            got_s = np.concatenate([opt.state[p][key].numpy().ravel()
                                    for p in params])
            want_s = refs[f"{dtype}_s_{slot}"][k]
            state_err = max(state_err, rel(got_s, want_s))
        for name, key in code.globals.items():
            for p in params:
                state_err = max(state_err, rel(opt.state[p][key].numpy(),
                                               refs[f"{dtype}_u_{name}"][k]))
        if code.step_key:
            assert all(int(opt.state[p][code.step_key]) == k + 1
                       for p in params)
        out.append((var_err, state_err))
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_resumes_from_keras_state(name, dtype):
    """Keras's variables, slots and step count after 2 steps, loaded with
    ``optimizer.load_state_dict`` through ``slots``/``step_key``/
    ``globals``, give Keras's next 3 steps: what optimizer.safetensors
    relies on."""
    with stored(name) as refs:
        code = code_of(refs)
        if code.restart:
            pytest.skip("tf.keras does not save this state (restart)")
        done = 2
        params = [torch.nn.Parameter(torch.from_numpy(a.copy()))
                  for a in split(refs[f"{dtype}_v"][done - 1])]
        opt = make_optimizer(code)(torch.nn.ParameterList(params))
        state = {}
        for i in range(len(params)):
            entry = {code.step_key: torch.tensor(float(done))} \
                if code.step_key else {}
            for slot, key in code.slots.items():
                entry[key] = torch.from_numpy(
                    split(refs[f"{dtype}_s_{slot}"][done - 1])[i].copy())
            for name_, key in code.globals.items():
                entry[key] = torch.tensor(refs[f"{dtype}_u_{name_}"][done - 1])
            if entry:
                state[i] = entry
        opt.load_state_dict({"state": state, "param_groups":
                             opt.state_dict()["param_groups"]})
        for k in range(done, STEPS):
            set_grads(params, refs, dtype, k)
            opt.step()
            got = np.concatenate([p.detach().numpy().ravel()
                                  for p in params])
            want = refs[f"{dtype}_v"][k]
            base = refs[f"{dtype}_v"][done - 1]
            scale = np.abs(want - base if dtype == "float64" else want).max()
            tol = FLOAT64_TOL.get(name, TOL) if dtype == "float64" \
                else TOL
            assert np.abs(got - want).max() / scale <= tol, (k, name)


def stored(name):
    return np.load(REFS / f"{name}.npz", allow_pickle=False)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_keras(name, dtype):
    with stored(name) as refs:
        errs = errors(refs, dtype)
    tol = FLOAT64_TOL.get(name, TOL) if dtype == "float64" else TOL
    assert max(e for e, _ in errs) <= tol, errs
    assert max(s for _, s in errs) <= TOL, errs


@pytest.mark.parametrize("name", sorted(SPARSE))
def test_lookup_rows_matter_where_keras_treats_them_apart(name):
    """The sparse cases where the treatment is needed: given the summed
    gradient instead of the rows, Keras's trajectory is missed (so the
    sparse path is what matches it)."""
    with stored(name) as refs:
        if code_of(refs).make_optimizer == code_of(
                refs, lookups=False).make_optimizer:
            pytest.skip("Keras's update is the summed gradient's here")
        errs = errors(refs, "float64", lookups=False)
    assert max(e for e, _ in errs) > 1e-3, errs


@pytest.mark.parametrize("name", sorted(CASES))
def test_source(name):
    """pycodestyle-clean, deterministic, torch only; torch's built-in
    optimizer exactly where it computes Keras's update."""
    pycodestyle = pytest.importorskip("pycodestyle")
    with stored(name) as refs:
        config = json.loads(str(refs["config"]))
        code = code_of(refs)
    lookups = name in SPARSE
    assert optimizer_code(json.loads(json.dumps(config)),
                          lookups=lookups) == code
    source = training_py(code)
    style = pycodestyle.StyleGuide(max_line_length=79, quiet=True)
    checker = pycodestyle.Checker("training.py", lines=source.splitlines(
        keepends=True), options=style.options)
    assert checker.check_all() == 0, source
    imports = [line for line in source.splitlines()
               if line.startswith(("import", "from"))]
    assert imports == ["import math", "import torch"]
    if name in BUILTIN:
        assert code.make_optimizer.startswith(f"return {BUILTIN[name]}(")
        assert "class " not in code.source
    else:
        assert "(KerasOptimizer):" in code.source


def keras3(cls, **config):
    base = {"name": "x", "learning_rate": 0.001, "weight_decay": None,
            "clipnorm": None, "global_clipnorm": None, "clipvalue": None,
            "use_ema": False, "ema_momentum": 0.99,
            "ema_overwrite_frequency": None, "loss_scale_factor": None,
            "gradient_accumulation_steps": None}
    return {"module": "keras.optimizers", "class_name": cls,
            "config": {**base, **config}, "registered_name": None}


def test_keras3_h5_config_is_the_same():
    """A Keras 3 .h5 stores the optimizer without module/registered_name."""
    config = keras3("Adam", beta_1=0.8, beta_2=0.95, epsilon=1e-3,
                    amsgrad=False)
    h5 = {"class_name": "Adam", "config": config["config"]}
    assert optimizer_code(h5) == optimizer_code(config)
    assert optimizer_code(h5).keras == "keras3"


@pytest.mark.parametrize("config, words", [
    (keras3("Adam", use_ema=True), ["use_ema=True", "AveragedModel"]),
    (keras3("Adam", loss_scale_factor=128.0), ["loss_scale_factor"]),
    (keras3("SGD", gradient_accumulation_steps=4),
     ["gradient_accumulation_steps"]),
    ({"module": "keras.optimizers", "class_name": "LossScaleOptimizer",
      "config": {"inner_optimizer": keras3("Adam")}},
     ["LossScaleOptimizer", "GradScaler"]),
    (keras3("Ftrl"), ["'Ftrl'", "supported: Adadelta"]),
    ({"module": "my_project", "class_name": "Mine", "config": {}},
     ["custom optimizer"]),
    (keras3("Adam", learning_rate={
        "module": "keras.optimizers.schedules",
        "class_name": "CyclicalDecay", "config": {}}),
     ["CyclicalDecay", "learning_rate(step) by hand"]),
    (keras3("Adam", learning_rate={
        "module": "builtins", "class_name": "ExponentialDecay",
        "config": {}}), ["schedule keras2torch does not know"]),
    (keras3("Adam", learning_rate=float("nan")), ["learning_rate=nan"]),
    (keras3("Adam", beta_1=True), ["beta_1=True", "not a number"]),
    (keras3("Adam", beta_1="0.9"), ["not a number"]),
    (keras3("Adam", amsgrad=1), ["amsgrad=1", "not a boolean"]),
    (keras3("Adam", foo=1.0), ["'foo'", "unknown option"]),
    (keras3("SGD", momentum=2.0), ["momentum=2.0", "out of range"]),
    (keras3("Adam", learning_rate={
        "module": "keras.optimizers.schedules",
        "class_name": "PiecewiseConstantDecay",
        "config": {"boundaries": [5, 2], "values": [0.1, 0.2, 0.3],
                   "name": None}}), ["increasing"]),
    ({"class_name": "Nadam", "config": {
        "name": "Nadam", "decay": 0.004, "beta_1": 0.9, "beta_2": 0.999,
        "epsilon": 1e-7, "learning_rate": {
            "class_name": "ExponentialDecay", "config": {
                "initial_learning_rate": 0.1, "decay_steps": 2,
                "decay_rate": 0.5}}}}, ["legacy", "does not take one"]),
    ({"class_name": "Lion", "config": {"name": "Lion", "decay": 0.0}},
     ["'Lion'", "legacy"]),
    ("Adam", ["not a serialized Keras optimizer"]),
])
def test_refuses(config, words):
    with pytest.raises(Refused) as e:
        optimizer_code(config)
    for word in words:
        assert word in str(e.value)


def test_no_config_text_reaches_the_source():
    """Names in the config are never written: only validated numbers."""
    evil = '"""\nimport os; os.system("x")  # \x1b[2J'
    code = optimizer_code(keras3("Adam", name=evil, beta_1=0.8, beta_2=0.9,
                                 epsilon=1e-3, amsgrad=False))
    assert "os.system" not in code.source + code.make_optimizer
    assert "os.system" not in "".join(code.notes)


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
def test_live_keras(tmp_path):
    """Regenerate every reference with Keras; the stored ones are still
    Keras's, and torch matches the live ones."""
    subprocess.run([sys.executable, str(ROOT / "fixtures" /
                                        "make_optimizer_refs.py"),
                    "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in sorted(CASES):
        with np.load(tmp_path / f"{name}.npz") as live, stored(name) as old:
            assert set(live.files) == set(old.files), name
            for key in live.files:
                if key != "config":
                    np.testing.assert_allclose(live[key], old[key],
                                               rtol=1e-12, atol=0)
            for dtype in ("float64", "float32"):
                errs = errors(live, dtype)
                tol = FLOAT64_TOL.get(name, TOL) if dtype == "float64" \
                    else TOL
                assert max(e for e, _ in errs) <= tol, (name, dtype, errs)
                assert max(s for _, s in errs) <= TOL, (name, dtype)
