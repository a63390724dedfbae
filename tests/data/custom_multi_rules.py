"""The fixtures custom_multi need these (tests/test_custom_path.py): the
file `keras2torch rules new` wrote, filled in.

Rules for what model.keras needs and keras2torch has no rule for:
fixtures>PairMix, fixtures>PlainScale.

Written by:
    keras2torch rules new ../../fixtures/models/k3_custom_multi/model.keras -o custom_multi_rules.py

Each rule below refuses ("fill me in") until you write its body: what the
layer computes, as torch code.  Then convert with it and compare with Keras:

    keras2torch convert ../../fixtures/models/k3_custom_multi/model.keras -o port/ \\
        --rules custom_multi_rules.py \\
        --verify --custom-objects YOUR_KERAS_CLASSES.py

A rule gets the layer's call: call.get(key, default) reads the config,
call.weights([...]) the stored weights (lazily: .shape, .read()),
call.inputs[i] the inputs (.shape: Keras shape with the batch; .layout: the
order of the torch axes; .expr: the code of the tensor).  It returns an Emit:
the forward code of each output (Out), the nn.Module it needs as self.<attr>
(module=...) and that module's state-dict entries (state={...}).
README, "Custom rules"; migrate/rules/base.py.
"""
from migrate.rules import Emit, Out, Refused, chain, rule


def fill_me_in(what):
    raise Refused(f"fill me in: {what} is a skeleton from `keras2torch rules "
                  f"new`; write its body in {__file__}")


# -- PairMix, registered as fixtures>PairMix, module
#   fixtures.cases_custom_port
# Used by 1 layer(s); their calls (shapes are Keras's, with the batch):
#   mix: input (None, 6) float32, (None, 6) float32 -> output (None, 6),
#     (None, 6)
#   mix#1: input (None, 4) float32, (None, 4) float32 -> output (None, 4),
#     (None, 4)
# No stored weights.


@rule('fixtures>PairMix')
def pair_mix(call):
    """[a * alpha + b, a - b]"""
    inputs = call.inputs  # 2 tensors
    alpha = call.get('alpha', 0.3)
    a, b = inputs
    return Emit([Out(chain(f"{a.expr} * {alpha} + {b.expr}"), a.shape,
                     a.layout),
                 Out(chain(f"{a.expr} - {b.expr}"), a.shape, a.layout)])


# -- PlainScale, registered as fixtures>PlainScale, module
#   fixtures.cases_custom_port
# Used by 1 layer(s); their calls (shapes are Keras's, with the batch):
#   inner/inner_scale: input (None, 4) float32 -> output ? (not recorded in
#     this file)
# No stored weights.


@rule('fixtures>PlainScale')
def plain_scale(call):
    """x * factor"""
    x = call.inputs[0]
    factor = call.get('factor', 2.5)
    return Emit([Out(chain(f"{x.expr} * {factor}"), x.shape, x.layout)])
