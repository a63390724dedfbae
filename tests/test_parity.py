"""The parity gate: every fixture, every saved format, against Keras.

One test per ``fixtures/models/<case>/`` directory and model format in it:
``migrate.convert`` the file, run the port on the stored Keras inputs and
compare with the stored Keras outputs at the case's ``atol`` (``case.json``;
1e-5 unless :data:`LOOSER_ATOL` says why not).  Relative errors are
reported too (in failures, and as junitxml properties).
The reference outputs were made by ``fixtures/make_fixtures.py``, so this
needs no TensorFlow.

A second test runs pycodestyle over the generated ``model.py`` of every
fixture: the port must read like code written by hand.
"""
from pathlib import Path

import numpy as np
import pytest

import migrate
from migrate.userrules import load_rule_files
from migrate.verify import run_port

from conftest import MODELS, case_meta, model_files


def _custom_rules():
    """Rules for fixtures made of custom layer classes (as a user would
    pass them to ``migrate.convert(rules=...)``), by case name."""
    from migrate.rules import Emit, Out, Rule, chain

    def scale(call):
        x = call.inputs[0]
        return Emit([Out(chain(f"{x.expr} * 2.0"), x.shape, x.layout)])

    def shift(call):
        x = call.inputs[0]
        return Emit([Out(chain(f"{x.expr} + 1.0"), x.shape, x.layout)])

    return {"k3_custom_layers": {"fixtures>Scale": Rule("fixtures>Scale",
                                                        scale),
                                 "fixtures>Shift": Rule("fixtures>Shift",
                                                        shift)}}


CUSTOM_RULES = _custom_rules()
# The custom-layer path's fixtures: the rule file `keras2torch rules new`
# wrote, filled in (tests/test_custom_path.py).
for _name in ("custom_port", "custom_multi"):
    CUSTOM_RULES.update(dict.fromkeys(
        [f"k2_{_name}", f"k3_{_name}"],
        load_rule_files([Path(__file__).with_name("data")
                         / f"{_name}_rules.py"])))
ATOL = 1e-5
# A case may set a looser atol only with its reason written here:
# {"k3_case": "why float32 cannot match closer"}.
LOOSER_ATOL: dict[str, str] = {}
CASES = sorted(d for d in MODELS.iterdir() if (d / "case.json").exists())
# every saved format in the default torch layout, and the first format
# again with layout="keras" (channels-last interface: other permutes)
FORMATS = [(d, label, m, w, "torch") for d in CASES
           for label, m, w in model_files(d)]
FORMATS += [(d, label, m, w, "keras") for d in CASES
            for label, m, w in model_files(d)[:1]]


def convert(case_dir, model, weights, layout="torch"):
    return migrate.convert(model, weights, layout=layout,
                           rules=CUSTOM_RULES.get(case_dir.name))


def load_reference(case_dir):
    """(inputs, outputs) in Keras layout, in model order."""
    with np.load(case_dir / "reference.npz", allow_pickle=False) as ref:
        count = {k: sum(f.startswith(k) for f in ref.files)
                 for k in ("in_", "out_")}
        inputs = [ref[f"in_{i}"] for i in range(count["in_"])]
        outputs = [ref[f"out_{i}"] for i in range(count["out_"])]
    return inputs, outputs


def port_inputs(conv, inputs):
    """The stored inputs in the port's input dtypes.  Token ids fed to a
    float Keras Input are stored as integers; Keras casts them to the
    Input's dtype, so the port gets the same values as floats."""
    out = []
    for a, t in zip(inputs, conv.program.inputs):
        if t.dtype.startswith("float") and a.dtype.kind in "iu":
            a = a.astype(t.dtype)
        out.append(a)
    return out


def errors(want, got):
    """(max abs error, max abs error / max |Keras output|)."""
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if not want.size:
        return 0.0, 0.0
    err = float(np.max(np.abs(want - got)))
    scale = float(np.max(np.abs(want)))
    return err, err / scale if scale else err


@pytest.mark.parametrize(
    "case_dir, label, model, weights, layout",
    [pytest.param(*f, id=f"{f[0].name}-{f[1]}"
                  + ("-keraslayout" if f[4] == "keras" else ""))
     for f in FORMATS])
def test_port_matches_keras(case_dir, label, model, weights, layout,
                            record_property):
    meta = case_meta(case_dir)
    atol = float(meta.get("atol", ATOL))
    assert atol <= ATOL or case_dir.name in LOOSER_ATOL, (
        f"{case_dir.name}: atol {atol:g} > {ATOL:g} needs a reason in "
        "LOOSER_ATOL")
    inputs, outputs = load_reference(case_dir)
    conv = convert(case_dir, model, weights, layout)
    ports = conv.program.outputs
    assert len(ports) == len(outputs), "number of outputs"
    got = run_port(conv, port_inputs(conv, inputs))
    bad, worst = [], (0.0, 0.0)
    for port, want, have in zip(ports, outputs, got):
        assert have.shape == want.shape, (
            f"output {port.name}: port shape {have.shape}, Keras "
            f"{want.shape}")
        if not np.isfinite(want).all():
            # the same non-finite values in the same places
            np.testing.assert_array_equal(np.isfinite(have),
                                          np.isfinite(want))
            keep = np.isfinite(want)
            want, have = want[keep], have[keep]
        err, rel = errors(want, have)
        worst = max(worst[0], err), max(worst[1], rel)
        if not err <= atol:
            bad.append(f"{port.name}: max abs err {err:.3g} (rel "
                       f"{rel:.3g}) > atol {atol:g}")
    record_property("max_abs_err", worst[0])  # in --junitxml reports
    record_property("max_rel_err", worst[1])
    assert not bad, f"{case_dir.name} ({label}, {layout} layout):\n" + (
        "\n".join(bad))


def test_every_fixture_is_checked():
    assert CASES, "no fixtures found"
    missing = [d.name for d in CASES if not model_files(d)]
    assert not missing, f"fixtures without a model file: {missing}"


@pytest.mark.parametrize("case_dir", [pytest.param(d, id=d.name)
                                      for d in CASES])
def test_generated_source_is_pep8_clean(case_dir):
    pycodestyle = pytest.importorskip("pycodestyle")  # a test extra
    label, model, weights = model_files(case_dir)[0]
    conv = convert(case_dir, model, weights)
    found = pep8_problems(pycodestyle, conv.source)
    assert not found, "\n".join(found)


def pep8_problems(pycodestyle, source):
    """pycodestyle's findings for ``source`` at 79 columns."""
    found = []

    class Collect(pycodestyle.BaseReport):
        def error(self, line_number, offset, text, check):
            code = super().error(line_number, offset, text, check)
            if code:
                found.append(f"model.py:{line_number}:{offset + 1}: {text}")
            return code

    style = pycodestyle.StyleGuide(max_line_length=79, reporter=Collect)
    checker = pycodestyle.Checker("model.py",
                                  lines=source.splitlines(keepends=True),
                                  options=style.options)
    checker.check_all()
    return found
