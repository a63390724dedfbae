"""The keras-hub rule pack.

Parity of every keras-hub fixture is in test_parity (stored references);
here: the expanders write the graph keras-hub builds (compared with the
Functional config Keras wrote for the same graph, stored beside each
fixture), conversion never imports keras-hub, the port's structure (one
block class, tied head), refusals, and ``--verify`` when keras-hub is
installed.
"""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

import migrate
from conftest import MODELS, ROOT, needs_tf
from migrate.errors import ConversionError
from migrate.read.expand import expand

CASES = ["k3_hub_gpt2_backbone", "k3_hub_gpt2_causal_lm",
         "k3_hub_bert_backbone", "k3_hub_bert_classifier"]
CASES += ["k3_hub_resnet_v1_classifier", "k3_hub_resnet_v2_backbone"]
CASES += ["k3_hub_vit_gap_classifier", "k3_hub_whisper_backbone"]
CASES += ["k3_hub_densenet_classifier", "k3_hub_vgg_flatten_classifier",
          "k3_hub_vgg_classifier", "k3_hub_xception_classifier",
          "k3_hub_efficientnet_backbone", "k3_hub_efficientnet_classifier"]
CASES += ["k3_hub_cspnet_backbone", "k3_hub_cspnet_classifier"]
IGNORED = {"dtype", "trainable", "_shared_layer"}


def _saved_config(case):
    import zipfile
    with zipfile.ZipFile(MODELS / case / "model.keras") as z:
        return json.loads(z.read("config.json"))


def _history(value):
    """The tensor references of a call node, in order, as triples."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [tuple(value["config"]["keras_history"])]
        return [t for k in sorted(value) for t in _history(value[k])]
    if isinstance(value, list):
        return [t for v in value for t in _history(v)]
    return []


def _layers(entry):
    return entry["config"]["layers"]


@pytest.mark.parametrize("case", CASES)
def test_expansion_is_the_graph_keras_hub_builds(case):
    saved = _saved_config(case)
    keras = json.loads((MODELS / case / "keras_graph.json").read_text())
    _assert_same_graph(expand(saved, case), keras)


TASKS = [c for c in CASES
         if (MODELS / c / "keras_backbone_graph.json").exists()]


@pytest.mark.parametrize("case", TASKS)
def test_task_backbone_is_the_graph_keras_hub_builds(case):
    """A task's backbone, expanded from the task's nested entry."""
    saved = _saved_config(case)
    cls = saved["config"]["backbone"]["class_name"]
    nested = next(x for x in _layers(expand(saved, case))
                  if x["class_name"] == cls)
    keras = json.loads((MODELS / case / "keras_backbone_graph.json")
                       .read_text())
    _assert_same_graph(expand(nested, case), keras)


def _assert_same_graph(ours, keras):
    a, b = _layers(ours), _layers(keras)
    # same layers, same order (the weights file names layers by it)
    assert [(x["name"], x["class_name"]) for x in a] == \
        [(x["name"], x["class_name"]) for x in b]
    for x, y in zip(a, b):
        assert [_history(n) for n in x.get("inbound_nodes", [])] == \
            [_history(n) for n in y.get("inbound_nodes", [])], x["name"]
        kw = [sorted(n.get("kwargs", {})) for n in x.get("inbound_nodes", [])]
        assert kw == [sorted(k for k, v in n.get("kwargs", {}).items()
                             if k != "training" and (_history(v) or k not in
                                                     ("mask",)))
                      for n in y.get("inbound_nodes", [])], x["name"]
        if x["class_name"] in ("Functional",) or "layers" in y["config"]:
            continue
        for key, value in x["config"].items():
            if key in IGNORED or "_shared_layer" in x["config"] or (
                    key not in y["config"]):  # keras-hub's get_config
                continue  # drops some arguments its layers were built with
            want = y["config"].get(key)
            if isinstance(want, dict) and want.get("class_name") == \
                    "function":
                want = want["config"]
            assert value == want, (x["name"], key)
    assert ours["config"]["input_layers"] == keras["config"]["input_layers"]
    assert ours["config"]["output_layers"] == keras["config"]["output_layers"]


def test_conversion_never_imports_keras_hub():
    code = ("import sys, migrate; "
            f"c = migrate.convert({str(MODELS / CASES[1] / 'model.keras')!r}); "
            "c.source; dict(c.state_dict); "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('keras_hub', 'keras_nlp', 'keras', 'tensorflow')]; "
            "print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_gpt2_port_reads_like_nanogpt():
    conv = migrate.convert(MODELS / "k3_hub_gpt2_causal_lm" / "model.keras")
    src = conv.source
    assert src.count("class TransformerDecoder(nn.Module)") == 1
    assert src.count("class Attention(nn.Module)") == 1
    assert "F.scaled_dot_product_attention" in src
    assert "x = x + self.dropout(h)" in src  # the residual, written out
    # the head is the token embedding, transposed: one parameter, tied
    assert "F.linear(" in src and "self.token_embedding.weight)" in src
    keys = [k for k in conv.state_dict if "token_embedding" in k]
    assert keys == ["token_embedding.weight"]
    model = conv.module()
    assert model.token_embedding.weight.requires_grad
    imports = [line for line in src.splitlines()
               if line.startswith(("import ", "from "))]
    assert all("torch" in line for line in imports), imports


def test_padded_rows_are_exact_and_gradients_flow():
    """A fully padded row (no real token) gives finite outputs, and the
    loss gradient reaches every parameter (no NaN from SDPA)."""
    conv = migrate.convert(MODELS / "k3_hub_gpt2_backbone" / "model.keras")
    model = conv.module().train()
    names = [t.name for t in conv.program.inputs]
    assert names == ["padding_mask", "token_ids"]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    ids = torch.randint(0, 100, (3, 4))
    out = model(mask, ids)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_unknown_keras_hub_model_is_refused_by_name():
    from migrate.read.config import parse_model
    entry = {"class_name": "FalconBackbone", "registered_name":
             "keras_hub>FalconBackbone", "module":
             "keras_hub.src.models.falcon.falcon_backbone",
             "config": {"name": "falcon_backbone", "num_layers": 2}}
    with pytest.raises(ConversionError, match="'FalconBackbone'"):
        parse_model(entry, "m.keras")


@pytest.mark.parametrize("key,value", [
    ("num_layers", 10 ** 9), ("hidden_dim", -1), ("vocabulary_size", "x"),
    ("dropout", 2.0)])
def test_absurd_constructor_arguments_are_refused(key, value):
    saved = _saved_config(CASES[0])
    saved["config"][key] = value
    with pytest.raises(ConversionError, match=key):
        expand(saved, "m.keras")


HAS_HUB = importlib.util.find_spec("keras_hub") is not None


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_HUB, reason="keras-hub is not installed")
@pytest.mark.parametrize("case", CASES)
def test_verify_runs_keras_hub(case):
    conv = migrate.convert(MODELS / case / "model.keras")
    parity = migrate.verify(MODELS / case / "model.keras", conv)
    assert parity["passed"], parity


HUB_FIXTURES = sorted(p.name for p in MODELS.glob("k3_hub_*"))


@pytest.mark.parametrize("case", HUB_FIXTURES)
def test_weight_map_names_keras_variables(case):
    """Every state-dict key maps to the Keras variable(s) it comes from,
    by the path Keras gives them (``variable.path``); BatchNorm's
    ``num_batches_tracked`` is torch's own counter (no Keras variable)."""
    conv = migrate.convert(MODELS / case / "model.keras")
    entries = [e for e in conv.weight_map()
               if not e["torch"].endswith(".num_batches_tracked")]
    assert entries and all(e["keras_variables"] for e in entries), [
        e["torch"] for e in entries if not e["keras_variables"]]


def test_gpt2_variable_paths_are_keras_own():
    # as Keras 3 lists them for this model (``[v.path for v in lm.weights]``)
    conv = migrate.convert(MODELS / "k3_hub_gpt2_causal_lm" / "model.keras")
    paths = {v for e in conv.weight_map() for v in e["keras_variables"]}
    for want in ("token_embedding/embeddings",
                 "position_embedding/embeddings",
                 "transformer_layer_0/self_attention/query/kernel",
                 "transformer_layer_1/self_attention/attention_output/bias",
                 "transformer_layer_0/self_attention_layer_norm/gamma",
                 "transformer_layer_1/feedforward_output_dense/kernel",
                 "layer_norm/beta"):
        assert want in paths, want


_RESNET = {"input_conv_filters": [8, 16], "input_conv_kernel_sizes": [3, 3],
           "stackwise_num_filters": [64, 8], "stackwise_num_blocks": [1, 2],
           "stackwise_num_strides": [1, 2],
           "block_type": "bottleneck_block_vd",
           "image_shape": [32, 32, 3], "name": "res_net_backbone"}


def _resnet(**kw):
    return {"class_name": "ResNetBackbone",
            "registered_name": "keras_hub>ResNetBackbone",
            "config": dict(_RESNET, **kw)}


def test_resnet_vd_shortcut_is_average_pooled():
    # keras-hub's _vd blocks pool the shortcut (an unnamed layer: Keras's
    # counter names it) before a stride-1 1x1 conv
    names = {x["name"]: x for x in _layers(expand(_resnet(), "m"))}
    pool = names["average_pooling2d"]
    assert pool["config"]["strides"] == [2, 2]
    assert names["stack1_block0_0_conv"]["config"]["strides"] == [1, 1]
    assert names["stack1_block0_0_conv"]["inbound_nodes"][0]["args"][0][
        "config"]["keras_history"][0] == "average_pooling2d"
    assert "average_pooling2d_1" not in names  # stride 1: no pooling


@pytest.mark.parametrize("bad", [{"block_type": "bottleneck_block_v3"},
                                 {"use_pre_activation": "yes"},
                                 {"stackwise_num_blocks": [1]},
                                 {"data_format": "channels_middle"}])
def test_resnet_refuses_unknown_options_by_name(bad):
    with pytest.raises(ConversionError) as err:
        expand(_resnet(**bad), "m")
    assert next(iter(bad)).split("_")[0] in str(err.value)


def test_channels_first_image_backbone_without_data_format_is_refused(
        tmp_path):
    """keras-hub's ResNetBackbone does not save data_format: a model built
    channels_first reads as channels_last, and its stem kernel does not
    fit the image's channels.  That is one clear error, not a port that
    fails when it runs."""
    import zipfile
    src = MODELS / "k3_hub_resnet_v1_classifier" / "model.keras"
    out = tmp_path / "model.keras"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as w:
        for item in z.infolist():
            data = z.read(item)
            if item.filename == "config.json":
                cfg = json.loads(data)
                cfg["config"]["backbone"]["config"]["image_shape"] = [3, 32,
                                                                      32]
                data = json.dumps(cfg).encode()
            w.writestr(item, data)
    with pytest.raises(ConversionError, match="data_format") as err:
        migrate.convert(out)
    assert "takes 3 input channels" in str(err.value)
    assert "channels_last input has 32" in str(err.value)


def _nested(case, **kw):
    """The fixture's saved config, its backbone's arguments changed."""
    saved = _saved_config(case)
    entry = saved["config"].get("backbone")
    (entry or saved)["config"].update(kw)
    return saved


@pytest.mark.parametrize("case,bad,says", [
    ("k3_hub_densenet_classifier", {"growth_rate": 0}, "growth_rate"),
    ("k3_hub_densenet_classifier", {"compression_ratio": 1.5},
     "compression_ratio"),
    ("k3_hub_densenet_classifier", {"stackwise_num_repeats": []},
     "stackwise_num_repeats"),
    ("k3_hub_vgg_classifier", {"stackwise_num_filters": [4]},
     "differ in length"),
    ("k3_hub_xception_classifier", {"stackwise_pooling": [True]},
     "stackwise_pooling"),
    ("k3_hub_xception_classifier", {"stackwise_conv_filters": [8, 16]},
     "stackwise_conv_filters"),
    ("k3_hub_efficientnet_backbone",
     {"stackwise_block_types": ["v1", "fused"]}, "FusedMBConvBlock"),
    ("k3_hub_efficientnet_backbone",
     {"stackwise_block_types": ["v1", "v3"]}, "'v3' is not a block type"),
    ("k3_hub_efficientnet_backbone", {"data_format": "channels_first"},
     "channels_last only"),
    ("k3_hub_efficientnet_backbone", {"stem_conv_padding": "causal"},
     "stem_conv_padding"),
    ("k3_hub_efficientnet_backbone",
     {"stackwise_width_coefficients": [0.25]}, "one number per stack"),
    ("k3_hub_cspnet_backbone", {"stage_type": "cs3"}, "'cs3' is not "
     "supported yet"),
    ("k3_hub_cspnet_backbone", {"block_type": "edge_block"},
     "'edge_block' is not supported yet"),
    ("k3_hub_cspnet_backbone", {"stem_strides": 3}, "stem_strides"),
    ("k3_hub_cspnet_classifier", {"stem_pooling": "avg"}, "stem_pooling"),
    ("k3_hub_cspnet_backbone", {"output_strides": 2}, "output_strides"),
    ("k3_hub_cspnet_backbone", {"avg_down": 1}, "avg_down")])
def test_image_backbones_refuse_bad_options_by_name(case, bad, says):
    saved = _nested(case, **bad)
    with pytest.raises(ConversionError, match=says):
        if "backbone" in saved["config"]:  # the task expands it lazily
            saved = next(x for x in _layers(expand(saved, case))
                         if "Backbone" in x["class_name"])
        expand(saved, case)


@pytest.mark.parametrize("case,pooling", [
    ("k3_hub_densenet_classifier", "flatten"),
    ("k3_hub_vgg_classifier", "gap")])
def test_image_classifiers_refuse_unknown_pooling(case, pooling):
    saved = _saved_config(case)
    saved["config"]["pooling"] = pooling
    with pytest.raises(ConversionError, match=f"pooling = '{pooling}'"):
        expand(saved, case)


def test_vgg_head_is_its_own_sequential():
    """VGGImageClassifier's head is a Sequential named ``head`` (its
    backbone saves no name: a reload calls it vgg_backbone); the port's
    output is ``predictions``, not the Sequential's name."""
    conv = migrate.convert(MODELS / "k3_hub_vgg_classifier" / "model.keras")
    assert [t.name for t in conv.program.outputs] == ["predictions"]
    assert "self.fc1 = nn.Conv2d(8, 10, kernel_size=7)" in conv.source


def test_efficientnet_top_conv_that_does_not_fit_is_refused(tmp_path):
    """keras-hub's EfficientNetBackbone does not save num_features: a file
    saved with another value rebuilds (in Keras as here) a top_conv the
    stored kernel does not fit.  Simulated: a last width coefficient that
    only the top conv reads (128 filters expected, 320 stored)."""
    import zipfile
    src = MODELS / "k3_hub_efficientnet_backbone" / "model.keras"
    out = tmp_path / "model.keras"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as w:
        for item in z.infolist():
            data = z.read(item)
            if item.filename == "config.json":
                cfg = json.loads(data)
                cfg["config"]["stackwise_width_coefficients"] += [0.1]
                data = json.dumps(cfg).encode()
            w.writestr(item, data)
    with pytest.raises(ConversionError, match="num_features") as err:
        migrate.convert(out)
    assert "'top_conv': its kernel has 320 filters, its config says 128" \
        in str(err.value)
