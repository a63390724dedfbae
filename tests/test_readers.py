"""The readers: every file format of a model gives one graph and one set of
weights, the graph computes what Keras computed, nothing is read early, and
bad input fails with one clear line.  No TensorFlow in this process: the
fixtures are committed files (``fixtures/cases_formats.py`` makes them).
"""
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from migrate.errors import ConversionError
from migrate.graph import TensorRef
from migrate.read import FORMATS, open_model
from migrate.read import archive as archive_mod
from migrate.read import hdf5
from migrate.read.config import normalize_config, parse_model
from migrate.read.hdf5 import names_attr, open_hdf5
from migrate.read.inline import build_graph
from migrate.read.legacy_weights import _relative
from migrate.read.v3_weights import snake_case

from conftest import MODELS, ROOT, case_meta, fixture_dir, model_files

READER_CASES = ["mlp", "seq_noinput", "seq_build", "two_io", "shared",
                "nested", "nested_frozen", "rnn_state", "norms", "ops"]
CASES = [f"{b}_{c}" for c in READER_CASES for b in ("k3", "k2")]
ALL_DIRS = sorted(p.name for p in MODELS.iterdir() if p.is_dir())
FORMAT_OF = {"keras": "keras", "h5": "h5", "savedmodel": "savedmodel"}


def _sha256(model) -> str:
    """Of the file, or of a SavedModel's files read, each as name, size
    and bytes."""
    if not model.is_dir():
        return hashlib.sha256(model.read_bytes()).hexdigest()
    h = hashlib.sha256()
    names = ["keras_metadata.pb", "variables/variables.index"] + sorted(
        f"variables/{p.name}" for p in (model / "variables").iterdir()
        if p.name.startswith("variables.data-"))
    for name in names:
        data = (model / name).read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def _sources(case):
    return [open_model(m, w) for _, m, w in model_files(fixture_dir(case))]


@pytest.fixture(params=CASES)
def sources(request):
    srcs = _sources(request.param)
    yield srcs
    for s in srcs:
        s.close()


# -- every fixture reads ---------------------------------------------------
@pytest.mark.parametrize("case", ALL_DIRS)
def test_every_fixture_reads_with_format_and_version(case):
    d = fixture_dir(case)
    meta = case_meta(d)
    files = model_files(d)
    assert files
    for label, model, weights in files:
        with open_model(model, weights) as src:
            assert src.format in FORMATS
            if label == "json":
                assert src.format == ("json+h5" if meta["backend"] == "keras2"
                                      else "json+weights.h5")
            else:
                assert src.format == FORMAT_OF[label]
            # Keras 3 to_json() and .weights.h5 do not record the version.
            expect = "" if src.format == "json+weights.h5" \
                else meta["keras_version"]
            assert src.keras_version == expect
            assert src.graph.keras_version == expect
            assert src.graph.source_format == src.format
            assert src.sha256 == _sha256(model)
            assert src.path == str(model)
            assert src.graph.nodes and src.graph.inputs and src.graph.outputs


# -- all formats agree ----------------------------------------------------
def _signature(graph):
    nodes = [(n.id, n.layer.name, n.layer.class_name, n.layer.is_op,
              n.args, n.kwargs, n.num_outputs) for n in graph.nodes]
    ins = [(i.name, i.shape, i.dtype, i.ref) for i in graph.inputs]
    outs = [(o.name, o.ref) for o in graph.outputs]
    return graph.name, nodes, ins, outs


def test_formats_give_the_same_graph(sources):
    first = sources[0]
    assert len(sources) >= 2
    for src in sources[1:]:
        assert _signature(src.graph) == _signature(first.graph)
        layers = {layer.name: layer for layer in first.graph.layers()}
        for layer in src.graph.layers():
            other = layers[layer.name]
            assert layer.config == other.config, layer.name
            if layer.module and other.module:
                assert layer.module == other.module
            if layer.is_op:
                assert layer.module == other.module


def test_formats_store_the_same_weights(sources):
    def arrays(layer):
        return sorted((a.shape, a.tobytes()) for a in
                      (e.array.read() for e in layer.weights.entries))

    first = {layer.name: layer for layer in sources[0].graph.layers()}
    for src in sources[1:]:
        for layer in src.graph.layers():
            assert arrays(layer) == arrays(first[layer.name]), layer.name


# what a rule would ask each layer class for, in Keras 3 storage order
def _variables(layer):
    cfg = layer.config
    cls = layer.class_name
    if layer.is_op or cls == "TFOpLambda":
        return []
    if cls in ("Dense", "Conv2D"):
        return ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    if cls == "BatchNormalization":
        return ((["gamma"] if cfg.get("scale", True) else [])
                + (["beta"] if cfg.get("center", True) else [])
                + ["moving_mean", "moving_variance"])
    if cls == "LayerNormalization":
        return ["gamma", "beta"]
    if cls == "Embedding":
        return ["embeddings"]
    if cls == "LSTM":
        return ["cell/kernel", "cell/recurrent_kernel", "cell/bias"]
    return []


def _bind(layer):
    names = _variables(layer)
    if layer.class_name == "LSTM" and not layer.weights.positional:
        names = [n.replace("cell/", "lstm_cell/") for n in names]
    bound = layer.weights.bind(names)
    return [bound[n].read() for n in names]


def test_named_and_positional_weights_bind_to_the_same_arrays(sources):
    first = {layer.name: _bind(layer) for layer in sources[0].graph.layers()}
    for src in sources[1:]:
        for layer in src.graph.layers():
            got = _bind(layer)
            assert len(got) == len(first[layer.name])
            for a, b in zip(got, first[layer.name]):
                np.testing.assert_array_equal(a, b, err_msg=layer.name)


# -- the graph computes what Keras computed ------------------------------
def _act(name, x):
    return {"linear": lambda v: v, "relu": lambda v: np.maximum(v, 0),
            "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
            }[name](x)


def _run_node(node, x, keras_major):
    """A tiny numpy interpreter for the layers the reader fixtures use."""
    cls, cfg = node.layer.class_name, node.layer.config
    if node.layer.is_op:
        a = node.args
        if cls == "Add":
            return x(a[0]) + x(a[1])
        if cls == "Multiply":
            return x(a[0]) * x(a[1])
        if cls == "Concatenate":
            return np.concatenate([x(t) for t in a[0]], axis=cfg["axis"])
    if cls == "TFOpLambda":
        fn, a, kw = cfg["function"], node.args, node.kwargs
        if fn == "__operators__.add":
            return x(a[0]) + x(kw["y"])
        if fn == "math.multiply":
            return x(a[0]) * x(kw["y"])
        if fn == "concat":
            return np.concatenate([x(t) for t in a[0]], axis=kw["axis"])
    w = _bind(node.layer)
    if cls == "Dense":
        y = x(node.args[0]) @ w[0] + (w[1] if len(w) > 1 else 0)
        return _act(cfg["activation"], y)
    if cls == "BatchNormalization":
        gamma = w.pop(0) if cfg["scale"] else 1
        beta = w.pop(0) if cfg["center"] else 0
        mean, var = w
        return (x(node.args[0]) - mean) / np.sqrt(var + cfg["epsilon"]) \
            * gamma + beta
    if cls in ("Add", "Concatenate"):
        ts = [x(t) for t in node.args[0]]
        return sum(ts) if cls == "Add" else np.concatenate(ts, axis=-1)
    if cls == "Embedding":
        return w[0][x(node.args[0])]
    if cls == "Flatten":
        v = x(node.args[0])
        return v.reshape(len(v), -1)
    raise NotImplementedError(cls)


@pytest.mark.parametrize("case", [c for c in CASES if c[3:] not in (
    "norms", "rnn_state")])
def test_graph_and_weights_reproduce_the_keras_outputs(case):
    d = fixture_dir(case)
    with np.load(d / "reference.npz") as ref:
        inputs = [ref[f"in_{i}"] for i in range(len(ref.files))
                  if f"in_{i}" in ref.files]
        outputs = [ref[f"out_{i}"] for i in range(len(ref.files))
                   if f"out_{i}" in ref.files]
    for src in _sources(case):
        with src:
            g = src.graph
            values = {gi.ref: v for gi, v in zip(g.inputs, inputs)}

            def x(ref, values=values):
                return values[ref] if isinstance(ref, TensorRef) else ref

            for node in g.nodes:
                values[TensorRef(node.id, 0)] = _run_node(
                    node, x, g.keras_major)
            assert len(g.outputs) == len(outputs)
            for out, want in zip(g.outputs, outputs):
                np.testing.assert_allclose(values[out.ref], want, atol=1e-5,
                                           err_msg=f"{src.format} {out}")


# -- specific shapes of graphs ------------------------------------------------
@pytest.mark.parametrize("case", ["k3_nested", "k2_nested"])
def test_nested_models_are_inlined_with_call_numbers(case):
    for src in _sources(case):
        with src:
            g = src.graph
            ids = [n.id for n in g.nodes]
            assert ids == ["inner/inner_d1", "inner/inner_d2",
                           "inner/inner_d1#1", "inner/inner_d2#1", "add",
                           "seq/seq_d", "lazy/lazy_d"]
            assert [o.name for o in g.outputs] == ["seq", "lazy", "inner"]
            assert [o.ref.node for o in g.outputs] == [
                "seq/seq_d", "lazy/lazy_d", "inner/inner_d2#1"]
            # the Sequential without an Input was called on the first call
            assert g.node("lazy/lazy_d").args == [
                TensorRef("inner/inner_d2", 0)]
            assert g.node("inner/inner_d1#1").args == [TensorRef("b", 0)]
            assert g.node("inner/inner_d1").layer is \
                g.node("inner/inner_d1#1").layer
            assert g.node("inner/inner_d1").layer.keras_name == "inner_d1"


@pytest.mark.parametrize("case", ["k3_shared", "k2_shared"])
def test_shared_layer_nodes_in_topological_order(case):
    for src in _sources(case):
        with src:
            g = src.graph
            assert [n.id for n in g.nodes] == [
                "shared_dense", "shared_dense#1", "add", "mid",
                "shared_dense#2", "out"]
            assert g.node("add").args == [[TensorRef("shared_dense", 0),
                                           TensorRef("shared_dense#1", 0)]]
            assert len(g.layers()) == 4


@pytest.mark.parametrize("case", ["k3_rnn_state", "k2_rnn_state"])
def test_several_outputs_and_compound_weight_keys(case):
    for src in _sources(case):
        with src:
            lstm = src.graph.node("lstm")
            assert lstm.num_outputs == 3
            assert src.graph.node("hc").args == [[TensorRef("lstm", 1),
                                                  TensorRef("lstm", 2)]]
            keys = [e.key for e in lstm.layer.weights.entries]
            if src.format in ("keras", "json+weights.h5"):
                assert keys == ["cell/vars/0", "cell/vars/1", "cell/vars/2"]
            else:
                assert [k.split(":")[0] for k in keys] == [
                    "lstm_cell/kernel", "lstm_cell/recurrent_kernel",
                    "lstm_cell/bias"]


@pytest.mark.parametrize("case", ["k3_nested_frozen", "k2_nested_frozen"])
def test_frozen_sublayer_weights_are_mapped_by_name(case):
    d = fixture_dir(case)
    with h5py.File(d / "model.h5") as f:
        stored = names_attr(f["model_weights/sub"], "weight_names")
    # legacy files list trainable weights first across sublayers
    assert [w.split(":")[0] for w in stored] == [
        "bn1/gamma", "bn1/beta", "d2/kernel", "d2/bias", "c1/kernel",
        "c1/bias", "bn1/moving_mean", "bn1/moving_variance"]
    with open_model(d / "model.h5") as src:
        g = src.graph
        keys = {n.layer.name: [e.key.split(":")[0]
                               for e in n.layer.weights.entries]
                for n in g.nodes}
        assert keys == {"sub/c1": ["kernel", "bias"],
                        "sub/bn1": ["gamma", "beta", "moving_mean",
                                    "moving_variance"],
                        "sub/d2": ["kernel", "bias"],
                        "head": ["kernel", "bias"]}
        assert g.node("sub/c1").layer.config["trainable"] is False


@pytest.mark.parametrize("case", ["k3_seq_noinput", "k2_seq_noinput",
                                  "k3_seq_build", "k2_seq_build"])
def test_sequential_inputs(case):
    for src in _sources(case):
        with src:
            (gi,) = src.graph.inputs
            assert gi.shape == (None, 6)  # Keras 3 baked in batch size 1
            assert gi.dtype == "float32"
            assert gi.ref == TensorRef(gi.name, 0)
            assert [n.id for n in src.graph.nodes] == ["d1", "d2"]
            assert src.graph.nodes[0].args == [gi.ref]
            if case.startswith("k2"):
                assert gi.name == "d1_input"
                assert "batch_input_shape" not in \
                    src.graph.nodes[0].layer.config


@pytest.mark.parametrize("case", ["k3_two_io", "k2_two_io"])
def test_two_inputs_two_outputs(case):
    for src in _sources(case):
        with src:
            g = src.graph
            assert [(i.name, i.shape, i.dtype) for i in g.inputs] == [
                ("feat", (None, 5), "float32"), ("ids", (None, 3), "int32")]
            assert [(o.name, o.ref) for o in g.outputs] == [
                ("head_a", TensorRef("head_a", 0)),
                ("head_b", TensorRef("head_b", 0))]


def test_keras3_op_nodes_keep_their_module_in_every_format():
    for src in _sources("k3_ops"):
        with src:
            g = src.graph
            ops = [n for n in g.nodes if n.layer.is_op]
            assert [(n.layer.class_name, n.layer.module) for n in ops] == [
                ("Add", "keras.src.ops.numpy"),
                ("Concatenate", "keras.src.ops.numpy"),
                ("Multiply", "keras.src.ops.numpy")]
            assert g.node("add").args == [TensorRef("d", 0), 1.0]
            assert not any(n.layer.weights for n in ops)


def test_keras2_tfoplambda_nodes():
    for src in _sources("k2_ops"):
        with src:
            g = src.graph
            add = g.node("tf.__operators__.add")
            assert (add.args, add.kwargs) == ([TensorRef("d", 0)], {"y": 1.0})
            cat = g.node("tf.concat")
            assert cat.args == [[TensorRef("tf.__operators__.add", 0),
                                 TensorRef("b", 0)]]
            assert cat.kwargs == {"axis": 1}
            mul = g.node("tf.math.multiply")
            assert mul.kwargs == {"y": TensorRef("tf.concat", 0)}
            assert mul.inputs == [TensorRef("tf.concat", 0)] * 2


# -- normalised configs ----------------------------------------------------
def _walk(value):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


@pytest.mark.parametrize("case", ["k3_norms", "k2_norms"])
def test_configs_are_normalised(case):
    for src in _sources(case):
        with src:
            g = src.graph
            for layer in g.layers():
                assert not any("shared_object_id" in d
                               for d in _walk(layer.config))
                assert layer.config["dtype"] == "float32"
                assert "_dtype_policy" not in layer.config
            bn = g.node("bn").layer.config
            assert bn["axis"] == (3 if case.startswith("k2") else -1)
            assert g.node("bn_nocenter").layer.config["axis"] in (1, -1)
            ln = g.node("ln").layer.config
            assert ln["axis"] == ([1] if case.startswith("k2") else [-1])
            leaky = g.node("leaky").layer.config
            assert "alpha" not in leaky
            assert leaky["negative_slope"] == pytest.approx(0.2)
            assert g.node("conv").layer.config["activation"] == "linear"


def test_normalize_config_rules():
    mixed = {"module": "keras", "class_name": "DTypePolicy",
             "config": {"name": "mixed_float16"}, "shared_object_id": 7}
    cfg = normalize_config("Dense", {
        "dtype": mixed,
        "activation": {"module": "keras.activations",
                       "class_name": "function", "config": "relu",
                       "registered_name": None},
        "kernel_initializer": {"class_name": "Zeros", "config": {},
                               "shared_object_id": 3}})
    assert cfg["dtype"] == "float32"
    assert cfg["_dtype_policy"]["config"]["name"] == "mixed_float16"
    assert cfg["activation"] == "relu"
    assert cfg["kernel_initializer"] == {"class_name": "Zeros", "config": {}}
    k2 = normalize_config("Dense", {
        "dtype": {"class_name": "Policy", "config": {"name": "float16"}},
        "activation": {"class_name": "function", "config": "swish"}})
    assert k2 == {"dtype": "float16", "activation": "swish"}
    quant = normalize_config("Dense", {"dtype": {
        "class_name": "QuantizedDTypePolicy",
        "config": {"name": "int8_from_float32"}}})
    assert quant["dtype"] == "float32"
    assert "int8" in str(quant["_dtype_policy"])
    custom = {"module": "builtins", "class_name": "function",
              "config": "my_fn"}
    assert normalize_config("Dense", {"activation": custom})[
        "activation"] == custom
    assert normalize_config("LeakyReLU", {"alpha": 0.1}) == {
        "negative_slope": 0.1}
    assert normalize_config("BatchNormalization", {"axis": [1]})["axis"] == 1
    assert normalize_config("BatchNormalization", {"axis": [1, 2]})[
        "axis"] == [1, 2]
    assert normalize_config("LayerNormalization", {"axis": -1})[
        "axis"] == [-1]
    wrapped = normalize_config("TimeDistributed", {"layer": {
        "class_name": "Dense", "config": {"dtype": mixed,
                                          "batch_input_shape": [None, 2]}}})
    assert wrapped["layer"]["config"]["dtype"] == "float32"
    assert wrapped["layer"]["config"]["batch_shape"] == [None, 2]


def test_snake_case_matches_the_keras_weight_keys():
    table = {"Dense": "dense", "PReLU": "p_re_lu", "ReLU": "re_lu",
             "ConvLSTM2D": "conv_lstm2d", "Conv2DTranspose":
             "conv2d_transpose", "GlobalAveragePooling2D":
             "global_average_pooling2d", "BatchNormalization":
             "batch_normalization", "InputLayer": "input_layer",
             "LSTM": "lstm", "MultiHeadAttention": "multi_head_attention",
             "DepthwiseConv2D": "depthwise_conv2d", "Functional":
             "functional", "UpSampling2D": "up_sampling2d",
             "TFOpLambda": "tf_op_lambda"}
    assert {k: snake_case(k) for k in table} == table


# -- synthetic configs (no weights needed) --------------------------------
def _dense(name, inbound=None):
    entry = {"class_name": "Dense", "config": {"name": name, "units": 2}}
    if inbound is not None:
        entry["name"] = name
        entry["inbound_nodes"] = inbound
    return entry


def _graph(cfg):
    return build_graph(parse_model(cfg, "test"), "test")


def test_keras22_bare_list_sequential():
    cfg = {"class_name": "Sequential", "config": [
        {"class_name": "Dense", "config": {"name": "d1", "units": 2,
                                           "batch_input_shape": [None, 3]}},
        _dense("d2")]}
    g = _graph(cfg)
    assert g.name == "sequential"
    assert [(i.name, i.shape) for i in g.inputs] == [("d1_input", (None, 3))]
    assert [n.id for n in g.nodes] == ["d1", "d2"]
    assert g.outputs[0].name == "d2"


def test_keras3_dict_inputs_and_outputs_flatten_in_key_order():
    def tensor(name):
        return {"class_name": "__keras_tensor__",
                "config": {"shape": [None, 2], "dtype": "float32",
                           "keras_history": [name, 0, 0]}}

    def inp(name):
        return {"class_name": "InputLayer", "name": name, "inbound_nodes": [],
                "config": {"name": name, "batch_shape": [None, 2],
                           "dtype": "float32"}}

    cfg = {"class_name": "Functional", "config": {
        "name": "m", "layers": [
            inp("zz"), inp("aa"),
            _dense("d", [{"args": [tensor("zz")], "kwargs": {"mask": None}}]),
            _dense("e", [{"args": [tensor("aa")], "kwargs": {}}])],
        "input_layers": {"z": ["zz", 0, 0], "a": ["aa", 0, 0]},
        "output_layers": {"second": ["e", 0, 0], "first": ["d", 0, 0]}}}
    g = _graph(cfg)
    assert [i.name for i in g.inputs] == ["aa", "zz"]
    # outputs in key order, named by their keys (the port returns them so)
    assert [o.name for o in g.outputs] == ["first", "second"]
    assert [g.node(o.ref.node).layer.name for o in g.outputs] == ["d", "e"]
    assert g.node("d").kwargs == {}


def test_sequential_that_was_never_built_is_refused():
    cfg = {"class_name": "Sequential",
           "config": {"name": "s", "layers": [_dense("d1")]}}
    with pytest.raises(ConversionError, match="never built"):
        _graph(cfg)


def test_cycles_and_dangling_references_are_refused():
    inp = {"class_name": "InputLayer", "name": "x", "inbound_nodes": [],
           "config": {"name": "x", "batch_shape": [None, 2]}}
    loop = {"class_name": "Functional", "config": {
        "name": "m", "layers": [
            inp, _dense("a", [[["b", 0, 0, {}]]]),
            _dense("b", [[["a", 0, 0, {}]]])],
        "input_layers": [["x", 0, 0]], "output_layers": [["b", 0, 0]]}}
    with pytest.raises(ConversionError, match="cycle"):
        _graph(loop)
    dangling = {"class_name": "Functional", "config": {
        "name": "m", "layers": [inp, _dense("a", [[["x", 3, 0, {}]]])],
        "input_layers": [["x", 0, 0]], "output_layers": [["a", 0, 0]]}}
    with pytest.raises(ConversionError, match="not a call"):
        _graph(dangling)


def test_tf_keras_h5_registered_class_names_and_slashed_names():
    inp = {"class_name": "InputLayer", "name": "x", "inbound_nodes": [],
           "config": {"name": "x", "batch_input_shape": [None, 2]}}
    scale = {"class_name": "Custom>CustomScaleLayer", "name": "Conv/Scale",
             "config": {"name": "Conv/Scale", "scale": 0.1},
             "inbound_nodes": [[["x", 0, 0, {}], ["x", 0, 0, {}]]]}
    g = _graph({"class_name": "Model", "config": {
        "name": "m", "layers": [inp, scale],
        "input_layers": [["x", 0, 0]],
        "output_layers": [["Conv/Scale", 0, 0]]}})
    layer = g.node("Conv/Scale").layer
    assert (layer.class_name, layer.registered_name) == (
        "CustomScaleLayer", "Custom>CustomScaleLayer")
    assert g.node("Conv/Scale").args == [[TensorRef("x", 0)] * 2]
    assert _relative("m/Conv/BatchNorm/gamma:0", "Conv/BatchNorm") == \
        "gamma:0"
    assert _relative("renamed/kernel:0", "dense") == "renamed/kernel:0"


def test_subclassed_model_is_refused():
    with pytest.raises(ConversionError, match="subclassed"):
        parse_model({"class_name": "MyModel", "config": {"units": 3}}, "m")


# -- laziness -----------------------------------------------------------------
def test_weights_are_read_only_when_asked(monkeypatch):
    reads = []
    original = hdf5.read_array

    def counting(ds):
        reads.append(ds.name)
        return original(ds)

    monkeypatch.setattr(hdf5, "read_array", counting)
    for case in ("k3_nested_frozen", "k2_nested_frozen"):
        for src in _sources(case):
            with src:
                assert reads == []
                layer = src.graph.node("sub/bn1").layer
                entry = layer.weights.entries[0]
                value = entry.array.read()
                assert len(reads) == 1 and value.shape == (3,)
                assert entry.array.dtype == "float32"
                reads.clear()


def test_reading_after_close_is_a_conversion_error():
    src = open_model(fixture_dir("k3_mlp") / "model.keras")
    array = src.graph.nodes[0].layer.weights.entries[0].array
    src.close()
    with pytest.raises(ConversionError, match="cannot read weight"):
        array.read()


# -- no TensorFlow ------------------------------------------------------------
def test_reading_never_imports_tensorflow_or_keras():
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import MODELS, model_files
from migrate.read import open_model
n = 0
for d in sorted(MODELS.iterdir()):
    for _, m, w in model_files(d):
        with open_model(m, w) as src:
            for layer in src.graph.layers():
                for e in layer.weights.entries:
                    e.array.read()
            n += 1
bad = [m for m in sys.modules
       if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
assert not bad, bad[:5]
print(n)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) >= 2 * len(READER_CASES)


# -- errors ------------------------------------------------------------------
def _fails(match, path, weights=None):
    with pytest.raises(ConversionError) as info:
        open_model(path, weights)
    message = str(info.value)
    assert "\n" not in message and match in message, message
    return message


def test_truncated_and_random_files(tmp_path):
    full = (fixture_dir("k2_mlp") / "model.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(full[:len(full) // 2])
    msg = _fails("truncated", tmp_path / "cut.h5")
    assert str(tmp_path / "cut.h5") in msg
    keras = (fixture_dir("k3_mlp") / "model.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(keras[:len(keras) // 2])
    _fails("truncated or corrupt", tmp_path / "cut.keras")
    rng = np.random.default_rng(0)
    (tmp_path / "noise.h5").write_bytes(rng.bytes(4096))
    _fails("not a Keras model file", tmp_path / "noise.h5")
    (tmp_path / "empty.keras").write_bytes(b"")
    _fails("empty file", tmp_path / "empty.keras")
    _fails("no such file", tmp_path / "missing.keras")
    (tmp_path / "bad.json").write_text("{not json")
    _fails("not valid JSON", tmp_path / "bad.json",
           fixture_dir("k2_mlp") / "model_weights.h5")


def test_zip_without_config_or_weights(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.keras", "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", b"")
    _fails("without config.json", tmp_path / "a.keras")
    config = zipfile.ZipFile(fixture_dir("k3_mlp") / "model.keras").read(
        "config.json")
    with zipfile.ZipFile(tmp_path / "b.keras", "w") as z:
        z.writestr("config.json", config)
    _fails("has no model.weights.h5", tmp_path / "b.keras")
    with zipfile.ZipFile(tmp_path / "c.keras", "w") as z:
        z.writestr("config.json", "[1, 2]")
    _fails("not a JSON object", tmp_path / "c.keras")


def test_oversized_zip_member_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archive_mod, "JSON_LIMIT", 100)
    _fails("over the", fixture_dir("k3_mlp") / "model.keras")


def test_weights_only_files_given_as_the_model():
    msg = _fails("weights-only", fixture_dir("k2_mlp") / "model_weights.h5")
    assert "JSON" in msg
    _fails("weights-only", fixture_dir("k3_mlp") / "model.weights.h5")


def test_savedmodel_directory(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "variables").mkdir()
    _fails("SavedModel", tmp_path)
    _fails("SavedModel", tmp_path / "saved_model.pb")
    _fails("is a directory", tmp_path / "variables")


def test_json_and_weights_mistakes(tmp_path):
    d = fixture_dir("k2_mlp")
    _fails("weights file not found", d / "model.json", tmp_path / "nope.h5")
    _fails("only the architecture", d / "model.json")
    _fails("full model file", d / "model.json", d / "model.h5")
    _fails("whole model", d / "model.json",
           fixture_dir("k3_mlp") / "model.keras")
    _fails("holds its own weights", d / "model.h5", d / "model_weights.h5")
    _fails("holds its own weights", fixture_dir("k3_mlp") / "model.keras",
           d / "model_weights.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    _fails("without Keras weights", d / "model.json", tmp_path / "plain.h5")
    _fails("not a Keras model", tmp_path / "plain.h5")


def test_config_and_weights_of_different_models(tmp_path):
    _fails("does not have", fixture_dir("k2_mlp") / "model.json",
           fixture_dir("k2_shared") / "model_weights.h5")


def _copy(tmp_path, case, name):
    dst = tmp_path / f"{case}_{name}"
    shutil.copy(fixture_dir(case) / name, dst)
    return dst


def test_hdf5_links_and_external_data_are_refused(tmp_path):
    soft = _copy(tmp_path, "k2_mlp", "model.h5")
    with h5py.File(soft, "a") as f:
        del f["model_weights/hidden"]
        f["model_weights/hidden"] = h5py.SoftLink("/model_weights/logits")
    _fails("SoftLink", soft)

    ext = _copy(tmp_path, "k2_mlp", "model.h5")
    with h5py.File(ext, "a") as f:
        del f["model_weights/logits/logits/bias:0"]
        f["model_weights/logits/logits/bias:0"] = h5py.ExternalLink(
            str(soft), "/model_weights/logits/logits/bias:0")
    _fails("ExternalLink", ext)

    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.zeros(5, "<f4").tobytes())
    external = _copy(tmp_path, "k3_mlp", "model.weights.h5")
    with h5py.File(external, "a") as f:
        del f["layers/dense/vars/1"]
        f.create_dataset("layers/dense/vars/1", shape=(5,), dtype="<f4",
                         external=[(str(raw), 0, 20)])
    _fails("external files", fixture_dir("k3_mlp") / "model.json", external)

    strings = _copy(tmp_path, "k3_mlp", "model.weights.h5")
    with h5py.File(strings, "a") as f:
        del f["layers/dense/vars/1"]
        f["layers/dense/vars/1"] = np.array([b"x"] * 5, dtype=object)
    _fails("must be numeric", fixture_dir("k3_mlp") / "model.json", strings)


def test_hdf5_hard_link_cycles_aliases_and_deep_nesting_are_refused(
        tmp_path):
    # A group linked back into itself, a layer group linked twice, and
    # groups nested 300 deep: each is one clear error, none a hang or a
    # crash of HDF5's recursive visitor.
    cycle = _copy(tmp_path, "k3_mlp", "model.weights.h5")
    with h5py.File(cycle, "a") as f:
        f["layers/dense/vars/loop"] = f["layers/dense"]
    _fails("second hard link", fixture_dir("k3_mlp") / "model.json", cycle)

    alias = _copy(tmp_path, "k2_mlp", "model.h5")
    with h5py.File(alias, "a") as f:
        del f["model_weights/hidden"]
        f["model_weights/hidden"] = f["model_weights/logits"]
    _fails("second hard link", alias)

    deep = _copy(tmp_path, "k3_mlp", "model.weights.h5")
    with h5py.File(deep, "a") as f:
        g = f.create_group("optimizer")
        for _ in range(300):
            g = g.create_group("g")
    _fails("nested too deep", fixture_dir("k3_mlp") / "model.json", deep)


def test_shape_bomb_is_refused(tmp_path):
    bomb = _copy(tmp_path, "k3_mlp", "model.weights.h5")
    with h5py.File(bomb, "a") as f:
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", shape=(1 << 20, 1 << 12),
                         dtype="<f4", chunks=(1024, 1024),
                         compression="gzip")
    _fails("decompression bomb", fixture_dir("k3_mlp") / "model.json", bomb)


def test_chunked_and_empty_name_attributes(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs["layer_names0"] = np.array([b"conv1", b"bn1"], dtype="|S5")
        f.attrs["layer_names1"] = np.array([b"dense"], dtype="|S5")
        f.attrs["weight_names"] = np.array([], dtype="float64")
        f.attrs["str_names"] = np.array(["a", "b"], dtype=object)
    f = open_hdf5(str(tmp_path / "a.h5"), "a.h5")
    try:
        assert names_attr(f, "layer_names") == ["conv1", "bn1", "dense"]
        assert names_attr(f, "weight_names") == []
        assert names_attr(f, "str_names") == ["a", "b"]
        assert names_attr(f, "missing") == []
    finally:
        f.close()


def test_in_memory_weights_are_labelled_in_messages(tmp_path):
    # a .keras whose weights file has a soft link: the message names the
    # archive and its member, not an anonymous in-memory file
    src = zipfile.ZipFile(fixture_dir("k3_mlp") / "model.keras")
    weights = io.BytesIO(src.read("model.weights.h5"))
    with h5py.File(weights, "a") as f:
        del f["layers/dense_1"]
        f["layers/dense_1"] = h5py.SoftLink("/layers/dense")
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.writestr("config.json", src.read("config.json"))
        z.writestr("metadata.json", src.read("metadata.json"))
        z.writestr("model.weights.h5", weights.getvalue())
    msg = _fails("SoftLink", tmp_path / "m.keras")
    assert f"{tmp_path / 'm.keras'}: model.weights.h5" in msg


def test_source_is_a_context_manager_and_accepts_str_paths():
    path = os.fspath(fixture_dir("k3_mlp") / "model.keras")
    with open_model(path) as src:
        assert src._files and src.path == path and src.weights_path is None
    assert not src._files


def test_subclassed_model_archive_is_named_as_such(tmp_path):
    """A subclassed model's .keras holds a config without a layer graph
    (and weights laid out by attribute): the error says what it is."""
    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_dataset("d/vars/0", data=np.zeros((4, 3), "float32"))
    path = tmp_path / "sub.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", '{"keras_version": "3.15.1"}')
        z.writestr("config.json", '{"module": null, "class_name": "Net", '
                   '"config": {"name": "net", "trainable": true}, '
                   '"registered_name": "Net"}')
        z.writestr("model.weights.h5", weights.getvalue())
    with pytest.raises(ConversionError, match="'Net' whose config has no "
                       "layer graph .a subclassed model"):
        open_model(path)
