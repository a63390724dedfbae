"""The custom-layer path, as a user walks it (tests/test_custom_path.py):
`keras2torch rules new` wrote this file, filled in by hand below.

Rules for what model.keras needs and keras2torch has no rule for:
fixtures>GatedScale, activation:fixtures>hard_swish.

Written by:
    keras2torch rules new ../../fixtures/models/k3_custom_port/model.keras -o custom_port_rules.py

Each rule below refuses ("fill me in") until you write its body: what the
layer computes, as torch code.  Then convert with it and compare with Keras:

    keras2torch convert ../../fixtures/models/k3_custom_port/model.keras -o port/ \\
        --rules custom_port_rules.py \\
        --verify --custom-objects YOUR_KERAS_CLASSES.py

A rule gets the layer's call: call.get(key, default) reads the config,
call.weights([...]) the stored weights (lazily: .shape, .read()),
call.inputs[i] the inputs (.shape: Keras shape with the batch; .layout: the
order of the torch axes; .expr: the code of the tensor).  It returns an Emit:
the forward code of each output (Out), the nn.Module it needs as self.<attr>
(module=...) and that module's state-dict entries (state={...}).
README, "Custom rules"; migrate/rules/base.py.
"""
from migrate.layout import identity
from migrate.rules import (Emit, Out, Refused, activation_rule, chain,
                           parameters, rule)


def fill_me_in(what):
    raise Refused(f"fill me in: {what} is a skeleton from `keras2torch rules "
                  f"new`; write its body in {__file__}")


# -- GatedScale, registered as fixtures>GatedScale, module
#   fixtures.cases_custom_port
# Used by 1 layer(s); their calls (shapes are Keras's, with the batch):
#   gated: input (None, 5, 4, 6) float32 -> output (None, 5, 4, 6)
# Weights, in storage order:
#   vars/0  (6,)  float32
#   vars/1  (6,)  float32


@rule('fixtures>GatedScale')
def gated_scale(call):
    """x * sigmoid(gate) * scale + offset, per channel."""
    x = call.inputs[0]
    # in Keras's axis order (B, ..., C); or work in the order x.layout says
    x = call.want(0, identity(x.rank))
    offset = call.get('offset', 0.25)
    axis = call.get('axis', -1)
    # Keras 3 files store weights by position: name them after the layer's
    #   add_weight calls, in order (the names then bind .h5 files too).
    weights = call.weights(['gate', 'scale'])
    gate = weights['gate']  # (6,) float32
    scale = weights['scale']  # (6,) float32
    module, state = parameters(gate=gate, scale=scale)
    a = f"self.{call.attr}"
    code = f"{x.expr} * torch.sigmoid({a}.gate) * {a}.scale + {offset}"
    return Emit([Out(chain(code), x.shape, x.layout)],
                module=module, state=state)


# -- activation function fixtures>hard_swish
# Used by: act (Activation), head (Dense)


@activation_rule('fixtures>hard_swish')
def hard_swish(x):
    """x * relu6(x + 3) / 6."""
    return f"{x.expr} * F.relu6({x.expr} + 3.0) / 6.0"
