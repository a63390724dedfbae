"""FNet: FNetBackbone and FNetTextClassifier, as keras-hub 0.32 builds them
(``keras_hub/src/models/f_net/``): BERT-style embeddings (projected), then
``FNetEncoder`` blocks (Fourier mixing, no attention, so no padding mask
input), a tanh-pooled first token."""
from __future__ import annotations

from ...read.expand import expander
from .config import dim, layers, rate
from .encoders import GELU_APPROXIMATE, _classifier
from .functional import SLICE, Functional


@expander("keras_hub>FNetBackbone", "keras_nlp>FNetBackbone")
def f_net_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    inter = dim(cfg, "intermediate_dim")
    length = dim(cfg, "max_sequence_length", 512)
    segments = dim(cfg, "num_segments", 4)
    dropout = rate(cfg, "dropout", 0.1)
    g = Functional(cfg, "f_net_backbone")
    token_ids = g.input("token_ids", (None,), "int32")
    segment_ids = g.input("segment_ids", (None,), "int32")
    tokens = g.layer("ReversibleEmbedding", "token_embedding",
                     {"input_dim": vocab, "output_dim": hidden,
                      "tie_weights": True}, token_ids)
    positions = g.hub("PositionEmbedding", "position_embedding",
                      {"sequence_length": length}, tokens)
    segment = g.layer("Embedding", "segment_embedding",
                      {"input_dim": segments, "output_dim": hidden},
                      segment_ids)
    x = g.layer("Add", "embeddings_add", {}, [tokens, positions, segment])
    x = g.layer("LayerNormalization", "embeddings_layer_norm",
                {"axis": [-1], "epsilon": 1e-12}, x)
    x = g.layer("Dense", "embedding_projection", {"units": hidden}, x)
    x = g.layer("Dropout", "embeddings_dropout", {"rate": dropout}, x)
    for i in range(layers(cfg)):
        x = g.hub("FNetEncoder", f"f_net_layer_{i}", {
            "intermediate_dim": inter, "dropout": dropout,
            "activation": GELU_APPROXIMATE, "layer_norm_epsilon": 1e-12}, x)
    cls = g.op("GetItem", x, [SLICE, 0, SLICE])
    pooled = g.layer("Dense", "pooled_dense",
                     {"units": hidden, "activation": "tanh"}, cls)
    return g.build({"sequence_output": x, "pooled_output": pooled},
                   {"token_ids": token_ids, "segment_ids": segment_ids})


@expander("keras_hub>FNetTextClassifier", "keras_nlp>FNetTextClassifier",
          "keras_hub>FNetClassifier", "keras_nlp>FNetClassifier")
def f_net_text_classifier(cfg: dict) -> dict:
    return _classifier(cfg, "f_net_text_classifier",
                       ("token_ids", "segment_ids"), "pooled", 0.1)
