"""Whole generated model.py files, reviewed by eye once and then compared
byte for byte, so that any change to what a user reads shows in review.

    KERAS2TORCH_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_snapshots.py

rewrites them (then read the diff before committing)."""
import os

import pytest

import migrate
from conftest import MODELS, model_files
from test_parity import CUSTOM_RULES

HERE = os.path.dirname(os.path.abspath(__file__))
SNAPSHOTS = os.path.join(HERE, "snapshots")
UPDATE = os.environ.get("KERAS2TORCH_UPDATE_SNAPSHOTS") == "1"

CASES = [
    "k3_small_cnn",            # a small CNN with a residual add
    "k3_inverted_residuals",   # blocks with optional parts, padding=
    "k3_hub_resnet_v1_classifier",  # a small ResNet: stages of blocks
    "k3_transformer_encoder",  # a BERT-style encoder from Keras layers
    "k3_lstm_text_classifier",  # a masked LSTM
]


@pytest.mark.parametrize("case", CASES)
def test_generated_file_is_the_reviewed_one(case):
    _, model, weights = model_files(MODELS / case)[0]
    with migrate.convert(model, weights,
                         rules=CUSTOM_RULES.get(case)) as conv:
        source = conv.source
    path = os.path.join(SNAPSHOTS, f"{case}.py.txt")
    if UPDATE or not os.path.exists(path):
        if not UPDATE:
            pytest.fail(f"no snapshot {path}: run with "
                        "KERAS2TORCH_UPDATE_SNAPSHOTS=1 and review it")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        return
    with open(path, encoding="utf-8") as f:
        want = f.read()
    assert source == want, (
        f"{case}: model.py changed; if intended, regenerate with "
        "KERAS2TORCH_UPDATE_SNAPSHOTS=1 and review the diff")
