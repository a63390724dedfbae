"""keras-cv-attention-models ("kecam") models: the reader lets a custom
layer's "infer it" sentinels through to its rule (every missing piece is
reported in one run), the TensorFlow functions kecam calls, and the kecam
rule pack (parity of every rule is proven by the ``kecam`` fixtures
through test_parity; here, what they refuse)."""
import json
import shutil

import h5py
import pytest

import migrate
from migrate.errors import ConversionError
from migrate.read.config import MAX_DIM, check_dims, is_custom

from conftest import fixture_dir


def _h5_with(tmp_path, edit):
    """A copy of the k2_mlp full-model .h5 with its config edited."""
    path = tmp_path / "model.h5"
    shutil.copy(fixture_dir("k2_mlp") / "model.h5", path)
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config["config"]["layers"])
        f.attrs["model_config"] = json.dumps(config)
    return path


# -- section 2: reading never refuses what only a rule can judge ----------
def test_custom_layer_sentinels_reach_the_rule_stage(tmp_path):
    """kecam writes num_heads=-1 ("infer from the input"): the reader lets
    it through, and every layer without a rule is reported at once."""
    def edit(layers):
        layers[1]["class_name"] = "beit>MultiHeadRelativePositionalEmbedding"
        layers[1]["config"].update(num_heads=-1, units=None)
        layers[2]["class_name"] = "kecamCommon>SomethingElse"
        layers[2]["config"]["filters"] = "auto"
    with pytest.raises(migrate.UnsupportedLayers) as info:
        migrate.convert(_h5_with(tmp_path, edit))
    classes = {cls for _, cls, _ in info.value.problems}
    assert {"MultiHeadRelativePositionalEmbedding",
            "SomethingElse"} <= classes


def test_custom_layer_absurd_sizes_still_refused(tmp_path):
    def edit(layers):
        layers[1]["class_name"] = "pkg>Big"
        layers[1]["config"]["units"] = 2 ** 40
    with pytest.raises(ConversionError, match="units"):
        migrate.convert(_h5_with(tmp_path, edit))


@pytest.mark.parametrize("value", [-1, None, 0, "5"])
def test_keras_layer_sentinels_still_refused(value):
    if value is None:  # None means "not given" for units: Dense's default
        check_dims({"units": value}, "Dense")
        return
    with pytest.raises(ConversionError, match="valid dimension"):
        check_dims({"units": value}, "Dense")


def test_what_counts_as_custom():
    assert is_custom(None, "resmlp>ChannelAffine")
    assert is_custom("keras_cv_attention_models.volo.volo", None)
    assert not is_custom("keras.layers", None)
    assert not is_custom("keras.src.ops.numpy", None)
    assert not is_custom(None, None)
    check_dims({"num_heads": -1, "kernel_size": [None, -1]}, "x",
               custom=True)
    with pytest.raises(ConversionError, match="over the limit"):
        check_dims({"kernel_size": [3, MAX_DIM + 1]}, "x", custom=True)
