"""ZeroPadding read only by a valid conv or pooling folds into its
``padding=`` (migrate/padfold.py), only where torch pads the same way."""
import pytest
import torch
import torch.nn.functional as F

from migrate.layout import identity
from migrate.padfold import fold_padding
from migrate.translate import ModuleDecl, PortTensor, Program


def _program(body, modules=()):
    return Program(
        model_name="m", class_name="M",
        inputs=[PortTensor("x", "x", (None, 3, 9, 9), identity(4),
                           "float32")],
        outputs=[PortTensor("y", "y", (None, 3, 9, 9), identity(4),
                            "float32")],
        modules=[ModuleDecl(a, c, a) for a, c in modules], body=list(body),
        returns=["y"], state={}, helpers={}, layers=[], warnings=[],
        permutes=[], layout="torch")


def test_a_pad_statement_goes_into_the_conv():
    p = _program(["x = F.pad(x, (3, 3, 3, 3))  # (B, 3, 15, 15)",
                  "y = self.conv(x)"],
                 [("conv", "nn.Conv2d(3, 8, kernel_size=7, stride=2)")])
    q = fold_padding(p)
    assert q.body == ["y = self.conv(x)"]
    assert q.modules[0].code == \
        "nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3)"


def test_padding_comes_before_groups_and_bias():
    p = _program(["y = self.conv(F.pad(x, (1, 1, 2, 2)))"],
                 [("conv", "nn.Conv2d(3, 3, kernel_size=3, groups=3, "
                           "bias=False)")])
    q = fold_padding(p)
    assert q.body == ["y = self.conv(x)"]
    assert q.modules[0].code == ("nn.Conv2d(3, 3, kernel_size=3, "
                                 "padding=(2, 1), groups=3, bias=False)")


@pytest.mark.parametrize("body, modules", [
    # asymmetric (TF's stride-2 'same' pad): F.pad stays
    (["y = self.conv(F.pad(x, (0, 1, 0, 1)))"],
     [("conv", "nn.Conv2d(3, 8, kernel_size=3, stride=2)")]),
    # the channel axis padded too
    (["y = self.conv(F.pad(x, (1, 1, 1, 1, 1, 1)))"],
     [("conv", "nn.Conv2d(3, 8, kernel_size=3)")]),
    # the conv already pads
    (["y = self.conv(F.pad(x, (1, 1, 1, 1)))"],
     [("conv", 'nn.Conv2d(3, 8, kernel_size=3, padding="same")')]),
    # a shared conv: the pad would apply to its other call too
    (["t = self.conv(F.pad(x, (1, 1, 1, 1)))", "y = self.conv(t)"],
     [("conv", "nn.Conv2d(3, 3, kernel_size=3)")]),
    # the padded value is read again later
    (["p = F.pad(x, (1, 1, 1, 1))", "t = self.conv(p)", "y = t + p"],
     [("conv", "nn.Conv2d(3, 3, kernel_size=3)")]),
    # max pooling over values that may be negative: zeros != -inf
    (["y = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)"], []),
    # a pad wider than half the window: torch refuses it
    (["y = F.avg_pool2d(F.pad(x, (2, 2, 2, 2)), 3, 1)"], []),
    # a transposed conv pads differently
    (["y = self.up(F.pad(x, (1, 1, 1, 1)))"],
     [("up", "nn.ConvTranspose2d(3, 3, kernel_size=3)")]),
])
def test_what_does_not_pad_the_same_way_stays(body, modules):
    p = _program(body, modules)
    q = fold_padding(p)
    assert q.body == p.body and q.modules == p.modules


def test_max_pool_after_relu_and_avg_pool_fold():
    p = _program(["x = F.relu(x)", "x = F.pad(x, (1, 1, 1, 1))",
                  "t = F.max_pool2d(x, 3, 2)",
                  "y = F.avg_pool2d(F.pad(t, (1, 1, 1, 1)), 3, 2)"])
    q = fold_padding(p)
    assert q.body == ["x = F.relu(x)", "t = F.max_pool2d(x, 3, 2, padding=1)",
                      "y = F.avg_pool2d(t, 3, 2, padding=1)"]


@pytest.mark.parametrize("size", [5, 6, 9, 10])
def test_the_folded_forms_compute_the_same(size):
    """What the rules rely on, in torch: zero padding then a valid conv /
    average (count_include_pad) / max over values >= 0 equals torch's own
    padding, for odd and even sizes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=g)
    w = torch.randn(4, 3, 3, 3, generator=g)
    pad = (1, 1, 1, 1)
    torch.testing.assert_close(F.conv2d(F.pad(x, pad), w, stride=2),
                               F.conv2d(x, w, stride=2, padding=1))
    torch.testing.assert_close(F.avg_pool2d(F.pad(x, pad), 3, 2),
                               F.avg_pool2d(x, 3, 2, padding=1))
    r = F.relu(x)
    assert torch.equal(F.max_pool2d(F.pad(r, pad), 3, 2),
                       F.max_pool2d(r, 3, 2, padding=1))
    # ... and why max pooling needs the relu: negatives differ
    assert not torch.equal(F.max_pool2d(F.pad(-r - 1, pad), 3, 2),
                           F.max_pool2d(-r - 1, 3, 2, padding=1))
