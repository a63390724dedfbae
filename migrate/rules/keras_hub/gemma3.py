"""Gemma 3 (text): Gemma3Backbone and Gemma3CausalLM, as keras-hub 0.32
builds them (``keras_hub/src/models/gemma3/``).

What Gemma 3 changes from Gemma 2 (:mod:`.gemma`), each followed here:

* queries and keys are RMS-normalised per head (``1 + scale``, epsilon
  1e-6 whatever ``layer_norm_epsilon`` says: the block does not pass it on)
  before the rotation, when ``use_query_key_norm``;
* five local layers then one global (``i % 6 < 5`` is local when
  ``use_sliding_window_attention``): local layers rotate with wavelength
  10000 and ``local_rope_scaling_factor``, global ones with 1000000 and
  ``global_rope_scaling_factor``; without sliding windows every layer is
  global;
* the GeGLU feedforward is ``intermediate_dim`` wide (``gate_dim_reduction``
  1);
* the block builds its attention with ``query_head_dim_normalize=True``
  whatever the backbone says, so scores scale by ``head_dim ** -0.5``;
* dropout acts on the attention weights and the attention output only (the
  feedforward dropout keras-hub creates is never called).

A vision encoder, bidirectional attention and the embedding-model head are
refused by name.
"""
from __future__ import annotations

from ...errors import ConversionError
from ...read.expand import expander
from ..registry import rule
from .config import dim, layers, number
from .functional import Functional
from .gemma import Family, decoder_block
from .gpt2 import causal_lm


GEMMA3 = Family("Gemma 3", "Gemma3DecoderBlock", "Gemma3Attention",
                rope_args=True, window=1024, halve=False)


@rule("keras_hub>Gemma3DecoderBlock", masks="consume")
def gemma3_decoder_block(call):
    """nn.Module: a `Gemma3DecoderBlock` class (q/k norm, RoPE, GQA)"""
    if call.config.get("use_bidirectional_attention"):
        call.refuse("use_bidirectional_attention=True",
                    "EmbeddingGemma's bidirectional attention is not "
                    "converted yet")
    if call.node.kwargs.get("vision_mask") is not None:
        call.refuse("vision_mask", "the vision tower is not supported yet")
    return decoder_block(call, GEMMA3)


_BLOCK_KEYS = ["intermediate_dim", "head_dim", "num_query_heads",
               "num_key_value_heads", "query_head_dim_normalize",
               "use_query_key_norm", "use_post_ffw_norm",
               "use_post_attention_norm", "sliding_window_size", "dropout",
               "use_bidirectional_attention"]


@expander("keras_hub>Gemma3Backbone")
def gemma3_backbone(cfg: dict) -> dict:
    if cfg.get("vision_encoder") is not None:
        raise ConversionError(
            "vision_encoder: Gemma 3's vision tower is not supported yet "
            "(a text-only Gemma3Backbone, vision_encoder=None, converts)")
    if cfg.get("is_embedding_model"):
        raise ConversionError(
            "is_embedding_model=True: EmbeddingGemma's pooling head is not "
            "supported yet")
    if cfg.get("use_bidirectional_attention"):
        raise ConversionError(
            "use_bidirectional_attention=True: EmbeddingGemma's "
            "bidirectional attention is not supported yet")
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    local_scale = number(cfg, "local_rope_scaling_factor", 1.0)
    global_scale = number(cfg, "global_rope_scaling_factor", 1.0)
    for k in ("intermediate_dim", "head_dim", "num_query_heads",
              "num_key_value_heads"):
        dim(cfg, k)
    g = Functional(cfg, "gemma3_backbone")
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    x = g.layer("ReversibleEmbedding", "token_embedding",
                {"input_dim": vocab, "output_dim": hidden,
                 "tie_weights": True,
                 "logit_soft_cap": cfg.get("final_logit_soft_cap")},
                token_ids)
    scale = {"class_name": "__tensor__",
             "config": {"value": float(hidden) ** 0.5, "dtype": "float32"}}
    x = g.op("Multiply", x, scale)
    window = bool(cfg.get("use_sliding_window_attention", False))
    base = {k: cfg[k] for k in _BLOCK_KEYS if k in cfg}
    # the blocks keep their own epsilon (1e-6): the backbone passes only
    # the final norm's
    base.update(logit_soft_cap=cfg.get("attention_logit_soft_cap"),
                gate_dim_reduction=1)
    for i in range(layers(cfg)):
        local = window and i % 6 < 5  # five local layers, then one global
        block = dict(base, hidden_dim=hidden,
                     use_sliding_window_attention=local,
                     rope_wavelength=10000.0 if local else 1000000.0,
                     rope_scaling_factor=local_scale if local
                     else global_scale)
        x = g.layer("Gemma3DecoderBlock", f"decoder_block_{i}", block, x,
                    module="keras_hub.src.models.gemma3.gemma3_decoder_block",
                    registered="Gemma3DecoderBlock",
                    padding_mask=padding_mask, vision_mask=None)
    x = g.layer("RMSNormalization", "final_normalization", {"epsilon": eps},
                x, module="keras_hub.src.models.gemma3.gemma3_layers",
                registered="RMSNormalization")
    return g.build(x, {"token_ids": token_ids, "padding_mask": padding_mask},
                   names=["sequence_output"])


@expander("keras_hub>Gemma3CausalLM")
def gemma3_causal_lm(cfg: dict) -> dict:
    # keras-hub calls this backbone as ``backbone(inputs=inputs)``
    return causal_lm(cfg, "gemma3_causal_lm", keyword=True)
