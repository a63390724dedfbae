"""Rules one at a time: the code they choose, what they refuse, and what the
training-only layers do in ``train()`` mode.

Numerical parity with Keras is proven by the fixture sweeps
(``fixtures/cases_layers.py`` through ``tests/test_parity.py``); these tests
build one-layer graphs by hand and look at the generated source, so they
need no model file and no TensorFlow.
"""
import math

import numpy as np
import pytest
import torch

import migrate
from migrate.api import Conversion
from migrate.emit.source import render
from migrate.graph import Graph, GraphInput, GraphOutput, Layer, Node
from migrate.graph import TensorRef
from migrate.translate import translate
from migrate.verify import run_port
from migrate.weights import LayerWeights, LazyArray, WeightEntry

from conftest import fixture_dir


# -- one-layer graphs ---------------------------------------------------------
def port(class_name, config, in_shape, weights=None, keras="3.15.1",
         dtype="float32"):
    """Convert a one-layer model: input ``in_shape`` (batch included) ->
    ``class_name(**config)``.  ``weights`` maps variable names to arrays."""
    entries = [WeightEntry(name, LazyArray.constant(np.asarray(arr,
                                                               "float32")))
               for name, arr in (weights or {}).items()]
    layer = Layer("layer", class_name, dict(config, name="layer"),
                  weights=LayerWeights(entries, "layer"))
    x = GraphInput("x", tuple(in_shape), dtype, TensorRef("x", 0))
    node = Node("layer", layer, args=[TensorRef("x", 0)])
    graph = Graph("one", [x], [GraphOutput("layer", TensorRef("layer", 0))],
                  [node], keras_version=keras)
    program = translate(graph)
    state = {k: torch.from_numpy(np.array(fn()))
             for k, fn in program.state.items()}
    return Conversion(render(program), state, program)


def refusal(class_name, config, in_shape, **kw):
    with pytest.raises(migrate.UnsupportedLayers) as info:
        port(class_name, config, in_shape, **kw)
    (_, _, why), = info.value.problems
    return why


def forward_lines(conv):
    src = conv.source
    return src[src.index("def forward"):]


# -- code the rules choose ----------------------------------------------------
def test_stride_one_same_conv_uses_torch_same_padding_when_even():
    k = np.zeros((3, 3, 2, 4))
    conv = port("Conv2D", {"filters": 4, "kernel_size": [3, 3],
                           "padding": "same"}, (None, 8, 8, 2),
                {"kernel": k, "bias": np.zeros(4)})
    assert 'nn.Conv2d(2, 4, kernel_size=3, padding="same")' in conv.source
    # an even kernel pads one more at the end: explicit, no torch warning
    conv = port("Conv1D", {"filters": 1, "kernel_size": [4],
                           "padding": "same"}, (None, 9, 2),
                {"kernel": np.zeros((4, 2, 1)), "bias": np.zeros(1)})
    assert "F.pad(x, (1, 2))" in forward_lines(conv)


def test_causal_conv_with_kernel_one_needs_no_padding():
    conv = port("Conv1D", {"filters": 2, "kernel_size": [1],
                           "padding": "causal"}, (None, 5, 3),
                {"kernel": np.ones((1, 3, 2)), "bias": np.zeros(2)})
    assert "F.pad" not in conv.source


def test_glu_halves_the_last_axis():
    conv = port("Activation", {"activation": "glu"}, (None, 3, 8))
    assert conv.program.outputs[0].keras_shape == (None, 3, 4)
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    got, = run_port(conv, [x])
    want = x[..., :4] / (1 + np.exp(-x[..., 4:]))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_dense_glu_output_shape():
    conv = port("Dense", {"units": 6, "activation": "glu"}, (None, 5),
                {"kernel": np.ones((5, 6)), "bias": np.zeros(6)})
    assert conv.program.outputs[0].keras_shape == (None, 3)


def test_relu_threshold_is_strict_and_args_are_minimal():
    conv = port("ReLU", {"threshold": 1.0, "max_value": 2.5,
                         "negative_slope": 0.0}, (None, 5))
    assert "keras_relu(x, max_value=2.5, threshold=1.0)" in conv.source
    x = np.array([[-1.0, 1.0, 1.5, 2.0, 3.0]], "float32")
    got, = run_port(conv, [x])
    np.testing.assert_array_equal(got, [[0.0, 0.0, 1.5, 2.0, 2.5]])


def test_relu6_and_leaky_defaults_are_written_out():
    assert "F.relu6(x)" in port("ReLU", {"max_value": 6.0},
                                (None, 4)).source
    assert "F.leaky_relu(x, 0.3)" in port("LeakyReLU", {},
                                          (None, 4)).source


def test_prelu_is_nn_prelu_when_alpha_is_per_channel():
    conv = port("PReLU", {}, (None, 5), {"alpha": np.full(5, 0.25)})
    assert "nn.PReLU(5)" in conv.source
    # channels last in torch too (a model input): alpha broadcasts as is
    conv = port("PReLU", {"shared_axes": [1, 2]}, (None, 5, 4, 3),
                {"alpha": np.full((1, 1, 3), 0.25)})
    assert "prelu(x, self.layer)" in conv.source
    assert conv.state_dict["layer"].shape == (1, 1, 3)


def test_layer_norm_rms_scaling_is_not_centred():
    gamma = np.array([1.0, 2.0, 3.0, 4.0])
    conv = port("LayerNormalization", {"axis": [-1], "rms_scaling": True,
                                       "epsilon": 1e-3}, (None, 4),
                {"gamma": gamma})
    x = np.array([[1.0, 2.0, 3.0, 10.0]], "float32")
    got, = run_port(conv, [x])
    want = x / np.sqrt(x.var() + 1e-3) * gamma
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_batch_norm_renorm_converts_with_a_warning():
    ws = {n: np.ones(3) for n in ("gamma", "beta", "moving_mean",
                                  "moving_variance", "moving_stddev",
                                  "renorm_mean", "renorm_stddev")}
    conv = port("BatchNormalization", {"axis": -1, "renorm": True},
                (None, 3), ws)
    assert any("renorm" in w for w in conv.program.warnings)
    assert "nn.BatchNorm1d(3, eps=0.001, momentum=0.01)" in conv.source


# -- refusals name the option -------------------------------------------------
def test_causal_padding_is_conv1d_only():
    why = refusal("Conv2D", {"filters": 1, "kernel_size": [2, 2],
                             "padding": "causal"}, (None, 4, 4, 1),
                  weights={"kernel": np.zeros((2, 2, 1, 1)),
                           "bias": np.zeros(1)})
    assert "padding='causal'" in why


@pytest.mark.parametrize("name, keras", [("hard_silu", "2.21.0"),
                                         ("threshold", "3.15.1"),
                                         ("no_such_thing", "3.15.1")])
def test_activation_names_outside_the_keras_version_are_refused(name, keras):
    why = refusal("Activation", {"activation": name}, (None, 4), keras=keras)
    assert f"activation={name!r}" in why


def test_dropout_noise_shape_of_the_wrong_rank_is_refused():
    why = refusal("Dropout", {"rate": 0.5, "noise_shape": [None, 1]},
                  (None, 3, 4))
    assert "noise_shape" in why


# -- train() mode does what Keras does ----------------------------------------
# Keras (keras/src/layers/regularization/*.py, checked against Keras 3.15
# with training=True on the same model): Dropout zeroes a `rate` fraction
# and scales the rest by 1/(1-rate); SpatialDropout1D/2D drop whole
# channels; Dropout(noise_shape) shares one decision where noise_shape has
# a 1; GaussianNoise adds N(0, stddev); GaussianDropout multiplies by
# N(1, sqrt(rate/(1-rate))); AlphaDropout sets dropped units to
# a*alpha' + b (-1.45774 for rate 0.1) keeping mean 0 and variance 1;
# ActivityRegularization only adds a loss.
N = 3000


@pytest.fixture(scope="module")
def noise():
    conv = migrate.convert(fixture_dir("k3_noise_layers") / "model.keras")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(N, 64)).astype("float32"),
              np.ones((N, 16, 6), "float32"),
              np.ones((N, 6, 5, 8), "float32")]
    model = conv.module().train()
    args = [torch.from_numpy(a).permute(*t.layout.perm)
            for a, t in zip(inputs, conv.program.inputs)]
    with torch.no_grad():
        outs = model(*args)
    got = {}
    for o, t in zip(outs, conv.program.outputs):
        back = [t.layout.perm.index(i) for i in range(len(t.layout.perm))]
        got[t.name] = o.permute(*back).numpy()
    return inputs, got


def _constant_over(arr, axes):
    """True when arr does not vary along the Keras ``axes``."""
    return bool(np.all(arr == arr.max(axis=axes, keepdims=True)))


def test_dropout_zeroes_rate_and_rescales(noise):
    (vec, _, _), got = noise
    y = got["dropout"]
    dropped = y == 0
    assert abs(dropped.mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[~dropped], vec[~dropped] / 0.7, rtol=1e-6)


@pytest.mark.parametrize("name, rate, shared", [
    ("spatial_dropout1d", 0.4, (1,)),        # (B, T, C): whole channels
    ("spatial_dropout2d", 0.5, (1, 2)),      # (B, H, W, C)
    ("spatial_dropout2d_conv", 0.5, (1, 2)),
    ("dropout_ns_seq", 0.5, (1,)),           # noise_shape (None, 1, 6)
    ("dropout_ns_conv", 0.5, (1, 2)),        # (None, 1, 1, 8)
    ("dropout_ns_rows", 0.5, (2, 3)),        # (None, 6, 1, 1)
])
def test_structured_dropout_drops_whole_slices(noise, name, rate, shared):
    y = noise[1][name]
    kept = y != 0
    if name.endswith("conv"):  # a conv output: zero only where dropped
        kept = np.abs(y) > 0
    assert _constant_over(kept, shared), "decisions vary inside a slice"
    keep_rate = kept.max(axis=shared).mean()
    assert abs(keep_rate - (1 - rate)) < 0.03
    if not name.endswith("conv"):  # inputs are ones
        np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)


def test_dropout_on_a_conv_output_is_elementwise(noise):
    y = noise[1]["dropout_conv"]
    assert not _constant_over(y == 0, (1, 2))
    assert abs((y == 0).mean() - 0.5) < 0.01


def test_gaussian_noise_adds_the_right_std(noise):
    (vec, _, _), got = noise
    d = got["gaussian_noise"] - vec
    assert abs(d.std() - 0.5) < 0.01 and abs(d.mean()) < 0.01


def test_gaussian_dropout_multiplies_by_the_right_noise(noise):
    (vec, _, _), got = noise
    ratio = got["gaussian_dropout"] / vec
    assert abs(ratio.mean() - 1) < 0.01
    assert abs(ratio.std() - math.sqrt(0.2 / 0.8)) < 0.01


def test_alpha_dropout_keeps_selu_statistics(noise):
    (vec, _, _), got = noise
    y = got["alpha_dropout"]
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    a = ((1 - 0.1) * (1 + 0.1 * alpha_p ** 2)) ** -0.5
    dropped_value = a * alpha_p + (-a * alpha_p * 0.1)
    dropped = np.isclose(y, dropped_value, atol=1e-6)
    assert abs(dropped_value - -1.45774) < 1e-4  # what Keras produced
    assert abs(dropped.mean() - 0.1) < 0.01
    assert abs(y.mean()) < 0.02 and abs(y.var() - 1) < 0.03


def test_activity_regularization_is_identity_in_training(noise):
    (vec, _, _), got = noise
    np.testing.assert_array_equal(got["activity_reg"], vec)
