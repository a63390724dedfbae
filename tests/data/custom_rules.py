"""Custom rules for the custom-layer fixture (fixtures/models/
k3_custom_layers), as a user writes them for ``--rules FILE.py``."""
from migrate.rules import Emit, Out, chain, rule


@rule("Scale")
def scale(call):
    """x * 2"""
    x = call.inputs[0]
    return Emit([Out(chain(f"{x.expr} * 2.0"), x.shape, x.layout)])


@rule("Shift")
def shift(call):
    """x + 1"""
    x = call.inputs[0]
    return Emit([Out(chain(f"{x.expr} + 1.0"), x.shape, x.layout)])
