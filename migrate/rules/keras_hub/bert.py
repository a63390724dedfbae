"""BERT: BertBackbone and BertTextClassifier, as keras-hub 0.32 builds them
(``keras_hub/src/models/bert/``)."""
from __future__ import annotations

from ...errors import ConversionError
from ...read.expand import expander
from .config import backbone, dim, layers, rate
from .functional import SLICE, Functional, Ref


@expander("keras_hub>BertBackbone", "keras_nlp>BertBackbone")
def bert_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    length = dim(cfg, "max_sequence_length", 512)
    segments = dim(cfg, "num_segments", 2)
    dropout = rate(cfg, "dropout", 0.1)
    g = Functional(cfg, "bert_backbone")
    token_ids = g.input("token_ids", (None,), "int32")
    segment_ids = g.input("segment_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
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
    x = g.layer("Dropout", "embeddings_dropout", {"rate": dropout}, x)
    for i in range(layers(cfg)):
        x = g.hub("TransformerEncoder", f"transformer_layer_{i}", {
            "intermediate_dim": inter, "num_heads": heads,
            "dropout": dropout, "activation": "keras_hub>gelu_approximate",
            "layer_norm_epsilon": 1e-12, "normalize_first": False},
            x, padding_mask=padding_mask)
    cls = g.op("GetItem", x, [SLICE, 0, SLICE])
    pooled = g.layer("Dense", "pooled_dense",
                     {"units": hidden, "activation": "tanh"}, cls)
    return g.build({"sequence_output": x, "pooled_output": pooled},
                   {"token_ids": token_ids, "segment_ids": segment_ids,
                    "padding_mask": padding_mask})


def _activation(cfg: dict):
    value = cfg.get("activation")
    if value is None or isinstance(value, str):
        return value or "linear"
    if isinstance(value, dict) and value.get("class_name") == "function":
        return value.get("config")
    raise ConversionError(f"activation = {str(value)[:60]!r} is not a "
                          "function name")


def text_classifier(cfg: dict, default_name: str, inputs: tuple,
                    pooled: str = "pooled_output") -> dict:
    """Dropout and a Dense ``logits`` head on the backbone's pooled
    output (BERT-style classifiers)."""
    entry = backbone(cfg)
    g = Functional(cfg, cfg.get("name") or default_name)
    refs = {name: g.input(name, (None,), "int32") for name in inputs}
    outputs = g.model(entry, refs)
    # the backbone's outputs, flattened as Keras flattens its dict
    names = sorted(["sequence_output", "pooled_output"])
    x = Ref(outputs.layer, outputs.node, names.index(pooled))
    x = g.layer("Dropout", "classifier_dropout",
                {"rate": rate(cfg, "dropout", 0.1)}, x)
    logits = g.layer("Dense", "logits", {
        "units": dim(cfg, "num_classes"), "activation": _activation(cfg)}, x)
    return g.build(logits, refs)


@expander("keras_hub>BertTextClassifier", "keras_nlp>BertTextClassifier",
          "keras_hub>BertClassifier", "keras_nlp>BertClassifier")
def bert_text_classifier(cfg: dict) -> dict:
    return text_classifier(cfg, "bert_text_classifier",
                           ("token_ids", "segment_ids", "padding_mask"))
