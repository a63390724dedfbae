"""The graph IR every reader produces and every later stage consumes.

A Keras model (Sequential, Functional, nested in any combination) becomes one
flat :class:`Graph`: a list of :class:`Node` in topological order, each node a
call of a :class:`Layer` on tensors.  A layer called several times (a shared
layer, or a nested model called twice) is one ``Layer`` with several nodes.
Nested models are inlined: their layers become layers of the outer graph with
``scope`` naming the models they sit in.

Keras 2 / Keras 3 config differences are normalised by the reader, so the
rest of the converter sees one shape of config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .weights import LayerWeights


@dataclass(frozen=True)
class TensorRef:
    """Output ``index`` of node ``node`` (a :attr:`Node.id`)."""

    node: str
    index: int = 0


@dataclass
class Layer:
    """One Keras layer object (possibly called several times)."""

    name: str  # unique in the graph: "conv1", or "inner/conv1" when nested
    class_name: str
    config: dict
    module: str | None = None  # "keras.layers", "keras.src.ops.numpy", ...
    registered_name: str | None = None
    weights: LayerWeights = field(default_factory=LayerWeights)

    @property
    def keras_name(self) -> str:
        """The name Keras gave the layer (may itself contain "/")."""
        return str(self.config.get("name") or self.name.rsplit("/", 1)[-1])

    @property
    def is_op(self) -> bool:
        """Keras 3 op node (``keras.src.ops.*``), not a layer."""
        return bool(self.module) and self.module.startswith("keras.src.ops")


@dataclass
class Node:
    """One call of ``layer``.

    ``args``/``kwargs`` keep the call's structure: tensors appear as
    :class:`TensorRef`, anything else as plain JSON values (constants such as
    ``3.0`` in ``x + 3.0``).  ``inputs`` lists the tensor arguments in order.
    """

    id: str
    layer: Layer
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    num_outputs: int = 1

    @property
    def inputs(self) -> list[TensorRef]:
        # Collected once (a graph's calls are not changed after reading;
        # a rule that needs another call makes one, dataclasses.replace);
        # translating asks for them about ten times per node.
        cached = self.__dict__.get("_inputs")
        if cached is None:
            cached = []
            _collect(self.args, cached)
            _collect(self.kwargs, cached)
            self.__dict__["_inputs"] = cached
        return list(cached)


def _collect(value: Any, out: list) -> None:
    if isinstance(value, TensorRef):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out)


@dataclass
class GraphInput:
    name: str  # the InputLayer's name
    shape: tuple  # Keras shape including batch (None for unknown dims)
    dtype: str
    ref: TensorRef
    batch: int | None = None  # Input(batch_size=...): Keras runs only it


@dataclass
class GraphOutput:
    name: str  # name of the layer producing it
    ref: TensorRef


@dataclass
class Graph:
    name: str
    inputs: list[GraphInput]
    outputs: list[GraphOutput]
    nodes: list[Node]  # topological order; InputLayers are not nodes
    keras_version: str = ""
    source_format: str = ""
    # the library class a model was expanded from ("GPT2CausalLM"), which
    # names the port's class; "" for Sequential / Functional models
    class_name: str = ""

    @property
    def keras_major(self) -> int:
        head = self.keras_version.split(".", 1)[0]
        return int(head) if head.isdigit() else 3

    def layers(self) -> list[Layer]:
        """Distinct layers in order of first call."""
        seen: dict[str, Layer] = {}
        for node in self.nodes:
            seen.setdefault(node.layer.name, node.layer)
        return list(seen.values())

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def consumers(self) -> dict[TensorRef, list[Node]]:
        uses: dict[TensorRef, list[Node]] = {}
        for n in self.nodes:
            for ref in n.inputs:
                uses.setdefault(ref, []).append(n)
        return uses
