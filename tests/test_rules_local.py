"""LocallyConnected1D/2D: what the rule refuses, that the three Keras
kernel storages give one port, and that the port survives torch.export
and torch.compile.  Parity with tf-keras is proven by the fixtures in
``fixtures/cases_layers_local.py`` through test_parity."""
import itertools

import numpy as np
import pytest
import torch

import migrate
from conftest import fixture_dir
from test_parity import load_reference
from test_rules_unit import port, refusal

RNG = np.random.default_rng(0)


def _lc2d(**config):
    return dict({"filters": 2, "kernel_size": [3, 2], "strides": [2, 1],
                 "padding": "valid", "data_format": "channels_last",
                 "implementation": 1}, **config)


# -- refusals -------------------------------------------------------------
def test_same_padding_needs_implementation_2_or_3():
    why = refusal("LocallyConnected2D", _lc2d(padding="same"),
                  (None, 5, 4, 3), weights={"kernel": np.zeros((6, 18, 2)),
                                            "bias": np.zeros((3, 4, 2))})
    assert "padding='same'" in why and "implementation 2 or 3" in why


def test_unknown_implementation_is_refused():
    why = refusal("LocallyConnected1D",
                  {"filters": 2, "kernel_size": [3], "implementation": 4},
                  (None, 7, 3), weights={"kernel": np.zeros((5, 9, 2)),
                                         "bias": np.zeros((5, 2))})
    assert "implementation=4" in why


def test_causal_padding_is_refused():
    why = refusal("LocallyConnected1D",
                  {"filters": 2, "kernel_size": [3], "padding": "causal",
                   "implementation": 2},
                  (None, 7, 3), weights={"kernel": np.zeros((7, 3, 7, 2)),
                                         "bias": np.zeros((7, 2))})
    assert "padding='causal'" in why


def test_kernel_of_another_implementation_is_refused():
    # implementation 2 in the config, implementation 1's kernel in the file
    why = refusal("LocallyConnected2D", _lc2d(implementation=2),
                  (None, 5, 4, 3), weights={"kernel": np.zeros((6, 18, 2)),
                                            "bias": np.zeros((2, 3, 2))})
    assert "implementation=2" in why and "(5, 4, 3, 2, 3, 2)" in why


def test_unknown_length_is_refused():
    why = refusal("LocallyConnected1D", {"filters": 2, "kernel_size": [3]},
                  (None, None, 3), weights={"kernel": np.zeros((5, 9, 2)),
                                            "bias": np.zeros((5, 2))})
    assert "spatial sizes must be known" in why


def test_zero_stride_is_refused():
    why = refusal("LocallyConnected2D", _lc2d(strides=[0, 1]),
                  (None, 5, 4, 3), weights={"kernel": np.zeros((6, 18, 2)),
                                            "bias": np.zeros((3, 3, 2))})
    assert "strides" in why


def test_unknown_activation_is_refused():
    why = refusal("LocallyConnected2D", _lc2d(activation="hard_silu"),
                  (None, 5, 4, 3), weights={"kernel": np.zeros((6, 18, 2)),
                                            "bias": np.zeros((2, 3, 2))},
                  keras="2.21.0")
    assert "hard_silu" in why


# -- one port for the three kernel storages --------------------------------
def _windows(n, k, s, padding):
    """(output length, first input index of each window), as tf_keras's
    conv_utils.conv_connected_inputs place them."""
    if padding == "valid":
        out = (n - k + s) // s
        return out, [o * s for o in range(out)]
    out = (n + s - 1) // s
    return out, [o * s - k // 2 for o in range(out)]


def _storages(sizes, cin, filters, kernel, strides, padding, fmt):
    """One locally connected layer's weights in every Keras storage, made
    with loops from a connection table: {(out.., f, in.., c): value}."""
    plans = [_windows(n, k, s, padding)
             for n, k, s in zip(sizes, kernel, strides)]
    outs = tuple(o for o, _ in plans)
    table = {}
    for pos in itertools.product(*[range(o) for o in outs]):
        for offs in itertools.product(*[range(k) for k in kernel]):
            inp = tuple(plans[d][1][pos[d]] + offs[d]
                        for d in range(len(sizes)))
            if not all(0 <= i < n for i, n in zip(inp, sizes)):
                continue
            for c in range(cin):
                for f in range(filters):
                    table[pos + (f,) + inp + (c,)] = (pos, offs, c, f)
    values = {key: RNG.normal() for key in table}
    cf = fmt == "channels_first"
    nd = len(sizes)

    impl1 = None
    if padding == "valid":
        feat = (cin,) + kernel if cf else kernel + (cin,)
        impl1 = np.zeros((int(np.prod(outs)), int(np.prod(feat)), filters))
        for key, (pos, offs, c, f) in table.items():
            p = np.ravel_multi_index(pos, outs)
            idx = (c,) + offs if cf else offs + (c,)
            impl1[p, np.ravel_multi_index(idx, feat), f] = values[key]

    dense = np.zeros(((cin,) + sizes + (filters,) + outs) if cf else
                     (sizes + (cin,) + outs + (filters,)))
    pairs = []
    for key, (pos, offs, c, f) in table.items():
        inp = key[nd + 1:2 * nd + 1]
        if cf:
            dense[(c,) + inp + (f,) + pos] = values[key]
            o = np.ravel_multi_index((f,) + pos, (filters,) + outs)
            i = np.ravel_multi_index((c,) + inp, (cin,) + sizes)
        else:
            dense[inp + (c,) + pos + (f,)] = values[key]
            o = np.ravel_multi_index(pos + (f,), outs + (filters,))
            i = np.ravel_multi_index(inp + (c,), sizes + (cin,))
        pairs.append(((o, i), values[key]))
    impl3 = np.array([v for _, v in sorted(pairs)])
    bias = RNG.normal(size=outs + (filters,))
    return {1: impl1, 2: dense, 3: impl3}, bias


@pytest.mark.parametrize("nd, padding, fmt", [
    (1, "valid", "channels_last"), (1, "same", "channels_first"),
    (2, "valid", "channels_first"), (2, "same", "channels_last")])
def test_every_implementation_gives_the_same_port(nd, padding, fmt):
    sizes, kernel, strides = ((9,), (4,), (2,)) if nd == 1 else (
        (6, 7), (3, 2), (2, 3))
    cin, filters = 3, 2
    kernels, bias = _storages(sizes, cin, filters, kernel, strides,
                              padding, fmt)
    shape = ((None, cin) + sizes if fmt == "channels_first"
             else (None,) + sizes + (cin,))
    x = torch.randn((2, cin) + sizes)  # the port is channels-first
    results = []
    for impl, k in kernels.items():
        if k is None:
            continue
        conv = port(f"LocallyConnected{nd}D",
                    {"filters": filters, "kernel_size": list(kernel),
                     "strides": list(strides), "padding": padding,
                     "data_format": fmt, "implementation": impl},
                    shape, {"kernel": k, "bias": bias}, keras="2.21.0")
        assert f"LocallyConnected{nd}d(" in conv.source
        assert "migrate" not in conv.source.split("class ")[0]
        results.append(conv.module()(x).detach())
    assert len(results) == (3 if padding == "valid" else 2)
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=1e-5, rtol=0)


# -- export and compile ---------------------------------------------------
def _fixture(name):
    d = fixture_dir(name)
    inputs, outputs = load_reference(d)
    conv = migrate.convert(d / "model.h5")
    args = [torch.from_numpy(a).permute(t.layout.perm).contiguous()
            for a, t in zip(inputs, conv.program.inputs)]
    want = [np.transpose(w, t.layout.perm)  # the port's layout
            for w, t in zip(outputs, conv.program.outputs)]
    return conv.module().eval(), args, want


def _close(got, want):
    for g, w in zip(got, want):
        assert np.abs(g.detach().numpy() - w).max() < 1e-5


@pytest.mark.parametrize("name", ["k2_local2d_sweep", "k2_local_classifier"])
def test_torch_export_with_a_dynamic_batch(name):
    model, args, want = _fixture(name)
    batch = torch.export.Dim("batch", min=2)
    ep = torch.export.export(model, tuple(args),
                             dynamic_shapes=[{0: batch}] * len(args))
    _close(ep.module()(*args), want)
    bigger = [torch.cat([a, a, a]) for a in args]
    assert ep.module()(*bigger)[0].shape[0] == 3 * args[0].shape[0]


@pytest.mark.slow
def test_torch_compile():
    model, args, want = _fixture("k2_local1d_sweep")
    _close(torch.compile(model)(*args), want)
