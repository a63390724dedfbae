"""The README's install gives one TensorFlow distribution (issue 18,
item 2): tf-keras requires ``tensorflow``, so an extra that also named
``tensorflow-cpu`` installed two distributions into one ``tensorflow/``
folder."""
import configparser
import importlib.metadata
import re

import pytest

from conftest import ROOT

TF_DISTS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu",
            "tensorflow-intel", "tensorflow-macos"}


def _name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req.strip(), 1)[0].lower().replace(
        "_", "-")


def _extras() -> dict[str, list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {k: [_name(r) for r in v.splitlines() if r.strip()]
            for k, v in cfg["options.extras_require"].items()}


def test_every_extra_names_at_most_one_tensorflow():
    for extra, names in _extras().items():
        assert len(TF_DISTS & set(names)) <= 1, (extra, names)


def test_tf_keras_gets_the_tensorflow_it_requires():
    try:
        reqs = importlib.metadata.requires("tf-keras") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tf-keras is not installed")
    wanted = {_name(r) for r in reqs} & TF_DISTS
    assert wanted == {"tensorflow"}
    for extra, names in _extras().items():
        if "tf-keras" in names:
            assert TF_DISTS & set(names) == wanted, extra


def test_constraints_pin_the_same_distribution():
    pinned = {_name(line) for line in
              (ROOT / "constraints.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    named = set().union(*map(set, _extras().values()))
    assert pinned & TF_DISTS == named & TF_DISTS == {"tensorflow"}
