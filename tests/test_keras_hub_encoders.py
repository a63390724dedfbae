"""The keras-hub encoder family: DistilBERT, RoBERTa, XLM-RoBERTa,
ELECTRA, ALBERT, FNet (backbones and text classifiers) and the layers
TokenAndPositionEmbedding, SinePositionEncoding, FNetEncoder.

Parity of every fixture is in test_parity (stored references); here: each
expansion is the graph keras-hub builds (the stored ``keras_graph.json``),
the ports' structure (ALBERT's shared layers, FNet's Fourier mixing),
refusals, and ``--verify`` when keras-hub is installed.
"""
import pytest
import torch

import migrate
from conftest import MODELS, needs_tf
from migrate.errors import ConversionError
from migrate.read.expand import expand
import test_keras_hub as hub_tests  # (a module: its tests not collected here)
_saved_config = hub_tests._saved_config

CASES = ["k3_hub_distil_bert_backbone", "k3_hub_distil_bert_classifier",
         "k3_hub_roberta_backbone", "k3_hub_roberta_classifier",
         "k3_hub_xlm_roberta_backbone", "k3_hub_xlm_roberta_classifier",
         "k3_hub_electra_backbone", "k3_hub_electra_same_dim",
         "k3_hub_albert_backbone", "k3_hub_albert_classifier",
         "k3_hub_f_net_backbone", "k3_hub_f_net_classifier"]


@pytest.mark.parametrize("case", CASES)
def test_expansion(case):
    hub_tests.test_expansion_is_the_graph_keras_hub_builds(case)


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not hub_tests.HAS_HUB,
                    reason="keras-hub is not installed")
@pytest.mark.parametrize("case", CASES + ["k3_hub_encoder_layers"])
def test_verify(case):
    hub_tests.test_verify_runs_keras_hub(case)


def test_albert_runs_each_shared_layer_as_one_module():
    """Two groups of two layers, each group run twice: four
    TransformerEncoder modules (one class), each called twice, weights
    stored once."""
    conv = migrate.convert(MODELS / "k3_hub_albert_backbone" / "model.keras")
    assert conv.source.count("class TransformerEncoder(nn.Module)") == 1
    queries = [k for k in conv.state_dict
               if k.endswith("self_attention.query.weight")]
    assert len(queries) == 4
    model = conv.module().eval()
    blocks = [m for m in model.modules()
              if type(m).__name__ == "TransformerEncoder"]
    assert len(blocks) == 4
    calls = {id(b): 0 for b in blocks}
    for b in blocks:
        b.register_forward_hook(
            lambda m, i, o: calls.__setitem__(id(m), calls[id(m)] + 1))
    ids = torch.randint(0, 100, (2, 5))
    model(torch.ones(2, 5, dtype=torch.int32), torch.zeros_like(ids), ids)
    assert sorted(calls.values()) == [2, 2, 2, 2]


def test_f_net_mixes_with_torch_fft():
    conv = migrate.convert(MODELS / "k3_hub_f_net_classifier" / "model.keras")
    src = conv.source
    assert src.count("class FNetEncoder(nn.Module)") == 1
    assert "torch.fft.fft2(x).real" in src
    assert "Attention" not in src
    names = [t.name for t in conv.program.inputs]
    assert names == ["segment_ids", "token_ids"]


def test_roberta_classifier_head():
    conv = migrate.convert(
        MODELS / "k3_hub_roberta_classifier" / "model.keras")
    src = conv.source
    assert "self.pooled_dropout = nn.Dropout(0.1)" in src
    assert "torch.tanh(self.pooled_dense(" in src
    assert "token_and_position_embedding" not in src  # RoBERTa's name
    assert "self.embeddings = TokenAndPositionEmbedding(100, 40, 16)" in src


@pytest.mark.parametrize("case,key,value", [
    ("k3_hub_albert_backbone", "num_groups", 3),
    ("k3_hub_albert_backbone", "num_inner_repetitions", 0),
    ("k3_hub_albert_backbone", "embedding_dim", 10 ** 12),
    ("k3_hub_electra_backbone", "vocab_size", None),
    ("k3_hub_distil_bert_backbone", "num_layers", 10 ** 9),
    ("k3_hub_roberta_backbone", "dropout", 1.5),
    ("k3_hub_f_net_backbone", "num_segments", -2),
    ("k3_hub_f_net_backbone", "intermediate_dim", "32")])
def test_bad_constructor_arguments_are_refused_by_name(case, key, value):
    saved = _saved_config(case)
    saved["config"][key] = value
    with pytest.raises(ConversionError, match=key):
        expand(saved, "m.keras")


def test_classifier_without_backbone_is_refused():
    saved = _saved_config("k3_hub_distil_bert_classifier")
    del saved["config"]["backbone"]
    with pytest.raises(ConversionError, match="backbone"):
        expand(saved, "m.keras")


def test_keras_mask_also_masks_the_encoders_queries():
    """A TransformerEncoder on a Keras-masked input (TokenAndPositionEmbedding
    with mask_zero): Keras's attention masks the padded queries as well as
    the keys (test_parity holds the values); the fixed sinusoid and the
    two embedding variants are module classes."""
    conv = migrate.convert(MODELS / "k3_hub_encoder_layers" / "model.keras")
    src = conv.source
    assert src.count("query_mask=mask") == 2
    assert "class SinePositionEncoding(nn.Module)" in src
    assert "SinePositionEncoding(500.0)" in src
    assert "self.token_embedding = ReversibleEmbedding(" in src
    keys = set(conv.state_dict)
    assert "embeddings.token_embedding.reverse_weight" in keys
    assert "embeddings_2.position_embedding.weight" in keys


def test_padding_mask_input_leaves_queries_unmasked():
    src = migrate.convert(
        MODELS / "k3_hub_roberta_backbone" / "model.keras").source
    assert "query_mask" not in src
