"""keras-hub Qwen 3 (dense): Qwen3Backbone and Qwen3CausalLM.

Parity of the fixtures is in test_parity (stored references); here: the
expansion is the graph keras-hub builds, the port's structure (the Llama
family's block and ``RopeAttention`` with per-head query/key norms),
padded rows, Keras's variable paths, refusals (mixture-of-experts
variants by name), torch.export and ``--verify`` with keras-hub.
"""
import pytest
import torch

import migrate
from conftest import MODELS, needs_tf
from migrate.errors import ConversionError
from migrate.read.config import parse_model
from migrate.read.expand import expand
import test_keras_hub as hub_tests  # (a module: its tests not collected here)
_saved_config = hub_tests._saved_config

CASES = ["k3_hub_qwen3_backbone", "k3_hub_qwen3_causal_lm"]


def _convert(case):
    return migrate.convert(MODELS / case / "model.keras")


def _inputs(batch=3, steps=7):
    mask = torch.ones(batch, steps, dtype=torch.int32)
    mask[1, 3:] = 0
    mask[-1] = 0  # a row with no real token
    return mask, torch.randint(0, 100, (batch, steps), dtype=torch.int32)


@pytest.mark.parametrize("case", CASES)
def test_expansion(case):
    hub_tests.test_expansion_is_the_graph_keras_hub_builds(case)


def test_backbone_port_is_the_llama_block_with_query_key_norms():
    src = _convert("k3_hub_qwen3_backbone").source
    assert src.count("class Qwen3TransformerDecoder(nn.Module)") == 1
    assert src.count("class RopeAttention(nn.Module)") == 1
    # per head, at keras-hub's attention epsilon, before the rotation
    assert "self.query_norm = nn.RMSNorm(head_dim, eps=1e-05)" in src
    assert src.index("q, k = self.query_norm(q), self.key_norm(k)") < \
        src.index("q = self.rotary_embedding(")
    want = ("Qwen3TransformerDecoder(16, 4, 2, 32, head_dim=6, eps=0.001, "
            "dropout=0.1, max_wavelength=500.0, scaling_factor=2.0, "
            "sliding_window=3)")
    assert "".join(want.split()) in "".join(src.split())
    assert "self.sequence_output_layernorm = nn.RMSNorm(16, eps=0.001)" in src


def test_causal_lm_head_is_the_tied_token_table():
    conv = _convert("k3_hub_qwen3_causal_lm")
    src = conv.source
    assert "logits = F.linear(x, self.token_embedding.weight)" in src
    assert [k for k in conv.state_dict if "token_embedding" in k] == \
        ["token_embedding.weight"]
    assert "head_dim=8" in src and "sliding_window=32768" in src
    assert not any(k.endswith(".bias") for k in conv.state_dict)


def test_variable_paths_are_keras_own():
    # as Keras lists them for the reloaded backbone ([v.path for v in
    # model.weights])
    conv = _convert("k3_hub_qwen3_backbone")
    paths = {v for e in conv.weight_map() for v in e["keras_variables"]}
    for want in ("token_embedding/reverse_embeddings",
                 "transformer_layer_0/self_attention/query_dense_layernorm/"
                 "scale",
                 "transformer_layer_1/self_attention/key_dense_layernorm/"
                 "scale",
                 "transformer_layer_0/self_attention/attention_output/kernel",
                 "transformer_layer_0/feedforward_gate_dense/kernel",
                 "sequence_output_layernorm/scale"):
        assert want in paths, want


def test_decoder_without_head_dim_reads_it_off_the_weights():
    """keras-hub's Qwen3TransformerDecoder.get_config drops head_dim (a
    re-wrapped backbone's config has none): the query kernel gives it."""
    from migrate import read
    from migrate.translate import translate
    src = read.open_model(str(MODELS / CASES[0] / "model.keras"), None)
    try:
        for node in src.graph.nodes:
            node.layer.config.pop("head_dim", None)
        program = translate(src.graph)
    finally:
        src.close()
    assert any("head_dim=6" in m.code for m in program.modules)


@pytest.mark.parametrize("case", CASES)
def test_padded_rows_are_finite_and_gradients_flow(case):
    conv = _convert(case)
    model = conv.module().train()
    out = model(*_inputs())
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        if name == "token_embedding.reverse_weight":  # the backbone's
            assert p.grad is None  # untied head table: no head here
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_export_with_dynamic_batch():
    model = _convert("k3_hub_qwen3_causal_lm").module().eval()
    batch = torch.export.Dim("batch", min=2, max=16)
    ep = torch.export.export(model, _inputs(3),
                             dynamic_shapes=({0: batch}, {0: batch}))
    other = _inputs(5)
    torch.testing.assert_close(ep.module()(*other), model(*other))


@pytest.mark.parametrize("key,value", [
    ("head_dim", 0), ("head_dim", 10 ** 12), ("num_layers", 10 ** 9),
    ("sliding_window_size", "32"), ("layer_norm_epsilon", "1e-6"),
    ("dropout", 1.0)])
def test_bad_constructor_arguments_are_refused_by_name(key, value):
    saved = _saved_config("k3_hub_qwen3_backbone")
    saved["config"][key] = value
    with pytest.raises(ConversionError, match=key):
        expand(saved, "m.keras")


@pytest.mark.parametrize("name", ["Qwen3MoeBackbone", "Qwen3MoeCausalLM",
                                  "QwenMoeBackbone", "QwenMoeCausalLM"])
def test_mixture_of_experts_is_refused_by_name(name):
    entry = {"class_name": name, "registered_name": f"keras_hub>{name}",
             "config": {"name": "m", "num_layers": 2}}
    with pytest.raises(ConversionError, match=f"'{name}'.*mixture-of-"
                                              "experts"):
        parse_model(entry, "m.keras")


def test_mixture_of_experts_is_not_listed_as_supported():
    from migrate.read.expand import EXPANDERS
    assert not any("Moe" in k for k in EXPANDERS)
    assert "keras_hub>Qwen3Backbone" in EXPANDERS


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not hub_tests.HAS_HUB,
                    reason="keras-hub is not installed")
@pytest.mark.parametrize("case", CASES)
def test_verify(case):
    hub_tests.test_verify_runs_keras_hub(case)


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not hub_tests.HAS_HUB,
                    reason="keras-hub is not installed")
def test_one_training_step_matches_keras_hub():
    path = MODELS / "k3_hub_qwen3_backbone" / "model.keras"
    parity = migrate.verify(path, migrate.convert(path), training=True)
    train = parity["training"]
    assert train["passed"] and not train["missing"], train
