"""keras-hub T5 (T5Backbone, T5Seq2SeqLM).

Parity of each fixture is in test_parity (stored Keras references: padded
batches with an all-padding encoder row, relative distances in the
logarithmic buckets); here the expansion against the Functional config
Keras writes, the port's structure, refusals, gradients through padded
rows, torch.export, and ``--verify`` when keras-hub is installed.
"""
import pytest

from conftest import MODELS
from test_keras_hub import HAS_HUB, needs_tf
from test_keras_hub import test_expansion_is_the_graph_keras_hub_builds \
    as _same_graph

CASES = ["k3_hub_t5_backbone", "k3_hub_t5_seq2seq_lm",
         "k3_hub_t5_seq2seq_lm_untied"]


@pytest.mark.parametrize("case", CASES)
def test_expansion_is_the_graph_keras_hub_builds(case):
    _same_graph(case)


def _convert(case):
    import migrate
    return migrate.convert(MODELS / case / "model.keras")


def test_t5_port_reads_like_hand_written_t5():
    conv = _convert("k3_hub_t5_seq2seq_lm")
    src = conv.source
    assert src.count("class T5Block(nn.Module)") == 1
    assert src.count("class T5DecoderBlock(nn.Module)") == 1
    assert src.count("class T5Attention(nn.Module)") == 1
    assert src.count("def relative_position_bucket(") == 1
    # the softmax written out (SDPA's backward is wrong for a row of -1e9)
    assert "weights = F.dropout(scores.softmax(-1)" in src
    assert "scaled_dot_product_attention" not in src
    assert "F.gelu(self.input_projector(h)) * self.gate_projector(h)" in src
    assert "nn.RMSNorm(16, eps=1e-05)" in src
    # each stack's bias once, in forward; its layers in a loop
    forward = src.split("def forward")[-1]
    assert "position_bias = self.encoder_position_bias(encoder_padding_mask)" \
        in forward
    assert "self.decoder_position_bias = T5PositionBias(3, causal=True)" \
        in src
    assert "for layer in self.transformer_encoder_layers:" in forward
    assert "for layer in self.transformer_decoder_layers:" in forward
    assert "encoder_hidden = self.token_embedding(encoder_token_ids)" \
        in forward
    assert "x = self.token_embedding(decoder_token_ids)" in forward
    assert "* 0.25" in forward  # tied head: hidden_dim ** -0.5
    assert "logits = F.linear(x, self.token_embedding.weight)" in forward
    keys = [k for k in conv.state_dict if "relative_attention_bias" in k]
    assert keys == ["encoder_position_bias.relative_attention_bias.weight",
                    "decoder_position_bias.relative_attention_bias.weight"]
    rows = {e["torch"]: e["keras_variables"] for e in conv.weight_map()}
    assert rows[keys[0]] == rows[keys[1]] == ["self_attention/embeddings"]
    imports = [line for line in src.splitlines()
               if line.startswith(("import ", "from "))]
    assert all("torch" in line for line in imports), imports


def test_untied_head_has_its_own_weights_and_no_scale():
    conv = _convert("k3_hub_t5_seq2seq_lm_untied")
    forward = conv.source.split("def forward")[-1]
    assert "* 0.25" not in forward and "F.relu" not in conv.source
    assert "gate_projector" not in conv.source
    assert [k for k in conv.state_dict if "token_embedding" in k] == [
        "token_embedding.weight", "token_embedding.reverse_weight"]
    assert "logits = F.linear(x, self.token_embedding.reverse_weight)" \
        in forward


def test_t5_variable_paths_are_keras_own():
    # as Keras 3 lists them on a fresh load ([v.path for v in m.weights])
    paths = {v for e in _convert("k3_hub_t5_backbone").weight_map()
             for v in e["keras_variables"]}
    for want in ("self_attention/embeddings",
                 "transformer_encoder_layer_0/t5_layer_norm/weight",
                 "transformer_encoder_layer_2/t5_layer_norm_5/weight",
                 "transformer_decoder_layer_0/t5_layer_norm_7/weight",
                 "transformer_decoder_layer_2/t5_layer_norm_14/weight",
                 "transformer_decoder_layer_1/cross_attention/"
                 "query_projector/kernel",
                 "encoder_output_layer_norm/weight"):
        assert want in paths, want


def test_relative_position_bucket_is_t5s():
    """Mesh TensorFlow's buckets, by hand: exact below 8 (16 causal),
    logarithmic to 128, the far ones shared."""
    import torch
    ns = {"torch": torch}
    from migrate.rules.keras_hub.t5 import BUCKET
    exec(BUCKET, ns)
    bucket = ns["relative_position_bucket"]
    rel = torch.tensor([0, 3, 7, 8, 16, 127, 128, 500, -1, -8, -16, -500])
    assert bucket(rel, True).tolist() == [
        0, 19, 23, 24, 26, 31, 31, 31, 1, 8, 10, 15]
    assert bucket(rel, False).tolist() == [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 8, 16, 31]


def test_padded_rows_are_finite_and_gradients_flow():
    import torch
    conv = _convert("k3_hub_t5_backbone")
    model = conv.module().train()
    assert [t.name for t in conv.program.inputs] == [
        "decoder_padding_mask", "decoder_token_ids", "encoder_padding_mask",
        "encoder_token_ids"]
    mask = torch.tensor([[1] * 12, [1] * 3 + [0] * 9, [0] * 12])
    ids = torch.randint(0, 100, (3, 12))
    outs = model(mask, ids, mask, ids)
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("key,value", [
    ("num_layers", 10 ** 9), ("hidden_dim", -1), ("num_heads", 0),
    ("key_value_dim", "x"), ("dropout", 2.0),
    ("use_gated_activation", "yes"), ("tie_embedding_weights", 1)])
def test_absurd_constructor_arguments_are_refused(key, value):
    from migrate.errors import ConversionError
    from migrate.read.expand import expand
    from test_keras_hub import _saved_config
    saved = _saved_config("k3_hub_t5_backbone")
    saved["config"][key] = value
    with pytest.raises(ConversionError, match=key):
        expand(saved, "m.keras")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_t5_ports_export_with_a_dynamic_batch(case):
    import torch
    from torch.export import Dim, export
    conv = _convert(case)
    model = conv.module().eval()
    args = []
    for t in conv.program.inputs:
        args.append(torch.ones((3, 10), dtype=torch.int32))
    args[2][2] = 0  # an all-padding encoder row
    batch = Dim("batch", min=1, max=64)
    program = export(model, tuple(args),
                     dynamic_shapes=tuple({0: batch} for _ in args))
    small = [a[:2] for a in args]
    got, want = program.module()(*small), model(*small)
    for g, w in zip(got if isinstance(got, tuple) else [got],
                    want if isinstance(want, tuple) else [want]):
        assert torch.allclose(g, w)


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_HUB, reason="keras-hub is not installed")
@pytest.mark.parametrize("case", CASES)
def test_verify_runs_keras_hub(case):
    import migrate
    conv = _convert(case)
    parity = migrate.verify(MODELS / case / "model.keras", conv)
    assert parity["passed"], parity


@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_HUB, reason="keras-hub is not installed")
@pytest.mark.parametrize("case", CASES[:2])
def test_t5_trains_as_keras(case):
    """Training mode: outputs and every gradient, all-padding rows
    included.  Keras names both stacks' relative position tables
    ``self_attention/embeddings`` (added outside their layers' name
    scope); their gradients map by occurrence, encoder then decoder."""
    import migrate
    conv = _convert(case)
    parity = migrate.verify(MODELS / case / "model.keras", conv,
                            training=True)
    training = parity["training"]
    assert not training["missing"] and not training["unmapped"], training
    assert training["max_rel_err"] < 1e-5
    assert training["max_grad_rel_err"] < 1e-5, training
    # the Seq2SeqLM is compiled (keras-hub compiles its tasks by default):
    # its five steps land where Keras's do, the relative tables' lookup
    # gradients taken row by row as Keras's Adam takes them
    if "trajectory" in training:
        assert training["trajectory"]["passed"], training["trajectory"]
    assert training["passed"], training
    for stack in ("encoder", "decoder"):
        assert f"{stack}_position_bias.relative_attention_bias.weight" in \
            training["gradients"]
