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


def layer_params(layer) -> int:
    """Keras's parameter count of one :class:`migrate.graph.Layer`."""
    entries = layer.weights.entries
    n = sum(int(math.prod(e.array.shape)) for e in entries)
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


__all__ = ["layer_params", "model_params"]
