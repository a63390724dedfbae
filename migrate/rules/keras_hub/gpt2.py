"""GPT-2: GPT2Backbone and GPT2CausalLM, as keras-hub 0.32 builds them
(``keras_hub/src/models/gpt2/``)."""
from __future__ import annotations

from ...read.expand import expander
from ...read.inline import SHARED
from .config import backbone, dim, layers, rate
from .functional import Functional


@expander("keras_hub>GPT2Backbone", "keras_nlp>GPT2Backbone")
def gpt2_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    length = dim(cfg, "max_sequence_length", 1024)
    dropout = rate(cfg, "dropout", 0.1)
    g = Functional(cfg, "gpt2_backbone")
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    tokens = g.layer("ReversibleEmbedding", "token_embedding",
                     {"input_dim": vocab, "output_dim": hidden,
                      "tie_weights": True}, token_ids)
    positions = g.hub("PositionEmbedding", "position_embedding",
                      {"sequence_length": length}, tokens)
    x = g.layer("Add", "embeddings_add", {}, [tokens, positions])
    x = g.layer("Dropout", "embeddings_dropout", {"rate": dropout}, x)
    for i in range(layers(cfg)):
        x = g.hub("TransformerDecoder", f"transformer_layer_{i}", {
            "intermediate_dim": inter, "num_heads": heads,
            "dropout": dropout, "activation": "keras_hub>gelu_approximate",
            "layer_norm_epsilon": 1e-05, "normalize_first": True},
            x, decoder_padding_mask=padding_mask)
    x = g.layer("LayerNormalization", "layer_norm",
                {"axis": [-1], "epsilon": 1e-05}, x)
    return g.build(x, {"token_ids": token_ids, "padding_mask": padding_mask},
                   names=["sequence_output"])


def causal_lm(cfg: dict, default_name: str, keyword: bool = False) -> dict:
    """A CausalLM head on any backbone with a ``token_embedding``
    (ReversibleEmbedding): logits from the tied embedding.  ``keyword``:
    the task calls ``backbone(inputs=...)``, as Gemma 3's does."""
    entry = backbone(cfg)
    name = entry["config"]["name"]
    g = Functional(cfg, cfg.get("name") or default_name)
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    hidden = g.model(entry, inputs=inputs) if keyword \
        else g.model(entry, inputs)
    logits = g.layer("ReversibleEmbedding", "token_embedding",
                     {SHARED: f"{name}/token_embedding"}, hidden,
                     reverse=True)
    return g.build(logits, inputs, names=["logits"])


@expander("keras_hub>GPT2CausalLM", "keras_nlp>GPT2CausalLM")
def gpt2_causal_lm(cfg: dict) -> dict:
    return causal_lm(cfg, "gpt2_causal_lm")
