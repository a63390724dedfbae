"""Layouts and the translator's code composition, without model files."""
import numpy as np
import torch

from migrate.layout import Layout, channels_first, channels_last_of, convert
from migrate.layout import identity, is_free, relative_perm
from migrate.translate import _atomic, _subst


def _run(code, x):
    return eval(code, {"torch": torch}, {"x": x})


def test_channels_first_and_back():
    cf = channels_first(4)
    assert cf.perm == (0, 3, 1, 2)
    assert channels_last_of(cf).perm == (0, 1, 2, 3)
    assert channels_first(2) == identity(2)
    assert cf.torch_axis(-1) == 1 and cf.torch_shape((None, 5, 6, 3)) == (None, 3, 5, 6)


def test_convert_matches_permute_semantics():
    keras = torch.randn(2, 5, 6, 3)
    cf = channels_first(4)
    x = keras.permute(*cf.perm)
    code, kind = convert("x", (None, 5, 6, 3), cf, identity(4))
    assert kind == "permute"
    assert torch.equal(_run(code, x), keras)
    assert relative_perm(identity(4), cf) == (0, 3, 1, 2)


def test_size_one_moves_are_reshapes():
    keras = torch.randn(2, 1, 1, 7)
    cf = channels_first(4)
    assert is_free(identity(4), cf, (None, 1, 1, 7))
    code, kind = convert("x", (None, 1, 1, 7), identity(4), cf)
    assert kind == "reshape"
    assert torch.equal(_run(code, keras), keras.permute(0, 3, 1, 2))


def test_undo_deferred_flatten():
    keras = torch.randn(2, 4, 5, 3)  # (B, H, W, C)
    torch_flat = keras.permute(0, 3, 1, 2).flatten(1)
    flat = Layout((0, 1), flat=((4, 5, 3), (0, 3, 1, 2)))
    code, kind = convert("x", (None, 60), flat, identity(2))
    assert kind == "permute"
    assert torch.equal(_run(code, torch_flat), keras.flatten(1))


def test_dense_row_permutation_for_flat_layout():
    from migrate.rules.common import flat_order
    keras = np.random.default_rng(0).normal(size=(2, 4, 5, 3))
    flat = Layout((0, 1), flat=((4, 5, 3), (0, 3, 1, 2)))
    order = flat_order(flat)
    torch_flat = keras.transpose(0, 3, 1, 2).reshape(2, -1)
    kernel = np.random.default_rng(1).normal(size=(60, 7))
    assert np.allclose(torch_flat @ kernel[order], keras.reshape(2, -1) @ kernel)


def test_substitution_parenthesises_only_where_needed():
    assert _atomic("self.conv(x)") and _atomic("x") and _atomic("x[:, 1:]")
    assert not _atomic("x + y") and not _atomic("-x")
    assert _subst("F.relu(\x01\x02)", "\x01\x02", "x + y") == "F.relu(x + y)"
    assert _subst("\x01\x02.flatten(1)", "\x01\x02", "x + y") == "(x + y).flatten(1)"
    assert _subst("0.2 * \x01\x02 + 0.5", "\x01\x02", "a + b") == "0.2 * (a + b) + 0.5"
    assert _subst("torch.cat([\x01\x02, y], dim=1)", "\x01\x02", "a * b") == \
        "torch.cat([a * b, y], dim=1)"
