"""The keras-cv-attention-models ("kecam") rule pack: kecam's registered
layer classes and activation functions, keyed by the names kecam registers
them under (``"resmlp>ChannelAffine"``, ``"kecamCommon>hard_swish"``...),
so a layer of the same class name from another package is not taken for
one of them.  One module per family:

* :mod:`.scale` -- ChannelAffine, BiasLayer, ZeroInitGain;
* :mod:`.tokens` -- ClassToken, PositionalEmbedding, PureWeigths;
* :mod:`.positional` -- MultiHeadPositionalEmbedding (LeViT,
  EfficientFormer), MultiHeadRelativePositionalEmbedding (BEiT, CoAtNet,
  MaxViT...);
* :mod:`.activations` -- hard_swish, hard_sigmoid_torch, mish, phish;
* :mod:`.conv` -- PatchConv2DWithResampleWeights (a Conv2D),
  ScaledStandardizedConv2D (NFNet, weight standardisation);
* :mod:`.patches` -- CompatibleExtractPatches (an unfold);
* :mod:`.relative` -- RelativePositionalEmbedding (BotNet, HaloNet);
* :mod:`.fourier` -- PositionalEncodingFourier (EdgeNeXt),
  PositionalEncodingFourierRot (EVA02);
* :mod:`.swin` -- ExpLogitScale, MlpPairwisePositionalEmbedding,
  WindowAttentionMask (Swin V2, FasterViT);
* :mod:`.nat` -- MultiHeadRelativePositionalKernelBias (NAT).

Weights are read as kecam's ``build`` creates them; index tables that
kecam computes from the input shape are computed the same way in the
generated module's ``__init__`` (torchvision's Swin does the same for its
relative position index), never stored.
"""
from . import activations, conv, fourier, patches, positional  # noqa: F401
from . import nat, relative, scale, swin, tokens  # noqa: F401
