"""Resizing and CenterCrop: the options torch reproduces exactly and the
ones refused, with the reason (parity: fixtures/cases_resizing_more.py)."""
import numpy as np
import pytest
import torch

from migrate.verify import run_port
from test_rules_unit import forward_lines, port, refusal

IMG = (None, 9, 7, 3)


@pytest.mark.parametrize("mode, why", [
    ("area", "adaptive average pooling"),
    ("lanczos3", "no Lanczos"),
    ("lanczos5", "no Lanczos"),
    ("gaussian", "no Gaussian"),
    ("mitchellcubic", "Mitchell"),
    ("cubic", "not an interpolation"),
])
def test_kernels_torch_lacks_are_refused(mode, why):
    for aa in (False, True):
        got = refusal("Resizing", {"height": 4, "width": 5,
                                   "interpolation": mode, "antialias": aa},
                      IMG)
        assert f"interpolation={mode!r}" in got and why in got


@pytest.mark.parametrize("in_shape, size", [
    (IMG, (13, 11)),               # non-integer upscale
    (IMG, (5, 4)),                 # downscale
    (IMG, (27, 21)),               # 3x: TF's kernel table is inexact
    (IMG, (18, 7 * 32)),           # beyond the tested power-of-two range
    ((None, None, None, 3), (8, 8)),  # size unknown at conversion
])
def test_plain_bicubic_is_refused_unless_a_power_of_two_upscale(in_shape,
                                                                size):
    got = refusal("Resizing", {"height": size[0], "width": size[1],
                               "interpolation": "bicubic"}, in_shape)
    assert "a=-0.75" in got and "power-of-two" in got


def test_plain_bicubic_at_power_of_two_upscales_is_antialiased_bicubic():
    conv = port("Resizing", {"height": 18, "width": 28,
                             "interpolation": "bicubic"}, IMG)
    assert ('F.interpolate(x, size=(18, 28), mode="bicubic", '
            'antialias=True)') in forward_lines(conv)
    # after a crop, the cropped size is what must divide
    conv = port("Resizing", {"height": 14, "width": 14,
                             "interpolation": "bicubic",
                             "crop_to_aspect_ratio": True}, IMG)
    assert "x[:, :, 1:8]" in forward_lines(conv)


def test_crop_and_pad_together_and_other_fill_modes_are_refused():
    got = refusal("Resizing", {"height": 4, "width": 4,
                               "crop_to_aspect_ratio": True,
                               "pad_to_aspect_ratio": True}, IMG)
    assert "only one" in got
    got = refusal("Resizing", {"height": 4, "width": 4,
                               "pad_to_aspect_ratio": True,
                               "fill_mode": "reflect"}, IMG)
    assert "fill_mode='reflect'" in got


@pytest.mark.parametrize("n_h, n_w, h, w, box", [
    (9, 7, 5, 5, (1, 0, 7, 7)),      # tall: odd remainder, 1 up, 1 down
    (5, 11, 13, 6, (0, 4, 5, 2)),    # wide: 9 columns off, 4 left, 5 right
    (7, 7, 11, 11, (0, 0, 7, 7)),    # same aspect: no crop
    (9, 7, 4, 9, (3, 0, 3, 7)),      # int() truncates 7*4/9 = 3.1
    (1, 9, 5, 1, (0, 4, 1, 1)),      # never below one pixel
])
def test_crop_box_is_kerass(n_h, n_w, h, w, box):
    from migrate.rules.resizing import _aspect_crop
    assert _aspect_crop(n_h, n_w, h, w) == box


def _reference_crop(x, h, w):
    """Keras 3's resize(crop_to_aspect_ratio=True) crop box, in float32."""
    n_h, n_w = x.shape[-2:]
    ch = max(min(n_h, int(np.float32(n_w * h) / np.float32(w))), 1)
    cw = max(min(n_w, int(np.float32(n_h * w) / np.float32(h))), 1)
    t, left = int(np.float32(n_h - ch) / 2), int(np.float32(n_w - cw) / 2)
    return x[..., t:t + ch, left:left + cw]


def _reference_pad(x, h, w, value):
    n_h, n_w = x.shape[-2:]
    ph = max(n_h, int(np.float32(n_w * h) / np.float32(w)))
    pw = max(n_w, int(np.float32(n_h * w) / np.float32(h)))
    t, left = int(np.float32(ph - n_h) / 2), int(np.float32(pw - n_w) / 2)
    return np.pad(x, [(0, 0), (0, 0), (t, t), (left, left)],
                  constant_values=value)


@pytest.mark.parametrize("n_h, n_w", [(8, 8), (9, 13), (17, 6), (1, 5)])
@pytest.mark.parametrize("h, w", [(5, 9), (12, 5), (7, 7), (3, 1)])
def test_unknown_sizes_crop_and_pad_in_forward_as_keras(n_h, n_w, h, w):
    """The helpers written into model.py, on sizes known only at run time,
    against Keras's float32 arithmetic (nearest keeps the values visible:
    equal sizes make the resize an identity, checked on the crop shape)."""
    x = np.random.default_rng(0).standard_normal((1, 2, n_h, n_w))
    x = x.astype("float32")
    any_img = (None, None, None, 2)
    crop = port("Resizing", {"height": h, "width": w,
                             "crop_to_aspect_ratio": True}, any_img)
    assert "crop_to_aspect(x, " in forward_lines(crop)
    ns = {"F": torch.nn.functional, "torch": torch}
    exec(crop.source[:crop.source.index("class ")], ns)
    got = ns["crop_to_aspect"](torch.from_numpy(x), h, w).numpy()
    np.testing.assert_array_equal(got, _reference_crop(x, h, w))
    pad = port("Resizing", {"height": h, "width": w, "fill_value": -2.5,
                            "pad_to_aspect_ratio": True}, any_img)
    exec(pad.source[:pad.source.index("class ")], ns)
    got = ns["pad_to_aspect"](torch.from_numpy(x), h, w, -2.5).numpy()
    np.testing.assert_array_equal(got, _reference_pad(x, h, w, -2.5))
    (out,) = run_port(pad, [x.transpose(0, 2, 3, 1)])
    assert out.shape[1:3] == (h, w)


def test_center_crop_on_a_smaller_input_resizes_like_smart_resize():
    conv = port("CenterCrop", {"height": 11, "width": 5}, IMG)
    assert ('F.interpolate(x[:, :, :, 1:5], size=(11, 5), mode="bilinear")'
            in forward_lines(conv))
    conv = port("CenterCrop", {"height": 5, "width": 3}, IMG)
    assert "x[:, :, 2:7, 2:5]" in forward_lines(conv)
    conv = port("CenterCrop", {"height": 11, "width": 5},
                (None, None, None, 3))
    assert "center_crop(x, 11, 5)" in forward_lines(conv)
    assert "def crop_to_aspect(" in conv.source


def test_antialias_is_torchs_and_ignored_for_nearest():
    conv = port("Resizing", {"height": 4, "width": 3, "antialias": True},
                IMG)
    assert "antialias=True" in forward_lines(conv)
    conv = port("Resizing", {"height": 4, "width": 3, "antialias": True,
                             "interpolation": "nearest"}, IMG)
    assert "antialias" not in forward_lines(conv)
