"""keras-hub MaskedLM tasks (BERT, RoBERTa, DistilBERT, XLM-RoBERTa,
ALBERT, FNet) and the MaskedLMHead layer.

Parity of every fixture is in test_parity (stored references, positions
that repeat and point at padding); here: each expansion is the graph
keras-hub builds (``keras_graph.json``), the head's port (one class, the
gather as indexing, the token table tied), padded rows, refusals,
torch.export and ``--verify`` when keras-hub is installed.
"""
import subprocess
import sys

import pytest
import torch

import migrate
from conftest import MODELS, ROOT, needs_tf
from migrate.errors import ConversionError
from migrate.read.expand import expand
import test_keras_hub as hub_tests  # (a module: its tests not collected here)
_saved_config = hub_tests._saved_config

CASES = ["k3_hub_bert_masked_lm", "k3_hub_roberta_masked_lm",
         "k3_hub_distil_bert_masked_lm", "k3_hub_xlm_roberta_masked_lm",
         "k3_hub_albert_masked_lm", "k3_hub_f_net_masked_lm"]


def _convert(case):
    return migrate.convert(MODELS / case / "model.keras")


def _inputs(conv, batch=3, steps=6, masks=4):
    """Inputs by name: a fully padded last row, positions that repeat."""
    out = {}
    for t in conv.program.inputs:
        if t.name == "padding_mask":
            m = torch.ones(batch, steps, dtype=torch.int32)
            m[1, 2:] = 0
            m[-1] = 0
            out[t.var] = m
        elif t.name == "mask_positions":
            p = torch.randint(0, steps, (batch, masks), dtype=torch.int32)
            p[:, 1] = p[:, 0]
            out[t.var] = p
        else:
            out[t.var] = torch.randint(0, t.vocab or 3, (batch, steps),
                                       dtype=torch.int32)
    return out


@pytest.mark.parametrize("case", CASES)
def test_expansion(case):
    hub_tests.test_expansion_is_the_graph_keras_hub_builds(case)


def test_conversion_never_imports_keras_hub():
    path = str(MODELS / CASES[1] / "model.keras")
    code = ("import sys, migrate; "
            f"c = migrate.convert({path!r}); "
            "c.source; dict(c.state_dict); "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('keras_hub', 'keras_nlp', 'keras', 'tensorflow')]; "
            "print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("case,table", [
    ("k3_hub_bert_masked_lm", "self.token_embedding.weight"),
    ("k3_hub_roberta_masked_lm", "self.embeddings.token_embedding.weight"),
    ("k3_hub_albert_masked_lm", "self.token_embedding.weight")])
def test_head_is_one_class_with_the_tied_table(case, table):
    conv = _convert(case)
    src = conv.source
    assert src.count("class MaskedLMHead(nn.Module)") == 1
    assert "x = x[rows, mask_positions]" in src
    assert "F.linear(x, embedding, self.output_bias)" in src
    assert f"mask_positions, {table}" in " ".join(src.split())
    tables = [k for k in conv.state_dict if "token_embedding" in k]
    assert len(tables) == 1  # one table for embedding and logits
    imports = [line for line in src.splitlines()
               if line.startswith(("import ", "from "))]
    assert all("torch" in line for line in imports), imports
    names = [t.name for t in conv.program.inputs]
    assert names[0] == "mask_positions"
    assert "mask_positions: (B, T) int32, positions in [0, T)" in src


def test_albert_head_maps_back_to_the_embedding_width():
    conv = _convert("k3_hub_albert_masked_lm")
    assert "self.mlm_head = MaskedLMHead(16, 8, 100)" in conv.source
    assert tuple(conv.state_dict["mlm_head.intermediate_dense.weight"]
                 .shape) == (8, 16)


def test_unused_pooled_output_is_not_computed():
    """The backbone's pooled output feeds nothing under a MaskedLM head:
    its Dense stays a module (its weights map to Keras) but forward does
    not run it."""
    conv = _convert("k3_hub_bert_masked_lm")
    src = conv.source
    forward = src[src.index("def forward(self, mask_positions"):]
    assert "pooled_dense" not in forward
    assert "self.pooled_dense = nn.Linear(16, 16)" in src
    assert "pooled_dense.weight" in conv.state_dict


def test_user_heads_own_kernel_and_reverse_table():
    conv = _convert("k3_hub_mlm_heads")
    src = conv.source
    assert "self.head_own = MaskedLMHead(16, 60, eps=0.001)" in src
    assert "F.softmax(self.head_own(x, mask_positions), dim=-1)" in src
    assert "self.tokens.reverse_weight" in src
    assert "torch.tanh(self.intermediate_dense(x))" in src
    paths = {v for e in conv.weight_map() for v in e["keras_variables"]}
    for want in ("head_own/output_kernel", "head_own/output_bias",
                 "head_tied/output_bias",
                 "head_tied/intermediate_dense/kernel",
                 "head_tied/intermediate_layer_norm/gamma"):
        assert want in paths, want


def test_encoder_variable_paths_are_keras_own():
    """keras-hub's TransformerEncoder names its attention
    ``self_attention_layer`` (the decoder: ``self_attention``); paths as
    Keras lists them (``[v.path for v in model.weights]``)."""
    conv = _convert("k3_hub_roberta_masked_lm")
    paths = {v for e in conv.weight_map() for v in e["keras_variables"]}
    for want in ("embeddings/token_embedding/embeddings",
                 "transformer_layer_0/self_attention_layer/query/kernel",
                 "transformer_layer_1/self_attention_layer/attention_output/"
                 "bias",
                 "transformer_layer_0/self_attention_layer_norm/gamma",
                 "mlm_head/output_bias", "mlm_head/intermediate_dense/kernel",
                 "mlm_head/intermediate_layer_norm/beta"):
        assert want in paths, want


@pytest.mark.parametrize("case", CASES)
def test_padded_rows_are_finite_and_gradients_flow(case):
    conv = _convert(case)
    model = conv.module().train()
    out = model(**_inputs(conv))
    assert out.shape == (3, 4, 100)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        if name.startswith("pooled_dense"):  # no output depends on it
            assert p.grad is None
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("case", ["k3_hub_bert_masked_lm",
                                  "k3_hub_roberta_masked_lm"])
def test_export_with_dynamic_batch(case):
    conv = _convert(case)
    model = conv.module().eval()
    names = [t.var for t in conv.program.inputs]
    batch = torch.export.Dim("batch", min=2, max=16)
    args = tuple(_inputs(conv, batch=3)[k] for k in names)
    ep = torch.export.export(model, args,
                             dynamic_shapes=tuple({0: batch} for _ in names))
    other = tuple(_inputs(conv, batch=5)[k] for k in names)
    torch.testing.assert_close(ep.module()(*other), model(*other))


@pytest.mark.parametrize("case,key,value", [
    ("k3_hub_bert_masked_lm", "vocabulary_size", 0),
    ("k3_hub_roberta_masked_lm", "num_layers", 10 ** 9),
    ("k3_hub_albert_masked_lm", "embedding_dim", "8"),
    ("k3_hub_f_net_masked_lm", "dropout", 3.0)])
def test_bad_backbone_arguments_are_refused_by_name(case, key, value):
    from migrate.read.config import parse_model
    saved = _saved_config(case)
    saved["config"]["backbone"]["config"][key] = value
    with pytest.raises(ConversionError, match=key):
        parse_model(saved, "m.keras")  # the nested backbone expanded too


def test_masked_lm_without_backbone_is_refused():
    saved = _saved_config("k3_hub_bert_masked_lm")
    del saved["config"]["backbone"]
    with pytest.raises(ConversionError, match="backbone"):
        expand(saved, "m.keras")


def _with_head(case, **changes):
    """The fixture's graph with the head's config changed."""
    from migrate import read
    src = read.open_model(str(MODELS / case / "model.keras"), None)
    head = next(n.layer for n in src.graph.nodes
                if n.layer.class_name == "MaskedLMHead")
    head.config.update(changes)
    return src


@pytest.mark.parametrize("changes,match", [
    ({"_tied_embedding": "nowhere"}, "token_embedding"),
    ({"vocabulary_size": 99}, "vocabulary_size"),
    ({"intermediate_activation": "mish"}, "activation"),
    ({"activation": "log_softmax"}, "activation")])
def test_head_options_refused_by_name(changes, match):
    from migrate.translate import translate
    src = _with_head("k3_hub_bert_masked_lm", **changes)
    try:
        with pytest.raises(migrate.UnsupportedLayers, match=match):
            translate(src.graph)
    finally:
        src.close()


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not hub_tests.HAS_HUB,
                    reason="keras-hub is not installed")
@pytest.mark.parametrize("case", CASES + ["k3_hub_mlm_heads"])
def test_verify(case):
    hub_tests.test_verify_runs_keras_hub(case)


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not hub_tests.HAS_HUB,
                    reason="keras-hub is not installed")
def test_training_matches_keras_hub():
    """Outputs and every mapped gradient of one training step (dropout
    rates 0), the head's and the tied table's included; and keras-hub's
    default compile (Adam): five steps of training.py land where Keras's
    do, the segment table's lookup gradient taken row by row as Keras's
    Adam takes it (the tied token table's is dense in both)."""
    path = MODELS / "k3_hub_bert_masked_lm" / "model.keras"
    parity = migrate.verify(path, migrate.convert(path), training=True)
    train = parity["training"]
    assert not train["missing"] and not train["unmapped"], train
    assert train["max_rel_err"] < 1e-5 and train["max_grad_rel_err"] < 1e-5
    assert train["trajectory"]["passed"], train["trajectory"]
