"""keras-hub's decoder-only language models: Llama, Llama 3, Mistral, Qwen.

Parity of each fixture is in test_parity; here the expansions are checked
against the Functional config Keras writes (where keras-hub can write it:
Llama's get_config fails when re-wrapped, an upstream bug), the port's
structure, and ``--verify`` when keras-hub is installed.
"""
import pytest

import migrate
from conftest import MODELS
from test_keras_hub import HAS_HUB, needs_tf
from test_keras_hub import test_expansion_is_the_graph_keras_hub_builds \
    as _same_graph

GRAPHS = ["k3_hub_mistral_causal_lm", "k3_hub_qwen_backbone"]
GRAPHS += ["k3_hub_phi3_backbone", "k3_hub_phi3_causal_lm",
           "k3_hub_phi3_short_rope"]
GRAPHS += ["k3_hub_gemma3_backbone", "k3_hub_gemma3_causal_lm"]
# Llama 3 with tied embeddings does not reload in keras-hub 0.32 (its
# get_config drops tie_word_embeddings), so Keras cannot verify that file.
RELOADABLE = ["k3_hub_llama_backbone", "k3_hub_mistral_causal_lm",
              "k3_hub_gemma_backbone", "k3_hub_gemma2_causal_lm",
              "k3_hub_qwen_backbone"]
RELOADABLE += ["k3_hub_phi3_backbone", "k3_hub_phi3_causal_lm",
               "k3_hub_phi3_short_rope"]
RELOADABLE += ["k3_hub_gemma3_backbone", "k3_hub_gemma3_causal_lm"]


@pytest.mark.parametrize("case", GRAPHS)
def test_expansion_is_the_graph_keras_hub_builds(case):
    _same_graph(case)


def test_llama3_port_reads_like_hand_written_llama():
    conv = migrate.convert(MODELS / "k3_hub_llama3_causal_lm" / "model.keras")
    src = conv.source
    assert src.count("class LlamaTransformerDecoder(nn.Module)") == 1
    assert "class RopeAttention(nn.Module)" in src
    assert "Llama 3: low frequencies slowed by 8.0" in src
    assert "nn.RMSNorm(16, eps=1e-06)" in src
    assert "F.silu(self.feedforward_gate_dense(h))" in src
    # tied embeddings (read off the file: keras-hub's config drops the flag)
    assert "F.linear(" in src and ".token_embedding.weight)" in src
    assert not any("inv_freq" in k for k in conv.state_dict)  # a buffer


def test_sliding_window_and_biases_are_written():
    mistral = migrate.convert(
        MODELS / "k3_hub_mistral_causal_lm" / "model.keras").source
    assert "sliding_window=3" in mistral and "head_dim=6" in mistral
    assert "scaling_factor=2.0" in mistral
    qwen = migrate.convert(MODELS / "k3_hub_qwen_backbone" / "model.keras")
    assert "bias=True" in qwen.source and "sliding_window=4" in qwen.source
    assert any(k.endswith("self_attention.query.bias")
               for k in qwen.state_dict)


@needs_tf
@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_HUB, reason="keras-hub is not installed")
@pytest.mark.parametrize("case", RELOADABLE)
def test_verify_runs_keras_hub(case):
    conv = migrate.convert(MODELS / case / "model.keras")
    parity = migrate.verify(MODELS / case / "model.keras", conv)
    assert parity["passed"], parity


@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_HUB, reason="keras-hub is not installed")
@pytest.mark.parametrize("case", ["k3_hub_gemma2_causal_lm",
                                  "k3_hub_gemma3_causal_lm",
                                  "k3_hub_phi3_causal_lm"])
def test_keras_hub_ports_train_as_keras(case):
    """Training mode: outputs and every gradient, Gemma's ``1 + scale``
    norm weights included (their gradients map without the offset)."""
    conv = migrate.convert(MODELS / case / "model.keras")
    parity = migrate.verify(MODELS / case / "model.keras", conv,
                            training=True)
    train = parity["training"]
    assert not train["missing"] and not train["unmapped"], train
    assert train["max_rel_err"] < 1e-5 and train["max_grad_rel_err"] < 1e-5
    # keras-hub compiles its tasks (Adam, 2e-5): five steps of training.py
    # land where Keras's do, the untied token table's lookup gradient
    # taken row by row as Keras's Adam takes it
    assert train["passed"], train
    if case == "k3_hub_phi3_causal_lm":
        assert train["trajectory"]["passed"], train["trajectory"]


def test_gemma2_options_are_written():
    conv = migrate.convert(MODELS / "k3_hub_gemma2_causal_lm" / "model.keras")
    src = conv.source
    # one block class for the windowed layers, one for the others
    assert "class GemmaDecoderBlock(nn.Module)" in src
    assert "class GemmaDecoderBlock2(nn.Module)" in src
    assert "sliding_window=3" in src and "logit_soft_cap=20.0" in src
    assert "torch.tanh(scores / cap) * cap" in src
    assert "self.post_ffw_norm" in src and "self.post_attention_norm" in src
    assert "torch.tanh(" in src.split("def forward")[-1]  # final soft cap
    assert any(k.endswith("post_ffw_norm.weight") for k in conv.state_dict)
    entry = next(e for e in conv.weight_map()
                 if e["torch"].endswith("pre_ffw_norm.weight"))
    assert "1 + scale" in entry["transform"]


def test_keras_rms_normalization_is_not_gemmas():
    """Keras's own RMSNormalization multiplies by scale, Gemma's by
    1 + scale: the module of the class decides which rule converts it."""
    from migrate.graph import Layer
    from migrate.rules.registry import lookup
    keras_norm = Layer("n", "RMSNormalization", {}, "keras.layers")
    gemma_norm = Layer("n", "RMSNormalization", {},
                       "keras_hub.src.models.gemma.rms_normalization",
                       "RMSNormalization")
    assert lookup(keras_norm).name == "rms_norm"
    assert lookup(gemma_norm).name == "gemma_rms_norm"


@pytest.mark.parametrize("case", ["k3_hub_vit_backbone",
                                  "k3_hub_vit_classifier"])
def test_vit_expansion_is_the_graph_keras_hub_builds(case):
    _same_graph(case)


def test_vit_port_takes_channels_first_images():
    conv = migrate.convert(MODELS / "k3_hub_vit_classifier" / "model.keras")
    assert conv.program.inputs[0].torch_shape == (None, 3, 16, 16)
    src = conv.source
    assert "for block in self.encoder_layers:" in src
    assert "self.class_token" in src and "nn.Conv2d(num_channels" in src


def test_bart_expansion_is_the_graph_keras_hub_builds():
    _same_graph("k3_hub_bart_seq2seq_lm")


def test_bart_port_shares_one_token_embedding():
    conv = migrate.convert(MODELS / "k3_hub_bart_seq2seq_lm" / "model.keras")
    assert [k for k in conv.state_dict if "token_embedding" in k] == \
        ["token_embedding.weight"]
    assert "encoder_padding_mask=" in conv.source  # cross-attention mask


@pytest.mark.slow
@pytest.mark.parametrize("case", ["k3_hub_gpt2_causal_lm",
                                  "k3_hub_llama3_causal_lm",
                                  "k3_hub_phi3_causal_lm",
                                  "k3_hub_gemma2_causal_lm",
                                  "k3_hub_gemma3_backbone",
                                  "k3_hub_gemma3_causal_lm",
                                  "k3_hub_resnet_v1_classifier",
                                  "k3_hub_vit_classifier",
                                  "k3_hub_whisper_backbone"])
def test_keras_hub_ports_export_with_a_dynamic_batch(case):
    import torch
    from torch.export import Dim, export
    conv = migrate.convert(MODELS / case / "model.keras")
    model = conv.module().eval()
    args = []
    for t in conv.program.inputs:
        shape = [3] + [8 if d is None else d for d in t.torch_shape[1:]]
        args.append(torch.ones(shape, dtype=torch.int32)
                    if t.dtype.startswith("int") else torch.randn(shape))
    batch = Dim("batch", min=1, max=64)
    program = export(model, tuple(args),
                     dynamic_shapes=tuple({0: batch} for _ in args))
    small = [a[:2] for a in args]
    got, want = program.module()(*small), model(*small)
    if isinstance(want, torch.Tensor):  # one output, or several
        got, want = (got,), (want,)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b)


def test_gemma3_local_and_global_layers_are_written():
    conv = migrate.convert(MODELS / "k3_hub_gemma3_backbone" / "model.keras")
    src = conv.source
    assert src.count("class Gemma3DecoderBlock(nn.Module)") == 1
    assert "class Gemma3DecoderBlock2(nn.Module)" in src  # the global one
    assert "self.query_norm = nn.RMSNorm(head_dim, eps=1e-06)" in src
    assert "max_wavelength=1000000.0" in src  # layer 5 is global
    assert "sliding_window=4" in src
    lm = migrate.convert(MODELS / "k3_hub_gemma3_causal_lm" / "model.keras")
    assert "scaling_factor=2.0" in lm.source
    assert "scaling_factor=8.0" in lm.source
    assert "query_norm" not in lm.source
    assert "torch.tanh(scores / cap) * cap" in lm.source


def test_gemma3_vision_tower_is_refused_by_name():
    from migrate.errors import ConversionError
    from migrate.read.expand import expand
    entry = {"class_name": "Gemma3Backbone",
             "registered_name": "keras_hub>Gemma3Backbone",
             "config": {"vision_encoder": {"class_name": "Gemma3Vision"}}}
    with pytest.raises(ConversionError, match="vision_encoder"):
        expand(entry, "m")


def test_whisper_port_has_no_key_bias_and_a_frozen_position_table():
    conv = migrate.convert(MODELS / "k3_hub_whisper_backbone" / "model.keras")
    src = conv.source
    assert src.count("class WhisperAttention(nn.Module)") == 1
    assert "class Attention(nn.Module)" not in src
    assert "num_heads * key_dim, bias=False)" in src
    # the Padder's (1, 1) on (B, C, T), folded into the valid conv after it
    assert "nn.Conv1d(\n            16, 16, kernel_size=3, stride=2, " \
        "padding=1\n        )" in src
    keys = list(conv.state_dict)
    assert any(k.endswith("self_attention.query.bias") for k in keys)
    assert not any(k.endswith(".key.bias") for k in keys)
    assert any(k.endswith("cross_attention.key.weight") for k in keys)
    # OpenAI's layout: mel features (B, n_mels, T)
    features = next(t for t in conv.program.inputs
                    if t.name == "encoder_features")
    assert features.torch_shape == (None, 10, None)
    model = conv.module()
    assert not model.encoder_position_embedding.weight.requires_grad


@pytest.mark.keras
@pytest.mark.slow
@pytest.mark.skipif(not HAS_HUB, reason="keras-hub is not installed")
def test_whisper_trains_as_keras_to_float32_rounding():
    """Outputs and every gradient against keras-hub in training mode.
    Measured: outputs 5.4e-7, gradients 1.24e-5 relative at most (the
    decoder's cross-attention queries); the port's own float32 gradients
    differ from its float64 ones by 1.4e-5 relative there, so that is
    float32 rounding through the two stacks, not a different function."""
    case = MODELS / "k3_hub_whisper_backbone" / "model.keras"
    conv = migrate.convert(case)
    training = migrate.verify(case, conv, training=True)["training"]
    assert not training["missing"] and not training["unmapped"]
    assert training["max_rel_err"] < 1e-5
    assert training["max_grad_rel_err"] < 3e-5, training
