"""The generated module survives torch.export and torch.compile."""
import numpy as np
import pytest
import torch

import migrate
from conftest import fixture_dir


@pytest.fixture(scope="module")
def cnn():
    d = fixture_dir("k3_small_cnn")
    with np.load(d / "reference.npz") as ref:
        x = torch.from_numpy(ref["in_0"]).permute(0, 3, 1, 2).contiguous()
        y = ref["out_0"]
    return migrate.convert(d / "model.keras").module(), x, y


def test_torch_export(cnn):
    model, x, y = cnn
    ep = torch.export.export(model, (x,))
    assert np.abs(ep.module()(x).detach().numpy() - y).max() < 1e-5


@pytest.mark.slow
def test_torch_compile(cnn):
    model, x, y = cnn
    compiled = torch.compile(model)
    assert np.abs(compiled(x).detach().numpy() - y).max() < 1e-5


@pytest.fixture(scope="module")
def masked_rnns():
    d = fixture_dir("k3_rnn_end_padded")
    with np.load(d / "reference.npz") as ref:
        x = torch.from_numpy(ref["in_0"])
        ys = [ref[f"out_{i}"] for i in range(len(ref.files) - 1)]
    return migrate.convert(d / "model.keras").module(), x, ys


def _worst(outs, ys):
    return max(np.abs(o.detach().numpy() - y).max() for o, y in zip(outs, ys))


def test_torch_export_masked_rnns(masked_rnns):
    """Exported, run_rnn steps through time (no data-dependent branch)."""
    model, x, ys = masked_rnns
    ep = torch.export.export(model, (x,))
    assert _worst(ep.module()(x), ys) < 1e-5


@pytest.mark.slow
def test_torch_compile_masked_rnns(masked_rnns):
    """Compiled, end padding still runs each RNN once (a graph break at
    the mask check)."""
    model, x, ys = masked_rnns
    assert _worst(torch.compile(model)(x), ys) < 1e-5
