"""EinsumDense, RMSNormalization, adaptive pooling and augmentation layers:
what they refuse and warn about.  Parity with Keras is proven by the
fixtures in ``fixtures/cases_layers_extra.py`` through test_parity."""
import numpy as np
import pytest
import torch

from test_rules_unit import port, refusal


def test_augmentation_is_identity_with_a_warning():
    conv = port("RandomFlip", {"mode": "horizontal"}, (None, 5, 4, 3))
    (warning,) = conv.report["warnings"]
    assert "RandomFlip is data augmentation" in warning
    assert "train()" in warning
    x = torch.randn(2, 3, 5, 4)
    module = conv.module().train()
    assert torch.equal(module(x), x)  # never augments, even in train()


def test_augmentation_casts_integer_images_to_float():
    conv = port("RandomRotation", {"factor": 0.1}, (None, 5, 4, 3),
                dtype="uint8")
    y = conv.module()(torch.zeros(1, 3, 5, 4, dtype=torch.uint8))
    assert y.dtype == torch.float32


def test_random_crop_has_no_rule():
    why = refusal("RandomCrop", {"height": 2, "width": 2}, (None, 5, 4, 3))
    assert "no rule" in why


def test_rms_norm_refuses_axes_that_keras_broadcasts_wrongly():
    why = refusal("RMSNormalization", {"axis": 1}, (None, 4, 4),
                  weights={"scale": np.ones(4)})
    assert "axis=1" in why


def test_rms_norm_matches_its_formula():
    scale = np.random.default_rng(0).normal(size=6).astype("float32")
    conv = port("RMSNormalization", {"axis": -1, "epsilon": 0.1},
                (None, 3, 6), weights={"scale": scale})
    assert "nn.RMSNorm(6, eps=0.1)" in conv.source
    x = torch.randn(2, 3, 6)
    want = x * torch.rsqrt((x ** 2).mean(-1, keepdim=True) + 0.1) \
        * torch.from_numpy(scale)
    torch.testing.assert_close(conv.module()(x), want)


@pytest.mark.parametrize("equation, why", [
    ("ab,bc", "expected 'input,kernel->output'"),
    ("ab,bc->ac; import os", "expected 'input,kernel->output'"),
    ("abcd,bc->ac", "input rank is 2"),
])
def test_einsum_dense_refuses_equations_it_cannot_read(equation, why):
    got = refusal("EinsumDense", {"equation": equation, "output_shape": 4,
                                  "bias_axes": None}, (None, 5),
                  weights={"kernel": np.ones((5, 4))})
    assert why in got


def test_adaptive_pooling_needs_known_sizes():
    why = refusal("AdaptiveAveragePooling2D", {"output_size": [2, 2]},
                  (None, None, 7, 3))
    assert "known spatial sizes" in why


def test_stochastic_depth_drops_whole_samples_in_train_mode():
    """Keras ConvNeXt StochasticDepth: in training each sample's residual
    branch is kept with probability 1 - rate and scaled by 1 / (1 - rate);
    the identity at inference."""
    conv = port("StochasticDepth", {"drop_path_rate": 0.25},
                (None, 4, 5, 3))
    assert not conv.report["warnings"]
    module = conv.module()
    x = torch.ones(4000, 3, 4, 5)
    assert torch.equal(module(x), x)
    torch.manual_seed(0)
    y = module.train()(x)
    per_sample = y.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # whole sample
    kept = per_sample[:, 0] != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.allclose(per_sample[kept], torch.tensor(1 / 0.75))


@pytest.mark.parametrize("config, in_shape, why", [
    ({"num_tokens": 4, "output_mode": "multi_hot"}, (None,),
     "expected (batch, ids) inputs"),
    ({"num_tokens": 4, "output_mode": "tf_idf"}, (None, 3),
     "output_mode='tf_idf'"),
    ({"num_tokens": 4, "output_mode": "count", "sparse": True}, (None, 3),
     "sparse=True"),
])
def test_category_encoding_refusals(config, in_shape, why):
    assert why in refusal("CategoryEncoding", config, in_shape,
                          dtype="int32")


def test_discretization_needs_stored_boundaries():
    why = refusal("Discretization", {"bin_boundaries": None, "num_bins": 4,
                                     "output_mode": "int"}, (None, 3))
    assert "bin_boundaries" in why


def test_cudnn_lstm_refuses_stateful_and_odd_weights():
    w = {"kernel": np.ones((3, 8)), "recurrent_kernel": np.ones((2, 8)),
         "bias": np.ones(16)}
    assert "stateful=True" in refusal(
        "CuDNNLSTM", {"units": 2, "stateful": True}, (None, 4, 3), weights=w)
    w["bias"] = np.ones(8)
    assert "unexpected shapes" in refusal("CuDNNLSTM", {"units": 2},
                                          (None, 4, 3), weights=w)


def test_rnn_over_custom_cells_is_refused():
    """Stacked built-in cells are converted (tests/test_rules_stacked.py);
    custom cells, alone or stacked, are not."""
    custom = {"class_name": "MyCell", "config": {"units": 2}}
    assert "cell='MyCell'" in refusal("RNN", {"cell": custom}, (None, 4, 3))
    stacked = {"cell": {"class_name": "StackedRNNCells",
                        "config": {"cells": [custom]}}}
    assert "cells[0]='MyCell'" in refusal("RNN", stacked, (None, 4, 3))
