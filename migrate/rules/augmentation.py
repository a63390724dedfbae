"""Random data-augmentation layers (RandomFlip, RandomRotation, MixUp...).

Keras runs them only while training: at inference each returns its input
(cast to float32), which is what the port computes.  The port does not
augment in ``train()``: augmentation belongs in the data pipeline of a torch
project, and each such layer gets a warning in the report saying so.

RandomCrop has no rule: tf-keras crops (resize-and-crop) at inference but
Keras 3 returns the input unchanged, so it is not one function across
versions.
"""
from __future__ import annotations

from .base import Emit, Out
from .registry import rule

# Verified identity at inference (training=False) in Keras 3.15 and, for
# the first group, in tf-keras 2.21.
_BOTH = ("RandomBrightness", "RandomContrast", "RandomFlip",
         "RandomRotation", "RandomTranslation", "RandomZoom")
_KERAS2 = ("RandomHeight", "RandomWidth")
_KERAS3 = ("AugMix", "CutMix", "MixUp", "RandAugment",
           "RandomColorDegeneration", "RandomColorJitter",
           "RandomElasticTransform", "RandomErasing", "RandomGaussianBlur",
           "RandomGrayscale", "RandomHue", "RandomInvert",
           "RandomPerspective", "RandomPosterization", "RandomSaturation",
           "RandomSharpness", "RandomShear")
AUGMENTATION_LAYERS = _BOTH + _KERAS2 + _KERAS3


@rule(*AUGMENTATION_LAYERS)
def augmentation(call):
    """Identity at inference; a warning that ``train()`` does not augment."""
    x = call.inputs[0]
    call.warn(f"{call.layer.class_name} is data augmentation, which Keras "
              "applies only while training: the port is the identity (as "
              "Keras at inference) and does not augment in train(); augment "
              "in the data pipeline instead (e.g. torchvision.transforms.v2)")
    if x.dtype.startswith("float"):
        return Emit([Out([x.expr], x.shape, x.layout, x.dtype)])
    return Emit([Out([f"{x.expr}.float()"], x.shape, x.layout, "float32")])

