"""keras.applications architectures, built in Keras at test time, converted
from every save (.keras and legacy .h5 from Keras 3, legacy .h5 from
tf-keras) and checked against Keras at max abs error 1e-4.

Application weights are far too large to commit, so each model is built in
a Keras subprocess (``fixtures/cases_applications.py --serve``, one per
backend for the whole session) at its smallest valid input size with
seeded random weights, converted, compared on Keras's own seeded inputs,
and deleted.  The default run (CI) has two parts:

* ``SUBSET``: one architecture per family on both backends, from every
  save, with the variants spread over them (logits and softmax heads, the
  feature map, both pooling options, unknown input sizes);
* ``EVERY``: each other constructor once, its ``top`` model from every
  save of one backend (Keras 3 where it has the architecture, otherwise
  tf-keras), so every ``keras.applications`` constructor of both Kerases
  converts in CI.

``KERAS2TORCH_ALL_APPLICATIONS=1`` runs the whole matrix instead, as
``bench/coverage.py`` does for the README table.
"""
import os
import re
import shutil
import sys

import pytest

from conftest import HAS_TF, ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.coverage import (ATOL, END, START, KerasBuilder,  # noqa: E402
                            check, plan)
from fixtures.cases_applications import (  # noqa: E402
    ARCHS, BACKENDS, BY_NAME)

needs_keras = [pytest.mark.slow, pytest.mark.keras,
               pytest.mark.skipif(not HAS_TF,
                                  reason="TensorFlow not installed")]

ALL = os.environ.get("KERAS2TORCH_ALL_APPLICATIONS") == "1"

# One architecture per family (the smallest), the variants spread over
# them so that the softmax head, the feature map and both pooling options
# are all covered, and unknown input sizes ("dynamic"); every entry runs
# on both backends where it exists.
SUBSET = [
    "ResNet50:top", "ResNet50V2:notop-max", "VGG16:softmax",
    "DenseNet121:notop-avg", "InceptionV3:top", "InceptionResNetV2:notop",
    "Xception:top", "MobileNet:softmax", "MobileNetV2:notop-avg",
    "MobileNetV3Small:top", "MobileNetV3Large:dynamic",
    "EfficientNetB0:top", "EfficientNetV2B0:notop-max",
    "EfficientNetB0:dynamic",
    "NASNetMobile:top", "ConvNeXtTiny:top", "RegNetX002:top",
    "RegNetY002:notop-avg", "ResNetRS50:top",
]
# every other constructor once
EVERY = [("keras3" if a.keras3 else "keras2", f"{a.name}:top")
         for a in ARCHS if a.name not in {s.split(":")[0] for s in SUBSET}]


def _specs():
    if ALL:
        return plan()
    subset = [(b, s) for s in SUBSET for b in BACKENDS
              if b == "keras2" or BY_NAME[s.split(":")[0]].keras3]
    return subset + EVERY


SPECS = _specs()


@pytest.fixture(scope="module")
def builders(tmp_path_factory):
    """One Keras builder process per backend (~1.8 GB each), ended when
    this module's tests are done, not at the end of the whole suite."""
    work = tmp_path_factory.mktemp("applications")
    started = {}

    def get(backend):
        if backend not in started:
            started[backend] = KerasBuilder(backend, work).start()
        return started[backend]

    yield get
    for b in started.values():
        b.close()


@pytest.mark.parametrize("backend, spec", [
    pytest.param(b, s, id=f"{b}-{s.replace(':', '-')}", marks=needs_keras)
    for b, s in SPECS])
def test_application_converts_with_parity(builders, backend, spec,
                                          record_property):
    built = builders(backend).build(spec)
    assert "error" not in built, f"Keras could not build it: {built}"
    try:
        results = check(built)
    finally:
        shutil.rmtree(built["dir"], ignore_errors=True)
    lines = []
    for r in results:
        assert r["converted"], f"{r['file']}: {r.get('error')}"
        record_property(f"{r['file']}_max_abs_err", r["max_abs_err"])
        record_property(f"{r['file']}_max_rel_err", r["max_rel_err"])
        lines.append(f"{r['format']}: max abs err {r['max_abs_err']:.2e} "
                     f"(rel {r['max_rel_err']:.2e}), {r['permutes']} "
                     "permutes")
    print(f"\n{backend} {spec}: " + "; ".join(lines))
    bad = [line for r, line in zip(results, lines) if not r["passed"]]
    assert not bad, f"above max abs err {ATOL:g}: {bad}"
    if spec.split(":")[0] in ("ResNet50", "ResNet50V2", "VGG16",
                              "MobileNetV2", "EfficientNetB0", "Xception"):
        # channels-first all the way: not a single permute
        assert all(r["permutes"] == 0 for r in results), lines
    if spec.startswith("ConvNeXt"):
        # one permute into and one out of each block's LN/Dense/Dense part
        # (as timm does), plus the stem and downsampling layer norms
        blocks = {"ConvNeXtTiny": 18}.get(spec.split(":")[0])
        if blocks:
            assert all(r["permutes"] <= 2 * blocks + 6 for r in results)


@pytest.mark.parametrize("backend", [
    pytest.param(b, marks=needs_keras) for b in ("keras3", "keras2")])
def test_resnet50_reads_like_torchvision(builders, backend):
    """No permutes, channels-first interface, BatchNorm with Keras's eps,
    the residual written out."""
    import migrate
    built = builders(backend).build("ResNet50:notop-avg")
    try:
        conv = migrate.convert(os.path.join(built["dir"], built["files"][0]))
    finally:
        shutil.rmtree(built["dir"], ignore_errors=True)
    report = conv.report
    assert report["permutes"] == []
    assert report["inputs"][0]["torch_shape"] == [None, 3, 32, 32]
    assert report["outputs"][0]["torch_shape"] == [None, 2048]
    src = conv.source
    assert "nn.BatchNorm2d(64, eps=1.001e-05, momentum=0.01)" in src
    assert "permute" not in src
    # ZeroPadding2D(3) folded into the conv (migrate/padfold.py)
    assert "self.conv1_conv = nn.Conv2d(3, 64, kernel_size=7, stride=2, " \
        "padding=3)" \
        in src
    # the residual written out: relu(shortcut + branch)
    assert re.search(r"F\.relu\(\w+ \+ \w+\)", src)


def test_readme_coverage_table_is_generated_and_complete():
    """README's coverage table comes from ``bench/coverage.py`` and lists
    every architecture, converted from each save its Keras writes."""
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme
    block = readme[readme.index(START):readme.index(END)]
    assert "generated by: python bench/coverage.py" in block
    summary = block[:block.index("<details>")]
    for arch in ARCHS:
        row = re.search(rf"^\| {arch.name} \|.*$", summary, re.M)
        assert row, f"{arch.name} missing from the README coverage table"
        cells = [c.strip() for c in row.group(0).strip("|").split("|")][2:]
        want = 3 if arch.keras3 else 1
        assert sum(c.startswith("✓") for c in cells) == want, row.group(0)
