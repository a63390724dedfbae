"""BART: BartBackbone and BartSeq2SeqLM, as keras-hub 0.32 builds them
(``keras_hub/src/models/bart/``): one token embedding for encoder and
decoder, learned positions, post-norm TransformerEncoder blocks and
TransformerDecoder blocks with cross-attention to the encoder output; the
LM head is the token embedding, reversed."""
from __future__ import annotations

from ...read.expand import expander
from ...read.inline import SHARED
from .config import backbone, dim, layers, rate
from .functional import Functional, Ref

_INPUTS = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
           "decoder_padding_mask")


@expander("keras_hub>BartBackbone", "keras_nlp>BartBackbone")
def bart_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    length = dim(cfg, "max_sequence_length", 1024)
    dropout = rate(cfg, "dropout", 0.1)
    n = layers(cfg)
    g = Functional(cfg, "bart_backbone")
    refs = {name: g.input(name, (None,), "int32") for name in _INPUTS}
    block = {"intermediate_dim": inter, "num_heads": heads,
             "dropout": dropout, "activation": "gelu",
             "layer_norm_epsilon": 1e-05}

    def embed(side, ids, first):
        tokens = (g.layer("ReversibleEmbedding", "token_embedding",
                          {"input_dim": vocab, "output_dim": hidden,
                           "tie_weights": True}, ids) if first
                  else g.call("token_embedding", ids))
        positions = g.hub("PositionEmbedding", f"{side}_position_embedding",
                          {"sequence_length": length}, tokens)
        x = g.layer("Add", f"{side}_embeddings_add", {}, [tokens, positions])
        x = g.layer("LayerNormalization", f"{side}_embeddings_layer_norm",
                    {"axis": [-1], "epsilon": 1e-05}, x)
        return g.layer("Dropout", f"{side}_embeddings_dropout",
                       {"rate": dropout}, x)

    x = embed("encoder", refs["encoder_token_ids"], True)
    for i in range(n):
        x = g.hub("TransformerEncoder", f"transformer_encoder_layer_{i}",
                  dict(block, normalize_first=False), x,
                  padding_mask=refs["encoder_padding_mask"])
    encoder_output = x
    x = embed("decoder", refs["decoder_token_ids"], False)
    for i in range(n):
        x = g.hub("TransformerDecoder", f"transformer_decoder_layer_{i}",
                  dict(block, normalize_first=False),
                  decoder_sequence=x, encoder_sequence=encoder_output,
                  decoder_padding_mask=refs["decoder_padding_mask"],
                  encoder_padding_mask=refs["encoder_padding_mask"])
    return g.build({"encoder_sequence_output": encoder_output,
                    "decoder_sequence_output": x}, refs)


@expander("keras_hub>BartSeq2SeqLM", "keras_nlp>BartSeq2SeqLM")
def bart_seq2seq_lm(cfg: dict) -> dict:
    entry = backbone(cfg)
    name = entry["config"]["name"]
    g = Functional(cfg, cfg.get("name") or "bart_seq2seq_lm")
    refs = {k: g.input(k, (None,), "int32") for k in _INPUTS}
    out = g.model(entry, refs)
    names = sorted(["encoder_sequence_output", "decoder_sequence_output"])
    hidden = Ref(out.layer, out.node, names.index("decoder_sequence_output"))
    logits = g.layer("ReversibleEmbedding", "token_embedding",
                     {SHARED: f"{name}/token_embedding"}, hidden,
                     reverse=True)
    return g.build(logits, refs, names=["logits"])
