"""The ops of ``migrate/rules/ops_more.py``: what they refuse (parity with
Keras 3 op nodes and tf.keras TFOpLambda is proven by the ``ops_more``
fixtures through test_parity)."""
import pytest

import migrate
from migrate.graph import Graph, GraphInput, GraphOutput, Layer, Node
from migrate.graph import TensorRef
from migrate.translate import translate


def _refusal(cls, config, args, shape=(None, 4, 5), module="numpy"):
    layer = Layer("op", cls, dict(config, name="op"),
                  module=f"keras.src.ops.{module}")
    x = GraphInput("x", shape, "float32", TensorRef("x", 0))
    node = Node("op", layer, args=args)
    graph = Graph("g", [x], [GraphOutput("op", TensorRef("op", 0))], [node],
                  keras_version="3.15.1")
    with pytest.raises(migrate.UnsupportedLayers) as info:
        translate(graph)
    (_, _, why), = info.value.problems
    return why


X = TensorRef("x", 0)


@pytest.mark.parametrize("cls, config, args, why", [
    ("Cumsum", {"axis": None}, [X], "Keras flattens"),
    ("Argmax", {"axis": None}, [X], "Keras flattens"),
    ("Stack", {"axis": 0}, [[X, X]], "batch size"),
    ("Tile", {"repeats": [2, 1, 1]}, [X], "tiling the batch axis"),
    ("Pad", {"pad_width": [[0, 0], [1, 1], [0, 0]], "mode": "symmetric"},
     [X], "no symmetric mode"),
    ("Pad", {"pad_width": [[0, 0], [4, 1], [0, 0]], "mode": "reflect"}, [X],
     "narrower than the axis"),
    ("Pad", {"pad_width": [[1, 0], [1, 1], [0, 0]]}, [X],
     "padding the batch axis"),
    ("Einsum", {"subscripts": "...ij,...jk"}, [X, X], "no ellipsis"),
    ("Einsum", {"subscripts": "bij;import os"}, [X], "letters, commas"),
    ("Einsum", {"subscripts": "bi,bi->b"}, [X, X], "do not fit"),
    ("Prod", {"axis": [1, 2]}, [X], "prod over one axis"),
    ("Split", {"indices_or_sections": 2, "axis": -1}, [X],
     "5 does not split into 2 equal parts"),
    ("Split", {"indices_or_sections": 2, "axis": 0}, [X], "non-batch axis"),
    ("Split", {"indices_or_sections": "2", "axis": 1}, [X],
     "a constant section count"),
])
def test_ops_refuse_what_they_cannot_compute(cls, config, args, why):
    assert why in _refusal(cls, config, args)


def test_norm_refuses_matrix_orders():
    why = _refusal("Norm", {"ord": 2, "axis": [1, 2]}, [X], module="linalg")
    assert "ord=2" in why
