"""ResNet50 (Keras's variant) written by hand in torch, for bench/inference.py.

Keras's ResNet50 differs from torchvision's: every convolution has a bias,
the stride of a stage sits on the first 1x1 convolution (torchvision puts it
on the 3x3), BatchNorm eps is 1.001e-5, and the stem pads explicitly before
a 'valid' 7x7 convolution and a 'valid' max pool.  This module is that
network in idiomatic torch (blocks, ``nn.Sequential`` stages); ``load_port``
renames a flat keras2torch port's state dict (Keras layer names, as
``convert(..., flat=True)`` gives them; the default, folded port nests
its blocks' keys) onto it, and ``from_keras`` converts a Keras ResNet50
file so.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1.001e-5


def conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> tuple:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)
    return conv, nn.BatchNorm2d(cout, eps=EPS, momentum=0.01)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int, shortcut: bool):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, width, 1, stride)
        self.conv2, self.bn2 = conv_bn(width, width, 3)
        self.conv3, self.bn3 = conv_bn(width, 4 * width, 1)
        self.downsample = (nn.Sequential(*conv_bn(cin, 4 * width, 1, stride))
                           if shortcut else nn.Identity())

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(self.downsample(x) + h)


class ResNet50(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2)
        self.bn1 = nn.BatchNorm2d(64, eps=EPS, momentum=0.01)
        stages, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                      (512, 3, 2)):
            layers = [Bottleneck(cin, width, stride, True)]
            layers += [Bottleneck(4 * width, width, 1, False)
                       for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            cin = 4 * width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        x = self.conv1(F.pad(x, (3, 3, 3, 3)))
        x = F.max_pool2d(F.pad(F.relu(self.bn1(x)), (1, 1, 1, 1)), 3, 2)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.softmax(self.fc(x.mean(dim=(2, 3))), dim=-1)


_BLOCK = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)\.(.+)")


def rename(key: str) -> str:
    """A port key (Keras names) -> this module's key."""
    m = _BLOCK.fullmatch(key)
    if m:
        stage, block, i, kind, rest = m.groups()
        prefix = f"layer{int(stage) - 1}.{int(block) - 1}"
        if i == "0":
            return f"{prefix}.downsample.{0 if kind == 'conv' else 1}.{rest}"
        return f"{prefix}.{kind}{i}.{rest}"
    head, _, rest = key.partition(".")
    return {"conv1_conv": "conv1", "conv1_bn": "bn1",
            "predictions": "fc"}[head] + "." + rest


def from_keras(path) -> ResNet50:
    """The hand-written network with the weights of the Keras ResNet50 at
    ``path``, through a flat conversion (one key per Keras layer)."""
    import migrate
    return load_port(migrate.convert(path, flat=True).module().state_dict())


def load_port(state: dict[str, torch.Tensor]) -> ResNet50:
    model = ResNet50()
    model.load_state_dict({rename(k): v for k, v in state.items()},
                          strict=True)
    return model.eval()
