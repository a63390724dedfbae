"""keras-hub T5 (T5Backbone, T5Seq2SeqLM).

Parity of each fixture is in test_parity (stored Keras references: padded
batches with an all-padding encoder row, relative distances in the
logarithmic buckets); here the expansion against the Functional config
Keras writes, the port's structure, refusals, gradients through padded
rows, torch.export, and ``--verify`` when keras-hub is installed.
"""
import pytest

from conftest import MODELS
from test_keras_hub import test_expansion_is_the_graph_keras_hub_builds \
    as _same_graph

CASES = ["k3_hub_t5_backbone", "k3_hub_t5_seq2seq_lm",
         "k3_hub_t5_seq2seq_lm_untied"]


@pytest.mark.parametrize("case", CASES)
def test_expansion_is_the_graph_keras_hub_builds(case):
    _same_graph(case)
