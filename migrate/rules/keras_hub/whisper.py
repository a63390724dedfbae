"""Whisper: WhisperBackbone, as keras-hub 0.32 builds it
(``keras_hub/src/models/whisper/``).

The audio encoder: two Conv1D layers with exact GELU, the second one
stride 2 and "valid" after the ``Padder`` (one zero step at each end of
time), a frozen learned position embedding of ``max_encoder_sequence_length
// 2`` steps, pre-norm ``WhisperEncoder`` blocks, a final LayerNorm.  The
text decoder: token and position embeddings, pre-norm causal
``WhisperDecoder`` blocks with cross-attention to the encoder, a final
LayerNorm.  Both blocks are keras-hub's TransformerEncoder/Decoder with one
change: their attention's key projection has no bias
(``WhisperCachedMultiHeadAttention``).  Epsilon is 1e-5 everywhere; the
activation is exact GELU.
"""
from __future__ import annotations

from ...layout import channels_first
from ...read.expand import expander
from ..registry import rule
from ..reshaping import _zero_pad
from .config import dim, layers, rate
from .functional import Functional
from .transformer import _block

_MODULE = "keras_hub.src.models.whisper"


@rule("keras_hub>Padder", prefers=lambda cfg, rank: channels_first(rank))
def whisper_padder(call):
    """F.pad: one zero step at each end of time (Whisper's Padder)"""
    if call.inputs[0].rank != 3:
        call.refuse("inputs", "a (B, T, features) sequence is required")
    return _zero_pad(call, 1, pairs=[(1, 1)])


@rule("keras_hub>WhisperEncoder", masks="consume")
def whisper_encoder(call):
    """nn.Module: a `WhisperEncoder` block class (no key bias) around SDPA"""
    return _block(call, decoder=False, whisper=True)


@rule("keras_hub>WhisperDecoder", masks="consume")
def whisper_decoder(call):
    """nn.Module: a `WhisperDecoder` block class (no key bias) around SDPA"""
    return _block(call, decoder=True, whisper=True)


@expander("keras_hub>WhisperBackbone", "keras_nlp>WhisperBackbone")
def whisper_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    mels = dim(cfg, "num_mels", 80)
    encoder_length = dim(cfg, "max_encoder_sequence_length", 3000) // 2
    decoder_length = dim(cfg, "max_decoder_sequence_length", 448)
    if encoder_length < 1:
        raise ValueError("max_encoder_sequence_length must be at least 2")
    dropout = rate(cfg, "dropout", 0.0)
    n = layers(cfg)
    g = Functional(cfg, "whisper_backbone")
    features = g.input("encoder_features", (None, mels), "float32")
    token_ids = g.input("decoder_token_ids", (None,), "int32")
    padding_mask = g.input("decoder_padding_mask", (None,), "int32")
    block = {"num_heads": heads, "intermediate_dim": inter,
             "activation": "gelu", "layer_norm_epsilon": 1e-05,
             "dropout": dropout, "normalize_first": True}

    def conv(name, strides, padding, x):
        x = g.layer("Conv1D", f"encoder_token_embedding_conv_layer_{name}", {
            "filters": hidden, "kernel_size": [3], "strides": [strides],
            "padding": padding, "data_format": "channels_last",
            "dilation_rate": [1], "groups": 1, "activation": "linear",
            "use_bias": True}, x)
        return g.op("Gelu", x, module="keras.src.ops.nn",
                    options={"approximate": False})

    x = conv(1, 1, "same", features)
    x = g.layer("Padder", "encoder_padder", {}, x,
                module=f"{_MODULE}.whisper_backbone", registered="Padder")
    x = conv(2, 2, "valid", x)
    positions = g.hub("PositionEmbedding", "encoder_position_embedding",
                      {"sequence_length": encoder_length,
                       "trainable": False}, x)
    x = g.layer("Add", "encoder_embeddings_add", {}, [x, positions])
    x = g.layer("Dropout", "encoder_embeddings_dropout", {"rate": dropout},
                x)
    for i in range(n):
        x = g.layer("WhisperEncoder", f"transformer_encoder_layer_{i}",
                    block, x, module=f"{_MODULE}.whisper_encoder",
                    registered="keras_hub>WhisperEncoder")
    encoder_output = g.layer("LayerNormalization", "encoder_layer_norm",
                             {"axis": [-1], "epsilon": 1e-05}, x)
    x = g.hub("TokenAndPositionEmbedding",
              "decoder_token_and_position_embedding",
              {"vocabulary_size": vocab, "sequence_length": decoder_length,
               "embedding_dim": hidden, "mask_zero": False}, token_ids)
    x = g.layer("Dropout", "decoder_embeddings_dropout", {"rate": dropout},
                x)
    for i in range(n):
        x = g.layer("WhisperDecoder", f"transformer_decoder_layer_{i}",
                    block, module=f"{_MODULE}.whisper_decoder",
                    registered="keras_hub>WhisperDecoder",
                    decoder_sequence=x, encoder_sequence=encoder_output,
                    decoder_padding_mask=padding_mask)
    x = g.layer("LayerNormalization", "decoder_layer_norm",
                {"axis": [-1], "epsilon": 1e-05}, x)
    return g.build({"encoder_sequence_output": encoder_output,
                    "decoder_sequence_output": x},
                   {"encoder_features": features,
                    "decoder_token_ids": token_ids,
                    "decoder_padding_mask": padding_mask})
