"""The rules for keras.applications' layers, without model files: the
transposed-convolution arithmetic against TensorFlow's definition, the op
tables (Keras 3 op nodes, Keras 2 TFOpLambda), and refusals that name what
they refuse.  The numbers against Keras itself are the layer-sweep fixtures
(``fixtures/cases_layers_more.py``) run by ``test_parity.py``."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import migrate
from migrate.errors import UnsupportedLayers
from migrate.graph import Graph, GraphInput, GraphOutput, Layer, Node
from migrate.graph import TensorRef
from migrate.rules import RULES
from migrate.rules.conv_more import transpose_crop, transpose_length
from migrate.rules.ops import _TF, IMPLEMENTATIONS
from migrate.translate import translate
from migrate.weights import LayerWeights, LazyArray, WeightEntry

from conftest import fixture_dir


# -- transposed convolution: TensorFlow's definition, in numpy -------------
def tf_conv_transpose_1d(x, w, stride, dilation, padding, output_padding):
    """conv1d_transpose as TensorFlow computes it: the gradient of a
    convolution whose input has Keras's output length (x: (n,), w: (k,))."""
    n, k = len(x), len(w)
    length = transpose_length(n, k, stride, dilation, padding,
                              output_padding)
    ke = (k - 1) * dilation + 1
    if padding == "same":
        total = max((-(-length // stride) - 1) * stride + ke - length, 0)
        before = total // 2
    else:
        before = 0
    out = np.zeros(length)
    for i in range(n):
        for j in range(k):
            o = i * stride + j * dilation - before
            if 0 <= o < length:
                out[o] += x[i] * w[j]
    return out


CASES = [c for c in itertools.product(
    [1, 2, 5, 6], [1, 2, 3, 4], [1, 2, 3], [1, 2], ["valid", "same"],
    [None, 0, 1, 2]) if c[5] is None or (c[5] < c[2] and c[3] == 1)]


@pytest.mark.parametrize("n, k, s, d, padding, op", CASES)
def test_transposed_conv_plan_is_tensorflows(n, k, s, d, padding, op):
    """torch padding / output_padding / trailing cut reproduce TF's
    crop of the full transposed output, for every size."""
    rng = np.random.default_rng(n * 100 + k * 10 + s)
    x, w = rng.normal(size=n), rng.normal(size=k)
    want = tf_conv_transpose_1d(x, w, s, d, padding, op)
    pad, extra, cut = transpose_crop(n, k, s, d, padding, op)
    assert (pad, extra, cut) == transpose_crop(None, k, s, d, padding, op)
    if extra >= max(s, d):
        pytest.skip("the rule refuses this (torch cannot express it)")
    got = F.conv_transpose1d(
        torch.tensor(x)[None, None], torch.tensor(w)[None, None],
        stride=s, padding=pad, output_padding=extra, dilation=d)[0, 0]
    if cut:
        got = got[:-cut]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


# -- a tiny graph, built by hand -------------------------------------------
def _graph(layers, shape=(None, 4, 5, 3), outputs=None, keras_version="3"):
    """Chain ``layers`` [(class_name, config, extra)] from one input;
    ``extra`` may give module, registered_name, args, kwargs, weights."""
    nodes, prev = [], TensorRef("x", 0)
    for i, (cls, cfg, extra) in enumerate(layers):
        name = cfg.setdefault("name", f"l{i}")
        layer = Layer(name, cls, cfg, extra.get("module"),
                      extra.get("registered_name"),
                      extra.get("weights", LayerWeights(layer=name)))
        args = extra.get("args", [prev])
        nodes.append(Node(name, layer, args, extra.get("kwargs", {})))
        prev = TensorRef(name, 0)
    outs = outputs or [nodes[-1].id]
    return Graph("g", [GraphInput("x", shape, "float32", TensorRef("x", 0))],
                 [GraphOutput(o, TensorRef(o, 0)) for o in outs], nodes,
                 keras_version=keras_version)


def _problems(graph):
    with pytest.raises(UnsupportedLayers) as info:
        translate(graph)
    return info.value


def _weights(name, **arrays):
    return LayerWeights([WeightEntry(k, LazyArray.constant(v))
                         for k, v in arrays.items()], layer=name)


def test_unknown_tf_functions_are_refused_by_name_all_at_once():
    x = TensorRef("x", 0)
    g = _graph([
        ("TFOpLambda", {"function": "linalg.svd"}, {"args": [x]}),
        ("TFOpLambda", {"function": "math.multiply"},
         {"args": [x], "kwargs": {"y": 2.0}}),
        ("TFOpLambda", {"function": "signal.fft"}, {"args": [x]}),
        ("TFOpLambda", {"function": "linalg.svd", "name": "svd2"},
         {"args": [x]}),
        ("UpSampling2D", {"interpolation": "bicubic", "size": 2},
         {"args": [x]}),
    ], outputs=["l1", "l2", "svd2", "l4"])
    err = _problems(g)
    names = [(name, cls) for name, cls, _ in err.problems]
    assert names == [("l0", "TFOpLambda"), ("l2", "TFOpLambda"),
                     ("svd2", "TFOpLambda"), ("l4", "UpSampling2D")]
    why = [w for _, _, w in err.problems]
    assert "tf.linalg.svd" in why[0] and "tf.signal.fft" in why[1]
    assert "bicubic" in why[3]
    assert "TFOpLambda x3" in str(err) and "UpSampling2D x1" in str(err)


def test_unknown_keras3_op_is_refused_by_name():
    g = _graph([("Fft", {}, {"module": "keras.src.ops.math"})])
    (problem,) = _problems(g).problems
    assert problem[1] == "Fft" and "no rule" in problem[2]


def test_op_node_and_layer_of_one_class_name_are_told_apart():
    """keras.src.ops.numpy.Add with a constant is ``x + 3.0``; the Add
    layer would need two tensors."""
    x = TensorRef("x", 0)
    g = _graph([("Add", {}, {"module": "keras.src.ops.numpy",
                             "args": [x, 3.0]}),
                ("Multiply", {}, {"module": "keras.src.ops.numpy",
                                  "args": [0.5, TensorRef("l0", 0)]})])
    p = translate(g)
    assert any("+ 3.0" in line for line in p.body)
    assert any("0.5 *" in line for line in p.body)


def test_tf_symbols_all_have_an_implementation():
    assert {op for op, _ in _TF.values()} <= set(IMPLEMENTATIONS)
    keras3 = [k for k in RULES if k.startswith("keras.src.ops.")]
    assert "keras.src.ops.numpy.Add" in keras3
    assert "keras.src.ops.nn.HardSilu" in keras3


def test_transpose_only_relabels():
    g = _graph([("Conv2D", {"filters": 2, "kernel_size": 1}, {
                    "weights": _weights("l0", kernel=np.ones((1, 1, 3, 2)),
                                        bias=np.zeros(2))}),
                ("Transpose", {"axes": [0, 3, 1, 2]},
                 {"module": "keras.src.ops.numpy"}),
                ("Multiply", {}, {"module": "keras.src.ops.numpy",
                                  "args": [TensorRef("l1", 0), 2.0]})])
    p = translate(g)
    assert not any("permute" in line for line in p.body)
    assert p.permutes == []
    # the output is Keras's (B, C, H, W): exactly the torch conv output
    assert p.outputs[0].keras_shape == (None, 2, 4, 5)
    assert p.outputs[0].layout.perm == (0, 1, 2, 3)


def test_application_layers_from_other_packages_are_refused():
    w = _weights("l0", gamma=np.ones(3))
    g = _graph([("LayerScale", {"init_values": 0.1, "projection_dim": 3},
                 {"registered_name": "my_pkg>LayerScale", "weights": w})])
    (problem,) = _problems(g).problems
    assert "my_pkg>LayerScale" in problem[2]
    g = _graph([("CustomScaleLayer", {"scale": 0.1},
                 {"module": "my_project.layers",
                  "args": [[TensorRef("x", 0), TensorRef("x", 0)]]})])
    (problem,) = _problems(g).problems
    assert "my_project.layers" in problem[2]


def test_resizing_refuses_what_torch_computes_differently():
    for cfg in ({"height": 3, "width": 3, "interpolation": "bicubic"},
                {"height": 3, "width": 3, "interpolation": "area"},
                {"height": 3, "width": 3, "interpolation": "lanczos3"}):
        (problem,) = _problems(_graph([("Resizing", cfg, {})])).problems
        assert problem[1] == "Resizing"


def test_normalization_statistics_are_buffers_in_torch_layout():
    g = _graph([("Normalization", {"axis": [-1], "mean": [1.0, 2.0, 3.0],
                                   "variance": [4.0, 4.0, 4.0]}, {}),
                ("Conv2D", {"filters": 2, "kernel_size": 1}, {
                    "weights": _weights("l1", kernel=np.ones((1, 1, 3, 2)),
                                        bias=np.zeros(2))})])
    p = translate(g)
    decl = p.modules[0]
    assert decl.code == "Normalization((1, 3, 1, 1))"
    mean = p.state[f"{decl.attr}.mean"]()
    assert mean.shape == (1, 3, 1, 1) and mean.ravel().tolist() == [1, 2, 3]


# -- generated code on the committed sweeps -------------------------------
def _source(case, name="model.keras"):
    return migrate.convert(fixture_dir(case) / name).source


def test_separable_conv_reads_as_depthwise_then_pointwise():
    src = _source("k3_depthwise_separable_sweep")
    assert "nn.Sequential(" in src and "groups=4" in src


def test_tf_op_lambda_becomes_plain_expressions():
    src = _source("k2_tf_op_lambda", "model.h5")
    for code in ("conv + 3.0", "1.0 + conv", "2.0 - conv", "F.relu6(conv)",
                 "torch.clamp(conv, min=0.0, max=6.0)",
                 "conv.mean(dim=(2, 3), keepdim=True)"):
        assert code in src, code
    assert "TFOpLambda" not in src and "tf." not in src


def test_gru_config_older_than_reset_after_means_reset_after_false():
    # Keras < 2.1.3 wrote no reset_after: its GRU is the reset_after=False
    # one (one bias of 3 * units), not tf.keras's later default.
    rng = np.random.default_rng(0)
    arrays = {"kernel": rng.normal(size=(5, 9)).astype("f4"),
              "recurrent_kernel": rng.normal(size=(3, 9)).astype("f4"),
              "bias": rng.normal(size=(9,)).astype("f4")}
    sources = []
    for extra in ({}, {"reset_after": False}):
        cfg = {"name": "gru", "units": 3, "activation": "tanh",
               "recurrent_activation": "hard_sigmoid", **extra}
        g = _graph([("GRU", cfg, {"weights": _weights("gru", **arrays)})],
                   shape=(None, 4, 5), keras_version="2.0.8")
        p = translate(g)
        sources.append((p.modules, p.body, sorted(p.helpers)))
    assert sources[0] == sources[1]
    assert any("reset_after=False" in str(m) for m in sources[0][0])
