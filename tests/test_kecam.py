"""keras-cv-attention-models ("kecam") models: the reader lets a custom
layer's "infer it" sentinels through to its rule (every missing piece is
reported in one run), the TensorFlow functions kecam calls, and the kecam
rule pack (parity of every rule is proven by the ``kecam`` fixtures
through test_parity; here, what they refuse)."""
import importlib.util
import json
import shutil

import h5py
import pytest

import migrate
from migrate.errors import ConversionError
from migrate.read.config import MAX_DIM, check_dims, is_custom

from conftest import fixture_dir, needs_tf


def _h5_with(tmp_path, edit):
    """A copy of the k2_mlp full-model .h5 with its config edited."""
    path = tmp_path / "model.h5"
    shutil.copy(fixture_dir("k2_mlp") / "model.h5", path)
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config["config"]["layers"])
        f.attrs["model_config"] = json.dumps(config)
    return path


# -- section 2: reading never refuses what only a rule can judge ----------
def test_custom_layer_sentinels_reach_the_rule_stage(tmp_path):
    """kecam writes num_heads=-1 ("infer from the input"): the reader lets
    it through, and every layer without a rule is reported at once."""
    def edit(layers):
        layers[1]["class_name"] = "beit>MultiHeadRelativePositionalEmbedding"
        layers[1]["config"].update(num_heads=-1, units=None)
        layers[2]["class_name"] = "kecamCommon>SomethingElse"
        layers[2]["config"]["filters"] = "auto"
    with pytest.raises(migrate.UnsupportedLayers) as info:
        migrate.convert(_h5_with(tmp_path, edit))
    classes = {cls for _, cls, _ in info.value.problems}
    assert {"MultiHeadRelativePositionalEmbedding",
            "SomethingElse"} <= classes


def test_custom_layer_absurd_sizes_still_refused(tmp_path):
    def edit(layers):
        layers[1]["class_name"] = "pkg>Big"
        layers[1]["config"]["units"] = 2 ** 40
    with pytest.raises(ConversionError, match="units"):
        migrate.convert(_h5_with(tmp_path, edit))


@pytest.mark.parametrize("value", [-1, None, 0, "5"])
def test_keras_layer_sentinels_still_refused(value):
    if value is None:  # None means "not given" for units: Dense's default
        check_dims({"units": value}, "Dense")
        return
    with pytest.raises(ConversionError, match="valid dimension"):
        check_dims({"units": value}, "Dense")


def test_what_counts_as_custom():
    assert is_custom(None, "resmlp>ChannelAffine")
    assert is_custom("keras_cv_attention_models.volo.volo", None)
    assert not is_custom("keras.layers", None)
    assert not is_custom("keras.src.ops.numpy", None)
    assert not is_custom(None, None)
    check_dims({"num_heads": -1, "kernel_size": [None, -1]}, "x",
               custom=True)
    with pytest.raises(ConversionError, match="over the limit"):
        check_dims({"kernel_size": [3, MAX_DIM + 1]}, "x", custom=True)


# -- section 1: TensorFlow functions (parity: the k2_tf_ops_community fixture)
def test_shape_arithmetic_exports_with_a_dynamic_batch():
    """tf.shape pieces feeding reshape stay Python ints (``x.shape[0]``
    for the batch), so torch.export keeps the batch dynamic."""
    import numpy as np
    import torch
    from migrate.verify import run_port

    d = fixture_dir("k2_tf_ops_community")
    conv = migrate.convert(d / "model.h5")
    assert ".shape[0], 24, 6)" in conv.source
    assert "torch.tensor(reshape" not in conv.source
    with np.load(d / "reference.npz") as ref:
        xs = [ref["in_0"], ref["in_1"]]
        want = [ref[f"out_{i}"] for i in range(len(ref.files) - 2)]
    args = tuple(torch.from_numpy(np.concatenate([a, a, a])).permute(
        *t.layout.perm).contiguous() for a, t in zip(xs, conv.program.inputs))
    batch = torch.export.Dim("batch")
    ep = torch.export.export(conv.module(), args,
                             dynamic_shapes=[{0: batch}, {0: batch}])
    small = tuple(a[:2] for a in args)
    outs = ep.module()(*small)
    port = run_port(conv, xs)
    for o, p, w in zip(outs, port, want):
        assert o.shape[0] == p.shape[0]  # 2, or 4 for tf.repeat(axis=0)
        assert np.abs(p - w).max() < 1e-5


@pytest.mark.parametrize("function, kwargs, why", [
    ("split", {"num_or_size_splits": [2, 2], "axis": -1}, "do not add up"),
    ("split", {"num_or_size_splits": [-1, -1, 2], "axis": -1}, "at most one"),
    ("unstack", {"axis": 0}, "non-batch axis"),
    ("compat.v1.gather", {"indices": [0, 7], "axis": 1}, "in range"),
    ("compat.v1.gather", {"indices": [0], "axis": 1, "batch_dims": 1},
     "batch_dims=0"),
    ("repeat", {"repeats": 2}, "axis=None"),
    ("repeat", {"repeats": [1, 2, 3], "axis": 1}, "one constant count"),
    ("compat.v1.pad", {"paddings": [[0, 0], [1, 1], [0, 0]],
                       "mode": "SYMMETRIC"}, "no symmetric"),
    ("nn.bias_add", {"bias": [1.0] * 5, "data_format": "NCHW"},
     "channels-last"),
])
def test_tf_functions_refuse_what_they_cannot_compute(function, kwargs, why):
    from migrate.graph import Graph, GraphInput, GraphOutput, Layer, Node
    from migrate.graph import TensorRef
    from migrate.translate import translate

    layer = Layer("op", "TFOpLambda", {"name": "op", "function": function})
    x = GraphInput("x", (None, 4, 5), "float32", TensorRef("x", 0))
    node = Node("op", layer, args=[TensorRef("x", 0)], kwargs=kwargs)
    graph = Graph("g", [x], [GraphOutput("op", TensorRef("op", 0))], [node],
                  keras_version="2.21.0")
    with pytest.raises(migrate.UnsupportedLayers) as info:
        translate(graph)
    (_, _, message), = info.value.problems
    assert why in message


def test_tf_einsum_names_why_it_is_refused():
    from migrate.graph import Graph, GraphInput, GraphOutput, Layer, Node
    from migrate.graph import TensorRef
    from migrate.translate import translate

    layer = Layer("op", "TFOpLambda", {"name": "op", "function": "einsum"})
    x = GraphInput("x", (None, 4, 5), "float32", TensorRef("x", 0))
    node = Node("op", layer, args=["bij,bkj->bik"])
    out = GraphOutput("op", TensorRef("op", 0))
    graph = Graph("g", [x], [out], [node], keras_version="2.21.0")
    with pytest.raises(migrate.UnsupportedLayers, match="lost the operands"):
        translate(graph)


# -- rules that compute from trainable weights train as Keras does ---------
needs_kecam = pytest.mark.skipif(
    importlib.util.find_spec("keras_cv_attention_models") is None,
    reason="keras-cv-attention-models not installed")


@needs_tf
@needs_kecam
@pytest.mark.keras
@pytest.mark.slow
def test_scaled_standardized_conv_trains_like_keras(tmp_path):
    """NFNet's kernel is standardised in forward from the raw kernel, so
    one training step gives Keras's gradients (eps=1.0 picked by the max
    for some filters included)."""
    from migrate.verify import make_inputs
    from migrate.verify_train import train_parity

    register = tmp_path / "kecam_objects.py"
    register.write_text("import keras_cv_attention_models  # noqa: F401\n")
    path = fixture_dir("k2_kecam_std_conv") / "model.h5"
    conv = migrate.convert(path)
    got = train_parity(conv, path, None, 2, make_inputs(conv.program, 0, 4),
                       custom_objects=[register])
    assert got["max_grad_rel_err"] <= 1e-5, got["gradients"]
    assert not got["missing"] and got["passed"]
    assert {"plain.gain", "options.gain"} <= set(got["gradients"])


@pytest.mark.parametrize("kwargs", [{"axis": 1},
                                    {"axis": 0, "keepdims": True}])
def test_tf_reduce_of_a_list_refuses_other_axes(kwargs):
    """tf.reduce_sum([a, b], axis=0) folds the list (k2_tf_reduce_list);
    another axis of the stacked tensor is refused by name."""
    from migrate.graph import Graph, GraphInput, GraphOutput, Layer, Node
    from migrate.graph import TensorRef
    from migrate.translate import translate

    layer = Layer("op", "TFOpLambda", {"name": "op",
                                       "function": "math.reduce_sum"})
    x = GraphInput("x", (None, 4, 5), "float32", TensorRef("x", 0))
    node = Node("op", layer, args=[[TensorRef("x", 0), TensorRef("x", 0)]],
                kwargs=kwargs)
    graph = Graph("g", [x], [GraphOutput("op", TensorRef("op", 0))], [node],
                  keras_version="2.21.0")
    with pytest.raises(migrate.UnsupportedLayers, match="over the list"):
        translate(graph)


@pytest.mark.parametrize("case", ["k2_kecam_std_conv", "k2_kecam_fourier",
                                  "k2_kecam_eva02", "k2_tf_reduce_list",
                                  "k2_kecam_swin_v2", "k2_kecam_fastervit",
                                  "k2_kecam_nat"])
def test_new_kecam_modules_export_with_a_dynamic_batch(case):
    """ScaledStdConv2d, FourierPositionEncoding, Rotary2d, the Swin V2
    modules, KernelPositionBias and the list reductions pass torch.export
    with a dynamic batch and still match."""
    import numpy as np
    import torch

    d = fixture_dir(case)
    conv = migrate.convert(d / "model.h5")
    with np.load(d / "reference.npz") as ref:
        n_in = sum(f.startswith("in_") for f in ref.files)
        xs = [ref[f"in_{i}"] for i in range(n_in)]
        want = [ref[f"out_{i}"] for i in range(len(ref.files) - n_in)]
    args = tuple(torch.from_numpy(np.concatenate([a, a])).permute(
        *t.layout.perm).contiguous() for a, t in zip(xs, conv.program.inputs))
    batch = torch.export.Dim("batch")
    ep = torch.export.export(conv.module().eval(), args,
                             dynamic_shapes=[{0: batch}] * len(args))
    outs = ep.module()(*(a[:2] for a in args))
    outs = outs if isinstance(outs, tuple) else (outs,)
    for o, t, w in zip(outs, conv.program.outputs, want):
        got = o.detach().permute(*np.argsort(t.layout.perm)).numpy()
        assert np.abs(got - w).max() < 1e-5
