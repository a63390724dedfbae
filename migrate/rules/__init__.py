"""The rule table.  Importing this package registers every built-in rule.

One module per family of layers; see :mod:`migrate.rules.registry` for how
rules are found and :mod:`migrate.rules.base` for what a rule returns.
"""
from . import activations, conv, core, merging, noise  # noqa: F401
from . import normalization, pooling, reshaping  # noqa: F401
from . import applications, conv_more, misc, ops, pooling_more  # noqa: F401
from . import preprocessing, resizing  # noqa: F401
from . import attention, recurrent  # noqa: F401
from . import adaptive_pooling, augmentation, einsum  # noqa: F401
from . import cudnn, encoding, rnn_cell  # noqa: F401
from . import locally_connected, ops_more  # noqa: F401
from . import ops_tf  # noqa: F401
from . import kecam  # noqa: F401  (the keras-cv-attention-models pack)
from . import keras_hub  # noqa: F401  (the keras-hub rule pack)
from .base import Call, Emit, Out, Refused, Tensor, chain  # noqa: F401
from .custom import parameters  # noqa: F401
from .registry import RULES, Rule, activation_rule, lookup, register, rule  # noqa: F401,E501
