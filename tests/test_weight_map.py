"""Conversion.weight_map / map_arrays: the way back from every state-dict
entry to the Keras variables it holds (issue 15, part 1).

For every fixture: every state key has an entry; mapping the stored arrays
through ``map_arrays`` reproduces the state dict exactly; mapping other
arrays changes every mapped entry (no transform caches its input); and an
entry said to be "as stored" is its variable unchanged."""
import numpy as np
import pytest
import torch

import migrate
from migrate.weightmap import AS_STORED, ambiguous_paths, sources

from conftest import MODELS, model_files

CASES = [(d.name, label, path, weights)
         for d in sorted(MODELS.iterdir()) if (d / "case.json").exists()
         for label, path, weights in model_files(d)]


def _stored(conv) -> dict:
    """{keras path: stored array} of every variable the entries read."""
    out = {}
    for entry in conv.program.state.values():
        for arr in sources(entry):
            out.setdefault(arr.path, arr.read())
    return out


@pytest.mark.parametrize("name,label,path,weights", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_weight_map_reproduces_state_dict(name, label, path, weights):
    try:
        conv = migrate.convert(path, weights)
    except migrate.UnsupportedLayers:
        pytest.skip("needs the user's rules (tests/test_userrules)")
    with conv:
        rows = conv.weight_map()
        assert [r["torch"] for r in rows] == list(conv.state_dict)
        arrays = _stored(conv)
        shared = ambiguous_paths(conv.program.state)
        for p in shared:  # Keras 3 gives two variables one path
            with pytest.raises(migrate.ConversionError, match="shared"):
                conv.map_arrays({p: arrays[p]})
            del arrays[p]
        if not arrays:
            return
        mapped = conv.map_arrays(arrays)
        for r in rows:
            key = r["torch"]
            assert r["keras_layer"], key
            if not r["keras_variables"]:
                assert key not in mapped
                continue
            if set(r["keras_variables"]) & set(shared):
                continue
            assert set(r["keras_variables"]) <= set(arrays), key
            assert torch.equal(mapped[key], conv.state_dict[key]), key
            if r["transform"] == AS_STORED:
                (var,) = r["keras_variables"]
                assert np.array_equal(
                    mapped[key].numpy(),
                    arrays[var].astype(mapped[key].numpy().dtype)), \
                    f"{key} is not its variable {var} as stored"
        rng = np.random.default_rng(0)
        other = {p: (rng.standard_normal(a.shape) + 3).astype(a.dtype)
                 if a.dtype.kind == "f" else a for p, a in arrays.items()}
        moved = conv.map_arrays(other)
        for key, t in moved.items():
            if t.is_floating_point() and t.numel():
                assert not torch.equal(t, conv.state_dict[key]), \
                    f"{key} does not follow its variables"


def test_partial_arrays_map_only_their_entries():
    path = MODELS / "k3_small_cnn" / "model.keras"
    with migrate.convert(path) as conv:
        arrays = _stored(conv)
        kernel = {"conv1/kernel": arrays["conv1/kernel"]}
        assert list(conv.map_arrays(kernel)) == ["conv1.weight"]
        row = next(r for r in conv.weight_map() if r["torch"] == "conv1.weight")
        assert row["keras_variables"] == ["conv1/kernel"]
        assert row["transform"].startswith("transposed")
        assert "weights" in conv.report
        with pytest.raises(migrate.ConversionError):
            conv.map_arrays({"conv1/kernel": np.zeros((1, 2))})


def test_gradients_map_through_the_linear_part_of_a_transform():
    """A Keras gradient is mapped without the transform's offset: Gemma's
    norm weight is ``1 + scale``, so d/dweight is d/dscale, not 1 + it
    (the training-parity check compares gradients this way)."""
    conv = migrate.convert(MODELS / "k3_hub_gemma_backbone" / "model.keras")
    stored = _stored(conv)
    rng = np.random.default_rng(0)
    grads = {k: rng.standard_normal(np.shape(v)).astype(np.float32)
             for k, v in stored.items()}
    mapped = conv.map_gradients(grads)
    scale = grads["final_normalization/scale"]
    np.testing.assert_allclose(
        mapped["final_normalization.weight"].numpy(), scale, rtol=1e-6)
    # a linear transform maps as map_arrays does (kernel: transposed)
    plain = conv.map_arrays(grads)
    key = "decoder_blocks.0.attention.query.weight"
    torch.testing.assert_close(mapped[key], plain[key])
