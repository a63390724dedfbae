"""Parameter counts, one definition everywhere: Keras's own.

A layer's count is what ``layer.count_params()`` and ``model.summary()``
give: the size of every variable the layer stores, trainable and not.
So BatchNormalization counts 4 x C (gamma, beta, moving mean and
variance), an LSTM/GRU its Keras variables (one bias, not torch's second
``bias_hh``), and torch-only buffers such as ``num_batches_tracked`` never
count.  A shared layer counts once for the model, however often it is
called.  A layer with LoRA enabled (Keras 3 ``lora_rank``) also counts its
``lora_kernel_a`` and ``lora_kernel_b``, as Keras does, although its file
holds only the merged kernel.
"""
from __future__ import annotations

import math


def tracked(layer) -> list[str]:
    """Graph names of the other layers whose variables Keras also counts in
    this layer's ``count_params()``: keras-hub's MaskedLMHead tracks the
    token embedding it is given (its file holds only its own variables)."""
    cfg = layer.config
    if not layer.class_name.endswith("MaskedLMHead"):
        return []
    if isinstance(cfg.get("_tied_embedding"), str):  # an expander's
        return [cfg["_tied_embedding"]]
    embedding = cfg.get("token_embedding")
    if isinstance(embedding, dict):  # a user's Functional model
        name = (embedding.get("config") or {}).get("name")
        return [name] if isinstance(name, str) else []
    return []


def _token_table(layer) -> int:
    """The size of an embedding's token table: all of a plain embedding, the
    ``token_embedding`` sub-layer of a TokenAndPositionEmbedding."""
    entries = layer.weights.entries
    token = [e for e in entries if "token_embedding" in e.key]
    return sum(int(math.prod(e.array.shape)) for e in token or entries)


def layer_params(layer, graph=None) -> int:
    """Keras's parameter count of one :class:`migrate.graph.Layer`
    (``graph``: its model's graph, for a layer that counts another's)."""
    entries = layer.weights.entries
    n = sum(int(math.prod(e.array.shape)) for e in entries)
    names = tracked(layer) if graph is not None else []
    if names:
        others = {other.name: other for other in graph.layers()}
        for name in names:
            if name in others and name != layer.name:
                n += _token_table(others[name])
    rank = layer.config.get("lora_rank")
    if isinstance(rank, int) and rank > 0 and entries:
        # lora_kernel_a: kernel.shape[:-1] + (rank,); lora_kernel_b:
        # (rank, kernel.shape[-1]) -- Dense, EinsumDense, Conv, Embedding
        kernel = next((e for e in entries if e.key.rsplit("/", 1)[-1] in (
            "kernel", "embeddings", "0")), entries[0]).array.shape
        if kernel:
            n += rank * (int(math.prod(kernel[:-1])) + int(kernel[-1]))
    return n


def model_params(layers) -> int:
    """Keras's count for a model: each distinct layer once."""
    seen: dict[str, int] = {}
    for layer in layers:
        seen.setdefault(layer.name, layer_params(layer))
    return sum(seen.values())


__all__ = ["layer_params", "model_params", "tracked"]
