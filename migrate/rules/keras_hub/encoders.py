"""The BERT-like encoders: DistilBERT, RoBERTa, XLM-RoBERTa, ELECTRA and
ALBERT backbones and their text classifiers, as keras-hub 0.32 builds
them (``keras_hub/src/models/{distil_bert,roberta,xlm_roberta,electra,
albert}/``).

All run keras-hub's post-norm ``TransformerEncoder`` on the padding mask;
they differ in their embeddings (DistilBERT and RoBERTa: one
``TokenAndPositionEmbedding`` and no segments; ELECTRA and ALBERT: token,
position and segment embeddings, projected when ``embedding_dim`` differs
from ``hidden_dim``), their epsilons and activations, and their heads.
ALBERT shares its layers across depth: ``num_groups`` groups of
``num_inner_repetitions`` layers, each group run ``num_layers //
num_groups`` times, so one ``TransformerEncoder`` is called several times
(one module, its weights stored once).
"""
from __future__ import annotations

from ...errors import ConversionError
from ...read.expand import expander
from .bert import _activation
from .config import backbone, dim, layers, rate
from .functional import SLICE, Functional, Ref

GELU_APPROXIMATE = "keras_hub>gelu_approximate"


def _encoder(g: Functional, name: str, x: Ref, padding_mask: Ref, *,
             inter: int, heads: int, dropout: float, activation: str,
             eps: float) -> Ref:
    return g.hub("TransformerEncoder", name, {
        "intermediate_dim": inter, "num_heads": heads, "dropout": dropout,
        "activation": activation, "layer_norm_epsilon": eps,
        "normalize_first": False}, x, padding_mask=padding_mask)


# -- DistilBERT, RoBERTa, XLM-RoBERTa: one TokenAndPositionEmbedding ---
def _roberta_like(cfg: dict, default_name: str, embedding_name: str,
                  eps: float) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    length = dim(cfg, "max_sequence_length", 512)
    dropout = rate(cfg, "dropout", 0.1)
    g = Functional(cfg, default_name)
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    x = g.hub("TokenAndPositionEmbedding", embedding_name, {
        "vocabulary_size": vocab, "sequence_length": length,
        "embedding_dim": hidden, "tie_weights": True, "mask_zero": False},
        token_ids)
    x = g.layer("LayerNormalization", "embeddings_layer_norm",
                {"axis": [-1], "epsilon": eps}, x)
    x = g.layer("Dropout", "embeddings_dropout", {"rate": dropout}, x)
    for i in range(layers(cfg)):
        x = _encoder(g, f"transformer_layer_{i}", x, padding_mask,
                     inter=inter, heads=heads, dropout=dropout,
                     activation="gelu", eps=eps)
    return g.build(x, {"token_ids": token_ids, "padding_mask": padding_mask},
                   names=["sequence_output"])


@expander("keras_hub>DistilBertBackbone", "keras_nlp>DistilBertBackbone")
def distil_bert_backbone(cfg: dict) -> dict:
    return _roberta_like(cfg, "distil_bert_backbone",
                         "token_and_position_embedding", 1e-12)


@expander("keras_hub>RobertaBackbone", "keras_nlp>RobertaBackbone")
def roberta_backbone(cfg: dict) -> dict:
    return _roberta_like(cfg, "roberta_backbone", "embeddings", 1e-5)


@expander("keras_hub>XLMRobertaBackbone", "keras_nlp>XLMRobertaBackbone")
def xlm_roberta_backbone(cfg: dict) -> dict:
    return _roberta_like(cfg, "xlm_roberta_backbone", "embeddings", 1e-5)


# -- ELECTRA and ALBERT: token + position + segment embeddings -----------
def _segment_embeddings(g: Functional, cfg: dict, vocab: int, width: int,
                        dropout: float):
    length = dim(cfg, "max_sequence_length", 512)
    segments = dim(cfg, "num_segments", 2)
    token_ids = g.input("token_ids", (None,), "int32")
    segment_ids = g.input("segment_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    tokens = g.layer("ReversibleEmbedding", "token_embedding",
                     {"input_dim": vocab, "output_dim": width,
                      "tie_weights": True}, token_ids)
    positions = g.hub("PositionEmbedding", "position_embedding",
                      {"sequence_length": length}, tokens)
    segment = g.layer("Embedding", "segment_embedding",
                      {"input_dim": segments, "output_dim": width},
                      segment_ids)
    x = g.layer("Add", "embeddings_add", {}, [tokens, positions, segment])
    x = g.layer("LayerNormalization", "embeddings_layer_norm",
                {"axis": [-1], "epsilon": 1e-12}, x)
    x = g.layer("Dropout", "embeddings_dropout", {"rate": dropout}, x)
    inputs = {"token_ids": token_ids, "segment_ids": segment_ids,
              "padding_mask": padding_mask}
    return x, inputs


def _pooled(g: Functional, x: Ref, hidden: int, inputs: dict) -> dict:
    cls = g.op("GetItem", x, [SLICE, 0, SLICE])
    pooled = g.layer("Dense", "pooled_dense",
                     {"units": hidden, "activation": "tanh"}, cls)
    return g.build({"sequence_output": x, "pooled_output": pooled}, inputs)


@expander("keras_hub>ElectraBackbone", "keras_nlp>ElectraBackbone")
def electra_backbone(cfg: dict) -> dict:
    # keras-hub names it vocab_size here (vocabulary_size elsewhere)
    vocab = dim(cfg, "vocab_size" if "vocab_size" in cfg
                else "vocabulary_size")
    hidden, width = dim(cfg, "hidden_dim"), dim(cfg, "embedding_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    dropout = rate(cfg, "dropout", 0.1)
    g = Functional(cfg, "electra_backbone")
    x, inputs = _segment_embeddings(g, cfg, vocab, width, dropout)
    if hidden != width:
        x = g.layer("Dense", "embeddings_projection", {"units": hidden}, x)
    for i in range(layers(cfg)):
        x = _encoder(g, f"transformer_layer_{i}", x, inputs["padding_mask"],
                     inter=inter, heads=heads, dropout=dropout,
                     activation=GELU_APPROXIMATE, eps=1e-12)
    return _pooled(g, x, hidden, inputs)


@expander("keras_hub>AlbertBackbone", "keras_nlp>AlbertBackbone")
def albert_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    width = dim(cfg, "embedding_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    depth = layers(cfg)
    groups = layers(cfg, "num_groups") if "num_groups" in cfg else 1
    inner = layers(cfg, "num_inner_repetitions") \
        if "num_inner_repetitions" in cfg else 1
    if depth % groups:
        raise ConversionError(f"num_layers = {depth} is not divisible by "
                              f"num_groups = {groups}")
    dropout = rate(cfg, "dropout", 0.0)
    g = Functional(cfg, "albert_backbone")
    x, inputs = _segment_embeddings(g, cfg, vocab, width, dropout)
    x = g.layer("Dense", "embedding_projection", {"units": hidden}, x)
    padding_mask = inputs["padding_mask"]
    for group in range(groups):
        names = [f"group_{group}_inner_layer_{i}" for i in range(inner)]
        for repeat in range(depth // groups):
            for name in names:
                if repeat == 0:
                    x = _encoder(g, name, x, padding_mask, inter=inter,
                                 heads=heads, dropout=dropout,
                                 activation=GELU_APPROXIMATE, eps=1e-12)
                else:  # the same layer again: shared across depth
                    x = g.call(name, x, padding_mask=padding_mask)
    return _pooled(g, x, hidden, inputs)


# -- text classifiers ---------------------------------------------------
def _classifier(cfg: dict, default_name: str, inputs: tuple, head: str,
                dropout: float) -> dict:
    """The classifier heads of these models on the backbone's output:
    ``"cls"`` (DistilBERT: the first token through a relu Dense),
    ``"roberta"`` (dropout, a tanh Dense, on the first token), ``"pooled"``
    (ALBERT, FNet: the backbone's pooled output)."""
    entry = backbone(cfg)
    g = Functional(cfg, cfg.get("name") or default_name)
    refs = {name: g.input(name, (None,), "int32") for name in inputs}
    out = g.model(entry, refs)
    dropout = rate(cfg, "dropout", dropout)
    if head == "pooled":
        # the backbone's dict outputs, flattened as Keras does (sorted)
        x = Ref(out.layer, out.node, 0)  # "pooled_output"
    else:
        hidden = cfg.get("hidden_dim") or entry["config"].get("hidden_dim")
        hidden = dim({"hidden_dim": hidden}, "hidden_dim")
        x = g.op("GetItem", out, [SLICE, 0, SLICE])
        if head == "roberta":
            x = g.layer("Dropout", "pooled_dropout", {"rate": dropout}, x)
        x = g.layer("Dense", "pooled_dense", {
            "units": hidden,
            "activation": "relu" if head == "cls" else "tanh"}, x)
    x = g.layer("Dropout", "output_dropout", {"rate": dropout}, x)
    logits = g.layer("Dense", "logits", {
        "units": dim(cfg, "num_classes"), "activation": _activation(cfg)}, x)
    return g.build(logits, refs)


@expander("keras_hub>DistilBertTextClassifier",
          "keras_nlp>DistilBertTextClassifier",
          "keras_hub>DistilBertClassifier", "keras_nlp>DistilBertClassifier")
def distil_bert_text_classifier(cfg: dict) -> dict:
    return _classifier(cfg, "distil_bert_text_classifier",
                       ("token_ids", "padding_mask"), "cls", 0.2)


@expander("keras_hub>RobertaTextClassifier", "keras_nlp>RobertaTextClassifier",
          "keras_hub>RobertaClassifier", "keras_nlp>RobertaClassifier")
def roberta_text_classifier(cfg: dict) -> dict:
    return _classifier(cfg, "roberta_text_classifier",
                       ("token_ids", "padding_mask"), "roberta", 0.0)


@expander("keras_hub>XLMRobertaTextClassifier",
          "keras_nlp>XLMRobertaTextClassifier",
          "keras_hub>XLMRobertaClassifier", "keras_nlp>XLMRobertaClassifier")
def xlm_roberta_text_classifier(cfg: dict) -> dict:
    return _classifier(cfg, "xlm_roberta_text_classifier",
                       ("token_ids", "padding_mask"), "roberta", 0.0)


@expander("keras_hub>AlbertTextClassifier", "keras_nlp>AlbertTextClassifier",
          "keras_hub>AlbertClassifier", "keras_nlp>AlbertClassifier")
def albert_text_classifier(cfg: dict) -> dict:
    return _classifier(cfg, "albert_text_classifier",
                       ("token_ids", "segment_ids", "padding_mask"),
                       "pooled", 0.1)
