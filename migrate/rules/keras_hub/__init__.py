"""The keras-hub rule pack: keras-hub's layers, and its Backbone and task
models (saved with only their constructor arguments) expanded into the
graph keras-hub builds for them.

keras-hub is never imported: everything here is written from its source
(0.32.0) and checked against it by the fixtures.
"""
from . import embeddings, transformer  # noqa: F401  (layer rules)
from . import bert, gpt2  # noqa: F401  (backbones and tasks)
from . import encoder_layers, encoders, fnet  # noqa: F401  (encoder family)
from . import llama  # noqa: F401  (Llama, Llama 3, Mistral, Qwen)
from . import gemma  # noqa: F401  (Gemma 1 and 2)
from . import vit  # noqa: F401  (ViT)
from . import bart  # noqa: F401  (BART)
from . import phi3  # noqa: F401  (Phi-3)
from . import resnet  # noqa: F401  (ResNet v1/v2, vd)
from . import densenet, vgg, xception  # noqa: F401  (image backbones)
from . import efficientnet  # noqa: F401  (EfficientNet, v1 blocks)
from . import cspnet  # noqa: F401  (CSPNet, cross stages)
from . import gemma3  # noqa: F401  (Gemma 3, text)
from . import whisper  # noqa: F401  (Whisper)
from . import masked_lm  # noqa: F401  (MaskedLMHead and MaskedLM tasks)
from . import t5  # noqa: F401  (T5)
